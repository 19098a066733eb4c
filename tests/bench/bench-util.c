/* Helpers of the bench client (see bench.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

void bench_die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("bench-client: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

void bench_result(const char *key, const char *fmt, ...)
{
	va_list ap;

	printf("%s ", key);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	/* The driver reads results as they come, and a later failure must not lose them. */
	fflush(stdout);
}

void bench_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		bench_die("getrlimit: %s", strerror(errno));
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		bench_die("setrlimit: %s", strerror(errno));
}

int bench_count_fds(pid_t pid)
{
	char path[64];
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		bench_die("%s: %s (did the server die?)", path, strerror(errno));
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* The number after prefix on the first line of /proc/PID/file that starts with it; exits if
 * there is none or pid is gone. */
static long proc_value(pid_t pid, const char *file, const char *prefix)
{
	char path[64], line[256], *end;
	long v = -1;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	FILE *f = fopen(path, "re");
	if (!f)
		bench_die("%s: %s (did the server die?)", path, strerror(errno));
	while (v < 0 && fgets(line, sizeof(line), f))
		if (strncmp(line, prefix, strlen(prefix)) == 0) {
			v = strtol(line + strlen(prefix), &end, 10);
			if (end == line + strlen(prefix))
				v = -1;
		}
	fclose(f);
	if (v < 0)
		bench_die("%s has no \"%s\" line", path, prefix);
	return v;
}

/* CPU time pid's threads have had, in ns: the sum of the first field of every
 * /proc/PID/task/TID/schedstat (the scheduler's own accounting, not the 10 ms ticks of
 * /proc/PID/stat). A thread that ended takes its share with it; the daemon's worker threads
 * live as long as it does. */
uint64_t bench_cpu_ns(pid_t pid)
{
	char path[sizeof("/proc//task//schedstat") + 2 * 12 + sizeof(((struct dirent *)0)->d_name)];
	uint64_t sum = 0;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		bench_die("%s: %s (did the server die?)", path, strerror(errno));
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/schedstat", (int)pid, e->d_name);
		FILE *f = fopen(path, "re");
		unsigned long long ns;
		if (f && fscanf(f, "%llu", &ns) == 1)
			sum += ns;
		if (f)
			fclose(f);
	}
	closedir(d);
	return sum;
}

long bench_rss_kib(pid_t pid)
{
	return proc_value(pid, "status", "VmRSS:");
}

long bench_nofile_limit(pid_t pid)
{
	return proc_value(pid, "limits", "Max open files");
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

void bench_sort(uint64_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), compare_u64);
}

double bench_quantile_us(const uint64_t *sorted, size_t n, double p)
{
	if (n == 0)
		return 0;
	/* The nearest-rank quantile: the smallest sample with at least p of them at or below
	 * it. With fewer than 1/(1-p) samples this is the maximum, which run.sh says. */
	size_t rank = (size_t)(p * (double)n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)sorted[rank - 1] / 1000.0;
}

/* In an idle child: hold fds fds and sleep until killed. */
static void idle_child(unsigned fds, int ready_fd)
{
	/* The bench may die without killing us: our parent's death must end us too. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	for (unsigned i = 0; i < fds; i++)
		if (open("/dev/null", O_RDONLY) < 0)
			_exit(1);
	if (write(ready_fd, "r", 1) != 1)
		_exit(1);
	for (;;)
		pause();
}

pid_t *bench_idle_start(unsigned n, unsigned fds)
{
	pid_t *pids = calloc(n ? n : 1, sizeof(*pids));
	int p[2];
	char c;

	if (!pids || pipe2(p, O_CLOEXEC) < 0)
		bench_die("idle processes: %s", strerror(errno));
	for (unsigned i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] < 0)
			bench_die("fork: %s", strerror(errno));
		if (pids[i] == 0)
			idle_child(fds, p[1]);
	}
	close(p[1]);
	for (unsigned i = 0; i < n; i++)
		if (read(p[0], &c, 1) != 1)
			bench_die("an idle process failed to open its %u fds", fds);
	close(p[0]);
	return pids;
}

void bench_idle_stop(pid_t *pids, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	for (unsigned i = 0; i < n; i++)
		waitpid(pids[i], NULL, 0);
	free(pids);
}

struct p2pbuf *bench_connect(const char *socket)
{
	struct p2pbuf *conn;
	int r = p2pbuf_connect(socket, &conn);

	if (r < 0)
		bench_die("connect %s: %s", socket, strerror(-r));
	return conn;
}

int bench_export(struct p2pbuf *conn, const struct bench_opts *o, uint64_t *ret_id)
{
	struct p2pbuf_range range = { 0, o->length };
	uint64_t size;
	int fd = p2pbuf_export(conn, o->device, o->bar, &range, 1, NULL, ret_id, &size);

	if (fd < 0)
		bench_die("export %s bar %u: %s (%s)", o->device, o->bar, strerror(-fd),
			  p2pbuf_last_message(conn));
	return fd;
}

uint32_t bench_generation(struct p2pbuf *conn, const char *device)
{
	struct p2pbuf_device *devs;
	size_t n;
	int r = p2pbuf_list_devices(conn, &devs, &n);
	long gen = -1;

	if (r < 0)
		bench_die("list devices: %s", strerror(-r));
	for (size_t i = 0; i < n; i++)
		if (strcmp(devs[i].name, device) == 0)
			gen = devs[i].generation;
	p2pbuf_devices_free(devs, n);
	if (gen < 0)
		bench_die("device %s is not listed", device);
	return (uint32_t)gen;
}
