#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
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

#include "clock.h"
#include "log.h"
#include "macro.h"
#include "server.h"

/* Records read from one connection per wakeup. One: the read event is level-triggered, so a
 * client with more waiting is woken again in the next turn of the loop, after every other
 * ready client had its turn (fair under load), and a client that sends one request at a time
 * costs no recvmsg that only says EAGAIN. */
#define RECORDS_PER_WAKEUP 1
#define ACCEPTS_PER_WAKEUP 64  /* a flood of connections cannot keep the loop here */
#define USER_BUCKETS 256       /* of the per-uid connection counts */
#define TRIM_BYTES (1 << 20)   /* queue memory freed before it is handed back to the system */
#define REFUSE_TIMEOUT_MS 1000 /* a refused client that sends nothing is closed after this */
/* A record's allocation as the heap sees it: what it can use plus the allocator's header. */
#define MALLOC_OVERHEAD (2 * sizeof(size_t))

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
	struct event *ev_deadline;  /* Hello deadline, or a refused client's last chance */
	STAILQ_HEAD(, outmsg) outq; /* records the socket would not take yet, oldest first */
	size_t outq_cost;	    /* their memory, as charged */
	unsigned outq_fds;	    /* fds among them */
	struct peer *peer;	    /* taken once at accept */
	void *data;		    /* the upper layer's */
	int refuse;		    /* -errno: answer the first request with it, then close */
	char refuse_msg[160];
	bool closing;
	bool reading;		     /* ev_read is armed */
	bool batching;		     /* the client takes EventBatch records (1.3) */
	struct wire_batch batch;     /* this turn's events, sent when the turn ends */
	LIST_ENTRY(conn) batch_link; /* on s->batched while batch.n > 0 */
	uint64_t id;		     /* for log lines */
	TAILQ_ENTRY(conn) link;
	LIST_ENTRY(conn) paused_link; /* on s->paused while not read because of its queue */
};

/* How many connections one uid has. */
struct user_count {
	uid_t uid;
	unsigned n;
	struct user_count *next;
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
	struct event *ev_accept_retry; /* out of fds: accepting resumes from this timer */
	int64_t accept_paused_ms;      /* when the current out-of-fds episode began, or 0 */
	unsigned accept_failures;      /* accept errors in this episode */
	unsigned n_conns;	       /* accepted, not counting the ones being refused */
	unsigned n_refusing;
	uint64_t next_conn_id;
	uint64_t queued_bytes; /* outq_cost of every connection */
	size_t freed_since_trim;
	LIST_HEAD(, conn) paused;  /* connections not read because of their queue */
	LIST_HEAD(, conn) batched; /* connections with events waiting for the turn's end */
	struct event *ev_flush;	   /* active while any are */
	struct user_count *users[USER_BUCKETS];
	struct log_ratelimit rl_refuse; /* connections refused at accept */
	struct log_ratelimit rl_close;	/* disconnections */
};

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);
static void batch_flush(struct conn *c);

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5 */
#endif

/* Read /proc/PID/cgroup's unified line ourselves: libsystemd's lookup probes the cgroup
 * file system with calls that the sandbox does not allow. */
static char *pid_unit(pid_t pid)
{
	char path[64], buf[4096];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || (n = read(fd, buf, sizeof(buf) - 1)) <= 0)
		return NULL;
	buf[n] = '\0';
	for (char *line = buf; line && *line;
	     line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
		if (strncmp(line, "0::", 3) == 0)
			return peer_unit_of_cgroup(line + 3);
	return NULL;
}

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
	unit = pid_unit(pid);
	if (pidfd >= 0) {
		/* Signal 0 only asks whether the process still lives: ESRCH says it is gone;
		 * EPERM (a process of another user, which the daemon's user may not signal)
		 * says it lives. */
		if (unit && syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0 &&
		    errno == ESRCH) {
			free(unit);
			unit = NULL;
		}
		close(pidfd);
	}
	return unit;
}

