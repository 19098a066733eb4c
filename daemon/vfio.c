/* The vfio backend: owns a PCI device bound to vfio-pci and exports ranges of its BARs as
 * dma-bufs (VFIO_DEVICE_FEATURE_DMA_BUF, Linux 6.19+). The only file that speaks VFIO.
 *
 * Two ways in: iommufd + device cdev where /dev/iommu and /dev/vfio/devices/vfioN open, the
 * legacy container/group otherwise (Debian's stock kernels have no iommufd). The device is
 * never attached to an IOAS on the iommufd path: binding alone already claims DMA ownership
 * of the group and blocks the device's own DMA, which is exactly what the legacy path's empty
 * type1 container gives; an exporter needs no IOVA space (importers map the buffer into
 * theirs), and fewer objects mean fewer ioctls to allow in the sandbox.
 *
 * Nothing here logs: every failure returns -errno and, from open, a sentence for the admin.
 * BARs are never mmapped: a mapping copied into a forked child would pin the device file, and
 * closing the device fd would then no longer revoke the exported buffers. */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/pci_regs.h>

#include "device.h"
#include "device.h"
#include "vfio-uapi.h"

/* sysfs root; a test build may point it at a fake tree. */
#ifndef VFIO_SYSFS
#define VFIO_SYSFS "/sys"
#endif

/* More ranges than any client may ask for (the wire allows 64); bounds the one allocation. */
#define VFIO_MAX_RANGES 1024
/* Bytes of /proc/self/fdinfo/N read; a dma-buf's is about 150. */
#define VFIO_FDINFO_MAX 4096
/* Capabilities in a 256-byte config space, at most; stops a looping list. */
#define VFIO_MAX_CAPS 48

enum vfio_path {
	VFIO_PATH_LEGACY,
	VFIO_PATH_IOMMUFD,
};

struct device_handle {
	enum vfio_path path;
	int container_fd; /* legacy: /dev/vfio/vfio; iommufd: /dev/iommu */
	int group_fd;	  /* legacy: /dev/vfio/GROUP; iommufd: -1 */
	int device_fd;
	int req_fd;		/* eventfd: device being removed (-1: none) */
	int err_fd;		/* eventfd: AER error reported (-1: none) */
	uint64_t config_offset; /* of the config space region in device_fd */
};

/* What sysfs says about the device before anything is opened. */
struct vfio_sysfs {
	char addr[16];
	unsigned group; /* IOMMU group number */
	char cdev[32];	/* "vfioN" under vfio-dev/, "" when absent */
};

static void closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

#define _cleanup_close_ __attribute__((cleanup(closep)))

static int take_fd(int *fd)
{
	int r = *fd;

	*fd = -1;
	return r;
}

/* Write the admin's sentence and return err, so that failures read as one statement. */
__attribute__((format(printf, 4, 5))) static int fail(char *msg, size_t msglen, int err,
						      const char *fmt, ...)
{
	if (msg && msglen > 0) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(msg, msglen, fmt, ap);
		va_end(ap);
	}
	return err;
}

/* ----- sysfs ----- */

static bool hex_run(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] == '\0' || !strchr("0123456789abcdef", s[i]))
			return false;
	return true;
}

/* "dddd:bb:dd.f", lower case, a domain of 4 to 7 digits (policy_device.pci holds 15
 * characters). The address becomes a path, so nothing else may pass. */
static bool pci_addr_valid(const char *addr)
{
	size_t len = strnlen(addr, 16), dom = len - 8;

	if (len < 12 || len > 15)
		return false;
	return hex_run(addr, dom) && addr[dom] == ':' && hex_run(addr + dom + 1, 2) &&
	       addr[dom + 3] == ':' && hex_run(addr + dom + 4, 2) && addr[dom + 4] <= '1' &&
	       addr[dom + 6] == '.' && addr[dom + 7] >= '0' && addr[dom + 7] <= '7';
}

/* The last component of the symlink at path into buf: a driver or group name. */
static int link_name(const char *path, char *buf, size_t len)
{
	char target[PATH_MAX];
	ssize_t n = readlink(path, target, sizeof(target) - 1);
	const char *base;

	if (n < 0)
		return -errno;
	target[n] = '\0';
	base = strrchr(target, '/');
	base = base ? base + 1 : target;
	if (strlen(base) >= len)
		return -ENAMETOOLONG;
	strcpy(buf, base);
	return 0;
}

static int device_link(const char *addr, const char *what, char *buf, size_t len)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), VFIO_SYSFS "/bus/pci/devices/%s/%s", addr, what);
	return link_name(path, buf, len);
}

/* The vfioN entry under vfio-dev/: present for every device a vfio driver registered, even
 * when the kernel has no cdev nodes. Returns 0 (name in buf) or -ENOENT. */
