#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "macro.h"
#include "p2pbuf.pb-c.h"
#include "revoke.h"
#include "worker.h"

#define REASON(x) P2PBUF__REASON__REASON_##x

/* One lease handed to the counting thread. */
struct count_item {
	const struct device_ops *ops; /* the backend that counts it (static, so always valid) */
	uint64_t id;		      /* the lease, looked up again when the count is back */
	struct device_file file;      /* its buffer, copied to files[] once sorted */
};

/* A holder count off the loop, for every lease on a backend with holders_detached() at once.
 * What holds what while it runs: the thread reads only items[].ops and files[] and writes
 * only counts[], all of them this job's own memory, handed over and back under the worker's
 * lock; it never sees a lease, a device or an fd. A lease is named by its id (never reused),
 * and its buffer by the file's identity, which cannot name another file while the lease's
 * own fd keeps the file alive. When the count is back, a lease is judged only if it is still
 * in the table and has stayed on the revoking list since the handover (count_serial):
 * ending, reactivation and device cycles (which end every lease of the device) all take a
 * lease off the list, so a closed fd is never used and a stale count never applied. */
struct count_job {
	struct worker_job job;
	struct revoke *rv;
	struct count_item *items; /* sorted by backend: one call per backend */
	struct device_file *files;
	int *counts;
	size_t n, cap;
	uint32_t serial;    /* what the leases handed over carry in count_serial */
	int64_t started_ms; /* deadlines are judged at the time the count began */
	bool running;
};

struct revoke {
	struct lease_table *leases;
	const struct clock_source *clock;
	struct revoke_callbacks cb;
	struct lease_list revoking; /* leases waiting for their holders to let go */
	size_t n_revoking;
	size_t n_uncounted;    /* of them, counted later and not yet counted */
	struct event *ev_tick; /* polls holders while any lease is revoking */
	int64_t tick_due;      /* when ev_tick fires, while it is pending */
	struct event *ev_ttl;  /* the earliest TTL */
	struct lease **ttl;    /* a binary min-heap on expires_mono */
	size_t n_ttl, cap_ttl;
	/* Scratch for counting many leases' holders at once on the loop. */
	struct lease **batch;
	uint64_t *ids; /* batch[i]'s id, to find it again after others ended */
	int *fds, *counts;
	size_t cap_batch;
	/* Counts off the loop: one at a time, on a thread of their own, at most once a tick. */
	struct worker *counter;
	struct count_job job;
	uint32_t serial;       /* of the last count handed over */
	int64_t next_count_ms; /* the earliest a new count may begin, a tick after the last */
	int64_t rest_until_ms; /* ... or, to count only leases counted before, after this */
	bool freeing;	       /* revoke_free: a count that comes back judges nothing */
};

static int reserve_batch(struct revoke *rv, size_t n);
static void count_batch(struct revoke *rv, size_t n);
static void kick(struct revoke *rv, int64_t gather_ms);

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

/* Have the tick run within ms, or sooner if it is due sooner already. */
static void arm_tick_within(struct revoke *rv, int64_t ms)
{
	int64_t due = now_mono(rv) + ms;

	if (!rv->ev_tick || (evtimer_pending(rv->ev_tick, NULL) && rv->tick_due <= due))
		return;
	rv->tick_due = due;
	arm(rv->ev_tick, ms);
}

