/* Policy: the parser that turns policy text into a struct policy, resolving every name once
 * through the resolver it is given, and the pure questions the grant path asks. Nothing here
 * touches a file or the user database: policy-load.c reads the files and provides the system
 * resolver. The format is in policy/p2pbuf-policy.5. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "macro.h"
#include "units.h"

/* The longest directive (a sim device with every BAR and option) has about 40 words. */
#define LINE_MAX_TOKENS 64
/* LOGIN_NAME_MAX: no user or group database hands out longer names. */
#define SUBJECT_MAX_NAME 256
/* Tokens quoted in messages are cut here, so that a runaway token cannot flood the log. */
#define QUOTE_MAX 80
/* What the messages say the value grammars of proto/units.h are. */
#define SIZE_GRAMMAR "bytes or a number with K, M, G or T"
#define OFFSET_GRAMMAR "bytes, a number with K, M, G or T, or 0x and hex digits"
#define DURATION_GRAMMAR "a number with ms, s, m, h or d (no unit: seconds)"
#define OPTIONS_MAX 8
#define NONE SIZE_MAX /* no rule, in the per-device rule lists */

#define TOK_FMT "\"%.*s%s\""
#define TOK_ARG(t)                                                                                 \
	(int)((t)->len < QUOTE_MAX ? (t)->len : QUOTE_MAX), (t)->s,                                \
	    (t)->len > QUOTE_MAX ? "..." : ""

struct token {
	const char *s; /* not NUL-terminated */
	size_t len;
	unsigned col; /* 1-based */
};

/* Where a diagnostic points: a file (its place in load order, for sorting), a line and that
 * line's text, which the diagnostic quotes. */
struct where {
	const char *file;
	unsigned line; /* 0: the whole file */
	size_t file_no;
	const char *text; /* the line, not NUL-terminated; NULL: none */
	size_t text_len;
};

struct line {
	struct where at;
	struct token tok[LINE_MAX_TOKENS];
	size_t n;
	size_t next;	  /* the next token to consume */
	unsigned end_col; /* just past the last token, for "expected ..." errors */
};

/* A rule whose device was not declared yet when it was read (it may be, later, even in a
 * later file): what resolving it at finish needs, with a copy of its line for the message. */
struct pending {
	size_t rule;
	char device[POLICY_MAX_NAME + 1];
	unsigned device_col;
	unsigned bar_col;
	unsigned range_key_col; /* "range": where a missing bar is reported */
	unsigned range_col;
	size_t file_no;
	char *text; /* owned */
	size_t text_len;
};

/* A diagnostic with what sorts it: the file's place in load order and the order found. */
struct found {
	struct policy_diag d;
	size_t file_no;
	size_t seq;
	int err; /* 0 for a warning */
};

/* One name looked up during this parse: the resolver is asked once per distinct name. */
struct cached_subject {
	enum policy_subject_kind kind;
	const char *name; /* in policy.names */
	int r;		  /* what the resolver answered */
	uint32_t id;
};

struct policy_parser {
	struct policy *policy;
	const struct policy_resolver *resolver;
	struct pending *pending; /* rules waiting for their device */
	size_t n_pending;
	bool *device_broken; /* per device: its line had an error (its rules are not checked) */
	size_t *pci_devs;    /* the indices of PCI devices */
	size_t *pci_slots;   /* hash of their addresses over pci_devs, as policy.device_slots */
	size_t n_pci_slots, n_pci, cap_pci;
	struct cached_subject *cache;
	size_t n_cache, *cache_slots, n_cache_slots;
	size_t cap_files, cap_devices, cap_rules, cap_pending, cap_admins, cap_observers, cap_names,
	    cap_cache, cap_found, cap_broken;
	struct found *found; /* every diagnostic kept so far, in the order found */
	size_t n_found, dropped;
	int err;  /* the -errno of the first error found, 0: none yet */
	bool oom; /* memory ran out: the parse stopped and the result is -ENOMEM */
};

/* vasprintf without relying on _GNU_SOURCE: measure, then print. */
__attribute__((format(printf, 1, 0))) static char *vformat(const char *fmt, va_list ap)
{
	va_list aq;
	char *s;
	int n;

	va_copy(aq, ap);
	n = vsnprintf(NULL, 0, fmt, aq);
	va_end(aq);
	if (n < 0)
		return NULL;
	s = malloc((size_t)n + 1);
	if (s)
		vsnprintf(s, (size_t)n + 1, fmt, ap);
	return s;
}

__attribute__((format(printf, 1, 2))) static char *format(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = vformat(fmt, ap);
	va_end(ap);
	return s;
}

/* Memory ran out: nothing more is parsed (what was found so far may be incomplete, and a
 * half-built policy would only produce errors that are not in the text). */
static int oom(struct policy_parser *p)
{
	p->oom = true;
	p->err = -ENOMEM;
	return -ENOMEM;
}

/* Make room for one more element; returns the (possibly moved) array, or NULL with the old
 * one untouched. Doubling keeps appending linear. */
static void *grow(void *array, size_t *cap, size_t n, size_t size)
{
	size_t new_cap;
	void *a;

	if (n < *cap)
		return array;
	new_cap = *cap ? *cap * 2 : 8;
	a = reallocarray(array, new_cap, size);
	if (a)
		*cap = new_cap;
	return a;
}

/* ---- Diagnostics ---- */

static void diag_done(struct policy_diag *d)
{
	free(d->file);
	free(d->message);
	free(d->text);
}

/* How much of a line a diagnostic quotes: at most POLICY_DIAG_TEXT_MAX bytes, without the
 * carriage return of a CRLF line end (which would send a terminal's caret line astray). */
static size_t quoted_len(const char *text, size_t len)
{
	if (len > POLICY_DIAG_TEXT_MAX)
		return POLICY_DIAG_TEXT_MAX;
	while (len > 0 && text[len - 1] == '\r')
		len--;
	return len;
}

/* Fill d with msg, which it owns on success, and copies of what at points to. */
static int diag_fill(struct policy_diag *d, const struct where *at, unsigned col, char *msg)
{
	size_t cut = at->text ? quoted_len(at->text, at->text_len) : 0;

	*d = (struct policy_diag){ .line = at->line, .column = at->line ? col : 0, .message = msg };
	d->file = strdup(at->file);
	if (at->text && at->line)
		d->text = strndup(at->text, cut);
	if (!d->file || (at->text && at->line && !d->text)) {
		free(d->file);
		free(d->text);
		return -ENOMEM; /* msg stays the caller's */
	}
	return 0;
}

/* Keep "message" at (file, line, col) unless POLICY_MAX_DIAGS are kept already, in which case
 * it is only counted. err is its -errno, 0 for a warning. */
__attribute__((format(printf, 5, 0))) static void record_verror(struct policy_parser *p,
								const struct where *at,
								unsigned col, int err,
								const char *fmt, va_list ap)
{
	struct found *f;
	char *msg;

	if (p->oom)
		return;
	if (err && !p->err)
		p->err = err;
	if (p->n_found >= POLICY_MAX_DIAGS) {
		p->dropped++;
		return;
	}
	f = grow(p->found, &p->cap_found, p->n_found, sizeof(*f));
	if (!f) {
		oom(p);
		return;
	}
	p->found = f;
	msg = vformat(fmt, ap);
	f = &p->found[p->n_found];
	if (!msg || diag_fill(&f->d, at, col, msg) < 0) {
		free(msg);
		oom(p);
		return;
	}
	f->d.warning = err == 0;
	f->file_no = at->file_no;
	f->seq = p->n_found;
	f->err = err;
	p->n_found++;
}

__attribute__((format(printf, 5, 6))) static void record_error(struct policy_parser *p,
							       const struct where *at, unsigned col,
							       int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	record_verror(p, at, col, err, fmt, ap);
	va_end(ap);
}

/* record_error, then evaluate to err (negative), which callers pass up; the parse returns the
 * first error in the end. A macro so that callers see the value itself: clang's analyzer
 * never follows a call into a variadic function, and would otherwise assume a failed check
 * (say take_value) may have succeeded without writing its result.
 * Pass at as a pointer to a named struct: a compound literal "&(struct where){ f, 0 }" would be
 * split at its comma, which the copy into fail_at_ turns into a compile error rather than a
 * call with every argument shifted. */
#define fail(p, at, col, err, ...)                                                                 \
	({                                                                                         \
		const struct where *fail_at_ = (at);                                               \
		int fail_err_ = (err);                                                             \
		record_error(p, fail_at_, col, fail_err_, __VA_ARGS__);                            \
		fail_err_;                                                                         \
	})

void policy_diags_free(struct policy_diags *d)
{
	for (size_t i = 0; i < d->n; i++)
		diag_done(&d->v[i]);
	free(d->v);
	*d = (struct policy_diags){ .v = NULL };
}

char *policy_diag_format(const struct policy_diag *d)
{
	if (d->line == 0)
		return format("%s: %s", d->file, d->message);
	return format("%s:%u:%u: %s", d->file, d->line, d->column, d->message);
}

/* ---- Hash indexes: slots hold an element's index + 1 (0: empty), at most half full ---- */

struct slot_ops {
	uint64_t (*hash)(const void *ctx, size_t index);
	bool (*matches)(const void *ctx, size_t index, const void *key);
};

/* FNV-1a; the keys are the admin's names, not a peer's, so no flooding is to be feared, and a
 * peer's lookup only picks one of the short chains that the admin's names made. */
static uint64_t hash_string(uint64_t h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3u;
	return h;
}

#define HASH_SEED 0xcbf29ce484222325u

/* The slot holding key, or the empty slot where it would go. */
static size_t slot_probe(const size_t *slots, size_t n_slots, uint64_t h,
			 const struct slot_ops *ops, const void *ctx, const void *key)
{
	size_t mask = n_slots - 1, i = (size_t)h & mask;

	while (slots[i] && !ops->matches(ctx, slots[i] - 1, key))
		i = (i + 1) & mask;
	return i;
}