static int vfio_dev_name(const char *addr, char *buf, size_t len)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *dir;
	int r = -ENOENT;

	snprintf(path, sizeof(path), VFIO_SYSFS "/bus/pci/devices/%s/vfio-dev", addr);
	dir = opendir(path);
	if (!dir)
		return -errno;
	while ((de = readdir(dir)))
		if (strncmp(de->d_name, "vfio", 4) == 0 && strlen(de->d_name) < len) {
			strcpy(buf, de->d_name);
			r = 0;
			break;
		}
	closedir(dir);
	return r;
}

/* Whether a group member's driver leaves the group usable by VFIO: vfio drivers, drivers
 * that manage DMA ownership themselves (pci-stub, pcieport) and no driver at all. */
static bool member_harmless(const char *addr)
{
	char drv[NAME_MAX + 1], cdev[32];

	if (device_link(addr, "driver", drv, sizeof(drv)) < 0)
		return true;
	if (!strcmp(drv, "vfio-pci") || !strcmp(drv, "pci-stub") || !strcmp(drv, "pcieport"))
		return true;
	return vfio_dev_name(addr, cdev, sizeof(cdev)) == 0;
}

/* List into out the members of group (other than self) that keep it from being viable, as
 * "ADDR (driver), ...". Returns how many. */
static int group_blockers(unsigned group, const char *self, char *out, size_t outlen)
{
	char path[PATH_MAX], drv[NAME_MAX + 1];
	struct dirent *de;
	size_t used = 0;
	DIR *dir;
	int n = 0;

	out[0] = '\0';
	snprintf(path, sizeof(path), VFIO_SYSFS "/kernel/iommu_groups/%u/devices", group);
	dir = opendir(path);
	if (!dir)
		return 0;
	while ((de = readdir(dir))) {
		if (de->d_name[0] == '.' || !strcmp(de->d_name, self) ||
		    member_harmless(de->d_name))
			continue;
		if (device_link(de->d_name, "driver", drv, sizeof(drv)) < 0)
			strcpy(drv, "?");
		if (used < outlen)
			used += snprintf(out + used, outlen - used, "%s%s (%s)", n ? ", " : "",
					 de->d_name, drv);
		n++;
	}
	closedir(dir);
	return n;
}

static int check_driver(const char *addr, char *msg, size_t msglen)
{
	char drv[NAME_MAX + 1], cdev[32];
	int r = device_link(addr, "driver", drv, sizeof(drv));

	if (r == -ENOENT)
		return fail(msg, msglen, -ENXIO,
			    "%s is not bound to any driver (run p2pbuf-vfio-bind %s)", addr, addr);
	if (r < 0)
		return fail(msg, msglen, r, "cannot read the driver of %s: %s", addr, strerror(-r));
	/* A vfio-pci variant driver (vfio-dev/ present) is let through: the export probe then
	 * says whether it can export. */
	if (strcmp(drv, "vfio-pci") && vfio_dev_name(addr, cdev, sizeof(cdev)) < 0)
		return fail(msg, msglen, -ENXIO,
			    "%s is bound to %s, not vfio-pci (run p2pbuf-vfio-bind %s)", addr, drv,
			    addr);
	return 0;
}

static int check_group(const char *addr, unsigned *ret_group, char *msg, size_t msglen)
{
	char name[NAME_MAX + 1], *end;
	unsigned long group;
	int r = device_link(addr, "iommu_group", name, sizeof(name));

	if (r == -ENOENT)
		return fail(msg, msglen, -ENXIO,
			    "%s is not in an IOMMU group (is the IOMMU enabled? intel_iommu=on)",
			    addr);
	if (r < 0)
		return fail(msg, msglen, r, "cannot read the IOMMU group of %s: %s", addr,
			    strerror(-r));
	errno = 0;
	group = strtoul(name, &end, 10);
	if (errno || *end || end == name || group > UINT_MAX)
		return fail(msg, msglen, -ENXIO, "%s has an unexpected IOMMU group \"%s\"", addr,
			    name);
	*ret_group = group;
	return 0;
}

/* Everything sysfs can tell before opening, with the admin's fix for each problem. */
static int sysfs_check(const char *addr, struct vfio_sysfs *ret, char *msg, size_t msglen)
{
	struct vfio_sysfs s = { 0 };
	char path[PATH_MAX];
	int r;

	if (!pci_addr_valid(addr))
		return fail(msg, msglen, -EINVAL, "\"%s\" is not a PCI address (dddd:bb:dd.f)",
			    addr);
	snprintf(path, sizeof(path), VFIO_SYSFS "/bus/pci/devices/%s", addr);
	if (access(path, F_OK) < 0)
		return errno == ENOENT ? fail(msg, msglen, -ENODEV, "no PCI device at %s", addr)
				       : fail(msg, msglen, -errno, "cannot look up %s: %m", path);
	r = check_driver(addr, msg, msglen);
	if (r < 0)
		return r;
	r = check_group(addr, &s.group, msg, msglen);
	if (r < 0)
		return r;
	strcpy(s.addr, addr);
	if (vfio_dev_name(addr, s.cdev, sizeof(s.cdev)) < 0)
		s.cdev[0] = '\0';
	*ret = s;
	return 0;
}

