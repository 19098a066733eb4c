/* p2pbufd: startup order (options, policy, socket, devices, loop), signals, shutdown. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <systemd/sd-daemon.h>

#include "audit.h"
#include "daemon.h"
#include "manager.h"
#include "log.h"
#include "clock.h"
#include "macro.h"
#include "units.h"

/* configure's sysconfdir decides. */
#ifndef P2PBUF_POLICY_PATH
#define P2PBUF_POLICY_PATH "/etc/p2pbuf/policy"
#endif

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "Usage: p2pbufd [OPTIONS]\n"
	    "Hand out dma-buf fds for ranges of PCI BARs to local clients, under a policy.\n\n"
	    "  -p, --policy FILE              policy file (default " P2PBUF_POLICY_PATH ")\n"
	    "  -s, --socket PATH              listen on PATH (default: the socket systemd\n"
	    "                                 passes, else " P2PBUF_SOCKET_PATH ")\n"
	    "      --fd-store N               park buffers and devices in systemd's fd store,\n"
	    "                                 which keeps N fds (FileDescriptorStoreMax=), so\n"
	    "                                 that a restart revokes nothing (default: $FDSTORE,\n"
	    "                                 else 0: off)\n"
	    "      --reclaim-grace TIME       how long leases taken over after a restart wait\n"
	    "                                 for their owners to reclaim them (default 5s)\n"
	    "      --stop-request PID         (as root, for the unit's ExecStop=) tell the daemon\n"
	    "                                 PID that systemd is restarting it, not stopping\n"
	    "      --socket-group GROUP       group of a socket p2pbufd creates (default: its\n"
	    "                                 own)\n"
	    "      --socket-mode MODE         its mode, in octal (default 0660)\n"
	    "      --check-policy             parse the policy, report, and exit\n"
	    "      --max-clients N            connections at once (default 256)\n"
	    "      --max-clients-per-user N   connections of one uid (default: a quarter of\n"
	    "                                 --max-clients)\n"
	    "      --max-leases N             leases in the whole daemon (default 4096)\n"
	    "      --max-leases-per-user N    leases of one uid (default: a quarter of\n"
	    "                                 --max-leases)\n"
	    "      --max-leases-per-client N  leases per connection (default 64)\n"
	    "      --hello-timeout DURATION   drop a client that has not said Hello by then\n"
	    "                                 (default 10s; 0: never)\n"
	    "      --max-queued-bytes SIZE    output queued for all clients together\n"
	    "                                 (default 64M)\n"
	    "      --max-lease-size BYTES     largest lease, e.g. 64M (K/M/G/T: 1024s) "
	    "(default: none)\n"
	    "      --lease-log-rate N|all     grants and releases logged one by one per\n"
	    "                                 connection and second, the rest counted\n"
	    "                                 (default 20)\n"
	    "      --sandbox=enforce|log|off  seccomp filter once started (default enforce)\n"
	    "  -v, --verbose                  log debug messages\n"
	    "  -q, --quiet                    log warnings and errors only\n"
	    "  -h, --help                     show this help\n"
	    "  -V, --version                  show the version\n");
}

static int parse_count(const char *opt, const char *s, unsigned *ret)
{
	uint64_t v;

	/* A count is plain decimal digits; the size grammar's digits, without a suffix. */
	if (s[strspn(s, "0123456789")] || units_parse_size_str(s, &v) < 0 || v == 0 ||
	    v > 1000000) {
		fprintf(stderr, "p2pbufd: %s: \"%s\" is not a count from 1 to 1000000\n", opt, s);
		return -EINVAL;
	}
	*ret = (unsigned)v;
	return 0;
}

enum {
	OPT_CHECK_POLICY = 256,
	OPT_MAX_CLIENTS,
	OPT_MAX_LEASES,
	OPT_MAX_LEASES_PER_CLIENT,
	OPT_MAX_CLIENTS_PER_USER,
	OPT_MAX_LEASES_PER_USER,
	OPT_HELLO_TIMEOUT,
	OPT_MAX_QUEUED_BYTES,
	OPT_MAX_LEASE_SIZE,
	OPT_FD_STORE,
	OPT_RECLAIM_GRACE,
	OPT_SOCKET_GROUP,
	OPT_SOCKET_MODE,
	OPT_SANDBOX,
	OPT_LEASE_LOG_RATE,
};

