/* Unit tests of the revocation engine and the device registry, on fake backend ops and a
 * clock the test sets: every transition, deadlines, enforcement by a device cycle, the
 * lingering rules, TTLs, removal and error events, reset waiters, a reload's device changes
 * (plan, commit, the reaper); and the counts off the loop, on a costly fake backend whose
 * count the test can hold at a gate, and on the real simulated backend. Nothing sleeps: a
 * device cycle and a count run on their real threads and the test turns the event loop until
 * they are done. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lease.h"
#include "macro.h"
#include "p2pbuf.pb-c.h"
#include "peer.h"
#include "policy.h"
#include "hotplug.h"
#include "registry.h"
#include "revoke.h"

#define REASON(x) P2PBUF__REASON__REASON_##x
#define STATE(x) P2PBUF__DEVICE_STATE_KIND__DEVICE_##x
#define MAX_FDS 4096

/* ---- the fake backend: holders are what the test says, events are eventfds ---- */

struct device_handle {
	int req_fd, err_fd;
	char name[sizeof(((struct policy_device *)0)->name)]; /* its declaration's */
};

static int holders_of[MAX_FDS]; /* by the daemon's fd number */
static int fail_open;		/* opens that fail from now on */
static int n_opens, n_closes, n_holder_calls, n_batch_calls;
static int closes_before_open; /* n_closes when the last open began (both on the worker) */

/* A close the kernel holds up: the close of the device called hold_name waits on release_fd
 * (a blocking eventfd the test writes), after saying so through hold_entered. */
static const char *hold_name;
static int release_fd = -1;
static pthread_mutex_t hold_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cond = PTHREAD_COND_INITIALIZER;
static bool hold_entered; /* under hold_lock */

static void hold_if_asked(const struct device_handle *h)
{
	uint64_t n;

	if (!hold_name || strcmp(h->name, hold_name) != 0)
		return;
	pthread_mutex_lock(&hold_lock);
	hold_entered = true;
	pthread_cond_broadcast(&hold_cond);
	pthread_mutex_unlock(&hold_lock);
	ck_assert_int_eq(read(release_fd, &n, sizeof(n)), sizeof(n));
}

/* Wait until the held close has begun on its worker thread. */
static void wait_held(void)
{
	pthread_mutex_lock(&hold_lock);
	while (!hold_entered)
		pthread_cond_wait(&hold_cond, &hold_lock);
	pthread_mutex_unlock(&hold_lock);
}

static int fake_open(const struct policy_device *decl, struct device_handle **ret_handle,
		     struct device_info *ret_info, char *msg, size_t msglen)
{
	/* Devices open and close on worker threads of their own, at the same time. */
	__atomic_add_fetch(&n_opens, 1, __ATOMIC_SEQ_CST);
	closes_before_open = __atomic_load_n(&n_closes, __ATOMIC_SEQ_CST);
	if (fail_open > 0) {
		fail_open--;
		snprintf(msg, msglen, "the fake device refuses to open");
		return -EIO;
	}
	struct device_handle *h = calloc(1, sizeof(*h));
	ck_assert_ptr_nonnull(h);
	h->req_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	h->err_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	snprintf(h->name, sizeof(h->name), "%s", decl->name);
	memset(ret_info, 0, sizeof(*ret_info));
	ret_info->bars[0].size = 1 << 20;
	*ret_handle = h;
	return 0;
}

static void fake_close(struct device_handle *h)
{
	if (!h)
		return;
	hold_if_asked(h);
	__atomic_add_fetch(&n_closes, 1, __ATOMIC_SEQ_CST);
	close(h->req_fd);
	close(h->err_fd);
	free(h);
}

static int fake_export(struct device_handle *h, unsigned bar, const struct range *ranges, size_t n,
		       const char *name, int *ret_fd)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	ck_assert_int_lt(fd, MAX_FDS);
	holders_of[fd] = 0;
	*ret_fd = fd;
	return 0;
}

static int fake_holders(struct device_handle *h, int fd)
{
	n_holder_calls++;
	return holders_of[fd];
}

static int fake_holders_many(struct device_handle *h, const int *fds, size_t n, int *counts)
{
	n_batch_calls++;
	for (size_t i = 0; i < n; i++)
		counts[i] = holders_of[fds[i]];
	return 0;
}

static void fake_event_fds(struct device_handle *h, int *ret_req_fd, int *ret_err_fd)
{
	*ret_req_fd = h->req_fd;
	*ret_err_fd = h->err_fd;
}

static const struct device_ops fake_ops = {
	.name = "fake",
	.open = fake_open,
	.close = fake_close,
	.export_ranges = fake_export,
	.holders = fake_holders,
	.holders_many = fake_holders_many,
	.event_fds = fake_event_fds,
};

/* ---- the costly fake backend ("lazy*" devices): counted off the loop, by file ---- */

static ino_t ino_of[MAX_FDS]; /* the file behind each of its exported fds */
static pthread_mutex_t lazy_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t lazy_cond = PTHREAD_COND_INITIALIZER;
/* Under lazy_lock: */
static bool gate_closed; /* a count waits here, after it has taken its figures */
static bool in_count;	 /* a count is at the gate */
static int n_lazy_counts, lazy_fail;
static size_t lazy_last_n;
static pthread_t lazy_thread;

static int lazy_export(struct device_handle *h, unsigned bar, const struct range *ranges, size_t n,
		       const char *name, int *ret_fd)
{
	int fd = memfd_create("lazy", MFD_CLOEXEC);
	struct stat st;

	if (fd < 0)
		return -errno;
	ck_assert_int_lt(fd, MAX_FDS);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ino_of[fd] = st.st_ino;
	holders_of[fd] = 0;
	*ret_fd = fd;
	return 0;
}

/* The count: by file, never by fd, like the simulated backend's; figures are taken first,
 * then it waits at the gate while the test changes things under it. */
static int lazy_count(const struct device_file *files, size_t n, int *counts)
{
	pthread_mutex_lock(&lazy_lock);
	n_lazy_counts++;
	lazy_last_n = n;
	lazy_thread = pthread_self();
	for (size_t i = 0; i < n; i++) {
		counts[i] = -100; /* no fd of ours has this file: a wrong count shows */
		for (int fd = 0; fd < MAX_FDS; fd++)
			if (ino_of[fd] == files[i].ino && files[i].ino)
				counts[i] = holders_of[fd];
	}
	in_count = true;
	pthread_cond_broadcast(&lazy_cond);
	while (gate_closed)
		pthread_cond_wait(&lazy_cond, &lazy_lock);
	in_count = false;
	int r = lazy_fail ? -EIO : 0;
	pthread_mutex_unlock(&lazy_lock);
	return r;
}

static int lazy_holders(struct device_handle *h, int fd)
{
	ck_abort_msg("a costly count was taken on the loop");
	return -EIO;
}

static const struct device_ops lazy_ops = {
	.name = "lazy",
	.open = fake_open,
	.close = fake_close,
	.export_ranges = lazy_export,
	.holders = lazy_holders,
	.holders_detached = lazy_count,
	.holders_costly = true,
	.event_fds = fake_event_fds,
};

static void set_gate(bool closed)
{
	pthread_mutex_lock(&lazy_lock);
	gate_closed = closed;
	pthread_cond_broadcast(&lazy_cond);
	pthread_mutex_unlock(&lazy_lock);
}

/* Wait until a count has taken its figures and stands at the (closed) gate. */
static void wait_at_gate(void)
{
	pthread_mutex_lock(&lazy_lock);
	while (!in_count)
		pthread_cond_wait(&lazy_cond, &lazy_lock);
	pthread_mutex_unlock(&lazy_lock);
}

static int lazy_counts(void)
{
	pthread_mutex_lock(&lazy_lock);
	int n = n_lazy_counts;
	pthread_mutex_unlock(&lazy_lock);
	return n;
}

/* ---- the real simulated backend ("real" device), its counts counted ---- */

static struct device_ops real_ops;
static int n_real_counts;
static size_t real_last_n;

static int real_count(const struct device_file *files, size_t n, int *counts)
{
	pthread_mutex_lock(&lazy_lock);
	n_real_counts++;
	real_last_n = n;
	pthread_mutex_unlock(&lazy_lock);
	return sim_ops.holders_detached(files, n, counts);
}

static const struct device_ops *fake_backend(const struct policy_device *decl)
{
	if (strncmp(decl->name, "lazy", 4) == 0)
		return &lazy_ops;
	if (strcmp(decl->name, "real") == 0)
		return &real_ops;
	return &fake_ops;
}

/* ---- the clock ---- */

static int64_t mono_now = 1000000, real_now = 1700000000000;

static int64_t fake_realtime(void *ctx)
{
	return real_now;
}

static int64_t fake_monotonic(void *ctx)
{
	return mono_now;
}

static const struct clock_source fake_clock = { fake_realtime, fake_monotonic, NULL };

