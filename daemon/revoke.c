/* The revocation engine. No kernel revokes one dma-buf, so taking a lease back means asking
 * its holder to let go, verifying through the daemon's own copy of the buffer that nobody
 * else holds it, and, when a holder does not let go in time, a device cycle: closing the
 * device revokes every buffer exported from it for good. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "clock.h"
#include "macro.h"

#define REVOKE_TICK_MS 100 /* how often revoking leases' holders are counted */

static void tell_revoked(struct daemon *d, const struct lease *l)
{
	P2pbuf__LeaseRevoked body = P2PBUF__LEASE_REVOKED__INIT;
	P2pbuf__Event ev = P2PBUF__EVENT__INIT;

	body.has_lease_id = body.has_reason = true;
	body.lease_id = l->id;
	body.reason = l->reason;
	ev.body_case = P2PBUF__EVENT__BODY_LEASE_REVOKED;
	ev.lease_revoked = &body;
	/* The holder of a released lease asked for the end itself: only observers hear it. */
	server_event(d, &ev, l->reason == P2PBUF__REASON__REASON_RELEASED ? NULL : l->owner, false);
}

static void tell_revoking(struct daemon *d, const struct lease *l)
{
	P2pbuf__LeaseRevoking body = P2PBUF__LEASE_REVOKING__INIT;
	P2pbuf__Event ev = P2PBUF__EVENT__INIT;

	body.has_lease_id = body.has_reason = body.has_deadline_ms = true;
	body.lease_id = l->id;
	body.reason = l->reason;
	body.deadline_ms = clock_realtime_ms() + (l->deadline_ms - clock_monotonic_ms());
	ev.body_case = P2PBUF__EVENT__BODY_LEASE_REVOKING;
	ev.lease_revoking = &body;
	server_event(d, &ev, l->reason == P2PBUF__REASON__REASON_RELEASED ? NULL : l->owner, false);
}

