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

#include "policy.h"

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

/* ---- Installing an edit: I/O ---- */

enum policy_edit_kind {
	POLICY_EDIT_ADD, /* rule goes into file (policy_doc_add), which may be a new drop-in */
	POLICY_EDIT_REMOVE_LINE,  /* line of file goes */
	POLICY_EDIT_REMOVE_MATCH, /* the one line of all the policy's files whose words are rule's
				   */
	POLICY_EDIT_REPLACE,	  /* file becomes text, if it still holds what it held before */
};

struct policy_edit {
	enum policy_edit_kind kind;
	const char *policy; /* the main file, as the daemon is given it: its directory is the
			       lock, and its drop-ins are policy.d/ *.policy */
	const char *file;   /* the main file or a drop-in (policy_edit_file); NULL: the main
			       file. Not used by REMOVE_MATCH */
	const char *rule;   /* ADD, REMOVE_MATCH */
	unsigned line;	    /* REMOVE_LINE */
	const char *text;   /* REPLACE: the new text, len bytes */
	size_t len;
	const char *old_text; /* REPLACE: what file held when the copy was made (old_len bytes);
				 NULL: it did not exist */
	size_t old_len;
	bool nowait; /* another editor holds the lock: -EWOULDBLOCK at once instead of waiting */
	const struct policy_resolver *resolver;
};

/* What an install did, or why it did not; filled on success and failure alike. */
struct policy_edit_report {
	char *file;    /* the file edited, as the policy names it (policy_list_files) */
	unsigned line; /* the line added or removed; 0 for REPLACE */
	char *text;    /* that line's text, without its line end */
	bool created;  /* file is a new drop-in */
	char *message; /* on failure: why, in words, with file:line where there is one */
	struct policy_diags diags; /* on a failed validation: every error; warnings either way */
};

/* How many of diags are errors, not warnings, counting those it dropped (all errors). */
size_t policy_edit_errors(const struct policy_diags *diags);

/* Frees what report holds and empties it. Accepts an empty one. */
void policy_edit_report_done(struct policy_edit_report *report);

/* The name by which the policy at policy calls file, into *ret_file (malloc'd): policy itself
 * for its main file (or a path to the same file), "policy.d/NAME.policy" for a drop-in given by
 * its name or a path in that directory, existing or not. Anything else is -EINVAL with a
 * message in *ret_message (malloc'd), since the daemon would never read it; -ENOMEM. */
int policy_edit_file(const char *policy, const char *file, char **ret_file, char **ret_message);

/* Read the whole of path (a regular file, at most POLICY_MAX_SIZE bytes) into *ret_text
 * (malloc'd, NUL after it) and *ret_len: -ENOENT, -ELOOP for a symbolic link (an edit would
 * replace the link by a file), -EBADFD for anything but a regular file, -E2BIG, -errno. */
int policy_edit_read(const char *path, char **ret_text, size_t *ret_len);

/* Do the edit: take the policy's lock (an exclusive flock on the main file's directory),
 * read the file again under it (so that an edit by someone else since is kept), apply the edit,
 * validate the result together with the policy's other files as the daemon would load them
 * (policy_load_ex, strict), write a temporary file in the same directory with the old file's
 * owner and mode (a new drop-in: 0644, owned as the main file is; its directory 0755 if it
 * has to be made), fsync it, rename it over the file, fsync the directory, and unlock.
 * Returns 0; or, with report->message (and for a failed validation report->diags) saying
 * why: -EINVAL (the edit is refused, or the result would not load), -ENOENT (no line matches
 * the rule), -ENOTUNIQ (several do; the message lists them as file:line), -ESTALE (REPLACE:
 * the file changed since), -EWOULDBLOCK (nowait, and the lock is taken), -ENOMEM, or the
 * -errno of a failed read or write. Nothing is written and nothing left behind on failure. */
int policy_edit_install(const struct policy_edit *edit, struct policy_edit_report *report);