/* The peer's supplementary groups, every one the kernel gives (up to NGROUPS_MAX): a peer in
 * more groups than a fixed buffer holds must not be judged on its primary group alone. On
 * ERANGE the kernel says how much room the list needs. Returns a malloc'd array. */
static int peer_groups(int fd, gid_t **ret_groups, size_t *ret_n)
{
	socklen_t len = SERVER_GROUPS_HINT * sizeof(gid_t);

	for (;;) {
		_cleanup_free_ gid_t *groups = malloc(len ? len : 1);
		socklen_t got = len;
		if (!groups)
			return -ENOMEM;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &got) == 0) {
			*ret_n = got / sizeof(gid_t);
			*ret_groups = TAKE_PTR(groups);
			return 0;
		}
		if (errno != ERANGE || got <= len || got > SERVER_MAX_GROUPS * sizeof(gid_t))
			return errno == ERANGE ? -E2BIG : -errno;
		len = got;
	}
}

/* The peer's identity, once: uid, gid and pid from SO_PEERCRED, supplementary groups from
 * SO_PEERGROUPS. Decisions use uid and groups, never the pid. */
static int peer_identity(int fd, struct peer **ret_peer)
{
	_cleanup_free_ gid_t *groups = NULL;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	size_t n_groups = 0;
	int r;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	r = peer_groups(fd, &groups, &n_groups);
	if (r < 0)
		return r;
	*ret_peer = peer_new(cred.uid, cred.gid, cred.pid, groups, n_groups);
	if (!*ret_peer)
		return -ENOMEM;
	peer_set_unit(*ret_peer, peer_unit(fd, cred.pid));
	return 0;
}

/* ---- per-user connection counts ---- */

static struct user_count **user_slot(struct server *s, uid_t uid)
{
	struct user_count **u = &s->users[uid % USER_BUCKETS];

	while (*u && (*u)->uid != uid)
		u = &(*u)->next;
	return u;
}

static unsigned user_conns(struct server *s, uid_t uid)
{
	struct user_count *u = *user_slot(s, uid);

	return u ? u->n : 0;
}

static int user_add(struct server *s, uid_t uid)
{
	struct user_count **slot = user_slot(s, uid);

	if (!*slot) {
		*slot = calloc(1, sizeof(**slot));
		if (!*slot)
			return -ENOMEM;
		(*slot)->uid = uid;
	}
	(*slot)->n++;
	return 0;
}

static void user_remove(struct server *s, uid_t uid)
{
	struct user_count **slot = user_slot(s, uid), *u = *slot;

	if (u && --u->n == 0) {
		*slot = u->next;
		free(u);
	}
}

/* ---- output queues ---- */

static size_t outmsg_cost(struct outmsg *m)
{
	return malloc_usable_size(m) + MALLOC_OVERHEAD;
}

static void outmsg_free(struct conn *c, struct outmsg *m)
{
	size_t cost = outmsg_cost(m);

	c->outq_cost -= cost;
	c->server->queued_bytes -= cost;
	c->server->freed_since_trim += cost;
	if (m->fd >= 0)
		c->outq_fds--;
	closep(&m->fd);
	free(m);
}

static void outq_clear(struct conn *c)
{
	struct outmsg *m;

	while ((m = STAILQ_FIRST(&c->outq))) {
		STAILQ_REMOVE_HEAD(&c->outq, link);
		outmsg_free(c, m);
	}
}

/* Whether the daemon's queues together are past the mark where clients with output waiting
 * are no longer read. */
static bool server_crowded(const struct server *s)
{
	return s->opt.max_queued_bytes && s->queued_bytes >= s->opt.max_queued_bytes / 2;
}

/* Whether c may be read from now. Not while its queue is at the pause mark or holds its
 * most fds: what it asks next would only queue more. Nor, while the daemon's queues together
 * are crowded, if it has anything queued: a client that reads its replies has none. */
static bool conn_may_read(const struct conn *c)
{
	if (c->closing || c->outq_cost >= SERVER_OUTQ_PAUSE_BYTES ||
	    c->outq_fds >= SERVER_MAX_QUEUED_FDS)
		return false;
	return c->outq_cost == 0 || !server_crowded(c->server);
}

