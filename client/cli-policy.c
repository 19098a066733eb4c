/* p2pbuf-client policy (check, show, test, add, remove, edit) and reload: the policy judged
 * offline by the daemon's own loader (libpolicy), edited in place by the policy editor
 * (policy-edit.h), and the admin's reload request over the socket.
 *
 * The policy verbs read and write files only; they talk to the daemon only to ask it to
 * reload after an edit, and an edit stays installed whatever the daemon answers. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "policy-edit.h"
#include "units.h"

/* At most this many --group options: a what-if question, not a real process's credentials. */
#define TEST_MAX_GROUPS 256
/* Groups taken from the user database when none are given (NGROUPS_MAX on Linux). */
#define TEST_MAX_DB_GROUPS 65536

struct policy_args {
	const char *policy; /* --policy */
	bool no_reload;
	const char *file;  /* add --file */
	const char *match; /* remove --match */
	/* test */
	const char *user;
	bool have_uid;
	uid_t uid;
	gid_t groups[TEST_MAX_GROUPS];
	size_t n_groups;
	const char *unit;
	bool have_bar, have_offset, have_length;
	unsigned bar;
	uint64_t offset, length;
};

enum {
	OPT_POLICY = 'p',
	OPT_NO_RELOAD = 0x200,
	OPT_FILE,
	OPT_MATCH,
	OPT_USER,
	OPT_UID,
	OPT_GROUP,
	OPT_UNIT,
	OPT_BAR,
	OPT_OFFSET,
	OPT_LENGTH,
};

#define SHORTOPTS CLI_COMMON_SHORTOPTS "p:"
/* clang-format off */
#define POLICY_LONGOPTS                                                                            \
	CLI_COMMON_LONGOPTS,                                                                       \
	{ "policy", required_argument, NULL, OPT_POLICY }
#define EDIT_LONGOPTS                                                                              \
	POLICY_LONGOPTS,                                                                           \
	{ "no-reload", no_argument, NULL, OPT_NO_RELOAD }
/* clang-format on */

static const struct option policy_only[] = { POLICY_LONGOPTS, {} };
static const struct option test_options[] = {
	POLICY_LONGOPTS,
	{ "user", required_argument, NULL, OPT_USER },
	{ "uid", required_argument, NULL, OPT_UID },
	{ "group", required_argument, NULL, OPT_GROUP },
	{ "unit", required_argument, NULL, OPT_UNIT },
	{ "bar", required_argument, NULL, OPT_BAR },
	{ "offset", required_argument, NULL, OPT_OFFSET },
	{ "length", required_argument, NULL, OPT_LENGTH },
	{},
};
static const struct option add_options[] = {
	EDIT_LONGOPTS,
	{ "file", required_argument, NULL, OPT_FILE },
	{},
};
static const struct option remove_options[] = {
	EDIT_LONGOPTS,
	{ "match", required_argument, NULL, OPT_MATCH },
	{},
};
static const struct option edit_options[] = { EDIT_LONGOPTS, {} };

/* A group of the test's peer: a number, or a name from the group database. */
static int test_group(struct cli *cli, struct policy_args *a, const char *arg)
{
	uint32_t gid;
	uint64_t v;

	if (a->n_groups == TEST_MAX_GROUPS)
		return cli_usage(cli, "more than %d --group options", TEST_MAX_GROUPS);
	if (cli_parse_id(arg, &v) == 0 && v < UINT32_MAX)
		gid = (uint32_t)v;
	else if (policy_system_resolver.group(arg, &gid) < 0)
		return cli_usage(cli, "unknown group '%s'", arg);
	a->groups[a->n_groups++] = gid;
	return -1;
}

static int test_option(struct cli *cli, struct policy_args *a, int c, const char *arg)
{
	uint64_t v;
	int r;

	switch (c) {
	case OPT_USER:
		a->user = arg;
		return -1;
	case OPT_UID:
		if (cli_parse_id(arg, &v) < 0 || v >= UINT32_MAX)
			return cli_usage(cli, "bad uid '%s'", arg);
		a->uid = (uid_t)v;
		a->have_uid = true;
		return -1;
	case OPT_GROUP:
		return test_group(cli, a, arg);
	case OPT_UNIT:
		a->unit = arg;
		return -1;
	case OPT_BAR:
		if (cli_parse_id(arg, &v) < 0 || v >= POLICY_MAX_BARS)
			return cli_usage(cli, "bad BAR '%s' (0 to %d)", arg, POLICY_MAX_BARS - 1);
		a->bar = (unsigned)v;
		a->have_bar = true;
		return -1;
	default:
		r = units_parse_offset_str(arg, c == OPT_OFFSET ? &a->offset : &a->length);
		if (r < 0)
			return cli_usage(
			    cli, "bad %s '%s': %s", c == OPT_OFFSET ? "offset" : "length", arg,
			    r == -ERANGE ? "too large"
					 : "bytes, K, M, G or T (powers of 1024), or 0x hex");
		*(c == OPT_OFFSET ? &a->have_offset : &a->have_length) = true;
		return -1;
	}
}

static int policy_option(struct cli *cli, int c, const char *arg, void *ctx)
{
	struct policy_args *a = ctx;

	switch (c) {
	case OPT_POLICY:
		a->policy = arg;
		return -1;
	case OPT_NO_RELOAD:
		a->no_reload = true;
		return -1;
	case OPT_FILE:
		a->file = arg;
		return -1;
	case OPT_MATCH:
		a->match = arg;
		return -1;
	default:
		return test_option(cli, a, c, arg);
	}
}

/* The verb's options, then between min and max operands. Returns -1 to go on, or the exit
 * status. */
static int parse_args(struct cli *cli, int argc, char **argv, const struct option *options,
		      struct policy_args *a, int min, int max)
{
	int r = cli_parse_options(cli, argc, argv, SHORTOPTS, options, policy_option, a);

	if (r >= 0)
		return r;
	if (!a->policy || !a->policy[0])
		a->policy = P2PBUF_POLICY_PATH;
	if (argc - optind < min)
		return cli_usage(cli, "missing %s", cli->verb->synopsis);
	if (argc - optind > max)
		return cli_usage(cli, "unexpected argument '%s'", argv[optind + max]);
	return -1;
}

/* ---- Diagnostics: file:line:column: message, the line, a caret under the column ---- */

/* The policy's line as a terminal shows it: tabs kept (so that the caret lines up under
 * them), anything else unsafe escaped. Free the result. */
