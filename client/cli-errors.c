/* What each failure means to a user: one table from errno (and where it arose) to a message, a
 * hint and an exit status, and the one way of reporting a failure, in words on stderr and, with
 * --json, as an error object on stdout. p2pbuf-client(1) documents the same table. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

#define HINT_RUNNING "is p2pbufd running? set --socket or P2PBUF_SOCKET"
#define HINT_LOG "see its log: journalctl -u p2pbufd"
#define HINT_DEVICES "see '" PROG " devices'"

struct errno_class {
	int err;	/* positive errno */
	unsigned where; /* CLI_* bits that must all be set where it arose */
	int exit_status;
	const char *message;
	const char *hint; /* or NULL */
};

/* Looked up in order: the first row whose errno matches and whose bits are all set wins, so a
 * narrower row (CLI_ADMIN) comes before the wider one for the same errno. */
static const struct errno_class errno_table[] = {
	{ ENOENT, CLI_CONNECT, EXIT_UNREACHABLE, "no socket there", HINT_RUNNING },
	{ ECONNREFUSED, CLI_CONNECT, EXIT_UNREACHABLE, "nobody listens on it", HINT_RUNNING },
	{ ENOTDIR, CLI_CONNECT, EXIT_UNREACHABLE, "a part of the path is not a directory",
	  HINT_RUNNING },
	{ ENAMETOOLONG, CLI_CONNECT, EXIT_UNREACHABLE, "the socket path is too long",
	  "Unix socket paths have at most 107 bytes" },
	{ EACCES, CLI_CONNECT, EXIT_DENIED, "permission denied", "are you in the p2pbuf group?" },
	{ EPERM, CLI_CONNECT, EXIT_DENIED, "permission denied", "are you in the p2pbuf group?" },
	{ EPROTONOSUPPORT, CLI_CONNECT, EXIT_FAIL, "p2pbufd speaks another protocol version",
	  "use a p2pbuf-client that matches the daemon" },
	{ ECONNRESET, CLI_CONNECT, EXIT_FAIL, "p2pbufd closed the connection during the handshake",
	  HINT_LOG },
	/* The policy's own files, judged or edited offline, and a reload the daemon refused. */
	{ EINVAL, CLI_POLICY | CLI_EDIT, EXIT_FAIL, "edit refused", NULL },
	{ EINVAL, CLI_POLICY, EXIT_FAIL, "the policy does not load", NULL },
	{ ENOENT, CLI_POLICY | CLI_EDIT, EXIT_NOT_FOUND, "not found", NULL },
	{ ENOTUNIQ, CLI_POLICY | CLI_EDIT, EXIT_FAIL, "ambiguous", NULL },
	{ ESTALE, CLI_POLICY | CLI_EDIT, EXIT_BUSY, "changed meanwhile", "edit it again" },
	{ EACCES, CLI_POLICY | CLI_EDIT, EXIT_DENIED, "permission denied",
	  "the policy's files are root's to change" },
	{ EPERM, CLI_REQUEST | CLI_ADMIN, EXIT_DENIED, "denied by policy",
	  "only p2pbufd admins may do this; '" PROG " status' says whether you are one" },
	{ EPERM, CLI_REQUEST, EXIT_DENIED, "denied by policy",
	  "ask an admin to allow it in the p2pbufd policy" },
	{ EACCES, CLI_REQUEST, EXIT_DENIED, "permission denied", NULL },
	{ ENODEV, CLI_REQUEST, EXIT_NOT_FOUND, "no such device", HINT_DEVICES },
	{ ENOENT, CLI_REQUEST, EXIT_NOT_FOUND, "no such lease", "see '" PROG " leases'" },
	{ ENXIO, CLI_REQUEST, EXIT_NOT_FOUND, "device or BAR not available", HINT_DEVICES },
	/* The daemon's answer for a device that failed to open or to come back from a cycle: as
	 * unavailable as a gone one, and waiting does not help (an admin's reset may). */
	{ EIO, CLI_REQUEST, EXIT_NOT_FOUND, "device not available",
	  "'" PROG " devices' says why; an admin may reset it" },
	{ EBUSY, CLI_REQUEST, EXIT_BUSY, "device busy", "it is being reset; try again shortly" },
	{ EAGAIN, CLI_REQUEST, EXIT_BUSY, "temporarily unavailable", "try again" },
	{ EDQUOT, CLI_REQUEST, EXIT_BUSY, "lease limit reached",
	  "release a lease first; see '" PROG " leases'" },
	{ EINVAL, CLI_REQUEST, EXIT_BAD_RANGE, "invalid request", NULL },
	{ ERANGE, CLI_REQUEST, EXIT_BAD_RANGE, "range outside the BAR",
	  "see the BAR sizes in '" PROG " devices'" },
	{ EADDRNOTAVAIL, CLI_REQUEST, EXIT_BAD_RANGE, "range overlaps the MSI-X table or PBA",
	  "'" PROG " --json devices' lists the reserved ranges" },
	{ E2BIG, CLI_REQUEST, EXIT_BAD_RANGE, "too many ranges", NULL },
	{ EFBIG, CLI_REQUEST, EXIT_BAD_RANGE, "export too large",
	  "the daemon caps a lease's size" },
	{ ENAMETOOLONG, CLI_REQUEST, EXIT_BAD_RANGE, "name too long", NULL },
	{ ECONNRESET, CLI_REQUEST, EXIT_FAIL, "p2pbufd closed the connection", HINT_LOG },
	{ ENOTCONN, CLI_REQUEST, EXIT_FAIL, "the connection to p2pbufd is lost", HINT_LOG },
	{ EPROTO, CLI_REQUEST, EXIT_FAIL, "protocol error talking to p2pbufd",
	  "are p2pbuf-client and p2pbufd the same version?" },
	{ EOPNOTSUPP, CLI_REQUEST, EXIT_FAIL, "p2pbufd does not know this request",
	  "is p2pbufd older than p2pbuf-client?" },
};

