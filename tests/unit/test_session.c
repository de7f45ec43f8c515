/* SPDX-License-Identifier: MIT */
/*
 * Data sessions: save -> load round trips through the data calls and
 * through real data fds; truncated, extended, corrupted and foreign streams
 * refused without the device ever loading them; sessions that ended answer
 * ENODEV (calls) or ECONNRESET / EPIPE (fds).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <xxhash.h>

#include "ticker.h"

#include "testdev.h"

#define STREAM_LEN (TESTDEV_CONTENT + VFM_STATE_STREAM_OVERHEAD)

/* Saves @t (RUNNING) into @buf through the data calls; leaves STOP_COPY. */
static size_t save_calls(struct testdev *t, uint8_t *buf, size_t cap, size_t chunk)
{
    size_t len = 0;
    ssize_t n;

    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
    while ((n = vfm_device_data_read(t->dev, buf + len, cap - len < chunk ? cap - len : chunk)) > 0)
        len += (size_t)n;
    assert_int_equal(n, 0);
    assert_int_equal(vfm_device_data_read(t->dev, buf, 1), 0); /* stays at the end */
    return len;
}

static void test_round_trip_calls(void **state)
{
    static const size_t chunks[] = {1, 7, 40, 4096, 1 << 20};
    (void)state;

    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        struct testdev *a = testdev_new("a", true, 11), *b = testdev_new("b", false, 22);
        uint8_t buf[STREAM_LEN + 16];
        size_t len = save_calls(a, buf, sizeof(buf), chunks[c]), off = 0;

        assert_int_equal(len, STREAM_LEN);
        assert_memory_not_equal(a->content, b->content, TESTDEV_CONTENT);
        assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_RESUMING, NULL), 0);
        while (off < len) {
            size_t n = len - off < chunks[c] ? len - off : chunks[c];
            assert_int_equal(vfm_device_data_write(b->dev, buf + off, n), (ssize_t)n);
            off += n;
        }
        assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_RUNNING, NULL), 0);
        assert_memory_equal(a->content, b->content, TESTDEV_CONTENT);
        assert_int_equal(b->calls[TCB_LOAD], 1);
        testdev_free(a);
        testdev_free(b);
    }
}

/* Loads @len bytes of @buf into a fresh device and asks for STOP.
 * Return: the SET's result; *loaded tells whether load() ran. */
static int try_load(const uint8_t *buf, size_t len, bool *loaded, ssize_t *write_ret)
{
    struct testdev *b = testdev_new("target", false, 99);
    uint8_t before[TESTDEV_CONTENT];
    int ret;

    memcpy(before, b->content, sizeof(before));
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_RESUMING, NULL), 0);
    *write_ret = vfm_device_data_write(b->dev, buf, len);
    ret = vfm_device_set_state(b->dev, VFM_STATE_STOP, NULL);
    *loaded = b->calls[TCB_LOAD] > 0;
    if (ret) {
        /* refused: still RESUMING, and never half-loaded */
        assert_int_equal(vfm_device_get_state(b->dev), VFM_STATE_RESUMING);
        assert_memory_equal(before, b->content, sizeof(before));
    }
    testdev_free(b);
    return ret;
}

static void good_stream(uint8_t *buf)
{
    struct testdev *a = testdev_new("src", false, 5);
    assert_int_equal(save_calls(a, buf, STREAM_LEN, 1 << 20), STREAM_LEN);
    testdev_free(a);
}

static void test_truncated(void **state)
{
    uint8_t buf[STREAM_LEN];
    bool loaded;
    ssize_t w;
    (void)state;

    good_stream(buf);
    /* every length short of the whole: header cut, payload cut */
    for (size_t len = 0; len < STREAM_LEN; len += (len < 64 ? 1 : 397)) {
        assert_int_equal(try_load(buf, len, &loaded, &w), -EINVAL);
        assert_false(loaded);
    }
    assert_int_equal(try_load(buf, STREAM_LEN - 1, &loaded, &w), -EINVAL);
    assert_int_equal(try_load(buf, STREAM_LEN, &loaded, &w), 0);
    assert_true(loaded);
}

/* A refused RESUMING -> STOP keeps the session: the rest may follow. */
static void test_truncated_then_completed(void **state)
{
    struct testdev *b = testdev_new("b", false, 1);
    uint8_t buf[STREAM_LEN];
    (void)state;

    good_stream(buf);
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_RESUMING, NULL), 0);
    assert_int_equal(vfm_device_data_write(b->dev, buf, 100), 100);
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_STOP, NULL), -EINVAL);
    assert_int_equal(vfm_device_data_write(b->dev, buf + 100, STREAM_LEN - 100), STREAM_LEN - 100);
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_STOP, NULL), 0);
    testdev_free(b);
}

