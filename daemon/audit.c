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
#define ID_UNLOGGED "7d3a1c5e2b8f4e0a9c6d1f2e3a4b5c66"

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

unsigned audit_lease_lines_per_s = AUDIT_LEASE_LINES_DEFAULT;

/* Start an entry. Its fields' room (16 KiB) is left as it is: only what is filled is read,
 * and clearing it for every grant cost more than formatting the line. */
static void entry_start(struct entry *e, const char *id, int priority)
{
	e->id = id;
	e->priority = priority;
	e->n = 0;
}

/* Whether the entry will be logged at all: nothing is formatted for one that will not. */
static bool wanted(const struct entry *e)
{
	return e->priority <= log_max_priority;
}

/* Whether journald runs here (its socket is writable), looked at once: an entry's fields are
 * for the journal only, and are not formatted where there is none. */
static bool journal_there(void)
{
	if (journal < 0)
		journal = access(JOURNAL_SOCKET, W_OK) == 0;
	return journal;
}

/* Whether the entry's structured fields will be read: formatting a lease's nine of them cost
 * more than its line, for every lease a reset ends. */
static bool fields_wanted(const struct entry *e)
{
	return wanted(e) && journal_there();
}

static void field(struct entry *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void field(struct entry *e, const char *fmt, ...)
{
	va_list ap;

	if (e->n == FIELDS_MAX || !fields_wanted(e))
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

	if (!wanted(e))
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (!journal_there() || !log_to_journal())
		log_msg(e->priority, "%s", line);
	if (!journal_there())
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

	if (!fields_wanted(e))
		return;
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

/* Tell how many of p's routine lease lines were not logged one by one, if any were. */
static void flush_unlogged(struct peer *p)
{
	struct peer_audit *a = &p->audit;
	struct entry e;

	if (!a->unlogged_grants && !a->unlogged_ends)
		return;
	entry_start(&e, ID_UNLOGGED, LOG_INFO);
	field(&e, "P2PBUF_UNLOGGED_GRANTS=%lu", a->unlogged_grants);
	field(&e, "P2PBUF_UNLOGGED_ENDS=%lu", a->unlogged_ends);
	peer_fields(&e, p);
	emit(&e,
	     "uid=%u pid=%d: %lu grant(s) and %lu lease end(s) not logged one by one "
	     "(at most %u lease lines a second per connection are)",
	     (unsigned)p->view.uid, (int)p->pid, a->unlogged_grants, a->unlogged_ends,
	     audit_lease_lines_per_s);
	a->unlogged_grants = a->unlogged_ends = 0;
}

/* Grants, and ends that their holders chose (a release, a disconnection), are what any
 * client causes at will, one per request: logged one by one up to audit_lease_lines_per_s a
 * second per connection, counted beyond, and the counts told before its next line and when
 * the connection closes. Without the bound, one client cycling buffers writes thousands of
 * lines a second, and journald's own limit (per service) would then drop the daemon's
 * other lines too: revocations, denials, device errors. Once the connection has closed,
 * what is left is bounded by the leases it held: those are logged one by one. */
static bool routine_line(const struct lease *l, bool grant)
{
	struct peer_audit *a = &l->peer->audit;
	unsigned suppressed;

	if (LOG_INFO > log_max_priority)
		return false;
	if (!audit_lease_lines_per_s || a->closed)
		return true;
	a->limit.interval_ms = 1000;
	a->limit.burst = audit_lease_lines_per_s;
	if (!log_ratelimit_allow(&a->limit, clock_monotonic_ms(), &suppressed)) {
		if (grant)
			a->unlogged_grants++;
		else
			a->unlogged_ends++;
		return false;
	}
	flush_unlogged(l->peer);
	return true;
}

void audit_peer_closed(struct peer *p)
{
	flush_unlogged(p);
	p->audit.closed = true;
}

void audit_granted(const struct lease *l)
{
	struct entry e;
	char label[ESCAPED_MAX];

	if (!routine_line(l, true))
		return;
	entry_start(&e, ID_GRANTED, LOG_INFO);
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
	struct entry e;
	char obj[ESCAPED_MAX], text[ESCAPED_MAX];
	char bar_text[16] = "";
	bool lease = strcmp(what, "revoke") == 0;
	unsigned suppressed;

	if (!log_ratelimit_allow(&denied_limit, clock_monotonic_ms(), &suppressed))
		return;
	entry_start(&e, ID_DENIED, LOG_NOTICE);
	if (suppressed) {
		struct entry s;
		entry_start(&s, NULL, LOG_NOTICE);
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
	struct entry e;
	entry_start(&e, NULL, LOG_NOTICE);

	emit(&e,
	     "lease %" PRIu64 " revoking: device=%s reason=%s holders must let go within "
	     "%" PRIu64 " ms",
	     l->id, device_name(l), wire_reason_name(l->reason),
	     l->device->decl.revoke_deadline_ms);
}

void audit_overdue(const struct lease *l, int holders, bool enforced)
{
	struct entry e;
	entry_start(&e, NULL, LOG_WARNING);

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
	struct entry e;

	if (lease_reason_chosen(l->reason) && !routine_line(l, false))
		return;
	entry_start(&e, ID_ENDED, LOG_INFO);
	lease_fields(&e, l);
	field(&e, "P2PBUF_REASON=%s", wire_reason_name(l->reason));
	emit(&e, "lease %" PRIu64 " ended: device=%s bar=%u size=%" PRIu64 " uid=%u reason=%s",
	     l->id, device_name(l), l->bar, l->size, (unsigned)l->peer->view.uid,
	     wire_reason_name(l->reason));
}

void audit_admin_revoke(const struct peer *p, const struct lease *l)
{
	struct entry e;
	entry_start(&e, NULL, LOG_NOTICE);

	emit(&e, "revoke: lease=%" PRIu64 " by admin uid=%u pid=%d", l->id, (unsigned)p->view.uid,
	     (int)p->pid);
}

void audit_reload_request(const struct peer *p, const char *path)
{
	struct entry e;
	entry_start(&e, NULL, LOG_NOTICE);

	field(&e, "P2PBUF_POLICY=%s", path);
	emit(&e, "reload: asked for by admin uid=%u pid=%d", (unsigned)p->view.uid, (int)p->pid);
}

void audit_reset(const struct peer *p, const struct device *dev)
{
	struct entry e;
	entry_start(&e, ID_RESET, LOG_NOTICE);

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
	struct entry e;
	entry_start(&e, ID_DEVICE_STATE, LOG_ERR);

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
	struct entry e;
	entry_start(&e, ID_RELOAD, ok ? LOG_NOTICE : LOG_ERR);

	field(&e, "P2PBUF_POLICY=%s", path);
	field(&e, "P2PBUF_RESULT=%s", ok ? "reloaded" : "refused");
	if (ok)
		emit(&e, "policy %s reloaded: %s", path, summary);
	else
		emit(&e, "reload refused, keeping the current policy: %s", summary);
}

void audit_restart(unsigned adopted, unsigned recorded)
{
	struct entry e;
	entry_start(&e, NULL, LOG_NOTICE);

	emit(&e, "restart: took over %u of %u recorded lease(s) from the previous instance",
	     adopted, recorded);
}

void audit_restart_dropped(uint64_t id, const char *what, const char *why)
{
	struct entry e;
	entry_start(&e, NULL, LOG_WARNING);

	if (id)
		emit(&e,
		     "restart: lease %" PRIu64 " on %s not taken over: %s; its device is cycled",
		     id, what ? what : "(no device)", why);
	else
		emit(&e, "restart: parked fd %s closed: %s", what, why);
}

void audit_restart_refused(const char *why)
{
	struct entry e;
	entry_start(&e, NULL, LOG_ERR);

	emit(&e, "restart: %s; every parked fd was closed, its buffers revoked", why);
}

void audit_reclaimed(const struct peer *p, const struct lease *l)
{
	struct entry e;
	entry_start(&e, NULL, LOG_INFO);

	emit(&e, "reclaimed: lease=%" PRIu64 " by uid=%u pid=%d", l->id, (unsigned)p->view.uid,
	     (int)p->pid);
}

void audit_record_rewrite_failed(int error)
{
	struct entry e;
	entry_start(&e, NULL, LOG_WARNING);

	emit(&e, "the state record could not be rewritten: %s; it keeps the old one",
	     strerror(-error));
}
