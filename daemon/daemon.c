#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "daemon.h"
#include "events.h"
#include "handlers.h"
#include "macro.h"
#include "session.h"

/* ---- what the lower modules report ---- */

static void on_revoking(void *ctx, const struct lease *l)
{
	audit_revoking(l);
	events_lease_revoking(ctx, l);
}

static void on_ended(void *ctx, const struct lease *l)
{
	audit_ended(l);
	events_lease_revoked(ctx, l);
}

static void on_overdue(void *ctx, const struct lease *l, int holders, bool enforced)
{
	audit_overdue(l, holders, enforced);
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

static void on_answer(void *ctx, void *token, uint64_t request_id, int error, const char *msg)
{
	struct session *s = token;

	conn_reply(s->conn, request_id, error, msg, NULL, -1);
}

/* ---- start and stop ---- */

int daemon_start(struct daemon *d, struct event_base *base, struct policy *policy)
{
	const struct revoke_callbacks rcb = { on_revoking, on_ended, on_overdue, d };
	const struct registry_callbacks gcb = { on_state_changed, on_buffers_dying, on_answer, d };
	const struct server_options sopt = { .socket_path = d->opt.socket_path,
					     .max_clients = d->opt.max_clients,
					     .max_clients_per_user = d->opt.max_clients_per_user,
					     .hello_timeout_ms = d->opt.hello_timeout_ms,
					     .max_queued_bytes = d->opt.max_queued_bytes,
					     .socket_group = d->opt.socket_group,
					     .socket_mode = d->opt.socket_mode };
	const struct server_callbacks scb = { on_accepted, on_request, on_closed, d };
	int r;

	d->base = base;
	d->policy = policy;
	if (!d->clock)
		d->clock = &clock_system;
	TAILQ_INIT(&d->sessions);
	LIST_INIT(&d->subscribers);
	d->page_size = device_page_size();
	d->started_ms = d->clock->monotonic_ms(d->clock->ctx);
	r = lease_table_init(&d->leases, d->opt.max_leases, policy->n_rules);
	if (r < 0)
		return r;
	r = revoke_new(base, &d->leases, d->clock, &rcb, &d->revoke);
	if (r < 0)
		return r;
	/* The socket first, so clients queue in its backlog while devices open. */
	r = server_new(base, &sopt, &scb, &d->server);
	if (r < 0)
		return r;
	r = worker_new(base, &d->worker);
	if (r < 0)
		return r;
	return registry_new(base, d->worker, policy, d->backend, &gcb, &d->registry);
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

/* Every step that can fail comes before the first change: the counts are computed into a
 * new array and each lease's next rule into its scratch field, and only then is anything
 * swapped in. Revoking what the new policy no longer allows cannot fail. */
int daemon_reload(struct daemon *d, struct policy *p, char **ret_error)
{
	const char *why = device_change(d, p);
	unsigned *counts = why ? NULL : calloc(p->n_rules + 1, sizeof(*counts));
	struct lease *l, *next;
	unsigned revoked = 0;
	char summary[128];

	if (why || !counts) {
		*ret_error = strdup(why ? why : "out of memory");
		policy_free(p);
		return why ? -EINVAL : -ENOMEM;
	}
	/* Lingering leases count too: quotas hold until a buffer is really let go. */
	TAILQ_FOREACH (l, &d->leases.all, in_table) {
		l->next_rule = allowing_rule(p, l, counts);
		if (l->next_rule >= 0)
			counts[l->next_rule]++;
	}
	free(lease_table_swap_rules(&d->leases, counts, p->n_rules));
	for (size_t i = 0; i < p->n_devices; i++)
		registry_update(d->registry, i, &p->devices[i]);
	struct policy *old = d->policy;
	d->policy = p;
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
	policy_free(old);
	snprintf(summary, sizeof(summary), "%zu devices, %zu rules, %u lease(s) no longer allowed",
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
