/* Unit tests of the policy editor (client/policy-edit.c): the document keeps every byte and
 * changes only the line edited; add, remove by line and by match; and the installing of an
 * edit: refusal of an invalid edit (nothing written), atomicity, ownership and mode, and the
 * lock that keeps two editors from losing each other's edit. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "policy.h"
#include "policy-edit.h"

/* ---- The document ---- */

static struct policy_doc *doc_of(const char *text, size_t len)
{
	struct policy_doc *doc = NULL;

	ck_assert_int_eq(policy_doc_parse(text, len, &doc), 0);
	ck_assert_ptr_nonnull(doc);
	return doc;
}

/* The document's text is exactly want. */
static void assert_prints(const struct policy_doc *doc, const char *want, size_t want_len)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;

	ck_assert_int_eq(policy_doc_print(doc, &text, &len), 0);
	ck_assert_msg(len == want_len && memcmp(text, want, len) == 0,
		      "printed %zu bytes \"%s\", expected %zu \"%s\"", len, text, want_len, want);
	ck_assert_int_eq(text[len], '\0');
}

static void assert_round_trip(const char *text, size_t len)
{
	struct policy_doc *doc = doc_of(text, len);

	assert_prints(doc, text, len);
	policy_doc_free(doc);
}

static char *read_source(const char *rel, size_t *ret_len)
{
	const char *srcdir = getenv("top_srcdir");
	char path[4096];
	FILE *f;
	char *text;
	long n;

	snprintf(path, sizeof(path), "%s/%s", srcdir ? srcdir : ".", rel);
	f = fopen(path, "rbe");
	ck_assert_msg(f != NULL, "%s: %m", path);
	ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	ck_assert_int_ge(n, 1);
	rewind(f);
	text = malloc((size_t)n);
	ck_assert_ptr_nonnull(text);
	ck_assert_uint_eq(fread(text, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*ret_len = (size_t)n;
	return text;
}

START_TEST(test_round_trip_example)
{
	size_t len = 0;
	_cleanup_free_ char *text = read_source("policy/example.policy", &len);
	struct policy_doc *doc = doc_of(text, len);
	size_t n_lines = 0;

	for (size_t i = 0; i < len; i++)
		n_lines += text[i] == '\n';
	ck_assert_uint_eq(policy_doc_n_lines(doc), n_lines);
	assert_prints(doc, text, len);
	policy_doc_free(doc);
}
END_TEST

/* Files an editor or another system may leave behind: each comes back byte for byte. */
static const struct {
	const char *text;
	size_t len;
} odd_files[] = {
#define ODD(s)                                                                                     \
	{                                                                                          \
		s, sizeof(s) - 1                                                                   \
	}
	ODD(""),
	ODD("\n"),
	ODD("\n\n\n"),
	ODD("device sim0 sim bar 0 4K"),				   /* no final newline */
	ODD("device sim0 sim bar 0 4K\r\nallow user 1 device sim0\r\n"),   /* CRLF */
	ODD("device sim0 sim bar 0 4K\r\nallow user 1 device sim0"),	   /* CRLF, no end */
	ODD("\tdevice\tsim0 sim bar 0 4K   \t\n  # indented comment  \n"), /* tabs, trailing */
	ODD("allow user 1 device sim0 # why\n#\n#no space\n   \n\t\n"),
	ODD("\r\n\r\n"),
	ODD("a\0b\nc\n"), /* a NUL: invalid, but kept until the parser says so */
	ODD("\xff\xfe not UTF-8\n"),
#undef ODD
};

START_TEST(test_round_trip_odd)
{
	assert_round_trip(odd_files[_i].text, odd_files[_i].len);
}
END_TEST

START_TEST(test_line_kinds)
{
	static const char text[] = "device sim0 sim bar 0 4K\n"
				   "   \t\r\n"
				   "  # a comment\n"
				   "allow user 1 device sim0 # with a comment\n"
				   "\n"
				   "#";
	struct policy_doc *doc = doc_of(text, sizeof(text) - 1);
	size_t len = 0;

	ck_assert_uint_eq(policy_doc_n_lines(doc), 6);
	ck_assert_int_eq(policy_doc_line_kind(doc, 1), POLICY_DOC_DIRECTIVE);
	ck_assert_int_eq(policy_doc_line_kind(doc, 2), POLICY_DOC_BLANK);
	ck_assert_int_eq(policy_doc_line_kind(doc, 3), POLICY_DOC_COMMENT);
	ck_assert_int_eq(policy_doc_line_kind(doc, 4), POLICY_DOC_DIRECTIVE);
	ck_assert_int_eq(policy_doc_line_kind(doc, 5), POLICY_DOC_BLANK);
	ck_assert_int_eq(policy_doc_line_kind(doc, 6), POLICY_DOC_COMMENT);
	ck_assert_mem_eq(policy_doc_line(doc, 2, &len), "   \t\r", 5);
	ck_assert_uint_eq(len, 5);
	policy_doc_free(doc);
}
END_TEST

/* A file of exactly POLICY_MAX_SIZE bytes, in lines of 64: comments, and a directive last. */
START_TEST(test_too_large)
{
	size_t len = POLICY_MAX_SIZE + 1;
	_cleanup_free_ char *text = malloc(len);
	struct policy_doc *doc = NULL;
	unsigned line = 0;

	ck_assert_ptr_nonnull(text);
	memset(text, '#', len);
	for (size_t i = 63; i < len; i += 64)
		text[i] = '\n';
	ck_assert_int_eq(policy_doc_parse(text, len, &doc), -E2BIG);
	ck_assert_ptr_null(doc);
	memcpy(text + POLICY_MAX_SIZE - 64, "x", 1);
	doc = doc_of(text, len - 1);
	ck_assert_uint_eq(policy_doc_n_lines(doc), POLICY_MAX_SIZE / 64);
	/* Full: no room for even a one-word rule, until a line goes. */
	ck_assert_int_eq(policy_doc_add(doc, "y", &line), -E2BIG);
	ck_assert_uint_eq(line, 0);
	ck_assert_int_eq(policy_doc_remove(doc, POLICY_MAX_SIZE / 64), 0);
	ck_assert_int_eq(policy_doc_add(doc, "y", &line), 0);
	ck_assert_uint_eq(line, POLICY_MAX_SIZE / 64);
	policy_doc_free(doc);
	policy_doc_free(NULL);
}
END_TEST

/* add on before gives after, at line want_line. */
static const struct {
	const char *before, *rule, *after;
	unsigned line;
} adds[] = {
	/* After the last directive: a trailing comment stays last, unattached to the rule. */
	{ "# head\ndevice d sim bar 0 4K\n\n# a footer\n", "allow user 1 device d",
	  "# head\ndevice d sim bar 0 4K\nallow user 1 device d\n\n# a footer\n", 3 },
	{ "device d sim bar 0 4K\n", "allow user 1 device d",
	  "device d sim bar 0 4K\nallow user 1 device d\n", 2 },
	/* No final newline: the file still has none. */
	{ "device d sim bar 0 4K", "allow user 1 device d",
	  "device d sim bar 0 4K\nallow user 1 device d", 2 },
	/* CRLF: so is the new line. */
	{ "device d sim bar 0 4K\r\n# end\r\n", "allow user 1 device d",
	  "device d sim bar 0 4K\r\nallow user 1 device d\r\n# end\r\n", 2 },
	/* No directive: at the end. */
	{ "# only comments\n\n", "device d sim bar 0 4K",
	  "# only comments\n\ndevice d sim bar 0 4K\n", 3 },
	{ "", "device d sim bar 0 4K", "device d sim bar 0 4K\n", 1 },
	{ "# no end", "device d sim bar 0 4K", "# no end\ndevice d sim bar 0 4K", 2 },
	/* As given: blanks and a comment of its own kept. */
	{ "", "  allow  user 1\tdevice d # why", "  allow  user 1\tdevice d # why\n", 1 },
};

START_TEST(test_add)
{
	struct policy_doc *doc = doc_of(adds[_i].before, strlen(adds[_i].before));
	unsigned line = 0;

	ck_assert_int_eq(policy_doc_add(doc, adds[_i].rule, &line), 0);
	ck_assert_uint_eq(line, adds[_i].line);
	assert_prints(doc, adds[_i].after, strlen(adds[_i].after));
	policy_doc_free(doc);
}
END_TEST

START_TEST(test_add_refused)
{
	static const char text[] = "device d sim bar 0 4K\n";
	static const char *const bad[] = { "",	   "   ",     "# comment", "  # c",
					   "a\nb", "allow\r", "x\n",	   "\t" };
	struct policy_doc *doc = doc_of(text, sizeof(text) - 1);

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		unsigned line = 0;
		ck_assert_int_eq(policy_doc_add(doc, bad[i], &line), -EINVAL);
		ck_assert_uint_eq(line, 0);
		ck_assert(!policy_doc_is_rule(bad[i]) || strpbrk(bad[i], "\r\n"));
	}
	assert_prints(doc, text, sizeof(text) - 1);
	policy_doc_free(doc);
}
END_TEST

START_TEST(test_remove)
{
	static const char text[] = "# the device\n"
				   "device d sim bar 0 4K\n"
				   "\n"
				   "allow user 1 device d   # alice\n"
				   "allow user 2 device d";
	struct policy_doc *doc = doc_of(text, sizeof(text) - 1);

	ck_assert_int_eq(policy_doc_remove(doc, 1), -EINVAL); /* a comment */
	ck_assert_int_eq(policy_doc_remove(doc, 3), -EINVAL); /* blank */
	ck_assert_int_eq(policy_doc_remove(doc, 0), -ERANGE);
	ck_assert_int_eq(policy_doc_remove(doc, 6), -ERANGE);
	assert_prints(doc, text, sizeof(text) - 1);
	ck_assert_int_eq(policy_doc_remove(doc, 4), 0);
	assert_prints(doc, "# the device\ndevice d sim bar 0 4K\n\nallow user 2 device d",
		      strlen("# the device\ndevice d sim bar 0 4K\n\nallow user 2 device d"));
	/* The last line, which had no line end: the one before keeps its own. */
	ck_assert_int_eq(policy_doc_remove(doc, 4), 0);
	assert_prints(doc, "# the device\ndevice d sim bar 0 4K\n\n",
		      strlen("# the device\ndevice d sim bar 0 4K\n\n"));
	ck_assert_uint_eq(policy_doc_n_lines(doc), 3);
	policy_doc_free(doc);
}
END_TEST

START_TEST(test_find)
{
	static const char text[] = "device d sim bar 0 4K\n"
				   "# allow user 1 device d\n"
				   "allow user 1 device d bar 0\n"
				   "  allow\tuser 1   device d # a comment\r\n"
				   "allow user 10 device d\n"
				   "allow user 1 device d\n";
	struct policy_doc *doc = doc_of(text, sizeof(text) - 1);

	/* Words equal, blanks and comments aside; never a comment line; never a prefix. */
	ck_assert_uint_eq(policy_doc_find(doc, "allow user 1 device d", 0), 4);
	ck_assert_uint_eq(policy_doc_find(doc, "allow user 1 device d", 4), 6);
	ck_assert_uint_eq(policy_doc_find(doc, "allow user 1 device d", 6), 0);
	ck_assert_uint_eq(policy_doc_find(doc, " allow user 1 device d\t# other", 0), 4);
	ck_assert_uint_eq(policy_doc_find(doc, "allow user 1 device d bar 0", 0), 3);
	ck_assert_uint_eq(policy_doc_find(doc, "allow user 1 device", 0), 0);
	ck_assert_uint_eq(policy_doc_find(doc, "allow user 1 device d bar", 0), 0);
	ck_assert_uint_eq(policy_doc_find(doc, "ALLOW user 1 device d", 0), 0);
	ck_assert_uint_eq(policy_doc_find(doc, "allow user 10 device d", 0), 5);
	ck_assert_uint_eq(policy_doc_find(doc, "# allow user 1 device d", 0), 0);
	ck_assert_uint_eq(policy_doc_find(doc, "", 0), 0);
	policy_doc_free(doc);
}
END_TEST

/* ---- Installing ---- */

/* Ids only: the tests name users and groups by number, so the machine's database is moot. */
static int id_lookup(const char *name, uint32_t *ret_id)
{
	char *end;
	unsigned long v = strtoul(name, &end, 10);

	if (!name[0] || *end || v >= UINT32_MAX)
		return -ENOENT;
	*ret_id = (uint32_t)v;
	return 0;
}

static const struct policy_resolver ids = { .user = id_lookup, .group = id_lookup };

static const char base_policy[] = "# The test's policy.\n"
				  "device sim0 sim bar 0 64K bar 2 1M\n"
				  "\n"
				  "# user 1000 may use BAR 2\n"
				  "allow user 1000 device sim0 bar 2   # trailing comment\n"
				  "admin user 0\n"
				  "# the end\n";

/* A private directory (0700, as the daemon's ownership checks want) with the policy in it. */
struct fixture {
	char dir[64];
	char policy[96];
	char dropins[112];
};

static struct fixture fx;

static void write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	ck_assert_msg(fd >= 0, "%s: %m", path);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	ck_assert_int_eq(fchmod(fd, mode), 0);
	close(fd);
}

