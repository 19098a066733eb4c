#include <errno.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "daemon.h"
#include "events.h"
#include "handlers.h"
#include "log.h"
#include "macro.h"
#include "peer.h"
#include "session.h"

/* Worker threads beyond one per device declared at start-up: devices a reload adds get threads
 * of their own too, up to this many (threads cannot be started once the sandbox is on). */
#define DAEMON_SPARE_THREADS 4

static unsigned recheck(struct daemon *d, const struct policy *p, unsigned *counts,
			uint64_t *bytes);

/* ---- what the lower modules report ---- */

static void on_revoking(void *ctx, const struct lease *l)
{
	struct daemon *d = ctx;

	audit_revoking(l);
	persist_lease_revoking(d->persist, l, clock_wall_time(d->clock, l->deadline_ms));
	events_lease_revoking(ctx, l);
}

/* Recorded, so that a restart before its count goes on revoking it. */
static void on_revoking_untold(void *ctx, const struct lease *l)
{
	struct daemon *d = ctx;

	persist_lease_revoking(d->persist, l, clock_wall_time(d->clock, l->deadline_ms));
}

static void on_ended(void *ctx, const struct lease *l)
{
	struct daemon *d = ctx;

	audit_ended(l);
	persist_lease_ended(d->persist, l);
	events_lease_revoked(ctx, l);
	registry_lease_ended(l->device);
}

static void on_overdue(void *ctx, const struct lease *l, int holders, bool enforced)
{
	audit_overdue(l, holders, enforced);
}

static void on_counted(void *ctx)
{
	handlers_counted(ctx);
}

static void on_state_changed(void *ctx, const struct device *dev)
{
	audit_device_state(dev);
	events_device_state(ctx, dev);
}

static void on_buffers_dying(void *ctx, struct device *dev, int reason)
{
	struct daemon *d = ctx;

	revoke_end_all(d->revoke, &dev->leases, reason);
}

static void *on_accepted(void *ctx, struct conn *c)
{
	return session_new(ctx, c);
}

static void on_request(void *ctx, void *data, const P2pbuf__Request *req)
{
	handle_request(data, req);
}

static void on_closed(void *ctx, void *data)
{
	session_free(data);
}

static void on_opened(void *ctx, const struct device *dev)
{
	struct daemon *d = ctx;

	/* An adopted device's fds are in the store already. */
	persist_device_opened(d->persist, dev, !(d->adopting && dev->adopted));
}

static void on_store_settle(void *ctx)
{
	const struct daemon *d = ctx;

	persist_barrier(d->persist);
}

static void on_closing(void *ctx, const struct device *dev)
{
	struct daemon *d = ctx;

	persist_device_closing(d->persist, dev, d->registry);
}

/* The roles a backend parks, as names for the store. */
static const char *const parked_roles[] = { "container", "iommufd", "group", "device" };

static ssize_t on_kept(void *ctx, const struct device *dev, struct parked_fd *fds,
		       uint32_t *ret_generation)
{
	struct daemon *d = ctx;
	const char *address = dev->decl.kind == POLICY_DEVICE_SIM ? "sim" : dev->decl.pci;
	const P2pbuf__StateDevice *sd =
	    d->adopting ? inventory_device(d->adopting, dev->decl.name) : NULL;
	char name[PERSIST_MAX_NAME];
	size_t n = 0;

	if (!sd || !sd->address || strcmp(sd->address, address) != 0)
		return -1;
	for (size_t i = 0; i < ARRAY_SIZE(parked_roles) && n < DEVICE_MAX_PARKED; i++) {
		snprintf(name, sizeof(name), "dev.%s.%s", dev->decl.name, parked_roles[i]);
		int fd = inventory_take(d->adopting, name);
		if (fd >= 0)
			fds[n++] = (struct parked_fd){ parked_roles[i], fd };
	}
	persist_count_kept(d->persist, (unsigned)n);
	*ret_generation = sd->generation;
	return (ssize_t)n;
}

