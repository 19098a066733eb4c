/* The real p2pbufd on a temporary socket with simulated devices, driven through libp2pbuf
 * and, for protocol abuse, through raw sockets. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <protobuf-c/protobuf-c.h>

#include "harness.h"
#include "p2pbuf.h"
#include "p2pbuf.pb-c.h"
#include "wire.h"

static struct harness h;

static void setup(void)
{
	harness_start(&h, NULL, NULL);
}

static void teardown(void)
{
	harness_stop(&h);
}

static struct p2pbuf *connect_ok(void)
{
	struct p2pbuf *c = NULL;
	int r = p2pbuf_connect(h.socket, &c);

	ck_assert_msg(r == 0, "p2pbuf_connect: %s", strerror(-r));
	return c;
}

static int export1(struct p2pbuf *c, const char *dev, unsigned bar, uint64_t off, uint64_t len,
		   uint64_t *ret_id)
{
	struct p2pbuf_range r = { off, len };
	uint64_t id = 0, size = 0;
	int fd = p2pbuf_export(c, dev, bar, &r, 1, "it", &id, &size);

	if (fd >= 0) {
		ck_assert_uint_eq(size, len);
		if (ret_id)
			*ret_id = id;
	}
	return fd;
}

START_TEST(status_and_devices)
{
	struct p2pbuf *c = connect_ok();
	struct p2pbuf_status st;
	struct p2pbuf_device *devs;
	size_t n;

	ck_assert_int_eq(p2pbuf_status(c, &st), 0);
	ck_assert_str_eq(st.version, PACKAGE_VERSION);
	ck_assert(st.admin);
	ck_assert_uint_eq(st.devices, 2);
	p2pbuf_status_free(&st);
	ck_assert_str_eq(p2pbuf_server_version(c), PACKAGE_VERSION);

	ck_assert_int_eq(p2pbuf_list_devices(c, &devs, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(devs[0].name, "sim0");
	ck_assert(devs[0].simulated);
	ck_assert_str_eq(devs[0].backend, "sim");
	ck_assert_int_eq(devs[0].state, P2PBUF_DEVICE_READY);
	ck_assert_uint_eq(devs[0].n_bars, 3);
	ck_assert_uint_eq(devs[0].bars[0].index, 0);
	ck_assert_uint_eq(devs[0].bars[0].size, 64 * 1024);
	ck_assert_uint_eq(devs[0].bars[0].n_reserved, 2);
	ck_assert_uint_eq(devs[0].bars[0].reserved[0].offset, 0x2000);
	ck_assert_uint_eq(devs[0].bars[1].index, 2);
	ck_assert_uint_eq(devs[0].bars[1].size, 2 * 1024 * 1024);
	ck_assert_uint_eq(devs[0].bars[2].size, 1024 * 1024);
	ck_assert_str_eq(devs[1].name, "sim1");
	p2pbuf_devices_free(devs, n);
	p2pbuf_disconnect(c);
}
END_TEST

/* Wait (up to 10 s) until c's listing (all: every lease) holds at most want leases, as a
 * lease that was let go ends at the next count of its holders; returns how many it holds. */
static size_t wait_listed(struct p2pbuf *c, bool all, size_t want)
{
	struct p2pbuf_lease *ls;
	size_t n;

	for (int i = 0; i < 1000; i++) {
		ck_assert_int_eq(p2pbuf_list_leases(c, all, &ls, &n), 0);
		p2pbuf_leases_free(ls, n);
		if (n <= want)
			break;
		usleep(10000);
	}
	return n;
}

