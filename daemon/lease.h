/* The lease table: every buffer p2pbufd handed out, with the daemon's own copy of its fd.
 * A lease moves active -> revoking -> ended. This module is the only one that links a lease
 * into the lists of its owner and its device and keeps their counts and the per-rule counts
 * (lease_attach / lease_delete); it does no I/O but closing a deleted lease's fd. Time is
 * passed in, so tests control the clock. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "range.h"

#define LEASE_LABEL_MAX 256

struct device;
struct peer;

enum lease_state {
	LEASE_ACTIVE = 1, /* values match the wire's LeaseStateKind */
	LEASE_REVOKING = 2,
	LEASE_ENDED = 3,
};

LIST_HEAD(lease_list, lease);
TAILQ_HEAD(lease_queue, lease);

/* The leases of one owner (a connection) or one device, with their number. */
struct lease_set {
	struct lease_list list;
	unsigned n;
};

struct lease {
	uint64_t id;
	enum lease_state state;
	int reason;		  /* wire Reason, once revoking or ended */
	int fd;			  /* the daemon's own copy of the buffer; the lease owns it */
	struct lease_set *owner;  /* the exporting connection's set; NULL once it is gone */
	struct lease_set *on_dev; /* its device's set */
	struct peer *peer;	  /* who asked for it (a reference) */
	struct device *device;
	uint32_t generation; /* the device generation it was exported from */
	unsigned bar;
	uint64_t size;
	int rule;	     /* index of the allowing rule in the current policy, or -1 */
	int next_rule;	     /* scratch for a policy reload: the rule that allows it next */
	char rule_where[64]; /* "file:line" of that rule */
	char label[LEASE_LABEL_MAX + 1];
	uint8_t token[16];	     /* proves ownership in a Reclaim (WIRE_TOKEN_LEN) */
	int64_t created_ms;	     /* CLOCK_REALTIME */
	int64_t expires_ms;	     /* CLOCK_REALTIME, 0: no TTL */
	int64_t expires_mono;	     /* the same on CLOCK_MONOTONIC, 0: no TTL */
	int64_t deadline_ms;	     /* CLOCK_MONOTONIC: revoking holders must let go by then */
	size_t ttl_slot;	     /* the revocation engine's: its place in the TTL heap, +1 */
	uint32_t count_serial;	     /* the engine's: the count off the loop it is in, or 0 */
	int holders_seen;	     /* the engine's: holders at its last count, -1: none yet */
	bool announced;		     /* the engine's: its holders were told it is revoking */
	bool lingering;		     /* revoking past its deadline, not enforced */
	bool owner_let_go;	     /* its exporting connection released it: it needs no events */
	bool unclaimed;		     /* adopted after a restart, not yet reclaimed by its owner */
	bool parked;		     /* the service manager's fd store holds a copy of the buffer */
	bool user_counted;	     /* counted under its peer's uid (lease_attach) */
	bool own_file;		     /* its client got a file of its own (device_ops.reopen) */
	TAILQ_ENTRY(lease) in_table; /* every live lease, in id order */
	LIST_ENTRY(lease) by_owner;
	LIST_ENTRY(lease) by_device;
	LIST_ENTRY(lease) revoking; /* on the revocation engine's list */
	struct lease *hash_next;
	size_t n_ranges;
	struct range ranges[];
};

#define LEASE_USER_BUCKETS 256

/* How many leases one uid holds. Entries come from a pool with one per lease the table can
 * hold (each lease could be another uid's), so counting never allocates. */
struct lease_user {
	uid_t uid;
	unsigned n;
	struct lease_user *next; /* in its bucket, or on the free list */
};

struct lease_table {
	struct lease_queue all; /* ascending ids: new leases go last */
	struct lease **buckets; /* ids are sequential, so id & mask spreads them evenly */
	size_t mask;
	size_t count; /* leases in the table, any state */
	size_t cap;   /* most leases at once */
	uint64_t next_id;
	unsigned *rule_leases; /* live leases per rule of the current policy */
	uint64_t *rule_bytes;  /* and their bytes */
	size_t n_rules;
	struct lease_user *users[LEASE_USER_BUCKETS];
	struct lease_user *user_pool; /* cap entries */
	struct lease_user *user_free;
};

/* Make an empty table for at most cap leases, counting against n_rules rules. */
int lease_table_init(struct lease_table *t, size_t cap, size_t n_rules);

/* Delete every lease left (closing their fds) and free the table. */
void lease_table_fini(struct lease_table *t);

/* Allocate an active lease with a fresh id and room for n ranges, and add it to the table.
 * -EDQUOT when the table is full. fd is -1 until the caller stores the buffer. */
int lease_new(struct lease_table *t, size_t n_ranges, struct lease **ret_lease);

/* The same with a given id, above every id so far (leases adopted after a restart). */
int lease_new_id(struct lease_table *t, uint64_t id, size_t n_ranges, struct lease **ret_lease);

/* The lease with this id, or NULL. */
struct lease *lease_find(const struct lease_table *t, uint64_t id);

/* Link l into its owner's and its device's sets and count it (and its size) against rule (or
 * -1) and, when l->peer is set, its peer's uid. */
void lease_attach(struct lease_table *t, struct lease *l, struct lease_set *owner,
		  struct lease_set *on_dev, int rule);

/* How many leases in the table, any state, were exported by uid: a quota holds until a
 * buffer is really let go. O(1) in the number of leases. */
unsigned lease_user_count(const struct lease_table *t, uid_t uid);

/* Give l a new owner (a Reclaim), taking it off any old one. */
void lease_set_owner(struct lease *l, struct lease_set *owner);

/* Take l off its owner's set (the connection went away); it stays on its device. */
void lease_forget_owner(struct lease *l);

/* Replace the per-rule counts (a policy reload): counts and bytes have n_rules entries each
 * and already count every lease and its size by its next_rule, which becomes its rule. Takes
 * both arrays and frees the old ones. */
void lease_table_swap_rules(struct lease_table *t, unsigned *counts, uint64_t *bytes,
			    size_t n_rules);

/* Unlink l from everything, uncount it, close its fd, drop its peer, and free it. */
void lease_delete(struct lease_table *t, struct lease *l);
/* lease_delete, but the lease's fd is returned (-1 if none) for the caller to close later. */
int lease_delete_keep_fd(struct lease_table *t, struct lease *l);

/* active -> revoking with reason, holders told to let go by now_ms + grace_ms. Returns true if
 * the state changed (false: already revoking or ended; the first reason stands). */
bool lease_begin_revoke(struct lease *l, int reason, int64_t now_ms, int64_t grace_ms);

/* A revoking lease goes back to active (before it is revoked afresh for a new reason). */
void lease_reactivate(struct lease *l);

/* -> ended with reason (kept if the lease was already revoking for another reason). Returns
 * true if the state changed. */
bool lease_end(struct lease *l, int reason);

/* References to l's buffer held by its users, from the backend's count (which includes the
 * copy parked in the service manager's fd store, not a user's). */
int lease_user_holders(const struct lease *l, int counted);

/* Whether reason is one the holder chose (a release, its disconnection): a revocation for it
 * is never enforced, and its end is a routine line of the audit trail. */
bool lease_reason_chosen(int reason);

/* Whether a revoking lease's deadline has passed at now_ms. */
bool lease_deadline_passed(const struct lease *l, int64_t now_ms);
