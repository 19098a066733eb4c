/* The seccomp allow-list p2pbufd installs on itself once start-up is done (chrony's model:
 * const tables, one libseccomp context, default action kill).
 *
 * What the daemon still does after start-up, and so what the tables must allow:
 *   the loop: epoll, accept4, recvmsg/sendmsg with SCM_RIGHTS, SO_PEERCRED/SO_PEERGROUPS, the
 *     eventfds of the worker and of libevent's cross-thread wake-up, libevent's signal
 *     socketpair, timers from clock_gettime;
 *   the worker: device cycles (close every fd, then open /dev/vfio/..., /dev/iommu, the VFIO
 *     ioctls below, config space through pread/pwrite, sysfs readlink/getdents), sim devices
 *     (memfd_create, seals, FIFOs in P2PBUF_SIM_CONTROL, a walk through /proc), fdinfo reads;
 *   policy reload on SIGHUP: open/read/getdents of the policy files, getpwnam_r/getgrnam_r
 *     (NSS: /etc/passwd, /etc/group, and libnss_systemd's varlink over AF_UNIX);
 *   sd_notify (READY=1, RELOADING=1, STOPPING=1, and later FDSTORE=1 with fds): an AF_UNIX
 *     datagram socket and sendmsg;
 *   shutdown: restore signal handlers, join the worker, unlink the socket, exit.
 * The set was read from the code and checked against strace of `make check` and of the VM
 * suite (both device paths). Start-up itself (bind, listen, chmod, thread creation, first
 * open of every device) happens before the filter and needs none of its own calls here.
 *
 * Argument filters narrow the calls that could do the most with a hijacked daemon: ioctl by
 * request number (seccomp cannot see which fd it is on, so a number is allowed on every fd),
 * socket to AF_UNIX, mmap/mprotect without PROT_EXEC (no new code), mknodat to FIFOs only
 * (no device nodes), tgkill to this process (abort()). */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <seccomp.h>

#include "sandbox.h"
#include "log.h"
#include "macro.h"
#include "vfio-uapi.h"

/* libseccomp 2.5 added raw kernel errnos from seccomp_load and the binary-tree layout. */
#define SANDBOX_HAVE_2_5 (SCMP_VER_MAJOR > 2 || (SCMP_VER_MAJOR == 2 && SCMP_VER_MINOR >= 5))

/* Allowed with any arguments. Names, not numbers: libseccomp maps them for the native
 * architecture. Where glibc picks a legacy call or its *at form by whether the architecture
 * has the legacy one, so does this table (the __NR_ tests). */
