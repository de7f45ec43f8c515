/* SPDX-License-Identifier: MIT */
/*
 * The vfio-user client (include/vfiomig/vfio_user.h, part 3), and its
 * endpoint backend. It works with vfiomig's server and with servers built on
 * libvfio-user: no P2P flag there, MIG_DATA_READ replies padded to the
 * requested size (the valid length is in their `size`), EINVAL for an
 * unknown feature such as MIG_DATA_SIZE.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <vfiomig/vfio_user.h>

#include "../common/internal.h"
#include "sock.h"

#include "client.h"

static int set_timeouts(int sock, unsigned ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

    if (setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
        setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)))
        return -errno;
    return 0;
}

int vfm_vu_client_set_timeout(struct vfm_vu_client *c, unsigned ms)
{
    int ret;

    pthread_mutex_lock(&c->lock);
    c->timeout_ms = ms ? ms : VFM_VU_DEFAULT_TIMEOUT_MS;
    if (c->async)
        ret = c->sock >= 0 ? 0 : -ENOTCONN; /* deadlines are kept per request */
    else
        ret = c->sock >= 0 ? set_timeouts(c->sock, c->timeout_ms) : -ENOTCONN;
    pthread_mutex_unlock(&c->lock);
    return ret;
}

static int xfer_once(struct vfm_vu_client *c, uint16_t cmd, const struct iovec *req, int nreq,
                     const int *fds, unsigned nfds, const struct iovec *rep, int nrep, size_t *got,
                     int *rfds, unsigned *rnfds);

/* Sends a command and receives its reply (xfer_once), within the client's
 * timeout: a wait that passes it (the socket's EAGAIN) closes the
 * connection, whose framing is then unknown, and fails this request and
 * every later one with -ETIMEDOUT. Lock held. */
static int xfer(struct vfm_vu_client *c, uint16_t cmd, const struct iovec *req, int nreq,
                const int *fds, unsigned nfds, const struct iovec *rep, int nrep, size_t *got,
                int *rfds, unsigned *rnfds)
{
    int ret;

    if (c->dead)
        return c->dead;
    if (c->async && cmd != VFM_VU_VERSION && cmd != VFM_VU_DEVICE_GET_INFO &&
        (ret = vfm_vu_client_wait_ready(c)))
        return ret;
    if (c->async)
        return vfm_vu_client_xfer_async(c, cmd, req, nreq, fds, nfds, rep, nrep, got, rfds, rnfds);
    ret = xfer_once(c, cmd, req, nreq, fds, nfds, rep, nrep, got, rfds, rnfds);
    if (ret == -EAGAIN || ret == -EWOULDBLOCK) {
        clog(c, LOG_ERR, "%s: no answer to %s within the timeout; connection closed", c->name,
             vfm_vu_cmd_name(cmd));
        shutdown(c->sock, SHUT_RDWR);
        c->dead = ret = -ETIMEDOUT;
    }
    return ret;
}

/* Sends a command and receives its reply. The reply payload fills @rep in
 * order; what does not fit is read and dropped; *@got is the payload size.
 * Fds that come with the reply go to @rfds (or are closed).
 * Return: 0, the reply's -errno, or a transport error (-EPROTO for a reply
 * that does not match). Lock held. */