static void test_extended(void **state)
{
    uint8_t buf[STREAM_LEN + 8];
    bool loaded;
    ssize_t w;
    (void)state;

    good_stream(buf);
    memset(buf + STREAM_LEN, 0xab, 8);
    for (size_t extra = 1; extra <= 8; extra++) {
        assert_int_equal(try_load(buf, STREAM_LEN + extra, &loaded, &w), -EINVAL);
        assert_int_equal(w, -EINVAL);
        assert_false(loaded);
    }
}

/* Any single flipped byte (header or payload) is refused before load(). */
static void test_corrupted(void **state)
{
    uint8_t buf[STREAM_LEN];
    bool loaded;
    ssize_t w;
    (void)state;

    good_stream(buf);
    for (size_t pos = 0; pos < STREAM_LEN; pos += (pos < 64 ? 1 : 211)) {
        buf[pos] ^= 0x40;
        if (try_load(buf, STREAM_LEN, &loaded, &w) != -EINVAL)
            fail_msg("a flipped byte at %zu was accepted", pos);
        assert_false(loaded);
        buf[pos] ^= 0x40;
    }
}

/* Load in place: the FINAL record is received into the device's own
 * buffer (load_buffer), load() gets that memory; a corrupted or truncated
 * stream there is still refused and the device's state untouched. */
static void test_load_in_place(void **state)
{
    struct testdev *src = testdev_new("in-place-src", false, 61);
    struct testdev *dst = testdev_new_in_place("in-place-dst", 62);
    uint8_t buf[STREAM_LEN], before[TESTDEV_CONTENT];
    size_t len;
    (void)state;

    assert_non_null(src);
    assert_non_null(dst);
    len = save_calls(src, buf, sizeof(buf), 1000);
    memcpy(before, dst->content, sizeof(before));
    for (size_t pos = VFM_STATE_STREAM_OVERHEAD - 32; pos < len; pos += 401) {
        buf[pos] ^= 0x08; /* in the payload, received in place */
        assert_int_equal(vfm_device_set_state(dst->dev, VFM_STATE_RESUMING, NULL), 0);
        assert_int_equal(vfm_device_data_write(dst->dev, buf, len), -EINVAL);
        assert_int_equal(vfm_device_set_state(dst->dev, VFM_STATE_STOP, NULL), -EINVAL);
        assert_int_equal(dst->calls[TCB_LOAD], 0);
        assert_memory_equal(dst->content, before, sizeof(before));
        assert_int_equal(vfm_device_reset(dst->dev), 0);
        buf[pos] ^= 0x08;
    }
    assert_int_equal(vfm_device_set_state(dst->dev, VFM_STATE_RESUMING, NULL), 0);
    assert_int_equal(vfm_device_data_write(dst->dev, buf, len - 1), (ssize_t)(len - 1));
    assert_int_equal(vfm_device_set_state(dst->dev, VFM_STATE_STOP, NULL), -EINVAL);
    assert_int_equal(vfm_device_reset(dst->dev), 0);
    assert_int_equal(vfm_device_set_state(dst->dev, VFM_STATE_RESUMING, NULL), 0);
    for (size_t off = 0; off < len; off += 333)
        assert_true(vfm_device_data_write(dst->dev, buf + off, len - off < 333 ? len - off : 333) >
                    0);
    assert_int_equal(vfm_device_set_state(dst->dev, VFM_STATE_STOP, NULL), 0);
    assert_ptr_equal(dst->loaded_from, dst->in_place); /* received where the device said */
    assert_memory_equal(dst->content, src->content, TESTDEV_CONTENT);
    testdev_free(src);
    testdev_free(dst);
}

/* A stream of another device type is refused; so is a valid header that
 * declares more than max_state_size, before any payload is buffered. */
