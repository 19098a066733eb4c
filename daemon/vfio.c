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
 * Devices of one IOMMU group (functions of a multifunction slot, devices behind a PCIe-to-PCI
 * bridge) share what the kernel lets exist once per group: on the legacy path the group fd
 * (/dev/vfio/N opens once, system-wide) and its container, on the iommufd path the iommufd
 * that every device of the group must be bound to (the group's DMA owner; a second iommufd
 * gets EPERM). Each device keeps its own device fd, so closing it still revokes only that
 * device's buffers; the shared part is closed with the group's last device.
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
#include <pthread.h>

#include "device.h"
#include "macro.h"
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

struct device_handle;

/* What the open devices of one IOMMU group share. Its fds do not change while it has
 * members, except that a share taken over without them (-1) gets them from a device adopted
 * later (vfio_adopt), under the table's lock. */
struct vfio_share {
	unsigned group; /* IOMMU group number */
	enum vfio_path path;
	/* legacy: /dev/vfio/vfio; iommufd: /dev/iommu; -1: the previous instance's devices were
	 * taken over without it, and their device fds alone keep it alive in the kernel */
	int container_fd;
	int group_fd; /* legacy: /dev/vfio/GROUP (-1 as container_fd); iommufd: -1 */
	struct device_handle *members; /* every handle attached, linked by next_member */
	struct vfio_share *next;
};

struct device_handle {
	enum vfio_path path;
	struct vfio_share *share; /* NULL until attached */
	struct device_handle *next_member;
	int device_fd;
	int req_fd;		/* eventfd: device being removed (-1: none) */
	int err_fd;		/* eventfd: AER error reported (-1: none) */
	uint64_t config_offset; /* of the config space region in device_fd */
	char addr[16];
	char name[POLICY_MAX_NAME + 1]; /* the policy's name, for messages about the group */
};

/* The shares of every group this process has open. A file-wide table, because what it
 * mirrors is process-wide in the kernel: a group opens once, and its DMA owner is one
 * iommufd; the device_ops interface has no backend instance to hang it on. The lock is held
 * only for lookups and for opening a group's shared part (a few ioctls that do not wait),
 * never while a device is opened or closed (which reset it and wait for importers). */
static struct {
	pthread_mutex_t lock;
	struct vfio_share *list;
} shares = { PTHREAD_MUTEX_INITIALIZER, NULL };

/* What sysfs says about the device before anything is opened. */
struct vfio_sysfs {
	char addr[16];
	unsigned group; /* IOMMU group number */
	char cdev[32];	/* "vfioN" under vfio-dev/, "" when absent */
};

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

/* The last component of path into buf. */
static int last_component(const char *path, char *buf, size_t len)
{
	const char *base = strrchr(path, '/');

	base = base ? base + 1 : path;
	if (strlen(base) >= len)
		return -ENAMETOOLONG;
	strcpy(buf, base);
	return 0;
}

/* The last component of the symlink at path into buf: a driver or group name. */
static int link_name(const char *path, char *buf, size_t len)
{
	char target[PATH_MAX];
	ssize_t n = readlink(path, target, sizeof(target) - 1);

	if (n < 0)
		return -errno;
	target[n] = '\0';
	return last_component(target, buf, len);
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

/* List into out the members of group other than self, as "ADDR (driver), ...": only those
 * that keep it from being viable when blockers_only. Returns how many. */
static int group_members(unsigned group, const char *self, bool blockers_only, char *out,
			 size_t outlen)
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
		    (blockers_only && member_harmless(de->d_name)))
			continue;
		if (device_link(de->d_name, "driver", drv, sizeof(drv)) < 0)
			strcpy(drv, "no driver");
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

	if (group_members(s->group, s->addr, true, who, sizeof(who)) > 0)
		return fail(msg, msglen, -EBUSY,
			    "IOMMU group %u of %s is not viable: %s must be bound to vfio-pci "
			    "or unbound (p2pbuf-vfio-bind)",
			    s->group, s->addr, who);
	return fail(msg, msglen, -EBUSY,
		    "IOMMU group %u of %s is not viable: another of its devices is in use",
		    s->group, s->addr);
}