static int xfer_once(struct vfm_vu_client *c, uint16_t cmd, const struct iovec *req, int nreq,
                     const int *fds, unsigned nfds, const struct iovec *rep, int nrep, size_t *got,
                     int *rfds, unsigned *rnfds)
{
    struct vfm_vu_hdr h = {.msg_id = c->next_id++, .cmd = cmd, .msg_size = sizeof(h)};
    struct vfm_vu_hdr r;
    int fdbuf[VFM_VU_MAX_FDS];
    unsigned n = 0;
    bool ctrunc;
    size_t left, extra = 0;
    int ret;

    if (c->sock < 0)
        return -ENOTCONN;
    for (int i = 0; i < nreq; i++)
        h.msg_size += (uint32_t)req[i].iov_len;
    ret = vfm_vu_send(c->sock, &h, req, nreq, fds, nfds);
    if (ret && ret != -EPIPE && ret != -ECONNRESET)
        return ret;
    /* Even when the send failed because the server closed, it may have said
     * why first (a busy server sends EBUSY, then closes): read that. */
    {
        int sret = ret;
        /* one request in flight, so nothing follows its reply: the header
         * and the reply's first bytes can come in one read */
        ret = vfm_vu_recv_hdr_more(c->sock, &r, sret ? NULL : rep, sret ? 0 : nrep, &extra,
                                   rfds ? fdbuf : NULL, &n, &ctrunc);
        if (sret && (ret || !(r.flags & VFM_VU_ERROR))) {
            vfm_vu_close_fds(fdbuf, n);
            return sret;
        }
        if (sret) {
            vfm_vu_close_fds(fdbuf, n);
            return r.error ? -(int)r.error : sret;
        }
    }
    if (ret)
        return ret == -ENOTCONN ? -ECONNRESET : ret;
    if (vfm_vu_decode_hdr(&r, UINT32_MAX) || (r.flags & VFM_VU_TYPE_MASK) != VFM_VU_TYPE_REPLY ||
        r.msg_id != h.msg_id || r.cmd != cmd) {
        vfm_vu_close_fds(fdbuf, n);
        return -EPROTO;
    }
    left = r.msg_size - sizeof(r);
    if (extra > left) { /* more than the reply: the server broke the protocol */
        vfm_vu_close_fds(fdbuf, n);
        return -EPROTO;
    }
    if (got)
        *got = left;
    if (r.flags & VFM_VU_ERROR) {
        vfm_vu_close_fds(fdbuf, n);
        ret = vfm_vu_recv_discard(c->sock, left - extra);
        if (ret)
            return ret;
        return r.error ? -(int)r.error : -EIO;
    }
    for (int i = 0; i < nrep && left; i++) {
        size_t k = rep[i].iov_len < left ? rep[i].iov_len : left;
        size_t have = extra < k ? extra : k; /* came with the header */
        extra -= have;
        left -= have;
        k -= have;
        ret = vfm_vu_recv_all(c->sock, (char *)rep[i].iov_base + have, k);
        if (ret) {
            vfm_vu_close_fds(fdbuf, n);
            return ret;
        }
        left -= k;
    }
    ret = vfm_vu_recv_discard(c->sock, left);
    if (rfds && rnfds) {
        memcpy(rfds, fdbuf, n * sizeof(int));
        *rnfds = n;
    } else {
        vfm_vu_close_fds(fdbuf, n);
    }
    return ret;
}

/* One request with a flat payload and a flat reply buffer. */
static int call(struct vfm_vu_client *c, uint16_t cmd, const void *req, size_t len, void *rep,
                size_t cap, size_t *got)
{
    struct iovec q = {(void *)req, len}, a = {rep, cap};
    int ret;

    pthread_mutex_lock(&c->lock);
    ret = xfer(c, cmd, &q, len ? 1 : 0, NULL, 0, &a, cap ? 1 : 0, got, NULL, NULL);
    pthread_mutex_unlock(&c->lock);
    return ret;
}

char *vfm_vu_client_our_caps(const struct vfm_vu_client *c)
{
    struct vfm_vu_caps ours;

    vfm_vu_caps_default(&ours);
    ours.max_msg_fds = VFM_VU_MAX_FDS;
    ours.max_data_xfer_size = CLIENT_MAX_XFER;
    ours.precopy_info = true;      /* vfiomig's extensions: servers without them ignore them */
    ours.whole_bodies = true;      /* we read replies whole across any reads */
    ours.data_fd = !c->no_data_fd; /* a session's bytes by a file descriptor */
    return vfm_vu_caps_format(&ours);
}

int vfm_vu_client_take_version(struct vfm_vu_client *c, const void *reply, size_t got)
{
    struct vfm_vu_version v;
    char json[4096 + 1];

    if (got < sizeof(v) || got - sizeof(v) > sizeof(json) - 1)
        return -EPROTO;
    memcpy(&v, reply, sizeof(v));
    if (v.major != VFM_VU_MAJOR || v.minor > VFM_VU_MINOR)
        return -EPROTO;
    c->info.minor = v.minor;
    memcpy(json, (const char *)reply + sizeof(v), got - sizeof(v));
    if (vfm_vu_caps_parse(json, got - sizeof(v), &c->info.server_caps))
        return -EPROTO;
    c->read_max = c->info.server_caps.max_data_xfer_size;
    if (c->read_max > CLIENT_MAX_XFER)
        c->read_max = CLIENT_MAX_XFER;
    /* a server that may read a body with one recv() gets bodies that
     * arrive whole (vfio_user.h, VFM_VU_SAFE_BODY) */
    c->send_max = c->info.server_caps.whole_bodies || c->read_max < VFM_VU_SAFE_BODY
                      ? c->read_max
                      : VFM_VU_SAFE_BODY;
    return 0;
}

static const struct vfm_endpoint_ops client_ep_ops;

int vfm_vu_client_take_info(struct vfm_vu_client *c, const void *reply, size_t got)
{
    struct vfm_vu_device_info info;

    if (got < sizeof(info))
        return -EPROTO;
    memcpy(&info, reply, sizeof(info));
    c->info.flags = info.flags;
    c->info.num_regions = info.num_regions;
    c->info.num_irqs = info.num_irqs;
    return 0;
}

