/* Kernel capability probes shared by p2pbufd and p2pbuf-client doctor (probe.h). Each answer
 * comes from something the kernel did when asked (a node opened, an ioctl answered); what can
 * only be read off the version number is left to the caller to label as inferred. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "macro.h"
#include "probe-uapi.h"
#include "pcisys.h"
#include "probe.h"
#include "sysroot.h"

/* Kernels known to be bad for this use, with the release that fixed each (KERNEL.md §6). The
 * one place that names them: doctor and the daemon both ask probe_known_issue_next(). */
static const struct probe_known_issue known_issues[] = {
	{
	    .id = "CVE-2026-74328",
	    .summary = "iommufd dma-buf import flaw",
	    .first = { 6, 19, 0 },
	    .last = { 7, 1, 4 },
	    .fixed = { 7, 1, 5 },
	},
};

/* Linux 6.19 added VFIO_DEVICE_FEATURE_DMA_BUF, and iommufd's IOMMU_IOAS_MAP_FILE took VFIO
 * dma-bufs from the same release on (the CVE above covers that path from 6.19). */
const struct probe_version probe_since_dma_buf_export = { 6, 19, 0 };
const struct probe_version probe_since_map_file_dma_buf = { 6, 19, 0 };
/* VFIO_DEVICE_FEATURE_DMA_BUF_REVOKE was posted (its number not settled) but is in none of
 * these; a number from an unreleased series is never probed. */
const char probe_revoke_checked[] = "6.19, 7.2, 7.3";

static void reason(char buf[PROBE_REASON_MAX], const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void reason(char buf[PROBE_REASON_MAX], const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, PROBE_REASON_MAX, fmt, ap);
	va_end(ap);
}

const char *probe_answer_name(enum probe_answer a)
{
	return a == PROBE_YES ? "yes" : a == PROBE_NO ? "no" : "unknown";
}

int probe_kernel_release(const char *root, char ret[PROBE_RELEASE_MAX])
{
	struct utsname u;

	if (root && root[0]) {
		int r =
		    sysroot_read_file(root, ret, PROBE_RELEASE_MAX, "/proc/sys/kernel/osrelease");
		return r < 0 ? r : 0;
	}
	if (uname(&u) < 0)
		return -errno;
	return sysroot_copy(ret, PROBE_RELEASE_MAX, u.release);
}

/* Decimal digits at *s, advancing it; -1 if there are none or too many. */
static long parse_number(const char **s)
{
	long v = 0;
	const char *p = *s;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (*p - '0');
		if (v > 100000)
			return -1;
	}
	*s = p;
	return v;
}

int probe_parse_version(const char *release, struct probe_version *ret)
{
	const char *s = release;
	long major = parse_number(&s), minor = -1, patch = 0;

	if (major >= 0 && *s == '.') {
		s++;
		minor = parse_number(&s);
	}
	if (minor < 0)
		return -EINVAL;
	if (*s == '.') {
		s++;
		patch = parse_number(&s);
		if (patch < 0)
			return -EINVAL;
	}
	*ret = (struct probe_version){ (unsigned)major, (unsigned)minor, (unsigned)patch };
	return 0;
}

int probe_version_cmp(const struct probe_version *a, const struct probe_version *b)
{
	if (a->major != b->major)
		return a->major < b->major ? -1 : 1;
	if (a->minor != b->minor)
		return a->minor < b->minor ? -1 : 1;
	if (a->patch != b->patch)
		return a->patch < b->patch ? -1 : 1;
	return 0;
}

char *probe_format_version(const struct probe_version *v, char *buf, size_t len)
{
	if (v->patch)
		snprintf(buf, len, "%u.%u.%u", v->major, v->minor, v->patch);
	else
		snprintf(buf, len, "%u.%u", v->major, v->minor);
	return buf;
}

