/* SPDX-License-Identifier: MIT */
/*
 * The vfio-user client driven by the caller's event loop
 * (include/vfiomig/vfio_user.h: vfm_vu_client_submit() and after): requests
 * are queued with a callback, replies are read whole as they come, and a
 * blocking call on such a client is a submit and a loop of poll() and
 * dispatch.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

/* The largest reply taken whole: a payload of our max_data_xfer_size and
 * its fixed part. */
#define MAX_REPLY (CLIENT_MAX_XFER + 4096u)

static uint64_t now_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Ends the first waiting request (popped first: its callback may submit). */
static void complete(struct vfm_vu_client *c, int status, const void *reply, size_t len, int *fds,
                     unsigned nfds)
{
    struct vfm_vu_pending *p = c->head;

    c->head = p->next;
    if (!c->head)
        c->tail = NULL;
    if (p->done)
        p->done(p->arg, status, reply, len, fds, nfds);
    vfm_vu_close_fds(fds, nfds);
    free(p);
}

void vfm_vu_client_fail_all(struct vfm_vu_client *c, int status)
{
    while (c->head)
        complete(c, status, NULL, 0, NULL, 0);
}

/* The connection is no longer usable: every waiting request ends. */
static int kill_client(struct vfm_vu_client *c, int status, const char *why)
{
    if (!c->dead) {
        clog(c, LOG_ERR, "%s: %s; connection closed", c->name, why);
        c->dead = status;
        if (c->ready == 0)
            c->ready = status;
        if (c->sock >= 0)
            shutdown(c->sock, SHUT_RDWR);
        vfm_vu_tx_reset(&c->tx);
    }
    vfm_vu_client_fail_all(c, c->dead);
    return c->dead;
}

int vfm_vu_client_submit(struct vfm_vu_client *c, uint16_t cmd, const void *payload, size_t len,
                         const int *fds, unsigned nfds, vfm_vu_client_done_fn done, void *arg)
{
    struct vfm_vu_hdr h = {.cmd = cmd, .msg_size = (uint32_t)(sizeof(h) + len)};
    struct iovec v = {(void *)payload, len};
    struct vfm_vu_pending *p;
    int ret;

    if (!c->async || len > MAX_REPLY || nfds > VFM_VU_MAX_FDS || (len && !payload))
        return -EINVAL;
    if (c->dead)
        return c->dead;
    p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    h.msg_id = c->next_id++;
    ret = vfm_vu_tx_send(&c->tx, c->sock, &h, &v, len ? 1 : 0, fds, nfds);
    if (ret) {
        free(p);
        return ret == -ENOMEM ? ret : kill_client(c, -ECONNRESET, "the socket refused a request");
    }
    p->msg_id = h.msg_id;
    p->cmd = cmd;
    p->deadline_ns = now_ns() + (uint64_t)c->timeout_ms * 1000000u;
    p->done = done;
    p->arg = arg;
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    return 0;
}

int vfm_vu_client_poll(const struct vfm_vu_client *c, short *events, int *timeout_ms)
{
    if (c->dead || c->sock < 0)
        return -ENOTCONN;
    *events = (short)(POLLIN | (vfm_vu_tx_pending(&c->tx) ? POLLOUT : 0));
    *timeout_ms = -1;
    if (c->head) {
        uint64_t now = now_ns(), d = c->head->deadline_ns;
        uint64_t ms = d > now ? (d - now + 999999u) / 1000000u : 0;
        *timeout_ms = ms > INT32_MAX ? INT32_MAX : (int)ms;
    }
    return c->sock;
}

/* One whole reply from the buffer. Return: 0, or the status that kills. */
static int take_reply(struct vfm_vu_client *c)
{
    struct vfm_vu_hdr r;
    int fds[VFM_VU_MAX_FDS];
    unsigned nfds = 0;
    bool ctrunc;
    const void *body;
    size_t len;
    int ret;

    ret = vfm_vu_rx_hdr(&c->rx, &r, fds, &nfds, &ctrunc);
    if (ret)
        return kill_client(c, ret == -ENOTCONN ? -ECONNRESET : -EPROTO,
                           ret == -ENOTCONN ? "the server closed" : "a reply was cut short");
    if (vfm_vu_decode_hdr(&r, MAX_REPLY) || (r.flags & VFM_VU_TYPE_MASK) != VFM_VU_TYPE_REPLY ||
        !c->head || r.msg_id != c->head->msg_id || r.cmd != c->head->cmd || ctrunc) {
        vfm_vu_close_fds(fds, nfds);
        return kill_client(c, -EPROTO, "a reply that answers no request");
    }
    len = r.msg_size - sizeof(r);
    body = vfm_vu_rx_take(&c->rx, len);
    if (len && !body) {
        vfm_vu_close_fds(fds, nfds);
        return kill_client(c, -EPROTO, "a reply was cut short");
    }
    if (r.flags & VFM_VU_ERROR) {
        vfm_vu_close_fds(fds, nfds);
        complete(c, r.error ? -(int)r.error : -EIO, NULL, 0, NULL, 0);
    } else {
        complete(c, 0, body, len, fds, nfds);
    }
    return 0;
}

