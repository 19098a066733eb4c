/* Churn: for CHURN_SECONDS of wall time, CHURN_CLIENTS clients (each its own process) come
 * and go against one p2pbufd: most connect, export a few leases, hold them, release some and
 * drop the rest with the connection; some are killed in the middle of a request; some flood
 * requests and never read; some leave with buffers still held and close them later. Every
 * request of a well-behaved client must be answered without error; at the end the daemon has
 * exactly the fds it started with and its anonymous RSS is within CHURN_RSS_PCT of what it
 * was once warm. Figures are printed. Run by `make check-churn` (and .ci/run), not by make check.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "harness.h"
#include "p2pbuf.h"

#define CHURN_SECONDS 60
#define CHURN_CLIENTS 1000
#define CHURN_PARALLEL 48
#define CHURN_RSS_PCT 10
#define WARM_CLIENTS 100 /* RSS is taken as the baseline after this many */

enum kind { GOOD, KILLED, SILENT, LINGER, N_KINDS };

/* What a client process reports on its pipe before it exits. */
struct report {
	unsigned requests;
	unsigned failures;
	int64_t worst_ns;
	char failure[160];
};

static struct harness h;

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void note(struct report *rp, int64_t t0, int r, struct p2pbuf *c, const char *what)
{
	int64_t dt = now_ns() - t0;

	rp->requests++;
	if (dt > rp->worst_ns)
		rp->worst_ns = dt;
	if (r < 0 && rp->failures++ == 0)
		snprintf(rp->failure, sizeof(rp->failure), "%s: %s: %s", what, strerror(-r),
			 c ? p2pbuf_last_message(c) : "");
}

