/* SPDX-License-Identifier: MIT */
/**
 * @file
 * vfiomig endpoint — what a VMM sees of one migratable device, whatever
 * carries it: a vfio-user server (vfiomig/vfio_user.h), a kernel VFIO device
 * (the kernel backend), or a device runtime in this process (the local
 * backend below). The migration engine and the conformance suite use only
 * this interface.
 *
 * Semantics are the kernel uAPI's:
 *  - vfm_ep_set_state() asks for a state change; on failure the device may
 *    be in the original state, any state on the path, or ERROR: only
 *    vfm_ep_get_state() tells which.
 *  - vfm_ep_read() reads the save session (STOP_COPY, PRE_COPY[_P2P]): > 0
 *    bytes, 0 at the end of the whole state, -ENOMSG in pre-copy when
 *    nothing is pending now, -ENODEV without a session (some backends
 *    answer -EINVAL there: libvfio-user servers do).
 *  - vfm_ep_precopy_info() is VFIO_MIG_GET_PRECOPY_INFO: initial and dirty
 *    bytes still to read in pre-copy (-ENOTTY where the transport cannot
 *    say: a vfio-user server that did not negotiate vfiomig's extension).
 *  - vfm_ep_write() writes the load session (RESUMING).
 *  - vfm_ep_reset() returns the device to RUNNING from any state.
 *
 * Threading: an endpoint may be used from several threads; each backend
 * serialises its own calls. Different endpoints are independent.
 */
#ifndef VFIOMIG_ENDPOINT_H
#define VFIOMIG_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <vfiomig/uapi.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vfm_endpoint;
struct vfm_device;

/* What a backend implements. Every member is required except data_size,
 * precopy_info, session_opened, reopen, feature, region and the dma_log ones
 * (NULL: -ENOTTY) and destroy
 * (NULL: the endpoint is owned elsewhere). New members go at the end. */
struct vfm_endpoint_ops {
    int (*get_flags)(struct vfm_endpoint *ep, uint32_t *flags);
    int (*set_state)(struct vfm_endpoint *ep, uint32_t state);
    int (*get_state)(struct vfm_endpoint *ep, uint32_t *state);
    ssize_t (*read)(struct vfm_endpoint *ep, void *buf, size_t len);
    ssize_t (*write)(struct vfm_endpoint *ep, const void *buf, size_t len);
    int (*data_size)(struct vfm_endpoint *ep, uint64_t *bytes);
    int (*reset)(struct vfm_endpoint *ep);
    void (*destroy)(struct vfm_endpoint *ep);
    int (*precopy_info)(struct vfm_endpoint *ep, uint64_t *initial, uint64_t *dirty);
    int (*session_opened)(struct vfm_endpoint *ep);
    int (*reopen)(struct vfm_endpoint *ep);
    int (*feature)(struct vfm_endpoint *ep, uint32_t argsz, uint32_t flags, void *data, size_t len);
    /* @len bytes of region @index at @offset, read or written. */
    int (*region)(struct vfm_endpoint *ep, uint32_t index, uint64_t offset, void *buf, size_t len,
                  bool write);
    /* DMA dirty logging, as vfm_ep_dma_log_start(), _stop() and _report()
     * (whose argument checks are done before: the backend moves them). */
    int (*dma_log_start)(struct vfm_endpoint *ep, const struct vfm_dma_range *ranges, uint32_t n,
                         uint64_t *page_size);
    int (*dma_log_stop)(struct vfm_endpoint *ep);
    int (*dma_log_report)(struct vfm_endpoint *ep, uint64_t iova, uint64_t length,
                          uint64_t page_size, uint64_t *bitmap);
    /* precopy_info with the reply's flags (NULL: precopy_info, flags 0). */
    int (*precopy_info_flags)(struct vfm_endpoint *ep, uint64_t *initial, uint64_t *dirty,
                              uint32_t *flags);
    /* vfm_ep_self_checked() (NULL: false) and vfm_ep_data_fd() (NULL: -1). */
    bool (*self_checked)(struct vfm_endpoint *ep);
    int (*data_fd)(struct vfm_endpoint *ep);
};

