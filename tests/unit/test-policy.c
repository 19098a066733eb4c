/* Unit tests of the policy module: parsing into the right fields, every error with its exact
 * position, matching, roles and loading a policy with drop-ins. A fake resolver keeps the
 * tests independent of the machine's user database. */
#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy.h"

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

static const struct {
	const char *name;
	uint32_t id;
} fake_users[] = { { "alice", 1000 }, { "bob", 1001 } },
  fake_groups[] = { { "rdma", 2000 }, { "p2pbuf-admin", 2001 }, { "p2pbuf-view", 2002 } };

/* Digits are ids, as for the system resolver; "broken" fails the way a dead NSS server does. */
static int fake_lookup(const char *name, const void *table, size_t n, uint32_t *ret_id)
{
	const typeof(fake_users[0]) *t = table;
	char *end;
	unsigned long v;

	if (strcmp(name, "broken") == 0)
		return -EIO;
	if (name[0] >= '0' && name[0] <= '9') {
		v = strtoul(name, &end, 10);
		if (*end || v >= UINT32_MAX)
			return -EINVAL;
		*ret_id = (uint32_t)v;
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		if (strcmp(t[i].name, name) == 0) {
			*ret_id = t[i].id;
			return 0;
		}
	return -ENOENT;
}

static int fake_user(const char *name, uint32_t *ret_uid)
{
	return fake_lookup(name, fake_users, ELEMENTSOF(fake_users), ret_uid);
}

static int fake_group(const char *name, uint32_t *ret_gid)
{
	return fake_lookup(name, fake_groups, ELEMENTSOF(fake_groups), ret_gid);
}

static const struct policy_resolver fake = { .user = fake_user, .group = fake_group };

static struct policy *parse_ok_len(const char *text, size_t len)
{
	struct policy *pol = NULL;
	char *error = NULL;
	int r = policy_parse("policy", text, len, &fake, &pol, &error);

	ck_assert_msg(r == 0, "policy_parse: %d %s", r, error ? error : "(no message)");
	ck_assert_ptr_null(error);
	ck_assert_ptr_nonnull(pol);
	return pol;
}

static struct policy *parse_ok(const char *text)
{
	return parse_ok_len(text, strlen(text));
}

/* Parse text expecting failure r; returns the message (to free). */
static char *parse_fail(const char *text, size_t len, int r_expected)
{
	struct policy *pol = NULL;
	char *error = NULL;
	int r = policy_parse("policy", text, len, &fake, &pol, &error);

	ck_assert_int_eq(r, r_expected);
	ck_assert_ptr_null(pol);
	ck_assert_ptr_nonnull(error);
	return error;
}

static void assert_error(const char *text, const char *message)
{
	char *error = parse_fail(text, strlen(text), -EINVAL);

	ck_assert_str_eq(error, message);
	free(error);
}

/* ---- Parsing ---- */

START_TEST(test_empty)
{
	struct policy *pol = parse_ok("\n# only a comment\n   \t \n\n# another");

	ck_assert_uint_eq(pol->n_files, 1);
	ck_assert_str_eq(pol->files[0], "policy");
	ck_assert_uint_eq(pol->n_devices, 0);
	ck_assert_uint_eq(pol->n_rules, 0);
	ck_assert_uint_eq(pol->n_admins, 0);
	ck_assert_uint_eq(pol->n_observers, 0);
	policy_free(pol);
	pol = parse_ok("");
	policy_free(pol);
	policy_free(NULL);
}
END_TEST

START_TEST(test_sim_device_full)
{
	struct policy *pol =
	    parse_ok("# devices\n"
		     "device sim0 sim bar 0 16K bar 2 1M bar 4 64K msix-table 0 0x0+0x800 "
		     "msix-pba 0 0x800+0x100 cycle-delay 250ms revoke-deadline 2s "
		     "revocation notify-only on-error cycle # trailing comment\n");
	const struct policy_device *d = &pol->devices[0];

	ck_assert_uint_eq(pol->n_devices, 1);
	ck_assert_str_eq(d->name, "sim0");
	ck_assert_int_eq(d->kind, POLICY_DEVICE_SIM);
	ck_assert_uint_eq(d->sim_bar_size[0], 16384);
	ck_assert_uint_eq(d->sim_bar_size[1], 0);
	ck_assert_uint_eq(d->sim_bar_size[2], 1 << 20);
	ck_assert_uint_eq(d->sim_bar_size[3], 0);
	ck_assert_uint_eq(d->sim_bar_size[4], 0x10000);
	ck_assert_uint_eq(d->sim_bar_size[5], 0);
	ck_assert(d->sim_msix_table.present);
	ck_assert_uint_eq(d->sim_msix_table.bar, 0);
	ck_assert_uint_eq(d->sim_msix_table.range.offset, 0);
	ck_assert_uint_eq(d->sim_msix_table.range.length, 0x800);
	ck_assert(d->sim_msix_pba.present);
	ck_assert_uint_eq(d->sim_msix_pba.bar, 0);
	ck_assert_uint_eq(d->sim_msix_pba.range.offset, 0x800);
	ck_assert_uint_eq(d->sim_msix_pba.range.length, 0x100);
	ck_assert_uint_eq(d->sim_cycle_delay_ms, 250);
	ck_assert_uint_eq(d->revoke_deadline_ms, 2000);
	ck_assert_int_eq(d->revocation, POLICY_REVOKE_NOTIFY_ONLY);
	ck_assert_int_eq(d->on_error, POLICY_ON_ERROR_CYCLE);
	ck_assert_str_eq(d->file, "policy");
	ck_assert_ptr_eq(d->file, pol->files[0]);
	ck_assert_uint_eq(d->line, 2);
	policy_free(pol);
}
END_TEST

START_TEST(test_device_defaults)
{
	struct policy *pol = parse_ok("device s sim bar 5 4K\ndevice p pci 01:00.0\n");

	for (size_t i = 0; i < 2; i++) {
		const struct policy_device *d = &pol->devices[i];
		ck_assert_uint_eq(d->revoke_deadline_ms, POLICY_DEFAULT_REVOKE_DEADLINE_MS);
		ck_assert_int_eq(d->revocation, POLICY_REVOKE_ENFORCE);
		ck_assert_int_eq(d->on_error, POLICY_ON_ERROR_REPORT);
		ck_assert_uint_eq(d->sim_cycle_delay_ms, 0);
		ck_assert(!d->sim_msix_table.present);
		ck_assert(!d->sim_msix_pba.present);
	}
	ck_assert_uint_eq(pol->devices[0].sim_bar_size[5], 4096);
	ck_assert_int_eq(pol->devices[1].kind, POLICY_DEVICE_PCI);
	ck_assert_uint_eq(pol->devices[1].line, 2);
	policy_free(pol);
}
END_TEST

START_TEST(test_pci_device)
{
	struct policy *pol =
	    parse_ok("device nvme0 pci 0000:01:00.0\n"
		     "device gpu_1 pci 41:00.1 revoke-deadline 500ms\n"
		     "device A.b-c pci 00AB:Cd:1F.7 revocation enforce on-error report\n"
		     "device vmd pci 10000:e1:00.0\n");

	ck_assert_uint_eq(pol->n_devices, 4);
	ck_assert_str_eq(pol->devices[0].pci, "0000:01:00.0");
	ck_assert_str_eq(pol->devices[1].pci, "0000:41:00.1");
	ck_assert_uint_eq(pol->devices[1].revoke_deadline_ms, 500);
	ck_assert_str_eq(pol->devices[2].name, "A.b-c");
	ck_assert_str_eq(pol->devices[2].pci, "00ab:cd:1f.7");
	ck_assert_str_eq(pol->devices[3].pci, "10000:e1:00.0");
	ck_assert_int_eq(policy_find_device(pol, "gpu_1"), 1);
	ck_assert_int_eq(policy_find_device(pol, "A.b-c"), 2);
	ck_assert_int_eq(policy_find_device(pol, "gpu"), -ENOENT);
	policy_free(pol);
}
END_TEST

START_TEST(test_rules)
{
	struct policy *pol =
	    parse_ok("allow group rdma device nvme0 bar 2 range 0x0+0x100000 max-leases 8 ttl 10m\n"
		     "\n"
		     "allow user bob   device nvme0 ttl 1h max-leases 1 range 4K+4K bar 0\n"
		     "allow user 4242 device nvme0\n"
		     "device other pci 02:00.0\n"
		     "device nvme0 pci 01:00.0\n"
		     "allow group 7 device other max-leases 010\n");
	const struct policy_rule *r = pol->rules;

	ck_assert_uint_eq(pol->n_rules, 4);
	ck_assert_int_eq(r[0].who.kind, POLICY_GROUP);
	ck_assert_uint_eq(r[0].who.id, 2000);
	ck_assert_uint_eq(r[0].device, 1);
	ck_assert_int_eq(r[0].bar, 2);
	ck_assert(r[0].has_range);
	ck_assert_uint_eq(r[0].range.offset, 0);
	ck_assert_uint_eq(r[0].range.length, 0x100000);
	ck_assert_uint_eq(r[0].max_leases, 8);
	ck_assert_uint_eq(r[0].ttl_ms, 600000);
	ck_assert_str_eq(r[0].file, "policy");
	ck_assert_uint_eq(r[0].line, 1);
	ck_assert_str_eq(r[0].where, "policy:1");

	ck_assert_int_eq(r[1].who.kind, POLICY_USER);
	ck_assert_uint_eq(r[1].who.id, 1001);
	ck_assert_int_eq(r[1].bar, 0);
	ck_assert_uint_eq(r[1].range.offset, 4096);
	ck_assert_uint_eq(r[1].range.length, 4096);
	ck_assert_uint_eq(r[1].max_leases, 1);
	ck_assert_uint_eq(r[1].ttl_ms, 3600000);
	ck_assert_str_eq(r[1].where, "policy:3");

	ck_assert_uint_eq(r[2].who.id, 4242);
	ck_assert_int_eq(r[2].bar, -1);
	ck_assert(!r[2].has_range);
	ck_assert_uint_eq(r[2].max_leases, 0);
	ck_assert_uint_eq(r[2].ttl_ms, 0);

	ck_assert_int_eq(r[3].who.kind, POLICY_GROUP);
	ck_assert_uint_eq(r[3].who.id, 7);
	ck_assert_uint_eq(r[3].device, 0);
	ck_assert_uint_eq(r[3].max_leases, 10); /* decimal, not octal */
	ck_assert_str_eq(r[3].where, "policy:7");
	policy_free(pol);
}
END_TEST

START_TEST(test_roles)
{
	struct policy *pol = parse_ok("admin group p2pbuf-admin\nadmin user 0\n"
				      "observer user bob # watches\nobserver group 2002\n");

	ck_assert_uint_eq(pol->n_admins, 2);
	ck_assert_int_eq(pol->admins[0].kind, POLICY_GROUP);
	ck_assert_uint_eq(pol->admins[0].id, 2001);
	ck_assert_int_eq(pol->admins[1].kind, POLICY_USER);
	ck_assert_uint_eq(pol->admins[1].id, 0);
	ck_assert_uint_eq(pol->n_observers, 2);
	ck_assert_int_eq(pol->observers[0].kind, POLICY_USER);
	ck_assert_uint_eq(pol->observers[0].id, 1001);
	ck_assert_int_eq(pol->observers[1].kind, POLICY_GROUP);
	ck_assert_uint_eq(pol->observers[1].id, 2002);
	policy_free(pol);
}
END_TEST

START_TEST(test_lexical)
{
	/* Tabs, CRLF line ends and comments glued to tokens. */
	struct policy *pol = parse_ok("\tdevice\td0 pci 01:00.0\r\n"
				      "allow user alice device d0#no space before the comment\r\n"
				      "  allow   user  bob\tdevice d0   bar 1   \n"
				      "#allow user bob device nosuch\n");

	ck_assert_uint_eq(pol->n_rules, 2);
	ck_assert_int_eq(pol->rules[0].bar, -1);
	ck_assert_int_eq(pol->rules[1].bar, 1);
	ck_assert_uint_eq(pol->rules[1].line, 3);
	policy_free(pol);
}
END_TEST

static const struct {
	const char *text;
	uint64_t value;
} good_sizes[] = {
	{ "4096", 4096 },
	{ "010", 10 },
	{ "0x1000", 4096 },
	{ "0X1aB", 0x1ab },
	{ "4K", 4096 },
	{ "4k", 4096 },
	{ "4KiB", 4096 },
	{ "4kib", 4096 },
	{ "3M", 3 << 20 },
	{ "3MiB", 3 << 20 },
	{ "2G", 2ULL << 30 },
	{ "2GiB", 2ULL << 30 },
	{ "5T", 5ULL << 40 },
	{ "5TiB", 5ULL << 40 },
	{ "0x010", 16 },
	{ "00000010", 10 },
	{ "16777215T", 16777215ULL << 40 },
	{ "0xfffffffffffffffe", UINT64_MAX - 1 },
	{ "18446744073709551614", UINT64_MAX - 1 },
};

/* Offsets and lengths, checked through a rule's range length: a pci device has no BAR sizes
 * to fit. */
START_TEST(test_sizes)
{
	char text[256];
	struct policy *pol;

	snprintf(text, sizeof(text),
		 "device d pci 01:00.0\nallow user alice device d bar 0 range 1+%s\n",
		 good_sizes[_i].text);
	pol = parse_ok(text);
	ck_assert_uint_eq(pol->rules[0].range.offset, 1);
	ck_assert_uint_eq(pol->rules[0].range.length, good_sizes[_i].value);
	policy_free(pol);
}
END_TEST

#define NOT_A_SIZE "is not a size: use bytes or a number with K, M, G or T"

/* BAR sizes of a sim device, where hex is refused: sizes are bytes or K, M, G, T. */
static const struct {
	const char *text;
	const char *message;
} bad_sizes[] = {
	{ "0x1000z", NOT_A_SIZE },
	{ "0x1000", NOT_A_SIZE },
	{ "4KB", NOT_A_SIZE },
	{ "64kb", NOT_A_SIZE },
	{ "0x", NOT_A_SIZE },
	{ "-1", NOT_A_SIZE },
	{ "1.5M", NOT_A_SIZE },
	{ "K", NOT_A_SIZE },
	{ "4 K", NULL }, /* two words: see below */
	{ "1e3", NOT_A_SIZE },
	{ "4Ki", NOT_A_SIZE },
	{ "16777216T", "is too large: a size must be below 2^64" },
	{ "18446744073709551616", "is too large: a size must be below 2^64" },
	{ "0x10000000000000000", NOT_A_SIZE },
};

START_TEST(test_bad_sizes)
{
	char text[256], expected[256];

	snprintf(text, sizeof(text), "device d sim bar 0 %s\n", bad_sizes[_i].text);
	/* "4 K" splits into two tokens: the size is "4", and "K" an unknown option. */
	if (!bad_sizes[_i].message)
		snprintf(expected, sizeof(expected),
			 "policy:1:20: size \"4\" of bar 0 is not a power "
			 "of two of at least 4K");
	else
		snprintf(expected, sizeof(expected), "policy:1:20: \"%s\" %s", bad_sizes[_i].text,
			 bad_sizes[_i].message);
	assert_error(text, expected);
}
END_TEST

#define OFFSET_GRAMMAR "use bytes, a number with K, M, G or T, or 0x and hex digits"

/* Ranges of a rule: offsets and lengths also take hex, but a suffix only after decimal. */
static const struct {
	const char *range;
	unsigned col;
	const char *message;
} bad_ranges[] = {
	{ "1+0x10K", 41, "\"0x10K\" is not a length: " OFFSET_GRAMMAR },
	{ "0x10K+1", 39, "\"0x10K\" is not an offset: " OFFSET_GRAMMAR },
	{ "1+64kb", 41, "\"64kb\" is not a length: " OFFSET_GRAMMAR },
	{ "1KB+4K", 39, "\"1KB\" is not an offset: " OFFSET_GRAMMAR },
	{ "0x+4K", 39, "\"0x\" is not an offset: " OFFSET_GRAMMAR },
	{ "1+-1", 41, "\"-1\" is not a length: " OFFSET_GRAMMAR },
	{ "1+0x10000000000000000", 41,
	  "\"0x10000000000000000\" is too large: a length must be below 2^64" },
	{ "18446744073709551616+1", 39,
	  "\"18446744073709551616\" is too large: an offset must be below 2^64" },
};

START_TEST(test_bad_ranges)
{
	char text[256], expected[256];

	snprintf(text, sizeof(text),
		 "device d pci 01:00.0\nallow user alice device d bar 0 range %s\n",
		 bad_ranges[_i].range);
	snprintf(expected, sizeof(expected), "policy:2:%u: %s", bad_ranges[_i].col,
		 bad_ranges[_i].message);
	assert_error(text, expected);
}
END_TEST

static const struct {
	const char *text;
	uint64_t ms;
} good_durations[] = {
	{ "500ms", 500 },
	{ "1ms", 1 },
	{ "30", 30000 },
	{ "30s", 30000 },
	{ "10m", 600000 },
	{ "2h", 7200000 },
	{ "1d", 86400000 },
	{ "49710d", 49710ULL * 86400000 },
	{ "007s", 7000 },
	{ "4294967295", 4294967295000ULL },
	{ "4294967295000ms", 4294967295000ULL },
};

START_TEST(test_durations)
{
	char text[256];
	struct policy *pol;

	snprintf(text, sizeof(text),
		 "device d sim bar 0 4K cycle-delay %s revoke-deadline %s\n"
		 "allow user alice device d ttl %s\n",
		 good_durations[_i].text, good_durations[_i].text, good_durations[_i].text);
	pol = parse_ok(text);
	ck_assert_uint_eq(pol->devices[0].sim_cycle_delay_ms, good_durations[_i].ms);
	ck_assert_uint_eq(pol->devices[0].revoke_deadline_ms, good_durations[_i].ms);
	ck_assert_uint_eq(pol->rules[0].ttl_ms, good_durations[_i].ms);
	policy_free(pol);
}
END_TEST

START_TEST(test_zero_durations)
{
	/* 0 is a valid deadline (revoke at once) and delay, but never a ttl. */
	struct policy *pol = parse_ok("device d sim bar 0 4K cycle-delay 0 revoke-deadline 0ms\n");

	ck_assert_uint_eq(pol->devices[0].sim_cycle_delay_ms, 0);
	ck_assert_uint_eq(pol->devices[0].revoke_deadline_ms, 0);
	policy_free(pol);
}
END_TEST

/* ---- Errors, each with its exact position ---- */

#define RULE "allow user alice device d0 "
#define NOT_A_DURATION "is not a duration: use a number with ms, s, m, h or d (no unit: seconds)"

static const struct {
	const char *text;
	const char *message;
} errors[] = {
	/* The examples admins will meet most. */
	{ "device d0 pci 01:00.0\n\nallow user bob device d0 max-lease 3\n",
	  "policy:3:26: unknown option \"max-lease\" (expected bar, range, max-leases, max-bytes "
	  "or ttl)" },
	{ "\n\n\n\n\n\nadmin user spdk\n", "policy:7:12: user \"spdk\" does not exist" },
	{ "#\ndevice simulated01 sim bar 2 64kb\n",
	  "policy:2:30: \"64kb\" is not a size: use bytes or a number with K, M, G or T" },
	/* Directives and their fixed words. */
	{ "alow user alice\n",
	  "policy:1:1: unknown directive \"alow\" (expected device, allow, admin or observer)" },
	{ "  Device d sim bar 0 4K\n",
	  "policy:1:3: unknown directive \"Device\" (expected device, allow, admin or observer)" },
	{ "device", "policy:1:7: expected a device name after \"device\"" },
	{ "device d", "policy:1:9: expected sim or pci after the device name" },
	{ "device a usb", "policy:1:10: unknown device kind \"usb\" (expected sim or pci)" },
	{ "device nvme/0 pci 01:00.0",
	  "policy:1:8: device name \"nvme/0\" may contain only letters, digits, \"_\", \".\" and "
	  "\"-\"" },
	{ "device "
	  "a123456789b123456789c123456789d123456789e123456789f123456789g1234 pci 01:00.0",
	  "policy:1:8: device name "
	  "\"a123456789b123456789c123456789d123456789e123456789f123456789g1234\" is longer than "
	  "64 bytes" },
	{ "device a sim bar 0 4K\ndevice a pci 01:00.0\n",
	  "policy:2:8: device \"a\" is already declared at policy:1" },
	/* sim devices. */
	{ "device a sim", "policy:1:13: sim device \"a\" declares no bar (add \"bar N SIZE\")" },
	{ "device a sim cycle-delay 1s",
	  "policy:1:28: sim device \"a\" declares no bar (add \"bar N SIZE\")" },
	{ "device a sim bar", "policy:1:17: expected a BAR number after \"bar\"" },
	{ "device a sim bar 0", "policy:1:19: expected a size after \"bar 0\"" },
	{ "device a sim bar 6 4K", "policy:1:18: bar \"6\" is not a BAR number (0 to 5)" },
	{ "device a sim bar 00 4K", "policy:1:18: bar \"00\" is not a BAR number (0 to 5)" },
	{ "device a sim bar 0 6K",
	  "policy:1:20: size \"6K\" of bar 0 is not a power of two of at least 4K" },
	{ "device a sim bar 0 2K",
	  "policy:1:20: size \"2K\" of bar 0 is not a power of two of at least 4K" },
	{ "device a sim bar 0 4K bar 0 8K", "policy:1:27: bar 0 is already declared at column 18" },
	{ "device a sim bar 0 4K msix-table 0 0xf00+0x200",
	  "policy:1:36: msix-table range 0xf00+0x200 does not fit in bar 0 (size 0x1000)" },
	{ "device a sim bar 0 4K msix-pba 2 0+8",
	  "policy:1:32: msix-pba is in bar 2, which this device does not declare" },
	{ "device a sim msix-pba 2 0+8 bar 2 4K msix-pba 2 0+8",
	  "policy:1:38: duplicate option \"msix-pba\" (first given at column 14)" },
	{ "device a sim bar 0 4K msix-table",
	  "policy:1:33: expected a BAR number after \"msix-table\"" },
	{ "device a sim bar 0 4K msix-table 0", "policy:1:35: expected OFFSET+LENGTH after "
						"\"msix-table\" 0" },
	{ "device a sim bar 0 4K cycle-delay",
	  "policy:1:34: expected a duration after \"cycle-delay\"" },
	{ "device a sim bar 0 4K range 0+4K",
	  "policy:1:23: unknown option \"range\" (expected bar, msix-table, msix-pba, cycle-delay, "
	  "revoke-deadline, revocation or on-error)" },
	{ "device a sim bar 0 16777216T",
	  "policy:1:20: \"16777216T\" is too large: a size must be below 2^64" },
	/* pci devices. */
	{ "device n pci", "policy:1:13: expected a PCI address (DDDD:BB:DD.F) after \"pci\"" },
	{ "device n pci 0000:01:00",
	  "policy:1:14: PCI address \"0000:01:00\" is not DDDD:BB:DD.F or BB:DD.F (hex)" },
	{ "device n pci 0000-01:00.0",
	  "policy:1:14: PCI address \"0000-01:00.0\" is not DDDD:BB:DD.F or BB:DD.F (hex)" },
	{ "device n pci 0g:00.0",
	  "policy:1:14: PCI address \"0g:00.0\" is not DDDD:BB:DD.F or BB:DD.F (hex)" },
	{ "device n pci 00:20.0",
	  "policy:1:14: PCI address \"00:20.0\" has a device above 1f or a function above 7" },
	{ "device n pci 00:00.8",
	  "policy:1:14: PCI address \"00:00.8\" has a device above 1f or a function above 7" },
	{ "device a pci 0000:01:00.0\ndevice b pci 01:00.0",
	  "policy:2:14: PCI address 0000:01:00.0 is already device \"a\" (policy:1)" },
	{ "device a pci 01:00.0 cycle-delay 1s",
	  "policy:1:22: unknown option \"cycle-delay\" (expected revoke-deadline, revocation or "
	  "on-error)" },
	{ "device a pci 01:00.0 revocation soft",
	  "policy:1:33: unknown revocation mode \"soft\" (expected enforce or notify-only)" },
	{ "device a pci 01:00.0 revocation",
	  "policy:1:32: expected enforce or notify-only after \"revocation\"" },
	{ "device a pci 01:00.0 on-error reset",
	  "policy:1:31: unknown on-error action \"reset\" (expected report or cycle)" },
	{ "device a pci 01:00.0 on-error",
	  "policy:1:30: expected report or cycle after \"on-error\"" },
	{ "device a pci 01:00.0 revoke-deadline 1w",
	  "policy:1:38: revoke-deadline \"1w\" is not a duration: use a number with ms, s, m, h "
	  "or d (no unit: seconds)" },
	{ "device a pci 01:00.0 revoke-deadline 4294967296",
	  "policy:1:38: revoke-deadline \"4294967296\" is too long (at most 4294967295s)" },
	{ "device a pci 01:00.0 revocation enforce revocation enforce",
	  "policy:1:41: duplicate option \"revocation\" (first given at column 22)" },
	/* allow rules. */
	{ "allow", "policy:1:6: expected user, group or unit after \"allow\"" },
	{ "allow uid 5 device d0",
	  "policy:1:7: unknown subject \"uid\" (expected user, group or unit)" },
	{ "allow user", "policy:1:11: expected a user name or id after \"user\"" },
	{ "allow group", "policy:1:12: expected a group name or id after \"group\"" },
	{ "allow group wheel device d0", "policy:1:13: group \"wheel\" does not exist" },
	{ "allow user broken device d0",
	  "policy:1:12: cannot look up user \"broken\": Input/output error" },
	{ "allow user 4294967295 device d0",
	  "policy:1:12: user \"4294967295\" is not a valid name or id" },
	{ "allow user alice", "policy:1:17: expected \"device NAME\" after the user" },
	{ "allow user alice bar 2",
	  "policy:1:18: expected \"device NAME\" after the user, found \"bar\"" },
	{ "allow user alice device", "policy:1:24: expected a device name after \"device\"" },
	{ "allow user alice device nvme9", "policy:1:25: device \"nvme9\" is not declared" },
	{ "allow user alice device no:pe", "policy:1:25: device name \"no:pe\" may contain only "
					   "letters, digits, \"_\", \".\" and \"-\"" },
	{ RULE "ttl 1m bar 1 ttl 2m",
	  "policy:1:41: duplicate option \"ttl\" (first given at column 28)" },
	{ RULE "bar 6", "policy:1:32: bar \"6\" is not a BAR number (0 to 5)" },
	{ RULE "bar", "policy:1:31: expected a BAR number after \"bar\"" },
	{ RULE "bar x", "policy:1:32: bar \"x\" is not a BAR number (0 to 5)" },
	{ RULE "range 0+4K", "policy:1:28: a range needs a bar: add \"bar N\" to the rule" },
	{ RULE "bar 0 range", "policy:1:39: expected OFFSET+LENGTH after \"range\"" },
	{ RULE "bar 0 range 4096", "policy:1:40: range \"4096\" is not OFFSET+LENGTH" },
	{ RULE "bar 0 range 4096+", "policy:1:40: range \"4096+\" is not OFFSET+LENGTH" },
	{ RULE "bar 0 range +4096", "policy:1:40: range \"+4096\" is not OFFSET+LENGTH" },
	{ RULE "bar 0 range 0x1000+4z",
	  "policy:1:47: \"4z\" is not a length: use bytes, a number with K, M, G or T, or 0x and "
	  "hex digits" },
	{ RULE "bar 0 range 1x+4K",
	  "policy:1:40: \"1x\" is not an offset: use bytes, a number with K, M, G or T, or 0x and "
	  "hex digits" },
	{ RULE "bar 0 range 0+0", "policy:1:40: range \"0+0\" is empty" },
	{ RULE "bar 0 range 0xffffffffffffffff+1",
	  "policy:1:40: range \"0xffffffffffffffff+1\" overflows 64 bits" },
	{ RULE "bar 0 range 0x1000+0xfffffffffffff000",
	  "policy:1:40: range \"0x1000+0xfffffffffffff000\" overflows 64 bits" },
	{ RULE "max-leases 0",
	  "policy:1:39: max-leases \"0\" is not a decimal number from 1 to 4294967295" },
	{ RULE "max-leases 4294967296",
	  "policy:1:39: max-leases \"4294967296\" is not a decimal number from 1 to 4294967295" },
	{ RULE "max-leases 8x",
	  "policy:1:39: max-leases \"8x\" is not a decimal number from 1 to 4294967295" },
	{ RULE "max-leases 0x8",
	  "policy:1:39: max-leases \"0x8\" is not a decimal number from 1 to 4294967295" },
	{ RULE "max-leases 1K",
	  "policy:1:39: max-leases \"1K\" is not a decimal number from 1 to 4294967295" },
	{ RULE "max-leases", "policy:1:38: expected a number after \"max-leases\"" },
	{ RULE "ttl 0", "policy:1:32: ttl must be more than 0 (leave it out for leases that do not "
			"expire)" },
	{ RULE "ttl 0ms",
	  "policy:1:32: ttl must be more than 0 (leave it out for leases that do not "
	  "expire)" },
	{ RULE "ttl 10x", "policy:1:32: ttl \"10x\" " NOT_A_DURATION },
	{ RULE "ttl 1h30m", "policy:1:32: ttl \"1h30m\" " NOT_A_DURATION },
	{ RULE "ttl 10M", "policy:1:32: ttl \"10M\" " NOT_A_DURATION },
	{ RULE "ttl 0x10", "policy:1:32: ttl \"0x10\" " NOT_A_DURATION },
	{ RULE "ttl 1193047h", "policy:1:32: ttl \"1193047h\" is too long (at most 4294967295s)" },
	{ RULE "ttl", "policy:1:31: expected a duration after \"ttl\"" },
	{ RULE "device d1",
	  "policy:1:28: unknown option \"device\" (expected bar, range, max-leases, "
	  "max-bytes or ttl)" },
	/* Rules against the BARs a sim device declares. */
	{ "device s sim bar 0 4K\nallow user alice device s bar 2",
	  "policy:2:31: device \"s\" (policy:1) has no bar 2" },
	{ "allow user alice device s bar 0 range 0x800+0x1000\ndevice s sim bar 0 4K",
	  "policy:1:39: range 0x800+0x1000 does not fit in bar 0 of device \"s\" (size 0x1000)" },
	/* admin and observer. */
	{ "admin", "policy:1:6: expected user or group after \"admin\"" },
	{ "observer", "policy:1:9: expected user or group after \"observer\"" },
	{ "admin unit foo", "policy:1:7: unknown subject \"unit\" (expected user or group)" },
	{ "admin user alice bob",
	  "policy:1:18: unexpected \"bob\" (an admin line names one user or "
	  "group)" },
	{ "observer group rdma # ok\nobserver group rdma x",
	  "policy:2:21: unexpected \"x\" (an observer line names one user or group)" },
	{ "observer group nobody", "policy:1:16: group \"nobody\" does not exist" },
	/* Characters and quoting. */
	{ "allow user al\001ice", "policy:1:14: invalid character 0x01" },
	{ "device d\x7f", "policy:1:9: invalid character 0x7f" },
	{ "allow user "
	  "x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x1234567"
	  "89"
	  " device d0",
	  "policy:1:12: user "
	  "\"x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789...\" "
	  "does not exist" },
	/* The first error by position is the one the single message reports, whether found
	 * while reading (line 2) or once every file is read (line 1). */
	{ "alow\nalow", "policy:1:1: unknown directive \"alow\" (expected device, allow, admin or "
			"observer)" },
	{ "allow user alice device nope\nadmin user carol",
	  "policy:1:25: device \"nope\" is not declared" },
	{ "allow user alice device nope\nallow user alice device nope2",
	  "policy:1:25: device \"nope\" is not declared" },
};

START_TEST(test_errors)
{
	assert_error(errors[_i].text, errors[_i].message);
}
END_TEST

START_TEST(test_nul_byte)
{
	static const char text[] = "device d0 pci 01:00.0\nallow\0 user";
	char *error = parse_fail(text, sizeof(text) - 1, -EINVAL);

	ck_assert_str_eq(error, "policy:2:6: invalid character 0x00");
	free(error);
}
END_TEST

START_TEST(test_too_many_words)
{
	char text[64 * 2 + 16] = "";
	char *error;

	for (int i = 0; i < 65; i++)
		strcat(text, "x ");
	error = parse_fail(text, strlen(text), -EINVAL);
	ck_assert_str_eq(error, "policy:1:129: too many words on one line (at most 64)");
	free(error);
}
END_TEST

START_TEST(test_error_optional)
{
	/* A caller may not want the message. */
	struct policy *pol = NULL;

	ck_assert_int_eq(policy_parse("policy", "x", 1, &fake, &pol, NULL), -EINVAL);
	ck_assert_ptr_null(pol);
}
END_TEST

/* ---- Limits ---- */

/* head, then n lines "<before><counter><after>"; to free. */
static char *repeat(const char *head, const char *before, const char *after, size_t n)
{
	size_t cap = strlen(head) + n * (strlen(before) + strlen(after) + 21) + 1, len;
	char *text = malloc(cap);

	ck_assert_ptr_nonnull(text);
	len = (size_t)snprintf(text, cap, "%s", head);
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(text + len, cap - len, "%s%zu%s\n", before, i, after);
	return text;
}

START_TEST(test_limit_devices)
{
	char *text = repeat("", "device d", " sim bar 0 4K", POLICY_MAX_DEVICES);
	struct policy *pol = parse_ok(text);
	char *more, *error;

	ck_assert_uint_eq(pol->n_devices, POLICY_MAX_DEVICES);
	policy_free(pol);
	more = repeat(text, "device e", " sim bar 0 4K", 1);
	error = parse_fail(more, strlen(more), -E2BIG);
	ck_assert_str_eq(error, "policy:4097:1: too many devices (at most 4096)");
	free(error);
	free(more);
	free(text);
}
END_TEST

START_TEST(test_limit_rules)
{
	char *text = repeat("device d pci 01:00.0\n", "allow user ", " device d", POLICY_MAX_RULES);
	struct policy *pol = parse_ok(text);
	char *more, *error;

	ck_assert_uint_eq(pol->n_rules, POLICY_MAX_RULES);
	ck_assert_uint_eq(pol->rules[POLICY_MAX_RULES - 1].who.id, POLICY_MAX_RULES - 1);
	policy_free(pol);
	more = repeat(text, "  allow user ", " device d", 1);
	error = parse_fail(more, strlen(more), -E2BIG);
	ck_assert_str_eq(error, "policy:65538:3: too many allow rules (at most 65536)");
	free(error);
	free(more);
	free(text);
}
END_TEST

START_TEST(test_limit_roles)
{
	char *text = repeat("", "admin user ", "", POLICY_MAX_RULES + 1);
	char *error = parse_fail(text, strlen(text), -E2BIG);

	ck_assert_str_eq(error, "policy:65537:1: too many admin lines (at most 65536)");
	free(error);
	free(text);
	text = repeat("", "observer user ", "", POLICY_MAX_RULES + 1);
	error = parse_fail(text, strlen(text), -E2BIG);
	ck_assert_str_eq(error, "policy:65537:1: too many observer lines (at most 65536)");
	free(error);
	free(text);
}
END_TEST

START_TEST(test_limit_size)
{
	char *text = malloc(POLICY_MAX_SIZE + 1);
	struct policy *pol;
	char *error;

	ck_assert_ptr_nonnull(text);
	memset(text, '\n', POLICY_MAX_SIZE + 1);
	memcpy(text, "admin user 0", 12);
	pol = parse_ok_len(text, POLICY_MAX_SIZE);
	ck_assert_uint_eq(pol->n_admins, 1);
	policy_free(pol);
	error = parse_fail(text, POLICY_MAX_SIZE + 1, -E2BIG);
	ck_assert_str_eq(error, "policy: file is larger than 8388608 bytes");
	free(error);
	free(text);
}
END_TEST

/* ---- Matching ---- */

static const char match_policy[] =
    "device d0 pci 01:00.0\n"
    "device d1 sim bar 0 64K bar 2 1M\n"
    "allow user alice device d0\n"					    /* 0 */
    "allow group rdma device d1 bar 2 range 0x10000+0x20000 max-leases 4\n" /* 1 */
    "allow user bob device d1 bar 2 range 0+0x10000 ttl 1m\n"		    /* 2 */
    "allow group rdma device d1 bar 2\n"				    /* 3 */
    "allow user 1000 device d1 bar 0 range 0x0+0x4000\n"		    /* 4 */
    "admin group p2pbuf-admin\n"
    "observer user bob\n";

static const gid_t bob_groups[] = { 100, 2000 };
static const gid_t admin_groups[] = { 2001 };
static const struct policy_peer alice = { .uid = 1000, .gid = 1000 };
static const struct policy_peer bob = { 1001, 1001, bob_groups, ELEMENTSOF(bob_groups) };
static const struct policy_peer carol = { .uid = 1005, .gid = 2000 };
static const struct policy_peer root_admin = { 0, 0, admin_groups, ELEMENTSOF(admin_groups) };

/* The indices of every rule that matches, in order, ending with -1. */
static void assert_matches(const struct policy *pol, const struct policy_peer *peer, size_t device,
			   unsigned bar, const struct range *ranges, size_t n, const int *expected)
{
	const struct policy_rule *r = NULL;
	size_t i = 0;

	while ((r = policy_match_export(pol, peer, device, bar, ranges, n, r))) {
		ck_assert_int_ne(expected[i], -1);
		ck_assert_int_eq(r - pol->rules, expected[i]);
		i++;
	}
	ck_assert_int_eq(expected[i], -1);
}

#define MATCHES(...) ((const int[]){ __VA_ARGS__, -1 })
#define RANGES(...) ((const struct range[]){ __VA_ARGS__ })
#define NRANGES(...) ELEMENTSOF(RANGES(__VA_ARGS__))

START_TEST(test_match_basic)
{
	struct policy *pol = parse_ok(match_policy);
	const struct range page = { 0, 4096 };

	/* Any BAR and range of d0 for alice, nothing else of d0 for anyone. */
	assert_matches(pol, &alice, 0, 3, &page, 1, MATCHES(0));
	assert_matches(pol, &alice, 0, 0, NULL, 0, MATCHES(0));
	assert_matches(pol, &bob, 0, 0, &page, 1, MATCHES(-1));
	/* Default deny: no rule for alice on d1 bar 2, nor for anyone on bar 5 or device 7. */
	assert_matches(pol, &alice, 1, 2, &page, 1, MATCHES(-1));
	assert_matches(pol, &bob, 1, 5, &page, 1, MATCHES(-1));
	assert_matches(pol, &bob, 7, 2, &page, 1, MATCHES(-1));
	/* alice's numeric rule. */
	assert_matches(pol, &alice, 1, 0, RANGES({ 0, 0x4000 }), 1, MATCHES(4));
	assert_matches(pol, &alice, 1, 0, RANGES({ 0x3000, 0x2000 }), 1, MATCHES(-1));
	policy_free(pol);
}
END_TEST

START_TEST(test_match_groups)
{
	struct policy *pol = parse_ok(match_policy);
	const struct range r = { 0x10000, 0x1000 };

	/* bob is in rdma through a supplementary group, carol through her primary one. */
	assert_matches(pol, &bob, 1, 2, &r, 1, MATCHES(1, 3));
	assert_matches(pol, &carol, 1, 2, &r, 1, MATCHES(1, 3));
	assert_matches(pol, &alice, 1, 2, &r, 1, MATCHES(-1));
	policy_free(pol);
}
END_TEST

START_TEST(test_match_ranges)
{
	struct policy *pol = parse_ok(match_policy);

	/* Inside rule 1's 0x10000+0x20000, at both ends. */
	assert_matches(pol, &carol, 1, 2, RANGES({ 0x10000, 0x20000 }), 1, MATCHES(1, 3));
	assert_matches(pol, &carol, 1, 2, RANGES({ 0x2f000, 0x1000 }), 1, MATCHES(1, 3));
	/* Straddling either end. */
	assert_matches(pol, &carol, 1, 2, RANGES({ 0x2f000, 0x2000 }), 1, MATCHES(3));
	assert_matches(pol, &carol, 1, 2, RANGES({ 0xf000, 0x2000 }), 1, MATCHES(3));
	assert_matches(pol, &carol, 1, 2, RANGES({ 0x0, 0x40000 }), 1, MATCHES(3));
	/* Ranges whose end overflows must not wrap around into the rule's range. */
	assert_matches(pol, &carol, 1, 2, RANGES({ UINT64_MAX - 0xfff, 0x2000 }), 1, MATCHES(3));
	assert_matches(pol, &carol, 1, 2, RANGES({ 0x10000, UINT64_MAX }), 1, MATCHES(3));
	assert_matches(pol, &carol, 1, 2, RANGES({ UINT64_MAX, UINT64_MAX }), 1, MATCHES(3));
	/* Every range of a request must be inside. */
	assert_matches(pol, &carol, 1, 2, RANGES({ 0x10000, 0x1000 }, { 0x20000, 0x1000 }),
		       NRANGES({ 0 }, { 0 }), MATCHES(1, 3));
	assert_matches(pol, &carol, 1, 2, RANGES({ 0x10000, 0x1000 }, { 0x40000, 0x1000 }),
		       NRANGES({ 0 }, { 0 }), MATCHES(3));
	/* bob: rule 2 (0+0x10000) and rule 1 do not overlap; the end of one is not the other. */
	assert_matches(pol, &bob, 1, 2, RANGES({ 0x0, 0x10000 }), 1, MATCHES(2, 3));
	assert_matches(pol, &bob, 1, 2, RANGES({ 0xf000, 0x1000 }, { 0x10000, 0x1000 }), 2,
		       MATCHES(3));
	/* The whole BAR (no ranges) is more than a range-limited rule allows. */
	assert_matches(pol, &bob, 1, 2, NULL, 0, MATCHES(3));
	policy_free(pol);
}
END_TEST

START_TEST(test_match_iteration)
{
	struct policy *pol = parse_ok(match_policy);
	const struct range r = { 0x1000, 0x1000 };
	const struct policy_rule *m;

	m = policy_match_export(pol, &bob, 1, 2, &r, 1, NULL);
	ck_assert_ptr_eq(m, &pol->rules[2]);
	ck_assert_uint_eq(m->ttl_ms, 60000);
	m = policy_match_export(pol, &bob, 1, 2, &r, 1, m);
	ck_assert_ptr_eq(m, &pol->rules[3]);
	ck_assert_ptr_null(policy_match_export(pol, &bob, 1, 2, &r, 1, m));
	/* Starting after a rule that does not match skips only what precedes it. */
	ck_assert_ptr_eq(policy_match_export(pol, &bob, 1, 2, &r, 1, &pol->rules[0]),
			 &pol->rules[2]);
	ck_assert_ptr_null(policy_match_export(pol, &bob, 1, 2, &r, 1, &pol->rules[4]));
	policy_free(pol);
}
END_TEST

START_TEST(test_match_empty_policy)
{
	struct policy *pol = parse_ok("");
	const struct range r = { 0, 4096 };

	ck_assert_ptr_null(policy_match_export(pol, &alice, 0, 0, &r, 1, NULL));
	ck_assert(!policy_is_admin(pol, &root_admin));
	ck_assert(!policy_is_observer(pol, &root_admin));
	policy_free(pol);
}
END_TEST

START_TEST(test_roles_match)
{
	struct policy *pol = parse_ok(match_policy);
	const struct policy_peer admin_primary = { .uid = 5000, .gid = 2001 };

	ck_assert(policy_is_admin(pol, &root_admin));
	ck_assert(policy_is_observer(pol, &root_admin));
	ck_assert(policy_is_admin(pol, &admin_primary));
	ck_assert(!policy_is_admin(pol, &bob));
	ck_assert(policy_is_observer(pol, &bob));
	ck_assert(!policy_is_admin(pol, &alice));
	ck_assert(!policy_is_observer(pol, &alice));
	/* Roles grant no exports. */
	ck_assert_ptr_null(policy_match_export(pol, &root_admin, 1, 2, NULL, 0, NULL));
	policy_free(pol);
}
END_TEST

/* ---- Every diagnostic of a parse ---- */

/* Parse the files (name, text pairs ending with NULL) through the parser API expecting
 * r_expected; the diagnostics, to free. */
static struct policy_diags parse_diags(int r_expected, ...)
{
	struct policy_parser *p = NULL;
	struct policy_diags d = { .v = NULL };
	struct policy *pol = NULL;
	const char *file;
	va_list ap;

	ck_assert_int_eq(policy_parser_new(&fake, &p), 0);
	va_start(ap, r_expected);
	while ((file = va_arg(ap, const char *))) {
		const char *text = va_arg(ap, const char *);
		(void)policy_parser_add(p, file, text, strlen(text));
	}
	va_end(ap);
	ck_assert_int_eq(policy_parser_finish_ex(p, &pol, &d), r_expected);
	ck_assert(r_expected == 0 ? pol != NULL : pol == NULL);
	policy_free(pol);
	policy_parser_free(p);
	return d;
}

static void assert_diag(const struct policy_diag *d, const char *file, unsigned line,
			unsigned column, const char *message, const char *text)
{
	ck_assert_str_eq(d->file, file);
	ck_assert_uint_eq(d->line, line);
	ck_assert_uint_eq(d->column, column);
	ck_assert_str_eq(d->message, message);
	if (text)
		ck_assert_str_eq(d->text, text);
	else
		ck_assert_ptr_null(d->text);
	ck_assert(!d->warning);
}

START_TEST(test_every_error)
{
	/* Errors on lines 2, 4, 5 (two: the line and, at finish, the rule of line 7 is not
	 * reported again: its device's own line had the error), 8 and, found only at finish, 1
	 * and 9 (a later file's device has no bar 3). */
	struct policy_diags d = parse_diags(
	    -EINVAL, "policy",
	    "allow user alice device nope\n"
	    "device d0 sim bar 0 3K\n"
	    "device d1 pci 01:00.0\n"
	    "allow user carol device d1\n"
	    "allow user bob device d1 ttl 0 bar 9\n"
	    "\n"
	    "allow user alice device d0 bar 0\n"
	    "alow\n"
	    "allow user bob device s2 bar 3\n",
	    "policy.d/a.policy", "device s2 sim bar 0 4K\nobserver group nobody\n", NULL);
	static const char *const msgs[][2] = {
		{ "policy", "device \"nope\" is not declared" },
		{ "policy", "size \"3K\" of bar 0 is not a power of two of at least 4K" },
		{ "policy", "user \"carol\" does not exist" },
		{ "policy",
		  "ttl must be more than 0 (leave it out for leases that do not expire)" },
		{ "policy",
		  "unknown directive \"alow\" (expected device, allow, admin or observer)" },
		{ "policy", "device \"s2\" (policy.d/a.policy:1) has no bar 3" },
		{ "policy.d/a.policy", "group \"nobody\" does not exist" },
	};
	static const unsigned at[][2] = { { 1, 25 }, { 2, 21 }, { 4, 12 }, { 5, 30 },
					  { 8, 1 },  { 9, 30 }, { 2, 16 } };

	ck_assert_uint_eq(d.n, ELEMENTSOF(msgs));
	ck_assert_uint_eq(d.dropped, 0);
	for (size_t i = 0; i < d.n; i++)
		assert_diag(&d.v[i], msgs[i][0], at[i][0], at[i][1], msgs[i][1], d.v[i].text);
	ck_assert_str_eq(d.v[0].text, "allow user alice device nope");
	ck_assert_str_eq(d.v[3].text, "allow user bob device d1 ttl 0 bar 9");
	ck_assert_str_eq(d.v[5].text, "allow user bob device s2 bar 3");
	ck_assert_str_eq(d.v[6].text, "observer group nobody");
	policy_diags_free(&d);
	ck_assert_uint_eq(d.n, 0);
	policy_diags_free(&d); /* an empty one is fine too */
}
END_TEST

START_TEST(test_error_formats)
{
	struct policy_diags d = parse_diags(-EINVAL, "x", "device", NULL);
	const struct policy_diag whole = { .file = (char *)"f", .message = (char *)"m" };
	char *s;

	ck_assert_uint_eq(d.n, 1);
	s = policy_diag_format(&d.v[0]);
	ck_assert_str_eq(s, "x:1:7: expected a device name after \"device\"");
	free(s);
	s = policy_diag_format(&whole);
	ck_assert_str_eq(s, "f: m");
	free(s);
	policy_diags_free(&d);
}
END_TEST

START_TEST(test_error_text_cut)
{
	char text[600];
	struct policy_diags d;

	memset(text, 'x', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	d = parse_diags(-EINVAL, "policy", text, NULL);
	ck_assert_uint_eq(d.n, 1);
	ck_assert_uint_eq(strlen(d.v[0].text), POLICY_DIAG_TEXT_MAX);
	ck_assert_uint_eq(d.v[0].column, 1);
	policy_diags_free(&d);
	/* A CRLF line is quoted without its carriage return, also when resolved at finish. */
	d = parse_diags(-EINVAL, "policy", "alow\r\nallow user bob device x\r\n", NULL);
	ck_assert_uint_eq(d.n, 2);
	ck_assert_str_eq(d.v[0].text, "alow");
	ck_assert_str_eq(d.v[1].text, "allow user bob device x");
	policy_diags_free(&d);
}
END_TEST

START_TEST(test_max_diags)
{
	char *text = repeat("device d pci 01:00.0\n", "alow ", "", POLICY_MAX_DIAGS + 50);
	struct policy_diags d = parse_diags(-EINVAL, "policy", text, NULL);
	char *error = NULL;
	struct policy *pol = NULL;

	ck_assert_uint_eq(d.n, POLICY_MAX_DIAGS);
	ck_assert_uint_eq(d.dropped, 50);
	ck_assert_uint_eq(d.v[0].line, 2);
	ck_assert_uint_eq(d.v[POLICY_MAX_DIAGS - 1].line, POLICY_MAX_DIAGS + 1);
	policy_diags_free(&d);
	/* The single message is the first error. */
	ck_assert_int_eq(policy_parse("policy", text, strlen(text), &fake, &pol, &error), -EINVAL);
	ck_assert_str_eq(error, "policy:2:1: unknown directive \"alow\" (expected device, allow, "
				"admin or observer)");
	free(error);
	free(text);
}
END_TEST

/* The limit on rules is reported, with its line, and the rest of the file still read. */
START_TEST(test_limit_rules_diags)
{
	char *text =
	    repeat("device d pci 01:00.0\n", "allow user ", " device d", POLICY_MAX_RULES + 1);
	char *more;
	struct policy_diags d;

	more = repeat(text, "alow", "", 1);
	d = parse_diags(-E2BIG, "policy", more, NULL);
	ck_assert_uint_eq(d.n, 2);
	assert_diag(&d.v[0], "policy", POLICY_MAX_RULES + 2, 1,
		    "too many allow rules (at most 65536)", "allow user 65536 device d");
	ck_assert_uint_eq(d.v[1].line, POLICY_MAX_RULES + 3);
	policy_diags_free(&d);
	free(more);
	free(text);
}
END_TEST

/* ---- Names kept, and looked up once ---- */

static unsigned lookups;

static int counting_user(const char *name, uint32_t *ret_uid)
{
	lookups++;
	return fake_user(name, ret_uid);
}

static const struct policy_resolver counting = { .user = counting_user, .group = fake_group };

START_TEST(test_subject_names)
{
	static const char text[] = "device d pci 01:00.0\n"
				   "allow user alice device d\n"
				   "allow user 1000 device d\n"
				   "allow user alice device d bar 1\n"
				   "allow group rdma device d\n"
				   "allow unit db.service device d\n"
				   "allow user carol device d\n"
				   "allow user carol device d bar 2\n"
				   "admin user alice\n";
	struct policy *pol = NULL;
	char *error = NULL;

	/* carol: asked once, though two rules name her. */
	lookups = 0;
	ck_assert_int_eq(policy_parse("policy", text, strlen(text), &counting, &pol, &error),
			 -EINVAL);
	ck_assert_uint_eq(lookups, 3);
	free(error);
	lookups = 0;
	pol = parse_ok("device d pci 01:00.0\n"
		       "allow user alice device d\n"
		       "allow user 1000 device d\n"
		       "allow user alice device d bar 1\n"
		       "allow group rdma device d\n"
		       "allow unit db.service device d\n"
		       "admin user alice\n");
	ck_assert_str_eq(pol->rules[0].who.name, "alice");
	ck_assert_str_eq(pol->rules[1].who.name, "1000");
	ck_assert_uint_eq(pol->rules[1].who.id, 1000);
	/* One copy per distinct name. */
	ck_assert_ptr_eq(pol->rules[2].who.name, pol->rules[0].who.name);
	ck_assert_ptr_eq(pol->admins[0].name, pol->rules[0].who.name);
	ck_assert_str_eq(pol->rules[3].who.name, "rdma");
	ck_assert_int_eq(pol->rules[4].who.kind, POLICY_UNIT);
	ck_assert_str_eq(pol->rules[4].who.name, "db.service");
	policy_free(pol);
}
END_TEST

/* ---- Units ---- */

static const char *const good_units[] = {
	"db.service",
	"getty@tty1.service",
	"a@b@c.service",
	"user-1000.slice",
	"x:y_z-w.v\\x2d.socket",
	"run-r0.scope",
	"a.b.c.timer",
	"dev-sda.device",
	"A.mount",
	"a.automount",
	"a.swap",
	"a.target",
	"a.path",
};

START_TEST(test_unit_valid)
{
	char text[512];
	struct policy *pol;

	snprintf(text, sizeof(text), "device d pci 01:00.0\nallow unit %s device d\n",
		 good_units[_i]);
	pol = parse_ok(text);
	ck_assert_int_eq(pol->rules[0].who.kind, POLICY_UNIT);
	ck_assert_str_eq(pol->rules[0].who.name, good_units[_i]);
	ck_assert_uint_eq(pol->rules[0].who.id, 0);
	policy_free(pol);
}
END_TEST

#define UNIT_TYPES "does not end in a unit type (such as .service)"

static const struct {
	const char *name;
	unsigned column;
	const char *message;
} bad_units[] = {
	{ "db", 12, "unit name \"db\" " UNIT_TYPES },
	{ "db.", 12, "unit name \"db.\" " UNIT_TYPES },
	{ "db.serv1ce", 12, "unit name \"db.serv1ce\" " UNIT_TYPES },
	{ "db.Service", 12, "unit name \"db.Service\" " UNIT_TYPES },
	{ ".service", 12, "unit name \".service\" " UNIT_TYPES },
	{ "db/x.service", 14,
	  "unit name \"db/x.service\" may contain only letters, digits, \":\", \"-\", \"_\", "
	  "\".\", \"\\\" and \"@\"" },
	{ "d\xc3\xa9.service", 13,
	  "unit name \"d\xc3\xa9.service\" may contain only letters, digits, \":\", \"-\", \"_\", "
	  "\".\", \"\\\" and \"@\"" },
	{ "@x.service", 12, "unit name \"@x.service\" starts with \"@\"" },
	{ "getty@.service", 12,
	  "unit name \"getty@.service\" is a template, which no process runs in: name an "
	  "instance (NAME@INSTANCE.TYPE)" },
};

START_TEST(test_unit_invalid)
{
	char text[512], expected[512];

	snprintf(text, sizeof(text), "allow unit %s device d", bad_units[_i].name);
	snprintf(expected, sizeof(expected), "policy:1:%u: %s", bad_units[_i].column,
		 bad_units[_i].message);
	assert_error(text, expected);
}
END_TEST

START_TEST(test_unit_limits)
{
	char name[300], text[400], expected[512];

	/* 255 bytes is the longest name systemd takes. */
	memset(name, 'u', 247);
	strcpy(name + 247, ".service");
	ck_assert_uint_eq(strlen(name), 255);
	snprintf(text, sizeof(text), "device d pci 01:00.0\nallow unit %s device d\n", name);
	policy_free(parse_ok(text));
	memmove(name + 1, name, 256);
	snprintf(text, sizeof(text), "allow unit %s device d", name);
	snprintf(expected, sizeof(expected),
		 "policy:1:12: unit name \"%.80s...\" is longer than 255 bytes", name);
	assert_error(text, expected);
	assert_error("allow unit",
		     "policy:1:11: expected a unit name (NAME.service) after \"unit\"");
	/* Roles are by user or group only. */
	assert_error("admin unit a.service",
		     "policy:1:7: unknown subject \"unit\" (expected user or group)");
}
END_TEST

START_TEST(test_unit_match)
{
	struct policy *pol = parse_ok("device d pci 01:00.0\n"
				      "allow unit db.service device d bar 2\n");
	struct policy_peer peer = { .uid = 1000, .gid = 1000, .unit = "db.service" };

	ck_assert_ptr_eq(policy_match_export(pol, &peer, 0, 2, NULL, 0, NULL), &pol->rules[0]);
	ck_assert_ptr_null(policy_match_export(pol, &peer, 0, 1, NULL, 0, NULL));
	peer.unit = "db2.service";
	ck_assert_ptr_null(policy_match_export(pol, &peer, 0, 2, NULL, 0, NULL));
	peer.unit = "db";
	ck_assert_ptr_null(policy_match_export(pol, &peer, 0, 2, NULL, 0, NULL));
	/* Unknown: never a unit rule. */
	peer.unit = NULL;
	ck_assert_ptr_null(policy_match_export(pol, &peer, 0, 2, NULL, 0, NULL));
	policy_free(pol);
}
END_TEST

/* ---- max-bytes ---- */

START_TEST(test_max_bytes)
{
	struct policy *pol = parse_ok("device d pci 01:00.0\n"
				      "allow user alice device d max-bytes 64M\n"
				      "allow user bob device d max-bytes 4K max-leases 2\n"
				      "allow user bob device d\n");

	ck_assert_uint_eq(pol->rules[0].max_bytes, 64 << 20);
	ck_assert_uint_eq(pol->rules[1].max_bytes, 4096);
	ck_assert_uint_eq(pol->rules[1].max_leases, 2);
	ck_assert_uint_eq(pol->rules[2].max_bytes, 0);
	policy_free(pol);
	assert_error(RULE "max-bytes 0",
		     "policy:1:38: max-bytes must be more than 0 (leave it out for no cap)");
	assert_error(RULE "max-bytes 1x",
		     "policy:1:38: \"1x\" is not a size: use bytes or a number with K, M, G or T");
	assert_error(RULE "max-bytes 16777216T",
		     "policy:1:38: \"16777216T\" is too large: a size must be below 2^64");
	assert_error(RULE "max-bytes", "policy:1:37: expected a size after \"max-bytes\"");
	assert_error(RULE "max-bytes 1M max-bytes 2M",
		     "policy:1:41: duplicate option \"max-bytes\" (first given at column 28)");
}
END_TEST

/* ---- The index: a device's rules only, in file order ---- */

/* What policy_match_export answers, by brute force over every rule. */
static const struct policy_rule *reference_match(const struct policy *pol,
						 const struct policy_peer *peer, size_t device,
						 unsigned bar, const struct range *r,
						 const struct policy_rule *after)
{
	for (size_t i = after ? (size_t)(after - pol->rules) + 1 : 0; i < pol->n_rules; i++) {
		const struct policy_rule *rule = &pol->rules[i];
		bool who = rule->who.kind == POLICY_USER ? rule->who.id == peer->uid
							 : rule->who.id == peer->gid;
		if (rule->device == device && (rule->bar < 0 || (unsigned)rule->bar == bar) &&
		    who &&
		    (!rule->has_range ||
		     (r->offset >= rule->range.offset &&
		      r->offset + r->length <= rule->range.offset + rule->range.length)))
			return rule;
	}
	return NULL;
}

START_TEST(test_match_index)
{
	char *text = malloc(1 << 20);
	size_t len = 0;
	struct policy *pol;

	ck_assert_ptr_nonnull(text);
	/* Rules before and after their devices, interleaved over 7 devices. */
	for (unsigned i = 0; i < 400; i++) {
		if (i % 57 == 0)
			len += (size_t)sprintf(text + len, "device d%u sim bar 0 1M bar 1 64K\n",
					       i / 57);
		len += (size_t)sprintf(text + len, "allow %s %u device d%u%s%s\n",
				       i % 3 ? "user" : "group", 1000 + i % 4, (i * 5) % 7,
				       i % 2 ? " bar 0" : "",
				       i % 4 == 1 ? " range 0x1000+0x3000" : "");
	}
	pol = parse_ok_len(text, len);
	for (size_t dev = 0; dev < 7; dev++)
		for (uid_t uid = 1000; uid < 1004; uid++)
			for (unsigned bar = 0; bar < 2; bar++) {
				const struct policy_peer peer = { .uid = uid, .gid = uid + 1 };
				const struct range r = { 0x2000, 0x1000 };
				const struct policy_rule *a = NULL, *b = NULL;
				do {
					a = policy_match_export(pol, &peer, dev, bar, &r, 1, a);
					b = reference_match(pol, &peer, dev, bar, &r, b);
					ck_assert_ptr_eq(a, b);
				} while (a);
			}
	/* Continuing after a rule of another device: its place in file order counts. */
	for (size_t k = 0; k < pol->n_rules; k += 13) {
		const struct policy_peer peer = { .uid = 1001, .gid = 1002 };
		const struct range r = { 0x2000, 0x1000 };
		const struct policy_rule *after = &pol->rules[k];
		size_t dev = (after->device + 1) % 7;

		ck_assert_ptr_eq(policy_match_export(pol, &peer, dev, 0, &r, 1, after),
				 reference_match(pol, &peer, dev, 0, &r, after));
	}
	/* A device without rules, one that is not there. */
	ck_assert_ptr_null(policy_match_export(pol, &alice, 7, 0, NULL, 0, NULL));
	ck_assert_ptr_null(policy_match_export(pol, &alice, 8, 0, NULL, 0, NULL));
	ck_assert_int_eq(pol->rules[0].device, 0);
	ck_assert_int_eq(pol->rules[1].device, 5);
	policy_free(pol);
	free(text);
}
END_TEST

/* ---- Explanations ---- */

static const char explain_policy[] =
    "device d0 pci 01:00.0\n"
    "device d1 sim bar 0 64K bar 2 1M\n"
    "device idle pci 02:00.0\n"
    "allow user bob device d0\n"			       /* 0 */
    "allow user alice device d1 bar 2 range 0x10000+0x20000\n" /* 1 */
    "allow group rdma device d1 bar 0\n"		       /* 2 */
    "allow user alice device d1 bar 2 range 0x40000+0x1000\n"; /* 3 */

static void assert_explain(const struct policy_peer *peer, const char *device, unsigned bar,
			   const struct range *ranges, size_t n, enum policy_verdict verdict,
			   int rule, const char *sentence)
{
	struct policy *pol = parse_ok(explain_policy);
	const struct policy_rule *r = (const void *)1;
	char msg[512];

	ck_assert_int_eq(
	    policy_explain_export(pol, peer, device, bar, ranges, n, &r, msg, sizeof(msg)),
	    verdict);
	if (rule < 0)
		ck_assert_ptr_null(r);
	else
		ck_assert_ptr_eq(r, &pol->rules[rule]);
	ck_assert_str_eq(msg, sentence);
	policy_free(pol);
}

START_TEST(test_explain)
{
	static const gid_t groups[] = { 2000, 100 };
	const struct policy_peer alice_db = { 1000, 1000, groups, 2, "db.service" };
	const struct range in = { 0x11000, 0x1000 }, out = { 0x2f000, 0x2000 };

	assert_explain(&alice, "nvme9", 0, NULL, 0, POLICY_NO_DEVICE, -1,
		       "device nvme9 is not in the policy");
	assert_explain(&alice, "idle", 0, NULL, 0, POLICY_NO_RULE_FOR_DEVICE, -1,
		       "no rule names device idle (policy:3)");
	assert_explain(&bob, "d0", 4, NULL, 0, POLICY_ALLOWED, 0, "allowed by policy:4 (user bob)");
	assert_explain(&alice, "d1", 2, &in, 1, POLICY_ALLOWED, 1,
		       "allowed by policy:5 (user alice)");
	assert_explain(&alice_db, "d0", 0, NULL, 0, POLICY_NO_RULE_FOR_PEER, 0,
		       "no rule for uid 1000, gid 1000, groups 2000, 100, unit db.service on "
		       "device d0; its rules: policy:4 (user bob)");
	assert_explain(&carol, "d1", 2, &in, 1, POLICY_NO_RULE_FOR_BAR, 2,
		       "no rule for bar 2 of device d1 for uid 1005, gid 2000, no known unit; its "
		       "rules on d1: policy:6 (bar 0)");
	assert_explain(
	    &alice, "d1", 2, &out, 1, POLICY_RANGE_OUTSIDE, 1,
	    "range 0x2f000+0x2000 of bar 2 of device d1 is outside what the rules allow; "
	    "rules for uid 1000 (user alice), gid 1000, no known unit on d1: policy:5 "
	    "(bar 2 0x10000+0x20000), policy:7 (bar 2 0x40000+0x1000)");
	assert_explain(&alice, "d1", 2, NULL, 0, POLICY_RANGE_OUTSIDE, 1,
		       "the whole of bar 2 of device d1 was asked for; rules for uid 1000 (user "
		       "alice), gid 1000, no known unit on d1: policy:5 (bar 2 0x10000+0x20000), "
		       "policy:7 (bar 2 0x40000+0x1000)");
}
END_TEST

START_TEST(test_explain_bounds)
{
	char *text = repeat("device d pci 01:00.0\n", "allow user ", " device d", 20);
	struct policy *pol = parse_ok(text);
	gid_t groups[12];
	struct policy_peer peer = { .uid = 4242, .gid = 7, .groups = groups, .n_groups = 12 };
	char msg[1024], tiny[16];

	for (size_t i = 0; i < ELEMENTSOF(groups); i++)
		groups[i] = (gid_t)i;
	ck_assert_int_eq(policy_explain_export(pol, &peer, "d", 0, NULL, 0, NULL, msg, sizeof(msg)),
			 POLICY_NO_RULE_FOR_PEER);
	ck_assert_str_eq(msg, "no rule for uid 4242, gid 7, groups 0, 1, 2, 3, 4, 5, 6, 7, ..., "
			      "no known unit on device d; its rules: policy:2 (user 0), policy:3 "
			      "(user 1), policy:4 (user 2), policy:5 (user 3), policy:6 (user 4) "
			      "and 15 more");
	/* Cut, never overrun; no buffer at all is fine too. */
	ck_assert_int_eq(
	    policy_explain_export(pol, &peer, "d", 0, NULL, 0, NULL, tiny, sizeof(tiny)),
	    POLICY_NO_RULE_FOR_PEER);
	ck_assert_str_eq(tiny, "no rule for uid");
	ck_assert_int_eq(policy_explain_export(pol, &peer, "d", 0, NULL, 0, NULL, NULL, 0),
			 POLICY_NO_RULE_FOR_PEER);
	policy_free(pol);
	free(text);
}
END_TEST

/* ---- Loading files ---- */

struct tmpdir {
	char path[64];
};

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fputs(text, f) >= 0, 1);
	ck_assert_int_eq(fclose(f), 0);
}

