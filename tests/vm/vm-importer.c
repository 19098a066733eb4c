/* SPDX-License-Identifier: MIT */
/*
 * vm-importer: the C side of the VM test cases (tests/vm/cases.sh), run inside the QEMU guest.
 * It is a client of p2pbufd through libp2pbuf's public API only, plus a few helpers that a
 * busybox-only guest lacks.
 *
 * Modes (each prints what it saw; the last line of a failure says "expected ..., got ..."):
 *
 *   vm-importer json EXPR... < JSON
 *       Print the value at each EXPR in a JSON document (p2pbuf-client --json output), on one
 *       line separated by spaces. EXPR is a chain of .KEY, [N] and [KEY=VALUE] (the first array
 *       element whose KEY is VALUE), optionally ending in # (the number of elements). Strings
 *       print unquoted. Exit 1 when a path does not exist (its value prints empty), 2 on
 *       malformed JSON.
 *
 *   vm-importer pattern FILE OFFSET LENGTH
 *       mmap FILE (a /sys/bus/pci/devices/BDF/resourceN of ivshmem) and check that the bytes
 *       at OFFSET..OFFSET+LENGTH are the pattern run-vm.sh wrote into the ivshmem backing file:
 *       the 16 bytes at every offset O read printf("%08x p2pbuf\n", O).
 *
 *   vm-importer as USER|UID CMD [ARG]...
 *       Drop to USER (its groups from /etc/group) or to UID (gid = UID, no supplementary
 *       groups), then exec CMD.
 *
 *   vm-importer export [--socket PATH] [--expect ok|ERRNO] [--label L] DEVICE BAR OFFSET LENGTH
 *       Ask p2pbufd for one range through libp2pbuf; exit 0 when the outcome is the expected
 *       one (default ok; e.g. --expect EPERM).
 *
 *   vm-importer dma [--socket PATH] --edu BDF DEVICE BAR OFFSET LENGTH
 *       The iommufd holder test: take a lease on DEVICE BAR OFFSET+LENGTH (ivshmem BAR 2),
 *       open our own edu device (BDF, bound to vfio-pci, not one p2pbufd owns) through
 *       /dev/vfio/devices/vfioN + /dev/iommu, map the dma-buf into our IOAS with
 *       IOMMU_IOAS_MAP_FILE and have edu DMA through it; then ask p2pbufd to reset DEVICE and
 *       prove that the old buffer is dead. Prints one "step NAME ok|FAIL: detail" line per
 *       step (cases.sh turns them into results); a step that could not run because an
 *       earlier one failed is reported as FAIL too, so that the number of results is fixed.
 *
 *   vm-importer dma-hold [--socket PATH] --edu BDF DEVICE BAR OFFSET LENGTH
 *       A holder that lives through restarts of p2pbufd: a lease (reconnecting on) mapped
 *       into our own IOAS, "ready lease ID", then commands on standard input: "check NAME"
 *       prints "check NAME live|dead: why" from an edu DMA through the mapping, "map NAME"
 *       maps the held fd again ("map NAME ok|ERRNO"), "sync NAME" dispatches the
 *       connection (reconnecting in there), "quit". Events are printed as they are
 *       dispatched ("reconnected reclaimed N", "event revoked lease ID reason R").
 *
 *   vm-importer revoke --then keep|release --deadline MS [--socket PATH] [--edu BDF]
 *                      DEVICE BAR OFFSET LENGTH
 *       A holder whose lease an admin revokes (the device's revoke-deadline is MS). Two
 *       connections: the victim's lease at OFFSET+LENGTH, a bystander's right after it; with
 *       --edu both are mapped into our own IOAS (as in dma) and read through. Prints
 *       "ready lease V bystander Y generation G", then waits for cases.sh to revoke V
 *       (p2pbuf-client revoke V). keep: keep the fd and the mapping past the deadline; the
 *       device must cycle: LeaseRevoked{V, admin} at the deadline, LeaseRevoked{Y,
 *       device-cycle}, generation + 1, both mappings dead (DMA reads zeros), a new
 *       IOMMU_IOAS_MAP_FILE of V's fd ENODEV, a new lease live. release: unmap, close and
 *       release when told; LeaseRevoked{V, admin} before the deadline, and after it no cycle,
 *       Y still active and live. "step NAME ok|FAIL: detail" lines as in dma.
 *
 *   vm-importer pass-fd [--socket PATH] [--edu BDF] DEVICE BAR OFFSET LENGTH
 *       A holder that releases a lease whose buffer another process still holds: it passes
 *       the fd of a lease (OFFSET+LENGTH) by SCM_RIGHTS to a keeper process (forked before the
 *       export), and with --edu maps a second lease (right after it) into its IOAS; then it
 *       releases both (closing its fds, keeping the mapping), prints "released lease P keeper
 *       K mapped M" and "wait lingering", and waits for SIGUSR1; then (reads through the
 *       mapping, which must still be live, and) has the keeper close its copy, prints
 *       "wait keeper-closed", waits for SIGUSR1 again, and unmaps. cases.sh checks the
 *       listings between. Steps as in dma.
 *
 *   vm-importer group [--socket PATH] [--edu BDF] DEVICE-A DEVICE-B BAR OFFSET LENGTH
 *       Two devices of one IOMMU group (p2pbufd shares the group between them): a lease on
 *       each (OFFSET+LENGTH of BAR, ivshmem's pattern), each on its own connection; with
 *       --edu both mapped into our own IOAS and read through. Then A is reset: A's lease is
 *       revoked (reason reset, generation + 1), B's is untouched (no event, active, B's
 *       generation unchanged; with --edu its mapping still reads the pattern and its fd maps
 *       again, while A's old mapping reads zeros and its fd gives ENODEV), and a new lease on
 *       A works; then the same with the roles swapped. Steps as in dma.
 *
 *   vm-importer manager --log FILE SOCKET -- P2PBUFD [ARG]...
 *       A service manager for restarts of p2pbufd outside systemd, whose fd store behaves as
 *       systemd 252's: a stored fd that is the same open file as one stored already (kcmp) is
 *       dropped and the first name stays, FDSTOREREMOVE drops every fd of a name, and a start
 *       passes the listening socket (SOCKET, made here) and every stored fd as LISTEN_FDS /
 *       LISTEN_FDNAMES. Commands on standard input, "CMD TAG", each answered by a line
 *       starting "CMD TAG ": start (waits for READY=1; also "pid TAG PID"), crash (SIGKILL),
 *       stop (SIGTERM; the exit status), names ("stored TAG NAME" lines first), quit.
 *       p2pbufd's output goes to FILE.
 *
 *   vm-importer fence-hold [--socket PATH] DEVICE BAR OFFSET LENGTH
 *       An importer that holds up the close of DEVICE: a lease (OFFSET+LENGTH of BAR), and
 *       on vgem (the /dev/dri/card* whose DRM_IOCTL_VERSION name is "vgem") a dumb buffer
 *       with a write fence (DRM_IOCTL_VGEM_FENCE_ATTACH) that is never signaled; the fence,
 *       exported from the buffer's PRIME dma-buf as a sync_file, is imported into the lease's
 *       buffer (DMA_BUF_IOCTL_IMPORT_SYNC_FILE, write). The kernel's revocation of the lease's
 *       buffer (at the device's close or reset) then waits for it, until vgem signals it
 *       itself 10 s after it was made. Prints "ready lease ID" and keeps everything until
 *       "quit" or a signal; commands on standard input: "fence NAME" ("fence NAME pending",
 *       or "fence NAME signaled MS", MS from its making to its signal), "stop NAME PID"
 *       (SIGTERM to p2pbufd PID, waits up to 60 s for its exit: "stop NAME after-fence: ..."
 *       when it exited after the fence signaled, "before-fence: ..." when before, "void: ..."
 *       when the fence was no longer pending at the SIGTERM, with the times in ms after it).
 *
 *   vm-importer events DEVICE [ID=NAME]... < WATCH
 *       The events of `p2pbuf-client --json watch` output that concern DEVICE's state or the
 *       leases ID, as one line of words NAME:revoking:REASON, NAME:revoked:REASON and
 *       DEVICE:STATE, in order.
 *
 * The uapi newer than the build host's headers comes from vm-uapi.h.
 */
#ifndef _GNU_SOURCE /* config.h defines it in the automake build */
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "p2pbuf.h"
#include "vm-uapi.h"
#include <linux/sync_file.h>

#define PROG "vm-importer"
#define PAGE 4096u

/* ---- small helpers ---- */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static uint64_t parse_u64(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || s[0] == '-')
		die("bad %s '%s'", what, s);
	return v;
}

/* "EPERM" for 1, or the number when glibc has no name for it. */
static const char *errno_name(int e)
{
	static char buf[32]; /* "errno -2147483648" fits */
	const char *n = e > 0 ? strerrorname_np(e) : NULL;

	if (n)
		return n;
	snprintf(buf, sizeof(buf), "errno %d", e);
	return buf;
}

/* The errno whose name is s ("EPERM"), or 0. */
static int errno_from_name(const char *s)
{
	for (int e = 1; e < 4096; e++) {
		const char *n = strerrorname_np(e);
		if (n && strcmp(n, s) == 0)
			return e;
	}
	return 0;
}

/* Bytes as a C string literal body, for "expected ..., got ..." lines. */
static void escape(const unsigned char *p, size_t n, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 5 < outlen; i++) {
		if (p[i] == '\n')
			o += (size_t)snprintf(out + o, outlen - o, "\\n");
		else if (isprint(p[i]) && p[i] != '\\' && p[i] != '\'')
			out[o++] = (char)p[i];
		else
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", p[i]);
	}
	out[o] = '\0';
}

/* ---- json ---- */

static const char *ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

static const char *skip_value(const char *p);

/* Past the members or elements of the object or array at p ('{' or '['), or NULL. */
static const char *skip_container(const char *p)
{
	char close = *p == '{' ? '}' : ']';

	p = ws(p + 1);
	if (*p == close)
		return p + 1;
	for (;;) {
		if (close == '}') {
			p = skip_value(p);
			if (!p || *(p = ws(p)) != ':')
				return NULL;
			p++;
		}
		p = skip_value(p);
		if (!p)
			return NULL;
		p = ws(p);
		if (*p == ',') {
			p = ws(p + 1);
			continue;
		}
		return *p == close ? p + 1 : NULL;
	}
}

/* The end of the JSON value at p, or NULL when it is malformed. */
static const char *skip_value(const char *p)
{
	p = ws(p);
	if (*p == '"') {
		for (p++; *p && *p != '"'; p++)
			if (*p == '\\' && p[1])
				p++;
		return *p ? p + 1 : NULL;
	}
	if (*p == '{' || *p == '[')
		return skip_container(p);
	if (!*p || strchr(",:}]", *p))
		return NULL;
	while (*p && !strchr(",:}] \t\r\n", *p))
		p++;
	return p;
}

/* The text of the scalar at p: a string unescaped (\uXXXX beyond ASCII becomes '?'), any
 * other value as written. Malloc'd. */
static char *value_text(const char *p)
{
	const char *end;
	char *out, *o;

	p = ws(p);
	end = skip_value(p);
	if (!end)
		return NULL;
	out = o = calloc(1, (size_t)(end - p) + 1);
	if (!out)
		die("out of memory");
	if (*p != '"') {
		memcpy(out, p, (size_t)(end - p));
		return out;
	}
	for (p++; p < end - 1; p++) {
		if (*p != '\\') {
			*o++ = *p;
			continue;
		}
		p++;
		switch (*p) {
		case 'n':
			*o++ = '\n';
			break;
		case 't':
			*o++ = '\t';
			break;
		case 'r':
			*o++ = '\r';
			break;
		case 'b':
			*o++ = '\b';
			break;
		case 'f':
			*o++ = '\f';
			break;
		case 'u': {
			unsigned cp = 0;
			if (sscanf(p + 1, "%4x", &cp) == 1)
				p += 4;
			*o++ = cp < 0x80 ? (char)cp : '?';
			break;
		}
		default:
			*o++ = *p;
			break;
		}
	}
	return out;
}

/* The value of member key of the object at p, or NULL. */
static const char *json_member(const char *p, const char *key)
{
	p = ws(p);
	if (*p != '{')
		return NULL;
	p = ws(p + 1);
	while (*p == '"') {
		char *k = value_text(p);
		const char *v;
		bool hit;
		p = skip_value(p);
		if (!k || !p || *(p = ws(p)) != ':') {
			free(k);
			return NULL;
		}
		v = ws(p + 1);
		hit = strcmp(k, key) == 0;
		free(k);
		if (hit)
			return v;
		p = skip_value(v);
		if (!p || *(p = ws(p)) != ',')
			return NULL;
		p = ws(p + 1);
	}
	return NULL;
}

/* Element n of the array at p, or NULL. */
static const char *json_index(const char *p, long n)
{
	p = ws(p);
	if (*p != '[')
		return NULL;
	p = ws(p + 1);
	for (long i = 0; *p && *p != ']'; i++) {
		if (i == n)
			return p;
		p = skip_value(p);
		if (!p || *(p = ws(p)) != ',')
			return NULL;
		p = ws(p + 1);
	}
	return NULL;
}

/* The first element of the array at p whose member key reads value, or NULL. */
static const char *json_find(const char *p, const char *key, const char *value)
{
	const char *e;

	for (long i = 0; (e = json_index(p, i)); i++) {
		const char *m = json_member(e, key);
		char *t = m ? value_text(m) : NULL;
		bool hit = t && strcmp(t, value) == 0;
		free(t);
		if (hit)
			return e;
	}
	return NULL;
}

static long json_count(const char *p)
{
	long n = 0;

	p = ws(p);
	if (*p == '[') {
		while (json_index(p, n))
			n++;
		return n;
	}
	if (*p != '{')
		return -1;
	p = ws(p + 1);
	while (*p == '"') {
		n++;
		p = skip_value(p);
		if (!p || *(p = ws(p)) != ':' || !(p = skip_value(p + 1)))
			return -1;
		p = ws(p);
		if (*p != ',')
			break;
		p = ws(p + 1);
	}
	return n;
}

/* One path segment at *expr applied to v. */
static const char *json_step(const char *v, const char **expr)
{
	const char *e = *expr, *end;
	char seg[256];
	size_t len;

	if (*e == '.') {
		len = strcspn(e + 1, ".[#");
		end = e + 1 + len;
	} else if (*e == '[') {
		end = strchr(e, ']');
		if (!end)
			die("json: unterminated [ in the path");
		len = (size_t)(end - e - 1);
		end++;
	} else {
		die("json: bad path at '%s'", e);
	}
	if (len >= sizeof(seg))
		die("json: path segment too long");
	memcpy(seg, e + 1, len);
	seg[len] = '\0';
	*expr = end;
	if (*e == '.')
		return json_member(v, seg);
	char *eq = strchr(seg, '=');
	if (!eq)
		return json_index(v, strtol(seg, NULL, 10));
	*eq = '\0';
	return json_find(v, seg, eq + 1);
}

static char *read_all(FILE *f)
{
	size_t len = 0, cap = 65536;
	char *buf = malloc(cap);
	size_t n;

	while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (len + 1 == cap)
			buf = realloc(buf, cap *= 2);
	}
	if (!buf)
		die("out of memory");
	buf[len] = '\0';
	return buf;
}

static int cmd_json(int argc, char **argv)
{
	char *doc;
	int rc = 0;

	if (argc < 2)
		die("usage: json EXPR... < JSON");
	doc = read_all(stdin);
	if (!skip_value(doc)) {
		fprintf(stderr, PROG ": json: malformed JSON: %.200s\n", doc);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		const char *expr = argv[i], *v = doc;
		while (v && *expr && *expr != '#')
			v = json_step(v, &expr);
		if (i > 1)
			putchar(' ');
		if (!v) {
			fprintf(stderr, PROG ": json: %s: no such value in %.300s\n", argv[i], doc);
			rc = 1;
		} else if (*expr == '#') {
			printf("%ld", json_count(v));
		} else {
			char *t = value_text(v);
			printf("%s", t ? t : "");
			free(t);
		}
	}
	putchar('\n');
	free(doc);
	return rc;
}

