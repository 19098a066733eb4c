/* Unit tests of the one size, offset, duration and count grammar (proto/units.c) that the
 * daemon's options, the policy and the CLI share: what each accepts, what each refuses and
 * with which errno, and that every formatted value reads back as itself. Also the bounded
 * string building of proto/text.h, which must write what snprintf would. */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "text.h"
#include "units.h"

/* Written to every result before a parse, so that a failure which wrote it anyway shows. */
#define SENTINEL UINT64_C(0x5a5a5a5a5a5a5a5a)

typedef int parse_fn(const char *s, size_t len, uint64_t *ret);

struct good {
	const char *text;
	uint64_t value;
};

struct bad {
	const char *text;
	int err; /* -EINVAL or -ERANGE */
};

static void assert_good(parse_fn *parse, const char *name, const struct good *g)
{
	uint64_t v = SENTINEL;
	int r = parse(g->text, strlen(g->text), &v);

	ck_assert_msg(r == 0, "%s(\"%s\") = %d, expected 0", name, g->text, r);
	ck_assert_msg(v == g->value, "%s(\"%s\") gave %" PRIu64 ", expected %" PRIu64, name,
		      g->text, v, g->value);
}

static void assert_bad(parse_fn *parse, const char *name, const struct bad *b)
{
	uint64_t v = SENTINEL;
	int r = parse(b->text, strlen(b->text), &v);

	ck_assert_msg(r == b->err, "%s(\"%s\") = %d, expected %d", name, b->text, r, b->err);
	ck_assert_msg(v == SENTINEL, "%s(\"%s\") wrote %" PRIu64 " on failure", name, b->text, v);
}

/* ---- Sizes ---- */

static const struct good good_sizes[] = {
	{ "0", 0 },
	{ "1", 1 },
	{ "4096", 4096 },
	{ "010", 10 }, /* decimal, not octal */
	{ "000000000000000000000000001", 1 },
	{ "1K", 1024 },
	{ "1k", 1024 },
	{ "1KiB", 1024 },
	{ "1kib", 1024 },
	{ "1KIB", 1024 },
	{ "64K", 65536 },
	{ "2M", UINT64_C(2) << 20 },
	{ "2MiB", UINT64_C(2) << 20 },
	{ "3G", UINT64_C(3) << 30 },
	{ "4T", UINT64_C(4) << 40 },
	{ "4tib", UINT64_C(4) << 40 },
	{ "0K", 0 },
	/* The largest of each suffix that still fits in 64 bits. */
	{ "18446744073709551615", UINT64_MAX },
	{ "18014398509481983K", UINT64_MAX - 1023 },
	{ "17592186044415M", UINT64_MAX - ((UINT64_C(1) << 20) - 1) },
	{ "17179869183G", UINT64_MAX - ((UINT64_C(1) << 30) - 1) },
	{ "16777215T", UINT64_MAX - ((UINT64_C(1) << 40) - 1) },
};

static const struct bad bad_sizes[] = {
	{ "", -EINVAL },
	{ "1KB", -EINVAL }, /* decimal units are ambiguous, so refused */
	{ "64kb", -EINVAL },
	{ "1B", -EINVAL },
	{ "1Ki", -EINVAL },
	{ "1KiBs", -EINVAL },
	{ "1KK", -EINVAL },
	{ "1P", -EINVAL },
	{ "K", -EINVAL },
	{ "-1", -EINVAL },
	{ "+1", -EINVAL },
	{ " 1", -EINVAL },
	{ "1 ", -EINVAL },
	{ "1 K", -EINVAL },
	{ "1.5K", -EINVAL },
	{ "1e3", -EINVAL },
	{ "0x10", -EINVAL }, /* hex is for offsets only */
	{ "18446744073709551616", -ERANGE },
	{ "99999999999999999999999", -ERANGE },
	{ "18014398509481984K", -ERANGE },
	{ "17592186044416M", -ERANGE },
	{ "17179869184G", -ERANGE },
	{ "16777216T", -ERANGE },
	{ "16777216TiB", -ERANGE },
};

/* ---- Offsets: sizes, and hex after 0x ---- */

static const struct good good_offsets[] = {
	{ "0", 0 },
	{ "4K", 4096 },
	{ "010", 10 },
	{ "16777215T", UINT64_MAX - ((UINT64_C(1) << 40) - 1) },
	{ "0x0", 0 },
	{ "0x10", 16 },
	{ "0X10", 16 },
	{ "0x1f", 31 },
	{ "0x1F", 31 },
	{ "0xDeadBeef", 0xdeadbeef },
	{ "0x010", 16 },
	{ "0x0000000000000000000000001", 1 },
	{ "0xffffffffffffffff", UINT64_MAX },
};

