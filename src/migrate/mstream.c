/* SPDX-License-Identifier: MIT */
/* The migration stream's codec (src/migrate/mstream.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/hash.h"
#include "../common/internal.h"
#include "mstream.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "the stream is written in host order, which must be little-endian");

#define MS_MAGIC 0x4d4d4656u  /* "VFMM" */
#define REC_MAGIC 0x524d4656u /* "VFMR" */
#define ACK_MAGIC 0x414d4656u /* "VFMA" */
#define MS_VERSION 3u         /* 2: the commit after the stream; 3: the id */
#define MS_VERSION_LANES 4u   /* 4: one of many streams */

struct ms_hdr {
    uint32_t magic;
    uint16_t version;
    uint16_t size;
    uint32_t ndev;
    uint32_t reserved;
    char id[VFM_MS_ID_MAX]; /* the migration's id, NUL-padded ("": none) */
    uint64_t sum;           /* XXH3-64 of the bytes before it */
} __attribute__((packed));

/* Version 4: one of many streams; the same first 16 bytes and id. */
struct ms_hdr4 {
    uint32_t magic;
    uint16_t version;
    uint16_t size;
    uint32_t ndev;
    uint16_t lane;   /* this stream's index: 0 the main one */
    uint16_t nlanes; /* 2..VFM_MS_MAX_LANES */
    char id[VFM_MS_ID_MAX];
    uint64_t token; /* the migration's, the same on every stream */
    uint64_t sum;   /* XXH3-64 of the bytes before it */
} __attribute__((packed));

struct ms_rec {
    uint32_t magic;
    uint16_t kind;
    uint16_t reserved;
    uint32_t device;
    uint32_t seq;
    uint64_t len;
    uint64_t psum; /* of the payload */
    uint64_t hsum; /* of the bytes before it */
} __attribute__((packed));

struct ms_ack {
    uint32_t magic;
    uint32_t kind;  /* enum vfm_ms_ans */
    int32_t status; /* 0, or a negative errno */
    uint32_t arg;   /* INITIAL_LOADED: the device; else 0 */
    uint64_t sum;
} __attribute__((packed));

_Static_assert(sizeof(struct ms_hdr) == VFM_MS_HDR_SIZE, "stream header");
_Static_assert(sizeof(struct ms_hdr4) == VFM_MS_HDR_LANE_SIZE, "stream header, many streams");
_Static_assert(offsetof(struct ms_hdr4, id) == offsetof(struct ms_hdr, id), "the id's place");
_Static_assert(sizeof(struct ms_rec) == VFM_MS_REC_SIZE, "record header");
_Static_assert(sizeof(struct ms_ack) == VFM_MS_ACK_SIZE, "answer");

enum { P_HDR, P_REC, P_PAYLOAD, P_DONE, P_ERR };

bool vfm_ms_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;

    if (!n || n > VFM_MS_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (id[i] < 0x21 || id[i] > 0x7e)
            return false;
    return true;
}

void vfm_ms_put_header(uint8_t out[VFM_MS_HDR_SIZE], uint32_t ndev, const char *id)
{
    struct ms_hdr h = {.magic = MS_MAGIC, .version = MS_VERSION, .size = sizeof(h), .ndev = ndev};

    if (id) /* NUL-padded; a full 64 has none */
        memcpy(h.id, id, strnlen(id, sizeof(h.id)));
    h.sum = vfm_xxh3(&h, offsetof(struct ms_hdr, sum));
    memcpy(out, &h, sizeof(h));
}

void vfm_ms_put_lane_header(uint8_t out[VFM_MS_HDR_LANE_SIZE], uint32_t ndev, const char *id,
                            uint32_t lane, uint32_t nlanes, uint64_t token)
{
    struct ms_hdr4 h = {.magic = MS_MAGIC,
                        .version = MS_VERSION_LANES,
                        .size = sizeof(h),
                        .ndev = ndev,
                        .lane = (uint16_t)lane,
                        .nlanes = (uint16_t)nlanes,
                        .token = token};

    if (id)
        memcpy(h.id, id, strnlen(id, sizeof(h.id)));
    h.sum = vfm_xxh3(&h, offsetof(struct ms_hdr4, sum));
    memcpy(out, &h, sizeof(h));
}