static void test_foreign_and_huge(void **state)
{
    struct testdev *a = testdev_new_compat("a", false, 1, 0x1234);
    struct testdev *b = testdev_new("b", false, 2);
    uint8_t buf[STREAM_LEN];
    uint64_t huge = 1ull << 40, sum;
    bool loaded;
    ssize_t w;
    (void)state;

    assert_int_equal(save_calls(a, buf, sizeof(buf), 1 << 20), STREAM_LEN);
    assert_int_equal(try_load(buf, STREAM_LEN, &loaded, &w), -EINVAL);
    assert_int_equal(w, -EINVAL); /* refused at the header */
    assert_false(loaded);

    good_stream(buf);
    /* the FINAL record's header is at 24: length at +8, own checksum at +24
     * (little-endian host: the stream's layout) */
    memcpy(buf + 24 + 8, &huge, 8);
    sum = XXH3_64bits(buf + 24, 24); /* a header that is valid but for its size */
    memcpy(buf + 24 + 24, &sum, 8);
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_RESUMING, NULL), 0);
    assert_int_equal(vfm_device_data_write(b->dev, buf, 56), -EFBIG);
    assert_int_equal(vfm_device_data_write(b->dev, buf, 10), -EFBIG); /* spoiled: sticky */
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_STOP, NULL), -EINVAL);
    assert_int_equal(b->calls[TCB_LOAD], 0);
    testdev_free(a);
    testdev_free(b);
}

/* The device's own check refuses a well-framed but invalid content. */
static void test_device_refuses(void **state)
{
    struct testdev *a = testdev_new("a", false, 3);
    uint8_t buf[STREAM_LEN];
    bool loaded;
    ssize_t w;
    (void)state;

    memset(a->content, 0, 4); /* breaks the content magic, not the frame */
    assert_int_equal(save_calls(a, buf, sizeof(buf), 1 << 20), STREAM_LEN);
    assert_int_equal(try_load(buf, STREAM_LEN, &loaded, &w), -EINVAL);
    assert_true(loaded); /* load() ran and refused */
    testdev_free(a);
}

static void test_enodev(void **state)
{
    struct testdev *t = testdev_new("t", true, 1);
    uint8_t b[16];
    (void)state;

    assert_int_equal(vfm_device_data_read(t->dev, b, 1), -ENODEV); /* RUNNING */
    assert_int_equal(vfm_device_data_write(t->dev, b, 1), -ENODEV);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
    assert_int_equal(vfm_device_data_write(t->dev, b, 1), -ENODEV); /* save, not load */
    assert_int_equal(vfm_device_data_read(t->dev, b, 4), 4);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP, NULL), 0);
    assert_int_equal(vfm_device_data_read(t->dev, b, 1), -ENODEV); /* session ended */
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_RESUMING, NULL), 0);
    assert_int_equal(vfm_device_data_read(t->dev, b, 1), -ENODEV); /* load, not save */
    /* an empty stream cannot be loaded: the way out of RESUMING is a reset */
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), -EINVAL);
    assert_int_equal(vfm_device_get_state(t->dev), VFM_STATE_RESUMING);
    assert_int_equal(vfm_device_reset(t->dev), 0);
    assert_int_equal(vfm_device_data_write(t->dev, b, 1), -ENODEV); /* load ended */
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
    assert_int_equal(vfm_device_data_read(t->dev, b, 4), 4); /* a new save session */
    testdev_free(t);
}

/* Reads a whole fd. Return: bytes, or -errno of the failing read. */
static ssize_t read_all(int fd, uint8_t *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0)
            return -errno;
        if (n == 0)
            return (ssize_t)len;
        len += (size_t)n;
    }
}

static void test_round_trip_fd(void **state)
{
    struct testdev *a = testdev_new("a", true, 31), *b = testdev_new("b", true, 32);
    uint8_t buf[STREAM_LEN + 10], x = 0;
    int sfd = -1, lfd = -1;
    (void)state;

    assert_int_equal(vfm_device_set_state(a->dev, VFM_STATE_STOP_COPY, &sfd), 0);
    assert_true(sfd >= 0);
    assert_int_equal(fcntl(sfd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    assert_int_equal(vfm_device_data_read(a->dev, &x, 1), -EBUSY);
    assert_int_equal(read_all(sfd, buf, sizeof(buf)), STREAM_LEN); /* then EOF */
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_RESUMING, &lfd), 0);
    assert_true(lfd >= 0);
    assert_int_equal(vfm_device_data_write(b->dev, &x, 1), -EBUSY);
    for (size_t off = 0; off < STREAM_LEN; off += 1000) {
        size_t n = STREAM_LEN - off < 1000 ? STREAM_LEN - off : 1000;
        assert_int_equal(write(lfd, buf + off, n), (ssize_t)n);
    }
    /* no close, no wait: bytes written before the SET all count */
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_RUNNING, NULL), 0);
    assert_memory_equal(a->content, b->content, TESTDEV_CONTENT);
    /* the ended sessions' fds fail */
    assert_int_equal(vfm_device_set_state(a->dev, VFM_STATE_RUNNING, NULL), 0);
    assert_int_equal(read(sfd, &x, 1), 0); /* everything was read: a clean end */
    assert_int_equal(write(lfd, &x, 1), -1);
    assert_int_equal(errno, EPIPE);
    close(sfd);
    close(lfd);
    testdev_free(a);
    testdev_free(b);
}