START_TEST(export_and_release)
{
	struct p2pbuf *c = connect_ok();
	struct p2pbuf_lease *ls;
	size_t n;
	uint64_t id;
	struct stat st;
	int fd = export1(c, "sim0", 2, 0x10000, 0x20000, &id);

	ck_assert_msg(fd >= 0, "export: %s: %s", strerror(-fd), p2pbuf_last_message(c));
	ck_assert_int_eq(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_int_eq(st.st_size, 0x20000);
	/* The buffer is usable memory. */
	char *p = mmap(NULL, 0x20000, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	p[0x1ffff] = 42;
	munmap(p, 0x20000);

	ck_assert_int_eq(p2pbuf_list_leases(c, false, &ls, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(ls[0].id, id);
	ck_assert_str_eq(ls[0].device, "sim0");
	ck_assert_uint_eq(ls[0].bar, 2);
	ck_assert_uint_eq(ls[0].n_ranges, 1);
	ck_assert_uint_eq(ls[0].ranges[0].offset, 0x10000);
	ck_assert_uint_eq(ls[0].size, 0x20000);
	ck_assert_int_eq(ls[0].state, P2PBUF_LEASE_ACTIVE);
	ck_assert_uint_eq(ls[0].owner_uid, getuid());
	ck_assert_str_eq(ls[0].label, "it");
	ck_assert_ptr_nonnull(strstr(ls[0].rule, "policy:5"));
	p2pbuf_leases_free(ls, n);

	ck_assert_int_eq(p2pbuf_lease_release(c, id, fd), 0);
	/* It ends when the next count of its holders (off the daemon's loop) finds none. */
	ck_assert_uint_eq(wait_listed(c, false, 0), 0);
	/* Released twice: the lease is gone. */
	ck_assert_int_eq(p2pbuf_release(c, id), -ENOENT);
	p2pbuf_disconnect(c);
	ck_assert(harness_fds_settle(&h, 2000));
}
END_TEST

START_TEST(export_whole_bar_and_several_ranges)
{
	struct p2pbuf *c = connect_ok();
	struct p2pbuf_range rs[3] = { { 0, 0x1000 }, { 0x8000, 0x2000 }, { 0xf0000, 0x1000 } };
	uint64_t id, size;
	int fd = p2pbuf_export(c, "sim1", 0, NULL, 0, NULL, &id, &size);

	ck_assert_int_ge(fd, 0);
	ck_assert_uint_eq(size, 1024 * 1024);
	close(fd);
	fd = p2pbuf_export(c, "sim0", 2, rs, 3, NULL, &id, &size);
	ck_assert_msg(fd >= 0, "%s", p2pbuf_last_message(c));
	ck_assert_uint_eq(size, 0x4000);
	close(fd);
	p2pbuf_disconnect(c);
}
END_TEST

START_TEST(denied_by_policy)
{
	struct p2pbuf *c = connect_ok();

	char want[256];

	/* sim0 has a BAR 4, but no rule allows it. */
	ck_assert_int_eq(export1(c, "sim0", 4, 0, 0x1000, NULL), -EPERM);
	snprintf(want, sizeof(want), "denied by policy: no rule allows uid %u ",
		 (unsigned)getuid());
	ck_assert_msg(!strncmp(p2pbuf_last_message(c), want, strlen(want)), "%s",
		      p2pbuf_last_message(c));
	ck_assert_ptr_nonnull(
	    strstr(p2pbuf_last_message(c), "to export from BAR 4 of device sim0"));
	/* BAR 2 is allowed only within its first 1 MiB: the message names the rule (line 5). */
	ck_assert_int_eq(export1(c, "sim0", 2, 0x100000, 0x1000, NULL), -EPERM);
	snprintf(want, sizeof(want), "denied by policy: this range lies outside what %s:5 allows",
		 h.policy);
	ck_assert_msg(!strncmp(p2pbuf_last_message(c), want, strlen(want)), "%s",
		      p2pbuf_last_message(c));
	ck_assert_int_eq(export1(c, "nosuch", 0, 0, 0x1000, NULL), -ENODEV);
	ck_assert_ptr_nonnull(strstr(p2pbuf_last_message(c), "unknown device"));
	/* The connection keeps working after refusals. */
	int fd = export1(c, "sim0", 2, 0, 0x1000, NULL);
	ck_assert_int_ge(fd, 0);
	close(fd);
	p2pbuf_disconnect(c);
}
END_TEST

START_TEST(bad_ranges)
{
	struct p2pbuf *c = connect_ok();

	ck_assert_int_eq(export1(c, "sim0", 0, 0x100, 0x1000, NULL), -EINVAL);
	ck_assert_ptr_nonnull(strstr(p2pbuf_last_message(c), "aligned"));
	ck_assert_int_eq(export1(c, "sim0", 0, 0xf000, 0x2000, NULL), -ERANGE);
	ck_assert_ptr_nonnull(strstr(p2pbuf_last_message(c), "outside BAR 0"));
	ck_assert_int_eq(export1(c, "sim0", 0, 0x2000, 0x1000, NULL), -EADDRNOTAVAIL);
	ck_assert_ptr_nonnull(strstr(p2pbuf_last_message(c), "MSI-X table"));
	ck_assert_int_eq(export1(c, "sim0", 0, 0x0, 0x4000, NULL), -EADDRNOTAVAIL);
	ck_assert_int_eq(export1(c, "sim0", 0, 0x3000, 0x1000, NULL), -EADDRNOTAVAIL);
	ck_assert_ptr_nonnull(strstr(p2pbuf_last_message(c), "MSI-X PBA"));
	ck_assert_int_eq(export1(c, "sim0", 0, 0x0, 0x0, NULL), -EINVAL);
	/* Pages around the MSI-X structures are fine. */
	int fd = export1(c, "sim0", 0, 0x4000, 0xc000, NULL);
	ck_assert_msg(fd >= 0, "%s", p2pbuf_last_message(c));
	close(fd);
	p2pbuf_disconnect(c);
}
END_TEST

START_TEST(rule_max_leases)
{
	struct p2pbuf *c = connect_ok();
	int fds[4];

	for (int i = 0; i < 4; i++)
		ck_assert_int_ge(fds[i] = export1(c, "sim0", 2, 0, 0x1000, NULL), 0);
	ck_assert_int_eq(export1(c, "sim0", 2, 0, 0x1000, NULL), -EDQUOT);
	ck_assert_ptr_nonnull(strstr(p2pbuf_last_message(c), "max-leases"));
	for (int i = 0; i < 4; i++)
		close(fds[i]);
	p2pbuf_disconnect(c);
}
END_TEST

static const char *const small_limits[] = { "--max-leases-per-client", "2", NULL };

START_TEST(client_lease_limit)
{
	harness_stop(&h);
	harness_start(&h, NULL, small_limits);
	struct p2pbuf *c = connect_ok();
	int a = export1(c, "sim1", 0, 0, 0x1000, NULL);
	int b = export1(c, "sim1", 0, 0, 0x1000, NULL);

	ck_assert_int_ge(a, 0);
	ck_assert_int_ge(b, 0);
	ck_assert_int_eq(export1(c, "sim1", 0, 0, 0x1000, NULL), -EDQUOT);
	close(a);
	close(b);
	p2pbuf_disconnect(c);
}
END_TEST

START_TEST(disconnect_ends_leases)
{
	struct p2pbuf *c = connect_ok();
	struct p2pbuf *admin = connect_ok();
	struct p2pbuf_lease *ls;
	size_t n;
	int fd = export1(c, "sim1", 0, 0, 0x10000, NULL);

	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(p2pbuf_list_leases(admin, true, &ls, &n), 0);
	ck_assert_uint_eq(n, 1);
	p2pbuf_leases_free(ls, n);
	p2pbuf_disconnect(c);
	/* The daemon notices the hang-up, ends the lease and closes its copy. */
	ck_assert_uint_eq(wait_listed(admin, true, 0), 0);
	p2pbuf_disconnect(admin);
	ck_assert(harness_fds_settle(&h, 2000));
}
END_TEST

struct seen {
	int revoking;
	int revoked;
	enum p2pbuf_reason reason;
	uint64_t lease;
	int states[8];
	int n_states;
};

static void on_event(struct p2pbuf *conn, const struct p2pbuf_event *ev, void *userdata)
{
	struct seen *s = userdata;

	if (ev->type == P2PBUF_EVENT_LEASE_REVOKING)
		s->revoking++;
	if (ev->type == P2PBUF_EVENT_LEASE_REVOKED) {
		s->revoked++;
		s->reason = ev->reason;
		s->lease = ev->lease_id;
	} else if (ev->type == P2PBUF_EVENT_DEVICE_STATE && s->n_states < 8) {
		s->states[s->n_states++] = ev->state;
	}
}

START_TEST(reset_revokes_with_events)
{
	struct p2pbuf *holder = connect_ok();
	struct p2pbuf *admin = connect_ok();
	struct seen s = {};
	struct p2pbuf_device *devs;
	size_t n;
	uint64_t id;
	int fd = export1(holder, "sim0", 2, 0, 0x1000, &id);

	ck_assert_int_ge(fd, 0);
	p2pbuf_set_event_handler(holder, on_event, &s);
	ck_assert_int_eq(p2pbuf_subscribe(holder, false), 0);
	ck_assert_int_eq(p2pbuf_reset(admin, "sim0"), 0);
	for (int i = 0; i < 100 && (s.revoked == 0 || s.n_states < 2); i++)
		ck_assert_int_ge(p2pbuf_wait(holder, 50), 0);
	ck_assert_int_eq(s.revoked, 1);
	ck_assert_uint_eq(s.lease, id);
	ck_assert_int_eq(s.reason, P2PBUF_REASON_RESET);
	ck_assert_int_eq(s.n_states, 2);
	ck_assert_int_eq(s.states[0], P2PBUF_DEVICE_CYCLING);
	ck_assert_int_eq(s.states[1], P2PBUF_DEVICE_READY);
	ck_assert_int_eq(p2pbuf_list_devices(admin, &devs, &n), 0);
	ck_assert_uint_eq(devs[0].generation, 1);
	ck_assert_int_eq(devs[0].state, P2PBUF_DEVICE_READY);
	p2pbuf_devices_free(devs, n);
	/* The lease is gone; the device exports again. */
	ck_assert_int_eq(p2pbuf_release(holder, id), -ENOENT);
	close(fd);
	fd = export1(holder, "sim0", 2, 0, 0x1000, NULL);
	ck_assert_int_ge(fd, 0);
	close(fd);
	p2pbuf_disconnect(holder);
	p2pbuf_disconnect(admin);
}
END_TEST

static void send_raw(int fd, const void *buf, size_t len)
{
	ck_assert_int_eq(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* The daemon still answers a well-behaved client. */
static void assert_serving(void)
{
	struct p2pbuf *c = connect_ok();
	struct p2pbuf_status st;

	ck_assert_int_eq(p2pbuf_status(c, &st), 0);
	p2pbuf_status_free(&st);
	p2pbuf_disconnect(c);
}

START_TEST(malformed_record_drops_client)
{
	int fd = harness_raw_connect(&h);
	static const uint8_t garbage[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x08 };

	ck_assert_int_ge(fd, 0);
	send_raw(fd, garbage, sizeof(garbage));
	ck_assert(harness_peer_closed(fd, 2000));
	close(fd);
	assert_serving();
	ck_assert(harness_fds_settle(&h, 2000));
}
END_TEST

START_TEST(oversized_record_drops_client)
{
	int fd = harness_raw_connect(&h);
	size_t len = 70000;
	uint8_t *buf = calloc(1, len);
	int sndbuf = 1 << 20;

	ck_assert_int_ge(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	send_raw(fd, buf, len);
	free(buf);
	ck_assert(harness_peer_closed(fd, 2000));
	close(fd);
	assert_serving();
}
END_TEST

START_TEST(client_fds_rejected_and_closed)
{
	int fd = harness_raw_connect(&h);
	int pass = open("/dev/null", O_RDONLY | O_CLOEXEC);
	uint8_t buf[64];
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Hello hello = P2PBUF__HELLO__INIT;

	hello.has_major = true;
	hello.major = 1;
	req.body_case = P2PBUF__REQUEST__BODY_HELLO;
	req.hello = &hello;
	size_t len = p2pbuf__request__pack(&req, buf);
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl = {};
	struct iovec iov = { buf, len };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = ctl.b,
			     .msg_controllen = sizeof(ctl.b) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &pass, sizeof(int));
	ck_assert_int_eq(sendmsg(fd, &mh, MSG_NOSIGNAL), (ssize_t)len);
	close(pass);
	ck_assert(harness_peer_closed(fd, 2000));
	close(fd);
	/* The fd that arrived was closed, not kept. */
	ck_assert(harness_fds_settle(&h, 2000));
	assert_serving();
}
END_TEST

/* Send one request on a raw connection and decode the reply. */
static P2pbuf__Reply *raw_call(int fd, P2pbuf__Request *req)
{
	uint8_t buf[65536];
	size_t len = p2pbuf__request__pack(req, buf);

	send_raw(fd, buf, len);
	ssize_t n = recv(fd, buf, sizeof(buf), 0);
	ck_assert_int_gt(n, 0);
	P2pbuf__ServerMessage *sm = p2pbuf__server_message__unpack(NULL, (size_t)n, buf);
	ck_assert_ptr_nonnull(sm);
	ck_assert_int_eq(sm->body_case, P2PBUF__SERVER_MESSAGE__BODY_REPLY);
	P2pbuf__Reply *r = sm->reply;
	sm->reply = NULL;
	sm->body_case = P2PBUF__SERVER_MESSAGE__BODY__NOT_SET;
	p2pbuf__server_message__free_unpacked(sm, NULL);
	return r;
}

START_TEST(hello_first_and_version_mismatch)
{
	int fd = harness_raw_connect(&h);
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Status status = P2PBUF__STATUS__INIT;
	P2pbuf__Hello hello = P2PBUF__HELLO__INIT;

	req.has_request_id = true;
	req.request_id = 7;
	req.body_case = P2PBUF__REQUEST__BODY_STATUS;
	req.status = &status;
	P2pbuf__Reply *r = raw_call(fd, &req);
	ck_assert_uint_eq(r->request_id, 7);
	ck_assert_int_eq(r->error, -EPROTO);
	ck_assert_ptr_nonnull(r->message);
	p2pbuf__reply__free_unpacked(r, NULL);

	hello.has_major = true;
	hello.major = 99;
	req.body_case = P2PBUF__REQUEST__BODY_HELLO;
	req.hello = &hello;
	r = raw_call(fd, &req);
	ck_assert_int_eq(r->error, -EPROTONOSUPPORT);
	ck_assert_int_eq(r->body_case, P2PBUF__REPLY__BODY_HELLO);
	ck_assert_uint_eq(r->hello->major, 1);
	ck_assert_ptr_nonnull(strstr(r->message, "speaks protocol 1."));
	p2pbuf__reply__free_unpacked(r, NULL);
	ck_assert(harness_peer_closed(fd, 2000));
	close(fd);
}
END_TEST

START_TEST(invalid_request_gets_error_and_keeps_connection)
{
	struct p2pbuf *c = connect_ok();
	struct p2pbuf_range rs[65];
	uint64_t id, size;

	for (int i = 0; i < 65; i++)
		rs[i] = (struct p2pbuf_range){ (uint64_t)i * 0x1000, 0x1000 };
	ck_assert_int_eq(p2pbuf_export(c, "sim0", 2, rs, 65, NULL, &id, &size), -E2BIG);
	ck_assert_int_eq(p2pbuf_reset(c, "nosuch"), -ENODEV);
	ck_assert_int_eq(p2pbuf_revoke(c, 12345), -ENOENT);
	assert_serving();
	p2pbuf_disconnect(c);
}
END_TEST

static const char non_admin_policy[] = "device sim0 sim bar 0 64K\n"
				       "allow user %1$u device sim0\n";

START_TEST(admin_requests_need_admin)
{
	harness_stop(&h);
	harness_start(&h, non_admin_policy, NULL);
	struct p2pbuf *c = connect_ok();
	struct p2pbuf_lease *ls;
	size_t n;

	ck_assert_int_eq(p2pbuf_reset(c, "sim0"), -EPERM);
	ck_assert_int_eq(p2pbuf_revoke(c, 1), -EPERM);
	ck_assert_int_eq(p2pbuf_list_leases(c, true, &ls, &n), -EPERM);
	ck_assert_int_eq(p2pbuf_subscribe(c, true), -EPERM);
	struct p2pbuf_reload res;
	ck_assert_int_eq(p2pbuf_reload(c, &res), -EPERM);
	ck_assert_str_eq(p2pbuf_last_message(c), "reload needs an admin rule in the policy");
	p2pbuf_disconnect(c);
}
END_TEST

/* In a child with many supplementary groups: whether an export of sim1 that only the group
 * last in the list allows succeeds. */
static bool export_in_many_groups(size_t n_groups)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		gid_t groups[512];
		for (size_t i = 0; i < n_groups; i++)
			groups[i] = (gid_t)(50000 + i);
		if (setgroups(n_groups, groups) < 0)
			_exit(2);
		struct p2pbuf *c = connect_ok();
		uint64_t id;
		int fd = export1(c, "sim1", 0, 0, 0x1000, &id);
		_exit(fd >= 0 ? 0 : 1);
	}
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) != 2);
	return WEXITSTATUS(status) == 0;
}

/* A peer in more groups than the daemon asks for at first keeps every one of them: 300
 * groups, and the rule that allows it names the 300th. */
START_TEST(many_supplementary_groups_all_count)
{
	if (geteuid() != 0)
		return; /* setgroups needs root */
	harness_stop(&h);
	harness_start(&h,
		      "device sim1 sim bar 0 1M\n"
		      "allow group 50299 device sim1\n"
		      "admin user %1$u\n",
		      NULL);
	ck_assert(export_in_many_groups(300));
	ck_assert(!export_in_many_groups(299));
}
END_TEST

/* Whether lease id is still in c's listing. */
static bool listed(struct p2pbuf *c, uint64_t id)
{
	struct p2pbuf_lease *ls;
	size_t n;
	bool found = false;

	ck_assert_int_eq(p2pbuf_list_leases(c, false, &ls, &n), 0);
	for (size_t i = 0; i < n; i++)
		found |= ls[i].id == id && ls[i].state != P2PBUF_LEASE_ENDED;
	p2pbuf_leases_free(ls, n);
	return found;
}

/* max-bytes counts the bytes of a rule's live leases, whoever holds them; an export that would
 * go past it is refused with a message naming the limit, and room comes back once a lease
 * has really ended. */
START_TEST(rule_max_bytes)
{
	harness_stop(&h);
	harness_start(&h,
		      "device sim1 sim bar 0 1M\n"
		      "allow user %1$u device sim1 max-bytes 64K\n"
		      "admin user %1$u\n",
		      NULL);
	struct p2pbuf *c = connect_ok();
	uint64_t a, b;
	int fa = export1(c, "sim1", 0, 0, 0x8000, &a);
	int fb = export1(c, "sim1", 0, 0x8000, 0x8000, &b);

	ck_assert_int_ge(fa, 0);
	ck_assert_int_ge(fb, 0);
	ck_assert_int_eq(export1(c, "sim1", 0, 0x10000, 0x1000, NULL), -EDQUOT);
	ck_assert_str_eq(p2pbuf_last_message(c),
			 "every policy rule that allows this is at its max-bytes");
	ck_assert_int_eq(p2pbuf_lease_release(c, a, fa), 0);
	for (int i = 0; i < 400 && listed(c, a); i++)
		usleep(25000); /* polls for the condition; a passing run does not wait long */
	ck_assert(!listed(c, a));
	int fc = export1(c, "sim1", 0, 0x10000, 0x8000, NULL);
	ck_assert_msg(fc >= 0, "%s", p2pbuf_last_message(c));
	close(fb);
	close(fc);
	p2pbuf_disconnect(c);
}
END_TEST

/* The default policy without its sim1 rule, and one rule more. */
static const char reload_policy[] =
    "device sim0 sim bar 0 64K bar 2 2M bar 4 1M msix-table 0 0x2000+0x800 "
    "msix-pba 0 0x3000+0x100 revoke-deadline 2s\n"
    "device sim1 sim bar 0 1M\n"
    "allow user %1$u device sim0 bar 0\n"
    "allow user %1$u device sim0 bar 2 range 0+1M max-leases 4\n"
    "allow user %1$u device sim0 bar 4\n"
    "admin user %1$u\n";

/* An admin's Reload: the summary of a good policy; every error of a bad one, and the
 * current policy kept. */
START_TEST(reload_request_reports)
{
	struct p2pbuf *c = connect_ok();
	struct p2pbuf_reload res;
	uint64_t id;
	int fd = export1(c, "sim1", 0, 0, 0x1000, &id);

	ck_assert_int_ge(fd, 0);
	harness_write_policy(&h, reload_policy);
	ck_assert_msg(p2pbuf_reload(c, &res) == 0, "%s", p2pbuf_last_message(c));
	ck_assert_uint_eq(res.rules, 3);
	ck_assert_uint_eq(res.devices, 2);
	ck_assert_uint_eq(res.leases_revoked, 1);
	ck_assert_uint_eq(res.n_errors, 0);
	p2pbuf_reload_free(&res);
	close(fd);

	harness_write_policy(&h, "device sim0 sim bar 0 1M\nallow usr %1$u device sim0\n"
				 "allow user %1$u device sim0 bar 9\nadmin user %1$u\n");
	ck_assert_int_eq(p2pbuf_reload(c, &res), -EINVAL);
	ck_assert_uint_eq(res.n_errors, 2);
	char where[160];
	snprintf(where, sizeof(where), "%s:2:", h.policy);
	ck_assert_msg(!strncmp(res.errors[0], where, strlen(where)), "%s", res.errors[0]);
	snprintf(where, sizeof(where), "%s:3:", h.policy);
	ck_assert_msg(!strncmp(res.errors[1], where, strlen(where)), "%s", res.errors[1]);
	p2pbuf_reload_free(&res);
	/* The policy reloaded before stays: bar 4 of sim0 is allowed, sim1 is not. */
	fd = export1(c, "sim0", 4, 0, 0x1000, &id);
	ck_assert_msg(fd >= 0, "%s", p2pbuf_last_message(c));
	close(fd);
	ck_assert_int_eq(export1(c, "sim1", 0, 0, 0x1000, &id), -EPERM);
	p2pbuf_disconnect(c);
}
END_TEST

START_TEST(admin_revoke_tells_holder)
{
	struct p2pbuf *holder = connect_ok();
	struct p2pbuf *admin = connect_ok();
	struct seen s = {};
	uint64_t id;
	int fd = export1(holder, "sim1", 0, 0, 0x1000, &id);

	ck_assert_int_ge(fd, 0);
	p2pbuf_set_event_handler(holder, on_event, &s);
	ck_assert_int_eq(p2pbuf_revoke(admin, id), 0);
	/* The holder still has the buffer: it is asked to let go first. */
	for (int i = 0; i < 100 && !s.revoking; i++)
		ck_assert_int_ge(p2pbuf_wait(holder, 50), 0);
	ck_assert_int_eq(s.revoking, 1);
	ck_assert_int_eq(s.revoked, 0);
	ck_assert_int_eq(p2pbuf_lease_release(holder, id, fd), 0);
	for (int i = 0; i < 100 && !s.revoked; i++)
		ck_assert_int_ge(p2pbuf_wait(holder, 50), 0);
	ck_assert_int_eq(s.revoked, 1);
	ck_assert_int_eq(s.reason, P2PBUF_REASON_ADMIN);
	p2pbuf_disconnect(holder);
	p2pbuf_disconnect(admin);
}
END_TEST

START_TEST(many_clients_and_no_fd_leak)
{
	struct p2pbuf *cs[20];

	for (int i = 0; i < 20; i++) {
		cs[i] = connect_ok();
		int fd = export1(cs[i], "sim1", 0, (uint64_t)i * 0x1000, 0x1000, NULL);
		ck_assert_int_ge(fd, 0);
		close(fd);
	}
	for (int i = 0; i < 20; i++)
		p2pbuf_disconnect(cs[i]);
	ck_assert(harness_fds_settle(&h, 3000));
}
END_TEST

START_TEST(bad_policy_refuses_to_start)
{
	harness_stop(&h);
	char dir[] = "/tmp/p2pbuf-it-XXXXXX";
	char policy[64], cmd[512];

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(policy, sizeof(policy), "%s/policy", dir);
	FILE *f = fopen(policy, "w");
	fputs("device sim0 sim bar 0 64K\nallow user 0 device sim0 bar 0 max-lease 3\n", f);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "%s/daemon/p2pbufd --policy %s --socket %s/sock 2>&1",
		 getenv("top_builddir") ? getenv("top_builddir") : ".", policy, dir);
	FILE *p = popen(cmd, "r");
	char out[1024] = "";
	size_t n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	int status = pclose(p);
	ck_assert_int_ne(WEXITSTATUS(status), 0);
	/* file:line:column of the typo. */
	ck_assert_msg(strstr(out, "policy:2:32:"), "got: %s", out);
	unlink(policy);
	rmdir(dir);
}
END_TEST

/* A client that sends requests but never reads the replies: once the daemon has queued
 * SERVER_OUTQ_PAUSE_BYTES for it, it reads nothing more from that client (backpressure), so
 * the client's own socket fills and its sends fail with EAGAIN while others are served.
 * When it reads at last, every request it got in is answered, in order. */
START_TEST(client_that_never_reads_gets_backpressure)
{
	int fd = harness_raw_connect(&h);
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__ListDevices ld = P2PBUF__LIST_DEVICES__INIT;
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	uint8_t buf[65536];
	uint64_t sent = 0;

	ck_assert(harness_raw_hello(fd));
	req.body_case = P2PBUF__REQUEST__BODY_LIST_DEVICES;
	req.list_devices = &ld;
	req.has_request_id = true;
	/* Each reply is a few hundred bytes: the daemon stops reading after a few hundred,
	 * and the socket takes a few hundred more. Far fewer than 100000 in any case. */
	for (int i = 0; i < 100000; i++) {
		req.request_id = sent + 1;
		size_t len = p2pbuf__request__pack(&req, buf);
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n == (ssize_t)len) {
			sent++;
			continue;
		}
		ck_assert_msg(n < 0 && errno == EAGAIN, "send: %s", strerror(errno));
		/* Full: if the daemon still read, room would come back at once. */
		if (poll(&p, 1, 1000) == 0)
			break;
	}
	ck_assert_uint_lt(sent, 100000);
	assert_serving();
	for (uint64_t want = 1; want <= sent; want++) {
		struct pollfd in = { .fd = fd, .events = POLLIN };
		ck_assert_int_eq(poll(&in, 1, 5000), 1);
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		ck_assert_int_gt(n, 0);
		P2pbuf__ServerMessage *m = p2pbuf__server_message__unpack(NULL, (size_t)n, buf);
		ck_assert_ptr_nonnull(m);
		ck_assert_int_eq(m->body_case, P2PBUF__SERVER_MESSAGE__BODY_REPLY);
		ck_assert_uint_eq(m->reply->request_id, want);
		ck_assert_int_eq(m->reply->error, 0);
		p2pbuf__server_message__free_unpacked(m, NULL);
	}
	close(fd);
	ck_assert(harness_fds_settle(&h, 2000));
}
END_TEST