static void setup(void)
{
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/p2pbuf-test-edit-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(fx.dir));
	snprintf(fx.policy, sizeof(fx.policy), "%s/policy", fx.dir);
	snprintf(fx.dropins, sizeof(fx.dropins), "%s/policy.d", fx.dir);
	write_file(fx.policy, base_policy, 0644);
}

static void remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[512];

	if (!d)
		return;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (unlink(path) < 0)
			remove_tree(path);
	}
	closedir(d);
	rmdir(dir);
}

static void teardown(void)
{
	remove_tree(fx.dir);
}

static char *slurp(const char *path)
{
	char *text = NULL;
	size_t len = 0;

	ck_assert_int_eq(policy_edit_read(path, &text, &len), 0);
	return text;
}

static void assert_file(const char *path, const char *want)
{
	_cleanup_free_ char *text = slurp(path);

	ck_assert_str_eq(text, want);
}

static ino_t inode_of(const char *path)
{
	struct stat st;

	ck_assert_int_eq(stat(path, &st), 0);
	return st.st_ino;
}

/* The directory holds exactly the names listed (space-separated, sorted): no temporary file
 * is left. */
static void assert_entries(const char *dir, const char *want)
{
	struct dirent **list = NULL;
	char got[512] = "";
	int n = scandir(dir, &list, NULL, alphasort);

	ck_assert_int_ge(n, 0);
	for (int i = 0; i < n; i++) {
		if (strcmp(list[i]->d_name, ".") && strcmp(list[i]->d_name, ".."))
			snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s",
				 got[0] ? " " : "", list[i]->d_name);
		free(list[i]);
	}
	free(list);
	ck_assert_str_eq(got, want);
}

