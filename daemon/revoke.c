#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>

#include "p2pbuf.pb-c.h"
#include "revoke.h"

#define REASON(x) P2PBUF__REASON__REASON_##x

struct revoke {
	struct lease_table *leases;
	const struct clock_source *clock;
	struct revoke_callbacks cb;
	struct lease_list revoking; /* leases waiting for their holders to let go */
	size_t n_revoking;
	struct event *ev_tick; /* polls holders while any lease is revoking */
	struct event *ev_ttl;  /* the earliest TTL */
	struct lease **ttl;    /* a binary min-heap on expires_mono */
	size_t n_ttl, cap_ttl;
	/* Scratch for counting many leases' holders at once. */
	struct lease **batch;
	struct device **devs; /* batch[i]'s device, readable after batch[i] is freed */
	int *fds, *counts;
	size_t cap_batch;
};

static int reserve_batch(struct revoke *rv, size_t n);
static void count_batch(struct revoke *rv, size_t n);

static int64_t now_mono(const struct revoke *rv)
{
	return rv->clock->monotonic_ms(rv->clock->ctx);
}

/* ---- the TTL heap ---- */

static bool earlier(const struct revoke *rv, size_t a, size_t b)
{
	return rv->ttl[a]->expires_mono < rv->ttl[b]->expires_mono;
}

static void heap_set(struct revoke *rv, size_t i, struct lease *l)
{
	rv->ttl[i] = l;
	l->ttl_slot = i + 1;
}

static void heap_swap(struct revoke *rv, size_t a, size_t b)
{
	struct lease *t = rv->ttl[a];

	heap_set(rv, a, rv->ttl[b]);
	heap_set(rv, b, t);
}

