/* PCI facts from sysfs (pcisys.h). The config space is read from the device's config file and
 * walked here: the capability list for the PCIe port type, the extended capability list from
 * 0x100 for ACS (ID 0x000D), with every walk bounded so that a looping list cannot hang it. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"
#include "pcisys.h"
#include "sysroot.h"

/* linux/ioport.h's resource flags, as the resource file shows them. */
#define RES_IO 0x00000100
#define RES_MEM 0x00000200
#define RES_PREFETCH 0x00002000
#define RES_MEM_64 0x00100000

#define CFG_STATUS 0x06
#define CFG_STATUS_CAP_LIST 0x10
#define CFG_CAP_PTR 0x34
#define CFG_CAP_ID_EXP 0x10
#define CFG_EXT_START 0x100
#define CFG_EXT_ID_ACS 0x000d
#define CFG_ACS_CTRL 0x06

static bool parse_hex(const char *s, size_t n, unsigned max, unsigned *ret)
{
	unsigned v = 0;

	for (size_t i = 0; i < n; i++) {
		if (!isxdigit((unsigned char)s[i]))
			return false;
		v = v * 16 + (unsigned)(isdigit((unsigned char)s[i])
					    ? s[i] - '0'
					    : tolower((unsigned char)s[i]) - 'a' + 10);
	}
	*ret = v;
	return v <= max;
}

int pcisys_parse_address(const char *s, char ret[PCISYS_ADDR_MAX])
{
	unsigned domain = 0, bus, dev, fn;
	size_t len = strlen(s);

	if (len == 12 && s[4] == ':') {
		if (!parse_hex(s, 4, 0xffff, &domain))
			return -EINVAL;
		s += 5;
		len -= 5;
	}
	if (len != 7 || s[2] != ':' || s[5] != '.' || !parse_hex(s, 2, 0xff, &bus) ||
	    !parse_hex(s + 3, 2, 0x1f, &dev) || !parse_hex(s + 6, 1, 7, &fn))
		return -EINVAL;
	snprintf(ret, PCISYS_ADDR_MAX, "%04x:%02x:%02x.%x", domain, bus, dev, fn);
	return 0;
}

static bool is_address(const char *s)
{
	char canon[PCISYS_ADDR_MAX];

	return strlen(s) == 12 && pcisys_parse_address(s, canon) == 0 && !strcmp(canon, s);
}

/* A file of the device's sysfs directory, into buf. */
static int read_attr(const char *root, const char *address, const char *attr, char *buf, size_t len)
{
	return sysroot_read_file(root, buf, len, "/sys/bus/pci/devices/%s/%s", address, attr);
}

int pcisys_device_link(const char *root, const char *address, const char *attr, char *buf,
		       size_t len)
{
	return sysroot_read_link(root, buf, len, "/sys/bus/pci/devices/%s/%s", address, attr);
}

static unsigned read_hex_attr(const char *root, const char *address, const char *attr, bool *ok)
{
	char buf[32], *end;
	unsigned long v;

	if (read_attr(root, address, attr, buf, sizeof(buf)) <= 0) {
		*ok = false;
		return 0;
	}
	errno = 0;
	v = strtoul(buf, &end, 16);
	if (errno || *end || v > UINT_MAX)
		*ok = false;
	return (unsigned)v;
}

/* The six BAR lines of the resource file. */
static void read_bars(const char *root, struct pcisys_device *d)
{
	char p[SYSROOT_PATH_MAX], line[128];
	FILE *f;

	if (sysroot_path(root, p, sizeof(p), "/sys/bus/pci/devices/%s/resource", d->address) < 0 ||
	    !(f = fopen(p, "re")))
		return;
	for (unsigned i = 0; i < 6 && fgets(line, sizeof(line), f); i++) {
		uint64_t start, end, flags;
		if (sscanf(line, "%" SCNx64 " %" SCNx64 " %" SCNx64, &start, &end, &flags) != 3 ||
		    end <= start || !(flags & (RES_IO | RES_MEM)))
			continue;
		d->bars[d->n_bars++] = (struct pcisys_bar){
			.index = i,
			.start = start,
			.size = end - start + 1,
			.io = (flags & RES_IO) != 0,
			.is_64bit = (flags & RES_MEM_64) != 0,
			.prefetchable = (flags & RES_PREFETCH) != 0,
		};
	}
	fclose(f);
}

static unsigned cfg16(const uint8_t *c, int at)
{
	return (unsigned)c[at] | (unsigned)c[at + 1] << 8;
}

