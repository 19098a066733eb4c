#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"
#include "p2pbuf.pb-c.h"
#include "registry.h"

#define STATE_READY P2PBUF__DEVICE_STATE_KIND__DEVICE_READY
#define STATE_CYCLING P2PBUF__DEVICE_STATE_KIND__DEVICE_CYCLING
#define STATE_FAILED P2PBUF__DEVICE_STATE_KIND__DEVICE_FAILED
#define STATE_GONE P2PBUF__DEVICE_STATE_KIND__DEVICE_GONE

struct registry {
	struct event_base *base;
	struct worker *worker;
	struct registry_callbacks cb;
	struct device *devices;
	size_t n_devices;
};

const struct device_ops *registry_default_backend(const struct policy_device *decl)
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

static int watch_one(struct device *dev, int fd, event_callback_fn fn, struct event **ret)
{
	if (fd < 0)
		return 0;
	*ret = event_new(dev->reg->base, fd, EV_READ | EV_PERSIST, fn, dev);
	if (!*ret || event_add(*ret, NULL) < 0)
		return -ENOMEM;
	return 0;
}

/* Register the backend's removal and error eventfds with the loop. A device whose removal
 * could not be watched must not be served: its buffers would outlive an unbind unseen. */
static int watch(struct device *dev)
{
	int req_fd = -1, err_fd = -1;

	dev->ops->event_fds(dev->handle, &req_fd, &err_fd);
	if (watch_one(dev, req_fd, on_req, &dev->ev_req) < 0 ||
	    watch_one(dev, err_fd, on_err, &dev->ev_err) < 0) {
		unwatch(dev);
		return -ENOMEM;
	}
	return 0;
}

static void set_state(struct device *dev, int state, const char *message)
{
	__atomic_store_n(&dev->state, state, __ATOMIC_RELEASE);
	snprintf(dev->message, sizeof(dev->message), "%s", message ? message : "");
}

static void report(struct device *dev)
{
	const struct registry_callbacks *cb = &dev->reg->cb;

	if (cb->state_changed)
		cb->state_changed(cb->ctx, dev);
}

/* Open dev's declaration (blocking; at start-up on the main thread, later on the worker). */
static int device_open(const struct device *dev, struct device_handle **ret_handle,
		       struct device_info *ret_info, char *msg, size_t msglen)
{
	msg[0] = '\0';
	int r = dev->ops->open(&dev->decl, ret_handle, ret_info, msg, msglen);
	if (r < 0 && !msg[0])
		snprintf(msg, msglen, "%s", strerror(-r));
	return r;
}

/* After a successful open: watch its events, or close it again and fail. */
static void install(struct device *dev, struct device_handle *handle, const char *msg)
{
	const struct registry_callbacks *cb = &dev->reg->cb;

	dev->handle = handle;
	if (watch(dev) < 0) {
		/* Freshly opened: nothing was exported, so the close waits on no importer. */
		dev->ops->close(dev->handle);
		dev->handle = NULL;
		set_state(dev, STATE_FAILED,
			  "cannot watch the device's removal events: out of "
			  "memory");
		return;
	}
	set_state(dev, STATE_READY, msg);
	if (cb->opened)
		cb->opened(cb->ctx, dev);
}

/* Take over what a previous instance kept of dev: its open fds (the backend checks they are
 * dev's), or, for a backend with nothing to keep (sim), just its generation. Anything that
 * does not fit is closed, which revokes its buffers: the device then opens afresh. */
static bool adopt(struct registry *reg, struct device *dev, struct device_handle **ret_handle,
		  char *msg, size_t msglen)
{
	const struct registry_callbacks *cb = &reg->cb;
	struct parked_fd fds[DEVICE_MAX_PARKED];
	uint32_t generation = 0;
	ssize_t n = cb->kept ? cb->kept(cb->ctx, dev, fds, &generation) : -1;
	int r = -ENOENT;

	if (n < 0)
		return false;
	msg[0] = '\0';
	if (dev->ops->adopt && n > 0)
		r = dev->ops->adopt(&dev->decl, fds, (size_t)n, ret_handle, &dev->info, msg,
				    msglen);
	else if (!dev->ops->park && n == 0)
		r = device_open(dev, ret_handle, &dev->info, msg, msglen);
	if (r < 0) {
		for (ssize_t i = 0; i < n; i++)
			close(fds[i].fd);
		if (cb->rejected)
			cb->rejected(cb->ctx, dev, msg[0] ? msg : strerror(-r));
		return false;
	}
	dev->generation = generation;
	dev->adopted = true;
	return true;
}

