/* Unit tests for proto/wire.c: record framing and fd passing over a real SOCK_SEQPACKET
 * socketpair, the caps on what a peer controls, request validation and the name tables. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "wire.h"

/* Room for the largest record plus one byte, for tests that send past the cap. */
static uint8_t buf[WIRE_MAX_RECORD + 1];

static void make_pair(int sv[2])
{
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

static void close_pair(int sv[2])
{
	if (sv[0] >= 0)
		close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
}

/* Open fds in this process; opendir's own fd is counted every time, so counts compare. */
static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static int open_file(void)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	return fd;
}

/* Send a record with n fds through sendmsg directly, bypassing wire_send's cap. */
static void raw_send(int sock, const void *data, size_t len, const int *fds, size_t n)
{
	size_t space = CMSG_SPACE(sizeof(int) * n);
	char *control = n ? calloc(1, space) : NULL;
	struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (n) {
		ck_assert_ptr_nonnull(control);
		mh.msg_control = control;
		mh.msg_controllen = space;
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * n);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * n);
	}
	ck_assert_int_eq(sendmsg(sock, &mh, MSG_NOSIGNAL), (ssize_t)len);
	free(control);
}

static void same_file(int a, int b)
{
	struct stat sa, sb;

	ck_assert_int_eq(fstat(a, &sa), 0);
	ck_assert_int_eq(fstat(b, &sb), 0);
	ck_assert(sa.st_dev == sb.st_dev);
	ck_assert(sa.st_ino == sb.st_ino);
}

static void assert_cloexec(int fd)
{
	int flags = fcntl(fd, F_GETFD);

	ck_assert_int_ge(flags, 0);
	ck_assert_msg(flags & FD_CLOEXEC, "fd %d arrived without FD_CLOEXEC", fd);
}

/* ---- framing ---- */

START_TEST(test_round_trip)
{
	int sv[2], fds[WIRE_MAX_FDS];
	size_t nfds = 99;

	make_pair(sv);
	ck_assert_int_eq(wire_send(sv[0], "hello", 5, NULL, 0), 0);
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds), 5);
	ck_assert_mem_eq(buf, "hello", 5);
	ck_assert_uint_eq(nfds, 0);
	close_pair(sv);
}
END_TEST

START_TEST(test_record_boundaries)
{
	int sv[2], fds[WIRE_MAX_FDS];
	size_t nfds;

	make_pair(sv);
	ck_assert_int_eq(wire_send(sv[0], "abc", 3, NULL, 0), 0);
	ck_assert_int_eq(wire_send(sv[0], "defgh", 5, NULL, 0), 0);
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds), 3);
	ck_assert_mem_eq(buf, "abc", 3);
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds), 5);
	ck_assert_mem_eq(buf, "defgh", 5);
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds), -EAGAIN);
	close_pair(sv);
}
END_TEST

START_TEST(test_max_record)
{
	int sv[2], fds[WIRE_MAX_FDS];
	size_t nfds;

	make_pair(sv);
	for (size_t i = 0; i < WIRE_MAX_RECORD; i++)
		buf[i] = (uint8_t)(i * 7);
	ck_assert_int_eq(wire_send(sv[0], buf, WIRE_MAX_RECORD, NULL, 0), 0);
	memset(buf, 0, sizeof(buf));
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds), WIRE_MAX_RECORD);
	for (size_t i = 0; i < WIRE_MAX_RECORD; i++)
		ck_assert_uint_eq(buf[i], (uint8_t)(i * 7));
	close_pair(sv);
}
END_TEST

/* A record past the cap is refused, the fd riding on it is closed, and the next record is
 * still read whole: the stream stays in step. */
START_TEST(test_recv_record_too_big)
{
	int sv[2], fds[WIRE_MAX_FDS];
	size_t nfds = 99;

	make_pair(sv);
	int before = count_fds();
	int f = open_file();
	memset(buf, 'x', sizeof(buf));
	raw_send(sv[0], buf, WIRE_MAX_RECORD + 1, &f, 1);
	close(f);
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds), -EMSGSIZE);
	ck_assert_uint_eq(nfds, 0);
	ck_assert_int_eq(count_fds(), before);

	ck_assert_int_eq(wire_send(sv[0], "next", 4, NULL, 0), 0);
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds), 4);
	ck_assert_mem_eq(buf, "next", 4);
	close_pair(sv);
}
END_TEST

START_TEST(test_fd_arrives_cloexec)
{
	int sv[2], fds[WIRE_MAX_FDS];
	size_t nfds = 0;
	char tmpl[] = "/tmp/test-wire-XXXXXX";

	make_pair(sv);
	int f = mkstemp(tmpl);
	ck_assert_int_ge(f, 0);
	unlink(tmpl);
	ck_assert_int_eq(wire_send(sv[0], "fd", 2, &f, 1), 0);
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds), 2);
	ck_assert_uint_eq(nfds, 1);
	ck_assert_int_ne(fds[0], f);
	assert_cloexec(fds[0]);
	same_file(fds[0], f);
	wire_close_fds(fds, nfds);
	ck_assert_int_eq(fds[0], -1);
	close(f);
	close_pair(sv);
}
END_TEST

START_TEST(test_max_fds_in_order)
{
	int sv[2], sent[WIRE_MAX_FDS], fds[WIRE_MAX_FDS];
	size_t nfds = 0;

	make_pair(sv);
	for (size_t i = 0; i < WIRE_MAX_FDS; i++) {
		char tmpl[] = "/tmp/test-wire-XXXXXX";
		sent[i] = mkstemp(tmpl);
		ck_assert_int_ge(sent[i], 0);
		unlink(tmpl);
	}
	ck_assert_int_eq(wire_send(sv[0], "4", 1, sent, WIRE_MAX_FDS), 0);
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds), 1);
	ck_assert_uint_eq(nfds, WIRE_MAX_FDS);
	for (size_t i = 0; i < WIRE_MAX_FDS; i++) {
		assert_cloexec(fds[i]);
		same_file(fds[i], sent[i]);
	}
	wire_close_fds(fds, nfds);
	wire_close_fds(sent, WIRE_MAX_FDS);
	close_pair(sv);
}
END_TEST

/* Too many fds is a protocol error, and none of them may stay open in the receiver: once
 * when they all fit the control buffer (WIRE_MAX_FDS + 1) and once when the kernel has to
 * truncate the control data (MSG_CTRUNC). */
static void too_many_fds(size_t n)
{
	int sv[2], fds[WIRE_MAX_FDS];
	int *sent = calloc(n, sizeof(int));
	size_t nfds = 99;

	ck_assert_ptr_nonnull(sent);
	make_pair(sv);
	for (size_t i = 0; i < n; i++)
		sent[i] = open_file();
	int before = count_fds();
	raw_send(sv[0], "many", 4, sent, n);
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds), -EPROTO);
	ck_assert_uint_eq(nfds, 0);
	ck_assert_int_eq(count_fds(), before);
	wire_close_fds(sent, n);
	free(sent);

	/* The connection itself is still in step. */
	ck_assert_int_eq(wire_send(sv[0], "ok", 2, NULL, 0), 0);
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds), 2);
	close_pair(sv);
}

START_TEST(test_too_many_fds)
{
	too_many_fds(WIRE_MAX_FDS + 1);
}
END_TEST

START_TEST(test_too_many_fds_ctrunc)
{
	too_many_fds(WIRE_MAX_FDS * 8);
}
END_TEST

/* A zero-length record looks like end of stream to recvmsg, but it can carry fds. Whatever
 * wire_recv makes of it (0 or a protocol error), it must hand back no fds and leave none open:
 * callers treat 0 as EOF and never look at fds then (daemon/server.c, client/libp2pbuf.c). */
START_TEST(test_empty_record_with_fd)
{
	int sv[2], fds[WIRE_MAX_FDS];
	size_t nfds = 99;

	make_pair(sv);
	int before = count_fds();
	int f = open_file();
	raw_send(sv[0], "", 0, &f, 1);
	close(f);
	ssize_t n = wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds);
	int leaked = count_fds() - before;
	/* Clean up first, so that a failure here leaves nothing open for valgrind to report. */
	if (nfds > 0 && nfds <= WIRE_MAX_FDS)
		wire_close_fds(fds, nfds);
	close_pair(sv);
	ck_assert_int_le(n, 0);
	ck_assert_int_ne(n, -EAGAIN);
	ck_assert_msg(nfds == 0 && leaked == 0,
		      "wire_recv returned %zd with %zu fds, %d fds left open", n, nfds, leaked);
}
END_TEST

