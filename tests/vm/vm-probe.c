/* SPDX-License-Identifier: MIT */
/*
 * vm-probe: a standalone check, run inside the QEMU guest, that the kernel exports PCI BAR
 * ranges of a vfio-pci device as dma-bufs (VFIO_DEVICE_FEATURE_DMA_BUF, Linux 6.19+).
 *
 * It opens one device bound to vfio-pci either through the legacy group/container path or
 * through the cdev + /dev/iommu path (VFIO_DEVICE_BIND_IOMMUFD), reads the BAR sizes, enables
 * PCI_COMMAND.MEMORY through the config region, reads the first bytes of the BAR, probes the
 * DMA_BUF feature, exports one range and prints the dma-buf's /proc/self/fdinfo. On the cdev
 * path it also imports the dma-buf into an IOAS with IOMMU_IOAS_MAP_FILE. A few invalid
 * exports check the documented errnos.
 *
 * Output: "key: value" lines (probe.sh reads them); exit status 0 when every step worked.
 *
 * usage: vm-probe [--legacy|--cdev] [--bar N] [--offset X] [--length Y] [--expect TEXT] BDF
 *
 * The host building this has linux-libc-dev 6.1: the newer uapi comes from vm-uapi.h, each
 * name guarded so that newer headers win.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vm-uapi.h"

#define MAX_RANGES 4

struct probe {
	const char *bdf;
	bool cdev;
	unsigned int bar;
	uint64_t offset, length;
	const char *expect;
	int container, group, iommufd, device;
	uint32_t ioas_id;
	uint64_t region_offset[VFIO_PCI_NUM_REGIONS];
	uint64_t region_size[VFIO_PCI_NUM_REGIONS];
	int failures;
};

static void check(struct probe *p, bool ok, const char *what)
{
	printf("check: %s %s\n", ok ? "ok" : "FAILED", what);
	if (!ok)
		p->failures++;
}

/* Read the IOMMU group number of the device from sysfs. */
static int group_of(const char *bdf, int *ret_group)
{
	char path[PATH_MAX], link[PATH_MAX];
	ssize_t n;
	const char *slash;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return -errno;
	link[n] = '\0';
	slash = strrchr(link, '/');
	*ret_group = atoi(slash ? slash + 1 : link);
	return 0;
}

