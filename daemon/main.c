/* p2pbufd: startup order (options, policy, socket, devices, loop), signals, shutdown. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/thread.h>
#include <systemd/sd-daemon.h>

#include "daemon.h"
#include "log.h"
#include "clock.h"
#include "macro.h"
#include "units.h"

#define DEFAULT_POLICY "/etc/p2pbuf/policy"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: p2pbufd [OPTIONS]\n"
		"Hand out dma-buf fds for ranges of PCI BARs to local clients, under a policy.\n\n"
		"  -p, --policy FILE              policy file (default " DEFAULT_POLICY ")\n"
		"  -s, --socket PATH              listen on PATH (default: the socket systemd\n"
		"                                 passes, else /run/p2pbufd/p2pbufd.sock)\n"
		"      --check-policy             parse the policy, report, and exit\n"
		"      --max-clients N            connections at once (default 256)\n"
		"      --max-leases N             leases in the whole daemon (default 4096)\n"
		"      --max-leases-per-client N  leases per connection (default 64)\n"
		"      --max-lease-size BYTES     largest lease, e.g. 64M (K/M/G/T: 1024s) "
		"(default: none)\n"
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
	OPT_MAX_LEASE_SIZE,
	OPT_SANDBOX,
};

/* Returns 0 to run, 1 to exit successfully (help, version), -EINVAL on a usage error. */
static int parse_options(int argc, char **argv, struct options *o, bool *ret_check)
{
	static const struct option longopts[] = {
		{ "policy", required_argument, NULL, 'p' },
		{ "socket", required_argument, NULL, 's' },
		{ "check-policy", no_argument, NULL, OPT_CHECK_POLICY },
		{ "max-clients", required_argument, NULL, OPT_MAX_CLIENTS },
		{ "max-leases", required_argument, NULL, OPT_MAX_LEASES },
		{ "max-leases-per-client", required_argument, NULL, OPT_MAX_LEASES_PER_CLIENT },
		{ "max-lease-size", required_argument, NULL, OPT_MAX_LEASE_SIZE },
		{ "sandbox", required_argument, NULL, OPT_SANDBOX },
		{ "verbose", no_argument, NULL, 'v' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{},
	};
	int c, r = 0;

	*o = (struct options){ .policy_path = DEFAULT_POLICY,
			       .max_clients = 256,
			       .max_leases = 4096,
			       .max_leases_per_client = 64 };
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
	if (r == 0 && optind < argc) {
		fprintf(stderr, "p2pbufd: unexpected argument \"%s\"\n", argv[optind]);
		return -EINVAL;
	}
	return r;
}

static int load_policy(struct daemon *d)
{
	_cleanup_free_ char *err = NULL;
	int r = policy_load(d->opt.policy_path, &policy_system_resolver, &d->policy, &err);

	if (r < 0) {
		log_error("%s", err ? err : strerror(-r));
		return r;
	}
	d->rule_leases = calloc(d->policy->n_rules + 1, sizeof(*d->rule_leases));
	return d->rule_leases ? 0 : -ENOMEM;
}

/* SIGTERM/SIGINT: every lease ends with reason shutdown and its holder is told before any
 * device closes; the loop then exits and main closes the devices. */
static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	struct lease *l;

	if (d->stopping)
		return;
	d->stopping = true;
	log_notice("stopping on %s", strsignal((int)sig));
	sd_notify(0, "STOPPING=1\nSTATUS=Stopping: ending leases");
	while ((l = TAILQ_FIRST(&d->leases.all)))
		revoke_end_lease(d, l, P2PBUF__REASON__REASON_SHUTDOWN);
	server_stop(d);
	event_base_loopexit(d->base, NULL);
}

/* Whether two declarations name the same device the same way (options may differ). */
static bool same_device(const struct policy_device *a, const struct policy_device *b)
{
	return strcmp(a->name, b->name) == 0 && a->kind == b->kind && strcmp(a->pci, b->pci) == 0 &&
	       memcmp(a->sim_bar_size, b->sim_bar_size, sizeof(a->sim_bar_size)) == 0 &&
	       memcmp(&a->sim_msix_table, &b->sim_msix_table, sizeof(a->sim_msix_table)) == 0 &&
	       memcmp(&a->sim_msix_pba, &b->sim_msix_pba, sizeof(a->sim_msix_pba)) == 0;
}

static const char *reload_refusal(const struct daemon *d, const struct policy *p)
{
	if (p->n_devices != d->n_devices)
		return "the set of devices changed";
	for (size_t i = 0; i < p->n_devices; i++)
		if (!same_device(&p->devices[i], &d->devices[i].decl))
			return "a device declaration changed";
	return NULL;
}

