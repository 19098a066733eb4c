#include <errno.h>
#include <sys/random.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "daemon.h"
#include "handlers.h"
#include "macro.h"
#include "p2pbuf.h"
#include "peer.h"
#include "session.h"
#include "text.h"

#define MSG_MAX 320
#define LIST_PAGE_BYTES (WIRE_MAX_RECORD - 1024) /* room left for the reply's envelope */
#define RELOAD_MAX_MESSAGE (WIRE_MAX_RECORD - 1024)

/* The probed kernel capabilities as the wire carries them; caps[] holds the four answers. */
static void fill_caps(const struct probe_caps *pc, P2pbuf__KernelCaps *kc,
		      P2pbuf__Capability caps[4])
{
	const enum probe_answer answers[4] = { pc->iommufd, pc->vfio_cdev, pc->dma_buf_export,
					       pc->per_buffer_revoke };
	const char *const reasons[4] = { pc->iommufd_reason, pc->vfio_cdev_reason,
					 pc->dma_buf_export_reason, pc->per_buffer_revoke_reason };

	p2pbuf__kernel_caps__init(kc);
	kc->kernel_release = (char *)pc->release;
	for (int i = 0; i < 4; i++) {
		p2pbuf__capability__init(&caps[i]);
		caps[i].has_answer = true;
		caps[i].answer = (P2pbuf__CapAnswer)answers[i];
		caps[i].reason = (char *)reasons[i];
	}
	kc->iommufd = &caps[0];
	kc->vfio_cdev = &caps[1];
	kc->dma_buf_export = &caps[2];
	kc->per_buffer_revoke = &caps[3];
}

static void handle_hello(struct session *c, const P2pbuf__Request *req)
{
	const P2pbuf__Hello *h = req->hello;
	P2pbuf__HelloReply hr = P2PBUF__HELLO_REPLY__INIT;
	P2pbuf__Reply reply = P2PBUF__REPLY__INIT;
	char msg[MSG_MAX];

	hr.has_major = hr.has_minor = true;
	hr.major = P2PBUF_PROTO_VERSION_MAJOR;
	hr.minor = P2PBUF_PROTO_VERSION_MINOR;
	hr.server_version = (char *)PACKAGE_VERSION;
	P2pbuf__KernelCaps kc;
	P2pbuf__Capability caps[4];
	fill_caps(&c->d->caps, &kc, caps);
	hr.kernel_caps = &kc;
	reply.body_case = P2PBUF__REPLY__BODY_HELLO;
	reply.hello = &hr;
	if (!h->has_major || h->major != P2PBUF_PROTO_VERSION_MAJOR) {
		snprintf(msg, sizeof(msg),
			 "p2pbufd %s speaks protocol %d.%d; this client speaks %u.%u",
			 PACKAGE_VERSION, P2PBUF_PROTO_VERSION_MAJOR, P2PBUF_PROTO_VERSION_MINOR,
			 h->major, h->minor);
		conn_reply(c->conn, req->request_id, -EPROTONOSUPPORT, msg, &reply, -1);
		conn_close(c->conn, "protocol major version mismatch");
		return;
	}
	c->hello = true;
	/* Of what the client offers, the daemon grants what it knows. */
	hr.has_features = true;
	hr.features = h->features & P2PBUF__FEATURE__FEATURE_EVENT_BATCH;
	conn_set_event_batch(c->conn, hr.features & P2PBUF__FEATURE__FEATURE_EVENT_BATCH);
	conn_reply(c->conn, req->request_id, 0, NULL, &reply, -1);
}

static bool is_admin(const struct session *c)
{
	return policy_is_admin(c->d->policy, &c->peer->view);
}

static bool is_observer(const struct session *c)
{
	return policy_is_observer(c->d->policy, &c->peer->view);
}

/* ---- devices ---- */

struct device_msg { /* protobuf-c views of one device, filled in place */
	P2pbuf__Device dev;
	P2pbuf__Bar bars[DEVICE_MAX_BARS];
	P2pbuf__Bar *barp[DEVICE_MAX_BARS];
	P2pbuf__Range reserved[DEVICE_MAX_BARS][2];
	P2pbuf__Range *reservedp[DEVICE_MAX_BARS][2];
};

static void add_reserved(struct device_msg *m, size_t b, const struct range *r)
{
	P2pbuf__Bar *bar = &m->bars[b];
	P2pbuf__Range *pr = &m->reserved[b][bar->n_reserved];

	p2pbuf__range__init(pr);
	pr->has_offset = pr->has_length = true;
	pr->offset = r->offset;
	pr->length = r->length;
	m->reservedp[b][bar->n_reserved++] = pr;
	bar->reserved = m->reservedp[b];
}