/* Arm or disarm reading to match conn_may_read(). */
static void conn_update_reading(struct conn *c)
{
	bool want = conn_may_read(c);

	if (want == c->reading)
		return;
	if (want && event_add(c->ev_read, NULL) < 0) {
		conn_close(c, "out of memory");
		return;
	}
	if (!want)
		event_del(c->ev_read);
	c->reading = want;
	if (want)
		LIST_REMOVE(c, paused_link);
	else if (!c->closing)
		LIST_INSERT_HEAD(&c->server->paused, c, paused_link);
}

/* The daemon's queues drained below the crowded mark: read again from everyone paused only
 * for that. Called after queues shrink; it walks the paused list only when not crowded. */
static void server_uncrowd(struct server *s)
{
	struct conn *c, *next;

	if (server_crowded(s))
		return;
	for (c = LIST_FIRST(&s->paused); c; c = next) {
		next = LIST_NEXT(c, paused_link);
		conn_update_reading(c);
	}
}

/* Memory freed by queues goes back to the system once enough of it was freed: a burst of
 * clients that did not read must not leave the daemon's footprint raised for good. */
static void maybe_trim(struct server *s)
{
	if (s->freed_since_trim < TRIM_BYTES || s->queued_bytes > TRIM_BYTES)
		return;
	s->freed_since_trim = 0;
	malloc_trim(0);
}

/* ---- connections ---- */

static void conn_free(struct conn *c)
{
	outq_clear(c);
	wire_batch_reset(&c->batch);
	if (c->ev_read)
		event_free(c->ev_read);
	if (c->ev_write)
		event_free(c->ev_write);
	if (c->ev_deadline)
		event_free(c->ev_deadline);
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
	maybe_trim(s);
}

/* The connection stops at once, but the layer above hears of it (closed()) and its memory is
 * freed only on the loop's next turn, because callers up the stack (a handler, a broadcast
 * walking the subscribers) may still hold it or its session. Its queue goes now: nothing more
 * will be sent, and the daemon's queue total must fall at once. event_active() cannot fail,
 * so no out-of-memory path frees it early. */
void conn_close(struct conn *c, const char *why)
{
	struct server *s = c->server;

	if (c->closing)
		return;
	/* What happened before the close is told before it, as when every event was sent on
	 * its own. A send that fails here closes c (with its own reason) and returns. */
	batch_flush(c);
	if (c->closing)
		return;
	c->closing = true;
	log_ratelimited(&s->rl_close, LOG_INFO, "client %llu (uid %u pid %d) disconnected%s%s",
			(unsigned long long)c->id, (unsigned)c->peer->view.uid, (int)c->peer->pid,
			why ? ": " : "", why ? why : "");
	TAILQ_REMOVE(&s->conns, c, link);
	if (c->refuse) {
		s->n_refusing--;
	} else {
		s->n_conns--;
		user_remove(s, c->peer->view.uid);
	}
	if (!c->reading) /* an admitted connection not read is on the paused list */
		LIST_REMOVE(c, paused_link);
	c->reading = false;
	event_del(c->ev_read);
	event_del(c->ev_write);
	if (c->ev_deadline)
		event_del(c->ev_deadline);
	outq_clear(c);
	closep(&c->fd);
	TAILQ_INSERT_TAIL(&s->dead, c, link);
	event_active(s->ev_reap, EV_TIMEOUT, 1);
	server_uncrowd(s);
}

bool conn_closing(const struct conn *c)
{
	return c->closing;
}

struct peer *conn_peer(const struct conn *c)
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

uint64_t server_queued_bytes(const struct server *s)
{
	return s->queued_bytes;
}

bool server_accept_paused(const struct server *s)
{
	return s->accept_paused_ms != 0;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	if (c->refuse) {
		conn_close(c, c->refuse_msg);
		return;
	}
	char why[96];
	snprintf(why, sizeof(why), "no Hello within %llu ms (--hello-timeout)",
		 (unsigned long long)c->server->opt.hello_timeout_ms);
	conn_close(c, why);
}

