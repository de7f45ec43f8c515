/* SPDX-License-Identifier: MIT */
/*
 * The transport seam (include/vfiomig/vfio_user.h): a server and a client
 * that adopt the two ends of a socketpair() and are driven by the caller's
 * loop — one thread, one poll(), no thread of the library's — through
 * negotiation, state changes, pipelined requests and transfers larger than
 * the socket holds (both sides queue what it does not take). Then what a
 * loop must survive: a message that arrives in pieces, one too large to
 * take, a peer that vanishes, a server that never answers, a reply to no
 * request; and a blocking call on an async client, against vfm_server_run()
 * on an adopted socket.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "threads.h"

#include <vfiomig/vfio_user.h>

#include "testdev.h"

#define BAR_SIZE (2u << 20)

struct rig {
    struct testdev *td;
    struct vfm_dma *dma;
    struct vfm_server *srv;
    struct vfm_vu_client *cl;
    uint8_t *bar;
    int peer; /* the client's end, when the test plays the client itself */
};

static int threads(void)
{
    int n = proc_threads();
    assert_true(n > 0);
    return n;
}

/* A server on one end of a socketpair; the other end is r->peer. */
static void server_up(struct rig *r)
{
    struct vfm_server_config cfg = {0};
    int sv[2];

    memset(r, 0, sizeof(*r));
    r->td = testdev_new("loopdev", true, 7);
    assert_non_null(r->td);
    assert_int_equal(vfm_dma_new(16, &r->dma), 0);
    r->bar = calloc(1, BAR_SIZE);
    assert_non_null(r->bar);
    cfg.dev = r->td->dev;
    cfg.dma = r->dma;
    cfg.nregions = 1;
    cfg.regions[0] = (struct vfm_server_region){
        .size = BAR_SIZE,
        .flags = VFM_VU_REGION_READ_FLAG | VFM_VU_REGION_WRITE_FLAG,
        .fd = -1,
        .mem = r->bar,
    };
    assert_int_equal(vfm_server_new(&cfg, &r->srv), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(vfm_server_adopt(r->srv, sv[0]), 0);
    r->peer = sv[1];
}

static void rig_down(struct rig *r)
{
    vfm_vu_client_free(r->cl);
    if (r->peer >= 0)
        close(r->peer);
    vfm_server_free(r->srv);
    vfm_dma_free(r->dma);
    testdev_free(r->td);
    free(r->bar);
}

/* One turn of the caller's loop: wait for either side, then let each
 * handle what is ready. Return: the client's dispatch status. */
static int turn(struct rig *r, int max_ms)
{
    struct pollfd p[2] = {{.fd = vfm_server_poll_fd(r->srv), .events = POLLIN}};
    int t;

    p[1].fd = vfm_vu_client_poll(r->cl, &p[1].events, &t);
    if (t < 0 || t > max_ms)
        t = max_ms;
    assert_true(poll(p, p[1].fd >= 0 ? 2 : 1, t) >= 0);
    assert_int_equal(vfm_server_dispatch(r->srv), 0);
    return vfm_vu_client_dispatch(r->cl);
}

struct result {
    bool done;
    int status;
    size_t len;
    uint8_t *buf; /* the reply's payload (malloc) */
    int order;
};

static int completions;

static void on_done(void *arg, int status, const void *reply, size_t len, int *fds, unsigned nfds)
{
    struct result *res = arg;

    (void)fds;
    (void)nfds;
    res->done = true;
    res->status = status;
    res->len = len;
    res->order = completions++;
    if (len) {
        res->buf = malloc(len);
        memcpy(res->buf, reply, len);
    }
}

/* Turns the loop until @res is done (at most 2000 turns). */
static void wait_done(struct rig *r, struct result *res)
{
    for (int i = 0; i < 2000 && !res->done; i++)
        assert_int_equal(turn(r, 1000), 0);
    assert_true(res->done);
}

static void submit_state(struct rig *r, uint32_t flags, uint32_t state, struct result *res)
{
    struct {
        struct vfm_vu_feature f;
        struct vfm_vu_mig_state s;
    } __attribute__((packed)) q = {{sizeof(q), VFM_FEATURE_MIG_DEVICE_STATE | flags}, {state, -1}};

    memset(res, 0, sizeof(*res));
    assert_int_equal(
        vfm_vu_client_submit(r->cl, VFM_VU_DEVICE_FEATURE, &q, sizeof(q), NULL, 0, on_done, res),
        0);
}

static uint32_t reply_state(const struct result *res)
{
    struct vfm_vu_mig_state s;

    assert_int_equal(res->status, 0);
    assert_true(res->len >= sizeof(struct vfm_vu_feature) + sizeof(s));
    memcpy(&s, res->buf + sizeof(struct vfm_vu_feature), sizeof(s));
    return s.device_state;
}

static void client_up(struct rig *r)
{
    int turns = 0;

    assert_int_equal(vfm_vu_client_adopt(r->peer, "loop", VFM_VU_CLIENT_ASYNC, 5000, &r->cl), 0);
    r->peer = -1;
    assert_int_equal(vfm_vu_client_ready(r->cl), 0); /* nothing answered yet */
    while (vfm_vu_client_ready(r->cl) == 0 && turns++ < 100)
        assert_int_equal(turn(r, 1000), 0);
    assert_int_equal(vfm_vu_client_ready(r->cl), 1);
    assert_int_equal(vfm_vu_client_info(r->cl)->num_regions, 1);
}

static void one_thread_loop(void **state)
{
    struct rig r;
    struct result res[3];
    int n0 = threads();
    short ev;
    int t;

    (void)state;
    server_up(&r);
    client_up(&r);

    /* state changes, pipelined: answered in the order sent */
    completions = 0;
    submit_state(&r, VFM_FEATURE_SET, VFM_STATE_RUNNING_P2P, &res[0]);
    submit_state(&r, VFM_FEATURE_SET, VFM_STATE_STOP, &res[1]);
    submit_state(&r, VFM_FEATURE_GET, 0, &res[2]);
    wait_done(&r, &res[2]);
    assert_true(res[0].done && res[1].done);
    assert_int_equal(res[0].status, 0);
    assert_int_equal(res[1].status, 0);
    assert_int_equal(res[0].order, 0);
    assert_int_equal(res[1].order, 1);
    assert_int_equal(reply_state(&res[2]), VFM_STATE_STOP);
    assert_int_equal(vfm_device_get_state(r.td->dev), VFM_STATE_STOP);
    for (int i = 0; i < 3; i++)
        free(res[i].buf);

    /* an arc the table refuses: the device's errno comes back */
    submit_state(&r, VFM_FEATURE_SET, 99, &res[0]);
    wait_done(&r, &res[0]);
    assert_true(res[0].status < 0);
    free(res[0].buf);

    /* a write larger than the socket holds: the client queues the rest
     * and asks for POLLOUT; the server takes the message once whole */
    {
        size_t n = BAR_SIZE / 2;
        uint8_t *q = malloc(sizeof(struct vfm_vu_region_access) + n);
        struct vfm_vu_region_access a = {.offset = 4096, .region = 0, .count = (uint32_t)n};

        memcpy(q, &a, sizeof(a));
        for (size_t i = 0; i < n; i++)
            q[sizeof(a) + i] = (uint8_t)(i * 7 + 3);
        memset(&res[0], 0, sizeof(res[0]));
        assert_int_equal(vfm_vu_client_submit(r.cl, VFM_VU_REGION_WRITE, q, sizeof(a) + n, NULL, 0,
                                              on_done, &res[0]),
                         0);
        assert_true(vfm_vu_client_poll(r.cl, &ev, &t) >= 0);
        assert_true(ev & POLLOUT);
        assert_true(t >= 0 && t <= 5000);
        wait_done(&r, &res[0]);
        assert_int_equal(res[0].status, 0);
        assert_memory_equal(r.bar + 4096, q + sizeof(a), n);
        free(res[0].buf);

        /* and a read as large: the server queues its reply */
        memset(&res[0], 0, sizeof(res[0]));
        assert_int_equal(vfm_vu_client_submit(r.cl, VFM_VU_REGION_READ, &a, sizeof(a), NULL, 0,
                                              on_done, &res[0]),
                         0);
        wait_done(&r, &res[0]);
        assert_int_equal(res[0].status, 0);
        assert_int_equal(res[0].len, sizeof(a) + n);
        assert_memory_equal(res[0].buf + sizeof(a), q + sizeof(a), n);
        free(res[0].buf);
        free(q);
    }
    assert_true(vfm_vu_client_poll(r.cl, &ev, &t) >= 0);
    assert_false(ev & POLLOUT);
    assert_int_equal(t, -1);         /* nothing waiting */
    assert_int_equal(threads(), n0); /* the library started none */
    rig_down(&r);
}

/* The test plays the client on the raw socket: a message in pieces, one
 * too large, then the peer vanishes with the device stopped. */
static void server_pieces_and_vanish(void **state)
{
    struct rig r;
    struct vfm_vu_hdr h, rep;
    uint8_t msg[256];
    char caps[] = "{\"capabilities\":{\"max_data_xfer_size\":1048576}}";
    struct vfm_vu_version v = {VFM_VU_MAJOR, VFM_VU_MINOR};
    size_t len = sizeof(h) + sizeof(v) + sizeof(caps);

    (void)state;
    server_up(&r);
    h = (struct vfm_vu_hdr){.msg_id = 1, .cmd = VFM_VU_VERSION, .msg_size = (uint32_t)len};
    memcpy(msg, &h, sizeof(h));
    memcpy(msg + sizeof(h), &v, sizeof(v));
    memcpy(msg + sizeof(h) + sizeof(v), caps, sizeof(caps));
    /* byte by byte: nothing is answered until the message is whole, and
     * no call waits */
    for (size_t i = 0; i < len; i++) {
        assert_int_equal(write(r.peer, msg + i, 1), 1);
        assert_int_equal(vfm_server_dispatch(r.srv), 0);
        if (i + 1 < len)
            assert_int_equal(recv(r.peer, &rep, sizeof(rep), MSG_DONTWAIT), -1);
    }
    assert_int_equal(recv(r.peer, &rep, sizeof(rep), 0), (ssize_t)sizeof(rep));
    assert_int_equal(rep.msg_id, 1);
    assert_int_equal(rep.flags & VFM_VU_ERROR, 0);
    {
        uint8_t rest[4096];
        ssize_t k = recv(r.peer, rest, rep.msg_size - sizeof(rep), MSG_WAITALL);
        assert_int_equal(k, (ssize_t)(rep.msg_size - sizeof(rep)));
    }

    /* a header that claims more than the server takes: refused with
     * EMSGSIZE, its body skipped as it comes, and framing kept */
    {
        size_t big = (1u << 20) + 64 * 1024;
        uint8_t *b = calloc(1, big);
        size_t at = 0;
        h = (struct vfm_vu_hdr){
            .msg_id = 2, .cmd = VFM_VU_REGION_WRITE, .msg_size = (uint32_t)(sizeof(h) + big)};
        assert_int_equal(write(r.peer, &h, sizeof(h)), (ssize_t)sizeof(h));
        while (at < big) {
            ssize_t w = send(r.peer, b + at, big - at, MSG_DONTWAIT);
            if (w > 0)
                at += (size_t)w;
            assert_int_equal(vfm_server_dispatch(r.srv), 0);
        }
        free(b);
        assert_int_equal(vfm_server_dispatch(r.srv), 0);
        assert_int_equal(recv(r.peer, &rep, sizeof(rep), 0), (ssize_t)sizeof(rep));
        assert_int_equal(rep.msg_id, 2);
        assert_true(rep.flags & VFM_VU_ERROR);
        assert_int_equal(rep.error, EMSGSIZE);
    }
    /* the next message is read from the right place */
    {
        struct {
            struct vfm_vu_hdr h;
            struct vfm_vu_feature f;
            struct vfm_vu_mig_state s;
        } __attribute__((packed))
        q = {{3, VFM_VU_DEVICE_FEATURE, sizeof(q), 0, 0},
             {sizeof(q) - sizeof(q.h), VFM_FEATURE_MIG_DEVICE_STATE | VFM_FEATURE_SET},
             {VFM_STATE_STOP, -1}},
        a;
        assert_int_equal(write(r.peer, &q, sizeof(q)), (ssize_t)sizeof(q));
        assert_int_equal(vfm_server_dispatch(r.srv), 0);
        assert_int_equal(recv(r.peer, &a, sizeof(a), MSG_WAITALL), (ssize_t)sizeof(a));
        assert_int_equal(a.h.msg_id, 3);
        assert_int_equal(a.h.flags & VFM_VU_ERROR, 0);
        assert_int_equal(vfm_device_get_state(r.td->dev), VFM_STATE_STOP);
    }
    /* half a message, then the peer is gone: dropped, the device released
     * (the runtime's policy keeps STOP), and a new client may come */
    assert_int_equal(write(r.peer, &h, 8), 8);
    assert_int_equal(vfm_server_dispatch(r.srv), 0);
    close(r.peer);
    r.peer = -1;
    assert_int_equal(vfm_server_dispatch(r.srv), 0);
    assert_int_equal(vfm_device_get_state(r.td->dev), VFM_STATE_STOP);
    {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(vfm_server_adopt(r.srv, sv[0]), 0);
        /* one client at a time */
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, &sv[0]), 0);
        assert_int_equal(vfm_server_adopt(r.srv, sv[0]), -EBUSY);
        close(sv[1]);
    }
    /* not a stream socket */
    {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(vfm_server_adopt(r.srv, sv[0]), -ENOTSOCK);
        close(sv[1]);
    }
    /* a stop: dispatch says so, and keeps saying it */
    vfm_server_stop(r.srv);
    assert_int_equal(vfm_server_dispatch(r.srv), -ESHUTDOWN);
    assert_int_equal(vfm_server_dispatch(r.srv), -ESHUTDOWN);
    rig_down(&r);
}

