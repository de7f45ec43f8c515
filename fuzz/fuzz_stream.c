/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: the device state stream decoder (src/device/stream.h), the
 * code that reads bytes a migration source (maybe hostile) sent.
 *
 * Input: byte 0 chooses the piece size the stream is fed in (1..253),
 * whether pre-copy records are allowed (0x80) and whether the state is
 * received in the caller's memory (0x40); the rest is the stream.
 * Invariants checked: no crash, no leak, no read out of bounds (sanitizers),
 * and an accepted stream's state is never longer than the bound.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <string.h>

#include "device/stream.h"
#include "fuzz.h"

#define FUZZ_MAX_STATE (1u << 16)

/* Seeds: valid streams with 0, 1, 2 pre-copy records, after the control
 * byte (seeds 0-2: version 1, the state in one FINAL record; seeds 3-5:
 * version 2, the state in a FINAL_BEGIN and three FINAL_PARTs, the last
 * of them with the rest). */
size_t fuzz_seed(unsigned i, uint8_t *out, size_t cap)
{
    uint8_t payload[512], size[8];
    bool parts = i >= 3;
    unsigned pre = i % 3;
    size_t len = 1, state_len = (size_t)pre * 97 + (parts ? 40 : 0);
    uint32_t seq = 0;

    if (i >= 6 || cap < 4096)
        return 0;
    for (size_t k = 0; k < sizeof(payload); k++)
        payload[k] = (uint8_t)(k * 13);
    out[0] = pre ? 0x80 | 7 : 3;
    vfm_stream_put_header(out + len, 0x5a5a5a5a, parts ? VFM_STREAM_VERSION2 : VFM_STREAM_VERSION);
    len += VFM_STREAM_HDR_SIZE;
    for (unsigned k = 0; k < pre; k++) {
        vfm_stream_put_record(out + len, VFM_REC_PRECOPY, seq++, payload, 100);
        memcpy(out + len + VFM_STREAM_REC_SIZE, payload, 100);
        len += VFM_STREAM_REC_SIZE + 100;
    }
    if (parts) {
        size_t done = 0;
        vfm_stream_put_u64(size, state_len);
        vfm_stream_put_record(out + len, VFM_REC_FINAL_BEGIN, seq++, size, sizeof(size));
        memcpy(out + len + VFM_STREAM_REC_SIZE, size, sizeof(size));
        len += VFM_STREAM_REC_SIZE + sizeof(size);
        for (unsigned k = 0; k < 3; k++) {
            size_t n = k < 2 ? 13 : state_len - done;
            vfm_stream_put_record(out + len, VFM_REC_FINAL_PART, seq++, payload + done, n);
            memcpy(out + len + VFM_STREAM_REC_SIZE, payload + done, n);
            len += VFM_STREAM_REC_SIZE + n;
            done += n;
        }
    } else {
        vfm_stream_put_record(out + len, VFM_REC_FINAL, seq++, payload, state_len);
        memcpy(out + len + VFM_STREAM_REC_SIZE, payload, state_len);
        len += VFM_STREAM_REC_SIZE + state_len;
    }
    vfm_stream_put_record(out + len, VFM_REC_END, seq, NULL, 0);
    return len + VFM_STREAM_REC_SIZE;
}

/* The device's side of a PRECOPY record: touches every byte (ASan sees
 * any overrun) and refuses some, as a device may. */
static int on_precopy(void *ctx, const uint8_t *payload, size_t len)
{
    unsigned sum = 0;
    (void)ctx;
    if (len > FUZZ_MAX_STATE)
        abort();
    for (size_t i = 0; i < len; i++)
        sum += payload[i];
    return len && payload[0] == 0xEE ? -EIO : (int)(sum & 0);
}

/* Load in place: a buffer of the bound's size, for any state that fits. */
static uint8_t in_place_mem[FUZZ_MAX_STATE];
static void *in_place(void *ctx, uint64_t len)
{
    (void)ctx;
    return len <= sizeof(in_place_mem) ? in_place_mem : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vfm_stream_dec d;
    const uint8_t *state;
    size_t piece, len;
    int ret = 0;

    if (size < 1)
        return 0;
    piece = (size_t)(data[0] & 0x3f) * 4 + 1;
    vfm_stream_dec_init(&d, 0x5a5a5a5a, FUZZ_MAX_STATE, data[0] & 0x80);
    d.on_precopy = on_precopy;
    if (data[0] & 0x40) {
        /* the state received in memory of the caller's (load in place) */
        d.final_buf = in_place;
        d.final_buf_ctx = NULL;
    }
    data++;
    size--;
    for (size_t off = 0; off < size && !ret; off += piece)
        ret = vfm_stream_dec_feed(&d, data + off, size - off < piece ? size - off : piece);
    if (!ret && vfm_stream_dec_finish(&d, &state, &len) == 0 && len > FUZZ_MAX_STATE)
        abort();
    vfm_stream_dec_release(&d);
    return 0;
}