static struct policy_edit edit_of(enum policy_edit_kind kind)
{
	return (struct policy_edit){ .kind = kind, .policy = fx.policy, .resolver = &ids };
}

/* Install e expecting r_expected; the report is the caller's to check and free. */
static void install(const struct policy_edit *e, int r_expected, struct policy_edit_report *rep)
{
	int r = policy_edit_install(e, rep);

	ck_assert_msg(r == r_expected, "install: %d (expected %d): %s", r, r_expected,
		      rep->message ? rep->message : "(no message)");
	ck_assert(r < 0 ? rep->message != NULL : rep->message == NULL);
}

START_TEST(test_install_add)
{
	struct policy_edit e = edit_of(POLICY_EDIT_ADD);
	struct policy_edit_report rep;
	ino_t before = inode_of(fx.policy);
	_cleanup_free_ char *text = NULL;

	e.rule = "allow user 1001 device sim0 bar 0";
	install(&e, 0, &rep);
	ck_assert_str_eq(rep.file, fx.policy);
	ck_assert_uint_eq(rep.line, 7);
	ck_assert_str_eq(rep.text, e.rule);
	ck_assert(!rep.created);
	ck_assert_uint_eq(rep.diags.n, 0);
	policy_edit_report_done(&rep);
	text = slurp(fx.policy);
	ck_assert_str_eq(text, "# The test's policy.\n"
			       "device sim0 sim bar 0 64K bar 2 1M\n"
			       "\n"
			       "# user 1000 may use BAR 2\n"
			       "allow user 1000 device sim0 bar 2   # trailing comment\n"
			       "admin user 0\n"
			       "allow user 1001 device sim0 bar 0\n"
			       "# the end\n");
	/* A new file took the old one's name: no reader ever saw half of it. */
	ck_assert(inode_of(fx.policy) != before);
	assert_entries(fx.dir, "policy");
	policy_edit_report_done(&rep); /* twice is fine: it was emptied */
}
END_TEST