/* The client against a server the test plays: no answer within the
 * deadline, an answer to no request, a server that closes. */
static void client_deadline_and_bad_replies(void **state)
{
    struct result res[2];
    struct vfm_vu_client *c;
    int sv[2], t;
    short ev;
    struct pollfd p;

    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(vfm_vu_client_adopt(sv[1], "mute", VFM_VU_CLIENT_ASYNC, 50, &c), 0);
    p.fd = vfm_vu_client_poll(c, &p.events, &t);
    assert_true(p.fd >= 0 && t >= 0 && t <= 50);
    memset(res, 0, sizeof(res));
    assert_int_equal(
        vfm_vu_client_submit(c, VFM_VU_DEVICE_RESET, NULL, 0, NULL, 0, on_done, &res[0]), 0);
    /* the loop waits as long as the client says, and the deadline ends
     * every request */
    for (int i = 0; i < 100 && vfm_vu_client_ready(c) == 0; i++) {
        p.fd = vfm_vu_client_poll(c, &p.events, &t);
        if (p.fd < 0)
            break;
        poll(&p, 1, t);
        vfm_vu_client_dispatch(c);
    }
    assert_int_equal(vfm_vu_client_ready(c), -ETIMEDOUT);
    assert_true(res[0].done);
    assert_int_equal(res[0].status, -ETIMEDOUT);
    assert_int_equal(vfm_vu_client_dispatch(c), -ETIMEDOUT);
    assert_int_equal(
        vfm_vu_client_submit(c, VFM_VU_DEVICE_RESET, NULL, 0, NULL, 0, on_done, &res[1]),
        -ETIMEDOUT);
    assert_int_equal(vfm_vu_client_poll(c, &ev, &t), -ENOTCONN);
    vfm_vu_client_free(c);
    close(sv[0]);

    /* a reply whose id answers nothing: a protocol error, not a match */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(vfm_vu_client_adopt(sv[1], "liar", VFM_VU_CLIENT_ASYNC, 5000, &c), 0);
    {
        struct vfm_vu_hdr h = {
            .msg_id = 77, .cmd = VFM_VU_VERSION, .msg_size = sizeof(h), .flags = VFM_VU_TYPE_REPLY};
        assert_int_equal(write(sv[0], &h, sizeof(h)), (ssize_t)sizeof(h));
    }
    assert_int_equal(vfm_vu_client_dispatch(c), -EPROTO);
    assert_int_equal(vfm_vu_client_ready(c), -EPROTO);
    vfm_vu_client_free(c);
    close(sv[0]);

    /* the server closes: everything waiting ends with ECONNRESET, and a
     * request freed before its answer ends with ECANCELED */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(vfm_vu_client_adopt(sv[1], "gone", VFM_VU_CLIENT_ASYNC, 5000, &c), 0);
    close(sv[0]);
    assert_int_equal(vfm_vu_client_dispatch(c), -ECONNRESET);
    assert_int_equal(vfm_vu_client_ready(c), -ECONNRESET);
    vfm_vu_client_free(c);

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(vfm_vu_client_adopt(sv[1], "freed", VFM_VU_CLIENT_ASYNC, 5000, &c), 0);
    memset(res, 0, sizeof(res));
    assert_int_equal(
        vfm_vu_client_submit(c, VFM_VU_DEVICE_RESET, NULL, 0, NULL, 0, on_done, &res[0]), 0);
    vfm_vu_client_free(c);
    assert_true(res[0].done);
    assert_int_equal(res[0].status, -ECANCELED);
    close(sv[0]);

    /* a blocking client takes no submissions */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(vfm_vu_client_adopt(-1, "x", 0, 0, &c), -EBADF);
    assert_int_equal(vfm_vu_client_adopt(sv[1], "x", 0x80, 0, &c), -EINVAL); /* closes sv[1] */
    close(sv[0]);
}