static int parse_duration(const char *opt, const char *s, uint64_t *ret)
{
	if (units_parse_duration_str(s, ret) < 0) {
		fprintf(stderr, "p2pbufd: %s: \"%s\" is not a duration (e.g. 10s, 500ms)\n", opt,
			s);
		return -EINVAL;
	}
	return 0;
}

/* A size in bytes, more than 0. */
static int parse_size(const char *opt, const char *s, uint64_t *ret)
{
	uint64_t v;

	if (units_parse_size_str(s, &v) < 0 || v == 0) {
		fprintf(stderr,
			"p2pbufd: %s: \"%s\" is not a size above 0 (bytes, or a number with K, M, "
			"G or T)\n",
			opt, s);
		return -EINVAL;
	}
	*ret = v;
	return 0;
}

/* systemd 254 and later say how many fds the unit's store keeps (FileDescriptorStoreMax=)
 * in $FDSTORE; older ones are told with --fd-store. */
static unsigned fd_store_default(void)
{
	const char *s = getenv("FDSTORE");
	uint64_t v;

	if (!s || s[strspn(s, "0123456789")] || units_parse_size_str(s, &v) < 0 || v > 1000000)
		return 0;
	return (unsigned)v;
}

/* A group name or number, resolved now: the daemon may not see the user database later. */
static int parse_group(const char *s, gid_t *ret)
{
	char buf[16384];
	struct group gr, *found = NULL;
	uint64_t v;

	if (s[strspn(s, "0123456789")] == '\0' && units_parse_size_str(s, &v) == 0 &&
	    v < (gid_t)-1) {
		*ret = (gid_t)v;
		return 0;
	}
	int r = getgrnam_r(s, &gr, buf, sizeof(buf), &found);
	if (r != 0 || !found) {
		fprintf(stderr, "p2pbufd: --socket-group: no group \"%s\"%s%s\n", s, r ? ": " : "",
			r ? strerror(r) : "");
		return -EINVAL;
	}
	*ret = found->gr_gid;
	return 0;
}

/* An octal mode for the socket, at most 0777. */
static int parse_mode(const char *s, mode_t *ret)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 8);
	if (!*s || *end || errno || v > 0777 || s[strspn(s, "01234567")]) {
		fprintf(stderr, "p2pbufd: --socket-mode: \"%s\" is not an octal mode (e.g. 0660)\n",
			s);
		return -EINVAL;
	}
	*ret = (mode_t)v;
	return 0;
}

