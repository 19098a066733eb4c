/* The VFIO uapi that the kernel capability probes (probe.c) need beyond what Debian 12's
 * linux-libc-dev 6.1 has. The host's headers come first and every name here is guarded, so a
 * newer linux-libc-dev simply wins. Only numbers from released kernels (6.19, 7.2, 7.3 carry
 * them unchanged, KERNEL.md §1); nothing proposed upstream and unmerged, such as a per-buffer
 * revoke, is ever defined here.
 *
 * It lives with the probes because client code (p2pbuf-client doctor) must not include daemon
 * headers; daemon/vfio-uapi.h includes it and adds the export's payload. */
#pragma once

#include <linux/types.h>
#include <linux/vfio.h>

/* Linux 6.6: bind a device cdev (/dev/vfio/devices/vfioN) to an iommufd. Every other ioctl
 * on a cdev fails with EINVAL until it is bound. */
#ifndef VFIO_DEVICE_BIND_IOMMUFD
struct vfio_device_bind_iommufd {
	__u32 argsz;
	__u32 flags;
	__s32 iommufd;
	__u32 out_devid;
	__aligned_u64 token_uuid_ptr;
};
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
#endif

/* Linux 6.19: the dma-buf export feature of VFIO_DEVICE_FEATURE. The probe asks PROBE | GET
 * with the bare feature header (vfio_check_feature() answers a PROBE before it looks at the
 * payload), so the payload's layout is not needed here. */
#ifndef VFIO_DEVICE_FEATURE_DMA_BUF
#define VFIO_DEVICE_FEATURE_DMA_BUF 11
#endif