int vfm_vu_client_dispatch(struct vfm_vu_client *c)
{
    int ret;

    if (!c->async)
        return -EINVAL;
    if (c->dead)
        return c->dead;
    vfm_vu_rx_readable(&c->rx);
    ret = vfm_vu_tx_flush(&c->tx, c->sock);
    if (ret && ret != -EAGAIN)
        return kill_client(c, -ECONNRESET, "the server is gone");
    while (c->head) {
        ret = vfm_vu_rx_ready(&c->rx, MAX_REPLY);
        if (ret < 0)
            return kill_client(c, ret, "no memory for a reply");
        if (!ret)
            break;
        ret = take_reply(c);
        if (ret)
            return ret;
    }
    if (!c->head && vfm_vu_rx_ready(&c->rx, MAX_REPLY) == 1)
        return kill_client(c, c->rx.eof ? -ECONNRESET : -EPROTO,
                           c->rx.eof ? "the server closed" : "a reply to no request");
    if (c->head && now_ns() >= c->head->deadline_ns)
        return kill_client(c, -ETIMEDOUT, "no answer within the timeout");
    return 0;
}

int vfm_vu_client_ready(const struct vfm_vu_client *c)
{
    return c->async ? c->ready : 1;
}

static void on_info(void *arg, int status, const void *reply, size_t len, int *fds, unsigned nfds)
{
    struct vfm_vu_client *c = arg;

    (void)fds;
    (void)nfds;
    if (!status)
        status = vfm_vu_client_take_info(c, reply, len);
    c->ready = status ? status : 1;
}

static void on_version(void *arg, int status, const void *reply, size_t len, int *fds,
                       unsigned nfds)
{
    struct vfm_vu_client *c = arg;
    struct vfm_vu_device_info info = {.argsz = sizeof(info)};

    (void)fds;
    (void)nfds;
    if (!status)
        status = vfm_vu_client_take_version(c, reply, len);
    if (!status)
        status = vfm_vu_client_submit(c, VFM_VU_DEVICE_GET_INFO, &info, sizeof(info), NULL, 0,
                                      on_info, c);
    if (status)
        c->ready = status;
}

int vfm_vu_client_start_async(struct vfm_vu_client *c)
{
    struct vfm_vu_version v = {VFM_VU_MAJOR, VFM_VU_MINOR};
    char *json = vfm_vu_client_our_caps(c);
    uint8_t *q;
    size_t len;
    int fl, ret;

    if (!json)
        return -ENOMEM;
    fl = fcntl(c->sock, F_GETFL);
    if (fl < 0 || fcntl(c->sock, F_SETFL, fl | O_NONBLOCK)) {
        free(json);
        return -errno;
    }
    c->async = true;
    c->rx.sock = c->sock;
    len = sizeof(v) + strlen(json) + 1;
    q = malloc(len);
    if (!q) {
        free(json);
        return -ENOMEM;
    }
    memcpy(q, &v, sizeof(v));
    memcpy(q + sizeof(v), json, len - sizeof(v));
    free(json);
    ret = vfm_vu_client_submit(c, VFM_VU_VERSION, q, len, NULL, 0, on_version, c);
    free(q);
    return ret;
}

/* One wait of a blocking call: poll() as the client asks, then dispatch. */
static int drive(struct vfm_vu_client *c)
{
    struct pollfd p = {.fd = -1};
    int timeout;

    p.fd = vfm_vu_client_poll(c, &p.events, &timeout);
    if (p.fd < 0)
        return c->dead ? c->dead : p.fd;
    if (poll(&p, 1, timeout) < 0 && errno != EINTR)
        return kill_client(c, -errno, "poll failed");
    return vfm_vu_client_dispatch(c);
}

int vfm_vu_client_wait_ready(struct vfm_vu_client *c)
{
    int ret = 0;

    while (c->async && !ret && c->ready == 0)
        ret = drive(c);
    return c->async && c->ready < 0 ? c->ready : ret;
}

/* Where a blocking call on an async client wants its reply. */
struct sync_call {
    bool done;
    int status;
    const struct iovec *rep;
    int nrep;
    size_t *got;
    int *rfds;
    unsigned *rnfds;
};

static void on_sync(void *arg, int status, const void *reply, size_t len, int *fds, unsigned nfds)
{
    struct sync_call *s = arg;
    size_t at = 0;

    s->done = true;
    s->status = status;
    if (s->got)
        *s->got = len;
    for (int i = 0; i < s->nrep && at < len; i++) {
        size_t k = s->rep[i].iov_len < len - at ? s->rep[i].iov_len : len - at;
        memcpy(s->rep[i].iov_base, (const uint8_t *)reply + at, k);
        at += k;
    }
    if (s->rfds && s->rnfds) {
        memcpy(s->rfds, fds, nfds * sizeof(int));
        *s->rnfds = nfds;
        for (unsigned i = 0; i < nfds; i++)
            fds[i] = -1; /* the caller's now */
    }
}

int vfm_vu_client_xfer_async(struct vfm_vu_client *c, uint16_t cmd, const struct iovec *req,
                             int nreq, const int *fds, unsigned nfds, const struct iovec *rep,
                             int nrep, size_t *got, int *rfds, unsigned *rnfds)
{
    struct sync_call s = {false, 0, rep, nrep, got, rfds, rnfds};
    size_t len = 0, at = 0;
    uint8_t *q;
    int ret;

    if (rnfds)
        *rnfds = 0;
    for (int i = 0; i < nreq; i++)
        len += req[i].iov_len;
    q = malloc(len ? len : 1);
    if (!q)
        return -ENOMEM;
    for (int i = 0; i < nreq; i++) {
        memcpy(q + at, req[i].iov_base, req[i].iov_len);
        at += req[i].iov_len;
    }
    ret = vfm_vu_client_submit(c, cmd, q, len, fds, nfds, on_sync, &s);
    free(q);
    while (!ret && !s.done)
        ret = drive(c);
    return s.done ? s.status : ret ? ret : c->dead;
}