/* A save session that ends before the reader took everything: the reader
 * gets the bytes already queued, then ECONNRESET, never a clean EOF. The
 * ticker's 8 MiB state is far more than a socket buffer holds. */
static void test_fd_ended_early(void **state)
{
    size_t cap = (8u << 20) + 4096;
    uint8_t *buf = malloc(cap);
    struct ticker *tk;
    int sfd = -1;
    ssize_t got;
    (void)state;

    assert_non_null(buf);
    assert_int_equal(ticker_new("big", 8u << 20, &tk), 0);
    assert_int_equal(vfm_device_set_state(ticker_device(tk), VFM_STATE_STOP_COPY, &sfd), 0);
    assert_int_equal(read(sfd, buf, 10), 10);
    assert_int_equal(vfm_device_set_state(ticker_device(tk), VFM_STATE_STOP, NULL), 0);
    got = read_all(sfd, buf, cap);
    assert_int_equal(got, -ECONNRESET);
    close(sfd);

    /* the same when a reset ends it */
    assert_int_equal(vfm_device_set_state(ticker_device(tk), VFM_STATE_STOP_COPY, &sfd), 0);
    assert_int_equal(vfm_device_reset(ticker_device(tk)), 0);
    assert_int_equal(read_all(sfd, buf, cap), -ECONNRESET);
    close(sfd);

    /* and a whole read of the same big state ends cleanly */
    assert_int_equal(vfm_device_set_state(ticker_device(tk), VFM_STATE_STOP_COPY, &sfd), 0);
    got = read_all(sfd, buf, cap);
    assert_true(got > (8 << 20));
    close(sfd);
    ticker_free(tk);
    free(buf);
}

/* The reader closes its save fd early, the writer its load fd early: the
 * runtime notices, and the device still works. */
static void test_fd_peer_closes(void **state)
{
    struct ticker *tk;
    struct testdev *b = testdev_new("b", false, 1);
    int sfd = -1, lfd = -1;
    (void)state;

    assert_int_equal(ticker_new("big", 4u << 20, &tk), 0);
    assert_int_equal(vfm_device_set_state(ticker_device(tk), VFM_STATE_STOP_COPY, &sfd), 0);
    close(sfd); /* the pump's next send fails with EPIPE: it stops quietly */
    usleep(10000);
    assert_int_equal(vfm_device_set_state(ticker_device(tk), VFM_STATE_RUNNING, NULL), 0);

    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_RESUMING, &lfd), 0);
    assert_int_equal(write(lfd, "VFMS", 4), 4);
    close(lfd); /* a truncated stream, then end of file */
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_STOP, NULL), -EINVAL);
    assert_int_equal(vfm_device_get_state(b->dev), VFM_STATE_RESUMING);
    assert_int_equal(vfm_device_reset(b->dev), 0);
    ticker_free(tk);
    testdev_free(b);
}

/* A state larger than max_state_size: save fails with EFBIG and the device
 * stays stopped; the receiving side refuses such a record before buffering. */
static void test_max_state(void **state)
{
    struct testdev *small = testdev_new_max("small", false, 1, TESTDEV_COMPAT, 1000);
    struct testdev *big = testdev_new("big", false, 2);
    uint8_t buf[STREAM_LEN];
    (void)state;

    assert_int_equal(vfm_device_set_state(small->dev, VFM_STATE_STOP_COPY, NULL), -EFBIG);
    assert_int_equal(vfm_device_get_state(small->dev), VFM_STATE_STOP);
    assert_int_equal(vfm_device_data_read(small->dev, buf, 1), -ENODEV);
    assert_int_equal(save_calls(big, buf, sizeof(buf), 1 << 20), STREAM_LEN);
    assert_int_equal(vfm_device_set_state(small->dev, VFM_STATE_RESUMING, NULL), 0);
    assert_int_equal(vfm_device_data_write(small->dev, buf, STREAM_LEN), -EFBIG);
    assert_int_equal(vfm_device_set_state(small->dev, VFM_STATE_STOP, NULL), -EINVAL);
    assert_int_equal(small->calls[TCB_LOAD], 0);
    testdev_free(small);
    testdev_free(big);
}