/* Room for n + 1 elements, rehashing the n there are into a table twice as large if needed. */
static int slots_reserve(size_t **slots, size_t *n_slots, size_t n, const struct slot_ops *ops,
			 const void *ctx)
{
	size_t new_n = *n_slots ? *n_slots : 16, *new_slots;

	while ((n + 1) * 2 > new_n)
		new_n *= 2;
	if (new_n == *n_slots)
		return 0;
	new_slots = calloc(new_n, sizeof(*new_slots));
	if (!new_slots)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		size_t s = (size_t)ops->hash(ctx, i) & (new_n - 1);
		while (new_slots[s])
			s = (s + 1) & (new_n - 1);
		new_slots[s] = i + 1;
	}
	free(*slots);
	*slots = new_slots;
	*n_slots = new_n;
	return 0;
}

/* Devices by name (policy.device_slots). */
static uint64_t device_hash(const void *ctx, size_t index)
{
	const struct policy *pol = ctx;

	return hash_string(HASH_SEED, pol->devices[index].name);
}

static bool device_matches(const void *ctx, size_t index, const void *key)
{
	const struct policy *pol = ctx;

	return strcmp(pol->devices[index].name, key) == 0;
}

static const struct slot_ops device_slot_ops = { device_hash, device_matches };

/* PCI devices by address (the parser's pci_slots, over pci_devs: indices of PCI devices). */
static uint64_t pci_hash(const void *ctx, size_t index)
{
	const struct policy_parser *p = ctx;

	return hash_string(HASH_SEED, p->policy->devices[p->pci_devs[index]].pci);
}

static bool pci_matches(const void *ctx, size_t index, const void *key)
{
	const struct policy_parser *p = ctx;

	return strcmp(p->policy->devices[p->pci_devs[index]].pci, key) == 0;
}

static const struct slot_ops pci_slot_ops = { pci_hash, pci_matches };

static bool token_is(const struct token *t, const char *word)
{
	return t->len == strlen(word) && memcmp(t->s, word, t->len) == 0;
}

/* ---- Addresses ---- */

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int hex_field(const char *s, size_t len, unsigned *ret_value)
{
	unsigned v = 0;

	for (size_t i = 0; i < len; i++) {
		int d = hex_digit(s[i]);
		if (d < 0)
			return -EINVAL;
		v = v * 16 + (unsigned)d;
	}
	*ret_value = v;
	return 0;
}

/* "dddd:bb:dd.f" or "bb:dd.f" (domain 0), in any case, into the canonical lower-case form
 * sysfs uses. Five domain digits are accepted because VMD domains start at 10000. */
static int parse_pci_address(const char *s, size_t len, char ret[16])
{
	unsigned domain = 0, bus, dev, fn;

	if (len == 12 || len == 13) {
		size_t dl = len - 8;
		if (s[dl] != ':' || hex_field(s, dl, &domain) < 0)
			return -EINVAL;
		s += dl + 1;
		len -= dl + 1;
	}
	if (len != 7 || s[2] != ':' || s[5] != '.' || hex_field(s, 2, &bus) < 0 ||
	    hex_field(s + 3, 2, &dev) < 0 || hex_field(s + 6, 1, &fn) < 0)
		return -EINVAL;
	if (dev > 0x1f || fn > 7)
		return -ERANGE;
	if (snprintf(ret, 16, "%04x:%02x:%02x.%x", domain & 0xfffff, bus & 0xff, dev, fn) >= 16)
		return -EINVAL;
	return 0;
}

static bool range_fits(const struct range *r, uint64_t size)
{
	return r->offset <= size && r->length <= size - r->offset;
}

/* ---- Tokens of one line ---- */

static bool is_blank(char c)
{
	/* A carriage return is blank so that a file saved with CRLF line ends still reads. */
	return c == ' ' || c == '\t' || c == '\r';
}

static bool is_control(char c)
{
	return (unsigned char)c < 0x20 || (unsigned char)c == 0x7f;
}

/* Split one line into tokens; '#' starts a comment wherever it appears. */
static int tokenize(struct policy_parser *p, struct line *l, const char *s, size_t len)
{
	size_t i = 0;

	l->n = l->next = 0;
	l->end_col = 1;
	while (i < len && s[i] != '#') {
		size_t start = i;
		if (is_blank(s[i])) {
			i++;
			continue;
		}
		for (; i < len && !is_blank(s[i]) && s[i] != '#'; i++)
			if (is_control(s[i]))
				return fail(p, &l->at, (unsigned)i + 1, -EINVAL,
					    "invalid character 0x%02x", (unsigned char)s[i]);
		if (l->n == LINE_MAX_TOKENS)
			return fail(p, &l->at, (unsigned)start + 1, -EINVAL,
				    "too many words on one line (at most %d)", LINE_MAX_TOKENS);
		l->tok[l->n++] = (struct token){ s + start, i - start, (unsigned)start + 1 };
		l->end_col = (unsigned)i + 1;
	}
	return 0;
}

static const struct token *next_token(struct line *l)
{
	return l->next < l->n ? &l->tok[l->next++] : NULL;
}

/* The next token, or an error just past the end of the line saying what was expected. */
__attribute__((format(printf, 4, 5))) static int expect_token(struct policy_parser *p,
							      struct line *l,
							      const struct token **ret,
							      const char *fmt, ...)
{
	_cleanup_free_ char *what = NULL;
	const struct token *t = next_token(l);
	va_list ap;

	if (t) {
		*ret = t;
		return 0;
	}
	va_start(ap, fmt);
	what = vformat(fmt, ap);
	va_end(ap);
	if (!what)
		return oom(p);
	return fail(p, &l->at, l->end_col, -EINVAL, "expected %s", what);
}

/* ---- Values ---- */

/* A number in one of the grammars of proto/units.h, and how messages name it. */
struct value_kind {
	const char *noun; /* with its article: "a size" */
	const char *grammar;
	int (*parse)(const char *s, size_t len, uint64_t *ret_value);
};

static const struct value_kind size_value = { "a size", SIZE_GRAMMAR, units_parse_size };
static const struct value_kind offset_value = { "an offset", OFFSET_GRAMMAR, units_parse_offset };
static const struct value_kind length_value = { "a length", OFFSET_GRAMMAR, units_parse_offset };

static int take_value(struct policy_parser *p, const struct line *l, const struct value_kind *kind,
		      const struct token *t, uint64_t *ret_value)
{
	int r = kind->parse(t->s, t->len, ret_value);

	if (r == -ERANGE)
		return fail(p, &l->at, t->col, -EINVAL,
			    TOK_FMT " is too large: %s must be below 2^64", TOK_ARG(t), kind->noun);
	if (r < 0)
		return fail(p, &l->at, t->col, -EINVAL, TOK_FMT " is not %s: use %s", TOK_ARG(t),
			    kind->noun, kind->grammar);
	return 0;
}

static int take_range(struct policy_parser *p, const struct line *l, const struct token *t,
		      struct range *ret_range)
{
	const char *plus = memchr(t->s, '+', t->len);
	struct token off, len;
	struct range r;

	if (!plus || plus == t->s || plus == t->s + t->len - 1)
		return fail(p, &l->at, t->col, -EINVAL, "range " TOK_FMT " is not OFFSET+LENGTH",
			    TOK_ARG(t));
	off = (struct token){ t->s, (size_t)(plus - t->s), t->col };
	len = (struct token){ plus + 1, t->len - off.len - 1, t->col + (unsigned)off.len + 1 };
	if (take_value(p, l, &offset_value, &off, &r.offset) < 0 ||
	    take_value(p, l, &length_value, &len, &r.length) < 0)
		return -EINVAL;
	if (r.length == 0)
		return fail(p, &l->at, t->col, -EINVAL, "range " TOK_FMT " is empty", TOK_ARG(t));
	if (r.length > UINT64_MAX - r.offset)
		return fail(p, &l->at, t->col, -EINVAL, "range " TOK_FMT " overflows 64 bits",
			    TOK_ARG(t));
	*ret_range = r;
	return 0;
}

/* key is the option the duration belongs to, for the message. */
static int take_duration(struct policy_parser *p, const struct line *l, const struct token *key,
			 const struct token *t, uint64_t *ret_ms)
{
	char max[UNITS_FORMAT_MAX];
	int r = units_parse_duration(t->s, t->len, ret_ms);

	if (r == -ERANGE)
		return fail(p, &l->at, t->col, -EINVAL, "%.*s " TOK_FMT " is too long (at most %s)",
			    (int)key->len, key->s, TOK_ARG(t),
			    units_format_duration(UNITS_DURATION_MAX_MS, max));
	if (r < 0)
		return fail(p, &l->at, t->col, -EINVAL,
			    "%.*s " TOK_FMT " is not a duration: use %s", (int)key->len, key->s,
			    TOK_ARG(t), DURATION_GRAMMAR);
	return 0;
}

static int take_bar(struct policy_parser *p, const struct line *l, const struct token *t,
		    unsigned *ret_bar)
{
	if (t->len != 1 || t->s[0] < '0' || t->s[0] >= '0' + POLICY_MAX_BARS)
		return fail(p, &l->at, t->col, -EINVAL,
			    "bar " TOK_FMT " is not a BAR number (0 to %d)", TOK_ARG(t),
			    POLICY_MAX_BARS - 1);
	*ret_bar = (unsigned)(t->s[0] - '0');
	return 0;
}

static bool is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-';
}

static int take_device_name(struct policy_parser *p, const struct line *l, const struct token *t,
			    char ret_name[POLICY_MAX_NAME + 1])
{
	if (t->len > POLICY_MAX_NAME)
		return fail(p, &l->at, t->col, -EINVAL,
			    "device name " TOK_FMT " is longer than %d bytes", TOK_ARG(t),
			    POLICY_MAX_NAME);
	for (size_t i = 0; i < t->len; i++)
		if (!is_name_char(t->s[i]))
			return fail(p, &l->at, t->col, -EINVAL,
				    "device name " TOK_FMT
				    " may contain only letters, digits, \"_\", \".\" and \"-\"",
				    TOK_ARG(t));
	memcpy(ret_name, t->s, t->len);
	ret_name[t->len] = '\0';
	return 0;
}

