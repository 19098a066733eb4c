/* The grant path: N client threads, each on its own connection, export one buffer and release
 * it, back to back, for a fixed time. The same code drives p2pbufd and the baseline server
 * through libp2pbuf's public API, so whatever differs is the server. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* A thread's samples are kept in full for the quantiles; the cap bounds the memory if a
 * server is far faster than expected. */
#define GRANT_MAX_SAMPLES 1000000

struct grant_thread {
	pthread_t tid;
	const struct bench_opts *o;
	pthread_barrier_t *start;
	uint64_t deadline_ns;
	struct p2pbuf *conn;
	uint64_t *export_ns, *release_ns;
	size_t n, cap;
	uint64_t end_ns;
	unsigned pause_ms; /* the probe's pause between cycles; 0 for the workers */
	int error;	   /* 0, or the -errno of the call that failed */
	const char *what;
	char message[256];
};

/* Remember the first failure; the main thread reports it, since a failed run has no result. */
static void fail(struct grant_thread *t, const char *what, int r)
{
	t->error = r;
	t->what = what;
	snprintf(t->message, sizeof(t->message), "%s", p2pbuf_last_message(t->conn));
}

static void *grant_run(void *arg)
{
	struct grant_thread *t = arg;
	struct p2pbuf_range range = { 0, t->o->length };

	pthread_barrier_wait(t->start);
	while (t->n < t->cap && bench_now_ns() < t->deadline_ns) {
		uint64_t id, size, t0 = bench_now_ns();
		int fd =
		    p2pbuf_export(t->conn, t->o->device, t->o->bar, &range, 1, NULL, &id, &size);
		uint64_t t1 = bench_now_ns();
		if (fd < 0) {
			fail(t, "export", fd);
			break;
		}
		int r = p2pbuf_lease_release(t->conn, id, fd);
		uint64_t t2 = bench_now_ns();
		if (r < 0) {
			fail(t, "release", r);
			break;
		}
		t->export_ns[t->n] = t1 - t0;
		t->release_ns[t->n++] = t2 - t1;
		if (t->pause_ms)
			bench_sleep_ms(t->pause_ms);
	}
	t->end_ns = bench_now_ns();
	return NULL;
}

/* All samples of one kind from every thread, sorted. */
static uint64_t *gather(struct grant_thread *ts, unsigned n, bool release, size_t *ret_n)
{
	size_t total = 0, k = 0;

	for (unsigned i = 0; i < n; i++)
		total += ts[i].n;
	uint64_t *all = malloc((total ? total : 1) * sizeof(*all));
	if (!all)
		bench_die("out of memory");
	for (unsigned i = 0; i < n; i++) {
		memcpy(all + k, release ? ts[i].release_ns : ts[i].export_ns,
		       ts[i].n * sizeof(*all));
		k += ts[i].n;
	}
	bench_sort(all, total);
	*ret_n = total;
	return all;
}

static const struct quantile {
	const char *suffix;
	double p;
} grant_qs[] = { { "p50", 0.50 }, { "p99", 0.99 }, { "p999", 0.999 } },
  probe_qs[] = { { "p50", 0.50 }, { "p99", 0.99 }, { "max", 1.0 } };

static void report_quantiles(const char *name, struct grant_thread *ts, unsigned n, bool release,
			     const struct quantile *qs, size_t n_qs)
{
	char key[64];
	size_t total;
	uint64_t *all = gather(ts, n, release, &total);

	for (size_t i = 0; i < n_qs; i++) {
		snprintf(key, sizeof(key), "%s_%s_us", name, qs[i].suffix);
		bench_result(key, "%.1f", bench_quantile_us(all, total, qs[i].p));
	}
	free(all);
}

static void report_latency(const char *name, struct grant_thread *ts, unsigned n, bool release)
{
	report_quantiles(name, ts, n, release, grant_qs, sizeof(grant_qs) / sizeof(grant_qs[0]));
}