static const struct bad bad_offsets[] = {
	{ "", -EINVAL },
	{ "0x", -EINVAL },
	{ "0X", -EINVAL },
	{ "0x10K", -EINVAL }, /* no suffix after hex */
	{ "0x10k", -EINVAL },
	{ "0xg", -EINVAL },
	{ "0x1g", -EINVAL },
	{ "0x-1", -EINVAL },
	{ "0x 1", -EINVAL },
	{ " 0x1", -EINVAL },
	{ "0x1 ", -EINVAL },
	{ "x10", -EINVAL },
	{ "00x10", -EINVAL },
	{ "-1", -EINVAL },
	{ "1KB", -EINVAL },
	{ "64kb", -EINVAL },
	{ "0x10000000000000000", -ERANGE },
	{ "0xfffffffffffffffff", -ERANGE },
	{ "18446744073709551616", -ERANGE },
	{ "16777216T", -ERANGE },
};

/* ---- Durations ---- */

static const struct good good_durations[] = {
	{ "0", 0 },
	{ "0ms", 0 },
	{ "0d", 0 },
	{ "1", 1000 }, /* no unit: seconds */
	{ "1ms", 1 },
	{ "1s", 1000 },
	{ "1m", 60000 },
	{ "1h", 3600000 },
	{ "1d", 86400000 },
	{ "500ms", 500 },
	{ "90m", 5400000 },
	{ "010s", 10000 },
	{ "010", 10000 },
	/* The maximum, in each unit that reaches it or comes closest. */
	{ "4294967295", UNITS_DURATION_MAX_MS },
	{ "4294967295s", UNITS_DURATION_MAX_MS },
	{ "4294967295000ms", UNITS_DURATION_MAX_MS },
	{ "71582788m", UINT64_C(71582788) * 60000 },
	{ "1193046h", UINT64_C(1193046) * 3600000 },
	{ "49710d", UINT64_C(49710) * 86400000 },
};

static const struct bad bad_durations[] = {
	{ "", -EINVAL },
	{ "s", -EINVAL },
	{ "ms", -EINVAL },
	{ "1M", -EINVAL }, /* units are lower case: M would read as a size */
	{ "1S", -EINVAL },
	{ "1H", -EINVAL },
	{ "1MS", -EINVAL },
	{ "1sec", -EINVAL },
	{ "1us", -EINVAL },
	{ "1w", -EINVAL },
	{ "1h30m", -EINVAL },
	{ "1.5s", -EINVAL },
	{ "-1", -EINVAL },
	{ "+1s", -EINVAL },
	{ " 1s", -EINVAL },
	{ "1 s", -EINVAL },
	{ "1s ", -EINVAL },
	{ "0x10", -EINVAL },
	{ "4294967296", -ERANGE },
	{ "4294967296s", -ERANGE },
	{ "4294967295001ms", -ERANGE },
	{ "71582789m", -ERANGE },
	{ "1193047h", -ERANGE },
	{ "49711d", -ERANGE },
	{ "99999999999999999999999ms", -ERANGE },
};

START_TEST(test_duration_max)
{
	char text[UNITS_FORMAT_MAX];
	uint64_t v = SENTINEL;

	/* The largest value is accepted to the millisecond, one more is not. */
	snprintf(text, sizeof(text), "%" PRIu64 "ms", UNITS_DURATION_MAX_MS);
	ck_assert_int_eq(units_parse_duration_str(text, &v), 0);
	ck_assert_uint_eq(v, UNITS_DURATION_MAX_MS);
	v = SENTINEL;
	snprintf(text, sizeof(text), "%" PRIu64 "ms", UNITS_DURATION_MAX_MS + 1);
	ck_assert_int_eq(units_parse_duration_str(text, &v), -ERANGE);
	ck_assert_int_eq(units_parse_duration_str(NULL, &v), -EINVAL);
	ck_assert_uint_eq(v, SENTINEL);
}
END_TEST

/* ---- Counts ---- */

static const struct good good_counts[] = {
	{ "0", 0 },
	{ "8", 8 },
	{ "010", 10 },
	{ "18446744073709551615", UINT64_MAX },
};

