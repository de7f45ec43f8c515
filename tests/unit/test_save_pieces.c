/* SPDX-License-Identifier: MIT */
/*
 * Save in pieces (vfm_mig_ops.save_begin / save_piece): a stopped device's
 * state streamed from its own memory as it is read. Every way to read it
 * (the data calls, gathered and contiguous, and the data fd) gives a stream
 * a destination loads; nothing is asked of the device at the arc but its
 * size; a piece that fails or breaks the rules ends the stream in an error,
 * never a clean end; no piece is asked for once the session ended; and a
 * device that declines (-EOPNOTSUPP) is saved by save() as before.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cmocka.h>

#include "device/stream.h"
#include "testdev.h"

#define BUF (TESTDEV_CONTENT * 40)

/* Reads the whole save stream with vfm_device_data_read in @chunk pieces.
 * Return: bytes, or the first error. */
static ssize_t read_all(struct testdev *t, uint8_t *out, size_t cap, size_t chunk)
{
    size_t len = 0;

    for (;;) {
        size_t want = cap - len < chunk ? cap - len : chunk;
        ssize_t n = vfm_device_data_read(t->dev, out + len, want);
        if (n < 0)
            return n;
        if (n == 0)
            return (ssize_t)len;
        len += (size_t)n;
        if (len == cap)
            return -ENOSPC;
    }
}

/* Reads a data fd to its end. Return: bytes, or -errno of the failed read. */
static ssize_t read_fd(int fd, uint8_t *out, size_t cap)
{
    size_t len = 0;

    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;
        if (poll(&p, 1, 10000) != 1)
            return -ETIMEDOUT; /* a bounded wait: the test fails, never hangs */
        n = read(fd, out + len, cap - len);
        if (n < 0)
            return -errno;
        if (n == 0)
            return (ssize_t)len;
        len += (size_t)n;
    }
}

/* Loads @len bytes into a fresh destination; its content must be @src's.
 * Return: the RESUMING -> STOP result. */
static int load_into_new(const struct testdev *src, const uint8_t *s, size_t len)
{
    struct testdev *d = testdev_new_full("dst", false, true, 99, TESTDEV_COMPAT, 0);
    int ret;

    assert_non_null(d);
    assert_int_equal(vfm_device_set_state(d->dev, VFM_STATE_STOP, NULL), 0);
    assert_int_equal(vfm_device_set_state(d->dev, VFM_STATE_RESUMING, NULL), 0);
    vfm_device_data_write(d->dev, s, len); /* an error shows at the load */
    ret = vfm_device_set_state(d->dev, VFM_STATE_STOP, NULL);
    if (!ret)
        assert_memory_equal(d->content, src->content, TESTDEV_CONTENT);
    testdev_free(d);
    return ret;
}

static struct testdev *pieces_new(const char *name, size_t piece_len)
{
    struct testdev *t = testdev_new_pieces(name, true, 3);

    assert_non_null(t);
    t->piece_len = piece_len;
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP, NULL), 0);
    testdev_clear_log(t);
    return t;
}

/* The arc asks for the size only; the data calls, in any read size and
 * any piece size, give a stream that loads; save() is never called. */
static void test_data_calls(void **state)
{
    static const size_t piece_lens[] = {0, 1, 7, 1000, TESTDEV_CONTENT - 1};
    static const size_t reads[] = {1, 5, 31, 32, 33, 4096, BUF};
    uint8_t *s = malloc(BUF);
    (void)state;

    assert_non_null(s);
    for (size_t i = 0; i < sizeof(piece_lens) / sizeof(piece_lens[0]); i++)
        for (size_t j = 0; j < sizeof(reads) / sizeof(reads[0]); j++) {
            struct testdev *t = pieces_new("src", piece_lens[i]);
            ssize_t n;

            assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
            assert_int_equal(t->calls[TCB_SAVE_BEGIN], 1);
            assert_int_equal(t->calls[TCB_SAVE_PIECE], 0); /* nothing at the arc */
            assert_int_equal(t->calls[TCB_SAVE], 0);
            n = read_all(t, s, BUF, reads[j]);
            assert_true(n > TESTDEV_CONTENT);
            if (piece_lens[i] == 1)
                assert_true(t->calls[TCB_SAVE_PIECE] >= TESTDEV_CONTENT);
            assert_int_equal(load_into_new(t, s, (size_t)n), 0);
            /* the end stays the end */
            assert_int_equal(vfm_device_data_read(t->dev, s, 16), 0);
            assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP, NULL), 0);
            assert_int_equal(t->piece_after_end, 0);
            testdev_free(t);
        }
    free(s);
}

