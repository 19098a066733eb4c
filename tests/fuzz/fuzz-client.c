/* libFuzzer target for libp2pbuf's side of the wire: what a daemon sends, read by the library
 * a program links. The input is one record from a stand-in daemon, over a real connection
 * (p2pbuf_connect to a socket of this process, its requests answered by a thread):
 * - decoded as a Reply, it becomes the answer to the call its body belongs to (ListDevices,
 *   Export, ListLeases, Status, Reload; anything else answers a Release), with the
 *   request_id asked; a memfd comes with it when it says one fd, except for inputs of odd
 *   length, where the fd comes exactly when it says none: the fd it promised missing, or
 *   one it did not announce;
 * - anything else (events, batches, bytes that do not decode) is sent as it is, with a memfd
 *   attached for inputs of odd length, with the plain answer to a Release: ahead of it, as
 *   the daemon sends events before the reply that follows them (the call reads it), or,
 *   when the length's second bit is set, after it (the dispatch reads it); then
 *   p2pbuf_dispatch() delivers what the library queued.
 * Whatever the record says, the library must answer with a result or an error, free what it
 * made (the leak check runs after every input), close every fd it was sent and did not hand
 * to the caller (counted after every input: any memfd of the stand-in's still open in this
 * process) and never crash. A connection the library gave up on is replaced. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "p2pbuf.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char sock_path[108];
static int listen_fd = -1;

/* What the stand-in daemon sends for the next request: raw bytes first (pre, pre_len; none
 * when NULL), then the record of reply with its request_id set (a plain success when NULL)
 * and a memfd attached when with_fd. Set by the main thread before each call. An answer is
 * made and sent, and the stand-in's own copy of the memfd closed, under the lock: once the
 * main thread holds it after a call, every fd of the stand-in's that is open is one the
 * library holds. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static P2pbuf__Reply *next_reply;
static bool next_with_fd;
static bool next_pre_fd;
static bool next_pre_after; /* pre goes after the reply, not before */
static unsigned fds_sent;   /* memfds the stand-in has sent since the last count */
static const uint8_t *next_pre;
static size_t next_pre_len;

static void answer(int fd, const P2pbuf__Request *req)
{
	P2pbuf__Reply hello_reply = P2PBUF__REPLY__INIT;
	P2pbuf__HelloReply hr = P2PBUF__HELLO_REPLY__INIT;
	P2pbuf__Reply fallback = P2PBUF__REPLY__INIT;
	uint8_t buf[WIRE_MAX_RECORD];
	int memfd = -1, pre_fd = -1;

	pthread_mutex_lock(&lock);
	P2pbuf__Reply *r = next_reply ? next_reply : &fallback;
	if (req->body_case == P2PBUF__REQUEST__BODY_HELLO) {
		hr.has_major = hr.has_minor = hr.has_features = true;
		hr.major = 1;
		hr.minor = 3;
		hr.features = P2PBUF__FEATURE__FEATURE_EVENT_BATCH;
		hr.server_version = "fuzz";
		hello_reply.body_case = P2PBUF__REPLY__BODY_HELLO;
		hello_reply.hello = &hr;
		r = &hello_reply;
	} else if (next_with_fd) {
		memfd = memfd_create("fuzz", MFD_CLOEXEC);
	}
	r->has_request_id = true;
	r->request_id = req->request_id;
	ssize_t len = wire_pack_reply(r, buf, sizeof(buf));
	bool pre = next_pre && req->body_case != P2PBUF__REQUEST__BODY_HELLO;
	if (pre && next_pre_fd)
		pre_fd = memfd_create("fuzz", MFD_CLOEXEC);
	if (pre && !next_pre_after)
		(void)wire_send(fd, next_pre, next_pre_len, pre_fd >= 0 ? &pre_fd : NULL,
				pre_fd >= 0);
	if (len >= 0)
		(void)wire_send(fd, buf, (size_t)len, memfd >= 0 ? &memfd : NULL, memfd >= 0);
	if (pre && next_pre_after)
		(void)wire_send(fd, next_pre, next_pre_len, pre_fd >= 0 ? &pre_fd : NULL,
				pre_fd >= 0);
	fds_sent += (memfd >= 0) + (pre_fd >= 0);
	if (memfd >= 0)
		close(memfd);
	if (pre_fd >= 0)
		close(pre_fd);
	pthread_mutex_unlock(&lock);
}

/* The stand-in's memfds open in this process, once it has finished answering. The caller
 * closed what a call returned, so each one is an fd the library received and kept. None
 * sent since the last count (most inputs), none can be open: the table is not read. */
static int memfds_open(void)
{
	char link[64];
	int n = 0;

	pthread_mutex_lock(&lock);
	if (!fds_sent) {
		pthread_mutex_unlock(&lock);
		return 0;
	}
	fds_sent = 0;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		abort();
	for (struct dirent *e; (e = readdir(d));) {
		ssize_t len = readlinkat(dirfd(d), e->d_name, link, sizeof(link) - 1);
		if (len > 0) {
			link[len] = '\0';
			n += strncmp(link, "/memfd:fuzz ", 12) == 0;
		}
	}
	closedir(d);
	pthread_mutex_unlock(&lock);
	return n;
}

