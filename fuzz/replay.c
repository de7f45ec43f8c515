/* SPDX-License-Identifier: MIT */
/*
 * Runs a fuzz target without libFuzzer: on the files given, and on a
 * deterministic set of mutations (bit flips, truncations, splices, random
 * bytes) of the target's valid seeds, so every `make check` (plain and under
 * ASan+UBSan) exercises the decoder on malformed input. libFuzzer itself
 * runs with `make fuzz`, and for a bounded time in `make check` when clang
 * is installed.
 *
 * usage: replay [--mutations N] [FILE...]
 *        replay --write-seeds DIR   (the seeds, as a corpus for libFuzzer)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

int main(int argc, char **argv)
{
    static uint8_t base[8192], buf[16384];
    unsigned long mutations = 0, runs = 0;
    unsigned nseeds = 0;
    int i = 1;

    while (fuzz_seed(nseeds, base, sizeof(base)))
        nseeds++;
    if (argc == 3 && !strcmp(argv[1], "--write-seeds")) {
        for (unsigned k = 0; k < nseeds; k++) {
            char path[4096];
            size_t len = fuzz_seed(k, base, sizeof(base));
            FILE *f;
            snprintf(path, sizeof(path), "%s/seed-%u", argv[2], k);
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
    for (unsigned long m = 0; m < mutations && nseeds; m++) {
        size_t len = fuzz_seed((unsigned)(m % nseeds), base, sizeof(base)), n = len;

        memcpy(buf, base, len);
        switch (next() % 5) {
        case 0: /* flip up to 4 bits */
            for (int k = 0; k < 1 + (int)(next() % 4); k++)
                buf[next() % n] ^= (uint8_t)(1u << (next() % 8));
            break;
        case 1: /* truncate */
            n = next() % len;
            break;
        case 2: { /* splice: repeat a slice */
            size_t a = next() % len, b = next() % len, l = next() % 64;
            if (a + l > len)
                l = len - a;
            memmove(buf + b + l, buf + b, len - b);
            memcpy(buf + b, base + a, l);
            n = len + l;
            break;
        }
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