static const char *const allowed_syscalls[] = {
	/* malloc, free, thread stacks (mmap and mprotect are in arg_rules) */
	"brk",
	"munmap",
	"mremap",
	"madvise",
	/* the worker's queue, libevent's locks, pthread_join; the worker's and the process's end */
	"futex",
	"exit",
	"exit_group",
	/* a new thread's first steps in glibc: the worker may not have taken them yet when the
	 * filter reaches it (TSYNC), since pthread_create returns before the thread runs */
	"set_robust_list",
	"rseq",
	/* clocks: the vDSO answers most calls, but not on every clock source (TCG guests) */
	"clock_gettime",
	"gettimeofday",
	/* a sim device's injected open delay (nanosleep is clock_nanosleep in glibc), and its
	 * restart after a signal */
	"clock_nanosleep",
	"restart_syscall",
	/* signals: handlers return; libevent restores the old handlers at shutdown; abort()
	 * (with tgkill below) */
	"rt_sigreturn",
	"rt_sigaction",
	"rt_sigprocmask",
	"getpid",
	"gettid",
	/* the loop; the worker's and VFIO's eventfds (REQ, ERR) and sim devices' stand-ins */
	"epoll_ctl",
	"eventfd2",
#ifdef __NR_epoll_wait
	"epoll_wait",
#else
	"epoll_pwait",
#endif
	/* the udev monitor's sd-event loop (hotplug.c): libsystemd waits with epoll_pwait2
	 * where the kernel has it, and with epoll_wait where it has not; its netlink socket is
	 * made and bound before the filter, which allows no new one */
	"epoll_pwait2",
	/* clients: accept, identity, records with SCM_RIGHTS (sendmsg also carries sd_notify,
	 * and later FDSTORE=1 with its fds) */
	"accept4",
	"getsockopt",
	/* asking systemd, over the bus connected at start-up, whether a SIGTERM is a restart;
	 * and waiting for sd_notify_barrier's pipe (ppoll), which a device's worker does before
	 * it opens a device again, so that the manager has let go of the old fds (pipe2) */
	"ppoll",
	"pipe2",
	/* a peer's unit is trusted only if it is still alive after the lookup: signal 0 on its
	 * pidfd (SO_PEERPIDFD); a kernel without it answers ENOSYS */
	"pidfd_send_signal",
	"recvmsg",
	"sendmsg",
	/* sd_notify: grows its datagram socket's buffer, asks whether to send credentials */
	"setsockopt",
	"getuid",
	"geteuid",
	"getgid",
	"getegid",
	/* files: devices, sysfs, /proc, policy; config space through pread/pwrite at an offset;
	 * fstat and stat are newfstatat in glibc on 64-bit architectures */
	"openat",
	"close",
	"read",
	"write",
	"pread64",
	"pwrite64",
	"lseek", /* NSS files rewinds /etc/passwd */
	"newfstatat",
	"getdents64",
#ifdef __NR_access
	"access",
#else
	"faccessat",
#endif
#ifdef __NR_readlink
	"readlink",
#endif
	"readlinkat", /* on every architecture: NSS systemd's path walk uses it */
	/* F_DUPFD_CLOEXEC for queued fds, F_GETFL/F_SETFL, seals on sim buffers */
	"fcntl",
	/* sim buffers (and, with the fd store, the state record); the socket file at shutdown */
	"memfd_create",
	"ftruncate",
#ifdef __NR_unlink
	"unlink",
#else
	"unlinkat",
#endif
	/* NSS systemd (a policy name not in /etc/passwd or /etc/group): a varlink query over a
	 * Unix stream socket to each service in /run/systemd/userdb/, run by an sd-event loop;
	 * nscd's socket is tried first */
	"connect",
	"sendto",
	"recvfrom",
	"epoll_create1",
	"timerfd_create",
	"timerfd_settime",
	"getrandom",
	/* glibc's qsort asks for the memory size when sorting a large policy.d */
	"sysinfo",
#if SANDBOX_SANITIZER_RUNTIME
	/* Test builds only (--enable-asan): ASan sets up a starting thread (CPU set, an
	 * alternate signal stack) and drops that stack when the thread ends; at exit (and _exit)
	 * LeakSanitizer clones a tracer that ptrace-attaches every thread, waits for it, polls with
	 * sched_yield and checks its parent; the runtime uses the legacy open and getdents. */
	"sigaltstack",
	"sched_getaffinity",
	"prctl",
	"clone",
	"ptrace",
	"wait4",
	"sched_yield",
	"getppid",
	"open",
	"getdents",
#endif
};

struct arg_rule {
	const char *name;
	struct scmp_arg_cmp cmp;
};

/* Allowed only with these arguments. */
static const struct arg_rule arg_rules[] = {
	/* sd_notify, nscd and NSS systemd use Unix sockets; nothing here speaks to a network. */
	{ "socket", { .arg = 0, .op = SCMP_CMP_EQ, .datum_a = AF_UNIX } },
	/* Memory, never code: no library is loaded after start-up (sandbox_apply warms NSS). */
	{ "mmap", { .arg = 2, .op = SCMP_CMP_MASKED_EQ, .datum_a = PROT_EXEC, .datum_b = 0 } },
	{ "mprotect", { .arg = 2, .op = SCMP_CMP_MASKED_EQ, .datum_a = PROT_EXEC, .datum_b = 0 } },
	/* mkfifo for sim devices' control FIFOs; a device node would open any disk. */
	{ "mknodat",
	  { .arg = 2, .op = SCMP_CMP_MASKED_EQ, .datum_a = S_IFMT, .datum_b = S_IFIFO } },
};

/* Every ioctl request the daemon makes after start-up; all come from vfio.c. */
static const unsigned long allowed_ioctls[] = {
	/* legacy path: container and group */
	VFIO_GET_API_VERSION,
	VFIO_CHECK_EXTENSION,
	VFIO_SET_IOMMU,
	VFIO_GROUP_GET_STATUS,
	VFIO_GROUP_SET_CONTAINER,
	VFIO_GROUP_GET_DEVICE_FD,
	/* iommufd path: the device cdev bound to /dev/iommu (no IOMMU_* ioctl is made) */
	VFIO_DEVICE_BIND_IOMMUFD,
	/* the device: model, config region, IRQ eventfds, export probe and export */
	VFIO_DEVICE_GET_INFO,
	VFIO_DEVICE_GET_REGION_INFO,
	VFIO_DEVICE_GET_IRQ_INFO,
	VFIO_DEVICE_SET_IRQS,
	VFIO_DEVICE_FEATURE,
	/* the exported dma-buf's name, for fdinfo */
	DMA_BUF_SET_NAME_B,
};