/**
 * vfm_ep_new - an endpoint over a backend (opaque: callers see it through
 * the calls below only).
 * @ops: the backend's calls; kept, not copied (static storage). The
 *      members the comment above calls required must be there.
 * @label: the device's name in messages (every error names it); copied
 *      (NULL: "device").
 * @priv: the backend's, given back by vfm_ep_priv().
 * With ops->destroy, the caller owns the endpoint: vfm_ep_free() calls
 * destroy (to free @priv) and frees the endpoint. Without it, the endpoint
 * belongs to the backend's own object, which ends it with vfm_ep_delete().
 * Return: 0 and *@out; -EINVAL (a required op missing); -ENOMEM.
 */
VFM_EXPORT int vfm_ep_new(const struct vfm_endpoint_ops *ops, const char *label, void *priv,
                          struct vfm_endpoint **out);

/**
 * vfm_ep_priv - the @priv the backend gave vfm_ep_new().
 */
VFM_EXPORT void *vfm_ep_priv(const struct vfm_endpoint *ep);

/**
 * vfm_ep_set_name - the name the endpoint's messages give the device from
 * now on (copied). Not while another thread uses the endpoint.
 * Return: 0 or -ENOMEM (the old name stays).
 */
VFM_EXPORT int vfm_ep_set_name(struct vfm_endpoint *ep, const char *name);

/**
 * vfm_ep_delete - frees the endpoint itself and not its backend: for a
 * backend that owns its endpoint (no destroy op). NULL does nothing.
 */
VFM_EXPORT void vfm_ep_delete(struct vfm_endpoint *ep);

/**
 * vfm_ep_name - the endpoint's name, for messages.
 */
VFM_EXPORT const char *vfm_ep_name(const struct vfm_endpoint *ep);

/**
 * vfm_ep_flags - VFIO_DEVICE_FEATURE_MIGRATION: the device's VFM_MIGRATION_* flags.
 */
VFM_EXPORT int vfm_ep_flags(struct vfm_endpoint *ep, uint32_t *flags);

/**
 * vfm_ep_set_state - MIG_DEVICE_STATE SET: ask for @state (any the
 * device supports; the path between is the device's). Return: 0, or an
 * error with the device in the original state, one on the path, or ERROR.
 */
VFM_EXPORT int vfm_ep_set_state(struct vfm_endpoint *ep, uint32_t state);
/**
 * vfm_ep_get_state - MIG_DEVICE_STATE GET: the state the device is in.
 * Return: 0 and *@state, or the transport's error.
 */
VFM_EXPORT int vfm_ep_get_state(struct vfm_endpoint *ep, uint32_t *state);

/**
 * vfm_ep_read - the next bytes of the save session (STOP_COPY,
 * PRE_COPY[_P2P]). Return: > 0 bytes; 0 at the end of the whole state;
 * -ENOMSG in pre-copy when nothing is pending now; -ENODEV without a session.
 */
VFM_EXPORT ssize_t vfm_ep_read(struct vfm_endpoint *ep, void *buf, size_t len);
/**
 * vfm_ep_write - the next bytes of the load session (RESUMING).
 * Return: @len, or a negative errno (-ENODEV: no session).
 */
VFM_EXPORT ssize_t vfm_ep_write(struct vfm_endpoint *ep, const void *buf, size_t len);

/**
 * vfm_ep_data_size - MIG_DATA_SIZE: estimate of the bytes a STOP_COPY now would give.
 * Return: 0, -ENOTTY (the device does not say), or an error.
 */
VFM_EXPORT int vfm_ep_data_size(struct vfm_endpoint *ep, uint64_t *bytes);

/**
 * vfm_ep_precopy_info - VFIO_MIG_GET_PRECOPY_INFO. Return: 0; -EINVAL outside PRE_COPY[_P2P];
 * -ENOTTY where the backend cannot tell.
 */
