/* The hostile-input suite: one real p2pbufd on simulated devices, attacked case by case over
 * its Unix socket (framing, protocol state, every request's fields, authorization, resources,
 * policy files), while a good client in its own process keeps exporting and releasing through
 * libp2pbuf. Each case asserts the precise error, or that only the attacking client was
 * dropped; the good client must see no failure and no call slower than GOOD_MAX_MS; at the end
 * the daemon's fds are back at their baseline and its anonymous RSS (heap and stacks,
 * not the shared code it has paged in since) within RSS_SLACK_KB of it.
 *
 * Attackers run as other uids (root only: the test setuid()s in each case's own process), so
 * that per-user limits hit them and not the good client; without root those cases are not
 * run, and the summary says how many. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <protobuf-c/protobuf-c.h>

#include "harness.h"
#include "hostile.h"
#include "p2pbuf.h"
#include "p2pbuf.pb-c.h"

struct harness h;
static pid_t good_pid;
static int good_stop = -1;    /* the good client stops when this is written to */
static int good_results = -1; /* and writes its struct good_stats here */
static long rss_baseline_kb;

/* ---- the good client ---- */

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void good_note(struct good_stats *st, int64_t t0, int r, const struct p2pbuf *c,
		      const char *what)
{
	int64_t dt = now_ns() - t0;

	st->ops++;
	if (dt > st->worst_ns) {
		st->worst_ns = dt;
		snprintf(st->worst_op, sizeof(st->worst_op), "%s", what);
	}
	if (r < 0 && st->failures++ == 0)
		snprintf(st->first_failure, sizeof(st->first_failure), "%s: %s: %s", what,
			 strerror(-r), c ? p2pbuf_last_message(c) : "");
}

/* Export one page of sim1 and release it, over and over, on one connection, until told to
 * stop; then report. Every call is timed. */
static void good_client(int stop_fd, int results_fd)
{
	struct good_stats st = {};
	struct p2pbuf *c = NULL;
	struct pollfd p = { .fd = stop_fd, .events = POLLIN };
	int64_t t0 = now_ns();
	int r = p2pbuf_connect(h.socket, &c);

	good_note(&st, t0, r, NULL, "connect");
	for (unsigned i = 0; r == 0 && poll(&p, 1, 0) == 0; i++) {
		struct p2pbuf_range range = { (i % 64) * 0x1000, 0x1000 };
		uint64_t id, size;
		t0 = now_ns();
		int fd = p2pbuf_export(c, "sim1", 0, &range, 1, "good", &id, &size);
		good_note(&st, t0, fd < 0 ? fd : 0, c, "export");
		if (fd < 0)
			continue;
		t0 = now_ns();
		good_note(&st, t0, p2pbuf_lease_release(c, id, fd), c, "release");
		/* Events about its own leases (none are expected) are taken, not left queued. */
		p2pbuf_dispatch(c);
	}
	p2pbuf_disconnect(c);
	if (write(results_fd, &st, sizeof(st)) != (ssize_t)sizeof(st))
		_exit(3);
	_exit(0);
}

