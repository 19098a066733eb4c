/* p2pbuf-client: the command-line face of libp2pbuf, for operators and scripts. It uses only
 * the public API of p2pbuf.h, so that it doubles as a test of what applications can do.
 *
 * This file holds what every verb shares: the verb table and dispatch, the common options
 * (parsed with getopt_long before and after the verb), the help texts, connecting, and the
 * signal plumbing of the verbs that wait. Each verb group lives in a cli-*.c of its own. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cli.h"

static int help_run(struct cli *cli, int argc, char **argv);

static const struct verb verb_help = {
	.name = "help",
	.synopsis = "[COMMAND]",
	.summary = "show the help of COMMAND, or this help",
	.help = "",
	.run = help_run,
};

static const struct verb *const verbs[] = {
	&verb_devices, &verb_leases, &verb_export, &verb_release, &verb_watch,	&verb_reset,
	&verb_revoke,  &verb_status, &verb_reload, &verb_policy,  &verb_doctor, &verb_help,
};

static const struct verb *find_verb(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(verbs); i++)
		if (!strcmp(verbs[i]->name, name))
			return verbs[i];
	return NULL;
}

static const char common_options_help[] =
    "  -s, --socket PATH  the daemon's socket (default: $P2PBUF_SOCKET, else\n"
    "                     " P2PBUF_DEFAULT_SOCKET ")\n"
    "  -j, --json         JSON output, errors included (see p2pbuf-client(1))\n"
    "  -h, --help         show this help\n";

static void global_help(FILE *f)
{
	fputs("Usage: " PROG " [--socket PATH] [--json] COMMAND [OPTIONS] [ARGS]\n"
	      "       " PROG " help COMMAND\n"
	      "\n"
	      "Ask p2pbufd for dma-buf file descriptors covering ranges of PCI BARs, and manage\n"
	      "them.\n"
	      "\n"
	      "Commands:\n",
	      f);
	for (size_t i = 0; i < ARRAY_SIZE(verbs); i++)
		fprintf(f, "  %-9s %s\n", verbs[i]->name, verbs[i]->summary);
	fputs("\nOptions (before or after the command):\n", f);
	fputs(common_options_help, f);
	fputs("  -V, --version      show the version (before the command)\n"
	      "\n"
	      "Sizes and offsets: decimal bytes, or with K, M, G or T (powers of 1024; KiB, MiB,\n"
	      "... too; any case); offsets and lengths may also be 0x hexadecimal.\n"
	      "\n"
	      "Exit status:\n",
	      f);
	cli_print_exit_statuses(f);
	fputs("\nRun '" PROG " help COMMAND' or '" PROG " COMMAND --help' for its options.\n", f);
}

void cli_help(FILE *f, const struct verb *verb)
{
	if (!verb) {
		global_help(f);
		return;
	}
	fprintf(f, "Usage: " PROG " %s %s\n\n%c%s.\n", verb->name, verb->synopsis,
		toupper((unsigned char)verb->summary[0]), verb->summary + 1);
	if (verb->help[0])
		fprintf(f, "\n%s", verb->help);
	fprintf(f, "\nCommon options:\n%s", common_options_help);
}

/* "-x" or "--long" as the user wrote it, for a message about it. */
static int bad_option(struct cli *cli, char **argv, const char *what)
{
	const char *arg = argv[optind - 1];

	if (optopt && strncmp(arg, "--", 2) != 0)
		return cli_usage(cli, "option '-%c' %s", optopt, what);
	return cli_usage(cli, "option '%s' %s", arg, what);
}

int cli_parse_options(struct cli *cli, int argc, char **argv, const char *shortopts,
		      const struct option *longopts, cli_option_fn fn, void *ctx)
{
	int c;

	/* Our own messages, which name the verb and say how to get its help. */
	opterr = 0;
	/* GNU getopt: 0 starts over, for the verb's own arguments, which may come before or
	 * after its operands ("release 5 --json"). */
	optind = 0;
	while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		int r = -1;
		if (c == 's')
			cli->socket = optarg;
		else if (c == 'j')
			cli->json = true;
		else if (c == 'h')
			r = (cli_help(stdout, cli->verb), 0);
		else if (c == '?')
			bad_option(cli, argv, "is unknown");
		else if (c == ':')
			bad_option(cli, argv, "needs a value");
		else if (!cli->usage_error[0]) /* after the first error, only look for --json */
			r = fn(cli, c, optarg, ctx);
		if (r == 0)
			return 0;
	}
	return cli->usage_error[0] ? EXIT_USAGE : -1;
}

