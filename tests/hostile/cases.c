/* The hostile cases. Each runs in its own process (Check's fork mode), most of them as an
 * attacking user, and asserts the daemon's precise answer: an errno and the words of its
 * message, or the drop of that one connection. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <protobuf-c/protobuf-c.h>

#include "hostile.h"
#include "p2pbuf.h"
#include "p2pbuf.pb-c.h"
#include "policy.h"
#include "wire.h"

/* The suite's uid (%1$u) owns sim0 and sim1 and is admin; group ATTACK_GID may export pages
 * of sim1's first 512K and up to 4 leases of sim0 BAR 2; NOBODY_GID has no rule. */
const char hostile_policy[] =
    "# hostile suite\n"
    "device sim0 sim bar 0 64K bar 2 2M msix-table 0 0x2000+0x800 msix-pba 0 0x3000+0x100 "
    "revoke-deadline 1s\n"
    "device sim1 sim bar 0 1M revoke-deadline 1s\n"
    "allow user %1$u device sim0\n"
    "allow user %1$u device sim1\n"
    "admin user %1$u\n"
    "allow group 4242 device sim1 bar 0 range 0+512K\n"
    "allow group 4242 device sim0 bar 2 max-leases 4\n";

#define ATTACKER 4200 /* a uid of group ATTACK_GID */
#define NOBODY 4300   /* a uid of group NOBODY_GID */

/* ---- helpers ---- */

static void become(uid_t uid, gid_t gid)
{
	ck_assert_int_eq(setgroups(1, &gid), 0);
	ck_assert_int_eq(setgid(gid), 0);
	ck_assert_int_eq(setuid(uid), 0);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static int connect_raw(bool hello)
{
	int fd = harness_raw_connect(&h);

	ck_assert_msg(fd >= 0, "connect: %s", strerror(-fd));
	if (hello)
		ck_assert(harness_raw_hello(fd));
	return fd;
}

/* Pack req with request id id. */
static size_t pack(P2pbuf__Request *req, uint64_t id, uint8_t *buf)
{
	req->has_request_id = true;
	req->request_id = id;
	return p2pbuf__request__pack(req, buf);
}

/* The same, but every '~' in the record becomes a NUL byte (the same length, so the encoding
 * stays valid): how a NUL gets inside a string field. Only for requests whose other bytes
 * hold no 0x7e. */
static size_t pack_nul(P2pbuf__Request *req, uint64_t id, uint8_t *buf)
{
	size_t len = pack(req, id, buf);

	for (size_t i = 0; i < len; i++)
		if (buf[i] == '~')
			buf[i] = 0;
	return len;
}

/* Wait for the reply to request id on fd, skipping events. NULL if the daemon hung up. */
static P2pbuf__Reply *await(int fd, uint64_t id)
{
	uint8_t buf[65536];

	for (int i = 0; i < 10000; i++) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ck_assert_msg(poll(&p, 1, 5000) == 1, "no answer within 5 s");
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0)
			return NULL;
		P2pbuf__ServerMessage *sm = p2pbuf__server_message__unpack(NULL, (size_t)n, buf);
		ck_assert_ptr_nonnull(sm);
		if (sm->body_case == P2PBUF__SERVER_MESSAGE__BODY_REPLY &&
		    sm->reply->request_id == id) {
			P2pbuf__Reply *r = sm->reply;
			sm->reply = NULL;
			sm->body_case = P2PBUF__SERVER_MESSAGE__BODY__NOT_SET;
			p2pbuf__server_message__free_unpacked(sm, NULL);
			return r;
		}
		p2pbuf__server_message__free_unpacked(sm, NULL);
	}
	ck_abort_msg("no reply to request %llu", (unsigned long long)id);
	return NULL;
}

static P2pbuf__Reply *call_ex(int fd, P2pbuf__Request *req, uint64_t id, bool nul)
{
	uint8_t buf[65536];
	size_t len = nul ? pack_nul(req, id, buf) : pack(req, id, buf);

	ck_assert_int_eq(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
	return await(fd, id);
}

static P2pbuf__Reply *call(int fd, P2pbuf__Request *req, uint64_t id)
{
	return call_ex(fd, req, id, false);
}

/* The connection still serves: a Status is answered. */
static void assert_alive(int fd)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Status st = P2PBUF__STATUS__INIT;

	req.body_case = P2PBUF__REQUEST__BODY_STATUS;
	req.status = &st;
	P2pbuf__Reply *r = call(fd, &req, 999);
	ck_assert_msg(r, "the connection was dropped");
	ck_assert_int_eq(r->error, 0);
	p2pbuf__reply__free_unpacked(r, NULL);
}

/* req gets exactly err with a message containing has, and the connection lives on. */
static void expect_error(int fd, P2pbuf__Request *req, int err, const char *has)
{
	/* The cases that expect a NUL refused are the ones that wrote one as '~'. */
	P2pbuf__Reply *r = call_ex(fd, req, 42, strstr(has, "NUL") != NULL);

	ck_assert_msg(r, "dropped instead of answered");
	ck_assert_uint_eq(r->request_id, 42);
	ck_assert_msg(r->error == err, "error %d (%s), expected %d; message: %s", r->error,
		      strerror(-r->error), err, r->message ? r->message : "(none)");
	ck_assert_msg(r->message && strstr(r->message, has), "message \"%s\" lacks \"%s\"",
		      r->message ? r->message : "", has);
	p2pbuf__reply__free_unpacked(r, NULL);
	assert_alive(fd);
}

/* The daemon dropped this connection (and the daemon itself still serves others: the good
 * client watches that throughout). */
static void expect_drop(int fd)
{
	ck_assert_msg(harness_peer_closed(fd, 3000), "the connection was not dropped");
	close(fd);
}

static void send_bytes(int fd, const void *buf, size_t len)
{
	ck_assert_int_eq(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* A hand-made record with request id 42 gets err, and the connection lives on. */
static void expect_raw_error(int fd, const uint8_t *rec, size_t len, int err)
{
	send_bytes(fd, rec, len);
	P2pbuf__Reply *r = await(fd, 42);
	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(r->error, err);
	p2pbuf__reply__free_unpacked(r, NULL);
	assert_alive(fd);
}

/* How many times the daemon's log has a line containing s so far. */
static int log_count(const char *s)
{
	char path[160], line[2048];
	int n = 0;

	snprintf(path, sizeof(path), "%s/daemon.log", h.dir);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, s) != NULL;
	fclose(f);
	return n;
}

static bool wait_log_count(const char *s, int n, int timeout_ms)
{
	for (int t = 0; t < timeout_ms; t += 20) {
		if (log_count(s) >= n)
			return true;
		sleep_ms(20);
	}
	return false;
}

/* ---- framing ---- */

/* Records that do not decode: each drops its client. */
struct bad_record {
	const char *what;
	uint8_t bytes[8];
	size_t len;
};

static const struct bad_record bad_records[] = {
	{ "garbage", { 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x08 }, 7 },
	{ "empty record (reads as end of stream)", {}, 0 },
	{ "truncated varint", { 0x08, 0xff }, 2 },
	{ "group wire type", { 0x0b, 0x0c }, 2 },
	{ "length past the end", { 0x62, 0x7f, 0x0a, 0x01 }, 4 },
	{ "export body as a varint", { 0x08, 0x01, 0x60, 0x01 }, 4 },
};

START_TEST(framing_undecodable)
{
	const struct bad_record *b = &bad_records[_i];
	int fd = connect_raw(true);

	send_bytes(fd, b->bytes, b->len);
	ck_assert_msg(harness_peer_closed(fd, 3000), "%s: not dropped", b->what);
	close(fd);
}
END_TEST

START_TEST(framing_oversized)
{
	int fd = connect_raw(true), sndbuf = 1 << 20;
	uint8_t *big = calloc(1, 70000);

	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	send_bytes(fd, big, 70000);
	free(big);
	expect_drop(fd);
}
END_TEST

/* Send a Status request with fds[0..n) attached, however many: the daemon must refuse any. */
static void send_with_fds(int sock, const int *fds, size_t n)
{
	static const uint8_t status[] = { 0x08, 0x01, 0x8a, 0x01, 0x00 };
	union {
		char buf[CMSG_SPACE(16 * sizeof(int))];
		struct cmsghdr align;
	} ctl = {};
	struct iovec iov = { (void *)status, sizeof(status) };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = ctl.buf,
			     .msg_controllen = CMSG_SPACE(n * sizeof(int)) };

	ck_assert_uint_le(n, 16);
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(n * sizeof(int));
	memcpy(CMSG_DATA(cm), fds, n * sizeof(int));
	ck_assert_int_eq(sendmsg(sock, &mh, MSG_NOSIGNAL), (ssize_t)sizeof(status));
}