static void on_rejected(void *ctx, const struct device *dev, const char *why)
{
	struct daemon *d = ctx;
	char name[PERSIST_MAX_NAME];

	audit_restart_dropped(0, dev->decl.name, why);
	for (size_t i = 0; i < ARRAY_SIZE(parked_roles); i++) {
		snprintf(name, sizeof(name), "dev.%s.%s", dev->decl.name, parked_roles[i]);
		persist_forget(d->persist, name);
	}
}

static void on_hotplug(void *ctx, const struct hotplug_event *ev)
{
	struct daemon *d = ctx;

	if (d->registry && !d->stopping)
		hotplug_apply(d->registry, HOTPLUG_SYSFS, ev);
}

/* Follow udev's events (before the sandbox, which allows no new socket) and say in every
 * waiting device's message what brings it back. */
static const char *start_hotplug(struct daemon *d)
{
	bool udev = false;
	int r = hotplug_new(d->base, on_hotplug, d, &d->hotplug, &udev);

	if (r < 0) {
		log_warning("cannot follow udev events (%s): a device bound to vfio-pci after "
			    "start-up opens only at its reset (p2pbuf-client reset)",
			    strerror(-r));
		return "p2pbufd cannot follow udev events: once it is bound to vfio-pci, a "
		       "reset opens it";
	}
	if (!udev) {
		log_notice("udev is not running: a device bound to vfio-pci after start-up "
			   "opens only at its reset (p2pbuf-client reset)");
		return "udev is not running: once it is bound to vfio-pci, a reset opens it";
	}
	return "p2pbufd opens it when udev says it is bound to vfio-pci (or at a reset)";
}

static void on_answer(void *ctx, void *token, uint64_t request_id, int error, const char *msg)
{
	struct session *s = token;

	conn_reply(s->conn, request_id, error, msg, NULL, -1);
}

/* ---- start and stop ---- */

/* What the kernel offers, for clients to ask (Hello, Status). The export is probed on the
 * first vfio-pci device open, whose fd the backend lends for parking. */
static void probe_kernel(struct daemon *d)
{
	probe_caps(NULL, &d->caps);
	for (size_t i = 0; i < registry_count(d->registry); i++) {
		struct device *dev = registry_device(d->registry, i);
		struct parked_fd fds[DEVICE_MAX_PARKED];
		size_t n = dev->handle && dev->ops->park ? dev->ops->park(dev->handle, fds) : 0;
		for (size_t k = 0; k < n; k++)
			if (strcmp(fds[k].role, "device") == 0) {
				d->caps.dma_buf_export =
				    probe_dma_buf_export(fds[k].fd, d->caps.dma_buf_export_reason);
				return;
			}
	}
}

/* ---- adopting what a previous instance parked ---- */

/* Whether the parked fd is the buffer the record describes. */
static bool same_buffer(int fd, const P2pbuf__StateLease *rec)
{
	struct stat st;

	return fstat(fd, &st) == 0 && rec->has_inode && st.st_ino == rec->inode;
}