const struct probe_known_issue *probe_known_issue_next(const struct probe_version *v,
						       const struct probe_known_issue *prev)
{
	size_t i = prev ? (size_t)(prev - known_issues) + 1 : 0;

	for (; i < ARRAY_SIZE(known_issues); i++)
		if (probe_version_cmp(v, &known_issues[i].first) >= 0 &&
		    probe_version_cmp(v, &known_issues[i].last) <= 0)
			return &known_issues[i];
	return NULL;
}

/* ---- nodes ---- */

static enum probe_answer probe_iommufd(const char *root, char why[PROBE_REASON_MAX])
{
	char p[SYSROOT_PATH_MAX];
	_cleanup_close_ int fd = -1;

	if (sysroot_path(root, p, sizeof(p), "/dev/iommu") < 0)
		return reason(why, "path too long"), PROBE_UNKNOWN;
	fd = open(p, O_RDWR | O_CLOEXEC);
	if (fd >= 0)
		return reason(why, "/dev/iommu opens"), PROBE_YES;
	if (errno == ENOENT || errno == ENXIO || errno == ENODEV)
		return reason(why,
			      "no /dev/iommu: the kernel is built without CONFIG_IOMMUFD or the "
			      "iommufd module is not loaded"),
		       PROBE_NO;
	return reason(why, "cannot open /dev/iommu: %s", strerror(errno)), PROBE_UNKNOWN;
}

/* The first "vfioN" entry into name: of /dev/vfio/devices, or with address of the device's
 * sysfs vfio-dev directory. Returns 0, or -errno (-ENOENT: none). */
static int first_vfio_entry(const char *root, const char *address, char *name, size_t len)
{
	char p[SYSROOT_PATH_MAX];
	DIR *d;
	struct dirent *e;
	int r = -ENOENT;

	if ((address ? sysroot_path(root, p, sizeof(p), "/sys/bus/pci/devices/%s/vfio-dev", address)
		     : sysroot_path(root, p, sizeof(p), "/dev/vfio/devices")) < 0)
		return -ENAMETOOLONG;
	d = opendir(p);
	if (!d)
		return -errno;
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, "vfio", 4) && e->d_name[4] >= '0' && e->d_name[4] <= '9') {
			r = sysroot_copy(name, len, e->d_name);
			break;
		}
	closedir(d);
	return r;
}

/* A vfio-pci device's sysfs vfio-dev/vfioN, which exists even where the kernel makes no
 * /dev/vfio/devices node for it: *ret_address and *ret_node of the first one found. */
static bool find_sysfs_vfio_dev(const char *root, char ret_address[PCISYS_ADDR_MAX], char *ret_node,
				size_t nlen)
{
	char vfio[32][PCISYS_ADDR_MAX];
	int n = pcisys_vfio_devices(root, vfio, ARRAY_SIZE(vfio));

	for (int i = 0; i < n && i < (int)ARRAY_SIZE(vfio); i++)
		if (first_vfio_entry(root, vfio[i], ret_node, nlen) == 0) {
			memcpy(ret_address, vfio[i], PCISYS_ADDR_MAX);
			return true;
		}
	return false;
}

static enum probe_answer probe_vfio_cdev(const char *root, char why[PROBE_REASON_MAX])
{
	char node[NAME_MAX + 1], address[PCISYS_ADDR_MAX], p[SYSROOT_PATH_MAX];
	_cleanup_close_ int fd = -1;
	int r = first_vfio_entry(root, NULL, node, sizeof(node));

	if (r == 0) {
		if (sysroot_path(root, p, sizeof(p), "/dev/vfio/devices/%s", node) < 0)
			return reason(why, "path too long"), PROBE_UNKNOWN;
		fd = open(p, O_RDWR | O_CLOEXEC);
		if (fd >= 0)
			return reason(why, "/dev/vfio/devices/%s opens", node), PROBE_YES;
		/* A cdev opens once: EBUSY is the kernel's cdev answering that it is held. */
		if (errno == EBUSY)
			return reason(why, "/dev/vfio/devices/%s exists and is held (EBUSY)", node),
			       PROBE_YES;
		return reason(why, "cannot open /dev/vfio/devices/%s: %s", node, strerror(errno)),
		       PROBE_UNKNOWN;
	}
	if (find_sysfs_vfio_dev(root, address, node, sizeof(node)))
		return reason(why,
			      "sysfs shows %s's vfio-dev/%s but /dev/vfio/devices/%s does not "
			      "exist: the kernel is built without CONFIG_VFIO_DEVICE_CDEV",
			      address, node, node),
		       PROBE_NO;
	return reason(why, "no device is bound to vfio-pci, so there is no cdev node to open"),
	       PROBE_UNKNOWN;
}

