/* SPDX-License-Identifier: MIT */
/*
 * The device state stream decoder (src/device/stream.h), record by record:
 * whole streams in any piece sizes, and every rule that refuses one.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "device/stream.h"

#define COMPAT 0xc0ffee01u

struct rec {
    uint16_t type;
    uint32_t seq;
    const char *payload;
};

/* Encodes a header and the records into @out. Return: bytes. */
static size_t encode(uint8_t *out, uint32_t compat, const struct rec *r, size_t n)
{
    size_t len = VFM_STREAM_HDR_SIZE;

    vfm_stream_put_header(out, compat);
    for (size_t i = 0; i < n; i++) {
        size_t pl = r[i].payload ? strlen(r[i].payload) : 0;
        vfm_stream_put_record(out + len, r[i].type, r[i].seq, r[i].payload, pl);
        len += VFM_STREAM_REC_SIZE;
        memcpy(out + len, r[i].payload ? r[i].payload : "", pl);
        len += pl;
    }
    return len;
}

/* Decodes @len bytes in pieces of @piece. Return: feed error or finish's. */
static int decode(const uint8_t *s, size_t len, size_t piece, bool precopy, uint64_t max,
                  char *state_out)
{
    struct vfm_stream_dec d;
    const uint8_t *p;
    size_t n;
    int ret = 0;

    vfm_stream_dec_init(&d, COMPAT, max, precopy);
    for (size_t off = 0; off < len && !ret; off += piece)
        ret = vfm_stream_dec_feed(&d, s + off, len - off < piece ? len - off : piece);
    if (!ret) {
        ret = vfm_stream_dec_finish(&d, &p, &n);
        if (!ret && state_out) {
            memcpy(state_out, p, n);
            state_out[n] = '\0';
        }
    }
    vfm_stream_dec_release(&d);
    return ret;
}

static const struct rec good[] = {
    {VFM_REC_PRECOPY, 0, "early bytes"},
    {VFM_REC_PRECOPY, 1, "dirty bytes"},
    {VFM_REC_FINAL, 2, "the device state"},
    {VFM_REC_END, 3, NULL},
};

static void test_whole_in_any_pieces(void **state)
{
    uint8_t s[512];
    char out[64];
    size_t len = encode(s, COMPAT, good, 4);
    (void)state;

    for (size_t piece = 1; piece <= len; piece++) {
        assert_int_equal(decode(s, len, piece, true, 1024, out), 0);
        assert_string_equal(out, "the device state");
    }
    /* an empty state is a state */
    static const struct rec empty[] = {{VFM_REC_FINAL, 0, ""}, {VFM_REC_END, 1, NULL}};
    len = encode(s, COMPAT, empty, 2);
    assert_int_equal(decode(s, len, 7, false, 1024, out), 0);
    assert_string_equal(out, "");
}

static void test_truncated_everywhere(void **state)
{
    uint8_t s[512];
    size_t len = encode(s, COMPAT, good, 4);
    (void)state;

    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(decode(s, cut, 5, true, 1024, NULL), -EINVAL);
}

static void test_bit_flips_everywhere(void **state)
{
    uint8_t s[512];
    size_t len = encode(s, COMPAT, good, 4);
    (void)state;

    for (size_t i = 0; i < len; i++)
        for (int bit = 0; bit < 8; bit++) {
            s[i] ^= (uint8_t)(1u << bit);
            if (decode(s, len, 64, true, 1024, NULL) == 0)
                fail_msg("flipping bit %d of byte %zu went unnoticed", bit, i);
            s[i] ^= (uint8_t)(1u << bit);
        }
}