/* ----- what the devices of one group share (callers hold shares.lock) ----- */

static struct vfio_share *share_find(unsigned group)
{
	for (struct vfio_share *sh = shares.list; sh; sh = sh->next)
		if (sh->group == group)
			return sh;
	return NULL;
}

static const struct device_handle *share_member(const struct vfio_share *sh, const char *addr)
{
	for (const struct device_handle *m = sh->members; m; m = m->next_member)
		if (!strcmp(m->addr, addr))
			return m;
	return NULL;
}

/* The members of sh other than self into out, as "NAME (ADDR), ...". Returns how many. */
static int share_names(const struct vfio_share *sh, const struct device_handle *self, char *out,
		       size_t outlen)
{
	size_t used = 0;
	int n = 0;

	out[0] = '\0';
	for (const struct device_handle *m = sh->members; m; m = m->next_member) {
		if (m == self)
			continue;
		if (used < outlen)
			used += snprintf(out + used, outlen - used, "%s\"%s\" (%s)", n ? ", " : "",
					 m->name, m->addr);
		n++;
	}
	return n;
}

/* The same for h's own share, taking the lock: for messages from outside it. */
static int share_others(const struct device_handle *h, char *out, size_t outlen)
{
	int n = 0;

	out[0] = '\0';
	pthread_mutex_lock(&shares.lock);
	if (h->share)
		n = share_names(h->share, h, out, outlen);
	pthread_mutex_unlock(&shares.lock);
	return n;
}

/* A new share of group, owning *container_fd and *group_fd (either may be -1). */
static int share_new(unsigned group, enum vfio_path path, int *container_fd, int *group_fd,
		     struct vfio_share **ret)
{
	struct vfio_share *sh = calloc(1, sizeof(*sh));

	if (!sh)
		return -ENOMEM;
	*sh = (struct vfio_share){ .group = group,
				   .path = path,
				   .container_fd = TAKE_FD(*container_fd),
				   .group_fd = TAKE_FD(*group_fd),
				   .next = shares.list };
	shares.list = sh;
	*ret = sh;
	return 0;
}

static void share_link(struct vfio_share *sh, struct device_handle *h)
{
	h->share = sh;
	h->path = sh->path;
	h->next_member = sh->members;
	sh->members = h;
}

/* Detach h; the group's last device closes the share: the group first, then the container it
 * was attached to (nothing is left that could wait on importers). */
static void share_unlink(struct device_handle *h)
{
	struct vfio_share *sh = h->share, **p;
	struct device_handle **m;

	if (!sh)
		return;
	for (m = &sh->members; *m && *m != h; m = &(*m)->next_member)
		;
	if (*m)
		*m = h->next_member;
	h->share = NULL;
	if (sh->members)
		return;
	for (p = &shares.list; *p && *p != sh; p = &(*p)->next)
		;
	if (*p)
		*p = sh->next;
	closep(&sh->group_fd);
	closep(&sh->container_fd);
	free(sh);
}

/* ----- opening: iommufd + cdev ----- */

