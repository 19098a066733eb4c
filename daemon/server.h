/* The listening socket and the connections: accept with the peer's identity, read records,
 * decode and check them against the wire caps, and send replies and events with their
 * output queues. Only this module knows about sockets and connections; it hands each
 * decoded request to the layer above through the callbacks it is given, and never calls up
 * otherwise. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>

#include "peer.h"
#include "wire.h"

#define SERVER_GROUPS_HINT 64	/* supplementary groups asked for at first */
#define SERVER_MAX_GROUPS 65536 /* NGROUPS_MAX of Linux: every group the kernel can give */
/* Output queued for one client, charged at what its records really cost in memory (the
 * allocation, not the reply bytes). Past the pause mark the daemon reads nothing more from
 * that client until the queue drains (backpressure: its requests wait in its socket); past
 * the cap, which only events can reach while it is paused, the client is dropped. */
#define SERVER_OUTQ_PAUSE_BYTES (64 << 10)
#define SERVER_MAX_OUTQ_BYTES (1 << 20)
/* Replies with an fd queued for one client: each holds a duplicate of a buffer's fd, so the
 * daemon stops reading from a client with this many before its fds run out. */
#define SERVER_MAX_QUEUED_FDS 8
/* Connections answered only with the reason they are refused (too many clients, or too many
 * of one user) and then closed; past this many at once they are closed unanswered. */
#define SERVER_MAX_REFUSING 16
/* The fds the server may hold for max_clients clients: the socket, its queued duplicates,
 * and the connections being refused. */
#define SERVER_FDS_NEEDED(max_clients)                                                             \
	((uint64_t)(max_clients) * (1 + SERVER_MAX_QUEUED_FDS) + SERVER_MAX_REFUSING + 1)
/* Out of fds (EMFILE, ENFILE), accepting stops for this long, then is tried again. */
#define SERVER_ACCEPT_RETRY_MS 200

struct server;
struct conn;

struct server_callbacks {
	/* A new connection. Return the upper layer's state for it, or NULL to refuse it. */
	void *(*accepted)(void *ctx, struct conn *c);
	/* A decoded request that passed the wire checks; data is what accepted() returned. */
	void (*request)(void *ctx, void *data, const P2pbuf__Request *req);
	/* The connection closed (on the loop turn after conn_close): forget data. */
	void (*closed)(void *ctx, void *data);
	void *ctx;
};

/* Where the daemon listens unless told otherwise; configure's runstatedir decides. */
#ifndef P2PBUF_RUNTIME_DIR
#define P2PBUF_RUNTIME_DIR "/run/p2pbufd"
#endif
#ifndef P2PBUF_SOCKET_PATH
#define P2PBUF_SOCKET_PATH P2PBUF_RUNTIME_DIR "/p2pbufd.sock"
#endif

struct server_options {
	const char *socket_path;       /* NULL: the socket systemd passed, else the default path */
	unsigned max_clients;	       /* a client past it is refused with -EAGAIN */
	unsigned max_clients_per_user; /* a uid past it is refused with -EUSERS; 0: no cap */
	uint64_t hello_timeout_ms;     /* no Hello by then: dropped; 0: no deadline */
	uint64_t max_queued_bytes;     /* all output queues together; 0: no cap. Past half of
					  it, clients with anything queued are not read; past it,
					  the client with the largest queue is dropped */
	gid_t socket_group;	       /* (gid_t)-1: leave the group as created */
	mode_t socket_mode;	       /* of a socket the daemon creates itself */
	int listen_fd;		       /* the socket systemd passed (owned from now on), or -1 */
};

/* Listen (or take the socket systemd passed) and serve connections on base. */
int server_new(struct event_base *base, const struct server_options *opt,
	       const struct server_callbacks *cb, struct server **ret_server);
/* Flush what is queued as far as the sockets take it, close every connection (calling
 * closed() for each), stop listening, free. Accepts NULL. */
void server_free(struct server *s);
/* Stop accepting and close every connection, as server_free does, but keep the object. */
void server_stop(struct server *s);

/* Serve an already connected socket as if it had been accepted (tests and fuzzing). */
int server_adopt(struct server *s, int fd, struct conn **ret_conn);

unsigned server_clients(const struct server *s);

/* What the server holds, for status and tests: bytes queued (as charged) for all clients, and
 * whether accepting is paused for want of fds. */
uint64_t server_queued_bytes(const struct server *s);
bool server_accept_paused(const struct server *s);

/* The connection stops at once: nothing more is read or sent. closed() follows on the loop's
 * next turn. why (may be NULL) goes to the log. */
void conn_close(struct conn *c, const char *why);
bool conn_closing(const struct conn *c);
struct peer *conn_peer(const struct conn *c);
uint64_t conn_id(const struct conn *c);

/* Send a reply; body may be NULL; fd (>= 0) is attached and stays owned by the caller. */
void conn_reply(struct conn *c, uint64_t request_id, int error, const char *message,
		P2pbuf__Reply *body, int fd);
/* Send an event. To a connection with event batching on, the events of one turn of the loop
 * go as one record when the turn ends (or before the next reply, or at the close); to any
 * other, each at once. */
void conn_event(struct conn *c, const P2pbuf__Event *ev);
/* Whether c's client takes EventBatch records (it asked for FEATURE_EVENT_BATCH). */
void conn_set_event_batch(struct conn *c, bool on);
