/* p2pbuf-client leases, release and watch: what a user holds, letting go of it, and the events
 * about it. export, which takes a lease, has a file of its own (cli-export.c). */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "clock.h"
#include "cli.h"
#include "units.h"

/* Ranges shown in a table row before "+N more" (--json always has them all). */
#define TABLE_MAX_RANGES 2

/* "0x0+0x1000,0x2000+0x1000,+3 more": TABLE_MAX_RANGES ranges of at most 37 bytes fit buf. */
static void format_ranges(const struct p2pbuf_lease *l, char *buf, size_t len)
{
	size_t used = 0;
	int n;

	snprintf(buf, len, "%s", l->n_ranges ? "" : "-");
	for (size_t i = 0; i < l->n_ranges && i < TABLE_MAX_RANGES && used < len; i++) {
		n = snprintf(buf + used, len - used, "%s0x%" PRIx64 "+0x%" PRIx64, i ? "," : "",
			     l->ranges[i].offset, l->ranges[i].length);
		used += n > 0 ? (size_t)n : 0;
	}
	if (l->n_ranges > TABLE_MAX_RANGES && used < len)
		snprintf(buf + used, len - used, ",+%zu more", l->n_ranges - TABLE_MAX_RANGES);
}

static void lease_row(struct table *t, const struct p2pbuf_lease *l)
{
	char size[UNITS_FORMAT_MAX], expires[64] = "-", ranges[128];

	format_ranges(l, ranges, sizeof(ranges));
	if (l->expires_ms != 0)
		cli_format_time(l->expires_ms, expires, sizeof(expires));
	table_cell(t, "%" PRIu64, l->id);
	table_cell(t, "%s", l->device);
	table_cell(t, "%u", l->bar);
	table_cell(t, "%s", ranges);
	table_cell(t, "%s", units_format_size(l->size, size));
	if (l->state == P2PBUF_LEASE_ACTIVE || l->reason == P2PBUF_REASON_UNSPECIFIED)
		table_cell(t, "%s", p2pbuf_lease_state_name(l->state));
	else
		table_cell(t, "%s(%s)%s", p2pbuf_lease_state_name(l->state),
			   p2pbuf_reason_name(l->reason), l->lingering ? ",lingering" : "");
	if (l->holders < 0)
		table_cell(t, "?");
	else
		table_cell(t, "%d", l->holders);
	table_cell(t, "%" PRIu32 "/%jd", l->owner_uid, (intmax_t)l->owner_pid);
	table_cell(t, "%s", l->owner_unit ? l->owner_unit : "-");
	table_cell(t, "%s", expires);
	table_cell(t, "%s", l->label ? l->label : "-");
	table_cell(t, "%s", l->rule && l->rule[0] ? l->rule : "-");
}

static void leases_print(const struct cli *cli, const struct p2pbuf_lease *l, size_t n)
{
	static const char *const cols[] = { "ID",   "DEVICE",  "BAR",	  "RANGES",
					    "SIZE", "STATE",   "HOLDERS", "OWNER",
					    "UNIT", "EXPIRES", "LABEL",	  "RULE" };
	struct table t = { 0 };
	struct json j;

	if (cli->json) {
		json_doc_begin(&j);
		json_begin(&j, "leases", '[');
		for (size_t i = 0; i < n; i++)
			json_lease(&j, NULL, &l[i]);
		json_end(&j, ']');
		json_doc_end(&j);
		return;
	}
	table_header(&t, cols, ARRAY_SIZE(cols));
	for (size_t i = 0; i < n; i++)
		lease_row(&t, &l[i]);
	table_print(&t);
	table_free(&t);
}

enum { OPT_ALL = 0x100 };

static int leases_option(struct cli *cli, int c, const char *arg, void *ctx)
{
	bool *all = ctx;

	*all = true; /* the only option of its own: --all */
	return -1;
}

