/* libp2pbuf: the connection, the request/reply engine and the event queue.
 *
 * Every call is one Request record; the daemon answers with a Reply carrying the same request
 * id, and may send Event records at any time, so a blocking call reads until its own Reply
 * arrives and queues the events it passes. The requests themselves, and the deep copies that
 * keep protobuf-c's types away from the caller, are in requests.c. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "libp2pbuf-private.h"

/* Events kept while nobody dispatches. A program that never dispatches must not make us grow
 * without bound; when the queue is full the oldest event is dropped and counted. The ring
 * starts small and doubles as needed: most connections only ever hold an event or two, and
 * 64 KiB zeroed for each one's first event was most of what a thousand holders told to let
 * go cost their process. */
#define EVENT_QUEUE_MAX 1024
#define EVENT_QUEUE_MIN 16

/* Records read by one p2pbuf_dispatch(), so that a flood from the daemon cannot keep a
 * "never blocks" call busy forever; the socket stays readable and the next poll says so. */
#define DISPATCH_READ_MAX 64

/* The largest errno a daemon may report; anything else in Reply.error is a protocol error. */
#define ERRNO_MAX 4095

struct queued_event {
	enum p2pbuf_event_type type;
	uint64_t lease_id;
	enum p2pbuf_reason reason;
	int64_t deadline_ms;
	char *device;
	enum p2pbuf_device_state state;
	uint32_t generation;
	char *message;
	unsigned reclaimed;
};

/* A lease this connection exported, with the token that reclaims it after a reconnect. */
struct tracked_lease {
	uint64_t id;
	uint8_t token[WIRE_TOKEN_LEN];
};

struct p2pbuf {
	int fd;
	uint64_t last_request_id;
	/* Why the connection is unusable (< 0), or 0. The first call to see it returns it; later
	 * ones return -ENOTCONN. */
	int error;
	bool error_reported;
	char *last_message;
	char *server_version;
	p2pbuf_event_fn event_fn;
	void *event_userdata;

	struct queued_event *queue; /* ring of queue_cap (<= EVENT_QUEUE_MAX), made on first use */
	size_t queue_cap;
	size_t queue_head;
	size_t queue_len;
	uint64_t events_dropped; /* not exposed by the 1.0 API; kept for debuggers */

	/* p2pbuf_disconnect() from inside an event callback must not free conn under
	 * p2pbuf_dispatch()'s feet: it is deferred until the outermost dispatch returns. */
	unsigned dispatch_depth;
	bool disconnect_pending;

	/* Reconnecting (p2pbuf_set_reconnect): where, for how long, and what to take back. */
	char *path;
	int reconnect_ms;
	bool reconnecting;
	struct tracked_lease *leases;
	size_t n_leases, cap_leases;
	bool subscribed, subscribed_all;

	uint8_t record[WIRE_MAX_RECORD];
};

static void queued_event_clear(struct queued_event *ev)
{
	free(ev->device);
	free(ev->message);
	*ev = (struct queued_event){ 0 };
}

static void conn_free(struct p2pbuf *conn)
{
	if (conn->fd >= 0)
		close(conn->fd);
	for (size_t i = 0; i < conn->queue_len; i++)
		queued_event_clear(&conn->queue[(conn->queue_head + i) % conn->queue_cap]);
	free(conn->queue);
	free(conn->last_message);
	free(conn->server_version);
	free(conn->path);
	free(conn->leases);
	free(conn);
}

/* Mark the connection unusable. Shutting the socket down tells the daemon at once that we are
 * gone, as it would after a protocol violation on its side. Returns error (< 0, so that
 * callers can rely on "0 means success") for chaining. */
static int conn_fail(struct p2pbuf *conn, int error)
{
	if (error >= 0)
		error = -EIO;
	if (conn->error == 0) {
		conn->error = error;
		conn->error_reported = true;
		if (conn->fd >= 0)
			shutdown(conn->fd, SHUT_RDWR);
	}
	return error;
}