static void test_rules(void **state)
{
    uint8_t s[512];
    size_t len;
    (void)state;

#define REFUSED(err, precopy, ...)                                                                 \
    do {                                                                                           \
        static const struct rec r[] = {__VA_ARGS__};                                               \
        len = encode(s, COMPAT, r, sizeof(r) / sizeof(r[0]));                                      \
        assert_int_equal(decode(s, len, 3, precopy, 1024, NULL), err);                             \
    } while (0)

    /* pre-copy records only where allowed, and only before FINAL */
    REFUSED(-EINVAL, false, {VFM_REC_PRECOPY, 0, "x"}, {VFM_REC_FINAL, 1, "s"}, {VFM_REC_END, 2});
    REFUSED(-EINVAL, true, {VFM_REC_FINAL, 0, "s"}, {VFM_REC_PRECOPY, 1, "x"}, {VFM_REC_END, 2});
    /* sequence: lost, repeated, reordered */
    REFUSED(-EINVAL, true, {VFM_REC_PRECOPY, 1, "x"}, {VFM_REC_FINAL, 2, "s"}, {VFM_REC_END, 3});
    REFUSED(-EINVAL, true, {VFM_REC_PRECOPY, 0, "x"}, {VFM_REC_PRECOPY, 0, "x"},
            {VFM_REC_FINAL, 1, "s"}, {VFM_REC_END, 2});
    REFUSED(-EINVAL, false, {VFM_REC_FINAL, 0, "s"}, {VFM_REC_END, 2});
    /* exactly one FINAL, then END, END empty, no unknown type */
    REFUSED(-EINVAL, false, {VFM_REC_FINAL, 0, "s"}, {VFM_REC_FINAL, 1, "t"}, {VFM_REC_END, 2});
    REFUSED(-EINVAL, false, {VFM_REC_END, 0});
    REFUSED(-EINVAL, false, {VFM_REC_FINAL, 0, "s"}, {VFM_REC_END, 1, "junk"});
    REFUSED(-EINVAL, false, {VFM_REC_FINAL, 0, "s"}, {9, 1, ""}, {VFM_REC_END, 2});
    REFUSED(-EINVAL, false, {0, 0, "s"});
    /* nothing after END, not even another END */
    REFUSED(-EINVAL, false, {VFM_REC_FINAL, 0, "s"}, {VFM_REC_END, 1}, {VFM_REC_END, 2});
    /* no END: truncated */
    REFUSED(-EINVAL, false, {VFM_REC_FINAL, 0, "s"});
    /* a record longer than the bound, refused before its payload */
    {
        static const struct rec r[] = {{VFM_REC_FINAL, 0, "0123456789abcdefX"}, {VFM_REC_END, 1}};
        len = encode(s, COMPAT, r, 2);
        assert_int_equal(decode(s, len, 1000, false, 16, NULL), -EFBIG);
        assert_int_equal(decode(s, len, 1000, false, 17, NULL), 0);
        /* only the headers were fed: EFBIG already */
        struct vfm_stream_dec d;
        vfm_stream_dec_init(&d, COMPAT, 16, false);
        assert_int_equal(vfm_stream_dec_feed(&d, s, VFM_STREAM_HDR_SIZE + VFM_STREAM_REC_SIZE),
                         -EFBIG);
        assert_int_equal(vfm_stream_dec_feed(&d, s, 1), -EFBIG); /* sticky */
        assert_int_equal(d.payload.cap, 0);                      /* nothing buffered */
        vfm_stream_dec_release(&d);
    }
    /* another device's compat id */
    len = encode(s, COMPAT + 1, good, 4);
    assert_int_equal(decode(s, len, 8, true, 1024, NULL), -EINVAL);
    /* a valid-checksum header with a reserved field set, or another version */
    len = encode(s, COMPAT, good, 4);
    s[12] = 1;
    {
        uint64_t sum = XXH3_64bits(s, 16);
        memcpy(s + 16, &sum, 8);
    }
    assert_int_equal(decode(s, len, 8, true, 1024, NULL), -EINVAL);
    len = encode(s, COMPAT, good, 4);
    s[4] = 2;
    {
        uint64_t sum = XXH3_64bits(s, 16);
        memcpy(s + 16, &sum, 8);
    }
    assert_int_equal(decode(s, len, 8, true, 1024, NULL), -EINVAL);
#undef REFUSED
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_in_any_pieces),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_bit_flips_everywhere),
        cmocka_unit_test(test_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