START_TEST(test_send_too_many_fds)
{
	int sv[2], fds[WIRE_MAX_FDS + 1], rfds[WIRE_MAX_FDS];
	size_t nfds;

	make_pair(sv);
	for (size_t i = 0; i < WIRE_MAX_FDS + 1; i++)
		fds[i] = sv[0];
	ck_assert_int_eq(wire_send(sv[0], "x", 1, fds, WIRE_MAX_FDS + 1), -EMSGSIZE);
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, rfds, &nfds), -EAGAIN);
	close_pair(sv);
}
END_TEST

START_TEST(test_eagain)
{
	int sv[2], fds[WIRE_MAX_FDS];
	size_t nfds = 99;

	make_pair(sv);
	/* Blocking socket: wire_recv must still not wait. */
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds), -EAGAIN);
	ck_assert_uint_eq(nfds, 0);
	ck_assert_int_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds), -EAGAIN);
	close_pair(sv);
}
END_TEST

START_TEST(test_eof)
{
	int sv[2], fds[WIRE_MAX_FDS];
	size_t nfds = 99;

	make_pair(sv);
	close(sv[0]);
	sv[0] = -1;
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds), 0);
	ck_assert_uint_eq(nfds, 0);
	close_pair(sv);
}
END_TEST

/* SIGPIPE keeps its default action here: if wire_send raised it, this test would die. Linux
 * raises it for stream sockets only, so a stream pair checks MSG_NOSIGNAL for real. */
START_TEST(test_epipe_no_sigpipe)
{
	int sv[2];

	signal(SIGPIPE, SIG_DFL);
	make_pair(sv);
	close(sv[1]);
	sv[1] = -1;
	ck_assert_int_eq(wire_send(sv[0], "x", 1, NULL, 0), -EPIPE);
	close_pair(sv);

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	close(sv[1]);
	sv[1] = -1;
	ck_assert_int_eq(wire_send(sv[0], "x", 1, NULL, 0), -EPIPE);
	close_pair(sv);
}
END_TEST

START_TEST(test_send_too_big)
{
	int sv[2], fds[WIRE_MAX_FDS];
	size_t nfds;

	make_pair(sv);
	ck_assert_int_eq(wire_send(sv[0], buf, WIRE_MAX_RECORD + 1, NULL, 0), -EMSGSIZE);
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds), -EAGAIN);
	close_pair(sv);
}
END_TEST

/* A full socket gives -EAGAIN with nothing sent: every record that was accepted arrives
 * whole and none arrives half. */
START_TEST(test_send_full_socket)
{
	int sv[2], fds[WIRE_MAX_FDS];
	size_t nfds, sent = 0, got = 0;
	int r = 0;

	make_pair(sv);
	memset(buf, 'y', 1000);
	while (sent < 100000 && (r = wire_send(sv[0], buf, 1000, NULL, 0)) == 0)
		sent++;
	ck_assert_int_eq(r, -EAGAIN);
	ck_assert_uint_gt(sent, 0);
	ssize_t n;
	while ((n = wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds)) > 0) {
		ck_assert_int_eq(n, 1000);
		got++;
	}
	ck_assert_int_eq(n, -EAGAIN);
	ck_assert_uint_eq(got, sent);
	close_pair(sv);
}
END_TEST

START_TEST(test_send_msg_round_trip)
{
	int sv[2], fds[WIRE_MAX_FDS];
	size_t nfds;
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Release rel = P2PBUF__RELEASE__INIT;

	make_pair(sv);
	req.has_request_id = true;
	req.request_id = 42;
	req.body_case = P2PBUF__REQUEST__BODY_RELEASE;
	req.release = &rel;
	rel.has_lease_id = true;
	rel.lease_id = 7;
	ck_assert_int_eq(wire_send_msg(sv[0], &req.base, NULL, 0), 0);
	ssize_t n = wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds);
	ck_assert_int_eq(n, (ssize_t)p2pbuf__request__get_packed_size(&req));
	P2pbuf__Request *got = p2pbuf__request__unpack(NULL, (size_t)n, buf);
	ck_assert_ptr_nonnull(got);
	ck_assert_uint_eq(got->request_id, 42);
	ck_assert_int_eq(got->body_case, P2PBUF__REQUEST__BODY_RELEASE);
	ck_assert(got->release->has_lease_id);
	ck_assert_uint_eq(got->release->lease_id, 7);
	p2pbuf__request__free_unpacked(got, NULL);
	close_pair(sv);
}
END_TEST

START_TEST(test_send_msg_too_big)
{
	int sv[2], fds[WIRE_MAX_FDS];
	size_t nfds;
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Hello hello = P2PBUF__HELLO__INIT;
	char *name = malloc(WIRE_MAX_RECORD + 1);

	ck_assert_ptr_nonnull(name);
	memset(name, 'n', WIRE_MAX_RECORD);
	name[WIRE_MAX_RECORD] = '\0';
	make_pair(sv);
	req.body_case = P2PBUF__REQUEST__BODY_HELLO;
	req.hello = &hello;
	hello.client_name = name;
	ck_assert_uint_gt(p2pbuf__request__get_packed_size(&req), WIRE_MAX_RECORD);
	ck_assert_int_eq(wire_send_msg(sv[0], &req.base, NULL, 0), -EMSGSIZE);
	ck_assert_int_eq(wire_recv(sv[1], buf, WIRE_MAX_RECORD, fds, &nfds), -EAGAIN);
	free(name);
	close_pair(sv);
}
END_TEST

START_TEST(test_close_fds)
{
	int fds[3] = { open_file(), -1, open_file() };
	int a = fds[0], c = fds[2];

	wire_close_fds(fds, 3);
	for (size_t i = 0; i < 3; i++)
		ck_assert_int_eq(fds[i], -1);
	ck_assert_int_eq(fcntl(a, F_GETFD), -1);
	ck_assert_int_eq(fcntl(c, F_GETFD), -1);
	wire_close_fds(fds, 0);
}
END_TEST

/* ---- request validation ---- */

/* A string of n 'a's, to hit length caps exactly. */
static char *str_of(size_t n)
{
	char *s = malloc(n + 1);

	ck_assert_ptr_nonnull(s);
	memset(s, 'a', n);
	s[n] = '\0';
	return s;
}

/* Check req; on failure the explanation must be set and say something. */
static int check(const P2pbuf__Request *req, const char *why_has)
{
	const char *why = NULL;
	int r = wire_check_request(req, &why);

	if (r < 0) {
		ck_assert_ptr_nonnull(why);
		ck_assert_msg(why[0] != '\0', "empty explanation");
		if (why_has)
			ck_assert_msg(strstr(why, why_has), "\"%s\" does not mention \"%s\"", why,
				      why_has);
	}
	return r;
}

struct export_req {
	P2pbuf__Request req;
	P2pbuf__Export exp;
	P2pbuf__Range range_storage[WIRE_MAX_RANGES + 1];
	P2pbuf__Range *ranges[WIRE_MAX_RANGES + 1];
};

/* A valid export of n ranges of device "gpu0", BAR 0. */
static void export_init(struct export_req *x, size_t n)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Export exp = P2PBUF__EXPORT__INIT;
	P2pbuf__Range range = P2PBUF__RANGE__INIT;

	ck_assert_uint_le(n, WIRE_MAX_RANGES + 1);
	x->req = req;
	x->exp = exp;
	x->req.body_case = P2PBUF__REQUEST__BODY_EXPORT;
	x->req.export = &x->exp;
	x->exp.device = "gpu0";
	x->exp.has_bar = true;
	x->exp.bar = 0;
	for (size_t i = 0; i < n; i++) {
		x->range_storage[i] = range;
		x->range_storage[i].has_offset = true;
		x->range_storage[i].offset = i * 4096;
		x->range_storage[i].has_length = true;
		x->range_storage[i].length = 4096;
		x->ranges[i] = &x->range_storage[i];
	}
	x->exp.n_ranges = n;
	x->exp.ranges = x->ranges;
}