static char *echo_text(const char *s, size_t len)
{
	_cleanup_free_ char *raw = strndup(s, len);
	char *out = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&out, &size);

	if (!raw || !f)
		cli_oom();
	for (char *piece = raw, *tab;; piece = tab + 1) {
		_cleanup_free_ char *esc = NULL;
		tab = strchr(piece, '\t');
		if (tab)
			*tab = '\0';
		esc = cli_escape_text(piece, false);
		fputs(esc, f);
		if (!tab)
			break;
		fputc('\t', f);
	}
	if (fclose(f) != 0)
		cli_oom();
	return out;
}

/* The line, and a caret under the column's byte: one blank per character before it, a tab
 * for a tab, nothing for the continuation bytes of UTF-8. */
static void print_caret(FILE *f, const char *text, unsigned column)
{
	size_t len = strlen(text), before = column - 1 < len ? column - 1 : len;
	_cleanup_free_ char *line = echo_text(text, len), *prefix = echo_text(text, before);

	fprintf(f, "    %s\n    ", line);
	for (const char *p = prefix; *p; p++)
		if (*p == '\t' || ((unsigned char)*p & 0xc0) != 0x80)
			fputc(*p == '\t' ? '\t' : ' ', f);
	fputs("^\n", f);
}

static void print_diag(FILE *f, const struct policy_diag *d)
{
	_cleanup_free_ char *file = cli_escape_text(d->file, false);
	_cleanup_free_ char *msg = cli_escape_text(d->message, false);
	const char *kind = d->warning ? "warning: " : "";

	if (d->line == 0)
		fprintf(f, "%s: %s%s\n", file, kind, msg);
	else if (d->column == 0)
		fprintf(f, "%s:%u: %s%s\n", file, d->line, kind, msg);
	else
		fprintf(f, "%s:%u:%u: %s%s\n", file, d->line, d->column, kind, msg);
	if (d->line && d->text && d->column)
		print_caret(f, d->text, d->column);
	else if (d->line && d->text)
		fprintf(f, "    %s\n", d->text);
}

static const char *plural(size_t n)
{
	return n == 1 ? "" : "s";
}

static void print_diags(FILE *f, const struct policy_diags *d)
{
	for (size_t i = 0; i < d->n; i++)
		print_diag(f, &d->v[i]);
	if (d->dropped)
		fprintf(f, "... and %zu more errors not shown (at most %d are kept)\n", d->dropped,
			POLICY_MAX_DIAGS);
}

static void json_diag_list(struct json *j, const char *key, const struct policy_diags *d,
			   bool warnings)
{
	json_begin(j, key, '[');
	for (size_t i = 0; i < d->n; i++) {
		const struct policy_diag *g = &d->v[i];
		if (g->warning != warnings)
			continue;
		json_begin(j, NULL, '{');
		json_str(j, "file", g->file);
		json_u64(j, "line", g->line);
		json_u64(j, "column", g->column);
		json_str(j, "message", g->message);
		json_str(j, "text", g->text);
		json_end(j, '}');
	}
	json_end(j, ']');
}

/* The diagnostics as one document: {"check":{"path","ok","errors","warnings","dropped"}}. */
static void json_diags(const char *path, const struct policy_diags *d)
{
	struct json j;

	json_doc_begin(&j);
	json_begin(&j, "check", '{');
	json_str(&j, "path", path);
	json_bool(&j, "ok", policy_edit_errors(d) == 0);
	json_diag_list(&j, "errors", d, false);
	json_diag_list(&j, "warnings", d, true);
	json_u64(&j, "dropped", d->dropped);
	json_end(&j, '}');
	json_doc_end(&j);
}

/* Load the policy as policy check judges it: ownership problems are warnings here, since the
 * CLI may run as anyone (the daemon refuses them, which the warnings say). */
static int load(const char *path, struct policy **ret_policy, struct policy_diags *ret_diags)
{
	const struct policy_load_opts opts = { .flags = 0 };

	return policy_load_ex(path, &policy_system_resolver, &opts, ret_policy, ret_diags);
}

/* A policy that does not load, for the verbs that need one: every error on stderr (and as
 * a document with --json), then the failure. */
static int load_failed(const struct cli *cli, const char *path, const struct policy_diags *d, int r)
{
	char detail[128];

	print_diags(stderr, d);
	if (cli->json)
		json_diags(path, d);
	snprintf(detail, sizeof(detail), "%zu error%s", policy_edit_errors(d),
		 plural(policy_edit_errors(d)));
	return cli_fail(cli, r == -ENOMEM ? r : -EINVAL, CLI_POLICY, detail, "%s: %s",
			cli->verb->name, path);
}

/* ---- policy check ---- */

/* The last line of policy check: the counts, and for a policy that loads what is in it. */
static void check_summary(const char *path, const struct policy *pol, const struct policy_diags *d)
{
	_cleanup_free_ char *p = cli_escape_text(path, false);
	size_t errors = policy_edit_errors(d), warnings = d->n + d->dropped - errors;

	if (!pol) {
		printf("%s: %zu error%s, %zu warning%s\n", p, errors, plural(errors), warnings,
		       plural(warnings));
		return;
	}
	printf("%s: OK: %zu file%s, %zu device%s, %zu rule%s, %zu warning%s\n", p, pol->n_files,
	       plural(pol->n_files), pol->n_devices, plural(pol->n_devices), pol->n_rules,
	       plural(pol->n_rules), warnings, plural(warnings));
}

static int check_run(struct cli *cli, int argc, char **argv)
{
	struct policy_args a = { .policy = NULL };
	struct policy_diags d = { .v = NULL };
	struct policy *pol = NULL;
	const char *path;
	int r = parse_args(cli, argc, argv, policy_only, &a, 0, 1);

	if (r >= 0)
		return r;
	path = optind < argc ? argv[optind] : a.policy;
	r = load(path, &pol, &d);
	if (r == -ENOMEM)
		cli_oom();
	if (cli->json) {
		json_diags(path, &d);
	} else {
		print_diags(stdout, &d);
		check_summary(path, r < 0 ? NULL : pol, &d);
	}
	policy_free(pol);
	policy_diags_free(&d);
	return r < 0 ? EXIT_FAIL : 0;
}

/* ---- policy show ---- */

static const char *backend_name(const struct policy_device *dev)
{
	return dev->kind == POLICY_DEVICE_SIM ? "sim" : "pci";
}

static const char *subject_kind(enum policy_subject_kind kind)
{
	return kind == POLICY_USER ? "user" : kind == POLICY_GROUP ? "group" : "unit";
}

