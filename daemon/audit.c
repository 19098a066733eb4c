#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "audit.h"
#include "clock.h"
#include "log.h"
#include "macro.h"
#include "wire.h"

#define ESCAPED_MAX (4 * 256 + 1) /* the longest client string, every byte escaped */
#define FIELDS_MAX 16
#define JOURNAL_SOCKET "/run/systemd/journal/socket"

/* The stable MESSAGE_IDs, one per kind of audit event (listed in p2pbufd(8)). */
#define ID_GRANTED "7d3a1c5e2b8f4e0a9c6d1f2e3a4b5c60"
#define ID_DENIED "7d3a1c5e2b8f4e0a9c6d1f2e3a4b5c61"
#define ID_ENDED "7d3a1c5e2b8f4e0a9c6d1f2e3a4b5c62"
#define ID_RESET "7d3a1c5e2b8f4e0a9c6d1f2e3a4b5c63"
#define ID_DEVICE_STATE "7d3a1c5e2b8f4e0a9c6d1f2e3a4b5c64"
#define ID_RELOAD "7d3a1c5e2b8f4e0a9c6d1f2e3a4b5c65"

static int journal = -1; /* whether journald is there; -1: not looked yet */
/* Denials are what a hostile client can cause at will, one per request: a few a second are
 * logged, the rest counted. Module state like journal above: audit.c is the one place that
 * writes the trail. */
static struct log_ratelimit denied_limit = LOG_RATELIMIT_INIT(1000, 20);

/* One audit entry: the readable line, and the journal's structured fields. */
struct entry {
	const char *id; /* MESSAGE_ID, or NULL for lines that are not audit events */
	int priority;
	char fields[FIELDS_MAX][ESCAPED_MAX + 32];
	size_t n;
};

