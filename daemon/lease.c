#include <errno.h>
#include <stdlib.h>

#include "lease.h"
#include "macro.h"
#include "p2pbuf.pb-c.h"
#include "peer.h"

int lease_table_init(struct lease_table *t, size_t cap, size_t n_rules)
{
	size_t n = 16;

	while (n < cap)
		n <<= 1;
	*t = (struct lease_table){ 0 };
	t->buckets = calloc(n, sizeof(*t->buckets));
	t->rule_leases = calloc(n_rules + 1, sizeof(*t->rule_leases));
	t->rule_bytes = calloc(n_rules + 1, sizeof(*t->rule_bytes));
	t->user_pool = calloc(cap + 1, sizeof(*t->user_pool));
	if (!t->buckets || !t->rule_leases || !t->rule_bytes || !t->user_pool) {
		free(t->buckets);
		free(t->rule_leases);
		free(t->rule_bytes);
		free(t->user_pool);
		*t = (struct lease_table){ 0 };
		return -ENOMEM;
	}
	for (size_t i = 0; i < cap; i++) {
		t->user_pool[i].next = t->user_free;
		t->user_free = &t->user_pool[i];
	}
	TAILQ_INIT(&t->all);
	t->mask = n - 1;
	t->count = 0;
	t->cap = cap;
	t->next_id = 1;
	t->n_rules = n_rules;
	return 0;
}

void lease_table_fini(struct lease_table *t)
{
	struct lease *l;

	if (!t->buckets)
		return;
	while ((l = TAILQ_FIRST(&t->all)))
		lease_delete(t, l);
	free(t->buckets);
	free(t->rule_leases);
	free(t->rule_bytes);
	free(t->user_pool);
	t->buckets = NULL;
	t->rule_leases = NULL;
	t->rule_bytes = NULL;
	t->user_pool = NULL;
}

static struct lease_user **user_slot(struct lease_table *t, uid_t uid)
{
	struct lease_user **u = &t->users[uid % LEASE_USER_BUCKETS];

	while (*u && (*u)->uid != uid)
		u = &(*u)->next;
	return u;
}

unsigned lease_user_count(const struct lease_table *t, uid_t uid)
{
	for (const struct lease_user *u = t->users[uid % LEASE_USER_BUCKETS]; u; u = u->next)
		if (u->uid == uid)
			return u->n;
	return 0;
}

/* Count l under its peer's uid. The pool has an entry for every lease the table can hold, so
 * one is free whenever a lease of a new uid is attached. */
static void user_count(struct lease_table *t, struct lease *l)
{
	struct lease_user **slot;

	if (!l->peer || l->user_counted)
		return;
	slot = user_slot(t, l->peer->view.uid);
	if (!*slot) {
		*slot = t->user_free;
		t->user_free = (*slot)->next;
		**slot = (struct lease_user){ .uid = l->peer->view.uid };
	}
	(*slot)->n++;
	l->user_counted = true;
}

static void user_uncount(struct lease_table *t, struct lease *l)
{
	struct lease_user **slot, *u;

	if (!l->user_counted)
		return;
	slot = user_slot(t, l->peer->view.uid);
	u = *slot;
	if (u && --u->n == 0) {
		*slot = u->next;
		u->next = t->user_free;
		t->user_free = u;
	}
	l->user_counted = false;
}

int lease_new(struct lease_table *t, size_t n_ranges, struct lease **ret_lease)
{
	return lease_new_id(t, t->next_id, n_ranges, ret_lease);
}

int lease_new_id(struct lease_table *t, uint64_t id, size_t n_ranges, struct lease **ret_lease)
{
	if (t->count >= t->cap)
		return -EDQUOT;
	if (id < t->next_id || id == 0)
		return -EINVAL;
	struct lease *l = calloc(1, sizeof(*l) + n_ranges * sizeof(l->ranges[0]));
	if (!l)
		return -ENOMEM;
	l->id = id;
	t->next_id = id + 1;
	l->state = LEASE_ACTIVE;
	l->fd = -1;
	l->rule = l->next_rule = -1;
	l->n_ranges = n_ranges;
	struct lease **b = &t->buckets[l->id & t->mask];
	l->hash_next = *b;
	*b = l;
	TAILQ_INSERT_TAIL(&t->all, l, in_table);
	t->count++;
	*ret_lease = l;
	return 0;
}