static const char *const many_leases[] = { "--max-leases-per-client", "700", NULL };

START_TEST(lease_listing_pages)
{
	harness_stop(&h);
	harness_start(&h, NULL, many_leases);
	struct p2pbuf *c = connect_ok();
	struct p2pbuf_lease *ls;
	size_t n;

	/* More than one record's worth (a page holds at most 512). */
	for (int i = 0; i < 600; i++) {
		int fd = export1(c, "sim1", 0, (uint64_t)(i % 256) * 0x1000, 0x1000, NULL);
		ck_assert_msg(fd >= 0, "export %d: %s", i, p2pbuf_last_message(c));
		close(fd);
	}
	ck_assert_int_eq(p2pbuf_list_leases(c, false, &ls, &n), 0);
	ck_assert_uint_eq(n, 600);
	for (size_t i = 1; i < n; i++)
		ck_assert_uint_gt(ls[i].id, ls[i - 1].id);
	p2pbuf_leases_free(ls, n);
	/* Its connection goes away: nobody holds the 600 buffers, and they all end (one count
	 * of their holders, off the daemon's loop). */
	struct p2pbuf *admin = connect_ok();
	p2pbuf_disconnect(c);
	ck_assert_uint_eq(wait_listed(admin, true, 0), 0);
	p2pbuf_disconnect(admin);
	ck_assert(harness_fds_settle(&h, 5000));
}
END_TEST

