/* The costs that grow with the work: a closing connection's leases, a reset's fan-out,
 * cooperative holders told to let go, memory per lease, start-up. Each drives a daemon that
 * run.sh started (its pid given with --pid) through libp2pbuf's public API. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define MS(ns) ((double)(ns) / 1e6)

/* ---- waiting for another process ---- */

/* Wait until pid has at most target fds open. The gap between looks grows with the time
 * waited (2 % of it, 1 to 100 ms): the poller shares a CPU with the daemon it watches, and
 * a tight loop over /proc would slow down what it measures. Returns the ns since t0 at the
 * look that saw it, or 0 on timeout. */
static uint64_t wait_fds_at_most(pid_t pid, int target, uint64_t t0, unsigned timeout_ms)
{
	for (;;) {
		int n = bench_count_fds(pid);
		uint64_t waited = bench_now_ns() - t0;
		if (n <= target)
			return waited ? waited : 1;
		if (waited > (uint64_t)timeout_ms * 1000000u)
			return 0;
		uint64_t gap_ms = waited / 50 / 1000000u;
		bench_sleep_ms(gap_ms < 1 ? 1 : gap_ms > 100 ? 100 : (unsigned)gap_ms);
	}
}

/* Wait for one byte on fd for up to timeout_ms; false on timeout or end of file. */
static bool read_byte(int fd, unsigned timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char c;

	return poll(&p, 1, (int)timeout_ms) == 1 && read(fd, &c, 1) == 1;
}

/* ---- (b) a connection holding many leases closes ---- */

/* In the child: hold o->count leases with their fds, as a working process would, say so,
 * and exit when told: the kernel then closes the connection and every fd at once. */
static void close_child(const struct bench_opts *o, int ready_fd, int go_fd)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	struct p2pbuf *conn = bench_connect(o->socket);
	for (unsigned i = 0; i < o->count; i++) {
		uint64_t id;
		bench_export(conn, o, &id);
	}
	if (write(ready_fd, "r", 1) != 1 || !read_byte(go_fd, 600000))
		_exit(1);
	_exit(0);
}

int bench_close(const struct bench_opts *o)
{
	int ready[2], go[2];

	bench_raise_nofile();
	int before = bench_count_fds(o->pid);
	if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0)
		bench_die("pipe: %s", strerror(errno));
	pid_t child = fork();
	if (child < 0)
		bench_die("fork: %s", strerror(errno));
	if (child == 0)
		close_child(o, ready[1], go[0]);
	close(ready[1]);
	if (!read_byte(ready[0], o->timeout_ms))
		bench_die("the holder could not export %u leases (see above)", o->count);
	int held = bench_count_fds(o->pid);
	uint64_t t0 = bench_now_ns();
	if (write(go[1], "g", 1) != 1)
		bench_die("pipe: %s", strerror(errno));
	waitpid(child, NULL, 0);
	uint64_t exited = bench_now_ns() - t0;
	uint64_t settled = wait_fds_at_most(o->pid, before, t0, o->timeout_ms);
	bench_result("leases", "%u", o->count);
	bench_result("daemon_fds", "%d %d", before, held);
	bench_result("holder_exit_ms", "%.1f", MS(exited));
	if (settled)
		bench_result("close_ms", "%.1f", MS(settled));
	else {
		bench_result("close_ms", "timeout %u", o->timeout_ms);
		bench_result("fds_left", "%d", bench_count_fds(o->pid) - before);
	}
	return 0;
}

/* ---- leases tracked by id, for the event-driven measurements ---- */

struct track {
	uint64_t *ids; /* sorted */
	size_t n;
	bool *ended;
	atomic_size_t ended_n;
	uint64_t t0_ns, last_ns; /* last_ns: when the last one ended */
	unsigned reasons[16];
};

