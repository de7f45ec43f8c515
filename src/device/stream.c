/* SPDX-License-Identifier: MIT */
/* The device state stream's encoder and incremental decoder (stream.h). */
#include <errno.h>
#include <string.h>

#include "../common/hash.h"

#include "stream.h"

static void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

void vfm_stream_put_u64(uint8_t out[8], uint64_t v)
{
    put_le64(out, v);
}

void vfm_stream_put_header(uint8_t out[VFM_STREAM_HDR_SIZE], uint32_t compat, uint16_t version)
{
    put_le32(out, VFM_STREAM_MAGIC);
    put_le16(out + 4, version);
    put_le16(out + 6, VFM_STREAM_HDR_SIZE);
    put_le32(out + 8, compat);
    put_le32(out + 12, 0);
    put_le64(out + 16, vfm_xxh3(out, 16));
}

void vfm_stream_put_record_sum(uint8_t out[VFM_STREAM_REC_SIZE], uint16_t type, uint32_t seq,
                               uint64_t len, uint64_t sum)
{
    put_le16(out, type);
    put_le16(out + 2, 0);
    put_le32(out + 4, seq);
    put_le64(out + 8, len);
    put_le64(out + 16, sum);
    put_le64(out + 24, vfm_xxh3(out, 24));
}

void vfm_stream_put_record(uint8_t out[VFM_STREAM_REC_SIZE], uint16_t type, uint32_t seq,
                           const void *payload, uint64_t len)
{
    vfm_stream_put_record_sum(out, type, seq, len, vfm_xxh3(payload, (size_t)len));
}

void vfm_stream_dec_init(struct vfm_stream_dec *d, uint32_t compat, uint64_t max_payload,
                         bool allow_precopy)
{
    memset(d, 0, sizeof(*d));
    d->compat = compat;
    d->max_payload = max_payload;
    d->allow_precopy = allow_precopy;
    vfm_buf_init(&d->payload, (size_t)max_payload);
    d->xs = vfm_xxh3_stream_new(); /* NULL: checked in one pass at the end */
}

void vfm_stream_dec_release(struct vfm_stream_dec *d)
{
    vfm_buf_release(&d->payload);
    vfm_buf_release(&d->final);
    vfm_xxh3_stream_free(d->xs);
    memset(d, 0, sizeof(*d));
}

static int fail(struct vfm_stream_dec *d, int err)
{
    d->err = err;
    return err;
}

static int check_header(struct vfm_stream_dec *d)
{
    const uint8_t *h = d->hdr;

    d->version = get_le16(h + 4);
    if (get_le32(h) != VFM_STREAM_MAGIC ||
        (d->version != VFM_STREAM_VERSION && d->version != VFM_STREAM_VERSION2) ||
        get_le16(h + 6) != VFM_STREAM_HDR_SIZE || get_le32(h + 12) != 0 ||
        get_le64(h + 16) != vfm_xxh3(h, 16))
        return fail(d, -EINVAL);
    if (get_le32(h + 8) != d->compat)
        return fail(d, -EINVAL); /* another device type's state */
    d->phase = VFM_DEC_RECORD;
    return 0;
}

/* A whole record header has arrived. */
static int check_record(struct vfm_stream_dec *d)
{
    const uint8_t *h = d->hdr;

    if (get_le64(h + 24) != vfm_xxh3(h, 24) || get_le16(h + 2) != 0)
        return fail(d, -EINVAL);
    if (get_le32(h + 4) != d->next_seq)
        return fail(d, -EINVAL); /* lost, repeated or reordered record */
    d->type = get_le16(h);
    d->len = get_le64(h + 8);
    d->sum = get_le64(h + 16);
    switch (d->type) {
    case VFM_REC_PRECOPY:
        if (!d->allow_precopy || d->final_seen)
            return fail(d, -EINVAL);
        break;
    case VFM_REC_FINAL:
        if (d->final_seen)
            return fail(d, -EINVAL);
        break;
    case VFM_REC_FINAL_BEGIN:
        if (d->version < VFM_STREAM_VERSION2 || d->final_seen || d->len != VFM_STREAM_BEGIN_SIZE)
            return fail(d, -EINVAL);
        break;
    case VFM_REC_FINAL_PART:
        /* never empty (a part that moves nothing could repeat for ever),
         * never past the size FINAL_BEGIN announced */
        if (!d->parts || d->len == 0 || d->len > d->parts_left)
            return fail(d, -EINVAL);
        break;
    case VFM_REC_END:
        if (!d->final_seen || d->parts || d->len != 0)
            return fail(d, -EINVAL);
        break;
    default:
        return fail(d, -EINVAL);
    }
    if (d->len > d->max_payload)
        return fail(d, -EFBIG);
    d->next_seq++;
    vfm_buf_release(&d->payload);
    vfm_buf_init(&d->payload, (size_t)d->max_payload);
    d->payload.lazy = true;
    if (d->type == VFM_REC_FINAL_PART) {
        /* in place, right after the parts before it */
        d->payload.data = d->final.data + d->final.len;
        d->payload.cap = (size_t)d->len;
        d->payload.external = true;
    } else if (d->type == VFM_REC_FINAL && d->final_buf && d->len) {
        void *p = d->final_buf(d->final_buf_ctx, d->len);
        if (p) {
            d->payload.data = p;
            d->payload.cap = (size_t)d->len;
            d->payload.external = true;
        }
    }
    if (d->xs)
        vfm_xxh3_stream_reset(d->xs);
    d->phase = VFM_DEC_PAYLOAD;
    return 0;
}

