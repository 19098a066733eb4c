/* p2pbuf-client: the command-line face of libp2pbuf, for operators and scripts. It uses only
 * the public API of p2pbuf.h, so that it doubles as a test of what applications can do.
 *
 * Output: tables for people, --json for programs (one document, or one object per line for
 * watch). Errors go to stderr, prefixed "p2pbuf-client: ", and say what to do about them; the
 * exit status tells scripts which kind of failure it was (see usage()). */
#include <errno.h>
#include <fcntl.h>
#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "p2pbuf.h"

#define PROG "p2pbuf-client"

enum {
	EXIT_FAIL = 1,	      /* anything not listed below */
	EXIT_USAGE = 2,	      /* malformed command line */
	EXIT_UNREACHABLE = 3, /* no daemon at the socket */
	EXIT_DENIED = 4,      /* socket permissions, policy, not an admin */
	EXIT_NOT_FOUND = 5,   /* unknown device or lease, device gone */
	EXIT_BAD_RANGE = 6,   /* the daemon refused a range or argument */
	EXIT_BUSY = 7,	      /* device busy, lease limit, try again */
	EXIT_REVOKED = 10,    /* the lease was revoked while held */
};

/* Ranges shown in a table row before "+N more" (--json always has them all). */
#define TABLE_MAX_RANGES 2

struct options {
	const char *socket;
	bool json;
};

static void usage(FILE *f)
{
	fputs("Usage: " PROG " [--socket PATH] [--json] COMMAND [ARGS]\n"
	      "\n"
	      "Ask p2pbufd for dma-buf file descriptors covering ranges of PCI BARs, and manage\n"
	      "them.\n"
	      "\n"
	      "Commands:\n"
	      "  devices           list the devices the daemon owns\n"
	      "  leases [--all]    list your leases (--all: every lease; admins and observers)\n"
	      "  export DEVICE --bar N [[--offset X] --length Y]... [--label L]\n"
	      "         [-- CMD [ARG]...]\n"
	      "                    take a lease on BAR N of DEVICE. Each --length Y is one\n"
	      "                    range, starting at the --offset X before it (default 0);\n"
	      "                    without any, the whole BAR.\n"
	      "                    Without CMD: print the lease, hold it until SIGINT, SIGTERM\n"
	      "                    or its revocation, then release it.\n"
	      "                    With CMD: run CMD with the fd inherited and P2PBUF_FD,\n"
	      "                    P2PBUF_LEASE_ID, P2PBUF_SIZE and P2PBUF_DEVICE set; send it\n"
	      "                    SIGTERM if the lease is revoked; release the lease when it\n"
	      "                    exits\n"
	      "  release ID        release one of your leases\n"
	      "  reset DEVICE      reset DEVICE, ending every lease on it (admins)\n"
	      "  revoke ID         revoke a lease (admins)\n"
	      "  status            show the daemon's status\n"
	      "  watch             print lease and device events until interrupted\n"
	      "\n"
	      "Options:\n"
	      "  -s, --socket PATH  the daemon's socket (default: $P2PBUF_SOCKET, else\n"
	      "                     " P2PBUF_DEFAULT_SOCKET ")\n"
	      "  -j, --json         machine-readable output (devices, leases, status, export,\n"
	      "                     watch)\n"
	      "  -h, --help         show this help\n"
	      "  -V, --version      show the version\n"
	      "\n"
	      "Sizes and offsets are decimal or 0x hexadecimal, with an optional K, M, G or T\n"
	      "suffix (powers of 1024).\n"
	      "\n"
	      "Exit status:\n"
	      "   0  success (export: the lease was held until SIGINT or SIGTERM)\n"
	      "   1  other failure\n"
	      "   2  usage error\n"
	      "   3  cannot reach the daemon (no socket, connection refused)\n"
	      "   4  permission denied (socket permissions, denied by policy, not an admin)\n"
	      "   5  not found (unknown device or lease, device gone)\n"
	      "   6  bad range or argument\n"
	      "   7  busy or limit reached (device cycling, lease quota); try again later\n"
	      "  10  the lease was revoked while held\n"
	      "  With -- CMD: CMD's exit status, or 128+N if it was killed by signal N.\n",
	      f);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry '" PROG " --help'.\n", stderr);
	return EXIT_USAGE;
}