/* "user alice", as the file spells it. */
static void format_subject(const struct policy_subject *s, char *buf, size_t len)
{
	if (s->name)
		snprintf(buf, len, "%s %s", subject_kind(s->kind), s->name);
	else
		snprintf(buf, len, "%s %" PRIu32, subject_kind(s->kind), s->id);
}

/* "0:16K 2:1M" for a sim device's BARs, or its PCI address. */
static void format_device(const struct policy_device *dev, char *buf, size_t len)
{
	size_t used = 0;

	snprintf(buf, len, "%s", dev->kind == POLICY_DEVICE_PCI ? dev->pci : "-");
	for (unsigned i = 0; dev->kind == POLICY_DEVICE_SIM && i < POLICY_MAX_BARS; i++) {
		char size[UNITS_FORMAT_MAX];
		int n;
		if (!dev->sim_bar_size[i])
			continue;
		n = snprintf(buf + used, len - used, "%s%u:%s", used ? " " : "", i,
			     units_format_size(dev->sim_bar_size[i], size));
		used += n > 0 && (size_t)n < len - used ? (size_t)n : 0;
	}
}

/* "max-leases 8 max-bytes 1M ttl 10m", or "-". */
static void format_limits(const struct policy_rule *r, char *buf, size_t len)
{
	char size[UNITS_FORMAT_MAX], ttl[UNITS_FORMAT_MAX];
	int n = 0;

	buf[0] = '\0';
	if (r->max_leases)
		n += snprintf(buf + n, len - (size_t)n, "max-leases %u ", r->max_leases);
	if (r->max_bytes)
		n += snprintf(buf + n, len - (size_t)n, "max-bytes %s ",
			      units_format_size(r->max_bytes, size));
	if (r->ttl_ms)
		n += snprintf(buf + n, len - (size_t)n, "ttl %s ",
			      units_format_duration(r->ttl_ms, ttl));
	if (n > 0)
		buf[n - 1] = '\0';
	else
		snprintf(buf, len, "-");
}

static void show_devices(const struct policy *pol)
{
	static const char *const cols[] = { "DEVICE", "BACKEND",  "ADDRESS/BARS",
					    "REVOKE", "ON-ERROR", "WHERE" };
	struct table t = { 0 };

	table_header(&t, cols, ARRAY_SIZE(cols));
	for (size_t i = 0; i < pol->n_devices; i++) {
		const struct policy_device *dev = &pol->devices[i];
		char where[512], deadline[UNITS_FORMAT_MAX];
		format_device(dev, where, sizeof(where));
		table_cell(&t, "%s", dev->name);
		table_cell(&t, "%s", backend_name(dev));
		table_cell(&t, "%s", where);
		table_cell(&t, "%s %s", units_format_duration(dev->revoke_deadline_ms, deadline),
			   dev->revocation == POLICY_REVOKE_ENFORCE ? "enforce" : "notify-only");
		table_cell(&t, "%s", dev->on_error == POLICY_ON_ERROR_CYCLE ? "cycle" : "report");
		table_cell(&t, "%s:%u", dev->file, dev->line);
	}
	table_print(&t);
	table_free(&t);
}

static void show_rules(const struct policy *pol)
{
	static const char *const cols[] = {
		"WHERE", "SUBJECT", "DEVICE", "BAR", "RANGE", "LIMITS"
	};
	struct table t = { 0 };

	table_header(&t, cols, ARRAY_SIZE(cols));
	for (size_t i = 0; i < pol->n_rules; i++) {
		const struct policy_rule *r = &pol->rules[i];
		char who[320], limits[128];
		format_subject(&r->who, who, sizeof(who));
		format_limits(r, limits, sizeof(limits));
		table_cell(&t, "%s:%u", r->file, r->line);
		table_cell(&t, "%s", who);
		table_cell(&t, "%s", pol->devices[r->device].name);
		if (r->bar < 0)
			table_cell(&t, "any");
		else
			table_cell(&t, "%d", r->bar);
		if (r->has_range)
			table_cell(&t, "0x%" PRIx64 "+0x%" PRIx64, r->range.offset,
				   r->range.length);
		else
			table_cell(&t, "-");
		table_cell(&t, "%s", limits);
	}
	table_print(&t);
	table_free(&t);
}

static void show_roles(const char *role, const struct policy_subject *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char who[320];
		format_subject(&s[i], who, sizeof(who));
		_cleanup_free_ char *w = cli_escape_text(who, false);
		printf("%s %s\n", role, w);
	}
}

static void show_text(const char *path, const struct policy *pol, const struct policy_diags *d)
{
	_cleanup_free_ char *p = cli_escape_text(path, false);

	print_diags(stderr, d);
	printf("policy %s: %zu file%s\n", p, pol->n_files, plural(pol->n_files));
	for (size_t i = 0; i < pol->n_files; i++) {
		_cleanup_free_ char *f = cli_escape_text(pol->files[i], false);
		printf("  %s\n", f);
	}
	printf("\n");
	show_devices(pol);
	printf("\n");
	show_rules(pol);
	if (pol->n_admins + pol->n_observers)
		printf("\n");
	show_roles("admin", pol->admins, pol->n_admins);
	show_roles("observer", pol->observers, pol->n_observers);
}

static void json_subject(struct json *j, const char *key, const struct policy_subject *s)
{
	json_begin(j, key, '{');
	json_str(j, "kind", subject_kind(s->kind));
	json_str(j, "name", s->name);
	if (s->kind == POLICY_UNIT)
		json_null(j, "id");
	else
		json_u64(j, "id", s->id);
	json_end(j, '}');
}

static void json_subjects(struct json *j, const char *key, const struct policy_subject *s, size_t n)
{
	json_begin(j, key, '[');
	for (size_t i = 0; i < n; i++)
		json_subject(j, NULL, &s[i]);
	json_end(j, ']');
}

static void json_policy_device(struct json *j, const struct policy_device *dev)
{
	json_begin(j, NULL, '{');
	json_str(j, "name", dev->name);
	json_str(j, "backend", backend_name(dev));
	json_str(j, "address", dev->kind == POLICY_DEVICE_PCI ? dev->pci : NULL);
	json_begin(j, "bars", '[');
	for (unsigned i = 0; dev->kind == POLICY_DEVICE_SIM && i < POLICY_MAX_BARS; i++) {
		if (!dev->sim_bar_size[i])
			continue;
		json_begin(j, NULL, '{');
		json_u64(j, "index", i);
		json_u64(j, "size", dev->sim_bar_size[i]);
		json_end(j, '}');
	}
	json_end(j, ']');
	json_u64(j, "revoke_deadline_ms", dev->revoke_deadline_ms);
	json_str(j, "revocation",
		 dev->revocation == POLICY_REVOKE_ENFORCE ? "enforce" : "notify-only");
	json_str(j, "on_error", dev->on_error == POLICY_ON_ERROR_CYCLE ? "cycle" : "report");
	json_str(j, "file", dev->file);
	json_u64(j, "line", dev->line);
	json_end(j, '}');
}

