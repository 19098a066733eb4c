/* Ending leases: the holder and observers are told, the daemon's copy of the buffer is
 * closed, and the quotas the lease counted against are given back. */
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "util.h"

/* The holder of a released lease asked for the end itself: only observers hear of it. */
static void tell_revoked(struct daemon *d, const struct lease *l)
{
	P2pbuf__LeaseRevoked body = P2PBUF__LEASE_REVOKED__INIT;
	P2pbuf__Event ev = P2PBUF__EVENT__INIT;

	body.has_lease_id = true;
	body.lease_id = l->id;
	body.has_reason = true;
	body.reason = l->reason;
	ev.body_case = P2PBUF__EVENT__BODY_LEASE_REVOKED;
	ev.lease_revoked = &body;
	server_event(d, &ev, l->reason == P2PBUF__REASON__REASON_RELEASED ? NULL : l->owner,
		     false);
}

void revoke_end_lease(struct daemon *d, struct lease *l, int reason)
{
	lease_end(l, reason);
	log_info("lease %llu ended: device=%s bar=%u size=%llu uid=%u reason=%s",
		 (unsigned long long)l->id, l->device->decl.name, l->bar,
		 (unsigned long long)l->size, (unsigned)l->owner_uid, wire_reason_name(l->reason));
	tell_revoked(d, l);
	closep(&l->fd);
	if (l->owner)
		l->owner->n_leases--;
	l->device->n_leases--;
	if (l->rule >= 0 && d->rule_leases)
		d->rule_leases[l->rule]--;
	lease_delete(&d->leases, l);
}

void revoke_device_leases(struct daemon *d, struct device *dev, int reason)
{
	struct lease *l;

	while ((l = LIST_FIRST(&dev->leases)))
		revoke_end_lease(d, l, reason);
}
