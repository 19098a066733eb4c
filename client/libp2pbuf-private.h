/* What the request functions (requests.c) need from the connection engine (libp2pbuf.c).
 * Nothing here is exported: the version script keeps only the p2pbuf_* API. */
#pragma once

#include "p2pbuf.h"
#include "wire.h"

/* Send req (its request id is filled in here) and wait for its Reply, queueing any events that
 * arrive first. ret_fd is non-NULL exactly for calls whose successful reply carries one fd.
 * On success returns 0 and the decoded message (free it with
 * p2pbuf__server_message__free_unpacked()); a Reply with an error returns that error and keeps
 * its message for p2pbuf_last_message(). Protocol violations fail the connection (-EPROTO). */
int conn_call(struct p2pbuf *conn, P2pbuf__Request *req, int *ret_fd,
	      P2pbuf__ServerMessage **ret_msg);

/* A reply had the wrong shape: fail the connection and return -EPROTO. */
int conn_protocol_error(struct p2pbuf *conn);

/* Leases this connection exported, with their reclaim tokens (requests.c adds and drops,
 * the engine reclaims them after a reconnect). */
void conn_track_lease(struct p2pbuf *conn, uint64_t id, const uint8_t *token, size_t len);
void conn_untrack_lease(struct p2pbuf *conn, uint64_t id);
/* Remember a subscription, to make it again after a reconnect. */
void conn_track_subscription(struct p2pbuf *conn, bool all);