START_TEST(framing_fds_attached)
{
	int fd = connect_raw(true), pipefd[2];

	ck_assert_int_eq(pipe(pipefd), 0);
	send_with_fds(fd, pipefd, 2);
	close(pipefd[0]);
	expect_drop(fd);
	/* The daemon closed its copies: the pipe's read end is gone everywhere. */
	struct pollfd p = { .fd = pipefd[1], .events = POLLOUT };
	for (int i = 0; i < 100 && !(p.revents & POLLERR); i++) {
		poll(&p, 1, 20);
		if (!(p.revents & POLLERR))
			sleep_ms(20);
	}
	ck_assert_msg(p.revents & POLLERR, "the daemon kept the fds a client sent");
	close(pipefd[1]);
}
END_TEST

START_TEST(framing_too_many_fds)
{
	int fd = connect_raw(true), fds[12];

	for (int i = 0; i < 12; i++)
		fds[i] = dup(0);
	send_with_fds(fd, fds, 12);
	expect_drop(fd);
}
END_TEST

START_TEST(framing_unknown_field_only)
{
	static const uint8_t rec[] = { 0x08, 0x2a, 0xf8, 0x07, 0x01 }; /* id 42, field 127 */
	int fd = connect_raw(true);

	expect_raw_error(fd, rec, sizeof(rec), -EOPNOTSUPP);
	close(fd);
}
END_TEST

/* A record full of unknown fields decodes (protobuf-c keeps them) and is still refused as a
 * request without a body; the daemon's memory for it is gone with the record. */
START_TEST(framing_many_unknown_fields)
{
	uint8_t rec[60000];
	size_t n = 0;
	int fd = connect_raw(true);

	rec[n++] = 0x08;
	rec[n++] = 0x2a;
	while (n + 3 <= sizeof(rec)) {
		rec[n++] = 0xf8;
		rec[n++] = 0x07;
		rec[n++] = 0x01;
	}
	expect_raw_error(fd, rec, n, -EOPNOTSUPP);
	close(fd);
}
END_TEST

/* A burst of requests is answered in full and in order. */
START_TEST(framing_burst_in_order)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Status st = P2PBUF__STATUS__INIT;
	uint8_t buf[256];
	int fd = connect_raw(true);

	req.body_case = P2PBUF__REQUEST__BODY_STATUS;
	req.status = &st;
	for (uint64_t id = 1; id <= 200; id++) {
		size_t len = pack(&req, id, buf);
		send_bytes(fd, buf, len);
	}
	for (uint64_t id = 1; id <= 200; id++) {
		P2pbuf__Reply *r = await(fd, id);
		ck_assert_ptr_nonnull(r);
		ck_assert_int_eq(r->error, 0);
		p2pbuf__reply__free_unpacked(r, NULL);
	}
	close(fd);
}
END_TEST

/* ---- protocol state ---- */

START_TEST(state_request_before_hello)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__ListDevices ld = P2PBUF__LIST_DEVICES__INIT;
	int fd = connect_raw(false);

	req.body_case = P2PBUF__REQUEST__BODY_LIST_DEVICES;
	req.list_devices = &ld;
	P2pbuf__Reply *r = call(fd, &req, 5);
	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(r->error, -EPROTO);
	ck_assert_ptr_nonnull(strstr(r->message, "send Hello first"));
	p2pbuf__reply__free_unpacked(r, NULL);
	close(fd);
}
END_TEST

static void hello_version(bool has_major, uint32_t major)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Hello hello = P2PBUF__HELLO__INIT;
	int fd = connect_raw(false);

	hello.has_major = has_major;
	hello.major = major;
	req.body_case = P2PBUF__REQUEST__BODY_HELLO;
	req.hello = &hello;
	P2pbuf__Reply *r = call(fd, &req, 1);
	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(r->error, -EPROTONOSUPPORT);
	ck_assert_ptr_nonnull(strstr(r->message, "speaks protocol 1."));
	p2pbuf__reply__free_unpacked(r, NULL);
	expect_drop(fd);
}

START_TEST(state_hello_major_2)
{
	hello_version(true, 2);
}
END_TEST

START_TEST(state_hello_no_major)
{
	hello_version(false, 0);
}
END_TEST

START_TEST(state_hello_twice)
{
	int fd = connect_raw(true);

	ck_assert(harness_raw_hello(fd));
	assert_alive(fd);
	close(fd);
}
END_TEST

/* A client that never says Hello is dropped at --hello-timeout (300ms here). */
START_TEST(state_no_hello_dropped)
{
	become(NOBODY, NOBODY_GID);
	int fd = connect_raw(false);
	int64_t t0 = time(NULL);

	expect_drop(fd);
	ck_assert_int_le(time(NULL) - t0, 2);
}
END_TEST

/* Requests other than Hello do not meet the deadline. */
START_TEST(state_other_requests_do_not_meet_deadline)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Status st = P2PBUF__STATUS__INIT;
	uint8_t buf[64];

	become(NOBODY, NOBODY_GID);
	int fd = connect_raw(false);
	req.body_case = P2PBUF__REQUEST__BODY_STATUS;
	req.status = &st;
	size_t len = pack(&req, 1, buf);
	bool closed = false;
	for (int i = 0; i < 60 && !closed; i++) {
		if (send(fd, buf, len, MSG_NOSIGNAL) < 0)
			break;
		closed = harness_peer_closed(fd, 50);
	}
	ck_assert(closed || harness_peer_closed(fd, 3000));
	close(fd);
}
END_TEST

START_TEST(state_unknown_body)
{
	static const uint8_t rec[] = { 0x08, 0x2a, 0x9a, 0x06, 0x00 }; /* field 99, empty */
	int fd = connect_raw(true);

	expect_raw_error(fd, rec, sizeof(rec), -EOPNOTSUPP);
	close(fd);
}
END_TEST