/* ---- Options: the keyword-value pairs after a directive's fixed words ---- */

struct option {
	const char *name;
	bool repeatable; /* sim "bar": once per BAR index, checked by the parser */
	int (*parse)(struct policy_parser *p, struct line *l, const struct token *key, void *ctx);
};

struct option_set {
	const struct option *options;
	size_t n;
	const char *expected; /* the names, as a message lists them */
};

static const struct option *find_option(const struct option_set *set, const struct token *t)
{
	for (size_t i = 0; i < set->n; i++)
		if (token_is(t, set->options[i].name))
			return &set->options[i];
	return NULL;
}

/* Options may come in any order, each at most once per line. */
static int parse_options(struct policy_parser *p, struct line *l, const struct option_set *set,
			 void *ctx)
{
	unsigned seen[OPTIONS_MAX] = { 0 };
	const struct token *t;

	while ((t = next_token(l))) {
		const struct option *o = find_option(set, t);
		size_t i;
		int r;

		if (!o)
			return fail(p, &l->at, t->col, -EINVAL,
				    "unknown option " TOK_FMT " (expected %s)", TOK_ARG(t),
				    set->expected);
		i = (size_t)(o - set->options);
		if (seen[i] && !o->repeatable)
			return fail(p, &l->at, t->col, -EINVAL,
				    "duplicate option " TOK_FMT " (first given at column %u)",
				    TOK_ARG(t), seen[i]);
		seen[i] = t->col;
		r = o->parse(p, l, t, ctx);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- device ---- */

struct device_ctx {
	struct policy_device dev;
	unsigned bar_col[POLICY_MAX_BARS]; /* where each sim BAR was declared; 0: not */
	unsigned msix_bar_col[2];	   /* [0] msix-table, [1] msix-pba */
	unsigned msix_range_col[2];
};

static int opt_sim_bar(struct policy_parser *p, struct line *l, const struct token *key, void *ctx)
{
	struct device_ctx *c = ctx;
	const struct token *tb, *ts;
	uint64_t size;
	unsigned bar;

	if (expect_token(p, l, &tb, "a BAR number after " TOK_FMT, TOK_ARG(key)) < 0 ||
	    take_bar(p, l, tb, &bar) < 0)
		return -EINVAL;
	if (c->bar_col[bar])
		return fail(p, &l->at, tb->col, -EINVAL, "bar %u is already declared at column %u",
			    bar, c->bar_col[bar]);
	if (expect_token(p, l, &ts, "a size after \"bar %u\"", bar) < 0 ||
	    take_value(p, l, &size_value, ts, &size) < 0)
		return -EINVAL;
	if (size < 4096 || (size & (size - 1)) != 0)
		return fail(p, &l->at, ts->col, -EINVAL,
			    "size " TOK_FMT " of bar %u is not a power of two of at least 4K",
			    TOK_ARG(ts), bar);
	c->dev.sim_bar_size[bar] = size;
	c->bar_col[bar] = tb->col;
	return 0;
}

static int parse_msix(struct policy_parser *p, struct line *l, const struct token *key,
		      struct device_ctx *c, size_t which)
{
	struct policy_sim_msix *m = which == 0 ? &c->dev.sim_msix_table : &c->dev.sim_msix_pba;
	const struct token *tb, *tr;

	if (expect_token(p, l, &tb, "a BAR number after " TOK_FMT, TOK_ARG(key)) < 0 ||
	    take_bar(p, l, tb, &m->bar) < 0 ||
	    expect_token(p, l, &tr, "OFFSET+LENGTH after " TOK_FMT " %u", TOK_ARG(key), m->bar) <
		0 ||
	    take_range(p, l, tr, &m->range) < 0)
		return -EINVAL;
	m->present = true;
	c->msix_bar_col[which] = tb->col;
	c->msix_range_col[which] = tr->col;
	return 0;
}

static int opt_msix_table(struct policy_parser *p, struct line *l, const struct token *key,
			  void *ctx)
{
	return parse_msix(p, l, key, ctx, 0);
}

static int opt_msix_pba(struct policy_parser *p, struct line *l, const struct token *key, void *ctx)
{
	return parse_msix(p, l, key, ctx, 1);
}

static int opt_cycle_delay(struct policy_parser *p, struct line *l, const struct token *key,
			   void *ctx)
{
	struct device_ctx *c = ctx;
	const struct token *t;

	if (expect_token(p, l, &t, "a duration after " TOK_FMT, TOK_ARG(key)) < 0)
		return -EINVAL;
	return take_duration(p, l, key, t, &c->dev.sim_cycle_delay_ms);
}

static int opt_revoke_deadline(struct policy_parser *p, struct line *l, const struct token *key,
			       void *ctx)
{
	struct device_ctx *c = ctx;
	const struct token *t;

	if (expect_token(p, l, &t, "a duration after " TOK_FMT, TOK_ARG(key)) < 0)
		return -EINVAL;
	return take_duration(p, l, key, t, &c->dev.revoke_deadline_ms);
}

static int opt_revocation(struct policy_parser *p, struct line *l, const struct token *key,
			  void *ctx)
{
	struct device_ctx *c = ctx;
	const struct token *t;

	if (expect_token(p, l, &t, "enforce or notify-only after " TOK_FMT, TOK_ARG(key)) < 0)
		return -EINVAL;
	if (token_is(t, "enforce"))
		c->dev.revocation = POLICY_REVOKE_ENFORCE;
	else if (token_is(t, "notify-only"))
		c->dev.revocation = POLICY_REVOKE_NOTIFY_ONLY;
	else
		return fail(p, &l->at, t->col, -EINVAL,
			    "unknown revocation mode " TOK_FMT " (expected enforce or notify-only)",
			    TOK_ARG(t));
	return 0;
}

static int opt_on_error(struct policy_parser *p, struct line *l, const struct token *key, void *ctx)
{
	struct device_ctx *c = ctx;
	const struct token *t;

	if (expect_token(p, l, &t, "report or cycle after " TOK_FMT, TOK_ARG(key)) < 0)
		return -EINVAL;
	if (token_is(t, "report"))
		c->dev.on_error = POLICY_ON_ERROR_REPORT;
	else if (token_is(t, "cycle"))
		c->dev.on_error = POLICY_ON_ERROR_CYCLE;
	else
		return fail(p, &l->at, t->col, -EINVAL,
			    "unknown on-error action " TOK_FMT " (expected report or cycle)",
			    TOK_ARG(t));
	return 0;
}

static const struct option sim_options[] = {
	{ "bar", true, opt_sim_bar },
	{ "msix-table", false, opt_msix_table },
	{ "msix-pba", false, opt_msix_pba },
	{ "cycle-delay", false, opt_cycle_delay },
	{ "revoke-deadline", false, opt_revoke_deadline },
	{ "revocation", false, opt_revocation },
	{ "on-error", false, opt_on_error },
};
_Static_assert(ARRAY_SIZE(sim_options) <= OPTIONS_MAX, "raise OPTIONS_MAX");

static const struct option_set sim_option_set = {
	sim_options, ARRAY_SIZE(sim_options),
	"bar, msix-table, msix-pba, cycle-delay, revoke-deadline, revocation or on-error"
};

static const struct option pci_options[] = {
	{ "revoke-deadline", false, opt_revoke_deadline },
	{ "revocation", false, opt_revocation },
	{ "on-error", false, opt_on_error },
};

static const struct option_set pci_option_set = { pci_options, ARRAY_SIZE(pci_options),
						  "revoke-deadline, revocation or on-error" };

/* The MSI-X structures must lie inside a BAR of the device; which BARs exist is known only
 * once the whole line has been read. */
static int check_msix(struct policy_parser *p, const struct line *l, const struct device_ctx *c,
		      size_t which)
{
	const struct policy_sim_msix *m =
	    which == 0 ? &c->dev.sim_msix_table : &c->dev.sim_msix_pba;
	const char *name = which == 0 ? "msix-table" : "msix-pba";
	uint64_t size;

	if (!m->present)
		return 0;
	size = c->dev.sim_bar_size[m->bar];
	if (size == 0)
		return fail(p, &l->at, c->msix_bar_col[which], -EINVAL,
			    "%s is in bar %u, which this device does not declare", name, m->bar);
	if (!range_fits(&m->range, size))
		return fail(p, &l->at, c->msix_range_col[which], -EINVAL,
			    "%s range 0x%" PRIx64 "+0x%" PRIx64
			    " does not fit in bar %u (size 0x%" PRIx64 ")",
			    name, m->range.offset, m->range.length, m->bar, size);
	return 0;
}

static int parse_sim(struct policy_parser *p, struct line *l, struct device_ctx *c)
{
	bool any_bar = false;
	int r;

	c->dev.kind = POLICY_DEVICE_SIM;
	r = parse_options(p, l, &sim_option_set, c);
	if (r < 0)
		return r;
	for (size_t i = 0; i < POLICY_MAX_BARS; i++)
		any_bar |= c->dev.sim_bar_size[i] != 0;
	if (!any_bar)
		return fail(p, &l->at, l->end_col, -EINVAL,
			    "sim device \"%s\" declares no bar (add \"bar N SIZE\")", c->dev.name);
	if (check_msix(p, l, c, 0) < 0 || check_msix(p, l, c, 1) < 0)
		return -EINVAL;
	return 0;
}

/* The PCI device already at address, or NULL. */
static const struct policy_device *find_pci(const struct policy_parser *p, const char *address)
{
	size_t i;

	if (p->n_pci_slots == 0)
		return NULL;
	i = slot_probe(p->pci_slots, p->n_pci_slots, hash_string(HASH_SEED, address), &pci_slot_ops,
		       p, address);
	return p->pci_slots[i] ? &p->policy->devices[p->pci_devs[p->pci_slots[i] - 1]] : NULL;
}

static int parse_pci(struct policy_parser *p, struct line *l, struct device_ctx *c)
{
	const struct policy_device *d;
	const struct token *t;
	int r;

	c->dev.kind = POLICY_DEVICE_PCI;
	if (expect_token(p, l, &t, "a PCI address (DDDD:BB:DD.F) after \"pci\"") < 0)
		return -EINVAL;
	r = parse_pci_address(t->s, t->len, c->dev.pci);
	if (r == -ERANGE)
		return fail(p, &l->at, t->col, -EINVAL,
			    "PCI address " TOK_FMT " has a device above 1f or a function above 7",
			    TOK_ARG(t));
	if (r < 0)
		return fail(p, &l->at, t->col, -EINVAL,
			    "PCI address " TOK_FMT " is not DDDD:BB:DD.F or BB:DD.F (hex)",
			    TOK_ARG(t));
	d = find_pci(p, c->dev.pci);
	if (d)
		return fail(p, &l->at, t->col, -EINVAL,
			    "PCI address %s is already device \"%s\" (%s:%u)", d->pci, d->name,
			    d->file, d->line);
	return parse_options(p, l, &pci_option_set, c);
}

int policy_find_device(const struct policy *policy, const char *name)
{
	size_t i;

	if (policy->n_device_slots == 0)
		return -ENOENT;
	i = slot_probe(policy->device_slots, policy->n_device_slots, hash_string(HASH_SEED, name),
		       &device_slot_ops, policy, name);
	return policy->device_slots[i] ? (int)(policy->device_slots[i] - 1) : -ENOENT;
}

static int take_new_device_name(struct policy_parser *p, struct line *l,
				char ret_name[POLICY_MAX_NAME + 1])
{
	const struct policy *pol = p->policy;
	const struct token *t;
	int d;

	if (expect_token(p, l, &t, "a device name after \"device\"") < 0 ||
	    take_device_name(p, l, t, ret_name) < 0)
		return -EINVAL;
	d = policy_find_device(pol, ret_name);
	if (d >= 0)
		return fail(p, &l->at, t->col, -EINVAL,
			    "device \"%s\" is already declared at %s:%u", ret_name,
			    pol->devices[d].file, pol->devices[d].line);
	return 0;
}

static const struct policy_device device_defaults = {
	.revoke_deadline_ms = POLICY_DEFAULT_REVOKE_DEADLINE_MS,
	.revocation = POLICY_REVOKE_ENFORCE,
	.on_error = POLICY_ON_ERROR_REPORT,
};

static int index_pci(struct policy_parser *p, size_t device)
{
	size_t *devs = grow(p->pci_devs, &p->cap_pci, p->n_pci, sizeof(*devs));
	const char *address = p->policy->devices[device].pci;

	if (!devs)
		return oom(p);
	p->pci_devs = devs;
	if (slots_reserve(&p->pci_slots, &p->n_pci_slots, p->n_pci, &pci_slot_ops, p) < 0)
		return oom(p);
	devs[p->n_pci] = device;
	p->pci_slots[slot_probe(p->pci_slots, p->n_pci_slots, hash_string(HASH_SEED, address),
				&pci_slot_ops, p, address)] = ++p->n_pci;
	return 0;
}

/* Append dev; a broken one (its line had an error after the name) is kept too, so that rules
 * naming it are not also reported as naming an undeclared device. */
static int add_device(struct policy_parser *p, const struct policy_device *dev, bool broken)
{
	struct policy *pol = p->policy;
	struct policy_device *devices;
	bool *flags;

	devices = grow(pol->devices, &p->cap_devices, pol->n_devices, sizeof(*devices));
	if (!devices)
		return oom(p);
	pol->devices = devices;
	flags = grow(p->device_broken, &p->cap_broken, pol->n_devices, sizeof(*flags));
	if (!flags)
		return oom(p);
	p->device_broken = flags;
	if (slots_reserve(&pol->device_slots, &pol->n_device_slots, pol->n_devices,
			  &device_slot_ops, pol) < 0)
		return oom(p);
	devices[pol->n_devices] = *dev;
	flags[pol->n_devices] = broken;
	pol->device_slots[slot_probe(pol->device_slots, pol->n_device_slots,
				     hash_string(HASH_SEED, dev->name), &device_slot_ops, pol,
				     dev->name)] = pol->n_devices + 1;
	pol->n_devices++;
	if (!broken && dev->kind == POLICY_DEVICE_PCI)
		return index_pci(p, pol->n_devices - 1);
	return 0;
}

/* What follows the name: "sim ..." or "pci ADDRESS ...". */
static int parse_device_kind(struct policy_parser *p, struct line *l, struct device_ctx *c)
{
	const struct token *t;

	if (expect_token(p, l, &t, "sim or pci after the device name") < 0)
		return -EINVAL;
	if (token_is(t, "pci"))
		return parse_pci(p, l, c);
	if (token_is(t, "sim"))
		return parse_sim(p, l, c);
	return fail(p, &l->at, t->col, -EINVAL,
		    "unknown device kind " TOK_FMT " (expected sim or pci)", TOK_ARG(t));
}

static int parse_device(struct policy_parser *p, struct line *l)
{
	struct device_ctx c = { .dev = device_defaults };
	int r;

	if (p->policy->n_devices >= POLICY_MAX_DEVICES)
		return fail(p, &l->at, l->tok[0].col, -E2BIG, "too many devices (at most %d)",
			    POLICY_MAX_DEVICES);
	r = take_new_device_name(p, l, c.dev.name);
	if (r < 0)
		return r;
	c.dev.file = l->at.file;
	c.dev.line = l->at.line;
	r = parse_device_kind(p, l, &c);
	if (p->oom)
		return -ENOMEM;
	return add_device(p, &c.dev, r < 0) < 0 ? -ENOMEM : r;
}

/* ---- Subjects: allow, admin, observer ---- */

static const char *subject_kind_name(enum policy_subject_kind kind)
{
	return kind == POLICY_USER ? "user" : kind == POLICY_GROUP ? "group" : "unit";
}

struct subject_key {
	enum policy_subject_kind kind;
	const char *name;
};

static uint64_t subject_hash(enum policy_subject_kind kind, const char *name)
{
	return hash_string(HASH_SEED ^ (uint64_t)kind, name);
}

static uint64_t cache_hash(const void *ctx, size_t index)
{
	const struct policy_parser *p = ctx;

	return subject_hash(p->cache[index].kind, p->cache[index].name);
}

static bool cache_matches(const void *ctx, size_t index, const void *key)
{
	const struct policy_parser *p = ctx;
	const struct subject_key *k = key;

	return p->cache[index].kind == k->kind && strcmp(p->cache[index].name, k->name) == 0;
}

static const struct slot_ops cache_slot_ops = { cache_hash, cache_matches };

/* A copy of name that lives as long as the policy (subjects point at it). */
static const char *keep_name(struct policy_parser *p, const char *name)
{
	struct policy *pol = p->policy;
	char **names = grow(pol->names, &p->cap_names, pol->n_names, sizeof(*names));

	if (!names)
		return NULL;
	pol->names = names;
	names[pol->n_names] = strdup(name);
	return names[pol->n_names] ? names[pol->n_names++] : NULL;
}

/* The resolver's answer for (kind, name), asked once per distinct name and parse: a large
 * policy names the same few users and groups in many rules. Units need no resolver. */
static int lookup_subject(struct policy_parser *p, enum policy_subject_kind kind, const char *name,
			  const struct cached_subject **ret_entry)
{
	const struct subject_key key = { kind, name };
	uint64_t h = subject_hash(kind, name);
	struct cached_subject *cache, e = { .kind = kind };

	if (p->n_cache_slots) {
		size_t i =
		    slot_probe(p->cache_slots, p->n_cache_slots, h, &cache_slot_ops, p, &key);
		if (p->cache_slots[i]) {
			*ret_entry = &p->cache[p->cache_slots[i] - 1];
			return 0;
		}
	}
	if (kind == POLICY_USER)
		e.r = p->resolver->user(name, &e.id);
	else if (kind == POLICY_GROUP)
		e.r = p->resolver->group(name, &e.id);
	cache = grow(p->cache, &p->cap_cache, p->n_cache, sizeof(*cache));
	if (e.r == -ENOMEM || !cache)
		return oom(p);
	p->cache = cache;
	e.name = keep_name(p, name);
	if (!e.name ||
	    slots_reserve(&p->cache_slots, &p->n_cache_slots, p->n_cache, &cache_slot_ops, p) < 0)
		return oom(p);
	cache[p->n_cache] = e;
	p->cache_slots[slot_probe(p->cache_slots, p->n_cache_slots, h, &cache_slot_ops, p, &key)] =
	    ++p->n_cache;
	*ret_entry = &cache[p->n_cache - 1];
	return 0;
}

/* Names are resolved here, once, so that a request never waits on NSS. */
static int resolve_subject(struct policy_parser *p, const struct line *l, const struct token *t,
			   enum policy_subject_kind kind, struct policy_subject *ret_subject)
{
	const char *what = subject_kind_name(kind);
	const struct cached_subject *e;
	char name[SUBJECT_MAX_NAME + 1];
	int r;

	if (t->len > SUBJECT_MAX_NAME)
		return fail(p, &l->at, t->col, -EINVAL,
			    "%s name " TOK_FMT " is longer than %d bytes", what, TOK_ARG(t),
			    SUBJECT_MAX_NAME);
	memcpy(name, t->s, t->len);
	name[t->len] = '\0';
	r = lookup_subject(p, kind, name, &e);
	if (r < 0)
		return r;
	if (e->r == -ENOENT)
		return fail(p, &l->at, t->col, -EINVAL, "%s " TOK_FMT " does not exist", what,
			    TOK_ARG(t));
	if (e->r == -EINVAL)
		return fail(p, &l->at, t->col, -EINVAL, "%s " TOK_FMT " is not a valid name or id",
			    what, TOK_ARG(t));
	if (e->r < 0)
		return fail(p, &l->at, t->col, -EINVAL, "cannot look up %s " TOK_FMT ": %s", what,
			    TOK_ARG(t), strerror(-e->r));
	*ret_subject = (struct policy_subject){ .kind = kind, .id = e->id, .name = e->name };
	return 0;
}

/* The unit types systemd knows, as unit_name_is_valid() checks the suffix. */
static const char *const unit_types[] = { "service", "socket",	  "target", "device",
					  "mount",   "automount", "swap",   "timer",
					  "path",    "slice",	  "scope" };

static bool is_unit_type(const char *s, size_t len)
{
	for (size_t i = 0; i < ARRAY_SIZE(unit_types); i++)
		if (strlen(unit_types[i]) == len && memcmp(unit_types[i], s, len) == 0)
			return true;
	return false;
}

static bool is_unit_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       strchr(":-_.\\@", c);
}

/* A unit name as systemd validates one: at most 255 bytes, a known type after the last dot,
 * before it only [A-Za-z0-9:-_.\@], not starting with "@"; an instance ("getty@tty1.service")
 * is a unit a process can run in, a template ("getty@.service") is not. */
static int check_unit_name(struct policy_parser *p, const struct line *l, const struct token *t)
{
	const char *dot = NULL, *at = NULL;

	if (t->len > POLICY_MAX_UNIT_NAME)
		return fail(p, &l->at, t->col, -EINVAL,
			    "unit name " TOK_FMT " is longer than %d bytes", TOK_ARG(t),
			    POLICY_MAX_UNIT_NAME);
	for (size_t i = 0; i < t->len; i++)
		if (t->s[i] == '.')
			dot = t->s + i;
	if (!dot || dot == t->s || !is_unit_type(dot + 1, t->len - (size_t)(dot + 1 - t->s)))
		return fail(p, &l->at, t->col, -EINVAL,
			    "unit name " TOK_FMT " does not end in a unit type (such as .service)",
			    TOK_ARG(t));
	for (const char *c = t->s; c < dot; c++) {
		if (!is_unit_char(*c))
			return fail(p, &l->at, t->col + (unsigned)(c - t->s), -EINVAL,
				    "unit name " TOK_FMT " may contain only letters, digits, "
				    "\":\", \"-\", \"_\", \".\", \"\\\" and \"@\"",
				    TOK_ARG(t));
		if (*c == '@' && !at)
			at = c;
	}
	if (at == t->s)
		return fail(p, &l->at, t->col, -EINVAL, "unit name " TOK_FMT " starts with \"@\"",
			    TOK_ARG(t));
	if (at && at + 1 == dot)
		return fail(p, &l->at, t->col, -EINVAL,
			    "unit name " TOK_FMT
			    " is a template, which no process runs in: name an instance "
			    "(NAME@INSTANCE.TYPE)",
			    TOK_ARG(t));
	return 0;
}

static int parse_unit(struct policy_parser *p, const struct line *l, const struct token *t,
		      struct policy_subject *ret_subject)
{
	const struct cached_subject *e;
	char name[POLICY_MAX_UNIT_NAME + 1];
	int r;

	if (check_unit_name(p, l, t) < 0)
		return -EINVAL;
	memcpy(name, t->s, t->len);
	name[t->len] = '\0';
	r = lookup_subject(p, POLICY_UNIT, name, &e);
	if (r < 0)
		return r;
	*ret_subject = (struct policy_subject){ .kind = POLICY_UNIT, .name = e->name };
	return 0;
}

/* "user NAME|UID" or "group NAME|GID" (or, where units is true, "unit NAME") after
 * directive. */
static int parse_subject(struct policy_parser *p, struct line *l, const char *directive, bool units,
			 struct policy_subject *ret_subject)
{
	const char *expected = units ? "user, group or unit" : "user or group";
	enum policy_subject_kind kind;
	const struct token *t;

	if (expect_token(p, l, &t, "%s after \"%s\"", expected, directive) < 0)
		return -EINVAL;
	if (token_is(t, "user"))
		kind = POLICY_USER;
	else if (token_is(t, "group"))
		kind = POLICY_GROUP;
	else if (units && token_is(t, "unit"))
		kind = POLICY_UNIT;
	else
		return fail(p, &l->at, t->col, -EINVAL, "unknown subject " TOK_FMT " (expected %s)",
			    TOK_ARG(t), expected);
	if (kind == POLICY_UNIT) {
		if (expect_token(p, l, &t, "a unit name (NAME.service) after \"unit\"") < 0)
			return -EINVAL;
		return parse_unit(p, l, t, ret_subject);
	}
	if (expect_token(p, l, &t, "a %s name or id after \"%s\"", subject_kind_name(kind),
			 subject_kind_name(kind)) < 0)
		return -EINVAL;
	return resolve_subject(p, l, t, kind, ret_subject);
}

/* admin and observer lines: one subject, appended to *list. */
static int parse_role(struct policy_parser *p, struct line *l, struct policy_subject **list,
		      size_t *n, size_t *cap)
{
	const struct token *key = &l->tok[0], *t;
	char directive[16];
	struct policy_subject s, *a;
	int r;

	snprintf(directive, sizeof(directive), "%.*s", (int)key->len, key->s);
	if (*n >= POLICY_MAX_RULES)
		return fail(p, &l->at, key->col, -E2BIG, "too many %s lines (at most %d)",
			    directive, POLICY_MAX_RULES);
	r = parse_subject(p, l, directive, false, &s);
	if (r < 0)
		return r;
	t = next_token(l);
	if (t)
		return fail(p, &l->at, t->col, -EINVAL,
			    "unexpected " TOK_FMT " (an %s line names one user or group)",
			    TOK_ARG(t), directive);
	a = grow(*list, cap, *n, sizeof(*a));
	if (!a)
		return oom(p);
	*list = a;
	a[(*n)++] = s;
	return 0;
}

static int parse_admin(struct policy_parser *p, struct line *l)
{
	struct policy *pol = p->policy;

	return parse_role(p, l, &pol->admins, &pol->n_admins, &p->cap_admins);
}

static int parse_observer(struct policy_parser *p, struct line *l)
{
	struct policy *pol = p->policy;

	return parse_role(p, l, &pol->observers, &pol->n_observers, &p->cap_observers);
}

struct rule_ctx {
	struct policy_rule rule;
	struct pending pending;
};

static int opt_rule_bar(struct policy_parser *p, struct line *l, const struct token *key, void *ctx)
{
	struct rule_ctx *c = ctx;
	const struct token *t;
	unsigned bar;

	if (expect_token(p, l, &t, "a BAR number after " TOK_FMT, TOK_ARG(key)) < 0 ||
	    take_bar(p, l, t, &bar) < 0)
		return -EINVAL;
	c->rule.bar = (int)bar;
	c->pending.bar_col = t->col;
	return 0;
}

static int opt_rule_range(struct policy_parser *p, struct line *l, const struct token *key,
			  void *ctx)
{
	struct rule_ctx *c = ctx;
	const struct token *t;

	if (expect_token(p, l, &t, "OFFSET+LENGTH after \"range\"") < 0 ||
	    take_range(p, l, t, &c->rule.range) < 0)
		return -EINVAL;
	c->rule.has_range = true;
	c->pending.range_key_col = key->col;
	c->pending.range_col = t->col;
	return 0;
}

static int opt_max_leases(struct policy_parser *p, struct line *l, const struct token *key,
			  void *ctx)
{
	struct rule_ctx *c = ctx;
	const struct token *t;
	uint64_t v;

	if (expect_token(p, l, &t, "a number after " TOK_FMT, TOK_ARG(key)) < 0)
		return -EINVAL;
	if (units_parse_count(t->s, t->len, &v) < 0 || v == 0 || v > UINT32_MAX)
		return fail(p, &l->at, t->col, -EINVAL,
			    "max-leases " TOK_FMT " is not a decimal number from 1 to %u",
			    TOK_ARG(t), UINT32_MAX);
	c->rule.max_leases = (unsigned)v;
	return 0;
}

static int opt_max_bytes(struct policy_parser *p, struct line *l, const struct token *key,
			 void *ctx)
{
	struct rule_ctx *c = ctx;
	const struct token *t;

	if (expect_token(p, l, &t, "a size after " TOK_FMT, TOK_ARG(key)) < 0 ||
	    take_value(p, l, &size_value, t, &c->rule.max_bytes) < 0)
		return -EINVAL;
	if (c->rule.max_bytes == 0)
		return fail(p, &l->at, t->col, -EINVAL,
			    "max-bytes must be more than 0 (leave it out for no cap)");
	return 0;
}

static int opt_ttl(struct policy_parser *p, struct line *l, const struct token *key, void *ctx)
{
	struct rule_ctx *c = ctx;
	const struct token *t;

	if (expect_token(p, l, &t, "a duration after " TOK_FMT, TOK_ARG(key)) < 0 ||
	    take_duration(p, l, key, t, &c->rule.ttl_ms) < 0)
		return -EINVAL;
	if (c->rule.ttl_ms == 0)
		return fail(p, &l->at, t->col, -EINVAL,
			    "ttl must be more than 0 (leave it out for leases that do not expire)");
	return 0;
}

static const struct option rule_options[] = {
	{ "bar", false, opt_rule_bar },
	{ "range", false, opt_rule_range },
	{ "max-leases", false, opt_max_leases },
	{ "max-bytes", false, opt_max_bytes },
	{ "ttl", false, opt_ttl },
};

static const struct option_set rule_option_set = { rule_options, ARRAY_SIZE(rule_options),
						   "bar, range, max-leases, max-bytes or ttl" };

/* "file:line", keeping the end of an over-long path since that is the part that differs. */
static void format_where(char *buf, size_t size, const char *file, unsigned line)
{
	char num[16];
	size_t flen = strlen(file), room;
	int n = snprintf(num, sizeof(num), ":%u", line);

	room = size - 1 - (size_t)n;
	if (flen <= room)
		snprintf(buf, size, "%s%s", file, num);
	else
		snprintf(buf, size, "...%s%s", file + flen - (room - 3), num);
}

/* A rule naming a sim device is checked against its BARs, which are known exactly. */
static int check_rule_bar(struct policy_parser *p, const struct where *at,
			  const struct policy_rule *rule, const struct pending *pend,
			  const struct policy_device *dev)
{
	uint64_t size;

	if (dev->kind != POLICY_DEVICE_SIM || rule->bar < 0)
		return 0;
	size = dev->sim_bar_size[rule->bar];
	if (size == 0)
		return fail(p, at, pend->bar_col, -EINVAL, "device \"%s\" (%s:%u) has no bar %d",
			    dev->name, dev->file, dev->line, rule->bar);
	if (rule->has_range && !range_fits(&rule->range, size))
		return fail(p, at, pend->range_col, -EINVAL,
			    "range 0x%" PRIx64 "+0x%" PRIx64
			    " does not fit in bar %d of device \"%s\" (size 0x%" PRIx64 ")",
			    rule->range.offset, rule->range.length, rule->bar, dev->name, size);
	return 0;
}

/* Point rule at device d and check it against it. A device whose own line had an error was
 * reported there; its rules are not checked against what was made of it. */
static int bind_rule(struct policy_parser *p, const struct where *at, struct policy_rule *rule,
		     const struct pending *pend, int d)
{
	if (d < 0)
		return fail(p, at, pend->device_col, -EINVAL, "device \"%s\" is not declared",
			    pend->device);
	rule->device = (size_t)d;
	if (p->device_broken[d])
		return -EINVAL;
	return check_rule_bar(p, at, rule, pend, &p->policy->devices[d]);
}

/* Keep what resolving the rule needs once its device is declared, with its line. */
static int defer_rule(struct policy_parser *p, const struct line *l, struct pending *pend)
{
	struct pending *a = grow(p->pending, &p->cap_pending, p->n_pending, sizeof(*a));
	size_t cut = quoted_len(l->at.text, l->at.text_len);

	if (!a)
		return oom(p);
	p->pending = a;
	pend->rule = p->policy->n_rules;
	pend->file_no = l->at.file_no;
	pend->text = strndup(l->at.text, cut);
	if (!pend->text)
		return oom(p);
	pend->text_len = cut;
	a[p->n_pending++] = *pend;
	return 0;
}

static int append_rule(struct policy_parser *p, const struct rule_ctx *c)
{
	struct policy *pol = p->policy;
	struct policy_rule *rules;

	rules = grow(pol->rules, &p->cap_rules, pol->n_rules, sizeof(*rules));
	if (!rules)
		return oom(p);
	pol->rules = rules;
	rules[pol->n_rules++] = c->rule;
	return 0;
}

static int parse_allow(struct policy_parser *p, struct line *l)
{
	struct rule_ctx c = { .rule = { .bar = -1, .file = l->at.file, .line = l->at.line } };
	const struct token *t;
	const char *kind;
	int r, d;

	if (p->policy->n_rules >= POLICY_MAX_RULES)
		return fail(p, &l->at, l->tok[0].col, -E2BIG, "too many allow rules (at most %d)",
			    POLICY_MAX_RULES);
	r = parse_subject(p, l, "allow", true, &c.rule.who);
	if (r < 0)
		return r;
	kind = subject_kind_name(c.rule.who.kind);
	if (expect_token(p, l, &t, "\"device NAME\" after the %s", kind) < 0)
		return -EINVAL;
	if (!token_is(t, "device"))
		return fail(p, &l->at, t->col, -EINVAL,
			    "expected \"device NAME\" after the %s, found " TOK_FMT, kind,
			    TOK_ARG(t));
	if (expect_token(p, l, &t, "a device name after \"device\"") < 0 ||
	    take_device_name(p, l, t, c.pending.device) < 0)
		return -EINVAL;
	c.pending.device_col = t->col;
	if (parse_options(p, l, &rule_option_set, &c) < 0)
		return -EINVAL;
	if (c.rule.has_range && c.rule.bar < 0)
		return fail(p, &l->at, c.pending.range_key_col, -EINVAL,
			    "a range needs a bar: add \"bar N\" to the rule");
	format_where(c.rule.where, sizeof(c.rule.where), l->at.file, l->at.line);
	/* Most policies declare their devices first: the rule is checked now, with its line. */
	d = policy_find_device(p->policy, c.pending.device);
	if (d >= 0)
		r = bind_rule(p, &l->at, &c.rule, &c.pending, d);
	else
		r = defer_rule(p, l, &c.pending);
	return r < 0 ? r : append_rule(p, &c);
}

/* ---- Files ---- */

static int parse_line(struct policy_parser *p, struct line *l)
{
	static const struct {
		const char *name;
		int (*parse)(struct policy_parser *p, struct line *l);
	} directives[] = {
		{ "device", parse_device },
		{ "allow", parse_allow },
		{ "admin", parse_admin },
		{ "observer", parse_observer },
	};
	const struct token *t = next_token(l);

	if (!t)
		return 0;
	for (size_t i = 0; i < ARRAY_SIZE(directives); i++)
		if (token_is(t, directives[i].name))
			return directives[i].parse(p, l);
	return fail(p, &l->at, t->col, -EINVAL,
		    "unknown directive " TOK_FMT " (expected device, allow, admin or observer)",
		    TOK_ARG(t));
}

/* Keep a copy of the file name for the policy's lifetime: devices and rules point at it. */
static int add_file(struct policy_parser *p, const char *file, const char **ret_name)
{
	const struct where at = { file, 0, p->policy->n_files, NULL, 0 };
	struct policy *pol = p->policy;
	char **files;

	if (pol->n_files >= POLICY_MAX_FILES)
		return fail(p, &at, 0, -E2BIG, "too many policy files (at most %d)",
			    POLICY_MAX_FILES);
	files = grow(pol->files, &p->cap_files, pol->n_files, sizeof(*files));
	if (!files)
		return oom(p);
	pol->files = files;
	files[pol->n_files] = strdup(file);
	if (!files[pol->n_files])
		return oom(p);
	*ret_name = files[pol->n_files++];
	return 0;
}

/* Each line is parsed on its own: after an error the line is dropped and the next one read,
 * so that one run reports every error of the file. */
static int parse_file(struct policy_parser *p, const char *file, const char *text, size_t len)
{
	struct line l = { 0 };
	size_t pos = 0;
	int r;

	r = add_file(p, file, &l.at.file);
	if (r < 0)
		return r;
	l.at.file_no = p->policy->n_files - 1;
	if (len > POLICY_MAX_SIZE) {
		const struct where whole = { l.at.file, 0, l.at.file_no, NULL, 0 };
		return fail(p, &whole, 0, -E2BIG, "file is larger than %d bytes", POLICY_MAX_SIZE);
	}
	while (pos < len && !p->oom) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;

		l.at.line++;
		l.at.text = text + pos;
		l.at.text_len = n;
		if (tokenize(p, &l, text + pos, n) >= 0)
			(void)parse_line(p, &l);
		pos += n + 1;
	}
	return p->err;
}