static void make_dir(const char *dir, const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	ck_assert_int_eq(mkdir(path, 0755), 0);
}

static void tmpdir_make(struct tmpdir *t)
{
	snprintf(t->path, sizeof(t->path), "/tmp/test-policy.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(t->path));
}

static void tmpdir_remove(const struct tmpdir *t)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->path);
	ck_assert_int_eq(system(cmd), 0);
}

static int load(const struct tmpdir *t, const char *name, struct policy **ret_policy,
		char **ret_error)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", t->path, name);
	return policy_load(path, &fake, ret_policy, ret_error);
}

START_TEST(test_load_dropins)
{
	struct tmpdir t;
	struct policy *pol = NULL;
	char *error = NULL, expected[256];

	tmpdir_make(&t);
	write_file(t.path, "policy", "device d0 pci 01:00.0\nallow user alice device d0\n");
	make_dir(t.path, "policy.d");
	/* A rule may name a device from a later file. */
	write_file(t.path, "policy.d/20-b.policy", "\ndevice d1 sim bar 2 4K\n");
	write_file(t.path, "policy.d/10-a.policy", "allow group rdma device d1 bar 2\n");
	write_file(t.path, "policy.d/3-c.policy", "admin user bob\n");
	/* Ignored: other names, hidden files, editor backups. */
	write_file(t.path, "policy.d/README", "not a policy\n");
	write_file(t.path, "policy.d/.10-a.policy.swp", "junk\n");
	write_file(t.path, "policy.d/.hidden.policy", "junk\n");
	write_file(t.path, "policy.d/10-a.policy~", "junk\n");
	write_file(t.path, "policy.d/x.policy.dpkg-old", "junk\n");
	write_file(t.path, "policy.d/.policy", "junk\n");

	ck_assert_int_eq(load(&t, "policy", &pol, &error), 0);
	ck_assert_ptr_null(error);
	ck_assert_uint_eq(pol->n_files, 4);
	snprintf(expected, sizeof(expected), "%s/policy", t.path);
	ck_assert_str_eq(pol->files[0], expected);
	snprintf(expected, sizeof(expected), "%s/policy.d/10-a.policy", t.path);
	ck_assert_str_eq(pol->files[1], expected);
	ck_assert_ptr_eq(pol->rules[1].file, pol->files[1]);
	ck_assert_uint_eq(pol->rules[1].line, 1);
	ck_assert_uint_eq(pol->rules[1].device, 1);
	snprintf(expected, sizeof(expected), "%s/policy.d/20-b.policy", t.path);
	ck_assert_str_eq(pol->files[2], expected);
	ck_assert_ptr_eq(pol->devices[1].file, pol->files[2]);
	ck_assert_uint_eq(pol->devices[1].line, 2);
	snprintf(expected, sizeof(expected), "%s/policy.d/3-c.policy", t.path);
	ck_assert_str_eq(pol->files[3], expected);
	ck_assert_uint_eq(pol->n_admins, 1);
	policy_free(pol);
	tmpdir_remove(&t);
}
END_TEST

