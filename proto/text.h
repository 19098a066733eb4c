/* Bounded string building for the grant path, where snprintf's formatting machinery costs
 * more than the work around it (about 600 instructions for a "%s" copy or one number, three
 * of them per export): the same results, cut to fit and always terminated. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* What snprintf(dst, size, "%s", src) writes (size > 0): src cut to size - 1 bytes. Returns
 * the bytes written before the terminator. */
static inline size_t text_copy(char *dst, size_t size, const char *src)
{
	size_t n = strnlen(src, size - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
	return n;
}

/* What snprintf(dst, size, "%s%" PRIu64, prefix, v) writes (size > 0). Returns the bytes
 * written before the terminator. */
static inline size_t text_u64(char *dst, size_t size, const char *prefix, uint64_t v)
{
	char digits[20]; /* UINT64_MAX has 20 */
	size_t n = 0, at = text_copy(dst, size, prefix);

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n > 0 && at + 1 < size)
		dst[at++] = digits[--n];
	dst[at] = '\0';
	return at;
}