static void json_rule(struct json *j, const struct policy *pol, const struct policy_rule *r)
{
	json_begin(j, NULL, '{');
	json_str(j, "file", r->file);
	json_u64(j, "line", r->line);
	json_subject(j, "subject", &r->who);
	json_str(j, "device", pol->devices[r->device].name);
	if (r->bar < 0)
		json_null(j, "bar");
	else
		json_u64(j, "bar", (uint64_t)r->bar);
	if (r->has_range) {
		json_begin(j, "range", '{');
		json_u64(j, "offset", r->range.offset);
		json_u64(j, "length", r->range.length);
		json_end(j, '}');
	} else {
		json_null(j, "range");
	}
	json_u64(j, "max_leases", r->max_leases);
	json_u64(j, "max_bytes", r->max_bytes);
	json_u64(j, "ttl_ms", r->ttl_ms);
	json_end(j, '}');
}

static void show_json(const char *path, const struct policy *pol, const struct policy_diags *d)
{
	struct json j;

	json_doc_begin(&j);
	json_begin(&j, "policy", '{');
	json_str(&j, "path", path);
	json_begin(&j, "files", '[');
	for (size_t i = 0; i < pol->n_files; i++)
		json_str(&j, NULL, pol->files[i]);
	json_end(&j, ']');
	json_begin(&j, "devices", '[');
	for (size_t i = 0; i < pol->n_devices; i++)
		json_policy_device(&j, &pol->devices[i]);
	json_end(&j, ']');
	json_begin(&j, "rules", '[');
	for (size_t i = 0; i < pol->n_rules; i++)
		json_rule(&j, pol, &pol->rules[i]);
	json_end(&j, ']');
	json_subjects(&j, "admins", pol->admins, pol->n_admins);
	json_subjects(&j, "observers", pol->observers, pol->n_observers);
	json_diag_list(&j, "warnings", d, true);
	json_end(&j, '}');
	json_doc_end(&j);
}

static int show_run(struct cli *cli, int argc, char **argv)
{
	struct policy_args a = { .policy = NULL };
	struct policy_diags d = { .v = NULL };
	struct policy *pol = NULL;
	int r = parse_args(cli, argc, argv, policy_only, &a, 0, 0);

	if (r >= 0)
		return r;
	r = load(a.policy, &pol, &d);
	if (r < 0)
		r = load_failed(cli, a.policy, &d, r);
	else if (cli->json)
		show_json(a.policy, pol, &d);
	else
		show_text(a.policy, pol, &d);
	policy_free(pol);
	policy_diags_free(&d);
	return r;
}

/* ---- policy test ---- */

/* The peer a process of the user would be, or exactly the groups given. */
struct test_peer {
	struct policy_peer peer;
	gid_t *db_groups; /* owned: from the user database */
};

static void test_peer_done(struct test_peer *t)
{
	free(t->db_groups);
}

/* The user's groups from the database: what initgroups(3) gives its processes. */
static void database_groups(struct test_peer *t, const char *name, gid_t gid)
{
	int n = 64;

	for (;;) {
		gid_t *g = reallocarray(t->db_groups, (size_t)n, sizeof(*g));
		int got = n;
		if (!g)
			cli_oom();
		t->db_groups = g;
		if (getgrouplist(name, gid, g, &got) >= 0) {
			t->peer.groups = g;
			t->peer.n_groups = (size_t)got;
			return;
		}
		if (got <= n || got > TEST_MAX_DB_GROUPS)
			return; /* the database gave no usable answer: no groups */
		n = got;
	}
}

static int test_identity(struct cli *cli, struct policy_args *a, struct test_peer *t)
{
	struct passwd *pw;

	if (!a->user == !a->have_uid)
		return cli_usage(cli, "give one of --user NAME and --uid N");
	errno = 0;
	pw = a->user ? getpwnam(a->user) : getpwuid(a->uid);
	if (a->user && !pw)
		return cli_usage(cli, "unknown user '%s'", a->user);
	t->peer.uid = pw ? pw->pw_uid : a->uid;
	/* A uid with no user: no group of its own, and (uint32_t)-1 matches no rule. */
	t->peer.gid = pw ? pw->pw_gid : (gid_t)-1;
	t->peer.unit = a->unit;
	if (a->n_groups) {
		t->peer.gid = a->groups[0];
		t->peer.groups = a->groups;
		t->peer.n_groups = a->n_groups;
	} else if (pw) {
		database_groups(t, pw->pw_name, pw->pw_gid);
	}
	return -1;
}

static const char *verdict_name(enum policy_verdict v)
{
	static const char *const names[] = {
		[POLICY_ALLOWED] = "allowed",
		[POLICY_NO_DEVICE] = "no-device",
		[POLICY_NO_RULE_FOR_DEVICE] = "no-rule-for-device",
		[POLICY_NO_RULE_FOR_PEER] = "no-rule-for-peer",
		[POLICY_NO_RULE_FOR_BAR] = "no-rule-for-bar",
		[POLICY_RANGE_OUTSIDE] = "range-outside",
	};

	return (size_t)v < ARRAY_SIZE(names) && names[v] ? names[v] : "unknown";
}

/* One BAR's answer. */
struct test_result {
	unsigned bar;
	enum policy_verdict verdict;
	const struct policy_rule *rule;
	char message[1024];
};

/* Verdicts that do not depend on the BAR: one answer stands for all of them. */
static bool bar_independent(enum policy_verdict v)
{
	return v == POLICY_NO_DEVICE || v == POLICY_NO_RULE_FOR_DEVICE ||
	       v == POLICY_NO_RULE_FOR_PEER;
}

/* The BARs to ask about: the one given, or every BAR the device may have. */
static size_t test_bars(const struct policy *pol, const struct policy_args *a, const char *device,
			unsigned bars[POLICY_MAX_BARS])
{
	int d = policy_find_device(pol, device);
	size_t n = 0;

	if (a->have_bar) {
		bars[0] = a->bar;
		return 1;
	}
	for (unsigned i = 0; i < POLICY_MAX_BARS; i++)
		if (d < 0 || pol->devices[d].kind != POLICY_DEVICE_SIM ||
		    pol->devices[d].sim_bar_size[i])
			bars[n++] = i;
	return n;
}