static int arm_deadline(struct conn *c, uint64_t ms)
{
	struct timeval tv = { .tv_sec = (time_t)(ms / 1000),
			      .tv_usec = (suseconds_t)(ms % 1000 * 1000) };

	c->ev_deadline = evtimer_new(c->server->base, on_deadline, c);
	if (!c->ev_deadline || evtimer_add(c->ev_deadline, &tv) < 0)
		return -ENOMEM;
	return 0;
}

/* Whether a new connection of uid is refused, and why: the error its first request gets. */
static int refusal(struct server *s, uid_t uid, char *msg, size_t len)
{
	unsigned mine = user_conns(s, uid);

	if (s->n_conns >= s->opt.max_clients) {
		snprintf(msg, len, "p2pbufd serves %u clients, the most it allows (--max-clients)",
			 s->n_conns);
		return -EAGAIN;
	}
	if (s->opt.max_clients_per_user && mine >= s->opt.max_clients_per_user) {
		snprintf(msg, len,
			 "uid %u has %u connections, the most one user may have "
			 "(--max-clients-per-user)",
			 (unsigned)uid, mine);
		return -EUSERS;
	}
	return 0;
}

/* Set the connection up to be served, or to be refused (c->refuse). */
static int conn_admit(struct server *s, struct conn *c)
{
	c->refuse = refusal(s, c->peer->view.uid, c->refuse_msg, sizeof(c->refuse_msg));
	if (c->refuse) {
		if (s->n_refusing >= SERVER_MAX_REFUSING)
			return c->refuse;
		/* Its first request, Hello, is answered with the reason; then it is closed. */
		return arm_deadline(c, REFUSE_TIMEOUT_MS);
	}
	if (s->opt.hello_timeout_ms && arm_deadline(c, s->opt.hello_timeout_ms) < 0)
		return -ENOMEM;
	if (user_add(s, c->peer->view.uid) < 0)
		return -ENOMEM;
	if (!(c->data = s->cb.accepted(s->cb.ctx, c))) {
		user_remove(s, c->peer->view.uid);
		return -ENOMEM;
	}
	return 0;
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
	c->reading = r == 0;
	if (r == 0)
		r = conn_admit(s, c);
	if (r < 0) {
		if (r != -ENOMEM && c->peer)
			log_ratelimited(&s->rl_refuse, LOG_WARNING,
					"closing a connection of uid %u unanswered: %s",
					(unsigned)c->peer->view.uid, c->refuse_msg);
		else if (r != -ENOMEM)
			/* Fail closed: a peer whose groups cannot all be read is not judged on
			 * part of them. */
			log_ratelimited(
			    &s->rl_refuse, LOG_WARNING,
			    "closing a connection unanswered: its credentials cannot be "
			    "read: %s",
			    r == -E2BIG ? "more supplementary groups than NGROUPS_MAX"
					: strerror(-r));
		c->fd = -1; /* the caller keeps fd on failure */
		conn_free(c);
		return r;
	}
	c->id = ++s->next_conn_id;
	TAILQ_INSERT_TAIL(&s->conns, c, link);
	if (c->refuse) {
		s->n_refusing++;
		log_ratelimited(&s->rl_refuse, LOG_WARNING,
				"refusing client %llu (uid %u pid %d): %s",
				(unsigned long long)c->id, (unsigned)c->peer->view.uid,
				(int)c->peer->pid, c->refuse_msg);
	} else {
		s->n_conns++;
		log_debug("client %llu connected: uid %u gid %u pid %d", (unsigned long long)c->id,
			  (unsigned)c->peer->view.uid, (unsigned)c->peer->view.gid,
			  (int)c->peer->pid);
	}
	*ret_conn = c;
	return 0;
}

int server_adopt(struct server *s, int fd, struct conn **ret_conn)
{
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
		return -errno;
	return conn_new(s, fd, ret_conn);
}

