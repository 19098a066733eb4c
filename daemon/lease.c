#include <errno.h>
#include <stdlib.h>

#include "lease.h"

int lease_table_init(struct lease_table *t, size_t cap)
{
	size_t n = 16;

	while (n < cap)
		n <<= 1;
	t->buckets = calloc(n, sizeof(*t->buckets));
	if (!t->buckets)
		return -ENOMEM;
	TAILQ_INIT(&t->all);
	t->mask = n - 1;
	t->count = 0;
	t->cap = cap;
	t->next_id = 1;
	return 0;
}

void lease_table_fini(struct lease_table *t)
{
	struct lease *l;

	if (!t->buckets)
		return;
	while ((l = TAILQ_FIRST(&t->all))) {
		TAILQ_REMOVE(&t->all, l, in_table);
		free(l);
	}
	free(t->buckets);
	t->buckets = NULL;
	t->count = 0;
}

int lease_new(struct lease_table *t, size_t n_ranges, struct lease **ret_lease)
{
	if (t->count >= t->cap)
		return -EDQUOT;
	struct lease *l = calloc(1, sizeof(*l) + n_ranges * sizeof(l->ranges[0]));
	if (!l)
		return -ENOMEM;
	l->id = t->next_id++;
	l->state = LEASE_ACTIVE;
	l->fd = -1;
	l->rule = -1;
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

/* Whether an intrusive list entry is linked; LIST_REMOVE on an unlinked one would crash. */
#define LINKED(l, field) ((l)->field.le_prev != NULL)

void lease_delete(struct lease_table *t, struct lease *l)
{
	struct lease **p = &t->buckets[l->id & t->mask];

	while (*p && *p != l)
		p = &(*p)->hash_next;
	if (*p) {
		*p = l->hash_next;
		TAILQ_REMOVE(&t->all, l, in_table);
		t->count--;
	}
	if (LINKED(l, by_owner))
		LIST_REMOVE(l, by_owner);
	if (LINKED(l, by_device))
		LIST_REMOVE(l, by_device);
	if (LINKED(l, revoking))
		LIST_REMOVE(l, revoking);
	free(l);
}

void lease_forget_owner(struct lease *l)
{
	if (LINKED(l, by_owner)) {
		LIST_REMOVE(l, by_owner);
		l->by_owner.le_prev = NULL; /* glibc leaves it set: mark it unlinked */
	}
	l->owner = NULL;
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

bool lease_end(struct lease *l, int reason)
{
	if (l->state == LEASE_ENDED)
		return false;
	if (l->state == LEASE_ACTIVE)
		l->reason = reason;
	l->state = LEASE_ENDED;
	return true;
}

bool lease_deadline_passed(const struct lease *l, int64_t now_ms)
{
	return l->state == LEASE_REVOKING && now_ms >= l->deadline_ms;
}