uint64_t vfm_ms_payload_sum(const void *payload, size_t len)
{
    return vfm_xxh3(payload, len);
}

void vfm_ms_put_record(uint8_t out[VFM_MS_REC_SIZE], enum vfm_ms_kind kind, uint32_t device,
                       uint32_t seq, uint64_t psum, uint64_t len)
{
    struct ms_rec r = {.magic = REC_MAGIC,
                       .kind = (uint16_t)kind,
                       .device = device,
                       .seq = seq,
                       .len = len,
                       .psum = psum};

    r.hsum = vfm_xxh3(&r, offsetof(struct ms_rec, hsum));
    memcpy(out, &r, sizeof(r));
}

void vfm_ms_put_ack(uint8_t out[VFM_MS_ACK_SIZE], enum vfm_ms_ans kind, int32_t status)
{
    struct ms_ack a = {.magic = ACK_MAGIC, .kind = (uint32_t)kind, .status = status};

    a.sum = vfm_xxh3(&a, offsetof(struct ms_ack, sum));
    memcpy(out, &a, sizeof(a));
}

int vfm_ms_get_ack(const uint8_t in[VFM_MS_ACK_SIZE], enum vfm_ms_ans kind, int32_t *status)
{
    struct ms_ack a;

    memcpy(&a, in, sizeof(a));
    if (a.magic != ACK_MAGIC || a.sum != vfm_xxh3(&a, offsetof(struct ms_ack, sum)) ||
        a.kind != (uint32_t)kind || a.arg || a.status > 0)
        return -EBADMSG;
    *status = a.status;
    return 0;
}

void vfm_ms_put_initial_loaded(uint8_t out[VFM_MS_ACK_SIZE], uint32_t dev)
{
    struct ms_ack a = {.magic = ACK_MAGIC, .kind = VFM_MS_ANS_INITIAL_LOADED, .arg = dev};

    a.sum = vfm_xxh3(&a, offsetof(struct ms_ack, sum));
    memcpy(out, &a, sizeof(a));
}

int vfm_ms_get_initial_loaded(const uint8_t in[VFM_MS_ACK_SIZE], uint32_t ndev, uint32_t *dev)
{
    struct ms_ack a;

    memcpy(&a, in, sizeof(a));
    if (a.magic != ACK_MAGIC || a.sum != vfm_xxh3(&a, offsetof(struct ms_ack, sum)) ||
        a.kind != VFM_MS_ANS_INITIAL_LOADED || a.status || a.arg >= ndev)
        return -EBADMSG;
    *dev = a.arg;
    return 0;
}

int vfm_ms_dec_init(struct vfm_ms_dec *d, uint32_t ndev)
{
    memset(d, 0, sizeof(*d));
    if (!ndev || ndev > VFM_MS_MAX_DEVICES)
        return -EINVAL;
    d->ndev = ndev;
    d->phase = P_HDR;
    d->hdr_size = VFM_MS_HDR_SIZE;
    d->nlanes = 1;
    return 0;
}

int vfm_ms_dec_expect_lane(struct vfm_ms_dec *d, uint32_t nlanes, uint64_t token)
{
    if (nlanes < 2 || nlanes > VFM_MS_MAX_LANES)
        return -EINVAL;
    d->is_lane = true;
    d->nlanes = nlanes;
    d->token = token;
    return 0;
}

/* Whether device @dev's records belong on this stream. */
static bool own(const struct vfm_ms_dec *d, uint32_t dev)
{
    return d->nlanes <= 1 || dev % d->nlanes == d->lane;
}

void vfm_ms_dec_release(struct vfm_ms_dec *d)
{
    free(d->payload);
    d->payload = NULL;
}

static int bad(struct vfm_ms_dec *d, const char *fmt, ...) VFM_PRINTF(2, 3);

