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
	registry_backend_fn backend;
	/* Each device is allocated on its own, so that leases may point to it while others
	 * come and go: declared ones, then those a reload added; removed ones until freed. */
	struct device **devices;
	size_t n_devices, cap;
	struct event *ev_reap; /* frees removed devices whose leases have ended (made active) */
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
	const char *hint = dev->reg->cb.wait_hint;
	bool waits = (state == STATE_FAILED || state == STATE_GONE) && !dev->removing &&
		     dev->decl.kind == POLICY_DEVICE_PCI && hint && message && message[0];

	__atomic_store_n(&dev->state, state, __ATOMIC_RELEASE);
	if (waits)
		snprintf(dev->message, sizeof(dev->message), "%s; %s", message, hint);
	else
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

static struct device *device_new(struct registry *reg, const struct policy_device *decl)
{
	struct device *dev = calloc(1, sizeof(*dev));

	if (!dev)
		return NULL;
	dev->reg = reg;
	dev->decl = *decl;
	dev->ops = reg->backend(decl);
	LIST_INIT(&dev->leases.list);
	LIST_INIT(&dev->waiters);
	worker_lane_init(&dev->lane);
	return dev;
}

/* Close (blocking: the kernel may wait for importers) and free; waiters are dropped
 * unanswered. */
static void device_free(struct device *dev)
{
	struct reset_waiter *w;

	unwatch(dev);
	dev->ops->close(dev->handle);
	while ((w = LIST_FIRST(&dev->waiters))) {
		LIST_REMOVE(w, link);
		free(w);
	}
	free(dev);
}

/* Room for n more devices in the array. */
static int reserve(struct registry *reg, size_t n)
{
	if (reg->n_devices + n <= reg->cap)
		return 0;
	size_t cap = reg->n_devices + n;
	struct device **a = reallocarray(reg->devices, cap, sizeof(*a));
	if (!a)
		return -ENOMEM;
	reg->devices = a;
	reg->cap = cap;
	return 0;
}

static void open_at_start(struct registry *reg, struct device *dev)
{
	struct device_handle *handle = NULL;
	char msg[256];

	if (adopt(reg, dev, &handle, msg, sizeof(msg)))
		install(dev, handle, msg);
	else if (device_open(dev, &handle, &dev->info, msg, sizeof(msg)) < 0)
		set_state(dev, STATE_FAILED, msg); /* the others are still served */
	else
		install(dev, handle, msg);
	report(dev);
}

static void on_reap(evutil_socket_t fd, short what, void *arg);

int registry_new(struct event_base *base, struct worker *worker, const struct policy *policy,
		 registry_backend_fn backend, const struct registry_callbacks *cb,
		 struct registry **ret_reg)
{
	struct registry *reg = calloc(1, sizeof(*reg));

	if (!reg)
		return -ENOMEM;
	reg->base = base;
	reg->worker = worker;
	reg->cb = *cb;
	reg->backend = backend ? backend : registry_default_backend;
	reg->ev_reap = event_new(base, -1, 0, on_reap, reg);
	if (!reg->ev_reap || reserve(reg, policy->n_devices) < 0) {
		registry_free(reg);
		return -ENOMEM;
	}
	for (size_t i = 0; i < policy->n_devices; i++) {
		struct device *dev = device_new(reg, &policy->devices[i]);
		if (!dev) {
			registry_free(reg);
			return -ENOMEM;
		}
		reg->devices[reg->n_devices++] = dev;
		open_at_start(reg, dev);
	}
	*ret_reg = reg;
	return 0;
}

void registry_free(struct registry *reg)
{
	if (!reg)
		return;
	for (size_t i = 0; i < reg->n_devices; i++)
		device_free(reg->devices[i]);
	free(reg->devices);
	if (reg->ev_reap)
		event_free(reg->ev_reap);
	free(reg);
}

size_t registry_count(const struct registry *reg)
{
	return reg->n_devices;
}

struct device *registry_device(struct registry *reg, size_t index)
{
	return index < reg->n_devices ? reg->devices[index] : NULL;
}

/* The device called name that is still declared, or NULL. */
static struct device *find_declared(const struct registry *reg, const char *name)
{
	for (size_t i = 0; i < reg->n_devices; i++)
		if (!reg->devices[i]->removing && strcmp(reg->devices[i]->decl.name, name) == 0)
			return reg->devices[i];
	return NULL;
}