/* An edit that would make the policy invalid is refused with every error, and nothing moves. */
START_TEST(test_install_invalid)
{
	struct policy_edit e = edit_of(POLICY_EDIT_ADD);
	struct policy_edit_report rep;
	ino_t before = inode_of(fx.policy);
	_cleanup_free_ char *text = NULL;

	e.rule = "allow user 1001 device nosuch bar 9";
	install(&e, -EINVAL, &rep);
	ck_assert_ptr_nonnull(strstr(rep.message, "would not load"));
	ck_assert_uint_ge(rep.diags.n, 1);
	ck_assert_str_eq(rep.diags.v[0].file, fx.policy);
	ck_assert_uint_eq(rep.diags.v[0].line, 7);
	ck_assert_uint_ge(rep.diags.v[0].column, 1);
	ck_assert(!rep.diags.v[0].warning);
	/* The line the error is on is the pending edit's, not the file's. */
	ck_assert_str_eq(rep.diags.v[0].text, e.rule);
	ck_assert_uint_eq(policy_edit_errors(&rep.diags), rep.diags.n);
	policy_edit_report_done(&rep);
	text = slurp(fx.policy);
	ck_assert_str_eq(text, base_policy);
	ck_assert(inode_of(fx.policy) == before);
	assert_entries(fx.dir, "policy");
}
END_TEST

