/* The policy editor: a document model of one policy file that keeps every byte (pure), and the
 * installing of an edit under a lock (I/O, validated by the daemon's own loader). See
 * policy-edit.h for what each part promises. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* ---- Installing an edit: I/O ---- */

/* -errno of a call that has just failed; testing the result keeps it visibly negative. */
static int negative_errno(void)
{
	int r = -errno;

	return r < 0 ? r : -EIO;
}

/* Say why an install failed (the first reason wins) and return err. Out of memory, the message
 * stays NULL and the errno alone tells. */
__attribute__((format(printf, 3, 4))) static int say(struct policy_edit_report *rep, int err,
						     const char *fmt, ...)
{
	va_list ap;

	if (rep->message)
		return err;
	va_start(ap, fmt);
	if (vasprintf(&rep->message, fmt, ap) < 0)
		rep->message = NULL;
	va_end(ap);
	return err;
}

void policy_edit_report_done(struct policy_edit_report *rep)
{
	free(rep->file);
	free(rep->text);
	free(rep->message);
	policy_diags_free(&rep->diags);
	*rep = (struct policy_edit_report){ .line = 0 };
}

/* The directory of path (malloc'd) and a pointer to its last component, without libgen's
 * habit of writing into its argument. */
static int split_path(const char *path, char **ret_dir, const char **ret_base)
{
	const char *slash = strrchr(path, '/');
	char *dir =
	    !slash ? strdup(".") : strndup(path, slash == path ? 1 : (size_t)(slash - path));

	if (!dir)
		return -ENOMEM;
	*ret_dir = dir;
	*ret_base = slash ? slash + 1 : path;
	return 0;
}

/* The drop-ins the daemon reads: not hidden (editors' and package managers' leftovers are),
 * ending in ".policy". */
static bool is_dropin_name(const char *name)
{
	size_t len = strlen(name);

	return name[0] != '.' && !strchr(name, '/') && len > 7 &&
	       strcmp(name + len - 7, ".policy") == 0;
}