/* VERSION, then DEVICE_GET_INFO, waiting for each. */
static int negotiate(struct vfm_vu_client *c)
{
    struct vfm_vu_version v = {VFM_VU_MAJOR, VFM_VU_MINOR};
    struct vfm_vu_device_info info = {.argsz = sizeof(info)};
    char reply[sizeof(v) + 4096 + 1];
    size_t got = 0;
    char *json = vfm_vu_client_our_caps(c);
    int ret;

    if (!json)
        return -ENOMEM;
    {
        struct iovec q[2] = {{&v, sizeof(v)}, {json, strlen(json) + 1}};
        struct iovec a = {reply, sizeof(reply)};
        pthread_mutex_lock(&c->lock);
        ret = xfer(c, VFM_VU_VERSION, q, 2, NULL, 0, &a, 1, &got, NULL, NULL);
        pthread_mutex_unlock(&c->lock);
    }
    free(json);
    if (ret)
        return ret;
    ret = vfm_vu_client_take_version(c, reply, got); /* checks got before reading */
    if (ret)
        return ret;
    ret = call(c, VFM_VU_DEVICE_GET_INFO, &info, sizeof(info), &info, sizeof(info), &got);
    if (ret)
        return ret;
    return vfm_vu_client_take_info(c, &info, got);
}

/* A client over @sock (owned from here on, closed on failure too). */
static int client_new(int sock, const char *name, struct vfm_vu_client **out)
{
    struct vfm_vu_client *c = calloc(1, sizeof(*c));

    if (!c) {
        close(sock);
        return -ENOMEM;
    }
    pthread_mutex_init(&c->lock, NULL);
    c->sock = sock;
    c->data_fd = -1;
    c->data_fd_state = VFM_STATE_COUNT;
    c->timeout_ms = VFM_VU_DEFAULT_TIMEOUT_MS;
    vfm_vu_rx_init(&c->rx, -1, true);
    c->name = strdup(name);
    if (!c->name) {
        vfm_vu_client_free(c);
        return -ENOMEM;
    }
    if (vfm_ep_new(&client_ep_ops, c->name, c, &c->ep)) {
        vfm_vu_client_free(c);
        return -ENOMEM;
    }
    *out = c;
    return 0;
}

int vfm_vu_client_connect(const char *path, const char *name, struct vfm_vu_client **out)
{
    return vfm_vu_client_connect_timeout(path, name, 0, out);
}

int vfm_vu_client_connect_timeout(const char *path, const char *name, unsigned timeout_ms,
                                  struct vfm_vu_client **out)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct vfm_vu_client *c;
    int ret, sock;

    if (!path || strlen(path) >= sizeof(addr.sun_path))
        return -EINVAL;
    strcpy(addr.sun_path, path);
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return -errno;
    ret = client_new(sock, name ? name : path, &c);
    if (ret)
        return ret;
    /* connect() too */
    vfm_sock_bulk(c->sock);
    ret = set_timeouts(c->sock, timeout_ms ? timeout_ms : VFM_VU_DEFAULT_TIMEOUT_MS);
    if (!ret && connect(c->sock, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        ret = errno == EAGAIN ? -ETIMEDOUT : -errno;
    if (!ret)
        ret = negotiate(c);
    if (ret) {
        vfm_vu_client_free(c);
        return ret;
    }
    *out = c;
    return 0;
}

int vfm_vu_client_adopt(int fd, const char *name, unsigned flags, unsigned timeout_ms,
                        struct vfm_vu_client **out)
{
    struct vfm_vu_client *c;
    int type = 0, ret;
    socklen_t len = sizeof(type);

    if (fd < 0)
        return -EBADF;
    if (flags & ~(VFM_VU_CLIENT_ASYNC | VFM_VU_CLIENT_NO_DATA_FD)) {
        close(fd);
        return -EINVAL;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) || type != SOCK_STREAM) {
        close(fd);
        return -ENOTSOCK;
    }
    ret = client_new(fd, name ? name : "vfio-user", &c);
    if (ret)
        return ret;
    c->timeout_ms = timeout_ms ? timeout_ms : VFM_VU_DEFAULT_TIMEOUT_MS;
    c->no_data_fd = flags & VFM_VU_CLIENT_NO_DATA_FD;
    if (flags & VFM_VU_CLIENT_ASYNC)
        ret = vfm_vu_client_start_async(c);
    else
        ret = set_timeouts(c->sock, c->timeout_ms) ?: negotiate(c);
    if (ret) {
        vfm_vu_client_free(c);
        return ret;
    }
    *out = c;
    return 0;
}

void vfm_vu_client_free(struct vfm_vu_client *c)
{
    if (!c)
        return;
    vfm_vu_client_fail_all(c, -ECANCELED);
    vfm_vu_rx_reset(&c->rx);
    vfm_vu_tx_reset(&c->tx);
    if (c->sock >= 0)
        close(c->sock);
    if (c->data_fd >= 0)
        close(c->data_fd);
    pthread_mutex_destroy(&c->lock);
    vfm_ep_delete(c->ep);
    free(c->name);
    free(c);
}