/* Out of fds: accept would fail at once for as long as none are freed, and the listening
 * socket would stay readable, so the loop would spin. Stop listening, try again from a
 * timer, and say so once per episode. */
static void accept_pause(struct server *s, int err)
{
	struct timeval tv = { .tv_sec = 0, .tv_usec = SERVER_ACCEPT_RETRY_MS * 1000 };

	event_del(s->ev_listen);
	evtimer_add(s->ev_accept_retry, &tv);
	s->accept_failures++;
	if (s->accept_paused_ms)
		return;
	s->accept_paused_ms = clock_monotonic_ms();
	log_warning("accept: %s: not accepting connections until fds are free "
		    "(retrying every %d ms)",
		    strerror(err), SERVER_ACCEPT_RETRY_MS);
}

static void accept_resumed(struct server *s)
{
	if (!s->accept_paused_ms)
		return;
	log_notice("accepting connections again after %lld ms out of fds (%u attempts failed)",
		   (long long)(clock_monotonic_ms() - s->accept_paused_ms), s->accept_failures);
	s->accept_paused_ms = 0;
	s->accept_failures = 0;
}

static void on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;

	if (s->ev_listen && event_add(s->ev_listen, NULL) < 0)
		accept_pause(s, ENOMEM);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
	struct server *s = arg;
	struct conn *c;

	for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM)
				accept_pause(s, errno);
			else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_ratelimited(&s->rl_refuse, LOG_WARNING, "accept: %m");
			return;
		}
		accept_resumed(s);
		int r = conn_new(s, fd, &c);
		if (r < 0) {
			if (r == -ENOMEM)
				log_ratelimited(&s->rl_refuse, LOG_WARNING,
						"dropping a new connection: %s", strerror(-r));
			close(fd);
		}
	}
}

/* The client with the most output queued, or NULL if nobody has any. */
static struct conn *largest_queue(struct server *s)
{
	struct conn *c, *big = NULL;

	TAILQ_FOREACH (c, &s->conns, link)
		if (c->outq_cost && (!big || c->outq_cost > big->outq_cost))
			big = c;
	return big;
}

/* Make room for cost more bytes under --max-queued-bytes by dropping the clients with the
 * largest queues (they are the ones not reading). -ENOSPC when c itself is the one. */
static int make_room(struct conn *c, size_t cost)
{
	struct server *s = c->server;

	while (s->opt.max_queued_bytes && s->queued_bytes + cost > s->opt.max_queued_bytes) {
		struct conn *big = largest_queue(s);
		if (!big || big == c)
			return -ENOSPC;
		conn_close(big, "its output queue was the largest when the daemon's queues were "
				"full (--max-queued-bytes)");
	}
	return 0;
}

/* Queue a record the socket would not take; fd is duplicated so the queue owns its copy. */
static int conn_queue(struct conn *c, const uint8_t *buf, size_t len, int fd)
{
	struct outmsg *m = malloc(sizeof(*m) + len);
	if (!m)
		return -ENOMEM;
	size_t cost = outmsg_cost(m);
	int r = c->outq_cost + cost > SERVER_MAX_OUTQ_BYTES ? -ENOBUFS : make_room(c, cost);
	if (r < 0) {
		free(m);
		return r;
	}
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
	c->outq_cost += cost;
	c->outq_fds += m->fd >= 0;
	c->server->queued_bytes += cost;
	conn_update_reading(c);
	return 0;
}

/* Send a packed record now if nothing is queued before it, otherwise queue it. A client
 * whose queue overflows is not reading: it is dropped rather than allowed to grow memory. */
static void send_packed(struct conn *c, const uint8_t *buf, size_t len, int fd)
{
	int r;

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
	if (r == -ENOBUFS) {
		char why[96];
		snprintf(why, sizeof(why),
			 "not reading its replies and events (%d KiB queued, the most allowed)",
			 SERVER_MAX_OUTQ_BYTES >> 10);
		conn_close(c, why);
	} else if (r == -ENOSPC)
		conn_close(c, "not reading, with the largest output queue when the daemon's "
			      "queues were full (--max-queued-bytes)");
	else if (r < 0)
		conn_close(c, strerror(-r));
}