/* A group that is not viable: name the devices in the way. */
static int fail_not_viable(const struct vfio_sysfs *s, char *msg, size_t msglen)
{
	char who[256];

	if (group_blockers(s->group, s->addr, who, sizeof(who)) > 0)
		return fail(msg, msglen, -EBUSY,
			    "IOMMU group %u of %s is not viable: %s must be bound to vfio-pci "
			    "or unbound (p2pbuf-vfio-bind)",
			    s->group, s->addr, who);
	return fail(msg, msglen, -EBUSY,
		    "IOMMU group %u of %s is not viable: another of its devices is in use",
		    s->group, s->addr);
}

/* ----- opening: iommufd + cdev ----- */

static int bind_error(const struct vfio_sysfs *s, int err, char *msg, size_t msglen)
{
	char who[256];

	switch (err) {
	case -EBUSY: /* the group is open through the legacy interface */
		return fail(msg, msglen, -EBUSY,
			    "IOMMU group %u of %s is already open in another process", s->group,
			    s->addr);
	case -EINVAL: /* vfio_df_open: a cdev device may be open only once */
		return fail(msg, msglen, -EBUSY,
			    "%s is already open (/dev/vfio/devices/%s) in another process or "
			    "declared twice",
			    s->addr, s->cdev);
	case -EPERM: /* another owner of the group, or no MSI isolation */
		if (group_blockers(s->group, s->addr, who, sizeof(who)) > 0)
			return fail_not_viable(s, msg, msglen);
		return fail(msg, msglen, -EPERM,
			    "iommufd refused %s: another device of IOMMU group %u is open "
			    "elsewhere, or interrupts cannot be isolated (enable interrupt "
			    "remapping, or iommufd allow_unsafe_interrupts=1)",
			    s->addr, s->group);
	default:
		return fail(msg, msglen, err, "binding %s to iommufd failed: %s", s->addr,
			    strerror(-err));
	}
}

/* Returns 0 when the device is open and bound, 1 when this kernel offers no cdev path (the
 * caller falls back to the legacy one), or -errno. */
static int open_iommufd(struct device_handle *h, const struct vfio_sysfs *s, char *msg,
			size_t msglen)
{
	_cleanup_close_ int dev = -1, iommufd = -1;
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
	char path[PATH_MAX];

	if (!s->cdev[0])
		return 1;
	snprintf(path, sizeof(path), "/dev/vfio/devices/%s", s->cdev);
	dev = open(path, O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return 1;
	iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	if (iommufd < 0)
		return 1;
	bind.iommufd = iommufd;
	if (ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &bind) < 0)
		return bind_error(s, -errno, msg, msglen);
	h->path = VFIO_PATH_IOMMUFD;
	h->device_fd = take_fd(&dev);
	h->container_fd = take_fd(&iommufd);
	return 0;
}

/* ----- opening: legacy container + group ----- */

static int legacy_container(const struct vfio_sysfs *s, int *ret_fd, char *msg, size_t msglen)
{
	_cleanup_close_ int fd = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return fail(msg, msglen, errno == ENOENT ? -ENODEV : -errno,
			    "%s: neither iommufd (/dev/iommu + /dev/vfio/devices/) nor "
			    "/dev/vfio/vfio can be opened: %m (is the vfio module loaded?)",
			    s->addr);
	if (ioctl(fd, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
		return fail(msg, msglen, -EPROTO, "/dev/vfio/vfio speaks an unknown VFIO API");
	if (ioctl(fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0)
		return fail(msg, msglen, -EOPNOTSUPP,
			    "the VFIO container offers no type1v2 IOMMU (load vfio_iommu_type1)");
	*ret_fd = take_fd(&fd);
	return 0;
}

static int legacy_group(const struct vfio_sysfs *s, int *ret_fd, char *msg, size_t msglen)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };
	_cleanup_close_ int fd = -1;
	char path[64];

	snprintf(path, sizeof(path), "/dev/vfio/%u", s->group);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 && errno == EBUSY)
		return fail(msg, msglen, -EBUSY,
			    "IOMMU group %u of %s is already open in another process "
			    "(or another device of the group is declared too)",
			    s->group, s->addr);
	if (fd < 0)
		return fail(msg, msglen, -errno, "cannot open %s for %s: %m", path, s->addr);
	if (ioctl(fd, VFIO_GROUP_GET_STATUS, &status) < 0)
		return fail(msg, msglen, -errno, "VFIO_GROUP_GET_STATUS on %s: %m", path);
	if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE))
		return fail_not_viable(s, msg, msglen);
	*ret_fd = take_fd(&fd);
	return 0;
}