static void advance(int64_t ms)
{
	mono_now += ms;
	real_now += ms;
}

/* ---- what the engine and the registry report ---- */

enum { EV_REVOKING = 1, EV_UNTOLD, EV_ENDED, EV_OVERDUE, EV_STATE, EV_ANSWER };

struct report {
	int kind;
	uint64_t lease;
	int reason; /* lease reason, device state, or answer error */
	int holders;
	bool enforced;
};

static struct report reports[8192];
static int n_reports;

static void add_report(struct report r)
{
	ck_assert_int_lt(n_reports, (int)ARRAY_SIZE(reports));
	reports[n_reports++] = r;
}

static int count_reports(int kind, uint64_t lease, int reason)
{
	int n = 0;

	for (int i = 0; i < n_reports; i++)
		n += reports[i].kind == kind && (!lease || reports[i].lease == lease) &&
		     (reason < 0 || reports[i].reason == reason);
	return n;
}

/* The last report of kind for lease. */
static const struct report *last(int kind, uint64_t lease)
{
	for (int i = n_reports - 1; i >= 0; i--)
		if (reports[i].kind == kind && reports[i].lease == lease)
			return &reports[i];
	ck_abort_msg("no report %d for lease %llu", kind, (unsigned long long)lease);
	return NULL;
}

static struct event_base *base;
static struct worker *worker;
static struct policy *policy;
static struct registry *reg;
static struct lease_table table;
static struct revoke *rv;
static struct peer *alice;
static struct lease_set owner;

static void on_revoking(void *ctx, const struct lease *l)
{
	add_report((struct report){ EV_REVOKING, l->id, l->reason, 0, false });
}

static void on_untold(void *ctx, const struct lease *l)
{
	ck_assert_int_eq(l->state, LEASE_REVOKING);
	add_report((struct report){ EV_UNTOLD, l->id, l->reason, 0, false });
}

/* Buffers that must still be open (their fds and inodes) whenever a lease ends: a fan-out's
 * closes come after all of it. */
static int fanout_fd[8];
static ino_t fanout_ino[8];
static size_t n_fanout;

static bool same_file_open(int fd, ino_t ino)
{
	struct stat st;

	return fstat(fd, &st) == 0 && st.st_ino == ino;
}

static void on_ended(void *ctx, const struct lease *l)
{
	ck_assert_int_eq(l->state, LEASE_ENDED);
	for (size_t i = 0; i < n_fanout; i++)
		ck_assert_msg(same_file_open(fanout_fd[i], fanout_ino[i]),
			      "a buffer was closed before lease %llu ended",
			      (unsigned long long)l->id);
	add_report((struct report){ EV_ENDED, l->id, l->reason, 0, false });
	registry_lease_ended(l->device); /* as the daemon does */
}

static void on_overdue(void *ctx, const struct lease *l, int holders, bool enforced)
{
	add_report((struct report){ EV_OVERDUE, l->id, l->reason, holders, enforced });
}

static int n_counted; /* counts judged, as the engine reports them */

static void on_counted(void *ctx)
{
	n_counted++;
}

static void on_state(void *ctx, const struct device *dev)
{
	add_report((struct report){ EV_STATE, 0, dev->state, 0, false });
}

static void on_dying(void *ctx, struct device *dev, int reason)
{
	revoke_end_all(rv, &dev->leases, reason);
}

static void on_answer(void *ctx, void *token, uint64_t request_id, int error, const char *msg)
{
	add_report((struct report){ EV_ANSWER, request_id, error, 0, false });
}

static const char policy_text[] = "device d0 sim bar 0 1M revoke-deadline 1s\n"
				  "device quiet sim bar 0 1M revoke-deadline 1s "
				  "revocation notify-only\n"
				  "device cyc sim bar 0 1M on-error cycle\n"
				  "device lazy sim bar 0 1M revoke-deadline 1s\n"
				  "device lazy2 sim bar 0 1M revoke-deadline 1s\n"
				  "device real sim bar 0 1M revoke-deadline 1s\n"
				  "allow user 1000 device d0\n";

static int resolve_number(const char *name, uint32_t *ret)
{
	*ret = (uint32_t)strtoul(name, NULL, 10);
	return 0;
}

static const struct policy_resolver numbers = { resolve_number, resolve_number };

/* The policies of the reloads a test made: the devices' declarations point into them. */
static struct policy *reloaded[4];
static size_t n_reloaded;

static void setup(void)
{
	const struct registry_callbacks gcb = { .state_changed = on_state,
						.buffers_dying = on_dying,
						.answer = on_answer };
	const struct revoke_callbacks rcb = { .revoking = on_revoking,
					      .revoking_untold = on_untold,
					      .ended = on_ended,
					      .overdue = on_overdue,
					      .counted = on_counted };
	char *err = NULL;

	n_reports = n_opens = n_closes = n_holder_calls = n_batch_calls = fail_open = 0;
	n_lazy_counts = n_real_counts = lazy_fail = n_counted = 0;
	gate_closed = in_count = false;
	real_ops = sim_ops;
	real_ops.holders_detached = real_count;
	hold_name = NULL;
	hold_entered = false;
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
	ck_assert_int_eq(
	    policy_parse("policy", policy_text, strlen(policy_text), &numbers, &policy, &err), 0);
	/* As the daemon does: a thread per declared device. */
	ck_assert_int_eq(worker_new_pool(base, (unsigned)policy->n_devices, &worker), 0);
	ck_assert_int_eq(registry_new(base, worker, policy, fake_backend, &gcb, &reg), 0);
	ck_assert_int_eq(lease_table_init(&table, 4096, policy->n_rules), 0);
	ck_assert_int_eq(revoke_new(base, &table, &fake_clock, &rcb, &rv), 0);
	alice = peer_new(1000, 1000, 42, NULL, 0);
	owner = (struct lease_set){ LIST_HEAD_INITIALIZER(owner.list), 0 };
	n_reports = 0; /* the devices' first "ready" */
}

static void teardown(void)
{
	/* Every lease first, as the daemon does at shutdown, then the devices. */
	struct lease *l;
	set_gate(false); /* a count still held there must be able to finish */
	while ((l = TAILQ_FIRST(&table.all)))
		revoke_end(rv, l, REASON(SHUTDOWN));
	event_base_loop(base, EVLOOP_NONBLOCK);
	worker_free(worker);
	revoke_free(rv);
	lease_table_fini(&table);
	registry_free(reg);
	policy_free(policy);
	for (size_t i = 0; i < n_reloaded; i++)
		policy_free(reloaded[i]);
	n_reloaded = 0;
	peer_unref(alice);
	event_base_free(base);
}

static struct device *dev(const char *name)
{
	struct device *d = registry_find(reg, name);

	ck_assert_ptr_nonnull(d);
	return d;
}

/* A lease on device name held by `holders` other references, owned by `owner`, with a TTL
 * of ttl_ms (0: none). */
static struct lease *grant(const char *name, int holders, int64_t ttl_ms)
{
	struct device *d = dev(name);
	struct lease *l;

	ck_assert_int_eq(lease_new(&table, 1, &l), 0);
	ck_assert_int_eq(d->ops->export_ranges(d->handle, 0, NULL, 0, "x", &l->fd), 0);
	holders_of[l->fd] = holders;
	l->peer = peer_ref(alice);
	l->device = d;
	l->generation = d->generation;
	l->expires_mono = ttl_ms ? mono_now + ttl_ms : 0;
	lease_attach(&table, l, &owner, &d->leases, 0);
	ck_assert_int_eq(revoke_track(rv, l), 0);
	return l;
}

/* Turn the loop until the device's cycle or close on the worker is done. */
static void wait_worker(struct device *d)
{
	while (d->cycling)
		ck_assert_int_ge(event_base_loop(base, EVLOOP_ONCE), 0);
}

static bool alive(uint64_t id)
{
	return lease_find(&table, id) != NULL;
}

/* Turn the loop until the count running off the loop, if any, is back and judged. */
static void wait_count(void)
{
	while (revoke_counting(rv))
		ck_assert_int_ge(event_base_loop(base, EVLOOP_ONCE), 0);
}

/* What the engine's tick does, and the count it starts, through to its judgement. */
static void tick(void)
{
	revoke_run(rv);
	wait_count();
}

/* ---- release and owner-gone: voluntary, never enforced ---- */

START_TEST(release_unheld_ends_at_once)
{
	struct lease *l = grant("d0", 0, 0);
	uint64_t id = l->id;

	ck_assert_uint_eq(table.rule_leases[0], 1);
	revoke_release(rv, l);
	ck_assert(!alive(id));
	ck_assert_int_eq(count_reports(EV_ENDED, id, REASON(RELEASED)), 1);
	ck_assert_int_eq(count_reports(EV_REVOKING, id, -1), 0);
	ck_assert_uint_eq(dev("d0")->leases.n, 0);
	ck_assert_uint_eq(owner.n, 0);
	ck_assert_uint_eq(table.rule_leases[0], 0);
}
END_TEST

