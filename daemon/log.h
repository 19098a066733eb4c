/* Logging. Under systemd (stderr is the journal) and wherever stderr is not a terminal, each
 * line carries an sd-daemon priority prefix, which journald parses; on a terminal, lines are
 * plain text with a timestamp and the level. Only the top layers log (server for
 * connections, audit for the audit trail, main); lower modules return errors and messages. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>

/* Messages above this priority are dropped (LOG_INFO unless --verbose/--quiet). */
extern int log_max_priority;

/* Pick the format for stderr (call once, early). */
void log_init(void);

/* Whether stderr is connected to the journal (systemd's JOURNAL_STREAM names it). */
bool log_to_journal(void);

void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* From now on, the calling thread's lines on stderr (not on a terminal) wait in a buffer
 * until log_flush(), which the event loop calls at the end of each turn, or until the buffer
 * is full. log_uncork() flushes and writes each line at once again. */
void log_cork(void);
void log_flush(void);
void log_uncork(void);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)

/* A limit on how often one kind of line is logged: at most burst lines per interval_ms; the
 * rest are counted, and the count is told with the next line let through. The state lives
 * with the module whose event it is (the server's connections, the audit trail). */
struct log_ratelimit {
	unsigned interval_ms;
	unsigned burst;
	int64_t window_start_ms;
	unsigned used;	     /* lines let through in this window */
	unsigned suppressed; /* lines dropped since the last one let through */
};

#define LOG_RATELIMIT_INIT(interval, n)                                                            \
	{                                                                                          \
		.interval_ms = (interval), .burst = (n)                                            \
	}

/* Whether a line may be logged at now_ms; when it may, *ret_suppressed is how many were
 * dropped before it (and the count starts again). Pure, for tests with their own clock. */
bool log_ratelimit_allow(struct log_ratelimit *rl, int64_t now_ms, unsigned *ret_suppressed);

/* log_msg() under rl, on CLOCK_MONOTONIC; a line that follows suppressed ones says how many. */
void log_ratelimited(struct log_ratelimit *rl, int priority, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
