/* SPDX-License-Identifier: MIT */
/*
 * The vfio-user codec (include/vfiomig/vfio_user.h, part 1): pure checks of
 * what arrives, before any field is used. No I/O, no allocation.
 */
#include <errno.h>
#include <string.h>

#include <vfiomig/vfio_user.h>

_Static_assert(sizeof(struct vfm_vu_hdr) == 16, "header");
_Static_assert(sizeof(struct vfm_vu_version) == 4, "version");
_Static_assert(sizeof(struct vfm_vu_dma_map) == 32, "dma_map");
_Static_assert(sizeof(struct vfm_vu_dma_unmap) == 24, "dma_unmap");
_Static_assert(sizeof(struct vfm_vu_device_info) == 16, "device_info");
_Static_assert(sizeof(struct vfm_vu_region_info) == 32, "region_info");
_Static_assert(sizeof(struct vfm_vu_region_access) == 16, "region_access");
_Static_assert(sizeof(struct vfm_vu_irq_info) == 16, "irq_info");
_Static_assert(sizeof(struct vfm_vu_irq_set) == 20, "irq_set");
_Static_assert(sizeof(struct vfm_vu_feature) == 8, "feature");
_Static_assert(sizeof(struct vfm_vu_mig_state) == 8, "mig_state");
_Static_assert(sizeof(struct vfm_vu_mig_data) == 8, "mig_data");

/* Old libvfio-user clients set this DMA_MAP flag ("mappable"); it carries
 * no meaning the fd does not already give, so it is accepted and ignored. */
#define DMA_MAP_FLAG_LEGACY_MAPPABLE (1u << 2)

const char *vfm_vu_cmd_name(uint16_t cmd)
{
    switch (cmd) {
    case VFM_VU_VERSION:
        return "VERSION";
    case VFM_VU_DMA_MAP:
        return "DMA_MAP";
    case VFM_VU_DMA_UNMAP:
        return "DMA_UNMAP";
    case VFM_VU_DEVICE_GET_INFO:
        return "DEVICE_GET_INFO";
    case VFM_VU_DEVICE_GET_REGION_INFO:
        return "DEVICE_GET_REGION_INFO";
    case VFM_VU_DEVICE_GET_REGION_IO_FDS:
        return "DEVICE_GET_REGION_IO_FDS";
    case VFM_VU_DEVICE_GET_IRQ_INFO:
        return "DEVICE_GET_IRQ_INFO";
    case VFM_VU_DEVICE_SET_IRQS:
        return "DEVICE_SET_IRQS";
    case VFM_VU_REGION_READ:
        return "REGION_READ";
    case VFM_VU_REGION_WRITE:
        return "REGION_WRITE";
    case VFM_VU_DMA_READ:
        return "DMA_READ";
    case VFM_VU_DMA_WRITE:
        return "DMA_WRITE";
    case VFM_VU_DEVICE_RESET:
        return "DEVICE_RESET";
    case VFM_VU_REGION_WRITE_MULTI:
        return "REGION_WRITE_MULTI";
    case VFM_VU_DEVICE_FEATURE:
        return "DEVICE_FEATURE";
    case VFM_VU_MIG_DATA_READ:
        return "MIG_DATA_READ";
    case VFM_VU_MIG_DATA_WRITE:
        return "MIG_DATA_WRITE";
    case VFM_VU_VFIOMIG_PRECOPY_INFO:
        return "VFIOMIG_PRECOPY_INFO";
    default:
        return "UNKNOWN";
    }
}

int vfm_vu_decode_hdr(const struct vfm_vu_hdr *h, uint32_t max_size)
{
    uint32_t type = h->flags & VFM_VU_TYPE_MASK;

    if (h->msg_size < sizeof(*h))
        return -EINVAL;
    if (h->flags & ~(VFM_VU_TYPE_MASK | VFM_VU_NO_REPLY | VFM_VU_ERROR))
        return -EINVAL;
    if (type != VFM_VU_TYPE_COMMAND && type != VFM_VU_TYPE_REPLY)
        return -EINVAL;
    if (h->msg_size > max_size)
        return -EMSGSIZE;
    return 0;
}

/* Copies a fixed-size struct that must be exactly the payload (@exact) or
 * its start. */
static int take(void *dst, size_t size, const void *payload, size_t len, int exact)
{
    if (exact ? len != size : len < size)
        return -EINVAL;
    memcpy(dst, payload, size);
    return 0;
}

