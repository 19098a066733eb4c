/* The revocation engine on simulated devices, one test per way a lease can end: what the
 * holder is told, in which order, and when the daemon verifies and enforces. The sim backend
 * counts holders the way the kernel's dma-buf reference count does (fds and mappings in any
 * process), so "somebody else still holds it" is real here: a forked child keeps a copy. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <protobuf-c/protobuf-c.h>

#include "harness.h"
#include "p2pbuf.h"
#include "p2pbuf.pb-c.h"

static struct harness h;

/* revoke-deadline is short so that enforcement is seen quickly; sim2 only reports. */
static const char policy_fmt[] =
    "device sim0 sim bar 0 1M revoke-deadline 1s\n"
    "device sim1 sim bar 0 1M cycle-delay 1500ms revoke-deadline 1s\n"
    "device sim2 sim bar 0 1M revoke-deadline 500ms revocation notify-only\n"
    "device sim3 sim bar 0 1M on-error cycle\n"
    "device sim4 sim bar 0 1M\n"
    "allow user %1$u device sim0\n"
    "allow user %1$u device sim1\n"
    "allow user %1$u device sim2 max-leases 1\n"
    "allow user %1$u device sim3\n"
    "allow user %1$u device sim4 ttl 1s\n"
    "admin user %1$u\n";

/* The same, without the rule for sim1. */
static const char policy_without_sim1_fmt[] =
    "device sim0 sim bar 0 1M revoke-deadline 1s\n"
    "device sim1 sim bar 0 1M cycle-delay 1500ms revoke-deadline 1s\n"
    "device sim2 sim bar 0 1M revoke-deadline 500ms revocation notify-only\n"
    "device sim3 sim bar 0 1M on-error cycle\n"
    "device sim4 sim bar 0 1M\n"
    "allow user %1$u device sim0\n"
    "allow user %1$u device sim2 max-leases 1\n"
    "allow user %1$u device sim3\n"
    "allow user %1$u device sim4 ttl 1s\n"
    "admin user %1$u\n";

static void setup(void)
{
	harness_start(&h, policy_fmt, NULL);
}

static void teardown(void)
{
	harness_stop(&h);
}

#define MAX_EVENTS 32

struct log {
	int n;
	struct p2pbuf_event ev[MAX_EVENTS];
	char device[MAX_EVENTS][64];
};

static void record(struct p2pbuf *conn, const struct p2pbuf_event *ev, void *userdata)
{
	struct log *lg = userdata;

	if (lg->n == MAX_EVENTS)
		return;
	lg->ev[lg->n] = *ev;
	snprintf(lg->device[lg->n], sizeof(lg->device[0]), "%s", ev->device ? ev->device : "");
	lg->ev[lg->n].device = lg->device[lg->n];
	lg->ev[lg->n].message = NULL;
	lg->n++;
}

static struct p2pbuf *connect_logged(struct log *lg)
{
	struct p2pbuf *c = NULL;

	ck_assert_int_eq(p2pbuf_connect(h.socket, &c), 0);
	if (lg) {
		memset(lg, 0, sizeof(*lg));
		p2pbuf_set_event_handler(c, record, lg);
	}
	return c;
}

static int find(const struct log *lg, enum p2pbuf_event_type type, uint64_t lease)
{
	for (int i = 0; i < lg->n; i++)
		if (lg->ev[i].type == type &&
		    (type == P2PBUF_EVENT_DEVICE_STATE || lg->ev[i].lease_id == lease))
			return i;
	return -1;
}

/* Dispatch events on c until one of type for lease arrived (up to ~5 s). Returns its index. */
static int wait_for(struct p2pbuf *c, struct log *lg, enum p2pbuf_event_type type, uint64_t lease)
{
	for (int i = 0; i < 100 && find(lg, type, lease) < 0; i++)
		ck_assert_int_ge(p2pbuf_wait(c, 50), 0);
	int k = find(lg, type, lease);
	ck_assert_msg(k >= 0, "event %d for lease %llu never came (%d events seen)", type,
		      (unsigned long long)lease, lg->n);
	return k;
}

static int export_whole(struct p2pbuf *c, const char *dev, uint64_t *ret_id)
{
	struct p2pbuf_range r = { 0, 0x1000 };
	uint64_t size;
	int fd = p2pbuf_export(c, dev, 0, &r, 1, NULL, ret_id, &size);

	ck_assert_msg(fd >= 0, "export %s: %s", dev, p2pbuf_last_message(c));
	return fd;
}

/* The lease as an admin sees it; returns false when it is gone. */
static bool lease_info(struct p2pbuf *admin, uint64_t id, struct p2pbuf_lease *out)
{
	struct p2pbuf_lease *ls;
	size_t n;
	bool found = false;

	ck_assert_int_eq(p2pbuf_list_leases(admin, true, &ls, &n), 0);
	for (size_t i = 0; i < n; i++) {
		if (ls[i].id == id) {
			*out = ls[i];
			out->device = out->label = out->rule = NULL;
			out->ranges = NULL;
			found = true;
		}
	}
	p2pbuf_leases_free(ls, n);
	return found;
}

static bool wait_gone(struct p2pbuf *admin, uint64_t id)
{
	struct p2pbuf_lease l;

	for (int i = 0; i < 100; i++) {
		if (!lease_info(admin, id, &l))
			return true;
		usleep(50000);
	}
	return false;
}

/* A child process that keeps a copy of fd, and nothing else of ours, until killed. */
static pid_t keep_copy(int fd)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* Above all not the connection: the daemon must see its owner hang up. */
		for (int i = 3; i < 1024; i++)
			if (i != fd)
				close(i);
		for (;;)
			pause();
	}
	return pid;
}

