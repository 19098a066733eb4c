#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <sys/syscall.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-login.h>

#include "log.h"
#include "macro.h"
#include "server.h"

#define RECORDS_PER_WAKEUP 16 /* fairness: one busy client cannot starve the rest */

struct outmsg {
	STAILQ_ENTRY(outmsg) link;
	int fd; /* a duplicate owned by the queue, or -1 */
	size_t len;
	uint8_t data[];
};

struct conn {
	struct server *server;
	int fd;
	struct event *ev_read;
	struct event *ev_write;
	STAILQ_HEAD(, outmsg) outq; /* records the socket would not take yet, oldest first */
	size_t outq_bytes;
	struct peer *peer; /* taken once at accept */
	void *data;	   /* the upper layer's */
	bool closing;
	uint64_t id; /* for log lines */
	TAILQ_ENTRY(conn) link;
};

struct server {
	struct event_base *base;
	struct server_options opt;
	struct server_callbacks cb;
	int listen_fd;
	bool listen_fd_owned; /* false when systemd passed it */
	const char *path;     /* the socket file this server made, or NULL */
	struct event *ev_listen;
	TAILQ_HEAD(, conn) conns;
	TAILQ_HEAD(, conn) dead; /* closed, freed by ev_reap on the loop's next turn */
	struct event *ev_reap;
	unsigned n_conns;
	uint64_t next_conn_id;
};

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5 */
#endif

/* The systemd unit of the peer, from its cgroup, or NULL. With SO_PEERPIDFD the answer is
 * kept only if the process is still alive after the lookup, so that a pid reused in between
 * cannot lend its unit; without it (older kernels) the peer is connected and so alive at
 * accept, which leaves only the window of its own exit. */
static char *peer_unit(int fd, pid_t pid)
{
	int pidfd = -1;
	socklen_t len = sizeof(pidfd);
	char *unit = NULL;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0)
		pidfd = -1;
	if (sd_pid_get_unit(pid, &unit) < 0)
		unit = NULL;
	if (pidfd >= 0) {
		if (unit && syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0) {
			free(unit);
			unit = NULL;
		}
		close(pidfd);
	}
	return unit;
}

/* The peer's identity, once: uid, gid and pid from SO_PEERCRED, supplementary groups from
 * SO_PEERGROUPS. Decisions use uid and groups, never the pid. */
static int peer_identity(int fd, struct peer **ret_peer)
{
	gid_t groups[SERVER_MAX_GROUPS];
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	len = sizeof(groups);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0) {
		/* ERANGE: more groups than we keep; decide on the primary group alone. */
		if (errno != ERANGE)
			return -errno;
		len = 0;
	}
	*ret_peer = peer_new(cred.uid, cred.gid, cred.pid, groups, len / sizeof(gid_t));
	if (!*ret_peer)
		return -ENOMEM;
	(*ret_peer)->unit = peer_unit(fd, cred.pid);
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
	peer_unref(c->peer);
	free(c);
}

/* Free every closed connection. */
static void reap(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	struct conn *c;

	/* closed() may send events that close further connections: they join the list. */
	while ((c = TAILQ_FIRST(&s->dead))) {
		TAILQ_REMOVE(&s->dead, c, link);
		if (s->cb.closed && c->data)
			s->cb.closed(s->cb.ctx, c->data);
		conn_free(c);
	}
}

/* The connection stops at once, but the layer above hears of it (closed()) and its memory is
 * freed only on the loop's next turn, because callers up the stack (a handler, a broadcast
 * walking the subscribers) may still hold it or its session. event_active() cannot fail, so
 * no out-of-memory path frees it early. */
void conn_close(struct conn *c, const char *why)
{
	struct server *s = c->server;

	if (c->closing)
		return;
	c->closing = true;
	log_info("client %llu (uid %u pid %d) disconnected%s%s", (unsigned long long)c->id,
		 (unsigned)c->peer->view.uid, (int)c->peer->pid, why ? ": " : "", why ? why : "");
	TAILQ_REMOVE(&s->conns, c, link);
	s->n_conns--;
	event_del(c->ev_read);
	event_del(c->ev_write);
	closep(&c->fd);
	TAILQ_INSERT_TAIL(&s->dead, c, link);
	event_active(s->ev_reap, EV_TIMEOUT, 1);
}

