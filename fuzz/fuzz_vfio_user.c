/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: the vfio-user message decoder (header, every command's
 * payload, and the VERSION JSON through json-c) — what a server reads from
 * an untrusted client.
 *
 * Input: byte 0 is the fd count the message claims to carry (0..8); then a
 * message: 16-byte header and payload.
 * Invariants: no crash, no leak, no out-of-bounds (sanitizers); an accepted
 * request's trailing data lies inside the payload; a count the decoder
 * accepts is within max_xfer.
 */
#include <stdlib.h>
#include <string.h>

#include <vfiomig/vfio_user.h>

#include "fuzz.h"

#define FUZZ_MAX_XFER 4096u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vfm_vu_request r;
    struct vfm_vu_hdr h;
    unsigned nfds;
    size_t len;

    if (size < 1 + sizeof(h))
        return 0;
    nfds = data[0] % (VFM_VU_MAX_FDS + 1);
    memcpy(&h, data + 1, sizeof(h));
    if (vfm_vu_decode_hdr(&h, 1u << 20))
        return 0;
    len = size - 1 - sizeof(h);
    if (h.msg_size - sizeof(h) < len)
        len = h.msg_size - sizeof(h); /* the message as framed */
    if (vfm_vu_decode_request(h.cmd, data + 1 + sizeof(h), len, nfds, FUZZ_MAX_XFER, &r))
        return 0;
    if (r.data_len &&
        (r.data < data + 1 + sizeof(h) || r.data + r.data_len > data + 1 + sizeof(h) + len))
        abort();
    if ((h.cmd == VFM_VU_REGION_READ || h.cmd == VFM_VU_REGION_WRITE) &&
        r.u.access.count > FUZZ_MAX_XFER)
        abort();
    if (h.cmd == VFM_VU_VERSION) {
        struct vfm_vu_caps caps;
        if (vfm_vu_caps_parse((const char *)r.data, r.data_len, &caps) == 0) {
            char *s = vfm_vu_caps_format(&caps);
            struct vfm_vu_caps again;
            /* what we write, we read back the same */
            if (s && (vfm_vu_caps_parse(s, strlen(s) + 1, &again) ||
                      memcmp(&caps, &again, sizeof(caps))))
                abort();
            free(s);
        }
    }
    return 0;
}

/* Seeds: one valid message per command the server takes. */
size_t fuzz_seed(unsigned i, uint8_t *out, size_t cap)
{
    static const char json[] =
        "{\"capabilities\":{\"max_msg_fds\":8,\"max_data_xfer_size\":1048576,"
        "\"migration\":{\"pgsize\":4096},\"vfiomig\":{\"precopy_info\":true}}}";
    uint8_t p[256] = {0};
    struct vfm_vu_hdr h = {.msg_id = 1};
    size_t len = 0;
    uint8_t nfds = 0;

    switch (i) {
    case 0:
        h.cmd = VFM_VU_VERSION;
        memcpy(p + 4, json, sizeof(json));
        len = 4 + sizeof(json);
        break;
    case 1: {
        struct vfm_vu_dma_map m = {.argsz = 32, .flags = 3, .addr = 1 << 20, .size = 4096};
        h.cmd = VFM_VU_DMA_MAP;
        memcpy(p, &m, sizeof(m));
        len = sizeof(m);
        nfds = 1;
        break;
    }
    case 2: {
        struct vfm_vu_region_access a = {.offset = 8, .region = 1, .count = 4};
        h.cmd = VFM_VU_REGION_WRITE;
        memcpy(p, &a, sizeof(a));
        len = sizeof(a) + 4;
        break;
    }
    case 3: {
        struct vfm_vu_feature f = {.argsz = 16, .flags = 2 | VFM_FEATURE_SET};
        h.cmd = VFM_VU_DEVICE_FEATURE;
        memcpy(p, &f, sizeof(f));
        p[8] = 3;
        len = 16;
        break;
    }
    case 4: {
        struct vfm_vu_mig_data d = {.argsz = 8 + 16, .size = 16};
        h.cmd = VFM_VU_MIG_DATA_WRITE;
        memcpy(p, &d, sizeof(d));
        len = 8 + 16;
        break;
    }
    case 5: {
        struct vfm_vu_region_info r = {.argsz = 32, .index = 0};
        h.cmd = VFM_VU_DEVICE_GET_REGION_INFO;
        memcpy(p, &r, sizeof(r));
        len = sizeof(r);
        break;
    }
    case 6: {
        struct vfm_vu_precopy_info q = {.argsz = sizeof(q)};
        h.cmd = VFM_VU_VFIOMIG_PRECOPY_INFO;
        memcpy(p, &q, sizeof(q));
        len = sizeof(q);
        break;
    }
    default:
        return 0;
    }
    if (cap < 1 + sizeof(h) + len)
        return 0;
    h.msg_size = (uint32_t)(sizeof(h) + len);
    out[0] = nfds;
    memcpy(out + 1, &h, sizeof(h));
    memcpy(out + 1 + sizeof(h), p, len);
    return 1 + sizeof(h) + len;
}