/* Whole stream with sizes: header 24, FINAL_BEGIN 32 + 8, one 32-byte
 * header per part, END 32. A part gathers pieces up to VFM_SAVE_PART_MAX
 * bytes or 64 pieces: 1000-byte pieces make one part of the whole state
 * (what MIG_DATA_SIZE counts on), 1-byte pieces a part per 64 bytes. */
static void test_stream_size(void **state)
{
    static const struct {
        size_t piece_len, parts;
    } c[] = {{1000, 1}, {0, 1}, {1, TESTDEV_CONTENT / 64}, {16, TESTDEV_CONTENT / 1024}};
    uint8_t *s = malloc(BUF);
    (void)state;

    assert_non_null(s);
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        struct testdev *t = pieces_new("src", c[i].piece_len);
        uint64_t size;
        assert_int_equal(vfm_device_data_size(t->dev, &size), 0);
        assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
        assert_int_equal(read_all(t, s, BUF, 4096),
                         TESTDEV_CONTENT + VFM_STATE_STREAM_OVERHEAD + 8 + c[i].parts * 32);
        if (c[i].parts == 1)
            assert_int_equal(size, TESTDEV_CONTENT + VFM_STATE_STREAM_OVERHEAD + 8 + 32);
        /* bytes at the stream's offsets: version 2, and the state verbatim
         * in the first part */
        assert_int_equal(s[4], 2);
        assert_memory_equal(s + 24 + 40 + 32, t->content, TESTDEV_CONTENT / c[i].parts);
        testdev_free(t);
    }
    free(s);
}

struct gather {
    int fail; /* fail this many calls first */
    uint8_t *out;
    size_t len;
    int calls, max_cnt;
};

static int gather_send(void *ctx, const struct iovec *iov, int cnt, size_t n)
{
    struct gather *g = ctx;
    size_t sum = 0;

    g->calls++;
    if (cnt > g->max_cnt)
        g->max_cnt = cnt;
    for (int i = 0; i < cnt; i++)
        sum += iov[i].iov_len;
    assert_int_equal(sum, n);
    if (g->fail > 0) {
        g->fail--;
        return -EPIPE;
    }
    for (int i = 0; i < cnt; i++) {
        memcpy(g->out + g->len, iov[i].iov_base, iov[i].iov_len);
        g->len += iov[i].iov_len;
    }
    return 0;
}

/* vfm_device_data_read_iov: a read is short only at the end (or when the
 * pieces run out), and a send that fails consumes nothing: the next read
 * gives the same bytes. */
static void test_gathered(void **state)
{
    struct testdev *t = pieces_new("src", 100);
    struct gather g = {.out = malloc(BUF)};
    ssize_t n;
    (void)state;

    assert_non_null(g.out);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
    /* 1000 bytes need about 10 parts' headers and payloads: all in one */
    n = vfm_device_data_read_iov(t->dev, 1000, gather_send, &g);
    assert_int_equal(n, 1000);
    assert_true(g.max_cnt > 10);
    /* a failed send: nothing consumed */
    g.fail = 1;
    assert_int_equal(vfm_device_data_read_iov(t->dev, 1500, gather_send, &g), -EPIPE);
    assert_int_equal(g.len, 1000);
    /* the pieces run out before 64 KiB: short, and the rest follows */
    n = vfm_device_data_read_iov(t->dev, 65536, gather_send, &g);
    assert_true(n > 0 && n < 65536 - 1000);
    while ((n = vfm_device_data_read_iov(t->dev, 65536, gather_send, &g)) > 0)
        ;
    assert_int_equal(n, 0);
    assert_int_equal(load_into_new(t, g.out, g.len), 0);
    free(g.out);
    testdev_free(t);
}

struct one {
    uint8_t *out;
    size_t len;
    size_t max_n;
};

static int one_send(void *ctx, const void *data, size_t n)
{
    struct one *o = ctx;

    memcpy(o->out + o->len, data, n);
    o->len += n;
    if (n > o->max_n)
        o->max_n = n;
    return 0;
}

