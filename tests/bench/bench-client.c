/* bench-client: the measuring side of tests/bench, one subcommand per measurement. Driven by
 * tests/bench/run.sh; every result is a "key value" line on stdout, every failure exit 1.
 *
 *   grant     N threads export+release back to back (p2pbufd or bench-baseline); with
 *             --probe-ms, one more connection does it once every so many ms, timed, to
 *             show how long the server keeps a bystander waiting meanwhile; with --pid,
 *             the server's CPU per cycle
 *   close     a process holding N leases exits: time until the daemon's fd count is back
 *   reset     reset a device with N leases: time until the holder has every LeaseRevoked
 *   letgo     N cooperative holders told to let go (--mode revoke|reload): time until all
 *             ended, and whether the device was cycled
 *   leases    export until something stops us: the daemon's memory per lease
 *   coldstart start -- DAEMON ARGS... until its first Hello is answered
 *   wait      until the server at --socket answers Hello */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static const struct {
	const char *name;
	int (*run)(const struct bench_opts *o);
} commands[] = {
	{ "grant", bench_grant }, { "close", bench_close },   { "reset", bench_reset },
	{ "letgo", bench_letgo }, { "leases", bench_leases }, { "coldstart", bench_coldstart },
	{ "wait", bench_wait },
};

enum {
	OPT_IDLE_PROCS = 256,
	OPT_IDLE_FDS,
	OPT_TIMEOUT_MS,
	OPT_RELOAD,
	OPT_PROBE_MS,
};

static unsigned long number(const char *opt, const char *s)
{
	char *end;
	unsigned long v = strtoul(s, &end, 0);

	if (!*s || *end)
		bench_die("%s: \"%s\" is not a number", opt, s);
	return v;
}

static void parse(int argc, char **argv, struct bench_opts *o)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "device", required_argument, NULL, 'd' },
		{ "bar", required_argument, NULL, 'b' },
		{ "length", required_argument, NULL, 'l' },
		{ "clients", required_argument, NULL, 'c' },
		{ "seconds", required_argument, NULL, 't' },
		{ "pid", required_argument, NULL, 'p' },
		{ "count", required_argument, NULL, 'n' },
		{ "threads", required_argument, NULL, 'T' },
		{ "mode", required_argument, NULL, 'm' },
		{ "policy", required_argument, NULL, 'P' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "idle-procs", required_argument, NULL, OPT_IDLE_PROCS },
		{ "idle-fds", required_argument, NULL, OPT_IDLE_FDS },
		{ "timeout-ms", required_argument, NULL, OPT_TIMEOUT_MS },
		{ "reload-from", required_argument, NULL, OPT_RELOAD },
		{ "probe-ms", required_argument, NULL, OPT_PROBE_MS },
		{},
	};
	int c;

	while ((c = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			o->socket = optarg;
			break;
		case 'd':
			o->device = optarg;
			break;
		case 'b':
			o->bar = (unsigned)number("--bar", optarg);
			break;
		case 'l':
			o->length = number("--length", optarg);
			break;
		case 'c':
			o->clients = (unsigned)number("--clients", optarg);
			break;
		case 't':
			o->seconds = strtod(optarg, NULL);
			break;
		case 'p':
			o->pid = (pid_t)number("--pid", optarg);
			break;
		case 'n':
			o->count = (unsigned)number("--count", optarg);
			break;
		case 'T':
			o->threads = (unsigned)number("--threads", optarg);
			break;
		case 'm':
			o->mode = optarg;
			break;
		case 'P':
			o->policy = optarg;
			break;
		case 'r':
			o->rounds = (unsigned)number("--rounds", optarg);
			break;
		case OPT_IDLE_PROCS:
			o->idle_procs = (unsigned)number("--idle-procs", optarg);
			break;
		case OPT_IDLE_FDS:
			o->idle_fds = (unsigned)number("--idle-fds", optarg);
			break;
		case OPT_TIMEOUT_MS:
			o->timeout_ms = (unsigned)number("--timeout-ms", optarg);
			break;
		case OPT_RELOAD:
			o->reload = optarg;
			break;
		case OPT_PROBE_MS:
			o->probe_ms = (unsigned)number("--probe-ms", optarg);
			break;
		default:
			bench_die("unknown option (see the comment at the top of bench-client.c)");
		}
	}
	o->argv = optind < argc ? argv + optind : NULL;
}

int main(int argc, char **argv)
{
	struct bench_opts o = { .device = "bench0",
				.length = 4096,
				.clients = 1,
				.seconds = 1,
				.count = 1,
				.threads = 1,
				.mode = "revoke",
				.timeout_ms = 30000,
				.rounds = 1 };

	if (argc < 2)
		bench_die("usage: bench-client COMMAND --socket PATH [OPTIONS]");
	parse(argc - 1, argv + 1, &o);
	if (!o.socket)
		bench_die("--socket PATH is required");
	if (strcmp(o.mode, "reload") == 0 && (!o.policy || !o.reload || o.pid <= 0))
		bench_die("--mode reload needs --policy, --reload-from and --pid");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(&o) < 0;
	bench_die("unknown command \"%s\"", argv[1]);
}