static void end_child(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* The listing's entries called dev: how many, and the state and generation of the last one
 * (unchanged when there is none). */
static int listed(struct p2pbuf *c, const char *dev, enum p2pbuf_device_state *ret_state,
		  uint32_t *ret_generation)
{
	struct p2pbuf_device *ds;
	size_t n;
	int k = 0;

	ck_assert_int_eq(p2pbuf_list_devices(c, &ds, &n), 0);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(ds[i].name, dev) != 0)
			continue;
		k++;
		if (ret_state)
			*ret_state = ds[i].state;
		if (ret_generation)
			*ret_generation = ds[i].generation;
	}
	p2pbuf_devices_free(ds, n);
	return k;
}

static uint32_t generation(struct p2pbuf *c, const char *dev)
{
	uint32_t g = UINT32_MAX;

	listed(c, dev, NULL, &g);
	return g;
}

/* Wait (up to 2 s) for dev's generation to reach want, as seen by c; returns it. A device
 * cycle ends its leases first and reopens on the worker thread after. */
static uint32_t wait_generation(struct p2pbuf *c, const char *dev, uint32_t want)
{
	for (int i = 0; i < 100 && generation(c, dev) != want; i++)
		usleep(20000);
	return generation(c, dev);
}

/* The lease as an admin sees it once its holders have been counted (the simulated backend
 * counts them off the event loop, so a lease that just began revoking shows -1 until the
 * first count is back); returns false when it is gone. */
static bool lease_counted(struct p2pbuf *admin, uint64_t id, struct p2pbuf_lease *out)
{
	for (int i = 0; i < 100; i++) {
		if (!lease_info(admin, id, out))
			return false;
		if (out->holders >= 0)
			return true;
		usleep(50000);
	}
	ck_abort_msg("lease %llu: its holders were never counted", (unsigned long long)id);
	return false;
}

/* A released lease nobody else holds ends at the next count of its holders: no longer
 * active from the moment the release is answered, gone once the LeaseRevoked is out. */
START_TEST(release_ends_at_the_next_count)
{
	struct log lg, obs;
	struct p2pbuf *c = connect_logged(&lg);
	struct p2pbuf *admin = connect_logged(&obs);
	struct p2pbuf_lease l;
	uint64_t id;
	int fd = export_whole(c, "sim0", &id);

	ck_assert_int_eq(p2pbuf_subscribe(admin, true), 0);
	ck_assert_int_eq(p2pbuf_lease_release(c, id, fd), 0);
	if (lease_info(admin, id, &l)) {
		ck_assert_int_eq(l.state, P2PBUF_LEASE_REVOKING);
		ck_assert_int_eq(l.reason, P2PBUF_REASON_RELEASED);
	}
	/* The observer hears of it; the holder, who asked, gets no event. */
	int k = wait_for(admin, &obs, P2PBUF_EVENT_LEASE_REVOKED, id);
	ck_assert_int_eq(obs.ev[k].reason, P2PBUF_REASON_RELEASED);
	ck_assert(!lease_info(admin, id, &l));
	/* Nobody held a copy, so nobody was told to let go. */
	ck_assert_int_eq(find(&obs, P2PBUF_EVENT_LEASE_REVOKING, id), -1);
	ck_assert_int_eq(p2pbuf_dispatch(c), 0);
	ck_assert_int_eq(lg.n, 0);
	p2pbuf_disconnect(c);
	p2pbuf_disconnect(admin);
}
END_TEST

START_TEST(release_with_copy_elsewhere_lingers_and_counts)
{
	struct p2pbuf *c = connect_logged(NULL);
	struct p2pbuf_lease l;
	uint64_t id, id2;
	struct p2pbuf_range r = { 0, 0x1000 };
	uint64_t size;
	int fd = export_whole(c, "sim2", &id);
	pid_t child = keep_copy(fd);

	ck_assert_int_eq(p2pbuf_lease_release(c, id, fd), 0);
	ck_assert(lease_counted(c, id, &l));
	ck_assert_int_eq(l.state, P2PBUF_LEASE_REVOKING);
	ck_assert_int_eq(l.reason, P2PBUF_REASON_RELEASED);
	ck_assert_int_eq(l.holders, 1);
	/* The rule allows one lease, and the lingering one still counts. */
	ck_assert_int_eq(p2pbuf_export(c, "sim2", 0, &r, 1, NULL, &id2, &size), -EDQUOT);
	/* A released lease is never cycled out, even long past the deadline. */
	usleep(800000);
	ck_assert(lease_info(c, id, &l));
	ck_assert(l.lingering);
	ck_assert_uint_eq(generation(c, "sim2"), 0);
	end_child(child);
	ck_assert(wait_gone(c, id));
	fd = p2pbuf_export(c, "sim2", 0, &r, 1, NULL, &id2, &size);
	ck_assert_int_ge(fd, 0);
	close(fd);
	p2pbuf_disconnect(c);
}
END_TEST

/* An export refused only for leases that wait for their count waits for it: a client at
 * its quota (sim2's rule allows one lease) that releases and exports again at once gets its
 * new lease, not EDQUOT; with a copy kept elsewhere it gets EDQUOT once that is known. */
START_TEST(export_at_quota_waits_for_the_count)
{
	struct p2pbuf *c = connect_logged(NULL);
	struct p2pbuf_range r = { 0, 0x1000 };
	uint64_t id, next, size;
	int fd = export_whole(c, "sim2", &id);

	for (int i = 0; i < 5; i++) {
		ck_assert_int_eq(p2pbuf_lease_release(c, id, fd), 0);
		fd = p2pbuf_export(c, "sim2", 0, &r, 1, NULL, &next, &size);
		ck_assert_msg(fd >= 0, "export %d: %s", i, p2pbuf_last_message(c));
		ck_assert_uint_gt(next, id);
		id = next;
	}
	pid_t child = keep_copy(fd);
	ck_assert_int_eq(p2pbuf_lease_release(c, id, fd), 0);
	ck_assert_int_eq(p2pbuf_export(c, "sim2", 0, &r, 1, NULL, &next, &size), -EDQUOT);
	ck_assert_ptr_nonnull(strstr(p2pbuf_last_message(c), "max-leases"));
	end_child(child);
	p2pbuf_disconnect(c);
}
END_TEST