/* Runs once every file is read, for the rules read before their device. */
static void resolve_pending(struct policy_parser *p)
{
	struct policy *pol = p->policy;

	for (size_t i = 0; i < p->n_pending && !p->oom; i++) {
		const struct pending *pend = &p->pending[i];
		struct policy_rule *rule = &pol->rules[pend->rule];
		const struct where at = { rule->file, rule->line, pend->file_no, pend->text,
					  pend->text_len };

		(void)bind_rule(p, &at, rule, pend, policy_find_device(pol, pend->device));
	}
}

/* User rules by (device, uid): the head of each chain of next_user. */
struct user_key {
	size_t device;
	uint32_t uid;
};

static uint64_t user_key_hash(size_t device, uint32_t uid)
{
	uint64_t h = ((uint64_t)device << 32 | uid) * 0x9e3779b97f4a7c15u;

	return h ^ (h >> 29);
}

static bool user_matches(const void *ctx, size_t index, const void *key)
{
	const struct policy *pol = ctx;
	const struct user_key *k = key;

	return pol->rules[index].device == k->device && pol->rules[index].who.id == k->uid;
}

static const struct slot_ops user_slot_ops = { NULL, user_matches };

/* The first user rule for uid on device, in file order, or NONE. */
static size_t first_user_rule(const struct policy *pol, size_t device, uint32_t uid)
{
	const struct user_key key = { device, uid };
	size_t i;

	if (pol->n_user_slots == 0)
		return NONE;
	i = slot_probe(pol->user_slots, pol->n_user_slots, user_key_hash(device, uid),
		       &user_slot_ops, pol, &key);
	return pol->user_slots[i] ? pol->user_slots[i] - 1 : NONE;
}

