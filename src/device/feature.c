/* SPDX-License-Identifier: MIT */
/*
 * VFIO_DEVICE_FEATURE and the release policy of the device runtime
 * (include/vfiomig/device.h): the rules the kernel keeps in its core, here
 * for every transport, so that a transport only moves bytes.
 */
#include <errno.h>
#include <string.h>

#include <vfiomig/device.h>

#include "../common/internal.h"

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
    uint32_t id = flags & VFM_FEATURE_MASK;
    int ret;

    *out_len = 0;
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
            int32_t data_fd; /* data moves by the data calls: always -1 */
        } ms;
        ret = check(flags, argsz, VFM_FEATURE_GET | VFM_FEATURE_SET, sizeof(ms));
        if (ret <= 0)
            return ret;
        if (flags & VFM_FEATURE_SET) {
            if (in_len < sizeof(ms))
                return -EINVAL;
            memcpy(&ms, in, sizeof(ms));
            return vfm_device_set_state(dev, ms.device_state, NULL);
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
    default:
        /* the DMA logging ids (no logging ops) and unknown ids */
        return -ENOTTY;
    }
}

uint32_t vfm_device_release(struct vfm_device *dev)
{
    uint32_t st = vfm_device_get_state(dev);

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