/* Re-create the lease rec describes around its parked buffer fd (owned from now on). */
static int adopt_lease(struct daemon *d, struct device *dev, const P2pbuf__StateLease *rec,
		       const P2pbuf__StateRevoking *rv, int fd)
{
	/* The record keeps every group the connection had, as gid_t's 32 bits. */
	size_t ng = rec->n_groups < SERVER_MAX_GROUPS ? rec->n_groups : SERVER_MAX_GROUPS;
	struct lease *l;

	int r = lease_new_id(&d->leases, rec->id, rec->n_ranges, &l);
	if (r < 0) {
		close(fd);
		return r;
	}
	l->fd = fd;
	l->peer = peer_new(rec->uid, rec->gid, rec->pid, (const gid_t *)rec->groups, ng);
	if (!l->peer) {
		lease_delete(&d->leases, l);
		return -ENOMEM;
	}
	peer_set_unit(l->peer, rec->unit ? strdup(rec->unit) : NULL);
	l->device = dev;
	l->generation = rec->generation;
	l->bar = rec->bar;
	l->size = rec->size;
	for (size_t i = 0; i < rec->n_ranges; i++)
		l->ranges[i] = (struct range){ rec->ranges[i]->offset, rec->ranges[i]->length };
	snprintf(l->label, sizeof(l->label), "%s", rec->label ? rec->label : "");
	snprintf(l->rule_where, sizeof(l->rule_where), "%s", rec->rule ? rec->rule : "");
	if (rec->token.len == sizeof(l->token))
		memcpy(l->token, rec->token.data, sizeof(l->token));
	l->created_ms = rec->created_ms;
	l->expires_ms = rec->expires_ms;
	/* Deadlines went through the record as wall-clock times: the new instance's monotonic
	 * clock starts elsewhere. */
	int64_t wall = d->clock->realtime_ms(d->clock->ctx),
		mono = d->clock->monotonic_ms(d->clock->ctx);
	l->expires_mono = l->expires_ms ? mono + (l->expires_ms - wall) : 0;
	if (l->expires_mono == 0 && l->expires_ms)
		l->expires_mono = 1;
	lease_attach(&d->leases, l, NULL, &dev->leases, -1);
	l->unclaimed = true;
	l->parked = true;
	revoke_track(d->revoke, l);
	if (rv)
		revoke_resume(d->revoke, l, rv->reason, mono + (rv->deadline_ms - wall),
			      rv->lingering);
	return 0;
}

/* dev's place among the registry's devices (they do not change during start-up). */
static size_t device_index(struct registry *reg, const struct device *dev)
{
	size_t i = 0;

	while (registry_device(reg, i) != dev)
		i++;
	return i;
}

/* Adopt every recorded lease whose device was adopted and whose buffer was parked. A lease
 * that does not match is closed; its device is cycled afterwards, since a holder may still
 * have a buffer the daemon can no longer account for. Returns how many were adopted. */
static unsigned adopt_leases(struct daemon *d, struct inventory *inv, bool *cycle)
{
	char name[PERSIST_MAX_NAME];
	unsigned adopted = 0;

	for (size_t i = 0; i < inv->n_leases; i++) {
		const P2pbuf__StateLease *rec = inv->leases[i];
		struct device *dev = rec->device ? registry_find(d->registry, rec->device) : NULL;
		snprintf(name, sizeof(name), "lease.%" PRIu64, rec->id);
		int fd = inventory_take(inv, name);
		bool ok = dev && dev->adopted &&
			  dev->state == P2PBUF__DEVICE_STATE_KIND__DEVICE_READY &&
			  rec->generation == dev->generation && fd >= 0 && same_buffer(fd, rec);
		if (ok && adopt_lease(d, dev, rec, inv->revoking[i], TAKE_FD(fd)) == 0) {
			adopted++;
			continue;
		}
		audit_restart_dropped(rec->id, rec->device,
				      fd < 0 ? "its buffer was not kept"
					     : "it does not match what was kept");
		closep(&fd);
		persist_forget(d->persist, name);
		if (dev)
			cycle[device_index(d->registry, dev)] = true;
	}
	if (inv->next_lease_id > d->leases.next_id)
		d->leases.next_id = inv->next_lease_id;
	persist_count_kept(d->persist, adopted);
	return adopted;
}

/* Close what nobody claimed: a buffer with no record means an untracked holder may exist, so
 * every adopted device is cycled. */
static void drop_unknown(struct daemon *d, struct inventory *inv, bool *cycle)
{
	for (size_t i = 0; i < inv->n_fds; i++) {
		if (inv->fds[i].fd < 0)
			continue;
		bool lease = strncmp(inv->fds[i].name, "lease.", 6) == 0;
		audit_restart_dropped(0, inv->fds[i].name, "nothing in the record claims it");
		closep(&inv->fds[i].fd);
		persist_forget(d->persist, inv->fds[i].name);
		for (size_t k = 0; lease && k < registry_count(d->registry); k++)
			cycle[k] = cycle[k] || registry_device(d->registry, k)->adopted;
	}
}