static const struct bad bad_counts[] = {
	{ "", -EINVAL },    { "8x", -EINVAL },
	{ "1K", -EINVAL },  { "-1", -EINVAL },
	{ "+1", -EINVAL },  { " 1", -EINVAL },
	{ "1 ", -EINVAL },  { "0x10", -EINVAL },
	{ "1.0", -EINVAL }, { "18446744073709551616", -ERANGE },
};

/* ---- Every grammar's tables ---- */

static const struct grammar {
	const char *name;
	parse_fn *parse;
	const struct good *good;
	size_t n_good;
	const struct bad *bad;
	size_t n_bad;
} grammars[] = {
#define GRAMMAR(name, good, bad)                                                                   \
	{                                                                                          \
#name, name, good, ARRAY_SIZE(good), bad, ARRAY_SIZE(bad)                          \
	}
	GRAMMAR(units_parse_size, good_sizes, bad_sizes),
	GRAMMAR(units_parse_offset, good_offsets, bad_offsets),
	GRAMMAR(units_parse_duration, good_durations, bad_durations),
	GRAMMAR(units_parse_count, good_counts, bad_counts),
#undef GRAMMAR
};

START_TEST(test_accepted)
{
	const struct grammar *g = &grammars[_i];

	for (size_t i = 0; i < g->n_good; i++)
		assert_good(g->parse, g->name, &g->good[i]);
}
END_TEST

START_TEST(test_refused)
{
	const struct grammar *g = &grammars[_i];

	for (size_t i = 0; i < g->n_bad; i++)
		assert_bad(g->parse, g->name, &g->bad[i]);
}
END_TEST

/* The parsers read exactly len bytes, so that a caller can parse a token in place; a NUL
 * inside the token is a byte like any other, not its end. */
static const struct {
	const char *name;
	parse_fn *parse;
	const char *text;
	size_t len;
	int r;
	uint64_t value; /* SENTINEL: left untouched */
} slices[] = {
	{ "units_parse_size", units_parse_size, "4Kxyz", 2, 0, 4096 },
	{ "units_parse_size", units_parse_size, "12", 1, 0, 1 },
	{ "units_parse_size", units_parse_size, "1\0", 2, -EINVAL, SENTINEL },
	{ "units_parse_size", units_parse_size, "1K\0", 3, -EINVAL, SENTINEL },
	{ "units_parse_size", units_parse_size, "1", 0, -EINVAL, SENTINEL },
	{ "units_parse_offset", units_parse_offset, "0x10+0x20", 4, 0, 16 },
	{ "units_parse_offset", units_parse_offset, "0x10", 1, 0, 0 }, /* "0" of "0x" */
	{ "units_parse_offset", units_parse_offset, "0x1\0", 4, -EINVAL, SENTINEL },
	{ "units_parse_duration", units_parse_duration, "10m30s", 3, 0, 600000 },
	{ "units_parse_duration", units_parse_duration, "10ms", 3, 0, 600000 },
	{ "units_parse_count", units_parse_count, "123", 2, 0, 12 },
};

START_TEST(test_slice)
{
	uint64_t v = SENTINEL;
	int r = slices[_i].parse(slices[_i].text, slices[_i].len, &v);

	ck_assert_msg(r == slices[_i].r && v == slices[_i].value,
		      "%s(\"%s\", %zu) = %d, %" PRIu64 "; expected %d, %" PRIu64, slices[_i].name,
		      slices[_i].text, slices[_i].len, r, v, slices[_i].r, slices[_i].value);
}
END_TEST

/* The whole-string forms: the same grammar up to the NUL, and NULL refused. */
static const struct {
	const char *name;
	int (*parse)(const char *s, uint64_t *ret);
	const char *text;
	int r;
	uint64_t value;
} strings[] = {
	{ "units_parse_size_str", units_parse_size_str, NULL, -EINVAL, SENTINEL },
	{ "units_parse_size_str", units_parse_size_str, "1KB", -EINVAL, SENTINEL },
	{ "units_parse_size_str", units_parse_size_str, "16777216T", -ERANGE, SENTINEL },
	{ "units_parse_size_str", units_parse_size_str, "010", 0, 10 },
	{ "units_parse_size_str", units_parse_size_str, "2M", 0, 2 << 20 },
	{ "units_parse_offset_str", units_parse_offset_str, NULL, -EINVAL, SENTINEL },
	{ "units_parse_offset_str", units_parse_offset_str, "0x", -EINVAL, SENTINEL },
	{ "units_parse_offset_str", units_parse_offset_str, "0x1000", 0, 4096 },
	{ "units_parse_duration_str", units_parse_duration_str, NULL, -EINVAL, SENTINEL },
	{ "units_parse_duration_str", units_parse_duration_str, "1h", 0, 3600000 },
	{ "units_parse_duration_str", units_parse_duration_str, "1H", -EINVAL, SENTINEL },
};