/* Any device called name other than except, declared or being removed, or NULL. */
static struct device *find_any(const struct registry *reg, const char *name,
			       const struct device *except)
{
	for (size_t i = 0; i < reg->n_devices; i++)
		if (reg->devices[i] != except && strcmp(reg->devices[i]->decl.name, name) == 0)
			return reg->devices[i];
	return NULL;
}

struct device *registry_find(struct registry *reg, const char *name)
{
	struct device *dev = find_declared(reg, name);

	return dev ? dev : find_any(reg, name, NULL);
}

unsigned registry_ready(const struct registry *reg)
{
	unsigned n = 0;

	for (size_t i = 0; i < reg->n_devices; i++)
		n += reg->devices[i]->state == STATE_READY;
	return n;
}

bool registry_same_device(const struct policy_device *a, const struct policy_device *b)
{
	return strcmp(a->name, b->name) == 0 && a->kind == b->kind && strcmp(a->pci, b->pci) == 0 &&
	       memcmp(a->sim_bar_size, b->sim_bar_size, sizeof(a->sim_bar_size)) == 0 &&
	       memcmp(&a->sim_msix_table, &b->sim_msix_table, sizeof(a->sim_msix_table)) == 0 &&
	       memcmp(&a->sim_msix_pba, &b->sim_msix_pba, sizeof(a->sim_msix_pba)) == 0;
}

/* Whether the options of two declarations of the same device differ. */
static bool options_differ(const struct policy_device *a, const struct policy_device *b)
{
	return a->revoke_deadline_ms != b->revoke_deadline_ms || a->revocation != b->revocation ||
	       a->on_error != b->on_error || a->sim_cycle_delay_ms != b->sim_cycle_delay_ms;
}

int registry_update(struct device *dev, const struct policy_device *decl)
{
	if (dev->removing || !registry_same_device(&dev->decl, decl))
		return -EINVAL;
	/* The worker reads the declaration while it opens the device (sim: its cycle delay):
	 * its options change when the job ends. Where it was declared is the loop's alone. */
	dev->decl.file = decl->file;
	dev->decl.line = decl->line;
	if (dev->cycling) {
		dev->next_decl = *decl;
		dev->has_next_decl = true;
		return 0;
	}
	dev->decl = *decl;
	return 0;
}

/* On the loop, once the worker's job on dev has ended. */
static void job_ended(struct device *dev)
{
	dev->cycling = false;
	if (dev->has_next_decl && !dev->removing)
		dev->decl = dev->next_decl;
	dev->has_next_decl = false;
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
		for (w = LIST_FIRST(&reg->devices[i]->waiters); w; w = next) {
			next = LIST_NEXT(w, link);
			if (w->token == token) {
				LIST_REMOVE(w, link);
				free(w);
			}
		}
	}
}

static void wake_reaper(struct registry *reg)
{
	event_active(reg->ev_reap, EV_TIMEOUT, 1);
}

/* A removed device's job has ended: what it opened (nothing was exported from it) goes to
 * the reaper, which closes it on the worker. Returns false for a device still declared. */
static bool hand_to_reaper(struct device *dev)
{
	if (!dev->removing)
		return false;
	dev->handle = TAKE_PTR(dev->job_handle);
	wake_reaper(dev->reg);
	return true;
}

/* After the worker opened dev: serve it, or say why not; either way its waiters hear. */
static void opened(struct device *dev, int r, const char *failed)
{
	if (r < 0) {
		set_state(dev, STATE_FAILED, failed);
		report(dev);
		answer_waiters(dev, r, dev->message);
		return;
	}
	dev->info = dev->job_info;
	install(dev, TAKE_PTR(dev->job_handle), dev->job_msg);
	report(dev);
	if (dev->state == STATE_READY)
		answer_waiters(dev, 0, NULL);
	else
		answer_waiters(dev, -EIO, dev->message);
}

/* Worker thread: open dev into the job_* fields, which only the job's completion reads; a
 * device found gone meanwhile is not opened. */