static void on_grace(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	struct lease *l, *next;

	/* revoke_owner_gone ends or revokes only l, so next stays valid. */
	for (l = TAILQ_FIRST(&d->leases.all); l; l = next) {
		next = TAILQ_NEXT(l, in_table);
		if (l->unclaimed) {
			l->unclaimed = false;
			revoke_owner_gone(d->revoke, l);
		}
	}
}

static int start_grace(struct daemon *d)
{
	struct timeval tv = { .tv_sec = (time_t)(d->opt.reclaim_grace_ms / 1000),
			      .tv_usec = (suseconds_t)(d->opt.reclaim_grace_ms % 1000 * 1000) };

	d->ev_grace = evtimer_new(d->base, on_grace, d);
	return d->ev_grace && evtimer_add(d->ev_grace, &tv) == 0 ? 0 : -ENOMEM;
}

/* After the devices: the leases, what did not match, the policy of today, the grace. */
static int adopt(struct daemon *d, struct inventory *inv)
{
	size_t n = registry_count(d->registry);
	_cleanup_free_ bool *cycle = calloc(n + 1, sizeof(*cycle));
	unsigned *counts = calloc(d->policy->n_rules + 1, sizeof(*counts));
	uint64_t *bytes = calloc(d->policy->n_rules + 1, sizeof(*bytes));

	if (!cycle || !counts || !bytes) {
		free(counts);
		free(bytes);
		return -ENOMEM;
	}
	unsigned adopted = adopt_leases(d, inv, cycle);
	drop_unknown(d, inv, cycle);
	recheck(d, d->policy, counts, bytes);
	for (size_t i = 0; i < n; i++)
		if (cycle[i])
			registry_cycle(registry_device(d->registry, i),
				       P2PBUF__REASON__REASON_RESTART);
	audit_restart(adopted, (unsigned)inv->n_leases);
	return adopted ? start_grace(d) : 0;
}

int daemon_start(struct daemon *d, struct event_base *base, struct policy *policy)
{
	const struct revoke_callbacks rcb = { .revoking = on_revoking,
					      .revoking_untold = on_revoking_untold,
					      .ended = on_ended,
					      .overdue = on_overdue,
					      .counted = on_counted,
					      .ctx = d };
	struct registry_callbacks gcb = { .state_changed = on_state_changed,
					  .buffers_dying = on_buffers_dying,
					  .answer = on_answer,
					  .opened = on_opened,
					  .closing = on_closing,
					  .kept = on_kept,
					  .rejected = on_rejected,
					  .store_settle = on_store_settle,
					  .ctx = d };
	const struct server_callbacks scb = { on_accepted, on_request, on_closed, d };
	struct inventory inv;
	char *err = NULL;
	int r;

	d->base = base;
	d->reload_file = daemon_reload_file;
	d->policy = policy;
	if (!d->clock)
		d->clock = &clock_system;
	TAILQ_INIT(&d->sessions);
	LIST_INIT(&d->subscribers);
	d->page_size = device_page_size();
	d->started_ms = d->clock->monotonic_ms(d->clock->ctx);
	/* What a previous instance parked, if the service manager kept anything. */
	r = inventory_load(&inv, &err);
	if (err)
		audit_restart_refused(err);
	free(err);
	if (r < 0 && !(r == -EPROTONOSUPPORT || r == -EBADMSG))
		return r;
	const struct server_options sopt = { .socket_path = d->opt.socket_path,
					     .max_clients = d->opt.max_clients,
					     .max_clients_per_user = d->opt.max_clients_per_user,
					     .hello_timeout_ms = d->opt.hello_timeout_ms,
					     .max_queued_bytes = d->opt.max_queued_bytes,
					     .socket_group = d->opt.socket_group,
					     .socket_mode = d->opt.socket_mode,
					     .listen_fd = TAKE_FD(inv.listen_fd) };
	r = lease_table_init(&d->leases, d->opt.max_leases, policy->n_rules);
	if (r == 0)
		r = revoke_new(base, &d->leases, d->clock, &rcb, &d->revoke);
	if (r == 0)
		r = persist_new(d->opt.fd_store_max, TAKE_FD(inv.state_fd), inv.state_seq,
				&d->persist);
	/* The socket first, so clients queue in its backlog while devices open. */
	if (r == 0)
		r = server_new(base, &sopt, &scb, &d->server);
	if (r == 0)
		/* A thread per declared device and a few for those a reload adds (up to the
		 * cap), all started now, before the sandbox: one device's stuck close delays no
		 * other's cycle. */
		r = worker_new_pool(base, (unsigned)policy->n_devices + DAEMON_SPARE_THREADS,
				    &d->worker);
	if (r == 0)
		gcb.wait_hint = start_hotplug(d);
	d->adopting = persist_enabled(d->persist) ? &inv : NULL;
	if (r == 0)
		r = registry_new(base, d->worker, policy, d->backend, &gcb, &d->registry);
	if (r == 0 && d->adopting)
		r = adopt(d, &inv);
	d->adopting = NULL;
	inventory_free(&inv);
	if (r == 0)
		probe_kernel(d);
	return r;
}

