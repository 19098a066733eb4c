#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

const char harness_default_policy[] =
    "# integration test policy\n"
    "device sim0 sim bar 0 64K bar 2 2M bar 4 1M msix-table 0 0x2000+0x800 "
    "msix-pba 0 0x3000+0x100 revoke-deadline 2s\n"
    "device sim1 sim bar 0 1M\n"
    "allow user %1$u device sim0 bar 0\n"
    "allow user %1$u device sim0 bar 2 range 0+1M max-leases 4\n"
    "allow user %1$u device sim1\n"
    "admin user %1$u\n";

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

int harness_count_fds(pid_t pid)
{
	char path[64];
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	ck_assert_msg(d, "opendir %s: %s", path, strerror(errno));
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

long harness_anon_rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "RssAnon: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* Print what the daemon has open, so that a leak can be named. */
static void dump_fds(pid_t pid)
{
	char dir[64], path[320], target[256];

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(dir);
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = '\0';
		fprintf(stderr, "  p2pbufd fd %s -> %s\n", e->d_name, target);
	}
	closedir(d);
}

bool harness_fds_settle(struct harness *h, int timeout_ms)
{
	for (int t = 0; t < timeout_ms; t += 10) {
		if (harness_count_fds(h->pid) == h->baseline_fds)
			return true;
		sleep_ms(10);
	}
	int n = harness_count_fds(h->pid);
	if (n != h->baseline_fds) {
		fprintf(stderr, "p2pbufd has %d fds open, %d at startup:\n", n, h->baseline_fds);
		dump_fds(h->pid);
	}
	return n == h->baseline_fds;
}

int harness_raw_connect(const struct harness *h)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_uint_lt(strlen(h->socket), sizeof(sa.sun_path));
	memcpy(sa.sun_path, h->socket, strlen(h->socket) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -errno;
	}
	return fd;
}

bool harness_peer_closed(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char buf[65536];

	for (;;) {
		if (poll(&p, 1, timeout_ms) <= 0)
			return false;
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return true;
		if (n < 0 && errno != EAGAIN)
			return false;
		/* A reply before the close is fine; keep reading. */
	}
}

static int listening_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_uint_lt(strlen(path), sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(fd, 16), 0);
	return fd;
}

void harness_start_activated(struct harness *h, const char *policy_fmt)
{
	h->activated = true;
	harness_start(h, policy_fmt, NULL);
}

bool harness_raw_hello(int fd)
{
	/* Hello{major: 1}, encoded by hand to keep the harness free of the library. */
	static const uint8_t hello[] = { 0x52, 0x02, 0x08, 0x01 };
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint8_t buf[4096];

	if (send(fd, hello, sizeof(hello), MSG_NOSIGNAL) != (ssize_t)sizeof(hello))
		return false;
	return poll(&p, 1, 10000) == 1 && recv(fd, buf, sizeof(buf), 0) > 0;
}

static const char *daemon_path(void)
{
	static char path[512];
	const char *top = getenv("top_builddir");

	snprintf(path, sizeof(path), "%s/daemon/p2pbufd", top ? top : ".");
	return path;
}

/* Test policies are printf formats given the uid; they are the tests' own constants. */
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
void harness_write_policy(struct harness *h, const char *fmt)
{
	FILE *f = fopen(h->policy, "w");

	ck_assert_msg(f, "cannot write %s", h->policy);
	fprintf(f, fmt, (unsigned)getuid());
	ck_assert_int_eq(fclose(f), 0);
}

/* In the child: the listening socket becomes fd 3 and the environment says so. */
static void pass_socket(int sfd)
{
	char pid[32];

	if (sfd != 3) {
		dup2(sfd, 3);
		close(sfd);
	}
	fcntl(3, F_SETFD, 0);
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("LISTEN_FDS", "1", 1);
	setenv("LISTEN_PID", pid, 1);
}

/* Valgrind implements no seccomp(2), so the daemon could not install its filter (and
 * valgrind's own system calls would have to pass it): under valgrind it runs with
 * --sandbox=off, and every other run is checked to be sandboxed. */
static bool under_valgrind(void)
{
	const char *wrap = getenv("P2PBUF_TEST_WRAPPER");

	return wrap && strstr(wrap, "valgrind");
}

static bool has_arg(const char *const *args, const char *arg)
{
	for (; args && *args; args++)
		if (strcmp(*args, arg) == 0)
			return true;
	return false;
}

/* The daemon, once serving, runs under its seccomp filter (Seccomp: 2 is filter mode) with
 * no-new-privs, unless this run turned the sandbox off. */
static void assert_sandboxed(const struct harness *h, const char *const *extra)
{
	bool want = !under_valgrind() && !has_arg(extra, "--sandbox=off");
	char path[64], line[256];
	int seccomp = -1, nnp = -1;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)h->pid);
	FILE *f = fopen(path, "re");
	ck_assert_msg(f, "cannot read %s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "Seccomp: %d", &seccomp);
		sscanf(line, "NoNewPrivs: %d", &nnp);
	}
	fclose(f);
	ck_assert_msg(seccomp == (want ? 2 : 0) && nnp == (want ? 1 : 0),
		      "p2pbufd: Seccomp %d, NoNewPrivs %d; expected %d and %d (see %s/daemon.log)",
		      seccomp, nnp, want ? 2 : 0, want ? 1 : 0, h->dir);
}