/* 0 while the connection works; otherwise its error once, then -ENOTCONN. */
static int conn_usable(struct p2pbuf *conn)
{
	if (conn->error == 0)
		return 0;
	if (!conn->error_reported) {
		conn->error_reported = true;
		return conn->error;
	}
	return -ENOTCONN;
}

/* Replace the last message; NULL clears it. Out of memory leaves it empty, which is still a
 * valid (if less helpful) answer. */
static void set_message(struct p2pbuf *conn, const char *message)
{
	free(conn->last_message);
	conn->last_message = message && message[0] ? strdup(message) : NULL;
}

/* Wait until fd is ready for events (no timeout: callers block by contract). A hang-up or an
 * error counts as ready so that the following read or write reports it. */
static int wait_fd(int fd, short events, short *ret_revents)
{
	struct pollfd pfd = { .fd = fd, .events = events };

	for (;;) {
		int n = poll(&pfd, 1, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (pfd.revents & POLLNVAL)
			return -EBADF;
		*ret_revents = pfd.revents;
		return 0;
	}
}

/* Double the ring (up to EVENT_QUEUE_MAX), its events moved to the front in order. */
static int queue_grow(struct p2pbuf *conn)
{
	size_t cap = conn->queue_cap ? 2 * conn->queue_cap : EVENT_QUEUE_MIN;

	if (cap > EVENT_QUEUE_MAX)
		cap = EVENT_QUEUE_MAX;
	struct queued_event *q = malloc(cap * sizeof(*q));
	if (!q)
		return -ENOMEM;
	for (size_t i = 0; i < conn->queue_len; i++)
		q[i] = conn->queue[(conn->queue_head + i) % conn->queue_cap];
	free(conn->queue);
	conn->queue = q;
	conn->queue_cap = cap;
	conn->queue_head = 0;
	return 0;
}

/* Append ev (whose strings the queue now owns), dropping the oldest event when full (or
 * when it cannot grow). */
static void queue_push(struct p2pbuf *conn, struct queued_event *ev)
{
	if (conn->queue_len == conn->queue_cap &&
	    (conn->queue_cap == EVENT_QUEUE_MAX || queue_grow(conn) < 0)) {
		if (conn->queue_cap == 0) {
			queued_event_clear(ev);
			conn->events_dropped++;
			return;
		}
		queued_event_clear(&conn->queue[conn->queue_head]);
		conn->queue_head = (conn->queue_head + 1) % conn->queue_cap;
		conn->queue_len--;
		conn->events_dropped++;
	}
	conn->queue[(conn->queue_head + conn->queue_len) % conn->queue_cap] = *ev;
	conn->queue_len++;
	*ev = (struct queued_event){ 0 };
}

static bool queue_pop(struct p2pbuf *conn, struct queued_event *ret_ev)
{
	if (conn->queue_len == 0)
		return false;
	*ret_ev = conn->queue[conn->queue_head];
	conn->queue[conn->queue_head] = (struct queued_event){ 0 };
	conn->queue_head = (conn->queue_head + 1) % conn->queue_cap;
	conn->queue_len--;
	return true;
}

static int event_from_lease_revoking(const P2pbuf__LeaseRevoking *m, struct queued_event *ev)
{
	if (!m->has_lease_id)
		return -EPROTO;
	ev->type = P2PBUF_EVENT_LEASE_REVOKING;
	ev->lease_id = m->lease_id;
	ev->reason = (enum p2pbuf_reason)m->reason;
	ev->deadline_ms = m->deadline_ms;
	return 0;
}

static int event_from_lease_revoked(const P2pbuf__LeaseRevoked *m, struct queued_event *ev)
{
	if (!m->has_lease_id)
		return -EPROTO;
	ev->type = P2PBUF_EVENT_LEASE_REVOKED;
	ev->lease_id = m->lease_id;
	ev->reason = (enum p2pbuf_reason)m->reason;
	return 0;
}

static int event_from_device_state(const P2pbuf__DeviceState *m, struct queued_event *ev)
{
	if (!m->device)
		return -EPROTO;
	ev->type = P2PBUF_EVENT_DEVICE_STATE;
	ev->state = (enum p2pbuf_device_state)m->state;
	ev->generation = m->generation;
	ev->device = strdup(m->device);
	ev->message = m->message ? strdup(m->message) : NULL;
	if (!ev->device || (m->message && !ev->message))
		return -ENOMEM;
	return 0;
}

/* An event record: one Event, or an EventBatch (1.3) of several in order. */
static bool is_event(const P2pbuf__ServerMessage *msg)
{
	return msg->body_case == P2PBUF__SERVER_MESSAGE__BODY_EVENT ||
	       msg->body_case == P2PBUF__SERVER_MESSAGE__BODY_EVENTS;
}

static int take_event(struct p2pbuf *conn, const P2pbuf__Event *m);

/* Queue the events of an event record (is_event()). */
static int take_events(struct p2pbuf *conn, const P2pbuf__ServerMessage *msg)
{
	if (msg->body_case == P2PBUF__SERVER_MESSAGE__BODY_EVENT)
		return take_event(conn, msg->event);
	for (size_t i = 0; i < msg->events->n_events; i++) {
		int r = take_event(conn, msg->events->events[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Decode an Event record into the queue. An event body this library does not know (a newer
 * minor version) is skipped; a known one with its key fields missing is a protocol error. */
static int take_event(struct p2pbuf *conn, const P2pbuf__Event *m)
{
	struct queued_event ev = { 0 };
	int r = 0;

	switch (m->body_case) {
	case P2PBUF__EVENT__BODY_LEASE_REVOKING:
		r = event_from_lease_revoking(m->lease_revoking, &ev);
		break;
	case P2PBUF__EVENT__BODY_LEASE_REVOKED:
		r = event_from_lease_revoked(m->lease_revoked, &ev);
		break;
	case P2PBUF__EVENT__BODY_DEVICE_STATE:
		r = event_from_device_state(m->device_state, &ev);
		break;
	default:
		return 0;
	}
	if (r == -ENOMEM) {
		/* Losing one event to memory pressure beats failing the connection. */
		queued_event_clear(&ev);
		conn->events_dropped++;
		return 0;
	}
	if (r < 0) {
		queued_event_clear(&ev);
		return conn_fail(conn, r);
	}
	/* A lease that ended is not reclaimed after a reconnect. */
	if (ev.type == P2PBUF_EVENT_LEASE_REVOKED)
		conn_untrack_lease(conn, ev.lease_id);
	queue_push(conn, &ev);
	return 0;
}

/* What a failed wire_recv() (n <= 0, not -EAGAIN) means for the connection. */
static int recv_error(ssize_t n)
{
	if (n == 0 || n == -ECONNRESET || n == -EPIPE)
		return -ECONNRESET;
	if (n == -EMSGSIZE)
		return -EPROTO;
	return n >= -ERRNO_MAX ? (int)n : -EIO;
}

/* Read one record, waiting for it when wait is set (and the socket is a blocking one, as
 * p2pbuf_connect makes it). Returns 0 with the decoded message and its fds, -EAGAIN when
 * nothing is waiting, or a connection error (the connection is then failed). */
static int read_record(struct p2pbuf *conn, bool wait, P2pbuf__ServerMessage **ret_msg,
		       int fds[WIRE_MAX_FDS], size_t *ret_nfds)
{
	P2pbuf__ServerMessage *msg;
	size_t nfds = 0;
	ssize_t n;

	n = (wait ? wire_recv_wait : wire_recv)(conn->fd, conn->record, sizeof(conn->record), fds,
						&nfds);
	if (n == -EAGAIN)
		return -EAGAIN;
	/* Failures return their own constant rather than conn_fail()'s result, so that static
	 * analyzers see "0 means success" even where they stop following calls. */
	if (n <= 0) {
		int r = recv_error(n);
		conn_fail(conn, r);
		return r < 0 ? r : -EIO;
	}
	/* protobuf-c says NULL for both malformed input and no memory; both end the
	 * connection, since the record cannot be read again. */
	msg = p2pbuf__server_message__unpack(NULL, (size_t)n, conn->record);
	if (!msg || (msg->body_case != P2PBUF__SERVER_MESSAGE__BODY_REPLY && !is_event(msg))) {
		if (msg)
			p2pbuf__server_message__free_unpacked(msg, NULL);
		wire_close_fds(fds, nfds);
		conn_fail(conn, -EPROTO);
		return -EPROTO;
	}
	*ret_msg = msg;
	*ret_nfds = nfds;
	return 0;
}

/* Read one record without blocking and handle it outside of any call: events are queued, a
 * Reply (no request is outstanding) is a protocol error. Returns 1 when a record was handled,
 * 0 when nothing was waiting, or -errno. */
static int pump_one(struct p2pbuf *conn)
{
	P2pbuf__ServerMessage *msg;
	int fds[WIRE_MAX_FDS];
	size_t nfds;
	int r;

	r = read_record(conn, false, &msg, fds, &nfds);
	if (r != 0)
		return r == -EAGAIN ? 0 : r;
	if (!is_event(msg) || nfds > 0) {
		wire_close_fds(fds, nfds);
		r = conn_fail(conn, -EPROTO);
	} else {
		r = take_events(conn, msg);
	}
	p2pbuf__server_message__free_unpacked(msg, NULL);
	return r < 0 ? r : 1;
}

/* Send req, waiting for room in the socket if it is full. While waiting we keep reading, so
 * that a daemon blocked on sending us events cannot deadlock with us. */
static int send_request(struct p2pbuf *conn, const P2pbuf__Request *req)
{
	for (;;) {
		short revents = 0;
		int r = wire_send_msg(conn->fd, &req->base, NULL, 0);
		if (r == 0)
			return 0;
		if (r == -EMSGSIZE)
			return r; /* nothing was sent: the connection is still fine */
		if (r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN)
			return conn_fail(conn, -ECONNRESET);
		if (r != -EAGAIN)
			return conn_fail(conn, r);
		r = wait_fd(conn->fd, POLLIN | POLLOUT, &revents);
		if (r < 0)
			return conn_fail(conn, r);
		if (revents & (POLLIN | POLLHUP | POLLERR)) {
			r = pump_one(conn);
			if (r < 0)
				return r;
		}
	}
}

/* Check the fds that came with a Reply: exactly nfds must have arrived, and the call must
 * expect that many (one for a successful Export, none otherwise). */
static int check_reply_fds(const P2pbuf__Reply *reply, size_t nfds, size_t want)
{
	uint32_t said = reply->has_nfds ? reply->nfds : 0;

	if (said != nfds || nfds != want)
		return -EPROTO;
	return 0;
}

/* Read records until the Reply to request id arrives, queueing events on the way. */
static int await_reply(struct p2pbuf *conn, uint64_t id, P2pbuf__ServerMessage **ret_msg,
		       int fds[WIRE_MAX_FDS], size_t *ret_nfds)
{
	for (;;) {
		P2pbuf__ServerMessage *msg;
		size_t nfds;
		short revents;
		/* A blocking call waits in recvmsg itself: polling first costs two more system
		 * calls per request. A socket the program made non-blocking still works. */
		int r = read_record(conn, true, &msg, fds, &nfds);

		if (r == -EAGAIN) {
			r = wait_fd(conn->fd, POLLIN, &revents);
			if (r < 0)
				return conn_fail(conn, r);
			continue;
		}
		if (r != 0)
			return r;
		if (is_event(msg) && nfds == 0) {
			r = take_events(conn, msg);
			p2pbuf__server_message__free_unpacked(msg, NULL);
			if (r < 0)
				return r;
			continue;
		}
		if (msg->body_case != P2PBUF__SERVER_MESSAGE__BODY_REPLY ||
		    !msg->reply->has_request_id || msg->reply->request_id != id) {
			wire_close_fds(fds, nfds);
			p2pbuf__server_message__free_unpacked(msg, NULL);
			return conn_fail(conn, -EPROTO);
		}
		*ret_msg = msg;
		*ret_nfds = nfds;
		return 0;
	}
}

/* A reply whose error is not 0: hand the daemon's errno and message to the caller. */
static int reply_error(struct p2pbuf *conn, const P2pbuf__Reply *reply, size_t nfds)
{
	if (reply->error > 0 || reply->error < -ERRNO_MAX || nfds > 0 ||
	    (reply->has_nfds && reply->nfds > 0))
		return conn_fail(conn, -EPROTO);
	set_message(conn, reply->message);
	return reply->error;
}

/* Judge the Reply to our request: an error goes to the caller with its message; a success must
 * carry exactly the fds the call expects. Takes msg and the fds in every case. */
static int take_reply(struct p2pbuf *conn, P2pbuf__ServerMessage *msg, int fds[WIRE_MAX_FDS],
		      size_t nfds, int *ret_fd, P2pbuf__ServerMessage **ret_msg)
{
	const P2pbuf__Reply *reply = msg->reply;
	int r = 0;

	if (reply->has_error && reply->error != 0)
		r = reply_error(conn, reply, nfds);
	else if (check_reply_fds(reply, nfds, ret_fd ? 1 : 0) < 0)
		r = conn_fail(conn, -EPROTO);
	if (r < 0) {
		wire_close_fds(fds, nfds);
		p2pbuf__server_message__free_unpacked(msg, NULL);
		return r;
	}
	if (ret_fd)
		*ret_fd = fds[0];
	*ret_msg = msg;
	return 0;
}

static int reconnect(struct p2pbuf *conn);

/* Whether a lost connection should be made again: asked for, and something to take back (a
 * lease, a subscription). A daemon that stopped ended every lease first, so a client of a
 * stopped service does not start it again through socket activation. */
static bool wants_reconnect(const struct p2pbuf *conn)
{
	return conn->error == -ECONNRESET && conn->reconnect_ms > 0 && !conn->reconnecting &&
	       (conn->n_leases > 0 || conn->subscribed);
}

int conn_call(struct p2pbuf *conn, P2pbuf__Request *req, int *ret_fd,
	      P2pbuf__ServerMessage **ret_msg)
{
	P2pbuf__ServerMessage *msg;
	int fds[WIRE_MAX_FDS];
	size_t nfds;
	const char *why = NULL;
	int r;

	/* A call on a lost connection that may be made again makes it again first. */
	if (wants_reconnect(conn))
		reconnect(conn);
	r = conn_usable(conn);
	if (r < 0)
		return r;
	set_message(conn, NULL);
	/* The daemon would refuse it anyway; saying so here costs no round trip and gives the
	 * same explanation. */
	r = wire_check_request(req, &why);
	if (r < 0) {
		set_message(conn, why);
		return r;
	}
	req->has_request_id = true;
	req->request_id = ++conn->last_request_id;
	r = send_request(conn, req);
	if (r < 0)
		return r;
	r = await_reply(conn, req->request_id, &msg, fds, &nfds);
	if (r != 0)
		return r;
	return take_reply(conn, msg, fds, nfds, ret_fd, ret_msg);
}

int conn_protocol_error(struct p2pbuf *conn)
{
	return conn_fail(conn, -EPROTO);
}

static int connect_socket(const char *path, int *ret_fd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);

	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* A Unix socket connect interrupted by a signal leaves the socket unconnected, so it
	 * can simply be tried again. */
	do
		r = connect(fd, (const struct sockaddr *)&sa, sizeof(sa));
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

static const char *socket_path(const char *path)
{
	const char *env;

	if (path && path[0])
		return path;
	/* Whoever runs a setuid or setgid program must not point it at another socket. */
	env = secure_getenv("P2PBUF_SOCKET");
	return env && env[0] ? env : P2PBUF_DEFAULT_SOCKET;
}

/* Exchange Hello; on success remember the daemon's version string. */
static int hello(struct p2pbuf *conn)
{
	P2pbuf__Hello h = P2PBUF__HELLO__INIT;
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__ServerMessage *msg;
	const P2pbuf__HelloReply *hr;
	char name[WIRE_MAX_STRING + 1];
	int r;

	/* Only a label for the daemon's logs: cut rather than refuse an overlong one. */
	snprintf(name, sizeof(name), "%s", program_invocation_short_name);
	h.has_major = h.has_minor = h.has_features = true;
	h.major = P2PBUF_PROTO_VERSION_MAJOR;
	h.minor = P2PBUF_PROTO_VERSION_MINOR;
	/* Several events in one record: a fan-out of hundreds costs a few reads, not hundreds. */
	h.features = P2PBUF__FEATURE__FEATURE_EVENT_BATCH;
	h.client_name = name;
	req.body_case = P2PBUF__REQUEST__BODY_HELLO;
	req.hello = &h;

	r = conn_call(conn, &req, NULL, &msg);
	if (r != 0)
		return r;
	hr = msg->reply->body_case == P2PBUF__REPLY__BODY_HELLO ? msg->reply->hello : NULL;
	if (!hr)
		r = conn_protocol_error(conn);
	else if (hr->has_major && hr->major != P2PBUF_PROTO_VERSION_MAJOR)
		r = -EPROTONOSUPPORT;
	else if (hr->server_version && !(conn->server_version = strdup(hr->server_version)))
		r = -ENOMEM;
	p2pbuf__server_message__free_unpacked(msg, NULL);
	return r;
}

int p2pbuf_connect(const char *path, struct p2pbuf **ret_conn)
{
	struct p2pbuf *conn;
	int r;

	if (!ret_conn)
		return -EINVAL;
	conn = calloc(1, sizeof(*conn));
	if (!conn)
		return -ENOMEM;
	conn->fd = -1;
	conn->path = strdup(socket_path(path));
	if (!conn->path) {
		free(conn);
		return -ENOMEM;
	}
	r = connect_socket(conn->path, &conn->fd);
	if (r >= 0)
		r = hello(conn);
	if (r < 0) {
		conn_free(conn);
		return r;
	}
	*ret_conn = conn;
	return 0;
}

void p2pbuf_disconnect(struct p2pbuf *conn)
{
	if (!conn)
		return;
	if (conn->dispatch_depth > 0) {
		/* Called from an event callback: let the daemon see us go now, free later. */
		if (conn->fd >= 0)
			close(conn->fd);
		conn->fd = -1;
		conn->error = -ENOTCONN;
		conn->error_reported = true;
		conn->disconnect_pending = true;
		return;
	}
	conn_free(conn);
}

const char *p2pbuf_last_message(const struct p2pbuf *conn)
{
	return conn && conn->last_message ? conn->last_message : "";
}

const char *p2pbuf_server_version(const struct p2pbuf *conn)
{
	return conn && conn->server_version ? conn->server_version : "";
}

void p2pbuf_set_event_handler(struct p2pbuf *conn, p2pbuf_event_fn fn, void *userdata)
{
	if (!conn)
		return;
	conn->event_fn = fn;
	conn->event_userdata = userdata;
}

int p2pbuf_get_fd(const struct p2pbuf *conn)
{
	return conn ? conn->fd : -EINVAL;
}

bool p2pbuf_pending(const struct p2pbuf *conn)
{
	return conn && conn->queue_len > 0;
}

/* Read what the socket has, up to DISPATCH_READ_MAX records, and only while the queue has
 * room for a whole EventBatch: what stays in the socket waits for the next dispatch rather
 * than pushing out events not yet delivered. */
static int read_available(struct p2pbuf *conn)
{
	for (unsigned i = 0; i < DISPATCH_READ_MAX && conn->error == 0 &&
			     conn->queue_len <= EVENT_QUEUE_MAX - WIRE_BATCH_MAX_EVENTS;
	     i++) {
		int r = pump_one(conn);
		if (r <= 0)
			return r;
	}
	return 0;
}

static void deliver(struct p2pbuf *conn, const struct queued_event *q)
{
	struct p2pbuf_event ev = {
		.type = q->type,
		.lease_id = q->lease_id,
		.reason = q->reason,
		.deadline_ms = q->deadline_ms,
		.device = q->device,
		.state = q->state,
		.generation = q->generation,
		.message = q->message,
		.reclaimed = q->reclaimed,
	};

	if (conn->event_fn)
		conn->event_fn(conn, &ev, conn->event_userdata);
}

int p2pbuf_dispatch(struct p2pbuf *conn)
{
	struct queued_event q;
	int n = 0, r = 0;

	if (!conn)
		return -EINVAL;
	/* Only reachable from a callback that has already disconnected: leave conn alone. */
	if (conn->disconnect_pending)
		return -ENOTCONN;
	if (conn->error == 0)
		r = read_available(conn);
	/* The daemon went away (a restart): make the connection again if asked to. */
	if (wants_reconnect(conn))
		r = reconnect(conn);

	conn->dispatch_depth++;
	/* Events queued by calls made from a callback are delivered in this same loop. */
	while (!conn->disconnect_pending && n < INT32_MAX && queue_pop(conn, &q)) {
		deliver(conn, &q);
		queued_event_clear(&q);
		n++;
	}
	conn->dispatch_depth--;

	if (conn->disconnect_pending) {
		/* A callback disconnected, so n > 0 in fact; never 0 either way, for 0 would
		 * let p2pbuf_wait() go on with conn. */
		if (conn->dispatch_depth == 0)
			conn_free(conn);
		return n > 0 ? n : -ENOTCONN;
	}
	if (n > 0) {
		/* Report the failure on the next call instead of hiding these events. */
		if (r < 0)
			conn->error_reported = false;
		return n;
	}
	if (r < 0)
		return r;
	return conn_usable(conn);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int p2pbuf_wait(struct p2pbuf *conn, int timeout_ms)
{
	int64_t deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : -1;

	if (!conn)
		return -EINVAL;
	for (;;) {
		struct pollfd pfd = { .fd = conn->fd, .events = POLLIN };
		int left = -1, n, r;

		if (conn->queue_len > 0 || conn->error != 0)
			return p2pbuf_dispatch(conn);
		if (deadline >= 0) {
			int64_t d = deadline - now_ms();
			left = d > 0 ? (int)d : 0;
		}
		n = poll(&pfd, 1, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		r = p2pbuf_dispatch(conn);
		if (r != 0)
			return r;
		if (deadline >= 0 && now_ms() >= deadline)
			return 0;
	}
}

/* ---- reconnecting (p2pbuf_set_reconnect) ---- */

void conn_track_lease(struct p2pbuf *conn, uint64_t id, const uint8_t *token, size_t len)
{
	if (len != WIRE_TOKEN_LEN)
		return; /* a daemon older than 1.1: nothing to reclaim with */
	if (conn->n_leases == conn->cap_leases) {
		size_t cap = conn->cap_leases ? conn->cap_leases * 2 : 16;
		struct tracked_lease *t = reallocarray(conn->leases, cap, sizeof(*t));
		if (!t)
			return; /* the lease works; only a reconnect would not take it back */
		conn->leases = t;
		conn->cap_leases = cap;
	}
	conn->leases[conn->n_leases].id = id;
	memcpy(conn->leases[conn->n_leases].token, token, WIRE_TOKEN_LEN);
	conn->n_leases++;
}

void conn_untrack_lease(struct p2pbuf *conn, uint64_t id)
{
	for (size_t i = 0; i < conn->n_leases; i++)
		if (conn->leases[i].id == id) {
			conn->leases[i] = conn->leases[--conn->n_leases];
			return;
		}
}

void conn_track_subscription(struct p2pbuf *conn, bool all)
{
	conn->subscribed = true;
	conn->subscribed_all = all;
}

int p2pbuf_set_reconnect(struct p2pbuf *conn, int timeout_ms)
{
	if (!conn || timeout_ms < 0)
		return -EINVAL;
	conn->reconnect_ms = timeout_ms;
	return 0;
}

static int reclaim(struct p2pbuf *conn, const struct tracked_lease *t)
{
	P2pbuf__Reclaim body = P2PBUF__RECLAIM__INIT;
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__ServerMessage *msg = NULL;

	body.has_lease_id = body.has_token = true;
	body.lease_id = t->id;
	body.token = (ProtobufCBinaryData){ WIRE_TOKEN_LEN, (uint8_t *)t->token };
	req.body_case = P2PBUF__REQUEST__BODY_RECLAIM;
	req.reclaim = &body;
	int r = conn_call(conn, &req, NULL, &msg);
	if (msg)
		p2pbuf__server_message__free_unpacked(msg, NULL);
	return r;
}

static void pause_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Connect and say Hello, with growing pauses, until the deadline. */
static int connect_again(struct p2pbuf *conn, int64_t deadline)
{
	for (int pause = 20;; pause = pause < 500 ? pause * 2 : 1000) {
		int fd, r = connect_socket(conn->path, &fd);
		if (r == 0) {
			conn->fd = fd;
			conn->error = 0;
			conn->error_reported = false;
			free(conn->server_version);
			conn->server_version = NULL;
			r = hello(conn);
			if (r == 0)
				return 0;
			close(conn->fd);
			conn->fd = -1;
		}
		if (now_ms() + pause > deadline)
			return r < 0 ? r : -ETIMEDOUT;
		pause_ms(pause);
	}
}

/* Make the lost connection again, take back its leases, subscribe again, and queue the
 * events that tell the program. On failure the connection stays lost (-ECONNRESET). */
static int reconnect(struct p2pbuf *conn)
{
	struct queued_event ev = { .type = P2PBUF_EVENT_RECONNECTED };
	int64_t deadline = now_ms() + conn->reconnect_ms;
	int r;

	conn->reconnecting = true;
	if (conn->fd >= 0)
		close(conn->fd);
	conn->fd = -1;
	r = connect_again(conn, deadline);
	if (r < 0) {
		conn->error = -ECONNRESET;
		conn->error_reported = false;
		conn->reconnecting = false;
		return -ECONNRESET;
	}
	for (size_t i = 0; i < conn->n_leases;) {
		if (reclaim(conn, &conn->leases[i]) == 0) {
			ev.reclaimed++;
			i++;
			continue;
		}
		if (conn->error)
			break; /* lost again: the next dispatch tries again */
		struct queued_event gone = { .type = P2PBUF_EVENT_LEASE_REVOKED,
					     .lease_id = conn->leases[i].id,
					     .reason = P2PBUF_REASON_RESTART };
		queue_push(conn, &gone);
		conn->leases[i] = conn->leases[--conn->n_leases];
	}
	if (conn->error == 0 && conn->subscribed)
		p2pbuf_subscribe(conn, conn->subscribed_all);
	conn->reconnecting = false;
	if (conn->error)
		return conn->error;
	queue_push(conn, &ev);
	return 0;
}
