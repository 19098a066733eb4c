/* Integration test harness: a real p2pbufd on a temporary socket with simulated devices. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

struct harness {
	char dir[64]; /* temporary directory holding socket and policy */
	char socket[128];
	char policy[128];
	pid_t pid;	  /* the daemon */
	int baseline_fds; /* the daemon's open fds once it is ready */
	bool activated;	  /* pass the listening socket as systemd does */
};

/* The policy every test starts from, for the calling uid (%1$u) as user and admin:
 * sim0 (bars 0: 64K with MSI-X table at 0x2000 and PBA at 0x3000, 2: 2M, 4: 1M),
 * sim1 (bar 0: 1M). Rules are listed in harness.c. */
extern const char harness_default_policy[];

/* Write policy (a printf format given the caller's uid) and start the daemon with it and
 * the extra arguments (NULL-terminated). Waits until the socket accepts connections. */
void harness_start(struct harness *h, const char *policy_fmt, const char *const *extra_args);

/* Like harness_start, but the test binds the socket and hands it over as fd 3 with
 * LISTEN_FDS/LISTEN_PID, the way systemd's socket activation does. */
void harness_start_activated(struct harness *h, const char *policy_fmt);

/* SIGTERM the daemon, assert it exits 0, remove the directory. */
void harness_stop(struct harness *h);

/* Rewrite the policy file (a printf format given the caller's uid); nothing reloads it. */
void harness_write_policy(struct harness *h, const char *policy_fmt);

/* Rewrite the policy (a printf format given the caller's uid) and send SIGHUP. */
void harness_reload(struct harness *h, const char *policy_fmt);

/* Simulate a device event on simulated device: what is "remove" or "error". */
void harness_sim_event(const struct harness *h, const char *device, const char *what);

/* Number of open fds of process pid (from /proc/PID/fd). */
int harness_count_fds(pid_t pid);

/* The anonymous RSS (heap, stacks) of process pid in KiB, or -1: what a client can make a
 * daemon keep, without the shared code it pages in. */
long harness_anon_rss_kb(pid_t pid);

/* Wait up to timeout_ms for the daemon's fd count to fall back to its baseline. */
bool harness_fds_settle(struct harness *h, int timeout_ms);

/* A raw SOCK_SEQPACKET connection to the daemon, without Hello. */
int harness_raw_connect(const struct harness *h);

/* Send Hello{major 1} on a raw connection and wait for the reply; false if none came. */
bool harness_raw_hello(int fd);

/* Whether the peer closed the raw connection within timeout_ms. */
bool harness_peer_closed(int fd, int timeout_ms);