START_TEST(test_check_export_valid)
{
	struct export_req x;

	export_init(&x, 1);
	ck_assert_int_eq(check(&x.req, NULL), 0);
	/* No ranges means the whole BAR: wire leaves that to the daemon. */
	export_init(&x, 0);
	ck_assert_int_eq(check(&x.req, NULL), 0);
	export_init(&x, WIRE_MAX_RANGES);
	ck_assert_int_eq(check(&x.req, NULL), 0);
	/* A range without an offset starts at 0. */
	export_init(&x, 1);
	x.range_storage[0].has_offset = false;
	ck_assert_int_eq(check(&x.req, NULL), 0);
	x.exp.label = "";
	ck_assert_int_eq(check(&x.req, NULL), 0);
}
END_TEST

START_TEST(test_check_export_no_device)
{
	struct export_req x;

	export_init(&x, 1);
	x.exp.device = NULL;
	ck_assert_int_eq(check(&x.req, "device"), -EINVAL);
	x.exp.device = "";
	ck_assert_int_eq(check(&x.req, "device"), -EINVAL);
}
END_TEST

START_TEST(test_check_export_device_name_cap)
{
	struct export_req x;
	char *at_cap = str_of(WIRE_MAX_NAME), *over = str_of(WIRE_MAX_NAME + 1);
	char *huge = str_of(WIRE_MAX_RECORD);

	export_init(&x, 1);
	x.exp.device = at_cap;
	ck_assert_int_eq(check(&x.req, NULL), 0);
	x.exp.device = over;
	ck_assert_int_eq(check(&x.req, "too long"), -EINVAL);
	x.exp.device = huge;
	ck_assert_int_eq(check(&x.req, "too long"), -EINVAL);
	free(at_cap);
	free(over);
	free(huge);
}
END_TEST

START_TEST(test_check_export_label_cap)
{
	struct export_req x;
	char *at_cap = str_of(WIRE_MAX_STRING), *over = str_of(WIRE_MAX_STRING + 1);

	export_init(&x, 1);
	x.exp.label = at_cap;
	ck_assert_int_eq(check(&x.req, NULL), 0);
	x.exp.label = over;
	ck_assert_int_eq(check(&x.req, "label"), -EINVAL);
	free(at_cap);
	free(over);
}
END_TEST

START_TEST(test_check_export_no_bar)
{
	struct export_req x;

	export_init(&x, 1);
	x.exp.has_bar = false;
	ck_assert_int_eq(check(&x.req, "BAR"), -EINVAL);
}
END_TEST

START_TEST(test_check_export_too_many_ranges)
{
	struct export_req x;

	export_init(&x, WIRE_MAX_RANGES + 1);
	ck_assert_int_eq(check(&x.req, "ranges"), -E2BIG);
}
END_TEST

START_TEST(test_check_export_range_without_length)
{
	struct export_req x;

	export_init(&x, 3);
	x.range_storage[2].has_length = false;
	ck_assert_int_eq(check(&x.req, "length"), -EINVAL);
}
END_TEST

START_TEST(test_check_hello)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Hello hello = P2PBUF__HELLO__INIT;
	char *at_cap = str_of(WIRE_MAX_STRING), *over = str_of(WIRE_MAX_STRING + 1);

	req.body_case = P2PBUF__REQUEST__BODY_HELLO;
	req.hello = &hello;
	ck_assert_int_eq(check(&req, NULL), 0);
	hello.client_name = at_cap;
	ck_assert_int_eq(check(&req, NULL), 0);
	hello.client_name = over;
	ck_assert_int_eq(check(&req, "name"), -EINVAL);
	free(at_cap);
	free(over);
}
END_TEST

START_TEST(test_check_reset)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Reset reset = P2PBUF__RESET__INIT;
	char *at_cap = str_of(WIRE_MAX_NAME), *over = str_of(WIRE_MAX_NAME + 1);

	req.body_case = P2PBUF__REQUEST__BODY_RESET;
	req.reset = &reset;
	ck_assert_int_eq(check(&req, "device"), -EINVAL);
	reset.device = "gpu0";
	ck_assert_int_eq(check(&req, NULL), 0);
	reset.device = at_cap;
	ck_assert_int_eq(check(&req, NULL), 0);
	reset.device = over;
	ck_assert_int_eq(check(&req, "device"), -EINVAL);
	free(at_cap);
	free(over);
}
END_TEST

START_TEST(test_check_release_revoke)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Release rel = P2PBUF__RELEASE__INIT;
	P2pbuf__Revoke rev = P2PBUF__REVOKE__INIT;

	req.body_case = P2PBUF__REQUEST__BODY_RELEASE;
	req.release = &rel;
	ck_assert_int_eq(check(&req, "lease id"), -EINVAL);
	rel.has_lease_id = true;
	rel.lease_id = 0;
	ck_assert_int_eq(check(&req, NULL), 0);

	req.body_case = P2PBUF__REQUEST__BODY_REVOKE;
	req.revoke = &rev;
	ck_assert_int_eq(check(&req, "lease id"), -EINVAL);
	rev.has_lease_id = true;
	rev.lease_id = UINT64_MAX;
	ck_assert_int_eq(check(&req, NULL), 0);
}
END_TEST

START_TEST(test_check_empty_body)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;

	ck_assert_int_eq(check(&req, NULL), -EOPNOTSUPP);
}
END_TEST

START_TEST(test_check_bodiless_requests)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__ListDevices ld = P2PBUF__LIST_DEVICES__INIT;
	P2pbuf__ListLeases ll = P2PBUF__LIST_LEASES__INIT;
	P2pbuf__Subscribe sub = P2PBUF__SUBSCRIBE__INIT;
	P2pbuf__Status st = P2PBUF__STATUS__INIT;

	req.body_case = P2PBUF__REQUEST__BODY_LIST_DEVICES;
	req.list_devices = &ld;
	ck_assert_int_eq(check(&req, NULL), 0);
	req.body_case = P2PBUF__REQUEST__BODY_LIST_LEASES;
	req.list_leases = &ll;
	ck_assert_int_eq(check(&req, NULL), 0);
	req.body_case = P2PBUF__REQUEST__BODY_SUBSCRIBE;
	req.subscribe = &sub;
	ck_assert_int_eq(check(&req, NULL), 0);
	req.body_case = P2PBUF__REQUEST__BODY_STATUS;
	req.status = &st;
	ck_assert_int_eq(check(&req, NULL), 0);
}
END_TEST

/* The same checks hold for what protobuf-c decodes from the wire, not only for structs
 * built by hand: an Export of WIRE_MAX_RANGES + 1 ranges packed and unpacked again. */
START_TEST(test_check_decoded_export)
{
	struct export_req x;

	export_init(&x, WIRE_MAX_RANGES + 1);
	size_t len = p2pbuf__request__pack(&x.req, buf);
	P2pbuf__Request *got = p2pbuf__request__unpack(NULL, len, buf);
	ck_assert_ptr_nonnull(got);
	ck_assert_int_eq(check(got, NULL), -E2BIG);
	p2pbuf__request__free_unpacked(got, NULL);
}
END_TEST

/* ---- strings at the wire ---- */

/* An Export whose label is s, checked; returns the error. */
static int check_label(const char *s, const char *why_has)
{
	struct export_req x;

	export_init(&x, 1);
	x.exp.label = (char *)s;
	return check(&x.req, why_has);
}

START_TEST(test_label_text_allowed)
{
	ck_assert_int_eq(check_label("plain label 1", NULL), 0);
	ck_assert_int_eq(check_label("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac", NULL), 0);
	ck_assert_int_eq(check_label("\xf0\x9f\x98\x80", NULL), 0); /* U+1F600 */
	ck_assert_int_eq(check_label("\xc2\xa0", NULL), 0);	    /* U+00A0 after C1 */
	ck_assert_int_eq(check_label("\xe2\x80\xa7", NULL), 0);	    /* U+2027 before U+2028 */
	ck_assert_int_eq(check_label("\xe2\x80\xaf", NULL), 0);	    /* U+202F after U+202E */
	ck_assert_int_eq(check_label("\xf4\x8f\xbf\xbf", NULL), 0); /* U+10FFFF */
}
END_TEST

START_TEST(test_label_controls_refused)
{
	ck_assert_int_eq(check_label("a\tb", "export.label: contains a control"), -EINVAL);
	ck_assert_int_eq(check_label("a\nforged line", "export.label: contains a control"),
			 -EINVAL);
	ck_assert_int_eq(check_label("a\x7f", "control"), -EINVAL);
	ck_assert_int_eq(check_label("a\x1b[31m", "control"), -EINVAL);
	ck_assert_int_eq(check_label("next\xc2\x85line", "control"), -EINVAL); /* NEL */
	ck_assert_int_eq(check_label("\xc2\x9f", "control"), -EINVAL);	       /* C1 end */
}
END_TEST

