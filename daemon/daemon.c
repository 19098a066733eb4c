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
#include "macro.h"
#include "peer.h"
#include "session.h"

static int recheck(struct daemon *d, const struct policy *p, char **ret_error);

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

static void on_closing(void *ctx, const struct device *dev)
{
	struct daemon *d = ctx;

	persist_device_closing(d->persist, dev);
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
	gid_t groups[SERVER_MAX_GROUPS];
	size_t ng = rec->n_groups < ARRAY_SIZE(groups) ? rec->n_groups : ARRAY_SIZE(groups);
	struct lease *l;

	for (size_t i = 0; i < ng; i++)
		groups[i] = rec->groups[i];
	int r = lease_new_id(&d->leases, rec->id, rec->n_ranges, &l);
	if (r < 0) {
		close(fd);
		return r;
	}
	l->fd = fd;
	l->peer = peer_new(rec->uid, rec->gid, rec->pid, groups, ng);
	if (!l->peer) {
		lease_delete(&d->leases, l);
		return -ENOMEM;
	}
	l->peer->unit = rec->unit ? strdup(rec->unit) : NULL;
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
			cycle[dev - registry_device(d->registry, 0)] = true;
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
	char *err = NULL;

	if (!cycle)
		return -ENOMEM;
	unsigned adopted = adopt_leases(d, inv, cycle);
	drop_unknown(d, inv, cycle);
	int r = recheck(d, d->policy, &err);
	free(err);
	if (r < 0)
		return r;
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
	const struct registry_callbacks gcb = { on_state_changed, on_buffers_dying,
						on_answer,	  on_opened,
						on_closing,	  on_kept,
						on_rejected,	  d };
	const struct server_callbacks scb = { on_accepted, on_request, on_closed, d };
	struct inventory inv;
	char *err = NULL;
	int r;

	d->base = base;
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
		r = worker_new(base, &d->worker);
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
	/* Finished worker jobs complete once more, then the thread stops. */
	if (d->base)
		event_base_loop(d->base, EVLOOP_NONBLOCK);
	worker_free(d->worker);
	d->worker = NULL;
	lease_table_fini(&d->leases);
	revoke_free(d->revoke);
	d->revoke = NULL;
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

/* The first rule of p that allows l as its peer asked, with room under its max-leases as
 * counted so far in counts, or -1. */
static int allowing_rule(const struct policy *p, const struct lease *l, const unsigned *counts)
{
	int dev = policy_find_device(p, l->device->decl.name);
	const struct policy_rule *rule = NULL;

	if (dev < 0)
		return -1;
	while ((rule = policy_match_export(p, &l->peer->view, (size_t)dev, l->bar, l->ranges,
					   l->n_ranges, rule))) {
		size_t i = (size_t)(rule - p->rules);
		if (!rule->max_leases || counts[i] < rule->max_leases)
			return (int)i;
	}
	return -1;
}

/* Whether p declares the same devices, in the same order, as the registry has. */
static const char *device_change(const struct daemon *d, const struct policy *p)
{
	if (p->n_devices != registry_count(d->registry))
		return "the set of devices changed (restart p2pbufd to change devices)";
	for (size_t i = 0; i < p->n_devices; i++)
		if (!registry_same_device(&p->devices[i], &registry_device(d->registry, i)->decl))
			return "a device declaration changed (restart p2pbufd to change devices)";
	return NULL;
}

/* Count every live lease against the first rule of p that allows it (computed into a new
 * array before anything changes), swap the counts in, and revoke what p no longer allows.
 * Returns how many leases were revoked, or -ENOMEM with nothing changed. */
static int recheck(struct daemon *d, const struct policy *p, char **ret_error)
{
	unsigned *counts = calloc(p->n_rules + 1, sizeof(*counts));
	struct lease *l, *next;
	int revoked = 0;

	if (!counts) {
		*ret_error = strdup("out of memory");
		return -ENOMEM;
	}
	/* Lingering leases count too: quotas hold until a buffer is really let go. */
	TAILQ_FOREACH (l, &d->leases.all, in_table) {
		l->next_rule = allowing_rule(p, l, counts);
		if (l->next_rule >= 0)
			counts[l->next_rule]++;
	}
	free(lease_table_swap_rules(&d->leases, counts, p->n_rules));
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

/* Every step that can fail comes before the first change: the device check, then recheck()
 * computes its counts before it swaps anything. Revoking what the new policy no longer
 * allows cannot fail. */
int daemon_reload(struct daemon *d, struct policy *p, char **ret_error)
{
	const char *why = device_change(d, p);
	char summary[128];

	if (why) {
		*ret_error = strdup(why);
		policy_free(p);
		return -EINVAL;
	}
	int revoked = recheck(d, p, ret_error);
	if (revoked < 0) {
		policy_free(p);
		return revoked;
	}
	for (size_t i = 0; i < p->n_devices; i++)
		registry_update(d->registry, i, &p->devices[i]);
	policy_free(d->policy);
	d->policy = p;
	snprintf(summary, sizeof(summary), "%zu devices, %zu rules, %d lease(s) no longer allowed",
		 p->n_devices, p->n_rules, revoked);
	audit_reload(d->opt.policy_path, true, summary);
	*ret_error = NULL;
	return 0;
}

int daemon_reload_file(struct daemon *d, char **ret_error)
{
	struct policy *p = NULL;
	int r = policy_load(d->opt.policy_path, &policy_system_resolver, &p, ret_error);

	if (r == 0)
		r = daemon_reload(d, p, ret_error);
	else if (!*ret_error)
		*ret_error = strdup(strerror(-r));
	if (r < 0)
		audit_reload(d->opt.policy_path, false, *ret_error ? *ret_error : strerror(-r));
	return r;
}
