/* SPDX-License-Identifier: MIT */
/*
 * Compile-time checks of src/kernel/kuapi.h against the kernel's own uAPI
 * headers: every value the headers in use define. Built into the library
 * against the system's headers; tests/kernel/run.sh also compiles it
 * (-fsyntax-only) against the 6.12 headers of the kernel it boots, with
 * VFM_UAPI_CHECK_612 defined so that the values 6.12 must have are
 * required, not skipped.
 */
#include <stddef.h>
#include <linux/vfio.h>
#if defined(__has_include)
#if __has_include(<linux/iommufd.h>)
#include <linux/iommufd.h>
#endif
#endif

#include "kuapi.h"

#define SAME(a, b) _Static_assert((a) == (b), #a " != " #b)

SAME(VFM_K_API_VERSION, VFIO_API_VERSION);
SAME(VFM_K_GET_API_VERSION, VFIO_GET_API_VERSION);
SAME(VFM_K_CHECK_EXTENSION, VFIO_CHECK_EXTENSION);
SAME(VFM_K_SET_IOMMU, VFIO_SET_IOMMU);
SAME(VFM_K_GROUP_GET_STATUS, VFIO_GROUP_GET_STATUS);
SAME(VFM_K_GROUP_SET_CONTAINER, VFIO_GROUP_SET_CONTAINER);
SAME(VFM_K_GROUP_GET_DEVICE_FD, VFIO_GROUP_GET_DEVICE_FD);
SAME(VFM_K_DEVICE_GET_INFO, VFIO_DEVICE_GET_INFO);
SAME(VFM_K_DEVICE_GET_REGION_INFO, VFIO_DEVICE_GET_REGION_INFO);
SAME(sizeof(struct vfm_k_region_info), sizeof(struct vfio_region_info));
SAME(offsetof(struct vfm_k_region_info, offset), offsetof(struct vfio_region_info, offset));
SAME(VFM_K_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_READ);
SAME(VFM_K_REGION_INFO_FLAG_WRITE, VFIO_REGION_INFO_FLAG_WRITE);
SAME(VFM_K_DEVICE_RESET, VFIO_DEVICE_RESET);
SAME(VFM_K_DEVICE_FEATURE, VFIO_DEVICE_FEATURE);
SAME(VFM_K_TYPE1_IOMMU, VFIO_TYPE1_IOMMU);
SAME(VFM_K_TYPE1v2_IOMMU, VFIO_TYPE1v2_IOMMU);
SAME(VFM_K_NOIOMMU_IOMMU, VFIO_NOIOMMU_IOMMU);
SAME(VFM_K_GROUP_FLAGS_VIABLE, VFIO_GROUP_FLAGS_VIABLE);
SAME(sizeof(struct vfm_k_group_status), sizeof(struct vfio_group_status));
SAME(sizeof(struct vfm_k_feature), offsetof(struct vfio_device_feature, data));
SAME(sizeof(struct vfm_k_mig_state), sizeof(struct vfio_device_feature_mig_state));
SAME(offsetof(struct vfm_k_mig_state, data_fd),
     offsetof(struct vfio_device_feature_mig_state, data_fd));
SAME(offsetof(struct vfm_k_device_info, num_irqs), offsetof(struct vfio_device_info, num_irqs));
SAME(sizeof(struct vfm_k_log_control), sizeof(struct vfio_device_feature_dma_logging_control));
SAME(offsetof(struct vfm_k_log_control, ranges),
     offsetof(struct vfio_device_feature_dma_logging_control, ranges));
SAME(sizeof(struct vfm_k_log_range), sizeof(struct vfio_device_feature_dma_logging_range));
SAME(sizeof(struct vfm_k_log_report), sizeof(struct vfio_device_feature_dma_logging_report));
SAME(offsetof(struct vfm_k_log_report, bitmap),
     offsetof(struct vfio_device_feature_dma_logging_report, bitmap));
SAME(VFIO_DEVICE_FEATURE_DMA_LOGGING_START, 6);
SAME(VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP, 7);
SAME(VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, 8);

#if defined(VFIO_MIG_GET_PRECOPY_INFO) || defined(VFM_UAPI_CHECK_612)
SAME(VFM_K_MIG_GET_PRECOPY_INFO, VFIO_MIG_GET_PRECOPY_INFO);
SAME(sizeof(struct vfm_k_precopy_info), sizeof(struct vfio_precopy_info));
SAME(offsetof(struct vfm_k_precopy_info, dirty_bytes),
     offsetof(struct vfio_precopy_info, dirty_bytes));
#endif
#if defined(VFIO_DEVICE_BIND_IOMMUFD) || defined(VFM_UAPI_CHECK_612)
SAME(VFM_K_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_BIND_IOMMUFD);
SAME(VFM_K_DEVICE_ATTACH_IOMMUFD_PT, VFIO_DEVICE_ATTACH_IOMMUFD_PT);
SAME(sizeof(struct vfm_k_bind_iommufd), sizeof(struct vfio_device_bind_iommufd));
SAME(sizeof(struct vfm_k_attach_iommufd_pt), sizeof(struct vfio_device_attach_iommufd_pt));
#endif
#if defined(IOMMU_IOAS_ALLOC) || defined(VFM_UAPI_CHECK_612)
SAME(VFM_K_IOMMU_IOAS_ALLOC, IOMMU_IOAS_ALLOC);
SAME(sizeof(struct vfm_k_ioas_alloc), sizeof(struct iommu_ioas_alloc));
#endif

/* ISO C wants a declaration in every translation unit. */
extern int vfm_kuapi_checked;
