/* SPDX-License-Identifier: MIT */
/* The endpoint interface (include/vfiomig/endpoint.h): calls through a
 * backend's ops. Knows no backend. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/endpoint.h>

struct vfm_endpoint {
    const struct vfm_endpoint_ops *ops;
    char *name; /* for messages: every error names the device */
    void *priv; /* the backend's */
};

int vfm_ep_new(const struct vfm_endpoint_ops *ops, const char *name, void *priv,
               struct vfm_endpoint **out)
{
    struct vfm_endpoint *ep;

    if (!ops || !ops->get_flags || !ops->set_state || !ops->get_state || !ops->read ||
        !ops->write || !ops->reset)
        return -EINVAL;
    ep = calloc(1, sizeof(*ep));
    if (!ep)
        return -ENOMEM;
    ep->ops = ops;
    ep->priv = priv;
    ep->name = strdup(name ? name : "device");
    if (!ep->name) {
        free(ep);
        return -ENOMEM;
    }
    *out = ep;
    return 0;
}

void *vfm_ep_priv(const struct vfm_endpoint *ep)
{
    return ep->priv;
}

int vfm_ep_set_name(struct vfm_endpoint *ep, const char *name)
{
    char *n = strdup(name ? name : "device");

    if (!n)
        return -ENOMEM;
    free(ep->name);
    ep->name = n;
    return 0;
}

void vfm_ep_delete(struct vfm_endpoint *ep)
{
    if (!ep)
        return;
    free(ep->name);
    free(ep);
}

const char *vfm_ep_name(const struct vfm_endpoint *ep)
{
    return ep->name ? ep->name : "device";
}

int vfm_ep_flags(struct vfm_endpoint *ep, uint32_t *flags)
{
    return ep->ops->get_flags(ep, flags);
}

int vfm_ep_set_state(struct vfm_endpoint *ep, uint32_t state)
{
    return ep->ops->set_state(ep, state);
}

int vfm_ep_get_state(struct vfm_endpoint *ep, uint32_t *state)
{
    return ep->ops->get_state(ep, state);
}

ssize_t vfm_ep_read(struct vfm_endpoint *ep, void *buf, size_t len)
{
    return ep->ops->read(ep, buf, len);
}

ssize_t vfm_ep_write(struct vfm_endpoint *ep, const void *buf, size_t len)
{
    return ep->ops->write(ep, buf, len);
}

int vfm_ep_data_size(struct vfm_endpoint *ep, uint64_t *bytes)
{
    return ep->ops->data_size ? ep->ops->data_size(ep, bytes) : -ENOTTY;
}

int vfm_ep_precopy_info(struct vfm_endpoint *ep, uint64_t *initial, uint64_t *dirty)
{
    *initial = *dirty = 0;
    return ep->ops->precopy_info ? ep->ops->precopy_info(ep, initial, dirty) : -ENOTTY;
}

int vfm_ep_feature_raw(struct vfm_endpoint *ep, uint32_t argsz, uint32_t flags, void *data,
                       size_t len)
{
    return ep->ops->feature ? ep->ops->feature(ep, argsz, flags, data, len) : -ENOTTY;
}

int vfm_ep_precopy_info_flags(struct vfm_endpoint *ep, uint64_t *initial, uint64_t *dirty,
                              uint32_t *flags)
{
    *initial = *dirty = 0;
    *flags = 0;
    if (ep->ops->precopy_info_flags)
        return ep->ops->precopy_info_flags(ep, initial, dirty, flags);
    return vfm_ep_precopy_info(ep, initial, dirty);
}

int vfm_ep_precopy_v2(struct vfm_endpoint *ep)
{
    /* a PROBE first: a kernel that lacks the feature says so without a
     * SET that could mean something else to it */
    int ret = vfm_ep_feature_raw(
        ep, 8, VFM_FEATURE_MIG_PRECOPY_INFOV2 | VFM_FEATURE_SET | VFM_FEATURE_PROBE, NULL, 0);

    return ret ? ret
               : vfm_ep_feature_raw(ep, 8, VFM_FEATURE_MIG_PRECOPY_INFOV2 | VFM_FEATURE_SET, NULL,
                                    0);
}

int vfm_ep_dma_log_start(struct vfm_endpoint *ep, const struct vfm_dma_range *ranges, uint32_t n,
                         uint64_t *page_size)
{
    if (!ranges || !page_size || !n)
        return -EINVAL;
    if (n > VFM_DMA_LOG_MAX_RANGES)
        return -E2BIG;
    return ep->ops->dma_log_start ? ep->ops->dma_log_start(ep, ranges, n, page_size) : -ENOTTY;
}

int vfm_ep_dma_log_stop(struct vfm_endpoint *ep)
{
    return ep->ops->dma_log_stop ? ep->ops->dma_log_stop(ep) : -ENOTTY;
}

int vfm_ep_dma_log_report(struct vfm_endpoint *ep, uint64_t iova, uint64_t length,
                          uint64_t page_size, uint64_t *bitmap)
{
    uint64_t units;

    if (!bitmap || page_size < 4096 || (page_size & (page_size - 1)))
        return -EINVAL;
    if (iova + length < iova)
        return -EOVERFLOW;
    units = length / page_size + (length % page_size ? 1 : 0);
    memset(bitmap, 0, (size_t)((units + 63) / 64) * 8);
    return ep->ops->dma_log_report ? ep->ops->dma_log_report(ep, iova, length, page_size, bitmap)
                                   : -ENOTTY;
}

int vfm_ep_reopen(struct vfm_endpoint *ep)
{
    return ep->ops->reopen ? ep->ops->reopen(ep) : -ENOTTY;
}

int vfm_ep_session_opened(struct vfm_endpoint *ep)
{
    return ep->ops->session_opened ? ep->ops->session_opened(ep) : -ENOTTY;
}

int vfm_ep_reset(struct vfm_endpoint *ep)
{
    return ep->ops->reset(ep);
}

int vfm_ep_region_read(struct vfm_endpoint *ep, uint32_t index, uint64_t offset, void *buf,
                       size_t len)
{
    return ep->ops->region ? ep->ops->region(ep, index, offset, buf, len, false) : -ENOTTY;
}

int vfm_ep_region_write(struct vfm_endpoint *ep, uint32_t index, uint64_t offset, const void *buf,
                        size_t len)
{
    return ep->ops->region ? ep->ops->region(ep, index, offset, (void *)buf, len, true) : -ENOTTY;
}

void vfm_ep_free(struct vfm_endpoint *ep)
{
    if (!ep || !ep->ops->destroy)
        return; /* none, or its backend's */
    ep->ops->destroy(ep);
    vfm_ep_delete(ep);
}

bool vfm_ep_self_checked(struct vfm_endpoint *ep)
{
    return ep->ops->self_checked && ep->ops->self_checked(ep);
}

int vfm_ep_data_fd(struct vfm_endpoint *ep)
{
    return ep->ops->data_fd ? ep->ops->data_fd(ep) : -1;
}
