/* The revocation engine. No kernel revokes one dma-buf, so taking a lease back means asking
 * its holder to let go, verifying through the daemon's own copy of the buffer that nobody
 * else holds it, and, when a holder does not let go in time, a device cycle: closing the
 * device revokes every buffer exported from it for good.
 *
 * Rules:
 * - An admin revoke, a policy that no longer allows a lease, and its TTL are enforced: past
 *   the device's revoke-deadline with holders left, the device is cycled (unless the device
 *   is notify-only, where the lease lingers and is reported).
 * - A lease its holder released, or whose exporting connection went away, while a copy is
 *   still held elsewhere lingers: it keeps counting against quotas, is listed with its
 *   holders, and is never cycled out, unless an admin revoke, the policy or its TTL revokes
 *   it afresh, which enforces it.
 * - Where the backend's holder count is costly (the simulated backend walks /proc), leases
 *   are counted off the event loop, on a thread of the engine's own, all of them in one
 *   count, at most once a tick: such a lease is revoking from the moment it is released or
 *   revoked and ends at the first count that finds nobody holding it. A release is told to
 *   nobody until a count finds a copy held elsewhere; an admin, policy or TTL revoke is told
 *   at once. Deadlines are judged at the time a count began. Cheap counts (vfio reads one
 *   fdinfo) are taken on the loop, at once.
 * It reads time only from the clock it is given, and reports through callbacks, so its tests
 * drive it without sleeping. */
#pragma once

#include <stdbool.h>

#include <event2/event.h>

#include "clock.h"
#include "lease.h"
#include "registry.h"

#define REVOKE_TICK_MS 50  /* how often revoking leases' holders are counted, at most */
#define REVOKE_GATHER_MS 5 /* how long a count off the loop waits for more leases to count */

struct revoke;

struct revoke_callbacks {
	/* l is now revoking: its holders must let go by l->deadline_ms (monotonic). */
	void (*revoking)(void *ctx, const struct lease *l);
	/* l is revoking (let go), told to nobody yet: the count to come decides whether anybody
	 * must hear, and revoking() follows if so. */
	void (*revoking_untold)(void *ctx, const struct lease *l);
	/* l ended (its state and reason are final); it is freed right after. */
	void (*ended)(void *ctx, const struct lease *l);
	/* l is past its deadline with holders left; enforced: its device is being cycled. Called
	 * once per lease and deadline. */
	void (*overdue)(void *ctx, const struct lease *l, int holders, bool enforced);
	/* A count off the loop is back and judged (leases it found let go have ended). */
	void (*counted)(void *ctx);
	void *ctx;
};

int revoke_new(struct event_base *base, struct lease_table *leases,
	       const struct clock_source *clock, const struct revoke_callbacks *cb,
	       struct revoke **ret_rv);
void revoke_free(struct revoke *rv);

/* A new lease: start its TTL (l->expires_mono), if it has one. */
int revoke_track(struct revoke *rv, struct lease *l);

/* End l with reason now (its buffer is dead, or nobody holds it): tell, then delete. */
void revoke_end(struct revoke *rv, struct lease *l, int reason);
/* End every lease of a device with reason (its buffers are about to die). */
void revoke_end_all(struct revoke *rv, struct lease_set *leases, int reason);

/* Take l back for reason (admin, policy, TTL): it ends at once if nobody but the daemon
 * holds it, otherwise it revokes with the device's deadline, enforced. Where the count is
 * costly it revokes in any case, and the next count ends it if nobody holds it. */
void revoke_lease(struct revoke *rv, struct lease *l, int reason);
/* The holder released l: it ends when nobody else holds it (where the count is costly, at
 * the next count, not at once); never enforced. */
void revoke_release(struct revoke *rv, struct lease *l);
/* l's exporting connection went away: the same as a release, with reason owner-disconnected. */
void revoke_owner_gone(struct revoke *rv, struct lease *l);

/* An adopted lease that was revoking before the restart goes on revoking: reason, deadline
 * (monotonic) and lingering as recorded. */
void revoke_resume(struct revoke *rv, struct lease *l, int reason, int64_t deadline_ms,
		   bool lingering);
/* Its owner reclaimed l: a lease that lingered only because its owner had gone is active
 * again. */
void revoke_reclaimed(struct revoke *rv, struct lease *l);

/* Every lease of a closed connection's set, counted in one batch. */
void revoke_owner_gone_all(struct revoke *rv, struct lease_set *leases);

/* Do what is due at the clock's now: count the revoking leases' holders, end those let go,
 * handle deadlines, expire TTLs. The engine's own timers call it; tests call it directly. */
void revoke_run(struct revoke *rv);

/* How many leases are revoking. */
size_t revoke_pending(const struct revoke *rv);

/* Whether a count is running off the loop (its result comes back through the loop). */
bool revoke_counting(const struct revoke *rv);

/* Whether leases let go or revoked wait for their first count off the loop: until it is
 * back, they still count against every quota, though they may be about to end. */
bool revoke_settling(const struct revoke *rv);

/* l's holders for a listing: counted now where that is cheap; where it is costly, those of
 * the last count of a revoking lease (-1 before its first), and -1 (unknown) for an active
 * one. */
int revoke_holders(const struct lease *l);