void daemon_stop(struct daemon *d)
{
	struct lease *l;

	if (d->stopping)
		return;
	d->stopping = true;
	while ((l = TAILQ_FIRST(&d->leases.all)))
		revoke_end(d->revoke, l, P2PBUF__REASON__REASON_SHUTDOWN);
	server_stop(d->server);
}

void daemon_hand_over(struct daemon *d)
{
	if (d->stopping)
		return;
	d->stopping = true;
	d->handing_over = true;
	server_stop(d->server);
}

void daemon_finish(struct daemon *d)
{
	server_free(d->server);
	d->server = NULL;
	/* Finished worker jobs complete once more; the devices close, each on its own thread;
	 * the threads stop once every device's job (a close the kernel holds up too) is done. */
	if (d->base)
		event_base_loop(d->base, EVLOOP_NONBLOCK);
	registry_close_all(d->registry);
	worker_free(d->worker);
	d->worker = NULL;
	lease_table_fini(&d->leases);
	revoke_free(d->revoke);
	d->revoke = NULL;
	hotplug_free(d->hotplug);
	d->hotplug = NULL;
	registry_free(d->registry);
	d->registry = NULL;
	persist_free(d->persist);
	d->persist = NULL;
	if (d->ev_grace)
		event_free(d->ev_grace);
	d->ev_grace = NULL;
	policy_free(d->policy);
	d->policy = NULL;
}

/* ---- policy ---- */

/* The first rule of p that allows l as its peer asked, with room under its max-leases and
 * max-bytes as counted so far in counts and bytes, or -1. A lease on a device being removed
 * has none. */
static int allowing_rule(const struct policy *p, const struct lease *l, const unsigned *counts,
			 const uint64_t *bytes)
{
	int dev = l->device->removing ? -1 : policy_find_device(p, l->device->decl.name);
	const struct policy_rule *rule = NULL;

	if (dev < 0)
		return -1;
	while ((rule = policy_match_export(p, &l->peer->view, (size_t)dev, l->bar, l->ranges,
					   l->n_ranges, rule))) {
		size_t i = (size_t)(rule - p->rules);
		if ((!rule->max_leases || counts[i] < rule->max_leases) &&
		    (!rule->max_bytes || bytes[i] + l->size <= rule->max_bytes))
			return (int)i;
	}
	return -1;
}

/* Count every live lease and its bytes against the first rule of p that allows it into
 * counts and bytes (p->n_rules zeroed entries each, owned from now on), swap the counts in,
 * and revoke what p no longer allows (which cannot fail). Returns how many leases were
 * revoked. */