START_TEST(socket_activation)
{
	harness_stop(&h);
	harness_start_activated(&h, NULL);
	struct p2pbuf *c = connect_ok();
	int fd = export1(c, "sim1", 0, 0, 0x1000, NULL);

	ck_assert_int_ge(fd, 0);
	close(fd);
	p2pbuf_disconnect(c);
	ck_assert(harness_fds_settle(&h, 2000));
	char path[160], log[4096] = "";
	snprintf(path, sizeof(path), "%s/daemon.log", h.dir);
	FILE *f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	log[fread(log, 1, sizeof(log) - 1, f)] = '\0';
	fclose(f);
	ck_assert_msg(strstr(log, "listening on the socket systemd passed"), "log: %s", log);
}
END_TEST

/* What the daemon's log says of routine lease lines so far: grants and released leases logged
 * one by one, and those its summaries counted instead. */
struct lease_lines {
	unsigned long granted, ended, unlogged_grants, unlogged_ends, summaries;
};

static struct lease_lines read_lease_lines(void)
{
	struct lease_lines n = { 0 };
	char path[160], *line = NULL;
	size_t cap = 0;

	snprintf(path, sizeof(path), "%s/daemon.log", h.dir);
	FILE *f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	while (getline(&line, &cap, f) > 0) {
		unsigned long g, e;
		const char *sum = strstr(line, ": ");
		if (strstr(line, "granted: lease="))
			n.granted++;
		else if (strstr(line, " ended: ") && strstr(line, "reason=released"))
			n.ended++;
		else if (strstr(line, "not logged one by one") && sum &&
			 sscanf(sum, ": %lu grant(s) and %lu lease end(s)", &g, &e) == 2) {
			n.unlogged_grants += g;
			n.unlogged_ends += e;
			n.summaries++;
		}
	}
	free(line);
	fclose(f);
	return n;
}