START_TEST(test_label_line_and_direction_refused)
{
	ck_assert_int_eq(check_label("a\xe2\x80\xa8"
				     "b",
				     "export.label: contains a line"),
			 -EINVAL);					 /* U+2028 */
	ck_assert_int_eq(check_label("a\xe2\x80\xa9", "line"), -EINVAL); /* U+2029 */
	ck_assert_int_eq(check_label("gpj.\xe2\x80\xae"
				     "exe",
				     "export.label: contains a bidi"),
			 -EINVAL);					/* U+202E */
	ck_assert_int_eq(check_label("\xe2\x80\xaa", "bidi"), -EINVAL); /* U+202A */
	ck_assert_int_eq(check_label("\xe2\x81\xa6", "bidi"), -EINVAL); /* U+2066 */
	ck_assert_int_eq(check_label("\xe2\x81\xa9", "bidi"), -EINVAL); /* U+2069 */
	ck_assert_int_eq(check_label("\xe2\x80\x8e", "bidi"), -EINVAL); /* LRM */
	ck_assert_int_eq(check_label("\xe2\x80\x8f", "bidi"), -EINVAL); /* RLM */
	ck_assert_int_eq(check_label("\xd8\x9c", "bidi"), -EINVAL);	/* ALM */
}
END_TEST

START_TEST(test_label_bad_utf8_refused)
{
	static const char *const bad[] = {
		"\x80",		    /* a lone continuation byte */
		"\xc3",		    /* truncated */
		"\xc3(",	    /* bad continuation */
		"\xc0\xaf",	    /* overlong "/" */
		"\xc1\xbf",	    /* overlong */
		"\xe0\x80\xaf",	    /* overlong, 3 bytes */
		"\xed\xa0\x80",	    /* a surrogate */
		"\xf0\x80\x80\xaf", /* overlong, 4 bytes */
		"\xf4\x90\x80\x80", /* past U+10FFFF */
		"\xf5\x80\x80\x80", /* never a lead byte */
		"\xff",
		"\xe2\x82",	 /* truncated, 3 bytes */
		"\xf0\x9f\x98",	 /* truncated, 4 bytes */
		"\xf0\x9f(\x80", /* bad third byte */
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(check_label(bad[i], "export.label: not valid UTF-8") == -EINVAL,
			      "case %zu accepted", i);
}
END_TEST

START_TEST(test_device_name_characters)
{
	struct export_req x;

	export_init(&x, 1);
	x.exp.device = "gpu-0_a.b";
	ck_assert_int_eq(check(&x.req, NULL), 0);
	x.exp.device = "gpu 0";
	ck_assert_int_eq(check(&x.req, "export.device: may contain only"), -EINVAL);
	x.exp.device = "caf\xc3\xa9";
	ck_assert_int_eq(check(&x.req, "export.device"), -EINVAL);
	x.exp.device = "../sim0";
	ck_assert_int_eq(check(&x.req, "export.device"), -EINVAL);

	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Reset reset = P2PBUF__RESET__INIT;
	req.body_case = P2PBUF__REQUEST__BODY_RESET;
	req.reset = &reset;
	reset.device = "sim0\n";
	ck_assert_int_eq(check(&req, "reset.device: may contain only"), -EINVAL);
}
END_TEST

START_TEST(test_client_name_rules)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Hello hello = P2PBUF__HELLO__INIT;

	req.body_case = P2PBUF__REQUEST__BODY_HELLO;
	req.hello = &hello;
	hello.client_name = "spdk \xe2\x9c\x93";
	ck_assert_int_eq(check(&req, NULL), 0);
	hello.client_name = "x\xe2\x80\xae";
	ck_assert_int_eq(check(&req, "hello.client_name: contains a bidi"), -EINVAL);
	hello.client_name = "\xfe";
	ck_assert_int_eq(check(&req, "hello.client_name: not valid UTF-8"), -EINVAL);
}
END_TEST

/* A NUL inside a string field: protobuf-c hands over the text before it, so only the record's
 * bytes show it. Build the record by hand: Request{request_id 7, export{device "sim0\0evil",
 * bar 0}}, and the same with the NUL in the label. */
static int check_raw(const uint8_t *rec, size_t len, const char *why_has)
{
	P2pbuf__Request *req = p2pbuf__request__unpack(NULL, len, rec);
	const char *why = NULL;

	ck_assert_ptr_nonnull(req);
	int r = wire_check_record(req, rec, len, &why);
	if (r < 0 && why_has)
		ck_assert_msg(why && strstr(why, why_has), "\"%s\" lacks \"%s\"", why, why_has);
	p2pbuf__request__free_unpacked(req, NULL);
	return r;
}

START_TEST(test_nul_in_strings_refused)
{
	static const uint8_t dev_nul[] = { 0x08, 0x07, 0x62, 0x0d, 0x0a, 0x09, 's',  'i', 'm',
					   '0',	 0x00, 'e',  'v',  'i',	 'l',  0x10, 0x00 };
	static const uint8_t label_nul[] = { 0x08, 0x07, 0x62, 0x0e, 0x0a, 0x04, 's', 'i',  'm',
					     '0',  0x10, 0x00, 0x22, 0x04, 'o',	 'k', 0x00, 'x' };
	static const uint8_t hello_nul[] = { 0x52, 0x07, 0x08, 0x01, 0x22, 0x03, 'a', 0x00, 'b' };
	static const uint8_t reset_nul[] = { 0x82, 0x01, 0x04, 0x0a, 0x02, 0x00, 'x' };
	static const uint8_t clean[] = { 0x08, 0x07, 0x62, 0x08, 0x0a, 0x04,
					 's',  'i',  'm',  '0',	 0x10, 0x00 };

	ck_assert_int_eq(check_raw(dev_nul, sizeof(dev_nul), "export.device: contains a NUL"),
			 -EINVAL);
	ck_assert_int_eq(check_raw(label_nul, sizeof(label_nul), "export.label: contains a NUL"),
			 -EINVAL);
	ck_assert_int_eq(check_raw(hello_nul, sizeof(hello_nul), "hello.client_name"), -EINVAL);
	ck_assert_int_eq(check_raw(reset_nul, sizeof(reset_nul), "reset.device: contains a NUL"),
			 -EINVAL);
	ck_assert_int_eq(check_raw(clean, sizeof(clean), NULL), 0);
}
END_TEST

/* Every string field of every message a client sends has a rule: a field added to the schema
 * without one fails here. */
static void every_string_has_rule(const ProtobufCMessageDescriptor *d, int depth)
{
	ck_assert_int_lt(depth, 8);
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		if (f->type == PROTOBUF_C_TYPE_STRING)
			ck_assert_msg(wire_string_rule_of(d, f->name), "%s.%s has no string rule",
				      d->short_name, f->name);
		if (f->type == PROTOBUF_C_TYPE_MESSAGE)
			every_string_has_rule(f->descriptor, depth + 1);
	}
}

START_TEST(test_every_request_string_has_a_rule)
{
	every_string_has_rule(&p2pbuf__request__descriptor, 0);
	ck_assert_ptr_null(wire_string_rule_of(&p2pbuf__reply__descriptor, "message"));
}
END_TEST

/* ---- names ---- */

START_TEST(test_reason_names)
{
	static const char *const want[] = {
		"unspecified",	      "released", "reset",   "device-gone",
		"device-cycle",	      "policy",	  "admin",   "ttl",
		"owner-disconnected", "shutdown", "restart",
	};

	for (int i = 0; i < (int)(sizeof(want) / sizeof(want[0])); i++)
		ck_assert_str_eq(wire_reason_name(i), want[i]);
	ck_assert_str_eq(wire_reason_name(P2PBUF__REASON__REASON_DEVICE_GONE), "device-gone");
	ck_assert_str_eq(wire_reason_name(11), "unknown");
	ck_assert_str_eq(wire_reason_name(-1), "unknown");
	ck_assert_str_eq(wire_reason_name(INT_MAX), "unknown");
	ck_assert_str_eq(wire_reason_name(INT_MIN), "unknown");
}
END_TEST