/* A drop-in directory with no *.policy file in it adds nothing (and sorts nothing). */
START_TEST(test_load_empty_dropins)
{
	struct tmpdir t;
	struct policy *pol = NULL;
	char *error = NULL;

	tmpdir_make(&t);
	write_file(t.path, "policy", "device d0 pci 01:00.0\nallow user alice device d0\n");
	make_dir(t.path, "policy.d");
	write_file(t.path, "policy.d/README", "not a policy\n");
	ck_assert_int_eq(load(&t, "policy", &pol, &error), 0);
	ck_assert_ptr_null(error);
	ck_assert_uint_eq(pol->n_files, 1);
	ck_assert_uint_eq(pol->n_rules, 1);
	policy_free(pol);
	tmpdir_remove(&t);
}
END_TEST

START_TEST(test_load_error_file)
{
	struct tmpdir t;
	struct policy *pol = NULL;
	char *error = NULL, expected[256];

	tmpdir_make(&t);
	write_file(t.path, "policy", "device d0 pci 01:00.0\n");
	make_dir(t.path, "policy.d");
	write_file(t.path, "policy.d/10-a.policy", "allow user alice device d0\n");
	write_file(t.path, "policy.d/20-b.policy", "# b\nallow user alice device d0 bar 9\n");
	ck_assert_int_eq(load(&t, "policy", &pol, &error), -EINVAL);
	ck_assert_ptr_null(pol);
	snprintf(expected, sizeof(expected),
		 "%s/policy.d/20-b.policy:2:32: bar \"9\" is not a BAR number (0 to 5)", t.path);
	ck_assert_str_eq(error, expected);
	free(error);

	/* An undeclared device is reported in the file of the rule. */
	write_file(t.path, "policy.d/20-b.policy", "allow user alice device d9\n");
	ck_assert_int_eq(load(&t, "policy", &pol, &error), -EINVAL);
	snprintf(expected, sizeof(expected),
		 "%s/policy.d/20-b.policy:1:25: device \"d9\" is not "
		 "declared",
		 t.path);
	ck_assert_str_eq(error, expected);
	free(error);
	tmpdir_remove(&t);
}
END_TEST

