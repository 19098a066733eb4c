/* p2pbuf-client's internal interfaces: the verbs (one file per group), the output writers
 * (cli-output.c: tables, the one JSON writer and the JSON shape of each object), and the one
 * table from errno to message, hint and exit status (cli-errors.c). Everything here uses only
 * the public API of p2pbuf.h. */
#pragma once

#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "macro.h"
#include "p2pbuf.h"

#define PROG "p2pbuf-client"

/* Exit statuses, one per class of failure; p2pbuf-client(1) and --help list them from
 * cli_exit_statuses so that the two cannot disagree. */
enum {
	EXIT_FAIL = 1,	      /* anything not listed below */
	EXIT_USAGE = 2,	      /* malformed command line */
	EXIT_UNREACHABLE = 3, /* no daemon at the socket */
	EXIT_DENIED = 4,      /* socket permissions, policy, not an admin */
	EXIT_NOT_FOUND = 5,   /* unknown device or lease; device gone or failed */
	EXIT_BAD_RANGE = 6,   /* the daemon refused a range or argument */
	EXIT_BUSY = 7,	      /* device cycling, lease limit: try again later */
	EXIT_REVOKED = 10,    /* the lease was revoked while held */
};

/* What the command line asked for, and the first usage error, which is reported only once
 * every option has been read (so that a later --json still shapes the report). */
struct cli {
	const char *socket;
	bool json;
	const struct verb *verb; /* NULL until the verb is known */
	char usage_error[256];
};

struct verb {
	const char *name;
	const char *synopsis; /* what follows the name in a usage line */
	const char *summary;  /* one line for the global help */
	const char *help;     /* the verb's own options and details, for VERB --help */
	int (*run)(struct cli *cli, int argc, char **argv);
};

extern const struct verb verb_devices, verb_leases, verb_export, verb_release, verb_watch,
    verb_reset, verb_revoke, verb_status, verb_doctor, verb_policy, verb_reload;

/* The options every verb takes, before or after it. The leading ':' makes getopt tell a missing
 * value apart from an unknown option. */
#define CLI_COMMON_SHORTOPTS ":s:jh"
/* One option a line: clang-format would make a mess of the macro. */
/* clang-format off */
#define CLI_COMMON_LONGOPTS                                                                        \
	{ "socket", required_argument, NULL, 's' },                                                \
	{ "json", no_argument, NULL, 'j' },                                                        \
	{ "help", no_argument, NULL, 'h' }
/* clang-format on */

/* Handles a verb's own option c (argument arg). Returns -1 to go on (a bad value is recorded
 * with cli_usage(), and parsing goes on to find --json), or 0 to stop at once with success. */
typedef int (*cli_option_fn)(struct cli *cli, int c, const char *arg, void *ctx);

/* Parse argv[0..argc) (argv[0] is the verb) with getopt_long: the common options are handled
 * here, the verb's own go to fn. Returns -1 with optind at the first operand, 0 when the verb's
 * help was printed, or EXIT_USAGE. */
int cli_parse_options(struct cli *cli, int argc, char **argv, const char *shortopts,
		      const struct option *longopts, cli_option_fn fn, void *ctx);

/* cli_parse_options() for a verb with no options of its own that takes between min and max
 * operands. Returns -1 to go on, or the exit status. */
int cli_parse_operands(struct cli *cli, int argc, char **argv, int min, int max);

/* cli_parse_operands() for exactly n operands, then cli_connect(). Returns -1 with *ret_conn
 * connected, or the exit status. */
int cli_start(struct cli *cli, int argc, char **argv, int n, struct p2pbuf **ret_conn);

/* Print the verb's usage (verb NULL: the global help) to f. */
void cli_help(FILE *f, const struct verb *verb);

/* The socket to use: --socket, else $P2PBUF_SOCKET, else the default. */
const char *cli_socket_path(const struct cli *cli);

/* Connect, or report why not (cli_fail) and return its exit status. */
int cli_connect(struct cli *cli, struct p2pbuf **ret_conn);

static inline void p2pbuf_disconnectp(struct p2pbuf **conn)
{
	p2pbuf_disconnect(*conn);
}
#define _cleanup_conn_ _cleanup_(p2pbuf_disconnectp)

/* A lease id: decimal digits only (no sign, no unit). Returns 0 or -EINVAL/-ERANGE. */
int cli_parse_id(const char *s, uint64_t *ret_id);

/* Block sigs and return a signalfd for them, so that signals are read in a poll loop instead of
 * interrupting it; *ret_old gets the mask to restore in a child. Returns the fd or -errno. */