/* ---- the ivshmem pattern ---- */

/* Check buf (len bytes, read at BAR offset off) against the pattern. Returns true, or false
 * with "expected ..., got ..." in why. */
static bool pattern_ok(const unsigned char *buf, size_t len, uint64_t off, char *why, size_t wlen)
{
	for (size_t i = 0; i < len; i += 16) {
		uint64_t o = off + i;
		char want[32], got[80], w[80];
		size_t n = len - i < 16 ? len - i : 16;
		snprintf(want, sizeof(want), "%08" PRIx64 " p2pbuf\n", o & ~(uint64_t)15);
		if (o % 16 == 0 && memcmp(buf + i, want, n) == 0)
			continue;
		escape((const unsigned char *)want, n, w, sizeof(w));
		escape(buf + i, n, got, sizeof(got));
		snprintf(why, wlen, "at BAR offset 0x%" PRIx64 ": expected '%s', got '%s'", o, w,
			 got);
		return false;
	}
	return true;
}

/* Read len bytes at off of a sysfs resource file through mmap (read() is not offered for
 * memory BARs), with 32-bit loads as the device would see them. */
static int resource_read(const char *path, uint64_t off, size_t len, unsigned char *out)
{
	uint64_t base = off & ~(uint64_t)(PAGE - 1);
	size_t maplen = (size_t)(off - base) + len;
	int fd = open(path, O_RDWR | O_CLOEXEC);
	volatile uint32_t *p;
	void *m;

	if (fd < 0)
		return -errno;
	m = mmap(NULL, maplen, PROT_READ, MAP_SHARED, fd, (off_t)base);
	close(fd);
	if (m == MAP_FAILED)
		return -errno;
	p = (volatile uint32_t *)((char *)m + (off - base));
	for (size_t i = 0; i + 4 <= len; i += 4) {
		uint32_t v = p[i / 4];
		memcpy(out + i, &v, 4);
	}
	munmap(m, maplen);
	return 0;
}

static int cmd_pattern(int argc, char **argv)
{
	uint64_t off, len;
	unsigned char *buf;
	char why[256], first[64];
	int r;

	if (argc != 4)
		die("usage: pattern FILE OFFSET LENGTH");
	off = parse_u64(argv[2], "offset");
	len = parse_u64(argv[3], "length");
	if (len == 0 || len > (64u << 20) || off % 4 || len % 16)
		die("pattern: offset must be 4-aligned, length a multiple of 16, at most 64M");
	buf = malloc(len);
	if (!buf)
		die("out of memory");
	r = resource_read(argv[1], off, len, buf);
	if (r < 0) {
		printf("expected the pattern at 0x%" PRIx64 ", got no mapping of %s: %s\n", off,
		       argv[1], strerror(-r));
		return 1;
	}
	if (!pattern_ok(buf, len, off, why, sizeof(why))) {
		printf("%s\n", why);
		return 1;
	}
	escape(buf, 16, first, sizeof(first));
	printf("pattern ok: %" PRIu64 " bytes at BAR offset 0x%" PRIx64 " of %s, first '%s'\n", len,
	       off, argv[1], first);
	free(buf);
	return 0;
}

/* ---- identities ---- */

/* Become who (a user name, or a numeric uid with gid = uid and no supplementary groups). */
static void drop_to(const char *who)
{
	struct passwd *pw = getpwnam(who);
	char *end;

	if (pw) {
		if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
		    setuid(pw->pw_uid) < 0)
			die("cannot become %s: %m", who);
		return;
	}
	errno = 0;
	unsigned long uid = strtoul(who, &end, 10);
	if (errno || *end || end == who || uid > 65535)
		die("no user '%s'", who);
	if (setgroups(0, NULL) < 0 || setgid((gid_t)uid) < 0 || setuid((uid_t)uid) < 0)
		die("cannot become uid %lu: %m", uid);
}

static void print_identity(void)
{
	gid_t groups[64];
	int n = getgroups(64, groups);

	printf("identity: uid %u gid %u groups", (unsigned)getuid(), (unsigned)getgid());
	for (int i = 0; i < n; i++)
		printf("%s%u", i ? "," : " ", (unsigned)groups[i]);
	printf("%s\n", n > 0 ? "" : " -");
}

static int cmd_as(int argc, char **argv)
{
	if (argc < 3)
		die("usage: as USER|UID CMD [ARG]...");
	drop_to(argv[1]);
	execvp(argv[2], argv + 2);
	fprintf(stderr, PROG ": cannot run %s: %m\n", argv[2]);
	return 127;
}

/* ---- export ---- */

struct conn_opts {
	const char *socket;
	const char *expect;
	const char *label;
	const char *edu;
	const char *then;     /* revoke: keep or release */
	const char *deadline; /* revoke, pass-fd: the device's revoke-deadline in ms */
};

/* Options of the modes that talk to p2pbufd (each takes a value); leaves *argi at the first
 * operand. */
static void parse_opts(int argc, char **argv, int *argi, struct conn_opts *o)
{
	int i = 1;

	while (i < argc && strncmp(argv[i], "--", 2) == 0) {
		const char *opt = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			die("%s needs a value", opt);
		if (!strcmp(opt, "--socket"))
			o->socket = v;
		else if (!strcmp(opt, "--expect"))
			o->expect = v;
		else if (!strcmp(opt, "--label"))
			o->label = v;
		else if (!strcmp(opt, "--edu"))
			o->edu = v;
		else if (!strcmp(opt, "--then"))
			o->then = v;
		else if (!strcmp(opt, "--deadline"))
			o->deadline = v;
		else
			die("unknown option %s", opt);
		i += 2;
	}
	*argi = i;
}

static struct p2pbuf *connect_or_die(const char *socket)
{
	struct p2pbuf *conn;
	int r = p2pbuf_connect(socket, &conn);

	if (r < 0) {
		printf("expected a connection to p2pbufd, got %s: %s\n", errno_name(-r),
		       strerror(-r));
		exit(1);
	}
	return conn;
}

static int cmd_export(int argc, char **argv)
{
	struct conn_opts o = { .expect = "ok", .label = "vm-importer" };
	struct p2pbuf_range range;
	struct p2pbuf *conn;
	uint64_t id = 0, size = 0;
	char got[160];
	int argi, fd, want = 0;
	unsigned bar;

	parse_opts(argc, argv, &argi, &o);
	if (argc - argi != 4)
		die("usage: export [--socket PATH] [--expect ok|ERRNO] [--label L] DEVICE BAR "
		    "OFFSET LENGTH");
	if (strcmp(o.expect, "ok") != 0 && !(want = errno_from_name(o.expect)))
		die("--expect: unknown errno name '%s'", o.expect);
	bar = (unsigned)parse_u64(argv[argi + 1], "BAR");
	range.offset = parse_u64(argv[argi + 2], "offset");
	range.length = parse_u64(argv[argi + 3], "length");
	print_identity();
	conn = connect_or_die(o.socket);
	fd = p2pbuf_export(conn, argv[argi], bar, &range, 1, o.label, &id, &size);
	if (fd >= 0) {
		printf("export: lease %" PRIu64 " size %" PRIu64 " fd %d\n", id, size, fd);
		snprintf(got, sizeof(got), "success (lease %" PRIu64 " size %" PRIu64 ")", id,
			 size);
		p2pbuf_lease_release(conn, id, fd);
	} else {
		printf("export: refused with %s (%d): %s\n", errno_name(-fd), fd,
		       p2pbuf_last_message(conn));
		snprintf(got, sizeof(got), "%s (\"%.120s\")", errno_name(-fd),
			 p2pbuf_last_message(conn));
	}
	p2pbuf_disconnect(conn);
	if ((want == 0 && fd >= 0) || (want != 0 && fd == -want)) {
		printf("as expected: %s\n", got);
		return 0;
	}
	printf("expected %s, got %s\n", want ? errno_name(want) : "success", got);
	return 1;
}

/* ---- our own edu device, through iommufd ---- */

/* IOVAs: below 256 MiB, edu's 28-bit DMA mask. */
#define IOVA_LEASE ((uint64_t)0x100000)	  /* the leased dma-buf */
#define IOVA_OWN ((uint64_t)0x200000)	  /* one page of our own memory */
#define IOVA_REVOKED ((uint64_t)0x300000) /* the revoked buffer again (must fail) */
#define IOVA_NEW ((uint64_t)0x400000)	  /* the buffer of a new lease after the reset */
#define EDU_ID 0x010000edu		  /* BAR0 register 0x00 */
#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_CNT 0x90
#define EDU_DMA_CMD 0x98
#define EDU_DMA_RUN 0x1
#define EDU_DMA_TO_PCI 0x2 /* edu buffer -> bus address; clear: bus address -> buffer */
#define EDU_BUF 0x40000	   /* edu's internal 4 KiB DMA buffer (not readable by MMIO) */
/* Bytes per edu DMA. Not the whole 4 KiB buffer: QEMU 7.2's edu_check_range() wants the
 * transfer's end strictly below the buffer's end and calls hw_error() (QEMU aborts, the
 * guest is gone) for a 4096-byte transfer. */
#define DMA_LEN 2048u

struct edu {
	int iommufd;
	int dev;
	uint32_t ioas;
	uint64_t bar0; /* region offsets in dev */
	uint64_t config;
};

static int region_offset(int dev, unsigned index, uint64_t *ret)
{
	struct vfio_region_info ri = { .argsz = sizeof(ri), .index = index };

	if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &ri) < 0)
		return -errno;
	*ret = ri.offset;
	return 0;
}

static int edu_rd32(const struct edu *e, unsigned reg, uint32_t *ret)
{
	return pread(e->dev, ret, 4, (off_t)(e->bar0 + reg)) == 4 ? 0 : -EIO;
}

static int edu_wr32(const struct edu *e, unsigned reg, uint32_t v)
{
	return pwrite(e->dev, &v, 4, (off_t)(e->bar0 + reg)) == 4 ? 0 : -EIO;
}

