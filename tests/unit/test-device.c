/* Unit tests for device_check_ranges(): which ranges of a BAR may be exported. Every refusal
 * is checked for its errno and for what its message tells the client. */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "device.h"

#define PAGE 4096ULL
#define BIG_PAGE 65536ULL
#define SENTINEL 0xdeadbeefULL

/* BAR 0: 64 KiB, MSI-X table at 0x2100+0x100 (so pages 0x2000..0x3000 are reserved).
 * BAR 1: upper half of BAR 0 (size 0). BAR 2: 1 MiB, PBA at 0x8000+0x8.
 * BAR 3: 1 MiB, nothing reserved. BAR 4: I/O. BAR 5: absent. */
static struct device_info make_info(void)
{
	struct device_info info;

	memset(&info, 0, sizeof(info));
	info.bars[0] = (struct device_bar){ .size = 0x10000, .is_64bit = true };
	info.bars[2] = (struct device_bar){ .size = 0x100000, .prefetchable = true };
	info.bars[3] = (struct device_bar){ .size = 0x100000 };
	info.bars[4] = (struct device_bar){ .size = 0x100, .is_io = true };
	info.msix.present = true;
	info.msix.table_bar = 0;
	info.msix.table = (struct range){ .offset = 0x2100, .length = 0x100 };
	info.msix.pba_bar = 2;
	info.msix.pba = (struct range){ .offset = 0x8000, .length = 0x8 };
	return info;
}

static char msg[512];
static uint64_t size_out;

/* Check ranges[0..n) of bar with a 4 KiB page and no size cap; msg and size_out get the
 * results. A failure must explain itself and must not write the size. */
static int check_n(const struct device_info *info, unsigned bar, const struct range *ranges,
		   size_t n, uint64_t page, uint64_t max_size)
{
	msg[0] = '\0';
	size_out = SENTINEL;
	int r =
	    device_check_ranges(info, bar, ranges, n, page, max_size, &size_out, msg, sizeof(msg));
	if (r < 0) {
		ck_assert_msg(msg[0] != '\0', "error %d without a message", r);
		ck_assert_uint_eq(size_out, SENTINEL);
	}
	return r;
}

static int check1(unsigned bar, uint64_t offset, uint64_t length)
{
	struct device_info info = make_info();
	struct range r = { .offset = offset, .length = length };

	return check_n(&info, bar, &r, 1, PAGE, 0);
}

#define assert_msg_has(s) ck_assert_msg(strstr(msg, (s)), "\"%s\" lacks \"%s\"", msg, (s))

START_TEST(test_page_size)
{
	uint64_t ps = device_page_size();

	ck_assert_uint_eq(ps, (uint64_t)sysconf(_SC_PAGESIZE));
	ck_assert_uint_eq(ps & (ps - 1), 0);
}
END_TEST

START_TEST(test_valid)
{
	ck_assert_int_eq(check1(0, 0, 0x1000), 0);
	ck_assert_uint_eq(size_out, 0x1000);
	ck_assert_int_eq(check1(3, 0, 0x100000), 0);
	ck_assert_uint_eq(size_out, 0x100000);
}
END_TEST

START_TEST(test_no_such_bar)
{
	ck_assert_int_eq(check1(1, 0, 0x1000), -ENXIO);
	assert_msg_has("BAR 1");
	ck_assert_int_eq(check1(5, 0, 0x1000), -ENXIO);
	assert_msg_has("BAR 5");
	ck_assert_int_eq(check1(DEVICE_MAX_BARS, 0, 0x1000), -ENXIO);
	ck_assert_int_eq(check1(UINT_MAX, 0, 0x1000), -ENXIO);
}
END_TEST

START_TEST(test_io_bar)
{
	ck_assert_int_eq(check1(4, 0, 0x1000), -ENXIO);
	assert_msg_has("BAR 4");
	assert_msg_has("memory BAR");
}
END_TEST

START_TEST(test_no_ranges)
{
	struct device_info info = make_info();

	ck_assert_int_eq(check_n(&info, 0, NULL, 0, PAGE, 0), -EINVAL);
	assert_msg_has("no ranges");
}
END_TEST

