/* The VFIO and dma-buf uapi that p2pbufd needs, for hosts whose kernel headers are older than
 * Linux 6.19 (Debian 12 ships 6.1). The host's headers come first; every name added here is
 * guarded, so a newer linux-libc-dev simply wins. Only vfio.c includes this. The values are
 * the kernel's ABI (unchanged from 6.19 through 7.3, see KERNEL.md §1).
 *
 * No iommufd name is needed: the daemon only opens /dev/iommu and hands that fd to
 * VFIO_DEVICE_BIND_IOMMUFD (a VFIO ioctl); it never allocates an IOAS or maps anything. */
#pragma once

#include <linux/types.h>
#include <linux/vfio.h>
#include <linux/dma-buf.h>

/* Linux 6.6: bind a device cdev (/dev/vfio/devices/vfioN) to an iommufd. Newer kernels
 * append token_uuid_ptr; the kernel accepts both sizes (copy_struct_from_user), and vfio.c
 * never names that field, so either layout of the host's struct works. */
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

/* Linux 6.19: export ranges of one BAR as a dma-buf (VFIO_DEVICE_FEATURE, GET). */
#ifndef VFIO_DEVICE_FEATURE_DMA_BUF
#define VFIO_DEVICE_FEATURE_DMA_BUF 11

struct vfio_region_dma_range {
	__u64 offset;
	__u64 length;
};

struct vfio_device_feature_dma_buf {
	__u32 region_index;
	__u32 open_flags;
	__u32 flags;
	__u32 nr_ranges;
	struct vfio_region_dma_range dma_ranges[];
};
#endif

/* In every kernel that has dma-buf names (5.x); kept for completeness. */
#ifndef DMA_BUF_NAME_LEN
#define DMA_BUF_NAME_LEN 32
#endif
#ifndef DMA_BUF_SET_NAME_B
#define DMA_BUF_SET_NAME_B _IOW(DMA_BUF_BASE, 1, __u64)
#endif

/* The layouts the kernel copies in (vfio_pci_core_feature_dma_buf). */
_Static_assert(sizeof(struct vfio_region_dma_range) == 16, "vfio_region_dma_range");
_Static_assert(sizeof(struct vfio_device_feature_dma_buf) == 16, "vfio_device_feature_dma_buf");