static int open_legacy(struct device_handle *h, const struct vfio_sysfs *s, char *msg,
		       size_t msglen)
{
	_cleanup_close_ int container = -1, group = -1, dev = -1;
	int r;

	r = legacy_container(s, &container, msg, msglen);
	if (r < 0)
		return r;
	r = legacy_group(s, &group, msg, msglen);
	if (r < 0)
		return r;
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0)
		return fail(msg, msglen, -errno, "VFIO_GROUP_SET_CONTAINER for %s: %m", s->addr);
	r = ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0 ? -errno : 0;
	if (r == -EPERM)
		return fail(
		    msg, msglen, r,
		    "the IOMMU cannot isolate interrupts of %s (enable interrupt remapping, "
		    "or vfio_iommu_type1 allow_unsafe_interrupts=1)",
		    s->addr);
	if (r < 0)
		return fail(msg, msglen, r, "VFIO_SET_IOMMU for %s: %s", s->addr, strerror(-r));
	/* The kernel installs the device fd with O_CLOEXEC (group.c, FD_ADD). */
	dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, s->addr);
	if (dev < 0)
		return fail(msg, msglen, errno == EBUSY ? -EBUSY : -errno,
			    "VFIO_GROUP_GET_DEVICE_FD for %s: %m", s->addr);
	h->path = VFIO_PATH_LEGACY;
	h->container_fd = take_fd(&container);
	h->group_fd = take_fd(&group);
	h->device_fd = take_fd(&dev);
	return 0;
}

/* ----- the open device ----- */

static int probe_dma_buf(const struct device_handle *h, char *msg, size_t msglen)
{
	struct vfio_device_feature f = {
		.argsz = sizeof(f),
		.flags = VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET |
			 VFIO_DEVICE_FEATURE_DMA_BUF,
	};

	if (ioctl(h->device_fd, VFIO_DEVICE_FEATURE, &f) == 0)
		return 0;
	if (errno == ENOTTY)
		return fail(msg, msglen, -EOPNOTSUPP,
			    "kernel lacks VFIO PCI dma-buf export (needs Linux 6.19+ with "
			    "CONFIG_VFIO_PCI_DMABUF)");
	if (errno == EOPNOTSUPP)
		return fail(msg, msglen, -EOPNOTSUPP, "driver does not support dma-buf export");
	return fail(msg, msglen, -errno, "probing dma-buf export failed: %m");
}