static void field(struct entry *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void field(struct entry *e, const char *fmt, ...)
{
	va_list ap;

	if (e->n == FIELDS_MAX)
		return;
	va_start(ap, fmt);
	vsnprintf(e->fields[e->n++], sizeof(e->fields[0]), fmt, ap);
	va_end(ap);
}

static void emit(struct entry *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Log the line on stderr unless stderr is the journal, and send the structured entry to the
 * journal where journald runs. */
static void emit(struct entry *e, const char *fmt, ...)
{
	char line[2048], message[2100], prio[16], id[64];
	struct iovec iov[FIELDS_MAX + 4];
	size_t n = 0;
	va_list ap;

	if (e->priority > log_max_priority)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (journal < 0)
		journal = access(JOURNAL_SOCKET, W_OK) == 0;
	if (!journal || !log_to_journal())
		log_msg(e->priority, "%s", line);
	if (!journal)
		return;
	snprintf(message, sizeof(message), "MESSAGE=%s", line);
	snprintf(prio, sizeof(prio), "PRIORITY=%d", e->priority);
	iov[n++] = (struct iovec){ message, strlen(message) };
	iov[n++] = (struct iovec){ prio, strlen(prio) };
	if (e->id) {
		snprintf(id, sizeof(id), "MESSAGE_ID=%s", e->id);
		iov[n++] = (struct iovec){ id, strlen(id) };
	}
	for (size_t i = 0; i < e->n; i++)
		iov[n++] = (struct iovec){ e->fields[i], strlen(e->fields[i]) };
	sd_journal_sendv(iov, (int)n);
}

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

static void peer_fields(struct entry *e, const struct peer *p)
{
	field(e, "P2PBUF_UID=%u", (unsigned)p->view.uid);
	field(e, "P2PBUF_PID=%d", (int)p->pid);
	if (p->unit)
		field(e, "P2PBUF_UNIT=%s", p->unit);
}

static void lease_fields(struct entry *e, const struct lease *l)
{
	char ranges[ESCAPED_MAX];
	size_t o = 0;

	ranges[0] = '\0';
	for (size_t i = 0; i < l->n_ranges && o < sizeof(ranges); i++)
		o += (size_t)snprintf(ranges + o, sizeof(ranges) - o, "%s0x%" PRIx64 "+0x%" PRIx64,
				      i ? "," : "", l->ranges[i].offset, l->ranges[i].length);
	field(e, "P2PBUF_LEASE=%" PRIu64, l->id);
	field(e, "P2PBUF_DEVICE=%s", l->device->decl.name);
	field(e, "P2PBUF_BAR=%u", l->bar);
	field(e, "P2PBUF_RANGES=%s", ranges);
	field(e, "P2PBUF_SIZE=%" PRIu64, l->size);
	field(e, "P2PBUF_RULE=%s", l->rule_where);
	peer_fields(e, l->peer);
}

static const char *device_name(const struct lease *l)
{
	return l->device->decl.name;
}

void audit_granted(const struct lease *l)
{
	struct entry e = { .id = ID_GRANTED, .priority = LOG_INFO };
	char label[ESCAPED_MAX];

	audit_escape(l->label, label, sizeof(label));
	lease_fields(&e, l);
	field(&e, "P2PBUF_LABEL=%s", label);
	emit(&e,
	     "granted: lease=%" PRIu64 " uid=%u pid=%d device=%s bar=%u ranges=%zu "
	     "size=%" PRIu64 " rule=%s label=%s",
	     l->id, (unsigned)l->peer->view.uid, (int)l->peer->pid, device_name(l), l->bar,
	     l->n_ranges, l->size, l->rule_where, label);
}

void audit_denied(const struct peer *p, const char *what, const char *object, int bar, int error,
		  const char *msg)
{
	struct entry e = { .id = ID_DENIED, .priority = LOG_NOTICE };
	char obj[ESCAPED_MAX], text[ESCAPED_MAX];
	char bar_text[16] = "";
	bool lease = strcmp(what, "revoke") == 0;
	unsigned suppressed;

	if (!log_ratelimit_allow(&denied_limit, clock_monotonic_ms(), &suppressed))
		return;
	if (suppressed) {
		struct entry s = { .priority = LOG_NOTICE };
		field(&s, "P2PBUF_SUPPRESSED=%u", suppressed);
		emit(&s, "denied: %u similar denials suppressed (at most %u a second are logged)",
		     suppressed, denied_limit.burst);
	}
	audit_escape(object, obj, sizeof(obj));
	audit_escape(msg, text, sizeof(text));
	if (bar >= 0) {
		snprintf(bar_text, sizeof(bar_text), " bar=%d", bar);
		field(&e, "P2PBUF_BAR=%d", bar);
	}
	field(&e, "P2PBUF_REQUEST=%s", what);
	field(&e, lease ? "P2PBUF_LEASE=%s" : "P2PBUF_DEVICE=%s", obj);
	field(&e, "P2PBUF_ERRNO=%d", -error);
	field(&e, "P2PBUF_REASON=%s", text);
	peer_fields(&e, p);
	emit(&e, "denied: %s uid=%u pid=%d %s=%s%s error=%s: %s", what, (unsigned)p->view.uid,
	     (int)p->pid, lease ? "lease" : "device", obj, bar_text, strerror(-error), text);
}

void audit_revoking(const struct lease *l)
{
	struct entry e = { .priority = LOG_NOTICE };

	emit(&e,
	     "lease %" PRIu64 " revoking: device=%s reason=%s holders must let go within "
	     "%" PRIu64 " ms",
	     l->id, device_name(l), wire_reason_name(l->reason),
	     l->device->decl.revoke_deadline_ms);
}

void audit_overdue(const struct lease *l, int holders, bool enforced)
{
	struct entry e = { .priority = LOG_WARNING };

	if (enforced)
		emit(&e,
		     "lease %" PRIu64 " on %s: %d holder(s) kept it past the deadline (reason %s); "
		     "%s, which ends its other %u lease(s)",
		     l->id, device_name(l), holders, wire_reason_name(l->reason),
		     l->device->removing ? "closing the removed device" : "cycling the device",
		     l->device->leases.n - 1);
	else
		emit(&e,
		     "lease %" PRIu64 " on %s: %d holder(s) kept it past the deadline (reason %s); "
		     "not enforced, it ends when they close it",
		     l->id, device_name(l), holders, wire_reason_name(l->reason));
}

void audit_ended(const struct lease *l)
{
	struct entry e = { .id = ID_ENDED, .priority = LOG_INFO };

	lease_fields(&e, l);
	field(&e, "P2PBUF_REASON=%s", wire_reason_name(l->reason));
	emit(&e, "lease %" PRIu64 " ended: device=%s bar=%u size=%" PRIu64 " uid=%u reason=%s",
	     l->id, device_name(l), l->bar, l->size, (unsigned)l->peer->view.uid,
	     wire_reason_name(l->reason));
}

void audit_admin_revoke(const struct peer *p, const struct lease *l)
{
	struct entry e = { .priority = LOG_NOTICE };

	emit(&e, "revoke: lease=%" PRIu64 " by admin uid=%u pid=%d", l->id, (unsigned)p->view.uid,
	     (int)p->pid);
}

void audit_reload_request(const struct peer *p, const char *path)
{
	struct entry e = { .priority = LOG_NOTICE };

	field(&e, "P2PBUF_POLICY=%s", path);
	emit(&e, "reload: asked for by admin uid=%u pid=%d", (unsigned)p->view.uid, (int)p->pid);
}

void audit_reset(const struct peer *p, const struct device *dev)
{
	struct entry e = { .id = ID_RESET, .priority = LOG_NOTICE };

	field(&e, "P2PBUF_DEVICE=%s", dev->decl.name);
	peer_fields(&e, p);
	emit(&e, "reset: device=%s by uid=%u pid=%d", dev->decl.name, (unsigned)p->view.uid,
	     (int)p->pid);
}

void audit_device_state(const struct device *dev)
{
	const char *where = dev->decl.kind == POLICY_DEVICE_SIM ? "(simulated)" : dev->decl.pci;
	const char *state = wire_device_state_name(dev->state);
	const char *sep = dev->message[0] ? ": " : "";
	struct entry e = { .id = ID_DEVICE_STATE, .priority = LOG_ERR };

	field(&e, "P2PBUF_DEVICE=%s", dev->decl.name);
	field(&e, "P2PBUF_STATE=%s", state);
	field(&e, "P2PBUF_GENERATION=%u", dev->generation);
	if (dev->message[0])
		field(&e, "P2PBUF_REASON=%s", dev->message);
	if (dev->state == P2PBUF__DEVICE_STATE_KIND__DEVICE_READY) {
		e.priority = LOG_INFO;
		emit(&e, "device %s: %s %s %s, generation %u%s%s", dev->decl.name, dev->ops->name,
		     where, state, dev->generation, sep, dev->message);
	} else if (dev->state == P2PBUF__DEVICE_STATE_KIND__DEVICE_CYCLING) {
		e.priority = LOG_NOTICE;
		emit(&e, "device %s: %s%s%s", dev->decl.name, state, sep, dev->message);
	} else {
		emit(&e, "device %s (%s): %s%s%s", dev->decl.name, where, state, sep, dev->message);
	}
}

void audit_reload(const char *path, bool ok, const char *summary)
{
	struct entry e = { .id = ID_RELOAD, .priority = ok ? LOG_NOTICE : LOG_ERR };

	field(&e, "P2PBUF_POLICY=%s", path);
	field(&e, "P2PBUF_RESULT=%s", ok ? "reloaded" : "refused");
	if (ok)
		emit(&e, "policy %s reloaded: %s", path, summary);
	else
		emit(&e, "reload refused, keeping the current policy: %s", summary);
}

void audit_restart(unsigned adopted, unsigned recorded)
{
	struct entry e = { .priority = LOG_NOTICE };

	emit(&e, "restart: took over %u of %u recorded lease(s) from the previous instance",
	     adopted, recorded);
}

void audit_restart_dropped(uint64_t id, const char *what, const char *why)
{
	struct entry e = { .priority = LOG_WARNING };

	if (id)
		emit(&e,
		     "restart: lease %" PRIu64 " on %s not taken over: %s; its device is cycled",
		     id, what ? what : "(no device)", why);
	else
		emit(&e, "restart: parked fd %s closed: %s", what, why);
}

void audit_restart_refused(const char *why)
{
	struct entry e = { .priority = LOG_ERR };

	emit(&e, "restart: %s; every parked fd was closed, its buffers revoked", why);
}

void audit_reclaimed(const struct peer *p, const struct lease *l)
{
	struct entry e = { .priority = LOG_INFO };

	emit(&e, "reclaimed: lease=%" PRIu64 " by uid=%u pid=%d", l->id, (unsigned)p->view.uid,
	     (int)p->pid);
}

void audit_record_rewrite_failed(int error)
{
	struct entry e = { .priority = LOG_WARNING };

	emit(&e, "the state record could not be rewritten: %s; it keeps the old one",
	     strerror(-error));
}
