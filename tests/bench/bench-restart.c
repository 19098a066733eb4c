/* Restart to ready with live leases (issue 9 point 7), against a cold start in the same run.
 *
 * This program plays the service manager: a notify datagram socket (NOTIFY_SOCKET) that keeps
 * the fds p2pbufd parks (FDSTORE=1 + FDNAME=, dropped on FDSTOREREMOVE=1) and a listening
 * socket it owns, and a start that passes the listening socket first (p2pbufd.socket), then
 * every kept fd, as LISTEN_FDS/LISTEN_FDNAMES with LISTEN_PID set in the child. A thread
 * drains the notify socket all the time (the daemon blocks when its queue is full).
 *
 * Each round: a cold start with an empty store (time from fork to READY=1, and to the first
 * admin listing answered); a holder process (this program again, "holder" mode) exports
 * --count leases and keeps their fds; kill -9 of the daemon; a restart with the kept fds
 * (time to READY=1 and until an admin listing with all=true shows every lease again); then
 * daemon and holder are killed and the store emptied. Prints "key value" lines for
 * tests/bench/run.sh; exits 1 when something breaks, a restart that does not bring the leases
 * back included.
 *
 *   bench-restart --daemon P2PBUFD --policy FILE --dir DIR [--count N] [--rounds N]
 *                 [--timeout-ms N]
 *   bench-restart holder SOCKET DEVICE COUNT   (internal: the lease holder) */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "p2pbuf.h"

extern char **environ;

#define DEVICE "bench0"
/* Per lease a process holds about one fd; this much room is left for everything else. */
#define FD_MARGIN 256

struct parked {
	char *name;
	int fd;
	dev_t dev;
	ino_t ino;
};

/* The stand-in service manager. lock guards the store, pid and ready_ns. */
static struct {
	pthread_mutex_t lock;
	struct parked *v;
	size_t n, cap;
	int notify_fd, listen_fd, log_fd;
	char sock[108], notify[108];
	pid_t pid;	   /* the daemon instance running now, 0 if none */
	uint64_t ready_ns; /* when its READY=1 arrived, 0 before */
	volatile int stop;
} m = { .lock = PTHREAD_MUTEX_INITIALIZER, .notify_fd = -1, .listen_fd = -1, .log_fd = -1 };

static void sleep_us(unsigned us)
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("bench-restart: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (m.pid > 0)
		kill(m.pid, SIGKILL); /* not collected: we may hold the lock; init reaps it */
	exit(1);
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (!p)
		die("out of memory");
	return p;
}

/* ---- the store ---- */

static size_t find(const char *name, size_t from)
{
	for (size_t i = from; i < m.n; i++)
		if (strcmp(m.v[i].name, name) == 0)
			return i;
	return SIZE_MAX;
}

static void forget(const char *name)
{
	for (size_t i = find(name, 0); i != SIZE_MAX; i = find(name, i)) {
		close(m.v[i].fd);
		free(m.v[i].name);
		m.v[i] = m.v[--m.n];
	}
}

/* Keep fd under name; the same file already kept under that name is not kept twice. */
static void keep(const char *name, int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		die("fstat of a parked fd: %s", strerror(errno));
	for (size_t i = find(name, 0); i != SIZE_MAX; i = find(name, i + 1))
		if (m.v[i].dev == st.st_dev && m.v[i].ino == st.st_ino) {
			close(fd);
			return;
		}
	if (m.n == m.cap) {
		m.cap = m.cap ? 2 * m.cap : 1024;
		m.v = xrealloc(m.v, m.cap * sizeof(*m.v));
	}
	m.v[m.n++] = (struct parked){ strdup(name), fd, st.st_dev, st.st_ino };
	if (!m.v[m.n - 1].name)
		die("out of memory");
}

static void empty_store(void)
{
	pthread_mutex_lock(&m.lock);
	while (m.n) {
		m.n--;
		close(m.v[m.n].fd);
		free(m.v[m.n].name);
	}
	pthread_mutex_unlock(&m.lock);
}

static size_t parked_leases(void)
{
	size_t k = 0;

	pthread_mutex_lock(&m.lock);
	for (size_t i = 0; i < m.n; i++)
		k += strncmp(m.v[i].name, "lease.", 6) == 0;
	pthread_mutex_unlock(&m.lock);
	return k;
}