static void test_text(const char *device, const struct test_result *res, size_t n)
{
	_cleanup_free_ char *dev = cli_escape_text(device, false);

	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *msg = cli_escape_text(res[i].message, false);
		if (bar_independent(res[i].verdict))
			printf("%s: denied: %s\n", dev, msg);
		else
			printf("%s bar %u: %s%s\n", dev, res[i].bar,
			       res[i].verdict == POLICY_ALLOWED ? "" : "denied: ", msg);
	}
}

static void json_test_peer(struct json *j, const struct policy_peer *peer)
{
	json_begin(j, "peer", '{');
	json_u64(j, "uid", peer->uid);
	json_u64(j, "gid", peer->gid);
	json_begin(j, "groups", '[');
	for (size_t i = 0; i < peer->n_groups; i++)
		json_u64(j, NULL, peer->groups[i]);
	json_end(j, ']');
	json_str(j, "unit", peer->unit);
	json_end(j, '}');
}

static void test_json(const char *device, const struct test_peer *t, const struct test_result *res,
		      size_t n, bool allowed)
{
	struct json j;

	json_doc_begin(&j);
	json_begin(&j, "test", '{');
	json_str(&j, "device", device);
	json_test_peer(&j, &t->peer);
	json_bool(&j, "allowed", allowed);
	json_begin(&j, "results", '[');
	for (size_t i = 0; i < n; i++) {
		json_begin(&j, NULL, '{');
		if (bar_independent(res[i].verdict))
			json_null(&j, "bar");
		else
			json_u64(&j, "bar", res[i].bar);
		json_str(&j, "verdict", verdict_name(res[i].verdict));
		json_str(&j, "rule", res[i].rule ? res[i].rule->where : NULL);
		json_str(&j, "message", res[i].message);
		json_end(&j, '}');
	}
	json_end(&j, ']');
	json_end(&j, '}');
	json_doc_end(&j);
}

static int test_decide(const struct cli *cli, const struct policy *pol, const struct policy_args *a,
		       const char *device, const struct test_peer *t)
{
	struct test_result res[POLICY_MAX_BARS];
	const struct range range = { a->have_offset ? a->offset : 0, a->length };
	unsigned bars[POLICY_MAX_BARS];
	size_t n = test_bars(pol, a, device, bars), shown = 0;
	bool allowed = false;

	for (size_t i = 0; i < n; i++) {
		struct test_result *r = &res[shown++];
		r->bar = bars[i];
		r->verdict = policy_explain_export(pol, &t->peer, device, bars[i], &range,
						   a->have_length ? 1 : 0, &r->rule, r->message,
						   sizeof(r->message));
		allowed |= r->verdict == POLICY_ALLOWED;
		if (bar_independent(r->verdict))
			break; /* the same for every BAR */
	}
	if (cli->json)
		test_json(device, t, res, shown, allowed);
	else
		test_text(device, res, shown);
	return allowed ? 0 : EXIT_FAIL;
}

static int test_run(struct cli *cli, int argc, char **argv)
{
	_cleanup_(test_peer_done) struct test_peer t = { .db_groups = NULL };
	struct policy_args a = { .policy = NULL };
	struct policy_diags d = { .v = NULL };
	struct policy *pol = NULL;
	int r = parse_args(cli, argc, argv, test_options, &a, 0, 1);

	if (r >= 0)
		return r;
	if (optind == argc)
		return cli_usage(cli, "missing DEVICE");
	if (a.have_offset && !a.have_length)
		return cli_usage(cli, "--offset needs a --length");
	if (a.have_length && !a.have_bar)
		return cli_usage(cli, "a range needs a --bar");
	r = test_identity(cli, &a, &t);
	if (r >= 0)
		return r;
	r = load(a.policy, &pol, &d);
	if (r < 0)
		r = load_failed(cli, a.policy, &d, r);
	else
		r = test_decide(cli, pol, &a, argv[optind], &t);
	policy_free(pol);
	policy_diags_free(&d);
	return r;
}

/* ---- reload, and the one after an edit ---- */

static void json_strings(struct json *j, const char *key, char *const *v, size_t n)
{
	json_begin(j, key, '[');
	for (size_t i = 0; i < n; i++)
		json_str(j, NULL, v[i]);
	json_end(j, ']');
}

/* {"action":"reload","reload":{"ok",...}}: what changed, or every error. */
static void reload_json(const struct p2pbuf_reload *res, bool ok)
{
	struct json j;

	json_doc_begin(&j);
	json_str(&j, "action", "reload");
	json_begin(&j, "reload", '{');
	json_bool(&j, "ok", ok);
	json_strings(&j, "errors", res->errors, res->n_errors);
	if (ok) {
		json_u64(&j, "rules", res->rules);
		json_u64(&j, "rules_added", res->rules_added);
		json_u64(&j, "rules_removed", res->rules_removed);
		json_u64(&j, "devices", res->devices);
		json_u64(&j, "devices_added", res->devices_added);
		json_u64(&j, "devices_removed", res->devices_removed);
		json_u64(&j, "devices_changed", res->devices_changed);
		json_u64(&j, "leases_revoked", res->leases_revoked);
	}
	json_end(&j, '}');
	json_doc_end(&j);
}

static void reload_text(const struct p2pbuf_reload *res)
{
	printf("p2pbufd reloaded its policy: %u rule%s (%u added, %u removed), %u device%s "
	       "(%u added, %u removed, %u changed), %u lease%s revoked\n",
	       res->rules, plural(res->rules), res->rules_added, res->rules_removed, res->devices,
	       plural(res->devices), res->devices_added, res->devices_removed, res->devices_changed,
	       res->leases_revoked, plural(res->leases_revoked));
}

/* The admin's reload request, its outcome printed. Returns 0, or the exit status of the
 * failure (reported): EXIT_UNREACHABLE when no daemon answers. */