void probe_caps(const char *root, struct probe_caps *ret)
{
	*ret = (struct probe_caps){ 0 };
	if (probe_kernel_release(root, ret->release) < 0)
		ret->release[0] = '\0';
	ret->iommufd = probe_iommufd(root, ret->iommufd_reason);
	ret->vfio_cdev = probe_vfio_cdev(root, ret->vfio_cdev_reason);
	ret->dma_buf_export = PROBE_UNKNOWN;
	reason(ret->dma_buf_export_reason, "not probed: it needs an open vfio-pci device");
	ret->per_buffer_revoke = PROBE_NO;
	reason(ret->per_buffer_revoke_reason, "not available in any released kernel (checked: %s)",
	       probe_revoke_checked);
}

/* ---- the dma-buf export ---- */

enum probe_answer probe_dma_buf_export(int device_fd, char why[PROBE_REASON_MAX])
{
	struct vfio_device_feature f = {
		.argsz = sizeof(f),
		.flags = VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET |
			 VFIO_DEVICE_FEATURE_DMA_BUF,
	};

	if (ioctl(device_fd, VFIO_DEVICE_FEATURE, &f) == 0)
		return reason(why, "VFIO_DEVICE_FEATURE PROBE|GET|DMA_BUF succeeded"), PROBE_YES;
	if (errno == ENOTTY)
		return reason(why, "ENOTTY: the kernel is older than 6.19 or built without "
				   "CONFIG_VFIO_PCI_DMABUF"),
		       PROBE_NO;
	if (errno == EOPNOTSUPP)
		return reason(why, "EOPNOTSUPP: the device's VFIO driver does not export dma-bufs "
				   "(only vfio-pci and nvgrace-gpu do)"),
		       PROBE_NO;
	return reason(why, "VFIO_DEVICE_FEATURE PROBE failed: %s", strerror(errno)), PROBE_UNKNOWN;
}

/* The fds of a device opened for the probe, closed together. */
struct probe_open {
	int iommufd, container, group, device;
};

static void probe_open_close(struct probe_open *o)
{
	closep(&o->device);
	closep(&o->group);
	closep(&o->container);
	closep(&o->iommufd);
}

/* Open root + path read-write; a node that is not a character device (a test tree's file) is
 * refused with -ENOTTY before any ioctl could misread it. Returns the fd or -errno. */
static int open_node(const char *root, const char *path)
{
	char p[SYSROOT_PATH_MAX];
	struct stat st;
	int fd;

	if (sysroot_path(root, p, sizeof(p), "%s", path) < 0)
		return -ENAMETOOLONG;
	fd = open(p, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode)) {
		close(fd);
		return -ENOTTY;
	}
	return fd;
}

/* Say why node could not be opened. */
static enum probe_answer open_failed(char why[PROBE_REASON_MAX], const char *address,
				     const char *node, int err)
{
	if (err == -EBUSY)
		reason(why, "%s is in use (p2pbufd or another program holds it)", address);
	else if (err == -ENOTTY)
		reason(why, "%s is not a character device", node);
	else if (err == -EACCES || err == -EPERM)
		reason(why, "cannot open %s: %s (run as root)", node, strerror(-err));
	else
		reason(why, "cannot open %s: %s", node, strerror(-err));
	return PROBE_UNKNOWN;
}

