/* The policy editor: a document model of one policy file that keeps every byte, and the
 * installing of an edit under a lock. See policy-edit.h for what each part promises. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "policy.h"
#include "policy-edit.h"

/* ---- The document: pure ---- */

/* A line points into the document's copy of the text it was parsed from, or (a line added
 * since) at a string of its own, so that a large file costs one copy and an array. */
struct doc_line {
	const char *s; /* len bytes and then a NUL or the '\n' that ends the line */
	size_t len;
	bool end;   /* a '\n' follows; only the last line may lack one */
	bool owned; /* s is malloc'd for this line */
};

struct policy_doc {
	char *text; /* what was parsed, with a NUL after it */
	struct doc_line *lines;
	size_t n, cap;
	size_t bytes; /* what print writes, kept so that add can refuse to grow past the cap */
};

/* The policy's tokenizer reads these as blanks (policy.c); '#' starts a comment anywhere. */
static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* The next word of s[0..len) at or after *pos, stopping at a comment: its start, and its length
 * in *ret_len, or NULL when the line has no more words. */
static const char *next_word(const char *s, size_t len, size_t *pos, size_t *ret_len)
{
	size_t i = *pos, start;

	while (i < len && is_blank(s[i]))
		i++;
	if (i == len || s[i] == '#')
		return NULL;
	for (start = i; i < len && !is_blank(s[i]) && s[i] != '#'; i++)
		;
	*pos = i;
	*ret_len = i - start;
	return s + start;
}

static enum policy_doc_line_kind kind_of(const char *s, size_t len)
{
	size_t pos = 0, wlen, i = 0;

	if (next_word(s, len, &pos, &wlen))
		return POLICY_DOC_DIRECTIVE;
	while (i < len && is_blank(s[i]))
		i++;
	return i < len ? POLICY_DOC_COMMENT : POLICY_DOC_BLANK;
}

/* Make room for one more line at the end; the array is untouched on failure. */
static int reserve_line(struct policy_doc *doc)
{
	size_t cap = doc->cap ? doc->cap * 2 : 64;
	struct doc_line *a;

	if (doc->n < doc->cap)
		return 0;
	a = reallocarray(doc->lines, cap, sizeof(*a));
	if (!a)
		return -ENOMEM;
	doc->lines = a;
	doc->cap = cap;
	return 0;
}

static int append_line(struct policy_doc *doc, const char *s, size_t len, bool end)
{
	int r = reserve_line(doc);

	if (r < 0)
		return r;
	doc->lines[doc->n++] = (struct doc_line){ s, len, end, false };
	doc->bytes += len + end;
	return 0;
}

int policy_doc_parse(const char *text, size_t len, struct policy_doc **ret_doc)
{
	_cleanup_(policy_doc_freep) struct policy_doc *doc = NULL;
	size_t pos = 0;

	if (len > POLICY_MAX_SIZE)
		return -E2BIG;
	doc = calloc(1, sizeof(*doc));
	if (!doc || !(doc->text = malloc(len + 1)))
		return -ENOMEM;
	memcpy(doc->text, text, len);
	doc->text[len] = '\0';
	while (pos < len) {
		const char *s = doc->text + pos, *nl = memchr(s, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - s) : len - pos;
		int r = append_line(doc, s, n, nl != NULL);

		if (r < 0)
			return r;
		pos += n + 1;
	}
	*ret_doc = TAKE_PTR(doc);
	return 0;
}

void policy_doc_free(struct policy_doc *doc)
{
	if (!doc)
		return;
	for (size_t i = 0; i < doc->n; i++)
		if (doc->lines[i].owned)
			free((char *)doc->lines[i].s);
	free(doc->lines);
	free(doc->text);
	free(doc);
}

unsigned policy_doc_n_lines(const struct policy_doc *doc)
{
	/* At most POLICY_MAX_SIZE lines (1 MiB), so the count fits. */
	return (unsigned)doc->n;
}

const char *policy_doc_line(const struct policy_doc *doc, unsigned n, size_t *ret_len)
{
	const struct doc_line *l = &doc->lines[n - 1];

	*ret_len = l->len;
	return l->s;
}

enum policy_doc_line_kind policy_doc_line_kind(const struct policy_doc *doc, unsigned n)
{
	const struct doc_line *l = &doc->lines[n - 1];

	return kind_of(l->s, l->len);
}

