/* Unit tests for the lease table and the lease state machine, with an explicit clock. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lease.h"
#include "peer.h"

#define REASON_RELEASED 1
#define REASON_ADMIN 6
#define REASON_TTL 7

static struct lease_table table;

static void setup_cap(size_t cap)
{
	ck_assert_int_eq(lease_table_init(&table, cap, 4), 0);
}

static void teardown(void)
{
	lease_table_fini(&table);
}

static struct lease *new_lease(size_t n_ranges)
{
	struct lease *l = NULL;

	ck_assert_int_eq(lease_new(&table, n_ranges, &l), 0);
	ck_assert_ptr_nonnull(l);
	return l;
}

/* The ids of table.all, in list order, into ids[0..max); returns how many. */
static size_t list_ids(uint64_t *ids, size_t max)
{
	struct lease *l;
	size_t n = 0;

	TAILQ_FOREACH (l, &table.all, in_table) {
		ck_assert_uint_lt(n, max);
		ids[n++] = l->id;
	}
	return n;
}

static void assert_ascending(void)
{
	struct lease *l;
	uint64_t last = 0;
	size_t n = 0;

	TAILQ_FOREACH (l, &table.all, in_table) {
		ck_assert_uint_gt(l->id, last);
		last = l->id;
		n++;
	}
	ck_assert_uint_eq(n, table.count);
}

/* ---- table ---- */

START_TEST(test_init_fini)
{
	setup_cap(8);
	ck_assert_uint_eq(table.count, 0);
	ck_assert(TAILQ_EMPTY(&table.all));
	ck_assert_ptr_null(lease_find(&table, 0));
	ck_assert_ptr_null(lease_find(&table, 1));
	teardown();
	/* A second fini is harmless. */
	teardown();
}
END_TEST

START_TEST(test_new_defaults)
{
	setup_cap(8);
	struct lease *l = new_lease(3);

	ck_assert_uint_eq(l->id, 1);
	ck_assert_int_eq(l->state, LEASE_ACTIVE);
	ck_assert_int_eq(l->fd, -1);
	ck_assert_ptr_null(l->owner);
	ck_assert_ptr_null(l->device);
	ck_assert_uint_eq(l->n_ranges, 3);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_uint_eq(l->ranges[i].offset, 0);
		ck_assert_uint_eq(l->ranges[i].length, 0);
	}
	/* The ranges are the caller's to fill: all of them must be writable. */
	for (size_t i = 0; i < 3; i++)
		l->ranges[i] = (struct range){ .offset = i << 12, .length = 1 << 12 };
	ck_assert_uint_eq(table.count, 1);
	teardown();
}
END_TEST

START_TEST(test_sequential_ids)
{
	setup_cap(100);
	for (uint64_t i = 1; i <= 100; i++)
		ck_assert_uint_eq(new_lease(0)->id, i);
	for (uint64_t i = 1; i <= 100; i++) {
		struct lease *l = lease_find(&table, i);
		ck_assert_ptr_nonnull(l);
		ck_assert_uint_eq(l->id, i);
	}
	ck_assert_ptr_null(lease_find(&table, 0));
	ck_assert_ptr_null(lease_find(&table, 101));
	ck_assert_ptr_null(lease_find(&table, UINT64_MAX));
	ck_assert_uint_eq(table.count, 100);
	assert_ascending();
	teardown();
}
END_TEST

START_TEST(test_full)
{
	struct lease *l = (struct lease *)&table;

	setup_cap(3);
	new_lease(0);
	struct lease *second = new_lease(1);
	new_lease(2);
	ck_assert_int_eq(lease_new(&table, 0, &l), -EDQUOT);
	ck_assert_ptr_eq(l, (struct lease *)&table);
	ck_assert_uint_eq(table.count, 3);

	/* Deleting one makes room for exactly one more. */
	lease_delete(&table, second);
	ck_assert_uint_eq(table.count, 2);
	struct lease *again = new_lease(0);
	ck_assert_uint_gt(again->id, 3);
	ck_assert_int_eq(lease_new(&table, 0, &l), -EDQUOT);
	teardown();
}
END_TEST