/* The device's cdev, opened and not yet bound; -errno where this kernel has none for it. */
static int cdev_open(const struct vfio_sysfs *s)
{
	char path[PATH_MAX];
	int fd;

	if (!s->cdev[0])
		return -ENOENT;
	snprintf(path, sizeof(path), "/dev/vfio/devices/%s", s->cdev);
	fd = open(path, O_RDWR | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* Whether another process uses group: its node opens only while nobody has it open and no
 * device of it is bound to an iommufd (vfio_group_fops_open). Opened and closed at once.
 * Returns 0 (unused), -EBUSY (in use), or another -errno (no group node: cannot tell). */
static int group_in_use(unsigned group)
{
	_cleanup_close_ int fd = -1;
	char path[64];

	snprintf(path, sizeof(path), "/dev/vfio/%u", group);
	fd = open(path, O_RDWR | O_CLOEXEC);
	return fd < 0 ? -errno : 0;
}

/* Binding gave EPERM: iommufd_device_bind() refuses a group whose interrupts cannot be
 * isolated, then claims the group's DMA ownership for this iommufd, which fails while a member's
 * driver uses the DMA API or another iommufd owns the group. Say which. */
static int bind_refused(const struct device_handle *h, const struct vfio_sysfs *s, char *msg,
			size_t msglen)
{
	char who[256];
	int r;

	if (share_others(h, who, sizeof(who)) > 0)
		return fail(msg, msglen, -EPERM,
			    "iommufd refused %s although %s of the same IOMMU group %u is bound to "
			    "p2pbufd's own iommufd",
			    s->addr, who, s->group);
	if (group_members(s->group, s->addr, true, who, sizeof(who)) > 0)
		return fail_not_viable(s, msg, msglen);
	r = group_in_use(s->group);
	group_members(s->group, s->addr, false, who, sizeof(who));
	if (r == -EBUSY)
		return fail(msg, msglen, -EBUSY,
			    "IOMMU group %u of %s is in use by another process (its devices: %s)",
			    s->group, s->addr, who[0] ? who : "only this one");
	if (r == 0)
		return fail(msg, msglen, -EPERM,
			    "iommufd refused %s: the IOMMU cannot isolate the interrupts of its "
			    "IOMMU group %u (turn on interrupt remapping: intel_iommu=on or "
			    "amd_iommu=on, and in the firmware)",
			    s->addr, s->group);
	return fail(msg, msglen, -EPERM,
		    "iommufd refused %s: another process has bound a device of IOMMU group %u "
		    "(%s) to its own iommufd, or the IOMMU cannot isolate the group's interrupts "
		    "(then turn on interrupt remapping)",
		    s->addr, s->group, who[0] ? who : "only this one");
}

static int bind_error(const struct device_handle *h, const struct vfio_sysfs *s, int err, char *msg,
		      size_t msglen)
{
	switch (err) {
	case -EBUSY: /* vfio_device_block_group: the group is open through the legacy interface */
		return fail(msg, msglen, -EBUSY,
			    "IOMMU group %u of %s is open in another process (/dev/vfio/%u)",
			    s->group, s->addr, s->group);
	case -EINVAL: /* vfio_df_open: a cdev device may be open only once */
		return fail(msg, msglen, -EBUSY,
			    "%s is already open (/dev/vfio/devices/%s) in another process", s->addr,
			    s->cdev);
	case -EPERM:
		return bind_refused(h, s, msg, msglen);
	default:
		return fail(msg, msglen, err, "binding %s to iommufd failed: %s", s->addr,
			    strerror(-err));
	}
}

/* Bind h's cdev (opened by share_open for the group's first device) to the group's iommufd. */
static int member_bind(struct device_handle *h, const struct vfio_sysfs *s, char *msg,
		       size_t msglen)
{
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };

	if (h->device_fd < 0)
		h->device_fd = cdev_open(s);
	if (h->device_fd < 0) {
		int r = h->device_fd;

		h->device_fd = -1;
		return fail(
		    msg, msglen, r == -ENOENT ? -ENODEV : r,
		    "%s cannot be opened through its cdev (%s), but p2pbufd holds its IOMMU "
		    "group %u through iommufd: %s",
		    s->addr, s->cdev[0] ? s->cdev : "none", s->group, strerror(-r));
	}
	bind.iommufd = h->share->container_fd;
	if (ioctl(h->device_fd, VFIO_DEVICE_BIND_IOMMUFD, &bind) < 0)
		return bind_error(h, s, -errno, msg, msglen);
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
	*ret_fd = TAKE_FD(fd);
	return 0;
}

static int legacy_group(const struct vfio_sysfs *s, int *ret_fd, char *msg, size_t msglen)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };
	_cleanup_close_ int fd = -1;
	char path[64], who[256];

	snprintf(path, sizeof(path), "/dev/vfio/%u", s->group);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 && errno == EBUSY) {
		/* Not p2pbufd itself: its own devices of the group share the open group. */
		group_members(s->group, s->addr, false, who, sizeof(who));
		return fail(msg, msglen, -EBUSY,
			    "IOMMU group %u of %s is already open in another process (its other "
			    "devices: %s)",
			    s->group, s->addr, who[0] ? who : "none");
	}
	if (fd < 0)
		return fail(msg, msglen, -errno, "cannot open %s for %s: %m", path, s->addr);
	if (ioctl(fd, VFIO_GROUP_GET_STATUS, &status) < 0)
		return fail(msg, msglen, -errno, "VFIO_GROUP_GET_STATUS on %s: %m", path);
	if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE))
		return fail_not_viable(s, msg, msglen);
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* The group, in a type1v2 container of its own: what every device of the group hangs on. */
static int legacy_open(const struct vfio_sysfs *s, int *ret_container, int *ret_group, char *msg,
		       size_t msglen)
{
	_cleanup_close_ int container = -1, group = -1;
	int r = legacy_container(s, &container, msg, msglen);

	if (r == 0)
		r = legacy_group(s, &group, msg, msglen);
	if (r < 0)
		return r;
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0)
		return fail(msg, msglen, -errno, "VFIO_GROUP_SET_CONTAINER for %s: %m", s->addr);
	r = ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0 ? -errno : 0;
	if (r == -EPERM) /* vfio_iommu_type1_attach_group: no isolated MSI */
		return fail(msg, msglen, r,
			    "the IOMMU cannot isolate the interrupts of IOMMU group %u of %s (turn "
			    "on interrupt remapping: intel_iommu=on or amd_iommu=on, and in the "
			    "firmware)",
			    s->group, s->addr);
	if (r < 0)
		return fail(msg, msglen, r, "VFIO_SET_IOMMU for %s: %s", s->addr, strerror(-r));
	*ret_container = TAKE_FD(container);
	*ret_group = TAKE_FD(group);
	return 0;
}

