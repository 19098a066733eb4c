/* bench-baseline: the bare SCM_RIGHTS server that p2pbufd's grant path is measured against.
 *
 * It does per request the least that any broker of memfd-backed buffers must do, and nothing
 * else: one epoll wakeup, one recvmsg, the same Request decode and checks as the daemon
 * (wire_decode_request in an on-stack arena, its hand-written reader for Export and
 * Release), replies packed as the daemon packs them (wire_pack_reply), and for an Export the sim
 * backend's own export (sim_ops from libp2pbufd-core: memfd_create + ftruncate + F_ADD_SEALS), so
 * that the buffer costs exactly what it costs the daemon, passed with SCM_RIGHTS in a Reply. A
 * Release is answered at once. No policy, no lease table, no copy of the fd kept, no log line:
 * whatever p2pbufd costs beyond this is the price of its own bookkeeping.
 *
 * With --keep it also does what the sim backend's holder tracking makes every lease cost, and
 * nothing else: it keeps the buffer's own fd until the Release (as a lease does), gives the
 * client a file of its own (sim_ops.reopen: an open through /proc/self/fd) and at the Release
 * asks whether that file is gone (sim_ops.unheld: a read lease taken and dropped) before it
 * closes its fd. p2pbufd against this one is the price of the daemon itself; against the bare
 * one, the daemon and the simulated device's tracking together.
 *
 * Usage: bench-baseline --socket PATH [--keep]. Stops on SIGTERM or SIGINT and removes the
 * socket. */
#include <errno.h>
#include <stdbool.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "device.h"
#include "macro.h"
#include "p2pbuf.h"
#include "wire.h"

#define BASELINE_BAR_SIZE (1u << 20) /* BAR 0 of the one simulated device */
#define BASELINE_MAX_EVENTS 64
#define BASELINE_KEPT 4096 /* kept buffers, by lease id modulo this: each client has one */

/* A buffer kept until its Release (--keep). */
struct kept {
	uint64_t lease_id; /* 0: free */
	int sock;	   /* its client's connection */
	int fd;		   /* the buffer's own fd, the client has a reopened one */
};

struct baseline {
	struct device_handle *dev; /* a sim device, opened as the daemon opens one */
	int epfd;
	int listen_fd;
	int signal_fd;
	uint64_t next_lease_id;
	bool keep;
	unsigned held_at_release; /* releases whose client still held the buffer (--keep) */
	struct kept kept[BASELINE_KEPT];
	uint8_t buf[WIRE_MAX_RECORD];
};

static struct kept *kept_slot(struct baseline *b, uint64_t lease_id)
{
	return &b->kept[lease_id % BASELINE_KEPT];
}

static void kept_close(struct kept *k)
{
	closep(&k->fd);
	k->lease_id = 0;
}

/* Keep fd for lease_id, and make the client's own file of it in *ret_copy. */
static int keep(struct baseline *b, int sock, uint64_t lease_id, int fd, int *ret_copy)
{
	struct kept *k = kept_slot(b, lease_id);
	int r = sim_ops.reopen(b->dev, fd, ret_copy);

	if (r < 0)
		return r;
	if (k->lease_id)
		kept_close(k); /* a lease 4,096 exports old never released: not the bench's way */
	*k = (struct kept){ .lease_id = lease_id, .sock = sock, .fd = fd };
	return 0;
}

/* A Release: the client's file must be gone before the buffer's own fd is closed. */
static void release_kept(struct baseline *b, int sock, const P2pbuf__Request *req)
{
	struct kept *k = kept_slot(b, req->release->lease_id);

	if (k->lease_id != req->release->lease_id || k->sock != sock)
		return;
	if (!sim_ops.unheld(k->fd))
		b->held_at_release++;
	kept_close(k);
}

/* A connection closes: what it did not release goes with it. */
static void drop_kept(struct baseline *b, int sock)
{
	for (size_t i = 0; i < BASELINE_KEPT; i++)
		if (b->kept[i].lease_id && b->kept[i].sock == sock)
			kept_close(&b->kept[i]);
}

/* Send a Reply for request_id: error (0 or -errno), an optional body, at most one fd. The
 * clients have one request outstanding at a time, so a full socket means a peer that does not
 * read: the caller drops it instead of queueing. */
