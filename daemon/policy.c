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

#define TOK_FMT "\"%.*s%s\""
#define TOK_ARG(t)                                                                                 \
	(int)((t)->len < QUOTE_MAX ? (t)->len : QUOTE_MAX), (t)->s,                                \
	    (t)->len > QUOTE_MAX ? "..." : ""

struct token {
	const char *s; /* not NUL-terminated */
	size_t len;
	unsigned col; /* 1-based */
};

struct where {
	const char *file;
	unsigned line; /* 0: the whole file */
};

struct line {
	struct where at;
	struct token tok[LINE_MAX_TOKENS];
	size_t n;
	size_t next;	  /* the next token to consume */
	unsigned end_col; /* just past the last token, for "expected ..." errors */
};

/* What resolving a rule's device needs, kept beside the rule until the whole policy is read
 * (a rule may name a device declared later, even in a later file). */
struct pending {
	char device[POLICY_MAX_NAME + 1];
	unsigned device_col;
	unsigned bar_col;
	unsigned range_key_col; /* "range": where a missing bar is reported */
	unsigned range_col;
};

struct policy_parser {
	struct policy *policy;
	const struct policy_resolver *resolver;
	struct pending *pending; /* one per rule, same index */
	size_t cap_files, cap_devices, cap_rules, cap_pending, cap_admins, cap_observers;
	char *error; /* the first error; later ones are dropped */
	int err;     /* and its -errno, which the parse returns whatever the callers passed up */
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

static int oom(struct policy_parser *p)
{
	if (!p->err) {
		p->err = -ENOMEM;
		p->error = strdup("out of memory");
	}
	return -ENOMEM;
}

/* Record "file:line:col: message" (or "file: message" for the whole file) unless an earlier
 * error is already recorded. Out of memory, it records that instead. */
__attribute__((format(printf, 5, 0))) static void record_verror(struct policy_parser *p,
								const struct where *at,
								unsigned col, int err,
								const char *fmt, va_list ap)
{
	_cleanup_free_ char *msg = NULL;

	if (p->err)
		return;
	msg = vformat(fmt, ap);
	if (!msg) {
		oom(p);
		return;
	}
	if (at->line > 0)
		p->error = format("%s:%u:%u: %s", at->file, at->line, col, msg);
	else
		p->error = format("%s: %s", at->file, msg);
	if (!p->error) {
		oom(p);
		return;
	}
	p->err = err;
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
 * recorded error in the end. A macro so that callers see the value itself: clang's analyzer
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

static int parse_pci(struct policy_parser *p, struct line *l, struct device_ctx *c)
{
	const struct policy *pol = p->policy;
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
	for (size_t i = 0; i < pol->n_devices; i++) {
		const struct policy_device *d = &pol->devices[i];
		if (d->kind == POLICY_DEVICE_PCI && strcmp(d->pci, c->dev.pci) == 0)
			return fail(p, &l->at, t->col, -EINVAL,
				    "PCI address %s is already device \"%s\" (%s:%u)", d->pci,
				    d->name, d->file, d->line);
	}
	return parse_options(p, l, &pci_option_set, c);
}

static int take_new_device_name(struct policy_parser *p, struct line *l,
				char ret_name[POLICY_MAX_NAME + 1])
{
	const struct policy *pol = p->policy;
	const struct token *t;

	if (expect_token(p, l, &t, "a device name after \"device\"") < 0 ||
	    take_device_name(p, l, t, ret_name) < 0)
		return -EINVAL;
	for (size_t i = 0; i < pol->n_devices; i++)
		if (strcmp(pol->devices[i].name, ret_name) == 0)
			return fail(p, &l->at, t->col, -EINVAL,
				    "device \"%s\" is already declared at %s:%u", ret_name,
				    pol->devices[i].file, pol->devices[i].line);
	return 0;
}

static const struct policy_device device_defaults = {
	.revoke_deadline_ms = POLICY_DEFAULT_REVOKE_DEADLINE_MS,
	.revocation = POLICY_REVOKE_ENFORCE,
	.on_error = POLICY_ON_ERROR_REPORT,
};

static int parse_device(struct policy_parser *p, struct line *l)
{
	struct device_ctx c = { .dev = device_defaults };
	struct policy *pol = p->policy;
	struct policy_device *devices;
	const struct token *t;
	int r;

	if (pol->n_devices >= POLICY_MAX_DEVICES)
		return fail(p, &l->at, l->tok[0].col, -E2BIG, "too many devices (at most %d)",
			    POLICY_MAX_DEVICES);
	if (take_new_device_name(p, l, c.dev.name) < 0 ||
	    expect_token(p, l, &t, "sim or pci after the device name") < 0)
		return -EINVAL;
	if (token_is(t, "pci"))
		r = parse_pci(p, l, &c);
	else if (token_is(t, "sim"))
		r = parse_sim(p, l, &c);
	else
		r = fail(p, &l->at, t->col, -EINVAL,
			 "unknown device kind " TOK_FMT " (expected sim or pci)", TOK_ARG(t));
	if (r < 0)
		return r;
	c.dev.file = l->at.file;
	c.dev.line = l->at.line;
	devices = grow(pol->devices, &p->cap_devices, pol->n_devices, sizeof(*devices));
	if (!devices)
		return oom(p);
	pol->devices = devices;
	pol->devices[pol->n_devices++] = c.dev;
	return 0;
}

/* ---- Subjects: allow, admin, observer ---- */

static const char *subject_kind_name(enum policy_subject_kind kind)
{
	return kind == POLICY_USER ? "user" : "group";
}

/* Names are resolved here, once, so that a request never waits on NSS. */
static int resolve_subject(struct policy_parser *p, const struct line *l, const struct token *t,
			   enum policy_subject_kind kind, struct policy_subject *ret_subject)
{
	const char *what = subject_kind_name(kind);
	char name[SUBJECT_MAX_NAME + 1];
	uint32_t id;
	int r;

	if (t->len > SUBJECT_MAX_NAME)
		return fail(p, &l->at, t->col, -EINVAL,
			    "%s name " TOK_FMT " is longer than %d bytes", what, TOK_ARG(t),
			    SUBJECT_MAX_NAME);
	memcpy(name, t->s, t->len);
	name[t->len] = '\0';
	r = kind == POLICY_USER ? p->resolver->user(name, &id) : p->resolver->group(name, &id);
	if (r == -ENOENT)
		return fail(p, &l->at, t->col, -EINVAL, "%s " TOK_FMT " does not exist", what,
			    TOK_ARG(t));
	if (r == -EINVAL)
		return fail(p, &l->at, t->col, -EINVAL, "%s " TOK_FMT " is not a valid name or id",
			    what, TOK_ARG(t));
	if (r == -ENOMEM)
		return oom(p);
	if (r < 0)
		return fail(p, &l->at, t->col, -EINVAL, "cannot look up %s " TOK_FMT ": %s", what,
			    TOK_ARG(t), strerror(-r));
	*ret_subject = (struct policy_subject){ .kind = kind, .id = id };
	return 0;
}

/* "user NAME|UID" or "group NAME|GID" after directive. */
static int parse_subject(struct policy_parser *p, struct line *l, const char *directive,
			 struct policy_subject *ret_subject)
{
	enum policy_subject_kind kind;
	const struct token *t;

	if (expect_token(p, l, &t, "user or group after \"%s\"", directive) < 0)
		return -EINVAL;
	if (token_is(t, "user"))
		kind = POLICY_USER;
	else if (token_is(t, "group"))
		kind = POLICY_GROUP;
	else
		return fail(p, &l->at, t->col, -EINVAL,
			    "unknown subject " TOK_FMT " (expected user or group)", TOK_ARG(t));
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

	snprintf(directive, sizeof(directive), "%.*s", (int)key->len, key->s);
	if (*n >= POLICY_MAX_RULES)
		return fail(p, &l->at, key->col, -E2BIG, "too many %s lines (at most %d)",
			    directive, POLICY_MAX_RULES);
	if (parse_subject(p, l, directive, &s) < 0)
		return -EINVAL;
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
	{ "ttl", false, opt_ttl },
};

static const struct option_set rule_option_set = { rule_options, ARRAY_SIZE(rule_options),
						   "bar, range, max-leases or ttl" };

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

static int append_rule(struct policy_parser *p, const struct rule_ctx *c)
{
	struct policy *pol = p->policy;
	struct policy_rule *rules;
	struct pending *pending;

	rules = grow(pol->rules, &p->cap_rules, pol->n_rules, sizeof(*rules));
	if (!rules)
		return oom(p);
	pol->rules = rules;
	pending = grow(p->pending, &p->cap_pending, pol->n_rules, sizeof(*pending));
	if (!pending)
		return oom(p);
	p->pending = pending;
	pending[pol->n_rules] = c->pending;
	rules[pol->n_rules++] = c->rule;
	return 0;
}

static int parse_allow(struct policy_parser *p, struct line *l)
{
	struct rule_ctx c = { .rule = { .bar = -1, .file = l->at.file, .line = l->at.line } };
	const struct token *t;
	const char *kind;

	if (p->policy->n_rules >= POLICY_MAX_RULES)
		return fail(p, &l->at, l->tok[0].col, -E2BIG, "too many allow rules (at most %d)",
			    POLICY_MAX_RULES);
	if (parse_subject(p, l, "allow", &c.rule.who) < 0)
		return -EINVAL;
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
	return append_rule(p, &c);
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
	const struct where at = { file, 0 };
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

static int parse_file(struct policy_parser *p, const char *file, const char *text, size_t len)
{
	struct line l = { 0 };
	size_t pos = 0;
	int r;

	r = add_file(p, file, &l.at.file);
	if (r < 0)
		return r;
	if (len > POLICY_MAX_SIZE) {
		const struct where whole = { l.at.file, 0 };
		return fail(p, &whole, 0, -E2BIG, "file is larger than %d bytes", POLICY_MAX_SIZE);
	}
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;

		l.at.line++;
		r = tokenize(p, &l, text + pos, n);
		if (r >= 0)
			r = parse_line(p, &l);
		if (r < 0)
			return r;
		pos += n + 1;
	}
	return 0;
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

/* Runs once every file is read, since a rule may precede its device. */
static int resolve_rules(struct policy_parser *p)
{
	struct policy *pol = p->policy;

	for (size_t i = 0; i < pol->n_rules; i++) {
		struct policy_rule *rule = &pol->rules[i];
		const struct pending *pend = &p->pending[i];
		const struct where at = { rule->file, rule->line };
		int d = policy_find_device(pol, pend->device);

		if (d < 0)
			return fail(p, &at, pend->device_col, -EINVAL,
				    "device \"%s\" is not declared", pend->device);
		rule->device = (size_t)d;
		if (check_rule_bar(p, &at, rule, pend, &pol->devices[d]) < 0)
			return -EINVAL;
	}
	return 0;
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
	free(p->pending);
	free(p->error);
	free(p);
}

int policy_parser_add(struct policy_parser *p, const char *file, const char *text, size_t len)
{
	/* After an error nothing more is read, so that the first error stays the one reported
	 * and no file is parsed against a half-built policy. */
	if (p->err)
		return p->err;
	if (!p->policy)
		return -EINVAL; /* already finished */
	return parse_file(p, file, text, len);
}

int policy_parser_fail(struct policy_parser *p, const char *file, int err, const char *fmt, ...)
{
	const struct where at = { file, 0 };
	va_list ap;

	va_start(ap, fmt);
	record_verror(p, &at, 0, err, fmt, ap);
	va_end(ap);
	return err;
}

int policy_parser_finish(struct policy_parser *p, struct policy **ret_policy, char **ret_error)
{
	int r = p->err;

	if (r == 0 && !p->policy)
		return -EINVAL; /* already finished */
	if (r == 0)
		r = resolve_rules(p);
	if (r < 0) {
		if (ret_error)
			*ret_error = TAKE_PTR(p->error);
		return p->err ? p->err : r;
	}
	*ret_policy = TAKE_PTR(p->policy);
	return 0;
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
	/* An error is kept in the parser, and finish reports it. */
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
	free(policy->devices);
	free(policy->rules);
	free(policy->admins);
	free(policy->observers);
	free(policy);
}

int policy_find_device(const struct policy *policy, const char *name)
{
	for (size_t i = 0; i < policy->n_devices; i++)
		if (strcmp(policy->devices[i].name, name) == 0)
			return (int)i;
	return -ENOENT;
}

/* ---- Evaluation: the grant path, so pure and allocation-free ---- */

static bool subject_matches(const struct policy_subject *s, const struct policy_peer *peer)
{
	if (s->kind == POLICY_USER)
		return s->id == peer->uid;
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

static bool rule_allows(const struct policy_rule *rule, const struct policy_peer *peer,
			size_t device, unsigned bar, const struct range *ranges, size_t n)
{
	if (rule->device != device || (rule->bar >= 0 && (unsigned)rule->bar != bar) ||
	    !subject_matches(&rule->who, peer))
		return false;
	if (!rule->has_range)
		return true;
	/* An empty request means "the whole BAR", which a range-limited rule cannot vouch for. */
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!range_inside(&rule->range, &ranges[i]))
			return false;
	return true;
}

const struct policy_rule *policy_match_export(const struct policy *policy,
					      const struct policy_peer *peer, size_t device,
					      unsigned bar, const struct range *ranges, size_t n,
					      const struct policy_rule *after)
{
	/* Indices, not pointers: an empty policy has no rules array to point into. */
	for (size_t i = after ? (size_t)(after - policy->rules) + 1 : 0; i < policy->n_rules; i++)
		if (rule_allows(&policy->rules[i], peer, device, bar, ranges, n))
			return &policy->rules[i];
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
