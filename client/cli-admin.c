/* p2pbuf-client reset, revoke and status: what admins do to devices and leases, and the
 * daemon's state (status is for everybody; it says whether the caller is an admin). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

static int reset_run(struct cli *cli, int argc, char **argv)
{
	_cleanup_conn_ struct p2pbuf *conn = NULL;
	const char *device;
	struct json j;
	int r = cli_start(cli, argc, argv, 1, &conn);

	if (r >= 0)
		return r;
	device = argv[optind];
	r = p2pbuf_reset(conn, device);
	if (r < 0)
		return cli_fail(cli, r, CLI_REQUEST | CLI_ADMIN, p2pbuf_last_message(conn),
				"reset %s", device);
	if (cli->json) {
		json_doc_begin(&j);
		json_str(&j, "action", "reset");
		json_begin(&j, "device", '{');
		json_str(&j, "name", device);
		json_end(&j, '}');
		json_doc_end(&j);
	} else {
		_cleanup_free_ char *dev = cli_escape_text(device, false);
		printf("device %s reset; its leases have ended\n", dev);
	}
	return 0;
}

const struct verb verb_reset = {
	.name = "reset",
	.synopsis = "DEVICE",
	.summary = "reset DEVICE, ending every lease on it (admins)",
	.help = "A device cycle: every buffer exported from DEVICE is revoked for good and its\n"
		"leases end with reason reset. Returns once the device is ready again.\n",
	.run = reset_run,
};

static int revoke_run(struct cli *cli, int argc, char **argv)
{
	_cleanup_conn_ struct p2pbuf *conn = NULL;
	uint64_t id;
	int r = cli_lease_verb(cli, argc, argv, p2pbuf_revoke, CLI_REQUEST | CLI_ADMIN, &id, &conn);

	if (r >= 0)
		return r;
	if (cli->json)
		cli_print_lease_action(cli, "revoke", id);
	else
		printf("lease %" PRIu64 " is being revoked; its holder has been told to let go\n",
		       id);
	return 0;
}

const struct verb verb_revoke = {
	.name = "revoke",
	.synopsis = "ID",
	.summary = "revoke a lease (admins)",
	.help = "Its holder is told to close the fd and release the lease before a deadline.\n",
	.run = revoke_run,
};

/* "1d 2h 3m", "2h 3m 4s", "3m 4s": for reading, unlike the exact forms of units.h. */
static void format_uptime(uint64_t ms, char *buf, size_t len)
{
	uint64_t s = ms / 1000;

	if (s >= 86400)
		snprintf(buf, len, "%" PRIu64 "d %" PRIu64 "h %" PRIu64 "m", s / 86400,
			 s / 3600 % 24, s / 60 % 60);
	else if (s >= 3600)
		snprintf(buf, len, "%" PRIu64 "h %" PRIu64 "m %" PRIu64 "s", s / 3600, s / 60 % 60,
			 s % 60);
	else
		snprintf(buf, len, "%" PRIu64 "m %" PRIu64 "s", s / 60, s % 60);
}

static void status_json(const struct cli *cli, const struct p2pbuf_status *st)
{
	struct json j;

	json_doc_begin(&j);
	json_begin(&j, "status", '{');
	json_str(&j, "socket", cli_socket_path(cli));
	json_str(&j, "version", st->version);
	json_u64(&j, "uptime_ms", st->uptime_ms);
	json_u64(&j, "client_count", st->clients);
	json_u64(&j, "lease_count", st->leases);
	json_nonzero(&j, "max_leases", st->max_leases);
	json_nonzero(&j, "max_clients", st->max_clients);
	json_nonzero(&j, "fd_limit", st->fd_limit);
	json_u64(&j, "device_count", st->devices);
	json_str(&j, "policy", st->policy && st->policy[0] ? st->policy : NULL);
	json_bool(&j, "admin", st->admin);
	json_end(&j, '}');
	json_doc_end(&j);
}

static void status_text(const struct cli *cli, const struct p2pbuf_status *st)
{
	_cleanup_free_ char *version = cli_escape_text(st->version, false);
	_cleanup_free_ char *policy = cli_escape_text(st->policy, false);
	_cleanup_free_ char *path = cli_escape_text(cli_socket_path(cli), false);
	char uptime[64], of_clients[48] = "", of_leases[80] = "";

	format_uptime(st->uptime_ms, uptime, sizeof(uptime));
	if (st->max_clients)
		snprintf(of_clients, sizeof(of_clients), " (at most %u)", st->max_clients);
	if (st->max_leases && st->fd_limit)
		snprintf(of_leases, sizeof(of_leases), " (at most %u; fd limit %llu)",
			 st->max_leases, (unsigned long long)st->fd_limit);
	else if (st->max_leases)
		snprintf(of_leases, sizeof(of_leases), " (at most %u)", st->max_leases);
	printf("socket:   %s\nversion:  %s\nuptime:   %s\nclients:  %u%s\nleases:   %u%s\n"
	       "devices:  %u\npolicy:   %s\nadmin:    %s\n",
	       path, version, uptime, st->clients, of_clients, st->leases, of_leases, st->devices,
	       policy, st->admin ? "yes (you may reset and revoke)" : "no");
}

static int status_run(struct cli *cli, int argc, char **argv)
{
	_cleanup_conn_ struct p2pbuf *conn = NULL;
	struct p2pbuf_status st;
	int r = cli_start(cli, argc, argv, 0, &conn);

	if (r >= 0)
		return r;
	r = p2pbuf_status(conn, &st);
	if (r < 0)
		return cli_fail(cli, r, CLI_REQUEST, p2pbuf_last_message(conn), "status");
	if (cli->json)
		status_json(cli, &st);
	else
		status_text(cli, &st);
	p2pbuf_status_free(&st);
	return 0;
}

const struct verb verb_status = {
	.name = "status",
	.synopsis = "",
	.summary = "show the daemon's status",
	.help = "The socket, the daemon's version and uptime, the number of clients, leases and\n"
		"devices, the policy file, and whether you are an admin.\n",
	.run = status_run,
};