START_TEST(release_held_lingers_and_counts)
{
	struct lease *l = grant("d0", 1, 0);
	uint64_t id = l->id;

	revoke_release(rv, l);
	ck_assert_int_eq(l->state, LEASE_REVOKING);
	ck_assert_int_eq(count_reports(EV_REVOKING, id, REASON(RELEASED)), 1);
	ck_assert_int_eq(l->deadline_ms, mono_now + 1000);
	revoke_run(rv);
	ck_assert(!l->lingering);
	advance(1000);
	revoke_run(rv);
	revoke_run(rv);
	ck_assert(l->lingering);
	/* Reported once, not enforced, the device untouched, the quota still held. */
	ck_assert_int_eq(count_reports(EV_OVERDUE, id, -1), 1);
	ck_assert(!last(EV_OVERDUE, id)->enforced);
	ck_assert_int_eq(last(EV_OVERDUE, id)->holders, 1);
	ck_assert(!dev("d0")->cycling);
	ck_assert_uint_eq(dev("d0")->generation, 0);
	ck_assert_uint_eq(table.rule_leases[0], 1);
	ck_assert_uint_eq(revoke_pending(rv), 1);
	holders_of[l->fd] = 0;
	revoke_run(rv);
	ck_assert(!alive(id));
	ck_assert_int_eq(count_reports(EV_ENDED, id, REASON(RELEASED)), 1);
	ck_assert_uint_eq(table.rule_leases[0], 0);
	ck_assert_uint_eq(revoke_pending(rv), 0);
}
END_TEST

START_TEST(owner_gone_with_a_copy_lingers_like_a_release)
{
	struct lease *held = grant("d0", 1, 0);
	struct lease *free_ = grant("d0", 0, 0);
	uint64_t h = held->id, f = free_->id;

	revoke_owner_gone_all(rv, &owner);
	ck_assert_uint_eq(owner.n, 0);
	ck_assert(!alive(f));
	ck_assert_int_eq(count_reports(EV_ENDED, f, REASON(OWNER_DISCONNECTED)), 1);
	ck_assert_ptr_null(held->owner);
	ck_assert_int_eq(held->reason, REASON(OWNER_DISCONNECTED));
	advance(5000);
	revoke_run(rv);
	ck_assert(held->lingering);
	ck_assert_uint_eq(dev("d0")->generation, 0);
	ck_assert(!dev("d0")->cycling);
	ck_assert(alive(h));
}
END_TEST

/* Closing a connection with many leases counts their holders in one call per device. */
START_TEST(owner_gone_counts_in_one_batch)
{
	for (int i = 0; i < 2000; i++)
		grant(i % 2 ? "d0" : "quiet", i % 3 == 0, 0);
	n_batch_calls = n_holder_calls = 0;
	revoke_owner_gone_all(rv, &owner);
	ck_assert_int_eq(n_batch_calls, 2);
	ck_assert_int_eq(n_holder_calls, 0);
	ck_assert_uint_eq(table.count, 667);
	ck_assert_uint_eq(revoke_pending(rv), 667);
	n_batch_calls = 0;
	revoke_run(rv);
	ck_assert_int_eq(n_batch_calls, 2);
}
END_TEST

/* ---- enforced revocation ---- */

START_TEST(admin_revoke_unheld_ends_at_once)
{
	struct lease *l = grant("d0", 0, 0);
	uint64_t id = l->id;

	revoke_lease(rv, l, REASON(ADMIN));
	ck_assert(!alive(id));
	ck_assert_int_eq(count_reports(EV_ENDED, id, REASON(ADMIN)), 1);
}
END_TEST

START_TEST(admin_revoke_let_go_in_time)
{
	struct lease *l = grant("d0", 1, 0);
	uint64_t id = l->id;

	revoke_lease(rv, l, REASON(ADMIN));
	ck_assert_int_eq(count_reports(EV_REVOKING, id, REASON(ADMIN)), 1);
	advance(999);
	revoke_run(rv);
	ck_assert(alive(id));
	holders_of[l->fd] = 0;
	revoke_run(rv);
	ck_assert(!alive(id));
	ck_assert_int_eq(count_reports(EV_ENDED, id, REASON(ADMIN)), 1);
	ck_assert_int_eq(count_reports(EV_OVERDUE, 0, -1), 0);
	ck_assert_uint_eq(dev("d0")->generation, 0);
}
END_TEST

START_TEST(admin_revoke_kept_cycles_the_device)
{
	struct lease *l = grant("d0", 1, 0);
	struct lease *bystander = grant("d0", 1, 0);
	struct lease *other_dev = grant("quiet", 1, 0);
	uint64_t id = l->id, b = bystander->id, o = other_dev->id;
	int opens = n_opens;

	revoke_lease(rv, l, REASON(ADMIN));
	advance(1000);
	revoke_run(rv);
	ck_assert_int_eq(count_reports(EV_OVERDUE, id, REASON(ADMIN)), 1);
	ck_assert(last(EV_OVERDUE, id)->enforced);
	/* Every lease of the device ended before its buffers die; the first reason stands. */
	ck_assert(!alive(id) && !alive(b));
	ck_assert_int_eq(count_reports(EV_ENDED, id, REASON(ADMIN)), 1);
	ck_assert_int_eq(count_reports(EV_ENDED, b, REASON(DEVICE_CYCLE)), 1);
	ck_assert(alive(o));
	ck_assert_int_eq(dev("d0")->state, STATE(CYCLING));
	wait_worker(dev("d0"));
	ck_assert_int_eq(dev("d0")->state, STATE(READY));
	ck_assert_uint_eq(dev("d0")->generation, 1);
	ck_assert_int_eq(n_opens, opens + 1);
	ck_assert_int_eq(count_reports(EV_STATE, 0, STATE(CYCLING)), 1);
	ck_assert_int_eq(count_reports(EV_STATE, 0, STATE(READY)), 1);
}
END_TEST

START_TEST(notify_only_device_lingers)
{
	struct lease *l = grant("quiet", 1, 0);

	revoke_lease(rv, l, REASON(ADMIN));
	advance(60000);
	revoke_run(rv);
	ck_assert(l->lingering);
	ck_assert_int_eq(count_reports(EV_OVERDUE, l->id, REASON(ADMIN)), 1);
	ck_assert(!last(EV_OVERDUE, l->id)->enforced);
	ck_assert_uint_eq(dev("quiet")->generation, 0);
	ck_assert(!dev("quiet")->cycling);
}
END_TEST

START_TEST(first_reason_stands)
{
	struct lease *l = grant("d0", 1, 0);

	revoke_lease(rv, l, REASON(ADMIN));
	int64_t deadline = l->deadline_ms;
	advance(500);
	revoke_lease(rv, l, REASON(POLICY));
	revoke_release(rv, l);
	ck_assert_int_eq(l->reason, REASON(ADMIN));
	ck_assert_int_eq(l->deadline_ms, deadline);
	ck_assert_int_eq(count_reports(EV_REVOKING, l->id, -1), 1);
}
END_TEST

/* An admin, the policy or the TTL revoke a lingering release afresh: enforced. */
START_TEST(lingering_release_escalates)
{
	static const int reasons[] = { REASON(ADMIN), REASON(POLICY), REASON(TTL) };

	for (size_t i = 0; i < ARRAY_SIZE(reasons); i++) {
		struct lease *l = grant("d0", 1, 0);
		uint64_t id = l->id;
		revoke_release(rv, l);
		advance(2000);
		revoke_run(rv);
		ck_assert(l->lingering);
		revoke_lease(rv, l, reasons[i]);
		ck_assert_int_eq(l->state, LEASE_REVOKING);
		ck_assert_int_eq(l->reason, reasons[i]);
		ck_assert(!l->lingering);
		ck_assert_int_eq(l->deadline_ms, mono_now + 1000);
		ck_assert_uint_eq(revoke_pending(rv), 1);
		advance(1000);
		revoke_run(rv);
		ck_assert(!alive(id));
		ck_assert_int_eq(count_reports(EV_ENDED, id, reasons[i]), 1);
		wait_worker(dev("d0"));
		ck_assert_uint_eq(dev("d0")->generation, i + 1);
	}
}
END_TEST

/* ---- TTL ---- */

START_TEST(ttl_expires_in_order)
{
	struct lease *late = grant("d0", 0, 3000);
	struct lease *early = grant("d0", 1, 1000);
	struct lease *none = grant("d0", 0, 0);
	uint64_t lt = late->id, e = early->id, n = none->id;

	advance(999);
	revoke_run(rv);
	ck_assert_int_eq(early->state, LEASE_ACTIVE);
	advance(1);
	revoke_run(rv);
	ck_assert_int_eq(early->state, LEASE_REVOKING);
	ck_assert_int_eq(count_reports(EV_REVOKING, e, REASON(TTL)), 1);
	holders_of[early->fd] = 0;
	advance(REVOKE_TICK_MS);
	revoke_run(rv);
	ck_assert_int_eq(count_reports(EV_ENDED, e, REASON(TTL)), 1);
	ck_assert(alive(lt));
	advance(2000 - REVOKE_TICK_MS);
	revoke_run(rv);
	ck_assert(!alive(lt));
	ck_assert_int_eq(count_reports(EV_ENDED, lt, REASON(TTL)), 1);
	ck_assert(alive(n));
}
END_TEST