struct lease *lease_find(const struct lease_table *t, uint64_t id)
{
	for (struct lease *l = t->buckets[id & t->mask]; l; l = l->hash_next)
		if (l->id == id)
			return l;
	return NULL;
}

void lease_attach(struct lease_table *t, struct lease *l, struct lease_set *owner,
		  struct lease_set *on_dev, int rule)
{
	if (owner) {
		LIST_INSERT_HEAD(&owner->list, l, by_owner);
		owner->n++;
		l->owner = owner;
	}
	LIST_INSERT_HEAD(&on_dev->list, l, by_device);
	on_dev->n++;
	l->on_dev = on_dev;
	l->rule = rule;
	if (rule >= 0 && (size_t)rule < t->n_rules) {
		t->rule_leases[rule]++;
		t->rule_bytes[rule] += l->size;
	}
	user_count(t, l);
}

void lease_set_owner(struct lease *l, struct lease_set *owner)
{
	lease_forget_owner(l);
	LIST_INSERT_HEAD(&owner->list, l, by_owner);
	owner->n++;
	l->owner = owner;
}

void lease_forget_owner(struct lease *l)
{
	if (!l->owner)
		return;
	LIST_REMOVE(l, by_owner);
	l->owner->n--;
	l->owner = NULL;
}

void lease_table_swap_rules(struct lease_table *t, unsigned *counts, uint64_t *bytes,
			    size_t n_rules)
{
	struct lease *l;

	free(t->rule_leases);
	free(t->rule_bytes);
	t->rule_leases = counts;
	t->rule_bytes = bytes;
	t->n_rules = n_rules;
	TAILQ_FOREACH (l, &t->all, in_table)
		l->rule = l->next_rule;
}

/* Whether an intrusive list entry is linked; LIST_REMOVE on an unlinked one would crash. */
#define LINKED(l, field) ((l)->field.le_prev != NULL)

void lease_delete(struct lease_table *t, struct lease *l)
{
	int fd = lease_delete_keep_fd(t, l);

	closep(&fd);
}

int lease_delete_keep_fd(struct lease_table *t, struct lease *l)
{
	int fd = TAKE_FD(l->fd);

	struct lease **p = &t->buckets[l->id & t->mask];

	while (*p && *p != l)
		p = &(*p)->hash_next;
	if (*p) {
		*p = l->hash_next;
		TAILQ_REMOVE(&t->all, l, in_table);
		t->count--;
	}
	lease_forget_owner(l);
	if (l->on_dev) {
		LIST_REMOVE(l, by_device);
		l->on_dev->n--;
	}
	if (LINKED(l, revoking))
		LIST_REMOVE(l, revoking);
	if (l->rule >= 0 && (size_t)l->rule < t->n_rules) {
		t->rule_leases[l->rule]--;
		t->rule_bytes[l->rule] -= l->size;
	}
	user_uncount(t, l);
	peer_unref(l->peer);
	free(l);
	return fd;
}

bool lease_begin_revoke(struct lease *l, int reason, int64_t now_ms, int64_t grace_ms)
{
	if (l->state != LEASE_ACTIVE)
		return false;
	l->state = LEASE_REVOKING;
	l->reason = reason;
	l->deadline_ms = now_ms + grace_ms;
	return true;
}

void lease_reactivate(struct lease *l)
{
	if (l->state != LEASE_REVOKING)
		return;
	l->state = LEASE_ACTIVE;
	l->reason = 0;
	l->lingering = false;
}

bool lease_end(struct lease *l, int reason)
{
	if (l->state == LEASE_ENDED)
		return false;
	if (l->state == LEASE_ACTIVE)
		l->reason = reason;
	l->state = LEASE_ENDED;
	return true;
}

int lease_user_holders(const struct lease *l, int counted)
{
	return l->parked && counted > 0 ? counted - 1 : counted;
}

bool lease_reason_chosen(int reason)
{
	return reason == P2PBUF__REASON__REASON_RELEASED ||
	       reason == P2PBUF__REASON__REASON_OWNER_DISCONNECTED;
}

bool lease_deadline_passed(const struct lease *l, int64_t now_ms)
{
	return l->state == LEASE_REVOKING && now_ms >= l->deadline_ms;
}