START_TEST(test_cap_zero)
{
	struct lease *l = NULL;

	setup_cap(0);
	ck_assert_int_eq(lease_new(&table, 0, &l), -EDQUOT);
	ck_assert_ptr_null(l);
	teardown();
}
END_TEST

/* A deleted id is never handed out again, nor found again. */
START_TEST(test_ids_not_reused)
{
	setup_cap(2);
	uint64_t last = 0;

	for (int i = 0; i < 50; i++) {
		struct lease *l = new_lease(0);
		ck_assert_uint_gt(l->id, last);
		last = l->id;
		lease_delete(&table, l);
		ck_assert_ptr_null(lease_find(&table, last));
	}
	ck_assert_uint_eq(table.count, 0);
	ck_assert(TAILQ_EMPTY(&table.all));
	teardown();
}
END_TEST

START_TEST(test_order_after_deletes)
{
	uint64_t ids[16];

	setup_cap(16);
	for (int i = 0; i < 8; i++)
		new_lease(0);
	lease_delete(&table, lease_find(&table, 1));
	lease_delete(&table, lease_find(&table, 4));
	lease_delete(&table, lease_find(&table, 8));
	new_lease(0);
	new_lease(0);
	lease_delete(&table, lease_find(&table, 9));

	static const uint64_t want[] = { 2, 3, 5, 6, 7, 10 };
	size_t n = list_ids(ids, 16);
	ck_assert_uint_eq(n, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < n; i++)
		ck_assert_uint_eq(ids[i], want[i]);
	ck_assert_uint_eq(table.count, n);
	for (size_t i = 0; i < n; i++)
		ck_assert_ptr_nonnull(lease_find(&table, want[i]));
	ck_assert_ptr_null(lease_find(&table, 1));
	ck_assert_ptr_null(lease_find(&table, 4));
	ck_assert_ptr_null(lease_find(&table, 9));
	teardown();
}
END_TEST

START_TEST(test_many)
{
	const uint64_t n = 10000;

	setup_cap(n);
	for (uint64_t i = 1; i <= n; i++)
		ck_assert_uint_eq(new_lease(1)->id, i);
	struct lease *l = NULL;
	ck_assert_int_eq(lease_new(&table, 0, &l), -EDQUOT);
	for (uint64_t i = 1; i <= n; i++)
		ck_assert_uint_eq(lease_find(&table, i)->id, i);
	for (uint64_t i = 1; i <= n; i += 2)
		lease_delete(&table, lease_find(&table, i));
	ck_assert_uint_eq(table.count, n / 2);
	for (uint64_t i = 1; i <= n; i++) {
		struct lease *f = lease_find(&table, i);
		if (i % 2)
			ck_assert_ptr_null(f);
		else
			ck_assert_uint_eq(f->id, i);
	}
	assert_ascending();
	/* Refill: the new ids continue after the last. */
	for (uint64_t i = 1; i <= n / 2; i++)
		ck_assert_uint_eq(new_lease(0)->id, n + i);
	ck_assert_uint_eq(table.count, n);
	assert_ascending();
	teardown();
}
END_TEST

/* With few leases but many ids, several live leases share a bucket: delete the head, middle
 * and tail of such a chain and check the rest are still found. */