/* A lease that ends before its TTL leaves the heap: nothing fires for it later. */
START_TEST(ttl_of_an_ended_lease_is_forgotten)
{
	struct lease *a = grant("d0", 0, 1000);
	struct lease *b = grant("d0", 0, 2000);
	struct lease *c = grant("d0", 0, 3000);
	uint64_t bid = b->id, cid = c->id;

	revoke_release(rv, a);
	revoke_release(rv, c);
	advance(5000);
	revoke_run(rv);
	ck_assert_int_eq(count_reports(EV_ENDED, bid, REASON(TTL)), 1);
	ck_assert_int_eq(count_reports(EV_ENDED, cid, REASON(TTL)), 0);
	ck_assert_int_eq(count_reports(EV_ENDED, 0, -1), 3);
}
END_TEST

/* ---- the registry ---- */

START_TEST(reset_waiters_answered_when_ready)
{
	struct device *d = dev("d0");
	int token;

	ck_assert_int_eq(registry_cycle(d, REASON(RESET)), 0);
	ck_assert_int_eq(registry_cycle(d, REASON(RESET)), -EBUSY);
	ck_assert_int_eq(registry_add_waiter(d, &token, 7), 0);
	ck_assert_int_eq(registry_add_waiter(d, &token, 8), 0);
	ck_assert_int_eq(registry_add_waiter(d, NULL, 9), 0);
	registry_drop_waiters(reg, NULL);
	wait_worker(d);
	ck_assert_int_eq(count_reports(EV_ANSWER, 7, 0), 1);
	ck_assert_int_eq(count_reports(EV_ANSWER, 8, 0), 1);
	ck_assert_int_eq(count_reports(EV_ANSWER, 9, -1), 0);
	ck_assert_uint_eq(d->generation, 1);
}
END_TEST

START_TEST(reopen_failure_fails_the_device)
{
	struct device *d = dev("d0");
	int token;

	fail_open = 1;
	ck_assert_int_eq(registry_cycle(d, REASON(RESET)), 0);
	ck_assert_int_eq(registry_add_waiter(d, &token, 3), 0);
	wait_worker(d);
	ck_assert_int_eq(d->state, STATE(FAILED));
	ck_assert_ptr_null(d->handle);
	ck_assert_ptr_nonnull(strstr(d->message, "refuses to open"));
	ck_assert_int_eq(count_reports(EV_ANSWER, 3, -EIO), 1);
}
END_TEST

START_TEST(removal_ends_leases_and_closes)
{
	struct device *d = dev("d0");
	struct lease *l = grant("d0", 1, 0);
	uint64_t id = l->id, one = 1;
	int closes = n_closes, token;

	ck_assert_int_eq(registry_add_waiter(d, &token, 5), 0);
	ck_assert_int_eq(write(d->handle->req_fd, &one, sizeof(one)), sizeof(one));
	while (d->state != STATE(GONE))
		ck_assert_int_ge(event_base_loop(base, EVLOOP_ONCE), 0);
	ck_assert(!alive(id));
	ck_assert_int_eq(count_reports(EV_ENDED, id, REASON(DEVICE_GONE)), 1);
	wait_worker(d);
	ck_assert_int_eq(n_closes, closes + 1);
	ck_assert_ptr_null(d->handle);
	ck_assert_int_eq(count_reports(EV_ANSWER, 5, -ENXIO), 1);
	/* Gone twice is gone once. */
	registry_device_gone(d, "again");
	ck_assert_int_eq(count_reports(EV_STATE, 0, STATE(GONE)), 1);
	/* An admin's reset opens it again (no udev event may ever say it is back): its old
	 * buffers died with the close, so the generation moves on. */
	uint32_t gen = d->generation;
	ck_assert_int_eq(registry_cycle(d, REASON(RESET)), 0);
	ck_assert_int_eq(registry_add_waiter(d, &token, 6), 0);
	ck_assert_int_eq(d->state, STATE(CYCLING));
	wait_worker(d);
	ck_assert_int_eq(d->state, STATE(READY));
	ck_assert_uint_eq(d->generation, gen + 1);
	ck_assert_int_eq(count_reports(EV_ANSWER, 6, 0), 1);
}
END_TEST

/* Ending every lease of a device (a reset, a removal) tells each end before it closes any
 * buffer, so the last holder does not wait for the others' closes; and all are closed when
 * it returns. */
START_TEST(end_all_closes_after_the_fan_out)
{
	struct device *d = dev("d0");
	uint64_t ids[4];

	for (size_t i = 0; i < 4; i++) {
		struct lease *l = grant("d0", 0, 0);
		struct stat st;
		ck_assert_int_eq(fstat(l->fd, &st), 0);
		ids[i] = l->id;
		fanout_fd[i] = l->fd;
		fanout_ino[i] = st.st_ino;
	}
	n_fanout = 4;
	revoke_end_all(rv, &d->leases, REASON(RESET));
	n_fanout = 0;
	for (size_t i = 0; i < 4; i++) {
		ck_assert(!alive(ids[i]));
		ck_assert_int_eq(count_reports(EV_ENDED, ids[i], REASON(RESET)), 1);
		ck_assert(!same_file_open(fanout_fd[i], fanout_ino[i]));
	}
	ck_assert_uint_eq(d->leases.n, 0);
}
END_TEST

START_TEST(error_reports_or_cycles)
{
	struct device *d0 = dev("d0"), *cyc = dev("cyc");
	struct lease *l = grant("d0", 1, 0);
	uint64_t one = 1;

	ck_assert_int_eq(write(d0->handle->err_fd, &one, sizeof(one)), sizeof(one));
	while (!strstr(d0->message, "AER"))
		ck_assert_int_ge(event_base_loop(base, EVLOOP_ONCE), 0);
	ck_assert_int_eq(d0->state, STATE(READY));
	ck_assert(alive(l->id));
	ck_assert_int_eq(write(cyc->handle->err_fd, &one, sizeof(one)), sizeof(one));
	while (cyc->generation == 0)
		ck_assert_int_ge(event_base_loop(base, EVLOOP_ONCE), 0);
	wait_worker(cyc);
	ck_assert_int_eq(cyc->state, STATE(READY));
}
END_TEST

/* A device whose close the kernel holds up delays no other device: the other keeps serving,
 * is `cycling` only once its own cycle begins, and is ready again while the first is still
 * held; released, the first completes too. */
/* ---- udev events (hotplug.c) on PCI devices of the fake backend ---- */

static const char pci_text[] = "device nic pci 0000:00:03.0\n"
			       "device gpu pci 0000:00:04.0\n";
#define HINT "p2pbufd opens it when udev says so"

static char sysfs[64];
static struct registry *preg;

/* sysfs says addr is bound to driver (NULL: to none). */
static void bind_in_sysfs(const char *addr, const char *driver)
{
	char path[256], target[128];

	snprintf(path, sizeof(path), "%s/bus/pci/devices/%s", sysfs, addr);
	ck_assert_int_eq(mkdir(path, 0755) == 0 || errno == EEXIST, 1);
	snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/driver", sysfs, addr);
	unlink(path);
	snprintf(target, sizeof(target), "../../../bus/pci/drivers/%s", driver ? driver : "");
	if (driver)
		ck_assert_int_eq(symlink(target, path), 0);
}

/* A registry of pci_text's devices, the first `failing` of whose opens fail. */
static void pci_setup(int failing)
{
	const struct registry_callbacks gcb = { .state_changed = on_state,
						.buffers_dying = on_dying,
						.answer = on_answer,
						.wait_hint = HINT };
	char *err = NULL, path[128];
	struct policy *p;

	snprintf(sysfs, sizeof(sysfs), "/tmp/p2pbuf-sysfs.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(sysfs));
	snprintf(path, sizeof(path), "%s/bus", sysfs);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/bus/pci", sysfs);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/bus/pci/devices", sysfs);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	ck_assert_int_eq(policy_parse("pci", pci_text, strlen(pci_text), &numbers, &p, &err), 0);
	ck_assert_uint_lt(n_reloaded, ARRAY_SIZE(reloaded));
	reloaded[n_reloaded++] = p; /* freed at teardown, after every device */
	fail_open = failing;
	ck_assert_int_eq(registry_new(base, worker, p, fake_backend, &gcb, &preg), 0);
}