/* Returns 0 to run, 1 to exit successfully (help, version), -EINVAL on a usage error. */
static int parse_options(int argc, char **argv, struct daemon_options *o, bool *ret_check)
{
	static const struct option longopts[] = {
		{ "policy", required_argument, NULL, 'p' },
		{ "socket", required_argument, NULL, 's' },
		{ "check-policy", no_argument, NULL, OPT_CHECK_POLICY },
		{ "max-clients", required_argument, NULL, OPT_MAX_CLIENTS },
		{ "max-leases", required_argument, NULL, OPT_MAX_LEASES },
		{ "max-leases-per-client", required_argument, NULL, OPT_MAX_LEASES_PER_CLIENT },
		{ "max-clients-per-user", required_argument, NULL, OPT_MAX_CLIENTS_PER_USER },
		{ "max-leases-per-user", required_argument, NULL, OPT_MAX_LEASES_PER_USER },
		{ "hello-timeout", required_argument, NULL, OPT_HELLO_TIMEOUT },
		{ "max-queued-bytes", required_argument, NULL, OPT_MAX_QUEUED_BYTES },
		{ "max-lease-size", required_argument, NULL, OPT_MAX_LEASE_SIZE },
		{ "fd-store", required_argument, NULL, OPT_FD_STORE },
		{ "reclaim-grace", required_argument, NULL, OPT_RECLAIM_GRACE },
		{ "socket-group", required_argument, NULL, OPT_SOCKET_GROUP },
		{ "socket-mode", required_argument, NULL, OPT_SOCKET_MODE },
		{ "sandbox", required_argument, NULL, OPT_SANDBOX },
		{ "lease-log-rate", required_argument, NULL, OPT_LEASE_LOG_RATE },
		{ "verbose", no_argument, NULL, 'v' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{},
	};
	int c, r = 0;

	*o = (struct daemon_options){ .policy_path = P2PBUF_POLICY_PATH,
				      .socket_group = (gid_t)-1,
				      .fd_store_max = fd_store_default(),
				      .reclaim_grace_ms = 5000,
				      .socket_mode = 0660,
				      .max_clients = 256,
				      .max_leases = 4096,
				      .max_leases_per_client = 64,
				      .hello_timeout_ms = 10000,
				      .max_queued_bytes = 64 << 20 };
	*ret_check = false;
	while (r == 0 && (c = getopt_long(argc, argv, "p:s:vqhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'p':
			o->policy_path = optarg;
			break;
		case 's':
			o->socket_path = optarg;
			break;
		case OPT_CHECK_POLICY:
			*ret_check = true;
			break;
		case OPT_MAX_CLIENTS:
			r = parse_count("--max-clients", optarg, &o->max_clients);
			break;
		case OPT_MAX_LEASES:
			r = parse_count("--max-leases", optarg, &o->max_leases);
			break;
		case OPT_MAX_LEASES_PER_CLIENT:
			r = parse_count("--max-leases-per-client", optarg,
					&o->max_leases_per_client);
			break;
		case OPT_MAX_CLIENTS_PER_USER:
			r = parse_count("--max-clients-per-user", optarg, &o->max_clients_per_user);
			break;
		case OPT_MAX_LEASES_PER_USER:
			r = parse_count("--max-leases-per-user", optarg, &o->max_leases_per_user);
			break;
		case OPT_HELLO_TIMEOUT:
			r = parse_duration("--hello-timeout", optarg, &o->hello_timeout_ms);
			break;
		case OPT_MAX_QUEUED_BYTES:
			r = parse_size("--max-queued-bytes", optarg, &o->max_queued_bytes);
			break;
		case OPT_FD_STORE:
			r = parse_count("--fd-store", optarg, &o->fd_store_max);
			break;
		case OPT_RECLAIM_GRACE:
			r = parse_duration("--reclaim-grace", optarg, &o->reclaim_grace_ms);
			break;
		case OPT_SOCKET_GROUP:
			r = parse_group(optarg, &o->socket_group);
			break;
		case OPT_SOCKET_MODE:
			r = parse_mode(optarg, &o->socket_mode);
			break;
		case OPT_MAX_LEASE_SIZE:
			if (units_parse_size_str(optarg, &o->max_lease_size) < 0) {
				fprintf(stderr,
					"p2pbufd: --max-lease-size: \"%s\" is not a size (bytes, "
					"or a number with K, M, G or T)\n",
					optarg);
				r = -EINVAL;
			}
			break;
		case OPT_SANDBOX:
			if (sandbox_parse_mode(optarg, &o->sandbox) < 0) {
				fprintf(stderr,
					"p2pbufd: --sandbox: \"%s\" is not enforce, log or off\n",
					optarg);
				r = -EINVAL;
			}
			break;
		case OPT_LEASE_LOG_RATE:
			if (strcmp(optarg, "all") == 0)
				audit_lease_lines_per_s = 0;
			else
				r = parse_count("--lease-log-rate", optarg,
						&audit_lease_lines_per_s);
			break;
		case 'v':
			log_max_priority = LOG_DEBUG;
			break;
		case 'q':
			log_max_priority = LOG_WARNING;
			break;
		case 'h':
			usage(stdout);
			return 1;
		case 'V':
			printf("p2pbufd %s\n", PACKAGE_VERSION);
			return 1;
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	/* One user cannot take every slot unless told it may: a quarter each by default. */
	if (!o->max_clients_per_user)
		o->max_clients_per_user = o->max_clients >= 4 ? o->max_clients / 4 : 1;
	if (!o->max_leases_per_user)
		o->max_leases_per_user = o->max_leases >= 4 ? o->max_leases / 4 : 1;
	if (r == 0 && optind < argc) {
		fprintf(stderr, "p2pbufd: unexpected argument \"%s\"\n", argv[optind]);
		return -EINVAL;
	}
	return r;
}

static int load_policy(const char *path, struct policy **ret_policy)
{
	_cleanup_free_ char *err = NULL;
	int r = policy_load(path, &policy_system_resolver, ret_policy, &err);

	if (r < 0)
		log_error("%s", err ? err : strerror(-r));
	return r;
}

/* SIGTERM/SIGINT: every lease ends with reason shutdown and its holder is told before any
 * device closes; the loop then exits and main closes the devices. */
/* SIGUSR2 from ExecStop=+p2pbufd --stop-request: the SIGTERM that follows is a restart. */
static bool restart_announced;

static void on_restart_announced(evutil_socket_t sig, short what, void *arg)
{
	restart_announced = true;
	log_info("systemd restarts p2pbufd: the leases will stay alive for the next instance");
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;

	if (d->stopping)
		return;
	/* A restart with the fd store keeps every lease: the next instance takes them over. */
	if (persist_enabled(d->persist) && restart_announced) {
		log_notice("restarting on %s: %zu lease(s) stay alive for the next instance",
			   strsignal((int)sig), d->leases.count);
		sd_notify(0, "STOPPING=1\nSTATUS=Restarting: leases stay alive");
		daemon_hand_over(d);
		event_base_loopexit(d->base, NULL);
		return;
	}
	log_notice("stopping on %s", strsignal((int)sig));
	sd_notify(0, "STOPPING=1\nSTATUS=Stopping: ending leases");
	daemon_stop(d);
	event_base_loopexit(d->base, NULL);
}

/* SIGHUP: load the policy again; a policy with an error is refused and the current one stays
 * (fail closed). */
static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
	_cleanup_free_ char *err = NULL;

	/* MONOTONIC_USEC lets a systemd that knows Type=notify-reload match this reload to the
	 * request; older ones ignore it. */
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Reloading the policy",
		   (unsigned long long)clock_monotonic_ms() * 1000);
	int r = daemon_reload_file(arg, NULL, &err);
	sd_notify(0, r < 0 ? "READY=1\nSTATUS=Policy reload refused; see the log"
			   : "READY=1\nSTATUS=Policy reloaded");
}

struct signals {
	struct event *ev[4];
	struct event *watchdog;
};

/* WATCHDOG=1 from the loop itself: a loop that stops turning stops the pings, and systemd
 * kills and restarts the daemon (WatchdogSec= in the unit). */
static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	sd_notify(0, "WATCHDOG=1");
}

static int setup_watchdog(struct daemon *d, struct signals *s)
{
	uint64_t usec = 0;
	int r = sd_watchdog_enabled(0, &usec);

	if (r <= 0)
		return r; /* no watchdog asked for (or a malformed WATCHDOG_USEC: ignored) */
	/* Twice per period, so that one late turn of the loop is not a missed ping. */
	struct timeval tv = { .tv_sec = (time_t)(usec / 2 / 1000000),
			      .tv_usec = (suseconds_t)(usec / 2 % 1000000) };
	s->watchdog = event_new(d->base, -1, EV_PERSIST, on_watchdog, d);
	if (!s->watchdog || event_add(s->watchdog, &tv) < 0)
		return -ENOMEM;
	log_info("watchdog: pinging systemd every %llu ms", (unsigned long long)(usec / 2000));
	return 0;
}

static int setup_signals(struct daemon *d, struct signals *s)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR2 };

	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < ARRAY_SIZE(sigs); i++) {
		s->ev[i] = evsignal_new(d->base, sigs[i],
					sigs[i] == SIGHUP    ? on_sighup
					: sigs[i] == SIGUSR2 ? on_restart_announced
							     : on_stop_signal,
					d);
		if (!s->ev[i] || event_add(s->ev[i], NULL) < 0)
			return -ENOMEM;
	}
	return 0;
}

