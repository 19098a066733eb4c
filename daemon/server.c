/* The listening socket and the connections: accept with the peer's identity, read records,
 * hand decoded requests to the dispatch table, and send replies and events. Only this file
 * knows about sockets and connections. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "daemon.h"
#include "log.h"
#include "clock.h"
#include "macro.h"

#define DEFAULT_SOCKET_DIR "/run/p2pbufd"
#define DEFAULT_SOCKET DEFAULT_SOCKET_DIR "/p2pbufd.sock"
#define RECORDS_PER_WAKEUP 16 /* fairness: one busy client cannot starve the rest */

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);

/* The peer's identity, once: uid, gid and pid from SO_PEERCRED, supplementary groups from
 * SO_PEERGROUPS. Decisions use uid and groups, never the pid. */
static int peer_identity(struct conn *c)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	c->pid = cred.pid;
	c->peer.uid = cred.uid;
	c->peer.gid = cred.gid;
	len = sizeof(c->groups);
	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERGROUPS, c->groups, &len) < 0) {
		/* ERANGE: more groups than we keep; decide on the primary group alone. */
		if (errno != ERANGE)
			return -errno;
		len = 0;
	}
	c->peer.groups = c->groups;
	c->peer.n_groups = len / sizeof(gid_t);
	return 0;
}

static void conn_free(struct conn *c)
{
	struct outmsg *m;

	while ((m = STAILQ_FIRST(&c->outq))) {
		STAILQ_REMOVE_HEAD(&c->outq, link);
		closep(&m->fd);
		free(m);
	}
	if (c->ev_read)
		event_free(c->ev_read);
	if (c->ev_write)
		event_free(c->ev_write);
	closep(&c->fd);
	free(c);
}

/* Drop every reference other modules hold to c: pending device-cycle replies and lease
 * owners. Its leases end now if nobody holds their buffers, or start revoking. */
static void conn_detach(struct conn *c)
{
	struct daemon *d = c->d;

	for (size_t i = 0; i < d->n_devices; i++) {
		struct pending_reply *w, *next;
		for (w = LIST_FIRST(&d->devices[i].waiters); w; w = next) {
			next = LIST_NEXT(w, link);
			if (w->conn == c) {
				LIST_REMOVE(w, link);
				free(w);
			}
		}
	}
	struct lease *l;
	while ((l = LIST_FIRST(&c->leases)))
		revoke_owner_gone(d, l);
}

/* Free every closed connection. */
static void reap(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	struct conn *c;

	while ((c = TAILQ_FIRST(&d->dead))) {
		TAILQ_REMOVE(&d->dead, c, link);
		conn_free(c);
	}
}

/* The connection stops at once, but its memory lives until the loop's next turn, because
 * callers up the stack (a handler, a broadcast) may still hold it. event_active() cannot
 * fail, so no out-of-memory path frees it early. */
void conn_close(struct conn *c, const char *why)
{
	struct daemon *d = c->d;

	if (c->closing)
		return;
	c->closing = true;
	log_info("client %llu (uid %u pid %d) disconnected%s%s", (unsigned long long)c->id,
		 (unsigned)c->peer.uid, (int)c->pid, why ? ": " : "", why ? why : "");
	TAILQ_REMOVE(&d->conns, c, link);
	d->n_conns--;
	event_del(c->ev_read);
	event_del(c->ev_write);
	closep(&c->fd);
	conn_detach(c);
	TAILQ_INSERT_TAIL(&d->dead, c, link);
	event_active(d->ev_reap, EV_TIMEOUT, 1);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
	struct daemon *d = arg;

	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warning("accept: %m");
			return;
		}
		if (d->n_conns >= d->opt.max_clients) {
			log_warning("refusing a connection: %u clients already (--max-clients)",
				    d->n_conns);
			close(fd);
			continue;
		}
		struct conn *c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->d = d;
		c->fd = fd;
		c->id = ++d->next_conn_id;
		STAILQ_INIT(&c->outq);
		LIST_INIT(&c->leases);
		int r = peer_identity(c);
		c->ev_read = event_new(d->base, fd, EV_READ | EV_PERSIST, on_read, c);
		c->ev_write = event_new(d->base, fd, EV_WRITE, on_write, c);
		if (r < 0 || !c->ev_read || !c->ev_write || event_add(c->ev_read, NULL) < 0) {
			log_warning("dropping a new connection: %s",
				    r < 0 ? strerror(-r) : "out of memory");
			conn_free(c);
			continue;
		}
		TAILQ_INSERT_TAIL(&d->conns, c, link);
		d->n_conns++;
		log_debug("client %llu connected: uid %u gid %u pid %d", (unsigned long long)c->id,
			  (unsigned)c->peer.uid, (unsigned)c->peer.gid, (int)c->pid);
	}
}

