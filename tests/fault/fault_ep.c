/* SPDX-License-Identifier: MIT */
/* The fault-injecting endpoint (fault_ep.h). */
#include <errno.h>
#include <stdlib.h>

#include "fault_ep.h"

struct fault {
    struct vfm_endpoint *in;
    uint32_t fail_state;
    unsigned refused;
};

static struct fault *F(struct vfm_endpoint *ep)
{
    return vfm_ep_priv(ep);
}

static int f_flags(struct vfm_endpoint *ep, uint32_t *flags)
{
    return vfm_ep_flags(F(ep)->in, flags);
}

static int f_set(struct vfm_endpoint *ep, uint32_t state)
{
    struct fault *f = F(ep);

    if (state == f->fail_state && !f->refused) {
        f->refused++;
        return -EIO; /* injected: the device never saw it */
    }
    return vfm_ep_set_state(f->in, state);
}

static int f_get(struct vfm_endpoint *ep, uint32_t *state)
{
    return vfm_ep_get_state(F(ep)->in, state);
}

static ssize_t f_read(struct vfm_endpoint *ep, void *buf, size_t len)
{
    return vfm_ep_read(F(ep)->in, buf, len);
}

static ssize_t f_write(struct vfm_endpoint *ep, const void *buf, size_t len)
{
    return vfm_ep_write(F(ep)->in, buf, len);
}

static int f_size(struct vfm_endpoint *ep, uint64_t *bytes)
{
    return vfm_ep_data_size(F(ep)->in, bytes);
}

static int f_reset(struct vfm_endpoint *ep)
{
    return vfm_ep_reset(F(ep)->in);
}

static int f_info(struct vfm_endpoint *ep, uint64_t *initial, uint64_t *dirty)
{
    return vfm_ep_precopy_info(F(ep)->in, initial, dirty);
}

static int f_opened(struct vfm_endpoint *ep)
{
    return vfm_ep_session_opened(F(ep)->in);
}

static int f_reopen(struct vfm_endpoint *ep)
{
    return vfm_ep_reopen(F(ep)->in);
}

static int f_feature(struct vfm_endpoint *ep, uint32_t argsz, uint32_t flags, void *data,
                     size_t len)
{
    return vfm_ep_feature_raw(F(ep)->in, argsz, flags, data, len);
}

static int f_region(struct vfm_endpoint *ep, uint32_t index, uint64_t offset, void *buf, size_t len,
                    bool write)
{
    return write ? vfm_ep_region_write(F(ep)->in, index, offset, buf, len)
                 : vfm_ep_region_read(F(ep)->in, index, offset, buf, len);
}

/* the inner device's stream, checked where it loads as before; its data
 * fd is not handed out (the bytes go through f_read/f_write) */
static bool f_self_checked(struct vfm_endpoint *ep)
{
    return vfm_ep_self_checked(F(ep)->in);
}

static void f_destroy(struct vfm_endpoint *ep)
{
    free(F(ep));
}

static const struct vfm_endpoint_ops fault_ops = {
    .get_flags = f_flags,
    .set_state = f_set,
    .get_state = f_get,
    .read = f_read,
    .write = f_write,
    .data_size = f_size,
    .reset = f_reset,
    .destroy = f_destroy,
    .precopy_info = f_info,
    .session_opened = f_opened,
    .reopen = f_reopen,
    .feature = f_feature,
    .region = f_region,
    .self_checked = f_self_checked,
};

int fault_ep_new(struct vfm_endpoint *inner, uint32_t fail_state, struct vfm_endpoint **out)
{
    struct fault *f = calloc(1, sizeof(*f));
    int ret;

    if (!f)
        return -ENOMEM;
    f->in = inner;
    f->fail_state = fail_state;
    ret = vfm_ep_new(&fault_ops, vfm_ep_name(inner), f, out);
    if (ret)
        free(f);
    return ret;
}

unsigned fault_ep_refused(const struct vfm_endpoint *ep)
{
    return ((const struct fault *)vfm_ep_priv(ep))->refused;
}