START_TEST(test_device_state_names)
{
	ck_assert_str_eq(wire_device_state_name(0), "unspecified");
	ck_assert_str_eq(wire_device_state_name(P2PBUF__DEVICE_STATE_KIND__DEVICE_READY), "ready");
	ck_assert_str_eq(wire_device_state_name(P2PBUF__DEVICE_STATE_KIND__DEVICE_CYCLING),
			 "cycling");
	ck_assert_str_eq(wire_device_state_name(P2PBUF__DEVICE_STATE_KIND__DEVICE_GONE), "gone");
	ck_assert_str_eq(wire_device_state_name(P2PBUF__DEVICE_STATE_KIND__DEVICE_FAILED),
			 "failed");
	ck_assert_str_eq(wire_device_state_name(5), "unknown");
	ck_assert_str_eq(wire_device_state_name(-1), "unknown");
	ck_assert_str_eq(wire_device_state_name(INT_MAX), "unknown");
	ck_assert_str_eq(wire_device_state_name(INT_MIN), "unknown");
}
END_TEST

START_TEST(test_lease_state_names)
{
	ck_assert_str_eq(wire_lease_state_name(0), "unspecified");
	ck_assert_str_eq(wire_lease_state_name(P2PBUF__LEASE_STATE_KIND__LEASE_ACTIVE), "active");
	ck_assert_str_eq(wire_lease_state_name(P2PBUF__LEASE_STATE_KIND__LEASE_REVOKING),
			 "revoking");
	ck_assert_str_eq(wire_lease_state_name(P2PBUF__LEASE_STATE_KIND__LEASE_ENDED), "ended");
	ck_assert_str_eq(wire_lease_state_name(4), "unknown");
	ck_assert_str_eq(wire_lease_state_name(-1), "unknown");
	ck_assert_str_eq(wire_lease_state_name(INT_MAX), "unknown");
	ck_assert_str_eq(wire_lease_state_name(INT_MIN), "unknown");
}
END_TEST

/* ---- EventBatch records ---- */

static void revoked_event(P2pbuf__Event *ev, P2pbuf__LeaseRevoked *body, uint64_t id)
{
	*body = (P2pbuf__LeaseRevoked)P2PBUF__LEASE_REVOKED__INIT;
	*ev = (P2pbuf__Event)P2PBUF__EVENT__INIT;
	body->has_lease_id = body->has_reason = true;
	body->lease_id = id;
	body->reason = P2PBUF__REASON__REASON_RESET;
	ev->body_case = P2PBUF__EVENT__BODY_LEASE_REVOKED;
	ev->lease_revoked = body;
}

static P2pbuf__ServerMessage *batch_decoded(struct wire_batch *b)
{
	size_t len;
	const uint8_t *rec = wire_batch_record(b, &len);

	ck_assert_uint_le(len, WIRE_MAX_RECORD);
	P2pbuf__ServerMessage *m = p2pbuf__server_message__unpack(NULL, len, rec);
	ck_assert_ptr_nonnull(m);
	return m;
}

/* The hand-written keys are the generated descriptors' field numbers. */
START_TEST(test_batch_field_numbers)
{
	const ProtobufCFieldDescriptor *f;

	f = protobuf_c_message_descriptor_get_field_by_name(&p2pbuf__server_message__descriptor,
							    "event");
	ck_assert_uint_eq(f->id, 2);
	f = protobuf_c_message_descriptor_get_field_by_name(&p2pbuf__server_message__descriptor,
							    "events");
	ck_assert_uint_eq(f->id, 3);
	f = protobuf_c_message_descriptor_get_field_by_name(&p2pbuf__event_batch__descriptor,
							    "events");
	ck_assert_uint_eq(f->id, 1);
}
END_TEST

/* Many events come back as one EventBatch, in the order added, each as it was. */
START_TEST(test_batch_round_trip)
{
	struct wire_batch b = { 0 };
	P2pbuf__LeaseRevoked body;
	P2pbuf__Event ev;

	for (uint64_t id = 1; id <= 100; id++) {
		revoked_event(&ev, &body, id * 1000003);
		ck_assert_int_eq(wire_batch_add(&b, &ev), 0);
	}
	ck_assert_uint_eq(b.n, 100);
	P2pbuf__ServerMessage *m = batch_decoded(&b);
	ck_assert_int_eq(m->body_case, P2PBUF__SERVER_MESSAGE__BODY_EVENTS);
	ck_assert_uint_eq(m->events->n_events, 100);
	for (size_t i = 0; i < 100; i++) {
		const P2pbuf__Event *e = m->events->events[i];
		ck_assert_int_eq(e->body_case, P2PBUF__EVENT__BODY_LEASE_REVOKED);
		ck_assert_uint_eq(e->lease_revoked->lease_id, (i + 1) * 1000003);
		ck_assert_int_eq(e->lease_revoked->reason, P2PBUF__REASON__REASON_RESET);
	}
	p2pbuf__server_message__free_unpacked(m, NULL);
	wire_batch_reset(&b);
	ck_assert_ptr_null(b.buf);
	ck_assert_uint_eq(b.n, 0);
}
END_TEST

/* A lone event is the plain Event record that a client of protocol 1.0 reads. */
START_TEST(test_batch_of_one_is_plain)
{
	struct wire_batch b = { 0 };
	P2pbuf__DeviceState body = P2PBUF__DEVICE_STATE__INIT;
	P2pbuf__Event ev = P2PBUF__EVENT__INIT;

	body.device = "gpu0";
	body.has_state = true;
	body.state = P2PBUF__DEVICE_STATE_KIND__DEVICE_CYCLING;
	body.message = "reset asked for";
	ev.body_case = P2PBUF__EVENT__BODY_DEVICE_STATE;
	ev.device_state = &body;
	ck_assert_int_eq(wire_batch_add(&b, &ev), 0);
	P2pbuf__ServerMessage *m = batch_decoded(&b);
	ck_assert_int_eq(m->body_case, P2PBUF__SERVER_MESSAGE__BODY_EVENT);
	ck_assert_int_eq(m->event->body_case, P2PBUF__EVENT__BODY_DEVICE_STATE);
	ck_assert_str_eq(m->event->device_state->device, "gpu0");
	ck_assert_str_eq(m->event->device_state->message, "reset asked for");
	p2pbuf__server_message__free_unpacked(m, NULL);
	/* The same bytes as the event packed the ordinary way. */
	P2pbuf__ServerMessage sm = P2PBUF__SERVER_MESSAGE__INIT;
	sm.body_case = P2PBUF__SERVER_MESSAGE__BODY_EVENT;
	sm.event = &ev;
	size_t len, want = p2pbuf__server_message__pack(&sm, buf);
	const uint8_t *rec = wire_batch_record(&b, &len);
	ck_assert_uint_eq(len, want);
	ck_assert_int_eq(memcmp(rec, buf, len), 0);
	wire_batch_reset(&b);
}
END_TEST

/* A batch stops at WIRE_BATCH_MAX_EVENTS, unchanged by the refused event. */
START_TEST(test_batch_event_cap)
{
	struct wire_batch b = { 0 };
	P2pbuf__LeaseRevoked body;
	P2pbuf__Event ev;

	for (unsigned i = 0; i < WIRE_BATCH_MAX_EVENTS; i++) {
		revoked_event(&ev, &body, i + 1);
		ck_assert_int_eq(wire_batch_add(&b, &ev), 0);
	}
	size_t len = b.len;
	revoked_event(&ev, &body, 99999);
	ck_assert_int_eq(wire_batch_add(&b, &ev), -E2BIG);
	ck_assert_uint_eq(b.n, WIRE_BATCH_MAX_EVENTS);
	ck_assert_uint_eq(b.len, len);
	P2pbuf__ServerMessage *m = batch_decoded(&b);
	ck_assert_uint_eq(m->events->n_events, WIRE_BATCH_MAX_EVENTS);
	ck_assert_uint_eq(m->events->events[WIRE_BATCH_MAX_EVENTS - 1]->lease_revoked->lease_id,
			  WIRE_BATCH_MAX_EVENTS);
	p2pbuf__server_message__free_unpacked(m, NULL);
	wire_batch_reset(&b);
}
END_TEST

/* Large events stop a batch at the record cap, well before the event cap. */
START_TEST(test_batch_record_cap)
{
	static char message[4000];
	struct wire_batch b = { 0 };
	P2pbuf__DeviceState body = P2PBUF__DEVICE_STATE__INIT;
	P2pbuf__Event ev = P2PBUF__EVENT__INIT;
	int r;

	memset(message, 'x', sizeof(message) - 1);
	body.device = "gpu0";
	body.message = message;
	ev.body_case = P2PBUF__EVENT__BODY_DEVICE_STATE;
	ev.device_state = &body;
	while ((r = wire_batch_add(&b, &ev)) == 0)
		ck_assert_uint_lt(b.n, WIRE_BATCH_MAX_EVENTS);
	ck_assert_int_eq(r, -E2BIG);
	ck_assert_uint_eq(b.n, WIRE_MAX_RECORD / sizeof(message));
	P2pbuf__ServerMessage *m = batch_decoded(&b);
	ck_assert_uint_eq(m->events->n_events, b.n);
	p2pbuf__server_message__free_unpacked(m, NULL);
	wire_batch_reset(&b);
}
END_TEST