static void *alloc_array(size_t n, size_t size)
{
	return calloc(n ? n : 1, size);
}

/* The chains of user rules, sized once (at most half full) since every key is known. */
static int index_user_rules(struct policy *pol)
{
	size_t n_user = 0, n_slots = 16;

	for (size_t i = 0; i < pol->n_rules; i++)
		n_user += pol->rules[i].who.kind == POLICY_USER;
	while (n_slots < 2 * n_user)
		n_slots *= 2;
	pol->user_slots = calloc(n_slots, sizeof(size_t));
	pol->next_user = alloc_array(pol->n_rules, sizeof(size_t));
	if (!pol->user_slots || !pol->next_user)
		return -ENOMEM;
	pol->n_user_slots = n_slots;
	/* Backwards, so that each head ends as the chain's first rule in file order. */
	for (size_t i = pol->n_rules; i-- > 0;) {
		const struct policy_rule *rule = &pol->rules[i];
		const struct user_key key = { rule->device, rule->who.id };
		size_t s;

		if (rule->who.kind != POLICY_USER)
			continue;
		s = slot_probe(pol->user_slots, n_slots, user_key_hash(key.device, key.uid),
			       &user_slot_ops, pol, &key);
		pol->next_user[i] = pol->user_slots[s] ? pol->user_slots[s] - 1 : NONE;
		pol->user_slots[s] = i + 1;
	}
	return 0;
}

