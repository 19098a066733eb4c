#include <stddef.h>
#include <stdlib.h>

#include "daemon.h"
#include "handlers.h"
#include "session.h"

static void *accepted(void *ctx, struct conn *c)
{
	struct daemon *d = ctx;
	struct session *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->d = d;
	s->conn = c;
	s->peer = conn_peer(c);
	LIST_INIT(&s->leases.list);
	TAILQ_INSERT_TAIL(&d->sessions, s, link);
	return s;
}

static void request(void *ctx, void *data, const P2pbuf__Request *req)
{
	handle_request(data, req);
}

/* Nothing may point at s after this: its reset waiters are dropped, and its leases end now
 * if nobody holds their buffers, or linger while a copy is held elsewhere. */
static void closed(void *ctx, void *data)
{
	struct daemon *d = ctx;
	struct session *s = data;

	registry_drop_waiters(d->registry, s);
	if (s->subscribed)
		LIST_REMOVE(s, sub_link);
	revoke_owner_gone_all(d->revoke, &s->leases);
	TAILQ_REMOVE(&d->sessions, s, link);
	free(s);
}

struct server_callbacks session_callbacks(struct daemon *d)
{
	return (struct server_callbacks){
		.accepted = accepted, .request = request, .closed = closed, .ctx = d
	};
}

struct session *session_of_lease(const struct lease *l)
{
	if (!l->owner)
		return NULL;
	return (struct session *)((char *)l->owner - offsetof(struct session, leases));
}

void session_subscribe(struct session *s, bool all)
{
	if (!s->subscribed)
		LIST_INSERT_HEAD(&s->d->subscribers, s, sub_link);
	s->subscribed = true;
	s->subscribed_all = all;
}