START_TEST(state_request_id_extremes)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Status st = P2PBUF__STATUS__INIT;
	int fd = connect_raw(true);

	req.body_case = P2PBUF__REQUEST__BODY_STATUS;
	req.status = &st;
	P2pbuf__Reply *r = call(fd, &req, UINT64_MAX);
	ck_assert_ptr_nonnull(r);
	ck_assert_uint_eq(r->request_id, UINT64_MAX);
	p2pbuf__reply__free_unpacked(r, NULL);
	r = call(fd, &req, 0);
	ck_assert_ptr_nonnull(r);
	ck_assert_uint_eq(r->request_id, 0);
	p2pbuf__reply__free_unpacked(r, NULL);
	close(fd);
}
END_TEST

/* ---- every request's fields ---- */

struct export_case {
	const char *device; /* '~' stands for a NUL byte */
	int bar;	    /* -1: none */
	size_t n;	    /* ranges; more than 3: that many one-page ranges */
	struct {
		uint64_t offset, length;
		bool no_length;
	} r[3];
	const char *label;
	bool as_attacker; /* else as the suite's uid, which may export anything */
	int err;
	const char *has;
};

static const struct export_case export_cases[] = {
	{ NULL, 0, 1, { { 0, 0x1000 } }, NULL, true, -EINVAL, "export.device: missing" },
	{ "", 0, 1, { { 0, 0x1000 } }, NULL, true, -EINVAL, "export.device: missing" },
	{ "sim1~evil",
	  0,
	  1,
	  { { 0, 0x1000 } },
	  NULL,
	  true,
	  -EINVAL,
	  "export.device: contains a NUL" },
	{ "sim 1", 0, 1, { { 0, 0x1000 } }, NULL, true, -EINVAL, "export.device: may contain" },
	{ "sim1\n", 0, 1, { { 0, 0x1000 } }, NULL, true, -EINVAL, "export.device: may contain" },
	{ "s\xc3\xadm1",
	  0,
	  1,
	  { { 0, 0x1000 } },
	  NULL,
	  true,
	  -EINVAL,
	  "export.device: may contain" },
	{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	  0,
	  1,
	  { { 0, 0x1000 } },
	  NULL,
	  true,
	  -EINVAL,
	  "export.device: too long" },
	{ "nosuch", 0, 1, { { 0, 0x1000 } }, NULL, true, -ENODEV, "unknown device" },
	{ "sim1",
	  0,
	  1,
	  { { 0, 0x1000 } },
	  "ok~hidden",
	  true,
	  -EINVAL,
	  "export.label: contains a NUL" },
	{ "sim1",
	  0,
	  1,
	  { { 0, 0x1000 } },
	  "bad\xff",
	  true,
	  -EINVAL,
	  "export.label: not valid UTF-8" },
	{ "sim1",
	  0,
	  1,
	  { { 0, 0x1000 } },
	  "\xc0\xaf",
	  true,
	  -EINVAL,
	  "export.label: not valid UTF-8" },
	{ "sim1",
	  0,
	  1,
	  { { 0, 0x1000 } },
	  "a\nforged: granted",
	  true,
	  -EINVAL,
	  "export.label: contains a control" },
	{ "sim1",
	  0,
	  1,
	  { { 0, 0x1000 } },
	  "a\xc2\x85"
	  "b",
	  true,
	  -EINVAL,
	  "export.label: contains a control" },
	{ "sim1",
	  0,
	  1,
	  { { 0, 0x1000 } },
	  "a\xe2\x80\xa8"
	  "b",
	  true,
	  -EINVAL,
	  "export.label: contains a line" },
	{ "sim1",
	  0,
	  1,
	  { { 0, 0x1000 } },
	  "gpj\xe2\x80\xae"
	  "exe",
	  true,
	  -EINVAL,
	  "export.label: contains a bidi" },
	{ "sim1",
	  0,
	  1,
	  { { 0, 0x1000 } },
	  "\x1b[2J",
	  true,
	  -EINVAL,
	  "export.label: contains a control" },
	{ "sim1", -1, 1, { { 0, 0x1000 } }, NULL, true, -EINVAL, "no BAR" },
	{ "sim1", 0, 65, {}, NULL, true, -E2BIG, "too many ranges" },
	{ "sim1", 0, 1, { { 0, 0, true } }, NULL, true, -EINVAL, "a range has no length" },
	{ "sim0", 1, 1, { { 0, 0x1000 } }, NULL, false, -ENXIO, "BAR 1" },
	{ "sim0", 7, 1, { { 0, 0x1000 } }, NULL, false, -ENXIO, "BAR 7" },
	{ "sim0", 2, 1, { { 0, 0 } }, NULL, false, -EINVAL, "length 0" },
	{ "sim0", 2, 1, { { 0x800, 0x1000 } }, NULL, false, -EINVAL, "not aligned" },
	{ "sim0", 2, 1, { { 0x1ff000, 0x2000 } }, NULL, false, -ERANGE, "outside BAR 2" },
	{ "sim0", 2, 1, { { UINT64_MAX - 0xfff, 0x2000 } }, NULL, false, -ERANGE, "outside" },
	{ "sim0",
	  2,
	  2,
	  { { 0x0, 0x4000 }, { 0x2000, 0x1000 } },
	  NULL,
	  false,
	  -EINVAL,
	  "ranges 0 (0x0+0x4000) and 1 (0x2000+0x1000) overlap" },
	{ "sim0", 0, 1, { { 0x2000, 0x1000 } }, NULL, false, -EADDRNOTAVAIL, "MSI-X table" },
	{ "sim0", 0, 1, { { 0x0, 0x4000 } }, NULL, false, -EADDRNOTAVAIL, "MSI-X" },
	{ "sim1", 0, 1, { { 0x80000, 0x1000 } }, NULL, true, -EPERM, "denied by policy" },
	{ "sim0", 0, 1, { { 0x0, 0x1000 } }, NULL, true, -EPERM, "denied by policy" },
};

START_TEST(export_fields)
{
	const struct export_case *x = &export_cases[_i];
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Export e = P2PBUF__EXPORT__INIT;
	P2pbuf__Range rs[65], *rp[65];
	if (x->as_attacker)
		become(ATTACKER, ATTACK_GID);
	int fd = connect_raw(true);

	e.device = (char *)x->device;
	e.has_bar = x->bar >= 0;
	e.bar = x->bar >= 0 ? (uint32_t)x->bar : 0;
	e.label = (char *)x->label;
	for (size_t i = 0; i < x->n; i++) {
		p2pbuf__range__init(&rs[i]);
		rs[i].has_offset = true;
		rs[i].offset = x->n > 3 ? i * 0x1000 : x->r[i].offset;
		rs[i].has_length = x->n > 3 || !x->r[i].no_length;
		rs[i].length = x->n > 3 ? 0x1000 : x->r[i].length;
		rp[i] = &rs[i];
	}
	e.n_ranges = x->n;
	e.ranges = rp;
	req.body_case = P2PBUF__REQUEST__BODY_EXPORT;
	req.export = &e;
	expect_error(fd, &req, x->err, x->has);
	close(fd);
}
END_TEST

enum other_kind { HELLO_NAME, RESET, RELEASE, REVOKE };

struct other_case {
	enum other_kind kind;
	const char *text; /* client name or device; '~' is a NUL */
	bool has_id;
	bool as_attacker;
	int err;
	const char *has;
};