/* An admin's revoke of a released lease that a copy keeps alive is enforced. */
START_TEST(admin_revoke_of_lingering_release_is_enforced)
{
	struct log obs;
	struct p2pbuf *c = connect_logged(NULL);
	struct p2pbuf *admin = connect_logged(&obs);
	struct p2pbuf_lease l;
	uint64_t id;
	int fd = export_whole(c, "sim0", &id);
	pid_t child = keep_copy(fd);

	ck_assert_int_eq(p2pbuf_subscribe(admin, true), 0);
	ck_assert_int_eq(p2pbuf_lease_release(c, id, fd), 0);
	ck_assert(lease_info(admin, id, &l));
	ck_assert_int_eq(l.reason, P2PBUF_REASON_RELEASED);
	ck_assert_int_eq(p2pbuf_revoke(admin, id), 0);
	ck_assert(lease_info(admin, id, &l));
	ck_assert_int_eq(l.state, P2PBUF_LEASE_REVOKING);
	ck_assert_int_eq(l.reason, P2PBUF_REASON_ADMIN);
	/* The copy stays: past sim0's 1 s deadline the device is cycled. */
	int k = wait_for(admin, &obs, P2PBUF_EVENT_LEASE_REVOKED, id);
	ck_assert_int_eq(obs.ev[k].reason, P2PBUF_REASON_ADMIN);
	ck_assert_uint_eq(wait_generation(admin, "sim0", 1), 1);
	end_child(child);
	p2pbuf_disconnect(c);
	p2pbuf_disconnect(admin);
}
END_TEST

START_TEST(admin_revoke_cooperative_holder)
{
	struct log lg;
	struct p2pbuf *c = connect_logged(&lg);
	struct p2pbuf *admin = connect_logged(NULL);
	uint64_t id;
	int fd = export_whole(c, "sim0", &id);

	ck_assert_int_eq(p2pbuf_revoke(admin, id), 0);
	int k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKING, id);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_ADMIN);
	ck_assert_int_gt(lg.ev[k].deadline_ms, 0);
	/* What a well-behaved holder does. */
	ck_assert_int_eq(p2pbuf_lease_release(c, id, fd), 0);
	int e = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKED, id);
	ck_assert_int_gt(e, k);
	ck_assert_int_eq(lg.ev[e].reason, P2PBUF_REASON_ADMIN);
	/* Nobody was cycled out. */
	ck_assert_uint_eq(generation(admin, "sim0"), 0);
	p2pbuf_disconnect(c);
	p2pbuf_disconnect(admin);
}
END_TEST

START_TEST(holder_keeps_fd_past_deadline_cycles_device)
{
	struct log lg, other_lg;
	struct p2pbuf *c = connect_logged(&lg);
	struct p2pbuf *other = connect_logged(&other_lg);
	struct p2pbuf *admin = connect_logged(NULL);
	uint64_t id, other_id;
	int fd = export_whole(c, "sim0", &id);
	int other_fd = export_whole(other, "sim0", &other_id);

	ck_assert_int_eq(p2pbuf_subscribe(other, false), 0);
	ck_assert_int_eq(p2pbuf_revoke(admin, id), 0);
	wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKING, id);
	/* The holder ignores it and keeps fd: after 1 s the device is cycled. */
	int k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKED, id);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_ADMIN);
	k = wait_for(other, &other_lg, P2PBUF_EVENT_LEASE_REVOKED, other_id);
	ck_assert_int_eq(other_lg.ev[k].reason, P2PBUF_REASON_DEVICE_CYCLE);
	ck_assert_uint_eq(wait_generation(admin, "sim0", 1), 1);
	/* The other holder saw the device go through cycling back to ready. */
	for (int i = 0; i < 100; i++) {
		int n = 0;
		for (int j = 0; j < other_lg.n; j++)
			n += other_lg.ev[j].type == P2PBUF_EVENT_DEVICE_STATE;
		if (n >= 2)
			break;
		p2pbuf_wait(other, 50);
	}
	int s0 = find(&other_lg, P2PBUF_EVENT_DEVICE_STATE, 0);
	ck_assert_int_ge(s0, 0);
	ck_assert_int_eq(other_lg.ev[s0].state, P2PBUF_DEVICE_CYCLING);
	ck_assert_int_eq(other_lg.ev[other_lg.n - 1].state, P2PBUF_DEVICE_READY);
	close(fd);
	close(other_fd);
	p2pbuf_disconnect(c);
	p2pbuf_disconnect(other);
	p2pbuf_disconnect(admin);
}
END_TEST

START_TEST(notify_only_device_lingers)
{
	struct log lg;
	struct p2pbuf *c = connect_logged(&lg);
	struct p2pbuf *admin = connect_logged(NULL);
	struct p2pbuf_lease l;
	uint64_t id;
	int fd = export_whole(c, "sim2", &id);

	ck_assert_int_eq(p2pbuf_revoke(admin, id), 0);
	wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKING, id);
	usleep(1000000);
	ck_assert(lease_info(admin, id, &l));
	ck_assert_int_eq(l.state, P2PBUF_LEASE_REVOKING);
	ck_assert_int_eq(l.holders, 1);
	ck_assert(l.lingering);
	ck_assert_int_gt(l.deadline_ms, 0);
	ck_assert_uint_eq(generation(admin, "sim2"), 0);
	close(fd);
	int k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKED, id);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_ADMIN);
	p2pbuf_disconnect(c);
	p2pbuf_disconnect(admin);
}
END_TEST

