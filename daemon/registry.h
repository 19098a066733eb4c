/* The device registry: the devices the policy declares, their state and generation, their
 * removal and error events, and device cycles (close every fd, reopen: the only permanent
 * revoke) on the worker, each device on a lane of its own (so that a close the kernel holds up
 * delays that device alone). A reload adds devices (opened on the worker), removes them
 * (closed once their leases have ended) and changes their options, in two steps: a plan that
 * allocates everything, then a commit that cannot fail. It owns the devices, their reset
 * waiters and the worker's scratch fields, and reports up through the callbacks it is given;
 * it never calls into the modules above it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include <event2/event.h>

#include "device.h"
#include "lease.h"
#include "policy.h"
#include "worker.h"

struct registry;

struct reset_waiter { /* a request answered when the device's cycle ends */
	void *token;  /* the asker (a connection's session), opaque here */
	uint64_t request_id;
	LIST_ENTRY(reset_waiter) link;
};

struct device {
	struct registry *reg;
	struct policy_device decl; /* a copy of its declaration */
	const struct device_ops *ops;
	struct device_handle *handle; /* NULL while closed */
	struct device_info info;
	int state;	     /* wire DeviceStateKind; read by the worker during a cycle */
	uint32_t generation; /* + 1 on every device cycle */
	char message[384];   /* why it is not ready (and what it waits for), or the last event */
	struct lease_set leases;
	struct event *ev_req; /* removal */
	struct event *ev_err; /* error */
	bool cycling;	      /* its own worker job (open, cycle or close) is under way */
	bool adopted;	      /* taken over open from a previous instance (its buffers live) */
	bool removing;	      /* undeclared: closed and freed once its leases end */
	bool waiting;	      /* added while a removed one of its name is here: opens after */
	bool reopen_again;    /* told it may open while its job ran: open once more if it fails */
	LIST_HEAD(, reset_waiter) waiters;
	/* The worker's: written by the job, read by its completion on the loop. */
	struct worker_lane lane; /* its jobs run in order, apart from other devices' */
	struct worker_job job;
	struct device_handle *job_handle;
	struct device_info job_info;
	char job_msg[256];
	/* Options a reload gave while the worker had the device, applied when its job ends. */
	struct policy_device next_decl;
	bool has_next_decl;
};

/* How the registry reports up. ctx is passed back to each. */
struct registry_callbacks {
	/* dev's state or message changed (ready, cycling, failed, gone, an error report). */
	void (*state_changed)(void *ctx, const struct device *dev);
	/* Every buffer of dev is about to die (a cycle or a removal): end its leases now, so
	 * that holders hear before the buffers go. */
	void (*buffers_dying)(void *ctx, struct device *dev, int reason);
	/* A reset waiter's answer: error 0 when the device is ready again. */
	void (*answer)(void *ctx, void *token, uint64_t request_id, int error, const char *msg);
	/* dev is open (its handle is new): its fds may be parked. */
	void (*opened)(void *ctx, const struct device *dev);
	/* dev's fds are about to close. */
	void (*closing)(void *ctx, const struct device *dev);
	/* At start-up: the fds a previous instance parked for dev and the generation it had;
	 * returns how many fds (moved to the registry), or -1 when nothing of dev was kept. */
	ssize_t (*kept)(void *ctx, const struct device *dev, struct parked_fd *fds,
			uint32_t *ret_generation);
	/* What was kept of dev could not be taken over and is closed: the store must let go
	 * of its copies too, or the device stays open there. */
	void (*rejected)(void *ctx, const struct device *dev, const char *why);
	/* On the device's worker thread, before it opens a device again (after a cycle's close,
	 * or a removed one of the same name): wait until the service manager has let go of the
	 * copies of the old fds that closing() took back, since the kernel refuses to open a
	 * VFIO device while any copy of its fd is open. NULL: nothing to wait for. */
	void (*store_settle)(void *ctx);
	void *ctx;
	/* What a PCI device that is failed or gone waits for, appended to its message (the
	 * daemon's hotplug says whether udev events reach it); NULL: nothing appended. */
	const char *wait_hint;
};

/* Which backend serves a declaration; the default picks sim or vfio by its kind. Tests give
 * their own. */
typedef const struct device_ops *(*registry_backend_fn)(const struct policy_device *decl);
const struct device_ops *registry_default_backend(const struct policy_device *decl);

/* Open every device of policy on the calling thread (start-up). A device that cannot be
 * opened is `failed` with a message; the others are served. */
int registry_new(struct event_base *base, struct worker *worker, const struct policy *policy,
		 registry_backend_fn backend, const struct registry_callbacks *cb,
		 struct registry **ret_reg);
/* Shutdown: close every open device on its own lane, all at once, so that one close the
 * kernel holds up delays no other; their fds stay in the service manager's store. The caller
 * then frees the worker, which waits for the closes, and the registry. Accepts NULL. */
void registry_close_all(struct registry *reg);
/* Close every device still open (blocking: the kernel may wait for importers; the worker,
 * which has waited for every device's job, is gone by now) and free. */
void registry_free(struct registry *reg);

