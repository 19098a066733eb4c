/* The hostile suite's shared pieces: the daemon under attack, the good client's figures, and
 * the cases (cases.c), registered by hostile_add_cases(). */
#pragma once

#include <check.h>
#include <stdbool.h>
#include <stdint.h>

#include "harness.h"

/* The good client must never wait longer than this for one call. */
#define GOOD_MAX_MS 250
#define GOOD_MAX_MS_INSTRUMENTED 1000
/* The daemon's RSS at the end may exceed its baseline by this much (KiB): allocator slack
 * and the page cache of /proc walks, not anything a client left behind. */
#define RSS_SLACK_KB 1024

/* Attackers' identities: users of group ATTACK_GID have rules; NOBODY_GID users have none. */
#define ATTACK_GID 4242
#define NOBODY_GID 4243

struct good_stats {
	uint64_t ops;
	uint64_t failures;
	int64_t worst_ns;
	char worst_op[16];
	char first_failure[256];
};

extern struct harness h;
/* The policy (a printf format given the suite's uid, the good client's). */
extern const char hostile_policy[];

/* Register every case on tc; cases that must act as other users only when as_root, counted
 * in *ret_not_run otherwise. The last case checks the good client and the daemon's
 * baseline. */
void hostile_add_cases(TCase *tc, bool as_root, unsigned *ret_not_run);

/* Stop the good client and collect its figures. 0, or -EIO if it did not report. */
int good_client_finish(struct good_stats *st);
bool wait_for_good_ops(unsigned n, int timeout_ms);
long daemon_rss_kb(void);
long rss_baseline(void);
/* Whether the daemon runs under a sanitizer or a wrapper such as valgrind, whose own memory
 * (shadow, quarantine) makes its RSS say nothing about the daemon's. */
bool daemon_instrumented(void);