VFM_EXPORT int vfm_ep_precopy_info(struct vfm_endpoint *ep, uint64_t *initial, uint64_t *dirty);

/**
 * vfm_ep_session_opened - whether the last successful vfm_ep_set_state() opened a new data
 * session — for the kernel, whether it returned a data_fd. Return: 1 or 0;
 * -ENOTTY where the transport has no such fd (vfio-user, local).
 */
VFM_EXPORT int vfm_ep_session_opened(struct vfm_endpoint *ep);

/**
 * vfm_ep_reopen - closes the device and opens it again — for the kernel, the device fd (its
 * data_fd too), as a VMM that restarts does. Return: 0, -ENOTTY where the
 * transport has no such thing (vfio-user, local), or the open's error.
 */
VFM_EXPORT int vfm_ep_reopen(struct vfm_endpoint *ep);
/**
 * vfm_ep_feature_raw - one VFIO_DEVICE_FEATURE exactly as given, for tools
 * that probe a device's checks (the conformance suite): @argsz as stated
 * (it may claim less than @len), @flags (feature id | GET/SET/PROBE), @len
 * bytes of @data sent, and as many received back into it.
 * Return: 0 or the device's negative errno (the local backend passes it to
 * vfm_device_feature()).
 */
VFM_EXPORT int vfm_ep_feature_raw(struct vfm_endpoint *ep, uint32_t argsz, uint32_t flags,
                                  void *data, size_t len);
/**
 * vfm_ep_precopy_v2 - opts in to VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2:
 * from now on the device's precopy info flags are an output
 * (VFM_PRECOPY_INFO_REINIT: new initial data). A PROBE first, then the SET.
 * Return: 0; -ENOTTY (not offered: a kernel before it, a vfio-user server
 * that does not know the feature id and says so, a backend without
 * features); -EINVAL (a device without PRE_COPY, or a server that answers
 * EINVAL to any feature it lacks: libvfio-user's); a transport error.
 */
VFM_EXPORT int vfm_ep_precopy_v2(struct vfm_endpoint *ep);
/**
 * vfm_ep_precopy_info_flags - vfm_ep_precopy_info() and the reply's flags
 * (meaningful only after vfm_ep_precopy_v2(): before it, whatever the
 * device echoes; vfiomig's give 0). Return: as vfm_ep_precopy_info().
 */
VFM_EXPORT int vfm_ep_precopy_info_flags(struct vfm_endpoint *ep, uint64_t *initial,
                                         uint64_t *dirty, uint32_t *flags);

/**
 * vfm_ep_dma_log_start - DMA_LOGGING_START: the device logs the pages it
 * writes into its client's memory in @ranges (@n of them: 1 to
 * VFM_DMA_LOG_MAX_RANGES, each aligned to *@page_size, a power of two),
 * and sets *@page_size to the granularity it keeps.
 * Return: 0; -ENOTTY (the device keeps no DMA log: a kernel driver without
 *      one, such as mtty; a device without dma_log ops); -EINVAL (@n 0 or
 *      a range empty or not aligned; no @ranges); -E2BIG (@n too large);
 *      the device's own answer (-EBUSY when started already for vfiomig's
 *      devices; see vfm_device_feature()); a transport error.
 */
VFM_EXPORT int vfm_ep_dma_log_start(struct vfm_endpoint *ep, const struct vfm_dma_range *ranges,
                                    uint32_t n, uint64_t *page_size);
/**
 * vfm_ep_dma_log_stop - DMA_LOGGING_STOP: the device stops logging.
 * Return: 0; -ENOTTY; the device's answer (-EINVAL when not started, for
 *      vfiomig's devices).
 */