/* vfm_device_data_read_with: contiguous pieces, in order. */
static void test_contiguous(void **state)
{
    struct testdev *t = pieces_new("src", 0);
    struct one o = {.out = malloc(BUF)};
    ssize_t n;
    (void)state;

    assert_non_null(o.out);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
    while ((n = vfm_device_data_read_with(t->dev, BUF, one_send, &o)) > 0)
        ;
    assert_int_equal(n, 0);
    /* the state came as one piece straight from the device's memory */
    assert_int_equal(o.max_n, TESTDEV_CONTENT);
    assert_int_equal(load_into_new(t, o.out, o.len), 0);
    free(o.out);
    testdev_free(t);
}

/* The data fd: the pump streams the pieces; the reader gets a clean end. */
static void test_data_fd(void **state)
{
    struct testdev *t = pieces_new("src", 333);
    uint8_t *s = malloc(BUF);
    int fd = -1;
    ssize_t n;
    (void)state;

    assert_non_null(s);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, &fd), 0);
    assert_true(fd >= 0);
    n = read_fd(fd, s, BUF);
    assert_true(n > TESTDEV_CONTENT);
    assert_int_equal(load_into_new(t, s, (size_t)n), 0);
    /* the data calls are not for a session with an fd */
    assert_int_equal(vfm_device_data_read(t->dev, s, 16), -EBUSY);
    close(fd);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP, NULL), 0);
    assert_int_equal(t->piece_after_end, 0);
    free(s);
    testdev_free(t);
}

/* A piece that fails: the data calls give the bytes before it, then the
 * error, again and again; the truncated stream does not load. */
static void test_piece_fails_calls(void **state)
{
    static const int errs[] = {-EIO, -ENOMEM, -EFAULT};
    uint8_t *s = malloc(BUF);
    (void)state;

    assert_non_null(s);
    for (int after = 0; after < 4; after++)
        for (size_t e = 0; e < sizeof(errs) / sizeof(errs[0]); e++) {
            /* 16-byte pieces: a part is 64 of them, 1 KiB */
            struct testdev *t = pieces_new("src", 16);
            size_t len = 0;
            ssize_t n;

            t->fail_cb = TCB_SAVE_PIECE;
            t->fail_after = after * 64 + 5;
            t->fail_err = errs[e];
            assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
            while ((n = vfm_device_data_read(t->dev, s + len, 700)) > 0)
                len += (size_t)n;
            assert_int_equal(n, errs[e]);
            assert_int_equal(vfm_device_data_read(t->dev, s, 700), errs[e]); /* sticky */
            /* every part before the failing one, no byte of it */
            assert_int_equal(len, 24 + 40 + (size_t)after * (32 + 1024));
            assert_int_equal(load_into_new(t, s, len), -EINVAL);
            /* the session still ends normally */
            assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP, NULL), 0);
            testdev_free(t);
        }
    free(s);
}

/* A piece that fails with a data fd: the reader sees ECONNRESET after the
 * bytes before it, never a clean end of file. */
static void test_piece_fails_fd(void **state)
{
    uint8_t *s = malloc(BUF);
    (void)state;

    assert_non_null(s);
    for (int after = 0; after < 3; after++) {
        struct testdev *t = pieces_new("src", 1000);
        int fd = -1;

        t->fail_cb = TCB_SAVE_PIECE;
        t->fail_after = after;
        t->fail_err = -EIO;
        assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, &fd), 0);
        assert_int_equal(read_fd(fd, s, BUF), -ECONNRESET);
        close(fd);
        assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP, NULL), 0);
        testdev_free(t);
    }
    free(s);
}

/* A device that breaks its word — an empty piece, a piece longer than
 * asked, a size it cannot give — ends the stream in an error (-EIO, or its
 * own), not in a stream that claims to be whole. */
static void test_piece_breaks_rules(void **state)
{
    uint8_t *s = malloc(BUF);
    (void)state;

    assert_non_null(s);
    for (int bad = 1; bad <= 2; bad++) {
        struct testdev *t = pieces_new("src", 0);
        t->piece_bad = bad;
        assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
        assert_int_equal(read_all(t, s, BUF, BUF), -EIO);
        testdev_free(t);
    }
    {
        /* save_begin says more than save_piece can give */
        struct testdev *t = pieces_new("src", 0);
        t->begin_total = TESTDEV_CONTENT + 10;
        assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
        assert_int_equal(read_all(t, s, BUF, BUF), -EINVAL);
        testdev_free(t);
    }
    free(s);
}