static int job_open(struct device *dev)
{
	dev->job_handle = NULL;
	dev->job_msg[0] = '\0';
	if (__atomic_load_n(&dev->state, __ATOMIC_ACQUIRE) == STATE_GONE)
		return 0;
	if (dev->reg->cb.store_settle)
		dev->reg->cb.store_settle(dev->reg->cb.ctx);
	return device_open(dev, &dev->job_handle, &dev->job_info, dev->job_msg,
			   sizeof(dev->job_msg));
}

/* Worker thread: close (permanent revoke of every buffer), then reopen (the kernel resets).
 * The loop leaves dev->handle alone while cycling. */
static int cycle_run(void *arg)
{
	struct device *dev = arg;

	dev->ops->close(dev->handle);
	return job_open(dev);
}

/* The device went while its job opened it: the fresh handle exported nothing, so closing it
 * here does not wait on importers. Returns false when it did not go. */
static bool gone_meanwhile(struct device *dev)
{
	if (dev->state != STATE_GONE)
		return false;
	dev->ops->close(dev->job_handle);
	dev->job_handle = NULL;
	answer_waiters(dev, -ENXIO, "the device is gone");
	return true;
}

static void submit(struct device *dev, int (*run)(void *), void (*done)(void *, int));
static int open_run(void *arg);
static void open_done(void *arg, int r);

/* A job that was to leave dev open did not (r < 0), and dev was told meanwhile that it may
 * open (a udev event while the job ran): open once more, still `cycling`. */
static bool open_again(struct device *dev, int r)
{
	bool again = r < 0 && dev->reopen_again;

	dev->reopen_again = false;
	if (again)
		submit(dev, open_run, open_done);
	return again;
}

static void cycle_done(void *arg, int r)
{
	struct device *dev = arg;
	char msg[sizeof(dev->message)];

	job_ended(dev);
	dev->handle = NULL;
	if (hand_to_reaper(dev) || gone_meanwhile(dev))
		return;
	dev->generation++;
	if (open_again(dev, r))
		return;
	snprintf(msg, sizeof(msg), "reopening after a device cycle failed: %.300s", dev->job_msg);
	/* A reopened device's message is the cycle's, not the first open's. */
	dev->job_msg[0] = '\0';
	opened(dev, r, msg);
}

static void submit(struct device *dev, int (*run)(void *), void (*done)(void *, int))
{
	dev->cycling = true;
	dev->reopen_again = false;
	dev->job = (struct worker_job){ .run = run, .done = done, .arg = dev };
	/* On the device's own lane: nothing of another device queues ahead of it, so the job
	 * starts now (given a free thread) and `cycling` means its own cycle runs. */
	worker_submit_lane(dev->reg->worker, &dev->lane, &dev->job);
}

/* Worker thread: open a device a reload declared. */
static int open_run(void *arg)
{
	return job_open(arg);
}

static void open_done(void *arg, int r)
{
	struct device *dev = arg;

	job_ended(dev);
	if (hand_to_reaper(dev) || gone_meanwhile(dev) || open_again(dev, r))
		return;
	opened(dev, r, dev->job_msg);
}

/* Open dev on the worker (declared by a reload, or back after it failed or went): not ready
 * until then. */