static void *serve_main(void *arg)
{
    return (void *)(intptr_t)vfm_server_run(arg);
}

/* vfm_server_run() on an adopted socket, and the blocking calls and the
 * endpoint of an async client (each a submit and a loop of its own). */
static void blocking_calls_on_async_client(void **state)
{
    struct rig r;
    pthread_t th;
    void *ret;
    uint8_t buf[8192], back[8192];
    struct vfm_endpoint *ep;
    uint32_t st;

    (void)state;
    server_up(&r);
    assert_int_equal(pthread_create(&th, NULL, serve_main, r.srv), 0);
    assert_int_equal(vfm_vu_client_adopt(r.peer, "async", VFM_VU_CLIENT_ASYNC, 5000, &r.cl), 0);
    r.peer = -1;
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i ^ 0x5a);
    /* the first blocking call drives the negotiation too */
    assert_int_equal(vfm_vu_client_region_write(r.cl, 0, 100, buf, sizeof(buf)), 0);
    assert_int_equal(vfm_vu_client_ready(r.cl), 1);
    assert_int_equal(vfm_vu_client_region_read(r.cl, 0, 100, back, sizeof(back)), 0);
    assert_memory_equal(buf, back, sizeof(buf));
    ep = vfm_vu_client_endpoint(r.cl);
    assert_int_equal(vfm_ep_set_state(ep, VFM_STATE_STOP), 0);
    assert_int_equal(vfm_ep_get_state(ep, &st), 0);
    assert_int_equal(st, VFM_STATE_STOP);
    assert_int_equal(vfm_vu_client_region_read(r.cl, 1, 0, back, 8), -EINVAL);
    vfm_server_stop(r.srv);
    assert_int_equal(pthread_join(th, &ret), 0);
    assert_int_equal((intptr_t)ret, 0);
    /* the server is gone: the client says so */
    assert_int_equal(vfm_ep_get_state(ep, &st), -ECONNRESET);
    rig_down(&r);
}