static void free_signals(struct signals *s)
{
	for (size_t i = 0; i < ARRAY_SIZE(s->ev); i++)
		if (s->ev[i])
			event_free(s->ev[i]);
	if (s->watchdog)
		event_free(s->watchdog);
}

static int check_policy(const char *path)
{
	struct policy *p = NULL;
	int r = load_policy(path, &p);

	if (r == 0)
		printf("%s: OK: %zu devices, %zu rules\n", path, p->n_devices, p->n_rules);
	policy_free(p);
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

#define FDS_RESERVED 64	 /* stdio, the loop, the worker, the journal, /proc walks */
#define FDS_PER_DEVICE 8 /* a VFIO device, its group and eventfds; a sim's memfd and FIFOs */

/* Raise the soft fd limit to the hard one (the default soft limit of 1,024 is far below what
 * the default limits need), then refuse to start if the limits do not fit: running out of
 * fds under load would fail requests of every user. Each lease holds the daemon's copy of
 * its buffer, each client its socket and the fds of replies queued for it. */
static int fit_fd_limit(const struct daemon_options *o, size_t n_devices, uint64_t *ret_limit)
{
	uint64_t need = FDS_RESERVED + FDS_PER_DEVICE * (uint64_t)n_devices +
			SERVER_FDS_NEEDED(o->max_clients) + o->max_leases;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	if (rl.rlim_cur < rl.rlim_max) {
		struct rlimit raised = { rl.rlim_max, rl.rlim_max };
		if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
			rl = raised;
		else
			log_warning("cannot raise the fd limit from %llu to %llu: %m",
				    (unsigned long long)rl.rlim_cur,
				    (unsigned long long)rl.rlim_max);
	}
	if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur) {
		log_error(
		    "--max-clients %u and --max-leases %u need up to %llu fds, but the fd limit "
		    "is %llu: lower them, or raise the limit (LimitNOFILE= in the unit, "
		    "ulimit -n)",
		    o->max_clients, o->max_leases, (unsigned long long)need,
		    (unsigned long long)rl.rlim_cur);
		return -EMFILE;
	}
	log_info("serving up to %u leases and %u clients: they need up to %llu fds of the fd "
		 "limit %llu",
		 o->max_leases, o->max_clients, (unsigned long long)need,
		 (unsigned long long)rl.rlim_cur);
	*ret_limit = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : rl.rlim_cur;
	return 0;
}