static void exec_daemon(struct harness *h, const char *const *extra, int sfd)
{
	const char *argv[32] = { daemon_path(), "--policy", h->policy, "--socket", h->socket };
	size_t n = sfd >= 0 ? 3 : 5;
	char log[160];

	for (; extra && *extra && n < 30; extra++)
		argv[n++] = *extra;
	if (under_valgrind())
		argv[n++] = "--sandbox=off";
	argv[n] = NULL;
	/* The daemon's log goes to a file in the test directory, shown when a test fails. */
	snprintf(log, sizeof(log), "%s/daemon.log", h->dir);
	int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0) {
		dup2(fd, STDERR_FILENO);
		dup2(fd, STDOUT_FILENO);
	}
	/* A failing test exits without its teardown: the daemon must not outlive it. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	/* Simulated removal and error events: FIFOs in the test directory. */
	setenv("P2PBUF_SIM_CONTROL", h->dir, 1);
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_PID");
	if (sfd >= 0)
		pass_socket(sfd);
	/* P2PBUF_TEST_WRAPPER runs the daemon under a tool, e.g.
	 * "valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite":
	 * a non-zero exit at SIGTERM then fails the test. Words split on spaces. */
	const char *wrap = getenv("P2PBUF_TEST_WRAPPER");
	const char *full[64];
	if (wrap && *wrap) {
		static char words[512];
		size_t k = 0;
		snprintf(words, sizeof(words), "%s", wrap);
		for (char *save, *w = strtok_r(words, " ", &save); w && k < 30;
		     w = strtok_r(NULL, " ", &save))
			full[k++] = w;
		for (size_t i = 0; i <= n; i++)
			full[k + i] = argv[i];
		execvp(full[0], (char *const *)full);
		_exit(127);
	}
	execv(argv[0], (char *const *)argv);
	_exit(127);
}

void harness_start(struct harness *h, const char *policy_fmt, const char *const *extra_args)
{
	snprintf(h->dir, sizeof(h->dir), "/tmp/p2pbuf-it-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(h->dir));
	snprintf(h->socket, sizeof(h->socket), "%s/sock", h->dir);
	snprintf(h->policy, sizeof(h->policy), "%s/policy", h->dir);
	harness_write_policy(h, policy_fmt ? policy_fmt : harness_default_policy);
	int sfd = h->activated ? listening_socket(h->socket) : -1;
	h->pid = fork();
	ck_assert_int_ge(h->pid, 0);
	if (h->pid == 0)
		exec_daemon(h, extra_args, sfd);
	if (sfd >= 0)
		close(sfd);
	for (int t = 0; t < 30000; t += 10) {
		int fd = harness_raw_connect(h);
		if (fd >= 0) {
			/* The socket listens before devices open: a Hello answered means the loop
			 * runs, so every device is open. */
			bool ready = harness_raw_hello(fd);
			close(fd);
			ck_assert_msg(ready, "p2pbufd did not answer Hello (see %s/daemon.log)",
				      h->dir);
			/* The probe connection must be gone before the baseline is taken. */
			sleep_ms(50);
			h->baseline_fds = harness_count_fds(h->pid);
			assert_sandboxed(h, extra_args);
			return;
		}
		int status;
		ck_assert_msg(waitpid(h->pid, &status, WNOHANG) == 0,
			      "p2pbufd exited during startup (see %s/daemon.log)", h->dir);
		sleep_ms(10);
	}
	ck_abort_msg("p2pbufd did not start listening on %s", h->socket);
}

void harness_reload(struct harness *h, const char *policy_fmt)
{
	harness_write_policy(h, policy_fmt);
	ck_assert_int_eq(kill(h->pid, SIGHUP), 0);
}

void harness_sim_event(const struct harness *h, const char *device, const char *what)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s.%s", h->dir, device, what);
	int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	ck_assert_int_eq(write(fd, "1", 1), 1);
	close(fd);
}

static void remove_dir(const char *dir)
{
	DIR *d = opendir(dir);
	char path[512];

	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(dir);
}

static void dump_log(const struct harness *h)
{
	char path[160], line[512];

	snprintf(path, sizeof(path), "%s/daemon.log", h->dir);
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	fprintf(stderr, "---- p2pbufd log ----\n");
	while (fgets(line, sizeof(line), f))
		fputs(line, stderr);
	fclose(f);
}

void harness_stop(struct harness *h)
{
	int status = 0;

	if (h->pid <= 0)
		return;
	kill(h->pid, SIGTERM);
	for (int t = 0; t < 30000 && waitpid(h->pid, &status, WNOHANG) == 0; t += 10)
		sleep_ms(10);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		dump_log(h);
		kill(h->pid, SIGKILL);
		waitpid(h->pid, NULL, 0);
	}
	h->pid = 0;
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "p2pbufd did not exit cleanly on SIGTERM (status 0x%x)", status);
	remove_dir(h->dir);
}