/* /dev/vfio/devices/vfioN of bdf, from sysfs. */
static int cdev_path(const char *bdf, char *buf, size_t len)
{
	char dir[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int r = -ENOENT;

	snprintf(dir, sizeof(dir), "/sys/bus/pci/devices/%s/vfio-dev", bdf);
	d = opendir(dir);
	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (strncmp(de->d_name, "vfio", 4) == 0) {
			snprintf(buf, len, "/dev/vfio/devices/%s", de->d_name);
			r = 0;
			break;
		}
	closedir(d);
	return r;
}

/* Record what failed with errno's text; returns -errno. */
static int efail(char *why, size_t wlen, const char *what)
{
	int e = errno ? errno : EIO;

	snprintf(why, wlen, "%.200s: %s", what, strerror(e)); /* what may be a long path */
	return -e;
}

/* Open edu through its cdev, bind it to a fresh iommufd, attach it to a new IOAS, enable
 * memory decode and bus mastering. why says what was done, or what failed. */
static int edu_open(const char *bdf, struct edu *e, char *why, size_t wlen)
{
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
	struct vfio_device_attach_iommufd_pt at = { .argsz = sizeof(at) };
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	char path[PATH_MAX];
	uint16_t cmd;
	uint32_t id = 0;
	int r = cdev_path(bdf, path, sizeof(path));

	if (r < 0) {
		snprintf(why, wlen, "no vfio-dev/vfioN for %s: %s", bdf, strerror(-r));
		return r;
	}
	e->dev = open(path, O_RDWR | O_CLOEXEC);
	if (e->dev < 0)
		return efail(why, wlen, path);
	e->iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	if (e->iommufd < 0)
		return efail(why, wlen, "/dev/iommu");
	bind.iommufd = e->iommufd;
	if (ioctl(e->dev, VFIO_DEVICE_BIND_IOMMUFD, &bind) < 0)
		return efail(why, wlen, "VFIO_DEVICE_BIND_IOMMUFD");
	if (ioctl(e->iommufd, IOMMU_IOAS_ALLOC, &alloc) < 0)
		return efail(why, wlen, "IOMMU_IOAS_ALLOC");
	e->ioas = alloc.out_ioas_id;
	at.pt_id = e->ioas;
	if (ioctl(e->dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at) < 0)
		return efail(why, wlen, "VFIO_DEVICE_ATTACH_IOMMUFD_PT");
	if (region_offset(e->dev, VFIO_PCI_BAR0_REGION_INDEX, &e->bar0) < 0 ||
	    region_offset(e->dev, VFIO_PCI_CONFIG_REGION_INDEX, &e->config) < 0)
		return efail(why, wlen, "VFIO_DEVICE_GET_REGION_INFO");
	if (pread(e->dev, &cmd, 2, (off_t)(e->config + PCI_COMMAND)) != 2)
		return efail(why, wlen, "reading PCI_COMMAND");
	cmd |= PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
	if (pwrite(e->dev, &cmd, 2, (off_t)(e->config + PCI_COMMAND)) != 2)
		return efail(why, wlen, "writing PCI_COMMAND");
	if (edu_rd32(e, 0, &id) < 0 || id != EDU_ID) {
		snprintf(why, wlen, "expected edu id 0x%x at BAR0 0x0, got 0x%x", EDU_ID, id);
		return -ENODEV;
	}
	snprintf(why, wlen, "%.200s bound to iommufd, IOAS %u attached, bus master on, id 0x%x",
		 path, e->ioas, id);
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One edu DMA of cnt bytes between bus address iova and edu's buffer; waits for the RUN bit
 * to clear (edu runs it from a 100 ms timer). */
static int edu_dma(const struct edu *e, uint64_t iova, bool to_pci, uint32_t cnt, char *why,
		   size_t wlen)
{
	uint32_t cmd = 0;
	int64_t deadline = now_ms() + 10000;
	int r = edu_wr32(e, EDU_DMA_SRC, (uint32_t)(to_pci ? EDU_BUF : iova));

	if (r == 0)
		r = edu_wr32(e, EDU_DMA_DST, (uint32_t)(to_pci ? iova : EDU_BUF));
	if (r == 0)
		r = edu_wr32(e, EDU_DMA_CNT, cnt);
	if (r == 0)
		r = edu_wr32(e, EDU_DMA_CMD, EDU_DMA_RUN | (to_pci ? EDU_DMA_TO_PCI : 0));
	while (r == 0) {
		usleep(10000);
		r = edu_rd32(e, EDU_DMA_CMD, &cmd);
		if (r < 0 || !(cmd & EDU_DMA_RUN))
			break;
		if (now_ms() > deadline) {
			snprintf(why, wlen, "edu DMA still running after 10 s");
			return -ETIMEDOUT;
		}
	}
	if (r < 0)
		snprintf(why, wlen, "accessing edu's DMA registers through BAR 0 failed");
	return r;
}

static int ioas_map_user(const struct edu *e, void *va, uint64_t len, uint64_t iova)
{
	struct iommu_ioas_map m = {
		.size = sizeof(m),
		.flags =
		    IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
		.ioas_id = e->ioas,
		.user_va = (uintptr_t)va,
		.length = len,
		.iova = iova,
	};

	return ioctl(e->iommufd, IOMMU_IOAS_MAP, &m) < 0 ? -errno : 0;
}

static int ioas_map_file(const struct edu *e, int fd, uint64_t len, uint64_t iova)
{
	struct iommu_ioas_map_file m = {
		.size = sizeof(m),
		.flags =
		    IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
		.ioas_id = e->ioas,
		.fd = fd,
		.start = 0,
		.length = len,
		.iova = iova,
	};

	return ioctl(e->iommufd, IOMMU_IOAS_MAP_FILE, &m) < 0 ? -errno : 0;
}

static int ioas_unmap(const struct edu *e, uint64_t iova, uint64_t len)
{
	struct iommu_ioas_unmap u = {
		.size = sizeof(u), .ioas_id = e->ioas, .iova = iova, .length = len
	};

	return ioctl(e->iommufd, IOMMU_IOAS_UNMAP, &u) < 0 ? -errno : 0;
}

/* ---- the dma mode's steps ---- */

enum step_id {
	S_EXPORT,
	S_EDU_OPEN,
	S_MAP_OWN,
	S_MAP_FILE,
	S_DMA_READ_LIVE,
	S_DMA_WRITE_LIVE,
	S_RESET,
	S_RESET_EVENT,
	S_DMA_READ_REVOKED,
	S_MAP_FILE_REVOKED,
	S_NEW_LEASE_LIVE,
	S_COUNT,
};

static const char *const step_names[S_COUNT] = {
	[S_EXPORT] = "export",
	[S_EDU_OPEN] = "edu-open",
	[S_MAP_OWN] = "map-own-page",
	[S_MAP_FILE] = "map-file",
	[S_DMA_READ_LIVE] = "dma-read-live",
	[S_DMA_WRITE_LIVE] = "dma-write-live",
	[S_RESET] = "reset",
	[S_RESET_EVENT] = "reset-event",
	[S_DMA_READ_REVOKED] = "dma-read-revoked",
	[S_MAP_FILE_REVOKED] = "map-file-revoked",
	[S_NEW_LEASE_LIVE] = "new-lease-live",
};

struct dma_test {
	const char *socket, *device, *edu_bdf;
	unsigned bar;
	struct p2pbuf_range range;
	struct p2pbuf *conn;
	uint64_t lease;
	int fd;
	char resource[PATH_MAX]; /* the exporter's sysfs resource file, for the write check */
	uint32_t generation;
	struct edu edu;
	unsigned char *own;  /* one page mapped at IOVA_OWN */
	uint64_t probe;	     /* offset inside the lease that DMA reads */
	int result[S_COUNT]; /* 0 not run, 1 ok, -1 failed */
	bool revoked_seen;
	enum p2pbuf_reason revoked_reason;
};

static bool step(struct dma_test *t, enum step_id s, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool step(struct dma_test *t, enum step_id s, bool ok, const char *fmt, ...)
{
	va_list ap;

	t->result[s] = ok ? 1 : -1;
	printf("step %s %s: ", step_names[s], ok ? "ok" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	return ok;
}

static void on_event(struct p2pbuf *conn, const struct p2pbuf_event *ev, void *userdata)
{
	struct dma_test *t = userdata;

	(void)conn;
	printf("event: type %d lease %" PRIu64 " reason %s\n", ev->type, ev->lease_id,
	       p2pbuf_reason_name(ev->reason));
	if (ev->type == P2PBUF_EVENT_LEASE_REVOKED && ev->lease_id == t->lease) {
		t->revoked_seen = true;
		t->revoked_reason = ev->reason;
	}
}

/* The generation and sysfs resource file of the device under test. */
static int device_facts(struct dma_test *t, uint32_t *ret_gen)
{
	struct p2pbuf_device *d;
	size_t n;
	int r = p2pbuf_list_devices(t->conn, &d, &n);

	if (r < 0)
		return r;
	r = -ENODEV;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(d[i].name, t->device) != 0)
			continue;
		*ret_gen = d[i].generation;
		snprintf(t->resource, sizeof(t->resource), "/sys/bus/pci/devices/%s/resource%u",
			 d[i].address, t->bar);
		r = 0;
	}
	p2pbuf_devices_free(d, n);
	return r;
}

static bool do_export(struct dma_test *t, enum step_id s, uint64_t *ret_id, int *ret_fd)
{
	uint64_t size = 0;
	int fd = p2pbuf_export(t->conn, t->device, t->bar, &t->range, 1, "vm-importer-dma", ret_id,
			       &size);

	if (fd < 0)
		return step(t, s, false, "expected a lease on %s BAR %u, got %s: %s", t->device,
			    t->bar, errno_name(-fd), p2pbuf_last_message(t->conn));
	*ret_fd = fd;
	if (s == S_EXPORT)
		step(t, s, size == t->range.length,
		     "lease %" PRIu64 " fd %d size %" PRIu64 " (expected %" PRIu64 ")", *ret_id, fd,
		     size, (uint64_t)t->range.length);
	return size == t->range.length;
}

/* DMA_LEN bytes at iova into edu's buffer and back out into own (our page at IOVA_OWN); own
 * is filled with fill first, so that a DMA that did not happen shows. */
static int edu_fetch(const struct edu *e, unsigned char *own, uint64_t iova, unsigned char fill,
		     char *why, size_t wlen)
{
	int r;

	memset(own, fill, PAGE);
	r = edu_dma(e, iova, false, DMA_LEN, why, wlen);
	if (r == 0)
		r = edu_dma(e, IOVA_OWN, true, DMA_LEN, why, wlen);
	return r;
}

static int dma_fetch(struct dma_test *t, uint64_t iova, unsigned char fill, char *why, size_t wlen)
{
	return edu_fetch(&t->edu, t->own, iova, fill, why, wlen);
}

/* Through the live mapping: what edu reads must be the host's pattern. */
static void test_read_live(struct dma_test *t, enum step_id s, uint64_t iova)
{
	char why[256], first[80];
	int r = dma_fetch(t, iova + t->probe, 0x5a, why, sizeof(why));

	if (r < 0) {
		step(t, s, false, "%s", why);
		return;
	}
	escape(t->own, 16, first, sizeof(first));
	if (pattern_ok(t->own, DMA_LEN, t->range.offset + t->probe, why, sizeof(why)))
		step(t, s, true,
		     "edu read %u bytes at IOVA 0x%" PRIx64 " = BAR offset 0x%" PRIx64
		     ": '%s' (the host's pattern)",
		     DMA_LEN, iova + t->probe, (uint64_t)t->range.offset + t->probe, first);
	else
		step(t, s, false, "edu DMA from IOVA 0x%" PRIx64 ": %s", iova + t->probe, why);
}

/* edu writes a marker through the mapping into the last page of the lease; the exporter's
 * view of the BAR (sysfs resource mmap) must show it. */
static void test_write_live(struct dma_test *t)
{
	static const char marker[] = "written by edu through the p2pbuf lease\n";
	uint64_t page = t->range.length - PAGE;
	unsigned char seen[sizeof(marker) + 3];
	char why[256], got[256];
	int r;

	memset(t->own, 0, PAGE);
	memcpy(t->own, marker, sizeof(marker));
	r = edu_dma(&t->edu, IOVA_OWN, false, DMA_LEN, why, sizeof(why));
	if (r == 0)
		r = edu_dma(&t->edu, IOVA_LEASE + page, true, DMA_LEN, why, sizeof(why));
	if (r < 0) {
		step(t, S_DMA_WRITE_LIVE, false, "%s", why);
		return;
	}
	r = resource_read(t->resource, t->range.offset + page, sizeof(seen) & ~3u, seen);
	if (r < 0) {
		step(t, S_DMA_WRITE_LIVE, false, "expected to read %s, got %s", t->resource,
		     strerror(-r));
		return;
	}
	escape(seen, sizeof(marker) - 1, got, sizeof(got));
	step(t, S_DMA_WRITE_LIVE, memcmp(seen, marker, sizeof(marker) - 1) == 0,
	     "edu wrote at IOVA 0x%" PRIx64 "; %s at 0x%" PRIx64 ": expected the marker, got '%s'",
	     IOVA_LEASE + page, t->resource, (uint64_t)t->range.offset + page, got);
}

static void test_reset(struct dma_test *t)
{
	uint32_t gen = 0;
	int64_t deadline;
	int r = p2pbuf_reset(t->conn, t->device);

	if (r < 0) {
		step(t, S_RESET, false, "expected p2pbuf_reset(%s) to succeed, got %s: %s",
		     t->device, errno_name(-r), p2pbuf_last_message(t->conn));
		return;
	}
	r = device_facts(t, &gen);
	step(t, S_RESET, r == 0 && gen == t->generation + 1,
	     "p2pbuf_reset(%s) returned 0; generation expected %u, got %u", t->device,
	     t->generation + 1, gen);
	deadline = now_ms() + 5000;
	r = p2pbuf_dispatch(t->conn);
	while (r >= 0 && !t->revoked_seen && now_ms() < deadline)
		r = p2pbuf_wait(t->conn, 500);
	step(t, S_RESET_EVENT, t->revoked_seen && t->revoked_reason == P2PBUF_REASON_RESET,
	     "expected LEASE_REVOKED for lease %" PRIu64 " with reason reset, got %s", t->lease,
	     t->revoked_seen ? p2pbuf_reason_name(t->revoked_reason) : "no event");
}

/* What a DMA through the revoked mapping gives: with the IOVA unmapped, the emulated VT-d
 * faults the read (a DMAR fault in the guest's log; cases.sh checks it) and QEMU completes it
 * from its unassigned-memory handler, which reads as zeros; edu copies those into its buffer.
 * edu's buffer is loaded with 0xa5 first and our page filled with 0x5a, so that all zeros can
 * only come from the faulted read: the pattern means the mapping is still live, 0xa5 that the
 * read never reached edu's buffer, 0x5a that edu wrote nothing back. */
static void test_read_revoked(struct dma_test *t)
{
	char why[256], first[80];
	size_t zeros = 0;
	const char *what = "";
	int r;

	memset(t->own, 0xa5, PAGE);
	r = edu_dma(&t->edu, IOVA_OWN, false, DMA_LEN, why, sizeof(why));
	if (r == 0)
		r = dma_fetch(t, IOVA_LEASE + t->probe, 0x5a, why, sizeof(why));
	if (r < 0) {
		step(t, S_DMA_READ_REVOKED, false, "%s", why);
		return;
	}
	for (size_t i = 0; i < DMA_LEN; i++)
		zeros += t->own[i] == 0;
	if (pattern_ok(t->own, DMA_LEN, t->range.offset + t->probe, why, sizeof(why)))
		what = " (the pattern: the mapping is still live)";
	else if (t->own[0] == 0xa5)
		what = " (edu's buffer unchanged: the read did not happen)";
	else if (t->own[0] == 0x5a)
		what = " (our page unchanged: edu wrote nothing back)";
	escape(t->own, 16, first, sizeof(first));
	step(t, S_DMA_READ_REVOKED, zeros == DMA_LEN,
	     "edu DMA from IOVA 0x%" PRIx64 " after the reset: expected %u zero bytes (a DMAR "
	     "fault reads as zeros), got %zu zero bytes, first '%s'%s",
	     IOVA_LEASE + t->probe, DMA_LEN, zeros, first, what);
	printf("dmar-fault-expected: iova 0x%" PRIx64 " device %s\n",
	       (IOVA_LEASE + t->probe) & ~(uint64_t)(PAGE - 1), t->edu_bdf);
}

static void test_map_revoked(struct dma_test *t)
{
	int r = ioas_map_file(&t->edu, t->fd, t->range.length, IOVA_REVOKED);

	step(t, S_MAP_FILE_REVOKED, r == -ENODEV,
	     "IOMMU_IOAS_MAP_FILE of the old fd at IOVA 0x%" PRIx64 ": expected ENODEV, got %s",
	     IOVA_REVOKED, r == 0 ? "success" : errno_name(-r));
	if (r == 0)
		ioas_unmap(&t->edu, IOVA_REVOKED, t->range.length);
}

static void test_new_lease(struct dma_test *t)
{
	uint64_t id;
	int fd, r;

	if (!do_export(t, S_NEW_LEASE_LIVE, &id, &fd))
		return;
	r = ioas_map_file(&t->edu, fd, t->range.length, IOVA_NEW);
	if (r < 0) {
		step(t, S_NEW_LEASE_LIVE, false,
		     "IOMMU_IOAS_MAP_FILE of the new lease %" PRIu64 ": expected success, got %s",
		     id, errno_name(-r));
	} else {
		test_read_live(t, S_NEW_LEASE_LIVE, IOVA_NEW);
		ioas_unmap(&t->edu, IOVA_NEW, t->range.length);
	}
	r = p2pbuf_lease_release(t->conn, id, fd);
	if (r < 0)
		printf("release of lease %" PRIu64 ": %s\n", id, errno_name(-r));
}

/* Everything up to a live mapping; false when a later step cannot run. */
static bool setup_live(struct dma_test *t)
{
	char why[512];
	int r;

	if (!do_export(t, S_EXPORT, &t->lease, &t->fd))
		return false;
	r = edu_open(t->edu_bdf, &t->edu, why, sizeof(why));
	if (!step(t, S_EDU_OPEN, r == 0, "%s", why))
		return false;
	t->own = aligned_alloc(PAGE, PAGE);
	r = t->own ? ioas_map_user(&t->edu, t->own, PAGE, IOVA_OWN) : -ENOMEM;
	if (!step(t, S_MAP_OWN, r == 0, "IOMMU_IOAS_MAP of one page at IOVA 0x%" PRIx64 ": %s",
		  IOVA_OWN, r == 0 ? "ok" : errno_name(-r)))
		return false;
	r = ioas_map_file(&t->edu, t->fd, t->range.length, IOVA_LEASE);
	return step(t, S_MAP_FILE, r == 0,
		    "IOMMU_IOAS_MAP_FILE of lease %" PRIu64 " (%" PRIu64
		    " bytes) at IOVA 0x%" PRIx64 ": %s%s",
		    t->lease, (uint64_t)t->range.length, IOVA_LEASE,
		    r == 0 ? "mapped" : "expected success, got ", r == 0 ? "" : errno_name(-r));
}

static int cmd_dma(int argc, char **argv)
{
	struct conn_opts o = { 0 };
	struct dma_test t = { .fd = -1, .edu = { .iommufd = -1, .dev = -1 } };
	int argi, failed = 0;

	parse_opts(argc, argv, &argi, &o);
	if (argc - argi != 4 || !o.edu)
		die("usage: dma [--socket PATH] --edu BDF DEVICE BAR OFFSET LENGTH");
	t.socket = o.socket;
	t.edu_bdf = o.edu;
	t.device = argv[argi];
	t.bar = (unsigned)parse_u64(argv[argi + 1], "BAR");
	t.range.offset = parse_u64(argv[argi + 2], "offset");
	t.range.length = parse_u64(argv[argi + 3], "length");
	if (t.range.length < 2 * PAGE || t.range.length % PAGE)
		die("dma: the range must be at least two pages");
	/* Not the first page: a wrong start offset in the mapping would then show. */
	t.probe = t.range.length >= 4 * PAGE ? 2 * PAGE : 0;
	t.conn = connect_or_die(t.socket);
	p2pbuf_set_event_handler(t.conn, on_event, &t);
	if (device_facts(&t, &t.generation) < 0)
		printf("device %s: not listed by p2pbufd\n", t.device);
	if (setup_live(&t)) {
		test_read_live(&t, S_DMA_READ_LIVE, IOVA_LEASE);
		test_write_live(&t);
		test_reset(&t);
		if (t.result[S_RESET] != 0) {
			test_read_revoked(&t);
			test_map_revoked(&t);
			test_new_lease(&t);
		}
	}
	for (int s = 0; s < S_COUNT; s++) {
		if (t.result[s] == 0)
			printf("step %s FAIL: not run (an earlier step failed)\n", step_names[s]);
		failed += t.result[s] != 1;
	}
	if (t.edu.iommufd >= 0)
		ioas_unmap(&t.edu, IOVA_LEASE, t.range.length);
	if (t.fd >= 0)
		close(t.fd);
	p2pbuf_release(t.conn, t.lease); /* ended by the reset already: -ENOENT is fine */
	p2pbuf_disconnect(t.conn);
	printf("%d of %d steps failed\n", failed, S_COUNT);
	return failed ? 1 : 0;
}

/* ---- dma-hold: a holder across restarts of p2pbufd ---- */

#define IOVA_HOLD_RETRY ((uint64_t)0xa00000) /* the held buffer mapped again */

/* Hand every line of standard input (without its newline) to fn, until fn returns false or
 * the input ends: the command loop of the holder modes, driven by cases.sh through a fifo. */
static void serve_commands(bool (*fn)(void *ctx, const char *line), void *ctx)
{
	char line[256];
	size_t used = 0;

	for (;;) {
		ssize_t n = read(0, line + used, sizeof(line) - 1 - used);
		if (n <= 0)
			return;
		used += (size_t)n;
		line[used] = '\0';
		char *nl;
		while ((nl = strchr(line, '\n'))) {
			*nl = '\0';
			if (!fn(ctx, line))
				return;
			memmove(line, nl + 1, strlen(nl + 1) + 1);
			used = strlen(line);
		}
		if (used == sizeof(line) - 1)
			used = 0; /* a line longer than any command: dropped */
	}
}

static void hold_event(struct p2pbuf *conn, const struct p2pbuf_event *ev, void *userdata)
{
	(void)conn;
	(void)userdata;
	if (ev->type == P2PBUF_EVENT_RECONNECTED)
		printf("reconnected reclaimed %u\n", ev->reclaimed);
	else if (ev->type != P2PBUF_EVENT_DEVICE_STATE)
		printf("event %s lease %" PRIu64 " reason %s\n",
		       ev->type == P2PBUF_EVENT_LEASE_REVOKED ? "revoked" : "revoking",
		       ev->lease_id, p2pbuf_reason_name(ev->reason));
}

/* One command from the case script: "check NAME" (edu DMA through the lease's mapping: the
 * host's pattern or not), "map NAME" (IOMMU_IOAS_MAP_FILE of the held fd again), "sync NAME"
 * (p2pbuf_dispatch: what an event loop does when the socket wakes it; a lost connection is
 * made again in there), "quit". */
static bool hold_command(void *ctx, const char *line)
{
	struct dma_test *t = ctx;
	char cmd[16], name[64], why[256];

	if (sscanf(line, "%15s %63s", cmd, name) < 1)
		return true;
	if (!strcmp(cmd, "quit"))
		return false;
	if (!strcmp(cmd, "check")) {
		int r = dma_fetch(t, IOVA_LEASE + t->probe, 0x5a, why, sizeof(why));
		bool live = r == 0 && pattern_ok(t->own, DMA_LEN, t->range.offset + t->probe, why,
						 sizeof(why));
		printf("check %s %s%s%s\n", name, live ? "live" : "dead", live ? "" : ": ",
		       live ? "" : why);
	} else if (!strcmp(cmd, "sync")) {
		int r = p2pbuf_dispatch(t->conn);
		printf("sync %s %s\n", name, r >= 0 ? "done" : errno_name(-r));
	} else if (!strcmp(cmd, "map")) {
		int r = ioas_map_file(&t->edu, t->fd, t->range.length, IOVA_HOLD_RETRY);
		printf("map %s %s\n", name, r == 0 ? "ok" : errno_name(-r));
		if (r == 0)
			ioas_unmap(&t->edu, IOVA_HOLD_RETRY, t->range.length);
	}
	return true;
}

/* vm-importer dma-hold --edu BDF DEVICE BAR OFFSET LENGTH: take a lease through libp2pbuf
 * with reconnecting on, map it into our own IOAS, print "ready lease ID", then serve commands
 * from standard input (see hold_command), so that p2pbufd's restarts are lived through as a
 * program lives them: with no code of its own for them. */
static int cmd_dma_hold(int argc, char **argv)
{
	struct conn_opts o = { 0 };
	struct dma_test t = { .fd = -1, .edu = { .iommufd = -1, .dev = -1 } };
	int argi;

	parse_opts(argc, argv, &argi, &o);
	if (argc - argi != 4 || !o.edu)
		die("usage: dma-hold [--socket PATH] --edu BDF DEVICE BAR OFFSET LENGTH");
	t.socket = o.socket;
	t.edu_bdf = o.edu;
	t.device = argv[argi];
	t.bar = (unsigned)parse_u64(argv[argi + 1], "BAR");
	t.range.offset = parse_u64(argv[argi + 2], "offset");
	t.range.length = parse_u64(argv[argi + 3], "length");
	t.probe = t.range.length >= 4 * PAGE ? 2 * PAGE : 0;
	t.conn = connect_or_die(t.socket);
	p2pbuf_set_event_handler(t.conn, hold_event, &t);
	p2pbuf_set_reconnect(t.conn, 60000);
	if (!setup_live(&t)) {
		printf("hold FAIL: the lease could not be mapped\n");
		return 1;
	}
	printf("ready lease %" PRIu64 "\n", t.lease);
	/* The socket is dispatched only when the script says "sync", so that a check can run
	 * while p2pbufd is gone and the connection not yet noticed as lost. */
	serve_commands(hold_command, &t);
	ioas_unmap(&t.edu, IOVA_LEASE, t.range.length);
	close(t.fd);
	p2pbuf_disconnect(t.conn);
	return 0;
}

/* ---- the revocation modes: common parts ---- */

/* IOVAs of the revoke and pass-fd modes: apart from the dma mode's, so that the DMAR faults
 * cases.sh looks for in the kernel log cannot be those of an earlier case. */
#define IOVA_VICTIM ((uint64_t)0x600000)    /* the lease the admin revokes */
#define IOVA_BYSTANDER ((uint64_t)0x700000) /* another lease on the same device */
#define IOVA_AFTER ((uint64_t)0x800000)	    /* a lease taken after the device cycle */
#define IOVA_RETRY ((uint64_t)0x900000)	    /* the revoked buffer again (must fail) */
#define WAIT_GO_MS 60000		    /* how long to wait for cases.sh's SIGUSR1 */
#define MAX_STEPS 24

static int64_t now_rt_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A mode's steps, each reported once as "step NAME ok|FAIL: detail"; steps_finish() reports
 * those that never ran as failed, so that cases.sh always gets the same set of results. */
struct step_def {
	const char *name;
	bool edu_only; /* only with --edu (the iommufd flavour) */
};

struct steps {
	const struct step_def *defs;
	size_t n;
	bool edu;
	int result[MAX_STEPS]; /* 0 not run, 1 ok, -1 failed */
};

static void steps_init(struct steps *s, const struct step_def *defs, size_t n, bool edu)
{
	if (n > MAX_STEPS)
		die("internal error: %zu steps", n);
	*s = (struct steps){ .defs = defs, .n = n, .edu = edu };
}

static bool rstep(struct steps *s, const char *name, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool rstep(struct steps *s, const char *name, bool ok, const char *fmt, ...)
{
	va_list ap;
	size_t i = 0;

	while (i < s->n && strcmp(s->defs[i].name, name) != 0)
		i++;
	if (i == s->n || s->result[i] != 0 || (s->defs[i].edu_only && !s->edu))
		die("internal error: step '%s' unknown, reported twice or not for this run", name);
	s->result[i] = ok ? 1 : -1;
	printf("step %s %s: ", name, ok ? "ok" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	return ok;
}

static int steps_finish(const struct steps *s)
{
	int failed = 0, total = 0;

	for (size_t i = 0; i < s->n; i++) {
		if (s->defs[i].edu_only && !s->edu)
			continue;
		total++;
		if (s->result[i] == 0)
			printf("step %s FAIL: not run (an earlier step failed)\n", s->defs[i].name);
		failed += s->result[i] != 1;
	}
	printf("%d of %d steps failed\n", failed, total);
	return failed ? 1 : 0;
}

/* What one connection heard about its lease. */
struct lease_watch {
	const char *who;
	uint64_t lease;
	bool revoking, revoked;
	enum p2pbuf_reason revoking_reason, revoked_reason;
	int64_t deadline_rt;		 /* LeaseRevoking's deadline, CLOCK_REALTIME ms */
	int64_t revoking_rt, revoked_rt; /* when the events came, CLOCK_REALTIME ms */
	unsigned others;		 /* events about anything else */
};

static void on_lease_event(struct p2pbuf *conn, const struct p2pbuf_event *ev, void *userdata)
{
	struct lease_watch *w = userdata;
	int64_t now = now_rt_ms();

	(void)conn;
	if (ev->type == P2PBUF_EVENT_DEVICE_STATE) {
		printf("event %s: device %s %s generation %" PRIu32 "\n", w->who, ev->device,
		       p2pbuf_device_state_name(ev->state), ev->generation);
		w->others++;
		return;
	}
	printf("event %s: lease %" PRIu64 " %s reason %s", w->who, ev->lease_id,
	       ev->type == P2PBUF_EVENT_LEASE_REVOKING ? "revoking" : "revoked",
	       p2pbuf_reason_name(ev->reason));
	if (ev->type == P2PBUF_EVENT_LEASE_REVOKING)
		printf(", deadline in %" PRId64 " ms", ev->deadline_ms - now);
	putchar('\n');
	if (ev->lease_id != w->lease) {
		w->others++;
	} else if (ev->type == P2PBUF_EVENT_LEASE_REVOKING && !w->revoking) {
		w->revoking = true;
		w->revoking_reason = ev->reason;
		w->deadline_rt = ev->deadline_ms;
		w->revoking_rt = now;
	} else if (ev->type == P2PBUF_EVENT_LEASE_REVOKED && !w->revoked) {
		w->revoked = true;
		w->revoked_reason = ev->reason;
		w->revoked_rt = now;
	}
}

/* Deliver the events of conns[0..n) until *until is true (until NULL: never), a signal comes
 * on sfd (-1: none) or timeout_ms passes. Returns 1 (until), 2 (signal), 0 (timeout) or
 * -errno (a connection failed). */
static int pump(struct p2pbuf *const *conns, size_t n, int sfd, const bool *until, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;
	struct pollfd pfd[3];

	if (n > 2)
		die("internal error: pump of %zu connections", n);
	for (;;) {
		for (size_t i = 0; i < n; i++) {
			int r = p2pbuf_dispatch(conns[i]);
			if (r < 0)
				return r;
		}
		if (until && *until)
			return 1;
		int64_t left = end - now_ms();
		if (left <= 0)
			return 0;
		for (size_t i = 0; i < n; i++)
			pfd[i] = (struct pollfd){ .fd = p2pbuf_get_fd(conns[i]), .events = POLLIN };
		pfd[n] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		if (poll(pfd, n + 1, (int)left) < 0 && errno != EINTR)
			return -errno;
		if (sfd >= 0 && (pfd[n].revents & POLLIN)) {
			struct signalfd_siginfo si;
			(void)!read(sfd, &si, sizeof(si));
			return 2;
		}
	}
}

/* A signalfd for SIGUSR1, which cases.sh sends to say "go on" after a "wait NAME" line. */
static int go_signal_fd(void)
{
	sigset_t set;
	int fd;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		die("sigprocmask: %m");
	fd = signalfd(-1, &set, SFD_CLOEXEC);
	if (fd < 0)
		die("signalfd: %m");
	return fd;
}

/* Print "wait NAME" and wait for cases.sh's SIGUSR1, delivering events meanwhile; the step
 * "wait-NAME" says how it went. */
static bool wait_go(struct steps *s, const char *name, struct p2pbuf *const *conns, size_t n,
		    int sfd)
{
	char step_name[64];
	int64_t t0 = now_ms();
	int r;

	printf("wait %s\n", name);
	fflush(stdout);
	r = pump(conns, n, sfd, NULL, WAIT_GO_MS);
	snprintf(step_name, sizeof(step_name), "wait-%s", name);
	return rstep(s, step_name, r == 2,
		     "expected SIGUSR1 from cases.sh within %d s, got %s after %" PRId64 " ms",
		     WAIT_GO_MS / 1000,
		     r == 2   ? "it"
		     : r == 0 ? "nothing"
			      : errno_name(-r),
		     now_ms() - t0);
}

/* The state and generation of device as p2pbufd lists it. */
static int device_gen(struct p2pbuf *conn, const char *device, enum p2pbuf_device_state *ret_state,
		      uint32_t *ret_gen)
{
	struct p2pbuf_device *d;
	size_t n;
	int r = p2pbuf_list_devices(conn, &d, &n);

	if (r < 0)
		return r;
	r = -ENODEV;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(d[i].name, device) != 0)
			continue;
		*ret_state = d[i].state;
		*ret_gen = d[i].generation;
		r = 0;
	}
	p2pbuf_devices_free(d, n);
	return r;
}

/* Wait up to timeout_ms for device to be ready (a cycle runs on p2pbufd's worker thread). */
static int wait_ready(struct p2pbuf *conn, const char *device, int timeout_ms,
		      enum p2pbuf_device_state *ret_state, uint32_t *ret_gen)
{
	int64_t end = now_ms() + timeout_ms;
	int r;

	while ((r = device_gen(conn, device, ret_state, ret_gen)) == 0 &&
	       *ret_state != P2PBUF_DEVICE_READY && now_ms() < end)
		usleep(100000);
	return r;
}

/* The state of lease id among conn's own leases: P2PBUF_LEASE_UNKNOWN when not listed. */
static enum p2pbuf_lease_state lease_state(struct p2pbuf *conn, uint64_t id)
{
	enum p2pbuf_lease_state st = P2PBUF_LEASE_UNKNOWN;
	struct p2pbuf_lease *l;
	size_t n;

	if (p2pbuf_list_leases(conn, false, &l, &n) < 0)
		return P2PBUF_LEASE_UNKNOWN;
	for (size_t i = 0; i < n; i++)
		if (l[i].id == id)
			st = l[i].state;
	p2pbuf_leases_free(l, n);
	return st;
}

enum verdict { V_PATTERN, V_ZEROS, V_OTHER, V_ERROR };

/* What edu reads at iova, where the ivshmem pattern at BAR offset bar_off is when the mapping
 * is live. As in test_read_revoked: edu's buffer is loaded with 0xa5 and our page filled with
 * 0x5a first, so that all zeros can only come from a faulted read. what describes it. */
static enum verdict dma_verdict(const struct edu *e, unsigned char *own, uint64_t iova,
				uint64_t bar_off, char *what, size_t wlen)
{
	char why[256], first[80];
	size_t zeros = 0;
	int r;

	memset(own, 0xa5, PAGE);
	r = edu_dma(e, IOVA_OWN, false, DMA_LEN, why, sizeof(why));
	if (r == 0)
		r = edu_fetch(e, own, iova, 0x5a, why, sizeof(why));
	if (r < 0) {
		snprintf(what, wlen, "edu DMA from IOVA 0x%" PRIx64 ": %.160s", iova, why);
		return V_ERROR;
	}
	escape(own, 16, first, sizeof(first));
	if (pattern_ok(own, DMA_LEN, bar_off, why, sizeof(why))) {
		snprintf(what, wlen,
			 "edu read the pattern at IOVA 0x%" PRIx64 " (BAR offset 0x%" PRIx64
			 "): '%s'",
			 iova, bar_off, first);
		return V_PATTERN;
	}
	for (size_t i = 0; i < DMA_LEN; i++)
		zeros += own[i] == 0;
	snprintf(what, wlen, "edu read %zu zero bytes of %u at IOVA 0x%" PRIx64 ", first '%s'%s",
		 zeros, DMA_LEN, iova, first,
		 own[0] == 0xa5	  ? " (edu's buffer unchanged: the read did not happen)"
		 : own[0] == 0x5a ? " (our page unchanged: edu wrote nothing back)"
				  : "");
	return zeros == DMA_LEN ? V_ZEROS : V_OTHER;
}

/* Open edu (as the dma mode does) and map one page of our own at IOVA_OWN. */
static bool edu_setup(struct steps *s, const char *bdf, struct edu *e, unsigned char **ret_own)
{
	char why[512];
	int r = edu_open(bdf, e, why, sizeof(why));

	if (!rstep(s, "edu-open", r == 0, "%s", why))
		return false;
	*ret_own = aligned_alloc(PAGE, PAGE);
	r = *ret_own ? ioas_map_user(e, *ret_own, PAGE, IOVA_OWN) : -ENOMEM;
	if (r < 0)
		rstep(s, "map", false, "IOMMU_IOAS_MAP of one page at IOVA 0x%" PRIx64 ": %s",
		      IOVA_OWN, errno_name(-r));
	return r == 0;
}

/* ---- revoke: an admin revokes our lease; we keep it past the deadline, or let go ---- */

static const struct step_def revoke_keep_steps[] = {
	{ "export", false },
	{ "edu-open", true },
	{ "map", true },
	{ "dma-live", true },
	{ "revoking-event", false },
	{ "revoked-event", false },
	{ "bystander-told", false },
	{ "generation", false },
	{ "dma-revoked", true },
	{ "bystander-dma-revoked", true },
	{ "map-file-enodev", true },
	{ "new-export", false },
};

static const struct step_def revoke_release_steps[] = {
	{ "export", false },
	{ "edu-open", true },
	{ "map", true },
	{ "dma-live", true },
	{ "revoking-event", false },
	{ "release", false },
	{ "revoked-event", false },
	{ "bystander-untouched", false },
	{ "generation", false },
	{ "bystander-dma-live", true },
};

enum { VICTIM, BYSTANDER };

struct revoke_test {
	struct steps s;
	bool keep;
	const char *device;
	unsigned bar;
	struct p2pbuf_range range[2]; /* the victim's, the bystander's (right after it) */
	int64_t deadline;	      /* the device's revoke-deadline, ms */
	struct p2pbuf *conn[2];	      /* two clients of p2pbufd */
	struct lease_watch w[2];
	int fd[2];
	uint64_t iova[2];
	uint32_t gen0;
	const char *edu_bdf;
	struct edu edu;
	unsigned char *own;
	uint64_t probe; /* offset inside a lease that DMA reads */
};

/* Both leases, each on its own connection; with edu both mapped and read through. */
static bool revoke_setup(struct revoke_test *t)
{
	static const char *const labels[2] = { "revoke-victim", "revoke-bystander" };
	enum p2pbuf_device_state st = P2PBUF_DEVICE_UNKNOWN;
	char what[2][256];
	uint64_t size[2] = { 0, 0 };
	enum verdict v[2];
	int r;

	for (int i = 0; i < 2; i++) {
		t->fd[i] = p2pbuf_export(t->conn[i], t->device, t->bar, &t->range[i], 1, labels[i],
					 &t->w[i].lease, &size[i]);
		if (t->fd[i] < 0)
			return rstep(&t->s, "export", false,
				     "expected a lease on %s BAR %u at 0x%" PRIx64
				     " (%s), got %s: %s",
				     t->device, t->bar, (uint64_t)t->range[i].offset, labels[i],
				     errno_name(-t->fd[i]), p2pbuf_last_message(t->conn[i]));
	}
	r = device_gen(t->conn[VICTIM], t->device, &st, &t->gen0);
	if (!rstep(&t->s, "export", r == 0 && st == P2PBUF_DEVICE_READY,
		   "victim lease %" PRIu64 " (fd %d, %" PRIu64
		   " bytes) and bystander lease %" PRIu64 " (fd %d, %" PRIu64
		   " bytes) on two connections; %s %s, generation %" PRIu32,
		   t->w[VICTIM].lease, t->fd[VICTIM], size[VICTIM], t->w[BYSTANDER].lease,
		   t->fd[BYSTANDER], size[BYSTANDER], t->device, p2pbuf_device_state_name(st),
		   t->gen0))
		return false;
	if (!t->edu_bdf)
		return true;
	if (!edu_setup(&t->s, t->edu_bdf, &t->edu, &t->own))
		return false;
	for (int i = 0; i < 2; i++) {
		r = ioas_map_file(&t->edu, t->fd[i], t->range[i].length, t->iova[i]);
		if (r < 0)
			return rstep(&t->s, "map", false,
				     "IOMMU_IOAS_MAP_FILE of lease %" PRIu64 " at IOVA 0x%" PRIx64
				     ": expected success, got %s",
				     t->w[i].lease, t->iova[i], errno_name(-r));
	}
	rstep(&t->s, "map", true,
	      "our page at IOVA 0x%" PRIx64 ", victim at 0x%" PRIx64 ", bystander at 0x%" PRIx64,
	      IOVA_OWN, t->iova[VICTIM], t->iova[BYSTANDER]);
	for (int i = 0; i < 2; i++)
		v[i] = dma_verdict(&t->edu, t->own, t->iova[i] + t->probe,
				   t->range[i].offset + t->probe, what[i], sizeof(what[i]));
	return rstep(&t->s, "dma-live", v[VICTIM] == V_PATTERN && v[BYSTANDER] == V_PATTERN,
		     "victim: %s; bystander: %s (expected the pattern through both)", what[VICTIM],
		     what[BYSTANDER]);
}

/* Tell cases.sh our lease (it revokes it) and wait for LeaseRevoking. */
static bool revoke_wait_revoking(struct revoke_test *t)
{
	struct lease_watch *w = &t->w[VICTIM];
	int64_t left;

	printf("ready lease %" PRIu64 " bystander %" PRIu64 " generation %" PRIu32 "\n", w->lease,
	       t->w[BYSTANDER].lease, t->gen0);
	fflush(stdout);
	pump(t->conn, 2, -1, &w->revoking, 30000);
	if (!w->revoking)
		return rstep(&t->s, "revoking-event", false,
			     "expected LeaseRevoking for lease %" PRIu64 " within 30 s, got none",
			     w->lease);
	left = w->deadline_rt - w->revoking_rt;
	return rstep(&t->s, "revoking-event",
		     w->revoking_reason == P2PBUF_REASON_ADMIN && left > 0 &&
			 left <= t->deadline + 50,
		     "LeaseRevoking for lease %" PRIu64 ": reason %s, deadline in %" PRId64
		     " ms (expected reason admin, a deadline within %" PRId64 " ms)",
		     w->lease, p2pbuf_reason_name(w->revoking_reason), left, t->deadline);
}

/* The dead mappings after the device cycle, and a new lease that works. */
static void revoke_after_cycle(struct revoke_test *t)
{
	static const char *const steps[2] = { "dma-revoked", "bystander-dma-revoked" };
	char what[256];
	uint64_t id = 0, size = 0;
	int fd, r;

	if (t->edu_bdf) {
		for (int i = 0; i < 2; i++) {
			enum verdict v =
			    dma_verdict(&t->edu, t->own, t->iova[i] + t->probe,
					t->range[i].offset + t->probe, what, sizeof(what));
			rstep(&t->s, steps[i], v == V_ZEROS,
			      "lease %" PRIu64 " after the cycle: %s (expected %u zero bytes: a "
			      "DMAR fault reads as zeros)",
			      t->w[i].lease, what, DMA_LEN);
			printf("dmar-fault-expected: iova 0x%" PRIx64 " device %s\n",
			       (t->iova[i] + t->probe) & ~(uint64_t)(PAGE - 1), t->edu_bdf);
		}
		r = ioas_map_file(&t->edu, t->fd[VICTIM], t->range[VICTIM].length, IOVA_RETRY);
		rstep(&t->s, "map-file-enodev", r == -ENODEV,
		      "IOMMU_IOAS_MAP_FILE of the kept fd of lease %" PRIu64 " at IOVA 0x%" PRIx64
		      ": expected ENODEV, got %s",
		      t->w[VICTIM].lease, IOVA_RETRY, r == 0 ? "success" : errno_name(-r));
		if (r == 0)
			ioas_unmap(&t->edu, IOVA_RETRY, t->range[VICTIM].length);
	}
	fd = p2pbuf_export(t->conn[VICTIM], t->device, t->bar, &t->range[VICTIM], 1, "revoke-after",
			   &id, &size);
	if (fd < 0) {
		rstep(&t->s, "new-export", false, "expected a new lease, got %s: %s",
		      errno_name(-fd), p2pbuf_last_message(t->conn[VICTIM]));
		return;
	}
	if (!t->edu_bdf) {
		rstep(&t->s, "new-export", size == t->range[VICTIM].length,
		      "new lease %" PRIu64 ": %" PRIu64 " bytes (expected %" PRIu64 ")", id, size,
		      (uint64_t)t->range[VICTIM].length);
	} else if ((r = ioas_map_file(&t->edu, fd, t->range[VICTIM].length, IOVA_AFTER)) < 0) {
		rstep(&t->s, "new-export", false,
		      "IOMMU_IOAS_MAP_FILE of new lease %" PRIu64 ": expected success, got %s", id,
		      errno_name(-r));
	} else {
		enum verdict v =
		    dma_verdict(&t->edu, t->own, IOVA_AFTER + t->probe,
				t->range[VICTIM].offset + t->probe, what, sizeof(what));
		rstep(&t->s, "new-export", v == V_PATTERN,
		      "new lease %" PRIu64 " mapped at IOVA 0x%" PRIx64
		      ": %s (expected the pattern)",
		      id, IOVA_AFTER, what);
		ioas_unmap(&t->edu, IOVA_AFTER, t->range[VICTIM].length);
	}
	p2pbuf_lease_release(t->conn[VICTIM], id, fd);
}

/* The holder keeps its fd (and its mapping) past the deadline: p2pbufd cycles the device. */
static void revoke_keep(struct revoke_test *t)
{
	struct lease_watch *w = &t->w[VICTIM], *b = &t->w[BYSTANDER];
	enum p2pbuf_device_state st = P2PBUF_DEVICE_UNKNOWN;
	uint32_t gen = 0;
	int r;

	printf("keeping the fd of lease %" PRIu64 "%s past the deadline\n", w->lease,
	       t->edu_bdf ? " and its IOMMU mapping" : "");
	fflush(stdout);
	pump(t->conn, 2, -1, &w->revoked, (int)t->deadline + 20000);
	if (!w->revoked)
		rstep(&t->s, "revoked-event", false,
		      "expected LeaseRevoked for lease %" PRIu64
		      " at the deadline, got none %" PRId64 " ms after it",
		      w->lease, now_rt_ms() - w->deadline_rt);
	else
		rstep(&t->s, "revoked-event",
		      w->revoked_reason == P2PBUF_REASON_ADMIN &&
			  w->revoked_rt >= w->deadline_rt - 50,
		      "LeaseRevoked for lease %" PRIu64 ": reason %s, %" PRId64
		      " ms after the deadline (expected reason admin, at or after the deadline)",
		      w->lease, p2pbuf_reason_name(w->revoked_reason),
		      w->revoked_rt - w->deadline_rt);
	pump(t->conn, 2, -1, &b->revoked, 5000);
	rstep(&t->s, "bystander-told",
	      b->revoked && b->revoked_reason == P2PBUF_REASON_DEVICE_CYCLE,
	      "bystander lease %" PRIu64 ": expected LeaseRevoked with reason device-cycle, got %s",
	      b->lease, b->revoked ? p2pbuf_reason_name(b->revoked_reason) : "no event");
	r = wait_ready(t->conn[VICTIM], t->device, 15000, &st, &gen);
	if (!rstep(&t->s, "generation", r == 0 && st == P2PBUF_DEVICE_READY && gen == t->gen0 + 1,
		   "%s after the cycle: expected ready, generation %" PRIu32 ", got %s, %" PRIu32,
		   t->device, t->gen0 + 1, r < 0 ? errno_name(-r) : p2pbuf_device_state_name(st),
		   gen))
		return;
	revoke_after_cycle(t);
}

/* The holder does what it is told: unmap, close, release. No cycle, the bystander stays. */
static void revoke_release(struct revoke_test *t)
{
	struct lease_watch *w = &t->w[VICTIM], *b = &t->w[BYSTANDER];
	enum p2pbuf_device_state st = P2PBUF_DEVICE_UNKNOWN;
	enum p2pbuf_lease_state ls;
	uint32_t gen = 0;
	int64_t wait;
	int r = 0, rr;

	if (t->edu_bdf)
		r = ioas_unmap(&t->edu, t->iova[VICTIM], t->range[VICTIM].length);
	rr = p2pbuf_lease_release(t->conn[VICTIM], w->lease, t->fd[VICTIM]);
	t->fd[VICTIM] = -1;
	if (t->edu_bdf)
		rstep(&t->s, "release", r == 0 && rr == 0,
		      "IOMMU_IOAS_UNMAP of lease %" PRIu64 ": %s; p2pbuf_lease_release: %s",
		      w->lease, r == 0 ? "ok" : errno_name(-r), rr == 0 ? "ok" : errno_name(-rr));
	else
		rstep(&t->s, "release", rr == 0, "p2pbuf_lease_release of lease %" PRIu64 ": %s",
		      w->lease, rr == 0 ? "ok" : errno_name(-rr));
	pump(t->conn, 2, -1, &w->revoked, (int)t->deadline + 5000);
	if (!w->revoked)
		rstep(&t->s, "revoked-event", false,
		      "expected LeaseRevoked for lease %" PRIu64 " before the deadline, got none",
		      w->lease);
	else
		rstep(&t->s, "revoked-event",
		      w->revoked_reason == P2PBUF_REASON_ADMIN && w->revoked_rt < w->deadline_rt,
		      "LeaseRevoked for lease %" PRIu64 ": reason %s, %" PRId64
		      " ms before the deadline (expected reason admin, before the deadline)",
		      w->lease, p2pbuf_reason_name(w->revoked_reason),
		      w->deadline_rt - w->revoked_rt);
	/* Past the deadline: nothing else may happen. */
	wait = w->deadline_rt + 700 - now_rt_ms();
	if (wait > 0)
		pump(t->conn, 2, -1, NULL, (int)wait);
	ls = lease_state(t->conn[BYSTANDER], b->lease);
	rstep(&t->s, "bystander-untouched",
	      !b->revoking && !b->revoked && ls == P2PBUF_LEASE_ACTIVE,
	      "bystander lease %" PRIu64 " 700 ms after the deadline: expected state active and "
	      "no event, got state %s, %s",
	      b->lease, p2pbuf_lease_state_name(ls),
	      b->revoked    ? p2pbuf_reason_name(b->revoked_reason)
	      : b->revoking ? "LeaseRevoking"
			    : "no event");
	r = device_gen(t->conn[VICTIM], t->device, &st, &gen);
	rstep(&t->s, "generation", r == 0 && st == P2PBUF_DEVICE_READY && gen == t->gen0,
	      "%s: expected ready, generation %" PRIu32 " (no cycle), got %s, %" PRIu32, t->device,
	      t->gen0, r < 0 ? errno_name(-r) : p2pbuf_device_state_name(st), gen);
	if (t->edu_bdf) {
		char what[256];
		enum verdict v =
		    dma_verdict(&t->edu, t->own, t->iova[BYSTANDER] + t->probe,
				t->range[BYSTANDER].offset + t->probe, what, sizeof(what));
		rstep(&t->s, "bystander-dma-live", v == V_PATTERN,
		      "bystander lease %" PRIu64 ": %s (expected the pattern)", b->lease, what);
	}
}

static int cmd_revoke(int argc, char **argv)
{
	struct conn_opts o = { 0 };
	struct revoke_test t = { .fd = { -1, -1 },
				 .iova = { IOVA_VICTIM, IOVA_BYSTANDER },
				 .w = { { .who = "victim" }, { .who = "bystander" } },
				 .edu = { .iommufd = -1, .dev = -1 } };
	int argi, rc;

	parse_opts(argc, argv, &argi, &o);
	if (argc - argi != 4 || !o.then || !o.deadline ||
	    (strcmp(o.then, "keep") != 0 && strcmp(o.then, "release") != 0))
		die("usage: revoke --then keep|release --deadline MS [--socket PATH] [--edu BDF] "
		    "DEVICE BAR OFFSET LENGTH");
	t.keep = !strcmp(o.then, "keep");
	t.deadline = (int64_t)parse_u64(o.deadline, "deadline");
	t.edu_bdf = o.edu;
	t.device = argv[argi];
	t.bar = (unsigned)parse_u64(argv[argi + 1], "BAR");
	t.range[VICTIM].offset = parse_u64(argv[argi + 2], "offset");
	t.range[VICTIM].length = parse_u64(argv[argi + 3], "length");
	if (t.range[VICTIM].length < 4 * PAGE || t.range[VICTIM].length > (1u << 20))
		die("revoke: the range must be 4 pages to 1 MiB");
	t.range[BYSTANDER].offset = t.range[VICTIM].offset + t.range[VICTIM].length;
	t.range[BYSTANDER].length = t.range[VICTIM].length;
	t.probe = 2 * PAGE;
	if (t.keep)
		steps_init(&t.s, revoke_keep_steps,
			   sizeof(revoke_keep_steps) / sizeof(revoke_keep_steps[0]), o.edu != NULL);
	else
		steps_init(&t.s, revoke_release_steps,
			   sizeof(revoke_release_steps) / sizeof(revoke_release_steps[0]),
			   o.edu != NULL);
	for (int i = 0; i < 2; i++) {
		t.conn[i] = connect_or_die(o.socket);
		p2pbuf_set_event_handler(t.conn[i], on_lease_event, &t.w[i]);
	}
	if (revoke_setup(&t) && revoke_wait_revoking(&t)) {
		if (t.keep)
			revoke_keep(&t);
		else
			revoke_release(&t);
	}
	rc = steps_finish(&t.s);
	for (int i = 0; i < 2; i++) {
		if (t.edu.iommufd >= 0)
			ioas_unmap(&t.edu, t.iova[i], t.range[i].length);
		if (t.fd[i] >= 0)
			close(t.fd[i]);
		if (t.w[i].lease)
			p2pbuf_release(t.conn[i], t.w[i].lease); /* -ENOENT if it ended */
		p2pbuf_disconnect(t.conn[i]);
	}
	return rc;
}

/* ---- pass-fd: we release our lease while another process still holds the buffer ---- */

/* One message, with fd (>= 0) passed along by SCM_RIGHTS. */
static int send_msg(int sock, const char *msg, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)msg, .iov_len = strlen(msg) + 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (fd >= 0) {
		struct cmsghdr *c;
		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	return sendmsg(sock, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

/* One message into buf (NUL-terminated) and the fd it carried (-1 if none), waiting up to
 * timeout_ms (-1: forever). Returns its length, 0 at EOF, -ETIMEDOUT or -errno. */
static ssize_t recv_msg(int sock, char *buf, size_t len, int *ret_fd, int timeout_ms)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = buf, .iov_len = len - 1 };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf) };
	struct pollfd pfd = { .fd = sock, .events = POLLIN };
	ssize_t n;

	*ret_fd = -1;
	if (poll(&pfd, 1, timeout_ms) == 0)
		return -ETIMEDOUT;
	n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(ret_fd, CMSG_DATA(c), sizeof(int));
	return n;
}