/* Connect, export 1-8 pages, hold them a little, release half, disconnect with the rest. */
static void good_client(unsigned seed, struct report *rp)
{
	struct p2pbuf *c = NULL;
	int64_t t0 = now_ns();
	int r = p2pbuf_connect(h.socket, &c), fds[8];
	uint64_t ids[8], size;
	unsigned n = 1 + seed % 8;

	note(rp, t0, r, NULL, "connect");
	if (r < 0)
		return;
	for (unsigned i = 0; i < n; i++) {
		struct p2pbuf_range range = { ((seed * 8 + i) % 256) * 0x1000, 0x1000 };
		t0 = now_ns();
		fds[i] = p2pbuf_export(c, "sim1", 0, &range, 1, "churn", &ids[i], &size);
		note(rp, t0, fds[i] < 0 ? fds[i] : 0, c, "export");
	}
	sleep_ms((int)(seed % 20));
	for (unsigned i = 0; i < n; i += 2) {
		if (fds[i] < 0)
			continue;
		t0 = now_ns();
		note(rp, t0, p2pbuf_lease_release(c, ids[i], fds[i]), c, "release");
	}
	t0 = now_ns();
	struct p2pbuf_status st;
	r = p2pbuf_status(c, &st);
	note(rp, t0, r, c, "status");
	if (r == 0)
		p2pbuf_status_free(&st);
	p2pbuf_disconnect(c);
	for (unsigned i = 1; i < n; i += 2)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* Export in a loop until killed. */
static void killed_client(void)
{
	struct p2pbuf *c = NULL;

	if (p2pbuf_connect(h.socket, &c) < 0)
		_exit(0);
	for (unsigned i = 0;; i++) {
		struct p2pbuf_range range = { (i % 256) * 0x1000, 0x1000 };
		uint64_t id, size;
		int fd = p2pbuf_export(c, "sim1", 0, &range, 1, "doomed", &id, &size);
		if (fd >= 0)
			close(fd);
	}
}

/* Say Hello, then send Status requests without ever reading, until the daemon stops
 * reading (the socket stays full) or 2000 went out; hang up. */
static void silent_client(void)
{
	static const uint8_t status[] = { 0x08, 0x01, 0x8a, 0x01, 0x00 };
	int fd = harness_raw_connect(&h);

	if (fd < 0 || !harness_raw_hello(fd))
		_exit(0);
	for (int i = 0; i < 2000; i++) {
		if (send(fd, status, sizeof(status), MSG_NOSIGNAL | MSG_DONTWAIT) >= 0)
			continue;
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		if (errno != EAGAIN || poll(&p, 1, 100) == 0)
			break;
	}
	close(fd);
}

/* Export, disconnect while still holding the buffers (the leases linger), close them later. */
static void linger_client(unsigned seed, struct report *rp)
{
	struct p2pbuf *c = NULL;
	int fds[4];
	uint64_t id, size;
	int64_t t0 = now_ns();
	int r = p2pbuf_connect(h.socket, &c);

	note(rp, t0, r, NULL, "connect");
	if (r < 0)
		return;
	for (int i = 0; i < 4; i++) {
		struct p2pbuf_range range = { ((seed + (unsigned)i) % 256) * 0x1000, 0x1000 };
		t0 = now_ns();
		fds[i] = p2pbuf_export(c, "sim1", 0, &range, 1, "linger", &id, &size);
		note(rp, t0, fds[i] < 0 ? fds[i] : 0, c, "export");
	}
	p2pbuf_disconnect(c);
	sleep_ms(50 + (int)(seed % 100));
	for (int i = 0; i < 4; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

static enum kind kind_of(unsigned i)
{
	static const enum kind mix[10] = { GOOD,   GOOD,   GOOD,   GOOD,   GOOD,
					   KILLED, KILLED, SILENT, LINGER, GOOD };

	return mix[i % 10];
}

struct child {
	pid_t pid;
	int fd; /* its report, or -1 */
	enum kind kind;
	int64_t kill_at; /* KILLED: when */
};

static pid_t spawn(unsigned i, struct child *ch)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	ch->kind = kind_of(i);
	ch->pid = fork();
	if (ch->pid == 0) {
		struct report rp = {};
		close(p[0]);
		if (ch->kind == GOOD)
			good_client(i, &rp);
		else if (ch->kind == KILLED)
			killed_client();
		else if (ch->kind == SILENT)
			silent_client();
		else
			linger_client(i, &rp);
		_exit(write(p[1], &rp, sizeof(rp)) == (ssize_t)sizeof(rp) ? 0 : 1);
	}
	close(p[1]);
	ch->fd = p[0];
	ch->kill_at = now_ns() + (int64_t)(5 + i % 40) * 1000000;
	return ch->pid;
}

struct totals {
	unsigned clients[N_KINDS];
	unsigned requests, failures, unreported;
	int64_t worst_ns;
	char failure[160];
};

/* Reap child i if it has finished (or kill it when its time comes). */
static bool reap(struct child *ch, struct totals *t, bool force)
{
	int status;

	/* Past the end and its grace, anything still running is stuck: killed, and a good
	 * client then counts as unreported. */
	if (force || (ch->kind == KILLED && now_ns() >= ch->kill_at))
		kill(ch->pid, SIGKILL);
	pid_t r = waitpid(ch->pid, &status, force ? 0 : WNOHANG);
	if (r != ch->pid)
		return false;
	struct report rp = {};
	bool got = read(ch->fd, &rp, sizeof(rp)) == (ssize_t)sizeof(rp);
	close(ch->fd);
	t->clients[ch->kind]++;
	if (ch->kind == GOOD || ch->kind == LINGER) {
		t->unreported += !got;
		t->requests += rp.requests;
		t->failures += rp.failures;
		if (rp.worst_ns > t->worst_ns)
			t->worst_ns = rp.worst_ns;
		if (rp.failures && !t->failure[0])
			snprintf(t->failure, sizeof(t->failure), "%s", rp.failure);
	}
	return true;
}

START_TEST(churn)
{
	static const char *const args[] = { "--max-clients",
					    "1100",
					    "--max-clients-per-user",
					    "1100",
					    "--max-leases",
					    "8192",
					    "--max-leases-per-user",
					    "8192",
					    NULL };
	struct child kids[CHURN_PARALLEL];
	struct totals t = {};
	unsigned started = 0, live = 0;
	long rss_warm = -1, rss_max = 0;
	int64_t t0 = now_ns(), end = t0 + (int64_t)CHURN_SECONDS * 1000000000;
	int64_t gap = (int64_t)CHURN_SECONDS * 1000000000 / CHURN_CLIENTS;

	harness_start(&h, NULL, args);
	int fds0 = h.baseline_fds;
	/* One client started every gap, at most CHURN_PARALLEL at once, for the whole time. */
	while (now_ns() < end || live > 0) {
		for (unsigned k = 0; k < live;)
			if (reap(&kids[k], &t, now_ns() >= end + 20000000000LL))
				kids[k] = kids[--live];
			else
				k++;
		if (now_ns() < end && started < CHURN_CLIENTS &&
		    now_ns() >= t0 + (int64_t)started * gap && live < CHURN_PARALLEL) {
			ck_assert_int_gt(spawn(started, &kids[live]), 0);
			live++;
			started++;
		}
		if (started == WARM_CLIENTS && rss_warm < 0)
			rss_warm = harness_anon_rss_kb(h.pid);
		long rss = harness_anon_rss_kb(h.pid);
		if (rss > rss_max)
			rss_max = rss;
		sleep_ms(2);
	}
	bool fds_ok = harness_fds_settle(&h, 10000);
	long rss_end = harness_anon_rss_kb(h.pid);
	printf("churn: %u clients in %.1f s (%u good, %u killed mid-request, %u never reading, "
	       "%u left holding buffers)\n",
	       started, (double)(now_ns() - t0) / 1e9, t.clients[GOOD], t.clients[KILLED],
	       t.clients[SILENT], t.clients[LINGER]);
	printf("churn: %u requests of well-behaved clients, %u failed, %u clients unreported, "
	       "worst %.1f ms\n",
	       t.requests, t.failures, t.unreported, (double)t.worst_ns / 1e6);
	printf("churn: daemon fds %d at start, %d at the end; anonymous RSS %ld KiB warm, %ld KiB "
	       "at the "
	       "end, %ld KiB at most\n",
	       fds0, harness_count_fds(h.pid), rss_warm, rss_end, rss_max);
	fflush(stdout);
	ck_assert_uint_ge(started, CHURN_CLIENTS);
	ck_assert_msg(t.failures == 0, "%u requests failed; the first: %s", t.failures, t.failure);
	ck_assert_uint_eq(t.unreported, 0);
	ck_assert(fds_ok);
	ck_assert_msg(rss_end * 100 <= rss_warm * (100 + CHURN_RSS_PCT),
		      "RSS grew from %ld to %ld KiB", rss_warm, rss_end);
	harness_stop(&h);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("churn");
	TCase *tc = tcase_create("churn");

	signal(SIGPIPE, SIG_IGN);
	tcase_add_test(tc, churn);
	tcase_set_timeout(tc, CHURN_SECONDS + 120);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	printf("%d passed, %d failed\n", 1 - failed, failed);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
