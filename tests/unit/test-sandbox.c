/* Unit tests for the seccomp sandbox: the real filter, installed in a forked child, stops what
 * is not on its list, lets through what the daemon needs, and its modes do what they say. The
 * child reports by its exit status or by the signal that killed it. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "log.h"
#include "macro.h"
#include "sandbox.h"
#include "vfio-uapi.h"

/* Exit statuses of a child that was not killed. */
#define CHILD_OK 0
#define CHILD_APPLY_FAILED 90 /* sandbox_apply() refused */
#define CHILD_WRONG 91	      /* an allowed call did not behave as it should */

typedef void (*child_fn)(void);

/* Run fn in a child after sandbox_apply(mode); returns its wait status. */
static int run_sandboxed(enum sandbox_mode mode, child_fn fn)
{
	int status;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (sandbox_apply(mode) < 0)
			_exit(CHILD_APPLY_FAILED);
		fn();
		_exit(CHILD_OK);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	return status;
}

static void assert_killed_by_sandbox(int status)
{
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS,
		      "expected death by SIGSYS, got %s %d",
		      WIFSIGNALED(status) ? "signal" : "exit status",
		      WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

static void assert_survived(int status)
{
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == CHILD_OK,
		      "expected exit status 0, got %s %d",
		      WIFSIGNALED(status) ? "signal" : "exit status",
		      WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

/* ----- what the filter must stop ----- */

static void do_socket_inet(void)
{
	(void)socket(AF_INET, SOCK_STREAM, 0);
}

static void do_socket_netlink(void)
{
	(void)socket(AF_NETLINK, SOCK_RAW, 0);
}

static void do_ptrace(void)
{
	(void)ptrace(PTRACE_TRACEME, 0, NULL, NULL);
}

static void do_execve(void)
{
	static char *const argv[] = { "true", NULL };

	execve("/bin/true", argv, NULL);
}

static void do_fork(void)
{
	if (fork() == 0)
		_exit(CHILD_OK);
}

static void do_mmap_exec(void)
{
	(void)mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

static void do_mprotect_exec(void)
{
	void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		_exit(CHILD_WRONG);
	(void)mprotect(p, 4096, PROT_READ | PROT_EXEC);
}

static void do_mknod_chr(void)
{
	(void)mknodat(AT_FDCWD, "/nonexistent/p2pbuf-sandbox-node", S_IFCHR | 0600, 0);
}

static void do_kill_init(void)
{
	(void)kill(1, 0);
}

static void do_setuid(void)
{
	(void)setuid(0);
}

/* A terminal ioctl: on no list, even though libc could make it (isatty). */
static void do_ioctl_tcgets(void)
{
	char buf[64];

	(void)ioctl(STDIN_FILENO, TCGETS, buf);
}

/* iommufd's own ioctls: the daemon never allocates an IOAS or maps anything. */
static void do_ioctl_ioas_alloc(void)
{
	char buf[64] = { 0 };

	(void)ioctl(-1, _IO(';', 0x81), buf);
}

/* Not made by vfio.c, so not allowed: a reset is a device cycle. */
static void do_ioctl_vfio_reset(void)
{
	(void)ioctl(-1, VFIO_DEVICE_RESET);
}

static const child_fn forbidden[] = {
	do_socket_inet,
	do_socket_netlink,
	do_execve,
	do_mmap_exec,
	do_mprotect_exec,
	do_mknod_chr,
	do_kill_init,
	do_setuid,
	do_ioctl_tcgets,
	do_ioctl_ioas_alloc,
	do_ioctl_vfio_reset,
#if !SANDBOX_SANITIZER_RUNTIME
	/* An ASan build lets LeakSanitizer's tracer clone and ptrace (sandbox.h). */
	do_ptrace,
	do_fork,
#endif
};

START_TEST(test_enforce_kills)
{
	assert_killed_by_sandbox(run_sandboxed(SANDBOX_ENFORCE, forbidden[_i]));
}
END_TEST

/* Log mode lets each of them through (the kernel logs it). */
START_TEST(test_log_survives)
{
	assert_survived(run_sandboxed(SANDBOX_LOG, forbidden[_i]));
}
END_TEST

/* The worker thread exists before the filter: TSYNC must cover it too. */
static int thread_pipe[2];

static void *thread_main(void *arg)
{
	char c;

	(void)arg;
	if (read(thread_pipe[0], &c, 1) == 1)
		(void)socket(AF_INET, SOCK_DGRAM, 0);
	return NULL;
}

START_TEST(test_enforce_covers_threads)
{
	int status;
	pid_t pid;

	ck_assert_int_eq(pipe2(thread_pipe, O_CLOEXEC), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		pthread_t t;
		if (pthread_create(&t, NULL, thread_main, NULL) != 0)
			_exit(CHILD_WRONG);
		if (sandbox_apply(SANDBOX_ENFORCE) < 0)
			_exit(CHILD_APPLY_FAILED);
		(void)!write(thread_pipe[1], "x", 1);
		pthread_join(t, NULL);
		_exit(CHILD_OK);
	}
	close(thread_pipe[0]);
	close(thread_pipe[1]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	assert_killed_by_sandbox(status);
}
END_TEST

#if defined(__x86_64__)
/* An x32 system call (same audit arch, the x32 bit set): another ABI, killed in every mode,
 * log included, so that it is the arch check that stops it, not the default action. */
static void do_x32_getpid(void)
{
	(void)syscall(0x40000000 | __NR_getpid);
}

START_TEST(test_foreign_abi_killed_in_log_mode)
{
	assert_killed_by_sandbox(run_sandboxed(SANDBOX_LOG, do_x32_getpid));
}
END_TEST
#endif

/* ----- what the filter must let through ----- */

/* What the daemon itself shows in /proc: filter mode, no new privileges. */
static void assert_self_sandboxed(void)
{
	char line[256];
	int seccomp = -1, nnp = -1;
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		_exit(CHILD_WRONG);
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "Seccomp: %d", &seccomp);
		sscanf(line, "NoNewPrivs: %d", &nnp);
	}
	fclose(f);
	if (seccomp != 2 || nnp != 1)
		_exit(CHILD_WRONG);
}

/* A sample of each group of the list, used the way the daemon uses it. */
static void do_allowed(void)
{
	int sv[2], efd, mfd;
	void *big;

	assert_self_sandboxed();
	big = malloc(64 << 20); /* mmap, not brk */
	if (!big)
		_exit(CHILD_WRONG);
	memset(big, 1, 64 << 20);
	free(big);
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	mfd = memfd_create("sandbox-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (efd < 0 || mfd < 0 || ftruncate(mfd, 4096) < 0 ||
	    fcntl(mfd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0)
		_exit(CHILD_WRONG);
	if (fcntl(mfd, F_DUPFD_CLOEXEC, 3) < 0 || pread(mfd, sv, 4, 0) != 4)
		_exit(CHILD_WRONG);
	/* socketpair is not on the list; a listening daemon never needs a new pair. */
	efd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (efd < 0)
		_exit(CHILD_WRONG);
	close(efd);
	close(mfd);
}

START_TEST(test_enforce_allows)
{
	assert_survived(run_sandboxed(SANDBOX_ENFORCE, do_allowed));
}
END_TEST

/* Every request vfio.c makes passes the filter; on a memfd the kernel answers ENOTTY (on a
 * closed fd EBADF): the process lives. The upper 32 bits are not part of the request (the
 * kernel truncates it), so the filter ignores them as well. */
static void do_vfio_ioctls(void)
{
	static const unsigned long reqs[] = {
		VFIO_GET_API_VERSION,	  VFIO_CHECK_EXTENSION,	    VFIO_SET_IOMMU,
		VFIO_GROUP_GET_STATUS,	  VFIO_GROUP_SET_CONTAINER, VFIO_GROUP_GET_DEVICE_FD,
		VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_GET_INFO,	    VFIO_DEVICE_GET_REGION_INFO,
		VFIO_DEVICE_GET_IRQ_INFO, VFIO_DEVICE_SET_IRQS,	    VFIO_DEVICE_FEATURE,
		DMA_BUF_SET_NAME_B,
	};
	char buf[256] = { 0 };
	int fd = memfd_create("sandbox-ioctl", MFD_CLOEXEC);

	if (fd < 0)
		_exit(CHILD_WRONG);
	for (size_t i = 0; i < ARRAY_SIZE(reqs); i++) {
		if (ioctl(fd, reqs[i], buf) != -1 || errno != ENOTTY)
			_exit(CHILD_WRONG);
		if (ioctl(-1, reqs[i], buf) != -1 || errno != EBADF)
			_exit(CHILD_WRONG);
		if (syscall(__NR_ioctl, fd, reqs[i] | (1UL << 32), buf) != -1 || errno != ENOTTY)
			_exit(CHILD_WRONG);
	}
	close(fd);
}

START_TEST(test_vfio_ioctls_pass)
{
	assert_survived(run_sandboxed(SANDBOX_ENFORCE, do_vfio_ioctls));
}
END_TEST

/* sd_notify to $NOTIFY_SOCKET, and an fd sent with it as the fd store will (FDSTORE=1). */
static void do_notify(void)
{
	int fd = eventfd(0, EFD_CLOEXEC);

	if (sd_notify(0, "READY=1") <= 0 || fd < 0 ||
	    sd_pid_notify_with_fds(0, 0, "FDSTORE=1\nFDNAME=test", &fd, 1) <= 0)
		_exit(CHILD_WRONG);
}

START_TEST(test_sd_notify)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char buf[256];
	int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ssize_t n;

	ck_assert_int_ge(s, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "/tmp/p2pbuf-sandbox-notify-%d", (int)getpid());
	unlink(sa.sun_path);
	ck_assert_int_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setenv("NOTIFY_SOCKET", sa.sun_path, 1);
	assert_survived(run_sandboxed(SANDBOX_ENFORCE, do_notify));
	unsetenv("NOTIFY_SOCKET");
	n = recv(s, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	ck_assert_int_eq(n, 7);
	buf[n] = '\0';
	ck_assert_str_eq(buf, "READY=1");
	n = recv(s, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	ck_assert_int_gt(n, 0);
	unlink(sa.sun_path);
	close(s);
}
END_TEST

/* A policy reload resolves names: known and unknown ones, through every NSS module. */
static void do_nss(void)
{
	char buf[4096];
	struct passwd pw, *pwr = NULL;
	struct group gr, *grr = NULL;

	if (getpwnam_r("root", &pw, buf, sizeof(buf), &pwr) != 0 || !pwr)
		_exit(CHILD_WRONG);
	if (getgrnam_r("root", &gr, buf, sizeof(buf), &grr) != 0 || !grr)
		_exit(CHILD_WRONG);
	(void)getpwnam_r("p2pbuf-no-such-user", &pw, buf, sizeof(buf), &pwr);
	(void)getgrnam_r("p2pbuf-no-such-group", &gr, buf, sizeof(buf), &grr);
	if (pwr || grr)
		_exit(CHILD_WRONG);
}

START_TEST(test_nss_after_sandbox)
{
	assert_survived(run_sandboxed(SANDBOX_ENFORCE, do_nss));
}
END_TEST

/* A crash must read as one: abort() still ends in SIGABRT, not in a sandbox kill. */
static void do_abort(void)
{
	abort();
}

START_TEST(test_abort_is_sigabrt)
{
	int status = run_sandboxed(SANDBOX_ENFORCE, do_abort);

	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "status 0x%x", status);
}
END_TEST

/* Off installs nothing: what enforce kills runs. */
START_TEST(test_off_installs_nothing)
{
	assert_survived(run_sandboxed(SANDBOX_OFF, do_socket_inet));
}
END_TEST

/* ----- the option ----- */

START_TEST(test_parse_mode)
{
	static const char *const names[] = { "enforce", "log", "off" };
	enum sandbox_mode m = SANDBOX_OFF;

	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		ck_assert_int_eq(sandbox_parse_mode(names[i], &m), 0);
		ck_assert_str_eq(sandbox_mode_name(m), names[i]);
	}
	m = SANDBOX_LOG;
	ck_assert_int_eq(sandbox_parse_mode("Enforce", &m), -EINVAL);
	ck_assert_int_eq(sandbox_parse_mode("", &m), -EINVAL);
	ck_assert_int_eq(sandbox_parse_mode("enforce ", &m), -EINVAL);
	ck_assert_int_eq(m, SANDBOX_LOG);
	/* A zeroed struct options means the default, enforce. */
	ck_assert_int_eq(SANDBOX_ENFORCE, 0);
}
END_TEST

static Suite *sandbox_suite(void)
{
	Suite *s = suite_create("sandbox");
	TCase *tc = tcase_create("seccomp");

	tcase_add_test(tc, test_parse_mode);
	tcase_add_loop_test(tc, test_enforce_kills, 0, ARRAY_SIZE(forbidden));
	tcase_add_loop_test(tc, test_log_survives, 0, ARRAY_SIZE(forbidden));
	tcase_add_test(tc, test_enforce_covers_threads);
#if defined(__x86_64__)
	tcase_add_test(tc, test_foreign_abi_killed_in_log_mode);
#endif
	tcase_add_test(tc, test_enforce_allows);
	tcase_add_test(tc, test_vfio_ioctls_pass);
	tcase_add_test(tc, test_sd_notify);
	tcase_add_test(tc, test_nss_after_sandbox);
	tcase_add_test(tc, test_abort_is_sigabrt);
	tcase_add_test(tc, test_off_installs_nothing);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(sandbox_suite());

	/* The filter's own log lines are not what these tests look at. */
	log_max_priority = LOG_ERR;
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