static int leases_run(struct cli *cli, int argc, char **argv)
{
	static const struct option options[] = {
		CLI_COMMON_LONGOPTS,
		{ "all", no_argument, NULL, OPT_ALL },
		{},
	};
	_cleanup_conn_ struct p2pbuf *conn = NULL;
	struct p2pbuf_lease *l;
	bool all = false;
	size_t n;
	int r =
	    cli_parse_options(cli, argc, argv, CLI_COMMON_SHORTOPTS, options, leases_option, &all);

	if (r >= 0)
		return r;
	if (optind < argc)
		return cli_usage(cli, "unexpected argument '%s'", argv[optind]);
	r = cli_connect(cli, &conn);
	if (r)
		return r;
	r = p2pbuf_list_leases(conn, all, &l, &n);
	if (r < 0)
		return cli_fail(cli, r, CLI_REQUEST, p2pbuf_last_message(conn), "leases");
	leases_print(cli, l, n);
	p2pbuf_leases_free(l, n);
	return 0;
}

const struct verb verb_leases = {
	.name = "leases",
	.synopsis = "[--all]",
	.summary = "list your leases",
	.help = "Options:\n"
		"      --all          every lease, not only yours (admins and observers)\n"
		"\n"
		"Columns: ID, DEVICE, BAR, RANGES (OFFSET+LENGTH), SIZE, STATE (with the reason\n"
		"once revoking or ended), HOLDERS (references outside the daemon, ? if unknown),\n"
		"OWNER (UID/PID), EXPIRES (UTC, - for no time to live), LABEL, RULE (the policy\n"
		"file:line that allowed it). On a simulated device HOLDERS of a revoking lease is\n"
		"the daemon's last count, which cannot see a buffer in flight in a socket.\n",
	.run = leases_run,
};

void cli_print_lease_action(const struct cli *cli, const char *action, uint64_t id)
{
	struct json j;

	json_doc_begin(&j);
	json_str(&j, "action", action);
	json_begin(&j, "lease", '{');
	json_u64(&j, "id", id);
	json_end(&j, '}');
	json_doc_end(&j);
}

int cli_lease_verb(struct cli *cli, int argc, char **argv,
		   int (*request)(struct p2pbuf *, uint64_t), unsigned where, uint64_t *ret_id,
		   struct p2pbuf **ret_conn)
{
	uint64_t id;
	int r = cli_start(cli, argc, argv, 1, ret_conn);

	if (r >= 0)
		return r;
	r = cli_parse_id(argv[optind], &id);
	if (r < 0)
		return cli_usage(cli, "bad lease ID '%s' (digits only)", argv[optind]);
	r = request(*ret_conn, id);
	if (r < 0)
		return cli_fail(cli, r, where, p2pbuf_last_message(*ret_conn), "%s lease %" PRIu64,
				cli->verb->name, id);
	*ret_id = id;
	return -1;
}

static int release_run(struct cli *cli, int argc, char **argv)
{
	_cleanup_conn_ struct p2pbuf *conn = NULL;
	uint64_t id;
	int r = cli_lease_verb(cli, argc, argv, p2pbuf_release, CLI_REQUEST, &id, &conn);

	if (r >= 0)
		return r;
	if (cli->json)
		cli_print_lease_action(cli, "release", id);
	else
		printf("lease %" PRIu64 " released\n", id);
	return 0;
}

const struct verb verb_release = {
	.name = "release",
	.synopsis = "ID",
	.summary = "release one of your leases",
	.help = "Close every copy of its fd first: the lease ends only when nobody holds the\n"
		"buffer any more.\n",
	.run = release_run,
};

/* ---- watch ---- */

static void watch_text(const struct p2pbuf_event *ev, const char *now)
{
	char deadline[64];

	switch (ev->type) {
	case P2PBUF_EVENT_LEASE_REVOKING:
		cli_format_time(ev->deadline_ms, deadline, sizeof(deadline));
		printf("%s lease %" PRIu64 " revoking reason=%s deadline=%s\n", now, ev->lease_id,
		       p2pbuf_reason_name(ev->reason), deadline);
		break;
	case P2PBUF_EVENT_LEASE_REVOKED:
		printf("%s lease %" PRIu64 " revoked reason=%s\n", now, ev->lease_id,
		       p2pbuf_reason_name(ev->reason));
		break;
	case P2PBUF_EVENT_DEVICE_STATE: {
		_cleanup_free_ char *dev = cli_escape_text(ev->device, false);
		printf("%s device %s state=%s gen=%" PRIu32, now, dev,
		       p2pbuf_device_state_name(ev->state), ev->generation);
		if (ev->message) {
			_cleanup_free_ char *msg = cli_escape_text(ev->message, true);
			printf(" message=\"%s\"", msg);
		}
		putchar('\n');
		break;
	}
	case P2PBUF_EVENT_RECONNECTED:
		printf("%s reconnected to p2pbufd: %u lease(s) taken back\n", now, ev->reclaimed);
		break;
	}
}