/* Send the keeper msg (with fd, if >= 0) and wait up to 10 s for its answer in reply.
 * Returns the answer's length or -errno. */
static int keeper_call(int sock, const char *msg, int fd, char *reply, size_t len)
{
	int got = -1, r = send_msg(sock, msg, fd);

	reply[0] = '\0';
	if (r == 0)
		r = (int)recv_msg(sock, reply, len, &got, 10000);
	if (got >= 0)
		close(got);
	return r == 0 ? -ECONNRESET : r;
}

/* The keeper: a process that never talked to p2pbufd. It holds the fd it is sent ("hold")
 * until told "close", or until its parent goes away. */
static _Noreturn void keeper_main(int sock)
{
	char msg[64], reply[64];
	int held = -1;

	for (;;) {
		struct stat st;
		int fd;
		ssize_t n = recv_msg(sock, msg, sizeof(msg), &fd, -1);
		if (n <= 0)
			_exit(n == 0 ? 0 : 1);
		if (!strcmp(msg, "hold") && fd >= 0 && held < 0 && fstat(fd, &st) == 0) {
			held = fd;
			printf("keeper %d: holds the dma-buf as fd %d (ino %ju)\n", (int)getpid(),
			       fd, (uintmax_t)st.st_ino);
			snprintf(reply, sizeof(reply), "held %ju", (uintmax_t)st.st_ino);
			send_msg(sock, reply, -1);
		} else if (!strcmp(msg, "close") && held >= 0) {
			close(held);
			printf("keeper %d: closed its copy\n", (int)getpid());
			send_msg(sock, "closed", -1);
			_exit(0);
		} else {
			if (fd >= 0)
				close(fd);
			send_msg(sock, "what?", -1);
		}
	}
}