static int cfg_read(const struct device_handle *h, unsigned off, void *buf, size_t len)
{
	ssize_t n = pread(h->device_fd, buf, len, h->config_offset + off);

	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

static int cfg_read8(const struct device_handle *h, unsigned off, uint8_t *ret)
{
	return cfg_read(h, off, ret, 1);
}

static int cfg_read16(const struct device_handle *h, unsigned off, uint16_t *ret)
{
	uint16_t v;
	int r = cfg_read(h, off, &v, sizeof(v));

	if (r == 0)
		*ret = le16toh(v);
	return r;
}

static int cfg_read32(const struct device_handle *h, unsigned off, uint32_t *ret)
{
	uint32_t v;
	int r = cfg_read(h, off, &v, sizeof(v));

	if (r == 0)
		*ret = le32toh(v);
	return r;
}

static int region_info(const struct device_handle *h, unsigned index, struct vfio_region_info *ret)
{
	struct vfio_region_info ri = { .argsz = sizeof(ri), .index = index };

	if (ioctl(h->device_fd, VFIO_DEVICE_GET_REGION_INFO, &ri) < 0)
		return -errno;
	*ret = ri;
	return 0;
}

/* Sizes from VFIO, type bits from the BAR registers (VFIO keeps the flag bits of its
 * virtualized BARs). The upper half of a 64-bit BAR stays all zero. */
static int read_bars(const struct device_handle *h, struct device_bar ret[DEVICE_MAX_BARS])
{
	struct device_bar bars[DEVICE_MAX_BARS] = { 0 };
	struct vfio_region_info ri = { 0 };
	uint32_t reg = 0;

	for (unsigned i = 0; i < DEVICE_MAX_BARS; i++) {
		int r = region_info(h, VFIO_PCI_BAR0_REGION_INDEX + i, &ri);

		if (r == 0)
			r = cfg_read32(h, PCI_BASE_ADDRESS_0 + 4 * i, &reg);
		if (r < 0)
			return r;
		if (ri.size == 0)
			continue;
		bars[i].size = ri.size;
		bars[i].is_io = reg & PCI_BASE_ADDRESS_SPACE_IO;
		if (bars[i].is_io)
			continue;
		bars[i].prefetchable = reg & PCI_BASE_ADDRESS_MEM_PREFETCH;
		bars[i].is_64bit =
		    (reg & PCI_BASE_ADDRESS_MEM_TYPE_MASK) == PCI_BASE_ADDRESS_MEM_TYPE_64;
		if (bars[i].is_64bit)
			i++; /* the upper half */
	}
	memcpy(ret, bars, sizeof(bars));
	return 0;
}

/* The config offset of capability id, 0 when the device has none, or -errno. */
static int find_cap(const struct device_handle *h, uint8_t id)
{
	uint16_t status = 0;
	uint8_t pos, cap;
	int r = cfg_read16(h, PCI_STATUS, &status);

	if (r < 0 || !(status & PCI_STATUS_CAP_LIST))
		return r;
	r = cfg_read8(h, PCI_CAPABILITY_LIST, &pos);
	for (unsigned n = 0; r == 0 && pos >= 0x40 && n < VFIO_MAX_CAPS; n++) {
		pos &= ~3;
		r = cfg_read8(h, pos + PCI_CAP_LIST_ID, &cap);
		if (r == 0 && cap == id)
			return pos;
		if (r == 0)
			r = cfg_read8(h, pos + PCI_CAP_LIST_NEXT, &pos);
	}
	return r;
}

/* The MSI-X capability at pos, in bytes: the table has N+1 entries of 16 bytes, the PBA one
 * bit per entry in 64-bit words. */
static int msix_from_cap(const struct device_handle *h, int pos, struct device_msix *ret)
{
	uint32_t table = 0, pba = 0;
	uint16_t ctrl = 0;
	uint64_t n;
	int r = cfg_read16(h, pos + PCI_MSIX_FLAGS, &ctrl);

	if (r == 0)
		r = cfg_read32(h, pos + PCI_MSIX_TABLE, &table);
	if (r == 0)
		r = cfg_read32(h, pos + PCI_MSIX_PBA, &pba);
	if (r < 0)
		return r;
	n = (uint64_t)(ctrl & PCI_MSIX_FLAGS_QSIZE) + 1;
	*ret = (struct device_msix){
		.present = true,
		.table_bar = table & PCI_MSIX_TABLE_BIR,
		.table = { table & PCI_MSIX_TABLE_OFFSET, n * PCI_MSIX_ENTRY_SIZE },
		.pba_bar = pba & PCI_MSIX_PBA_BIR,
		.pba = { pba & PCI_MSIX_PBA_OFFSET, (n + 63) / 64 * 8 },
	};
	return 0;
}

/* Where the MSI-X table and PBA are; present = false for a device without MSI-X. */
static int read_msix(const struct device_handle *h, struct device_msix *ret)
{
	struct device_msix m = { 0 };
	int pos = find_cap(h, PCI_CAP_ID_MSIX);
	int r = pos > 0 ? msix_from_cap(h, pos, &m) : pos;

	if (r < 0)
		return r;
	*ret = m;
	return 0;
}

static int read_info(struct device_handle *h, struct device_info *ret, char *msg, size_t msglen)
{
	struct vfio_device_info di = { .argsz = sizeof(di) };
	struct vfio_region_info cfg = { 0 };
	struct device_info info = { 0 };
	int r;

	if (ioctl(h->device_fd, VFIO_DEVICE_GET_INFO, &di) < 0)
		return fail(msg, msglen, -errno, "VFIO_DEVICE_GET_INFO: %m");
	if (!(di.flags & VFIO_DEVICE_FLAGS_PCI) || di.num_regions <= VFIO_PCI_CONFIG_REGION_INDEX)
		return fail(msg, msglen, -ENODEV, "the VFIO device is not a PCI device");
	r = region_info(h, VFIO_PCI_CONFIG_REGION_INDEX, &cfg);
	if (r < 0)
		return fail(msg, msglen, r, "reading the config space region: %s", strerror(-r));
	h->config_offset = cfg.offset;
	r = read_bars(h, info.bars);
	if (r < 0)
		return fail(msg, msglen, r, "reading the BARs: %s", strerror(-r));
	r = read_msix(h, &info.msix);
	if (r < 0)
		return fail(msg, msglen, r, "reading the MSI-X capability: %s", strerror(-r));
	*ret = info;
	return 0;
}

static int cfg_write16(const struct device_handle *h, unsigned off, uint16_t val)
{
	uint16_t le = htole16(val);
	ssize_t n = pwrite(h->device_fd, &le, sizeof(le), h->config_offset + off);

	if (n < 0)
		return -errno;
	return n == sizeof(le) ? 0 : -EIO;
}

/* A buffer exported while memory decode is off starts out revoked, so turn it on first, and
 * read it back: the register goes through VFIO's virtualization. */
static int enable_memory(const struct device_handle *h, char *msg, size_t msglen)
{
	uint16_t cmd = 0;
	int r = cfg_read16(h, PCI_COMMAND, &cmd);

	if (r == 0 && !(cmd & PCI_COMMAND_MEMORY))
		r = cfg_write16(h, PCI_COMMAND, cmd | PCI_COMMAND_MEMORY);
	if (r == 0)
		r = cfg_read16(h, PCI_COMMAND, &cmd);
	if (r == 0 && !(cmd & PCI_COMMAND_MEMORY))
		r = -EIO;
	if (r < 0)
		return fail(msg, msglen, r, "enabling memory decode: %s", strerror(-r));
	return 0;
}

static int set_irq_eventfd(const struct device_handle *h, unsigned index, int32_t efd)
{
	union {
		struct vfio_irq_set set;
		uint8_t bytes[sizeof(struct vfio_irq_set) + sizeof(int32_t)];
	} u = { 0 };

	u.set.argsz = sizeof(u.bytes);
	u.set.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
	u.set.index = index;
	u.set.start = 0;
	u.set.count = 1;
	memcpy(u.set.data, &efd, sizeof(efd));
	if (ioctl(h->device_fd, VFIO_DEVICE_SET_IRQS, &u) < 0)
		return -errno;
	return 0;
}

/* An eventfd signalled by IRQ index, or *ret_fd = -1 when the device has no such IRQ: ERR
 * exists on PCIe devices only, and for a conventional PCI device GET_IRQ_INFO refuses the
 * index with EINVAL rather than reporting count 0 (vfio_pci_core_ioctl_get_irq_info). */
static int arm_irq(const struct device_handle *h, unsigned index, int *ret_fd)
{
	struct vfio_irq_info ii = { .argsz = sizeof(ii), .index = index };
	_cleanup_close_ int efd = -1;
	int r;

	if (ioctl(h->device_fd, VFIO_DEVICE_GET_IRQ_INFO, &ii) < 0) {
		if (errno != EINVAL)
			return -errno;
		ii.count = 0;
	}
	if (ii.count < 1) {
		*ret_fd = -1;
		return 0;
	}
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0)
		return -errno;
	r = set_irq_eventfd(h, index, efd);
	if (r < 0)
		return r;
	*ret_fd = take_fd(&efd);
	return 0;
}