/* Legacy path: container + group, type1v2 IOMMU, then the device fd by name. */
static int open_legacy(struct probe *p)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };
	char path[64];
	int group, r;

	r = group_of(p->bdf, &group);
	if (r < 0)
		return r;
	p->container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	if (p->container < 0)
		return -errno;
	if (ioctl(p->container, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
		return -EPROTO;
	if (ioctl(p->container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0)
		return -EOPNOTSUPP;
	snprintf(path, sizeof(path), "/dev/vfio/%d", group);
	p->group = open(path, O_RDWR | O_CLOEXEC);
	if (p->group < 0)
		return -errno;
	if (ioctl(p->group, VFIO_GROUP_GET_STATUS, &status) < 0)
		return -errno;
	if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE))
		return -EBUSY;
	if (ioctl(p->group, VFIO_GROUP_SET_CONTAINER, &p->container) < 0)
		return -errno;
	if (ioctl(p->container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0)
		return -errno;
	p->device = ioctl(p->group, VFIO_GROUP_GET_DEVICE_FD, p->bdf);
	if (p->device < 0)
		return -errno;
	printf("path: legacy group=%d\n", group);
	return 0;
}

/* Find /dev/vfio/devices/vfioN through sysfs (the node exists only with VFIO_DEVICE_CDEV). */
static int cdev_path(const char *bdf, char *buf, size_t size)
{
	char dir[PATH_MAX];
	int n;

	for (n = 0; n < 4096; n++) {
		snprintf(dir, sizeof(dir), "/sys/bus/pci/devices/%s/vfio-dev/vfio%d", bdf, n);
		if (access(dir, F_OK) == 0) {
			snprintf(buf, size, "/dev/vfio/devices/vfio%d", n);
			return 0;
		}
	}
	return -ENOENT;
}

/* cdev path: bind the device to an iommufd, give it an IOAS (needed for MAP_FILE later). */
static int open_cdev(struct probe *p)
{
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
	struct vfio_device_attach_iommufd_pt attach = { .argsz = sizeof(attach) };
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	char path[PATH_MAX];
	int r;

	r = cdev_path(p->bdf, path, sizeof(path));
	if (r < 0)
		return r;
	p->device = open(path, O_RDWR | O_CLOEXEC);
	if (p->device < 0)
		return -errno;
	p->iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	if (p->iommufd < 0)
		return -errno;
	bind.iommufd = p->iommufd;
	if (ioctl(p->device, VFIO_DEVICE_BIND_IOMMUFD, &bind) < 0)
		return -errno;
	if (ioctl(p->iommufd, IOMMU_IOAS_ALLOC, &alloc) < 0)
		return -errno;
	p->ioas_id = alloc.out_ioas_id;
	attach.pt_id = p->ioas_id;
	if (ioctl(p->device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) < 0)
		return -errno;
	printf("path: cdev %s devid=%u ioas=%u\n", path, bind.out_devid, p->ioas_id);
	return 0;
}

static int read_regions(struct probe *p)
{
	struct vfio_device_info info = { .argsz = sizeof(info) };
	unsigned int i;

	if (ioctl(p->device, VFIO_DEVICE_GET_INFO, &info) < 0)
		return -errno;
	printf("device: flags=0x%x regions=%u irqs=%u reset=%s\n", info.flags, info.num_regions,
	       info.num_irqs, (info.flags & VFIO_DEVICE_FLAGS_RESET) ? "yes" : "no");
	for (i = 0; i < VFIO_PCI_NUM_REGIONS && i < info.num_regions; i++) {
		struct vfio_region_info reg = { .argsz = sizeof(reg), .index = i };

		if (ioctl(p->device, VFIO_DEVICE_GET_REGION_INFO, &reg) < 0) {
			/* ROM and VGA regions may be absent (EINVAL); BARs and config may not. */
			if (i <= VFIO_PCI_BAR5_REGION_INDEX || i == VFIO_PCI_CONFIG_REGION_INDEX)
				return -errno;
			continue;
		}
		p->region_offset[i] = reg.offset;
		p->region_size[i] = reg.size;
		if (i <= VFIO_PCI_BAR5_REGION_INDEX)
			printf("bar%u: size=0x%" PRIx64 " flags=0x%x offset=0x%" PRIx64 "\n", i,
			       (uint64_t)reg.size, reg.flags, (uint64_t)reg.offset);
	}
	return 0;
}

/* Turn on memory decode: an export made while it is off starts out revoked. */
static int enable_memory(struct probe *p)
{
	off_t cfg = (off_t)p->region_offset[VFIO_PCI_CONFIG_REGION_INDEX];
	uint16_t cmd, after;

	if (pread(p->device, &cmd, sizeof(cmd), cfg + PCI_COMMAND) != sizeof(cmd))
		return -errno;
	after = cmd | PCI_COMMAND_MEMORY;
	if (pwrite(p->device, &after, sizeof(after), cfg + PCI_COMMAND) != sizeof(after))
		return -errno;
	if (pread(p->device, &after, sizeof(after), cfg + PCI_COMMAND) != sizeof(after))
		return -errno;
	printf("command: 0x%04x -> 0x%04x\n", cmd, after);
	return (after & PCI_COMMAND_MEMORY) ? 0 : -EIO;
}

/* The first 16 bytes of the range, read through the vfio region (the exporter's view). */
static int read_bar(struct probe *p)
{
	char buf[17] = { 0 };
	ssize_t n;
	int i;

	n = pread(p->device, buf, 16, (off_t)(p->region_offset[p->bar] + p->offset));
	if (n < 0)
		return -errno;
	printf("bar-read: \"");
	for (i = 0; i < n; i++)
		printf(buf[i] >= 0x20 && buf[i] < 0x7f ? "%c" : "\\x%02x", (unsigned char)buf[i]);
	printf("\"\n");
	if (p->expect)
		check(p, strncmp(buf, p->expect, strlen(p->expect)) == 0,
		      "bar-read matches --expect");
	return 0;
}

/*
 * One DMA_BUF feature call. flags adds PROBE for a probe; returns the new fd, 0 for a
 * successful probe, or -errno.
 */
static int feature_dma_buf(struct probe *p, uint32_t flags, unsigned int bar,
			   const struct vfio_region_dma_range *ranges, uint32_t nr_ranges)
{
	union {
		struct vfio_device_feature hdr;
		unsigned char raw[sizeof(struct vfio_device_feature) +
				  sizeof(struct vfio_device_feature_dma_buf) +
				  MAX_RANGES * sizeof(struct vfio_region_dma_range)];
	} u;
	struct vfio_device_feature_dma_buf *db = (void *)u.hdr.data;
	int r;

	if (nr_ranges > MAX_RANGES)
		return -E2BIG;
	memset(&u, 0, sizeof(u));
	u.hdr.argsz = sizeof(u.hdr) + sizeof(*db) + nr_ranges * sizeof(*ranges);
	u.hdr.flags = flags | VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF;
	db->region_index = bar;
	db->open_flags = O_RDWR | O_CLOEXEC;
	db->nr_ranges = nr_ranges;
	if (nr_ranges)
		memcpy(db->dma_ranges, ranges, nr_ranges * sizeof(*ranges));
	r = ioctl(p->device, VFIO_DEVICE_FEATURE, &u);
	return r < 0 ? -errno : r;
}

static void print_fdinfo(int fd)
{
	char path[64], line[256];
	struct stat st;
	FILE *f;

	if (fstat(fd, &st) == 0)
		printf("dmabuf: fd=%d ino=%llu\n", fd, (unsigned long long)st.st_ino);
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "re");
	if (!f) {
		printf("fdinfo: unreadable: %s\n", strerror(errno));
		return;
	}
	while (fgets(line, sizeof(line), f))
		printf("fdinfo: %s", line);
	fclose(f);
}