START_TEST(test_load_without_dropins)
{
	struct tmpdir t;
	struct policy *pol = NULL;
	char *error = NULL, expected[256];

	tmpdir_make(&t);
	write_file(t.path, "policy", "admin user alice\n");
	ck_assert_int_eq(load(&t, "policy", &pol, &error), 0);
	ck_assert_uint_eq(pol->n_files, 1);
	ck_assert_uint_eq(pol->n_admins, 1);
	policy_free(pol);
	pol = NULL;

	/* The main file must exist. */
	ck_assert_int_eq(load(&t, "nosuch", &pol, &error), -ENOENT);
	ck_assert_ptr_null(pol);
	snprintf(expected, sizeof(expected), "%s/nosuch: cannot read: No such file or directory",
		 t.path);
	ck_assert_str_eq(error, expected);
	free(error);

	/* A directory is not a policy, nor is a file a drop-in directory. */
	ck_assert_int_eq(load(&t, "", &pol, &error), -EINVAL);
	snprintf(expected, sizeof(expected), "%s/: not a regular file", t.path);
	ck_assert_str_eq(error, expected);
	free(error);
	write_file(t.path, "policy.d", "\n");
	ck_assert_int_eq(load(&t, "policy", &pol, &error), -ENOTDIR);
	snprintf(expected, sizeof(expected), "%s/policy.d: cannot open directory: Not a directory",
		 t.path);
	ck_assert_str_eq(error, expected);
	free(error);
	tmpdir_remove(&t);
}
END_TEST

