/* Unit tests for the log rate limiter, on a clock the test drives. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

START_TEST(test_burst_then_suppressed)
{
	struct log_ratelimit rl = LOG_RATELIMIT_INIT(1000, 3);
	unsigned suppressed = 99;

	for (int i = 0; i < 3; i++) {
		ck_assert(log_ratelimit_allow(&rl, 5000 + i, &suppressed));
		ck_assert_uint_eq(suppressed, 0);
	}
	for (int i = 0; i < 10; i++)
		ck_assert(!log_ratelimit_allow(&rl, 5100 + i, &suppressed));
	/* The window is still open at 5999: nothing more. */
	ck_assert(!log_ratelimit_allow(&rl, 5999, &suppressed));
	/* The next window lets a line through and tells what was dropped, once. */
	ck_assert(log_ratelimit_allow(&rl, 6000, &suppressed));
	ck_assert_uint_eq(suppressed, 11);
	ck_assert(log_ratelimit_allow(&rl, 6001, &suppressed));
	ck_assert_uint_eq(suppressed, 0);
}
END_TEST

START_TEST(test_clock_going_back)
{
	struct log_ratelimit rl = LOG_RATELIMIT_INIT(1000, 1);
	unsigned suppressed;

	ck_assert(log_ratelimit_allow(&rl, 10000, &suppressed));
	ck_assert(!log_ratelimit_allow(&rl, 10001, &suppressed));
	/* A clock that steps back must not silence the log for the length of the step. */
	ck_assert(log_ratelimit_allow(&rl, 500, &suppressed));
	ck_assert_uint_eq(suppressed, 1);
}
END_TEST

START_TEST(test_steady_rate_under_burst)
{
	struct log_ratelimit rl = LOG_RATELIMIT_INIT(100, 2);
	unsigned suppressed;

	for (int64_t t = 0; t < 10000; t += 60)
		ck_assert(log_ratelimit_allow(&rl, t, &suppressed));
}
END_TEST

/* stderr redirected to a fresh temporary file; returns its fd (the test reads it). */
static int capture_stderr(void)
{
	char path[] = "/tmp/p2pbuf-test-log-XXXXXX";
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	unlink(path);
	ck_assert_int_eq(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	return fd;
}

static size_t captured(int fd, char *buf, size_t len)
{
	ssize_t n = pread(fd, buf, len - 1, 0);

	ck_assert_int_ge(n, 0);
	buf[n] = '\0';
	return (size_t)n;
}

/* Corked lines wait for the end of the loop's turn, then arrive whole and in order; more
 * than the buffer holds is written as it fills, nothing lost. */
START_TEST(test_cork_flushes_whole_lines_in_order)
{
	int saved = dup(STDERR_FILENO), fd = capture_stderr();
	static char buf[1 << 20];

	log_init();
	log_cork();
	log_info("first %d", 1);
	log_notice("second");
	ck_assert_uint_eq(captured(fd, buf, sizeof(buf)), 0);
	log_flush();
	captured(fd, buf, sizeof(buf));
	ck_assert_str_eq(buf, "<6>first 1\n<5>second\n");
	for (int i = 0; i < 5000; i++)
		log_info("line %04d of a long turn", i);
	log_uncork();
	log_info("after");
	size_t n = captured(fd, buf, sizeof(buf));
	char *p = buf + strlen("<6>first 1\n<5>second\n");
	for (int i = 0; i < 5000; i++) {
		char want[64];
		int k = snprintf(want, sizeof(want), "<6>line %04d of a long turn\n", i);
		ck_assert_msg(strncmp(p, want, (size_t)k) == 0, "line %d: %.40s", i, p);
		p += k;
	}
	ck_assert_str_eq(p, "<6>after\n");
	ck_assert_uint_eq((size_t)(p - buf) + strlen("<6>after\n"), n);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(fd);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("ratelimit");

	tcase_add_test(tc, test_burst_then_suppressed);
	tcase_add_test(tc, test_clock_going_back);
	tcase_add_test(tc, test_steady_rate_under_burst);
	tcase_add_test(tc, test_cork_flushes_whole_lines_in_order);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
