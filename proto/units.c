#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "macro.h"
#include "units.h"

/* Digits of base 10 or 16 at s; how many were read goes to *ret_used. */
static int parse_digits(const char *s, size_t len, unsigned base, uint64_t *ret_value,
			size_t *ret_used)
{
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < len; i++) {
		char c = s[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (base == 16 && c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (base == 16 && c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			break;
		if (v > (UINT64_MAX - d) / base)
			return -ERANGE;
		v = v * base + d;
	}
	if (i == 0)
		return -EINVAL;
	*ret_value = v;
	*ret_used = i;
	return 0;
}

static bool word_is(const char *s, size_t len, const char *word)
{
	return len == strlen(word) && strncasecmp(s, word, len) == 0;
}

int units_parse_size(const char *s, size_t len, uint64_t *ret_bytes)
{
	static const char letters[] = "KMGT";
	uint64_t v;
	size_t used;
	unsigned shift = 0;
	int r = parse_digits(s, len, 10, &v, &used);

	if (r < 0)
		return r;
	s += used;
	len -= used;
	if (len > 0) {
		const char *p = memchr(letters, s[0] & ~0x20, sizeof(letters) - 1);
		if (!p || !(len == 1 || word_is(s + 1, len - 1, "iB")))
			return -EINVAL;
		shift = 10 * (unsigned)(p - letters + 1);
	}
	if (v > UINT64_MAX >> shift)
		return -ERANGE;
	*ret_bytes = v << shift;
	return 0;
}

int units_parse_offset(const char *s, size_t len, uint64_t *ret_value)
{
	uint64_t v;
	size_t used;

	if (len < 2 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
		return units_parse_size(s, len, ret_value);
	int r = parse_digits(s + 2, len - 2, 16, &v, &used);
	if (r < 0)
		return r;
	if (used != len - 2)
		return -EINVAL;
	*ret_value = v;
	return 0;
}

static const struct duration_unit {
	const char *name;
	uint64_t ms;
} duration_units[] = {
	/* Largest first: the formatter picks the first that divides exactly. */
	{ "d", 86400000 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 }, { "ms", 1 },
};

int units_parse_duration(const char *s, size_t len, uint64_t *ret_ms)
{
	uint64_t v, unit = 1000;
	size_t used;
	int r = parse_digits(s, len, 10, &v, &used);

	if (r < 0)
		return r;
	if (used < len) {
		size_t i;
		for (i = 0; i < ARRAY_SIZE(duration_units); i++)
			if (len - used == strlen(duration_units[i].name) &&
			    memcmp(s + used, duration_units[i].name, len - used) == 0)
				break;
		if (i == ARRAY_SIZE(duration_units))
			return -EINVAL;
		unit = duration_units[i].ms;
	}
	if (v > UNITS_DURATION_MAX_MS / unit)
		return -ERANGE;
	*ret_ms = v * unit;
	return 0;
}

int units_parse_count(const char *s, size_t len, uint64_t *ret_count)
{
	uint64_t v;
	size_t used;
	int r = parse_digits(s, len, 10, &v, &used);

	if (r < 0)
		return r;
	if (used != len)
		return -EINVAL;
	*ret_count = v;
	return 0;
}

int units_parse_size_str(const char *s, uint64_t *ret_bytes)
{
	return s ? units_parse_size(s, strlen(s), ret_bytes) : -EINVAL;
}

int units_parse_offset_str(const char *s, uint64_t *ret_value)
{
	return s ? units_parse_offset(s, strlen(s), ret_value) : -EINVAL;
}

int units_parse_duration_str(const char *s, uint64_t *ret_ms)
{
	return s ? units_parse_duration(s, strlen(s), ret_ms) : -EINVAL;
}

char *units_format_size(uint64_t bytes, char buf[UNITS_FORMAT_MAX])
{
	static const char letters[] = "KMGT";
	int i;

	for (i = 3; i >= 0; i--) {
		unsigned shift = 10 * (unsigned)(i + 1);
		if (bytes && bytes % (UINT64_C(1) << shift) == 0) {
			snprintf(buf, UNITS_FORMAT_MAX, "%" PRIu64 "%c", bytes >> shift,
				 letters[i]);
			return buf;
		}
	}
	snprintf(buf, UNITS_FORMAT_MAX, "%" PRIu64, bytes);
	return buf;
}

char *units_format_duration(uint64_t ms, char buf[UNITS_FORMAT_MAX])
{
	for (size_t i = 0; i < ARRAY_SIZE(duration_units); i++) {
		if (ms % duration_units[i].ms == 0 && (ms || duration_units[i].ms == 1)) {
			snprintf(buf, UNITS_FORMAT_MAX, "%" PRIu64 "%s", ms / duration_units[i].ms,
				 duration_units[i].name);
			return buf;
		}
	}
	return buf; /* not reached: every value is a whole number of ms */
}