static const struct step_def pass_fd_steps[] = {
	{ "keeper", false },
	{ "export", false },
	{ "pass", false },
	{ "edu-open", true },
	{ "map", true },
	{ "dma-live", true },
	{ "release", false },
	{ "wait-lingering", false },
	{ "dma-after-release", true },
	{ "keeper-closed", false },
	{ "wait-keeper-closed", false },
	{ "unmap", true },
};

static int cmd_pass_fd(int argc, char **argv)
{
	struct conn_opts o = { 0 };
	struct lease_watch w = { .who = "holder" };
	struct edu edu = { .iommufd = -1, .dev = -1 };
	struct p2pbuf_range range[2];
	struct p2pbuf *conn;
	struct steps s;
	struct stat st;
	unsigned char *own = NULL;
	const char *device;
	char msg[64], what[256];
	uint64_t id[2] = { 0, 0 }, size;
	int argi, sv[2], sfd, fd[2] = { -1, -1 }, r, r2 = 0, status = 0;
	unsigned bar;
	bool mapped = false;
	pid_t keeper;

	parse_opts(argc, argv, &argi, &o);
	if (argc - argi != 4)
		die("usage: pass-fd [--socket PATH] [--edu BDF] DEVICE BAR OFFSET LENGTH");
	steps_init(&s, pass_fd_steps, sizeof(pass_fd_steps) / sizeof(pass_fd_steps[0]),
		   o.edu != NULL);
	device = argv[argi];
	bar = (unsigned)parse_u64(argv[argi + 1], "BAR");
	range[0].offset = parse_u64(argv[argi + 2], "offset");
	range[0].length = parse_u64(argv[argi + 3], "length");
	if (range[0].length < 4 * PAGE || range[0].length > (1u << 20))
		die("pass-fd: the range must be 4 pages to 1 MiB");
	range[1].offset = range[0].offset + range[0].length;
	range[1].length = range[0].length;
	sfd = go_signal_fd();

	/* The keeper is forked before anything of the lease exists: it gets it only by
	 * SCM_RIGHTS. */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair: %m");
	fflush(stdout);
	keeper = fork();
	if (keeper < 0)
		die("fork: %m");
	if (keeper == 0) {
		close(sv[0]);
		close(sfd);
		keeper_main(sv[1]);
	}
	close(sv[1]);
	rstep(&s, "keeper", true, "keeper pid %d, forked before the export", (int)keeper);

	conn = connect_or_die(o.socket);
	p2pbuf_set_event_handler(conn, on_lease_event, &w);
	for (int i = 0; i < (o.edu ? 2 : 1); i++) {
		fd[i] = p2pbuf_export(conn, device, bar, &range[i], 1,
				      i ? "pass-mapped" : "pass-fd", &id[i], &size);
		if (fd[i] < 0) {
			rstep(&s, "export", false, "expected a lease at 0x%" PRIx64 ", got %s: %s",
			      (uint64_t)range[i].offset, errno_name(-fd[i]),
			      p2pbuf_last_message(conn));
			goto out;
		}
	}
	w.lease = id[0];
	if (o.edu)
		rstep(&s, "export", true,
		      "lease %" PRIu64 " (fd %d) to pass on, lease %" PRIu64 " (fd %d) to map",
		      id[0], fd[0], id[1], fd[1]);
	else
		rstep(&s, "export", true, "lease %" PRIu64 " (fd %d) to pass on", id[0], fd[0]);

	r = keeper_call(sv[0], "hold", fd[0], msg, sizeof(msg));
	fstat(fd[0], &st);
	if (!rstep(&s, "pass",
		   r > 0 && !strncmp(msg, "held ", 5) && strtoull(msg + 5, NULL, 10) == st.st_ino,
		   "sent the fd of lease %" PRIu64 " (ino %ju) to keeper pid %d by SCM_RIGHTS: it "
		   "answered '%s'",
		   id[0], (uintmax_t)st.st_ino, (int)keeper, r > 0 ? msg : errno_name(-r)))
		goto out;

	if (o.edu) {
		enum verdict v;
		if (!edu_setup(&s, o.edu, &edu, &own))
			goto out;
		r = ioas_map_file(&edu, fd[1], range[1].length, IOVA_VICTIM);
		if (!rstep(&s, "map", r == 0,
			   "IOMMU_IOAS_MAP_FILE of lease %" PRIu64 " at IOVA 0x%" PRIx64 ": %s",
			   id[1], IOVA_VICTIM, r == 0 ? "mapped" : errno_name(-r)))
			goto out;
		mapped = true;
		v = dma_verdict(&edu, own, IOVA_VICTIM + 2 * PAGE, range[1].offset + 2 * PAGE, what,
				sizeof(what));
		rstep(&s, "dma-live", v == V_PATTERN, "%s (expected the pattern)", what);
	}

	/* Release both: the passed one, and the mapped one with its fd closed. */
	r = p2pbuf_lease_release(conn, id[0], fd[0]);
	fd[0] = -1;
	if (o.edu) {
		r2 = p2pbuf_lease_release(conn, id[1], fd[1]);
		fd[1] = -1;
	}
	if (o.edu)
		rstep(&s, "release", r == 0 && r2 == 0,
		      "p2pbuf_lease_release of lease %" PRIu64 " (passed on): %s, of lease %" PRIu64
		      " (mapping kept): %s",
		      id[0], r == 0 ? "ok" : errno_name(-r), id[1],
		      r2 == 0 ? "ok" : errno_name(-r2));
	else
		rstep(&s, "release", r == 0,
		      "p2pbuf_lease_release of lease %" PRIu64 " (passed on): %s", id[0],
		      r == 0 ? "ok" : errno_name(-r));
	printf("released lease %" PRIu64 " keeper %d mapped %" PRIu64 "\n", id[0], (int)keeper,
	       id[1]); /* mapped 0: none */
	wait_go(&s, "lingering", &conn, 1, sfd);

	if (o.edu) {
		enum verdict v = dma_verdict(&edu, own, IOVA_VICTIM + 2 * PAGE,
					     range[1].offset + 2 * PAGE, what, sizeof(what));
		rstep(&s, "dma-after-release", v == V_PATTERN,
		      "lease %" PRIu64 " released, still mapped: %s (expected the pattern: nothing "
		      "revoked it)",
		      id[1], what);
	}
	r = keeper_call(sv[0], "close", -1, msg, sizeof(msg));
	if (r > 0 && waitpid(keeper, &status, 0) == keeper)
		keeper = -1;
	rstep(&s, "keeper-closed",
	      r > 0 && !strcmp(msg, "closed") && keeper < 0 && WIFEXITED(status) &&
		  WEXITSTATUS(status) == 0,
	      "keeper told to close its copy: expected 'closed' and exit 0, got '%s'%s",
	      r > 0 ? msg : errno_name(-r), keeper < 0 ? ", it exited" : ", it did not exit");
	wait_go(&s, "keeper-closed", &conn, 1, sfd);
	if (o.edu) {
		r = ioas_unmap(&edu, IOVA_VICTIM, range[1].length);
		mapped = false;
		rstep(&s, "unmap", r == 0, "IOMMU_IOAS_UNMAP of lease %" PRIu64 ": %s", id[1],
		      r == 0 ? "ok" : errno_name(-r));
	}
	printf("done\n");
out:
	if (mapped)
		ioas_unmap(&edu, IOVA_VICTIM, range[1].length);
	for (int i = 0; i < 2; i++)
		if (fd[i] >= 0)
			p2pbuf_lease_release(conn, id[i], fd[i]);
	close(sv[0]); /* a keeper still running sees EOF and exits */
	if (keeper > 0)
		waitpid(keeper, &status, 0);
	p2pbuf_disconnect(conn);
	return steps_finish(&s);
}