static enum probe_answer open_cdev(const char *root, const char *address, const char *node,
				   struct probe_open *o, char why[PROBE_REASON_MAX])
{
	char rel[NAME_MAX + 32];
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };

	if (sysroot_path(NULL, rel, sizeof(rel), "/dev/vfio/devices/%s", node) < 0)
		return reason(why, "path too long"), PROBE_UNKNOWN;
	if ((o->iommufd = open_node(root, "/dev/iommu")) < 0)
		return open_failed(why, address, "/dev/iommu", o->iommufd);
	if ((o->device = open_node(root, rel)) < 0)
		return open_failed(why, address, rel, o->device);
	bind.iommufd = o->iommufd;
	if (ioctl(o->device, VFIO_DEVICE_BIND_IOMMUFD, &bind) < 0)
		return reason(why, "VFIO_DEVICE_BIND_IOMMUFD on %s: %s", rel, strerror(errno)),
		       PROBE_UNKNOWN;
	return PROBE_YES;
}

static enum probe_answer open_group(const char *root, const char *address, const char *group,
				    struct probe_open *o, char why[PROBE_REASON_MAX])
{
	char rel[NAME_MAX + 32];
	struct vfio_group_status st = { .argsz = sizeof(st) };

	if (sysroot_path(NULL, rel, sizeof(rel), "/dev/vfio/%s", group) < 0)
		return reason(why, "path too long"), PROBE_UNKNOWN;
	if ((o->container = open_node(root, "/dev/vfio/vfio")) < 0)
		return open_failed(why, address, "/dev/vfio/vfio", o->container);
	if ((o->group = open_node(root, rel)) < 0)
		return open_failed(why, address, rel, o->group);
	if (ioctl(o->group, VFIO_GROUP_GET_STATUS, &st) < 0)
		return reason(why, "VFIO_GROUP_GET_STATUS on %s: %s", rel, strerror(errno)),
		       PROBE_UNKNOWN;
	if (!(st.flags & VFIO_GROUP_FLAGS_VIABLE))
		return reason(why,
			      "IOMMU group %s is not viable: another member is bound to a "
			      "driver that uses DMA",
			      group),
		       PROBE_UNKNOWN;
	if (ioctl(o->group, VFIO_GROUP_SET_CONTAINER, &o->container) < 0 ||
	    ioctl(o->container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0)
		return reason(why, "cannot attach group %s to a type1 container: %s", group,
			      strerror(errno)),
		       PROBE_UNKNOWN;
	if ((o->device = ioctl(o->group, VFIO_GROUP_GET_DEVICE_FD, address)) < 0)
		return open_failed(why, address, rel, -errno);
	return PROBE_YES;
}

enum probe_answer probe_dma_buf_export_device(const char *root, const char *address,
					      char why[PROBE_REASON_MAX])
{
	struct probe_open o = { -1, -1, -1, -1 };
	char driver[PCISYS_NAME_MAX], group[32], node[NAME_MAX + 1];
	enum probe_answer a;

	if (pcisys_device_link(root, address, "driver", driver, sizeof(driver)) < 0)
		return reason(why, "%s is bound to no driver, not vfio-pci", address),
		       PROBE_UNKNOWN;
	if (!strstr(driver, "vfio"))
		return reason(why, "%s is bound to %s, not vfio-pci", address, driver),
		       PROBE_UNKNOWN;
	if (first_vfio_entry(root, address, node, sizeof(node)) == 0 &&
	    probe_iommufd(root, why) == PROBE_YES)
		a = open_cdev(root, address, node, &o, why);
	else if (pcisys_device_link(root, address, "iommu_group", group, sizeof(group)) == 0)
		a = open_group(root, address, group, &o, why);
	else
		a = (reason(why, "%s has no IOMMU group", address), PROBE_UNKNOWN);
	if (a == PROBE_YES) {
		char answer[PROBE_REASON_MAX];
		a = probe_dma_buf_export(o.device, answer);
		reason(why, "%s: %s", address, answer);
	}
	probe_open_close(&o);
	return a;
}
