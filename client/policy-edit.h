/* The policy editor of p2pbuf-client: one policy file as a document that keeps every byte
 * (comments, blank lines, trailing blanks, CRLF line ends, a missing final newline), edited one
 * line at a time, and the installing of an edit (lock, re-read, validate with the daemon's own
 * parser together with the policy's other files, write atomically, sync).
 *
 * The document part is pure: text in, text out, no I/O, so that its tests and its fuzz target
 * need no files. The installing part does the I/O and is the only one that touches files. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* ---- The document: pure ---- */

struct policy_doc;

/* What a line holds, as the policy's tokenizer sees it. */
enum policy_doc_line_kind {
	POLICY_DOC_BLANK,     /* nothing but blanks */
	POLICY_DOC_COMMENT,   /* blanks, then '#' and anything */
	POLICY_DOC_DIRECTIVE, /* at least one word before any '#' */
};

/* Split len bytes of text into lines, keeping every byte. Returns 0, -E2BIG for text larger
 * than a policy file may be (POLICY_MAX_SIZE), or -ENOMEM. */
int policy_doc_parse(const char *text, size_t len, struct policy_doc **ret_doc);

/* Accepts NULL. */
void policy_doc_free(struct policy_doc *doc);

static inline void policy_doc_freep(struct policy_doc **doc)
{
	policy_doc_free(*doc);
}

/* How many lines the document has; a final line end does not start another line. */
unsigned policy_doc_n_lines(const struct policy_doc *doc);

/* Line n (1-based, at most policy_doc_n_lines()) without its line end ("\n"; a "\r" before it
 * is kept as part of the line, as the parser reads it): *ret_len bytes, not NUL-terminated. */
const char *policy_doc_line(const struct policy_doc *doc, unsigned n, size_t *ret_len);

/* The kind of line n (1-based, at most policy_doc_n_lines()). */
enum policy_doc_line_kind policy_doc_line_kind(const struct policy_doc *doc, unsigned n);

/* The whole text, byte for byte as parsed but for the lines edited since: malloc'd (with a
 * NUL after it for convenience) into *ret_text, its length into *ret_len. -ENOMEM. */
int policy_doc_print(const struct policy_doc *doc, char **ret_text, size_t *ret_len);

/* Insert the one-line rule right after the last directive line, or at the end of a file that
 * has none, and return its line number in *ret_line. Its line end follows the file's first line
 * (CRLF or LF); a file that lacked a final newline still lacks one. Returns -EINVAL for a rule
 * with a line end ("\n" or "\r") or with no word before a '#' (see policy_doc_is_rule), -E2BIG
 * when the file would grow past POLICY_MAX_SIZE, -ENOMEM. What else the rule says is for the
 * parser to judge, with its own messages. */
int policy_doc_add(struct policy_doc *doc, const char *rule, unsigned *ret_line);

/* Delete line n, which must be a directive: -ERANGE when there is no line n, -EINVAL when it is
 * a blank or comment line (it leaves every other line as it was). */
int policy_doc_remove(struct policy_doc *doc, unsigned n);

/* The first directive line after line `after` (0: from the start) whose words equal rule's,
 * ignoring blanks and a comment on either; 0 when there is none. */
unsigned policy_doc_find(const struct policy_doc *doc, const char *rule, unsigned after);

/* Whether rule has at least one word before any '#' (what add and find need). */
bool policy_doc_is_rule(const char *rule);