static void sift_up(struct revoke *rv, size_t i)
{
	while (i > 0 && earlier(rv, i, (i - 1) / 2)) {
		heap_swap(rv, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void sift_down(struct revoke *rv, size_t i)
{
	for (;;) {
		size_t m = i, l = 2 * i + 1, r = l + 1;
		if (l < rv->n_ttl && earlier(rv, l, m))
			m = l;
		if (r < rv->n_ttl && earlier(rv, r, m))
			m = r;
		if (m == i)
			return;
		heap_swap(rv, i, m);
		i = m;
	}
}

static void heap_remove(struct revoke *rv, struct lease *l)
{
	if (!l->ttl_slot)
		return;
	size_t i = l->ttl_slot - 1;
	l->ttl_slot = 0;
	if (--rv->n_ttl == i)
		return;
	heap_set(rv, i, rv->ttl[rv->n_ttl]);
	sift_up(rv, i);
	sift_down(rv, i);
}

/* ---- timers ---- */

static void arm(struct event *ev, int64_t ms)
{
	struct timeval tv = { .tv_sec = ms > 0 ? ms / 1000 : 0,
			      .tv_usec = ms > 0 ? (ms % 1000) * 1000 : 0 };

	/* Adding a timer fails only when libevent's timer heap must grow; revoke_new added both
	 * timers once, so the heap already has room for them. */
	evtimer_add(ev, &tv);
}

static void arm_tick(struct revoke *rv)
{
	if (rv->ev_tick && !evtimer_pending(rv->ev_tick, NULL))
		arm(rv->ev_tick, REVOKE_TICK_MS);
}

static void arm_ttl(struct revoke *rv)
{
	if (!rv->ev_ttl)
		return;
	if (rv->n_ttl == 0)
		evtimer_del(rv->ev_ttl);
	else
		arm(rv->ev_ttl, rv->ttl[0]->expires_mono - now_mono(rv));
}

int revoke_track(struct revoke *rv, struct lease *l)
{
	if (!l->expires_mono)
		return 0;
	if (rv->n_ttl == rv->cap_ttl) {
		size_t cap = rv->cap_ttl ? rv->cap_ttl * 2 : 64;
		struct lease **t = reallocarray(rv->ttl, cap, sizeof(*t));
		if (!t)
			return -ENOMEM;
		rv->ttl = t;
		rv->cap_ttl = cap;
	}
	heap_set(rv, rv->n_ttl++, l);
	sift_up(rv, l->ttl_slot - 1);
	if (rv->ttl[0] == l)
		arm_ttl(rv);
	return 0;
}

/* ---- the lease life cycle ---- */

static void unlist(struct revoke *rv, struct lease *l)
{
	if (l->revoking.le_prev) {
		LIST_REMOVE(l, revoking);
		l->revoking.le_prev = NULL;
		rv->n_revoking--;
	}
}

void revoke_end(struct revoke *rv, struct lease *l, int reason)
{
	lease_end(l, reason);
	unlist(rv, l);
	heap_remove(rv, l);
	if (rv->cb.ended)
		rv->cb.ended(rv->cb.ctx, l);
	lease_delete(rv->leases, l);
}

void revoke_end_all(struct revoke *rv, struct lease_set *leases, int reason)
{
	struct lease *l;

	while ((l = LIST_FIRST(&leases->list)))
		revoke_end(rv, l, reason);
}

static void begin(struct revoke *rv, struct lease *l, int reason)
{
	lease_begin_revoke(l, reason, now_mono(rv), (int64_t)l->device->decl.revoke_deadline_ms);
	LIST_INSERT_HEAD(&rv->revoking, l, revoking);
	rv->n_revoking++;
	if (rv->cb.revoking)
		rv->cb.revoking(rv->cb.ctx, l);
	arm_tick(rv);
}

/* Whether the holder let go of its own accord: a lease revoking for such a reason is never
 * enforced. */
static bool voluntary(int reason)
{
	return reason == REASON(RELEASED) || reason == REASON(OWNER_DISCONNECTED);
}

void revoke_lease(struct revoke *rv, struct lease *l, int reason)
{
	/* A lingering release says only that its holder is done with it; an admin, the policy
	 * or the TTL saying the memory must become unreachable revokes it afresh, enforced. */
	if (l->state == LEASE_REVOKING && voluntary(l->reason) && !voluntary(reason)) {
		unlist(rv, l);
		lease_reactivate(l);
	}
	if (l->state != LEASE_ACTIVE)
		return; /* already on its way out: the first reason stands */
	if (lease_user_holders(l, registry_holders(l->device, l->fd)) == 0)
		revoke_end(rv, l, reason);
	else
		begin(rv, l, reason);
}

static void let_go(struct revoke *rv, struct lease *l, int reason)
{
	if (lease_user_holders(l, registry_holders(l->device, l->fd)) == 0)
		revoke_end(rv, l, l->state == LEASE_REVOKING ? l->reason : reason);
	else if (l->state == LEASE_ACTIVE)
		begin(rv, l, reason);
}

void revoke_resume(struct revoke *rv, struct lease *l, int reason, int64_t deadline_ms,
		   bool lingering)
{
	if (!lease_begin_revoke(l, reason, 0, 0))
		return;
	l->deadline_ms = deadline_ms;
	l->lingering = lingering;
	LIST_INSERT_HEAD(&rv->revoking, l, revoking);
	rv->n_revoking++;
	arm_tick(rv);
}

void revoke_reclaimed(struct revoke *rv, struct lease *l)
{
	if (l->state != LEASE_REVOKING || l->reason != REASON(OWNER_DISCONNECTED))
		return;
	unlist(rv, l);
	lease_reactivate(l);
}

void revoke_release(struct revoke *rv, struct lease *l)
{
	let_go(rv, l, REASON(RELEASED));
}

void revoke_owner_gone(struct revoke *rv, struct lease *l)
{
	lease_forget_owner(l);
	let_go(rv, l, REASON(OWNER_DISCONNECTED));
}

void revoke_owner_gone_all(struct revoke *rv, struct lease_set *leases)
{
	struct lease *l;
	size_t n = 0;

	if (reserve_batch(rv, leases->n) < 0) {
		while ((l = LIST_FIRST(&leases->list)))
			revoke_owner_gone(rv, l);
		return;
	}
	while ((l = LIST_FIRST(&leases->list))) {
		lease_forget_owner(l);
		rv->batch[n++] = l;
	}
	count_batch(rv, n);
	/* Ending or revoking one lease touches no other, so the batch stays valid. */
	for (size_t i = 0; i < n; i++) {
		l = rv->batch[i];
		if (rv->counts[i] == 0)
			revoke_end(rv, l,
				   l->state == LEASE_REVOKING ? l->reason
							      : REASON(OWNER_DISCONNECTED));
		else if (l->state == LEASE_ACTIVE)
			begin(rv, l, REASON(OWNER_DISCONNECTED));
	}
}

static bool enforced(const struct lease *l)
{
	return !voluntary(l->reason) && l->device->decl.revocation == POLICY_REVOKE_ENFORCE;
}

/* Past the deadline with holders left. Returns true if leases were ended (the list changed). */
static bool overdue(struct revoke *rv, struct lease *l, int h)
{
	bool enforce = enforced(l);

	if (!enforce) {
		if (!l->lingering && rv->cb.overdue)
			rv->cb.overdue(rv->cb.ctx, l, h, false);
		l->lingering = true;
		return false;
	}
	if (rv->cb.overdue)
		rv->cb.overdue(rv->cb.ctx, l, h, true);
	/* The cycle ends every lease of the device through the registry's buffers_dying. A
	 * cycle already under way ends them too. */
	return registry_cycle(l->device, REASON(DEVICE_CYCLE)) == 0;
}

static int reserve_batch(struct revoke *rv, size_t n)
{
	if (n <= rv->cap_batch)
		return 0;
	size_t cap = rv->cap_batch ? rv->cap_batch : 64;
	while (cap < n)
		cap *= 2;
	struct lease **b = reallocarray(rv->batch, cap, sizeof(*b));
	if (b)
		rv->batch = b;
	int *f = reallocarray(rv->fds, cap, sizeof(*f));
	if (f)
		rv->fds = f;
	int *c = reallocarray(rv->counts, cap, sizeof(*c));
	if (c)
		rv->counts = c;
	struct device **d = reallocarray(rv->devs, cap, sizeof(*d));
	if (d)
		rv->devs = d;
	if (!b || !f || !c || !d)
		return -ENOMEM;
	rv->cap_batch = cap;
	return 0;
}

static int by_device(const void *a, const void *b)
{
	const struct lease *x = *(struct lease *const *)a, *y = *(struct lease *const *)b;

	if (x->device != y->device)
		return (uintptr_t)x->device < (uintptr_t)y->device ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* Count the holders of rv->batch[0..n): sorted by device, each device's leases in one call
 * (one /proc walk on the simulated backend, however many leases). */
static void count_batch(struct revoke *rv, size_t n)
{
	if (n == 0)
		return; /* the batch may not even be allocated yet */
	qsort(rv->batch, n, sizeof(*rv->batch), by_device);
	for (size_t i = 0, end; i < n; i = end) {
		for (end = i; end < n && rv->batch[end]->device == rv->batch[i]->device; end++) {
			rv->fds[end] = rv->batch[end]->fd;
			rv->devs[end] = rv->batch[end]->device;
		}
		registry_holders_many(rv->batch[i]->device, rv->fds + i, end - i, rv->counts + i);
	}
	for (size_t i = 0; i < n; i++)
		rv->counts[i] = lease_user_holders(rv->batch[i], rv->counts[i]);
}

/* Gather the leases of a list into the batch; -ENOMEM leaves the caller to go one by one. */
static ssize_t gather_revoking(struct revoke *rv)
{
	struct lease *l;
	size_t n = 0;

	if (reserve_batch(rv, rv->n_revoking) < 0)
		return -ENOMEM;
	LIST_FOREACH (l, &rv->revoking, revoking)
		rv->batch[n++] = l;
	return (ssize_t)n;
}

static void run_revoking(struct revoke *rv, int64_t now)
{
	ssize_t n = gather_revoking(rv);

	if (n < 0)
		return; /* out of memory: the next tick tries again */
	count_batch(rv, (size_t)n);
	/* A cycle ends every lease of its device: the rest of that device's run is skipped,
	 * since those leases are gone. */
	struct device *cycled = NULL;
	for (size_t i = 0; i < (size_t)n; i++) {
		struct device *dev = rv->devs[i];
		if (dev == cycled)
			continue; /* batch[i] was freed by the cycle */
		struct lease *l = rv->batch[i];
		int h = rv->counts[i];
		if (h == 0)
			revoke_end(rv, l, l->reason);
		else if (lease_deadline_passed(l, now) && overdue(rv, l, h))
			cycled = dev;
	}
}

static void run_ttl(struct revoke *rv, int64_t now)
{
	while (rv->n_ttl && rv->ttl[0]->expires_mono <= now) {
		struct lease *l = rv->ttl[0];
		heap_remove(rv, l);
		revoke_lease(rv, l, REASON(TTL));
	}
}

void revoke_run(struct revoke *rv)
{
	int64_t now = now_mono(rv);

	/* Leases that start revoking now are counted from the next tick on: their holders were
	 * told just now and need a moment to let go. */
	run_revoking(rv, now);
	run_ttl(rv, now);
	if (rv->n_revoking)
		arm_tick(rv);
	arm_ttl(rv);
}

size_t revoke_pending(const struct revoke *rv)
{
	return rv->n_revoking;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	revoke_run(arg);
}

int revoke_new(struct event_base *base, struct lease_table *leases,
	       const struct clock_source *clock, const struct revoke_callbacks *cb,
	       struct revoke **ret_rv)
{
	struct revoke *rv = calloc(1, sizeof(*rv));

	if (!rv)
		return -ENOMEM;
	rv->leases = leases;
	rv->clock = clock;
	rv->cb = *cb;
	LIST_INIT(&rv->revoking);
	rv->ev_tick = evtimer_new(base, on_timer, rv);
	rv->ev_ttl = evtimer_new(base, on_timer, rv);
	/* Reserve the timer heap's room for both now, where a failure can still be reported. */
	static const struct timeval far = { 86400, 0 };
	if (!rv->ev_tick || !rv->ev_ttl || evtimer_add(rv->ev_tick, &far) < 0 ||
	    evtimer_add(rv->ev_ttl, &far) < 0) {
		revoke_free(rv);
		return -ENOMEM;
	}
	evtimer_del(rv->ev_tick);
	evtimer_del(rv->ev_ttl);
	*ret_rv = rv;
	return 0;
}

void revoke_free(struct revoke *rv)
{
	if (!rv)
		return;
	if (rv->ev_tick)
		event_free(rv->ev_tick);
	if (rv->ev_ttl)
		event_free(rv->ev_ttl);
	for (size_t i = 0; i < rv->n_ttl; i++)
		rv->ttl[i]->ttl_slot = 0;
	free(rv->ttl);
	free(rv->batch);
	free(rv->fds);
	free(rv->counts);
	free(rv->devs);
	free(rv);
}