int sandbox_parse_mode(const char *s, enum sandbox_mode *ret_mode)
{
	static const char *const names[] = {
		[SANDBOX_ENFORCE] = "enforce", [SANDBOX_LOG] = "log", [SANDBOX_OFF] = "off"
	};

	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (strcmp(s, names[i]) == 0) {
			*ret_mode = (enum sandbox_mode)i;
			return 0;
		}
	return -EINVAL;
}

const char *sandbox_mode_name(enum sandbox_mode mode)
{
	return mode == SANDBOX_ENFORCE ? "enforce" : mode == SANDBOX_LOG ? "log" : "off";
}

/* Adds one rule; *n_added counts the system calls given one. A name libseccomp does not know
 * is a mistake in the tables (-EDOM); a name it knows but the native architecture lacks (a
 * negative pseudo number) needs no rule, since nothing can make that call here. */
static int add_rule(scmp_filter_ctx ctx, const char *name, unsigned n,
		    const struct scmp_arg_cmp *cmp, unsigned *n_added, const char **ret_what)
{
	int nr = seccomp_syscall_resolve_name(name);
	int r;

	if (nr == __NR_SCMP_ERROR) {
		*ret_what = name;
		return -EDOM;
	}
	if (nr < 0)
		return 0;
	r = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, n, cmp);
	if (r < 0)
		*ret_what = name;
	else
		(*n_added)++;
	return r;
}

/* ioctl, one rule per request. The kernel reads the request as a 32-bit unsigned int, so
 * only those bits are compared: the filter sees the number exactly as the driver does. */
static int add_ioctls(scmp_filter_ctx ctx, const char **ret_what)
{
	unsigned n = 0;

	for (size_t i = 0; i < ARRAY_SIZE(allowed_ioctls); i++) {
		const struct scmp_arg_cmp cmp = { .arg = 1,
						  .op = SCMP_CMP_MASKED_EQ,
						  .datum_a = 0xffffffffu,
						  .datum_b = allowed_ioctls[i] };
		int r = add_rule(ctx, "ioctl", 1, &cmp, &n, ret_what);
		if (r < 0)
			return r;
	}
	return 0;
}

/* abort() signals the calling thread: tgkill(own pid, any thread, SIGABRT). A crash must show
 * as SIGABRT, not as a sandbox kill. The daemon never forks, so the pid stays. */
static int add_abort(scmp_filter_ctx ctx, unsigned *n_added, const char **ret_what)
{
	const struct scmp_arg_cmp cmp[] = {
		{ .arg = 0, .op = SCMP_CMP_EQ, .datum_a = (scmp_datum_t)getpid() },
		{ .arg = 2, .op = SCMP_CMP_EQ, .datum_a = SIGABRT },
	};

	return add_rule(ctx, "tgkill", ARRAY_SIZE(cmp), cmp, n_added, ret_what);
}

/* Every rule; *ret_n: how many system calls the filter lets through (ioctl counted once). */
static int add_rules(scmp_filter_ctx ctx, unsigned *ret_n, const char **ret_what)
{
	unsigned n = 0;
	int r = 0;

	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(allowed_syscalls); i++)
		r = add_rule(ctx, allowed_syscalls[i], 0, NULL, &n, ret_what);
	for (size_t i = 0; r == 0 && i < ARRAY_SIZE(arg_rules); i++)
		r = add_rule(ctx, arg_rules[i].name, 1, &arg_rules[i].cmp, &n, ret_what);
	if (r == 0)
		r = add_ioctls(ctx, ret_what);
	if (r == 0)
		r = add_abort(ctx, &n, ret_what);
	*ret_n = n + 1;
	return r;
}

/* The filter's attributes: native architecture only (libseccomp's default set) and any other
 * one killed in every mode, since a foreign system call is never a missing list entry; every
 * thread at once; no-new-privs; kernel errnos. */