static void arm_tick(struct revoke *rv)
{
	arm_tick_within(rv, REVOKE_TICK_MS);
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

/* Off the revoking list; a count off the loop that has it says nothing about it any more. */
static void unlist(struct revoke *rv, struct lease *l)
{
	if (l->revoking.le_prev) {
		LIST_REMOVE(l, revoking);
		l->revoking.le_prev = NULL;
		rv->n_revoking--;
		if (l->holders_seen < 0)
			rv->n_uncounted--;
	}
	l->count_serial = 0;
}

/* End l and return its fd, which the caller closes. */
static int end_keeping_fd(struct revoke *rv, struct lease *l, int reason)
{
	lease_end(l, reason);
	unlist(rv, l);
	heap_remove(rv, l);
	if (rv->cb.ended)
		rv->cb.ended(rv->cb.ctx, l);
	return lease_delete_keep_fd(rv->leases, l);
}

void revoke_end(struct revoke *rv, struct lease *l, int reason)
{
	int fd = end_keeping_fd(rv, l, reason);

	closep(&fd);
}

void revoke_end_all(struct revoke *rv, struct lease_set *leases, int reason)
{
	/* Every holder hears first; the buffers' closes (a memfd's last, which tears its inode
	 * down; a dma-buf's) follow the whole fan-out, so that the last of a thousand
	 * LeaseRevoked does not wait for a thousand closes. Still before anything else runs:
	 * a device closed or reset next finds none of its buffers open here. */
	size_t room = leases->n, n = 0;
	_cleanup_free_ int *fds = room ? malloc(room * sizeof(*fds)) : NULL;
	struct lease *l;

	while ((l = LIST_FIRST(&leases->list))) {
		int fd = end_keeping_fd(rv, l, reason);
		if (fds && n < room && fd >= 0)
			fds[n++] = fd;
		else
			closep(&fd);
	}
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
}

/* Tell l's holders (once) that it is revoking. */
static void announce(struct revoke *rv, struct lease *l)
{
	if (l->announced)
		return;
	l->announced = true;
	if (rv->cb.revoking)
		rv->cb.revoking(rv->cb.ctx, l);
}

static bool counted_later(const struct lease *l);
static bool probed(const struct lease *l);

static void list_revoking(struct revoke *rv, struct lease *l)
{
	/* -1 marks what a count off the loop has yet to see; a cheap count is taken at once. */
	l->holders_seen = counted_later(l) ? -1 : probed(l) ? 1 : 0;
	if (l->holders_seen < 0)
		rv->n_uncounted++;
	l->count_serial = 0;
	l->announced = false;
	LIST_INSERT_HEAD(&rv->revoking, l, revoking);
	rv->n_revoking++;
}

/* active -> revoking; told at once, or (tell false) only once a count finds holders left. */
static void begin(struct revoke *rv, struct lease *l, int reason, bool tell)
{
	lease_begin_revoke(l, reason, now_mono(rv), (int64_t)l->device->decl.revoke_deadline_ms);
	list_revoking(rv, l);
	if (tell)
		announce(rv, l);
	else if (rv->cb.revoking_untold)
		rv->cb.revoking_untold(rv->cb.ctx, l);
	arm_tick(rv);
}

/* Whether l's holders are known from the backend's quick check (device_ops.unheld) alone:
 * its client was given a file of its own, which exists in a process, a mapping or a socket
 * queue exactly as long as somebody holds the buffer through it. A costly count would add
 * nothing (it cannot even see the socket queues), so none is made: each tick asks the
 * check again, and a holder that keeps it is one holder. */
static bool probed(const struct lease *l)
{
	const struct device_ops *ops = registry_detached_backend(l->device);

	return l->own_file && ops && ops->unheld;
}

/* Whether l's holders are counted off the loop (a costly count, the simulated backend's,
 * for a lease whose client has no file of its own): then nothing is decided about l until
 * that count is back. */
static bool counted_later(const struct lease *l)
{
	return registry_detached_backend(l->device) != NULL && !probed(l);
}

/* The holders of a lease not counted later, counted now on the loop: for a probed lease the
 * quick check (0, or 1 for "at least one"), else the backend's count less the daemon's
 * parked copy. */
static int holders_now(const struct lease *l)
{
	if (probed(l))
		return registry_detached_backend(l->device)->unheld(l->fd) ? 0 : 1;
	return lease_user_holders(l, registry_holders(l->device, l->fd));
}

void revoke_lease(struct revoke *rv, struct lease *l, int reason)
{
	/* A lingering release says only that its holder is done with it; an admin, the policy
	 * or the TTL saying the memory must become unreachable revokes it afresh, enforced. */
	if (l->state == LEASE_REVOKING && lease_reason_chosen(l->reason) &&
	    !lease_reason_chosen(reason)) {
		unlist(rv, l);
		lease_reactivate(l);
	}
	if (l->state != LEASE_ACTIVE)
		return; /* already on its way out: the first reason stands */
	if (counted_later(l)) {
		/* The holders hear now; the count decides when it ends. */
		begin(rv, l, reason, true);
		kick(rv, REVOKE_GATHER_MS);
	} else if (holders_now(l) == 0) {
		revoke_end(rv, l, reason);
	} else {
		begin(rv, l, reason, true);
	}
}

static void let_go(struct revoke *rv, struct lease *l, int reason)
{
	if (counted_later(l)) {
		/* Revoking at once (quotas hold, the listing says so); told only if the next
		 * count finds a copy held elsewhere, as a release on the loop would be. */
		if (l->state == LEASE_ACTIVE)
			begin(rv, l, reason, false);
		kick(rv, REVOKE_GATHER_MS);
	} else if (holders_now(l) == 0) {
		revoke_end(rv, l, l->state == LEASE_REVOKING ? l->reason : reason);
	} else if (l->state == LEASE_ACTIVE) {
		begin(rv, l, reason, true);
	}
}

void revoke_resume(struct revoke *rv, struct lease *l, int reason, int64_t deadline_ms,
		   bool lingering)
{
	if (!lease_begin_revoke(l, reason, 0, 0))
		return;
	l->deadline_ms = deadline_ms;
	l->lingering = lingering;
	list_revoking(rv, l);
	l->announced = true; /* by the previous instance */
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
	bool batch = reserve_batch(rv, leases->n) == 0;
	struct lease *l;
	size_t n = 0;

	while ((l = LIST_FIRST(&leases->list))) {
		if (!batch || counted_later(l)) {
			revoke_owner_gone(rv, l);
			continue;
		}
		lease_forget_owner(l);
		rv->batch[n++] = l;
	}
	kick(rv, 0); /* they came all at once: nothing more to gather */
	count_batch(rv, n);
	/* Ending or revoking one lease touches no other, so the batch stays valid. */
	for (size_t i = 0; i < n; i++) {
		l = rv->batch[i];
		if (rv->counts[i] == 0)
			revoke_end(rv, l,
				   l->state == LEASE_REVOKING ? l->reason
							      : REASON(OWNER_DISCONNECTED));
		else if (l->state == LEASE_ACTIVE)
			begin(rv, l, REASON(OWNER_DISCONNECTED), true);
	}
}

static bool enforced(const struct lease *l)
{
	return !lease_reason_chosen(l->reason) &&
	       l->device->decl.revocation == POLICY_REVOKE_ENFORCE;
}

/* Past the deadline with holders left: reported, and, where enforced, the device cycled. */
static void overdue(struct revoke *rv, struct lease *l, int h)
{
	if (!enforced(l)) {
		if (!l->lingering && rv->cb.overdue)
			rv->cb.overdue(rv->cb.ctx, l, h, false);
		l->lingering = true;
		return;
	}
	if (rv->cb.overdue)
		rv->cb.overdue(rv->cb.ctx, l, h, true);
	/* The cycle ends every lease of the device through the registry's buffers_dying. A
	 * cycle already under way ends them too. */
	registry_cycle(l->device, REASON(DEVICE_CYCLE));
}

/* Grow the array *p to cap elements of size bytes; false (and *p kept) without memory. */
static bool grow(void **p, size_t cap, size_t size)
{
	void *q = reallocarray(*p, cap, size);

	if (q)
		*p = q;
	return q != NULL;
}

#define GROW(a, cap) grow((void **)&(a), (cap), sizeof(*(a)))

/* The capacity, doubled from 64 (or from the present one), that holds n. */
static size_t capacity_for(size_t cap, size_t n)
{
	for (cap = cap ? cap : 64; cap < n; cap *= 2)
		;
	return cap;
}

static int reserve_batch(struct revoke *rv, size_t n)
{
	if (n <= rv->cap_batch)
		return 0;
	size_t cap = capacity_for(rv->cap_batch, n);
	bool ok = GROW(rv->batch, cap);
	ok = GROW(rv->fds, cap) && ok;
	ok = GROW(rv->counts, cap) && ok;
	ok = GROW(rv->ids, cap) && ok;
	if (!ok)
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

/* Count, on the loop, the holders of rv->batch[0..n) (leases not counted later): sorted by
 * device, a cheap backend's leases in one call per device, probed ones one check each. */
static void count_batch(struct revoke *rv, size_t n)
{
	if (n == 0)
		return; /* the batch may not even be allocated yet */
	qsort(rv->batch, n, sizeof(*rv->batch), by_device);
	for (size_t i = 0, end; i < n; i = end) {
		for (end = i; end < n && rv->batch[end]->device == rv->batch[i]->device; end++) {
			rv->fds[end] = rv->batch[end]->fd;
			rv->ids[end] = rv->batch[end]->id;
		}
		/* A costly backend's leases are here only when probed: each is checked apart. */
		if (registry_detached_backend(rv->batch[i]->device)) {
			for (size_t k = i; k < end; k++)
				rv->counts[k] = holders_now(rv->batch[k]);
			continue;
		}
		registry_holders_many(rv->batch[i]->device, rv->fds + i, end - i, rv->counts + i);
		for (size_t k = i; k < end; k++)
			rv->counts[k] = lease_user_holders(rv->batch[k], rv->counts[k]);
	}
}

/* What a count of l's holders (h, its users' references) at time at means: nobody holds it,
 * so it ends; or somebody does, so they are told (if they were not yet) and, past the
 * deadline, it is overdue. l may end, and with it, through a device cycle, every other
 * lease of its device. */
static void judge(struct revoke *rv, struct lease *l, int h, int64_t at)
{
	if (l->holders_seen < 0)
		rv->n_uncounted--;
	l->holders_seen = h;
	if (h == 0) {
		revoke_end(rv, l, l->reason);
		return;
	}
	announce(rv, l);
	if (lease_deadline_passed(l, at))
		overdue(rv, l, h);
}

/* Count, on the loop, the revoking leases whose backend counts cheaply, and judge them. */
static void run_revoking(struct revoke *rv, int64_t now)
{
	struct lease *l;
	size_t n = 0;

	if (reserve_batch(rv, rv->n_revoking) < 0)
		return; /* out of memory: the next tick tries again */
	LIST_FOREACH (l, &rv->revoking, revoking)
		if (!counted_later(l))
			rv->batch[n++] = l;
	count_batch(rv, n);
	/* Judging one lease may end others (a cycle ends its device's): found again by id. */
	for (size_t i = 0; i < n; i++)
		if ((l = lease_find(rv->leases, rv->ids[i])))
			judge(rv, l, rv->counts[i], now);
}

/* ---- counts off the loop ---- */

static int reserve_job(struct count_job *j, size_t n)
{
	if (n <= j->cap)
		return 0;
	size_t cap = capacity_for(j->cap, n);
	bool ok = GROW(j->items, cap);
	ok = GROW(j->files, cap) && ok;
	ok = GROW(j->counts, cap) && ok;
	if (!ok)
		return -ENOMEM;
	j->cap = cap;
	return 0;
}

/* The counting thread: one call per backend. A count that fails is "cannot tell", taken as
 * held, as registry_holders() does. */
static int count_run(void *arg)
{
	struct count_job *j = arg;

	for (size_t i = 0, end; i < j->n; i = end) {
		for (end = i + 1; end < j->n && j->items[end].ops == j->items[i].ops; end++)
			;
		if (j->items[i].ops->holders_detached(j->files + i, end - i, j->counts + i) < 0)
			for (size_t k = i; k < end; k++)
				j->counts[k] = 1;
	}
	return 0;
}

/* When the next count may begin: at most once a tick; and where it would only count again
 * leases counted before (lingering ones, whose copies may be kept for hours), never more
 * than half the time, so that a slow walk rests as long as it took. A lease let go or
 * revoked since is counted at the tick: someone may be waiting for it to end. */
static int64_t next_count(const struct revoke *rv)
{
	if (rv->n_uncounted == 0 && rv->rest_until_ms > rv->next_count_ms)
		return rv->rest_until_ms;
	return rv->next_count_ms;
}

static int by_backend(const void *a, const void *b)
{
	const struct count_item *x = a, *y = b;

	if (x->ops != y->ops)
		return (uintptr_t)x->ops < (uintptr_t)y->ops ? -1 : 1;
	return 0;
}

/* Hand every revoking lease counted later to the thread in one job, unless a count is
 * running or the last one began less than a tick ago. */
static void start_count(struct revoke *rv, int64_t now)
{
	struct count_job *j = &rv->job;
	struct lease *l;
	size_t n = 0;

	if (j->running || now < next_count(rv) || reserve_job(j, rv->n_revoking) < 0)
		return;
	if (++rv->serial == 0)
		rv->serial = 1;
	LIST_FOREACH (l, &rv->revoking, revoking) {
		const struct device_ops *ops = registry_detached_backend(l->device);
		struct stat st;
		if (!counted_later(l))
			continue;
		l->count_serial = rv->serial;
		/* Inode 0 names no file: a buffer the daemon cannot stat counts as held. */
		j->items[n++] =
		    (struct count_item){ ops, l->id,
					 fstat(l->fd, &st) == 0
					     ? (struct device_file){ st.st_dev, st.st_ino }
					     : (struct device_file){ 0, 0 } };
	}
	if (n == 0)
		return;
	qsort(j->items, n, sizeof(*j->items), by_backend);
	for (size_t i = 0; i < n; i++)
		j->files[i] = j->items[i].file;
	j->n = n;
	j->serial = rv->serial;
	j->started_ms = now;
	j->running = true;
	worker_submit(rv->counter, &j->job);
}

/* Back on the loop: judge the leases the count still speaks for. */
static void count_done(void *arg, int result)
{
	struct count_job *j = arg;
	struct revoke *rv = j->rv;
	int64_t now = now_mono(rv);

	j->running = false;
	if (rv->freeing)
		return;
	rv->next_count_ms = j->started_ms + REVOKE_TICK_MS;
	rv->rest_until_ms = now + (now - j->started_ms);
	for (size_t i = 0; i < j->n; i++) {
		struct lease *l = lease_find(rv->leases, j->items[i].id);
		if (!l || l->count_serial != j->serial)
			continue;
		l->count_serial = 0;
		int c = j->files[i].ino ? j->counts[i] : 1;
		judge(rv, l, lease_user_holders(l, c), j->started_ms);
	}
	if (rv->n_revoking)
		kick(rv, REVOKE_GATHER_MS);
	if (rv->cb.counted)
		rv->cb.counted(rv->cb.ctx);
}

/* A lease to count later is waiting: have the tick run when the next count may begin, but
 * no sooner than gather_ms from now, so that a burst of releases (a client cycling through
 * its quota, revokes one by one) is counted together. */
static void kick(struct revoke *rv, int64_t gather_ms)
{
	if (rv->job.running || !rv->n_uncounted)
		return; /* the running count's end comes back here; or nothing is new */
	int64_t wait = next_count(rv) - now_mono(rv);
	arm_tick_within(rv, wait > gather_ms ? wait : gather_ms);
}

bool revoke_counting(const struct revoke *rv)
{
	return rv->job.running;
}

bool revoke_settling(const struct revoke *rv)
{
	return rv->n_uncounted > 0;
}

int revoke_holders(const struct lease *l)
{
	if (!registry_holders_costly(l->device))
		return lease_user_holders(l, registry_holders(l->device, l->fd));
	if (l->state != LEASE_REVOKING)
		return -1;
	if (registry_detached_backend(l->device))
		return l->holders_seen;
	return lease_user_holders(l, registry_holders(l->device, l->fd));
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
	start_count(rv, now);
	run_ttl(rv, now);
	if (rv->n_revoking)
		arm_tick(rv);
	if (rv->n_revoking && !rv->job.running)
		kick(rv,
		     0); /* a count declined for now (paced): the tick comes when it may begin */
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
	rv->job = (struct count_job){ .job = { count_run, count_done, &rv->job }, .rv = rv };
	int r = worker_new(base, &rv->counter);
	if (r < 0) {
		free(rv);
		return r;
	}
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
	/* A count still running is waited for; it judges nothing now. */
	rv->freeing = true;
	worker_free(rv->counter);
	free(rv->job.items);
	free(rv->job.files);
	free(rv->job.counts);
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
	free(rv->ids);
	free(rv);
}