static void pci_teardown(void)
{
	char cmd[128];

	for (size_t i = 0; i < registry_count(preg); i++)
		wait_worker(registry_device(preg, i));
	registry_free(preg);
	preg = NULL;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sysfs);
	ck_assert_int_eq(system(cmd), 0);
}

static unsigned udev(const char *subsystem, enum hotplug_action action, const char *sysname,
		     const char *driver)
{
	const struct hotplug_event ev = { action, subsystem, sysname, driver };

	return hotplug_apply(preg, sysfs, &ev);
}

static struct device *pdev(const char *name)
{
	for (size_t i = 0; i < registry_count(preg); i++)
		if (strcmp(registry_device(preg, i)->decl.name, name) == 0)
			return registry_device(preg, i);
	ck_abort_msg("no device %s", name);
	return NULL;
}

/* A device that could not open at start-up says what it waits for, and opens when it is
 * bound to vfio-pci; a bind to another driver or another device's bind opens nothing. */
START_TEST(bind_opens_a_failed_device)
{
	pci_setup(1);
	struct device *nic = pdev("nic"), *gpu = pdev("gpu");
	ck_assert_int_eq(nic->state, STATE(FAILED));
	ck_assert_int_eq(gpu->state, STATE(READY));
	ck_assert_ptr_nonnull(strstr(nic->message, "refuses to open; " HINT));
	int opens = n_opens;

	ck_assert_uint_eq(udev("pci", HOTPLUG_BIND, "0000:00:03.0", "nvme"), 0);
	ck_assert_ptr_nonnull(strstr(nic->message, "bound to nvme, not to a vfio driver"));
	ck_assert_ptr_nonnull(strstr(nic->message, HINT));
	ck_assert_uint_eq(udev("pci", HOTPLUG_BIND, "0000:00:09.0", "vfio-pci"), 0);
	ck_assert_uint_eq(udev("pci", HOTPLUG_BIND, "0000:00:04.0", "vfio-pci"), 0); /* ready */
	ck_assert_int_eq(n_opens, opens);

	ck_assert_uint_eq(udev("pci", HOTPLUG_BIND, "0000:00:03.0", "vfio-pci"), 1);
	ck_assert_int_eq(nic->state, STATE(CYCLING));
	ck_assert_str_eq(nic->message, "opening: bound to vfio-pci");
	wait_worker(nic);
	ck_assert_int_eq(nic->state, STATE(READY));
	ck_assert_uint_eq(nic->generation, 0); /* nothing was ever exported from it */
	ck_assert_int_eq(n_opens, opens + 1);
	pci_teardown();
}
END_TEST

/* Unbound (the kernel's REQ closes it), then bound again: it comes back by itself, of a new
 * generation, and says what happened meanwhile. */
START_TEST(rebind_brings_a_gone_device_back)
{
	uint64_t one = 1;

	pci_setup(0);
	struct device *nic = pdev("nic");
	ck_assert_int_eq(write(nic->handle->req_fd, &one, sizeof(one)), sizeof(one));
	while (nic->state != STATE(GONE))
		ck_assert_int_ge(event_base_loop(base, EVLOOP_ONCE), 0);
	wait_worker(nic);
	ck_assert_ptr_null(nic->handle);
	ck_assert_ptr_nonnull(strstr(nic->message, "asked for the device back"));
	ck_assert_ptr_nonnull(strstr(nic->message, HINT));

	ck_assert_uint_eq(udev("pci", HOTPLUG_UNBIND, "0000:00:03.0", NULL), 0);
	ck_assert_str_eq(nic->message, "unbound from its driver; " HINT);
	ck_assert_int_eq(nic->state, STATE(GONE));

	ck_assert_uint_eq(udev("pci", HOTPLUG_BIND, "0000:00:03.0", "vfio-pci"), 1);
	wait_worker(nic);
	ck_assert_int_eq(nic->state, STATE(READY));
	ck_assert_uint_eq(nic->generation, 1);
	pci_teardown();
}
END_TEST

/* A VFIO node that appears retries the waiting devices sysfs says are bound to a vfio driver
 * (their node may have lacked udev's permissions at the bind), and only those. */
START_TEST(vfio_node_retries_devices_bound_to_vfio)
{
	pci_setup(2);
	struct device *nic = pdev("nic"), *gpu = pdev("gpu");
	ck_assert_int_eq(nic->state, STATE(FAILED));
	ck_assert_int_eq(gpu->state, STATE(FAILED));
	bind_in_sysfs("0000:00:03.0", "vfio-pci");
	bind_in_sysfs("0000:00:04.0", "nvme");

	ck_assert_uint_eq(udev("vfio", HOTPLUG_REMOVE, "12", NULL), 0);
	ck_assert_uint_eq(udev("vfio", HOTPLUG_ADD, "12", NULL), 1);
	wait_worker(nic);
	ck_assert_int_eq(nic->state, STATE(READY));
	ck_assert_int_eq(gpu->state, STATE(FAILED));
	bind_in_sysfs("0000:00:04.0", NULL);
	ck_assert_uint_eq(udev("vfio-dev", HOTPLUG_ADD, "vfio3", NULL), 0);
	bind_in_sysfs("0000:00:04.0", "mlx5_vfio_pci"); /* a variant driver */
	ck_assert_uint_eq(udev("vfio-dev", HOTPLUG_ADD, "vfio3", NULL), 1);
	wait_worker(gpu);
	ck_assert_int_eq(gpu->state, STATE(READY));
	pci_teardown();
}
END_TEST

/* Told it may open while its own open runs and then fails: it tries once more, and the
 * second event is not lost. */
START_TEST(event_during_a_failing_open_retries)
{
	pci_setup(1);
	struct device *nic = pdev("nic");
	int opens = n_opens;

	fail_open = 1;
	ck_assert_uint_eq(udev("pci", HOTPLUG_BIND, "0000:00:03.0", "vfio-pci"), 1);
	ck_assert_uint_eq(udev("pci", HOTPLUG_BIND, "0000:00:03.0", "vfio-pci"), 0); /* busy */
	wait_worker(nic);
	ck_assert_int_eq(nic->state, STATE(READY));
	ck_assert_int_eq(n_opens, opens + 2);
	ck_assert_int_eq(count_reports(EV_STATE, 0, STATE(FAILED)), 1); /* at start-up only */
	pci_teardown();
}
END_TEST

START_TEST(held_close_delays_no_other_device)
{
	struct device *held = dev("quiet"), *d0 = dev("d0");
	uint64_t one = 1;
	int token;

	release_fd = eventfd(0, EFD_CLOEXEC);
	ck_assert_int_ge(release_fd, 0);
	hold_name = "quiet";
	ck_assert_int_eq(registry_cycle(held, REASON(RESET)), 0);
	ck_assert_int_eq(registry_add_waiter(held, &token, 21), 0);
	wait_held();
	/* Meanwhile d0 serves: still ready, and it exports. */
	ck_assert_int_eq(d0->state, STATE(READY));
	ck_assert(!d0->cycling);
	uint64_t id = grant("d0", 0, 0)->id; /* the cycle frees the lease: keep its id only */
	int cycling_reports = count_reports(EV_STATE, 0, STATE(CYCLING));
	ck_assert_int_eq(registry_cycle(d0, REASON(RESET)), 0);
	ck_assert_int_eq(count_reports(EV_STATE, 0, STATE(CYCLING)), cycling_reports + 1);
	ck_assert_int_eq(registry_add_waiter(d0, &token, 22), 0);
	ck_assert(!alive(id));
	wait_worker(d0);
	ck_assert_int_eq(d0->state, STATE(READY));
	ck_assert_uint_eq(d0->generation, 1);
	ck_assert_int_eq(count_reports(EV_ANSWER, 22, 0), 1);
	/* ...while the first is still held. */
	ck_assert(held->cycling);
	ck_assert_int_eq(held->state, STATE(CYCLING));
	ck_assert_int_eq(count_reports(EV_ANSWER, 21, -1), 0);
	ck_assert_int_eq(write(release_fd, &one, sizeof(one)), sizeof(one));
	wait_worker(held);
	ck_assert_int_eq(held->state, STATE(READY));
	ck_assert_uint_eq(held->generation, 1);
	ck_assert_int_eq(count_reports(EV_ANSWER, 21, 0), 1);
	hold_name = NULL;
	closep(&release_fd);
}
END_TEST

/* At shutdown every device closes at once, each on its own thread: a close the kernel holds
 * up delays no other's. */
START_TEST(shutdown_closes_apart)
{
	struct device *held = dev("quiet"), *d0 = dev("d0");
	uint64_t one = 1;

	release_fd = eventfd(0, EFD_CLOEXEC);
	ck_assert_int_ge(release_fd, 0);
	hold_name = "quiet";
	registry_close_all(reg);
	wait_held();
	wait_worker(d0);
	ck_assert_ptr_null(d0->handle);
	ck_assert(held->cycling);
	ck_assert_ptr_nonnull(held->handle);
	ck_assert_int_eq(write(release_fd, &one, sizeof(one)), sizeof(one));
	for (size_t i = 0; i < registry_count(reg); i++) {
		wait_worker(registry_device(reg, i));
		ck_assert_ptr_null(registry_device(reg, i)->handle);
	}
	hold_name = NULL;
	closep(&release_fd);
}
END_TEST