int vfm_vu_decode_request(uint16_t cmd, const void *payload, size_t len, unsigned nfds,
                          uint32_t max_xfer, struct vfm_vu_request *out)
{
    const uint8_t *p = payload;
    int ret;

    memset(out, 0, sizeof(*out));
    out->cmd = cmd;
    if (len && !payload)
        return -EINVAL;

    /* Only DMA_MAP (one) and SET_IRQS (eventfds) carry file descriptors. */
    if (nfds && cmd != VFM_VU_DMA_MAP && cmd != VFM_VU_DEVICE_SET_IRQS)
        return -EINVAL;

    switch (cmd) {
    case VFM_VU_VERSION:
        ret = take(&out->u.version, sizeof(out->u.version), p, len, 0);
        if (ret)
            return ret;
        out->data = p + sizeof(out->u.version);
        out->data_len = len - sizeof(out->u.version);
        return 0;

    case VFM_VU_DMA_MAP: {
        struct vfm_vu_dma_map *m = &out->u.dma_map;
        if ((ret = take(m, sizeof(*m), p, len, 1)))
            return ret;
        if (m->argsz < sizeof(*m) || nfds > 1 ||
            (m->flags &
             ~(VFM_VU_DMA_READ_FLAG | VFM_VU_DMA_WRITE_FLAG | DMA_MAP_FLAG_LEGACY_MAPPABLE)) ||
            m->size == 0 || m->addr + m->size < m->addr || m->offset + m->size < m->offset)
            return -EINVAL;
        return 0;
    }

    case VFM_VU_DMA_UNMAP: {
        struct vfm_vu_dma_unmap *u = &out->u.dma_unmap;
        if ((ret = take(u, sizeof(*u), p, len, 1)))
            return ret;
        /* dirty bitmaps (flag 1) and the other kernel flags: not offered */
        if (u->argsz < sizeof(*u) || u->flags || u->size == 0 || u->addr + u->size < u->addr)
            return -EINVAL;
        return 0;
    }

    case VFM_VU_DEVICE_GET_INFO:
        if ((ret = take(&out->u.info, sizeof(out->u.info), p, len, 1)))
            return ret;
        return out->u.info.argsz < sizeof(out->u.info) ? -EINVAL : 0;

    case VFM_VU_DEVICE_GET_REGION_INFO:
        if ((ret = take(&out->u.region_info, sizeof(out->u.region_info), p, len, 1)))
            return ret;
        return out->u.region_info.argsz < sizeof(out->u.region_info) ? -EINVAL : 0;

    case VFM_VU_DEVICE_GET_REGION_IO_FDS:
        if (len != 16)
            return -EINVAL;
        return 0;

    case VFM_VU_DEVICE_GET_IRQ_INFO:
        if ((ret = take(&out->u.irq_info, sizeof(out->u.irq_info), p, len, 1)))
            return ret;
        return out->u.irq_info.argsz < sizeof(out->u.irq_info) ? -EINVAL : 0;

    case VFM_VU_DEVICE_SET_IRQS:
        if ((ret = take(&out->u.irq_set, sizeof(out->u.irq_set), p, len, 0)))
            return ret;
        if (out->u.irq_set.argsz != len || nfds > VFM_VU_MAX_FDS)
            return -EINVAL;
        out->data = p + sizeof(out->u.irq_set);
        out->data_len = len - sizeof(out->u.irq_set);
        return 0;

    case VFM_VU_REGION_READ:
        if ((ret = take(&out->u.access, sizeof(out->u.access), p, len, 1)))
            return ret;
        return out->u.access.count > max_xfer ? -E2BIG : 0;

    case VFM_VU_REGION_WRITE:
        if ((ret = take(&out->u.access, sizeof(out->u.access), p, len, 0)))
            return ret;
        if (out->u.access.count != len - sizeof(out->u.access))
            return -EINVAL;
        if (out->u.access.count > max_xfer)
            return -E2BIG;
        out->data = p + sizeof(out->u.access);
        out->data_len = out->u.access.count;
        return 0;

    case VFM_VU_DMA_READ:
    case VFM_VU_DMA_WRITE:
        return -EINVAL; /* server-to-client commands */

    case VFM_VU_DEVICE_RESET:
        return len ? -EINVAL : 0;

    case VFM_VU_REGION_WRITE_MULTI:
        return -EOPNOTSUPP; /* write_multiple is not offered in VERSION */

    case VFM_VU_DEVICE_FEATURE:
        if ((ret = take(&out->u.feature, sizeof(out->u.feature), p, len, 0)))
            return ret;
        if (out->u.feature.argsz < sizeof(out->u.feature))
            return -EINVAL;
        out->data = p + sizeof(out->u.feature);
        out->data_len = len - sizeof(out->u.feature);
        return 0;

    case VFM_VU_MIG_DATA_READ:
        if ((ret = take(&out->u.mig, sizeof(out->u.mig), p, len, 1)))
            return ret;
        if (out->u.mig.size > max_xfer)
            return -E2BIG;
        /* argsz: the most reply payload the client takes */
        if (out->u.mig.argsz < sizeof(out->u.mig) + (uint64_t)out->u.mig.size)
            return -EINVAL;
        return 0;

    case VFM_VU_MIG_DATA_WRITE:
        if ((ret = take(&out->u.mig, sizeof(out->u.mig), p, len, 0)))
            return ret;
        if (out->u.mig.size != len - sizeof(out->u.mig) || out->u.mig.argsz < sizeof(out->u.mig))
            return -EINVAL;
        if (out->u.mig.size > max_xfer)
            return -E2BIG;
        out->data = p + sizeof(out->u.mig);
        out->data_len = out->u.mig.size;
        return 0;

    case VFM_VU_VFIOMIG_PRECOPY_INFO:
        if ((ret = take(&out->u.precopy, sizeof(out->u.precopy), p, len, 1)))
            return ret;
        if (out->u.precopy.argsz < sizeof(out->u.precopy) || out->u.precopy.flags)
            return -EINVAL;
        return 0;

    default:
        return -ENOSYS;
    }
}