/* Send c's batched events, as one record. The batch is emptied first, so that a failed send,
 * which closes c, finds nothing more to flush. */
static void batch_flush(struct conn *c)
{
	struct wire_batch b = c->batch;
	size_t len;

	if (!b.n)
		return;
	c->batch = (struct wire_batch){ 0 };
	LIST_REMOVE(c, batch_link);
	const uint8_t *rec = wire_batch_record(&b, &len);
	if (!c->closing)
		send_packed(c, rec, len, -1);
	wire_batch_reset(&b);
}

/* The turn's end: every connection's events go out, one record each. Active events of the
 * loop run in the order they were made active, so this runs after the callbacks that were
 * ready with it, and again in the same turn if one of those batched more. */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	struct conn *c;

	while ((c = LIST_FIRST(&s->batched)))
		batch_flush(c);
}

/* Send one packed record; events batched before it go first. */
static void conn_send_record(struct conn *c, const uint8_t *buf, size_t len, int fd)
{
	batch_flush(c);
	if (c->closing)
		return;
	send_packed(c, buf, len, fd);
}

static void conn_send(struct conn *c, const ProtobufCMessage *msg, int fd)
{
	uint8_t buf[WIRE_MAX_RECORD];
	size_t len = protobuf_c_message_get_packed_size(msg);

	if (c->closing)
		return;
	if (len > sizeof(buf)) {
		log_error("client %llu: a record of %zu bytes exceeds the record cap",
			  (unsigned long long)c->id, len);
		return;
	}
	protobuf_c_message_pack(msg, buf);
	conn_send_record(c, buf, len, fd);
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
			break;
		}
		if (r < 0) {
			conn_close(c, strerror(-r));
			return;
		}
		STAILQ_REMOVE_HEAD(&c->outq, link);
		outmsg_free(c, m);
	}
	conn_update_reading(c);
	server_uncrowd(c->server);
}

void conn_reply(struct conn *c, uint64_t request_id, int error, const char *message,
		P2pbuf__Reply *body, int fd)
{
	P2pbuf__Reply empty = P2PBUF__REPLY__INIT;
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
	if (c->closing)
		return;
	uint8_t buf[WIRE_MAX_RECORD];
	ssize_t len = wire_pack_reply(reply, buf, sizeof(buf));
	if (len < 0) {
		log_error("client %llu: a reply exceeds the record cap", (unsigned long long)c->id);
		return;
	}
	conn_send_record(c, buf, (size_t)len, fd);
}

void conn_set_event_batch(struct conn *c, bool on)
{
	if (!on)
		batch_flush(c);
	c->batching = on;
}

/* Add ev to c's batch; false when it must go on its own (no memory for the batch). */
static bool batch_add(struct conn *c, const P2pbuf__Event *ev)
{
	struct server *s = c->server;
	int r = wire_batch_add(&c->batch, ev);

	if (r == -E2BIG) {
		batch_flush(c);
		if (c->closing)
			return true;
		r = wire_batch_add(&c->batch, ev);
	}
	if (r < 0)
		return false;
	if (c->batch.n == 1) {
		if (LIST_EMPTY(&s->batched))
			event_active(s->ev_flush, EV_TIMEOUT, 1);
		LIST_INSERT_HEAD(&s->batched, c, batch_link);
	}
	return true;
}

void conn_event(struct conn *c, const P2pbuf__Event *ev)
{
	P2pbuf__ServerMessage sm = P2PBUF__SERVER_MESSAGE__INIT;

	if (c->closing || (c->batching && batch_add(c, ev)))
		return;
	sm.body_case = P2PBUF__SERVER_MESSAGE__BODY_EVENT;
	sm.event = (P2pbuf__Event *)ev;
	conn_send(c, &sm.base, -1);
}

/* A refused connection's first request gets the reason, and the connection ends. */
static void conn_refuse(struct conn *c, const P2pbuf__Request *req)
{
	conn_reply(c, req->request_id, c->refuse, c->refuse_msg, NULL, -1);
	conn_close(c, c->refuse_msg);
}