/* Queue a record the socket would not take; fd is duplicated so the queue owns its copy. */
static int conn_queue(struct conn *c, const uint8_t *buf, size_t len, int fd)
{
	if (c->outq_bytes + len > CONN_MAX_OUTQ_BYTES)
		return -ENOBUFS;
	struct outmsg *m = malloc(sizeof(*m) + len);
	if (!m)
		return -ENOMEM;
	m->fd = -1;
	if (fd >= 0 && (m->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0) {
		free(m);
		return -errno;
	}
	m->len = len;
	memcpy(m->data, buf, len);
	STAILQ_INSERT_TAIL(&c->outq, m, link);
	c->outq_bytes += len;
	event_add(c->ev_write, NULL);
	return 0;
}

/* Send a packed record now if nothing is queued before it, otherwise queue it. A client
 * whose queue overflows is not reading: it is dropped rather than allowed to grow memory. */
static void conn_send(struct conn *c, const ProtobufCMessage *msg, int fd)
{
	uint8_t buf[WIRE_MAX_RECORD];
	size_t len = protobuf_c_message_get_packed_size(msg);
	int r;

	if (c->closing)
		return;
	if (len > sizeof(buf)) {
		log_error("client %llu: reply of %zu bytes exceeds the record cap",
			  (unsigned long long)c->id, len);
		return;
	}
	protobuf_c_message_pack(msg, buf);
	if (STAILQ_EMPTY(&c->outq)) {
		r = wire_send(c->fd, buf, len, fd >= 0 ? &fd : NULL, fd >= 0);
		if (r == 0)
			return;
		if (r != -EAGAIN) {
			conn_close(c, strerror(-r));
			return;
		}
	}
	r = conn_queue(c, buf, len, fd);
	if (r < 0)
		conn_close(c, r == -ENOBUFS ? "not reading its replies and events" : strerror(-r));
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct outmsg *m;

	while ((m = STAILQ_FIRST(&c->outq))) {
		int r = wire_send(c->fd, m->data, m->len, m->fd >= 0 ? &m->fd : NULL, m->fd >= 0);
		if (r == -EAGAIN) {
			event_add(c->ev_write, NULL);
			return;
		}
		if (r < 0) {
			conn_close(c, strerror(-r));
			return;
		}
		STAILQ_REMOVE_HEAD(&c->outq, link);
		c->outq_bytes -= m->len;
		closep(&m->fd);
		free(m);
	}
}

void conn_reply(struct conn *c, uint64_t request_id, int error, const char *message,
		P2pbuf__Reply *body, int fd)
{
	P2pbuf__Reply empty = P2PBUF__REPLY__INIT;
	P2pbuf__ServerMessage sm = P2PBUF__SERVER_MESSAGE__INIT;
	P2pbuf__Reply *reply = body ? body : &empty;

	reply->has_request_id = true;
	reply->request_id = request_id;
	if (error) {
		reply->has_error = true;
		reply->error = error;
		reply->message = (char *)(message ? message : strerror(-error));
	}
	if (fd >= 0) {
		reply->has_nfds = true;
		reply->nfds = 1;
	}
	sm.body_case = P2PBUF__SERVER_MESSAGE__BODY_REPLY;
	sm.reply = reply;
	conn_send(c, &sm.base, fd);
}

void server_event(struct daemon *d, const P2pbuf__Event *ev, struct conn *owner, bool device_event)
{
	P2pbuf__ServerMessage sm = P2PBUF__SERVER_MESSAGE__INIT;
	struct conn *c, *next;

	sm.body_case = P2PBUF__SERVER_MESSAGE__BODY_EVENT;
	sm.event = (P2pbuf__Event *)ev;
	/* conn_send may drop a connection that stopped reading: walk with a saved next. */
	for (c = TAILQ_FIRST(&d->conns); c; c = next) {
		next = TAILQ_NEXT(c, link);
		if (c == owner || c->subscribed_all || (device_event && c->subscribed))
			conn_send(c, &sm.base, -1);
	}
}

void server_device_state(struct daemon *d, const struct device *dev)
{
	P2pbuf__DeviceState body = P2PBUF__DEVICE_STATE__INIT;
	P2pbuf__Event ev = P2PBUF__EVENT__INIT;

	body.device = (char *)dev->decl.name;
	body.has_state = true;
	body.state = dev->state;
	body.has_generation = true;
	body.generation = dev->generation;
	if (dev->message[0])
		body.message = (char *)dev->message;
	ev.body_case = P2PBUF__EVENT__BODY_DEVICE_STATE;
	ev.device_state = &body;
	server_event(d, &ev, NULL, true);
}

/* Decode and dispatch one record. Returns false when the connection was dropped. */
static bool conn_record(struct conn *c, const uint8_t *buf, size_t len, size_t nfds)
{
	if (nfds > 0) {
		conn_close(c, "protocol error: a client sent file descriptors");
		return false;
	}
	P2pbuf__Request *req = p2pbuf__request__unpack(NULL, len, buf);
	if (!req) {
		conn_close(c, "protocol error: undecodable record");
		return false;
	}
	const char *why;
	int r = wire_check_request(req, &why);
	if (r < 0)
		conn_reply(c, req->request_id, r, why, NULL, -1);
	else
		handle_request(c, req);
	p2pbuf__request__free_unpacked(req, NULL);
	return !c->closing;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	uint8_t buf[WIRE_MAX_RECORD];
	int fds[WIRE_MAX_FDS];

	for (int i = 0; i < RECORDS_PER_WAKEUP; i++) {
		size_t nfds = 0;
		ssize_t n = wire_recv(c->fd, buf, sizeof(buf), fds, &nfds);
		if (n == -EAGAIN)
			return;
		if (n == 0) {
			conn_close(c, NULL);
			return;
		}
		if (n < 0) {
			conn_close(c, n == -EMSGSIZE ? "protocol error: record too large"
				      : n == -EPROTO
					  ? "protocol error: bad control data (file descriptors?)"
					  : strerror((int)-n));
			return;
		}
		wire_close_fds(fds, nfds);
		if (!conn_record(c, buf, (size_t)n, nfds))
			return;
	}
}

static int listen_on_path(struct daemon *d, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* A socket file left by a previous run is replaced; anything else is not ours. */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;
		unlink(path);
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	/* Clients reach it through group membership (the unit's SocketGroup/--socket-mode). */
	if (chmod(path, 0660) < 0 || listen(fd, 128) < 0)
		return -errno;
	d->listen_fd = TAKE_FD(fd);
	d->listen_fd_owned = true;
	return 0;
}

int server_listen(struct daemon *d)
{
	int n = sd_listen_fds(1);
	int r;

	if (n < 0)
		return n;
	if (n > 1)
		return -E2BIG;
	if (n == 1 && !d->opt.socket_path) {
		d->listen_fd = SD_LISTEN_FDS_START;
		if (sd_is_socket_unix(d->listen_fd, SOCK_SEQPACKET, 1, NULL, 0) <= 0)
			return -ENOTSOCK;
		fcntl(d->listen_fd, F_SETFL, fcntl(d->listen_fd, F_GETFL) | O_NONBLOCK);
		log_info("listening on the socket systemd passed");
	} else {
		const char *path = d->opt.socket_path ? d->opt.socket_path : DEFAULT_SOCKET;
		/* Under systemd RuntimeDirectory= makes it; started by hand, the daemon does. */
		if (!d->opt.socket_path && mkdir(DEFAULT_SOCKET_DIR, 0755) < 0 && errno != EEXIST)
			log_warning("cannot create %s: %m", DEFAULT_SOCKET_DIR);
		r = listen_on_path(d, path);
		if (r < 0) {
			log_error("cannot listen on %s: %s", path, strerror(-r));
			return r;
		}
		log_info("listening on %s", path);
	}
	d->ev_reap = event_new(d->base, -1, 0, reap, d);
	d->ev_listen = event_new(d->base, d->listen_fd, EV_READ | EV_PERSIST, on_accept, d);
	if (!d->ev_reap || !d->ev_listen || event_add(d->ev_listen, NULL) < 0)
		return -ENOMEM;
	return 0;
}

void server_stop(struct daemon *d)
{
	struct conn *c;

	if (d->ev_listen) {
		event_free(d->ev_listen);
		d->ev_listen = NULL;
	}
	while ((c = TAILQ_FIRST(&d->conns))) {
		/* Flush what is queued (the shutdown events) as far as the socket takes it. */
		on_write(c->fd, EV_WRITE, c);
		if (!c->closing)
			conn_close(c, "daemon stopping");
	}
	reap(-1, 0, d);
	if (d->ev_reap) {
		event_free(d->ev_reap);
		d->ev_reap = NULL;
	}
	if (d->listen_fd_owned) {
		if (d->opt.socket_path)
			unlink(d->opt.socket_path);
		else
			unlink(DEFAULT_SOCKET);
	}
	if (d->listen_fd >= 0 && d->listen_fd_owned)
		close(d->listen_fd);
	d->listen_fd = -1;
}
