/* What the bench client's measurements share: clocks, results, percentiles, a look at another
 * process's fds and memory, idle processes, and connections that fail loudly. Every result
 * is printed as one "key value" line that tests/bench/run.sh collects. A helper that cannot
 * do its job ends the program with exit status 1: a broken benchmark must fail the run,
 * never print a number. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "p2pbuf.h"

/* What every measurement may be told on the command line; each uses the part it needs. */
struct bench_opts {
	const char *socket;
	const char *device;
	unsigned bar;
	uint64_t length;     /* bytes per export */
	unsigned clients;    /* grant: threads, each with its own connection */
	double seconds;	     /* grant, leases: how long to measure */
	unsigned idle_procs; /* grant: idle processes added to the machine */
	unsigned idle_fds;   /* ... each holding this many fds */
	unsigned probe_ms;   /* grant: a bystander's export+release every so many ms, timed */
	pid_t pid;	     /* the server under test (fd counts, RSS, SIGHUP) */
	unsigned count;	     /* leases or holders */
	unsigned threads;    /* letgo: holder threads */
	const char *mode;    /* letgo: "revoke" or "reload" */
	const char *policy;  /* letgo reload: the policy file the daemon reads */
	const char *reload;  /* letgo reload: the file that replaces it */
	unsigned timeout_ms;
	unsigned rounds; /* coldstart */
	char **argv;	 /* coldstart: the daemon's command line */
};

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);
void bench_sleep_ms(unsigned ms);

/* Print "bench-client: message" and exit 1. */
__attribute__((noreturn, format(printf, 1, 2))) void bench_die(const char *fmt, ...);

/* Print one result line. */
__attribute__((format(printf, 2, 3))) void bench_result(const char *key, const char *fmt, ...);

/* Raise our soft RLIMIT_NOFILE to the hard one: the scale runs hold thousands of fds. */
void bench_raise_nofile(void);

/* Open fds of pid, from /proc/PID/fd; exits if pid is gone. */
int bench_count_fds(pid_t pid);
/* CPU time of all of pid's threads in ns, from their schedstat; exits if pid is gone. */
uint64_t bench_cpu_ns(pid_t pid);
/* VmRSS of pid in KiB; exits if pid is gone. */
long bench_rss_kib(pid_t pid);
/* The soft RLIMIT_NOFILE of pid, from /proc/PID/limits; exits if pid is gone. */
long bench_nofile_limit(pid_t pid);

/* Sort v[0..n) and return its p-quantile (0 < p <= 1) in microseconds; 0 if n == 0. */
void bench_sort(uint64_t *v, size_t n);
double bench_quantile_us(const uint64_t *sorted, size_t n, double p);

/* Fork n processes that each open fds fds and sleep until killed (they die with us too).
 * Returns once all are holding their fds; the array of pids is malloc'd. */
pid_t *bench_idle_start(unsigned n, unsigned fds);
void bench_idle_stop(pid_t *pids, unsigned n);

/* p2pbuf_connect or exit. */
struct p2pbuf *bench_connect(const char *socket);
/* One export of opts' device/bar/length; exits on failure, naming the daemon's message. */
int bench_export(struct p2pbuf *conn, const struct bench_opts *o, uint64_t *ret_id);
/* The device's generation from ListDevices; exits if it is not listed. */
uint32_t bench_generation(struct p2pbuf *conn, const char *device);

/* The measurements, one per subcommand. */
int bench_grant(const struct bench_opts *o);
int bench_close(const struct bench_opts *o);
int bench_reset(const struct bench_opts *o);
int bench_letgo(const struct bench_opts *o);
int bench_leases(const struct bench_opts *o);
int bench_coldstart(const struct bench_opts *o);
int bench_wait(const struct bench_opts *o);