START_TEST(test_hash_collisions)
{
	struct lease *keep[5];
	size_t buckets;

	setup_cap(4);
	buckets = table.mask + 1;
	ck_assert_uint_ge(buckets, 4);
	/* Leases 1, 1 + b, 1 + 2b, 1 + 3b live at once, all in bucket 1; the ids between are
	 * made and deleted again. */
	for (size_t k = 0; k < 4; k++) {
		keep[k] = new_lease(0);
		ck_assert_uint_eq(keep[k]->id, 1 + k * buckets);
		for (size_t i = 1; i < buckets && k < 3; i++)
			lease_delete(&table, new_lease(0));
	}
	ck_assert_uint_eq(table.count, 4);
	for (size_t k = 0; k < 4; k++)
		ck_assert_ptr_eq(lease_find(&table, keep[k]->id), keep[k]);
	/* Ids in the same bucket that do not exist. */
	ck_assert_ptr_null(lease_find(&table, 1 + 4 * buckets));
	ck_assert_ptr_null(lease_find(&table, 1 + 100 * buckets));

	uint64_t id1 = keep[1]->id;
	lease_delete(&table, keep[1]);
	ck_assert_ptr_null(lease_find(&table, id1));
	ck_assert_ptr_eq(lease_find(&table, keep[0]->id), keep[0]);
	ck_assert_ptr_eq(lease_find(&table, keep[2]->id), keep[2]);
	ck_assert_ptr_eq(lease_find(&table, keep[3]->id), keep[3]);

	uint64_t id3 = keep[3]->id;
	lease_delete(&table, keep[3]);
	ck_assert_ptr_null(lease_find(&table, id3));
	ck_assert_ptr_eq(lease_find(&table, keep[0]->id), keep[0]);
	ck_assert_ptr_eq(lease_find(&table, keep[2]->id), keep[2]);

	uint64_t id0 = keep[0]->id;
	lease_delete(&table, keep[0]);
	ck_assert_ptr_null(lease_find(&table, id0));
	ck_assert_ptr_eq(lease_find(&table, keep[2]->id), keep[2]);

	keep[4] = new_lease(0);
	ck_assert_ptr_eq(lease_find(&table, keep[4]->id), keep[4]);
	ck_assert_ptr_eq(lease_find(&table, keep[2]->id), keep[2]);
	ck_assert_uint_eq(table.count, 2);
	assert_ascending();
	teardown();
}
END_TEST

/* A cap that is not a power of two, and one above the smallest bucket count. */
START_TEST(test_odd_caps)
{
	static const size_t caps[] = { 1, 15, 16, 17, 100 };

	for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
		struct lease *l = NULL;
		setup_cap(caps[c]);
		for (size_t i = 0; i < caps[c]; i++)
			new_lease(0);
		ck_assert_int_eq(lease_new(&table, 0, &l), -EDQUOT);
		for (uint64_t id = 1; id <= caps[c]; id++)
			ck_assert_uint_eq(lease_find(&table, id)->id, id);
		teardown();
	}
}
END_TEST

/* Leases are counted per uid as they are attached, until deleted (whatever their state); a
 * full table of leases of distinct uids needs no allocation to count them. */
START_TEST(test_user_counts)
{
	struct lease_set device = { LIST_HEAD_INITIALIZER(device.list), 0 };
	struct lease *l[4];

	setup_cap(4);
	for (int i = 0; i < 4; i++) {
		l[i] = new_lease(0);
		l[i]->peer = peer_new((uid_t)(1000 + (i == 3 ? 0 : i)), 100, 1, NULL, 0);
		ck_assert_ptr_nonnull(l[i]->peer);
		lease_attach(&table, l[i], NULL, &device, -1);
	}
	ck_assert_uint_eq(lease_user_count(&table, 1000), 2);
	ck_assert_uint_eq(lease_user_count(&table, 1001), 1);
	ck_assert_uint_eq(lease_user_count(&table, 1002), 1);
	ck_assert_uint_eq(lease_user_count(&table, 1003), 0);
	lease_end(l[0], REASON_RELEASED);
	ck_assert_uint_eq(lease_user_count(&table, 1000), 2);
	lease_delete(&table, l[0]);
	lease_delete(&table, l[1]);
	ck_assert_uint_eq(lease_user_count(&table, 1000), 1);
	ck_assert_uint_eq(lease_user_count(&table, 1001), 0);
	/* The freed entries serve new uids. */
	for (int i = 0; i < 2; i++) {
		l[i] = new_lease(0);
		l[i]->peer = peer_new((uid_t)(2000 + i), 100, 1, NULL, 0);
		lease_attach(&table, l[i], NULL, &device, -1);
		ck_assert_uint_eq(lease_user_count(&table, (uid_t)(2000 + i)), 1);
	}
	ck_assert_uint_eq(lease_user_count(&table, 1002), 1);
	teardown();
}
END_TEST

/* Deleting a lease takes it off its owner's and its device's sets and uncounts it there and
 * under its rule. */