START_TEST(ttl_expiry)
{
	struct log lg;
	struct p2pbuf *c = connect_logged(&lg);
	uint64_t id;
	int fd = export_whole(c, "sim4", &id);
	struct p2pbuf_lease l;

	ck_assert(lease_info(c, id, &l));
	ck_assert_int_gt(l.expires_ms, l.created_ms);
	int k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKING, id);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_TTL);
	ck_assert_int_eq(p2pbuf_lease_release(c, id, fd), 0);
	k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKED, id);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_TTL);
	p2pbuf_disconnect(c);
}
END_TEST

START_TEST(owner_disconnect)
{
	struct log obs;
	struct p2pbuf *c = connect_logged(NULL);
	struct p2pbuf *admin = connect_logged(&obs);
	uint64_t a, b;
	int fa = export_whole(c, "sim0", &a);
	int fb = export_whole(c, "sim0", &b);

	close(fa);
	pid_t child = keep_copy(fb);
	ck_assert_int_eq(p2pbuf_subscribe(admin, true), 0);
	close(fb);
	p2pbuf_disconnect(c);
	/* Nobody holds a: it ends at once. Another process holds b: it is revoking. */
	int k = wait_for(admin, &obs, P2PBUF_EVENT_LEASE_REVOKED, a);
	ck_assert_int_eq(obs.ev[k].reason, P2PBUF_REASON_OWNER_DISCONNECTED);
	k = wait_for(admin, &obs, P2PBUF_EVENT_LEASE_REVOKING, b);
	ck_assert_int_eq(obs.ev[k].reason, P2PBUF_REASON_OWNER_DISCONNECTED);
	end_child(child);
	k = wait_for(admin, &obs, P2PBUF_EVENT_LEASE_REVOKED, b);
	ck_assert_int_eq(obs.ev[k].reason, P2PBUF_REASON_OWNER_DISCONNECTED);
	ck_assert_uint_eq(generation(admin, "sim0"), 0);
	p2pbuf_disconnect(admin);
	ck_assert(harness_fds_settle(&h, 2000));
}
END_TEST

START_TEST(device_removed)
{
	struct log lg;
	struct p2pbuf *c = connect_logged(&lg);
	struct p2pbuf_range r = { 0, 0x1000 };
	uint64_t id, size;
	int fd = export_whole(c, "sim0", &id);

	harness_sim_event(&h, "sim0", "remove");
	int k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKED, id);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_DEVICE_GONE);
	ck_assert_int_eq(p2pbuf_export(c, "sim0", 0, &r, 1, NULL, &id, &size), -ENXIO);
	/* The other devices keep serving. */
	int fd2 = export_whole(c, "sim3", &id);
	close(fd2);
	close(fd);
	p2pbuf_disconnect(c);
}
END_TEST

START_TEST(device_error_cycles_when_configured)
{
	struct log lg;
	struct p2pbuf *c = connect_logged(&lg);
	uint64_t a, b;
	int fa = export_whole(c, "sim3", &a);
	int fb = export_whole(c, "sim0", &b);

	/* sim0 only reports errors; sim3 is cycled on one. */
	ck_assert_int_eq(p2pbuf_subscribe(c, false), 0);
	harness_sim_event(&h, "sim0", "error");
	int k = wait_for(c, &lg, P2PBUF_EVENT_DEVICE_STATE, 0);
	ck_assert_str_eq(lg.ev[k].device, "sim0");
	ck_assert_int_eq(lg.ev[k].state, P2PBUF_DEVICE_READY);
	harness_sim_event(&h, "sim3", "error");
	k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKED, a);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_DEVICE_CYCLE);
	ck_assert_int_lt(find(&lg, P2PBUF_EVENT_LEASE_REVOKED, b), 0);
	ck_assert_uint_eq(generation(c, "sim0"), 0);
	close(fa);
	close(fb);
	p2pbuf_disconnect(c);
}
END_TEST

START_TEST(shutdown_tells_holders)
{
	struct log lg;
	struct p2pbuf *c = connect_logged(&lg);
	uint64_t id;
	int fd = export_whole(c, "sim0", &id);

	kill(h.pid, SIGTERM);
	int k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKED, id);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_SHUTDOWN);
	close(fd);
	p2pbuf_disconnect(c);
}
END_TEST

START_TEST(policy_reload_revokes)
{
	struct log lg;
	struct p2pbuf *c = connect_logged(&lg);
	uint64_t keep, lose;
	int fk = export_whole(c, "sim0", &keep);
	int fl = export_whole(c, "sim1", &lose);

	harness_reload(&h, policy_without_sim1_fmt);
	int k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKING, lose);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_POLICY);
	ck_assert_int_eq(p2pbuf_lease_release(c, lose, fl), 0);
	wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKED, lose);
	ck_assert_int_lt(find(&lg, P2PBUF_EVENT_LEASE_REVOKING, keep), 0);
	struct p2pbuf_range r = { 0, 0x1000 };
	uint64_t id, size;
	ck_assert_int_eq(p2pbuf_export(c, "sim1", 0, &r, 1, NULL, &id, &size), -EPERM);

	/* A policy with a typo is refused and the current one stays. */
	harness_reload(&h, "device sim0 sim bar 0 1M\nallow usr %1$u device sim0\n");
	usleep(200000);
	int fd = p2pbuf_export(c, "sim3", 0, &r, 1, NULL, &id, &size);
	ck_assert_msg(fd >= 0, "%s", p2pbuf_last_message(c));
	close(fd);
	close(fk);
	p2pbuf_disconnect(c);
}
END_TEST

/* A lease released by another process of the same user, while its exporter still holds a
 * copy: the exporting connection still hears how it ends (here by a reset). */