/* How many devices the registry holds: the declared ones and those being removed. */
size_t registry_count(const struct registry *reg);
/* The index-th of them, for walking all (the order changes when a reload adds or a removed
 * device is freed; a device is never addressed by its place in the policy). */
struct device *registry_device(struct registry *reg, size_t index);
/* The device called name (the declared one rather than one being removed), or NULL. */
struct device *registry_find(struct registry *reg, const char *name);
/* How many devices are ready. */
unsigned registry_ready(const struct registry *reg);

/* Take new options for dev (same device, same address: a reload): at once, or when the
 * worker's job on it ends. Returns -EINVAL if decl is not the same device or dev is being
 * removed. */
int registry_update(struct device *dev, const struct policy_device *decl);
/* Whether two declarations name the same device the same way (options may differ). A
 * simulated device's BARs and MSI-X layout are its hardware: they count as its address. */
bool registry_same_device(const struct policy_device *a, const struct policy_device *b);

/* What a reload changes among the devices. */
struct registry_changes {
	unsigned added;	  /* a new name, or a declared one whose address or kind changed */
	unsigned removed; /* no longer declared, or its address or kind changed */
	unsigned changed; /* the same device with other options */
};

/* A reload's device changes, worked out and allocated before any of them is made. */
struct registry_plan;

/* Compare policy's devices with the registry's by name. Everything the change needs is
 * allocated here (-ENOMEM); nothing changes until registry_commit(). policy must stay valid
 * until the plan is committed or freed, and the registry must not change meanwhile. */
int registry_plan_new(struct registry *reg, const struct policy *policy,
		      struct registry_plan **ret_plan);
/* What the plan would change. */
struct registry_changes registry_plan_changes(const struct registry_plan *plan);
/* Drop a plan that is not committed (the devices it would add are freed). Accepts NULL. */
void registry_plan_free(struct registry_plan *plan);
static inline void registry_plan_freep(struct registry_plan **plan)
{
	registry_plan_free(*plan);
}
/* Make the plan's changes and free it; it cannot fail. Removed devices are `gone` at once
 * (no new export; whatever their revocation mode, their leases are enforced, since the
 * daemon lets go of the device) and are closed on the worker, then freed, once their leases
 * have ended: the caller revokes those leases. Added devices are `cycling` until the worker
 * has opened them (a device of the same name still being removed is freed first), then
 * `ready` or `failed`. Kept devices take their new options; their leases are untouched. */
void registry_commit(struct registry_plan *plan);

/* A lease of dev has ended (it is unlinked from dev right after): a device being removed is
 * closed once its last lease is gone. */
void registry_lease_ended(struct device *dev);

/* Start a device cycle on the worker: buffers_dying(reason) first, then close and reopen.
 * -EBUSY if a cycle is already running (or the device waits to open), -ENXIO if the device
 * is gone. A device being removed is not reopened: its leases end now and it is closed. */
int registry_cycle(struct device *dev, int reason);
/* Answer (token, request_id) when dev's current or next cycle ends. */
int registry_add_waiter(struct device *dev, void *token, uint64_t request_id);
/* Forget every waiter of token (its connection closed). */
void registry_drop_waiters(struct registry *reg, void *token);

/* The device is gone (removed or unbound): end its leases, close it on the worker. */
void registry_device_gone(struct device *dev, const char *why);
/* The kernel reported an error (AER): report it, and cycle if the declaration says so. */
void registry_device_error(struct device *dev);

/* dev may open now (it was bound to a vfio driver, or its VFIO node appeared): a failed or
 * gone device opens on the worker (`cycling`, then ready or failed; a gone one's generation
 * + 1, since its buffers died), why saying so in its message. Returns 0 when the open
 * started; -EALREADY for a device that is ready; -EBUSY while its own job runs (that job,
 * should it end without the device open, then tries once more), while it is being removed or
 * waits for a removed one of its name. */
int registry_reopen(struct device *dev, const char *why);
/* Say message about dev (an event that changes nothing it serves) without a change of state. */
void registry_note(struct device *dev, const char *message);
/* The declared PCI device at address pci (canonical, as the policy stores it), or NULL. */
struct device *registry_find_pci(struct registry *reg, const char *pci);

/* References to the buffer fd of dev besides fd itself: 0 once the device is closed (every
 * buffer of a closed device is dead), 1 when the backend cannot tell (assume held). */
int registry_holders(const struct device *dev, int fd);

/* registry_holders() for fds[0..n) of dev at once, into counts[0..n): the simulated backend
 * counts them all in one walk. */
void registry_holders_many(const struct device *dev, const int *fds, size_t n, int *counts);

/* Whether the device's holder counts are slow (the simulated backend's /proc walk). */
bool registry_holders_costly(const struct device *dev);

/* The backend whose holders_detached() counts dev's buffers off the loop, or NULL where
 * registry_holders() is to be called on the loop instead: a backend without one, or a closed
 * device (its buffers are dead: 0 at once). Backends' ops are static, so the pointer may be
 * kept while dev changes. */
const struct device_ops *registry_detached_backend(const struct device *dev);