static void open_at_start(struct registry *reg, struct device *dev,
			  const struct policy_device *decl, registry_backend_fn backend)
{
	struct device_handle *handle = NULL;
	char msg[256];

	dev->reg = reg;
	dev->decl = *decl;
	dev->ops = backend(decl);
	LIST_INIT(&dev->leases.list);
	LIST_INIT(&dev->waiters);
	if (adopt(reg, dev, &handle, msg, sizeof(msg)))
		install(dev, handle, msg);
	else if (device_open(dev, &handle, &dev->info, msg, sizeof(msg)) < 0)
		set_state(dev, STATE_FAILED, msg); /* the others are still served */
	else
		install(dev, handle, msg);
	report(dev);
}

int registry_new(struct event_base *base, struct worker *worker, const struct policy *policy,
		 registry_backend_fn backend, const struct registry_callbacks *cb,
		 struct registry **ret_reg)
{
	struct registry *reg = calloc(1, sizeof(*reg));

	if (!reg)
		return -ENOMEM;
	reg->devices = calloc(policy->n_devices ? policy->n_devices : 1, sizeof(*reg->devices));
	if (!reg->devices) {
		free(reg);
		return -ENOMEM;
	}
	reg->base = base;
	reg->worker = worker;
	reg->cb = *cb;
	reg->n_devices = policy->n_devices;
	for (size_t i = 0; i < policy->n_devices; i++)
		open_at_start(reg, &reg->devices[i], &policy->devices[i],
			      backend ? backend : registry_default_backend);
	*ret_reg = reg;
	return 0;
}

void registry_free(struct registry *reg)
{
	struct reset_waiter *w;

	if (!reg)
		return;
	for (size_t i = 0; i < reg->n_devices; i++) {
		struct device *dev = &reg->devices[i];
		unwatch(dev);
		dev->ops->close(dev->handle);
		dev->handle = NULL;
		while ((w = LIST_FIRST(&dev->waiters))) {
			LIST_REMOVE(w, link);
			free(w);
		}
	}
	free(reg->devices);
	free(reg);
}

size_t registry_count(const struct registry *reg)
{
	return reg->n_devices;
}

struct device *registry_device(struct registry *reg, size_t index)
{
	return index < reg->n_devices ? &reg->devices[index] : NULL;
}

struct device *registry_find(struct registry *reg, const char *name)
{
	for (size_t i = 0; i < reg->n_devices; i++)
		if (strcmp(reg->devices[i].decl.name, name) == 0)
			return &reg->devices[i];
	return NULL;
}

unsigned registry_ready(const struct registry *reg)
{
	unsigned n = 0;

	for (size_t i = 0; i < reg->n_devices; i++)
		n += reg->devices[i].state == STATE_READY;
	return n;
}

bool registry_same_device(const struct policy_device *a, const struct policy_device *b)
{
	return strcmp(a->name, b->name) == 0 && a->kind == b->kind && strcmp(a->pci, b->pci) == 0 &&
	       memcmp(a->sim_bar_size, b->sim_bar_size, sizeof(a->sim_bar_size)) == 0 &&
	       memcmp(&a->sim_msix_table, &b->sim_msix_table, sizeof(a->sim_msix_table)) == 0 &&
	       memcmp(&a->sim_msix_pba, &b->sim_msix_pba, sizeof(a->sim_msix_pba)) == 0;
}

int registry_update(struct registry *reg, size_t index, const struct policy_device *decl)
{
	struct device *dev = registry_device(reg, index);

	if (!dev || !registry_same_device(&dev->decl, decl))
		return -EINVAL;
	/* The worker reads only the identity fields during a cycle, and those are unchanged. */
	dev->decl = *decl;
	return 0;
}

static void answer_waiters(struct device *dev, int error, const char *message)
{
	const struct registry_callbacks *cb = &dev->reg->cb;
	struct reset_waiter *w;

	while ((w = LIST_FIRST(&dev->waiters))) {
		LIST_REMOVE(w, link);
		if (cb->answer)
			cb->answer(cb->ctx, w->token, w->request_id, error, message);
		free(w);
	}
}