static int request_reload(struct cli *cli)
{
	_cleanup_conn_ struct p2pbuf *conn = NULL;
	struct p2pbuf_reload res = { .n_errors = 0 };
	char detail[128];
	int r = cli_connect(cli, &conn);

	if (r)
		return r;
	r = p2pbuf_reload(conn, &res);
	if (r == -EINVAL) {
		for (size_t i = 0; i < res.n_errors; i++) {
			_cleanup_free_ char *e = cli_escape_text(res.errors[i], false);
			fprintf(stderr, "%s\n", e);
		}
		if (cli->json)
			reload_json(&res, false);
		snprintf(detail, sizeof(detail), "%zu error%s; the policy in force stays",
			 res.n_errors, plural(res.n_errors));
		p2pbuf_reload_free(&res);
		return cli_fail(cli, r, CLI_REQUEST | CLI_ADMIN | CLI_POLICY, detail, "reload");
	}
	if (r < 0)
		return cli_fail(cli, r, CLI_REQUEST | CLI_ADMIN, p2pbuf_last_message(conn),
				"reload");
	if (cli->json)
		reload_json(&res, true);
	else
		reload_text(&res);
	p2pbuf_reload_free(&res);
	return 0;
}

static int reload_run(struct cli *cli, int argc, char **argv)
{
	int r = cli_parse_operands(cli, argc, argv, 0, 0);

	return r >= 0 ? r : request_reload(cli);
}

const struct verb verb_reload = {
	.name = "reload",
	.synopsis = "",
	.summary = "make the daemon load its policy again (admins)",
	.help = "The daemon reads its policy file and drop-ins again and, if they load, puts them\n"
		"in force at once: leases no rule allows any more are revoked with reason\n"
		"policy. Prints what changed (rules and devices added, removed or changed, leases\n"
		"revoked); if the policy has errors, prints every one and the policy in force\n"
		"stays. SIGHUP and systemctl reload p2pbufd do the same.\n",
	.run = reload_run,
};

/* ---- policy add, remove, edit ---- */

/* What an edit did, before the reload's answer: "added FILE:LINE: RULE". */
static void print_edit(const struct cli *cli, const char *action,
		       const struct policy_edit_report *rep)
{
	_cleanup_free_ char *file = cli_escape_text(rep->file, false);
	_cleanup_free_ char *text = cli_escape_text(rep->text, false);
	struct json j;

	print_diags(stderr, &rep->diags); /* warnings */
	if (!cli->json) {
		if (rep->line)
			printf("%s %s:%u%s: %s\n", action, file, rep->line,
			       rep->created ? " (a new drop-in)" : "", text);
		else
			printf("%s %s\n", action, file);
		return;
	}
	json_doc_begin(&j);
	json_str(&j, "action", action);
	json_str(&j, "file", rep->file);
	if (rep->line)
		json_u64(&j, "line", rep->line);
	else
		json_null(&j, "line");
	json_str(&j, "rule", rep->text);
	json_bool(&j, "created", rep->created);
	json_doc_end(&j);
}

/* Install e, waiting (and saying so) while another edit holds the lock. Returns -1 when
 * installed, or the exit status of the failure, reported with every error. */
static int install(struct cli *cli, struct policy_edit *e, struct policy_edit_report *rep)
{
	const char *what = cli->verb->name;
	int r;

	e->resolver = &policy_system_resolver;
	e->nowait = true;
	r = policy_edit_install(e, rep);
	if (r == -EWOULDBLOCK) {
		fprintf(stderr, PROG ": %s: waiting for another edit of the policy to finish\n",
			what);
		policy_edit_report_done(rep);
		e->nowait = false;
		r = policy_edit_install(e, rep);
	}
	if (r >= 0)
		return -1;
	print_diags(stderr, &rep->diags);
	if (cli->json && rep->diags.n)
		json_diags(e->policy, &rep->diags);
	return cli_fail(cli, r, CLI_POLICY | CLI_EDIT, rep->message, "%s", what);
}

/* After an installed edit: the reload, unless --no-reload. A daemon that is not running is
 * no failure of the edit, which stays installed: the distinct exit status says so. */
static int reload_after(struct cli *cli, const struct policy_args *a)
{
	int r = a->no_reload ? 0 : request_reload(cli);

	if (r == EXIT_UNREACHABLE)
		fprintf(stderr,
			PROG ": %s: the edit is installed; p2pbufd reads it when it starts "
			     "or is told to reload\n",
			cli->verb->name);
	else if (r)
		fprintf(stderr, PROG ": %s: the edit is installed, but the reload failed\n",
			cli->verb->name);
	return r;
}

/* The operands as one rule: one quoted operand as given, several joined by blanks. */
static char *join_operands(char **v, int n)
{
	char *rule = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&rule, &size);

	if (!f)
		cli_oom();
	for (int i = 0; i < n; i++)
		fprintf(f, "%s%s", i ? " " : "", v[i]);
	if (fclose(f) != 0)
		cli_oom();
	return rule;
}

static int add_run(struct cli *cli, int argc, char **argv)
{
	struct policy_edit_report rep = { .line = 0 };
	struct policy_args a = { .policy = NULL };
	_cleanup_free_ char *rule = NULL;
	struct policy_edit e;
	int r = parse_args(cli, argc, argv, add_options, &a, 0, argc);

	if (r >= 0)
		return r;
	if (optind == argc)
		return cli_usage(cli, "missing RULE");
	rule = join_operands(argv + optind, argc - optind);
	e = (struct policy_edit){
		.kind = POLICY_EDIT_ADD, .policy = a.policy, .file = a.file, .rule = rule
	};
	r = install(cli, &e, &rep);
	if (r < 0) {
		print_edit(cli, "added", &rep);
		r = reload_after(cli, &a);
	}
	policy_edit_report_done(&rep);
	return r;
}

/* FILE:LINE, split at the last colon (a path may hold colons, a line number does not). */
static int parse_where(struct cli *cli, const char *arg, char **ret_file, unsigned *ret_line)
{
	const char *colon = strrchr(arg, ':');
	uint64_t line;

	if (!colon || colon == arg || cli_parse_id(colon + 1, &line) < 0 || line == 0 ||
	    line > UINT32_MAX)
		return cli_usage(cli, "bad FILE:LINE '%s'", arg);
	*ret_file = strndup(arg, (size_t)(colon - arg));
	if (!*ret_file)
		cli_oom();
	*ret_line = (unsigned)line;
	return -1;
}

static int remove_run(struct cli *cli, int argc, char **argv)
{
	struct policy_edit_report rep = { .line = 0 };
	struct policy_args a = { .policy = NULL };
	_cleanup_free_ char *file = NULL;
	struct policy_edit e = { .kind = POLICY_EDIT_REMOVE_MATCH };
	int r = parse_args(cli, argc, argv, remove_options, &a, 0, 1);

	if (r >= 0)
		return r;
	if (!a.match == (optind == argc))
		return cli_usage(cli, "give FILE:LINE or --match RULE");
	if (!a.match) {
		r = parse_where(cli, argv[optind], &file, &e.line);
		if (r >= 0)
			return r;
		e.kind = POLICY_EDIT_REMOVE_LINE;
	}
	e.policy = a.policy;
	e.file = file;
	e.rule = a.match;
	r = install(cli, &e, &rep);
	if (r < 0) {
		print_edit(cli, "removed", &rep);
		r = reload_after(cli, &a);
	}
	policy_edit_report_done(&rep);
	return r;
}