START_TEST(test_install_add_refused)
{
	static const char *const rules[] = { "", "  ", "# comment", "a\nb" };
	static const char *const why[] = { "blank", "blank", "a comment", "line end" };
	struct policy_edit e = edit_of(POLICY_EDIT_ADD);
	struct policy_edit_report rep;

	for (size_t i = 0; i < ARRAY_SIZE(rules); i++) {
		e.rule = rules[i];
		install(&e, -EINVAL, &rep);
		ck_assert_msg(strstr(rep.message, why[i]), "%s", rep.message);
		policy_edit_report_done(&rep);
	}
	assert_file(fx.policy, base_policy);
	assert_entries(fx.dir, "policy");
}
END_TEST

START_TEST(test_install_remove_line)
{
	struct policy_edit e = edit_of(POLICY_EDIT_REMOVE_LINE);
	struct policy_edit_report rep;
	_cleanup_free_ char *text = NULL;
	static const struct {
		unsigned line;
		const char *why;
	} refused[] = {
		{ 1, "policy:1 is a comment, not a directive" },
		{ 3, "policy:3 is blank, not a directive" },
		{ 8, "has 7 lines: there is no line 8" },
		{ 0, "there is no line 0" },
		/* Valid alone, but the rule needs the device. */
		{ 2, "would not load" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(refused); i++) {
		e.line = refused[i].line;
		install(&e, -EINVAL, &rep);
		ck_assert_msg(strstr(rep.message, refused[i].why), "%s", rep.message);
		policy_edit_report_done(&rep);
	}
	text = slurp(fx.policy);
	ck_assert_str_eq(text, base_policy);
	e.line = 5;
	install(&e, 0, &rep);
	ck_assert_uint_eq(rep.line, 5);
	ck_assert_str_eq(rep.text, "allow user 1000 device sim0 bar 2   # trailing comment");
	policy_edit_report_done(&rep);
	free(text);
	text = slurp(fx.policy);
	ck_assert_str_eq(text, "# The test's policy.\n"
			       "device sim0 sim bar 0 64K bar 2 1M\n"
			       "\n"
			       "# user 1000 may use BAR 2\n"
			       "admin user 0\n"
			       "# the end\n");
	assert_entries(fx.dir, "policy");
}
END_TEST

/* --match looks in every file of the policy: none, one (in a drop-in), several. */
START_TEST(test_install_remove_match)
{
	struct policy_edit e = edit_of(POLICY_EDIT_REMOVE_MATCH);
	struct policy_edit_report rep;
	char a[160], b[160], want[512];
	_cleanup_free_ char *text = NULL;

	ck_assert_int_eq(mkdir(fx.dropins, 0755), 0);
	snprintf(a, sizeof(a), "%s/10-a.policy", fx.dropins);
	snprintf(b, sizeof(b), "%s/20-b.policy", fx.dropins);
	write_file(a, "allow user 1002 device sim0\n# allow user 1003 device sim0\n", 0644);
	write_file(b, "allow user 1003 device sim0 # once\nallow   user 1002 device sim0\n", 0644);

	e.rule = "allow user 1004 device sim0";
	install(&e, -ENOENT, &rep);
	ck_assert_ptr_nonnull(strstr(rep.message, "no line of the policy"));
	policy_edit_report_done(&rep);

	e.rule = "allow user 1002 device sim0 # whichever";
	install(&e, -ENOTUNIQ, &rep);
	snprintf(want, sizeof(want),
		 "2 lines have the words of \"%s\": %s/10-a.policy:1, %s/20-b.policy:2", e.rule,
		 fx.dropins, fx.dropins);
	ck_assert_msg(strstr(rep.message, want), "%s", rep.message);
	policy_edit_report_done(&rep);

	e.rule = "allow user 1003 device sim0";
	install(&e, 0, &rep);
	snprintf(b, sizeof(b), "%s/20-b.policy", fx.dropins);
	ck_assert_str_eq(rep.file, b);
	ck_assert_uint_eq(rep.line, 1);
	policy_edit_report_done(&rep);
	text = slurp(b);
	ck_assert_str_eq(text, "allow   user 1002 device sim0\n");
	free(text);
	text = slurp(a);
	ck_assert_str_eq(text, "allow user 1002 device sim0\n# allow user 1003 device sim0\n");
	assert_entries(fx.dropins, "10-a.policy 20-b.policy");
	assert_entries(fx.dir, "policy policy.d");
}
END_TEST

/* The old file's owner and mode stay; a new drop-in (and its directory) get 0644 (0755) and
 * the main file's owner. */
START_TEST(test_install_owner_mode)
{
	struct policy_edit e = edit_of(POLICY_EDIT_ADD);
	struct policy_edit_report rep;
	char dropin[160];
	struct stat st;

	/* The daemon trusts only root's (or its own user's) files: the group may be anyone. */
	ck_assert_int_eq(chown(fx.policy, 0, 4321), 0);
	ck_assert_int_eq(chmod(fx.policy, 0600), 0);
	umask(077);
	e.rule = "allow user 1001 device sim0";
	install(&e, 0, &rep);
	policy_edit_report_done(&rep);
	ck_assert_int_eq(stat(fx.policy, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0600);
	ck_assert_uint_eq(st.st_uid, 0);
	ck_assert_uint_eq(st.st_gid, 4321);

	e.file = "30-new.policy";
	e.rule = "allow user 1005 device sim0";
	install(&e, 0, &rep);
	snprintf(dropin, sizeof(dropin), "%s/30-new.policy", fx.dropins);
	ck_assert_str_eq(rep.file, dropin);
	ck_assert(rep.created);
	ck_assert_uint_eq(rep.line, 1);
	policy_edit_report_done(&rep);
	umask(022);
	ck_assert_int_eq(stat(dropin, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0644);
	ck_assert_uint_eq(st.st_uid, 0);
	ck_assert_uint_eq(st.st_gid, 4321);
	ck_assert_int_eq(stat(fx.dropins, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0755);
	assert_file(dropin, "allow user 1005 device sim0\n");
	assert_entries(fx.dropins, "30-new.policy");
}
END_TEST

/* A new drop-in that would not load leaves neither the file nor the directory made for it. */
START_TEST(test_install_new_dropin_invalid)
{
	struct policy_edit e = edit_of(POLICY_EDIT_ADD);
	struct policy_edit_report rep;

	e.file = "30-new.policy";
	e.rule = "allow user 1005 device sim9";
	install(&e, -EINVAL, &rep);
	ck_assert_uint_ge(rep.diags.n, 1);
	ck_assert_uint_eq(rep.diags.v[0].line, 1);
	ck_assert_ptr_nonnull(strstr(rep.diags.v[0].file, "policy.d/30-new.policy"));
	policy_edit_report_done(&rep);
	assert_entries(fx.dir, "policy");
}
END_TEST

/* What the daemon would never read is refused as a target. */
START_TEST(test_edit_file_names)
{
	static const struct {
		const char *file; /* "@/" stands for the fixture's directory */
		const char *want, *why;
	} cases[] = {
		{ NULL, "@/policy", NULL },
		{ "@/policy", "@/policy", NULL },
		{ "@/./policy", "@/policy", NULL }, /* the same file, spelt otherwise */
		{ "10-x.policy", "@/policy.d/10-x.policy", NULL },
		{ "@/policy.d/10-x.policy", "@/policy.d/10-x.policy", NULL },
		{ ".hidden.policy", NULL, "is not a drop-in name" },
		{ "10-x.conf", NULL, "is not a drop-in name" },
		{ ".policy", NULL, "is not a drop-in name" },
		{ "@/elsewhere/10-x.policy", NULL, "so the daemon would never read it" },
		{ "/etc/10-x.policy", NULL, "so the daemon would never read it" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char file[256], want[256];
		const char *f = cases[i].file;
		char *got = NULL, *message = NULL;
		int r;

		if (f && !strncmp(f, "@/", 2))
			snprintf(file, sizeof(file), "%s/%s", fx.dir, f + 2), f = file;
		r = policy_edit_file(fx.policy, f, &got, &message);
		if (cases[i].want) {
			snprintf(want, sizeof(want), "%s/%s", fx.dir, cases[i].want + 2);
			ck_assert_msg(r == 0, "%s: %d %s", f, r, message);
			ck_assert_str_eq(got, want);
		} else {
			ck_assert_int_eq(r, -EINVAL);
			ck_assert_ptr_null(got);
			ck_assert_msg(strstr(message, cases[i].why), "%s", message);
		}
		free(got);
		free(message);
	}
}
END_TEST

START_TEST(test_install_symlink)
{
	struct policy_edit e = edit_of(POLICY_EDIT_ADD);
	struct policy_edit_report rep;
	char real[128];

	snprintf(real, sizeof(real), "%s/real", fx.dir);
	ck_assert_int_eq(rename(fx.policy, real), 0);
	ck_assert_int_eq(symlink("real", fx.policy), 0);
	e.rule = "allow user 1001 device sim0";
	install(&e, -ELOOP, &rep);
	ck_assert_ptr_nonnull(strstr(rep.message, "is a symbolic link"));
	policy_edit_report_done(&rep);
	assert_entries(fx.dir, "policy real");
}
END_TEST

/* REPLACE installs a whole new text, only over the text the copy was made of. */
START_TEST(test_install_replace)
{
	static const char next[] = "device sim0 sim bar 0 64K\nadmin user 0\n";
	struct policy_edit e = edit_of(POLICY_EDIT_REPLACE);
	struct policy_edit_report rep;
	_cleanup_free_ char *text = NULL;

	e.text = next;
	e.len = strlen(next);
	e.old_text = "something else";
	e.old_len = strlen(e.old_text);
	install(&e, -ESTALE, &rep);
	ck_assert_ptr_nonnull(strstr(rep.message, "changed since the copy was made"));
	policy_edit_report_done(&rep);
	e.old_text = NULL;
	install(&e, -ESTALE, &rep); /* it exists now, which the copy said it did not */
	policy_edit_report_done(&rep);
	e.old_text = base_policy;
	e.old_len = strlen(base_policy);
	install(&e, 0, &rep);
	ck_assert_uint_eq(rep.line, 0);
	policy_edit_report_done(&rep);
	text = slurp(fx.policy);
	ck_assert_str_eq(text, next);
	assert_entries(fx.dir, "policy");
}
END_TEST

/* ---- The lock ---- */

/* A child that holds the policy's lock until told to let go, as another editor would. */
struct holder {
	pid_t pid;
	int release; /* write a byte to let go */
};

static struct holder hold_lock(const char *extra_rule)
{
	int ready[2], release[2];
	struct holder h;
	char c;

	ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(release, O_CLOEXEC), 0);
	h.pid = fork();
	ck_assert_int_ge(h.pid, 0);
	if (h.pid == 0) {
		int fd = open(fx.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0 || flock(fd, LOCK_EX) < 0)
			_exit(1);
		/* Another admin's edit, landing while the lock is held. */
		if (extra_rule) {
			char tmp[128];
			FILE *f;
			snprintf(tmp, sizeof(tmp), "%s/.other", fx.dir);
			f = fopen(tmp, "we");
			if (!f || fprintf(f, "%s%s\n", base_policy, extra_rule) < 0 ||
			    fclose(f) != 0 || rename(tmp, fx.policy) < 0)
				_exit(1);
		}
		if (write(ready[1], "r", 1) != 1 || read(release[0], &c, 1) != 1)
			_exit(1);
		_exit(0);
	}
	close(ready[1]);
	close(release[0]);
	ck_assert_int_eq(read(ready[0], &c, 1), 1); /* it holds the lock now */
	close(ready[0]);
	h.release = release[1];
	return h;
}

static void release_lock(struct holder *h)
{
	int status;

	ck_assert_int_eq(write(h->release, "x", 1), 1);
	close(h->release);
	ck_assert_int_eq(waitpid(h->pid, &status, 0), h->pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Whether pid waits for a flock: /proc/locks lists a blocked request with "->". */
static bool waits_for_flock(pid_t pid)
{
	FILE *f = fopen("/proc/locks", "re");
	char line[256], want[32];
	bool found = false;

	ck_assert_ptr_nonnull(f);
	snprintf(want, sizeof(want), " %d ", (int)pid);
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, "-> FLOCK") && strstr(line, want);
	fclose(f);
	return found;
}

START_TEST(test_lock_nowait)
{
	struct holder h = hold_lock(NULL);
	struct policy_edit e = edit_of(POLICY_EDIT_ADD);
	struct policy_edit_report rep;

	e.rule = "allow user 1001 device sim0";
	e.nowait = true;
	install(&e, -EWOULDBLOCK, &rep);
	ck_assert_ptr_nonnull(strstr(rep.message, "another edit of the policy is under way"));
	policy_edit_report_done(&rep);
	assert_file(fx.policy, base_policy);
	release_lock(&h);
	install(&e, 0, &rep);
	policy_edit_report_done(&rep);
}
END_TEST

/* An editor waits for the lock, then reads the file again: the edit that landed while it
 * waited is kept, and its own comes after it. */
START_TEST(test_lock_waits_and_rereads)
{
	struct holder h = hold_lock("allow user 1007 device sim0");
	struct policy_edit e = edit_of(POLICY_EDIT_ADD);
	struct policy_edit_report rep;
	_cleanup_free_ char *text = NULL;
	char want[512];
	pid_t editor;
	int status;

	e.rule = "allow user 1001 device sim0";
	editor = fork();
	ck_assert_int_ge(editor, 0);
	if (editor == 0)
		_exit(policy_edit_install(&e, &rep) == 0 ? 0 : 1);
	/* A condition, not a pause: the kernel lists the editor as waiting for the lock. */
	for (int tries = 0; !waits_for_flock(editor); tries++) {
		ck_assert_msg(tries < 30000, "the editor never waited for the lock");
		ck_assert_int_eq(waitpid(editor, &status, WNOHANG), 0); /* nor finished */
		usleep(1000);
	}
	release_lock(&h);
	ck_assert_int_eq(waitpid(editor, &status, 0), editor);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	text = slurp(fx.policy);
	snprintf(want, sizeof(want), "%sallow user 1007 device sim0\n", base_policy);
	/* Both edits: the other admin's rule last of the rules, then ours after it. */
	ck_assert_ptr_nonnull(strstr(text, "allow user 1001 device sim0\n"));
	ck_assert_ptr_nonnull(strstr(text, "allow user 1007 device sim0\n"));
	ck_assert_str_eq(text, "# The test's policy.\n"
			       "device sim0 sim bar 0 64K bar 2 1M\n"
			       "\n"
			       "# user 1000 may use BAR 2\n"
			       "allow user 1000 device sim0 bar 2   # trailing comment\n"
			       "admin user 0\n"
			       "# the end\n"
			       "allow user 1007 device sim0\n"
			       "allow user 1001 device sim0\n");
	assert_entries(fx.dir, "policy");
}
END_TEST

static Suite *policy_edit_suite(void)
{
	Suite *s = suite_create("policy-edit");
	TCase *tc = tcase_create("document");

	tcase_add_test(tc, test_round_trip_example);
	tcase_add_loop_test(tc, test_round_trip_odd, 0, ARRAY_SIZE(odd_files));
	tcase_add_test(tc, test_line_kinds);
	tcase_add_test(tc, test_too_large);
	tcase_add_loop_test(tc, test_add, 0, ARRAY_SIZE(adds));
	tcase_add_test(tc, test_add_refused);
	tcase_add_test(tc, test_remove);
	tcase_add_test(tc, test_find);
	suite_add_tcase(s, tc);

	tc = tcase_create("install");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_install_add);
	tcase_add_test(tc, test_install_invalid);
	tcase_add_test(tc, test_install_add_refused);
	tcase_add_test(tc, test_install_remove_line);
	tcase_add_test(tc, test_install_remove_match);
	tcase_add_test(tc, test_install_owner_mode);
	tcase_add_test(tc, test_install_new_dropin_invalid);
	tcase_add_test(tc, test_edit_file_names);
	tcase_add_test(tc, test_install_symlink);
	tcase_add_test(tc, test_install_replace);
	tcase_add_test(tc, test_lock_nowait);
	tcase_add_test(tc, test_lock_waits_and_rereads);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(policy_edit_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