START_TEST(test_empty_range)
{
	ck_assert_int_eq(check1(0, 0, 0), -EINVAL);
	assert_msg_has("range 0");
	assert_msg_has("length 0");
}
END_TEST

START_TEST(test_unaligned)
{
	ck_assert_int_eq(check1(3, 0x800, 0x1000), -EINVAL);
	assert_msg_has("not aligned");
	assert_msg_has("0x800+0x1000");
	ck_assert_int_eq(check1(3, 0x1000, 0x1800), -EINVAL);
	assert_msg_has("not aligned");
	ck_assert_int_eq(check1(3, 0x1000, 1), -EINVAL);
	ck_assert_int_eq(check1(3, 1, 0x1000), -EINVAL);
}
END_TEST

START_TEST(test_bar_end)
{
	/* Ends exactly at the end of the BAR. */
	ck_assert_int_eq(check1(3, 0xff000, 0x1000), 0);
	ck_assert_int_eq(check1(3, 0x80000, 0x80000), 0);
	/* One page past it. */
	ck_assert_int_eq(check1(3, 0xff000, 0x2000), -ERANGE);
	assert_msg_has("outside BAR 3");
	assert_msg_has("0x100000");
	ck_assert_int_eq(check1(3, 0, 0x101000), -ERANGE);
	ck_assert_int_eq(check1(3, 0x100000, 0x1000), -ERANGE);
	ck_assert_int_eq(check1(3, 0x200000, 0x1000), -ERANGE);
}
END_TEST

/* offset + length wraps around 2^64: whatever the errno, never a success. */
START_TEST(test_overflow)
{
	const uint64_t top = UINT64_MAX & ~(PAGE - 1);
	struct device_info info = make_info();
	struct range r;
	int e;

	e = check1(3, top, 0x2000);
	ck_assert_msg(e == -ERANGE || e == -EINVAL, "got %d", e);
	e = check1(3, 0x1000, top);
	ck_assert_msg(e == -ERANGE || e == -EINVAL, "got %d", e);
	e = check1(3, top, top);
	ck_assert_msg(e == -ERANGE || e == -EINVAL, "got %d", e);

	/* A BAR as large as a uint64_t allows: the wrap must still be caught. */
	info.bars[3].size = top;
	r = (struct range){ .offset = 0x2000, .length = top };
	e = check_n(&info, 3, &r, 1, PAGE, 0);
	ck_assert_msg(e == -ERANGE || e == -EINVAL, "got %d", e);
	r = (struct range){ .offset = top - 0x1000, .length = 0x2000 };
	e = check_n(&info, 3, &r, 1, PAGE, 0);
	ck_assert_msg(e == -ERANGE || e == -EINVAL, "got %d", e);
	r = (struct range){ .offset = top - 0x1000, .length = 0x1000 };
	ck_assert_int_eq(check_n(&info, 3, &r, 1, PAGE, 0), 0);
}
END_TEST

/* Each range fits, but their sum does not fit a uint64_t. */
START_TEST(test_total_overflow)
{
	struct device_info info = make_info();
	const uint64_t half = 1ULL << 63;
	struct range r[3] = {
		{ .offset = 0, .length = half },
		{ .offset = 0, .length = half },
		{ .offset = 0, .length = half },
	};

	/* Each range fits the BAR on its own; only the sum wraps, and device_check_ranges reports
	 * that as a malformed request (-EINVAL), not as too large (-EFBIG: there is no cap here)
	 * nor outside the BAR (-ERANGE). */
	info.bars[3].size = half;
	ck_assert_int_eq(check_n(&info, 3, r, 3, PAGE, 0), -EINVAL);
	assert_msg_has("total size of the ranges overflows");
	ck_assert_int_eq(check_n(&info, 3, r, 2, PAGE, 0), -EINVAL);
	assert_msg_has("total size of the ranges overflows");
	/* One range less does not wrap: the check above is about the sum, not each range. */
	ck_assert_int_eq(check_n(&info, 3, r, 1, PAGE, 0), 0);
	ck_assert_uint_eq(size_out, half);
}
END_TEST