/* A FINAL_BEGIN announced a state of @size bytes: where its parts go, all
 * of it at once (the final_buf hook's memory, or ours, faulted in as the
 * parts arrive). */
static int parts_begin(struct vfm_stream_dec *d, uint64_t size)
{
    void *p = NULL;

    if (size > d->max_payload)
        return fail(d, -EFBIG);
    d->final_seen = true;
    d->parts = size > 0;
    d->parts_left = size;
    d->phase = VFM_DEC_RECORD;
    vfm_buf_release(&d->final);
    vfm_buf_init(&d->final, (size_t)size);
    if (size == 0)
        return 0;
    if (d->final_buf)
        p = d->final_buf(d->final_buf_ctx, size);
    if (p) {
        d->final.data = p;
        d->final.cap = (size_t)size;
        d->final.external = true;
        return 0;
    }
    d->final.lazy = true;
    if (!vfm_buf_reserve(&d->final, (size_t)size))
        return fail(d, -ENOMEM);
    d->final.len = 0; /* room for the parts, none received */
    return 0;
}

/* The current record's payload is complete. */
static int record_done(struct vfm_stream_dec *d)
{
    if ((d->xs ? vfm_xxh3_stream_digest(d->xs) : vfm_xxh3(d->payload.data, d->payload.len)) !=
        d->sum)
        return fail(d, -EINVAL);
    d->have = 0;
    switch (d->type) {
    case VFM_REC_FINAL_BEGIN:
        return parts_begin(d, get_le64(d->payload.data));
    case VFM_REC_FINAL_PART:
        d->final.len += d->payload.len;
        d->parts_left -= d->payload.len;
        d->parts = d->parts_left > 0;
        d->phase = VFM_DEC_RECORD;
        return 0;
    case VFM_REC_FINAL:
        d->final_seen = true;
        d->final = d->payload; /* kept for load(); payload starts afresh */
        vfm_buf_init(&d->payload, (size_t)d->max_payload);
        d->phase = VFM_DEC_RECORD;
        return 0;
    case VFM_REC_END:
        d->phase = VFM_DEC_DONE;
        return 0;
    default: /* PRECOPY: handed to the device as it arrives */
        d->phase = VFM_DEC_RECORD;
        if (d->on_precopy) {
            int ret = d->on_precopy(d->on_precopy_ctx,
                                    d->payload.data ? d->payload.data : (const uint8_t *)"",
                                    d->payload.len);
            if (ret)
                return fail(d, ret < 0 ? ret : -EINVAL);
        }
        return 0;
    }
}

static size_t hdr_size(const struct vfm_stream_dec *d)
{
    return d->phase == VFM_DEC_HEADER ? VFM_STREAM_HDR_SIZE : VFM_STREAM_REC_SIZE;
}

size_t vfm_stream_dec_space(struct vfm_stream_dec *d, uint8_t **p)
{
    size_t need;

    if (d->err)
        return 0;
    switch (d->phase) {
    case VFM_DEC_HEADER:
    case VFM_DEC_RECORD:
        *p = d->hdr + d->have;
        return hdr_size(d) - d->have;
    case VFM_DEC_PAYLOAD:
        /* the record's whole length at once: one allocation, no copies
         * while it grows (check_record bounded it by max_payload) */
        need = (size_t)(d->len - d->payload.len);
        if (!vfm_buf_reserve(&d->payload, need)) {
            fail(d, -ENOMEM);
            return 0;
        }
        d->payload.len -= need; /* reserved, not yet filled */
        *p = d->payload.data + d->payload.len;
        return need;
    default:
        return 0;
    }
}

int vfm_stream_dec_commit(struct vfm_stream_dec *d, size_t n)
{
    int ret;

    if (d->err)
        return d->err;
    switch (d->phase) {
    case VFM_DEC_HEADER:
    case VFM_DEC_RECORD:
        d->have += n;
        if (d->have < hdr_size(d))
            return 0;
        d->have = 0;
        ret = d->phase == VFM_DEC_HEADER ? check_header(d) : check_record(d);
        if (ret)
            return ret;
        if (d->phase == VFM_DEC_PAYLOAD && d->len == 0)
            return record_done(d);
        return 0;
    case VFM_DEC_PAYLOAD:
        if (d->xs && n)
            vfm_xxh3_stream_update(d->xs, d->payload.data + d->payload.len, n);
        d->payload.len += n;
        return d->payload.len == d->len ? record_done(d) : 0;
    default:
        return fail(d, -EINVAL);
    }
}

int vfm_stream_dec_feed(struct vfm_stream_dec *d, const void *data, size_t len)
{
    const uint8_t *src = data;

    while (len) {
        uint8_t *p;
        size_t n = vfm_stream_dec_space(d, &p);
        int ret;

        if (!n)
            return d->err ? d->err : fail(d, -EINVAL); /* bytes after the END */
        if (n > len)
            n = len;
        memcpy(p, src, n);
        ret = vfm_stream_dec_commit(d, n);
        if (ret)
            return ret;
        src += n;
        len -= n;
    }
    return d->err;
}

int vfm_stream_dec_finish(struct vfm_stream_dec *d, const uint8_t **payload, size_t *len)
{
    if (d->err || d->phase != VFM_DEC_DONE)
        return -EINVAL;
    /* an empty state still gets a valid pointer, for load()'s memcpy */
    *payload = d->final.data ? d->final.data : (const uint8_t *)"";
    *len = d->final.len;
    return 0;
}