/* The dma-buf as an importer sees it: map it into the IOAS (cdev path only). */
static void map_into_ioas(struct probe *p, int dmabuf)
{
	struct iommu_ioas_map_file map = {
		.size = sizeof(map),
		.flags = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
		.ioas_id = p->ioas_id,
		.fd = dmabuf,
		.start = 0,
		.length = p->length,
	};
	int r = ioctl(p->iommufd, IOMMU_IOAS_MAP_FILE, &map);

	printf("map-file: rc=%d%s%s iova=0x%llx\n", r < 0 ? -errno : 0, r < 0 ? " " : "",
	       r < 0 ? strerror(errno) : "", (unsigned long long)map.iova);
	check(p, r == 0, "IOMMU_IOAS_MAP_FILE of the dma-buf");
}

/* Invalid requests must fail with the errnos KERNEL.md lists. */
static void negative_exports(struct probe *p)
{
	struct vfio_region_dma_range unaligned = { .offset = 0x10, .length = 0x1000 };
	struct vfio_region_dma_range past = { .offset = 0, .length = p->region_size[p->bar] * 2 };
	struct vfio_region_dma_range ok = { .offset = 0, .length = 0x1000 };
	int r;

	r = feature_dma_buf(p, 0, p->bar, &unaligned, 1);
	printf("export-unaligned: %d\n", r);
	check(p, r == -EINVAL, "unaligned range gives EINVAL");
	r = feature_dma_buf(p, 0, p->bar, &past, 1);
	printf("export-past-end: %d\n", r);
	check(p, r == -EINVAL, "range past the BAR end gives EINVAL");
	r = feature_dma_buf(p, 0, p->bar, &ok, 0);
	printf("export-no-ranges: %d\n", r);
	check(p, r == -EINVAL, "nr_ranges 0 gives EINVAL");
	r = feature_dma_buf(p, 0, VFIO_PCI_NUM_REGIONS, &ok, 1);
	printf("export-bad-bar: %d\n", r);
	check(p, r == -ENODEV || r == -EINVAL, "region_index past the BARs is refused");
}