VFM_EXPORT int vfm_ep_dma_log_stop(struct vfm_endpoint *ep);
/**
 * vfm_ep_dma_log_report - DMA_LOGGING_REPORT: bit i of @bitmap (u64 words,
 * (@length / @page_size + 63) / 64 of them, zeroed here first) says whether
 * the device wrote into [@iova + i * @page_size, +@page_size) since that
 * unit was last reported; the device clears what it reports. @page_size: a
 * power of two, at least 4096. Over vfio-user the reply carries the
 * bitmap: at most the server's message size (1 MiB of bitmap for
 * vfiomig's: report a larger range in parts).
 * Return: 0; -ENOTTY; -EINVAL (@page_size; no @bitmap); -EOVERFLOW (the
 *      range wraps); the device's answer (-EINVAL when not started, or out
 *      of the logged ranges, for vfiomig's devices); a transport error.
 */
VFM_EXPORT int vfm_ep_dma_log_report(struct vfm_endpoint *ep, uint64_t iova, uint64_t length,
                                     uint64_t page_size, uint64_t *bitmap);

/**
 * vfm_ep_region_read - @len bytes of the device's region @index (a BAR, a
 * config space) at @offset, as its transport reads them (one access where
 * the length allows: a register of 4 bytes takes 4).
 * Return: 0; -EINVAL (no such region, or the range is outside it); -EPERM
 *      (not readable); -ENOTTY (the backend has no regions: local); the
 *      transport's error.
 */
VFM_EXPORT int vfm_ep_region_read(struct vfm_endpoint *ep, uint32_t index, uint64_t offset,
                                  void *buf, size_t len);

/**
 * vfm_ep_region_write - as vfm_ep_region_read(), the other way.
 */
VFM_EXPORT int vfm_ep_region_write(struct vfm_endpoint *ep, uint32_t index, uint64_t offset,
                                   const void *buf, size_t len);

/**
 * vfm_ep_self_checked - whether the device's state stream is vfiomig's
 * runtime format (include/vfiomig/device.h: every record of it carries a
 * checksum, and the runtime that loads it checks each one before any byte
 * is used, and the byte counts): a device run by the vfiomig runtime, in
 * this process or behind a vfio-user server that negotiated vfiomig's
 * extension. The migration engine moves such a stream without hashing it
 * again (and, where it can, without copying it), and a receiver takes a
 * stream moved that way only into a destination for which this is true.
 * Return: true or false (a kernel device, another vfio-user server).
 */
VFM_EXPORT bool vfm_ep_self_checked(struct vfm_endpoint *ep);

/**
 * vfm_ep_data_fd - the file descriptor that carries the open save
 * (STOP_COPY) or load (RESUMING) session's bytes, for a caller that moves
 * them itself (splice) instead of with vfm_ep_read() / vfm_ep_write(): a
 * stream socket; reading it to its end (0) is the end of the state, and
 * writing it whole and then leaving RESUMING loads it. The endpoint keeps
 * it (closes it when the session ends); use either it or vfm_ep_read()/
 * vfm_ep_write() for one session, not both. Not for a kernel device here
 * (its data_fd stays the backend's).
 * Return: the fd, or -1 when there is none now.
 */
VFM_EXPORT int vfm_ep_data_fd(struct vfm_endpoint *ep);

/**
 * vfm_ep_reset - VFIO_DEVICE_RESET.
 */
VFM_EXPORT int vfm_ep_reset(struct vfm_endpoint *ep);

/**
 * vfm_ep_free - frees an endpoint the caller owns (one made by a *_new below); an
 * endpoint owned by a client or backend object is freed with it. NULL does
 * nothing.
 */
VFM_EXPORT void vfm_ep_free(struct vfm_endpoint *ep);

/**
 * vfm_ep_local_new - an endpoint over a device runtime in this process
 * (its data calls, not its fd).
 * Return: 0 and *@out, or -ENOMEM. The device must outlive the endpoint.
 */
VFM_EXPORT int vfm_ep_local_new(struct vfm_device *dev, struct vfm_endpoint **out);

#ifdef __cplusplus
}
#endif
#endif /* VFIOMIG_ENDPOINT_H */