void vfm_vu_client_set_log(struct vfm_vu_client *c, vfm_log_fn fn, void *ctx, int max_level)
{
    c->log = (struct vfm_log_sink){fn, ctx, max_level};
}

const struct vfm_vu_client_info *vfm_vu_client_info(const struct vfm_vu_client *c)
{
    return &c->info;
}

int vfm_vu_client_region_info(struct vfm_vu_client *c, uint32_t index,
                              struct vfm_vu_region_info *info, int *fd)
{
    struct vfm_vu_region_info q = {.argsz = sizeof(q), .index = index};
    struct iovec qv = {&q, sizeof(q)}, av = {info, sizeof(*info)};
    int fds[VFM_VU_MAX_FDS];
    unsigned n = 0;
    size_t got = 0;
    int ret;

    *fd = -1;
    memset(info, 0, sizeof(*info));
    pthread_mutex_lock(&c->lock);
    ret = xfer(c, VFM_VU_DEVICE_GET_REGION_INFO, &qv, 1, NULL, 0, &av, 1, &got, fds, &n);
    pthread_mutex_unlock(&c->lock);
    if (ret)
        return ret;
    if (got < sizeof(*info) || n > 1 || ((info->flags & VFM_VU_REGION_MMAP_FLAG) && n != 1)) {
        vfm_vu_close_fds(fds, n);
        return -EPROTO;
    }
    if (n)
        *fd = fds[0];
    return 0;
}

static int region_io(struct vfm_vu_client *c, uint32_t region, uint64_t offset, void *buf,
                     uint32_t count, bool write)
{
    uint32_t max;
    int ret = vfm_vu_client_wait_ready(c);

    if (ret)
        return ret;
    max = c->send_max;
    while (count) {
        uint32_t n = count < max ? count : max;
        struct vfm_vu_region_access a = {.offset = offset, .region = region, .count = n};
        struct iovec q[2] = {{&a, sizeof(a)}, {buf, n}};
        struct vfm_vu_region_access ra;
        struct iovec r[2] = {{&ra, sizeof(ra)}, {buf, n}};
        size_t got = 0;

        pthread_mutex_lock(&c->lock);
        ret = xfer(c, write ? VFM_VU_REGION_WRITE : VFM_VU_REGION_READ, q, write ? 2 : 1, NULL, 0,
                   r, write ? 1 : 2, &got, NULL, NULL);
        pthread_mutex_unlock(&c->lock);
        if (ret)
            return ret;
        if (got < sizeof(ra) || (!write && got != sizeof(ra) + n))
            return -EPROTO;
        offset += n;
        buf = (char *)buf + n;
        count -= n;
    }
    return 0;
}

int vfm_vu_client_region_read(struct vfm_vu_client *c, uint32_t region, uint64_t offset, void *buf,
                              uint32_t count)
{
    return region_io(c, region, offset, buf, count, false);
}

int vfm_vu_client_region_write(struct vfm_vu_client *c, uint32_t region, uint64_t offset,
                               const void *buf, uint32_t count)
{
    return region_io(c, region, offset, (void *)buf, count, true);
}

int vfm_vu_client_dma_map(struct vfm_vu_client *c, uint64_t iova, uint64_t size, int fd,
                          uint64_t offset, uint32_t prot)
{
    struct vfm_vu_dma_map m = {
        .argsz = sizeof(m), .flags = prot, .offset = offset, .addr = iova, .size = size};
    struct iovec q = {&m, sizeof(m)};
    int ret;

    if (fd < 0)
        return -EOPNOTSUPP; /* the server would ask us for DMA_READ/DMA_WRITE */
    pthread_mutex_lock(&c->lock);
    ret = xfer(c, VFM_VU_DMA_MAP, &q, 1, &fd, 1, NULL, 0, NULL, NULL, NULL);
    pthread_mutex_unlock(&c->lock);
    return ret;
}

int vfm_vu_client_dma_unmap(struct vfm_vu_client *c, uint64_t iova, uint64_t size)
{
    struct vfm_vu_dma_unmap u = {.argsz = sizeof(u), .addr = iova, .size = size}, r;
    size_t got;

    return call(c, VFM_VU_DMA_UNMAP, &u, sizeof(u), &r, sizeof(r), &got);
}

