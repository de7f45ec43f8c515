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
static int local_feature(struct vfm_endpoint *ep, uint32_t argsz, uint32_t flags, void *data,
                         size_t len)
{
    uint8_t out[64];
    size_t got = 0;
    int ret = vfm_device_feature(vfm_ep_priv(ep), flags, argsz, data, len, out, sizeof(out), &got);

    if (!ret)
        memcpy(data, out, got < len ? got : len);
    return ret;
}

static void local_destroy(struct vfm_endpoint *ep)
{
    (void)ep; /* the device is the caller's */
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
};

int vfm_ep_local_new(struct vfm_device *dev, struct vfm_endpoint **out)
{
    return vfm_ep_new(&local_ops, vfm_device_name(dev), dev, out);
}
