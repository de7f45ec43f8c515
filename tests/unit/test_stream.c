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
    uint64_t size; /* FINAL_BEGIN without a payload: this size, 8 bytes */
};

/* Encodes a header of @version and the records into @out. Return: bytes. */
static size_t encode_v(uint8_t *out, uint32_t compat, uint16_t version, const struct rec *r,
                       size_t n)
{
    size_t len = VFM_STREAM_HDR_SIZE;

    vfm_stream_put_header(out, compat, version);
    for (size_t i = 0; i < n; i++) {
        uint8_t size[8];
        const void *payload = r[i].payload ? r[i].payload : "";
        size_t pl = r[i].payload ? strlen(r[i].payload) : 0;
        if (r[i].type == VFM_REC_FINAL_BEGIN && !r[i].payload) {
            vfm_stream_put_u64(size, r[i].size);
            payload = size;
            pl = sizeof(size);
        }
        vfm_stream_put_record(out + len, r[i].type, r[i].seq, payload, pl);
        len += VFM_STREAM_REC_SIZE;
        memcpy(out + len, payload, pl);
        len += pl;
    }
    return len;
}

static size_t encode(uint8_t *out, uint32_t compat, const struct rec *r, size_t n)
{
    return encode_v(out, compat, VFM_STREAM_VERSION, r, n);
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

/* Every cut of the stream @s is refused; so is every one-bit change. */
static void every_cut_and_flip_refused(uint8_t *s, size_t len)
{
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(decode(s, cut, 5, true, 1024, NULL), -EINVAL);
    for (size_t i = 0; i < len; i++)
        for (int bit = 0; bit < 8; bit++) {
            s[i] ^= (uint8_t)(1u << bit);
            if (decode(s, len, 64, true, 1024, NULL) == 0)
                fail_msg("flipping bit %d of byte %zu went unnoticed", bit, i);
            s[i] ^= (uint8_t)(1u << bit);
        }
}

static void test_truncated_and_flipped(void **state)
{
    uint8_t s[512];
    size_t len = encode(s, COMPAT, good, 4);
    (void)state;

    every_cut_and_flip_refused(s, len);
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
    s[4] = 3;
    {
        uint64_t sum = XXH3_64bits(s, 16);
        memcpy(s + 16, &sum, 8);
    }
    assert_int_equal(decode(s, len, 8, true, 1024, NULL), -EINVAL);
    /* version 2 takes a FINAL record too */
    len = encode_v(s, COMPAT, VFM_STREAM_VERSION2, good, 4);
    assert_int_equal(decode(s, len, 8, true, 1024, NULL), 0);
#undef REFUSED
}

/* ---- version 2: the state in parts ---- */

static const struct rec parts[] = {
    {VFM_REC_PRECOPY, 0, "early bytes", 0},
    {VFM_REC_FINAL_BEGIN, 1, NULL, 16},
    {VFM_REC_FINAL_PART, 2, "the device ", 0},
    {VFM_REC_FINAL_PART, 3, "state", 0},
    {VFM_REC_END, 4, NULL, 0},
};

/* The final_buf hook: the caller's memory, if it is big enough. */
static char in_place[64];
static void *in_place_buf(void *ctx, uint64_t len)
{
    (void)ctx;
    return len <= sizeof(in_place) ? in_place : NULL;
}

static void test_parts_whole_in_any_pieces(void **state)
{
    uint8_t s[512];
    char out[64];
    size_t len = encode_v(s, COMPAT, VFM_STREAM_VERSION2, parts, 5);
    (void)state;

    for (size_t piece = 1; piece <= len; piece++) {
        assert_int_equal(decode(s, len, piece, true, 1024, out), 0);
        assert_string_equal(out, "the device state");
    }
    /* in place: the parts land one after another in the hook's memory */
    for (size_t piece = 1; piece <= len; piece += 7) {
        struct vfm_stream_dec d;
        const uint8_t *p;
        size_t n;
        memset(in_place, 0, sizeof(in_place));
        vfm_stream_dec_init(&d, COMPAT, 1024, true);
        d.final_buf = in_place_buf;
        for (size_t off = 0; off < len; off += piece)
            assert_int_equal(
                vfm_stream_dec_feed(&d, s + off, len - off < piece ? len - off : piece), 0);
        assert_int_equal(vfm_stream_dec_finish(&d, &p, &n), 0);
        assert_ptr_equal(p, in_place);
        assert_int_equal(n, 16);
        assert_memory_equal(in_place, "the device state", 16);
        vfm_stream_dec_release(&d);
    }
    /* an empty state: FINAL_BEGIN(0), no part */
    static const struct rec empty[] = {{VFM_REC_FINAL_BEGIN, 0, NULL, 0}, {VFM_REC_END, 1}};
    len = encode_v(s, COMPAT, VFM_STREAM_VERSION2, empty, 2);
    assert_int_equal(decode(s, len, 5, false, 1024, out), 0);
    assert_string_equal(out, "");
}

static void test_parts_truncated_and_flipped(void **state)
{
    uint8_t s[512];
    size_t len = encode_v(s, COMPAT, VFM_STREAM_VERSION2, parts, 5);
    (void)state;

    every_cut_and_flip_refused(s, len);
}

static void test_parts_rules(void **state)
{
    uint8_t s[512];
    size_t len;
    (void)state;

#define REFUSED_V(err, version, ...)                                                               \
    do {                                                                                           \
        static const struct rec r[] = {__VA_ARGS__};                                               \
        len = encode_v(s, COMPAT, version, r, sizeof(r) / sizeof(r[0]));                           \
        assert_int_equal(decode(s, len, 3, true, 1024, NULL), err);                                \
    } while (0)
#define REFUSED(err, ...) REFUSED_V(err, VFM_STREAM_VERSION2, __VA_ARGS__)

    /* the control: this one passes */
    REFUSED(0, {VFM_REC_FINAL_BEGIN, 0, NULL, 2}, {VFM_REC_FINAL_PART, 1, "ab"}, {VFM_REC_END, 2});
    /* only in a version 2 stream */
    REFUSED_V(-EINVAL, VFM_STREAM_VERSION, {VFM_REC_FINAL_BEGIN, 0, NULL, 2},
              {VFM_REC_FINAL_PART, 1, "ab"}, {VFM_REC_END, 2});
    /* FINAL_BEGIN's payload is exactly the 8-byte size */
    REFUSED(-EINVAL, {VFM_REC_FINAL_BEGIN, 0, "1234567"}, {VFM_REC_END, 1});
    REFUSED(-EINVAL, {VFM_REC_FINAL_BEGIN, 0, "123456789"}, {VFM_REC_END, 1});
    /* a part without FINAL_BEGIN, an empty part, a part past the size */
    REFUSED(-EINVAL, {VFM_REC_FINAL_PART, 0, "ab"}, {VFM_REC_END, 1});
    REFUSED(-EINVAL, {VFM_REC_FINAL_BEGIN, 0, NULL, 2}, {VFM_REC_FINAL_PART, 1, ""},
            {VFM_REC_FINAL_PART, 2, "ab"}, {VFM_REC_END, 3});
    REFUSED(-EINVAL, {VFM_REC_FINAL_BEGIN, 0, NULL, 2}, {VFM_REC_FINAL_PART, 1, "abc"},
            {VFM_REC_END, 2});
    REFUSED(-EINVAL, {VFM_REC_FINAL_BEGIN, 0, NULL, 2}, {VFM_REC_FINAL_PART, 1, "ab"},
            {VFM_REC_FINAL_PART, 2, "c"}, {VFM_REC_END, 3});
    REFUSED(-EINVAL, {VFM_REC_FINAL_BEGIN, 0, NULL, 0}, {VFM_REC_FINAL_PART, 1, "a"},
            {VFM_REC_END, 2});
    /* END before every byte came */
    REFUSED(-EINVAL, {VFM_REC_FINAL_BEGIN, 0, NULL, 3}, {VFM_REC_FINAL_PART, 1, "ab"},
            {VFM_REC_END, 2});
    REFUSED(-EINVAL, {VFM_REC_FINAL_BEGIN, 0, NULL, 3}, {VFM_REC_END, 1});
    /* one state only: no second FINAL_BEGIN, no FINAL with it, no
     * pre-copy after it */
    REFUSED(-EINVAL, {VFM_REC_FINAL_BEGIN, 0, NULL, 1}, {VFM_REC_FINAL_BEGIN, 1, NULL, 1},
            {VFM_REC_FINAL_PART, 2, "a"}, {VFM_REC_END, 3});
    REFUSED(-EINVAL, {VFM_REC_FINAL_BEGIN, 0, NULL, 1}, {VFM_REC_FINAL_PART, 1, "a"},
            {VFM_REC_FINAL, 2, "b"}, {VFM_REC_END, 3});
    REFUSED(-EINVAL, {VFM_REC_FINAL, 0, "b"}, {VFM_REC_FINAL_BEGIN, 1, NULL, 1},
            {VFM_REC_FINAL_PART, 2, "a"}, {VFM_REC_END, 3});
    REFUSED(-EINVAL, {VFM_REC_FINAL_BEGIN, 0, NULL, 1}, {VFM_REC_PRECOPY, 1, "x"},
            {VFM_REC_FINAL_PART, 2, "a"}, {VFM_REC_END, 3});
    /* parts in sequence: a lost or repeated part */
    REFUSED(-EINVAL, {VFM_REC_FINAL_BEGIN, 0, NULL, 2}, {VFM_REC_FINAL_PART, 2, "ab"},
            {VFM_REC_END, 3});
    REFUSED(-EINVAL, {VFM_REC_FINAL_BEGIN, 0, NULL, 2}, {VFM_REC_FINAL_PART, 1, "a"},
            {VFM_REC_FINAL_PART, 1, "a"}, {VFM_REC_END, 2});
    /* a size past the bound: refused at FINAL_BEGIN, before any part */
    {
        static const struct rec r[] = {{VFM_REC_FINAL_BEGIN, 0, NULL, 1025}};
        struct vfm_stream_dec d;
        len = encode_v(s, COMPAT, VFM_STREAM_VERSION2, r, 1);
        vfm_stream_dec_init(&d, COMPAT, 1024, false);
        assert_int_equal(vfm_stream_dec_feed(&d, s, len), -EFBIG);
        assert_int_equal(d.final.cap, 0); /* nothing allocated for it */
        vfm_stream_dec_release(&d);
        len = encode_v(s, COMPAT, VFM_STREAM_VERSION2, r, 1);
        vfm_stream_dec_init(&d, COMPAT, 1025, false);
        assert_int_equal(vfm_stream_dec_feed(&d, s, len), 0);
        vfm_stream_dec_release(&d);
    }
#undef REFUSED
#undef REFUSED_V
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_in_any_pieces),
        cmocka_unit_test(test_truncated_and_flipped),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_parts_whole_in_any_pieces),
        cmocka_unit_test(test_parts_truncated_and_flipped),
        cmocka_unit_test(test_parts_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
