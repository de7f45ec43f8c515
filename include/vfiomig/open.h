/* SPDX-License-Identifier: MIT */
/**
 * @file
 * vfiomig open — an endpoint from a device spec string, owning whatever
 * backend the spec names (a vfio-user client, a kernel VFIO device): what a
 * tool or a VMM configured with strings needs, in one call. It sits above
 * the backends (src/open links vfio_user and kernel); a build without one
 * of them answers -EPROTONOSUPPORT for its specs.
 *
 * Threading: vfm_ep_open() may be called from any thread; the endpoint it
 * gives follows vfiomig/endpoint.h.
 */
#ifndef VFIOMIG_OPEN_H
#define VFIOMIG_OPEN_H

#include <vfiomig/endpoint.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * vfm_ep_open - the endpoint of the device @spec names:
 *  - vfio-user:PATH, or a PATH with none of the prefixes below: a
 *    vfio-user server's socket (waits at most @timeout_ms, 0: the default,
 *    on the server at any one time);
 *  - vfio-group:/dev/vfio/N:NAME: a kernel device through its group;
 *  - vfio-cdev:PATH: a kernel device cdev, bound to a new iommufd;
 *  - vfio-fd:N: a kernel device fd this process already has, ready to use
 *    (the endpoint takes it over and closes it);
 *  - vfio-cdev-fd:N: an opened device cdev to bind, as libvirt hands one
 *    to QEMU (taken over too).
 * vfm_ep_free() closes the backend with the endpoint.
 * Return: 0 and *@out; -EINVAL (a malformed spec); -EPROTONOSUPPORT (that
 *      backend is not built in); the backend's error (-ENOENT,
 *      -ECONNREFUSED, -ETIMEDOUT, ...).
 */
VFM_EXPORT int vfm_ep_open(const char *spec, unsigned timeout_ms, struct vfm_endpoint **out);

#ifdef __cplusplus
}
#endif
#endif /* VFIOMIG_OPEN_H */
