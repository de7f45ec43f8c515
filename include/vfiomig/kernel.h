/* SPDX-License-Identifier: MIT */
/**
 * @file
 * vfiomig kernel backend — an endpoint (vfiomig/endpoint.h) over a kernel
 * VFIO device: a PCI device bound to vfio-pci or a variant driver, an mdev
 * such as the kernel's sample mtty, anything with a VFIO device fd.
 *
 * Two ways in, as the kernel offers them:
 *  - the group/container path: /dev/vfio/vfio (the container; API version
 *    checked), /dev/vfio/N (the group: viable, set on the container),
 *    VFIO_SET_IOMMU (type1v2, else type1, else no-IOMMU), then
 *    VFIO_GROUP_GET_DEVICE_FD with the device's name (a PCI address, an
 *    mdev UUID);
 *  - the device cdev with iommufd (kernels with VFIO_DEVICE_CDEV, 6.6+):
 *    /dev/iommu, the device's /dev/vfio/devices/vfioX, VFIO_DEVICE_BIND_IOMMUFD,
 *    an IOAS from IOMMU_IOAS_ALLOC, VFIO_DEVICE_ATTACH_IOMMUFD_PT.
 *
 * The endpoint speaks the uAPI directly: VFIO_DEVICE_FEATURE with
 * MIGRATION (GET), MIG_DEVICE_STATE (GET, SET — a SET that opens a session
 * returns the kernel's data_fd), MIG_DATA_SIZE (GET); read()/write() on the
 * data_fd, whose errors come back as they are (ENOMSG at the temporary end
 * of pre-copy, ENODEV after its session ended); VFIO_MIG_GET_PRECOPY_INFO on
 * the data_fd; VFIO_DEVICE_RESET. The backend keeps the latest data_fd open
 * until the next session's fd replaces it or the backend is freed, so that
 * a caller can still observe the ended session's fd (the conformance suite
 * does).
 *
 * The uAPI numbers are vfiomig's own definitions (src/kernel/kuapi.h),
 * checked at compile time against the system's <linux/vfio.h> for every
 * value it has (Debian 12's is 6.1: it lacks the pre-copy and iommufd
 * ones), and against a 6.12 header by the real-kernel test.
 *
 * Threading: calls on one backend are serialised by its lock.
 */
#ifndef VFIOMIG_KERNEL_H
#define VFIOMIG_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#include <vfiomig/endpoint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vfm_kernel;

/**
 * vfm_kernel_open_group - open device @device of VFIO group @group_path
 * (/dev/vfio/N) through a new container.
 * Return: 0 and *@out; -ENOENT (no such group or device); -EACCES; -EBUSY
 *      (the group is in use); -EINVAL (the group is not viable: some of its
 *      devices are bound to other drivers); another ioctl's error. The log
 *      says which step failed.
 */
VFM_EXPORT int vfm_kernel_open_group(const char *group_path, const char *device,
                                     struct vfm_kernel **out);

/**
 * vfm_kernel_open_cdev - open the device cdev @cdev_path
 * (/dev/vfio/devices/vfioX) and attach it to a new iommufd IOAS.
 * Return: 0 and *@out; -ENOENT (no such cdev, or no /dev/iommu); an
 *      ioctl's error.
 */
VFM_EXPORT int vfm_kernel_open_cdev(const char *cdev_path, struct vfm_kernel **out);

/* vfm_kernel_adopt_fd() flag: @fd is an opened device cdev not bound yet
 * (as libvirt passes one to QEMU): bind it to a new iommufd IOAS. */
#define VFM_KERNEL_ADOPT_BIND 1u

/**
 * vfm_kernel_adopt_fd - a kernel VFIO device fd this process already has (a
 * VMM's): ready for VFIO_DEVICE_FEATURE (from a group, or a cdev already
 * bound), or, with VFM_KERNEL_ADOPT_BIND, a device cdev to bind as
 * vfm_kernel_open_cdev() does. The backend owns @fd from then on and closes
 * it, even when the call fails. It cannot reopen the device (ENOTTY).
 * @label: the device's name in messages (NULL: "fd N").
 * Return: 0 and *@out; -EBADF; -ENOTTY (not a VFIO device: its
 *      VFIO_DEVICE_GET_INFO fails); a binding ioctl's error.
 */
VFM_EXPORT int vfm_kernel_adopt_fd(int fd, unsigned flags, const char *label,
                                   struct vfm_kernel **out);

/**
 * vfm_kernel_region_read - @len bytes at @offset
 * of the device's region @index (VFIO_DEVICE_GET_REGION_INFO, then pread()
 * or pwrite() on the device fd), as a VMM reaches a BAR it does not mmap:
 * for mtty, the UART registers of its BAR0.
 * Return: 0; -EINVAL (no such region, or the range is outside it); -EPERM
 *      (the region is not readable / writable); the kernel's error; -EIO
 *      for a short transfer.
 */
VFM_EXPORT int vfm_kernel_region_read(struct vfm_kernel *k, uint32_t index, uint64_t offset,
                                      void *buf, size_t len);
/**
 * vfm_kernel_region_write - as vfm_kernel_region_read(), the other way.
 */
VFM_EXPORT int vfm_kernel_region_write(struct vfm_kernel *k, uint32_t index, uint64_t offset,
                                       const void *buf, size_t len);

/**
 * vfm_kernel_free - closes the data_fd, the device, and the group/container or iommufd.
 * NULL does nothing.
 */
VFM_EXPORT void vfm_kernel_free(struct vfm_kernel *k);

/**
 * vfm_kernel_into_endpoint - the backend becomes its endpoint's, named
 * @label (NULL: as it is): from then on vfm_ep_free() on the endpoint
 * closes the device too, and @k must not be used or freed by the caller.
 * Return: the endpoint, or NULL when out of memory (the backend is freed).
 */
VFM_EXPORT struct vfm_endpoint *vfm_kernel_into_endpoint(struct vfm_kernel *k, const char *label);

/**
 * vfm_kernel_endpoint - the backend as an endpoint (owned by it: valid until it is freed); its
 * name is @label (NULL: the device's name or path; the string is copied).
 */
VFM_EXPORT struct vfm_endpoint *vfm_kernel_endpoint(struct vfm_kernel *k, const char *label);

#ifdef __cplusplus
}
#endif
#endif /* VFIOMIG_KERNEL_H */