START_TEST(exporter_told_after_release_elsewhere)
{
	struct log lg;
	struct p2pbuf *holder = connect_logged(&lg);
	struct p2pbuf *other = connect_logged(NULL);
	uint64_t id;
	int fd = export_whole(holder, "sim0", &id);

	ck_assert_int_eq(p2pbuf_release(other, id), 0);
	int k = wait_for(holder, &lg, P2PBUF_EVENT_LEASE_REVOKING, id);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_RELEASED);
	ck_assert_int_eq(p2pbuf_reset(other, "sim0"), 0);
	k = wait_for(holder, &lg, P2PBUF_EVENT_LEASE_REVOKED, id);
	/* The first reason stands: the end came after a release. */
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_RELEASED);
	close(fd);
	p2pbuf_disconnect(holder);
	p2pbuf_disconnect(other);
}
END_TEST

/* A user's own subscription (not "all") shows the revocation of that user's leases, which
 * another connection exported. */
START_TEST(own_subscription_sees_own_leases)
{
	struct log w;
	struct p2pbuf *c = connect_logged(NULL);
	struct p2pbuf *watcher = connect_logged(&w);
	uint64_t id;

	ck_assert_int_eq(p2pbuf_subscribe(watcher, false), 0);
	int fd = export_whole(c, "sim0", &id);
	ck_assert_int_eq(p2pbuf_revoke(watcher, id), 0);
	int k = wait_for(watcher, &w, P2PBUF_EVENT_LEASE_REVOKING, id);
	ck_assert_int_eq(w.ev[k].reason, P2PBUF_REASON_ADMIN);
	ck_assert_int_eq(p2pbuf_lease_release(c, id, fd), 0);
	k = wait_for(watcher, &w, P2PBUF_EVENT_LEASE_REVOKED, id);
	ck_assert_int_eq(w.ev[k].reason, P2PBUF_REASON_ADMIN);
	p2pbuf_disconnect(c);
	p2pbuf_disconnect(watcher);
}
END_TEST

/* The owner went away while a child holds the buffer: the lease lingers like a released
 * one, counts, is listed with its holder, and is not cycled out at its deadline (sim0's is
 * 1 s); an admin's revoke then enforces it. */
START_TEST(owner_gone_with_copy_lingers)
{
	struct p2pbuf *c = connect_logged(NULL);
	struct p2pbuf *admin = connect_logged(NULL);
	struct p2pbuf_lease l;
	uint64_t id;
	int fd = export_whole(c, "sim0", &id);
	pid_t child = keep_copy(fd);

	close(fd);
	p2pbuf_disconnect(c);
	for (int i = 0; i < 200 && (!lease_info(admin, id, &l) || !l.lingering); i++)
		usleep(20000);
	ck_assert(lease_info(admin, id, &l));
	ck_assert_int_eq(l.state, P2PBUF_LEASE_REVOKING);
	ck_assert_int_eq(l.reason, P2PBUF_REASON_OWNER_DISCONNECTED);
	ck_assert(l.lingering);
	ck_assert_int_eq(l.holders, 1);
	ck_assert_uint_eq(generation(admin, "sim0"), 0);
	ck_assert_int_eq(p2pbuf_revoke(admin, id), 0);
	ck_assert_uint_eq(wait_generation(admin, "sim0", 1), 1);
	ck_assert(!lease_info(admin, id, &l));
	end_child(child);
	p2pbuf_disconnect(admin);
}
END_TEST

static void send_reset_async(int fd, const char *device)
{
	P2pbuf__Request req = P2PBUF__REQUEST__INIT;
	P2pbuf__Reset reset = P2PBUF__RESET__INIT;
	uint8_t buf[256];

	ck_assert(harness_raw_hello(fd));
	reset.device = (char *)device;
	req.body_case = P2PBUF__REQUEST__BODY_RESET;
	req.reset = &reset;
	size_t len = p2pbuf__request__pack(&req, buf);
	ck_assert_int_eq(send(fd, buf, len, 0), (ssize_t)len);
}

/* The error of the next Reply on a raw connection (events before it are skipped). */
static int read_reply_error(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint8_t buf[65536];

	for (;;) {
		ck_assert_int_eq(poll(&p, 1, timeout_ms), 1);
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		ck_assert_int_gt(n, 0);
		P2pbuf__ServerMessage *sm = p2pbuf__server_message__unpack(NULL, (size_t)n, buf);
		ck_assert_ptr_nonnull(sm);
		bool reply = sm->body_case == P2PBUF__SERVER_MESSAGE__BODY_REPLY;
		int err = reply ? sm->reply->error : 0;
		p2pbuf__server_message__free_unpacked(sm, NULL);
		if (reply)
			return err;
	}
}

START_TEST(stuck_cycle_does_not_block_others)
{
	struct p2pbuf *c = connect_logged(NULL);
	struct p2pbuf_device *ds;
	size_t n;
	uint64_t id;
	int raw = harness_raw_connect(&h);

	/* sim1 takes 1.5 s to reopen: its cycle sits on the worker thread meanwhile. */
	send_reset_async(raw, "sim1");
	usleep(100000);
	int fd = export_whole(c, "sim0", &id);
	close(fd);
	ck_assert_int_eq(p2pbuf_list_devices(c, &ds, &n), 0);
	ck_assert_str_eq(ds[1].name, "sim1");
	ck_assert_int_eq(ds[1].state, P2PBUF_DEVICE_CYCLING);
	p2pbuf_devices_free(ds, n);
	/* Exports from the cycling device are refused, not queued. */
	struct p2pbuf_range r = { 0, 0x1000 };
	uint64_t size;
	ck_assert_int_eq(p2pbuf_export(c, "sim1", 0, &r, 1, NULL, &id, &size), -EBUSY);
	/* The reset is answered, with success, once the device is ready again. */
	ck_assert_int_eq(read_reply_error(raw, 5000), 0);
	close(raw);
	ck_assert_uint_eq(wait_generation(c, "sim1", 1), 1);
	p2pbuf_disconnect(c);
}
END_TEST