static void count_bytes(void *mem, uint64_t len, void *arg)
{
    const volatile uint8_t *b = mem;
    uint64_t sum = 0;
    for (uint64_t i = 0; i < len; i++)
        sum += b[i];
    *(uint64_t *)arg = sum;
}

/* The guarded accessors: what is mapped and allowed is read and written;
 * what is not mapped, has no memory or is not allowed is refused; a file
 * shrunk under a mapping fails the access with -EIO and the process goes
 * on; and a SIGBUS outside any guarded access still kills, as it would
 * without the runtime's handler. */
static void dma_guarded_access(void **state)
{
    struct vfm_dma *dma;
    long page = sysconf(_SC_PAGESIZE);
    uint8_t buf[64], back[64];
    uint64_t sum = 0;
    int mfd = memfd_create("guarded", MFD_CLOEXEC), st;
    pid_t pid;
    (void)state;

    assert_true(mfd >= 0);
    assert_int_equal(ftruncate(mfd, 2 * page), 0);
    assert_int_equal(vfm_dma_new(8, &dma), 0);
    assert_int_equal(vfm_dma_map(dma, 0x100000, 2 * (uint64_t)page, mfd, 0,
                                 VFM_VU_DMA_READ_FLAG | VFM_VU_DMA_WRITE_FLAG),
                     0);
    assert_int_equal(vfm_dma_map(dma, 0x200000, (uint64_t)page, mfd, 0, VFM_VU_DMA_READ_FLAG), 0);
    assert_int_equal(vfm_dma_map(dma, 0x300000, (uint64_t)page, -1, 0, VFM_VU_DMA_READ_FLAG), 0);
    memset(buf, 0x5a, sizeof(buf));
    assert_int_equal(vfm_dma_write(dma, 0x100000 + (uint64_t)page - 32, buf, sizeof(buf)), 0);
    assert_int_equal(vfm_dma_read(dma, 0x100000 + (uint64_t)page - 32, back, sizeof(back)), 0);
    assert_memory_equal(buf, back, sizeof(buf));
    assert_int_equal(vfm_dma_access(dma, 0x100000, 2 * (uint64_t)page, VFM_VU_DMA_READ_FLAG,
                                    count_bytes, &sum),
                     0);
    assert_int_equal(sum, 0x5a * 64);
    /* refusals */
    assert_int_equal(vfm_dma_read(dma, 0x100000 + 2 * (uint64_t)page - 8, back, 16), -EFAULT);
    assert_int_equal(vfm_dma_read(dma, 0x50000, back, 8), -EFAULT);
    /* a range without memory: DMA messages, and no server serves a client */
    assert_int_equal(vfm_dma_read(dma, 0x300000, back, 8), -ENOTCONN);
    assert_int_equal(vfm_dma_access(dma, 0x300000, 8, VFM_VU_DMA_READ_FLAG, count_bytes, &sum),
                     -EFAULT);
    assert_int_equal(vfm_dma_write(dma, 0x300000, buf, 8), -EACCES); /* read-only */
    assert_int_equal(vfm_dma_write(dma, 0x200000, buf, 8), -EACCES);
    assert_int_equal(vfm_dma_access(dma, 0x100000, 8, VFM_VU_DMA_READ_FLAG, NULL, NULL), -EINVAL);
    /* the client shrinks its file to one page: the second page is gone */
    assert_int_equal(ftruncate(mfd, page), 0);
    assert_int_equal(vfm_dma_read(dma, 0x100000 + (uint64_t)page, back, 8), -EIO);
    assert_int_equal(vfm_dma_write(dma, 0x100000 + (uint64_t)page, buf, 8), -EIO);
    assert_int_equal(vfm_dma_access(dma, 0x100000, 2 * (uint64_t)page, VFM_VU_DMA_READ_FLAG,
                                    count_bytes, &sum),
                     -EIO);
    /* the first page is still there, and a SIGBUS does not stay blocked */
    assert_int_equal(vfm_dma_read(dma, 0x100000 + (uint64_t)page - 32, back, 32), 0);
    assert_memory_equal(buf, back, 32);
    assert_int_equal(vfm_dma_read(dma, 0x100000 + (uint64_t)page, back, 8), -EIO);
    /* unguarded, the same touch is the SIGBUS it always was */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* cmocka catches SIGBUS in a test; the child restores the default
         * and has the handler installed over it, as in a device process */
        struct vfm_dma *again;
        volatile uint8_t *p;
        signal(SIGBUS, SIG_DFL);
        if (vfm_dma_new(1, &again))
            _exit(3);
        p = vfm_dma_get(dma, 0x100000, 2 * (uint64_t)page, VFM_VU_DMA_READ_FLAG);
        if (!p)
            _exit(2);
        (void)p[page];
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFSIGNALED(st))
        fail_msg("the child exited with %d", WEXITSTATUS(st));
    assert_int_equal(WTERMSIG(st), SIGBUS);
    vfm_dma_free(dma);
    close(mfd);
}