START_TEST(test_delete_unlinks)
{
	struct lease_set owner = { LIST_HEAD_INITIALIZER(owner.list), 0 };
	struct lease_set device = { LIST_HEAD_INITIALIZER(device.list), 0 };
	struct lease *a, *b, *c, *x;
	size_t n;

	setup_cap(8);
	a = new_lease(0);
	b = new_lease(0);
	c = new_lease(0);
	a->size = 0x1000;
	b->size = 0x2000;
	c->size = 0x4000;
	lease_attach(&table, a, &owner, &device, 0);
	lease_attach(&table, b, &owner, &device, 1);
	lease_attach(&table, c, &owner, &device, 1);
	ck_assert_uint_eq(owner.n, 3);
	ck_assert_uint_eq(device.n, 3);
	ck_assert_uint_eq(table.rule_leases[0], 1);
	ck_assert_uint_eq(table.rule_leases[1], 2);
	ck_assert_uint_eq(table.rule_bytes[1], 0x6000);

	/* Middle, then head, then the last one. */
	lease_delete(&table, b);
	ck_assert_uint_eq(table.rule_leases[1], 1);
	ck_assert_uint_eq(table.rule_bytes[1], 0x4000);
	n = 0;
	LIST_FOREACH (x, &owner.list, by_owner) {
		ck_assert(x == a || x == c);
		n++;
	}
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(owner.n, 2);
	n = 0;
	LIST_FOREACH (x, &device.list, by_device) {
		ck_assert(x == a || x == c);
		n++;
	}
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(device.n, 2);

	lease_delete(&table, c);
	ck_assert_ptr_eq(LIST_FIRST(&owner.list), a);
	ck_assert_ptr_null(LIST_NEXT(a, by_owner));
	ck_assert_ptr_eq(LIST_FIRST(&device.list), a);
	ck_assert_ptr_null(LIST_NEXT(a, by_device));
	ck_assert_uint_eq(table.rule_leases[1], 0);

	lease_delete(&table, a);
	ck_assert(LIST_EMPTY(&owner.list));
	ck_assert(LIST_EMPTY(&device.list));
	ck_assert_uint_eq(owner.n + device.n, 0);
	ck_assert_uint_eq(table.rule_leases[0], 0);
	ck_assert_uint_eq(table.count, 0);
	teardown();
}
END_TEST

/* A lease whose owner is gone stays on its device and counted there; never linked at all
 * is fine too. */
START_TEST(test_delete_partly_linked)
{
	struct lease_set owner = { LIST_HEAD_INITIALIZER(owner.list), 0 };
	struct lease_set device = { LIST_HEAD_INITIALIZER(device.list), 0 };
	struct lease *a, *b;

	setup_cap(8);
	a = new_lease(0);
	b = new_lease(0);
	lease_attach(&table, a, &owner, &device, -1);
	lease_attach(&table, b, NULL, &device, 2);
	lease_forget_owner(a);
	ck_assert_ptr_null(a->owner);
	ck_assert(LIST_EMPTY(&owner.list));
	ck_assert_uint_eq(owner.n, 0);
	ck_assert_uint_eq(device.n, 2);
	lease_forget_owner(a); /* twice: nothing changes */
	ck_assert_uint_eq(owner.n, 0);
	lease_delete(&table, a);
	ck_assert_ptr_eq(LIST_FIRST(&device.list), b);
	ck_assert_ptr_null(LIST_NEXT(b, by_device));
	ck_assert_uint_eq(device.n, 1);
	lease_delete(&table, b);
	ck_assert(LIST_EMPTY(&device.list));
	ck_assert_uint_eq(table.rule_leases[2], 0);

	/* Never linked anywhere. */
	lease_delete(&table, new_lease(2));
	ck_assert_uint_eq(table.count, 0);
	teardown();
}
END_TEST

/* fini deletes every lease left: each one's fd is closed and each set it was on is empty. */
START_TEST(test_fini_with_leases)
{
	struct lease_set device = { LIST_HEAD_INITIALIZER(device.list), 0 };
	int fds[64];

	setup_cap(64);
	for (int i = 0; i < 64; i++) {
		struct lease *l = new_lease((size_t)i);
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		ck_assert_int_ge(fds[i], 0);
		l->fd = fds[i];
		lease_attach(&table, l, NULL, &device, i % 4);
	}
	ck_assert_uint_eq(device.n, 64);
	teardown();
	ck_assert_uint_eq(device.n, 0);
	ck_assert(LIST_EMPTY(&device.list));
	for (int i = 0; i < 64; i++)
		ck_assert_msg(fcntl(fds[i], F_GETFD) < 0 && errno == EBADF, "fd %d still open",
			      fds[i]);
}
END_TEST