/* Decode, check and hand on one record. Returns false when the connection was dropped. */
static bool conn_record(struct conn *c, const uint8_t *buf, size_t len, size_t nfds)
{
	struct server *s = c->server;

	if (nfds > 0) {
		conn_close(c, "protocol error: a client sent file descriptors");
		return false;
	}
	/* Decoded into memory of this call (WIRE_DECODE_ARENA: any request within the caps
	 * fits), given back in one reset: no malloc and free per field. Handlers keep nothing
	 * of req past their return (a parked export is packed again). */
	uint8_t mem[WIRE_DECODE_ARENA];
	struct wire_arena arena;
	wire_arena_init(&arena, mem, sizeof(mem));
	P2pbuf__Request *req;
	const char *why;
	int r = wire_decode_request(&arena, buf, len, &req, &why);
	if (!req) {
		wire_arena_reset(&arena);
		conn_close(c, "protocol error: undecodable record");
		return false;
	}
	if (c->refuse)
		conn_refuse(c, req);
	else if (r < 0)
		conn_reply(c, req->request_id, r, why, NULL, -1);
	else {
		/* A well-formed Hello meets the deadline; the layer above judges its version. */
		if (req->body_case == P2PBUF__REQUEST__BODY_HELLO && c->ev_deadline)
			event_del(c->ev_deadline);
		s->cb.request(s->cb.ctx, c->data, req);
	}
	wire_arena_reset(&arena);
	return !c->closing;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	uint8_t buf[WIRE_MAX_RECORD];
	int fds[WIRE_MAX_FDS];

	for (int i = 0; i < RECORDS_PER_WAKEUP; i++) {
		/* Backpressure: what it asks next would only queue more; its requests wait in
		 * its socket until its queue drains. */
		if (!conn_may_read(c)) {
			conn_update_reading(c);
			return;
		}
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
	int r;

	if (s->opt.listen_fd >= 0 && !s->opt.socket_path) {
		s->listen_fd = s->opt.listen_fd;
		if (fcntl(s->listen_fd, F_SETFL, fcntl(s->listen_fd, F_GETFL) | O_NONBLOCK) < 0)
			return -errno;
		log_info("listening on the socket systemd passed");
		return 0;
	}
	if (s->opt.listen_fd >= 0)
		close(s->opt.listen_fd); /* --socket wins over the socket unit */
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
	LIST_INIT(&s->paused);
	LIST_INIT(&s->batched);
	/* A flood of refused or dropped clients logs a few lines a second, and says how many
	 * it did not. */
	s->rl_refuse = (struct log_ratelimit)LOG_RATELIMIT_INIT(1000, 10);
	s->rl_close = (struct log_ratelimit)LOG_RATELIMIT_INIT(1000, 20);
	r = take_listener(s);
	if (r == 0) {
		s->ev_reap = event_new(base, -1, 0, reap, s);
		s->ev_flush = event_new(base, -1, 0, on_flush, s);
		s->ev_accept_retry = evtimer_new(base, on_accept_retry, s);
		s->ev_listen = event_new(base, s->listen_fd, EV_READ | EV_PERSIST, on_accept, s);
		if (!s->ev_reap || !s->ev_flush || !s->ev_accept_retry || !s->ev_listen ||
		    event_add(s->ev_listen, NULL) < 0)
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
	if (s->ev_accept_retry)
		event_del(s->ev_accept_retry);
	while ((c = TAILQ_FIRST(&s->conns))) {
		/* Flush what is queued (the shutdown events) as far as the socket takes it. */
		batch_flush(c);
		if (c->closing)
			continue;
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
	if (s->ev_flush)
		event_free(s->ev_flush);
	if (s->ev_accept_retry)
		event_free(s->ev_accept_retry);
	for (size_t i = 0; i < USER_BUCKETS; i++)
		while (s->users[i]) {
			struct user_count *u = s->users[i];
			s->users[i] = u->next;
			free(u);
		}
	free(s);
}
