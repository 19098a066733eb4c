/* What the running kernel offers p2pbufd, probed rather than guessed: the kernel release, the
 * iommufd and VFIO cdev nodes, the VFIO dma-buf export (asked of a real vfio-pci device), and
 * per-buffer revoke (which no released kernel has). The daemon calls these at start-up to fill
 * the KernelCaps of its Hello and Status replies; p2pbuf-client doctor calls them too. No
 * libp2pbuf and no daemon code here.
 *
 * Every function that looks at the machine takes root: NULL or "" for the real /proc, /sys,
 * /dev and /boot, or a directory that stands for "/" (the tests build fake trees). The facts
 * of released kernels that the code relies on (which release added what, and the kernels known
 * to be bad for this use) are in one table each, in probe.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* A probed answer. The values are those of the wire's CapAnswer. */
enum probe_answer {
	PROBE_UNKNOWN = 0, /* could not be probed here; the reason says why */
	PROBE_YES = 1,
	PROBE_NO = 2,
};

#define PROBE_RELEASE_MAX 65 /* struct utsname's field size */
#define PROBE_REASON_MAX 320

struct probe_version {
	unsigned major, minor, patch;
};

/* The kernel's capabilities as the daemon reports them. */
struct probe_caps {
	char release[PROBE_RELEASE_MAX]; /* "" if unknown */
	enum probe_answer iommufd;	 /* /dev/iommu opens */
	char iommufd_reason[PROBE_REASON_MAX];
	enum probe_answer vfio_cdev; /* a /dev/vfio/devices/vfioN exists and opens */
	char vfio_cdev_reason[PROBE_REASON_MAX];
	enum probe_answer dma_buf_export; /* VFIO_DEVICE_FEATURE PROBE|GET|DMA_BUF */
	char dma_buf_export_reason[PROBE_REASON_MAX];
	enum probe_answer per_buffer_revoke; /* always PROBE_NO: see probe.c */
	char per_buffer_revoke_reason[PROBE_REASON_MAX];
};

/* A kernel release range known to be bad for exporting and importing BAR dma-bufs. */
struct probe_known_issue {
	const char *id;	     /* "CVE-2026-74328" */
	const char *summary; /* what goes wrong, in a few words */
	struct probe_version first, last, fixed;
};

/* Fill *ret for the kernel under root. The dma-buf export needs a vfio-pci device fd, so it
 * is left PROBE_UNKNOWN ("not probed: ..."); fill it with probe_dma_buf_export() once a device
 * is open, or probe_dma_buf_export_device(). Never fails: what cannot be told is UNKNOWN. */
void probe_caps(const char *root, struct probe_caps *ret);

/* Ask an open (and, for a cdev, bound) VFIO device fd whether it exports dma-bufs:
 * VFIO_DEVICE_FEATURE with PROBE | GET | DMA_BUF. The reason is written in every case. */
enum probe_answer probe_dma_buf_export(int device_fd, char reason[PROBE_REASON_MAX]);

/* The same on the vfio-pci device at PCI address (0000:01:00.0), opened here through its cdev
 * and /dev/iommu where both exist, else through its group and a type1 container, and closed
 * again. Opening a device through VFIO resets it, so this is only for devices nobody holds (a
 * held one answers EBUSY: UNKNOWN, "in use"). */
enum probe_answer probe_dma_buf_export_device(const char *root, const char *address,
					      char reason[PROBE_REASON_MAX]);

/* The kernel release: uname(2), or root's proc/sys/kernel/osrelease when root is set.
 * Returns 0 or -errno. */
int probe_kernel_release(const char *root, char ret[PROBE_RELEASE_MAX]);

/* "7.2.13+deb14-amd64" -> 7.2.13; "6.19" -> 6.19.0. Returns 0 or -EINVAL. */
int probe_parse_version(const char *release, struct probe_version *ret);

/* <0, 0 or >0 as a is older than, the same as or newer than b. */
int probe_version_cmp(const struct probe_version *a, const struct probe_version *b);

/* "7.1.5", or "6.19" for 6.19.0, into buf (at least 32 bytes). Returns buf. */
char *probe_format_version(const struct probe_version *v, char *buf, size_t len);

/* The known issues that affect version v, one per call: pass NULL first, then the previous
 * answer; NULL when there are no more. */
const struct probe_known_issue *probe_known_issue_next(const struct probe_version *v,
						       const struct probe_known_issue *prev);

/* Released kernels that first had a feature, for what can only be inferred from the version. */
extern const struct probe_version probe_since_dma_buf_export;	/* 6.19 */
extern const struct probe_version probe_since_map_file_dma_buf; /* 6.19 */
/* The releases whose sources were read for a per-buffer revoke: "6.19, 7.2, 7.3". */
extern const char probe_revoke_checked[];

/* "yes", "no", "unknown". */
const char *probe_answer_name(enum probe_answer a);
