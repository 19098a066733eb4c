#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "audit.h"
#include "log.h"
#include "wire.h"

#define ESCAPED_MAX (4 * 256 + 1) /* the longest client string, every byte escaped */

char *audit_escape(const char *text, char *buf, size_t len)
{
	size_t o = 0;

	for (const unsigned char *p = (const unsigned char *)(text ? text : ""); *p; p++) {
		bool plain = *p >= 0x20 && *p < 0x7f && *p != '\\';
		if (o + (plain ? 1 : 4) >= len)
			break;
		if (plain)
			buf[o++] = (char)*p;
		else
			o += (size_t)snprintf(buf + o, len - o, "\\x%02x", *p);
	}
	buf[o] = '\0';
	return buf;
}

static const char *device_name(const struct lease *l)
{
	return l->device->decl.name;
}

void audit_granted(const struct lease *l)
{
	char label[ESCAPED_MAX];

	log_info("granted: lease=%" PRIu64 " uid=%u pid=%d device=%s bar=%u ranges=%zu "
		 "size=%" PRIu64 " rule=%s label=%s",
		 l->id, (unsigned)l->peer->view.uid, (int)l->peer->pid, device_name(l), l->bar,
		 l->n_ranges, l->size, l->rule_where, audit_escape(l->label, label, sizeof(label)));
}

void audit_denied(const struct peer *p, const char *what, const char *object, int bar, int error,
		  const char *msg)
{
	char obj[ESCAPED_MAX], text[2 * ESCAPED_MAX];
	char bar_text[16] = "";

	if (bar >= 0)
		snprintf(bar_text, sizeof(bar_text), " bar=%d", bar);
	log_notice("denied: %s uid=%u pid=%d %s=%s%s error=%s: %s", what, (unsigned)p->view.uid,
		   (int)p->pid, strcmp(what, "revoke") == 0 ? "lease" : "device",
		   audit_escape(object, obj, sizeof(obj)), bar_text, strerror(-error),
		   audit_escape(msg, text, sizeof(text)));
}

void audit_revoking(const struct lease *l)
{
	log_notice("lease %" PRIu64 " revoking: device=%s reason=%s holders must let go within "
		   "%" PRIu64 " ms",
		   l->id, device_name(l), wire_reason_name(l->reason),
		   l->device->decl.revoke_deadline_ms);
}

void audit_overdue(const struct lease *l, int holders, bool enforced)
{
	if (enforced)
		log_warning("lease %" PRIu64 " on %s: %d holder(s) kept it past the deadline "
			    "(reason %s); cycling the device, which ends its other %u lease(s)",
			    l->id, device_name(l), holders, wire_reason_name(l->reason),
			    l->device->leases.n - 1);
	else
		log_warning("lease %" PRIu64 " on %s: %d holder(s) kept it past the deadline "
			    "(reason %s); not enforced, it ends when they close it",
			    l->id, device_name(l), holders, wire_reason_name(l->reason));
}

void audit_ended(const struct lease *l)
{
	log_info("lease %" PRIu64 " ended: device=%s bar=%u size=%" PRIu64 " uid=%u reason=%s",
		 l->id, device_name(l), l->bar, l->size, (unsigned)l->peer->view.uid,
		 wire_reason_name(l->reason));
}

void audit_admin_revoke(const struct peer *p, const struct lease *l)
{
	log_notice("revoke: lease=%" PRIu64 " by admin uid=%u pid=%d", l->id, (unsigned)p->view.uid,
		   (int)p->pid);
}

void audit_reset(const struct peer *p, const struct device *dev)
{
	log_notice("reset: device=%s by uid=%u pid=%d", dev->decl.name, (unsigned)p->view.uid,
		   (int)p->pid);
}

void audit_device_state(const struct device *dev)
{
	const char *where = dev->decl.kind == POLICY_DEVICE_SIM ? "(simulated)" : dev->decl.pci;
	const char *state = wire_device_state_name(dev->state);
	const char *sep = dev->message[0] ? ": " : "";

	if (dev->state == P2PBUF__DEVICE_STATE_KIND__DEVICE_READY)
		log_info("device %s: %s %s %s, generation %u%s%s", dev->decl.name, dev->ops->name,
			 where, state, dev->generation, sep, dev->message);
	else if (dev->state == P2PBUF__DEVICE_STATE_KIND__DEVICE_CYCLING)
		log_notice("device %s: %s%s%s", dev->decl.name, state, sep, dev->message);
	else
		log_error("device %s (%s): %s%s%s", dev->decl.name, where, state, sep,
			  dev->message);
}

void audit_reload(const char *path, bool ok, const char *summary)
{
	if (ok)
		log_notice("policy %s reloaded: %s", path, summary);
	else
		log_error("reload refused, keeping the current policy: %s", summary);
}