int vfm_vu_client_raw(struct vfm_vu_client *c, uint16_t cmd, const void *payload, size_t len,
                      const int *fds, unsigned nfds, void *reply, size_t reply_cap,
                      size_t *reply_len)
{
    struct iovec q = {(void *)payload, len}, a = {reply, reply_cap};
    size_t got = 0;
    int ret;

    pthread_mutex_lock(&c->lock);
    ret = xfer(c, cmd, &q, len ? 1 : 0, fds, nfds, &a, reply_cap ? 1 : 0, &got, NULL, NULL);
    pthread_mutex_unlock(&c->lock);
    if (reply_len)
        *reply_len = got;
    return ret;
}

static int ep_region(struct vfm_endpoint *ep, uint32_t index, uint64_t offset, void *buf,
                     size_t len, bool write)
{
    if (len > UINT32_MAX)
        return -EINVAL;
    return region_io(vfm_ep_priv(ep), index, offset, buf, (uint32_t)len, write);
}

/* The endpoint owns the client: its destroy frees it (vfm_ep_free() then
 * frees the endpoint itself). */
static void client_ep_destroy(struct vfm_endpoint *ep)
{
    struct vfm_vu_client *c = vfm_ep_priv(ep);

    c->ep = NULL;
    vfm_vu_client_free(c);
}

static const struct vfm_endpoint_ops client_owning_ops;

struct vfm_endpoint *vfm_vu_client_into_endpoint(struct vfm_vu_client *c)
{
    struct vfm_endpoint *ep;

    if (vfm_ep_new(&client_owning_ops, vfm_ep_name(c->ep), c, &ep)) {
        vfm_vu_client_free(c);
        return NULL;
    }
    vfm_ep_delete(c->ep);
    c->ep = ep;
    return ep;
}

struct vfm_endpoint *vfm_vu_client_endpoint(struct vfm_vu_client *c)
{
    return c->ep;
}

/* The endpoint backend. */

static int feature(struct vfm_vu_client *c, uint32_t flags, const void *in, size_t inlen, void *out,
                   size_t outlen)
{
    struct {
        struct vfm_vu_feature f;
        uint8_t data[16];
    } q = {.f = {.argsz = (uint32_t)(sizeof(struct vfm_vu_feature) + outlen), .flags = flags}}, a;
    size_t got = 0;
    int ret;

    if (inlen)
        memcpy(q.data, in, inlen);
    ret = call(c, VFM_VU_DEVICE_FEATURE, &q, sizeof(q.f) + inlen, &a, sizeof(a.f) + outlen, &got);
    if (ret)
        return ret;
    if (got < sizeof(a.f) + outlen)
        return -EPROTO;
    memcpy(out, a.data, outlen);
    return 0;
}

static int ep_flags(struct vfm_endpoint *ep, uint32_t *flags)
{
    uint64_t f = 0;
    int ret =
        feature(vfm_ep_priv(ep), VFM_FEATURE_MIGRATION | VFM_FEATURE_GET, NULL, 0, &f, sizeof(f));

    if (ret)
        return ret;
    *flags = (uint32_t)f;
    return f >> 32 ? -EPROTO : 0;
}

/* Drops the session's data fd (lock held). */
static void data_fd_close(struct vfm_vu_client *c)
{
    if (c->data_fd >= 0)
        close(c->data_fd);
    c->data_fd = -1;
}

static int ep_set(struct vfm_endpoint *ep, uint32_t state)
{
    struct vfm_vu_client *c = vfm_ep_priv(ep);
    struct {
        struct vfm_vu_feature f;
        struct vfm_vu_mig_state ms;
    } q = {{sizeof(q), VFM_FEATURE_MIG_DEVICE_STATE | VFM_FEATURE_SET}, {state, -1}}, a;
    struct iovec qv = {&q, sizeof(q)}, av = {&a, sizeof(a)};
    int fds[VFM_VU_MAX_FDS];
    unsigned nfds = 0;
    size_t got = 0;
    int ret;

    pthread_mutex_lock(&c->lock);
    ret = xfer(c, VFM_VU_DEVICE_FEATURE, &qv, 1, NULL, 0, &av, 1, &got, fds, &nfds);
    if (!ret && got < sizeof(a))
        ret = -EPROTO;
    /* a session's fd comes only where asked for, only one, and only with a
     * reply that says so (data_fd 0); anything else is the server's error */
    if (!ret && nfds &&
        (!c->info.server_caps.data_fd || nfds != 1 || a.ms.data_fd != 0 ||
         (state != VFM_STATE_STOP_COPY && state != VFM_STATE_RESUMING)))
        ret = -EPROTO;
    if (!ret && nfds) {
        /* and it must be what the extension says: a stream socket */
        int type = 0;
        socklen_t tl = sizeof(type);
        if (getsockopt(fds[0], SOL_SOCKET, SO_TYPE, &type, &tl) || type != SOCK_STREAM)
            ret = -EPROTO;
    }
    if (ret) {
        vfm_vu_close_fds(fds, nfds);
    } else if (nfds) {
        data_fd_close(c);
        c->data_fd = fds[0];
        c->data_fd_state = state;
    } else if (state != c->data_fd_state) {
        data_fd_close(c); /* the session it was for has ended */
    }
    c->precopy_end = false;
    pthread_mutex_unlock(&c->lock);
    __atomic_store_n(&c->state, ret ? VFM_STATE_COUNT : state, __ATOMIC_RELAXED);
    return ret;
}