START_TEST(test_load_bad_dropin)
{
	struct tmpdir t;
	struct policy *pol = NULL;
	char *error = NULL, expected[256];

	tmpdir_make(&t);
	write_file(t.path, "policy", "\n");
	make_dir(t.path, "policy.d");
	make_dir(t.path, "policy.d/sub.policy");
	ck_assert_int_eq(load(&t, "policy", &pol, &error), -EINVAL);
	snprintf(expected, sizeof(expected), "%s/policy.d/sub.policy: not a regular file", t.path);
	ck_assert_str_eq(error, expected);
	free(error);
	tmpdir_remove(&t);
}
END_TEST

START_TEST(test_load_too_big)
{
	struct tmpdir t;
	struct policy *pol = NULL;
	char *error = NULL, path[256], expected[256];
	int fd;

	tmpdir_make(&t);
	snprintf(path, sizeof(path), "%s/policy", t.path);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, POLICY_MAX_SIZE), 0);
	ck_assert_int_eq(close(fd), 0);
	/* Exactly the limit (all NUL bytes here) is read, and refused for its content. */
	ck_assert_int_eq(load(&t, "policy", &pol, &error), -EINVAL);
	snprintf(expected, sizeof(expected), "%s/policy:1:1: invalid character 0x00", t.path);
	ck_assert_str_eq(error, expected);
	free(error);
	ck_assert_int_eq(truncate(path, POLICY_MAX_SIZE + 1), 0);
	ck_assert_int_eq(load(&t, "policy", &pol, &error), -E2BIG);
	snprintf(expected, sizeof(expected), "%s/policy: file is larger than 8388608 bytes",
		 t.path);
	ck_assert_str_eq(error, expected);
	free(error);
	tmpdir_remove(&t);
}
END_TEST