static int arm_events(struct device_handle *h, char *msg, size_t msglen)
{
	int r = arm_irq(h, VFIO_PCI_REQ_IRQ_INDEX, &h->req_fd);

	if (r < 0)
		return fail(msg, msglen, r, "arming the removal (REQ) eventfd: %s", strerror(-r));
	r = arm_irq(h, VFIO_PCI_ERR_IRQ_INDEX, &h->err_fd);
	if (r < 0)
		return fail(msg, msglen, r, "arming the error (ERR) eventfd: %s", strerror(-r));
	return 0;
}

/* ----- device_ops ----- */

/* Close order: the device first (this is the permanent revoke, and it disarms the IRQ
 * eventfds), then what it was attached through. May block until importers let go. */
static void vfio_close(struct device_handle *h)
{
	if (!h)
		return;
	closep(&h->device_fd);
	closep(&h->req_fd);
	closep(&h->err_fd);
	closep(&h->group_fd);
	closep(&h->container_fd);
	free(h);
}

static struct device_handle *handle_new(void)
{
	struct device_handle *h = calloc(1, sizeof(*h));

	if (h)
		h->container_fd = h->group_fd = h->device_fd = h->req_fd = h->err_fd = -1;
	return h;
}

/* From sysfs facts to a ready device: opened (iommufd, else legacy), export supported, events
 * armed (early, so that a removal during the rest is not missed), model read, memory decode
 * on. On failure h holds whatever was opened; the caller closes it. */
static int open_device(struct device_handle *h, const struct vfio_sysfs *s,
		       struct device_info *ret_info, char *msg, size_t msglen)
{
	int r = open_iommufd(h, s, msg, msglen);

	if (r > 0)
		r = open_legacy(h, s, msg, msglen);
	if (r == 0)
		r = probe_dma_buf(h, msg, msglen);
	if (r == 0)
		r = arm_events(h, msg, msglen);
	if (r == 0)
		r = read_info(h, ret_info, msg, msglen);
	if (r == 0)
		r = enable_memory(h, msg, msglen);
	return r;
}

/* On success msg also says how the device was reached, for the startup log. */
static int vfio_open(const struct policy_device *decl, struct device_handle **ret_handle,
		     struct device_info *ret_info, char *msg, size_t msglen)
{
	struct device_info info = { 0 };
	struct vfio_sysfs s = { 0 };
	struct device_handle *h;
	int r;

