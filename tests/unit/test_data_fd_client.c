/* SPDX-License-Identifier: MIT */
/*
 * The vfio-user client's side of the data fd extension, against a server
 * written here that misbehaves on purpose (a thread on the other end of a
 * socket pair): an fd that is not a stream socket, two fds, a reply that
 * does not say data_fd 0, an fd on a SET that opens no session, an fd the
 * client did not ask for — each a protocol error (EPROTO) with every fd
 * closed; a good fd whose server stops feeding it (the read fails with
 * ETIMEDOUT in the client's timeout), and one that ends early (ECONNRESET
 * seen as the error it is, or a clean end of file seen as the end).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <vfiomig/endpoint.h>
#include <vfiomig/vfio_user.h>

#include "vfio_user/sock.h"

enum misdeed {
    GOOD,     /* a stream socket, data_fd 0 */
    PIPE,     /* a pipe, not a socket */
    TWO,      /* two fds */
    NOT_ZERO, /* the reply says data_fd -1 but carries one */
    DGRAM,    /* a datagram socket */
};

struct fake {
    int sock;
    bool offer;         /* VERSION answers data_fd */
    enum misdeed how;   /* what the SET -> STOP_COPY reply carries */
    bool fd_on_running; /* an fd with the SET -> RUNNING reply too */
    int keep[2];        /* the fds it sent (its own ends), to feed or close */
    const char *feed;   /* bytes written into a GOOD fd, then closed */
};

static void reply(int sock, const struct vfm_vu_hdr *req, const void *p, size_t len, const int *fds,
                  unsigned nfds)
{
    struct vfm_vu_hdr h = {.msg_id = req->msg_id,
                           .cmd = req->cmd,
                           .msg_size = (uint32_t)(sizeof(h) + len),
                           .flags = VFM_VU_TYPE_REPLY};
    struct iovec v = {(void *)p, len};
    vfm_vu_send(sock, &h, &v, len ? 1 : 0, fds, nfds);
}

/* A session fd as @how says; our end(s) in f->keep. Return: fds to send. */
static unsigned make_fd(struct fake *f, int out[2])
{
    int sv[2];

    switch (f->how) {
    case PIPE:
        assert_int_equal(pipe(sv), 0);
        out[0] = sv[0];
        f->keep[0] = sv[1];
        return 1;
    case DGRAM:
        assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
        out[0] = sv[0];
        f->keep[0] = sv[1];
        return 1;
    case TWO:
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        out[0] = sv[0];
        out[1] = dup(sv[0]);
        f->keep[0] = sv[1];
        return 2;
    default:
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        out[0] = sv[0];
        f->keep[0] = sv[1];
        return 1;
    }
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    uint8_t body[8192];

    for (;;) {
        struct vfm_vu_hdr h;
        int fds[8];
        unsigned nfds = 0;
        bool ctrunc = false;
        size_t extra = 0, len;

        if (vfm_vu_recv_hdr_more(f->sock, &h, NULL, 0, &extra, fds, &nfds, &ctrunc))
            return NULL;
        vfm_vu_close_fds(fds, nfds);
        len = h.msg_size - sizeof(h);
        if (len > sizeof(body) || vfm_vu_recv_all(f->sock, body, len))
            return NULL;
        if (h.cmd == VFM_VU_VERSION) {
            char v[256];
            struct vfm_vu_version ver = {VFM_VU_MAJOR, VFM_VU_MINOR};
            const char *js = f->offer ? "{\"capabilities\":{\"vfiomig\":{\"data_fd\":true}}}"
                                      : "{\"capabilities\":{}}";
            memcpy(v, &ver, sizeof(ver));
            strcpy(v + sizeof(ver), js);
            reply(f->sock, &h, v, sizeof(ver) + strlen(js) + 1, NULL, 0);
        } else if (h.cmd == VFM_VU_DEVICE_GET_INFO) {
            struct vfm_vu_device_info i = {.argsz = sizeof(i), .num_regions = 0};
            reply(f->sock, &h, &i, sizeof(i), NULL, 0);
        } else if (h.cmd == VFM_VU_DEVICE_FEATURE) {
            struct {
                struct vfm_vu_feature f;
                struct vfm_vu_mig_state ms;
            } q;
            int out[2];
            unsigned n = 0;
            memcpy(&q, body, sizeof(q));
            if (q.ms.device_state == VFM_STATE_STOP_COPY ||
                (q.ms.device_state == VFM_STATE_RUNNING && f->fd_on_running)) {
                n = make_fd(f, out);
                q.ms.data_fd = f->how == NOT_ZERO ? -1 : 0;
            }
            reply(f->sock, &h, &q, sizeof(q), n ? out : NULL, n);
            for (unsigned k = 0; k < n; k++)
                close(out[k]);
            if (n && f->feed) {
                ssize_t w = write(f->keep[0], f->feed, strlen(f->feed));
                (void)w;
                close(f->keep[0]);
                f->keep[0] = -1;
            }
        } else {
            struct vfm_vu_hdr e = {.msg_id = h.msg_id,
                                   .cmd = h.cmd,
                                   .msg_size = sizeof(e),
                                   .flags = VFM_VU_TYPE_REPLY | VFM_VU_ERROR,
                                   .error = ENOSYS};
            vfm_vu_send(f->sock, &e, NULL, 0, NULL, 0);
        }
    }
}