/* The stream is invalid: say why, once, and stay failed. */
static int bad(struct vfm_ms_dec *d, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(d->why, sizeof(d->why), fmt, ap);
    va_end(ap);
    d->phase = P_ERR;
    d->err = -EBADMSG;
    return d->err;
}

size_t vfm_ms_dec_want(struct vfm_ms_dec *d, uint8_t **where)
{
    switch (d->phase) {
    case P_HDR:
        *where = d->hdr + d->have;
        return d->hdr_size - d->have;
    case P_REC:
        *where = d->hdr + d->have;
        return VFM_MS_REC_SIZE - d->have;
    case P_PAYLOAD:
        *where = d->payload + d->have;
        return (size_t)d->len - d->have;
    default:
        *where = NULL;
        return 0;
    }
}

int vfm_ms_dec_expect_id(struct vfm_ms_dec *d, const char *id)
{
    if (id && !vfm_ms_id_valid(id))
        return -EINVAL;
    memset(d->expect_id, 0, sizeof(d->expect_id));
    if (id)
        memcpy(d->expect_id, id, strlen(id));
    return 0;
}

int vfm_ms_ram_valid(const struct vfm_ms_ram_range *r, uint32_t n)
{
    if (n > VFM_MS_MAX_RAM || (n && !r))
        return -EINVAL;
    for (uint32_t i = 0; i < n; i++) {
        if (!r[i].size || (r[i].iova | r[i].size) % VFM_MS_RAM_PAGE ||
            r[i].iova + r[i].size < r[i].iova)
            return -EINVAL;
        for (uint32_t j = 0; j < i; j++)
            if (r[i].iova < r[j].iova + r[j].size && r[j].iova < r[i].iova + r[i].size)
                return -EINVAL;
    }
    return 0;
}

int vfm_ms_dec_expect_ram(struct vfm_ms_dec *d, const struct vfm_ms_ram_range *r, uint32_t n)
{
    if (vfm_ms_ram_valid(r, n))
        return -EINVAL;
    d->nram = n;
    if (n)
        memcpy(d->ram, r, n * sizeof(*r));
    return 0;
}

/* Whether [iova, iova + len) lies inside one of the expected ranges. */
static bool ram_inside(const struct vfm_ms_dec *d, uint64_t iova, uint64_t len)
{
    for (uint32_t i = 0; i < d->nram; i++)
        if (iova >= d->ram[i].iova && iova - d->ram[i].iova <= d->ram[i].size &&
            len <= d->ram[i].size - (iova - d->ram[i].iova))
            return true;
    return false;
}

/* The header's id field: printable ASCII, then only NULs. Return: its
 * length, or -1 when it is not that. */
static int id_len(const char id[VFM_MS_ID_MAX])
{
    size_t n = 0;

    while (n < VFM_MS_ID_MAX && id[n] >= 0x21 && id[n] <= 0x7e)
        n++;
    for (size_t i = n; i < VFM_MS_ID_MAX; i++)
        if (id[i])
            return -1;
    return (int)n;
}

/* The id field: another migration's, or none where one is expected, is
 * a refusal (-EACCES), not damage. Return: 0 or the failure. */
static int check_id(struct vfm_ms_dec *d, const char id[VFM_MS_ID_MAX], int n)
{
    if (!d->expect_id[0] || (n && !memcmp(id, d->expect_id, VFM_MS_ID_MAX)))
        return 0;
    if (n == 0)
        bad(d, "the migration stream carries no migration id; this side expects '%.64s'",
            d->expect_id);
    else
        bad(d, "the migration stream is of migration '%.*s', not the expected '%.64s'", n, id,
            d->expect_id);
    d->err = -EACCES;
    return d->err;
}

