/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: the device state stream decoder (src/device/stream.h), the
 * code that reads bytes a migration source (maybe hostile) sent.
 *
 * Input: byte 0 chooses the piece size the stream is fed in (1..256) and
 * whether pre-copy records are allowed; the rest is the stream.
 * Invariants checked: no crash, no leak, no read out of bounds (sanitizers),
 * and an accepted stream's state is never longer than the bound.
 */
#include <stdint.h>
#include <stdlib.h>

#include "device/stream.h"

#define FUZZ_MAX_STATE (1u << 16)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vfm_stream_dec d;
    const uint8_t *state;
    size_t piece, len;
    int ret = 0;

    if (size < 1)
        return 0;
    piece = (size_t)(data[0] & 0x7f) * 2 + 1;
    vfm_stream_dec_init(&d, 0x5a5a5a5a, FUZZ_MAX_STATE, data[0] & 0x80);
    data++;
    size--;
    for (size_t off = 0; off < size && !ret; off += piece)
        ret = vfm_stream_dec_feed(&d, data + off, size - off < piece ? size - off : piece);
    if (!ret && vfm_stream_dec_finish(&d, &state, &len) == 0 && len > FUZZ_MAX_STATE)
        abort();
    vfm_stream_dec_release(&d);
    return 0;
}