START_TEST(test_load_too_many_files)
{
	struct tmpdir t;
	struct policy *pol = NULL;
	char *error = NULL, name[64], expected[256];

	tmpdir_make(&t);
	write_file(t.path, "policy", "\n");
	make_dir(t.path, "policy.d");
	for (int i = 0; i < POLICY_MAX_FILES - 1; i++) {
		snprintf(name, sizeof(name), "policy.d/%03d.policy", i);
		write_file(t.path, name, "\n");
	}
	ck_assert_int_eq(load(&t, "policy", &pol, &error), 0);
	ck_assert_uint_eq(pol->n_files, POLICY_MAX_FILES);
	policy_free(pol);
	write_file(t.path, "policy.d/999.policy", "\n");
	ck_assert_int_eq(load(&t, "policy", &pol, &error), -E2BIG);
	snprintf(expected, sizeof(expected), "%s/policy.d: too many policy files (at most 128)",
		 t.path);
	ck_assert_str_eq(error, expected);
	free(error);
	tmpdir_remove(&t);
}
END_TEST

START_TEST(test_where_long_path)
{
	static const char dir[] = "/etc/p2pbuf/policy.d/a-very-long-directory-name-indeed/and-more";
	char path[256], expected[64];
	struct policy *pol = NULL;
	char *error = NULL;
	const char *text = "device d pci 01:00.0\n\n\n\n\n\n\n\n\n\n\n\nallow user bob device d\n";

	snprintf(path, sizeof(path), "%s/10-rdma-and-friends.policy", dir);
	ck_assert_int_eq(policy_parse(path, text, strlen(text), &fake, &pol, &error), 0);
	/* The end of the path is kept: it is the part that tells files apart. */
	snprintf(expected, sizeof(expected), "...%s:13", path + strlen(path) - 57);
	ck_assert_uint_eq(strlen(expected), 63);
	ck_assert_str_eq(pol->rules[0].where, expected);
	ck_assert_str_eq(pol->rules[0].file, path);
	policy_free(pol);
}
END_TEST