	if (decl->kind != POLICY_DEVICE_PCI)
		return fail(msg, msglen, -EINVAL, "%s is not a PCI device", decl->name);
	r = sysfs_check(decl->pci, &s, msg, msglen);
	if (r < 0)
		return r;
	h = handle_new();
	if (!h)
		return fail(msg, msglen, -ENOMEM, "out of memory");
	r = open_device(h, &s, &info, msg, msglen);
	if (r < 0) {
		vfio_close(h);
		return r;
	}
	if (h->path == VFIO_PATH_IOMMUFD)
		fail(msg, msglen, 0, "%s: vfio-pci through iommufd (/dev/vfio/devices/%s)", s.addr,
		     s.cdev);
	else
		fail(msg, msglen, 0, "%s: vfio-pci through legacy VFIO group %u", s.addr, s.group);
	*ret_info = info;
	*ret_handle = h;
	return 0;
}

/* Copy name into buf (DMA_BUF_NAME_LEN bytes, the kernel refuses longer), cut at a UTF-8
 * character boundary. */
static void dma_buf_name(const char *name, char buf[DMA_BUF_NAME_LEN])
{
	size_t len = strnlen(name, DMA_BUF_NAME_LEN - 1);

	if (name[len] != '\0')
		while (len > 0 && ((unsigned char)name[len] & 0xc0) == 0x80)
			len--;
	memcpy(buf, name, len);
	buf[len] = '\0';
}

static int set_name(int fd, const char *name)
{
	char buf[DMA_BUF_NAME_LEN];

	if (!name || !name[0])
		return 0;
	dma_buf_name(name, buf);
	if (ioctl(fd, DMA_BUF_SET_NAME_B, buf) < 0)
		return -errno;
	return 0;
}

/* One VFIO_DEVICE_FEATURE(GET, DMA_BUF) call: header, dma_buf and the ranges in one buffer
 * whose argsz is its exact size. Returns the new dma-buf fd (the ioctl's result) or -errno. */
static int feature_dma_buf(const struct device_handle *h, unsigned bar, const struct range *ranges,
			   size_t n)
{
	struct vfio_device_feature_dma_buf *db;
	struct vfio_device_feature *f;
	size_t size = sizeof(*f) + sizeof(*db) + n * sizeof(struct vfio_region_dma_range);
	int fd;

	f = calloc(1, size);
	if (!f)
		return -ENOMEM;
	f->argsz = size;
	f->flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF;
	db = (struct vfio_device_feature_dma_buf *)f->data;
	db->region_index = VFIO_PCI_BAR0_REGION_INDEX + bar;
	db->open_flags = O_RDWR | O_CLOEXEC;
	db->nr_ranges = n;
	for (size_t i = 0; i < n; i++)
		db->dma_ranges[i] =
		    (struct vfio_region_dma_range){ ranges[i].offset, ranges[i].length };
	fd = ioctl(h->device_fd, VFIO_DEVICE_FEATURE, f);
	if (fd < 0)
		fd = -errno;
	free(f);
	return fd;
}

/* The kernel's errno is returned as is: EINVAL for an unaligned, empty or out-of-BAR range or
 * an I/O BAR, ENODEV for a missing BAR (or the upper half of a 64-bit one) or a device going
 * away, EOVERFLOW for a range that wraps. */
static int vfio_export_ranges(struct device_handle *h, unsigned bar, const struct range *ranges,
			      size_t n, const char *name, int *ret_fd)
{
	_cleanup_close_ int fd = -1;
	int r;

	if (!h || !ranges || n == 0 || bar >= DEVICE_MAX_BARS)
		return -EINVAL;
	if (n > VFIO_MAX_RANGES)
		return -E2BIG;
	fd = feature_dma_buf(h, bar, ranges, n);
	if (fd < 0)
		return fd;
	r = set_name(fd, name);
	if (r < 0)
		return r;
	*ret_fd = take_fd(&fd);
	return 0;
}

/* fdinfo's "count:" is file_count() of the dma-buf minus the reference procfs takes while it
 * prints (dma_buf_show_fdinfo), i.e. every reference to the buffer's file: each fd of it in
 * any process, each SCM_RIGHTS message in flight, each importer's hold. Measured in the VM
 * (Debian 7.2.13, legacy and iommufd paths alike), starting from one export:
 *   fresh export 1; after F_DUPFD_CLOEXEC 2 (and 1 again once the dup is closed);
 *   sent over SCM_RIGHTS, not yet received 2; received by another process 2; a second copy
 *   in flight 3; the receiver closes one 2; the receiver exits 1;
 *   after fork() 2 (the child's copy of our fd table), 1 once the child is gone;
 *   an iommufd importer's IOMMU_IOAS_MAP_FILE 2, still 2 after the device was closed and the
 *   buffer revoked (the mapping keeps its reference until unmapped or its iommufd closed).
 * So the holders besides the one fd we read are count - 1. A concurrent reader (another
 * fdinfo read, the kernel's revoke walk) adds one for an instant: the figure can be briefly
 * too high, never too low. */