static const struct other_case other_cases[] = {
	{ HELLO_NAME, "x~y", false, true, -EINVAL, "hello.client_name: contains a NUL" },
	{ HELLO_NAME,
	  "a\xe2\x80\xae"
	  "b",
	  false, true, -EINVAL, "hello.client_name: contains a bidi" },
	{ HELLO_NAME, "\xed\xa0\x80", false, true, -EINVAL, "hello.client_name: not valid UTF-8" },
	{ RESET, NULL, false, false, -EINVAL, "reset.device: missing" },
	{ RESET, "sim0~", false, false, -EINVAL, "reset.device: contains a NUL" },
	{ RESET, "sim0;rm", false, false, -EINVAL, "reset.device: may contain" },
	{ RESET, "nosuch", false, false, -ENODEV, "unknown device" },
	{ RESET, "sim0", false, true, -EPERM, "needs an admin rule" },
	{ RELEASE, NULL, false, true, -EINVAL, "release: no lease id" },
	{ REVOKE, NULL, false, true, -EINVAL, "revoke: no lease id" },
	{ REVOKE, NULL, true, true, -EPERM, "needs an admin rule" },
	{ REVOKE, NULL, true, false, -ENOENT, "no lease 123456789 (ended already?)" },
};

START_TEST(other_fields)
{
	const struct other_case *x = &other_cases[_i];
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Hello hello = P2PBUF__HELLO__INIT;
	P2pbuf__Reset reset = P2PBUF__RESET__INIT;
	P2pbuf__Release rel = P2PBUF__RELEASE__INIT;
	P2pbuf__Revoke rev = P2PBUF__REVOKE__INIT;
	if (x->as_attacker)
		become(ATTACKER, ATTACK_GID);
	int fd = connect_raw(true);

	switch (x->kind) {
	case HELLO_NAME:
		hello.has_major = true;
		hello.major = 1;
		hello.client_name = (char *)x->text;
		req.body_case = P2PBUF__REQUEST__BODY_HELLO;
		req.hello = &hello;
		break;
	case RESET:
		reset.device = (char *)x->text;
		req.body_case = P2PBUF__REQUEST__BODY_RESET;
		req.reset = &reset;
		break;
	case RELEASE:
		rel.has_lease_id = x->has_id;
		rel.lease_id = 123456789;
		req.body_case = P2PBUF__REQUEST__BODY_RELEASE;
		req.release = &rel;
		break;
	case REVOKE:
		rev.has_lease_id = x->has_id;
		rev.lease_id = 123456789;
		req.body_case = P2PBUF__REQUEST__BODY_REVOKE;
		req.revoke = &rev;
		break;
	}
	expect_error(fd, &req, x->err, x->has);
	close(fd);
}
END_TEST

/* ---- authorization ---- */

static struct p2pbuf *lib_connect(void)
{
	struct p2pbuf *c = NULL;
	int r = p2pbuf_connect(h.socket, &c);

	ck_assert_msg(r == 0, "p2pbuf_connect: %s", strerror(-r));
	return c;
}

static int export_page(struct p2pbuf *c, const char *dev, unsigned bar, uint64_t off,
		       uint64_t *ret_id)
{
	struct p2pbuf_range r = { off, 0x1000 };
	uint64_t size;

	return p2pbuf_export(c, dev, bar, &r, 1, "hostile", ret_id, &size);
}

START_TEST(auth_no_rule)
{
	become(NOBODY, NOBODY_GID);
	struct p2pbuf *c = lib_connect();
	uint64_t id;

	ck_assert_int_eq(export_page(c, "sim1", 0, 0, &id), -EPERM);
	ck_assert_ptr_nonnull(strstr(p2pbuf_last_message(c), "denied by policy"));
	p2pbuf_disconnect(c);
}
END_TEST

/* Probing lease ids: another user's live lease and an id never used get one answer. */
START_TEST(auth_lease_id_oracle)
{
	struct p2pbuf *owner = lib_connect();
	uint64_t id;
	int fd = export_page(owner, "sim1", 0, 0xf0000, &id);
	char live[256], unused[256], want[64];

	ck_assert_int_ge(fd, 0);
	become(ATTACKER, ATTACK_GID);
	struct p2pbuf *c = lib_connect();
	ck_assert_int_eq(p2pbuf_release(c, id), -ENOENT);
	snprintf(live, sizeof(live), "%s", p2pbuf_last_message(c));
	ck_assert_int_eq(p2pbuf_release(c, id + 1000000), -ENOENT);
	snprintf(unused, sizeof(unused), "%s", p2pbuf_last_message(c));
	/* The same words, only the id differs. */
	snprintf(want, sizeof(want), "no lease %llu of yours (ended already?)",
		 (unsigned long long)id);
	ck_assert_str_eq(live, want);
	snprintf(want, sizeof(want), "no lease %llu of yours (ended already?)",
		 (unsigned long long)id + 1000000);
	ck_assert_str_eq(unused, want);
	/* The owner's lease is untouched. */
	ck_assert_int_eq(p2pbuf_lease_release(owner, id, fd), 0);
	p2pbuf_disconnect(c);
	p2pbuf_disconnect(owner);
}
END_TEST

/* Revoke needs admin whether or not the lease exists: no oracle there either. */
START_TEST(auth_revoke_not_an_oracle)
{
	struct p2pbuf *owner = lib_connect();
	uint64_t id;
	int fd = export_page(owner, "sim1", 0, 0xf1000, &id);
	char a[256];

	ck_assert_int_ge(fd, 0);
	become(ATTACKER, ATTACK_GID);
	struct p2pbuf *c = lib_connect();
	ck_assert_int_eq(p2pbuf_revoke(c, id), -EPERM);
	snprintf(a, sizeof(a), "%s", p2pbuf_last_message(c));
	ck_assert_int_eq(p2pbuf_revoke(c, id + 1000000), -EPERM);
	ck_assert_str_eq(a, p2pbuf_last_message(c));
	ck_assert_int_eq(p2pbuf_lease_release(owner, id, fd), 0);
	p2pbuf_disconnect(c);
	p2pbuf_disconnect(owner);
}
END_TEST

/* An admin sees the truth: it may release another user's lease. */
START_TEST(auth_admin_releases_any)
{
	uint64_t id;
	int pipefd[2];

	ck_assert_int_eq(pipe(pipefd), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		become(ATTACKER, ATTACK_GID);
		struct p2pbuf *c = lib_connect();
		int fd = export_page(c, "sim1", 0, 0x70000, &id);
		if (fd < 0 || write(pipefd[1], &id, sizeof(id)) != sizeof(id))
			_exit(1);
		close(fd);
		for (;;) /* the connection stays open, and the lease active, until killed */
			pause();
	}
	ck_assert_int_eq(read(pipefd[0], &id, sizeof(id)), (ssize_t)sizeof(id));
	struct p2pbuf *admin = lib_connect();
	ck_assert_int_eq(p2pbuf_release(admin, id), 0);
	/* Nobody holds it: it ends at the next count of its holders, then is gone for all. */
	int r = 0;
	for (int i = 0; i < 200 && r == 0; i++) {
		r = p2pbuf_release(admin, id);
		if (r == 0)
			sleep_ms(25);
	}
	ck_assert_int_eq(r, -ENOENT);
	ck_assert_ptr_nonnull(strstr(p2pbuf_last_message(admin), "no lease"));
	p2pbuf_disconnect(admin);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}
END_TEST