static unsigned recheck(struct daemon *d, const struct policy *p, unsigned *counts, uint64_t *bytes)
{
	struct lease *l, *next;
	unsigned revoked = 0;

	/* Lingering leases count too: quotas hold until a buffer is really let go. */
	TAILQ_FOREACH (l, &d->leases.all, in_table) {
		l->next_rule = allowing_rule(p, l, counts, bytes);
		if (l->next_rule >= 0) {
			counts[l->next_rule]++;
			bytes[l->next_rule] += l->size;
		}
	}
	lease_table_swap_rules(&d->leases, counts, bytes, p->n_rules);
	for (l = TAILQ_FIRST(&d->leases.all); l; l = next) {
		next = TAILQ_NEXT(l, in_table);
		if (l->rule >= 0) {
			snprintf(l->rule_where, sizeof(l->rule_where), "%s",
				 p->rules[l->rule].where);
			continue;
		}
		/* revoke_lease ends or starts revoking l alone, so next stays valid. A lease
		 * already revoking for an enforced reason keeps it; a lingering one is revoked
		 * afresh, enforced. */
		revoke_lease(d->revoke, l, P2PBUF__REASON__REASON_POLICY);
		revoked++;
	}
	return revoked;
}

/* A rule of a policy, for comparing rules of two policies by what they say. */
struct rule_ref {
	const struct policy *p;
	const struct policy_rule *r;
};

static int cmp_u64(uint64_t a, uint64_t b)
{
	return a < b ? -1 : a > b;
}

/* Rules ordered by content (who, the device's name, BAR, range, limits), not by place. */
static int rule_cmp(const void *x, const void *y)
{
	const struct rule_ref *ra = x, *rb = y;
	const struct policy_rule *a = ra->r, *b = rb->r;
	int c = strcmp(ra->p->devices[a->device].name, rb->p->devices[b->device].name);

	if (c == 0)
		c = cmp_u64(a->who.kind, b->who.kind);
	if (c == 0)
		c = a->who.kind == POLICY_UNIT ? strcmp(a->who.name, b->who.name)
					       : cmp_u64(a->who.id, b->who.id);
	if (c == 0)
		c = cmp_u64((uint64_t)(a->bar + 1), (uint64_t)(b->bar + 1));
	if (c == 0)
		c = cmp_u64(a->has_range, b->has_range);
	if (c == 0 && a->has_range)
		c = cmp_u64(a->range.offset, b->range.offset);
	if (c == 0 && a->has_range)
		c = cmp_u64(a->range.length, b->range.length);
	if (c == 0)
		c = cmp_u64(a->max_leases, b->max_leases);
	if (c == 0)
		c = cmp_u64(a->max_bytes, b->max_bytes);
	return c ? c : cmp_u64(a->ttl_ms, b->ttl_ms);
}

/* p's rules, sorted by content. */
static struct rule_ref *sorted_rules(const struct policy *p)
{
	struct rule_ref *refs = calloc(p->n_rules + 1, sizeof(*refs));

	if (!refs)
		return NULL;
	for (size_t i = 0; i < p->n_rules; i++)
		refs[i] = (struct rule_ref){ p, &p->rules[i] };
	qsort(refs, p->n_rules, sizeof(*refs), rule_cmp);
	return refs;
}

/* How many rules of to are not in from (added) and of from not in to (removed), each rule
 * counted as often as it is written. -ENOMEM. */
static int rule_changes(const struct policy *from, const struct policy *to,
			struct reload_summary *summary)
{
	_cleanup_free_ struct rule_ref *a = sorted_rules(from);
	_cleanup_free_ struct rule_ref *b = sorted_rules(to);
	size_t i = 0, j = 0;

	if (!a || !b)
		return -ENOMEM;
	while (i < from->n_rules || j < to->n_rules) {
		int c = i == from->n_rules ? 1 : j == to->n_rules ? -1 : rule_cmp(&a[i], &b[j]);
		summary->rules_removed += c < 0;
		summary->rules_added += c > 0;
		i += c <= 0;
		j += c >= 0;
	}
	return 0;
}

static void log_reload(const struct daemon *d, const struct policy *p,
		       const struct reload_summary *s)
{
	char line[256];

	snprintf(line, sizeof(line),
		 "%zu devices, %zu rules; rules %u added, %u removed; devices %u added, %u "
		 "removed, %u changed; %u lease(s) revoked",
		 p->n_devices, p->n_rules, s->rules_added, s->rules_removed, s->devices_added,
		 s->devices_removed, s->devices_changed, s->leases_revoked);
	audit_reload(d->opt.policy_path, true, line);
}