/* The copy policy edit hands the editor: in a private directory, under the file's own name so
 * that the editor knows what it edits. */
struct copy {
	char dir[4096];
	char path[4096 + 256];
	bool keep; /* it holds the user's unsaved work */
};

static void copy_done(struct copy *c)
{
	if (c->keep || !c->dir[0])
		return;
	unlink(c->path);
	rmdir(c->dir);
}

static int write_copy(struct copy *c, const char *file, const char *text, size_t len)
{
	const char *tmp = getenv("TMPDIR"), *base = strrchr(file, '/');
	_cleanup_close_ int fd = -1;

	snprintf(c->dir, sizeof(c->dir), "%s/p2pbuf-edit-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	if (!mkdtemp(c->dir)) {
		c->dir[0] = '\0';
		return -errno;
	}
	snprintf(c->path, sizeof(c->path), "%s/%s", c->dir, base ? base + 1 : file);
	fd = open(c->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	for (size_t done = 0; done < len;) {
		ssize_t n = write(fd, text + done, len - done);
		if (n < 0 && errno != EINTR)
			return -errno;
		done += n > 0 ? (size_t)n : 0;
	}
	return close(TAKE_FD(fd)) < 0 ? -errno : 0;
}

/* $VISUAL, else $EDITOR, else vi, through the shell (so that "emacs -nw" works) on path, with
 * SIGINT and SIGQUIT left to the editor as system(3) does. Returns its wait status, or -errno. */
static int run_editor(const char *path)
{
	const char *ed = getenv("VISUAL");
	struct sigaction ign = { .sa_handler = SIG_IGN }, old_int, old_quit;
	_cleanup_free_ char *cmd = NULL;
	int status = 0;
	pid_t pid;

	if (!ed || !ed[0])
		ed = getenv("EDITOR");
	if (asprintf(&cmd, "%s \"$1\"", ed && ed[0] ? ed : "vi") < 0)
		cli_oom();
	sigaction(SIGINT, &ign, &old_int);
	sigaction(SIGQUIT, &ign, &old_quit);
	pid = fork();
	if (pid == 0) {
		sigaction(SIGINT, &old_int, NULL);
		sigaction(SIGQUIT, &old_quit, NULL);
		execl("/bin/sh", "sh", "-c", cmd, "sh", path, (char *)NULL);
		_exit(127);
	}
	while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGQUIT, &old_quit, NULL);
	return pid < 0 ? -errno : status;
}

/* On a terminal, whether to edit again ("re-edit? [Y/n]"); never without one. */
static bool ask_reedit(void)
{
	_cleanup_free_ char *answer = NULL;
	size_t size = 0;

	if (!isatty(STDIN_FILENO))
		return false;
	fputs("re-edit? [Y/n] ", stderr);
	if (getline(&answer, &size, stdin) < 0)
		return false;
	return answer[0] == '\n' || answer[0] == 'y' || answer[0] == 'Y';
}

/* What the editor left in the copy, as the edit to install. */
static int read_copy(struct cli *cli, struct copy *c, char **ret_text, size_t *ret_len)
{
	int r = policy_edit_read(c->path, ret_text, ret_len);

	if (r < 0)
		return cli_fail_local(cli, r, "policy edit: cannot read the edited copy %s",
				      c->path);
	return -1;
}

/* Edit the copy until what it holds installs, the user gives up, or there is no terminal to
 * ask. Returns -1 once installed (rep filled), 0 when nothing changed, or the exit status. */
static int edit_loop(struct cli *cli, struct policy_edit *e, struct copy *c,
		     struct policy_edit_report *rep)
{
	for (;;) {
		_cleanup_free_ char *text = NULL;
		size_t len = 0;
		int r = run_editor(c->path);

		if (r < 0 || !WIFEXITED(r) || WEXITSTATUS(r) != 0)
			return cli_fail_local(cli, r < 0 ? r : -ECANCELED,
					      "policy edit: the editor failed (%s %d); nothing was "
					      "installed",
					      r >= 0 && WIFSIGNALED(r) ? "signal" : "status",
					      r < 0	       ? 0
					      : WIFSIGNALED(r) ? WTERMSIG(r)
							       : WEXITSTATUS(r));
		r = read_copy(cli, c, &text, &len);
		if (r >= 0)
			return r;
		if (len == e->old_len && (!len || memcmp(text, e->old_text, len) == 0)) {
			printf("no change to %s: nothing installed\n", e->file);
			return 0;
		}
		c->keep = true;
		e->text = text;
		e->len = len;
		r = install(cli, e, rep);
		if (r < 0) {
			c->keep = false;
			return r;
		}
		if (r == EXIT_USAGE || !rep->diags.n || !ask_reedit()) {
			fprintf(stderr, PROG ": policy edit: your edit is kept in %s\n", c->path);
			return r;
		}
		policy_edit_report_done(rep);
	}
}

static int edit_run(struct cli *cli, int argc, char **argv)
{
	struct policy_edit_report rep = { .line = 0 };
	struct policy_args a = { .policy = NULL };
	_cleanup_free_ char *file = NULL, *message = NULL, *old = NULL;
	_cleanup_(copy_done) struct copy c = { .dir = "" };
	struct policy_edit e = { .kind = POLICY_EDIT_REPLACE };
	size_t old_len = 0;
	int r = parse_args(cli, argc, argv, edit_options, &a, 0, 1);

	if (r >= 0)
		return r;
	r = policy_edit_file(a.policy, optind < argc ? argv[optind] : NULL, &file, &message);
	if (r < 0)
		return cli_fail(cli, r, CLI_POLICY | CLI_EDIT, message, "policy edit");
	r = policy_edit_read(file, &old, &old_len);
	if (r < 0 && r != -ENOENT)
		return cli_fail_local(cli, r, "policy edit: cannot read %s", file);
	r = write_copy(&c, file, old ? old : "", old_len);
	if (r < 0)
		return cli_fail_local(cli, r, "policy edit: cannot make a copy to edit");
	e.policy = a.policy;
	e.file = file;
	e.old_text = old; /* NULL: a new drop-in */
	e.old_len = old_len;
	r = edit_loop(cli, &e, &c, &rep);
	if (r < 0) {
		print_edit(cli, "installed", &rep);
		r = reload_after(cli, &a);
	}
	policy_edit_report_done(&rep);
	return r;
}

