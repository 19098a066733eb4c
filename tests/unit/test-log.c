/* Unit tests for the log rate limiter, on a clock the test drives. */
#include <check.h>
#include <stdlib.h>

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

int main(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("ratelimit");

	tcase_add_test(tc, test_burst_then_suppressed);
	tcase_add_test(tc, test_clock_going_back);
	tcase_add_test(tc, test_steady_rate_under_burst);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