static const struct option common_only[] = { CLI_COMMON_LONGOPTS, {} };

int cli_parse_operands(struct cli *cli, int argc, char **argv, int min, int max)
{
	int r = cli_parse_options(cli, argc, argv, CLI_COMMON_SHORTOPTS, common_only, NULL, NULL);

	if (r >= 0)
		return r;
	if (argc - optind < min)
		return cli_usage(cli, "missing %s", cli->verb->synopsis);
	if (argc - optind > max)
		return cli_usage(cli, "unexpected argument '%s'", argv[optind + max]);
	return -1;
}

int cli_start(struct cli *cli, int argc, char **argv, int operands, struct p2pbuf **ret_conn)
{
	int r = cli_parse_operands(cli, argc, argv, operands, operands);

	if (r >= 0)
		return r;
	r = cli_connect(cli, ret_conn);
	return r ? r : -1;
}

const char *cli_socket_path(const struct cli *cli)
{
	const char *env = getenv("P2PBUF_SOCKET");

	if (cli->socket && cli->socket[0])
		return cli->socket;
	return env && env[0] ? env : P2PBUF_DEFAULT_SOCKET;
}

int cli_connect(struct cli *cli, struct p2pbuf **ret_conn)
{
	const char *path = cli_socket_path(cli);
	char detail[64] = "";
	int r = p2pbuf_connect(path, ret_conn);

	if (r == 0)
		return 0;
	if (r == -EPROTONOSUPPORT)
		snprintf(detail, sizeof(detail), "this client speaks protocol %d.%d",
			 P2PBUF_PROTO_VERSION_MAJOR, P2PBUF_PROTO_VERSION_MINOR);
	return cli_fail(cli, r, CLI_CONNECT, detail, "cannot connect to %s", path);
}

int cli_parse_id(const char *s, uint64_t *ret_id)
{
	uint64_t v = 0;

	if (!s[0])
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*ret_id = v;
	return 0;
}

int cli_signal_fd(const int *sigs, size_t n, sigset_t *ret_old)
{
	sigset_t set;
	int fd;

	sigemptyset(&set);
	for (size_t i = 0; i < n; i++)
		sigaddset(&set, sigs[i]);
	if (sigprocmask(SIG_BLOCK, &set, ret_old) < 0)
		return -errno;
	fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	return fd < 0 ? -errno : fd;
}

int cli_read_signal(int sfd, bool *ret_sent)
{
	struct signalfd_siginfo si;

	if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return 0;
	*ret_sent = si.ssi_code == SI_USER || si.ssi_code == SI_QUEUE;
	return (int)si.ssi_signo;
}

static int help_run(struct cli *cli, int argc, char **argv)
{
	const struct verb *verb = NULL;
	int r = cli_parse_operands(cli, argc, argv, 0, 1);

	if (r >= 0)
		return r;
	if (optind < argc && !(verb = find_verb(argv[optind])))
		return cli_usage(cli, "unknown command '%s'", argv[optind]);
	cli_help(stdout, verb);
	return 0;
}

static int main_option(struct cli *cli, int c, const char *arg, void *ctx)
{
	/* The only option of the command line alone: --version. */
	printf(PROG " %s (protocol %d.%d)\n", PACKAGE_VERSION, P2PBUF_PROTO_VERSION_MAJOR,
	       P2PBUF_PROTO_VERSION_MINOR);
	return 0;
}

static const struct option main_options[] = {
	CLI_COMMON_LONGOPTS,
	{ "version", no_argument, NULL, 'V' },
	{},
};

/* Anything written to stdout must have arrived, or the exit status must say otherwise. */
static int check_stdout(int r)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, PROG ": cannot write output: %m\n");
		return r ? r : EXIT_FAIL;
	}
	return r;
}

int main(int argc, char **argv)
{
	struct cli cli = { 0 };
	/* "+": stop at the verb; what follows it is the verb's to parse. */
	int r = cli_parse_options(&cli, argc, argv, "+" CLI_COMMON_SHORTOPTS "V", main_options,
				  main_option, NULL);

	if (r < 0 && optind >= argc)
		r = cli_usage(&cli, "missing COMMAND");
	if (r < 0) {
		argc -= optind;
		argv += optind;
		cli.verb = find_verb(argv[0]);
		r = cli.verb ? cli.verb->run(&cli, argc, argv)
			     : cli_usage(&cli, "unknown command '%s'", argv[0]);
	}
	cli_report_usage(&cli);
	return check_stdout(r);
}