/* save_begin's refusals: an error fails the arc (the device stays in
 * STOP); -EOPNOTSUPP has save() used; a size past max_state_size fails
 * the arc with -EFBIG. */
static void test_begin_refusals(void **state)
{
    uint8_t *s = malloc(BUF);
    ssize_t n;
    (void)state;

    assert_non_null(s);
    {
        struct testdev *t = pieces_new("src", 0);
        t->fail_cb = TCB_SAVE_BEGIN;
        t->fail_err = -ENOSPC;
        assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), -ENOSPC);
        assert_int_equal(vfm_device_get_state(t->dev), VFM_STATE_STOP);
        assert_int_equal(vfm_device_data_read(t->dev, s, 16), -ENODEV);
        testdev_free(t);
    }
    {
        struct testdev *t = pieces_new("src", 0);
        t->use_pieces = false; /* save_begin: -EOPNOTSUPP */
        assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
        assert_int_equal(t->calls[TCB_SAVE], 1);
        n = read_all(t, s, BUF, 999);
        assert_int_equal(n, TESTDEV_CONTENT + VFM_STATE_STREAM_OVERHEAD);
        assert_int_equal(s[4], 1); /* a version 1 stream */
        assert_int_equal(load_into_new(t, s, (size_t)n), 0);
        testdev_free(t);
    }
    {
        struct testdev *t = pieces_new("src", 0);
        t->begin_total = VFM_DEVICE_DEFAULT_MAX_STATE + 1;
        assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), -EFBIG);
        assert_int_equal(vfm_device_get_state(t->dev), VFM_STATE_STOP);
        testdev_free(t);
    }
    free(s);
}

/* After pre-copy the FINAL comes in pieces too (the pages not given yet);
 * a version 2 stream carries the pre-copy records and the parts; a
 * destination loads it all. */
static void test_after_precopy(void **state)
{
    struct testdev *t = testdev_new_pieces("src", true, 4);
    uint8_t *s = malloc(BUF * 4);
    size_t len = 0;
    ssize_t n;
    (void)state;

    assert_non_null(t);
    assert_non_null(s);
    t->piece_len = 300;
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_PRE_COPY, NULL), 0);
    /* the stream header and a pre-copy record (4 pages), then dirty two
     * pages already given */
    while (len < VFM_STREAM_HDR_SIZE + VFM_STREAM_REC_SIZE + TESTDEV_PAGE) {
        n = vfm_device_data_read(t->dev, s + len, BUF);
        assert_true(n > 0);
        len += (size_t)n;
    }
    assert_int_equal(s[4], 2);
    testdev_write(t, 10, 0xaa);
    testdev_write(t, TESTDEV_PAGE + 3, 0xbb);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
    assert_int_equal(t->calls[TCB_SAVE_BEGIN], 1);
    assert_int_equal(t->calls[TCB_SAVE], 0);
    while ((n = vfm_device_data_read(t->dev, s + len, 777)) > 0)
        len += (size_t)n;
    assert_int_equal(n, 0);
    assert_int_equal(load_into_new(t, s, len), 0);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP, NULL), 0);
    assert_int_equal(t->calls[TCB_PC_END], 1);
    /* save_begin failing after pre-copy: the device runs again, still in
     * PRE_COPY with its session */
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_RUNNING, NULL), 0);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_PRE_COPY, NULL), 0);
    testdev_clear_log(t);
    t->fail_cb = TCB_SAVE_BEGIN;
    t->fail_err = -EIO;
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), -EIO);
    assert_int_equal(vfm_device_get_state(t->dev), VFM_STATE_PRE_COPY);
    assert_int_equal(t->calls[TCB_STOP_RUN], 1);
    t->fail_cb = -1;
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_RUNNING, NULL), 0);
    free(s);
    testdev_free(t);
}

/* The session ends under a reader: a reset, or STOP_COPY -> STOP with the
 * state half read (with an fd, the pump mid-stream). No piece is asked for
 * once the session ended; the fd's reader sees ECONNRESET. */
