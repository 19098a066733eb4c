/* Restart survival on simulated devices, with this test playing the service manager: a
 * notify socket that keeps the fds the daemon parks (FDSTORE=1, FDNAME=, FDSTOREREMOVE=1)
 * under their names, and a restart that hands them back as LISTEN_FDS/LISTEN_FDNAMES with
 * the listening socket first, as systemd does. Cases: a crash keeps every lease (same id and
 * generation) and libp2pbuf reclaims it by itself; a lease nobody reclaims goes the owner-gone
 * way after the grace; a corrupted record, one of a newer format and a missing fd are closed
 * (fail closed) and the device is cycled where a buffer cannot be accounted for; a stop ends
 * everything with reason shutdown. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "p2pbuf.h"

#define MAX_STORED 64

static const char policy_fmt[] = "device sim0 sim bar 0 1M\n"
				 "device sim1 sim bar 0 1M\n"
				 "allow user %u device sim0\n"
				 "allow user %u device sim1\n"
				 "admin user %u\n";

struct stored {
	char name[96];
	int fd;
};

struct manager {
	char dir[64], sock[128], notify[128], policy[128], log[128];
	int listen_fd, notify_fd;
	pid_t pid;
	struct stored fds[MAX_STORED];
	size_t n;
	int ready; /* READY=1 seen from the current instance */
	int restarts;
};

static struct manager m;

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static void forget(const char *name)
{
	for (size_t i = 0; i < m.n;) {
		if (strcmp(m.fds[i].name, name) == 0) {
			close(m.fds[i].fd);
			m.fds[i] = m.fds[--m.n];
		} else {
			i++;
		}
	}
}

/* Read what the daemon told us, keeping or dropping fds as it asks. */
static void pump(int timeout_ms)
{
	struct pollfd p = { .fd = m.notify_fd, .events = POLLIN };

	while (poll(&p, 1, timeout_ms) == 1) {
		char buf[4096], cbuf[CMSG_SPACE(sizeof(int) * 8)];
		struct iovec iov = { buf, sizeof(buf) - 1 };
		struct msghdr mh = { .msg_iov = &iov,
				     .msg_iovlen = 1,
				     .msg_control = cbuf,
				     .msg_controllen = sizeof(cbuf) };
		ssize_t n = recvmsg(m.notify_fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0)
			break;
		buf[n] = '\0';
		int fd = -1;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_type == SCM_RIGHTS)
				memcpy(&fd, CMSG_DATA(c), sizeof(fd));
		const char *name = strstr(buf, "FDNAME=");
		char nm[96] = "stored";
		if (name)
			sscanf(name + 7, "%95[^\n]", nm);
		if (strstr(buf, "FDSTOREREMOVE=1"))
			forget(nm);
		else if (strstr(buf, "FDSTORE=1") && fd >= 0 && m.n < MAX_STORED) {
			snprintf(m.fds[m.n].name, sizeof(m.fds[0].name), "%s", nm);
			m.fds[m.n++].fd = fd;
			fd = -1;
		}
		if (fd >= 0)
			close(fd);
		if (strstr(buf, "READY=1"))
			m.ready = 1;
		timeout_ms = 0;
	}
}

static bool draining;

/* The manager's reader while a test thread may block in a call. */
static void *drain(void *arg)
{
	while (__atomic_load_n(&draining, __ATOMIC_ACQUIRE))
		pump(20);
	return arg;
}

static int stored(const char *name)
{
	for (size_t i = 0; i < m.n; i++)
		if (strcmp(m.fds[i].name, name) == 0)
			return m.fds[i].fd;
	return -1;
}