START_TEST(test_string)
{
	uint64_t v = SENTINEL;
	int r = strings[_i].parse(strings[_i].text, &v);

	ck_assert_msg(r == strings[_i].r && v == strings[_i].value,
		      "%s(\"%s\") = %d, %" PRIu64 "; expected %d, %" PRIu64, strings[_i].name,
		      strings[_i].text ? strings[_i].text : "(null)", r, v, strings[_i].r,
		      strings[_i].value);
}
END_TEST

/* ---- Formatters ---- */

START_TEST(test_format_size)
{
	static const struct good cases[] = {
		{ "0", 0 },
		{ "1", 1 },
		{ "1023", 1023 },
		{ "1K", 1024 },
		{ "1025", 1025 },
		{ "1536", 1536 },
		{ "3K", 3072 },
		{ "64K", 65536 },
		{ "1M", 1 << 20 },
		{ "1025K", (1 << 20) + 1024 },
		{ "3G", UINT64_C(3) << 30 },
		{ "1T", UINT64_C(1) << 40 },
		{ "1024T", UINT64_C(1) << 50 },
		{ "8388608T", UINT64_C(1) << 63 },
		{ "16777215T", UINT64_MAX - ((UINT64_C(1) << 40) - 1) },
		{ "18446744073709551615", UINT64_MAX },
	};
	char buf[UNITS_FORMAT_MAX];

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		ck_assert_ptr_eq(units_format_size(cases[i].value, buf), buf);
		ck_assert_str_eq(buf, cases[i].text);
	}
}
END_TEST

START_TEST(test_format_duration)
{
	static const struct good cases[] = {
		{ "0ms", 0 },	     { "1ms", 1 },	 { "1500ms", 1500 },
		{ "1s", 1000 },	     { "90s", 90000 },	 { "1m", 60000 },
		{ "10m", 600000 },   { "61m", 3660000 }, { "1h", 3600000 },
		{ "25h", 90000000 }, { "1d", 86400000 }, { "4294967295s", UNITS_DURATION_MAX_MS },
	};
	char buf[UNITS_FORMAT_MAX];

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		ck_assert_ptr_eq(units_format_duration(cases[i].value, buf), buf);
		ck_assert_str_eq(buf, cases[i].text);
	}
}
END_TEST

static void assert_size_round_trip(uint64_t v)
{
	char buf[UNITS_FORMAT_MAX];
	uint64_t back = SENTINEL, as_offset = SENTINEL;

	units_format_size(v, buf);
	ck_assert_uint_lt(strlen(buf), UNITS_FORMAT_MAX);
	ck_assert_msg(units_parse_size_str(buf, &back) == 0 && back == v,
		      "%" PRIu64 " formats as \"%s\", which reads back as %" PRIu64, v, buf, back);
	/* Every size is an offset too, with the same value. */
	ck_assert_msg(units_parse_offset_str(buf, &as_offset) == 0 && as_offset == v,
		      "\"%s\" as an offset: %" PRIu64, buf, as_offset);
}

/* Around every power of two (where the suffixes change) and multiples of each suffix. */
START_TEST(test_round_trip_size)
{
	static const uint64_t factors[] = { 1, 3, 5, 7, 1000, 1023, 1025, 123456789 };

	assert_size_round_trip(0);
	assert_size_round_trip(UINT64_MAX);
	for (unsigned shift = 0; shift < 64; shift++) {
		uint64_t p = UINT64_C(1) << shift;
		assert_size_round_trip(p - 1);
		assert_size_round_trip(p);
		assert_size_round_trip(p + 1);
		assert_size_round_trip(UINT64_MAX - p);
	}
	for (unsigned s = 0; s <= 40; s += 10)
		for (size_t i = 0; i < ARRAY_SIZE(factors); i++)
			if (factors[i] <= UINT64_MAX >> s)
				assert_size_round_trip(factors[i] << s);
}
END_TEST