START_TEST(auth_listing_and_watching_all)
{
	become(ATTACKER, ATTACK_GID);
	struct p2pbuf *c = lib_connect();
	struct p2pbuf_lease *ls;
	size_t n;

	ck_assert_int_eq(p2pbuf_list_leases(c, true, &ls, &n), -EPERM);
	ck_assert_ptr_nonnull(strstr(p2pbuf_last_message(c), "observer or admin"));
	ck_assert_int_eq(p2pbuf_subscribe(c, true), -EPERM);
	ck_assert_ptr_nonnull(strstr(p2pbuf_last_message(c), "observer or admin"));
	/* Its own listing shows none of the good client's leases. */
	ck_assert_int_eq(p2pbuf_list_leases(c, false, &ls, &n), 0);
	for (size_t i = 0; i < n; i++)
		ck_assert_uint_eq(ls[i].owner_uid, ATTACKER);
	p2pbuf_leases_free(ls, n);
	ck_assert_int_eq(p2pbuf_subscribe(c, false), 0);
	p2pbuf_disconnect(c);
}
END_TEST

START_TEST(auth_rule_max_leases)
{
	become(ATTACKER + 1, ATTACK_GID);
	struct p2pbuf *c = lib_connect();
	int fds[4];
	uint64_t id;

	for (int i = 0; i < 4; i++) {
		fds[i] = export_page(c, "sim0", 2, (uint64_t)i * 0x1000, &id);
		ck_assert_msg(fds[i] >= 0, "%s", p2pbuf_last_message(c));
	}
	ck_assert_int_eq(export_page(c, "sim0", 2, 0x10000, &id), -EDQUOT);
	ck_assert_ptr_nonnull(strstr(p2pbuf_last_message(c), "max-leases"));
	for (int i = 0; i < 4; i++)
		close(fds[i]);
	p2pbuf_disconnect(c);
}
END_TEST

/* ---- resources ---- */

/* One uid may hold 8 connections (--max-clients-per-user); the 9th is told so, then closed. */
START_TEST(res_connections_per_user)
{
	int fds[8];

	become(ATTACKER + 10, ATTACK_GID);
	for (int i = 0; i < 8; i++)
		fds[i] = connect_raw(true);
	struct p2pbuf *c = NULL;
	ck_assert_int_eq(p2pbuf_connect(h.socket, &c), -EUSERS);
	int extra = connect_raw(false);
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Hello hello = P2PBUF__HELLO__INIT;
	hello.has_major = true;
	hello.major = 1;
	req.body_case = P2PBUF__REQUEST__BODY_HELLO;
	req.hello = &hello;
	P2pbuf__Reply *r = call(extra, &req, 1);
	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(r->error, -EUSERS);
	ck_assert_ptr_nonnull(strstr(r->message, "uid 4210 has 8 connections"));
	ck_assert_ptr_nonnull(strstr(r->message, "--max-clients-per-user"));
	p2pbuf__reply__free_unpacked(r, NULL);
	expect_drop(extra);
	/* A slot freed is a slot usable again. */
	close(fds[0]);
	bool again = false;
	for (int t = 0; t < 100 && !again; t++) {
		again = p2pbuf_connect(h.socket, &c) == 0;
		if (!again)
			sleep_ms(20);
	}
	ck_assert(again);
	p2pbuf_disconnect(c);
	for (int i = 1; i < 8; i++)
		close(fds[i]);
}
END_TEST

/* Slots held without Hello are taken back at the deadline. */
START_TEST(res_hello_slot_hogs)
{
	int fds[8];

	become(NOBODY + 1, NOBODY_GID);
	for (int i = 0; i < 8; i++)
		fds[i] = connect_raw(false);
	for (int i = 0; i < 8; i++)
		expect_drop(fds[i]);
	bool again = false;
	for (int t = 0; t < 100 && !again; t++) {
		int fd = connect_raw(false);
		again = harness_raw_hello(fd);
		close(fd);
	}
	ck_assert(again);
}
END_TEST

/* Every --max-clients slot taken (by many users): the next connection is told EAGAIN; the
 * good client, connected before, goes on. */
START_TEST(res_max_clients)
{
	pid_t pids[15];
	int n = 0, refused = 0, u, hold[2];

	ck_assert_int_eq(pipe(hold), 0);
	for (u = 0; u < 15 && !refused; u++) {
		int p[2];
		ck_assert_int_eq(pipe(p), 0);
		pids[u] = fork();
		ck_assert_int_ge(pids[u], 0);
		if (pids[u] == 0) {
			/* Connect as another user, report each Hello's answer, and hold the
			 * connections until the parent closes hold. */
			close(hold[1]);
			close(p[0]);
			become(ATTACKER + 20 + (uid_t)u, ATTACK_GID);
			for (int i = 0; i < 8; i++) {
				int fd = connect_raw(false);
				P2pbuf__Request req = P2PBUF__REQUEST__INIT;
				P2pbuf__Hello hello = P2PBUF__HELLO__INIT;
				hello.has_major = true;
				hello.major = 1;
				req.body_case = P2PBUF__REQUEST__BODY_HELLO;
				req.hello = &hello;
				P2pbuf__Reply *r = call(fd, &req, 1);
				int err = r ? r->error : -ECONNRESET;
				if (r && err == -EAGAIN &&
				    !strstr(r->message, "the most it allows (--max-clients)"))
					err = -EIO;
				if (r)
					p2pbuf__reply__free_unpacked(r, NULL);
				if (write(p[1], &err, sizeof(err)) != sizeof(err))
					_exit(1);
			}
			char b;
			(void)!read(hold[0], &b, 1);
			_exit(0);
		}
		close(p[1]);
		for (int i = 0; i < 8; i++) {
			int err = 1;
			ck_assert_int_eq(read(p[0], &err, sizeof(err)), (ssize_t)sizeof(err));
			ck_assert_msg(err == 0 || err == -EAGAIN, "hello: %s", strerror(-err));
			refused += err == -EAGAIN;
			n += err == 0;
		}
		close(p[0]);
	}
	close(hold[1]);
	for (int k = 0; k < u; k++)
		waitpid(pids[k], NULL, 0);
	close(hold[0]);
	ck_assert_msg(refused > 0, "%d connections and none refused", n);
	ck_assert_int_le(n, 96);
}
END_TEST

/* Past SERVER_MAX_REFUSING refused connections at once, the rest are closed unanswered: a
 * flood of refused connections costs the daemon no more fds than that. */
START_TEST(res_refusing_flood)
{
	int fds[8], flood[40], answered = 0, unanswered = 0;

	become(ATTACKER + 40, ATTACK_GID);
	for (int i = 0; i < 8; i++)
		fds[i] = connect_raw(true);
	for (int i = 0; i < 40; i++)
		flood[i] = connect_raw(false);
	for (int i = 0; i < 40; i++) {
		static const uint8_t hello[] = { 0x08, 0x01, 0x52, 0x02, 0x08, 0x01 };
		if (send(flood[i], hello, sizeof(hello), MSG_NOSIGNAL) < 0) {
			unanswered++;
			continue;
		}
		P2pbuf__Reply *r = await(flood[i], 1);
		if (r) {
			ck_assert_int_eq(r->error, -EUSERS);
			answered++;
			p2pbuf__reply__free_unpacked(r, NULL);
		} else {
			unanswered++;
		}
		close(flood[i]);
	}
	ck_assert_int_gt(answered, 0);
	ck_assert_int_ge(unanswered, 40 - 16);
	for (int i = 0; i < 8; i++)
		close(fds[i]);
}
END_TEST