static void start_good_client(void)
{
	int stop[2], res[2];

	ck_assert_int_eq(pipe2(stop, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(res, O_CLOEXEC), 0);
	good_pid = fork();
	ck_assert_int_ge(good_pid, 0);
	if (good_pid == 0) {
		close(stop[1]);
		close(res[0]);
		good_client(stop[0], res[1]);
	}
	close(stop[0]);
	close(res[1]);
	good_stop = stop[1];
	good_results = res[0];
}

int good_client_finish(struct good_stats *st)
{
	int status = 0;

	struct pollfd p = { .fd = good_results, .events = POLLIN };
	ssize_t n = -1;

	/* A byte, not a close: the suite's parent process holds this pipe open too (the final
	 * case runs in a child of it). */
	if (write(good_stop, "", 1) != 1)
		return -errno;
	close(good_stop);
	good_stop = -1;
	/* A good client stuck in a call is a failure to report, not a hang of the suite. */
	if (poll(&p, 1, 10000) == 1)
		n = read(good_results, st, sizeof(*st));
	else
		kill(good_pid, SIGKILL);
	/* Only the suite's parent can reap it; a case that stops it has its figures. */
	if (waitpid(good_pid, &status, 0) == good_pid &&
	    !(WIFEXITED(status) && !WEXITSTATUS(status)))
		return -EIO;
	return n == (ssize_t)sizeof(*st) ? 0 : -EIO;
}

/* ---- the daemon ---- */

long daemon_rss_kb(void)
{
	return harness_anon_rss_kb(h.pid);
}

static bool instrumented;

/* Looked up once, as the suite's user: an attacking case may not read the daemon's maps. */
static bool look_for_instruments(void)
{
	char path[64], line[512];
	bool found = false;

	if (getenv("P2PBUF_TEST_WRAPPER") && *getenv("P2PBUF_TEST_WRAPPER"))
		return true;
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)h.pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found =
		    strstr(line, "libasan") || strstr(line, "libubsan") || strstr(line, "libtsan");
	fclose(f);
	return found;
}

bool daemon_instrumented(void)
{
	return instrumented;
}

long rss_baseline(void)
{
	return rss_baseline_kb;
}

static const char *const daemon_args[] = {
	"--max-clients",
	"96",
	"--max-clients-per-user",
	"8",
	"--max-leases",
	"512",
	"--max-leases-per-user",
	"64",
	"--max-leases-per-client",
	"32",
	"--hello-timeout",
	"300ms",
	"--max-queued-bytes",
	"2M",
	"--socket-mode",
	"0666",
	NULL,
};

static void suite_setup(void)
{
	harness_start(&h, hostile_policy, daemon_args);
	/* Attackers run as other users: they must reach the socket. */
	ck_assert_int_eq(chmod(h.dir, 0755), 0);
	start_good_client();
	/* The baseline is taken with the good client at work, after it has done some. */
	ck_assert(wait_for_good_ops(20, 5000));
	rss_baseline_kb = daemon_rss_kb();
	instrumented = look_for_instruments();
	ck_assert_int_gt(rss_baseline_kb, 0);
}

static void suite_teardown(void)
{
	/* The final case stopped it already, unless the suite failed before. */
	kill(good_pid, SIGKILL);
	waitpid(good_pid, NULL, 0);
	harness_stop(&h);
}

/* Whether the good client has made n calls by timeout_ms: it shares its count through the
 * daemon's lease ids only, so read the daemon's view instead: leases granted so far. */
bool wait_for_good_ops(unsigned n, int timeout_ms)
{
	struct p2pbuf *c = NULL;
	bool ok = false;

	if (p2pbuf_connect(h.socket, &c) < 0)
		return false;
	for (int64_t end = now_ns() + (int64_t)timeout_ms * 1000000; now_ns() < end;) {
		struct p2pbuf_range r = { 0x80000, 0x1000 };
		uint64_t id = 0, size;
		/* Lease ids are sequential: the next one tells how many were granted. */
		int fd = p2pbuf_export(c, "sim1", 0, &r, 1, "probe", &id, &size);
		if (fd >= 0)
			p2pbuf_lease_release(c, id, fd);
		if (id >= n) {
			ok = true;
			break;
		}
		struct timespec ts = { 0, 10 * 1000000 };
		nanosleep(&ts, NULL);
	}
	p2pbuf_disconnect(c);
	return ok;
}

int main(void)
{
	Suite *s = suite_create("hostile");

	signal(SIGPIPE, SIG_IGN); /* a dropped connection is an error return, not the end */
	TCase *tc = tcase_create("hostile");
	unsigned not_run = 0;

	tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
	tcase_set_timeout(tc, 60);
	hostile_add_cases(tc, getuid() == 0, &not_run);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int run = srunner_ntests_run(sr), failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	printf("%d passed, %d failed", run - failed, failed);
	if (not_run)
		printf(" (%u cases need root to act as other users and were not run)", not_run);
	printf("\n");
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
