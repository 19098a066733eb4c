/* Logging: lines on stderr with sd-daemon priority prefixes, which journald parses. Only the
 * top layer (server, main) logs; lower modules return errors and messages. */
#pragma once

#include <syslog.h>

/* Messages above this priority are dropped (LOG_INFO unless --verbose/--quiet). */
extern int log_max_priority;

void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