/* Ask the shared group for h's device. The kernel installs the fd with O_CLOEXEC (group.c,
 * FD_ADD). A device may be opened several times through its group, so share_join refuses a
 * second handle of one address: a copy would keep the device open across a cycle. */
static int member_get(struct device_handle *h, const struct vfio_sysfs *s, char *msg, size_t msglen)
{
	char who[256];
	int fd = ioctl(h->share->group_fd, VFIO_GROUP_GET_DEVICE_FD, s->addr), r = -errno;

	if (fd >= 0) {
		h->device_fd = fd;
		return 0;
	}
	if (share_others(h, who, sizeof(who)) > 0)
		return fail(msg, msglen, r,
			    "VFIO_GROUP_GET_DEVICE_FD for %s (IOMMU group %u, open for %s too): %s",
			    s->addr, s->group, who, strerror(-r));
	return fail(msg, msglen, r, "VFIO_GROUP_GET_DEVICE_FD for %s: %s", s->addr, strerror(-r));
}

/* ----- joining the group's share ----- */

/* The share of a group p2pbufd does not have open yet: on iommufd where this device's cdev and
 * /dev/iommu open (the cdev stays in h, not yet bound), else the legacy group and container. */
static int share_open(struct device_handle *h, const struct vfio_sysfs *s, struct vfio_share **ret,
		      char *msg, size_t msglen)
{
	_cleanup_close_ int dev = cdev_open(s), iommufd = -1, container = -1, group = -1;
	int r;

	if (dev >= 0)
		iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	if (iommufd >= 0) {
		r = share_new(s->group, VFIO_PATH_IOMMUFD, &iommufd, &group, ret);
		if (r < 0)
			return fail(msg, msglen, r, "out of memory");
		h->device_fd = TAKE_FD(dev);
		return 0;
	}
	closep(&dev);
	r = legacy_open(s, &container, &group, msg, msglen);
	if (r == 0)
		r = share_new(s->group, VFIO_PATH_LEGACY, &container, &group, ret);
	if (r == -ENOMEM)
		return fail(msg, msglen, r, "out of memory");
	return r;
}

/* Attach h to the share of s's group, opening it when p2pbufd has none. A share taken over
 * without its group's own fds cannot open another device: only its devices' fds hold the group
 * open, and the kernel gives no second way in while they do. */