static void start_open(struct device *dev, const char *why)
{
	dev->waiting = false;
	set_state(dev, STATE_CYCLING, why);
	report(dev);
	submit(dev, open_run, open_done);
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

/* A removed device is let go of at once: its leases end now (those revoking keep their
 * reason), and the reaper closes it. */
static int retire_now(struct device *dev, int reason)
{
	if (dev->cycling)
		return -EBUSY; /* the reaper closes it when the job ends */
	unwatch(dev);
	buffers_dying(dev, reason);
	wake_reaper(dev->reg);
	return 0;
}

static int cycle(struct device *dev, int reason, const char *why)
{
	if (dev->removing)
		return retire_now(dev, reason);
	if (dev->cycling || dev->waiting)
		return -EBUSY;
	if (dev->state == STATE_GONE)
		/* Closed already (its close ran on the worker): an admin's reset is the way back
		 * where no udev event says the device was bound again. */
		return registry_reopen(dev, "opening again: asked by a reset");
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
	bool again = dev->reopen_again;

	job_ended(dev);
	dev->handle = NULL;
	if (dev->removing) {
		wake_reaper(dev->reg);
		return;
	}
	answer_waiters(dev, -ENXIO, "the device is gone");
	/* Bound again while its close ran: it opens now. */
	if (again)
		registry_reopen(dev, "opening again: bound to a vfio driver again");
}

/* Close dev on the worker; its fds leave the store first. */
static void close_on_worker(struct device *dev)
{
	unwatch(dev);
	closing(dev);
	submit(dev, close_run, close_done);
}

static void shutdown_closed(void *arg, int r)
{
	struct device *dev = arg;

	job_ended(dev);
	dev->handle = NULL;
}

void registry_close_all(struct registry *reg)
{
	if (!reg)
		return;
	for (size_t i = 0; i < reg->n_devices; i++) {
		struct device *dev = reg->devices[i];
		if (dev->cycling || !dev->handle)
			continue; /* a running job's device is closed by registry_free() */
		/* Its fds stay in the store: at a hand-over the next instance takes them. */
		unwatch(dev);
		submit(dev, close_run, shutdown_closed);
	}
}

void registry_device_gone(struct device *dev, const char *why)
{
	if (dev->removing) {
		retire_now(dev, P2PBUF__REASON__REASON_DEVICE_GONE);
		return;
	}
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
	registry_note(dev, "the kernel reported a device error (AER); leases stay");
}

void registry_note(struct device *dev, const char *message)
{
	set_state(dev, dev->state, message);
	report(dev);
}

int registry_reopen(struct device *dev, const char *why)
{
	if (dev->removing || dev->waiting)
		return -EBUSY;
	if (dev->cycling) {
		dev->reopen_again = true;
		return -EBUSY;
	}
	if (dev->state != STATE_FAILED && dev->state != STATE_GONE)
		return -EALREADY;
	/* Every buffer of a gone device died with its close: the next ones are of a new
	 * generation. */
	if (dev->state == STATE_GONE)
		dev->generation++;
	start_open(dev, why);
	return 0;
}

struct device *registry_find_pci(struct registry *reg, const char *pci)
{
	for (size_t i = 0; i < reg->n_devices; i++) {
		struct device *dev = reg->devices[i];
		if (!dev->removing && dev->decl.kind == POLICY_DEVICE_PCI &&
		    strcmp(dev->decl.pci, pci) == 0)
			return dev;
	}
	return NULL;
}

/* ---- a reload's changes ---- */

/* The next device of the name whose place a freed one leaves opens, once no other of that
 * name is left: two devices of one name never hold fds (or fd-store names) at once. */
static void open_waiting(struct registry *reg, const char *name)
{
	struct device *next = NULL;

	for (size_t i = 0; i < reg->n_devices; i++) {
		struct device *dev = reg->devices[i];
		if (strcmp(dev->decl.name, name) != 0)
			continue;
		if (!dev->waiting || dev->removing)
			return;
		next = dev;
	}
	if (next)
		start_open(next, "opening: declared by a policy reload");
}

/* Free removed devices whose leases have ended, closing on the worker those still open
 * first. Runs as its own event, so that nothing up the stack still uses what it frees. */
static void on_reap(evutil_socket_t fd, short what, void *arg)
{
	struct registry *reg = arg;
	char name[sizeof(reg->devices[0]->decl.name)];

	for (size_t i = 0; i < reg->n_devices;) {
		struct device *dev = reg->devices[i];
		if (!dev->removing || dev->cycling || dev->leases.n > 0) {
			i++;
			continue;
		}
		if (dev->handle) {
			close_on_worker(dev);
			i++;
			continue;
		}
		memmove(&reg->devices[i], &reg->devices[i + 1],
			(reg->n_devices - i - 1) * sizeof(reg->devices[0]));
		reg->n_devices--;
		answer_waiters(dev, -ENXIO, dev->message);
		snprintf(name, sizeof(name), "%s", dev->decl.name);
		device_free(dev);
		open_waiting(reg, name);
	}
}

void registry_lease_ended(struct device *dev)
{
	if (dev->removing)
		wake_reaper(dev->reg);
}

struct registry_plan {
	struct registry *reg;
	const struct policy *policy;
	struct device **kept;  /* [i]: the device that stays for policy->devices[i], or NULL */
	struct device **added; /* [i]: the new device for policy->devices[i], or NULL */
	bool *declared;	       /* [k]: registry device k is in the new policy */
	size_t n_registry;     /* registry devices when the plan was made */
	struct registry_changes changes;
};

void registry_plan_free(struct registry_plan *plan)
{
	if (!plan)
		return;
	for (size_t i = 0; plan->added && i < plan->policy->n_devices; i++)
		free(plan->added[i]);
	free(plan->kept);
	free(plan->added);
	free(plan->declared);
	free(plan);
}

/* Pair policy's device i with the registry's: kept (perhaps with new options) or added. */
static int plan_device(struct registry_plan *plan, size_t i)
{
	struct registry *reg = plan->reg;
	const struct policy_device *decl = &plan->policy->devices[i];
	struct device *old = find_declared(reg, decl->name);

	if (old && registry_same_device(&old->decl, decl)) {
		plan->kept[i] = old;
		plan->changes.changed += options_differ(&old->decl, decl);
	} else {
		plan->added[i] = device_new(reg, decl);
		if (!plan->added[i])
			return -ENOMEM;
		plan->changes.added++;
	}
	for (size_t k = 0; old && k < plan->n_registry; k++)
		if (reg->devices[k] == old)
			plan->declared[k] = plan->kept[i] != NULL;
	return 0;
}

int registry_plan_new(struct registry *reg, const struct policy *policy,
		      struct registry_plan **ret_plan)
{
	_cleanup_(registry_plan_freep) struct registry_plan *plan = calloc(1, sizeof(*plan));
	size_t n = policy->n_devices;

	if (!plan)
		return -ENOMEM;
	plan->reg = reg;
	plan->policy = policy;
	plan->n_registry = reg->n_devices;
	plan->kept = calloc(n + 1, sizeof(*plan->kept));
	plan->added = calloc(n + 1, sizeof(*plan->added));
	plan->declared = calloc(reg->n_devices + 1, sizeof(*plan->declared));
	if (!plan->kept || !plan->added || !plan->declared)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (plan_device(plan, i) < 0)
			return -ENOMEM;
	for (size_t k = 0; k < reg->n_devices; k++)
		plan->changes.removed += !reg->devices[k]->removing && !plan->declared[k];
	/* Growing the array changes nothing the registry shows. */
	if (reserve(reg, plan->changes.added) < 0)
		return -ENOMEM;
	*ret_plan = TAKE_PTR(plan);
	return 0;
}

struct registry_changes registry_plan_changes(const struct registry_plan *plan)
{
	return plan->changes;
}

/* dev is no longer declared: no new export from now on, and the reaper frees it once its
 * leases have ended. Its declaration's place in the old policy goes with that policy. */
static void remove_device(struct device *dev)
{
	dev->removing = true;
	dev->waiting = false;
	dev->decl.file = NULL;
	dev->decl.line = 0;
	/* The daemon lets go of the device: no lease on it may linger past its deadline. */
	dev->decl.revocation = POLICY_REVOKE_ENFORCE;
	if (dev->state != STATE_GONE) {
		set_state(dev, STATE_GONE, "removed from the policy by a reload");
		report(dev);
	}
	wake_reaper(dev->reg);
}

/* A device the plan made joins the registry: it opens now, or once the removed device of
 * the same name is freed. */
static void add_device(struct registry *reg, struct device *dev)
{
	bool busy = find_any(reg, dev->decl.name, NULL) != NULL;

	reg->devices[reg->n_devices++] = dev;
	if (!busy) {
		start_open(dev, "opening: declared by a policy reload");
		return;
	}
	dev->waiting = true;
	set_state(dev, STATE_CYCLING,
		  "waiting for the removed device of the same name to close; opened then");
	report(dev);
}

void registry_commit(struct registry_plan *plan)
{
	struct registry *reg = plan->reg;

	/* Removals first: an added device of a removed one's name then waits for it. */
	for (size_t k = 0; k < plan->n_registry; k++)
		if (!reg->devices[k]->removing && !plan->declared[k])
			remove_device(reg->devices[k]);
	for (size_t i = 0; i < plan->policy->n_devices; i++) {
		if (plan->kept[i])
			registry_update(plan->kept[i], &plan->policy->devices[i]);
		else
			add_device(reg, TAKE_PTR(plan->added[i]));
	}
	registry_plan_free(plan);
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
