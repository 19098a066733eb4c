/* libFuzzer target for the CLI's policy editor (client/policy-edit.c): any input, as a policy
 * file, must come back byte for byte from the document (print(parse(x)) == x); an edit the
 * input chooses (add a rule, remove a line, remove the line a rule matches) must change exactly
 * one line and leave every other byte as it was, or be refused with the document untouched;
 * and the edited text must itself print back unchanged. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "policy-edit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			abort();                                                                   \
	} while (0)

/* Rules to add, from the plain to what add must refuse. */
static const char *const rules[] = {
	"allow user alice device sim0 bar 4",
	"  device\tsim1 sim bar 0 4K # a comment",
	"admin group p2pbuf-admin",
	"x",
	"# only a comment",
	"",
	"two\nlines",
	"ends in CR\r",
};

static struct policy_doc *parse(const char *text, size_t len)
{
	struct policy_doc *doc = NULL;
	int r = policy_doc_parse(text, len, &doc);

	if (r == -ENOMEM)
		return NULL;
	check(r == 0 && doc);
	return doc;
}

/* print(doc) is exactly text[0..len); returns the printed copy. */
static char *prints(const struct policy_doc *doc, const char *text, size_t len)
{
	char *out = NULL;
	size_t n = 0;

	if (policy_doc_print(doc, &out, &n) < 0)
		return NULL;
	check(n == len && memcmp(out, text, len) == 0 && out[n] == '\0');
	return out;
}

static bool line_eq(const struct policy_doc *a, unsigned i, const struct policy_doc *b, unsigned j)
{
	size_t la = 0, lb = 0;
	const char *sa = policy_doc_line(a, i, &la), *sb = policy_doc_line(b, j, &lb);

	return la == lb && memcmp(sa, sb, la) == 0;
}

/* after is before with one line (after's line `at`) more, or (remove) before's `at` less:
 * every other line's bytes are the same, in the same order. */
static void one_line_changed(const struct policy_doc *before, const struct policy_doc *after,
			     unsigned at, bool added)
{
	const struct policy_doc *longer = added ? after : before;
	const struct policy_doc *shorter = added ? before : after;
	unsigned n = policy_doc_n_lines(shorter);

	check(policy_doc_n_lines(longer) == n + 1 && at >= 1 && at <= n + 1);
	for (unsigned i = 1; i <= n; i++)
		check(line_eq(shorter, i, longer, i < at ? i : i + 1));
}

/* The rule at line n of doc, or NULL when it holds a NUL byte (a C string cannot carry it). */
static char *rule_at(const struct policy_doc *doc, unsigned n)
{
	size_t len = 0;
	const char *s = policy_doc_line(doc, n, &len);

	return memchr(s, '\0', len) ? NULL : strndup(s, len);
}

/* Remove the first line with the words of line `from`: at or before it, and a directive. */
static int remove_match(struct policy_doc *doc, unsigned from, unsigned *ret_line)
{
	_cleanup_free_ char *rule = rule_at(doc, from);
	unsigned line = rule ? policy_doc_find(doc, rule, 0) : 0;

	if (!line)
		return -ENOENT;
	check(line <= from && policy_doc_line_kind(doc, line) == POLICY_DOC_DIRECTIVE);
	check(policy_doc_find(doc, rule, line) == 0 || policy_doc_find(doc, rule, line) > line);
	check(policy_doc_remove(doc, line) == 0);
	*ret_line = line;
	return 0;
}

/* The rule added is line `line`, as given, with a CR where the file's lines have one. */
static void added_as_given(const struct policy_doc *doc, unsigned line, const char *rule)
{
	size_t len = 0, want = strlen(rule);
	const char *s = policy_doc_line(doc, line, &len);

	check(len >= want && memcmp(s, rule, want) == 0);
	check(len == want || (len == want + 1 && s[want] == '\r'));
}

/* The edit the input chooses from its first bytes (which are also part of the text). */
static int edit(struct policy_doc *doc, const uint8_t *data, size_t size, unsigned *ret_line,
		bool *ret_added)
{
	unsigned n = policy_doc_n_lines(doc), pick = size > 1 ? data[1] : 0;
	const char *rule = rules[pick % ARRAY_SIZE(rules)];
	int r;

	*ret_added = size == 0 || data[0] % 3 == 0;
	if (*ret_added) {
		r = policy_doc_add(doc, rule, ret_line);
		if (r == 0)
			added_as_given(doc, *ret_line, rule);
		return r;
	}
	if (n == 0)
		return policy_doc_remove(doc, 1);
	if (data[0] % 3 == 1) {
		*ret_line = pick % n + 1;
		return policy_doc_remove(doc, *ret_line);
	}
	return remove_match(doc, pick % n + 1, ret_line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_(policy_doc_freep) struct policy_doc *doc = NULL, *orig = NULL, *again = NULL;
	_cleanup_free_ char *text = NULL, *edited = NULL, *reprinted = NULL;
	const char *input = (const char *)data;
	size_t len = 0;
	unsigned line = 0;
	bool added = false;
	int r;

	doc = parse(input, size);
	orig = parse(input, size);
	if (!doc || !orig || !(text = prints(doc, input, size)))
		return 0;
	r = edit(doc, data, size, &line, &added);
	if (r < 0) {
		/* Refused: the document prints back untouched. */
		if (r != -ENOMEM)
			free(prints(doc, input, size));
		return 0;
	}
	one_line_changed(orig, doc, line, added);
	if (policy_doc_print(doc, &edited, &len) < 0 || !(again = parse(edited, len)))
		return 0;
	/* What was written reads back as the edited document: stable, and still one line. */
	reprinted = prints(again, edited, len);
	one_line_changed(orig, again, line, added);
	return 0;
}
