/* The BAR model's pure checks: what may be exported from a BAR. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "device.h"

uint64_t device_page_size(void)
{
	long ps = sysconf(_SC_PAGESIZE);

	return ps > 0 ? (uint64_t)ps : 4096;
}

/* The page-rounded span of an MSI-X structure: the kernel exports whole pages, so a range
 * that touches any page of the table or PBA would expose it. */
static struct range msix_pages(struct range r, uint64_t page)
{
	uint64_t start = r.offset & ~(page - 1);
	uint64_t end = (r.offset + r.length + page - 1) & ~(page - 1);

	return (struct range){ .offset = start, .length = end - start };
}

static bool overlaps(const struct range *a, const struct range *b)
{
	return a->length && b->length && a->offset < b->offset + b->length &&
	       b->offset < a->offset + a->length;
}

/* -EADDRNOTAVAIL if r (on BAR bar) touches a page of the MSI-X table or PBA. */
static int check_msix(const struct device_msix *msix, unsigned bar, const struct range *r,
		      uint64_t page, size_t i, char *msg, size_t msglen)
{
	if (!msix->present)
		return 0;
	struct range table = msix_pages(msix->table, page);
	struct range pba = msix_pages(msix->pba, page);
	const char *what = NULL;
	const struct range *hit = NULL;

	if (msix->table_bar == bar && overlaps(r, &table)) {
		what = "MSI-X table";
		hit = &table;
	} else if (msix->pba_bar == bar && overlaps(r, &pba)) {
		what = "MSI-X PBA";
		hit = &pba;
	}
	if (!what)
		return 0;
	snprintf(msg, msglen,
		 "range %zu (0x%" PRIx64 "+0x%" PRIx64 ") overlaps the %s pages at 0x%" PRIx64
		 "+0x%" PRIx64 " of BAR %u, which are never exported",
		 i, r->offset, r->length, what, hit->offset, hit->length, bar);
	return -EADDRNOTAVAIL;
}

static int check_one(const struct device_info *info, unsigned bar, const struct range *r,
		     uint64_t page, size_t i, char *msg, size_t msglen)
{
	uint64_t bar_size = info->bars[bar].size;

	if (r->length == 0) {
		snprintf(msg, msglen, "range %zu has length 0", i);
		return -EINVAL;
	}
	if ((r->offset | r->length) & (page - 1)) {
		snprintf(msg, msglen,
			 "range %zu (0x%" PRIx64 "+0x%" PRIx64 ") is not aligned to the page "
			 "size 0x%" PRIx64,
			 i, r->offset, r->length, page);
		return -EINVAL;
	}
	if (r->offset >= bar_size || r->length > bar_size - r->offset) {
		snprintf(msg, msglen,
			 "range %zu (0x%" PRIx64 "+0x%" PRIx64 ") is outside BAR %u "
			 "(size 0x%" PRIx64 ")",
			 i, r->offset, r->length, bar, bar_size);
		return -ERANGE;
	}
	return check_msix(&info->msix, bar, r, page, i, msg, msglen);
}

/* -EINVAL if two ranges share a byte: the buffer would map it twice and its size would
 * count it twice. n is at most WIRE_MAX_RANGES, so comparing every pair is cheap. */
static int check_overlaps(const struct range *ranges, size_t n, char *msg, size_t msglen)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++) {
			const struct range *a = &ranges[i], *b = &ranges[j];
			if (!overlaps(a, b))
				continue;
			snprintf(msg, msglen,
				 "ranges %zu (0x%" PRIx64 "+0x%" PRIx64 ") and %zu (0x%" PRIx64
				 "+0x%" PRIx64 ") overlap",
				 i, a->offset, a->length, j, b->offset, b->length);
			return -EINVAL;
		}
	return 0;
}

int device_check_ranges(const struct device_info *info, unsigned bar, const struct range *ranges,
			size_t n, uint64_t page_size, uint64_t max_size, uint64_t *ret_size,
			char *msg, size_t msglen)
{
	uint64_t total = 0;

	if (bar >= DEVICE_MAX_BARS || info->bars[bar].size == 0 || info->bars[bar].is_io) {
		snprintf(msg, msglen, "BAR %u does not exist or is not a memory BAR", bar);
		return -ENXIO;
	}
	if (n == 0) {
		snprintf(msg, msglen, "no ranges given");
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		int r = check_one(info, bar, &ranges[i], page_size, i, msg, msglen);
		if (r < 0)
			return r;
		/* Each length is at most the BAR size (< 2^64), but their sum may wrap. */
		if (total + ranges[i].length < total) {
			snprintf(msg, msglen, "total size of the ranges overflows");
			return -EINVAL;
		}
		total += ranges[i].length;
	}
	int r = check_overlaps(ranges, n, msg, msglen);
	if (r < 0)
		return r;
	if (max_size && total > max_size) {
		snprintf(msg, msglen,
			 "total size 0x%" PRIx64 " exceeds the limit of 0x%" PRIx64 " per lease",
			 total, max_size);
		return -EFBIG;
	}
	*ret_size = total;
	return 0;
}