static const struct {
	int status;
	const char *text;
} exit_statuses[] = {
	{ 0, "success (export: the lease was held until SIGINT or SIGTERM)" },
	{ EXIT_FAIL, "other failure, including a lost connection to the daemon" },
	{ EXIT_USAGE, "usage error" },
	{ EXIT_UNREACHABLE, "cannot reach the daemon (no socket, connection refused)" },
	{ EXIT_DENIED, "permission denied (socket permissions, denied by policy, not an admin)" },
	{ EXIT_NOT_FOUND, "not found or not available (unknown device or lease, no such BAR,\n"
			  "      device gone or failed)" },
	{ EXIT_BAD_RANGE, "bad range or argument" },
	{ EXIT_BUSY, "busy or limit reached (device cycling, lease quota); try again later" },
	{ EXIT_REVOKED, "the lease was revoked while held" },
};

void cli_print_exit_statuses(FILE *f)
{
	for (size_t i = 0; i < ARRAY_SIZE(exit_statuses); i++)
		fprintf(f, "  %2d  %s\n", exit_statuses[i].status, exit_statuses[i].text);
	fputs("  With -- CMD: CMD's exit status, or 128+N if it was killed by signal N.\n", f);
}

static const struct errno_class *errno_lookup(int err, unsigned where)
{
	for (size_t i = 0; i < ARRAY_SIZE(errno_table); i++) {
		const struct errno_class *e = &errno_table[i];
		if (e->err == err && (e->where & where) == e->where)
			return e;
	}
	return NULL;
}

/* One failure as reported: every field but exit_status may be absent (NULL, code 0). */
struct report {
	int code; /* negative errno */
	int exit_status;
	const char *context; /* what was being done: "export sim0 bar 2" */
	const char *message; /* what went wrong, in our words */
	const char *detail;  /* the daemon's words */
	const char *hint;    /* what to do about it */
};

/* The daemon's words come first in importance; ours only fill in what they leave out,
 * without saying anything twice. */