/* ---- the policy verb and its commands ---- */

#define POLICY_OPTION_HELP                                                                         \
	"  -p, --policy FILE  the policy (default " P2PBUF_POLICY_PATH ";\n"                       \
	"                     its drop-ins are FILE.d/ *.policy)\n"
#define EDIT_OPTION_HELP                                                                           \
	POLICY_OPTION_HELP                                                                         \
	"      --no-reload    do not ask the daemon to reload after the edit\n"
#define EDIT_EXIT_HELP                                                                             \
	"\nThe edit is made under a lock (two admins cannot lose each other's edit), only if\n"    \
	"the policy still loads with it, and atomically. Then the daemon is asked to reload;\n"    \
	"when it cannot be reached the edit stays installed and the exit status is 3.\n"

static const struct verb policy_check = {
	.name = "policy check",
	.synopsis = "[FILE]",
	.summary = "report every error and warning of the policy (or of FILE as one)",
	.help = POLICY_OPTION_HELP
	"\nEach as file:line:column: message, then the line and a caret under the column.\n"
	"Ownership and mode problems, which p2pbufd refuses, are warnings here. Exit status\n"
	"0 when the policy loads, 1 when it has errors.\n",
	.run = check_run,
};

static const struct verb policy_show = {
	.name = "policy show",
	.synopsis = "",
	.summary = "show the effective policy: its files, devices, rules and roles",
	.help = POLICY_OPTION_HELP "\nEvery rule with its file:line, subject as written, device, "
				   "BAR, range and limits.\n",
	.run = show_run,
};

static const struct verb policy_test = {
	.name = "policy test",
	.synopsis = "--user NAME|--uid N [--group G]... [--unit U] DEVICE [--bar N [--offset X] "
		    "--length Y]",
	.summary = "say whether the policy lets someone export from DEVICE, and why",
	.help = POLICY_OPTION_HELP
	"      --user NAME    the peer is a process of user NAME (with its groups from the\n"
	"                     user database)\n"
	"      --uid N        the peer's uid (its groups from the database if N has a user)\n"
	"      --group G      a group of the peer, by name or number (repeatable; instead of\n"
	"                     the database's; the first is its primary group)\n"
	"      --unit U       the peer's systemd unit (\"db.service\")\n"
	"      --bar N        the BAR (default: every BAR of the device)\n"
	"      --offset X     start of the range (default 0)\n"
	"      --length Y     length of the range (default: the whole BAR)\n"
	"\nDecided offline, by the daemon's own code, against the policy's files: allowed and\n"
	"the rule (file:line), or denied and why (no such device, no rule for it, none for\n"
	"this peer, none for this BAR, the range outside them). Limits on live leases are\n"
	"the daemon's to count. Exit status 0 allowed, 1 denied (or the policy has errors).\n",
	.run = test_run,
};

static const struct verb policy_add = {
	.name = "policy add",
	.synopsis = "RULE... [--file DROPIN]",
	.summary = "add a rule (a directive line) to the policy",
	.help = EDIT_OPTION_HELP
	"      --file DROPIN  add it to FILE.d/DROPIN (made, 0644, if it does not exist)\n"
	"                     instead of the main file\n"
	"\nRULE is one line as the policy writes it; several operands are joined by blanks. It\n"
	"goes after the last directive of the file, every other byte kept.\n" EDIT_EXIT_HELP,
	.run = add_run,
};

static const struct verb policy_remove = {
	.name = "policy remove",
	.synopsis = "FILE:LINE | --match RULE",
	.summary = "remove a directive line from the policy",
	.help = EDIT_OPTION_HELP
	"      --match RULE   remove the one line, in any of the policy's files, with RULE's\n"
	"                     words (blanks and comments aside); several matches are refused\n"
	"                     and listed as file:line\n"
	"\nFILE:LINE as policy show and policy check print it; a comment or blank line is\n"
	"refused.\n" EDIT_EXIT_HELP,
	.run = remove_run,
};

static const struct verb policy_edit = {
	.name = "policy edit",
	.synopsis = "[FILE]",
	.summary = "edit the policy (or FILE, a drop-in) in $VISUAL or $EDITOR",
	.help = EDIT_OPTION_HELP
	"\nOn a copy, with $VISUAL, else $EDITOR, else vi. When the editor exits, the copy is\n"
	"installed if the policy loads with it; otherwise every error is shown and, on a\n"
	"terminal, \"re-edit? [Y/n]\" asked (without one, nothing is installed). A file that\n"
	"changed since the copy was made is not overwritten. A copy not installed is kept,\n"
	"and its path said.\n" EDIT_EXIT_HELP,
	.run = edit_run,
};

static const struct verb *const policy_verbs[] = {
	&policy_check, &policy_show, &policy_test, &policy_add, &policy_remove, &policy_edit,
};

static int policy_run(struct cli *cli, int argc, char **argv)
{
	int r;

	if (argc > 1 && argv[1][0] != '-') {
		for (size_t i = 0; i < ARRAY_SIZE(policy_verbs); i++)
			if (!strcmp(policy_verbs[i]->name + strlen("policy "), argv[1])) {
				cli->verb = policy_verbs[i];
				return cli->verb->run(cli, argc - 1, argv + 1);
			}
		return cli_usage(cli, "unknown policy command '%s'", argv[1]);
	}
	r = cli_parse_operands(cli, argc, argv, 0, 0);
	return r >= 0 ? r : cli_usage(cli, "missing COMMAND");
}

const struct verb verb_policy = {
	.name = "policy",
	.synopsis = "COMMAND [OPTIONS] [ARGS]",
	.summary = "check, show, test and edit the policy",
	.help = "Commands:\n"
		"  check [FILE]             every error of the policy, with a caret under it\n"
		"  show                     the effective policy with each rule's file:line\n"
		"  test --user NAME DEVICE  whether NAME may export from DEVICE, and why\n"
		"  add RULE                 add a rule, keeping every comment and line\n"
		"  remove FILE:LINE         remove a rule (or --match RULE)\n"
		"  edit [FILE]              edit in $VISUAL or $EDITOR, validated, then installed\n"
		"\nEach takes --policy FILE (default " P2PBUF_POLICY_PATH "). See\n'" PROG
		" policy COMMAND --help'. The edits ask the daemon to reload.\n",
	.run = policy_run,
};