/* The table at 0x2100+0x100 reserves the whole page 0x2000..0x3000 and nothing else. */
START_TEST(test_msix_table_pages)
{
	ck_assert_int_eq(check1(0, 0x1000, 0x1000), 0);
	ck_assert_int_eq(check1(0, 0x3000, 0x1000), 0);
	ck_assert_int_eq(check1(0, 0x0, 0x2000), 0);
	ck_assert_int_eq(check1(0, 0x3000, 0xd000), 0);

	ck_assert_int_eq(check1(0, 0x2000, 0x1000), -EADDRNOTAVAIL);
	assert_msg_has("MSI-X table");
	assert_msg_has("0x2000+0x1000");
	assert_msg_has("BAR 0");
	assert_msg_has("range 0");
	ck_assert_int_eq(check1(0, 0x1000, 0x2000), -EADDRNOTAVAIL);
	ck_assert_int_eq(check1(0, 0x0, 0x10000), -EADDRNOTAVAIL);
	ck_assert_int_eq(check1(0, 0x2000, 0x2000), -EADDRNOTAVAIL);
}
END_TEST

/* A table that crosses a page boundary reserves both pages; one ending on a boundary does
 * not reserve the next page. */
START_TEST(test_msix_table_straddles)
{
	struct device_info info = make_info();
	struct range r;

	info.msix.table = (struct range){ .offset = 0x2ff8, .length = 0x10 };
	r = (struct range){ .offset = 0x3000, .length = 0x1000 };
	ck_assert_int_eq(check_n(&info, 0, &r, 1, PAGE, 0), -EADDRNOTAVAIL);
	assert_msg_has("0x2000+0x2000");
	r = (struct range){ .offset = 0x4000, .length = 0x1000 };
	ck_assert_int_eq(check_n(&info, 0, &r, 1, PAGE, 0), 0);

	info.msix.table = (struct range){ .offset = 0x2000, .length = 0x1000 };
	r = (struct range){ .offset = 0x3000, .length = 0x1000 };
	ck_assert_int_eq(check_n(&info, 0, &r, 1, PAGE, 0), 0);
	r = (struct range){ .offset = 0x1000, .length = 0x1000 };
	ck_assert_int_eq(check_n(&info, 0, &r, 1, PAGE, 0), 0);
	r = (struct range){ .offset = 0x2000, .length = 0x1000 };
	ck_assert_int_eq(check_n(&info, 0, &r, 1, PAGE, 0), -EADDRNOTAVAIL);
}
END_TEST

/* The PBA lives on BAR 2, the table on BAR 0: each is reserved only on its own BAR. */
START_TEST(test_msix_pba_other_bar)
{
	ck_assert_int_eq(check1(2, 0x8000, 0x1000), -EADDRNOTAVAIL);
	assert_msg_has("MSI-X PBA");
	assert_msg_has("0x8000+0x1000");
	assert_msg_has("BAR 2");
	ck_assert_int_eq(check1(2, 0x0, 0x100000), -EADDRNOTAVAIL);
	ck_assert_int_eq(check1(2, 0x7000, 0x1000), 0);
	ck_assert_int_eq(check1(2, 0x9000, 0x1000), 0);
	/* The table's offsets are free on the PBA's BAR, and the PBA's on the table's. */
	ck_assert_int_eq(check1(2, 0x2000, 0x1000), 0);
	ck_assert_int_eq(check1(0, 0x8000, 0x1000), 0);
	/* BAR 3 has neither. */
	ck_assert_int_eq(check1(3, 0x0, 0x100000), 0);
}
END_TEST

