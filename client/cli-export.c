/* p2pbuf-client export: take a lease and hold it until a signal or its revocation, or hand its
 * fd to a command and release the lease when the command exits. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "cli.h"
#include "units.h"

struct export_args {
	const char *device;
	unsigned bar;
	bool have_bar;
	struct p2pbuf_range *ranges; /* as many as given: the daemon says how many it takes */
	size_t n_ranges;
	bool have_offset; /* an --offset waits for its --length */
	uint64_t offset;
	const char *label;
	char **cmd; /* NULL: hold the lease */
};

/* What the event handler saw about our lease. */
struct hold {
	uint64_t lease_id;
	bool revoking;		  /* told to let go */
	bool ended;		  /* already over: nothing to release */
	struct p2pbuf_event last; /* the last event about it, to report */
};

static void hold_event(struct p2pbuf *conn, const struct p2pbuf_event *ev, void *userdata)
{
	struct hold *h = userdata;

	/* A reconnect (a restart of p2pbufd) keeps the lease: only its own events count. */
	if (ev->type == P2PBUF_EVENT_DEVICE_STATE || ev->type == P2PBUF_EVENT_RECONNECTED ||
	    ev->lease_id != h->lease_id)
		return;
	h->revoking = true;
	h->ended |= ev->type == P2PBUF_EVENT_LEASE_REVOKED;
	h->last = *ev;
	h->last.device = h->last.message = NULL; /* valid during the callback only */
}

enum { OPT_BAR = 0x100, OPT_OFFSET, OPT_LENGTH, OPT_LABEL };

/* How long a holding export waits for a restarting p2pbufd before it gives the lease up. */
#define EXPORT_RECONNECT_MS 30000

static const struct option export_options[] = {
	CLI_COMMON_LONGOPTS,
	{ "bar", required_argument, NULL, OPT_BAR },
	{ "offset", required_argument, NULL, OPT_OFFSET },
	{ "length", required_argument, NULL, OPT_LENGTH },
	{ "label", required_argument, NULL, OPT_LABEL },
	{},
};

static const char *units_error(int r)
{
	return r == -ERANGE ? "too large" : "bytes, K, M, G or T (powers of 1024), or 0x hex";
}

/* Each --length ends a range, which starts at the --offset given before it, or at 0. */
static int add_range_part(struct cli *cli, struct export_args *a, int c, const char *value)
{
	const char *what = c == OPT_OFFSET ? "offset" : "length";
	struct p2pbuf_range *ranges;
	uint64_t v;
	int r = units_parse_offset_str(value, &v);

	if (r < 0)
		return cli_usage(cli, "bad %s '%s': %s", what, value, units_error(r));
	if (c == OPT_OFFSET) {
		if (a->have_offset)
			return cli_usage(cli, "two --offset without a --length between them");
		a->have_offset = true;
		a->offset = v;
		return -1;
	}
	ranges = realloc(a->ranges, (a->n_ranges + 1) * sizeof(*ranges));
	if (!ranges)
		cli_oom();
	a->ranges = ranges;
	a->ranges[a->n_ranges++] = (struct p2pbuf_range){ a->have_offset ? a->offset : 0, v };
	a->have_offset = false;
	return -1;
}

static int export_option(struct cli *cli, int c, const char *arg, void *ctx)
{
	struct export_args *a = ctx;
	uint64_t bar;

	switch (c) {
	case OPT_BAR:
		if (cli_parse_id(arg, &bar) < 0 || bar > 5)
			return cli_usage(cli, "bad BAR '%s' (0 to 5)", arg);
		a->bar = (unsigned)bar;
		a->have_bar = true;
		return -1;
	case OPT_OFFSET:
	case OPT_LENGTH:
		return add_range_part(cli, a, c, arg);
	default:
		a->label = arg;
		return -1;
	}
}

/* Options come before "--"; what follows it is the command to run, untouched, so that getopt
 * never takes the command's options for ours. */