int policy_doc_print(const struct policy_doc *doc, char **ret_text, size_t *ret_len)
{
	char *text = malloc(doc->bytes + 1), *p = text;

	if (!text)
		return -ENOMEM;
	for (size_t i = 0; i < doc->n; i++) {
		memcpy(p, doc->lines[i].s, doc->lines[i].len);
		p += doc->lines[i].len;
		if (doc->lines[i].end)
			*p++ = '\n';
	}
	*p = '\0';
	*ret_text = text;
	*ret_len = doc->bytes;
	return 0;
}

bool policy_doc_is_rule(const char *rule)
{
	return kind_of(rule, strlen(rule)) == POLICY_DOC_DIRECTIVE;
}

/* Where a new rule goes: after the last directive, since the comment lines above a directive
 * say what it is for, so a rule put in among them (or after comments that end the file: a
 * footer, a commented-out example) would seem to be what they describe. Appended rules stay
 * together in the order they were added, at the end of the rules. A file with no directive
 * gets it at its end. Returns the index of the line it goes before. */
static size_t insertion_point(const struct policy_doc *doc)
{
	for (size_t i = doc->n; i > 0; i--)
		if (kind_of(doc->lines[i - 1].s, doc->lines[i - 1].len) == POLICY_DOC_DIRECTIVE)
			return i;
	return doc->n;
}

/* A CRLF file gets a CRLF line: the style of the first line end decides. */
static bool uses_crlf(const struct policy_doc *doc)
{
	const struct doc_line *first = doc->n ? &doc->lines[0] : NULL;

	return first && first->end && first->len > 0 && first->s[first->len - 1] == '\r';
}

int policy_doc_add(struct policy_doc *doc, const char *rule, unsigned *ret_line)
{
	size_t at = insertion_point(doc), len = strlen(rule);
	bool crlf = uses_crlf(doc);
	struct doc_line line = { .end = true, .owned = true };
	char *text = NULL;
	int r;

	if (strpbrk(rule, "\r\n") || !policy_doc_is_rule(rule))
		return -EINVAL;
	/* The new line and the '\n' of a last line that had none. */
	if (len + crlf + 1 > POLICY_MAX_SIZE - doc->bytes)
		return -E2BIG;
	r = reserve_line(doc);
	if (r < 0)
		return r;
	if (asprintf(&text, "%s%s", rule, crlf ? "\r" : "") < 0)
		return -ENOMEM;
	line.s = text;
	line.len = len + crlf;
	/* Inserted after the last line, which had no line end: it gets one, and the new line
	 * keeps the file without a final newline, as it was. */
	if (at == doc->n && at > 0 && !doc->lines[at - 1].end) {
		doc->lines[at - 1].end = true;
		line.end = false;
	}
	memmove(&doc->lines[at + 1], &doc->lines[at], (doc->n - at) * sizeof(*doc->lines));
	doc->lines[at] = line;
	doc->n++;
	doc->bytes += line.len + 1;
	*ret_line = (unsigned)at + 1;
	return 0;
}

int policy_doc_remove(struct policy_doc *doc, unsigned n)
{
	struct doc_line *l;

	if (n == 0 || n > doc->n)
		return -ERANGE;
	l = &doc->lines[n - 1];
	if (kind_of(l->s, l->len) != POLICY_DOC_DIRECTIVE)
		return -EINVAL;
	doc->bytes -= l->len + l->end;
	/* The new last line keeps its line end: only the removed line goes. */
	if (l->owned)
		free((char *)l->s);
	memmove(l, l + 1, (doc->n - n) * sizeof(*l));
	doc->n--;
	return 0;
}

/* Whether two lines have the same words, whatever blanks and comments surround them. */
static bool same_words(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t pa = 0, pb = 0;

	for (;;) {
		size_t la = 0, lb = 0;
		const char *wa = next_word(a, alen, &pa, &la);
		const char *wb = next_word(b, blen, &pb, &lb);

		if (!wa || !wb)
			return !wa && !wb;
		if (la != lb || memcmp(wa, wb, la) != 0)
			return false;
	}
}

unsigned policy_doc_find(const struct policy_doc *doc, const char *rule, unsigned after)
{
	size_t len = strlen(rule);

	if (!policy_doc_is_rule(rule))
		return 0;
	for (size_t i = after; i < doc->n; i++)
		if (same_words(doc->lines[i].s, doc->lines[i].len, rule, len))
			return (unsigned)i + 1;
	return 0;
}
