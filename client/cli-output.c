/* Output of p2pbuf-client: text made safe for terminals, tables for people, and the one JSON
 * writer with the one JSON shape of every object (p2pbuf-client(1), JSON OUTPUT). */
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

/* Length of the valid UTF-8 sequence at s, or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s)
{
	size_t n;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	/* overlong forms, surrogates, beyond Unicode */
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* U+0080..U+009F: C1 controls, which some terminals act on like ESC sequences. */
static bool is_c1(const unsigned char *p, size_t n)
{
	return n == 2 && p[0] == 0xc2 && p[1] < 0xa0;
}

char *cli_escape_text(const char *s, bool quote)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	char *out = malloc(strlen((const char *)p) * 4 + 1), *o = out;

	if (!out)
		cli_oom();
	while (*p) {
		size_t n = utf8_len(p);
		if (n == 0 || is_c1(p, n) || *p < 0x20 || *p == 0x7f) {
			for (size_t i = 0; i < (n ? n : 1); i++)
				o += sprintf(o, "\\x%02x", *p++);
		} else if (quote && (*p == '"' || *p == '\\')) {
			*o++ = '\\';
			*o++ = (char)*p++;
		} else {
			memcpy(o, p, n);
			o += n;
			p += n;
		}
	}
	*o = '\0';
	return out;
}

void cli_format_time(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%" PRId64, ms);
}

/* ---- tables ---- */

static void table_add(struct table *t, char *cell)
{
	char **c = realloc(t->cells, (t->ncells + 1) * sizeof(*c));

	if (!c)
		cli_oom();
	t->cells = c;
	t->cells[t->ncells++] = cell;
}

void table_cell(struct table *t, const char *fmt, ...)
{
	_cleanup_free_ char *s = NULL;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		cli_oom();
	table_add(t, cli_escape_text(s, false));
}

void table_header(struct table *t, const char *const *names, size_t n)
{
	t->ncols = n;
	for (size_t i = 0; i < n; i++)
		table_cell(t, "%s", names[i]);
}

/* The last column is not padded, so that lines carry no trailing blanks. */
void table_print(const struct table *t)
{
	size_t width[16] = { 0 };

	assert(t->ncols <= ARRAY_SIZE(width));
	for (size_t i = 0; i < t->ncells; i++) {
		size_t w = strlen(t->cells[i]), c = i % t->ncols;
		if (w > width[c])
			width[c] = w;
	}
	for (size_t i = 0; i < t->ncells; i++) {
		size_t c = i % t->ncols;
		if (c + 1 < t->ncols)
			printf("%-*s  ", (int)width[c], t->cells[i]);
		else
			printf("%s\n", t->cells[i]);
	}
}

void table_free(struct table *t)
{
	for (size_t i = 0; i < t->ncells; i++)
		free(t->cells[i]);
	free(t->cells);
}

/* ---- the JSON writer ---- */