START_TEST(res_leases_per_client)
{
	become(ATTACKER + 50, ATTACK_GID);
	struct p2pbuf *c = lib_connect();
	int fds[32];
	uint64_t id;

	for (int i = 0; i < 32; i++) {
		fds[i] = export_page(c, "sim1", 0, (uint64_t)i * 0x1000, &id);
		ck_assert_msg(fds[i] >= 0, "%d: %s", i, p2pbuf_last_message(c));
	}
	ck_assert_int_eq(export_page(c, "sim1", 0, 0, &id), -EDQUOT);
	ck_assert_ptr_nonnull(strstr(p2pbuf_last_message(c), "this connection holds 32 leases"));
	for (int i = 0; i < 32; i++)
		close(fds[i]);
	p2pbuf_disconnect(c);
}
END_TEST

/* One user takes its 64 (--max-leases-per-user), over two connections, and is refused
 * there, while the daemon's 512 are far from used: everyone else goes on (the good client
 * does). Leases still held after their connection closed count until let go. */
START_TEST(res_leases_per_user)
{
	become(ATTACKER + 60, ATTACK_GID);
	struct p2pbuf *a = lib_connect(), *b = lib_connect(), *c = lib_connect();
	int fds[64];
	uint64_t id;

	for (int i = 0; i < 64; i++) {
		fds[i] = export_page(i < 32 ? a : b, "sim1", 0, (uint64_t)i * 0x1000, &id);
		ck_assert_msg(fds[i] >= 0, "%d: %s", i, p2pbuf_last_message(i < 32 ? a : b));
	}
	ck_assert_int_eq(export_page(c, "sim1", 0, 0, &id), -EDQUOT);
	ck_assert_ptr_nonnull(strstr(p2pbuf_last_message(c), "uid 4260 holds 64 leases"));
	ck_assert_ptr_nonnull(strstr(p2pbuf_last_message(c), "--max-leases-per-user"));
	/* a goes away but its holder keeps the buffers: they still count. */
	p2pbuf_disconnect(a);
	sleep_ms(100);
	ck_assert_int_eq(export_page(c, "sim1", 0, 0, &id), -EDQUOT);
	for (int i = 0; i < 64; i++)
		close(fds[i]);
	p2pbuf_disconnect(b);
	/* Let go for real: the quota comes back (once the leases have ended). */
	int fd = -1;
	for (int t = 0; t < 200 && fd < 0; t++) {
		fd = export_page(c, "sim1", 0, 0, &id);
		if (fd < 0) {
			ck_assert_int_eq(fd, -EDQUOT);
			sleep_ms(25);
		}
	}
	ck_assert_msg(fd >= 0, "the quota did not come back: %s", p2pbuf_last_message(c));
	close(fd);
	p2pbuf_disconnect(c);
}
END_TEST

/* Send ListDevices on fd until the daemon stops reading (its socket stays full for a
 * second). Returns how many got in. */
static uint64_t flood_unread(int fd)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__ListDevices ld = P2PBUF__LIST_DEVICES__INIT;
	uint8_t buf[128];
	uint64_t sent = 0;

	req.body_case = P2PBUF__REQUEST__BODY_LIST_DEVICES;
	req.list_devices = &ld;
	for (int i = 0; i < 200000; i++) {
		size_t len = pack(&req, sent + 1, buf);
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n == (ssize_t)len) {
			sent++;
			continue;
		}
		ck_assert_msg(n < 0 && errno == EAGAIN, "send: %s", strerror(errno));
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		if (poll(&p, 1, 1000) == 0)
			return sent;
	}
	ck_abort_msg("the daemon kept reading from a client that never reads");
	return sent;
}

/* Backpressure: a client that never reads is not read from; its daemon-side queue and the
 * daemon's RSS stay bounded; when it reads at last, everything that got in is answered. */
START_TEST(res_backpressure)
{
	become(ATTACKER + 70, ATTACK_GID);
	int fd = connect_raw(true);
	uint64_t sent = flood_unread(fd);

	ck_assert(daemon_instrumented() || daemon_rss_kb() < rss_baseline() + 8192);
	for (uint64_t id = 1; id <= sent; id++) {
		P2pbuf__Reply *r = await(fd, id);
		ck_assert_ptr_nonnull(r);
		ck_assert_int_eq(r->error, 0);
		p2pbuf__reply__free_unpacked(r, NULL);
	}
	assert_alive(fd);
	close(fd);
}
END_TEST

/* Twenty clients that never read, from three users, push the daemon's queues past half of
 * --max-queued-bytes: clients with output waiting are not read, but one that reads its
 * replies still is (the good client throughout, and a new one here). */
START_TEST(res_global_queue_cap)
{
	int fds[20];

	for (int i = 0; i < 20; i++) {
		pid_t pid;
		int sv[2];
		/* Each user's sockets are made in a child that becomes that user. */
		ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
		pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			become(ATTACKER + 80 + (uid_t)(i / 8), ATTACK_GID);
			int fd = connect_raw(true);
			flood_unread(fd);
			/* Hand the socket over and exit. */
			_exit(wire_send(sv[1], "", 1, &fd, 1) == 0 ? 0 : 1);
		}
		close(sv[1]);
		static uint8_t b[WIRE_MAX_RECORD];
		int got[WIRE_MAX_FDS];
		size_t n = 0;
		struct pollfd pf = { .fd = sv[0], .events = POLLIN };
		ck_assert_int_eq(poll(&pf, 1, 30000), 1);
		ck_assert_int_eq(wire_recv(sv[0], b, sizeof(b), got, &n), 1);
		ck_assert_uint_eq(n, 1);
		fds[i] = got[0];
		close(sv[0]);
		waitpid(pid, NULL, 0);
	}
	ck_assert(daemon_instrumented() || daemon_rss_kb() < rss_baseline() + 16384);
	become(ATTACKER + 90, ATTACK_GID);
	int fresh = connect_raw(true);
	assert_alive(fresh);
	close(fresh);
	for (int i = 0; i < 20; i++)
		close(fds[i]);
}
END_TEST

/* Clients killed mid-request, and a churn of connections: nothing leaks (the final case
 * checks the daemon's fds). */
START_TEST(res_killed_mid_request)
{
	for (int i = 0; i < 20; i++) {
		pid_t pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			become(ATTACKER + 100, ATTACK_GID);
			struct p2pbuf *c = lib_connect();
			uint64_t id;
			for (;;) {
				int fd = export_page(c, "sim1", 0, 0x1000, &id);
				if (fd >= 0)
					close(fd);
			}
		}
		sleep_ms(5 + i % 7);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
}
END_TEST

START_TEST(res_connection_churn)
{
	become(ATTACKER + 110, ATTACK_GID);
	for (int i = 0; i < 300; i++) {
		int fd = connect_raw(i % 2 == 0);
		close(fd);
	}
}
END_TEST

/* Idle processes of a user with no rule at all, 20 of them holding 300 fds each, until the
 * returned fd is closed (another user may not kill them). Returns once every one holds
 * them. */