void revoke_end_lease(struct daemon *d, struct lease *l, int reason)
{
	lease_end(l, reason);
	log_info("lease %" PRIu64 " ended: device=%s bar=%u size=%" PRIu64 " uid=%u reason=%s",
		 l->id, l->device->decl.name, l->bar, l->size, (unsigned)l->owner_uid,
		 wire_reason_name(l->reason));
	tell_revoked(d, l);
	closep(&l->fd);
	if (l->timer)
		event_free(l->timer);
	l->timer = NULL;
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

/* References to l's buffer besides the daemon's own: 0 once its device is closed (every
 * buffer of a closed device is dead), 1 when the backend cannot tell (assume held). */
static int holders(const struct lease *l)
{
	const struct device *dev = l->device;

	if (!dev->handle)
		return 0;
	int h = dev->ops->holders(dev->handle, l->fd);
	return h < 0 ? 1 : h;
}

static void arm_tick(struct daemon *d)
{
	static const struct timeval tick = { 0, REVOKE_TICK_MS * 1000 };

	if (!evtimer_pending(d->ev_revoke_tick, NULL))
		evtimer_add(d->ev_revoke_tick, &tick);
}

static void begin_revoke(struct daemon *d, struct lease *l, int reason)
{
	lease_begin_revoke(l, reason, clock_monotonic_ms(),
			   (int64_t)l->device->decl.revoke_deadline_ms);
	LIST_INSERT_HEAD(&d->revoking, l, revoking);
	log_notice("lease %" PRIu64 " revoking: device=%s reason=%s holders must let go within "
		   "%" PRIu64 " ms",
		   l->id, l->device->decl.name, wire_reason_name(reason),
		   l->device->decl.revoke_deadline_ms);
	tell_revoking(d, l);
	arm_tick(d);
}

/* A lease its holder released lingers while a copy is held elsewhere and is never cycled
 * out; an admin's revoke or a policy that no longer allows it says the memory must become
 * unreachable, so the lease is revoked afresh: new reason, new deadline, enforced. */
static bool escalates(const struct lease *l, int reason)
{
	return l->state == LEASE_REVOKING && l->reason == P2PBUF__REASON__REASON_RELEASED &&
	       (reason == P2PBUF__REASON__REASON_ADMIN || reason == P2PBUF__REASON__REASON_POLICY);
}

void revoke_lease(struct daemon *d, struct lease *l, int reason)
{
	if (escalates(l, reason)) {
		LIST_REMOVE(l, revoking);
		l->revoking.le_prev = NULL;
		l->state = LEASE_ACTIVE;
		l->lingering = false;
	}
	if (l->state != LEASE_ACTIVE)
		return; /* already on its way out: the first reason stands */
	if (holders(l) == 0)
		revoke_end_lease(d, l, reason);
	else
		begin_revoke(d, l, reason);
}

void revoke_release(struct daemon *d, struct lease *l)
{
	if (holders(l) == 0)
		revoke_end_lease(d, l, P2PBUF__REASON__REASON_RELEASED);
	else if (l->state == LEASE_ACTIVE)
		begin_revoke(d, l, P2PBUF__REASON__REASON_RELEASED);
}

void revoke_owner_gone(struct daemon *d, struct lease *l)
{
	lease_forget_owner(l);
	revoke_lease(d, l, P2PBUF__REASON__REASON_OWNER_DISCONNECTED);
}

/* Whether a holder that keeps l past its deadline makes the device cycle. A holder that
 * released its own lease is never cycled out: the lease lingers, counted against quotas. */
static bool enforced(const struct lease *l)
{
	return l->reason != P2PBUF__REASON__REASON_RELEASED &&
	       l->device->decl.revocation == POLICY_REVOKE_ENFORCE;
}

/* Past the deadline with holders left. Returns true if leases were ended (the list changed). */
static bool overdue(struct daemon *d, struct lease *l, int h)
{
	struct device *dev = l->device;

	if (!enforced(l)) {
		if (!l->lingering)
			log_warning("lease %" PRIu64
				    " on %s: %d holder(s) kept it past the deadline "
				    "(reason %s); not enforced, it ends when they close it",
				    l->id, dev->decl.name, h, wire_reason_name(l->reason));
		l->lingering = true;
		return false;
	}
	log_warning("lease %" PRIu64 " on %s: %d holder(s) kept it past the deadline (reason %s); "
		    "cycling the device, which ends its other %u lease(s)",
		    l->id, dev->decl.name, h, wire_reason_name(l->reason), dev->n_leases - 1);
	if (registry_cycle(dev, P2PBUF__REASON__REASON_DEVICE_CYCLE) < 0)
		return false; /* a cycle is already under way; it ends them */
	return true;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	int64_t now = clock_monotonic_ms();
	struct lease *l, *next;

restart:
	for (l = LIST_FIRST(&d->revoking); l; l = next) {
		next = LIST_NEXT(l, revoking);
		int h = holders(l);
		if (h == 0)
			revoke_end_lease(d, l, l->reason);
		else if (lease_deadline_passed(l, now) && overdue(d, l, h))
			goto restart;
	}
	if (!LIST_EMPTY(&d->revoking))
		arm_tick(d);
}

static void on_ttl(evutil_socket_t fd, short what, void *arg)
{
	struct lease *l = arg;

	revoke_lease(l->device->d, l, P2PBUF__REASON__REASON_TTL);
}

int revoke_arm_ttl(struct daemon *d, struct lease *l)
{
	if (!l->expires_ms)
		return 0;
	int64_t ms = l->expires_ms - clock_realtime_ms();
	struct timeval tv = { .tv_sec = ms > 0 ? ms / 1000 : 0,
			      .tv_usec = ms > 0 ? (ms % 1000) * 1000 : 0 };
	l->timer = evtimer_new(d->base, on_ttl, l);
	if (!l->timer || evtimer_add(l->timer, &tv) < 0)
		return -ENOMEM;
	return 0;
}

/* The rule of the current policy that allows l now, with room under its max-leases as
 * counted in counts, or -1. */
static int allowing_rule(const struct daemon *d, const struct lease *l, const unsigned *counts)
{
	int dev = policy_find_device(d->policy, l->device->decl.name);
	const struct policy_rule *rule = NULL;

	if (dev < 0 || !l->owner)
		return -1;
	while ((rule = policy_match_export(d->policy, &l->owner->peer, (size_t)dev, l->bar,
					   l->ranges, l->n_ranges, rule))) {
		size_t i = (size_t)(rule - d->policy->rules);
		if (!rule->max_leases || counts[i] < rule->max_leases)
			return (int)i;
	}
	return -1;
}

int revoke_recheck_policy(struct daemon *d)
{
	unsigned *counts = calloc(d->policy->n_rules + 1, sizeof(*counts));
	struct lease *l, *next;

	if (!counts)
		return -ENOMEM;
	free(d->rule_leases);
	d->rule_leases = counts;
	for (l = TAILQ_FIRST(&d->leases.all); l; l = next) {
		next = TAILQ_NEXT(l, in_table);
		l->rule = l->state == LEASE_ACTIVE ? allowing_rule(d, l, counts) : -1;
		if (l->rule >= 0) {
			counts[l->rule]++;
			snprintf(l->rule_where, sizeof(l->rule_where), "%s",
				 d->policy->rules[l->rule].where);
			continue;
		}
		if (l->state == LEASE_ACTIVE)
			revoke_lease(d, l, P2PBUF__REASON__REASON_POLICY);
	}
	return 0;
}

int revoke_init(struct daemon *d)
{
	LIST_INIT(&d->revoking);
	d->ev_revoke_tick = evtimer_new(d->base, on_tick, d);
	return d->ev_revoke_tick ? 0 : -ENOMEM;
}

void revoke_fini(struct daemon *d)
{
	if (d->ev_revoke_tick)
		event_free(d->ev_revoke_tick);
	d->ev_revoke_tick = NULL;
}