static void report_text(const struct report *r)
{
	_cleanup_free_ char *detail = cli_escape_text(r->detail, false);
	_cleanup_free_ char *context = cli_escape_text(r->context, false);

	fputs(PROG ": ", stderr);
	if (context[0])
		fprintf(stderr, "%s: ", context);
	if (!strcasestr(detail, r->message))
		fprintf(stderr, "%s%s", r->message, detail[0] ? ": " : "");
	fputs(detail, stderr);
	if (r->hint && !strstr(detail, PROG))
		fprintf(stderr, " (%s)", r->hint);
	fputc('\n', stderr);
}

static void report_json(const struct report *r)
{
	struct json j;

	json_doc_begin(&j);
	json_begin(&j, "error", '{');
	json_str(&j, "errno", r->code ? strerrorname_np(-r->code) : NULL);
	if (r->code)
		json_i64(&j, "code", r->code);
	else
		json_null(&j, "code");
	json_i64(&j, "exit_status", r->exit_status);
	json_str(&j, "context", r->context);
	json_str(&j, "message", r->message);
	json_str(&j, "detail", r->detail && r->detail[0] ? r->detail : NULL);
	json_str(&j, "hint", r->hint);
	json_end(&j, '}');
	json_doc_end(&j);
}

static int report(const struct cli *cli, const struct report *r)
{
	report_text(r);
	if (cli->json)
		report_json(r);
	return r->exit_status;
}

static int vfail(const struct cli *cli, int err, unsigned where, const char *detail,
		 const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));
static int vfail(const struct cli *cli, int err, unsigned where, const char *detail,
		 const char *fmt, va_list ap)
{
	const struct errno_class *e = errno_lookup(-err, where);
	_cleanup_free_ char *context = NULL;
	struct report r = {
		.code = err,
		.exit_status = e ? e->exit_status : EXIT_FAIL,
		.message = e ? e->message : strerror(-err),
		.detail = detail,
		.hint = e ? e->hint : NULL,
	};

	if (vasprintf(&context, fmt, ap) < 0)
		cli_oom();
	r.context = context;
	return report(cli, &r);
}

int cli_fail(const struct cli *cli, int err, unsigned where, const char *detail, const char *fmt,
	     ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vfail(cli, err, where, detail, fmt, ap);
	va_end(ap);
	return r;
}

int cli_fail_local(const struct cli *cli, int err, const char *fmt, ...)
{
	va_list ap;
	int r;

	/* No row matches 0: a local error says strerror() and exits 1. */
	va_start(ap, fmt);
	r = vfail(cli, err, 0, NULL, fmt, ap);
	va_end(ap);
	return r;
}

int cli_usage(struct cli *cli, const char *fmt, ...)
{
	va_list ap;

	if (cli->usage_error[0])
		return EXIT_USAGE;
	va_start(ap, fmt);
	vsnprintf(cli->usage_error, sizeof(cli->usage_error), fmt, ap);
	va_end(ap);
	return EXIT_USAGE;
}

void cli_report_usage(const struct cli *cli)
{
	_cleanup_free_ char *help = NULL, *hint = NULL, *message = NULL;
	const char *verb = cli->verb ? cli->verb->name : NULL;
	struct report r = {
		.exit_status = EXIT_USAGE,
		.context = verb,
		.message = cli->usage_error,
	};

	if (!cli->usage_error[0])
		return;
	if (asprintf(&help, PROG "%s%s --help", verb ? " " : "", verb ? verb : "") < 0 ||
	    asprintf(&hint, "try '%s'", help) < 0)
		cli_oom();
	r.hint = hint;
	message = cli_escape_text(r.message, false); /* it may quote what the user typed */
	/* Not report_text(): the advice of a usage error goes on a line of its own, as usual. */
	fprintf(stderr, PROG ": %s%s%s\nTry '%s'.\n", verb ? verb : "", verb ? ": " : "", message,
		help);
	if (cli->json)
		report_json(&r);
}

_Noreturn void cli_oom(void)
{
	fputs(PROG ": out of memory\n", stderr);
	exit(EXIT_FAIL);
}