int registry_add_waiter(struct device *dev, void *token, uint64_t request_id)
{
	struct reset_waiter *w = calloc(1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	w->token = token;
	w->request_id = request_id;
	LIST_INSERT_HEAD(&dev->waiters, w, link);
	return 0;
}

void registry_drop_waiters(struct registry *reg, void *token)
{
	for (size_t i = 0; i < reg->n_devices; i++) {
		struct reset_waiter *w, *next;
		for (w = LIST_FIRST(&reg->devices[i].waiters); w; w = next) {
			next = LIST_NEXT(w, link);
			if (w->token == token) {
				LIST_REMOVE(w, link);
				free(w);
			}
		}
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
	if (__atomic_load_n(&dev->state, __ATOMIC_ACQUIRE) == STATE_GONE)
		return 0;
	return device_open(dev, &dev->job_handle, &dev->job_info, dev->job_msg,
			   sizeof(dev->job_msg));
}

static void cycle_done(void *arg, int r)
{
	struct device *dev = arg;
	char msg[sizeof(dev->message)];

	dev->cycling = false;
	dev->handle = NULL;
	if (dev->state == STATE_GONE) {
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
		set_state(dev, STATE_FAILED, msg);
		report(dev);
		answer_waiters(dev, r, dev->message);
		return;
	}
	dev->info = dev->job_info;
	install(dev, TAKE_PTR(dev->job_handle), NULL);
	report(dev);
	if (dev->state == STATE_READY)
		answer_waiters(dev, 0, NULL);
	else
		answer_waiters(dev, -EIO, dev->message);
}

static void submit(struct device *dev, int (*run)(void *), void (*done)(void *, int))
{
	dev->cycling = true;
	dev->job = (struct worker_job){ .run = run, .done = done, .arg = dev };
	worker_submit(dev->reg->worker, &dev->job);
}

static void closing(struct device *dev)
{
	const struct registry_callbacks *cb = &dev->reg->cb;

	if (cb->closing && dev->handle)
		cb->closing(cb->ctx, dev);
}

static void buffers_dying(struct device *dev, int reason)
{
	const struct registry_callbacks *cb = &dev->reg->cb;

	if (cb->buffers_dying)
		cb->buffers_dying(cb->ctx, dev, reason);
}

static int cycle(struct device *dev, int reason, const char *why)
{
	if (dev->cycling)
		return -EBUSY;
	if (dev->state == STATE_GONE)
		return -ENXIO;
	unwatch(dev);
	/* Holders hear that their leases ended before the buffers die, so nobody is surprised. */
	buffers_dying(dev, reason);
	closing(dev);
	set_state(dev, STATE_CYCLING, why);
	report(dev);
	submit(dev, cycle_run, cycle_done);
	return 0;
}

int registry_cycle(struct device *dev, int reason)
{
	return cycle(dev, reason, NULL);
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
	if (dev->state == STATE_GONE)
		return;
	unwatch(dev);
	buffers_dying(dev, P2PBUF__REASON__REASON_DEVICE_GONE);
	if (!dev->cycling)
		closing(dev);
	set_state(dev, STATE_GONE, why);
	report(dev);
	if (dev->cycling)
		return; /* the running cycle sees GONE and does not reopen */
	if (!dev->handle) {
		answer_waiters(dev, -ENXIO, "the device is gone");
		return;
	}
	submit(dev, close_run, close_done);
}

void registry_device_error(struct device *dev)
{
	if (dev->decl.on_error == POLICY_ON_ERROR_CYCLE &&
	    cycle(dev, P2PBUF__REASON__REASON_DEVICE_CYCLE,
		  "the kernel reported a device error (AER); cycling it (on-error cycle)") == 0)
		return;
	/* Reported to watchers; the buffers stay live, so the state does not change. */
	set_state(dev, dev->state, "the kernel reported a device error (AER); leases stay");
	report(dev);
}

int registry_holders(const struct device *dev, int fd)
{
	if (!dev->handle)
		return 0;
	int h = dev->ops->holders(dev->handle, fd);
	return h < 0 ? 1 : h;
}

void registry_holders_many(const struct device *dev, const int *fds, size_t n, int *counts)
{
	if (!dev->handle) {
		for (size_t i = 0; i < n; i++)
			counts[i] = 0;
		return;
	}
	if (dev->ops->holders_many && dev->ops->holders_many(dev->handle, fds, n, counts) == 0)
		return;
	for (size_t i = 0; i < n; i++)
		counts[i] = registry_holders(dev, fds[i]);
}

bool registry_holders_costly(const struct device *dev)
{
	return dev->ops->holders_costly;
}

static void on_req(evutil_socket_t fd, short what, void *arg)
{
	uint64_t n;

	(void)!read(fd, &n, sizeof(n));
	registry_device_gone(arg, "the kernel asked for the device back (removed or unbound)");
}

static void on_err(evutil_socket_t fd, short what, void *arg)
{
	uint64_t n;

	(void)!read(fd, &n, sizeof(n));
	registry_device_error(arg);
}

const struct device_ops *registry_detached_backend(const struct device *dev)
{
	return dev->handle && dev->ops->holders_detached ? dev->ops : NULL;
}