/* A reload's new counts replace the old ones, and each lease takes its next rule. */
START_TEST(test_swap_rules)
{
	struct lease_set device = { LIST_HEAD_INITIALIZER(device.list), 0 };
	struct lease *a, *b;

	setup_cap(8);
	a = new_lease(0);
	b = new_lease(0);
	lease_attach(&table, a, NULL, &device, 0);
	lease_attach(&table, b, NULL, &device, 0);
	ck_assert_uint_eq(table.rule_leases[0], 2);
	unsigned *counts = calloc(3, sizeof(*counts));
	uint64_t *bytes = calloc(3, sizeof(*bytes));
	a->next_rule = 2;
	b->next_rule = -1;
	counts[2] = 1;
	bytes[2] = a->size;
	lease_table_swap_rules(&table, counts, bytes, 3);
	ck_assert_int_eq(a->rule, 2);
	ck_assert_int_eq(b->rule, -1);
	lease_delete(&table, a);
	ck_assert_uint_eq(table.rule_leases[2], 0);
	ck_assert_uint_eq(table.rule_bytes[2], 0);
	lease_delete(&table, b);
	ck_assert_uint_eq(table.rule_leases[0] + table.rule_leases[1], 0);
	teardown();
}
END_TEST

/* A peer's unit from its cgroup line, as /proc/PID/cgroup gives it. */
START_TEST(test_unit_of_cgroup)
{
	static const struct {
		const char *path, *unit;
	} cases[] = {
		{ "/system.slice/spdk-tgt.service\n", "spdk-tgt.service" },
		{ "/system.slice/spdk-tgt.service/sub\n", "spdk-tgt.service" },
		{ "/user.slice/user-1000.slice/user@1000.service/app.slice/x.service\n",
		  "user@1000.service" },
		{ "/user.slice/user-1000.slice/session-2.scope", "session-2.scope" },
		{ "/\n", NULL },
		{ "/system.slice\n", NULL },
		{ "", NULL },
		{ "//init.scope\n0::/other.service", "init.scope" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *u = peer_unit_of_cgroup(cases[i].path);
		if (cases[i].unit)
			ck_assert_msg(u && strcmp(u, cases[i].unit) == 0, "%s: got %s",
				      cases[i].path, u ? u : "(null)");
		else
			ck_assert_msg(!u, "%s: got %s", cases[i].path, u);
		free(u);
	}
}
END_TEST

/* ---- state machine ---- */

START_TEST(test_begin_revoke)
{
	setup_cap(4);
	struct lease *l = new_lease(0);

	ck_assert(!lease_deadline_passed(l, INT64_MAX));
	ck_assert(lease_begin_revoke(l, REASON_ADMIN, 1000, 5000));
	ck_assert_int_eq(l->state, LEASE_REVOKING);
	ck_assert_int_eq(l->reason, REASON_ADMIN);
	ck_assert_int_eq(l->deadline_ms, 6000);

	/* A second revoke changes nothing: the first reason and deadline stand. */
	ck_assert(!lease_begin_revoke(l, REASON_TTL, 2000, 1));
	ck_assert_int_eq(l->state, LEASE_REVOKING);
	ck_assert_int_eq(l->reason, REASON_ADMIN);
	ck_assert_int_eq(l->deadline_ms, 6000);
	teardown();
}
END_TEST

START_TEST(test_deadline)
{
	setup_cap(4);
	struct lease *l = new_lease(0);

	ck_assert(!lease_deadline_passed(l, 0));
	ck_assert(!lease_deadline_passed(l, 100000));
	ck_assert(lease_begin_revoke(l, REASON_ADMIN, 1000, 5000));
	ck_assert(!lease_deadline_passed(l, 1000));
	ck_assert(!lease_deadline_passed(l, 5999));
	ck_assert(lease_deadline_passed(l, 6000));
	ck_assert(lease_deadline_passed(l, 6001));
	ck_assert(lease_deadline_passed(l, INT64_MAX));
	ck_assert(lease_end(l, REASON_TTL));
	ck_assert(!lease_deadline_passed(l, 6000));
	ck_assert(!lease_deadline_passed(l, INT64_MAX));
	teardown();
}
END_TEST

START_TEST(test_zero_grace)
{
	setup_cap(4);
	struct lease *l = new_lease(0);

	ck_assert(lease_begin_revoke(l, REASON_ADMIN, 1000, 0));
	ck_assert(!lease_deadline_passed(l, 999));
	ck_assert(lease_deadline_passed(l, 1000));
	teardown();
}
END_TEST

START_TEST(test_end_from_active)
{
	setup_cap(4);
	struct lease *l = new_lease(0);

	ck_assert(lease_end(l, REASON_RELEASED));
	ck_assert_int_eq(l->state, LEASE_ENDED);
	ck_assert_int_eq(l->reason, REASON_RELEASED);
	ck_assert(!lease_end(l, REASON_ADMIN));
	ck_assert_int_eq(l->state, LEASE_ENDED);
	ck_assert_int_eq(l->reason, REASON_RELEASED);
	/* An ended lease cannot start revoking. */
	ck_assert(!lease_begin_revoke(l, REASON_ADMIN, 0, 10));
	ck_assert_int_eq(l->state, LEASE_ENDED);
	ck_assert_int_eq(l->reason, REASON_RELEASED);
	teardown();
}
END_TEST

START_TEST(test_end_from_revoking)
{
	setup_cap(4);
	struct lease *l = new_lease(0);

	ck_assert(lease_begin_revoke(l, REASON_TTL, 0, 10));
	ck_assert(lease_end(l, REASON_RELEASED));
	ck_assert_int_eq(l->state, LEASE_ENDED);
	ck_assert_int_eq(l->reason, REASON_TTL);
	ck_assert(!lease_end(l, REASON_ADMIN));
	ck_assert_int_eq(l->reason, REASON_TTL);
	teardown();
}
END_TEST

/* Leases move through their states independently. */
START_TEST(test_states_independent)
{
	setup_cap(4);
	struct lease *a = new_lease(0), *b = new_lease(0);

	ck_assert(lease_begin_revoke(a, REASON_ADMIN, 0, 10));
	ck_assert_int_eq(b->state, LEASE_ACTIVE);
	ck_assert(lease_begin_revoke(b, REASON_TTL, 5, 10));
	ck_assert(lease_deadline_passed(a, 10));
	ck_assert(!lease_deadline_passed(b, 10));
	ck_assert(lease_deadline_passed(b, 15));
	ck_assert_int_eq(a->reason, REASON_ADMIN);
	ck_assert_int_eq(b->reason, REASON_TTL);
	teardown();
}
END_TEST

static Suite *lease_suite(void)
{
	Suite *s = suite_create("lease");
	TCase *tc = tcase_create("table");

	tcase_add_test(tc, test_init_fini);
	tcase_add_test(tc, test_new_defaults);
	tcase_add_test(tc, test_sequential_ids);
	tcase_add_test(tc, test_full);
	tcase_add_test(tc, test_cap_zero);
	tcase_add_test(tc, test_ids_not_reused);
	tcase_add_test(tc, test_order_after_deletes);
	tcase_add_test(tc, test_many);
	tcase_add_test(tc, test_hash_collisions);
	tcase_add_test(tc, test_odd_caps);
	tcase_add_test(tc, test_delete_unlinks);
	tcase_add_test(tc, test_delete_partly_linked);
	tcase_add_test(tc, test_fini_with_leases);
	tcase_add_test(tc, test_swap_rules);
	tcase_add_test(tc, test_unit_of_cgroup);
	suite_add_tcase(s, tc);

	tc = tcase_create("state");
	tcase_add_test(tc, test_begin_revoke);
	tcase_add_test(tc, test_deadline);
	tcase_add_test(tc, test_zero_grace);
	tcase_add_test(tc, test_end_from_active);
	tcase_add_test(tc, test_end_from_revoking);
	tcase_add_test(tc, test_states_independent);
	tcase_add_test(tc, test_user_counts);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(lease_suite());

	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