/* A version 4 header (one of many streams) is whole. */
static int take_lane_header(struct vfm_ms_dec *d, struct vfm_ms_event *ev)
{
    struct ms_hdr4 h;
    int n, ret;

    memcpy(&h, d->hdr, sizeof(h));
    if (h.sum != vfm_xxh3(&h, offsetof(struct ms_hdr4, sum)) || (n = id_len(h.id)) < 0 ||
        h.nlanes < 2 || h.nlanes > VFM_MS_MAX_LANES || h.lane >= h.nlanes)
        return bad(d, "the migration stream's header is invalid");
    if ((ret = check_id(d, h.id, n)))
        return ret;
    if (!d->is_lane && h.lane != 0) {
        /* one of the others, come first: the decoder becomes its (the
         * caller checks its count and token against the main one's) */
        d->is_lane = true;
    } else if (d->is_lane && (h.lane == 0 || h.nlanes != d->nlanes || h.token != d->token))
        return bad(d,
                   h.token != d->token
                       ? "a migration stream is of another migration (its token differs)"
                   : h.lane == 0 ? "a second main stream arrived where one of the others was due"
                                 : "a migration stream says %u streams; the main one said %u",
                   h.nlanes, d->nlanes);
    if (h.ndev != d->ndev)
        return bad(d, "the migration stream carries %u devices; this side has %u", h.ndev, d->ndev);
    d->header_valid = true;
    d->nlanes = h.nlanes;
    d->lane = h.lane;
    d->token = h.token;
    d->phase = P_REC;
    d->have = 0;
    ev->kind = VFM_MS_EV_HEADER;
    ev->ndev = h.ndev;
    ev->nlanes = h.nlanes;
    ev->lane = h.lane;
    ev->token = h.token;
    return 1;
}

/* The stream header is whole (or its first VFM_MS_HDR_SIZE bytes, which
 * say whether more follow). Return: 1 and the event, 0 (more needed), or
 * the failure. */
static int take_header(struct vfm_ms_dec *d, struct vfm_ms_event *ev)
{
    struct ms_hdr h;
    int n, ret;

    memcpy(&h, d->hdr, sizeof(h));
    if (h.magic == MS_MAGIC && h.version == MS_VERSION_LANES && h.size == VFM_MS_HDR_LANE_SIZE) {
        if (d->hdr_size == VFM_MS_HDR_SIZE) {
            d->hdr_size = VFM_MS_HDR_LANE_SIZE;
            return 0; /* its token and checksum follow */
        }
        return take_lane_header(d, ev);
    }
    if (h.magic != MS_MAGIC || h.version != MS_VERSION || h.size != sizeof(h) || h.reserved ||
        h.sum != vfm_xxh3(&h, offsetof(struct ms_hdr, sum)) || (n = id_len(h.id)) < 0)
        return bad(d, "the migration stream's header is invalid");
    if ((ret = check_id(d, h.id, n)))
        return ret;
    if (d->is_lane)
        return bad(d,
                   "a migration stream has a single stream's header where one of %u streams "
                   "was due",
                   d->nlanes);
    d->header_valid = true;
    if (h.ndev != d->ndev)
        return bad(d, "the migration stream carries %u devices; this side has %u", h.ndev, d->ndev);
    d->phase = P_REC;
    d->have = 0;
    ev->kind = VFM_MS_EV_HEADER;
    ev->ndev = h.ndev;
    ev->nlanes = 1;
    return 1;
}

/* A record header is whole: check everything that does not need the
 * payload. Return: 1 (a STREAM_END, complete), 0 (a payload follows), or
 * -EBADMSG. */