static int share_join(struct device_handle *h, const struct vfio_sysfs *s, char *msg, size_t msglen)
{
	struct vfio_share *sh = share_find(s->group);
	const struct device_handle *same = sh ? share_member(sh, s->addr) : NULL;
	char who[256];
	int r;

	if (same)
		return fail(msg, msglen, -EBUSY,
			    "%s is already open as device \"%s\" (a device can be declared once)",
			    s->addr, same->name);
	if (sh && sh->container_fd < 0) {
		share_names(sh, h, who, sizeof(who));
		return fail(msg, msglen, -EBUSY,
			    "IOMMU group %u of %s is held only by the device fds of %s, taken over "
			    "from the previous instance without the group's own fds; it opens "
			    "again once those devices have been reset (p2pbuf-client reset)",
			    s->group, s->addr, who);
	}
	if (!sh) {
		r = share_open(h, s, &sh, msg, msglen);
		if (r < 0)
			return r;
	}
	share_link(sh, h);
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
	*ret_fd = TAKE_FD(efd);
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
 * eventfds), then, with the group's last device, what it was attached through. May block
 * until importers let go, without the table's lock. */
static void vfio_close(struct device_handle *h)
{
	if (!h)
		return;
	closep(&h->device_fd);
	closep(&h->req_fd);
	closep(&h->err_fd);
	pthread_mutex_lock(&shares.lock);
	share_unlink(h);
	pthread_mutex_unlock(&shares.lock);
	free(h);
}

static struct device_handle *handle_new(const struct policy_device *decl)
{
	struct device_handle *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->device_fd = h->req_fd = h->err_fd = -1;
	snprintf(h->addr, sizeof(h->addr), "%s", decl->pci);
	snprintf(h->name, sizeof(h->name), "%s", decl->name);
	return h;
}

/* From a joined share to a ready device: its own fd opened (the kernel resets the device
 * here), export supported, events armed (early, so that a removal during the rest is not
 * missed), model read, memory decode on. On failure h holds whatever was opened; the caller
 * closes it. */
