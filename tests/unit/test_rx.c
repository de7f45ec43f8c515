/* SPDX-License-Identifier: MIT */
/*
 * The vfio-user server's buffered reader (src/vfio_user/sock.h): messages
 * that arrive together, split byte by byte, with bodies larger than its
 * buffer, with file descriptors on some of them (each set must reach the
 * message it was sent with), too many descriptors, and ends of file at
 * every place. Real sockets (socketpair), real descriptors.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "vfio_user/sock.h"

/* A message: header (cmd = @cmd, msg_size = 16 + @len) and @len bytes
 * counting up from @seed. */
static size_t make_msg(uint8_t *out, uint16_t cmd, size_t len, uint8_t seed)
{
    struct vfm_vu_hdr h = {.msg_id = cmd, .cmd = cmd, .msg_size = (uint32_t)(sizeof(h) + len)};

    memcpy(out, &h, sizeof(h));
    for (size_t i = 0; i < len; i++)
        out[sizeof(h) + i] = (uint8_t)(seed + i);
    return sizeof(h) + len;
}

static void send_fds(int sock, const void *buf, size_t len, const int *fds, unsigned nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * 16)];
        struct cmsghdr align;
    } ctl;
    struct iovec v = {(void *)buf, len};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};

    if (nfds) {
        struct cmsghdr *c;
        memset(&ctl, 0, sizeof(ctl));
        m.msg_control = ctl.buf;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    assert_int_equal(sendmsg(sock, &m, MSG_NOSIGNAL), (ssize_t)len);
}

/* Reads the next message and checks it is (@cmd, @len bytes from @seed),
 * with @nfds descriptors (closed here). */