static uint32_t cfg32(const uint8_t *c, int at)
{
	return (uint32_t)cfg16(c, at) | (uint32_t)cfg16(c, at + 2) << 16;
}

/* The PCIe port type from the PCI Express capability, or -1. */
static int find_pcie_type(const uint8_t *c, int len)
{
	int pos;

	if (len < CFG_CAP_PTR + 1 || !(cfg16(c, CFG_STATUS) & CFG_STATUS_CAP_LIST))
		return -1;
	pos = c[CFG_CAP_PTR] & 0xfc;
	for (int i = 0; i < 48 && pos >= 0x40 && pos + 4 <= len; i++) {
		if (c[pos] == CFG_CAP_ID_EXP)
			return (int)(cfg16(c, pos + 2) & 0xf0) >> 4;
		pos = c[pos + 1] & 0xfc;
	}
	return -1;
}

/* The ACS capability: 1 found (*ctrl set), 0 absent, -1 unknown (extended space unread). */
static int find_acs(const uint8_t *c, int len, uint16_t *ctrl)
{
	int pos = CFG_EXT_START;

	if (len < PCISYS_CONFIG_MAX)
		return -1;
	for (int i = 0; i < (PCISYS_CONFIG_MAX - CFG_EXT_START) / 4; i++) {
		uint32_t h = cfg32(c, pos);
		if (h == 0 || h == 0xffffffff)
			return 0;
		if ((h & 0xffff) == CFG_EXT_ID_ACS) {
			*ctrl = (uint16_t)cfg16(c, pos + CFG_ACS_CTRL);
			return 1;
		}
		pos = (int)(h >> 20) & 0xffc;
		if (pos < CFG_EXT_START)
			return 0;
	}
	return 0;
}

static void read_config(const char *root, struct pcisys_device *d)
{
	char p[SYSROOT_PATH_MAX];
	uint8_t c[PCISYS_CONFIG_MAX];
	_cleanup_close_ int fd = -1;
	ssize_t n = 0, r;

	d->memory_decode = d->pcie_type = d->acs = -1;
	if (sysroot_path(root, p, sizeof(p), "/sys/bus/pci/devices/%s/config", d->address) < 0) {
		d->config_len = -ENAMETOOLONG;
		return;
	}
	if ((fd = open(p, O_RDONLY | O_CLOEXEC)) < 0) {
		d->config_len = -errno;
		return;
	}
	while (n < (ssize_t)sizeof(c) && (r = pread(fd, c + n, sizeof(c) - (size_t)n, n)) > 0)
		n += r;
	d->config_len = (int)n;
	if (n >= 6)
		d->memory_decode = (cfg16(c, 4) & 0x2) != 0;
	d->pcie_type = find_pcie_type(c, (int)n);
	d->acs = find_acs(c, (int)n, &d->acs_ctrl);
}

/* The bridges between the device and its host bridge, from its real sysfs path:
 * .../devices/pci0000:00/0000:00:01.0/0000:01:00.0 for 0000:01:00.0 behind 0000:00:01.0. */
static int read_chain(const char *root, struct pcisys_device *d)
{
	char p[SYSROOT_PATH_MAX], real[PATH_MAX], *parts[64], *save = NULL;
	size_t n = 0, host = SIZE_MAX;

	if (sysroot_path(root, p, sizeof(p), "/sys/bus/pci/devices/%s", d->address) < 0)
		return -ENAMETOOLONG;
	if (!realpath(p, real))
		return -errno;
	for (char *t = strtok_r(real, "/", &save); t && n < ARRAY_SIZE(parts);
	     t = strtok_r(NULL, "/", &save))
		parts[n++] = t;
	for (size_t i = 0; i < n; i++)
		if (!strncmp(parts[i], "pci", 3) && strchr(parts[i], ':'))
			host = i;
	if (host == SIZE_MAX || n == 0 || strcmp(parts[n - 1], d->address) != 0)
		return -ENOENT;
	if (sysroot_copy(d->host_bridge, sizeof(d->host_bridge), parts[host]) < 0)
		return -ENAMETOOLONG;
	for (size_t i = n - 1; i-- > host + 1;) {
		if (!is_address(parts[i]))
			d->chain_gap = true;
		else if (d->n_chain < PCISYS_CHAIN_MAX)
			sysroot_copy(d->chain[d->n_chain++], PCISYS_ADDR_MAX, parts[i]);
	}
	return 0;
}