static int parse_export(struct cli *cli, int argc, char **argv, struct export_args *a)
{
	int end = 1, r;

	while (end < argc && strcmp(argv[end], "--") != 0)
		end++;
	if (end < argc) {
		if (end + 1 == argc)
			cli_usage(cli, "no command after --"); /* reported once --json is known */
		a->cmd = &argv[end + 1];
	}
	r = cli_parse_options(cli, end, argv, CLI_COMMON_SHORTOPTS, export_options, export_option,
			      a);
	if (r >= 0)
		return r;
	if (optind == end)
		return cli_usage(cli, "missing DEVICE");
	if (end - optind > 1)
		return cli_usage(cli, "unexpected argument '%s' (put the command to run after --)",
				 argv[optind + 1]);
	a->device = argv[optind];
	if (!a->have_bar)
		return cli_usage(cli, "missing --bar N");
	if (a->have_offset)
		return cli_usage(cli, "--offset needs a --length after it");
	return -1;
}

/* The lease as the daemon lists it, so that export prints the same object as leases does;
 * what we know ourselves if the listing fails (the hold loop then reports why). */
static void print_granted_json(struct p2pbuf *conn, const struct export_args *a, uint64_t id,
			       uint64_t size, int fd)
{
	struct p2pbuf_lease *l = NULL, known = {
		.id = id,
		.device = (char *)a->device,
		.bar = a->bar,
		.n_ranges = a->n_ranges,
		.ranges = a->ranges,
		.size = size,
		.label = (char *)a->label,
		.state = P2PBUF_LEASE_ACTIVE,
		.owner_uid = (uint32_t)getuid(),
		.owner_pid = getpid(),
		.holders = -1,
	};
	const struct p2pbuf_lease *mine = &known;
	struct json j;
	size_t n = 0;

	if (p2pbuf_list_leases(conn, false, &l, &n) == 0)
		for (size_t i = 0; i < n; i++)
			if (l[i].id == id)
				mine = &l[i];
	json_doc_begin(&j);
	json_str(&j, "event", "lease-granted");
	json_i64(&j, "time_ms", clock_realtime_ms());
	json_lease(&j, "lease", mine);
	json_i64(&j, "fd", fd);
	json_doc_end(&j);
	p2pbuf_leases_free(l, n);
}

static void print_granted(const struct cli *cli, struct p2pbuf *conn, const struct export_args *a,
			  uint64_t id, uint64_t size, int fd)
{
	if (cli->json) {
		print_granted_json(conn, a, id, size, fd);
		return;
	}
	_cleanup_free_ char *dev = cli_escape_text(a->device, false);
	printf("lease %" PRIu64 " device %s bar %u size %" PRIu64 " fd %d\n", id, dev, a->bar, size,
	       fd);
	fflush(stdout);
}

static void print_revoked(const struct cli *cli, const struct hold *h)
{
	struct json j;

	if (cli->json)
		json_event(&j, &h->last, clock_realtime_ms());
	else
		printf("lease %" PRIu64 " revoked: %s\n", h->lease_id,
		       p2pbuf_reason_name(h->last.reason));
	fflush(stdout);
}

/* Release at the end of a hold. A lease that already ended has nothing to release. */
static int finish_release(const struct cli *cli, struct p2pbuf *conn, const struct hold *h)
{
	int r;

	if (h->ended)
		return 0;
	r = p2pbuf_release(conn, h->lease_id);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return cli_fail(cli, r, CLI_REQUEST, p2pbuf_last_message(conn),
				"release lease %" PRIu64, h->lease_id);
	return 0;
}

/* The connection is gone, and with it the lease. */
static int lost_connection(const struct cli *cli, int err, const struct hold *h)
{
	return cli_fail(cli, err, CLI_REQUEST, NULL, "lease %" PRIu64 " has ended", h->lease_id);
}

/* Handle a readable connection or queued events. Returns 0, or -errno when it is lost. */
static int pump_events(struct p2pbuf *conn)
{
	int r = p2pbuf_dispatch(conn);

	return r < 0 ? r : 0;
}

/* Hold the lease until a signal or its revocation. */
static int hold_lease(const struct cli *cli, struct p2pbuf *conn, struct hold *h, int fd, int sfd)
{
	struct pollfd pfd[2] = {
		{ .fd = sfd, .events = POLLIN },
		{ .fd = p2pbuf_get_fd(conn), .events = POLLIN },
	};
	int r;

	for (;;) {
		bool sent;
		if (p2pbuf_pending(conn) && (r = pump_events(conn)) < 0)
			break;
		if (h->revoking) {
			/* The revocation is what the caller needs to know, even if the release
			 * that follows it fails (that failure is reported too). */
			close(fd);
			print_revoked(cli, h);
			finish_release(cli, conn, h);
			return EXIT_REVOKED;
		}
		pfd[1].fd = p2pbuf_get_fd(conn); /* a new socket after a reconnect */
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		if ((pfd[0].revents & POLLIN) && cli_read_signal(sfd, &sent) > 0) {
			close(fd);
			return finish_release(cli, conn, h);
		}
		if (pfd[1].revents && (r = pump_events(conn)) < 0)
			break;
	}
	close(fd);
	return lost_connection(cli, r, h);
}