int cli_signal_fd(const int *sigs, size_t n, sigset_t *ret_old);

/* The next signal pending on sfd (0: none), and whether a process sent it to us alone rather
 * than the terminal to the whole foreground process group. */
int cli_read_signal(int sfd, bool *ret_sent);

/* ---- errors (cli-errors.c) ---- */

/* Where an error arose, which decides what an errno means: ENOENT from connect() is "no
 * daemon", from a request "no such lease". Bits; CLI_ADMIN marks requests only admins make. */
enum {
	CLI_CONNECT = 1 << 0,
	CLI_REQUEST = 1 << 1,
	CLI_ADMIN = 1 << 2,
	CLI_POLICY = 1 << 3, /* loading a policy (offline, or the daemon's reload) */
	CLI_EDIT = 1 << 4,   /* with CLI_POLICY: editing its files */
};

/* Report err (< 0) from what (printf-style, such as "export sim0 bar 2") on stderr and, with
 * --json, as an error object on stdout; detail is the daemon's explanation or NULL. Returns
 * the exit status that the errno table gives it. */
int cli_fail(const struct cli *cli, int err, unsigned where, const char *detail, const char *fmt,
	     ...) __attribute__((format(printf, 5, 6)));

/* Record a usage error (the first one wins) for cli_report_usage(). Returns EXIT_USAGE. */
int cli_usage(struct cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Report the recorded usage error, if any, like cli_fail() does. */
void cli_report_usage(const struct cli *cli);

/* An error of the CLI itself (out of memory, signal setup): reported like the others. */
int cli_fail_local(const struct cli *cli, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Print the exit status table for --help. */
void cli_print_exit_statuses(FILE *f);

_Noreturn void cli_oom(void);

/* ---- output (cli-output.c) ---- */

/* Text from the daemon or other users, made safe for a terminal: control characters, C1
 * controls and bytes that are not UTF-8 become \xNN; with quote, '"' and '\\' are escaped
 * too. Free the result. */
char *cli_escape_text(const char *s, bool quote);

/* CLOCK_REALTIME milliseconds as "2026-11-21T20:00:00Z". */
void cli_format_time(int64_t ms, char *buf, size_t len);

/* Tables for people: cells in rows, columns padded to their widest cell. */
struct table {
	size_t ncols;
	size_t ncells;
	char **cells; /* row-major; the first row is the header */
};
void table_header(struct table *t, const char *const *names, size_t n);
/* Add one cell, formatted, with control characters escaped. */
void table_cell(struct table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void table_print(const struct table *t);
void table_free(struct table *t);

/* The one JSON writer: values are written in order, commas and keys where they belong. A key
 * is given inside objects and NULL inside arrays and at the top. */
#define JSON_MAX_DEPTH 8
struct json {
	unsigned depth;
	bool first[JSON_MAX_DEPTH];
};
void json_begin(struct json *j, const char *key, char open);
void json_end(struct json *j, char close);
void json_str(struct json *j, const char *key, const char *value); /* NULL: null */
void json_u64(struct json *j, const char *key, uint64_t value);
void json_i64(struct json *j, const char *key, int64_t value);
void json_bool(struct json *j, const char *key, bool value);
void json_null(struct json *j, const char *key);
/* A value the library reports as 0 when there is none (no TTL, no deadline, pid unknown, a
 * limit an older daemon does not tell): null then. */
void json_nonzero(struct json *j, const char *key, int64_t value);
/* Start and end one document: an object on its own line, flushed. */
void json_doc_begin(struct json *j);
void json_doc_end(struct json *j);

/* The JSON shape of each object, in one place (p2pbuf-client(1) documents it). */
void json_device(struct json *j, const char *key, const struct p2pbuf_device *d);
void json_lease(struct json *j, const char *key, const struct p2pbuf_lease *l);
/* An event document, as watch prints it and export prints its lease's. */
void json_event(struct json *j, const struct p2pbuf_event *ev, int64_t now_ms);

/* ---- shared by the verbs ---- */

/* What an action verb did, as a JSON document: {"action":"release","lease":{"id":5}}. */
void cli_print_lease_action(const struct cli *cli, const char *action, uint64_t id);

/* The verbs that take one lease ID and make one request with it (release, revoke): parse,
 * connect, request. Returns -1 with *ret_id and *ret_conn set on success, or the exit status
 * (the failure already reported). */
int cli_lease_verb(struct cli *cli, int argc, char **argv,
		   int (*request)(struct p2pbuf *, uint64_t), unsigned where, uint64_t *ret_id,
		   struct p2pbuf **ret_conn);
