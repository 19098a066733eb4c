/* The lease table: every buffer p2pbufd handed out, with the daemon's own copy of its fd.
 * A lease moves active -> revoking -> ended; this module keeps the table and the state
 * machine and does no I/O: the caller tells events and closes devices. Time is passed in, so
 * tests control the clock. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "range.h"

#define LEASE_LABEL_MAX 256

struct conn;
struct device;

enum lease_state {
	LEASE_ACTIVE = 1, /* values match the wire's LeaseStateKind */
	LEASE_REVOKING = 2,
	LEASE_ENDED = 3,
};

struct lease {
	uint64_t id;
	enum lease_state state;
	int reason;	    /* wire Reason, once revoking or ended */
	int fd;		    /* the daemon's own copy of the buffer */
	struct conn *owner; /* NULL once the owning connection is gone */
	uid_t owner_uid;
	pid_t owner_pid;
	struct device *device;
	uint32_t generation; /* the device generation it was exported from */
	unsigned bar;
	uint64_t size;
	int rule;	     /* index of the allowing rule in the current policy */
	char rule_where[64]; /* "file:line" of that rule */
	char label[LEASE_LABEL_MAX + 1];
	int64_t created_ms;	     /* CLOCK_REALTIME */
	int64_t expires_ms;	     /* CLOCK_REALTIME, 0: no TTL */
	int64_t deadline_ms;	     /* CLOCK_MONOTONIC: revoking holders must let go by then */
	void *timer;		     /* the caller's TTL timer, owned by the caller */
	bool lingering;		     /* revoking past its deadline, not enforced */
	TAILQ_ENTRY(lease) in_table; /* every live lease, in id order */
	LIST_ENTRY(lease) by_owner;
	LIST_ENTRY(lease) by_device;
	LIST_ENTRY(lease) revoking; /* on the caller's list of leases being revoked */
	struct lease *hash_next;
	size_t n_ranges;
	struct range ranges[];
};

LIST_HEAD(lease_list, lease);
TAILQ_HEAD(lease_queue, lease);

struct lease_table {
	struct lease_queue all; /* ascending ids: new leases go last */
	struct lease **buckets; /* ids are sequential, so id & mask spreads them evenly */
	size_t mask;
	size_t count; /* leases in the table, any state */
	size_t cap;   /* most leases at once */
	uint64_t next_id;
};

/* Make an empty table for at most cap leases. */
int lease_table_init(struct lease_table *t, size_t cap);

/* Free every lease left (their fds must already be closed) and the table. */
void lease_table_fini(struct lease_table *t);

/* Allocate an active lease with a fresh id and room for n ranges, and add it to the table.
 * -EDQUOT when the table is full. fd is -1 until the caller stores the buffer. */
int lease_new(struct lease_table *t, size_t n_ranges, struct lease **ret_lease);

/* The lease with this id, or NULL. */
struct lease *lease_find(const struct lease_table *t, uint64_t id);

/* Remove l from the table (and from its owner and device lists) and free it. */
void lease_delete(struct lease_table *t, struct lease *l);

/* Take l off its owner's list and forget the owner (the connection went away). */
void lease_forget_owner(struct lease *l);

/* active -> revoking with reason, holders told to let go by now_ms + grace_ms. Returns true if
 * the state changed (false: already revoking or ended; the first reason stands). */
bool lease_begin_revoke(struct lease *l, int reason, int64_t now_ms, int64_t grace_ms);

/* -> ended with reason (kept if the lease was already revoking for another reason). Returns
 * true if the state changed. */
bool lease_end(struct lease *l, int reason);

/* Whether a revoking lease's deadline has passed at now_ms. */
bool lease_deadline_passed(const struct lease *l, int64_t now_ms);
