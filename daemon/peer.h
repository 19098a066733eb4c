/* Who is on the other end of a connection: taken once at accept and shared, by reference,
 * with every lease the connection exports, so that a lease whose connection is gone is still
 * checked against the policy as the user who asked for it. */
#pragma once

#include <sys/types.h>

#include "log.h"
#include "policy.h"

/* How the audit trail bounds the lines a connection causes (audit.c owns it). */
struct peer_audit {
	struct log_ratelimit limit;
	unsigned long unlogged_grants, unlogged_ends; /* not logged one by one, not told yet */
	bool closed;				      /* the connection has gone */
};

struct peer {
	unsigned refs;
	pid_t pid;		 /* for logs only: decisions never use it */
	char *unit;		 /* the peer's systemd unit, NULL if unknown (owned) */
	struct policy_peer view; /* uid, gid, supplementary groups, unit: what the policy sees */
	struct peer_audit audit;
	gid_t groups[];
};

/* A peer with room for n_groups supplementary groups (view.groups points at them). */
struct peer *peer_new(uid_t uid, gid_t gid, pid_t pid, const gid_t *groups, size_t n_groups);
struct peer *peer_ref(struct peer *p);
/* Give p its systemd unit (owned from now on; NULL: unknown), for the policy's unit rules
 * too. */
void peer_set_unit(struct peer *p, char *unit);
/* Drop a reference; the last one frees. Accepts NULL. */
void peer_unref(struct peer *p);
/* The system unit a cgroup v2 path (the "0::" line of /proc/PID/cgroup) lies in: its first
 * component that is not a slice, malloc'd, or NULL. */
char *peer_unit_of_cgroup(const char *path);

/* "uid 1000 gid 1000 groups 4,27" for messages and logs. */
void peer_describe(const struct peer *p, char *buf, size_t len);
