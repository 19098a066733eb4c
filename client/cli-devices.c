/* p2pbuf-client devices: the devices the daemon owns, their state and BARs. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "units.h"

static const char *bar_flags(const struct p2pbuf_bar *b)
{
	if (b->is_64bit && b->prefetchable)
		return "(64,pf)";
	if (b->is_64bit)
		return "(64)";
	return b->prefetchable ? "(pf)" : "";
}

/* "0:64K 2:2M(64,pf)": at most six BARs of a few dozen bytes each fit buf. */
static void format_bars(const struct p2pbuf_device *d, char *buf, size_t len)
{
	size_t used = 0;

	snprintf(buf, len, "%s", d->n_bars ? "" : "-");
	for (size_t i = 0; i < d->n_bars && used < len; i++) {
		const struct p2pbuf_bar *b = &d->bars[i];
		char size[UNITS_FORMAT_MAX];
		int n = snprintf(buf + used, len - used, "%s%u:%s%s", i ? " " : "", b->index,
				 units_format_size(b->size, size), bar_flags(b));
		used += n > 0 ? (size_t)n : 0;
	}
}

static void devices_table(const struct p2pbuf_device *d, size_t n)
{
	static const char *const cols[] = { "NAME", "BACKEND", "ADDRESS", "STATE",
					    "GEN",  "LEASES",  "BARS" };
	struct table t = { 0 };

	table_header(&t, cols, ARRAY_SIZE(cols));
	for (size_t i = 0; i < n; i++) {
		char bars[512];
		format_bars(&d[i], bars, sizeof(bars));
		table_cell(&t, "%s", d[i].name);
		table_cell(&t, "%s%s", d[i].backend, d[i].simulated ? " (simulated)" : "");
		table_cell(&t, "%s", d[i].address);
		table_cell(&t, "%s", p2pbuf_device_state_name(d[i].state));
		table_cell(&t, "%" PRIu32, d[i].generation);
		table_cell(&t, "%u", d[i].leases);
		table_cell(&t, "%s", bars);
	}
	table_print(&t);
	table_free(&t);
	/* Why a device is not ready: too long for a column, and what an operator needs. */
	for (size_t i = 0; i < n; i++) {
		if (d[i].state == P2PBUF_DEVICE_READY || !d[i].message)
			continue;
		_cleanup_free_ char *name = cli_escape_text(d[i].name, false);
		_cleanup_free_ char *msg = cli_escape_text(d[i].message, false);
		printf("%s: %s: %s\n", name, p2pbuf_device_state_name(d[i].state), msg);
	}
}

static void devices_json(const struct p2pbuf_device *d, size_t n)
{
	struct json j;

	json_doc_begin(&j);
	json_begin(&j, "devices", '[');
	for (size_t i = 0; i < n; i++)
		json_device(&j, NULL, &d[i]);
	json_end(&j, ']');
	json_doc_end(&j);
}

static int devices_run(struct cli *cli, int argc, char **argv)
{
	_cleanup_conn_ struct p2pbuf *conn = NULL;
	struct p2pbuf_device *d;
	size_t n;
	int r = cli_start(cli, argc, argv, 0, &conn);

	if (r >= 0)
		return r;
	r = p2pbuf_list_devices(conn, &d, &n);
	if (r < 0)
		return cli_fail(cli, r, CLI_REQUEST, p2pbuf_last_message(conn), "devices");
	if (cli->json)
		devices_json(d, n);
	else
		devices_table(d, n);
	p2pbuf_devices_free(d, n);
	return 0;
}

const struct verb verb_devices = {
	.name = "devices",
	.synopsis = "",
	.summary = "list the devices the daemon owns",
	.help = "Columns: NAME, BACKEND, ADDRESS (PCI address, or sim), STATE (ready, cycling,\n"
		"gone, failed), GEN (one more after every device cycle), LEASES, and BARS as\n"
		"INDEX:SIZE, (64) for 64-bit and (pf) for prefetchable BARs. A line after the\n"
		"table says why a device is not ready. --json also lists each BAR's reserved\n"
		"ranges (MSI-X table and PBA pages), which are never exported.\n",
	.run = devices_run,
};