static int run(struct daemon *d, struct event_base *base)
{
	struct policy *policy = NULL;
	struct signals sigs = {};
	int r = load_policy(d->opt.policy_path, &policy);

	if (r == 0)
		r = fit_fd_limit(&d->opt, policy->n_devices, &d->fd_limit);
	if (r == 0)
		r = daemon_start(d, base, policy);
	else
		policy_free(policy);
	if (r == 0)
		r = setup_signals(d, &sigs);
	if (r == 0)
		r = setup_watchdog(d, &sigs);
	/* Last, once sockets, policy, the worker thread and the devices are set up. */
	if (r == 0)
		r = sandbox_apply(d->opt.sandbox);
	if (r < 0) {
		sd_notifyf(0, "STATUS=Failed to start: %s\nERRNO=%d", strerror(-r), -r);
		daemon_stop(d);
		daemon_finish(d);
		free_signals(&sigs);
		return EXIT_FAILURE;
	}
	unsigned ready = registry_ready(d->registry);
	size_t n = registry_count(d->registry);
	log_notice("p2pbufd %s ready: %u of %zu devices ready, policy %s", PACKAGE_VERSION, ready,
		   n, d->opt.policy_path);
	sd_notifyf(0, "READY=1\nSTATUS=Serving %u of %zu devices", ready, n);
	/* One turn at a time, so that the turn's log lines are written together at its end,
	 * before the loop waits again. */
	log_cork();
	for (;;) {
		int turn = event_base_loop(base, EVLOOP_ONCE);
		log_flush();
		if (turn != 0 || event_base_got_exit(base) || event_base_got_break(base)) {
			r = turn < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
			break;
		}
	}
	log_uncork();
	daemon_stop(d);
	daemon_finish(d);
	free_signals(&sigs);
	return r;
}

int main(int argc, char **argv)
{
	struct daemon d = {};
	bool check_only;
	log_init();
	/* The unit's ExecStop= helper, not a daemon: see manager.h. */
	if (argc == 3 && strcmp(argv[1], "--stop-request") == 0)
		return manager_stop_request(argv[2]);
	int r = parse_options(argc, argv, &d.opt, &check_only);

	if (r != 0)
		return r > 0 ? EXIT_SUCCESS : 2;
	if (check_only)
		return check_policy(d.opt.policy_path);
	struct event_base *base = event_base_new();
	if (!base) {
		log_error("cannot create the event loop: out of memory");
		return EXIT_FAILURE;
	}
	r = run(&d, base);
	event_base_free(base);
	return r;
}