/* ---- events: the watch lines that concern a device and some leases ---- */

/* The text of member key of the JSON object in line, or NULL. Malloc'd. */
static char *member_text(const char *line, const char *key)
{
	const char *m = json_member(line, key);

	return m ? value_text(m) : NULL;
}

static int cmd_events(int argc, char **argv)
{
	char *line = NULL;
	size_t cap = 0;
	bool first = true;

	if (argc < 2)
		die("usage: events DEVICE [ID=NAME]... < p2pbuf-client --json watch output");
	while (getline(&line, &cap, stdin) > 0) {
		char *ev = member_text(line, "event");
		char *a = NULL, *b = NULL;
		if (ev && !strcmp(ev, "device-state")) {
			a = member_text(line, "device");
			b = member_text(line, "state");
			if (a && b && !strcmp(a, argv[1])) {
				printf("%s%s:%s", first ? "" : " ", a, b);
				first = false;
			}
		} else if (ev && !strncmp(ev, "lease-", 6)) {
			a = member_text(line, "lease");
			b = member_text(line, "reason");
			for (int i = 2; a && b && i < argc; i++) {
				const char *eq = strchr(argv[i], '=');
				if (!eq || strlen(a) != (size_t)(eq - argv[i]) ||
				    strncmp(argv[i], a, strlen(a)) != 0)
					continue;
				printf("%s%s:%s:%s", first ? "" : " ", eq + 1, ev + 6, b);
				first = false;
			}
		}
		free(ev);
		free(a);
		free(b);
	}
	free(line);
	putchar('\n');
	return 0;
}

/* ---- group: two devices of one IOMMU group, each reset while the other serves ---- */

/* Apart from the other modes' IOVAs (cases.sh looks for each DMAR fault in the log). */
#define IOVA_GROUP_BASE ((uint64_t)0xb00000)   /* device i's lease of round k: + (2k + i) MiB */
#define IOVA_GROUP_RETRY ((uint64_t)0x1800000) /* past every round's leases */

static const struct step_def group_steps[] = {
	{ "export", false },	   { "edu-open", true },     { "map", true },
	{ "dma-live", true },	   { "reset-a", false },     { "a-revoked", false },
	{ "b-untouched", false },  { "b-dma-live", true },   { "b-map-again", true },
	{ "a-dma-revoked", true }, { "a-map-enodev", true }, { "a-new-lease", false },
	{ "reset-b", false },	   { "b-revoked", false },   { "a-untouched", false },
	{ "a-dma-live", true },	   { "a-map-again", true },  { "b-dma-revoked", true },
	{ "b-map-enodev", true },  { "b-new-lease", false },
};

struct group_test {
	struct steps s;
	const char *device[2]; /* a and b: two devices of one IOMMU group */
	unsigned bar;
	struct p2pbuf_range range;
	struct p2pbuf *conn[2]; /* one client per device */
	struct lease_watch w[2];
	int fd[2];
	uint64_t iova[2];
	uint32_t gen[2];
	const char *edu_bdf;
	struct edu edu;
	unsigned char *own;
	uint64_t probe;
};

