/* Unit tests of the policy editor (client/policy-edit.c): the document keeps every byte and
 * changes only the line edited; add, remove by line and by match; and the installing of an
 * edit: refusal of an invalid edit (nothing written), atomicity, ownership and mode, and the
 * lock that keeps two editors from losing each other's edit. */
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