/* The stand-in daemon: accept a connection, answer its requests until it goes. */
static void *serve(void *arg)
{
	(void)arg;
	for (;;) {
		int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		for (;;) {
			uint8_t buf[WIRE_MAX_RECORD];
			int fds[WIRE_MAX_FDS];
			size_t nfds = 0;
			ssize_t n = wire_recv_wait(fd, buf, sizeof(buf), fds, &nfds);
			if (n <= 0)
				break;
			wire_close_fds(fds, nfds);
			P2pbuf__Request *req = p2pbuf__request__unpack(NULL, (size_t)n, buf);
			if (!req)
				break;
			answer(fd, req);
			p2pbuf__request__free_unpacked(req, NULL);
		}
		close(fd);
	}
	return NULL;
}

static struct p2pbuf *conn;

static void on_event(struct p2pbuf *c, const struct p2pbuf_event *ev, void *userdata)
{
	(void)c;
	(void)userdata;
	/* Read every field a handler may read; a string must be terminated. */
	if (ev->device && strlen(ev->device) > WIRE_MAX_RECORD)
		abort();
	if (ev->message && strlen(ev->message) > WIRE_MAX_RECORD)
		abort();
}

static char dir[] = "/tmp/p2pbuf-fuzz-client-XXXXXX";

static void remove_socket(void)
{
	unlink(sock_path);
	rmdir(dir);
}

static void setup(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	pthread_t tid;

	if (!mkdtemp(dir))
		abort();
	snprintf(sock_path, sizeof(sock_path), "%s/sock", dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
	listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(listen_fd, 4) < 0)
		abort();
	atexit(remove_socket);
	if (pthread_create(&tid, NULL, serve, NULL) != 0)
		abort();
}

static void reconnect(void)
{
	p2pbuf_disconnect(conn);
	conn = NULL;
	if (p2pbuf_connect(sock_path, &conn) < 0)
		abort();
	p2pbuf_set_event_handler(conn, on_event, NULL);
}

/* The call reply answers (a plain success to a Release when NULL), with pre[0..len). The
 * low bits of how: 1, the fds sent disagree with what reply says, or one comes with pre;
 * 2, pre goes after the reply. */
static int call_for(P2pbuf__Reply *reply, const uint8_t *pre, size_t len, unsigned how)
{
	bool odd = how & 1;
	int r;

	pthread_mutex_lock(&lock);
	next_reply = reply;
	next_with_fd = reply && (reply->has_nfds && reply->nfds == 1) != odd;
	next_pre_fd = pre && odd;
	next_pre_after = how & 2;
	next_pre = pre;
	next_pre_len = len;
	pthread_mutex_unlock(&lock);
	switch (reply ? reply->body_case : P2PBUF__REPLY__BODY__NOT_SET) {
	case P2PBUF__REPLY__BODY_LIST_DEVICES: {
		struct p2pbuf_device *devs;
		size_t n;
		r = p2pbuf_list_devices(conn, &devs, &n);
		if (r >= 0)
			p2pbuf_devices_free(devs, n);
		break;
	}
	case P2PBUF__REPLY__BODY_EXPORT: {
		uint64_t id, size;
		r = p2pbuf_export(conn, "fuzz0", 0, NULL, 0, "fuzz", &id, &size);
		if (r >= 0)
			close(r);
		break;
	}
	case P2PBUF__REPLY__BODY_LIST_LEASES: {
		struct p2pbuf_lease *leases;
		size_t n;
		r = p2pbuf_list_leases(conn, true, &leases, &n);
		if (r >= 0)
			p2pbuf_leases_free(leases, n);
		break;
	}
	case P2PBUF__REPLY__BODY_STATUS: {
		struct p2pbuf_status st;
		r = p2pbuf_status(conn, &st);
		if (r >= 0)
			p2pbuf_status_free(&st);
		break;
	}
	case P2PBUF__REPLY__BODY_RELOAD: {
		struct p2pbuf_reload rl;
		r = p2pbuf_reload(conn, &rl);
		if (r >= 0 || r == -EINVAL)
			p2pbuf_reload_free(&rl);
		break;
	}
	default:
		r = p2pbuf_release(conn, 1);
		break;
	}
	pthread_mutex_lock(&lock);
	next_reply = NULL;
	next_with_fd = next_pre_fd = next_pre_after = false;
	next_pre = NULL;
	pthread_mutex_unlock(&lock);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > WIRE_MAX_RECORD)
		return -1;
	if (listen_fd < 0)
		setup();
	if (!conn)
		reconnect();
	P2pbuf__ServerMessage *msg = p2pbuf__server_message__unpack(NULL, size, data);
	int r;
	if (msg && msg->body_case == P2PBUF__SERVER_MESSAGE__BODY_REPLY) {
		r = call_for(msg->reply, NULL, 0, size & 3);
	} else {
		r = call_for(NULL, data, size, size & 3);
		/* Once the stand-in is done answering, what it sent after the reply is there. */
		pthread_mutex_lock(&lock);
		pthread_mutex_unlock(&lock);
		if (r >= 0)
			r = p2pbuf_dispatch(conn);
	}
	if (msg)
		p2pbuf__server_message__free_unpacked(msg, NULL);
	/* A connection the library may have given up on is not reused. */
	if (r < 0)
		reconnect();
	int kept = memfds_open();
	if (kept) {
		fprintf(stderr, "fuzz-client: %d fd(s) received by libp2pbuf still open\n", kept);
		abort();
	}
	return 0;
}
