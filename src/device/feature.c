/* SPDX-License-Identifier: MIT */
/*
 * VFIO_DEVICE_FEATURE and the release policy of the device runtime
 * (include/vfiomig/device.h): the rules the kernel keeps in its core, here
 * for every transport, so that a transport only moves bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/device.h>

#include "../common/internal.h"
#include "device_internal.h"

/* DMA_LOGGING_START's control (vfio.h's, the ranges inline after it as
 * vfio-user carries them) and DMA_LOGGING_REPORT's request. */
struct log_control {
    uint64_t page_size;
    uint32_t num_ranges;
    uint32_t reserved;
    uint64_t ranges;
};

struct log_report {
    uint64_t iova;
    uint64_t length;
    uint64_t page_size;
};

static bool pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

/* START, checked as the kernel's core checks it; @out gets the request
 * back with the page size the log keeps. */
static int log_start(const struct vfm_dma_log_ops *ops, void *ctx, const void *in, size_t in_len,
                     void *out, size_t out_cap, size_t *out_len)
{
    struct log_control c;
    struct vfm_dma_range *r;
    size_t len;
    int ret = 0;

    if (in_len < sizeof(c))
        return -EINVAL;
    memcpy(&c, in, sizeof(c));
    if (!c.num_ranges)
        return -EINVAL;
    if (c.num_ranges > VFM_DMA_LOG_MAX_RANGES)
        return -E2BIG;
    len = sizeof(c) + (size_t)c.num_ranges * sizeof(*r);
    if (in_len < len || !pow2(c.page_size))
        return -EINVAL;
    if (out_cap < len)
        return -E2BIG;
    r = malloc((size_t)c.num_ranges * sizeof(*r));
    if (!r)
        return -ENOMEM;
    memcpy(r, (const uint8_t *)in + sizeof(c), (size_t)c.num_ranges * sizeof(*r));
    for (uint32_t i = 0; i < c.num_ranges && !ret; i++) {
        if (!r[i].length || r[i].iova % c.page_size || r[i].length % c.page_size)
            ret = -EINVAL;
        else if (r[i].iova + r[i].length < r[i].iova)
            ret = -EOVERFLOW;
        for (uint32_t j = 0; j < i && !ret; j++) /* overlapping */
            if (r[i].iova < r[j].iova + r[j].length && r[j].iova < r[i].iova + r[i].length)
                ret = -EINVAL;
    }
    if (!ret)
        ret = ops->start(ctx, r, c.num_ranges, &c.page_size);
    free(r);
    if (ret)
        return ret;
    memcpy(out, in, len);
    memcpy(out, &c, sizeof(c));
    *out_len = len;
    return 0;
}

/* REPORT: the bitmap, (length / page_size + 63) / 64 u64s, into @out. */
static int log_report(const struct vfm_dma_log_ops *ops, void *ctx, const void *in, size_t in_len,
                      void *out, size_t out_cap, size_t *out_len)
{
    struct log_report q;
    uint64_t units, words, *bm;
    int ret;

    if (in_len < sizeof(q))
        return -EINVAL;
    memcpy(&q, in, sizeof(q));
    if (q.page_size < 4096 || !pow2(q.page_size))
        return -EINVAL;
    if (q.iova + q.length < q.iova)
        return -EOVERFLOW;
    units = q.length / q.page_size + (q.length % q.page_size ? 1 : 0);
    words = (units + 63) / 64;
    if (words > out_cap / 8)
        return -E2BIG;
    bm = calloc(words ? (size_t)words : 1, 8); /* @out may not be aligned */
    if (!bm)
        return -ENOMEM;
    ret = q.length ? ops->report(ctx, q.iova, q.length, q.page_size, bm) : 0;
    if (!ret) {
        memcpy(out, bm, (size_t)words * 8);
        *out_len = (size_t)words * 8;
    }
    free(bm);
    return ret;
}

/* The kernel's vfio_check_feature(): 0 for a PROBE that is supported, 1 to
 * go on, -EINVAL. The header is 8 bytes; @minsz the data's. */
static int check(uint32_t flags, uint32_t argsz, uint32_t supported, size_t minsz)
{
    uint32_t ops = flags & (VFM_FEATURE_GET | VFM_FEATURE_SET);

    if ((ops & supported) != ops)
        return -EINVAL;
    if (flags & VFM_FEATURE_PROBE)
        return 0;
    if (!ops || argsz < 8 + minsz)
        return -EINVAL;
    return 1;
}

static int give(void *out, size_t cap, size_t *out_len, const void *data, size_t len)
{
    if (cap < len)
        return -EINVAL;
    memcpy(out, data, len);
    *out_len = len;
    return 0;
}

int vfm_device_feature(struct vfm_device *dev, uint32_t flags, uint32_t argsz, const void *in,
                       size_t in_len, void *out, size_t out_cap, size_t *out_len)
{
    return vfm_device_feature_fd(dev, flags, argsz, in, in_len, out, out_cap, out_len, NULL);
}