/* The lists policy_match_export and the explanations walk: every rule of a device, its user
 * rules by uid, its other rules; each in file order. */
static int index_rules(struct policy *pol)
{
	pol->first_rule = alloc_array(pol->n_devices, sizeof(size_t));
	pol->first_other = alloc_array(pol->n_devices, sizeof(size_t));
	pol->next_rule = alloc_array(pol->n_rules, sizeof(size_t));
	pol->next_other = alloc_array(pol->n_rules, sizeof(size_t));
	if (!pol->first_rule || !pol->first_other || !pol->next_rule || !pol->next_other)
		return -ENOMEM;
	for (size_t d = 0; d < pol->n_devices; d++)
		pol->first_rule[d] = pol->first_other[d] = NONE;
	for (size_t i = pol->n_rules; i-- > 0;) {
		size_t d = pol->rules[i].device;
		pol->next_rule[i] = pol->first_rule[d];
		pol->first_rule[d] = i;
		pol->next_other[i] = pol->first_other[d];
		if (pol->rules[i].who.kind != POLICY_USER)
			pol->first_other[d] = i;
	}
	return index_user_rules(pol);
}

static int compare_found(const void *a, const void *b)
{
	const struct found *x = a, *y = b;

	if (x->file_no != y->file_no)
		return x->file_no < y->file_no ? -1 : 1;
	if (x->d.line != y->d.line)
		return x->d.line < y->d.line ? -1 : 1;
	if (x->d.column != y->d.column)
		return x->d.column < y->d.column ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sort what was found and hand it over (emptying the parser's list); the -errno of the first
 * error in that order, 0 when there is none. */
static int take_diags(struct policy_parser *p, struct policy_diags *ret_diags)
{
	int err = 0;

	if (p->n_found) /* qsort of a NULL array is undefined, even empty */
		qsort(p->found, p->n_found, sizeof(*p->found), compare_found);
	for (size_t i = 0; i < p->n_found && !err; i++)
		err = p->found[i].err;
	if (!err)
		err = p->err; /* an error beyond POLICY_MAX_DIAGS */
	if (ret_diags) {
		struct policy_diag *v = malloc((p->n_found ? p->n_found : 1) * sizeof(*v));
		if (!v)
			return -ENOMEM;
		for (size_t i = 0; i < p->n_found; i++)
			v[i] = p->found[i].d;
		*ret_diags =
		    (struct policy_diags){ .v = v, .n = p->n_found, .dropped = p->dropped };
		p->n_found = 0;
	}
	return err;
}

int policy_parser_new(const struct policy_resolver *resolver, struct policy_parser **ret_parser)
{
	struct policy_parser *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->resolver = resolver;
	p->policy = calloc(1, sizeof(*p->policy));
	if (!p->policy) {
		free(p);
		return -ENOMEM;
	}
	*ret_parser = p;
	return 0;
}

void policy_parser_free(struct policy_parser *p)
{
	if (!p)
		return;
	policy_free(p->policy);
	for (size_t i = 0; i < p->n_pending; i++)
		free(p->pending[i].text);
	free(p->pending);
	free(p->device_broken);
	free(p->pci_devs);
	free(p->pci_slots);
	free(p->cache);
	free(p->cache_slots);
	for (size_t i = 0; i < p->n_found; i++)
		diag_done(&p->found[i].d);
	free(p->found);
	free(p);
}

int policy_parser_add(struct policy_parser *p, const char *file, const char *text, size_t len)
{
	/* Out of memory, nothing more is read: the policy is half-built. */
	if (p->oom)
		return -ENOMEM;
	if (!p->policy)
		return -EINVAL; /* already finished */
	return parse_file(p, file, text, len);
}

/* Where a message about file as a whole sorts: with that file if it was read, else as the
 * next file (a file that cannot be read, a directory). */
static size_t file_no_of(const struct policy_parser *p, const char *file)
{
	const struct policy *pol = p->policy;

	for (size_t i = pol ? pol->n_files : 0; i-- > 0;)
		if (strcmp(pol->files[i], file) == 0)
			return i;
	return pol ? pol->n_files : 0;
}

int policy_parser_fail(struct policy_parser *p, const char *file, int err, const char *fmt, ...)
{
	const struct where at = { file, 0, file_no_of(p, file), NULL, 0 };
	va_list ap;

	va_start(ap, fmt);
	if (err == -ENOMEM)
		oom(p);
	else
		record_verror(p, &at, 0, err, fmt, ap);
	va_end(ap);
	return err;
}

int policy_parser_warn(struct policy_parser *p, const char *file, const char *fmt, ...)
{
	const struct where at = { file, 0, file_no_of(p, file), NULL, 0 };
	va_list ap;

	va_start(ap, fmt);
	record_verror(p, &at, 0, 0, fmt, ap);
	va_end(ap);
	return p->oom ? -ENOMEM : 0;
}

int policy_parser_finish_ex(struct policy_parser *p, struct policy **ret_policy,
			    struct policy_diags *ret_diags)
{
	int r;

	if (!p->policy)
		return -EINVAL; /* already finished */
	if (!p->oom)
		resolve_pending(p);
	if (!p->oom && !p->err && index_rules(p->policy) < 0)
		oom(p);
	r = take_diags(p, ret_diags);
	if (r == -ENOMEM && ret_diags)
		*ret_diags = (struct policy_diags){ .v = NULL };
	if (p->oom)
		return -ENOMEM;
	if (r < 0)
		return r;
	*ret_policy = TAKE_PTR(p->policy);
	return 0;
}

/* The first error of diags as "file:line:column: message". */
static char *first_error(const struct policy_diags *d, int r)
{
	if (r == -ENOMEM)
		return strdup("out of memory");
	for (size_t i = 0; i < d->n; i++)
		if (!d->v[i].warning)
			return policy_diag_format(&d->v[i]);
	/* Every kept diagnostic is a warning: the errors were beyond POLICY_MAX_DIAGS. */
	return format("%zu more diagnostics not kept: %s", d->dropped, strerror(-r));
}

int policy_parser_finish(struct policy_parser *p, struct policy **ret_policy, char **ret_error)
{
	struct policy_diags diags = { .v = NULL };
	int r;

	if (!p->policy)
		return -EINVAL; /* already finished */
	r = policy_parser_finish_ex(p, ret_policy, &diags);
	if (r < 0 && ret_error)
		*ret_error = first_error(&diags, r);
	policy_diags_free(&diags);
	return r;
}

int policy_parse(const char *file, const char *text, size_t len,
		 const struct policy_resolver *resolver, struct policy **ret_policy,
		 char **ret_error)
{
	_cleanup_(policy_parser_freep) struct policy_parser *p = NULL;
	int r = policy_parser_new(resolver, &p);

	if (r < 0) {
		if (ret_error)
			*ret_error = NULL; /* no memory even for the parser, let alone a message */
		return r;
	}
	/* Errors are kept in the parser, and finish reports them. */
	(void)policy_parser_add(p, file, text, len);
	return policy_parser_finish(p, ret_policy, ret_error);
}

void policy_free(struct policy *policy)
{
	if (!policy)
		return;
	for (size_t i = 0; i < policy->n_files; i++)
		free(policy->files[i]);
	free(policy->files);
	for (size_t i = 0; i < policy->n_names; i++)
		free(policy->names[i]);
	free(policy->names);
	free(policy->devices);
	free(policy->rules);
	free(policy->admins);
	free(policy->observers);
	free(policy->device_slots);
	free(policy->first_rule);
	free(policy->next_rule);
	free(policy->user_slots);
	free(policy->next_user);
	free(policy->first_other);
	free(policy->next_other);
	free(policy);
}

/* ---- Evaluation: the grant path, so pure and allocation-free ---- */

static bool subject_matches(const struct policy_subject *s, const struct policy_peer *peer)
{
	if (s->kind == POLICY_USER)
		return s->id == peer->uid;
	if (s->kind == POLICY_UNIT)
		return peer->unit && strcmp(s->name, peer->unit) == 0;
	if (s->id == peer->gid)
		return true;
	for (size_t i = 0; i < peer->n_groups; i++)
		if (peer->groups[i] == s->id)
			return true;
	return false;
}

/* Whether r lies inside outer, written so that no sum can overflow. */
static bool range_inside(const struct range *outer, const struct range *r)
{
	return r->offset >= outer->offset && r->length <= outer->length &&
	       r->offset - outer->offset <= outer->length - r->length;
}

static bool rule_covers_bar(const struct policy_rule *rule, unsigned bar)
{
	return rule->bar < 0 || (unsigned)rule->bar == bar;
}

/* The first of ranges[0..n) outside what rule allows, or n when all are inside. */
static size_t first_outside(const struct policy_rule *rule, const struct range *ranges, size_t n)
{
	if (!rule->has_range)
		return n;
	for (size_t i = 0; i < n; i++)
		if (!range_inside(&rule->range, &ranges[i]))
			return i;
	return n;
}

static bool rule_allows(const struct policy_rule *rule, const struct policy_peer *peer,
			unsigned bar, const struct range *ranges, size_t n)
{
	/* An empty request means "the whole BAR", which a range-limited rule cannot vouch for. */
	return rule_covers_bar(rule, bar) && subject_matches(&rule->who, peer) &&
	       (!rule->has_range || (n > 0 && first_outside(rule, ranges, n) == n));
}

/* Where the two walks of a decision start: the peer's user rules on the device and the
 * device's other rules, each at its first rule after `after` (NULL: at its first). */
static void walk_from(const struct policy *policy, const struct policy_peer *peer, size_t device,
		      const struct policy_rule *after, size_t *ret_user, size_t *ret_other)
{
	size_t a = first_user_rule(policy, device, peer->uid), i;

	*ret_other = policy->first_other[device];
	if (!after) {
		*ret_user = a;
		return;
	}
	i = (size_t)(after - policy->rules);
	if (after->device == device)
		*ret_other = policy->next_other[i];
	else /* another device's rule: skip this device's other rules up to it */
		while (*ret_other != NONE && *ret_other <= i)
			*ret_other = policy->next_other[*ret_other];
	/* A chain of one device and one uid: short unless one user has many rules. */
	while (a != NONE && a <= i)
		a = policy->next_user[a];
	*ret_user = a;
}

const struct policy_rule *policy_match_export(const struct policy *policy,
					      const struct policy_peer *peer, size_t device,
					      unsigned bar, const struct range *ranges, size_t n,
					      const struct policy_rule *after)
{
	size_t a, b;

	if (device >= policy->n_devices)
		return NULL;
	walk_from(policy, peer, device, after, &a, &b);
	/* Both lists are in file order; NONE is SIZE_MAX, so the smaller index is next. */
	while (a != NONE || b != NONE) {
		size_t i = a < b ? a : b;
		if (rule_allows(&policy->rules[i], peer, bar, ranges, n))
			return &policy->rules[i];
		if (i == a)
			a = policy->next_user[a];
		else
			b = policy->next_other[b];
	}
	return NULL;
}

static bool any_subject_matches(const struct policy_subject *list, size_t n,
				const struct policy_peer *peer)
{
	for (size_t i = 0; i < n; i++)
		if (subject_matches(&list[i], peer))
			return true;
	return false;
}

bool policy_is_admin(const struct policy *policy, const struct policy_peer *peer)
{
	return any_subject_matches(policy->admins, policy->n_admins, peer);
}

bool policy_is_observer(const struct policy *policy, const struct policy_peer *peer)
{
	return policy_is_admin(policy, peer) ||
	       any_subject_matches(policy->observers, policy->n_observers, peer);
}

/* ---- Explanations of a decision: for denials, so clarity before speed ---- */

/* Rules a sentence lists before "and N more". */
#define EXPLAIN_MAX_RULES 5
/* Groups a sentence lists before "...". */
#define EXPLAIN_MAX_GROUPS 8

/* A sentence being written into a caller's buffer, cut (never overrun) when it is full. */
struct sentence {
	char *buf;
	size_t size, len;
};

__attribute__((format(printf, 2, 3))) static void say(struct sentence *s, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (s->len + 1 >= s->size)
		return;
	va_start(ap, fmt);
	n = vsnprintf(s->buf + s->len, s->size - s->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		s->len = s->len + (size_t)n < s->size ? s->len + (size_t)n : s->size - 1;
}

/* A user name the device's rules spell for uid, for a friendlier sentence; NULL when they
 * have none. Only the device's rules: a denial costs no more to explain than to decide. */
static const char *spelled_user(const struct policy *policy, size_t device, uid_t uid)
{
	for (size_t i = policy->first_rule[device]; i != NONE; i = policy->next_rule[i]) {
		const struct policy_subject *w = &policy->rules[i].who;
		if (w->kind == POLICY_USER && w->id == uid && w->name &&
		    strspn(w->name, "0123456789") != strlen(w->name))
			return w->name;
	}
	return NULL;
}

static void say_peer(struct sentence *s, const struct policy *policy, size_t device,
		     const struct policy_peer *peer)
{
	const char *user = spelled_user(policy, device, peer->uid);

	say(s, "uid %u", (unsigned)peer->uid);
	if (user)
		say(s, " (user %s)", user);
	say(s, ", gid %u", (unsigned)peer->gid);
	for (size_t i = 0; i < peer->n_groups && i <= EXPLAIN_MAX_GROUPS; i++)
		say(s,
		    i == EXPLAIN_MAX_GROUPS ? ", ..."
		    : i			    ? ", %u"
					    : ", groups %u",
		    (unsigned)peer->groups[i]);
	say(s, ", %s%s", peer->unit ? "unit " : "no known unit", peer->unit ? peer->unit : "");
}

static void say_subject(struct sentence *s, const struct policy_subject *w)
{
	if (w->name)
		say(s, "%s %s", subject_kind_name(w->kind), w->name);
	else
		say(s, "%s %u", subject_kind_name(w->kind), (unsigned)w->id);
}

static void say_range(struct sentence *s, const struct range *r)
{
	say(s, "0x%" PRIx64 "+0x%" PRIx64, r->offset, r->length);
}

/* What one rule grants, after its place: "(user bob)", "(bar 2)", "(bar 2 0x0+0x1000)". */
static void say_rule(struct sentence *s, const struct policy_rule *rule, bool subject)
{
	say(s, "%s (", rule->where);
	if (subject)
		say_subject(s, &rule->who);
	else if (rule->bar < 0)
		say(s, "any bar");
	else
		say(s, "bar %d", rule->bar);
	if (!subject && rule->has_range) {
		say(s, " ");
		say_range(s, &rule->range);
	}
	say(s, ")");
}

/* The device's rules that want(rule) picks, as "where (...)" separated by commas. */
static void say_rules(struct sentence *s, const struct policy *policy, size_t device,
		      const struct policy_peer *peer, bool only_peer, bool subject)
{
	size_t listed = 0, more = 0;

	for (size_t i = policy->first_rule[device]; i != NONE; i = policy->next_rule[i]) {
		const struct policy_rule *rule = &policy->rules[i];
		if (only_peer && !subject_matches(&rule->who, peer))
			continue;
		if (listed == EXPLAIN_MAX_RULES) {
			more++;
			continue;
		}
		say(s, listed++ ? ", " : "");
		say_rule(s, rule, subject);
	}
	if (more)
		say(s, " and %zu more", more);
}

/* The peer's first rule of the device, and its first that covers bar too. */
static void nearest_rules(const struct policy *policy, size_t device,
			  const struct policy_peer *peer, unsigned bar,
			  const struct policy_rule **ret_peer, const struct policy_rule **ret_bar)
{
	*ret_peer = *ret_bar = NULL;
	for (size_t i = policy->first_rule[device]; i != NONE && !*ret_bar;
	     i = policy->next_rule[i]) {
		const struct policy_rule *rule = &policy->rules[i];
		if (!subject_matches(&rule->who, peer))
			continue;
		if (!*ret_peer)
			*ret_peer = rule;
		if (rule_covers_bar(rule, bar))
			*ret_bar = rule;
	}
}

static enum policy_verdict explain_range(struct sentence *s, const struct policy *policy,
					 const struct policy_peer *peer, size_t device,
					 unsigned bar, const struct range *ranges, size_t n,
					 const struct policy_rule *rule)
{
	if (n == 0)
		say(s, "the whole of bar %u of device %s was asked for", bar,
		    policy->devices[device].name);
	else {
		say(s, "range ");
		say_range(s, &ranges[first_outside(rule, ranges, n)]);
		say(s, " of bar %u of device %s is outside what the rules allow", bar,
		    policy->devices[device].name);
	}
	say(s, "; rules for ");
	say_peer(s, policy, device, peer);
	say(s, " on %s: ", policy->devices[device].name);
	say_rules(s, policy, device, peer, true, false);
	return POLICY_RANGE_OUTSIDE;
}

static enum policy_verdict explain_device(struct sentence *s, const struct policy *policy,
					  const struct policy_peer *peer, size_t device,
					  unsigned bar, const struct range *ranges, size_t n,
					  const struct policy_rule **ret_rule)
{
	const struct policy_device *dev = &policy->devices[device];
	const struct policy_rule *allowed, *by_peer, *by_bar;

	if (policy->first_rule[device] == NONE) {
		say(s, "no rule names device %s (%s:%u)", dev->name, dev->file, dev->line);
		return POLICY_NO_RULE_FOR_DEVICE;
	}
	allowed = policy_match_export(policy, peer, device, bar, ranges, n, NULL);
	if (allowed) {
		*ret_rule = allowed;
		say(s, "allowed by %s (", allowed->where);
		say_subject(s, &allowed->who);
		say(s, ")");
		return POLICY_ALLOWED;
	}
	nearest_rules(policy, device, peer, bar, &by_peer, &by_bar);
	if (!by_peer) {
		*ret_rule = &policy->rules[policy->first_rule[device]];
		say(s, "no rule for ");
		say_peer(s, policy, device, peer);
		say(s, " on device %s; its rules: ", dev->name);
		say_rules(s, policy, device, peer, false, true);
		return POLICY_NO_RULE_FOR_PEER;
	}
	if (!by_bar) {
		*ret_rule = by_peer;
		say(s, "no rule for bar %u of device %s for ", bar, dev->name);
		say_peer(s, policy, device, peer);
		say(s, "; its rules on %s: ", dev->name);
		say_rules(s, policy, device, peer, true, false);
		return POLICY_NO_RULE_FOR_BAR;
	}
	*ret_rule = by_bar;
	return explain_range(s, policy, peer, device, bar, ranges, n, by_bar);
}

enum policy_verdict policy_explain_export(const struct policy *policy,
					  const struct policy_peer *peer, const char *device,
					  unsigned bar, const struct range *ranges, size_t n,
					  const struct policy_rule **ret_rule, char *msg,
					  size_t msglen)
{
	struct sentence s = { msg, msglen, 0 };
	const struct policy_rule *rule = NULL;
	enum policy_verdict v;
	int d = policy_find_device(policy, device);

	if (msglen)
		msg[0] = '\0';
	if (d < 0) {
		say(&s, "device %.*s is not in the policy", POLICY_MAX_NAME, device);
		v = POLICY_NO_DEVICE;
	} else
		v = explain_device(&s, policy, peer, (size_t)d, bar, ranges, n, &rule);
	if (ret_rule)
		*ret_rule = rule;
	return v;
}