START_TEST(test_example_policy)
{
	const char *srcdir = getenv("top_srcdir");
	struct policy *pol = NULL;
	char *error = NULL, path[4096];
	int r;

	snprintf(path, sizeof(path), "%s/policy/example.policy", srcdir ? srcdir : ".");
	r = policy_load(path, &fake, &pol, &error);
	ck_assert_msg(r == 0, "%s: %d %s", path, r, error ? error : "");
	ck_assert_uint_eq(pol->n_devices, 1);
	ck_assert_str_eq(pol->devices[0].name, "sim0");
	ck_assert(pol->devices[0].sim_msix_table.present);
	ck_assert(pol->devices[0].sim_msix_pba.present);
	ck_assert_uint_eq(pol->n_rules, 2);
	ck_assert_uint_eq(pol->n_admins, 1);
	ck_assert_uint_eq(pol->n_observers, 1);
	policy_free(pol);
}
END_TEST

START_TEST(test_system_resolver)
{
	uint32_t id = 4242;

	ck_assert_int_eq(policy_system_resolver.user("0", &id), 0);
	ck_assert_uint_eq(id, 0);
	ck_assert_int_eq(policy_system_resolver.user("4294967294", &id), 0);
	ck_assert_uint_eq(id, 4294967294u);
	ck_assert_int_eq(policy_system_resolver.user("4294967295", &id), -EINVAL);
	ck_assert_int_eq(policy_system_resolver.user("99999999999999999999999", &id), -EINVAL);
	ck_assert_int_eq(policy_system_resolver.user("root", &id), 0);
	ck_assert_uint_eq(id, 0);
	ck_assert_int_eq(policy_system_resolver.group("root", &id), 0);
	ck_assert_uint_eq(id, 0);
	id = 4242;
	ck_assert_int_eq(policy_system_resolver.user("no-such-user-p2pbuf", &id), -ENOENT);
	ck_assert_int_eq(policy_system_resolver.group("no-such-group-p2pbuf", &id), -ENOENT);
	ck_assert_int_eq(policy_system_resolver.group("", &id), -ENOENT);
	ck_assert_uint_eq(id, 4242);
}
END_TEST

/* ---- Strict modes: who could have written the policy ---- */

/* t/name, to free; "." is t itself, as messages name it. */
static char *path_in(const struct tmpdir *t, const char *name)
{
	char *path = NULL;

	if (strcmp(name, ".") == 0)
		path = strdup(t->path);
	else
		ck_assert_int_ge(asprintf(&path, "%s/%s", t->path, name), 0);
	ck_assert_ptr_nonnull(path);
	return path;
}

/* Load t/policy with flags; the diagnostics, to free. */
static struct policy_diags load_diags(const struct tmpdir *t, unsigned flags, int r_expected)
{
	const struct policy_load_opts opts = { .flags = flags };
	struct policy_diags d = { .v = NULL };
	struct policy *pol = NULL;
	char *path = path_in(t, "policy");
	int r = policy_load_ex(path, &fake, &opts, &pol, &d);

	ck_assert_msg(r == r_expected, "%d, expected %d (%zu diagnostics)", r, r_expected, d.n);
	ck_assert(r == 0 ? pol != NULL : pol == NULL);
	policy_free(pol);
	free(path);
	return d;
}

/* The one diagnostic of d: about name (in t) as a whole, "problem; fix: FIX PATH". */
static void assert_untrusted(const struct tmpdir *t, struct policy_diags *d, const char *name,
			     const char *problem, const char *fix, bool warning)
{
	char *path = path_in(t, name), expected[512];

	snprintf(expected, sizeof(expected), "%s; fix: %s %s", problem, fix, path);
	ck_assert_uint_eq(d->n, 1);
	ck_assert_str_eq(d->v[0].file, path);
	ck_assert_uint_eq(d->v[0].line, 0);
	ck_assert_uint_eq(d->v[0].column, 0);
	ck_assert_ptr_null(d->v[0].text);
	ck_assert_str_eq(d->v[0].message, expected);
	ck_assert(d->v[0].warning == warning);
	policy_diags_free(d);
	free(path);
}

/* name in t gets mode; strict, the load fails naming it; lax, it warns and loads. */
static void check_mode(const struct tmpdir *t, const char *name, mode_t mode, const char *problem,
		       const char *fix)
{
	char *path = path_in(t, name);
	struct policy_diags d;
	struct stat st;

	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(chmod(path, mode), 0);
	d = load_diags(t, POLICY_LOAD_STRICT, -EPERM);
	assert_untrusted(t, &d, name, problem, fix, false);
	d = load_diags(t, 0, 0);
	assert_untrusted(t, &d, name, problem, fix, true);
	ck_assert_int_eq(chmod(path, st.st_mode & 07777), 0);
	free(path);
}

static void make_trusted_policy(struct tmpdir *t)
{
	tmpdir_make(t); /* 0700 */
	write_file(t->path, "policy", "device d0 pci 01:00.0\n");
	make_dir(t->path, "policy.d");
	write_file(t->path, "policy.d/a.policy", "allow user alice device d0\n");
	ck_assert_int_eq(chmod(t->path, 0755), 0);
}

START_TEST(test_strict_modes)
{
	struct tmpdir t;
	struct policy_diags d;

	umask(022);
	make_trusted_policy(&t);
	d = load_diags(&t, POLICY_LOAD_STRICT, 0);
	ck_assert_uint_eq(d.n, 0);
	policy_diags_free(&d);
	check_mode(&t, "policy", 0666, "writable by its group and others (mode 0666)",
		   "chmod go-w");
	check_mode(&t, "policy", 0646, "writable by others (mode 0646)", "chmod o-w");
	check_mode(&t, "policy.d/a.policy", 0664, "writable by its group (mode 0664)", "chmod g-w");
	check_mode(&t, "policy.d", 0777, "writable by its group and others (mode 0777)",
		   "chmod go-w");
	/* The sticky bit of /tmp is no excuse: anyone can still add a drop-in. */
	check_mode(&t, "policy.d", 01777, "writable by its group and others (mode 1777)",
		   "chmod go-w");
	check_mode(&t, ".", 0757, "writable by others (mode 0757)", "chmod o-w");
	tmpdir_remove(&t);
}
END_TEST

/* The check is on the fd that is read: a problem is reported once, with the others. */
START_TEST(test_strict_every_problem)
{
	struct tmpdir t;
	struct policy_diags d;
	char *dir;

	umask(022);
	make_trusted_policy(&t);
	write_file(t.path, "policy.d/b.policy", "alow\n");
	dir = path_in(&t, "policy.d/b.policy");
	ck_assert_int_eq(chmod(dir, 0666), 0);
	free(dir);
	d = load_diags(&t, POLICY_LOAD_STRICT, -EPERM);
	ck_assert_uint_eq(d.n, 2);
	ck_assert_uint_eq(d.v[0].line, 0);
	ck_assert(!d.v[0].warning);
	ck_assert_uint_eq(d.v[1].line, 1);
	ck_assert_str_eq(d.v[1].text, "alow");
	policy_diags_free(&d);
	tmpdir_remove(&t);
}
END_TEST

START_TEST(test_strict_owner)
{
	struct tmpdir t;
	struct policy_diags d;
	char *path, expected[256];
	struct policy *pol = NULL;
	char *error = NULL;

	if (geteuid() != 0) {
		/* Only root can give a file away: the rest of the check ran in the others. */
		printf("test_strict_owner: not root, owner check not tested\n");
		return;
	}
	umask(022);
	make_trusted_policy(&t);
	path = path_in(&t, "policy.d/a.policy");
	ck_assert_int_eq(chown(path, 65534, 65534), 0);
	d = load_diags(&t, POLICY_LOAD_STRICT, -EPERM);
	assert_untrusted(&t, &d, "policy.d/a.policy", "owned by uid 65534, not by root",
			 "chown root", false);
	d = load_diags(&t, 0, 0);
	assert_untrusted(&t, &d, "policy.d/a.policy", "owned by uid 65534, not by root",
			 "chown root", true);
	/* The daemon's policy_load is strict. */
	free(path);
	path = path_in(&t, "policy");
	ck_assert_int_eq(policy_load(path, &fake, &pol, &error), -EPERM);
	ck_assert_ptr_null(pol);
	snprintf(expected, sizeof(expected),
		 "%s/policy.d/a.policy: owned by uid 65534, not by root; fix: chown root "
		 "%s/policy.d/a.policy",
		 t.path, t.path);
	ck_assert_str_eq(error, expected);
	free(error);
	free(path);
	tmpdir_remove(&t);
}
END_TEST

START_TEST(test_policy_load_strict)
{
	struct tmpdir t;
	struct policy *pol = NULL;
	char *error = NULL, expected[256];

	umask(022);
	make_trusted_policy(&t);
	ck_assert_int_eq(chmod(t.path, 0777), 0);
	ck_assert_int_eq(load(&t, "policy", &pol, &error), -EPERM);
	snprintf(expected, sizeof(expected),
		 "%s: writable by its group and others (mode 0777); fix: chmod go-w %s", t.path,
		 t.path);
	ck_assert_str_eq(error, expected);
	free(error);
	tmpdir_remove(&t);
}
END_TEST

/* ---- policy_load_ex: an editor's pending text, the list of files ---- */

START_TEST(test_load_override)
{
	struct tmpdir t;
	struct policy *pol = NULL;
	struct policy_diags d = { .v = NULL };
	struct policy_load_opts opts = { .flags = POLICY_LOAD_STRICT };
	char *main_path, *new_dropin;
	static const char pending[] = "allow user bob device d0\nallow user bob device d9\n";

	umask(022);
	make_trusted_policy(&t);
	main_path = path_in(&t, "policy");
	/* A drop-in that is not on disk yet, between a.policy and z.policy. */
	write_file(t.path, "policy.d/z.policy", "admin user bob\n");
	new_dropin = path_in(&t, "policy.d/m.policy");
	opts.override_file = new_dropin;
	opts.override_text = pending;
	opts.override_len = strlen(pending);
	ck_assert_int_eq(policy_load_ex(main_path, &fake, &opts, &pol, &d), -EINVAL);
	ck_assert_uint_eq(d.n, 1);
	ck_assert_str_eq(d.v[0].file, new_dropin);
	ck_assert_uint_eq(d.v[0].line, 2);
	ck_assert_str_eq(d.v[0].message, "device \"d9\" is not declared");
	policy_diags_free(&d);
	opts.override_len = strlen("allow user bob device d0\n");
	ck_assert_int_eq(policy_load_ex(main_path, &fake, &opts, &pol, &d), 0);
	ck_assert_uint_eq(d.n, 0);
	ck_assert_uint_eq(pol->n_files, 4);
	ck_assert_str_eq(pol->files[2], new_dropin);
	ck_assert_uint_eq(pol->rules[1].who.id, 1001);
	policy_free(pol);
	policy_diags_free(&d);
	/* The main file's text, replacing what is on disk. */
	opts.override_file = main_path;
	opts.override_text = "device d0 sim bar 0 4K\n";
	opts.override_len = strlen(opts.override_text);
	ck_assert_int_eq(policy_load_ex(main_path, &fake, &opts, &pol, NULL), 0);
	ck_assert_int_eq(pol->devices[0].kind, POLICY_DEVICE_SIM);
	ck_assert_uint_eq(pol->n_files, 3);
	policy_free(pol);
	free(new_dropin);
	free(main_path);
	tmpdir_remove(&t);
}
END_TEST