static void fill_bars(struct device_msg *m, const struct device *dev)
{
	const struct device_info *info = &dev->info;

	for (unsigned i = 0; i < DEVICE_MAX_BARS; i++) {
		if (!info->bars[i].size || info->bars[i].is_io)
			continue;
		size_t b = m->dev.n_bars;
		P2pbuf__Bar *bar = &m->bars[b];
		p2pbuf__bar__init(bar);
		bar->has_index = bar->has_size = bar->has_is_64bit = bar->has_prefetchable = true;
		bar->index = i;
		bar->size = info->bars[i].size;
		bar->is_64bit = info->bars[i].is_64bit;
		bar->prefetchable = info->bars[i].prefetchable;
		if (info->msix.present && info->msix.table_bar == i)
			add_reserved(m, b, &info->msix.table);
		if (info->msix.present && info->msix.pba_bar == i)
			add_reserved(m, b, &info->msix.pba);
		m->barp[b] = bar;
		m->dev.n_bars++;
	}
	m->dev.bars = m->barp;
}

static void fill_device(struct device_msg *m, const struct device *dev)
{
	bool sim = dev->decl.kind == POLICY_DEVICE_SIM;

	p2pbuf__device__init(&m->dev);
	m->dev.name = (char *)dev->decl.name;
	m->dev.address = (char *)(sim ? "sim" : dev->decl.pci);
	m->dev.backend = (char *)dev->ops->name;
	m->dev.has_simulated = m->dev.has_state = m->dev.has_generation = true;
	m->dev.has_leases = true;
	m->dev.simulated = sim;
	m->dev.state = dev->state;
	m->dev.generation = dev->generation;
	m->dev.leases = dev->leases.n;
	if (dev->message[0])
		m->dev.message = (char *)dev->message;
	/* While cycling the worker owns the device; its last known BARs are shown from info,
	 * which only the loop writes. */
	if (dev->state != P2PBUF__DEVICE_STATE_KIND__DEVICE_FAILED)
		fill_bars(m, dev);
}

static void handle_list_devices(struct session *c, const P2pbuf__Request *req)
{
	struct registry *reg = c->d->registry;
	size_t n = registry_count(reg);
	P2pbuf__ListDevicesReply ldr = P2PBUF__LIST_DEVICES_REPLY__INIT;
	P2pbuf__Reply reply = P2PBUF__REPLY__INIT;
	struct device_msg *msgs = calloc(n + 1, sizeof(*msgs));
	P2pbuf__Device **ptrs = calloc(n + 1, sizeof(*ptrs));

	if (!msgs || !ptrs) {
		conn_reply(c->conn, req->request_id, -ENOMEM, "out of memory", NULL, -1);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		fill_device(&msgs[i], registry_device(reg, i));
		ptrs[i] = &msgs[i].dev;
	}
	ldr.n_devices = n;
	ldr.devices = ptrs;
	reply.body_case = P2PBUF__REPLY__BODY_LIST_DEVICES;
	reply.list_devices = &ldr;
	conn_reply(c->conn, req->request_id, 0, NULL, &reply, -1);
out:
	free(ptrs);
	free(msgs);
}

/* ---- export ---- */

/* The bytes ranges[0..n) ask for, saturating (device_check_ranges refuses an overflow
 * later; here it only has to exceed every max-bytes). */
static uint64_t asked_bytes(const struct range *r, size_t n)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < n; i++)
		sum = sum + r[i].length < sum ? UINT64_MAX : sum + r[i].length;
	return sum;
}

/* The first rule that allows the request and still has room under its max-leases and
 * max-bytes; -EDQUOT naming the limit (max_what) when every allowing rule is full. */
static int pick_rule(struct session *c, size_t dev_index, unsigned bar, const struct range *r,
		     size_t n, const struct policy_rule **ret_rule, const char **ret_full)
{
	const struct daemon *d = c->d;
	const struct policy_rule *rule = NULL;
	const char *full = NULL;
	uint64_t want = asked_bytes(r, n);

	while (
	    (rule = policy_match_export(d->policy, &c->peer->view, dev_index, bar, r, n, rule))) {
		size_t i = (size_t)(rule - d->policy->rules);
		if (rule->max_leases && d->leases.rule_leases[i] >= rule->max_leases)
			full = full ? full : "max-leases";
		else if (rule->max_bytes && (want > rule->max_bytes ||
					     d->leases.rule_bytes[i] > rule->max_bytes - want))
			full = full ? full : "max-bytes";
		else {
			*ret_rule = rule;
			return 0;
		}
	}
	*ret_full = full;
	return full ? -EDQUOT : -EPERM;
}

struct export_req { /* a decoded, checked Export */
	struct device *dev;
	unsigned bar;
	struct range ranges[WIRE_MAX_RANGES];
	size_t n;
	uint64_t size;
	const struct policy_rule *rule;
	const char *label;
};

/* A denial in words for the peer who asked: what is missing, from the policy's own
 * explanation, without listing rules that concern other users. */