/* Start p2pbufd with the listening socket and every stored fd, as systemd restarts it. */
static void start(void)
{
	char names[4096] = "p2pbufd.socket";

	for (size_t i = 0; i < m.n; i++) {
		strcat(names, ":");
		strcat(names, m.fds[i].name);
	}
	m.ready = 0;
	m.pid = fork();
	ck_assert_int_ge(m.pid, 0);
	if (m.pid == 0) {
		char pid[16], n[16];
		int log = open(m.log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		dup2(log, 2);
		/* fd 3 upwards, in the order of the names. */
		int top = 100;
		dup2(m.listen_fd, top);
		for (size_t i = 0; i < m.n; i++)
			dup2(m.fds[i].fd, top + 1 + (int)i);
		for (size_t i = 0; i <= m.n; i++) {
			dup2(top + (int)i, 3 + (int)i);
			fcntl(3 + (int)i, F_SETFD, 0);
		}
		/* The staging copies would be holders of the buffers in the new daemon. */
		for (size_t i = 0; i <= m.n; i++)
			close(top + (int)i);
		snprintf(pid, sizeof(pid), "%d", (int)getpid());
		snprintf(n, sizeof(n), "%zu", m.n + 1);
		setenv("LISTEN_FDS", n, 1);
		setenv("LISTEN_PID", pid, 1);
		setenv("LISTEN_FDNAMES", names, 1);
		setenv("NOTIFY_SOCKET", m.notify, 1);
		setenv("P2PBUF_STATE_REWRITE_BYTES", "2048", 1);
		execl(getenv("P2PBUFD"), "p2pbufd", "--policy", m.policy, "--fd-store", "64",
		      "--reclaim-grace", "1500ms", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 400 && !m.ready; i++)
		pump(50);
	ck_assert_msg(m.ready, "p2pbufd did not get ready (see %s)", m.log);
}

/* Stop the instance with sig and collect it; what it parked stays with us. */
static int stop(int sig)
{
	int status;

	kill(m.pid, sig);
	ck_assert_int_eq(waitpid(m.pid, &status, 0), m.pid);
	pump(0);
	return status;
}

static void setup(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char *bin = getenv("top_builddir");
	static char daemon_bin[512];

	memset(&m, 0, sizeof(m));
	snprintf(m.dir, sizeof(m.dir), "/tmp/p2pbuf-restart-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(m.dir));
	snprintf(m.sock, sizeof(m.sock), "%s/sock", m.dir);
	snprintf(m.notify, sizeof(m.notify), "%s/notify", m.dir);
	snprintf(m.policy, sizeof(m.policy), "%s/policy", m.dir);
	snprintf(m.log, sizeof(m.log), "%s/daemon.log", m.dir);
	snprintf(daemon_bin, sizeof(daemon_bin), "%s/daemon/p2pbufd", bin ? bin : ".");
	setenv("P2PBUFD", daemon_bin, 1);
	FILE *f = fopen(m.policy, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, policy_fmt, (unsigned)getuid(), (unsigned)getuid(), (unsigned)getuid());
	fclose(f);
	m.listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	strcpy(sa.sun_path, m.sock);
	ck_assert_int_eq(bind(m.listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(m.listen_fd, 64), 0);
	m.notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	strcpy(sa.sun_path, m.notify);
	ck_assert_int_eq(bind(m.notify_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	start();
}

static void teardown(void)
{
	if (m.pid > 0 && kill(m.pid, 0) == 0)
		stop(SIGKILL);
	for (size_t i = 0; i < m.n; i++)
		close(m.fds[i].fd);
	close(m.listen_fd);
	close(m.notify_fd);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", m.dir);
	(void)!system(cmd);
}

static struct p2pbuf *client(void)
{
	struct p2pbuf *c = NULL;

	ck_assert_int_eq(p2pbuf_connect(m.sock, &c), 0);
	return c;
}

static int export4k(struct p2pbuf *c, const char *dev, uint64_t *id)
{
	struct p2pbuf_range r = { 0, 0x1000 };
	uint64_t size;
	int fd = p2pbuf_export(c, dev, 0, &r, 1, NULL, id, &size);

	ck_assert_msg(fd >= 0, "export %s: %s", dev, p2pbuf_last_message(c));
	return fd;
}

/* The lease as an admin lists it; false when there is none. */
static bool lease(uint64_t id, struct p2pbuf_lease *out)
{
	struct p2pbuf *a = client();
	struct p2pbuf_lease *ls;
	size_t n;
	bool found = false;

	ck_assert_int_eq(p2pbuf_list_leases(a, true, &ls, &n), 0);
	for (size_t i = 0; i < n; i++)
		if (ls[i].id == id) {
			*out = ls[i];
			out->device = out->label = out->rule = NULL;
			out->ranges = NULL;
			found = true;
		}
	p2pbuf_leases_free(ls, n);
	p2pbuf_disconnect(a);
	return found;
}

/* Whether lease id is gone, waiting (up to 5 s) as a lease let go ends at the next count of
 * its holders, off the daemon's loop; the daemon's notices are read meanwhile. */
static bool gone(uint64_t id)
{
	struct p2pbuf_lease l;

	for (int i = 0; i < 100; i++) {
		pump(0);
		if (!lease(id, &l))
			return true;
		sleep_ms(50);
	}
	return false;
}

/* How many lease buffers the store holds. */
static size_t stored_leases(void)
{
	size_t n = 0;

	for (size_t i = 0; i < m.n; i++)
		n += strncmp(m.fds[i].name, "lease.", 6) == 0;
	return n;
}

/* dev's generation (UINT32_MAX when it is not listed) and, if ret_state, its state. */
static uint32_t device_listed(const char *dev, enum p2pbuf_device_state *ret_state)
{
	struct p2pbuf *a = client();
	struct p2pbuf_device *ds;
	size_t n;
	uint32_t g = UINT32_MAX;

	ck_assert_int_eq(p2pbuf_list_devices(a, &ds, &n), 0);
	for (size_t i = 0; i < n; i++)
		if (strcmp(ds[i].name, dev) == 0) {
			g = ds[i].generation;
			if (ret_state)
				*ret_state = ds[i].state;
		}
	p2pbuf_devices_free(ds, n);
	p2pbuf_disconnect(a);
	return g;
}

static uint32_t generation(const char *dev)
{
	return device_listed(dev, NULL);
}

static int reconnected;
static unsigned reclaimed;

static void on_event(struct p2pbuf *c, const struct p2pbuf_event *ev, void *userdata)
{
	if (ev->type == P2PBUF_EVENT_RECONNECTED) {
		reconnected++;
		reclaimed = ev->reclaimed;
	}
}

START_TEST(crash_keeps_leases_and_client_reclaims)
{
	struct p2pbuf *c = client();
	struct p2pbuf_lease l;
	uint64_t a, b;
	int fa = export4k(c, "sim0", &a), fb = export4k(c, "sim1", &b);

	reconnected = 0;
	p2pbuf_set_event_handler(c, on_event, NULL);
	ck_assert_int_eq(p2pbuf_set_reconnect(c, 20000), 0);
	ck_assert_int_eq(p2pbuf_reset(c, "sim1"), 0); /* generation 1 before the crash */
	close(fb);
	fb = export4k(c, "sim1", &b);
	pump(0);
	ck_assert_int_ge(stored("lease.1") + 1, 0);
	stop(SIGKILL);
	start();
	/* The client notices by itself and takes its leases back. */
	for (int i = 0; i < 200 && !reconnected; i++)
		ck_assert_int_ge(p2pbuf_wait(c, 50), 0);
	ck_assert_int_eq(reconnected, 1);
	ck_assert_uint_eq(reclaimed, 2);
	ck_assert(lease(a, &l));
	ck_assert_int_eq(l.state, P2PBUF_LEASE_ACTIVE);
	ck_assert_uint_eq(l.generation, 0);
	ck_assert(lease(b, &l));
	ck_assert_uint_eq(l.generation, 1);
	ck_assert_uint_eq(generation("sim1"), 1);
	/* Past the grace, reclaimed leases stay active. */
	sleep_ms(1800);
	ck_assert(lease(a, &l));
	ck_assert_int_eq(l.state, P2PBUF_LEASE_ACTIVE);
	/* And the new instance still revokes: a release ends it. */
	ck_assert_int_eq(p2pbuf_lease_release(c, a, fa), 0);
	ck_assert(gone(a));
	/* New leases get new ids. */
	uint64_t n;
	int fn = export4k(c, "sim0", &n);
	ck_assert_uint_gt(n, b);
	close(fn);
	close(fb);
	p2pbuf_disconnect(c);
}
END_TEST

START_TEST(unreclaimed_goes_owner_gone_after_grace)
{
	struct p2pbuf *c = client();
	struct p2pbuf_lease l;
	uint64_t held, dropped;
	int fh = export4k(c, "sim0", &held), fd = export4k(c, "sim0", &dropped);

	close(fd); /* nobody holds this one */
	stop(SIGKILL);
	start();
	ck_assert(lease(held, &l));
	ck_assert_int_eq(l.state, P2PBUF_LEASE_ACTIVE);
	/* No reconnect: after the grace the held one lingers, the other ends. */
	for (int i = 0; i < 100 && lease(dropped, &l); i++)
		sleep_ms(50);
	ck_assert(!lease(dropped, &l));
	ck_assert(lease(held, &l));
	ck_assert_int_eq(l.state, P2PBUF_LEASE_REVOKING);
	ck_assert_int_eq(l.reason, P2PBUF_REASON_OWNER_DISCONNECTED);
	ck_assert_uint_eq(generation("sim0"), 0);
	close(fh);
	p2pbuf_disconnect(c);
}
END_TEST

/* Overwrite the stored record's header (bad: not ours; version: a newer format). */
static void damage_record(bool version)
{
	int fd = -1;

	for (size_t i = 0; i < m.n; i++)
		if (strncmp(m.fds[i].name, "state.", 6) == 0)
			fd = m.fds[i].fd;
	ck_assert_int_ge(fd, 0);
	if (version) {
		uint8_t v[4] = { 99, 0, 0, 0 };
		ck_assert_int_eq(pwrite(fd, v, 4, 8), 4);
	} else {
		ck_assert_int_eq(pwrite(fd, "XXXXXXXX", 8, 0), 8);
	}
}

static void record_refused(bool version)
{
	struct p2pbuf *c = client();
	struct p2pbuf_lease l;
	uint64_t id;
	int fd = export4k(c, "sim0", &id);

	p2pbuf_disconnect(c);
	stop(SIGKILL);
	damage_record(version);
	start();
	ck_assert(!lease(id, &l));
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "grep -q '%s' %s",
		 version ? "newer than this p2pbufd" : "not p2pbufd", m.log);
	ck_assert_msg(system(cmd) == 0, "no refusal in %s", m.log);
	close(fd);
}

START_TEST(corrupted_record_is_refused)
{
	record_refused(false);
}
END_TEST

START_TEST(newer_record_is_refused)
{
	record_refused(true);
}
END_TEST

START_TEST(missing_fd_cycles_its_device)
{
	struct p2pbuf *c = client();
	struct p2pbuf_lease l;
	uint64_t lost, kept;
	int f0 = export4k(c, "sim0", &lost), f1 = export4k(c, "sim1", &kept);
	char name[32];

	p2pbuf_disconnect(c);
	pump(0);
	stop(SIGKILL);
	snprintf(name, sizeof(name), "lease.%llu", (unsigned long long)lost);
	ck_assert_int_ge(stored(name), 0);
	forget(name);
	start();
	ck_assert(!lease(lost, &l));
	ck_assert(lease(kept, &l));
	for (int i = 0; i < 100 && generation("sim0") != 1; i++)
		sleep_ms(50);
	ck_assert_uint_eq(generation("sim0"), 1);
	ck_assert_uint_eq(generation("sim1"), 0);
	close(f0);
	close(f1);
}
END_TEST

/* The record is rewritten from the live table once it grows (here after a few hundred bytes
 * instead of megabytes): after many grants and releases only one record is parked, newer
 * than the first, and a crash still keeps the lease that is alive. */
START_TEST(record_rewritten_when_it_grows)
{
	struct p2pbuf *c = client();
	struct p2pbuf_lease l;
	uint64_t keep, id;
	int fk = export4k(c, "sim1", &keep);

	/* A datagram socket queues few messages (net.unix.max_dgram_qlen): the manager reads on
	 * a thread of its own, as a service manager does, since leases end at their next count
	 * while this thread may be waiting in an export; else the daemon waits for us while we
	 * wait for it. Nothing else touches m until the thread is joined. */
	pthread_t reader;
	draining = true;
	ck_assert_int_eq(pthread_create(&reader, NULL, drain, NULL), 0);
	for (int i = 0; i < 30; i++) {
		int fd = export4k(c, "sim0", &id);
		ck_assert_int_eq(p2pbuf_lease_release(c, id, fd), 0);
	}
	__atomic_store_n(&draining, false, __ATOMIC_RELEASE);
	ck_assert_int_eq(pthread_join(reader, NULL), 0);
	/* Each ends at the next count of its holders, off the daemon's loop, and leaves the
	 * store then: read the daemon's notices until only the kept lease is left there. */
	for (int i = 0; i < 200 && stored_leases() > 1; i++)
		pump(50);
	ck_assert_uint_eq(stored_leases(), 1);
	size_t records = 0;
	unsigned long seq = 0;
	for (size_t i = 0; i < m.n; i++)
		if (strncmp(m.fds[i].name, "state.", 6) == 0) {
			records++;
			seq = strtoul(m.fds[i].name + 6, NULL, 10);
		}
	ck_assert_uint_eq(records, 1);
	ck_assert_uint_gt(seq, 0);
	stop(SIGKILL);
	start();
	ck_assert(lease(keep, &l));
	ck_assert_int_eq(l.state, P2PBUF_LEASE_ACTIVE);
	/* Released before the crash: it does not come back as a live lease. */
	if (lease(id, &l))
		ck_assert_int_eq(l.state, P2PBUF_LEASE_REVOKING);
	ck_assert(gone(id));
	close(fk);
	p2pbuf_disconnect(c);
}
END_TEST

/* p2pbuf-client export -- CMD keeps its child's lease through a crash of the daemon: the CLI
 * reconnects and reclaims, the child runs on, and the lease is still active past the grace
 * (an unreclaimed one would be revoking by then). */
START_TEST(cli_export_keeps_child_lease)
{
	char cli[512];
	const char *top = getenv("top_builddir");
	struct p2pbuf_lease l;
	uint64_t id = 0;

	snprintf(cli, sizeof(cli), "%s/client/p2pbuf-client", top ? top : ".");
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 1);
		execl(cli, "p2pbuf-client", "--socket", m.sock, "export", "sim0", "--bar", "0",
		      "--length", "4K", "--", "sleep", "60", (char *)NULL);
		_exit(127);
	}
	/* The child's lease is the only one: wait for it to be granted. */
	for (int i = 0; i < 200 && !id; i++) {
		for (uint64_t k = 1; k < 8 && !id; k++)
			if (lease(k, &l))
				id = k;
		if (!id)
			sleep_ms(50);
	}
	ck_assert_uint_gt(id, 0);
	stop(SIGKILL);
	start();
	sleep_ms(2500); /* past the 1.5 s grace */
	ck_assert(lease(id, &l));
	ck_assert_int_eq(l.state, P2PBUF_LEASE_ACTIVE);
	ck_assert_int_eq(waitpid(pid, NULL, WNOHANG), 0); /* the CLI and its child run on */
	kill(pid, SIGTERM);
	ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
	for (int i = 0; i < 100 && lease(id, &l); i++)
		sleep_ms(50);
	ck_assert(!lease(id, &l)); /* released when the CLI ended */
}
END_TEST

START_TEST(stop_ends_every_lease)
{
	struct p2pbuf *c = client();
	uint64_t id;
	int fd = export4k(c, "sim0", &id);

	int status = stop(SIGTERM);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	char name[32];
	snprintf(name, sizeof(name), "lease.%llu", (unsigned long long)id);
	ck_assert_int_lt(stored(name), 0); /* let go of: a stop keeps nothing */
	close(fd);
	p2pbuf_disconnect(c);
	start();
	struct p2pbuf_lease l;
	ck_assert(!lease(id, &l));
}
END_TEST

/* A device a reload added is parked and recorded like the others: a crash keeps it and its
 * lease. Removed by the next reload, its lease's buffer leaves the store once it ended. */
START_TEST(device_added_by_reload_survives_restart)
{
	enum p2pbuf_device_state st = P2PBUF_DEVICE_UNKNOWN;
	struct p2pbuf_lease l;
	char name[32];
	uint64_t id;
	FILE *f = fopen(m.policy, "a");

	ck_assert_ptr_nonnull(f);
	fprintf(f, "device sim2 sim bar 0 1M\nallow user %u device sim2\n", (unsigned)getuid());
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(kill(m.pid, SIGHUP), 0);
	for (int i = 0; i < 200 && (generation("sim2") != 0 || st != P2PBUF_DEVICE_READY); i++) {
		sleep_ms(50);
		device_listed("sim2", &st);
	}
	ck_assert_int_eq(st, P2PBUF_DEVICE_READY);
	struct p2pbuf *c = client();
	int fd = export4k(c, "sim2", &id);
	snprintf(name, sizeof(name), "lease.%llu", (unsigned long long)id);
	pump(0);
	ck_assert_int_ge(stored(name), 0);
	stop(SIGKILL);
	start();
	ck_assert(lease(id, &l));
	ck_assert_int_eq(l.state, P2PBUF_LEASE_ACTIVE);
	ck_assert_uint_eq(generation("sim2"), 0);
	/* The policy of the start: sim2 goes again. */
	f = fopen(m.policy, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, policy_fmt, (unsigned)getuid(), (unsigned)getuid(), (unsigned)getuid());
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(kill(m.pid, SIGHUP), 0);
	close(fd); /* nobody else holds it: it ends at the reload */
	for (int i = 0; i < 200 && generation("sim2") != UINT32_MAX; i++)
		sleep_ms(50);
	ck_assert_uint_eq(generation("sim2"), UINT32_MAX);
	ck_assert(!lease(id, &l));
	pump(0);
	ck_assert_int_lt(stored(name), 0);
	p2pbuf_disconnect(c);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("restart");
	TCase *tc = tcase_create("sim");
	int failed;

	signal(SIGPIPE, SIG_IGN);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, crash_keeps_leases_and_client_reclaims);
	tcase_add_test(tc, unreclaimed_goes_owner_gone_after_grace);
	tcase_add_test(tc, corrupted_record_is_refused);
	tcase_add_test(tc, newer_record_is_refused);
	tcase_add_test(tc, missing_fd_cycles_its_device);
	tcase_add_test(tc, cli_export_keeps_child_lease);
	tcase_add_test(tc, record_rewritten_when_it_grows);
	tcase_add_test(tc, stop_ends_every_lease);
	tcase_add_test(tc, device_added_by_reload_survives_restart);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