static int take_record(struct vfm_ms_dec *d, struct vfm_ms_event *ev)
{
    struct ms_rec r;
    uint32_t seq = d->seq;

    memcpy(&r, d->hdr, sizeof(r));
    if (r.magic != REC_MAGIC || r.reserved || r.hsum != vfm_xxh3(&r, offsetof(struct ms_rec, hsum)))
        return bad(d, "the migration stream is corrupted (record %u)", seq);
    if (r.seq != seq)
        return bad(d, "the migration stream is out of order (record %u where %u was due)", r.seq,
                   seq);
    if (d->is_lane && (r.kind == VFM_MS_DEVICES || r.kind == VFM_MS_RAM_LIST ||
                       r.kind == VFM_MS_RAM || r.kind == VFM_MS_RAM_END))
        return bad(d, "migration stream %u has a record only the main stream may carry (record %u)",
                   d->lane, seq);
    if ((!d->is_lane && (seq == 0) != (r.kind == VFM_MS_DEVICES)) ||
        (r.kind == VFM_MS_DEVICES && (r.device || r.len != d->ndev * sizeof(uint32_t))))
        return bad(d, "the migration stream's device list is invalid");
    if ((r.kind == VFM_MS_DATA || r.kind == VFM_MS_DATA_SC || r.kind == VFM_MS_DEVICE_END ||
         r.kind == VFM_MS_INITIAL_END) &&
        r.device < d->ndev && !own(d, r.device))
        return bad(d,
                   "migration stream %u carries device %u, which belongs on stream %u "
                   "(record %u)",
                   d->lane, r.device, r.device % d->nlanes, seq);
    /* guest RAM: its list right after the devices', on both sides or neither */
    if (seq == 1 && d->nram && !d->is_lane && r.kind != VFM_MS_RAM_LIST)
        return bad(d, "the migration stream carries no guest RAM; this side expects %u range%s",
                   d->nram, d->nram == 1 ? "" : "s");
    if (r.kind == VFM_MS_RAM_LIST && !d->nram)
        return bad(d, "the migration stream carries guest RAM; this side was given none");
    if (r.kind == VFM_MS_RAM_LIST && seq != 1)
        return bad(d, "the migration stream has a second RAM list (record %u)", seq);
    switch (r.kind) {
    case VFM_MS_RAM_LIST:
        if (r.device || r.len != d->nram * sizeof(struct vfm_ms_ram_range))
            return bad(d,
                       "the migration stream's RAM list has %llu bytes; this side expects %u "
                       "range%s",
                       (unsigned long long)r.len, d->nram, d->nram == 1 ? "" : "s");
        break;
    case VFM_MS_RAM:
        if (!d->nram || d->ram_ended || r.device || r.len < 8 + VFM_MS_RAM_PAGE ||
            r.len > 8 + (uint64_t)VFM_MS_RAM_MAX_PAGES * VFM_MS_RAM_PAGE ||
            (r.len - 8) % VFM_MS_RAM_PAGE)
            return bad(d, "the migration stream has an invalid RAM record %u", seq);
        break;
    case VFM_MS_RAM_END:
        if (!d->nram || d->ram_ended || r.device || r.len != sizeof(struct vfm_ms_ram_end))
            return bad(d, "the migration stream has an invalid RAM end (record %u)", seq);
        break;
    case VFM_MS_DEVICES:
        break;
    case VFM_MS_INITIAL_END:
        if (r.device >= d->ndev || d->ended[r.device] || r.len)
            return bad(d, "the migration stream has an invalid record %u", seq);
        break;
    case VFM_MS_DATA_SC:
        if (r.device < d->ndev && !d->sc_ok[r.device])
            return bad(d,
                       "device %u's state comes without the migration stream's checksum (record "
                       "%u: the sender relies on the device's own stream), and this side's "
                       "destination does not check it",
                       r.device, seq);
        if (r.psum || !r.len)
            return bad(d, "the migration stream has an invalid record %u", seq);
        /* fall through */
    case VFM_MS_DATA:
    case VFM_MS_DEVICE_END:
        if (r.device >= d->ndev || d->ended[r.device] || r.len > VFM_MS_MAX_PAYLOAD ||
            (r.kind == VFM_MS_DEVICE_END && r.len != sizeof(uint64_t)))
            return bad(d, "the migration stream has an invalid record %u", seq);
        break;
    case VFM_MS_STREAM_END:
        if (r.len || r.device)
            return bad(d, "the migration stream has an invalid record %u", seq);
        for (uint32_t i = 0; i < d->ndev; i++)
            if (own(d, i) && !d->ended[i])
                return bad(d, "the migration stream ended without device %u's state", i);
        if (d->nram && !d->is_lane && !d->ram_ended)
            return bad(d, "the migration stream ended without the end of its guest RAM");
        d->seq++;
        d->phase = P_DONE;
        ev->kind = VFM_MS_EV_STREAM_END;
        return 1;
    default:
        return bad(d, "the migration stream has an invalid record %u", seq);
    }
    if (r.len > d->payload_cap) {
        /* grown as payloads come: a stream of small records never holds
         * the largest buffer */
        uint8_t *p = realloc(d->payload, (size_t)r.len);
        if (!p) {
            snprintf(d->why, sizeof(d->why), "no memory for record %u's payload", seq);
            d->phase = P_ERR;
            return d->err = -ENOMEM;
        }
        d->payload = p;
        d->payload_cap = (size_t)r.len;
    }
    d->seq++;
    d->kind = r.kind;
    d->device = r.device;
    d->len = r.len;
    d->psum = r.psum;
    d->phase = P_PAYLOAD;
    d->have = 0;
    return 0;
}