/* Export and release n buffers back to back on one connection, then close it; wait until
 * the log has accounted for every grant and every end, one by one or in a summary. */
static struct lease_lines cycle_and_count(unsigned n)
{
	struct p2pbuf *c = connect_ok();
	struct lease_lines got;

	for (unsigned i = 0; i < n; i++) {
		uint64_t id;
		int fd = export1(c, "sim1", 0, 0, 0x1000, &id);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(p2pbuf_lease_release(c, id, fd), 0);
	}
	p2pbuf_disconnect(c);
	for (int i = 0; i < 1000; i++) {
		got = read_lease_lines();
		if (got.granted + got.unlogged_grants >= n && got.ended + got.unlogged_ends >= n)
			break;
		usleep(10000);
	}
	ck_assert_uint_eq(got.granted + got.unlogged_grants, n);
	ck_assert_uint_eq(got.ended + got.unlogged_ends, n);
	return got;
}

/* A client cycling buffers as fast as it can cannot flood the log (and, through journald's
 * limit per service, silence the daemon's other lines): at most 20 lease lines a second per
 * connection by default, and the counts of the rest are told, so nothing goes unaccounted. */
START_TEST(lease_lines_bounded_per_connection)
{
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct lease_lines got = cycle_and_count(300);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* One window of 20 lines per second begun, at most; the test's own run time bounds
	 * how many windows there were. */
	unsigned long windows = (unsigned long)(t1.tv_sec - t0.tv_sec) + 2;
	ck_assert_msg(got.granted + got.ended <= 20 * windows,
		      "%lu grant and %lu end lines in %lu window(s)", got.granted, got.ended,
		      windows);
	ck_assert_uint_ge(got.granted, 1);
	ck_assert_uint_ge(got.summaries, 1);
	/* An admin's revoke is no routine line: always logged. */
	struct p2pbuf *c = connect_ok();
	uint64_t id;
	int fd = export1(c, "sim1", 0, 0, 0x1000, &id);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(p2pbuf_revoke(c, id), 0);
	char want[64];
	snprintf(want, sizeof(want), "lease %llu ended:", (unsigned long long)id);
	bool seen = false;
	for (int i = 0; i < 1000 && !seen; i++) {
		char path[160], *line = NULL;
		size_t cap = 0;
		snprintf(path, sizeof(path), "%s/daemon.log", h.dir);
		FILE *f = fopen(path, "r");
		ck_assert_ptr_nonnull(f);
		while (!seen && getline(&line, &cap, f) > 0)
			seen = strstr(line, want) && strstr(line, "reason=admin");
		free(line);
		fclose(f);
		if (!seen)
			usleep(10000);
	}
	ck_assert_msg(seen, "no \"%s ... reason=admin\" line", want);
	p2pbuf_disconnect(c);
}
END_TEST