static void denial_message(struct session *c, const struct export_req *x, char *msg, size_t len)
{
	const struct policy_rule *near = NULL;
	char who[160], why[256];
	enum policy_verdict v =
	    policy_explain_export(c->d->policy, &c->peer->view, x->dev->decl.name, x->bar,
				  x->ranges, x->n, &near, why, sizeof(why));

	peer_describe(c->peer, who, sizeof(who));
	switch (v) {
	case POLICY_NO_DEVICE:
	case POLICY_NO_RULE_FOR_DEVICE:
		snprintf(msg, len, "denied by policy: no rule allows exports from device %s",
			 x->dev->decl.name);
		break;
	case POLICY_NO_RULE_FOR_BAR:
		snprintf(msg, len,
			 "denied by policy: no rule allows %s to export from BAR %u of device %s",
			 who, x->bar, x->dev->decl.name);
		break;
	case POLICY_RANGE_OUTSIDE:
		snprintf(
		    msg, len,
		    "denied by policy: %s outside what %s allows %.100s on BAR %u of device %s",
		    x->n > 1 ? "these ranges lie" : "this range lies",
		    near ? near->where : "the policy", who, x->bar, x->dev->decl.name);
		break;
	default:
		snprintf(msg, len, "denied by policy: no rule allows %s to export from device %s",
			 who, x->dev->decl.name);
		break;
	}
}

static int export_decode(struct session *c, const P2pbuf__Export *e, struct export_req *x,
			 char *msg, size_t len)
{
	x->dev = registry_find(c->d->registry, e->device);
	if (!x->dev) {
		snprintf(msg, len, "unknown device \"%s\" (see p2pbuf-client devices)", e->device);
		return -ENODEV;
	}
	switch (x->dev->state) {
	case P2PBUF__DEVICE_STATE_KIND__DEVICE_READY:
		break;
	case P2PBUF__DEVICE_STATE_KIND__DEVICE_CYCLING:
		snprintf(msg, len, "device %s is being cycled; ask again when it is ready",
			 e->device);
		return -EBUSY;
	case P2PBUF__DEVICE_STATE_KIND__DEVICE_GONE:
		snprintf(msg, len, "device %s is gone: %.280s", e->device, x->dev->message);
		return -ENXIO;
	default:
		snprintf(msg, len, "device %s is not available: %.280s", e->device,
			 x->dev->message);
		return -EIO;
	}
	x->bar = e->bar;
	x->label = e->label;
	x->n = e->n_ranges;
	for (size_t i = 0; i < x->n; i++)
		x->ranges[i] = (struct range){ e->ranges[i]->offset, e->ranges[i]->length };
	if (x->n == 0) {
		/* No ranges: the whole BAR. */
		if (x->bar >= DEVICE_MAX_BARS || !x->dev->info.bars[x->bar].size) {
			snprintf(msg, len, "device %s has no BAR %u", e->device, x->bar);
			return -ENXIO;
		}
		x->ranges[0] = (struct range){ 0, x->dev->info.bars[x->bar].size };
		x->n = 1;
	}
	return 0;
}

/* Policy, then ranges, then quotas: the order in which a refusal tells the least. */
static int export_check(struct session *c, struct export_req *x, char *msg, size_t len)
{
	struct daemon *d = c->d;
	int dev_index = policy_find_device(d->policy, x->dev->decl.name);
	const char *full = NULL;
	int r = dev_index < 0
		    ? -EPERM
		    : pick_rule(c, (size_t)dev_index, x->bar, x->ranges, x->n, &x->rule, &full);

	if (r == -EPERM) {
		denial_message(c, x, msg, len);
		return r;
	}
	if (r == -EDQUOT) {
		snprintf(msg, len, "every policy rule that allows this is at its %s", full);
		return r;
	}
	r = device_check_ranges(&x->dev->info, x->bar, x->ranges, x->n, d->page_size,
				d->opt.max_lease_size, &x->size, msg, len);
	if (r < 0)
		return r;
	unsigned cap = d->opt.max_leases_per_user,
		 mine = lease_user_count(&d->leases, c->peer->view.uid);
	if (cap && mine >= cap) {
		snprintf(msg, len,
			 "uid %u holds %u leases, the most one user may hold "
			 "(--max-leases-per-user)",
			 (unsigned)c->peer->view.uid, mine);
		return -EDQUOT;
	}
	if (c->leases.n >= d->opt.max_leases_per_client) {
		snprintf(msg, len,
			 "this connection holds %u leases, the most allowed "
			 "(--max-leases-per-client)",
			 c->leases.n);
		return -EDQUOT;
	}
	return 0;
}

static struct lease *lease_create(struct session *c, const struct export_req *x, int *ret_err,
				  char *msg, size_t len)
{
	struct daemon *d = c->d;
	struct lease *l;
	char name[32];

	*ret_err = lease_new(&d->leases, x->n, &l);
	if (*ret_err < 0) {
		snprintf(msg, len, "the daemon holds %zu leases, the most allowed (--max-leases)",
			 d->leases.count);
		return NULL;
	}
	text_u64(name, sizeof(name), "p2pbuf-lease-", l->id);
	*ret_err =
	    x->dev->ops->export_ranges(x->dev->handle, x->bar, x->ranges, x->n, name, &l->fd);
	if (*ret_err < 0) {
		snprintf(msg, len, "export from device %s failed: %s", x->dev->decl.name,
			 strerror(-*ret_err));
		lease_delete(&d->leases, l);
		return NULL;
	}
	return l;
}