/* Waits until the data fd is ready for @events, within the client's
 * timeout. Return: 0, -ETIMEDOUT, or -errno. */
static int data_fd_wait(struct vfm_vu_client *c, int fd, short events)
{
    struct pollfd p = {.fd = fd, .events = events};
    unsigned ms = c->timeout_ms ? c->timeout_ms : VFM_VU_DEFAULT_TIMEOUT_MS;

    for (;;) {
        int n = poll(&p, 1, (int)ms);
        if (n > 0)
            return 0;
        if (n == 0)
            return -ETIMEDOUT; /* the server stopped feeding (or taking) it */
        if (errno != EINTR)
            return -errno;
    }
}

/* A save session's bytes from its fd: @len of them, fewer only at the end
 * of the state (0: the end), as a MIG_DATA_READ reply is. */
static ssize_t data_fd_read(struct vfm_vu_client *c, int fd, void *buf, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = recv(fd, (char *)buf + done, len - done, MSG_DONTWAIT);
        int ret;
        if (n == 0)
            break; /* the end of the state */
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN) /* ECONNRESET: the session ended before its end */
            return done ? (ssize_t)done : -errno;
        if ((ret = data_fd_wait(c, fd, POLLIN)))
            return done ? (ssize_t)done : ret;
    }
    return (ssize_t)done;
}

/* A load session's bytes into its fd, all of them. */
static ssize_t data_fd_write(struct vfm_vu_client *c, int fd, const void *buf, size_t len)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = send(fd, (const char *)buf + done, len - done, MSG_DONTWAIT | MSG_NOSIGNAL);
        int ret;
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN)
            return done ? (ssize_t)done : -errno; /* EPIPE: the session ended */
        if ((ret = data_fd_wait(c, fd, POLLOUT)))
            return done ? (ssize_t)done : ret;
    }
    return (ssize_t)done;
}

/* The session's fd, if the next data call goes by it (-1: by messages). */
static int data_fd_for(struct vfm_vu_client *c, uint32_t state)
{
    int fd;

    pthread_mutex_lock(&c->lock);
    fd = c->data_fd_state == state ? c->data_fd : -1;
    pthread_mutex_unlock(&c->lock);
    return fd;
}

static int ep_get(struct vfm_endpoint *ep, uint32_t *state)
{
    struct vfm_vu_mig_state ms = {.data_fd = -1}, r;
    int ret = feature(vfm_ep_priv(ep), VFM_FEATURE_MIG_DEVICE_STATE | VFM_FEATURE_GET, &ms,
                      sizeof(ms), &r, sizeof(r));

    if (!ret) {
        *state = r.device_state;
        __atomic_store_n(&((struct vfm_vu_client *)vfm_ep_priv(ep))->state, r.device_state,
                         __ATOMIC_RELAXED);
    }
    return ret;
}

static ssize_t ep_read(struct vfm_endpoint *ep, void *buf, size_t len)
{
    struct vfm_vu_client *c = vfm_ep_priv(ep);
    int wret = vfm_vu_client_wait_ready(c);
    uint32_t want = len < c->read_max ? (uint32_t)len : c->read_max;
    struct vfm_vu_mig_data q = {.argsz = (uint32_t)(sizeof(q) + want), .size = want}, r = {0};
    struct iovec qv = {&q, sizeof(q)}, rv[2] = {{&r, sizeof(r)}, {buf, want}};
    uint32_t st = __atomic_load_n(&c->state, __ATOMIC_RELAXED);
    bool precopy = st == VFM_STATE_PRE_COPY || st == VFM_STATE_PRE_COPY_P2P;

    if (wret)
        return wret;
    size_t got = 0;
    int ret, fd = data_fd_for(c, VFM_STATE_STOP_COPY);

    if (fd >= 0 && st == VFM_STATE_STOP_COPY)
        return data_fd_read(c, fd, buf, len);
    pthread_mutex_lock(&c->lock);
    if (precopy && c->precopy_end && want) {
        c->precopy_end = false;
        pthread_mutex_unlock(&c->lock);
        return -ENOMSG;
    }
    ret = xfer(c, VFM_VU_MIG_DATA_READ, &qv, 1, NULL, 0, rv, 2, &got, NULL, NULL);
    /* A libvfio-user server pads the reply to what was asked: the valid
     * bytes are `size`, never more than asked or than arrived. */
    if (!ret && (got < sizeof(r) || r.size > want || r.size > got - sizeof(r)))
        ret = -EPROTO;
    /* In pre-copy a reply shorter than asked means no more data for now
     * (the specification's way of saying what the kernel's data_fd says
     * with ENOMSG): these bytes, then -ENOMSG. */
    if (!ret && precopy && r.size < want && r.size)
        c->precopy_end = true;
    pthread_mutex_unlock(&c->lock);
    if (ret)
        return ret;
    if (r.size == 0 && want && precopy)
        return -ENOMSG;
    return (ssize_t)r.size;
}