/* ---- the decode arena ---- */

/* The largest Export wire_check_request() accepts: every range, both strings at their caps,
 * every integer field at its widest. */
static size_t pack_largest_export(struct export_req *x, char *device, char *label)
{
	export_init(x, WIRE_MAX_RANGES);
	memset(device, 'g', WIRE_MAX_NAME);
	device[WIRE_MAX_NAME] = '\0';
	memset(label, 'l', WIRE_MAX_STRING);
	label[WIRE_MAX_STRING] = '\0';
	x->exp.device = device;
	x->exp.label = label;
	x->exp.bar = UINT32_MAX;
	x->req.request_id = UINT64_MAX;
	for (size_t i = 0; i < WIRE_MAX_RANGES; i++)
		x->range_storage[i].offset = x->range_storage[i].length = UINT64_MAX;
	ck_assert_int_eq(check(&x->req, NULL), 0);
	return p2pbuf__request__pack(&x->req, buf);
}

/* What got decodes to packs again into exactly want[0..len). */
static void assert_repacks_to(const P2pbuf__Request *got, const uint8_t *want, size_t len)
{
	static uint8_t again[WIRE_MAX_RECORD];

	ck_assert_ptr_nonnull(got);
	ck_assert_uint_eq(p2pbuf__request__get_packed_size(got), len);
	p2pbuf__request__pack(got, again);
	ck_assert_mem_eq(again, want, len);
}

START_TEST(test_arena_holds_largest_request)
{
	char device[WIRE_MAX_NAME + 1], label[WIRE_MAX_STRING + 1];
	struct export_req x;
	size_t len = pack_largest_export(&x, device, label);
	uint8_t mem[WIRE_DECODE_ARENA];
	struct wire_arena a;

	wire_arena_init(&a, mem, sizeof(mem));
	P2pbuf__Request *got = p2pbuf__request__unpack(&a.alloc, len, buf);
	assert_repacks_to(got, buf, len);
	ck_assert_int_eq(check(got, NULL), 0);
	ck_assert_ptr_null(a.spill);
	ck_assert_uint_gt(a.used, 0);
	ck_assert_uint_le(a.used, a.cap);
	wire_arena_reset(&a);
	ck_assert_uint_eq(a.used, 0);
	/* Reset, the arena takes the next record from its start. */
	got = p2pbuf__request__unpack(&a.alloc, len, buf);
	assert_repacks_to(got, buf, len);
	ck_assert_ptr_null(a.spill);
	wire_arena_reset(&a);
}
END_TEST

/* A buffer too small for anything: every allocation spills, the decode is still whole, and
 * the reset frees it all (the sanitizer and valgrind builds would see a leak). */
START_TEST(test_arena_spills_to_malloc)
{
	char device[WIRE_MAX_NAME + 1], label[WIRE_MAX_STRING + 1];
	struct export_req x;
	size_t len = pack_largest_export(&x, device, label);
	uint8_t mem[8];
	struct wire_arena a;

	wire_arena_init(&a, mem, sizeof(mem));
	for (int round = 0; round < 3; round++) {
		P2pbuf__Request *got = p2pbuf__request__unpack(&a.alloc, len, buf);
		assert_repacks_to(got, buf, len);
		ck_assert_ptr_nonnull(a.spill);
		wire_arena_reset(&a);
		ck_assert_ptr_null(a.spill);
	}
}
END_TEST

/* A record cut short fails to decode; what protobuf-c had allocated goes with the reset. */
START_TEST(test_arena_undecodable_record)
{
	char device[WIRE_MAX_NAME + 1], label[WIRE_MAX_STRING + 1];
	struct export_req x;
	size_t len = pack_largest_export(&x, device, label);
	uint8_t small[64], big[WIRE_DECODE_ARENA];
	struct wire_arena a;

	wire_arena_init(&a, small, sizeof(small));
	ck_assert_ptr_null(p2pbuf__request__unpack(&a.alloc, len - 1, buf));
	wire_arena_reset(&a);
	wire_arena_init(&a, big, sizeof(big));
	ck_assert_ptr_null(p2pbuf__request__unpack(&a.alloc, len - 1, buf));
	wire_arena_reset(&a);
	ck_assert_uint_eq(a.used, 0);
}
END_TEST

/* Every block is as aligned as malloc's and inside the buffer or spilled, whatever the
 * buffer's own alignment; nothing overlaps. */
START_TEST(test_arena_alignment)
{
	static const size_t sizes[] = { 1, 0, 3, 16, 17, 100, 1, 7 };
	_Alignas(max_align_t) uint8_t mem[256 + 1];
	uint8_t *ends[ARRAY_SIZE(sizes)], *starts[ARRAY_SIZE(sizes)];
	struct wire_arena a;

	wire_arena_init(&a, mem + 1, sizeof(mem) - 1);
	ck_assert_uint_le(a.cap, sizeof(mem) - 1);
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		uint8_t *p = a.alloc.alloc(a.alloc.allocator_data, sizes[i]);
		ck_assert_ptr_nonnull(p);
		ck_assert_uint_eq((uintptr_t)p % _Alignof(max_align_t), 0);
		memset(p, 0xa5, sizes[i]);
		starts[i] = p;
		ends[i] = p + sizes[i];
		for (size_t j = 0; j < i; j++)
			ck_assert(ends[i] <= starts[j] || ends[j] <= starts[i] || !sizes[i] ||
				  !sizes[j]);
	}
	ck_assert_uint_le(a.used, a.cap);
	wire_arena_reset(&a);
	/* No room at all: everything spills. */
	wire_arena_init(&a, mem + 1, 3);
	ck_assert_uint_eq(a.cap, 0);
	void *p = a.alloc.alloc(a.alloc.allocator_data, 5);
	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_nonnull(a.spill);
	wire_arena_reset(&a);
}
END_TEST

/* ---- replies encoded by hand: the bytes protobuf-c writes ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* A value of a width picked at random, the edges among them. */
static uint64_t rnd_u64(void)
{
	static const uint64_t edges[] = { 0, 1, 127, 128, 16383, 16384, UINT32_MAX, UINT64_MAX };

	switch (rnd() % 4) {
	case 0:
		return edges[rnd() % ARRAY_SIZE(edges)];
	case 1:
		return rnd() & 0xff;
	case 2:
		return rnd() & 0xffffffffu;
	default:
		return rnd();
	}
}

/* wire_pack_reply() of r against protobuf-c's packing of ServerMessage{reply: r}, and its
 * cap: one byte short is -EMSGSIZE. */
static void assert_packs_like_protobuf_c(const P2pbuf__Reply *r)
{
	static uint8_t want[WIRE_MAX_RECORD], got[WIRE_MAX_RECORD];
	P2pbuf__ServerMessage sm = P2PBUF__SERVER_MESSAGE__INIT;

	sm.body_case = P2PBUF__SERVER_MESSAGE__BODY_REPLY;
	sm.reply = (P2pbuf__Reply *)r;
	size_t len = protobuf_c_message_pack(&sm.base, want);
	ssize_t n = wire_pack_reply(r, got, sizeof(got));
	ck_assert_int_eq(n, (ssize_t)len);
	ck_assert_mem_eq(got, want, len);
	ck_assert_int_eq(wire_pack_reply(r, got, len), (ssize_t)len);
	ck_assert_int_eq(wire_pack_reply(r, got, len - 1), -EMSGSIZE);
}