START_TEST(open_failure_at_start_serves_the_others)
{
	const struct registry_callbacks gcb = { .state_changed = on_state,
						.buffers_dying = on_dying,
						.answer = on_answer };
	struct registry *r2;

	fail_open = 1;
	ck_assert_int_eq(registry_new(base, worker, policy, fake_backend, &gcb, &r2), 0);
	ck_assert_int_eq(registry_device(r2, 0)->state, STATE(FAILED));
	ck_assert_int_eq(registry_device(r2, 1)->state, STATE(READY));
	ck_assert_uint_eq(registry_ready(r2), registry_count(r2) - 1);
	registry_free(r2);
}
END_TEST

/* ---- a reload's device changes ---- */

/* The devices of the counts' cases, which every reload here declares as before. */
static const char counted_devices[] = "device lazy sim bar 0 1M revoke-deadline 1s\n"
				      "device lazy2 sim bar 0 1M revoke-deadline 1s\n"
				      "device real sim bar 0 1M revoke-deadline 1s\n";
#define KEPT 3 /* devices in counted_devices */

/* Plan the devices of text (and the counted devices, unchanged) against the registry (the
 * policy lives until teardown). */
static struct registry_plan *plan(const char *devices)
{
	struct registry_plan *pl = NULL;
	char *err = NULL, text[1024];

	snprintf(text, sizeof(text), "%s%s", devices, counted_devices);
	ck_assert_uint_lt(n_reloaded, ARRAY_SIZE(reloaded));
	ck_assert_int_eq(
	    policy_parse("reload", text, strlen(text), &numbers, &reloaded[n_reloaded], &err), 0);
	ck_assert_int_eq(registry_plan_new(reg, reloaded[n_reloaded], &pl), 0);
	n_reloaded++;
	return pl;
}

/* Turn the loop until the registry holds n devices and none has a job on the worker. */
static void settle(size_t n)
{
	for (;;) {
		bool busy = registry_count(reg) != n;
		for (size_t i = 0; i < registry_count(reg); i++)
			busy = busy || registry_device(reg, i)->cycling;
		if (!busy)
			return;
		ck_assert_int_ge(event_base_loop(base, EVLOOP_ONCE), 0);
	}
}

/* d0's deadline changes, quiet goes, cyc stays, fresh comes. */
static const char reload_text[] = "device d0 sim bar 0 1M revoke-deadline 3s\n"
				  "device cyc sim bar 0 1M on-error cycle\n"
				  "device fresh sim bar 0 1M\n";

/* A plan says what it would change and, dropped, changes nothing. */
START_TEST(plan_dropped_changes_nothing)
{
	int opens = n_opens;
	struct registry_plan *pl = plan(reload_text);
	struct registry_changes ch = registry_plan_changes(pl);

	ck_assert_uint_eq(ch.added, 1);
	ck_assert_uint_eq(ch.removed, 1);
	ck_assert_uint_eq(ch.changed, 1);
	registry_plan_free(pl);
	event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_uint_eq(registry_count(reg), 3 + KEPT);
	ck_assert_ptr_null(registry_find(reg, "fresh"));
	ck_assert_int_eq(dev("quiet")->state, STATE(READY));
	ck_assert_uint_eq(dev("d0")->decl.revoke_deadline_ms, 1000);
	ck_assert_int_eq(n_opens, opens);
	ck_assert_int_eq(n_reports, 0);
}
END_TEST

/* Committed: fresh opens on the worker; quiet is gone at once, enforced whatever its mode,
 * and is closed and freed only once its lease has ended; d0 has its new deadline and keeps
 * its lease. */
START_TEST(commit_adds_removes_and_changes)
{
	struct lease *kept = grant("d0", 1, 0), *l = grant("quiet", 1, 0);
	struct device *quiet = dev("quiet");
	uint64_t id = l->id;
	int opens = n_opens, closes = n_closes;

	registry_commit(plan(reload_text));
	ck_assert_int_eq(quiet->state, STATE(GONE));
	ck_assert(quiet->removing);
	ck_assert_int_eq(quiet->decl.revocation, POLICY_REVOKE_ENFORCE);
	ck_assert_ptr_eq(registry_find(reg, "quiet"), quiet);
	ck_assert_int_eq(dev("fresh")->state, STATE(CYCLING));
	ck_assert_uint_eq(dev("d0")->decl.revoke_deadline_ms, 3000);
	settle(4 + KEPT);
	ck_assert_int_eq(dev("fresh")->state, STATE(READY));
	ck_assert_int_eq(n_opens, opens + 1);
	ck_assert_int_eq(n_closes, closes);
	/* The caller revokes quiet's lease; its holder lets go. */
	revoke_lease(rv, l, REASON(POLICY));
	holders_of[l->fd] = 0;
	revoke_run(rv);
	ck_assert_int_eq(count_reports(EV_ENDED, id, REASON(POLICY)), 1);
	settle(3 + KEPT);
	ck_assert_int_eq(n_closes, closes + 1);
	ck_assert_ptr_null(registry_find(reg, "quiet"));
	ck_assert(alive(kept->id));
	ck_assert_int_eq(kept->state, LEASE_ACTIVE);
}
END_TEST

/* d0 at another address: the old one is removed, the new one opens only after the old one
 * is closed and freed. Enforcing the old one's lease ends it at once and does not reopen. */
START_TEST(same_name_opens_after_the_removed_one)
{
	struct device *old = dev("d0");
	struct lease *l = grant("d0", 1, 0);
	uint64_t id = l->id;
	int opens = n_opens, closes = n_closes;
	struct registry_plan *pl = plan("device d0 sim bar 0 2M\ndevice quiet sim bar 0 1M "
					"revocation notify-only revoke-deadline 1s\n"
					"device cyc sim bar 0 1M on-error cycle\n");

	ck_assert_uint_eq(registry_plan_changes(pl).added, 1);
	ck_assert_uint_eq(registry_plan_changes(pl).removed, 1);
	registry_commit(pl);
	struct device *now = dev("d0");
	ck_assert_ptr_ne(now, old);
	ck_assert_int_eq(now->state, STATE(CYCLING));
	ck_assert(now->waiting);
	ck_assert_int_eq(registry_cycle(now, REASON(RESET)), -EBUSY);
	event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(n_opens, opens);
	ck_assert_uint_eq(registry_count(reg), 4 + KEPT);
	ck_assert_int_eq(registry_cycle(old, REASON(DEVICE_CYCLE)), 0);
	ck_assert(!alive(id));
	settle(3 + KEPT);
	ck_assert_int_eq(now->state, STATE(READY));
	ck_assert_int_eq(n_opens, opens + 1);
	ck_assert_int_eq(n_closes, closes + 1);
	ck_assert_int_eq(closes_before_open, closes + 1);
}
END_TEST

/* New options for a device the worker has: taken when its job ends. */
START_TEST(options_wait_for_the_worker)
{
	struct device *d = dev("d0");

	ck_assert_int_eq(registry_cycle(d, REASON(RESET)), 0);
	registry_commit(plan("device d0 sim bar 0 1M revoke-deadline 4s\ndevice quiet sim bar 0 1M "
			     "revoke-deadline 1s revocation notify-only\n"
			     "device cyc sim bar 0 1M on-error cycle\n"));
	ck_assert_uint_eq(d->decl.revoke_deadline_ms, 1000);
	wait_worker(d);
	ck_assert_uint_eq(d->decl.revoke_deadline_ms, 4000);
	ck_assert_int_eq(d->state, STATE(READY));
}
END_TEST

/* Removed while the worker opens it: what it opened is closed, and it is freed. */
START_TEST(removed_while_opening)
{
	int opens = n_opens, closes = n_closes;

	registry_commit(plan(reload_text));
	ck_assert(dev("fresh")->cycling);
	registry_commit(plan("device d0 sim bar 0 1M revoke-deadline 3s\n"
			     "device cyc sim bar 0 1M on-error cycle\n"));
	settle(2 + KEPT);
	ck_assert_ptr_null(registry_find(reg, "fresh"));
	ck_assert_ptr_null(registry_find(reg, "quiet"));
	/* Both removed devices closed; fresh's open, if the worker made it, closed too. */
	ck_assert_int_eq(n_opens - opens, n_closes - closes - 1);
}
END_TEST

/* ---- counts off the loop (costly backends) ---- */

/* A release is revoking at once and ends at the next count, which runs on a thread that is
 * not the loop's; nobody is told, as nobody held a copy. */