static int send_reply(int sock, uint64_t request_id, int error, P2pbuf__Reply *reply, int fd)
{
	reply->has_request_id = true;
	reply->request_id = request_id;
	if (error) {
		reply->has_error = true;
		reply->error = error;
		reply->message = (char *)strerror(-error);
	}
	if (fd >= 0) {
		reply->has_nfds = true;
		reply->nfds = 1;
	}
	uint8_t buf[WIRE_MAX_RECORD];
	ssize_t len = wire_pack_reply(reply, buf, sizeof(buf));
	if (len < 0)
		return (int)len;
	return wire_send(sock, buf, (size_t)len, fd >= 0 ? &fd : NULL, fd >= 0 ? 1 : 0);
}

static int answer_hello(int sock, const P2pbuf__Request *req)
{
	P2pbuf__HelloReply hr = P2PBUF__HELLO_REPLY__INIT;
	P2pbuf__Reply reply = P2PBUF__REPLY__INIT;
	bool ok = req->hello->has_major && req->hello->major == P2PBUF_PROTO_VERSION_MAJOR;

	hr.has_major = hr.has_minor = true;
	hr.major = P2PBUF_PROTO_VERSION_MAJOR;
	hr.minor = P2PBUF_PROTO_VERSION_MINOR;
	hr.server_version = (char *)"bench-baseline";
	reply.body_case = P2PBUF__REPLY__BODY_HELLO;
	reply.hello = &hr;
	return send_reply(sock, req->request_id, ok ? 0 : -EPROTONOSUPPORT, &reply, -1);
}

static int answer_export(struct baseline *b, int sock, const P2pbuf__Request *req)
{
	const P2pbuf__Export *e = req->export;
	P2pbuf__ExportReply er = P2PBUF__EXPORT_REPLY__INIT;
	P2pbuf__Reply reply = P2PBUF__REPLY__INIT;
	struct range ranges[WIRE_MAX_RANGES] = { { 0, BASELINE_BAR_SIZE } };
	size_t n = e->n_ranges ? e->n_ranges : 1; /* none: the whole BAR */
	uint64_t size = 0;
	_cleanup_close_ int fd = -1;

	for (size_t i = 0; i < e->n_ranges; i++)
		ranges[i] = (struct range){ e->ranges[i]->offset, e->ranges[i]->length };
	for (size_t i = 0; i < n; i++)
		size += ranges[i].length;
	int r = sim_ops.export_ranges(b->dev, e->bar, ranges, n, "bench-baseline", &fd);
	if (r < 0)
		return send_reply(sock, req->request_id, r, &reply, -1);
	er.has_lease_id = er.has_size = true;
	er.lease_id = ++b->next_lease_id;
	er.size = size;
	reply.body_case = P2PBUF__REPLY__BODY_EXPORT;
	reply.export = &er;
	if (b->keep) {
		_cleanup_close_ int copy = -1;
		r = keep(b, sock, er.lease_id, fd, &copy);
		if (r < 0)
			return send_reply(sock, req->request_id, r, &reply, -1);
		fd = -1; /* kept */
		return send_reply(sock, req->request_id, 0, &reply, copy);
	}
	/* The kernel holds its own reference while the fd is in flight: ours can go now. */
	return send_reply(sock, req->request_id, 0, &reply, fd);
}

static int answer(struct baseline *b, int sock, const P2pbuf__Request *req, int check)
{
	P2pbuf__Reply reply = P2PBUF__REPLY__INIT;

	if (check < 0)
		return send_reply(sock, req->request_id, -EINVAL, &reply, -1);
	switch (req->body_case) {
	case P2PBUF__REQUEST__BODY_HELLO:
		return answer_hello(sock, req);
	case P2PBUF__REQUEST__BODY_EXPORT:
		return answer_export(b, sock, req);
	case P2PBUF__REQUEST__BODY_RELEASE: {
		/* Answered first, as p2pbufd answers it. */
		int r = send_reply(sock, req->request_id, 0, &reply, -1);
		if (b->keep)
			release_kept(b, sock, req);
		return r;
	}
	default:
		return send_reply(sock, req->request_id, -EOPNOTSUPP, &reply, -1);
	}
}

/* One record per wakeup: epoll is level-triggered, so a second record wakes us again, and the
 * read that would only say EAGAIN is never made. Returns < 0 to drop the connection. */