/* Table and PBA on the same BAR, on different pages: both are reserved. */
START_TEST(test_msix_same_bar)
{
	struct device_info info = make_info();
	struct range r;

	info.msix.pba_bar = 0;
	info.msix.pba = (struct range){ .offset = 0x3000, .length = 0x8 };
	r = (struct range){ .offset = 0x3000, .length = 0x1000 };
	ck_assert_int_eq(check_n(&info, 0, &r, 1, PAGE, 0), -EADDRNOTAVAIL);
	assert_msg_has("MSI-X PBA");
	r = (struct range){ .offset = 0x2000, .length = 0x1000 };
	ck_assert_int_eq(check_n(&info, 0, &r, 1, PAGE, 0), -EADDRNOTAVAIL);
	assert_msg_has("MSI-X table");
	r = (struct range){ .offset = 0x4000, .length = 0xc000 };
	ck_assert_int_eq(check_n(&info, 0, &r, 1, PAGE, 0), 0);
	r = (struct range){ .offset = 0x2000, .length = 0x2000 };
	ck_assert_int_eq(check_n(&info, 0, &r, 1, PAGE, 0), -EADDRNOTAVAIL);
}
END_TEST

START_TEST(test_msix_absent)
{
	struct device_info info = make_info();
	struct range r = { .offset = 0x2000, .length = 0x1000 };

	info.msix.present = false;
	ck_assert_int_eq(check_n(&info, 0, &r, 1, PAGE, 0), 0);
	r = (struct range){ .offset = 0x8000, .length = 0x1000 };
	ck_assert_int_eq(check_n(&info, 2, &r, 1, PAGE, 0), 0);
}
END_TEST

/* With 64 KiB pages the table at 0x2100 reserves all of 0x0..0x10000. */
START_TEST(test_big_page)
{
	struct device_info info = make_info();
	struct range r;

	r = (struct range){ .offset = 0x10000, .length = 0x10000 };
	ck_assert_int_eq(check_n(&info, 3, &r, 1, BIG_PAGE, 0), 0);
	r = (struct range){ .offset = 0x1000, .length = 0x10000 };
	ck_assert_int_eq(check_n(&info, 3, &r, 1, BIG_PAGE, 0), -EINVAL);
	assert_msg_has("0x10000");
	r = (struct range){ .offset = 0x10000, .length = 0x1000 };
	ck_assert_int_eq(check_n(&info, 3, &r, 1, BIG_PAGE, 0), -EINVAL);

	info.bars[0].size = 0x40000;
	r = (struct range){ .offset = 0x0, .length = 0x10000 };
	ck_assert_int_eq(check_n(&info, 0, &r, 1, BIG_PAGE, 0), -EADDRNOTAVAIL);
	assert_msg_has("0x0+0x10000");
	r = (struct range){ .offset = 0x10000, .length = 0x30000 };
	ck_assert_int_eq(check_n(&info, 0, &r, 1, BIG_PAGE, 0), 0);
	/* The PBA at 0x8000 on BAR 2 is in page 0 too. */
	r = (struct range){ .offset = 0x0, .length = 0x10000 };
	ck_assert_int_eq(check_n(&info, 2, &r, 1, BIG_PAGE, 0), -EADDRNOTAVAIL);
	assert_msg_has("MSI-X PBA");
	/* Ends exactly at the BAR end, then one page past. */
	r = (struct range){ .offset = 0xf0000, .length = 0x10000 };
	ck_assert_int_eq(check_n(&info, 3, &r, 1, BIG_PAGE, 0), 0);
	r = (struct range){ .offset = 0xf0000, .length = 0x20000 };
	ck_assert_int_eq(check_n(&info, 3, &r, 1, BIG_PAGE, 0), -ERANGE);
}
END_TEST

/* One bad range among good ones: the error names it by index. */
START_TEST(test_multi_one_bad)
{
	struct device_info info = make_info();
	struct range r[4] = {
		{ .offset = 0x0, .length = 0x1000 },
		{ .offset = 0x3000, .length = 0x1000 },
		{ .offset = 0x5000, .length = 0x1000 },
		{ .offset = 0x9000, .length = 0x1000 },
	};

	ck_assert_int_eq(check_n(&info, 0, r, 4, PAGE, 0), 0);
	ck_assert_uint_eq(size_out, 0x4000);

	r[2].offset = 0x2000;
	ck_assert_int_eq(check_n(&info, 0, r, 4, PAGE, 0), -EADDRNOTAVAIL);
	assert_msg_has("range 2");
	r[2].offset = 0x5000;

	r[3].length = 0;
	ck_assert_int_eq(check_n(&info, 0, r, 4, PAGE, 0), -EINVAL);
	assert_msg_has("range 3");
	r[3].length = 0x1000;

	r[1].offset = 0x3800;
	ck_assert_int_eq(check_n(&info, 0, r, 4, PAGE, 0), -EINVAL);
	assert_msg_has("range 1");
	r[1].offset = 0x3000;

	r[3].offset = 0x10000;
	ck_assert_int_eq(check_n(&info, 0, r, 4, PAGE, 0), -ERANGE);
	assert_msg_has("range 3");
}
END_TEST

