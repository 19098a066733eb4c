/* The VFIO and iommufd uapi the VM test programs use (vm-probe, vm-importer). The build host
 * has linux-libc-dev 6.1, which lacks the dma-buf export, the vfio cdev and the iommufd
 * definitions below: these are guarded copies, identical in Linux 6.19, 7.2 and 7.3. (The
 * daemon carries its own in daemon/vfio-uapi.h: test programs and daemon share no code.) */
#pragma once

#include <linux/pci_regs.h>
#include <linux/types.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#if __has_include(<linux/iommufd.h>)
#include <linux/iommufd.h>
#endif

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
#ifndef VFIO_DEVICE_BIND_IOMMUFD
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
struct vfio_device_bind_iommufd {
	__u32 argsz;
	__u32 flags;
	__s32 iommufd;
	__u32 out_devid;
	__aligned_u64 token_uuid_ptr;
};
#endif
#ifndef VFIO_DEVICE_ATTACH_IOMMUFD_PT
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)
struct vfio_device_attach_iommufd_pt {
	__u32 argsz;
	__u32 flags;
	__u32 pt_id;
	__u32 pasid;
};
#endif
#ifndef IOMMUFD_TYPE
#define IOMMUFD_TYPE (';')
#endif
#ifndef IOMMU_IOAS_ALLOC
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, 0x81)
struct iommu_ioas_alloc {
	__u32 size;
	__u32 flags;
	__u32 out_ioas_id;
};
#endif
#ifndef IOMMU_IOAS_MAP
#define IOMMU_IOAS_MAP _IO(IOMMUFD_TYPE, 0x85)
struct iommu_ioas_map {
	__u32 size;
	__u32 flags;
	__u32 ioas_id;
	__u32 __reserved;
	__aligned_u64 user_va;
	__aligned_u64 length;
	__aligned_u64 iova;
};
#endif
#ifndef IOMMU_IOAS_UNMAP
#define IOMMU_IOAS_UNMAP _IO(IOMMUFD_TYPE, 0x86)
struct iommu_ioas_unmap {
	__u32 size;
	__u32 ioas_id;
	__aligned_u64 iova;
	__aligned_u64 length;
};
#endif
#ifndef IOMMU_IOAS_MAP_FILE
#define IOMMU_IOAS_MAP_FILE _IO(IOMMUFD_TYPE, 0x8f)
struct iommu_ioas_map_file {
	__u32 size;
	__u32 flags;
	__u32 ioas_id;
	__s32 fd;
	__aligned_u64 start;
	__aligned_u64 length;
	__aligned_u64 iova;
};
#endif
#ifndef IOMMU_IOAS_MAP_FIXED_IOVA
#define IOMMU_IOAS_MAP_FIXED_IOVA (1 << 0)
#define IOMMU_IOAS_MAP_WRITEABLE (1 << 1)
#define IOMMU_IOAS_MAP_READABLE (1 << 2)
#endif

/* dma-buf implicit sync (linux/dma-buf.h, 6.0+; the host's 6.1 has them, older ones not). */
#include <linux/dma-buf.h>
#ifndef DMA_BUF_IOCTL_EXPORT_SYNC_FILE
struct dma_buf_export_sync_file {
	__u32 flags;
	__s32 fd;
};
struct dma_buf_import_sync_file {
	__u32 flags;
	__s32 fd;
};
#define DMA_BUF_IOCTL_EXPORT_SYNC_FILE _IOWR(DMA_BUF_BASE, 2, struct dma_buf_export_sync_file)
#define DMA_BUF_IOCTL_IMPORT_SYNC_FILE _IOW(DMA_BUF_BASE, 3, struct dma_buf_import_sync_file)
#endif

/* DRM core and vgem (drm/drm.h, drm/drm_mode.h, drm/vgem_drm.h; the host has no drm
 * headers): what the fence-hold mode needs to make a vgem fence, identical in 6.1 to 7.3. */
#ifndef DRM_IOCTL_BASE
#define DRM_IOCTL_BASE 'd'
#endif
#ifndef DRM_COMMAND_BASE
#define DRM_COMMAND_BASE 0x40
#endif
#ifndef DRM_CLOEXEC
#define DRM_RDWR O_RDWR
#define DRM_CLOEXEC O_CLOEXEC
#endif
#ifndef DRM_IOCTL_VERSION
struct drm_version {
	int version_major;
	int version_minor;
	int version_patchlevel;
	__kernel_size_t name_len;
	char *name;
	__kernel_size_t date_len;
	char *date;
	__kernel_size_t desc_len;
	char *desc;
};
#define DRM_IOCTL_VERSION _IOWR(DRM_IOCTL_BASE, 0x00, struct drm_version)
#endif
#ifndef DRM_IOCTL_PRIME_HANDLE_TO_FD
struct drm_prime_handle {
	__u32 handle;
	__u32 flags;
	__s32 fd;
};
#define DRM_IOCTL_PRIME_HANDLE_TO_FD _IOWR(DRM_IOCTL_BASE, 0x2d, struct drm_prime_handle)
#endif
#ifndef DRM_IOCTL_MODE_CREATE_DUMB
struct drm_mode_create_dumb {
	__u32 height;
	__u32 width;
	__u32 bpp;
	__u32 flags;
	__u32 handle;
	__u32 pitch;
	__u64 size;
};
#define DRM_IOCTL_MODE_CREATE_DUMB _IOWR(DRM_IOCTL_BASE, 0xB2, struct drm_mode_create_dumb)
#endif
#ifndef DRM_IOCTL_VGEM_FENCE_ATTACH
struct drm_vgem_fence_attach {
	__u32 handle;
	__u32 flags;
#define VGEM_FENCE_WRITE 0x1
	__u32 out_fence;
	__u32 pad;
};
struct drm_vgem_fence_signal {
	__u32 fence;
	__u32 flags;
};
#define DRM_IOCTL_VGEM_FENCE_ATTACH                                                                \
	_IOWR(DRM_IOCTL_BASE, DRM_COMMAND_BASE + 0x1, struct drm_vgem_fence_attach)
#define DRM_IOCTL_VGEM_FENCE_SIGNAL                                                                \
	_IOW(DRM_IOCTL_BASE, DRM_COMMAND_BASE + 0x2, struct drm_vgem_fence_signal)
#endif