/* The deadline is set once every thread is connected (the barrier publishes it). */
static void thread_init(struct grant_thread *t, const struct bench_opts *o,
			pthread_barrier_t *start, size_t cap)
{
	*t = (struct grant_thread){ .o = o, .start = start, .cap = cap };
	t->conn = bench_connect(o->socket);
	t->export_ns = malloc(cap * sizeof(uint64_t));
	t->release_ns = malloc(cap * sizeof(uint64_t));
	if (!t->export_ns || !t->release_ns)
		bench_die("out of memory");
}

/* Join every thread; exit if any call failed (the run then has no figures). */
static uint64_t join_all(struct grant_thread *ts, unsigned n, size_t *ret_cycles)
{
	uint64_t end = 0;
	size_t cycles = 0;

	for (unsigned i = 0; i < n; i++)
		pthread_join(ts[i].tid, NULL);
	for (unsigned i = 0; i < n; i++) {
		if (ts[i].error)
			bench_die("client %u: %s failed after %zu cycles: %s (%s)", i, ts[i].what,
				  ts[i].n, strerror(-ts[i].error), ts[i].message);
		end = ts[i].end_ns > end ? ts[i].end_ns : end;
		cycles += ts[i].n;
	}
	*ret_cycles = cycles;
	return end;
}

int bench_grant(const struct bench_opts *o)
{
	unsigned n = o->clients ? o->clients : 1;
	/* ts[n] is the probe, with --probe-ms: a bystander cycling once every probe_ms. */
	unsigned all = n + (o->probe_ms ? 1 : 0);
	struct grant_thread *ts = calloc(all, sizeof(*ts));
	pthread_barrier_t start;
	size_t cycles;

	if (!ts)
		bench_die("out of memory");
	/* Forked before any thread exists, and before the clock starts. */
	pid_t *idle = bench_idle_start(o->idle_procs, o->idle_fds);
	pthread_barrier_init(&start, NULL, all + 1);
	for (unsigned i = 0; i < all; i++) {
		thread_init(&ts[i], o, &start, GRANT_MAX_SAMPLES / all);
		ts[i].pause_ms = i == n ? o->probe_ms : 0;
		if (pthread_create(&ts[i].tid, NULL, grant_run, &ts[i]) != 0)
			bench_die("pthread_create failed");
	}
	/* Connecting took some of the time: the measured window starts here, for everyone. */
	uint64_t begin = bench_now_ns();
	for (unsigned i = 0; i < all; i++)
		ts[i].deadline_ns = begin + (uint64_t)(o->seconds * 1e9);
	/* With --pid, the server's CPU over the window: the figure a host whose speed drifts
	 * moves least, and the one that says whose time a cycle is. */
	uint64_t cpu0 = o->pid > 0 ? bench_cpu_ns(o->pid) : 0;
	pthread_barrier_wait(&start);
	uint64_t end = join_all(ts, all, &cycles);
	uint64_t cpu = o->pid > 0 ? bench_cpu_ns(o->pid) - cpu0 : 0;
	bench_idle_stop(idle, o->idle_procs);
	if (all > n) {
		cycles -= ts[n].n;
		bench_result("probe_cycles", "%zu", ts[n].n);
		report_quantiles("probe_export", ts + n, 1, false, probe_qs,
				 sizeof(probe_qs) / sizeof(probe_qs[0]));
		report_quantiles("probe_release", ts + n, 1, true, probe_qs,
				 sizeof(probe_qs) / sizeof(probe_qs[0]));
	}
	bench_result("cycles", "%zu", cycles);
	bench_result("cycles_per_s", "%.1f", (double)cycles / ((double)(end - begin) / 1e9));
	if (o->pid > 0 && cycles > 0)
		bench_result("server_cpu_us", "%.2f", (double)cpu / 1e3 / (double)cycles);
	report_latency("export", ts, n, false);
	report_latency("release", ts, n, true);
	for (unsigned i = 0; i < all; i++) {
		p2pbuf_disconnect(ts[i].conn);
		free(ts[i].export_ns);
		free(ts[i].release_ns);
	}
	pthread_barrier_destroy(&start);
	free(ts);
	return 0;
}