static void watch_event(struct p2pbuf *conn, const struct p2pbuf_event *ev, void *userdata)
{
	const struct cli *cli = userdata;
	int64_t now_ms = clock_realtime_ms();
	char now[64];
	struct json j;

	if (cli->json) {
		json_event(&j, ev, now_ms);
		return;
	}
	cli_format_time(now_ms, now, sizeof(now));
	watch_text(ev, now);
}

/* The first line: the subscription is in place, so a reader (a test, a script) knows that no
 * later event can be missed, and sees which events it gets. */
static void watch_started(const struct cli *cli, bool all)
{
	const char *scope = all ? "all" : "own";
	int64_t now_ms = clock_realtime_ms();
	char now[64];
	struct json j;

	if (cli->json) {
		json_doc_begin(&j);
		json_str(&j, "event", "watching");
		json_i64(&j, "time_ms", now_ms);
		json_str(&j, "scope", scope);
		json_doc_end(&j);
		return;
	}
	cli_format_time(now_ms, now, sizeof(now));
	printf("%s watching scope=%s\n", now, scope);
}

/* Deliver events until a signal (0) or the connection's end (its error). */
static int watch_loop(struct p2pbuf *conn, int sfd)
{
	struct pollfd pfd[2] = {
		{ .fd = sfd, .events = POLLIN },
		{ .fd = p2pbuf_get_fd(conn), .events = POLLIN },
	};
	int r = 0;

	while (r >= 0) {
		bool sent;
		if (p2pbuf_pending(conn) && (r = p2pbuf_dispatch(conn)) < 0)
			break;
		if (poll(pfd, 2, -1) < 0 && errno != EINTR)
			return -errno;
		if ((pfd[0].revents & POLLIN) && cli_read_signal(sfd, &sent) > 0)
			return 0;
		if (pfd[1].revents)
			r = p2pbuf_dispatch(conn);
	}
	return r;
}

static int watch_run(struct cli *cli, int argc, char **argv)
{
	static const int sigs[] = { SIGINT, SIGTERM };
	_cleanup_conn_ struct p2pbuf *conn = NULL;
	_cleanup_close_ int sfd = -1;
	sigset_t old_mask;
	bool all = true;
	int r = cli_start(cli, argc, argv, 0, &conn);

	if (r >= 0)
		return r;
	/* Every event is wanted by admins and observers; everybody else gets the events of
	 * their own leases and device states, which is what the daemon allows them. */
	r = p2pbuf_subscribe(conn, true);
	if (r == -EPERM) {
		all = false;
		r = p2pbuf_subscribe(conn, false);
	}
	if (r < 0)
		return cli_fail(cli, r, CLI_REQUEST, p2pbuf_last_message(conn), "watch");
	sfd = cli_signal_fd(sigs, ARRAY_SIZE(sigs), &old_mask);
	if (sfd < 0)
		return cli_fail_local(cli, sfd, "watch: cannot set up signal handling");
	setvbuf(stdout, NULL, _IOLBF, 0);
	watch_started(cli, all);
	p2pbuf_set_event_handler(conn, watch_event, cli);
	r = watch_loop(conn, sfd);
	if (r < 0)
		return cli_fail(cli, r, CLI_REQUEST, NULL, "watch");
	return 0;
}

const struct verb verb_watch = {
	.name = "watch",
	.synopsis = "",
	.summary = "print lease and device events until interrupted",
	.help = "The first line says that the subscription is in place and its scope: all (admins\n"
		"and observers: every lease and device) or own (the events of your own leases and\n"
		"device state changes). Then one line per event, with the time (UTC) it was\n"
		"received, until SIGINT or SIGTERM (exit 0) or the daemon closes the connection\n"
		"(exit 1).\n",
	.run = watch_run,
};