/* A record's payload is whole. */
static int take_payload(struct vfm_ms_dec *d, struct vfm_ms_event *ev)
{
    uint32_t seq = d->seq - 1;

    if (d->kind != VFM_MS_DATA_SC && vfm_xxh3(d->payload, (size_t)d->len) != d->psum)
        return bad(d, "the migration stream is corrupted (payload of record %u, device %u)", seq,
                   d->device);
    d->phase = P_REC;
    d->have = 0;
    ev->device = d->device;
    switch (d->kind) {
    case VFM_MS_DEVICES:
        memcpy(d->flags, d->payload, d->ndev * sizeof(uint32_t));
        ev->kind = VFM_MS_EV_DEVICES;
        ev->flags = d->flags;
        ev->ndev = d->ndev;
        return 1;
    case VFM_MS_RAM_LIST:
        if (memcmp(d->payload, d->ram, (size_t)d->len)) {
            struct vfm_ms_ram_range r0;
            memcpy(&r0, d->payload, sizeof(r0));
            return bad(d,
                       "the migration stream's guest RAM is not this side's (its first range: "
                       "0x%llx, %llu bytes; here: 0x%llx, %llu bytes)",
                       (unsigned long long)r0.iova, (unsigned long long)r0.size,
                       (unsigned long long)d->ram[0].iova, (unsigned long long)d->ram[0].size);
        }
        return 0; /* checked here; nothing for the caller */
    case VFM_MS_RAM: {
        uint64_t iova;
        memcpy(&iova, d->payload, 8);
        if (iova % VFM_MS_RAM_PAGE || !ram_inside(d, iova, d->len - 8))
            return bad(d,
                       "the migration stream's RAM record %u (0x%llx, %llu bytes) is outside "
                       "the guest RAM",
                       seq, (unsigned long long)iova, (unsigned long long)(d->len - 8));
        ev->kind = VFM_MS_EV_RAM;
        ev->iova = iova;
        ev->data = d->payload + 8;
        ev->len = (size_t)d->len - 8;
        return 1;
    }
    case VFM_MS_RAM_END: {
        struct vfm_ms_ram_end e;
        memcpy(&e, d->payload, sizeof(e));
        if (e.flags & ~(uint64_t)VFM_MS_RAM_UNTRACKED)
            return bad(d, "the migration stream's RAM end has unknown flags 0x%llx",
                       (unsigned long long)e.flags);
        d->ram_ended = true;
        ev->kind = VFM_MS_EV_RAM_END;
        ev->total = e.digest;
        ev->ram_flags = e.flags;
        return 1;
    }
    case VFM_MS_INITIAL_END:
        ev->kind = VFM_MS_EV_INITIAL_END;
        return 1;
    case VFM_MS_DATA:
    case VFM_MS_DATA_SC:
        d->got[d->device] += d->len;
        ev->kind = VFM_MS_EV_DATA;
        ev->self_checked = d->kind == VFM_MS_DATA_SC;
        ev->data = d->payload;
        ev->len = (size_t)d->len;
        return 1;
    default: /* VFM_MS_DEVICE_END */
        memcpy(&ev->total, d->payload, sizeof(ev->total));
        if (ev->total != d->got[d->device])
            return bad(d, "device %u: %llu state bytes announced, %llu received", d->device,
                       (unsigned long long)ev->total, (unsigned long long)d->got[d->device]);
        d->ended[d->device] = 1;
        ev->kind = VFM_MS_EV_DEVICE_END;
        return 1;
    }
}