static int run(struct probe *p)
{
	struct vfio_region_dma_range range = { .offset = p->offset, .length = p->length };
	int r, fd;

	r = p->cdev ? open_cdev(p) : open_legacy(p);
	if (r < 0) {
		printf("open: %s\n", strerror(-r));
		return r;
	}
	r = read_regions(p);
	if (r < 0)
		return r;
	r = enable_memory(p);
	check(p, r == 0, "PCI_COMMAND.MEMORY on");
	r = read_bar(p);
	check(p, r == 0, "pread of the BAR through the vfio region");
	r = feature_dma_buf(p, VFIO_DEVICE_FEATURE_PROBE, p->bar, NULL, 0);
	printf("feature-probe: %d%s%s\n", r, r < 0 ? " " : "", r < 0 ? strerror(-r) : "");
	check(p, r == 0, "VFIO_DEVICE_FEATURE PROBE|GET|DMA_BUF");
	fd = feature_dma_buf(p, 0, p->bar, &range, 1);
	printf("export: bar=%u offset=0x%" PRIx64 " length=0x%" PRIx64 " -> %d%s%s\n", p->bar,
	       p->offset, p->length, fd, fd < 0 ? " " : "", fd < 0 ? strerror(-fd) : "");
	check(p, fd >= 0, "export returns a dma-buf fd");
	if (fd < 0)
		return fd;
	print_fdinfo(fd);
	if (p->cdev)
		map_into_ioas(p, fd);
	negative_exports(p);
	close(fd);
	return 0;
}

static uint64_t parse_u64(const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || end == s) {
		fprintf(stderr, "vm-probe: bad number '%s'\n", s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "legacy", no_argument, NULL, 'L' },
		{ "cdev", no_argument, NULL, 'C' },
		{ "bar", required_argument, NULL, 'b' },
		{ "offset", required_argument, NULL, 'o' },
		{ "length", required_argument, NULL, 'l' },
		{ "expect", required_argument, NULL, 'e' },
		{ NULL, 0, NULL, 0 },
	};
	struct probe p = { .bar = 2,
			   .length = 0x1000,
			   .container = -1,
			   .group = -1,
			   .iommufd = -1,
			   .device = -1 };
	int c, r;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'L':
			p.cdev = false;
			break;
		case 'C':
			p.cdev = true;
			break;
		case 'b':
			p.bar = (unsigned int)parse_u64(optarg);
			break;
		case 'o':
			p.offset = parse_u64(optarg);
			break;
		case 'l':
			p.length = parse_u64(optarg);
			break;
		case 'e':
			p.expect = optarg;
			break;
		default:
			goto usage;
		}
	}
	if (optind + 1 != argc || p.bar > VFIO_PCI_BAR5_REGION_INDEX)
		goto usage;
	p.bdf = argv[optind];
	setvbuf(stdout, NULL, _IOLBF, 0);
	r = run(&p);
	printf("result: %s (%d failed checks%s%s)\n", r == 0 && !p.failures ? "ok" : "FAILED",
	       p.failures, r < 0 ? ", error: " : "", r < 0 ? strerror(-r) : "");
	return r == 0 && !p.failures ? 0 : 1;
usage:
	fprintf(stderr, "usage: vm-probe [--legacy|--cdev] [--bar N] [--offset X] [--length Y] "
			"[--expect TEXT] BDF\n");
	return 2;
}