static int open_device(struct device_handle *h, const struct vfio_sysfs *s,
		       struct device_info *ret_info, char *msg, size_t msglen)
{
	int r = h->path == VFIO_PATH_IOMMUFD ? member_bind(h, s, msg, msglen)
					     : member_get(h, s, msg, msglen);

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

/* How h was reached, for the startup log; how (opened, taken over) says which. */
static void say_path(const struct device_handle *h, const struct vfio_sysfs *s, const char *how,
		     char *msg, size_t msglen)
{
	char who[256], also[400] = "";
	bool bare = false;
	int n = 0;

	pthread_mutex_lock(&shares.lock);
	if (h->share) {
		bare = h->share->container_fd < 0;
		n = share_names(h->share, h, who, sizeof(who));
	}
	pthread_mutex_unlock(&shares.lock);
	if (n > 0 || bare)
		snprintf(also, sizeof(also), "%s%s%s", n ? ", shared with " : "", n ? who : "",
			 bare ? " (its group's own fds not taken over yet)" : "");
	if (h->path == VFIO_PATH_IOMMUFD)
		fail(msg, msglen, 0, "%s: %s through iommufd (/dev/vfio/devices/%s)%s", s->addr,
		     how, s->cdev, also);
	else
		fail(msg, msglen, 0, "%s: %s through legacy VFIO group %u%s", s->addr, how,
		     s->group, also);
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
	h = handle_new(decl);
	if (!h)
		return fail(msg, msglen, -ENOMEM, "out of memory");
	pthread_mutex_lock(&shares.lock);
	r = share_join(h, &s, msg, msglen);
	pthread_mutex_unlock(&shares.lock);
	if (r == 0)
		r = open_device(h, &s, &info, msg, msglen);
	if (r < 0) {
		vfio_close(h);
		return r;
	}
	say_path(h, &s, "vfio-pci", msg, msglen);
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
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* /proc/self/fdinfo/FD into buf (len bytes, NUL-terminated, cut there). */
static int read_fdinfo(int fd, char *buf, size_t len)
{
	_cleanup_close_ int f = -1;
	char path[64];
	size_t used = 0;
	ssize_t n = 0;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = open(path, O_RDONLY | O_CLOEXEC);
	if (f < 0)
		return errno == ENOENT ? -EBADF : -errno;
	while (used < len - 1 && (n = read(f, buf + used, len - 1 - used)) > 0)
		used += (size_t)n;
	if (n < 0)
		return -errno;
	buf[used] = '\0';
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
	char buf[VFIO_FDINFO_MAX];
	const char *p;
	long count;
	int r = read_fdinfo(fd, buf, sizeof(buf));

	if (r < 0)
		return r;
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

/* The fds whose close would revoke the device's buffers: the device and what it hangs on. The
 * devices of one group list the same group and container fds: the service manager's fd store
 * keeps one file once, under the first name it was given (systemd drops a duplicate), and
 * forgets it when that name is removed, so the group's fds are in the store while the device
 * that parked them first is open, and again as soon as any device of the group (re)opens. */
static size_t vfio_park(struct device_handle *h, struct parked_fd *fds)
{
	size_t n = 0;

	pthread_mutex_lock(&shares.lock);
	if (h->share && h->share->container_fd >= 0)
		fds[n++] =
		    (struct parked_fd){ h->path == VFIO_PATH_IOMMUFD ? "iommufd" : "container",
					h->share->container_fd };
	if (h->share && h->share->group_fd >= 0)
		fds[n++] = (struct parked_fd){ "group", h->share->group_fd };
	pthread_mutex_unlock(&shares.lock);
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
 * /dev/vfio/devices/vfio3, "anon_inode:[vfio-device]" for a device of the legacy group). */
static int fd_node(int fd, char *buf, size_t len)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return link_name(path, buf, len);
}

/* The PCI address of the device a VFIO device fd is open on, from the "vfio-device-syspath:"
 * its fdinfo shows (Linux 6.18+; -ENOENT where it shows none). */
static int fd_device_addr(int fd, char *buf, size_t len)
{
	char info[VFIO_FDINFO_MAX], path[PATH_MAX];
	const char *p;
	int r = read_fdinfo(fd, info, sizeof(info));

	if (r < 0)
		return r;
	p = strstr(info, "vfio-device-syspath: ");
	if (!p || sscanf(p, "vfio-device-syspath: %4095s", path) != 1)
		return -ENOENT;
	return last_component(path, buf, len);
}

/* What a previous instance parked for one device. */
struct vfio_parked {
	int container, iommufd, group, device;
};

/* Whether fd is open on node want (a group number or a cdev name). */
static int check_node(const struct vfio_sysfs *s, int fd, const char *what, const char *want,
		      char *msg, size_t msglen)
{
	char node[NAME_MAX + 1];
	int r = fd_node(fd, node, sizeof(node));

	if (r < 0 || strcmp(node, want) != 0)
		return fail(msg, msglen, -ENODEV,
			    "%s: the parked %s fd is not this device's (%s, not %s)", s->addr, what,
			    r < 0 ? "unreadable" : node, want);
	return 0;
}

/* Check that the parked fds are s's device and its group's nodes, as sysfs names them today,
 * and say which path the device was opened through: its cdev (iommufd) or the legacy group.
 * Where the kernel names the device in its fdinfo, that must be s's address too. A device fd
 * may come alone: the devices of one group parked one copy of the group's fds between them. */
static int parked_check(const struct vfio_sysfs *s, const struct vfio_parked *p,
			enum vfio_path *ret_path, char *msg, size_t msglen)
{
	char node[NAME_MAX + 1], addr[NAME_MAX + 1], num[16];
	bool legacy;
	int r;

	if (p->device < 0 || fd_node(p->device, node, sizeof(node)) < 0)
		return fail(msg, msglen, -EBADF, "%s: no device fd was parked", s->addr);
	legacy = strcmp(node, "anon_inode:[vfio-device]") == 0;
	if (legacy ? p->iommufd >= 0 : p->container >= 0 || p->group >= 0)
		return fail(msg, msglen, -EBADF,
			    "%s: the parked fds mix the iommufd and legacy paths", s->addr);
	r = legacy
		? 0
		: check_node(s, p->device, "device", s->cdev[0] ? s->cdev : "a cdev", msg, msglen);
	snprintf(num, sizeof(num), "%u", s->group);
	if (r == 0 && p->group >= 0)
		r = check_node(s, p->group, "group", num, msg, msglen);
	if (r < 0)
		return r;
	r = fd_device_addr(p->device, addr, sizeof(addr));
	if (r == 0 && strcmp(addr, s->addr) != 0)
		return fail(msg, msglen, -ENODEV, "%s: the parked device fd is %s's", s->addr,
			    addr);
	if (r < 0 && legacy && p->group < 0)
		return fail(msg, msglen, -ENODEV,
			    "%s: the parked device fd cannot be told apart from its group's other "
			    "devices (the kernel names none in fdinfo)",
			    s->addr);
	*ret_path = legacy ? VFIO_PATH_LEGACY : VFIO_PATH_IOMMUFD;
	return 0;
}

/* Attach an adopted h to the share of s's group, with the group's fds parked for it (-1 where
 * none): a new share, or one another adopted device of the group made, given what it lacked.
 * A group fd it has already is a copy of the same file (a group opens once), and so is an
 * iommufd (every device of a group is bound to one): those are closed. On success every fd
 * passed in is owned here. */
static int share_adopt(struct device_handle *h, const struct vfio_sysfs *s, int *container,
		       int *group, char *msg, size_t msglen)
{
	struct vfio_share *sh;
	int r = 0;

	pthread_mutex_lock(&shares.lock);
	sh = share_find(s->group);
	if (sh && share_member(sh, s->addr))
		r = fail(msg, msglen, -EBUSY, "%s is taken over twice", s->addr);
	else if (sh && sh->path != h->path)
		r = fail(msg, msglen, -EBADF,
			 "%s: IOMMU group %u was taken over through the other VFIO path", s->addr,
			 s->group);
	else if (!sh && (r = share_new(s->group, h->path, container, group, &sh)) < 0)
		fail(msg, msglen, r, "out of memory");
	if (r == 0) {
		if (sh->container_fd < 0)
			sh->container_fd = TAKE_FD(*container);
		if (sh->group_fd < 0 && sh->path == VFIO_PATH_LEGACY)
			sh->group_fd = TAKE_FD(*group);
		closep(container);
		closep(group);
		share_link(sh, h);
	}
	pthread_mutex_unlock(&shares.lock);
	return r;
}

/* Take over a device a previous instance opened: the fds must be the nodes that sysfs names
 * for decl's address today (its group, or its cdev). The group's own fds may be missing (the
 * store kept them under another device of the group): the device then joins the share that
 * device brings, before or after it. Nothing is reopened or reset, so the buffers exported
 * from it stay alive; events are re-armed with new eventfds. */
static int vfio_adopt(const struct policy_device *decl, struct parked_fd *fds, size_t n,
		      struct device_handle **ret_handle, struct device_info *ret_info, char *msg,
		      size_t msglen)
{
	struct vfio_parked p = { parked(fds, n, "container"), parked(fds, n, "iommufd"),
				 parked(fds, n, "group"), parked(fds, n, "device") };
	int container = p.iommufd >= 0 ? p.iommufd : p.container, group = p.group;
	struct device_info info = { 0 };
	struct vfio_sysfs s = { 0 };
	enum vfio_path path = VFIO_PATH_LEGACY;
	struct device_handle *h;
	int r = sysfs_check(decl->pci, &s, msg, msglen);

	if (r == 0)
		r = parked_check(&s, &p, &path, msg, msglen);
	if (r < 0)
		return r;
	h = handle_new(decl);
	if (!h)
		return fail(msg, msglen, -ENOMEM, "out of memory");
	h->path = path;
	h->device_fd = p.device;
	r = arm_events(h, msg, msglen);
	if (r == 0)
		r = read_info(h, &info, msg, msglen);
	if (r == 0)
		r = enable_memory(h, msg, msglen);
	if (r == 0)
		r = share_adopt(h, &s, &container, &group, msg, msglen);
	if (r < 0) {
		/* The caller closes the fds it still owns: hand them back. */
		h->device_fd = -1;
		vfio_close(h);
		return r;
	}
	say_path(h, &s, "taken over from the previous instance", msg, msglen);
	*ret_info = info;
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