/* --lease-log-rate all: every grant and every end is a line of its own. */
START_TEST(lease_lines_all)
{
	static const char *const args[] = { "--lease-log-rate", "all", NULL };

	harness_stop(&h);
	harness_start(&h, NULL, args);
	struct lease_lines got = cycle_and_count(100);
	ck_assert_uint_eq(got.granted, 100);
	ck_assert_uint_eq(got.ended, 100);
	ck_assert_uint_eq(got.summaries, 0);
}
END_TEST

/* A raw connection's Hello, offering features; returns what the daemon granted. */
static uint64_t raw_hello_features(int fd, uint64_t features)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Hello hello = P2PBUF__HELLO__INIT;

	hello.has_major = hello.has_features = true;
	hello.major = 1;
	hello.features = features;
	req.has_request_id = true;
	req.request_id = 1;
	req.body_case = P2PBUF__REQUEST__BODY_HELLO;
	req.hello = &hello;
	P2pbuf__Reply *r = raw_call(fd, &req);
	ck_assert_int_eq(r->error, 0);
	uint64_t granted = r->hello->has_features ? r->hello->features : 0;
	p2pbuf__reply__free_unpacked(r, NULL);
	return granted;
}

static void raw_subscribe_all(int fd)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Subscribe sub = P2PBUF__SUBSCRIBE__INIT;

	sub.has_all = sub.all = true;
	req.has_request_id = true;
	req.request_id = 2;
	req.body_case = P2PBUF__REQUEST__BODY_SUBSCRIBE;
	req.subscribe = &sub;
	P2pbuf__Reply *r = raw_call(fd, &req);
	ck_assert_int_eq(r->error, 0);
	p2pbuf__reply__free_unpacked(r, NULL);
}

