/* The one grammar for sizes and durations, used by p2pbufd's options, the policy file and the
 * CLI alike (p2pbuf-policy(5) documents it for admins):
 *
 *   size      decimal digits, then optionally K, M, G or T (powers of 1024), or the same
 *             letter followed by "iB" (KiB, MiB, ...); case does not matter. "KB" and "B" are
 *             refused: they read as powers of 1000 to some and of 1024 to others. A leading
 *             zero is still decimal ("010" is ten).
 *   offset    a size, or "0x" and hexadecimal digits (no suffix): BAR offsets and lengths.
 *   duration  decimal digits, then ms, s, m, h or d (lower case); no unit means seconds. At
 *             most UNITS_DURATION_MAX_MS.
 *   count     decimal digits only: how many of something (leases, clients), never scaled.
 *
 * The parsers take a length so that callers can parse a token in place; they return 0, or
 * -EINVAL for text outside the grammar and -ERANGE for a value too large. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define UNITS_DURATION_MAX_MS ((uint64_t)UINT32_MAX * 1000) /* about 136 years */
#define UNITS_FORMAT_MAX 32 /* bytes a formatted size or duration needs, with the NUL */

int units_parse_size(const char *s, size_t len, uint64_t *ret_bytes);
int units_parse_offset(const char *s, size_t len, uint64_t *ret_value);
int units_parse_duration(const char *s, size_t len, uint64_t *ret_ms);
int units_parse_count(const char *s, size_t len, uint64_t *ret_count);

/* Whole-string forms of the same, for NUL-terminated arguments. */
int units_parse_size_str(const char *s, uint64_t *ret_bytes);
int units_parse_offset_str(const char *s, uint64_t *ret_value);
int units_parse_duration_str(const char *s, uint64_t *ret_ms);

/* The shortest exact form that the parser reads back as the same value: "64K", "3M",
 * "4097"; "1500ms", "90s", "10m". Returns buf. */
char *units_format_size(uint64_t bytes, char buf[UNITS_FORMAT_MAX]);
char *units_format_duration(uint64_t ms, char buf[UNITS_FORMAT_MAX]);