bool conn_closing(const struct conn *c)
{
	return c->closing;
}

const struct peer *conn_peer(const struct conn *c)
{
	return c->peer;
}

uint64_t conn_id(const struct conn *c)
{
	return c->id;
}

unsigned server_clients(const struct server *s)
{
	return s->n_conns;
}

/* Make a connection for fd (owned on success). */
static int conn_new(struct server *s, int fd, struct conn **ret_conn)
{
	struct conn *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return -ENOMEM;
	c->server = s;
	c->fd = fd;
	STAILQ_INIT(&c->outq);
	r = peer_identity(fd, &c->peer);
	c->ev_read = event_new(s->base, fd, EV_READ | EV_PERSIST, on_read, c);
	c->ev_write = event_new(s->base, fd, EV_WRITE, on_write, c);
	if (r == 0 && (!c->ev_read || !c->ev_write || event_add(c->ev_read, NULL) < 0))
		r = -ENOMEM;
	if (r == 0 && !(c->data = s->cb.accepted(s->cb.ctx, c)))
		r = -ENOMEM;
	if (r < 0) {
		c->fd = -1; /* the caller keeps fd on failure */
		conn_free(c);
		return r;
	}
	c->id = ++s->next_conn_id;
	TAILQ_INSERT_TAIL(&s->conns, c, link);
	s->n_conns++;
	log_debug("client %llu connected: uid %u gid %u pid %d", (unsigned long long)c->id,
		  (unsigned)c->peer->view.uid, (unsigned)c->peer->view.gid, (int)c->peer->pid);
	*ret_conn = c;
	return 0;
}

int server_adopt(struct server *s, int fd, struct conn **ret_conn)
{
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
		return -errno;
	return conn_new(s, fd, ret_conn);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
	struct server *s = arg;
	struct conn *c;

	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warning("accept: %m");
			return;
		}
		if (s->n_conns >= s->opt.max_clients) {
			log_warning("refusing a connection: %u clients already (--max-clients)",
				    s->n_conns);
			close(fd);
			continue;
		}
		int r = conn_new(s, fd, &c);
		if (r < 0) {
			log_warning("dropping a new connection: %s", strerror(-r));
			close(fd);
		}
	}
}