static ssize_t ep_write(struct vfm_endpoint *ep, const void *buf, size_t len)
{
    struct vfm_vu_client *c = vfm_ep_priv(ep);
    size_t done = 0;
    int wret = vfm_vu_client_wait_ready(c);

    if (wret)
        return wret;
    {
        int fd = data_fd_for(c, VFM_STATE_RESUMING);
        if (fd >= 0 && __atomic_load_n(&c->state, __ATOMIC_RELAXED) == VFM_STATE_RESUMING)
            return data_fd_write(c, fd, buf, len);
    }

    /* a zero-length write is sent too: it asks whether a load session is
     * there (ENODEV when not) */
    do {
        uint32_t n = len - done < c->send_max ? (uint32_t)(len - done) : c->send_max;
        /* argsz covers the data too: libvfio-user requires it */
        struct vfm_vu_mig_data q = {.argsz = (uint32_t)(sizeof(q) + n), .size = n};
        struct iovec qv[2] = {{&q, sizeof(q)}, {(char *)buf + done, n}};
        int ret;

        pthread_mutex_lock(&c->lock);
        ret = xfer(c, VFM_VU_MIG_DATA_WRITE, qv, 2, NULL, 0, NULL, 0, NULL, NULL, NULL);
        pthread_mutex_unlock(&c->lock);
        if (ret)
            return done ? (ssize_t)done : ret;
        done += n;
    } while (done < len);
    return (ssize_t)done;
}

static int ep_size(struct vfm_endpoint *ep, uint64_t *bytes)
{
    int ret = feature(vfm_ep_priv(ep), VFM_FEATURE_MIG_DATA_SIZE | VFM_FEATURE_GET, NULL, 0, bytes,
                      sizeof(*bytes));

    /* servers without the feature (libvfio-user) answer EINVAL */
    return ret == -EINVAL ? -ENOTTY : ret;
}

static int ep_precopy_info_flags(struct vfm_endpoint *ep, uint64_t *initial, uint64_t *dirty,
                                 uint32_t *flags)
{
    struct vfm_vu_client *c = vfm_ep_priv(ep);
    struct vfm_vu_precopy_info q = {.argsz = sizeof(q)}, r = {0};
    size_t got = 0;
    int ret;

    if (!c->info.server_caps.precopy_info)
        return -ENOTTY; /* the server did not negotiate the extension */
    ret = call(c, VFM_VU_VFIOMIG_PRECOPY_INFO, &q, sizeof(q), &r, sizeof(r), &got);
    if (ret)
        return ret;
    if (got != sizeof(r))
        return -EPROTO;
    *initial = r.initial_bytes;
    *dirty = r.dirty_bytes;
    *flags = r.flags;
    return 0;
}

static int ep_precopy_info(struct vfm_endpoint *ep, uint64_t *initial, uint64_t *dirty)
{
    uint32_t flags;
    return ep_precopy_info_flags(ep, initial, dirty, &flags);
}

static int ep_feature_raw(struct vfm_endpoint *ep, uint32_t argsz, uint32_t flags, void *data,
                          size_t len)
{
    struct {
        struct vfm_vu_feature f;
        uint8_t data[64];
    } q = {.f = {.argsz = argsz, .flags = flags}}, a;
    size_t got = 0;
    int ret;

    if (len > sizeof(q.data))
        return -EINVAL;
    if (len)
        memcpy(q.data, data, len);
    ret = call(vfm_ep_priv(ep), VFM_VU_DEVICE_FEATURE, &q, sizeof(q.f) + len, &a, sizeof(a.f) + len,
               &got);
    if (!ret && got > sizeof(a.f))
        memcpy(data, a.data, got - sizeof(a.f) < len ? got - sizeof(a.f) : len);
    return ret;
}

/* DMA logging over vfio-user: DEVICE_FEATURE with the ranges inline;
 * START's reply is the request with the page size kept, REPORT's the
 * request and then the bitmap. */
