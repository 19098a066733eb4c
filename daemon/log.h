/* Logging. Under systemd (stderr is the journal) and wherever stderr is not a terminal, each
 * line carries an sd-daemon priority prefix, which journald parses; on a terminal, lines are
 * plain text with a timestamp and the level. Only the top layers log (server for
 * connections, audit for the audit trail, main); lower modules return errors and messages. */
#pragma once

#include <stdbool.h>
#include <syslog.h>

/* Messages above this priority are dropped (LOG_INFO unless --verbose/--quiet). */
extern int log_max_priority;

/* Pick the format for stderr (call once, early). */
void log_init(void);

/* Whether stderr is connected to the journal (systemd's JOURNAL_STREAM names it). */
bool log_to_journal(void);

void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