int pcisys_read_device(const char *root, const char *address, struct pcisys_device *ret)
{
	struct pcisys_device d = { .iommu_group = -1 };
	char group[32];
	bool ok = true;
	int r;

	if (sysroot_copy(d.address, sizeof(d.address), address) < 0)
		return -EINVAL;
	r = read_chain(root, &d);
	if (r < 0)
		return r;
	d.vendor = read_hex_attr(root, address, "vendor", &ok);
	d.device = read_hex_attr(root, address, "device", &ok);
	d.ids_known = ok;
	if (pcisys_device_link(root, address, "driver", d.driver, sizeof(d.driver)) < 0)
		d.driver[0] = '\0';
	if (pcisys_device_link(root, address, "iommu_group", group, sizeof(group)) == 0)
		d.iommu_group = atoi(group);
	r = read_attr(root, address, "reset_method", d.reset_method, sizeof(d.reset_method));
	d.reset_method_known = r >= 0;
	if (r < 0)
		d.reset_method[0] = '\0';
	read_bars(root, &d);
	read_config(root, &d);
	*ret = d;
	return 0;
}

static int cmp_address(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Add address to the n entries of ret, or, once it holds max, put it in place of the largest
 * if it is smaller: ret ends up with the max smallest. */
static void keep_smallest(char ret[][PCISYS_ADDR_MAX], size_t n, size_t max, const char *address)
{
	size_t largest = 0;

	if (n < max) {
		sysroot_copy(ret[n], PCISYS_ADDR_MAX, address);
		return;
	}
	for (size_t i = 1; i < n; i++)
		if (strcmp(ret[i], ret[largest]) > 0)
			largest = i;
	if (n > 0 && strcmp(address, ret[largest]) < 0)
		sysroot_copy(ret[largest], PCISYS_ADDR_MAX, address);
}

/* The PCI addresses among the entries of directory root + dir other than skip, sorted, into
 * ret (up to max); filter, if given, must accept each. Returns how many or -errno. */
static int list_addresses(const char *root, const char *dir, const char *skip,
			  bool (*filter)(const char *root, const char *address),
			  char ret[][PCISYS_ADDR_MAX], size_t max)
{
	char p[SYSROOT_PATH_MAX];
	DIR *d;
	struct dirent *e;
	size_t n = 0;

	if (sysroot_path(root, p, sizeof(p), "%s", dir) < 0)
		return -ENAMETOOLONG;
	if (!(d = opendir(p)))
		return -errno;
	while ((e = readdir(d))) {
		if (!is_address(e->d_name) || (skip && !strcmp(e->d_name, skip)) ||
		    (filter && !filter(root, e->d_name)))
			continue;
		keep_smallest(ret, n < max ? n : max, max, e->d_name);
		n++;
	}
	closedir(d);
	qsort(ret, n < max ? n : max, PCISYS_ADDR_MAX, cmp_address);
	return n > INT_MAX ? INT_MAX : (int)n;
}

int pcisys_group_members(const char *root, int group, const char *address,
			 char ret[][PCISYS_ADDR_MAX], size_t max)
{
	char dir[96];

	if (sysroot_path(NULL, dir, sizeof(dir), "/sys/kernel/iommu_groups/%d/devices", group) < 0)
		return -ENAMETOOLONG;
	return list_addresses(root, dir, address, NULL, ret, max);
}

int pcisys_group_type(const char *root, int group, char *buf, size_t len)
{
	int r = sysroot_read_file(root, buf, len, "/sys/kernel/iommu_groups/%d/type", group);

	return r < 0 ? r : 0;
}

int pcisys_root_bus_first(const char *root, const char *host_bridge, struct pcisys_device *ret)
{
	char dir[PCISYS_NAME_MAX + 16], first[1][PCISYS_ADDR_MAX];
	int n;

	if (sysroot_path(NULL, dir, sizeof(dir), "/sys/devices/%s", host_bridge) < 0)
		return -ENAMETOOLONG;
	n = list_addresses(root, dir, NULL, NULL, first, 1);
	if (n < 0)
		return n;
	if (n == 0)
		return -ENOENT;
	return pcisys_read_device(root, first[0], ret);
}

static bool bound_to_vfio(const char *root, const char *address)
{
	char driver[PCISYS_NAME_MAX];

	return pcisys_device_link(root, address, "driver", driver, sizeof(driver)) == 0 &&
	       strstr(driver, "vfio");
}

int pcisys_vfio_devices(const char *root, char ret[][PCISYS_ADDR_MAX], size_t max)
{
	return list_addresses(root, "/sys/bus/pci/devices", NULL, bound_to_vfio, ret, max);
}