/* What one raw connection saw of a reset: records, LeaseRevoked events by lease. */
struct raw_seen {
	unsigned records, batches, revoked;
	bool reply; /* the Reset's own reply arrived */
	unsigned revoked_before_reply;
	uint64_t ids[512];
};

static void raw_take_event(struct raw_seen *w, const P2pbuf__Event *e)
{
	if (e->body_case != P2PBUF__EVENT__BODY_LEASE_REVOKED)
		return;
	ck_assert_uint_lt(w->revoked, 512);
	ck_assert_int_eq(e->lease_revoked->reason, P2PBUF__REASON__REASON_RESET);
	w->ids[w->revoked++] = e->lease_revoked->lease_id;
}

/* Read records until want LeaseRevoked events (and, with reply_id, its reply) are in. */
static void raw_read_revoked(int fd, struct raw_seen *w, unsigned want, uint64_t reply_id)
{
	uint8_t buf[65536];

	while (w->revoked < want || (reply_id && !w->reply)) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ck_assert_int_eq(poll(&p, 1, 10000), 1);
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		ck_assert_int_gt(n, 0);
		P2pbuf__ServerMessage *m = p2pbuf__server_message__unpack(NULL, (size_t)n, buf);
		ck_assert_ptr_nonnull(m);
		w->records++;
		if (m->body_case == P2PBUF__SERVER_MESSAGE__BODY_REPLY) {
			ck_assert_uint_eq(m->reply->request_id, reply_id);
			ck_assert_int_eq(m->reply->error, 0);
			w->reply = true;
			w->revoked_before_reply = w->revoked;
		} else if (m->body_case == P2PBUF__SERVER_MESSAGE__BODY_EVENTS) {
			w->batches++;
			ck_assert_uint_gt(m->events->n_events, 1);
			ck_assert_uint_le(m->events->n_events, WIRE_BATCH_MAX_EVENTS);
			for (size_t i = 0; i < m->events->n_events; i++)
				raw_take_event(w, m->events->events[i]);
		} else {
			ck_assert_int_eq(m->body_case, P2PBUF__SERVER_MESSAGE__BODY_EVENT);
			raw_take_event(w, m->event);
		}
		p2pbuf__server_message__free_unpacked(m, NULL);
	}
}

