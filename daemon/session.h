/* A connection's state above the framing: whether it said Hello, what it subscribed to, and
 * the leases it exported (as a set that lease.c links). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "lease.h"
#include "server.h"
#include "wire.h"

struct daemon;

#define SESSION_TOKENS 8 /* reclaim tokens taken from the kernel at once */

struct session {
	struct daemon *d;
	struct conn *conn;
	struct peer *peer;
	bool hello;	     /* Hello accepted; nothing else is served before */
	bool subscribed;     /* device events, and the lease events of its own user */
	bool subscribed_all; /* every event (observers and admins) */
	struct lease_set leases;
	uint8_t *parked; /* an Export waiting for a count of holders (packed), or NULL */
	size_t parked_len;
	uint8_t tokens[SESSION_TOKENS][WIRE_TOKEN_LEN]; /* unused reclaim tokens, [0..n_tokens) */
	unsigned n_tokens;
	TAILQ_ENTRY(session) link;
	LIST_ENTRY(session) sub_link; /* on d->subscribers while subscribed */
};

/* A session for a new connection of d's server. */
struct session *session_new(struct daemon *d, struct conn *c);

/* The connection closed: nothing may point at s after this. Its reset waiters are dropped,
 * and its leases end now if nobody holds their buffers, or linger while a copy is held
 * elsewhere (counted in one batch). */
void session_free(struct session *s);

/* The session that exported l, while its connection is open. */
struct session *session_of_lease(const struct lease *l);

/* Subscribe s to events (all: every lease's, not only its user's). */
void session_subscribe(struct session *s, bool all);