START_TEST(test_list_files)
{
	struct tmpdir t;
	char **files = NULL, *error = NULL, *path, expected[256];
	size_t n = 0;

	tmpdir_make(&t);
	path = path_in(&t, "policy");
	/* Neither the file nor its directory need exist yet. */
	ck_assert_int_eq(policy_list_files(path, &files, &n, &error), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(files[0], path);
	policy_files_free(files, n);
	make_dir(t.path, "policy.d");
	write_file(t.path, "policy.d/20-b.policy", "\n");
	write_file(t.path, "policy.d/10-a.policy", "\n");
	write_file(t.path, "policy.d/.hidden.policy", "\n");
	write_file(t.path, "policy.d/notes.txt", "\n");
	ck_assert_int_eq(policy_list_files(path, &files, &n, &error), 0);
	ck_assert_uint_eq(n, 3);
	snprintf(expected, sizeof(expected), "%s/policy.d/10-a.policy", t.path);
	ck_assert_str_eq(files[1], expected);
	snprintf(expected, sizeof(expected), "%s/policy.d/20-b.policy", t.path);
	ck_assert_str_eq(files[2], expected);
	policy_files_free(files, n);
	policy_files_free(NULL, 0);
	free(path);
	/* A file where the directory should be. */
	write_file(t.path, "x.d", "\n");
	path = path_in(&t, "x");
	ck_assert_int_eq(policy_list_files(path, &files, &n, &error), -ENOTDIR);
	snprintf(expected, sizeof(expected), "%s/x.d: cannot open directory: Not a directory",
		 t.path);
	ck_assert_str_eq(error, expected);
	free(error);
	free(path);
	tmpdir_remove(&t);
}
END_TEST

/* ---- Allocation failures ---- */

/* This file builds two programs: test-policy, and test-policy-oom (TEST_POLICY_OOM=1) with
 * only the out-of-memory tests below. Those need malloc replaced, which valgrind and the
 * sanitizers do not allow; apart, they can report themselves skipped (exit 77) there without
 * hiding what the other tests found. */
#ifndef TEST_POLICY_OOM
#define TEST_POLICY_OOM 0
#endif

/* Every allocation, the test's and libc's own (strdup, opendir), goes through these, so that
 * the n-th one from arming can be made to fail. A global, since malloc has no context. Left
 * out under sanitizers, whose allocator must see every block, and from test-policy, whose
 * tests should run on the real malloc. */
#if !TEST_POLICY_OOM || defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ALLOC_INJECTION 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer) ||                         \
    __has_feature(thread_sanitizer)
#define ALLOC_INJECTION 0
#endif
#endif
#ifndef ALLOC_INJECTION
#define ALLOC_INJECTION 1
#endif

static unsigned long alloc_countdown;

#if ALLOC_INJECTION
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);

static bool alloc_fails(void)
{
	if (alloc_countdown == 0 || --alloc_countdown > 0)
		return false;
	errno = ENOMEM;
	return true;
}

void *malloc(size_t size)
{
	return alloc_fails() ? NULL : __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
	return alloc_fails() ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
	return alloc_fails() ? NULL : __libc_realloc(p, size);
}

void *reallocarray(void *p, size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, n * size);
}
#endif

static const char oom_policy[] = "device d0 pci 01:00.0\n"
				 "device d1 sim bar 0 64K bar 2 1M msix-table 0 0+0x800\n"
				 "allow user alice device d0\n"
				 "allow group rdma device d1 bar 2 range 0+4K ttl 1m\n"
				 "allow group rdma device d1 bar 0 range 60K+4K ttl 1m\n"
				 "allow user 5 device d1\n"
				 "allow user 6 device d1\n"
				 "allow user 7 device d1\n"
				 "allow user 8 device d1\n"
				 "allow user 9 device d1\n"
				 "admin user bob\n"
				 "observer group rdma\n";

/* Fail the first, second, ... allocation until the parse gets through: every failure must
 * report -ENOMEM (or the text's own error) and leak nothing, which valgrind checks. */
static void parse_with_failures(const char *text, int r_expected)
{
	for (unsigned long n = 1;; n++) {
		struct policy *pol = NULL;
		char *error = NULL;
		int r;

		alloc_countdown = n;
		r = policy_parse("policy", text, strlen(text), &fake, &pol, &error);
		if (alloc_countdown > 0) {
			/* Not a single allocation failed: the run without failures. Reaching it
			 * at once would mean nothing was ever made to fail. */
			alloc_countdown = 0;
			ck_assert_uint_gt(n, 1);
			ck_assert_int_eq(r, r_expected);
			policy_free(pol);
			free(error);
			return;
		}
		ck_assert_msg(r == -ENOMEM || r == r_expected, "allocation %lu: %d", n, r);
		if (r == -ENOMEM)
			ck_assert(!error || strcmp(error, "out of memory") == 0);
		ck_assert_ptr_null(pol);
		free(error);
	}
}

/* Under valgrind (without --soname-synonyms=somalloc=nouserintercepts) or a sanitizer, the
 * tool's malloc replaces ours and nothing can be made to fail: main then skips the program. */
static bool injection_works(void)
{
	/* Called through a volatile pointer, lest the compiler drop the malloc/free pair. */
	void *(*volatile alloc)(size_t) = malloc;
	void *p;

	alloc_countdown = 1;
	p = alloc(1);
	alloc_countdown = 0;
	free(p);
	return !p;
}

START_TEST(test_oom_parse)
{
	char text[sizeof(oom_policy) + 64];

	parse_with_failures(oom_policy, 0);
	/* The same, failing at the end of parsing and in resolving. */
	snprintf(text, sizeof(text), "%sadmin user carol\n", oom_policy);
	parse_with_failures(text, -EINVAL);
	snprintf(text, sizeof(text), "%sallow user 10 device d2\n", oom_policy);
	parse_with_failures(text, -EINVAL);
}
END_TEST

START_TEST(test_oom_load)
{
	struct tmpdir t;
	char path[256];
	unsigned long failures = 0;
	bool done;

	tmpdir_make(&t);
	write_file(t.path, "policy", oom_policy);
	make_dir(t.path, "policy.d");
	write_file(t.path, "policy.d/a.policy", "admin user 1\n");
	write_file(t.path, "policy.d/b.policy", "admin user 2\n");
	write_file(t.path, "policy.d/c.policy", "admin user 3\n");
	snprintf(path, sizeof(path), "%s/policy", t.path);
	for (unsigned long n = 1;; n++) {
		struct policy *pol = NULL;
		char *error = NULL;
		int r;

		alloc_countdown = n;
		r = policy_load(path, &fake, &pol, &error);
		done = alloc_countdown > 0;
		alloc_countdown = 0;
		/* glibc's asprintf survives a failed realloc (it only shrinks its buffer), so a
		 * failure may also end in the whole policy. Nothing in between is acceptable. */
		if (r == 0) {
			ck_assert_uint_eq(pol->n_admins, 4);
			ck_assert_uint_eq(pol->n_rules, 8);
			policy_free(pol);
			if (done)
				break;
			continue;
		}
		ck_assert_msg(!done, "no allocation failed, yet %d %s", r, error ? error : "");
		ck_assert_msg(r == -ENOMEM, "allocation %lu: %d %s", n, r, error ? error : "");
		ck_assert_ptr_null(pol);
		free(error);
		failures++;
	}
	ck_assert_uint_gt(failures, 10);
	tmpdir_remove(&t);
}
END_TEST

/* Every diagnostic, under allocation failures: each run ends in -ENOMEM or in all of them. */
START_TEST(test_oom_load_ex)
{
	struct tmpdir t;
	char path[256];
	unsigned long failures = 0;
	bool done = false;

	umask(022);
	tmpdir_make(&t);
	write_file(t.path, "policy", oom_policy);
	make_dir(t.path, "policy.d");
	write_file(t.path, "policy.d/a.policy", "allow user 1 device nope\nalow\n");
	snprintf(path, sizeof(path), "%s/policy.d/a.policy", t.path);
	ck_assert_int_eq(chmod(path, 0666), 0);
	snprintf(path, sizeof(path), "%s/policy", t.path);
	for (unsigned long n = 1; !done; n++) {
		struct policy_diags d = { .v = NULL };
		struct policy *pol = NULL;
		int r;

		alloc_countdown = n;
		r = policy_load_ex(path, &fake, NULL, &pol, &d);
		done = alloc_countdown > 0;
		alloc_countdown = 0;
		ck_assert_ptr_null(pol);
		if (r == -EINVAL) {
			ck_assert_uint_eq(d.n, 3);
			ck_assert(d.v[0].warning);
			ck_assert_str_eq(d.v[1].message, "device \"nope\" is not declared");
		} else {
			ck_assert_msg(!done && r == -ENOMEM, "allocation %lu: %d", n, r);
			failures++;
		}
		policy_diags_free(&d);
	}
	ck_assert_uint_gt(failures, 10);
	tmpdir_remove(&t);
}
END_TEST

static Suite *policy_suite(void)
{
	Suite *s = suite_create("policy");
	TCase *tc;

	tc = tcase_create("parse");
	tcase_add_test(tc, test_empty);
	tcase_add_test(tc, test_sim_device_full);
	tcase_add_test(tc, test_device_defaults);
	tcase_add_test(tc, test_pci_device);
	tcase_add_test(tc, test_rules);
	tcase_add_test(tc, test_roles);
	tcase_add_test(tc, test_lexical);
	tcase_add_loop_test(tc, test_sizes, 0, ELEMENTSOF(good_sizes));
	tcase_add_loop_test(tc, test_bad_sizes, 0, ELEMENTSOF(bad_sizes));
	tcase_add_loop_test(tc, test_bad_ranges, 0, ELEMENTSOF(bad_ranges));
	tcase_add_loop_test(tc, test_durations, 0, ELEMENTSOF(good_durations));
	tcase_add_test(tc, test_zero_durations);
	tcase_add_test(tc, test_example_policy);
	tcase_add_test(tc, test_subject_names);
	tcase_add_loop_test(tc, test_unit_valid, 0, ELEMENTSOF(good_units));
	tcase_add_loop_test(tc, test_unit_invalid, 0, ELEMENTSOF(bad_units));
	tcase_add_test(tc, test_unit_limits);
	tcase_add_test(tc, test_max_bytes);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_loop_test(tc, test_errors, 0, ELEMENTSOF(errors));
	tcase_add_test(tc, test_nul_byte);
	tcase_add_test(tc, test_too_many_words);
	tcase_add_test(tc, test_error_optional);
	tcase_add_test(tc, test_every_error);
	tcase_add_test(tc, test_error_formats);
	tcase_add_test(tc, test_error_text_cut);
	tcase_add_test(tc, test_max_diags);
	suite_add_tcase(s, tc);

	tc = tcase_create("limits");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_limit_devices);
	tcase_add_test(tc, test_limit_rules);
	tcase_add_test(tc, test_limit_roles);
	tcase_add_test(tc, test_limit_size);
	tcase_add_test(tc, test_limit_rules_diags);
	suite_add_tcase(s, tc);

	tc = tcase_create("match");
	tcase_add_test(tc, test_match_basic);
	tcase_add_test(tc, test_match_groups);
	tcase_add_test(tc, test_match_ranges);
	tcase_add_test(tc, test_match_iteration);
	tcase_add_test(tc, test_match_empty_policy);
	tcase_add_test(tc, test_roles_match);
	tcase_add_test(tc, test_unit_match);
	tcase_add_test(tc, test_match_index);
	tcase_add_test(tc, test_explain);
	tcase_add_test(tc, test_explain_bounds);
	suite_add_tcase(s, tc);

	tc = tcase_create("load");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_load_dropins);
	tcase_add_test(tc, test_load_empty_dropins);
	tcase_add_test(tc, test_load_error_file);
	tcase_add_test(tc, test_load_without_dropins);
	tcase_add_test(tc, test_load_bad_dropin);
	tcase_add_test(tc, test_load_too_big);
	tcase_add_test(tc, test_load_too_many_files);
	tcase_add_test(tc, test_where_long_path);
	tcase_add_test(tc, test_system_resolver);
	tcase_add_test(tc, test_strict_modes);
	tcase_add_test(tc, test_strict_every_problem);
	tcase_add_test(tc, test_strict_owner);
	tcase_add_test(tc, test_policy_load_strict);
	tcase_add_test(tc, test_load_override);
	tcase_add_test(tc, test_list_files);
	suite_add_tcase(s, tc);

	return s;
}

static Suite *oom_suite(void)
{
	Suite *s = suite_create("policy-oom");
	TCase *tc = tcase_create("oom");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_oom_parse);
	tcase_add_test(tc, test_oom_load);
	tcase_add_test(tc, test_oom_load_ex);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr;
	int failed;

	if (TEST_POLICY_OOM && !injection_works()) {
		/* 77: automake's SKIP, so that the summary says these paths went untested. */
		printf("SKIP: allocation failures cannot be injected here (valgrind or a sanitizer "
		       "owns malloc): out-of-memory paths not tested\n");
		return 77;
	}
	sr = srunner_create(TEST_POLICY_OOM ? oom_suite() : policy_suite());

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
