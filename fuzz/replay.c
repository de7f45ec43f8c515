/* SPDX-License-Identifier: MIT */
/*
 * Runs a fuzz target without libFuzzer: on the files given, and on a
 * deterministic set of mutations (bit flips, truncations, splices, random
 * bytes) of valid seed streams, so every `make check` (plain and under
 * ASan+UBSan) exercises the decoder on malformed input. libFuzzer itself
 * runs with `make fuzz`.
 *
 * usage: replay [--mutations N] [FILE...]
 *        replay --write-seeds DIR   (valid streams, a corpus for libFuzzer)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* A valid stream with @n pre-copy records, after the control byte. */
static size_t seed(uint8_t *out, int n, size_t state_len)
{
    uint8_t payload[512];
    size_t len = 1;
    uint32_t seq = 0;

    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 13);
    out[0] = n ? 0x80 | 7 : 3;
    vfm_stream_put_header(out + len, 0x5a5a5a5a);
    len += VFM_STREAM_HDR_SIZE;
    for (int i = 0; i < n; i++) {
        vfm_stream_put_record(out + len, VFM_REC_PRECOPY, seq++, payload, 100);
        memcpy(out + len + VFM_STREAM_REC_SIZE, payload, 100);
        len += VFM_STREAM_REC_SIZE + 100;
    }
    vfm_stream_put_record(out + len, VFM_REC_FINAL, seq++, payload, state_len);
    memcpy(out + len + VFM_STREAM_REC_SIZE, payload, state_len);
    len += VFM_STREAM_REC_SIZE + state_len;
    vfm_stream_put_record(out + len, VFM_REC_END, seq, NULL, 0);
    return len + VFM_STREAM_REC_SIZE;
}

int main(int argc, char **argv)
{
    static uint8_t base[4096], buf[8192];
    unsigned long mutations = 0, runs = 0;
    int i = 1;

    if (argc == 3 && !strcmp(argv[1], "--write-seeds")) {
        for (int k = 0; k < 3; k++) {
            char path[4096];
            size_t len = seed(base, k, (size_t)k * 97);
            FILE *f;
            snprintf(path, sizeof(path), "%s/seed-%d", argv[2], k);
            f = fopen(path, "wb");
            if (!f || fwrite(base, 1, len, f) != len) {
                perror(path);
                return 1;
            }
            fclose(f);
        }
        return 0;
    }
    if (argc > 2 && !strcmp(argv[1], "--mutations")) {
        mutations = strtoul(argv[2], NULL, 10);
        i = 3;
    }
    for (; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        size_t n;
        if (!f) {
            perror(argv[i]);
            return 1;
        }
        n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
        runs++;
    }
    for (unsigned long m = 0; m < mutations; m++) {
        size_t len = seed(base, (int)(m % 3), (size_t)(m % 5) * 97), n = len;

        memcpy(buf, base, len);
        switch (next() % 5) {
        case 0: /* flip up to 4 bits */
            for (int k = 0; k < 1 + (int)(next() % 4); k++)
                buf[next() % n] ^= (uint8_t)(1u << (next() % 8));
            break;
        case 1: /* truncate */
            n = next() % len;
            break;
        case 2: /* splice: repeat a slice */
        {
            size_t a = next() % len, b = next() % len, l = next() % 64;
            if (a + l > len)
                l = len - a;
            if (b + l + len < sizeof(buf)) {
                memmove(buf + b + l, buf + b, len - b);
                memcpy(buf + b, base + a, l);
                n = len + l;
            }
        } break;
        case 3: /* random bytes at a random place */
            for (size_t k = next() % n, e = k + next() % 40; k < e && k < n; k++)
                buf[k] = (uint8_t)next();
            break;
        default: /* as is */
            break;
        }
        LLVMFuzzerTestOneInput(buf, n);
        runs++;
    }
    printf("1..1\nok 1 - %lu inputs decoded without a fault\n", runs);
    return 0;
}