/* One datagram: its lines say what to do with the fd it carries (if any). */
static void handle(char *buf, int fd, pid_t sender, uint64_t at)
{
	char name[256] = "stored";
	bool store = false, remove = false, ready = false;

	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		if (strncmp(line, "FDNAME=", 7) == 0)
			snprintf(name, sizeof(name), "%s", line + 7);
		else if (strcmp(line, "FDSTORE=1") == 0)
			store = true;
		else if (strcmp(line, "FDSTOREREMOVE=1") == 0)
			remove = true;
		else if (strcmp(line, "READY=1") == 0)
			ready = true;
	}
	if (remove)
		forget(name);
	if (store && fd >= 0) {
		keep(name, fd);
		fd = -1;
	}
	if (fd >= 0)
		close(fd);
	/* Only the instance running now: a killed one's last words do not count. */
	if (ready && sender == m.pid && m.pid > 0 && !m.ready_ns)
		m.ready_ns = at;
}

/* Read every datagram queued now. */
static void drain(void)
{
	pthread_mutex_lock(&m.lock);
	for (;;) {
		char buf[4096];
		union {
			char b[CMSG_SPACE(sizeof(int) * 16) + CMSG_SPACE(sizeof(struct ucred))];
			struct cmsghdr align;
		} cbuf;
		struct iovec iov = { buf, sizeof(buf) - 1 };
		struct msghdr mh = { .msg_iov = &iov,
				     .msg_iovlen = 1,
				     .msg_control = cbuf.b,
				     .msg_controllen = sizeof(cbuf.b) };
		ssize_t n = recvmsg(m.notify_fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				die("recvmsg on the notify socket: %s", strerror(errno));
			break;
		}
		uint64_t at = bench_now_ns();
		buf[n] = '\0';
		int fd = -1;
		pid_t sender = 0;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET)
				continue;
			if (c->cmsg_type == SCM_RIGHTS) {
				size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				int fds[16];
				memcpy(fds, CMSG_DATA(c), k * sizeof(int));
				for (size_t i = 0; i < k; i++) {
					if (fd < 0)
						fd = fds[i];
					else
						close(
						    fds[i]); /* one fd per message is all we keep */
				}
			} else if (c->cmsg_type == SCM_CREDENTIALS) {
				struct ucred uc;
				memcpy(&uc, CMSG_DATA(c), sizeof(uc));
				sender = uc.pid;
			}
		}
		if (mh.msg_flags & MSG_CTRUNC)
			die("a notify message carried more fds than expected");
		handle(buf, fd, sender, at);
	}
	pthread_mutex_unlock(&m.lock);
}

static void *pump(void *arg)
{
	struct pollfd p = { .fd = m.notify_fd, .events = POLLIN };

	(void)arg;
	while (!m.stop)
		if (poll(&p, 1, 100) > 0)
			drain();
	return NULL;
}