START_TEST(test_reply_bytes_like_protobuf_c)
{
	static const int32_t errors[] = { 0, -1, -2, -13, -122, 1, INT32_MIN, INT32_MAX };
	static const char *const messages[] = { "", "no lease 7 of yours (ended already?)",
						"caf\xc3\xa9" };
	uint8_t token[WIRE_TOKEN_LEN];
	char big[300];

	memset(big, 'm', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (int i = 0; i < 20000; i++) {
		P2pbuf__Reply r = P2PBUF__REPLY__INIT;
		P2pbuf__ExportReply er = P2PBUF__EXPORT_REPLY__INIT;
		P2pbuf__StatusReply st = P2PBUF__STATUS_REPLY__INIT;
		P2pbuf__HelloReply hr = P2PBUF__HELLO_REPLY__INIT;

		r.has_request_id = rnd() % 4 != 0;
		r.request_id = rnd_u64();
		r.has_error = rnd() % 3 == 0;
		r.error = rnd() % 2 ? errors[rnd() % ARRAY_SIZE(errors)] : (int32_t)rnd();
		if (rnd() % 3 == 0)
			r.message =
			    (char *)(rnd() % 8 ? messages[rnd() % ARRAY_SIZE(messages)] : big);
		r.has_nfds = rnd() % 2;
		r.nfds = (uint32_t)rnd_u64();
		switch (rnd() % 5) {
		case 0:
			break;
		case 1:
		case 2:
			er.has_lease_id = rnd() % 5 != 0;
			er.lease_id = rnd_u64();
			er.has_size = rnd() % 5 != 0;
			er.size = rnd_u64();
			er.has_generation = rnd() % 5 != 0;
			er.generation = (uint32_t)rnd_u64();
			er.has_expires_ms = rnd() % 5 != 0;
			er.expires_ms = (int64_t)rnd_u64();
			er.has_reclaim_token = rnd() % 5 != 0;
			for (size_t k = 0; k < sizeof(token); k++)
				token[k] = (uint8_t)rnd();
			er.reclaim_token =
			    (ProtobufCBinaryData){ rnd() % 4 ? sizeof(token) : 0, token };
			r.body_case = P2PBUF__REPLY__BODY_EXPORT;
			r.export = rnd() % 10 ? &er : NULL;
			break;
		case 3:
			st.version = "1.3";
			st.has_uptime_ms = true;
			st.uptime_ms = rnd_u64();
			st.has_leases = rnd() % 2;
			st.leases = (uint32_t)rnd();
			r.body_case = P2PBUF__REPLY__BODY_STATUS;
			r.status = &st;
			break;
		default:
			hr.has_major = hr.has_minor = true;
			hr.major = 1;
			hr.minor = (uint32_t)rnd_u64();
			r.body_case = P2PBUF__REPLY__BODY_HELLO;
			r.hello = &hr;
			break;
		}
		assert_packs_like_protobuf_c(&r);
	}
}
END_TEST

/* A reply decoded from a newer peer keeps fields this side does not know; those are
 * packed as protobuf-c packs them. */
START_TEST(test_reply_unknown_fields_kept)
{
	static const uint8_t wire[] = {
		0x08, 0x07,	  /* request_id 7 */
		0x62, 0x05,	  /* export (12), 5 bytes: */
		0x08, 0x2a,	  /*   lease_id 42 */
		0xf8, 0x01, 0x05, /*   field 31, varint 5: unknown */
		0xa8, 0x02, 0x09, /* field 37, varint 9: unknown */
	};
	/* Whole: both have one; cut before field 37: only the ExportReply has. */
	for (size_t cut = 0; cut <= 3; cut += 3) {
		P2pbuf__Reply *r = p2pbuf__reply__unpack(NULL, sizeof(wire) - cut, wire);

		ck_assert_ptr_nonnull(r);
		ck_assert_uint_eq(r->base.n_unknown_fields, cut ? 0 : 1);
		ck_assert_uint_eq(r->export->base.n_unknown_fields, 1);
		assert_packs_like_protobuf_c(r);
		p2pbuf__reply__free_unpacked(r, NULL);
	}
}
END_TEST

/* ---- requests decoded by hand: what protobuf-c decodes, checked as wire_check_record ---- */

/* Every call of protobuf-c's decoder in this program comes here (-Wl,--wrap). */
static unsigned protobuf_c_decodes;
ProtobufCMessage *__real_protobuf_c_message_unpack(const ProtobufCMessageDescriptor *desc,
						   ProtobufCAllocator *alloc, size_t len,
						   const uint8_t *data);
ProtobufCMessage *__wrap_protobuf_c_message_unpack(const ProtobufCMessageDescriptor *desc,
						   ProtobufCAllocator *alloc, size_t len,
						   const uint8_t *data);
ProtobufCMessage *__wrap_protobuf_c_message_unpack(const ProtobufCMessageDescriptor *desc,
						   ProtobufCAllocator *alloc, size_t len,
						   const uint8_t *data)
{
	protobuf_c_decodes++;
	return __real_protobuf_c_message_unpack(desc, alloc, len, data);
}

static void assert_decodes_like_protobuf_c(const uint8_t *rec, size_t len);

/* The record decodes without protobuf-c, to what protobuf-c would make of it. */
static void assert_decoded_by_hand(const uint8_t *rec, size_t len)
{
	uint8_t mem[WIRE_DECODE_ARENA];
	struct wire_arena arena;
	P2pbuf__Request *got;
	const char *why;
	unsigned before = protobuf_c_decodes;

	wire_arena_init(&arena, mem, sizeof(mem));
	(void)wire_decode_request(&arena, rec, len, &got, &why);
	ck_assert_ptr_nonnull(got);
	ck_assert_msg(protobuf_c_decodes == before, "protobuf-c decoded a grant-path request");
	wire_arena_reset(&arena);
	assert_decodes_like_protobuf_c(rec, len);
}

/* wire_decode_request() of rec[0..len) against p2pbuf__request__unpack() and
 * wire_check_record(): the same answer, the same explanation, the same request. */
static void assert_decodes_like_protobuf_c(const uint8_t *rec, size_t len)
{
	static uint8_t a_bytes[WIRE_MAX_RECORD], b_bytes[WIRE_MAX_RECORD];
	uint8_t mem[WIRE_DECODE_ARENA];
	struct wire_arena arena;
	const char *why = NULL, *want_why = NULL;
	P2pbuf__Request *got;

	wire_arena_init(&arena, mem, sizeof(mem));
	int r = wire_decode_request(&arena, rec, len, &got, &why);
	P2pbuf__Request *want = p2pbuf__request__unpack(NULL, len, rec);
	if (!want) {
		ck_assert_int_eq(r, -EBADMSG);
		ck_assert_ptr_null(got);
		ck_assert_ptr_nonnull(why);
		wire_arena_reset(&arena);
		return;
	}
	int want_r = wire_check_record(want, rec, len, &want_why);
	ck_assert_ptr_nonnull(got);
	ck_assert_int_eq(r, want_r);
	if (r < 0)
		ck_assert_str_eq(why, want_why);
	size_t n = p2pbuf__request__pack(got, a_bytes), m = p2pbuf__request__pack(want, b_bytes);
	ck_assert_uint_eq(n, m);
	ck_assert_mem_eq(a_bytes, b_bytes, n);
	p2pbuf__request__free_unpacked(want, NULL);
	wire_arena_reset(&arena);
}

static size_t pack_release(uint8_t *out, uint64_t id, uint64_t lease)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Release rel = P2PBUF__RELEASE__INIT;

	req.has_request_id = true;
	req.request_id = id;
	req.body_case = P2PBUF__REQUEST__BODY_RELEASE;
	req.release = &rel;
	rel.has_lease_id = true;
	rel.lease_id = lease;
	return p2pbuf__request__pack(&req, out);
}

START_TEST(test_decode_grant_path_requests)
{
	char device[WIRE_MAX_NAME + 1], label[WIRE_MAX_STRING + 1];
	struct export_req x;
	uint8_t rec[WIRE_MAX_RECORD];
	size_t len = pack_largest_export(&x, device, label);

	assert_decoded_by_hand(buf, len);
	export_init(&x, 1);
	x.exp.label = "";
	len = p2pbuf__request__pack(&x.req, rec);
	assert_decoded_by_hand(rec, len);
	/* Refused by the check, with the check's words. */
	export_init(&x, WIRE_MAX_RANGES + 1);
	len = p2pbuf__request__pack(&x.req, rec);
	assert_decoded_by_hand(rec, len);
	export_init(&x, 0);
	x.exp.device = NULL;
	len = p2pbuf__request__pack(&x.req, rec);
	assert_decoded_by_hand(rec, len);
	for (uint64_t v = 0; v < 3; v++) {
		len = pack_release(rec, v ? UINT64_MAX / v : 0, v << 40);
		assert_decoded_by_hand(rec, len);
	}
}
END_TEST