/* ---- devices changed by a reload ---- */

/* sim0 keeps its leases through every reload below; sim1 and sim2 (notify-only) are the
 * ones removed. */
static const char reload_fmt[] =
    "device sim0 sim bar 0 1M revoke-deadline 5s\n"
    "device sim1 sim bar 0 1M revoke-deadline 1s\n"
    "device sim2 sim bar 0 1M revoke-deadline 500ms revocation notify-only\n"
    "allow user %1$u device sim0\n"
    "allow user %1$u device sim1\n"
    "allow user %1$u device sim2\n"
    "admin user %1$u\n";

/* The same with sim5 added; it takes 2 s to open. */
static const char reload_add_fmt[] =
    "device sim0 sim bar 0 1M revoke-deadline 5s\n"
    "device sim1 sim bar 0 1M revoke-deadline 1s\n"
    "device sim2 sim bar 0 1M revoke-deadline 500ms revocation notify-only\n"
    "device sim5 sim bar 0 1M cycle-delay 2s\n"
    "allow user %1$u device sim0\n"
    "allow user %1$u device sim1\n"
    "allow user %1$u device sim2\n"
    "allow user %1$u device sim5\n"
    "admin user %1$u\n";

/* sim1 and sim2 removed, with their rules. */
static const char reload_remove_fmt[] = "device sim0 sim bar 0 1M revoke-deadline 5s\n"
					"allow user %1$u device sim0\n"
					"admin user %1$u\n";

/* sim0's deadline shortened: its options alone change. The same rules in another order and
 * on other lines are not a change. */
static const char reload_options_fmt[] =
    "# rules first\n"
    "allow user %1$u device sim2\n"
    "allow user %1$u device sim0\n"
    "allow user %1$u device sim1\n"
    "device sim0 sim bar 0 1M revoke-deadline 1s\n"
    "device sim1 sim bar 0 1M revoke-deadline 1s\n"
    "device sim2 sim bar 0 1M revoke-deadline 500ms revocation notify-only\n"
    "admin user %1$u\n";

/* sim1's hardware changes (a 2M BAR): a removal and an addition under one name. */
static const char reload_readdress_fmt[] =
    "device sim0 sim bar 0 1M revoke-deadline 5s\n"
    "device sim1 sim bar 0 2M revoke-deadline 1s\n"
    "device sim2 sim bar 0 1M revoke-deadline 500ms revocation notify-only\n"
    "allow user %1$u device sim0\n"
    "allow user %1$u device sim1\n"
    "allow user %1$u device sim2\n"
    "admin user %1$u\n";

static void setup_reload(void)
{
	harness_start(&h, reload_fmt, NULL);
}

/* How many lines of the daemon's log contain text. */
static int logged(const char *text)
{
	char path[160], line[1024];
	int n = 0;

	snprintf(path, sizeof(path), "%s/daemon.log", h.dir);
	FILE *f = fopen(path, "re");
	ck_assert_msg(f, "cannot read %s", path);
	while (fgets(line, sizeof(line), f))
		n += strstr(line, text) != NULL;
	fclose(f);
	return n;
}

/* How many reloads the daemon has logged the outcome of. */
static int reloads(void)
{
	return logged("reloaded: ") + logged("reload refused");
}

/* Reload fmt and wait (up to ~20 s) until the daemon has logged the outcome, which must
 * contain outcome ("reloaded: ..." or "reload refused"). */
static void reload_and_wait(const char *fmt, const char *outcome)
{
	int before = reloads();

	harness_reload(&h, fmt);
	for (int i = 0; i < 1000 && reloads() == before; i++)
		usleep(20000);
	ck_assert_msg(logged(outcome) > 0, "the daemon's log does not say \"%s\" (see %s)", outcome,
		      h.dir);
}

/* Wait (up to ~5 s) until name is no longer listed: removed and freed. */
static bool wait_unlisted(struct p2pbuf *c, const char *name)
{
	for (int i = 0; i < 250 && listed(c, name, NULL, NULL) > 0; i++)
		usleep(20000);
	return listed(c, name, NULL, NULL) == 0;
}

/* Whether the daemon still has simulated device name's control FIFO open. */
static bool fifo_open(const char *name)
{
	char dir[64], path[320], target[256], want[256];
	bool found = false;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)h.pid);
	snprintf(want, sizeof(want), "%s/%s.remove", h.dir, name);
	DIR *d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	for (struct dirent *e; (e = readdir(d));) {
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = '\0';
		found = found || strcmp(target, want) == 0;
	}
	closedir(d);
	return found;
}

static int find_state(const struct log *lg, const char *device, enum p2pbuf_device_state state)
{
	for (int i = 0; i < lg->n; i++)
		if (lg->ev[i].type == P2PBUF_EVENT_DEVICE_STATE &&
		    strcmp(lg->device[i], device) == 0 && lg->ev[i].state == state)
			return i;
	return -1;
}

/* Dispatch events on c until device's state event came (up to ~5 s). Returns its index. */
static int wait_state(struct p2pbuf *c, struct log *lg, const char *device,
		      enum p2pbuf_device_state state)
{
	for (int i = 0; i < 100 && find_state(lg, device, state) < 0; i++)
		ck_assert_int_ge(p2pbuf_wait(c, 50), 0);
	int k = find_state(lg, device, state);
	ck_assert_msg(k >= 0, "no %s event for %s (%d events seen)",
		      p2pbuf_device_state_name(state), device, lg->n);
	return k;
}

static int64_t now_realtime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An added device opens on the worker: listed as cycling and refusing exports meanwhile,
 * while the others serve; then ready, with an event, and exporting. */
