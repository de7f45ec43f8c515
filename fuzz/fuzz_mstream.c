/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: the migration stream's decoder (src/migrate/mstream.h) — the
 * bytes a migration receiver takes from a peer on the network.
 *
 * Input: byte 0: bits 0-1 the device count the receiver expects (1..4),
 * bits 2-7 the size of the pieces the rest is fed in (1..63 bytes, or, for
 * 0, all of it at once); the rest is the stream.
 * Invariants checked (abort() on a breach), beyond the sanitizers': every
 * event names a device in range; DATA is at most the payload limit and is
 * read to its last byte; a device's DEVICE_END total is the sum of its
 * DATA; no event comes after STREAM_END (bytes after it are refused), and
 * STREAM_END comes only when every device ended; a failed decoder stays
 * failed. With 4 devices the receiver also expects guest RAM (two ranges,
 * RAM2): every RAM event lies inside one, in whole pages, read to its last
 * byte; RAM_END comes once, before STREAM_END; INITIAL_END names a device
 * in range. A stream of many (a version 4 header) is taken as the stream
 * its header names: its records name only its devices (device i on stream
 * i mod N), and only the main one (0) has the device list and RAM.
 * Device 1's destination checks its own stream: only its state may come
 * as DATA_SC (unhashed here); seed 1 carries some.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "migrate/mstream.h"

/* Seeds: valid streams of 1, 2 and 3 devices, with DATA records of a few
 * sizes interleaved, one device migrated stopped. */
static const struct vfm_ms_ram_range RAM2[2] = {{0x0, 0x4000}, {0x100000, 0x2000}};

/* One record at out + *@len (a checksum unless DATA_SC), *@seq its number. */
static void put_rec(uint8_t *out, size_t *len, uint32_t *seq, enum vfm_ms_kind kind, uint32_t dev,
                    const void *p, size_t n)
{
    vfm_ms_put_record(out + *len, kind, dev, (*seq)++,
                      kind == VFM_MS_DATA_SC ? 0 : vfm_ms_payload_sum(p, n), n);
    if (n)
        memcpy(out + *len + VFM_MS_REC_SIZE, p, n);
    *len += VFM_MS_REC_SIZE + n;
}
#define PUT(kind, dev, p, n) put_rec(out, &len, &seq, kind, dev, p, n)

/* Seed 3: 4 devices with guest RAM, a page of it, an INITIAL_END, the
 * ends. */
static size_t seed_ram(uint8_t *out, size_t cap)
{
    uint32_t seq = 0, flags[4] = {1, 1, 5, 5};
    uint64_t zero = 0, iova = 0x101000;
    struct vfm_ms_ram_end e = {.digest = 1};
    static uint8_t page[8 + VFM_MS_RAM_PAGE];
    size_t len = 1;

    if (cap < 8192)
        return 0;
    out[0] = 3;
    vfm_ms_put_header(out + len, 4, NULL);
    len += VFM_MS_HDR_SIZE;
    PUT(VFM_MS_DEVICES, 0, flags, sizeof(flags));
    PUT(VFM_MS_RAM_LIST, 0, RAM2, sizeof(RAM2));
    memcpy(page, &iova, 8);
    memset(page + 8, 0x5a, VFM_MS_RAM_PAGE);
    PUT(VFM_MS_RAM, 0, page, sizeof(page));
    PUT(VFM_MS_INITIAL_END, 2, "", 0);
    for (uint32_t dev = 0; dev < 4; dev++)
        PUT(VFM_MS_DEVICE_END, dev, &zero, 8);
    PUT(VFM_MS_RAM_END, 0, &e, sizeof(e));
    PUT(VFM_MS_STREAM_END, 0, "", 0);
    return len;
}

/* Seeds 4 and 5: stream 1 of 2 with 3 devices (device 1's records), and
 * the main stream of 2 with 4 devices and guest RAM (devices 0 and 2). */
static size_t seed_lane(unsigned lane, uint8_t *out, size_t cap)
{
    uint32_t ndev = lane ? 3 : 4, seq = 0, flags[4] = {1, 1, 5, 5};
    uint8_t payload[200];
    struct vfm_ms_ram_end e = {.digest = 7};
    size_t len = 1;

    if (cap < 8192)
        return 0;
    for (size_t k = 0; k < sizeof(payload); k++)
        payload[k] = (uint8_t)(k * 13 + lane);
    out[0] = (uint8_t)((ndev - 1) | (lane ? 0 : 3u << 2));
    vfm_ms_put_lane_header(out + len, ndev, "fz", lane, 2, 0x1122334455667788ull);
    len += VFM_MS_HDR_LANE_SIZE;
    if (!lane) {
        PUT(VFM_MS_DEVICES, 0, flags, sizeof(flags));
        PUT(VFM_MS_RAM_LIST, 0, RAM2, sizeof(RAM2));
    }
    for (uint32_t dev = lane; dev < ndev; dev += 2) {
        uint64_t total = 0;
        for (unsigned r = 0; r < 2; r++) {
            size_t n = 50 + 60 * r + dev;
            PUT(VFM_MS_DATA, dev, payload, n);
            total += n;
        }
        PUT(VFM_MS_INITIAL_END, dev, "", 0);
        PUT(VFM_MS_DEVICE_END, dev, &total, 8);
    }
    if (!lane)
        PUT(VFM_MS_RAM_END, 0, &e, sizeof(e));
    PUT(VFM_MS_STREAM_END, 0, "", 0);
    return len;
}

