/* p2pbufd's modules, and who calls whom (layers call down; a lower layer reports up only
 * through callbacks it was given):
 *
 *   main.c       options, signals, sd_notify; starts and stops the daemon
 *   daemon.c     the daemon: owns every module below, wires their callbacks, start-up order,
 *                policy reload (atomic), shutdown, the audit log lines
 *   handlers.c   the dispatch table: one handler per request, authorization, replies
 *   events.c     builds every event (lease revoking/revoked, device state) and picks its
 *                recipients
 *   session.c    per-connection state above the framing: Hello, subscriptions, its leases
 *   server.c     the socket, connections, framing, output queues; calls up through
 *                server_callbacks (accepted, request, closed)
 *   revoke.c     the revocation engine: verified release, deadlines, TTLs, enforcement by a
 *                device cycle; reports through revoke_callbacks; time from a clock_source
 *   hotplug.c    udev events of the declared devices (sd-device monitor): a device bound
 *                to vfio-pci opens, one that went says so
 *   registry.c   devices, their state, REQ/ERR events, device cycles on the worker, reset
 *                waiters; reports through registry_callbacks
 *   lease.c      the lease table and state machine; the only code that links and counts
 *   worker.c     threads for blocking work, a lane per device: no device waits for another
 *   policy.c     the pure policy parser and decisions; policy-load.c reads the files
 *   device.c     the BAR model and range checks (pure); sim.c and vfio.c are the backends
 *   peer.c       a connection's identity, shared by reference with its leases
 *
 * Ownership: the lease table owns leases (and their fds); a session owns its lease_set only
 * as a list head that lease.c links; the registry owns devices and their reset waiters; the
 * server owns connections. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "clock.h"
#include "hotplug.h"
#include "persist.h"
#include "lease.h"
#include "policy.h"
#include "probe.h"
#include "registry.h"
#include "revoke.h"
#include "sandbox.h"
#include "server.h"
#include "worker.h"

struct session;

struct daemon_options {
	const char *socket_path; /* NULL: socket activation or the default path */
	const char *policy_path;
	unsigned max_clients;
	unsigned max_clients_per_user; /* 0: no cap of its own */
	unsigned max_leases_per_client;
	unsigned max_leases_per_user; /* 0: no cap of its own */
	unsigned max_leases;	      /* in the whole daemon */
	uint64_t hello_timeout_ms;    /* a client that has not said Hello by then is dropped;
					 0: never */
	uint64_t max_queued_bytes;    /* output queued for all clients together; 0: no cap */
	uint64_t max_lease_size;      /* bytes; 0: no cap */
	gid_t socket_group;	      /* (gid_t)-1: as created */
	mode_t socket_mode;	      /* of a socket the daemon creates itself */
	enum sandbox_mode sandbox;
	unsigned fd_store_max;	   /* FileDescriptorStoreMax= of the unit; 0: no parking */
	uint64_t reclaim_grace_ms; /* how long adopted leases wait for their owners */
};

/* What a reload changed. */
struct reload_summary {
	unsigned rules_added, rules_removed; /* rules compared by content, not line */
	unsigned devices_added, devices_removed, devices_changed;
	unsigned leases_revoked;
};

struct daemon {
	struct event_base *base;
	struct daemon_options opt;
	const struct clock_source *clock;
	registry_backend_fn backend; /* NULL: the real backends */
	struct policy *policy;
	struct lease_table leases;
	struct revoke *revoke;
	struct worker *worker;
	struct registry *registry;
	struct hotplug *hotplug; /* udev events; NULL where they cannot be followed */
	struct server *server;
	TAILQ_HEAD(, session) sessions;
	LIST_HEAD(, session) subscribers; /* sessions that subscribed to events */
	int64_t started_ms;
	uint64_t fd_limit; /* the soft fd limit the limits were fitted to (main.c), for Status */
	uint64_t page_size;
	struct probe_caps caps;	    /* the kernel's, probed at start-up, for Hello and Status */
	struct persist *persist;    /* parking in the fd store, and the state record */
	struct inventory *adopting; /* while start-up adopts what the store kept */
	struct event *ev_grace;	    /* ends the reclaim grace of adopted leases */
	bool handing_over;	    /* exiting for a restart: every lease stays as it is */
	bool stopping;
	/* daemon_reload_file, for the Reload request: handlers.c sits below daemon.c and reaches
	 * it only through this pointer that daemon_start sets. */
	int (*reload_file)(struct daemon *d, struct reload_summary *ret_summary, char **ret_error);
};

/* Start: take policy (owned from now on, even on failure), open the socket, the worker, the
 * devices. d->opt, d->clock (NULL: the system's) and d->backend are set by the caller; base is
 * the loop to serve on. */
int daemon_start(struct daemon *d, struct event_base *base, struct policy *policy);

/* End every lease with reason shutdown (holders are told before any device closes) and stop
 * serving. The loop may then exit. */
void daemon_stop(struct daemon *d);

/* Exit for a restart: every lease stays parked and recorded as it is, for the next instance
 * to take over; connections close without ending any lease. */
void daemon_hand_over(struct daemon *d);

/* Free everything (closes the devices: blocking). */
void daemon_finish(struct daemon *d);

/* Replace the policy by p (owned from now on) atomically: either p and every table derived
 * from it are in place, the devices follow it (added ones open on the worker, removed ones
 * close once their leases, revoked now with reason policy, have ended; see registry_commit)
 * and every live lease was re-checked, *ret_summary (may be NULL) says what changed and
 * *ret_error is NULL; or nothing changed and *ret_error (malloc'd) says why. */
int daemon_reload(struct daemon *d, struct policy *p, struct reload_summary *ret_summary,
		  char **ret_error);

/* Load d->opt.policy_path again and daemon_reload() it; the outcome is logged either way. On
 * a refusal *ret_error holds every error, one a line. */
int daemon_reload_file(struct daemon *d, struct reload_summary *ret_summary, char **ret_error);