START_TEST(test_total_size)
{
	struct device_info info = make_info();
	struct range r[3] = {
		{ .offset = 0x0, .length = 0x1000 },
		{ .offset = 0x10000, .length = 0x20000 },
		{ .offset = 0x80000, .length = 0x80000 },
	};

	ck_assert_int_eq(check_n(&info, 3, r, 3, PAGE, 0), 0);
	ck_assert_uint_eq(size_out, 0xa1000);
}
END_TEST

START_TEST(test_max_size)
{
	struct device_info info = make_info();
	struct range r[2] = {
		{ .offset = 0x0, .length = 0x2000 },
		{ .offset = 0x4000, .length = 0x2000 },
	};

	ck_assert_int_eq(check_n(&info, 3, r, 2, PAGE, 0x4000), 0);
	ck_assert_uint_eq(size_out, 0x4000);
	ck_assert_int_eq(check_n(&info, 3, r, 2, PAGE, 0x3fff), -EFBIG);
	assert_msg_has("0x4000");
	assert_msg_has("0x3fff");
	ck_assert_int_eq(check_n(&info, 3, r, 2, PAGE, 0x1000), -EFBIG);
	ck_assert_int_eq(check_n(&info, 3, r, 1, PAGE, 0x1000), -EFBIG);
	ck_assert_int_eq(check_n(&info, 3, r, 1, PAGE, 0x2000), 0);
	/* 0: no cap at all. */
	r[1].length = 0xfc000;
	ck_assert_int_eq(check_n(&info, 3, r, 2, PAGE, 0), 0);
	ck_assert_uint_eq(size_out, 0xfe000);
}
END_TEST

/* A short message buffer is truncated, never overrun; no buffer at all is allowed. */
/* Two ranges that share a byte are refused, naming both; touching ranges are fine. */
START_TEST(test_overlapping_ranges)
{
	struct device_info info = make_info();
	struct range same[] = { { 0x0, 0x1000 }, { 0x0, 0x1000 } };
	struct range inside[] = { { 0x10000, 0x4000 }, { 0x20000, 0x1000 }, { 0x11000, 0x1000 } };
	struct range partial[] = { { 0x4000, 0x2000 }, { 0x5000, 0x2000 } };
	struct range touching[] = { { 0x4000, 0x1000 }, { 0x5000, 0x1000 }, { 0x0, 0x1000 } };

	ck_assert_int_eq(check_n(&info, 3, same, 2, PAGE, 0), -EINVAL);
	assert_msg_has("ranges 0 (0x0+0x1000) and 1 (0x0+0x1000) overlap");
	ck_assert_int_eq(check_n(&info, 3, inside, 3, PAGE, 0), -EINVAL);
	assert_msg_has("ranges 0 (0x10000+0x4000) and 2 (0x11000+0x1000) overlap");
	ck_assert_int_eq(check_n(&info, 3, partial, 2, PAGE, 0), -EINVAL);
	assert_msg_has("overlap");
	ck_assert_int_eq(check_n(&info, 3, touching, 3, PAGE, 0), 0);
	ck_assert_uint_eq(size_out, 0x3000);
}
END_TEST

/* The size of overlapping ranges would count the shared bytes twice: never reported. */
START_TEST(test_overlap_not_counted_twice)
{
	struct device_info info = make_info();
	struct range r[64];

	for (size_t i = 0; i < 64; i++)
		r[i] = (struct range){ 0x0, 0x100000 };
	ck_assert_int_eq(check_n(&info, 3, r, 64, PAGE, 0x100000), -EINVAL);
	assert_msg_has("overlap");
}
END_TEST