static void expect_msg(struct vfm_vu_rx *rx, uint16_t cmd, size_t len, uint8_t seed,
                       unsigned want_fds, ino_t ino)
{
    struct vfm_vu_hdr h;
    int fds[VFM_VU_MAX_FDS];
    unsigned nfds;
    bool ctrunc;
    uint8_t *body = malloc(len + 1);

    assert_non_null(body);
    assert_int_equal(vfm_vu_rx_hdr(rx, &h, fds, &nfds, &ctrunc), 0);
    assert_int_equal(h.cmd, cmd);
    assert_int_equal(h.msg_size, sizeof(h) + len);
    assert_int_equal(nfds, want_fds);
    assert_false(ctrunc);
    for (unsigned i = 0; i < nfds; i++) {
        struct stat st;
        assert_int_equal(fstat(fds[i], &st), 0);
        assert_int_equal(st.st_ino, ino); /* the descriptor that was sent */
        close(fds[i]);
    }
    assert_int_equal(vfm_vu_rx_body(rx, &(struct iovec){body, len}, 1), 0);
    for (size_t i = 0; i < len; i++)
        if (body[i] != (uint8_t)(seed + i))
            fail_msg("message %u: byte %zu is %u, not %u", cmd, i, body[i], (uint8_t)(seed + i));
    free(body);
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;

    assert_non_null(d);
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Three messages in one write: one read takes them all, and each comes
 * out whole, in order. */
static void test_pipelined(void **state)
{
    uint8_t buf[256];
    size_t n = 0;
    struct vfm_vu_rx rx;
    int sv[2];
    (void)state;

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    n += make_msg(buf + n, 1, 24, 10);
    n += make_msg(buf + n, 2, 0, 0);
    n += make_msg(buf + n, 3, 100, 77);
    assert_int_equal(write(sv[1], buf, n), (ssize_t)n);
    vfm_vu_rx_init(&rx, sv[0], false);
    expect_msg(&rx, 1, 24, 10, 0, 0);
    assert_int_equal(rx.end - rx.start, n - 40); /* the others are buffered */
    expect_msg(&rx, 2, 0, 0, 0, 0);
    expect_msg(&rx, 3, 100, 77, 0, 0);
    assert_int_equal(rx.end, rx.start);
    close(sv[1]);
    {
        struct vfm_vu_hdr h;
        int fds[VFM_VU_MAX_FDS];
        unsigned nfds;
        bool ctrunc;
        assert_int_equal(vfm_vu_rx_hdr(&rx, &h, fds, &nfds, &ctrunc), -ENOTCONN);
    }
    vfm_vu_rx_reset(&rx);
    close(sv[0]);
}

struct dribble {
    int sock;
    const uint8_t *buf;
    size_t len;
};

static void *dribble_main(void *arg)
{
    struct dribble *d = arg;
    for (size_t i = 0; i < d->len; i++) {
        if (write(d->sock, d->buf + i, 1) != 1)
            break;
        if (i % 7 == 0)
            usleep(200);
    }
    return NULL;
}

/* Messages sent a byte at a time (a reader that wakes often sees a header
 * in pieces): reassembled. */
static void test_byte_by_byte(void **state)
{
    static uint8_t buf[8192];
    size_t n = 0;
    struct vfm_vu_rx rx;
    struct dribble d;
    pthread_t t;
    int sv[2];
    (void)state;

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    n += make_msg(buf + n, 1, 24, 1);
    n += make_msg(buf + n, 2, 300, 2);
    n += make_msg(buf + n, 3, 5000, 3); /* more than the buffer holds */
    n += make_msg(buf + n, 4, 8, 4);
    d = (struct dribble){sv[1], buf, n};
    assert_int_equal(pthread_create(&t, NULL, dribble_main, &d), 0);
    vfm_vu_rx_init(&rx, sv[0], false);
    expect_msg(&rx, 1, 24, 1, 0, 0);
    expect_msg(&rx, 2, 300, 2, 0, 0);
    expect_msg(&rx, 3, 5000, 3, 0, 0);
    expect_msg(&rx, 4, 8, 4, 0, 0);
    pthread_join(t, NULL);
    vfm_vu_rx_reset(&rx);
    close(sv[0]);
    close(sv[1]);
}

/* A body larger than the buffer, between small messages sent with it:
 * part comes from the buffer, the rest straight from the socket, and the
 * next message is intact. Then a body dropped with vfm_vu_rx_discard(). */
static void test_large_body_and_discard(void **state)
{
    size_t big = 200000;
    uint8_t *buf = malloc(big + 256);
    size_t n = 0;
    struct vfm_vu_rx rx;
    struct vfm_vu_hdr h;
    int fds[VFM_VU_MAX_FDS];
    unsigned nfds;
    bool ctrunc;
    int sv[2];
    (void)state;

    assert_non_null(buf);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    n += make_msg(buf + n, 1, 8, 9);
    n += make_msg(buf + n, 2, big - 100, 5);
    n += make_msg(buf + n, 3, 16, 6);
    /* a writer process: the socket buffer holds less than this */
    {
        pid_t pid = fork();
        if (pid == 0) {
            size_t off = 0;
            while (off < n) {
                ssize_t w = write(sv[1], buf + off, n - off);
                if (w <= 0)
                    _exit(1);
                off += (size_t)w;
            }
            _exit(0);
        }
        vfm_vu_rx_init(&rx, sv[0], false);
        expect_msg(&rx, 1, 8, 9, 0, 0);
        expect_msg(&rx, 2, big - 100, 5, 0, 0);
        expect_msg(&rx, 3, 16, 6, 0, 0);
        assert_int_equal(waitpid(pid, NULL, 0), pid);
    }
    /* discard: a body of 10000 dropped, the next message whole */
    n = make_msg(buf, 4, 10000, 0);
    n += make_msg(buf + n, 5, 3, 50);
    {
        pid_t pid = fork();
        if (pid == 0)
            _exit(write(sv[1], buf, n) == (ssize_t)n ? 0 : 1);
        assert_int_equal(vfm_vu_rx_hdr(&rx, &h, fds, &nfds, &ctrunc), 0);
        assert_int_equal(h.cmd, 4);
        assert_int_equal(vfm_vu_rx_discard(&rx, 10000), 0);
        expect_msg(&rx, 5, 3, 50, 0, 0);
        assert_int_equal(waitpid(pid, NULL, 0), pid);
    }
    vfm_vu_rx_reset(&rx);
    close(sv[0]);
    close(sv[1]);
    free(buf);
}

/* Descriptors: message A without, B with two (sent by their own
 * sendmsg()), C without, all sent before the reader reads: one read can
 * take A and B's bytes and B's fds; they reach B, not A, and C gets none.
 * Then a message whose header went alone and whose body carried the fds:
 * they are that message's. */
static void test_fds_to_their_message(void **state)
{
    uint8_t buf[512];
    struct vfm_vu_rx rx;
    struct stat st;
    int sv[2], efd = eventfd(0, EFD_CLOEXEC), two[2];
    size_t n;
    (void)state;

    assert_true(efd >= 0);
    assert_int_equal(fstat(efd, &st), 0);
    two[0] = two[1] = efd;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    n = make_msg(buf, 1, 24, 1);
    send_fds(sv[1], buf, n, NULL, 0);
    n = make_msg(buf, 2, 32, 2);
    send_fds(sv[1], buf, n, two, 2);
    n = make_msg(buf, 3, 8, 3);
    send_fds(sv[1], buf, n, NULL, 0);
    vfm_vu_rx_init(&rx, sv[0], false);
    expect_msg(&rx, 1, 24, 1, 0, 0);
    expect_msg(&rx, 2, 32, 2, 2, st.st_ino);
    expect_msg(&rx, 3, 8, 3, 0, 0);

    /* header alone, then the body with an fd */
    n = make_msg(buf, 4, 40, 4);
    send_fds(sv[1], buf, 16, NULL, 0);
    send_fds(sv[1], buf + 16, n - 16, &efd, 1);
    n = make_msg(buf, 5, 0, 0);
    send_fds(sv[1], buf, n, NULL, 0);
    expect_msg(&rx, 4, 40, 4, 1, st.st_ino);
    expect_msg(&rx, 5, 0, 0, 0, 0);
    vfm_vu_rx_reset(&rx);
    close(sv[0]);
    close(sv[1]);
    close(efd);
}

/* More descriptors than a message may carry: the ones kept are given, the
 * message says some were lost, and nothing leaks. */
static void test_too_many_fds(void **state)
{
    uint8_t buf[64];
    struct vfm_vu_rx rx;
    struct vfm_vu_hdr h;
    int sv[2], efd = eventfd(0, EFD_CLOEXEC), many[12], fds[VFM_VU_MAX_FDS];
    unsigned nfds;
    bool ctrunc;
    int before;
    size_t n;
    (void)state;

    assert_true(efd >= 0);
    for (int i = 0; i < 12; i++)
        many[i] = efd;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    before = open_fds();
    n = make_msg(buf, 1, 8, 0);
    send_fds(sv[1], buf, n, many, 12);
    vfm_vu_rx_init(&rx, sv[0], false);
    assert_int_equal(vfm_vu_rx_hdr(&rx, &h, fds, &nfds, &ctrunc), 0);
    assert_true(ctrunc);
    assert_true(nfds <= VFM_VU_MAX_FDS);
    vfm_vu_close_fds(fds, nfds);
    assert_int_equal(vfm_vu_rx_discard(&rx, 8), 0);
    assert_int_equal(open_fds(), before);
    vfm_vu_rx_reset(&rx);
    close(sv[0]);
    close(sv[1]);
    close(efd);
}

/* Fds a read brought for a message not yet reached are closed when the
 * connection is dropped. */
static void test_reset_closes_pending(void **state)
{
    uint8_t buf[128];
    struct vfm_vu_rx rx;
    int sv[2], efd = eventfd(0, EFD_CLOEXEC);
    int before;
    size_t n;
    (void)state;

    assert_true(efd >= 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    before = open_fds();
    n = make_msg(buf, 1, 8, 0);
    send_fds(sv[1], buf, n, NULL, 0);
    n = make_msg(buf, 2, 8, 0);
    send_fds(sv[1], buf, n, &efd, 1);
    vfm_vu_rx_init(&rx, sv[0], false);
    expect_msg(&rx, 1, 8, 0, 0, 0);
    assert_true(rx.has_fds); /* message 2's, pending */
    assert_int_equal(open_fds(), before + 1);
    vfm_vu_rx_reset(&rx);
    assert_int_equal(open_fds(), before);
    close(sv[0]);
    close(sv[1]);
    close(efd);
}

/* Ends of file: between messages (-ENOTCONN), inside a header and inside
 * a body (-EPROTO). */
static void test_eof(void **state)
{
    uint8_t buf[128];
    struct vfm_vu_rx rx;
    struct vfm_vu_hdr h;
    int fds[VFM_VU_MAX_FDS];
    unsigned nfds;
    bool ctrunc;
    (void)state;

    for (int where = 0; where < 3; where++) {
        int sv[2];
        size_t n = make_msg(buf, 1, 40, 0);
        uint8_t body[40];

        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        n = where == 0 ? 0 : where == 1 ? 9 : n - 3;
        if (n)
            assert_int_equal(write(sv[1], buf, n), (ssize_t)n);
        close(sv[1]);
        vfm_vu_rx_init(&rx, sv[0], false);
        if (where < 2) {
            assert_int_equal(vfm_vu_rx_hdr(&rx, &h, fds, &nfds, &ctrunc),
                             where == 0 ? -ENOTCONN : -EPROTO);
        } else {
            assert_int_equal(vfm_vu_rx_hdr(&rx, &h, fds, &nfds, &ctrunc), 0);
            assert_int_equal(vfm_vu_rx_body(&rx, &(struct iovec){body, sizeof(body)}, 1), -EPROTO);
        }
        vfm_vu_rx_reset(&rx);
        close(sv[0]);
    }
}

/* A whole-message reader grows its buffer as a body comes, not when a
 * header claims one: a header of 1 MiB with 100 bytes after it leaves the
 * buffer small; the rest, sent, is taken whole. */
static void test_whole_grows_as_bytes_come(void **state)
{
    static uint8_t msg[(1u << 20) + 16];
    struct vfm_vu_rx rx;
    struct vfm_vu_hdr h;
    int sv[2], fds[VFM_VU_MAX_FDS];
    unsigned nfds;
    bool ctrunc;
    size_t len = make_msg(msg, 7, 1u << 20, 3), at = 0;
    const void *body;

    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    vfm_vu_rx_init(&rx, sv[0], true);
    assert_int_equal(send(sv[1], msg, 16 + 100, 0), 16 + 100);
    assert_int_equal(vfm_vu_rx_ready(&rx, len), 0);
    assert_true(rx.cap <= 2 * VFM_VU_RX_CAP);
    while (at < len - 116) {
        ssize_t w = send(sv[1], msg + 116 + at, len - 116 - at, MSG_DONTWAIT);
        if (w > 0)
            at += (size_t)w;
        vfm_vu_rx_readable(&rx);
        if (vfm_vu_rx_ready(&rx, len) == 1)
            break;
    }
    vfm_vu_rx_readable(&rx);
    while (vfm_vu_rx_ready(&rx, len) == 0)
        vfm_vu_rx_readable(&rx);
    assert_int_equal(vfm_vu_rx_hdr(&rx, &h, fds, &nfds, &ctrunc), 0);
    assert_int_equal(h.msg_size, len);
    body = vfm_vu_rx_take(&rx, len - 16);
    assert_non_null(body);
    assert_memory_equal(body, msg + 16, len - 16);
    vfm_vu_rx_reset(&rx);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_large_body_and_discard),
        cmocka_unit_test(test_fds_to_their_message),
        cmocka_unit_test(test_too_many_fds),
        cmocka_unit_test(test_reset_closes_pending),
        cmocka_unit_test(test_eof),
        cmocka_unit_test(test_whole_grows_as_bytes_come),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