static bool same_inode(const char *a, const char *b)
{
	struct stat sa, sb;

	return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

/* Whether dir is policy's drop-in directory dropins, by name or (when both exist) inode. */
static bool is_dropin_dir(const char *dir, const char *dropins)
{
	return strcmp(dir, dropins) == 0 || same_inode(dir, dropins);
}

int policy_edit_file(const char *policy, const char *file, char **ret_file, char **ret_message)
{
	_cleanup_free_ char *dropins = NULL, *dir = NULL, *name = NULL;
	const char *base = file;

	if (!file || strcmp(file, policy) == 0 || same_inode(file, policy)) {
		name = strdup(policy);
		goto done;
	}
	if (asprintf(&dropins, "%s.d", policy) < 0 ||
	    (strchr(file, '/') && split_path(file, &dir, &base) < 0))
		return -ENOMEM;
	if (dir && !is_dropin_dir(dir, dropins)) {
		if (asprintf(ret_message,
			     "%s is neither %s nor in %s/, so the daemon would never read it", file,
			     policy, dropins) < 0)
			return -ENOMEM;
		return -EINVAL;
	}
	if (!is_dropin_name(base)) {
		if (asprintf(ret_message,
			     "\"%s\" is not a drop-in name: the daemon reads only %s/ *.policy "
			     "files whose names do not start with \".\"",
			     base, dropins) < 0)
			return -ENOMEM;
		return -EINVAL;
	}
	if (asprintf(&name, "%s/%s", dropins, base) < 0)
		name = NULL;
done:
	if (!name)
		return -ENOMEM;
	*ret_file = TAKE_PTR(name);
	return 0;
}

/* policy_edit_read, with the file's stat for its owner and mode. */
static int read_policy_file(const char *path, char **ret_text, size_t *ret_len, struct stat *ret_st)
{
	/* O_NOFOLLOW: renaming over a link would replace it by a file. */
	struct stat st;
	_cleanup_close_ int fd = policy_open_file(AT_FDCWD, path, O_NOFOLLOW, &st);
	int r;

	if (fd < 0)
		return fd;
	r = policy_read_fd(fd, (size_t)st.st_size, ret_text, ret_len);
	if (r >= 0 && ret_st)
		*ret_st = st;
	return r;
}

int policy_edit_read(const char *path, char **ret_text, size_t *ret_len)
{
	return read_policy_file(path, ret_text, ret_len, NULL);
}

/* The policy's lock: an exclusive flock on the main file's directory. A lock file would have to
 * be made in /etc and stay there (or go stale after a crash); a flock goes with the process, and
 * one lock for the whole policy is what validation needs, since it reads every file: two edits
 * of different files could each be valid alone and not together. */
static int take_lock(const char *policy, bool nowait, struct policy_edit_report *rep, int *ret_fd)
{
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int fd = -1;
	const char *base;

	if (split_path(policy, &dir, &base) < 0)
		return say(rep, -ENOMEM, "out of memory");
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return say(rep, negative_errno(), "cannot open %s: %s", dir, strerror(errno));
	while (flock(fd, LOCK_EX | (nowait ? LOCK_NB : 0)) < 0) {
		int r = negative_errno();
		if (r == -EINTR)
			continue;
		if (r == -EWOULDBLOCK)
			return say(rep, r,
				   "another edit of the policy is under way (it holds the "
				   "lock on %s)",
				   dir);
		return say(rep, r, "cannot lock %s: %s", dir, strerror(-r));
	}
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* The file an install edits, as it is under the lock. */
struct target {
	char *path; /* as the policy names it */
	char *text; /* what it holds (len bytes); NULL: it does not exist yet */
	size_t len;
	struct stat st; /* when it exists */
	unsigned line;	/* REMOVE_MATCH: the line found */
};

static void target_done(struct target *t)
{
	free(t->path);
	free(t->text);
}

/* Read t->path; a missing file is fine where may_create says so. */
static int read_target(struct policy_edit_report *rep, struct target *t, bool may_create)
{
	int r = read_policy_file(t->path, &t->text, &t->len, &t->st);

	if (r == -ENOENT && may_create)
		return 0;
	if (r == -ELOOP)
		return say(rep, r, "%s is a symbolic link: edit the file it points to", t->path);
	if (r == -EBADFD)
		return say(rep, r, "%s is not a regular file", t->path);
	if (r == -E2BIG)
		return say(rep, r, "%s is larger than a policy file may be (%d bytes)", t->path,
			   POLICY_MAX_SIZE);
	if (r < 0)
		return say(rep, r, "cannot read %s: %s", t->path, strerror(-r));
	return 0;
}

static int open_target(const struct policy_edit *e, struct policy_edit_report *rep,
		       struct target *t)
{
	_cleanup_free_ char *message = NULL;
	int r = policy_edit_file(e->policy, e->file, &t->path, &message);

	if (r == -ENOMEM)
		return say(rep, r, "out of memory");
	if (r < 0)
		return say(rep, r, "%s", message);
	return read_target(rep, t, e->kind == POLICY_EDIT_ADD || e->kind == POLICY_EDIT_REPLACE);
}

/* Where a rule matches, as the message lists them: enough to choose one, not a flood. */
#define MATCHES_LISTED 20

struct matches {
	FILE *list; /* "file:line, file:line" */
	char *buf;
	size_t size;
	unsigned n;
};

static void matches_done(struct matches *m)
{
	if (m->list)
		fclose(m->list);
	free(m->buf);
}

/* Look for rule in file; keep the file as the target when it holds the first match. */
static int match_file(const struct policy_edit *e, struct policy_edit_report *rep, const char *file,
		      struct matches *m, struct target *t)
{
	_cleanup_(target_done) struct target cur = { .path = strdup(file) };
	_cleanup_(policy_doc_freep) struct policy_doc *doc = NULL;
	int r;

	if (!cur.path)
		return say(rep, -ENOMEM, "out of memory");
	r = read_target(rep, &cur, true);
	if (r < 0 || !cur.text)
		return r;
	r = policy_doc_parse(cur.text, cur.len, &doc);
	if (r < 0)
		return say(rep, r, "%s: %s", file, strerror(-r));
	for (unsigned line = 0; (line = policy_doc_find(doc, e->rule, line));) {
		if (m->n < MATCHES_LISTED)
			fprintf(m->list, "%s%s:%u", m->n ? ", " : "", file, line);
		if (m->n++ == 0) {
			cur.line = line;
			target_done(t);
			*t = cur;
			cur = (struct target){ .path = NULL };
		}
	}
	return 0;
}

/* REMOVE_MATCH: the one line of all the policy's files with the words of e->rule. */
static int find_match(const struct policy_edit *e, struct policy_edit_report *rep, struct target *t)
{
	_cleanup_(matches_done) struct matches m = { .n = 0 };
	_cleanup_free_ char *error = NULL;
	char **files = NULL;
	size_t n = 0;
	int r = policy_list_files(e->policy, &files, &n, &error);

	if (r < 0)
		return say(rep, r, "%s", error ? error : strerror(-r));
	m.list = open_memstream(&m.buf, &m.size);
	for (size_t i = 0; r >= 0 && m.list && i < n; i++)
		r = match_file(e, rep, files[i], &m, t);
	policy_files_free(files, n);
	if (r < 0)
		return r;
	if (!m.list || fflush(m.list) != 0)
		return say(rep, -ENOMEM, "out of memory");
	if (m.n == 0)
		return say(rep, -ENOENT, "no line of the policy has the words of \"%s\"", e->rule);
	if (m.n > 1)
		return say(rep, -ENOTUNIQ,
			   "%u lines have the words of \"%s\": %s%s; remove one by FILE:LINE", m.n,
			   e->rule, m.buf, m.n > MATCHES_LISTED ? ", ..." : "");
	return 0;
}

static const char *kind_name(enum policy_doc_line_kind kind)
{
	return kind == POLICY_DOC_BLANK ? "blank" : "a comment";
}

/* Remove line of doc, saying why not where it is no directive. */
static int remove_line(struct policy_edit_report *rep, const struct target *t,
		       struct policy_doc *doc, unsigned line)
{
	unsigned n = policy_doc_n_lines(doc);
	const char *s;
	size_t len = 0;

	if (line == 0 || line > n)
		return say(rep, -EINVAL, "%s has %u lines: there is no line %u", t->path, n, line);
	if (policy_doc_line_kind(doc, line) != POLICY_DOC_DIRECTIVE)
		return say(rep, -EINVAL,
			   "%s:%u is %s, not a directive: only a directive is removed", t->path,
			   line, kind_name(policy_doc_line_kind(doc, line)));
	s = policy_doc_line(doc, line, &len);
	/* The report shows the line without the CR of a CRLF file. */
	rep->text = strndup(s, len > 0 && s[len - 1] == '\r' ? len - 1 : len);
	if (!rep->text)
		return say(rep, -ENOMEM, "out of memory");
	rep->line = line;
	return policy_doc_remove(doc, line);
}

static int add_rule(const struct policy_edit *e, struct policy_edit_report *rep,
		    const struct target *t, struct policy_doc *doc)
{
	int r;

	if (strpbrk(e->rule, "\r\n"))
		return say(rep, -EINVAL, "a rule is one line: \"%s\" holds a line end", e->rule);
	if (!policy_doc_is_rule(e->rule))
		return say(rep, -EINVAL, "\"%s\" is %s, not a rule", e->rule,
			   e->rule[strspn(e->rule, " \t")] ? "a comment" : "blank");
	r = policy_doc_add(doc, e->rule, &rep->line);
	if (r == -E2BIG)
		return say(rep, r, "%s would grow past %d bytes", t->path, POLICY_MAX_SIZE);
	if (r < 0)
		return say(rep, r, "%s", strerror(-r));
	rep->text = strdup(e->rule);
	return rep->text ? 0 : say(rep, -ENOMEM, "out of memory");
}

/* REPLACE: the file must still hold what it held when the copy was made. */
static int replace(const struct policy_edit *e, struct policy_edit_report *rep,
		   const struct target *t, char **ret_text, size_t *ret_len)
{
	bool same = e->old_text ? t->text && t->len == e->old_len &&
				      memcmp(t->text, e->old_text, t->len) == 0
				: !t->text;

	if (!same)
		return say(rep, -ESTALE, "%s changed since the copy was made: nothing was written",
			   t->path);
	*ret_text = malloc(e->len + 1);
	if (!*ret_text)
		return say(rep, -ENOMEM, "out of memory");
	memcpy(*ret_text, e->text, e->len);
	(*ret_text)[e->len] = '\0';
	*ret_len = e->len;
	return 0;
}

/* The edit applied to t's text: the new text into *ret_text. */
static int apply(const struct policy_edit *e, struct policy_edit_report *rep,
		 const struct target *t, char **ret_text, size_t *ret_len)
{
	_cleanup_(policy_doc_freep) struct policy_doc *doc = NULL;
	int r;

	if (e->kind == POLICY_EDIT_REPLACE)
		return replace(e, rep, t, ret_text, ret_len);
	r = policy_doc_parse(t->text ? t->text : "", t->len, &doc);
	if (r < 0)
		return say(rep, r, "%s: %s", t->path, strerror(-r));
	if (e->kind == POLICY_EDIT_ADD)
		r = add_rule(e, rep, t, doc);
	else
		r = remove_line(rep, t, doc,
				e->kind == POLICY_EDIT_REMOVE_LINE ? e->line : t->line);
	if (r >= 0)
		r = policy_doc_print(doc, ret_text, ret_len);
	return r == -ENOMEM ? say(rep, r, "out of memory") : r;
}

size_t policy_edit_errors(const struct policy_diags *d)
{
	size_t n = d->dropped;

	for (size_t i = 0; i < d->n; i++)
		n += !d->v[i].warning;
	return n;
}

/* The policy as the daemon would load it, with file holding text. */
static int validate(const struct policy_edit *e, struct policy_edit_report *rep, const char *file,
		    const char *text, size_t len)
{
	const struct policy_load_opts opts = {
		.flags = POLICY_LOAD_STRICT,
		.override_file = file,
		.override_text = text,
		.override_len = len,
	};
	struct policy *pol = NULL;
	int r = policy_load_ex(e->policy, e->resolver, &opts, &pol, &rep->diags);

	policy_free(pol);
	if (r == -ENOMEM)
		return say(rep, r, "out of memory");
	if (r < 0)
		return say(rep, -EINVAL,
			   "the policy would not load (%zu error%s): nothing was written",
			   policy_edit_errors(&rep->diags),
			   policy_edit_errors(&rep->diags) == 1 ? "" : "s");
	return 0;
}

/* Who owns a file and how it may be used. */
struct owner {
	uid_t uid;
	gid_t gid;
	mode_t mode;
};

/* A new file is owned as the main policy file is (root's on an installed system, which is
 * what the daemon's ownership check demands; the caller's in a test run as a user), 0644. */
static struct owner new_owner(const char *policy)
{
	struct owner o = { geteuid(), getegid(), 0644 };
	struct stat st;

	if (stat(policy, &st) == 0) {
		o.uid = st.st_uid;
		o.gid = st.st_gid;
	}
	return o;
}

/* The temporary file of an install, unlinked unless it was renamed into place. */
struct temp {
	char *path;
	int fd;
	bool linked; /* path exists and is ours */
};

static void temp_done(struct temp *t)
{
	closep(&t->fd);
	if (t->linked)
		unlink(t->path);
	free(t->path);
}

static int write_all(int fd, const char *text, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, text, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return negative_errno();
		text += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The new file's bytes, owner and mode, on disk before it takes the old one's name. */
static int fill_temp(struct temp *t, const struct owner *o, const char *text, size_t len)
{
	struct stat st;
	int r;

	if (fstat(t->fd, &st) < 0)
		return negative_errno();
	if ((st.st_uid != o->uid || st.st_gid != o->gid) && fchown(t->fd, o->uid, o->gid) < 0)
		return negative_errno();
	/* After fchown, which may clear set-id bits; fchmod, since the umask shaped the mode. */
	if (fchmod(t->fd, o->mode) < 0)
		return negative_errno();
	r = write_all(t->fd, text, len);
	if (r >= 0 && fsync(t->fd) < 0)
		r = negative_errno();
	if (close(TAKE_FD(t->fd)) < 0 && r >= 0)
		r = negative_errno();
	return r;
}

static int fsync_dir(const char *dir)
{
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 || fsync(fd) < 0)
		return negative_errno();
	return 0;
}

/* A drop-in directory made for a new drop-in, removed again if the install fails. */
struct made_dir {
	char *path; /* NULL: nothing made */
	bool keep;
};

static void made_dir_done(struct made_dir *d)
{
	if (d->path && !d->keep)
		rmdir(d->path);
	free(d->path);
}

static int make_dir(struct policy_edit_report *rep, const char *dir, const struct owner *o,
		    struct made_dir *made)
{
	if (mkdir(dir, 0755) < 0) {
		int r = negative_errno();
		return r == -EEXIST ? 0 : say(rep, r, "cannot make %s: %s", dir, strerror(-r));
	}
	made->path = strdup(dir);
	if (!made->path) {
		rmdir(dir);
		return say(rep, -ENOMEM, "out of memory");
	}
	/* As for the file: the umask shaped the mode, and the owner follows the main file. */
	if (chown(dir, o->uid, o->gid) < 0 || chmod(dir, 0755) < 0) {
		int r = negative_errno();
		return say(rep, r, "cannot set the owner and mode of %s: %s", dir, strerror(-r));
	}
	return 0;
}

/* text into a hidden temporary file in dir, with o's owner and mode, synced, then renamed
 * over path; the temporary file is gone on failure. */
static int replace_file(struct policy_edit_report *rep, const char *dir, const char *base,
			const char *path, const struct owner *o, const char *text, size_t len)
{
	_cleanup_(temp_done) struct temp tmp = { .fd = -1 };
	int r;

	/* Hidden and not ending in ".policy": the daemon never reads it as a drop-in. */
	if (asprintf(&tmp.path, "%s/.%s.XXXXXX", dir, base) < 0) {
		tmp.path = NULL;
		return say(rep, -ENOMEM, "out of memory");
	}
	tmp.fd = mkostemp(tmp.path, O_CLOEXEC);
	if (tmp.fd < 0)
		return say(rep, negative_errno(), "cannot write in %s: %s", dir, strerror(errno));
	tmp.linked = true;
	r = fill_temp(&tmp, o, text, len);
	if (r < 0)
		return say(rep, r, "cannot write %s: %s", tmp.path, strerror(-r));
	if (rename(tmp.path, path) < 0)
		return say(rep, negative_errno(), "cannot rename %s to %s: %s", tmp.path, path,
			   strerror(errno));
	tmp.linked = false;
	return 0;
}

/* Install text as t's file, then sync its directory (and the parent of one made for it). */
static int write_file(const struct policy_edit *e, struct policy_edit_report *rep,
		      const struct target *t, const char *text, size_t len)
{
	_cleanup_(made_dir_done) struct made_dir made = { .path = NULL };
	_cleanup_free_ char *dir = NULL, *parent = NULL;
	struct owner o = { t->st.st_uid, t->st.st_gid, t->st.st_mode & 07777 };
	const char *base, *pbase;
	int r;

	if (split_path(t->path, &dir, &base) < 0 || split_path(dir, &parent, &pbase) < 0)
		return say(rep, -ENOMEM, "out of memory");
	if (!t->text) {
		o = new_owner(e->policy);
		r = make_dir(rep, dir, &o, &made);
		if (r < 0)
			return r;
	}
	r = replace_file(rep, dir, base, t->path, &o, text, len);
	if (r < 0)
		return r;
	made.keep = true;
	/* Installed: a failed sync is reported, but the file is there, and is not taken back. */
	r = fsync_dir(dir);
	if (r >= 0 && made.path)
		r = fsync_dir(parent);
	if (r < 0)
		return say(rep, r, "%s is installed, but syncing its directory failed: %s", t->path,
			   strerror(-r));
	return 0;
}

int policy_edit_install(const struct policy_edit *e, struct policy_edit_report *rep)
{
	_cleanup_(target_done) struct target t = { .path = NULL };
	_cleanup_free_ char *text = NULL;
	_cleanup_close_ int lock = -1;
	size_t len = 0;
	int r;

	*rep = (struct policy_edit_report){ .line = 0 };
	r = take_lock(e->policy, e->nowait, rep, &lock);
	if (r >= 0)
		r = e->kind == POLICY_EDIT_REMOVE_MATCH ? find_match(e, rep, &t)
							: open_target(e, rep, &t);
	if (r >= 0)
		r = apply(e, rep, &t, &text, &len);
	if (r >= 0)
		r = validate(e, rep, t.path, text, len);
	if (r >= 0)
		r = write_file(e, rep, &t, text, len);
	rep->file = t.path ? strdup(t.path) : NULL;
	rep->created = r >= 0 && !t.text;
	/* The lock goes last, with lock's cleanup: after the rename and the directory's sync. */
	return r;
}
