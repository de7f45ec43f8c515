/* SPDX-License-Identifier: MIT */
/*
 * The streams' XXH3-64 through the dispatched implementation (AVX2 where
 * the CPU has it) gives libxxhash's value for every length around the
 * algorithm's internal boundaries and beyond, in one pass and streamed in
 * pieces of every size.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "common/hash.h"

#define MAX (300u * 1024u)

static void test_same_values(void **state)
{
    uint8_t *buf = malloc(MAX);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    unsigned checked = 0;
    (void)state;

    assert_non_null(buf);
    for (size_t i = 0; i < MAX; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
    printf("# implementation: %s\n", vfm_xxh3_impl());
    for (size_t len = 0; len < MAX; len = len < 2100 ? len + 1 : len * 3 / 2 + 17) {
        for (size_t off = 0; off < 3; off++) { /* unaligned starts too */
            struct vfm_xxh3_stream *s = vfm_xxh3_stream_new();
            uint64_t want = XXH3_64bits(buf + off, len);
            size_t piece = 1 + (len * 7 + off) % 4099;

            assert_non_null(s);
            if (vfm_xxh3(buf + off, len) != want)
                fail_msg("one pass, %zu bytes at +%zu", len, off);
            vfm_xxh3_stream_reset(s);
            for (size_t done = 0; done < len; done += piece)
                vfm_xxh3_stream_update(s, buf + off + done,
                                       len - done < piece ? len - done : piece);
            if (vfm_xxh3_stream_digest(s) != want)
                fail_msg("streamed in %zu-byte pieces, %zu bytes at +%zu", piece, len, off);
            vfm_xxh3_stream_free(s);
            checked++;
        }
    }
    assert_true(checked > 6000);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