static int ep_log_start(struct vfm_endpoint *ep, const struct vfm_dma_range *ranges, uint32_t n,
                        uint64_t *page_size)
{
    uint64_t ctl[3] = {*page_size, n, 0};
    size_t len = sizeof(struct vfm_vu_feature) + sizeof(ctl) + (size_t)n * sizeof(*ranges), got = 0;
    uint8_t *q = malloc(2 * len), *a = q + len;
    struct vfm_vu_feature f = {.argsz = (uint32_t)len,
                               .flags = VFM_FEATURE_DMA_LOGGING_START | VFM_FEATURE_SET};
    int ret;

    if (!q)
        return -ENOMEM;
    memcpy(q, &f, sizeof(f));
    memcpy(q + sizeof(f), ctl, sizeof(ctl));
    memcpy(q + sizeof(f) + sizeof(ctl), ranges, (size_t)n * sizeof(*ranges));
    ret = call(vfm_ep_priv(ep), VFM_VU_DEVICE_FEATURE, q, len, a, len, &got);
    if (!ret && got < sizeof(f) + 8)
        ret = -EPROTO;
    if (!ret)
        memcpy(page_size, a + sizeof(f), 8);
    free(q);
    return ret;
}

static int ep_log_stop(struct vfm_endpoint *ep)
{
    struct vfm_vu_feature f = {.argsz = sizeof(f),
                               .flags = VFM_FEATURE_DMA_LOGGING_STOP | VFM_FEATURE_SET},
                          a;
    size_t got;
    return call(vfm_ep_priv(ep), VFM_VU_DEVICE_FEATURE, &f, sizeof(f), &a, sizeof(a), &got);
}

static int ep_log_report(struct vfm_endpoint *ep, uint64_t iova, uint64_t length,
                         uint64_t page_size, uint64_t *bitmap)
{
    struct {
        struct vfm_vu_feature f;
        uint64_t iova, length, page_size;
    } __attribute__((packed))
    q = {{0, VFM_FEATURE_DMA_LOGGING_REPORT | VFM_FEATURE_GET}, iova, length, page_size};
    size_t words = (size_t)((length / page_size + (length % page_size ? 1 : 0) + 63) / 64);
    size_t cap = sizeof(q) + words * 8, got = 0;
    uint8_t *a;
    int ret;

    if (cap > UINT32_MAX)
        return -E2BIG;
    q.f.argsz = (uint32_t)cap;
    a = malloc(cap);
    if (!a)
        return -ENOMEM;
    ret = call(vfm_ep_priv(ep), VFM_VU_DEVICE_FEATURE, &q, sizeof(q), a, cap, &got);
    if (!ret && got != cap)
        ret = -EPROTO; /* the request and the whole bitmap, nothing else */
    if (!ret)
        memcpy(bitmap, a + sizeof(q), words * 8);
    free(a);
    return ret;
}

static int ep_reset(struct vfm_endpoint *ep)
{
    struct vfm_vu_client *c = vfm_ep_priv(ep);
    int ret = call(c, VFM_VU_DEVICE_RESET, NULL, 0, NULL, 0, NULL);

    pthread_mutex_lock(&c->lock);
    data_fd_close(c); /* a reset ends any session */
    c->data_fd_state = VFM_STATE_COUNT;
    pthread_mutex_unlock(&c->lock);
    return ret;
}

/* A server that negotiated vfiomig's extension is the vfiomig runtime: its
 * state stream is checked where it loads. */
static bool ep_self_checked(struct vfm_endpoint *ep)
{
    struct vfm_vu_client *c = vfm_ep_priv(ep);
    return c->info.server_caps.precopy_info || c->info.server_caps.data_fd;
}

/* The open session's fd, for a caller that moves its bytes itself. */
static int ep_data_fd(struct vfm_endpoint *ep)
{
    struct vfm_vu_client *c = vfm_ep_priv(ep);
    uint32_t st = __atomic_load_n(&c->state, __ATOMIC_RELAXED);

    if (st != VFM_STATE_STOP_COPY && st != VFM_STATE_RESUMING)
        return -1;
    return data_fd_for(c, st);
}

/* The backend's calls; two tables that differ only in destroy: the
 * endpoint the client owns (none), and one that owns the client. */
#define CLIENT_OPS(destroy_op)                                                                     \
    {                                                                                              \
        .get_flags = ep_flags, .set_state = ep_set, .get_state = ep_get, .read = ep_read,          \
        .write = ep_write, .data_size = ep_size, .reset = ep_reset,                                \
        .precopy_info = ep_precopy_info, .precopy_info_flags = ep_precopy_info_flags,              \
        .feature = ep_feature_raw, .region = ep_region, .destroy = destroy_op,                     \
        .dma_log_start = ep_log_start, .dma_log_stop = ep_log_stop,                                \
        .dma_log_report = ep_log_report, .self_checked = ep_self_checked, .data_fd = ep_data_fd,   \
    }

static const struct vfm_endpoint_ops client_ep_ops = CLIENT_OPS(NULL);
static const struct vfm_endpoint_ops client_owning_ops = CLIENT_OPS(client_ep_destroy);