int vfm_ms_dec_commit(struct vfm_ms_dec *d, size_t n, struct vfm_ms_event *ev)
{
    uint8_t *where;
    size_t want = vfm_ms_dec_want(d, &where);

    memset(ev, 0, sizeof(*ev));
    if (d->phase == P_ERR)
        return d->err;
    if (d->phase == P_DONE)
        return n ? bad(d, "the migration stream goes on after its end") : 0;
    if (n > want)
        return bad(d, "the migration stream decoder was given more than it asked for");
    d->have += n;
    if (n < want)
        return 0;
    switch (d->phase) {
    case P_HDR:
        return take_header(d, ev);
    case P_REC: {
        int ret = take_record(d, ev);
        if (ret || d->len)
            return ret;
        return take_payload(d, ev); /* an empty payload: the record is whole */
    }
    default:
        return take_payload(d, ev);
    }
}

int vfm_ms_dec_allow_self_checked(struct vfm_ms_dec *d, uint32_t dev)
{
    if (dev >= VFM_MS_MAX_DEVICES)
        return -EINVAL;
    d->sc_ok[dev] = 1;
    return 0;
}

bool vfm_ms_dec_passable(const struct vfm_ms_dec *d, uint32_t *dev, size_t *left)
{
    if (d->phase != P_PAYLOAD || d->kind != VFM_MS_DATA_SC)
        return false;
    *dev = d->device;
    *left = (size_t)d->len - d->have;
    return true;
}

int vfm_ms_dec_passed(struct vfm_ms_dec *d, size_t n, struct vfm_ms_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    if (d->phase == P_ERR)
        return d->err;
    if (d->phase != P_PAYLOAD || d->kind != VFM_MS_DATA_SC || n > d->len - d->have)
        return bad(d, "the migration stream decoder was told of bytes it did not ask for");
    d->have += n;
    if (d->have < d->len)
        return 0;
    d->got[d->device] += d->len;
    d->phase = P_REC;
    d->have = 0;
    ev->kind = VFM_MS_EV_DATA;
    ev->device = d->device;
    ev->len = (size_t)d->len;
    ev->self_checked = true;
    return 1;
}

int vfm_ms_dec_feed(struct vfm_ms_dec *d, const uint8_t *p, size_t len, size_t *used,
                    struct vfm_ms_event *ev)
{
    *used = 0;
    memset(ev, 0, sizeof(*ev));
    while (*used < len) {
        uint8_t *where;
        size_t want = vfm_ms_dec_want(d, &where), n = len - *used;
        int ret;

        if (!want) /* ended or failed: the rest is refused */
            return vfm_ms_dec_commit(d, n, ev);
        if (n > want)
            n = want;
        memcpy(where, p + *used, n);
        *used += n;
        ret = vfm_ms_dec_commit(d, n, ev);
        if (ret)
            return ret;
    }
    return 0;
}

const char *vfm_ms_dec_where(const struct vfm_ms_dec *d, char *buf, size_t len)
{
    switch (d->phase) {
    case P_HDR:
        snprintf(buf, len, d->have ? "inside its header" : "before its header");
        break;
    case P_REC:
        if (d->have)
            snprintf(buf, len, "inside record %u", d->seq);
        else
            snprintf(buf, len, "after %u records", d->seq);
        break;
    case P_PAYLOAD:
        snprintf(buf, len, "inside record %u (device %u)", d->seq - 1, d->device);
        break;
    default:
        snprintf(buf, len, "after %u records", d->seq);
        break;
    }
    return buf;
}

bool vfm_ms_dec_done(const struct vfm_ms_dec *d)
{
    return d->phase == P_DONE;
}