START_TEST(reload_adds_device)
{
	struct log lg;
	struct p2pbuf *c = connect_logged(&lg);
	struct p2pbuf_range r = { 0, 0x1000 };
	enum p2pbuf_device_state st = P2PBUF_DEVICE_UNKNOWN;
	uint64_t id, size;

	ck_assert_int_eq(p2pbuf_subscribe(c, false), 0);
	reload_and_wait(reload_add_fmt, "devices 1 added, 0 removed, 0 changed; 0 lease(s)");
	ck_assert_int_eq(logged("rules 1 added, 0 removed"), 1);
	int k = wait_state(c, &lg, "sim5", P2PBUF_DEVICE_CYCLING);
	ck_assert_int_eq(listed(c, "sim5", &st, NULL), 1);
	ck_assert_int_eq(st, P2PBUF_DEVICE_CYCLING);
	ck_assert_int_eq(p2pbuf_export(c, "sim5", 0, &r, 1, NULL, &id, &size), -EBUSY);
	int fd = export_whole(c, "sim0", &id);
	close(fd);
	int e = wait_state(c, &lg, "sim5", P2PBUF_DEVICE_READY);
	ck_assert_int_gt(e, k);
	ck_assert_uint_eq(lg.ev[e].generation, 0);
	fd = export_whole(c, "sim5", &id);
	close(fd);
	p2pbuf_disconnect(c);
}
END_TEST

/* A removed device's holder is told first (revoking, reason policy), no export starts from
 * it, and once the holder let go the lease ends and the device is closed and unlisted. */
START_TEST(reload_removes_device)
{
	struct log lg, obs;
	struct p2pbuf *c = connect_logged(&lg);
	struct p2pbuf *admin = connect_logged(&obs);
	struct p2pbuf_range r = { 0, 0x1000 };
	enum p2pbuf_device_state st = P2PBUF_DEVICE_UNKNOWN;
	uint64_t id, keep, other, size;
	int fd = export_whole(c, "sim1", &id);
	int fk = export_whole(c, "sim0", &keep);

	ck_assert_int_eq(p2pbuf_subscribe(admin, true), 0);
	ck_assert(fifo_open("sim1"));
	reload_and_wait(reload_remove_fmt,
			"devices 0 added, 2 removed, 0 changed; 1 lease(s) revoked");
	ck_assert_int_eq(logged("rules 0 added, 2 removed"), 1);
	int k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKING, id);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_POLICY);
	ck_assert_int_eq(p2pbuf_export(c, "sim1", 0, &r, 1, NULL, &other, &size), -ENXIO);
	ck_assert_int_eq(listed(c, "sim1", &st, NULL), 1);
	ck_assert_int_eq(st, P2PBUF_DEVICE_GONE);
	wait_state(admin, &obs, "sim1", P2PBUF_DEVICE_GONE);
	/* sim2 had no lease: it is gone at once. */
	ck_assert(wait_unlisted(c, "sim2"));
	ck_assert_int_eq(p2pbuf_lease_release(c, id, fd), 0);
	k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKED, id);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_POLICY);
	ck_assert(wait_unlisted(c, "sim1"));
	ck_assert(!fifo_open("sim1"));
	/* The device that stayed kept its lease. */
	ck_assert_int_lt(find(&lg, P2PBUF_EVENT_LEASE_REVOKING, keep), 0);
	struct p2pbuf_lease l;
	ck_assert(lease_info(admin, keep, &l));
	ck_assert_int_eq(l.state, P2PBUF_LEASE_ACTIVE);
	close(fk);
	p2pbuf_disconnect(c);
	p2pbuf_disconnect(admin);
}
END_TEST

/* Holders that never let go of a removed device's buffers: past its deadline the device is
 * closed, which revokes them, even where the device only reported (notify-only): the daemon
 * lets go of it. */
START_TEST(reload_removes_device_holder_keeps)
{
	struct log lg;
	struct p2pbuf *c = connect_logged(&lg);
	uint64_t a, b;
	int fa = export_whole(c, "sim1", &a);
	int fb = export_whole(c, "sim2", &b);

	reload_and_wait(reload_remove_fmt, "2 lease(s) revoked");
	int k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKING, a);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_POLICY);
	k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKING, b);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_POLICY);
	k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKED, a);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_POLICY);
	k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKED, b);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_POLICY);
	ck_assert(wait_unlisted(c, "sim1"));
	ck_assert(wait_unlisted(c, "sim2"));
	ck_assert(!fifo_open("sim1"));
	ck_assert(!fifo_open("sim2"));
	ck_assert_int_eq(
	    logged("kept it past the deadline (reason policy); closing the removed device,"), 2);
	close(fa);
	close(fb);
	p2pbuf_disconnect(c);
}
END_TEST

/* New options for a device: its leases are untouched, and the new deadline applies to the
 * next revocation. */
START_TEST(reload_changes_device_options)
{
	struct log lg;
	struct p2pbuf *c = connect_logged(&lg);
	struct p2pbuf *admin = connect_logged(NULL);
	struct p2pbuf_lease l;
	uint64_t id;
	int fd = export_whole(c, "sim0", &id);

	reload_and_wait(reload_options_fmt, "devices 0 added, 0 removed, 1 changed; 0 lease(s)");
	ck_assert_int_eq(logged("rules 0 added, 0 removed"), 1);
	ck_assert(lease_info(admin, id, &l));
	ck_assert_int_eq(l.state, P2PBUF_LEASE_ACTIVE);
	ck_assert_uint_eq(generation(admin, "sim0"), 0);
	ck_assert_int_eq(p2pbuf_revoke(admin, id), 0);
	int k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKING, id);
	/* 1 s from the revoke, which came before now; the old deadline would be 5 s away. */
	ck_assert_int_le(lg.ev[k].deadline_ms, now_realtime_ms() + 1000);
	/* The holder keeps its fd: the device is cycled at the new deadline. */
	k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKED, id);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_ADMIN);
	ck_assert_uint_eq(wait_generation(admin, "sim0", 1), 1);
	close(fd);
	p2pbuf_disconnect(c);
	p2pbuf_disconnect(admin);
}
END_TEST