/* In the child: let the command inherit fd, with the signal mask we started with. */
static _Noreturn void exec_command(char **cmd, int fd, const sigset_t *old_mask)
{
	sigprocmask(SIG_SETMASK, old_mask, NULL);
	if (fcntl(fd, F_SETFD, 0) < 0) {
		fprintf(stderr, PROG ": cannot pass the lease fd to %s: %m\n", cmd[0]);
		_exit(126);
	}
	execvp(cmd[0], cmd);
	fprintf(stderr, PROG ": cannot run %s: %m\n", cmd[0]);
	_exit(errno == ENOENT ? 127 : 126);
}

static void set_env_u64(const char *name, uint64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	if (setenv(name, buf, 1) < 0)
		cli_oom();
}

static int child_status(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return EXIT_FAIL;
}

struct child {
	const char *name;
	pid_t pid;
	bool exited;
	int status;
	bool told; /* sent SIGTERM because the lease is going away */
};

static void reap(struct child *c)
{
	int status;

	if (!c->exited && waitpid(c->pid, &status, WNOHANG) == c->pid) {
		c->exited = true;
		c->status = status;
	}
}

/* The lease is going away (revoked, or the daemon is gone): the command holds the only copy
 * of the fd, so it is asked to stop, with SIGTERM, as the manual page documents. */
static void stop_child(struct child *c, const char *why, const struct hold *h)
{
	if (c->told || c->exited)
		return;
	fprintf(stderr, PROG ": lease %" PRIu64 " %s: sending SIGTERM to %s\n", h->lease_id, why,
		c->name);
	kill(c->pid, SIGTERM);
	c->told = true;
}

/* Wait for the child, forwarding SIGINT/SIGTERM and watching the lease. Returns 0 or the
 * connection error that ended the watch. */
static int wait_child(struct p2pbuf *conn, struct hold *h, struct child *c, int sfd)
{
	struct pollfd pfd[2] = {
		{ .fd = sfd, .events = POLLIN },
		{ .fd = p2pbuf_get_fd(conn), .events = POLLIN },
	};
	int err = 0;

	while (!c->exited) {
		int sig;
		bool sent;
		if (pfd[1].fd >= 0 && p2pbuf_pending(conn))
			err = pump_events(conn);
		if (err < 0 && pfd[1].fd >= 0) {
			pfd[1].fd = -1; /* stop polling a dead connection */
			stop_child(c, "ended with the connection to p2pbufd", h);
		}
		if (h->revoking) {
			char why[64];
			snprintf(why, sizeof(why), "is being revoked (%s)",
				 p2pbuf_reason_name(h->last.reason));
			stop_child(c, why, h);
		}
		if (pfd[1].fd >= 0)
			pfd[1].fd = p2pbuf_get_fd(conn); /* a new socket after a reconnect */
		if (poll(pfd, 2, -1) < 0 && errno != EINTR)
			return -errno;
		while ((pfd[0].revents & POLLIN) && (sig = cli_read_signal(sfd, &sent)) > 0) {
			/* A terminal's ^C already reached the command (same process group);
			 * forward only what was sent to us alone. */
			if (sig != SIGCHLD && sent)
				kill(c->pid, sig);
		}
		reap(c);
		if (pfd[1].fd >= 0 && pfd[1].revents && err == 0)
			err = pump_events(conn);
	}
	return err;
}

static int run_command(const struct cli *cli, struct p2pbuf *conn, const struct export_args *a,
		       struct hold *h, int fd, uint64_t size, int sfd, const sigset_t *old_mask)
{
	struct child c = { .name = a->cmd[0] };
	int err;