static void assert_duration_round_trip(uint64_t ms)
{
	char buf[UNITS_FORMAT_MAX];
	uint64_t back = SENTINEL;

	units_format_duration(ms, buf);
	ck_assert_uint_lt(strlen(buf), UNITS_FORMAT_MAX);
	ck_assert_msg(units_parse_duration_str(buf, &back) == 0 && back == ms,
		      "%" PRIu64 " ms formats as \"%s\", which reads back as %" PRIu64, ms, buf,
		      back);
}

START_TEST(test_round_trip_duration)
{
	static const uint64_t units[] = { 1, 1000, 60000, 3600000, 86400000 };

	for (uint64_t ms = 0; ms < 5000; ms++)
		assert_duration_round_trip(ms);
	for (size_t u = 0; u < ARRAY_SIZE(units); u++)
		for (uint64_t k = 0; k < 1000; k++) {
			assert_duration_round_trip(k * units[u]);
			assert_duration_round_trip(k * units[u] + 1);
		}
	assert_duration_round_trip(UNITS_DURATION_MAX_MS);
	assert_duration_round_trip(UNITS_DURATION_MAX_MS - 1);
	assert_duration_round_trip(UNITS_DURATION_MAX_MS / 86400000 * 86400000);
}
END_TEST

/* ---- text.h: byte for byte what snprintf writes, at every size that cuts it ---- */

static void assert_like_snprintf(const char *got, size_t got_len, const char *want, int want_n,
				 size_t size)
{
	size_t want_len = (size_t)want_n < size ? (size_t)want_n : size - 1;

	ck_assert_msg(got_len == want_len && memcmp(got, want, want_len + 1) == 0,
		      "size %zu: \"%s\" (%zu), snprintf wrote \"%s\" (%zu)", size, got, got_len,
		      want, want_len);
}

START_TEST(test_text_copy)
{
	static const char *const texts[] = { "", "a", "lab-gpu0", "policy.d/10-gpu.conf:12",
					     "caf\xc3\xa9 \xe2\x80\x94 ok" };
	char got[40], want[40];

	for (size_t t = 0; t < ARRAY_SIZE(texts); t++)
		for (size_t size = 1; size <= sizeof(got); size++) {
			memset(got, 'x', sizeof(got));
			size_t n = text_copy(got, size, texts[t]);
			int w = snprintf(want, size, "%s", texts[t]);
			assert_like_snprintf(got, n, want, w, size);
			ck_assert_msg(size == sizeof(got) || got[size] == 'x',
				      "text_copy wrote past %zu bytes", size);
		}
}
END_TEST

START_TEST(test_text_u64)
{
	static const uint64_t values[] = {
		0, 7, 10, 99, 100, 4096, UINT32_MAX, UINT64_C(1) << 53, UINT64_MAX - 1, UINT64_MAX
	};
	static const char *const prefixes[] = { "", "p2pbuf-lease-" };
	char got[40], want[40];

	for (size_t p = 0; p < ARRAY_SIZE(prefixes); p++)
		for (size_t v = 0; v < ARRAY_SIZE(values); v++)
			for (size_t size = 1; size <= sizeof(got); size++) {
				memset(got, 'x', sizeof(got));
				size_t n = text_u64(got, size, prefixes[p], values[v]);
				int w = snprintf(want, size, "%s%" PRIu64, prefixes[p], values[v]);
				assert_like_snprintf(got, n, want, w, size);
				ck_assert_msg(size == sizeof(got) || got[size] == 'x',
					      "text_u64 wrote past %zu bytes", size);
			}
}
END_TEST

static Suite *units_suite(void)
{
	Suite *s = suite_create("units");
	TCase *tc;

	/* One run per grammar, each through its whole table: messages name the text at fault. */
	tc = tcase_create("grammar");
	tcase_add_loop_test(tc, test_accepted, 0, ARRAY_SIZE(grammars));
	tcase_add_loop_test(tc, test_refused, 0, ARRAY_SIZE(grammars));
	tcase_add_loop_test(tc, test_slice, 0, ARRAY_SIZE(slices));
	tcase_add_loop_test(tc, test_string, 0, ARRAY_SIZE(strings));
	tcase_add_test(tc, test_duration_max);
	suite_add_tcase(s, tc);

	tc = tcase_create("format");
	tcase_add_test(tc, test_format_size);
	tcase_add_test(tc, test_format_duration);
	tcase_add_test(tc, test_round_trip_size);
	tcase_add_test(tc, test_round_trip_duration);
	suite_add_tcase(s, tc);

	tc = tcase_create("text");
	tcase_add_test(tc, test_text_copy);
	tcase_add_test(tc, test_text_u64);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(units_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