static int vfio_holders(struct device_handle *h, int fd)
{
	char path[64], buf[VFIO_FDINFO_MAX];
	_cleanup_close_ int f = -1;
	const char *p;
	size_t len = 0;
	ssize_t n = 0;
	long count;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = open(path, O_RDONLY | O_CLOEXEC);
	if (f < 0)
		return errno == ENOENT ? -EBADF : -errno;
	while (len < sizeof(buf) - 1 && (n = read(f, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += n;
	if (n < 0)
		return -errno;
	buf[len] = '\0';
	p = strstr(buf, "\ncount:");
	if (!p || !strstr(buf, "\nexp_name:"))
		return -EOPNOTSUPP; /* not a dma-buf */
	if (sscanf(p, "\ncount: %ld", &count) != 1 || count < 1 || count > INT_MAX)
		return -EIO;
	return count - 1;
}

static void vfio_event_fds(struct device_handle *h, int *ret_req_fd, int *ret_err_fd)
{
	*ret_req_fd = h ? h->req_fd : -1;
	*ret_err_fd = h ? h->err_fd : -1;
}

/* The fds whose close would revoke the device's buffers: the device and what it hangs on. */
static size_t vfio_park(struct device_handle *h, struct parked_fd *fds)
{
	size_t n = 0;

	fds[n++] = (struct parked_fd){ h->path == VFIO_PATH_IOMMUFD ? "iommufd" : "container",
				       h->container_fd };
	if (h->group_fd >= 0)
		fds[n++] = (struct parked_fd){ "group", h->group_fd };
	fds[n++] = (struct parked_fd){ "device", h->device_fd };
	return n;
}

static int parked(const struct parked_fd *fds, size_t n, const char *role)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(fds[i].role, role) == 0)
			return fds[i].fd;
	return -1;
}

/* The last path component of what fd is open on ("12" for /dev/vfio/12, "vfio3" for
 * /dev/vfio/devices/vfio3), to check a parked fd is the node sysfs names. */
static int fd_node(int fd, char *buf, size_t len)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return link_name(path, buf, len);
}

/* Take over a device a previous instance opened: the fds must be the nodes that sysfs names
 * for decl's address today (its group, or its cdev). Nothing is reopened or reset, so the
 * buffers exported from it stay alive; events are re-armed with new eventfds. */
static int vfio_adopt(const struct policy_device *decl, struct parked_fd *fds, size_t n,
		      struct device_handle **ret_handle, struct device_info *ret_info, char *msg,
		      size_t msglen)
{
	struct vfio_sysfs s = { 0 };
	char node[NAME_MAX + 1], want[NAME_MAX + 1];
	int container = parked(fds, n, "container"), iommufd = parked(fds, n, "iommufd");
	int group = parked(fds, n, "group"), device = parked(fds, n, "device");
	int r = sysfs_check(decl->pci, &s, msg, msglen);

	if (r < 0)
		return r;
	if (device < 0 || (iommufd < 0 && (container < 0 || group < 0)))
		return fail(msg, msglen, -EBADF, "%s: the parked fds are incomplete", decl->pci);
	if (iommufd >= 0)
		snprintf(want, sizeof(want), "%s", s.cdev);
	else
		snprintf(want, sizeof(want), "%u", s.group);
	r = fd_node(iommufd >= 0 ? device : group, node, sizeof(node));
	if (r < 0 || strcmp(node, want) != 0)
		return fail(msg, msglen, -ENODEV,
			    "%s: the parked fd is not this device's (%s, not %s)", decl->pci,
			    r < 0 ? "unreadable" : node, want);
	struct device_handle *h = handle_new();
	if (!h)
		return fail(msg, msglen, -ENOMEM, "out of memory");
	h->path = iommufd >= 0 ? VFIO_PATH_IOMMUFD : VFIO_PATH_LEGACY;
	h->container_fd = iommufd >= 0 ? iommufd : container;
	h->group_fd = iommufd >= 0 ? -1 : group;
	h->device_fd = device;
	r = arm_events(h, msg, msglen);
	if (r == 0)
		r = read_info(h, ret_info, msg, msglen);
	if (r == 0)
		r = enable_memory(h, msg, msglen);
	if (r < 0) {
		/* The caller closes the fds it still owns: hand them back. */
		h->container_fd = h->group_fd = h->device_fd = -1;
		vfio_close(h);
		return r;
	}
	fail(msg, msglen, 0, "%s: taken over from the previous instance (%s)", s.addr,
	     h->path == VFIO_PATH_IOMMUFD ? "iommufd" : "legacy VFIO group");
	*ret_handle = h;
	return 0;
}

const struct device_ops vfio_ops = {
	.name = "vfio",
	.open = vfio_open,
	.close = vfio_close,
	.export_ranges = vfio_export_ranges,
	.holders = vfio_holders,
	.event_fds = vfio_event_fds,
	.park = vfio_park,
	.adopt = vfio_adopt,
};