/* A step named "X-WHAT" of device i ("a" or "b"). */
static bool gstep(struct group_test *t, int i, const char *what, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static bool gstep(struct group_test *t, int i, const char *what, bool ok, const char *fmt, ...)
{
	char name[32], detail[768];
	va_list ap;

	snprintf(name, sizeof(name), "%c-%s", 'a' + i, what);
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	return rstep(&t->s, name, ok, "%s", detail);
}

/* A lease on device i at IOVA base + 2k + i MiB (round k), mapped with edu; fd in t->fd[i]. */
static int group_export(struct group_test *t, int i, int round, char *why, size_t wlen)
{
	uint64_t size = 0;
	int r;

	t->fd[i] = p2pbuf_export(t->conn[i], t->device[i], t->bar, &t->range, 1, "group",
				 &t->w[i].lease, &size);
	if (t->fd[i] < 0) {
		snprintf(why, wlen, "expected a lease on %s, got %s: %s", t->device[i],
			 errno_name(-t->fd[i]), p2pbuf_last_message(t->conn[i]));
		return t->fd[i];
	}
	t->w[i].revoking = t->w[i].revoked = false;
	t->iova[i] = IOVA_GROUP_BASE + ((uint64_t)(2 * round + i) << 20);
	snprintf(why, wlen, "lease %" PRIu64 " on %s, %" PRIu64 " bytes", t->w[i].lease,
		 t->device[i], size);
	if (!t->edu_bdf)
		return 0;
	r = ioas_map_file(&t->edu, t->fd[i], t->range.length, t->iova[i]);
	if (r < 0)
		snprintf(why, wlen,
			 "IOMMU_IOAS_MAP_FILE of lease %" PRIu64 " at IOVA 0x%" PRIx64 ": %s",
			 t->w[i].lease, t->iova[i], errno_name(-r));
	return r;
}

static enum verdict group_dma(struct group_test *t, int i, char *what, size_t wlen)
{
	return dma_verdict(&t->edu, t->own, t->iova[i] + t->probe, t->range.offset + t->probe, what,
			   wlen);
}

/* Both leases, and with edu both read through their mappings. */
static bool group_setup(struct group_test *t)
{
	char why[2][256], what[2][256];
	enum verdict v[2];
	int r[2] = { 0, 0 };
	enum p2pbuf_device_state st;

	for (int i = 0; i < 2; i++)
		if (device_gen(t->conn[i], t->device[i], &st, &t->gen[i]) < 0 ||
		    st != P2PBUF_DEVICE_READY)
			return rstep(&t->s, "export", false, "%s is not listed ready",
				     t->device[i]);
	if (t->edu_bdf && !edu_setup(&t->s, t->edu_bdf, &t->edu, &t->own))
		return false;
	for (int i = 0; i < 2; i++)
		r[i] = group_export(t, i, 0, why[i], sizeof(why[i]));
	if (t->edu_bdf && t->fd[0] >= 0 && t->fd[1] >= 0)
		rstep(&t->s, "map", r[0] == 0 && r[1] == 0,
		      "a: %s, at IOVA 0x%" PRIx64 "; b: %s, at IOVA 0x%" PRIx64, why[0], t->iova[0],
		      why[1], t->iova[1]);
	if (!rstep(&t->s, "export", t->fd[0] >= 0 && t->fd[1] >= 0, "a: %s; b: %s", why[0],
		   why[1]) ||
	    r[0] < 0 || r[1] < 0)
		return false;
	if (!t->edu_bdf)
		return true;
	for (int i = 0; i < 2; i++)
		v[i] = group_dma(t, i, what[i], sizeof(what[i]));
	return rstep(&t->s, "dma-live", v[0] == V_PATTERN && v[1] == V_PATTERN,
		     "a: %s; b: %s (expected the pattern through both)", what[0], what[1]);
}

/* Reset device x; y's lease must stay as it was: no event, active. False when the reset
 * itself failed. */
static bool group_reset(struct group_test *t, int x)
{
	int y = !x;
	enum p2pbuf_device_state st = P2PBUF_DEVICE_UNKNOWN, sty = P2PBUF_DEVICE_UNKNOWN;
	enum p2pbuf_lease_state ls;
	uint32_t gen = 0, geny = 0;
	char name[16];
	int r = p2pbuf_reset(t->conn[x], t->device[x]);

	snprintf(name, sizeof(name), "reset-%c", 'a' + x);
	if (r == 0)
		r = wait_ready(t->conn[x], t->device[x], 15000, &st, &gen);
	if (!rstep(&t->s, name, r == 0 && st == P2PBUF_DEVICE_READY && gen == t->gen[x] + 1,
		   "p2pbuf_reset(%s): %s (%s); afterwards expected ready, generation %" PRIu32
		   ", got %s, %" PRIu32,
		   t->device[x], r < 0 ? errno_name(-r) : "ok", p2pbuf_last_message(t->conn[x]),
		   t->gen[x] + 1, p2pbuf_device_state_name(st), gen))
		return false;
	t->gen[x] = gen;
	pump(&t->conn[x], 1, -1, &t->w[x].revoked, 10000);
	gstep(t, x, "revoked", t->w[x].revoked && t->w[x].revoked_reason == P2PBUF_REASON_RESET,
	      "lease %" PRIu64 ": expected LeaseRevoked with reason reset, got %s", t->w[x].lease,
	      t->w[x].revoked ? p2pbuf_reason_name(t->w[x].revoked_reason) : "no event");
	/* p2pbufd tells holders before it closes the device, so anything about y's lease is
	 * queued on y's connection by now. */
	pump(&t->conn[y], 1, -1, NULL, 0);
	ls = lease_state(t->conn[y], t->w[y].lease);
	r = device_gen(t->conn[y], t->device[y], &sty, &geny);
	gstep(t, y, "untouched",
	      !t->w[y].revoking && !t->w[y].revoked && ls == P2PBUF_LEASE_ACTIVE && r == 0 &&
		  sty == P2PBUF_DEVICE_READY && geny == t->gen[y],
	      "lease %" PRIu64 " on %s after the reset of %s: expected active, no event, "
	      "%s ready with generation %" PRIu32 "; got %s, %s, %s %s generation %" PRIu32,
	      t->w[y].lease, t->device[y], t->device[x], t->device[y], t->gen[y],
	      p2pbuf_lease_state_name(ls),
	      t->w[y].revoked	 ? p2pbuf_reason_name(t->w[y].revoked_reason)
	      : t->w[y].revoking ? "LeaseRevoking"
				 : "no event",
	      t->device[y], p2pbuf_device_state_name(sty), geny);
	return true;
}

/* Through edu: y's mapping is live and y's fd maps again; x's old mapping reads zeros (a DMAR
 * fault) and its fd no longer maps. */
static void group_after_dma(struct group_test *t, int x)
{
	int y = !x, r;
	char what[256];
	enum verdict v = group_dma(t, y, what, sizeof(what));

	gstep(t, y, "dma-live", v == V_PATTERN, "lease %" PRIu64 ": %s (expected the pattern)",
	      t->w[y].lease, what);
	r = ioas_map_file(&t->edu, t->fd[y], t->range.length, IOVA_GROUP_RETRY);
	gstep(t, y, "map-again", r == 0,
	      "IOMMU_IOAS_MAP_FILE of lease %" PRIu64 " again at IOVA 0x%" PRIx64
	      ": expected success, got %s",
	      t->w[y].lease, IOVA_GROUP_RETRY, r == 0 ? "success" : errno_name(-r));
	if (r == 0)
		ioas_unmap(&t->edu, IOVA_GROUP_RETRY, t->range.length);
	v = group_dma(t, x, what, sizeof(what));
	gstep(t, x, "dma-revoked", v == V_ZEROS,
	      "lease %" PRIu64 " after the reset: %s (expected %u zero bytes: a DMAR fault)",
	      t->w[x].lease, what, DMA_LEN);
	printf("dmar-fault-expected: iova 0x%" PRIx64 " device %s\n",
	       (t->iova[x] + t->probe) & ~(uint64_t)(PAGE - 1), t->edu_bdf);
	r = ioas_map_file(&t->edu, t->fd[x], t->range.length, IOVA_GROUP_RETRY);
	gstep(t, x, "map-enodev", r == -ENODEV,
	      "IOMMU_IOAS_MAP_FILE of the old fd of lease %" PRIu64 ": expected ENODEV, got %s",
	      t->w[x].lease, r == 0 ? "success" : errno_name(-r));
	if (r == 0)
		ioas_unmap(&t->edu, IOVA_GROUP_RETRY, t->range.length);
}

/* Round k: reset x, check y and (with edu) both mappings, then a new lease on x. */
static bool group_round(struct group_test *t, int x, int round)
{
	char why[256], what[256];
	int r;

	if (!group_reset(t, x))
		return false;
	if (t->edu_bdf)
		group_after_dma(t, x);
	if (t->edu_bdf)
		ioas_unmap(&t->edu, t->iova[x], t->range.length);
	close(t->fd[x]);
	r = group_export(t, x, round + 1, why, sizeof(why));
	if (r < 0 || !t->edu_bdf)
		return gstep(t, x, "new-lease", r == 0, "%s", why);
	return gstep(t, x, "new-lease", group_dma(t, x, what, sizeof(what)) == V_PATTERN,
		     "%s, mapped at IOVA 0x%" PRIx64 ": %s (expected the pattern)", why, t->iova[x],
		     what);
}

/* vm-importer group [--socket PATH] [--edu BDF] DEVICE-A DEVICE-B BAR OFFSET LENGTH */
static int cmd_group(int argc, char **argv)
{
	struct conn_opts o = { 0 };
	struct group_test t = { .fd = { -1, -1 },
				.w = { { .who = "a" }, { .who = "b" } },
				.edu = { .iommufd = -1, .dev = -1 } };
	int argi, rc;

	parse_opts(argc, argv, &argi, &o);
	if (argc - argi != 5)
		die("usage: group [--socket PATH] [--edu BDF] DEVICE-A DEVICE-B BAR OFFSET LENGTH");
	t.edu_bdf = o.edu;
	t.device[0] = argv[argi];
	t.device[1] = argv[argi + 1];
	t.bar = (unsigned)parse_u64(argv[argi + 2], "BAR");
	t.range.offset = parse_u64(argv[argi + 3], "offset");
	t.range.length = parse_u64(argv[argi + 4], "length");
	if (t.range.length < 4 * PAGE || t.range.length > (1u << 20))
		die("group: the range must be 4 pages to 1 MiB");
	t.probe = 2 * PAGE;
	steps_init(&t.s, group_steps, sizeof(group_steps) / sizeof(group_steps[0]), o.edu != NULL);
	for (int i = 0; i < 2; i++) {
		t.conn[i] = connect_or_die(o.socket);
		p2pbuf_set_event_handler(t.conn[i], on_lease_event, &t.w[i]);
	}
	if (group_setup(&t) && group_round(&t, 0, 0))
		group_round(&t, 1, 1);
	rc = steps_finish(&t.s);
	for (int i = 0; i < 2; i++) {
		if (t.edu.iommufd >= 0 && t.fd[i] >= 0)
			ioas_unmap(&t.edu, t.iova[i], t.range.length);
		if (t.fd[i] >= 0)
			close(t.fd[i]);
		if (t.w[i].lease)
			p2pbuf_release(t.conn[i], t.w[i].lease);
		p2pbuf_disconnect(t.conn[i]);
	}
	return rc;
}

/* ---- fence-hold: a vgem fence in a lease's buffer holds up the device's close ---- */

/* How long a "stop" waits for p2pbufd to exit; vgem signals its fences after 10 s. */
#define FENCE_STOP_WAIT_MS 60000
#define FENCE_INFO_MAX 8

struct fence_hold {
	struct p2pbuf *conn;
	uint64_t lease;
	int lease_fd;	     /* the lease's dma-buf, with the fence imported */
	int drm;	     /* vgem's DRM node */
	int bo_buf;	     /* vgem's buffer object as a dma-buf */
	int sync;	     /* the vgem fence as a sync_file */
	int64_t attached_ns; /* CLOCK_MONOTONIC when the fence was made */
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The first /dev/dri/card* whose driver calls itself "vgem" (DRM_IOCTL_VERSION), opened; or
 * -ENODEV with what was found in why. The card node, since vgem's render node refuses
 * DRM_IOCTL_MODE_CREATE_DUMB. */
static int vgem_open(char *why, size_t wlen)
{
	DIR *d = opendir("/dev/dri");
	struct dirent *de;
	size_t o = 0;

	snprintf(why, wlen, "no vgem card in /dev/dri (is vgem loaded?):");
	if (!d)
		return -ENODEV;
	while ((de = readdir(d))) {
		char path[300], name[32] = "";
		struct drm_version v = { .name_len = sizeof(name) - 1, .name = name };
		int fd;
		if (strncmp(de->d_name, "card", 4) != 0)
			continue;
		snprintf(path, sizeof(path), "/dev/dri/%s", de->d_name);
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd >= 0 && ioctl(fd, DRM_IOCTL_VERSION, &v) == 0 && strcmp(name, "vgem") == 0) {
			closedir(d);
			printf("vgem: %s\n", path);
			return fd;
		}
		o = strlen(why);
		snprintf(why + o, wlen - o, " %s (%s)", path, fd < 0 ? strerror(errno) : name);
		if (fd >= 0)
			close(fd);
	}
	closedir(d);
	return -ENODEV;
}

/* The state of the fences of sync_file fd: 1 all signaled (*ret_ns: the kernel's
 * CLOCK_MONOTONIC time of the last signal), 0 one is pending, or -errno. */
static int fence_status(int fd, int64_t *ret_ns)
{
	struct sync_fence_info fi[FENCE_INFO_MAX];
	struct sync_file_info info = { .num_fences = FENCE_INFO_MAX,
				       .sync_fence_info = (uint64_t)(uintptr_t)fi };
	int64_t last = 0;

	memset(fi, 0, sizeof(fi));
	if (ioctl(fd, SYNC_IOC_FILE_INFO, &info) < 0)
		return -errno;
	if (info.status < 0)
		return info.status;
	if (info.status == 0)
		return 0;
	for (uint32_t i = 0; i < info.num_fences && i < FENCE_INFO_MAX; i++)
		if ((int64_t)fi[i].timestamp_ns > last)
			last = (int64_t)fi[i].timestamp_ns;
	if (ret_ns)
		*ret_ns = last;
	return 1;
}

/* Make a vgem buffer object with a write fence that nobody signals (vgem does, 10 s on),
 * and import that fence into the lease's buffer as a write: from then on the kernel's
 * revocation of the buffer (vfio_pci_dma_buf_move) waits for it. */
static int fence_setup(struct fence_hold *h, char *why, size_t wlen)
{
	struct drm_mode_create_dumb bo = { .height = 64, .width = 64, .bpp = 32 };
	struct drm_vgem_fence_attach fa = { .flags = VGEM_FENCE_WRITE };
	struct drm_prime_handle ph = { .flags = DRM_CLOEXEC | DRM_RDWR };
	struct dma_buf_export_sync_file ex = { .flags = DMA_BUF_SYNC_WRITE };
	struct dma_buf_import_sync_file im = { .flags = DMA_BUF_SYNC_WRITE };
	struct dma_buf_export_sync_file check = { .flags = DMA_BUF_SYNC_WRITE };
	int r;

	h->drm = vgem_open(why, wlen);
	if (h->drm < 0)
		return h->drm;
	if (ioctl(h->drm, DRM_IOCTL_MODE_CREATE_DUMB, &bo) < 0)
		return efail(why, wlen, "DRM_IOCTL_MODE_CREATE_DUMB on vgem");
	fa.handle = bo.handle;
	h->attached_ns = now_ns();
	if (ioctl(h->drm, DRM_IOCTL_VGEM_FENCE_ATTACH, &fa) < 0)
		return efail(why, wlen, "DRM_IOCTL_VGEM_FENCE_ATTACH (write)");
	ph.handle = bo.handle;
	if (ioctl(h->drm, DRM_IOCTL_PRIME_HANDLE_TO_FD, &ph) < 0)
		return efail(why, wlen, "DRM_IOCTL_PRIME_HANDLE_TO_FD of the vgem buffer");
	h->bo_buf = ph.fd;
	if (ioctl(h->bo_buf, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, &ex) < 0)
		return efail(why, wlen, "DMA_BUF_IOCTL_EXPORT_SYNC_FILE of the vgem buffer");
	h->sync = ex.fd;
	im.fd = h->sync;
	if (ioctl(h->lease_fd, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, &im) < 0)
		return efail(why, wlen, "DMA_BUF_IOCTL_IMPORT_SYNC_FILE into the lease's buffer");
	/* The lease's buffer must now carry a pending fence: what the kernel will wait on. */
	if (ioctl(h->lease_fd, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, &check) < 0)
		return efail(why, wlen, "DMA_BUF_IOCTL_EXPORT_SYNC_FILE of the lease's buffer");
	r = fence_status(check.fd, NULL);
	close(check.fd);
	if (r != 0) {
		snprintf(why, wlen,
			 "the lease's buffer after the import: expected a pending fence, got %s",
			 r > 0 ? "every fence signaled" : errno_name(-r));
		return -EIO;
	}
	snprintf(why, wlen, "vgem buffer %ux%u (handle %u), write fence %u imported, pending",
		 bo.width, bo.height, bo.handle, fa.out_fence);
	return 0;
}

/* "fence NAME": "fence NAME pending", or "fence NAME signaled MS" (ms from the fence's
 * making to its signal). */
static void fence_report(const struct fence_hold *h, const char *name)
{
	int64_t at = 0;
	int r = fence_status(h->sync, &at);

	if (r == 1)
		printf("fence %s signaled %" PRId64 "\n", name, (at - h->attached_ns) / 1000000);
	else
		printf("fence %s %s\n", name, r == 0 ? "pending" : errno_name(-r));
}

/* "stop NAME PID": SIGTERM to PID (p2pbufd) while the fence may still hold up its close; wait
 * (up to FENCE_STOP_WAIT_MS) for it to exit; say whether it exited after the fence signaled
 * ("after-fence") or before ("before-fence"), from the kernel's time of the signal and the
 * time its pidfd said it had exited, both CLOCK_MONOTONIC. */
static void fence_stop(const struct fence_hold *h, const char *name, pid_t pid)
{
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	struct pollfd p = { .fd = pfd, .events = POLLIN };
	int64_t t0, exited, signaled = 0;
	const char *verdict;
	int r, was;

	if (pfd < 0) {
		printf("stop %s %s: pidfd_open(%d)\n", name, errno_name(errno), (int)pid);
		return;
	}
	was = fence_status(h->sync, NULL);
	t0 = now_ns();
	if (kill(pid, SIGTERM) < 0) {
		printf("stop %s %s: kill(%d, SIGTERM)\n", name, errno_name(errno), (int)pid);
		close(pfd);
		return;
	}
	do
		r = poll(&p, 1, FENCE_STOP_WAIT_MS);
	while (r < 0 && errno == EINTR);
	exited = now_ns();
	close(pfd);
	if (r != 1) {
		printf("stop %s running: %d still runs %d ms after SIGTERM\n", name, (int)pid,
		       FENCE_STOP_WAIT_MS);
		return;
	}
	r = fence_status(h->sync, &signaled);
	/* A fence signaled before the SIGTERM held up nothing: such a stop proves nothing. */
	verdict = was != 0 ? "void" : r == 1 && signaled <= exited ? "after-fence" : "before-fence";
	printf("stop %s %s: the fence was %s at SIGTERM; p2pbufd exited %" PRId64
	       " ms after SIGTERM, the fence signaled %" PRId64 " ms after it\n",
	       name, verdict, was == 0 ? "pending" : "signaled", (exited - t0) / 1000000,
	       r == 1 ? (signaled - t0) / 1000000 : -1);
}

/* One command from the case script: "fence NAME", "stop NAME PID", "quit". */
static bool fence_command(void *ctx, const char *line)
{
	const struct fence_hold *h = ctx;
	char cmd[16], name[64];
	int pid = 0;

	if (sscanf(line, "%15s %63s %d", cmd, name, &pid) < 1)
		return true;
	if (!strcmp(cmd, "quit"))
		return false;
	if (!strcmp(cmd, "fence"))
		fence_report(h, name);
	else if (!strcmp(cmd, "stop") && pid > 0)
		fence_stop(h, name, (pid_t)pid);
	else
		printf("%s %s unknown command\n", cmd, name);
	return true;
}

/* vm-importer fence-hold [--socket PATH] DEVICE BAR OFFSET LENGTH */
static int cmd_fence_hold(int argc, char **argv)
{
	struct conn_opts o = { .label = "fence-hold" };
	struct fence_hold h = { .lease_fd = -1, .drm = -1, .bo_buf = -1, .sync = -1 };
	struct p2pbuf_range range;
	uint64_t size = 0;
	char why[512];
	int argi, r;

	parse_opts(argc, argv, &argi, &o);
	if (argc - argi != 4)
		die("usage: fence-hold [--socket PATH] DEVICE BAR OFFSET LENGTH");
	range.offset = parse_u64(argv[argi + 2], "offset");
	range.length = parse_u64(argv[argi + 3], "length");
	h.conn = connect_or_die(o.socket);
	h.lease_fd = p2pbuf_export(h.conn, argv[argi], (unsigned)parse_u64(argv[argi + 1], "BAR"),
				   &range, 1, o.label, &h.lease, &size);
	if (h.lease_fd < 0) {
		printf("expected a lease on %s, got %s: %s\n", argv[argi], errno_name(-h.lease_fd),
		       p2pbuf_last_message(h.conn));
		return 1;
	}
	r = fence_setup(&h, why, sizeof(why));
	if (r < 0) {
		printf("expected a vgem fence in lease %" PRIu64 "'s buffer, got: %s\n", h.lease,
		       why);
		return 1;
	}
	printf("fence: %s\n", why);
	printf("ready lease %" PRIu64 "\n", h.lease);
	/* Nothing is released, dispatched or signaled: the fd and the fence stay until "quit"
	 * or a signal ends us. */
	serve_commands(fence_command, &h);
	return 0;
}

/* ---- manager: a service manager with an fd store, for restarts of p2pbufd ---- */

/* What systemd 252 does with a Type=notify service's fd store, and no more: FDSTORE=1 keeps
 * the fd under FDNAME= unless the store holds the same open file already (same_fd(): kcmp
 * KCMP_FILE), in which case the new copy is dropped and the first name stays; FDSTOREREMOVE=1
 * drops every fd of that name; a restart passes the listening socket (named p2pbufd.socket)
 * and then every stored fd as LISTEN_FDS/LISTEN_FDNAMES. */
#define MGR_MAX_FDS 64

struct mgr {
	const char *sock_path, *log_path;
	char notify_path[PATH_MAX];
	int listen_fd, notify_fd;
	pid_t pid;
	struct {
		char name[128];
		int fd;
	} fds[MGR_MAX_FDS];
	size_t n;
	bool ready;
	char **argv; /* p2pbufd and its arguments */
};

static bool same_file(int a, int b)
{
	long r =
	    syscall(SYS_kcmp, (long)getpid(), (long)getpid(), 0L /* KCMP_FILE */, (long)a, (long)b);

	if (r < 0)
		die("kcmp: %m (the fd store's duplicate check needs it, as systemd's does)");
	return r == 0;
}

static void mgr_store(struct mgr *m, const char *name, int fd)
{
	for (size_t i = 0; i < m->n; i++)
		if (same_file(m->fds[i].fd, fd)) {
			printf("store: %s dropped, the same file as %s\n", name, m->fds[i].name);
			close(fd);
			return;
		}
	if (m->n == MGR_MAX_FDS)
		die("the fd store is full");
	snprintf(m->fds[m->n].name, sizeof(m->fds[0].name), "%s", name);
	m->fds[m->n++].fd = fd;
}

static void mgr_forget(struct mgr *m, const char *name)
{
	for (size_t i = 0; i < m->n;) {
		if (strcmp(m->fds[i].name, name) == 0) {
			close(m->fds[i].fd);
			m->fds[i] = m->fds[--m->n];
		} else {
			i++;
		}
	}
}

/* One notify message: READY=1, FDSTORE=1 (with its fds), FDSTOREREMOVE=1. */
static void mgr_message(struct mgr *m)
{
	char buf[4096], cbuf[CMSG_SPACE(sizeof(int) * 8)], name[128] = "stored";
	struct iovec iov = { buf, sizeof(buf) - 1 };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	int fds[8], nfds = 0;
	ssize_t n = recvmsg(m->notify_fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	const char *p;

	if (n < 0)
		return;
	buf[n] = '\0';
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			for (size_t k = 0;
			     CMSG_LEN((k + 1) * sizeof(int)) <= c->cmsg_len && nfds < 8; k++)
				memcpy(&fds[nfds++], CMSG_DATA(c) + k * sizeof(int), sizeof(int));
	if ((p = strstr(buf, "FDNAME=")))
		sscanf(p + 7, "%127[^\n]", name);
	if (strstr(buf, "FDSTOREREMOVE=1"))
		mgr_forget(m, name);
	for (int i = 0; i < nfds; i++) {
		if (strstr(buf, "FDSTORE=1"))
			mgr_store(m, name, fds[i]);
		else
			close(fds[i]);
	}
	if (strstr(buf, "READY=1"))
		m->ready = true;
}

/* Exec p2pbufd with the listening socket and every stored fd from fd 3 on. */
static void mgr_exec(struct mgr *m)
{
	char names[8192] = "p2pbufd.socket", pid[16], count[16];
	int log = open(m->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644), top = 200;

	if (log < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
		_exit(126);
	/* Out of the way first, then down to 3, 4, ...: the targets may hold other fds. */
	if (dup2(m->listen_fd, top) < 0)
		_exit(126);
	for (size_t i = 0; i < m->n; i++) {
		if (dup2(m->fds[i].fd, top + 1 + (int)i) < 0)
			_exit(126);
		strncat(names, ":", sizeof(names) - strlen(names) - 1);
		strncat(names, m->fds[i].name, sizeof(names) - strlen(names) - 1);
	}
	for (size_t i = 0; i <= m->n; i++) {
		dup2(top + (int)i, 3 + (int)i); /* clears CLOEXEC */
		close(top + (int)i);
	}
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	snprintf(count, sizeof(count), "%zu", m->n + 1);
	setenv("LISTEN_PID", pid, 1);
	setenv("LISTEN_FDS", count, 1);
	setenv("LISTEN_FDNAMES", names, 1);
	setenv("NOTIFY_SOCKET", m->notify_path, 1);
	execvp(m->argv[0], m->argv);
	_exit(127);
}

/* Start p2pbufd and wait (up to 60 s) for READY=1. */
static bool mgr_start(struct mgr *m, char *why, size_t wlen)
{
	struct pollfd p = { .fd = m->notify_fd, .events = POLLIN };
	int64_t end = now_ms() + 60000;
	int status;

	m->ready = false;
	fflush(stdout);
	m->pid = fork();
	if (m->pid < 0)
		die("fork: %m");
	if (m->pid == 0)
		mgr_exec(m);
	while (!m->ready && now_ms() < end) {
		if (waitpid(m->pid, &status, WNOHANG) == m->pid) {
			snprintf(why, wlen, "p2pbufd exited with status %d before READY=1 (see %s)",
				 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
				 m->log_path);
			m->pid = 0;
			return false;
		}
		if (poll(&p, 1, 100) == 1)
			mgr_message(m);
	}
	snprintf(why, wlen,
		 m->ready ? "pid %d, %zu stored fds passed"
			  : "no READY=1 from pid %d within 60 s (%zu stored fds passed)",
		 (int)m->pid, m->n);
	return m->ready;
}

/* Send sig and collect p2pbufd; what it parked stays in the store. Returns its status. */
static int mgr_stop(struct mgr *m, int sig)
{
	int status = 0;

	if (m->pid <= 0)
		return -1;
	kill(m->pid, sig);
	while (waitpid(m->pid, &status, 0) < 0 && errno == EINTR)
		;
	m->pid = 0;
	while (poll(&(struct pollfd){ .fd = m->notify_fd, .events = POLLIN }, 1, 0) == 1)
		mgr_message(m);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int mgr_sockets(struct mgr *m)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX }, na = { .sun_family = AF_UNIX };

	snprintf(m->notify_path, sizeof(m->notify_path), "%s.notify", m->sock_path);
	if (strlen(m->notify_path) >= sizeof(na.sun_path))
		die("socket path too long");
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", m->sock_path);
	snprintf(na.sun_path, sizeof(na.sun_path), "%s", m->notify_path);
	unlink(m->sock_path);
	unlink(m->notify_path);
	m->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	m->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (m->listen_fd < 0 || m->notify_fd < 0 ||
	    bind(m->listen_fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(m->listen_fd, 128) < 0 || chmod(m->sock_path, 0666) < 0 ||
	    bind(m->notify_fd, (struct sockaddr *)&na, sizeof(na)) < 0)
		die("the manager's sockets: %m");
	return 0;
}

/* One command from standard input, "CMD TAG": start, crash (SIGKILL), stop (SIGTERM), names
 * (what the store holds), quit. The reply starts with "CMD TAG ". */
static bool mgr_command(struct mgr *m, const char *line)
{
	char cmd[16], tag[32], why[256];

	if (sscanf(line, "%15s %31s", cmd, tag) != 2)
		return true;
	if (!strcmp(cmd, "quit"))
		return false;
	if (!strcmp(cmd, "start")) {
		bool ok = mgr_start(m, why, sizeof(why));
		printf("start %s %s %s\n", tag, ok ? "ok" : "FAIL", why);
		if (ok)
			printf("pid %s %d\n", tag, (int)m->pid);
	} else if (!strcmp(cmd, "crash")) {
		printf("crash %s status %d\n", tag, mgr_stop(m, SIGKILL));
	} else if (!strcmp(cmd, "stop")) {
		printf("stop %s status %d\n", tag, mgr_stop(m, SIGTERM));
	} else if (!strcmp(cmd, "names")) {
		for (size_t i = 0; i < m->n; i++)
			printf("stored %s %s\n", tag, m->fds[i].name);
		printf("names %s %zu\n", tag, m->n);
	}
	return true;
}

/* vm-importer manager --log FILE SOCKET -- P2PBUFD [ARG]... */
static int cmd_manager(int argc, char **argv)
{
	struct mgr m = { .listen_fd = -1, .notify_fd = -1 };
	char line[256];
	size_t used = 0;
	bool go = true;

	if (argc < 6 || strcmp(argv[1], "--log") != 0 || strcmp(argv[4], "--") != 0)
		die("usage: manager --log FILE SOCKET -- P2PBUFD [ARG]...");
	m.log_path = argv[2];
	m.sock_path = argv[3];
	m.argv = argv + 5;
	mgr_sockets(&m);
	printf("manager: listening on %s, notify socket %s\n", m.sock_path, m.notify_path);
	while (go) {
		struct pollfd p[2] = { { .fd = 0, .events = POLLIN },
				       { .fd = m.notify_fd, .events = POLLIN } };
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			die("poll: %m");
		if (p[1].revents & POLLIN)
			mgr_message(&m);
		if (!(p[0].revents & (POLLIN | POLLHUP)))
			continue;
		ssize_t n = read(0, line + used, sizeof(line) - 1 - used);
		if (n <= 0)
			break;
		used += (size_t)n;
		line[used] = '\0';
		for (char *nl; go && (nl = strchr(line, '\n'));) {
			*nl = '\0';
			go = mgr_command(&m, line);
			memmove(line, nl + 1, strlen(nl + 1) + 1);
			used = strlen(line);
		}
	}
	mgr_stop(&m, SIGTERM);
	unlink(m.sock_path);
	unlink(m.notify_path);
	return 0;
}

static const struct mode {
	const char *name;
	int (*run)(int argc, char **argv);
} modes[] = {
	{ "json", cmd_json },	    { "pattern", cmd_pattern }, { "as", cmd_as },
	{ "export", cmd_export },   { "dma", cmd_dma },		{ "revoke", cmd_revoke },
	{ "pass-fd", cmd_pass_fd }, { "events", cmd_events },	{ "dma-hold", cmd_dma_hold },
	{ "group", cmd_group },	    { "manager", cmd_manager }, { "fence-hold", cmd_fence_hold },
};

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2)
		die("usage: vm-importer MODE ARGS... (modes: json pattern as export dma dma-hold "
		    "revoke pass-fd group manager fence-hold events; see the source's header)");
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (!strcmp(argv[1], modes[i].name))
			return modes[i].run(argc - 1, argv + 1);
	die("unknown mode '%s'", argv[1]);
}