/* A device whose address (a simulated one's BARs) changes is removed and added: the old one
 * revokes its leases and closes; the new one, under the same name, waits for it, then opens
 * with the new BAR. */
START_TEST(reload_readdressed_device_is_removed_and_added)
{
	struct log lg;
	struct p2pbuf *c = connect_logged(&lg);
	struct p2pbuf_range big = { 0x100000, 0x1000 };
	enum p2pbuf_device_state st = P2PBUF_DEVICE_UNKNOWN;
	uint64_t id, other, size;
	int fd = export_whole(c, "sim1", &id);

	ck_assert_int_eq(p2pbuf_subscribe(c, false), 0);
	reload_and_wait(reload_readdress_fmt, "devices 1 added, 1 removed, 0 changed");
	int k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKING, id);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_POLICY);
	/* Both listed while the old one's lease lives; the name means the new one. */
	ck_assert_int_eq(listed(c, "sim1", &st, NULL), 2);
	ck_assert_int_eq(st, P2PBUF_DEVICE_CYCLING);
	ck_assert_int_eq(p2pbuf_export(c, "sim1", 0, &big, 1, NULL, &other, &size), -EBUSY);
	ck_assert_int_eq(p2pbuf_lease_release(c, id, fd), 0);
	k = wait_for(c, &lg, P2PBUF_EVENT_LEASE_REVOKED, id);
	ck_assert_int_eq(lg.ev[k].reason, P2PBUF_REASON_POLICY);
	int e = wait_state(c, &lg, "sim1", P2PBUF_DEVICE_READY);
	ck_assert_int_gt(e, k);
	ck_assert_int_eq(listed(c, "sim1", &st, NULL), 1);
	ck_assert_int_eq(st, P2PBUF_DEVICE_READY);
	fd = p2pbuf_export(c, "sim1", 0, &big, 1, NULL, &other, &size);
	ck_assert_msg(fd >= 0, "export past 1M of the new sim1: %s", p2pbuf_last_message(c));
	close(fd);
	p2pbuf_disconnect(c);
}
END_TEST

/* A reload that cannot be made changes nothing: devices, leases and rules stay. */
START_TEST(reload_refused_changes_nothing)
{
	struct log lg;
	struct p2pbuf *c = connect_logged(&lg);
	struct p2pbuf_lease l;
	uint64_t id;
	int fd = export_whole(c, "sim1", &id);

	/* A new device whose rule has an error, and sim1 gone. */
	reload_and_wait("device sim0 sim bar 0 1M\ndevice sim7 sim bar 0 1M\n"
			"allow user %1$u device sim0\nallow user %1$u device sim7 bar 9\n",
			"reload refused");
	/* A device declared twice. */
	reload_and_wait("device sim0 sim bar 0 1M\ndevice sim7 sim bar 0 1M\n"
			"device sim7 sim bar 0 2M\nallow user %1$u device sim0\n",
			"is already declared");
	ck_assert_int_eq(logged("reloaded:"), 0);
	ck_assert_int_eq(listed(c, "sim7", NULL, NULL), 0);
	ck_assert_int_eq(listed(c, "sim2", NULL, NULL), 1);
	ck_assert(lease_info(c, id, &l));
	ck_assert_int_eq(l.state, P2PBUF_LEASE_ACTIVE);
	ck_assert_int_eq(p2pbuf_dispatch(c), 0);
	ck_assert_int_eq(lg.n, 0);
	int f2 = export_whole(c, "sim1", &id);
	close(f2);
	close(fd);
	p2pbuf_disconnect(c);
}
END_TEST

static Suite *revoke_suite(void)
{
	Suite *s = suite_create("revoke");
	TCase *tc = tcase_create("sim");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, release_ends_at_the_next_count);
	tcase_add_test(tc, export_at_quota_waits_for_the_count);
	tcase_add_test(tc, release_with_copy_elsewhere_lingers_and_counts);
	tcase_add_test(tc, admin_revoke_cooperative_holder);
	tcase_add_test(tc, admin_revoke_of_lingering_release_is_enforced);
	tcase_add_test(tc, holder_keeps_fd_past_deadline_cycles_device);
	tcase_add_test(tc, notify_only_device_lingers);
	tcase_add_test(tc, ttl_expiry);
	tcase_add_test(tc, owner_disconnect);
	tcase_add_test(tc, exporter_told_after_release_elsewhere);
	tcase_add_test(tc, own_subscription_sees_own_leases);
	tcase_add_test(tc, owner_gone_with_copy_lingers);
	tcase_add_test(tc, device_removed);
	tcase_add_test(tc, device_error_cycles_when_configured);
	tcase_add_test(tc, policy_reload_revokes);
	tcase_add_test(tc, stuck_cycle_does_not_block_others);
	suite_add_tcase(s, tc);
	TCase *ts = tcase_create("shutdown");
	tcase_add_checked_fixture(ts, setup, teardown);
	tcase_set_timeout(ts, 30);
	tcase_add_test(ts, shutdown_tells_holders);
	suite_add_tcase(s, ts);
	TCase *tr = tcase_create("reload");
	tcase_add_checked_fixture(tr, setup_reload, teardown);
	tcase_set_timeout(tr, 30);
	tcase_add_test(tr, reload_adds_device);
	tcase_add_test(tr, reload_removes_device);
	tcase_add_test(tr, reload_removes_device_holder_keeps);
	tcase_add_test(tr, reload_changes_device_options);
	tcase_add_test(tr, reload_readdressed_device_is_removed_and_added);
	tcase_add_test(tr, reload_refused_changes_nothing);
	suite_add_tcase(s, tr);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(revoke_suite());

	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