static int idle_holders(pid_t pids[20])
{
	int ready[2], hold[2];
	char b;

	ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(hold, O_CLOEXEC), 0);
	for (int i = 0; i < 20; i++) {
		pids[i] = fork();
		ck_assert_int_ge(pids[i], 0);
		if (pids[i] == 0) {
			struct rlimit rl;
			close(hold[1]);
			if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 1024)
				rl.rlim_cur = rl.rlim_max < 1024 ? rl.rlim_max : 1024;
			setrlimit(RLIMIT_NOFILE, &rl);
			become(NOBODY + 10, NOBODY_GID);
			for (int j = 0; j < 300; j++)
				if (open("/dev/null", O_RDONLY | O_CLOEXEC) < 0)
					_exit(1);
			if (write(ready[1], "", 1) != 1)
				_exit(1);
			_exit(read(hold[0], &b, 1) == 0 ? 0 : 1);
		}
	}
	close(ready[1]);
	close(hold[0]);
	for (int i = 0; i < 20; i++)
		ck_assert_int_eq(read(ready[0], &b, 1), 1);
	close(ready[0]);
	return hold[1];
}

static void count_revoked(struct p2pbuf *conn, const struct p2pbuf_event *ev, void *userdata)
{
	if (ev->type == P2PBUF_EVENT_LEASE_REVOKED && ev->reason == P2PBUF_REASON_RELEASED)
		++*(int *)userdata;
}

/* A user with no rights holds 6,000 fds in idle processes: every simulated count walks them
 * all, but off the daemon's loop. Leases released with a copy held elsewhere are listed (with
 * their last count, not a walk per lease in the listing) and end once the copy goes, while
 * the good client (judged by the final case) is never stalled by the walks. */
START_TEST(res_held_fds_idle)
{
	pid_t idle[20], keeper;
	int fds[32], revoked = 0;
	uint64_t ids[32];
	int hold = idle_holders(idle);

	become(ATTACKER + 120, ATTACK_GID);
	struct p2pbuf *c = lib_connect(), *watch = lib_connect();
	ck_assert_int_eq(p2pbuf_subscribe(watch, false), 0);
	p2pbuf_set_event_handler(watch, count_revoked, &revoked);
	for (int i = 0; i < 32; i++) {
		fds[i] = export_page(c, "sim1", 0, (uint64_t)i * 0x1000, &ids[i]);
		ck_assert_msg(fds[i] >= 0, "%d: %s", i, p2pbuf_last_message(c));
	}
	keeper = fork();
	ck_assert_int_ge(keeper, 0);
	if (keeper == 0) /* keeps a copy of every buffer, and nothing else of ours */
		for (;;)
			pause();
	for (int i = 0; i < 32; i++)
		ck_assert_int_eq(p2pbuf_lease_release(c, ids[i], fds[i]), 0);
	/* Listed while they linger, as often as anyone likes. */
	struct p2pbuf_lease *ls;
	size_t n = 0;
	for (int t = 0; t < 20; t++) {
		ck_assert_int_eq(p2pbuf_list_leases(c, false, &ls, &n), 0);
		for (size_t i = 0; i < n; i++)
			ck_assert_int_eq(ls[i].state, P2PBUF_LEASE_REVOKING);
		p2pbuf_leases_free(ls, n);
		ck_assert_uint_eq(n, 32);
	}
	kill(keeper, SIGKILL);
	waitpid(keeper, NULL, 0);
	for (int t = 0; t < 200 && revoked < 32; t++)
		ck_assert_int_ge(p2pbuf_wait(watch, 50), 0);
	ck_assert_int_eq(revoked, 32);
	ck_assert_int_eq(p2pbuf_list_leases(c, false, &ls, &n), 0);
	p2pbuf_leases_free(ls, n);
	ck_assert_uint_eq(n, 0);
	close(hold);
	for (int i = 0; i < 20; i++) {
		int status;
		ck_assert_int_eq(waitpid(idle[i], &status, 0), idle[i]);
		ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	p2pbuf_disconnect(c);
	p2pbuf_disconnect(watch);
}
END_TEST

/* A configuration whose limits do not fit the fd limit is refused at start, saying so. */
START_TEST(res_fd_limit_refused)
{
	char cmd[1024], out[4096] = "";

	snprintf(cmd, sizeof(cmd),
		 "ulimit -n 300 && %s/daemon/p2pbufd --policy %s --socket %s/other.sock 2>&1",
		 getenv("top_builddir") ? getenv("top_builddir") : ".", h.policy, h.dir);
	FILE *p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	out[fread(out, 1, sizeof(out) - 1, p)] = '\0';
	int status = pclose(p);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status 0x%x: %s", status,
		      out);
	ck_assert_msg(strstr(out, "need up to") && strstr(out, "the fd limit is 300"), "%s", out);
}
END_TEST

/* ---- policy files ---- */

/* Reload with policy text that must be refused: the current policy stays (the attacker
 * still may export, the good client goes on) and the log says why, naming file:line. */
static void reload_refused(const char *text, size_t len, const char *why)
{
	int before = log_count("reload refused");
	char path[160];

	snprintf(path, sizeof(path), "%s/policy", h.dir);
	char *saved = NULL;
	size_t saved_len = 0;
	FILE *f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(getdelim(&saved, &saved_len, '\0', f) > 0, 1);
	fclose(f);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(text, 1, len, f), len);
	fclose(f);
	ck_assert_int_eq(kill(h.pid, SIGHUP), 0);
	bool refused = wait_log_count("reload refused", before + 1, 5000);
	/* Put the real policy back before asserting anything. */
	f = fopen(path, "w");
	fputs(saved, f);
	fclose(f);
	free(saved);
	ck_assert_msg(refused, "the reload was not refused");
	if (why)
		ck_assert_msg(wait_log_count(why, 1, 1000), "the log does not say \"%s\"", why);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		become(ATTACKER + 120, ATTACK_GID);
		struct p2pbuf *c = lib_connect();
		uint64_t id;
		int fd = export_page(c, "sim1", 0, 0x3000, &id);
		_exit(fd >= 0 ? 0 : 1);
	}
	int status;
	waitpid(pid, &status, 0);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "the old policy is no longer in force");
}

START_TEST(policy_syntax_error)
{
	static const char p[] = "device sim0 sim bar 0 64K\nallow user 0 device sim0 bar 9\n";

	reload_refused(p, sizeof(p) - 1, "policy:2:");
}
END_TEST

START_TEST(policy_nul_byte)
{
	static const char p[] = "device sim0 sim bar 0 64K\0allow user 0 device sim0\n";

	reload_refused(p, sizeof(p) - 1, NULL);
}
END_TEST

START_TEST(policy_unknown_user)
{
	static const char p[] = "device sim0 sim bar 0 64K\ndevice sim1 sim bar 0 1M\n"
				"allow user no-such-user-p2pbuf device sim0\n";

	reload_refused(p, sizeof(p) - 1, "no-such-user-p2pbuf");
}
END_TEST

/* A file past the parser's size cap, even of one comment line, is refused whole. */
START_TEST(policy_huge_file)
{
	size_t n = (size_t)POLICY_MAX_SIZE + (1 << 20);
	char *p = malloc(n);

	ck_assert_ptr_nonnull(p);
	memset(p, 'x', n);
	memcpy(p, "# ", 2);
	p[n - 1] = '\n';
	reload_refused(p, n, "larger than");
	free(p);
}
END_TEST

START_TEST(policy_device_declared_twice)
{
	static const char p[] = "device sim0 sim bar 0 64K\ndevice sim1 sim bar 0 1M\n"
				"device sim1 sim bar 0 2M\n";

	reload_refused(p, sizeof(p) - 1, "is already declared");
}
END_TEST

START_TEST(policy_control_characters)
{
	static const char p[] = "device sim0 sim bar 0 64K\ndevice sim1 sim bar 0 1M\n"
				"allow user 0 device sim\x1b[2J0\n";

	reload_refused(p, sizeof(p) - 1, "policy:3:");
}
END_TEST