static int on_client(struct baseline *b, int sock)
{
	int fds[WIRE_MAX_FDS];
	size_t nfds = 0;
	ssize_t n = wire_recv(sock, b->buf, sizeof(b->buf), fds, &nfds);

	if (n == -EAGAIN)
		return 0;
	if (n <= 0)
		return n == 0 ? -ECONNRESET : (int)n;
	if (nfds > 0) {
		/* Clients never send fds; the daemon drops such a peer, and so do we. */
		wire_close_fds(fds, nfds);
		return -EPROTO;
	}
	/* Decoded and checked as p2pbufd does it (its arena, its decoder). */
	uint8_t mem[WIRE_DECODE_ARENA];
	struct wire_arena arena;
	P2pbuf__Request *req;
	const char *why;
	wire_arena_init(&arena, mem, sizeof(mem));
	int check = wire_decode_request(&arena, b->buf, (size_t)n, &req, &why);
	int r = req ? answer(b, sock, req, check) : -EPROTO;
	wire_arena_reset(&arena);
	return r;
}

static void on_accept(struct baseline *b)
{
	int sock = accept4(b->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = sock };

	if (sock < 0)
		return; /* EAGAIN, or the peer gave up: nothing to serve */
	if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, sock, &ev) < 0)
		close(sock);
}

static int listen_on(const char *path, int *ret_fd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0)
		return -errno;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* SIGTERM and SIGINT arrive as records on a signalfd, so the loop ends cleanly. */
static int stop_signals(int *ret_fd)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	*ret_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	return *ret_fd < 0 ? -errno : 0;
}

/* The simulated device the exports come from, declared as a policy would declare it. */
static int open_device(struct baseline *b)
{
	struct policy_device decl = { .name = "baseline", .kind = POLICY_DEVICE_SIM };
	struct device_info info;
	char msg[256];

	decl.sim_bar_size[0] = BASELINE_BAR_SIZE;
	int r = sim_ops.open(&decl, &b->dev, &info, msg, sizeof(msg));
	if (r < 0)
		fprintf(stderr, "bench-baseline: sim device: %s\n", msg);
	return r;
}

static int setup(struct baseline *b, const char *path)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int r = open_device(b);

	if (r < 0)
		return r;
	b->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (b->epfd < 0)
		return -errno;
	if ((r = listen_on(path, &b->listen_fd)) < 0 || (r = stop_signals(&b->signal_fd)) < 0)
		return r;
	ev.data.fd = b->listen_fd;
	if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->listen_fd, &ev) < 0)
		return -errno;
	ev.data.fd = b->signal_fd;
	return epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->signal_fd, &ev) < 0 ? -errno : 0;
}

static int serve(struct baseline *b)
{
	struct epoll_event evs[BASELINE_MAX_EVENTS];

	for (;;) {
		int n = epoll_wait(b->epfd, evs, BASELINE_MAX_EVENTS, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == b->signal_fd)
				return 0;
			if (fd == b->listen_fd)
				on_accept(b);
			else if (on_client(b, fd) < 0) {
				drop_kept(b, fd);
				close(fd); /* closing also takes it out of the epoll set */
			}
		}
	}
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "keep", no_argument, NULL, 'k' },
		{},
	};
	const char *path = NULL;
	bool keep_buffers = false;
	int c;

	while ((c = getopt_long(argc, argv, "s:k", longopts, NULL)) != -1) {
		if (c == 's') {
			path = optarg;
		} else if (c == 'k') {
			keep_buffers = true;
		} else {
			fprintf(stderr, "Usage: bench-baseline --socket PATH [--keep]\n");
			return 2;
		}
	}
	if (!path) {
		fprintf(stderr, "bench-baseline: --socket PATH is required\n");
		return 2;
	}
	struct baseline *b = calloc(1, sizeof(*b));
	if (!b)
		return 1;
	b->keep = keep_buffers;
	for (size_t i = 0; i < BASELINE_KEPT; i++)
		b->kept[i].fd = -1;
	int r = setup(b, path);
	if (r == 0)
		r = serve(b);
	if (r < 0)
		fprintf(stderr, "bench-baseline: %s\n", strerror(-r));
	unlink(path);
	if (b->held_at_release)
		fprintf(stderr,
			"bench-baseline: %u release(s) came while the client still held "
			"the buffer\n",
			b->held_at_release);
	for (size_t i = 0; i < BASELINE_KEPT; i++)
		if (b->kept[i].lease_id)
			kept_close(&b->kept[i]);
	sim_ops.close(b->dev);
	free(b);
	return r < 0 ? 1 : 0;
}
