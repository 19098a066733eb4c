#include "events.h"
#include "peer.h"
#include "session.h"

/* Send ev to the recipients of l's events, each once. */
static void send_lease_event(struct daemon *d, const struct lease *l, const P2pbuf__Event *ev)
{
	struct session *owner = l->owner_let_go ? NULL : session_of_lease(l);
	struct session *s;

	if (owner)
		conn_event(owner->conn, ev);
	LIST_FOREACH (s, &d->subscribers, sub_link) {
		if (s == owner)
			continue;
		if (s->subscribed_all || s->peer->view.uid == l->peer->view.uid)
			conn_event(s->conn, ev);
	}
}

void events_lease_revoking(struct daemon *d, const struct lease *l)
{
	P2pbuf__LeaseRevoking body = P2PBUF__LEASE_REVOKING__INIT;
	P2pbuf__Event ev = P2PBUF__EVENT__INIT;

	body.has_lease_id = body.has_reason = body.has_deadline_ms = true;
	body.lease_id = l->id;
	body.reason = l->reason;
	body.deadline_ms = clock_wall_time(d->clock, l->deadline_ms);
	ev.body_case = P2PBUF__EVENT__BODY_LEASE_REVOKING;
	ev.lease_revoking = &body;
	send_lease_event(d, l, &ev);
}

void events_lease_revoked(struct daemon *d, const struct lease *l)
{
	P2pbuf__LeaseRevoked body = P2PBUF__LEASE_REVOKED__INIT;
	P2pbuf__Event ev = P2PBUF__EVENT__INIT;

	body.has_lease_id = body.has_reason = true;
	body.lease_id = l->id;
	body.reason = l->reason;
	ev.body_case = P2PBUF__EVENT__BODY_LEASE_REVOKED;
	ev.lease_revoked = &body;
	send_lease_event(d, l, &ev);
}

void events_device_state(struct daemon *d, const struct device *dev)
{
	P2pbuf__DeviceState body = P2PBUF__DEVICE_STATE__INIT;
	P2pbuf__Event ev = P2PBUF__EVENT__INIT;
	struct session *s;

	body.device = (char *)dev->decl.name;
	body.has_state = true;
	body.state = dev->state;
	body.has_generation = true;
	body.generation = dev->generation;
	if (dev->message[0])
		body.message = (char *)dev->message;
	ev.body_case = P2PBUF__EVENT__BODY_DEVICE_STATE;
	ev.device_state = &body;
	LIST_FOREACH (s, &d->subscribers, sub_link)
		conn_event(s->conn, &ev);
}
