/* The daemon's state, in one struct passed explicitly to every module above the backends. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include <event2/event.h>

#include "device.h"
#include "lease.h"
#include "policy.h"
#include "sandbox.h"
#include "worker.h"
#include "wire.h"

#define CONN_MAX_GROUPS 256	      /* supplementary groups kept per peer */
#define CONN_MAX_OUTQ_BYTES (1 << 20) /* a client that does not read is dropped past this */

struct options {
	const char *socket_path; /* NULL: socket activation or the default path */
	const char *policy_path;
	unsigned max_clients;
	unsigned max_leases_per_client;
	unsigned max_leases;	 /* in the whole daemon */
	uint64_t max_lease_size; /* bytes; 0: no cap */
	enum sandbox_mode sandbox;
	bool verbose;
};

struct pending_reply { /* a request answered when a device cycle ends */
	struct conn *conn;
	uint64_t request_id;
	LIST_ENTRY(pending_reply) link;
};

struct device {
	struct daemon *d;
	struct policy_device decl; /* copy of its declaration */
	const struct device_ops *ops;
	struct device_handle *handle; /* NULL while closed */
	struct device_info info;
	int state;	     /* wire DeviceStateKind */
	uint32_t generation; /* + 1 on every device cycle */
	char message[256];   /* why it is not ready */
	struct lease_list leases;
	unsigned n_leases;
	struct event *ev_req;  /* removal */
	struct event *ev_err;  /* error */
	struct worker_job job; /* the cycle in progress, if any */
	/* Written by the worker during a cycle, installed by the loop when it ends. */
	struct device_handle *job_handle;
	struct device_info job_info;
	char job_msg[256];
	bool cycling;
	int cycle_reason; /* wire Reason given to the leases it ends */
	LIST_HEAD(, pending_reply) waiters;
};

struct outmsg {
	STAILQ_ENTRY(outmsg) link;
	int fd; /* a duplicate owned by the queue, or -1 */
	size_t len;
	uint8_t data[];
};

struct conn {
	struct daemon *d;
	int fd;
	struct event *ev_read;
	struct event *ev_write;
	STAILQ_HEAD(, outmsg) outq; /* records the socket would not take yet, oldest first */
	size_t outq_bytes;
	pid_t pid;
	gid_t groups[CONN_MAX_GROUPS];
	struct policy_peer peer; /* uid, gid and groups, taken once at accept */
	bool hello;		 /* Hello accepted; nothing else is served before */
	bool subscribed;	 /* device state events */
	bool subscribed_all;	 /* every event (observers and admins) */
	bool closing;
	struct lease_list leases;
	unsigned n_leases; /* counted until each lease really ended */
	uint64_t id;	   /* for log lines */
	TAILQ_ENTRY(conn) link;
};

struct daemon {
	struct event_base *base;
	struct options opt;
	struct policy *policy;
	unsigned *rule_leases; /* live leases per rule of the current policy */
	struct device *devices;
	size_t n_devices;
	struct lease_table leases;
	struct lease_list revoking;   /* leases waiting for their holders to let go */
	struct event *ev_revoke_tick; /* polls holders while any lease is revoking */
	struct worker *worker;
	int listen_fd;
	bool listen_fd_owned; /* false when systemd passed it */
	struct event *ev_listen;
	TAILQ_HEAD(, conn) conns;
	TAILQ_HEAD(, conn) dead; /* closed, freed by ev_reap on the loop's next turn */
	struct event *ev_reap;
	unsigned n_conns;
	uint64_t next_conn_id;
	struct event *ev_signals[4];
	int64_t started_ms;
	uint64_t page_size;
	bool stopping;
};

/* registry.c: the devices the policy declares. */
int registry_open_all(struct daemon *d);
struct device *registry_find(struct daemon *d, const char *name);
void registry_close_all(struct daemon *d);
/* Start a device cycle (close, reopen: permanent revoke of every buffer) on the worker;
 * every lease of the device ends with reason. Returns -EBUSY if one is already running. */
int registry_cycle(struct device *dev, int reason);
/* The device is gone (removed or unbound): end its leases, close it on the worker. */
void registry_device_gone(struct device *dev, const char *why);

/* revoke.c: the revocation engine. */
int revoke_init(struct daemon *d);
void revoke_fini(struct daemon *d);
/* End l with reason now: tell its holder and observers, close the daemon's copy, give back
 * its quotas, free it. For buffers that are already dead (device cycled or gone). */
void revoke_end_lease(struct daemon *d, struct lease *l, int reason);
/* End every lease of dev with reason (its device is being closed). */
void revoke_device_leases(struct daemon *d, struct device *dev, int reason);
/* Take l back: it ends at once if nobody but the daemon holds its buffer; otherwise it is
 * revoking, its holder is told, and it ends when the references are gone or, past the
 * device's deadline, by a device cycle (unless the device is notify-only). A lease already
 * revoking keeps its first reason, except that an admin or policy revoke of a released,
 * lingering lease makes it an enforced one. */
void revoke_lease(struct daemon *d, struct lease *l, int reason);
/* The holder released l: it ends when nobody else holds the buffer (never enforced). */
void revoke_release(struct daemon *d, struct lease *l);
/* The owning connection of l went away. */
void revoke_owner_gone(struct daemon *d, struct lease *l);
/* Start l's TTL timer, if it has a TTL. */
int revoke_arm_ttl(struct daemon *d, struct lease *l);
/* After the policy changed: revoke every lease the new policy no longer allows (reason
 * policy) and count the others against the rules that allow them now. */
int revoke_recheck_policy(struct daemon *d);

/* server.c: the socket, connections, replies and events. */
int server_listen(struct daemon *d);
void server_stop(struct daemon *d);
void conn_close(struct conn *c, const char *why);
/* Send a reply; body may be NULL; fd (>= 0) is attached and stays owned by the caller. */
void conn_reply(struct conn *c, uint64_t request_id, int error, const char *message,
		P2pbuf__Reply *body, int fd);
/* Send an event to owner (may be NULL) and to subscribers. device_event: also to connections
 * that subscribed to device state. */
void server_event(struct daemon *d, const P2pbuf__Event *ev, struct conn *owner, bool device_event);
void server_device_state(struct daemon *d, const struct device *dev);

/* handlers.c: one function per request type. */
void handle_request(struct conn *c, const P2pbuf__Request *req);