/* SIGHUP: load the policy again; a policy with an error, or one that changes which devices
 * the daemon owns, is refused and the current one stays (fail closed). Live leases are
 * re-checked against the new rules. */
static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	struct policy *p = NULL;
	_cleanup_free_ char *err = NULL;

	sd_notify(0, "RELOADING=1\nSTATUS=Reloading the policy");
	int r = policy_load(d->opt.policy_path, &policy_system_resolver, &p, &err);
	const char *why = r < 0 ? (err ? err : strerror(-r)) : reload_refusal(d, p);
	if (why) {
		log_error("reload refused, keeping the current policy: %s%s", why,
			  r < 0 ? "" : " (restart p2pbufd to change devices)");
		policy_free(p);
		sd_notify(0, "READY=1\nSTATUS=Policy reload refused; see the log");
		return;
	}
	struct policy *old = d->policy;
	d->policy = p;
	for (size_t i = 0; i < d->n_devices; i++)
		d->devices[i].decl = p->devices[i];
	revoke_recheck_policy(d);
	policy_free(old);
	log_notice("policy %s reloaded: %zu devices, %zu rules", d->opt.policy_path, p->n_devices,
		   p->n_rules);
	sd_notify(0, "READY=1\nSTATUS=Policy reloaded");
}

static int setup_signals(struct daemon *d)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };

	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < ARRAY_SIZE(sigs); i++) {
		d->ev_signals[i] = evsignal_new(d->base, sigs[i],
						sigs[i] == SIGHUP ? on_sighup : on_stop_signal, d);
		if (!d->ev_signals[i] || event_add(d->ev_signals[i], NULL) < 0)
			return -ENOMEM;
	}
	return 0;
}

static int daemon_init(struct daemon *d)
{
	int r;

	TAILQ_INIT(&d->conns);
	TAILQ_INIT(&d->dead);
	d->listen_fd = -1;
	d->page_size = device_page_size();
	d->started_ms = clock_monotonic_ms();
	if (evthread_use_pthreads() < 0 || !(d->base = event_base_new()))
		return -ENOMEM;
	r = revoke_init(d);
	if (r < 0)
		return r;
	r = load_policy(d);
	if (r < 0)
		return r;
	r = lease_table_init(&d->leases, d->opt.max_leases);
	if (r < 0)
		return r;
	r = setup_signals(d);
	if (r < 0)
		return r;
	/* The socket first, so clients queue in its backlog while devices open. */
	r = server_listen(d);
	if (r < 0)
		return r;
	r = worker_new(d->base, &d->worker);
	if (r < 0)
		return r;
	return registry_open_all(d);
}

static void daemon_fini(struct daemon *d)
{
	if (d->ev_listen || d->listen_fd >= 0)
		server_stop(d);
	/* Finished worker jobs run once more. */
	if (d->base)
		event_base_loop(d->base, EVLOOP_NONBLOCK);
	worker_free(d->worker);
	revoke_fini(d);
	registry_close_all(d);
	lease_table_fini(&d->leases);
	for (size_t i = 0; i < ARRAY_SIZE(d->ev_signals); i++)
		if (d->ev_signals[i])
			event_free(d->ev_signals[i]);
	if (d->base)
		event_base_free(d->base);
	policy_free(d->policy);
	free(d->rule_leases);
}

static unsigned count_ready(const struct daemon *d)
{
	unsigned n = 0;

	for (size_t i = 0; i < d->n_devices; i++)
		n += d->devices[i].state == P2PBUF__DEVICE_STATE_KIND__DEVICE_READY;
	return n;
}

int main(int argc, char **argv)
{
	struct daemon d = {};
	bool check_only;
	int r = parse_options(argc, argv, &d.opt, &check_only);

	if (r != 0)
		return r > 0 ? EXIT_SUCCESS : 2;
	if (check_only) {
		r = load_policy(&d);
		if (r == 0)
			printf("%s: OK: %zu devices, %zu rules\n", d.opt.policy_path,
			       d.policy->n_devices, d.policy->n_rules);
		policy_free(d.policy);
		free(d.rule_leases);
		return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
	}
	r = daemon_init(&d);
	if (r == 0)
		r = sandbox_apply(d.opt.sandbox);
	if (r < 0) {
		sd_notifyf(0, "STATUS=Failed to start: %s\nERRNO=%d", strerror(-r), -r);
		daemon_fini(&d);
		return EXIT_FAILURE;
	}
	log_notice("p2pbufd %s ready: %u of %zu devices ready, policy %s", PACKAGE_VERSION,
		   count_ready(&d), d.n_devices, d.opt.policy_path);
	sd_notifyf(0, "READY=1\nSTATUS=Serving %u of %zu devices", count_ready(&d), d.n_devices);
	event_base_dispatch(d.base);
	daemon_fini(&d);
	return EXIT_SUCCESS;
}