struct src {
    const uint8_t *p;
    size_t left;
    size_t asked;
    int fail_at; /* fail the call that asks for the byte at this offset (-1: never) */
};

static int from_src(void *ctx, void *data, size_t n)
{
    struct src *s = ctx;
    if (s->fail_at >= 0 && s->asked <= (size_t)s->fail_at && (size_t)s->fail_at < s->asked + n)
        return -ECONNRESET;
    assert_true(n <= s->left);
    memcpy(data, s->p, n);
    s->p += n;
    s->left -= n;
    s->asked += n;
    return 0;
}

static int send_ok(void *ctx, const void *data, size_t n)
{
    memcpy(ctx, data, n);
    return 0;
}

static int send_fail(void *ctx, const void *data, size_t n)
{
    (void)ctx;
    (void)data;
    (void)n;
    return -EPIPE;
}

/* The zero-copy calls the vfio-user server uses: what is consumed, what a
 * failing transport leaves, and that an invalid stream still asks for
 * every byte (the transport keeps its framing). */
static void test_zero_copy_calls(void **state)
{
    struct testdev *a = testdev_new("a", false, 1), *b = testdev_new("b", false, 2);
    uint8_t buf[STREAM_LEN + 100], got[STREAM_LEN];
    struct src in;
    size_t len = 0;
    ssize_t n;
    (void)state;

    assert_int_equal(vfm_device_data_read_with(a->dev, 10, send_ok, got), -ENODEV);
    assert_int_equal(vfm_device_set_state(a->dev, VFM_STATE_STOP_COPY, NULL), 0);
    assert_int_equal(vfm_device_data_read_with(a->dev, 100, send_fail, NULL), -EPIPE);
    while ((n = vfm_device_data_read_with(a->dev, 1000, send_ok, buf + len)) > 0)
        len += (size_t)n;
    assert_int_equal(n, 0);
    assert_int_equal(len, STREAM_LEN); /* the failed send consumed nothing */

    assert_int_equal(vfm_device_data_write_with(b->dev, 10, from_src, &in), -ENODEV);
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_RESUMING, NULL), 0);
    in = (struct src){buf, len, 0, -1};
    assert_int_equal(vfm_device_data_write_with(b->dev, 1000, from_src, &in), 1000);
    assert_int_equal(vfm_device_data_write_with(b->dev, len - 1000, from_src, &in),
                     (ssize_t)(len - 1000));
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_STOP, NULL), 0);
    assert_memory_equal(a->content, b->content, TESTDEV_CONTENT);

    /* a transport that fails mid-way */
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_RESUMING, NULL), 0);
    in = (struct src){buf, len, 0, 500};
    assert_int_equal(vfm_device_data_write_with(b->dev, len, from_src, &in), -ECONNRESET);
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_STOP, NULL), -EINVAL);
    assert_int_equal(vfm_device_reset(b->dev), 0);

    /* bytes after the END: every byte is still asked for, then EINVAL */
    memset(buf + len, 0x77, 100);
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_RESUMING, NULL), 0);
    in = (struct src){buf, len + 100, 0, -1};
    assert_int_equal(vfm_device_data_write_with(b->dev, len + 100, from_src, &in), -EINVAL);
    assert_int_equal(in.left, 0);
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_STOP, NULL), -EINVAL);

    /* a corrupted header: refused at once, the rest still asked for */
    assert_int_equal(vfm_device_reset(b->dev), 0);
    assert_int_equal(vfm_device_set_state(b->dev, VFM_STATE_RESUMING, NULL), 0);
    buf[0] ^= 1;
    in = (struct src){buf, len, 0, -1};
    assert_int_equal(vfm_device_data_write_with(b->dev, len, from_src, &in), -EINVAL);
    assert_int_equal(in.left, 0);
    assert_int_equal(b->calls[TCB_LOAD], 1); /* only the good load ran */
    testdev_free(a);
    testdev_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_calls),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_truncated_then_completed),
        cmocka_unit_test(test_extended),
        cmocka_unit_test(test_corrupted),
        cmocka_unit_test(test_load_in_place),
        cmocka_unit_test(test_foreign_and_huge),
        cmocka_unit_test(test_device_refuses),
        cmocka_unit_test(test_enodev),
        cmocka_unit_test(test_round_trip_fd),
        cmocka_unit_test(test_fd_ended_early),
        cmocka_unit_test(test_fd_peer_closes),
        cmocka_unit_test(test_max_state),
        cmocka_unit_test(test_zero_copy_calls),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