/* Open fds in this process (to see that none leaks). */
static int open_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            n++;
    return n;
}

struct run {
    struct fake f;
    pthread_t t;
    struct vfm_vu_client *c;
    struct vfm_endpoint *ep;
};

static void start(struct run *r, bool offer, enum misdeed how)
{
    int sv[2];

    memset(r, 0, sizeof(*r));
    r->f.offer = offer;
    r->f.how = how;
    r->f.keep[0] = r->f.keep[1] = -1;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    r->f.sock = sv[1];
    assert_int_equal(pthread_create(&r->t, NULL, fake_main, &r->f), 0);
    assert_int_equal(vfm_vu_client_adopt(sv[0], "fake", 0, 300, &r->c), 0);
    r->ep = vfm_vu_client_endpoint(r->c);
}

static void stop(struct run *r)
{
    vfm_vu_client_free(r->c);
    pthread_join(r->t, NULL);
    close(r->f.sock);
    for (int k = 0; k < 2; k++)
        if (r->f.keep[k] >= 0)
            close(r->f.keep[k]);
}

static void test_bad_fds_refused(void **state)
{
    static const enum misdeed bad[] = {PIPE, TWO, NOT_ZERO, DGRAM};
    int before = open_fds();
    (void)state;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct run r;
        start(&r, true, bad[i]);
        assert_int_equal(vfm_ep_set_state(r.ep, VFM_STATE_STOP_COPY), -EPROTO);
        stop(&r);
    }
    /* an fd with a SET that opens no session; an fd not asked for (the
     * server did not offer the extension) */
    {
        struct run r;
        start(&r, true, GOOD);
        r.f.fd_on_running = true;
        assert_int_equal(vfm_ep_set_state(r.ep, VFM_STATE_RUNNING), -EPROTO);
        stop(&r);
        start(&r, false, GOOD);
        assert_int_equal(vfm_ep_set_state(r.ep, VFM_STATE_STOP_COPY), -EPROTO);
        stop(&r);
    }
    assert_int_equal(open_fds(), before); /* every fd received was closed */
}

/* A good fd: its bytes, then its end; one that is fed nothing: the read
 * fails within the client's timeout, not for ever. */
static void test_good_fd(void **state)
{
    struct run r;
    char buf[64];
    int before = open_fds();
    (void)state;

    start(&r, true, GOOD);
    r.f.feed = "state bytes";
    assert_int_equal(vfm_ep_set_state(r.ep, VFM_STATE_STOP_COPY), 0);
    assert_int_equal(vfm_ep_read(r.ep, buf, sizeof(buf)), 11);
    assert_memory_equal(buf, "state bytes", 11);
    assert_int_equal(vfm_ep_read(r.ep, buf, sizeof(buf)), 0);
    stop(&r);

    start(&r, true, GOOD);
    assert_int_equal(vfm_ep_set_state(r.ep, VFM_STATE_STOP_COPY), 0);
    assert_int_equal(vfm_ep_read(r.ep, buf, sizeof(buf)), -ETIMEDOUT);
    stop(&r);
    assert_int_equal(open_fds(), before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_fds_refused),
        cmocka_unit_test(test_good_fd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