size_t fuzz_seed(unsigned i, uint8_t *out, size_t cap)
{
    uint32_t ndev = i + 1, seq = 0, flags[3] = {1, 3, 7 | VFM_MS_STOPPED};
    uint8_t payload[300];
    uint64_t total[3] = {0};
    size_t len = 1;

    if (i == 3)
        return seed_ram(out, cap);
    if (i == 4 || i == 5)
        return seed_lane(i == 4 ? 1 : 0, out, cap);
    if (i >= 3 || cap < 4096)
        return 0;
    for (size_t k = 0; k < sizeof(payload); k++)
        payload[k] = (uint8_t)(k * 31 + i);
    out[0] = (uint8_t)((ndev - 1) | (i == 1 ? 5u << 2 : 0));
    vfm_ms_put_header(out + len, ndev, NULL);
    len += VFM_MS_HDR_SIZE;
    PUT(VFM_MS_DEVICES, 0, flags, ndev * sizeof(uint32_t));
    for (unsigned r = 0; r < 2 * ndev; r++) {
        uint32_t dev = r % ndev;
        size_t n = (r * 97 + 13) % sizeof(payload);
        bool sc = i == 1 && dev == 1 && n; /* unhashed: its own stream checks it */
        PUT(sc ? VFM_MS_DATA_SC : VFM_MS_DATA, dev, payload, n);
        total[dev] += n;
    }
    for (uint32_t dev = 0; dev < ndev; dev++)
        PUT(VFM_MS_DEVICE_END, dev, &total[dev], 8);
    PUT(VFM_MS_STREAM_END, 0, "", 0);
    return len;
}
#undef PUT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vfm_ms_dec d;
    uint64_t sum[4] = {0};
    uint32_t ndev, lane = 0, nlanes = 1;
    size_t piece, off = 0;
    bool ended = false, failed = false, ram_ended = false;

    if (size < 1)
        return 0;
    ndev = (data[0] & 3u) + 1;
    piece = data[0] >> 2;
    /* device 1's destination checks its own stream: DATA_SC taken for it */
    if (vfm_ms_dec_init(&d, ndev) || vfm_ms_dec_expect_ram(&d, RAM2, ndev == 4 ? 2 : 0) ||
        vfm_ms_dec_allow_self_checked(&d, 1))
        abort();
    data++;
    size--;
    while (off < size) {
        struct vfm_ms_event ev;
        size_t n = piece && size - off > piece ? piece : size - off, used;
        int ret = vfm_ms_dec_feed(&d, data + off, n, &used, &ev);

        off += used;
        if (ret < 0) {
            if ((ret != -EBADMSG && ret != -ENOMEM) || !d.why[0] ||
                vfm_ms_dec_commit(&d, 0, &ev) != ret)
                abort(); /* an error names its cause, and sticks */
            failed = true;
            break;
        }
        if (ret == 0)
            continue;
        if (ended)
            abort(); /* an event after STREAM_END */
        switch (ev.kind) {
        case VFM_MS_EV_HEADER:
            if (ev.nlanes < 1 || ev.nlanes > VFM_MS_MAX_LANES || ev.lane >= ev.nlanes)
                abort();
            lane = ev.lane;
            nlanes = ev.nlanes;
            break;
        case VFM_MS_EV_DATA: {
            unsigned t = 0;
            if (ev.device >= ndev || ev.len > VFM_MS_MAX_PAYLOAD || ev.device % nlanes != lane ||
                (ev.self_checked && ev.device != 1))
                abort();
            for (size_t k = 0; k < ev.len; k++) /* ASan sees any overrun */
                t += ev.data[k];
            sum[ev.device] += ev.len + (t & 0);
            break;
        }
        case VFM_MS_EV_DEVICE_END:
            if (ev.device >= ndev || ev.total != sum[ev.device] || ev.device % nlanes != lane)
                abort();
            break;
        case VFM_MS_EV_DEVICES:
            if (ev.ndev != ndev || lane)
                abort();
            for (uint32_t k = 0; k < ndev; k++)
                (void)ev.flags[k];
            break;
        case VFM_MS_EV_STREAM_END:
            ended = true;
            if (!vfm_ms_dec_done(&d) || (ndev == 4 && !lane) != ram_ended)
                abort();
            break;
        case VFM_MS_EV_RAM: {
            bool inside = false;
            unsigned t = 0;
            if (ndev != 4 || lane || ram_ended || !ev.len || ev.len % VFM_MS_RAM_PAGE ||
                ev.iova % VFM_MS_RAM_PAGE)
                abort();
            for (unsigned k = 0; k < 2; k++)
                inside |=
                    ev.iova >= RAM2[k].iova && ev.iova + ev.len <= RAM2[k].iova + RAM2[k].size;
            if (!inside)
                abort();
            for (size_t k = 0; k < ev.len; k++)
                t += ev.data[k];
            sum[0] += t & 0;
            break;
        }
        case VFM_MS_EV_RAM_END:
            if (ndev != 4 || ram_ended)
                abort();
            ram_ended = true;
            break;
        case VFM_MS_EV_INITIAL_END:
            if (ev.device >= ndev || ev.device % nlanes != lane)
                abort();
            break;
        default:
            break;
        }
    }
    if (!failed && vfm_ms_dec_done(&d) != ended)
        abort();
    vfm_ms_dec_release(&d);
    return 0;
}