static int compare_id(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Every lease exactly once, whatever the records. */
static void assert_every_lease(struct raw_seen *w, const uint64_t *ids, unsigned n)
{
	ck_assert_uint_eq(w->revoked, n);
	qsort(w->ids, n, sizeof(w->ids[0]), compare_id);
	for (unsigned i = 0; i < n; i++)
		ck_assert_uint_eq(w->ids[i], ids[i]);
}

/* A client that asks for event batches gets a reset's 300 LeaseRevoked in a few records, all
 * before the Reset's reply on the same connection; one that does not gets one record per
 * event, as from a daemon of protocol 1.2. */
START_TEST(reset_events_batched_for_clients_that_ask)
{
	enum { N = 300 };
	harness_stop(&h);
	harness_start(&h, NULL, many_leases);
	struct p2pbuf *holder = connect_ok();
	uint64_t ids[N];

	for (int i = 0; i < N; i++) {
		int fd = export1(holder, "sim1", 0, (uint64_t)(i % 256) * 0x1000, 0x1000, &ids[i]);
		ck_assert_msg(fd >= 0, "export %d: %s", i, p2pbuf_last_message(holder));
		close(fd);
	}
	qsort(ids, N, sizeof(ids[0]), compare_id);
	int batched = harness_raw_connect(&h), plain = harness_raw_connect(&h);
	ck_assert_uint_eq(raw_hello_features(batched, P2PBUF__FEATURE__FEATURE_EVENT_BATCH | 0x80),
			  P2PBUF__FEATURE__FEATURE_EVENT_BATCH);
	ck_assert_uint_eq(raw_hello_features(plain, 0), 0);
	raw_subscribe_all(batched);
	raw_subscribe_all(plain);

	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Reset reset = P2PBUF__RESET__INIT;
	uint8_t buf[1024];
	reset.device = "sim1";
	req.has_request_id = true;
	req.request_id = 3;
	req.body_case = P2PBUF__REQUEST__BODY_RESET;
	req.reset = &reset;
	send_raw(batched, buf, p2pbuf__request__pack(&req, buf));

	struct raw_seen b = { 0 }, p = { 0 };
	raw_read_revoked(batched, &b, N, 3);
	raw_read_revoked(plain, &p, N, 0);
	ck_assert_uint_eq(b.revoked_before_reply, N);
	ck_assert_uint_ge(b.batches, 2); /* 300 events: more than one batch holds */
	ck_assert_uint_le(b.records, 8);
	ck_assert_uint_eq(p.batches, 0);
	ck_assert_uint_ge(p.records, N);
	assert_every_lease(&b, ids, N);
	assert_every_lease(&p, ids, N);
	close(batched);
	close(plain);
	p2pbuf_disconnect(holder);
	assert_serving();
}
END_TEST

/* On a batching connection an event of the same turn still comes before the reply that
 * follows it: an admin revoking a lease while subscribed hears LeaseRevoking first. */
START_TEST(batched_event_precedes_reply)
{
	struct p2pbuf *holder = connect_ok();
	uint64_t id;
	int fd = export1(holder, "sim0", 0, 0, 0x1000, &id);
	int raw = harness_raw_connect(&h);
	uint8_t buf[65536];

	ck_assert_int_ge(fd, 0);
	ck_assert_uint_eq(raw_hello_features(raw, P2PBUF__FEATURE__FEATURE_EVENT_BATCH),
			  P2PBUF__FEATURE__FEATURE_EVENT_BATCH);
	raw_subscribe_all(raw);
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Revoke revoke = P2PBUF__REVOKE__INIT;
	revoke.has_lease_id = true;
	revoke.lease_id = id;
	req.has_request_id = true;
	req.request_id = 9;
	req.body_case = P2PBUF__REQUEST__BODY_REVOKE;
	req.revoke = &revoke;
	send_raw(raw, buf, p2pbuf__request__pack(&req, buf));
	bool revoking = false;
	for (;;) {
		struct pollfd p = { .fd = raw, .events = POLLIN };
		ck_assert_int_eq(poll(&p, 1, 10000), 1);
		ssize_t n = recv(raw, buf, sizeof(buf), 0);
		ck_assert_int_gt(n, 0);
		P2pbuf__ServerMessage *m = p2pbuf__server_message__unpack(NULL, (size_t)n, buf);
		ck_assert_ptr_nonnull(m);
		bool reply = m->body_case == P2PBUF__SERVER_MESSAGE__BODY_REPLY;
		if (reply)
			ck_assert_int_eq(m->reply->error, 0);
		else if (m->body_case == P2PBUF__SERVER_MESSAGE__BODY_EVENT &&
			 m->event->body_case == P2PBUF__EVENT__BODY_LEASE_REVOKING)
			revoking = m->event->lease_revoking->lease_id == id;
		p2pbuf__server_message__free_unpacked(m, NULL);
		if (reply)
			break;
	}
	ck_assert_msg(revoking, "the reply came before the LeaseRevoking of the same turn");
	close(fd);
	close(raw);
	p2pbuf_disconnect(holder);
}
END_TEST

/* What a connection that does not dispatch keeps: its queue grows with the events, in order,
 * up to 1,024, and then holds the newest 1,024. */
struct kept {
	unsigned revoked, states, total;
	int last_state;
};

static void on_kept(struct p2pbuf *conn, const struct p2pbuf_event *ev, void *userdata)
{
	struct kept *k = userdata;

	k->total++;
	if (ev->type == P2PBUF_EVENT_LEASE_REVOKED)
		k->revoked++;
	if (ev->type == P2PBUF_EVENT_DEVICE_STATE) {
		k->states++;
		k->last_state = ev->state;
	}
}

static void wait_ready(struct p2pbuf *c, const char *name, uint32_t generation)
{
	for (int i = 0; i < 500; i++) {
		struct p2pbuf_device *devs;
		size_t n;
		bool ready = false;
		ck_assert_int_eq(p2pbuf_list_devices(c, &devs, &n), 0);
		for (size_t j = 0; j < n; j++)
			ready |= strcmp(devs[j].name, name) == 0 &&
				 devs[j].state == P2PBUF_DEVICE_READY &&
				 devs[j].generation >= generation;
		p2pbuf_devices_free(devs, n);
		if (ready)
			return;
		usleep(10000);
	}
	ck_abort_msg("%s did not come back", name);
}

static void reset_unread(unsigned leases, uint32_t generation, struct kept *k)
{
	struct p2pbuf *holders[2] = { connect_ok(), connect_ok() };
	struct p2pbuf *observer = connect_ok(), *admin = connect_ok();

	ck_assert_int_eq(p2pbuf_subscribe(observer, true), 0);
	p2pbuf_set_event_handler(observer, on_kept, k);
	for (unsigned i = 0; i < leases; i++) {
		struct p2pbuf *c = holders[i % 2];
		int fd = export1(c, "sim1", 0, (uint64_t)(i % 256) * 0x1000, 0x1000, NULL);
		ck_assert_msg(fd >= 0, "export %u: %s", i, p2pbuf_last_message(c));
		close(fd);
	}
	ck_assert_int_eq(p2pbuf_reset(admin, "sim1"), 0);
	wait_ready(admin, "sim1", generation);
	/* Every event is in the observer's socket before this reply: the call queues them. */
	struct p2pbuf_status st;
	ck_assert_int_eq(p2pbuf_status(observer, &st), 0);
	p2pbuf_status_free(&st);
	ck_assert(p2pbuf_pending(observer));
	while (p2pbuf_pending(observer))
		ck_assert_int_gt(p2pbuf_dispatch(observer), 0);
	p2pbuf_disconnect(holders[0]);
	p2pbuf_disconnect(holders[1]);
	p2pbuf_disconnect(observer);
	p2pbuf_disconnect(admin);
}

START_TEST(event_queue_grows_then_keeps_the_newest)
{
	struct kept some = { 0 }, many = { 0 };

	static const char *const more_leases[] = { "--max-leases-per-client", "700",
						   "--max-leases-per-user", "1200", NULL };

	harness_stop(&h);
	harness_start(&h, NULL, more_leases);
	/* 600 revoked, cycling, ready: all kept, through every size of the queue. */
	reset_unread(600, 1, &some);
	ck_assert_uint_eq(some.revoked, 600);
	ck_assert_uint_eq(some.states, 2);
	ck_assert_uint_eq(some.total, 602);
	ck_assert_int_eq(some.last_state, P2PBUF_DEVICE_READY);
	/* 1,100 and two states: the oldest 78 go, the newest (the device ready) stays. */
	reset_unread(1100, 2, &many);
	ck_assert_uint_eq(many.total, 1024);
	ck_assert_int_eq(many.last_state, P2PBUF_DEVICE_READY);
	assert_serving();
}
END_TEST

static Suite *daemon_suite(void)
{
	Suite *s = suite_create("daemon");
	TCase *tc = tcase_create("sim");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, status_and_devices);
	tcase_add_test(tc, export_and_release);
	tcase_add_test(tc, export_whole_bar_and_several_ranges);
	tcase_add_test(tc, denied_by_policy);
	tcase_add_test(tc, bad_ranges);
	tcase_add_test(tc, rule_max_leases);
	tcase_add_test(tc, client_lease_limit);
	tcase_add_test(tc, disconnect_ends_leases);
	tcase_add_test(tc, reset_revokes_with_events);
	tcase_add_test(tc, malformed_record_drops_client);
	tcase_add_test(tc, oversized_record_drops_client);
	tcase_add_test(tc, client_fds_rejected_and_closed);
	tcase_add_test(tc, hello_first_and_version_mismatch);
	tcase_add_test(tc, invalid_request_gets_error_and_keeps_connection);
	tcase_add_test(tc, admin_requests_need_admin);
	tcase_add_test(tc, admin_revoke_tells_holder);
	tcase_add_test(tc, reload_request_reports);
	tcase_add_test(tc, many_supplementary_groups_all_count);
	tcase_add_test(tc, rule_max_bytes);
	tcase_add_test(tc, many_clients_and_no_fd_leak);
	tcase_add_test(tc, socket_activation);
	tcase_add_test(tc, lease_lines_bounded_per_connection);
	tcase_add_test(tc, lease_lines_all);
	tcase_add_test(tc, lease_listing_pages);
	tcase_add_test(tc, reset_events_batched_for_clients_that_ask);
	tcase_add_test(tc, batched_event_precedes_reply);
	tcase_add_test(tc, event_queue_grows_then_keeps_the_newest);
	tcase_add_test(tc, client_that_never_reads_gets_backpressure);
	suite_add_tcase(s, tc);
	TCase *tp = tcase_create("startup");
	tcase_add_checked_fixture(tp, setup, NULL);
	tcase_add_test(tp, bad_policy_refuses_to_start);
	suite_add_tcase(s, tp);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(daemon_suite());

	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