/* Every step that can fail comes before the first change: the device plan, the rule
 * counts and the comparison of the rules allocate all they need. Then the registry takes
 * its changes, and recheck() revokes what the new policy no longer allows (the leases of
 * removed devices among them, which are closed once those have ended); neither can fail. */
int daemon_reload(struct daemon *d, struct policy *p, struct reload_summary *ret_summary,
		  char **ret_error)
{
	_cleanup_(registry_plan_freep) struct registry_plan *plan = NULL;
	unsigned *counts = calloc(p->n_rules + 1, sizeof(*counts));
	uint64_t *bytes = calloc(p->n_rules + 1, sizeof(*bytes));
	struct reload_summary s = {};

	if (!counts || !bytes || registry_plan_new(d->registry, p, &plan) < 0 ||
	    rule_changes(d->policy, p, &s) < 0) {
		free(counts);
		free(bytes);
		policy_free(p);
		*ret_error = strdup("out of memory");
		return -ENOMEM;
	}
	struct registry_changes ch = registry_plan_changes(plan);
	s.devices_added = ch.added;
	s.devices_removed = ch.removed;
	s.devices_changed = ch.changed;
	registry_commit(TAKE_PTR(plan));
	s.leases_revoked = recheck(d, p, counts, bytes);
	policy_free(d->policy);
	d->policy = p;
	log_reload(d, p, &s);
	if (ret_summary)
		*ret_summary = s;
	*ret_error = NULL;
	return 0;
}

/* Every error of a refused policy, one a line, then how many more were not kept; NULL when
 * memory ran out. */
static char *join_errors(const struct policy_diags *dg)
{
	size_t len = 0, used = 0;
	char *s;

	for (size_t i = 0; i < dg->n; i++)
		len += strlen(dg->v[i].file) + strlen(dg->v[i].message) + 32;
	s = malloc(len + 64);
	if (!s)
		return NULL;
	s[0] = '\0';
	for (size_t i = 0; i < dg->n; i++) {
		_cleanup_free_ char *one = policy_diag_format(&dg->v[i]);
		if (!dg->v[i].warning && one)
			used += (size_t)sprintf(s + used, "%s%s", used ? "\n" : "", one);
	}
	if (dg->dropped)
		sprintf(s + used, "%s(and %zu more)", used ? "\n" : "", dg->dropped);
	return s;
}

/* How many errors (not warnings) dg reports, those not kept included. */
static size_t count_errors(const struct policy_diags *dg)
{
	size_t n = dg->dropped;

	for (size_t i = 0; i < dg->n; i++)
		n += !dg->v[i].warning;
	return n;
}

int daemon_reload_file(struct daemon *d, struct reload_summary *ret_summary, char **ret_error)
{
	const struct policy_load_opts opts = { .flags = POLICY_LOAD_STRICT };
	struct policy_diags dg = { 0 };
	struct policy *p = NULL;
	size_t n_errors = 0;
	int r = policy_load_ex(d->opt.policy_path, &policy_system_resolver, &opts, &p, &dg);

	if (r == 0)
		r = daemon_reload(d, p, ret_summary, ret_error);
	else {
		*ret_error = dg.n ? join_errors(&dg) : NULL;
		n_errors = count_errors(&dg);
	}
	policy_diags_free(&dg);
	if (r < 0 && !*ret_error)
		*ret_error = strdup(strerror(-r));
	if (r < 0) {
		/* One log line: the first error and how many there are; the reply has them all. */
		const char *why = *ret_error ? *ret_error : strerror(-r);
		char line[512];
		snprintf(line, sizeof(line), "%.*s%s", (int)strcspn(why, "\n"), why,
			 n_errors > 1 ? " (and more errors: see p2pbuf-client policy check)" : "");
		audit_reload(d->opt.policy_path, false, line);
	}
	return r;
}
