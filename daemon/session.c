#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "daemon.h"
#include "session.h"

struct session *session_new(struct daemon *d, struct conn *c)
{
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

void session_free(struct session *s)
{
	struct daemon *d = s->d;

	registry_drop_waiters(d->registry, s);
	if (s->subscribed)
		LIST_REMOVE(s, sub_link);
	if (d->handing_over) {
		/* The next instance adopts them unclaimed, and the owner reclaims them there. */
		while (!LIST_EMPTY(&s->leases.list))
			lease_forget_owner(LIST_FIRST(&s->leases.list));
	} else {
		revoke_owner_gone_all(d->revoke, &s->leases);
	}
	audit_peer_closed(s->peer);
	TAILQ_REMOVE(&d->sessions, s, link);
	free(s->parked);
	explicit_bzero(s->tokens, sizeof(s->tokens)); /* never handed out */
	free(s);
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