/* Interrupts and sparse mmap (server config version 2): GET_INFO counts the
 * interrupt indexes, GET_IRQ_INFO and SET_IRQS reach the device's
 * callbacks with the fds sent (checked first: one DATA_ and one ACTION_
 * flag, inside the index's count, as many fds as vectors), and REGION_INFO
 * carries the sparse-mmap capability when the client's buffer holds it,
 * else the size it needs. */
struct irq_seen {
    int calls;
    struct vfm_vu_irq_set set;
    unsigned nfds;
    size_t len;
    uint8_t data[8];
    int kept; /* a dup of the first fd */
};

static int irq_info_cb(void *priv, uint32_t index, struct vfm_vu_irq_info *info)
{
    (void)priv;
    info->flags = VFM_VU_IRQ_INFO_EVENTFD | (index ? VFM_VU_IRQ_INFO_NORESIZE : VFM_VU_IRQ_INFO_MASKABLE);
    info->count = index ? 4 : 1;
    return 0;
}

static int set_irqs_cb(void *priv, const struct vfm_vu_irq_set *set, const void *data, size_t len,
                       const int *fds, unsigned nfds)
{
    struct irq_seen *seen = priv;

    seen->calls++;
    seen->set = *set;
    seen->nfds = nfds;
    seen->len = len;
    memcpy(seen->data, data, len < 8 ? len : 8);
    if (nfds) {
        if (seen->kept >= 0)
            close(seen->kept);
        seen->kept = dup(fds[0]);
    }
    return 0;
}