static void json_char(unsigned char c)
{
	switch (c) {
	case '"':
		fputs("\\\"", stdout);
		break;
	case '\\':
		fputs("\\\\", stdout);
		break;
	case '\n':
		fputs("\\n", stdout);
		break;
	case '\r':
		fputs("\\r", stdout);
		break;
	case '\t':
		fputs("\\t", stdout);
		break;
	default:
		if (c < 0x20 || c == 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
}

/* Valid JSON whatever the daemon sent: bytes that are not UTF-8 become U+FFFD; controls (C0,
 * DEL, C1) and U+2028/U+2029, which JavaScript does not take raw, are written as \uXXXX. */
static void json_write_string(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	putchar('"');
	while (*p) {
		size_t n = utf8_len(p);
		if (n == 0) {
			fputs("\\ufffd", stdout);
			n = 1;
		} else if (n == 1) {
			json_char(*p);
		} else if (is_c1(p, n)) {
			printf("\\u%04x", p[1]);
		} else if (n == 3 && p[0] == 0xe2 && p[1] == 0x80 &&
			   (p[2] == 0xa8 || p[2] == 0xa9)) {
			printf("\\u%04x", 0x2000 | (p[2] & 0x3f));
		} else {
			fwrite(p, 1, n, stdout);
		}
		p += n;
	}
	putchar('"');
}

/* The comma before every value but the first of its container, and its key. */
static void json_sep(struct json *j, const char *key)
{
	if (j->depth > 0) {
		if (!j->first[j->depth - 1])
			putchar(',');
		j->first[j->depth - 1] = false;
	}
	if (key) {
		json_write_string(key);
		putchar(':');
	}
}

void json_begin(struct json *j, const char *key, char open)
{
	json_sep(j, key);
	putchar(open);
	assert(j->depth < JSON_MAX_DEPTH);
	j->first[j->depth++] = true;
}

void json_end(struct json *j, char close)
{
	assert(j->depth > 0);
	j->depth--;
	putchar(close);
}

void json_str(struct json *j, const char *key, const char *value)
{
	json_sep(j, key);
	if (value)
		json_write_string(value);
	else
		fputs("null", stdout);
}

void json_u64(struct json *j, const char *key, uint64_t value)
{
	json_sep(j, key);
	printf("%" PRIu64, value);
}

void json_i64(struct json *j, const char *key, int64_t value)
{
	json_sep(j, key);
	printf("%" PRId64, value);
}

void json_bool(struct json *j, const char *key, bool value)
{
	json_sep(j, key);
	fputs(value ? "true" : "false", stdout);
}

void json_null(struct json *j, const char *key)
{
	json_sep(j, key);
	fputs("null", stdout);
}

void json_doc_begin(struct json *j)
{
	*j = (struct json){ 0 };
	json_begin(j, NULL, '{');
}

/* One document per line, flushed, so that a reader of export and watch sees each at once. */
void json_doc_end(struct json *j)
{
	json_end(j, '}');
	assert(j->depth == 0);
	putchar('\n');
	fflush(stdout);
}

/* ---- the shape of each object ---- */

void json_nonzero(struct json *j, const char *key, int64_t ms)
{
	if (ms)
		json_i64(j, key, ms);
	else
		json_null(j, key);
}

/* A name from the library, null for its "unspecified" value (0). */
static void json_name(struct json *j, const char *key, int value, const char *name)
{
	json_str(j, key, value ? name : NULL);
}

static void json_ranges(struct json *j, const char *key, const struct p2pbuf_range *r, size_t n)
{
	json_begin(j, key, '[');
	for (size_t i = 0; i < n; i++) {
		json_begin(j, NULL, '{');
		json_u64(j, "offset", r[i].offset);
		json_u64(j, "length", r[i].length);
		json_end(j, '}');
	}
	json_end(j, ']');
}

void json_device(struct json *j, const char *key, const struct p2pbuf_device *d)
{
	json_begin(j, key, '{');
	json_str(j, "name", d->name);
	json_str(j, "backend", d->backend);
	json_str(j, "address", d->address);
	json_bool(j, "simulated", d->simulated);
	json_name(j, "state", d->state, p2pbuf_device_state_name(d->state));
	json_u64(j, "generation", d->generation);
	json_u64(j, "lease_count", d->leases);
	json_str(j, "message", d->message);
	json_begin(j, "bars", '[');
	for (size_t i = 0; i < d->n_bars; i++) {
		const struct p2pbuf_bar *b = &d->bars[i];
		json_begin(j, NULL, '{');
		json_u64(j, "index", b->index);
		json_u64(j, "size", b->size);
		json_bool(j, "is_64bit", b->is_64bit);
		json_bool(j, "prefetchable", b->prefetchable);
		json_ranges(j, "reserved", b->reserved, b->n_reserved);
		json_end(j, '}');
	}
	json_end(j, ']');
	json_end(j, '}');
}

void json_lease(struct json *j, const char *key, const struct p2pbuf_lease *l)
{
	json_begin(j, key, '{');
	json_u64(j, "id", l->id);
	json_str(j, "device", l->device);
	json_u64(j, "bar", l->bar);
	json_ranges(j, "ranges", l->ranges, l->n_ranges);
	json_u64(j, "size", l->size);
	json_str(j, "label", l->label);
	json_name(j, "state", l->state, p2pbuf_lease_state_name(l->state));
	json_name(j, "reason", l->reason, p2pbuf_reason_name(l->reason));
	json_u64(j, "owner_uid", l->owner_uid);
	json_nonzero(j, "owner_pid", l->owner_pid);
	json_str(j, "owner_unit", l->owner_unit);
	json_nonzero(j, "created_ms", l->created_ms);
	json_nonzero(j, "expires_ms", l->expires_ms);
	if (l->holders >= 0)
		json_i64(j, "holders", l->holders);
	else
		json_null(j, "holders");
	json_str(j, "rule", l->rule && l->rule[0] ? l->rule : NULL);
	json_u64(j, "generation", l->generation);
	json_nonzero(j, "deadline_ms", l->deadline_ms);
	json_bool(j, "lingering", l->lingering);
	json_end(j, '}');
}

/* Events carry the part of a lease or device object that the daemon's event tells. */
void json_event(struct json *j, const struct p2pbuf_event *ev, int64_t now_ms)
{
	json_doc_begin(j);
	switch (ev->type) {
	case P2PBUF_EVENT_LEASE_REVOKING:
	case P2PBUF_EVENT_LEASE_REVOKED: {
		bool revoking = ev->type == P2PBUF_EVENT_LEASE_REVOKING;
		json_str(j, "event", revoking ? "lease-revoking" : "lease-revoked");
		json_i64(j, "time_ms", now_ms);
		json_begin(j, "lease", '{');
		json_u64(j, "id", ev->lease_id);
		json_str(
		    j, "state",
		    p2pbuf_lease_state_name(revoking ? P2PBUF_LEASE_REVOKING : P2PBUF_LEASE_ENDED));
		json_name(j, "reason", ev->reason, p2pbuf_reason_name(ev->reason));
		if (revoking)
			json_nonzero(j, "deadline_ms", ev->deadline_ms);
		json_end(j, '}');
		break;
	}
	case P2PBUF_EVENT_DEVICE_STATE:
		json_str(j, "event", "device-state");
		json_i64(j, "time_ms", now_ms);
		json_begin(j, "device", '{');
		json_str(j, "name", ev->device);
		json_name(j, "state", ev->state, p2pbuf_device_state_name(ev->state));
		json_u64(j, "generation", ev->generation);
		json_str(j, "message", ev->message);
		json_end(j, '}');
		break;
	case P2PBUF_EVENT_RECONNECTED:
		json_str(j, "event", "reconnected");
		json_i64(j, "time_ms", now_ms);
		json_u64(j, "reclaimed", ev->reclaimed);
		break;
	}
	json_doc_end(j);
}