int vfm_device_feature_fd(struct vfm_device *dev, uint32_t flags, uint32_t argsz, const void *in,
                          size_t in_len, void *out, size_t out_cap, size_t *out_len, int *data_fd)
{
    uint32_t id = flags & VFM_FEATURE_MASK;
    int ret;

    *out_len = 0;
    if (data_fd)
        *data_fd = -1;
    if (flags & ~(VFM_FEATURE_MASK | VFM_FEATURE_GET | VFM_FEATURE_SET | VFM_FEATURE_PROBE))
        return -EINVAL;
    if (!(flags & VFM_FEATURE_PROBE) && (flags & VFM_FEATURE_GET) && (flags & VFM_FEATURE_SET))
        return -EINVAL;

    switch (id) {
    case VFM_FEATURE_MIGRATION: {
        uint64_t mflags = vfm_device_flags(dev);
        ret = check(flags, argsz, VFM_FEATURE_GET, sizeof(mflags));
        return ret <= 0 ? ret : give(out, out_cap, out_len, &mflags, sizeof(mflags));
    }
    case VFM_FEATURE_MIG_DEVICE_STATE: {
        struct {
            uint32_t device_state;
            int32_t data_fd; /* GET: -1 (a session's fd is given by its SET) */
        } ms;
        ret = check(flags, argsz, VFM_FEATURE_GET | VFM_FEATURE_SET, sizeof(ms));
        if (ret <= 0)
            return ret;
        if (flags & VFM_FEATURE_SET) {
            bool opens;
            if (in_len < sizeof(ms))
                return -EINVAL;
            memcpy(&ms, in, sizeof(ms));
            /* only these can open a session with an fd (pre-copy cannot) */
            opens = ms.device_state == VFM_STATE_STOP_COPY || ms.device_state == VFM_STATE_RESUMING;
            return vfm_device_set_state(dev, ms.device_state, opens ? data_fd : NULL);
        }
        ms.device_state = vfm_device_get_state(dev);
        ms.data_fd = -1;
        return give(out, out_cap, out_len, &ms, sizeof(ms));
    }
    case VFM_FEATURE_MIG_DATA_SIZE: {
        uint64_t bytes;
        ret = check(flags, argsz, VFM_FEATURE_GET, sizeof(bytes));
        if (ret <= 0)
            return ret;
        ret = vfm_device_data_size(dev, &bytes);
        return ret ? ret : give(out, out_cap, out_len, &bytes, sizeof(bytes));
    }
    case VFM_FEATURE_DMA_LOGGING_START:
    case VFM_FEATURE_DMA_LOGGING_STOP:
    case VFM_FEATURE_DMA_LOGGING_REPORT: {
        void *ctx;
        const struct vfm_dma_log_ops *ops = vfm_device_dma_log(dev, &ctx);
        if (!ops)
            return -ENOTTY;
        if (id == VFM_FEATURE_DMA_LOGGING_STOP) {
            ret = check(flags, argsz, VFM_FEATURE_SET, 0);
            return ret <= 0 ? ret : ops->stop(ctx);
        }
        if (id == VFM_FEATURE_DMA_LOGGING_START) {
            ret = check(flags, argsz, VFM_FEATURE_SET, sizeof(struct log_control));
            return ret <= 0 ? ret : log_start(ops, ctx, in, in_len, out, out_cap, out_len);
        }
        ret = check(flags, argsz, VFM_FEATURE_GET, sizeof(struct log_report));
        return ret <= 0 ? ret : log_report(ops, ctx, in, in_len, out, out_cap, out_len);
    }
    case VFM_FEATURE_MIG_PRECOPY_INFOV2:
        /* the kernel core's order: a device without PRE_COPY first */
        if (!(vfm_device_flags(dev) & VFM_MIGRATION_PRE_COPY))
            return -EINVAL;
        ret = check(flags, argsz, VFM_FEATURE_SET, 0);
        if (ret <= 0)
            return ret;
        vfm_device_precopy_v2(dev, true);
        return 0;
    default:
        return -ENOTTY; /* unknown ids */
    }
}

uint32_t vfm_device_release(struct vfm_device *dev)
{
    uint32_t st = vfm_device_get_state(dev);

    vfm_device_precopy_v2(dev, false); /* the opt-in was the client's */
    if (st == VFM_STATE_STOP_COPY) {
        vfm_device_set_state(dev, VFM_STATE_STOP, NULL);
    } else if (st == VFM_STATE_PRE_COPY || st == VFM_STATE_PRE_COPY_P2P) {
        /* the session ends; the device runs on as it did */
        vfm_device_set_state(
            dev, st == VFM_STATE_PRE_COPY ? VFM_STATE_RUNNING : VFM_STATE_RUNNING_P2P, NULL);
    } else if (st == VFM_STATE_RESUMING) {
        vfm_device_reset(dev);
        vfm_device_set_state(dev, VFM_STATE_STOP, NULL);
    }
    return vfm_device_get_state(dev);
}