static void errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void errorf(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static _Noreturn void oom(void)
{
	fputs(PROG ": out of memory\n", stderr);
	exit(EXIT_FAIL);
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		oom();
	return s;
}

/* ---- JSON output ---- */

/* Length of the valid UTF-8 sequence at s, or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s)
{
	size_t n;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	/* overlong forms, surrogates, beyond Unicode */
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* Escape what must not reach a terminal raw in text from the daemon (messages, labels chosen
 * by other users): control characters, C1 controls and bytes that are not UTF-8 become \xNN,
 * so that they cannot move the cursor or change colours. With quote, '"' and '\\' are escaped
 * too, for values printed inside quotes. */
static char *escape_text(const char *s, bool quote)
{
	const unsigned char *p = (const unsigned char *)s;
	char *out = malloc(strlen(s) * 4 + 1), *o = out;

	if (!out)
		oom();
	while (*p) {
		size_t n = utf8_len(p);
		bool c1 = n == 2 && p[0] == 0xc2 && p[1] < 0xa0;
		if (n == 0 || c1 || *p < 0x20 || *p == 0x7f) {
			for (size_t i = 0; i < (n ? n : 1); i++)
				o += sprintf(o, "\\x%02x", *p++);
		} else if (quote && (*p == '"' || *p == '\\')) {
			*o++ = '\\';
			*o++ = (char)*p++;
		} else {
			memcpy(o, p, n);
			o += n;
			p += n;
		}
	}
	*o = '\0';
	return out;
}

static char *sanitize(const char *s)
{
	return escape_text(s, false);
}

/* Print s as a JSON string (null for NULL). Bytes that are not UTF-8 become U+FFFD, so the
 * output stays valid JSON whatever the daemon sent. */
static void json_string(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	if (!s) {
		fputs("null", stdout);
		return;
	}
	putchar('"');
	while (*p) {
		size_t n = utf8_len(p);
		if (n == 0) {
			fputs("\\ufffd", stdout);
			p++;
		} else if (*p == '"' || *p == '\\') {
			printf("\\%c", *p++);
		} else if (*p == '\n') {
			fputs("\\n", stdout), p++;
		} else if (*p == '\t') {
			fputs("\\t", stdout), p++;
		} else if (*p < 0x20 || *p == 0x7f) {
			printf("\\u%04x", *p++);
		} else {
			fwrite(p, 1, n, stdout);
			p += n;
		}
	}
	putchar('"');
}

static void json_key(const char *key, bool *first)
{
	if (!*first)
		putchar(',');
	*first = false;
	printf("\"%s\":", key);
}

static void json_kv_str(const char *key, const char *value, bool *first)
{
	json_key(key, first);
	json_string(value);
}

static void json_kv_u64(const char *key, uint64_t value, bool *first)
{
	json_key(key, first);
	printf("%" PRIu64, value);
}

static void json_kv_i64(const char *key, int64_t value, bool *first)
{
	json_key(key, first);
	printf("%" PRId64, value);
}

static void json_kv_bool(const char *key, bool value, bool *first)
{
	json_key(key, first);
	fputs(value ? "true" : "false", stdout);
}

static void json_ranges(const char *key, const struct p2pbuf_range *r, size_t n, bool *first)
{
	json_key(key, first);
	putchar('[');
	for (size_t i = 0; i < n; i++)
		printf("%s{\"offset\":%" PRIu64 ",\"length\":%" PRIu64 "}", i ? "," : "",
		       r[i].offset, r[i].length);
	putchar(']');
}

/* ---- formatting ---- */

/* 65536 → "64K": the largest unit that divides size exactly, so nothing is rounded away. */
static void format_size(uint64_t size, char *buf, size_t len)
{
	static const char units[] = "KMGT";
	unsigned u = 0;

	while (size != 0 && size % 1024 == 0 && u < sizeof(units) - 1) {
		size /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%" PRIu64, size);
	else
		snprintf(buf, len, "%" PRIu64 "%c", size, units[u - 1]);
}

/* CLOCK_REALTIME milliseconds as "2026-11-21T20:00:00Z". */
static void format_time(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%" PRId64, ms);
}

static int64_t realtime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- tables ---- */

struct table {
	size_t ncols;
	size_t ncells;
	char **cells; /* row-major; the first row is the header */
};

static void table_add(struct table *t, char *cell)
{
	char **c = realloc(t->cells, (t->ncells + 1) * sizeof(*c));

	if (!c)
		oom();
	t->cells = c;
	t->cells[t->ncells++] = cell;
}

/* Add one cell, formatted, with control characters escaped. */
static void table_cell(struct table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void table_cell(struct table *t, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		oom();
	va_end(ap);
	table_add(t, sanitize(s));
	free(s);
}

static void table_header(struct table *t, const char *const *names, size_t n)
{
	t->ncols = n;
	for (size_t i = 0; i < n; i++)
		table_cell(t, "%s", names[i]);
}

/* Print with columns padded to their widest cell, two spaces apart; the last column is not
 * padded, so that lines carry no trailing blanks. */
static void table_print(struct table *t)
{
	size_t width[16] = { 0 };

	for (size_t i = 0; i < t->ncells; i++) {
		size_t w = strlen(t->cells[i]), c = i % t->ncols;
		if (w > width[c])
			width[c] = w;
	}
	for (size_t i = 0; i < t->ncells; i++) {
		size_t c = i % t->ncols;
		if (c + 1 < t->ncols)
			printf("%-*s  ", (int)width[c], t->cells[i]);
		else
			printf("%s\n", t->cells[i]);
	}
}

static void table_free(struct table *t)
{
	for (size_t i = 0; i < t->ncells; i++)
		free(t->cells[i]);
	free(t->cells);
}

/* ---- errors ---- */

/* Exit status for an error the daemon or the library reported. */
static int exit_status(int err)
{
	switch (-err) {
	case EPERM:
	case EACCES:
		return EXIT_DENIED;
	case ENODEV:
	case ENOENT:
	case ENXIO:
		return EXIT_NOT_FOUND;
	case EINVAL:
	case ERANGE:
	case EADDRNOTAVAIL:
	case E2BIG:
	case EFBIG:
		return EXIT_BAD_RANGE;
	case EBUSY:
	case EDQUOT:
	case EAGAIN:
		return EXIT_BUSY;
	default:
		return EXIT_FAIL;
	}
}

/* What an errno means when the daemon answers with it, and what the user can do. admin: the
 * request is one only admins may make. */
static void describe(int err, bool admin, const char **ret_what, const char **ret_hint)
{
	const char *what = NULL, *hint = NULL;

	switch (-err) {
	case EPERM:
		what = "denied by policy";
		hint = admin ? "only p2pbufd admins may do this; '" PROG " status' says whether "
			       "you are one"
			     : "ask an admin to allow it in the p2pbufd policy";
		break;
	case ENODEV:
		what = "no such device";
		hint = "see '" PROG " devices'";
		break;
	case ENOENT:
		what = "no such lease";
		hint = "see '" PROG " leases'";
		break;
	case ENXIO:
		what = "device or BAR not available";
		hint = "see '" PROG " devices'";
		break;
	case EBUSY:
		what = "device busy";
		hint = "it is being reset; try again shortly";
		break;
	case EAGAIN:
		what = "temporarily unavailable";
		hint = "try again";
		break;
	case EDQUOT:
		what = "lease limit reached";
		hint = "release a lease first; see '" PROG " leases'";
		break;
	case EINVAL:
		what = "invalid request";
		break;
	case ERANGE:
		what = "range outside the BAR";
		hint = "see the BAR sizes in '" PROG " devices'";
		break;
	case EADDRNOTAVAIL:
		what = "range overlaps the MSI-X table or PBA";
		hint = "'" PROG " --json devices' lists the reserved ranges";
		break;
	case E2BIG:
		what = "too many ranges";
		break;
	case EFBIG:
		what = "export too large";
		hint = "the policy caps its size";
		break;
	case ECONNRESET:
		what = "p2pbufd closed the connection";
		hint = "see its log: journalctl -u p2pbufd";
		break;
	case EPROTO:
		what = "protocol error talking to p2pbufd";
		hint = "are p2pbuf-client and p2pbufd the same version?";
		break;
	default:
		what = strerror(-err);
		break;
	}
	*ret_what = what;
	*ret_hint = hint;
}

/* Report a failed call ("export sim0 bar 2: denied by policy: <daemon's words> (hint)") and
 * return the exit status for it. */
static int vfail_call(struct p2pbuf *conn, int err, bool admin, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
static int vfail_call(struct p2pbuf *conn, int err, bool admin, const char *fmt, va_list ap)
{
	const char *what, *hint, *msg = p2pbuf_last_message(conn);
	char *safe = sanitize(msg);

	describe(err, admin, &what, &hint);
	fputs(PROG ": ", stderr);
	vfprintf(stderr, fmt, ap);
	/* The daemon's words come first in importance; ours only fill in what they leave out,
	 * without saying anything twice. */
	if (strncasecmp(safe, what, strlen(what)) != 0)
		fprintf(stderr, ": %s", what);
	if (safe[0])
		fprintf(stderr, ": %s", safe);
	if (hint && !strstr(safe, PROG))
		fprintf(stderr, " (%s)", hint);
	fputc('\n', stderr);
	free(safe);
	return exit_status(err);
}

static int fail_call(struct p2pbuf *conn, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_call(struct p2pbuf *conn, int err, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vfail_call(conn, err, false, fmt, ap);
	va_end(ap);
	return r;
}

/* The same for requests only admins may make (reset, revoke). */
static int fail_admin_call(struct p2pbuf *conn, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_admin_call(struct p2pbuf *conn, int err, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vfail_call(conn, err, true, fmt, ap);
	va_end(ap);
	return r;
}

static const char *socket_path(const struct options *o)
{
	const char *env = getenv("P2PBUF_SOCKET");

	if (o->socket && o->socket[0])
		return o->socket;
	return env && env[0] ? env : P2PBUF_DEFAULT_SOCKET;
}

/* Connect, or say why not and return the exit status for it. */
static int open_conn(const struct options *o, struct p2pbuf **ret_conn)
{
	const char *path = socket_path(o);
	int r = p2pbuf_connect(path, ret_conn);

	switch (-r) {
	case 0:
		return 0;
	case ENOENT:
	case ECONNREFUSED:
	case ENOTDIR:
		errorf("cannot connect to %s: %s (is p2pbufd running? set --socket or "
		       "P2PBUF_SOCKET)",
		       path, strerror(-r));
		return EXIT_UNREACHABLE;
	case EACCES:
	case EPERM:
		errorf("cannot connect to %s: permission denied (are you in the p2pbuf group?)",
		       path);
		return EXIT_DENIED;
	case EPROTONOSUPPORT:
		errorf("%s: p2pbufd speaks another protocol version than this client (%d.%d); "
		       "use a p2pbuf-client that matches the daemon",
		       path, P2PBUF_PROTO_VERSION_MAJOR, P2PBUF_PROTO_VERSION_MINOR);
		return EXIT_FAIL;
	case ECONNRESET:
		errorf("%s: p2pbufd closed the connection during the handshake (see its log)",
		       path);
		return EXIT_FAIL;
	default:
		errorf("cannot connect to %s: %s", path, strerror(-r));
		return EXIT_FAIL;
	}
}

/* ---- argument parsing ---- */

static bool parse_u64(const char *s, int base, uint64_t *ret, const char **ret_end)
{
	unsigned long long v;
	char *end;

	/* strtoull would accept "-1" and leading blanks. */
	if (!s || !(s[0] >= '0' && s[0] <= '9'))
		return false;
	errno = 0;
	v = strtoull(s, &end, base);
	if (errno != 0 || end == s)
		return false;
	*ret = v;
	*ret_end = end;
	return true;
}

/* "4096", "0x1000", "64K", "2M", "1GiB" (powers of 1024). */
static bool parse_size(const char *s, uint64_t *ret)
{
	static const char units[] = "KMGT";
	const char *end;
	uint64_t v, mult = 1;
	bool hex = s && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');

	if (!parse_u64(s, hex ? 16 : 10, &v, &end))
		return false;
	if (*end) {
		/* strchr() also finds the terminating NUL: hence the check of *u. */
		const char *u = strchr(units, toupper((unsigned char)end[0]));
		if (!u || !*u)
			return false;
		end++;
		if (strcmp(end, "") != 0 && strcmp(end, "iB") != 0 && strcmp(end, "B") != 0)
			return false;
		for (const char *p = units; p <= u; p++)
			mult *= 1024;
	}
	if (v > UINT64_MAX / mult)
		return false;
	*ret = v * mult;
	return true;
}

static bool parse_id(const char *s, uint64_t *ret)
{
	const char *end;
	uint64_t v;

	if (!parse_u64(s, 10, &v, &end) || *end)
		return false;
	*ret = v;
	return true;
}

enum { OPT_ALL = 0x100 };

static const struct option common_options[] = {
	{ "socket", required_argument, NULL, 's' }, { "json", no_argument, NULL, 'j' },
	{ "help", no_argument, NULL, 'h' },	    { "version", no_argument, NULL, 'V' },
	{ "all", no_argument, NULL, OPT_ALL },	    { NULL, 0, NULL, 0 },
};

/* Handle an option every command accepts. Returns -1 when handled, or an exit status. */
static int common_option(int c, struct options *o)
{
	switch (c) {
	case 's':
		o->socket = optarg;
		return -1;
	case 'j':
		o->json = true;
		return -1;
	case 'h':
		usage(stdout);
		return 0;
	case 'V':
		printf(PROG " %s (protocol %d.%d)\n", PACKAGE_VERSION, P2PBUF_PROTO_VERSION_MAJOR,
		       P2PBUF_PROTO_VERSION_MINOR);
		return 0;
	default:
		fputs("Try '" PROG " --help'.\n", stderr);
		return EXIT_USAGE;
	}
}

/* Parse a command's options (argv[0] is the command). Leaves optind at its first operand.
 * Returns -1 to go on, or an exit status (help, version, usage error). */
static int parse_command(int argc, char **argv, struct options *o, bool *ret_all)
{
	int c;

	/* GNU getopt: 0 starts over for the command's own arguments, which may follow its
	 * operands ("release 5 --json"). */
	optind = 0;
	while ((c = getopt_long(argc, argv, "s:jhV", common_options, NULL)) != -1) {
		if (c == OPT_ALL && ret_all) {
			*ret_all = true;
			continue;
		}
		if (c == OPT_ALL)
			return usage_error("%s: unknown option --all", argv[0]);
		int r = common_option(c, o);
		if (r >= 0)
			return r;
	}
	return -1;
}

/* Commands that take exactly want operands. */
static int expect_operands(int argc, char **argv, int want, const char *what)
{
	if (argc - optind < want)
		return usage_error("%s: missing %s", argv[0], what);
	if (argc - optind > want)
		return usage_error("%s: unexpected argument '%s'", argv[0], argv[optind + want]);
	return -1;
}

/* ---- devices ---- */

static void device_json(const struct p2pbuf_device *d)
{
	bool first = true;

	putchar('{');
	json_kv_str("name", d->name, &first);
	json_kv_str("backend", d->backend, &first);
	json_kv_str("address", d->address, &first);
	json_kv_bool("simulated", d->simulated, &first);
	json_kv_str("state", p2pbuf_device_state_name(d->state), &first);
	json_kv_u64("generation", d->generation, &first);
	json_kv_u64("leases", d->leases, &first);
	json_kv_str("message", d->message, &first);
	json_key("bars", &first);
	putchar('[');
	for (size_t i = 0; i < d->n_bars; i++) {
		const struct p2pbuf_bar *b = &d->bars[i];
		bool bf = true;
		printf("%s{", i ? "," : "");
		json_kv_u64("index", b->index, &bf);
		json_kv_u64("size", b->size, &bf);
		json_kv_bool("is_64bit", b->is_64bit, &bf);
		json_kv_bool("prefetchable", b->prefetchable, &bf);
		json_ranges("reserved", b->reserved, b->n_reserved, &bf);
		putchar('}');
	}
	fputs("]}", stdout);
}

static const char *bar_flags(const struct p2pbuf_bar *b)
{
	if (b->is_64bit && b->prefetchable)
		return "(64,pf)";
	if (b->is_64bit)
		return "(64)";
	return b->prefetchable ? "(pf)" : "";
}

/* "0:64K 2:2M(64,pf)" */
static char *format_bars(const struct p2pbuf_device *d)
{
	char *out = xasprintf("%s", d->n_bars ? "" : "-");

	for (size_t i = 0; i < d->n_bars; i++) {
		const struct p2pbuf_bar *b = &d->bars[i];
		char size[32], *next;
		format_size(b->size, size, sizeof(size));
		next = xasprintf("%s%s%u:%s%s", out, i ? " " : "", b->index, size, bar_flags(b));
		free(out);
		out = next;
	}
	return out;
}

static void devices_table(const struct p2pbuf_device *d, size_t n)
{
	static const char *const cols[] = { "NAME", "BACKEND", "ADDRESS", "STATE",
					    "GEN",  "LEASES",  "BARS" };
	struct table t = { 0 };

	table_header(&t, cols, sizeof(cols) / sizeof(cols[0]));
	for (size_t i = 0; i < n; i++) {
		char *bars = format_bars(&d[i]);
		table_cell(&t, "%s", d[i].name);
		table_cell(&t, "%s%s", d[i].backend, d[i].simulated ? " (simulated)" : "");
		table_cell(&t, "%s", d[i].address);
		table_cell(&t, "%s", p2pbuf_device_state_name(d[i].state));
		table_cell(&t, "%" PRIu32, d[i].generation);
		table_cell(&t, "%u", d[i].leases);
		table_cell(&t, "%s", bars);
		free(bars);
	}
	table_print(&t);
	table_free(&t);
	/* Why a device is not ready: too long for a column, and what an operator needs. */
	for (size_t i = 0; i < n; i++) {
		if (d[i].state == P2PBUF_DEVICE_READY || !d[i].message)
			continue;
		char *name = sanitize(d[i].name), *msg = sanitize(d[i].message);
		printf("%s: %s: %s\n", name, p2pbuf_device_state_name(d[i].state), msg);
		free(name);
		free(msg);
	}
}

static int cmd_devices(struct p2pbuf *conn, const struct options *o)
{
	struct p2pbuf_device *d;
	size_t n;
	int r = p2pbuf_list_devices(conn, &d, &n);

	if (r < 0)
		return fail_call(conn, r, "devices");
	if (o->json) {
		fputs("{\"devices\":[", stdout);
		for (size_t i = 0; i < n; i++) {
			if (i)
				putchar(',');
			device_json(&d[i]);
		}
		fputs("]}\n", stdout);
	} else {
		devices_table(d, n);
	}
	p2pbuf_devices_free(d, n);
	return 0;
}

/* ---- leases ---- */

static void lease_json(const struct p2pbuf_lease *l)
{
	bool first = true;

	putchar('{');
	json_kv_u64("id", l->id, &first);
	json_kv_str("device", l->device, &first);
	json_kv_u64("bar", l->bar, &first);
	json_ranges("ranges", l->ranges, l->n_ranges, &first);
	json_kv_u64("size", l->size, &first);
	json_kv_str("label", l->label, &first);
	json_kv_str("state", p2pbuf_lease_state_name(l->state), &first);
	json_kv_str("reason", p2pbuf_reason_name(l->reason), &first);
	json_kv_u64("owner_uid", l->owner_uid, &first);
	json_kv_i64("owner_pid", l->owner_pid, &first);
	json_kv_i64("created_ms", l->created_ms, &first);
	json_kv_i64("expires_ms", l->expires_ms, &first);
	json_kv_i64("holders", l->holders, &first);
	json_kv_str("rule", l->rule, &first);
	json_kv_u64("generation", l->generation, &first);
	json_kv_i64("deadline_ms", l->deadline_ms, &first);
	json_kv_bool("lingering", l->lingering, &first);
	putchar('}');
}

/* "0x0+0x1000,0x2000+0x1000", cut to TABLE_MAX_RANGES. */
static char *format_ranges(const struct p2pbuf_lease *l)
{
	char *out = xasprintf("%s", l->n_ranges ? "" : "-");

	for (size_t i = 0; i < l->n_ranges && i < TABLE_MAX_RANGES; i++) {
		char *next = xasprintf("%s%s0x%" PRIx64 "+0x%" PRIx64, out, i ? "," : "",
				       l->ranges[i].offset, l->ranges[i].length);
		free(out);
		out = next;
	}
	if (l->n_ranges > TABLE_MAX_RANGES) {
		char *next = xasprintf("%s,+%zu more", out, l->n_ranges - TABLE_MAX_RANGES);
		free(out);
		out = next;
	}
	return out;
}

static void lease_row(struct table *t, const struct p2pbuf_lease *l)
{
	char size[32], expires[64] = "-", *ranges = format_ranges(l);

	format_size(l->size, size, sizeof(size));
	if (l->expires_ms != 0)
		format_time(l->expires_ms, expires, sizeof(expires));
	table_cell(t, "%" PRIu64, l->id);
	table_cell(t, "%s", l->device);
	table_cell(t, "%u", l->bar);
	table_cell(t, "%s", ranges);
	table_cell(t, "%s", size);
	if (l->state == P2PBUF_LEASE_ACTIVE || l->reason == P2PBUF_REASON_UNSPECIFIED)
		table_cell(t, "%s", p2pbuf_lease_state_name(l->state));
	else
		table_cell(t, "%s(%s)%s", p2pbuf_lease_state_name(l->state),
			   p2pbuf_reason_name(l->reason), l->lingering ? ",lingering" : "");
	if (l->holders < 0)
		table_cell(t, "?");
	else
		table_cell(t, "%d", l->holders);
	table_cell(t, "%" PRIu32 "/%jd", l->owner_uid, (intmax_t)l->owner_pid);
	table_cell(t, "%s", expires);
	table_cell(t, "%s", l->label ? l->label : "-");
	table_cell(t, "%s", l->rule[0] ? l->rule : "-");
	free(ranges);
}

static int cmd_leases(struct p2pbuf *conn, const struct options *o, bool all)
{
	static const char *const cols[] = { "ID",      "DEVICE", "BAR",	    "RANGES",
					    "SIZE",    "STATE",	 "HOLDERS", "OWNER",
					    "EXPIRES", "LABEL",	 "RULE" };
	struct p2pbuf_lease *l;
	struct table t = { 0 };
	size_t n;
	int r = p2pbuf_list_leases(conn, all, &l, &n);

	if (r < 0)
		return fail_call(conn, r, "leases");
	if (o->json) {
		fputs("{\"leases\":[", stdout);
		for (size_t i = 0; i < n; i++) {
			if (i)
				putchar(',');
			lease_json(&l[i]);
		}
		fputs("]}\n", stdout);
	} else {
		table_header(&t, cols, sizeof(cols) / sizeof(cols[0]));
		for (size_t i = 0; i < n; i++)
			lease_row(&t, &l[i]);
		table_print(&t);
		table_free(&t);
	}
	p2pbuf_leases_free(l, n);
	return 0;
}

/* ---- status ---- */

static void format_duration(uint64_t ms, char *buf, size_t len)
{
	uint64_t s = ms / 1000;

	if (s >= 86400)
		snprintf(buf, len, "%" PRIu64 "d %" PRIu64 "h %" PRIu64 "m", s / 86400,
			 s / 3600 % 24, s / 60 % 60);
	else if (s >= 3600)
		snprintf(buf, len, "%" PRIu64 "h %" PRIu64 "m %" PRIu64 "s", s / 3600, s / 60 % 60,
			 s % 60);
	else
		snprintf(buf, len, "%" PRIu64 "m %" PRIu64 "s", s / 60, s % 60);
}

static int cmd_status(struct p2pbuf *conn, const struct options *o)
{
	struct p2pbuf_status st;
	int r = p2pbuf_status(conn, &st);

	if (r < 0)
		return fail_call(conn, r, "status");
	if (o->json) {
		bool first = true;
		putchar('{');
		json_kv_str("socket", socket_path(o), &first);
		json_kv_str("version", st.version, &first);
		json_kv_u64("uptime_ms", st.uptime_ms, &first);
		json_kv_u64("clients", st.clients, &first);
		json_kv_u64("leases", st.leases, &first);
		json_kv_u64("devices", st.devices, &first);
		json_kv_str("policy", st.policy, &first);
		json_kv_bool("admin", st.admin, &first);
		fputs("}\n", stdout);
	} else {
		char *version = sanitize(st.version), *policy = sanitize(st.policy);
		char *path = sanitize(socket_path(o));
		char uptime[64];
		format_duration(st.uptime_ms, uptime, sizeof(uptime));
		printf("socket:   %s\nversion:  %s\nuptime:   %s\nclients:  %u\nleases:   %u\n"
		       "devices:  %u\npolicy:   %s\nadmin:    %s\n",
		       path, version, uptime, st.clients, st.leases, st.devices, policy,
		       st.admin ? "yes (you may reset and revoke)" : "no");
		free(version);
		free(policy);
		free(path);
	}
	p2pbuf_status_free(&st);
	return 0;
}

/* ---- signals ---- */

/* Block sigs and return a signalfd for them, so that signals are read in the poll loop
 * instead of interrupting it. *ret_old receives the mask to restore in a child. */
static int signal_fd(const int *sigs, size_t n, sigset_t *ret_old)
{
	sigset_t set;
	int fd;

	sigemptyset(&set);
	for (size_t i = 0; i < n; i++)
		sigaddset(&set, sigs[i]);
	if (sigprocmask(SIG_BLOCK, &set, ret_old) < 0)
		return -errno;
	fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	return fd < 0 ? -errno : fd;
}

/* The next pending signal on sfd (0: none), and whether a process sent it to us alone
 * (rather than the terminal to the whole foreground process group). */
static int read_signal(int sfd, bool *ret_sent)
{
	struct signalfd_siginfo si;

	if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return 0;
	*ret_sent = si.ssi_code == SI_USER || si.ssi_code == SI_QUEUE;
	return (int)si.ssi_signo;
}

/* ---- export ---- */

struct export_args {
	const char *device;
	unsigned bar;
	bool have_bar;
	struct p2pbuf_range ranges[64];
	size_t n_ranges;
	bool have_offset; /* an --offset waits for its --length */
	uint64_t offset;
	const char *label;
	char **cmd; /* NULL: hold the lease */
};

/* What the event handler saw about our lease. */
struct hold {
	uint64_t lease_id;
	bool revoking; /* told to let go */
	bool ended;    /* already over: nothing to release */
	enum p2pbuf_reason reason;
};

static void hold_event(struct p2pbuf *conn __attribute__((unused)), const struct p2pbuf_event *ev,
		       void *userdata)
{
	struct hold *h = userdata;

	if (ev->lease_id != h->lease_id)
		return;
	if (ev->type == P2PBUF_EVENT_LEASE_REVOKING) {
		h->revoking = true;
		h->reason = ev->reason;
	} else if (ev->type == P2PBUF_EVENT_LEASE_REVOKED) {
		h->revoking = h->ended = true;
		h->reason = ev->reason;
	}
}

/* Stands for the value of an option given last, without one. */
static const char missing_value[] = "";

/* Take the value of option name: "--name=value" or "--name value". NULL: argv[*i] is not
 * that option; missing_value: it is, but no value follows. */
static const char *option_value(int argc, char **argv, int *i, const char *name)
{
	size_t len = strlen(name);
	const char *a = argv[*i] + 2;

	if (strncmp(a, name, len) != 0)
		return NULL;
	if (a[len] == '=')
		return a + len + 1;
	if (a[len] != '\0')
		return NULL;
	if (*i + 1 >= argc)
		return missing_value;
	return argv[++*i];
}

/* Each --length ends a range, which starts at the --offset given before it, or at 0. */
static int add_range_part(struct export_args *a, bool is_offset, const char *value)
{
	const size_t max = sizeof(a->ranges) / sizeof(a->ranges[0]);
	uint64_t v;

	if (!parse_size(value, &v))
		return usage_error("export: bad %s '%s'", is_offset ? "offset" : "length", value);
	if (is_offset) {
		if (a->have_offset)
			return usage_error("export: two --offset without a --length between them");
		a->have_offset = true;
		a->offset = v;
		return -1;
	}
	if (a->n_ranges == max)
		return usage_error("export: too many ranges (at most %zu)", max);
	a->ranges[a->n_ranges++] = (struct p2pbuf_range){ a->have_offset ? a->offset : 0, v };
	a->have_offset = false;
	return -1;
}

/* One export option at argv[*i]. Returns -1 to go on, or an exit status. */
static int export_option(int argc, char **argv, int *i, struct export_args *a, struct options *o)
{
	static const char *const valued[] = { "bar", "offset", "length", "label", "socket" };
	const char *v;
	uint64_t bar;

	for (size_t k = 0; k < sizeof(valued) / sizeof(valued[0]); k++) {
		int at = *i;
		if (option_value(argc, argv, &at, valued[k]) == missing_value)
			return usage_error("export: --%s needs a value", valued[k]);
	}
	if ((v = option_value(argc, argv, i, "bar"))) {
		if (!parse_id(v, &bar) || bar > 5)
			return usage_error("export: bad BAR '%s' (0 to 5)", v);
		a->bar = (unsigned)bar;
		a->have_bar = true;
	} else if ((v = option_value(argc, argv, i, "offset"))) {
		return add_range_part(a, true, v);
	} else if ((v = option_value(argc, argv, i, "length"))) {
		return add_range_part(a, false, v);
	} else if ((v = option_value(argc, argv, i, "label"))) {
		a->label = v;
	} else if ((v = option_value(argc, argv, i, "socket"))) {
		o->socket = v;
	} else if (!strcmp(argv[*i], "--json")) {
		o->json = true;
	} else if (!strcmp(argv[*i], "--help")) {
		usage(stdout);
		return 0;
	} else {
		return usage_error("export: unknown option '%s'", argv[*i]);
	}
	return -1;
}

/* Options and operands may mix; everything after "--" is the command to run. Parsed by hand
 * because getopt would take CMD's own options for ours. */
static int parse_export(int argc, char **argv, struct export_args *a, struct options *o)
{
	for (int i = 1; i < argc; i++) {
		int r;
		if (!strcmp(argv[i], "--")) {
			if (i + 1 >= argc)
				return usage_error("export: no command after --");
			a->cmd = &argv[i + 1];
			break;
		}
		if (!strncmp(argv[i], "--", 2)) {
			r = export_option(argc, argv, &i, a, o);
			if (r >= 0)
				return r;
		} else if (!strcmp(argv[i], "-j")) {
			o->json = true;
		} else if (!strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "-s") && i + 1 < argc) {
			o->socket = argv[++i];
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return usage_error("export: unknown option '%s'", argv[i]);
		} else if (!a->device) {
			a->device = argv[i];
		} else {
			return usage_error("export: unexpected argument '%s' (put the command to "
					   "run after --)",
					   argv[i]);
		}
	}
	if (!a->device)
		return usage_error("export: missing DEVICE");
	if (!a->have_bar)
		return usage_error("export: missing --bar N");
	if (a->have_offset)
		return usage_error("export: --offset needs a --length after it");
	return -1;
}

static void print_lease(const struct options *o, const struct export_args *a, uint64_t id,
			uint64_t size, int fd)
{
	if (o->json) {
		bool first = true;
		putchar('{');
		json_kv_u64("lease", id, &first);
		json_kv_str("device", a->device, &first);
		json_kv_u64("bar", a->bar, &first);
		json_kv_u64("size", size, &first);
		json_kv_i64("fd", fd, &first);
		fputs("}\n", stdout);
	} else {
		char *dev = sanitize(a->device);
		printf("lease %" PRIu64 " device %s bar %u size %" PRIu64 " fd %d\n", id, dev,
		       a->bar, size, fd);
		free(dev);
	}
	fflush(stdout);
}

static void print_revoked(const struct options *o, const struct hold *h)
{
	if (o->json)
		printf("{\"lease\":%" PRIu64 ",\"revoked\":true,\"reason\":\"%s\"}\n", h->lease_id,
		       p2pbuf_reason_name(h->reason));
	else
		printf("lease %" PRIu64 " revoked: %s\n", h->lease_id,
		       p2pbuf_reason_name(h->reason));
	fflush(stdout);
}

/* Release at the end of a hold. A lease that already ended has nothing to release. */
static int finish_release(struct p2pbuf *conn, const struct hold *h)
{
	int r;

	if (h->ended)
		return 0;
	r = p2pbuf_release(conn, h->lease_id);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return fail_call(conn, r, "release lease %" PRIu64, h->lease_id);
	return 0;
}

/* Handle readable connection or queued events. Returns 0, or -errno when it is lost. */
static int pump_events(struct p2pbuf *conn)
{
	int r = p2pbuf_dispatch(conn);

	return r < 0 ? r : 0;
}

static int lost_connection(int err, const struct hold *h)
{
	errorf("lost the connection to p2pbufd (%s); lease %" PRIu64 " has ended", strerror(-err),
	       h->lease_id);
	return EXIT_FAIL;
}

/* Hold the lease until a signal or its revocation. */
static int hold_lease(struct p2pbuf *conn, const struct options *o, struct hold *h, int fd, int sfd)
{
	struct pollfd pfd[2] = {
		{ .fd = sfd, .events = POLLIN },
		{ .fd = p2pbuf_get_fd(conn), .events = POLLIN },
	};
	int r;

	for (;;) {
		bool sent;
		if (p2pbuf_pending(conn) && (r = pump_events(conn)) < 0)
			break;
		if (h->revoking) {
			/* The revocation is what the caller needs to know, even if the release
			 * that follows it fails (that failure is reported too). */
			close(fd);
			print_revoked(o, h);
			finish_release(conn, h);
			return EXIT_REVOKED;
		}
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		if ((pfd[0].revents & POLLIN) && read_signal(sfd, &sent) > 0) {
			close(fd);
			return finish_release(conn, h);
		}
		if (pfd[1].revents && (r = pump_events(conn)) < 0)
			break;
	}
	close(fd);
	return lost_connection(r, h);
}

/* In the child: let the command inherit fd, with the signal mask we started with. */
static _Noreturn void exec_command(char **cmd, int fd, const sigset_t *old_mask)
{
	sigprocmask(SIG_SETMASK, old_mask, NULL);
	if (fcntl(fd, F_SETFD, 0) < 0) {
		errorf("cannot pass the lease fd to %s: %m", cmd[0]);
		_exit(126);
	}
	execvp(cmd[0], cmd);
	errorf("cannot run %s: %m", cmd[0]);
	_exit(errno == ENOENT ? 127 : 126);
}

static void set_env_u64(const char *name, uint64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	if (setenv(name, buf, 1) < 0)
		oom();
}

static int child_status(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return EXIT_FAIL;
}

struct child {
	const char *name;
	pid_t pid;
	bool exited;
	int status;
	bool told; /* sent SIGTERM because the lease is going away */
};

/* Reap the child if it has exited. */
static void reap(struct child *c)
{
	int status;

	if (c->exited)
		return;
	if (waitpid(c->pid, &status, WNOHANG) == c->pid) {
		c->exited = true;
		c->status = status;
	}
}

/* The lease is going away (revoked, or the daemon is gone): the command holds the only copy
 * of the fd, so it is asked to stop, with SIGTERM, as the manual page documents. */
static void stop_child(struct child *c, const char *why, const struct hold *h)
{
	if (c->told || c->exited)
		return;
	errorf("lease %" PRIu64 " %s: sending SIGTERM to %s", h->lease_id, why, c->name);
	kill(c->pid, SIGTERM);
	c->told = true;
}

/* Wait for the child, forwarding SIGINT/SIGTERM and watching the lease. Returns 0 or the
 * connection error that ended the watch. */
static int wait_child(struct p2pbuf *conn, struct hold *h, struct child *c, int sfd)
{
	struct pollfd pfd[2] = {
		{ .fd = sfd, .events = POLLIN },
		{ .fd = p2pbuf_get_fd(conn), .events = POLLIN },
	};
	int err = 0;

	while (!c->exited) {
		int sig;
		bool sent;
		if (pfd[1].fd >= 0 && p2pbuf_pending(conn))
			err = pump_events(conn);
		if (err < 0 && pfd[1].fd >= 0) {
			pfd[1].fd = -1; /* stop polling a dead connection */
			stop_child(c, "ended with the connection to p2pbufd", h);
		}
		if (h->revoking) {
			char why[64];
			snprintf(why, sizeof(why), "is being revoked (%s)",
				 p2pbuf_reason_name(h->reason));
			stop_child(c, why, h);
		}
		if (poll(pfd, 2, -1) < 0 && errno != EINTR)
			return -errno;
		while ((pfd[0].revents & POLLIN) && (sig = read_signal(sfd, &sent)) > 0) {
			/* A terminal's ^C already reached the command (same process group);
			 * forward only what was sent to us alone. */
			if (sig != SIGCHLD && sent)
				kill(c->pid, sig);
		}
		reap(c);
		if (pfd[1].fd >= 0 && pfd[1].revents && err == 0)
			err = pump_events(conn);
	}
	return err;
}

static int run_command(struct p2pbuf *conn, const struct export_args *a, struct hold *h, int fd,
		       uint64_t size, int sfd, const sigset_t *old_mask)
{
	struct child c = { .name = a->cmd[0] };
	int err;

	set_env_u64("P2PBUF_FD", (uint64_t)fd);
	set_env_u64("P2PBUF_LEASE_ID", h->lease_id);
	set_env_u64("P2PBUF_SIZE", size);
	if (setenv("P2PBUF_DEVICE", a->device, 1) < 0)
		oom();
	fflush(NULL);
	c.pid = fork();
	if (c.pid < 0) {
		errorf("cannot start %s: %m", a->cmd[0]);
		p2pbuf_lease_release(conn, h->lease_id, fd);
		return EXIT_FAIL;
	}
	if (c.pid == 0)
		exec_command(a->cmd, fd, old_mask);
	/* The command holds the lease now; our copy would only keep the buffer alive. */
	close(fd);
	err = wait_child(conn, h, &c, sfd);
	if (err < 0)
		return lost_connection(err, h);
	if (h->revoking) {
		finish_release(conn, h);
		return EXIT_REVOKED;
	}
	err = finish_release(conn, h);
	return err > 0 ? err : child_status(c.status);
}

/* Keep the lease fd off 0-2, which a command expects to be its stdio. */
static int move_fd_above_stdio(int fd)
{
	int nfd;

	if (fd > STDERR_FILENO)
		return fd;
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
	close(fd);
	return nfd < 0 ? -errno : nfd;
}

static int do_export(struct p2pbuf *conn, const struct options *o, const struct export_args *a,
		     int sfd, const sigset_t *old_mask)
{
	struct hold h = { 0 };
	uint64_t size;
	int fd;

	p2pbuf_set_event_handler(conn, hold_event, &h);
	fd = p2pbuf_export(conn, a->device, a->bar, a->ranges, a->n_ranges, a->label, &h.lease_id,
			   &size);
	if (fd < 0)
		return fail_call(conn, fd, "export %s bar %u", a->device, a->bar);
	fd = move_fd_above_stdio(fd);
	if (fd < 0) {
		errorf("cannot move the lease fd: %s", strerror(-fd));
		p2pbuf_release(conn, h.lease_id);
		return EXIT_FAIL;
	}
	if (a->cmd)
		return run_command(conn, a, &h, fd, size, sfd, old_mask);
	print_lease(o, a, h.lease_id, size, fd);
	return hold_lease(conn, o, &h, fd, sfd);
}

static int cmd_export(int argc, char **argv, struct options *o)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGCHLD };
	struct export_args a = { 0 };
	struct p2pbuf *conn;
	sigset_t old_mask;
	int r, sfd;

	r = parse_export(argc, argv, &a, o);
	if (r >= 0)
		return r;
	/* Before the export: a signal between getting the lease and watching for signals
	 * must still end in a clean release. */
	sfd = signal_fd(sigs, sizeof(sigs) / sizeof(sigs[0]), &old_mask);
	if (sfd < 0) {
		errorf("cannot set up signal handling: %s", strerror(-sfd));
		return EXIT_FAIL;
	}
	r = open_conn(o, &conn);
	if (r == 0) {
		r = do_export(conn, o, &a, sfd, &old_mask);
		p2pbuf_disconnect(conn);
	}
	close(sfd);
	return r;
}

/* ---- watch ---- */

static void watch_event_json(const struct p2pbuf_event *ev, const char *now)
{
	char deadline[64];
	bool first = true;

	putchar('{');
	json_kv_str("time", now, &first);
	switch (ev->type) {
	case P2PBUF_EVENT_LEASE_REVOKING:
		format_time(ev->deadline_ms, deadline, sizeof(deadline));
		json_kv_str("event", "lease-revoking", &first);
		json_kv_u64("lease", ev->lease_id, &first);
		json_kv_str("reason", p2pbuf_reason_name(ev->reason), &first);
		json_kv_str("deadline", deadline, &first);
		json_kv_i64("deadline_ms", ev->deadline_ms, &first);
		break;
	case P2PBUF_EVENT_LEASE_REVOKED:
		json_kv_str("event", "lease-revoked", &first);
		json_kv_u64("lease", ev->lease_id, &first);
		json_kv_str("reason", p2pbuf_reason_name(ev->reason), &first);
		break;
	case P2PBUF_EVENT_DEVICE_STATE:
		json_kv_str("event", "device-state", &first);
		json_kv_str("device", ev->device, &first);
		json_kv_str("state", p2pbuf_device_state_name(ev->state), &first);
		json_kv_u64("generation", ev->generation, &first);
		json_kv_str("message", ev->message, &first);
		break;
	}
	fputs("}\n", stdout);
}

static void watch_event_text(const struct p2pbuf_event *ev, const char *now)
{
	char deadline[64];
	char *dev;

	switch (ev->type) {
	case P2PBUF_EVENT_LEASE_REVOKING:
		format_time(ev->deadline_ms, deadline, sizeof(deadline));
		printf("%s lease %" PRIu64 " revoking reason=%s deadline=%s\n", now, ev->lease_id,
		       p2pbuf_reason_name(ev->reason), deadline);
		break;
	case P2PBUF_EVENT_LEASE_REVOKED:
		printf("%s lease %" PRIu64 " revoked reason=%s\n", now, ev->lease_id,
		       p2pbuf_reason_name(ev->reason));
		break;
	case P2PBUF_EVENT_DEVICE_STATE:
		dev = sanitize(ev->device);
		printf("%s device %s state=%s gen=%" PRIu32, now, dev,
		       p2pbuf_device_state_name(ev->state), ev->generation);
		if (ev->message) {
			char *msg = escape_text(ev->message, true);
			printf(" message=\"%s\"", msg);
			free(msg);
		}
		putchar('\n');
		free(dev);
		break;
	}
}

static void watch_event(struct p2pbuf *conn __attribute__((unused)), const struct p2pbuf_event *ev,
			void *userdata)
{
	const struct options *o = userdata;
	char now[64];

	format_time(realtime_ms(), now, sizeof(now));
	if (o->json)
		watch_event_json(ev, now);
	else
		watch_event_text(ev, now);
}

static int cmd_watch(struct p2pbuf *conn, const struct options *o)
{
	static const int sigs[] = { SIGINT, SIGTERM };
	struct pollfd pfd[2];
	sigset_t old_mask;
	int r, sfd;

	/* Every event is wanted by admins and observers; everybody else gets the events of
	 * their own leases and device states, which is what the daemon allows them. */
	r = p2pbuf_subscribe(conn, true);
	if (r == -EPERM)
		r = p2pbuf_subscribe(conn, false);
	if (r < 0)
		return fail_call(conn, r, "watch");
	sfd = signal_fd(sigs, sizeof(sigs) / sizeof(sigs[0]), &old_mask);
	if (sfd < 0) {
		errorf("cannot set up signal handling: %s", strerror(-sfd));
		return EXIT_FAIL;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	p2pbuf_set_event_handler(conn, watch_event, (void *)o);
	pfd[0] = (struct pollfd){ .fd = sfd, .events = POLLIN };
	pfd[1] = (struct pollfd){ .fd = p2pbuf_get_fd(conn), .events = POLLIN };
	for (r = 0; r >= 0;) {
		bool sent;
		if (p2pbuf_pending(conn) && (r = p2pbuf_dispatch(conn)) < 0)
			break;
		if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
			r = -errno;
			break;
		}
		if ((pfd[0].revents & POLLIN) && read_signal(sfd, &sent) > 0) {
			close(sfd);
			return 0;
		}
		if (pfd[1].revents)
			r = p2pbuf_dispatch(conn);
	}
	close(sfd);
	if (r == -ECONNRESET)
		errorf("p2pbufd closed the connection");
	else
		errorf("watch: %s", strerror(-r));
	return EXIT_FAIL;
}

/* ---- simple commands ---- */

static int cmd_release(struct p2pbuf *conn, const char *arg)
{
	uint64_t id;
	int r;

	if (!parse_id(arg, &id))
		return usage_error("release: bad lease ID '%s'", arg);
	r = p2pbuf_release(conn, id);
	if (r < 0)
		return fail_call(conn, r, "release lease %" PRIu64, id);
	printf("lease %" PRIu64 " released\n", id);
	return 0;
}

static int cmd_revoke(struct p2pbuf *conn, const char *arg)
{
	uint64_t id;
	int r;

	if (!parse_id(arg, &id))
		return usage_error("revoke: bad lease ID '%s'", arg);
	r = p2pbuf_revoke(conn, id);
	if (r < 0)
		return fail_admin_call(conn, r, "revoke lease %" PRIu64, id);
	printf("lease %" PRIu64 " is being revoked; its holder has been told to let go\n", id);
	return 0;
}

static int cmd_reset(struct p2pbuf *conn, const char *device)
{
	char *dev;
	int r = p2pbuf_reset(conn, device);

	if (r < 0)
		return fail_admin_call(conn, r, "reset %s", device);
	dev = sanitize(device);
	printf("device %s reset; its leases have ended\n", dev);
	free(dev);
	return 0;
}

/* ---- main ---- */

enum command { CMD_DEVICES, CMD_LEASES, CMD_RELEASE, CMD_RESET, CMD_REVOKE, CMD_STATUS, CMD_WATCH };

static const struct {
	const char *name;
	enum command cmd;
	int operands;
	const char *operand;
} commands[] = {
	{ "devices", CMD_DEVICES, 0, NULL },	   { "leases", CMD_LEASES, 0, NULL },
	{ "release", CMD_RELEASE, 1, "lease ID" }, { "reset", CMD_RESET, 1, "DEVICE" },
	{ "revoke", CMD_REVOKE, 1, "lease ID" },   { "status", CMD_STATUS, 0, NULL },
	{ "watch", CMD_WATCH, 0, NULL },
};

static int run(struct p2pbuf *conn, enum command cmd, const char *operand, const struct options *o,
	       bool all)
{
	switch (cmd) {
	case CMD_DEVICES:
		return cmd_devices(conn, o);
	case CMD_LEASES:
		return cmd_leases(conn, o, all);
	case CMD_RELEASE:
		return cmd_release(conn, operand);
	case CMD_RESET:
		return cmd_reset(conn, operand);
	case CMD_REVOKE:
		return cmd_revoke(conn, operand);
	case CMD_STATUS:
		return cmd_status(conn, o);
	case CMD_WATCH:
		return cmd_watch(conn, o);
	}
	return EXIT_FAIL;
}

/* Every command but export: options, operands, connect, run. */
static int dispatch_command(int argc, char **argv, struct options *o)
{
	struct p2pbuf *conn;
	bool all = false;
	int r;

	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[0], commands[i].name) != 0)
			continue;
		r = parse_command(argc, argv, o, commands[i].cmd == CMD_LEASES ? &all : NULL);
		if (r < 0)
			r = expect_operands(argc, argv, commands[i].operands, commands[i].operand);
		if (r >= 0)
			return r;
		r = open_conn(o, &conn);
		if (r != 0)
			return r;
		r = run(conn, commands[i].cmd, argv[optind], o, all);
		p2pbuf_disconnect(conn);
		return r;
	}
	return usage_error("unknown command '%s'", argv[0]);
}

/* Anything written to stdout must have arrived, or the exit status must say otherwise. */
static int check_stdout(int r)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		errorf("cannot write output: %m");
		return r ? r : EXIT_FAIL;
	}
	return r;
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	int c, r;

	while ((c = getopt_long(argc, argv, "+s:jhV", common_options, NULL)) != -1) {
		if (c == OPT_ALL)
			return usage_error("--all belongs to the leases command");
		r = common_option(c, &o);
		if (r >= 0)
			return check_stdout(r);
	}
	if (optind >= argc)
		return usage_error("missing COMMAND");
	argc -= optind;
	argv += optind;
	if (!strcmp(argv[0], "export"))
		r = cmd_export(argc, argv, &o);
	else
		r = dispatch_command(argc, argv, &o);
	return check_stdout(r);
}