static void setup_sockets(const char *dir)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int one = 1, big = 8 << 20;

	if ((size_t)snprintf(m.sock, sizeof(m.sock), "%s/restart.sock", dir) >= sizeof(m.sock) ||
	    (size_t)snprintf(m.notify, sizeof(m.notify), "%s/notify", dir) >= sizeof(m.notify))
		die("--dir %s: path too long for a Unix socket", dir);
	unlink(m.sock);
	unlink(m.notify);
	m.listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	strcpy(sa.sun_path, m.sock);
	if (m.listen_fd < 0 || bind(m.listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(m.listen_fd, 256) < 0)
		die("listening socket %s: %s", m.sock, strerror(errno));
	m.notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	strcpy(sa.sun_path, m.notify);
	if (m.notify_fd < 0 || bind(m.notify_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("notify socket %s: %s", m.notify, strerror(errno));
	if (setsockopt(m.notify_fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0)
		die("SO_PASSCRED: %s", strerror(errno));
	(void)setsockopt(m.notify_fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
}

/* ---- the daemon ---- */

static char **daemon_argv;

static void kill_daemon(void)
{
	pid_t pid = m.pid;

	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	pthread_mutex_lock(&m.lock);
	m.pid = 0;
	pthread_mutex_unlock(&m.lock);
	if (m.notify_fd >= 0)
		drain(); /* what it parked before it died stays with us */
}

static char *env_entry(const char *key, const char *value)
{
	size_t n = strlen(key) + strlen(value) + 2;
	char *s = xrealloc(NULL, n);

	snprintf(s, n, "%s=%s", key, value);
	return s;
}

/* Start the daemon with the listening socket and every kept fd, as a service manager
 * restarts it; returns the time just before fork. */
static uint64_t start_daemon(void)
{
	pthread_mutex_lock(&m.lock);
	size_t total = m.n + 1, len = strlen("p2pbufd.socket") + 1;
	for (size_t i = 0; i < m.n; i++)
		len += strlen(m.v[i].name) + 1;
	char *names = xrealloc(NULL, len);
	strcpy(names, "p2pbufd.socket");
	int *src = xrealloc(NULL, total * sizeof(int)),
	    *stage = xrealloc(NULL, total * sizeof(int));
	src[0] = m.listen_fd;
	for (size_t i = 0; i < m.n; i++) {
		strcat(names, ":");
		strcat(names, m.v[i].name);
		src[i + 1] = m.v[i].fd;
	}
	/* The child may not allocate: its environment is made here, LISTEN_PID filled in. */
	size_t ne = 0;
	while (environ[ne])
		ne++;
	char **envp = xrealloc(NULL, (ne + 5) * sizeof(char *)), count[24];
	size_t k = 0;
	for (size_t i = 0; i < ne; i++)
		if (strncmp(environ[i], "LISTEN_", 7) && strncmp(environ[i], "NOTIFY_SOCKET=", 14))
			envp[k++] = environ[i];
	snprintf(count, sizeof(count), "%zu", total);
	char *e_fds = env_entry("LISTEN_FDS", count), *e_names = env_entry("LISTEN_FDNAMES", names);
	char *e_notify = env_entry("NOTIFY_SOCKET", m.notify);
	char e_pid[32] = "LISTEN_PID=";
	envp[k++] = e_fds;
	envp[k++] = e_names;
	envp[k++] = e_notify;
	envp[k++] = e_pid;
	envp[k] = NULL;

	m.ready_ns = 0;
	uint64_t t0 = bench_now_ns();
	pid_t pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		dup2(m.log_fd, 1);
		dup2(m.log_fd, 2);
		/* Copies above the target range first, then 3 upwards in the order of the names;
		 * the copies are CLOEXEC, so only the targets reach the daemon. */
		for (size_t i = 0; i < total; i++)
			if ((stage[i] = fcntl(src[i], F_DUPFD_CLOEXEC, (int)(3 + total))) < 0)
				_exit(126);
		for (size_t i = 0; i < total; i++)
			if (dup2(stage[i], (int)(3 + i)) < 0)
				_exit(126);
		char digits[16], *p = e_pid + strlen(e_pid);
		int d = 0;
		for (unsigned v = (unsigned)getpid(); v || !d; v /= 10)
			digits[d++] = (char)('0' + v % 10);
		while (d)
			*p++ = digits[--d];
		*p = '\0';
		execve(daemon_argv[0], daemon_argv, envp);
		_exit(127);
	}
	m.pid = pid;
	pthread_mutex_unlock(&m.lock);
	free(names);
	free(src);
	free(stage);
	free(envp);
	free(e_fds);
	free(e_names);
	free(e_notify);
	return t0;
}

static void check_alive(const char *what)
{
	int status;
	pid_t pid = m.pid;

	if (pid > 0 && waitpid(pid, &status, WNOHANG) == pid) {
		pthread_mutex_lock(&m.lock);
		m.pid = 0;
		pthread_mutex_unlock(&m.lock);
		die("p2pbufd exited (status 0x%x) while %s; see the daemon log", status, what);
	}
}

/* When READY=1 of the instance now running arrived. */
static uint64_t wait_ready(unsigned timeout_ms, const char *what)
{
	uint64_t end = bench_now_ns() + (uint64_t)timeout_ms * 1000000u;

	for (;;) {
		pthread_mutex_lock(&m.lock);
		uint64_t t = m.ready_ns;
		pthread_mutex_unlock(&m.lock);
		if (t)
			return t;
		check_alive(what);
		if (bench_now_ns() > end)
			die("no READY=1 within %u ms (%s)", timeout_ms, what);
		sleep_us(200);
	}
}

/* When an admin listing first showed at least want leases. */
static uint64_t wait_listed(size_t want, unsigned timeout_ms, const char *what)
{
	uint64_t end = bench_now_ns() + (uint64_t)timeout_ms * 1000000u;
	size_t best = 0;

	for (;;) {
		struct p2pbuf *a = NULL;
		struct p2pbuf_lease *ls = NULL;
		size_t n = 0;
		int r = p2pbuf_connect(m.sock, &a);
		if (r == 0)
			r = p2pbuf_list_leases(a, true, &ls, &n);
		uint64_t t = bench_now_ns();
		if (r < 0 && r != -ECONNRESET && r != -ECONNREFUSED && r != -EPIPE)
			die("admin listing (%s): %s%s%s", what, strerror(-r), a ? ": " : "",
			    a ? p2pbuf_last_message(a) : "");
		p2pbuf_leases_free(ls, n);
		p2pbuf_disconnect(a);
		if (r == 0 && n >= want)
			return t;
		if (r == 0 && n > best)
			best = n;
		check_alive(what);
		if (bench_now_ns() > end)
			die("%s: the admin listing showed %zu of %zu leases after %u ms", what,
			    best, want, timeout_ms);
		sleep_us(500);
	}
}

/* ---- the holder ---- */

static int holder(const char *sock, const char *device, unsigned long count)
{
	struct p2pbuf *c = NULL;
	struct p2pbuf_range r = { 0, 4096 };
	int e = p2pbuf_connect(sock, &c);
	char buf[64];

	if (e < 0) {
		fprintf(stderr, "bench-restart holder: connect %s: %s\n", sock, strerror(-e));
		return 1;
	}
	for (unsigned long i = 0; i < count; i++) {
		uint64_t id, size;
		int fd = p2pbuf_export(c, device, 0, &r, 1, NULL, &id, &size);
		if (fd < 0) {
			fprintf(stderr, "bench-restart holder: export %lu of %lu: %s: %s\n", i + 1,
				count, strerror(-fd), p2pbuf_last_message(c));
			return 1;
		}
		/* The fd stays open: a live lease held by this process. */
	}
	printf("ok\n");
	fflush(stdout);
	while (read(0, buf, sizeof(buf)) > 0)
		; /* until the bench closes our stdin */
	return 0;
}

struct holder_proc {
	pid_t pid;
	int to, from;
};

static struct holder_proc spawn_holder(unsigned long count, unsigned timeout_ms)
{
	int in[2], out[2];
	char n[24], self[4096];
	ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	posix_spawn_file_actions_t fa;
	struct holder_proc h;

	if (len < 0)
		die("readlink /proc/self/exe: %s", strerror(errno));
	self[len] = '\0';
	snprintf(n, sizeof(n), "%lu", count);
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in[0], 0);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	char *argv[] = { self, "holder", m.sock, DEVICE, n, NULL };
	int e = posix_spawn(&h.pid, self, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (e)
		die("spawning the holder: %s", strerror(e));
	close(in[0]);
	close(out[1]);
	h.to = in[1];
	h.from = out[0];
	struct pollfd p = { .fd = h.from, .events = POLLIN };
	char buf[8] = "";
	int pr = poll(&p, 1, (int)timeout_ms);
	if (pr <= 0)
		die("the holder did not export %lu leases within %u ms", count, timeout_ms);
	if (read(h.from, buf, sizeof(buf) - 1) < 3 || strncmp(buf, "ok\n", 3))
		die("the holder could not export %lu leases (its error is above; daemon log too)",
		    count);
	return h;
}

static void end_holder(struct holder_proc *h)
{
	close(h->to);
	close(h->from);
	kill(h->pid, SIGKILL);
	while (waitpid(h->pid, NULL, 0) < 0 && errno == EINTR)
		;
}

/* ---- the measurement ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double ms(uint64_t from, uint64_t to)
{
	return (double)(to - from) / 1e6;
}

static unsigned long number(const char *opt, const char *s)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (!*s || *end || v == 0)
		die("%s: \"%s\" is not a positive number", opt, s);
	return v;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "daemon", required_argument, NULL, 'd' },
		{ "policy", required_argument, NULL, 'p' },
		{ "dir", required_argument, NULL, 'D' },
		{ "count", required_argument, NULL, 'n' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{},
	};
	const char *daemon = NULL, *policy = NULL, *dir = NULL;
	unsigned long want = 4096, rounds = 3, timeout_ms = 30000;
	int c;

	if (argc == 5 && strcmp(argv[1], "holder") == 0)
		return holder(argv[2], argv[3], number("count", argv[4]));
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			daemon = optarg;
			break;
		case 'p':
			policy = optarg;
			break;
		case 'D':
			dir = optarg;
			break;
		case 'n':
			want = number("--count", optarg);
			break;
		case 'r':
			rounds = number("--rounds", optarg);
			break;
		case 't':
			timeout_ms = number("--timeout-ms", optarg);
			break;
		default:
			return 2;
		}
	}
	if (!daemon || !policy || !dir || optind != argc || rounds > 99)
		die("usage: bench-restart --daemon P2PBUFD --policy FILE --dir DIR [--count N] "
		    "[--rounds N<100] [--timeout-ms N]");

	/* Raise the soft fd limit to the hard one; the daemon and the holder inherit it. The
	 * stand-in briefly holds two copies of every parked fd while it starts the daemon. */
	struct rlimit rl;
	bench_raise_nofile();
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("getrlimit: %s", strerror(errno));
	unsigned long count = want;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 2 * (rlim_t)want + 2 * FD_MARGIN) {
		count = rl.rlim_max > 4 * FD_MARGIN
			    ? (unsigned long)(rl.rlim_max - 2 * FD_MARGIN) / 2
			    : 0;
		if (!count)
			die("the hard fd limit (%llu) leaves no room for leases",
			    (unsigned long long)rl.rlim_max);
		printf(
		    "limited %lu of %lu leases: the hard fd limit is %llu and the service-manager "
		    "stand-in needs two fds per lease while it restarts the daemon\n",
		    count, want, (unsigned long long)rl.rlim_max);
	}
	printf("nofile %llu\n", (unsigned long long)rl.rlim_cur);
	printf("leases %lu\n", count);

	char log[4096], store[24], leases[24], per_client[24];
	snprintf(log, sizeof(log), "%s/restart-daemon.log", dir);
	m.log_fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (m.log_fd < 0)
		die("%s: %s", log, strerror(errno));
	snprintf(store, sizeof(store), "%lu", count + 4104 > 8200 ? count + 4104 : 8200);
	snprintf(leases, sizeof(leases), "%lu", count > 4096 ? count : 4096);
	snprintf(per_client, sizeof(per_client), "%lu", count);
	/* One holder of one user holds them all: the per-user cap (a quarter of --max-leases by
	 * default) must let it. */
	char *args[] = { (char *)daemon, "--policy", (char *)policy, "--fd-store", store,
			 "--max-leases", leases, "--max-leases-per-client", per_client,
			 "--max-leases-per-user", per_client,
			 /* Nobody reclaims: the leases must stay listed while they are measured. */
			 "--reclaim-grace", "600s", NULL };
	daemon_argv = args;
	printf("daemon_args --fd-store %s --max-leases %s --max-leases-per-client %s "
	       "--max-leases-per-user %s --reclaim-grace 600s\n",
	       store, leases, per_client, per_client);

	setup_sockets(dir);
	pthread_t thread;
	if (pthread_create(&thread, NULL, pump, NULL))
		die("pthread_create failed");

	double cold_ready[99], cold_listed[99], re_ready[99], re_listed[99];
	for (unsigned r = 0; r < rounds; r++) {
		empty_store();
		uint64_t t0 = start_daemon();
		uint64_t ready = wait_ready((unsigned)timeout_ms, "cold start");
		uint64_t listed = wait_listed(0, (unsigned)timeout_ms, "cold start");
		cold_ready[r] = ms(t0, ready);
		cold_listed[r] = ms(t0, listed);

		struct holder_proc h = spawn_holder(count, (unsigned)timeout_ms);
		check_alive("the holder exported");
		kill_daemon();
		size_t parked = parked_leases();
		if (parked != count)
			die("round %u: %zu of %lu leases were in the fd store when the daemon was "
			    "killed",
			    r + 1, parked, count);

		t0 = start_daemon();
		ready = wait_ready((unsigned)timeout_ms, "restart with leases");
		listed = wait_listed(count, (unsigned)timeout_ms, "restart with leases");
		re_ready[r] = ms(t0, ready);
		re_listed[r] = ms(t0, listed);
		printf("round %u cold_ready_ms %.2f cold_listed_ms %.2f restart_ready_ms %.2f "
		       "restart_listed_ms %.2f parked %zu\n",
		       r + 1, cold_ready[r], cold_listed[r], re_ready[r], re_listed[r], parked);
		fflush(stdout);
		kill_daemon();
		end_holder(&h);
	}
	m.stop = 1;
	pthread_join(thread, NULL);
	empty_store();

	double cr = median(cold_ready, (unsigned)rounds),
	       cl = median(cold_listed, (unsigned)rounds);
	double rr = median(re_ready, (unsigned)rounds), rl2 = median(re_listed, (unsigned)rounds);
	printf("rounds %lu\n", rounds);
	printf("cold_ready_ms %.2f\n", cr);
	printf("cold_listed_ms %.2f\n", cl);
	printf("restart_ready_ms %.2f\n", rr);
	printf("restart_listed_ms %.2f\n", rl2);
	printf("ready_ratio %.2f\n", cr > 0 ? rr / cr : 0);
	printf("listed_ratio %.2f\n", cr > 0 ? rl2 / cr : 0);
	printf("goal_ready %s\n", rr < 1000 ? "met" : "missed");
	printf("goal_listed %s\n", rl2 < 1000 ? "met" : "missed");
	unlink(m.sock);
	unlink(m.notify);
	return 0;
}
