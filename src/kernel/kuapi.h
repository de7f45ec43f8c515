/* SPDX-License-Identifier: MIT */
/*
 * The kernel VFIO uAPI that the kernel backend uses, defined here (the
 * system's <linux/vfio.h> may be older than the kernel it talks to: Debian
 * 12's is 6.1, without the pre-copy and iommufd values). Every value the
 * system header (and <linux/iommufd.h>, when there is one) also defines is
 * checked against it at compile time; tests/kernel/run.sh compiles
 * src/kernel/uapi_check.c against a 6.12 header as well.
 */
#ifndef VFIOMIG_KUAPI_H
#define VFIOMIG_KUAPI_H

#include <stdint.h>
#include <sys/ioctl.h>

#define VFM_K_TYPE ';'
#define VFM_K_BASE 100
#define VFM_K_IO(n) _IO(VFM_K_TYPE, VFM_K_BASE + (n))

#define VFM_K_API_VERSION 0
#define VFM_K_GET_API_VERSION VFM_K_IO(0)
#define VFM_K_CHECK_EXTENSION VFM_K_IO(1)
#define VFM_K_SET_IOMMU VFM_K_IO(2)
#define VFM_K_GROUP_GET_STATUS VFM_K_IO(3)
#define VFM_K_GROUP_SET_CONTAINER VFM_K_IO(4)
#define VFM_K_GROUP_GET_DEVICE_FD VFM_K_IO(6)
#define VFM_K_DEVICE_GET_INFO VFM_K_IO(7)
#define VFM_K_DEVICE_GET_REGION_INFO VFM_K_IO(8)
#define VFM_K_DEVICE_RESET VFM_K_IO(11)
#define VFM_K_DEVICE_FEATURE VFM_K_IO(17)
#define VFM_K_DEVICE_BIND_IOMMUFD VFM_K_IO(18)
#define VFM_K_DEVICE_ATTACH_IOMMUFD_PT VFM_K_IO(19)
#define VFM_K_MIG_GET_PRECOPY_INFO VFM_K_IO(21)

#define VFM_K_TYPE1_IOMMU 1
#define VFM_K_TYPE1v2_IOMMU 3
#define VFM_K_NOIOMMU_IOMMU 8

#define VFM_K_GROUP_FLAGS_VIABLE (1u << 0)
#define VFM_K_GROUP_FLAGS_CONTAINER_SET (1u << 1)

struct vfm_k_group_status {
    uint32_t argsz;
    uint32_t flags;
};

struct vfm_k_device_info {
    uint32_t argsz;
    uint32_t flags;
    uint32_t num_regions;
    uint32_t num_irqs;
    uint32_t cap_offset;
    uint32_t pad;
};

struct vfm_k_region_info {
    uint32_t argsz;
    uint32_t flags; /* VFIO_REGION_INFO_FLAG_READ 1, _WRITE 2, ... */
    uint32_t index;
    uint32_t cap_offset;
    uint64_t size;
    uint64_t offset; /* where the region is in the device fd */
};

#define VFM_K_REGION_INFO_FLAG_READ (1u << 0)
#define VFM_K_REGION_INFO_FLAG_WRITE (1u << 1)

/* VFIO_DEVICE_FEATURE: the header, then the feature's data */
struct vfm_k_feature {
    uint32_t argsz;
    uint32_t flags;
};

/* VFIO_DEVICE_FEATURE_DMA_LOGGING_START's data (the ranges by address) and
 * DMA_LOGGING_REPORT's (the bitmap by address). */
struct vfm_k_log_control {
    uint64_t page_size;
    uint32_t num_ranges;
    uint32_t reserved;
    uint64_t ranges;
};

struct vfm_k_log_range {
    uint64_t iova;
    uint64_t length;
};

struct vfm_k_log_report {
    uint64_t iova;
    uint64_t length;
    uint64_t page_size;
    uint64_t bitmap;
};

struct vfm_k_mig_state {
    uint32_t device_state;
    int32_t data_fd;
};

struct vfm_k_precopy_info {
    uint32_t argsz;
    uint32_t flags;
    uint64_t initial_bytes;
    uint64_t dirty_bytes;
};

struct vfm_k_bind_iommufd {
    uint32_t argsz;
    uint32_t flags;
    int32_t iommufd;
    uint32_t out_devid;
};

struct vfm_k_attach_iommufd_pt {
    uint32_t argsz;
    uint32_t flags;
    uint32_t pt_id;
};

/* iommufd */
#define VFM_K_IOMMUFD_TYPE ';'
#define VFM_K_IOMMU_IOAS_ALLOC _IO(VFM_K_IOMMUFD_TYPE, 0x81)

struct vfm_k_ioas_alloc {
    uint32_t size;
    uint32_t flags;
    uint32_t out_ioas_id;
};

#endif