	set_env_u64("P2PBUF_FD", (uint64_t)fd);
	set_env_u64("P2PBUF_LEASE_ID", h->lease_id);
	set_env_u64("P2PBUF_SIZE", size);
	if (setenv("P2PBUF_DEVICE", a->device, 1) < 0)
		cli_oom();
	fflush(NULL);
	c.pid = fork();
	if (c.pid < 0) {
		err = -errno;
		p2pbuf_lease_release(conn, h->lease_id, fd);
		return cli_fail_local(cli, err, "cannot start %s", a->cmd[0]);
	}
	if (c.pid == 0)
		exec_command(a->cmd, fd, old_mask);
	/* The command holds the lease now; our copy would only keep the buffer alive. */
	close(fd);
	err = wait_child(conn, h, &c, sfd);
	if (err < 0)
		return lost_connection(cli, err, h);
	if (h->revoking) {
		finish_release(cli, conn, h);
		return EXIT_REVOKED;
	}
	err = finish_release(cli, conn, h);
	return err > 0 ? err : child_status(c.status);
}

/* Keep the lease fd off 0-2, which a command expects to be its stdio. */
static int move_fd_above_stdio(int fd)
{
	int nfd;

	if (fd > STDERR_FILENO)
		return fd;
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
	close(fd);
	return nfd < 0 ? -errno : nfd;
}

static int do_export(const struct cli *cli, struct p2pbuf *conn, const struct export_args *a,
		     int sfd, const sigset_t *old_mask)
{
	struct hold h = { 0 };
	uint64_t size;
	int fd;

	p2pbuf_set_event_handler(conn, hold_event, &h);
	/* A holding export keeps its lease through a restart of p2pbufd. */
	p2pbuf_set_reconnect(conn, EXPORT_RECONNECT_MS);
	fd = p2pbuf_export(conn, a->device, a->bar, a->ranges, a->n_ranges, a->label, &h.lease_id,
			   &size);
	if (fd < 0)
		return cli_fail(cli, fd, CLI_REQUEST, p2pbuf_last_message(conn), "export %s bar %u",
				a->device, a->bar);
	fd = move_fd_above_stdio(fd);
	if (fd < 0) {
		p2pbuf_release(conn, h.lease_id);
		return cli_fail_local(cli, fd, "cannot move the lease fd");
	}
	if (a->cmd)
		return run_command(cli, conn, a, &h, fd, size, sfd, old_mask);
	print_granted(cli, conn, a, h.lease_id, size, fd);
	return hold_lease(cli, conn, &h, fd, sfd);
}

static int export_run(struct cli *cli, int argc, char **argv)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGCHLD };
	_cleanup_conn_ struct p2pbuf *conn = NULL;
	_cleanup_close_ int sfd = -1;
	struct export_args a = { 0 };
	sigset_t old_mask;
	int r = parse_export(cli, argc, argv, &a);

	if (r >= 0)
		goto out;
	/* Before the export: a signal between getting the lease and watching for signals
	 * must still end in a clean release. */
	sfd = cli_signal_fd(sigs, ARRAY_SIZE(sigs), &old_mask);
	if (sfd < 0) {
		r = cli_fail_local(cli, sfd, "export: cannot set up signal handling");
		goto out;
	}
	r = cli_connect(cli, &conn);
	if (r == 0)
		r = do_export(cli, conn, &a, sfd, &old_mask);
out:
	free(a.ranges);
	return r;
}

const struct verb verb_export = {
	.name = "export",
	.synopsis = "DEVICE --bar N [[--offset X] --length Y]... [--label L]\n"
		    "                     [-- CMD [ARG]...]",
	.summary = "take a lease on a range of a BAR and hold it or hand it to CMD",
	.help =
	    "Options (before --):\n"
	    "      --bar N        the BAR, 0 to 5 (required)\n"
	    "      --offset X     where the next range starts (default 0)\n"
	    "      --length Y     one range of Y bytes; repeat for more. Without any, the\n"
	    "                     whole BAR\n"
	    "      --label L      name the lease in listings and logs\n"
	    "\n"
	    "X and Y: decimal bytes, or with K, M, G or T (powers of 1024; KiB... too; any\n"
	    "case), or 0x hexadecimal: 4096, 4K, 4kib, 0x1000.\n"
	    "\n"
	    "Without CMD: print the lease, hold it until SIGINT or SIGTERM (release it, exit 0)\n"
	    "or its revocation (exit 10).\n"
	    "With CMD: run CMD with the fd inherited and P2PBUF_FD, P2PBUF_LEASE_ID,\n"
	    "P2PBUF_SIZE and P2PBUF_DEVICE set; send it SIGTERM if the lease is revoked;\n"
	    "release the lease when it exits, and exit with its status.\n",
	.run = export_run,
};