static int compare_id(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void track_init(struct track *t, uint64_t *ids, size_t n)
{
	*t = (struct track){ .ids = ids, .n = n, .ended = calloc(n ? n : 1, sizeof(bool)) };
	if (!t->ended)
		bench_die("out of memory");
	qsort(ids, n, sizeof(*ids), compare_id);
}

static long track_find(const struct track *t, uint64_t id)
{
	const uint64_t *p = bsearch(&id, t->ids, t->n, sizeof(id), compare_id);

	return p ? p - t->ids : -1;
}

/* A LeaseRevoked for one of ours: count it once, with its reason and time. */
static void track_revoked(struct track *t, const struct p2pbuf_event *ev)
{
	long i = track_find(t, ev->lease_id);

	if (i < 0 || t->ended[i])
		return;
	t->ended[i] = true;
	t->reasons[ev->reason < 16 ? ev->reason : 0]++;
	t->last_ns = bench_now_ns();
	atomic_fetch_add(&t->ended_n, 1);
}

static void report_reasons(const struct track *t)
{
	char buf[256] = "";
	size_t len = 0;

	for (int r = 0; r < 16; r++)
		if (t->reasons[r])
			len += (size_t)snprintf(
			    buf + len, sizeof(buf) - len, "%s%s=%u", len ? "," : "",
			    p2pbuf_reason_name((enum p2pbuf_reason)r), t->reasons[r]);
	bench_result("reasons", "%s", len ? buf : "none");
}

/* Dispatch conn's events until done() or the timeout; exits if the connection breaks. */
static void pump_until(struct p2pbuf *conn, const struct track *t, uint64_t until_ns)
{
	struct pollfd p = { .fd = p2pbuf_get_fd(conn), .events = POLLIN };

	while (atomic_load(&t->ended_n) < t->n && bench_now_ns() < until_ns) {
		if (!p2pbuf_pending(conn))
			poll(&p, 1, 50);
		int r = p2pbuf_dispatch(conn);
		if (r < 0)
			bench_die("events: %s", strerror(-r));
	}
}

/* ---- (c) a reset fans out to many leases ---- */

/* A connection whose events end tracked leases, dispatched on a thread of its own until
 * every one ended or until_ns. */
struct observer {
	struct p2pbuf *conn;
	struct track t;
	uint64_t until_ns;
};

static void *observer_run(void *arg)
{
	struct observer *ob = arg;

	pump_until(ob->conn, &ob->t, ob->until_ns);
	return NULL;
}

/* The holder of the reset's leases watches its own events. */
struct reset_holder {
	struct observer ob;
	int *fds; /* by index in ob.t.ids */
};

/* The holder closes its fd when told, as a well-behaved one does; a reset ends the lease
 * without waiting for it. */
static void reset_event(struct p2pbuf *conn, const struct p2pbuf_event *ev, void *userdata)
{
	struct reset_holder *h = userdata;
	long i = ev->type == P2PBUF_EVENT_DEVICE_STATE ? -1 : track_find(&h->ob.t, ev->lease_id);

	if (i >= 0 && h->fds[i] >= 0) {
		close(h->fds[i]);
		h->fds[i] = -1;
	}
	if (ev->type == P2PBUF_EVENT_LEASE_REVOKED)
		track_revoked(&h->ob.t, ev);
}

/* Export o->count leases on conn, keeping the fds; their ids go to ids (sorted later). */
static int *export_many(struct p2pbuf *conn, const struct bench_opts *o, uint64_t *ids)
{
	struct {
		uint64_t id;
		int fd;
	} *pairs = calloc(o->count ? o->count : 1, sizeof(*pairs));
	int *fds = calloc(o->count ? o->count : 1, sizeof(int));

	if (!pairs || !fds)
		bench_die("out of memory");
	for (unsigned i = 0; i < o->count; i++)
		pairs[i].fd = bench_export(conn, o, &pairs[i].id);
	/* Sorted by id, as the tracker keeps ids, so that fds[i] belongs to ids[i]. */
	qsort(pairs, o->count, sizeof(*pairs), compare_id);
	for (unsigned i = 0; i < o->count; i++) {
		ids[i] = pairs[i].id;
		fds[i] = pairs[i].fd;
	}
	free(pairs);
	return fds;
}

int bench_reset(const struct bench_opts *o)
{
	struct reset_holder h = { 0 };
	uint64_t *ids = calloc(o->count ? o->count : 1, sizeof(*ids));
	pthread_t tid;

	if (!ids)
		bench_die("out of memory");
	bench_raise_nofile();
	h.ob.conn = bench_connect(o->socket);
	int r = p2pbuf_subscribe(h.ob.conn, false);
	if (r < 0)
		bench_die("subscribe: %s", strerror(-r));
	h.fds = export_many(h.ob.conn, o, ids);
	track_init(&h.ob.t, ids, o->count);
	p2pbuf_set_event_handler(h.ob.conn, reset_event, &h);
	struct p2pbuf *admin = bench_connect(o->socket);
	uint32_t gen0 = bench_generation(admin, o->device);
	h.ob.until_ns = bench_now_ns() + (uint64_t)o->timeout_ms * 1000000u;
	if (pthread_create(&tid, NULL, observer_run, &h.ob) != 0)
		bench_die("pthread_create failed");
	uint64_t cpu0 = o->pid > 0 ? bench_cpu_ns(o->pid) : 0;
	uint64_t t0 = bench_now_ns();
	r = p2pbuf_reset(admin, o->device);
	uint64_t returned = bench_now_ns() - t0;
	if (r < 0)
		bench_die("reset %s: %s (%s)", o->device, strerror(-r), p2pbuf_last_message(admin));
	pthread_join(tid, NULL);
	uint64_t cpu = o->pid > 0 ? bench_cpu_ns(o->pid) - cpu0 : 0;
	bench_result("leases", "%u", o->count);
	bench_result("reset_call_ms", "%.1f", MS(returned));
	if (o->pid > 0)
		bench_result("server_cpu_ms", "%.1f", MS(cpu));
	bench_result("revoked", "%zu", atomic_load(&h.ob.t.ended_n));
	if (atomic_load(&h.ob.t.ended_n) == h.ob.t.n)
		bench_result("last_revoked_ms", "%.1f", MS(h.ob.t.last_ns - t0));
	else
		bench_result("last_revoked_ms", "timeout %u", o->timeout_ms);
	report_reasons(&h.ob.t);
	bench_result("generation", "%u %u", gen0, bench_generation(admin, o->device));
	p2pbuf_disconnect(admin);
	p2pbuf_disconnect(h.ob.conn);
	return 0;
}

/* ---- (d) cooperative holders told to let go ---- */

struct holder {
	struct p2pbuf *conn;
	uint64_t id;
	int fd;
	bool told, released;
	uint64_t told_ns;
};

struct holder_group {
	pthread_t tid;
	struct holder *h;
	size_t n;
	atomic_bool *stop;
};

static void holder_event(struct p2pbuf *conn, const struct p2pbuf_event *ev, void *userdata)
{
	struct holder *h = userdata;

	if (ev->type == P2PBUF_EVENT_LEASE_REVOKING && ev->lease_id == h->id && !h->told) {
		h->told = true;
		h->told_ns = bench_now_ns();
	}
	if (ev->type == P2PBUF_EVENT_LEASE_REVOKED && ev->lease_id == h->id && h->fd >= 0) {
		/* Ended before we let go (a device cycle): the buffer is dead; drop it. */
		close(h->fd);
		h->fd = -1;
		h->released = true;
	}
}

/* What a cooperative holder does when told: close its fd, then release, at once. The
 * release is not made inside the callback: the library is not re-entered from it. */
static void holder_let_go(struct holder *h)
{
	int r = p2pbuf_lease_release(h->conn, h->id, h->fd);

	h->fd = -1;
	h->released = true;
	/* -ENOENT: the lease ended meanwhile (a device cycle got there first). */
	if (r < 0 && r != -ENOENT)
		bench_die("release %" PRIu64 ": %s (%s)", h->id, strerror(-r),
			  p2pbuf_last_message(h->conn));
}

/* Serve one holder whose connection is readable (or has events queued by its last call). */
static void holder_serve(struct holder *h)
{
	do {
		if (p2pbuf_dispatch(h->conn) < 0)
			bench_die("holder %" PRIu64 ": connection lost", h->id);
		if (h->told && !h->released)
			holder_let_go(h);
	} while (p2pbuf_pending(h->conn));
}

/* The group's connections in one epoll set: a wakeup costs what is ready, not a scan of
 * every connection the thread serves (poll of 125 fds was most of the holders' time, on the
 * CPU they share with the daemon). */
static void *holder_run(void *arg)
{
	struct holder_group *g = arg;
	struct epoll_event ready[64];
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (ep < 0)
		bench_die("epoll_create1: %s", strerror(errno));
	for (size_t i = 0; i < g->n; i++) {
		struct epoll_event e = { .events = EPOLLIN, .data.ptr = &g->h[i] };
		if (epoll_ctl(ep, EPOLL_CTL_ADD, p2pbuf_get_fd(g->h[i].conn), &e) < 0)
			bench_die("epoll_ctl: %s", strerror(errno));
	}
	while (!atomic_load(g->stop)) {
		int n = epoll_wait(ep, ready, 64, 50);
		for (int i = 0; i < n; i++)
			holder_serve(ready[i].data.ptr);
	}
	close(ep);
	return NULL;
}

static void observer_event(struct p2pbuf *conn, const struct p2pbuf_event *ev, void *userdata)
{
	struct observer *ob = userdata;

	if (ev->type == P2PBUF_EVENT_LEASE_REVOKED)
		track_revoked(&ob->t, ev);
}

/* Tell every holder to let go: by one admin revoke each, or by a policy reload (SIGHUP) that
 * no longer allows their leases. */
static void letgo_trigger(const struct bench_opts *o, struct p2pbuf *admin, struct holder *hs)
{
	if (strcmp(o->mode, "reload") == 0) {
		if (rename(o->reload, o->policy) < 0)
			bench_die("rename %s %s: %s", o->reload, o->policy, strerror(errno));
		if (kill(o->pid, SIGHUP) < 0)
			bench_die("SIGHUP %d: %s", (int)o->pid, strerror(errno));
		return;
	}
	for (unsigned i = 0; i < o->count; i++) {
		int r = p2pbuf_revoke(admin, hs[i].id);
		if (r < 0 && r != -ENOENT)
			bench_die("revoke %" PRIu64 ": %s (%s)", hs[i].id, strerror(-r),
				  p2pbuf_last_message(admin));
	}
}

static struct holder *holders_open(const struct bench_opts *o, uint64_t *ids)
{
	struct holder *hs = calloc(o->count ? o->count : 1, sizeof(*hs));

	if (!hs)
		bench_die("out of memory");
	for (unsigned i = 0; i < o->count; i++) {
		hs[i].conn = bench_connect(o->socket);
		hs[i].fd = bench_export(hs[i].conn, o, &hs[i].id);
		ids[i] = hs[i].id;
		p2pbuf_set_event_handler(hs[i].conn, holder_event, &hs[i]);
	}
	return hs;
}

static struct holder_group *groups_start(const struct bench_opts *o, struct holder *hs,
					 atomic_bool *stop)
{
	unsigned k = o->threads ? o->threads : 1;
	struct holder_group *gs = calloc(k, sizeof(*gs));

	if (!gs)
		bench_die("out of memory");
	for (unsigned i = 0; i < k; i++) {
		size_t from = (size_t)o->count * i / k, to = (size_t)o->count * (i + 1) / k;
		gs[i] = (struct holder_group){ .h = hs + from, .n = to - from, .stop = stop };
		if (pthread_create(&gs[i].tid, NULL, holder_run, &gs[i]) != 0)
			bench_die("pthread_create failed");
	}
	return gs;
}

static uint64_t last_told(const struct holder *hs, unsigned n, unsigned *ret_told)
{
	uint64_t last = 0;

	*ret_told = 0;
	for (unsigned i = 0; i < n; i++)
		if (hs[i].told) {
			(*ret_told)++;
			last = hs[i].told_ns > last ? hs[i].told_ns : last;
		}
	return last;
}

static void letgo_report(const struct bench_opts *o, struct observer *ob, struct holder *hs,
			 uint64_t t0, uint32_t gen0, uint32_t gen1)
{
	unsigned told;
	uint64_t last = last_told(hs, o->count, &told);

	bench_result("holders", "%u", o->count);
	bench_result("told", "%u", told);
	if (told)
		bench_result("last_told_ms", "%.1f", MS(last - t0));
	bench_result("ended", "%zu", atomic_load(&ob->t.ended_n));
	if (atomic_load(&ob->t.ended_n) == ob->t.n)
		bench_result("all_ended_ms", "%.1f", MS(ob->t.last_ns - t0));
	else
		bench_result("all_ended_ms", "timeout %u", o->timeout_ms);
	report_reasons(&ob->t);
	bench_result("generation", "%u %u", gen0, gen1);
	bench_result("cycled", "%s", gen1 != gen0 ? "yes" : "no");
}

int bench_letgo(const struct bench_opts *o)
{
	struct observer ob = { 0 };
	uint64_t *ids = calloc(o->count ? o->count : 1, sizeof(*ids));
	atomic_bool stop = false;
	pthread_t otid;

	if (!ids)
		bench_die("out of memory");
	bench_raise_nofile();
	ob.conn = bench_connect(o->socket);
	int r = p2pbuf_subscribe(ob.conn, true);
	if (r < 0)
		bench_die("subscribe: %s", strerror(-r));
	p2pbuf_set_event_handler(ob.conn, observer_event, &ob);
	struct p2pbuf *admin = bench_connect(o->socket);
	uint32_t gen0 = bench_generation(admin, o->device);
	struct holder *hs = holders_open(o, ids);
	track_init(&ob.t, ids, o->count);
	struct holder_group *gs = groups_start(o, hs, &stop);
	ob.until_ns = bench_now_ns() + (uint64_t)o->timeout_ms * 1000000u;
	if (pthread_create(&otid, NULL, observer_run, &ob) != 0)
		bench_die("pthread_create failed");
	uint64_t cpu0 = bench_cpu_ns(o->pid);
	uint64_t t0 = bench_now_ns();
	letgo_trigger(o, admin, hs);
	pthread_join(otid, NULL);
	uint64_t cpu = bench_cpu_ns(o->pid) - cpu0;
	atomic_store(&stop, true);
	for (unsigned i = 0; i < (o->threads ? o->threads : 1); i++)
		pthread_join(gs[i].tid, NULL);
	/* A cycle, if one was forced, may still be running: its end is what the count shows. */
	bench_sleep_ms(200);
	letgo_report(o, &ob, hs, t0, gen0, bench_generation(admin, o->device));
	bench_result("server_cpu_ms", "%.1f", MS(cpu));
	for (unsigned i = 0; i < o->count; i++)
		p2pbuf_disconnect(hs[i].conn);
	p2pbuf_disconnect(admin);
	p2pbuf_disconnect(ob.conn);
	return 0;
}

/* ---- (f) memory per lease, up to the fd limit ---- */

static bool checkpoint(unsigned n)
{
	/* 1, 2, 5 per decade from 1,000: enough points to see whether memory or time per
	 * lease grows. */
	for (unsigned d = 1000; d && d <= n; d *= 10)
		if (n == d || n == 2 * d || n == 5 * d)
			return true;
	return false;
}

int bench_leases(const struct bench_opts *o)
{
	struct p2pbuf *conn = bench_connect(o->socket);
	struct p2pbuf_range range = { 0, o->length };
	uint64_t t0 = bench_now_ns(), deadline = t0 + (uint64_t)(o->seconds * 1e9), last = t0;
	long rss0 = bench_rss_kib(o->pid), kib = rss0;
	char why[400] = "";
	unsigned n = 0, last_n = 0;

	bench_result("daemon_nofile", "%ld", bench_nofile_limit(o->pid));
	bench_result("rss_idle_kib", "%ld", rss0);
	for (; n < o->count && !why[0]; n++) {
		uint64_t id, size;
		int fd = p2pbuf_export(conn, o->device, o->bar, &range, 1, NULL, &id, &size);
		if (fd < 0) {
			snprintf(why, sizeof(why), "export failed: %s (%s)", strerror(-fd),
				 p2pbuf_last_message(conn));
			break;
		}
		/* The daemon keeps its copy and the lease; ours would only use up our limit. */
		close(fd);
		if (checkpoint(n + 1)) {
			uint64_t now = bench_now_ns();
			kib = bench_rss_kib(o->pid);
			bench_result("at", "%u rss_kib %ld bytes_per_lease %.0f export_us %.1f",
				     n + 1, kib, (double)(kib - rss0) * 1024 / (n + 1),
				     (double)(now - last) / 1e3 / (n + 1 - last_n));
			last = now;
			last_n = n + 1;
		}
		if (bench_now_ns() > deadline)
			snprintf(why, sizeof(why), "time limit of the bench (%.0f s)", o->seconds);
	}
	if (!why[0])
		snprintf(why, sizeof(why), "count limit of the bench (%u)", o->count);
	kib = bench_rss_kib(o->pid);
	bench_result("leases", "%u", n);
	bench_result("stopped", "%s", why);
	bench_result("rss_kib", "%ld", kib);
	bench_result("bytes_per_lease", "%.0f", n ? (double)(kib - rss0) * 1024 / n : 0.0);
	bench_result("daemon_fds", "%d", bench_count_fds(o->pid));
	p2pbuf_disconnect(conn);
	return 0;
}

/* ---- (g) start-up, and waiting for a server ---- */

/* Connect (Hello answered) as soon as the server lets us; the ns waited, or 0 on timeout. */
static uint64_t until_ready(const char *socket, pid_t pid, uint64_t t0, unsigned timeout_ms)
{
	for (;;) {
		struct p2pbuf *conn;
		if (p2pbuf_connect(socket, &conn) == 0) {
			uint64_t ns = bench_now_ns() - t0;
			p2pbuf_disconnect(conn);
			return ns;
		}
		if (pid > 0 && waitpid(pid, NULL, WNOHANG) == pid)
			bench_die("the server (pid %d) exited before it was ready", (int)pid);
		if (pid > 0 && kill(pid, 0) < 0 && errno == ESRCH)
			bench_die("the server (pid %d) is gone", (int)pid);
		if (bench_now_ns() - t0 > (uint64_t)timeout_ms * 1000000u)
			return 0;
		bench_sleep_ms(1);
	}
}

int bench_wait(const struct bench_opts *o)
{
	if (!until_ready(o->socket, o->pid, bench_now_ns(), o->timeout_ms))
		bench_die("%s: no server answered Hello within %u ms", o->socket, o->timeout_ms);
	return 0;
}

static void stop_child(pid_t pid)
{
	kill(pid, SIGTERM);
	for (int t = 0; t < 10000; t += 10) {
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return;
		bench_sleep_ms(10);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* One cold start of o->argv: from fork to the first Hello answered. */
static uint64_t cold_start(const struct bench_opts *o)
{
	uint64_t t0 = bench_now_ns();
	pid_t pid = fork();

	if (pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		execv(o->argv[0], o->argv);
		_exit(127);
	}
	uint64_t ns = until_ready(o->socket, pid, t0, o->timeout_ms);
	stop_child(pid);
	if (!ns)
		bench_die("%s did not answer Hello within %u ms", o->argv[0], o->timeout_ms);
	return ns;
}

int bench_coldstart(const struct bench_opts *o)
{
	unsigned k = o->rounds ? o->rounds : 1;
	uint64_t *ns = calloc(k, sizeof(*ns));

	if (!ns || !o->argv || !o->argv[0])
		bench_die("coldstart needs -- DAEMON ARGS...");
	for (unsigned i = 0; i < k; i++)
		ns[i] = cold_start(o);
	bench_sort(ns, k);
	bench_result("rounds", "%u", k);
	bench_result("ready_ms", "%.1f", MS(ns[k / 2]));
	free(ns);
	return 0;
}