static void test_session_ends_mid_stream(void **state)
{
    uint8_t *s = malloc(BUF);
    (void)state;

    assert_non_null(s);
    for (int how = 0; how < 4; how++) {
        struct testdev *t = pieces_new("src", 64);
        bool fd_mode = how & 1, reset = how & 2;
        int fd = -1;

        /* the pump is inside the first piece when the session ends */
        t->piece_delay_us = 100000;
        assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, fd_mode ? &fd : NULL),
                         0);
        if (fd_mode) {
            assert_int_equal(read(fd, s, 1), 1);
        } else {
            assert_int_equal(vfm_device_data_read(t->dev, s, 500), 500);
        }
        if (reset)
            assert_int_equal(vfm_device_reset(t->dev), 0);
        else
            assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP, NULL), 0);
        if (fd_mode) {
            /* the pump may have sent the whole stream before the session
             * ended (it is 4 KiB): then it ends cleanly and loads; any
             * other end is an error, never a clean end of a part */
            ssize_t n = read_fd(fd, s + 1, BUF - 1);
            if (n >= 0)
                assert_int_equal(load_into_new(t, s, (size_t)n + 1), 0);
            else
                assert_true(n == -ECONNRESET || n == -EPIPE);
            close(fd);
        } else {
            assert_int_equal(vfm_device_data_read(t->dev, s, 500), -ENODEV);
        }
        assert_int_equal(t->piece_after_end, 0);
        testdev_free(t);
    }
    free(s);
}

/* A failing STOP_COPY -> STOP keeps the session: the stream goes on. */
static void test_stop_fails_session_goes_on(void **state)
{
    struct testdev *t = pieces_new("src", 100);
    uint8_t *s = malloc(BUF);
    size_t len = 0;
    ssize_t n;
    (void)state;

    assert_non_null(s);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP_COPY, NULL), 0);
    len = (size_t)vfm_device_data_read(t->dev, s, 300);
    t->fail_cb = TCB_SC_STOP;
    t->fail_err = -EAGAIN;
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP, NULL), -EAGAIN);
    t->fail_cb = -1;
    while ((n = vfm_device_data_read(t->dev, s + len, 999)) > 0)
        len += (size_t)n;
    assert_int_equal(n, 0);
    assert_int_equal(load_into_new(t, s, len), 0);
    assert_int_equal(vfm_device_set_state(t->dev, VFM_STATE_STOP, NULL), 0);
    assert_int_equal(t->piece_after_end, 0);
    free(s);
    testdev_free(t);
}

/* A version 4 config must give both callbacks or neither. */
static int nop(struct vfm_device *d, void *p)
{
    (void)d;
    (void)p;
    return 0;
}
static int nop_save(struct vfm_device *d, void *p, struct vfm_buf *b)
{
    (void)d;
    (void)p;
    (void)b;
    return 0;
}
static int nop_load(struct vfm_device *d, void *p, const void *x, size_t n)
{
    (void)d;
    (void)p;
    (void)x;
    (void)n;
    return 0;
}
static int nop_begin(struct vfm_device *d, void *p, uint64_t *len)
{
    (void)d;
    (void)p;
    *len = 0;
    return 0;
}

static void test_config(void **state)
{
    struct vfm_mig_ops ops = {.save = nop_save,
                              .load = nop_load,
                              .running_to_stop = nop,
                              .stop_to_running = nop,
                              .reset = nop,
                              .save_begin = nop_begin};
    struct vfm_device_config cfg = {.version = 4, .name = "half", .mig = &ops};
    struct vfm_device *dev = NULL;
    (void)state;

    assert_int_equal(vfm_device_new(&cfg, &dev), -EINVAL);
    /* an older config never reads them */
    cfg.version = 3;
    assert_int_equal(vfm_device_new(&cfg, &dev), 0);
    vfm_device_free(dev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_calls),
        cmocka_unit_test(test_stream_size),
        cmocka_unit_test(test_gathered),
        cmocka_unit_test(test_contiguous),
        cmocka_unit_test(test_data_fd),
        cmocka_unit_test(test_piece_fails_calls),
        cmocka_unit_test(test_piece_fails_fd),
        cmocka_unit_test(test_piece_breaks_rules),
        cmocka_unit_test(test_begin_refusals),
        cmocka_unit_test(test_after_precopy),
        cmocka_unit_test(test_session_ends_mid_stream),
        cmocka_unit_test(test_stop_fails_session_goes_on),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
