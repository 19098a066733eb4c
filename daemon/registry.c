/* The device registry: opens the devices the policy declares, watches their removal and
 * error events, and runs device cycles (the only permanent revoke) on the worker thread. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "clock.h"
#include "macro.h"

static const struct device_ops *backend_of(const struct policy_device *decl)
{
	return decl->kind == POLICY_DEVICE_SIM ? &sim_ops : &vfio_ops;
}

static void on_req(evutil_socket_t fd, short what, void *arg);
static void on_err(evutil_socket_t fd, short what, void *arg);

static void unwatch(struct device *dev)
{
	if (dev->ev_req)
		event_free(dev->ev_req);
	if (dev->ev_err)
		event_free(dev->ev_err);
	dev->ev_req = dev->ev_err = NULL;
}

/* Register the backend's removal and error eventfds with the loop. */
static void watch(struct device *dev)
{
	int req_fd = -1, err_fd = -1;

	dev->ops->event_fds(dev->handle, &req_fd, &err_fd);
	if (req_fd >= 0) {
		dev->ev_req = event_new(dev->d->base, req_fd, EV_READ | EV_PERSIST, on_req, dev);
		if (dev->ev_req)
			event_add(dev->ev_req, NULL);
	}
	if (err_fd >= 0) {
		dev->ev_err = event_new(dev->d->base, err_fd, EV_READ | EV_PERSIST, on_err, dev);
		if (dev->ev_err)
			event_add(dev->ev_err, NULL);
	}
}

static void set_state(struct device *dev, int state, const char *message)
{
	__atomic_store_n(&dev->state, state, __ATOMIC_RELEASE);
	snprintf(dev->message, sizeof(dev->message), "%s", message ? message : "");
	server_device_state(dev->d, dev);
}

/* Open dev's declaration (blocking; at startup on the main thread, later on the worker). */
static int device_open(const struct device *dev, struct device_handle **ret_handle,
		       struct device_info *ret_info, char *msg, size_t msglen)
{
	msg[0] = '\0';
	int r = dev->ops->open(&dev->decl, ret_handle, ret_info, msg, msglen);
	if (r < 0 && !msg[0])
		snprintf(msg, msglen, "%s", strerror(-r));
	return r;
}

int registry_open_all(struct daemon *d)
{
	const struct policy *p = d->policy;

	d->devices = calloc(p->n_devices ? p->n_devices : 1, sizeof(*d->devices));
	if (!d->devices)
		return -ENOMEM;
	d->n_devices = p->n_devices;
	for (size_t i = 0; i < p->n_devices; i++) {
		struct device *dev = &d->devices[i];
		char msg[256];
		dev->d = d;
		dev->decl = p->devices[i];
		dev->ops = backend_of(&dev->decl);
		LIST_INIT(&dev->leases);
		LIST_INIT(&dev->waiters);
		int r = device_open(dev, &dev->handle, &dev->info, msg, sizeof(msg));
		if (r < 0) {
			/* One bad device must not stop the daemon serving the others. */
			log_error("device %s (%s): %s", dev->decl.name,
				  dev->decl.kind == POLICY_DEVICE_SIM ? "sim" : dev->decl.pci, msg);
			dev->state = P2PBUF__DEVICE_STATE_KIND__DEVICE_FAILED;
			snprintf(dev->message, sizeof(dev->message), "%s", msg);
			continue;
		}
		dev->state = P2PBUF__DEVICE_STATE_KIND__DEVICE_READY;
		watch(dev);
		log_info("device %s: %s %s ready%s%s", dev->decl.name, dev->ops->name,
			 dev->decl.kind == POLICY_DEVICE_SIM ? "(simulated)" : dev->decl.pci,
			 msg[0] ? ": " : "", msg);
	}
	return 0;
}

struct device *registry_find(struct daemon *d, const char *name)
{
	for (size_t i = 0; i < d->n_devices; i++)
		if (strcmp(d->devices[i].decl.name, name) == 0)
			return &d->devices[i];
	return NULL;
}

void registry_close_all(struct daemon *d)
{
	for (size_t i = 0; i < d->n_devices; i++) {
		struct device *dev = &d->devices[i];
		unwatch(dev);
		dev->ops->close(dev->handle);
		dev->handle = NULL;
	}
	free(d->devices);
	d->devices = NULL;
	d->n_devices = 0;
}

static void answer_waiters(struct device *dev, int error, const char *message)
{
	struct pending_reply *w;

	while ((w = LIST_FIRST(&dev->waiters))) {
		LIST_REMOVE(w, link);
		conn_reply(w->conn, w->request_id, error, message, NULL, -1);
		free(w);
	}
}

