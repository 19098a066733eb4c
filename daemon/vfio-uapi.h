/* The VFIO and dma-buf uapi that p2pbufd needs, for hosts whose kernel headers are older than
 * Linux 6.19 (Debian 12 ships 6.1). The host's headers come first; every name added here is
 * guarded, so a newer linux-libc-dev simply wins. vfio.c and the sandbox (its ioctl numbers)
 * include this. The values are the kernel's ABI (unchanged from 6.19 through 7.3, see
 * KERNEL.md §1).
 *
 * No iommufd name is needed: the daemon only opens /dev/iommu and hands that fd to
 * VFIO_DEVICE_BIND_IOMMUFD (a VFIO ioctl); it never allocates an IOAS or maps anything. */
#pragma once

#include <linux/types.h>
#include <linux/vfio.h>
#include <linux/dma-buf.h>

/* Whether the host's headers have the dma-buf export feature (Linux 6.19), asked before
 * probe-uapi.h defines its number: they bring its payload with it. */
#ifndef VFIO_DEVICE_FEATURE_DMA_BUF
#define P2PBUF_DEFINE_DMA_BUF_PAYLOAD 1
#endif

/* VFIO_DEVICE_BIND_IOMMUFD (Linux 6.6) and the feature's number: the kernel probes' copy,
 * one definition for probes and daemon. Newer kernels append token_uuid_ptr to the bind
 * struct; the kernel accepts both sizes (copy_struct_from_user), and vfio.c never names
 * that field, so either layout of the host's struct works. */
#include "probe-uapi.h"

/* Linux 6.19: export ranges of one BAR as a dma-buf (VFIO_DEVICE_FEATURE, GET). */
#ifdef P2PBUF_DEFINE_DMA_BUF_PAYLOAD
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