START_TEST(test_short_msg)
{
	struct device_info info = make_info();
	struct range r = { .offset = 0x2000, .length = 0x1000 };
	char small[8 + 8];
	uint64_t size;

	memset(small, 'Z', sizeof(small));
	ck_assert_int_eq(device_check_ranges(&info, 0, &r, 1, PAGE, 0, &size, small, 8),
			 -EADDRNOTAVAIL);
	ck_assert_uint_eq(strlen(small), 7);
	for (size_t i = 8; i < sizeof(small); i++)
		ck_assert_int_eq(small[i], 'Z');
	ck_assert_int_eq(device_check_ranges(&info, 0, &r, 1, PAGE, 0, &size, NULL, 0),
			 -EADDRNOTAVAIL);
}
END_TEST

/* The simulated backend's quick holder test: the client's file, made by reopen(), keeps the
 * buffer held through every kind of copy the kernel keeps it open for (an fd, a mapping, a
 * copy queued in a socket), and only then does unheld() say so. */
START_TEST(test_sim_unheld)
{
	struct policy_device decl = { .name = "sim0", .kind = POLICY_DEVICE_SIM };
	struct device_handle *h;
	struct device_info info;
	struct range r = { 0, PAGE };
	int fd, copy, sv[2];

	decl.sim_bar_size[0] = 1 << 20;
	ck_assert_int_eq(sim_ops.open(&decl, &h, &info, msg, sizeof(msg)), 0);
	ck_assert_int_eq(sim_ops.export_ranges(h, 0, &r, 1, "t", &fd), 0);
	ck_assert(sim_ops.unheld(fd)); /* the daemon's own file alone */
	ck_assert_int_eq(sim_ops.reopen(h, fd, &copy), 0);
	ck_assert(!sim_ops.unheld(fd));
	void *p = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, copy, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	close(copy);
	ck_assert(!sim_ops.unheld(fd)); /* mapped, though no fd is left */
	munmap(p, PAGE);
	ck_assert(sim_ops.unheld(fd));
	ck_assert_int_eq(sim_ops.reopen(h, fd, &copy), 0);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	char byte = 0, cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { &byte, 1 };
	struct msghdr m = { .msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &copy, sizeof(int));
	ck_assert_int_eq(sendmsg(sv[0], &m, 0), 1);
	close(copy);
	ck_assert(!sim_ops.unheld(fd)); /* in flight */
	close(sv[0]);
	close(sv[1]);
	/* The queued copy goes with the socket, possibly through the kernel's deferred
	 * release: wait for it rather than for a time. */
	while (!sim_ops.unheld(fd))
		usleep(1000);
	close(fd);
	sim_ops.close(h);
}
END_TEST

static Suite *device_suite(void)
{
	Suite *s = suite_create("device");
	TCase *tc = tcase_create("check_ranges");

	tcase_add_test(tc, test_page_size);
	tcase_add_test(tc, test_valid);
	tcase_add_test(tc, test_no_such_bar);
	tcase_add_test(tc, test_io_bar);
	tcase_add_test(tc, test_no_ranges);
	tcase_add_test(tc, test_empty_range);
	tcase_add_test(tc, test_unaligned);
	tcase_add_test(tc, test_bar_end);
	tcase_add_test(tc, test_overflow);
	tcase_add_test(tc, test_total_overflow);
	tcase_add_test(tc, test_msix_table_pages);
	tcase_add_test(tc, test_msix_table_straddles);
	tcase_add_test(tc, test_msix_pba_other_bar);
	tcase_add_test(tc, test_msix_same_bar);
	tcase_add_test(tc, test_msix_absent);
	tcase_add_test(tc, test_big_page);
	tcase_add_test(tc, test_multi_one_bad);
	tcase_add_test(tc, test_total_size);
	tcase_add_test(tc, test_max_size);
	tcase_add_test(tc, test_overlapping_ranges);
	tcase_add_test(tc, test_overlap_not_counted_twice);
	tcase_add_test(tc, test_short_msg);
	suite_add_tcase(s, tc);
	tc = tcase_create("sim");
	tcase_add_test(tc, test_sim_unheld);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(device_suite());

	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