/* A reload that takes the attacker's right away revokes its live lease (reason policy); the
 * good client's rule stays and it goes on. */
START_TEST(policy_reload_revokes)
{
	static const char narrowed[] =
	    "device sim0 sim bar 0 64K bar 2 2M msix-table 0 0x2000+0x800 msix-pba 0 "
	    "0x3000+0x100 revoke-deadline 1s\n"
	    "device sim1 sim bar 0 1M revoke-deadline 1s\n"
	    "allow user %1$u device sim0\n"
	    "allow user %1$u device sim1\n"
	    "admin user %1$u\n";
	int before = log_count("reloaded");
	int p[2];

	ck_assert_int_eq(pipe(p), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		become(ATTACKER + 130, ATTACK_GID);
		struct p2pbuf *c = lib_connect();
		uint64_t id;
		int fd = export_page(c, "sim1", 0, 0x5000, &id);
		char ok = fd >= 0;
		if (write(p[1], &ok, 1) != 1)
			_exit(2);
		/* Wait to be told to let go, then check the reason. */
		struct p2pbuf_lease *ls;
		size_t n;
		for (int t = 0; t < 200; t++) {
			p2pbuf_wait(c, 25);
			if (p2pbuf_list_leases(c, false, &ls, &n) == 0) {
				bool revoking = n == 1 && ls[0].state == P2PBUF_LEASE_REVOKING &&
						ls[0].reason == P2PBUF_REASON_POLICY;
				p2pbuf_leases_free(ls, n);
				if (revoking) {
					p2pbuf_lease_release(c, id, fd);
					_exit(export_page(c, "sim1", 0, 0x5000, &id) == -EPERM ? 0
											       : 3);
				}
			}
		}
		_exit(4);
	}
	char ok = 0;
	ck_assert_int_eq(read(p[0], &ok, 1), 1);
	ck_assert_int_eq(ok, 1);
	harness_reload(&h, narrowed);
	int status;
	waitpid(pid, &status, 0);
	harness_reload(&h, hostile_policy);
	ck_assert(wait_log_count("reloaded", before + 2, 5000));
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "attacker status 0x%x",
		      status);
}
END_TEST

/* ---- the end: the good client's figures and the daemon's baseline ---- */

START_TEST(final_good_client_and_baseline)
{
	struct good_stats st;

	ck_assert_int_eq(good_client_finish(&st), 0);
	printf("good client: %llu calls, %llu failed, worst %.1f ms (%s)\n",
	       (unsigned long long)st.ops, (unsigned long long)st.failures,
	       (double)st.worst_ns / 1e6, st.worst_op);
	fflush(stdout);
	ck_assert_msg(st.failures == 0, "the good client failed: %s", st.first_failure);
	ck_assert_uint_gt(st.ops, 100);
	/* A sanitized or valgrind-run daemon is several times slower at everything: it is
	 * there to find memory errors, and its latency bound is GOOD_MAX_MS_INSTRUMENTED. */
	int limit = daemon_instrumented() ? GOOD_MAX_MS_INSTRUMENTED : GOOD_MAX_MS;
	printf("good client: worst call allowed %d ms\n", limit);
	ck_assert_msg(st.worst_ns <= (int64_t)limit * 1000000, "stalled %.1f ms in %s",
		      (double)st.worst_ns / 1e6, st.worst_op);
	ck_assert(harness_fds_settle(&h, 5000));
	long rss = daemon_rss_kb();
	for (int t = 0; t < 50 && rss > rss_baseline() + RSS_SLACK_KB; t++) {
		sleep_ms(100);
		rss = daemon_rss_kb();
	}
	printf(
	    "daemon: %d fds (baseline %d), anonymous RSS %ld KiB (baseline %ld KiB, tolerance %d "
	    "KiB)\n",
	    harness_count_fds(h.pid), h.baseline_fds, rss, rss_baseline(), RSS_SLACK_KB);
	fflush(stdout);
	if (daemon_instrumented())
		printf("daemon: RSS not judged (sanitizer or wrapper)\n");
	else
		ck_assert_int_le(rss, rss_baseline() + RSS_SLACK_KB);
}
END_TEST

void hostile_add_cases(TCase *tc, bool as_root, unsigned *ret_not_run)
{
	unsigned n_export = sizeof(export_cases) / sizeof(export_cases[0]);
	unsigned n_other = sizeof(other_cases) / sizeof(other_cases[0]);
	unsigned others = 0;

	tcase_add_loop_test(tc, framing_undecodable, 0,
			    (int)(sizeof(bad_records) / sizeof(bad_records[0])));
	tcase_add_test(tc, framing_oversized);
	tcase_add_test(tc, framing_fds_attached);
	tcase_add_test(tc, framing_too_many_fds);
	tcase_add_test(tc, framing_unknown_field_only);
	tcase_add_test(tc, framing_many_unknown_fields);
	tcase_add_test(tc, framing_burst_in_order);
	tcase_add_test(tc, state_request_before_hello);
	tcase_add_test(tc, state_hello_major_2);
	tcase_add_test(tc, state_hello_no_major);
	tcase_add_test(tc, state_hello_twice);
	tcase_add_test(tc, state_request_id_extremes);
	tcase_add_test(tc, state_unknown_body);
	tcase_add_test(tc, res_fd_limit_refused);
	tcase_add_test(tc, policy_syntax_error);
	tcase_add_test(tc, policy_nul_byte);
	tcase_add_test(tc, policy_unknown_user);
	tcase_add_test(tc, policy_huge_file);
	tcase_add_test(tc, policy_device_declared_twice);
	tcase_add_test(tc, policy_control_characters);
	/* The rest act as other users: setuid() needs root. */
#define AS_OTHERS(t)                                                                               \
	do {                                                                                       \
		if (as_root)                                                                       \
			tcase_add_test(tc, t);                                                     \
		others++;                                                                          \
	} while (0)
	AS_OTHERS(state_no_hello_dropped);
	AS_OTHERS(state_other_requests_do_not_meet_deadline);
	AS_OTHERS(auth_no_rule);
	AS_OTHERS(auth_lease_id_oracle);
	AS_OTHERS(auth_revoke_not_an_oracle);
	AS_OTHERS(auth_admin_releases_any);
	AS_OTHERS(auth_listing_and_watching_all);
	AS_OTHERS(auth_rule_max_leases);
	AS_OTHERS(res_connections_per_user);
	AS_OTHERS(res_hello_slot_hogs);
	AS_OTHERS(res_max_clients);
	AS_OTHERS(res_refusing_flood);
	AS_OTHERS(res_leases_per_client);
	AS_OTHERS(res_leases_per_user);
	AS_OTHERS(res_backpressure);
	AS_OTHERS(res_global_queue_cap);
	AS_OTHERS(res_killed_mid_request);
	AS_OTHERS(res_connection_churn);
	AS_OTHERS(res_held_fds_idle);
	AS_OTHERS(policy_reload_revokes);
#undef AS_OTHERS
	if (as_root) {
		tcase_add_loop_test(tc, export_fields, 0, (int)n_export);
		tcase_add_loop_test(tc, other_fields, 0, (int)n_other);
	}
	*ret_not_run = as_root ? 0 : others + n_export + n_other;
	tcase_add_test(tc, final_good_client_and_baseline);
}