static int set_attrs(scmp_filter_ctx ctx, const char **ret_what)
{
	static const struct {
		enum scmp_filter_attr attr;
		uint32_t value;
		const char *what;
	} attrs[] = {
		{ SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS, "SCMP_FLTATR_ACT_BADARCH" },
		{ SCMP_FLTATR_CTL_TSYNC, 1, "SCMP_FLTATR_CTL_TSYNC" },
		{ SCMP_FLTATR_CTL_NNP, 1, "SCMP_FLTATR_CTL_NNP" },
#if SANDBOX_HAVE_2_5
		{ SCMP_FLTATR_API_SYSRAWRC, 1, "SCMP_FLTATR_API_SYSRAWRC" },
		{ SCMP_FLTATR_CTL_OPTIMIZE, 2, "SCMP_FLTATR_CTL_OPTIMIZE" },
#endif
	};

	for (size_t i = 0; i < ARRAY_SIZE(attrs); i++) {
		int r = seccomp_attr_set(ctx, attrs[i].attr, attrs[i].value);
		if (r < 0) {
			*ret_what = attrs[i].what;
			return r;
		}
	}
	return 0;
}

/* Why the kernel refused the filter, for the admin; "" when the step was libseccomp's own
 * (building the filter in memory). */
static const char *load_hint(const char *what, int r)
{
	if (strcmp(what, "seccomp_api_get") == 0)
		return " (the kernel offers no seccomp filters with the kill-process and log "
		       "actions: Linux 4.14 with CONFIG_SECCOMP_FILTER is needed; valgrind "
		       "implements no seccomp(2) at all)";
	if (strcmp(what, "seccomp_load") != 0)
		return "";
	switch (r) {
	case -EINVAL:
		return " (the kernel refused the filter program or one of its flags)";
	case -ESRCH:
		return " (a thread of the process could not be given the filter: TSYNC)";
	case -EACCES:
	case -EPERM:
		return " (no-new-privs could not be set, or the process may not add filters)";
	default:
		return "";
	}
}

/* Load every NSS module getpwnam_r/getgrnam_r may use, so that a policy reload never maps a
 * library (the filter forbids executable mappings). glibc loads a module only when the ones
 * before it in nsswitch.conf did not answer, so the name looked up must exist nowhere. */
static void warm_nss(void)
{
	static const char nobody[] = "p2pbufd-sandbox-nss-probe";
	char buf[4096];
	struct passwd pw, *pwr;
	struct group gr, *grr;

	(void)getpwnam_r(nobody, &pw, buf, sizeof(buf), &pwr);
	(void)getgrnam_r(nobody, &gr, buf, sizeof(buf), &grr);
}

static int build_and_load(enum sandbox_mode mode, unsigned *ret_n, const char **ret_what)
{
	uint32_t def = mode == SANDBOX_LOG ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS;
	scmp_filter_ctx ctx;
	int r;

	/* API level 3: the kernel has SECCOMP_RET_KILL_PROCESS and SECCOMP_RET_LOG. */
	if (seccomp_api_get() < 3) {
		*ret_what = "seccomp_api_get";
		return -EOPNOTSUPP;
	}
	ctx = seccomp_init(def);
	if (!ctx) {
		*ret_what = "seccomp_init";
		return -ENOMEM;
	}
	r = set_attrs(ctx, ret_what);
	if (r == 0)
		r = add_rules(ctx, ret_n, ret_what);
	if (r == 0) {
		r = seccomp_load(ctx);
		if (r < 0)
			*ret_what = "seccomp_load";
	}
	seccomp_release(ctx);
	return r;
}

int sandbox_apply(enum sandbox_mode mode)
{
	const char *what = "?";
	unsigned n = 0;
	int r;

	if (mode == SANDBOX_OFF) {
		log_warning("sandbox off (--sandbox=off): no seccomp filter; for diagnosis only");
		return 0;
	}
	warm_nss();
	r = build_and_load(mode, &n, &what);
	if (r < 0) {
		log_error("cannot install the seccomp sandbox: %s: %s%s; --sandbox=off starts "
			  "without it, for diagnosis only",
			  what, strerror(-r), load_hint(what, r));
		return r;
	}
	if (mode == SANDBOX_LOG)
		log_warning("sandbox in log mode (--sandbox=log): %u system calls allowed, the "
			    "kernel logs any other instead of stopping it",
			    n);
	else
		log_info("sandbox enforced: %u system calls and %zu ioctl requests allowed", n,
			 ARRAY_SIZE(allowed_ioctls));
	return 0;
}