/* Queue a record the socket would not take; fd is duplicated so the queue owns its copy. */
static int conn_queue(struct conn *c, const uint8_t *buf, size_t len, int fd)
{
	if (c->outq_bytes + len > SERVER_MAX_OUTQ_BYTES)
		return -ENOBUFS;
	struct outmsg *m = malloc(sizeof(*m) + len);
	if (!m)
		return -ENOMEM;
	m->fd = -1;
	if (fd >= 0 && (m->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0) {
		free(m);
		return -errno;
	}
	if (event_add(c->ev_write, NULL) < 0) {
		closep(&m->fd);
		free(m);
		return -ENOMEM;
	}
	m->len = len;
	memcpy(m->data, buf, len);
	STAILQ_INSERT_TAIL(&c->outq, m, link);
	c->outq_bytes += len;
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
			if (event_add(c->ev_write, NULL) < 0)
				conn_close(c, "out of memory");
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

void conn_event(struct conn *c, const P2pbuf__Event *ev)
{
	P2pbuf__ServerMessage sm = P2PBUF__SERVER_MESSAGE__INIT;

	sm.body_case = P2PBUF__SERVER_MESSAGE__BODY_EVENT;
	sm.event = (P2pbuf__Event *)ev;
	conn_send(c, &sm.base, -1);
}

/* Decode, check and hand on one record. Returns false when the connection was dropped. */
static bool conn_record(struct conn *c, const uint8_t *buf, size_t len, size_t nfds)
{
	struct server *s = c->server;

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
	int r = wire_check_record(req, buf, len, &why);
	if (r < 0)
		conn_reply(c, req->request_id, r, why, NULL, -1);
	else
		s->cb.request(s->cb.ctx, c->data, req);
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

/* Whether a daemon answers on the socket file at sa: a stale file (from a daemon that died)
 * refuses the connection. Returns the live daemon's pid, 0 for stale, or -errno. */
static int live_daemon(const struct sockaddr_un *sa)
{
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct ucred cred = {};
	socklen_t len = sizeof(cred);

	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0)
		return errno == ECONNREFUSED || errno == ENOENT ? 0 : -errno;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.pid <= 0)
		return 1;
	return cred.pid;
}

static int listen_on_path(struct server *s, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* A socket file left by a previous run is replaced; a live daemon's is not taken over,
	 * and anything else is not ours. */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;
		int pid = live_daemon(&sa);
		if (pid > 0) {
			log_error("another p2pbufd (pid %d) is serving %s; not taking it over", pid,
				  path);
			return -EADDRINUSE;
		}
		unlink(path);
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	/* Clients reach it through group membership (the unit's SocketGroup=, or
	 * --socket-group and --socket-mode by hand). */
	if (s->opt.socket_group != (gid_t)-1 && chown(path, (uid_t)-1, s->opt.socket_group) < 0)
		return -errno;
	if (chmod(path, s->opt.socket_mode) < 0 || listen(fd, 128) < 0)
		return -errno;
	s->listen_fd = TAKE_FD(fd);
	s->listen_fd_owned = true;
	s->path = path;
	return 0;
}

static int take_listener(struct server *s)
{
	int n = sd_listen_fds(1);
	int r;

	if (n < 0)
		return n;
	if (n > 1)
		return -E2BIG;
	if (n == 1 && !s->opt.socket_path) {
		s->listen_fd = SD_LISTEN_FDS_START;
		if (sd_is_socket_unix(s->listen_fd, SOCK_SEQPACKET, 1, NULL, 0) <= 0)
			return -ENOTSOCK;
		if (fcntl(s->listen_fd, F_SETFL, fcntl(s->listen_fd, F_GETFL) | O_NONBLOCK) < 0)
			return -errno;
		log_info("listening on the socket systemd passed");
		return 0;
	}
	const char *path = s->opt.socket_path ? s->opt.socket_path : P2PBUF_SOCKET_PATH;
	/* Under systemd RuntimeDirectory= makes it; started by hand, the daemon does. */
	if (!s->opt.socket_path && mkdir(P2PBUF_RUNTIME_DIR, 0755) < 0 && errno != EEXIST)
		log_warning("cannot create %s: %m", P2PBUF_RUNTIME_DIR);
	r = listen_on_path(s, path);
	if (r < 0) {
		if (r != -EADDRINUSE) /* that one was told in full */
			log_error("cannot listen on %s: %s", path, strerror(-r));
		return r;
	}
	log_info("listening on %s", path);
	return 0;
}

int server_new(struct event_base *base, const struct server_options *opt,
	       const struct server_callbacks *cb, struct server **ret_server)
{
	struct server *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	s->base = base;
	s->opt = *opt;
	s->cb = *cb;
	s->listen_fd = -1;
	TAILQ_INIT(&s->conns);
	TAILQ_INIT(&s->dead);
	r = take_listener(s);
	if (r == 0) {
		s->ev_reap = event_new(base, -1, 0, reap, s);
		s->ev_listen = event_new(base, s->listen_fd, EV_READ | EV_PERSIST, on_accept, s);
		if (!s->ev_reap || !s->ev_listen || event_add(s->ev_listen, NULL) < 0)
			r = -ENOMEM;
	}
	if (r < 0) {
		server_free(s);
		return r;
	}
	*ret_server = s;
	return 0;
}

void server_stop(struct server *s)
{
	struct conn *c;

	if (!s)
		return;
	if (s->ev_listen) {
		event_free(s->ev_listen);
		s->ev_listen = NULL;
	}
	while ((c = TAILQ_FIRST(&s->conns))) {
		/* Flush what is queued (the shutdown events) as far as the socket takes it. */
		on_write(c->fd, EV_WRITE, c);
		if (!c->closing)
			conn_close(c, "daemon stopping");
	}
	reap(-1, 0, s);
	if (s->path)
		unlink(s->path);
	s->path = NULL;
	if (s->listen_fd >= 0 && s->listen_fd_owned)
		close(s->listen_fd);
	s->listen_fd = -1;
}

void server_free(struct server *s)
{
	if (!s)
		return;
	server_stop(s);
	if (s->ev_reap)
		event_free(s->ev_reap);
	free(s);
}