static struct result irq_request(struct rig *r, uint16_t cmd, const void *q, size_t len,
                                 const int *fds, unsigned nfds)
{
    struct result res = {0};
    assert_int_equal(vfm_vu_client_submit(r->cl, cmd, q, len, fds, nfds, on_done, &res), 0);
    wait_done(r, &res);
    return res;
}

static void set_irqs(struct rig *r, uint32_t flags, uint32_t index, uint32_t start, uint32_t count,
                     const void *data, size_t dlen, const int *fds, unsigned nfds, int want)
{
    uint8_t q[64];
    struct vfm_vu_irq_set s = {(uint32_t)(sizeof(s) + dlen), flags, index, start, count};
    struct result res;

    memcpy(q, &s, sizeof(s));
    if (dlen)
        memcpy(q + sizeof(s), data, dlen);
    res = irq_request(r, VFM_VU_DEVICE_SET_IRQS, q, sizeof(s) + dlen, fds, nfds);
    if (res.status != want)
        fail_msg("SET_IRQS flags %#x index %u start %u count %u: %s, want %s", flags, index, start,
                 count, vfm_err_name(res.status), vfm_err_name(want));
    free(res.buf);
}

static void server_irqs_and_sparse(void **state)
{
    struct vfm_server_config cfg = {.version = VFM_SERVER_CONFIG_VERSION};
    struct irq_seen seen = {.kept = -1};
    struct vfm_vu_region_info ri = {.argsz = sizeof(ri), .index = 0};
    struct vfm_vu_irq_info ii = {.argsz = sizeof(ii), .index = 1};
    struct vfm_vu_device_info di = {.argsz = sizeof(di)};
    struct vfm_vu_sparse_mmap cap;
    struct vfm_server_mmap_area areas[2];
    struct result res;
    struct rig r;
    int sv[2], mfd = memfd_create("sparse", MFD_CLOEXEC), efd[2];
    uint64_t one = 1, got = 0;
    uint8_t bools[2] = {1, 0};
    void *mem;
    (void)state;

    memset(&r, 0, sizeof(r));
    assert_true(mfd >= 0);
    assert_int_equal(ftruncate(mfd, 16384), 0);
    mem = mmap(NULL, 16384, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    assert_true(mem != MAP_FAILED);
    r.td = testdev_new("irqdev", true, 7);
    assert_non_null(r.td);
    assert_int_equal(vfm_dma_new(16, &r.dma), 0);
    cfg.dev = r.td->dev;
    cfg.dma = r.dma;
    cfg.nregions = 1;
    cfg.regions[0] = (struct vfm_server_region){
        .size = 16384, .flags = VFM_VU_REGION_READ_FLAG | VFM_VU_REGION_WRITE_FLAG, .fd = mfd,
        .mem = mem};
    cfg.sparse[0].n = 2;
    cfg.sparse[0].areas[0] = (struct vfm_server_mmap_area){0, 4096};
    cfg.sparse[0].areas[1] = (struct vfm_server_mmap_area){8192, 8192};
    cfg.priv = &seen;
    /* a config that cannot be: no callbacks, an area past the region or
     * unaligned, areas on a region with no fd */
    cfg.nirqs = 2;
    assert_int_equal(vfm_server_new(&cfg, &r.srv), -EINVAL);
    cfg.irq_info = irq_info_cb;
    cfg.set_irqs = set_irqs_cb;
    cfg.sparse[0].areas[1].size = 12288;
    assert_int_equal(vfm_server_new(&cfg, &r.srv), -EINVAL);
    cfg.sparse[0].areas[1] = (struct vfm_server_mmap_area){8190, 4096};
    assert_int_equal(vfm_server_new(&cfg, &r.srv), -EINVAL);
    cfg.sparse[0].areas[1] = (struct vfm_server_mmap_area){8192, 8192};
    cfg.regions[0].fd = -1;
    assert_int_equal(vfm_server_new(&cfg, &r.srv), -EINVAL);
    cfg.regions[0].fd = mfd;
    assert_int_equal(vfm_server_new(&cfg, &r.srv), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(vfm_server_adopt(r.srv, sv[0]), 0);
    r.peer = sv[1];
    client_up(&r);

    res = irq_request(&r, VFM_VU_DEVICE_GET_INFO, &di, sizeof(di), NULL, 0);
    assert_int_equal(res.status, 0);
    memcpy(&di, res.buf, sizeof(di));
    assert_int_equal(di.num_irqs, 2);
    free(res.buf);
    /* the region's capability: first the size it needs, then itself */
    res = irq_request(&r, VFM_VU_DEVICE_GET_REGION_INFO, &ri, sizeof(ri), NULL, 0);
    assert_int_equal(res.status, 0);
    memcpy(&ri, res.buf, sizeof(ri));
    assert_true(ri.flags & VFM_VU_REGION_CAPS_FLAG);
    assert_true(ri.flags & VFM_VU_REGION_MMAP_FLAG);
    assert_int_equal(ri.argsz, sizeof(ri) + sizeof(cap) + sizeof(areas));
    assert_int_equal(ri.cap_offset, 0);
    assert_int_equal(res.len, sizeof(ri));
    free(res.buf);
    ri = (struct vfm_vu_region_info){.argsz = 512, .index = 0};
    res = irq_request(&r, VFM_VU_DEVICE_GET_REGION_INFO, &ri, sizeof(ri), NULL, 0);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.len, sizeof(ri) + sizeof(cap) + sizeof(areas));
    memcpy(&ri, res.buf, sizeof(ri));
    assert_int_equal(ri.cap_offset, sizeof(ri));
    memcpy(&cap, res.buf + ri.cap_offset, sizeof(cap));
    memcpy(areas, res.buf + ri.cap_offset + sizeof(cap), sizeof(areas));
    assert_int_equal(cap.header.id, VFM_VU_REGION_INFO_CAP_SPARSE_MMAP);
    assert_int_equal(cap.header.version, 1);
    assert_int_equal(cap.header.next, 0);
    assert_int_equal(cap.nr_areas, 2);
    assert_int_equal(areas[1].offset, 8192);
    assert_int_equal(areas[1].size, 8192);
    free(res.buf);
    /* interrupt indexes */
    res = irq_request(&r, VFM_VU_DEVICE_GET_IRQ_INFO, &ii, sizeof(ii), NULL, 0);
    assert_int_equal(res.status, 0);
    memcpy(&ii, res.buf, sizeof(ii));
    assert_int_equal(ii.count, 4);
    assert_int_equal(ii.index, 1);
    free(res.buf);
    ii.index = 2;
    res = irq_request(&r, VFM_VU_DEVICE_GET_IRQ_INFO, &ii, sizeof(ii), NULL, 0);
    assert_int_equal(res.status, -EINVAL);
    free(res.buf);
    /* eventfds reach the device, which keeps what it dup()s */
    efd[0] = eventfd(0, EFD_CLOEXEC);
    efd[1] = eventfd(0, EFD_CLOEXEC);
    set_irqs(&r, VFM_VU_IRQ_SET_DATA_EVENTFD | VFM_VU_IRQ_SET_ACTION_TRIGGER, 1, 2, 2, NULL, 0, efd,
             2, 0);
    assert_int_equal(seen.calls, 1);
    assert_int_equal(seen.nfds, 2);
    assert_int_equal(seen.set.start, 2);
    assert_int_equal(write(seen.kept, &one, 8), 8);
    assert_int_equal(read(efd[0], &got, 8), 8);
    assert_int_equal(got, 1);
    set_irqs(&r, VFM_VU_IRQ_SET_DATA_BOOL | VFM_VU_IRQ_SET_ACTION_TRIGGER, 1, 0, 2, bools, 2, NULL,
             0, 0);
    assert_int_equal(seen.len, 2);
    assert_int_equal(seen.data[0], 1);
    set_irqs(&r, VFM_VU_IRQ_SET_DATA_NONE | VFM_VU_IRQ_SET_ACTION_TRIGGER, 1, 0, 0, NULL, 0, NULL, 0,
             0); /* the whole index off */
    assert_int_equal(seen.calls, 3);
    /* refused before the device sees them */
    set_irqs(&r, VFM_VU_IRQ_SET_DATA_NONE | VFM_VU_IRQ_SET_DATA_BOOL | VFM_VU_IRQ_SET_ACTION_MASK, 0,
             0, 1, NULL, 0, NULL, 0, -EINVAL);
    set_irqs(&r, VFM_VU_IRQ_SET_DATA_NONE | VFM_VU_IRQ_SET_ACTION_MASK | VFM_VU_IRQ_SET_ACTION_UNMASK,
             0, 0, 1, NULL, 0, NULL, 0, -EINVAL);
    set_irqs(&r, VFM_VU_IRQ_SET_DATA_NONE | VFM_VU_IRQ_SET_ACTION_TRIGGER | 0x40, 0, 0, 1, NULL, 0,
             NULL, 0, -EINVAL);
    set_irqs(&r, VFM_VU_IRQ_SET_DATA_NONE | VFM_VU_IRQ_SET_ACTION_TRIGGER, 1, 3, 2, NULL, 0, NULL, 0,
             -EINVAL); /* past the count */
    set_irqs(&r, VFM_VU_IRQ_SET_DATA_NONE | VFM_VU_IRQ_SET_ACTION_TRIGGER, 1, 0xffffffff, 2, NULL, 0,
             NULL, 0, -EINVAL);
    set_irqs(&r, VFM_VU_IRQ_SET_DATA_EVENTFD | VFM_VU_IRQ_SET_ACTION_TRIGGER, 1, 0, 2, NULL, 0, efd, 1,
             -EINVAL); /* fewer fds than vectors */
    set_irqs(&r, VFM_VU_IRQ_SET_DATA_BOOL | VFM_VU_IRQ_SET_ACTION_TRIGGER, 1, 0, 2, bools, 1, NULL, 0,
             -EINVAL); /* fewer bools */
    set_irqs(&r, VFM_VU_IRQ_SET_DATA_BOOL | VFM_VU_IRQ_SET_ACTION_TRIGGER, 1, 0, 0, NULL, 0, NULL, 0,
             -EINVAL); /* count 0 is only "all off" */
    set_irqs(&r, VFM_VU_IRQ_SET_DATA_NONE | VFM_VU_IRQ_SET_ACTION_TRIGGER, 2, 0, 1, NULL, 0, NULL, 0,
             -EINVAL); /* no such index */
    assert_int_equal(seen.calls, 3);
    close(efd[0]);
    close(efd[1]);
    close(seen.kept);
    rig_down(&r);
    munmap(mem, 16384);
    close(mfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_thread_loop),
        cmocka_unit_test(server_pieces_and_vanish),
        cmocka_unit_test(client_deadline_and_bad_replies),
        cmocka_unit_test(blocking_calls_on_async_client),
        cmocka_unit_test(dma_guarded_access),
        cmocka_unit_test(server_irqs_and_sparse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