/* Worker thread: close (permanent revoke of every buffer), then reopen (the kernel resets).
 * The loop leaves dev->handle alone while cycling; the reopened device goes into the job_*
 * fields, which only cycle_done() reads. A device found gone is not reopened. */
static int cycle_run(void *arg)
{
	struct device *dev = arg;

	dev->ops->close(dev->handle);
	dev->job_handle = NULL;
	if (__atomic_load_n(&dev->state, __ATOMIC_ACQUIRE) ==
	    P2PBUF__DEVICE_STATE_KIND__DEVICE_GONE)
		return 0;
	return device_open(dev, &dev->job_handle, &dev->job_info, dev->job_msg,
			   sizeof(dev->job_msg));
}

static void cycle_done(void *arg, int r)
{
	struct device *dev = arg;
	char msg[256];

	dev->cycling = false;
	dev->handle = NULL;
	if (dev->state == P2PBUF__DEVICE_STATE_KIND__DEVICE_GONE) {
		/* Gone while reopening: the fresh handle exported nothing, so closing it here
		 * does not wait on importers. */
		dev->ops->close(dev->job_handle);
		dev->job_handle = NULL;
		answer_waiters(dev, -ENXIO, "the device is gone");
		return;
	}
	dev->generation++;
	if (r < 0) {
		snprintf(msg, sizeof(msg), "reopening after a device cycle failed: %.200s",
			 dev->job_msg);
		log_error("device %s: %s", dev->decl.name, msg);
		set_state(dev, P2PBUF__DEVICE_STATE_KIND__DEVICE_FAILED, msg);
		answer_waiters(dev, r, msg);
		return;
	}
	dev->handle = TAKE_PTR(dev->job_handle);
	dev->info = dev->job_info;
	watch(dev);
	log_notice("device %s: cycled, generation %u, ready", dev->decl.name, dev->generation);
	set_state(dev, P2PBUF__DEVICE_STATE_KIND__DEVICE_READY, NULL);
	answer_waiters(dev, 0, NULL);
}

int registry_cycle(struct device *dev, int reason)
{
	if (dev->cycling)
		return -EBUSY;
	if (dev->state == P2PBUF__DEVICE_STATE_KIND__DEVICE_GONE)
		return -ENXIO;
	dev->cycling = true;
	dev->cycle_reason = reason;
	unwatch(dev);
	/* Holders hear that their leases ended before the buffers die, so nobody is surprised. */
	revoke_device_leases(dev->d, dev, reason);
	set_state(dev, P2PBUF__DEVICE_STATE_KIND__DEVICE_CYCLING, NULL);
	dev->job = (struct worker_job){ .run = cycle_run, .done = cycle_done, .arg = dev };
	worker_submit(dev->d->worker, &dev->job);
	return 0;
}

static int close_run(void *arg)
{
	struct device *dev = arg;

	dev->ops->close(dev->handle);
	return 0;
}

static void close_done(void *arg, int r)
{
	struct device *dev = arg;

	dev->cycling = false;
	dev->handle = NULL;
	answer_waiters(dev, -ENXIO, "the device is gone");
}

void registry_device_gone(struct device *dev, const char *why)
{
	if (dev->state == P2PBUF__DEVICE_STATE_KIND__DEVICE_GONE)
		return;
	log_warning("device %s: %s; ending its leases and closing it", dev->decl.name, why);
	unwatch(dev);
	revoke_device_leases(dev->d, dev, P2PBUF__REASON__REASON_DEVICE_GONE);
	set_state(dev, P2PBUF__DEVICE_STATE_KIND__DEVICE_GONE, why);
	if (dev->cycling)
		return; /* the running cycle sees GONE and does not reopen */
	dev->cycling = true;
	dev->job = (struct worker_job){ .run = close_run, .done = close_done, .arg = dev };
	worker_submit(dev->d->worker, &dev->job);
}

static void on_req(evutil_socket_t fd, short what, void *arg)
{
	uint64_t n;

	(void)!read(fd, &n, sizeof(n));
	registry_device_gone(arg, "the kernel asked for the device back (removed or unbound)");
}

static void on_err(evutil_socket_t fd, short what, void *arg)
{
	struct device *dev = arg;
	uint64_t n;

	(void)!read(fd, &n, sizeof(n));
	log_error("device %s: the kernel reported a device error (AER)%s", dev->decl.name,
		  dev->decl.on_error == POLICY_ON_ERROR_CYCLE ? "; cycling it (on-error cycle)"
							      : "");
	if (dev->decl.on_error == POLICY_ON_ERROR_CYCLE) {
		registry_cycle(dev, P2PBUF__REASON__REASON_DEVICE_CYCLE);
		return;
	}
	/* Reported to watchers; the buffers stay live, so the state does not change. */
	set_state(dev, dev->state, "the kernel reported a device error (AER); leases stay");
}