START_TEST(lazy_release_ends_at_the_next_count)
{
	struct lease *l = grant("lazy", 0, 0);
	uint64_t id = l->id;

	revoke_release(rv, l);
	ck_assert(alive(id));
	ck_assert_int_eq(l->state, LEASE_REVOKING);
	ck_assert_int_eq(l->reason, REASON(RELEASED));
	ck_assert_int_eq(revoke_holders(l), -1);
	ck_assert_uint_eq(table.rule_leases[0], 1); /* the quota holds until it ends */
	ck_assert_int_eq(lazy_counts(), 0);
	ck_assert(revoke_settling(rv));
	tick();
	ck_assert(!revoke_settling(rv));
	ck_assert(!alive(id));
	ck_assert_int_eq(lazy_counts(), 1);
	ck_assert(!pthread_equal(lazy_thread, pthread_self()));
	ck_assert_int_eq(count_reports(EV_UNTOLD, id, REASON(RELEASED)), 1);
	ck_assert_int_eq(count_reports(EV_ENDED, id, REASON(RELEASED)), 1);
	ck_assert_int_eq(count_reports(EV_REVOKING, id, -1), 0);
	ck_assert_uint_eq(table.rule_leases[0], 0);
	ck_assert_uint_eq(revoke_pending(rv), 0);
}
END_TEST

/* Released with a copy elsewhere: told once the count finds it, listed with that count,
 * lingering past the deadline, never enforced, ended at the count after the copy goes. */
START_TEST(lazy_release_held_is_told_and_lingers)
{
	struct lease *l = grant("lazy", 1, 0);
	uint64_t id = l->id;

	revoke_release(rv, l);
	ck_assert_int_eq(count_reports(EV_REVOKING, id, -1), 0);
	tick();
	ck_assert_int_eq(count_reports(EV_REVOKING, id, REASON(RELEASED)), 1);
	ck_assert_int_eq(revoke_holders(l), 1);
	advance(1000);
	tick();
	ck_assert(l->lingering);
	ck_assert_int_eq(count_reports(EV_OVERDUE, id, -1), 1);
	ck_assert(!last(EV_OVERDUE, id)->enforced);
	ck_assert_uint_eq(dev("lazy")->generation, 0);
	holders_of[l->fd] = 0;
	advance(REVOKE_TICK_MS);
	tick();
	ck_assert(!alive(id));
	ck_assert_int_eq(count_reports(EV_REVOKING, id, -1), 1);
	ck_assert_int_eq(count_reports(EV_ENDED, id, REASON(RELEASED)), 1);
}
END_TEST

/* An admin revoke is told at once; a lease nobody holds ends at the next count, one kept
 * past the deadline cycles the device. */
START_TEST(lazy_admin_revoke_told_at_once)
{
	struct lease *free_ = grant("lazy", 0, 0), *kept = grant("lazy", 1, 0);
	uint64_t f = free_->id, k = kept->id;

	revoke_lease(rv, free_, REASON(ADMIN));
	revoke_lease(rv, kept, REASON(ADMIN));
	ck_assert_int_eq(count_reports(EV_REVOKING, f, REASON(ADMIN)), 1);
	ck_assert_int_eq(count_reports(EV_REVOKING, k, REASON(ADMIN)), 1);
	tick();
	ck_assert(!alive(f));
	ck_assert_int_eq(count_reports(EV_ENDED, f, REASON(ADMIN)), 1);
	ck_assert(alive(k));
	advance(1000);
	tick();
	ck_assert_int_eq(count_reports(EV_OVERDUE, k, REASON(ADMIN)), 1);
	ck_assert(last(EV_OVERDUE, k)->enforced);
	ck_assert(!alive(k));
	wait_worker(dev("lazy"));
	ck_assert_uint_eq(dev("lazy")->generation, 1);
}
END_TEST

/* Every lease waiting for a count, of every costly device, in one count; at most one count
 * a tick. */
START_TEST(lazy_one_count_for_all_at_most_once_a_tick)
{
	struct lease *ls[700];

	for (int i = 0; i < 700; i++)
		ls[i] = grant(i < 600 ? "lazy" : "lazy2", i % 14 == 0, 0);
	for (int i = 0; i < 700; i++)
		revoke_release(rv, ls[i]);
	tick();
	ck_assert_int_eq(lazy_counts(), 1);
	ck_assert_int_eq(n_counted, 1);
	ck_assert_uint_eq(lazy_last_n, 700);
	ck_assert_uint_eq(table.count, 50);
	ck_assert_uint_eq(revoke_pending(rv), 50);
	ck_assert_int_eq(count_reports(EV_REVOKING, 0, REASON(RELEASED)), 50);
	ck_assert_int_eq(count_reports(EV_ENDED, 0, REASON(RELEASED)), 650);
	/* Not again within the tick, whoever asks. */
	revoke_run(rv);
	advance(REVOKE_TICK_MS - 1);
	revoke_release(rv, ls[0]);
	revoke_run(rv);
	ck_assert(!revoke_counting(rv));
	ck_assert_int_eq(lazy_counts(), 1);
	advance(1);
	tick();
	ck_assert_int_eq(lazy_counts(), 2);
	ck_assert_int_eq(n_counted, 2);
	ck_assert_uint_eq(lazy_last_n, 50);
}
END_TEST

/* A lease that ends while it is being counted is not judged by that count, nor is a new
 * lease whose buffer got the ended one's fd number; one count runs at a time. */
START_TEST(lazy_lease_ends_while_counted)
{
	struct lease *a = grant("lazy", 0, 0), *b = grant("lazy", 0, 0);
	uint64_t ai = a->id, bi = b->id;
	int a_fd = a->fd;

	revoke_release(rv, a);
	revoke_release(rv, b);
	set_gate(true);
	revoke_run(rv);
	wait_at_gate();
	revoke_end(rv, a, REASON(DEVICE_GONE));
	struct lease *c = grant("lazy", 1, 0);
	uint64_t ci = c->id;
	ck_assert_int_eq(c->fd, a_fd);
	revoke_release(rv, c);
	advance(2 * REVOKE_TICK_MS);
	revoke_run(rv);
	ck_assert_int_eq(lazy_counts(), 1);
	set_gate(false);
	wait_count();
	ck_assert_int_eq(count_reports(EV_ENDED, ai, -1), 1);
	ck_assert_int_eq(count_reports(EV_ENDED, bi, REASON(RELEASED)), 1);
	ck_assert(alive(ci));
	ck_assert_int_eq(c->state, LEASE_REVOKING);
	ck_assert_int_eq(revoke_holders(c), -1);
	/* c was let go since: counted at once, though the last count took two ticks. */
	tick();
	ck_assert_int_eq(lazy_counts(), 2);
	ck_assert_int_eq(revoke_holders(c), 1);
	ck_assert_int_eq(count_reports(EV_REVOKING, ci, REASON(RELEASED)), 1);
}
END_TEST

/* A lease taken off the list while counted (reclaimed) and released again is not judged by
 * the count it left: its new holder may have got the buffer after the count began. */
START_TEST(lazy_reclaimed_while_counted)
{
	struct lease *l = grant("lazy", 0, 0);
	uint64_t id = l->id;

	revoke_owner_gone(rv, l);
	set_gate(true);
	revoke_run(rv);
	wait_at_gate();
	revoke_reclaimed(rv, l);
	ck_assert_int_eq(l->state, LEASE_ACTIVE);
	holders_of[l->fd] = 1;
	revoke_owner_gone(rv, l);
	set_gate(false);
	wait_count();
	ck_assert(alive(id));
	ck_assert_int_eq(count_reports(EV_ENDED, id, -1), 0);
	advance(REVOKE_TICK_MS);
	tick();
	ck_assert(alive(id));
	ck_assert_int_eq(revoke_holders(l), 1);
	ck_assert_int_eq(count_reports(EV_REVOKING, id, REASON(OWNER_DISCONNECTED)), 1);
}
END_TEST

/* A lease reclaimed while it is counted is active again, and the count, once back, leaves
 * it so whatever it found. */
START_TEST(lazy_reclaimed_lease_stays_active)
{
	struct lease *l = grant("lazy", 0, 0);

	revoke_owner_gone(rv, l);
	set_gate(true);
	revoke_run(rv);
	wait_at_gate();
	revoke_reclaimed(rv, l);
	set_gate(false);
	wait_count();
	ck_assert(alive(l->id));
	ck_assert_int_eq(l->state, LEASE_ACTIVE);
	ck_assert_uint_eq(revoke_pending(rv), 0);
	ck_assert(!revoke_settling(rv));
}
END_TEST

/* A device cycle while a count runs: the cycle ends the leases and completes on the device
 * worker though the count is held (neither thread waits for the other); the count, once
 * back, judges nothing and cycles nothing again. */