/* Shapes left to protobuf-c: the answer is still its answer. */
START_TEST(test_decode_other_shapes)
{
	static const struct {
		const char *what;
		uint8_t bytes[24];
		size_t len;
	} cases[] = {
		{ "release, request_id twice (the last counts)",
		  { 0x08, 1, 0x08, 2, 0x6a, 2, 0x08, 5 },
		  8 },
		{ "release and then export (the last body counts)",
		  { 0x6a, 2, 0x08, 5, 0x62, 6, 0x0a, 4, 's', 'i', 'm', '0' },
		  12 },
		{ "export twice (merged)",
		  { 0x62, 6, 0x0a, 4, 's', 'i', 'm', '0', 0x62, 2, 0x10, 3 },
		  12 },
		{ "device twice", { 0x62, 8, 0x0a, 1, 'a', 0x0a, 1, 'b', 0x10, 0 }, 10 },
		{ "range offset twice",
		  { 0x62, 11, 0x0a, 1, 'a', 0x1a, 6, 0x08, 1, 0x08, 2, 0x10, 1 },
		  13 },
		{ "bar past uint32",
		  { 0x62, 9, 0x0a, 1, 'a', 0x10, 0x80, 0x80, 0x80, 0x80, 0x10 },
		  11 },
		{ "NUL in the device", { 0x62, 7, 0x0a, 3, 'a', 0, 'b', 0x10, 0 }, 9 },
		{ "NUL in the label", { 0x62, 8, 0x0a, 1, 'a', 0x22, 3, 'x', 0, 'y' }, 10 },
		{ "unknown field in a release", { 0x6a, 4, 0x08, 5, 0x18, 1 }, 6 },
		{ "unknown field in a request", { 0x08, 1, 0x6a, 2, 0x08, 5, 0x7a, 0 }, 8 },
		{ "two-byte key (field 16)", { 0x80, 0x01, 0x00, 0x6a, 2, 0x08, 5 }, 7 },
		{ "lease_id as fixed64", { 0x6a, 9, 0x09, 1, 2, 3, 4, 5, 6, 7, 8 }, 11 },
		{ "over-long varint",
		  { 0x6a, 12, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		    0x01 },
		  14 },
		{ "ten-byte varint",
		  { 0x6a, 11, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 },
		  13 },
		{ "non-minimal varint", { 0x08, 0x81, 0x80, 0x00, 0x6a, 3, 0x08, 0x80, 0x00 }, 9 },
		{ "body cut short", { 0x62, 9, 0x0a, 1, 'a' }, 5 },
		{ "string past its message", { 0x62, 3, 0x0a, 5, 'a', 'b', 'c', 'd', 'e' }, 9 },
		{ "empty export", { 0x62, 0 }, 2 },
		{ "empty release", { 0x6a, 0 }, 2 },
		{ "no body", { 0x08, 9 }, 2 },
		{ "empty record", { 0 }, 0 },
		{ "a hello", { 0x52, 2, 0x08, 1 }, 4 },
		{ "field 0", { 0x02, 0 }, 2 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		ck_assert_msg(cases[i].len <= sizeof(cases[i].bytes), "%s", cases[i].what);
		assert_decodes_like_protobuf_c(cases[i].bytes, cases[i].len);
	}
}
END_TEST

/* Valid records with bytes changed, cut or repeated at random: whatever each is, both
 * decoders agree (the wire fuzzer does this without end). */
START_TEST(test_decode_mutated_records)
{
	char device[WIRE_MAX_NAME + 1], label[WIRE_MAX_STRING + 1];
	struct export_req x;
	uint8_t seeds[3][WIRE_MAX_RECORD], rec[WIRE_MAX_RECORD];
	size_t lens[3];

	lens[0] = pack_largest_export(&x, device, label);
	memcpy(seeds[0], buf, lens[0]);
	export_init(&x, 2);
	x.exp.label = "lab";
	lens[1] = p2pbuf__request__pack(&x.req, seeds[1]);
	lens[2] = pack_release(seeds[2], 77, 1234567);
	for (int i = 0; i < 30000; i++) {
		size_t k = rnd() % 3, len = lens[k];
		memcpy(rec, seeds[k], len);
		for (int m = 0, n = 1 + (int)(rnd() % 3); m < n; m++) {
			switch (rnd() % 4) {
			case 0:
				rec[rnd() % len] = (uint8_t)rnd();
				break;
			case 1:
				rec[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
				break;
			case 2:
				len = rnd() % (len + 1);
				break;
			default:
				if (len > 0 && 2 * len <= sizeof(rec)) {
					memcpy(rec + len, rec, len);
					len *= 2;
				}
				break;
			}
			if (len == 0)
				break;
		}
		assert_decodes_like_protobuf_c(rec, len);
	}
}
END_TEST

static Suite *wire_suite(void)
{
	Suite *s = suite_create("wire");
	TCase *tc = tcase_create("framing");

	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_record_boundaries);
	tcase_add_test(tc, test_max_record);
	tcase_add_test(tc, test_recv_record_too_big);
	tcase_add_test(tc, test_fd_arrives_cloexec);
	tcase_add_test(tc, test_max_fds_in_order);
	tcase_add_test(tc, test_too_many_fds);
	tcase_add_test(tc, test_too_many_fds_ctrunc);
	tcase_add_test(tc, test_empty_record_with_fd);
	tcase_add_test(tc, test_send_too_many_fds);
	tcase_add_test(tc, test_eagain);
	tcase_add_test(tc, test_eof);
	tcase_add_test(tc, test_epipe_no_sigpipe);
	tcase_add_test(tc, test_send_too_big);
	tcase_add_test(tc, test_send_full_socket);
	tcase_add_test(tc, test_send_msg_round_trip);
	tcase_add_test(tc, test_send_msg_too_big);
	tcase_add_test(tc, test_close_fds);
	suite_add_tcase(s, tc);

	tc = tcase_create("check_request");
	tcase_add_test(tc, test_check_export_valid);
	tcase_add_test(tc, test_check_export_no_device);
	tcase_add_test(tc, test_check_export_device_name_cap);
	tcase_add_test(tc, test_check_export_label_cap);
	tcase_add_test(tc, test_check_export_no_bar);
	tcase_add_test(tc, test_check_export_too_many_ranges);
	tcase_add_test(tc, test_check_export_range_without_length);
	tcase_add_test(tc, test_check_hello);
	tcase_add_test(tc, test_check_reset);
	tcase_add_test(tc, test_check_release_revoke);
	tcase_add_test(tc, test_check_empty_body);
	tcase_add_test(tc, test_check_bodiless_requests);
	tcase_add_test(tc, test_check_decoded_export);
	suite_add_tcase(s, tc);

	tc = tcase_create("strings");
	tcase_add_test(tc, test_label_text_allowed);
	tcase_add_test(tc, test_label_controls_refused);
	tcase_add_test(tc, test_label_line_and_direction_refused);
	tcase_add_test(tc, test_label_bad_utf8_refused);
	tcase_add_test(tc, test_device_name_characters);
	tcase_add_test(tc, test_client_name_rules);
	tcase_add_test(tc, test_nul_in_strings_refused);
	tcase_add_test(tc, test_every_request_string_has_a_rule);
	suite_add_tcase(s, tc);

	tc = tcase_create("names");
	tcase_add_test(tc, test_reason_names);
	tcase_add_test(tc, test_device_state_names);
	tcase_add_test(tc, test_lease_state_names);
	suite_add_tcase(s, tc);

	tc = tcase_create("batch");
	tcase_add_test(tc, test_batch_field_numbers);
	tcase_add_test(tc, test_batch_round_trip);
	tcase_add_test(tc, test_batch_of_one_is_plain);
	tcase_add_test(tc, test_batch_event_cap);
	tcase_add_test(tc, test_batch_record_cap);
	suite_add_tcase(s, tc);

	tc = tcase_create("arena");
	tcase_add_test(tc, test_arena_holds_largest_request);
	tcase_add_test(tc, test_arena_spills_to_malloc);
	tcase_add_test(tc, test_arena_undecodable_record);
	tcase_add_test(tc, test_arena_alignment);
	suite_add_tcase(s, tc);

	tc = tcase_create("decode");
	tcase_add_test(tc, test_decode_grant_path_requests);
	tcase_add_test(tc, test_decode_other_shapes);
	tcase_add_test(tc, test_decode_mutated_records);
	suite_add_tcase(s, tc);

	tc = tcase_create("reply");
	tcase_add_test(tc, test_reply_bytes_like_protobuf_c);
	tcase_add_test(tc, test_reply_unknown_fields_kept);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(wire_suite());

	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
