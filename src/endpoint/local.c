/* SPDX-License-Identifier: MIT */
/* The local endpoint backend (vfm_ep_local_new()): a device runtime in this
 * process, behind the endpoint interface. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/device.h>
#include <vfiomig/endpoint.h>

/* The local backend: a device runtime in this process. */

static int local_flags(struct vfm_endpoint *ep, uint32_t *flags)
{
    *flags = vfm_device_flags(vfm_ep_priv(ep));
    return 0;
}

static int local_set(struct vfm_endpoint *ep, uint32_t state)
{
    return vfm_device_set_state(vfm_ep_priv(ep), state, NULL);
}

static int local_get(struct vfm_endpoint *ep, uint32_t *state)
{
    *state = vfm_device_get_state(vfm_ep_priv(ep));
    return 0;
}

static ssize_t local_read(struct vfm_endpoint *ep, void *buf, size_t len)
{
    return vfm_device_data_read(vfm_ep_priv(ep), buf, len);
}

static ssize_t local_write(struct vfm_endpoint *ep, const void *buf, size_t len)
{
    return vfm_device_data_write(vfm_ep_priv(ep), buf, len);
}

static int local_size(struct vfm_endpoint *ep, uint64_t *bytes)
{
    return vfm_device_data_size(vfm_ep_priv(ep), bytes);
}

static int local_precopy_info(struct vfm_endpoint *ep, uint64_t *initial, uint64_t *dirty)
{
    return vfm_device_precopy_info(vfm_ep_priv(ep), initial, dirty);
}

static int local_reset(struct vfm_endpoint *ep)
{
    int ret = vfm_device_reset(vfm_ep_priv(ep));
    return ret > 0 ? 0 : ret; /* deferred: done when the transition ends */
}

/* A raw feature request, to the runtime's entry point: its reply data (a
 * GET's) replaces @data's first bytes. */
static int local_precopy_info_flags(struct vfm_endpoint *ep, uint64_t *initial, uint64_t *dirty,
                                    uint32_t *flags)
{
    return vfm_device_precopy_info_flags(vfm_ep_priv(ep), initial, dirty, flags);
}

static int local_feature(struct vfm_endpoint *ep, uint32_t argsz, uint32_t flags, void *data,
                         size_t len)
{
    uint8_t out[64];
    size_t got = 0;
    int ret = vfm_device_feature(vfm_ep_priv(ep), flags, argsz, data, len, out, sizeof(out), &got);

    if (!ret && got && len)
        memcpy(data, out, got < len ? got : len);
    return ret;
}

/* DMA logging: the requests in the layouts vfm_device_feature() takes
 * (vfio-user's: the ranges inline). */
static int local_log_start(struct vfm_endpoint *ep, const struct vfm_dma_range *ranges, uint32_t n,
                           uint64_t *page_size)
{
    uint64_t ctl[3] = {*page_size, n, 0};
    size_t len = sizeof(ctl) + (size_t)n * sizeof(*ranges), got = 0;
    uint8_t *buf = malloc(2 * len);
    int ret;

    if (!buf)
        return -ENOMEM;
    memcpy(buf, ctl, sizeof(ctl));
    memcpy(buf + sizeof(ctl), ranges, (size_t)n * sizeof(*ranges));
    ret = vfm_device_feature(vfm_ep_priv(ep), VFM_FEATURE_DMA_LOGGING_START | VFM_FEATURE_SET,
                             (uint32_t)(8 + len), buf, len, buf + len, len, &got);
    if (!ret && got >= sizeof(ctl))
        memcpy(page_size, buf + len, 8);
    free(buf);
    return ret;
}

static int local_log_stop(struct vfm_endpoint *ep)
{
    size_t got;
    return vfm_device_feature(vfm_ep_priv(ep), VFM_FEATURE_DMA_LOGGING_STOP | VFM_FEATURE_SET, 8,
                              NULL, 0, NULL, 0, &got);
}

static int local_log_report(struct vfm_endpoint *ep, uint64_t iova, uint64_t length,
                            uint64_t page_size, uint64_t *bitmap)
{
    uint64_t q[3] = {iova, length, page_size};
    uint64_t units = length / page_size + (length % page_size ? 1 : 0);
    size_t got;

    return vfm_device_feature(vfm_ep_priv(ep), VFM_FEATURE_DMA_LOGGING_REPORT | VFM_FEATURE_GET,
                              8 + sizeof(q), q, sizeof(q), bitmap, (size_t)((units + 63) / 64) * 8,
                              &got);
}

static void local_destroy(struct vfm_endpoint *ep)
{
    (void)ep; /* the device is the caller's */
}

/* the runtime in this process: its stream is checked where it loads */
static bool local_self_checked(struct vfm_endpoint *ep)
{
    (void)ep;
    return true;
}

static const struct vfm_endpoint_ops local_ops = {
    .get_flags = local_flags,
    .set_state = local_set,
    .get_state = local_get,
    .read = local_read,
    .write = local_write,
    .data_size = local_size,
    .reset = local_reset,
    .destroy = local_destroy,
    .precopy_info = local_precopy_info,
    .feature = local_feature,
    .precopy_info_flags = local_precopy_info_flags,
    .dma_log_start = local_log_start,
    .dma_log_stop = local_log_stop,
    .dma_log_report = local_log_report,
    .self_checked = local_self_checked,
};

int vfm_ep_local_new(struct vfm_device *dev, struct vfm_endpoint **out)
{
    return vfm_ep_new(&local_ops, vfm_device_name(dev), dev, out);
}