START_TEST(lazy_cycle_while_counted)
{
	struct lease *l = grant("lazy", 1, 0);
	uint64_t id = l->id;
	int opens = n_opens;

	revoke_lease(rv, l, REASON(ADMIN));
	advance(1000);
	set_gate(true);
	revoke_run(rv);
	wait_at_gate();
	ck_assert_int_eq(registry_cycle(dev("lazy"), REASON(RESET)), 0);
	ck_assert(!alive(id));
	ck_assert_int_eq(count_reports(EV_ENDED, id, REASON(ADMIN)), 1);
	wait_worker(dev("lazy"));
	ck_assert_uint_eq(dev("lazy")->generation, 1);
	set_gate(false);
	wait_count();
	ck_assert_int_eq(count_reports(EV_OVERDUE, 0, -1), 0);
	ck_assert(!dev("lazy")->cycling);
	ck_assert_uint_eq(dev("lazy")->generation, 1);
	ck_assert_int_eq(n_opens, opens + 1);
}
END_TEST

/* A deadline is judged at the time the count began: holders seen before the deadline do not
 * cycle the device, however late the count comes back. */
START_TEST(lazy_deadline_judged_when_the_count_began)
{
	struct lease *l = grant("lazy", 1, 0);
	uint64_t id = l->id;

	revoke_lease(rv, l, REASON(ADMIN));
	advance(999);
	set_gate(true);
	revoke_run(rv);
	wait_at_gate();
	advance(500);
	holders_of[l->fd] = 0; /* let go after the count took its figures */
	set_gate(false);
	wait_count();
	ck_assert(alive(id));
	ck_assert_int_eq(count_reports(EV_OVERDUE, id, -1), 0);
	/* Only leases counted before are left: a count that took 500 ms rests as long. */
	advance(499);
	tick();
	ck_assert_int_eq(lazy_counts(), 1);
	advance(1);
	tick();
	ck_assert_int_eq(lazy_counts(), 2);
	ck_assert(!alive(id));
	ck_assert_int_eq(count_reports(EV_ENDED, id, REASON(ADMIN)), 1);
	ck_assert_uint_eq(dev("lazy")->generation, 0);
}
END_TEST

/* A count that fails cannot tell: the leases are taken as held, and the next count decides. */
START_TEST(lazy_failed_count_is_held)
{
	struct lease *l = grant("lazy", 0, 0);
	uint64_t id = l->id;

	lazy_fail = 1;
	revoke_lease(rv, l, REASON(ADMIN));
	tick();
	ck_assert(alive(id));
	ck_assert_int_eq(revoke_holders(l), 1);
	lazy_fail = 0;
	advance(REVOKE_TICK_MS);
	tick();
	ck_assert(!alive(id));
}
END_TEST

/* The real simulated backend, off the loop: 600 released leases, 100 of them with a copy in
 * a child process, sorted out by one walk through /proc. */
/* A sim lease whose client was given a file of its own (reopen) is judged by the read-lease
 * check alone: an admin's revoke of it while held tells the holder and makes no walk, a tick
 * looks again without one, and it ends at the first tick after the holder closes its file. */
START_TEST(sim_own_file_never_walked)
{
	struct lease *l = grant("real", 0, 0);
	uint64_t id = l->id;
	int copy = -1;

	ck_assert_int_eq(l->device->ops->reopen(l->device->handle, l->fd, &copy), 0);
	l->own_file = true;
	revoke_lease(rv, l, REASON(ADMIN));
	ck_assert(alive(id));
	ck_assert_int_eq(l->state, LEASE_REVOKING);
	ck_assert_int_eq(count_reports(EV_REVOKING, id, REASON(ADMIN)), 1);
	ck_assert_int_eq(revoke_holders(l), 1);
	ck_assert(!revoke_settling(rv));
	advance(REVOKE_TICK_MS);
	tick();
	ck_assert(alive(id));
	ck_assert_int_eq(n_real_counts, 0);
	close(copy);
	advance(REVOKE_TICK_MS);
	tick();
	ck_assert(!alive(id));
	ck_assert_int_eq(count_reports(EV_ENDED, id, REASON(ADMIN)), 1);
	ck_assert_int_eq(n_real_counts, 0);
	/* A release with the file already closed ends at once, no walk either. */
	l = grant("real", 0, 0);
	id = l->id;
	ck_assert_int_eq(l->device->ops->reopen(l->device->handle, l->fd, &copy), 0);
	l->own_file = true;
	close(copy);
	revoke_release(rv, l);
	ck_assert(!alive(id));
	ck_assert_int_eq(n_real_counts, 0);
}
END_TEST

START_TEST(sim_counts_600_leases_in_one_walk)
{
	struct lease *ls[600];
	int sync[2];

	for (int i = 0; i < 600; i++)
		ls[i] = grant("real", 0, 0);
	ck_assert_int_eq(pipe2(sync, O_CLOEXEC), 0);
	pid_t child = fork();
	ck_assert_int_ge(child, 0);
	if (child == 0) {
		for (int i = 100; i < 600; i++)
			close(ls[i]->fd);
		(void)!write(sync[1], "", 1);
		for (;;)
			pause();
	}
	char byte;
	ck_assert_int_eq(read(sync[0], &byte, 1), 1);
	close(sync[0]);
	close(sync[1]);
	for (int i = 0; i < 600; i++)
		revoke_release(rv, ls[i]);
	tick();
	ck_assert_int_eq(n_real_counts, 1);
	ck_assert_uint_eq(real_last_n, 600);
	ck_assert_uint_eq(table.count, 100);
	for (int i = 0; i < 100; i++)
		ck_assert_int_eq(revoke_holders(ls[i]), 1);
	ck_assert_int_eq(count_reports(EV_REVOKING, 0, REASON(RELEASED)), 100);
	kill(child, SIGKILL);
	ck_assert_int_eq(waitpid(child, NULL, 0), child);
	advance(REVOKE_TICK_MS);
	tick();
	ck_assert_int_eq(n_real_counts, 2);
	ck_assert_uint_eq(table.count, 0);
	ck_assert_int_eq(count_reports(EV_ENDED, 0, REASON(RELEASED)), 600);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("revoke");
	TCase *tc = tcase_create("engine");
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, release_unheld_ends_at_once);
	tcase_add_test(tc, end_all_closes_after_the_fan_out);
	tcase_add_test(tc, sim_own_file_never_walked);
	tcase_add_test(tc, release_held_lingers_and_counts);
	tcase_add_test(tc, owner_gone_with_a_copy_lingers_like_a_release);
	tcase_add_test(tc, owner_gone_counts_in_one_batch);
	tcase_add_test(tc, admin_revoke_unheld_ends_at_once);
	tcase_add_test(tc, admin_revoke_let_go_in_time);
	tcase_add_test(tc, admin_revoke_kept_cycles_the_device);
	tcase_add_test(tc, notify_only_device_lingers);
	tcase_add_test(tc, first_reason_stands);
	tcase_add_test(tc, lingering_release_escalates);
	tcase_add_test(tc, ttl_expires_in_order);
	tcase_add_test(tc, ttl_of_an_ended_lease_is_forgotten);
	suite_add_tcase(s, tc);
	tc = tcase_create("registry");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, reset_waiters_answered_when_ready);
	tcase_add_test(tc, reopen_failure_fails_the_device);
	tcase_add_test(tc, removal_ends_leases_and_closes);
	tcase_add_test(tc, error_reports_or_cycles);
	tcase_add_test(tc, open_failure_at_start_serves_the_others);
	tcase_add_test(tc, held_close_delays_no_other_device);
	tcase_add_test(tc, bind_opens_a_failed_device);
	tcase_add_test(tc, rebind_brings_a_gone_device_back);
	tcase_add_test(tc, vfio_node_retries_devices_bound_to_vfio);
	tcase_add_test(tc, event_during_a_failing_open_retries);
	tcase_add_test(tc, shutdown_closes_apart);
	suite_add_tcase(s, tc);
	tc = tcase_create("reload");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, plan_dropped_changes_nothing);
	tcase_add_test(tc, commit_adds_removes_and_changes);
	tcase_add_test(tc, same_name_opens_after_the_removed_one);
	tcase_add_test(tc, options_wait_for_the_worker);
	tcase_add_test(tc, removed_while_opening);
	suite_add_tcase(s, tc);
	tc = tcase_create("counted later");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, lazy_release_ends_at_the_next_count);
	tcase_add_test(tc, lazy_release_held_is_told_and_lingers);
	tcase_add_test(tc, lazy_admin_revoke_told_at_once);
	tcase_add_test(tc, lazy_one_count_for_all_at_most_once_a_tick);
	tcase_add_test(tc, lazy_lease_ends_while_counted);
	tcase_add_test(tc, lazy_reclaimed_while_counted);
	tcase_add_test(tc, lazy_reclaimed_lease_stays_active);
	tcase_add_test(tc, lazy_cycle_while_counted);
	tcase_add_test(tc, lazy_deadline_judged_when_the_count_began);
	tcase_add_test(tc, lazy_failed_count_is_held);
	tcase_add_test(tc, sim_counts_600_leases_in_one_walk);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