static void lease_fill(struct session *c, struct lease *l, const struct export_req *x)
{
	struct daemon *d = c->d;
	int64_t ttl = (int64_t)x->rule->ttl_ms;

	l->peer = peer_ref(c->peer);
	l->device = x->dev;
	l->generation = x->dev->generation;
	l->bar = x->bar;
	l->size = x->size;
	text_copy(l->rule_where, sizeof(l->rule_where), x->rule->where);
	text_copy(l->label, sizeof(l->label), x->label ? x->label : "");
	memcpy(l->ranges, x->ranges, x->n * sizeof(x->ranges[0]));
	l->created_ms = d->clock->realtime_ms(d->clock->ctx);
	l->expires_ms = ttl ? l->created_ms + ttl : 0;
	l->expires_mono = ttl ? d->clock->monotonic_ms(d->clock->ctx) + ttl : 0;
	lease_attach(&d->leases, l, &c->leases, &x->dev->leases, (int)(x->rule - d->policy->rules));
}

/* Compare tokens in time that does not depend on where they differ. */
static bool tokens_equal(const uint8_t *a, const uint8_t *b)
{
	uint8_t diff = 0;

	for (size_t i = 0; i < WIRE_TOKEN_LEN; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

static int64_t wall_time(void *ctx, int64_t mono)
{
	const struct daemon *d = ctx;

	return clock_wall_time(d->clock, mono);
}

static void rewrite_record(struct daemon *d)
{
	int r = persist_rewrite(d->persist, &d->leases, d->registry, wall_time, d);

	if (r < 0)
		audit_record_rewrite_failed(r);
}

/* The reply to an Export (with fd, the client's) or to a Reclaim (fd -1: the client has the
 * buffer already). */
static void export_reply(struct session *c, uint64_t request_id, const struct lease *l, int fd)
{
	P2pbuf__ExportReply er = P2PBUF__EXPORT_REPLY__INIT;
	P2pbuf__Reply reply = P2PBUF__REPLY__INIT;

	er.has_lease_id = er.has_size = er.has_generation = er.has_expires_ms = true;
	er.lease_id = l->id;
	er.size = l->size;
	er.generation = l->generation;
	er.expires_ms = l->expires_ms;
	er.has_reclaim_token = true;
	er.reclaim_token = (ProtobufCBinaryData){ sizeof(l->token), (uint8_t *)l->token };
	reply.body_case = P2PBUF__REPLY__BODY_EXPORT;
	reply.export = &er;
	conn_reply(c->conn, request_id, 0, NULL, &reply, fd);
}

/* An export refused by a quota while leases wait for their first count off the loop (the
 * simulated backend's) waits for that count instead of failing: those leases may be about to
 * end, and a client that releases and exports again must not depend on how fast holders are
 * counted. One export a connection waits; another is answered at once. */
static bool park_export(struct session *c, const P2pbuf__Request *req)
{
	if (c->parked || !revoke_settling(c->d->revoke))
		return false;
	size_t len = p2pbuf__request__get_packed_size(req);
	uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return false;
	c->parked_len = p2pbuf__request__pack(req, buf);
	c->parked = buf;
	return true;
}

void handlers_counted(struct daemon *d)
{
	struct session *s;

	/* A retried export may wait again (leases let go since), never on this list's order:
	 * each session is served once per count. Closing connections stay listed until the
	 * loop's next turn. */
	TAILQ_FOREACH (s, &d->sessions, link) {
		_cleanup_free_ uint8_t *buf = TAKE_PTR(s->parked);
		if (!buf)
			continue;
		P2pbuf__Request *req = p2pbuf__request__unpack(NULL, s->parked_len, buf);
		if (!req) {
			conn_close(s->conn, "out of memory");
			continue;
		}
		handle_request(s, req);
		p2pbuf__request__free_unpacked(req, NULL);
	}
}

/* A fresh reclaim token, SESSION_TOKENS at a time from the kernel, so that most exports make
 * no getrandom call of their own. Each is handed out once and wiped from the session. */
static int take_token(struct session *c, uint8_t *ret_token)
{
	if (c->n_tokens == 0) {
		if (getrandom(c->tokens, sizeof(c->tokens), 0) != (ssize_t)sizeof(c->tokens))
			return -EIO;
		c->n_tokens = SESSION_TOKENS;
	}
	c->n_tokens--;
	memcpy(ret_token, c->tokens[c->n_tokens], WIRE_TOKEN_LEN);
	explicit_bzero(c->tokens[c->n_tokens], WIRE_TOKEN_LEN);
	return 0;
}

static void handle_export(struct session *c, const P2pbuf__Request *req)
{
	const P2pbuf__Export *e = req->export;
	struct export_req x;
	char msg[MSG_MAX];
	int r = export_decode(c, e, &x, msg, sizeof(msg));

	if (r == 0)
		r = export_check(c, &x, msg, sizeof(msg));
	struct lease *l = r == 0 ? lease_create(c, &x, &r, msg, sizeof(msg)) : NULL;
	if (!l && r == -EDQUOT && park_export(c, req))
		return;
	if (!l) {
		audit_denied(c->peer, "export", e->device, (int)e->bar, r, msg);
		conn_reply(c->conn, req->request_id, r, msg, NULL, -1);
		return;
	}
	lease_fill(c, l, &x);
	if (take_token(c, l->token) < 0 || revoke_track(c->d->revoke, l) < 0) {
		/* Never handed out: nobody holds it, and its owner hears only the error. */
		lease_delete(&c->d->leases, l);
		conn_reply(c->conn, req->request_id, -ENOMEM, "out of memory", NULL, -1);
		return;
	}
	/* Parked and recorded before the client has it, so that a restart cannot lose it. */
	r = persist_lease_added(c->d->persist, l);
	l->parked = r == 0 && persist_enabled(c->d->persist);
	if (r < 0) {
		lease_delete(&c->d->leases, l);
		snprintf(msg, sizeof(msg), "%s",
			 r == -ENOSPC
			     ? "the service manager's fd store is full (FileDescriptorStoreMax=)"
			     : "the lease cannot be kept across a restart");
		audit_denied(c->peer, "export", e->device, (int)e->bar, r == -ENOSPC ? -EDQUOT : r,
			     msg);
		conn_reply(c->conn, req->request_id, r == -ENOSPC ? -EDQUOT : r, msg, NULL, -1);
		return;
	}
	/* A file of the client's own, where the backend makes one, lets a release see at once
	 * that the client let go (device_ops.unheld); the daemon's copy is sent otherwise. */
	_cleanup_close_ int copy = -1;
	const struct device_ops *ops = l->device->ops;
	l->own_file = ops->reopen && ops->reopen(l->device->handle, l->fd, &copy) == 0;
	export_reply(c, req->request_id, l, l->own_file ? copy : l->fd);
	/* Logged once the client has its buffer: the line (a write to the journal or stderr)
	 * is not part of the time an export takes. A connection that failed the send is only
	 * marked closing, so l lives on until the loop's next turn. */
	audit_granted(l);
	/* The record only grows: rewrite it from the live table, at a point where the table
	 * and the record agree (the new lease is in both). */
	if (persist_wants_rewrite(c->d->persist))
		rewrite_record(c->d);
}

/* ---- release, revoke, reset ---- */

static struct lease *find_lease(struct session *c, uint64_t id, bool any_owner, int *ret_err,
				char *msg, size_t len)
{
	struct lease *l = lease_find(&c->d->leases, id);

	bool admin = any_owner || is_admin(c);

	/* A lease that does not exist and another user's get the same answer: two answers
	 * would let anyone enumerate the live lease ids. Admins may act on any lease, so for
	 * them "not found" is the whole truth. */
	if (!l || (!admin && l->peer->view.uid != c->peer->view.uid)) {
		snprintf(msg, len, "no lease %" PRIu64 "%s (ended already?)", id,
			 admin ? "" : " of yours");
		*ret_err = -ENOENT;
		return NULL;
	}
	return l;
}

static void handle_release(struct session *c, const P2pbuf__Request *req)
{
	char msg[MSG_MAX];
	int r;
	struct lease *l = find_lease(c, req->release->lease_id, false, &r, msg, sizeof(msg));

	if (!l) {
		conn_reply(c->conn, req->request_id, r, msg, NULL, -1);
		return;
	}
	/* The exporting connection that ends an active lease itself needs no events; released
	 * from another process, or after being told to let go, the exporter hears the end. */
	if (session_of_lease(l) == c && l->state == LEASE_ACTIVE)
		l->owner_let_go = true;
	/* Answered first: the answer does not depend on what follows (a lease still held
	 * elsewhere goes on revoking), and the count and the end (reading fdinfo, closing the
	 * daemon's copy, the log line) then cost the client no wait. Nothing this connection
	 * sends next is read before they are done; a reply that fails to send closes the
	 * connection later, at the reaper, so l stays valid here. */
	conn_reply(c->conn, req->request_id, 0, NULL, NULL, -1);
	revoke_release(c->d->revoke, l);
}

/* Take back a lease this connection lost (a restart of the daemon, or its own connection):
 * its user, with its token. A lease another connection holds is not taken from it. */
static void handle_reclaim(struct session *c, const P2pbuf__Request *req)
{
	const P2pbuf__Reclaim *rc = req->reclaim;
	struct lease *l = lease_find(&c->d->leases, rc->lease_id);
	char msg[MSG_MAX];

	/* One answer for "no such lease", "not yours" and "wrong token": nothing to probe. */
	if (!l || l->peer->view.uid != c->peer->view.uid || rc->token.len != sizeof(l->token) ||
	    !tokens_equal(l->token, rc->token.data)) {
		snprintf(msg, sizeof(msg), "no lease %" PRIu64 " of yours with that token",
			 rc->lease_id);
		conn_reply(c->conn, req->request_id, -ENOENT, msg, NULL, -1);
		return;
	}
	if (l->owner && session_of_lease(l) != c) {
		snprintf(msg, sizeof(msg), "lease %" PRIu64 " is held by another connection",
			 rc->lease_id);
		conn_reply(c->conn, req->request_id, -EBUSY, msg, NULL, -1);
		return;
	}
	if (l->state == LEASE_ENDED) {
		snprintf(msg, sizeof(msg), "lease %" PRIu64 " has ended", rc->lease_id);
		conn_reply(c->conn, req->request_id, -ENOENT, msg, NULL, -1);
		return;
	}
	lease_set_owner(l, &c->leases);
	l->unclaimed = false;
	l->owner_let_go = false;
	bool was_revoking = l->state == LEASE_REVOKING;
	revoke_reclaimed(c->d->revoke, l);
	if (was_revoking && l->state == LEASE_ACTIVE)
		persist_lease_revoking(c->d->persist, l, 0); /* active again */
	audit_reclaimed(c->peer, l);
	export_reply(c, req->request_id, l, -1);
}

static bool need_admin(struct session *c, const P2pbuf__Request *req, const char *what,
		       const char *object)
{
	char msg[MSG_MAX];

	if (is_admin(c))
		return true;
	snprintf(msg, sizeof(msg), "%s needs an admin rule in the policy", what);
	audit_denied(c->peer, what, object, -1, -EPERM, msg);
	conn_reply(c->conn, req->request_id, -EPERM, msg, NULL, -1);
	return false;
}

static void handle_revoke(struct session *c, const P2pbuf__Request *req)
{
	char msg[MSG_MAX], id[24];
	int r;

	snprintf(id, sizeof(id), "lease %" PRIu64, req->revoke->lease_id);
	if (!need_admin(c, req, "revoke", id))
		return;
	struct lease *l = find_lease(c, req->revoke->lease_id, true, &r, msg, sizeof(msg));
	if (!l) {
		conn_reply(c->conn, req->request_id, r, msg, NULL, -1);
		return;
	}
	audit_admin_revoke(c->peer, l);
	revoke_lease(c->d->revoke, l, P2PBUF__REASON__REASON_ADMIN);
	conn_reply(c->conn, req->request_id, 0, NULL, NULL, -1);
}

static void handle_reset(struct session *c, const P2pbuf__Request *req)
{
	struct device *dev = registry_find(c->d->registry, req->reset->device);
	char msg[MSG_MAX];

	if (!need_admin(c, req, "reset", req->reset->device))
		return;
	if (!dev) {
		snprintf(msg, sizeof(msg), "unknown device \"%s\"", req->reset->device);
		conn_reply(c->conn, req->request_id, -ENODEV, msg, NULL, -1);
		return;
	}
	if (!dev->cycling) {
		audit_reset(c->peer, dev);
		int r = registry_cycle(dev, P2PBUF__REASON__REASON_RESET);
		if (r < 0) {
			snprintf(msg, sizeof(msg), "device %s cannot be reset: %s", dev->decl.name,
				 r == -ENXIO ? "it is gone" : strerror(-r));
			conn_reply(c->conn, req->request_id, r, msg, NULL, -1);
			return;
		}
	}
	/* Answered when the cycle ends, so the caller knows the device is ready again. */
	if (registry_add_waiter(dev, c, req->request_id) < 0)
		conn_reply(c->conn, req->request_id, -ENOMEM, "out of memory", NULL, -1);
}

/* ---- listings and status ---- */

/* One page of a lease listing: protobuf-c views of the leases, their ranges in one pool. */
struct lease_page {
	P2pbuf__Lease *leases;
	P2pbuf__Lease **ptrs;
	P2pbuf__Range *ranges;
	P2pbuf__Range **rangep;
	size_t n;
	bool more;
};

static void fill_lease(const struct daemon *d, P2pbuf__Lease *pl, const struct lease *l,
		       P2pbuf__Range *ranges, P2pbuf__Range **rangep)
{
	p2pbuf__lease__init(pl);
	pl->has_id = pl->has_bar = pl->has_size = pl->has_state = pl->has_reason = true;
	pl->has_owner_uid = pl->has_owner_pid = pl->has_created_ms = pl->has_expires_ms = true;
	pl->has_holders = pl->has_generation = true;
	pl->id = l->id;
	pl->device = (char *)l->device->decl.name;
	pl->bar = l->bar;
	pl->size = l->size;
	pl->label = (char *)l->label;
	pl->state = (P2pbuf__LeaseStateKind)l->state;
	pl->reason = l->reason;
	pl->owner_uid = l->peer->view.uid;
	pl->owner_pid = l->peer->pid;
	pl->created_ms = l->created_ms;
	pl->expires_ms = l->expires_ms;
	pl->rule = (char *)l->rule_where;
	pl->owner_unit = l->peer->unit;
	pl->generation = l->generation;
	if (l->state == LEASE_REVOKING) {
		pl->has_deadline_ms = pl->has_lingering = true;
		pl->deadline_ms = clock_wall_time(d->clock, l->deadline_ms);
		pl->lingering = l->lingering;
	}
	pl->holders = revoke_holders(l);
	for (size_t i = 0; i < l->n_ranges; i++) {
		p2pbuf__range__init(&ranges[i]);
		ranges[i].has_offset = ranges[i].has_length = true;
		ranges[i].offset = l->ranges[i].offset;
		ranges[i].length = l->ranges[i].length;
		rangep[i] = &ranges[i];
	}
	pl->n_ranges = l->n_ranges;
	pl->ranges = rangep;
}

/* Leases visible to c: every lease for observers asking for all, otherwise those of the
 * caller's uid (any of its connections). */
static bool visible(const struct session *c, const struct lease *l, bool all, uint64_t after)
{
	return l->id > after && (all || l->peer->view.uid == c->peer->view.uid);
}

/* Allocate a page for the first cap visible leases with id > after. */
static int page_alloc(struct session *c, bool all, uint64_t after, size_t cap,
		      struct lease_page *pg)
{
	size_t n = 0, n_ranges = 0;

	for (const struct lease *l = TAILQ_FIRST(&c->d->leases.all); l && n < cap;
	     l = TAILQ_NEXT(l, in_table)) {
		if (visible(c, l, all, after)) {
			n++;
			n_ranges += l->n_ranges;
		}
	}
	pg->leases = calloc(n + 1, sizeof(*pg->leases));
	pg->ptrs = calloc(n + 1, sizeof(*pg->ptrs));
	pg->ranges = calloc(n_ranges + 1, sizeof(*pg->ranges));
	pg->rangep = calloc(n_ranges + 1, sizeof(*pg->rangep));
	return pg->leases && pg->ptrs && pg->ranges && pg->rangep ? 0 : -ENOMEM;
}

static void page_free(struct lease_page *pg)
{
	free(pg->leases);
	free(pg->ptrs);
	free(pg->ranges);
	free(pg->rangep);
}

/* Fill the page in ascending id order with as many leases as fit one record. */
static void page_fill(struct session *c, bool all, uint64_t after, size_t cap,
		      struct lease_page *pg)
{
	size_t bytes = 0, r = 0;

	for (const struct lease *l = TAILQ_FIRST(&c->d->leases.all); l;
	     l = TAILQ_NEXT(l, in_table)) {
		if (!visible(c, l, all, after))
			continue;
		if (pg->n == cap) {
			pg->more = true;
			return;
		}
		P2pbuf__Lease *pl = &pg->leases[pg->n];
		fill_lease(c->d, pl, l, &pg->ranges[r], &pg->rangep[r]);
		size_t sz = protobuf_c_message_get_packed_size(&pl->base) + 8;
		if (bytes + sz > LIST_PAGE_BYTES) {
			pg->more = true;
			return;
		}
		bytes += sz;
		r += l->n_ranges;
		pg->ptrs[pg->n++] = pl;
	}
}

static void handle_list_leases(struct session *c, const P2pbuf__Request *req)
{
	bool all = req->list_leases->all;
	uint64_t after = req->list_leases->after_id;
	P2pbuf__ListLeasesReply llr = P2PBUF__LIST_LEASES_REPLY__INIT;
	P2pbuf__Reply reply = P2PBUF__REPLY__INIT;
	struct lease_page pg = {};
	const size_t cap = 512;

	if (all && !is_observer(c)) {
		conn_reply(c->conn, req->request_id, -EPERM,
			   "listing every lease needs an observer or admin rule in the policy",
			   NULL, -1);
		return;
	}
	if (page_alloc(c, all, after, cap, &pg) < 0) {
		conn_reply(c->conn, req->request_id, -ENOMEM, "out of memory", NULL, -1);
		goto out;
	}
	page_fill(c, all, after, cap, &pg);
	llr.n_leases = pg.n;
	llr.leases = pg.ptrs;
	llr.has_more = true;
	llr.more = pg.more;
	reply.body_case = P2PBUF__REPLY__BODY_LIST_LEASES;
	reply.list_leases = &llr;
	conn_reply(c->conn, req->request_id, 0, NULL, &reply, -1);
out:
	page_free(&pg);
}

static void handle_subscribe(struct session *c, const P2pbuf__Request *req)
{
	if (req->subscribe->all && !is_observer(c)) {
		conn_reply(c->conn, req->request_id, -EPERM,
			   "watching every lease needs an observer or admin rule in the policy",
			   NULL, -1);
		return;
	}
	session_subscribe(c, req->subscribe->all);
	conn_reply(c->conn, req->request_id, 0, NULL, NULL, -1);
}

static void handle_status(struct session *c, const P2pbuf__Request *req)
{
	struct daemon *d = c->d;
	P2pbuf__StatusReply sr = P2PBUF__STATUS_REPLY__INIT;
	P2pbuf__Reply reply = P2PBUF__REPLY__INIT;

	sr.version = (char *)PACKAGE_VERSION;
	sr.has_uptime_ms = sr.has_clients = sr.has_leases = sr.has_devices = sr.has_admin = true;
	sr.uptime_ms = (uint64_t)(d->clock->monotonic_ms(d->clock->ctx) - d->started_ms);
	sr.clients = server_clients(d->server);
	sr.leases = (uint32_t)d->leases.count;
	sr.devices = (uint32_t)registry_count(d->registry);
	sr.policy = (char *)d->opt.policy_path;
	sr.admin = is_admin(c);
	sr.has_max_leases = sr.has_max_clients = sr.has_fd_limit = true;
	sr.max_leases = d->opt.max_leases;
	sr.max_clients = d->opt.max_clients;
	sr.fd_limit = d->fd_limit;
	P2pbuf__KernelCaps kc;
	P2pbuf__Capability caps[4];
	fill_caps(&d->caps, &kc, caps);
	sr.kernel_caps = &kc;
	reply.body_case = P2PBUF__REPLY__BODY_STATUS;
	reply.status = &sr;
	conn_reply(c->conn, req->request_id, 0, NULL, &reply, -1);
}

/* Cut text (one item a line) to whole lines within max bytes, saying how many lines were
 * left out. */
static void cut_lines(char *text, size_t max)
{
	char note[64];
	size_t keep = 0, dropped = 0;

	for (char *nl = text; (nl = strchr(nl, '\n')); nl++) {
		size_t end = (size_t)(nl - text);
		if (end + sizeof(note) <= max)
			keep = end;
		else
			dropped++;
	}
	dropped++; /* the last line, which has no newline */
	snprintf(note, sizeof(note), "\n(and %zu more)", dropped);
	memcpy(text + keep, note, strlen(note) + 1);
}

/* Reload: the admin's request, the same reload as SIGHUP's. A refusal carries every error in
 * the message, one a line (cut to fit one record). */
static void handle_reload(struct session *c, const P2pbuf__Request *req)
{
	P2pbuf__ReloadReply rr = P2PBUF__RELOAD_REPLY__INIT;
	P2pbuf__Reply reply = P2PBUF__REPLY__INIT;
	_cleanup_free_ char *err = NULL;
	struct reload_summary sum;

	if (!need_admin(c, req, "reload", c->d->opt.policy_path))
		return;
	audit_reload_request(c->peer, c->d->opt.policy_path);
	int r = c->d->reload_file(c->d, &sum, &err);
	if (r < 0) {
		if (err && strlen(err) > RELOAD_MAX_MESSAGE)
			cut_lines(err, RELOAD_MAX_MESSAGE);
		conn_reply(c->conn, req->request_id, r, err ? err : strerror(-r), NULL, -1);
		return;
	}
	rr.has_rules = rr.has_devices = rr.has_rules_added = rr.has_rules_removed = true;
	rr.has_devices_added = rr.has_devices_removed = rr.has_devices_changed = true;
	rr.has_leases_revoked = true;
	rr.rules = (uint32_t)c->d->policy->n_rules;
	rr.devices = (uint32_t)c->d->policy->n_devices;
	rr.rules_added = sum.rules_added;
	rr.rules_removed = sum.rules_removed;
	rr.devices_added = sum.devices_added;
	rr.devices_removed = sum.devices_removed;
	rr.devices_changed = sum.devices_changed;
	rr.leases_revoked = sum.leases_revoked;
	reply.body_case = P2PBUF__REPLY__BODY_RELOAD;
	reply.reload = &rr;
	conn_reply(c->conn, req->request_id, 0, NULL, &reply, -1);
}

typedef void (*handler_fn)(struct session *c, const P2pbuf__Request *req);

static const handler_fn handlers[] = {
	[P2PBUF__REQUEST__BODY_HELLO] = handle_hello,
	[P2PBUF__REQUEST__BODY_LIST_DEVICES] = handle_list_devices,
	[P2PBUF__REQUEST__BODY_EXPORT] = handle_export,
	[P2PBUF__REQUEST__BODY_RELEASE] = handle_release,
	[P2PBUF__REQUEST__BODY_LIST_LEASES] = handle_list_leases,
	[P2PBUF__REQUEST__BODY_SUBSCRIBE] = handle_subscribe,
	[P2PBUF__REQUEST__BODY_RESET] = handle_reset,
	[P2PBUF__REQUEST__BODY_STATUS] = handle_status,
	[P2PBUF__REQUEST__BODY_REVOKE] = handle_revoke,
	[P2PBUF__REQUEST__BODY_RECLAIM] = handle_reclaim,
	[P2PBUF__REQUEST__BODY_RELOAD] = handle_reload,
};

void handle_request(struct session *c, const P2pbuf__Request *req)
{
	size_t k = (size_t)req->body_case;

	if (k >= ARRAY_SIZE(handlers) || !handlers[k]) {
		conn_reply(c->conn, req->request_id, -EOPNOTSUPP, "unknown request type", NULL, -1);
		return;
	}
	if (!c->hello && k != P2PBUF__REQUEST__BODY_HELLO) {
		conn_reply(c->conn, req->request_id, -EPROTO, "send Hello first", NULL, -1);
		return;
	}
	if (c->d->stopping) {
		conn_reply(c->conn, req->request_id, -ESHUTDOWN, "p2pbufd is stopping", NULL, -1);
		return;
	}
	handlers[k](c, req);
}
