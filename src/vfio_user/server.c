/* SPDX-License-Identifier: MIT */
/*
 * The vfio-user server (include/vfiomig/vfio_user.h, part 2): one device,
 * one client at a time, messages processed in order. Every state change
 * goes through the device runtime.
 */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <vfiomig/fsm.h>

#include "../common/internal.h"
#include "dma_remote.h"
#include "sock.h"

/* What the server announces in VERSION. */
#define SERVER_MAX_MSG_FDS 8u
#define SERVER_MAX_DMA_MAPS 1024u
#define SERVER_PGSIZE 4096u
/* Room for the fixed part of any message around max_data_xfer_size bytes,
 * and for a VERSION's JSON. */
#define MSG_OVERHEAD 4096u

struct vfm_server {
    struct vfm_server_config cfg;
    char *path;            /* the socket path we created, or NULL */
    dev_t path_dev;        /* ... and the socket we created there: removed */
    ino_t path_ino;        /* at the end only while it is still ours */
    int listen_fd;         /* -1: none */
    int conn_fd;           /* the client's connection, or -1 */
    int stop_fd;           /* eventfd: vfm_server_stop() was called */
    int ep_fd;             /* epoll: listen_fd, conn_fd, stop_fd, grace_fd */
    int grace_fd;          /* timerfd: how long a second client may wait */
    int waiting_fd;        /* a second client, accepted, waiting for the first to go */
    _Atomic int active_fd; /* the connection, for vfm_server_stop() */
    _Atomic bool stopping;
    bool in_run;     /* vfm_server_run() is the loop */
    bool conn_whole; /* this connection: whole messages, queued replies */
    bool conn_out;   /* EPOLLOUT is asked for the connection */
    bool negotiated;
    struct vfm_vu_caps client;
    uint32_t max_xfer;   /* ours: the most a client may send or ask for */
    uint32_t max_msg;    /* the largest message we take */
    uint8_t *in;         /* a received payload */
    uint8_t *out;        /* a reply payload */
    struct vfm_vu_rx rx; /* the connection's reader */
    struct vfm_vu_tx tx; /* replies the socket has not taken yet (whole) */
    struct vfm_log_sink log;

    /* Commands to the client (DMA_READ/DMA_WRITE) from any thread, and the
     * connection shared with them: whoever holds the reader role reads
     * the next message; a reply goes to the thread waiting for it, a
     * command read by a waiting thread is queued for the server. */
    pthread_mutex_t io_mu; /* reading, gone, peer_xfer, next_id, pend, queue */
    pthread_cond_t io_cv;
    pthread_mutex_t tx_mu; /* one writer of the connection at a time */
    bool reading;          /* the reader role is taken */
    bool gone;             /* the connection is ending: commands fail */
    uint32_t peer_xfer;    /* the client's max_data_xfer_size; 0: not negotiated */
    uint16_t next_id;
    int wake_fd; /* eventfd in ep_fd: a command queued, or bytes buffered */
    struct pend {
        bool used, done, filling;
        uint16_t id, cmd;
        uint64_t addr, count;
        void *buf; /* DMA_READ: where the bytes go */
        int err;
    } pend[8];
    struct qmsg *qhead, **qtail;
};

/* A command a waiting thread read off the connection, for the server. */
struct qmsg {
    struct qmsg *next;
    struct vfm_vu_hdr h;
    int dec;     /* the header's check (vfm_vu_decode_hdr()), or -EINVAL */
    bool ctrunc; /* fds were lost */
    bool lost;   /* framing lost: the client is dropped */
    unsigned nfds;
    int fds[VFM_VU_MAX_FDS];
    size_t len; /* of body; 0 when it was dropped */
    uint8_t body[];
};

#define slog(s, level, ...) vfm_log_to(&(s)->log, level, __VA_ARGS__)

static void io_end(struct vfm_server *s);

static int listen_on(const char *path, int *out, struct stat *made)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct stat st;
    mode_t old;
    int fd, ret;

    if (!*path)
        return -EINVAL; /* "" is the abstract namespace: no mode, anyone connects */
    if (strlen(path) >= sizeof(addr.sun_path))
        return -ENAMETOOLONG;
    strcpy(addr.sun_path, path);
    if (lstat(path, &st) == 0) {
        /* A socket nobody answers on is a dead server's: replace it. */
        int probe;
        if (!S_ISSOCK(st.st_mode))
            return -EEXIST;
        probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0)
            return -errno;
        ret = connect(probe, (struct sockaddr *)&addr, sizeof(addr));
        close(probe);
        if (ret == 0)
            return -EADDRINUSE;
        if (errno != ECONNREFUSED)
            return -EEXIST;
        unlink(path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    /* 0600 from the start: no moment in which others may connect */
    old = umask(0177);
    ret = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
    umask(old);
    if (ret < 0) {
        ret = -errno;
        close(fd);
        return ret;
    }
    if (lstat(path, made) < 0 || listen(fd, 4) < 0) {
        ret = -errno;
        close(fd);
        unlink(path); /* bound just now: ours */
        return ret;
    }
    *out = fd;
    return 0;
}

static int ep_add(struct vfm_server *s, int fd, uint32_t events)
{
    struct epoll_event e = {.events = events, .data.fd = fd};
    return epoll_ctl(s->ep_fd, EPOLL_CTL_ADD, fd, &e) ? -errno : 0;
}

/* The sparse-mmap areas: page-aligned, inside a region that has an fd,
 * not overlapping. Return: 0 or -EINVAL. */
static int check_sparse(const struct vfm_server_config *cfg)
{
    for (uint32_t i = 0; i < VFM_SERVER_MAX_REGIONS; i++) {
        const struct vfm_server_sparse *sp = &cfg->sparse[i];
        if (!sp->n)
            continue;
        if (i >= cfg->nregions || sp->n > VFM_SERVER_MAX_MMAP_AREAS || cfg->regions[i].fd < 0)
            return -EINVAL;
        for (uint32_t k = 0; k < sp->n; k++) {
            const struct vfm_server_mmap_area *a = &sp->areas[k];
            if (!a->size || a->offset % 4096 || a->size % 4096 ||
                a->offset > cfg->regions[i].size || a->size > cfg->regions[i].size - a->offset)
                return -EINVAL;
            for (uint32_t j = 0; j < k; j++)
                if (a->offset < sp->areas[j].offset + sp->areas[j].size &&
                    sp->areas[j].offset < a->offset + a->size)
                    return -EINVAL;
        }
    }
    return 0;
}

int vfm_server_new(const struct vfm_server_config *cfg, struct vfm_server **out)
{
    struct vfm_server *s;
    int ret = -ENOMEM;

    if (!cfg || cfg->version > VFM_SERVER_CONFIG_VERSION || !cfg->dev || !cfg->dma ||
        cfg->nregions > VFM_SERVER_MAX_REGIONS)
        return -EINVAL;
    if (cfg->max_data_xfer_size > VFM_VU_MAX_XFER_LIMIT)
        return -EINVAL;
    if (cfg->version >= 2 &&
        ((cfg->nirqs && (!cfg->irq_info || !cfg->set_irqs)) || check_sparse(cfg)))
        return -EINVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    /* only the members the caller's version has: an older caller's struct
     * ends before the newer ones (they stay zero: none) */
    memcpy(&s->cfg, cfg,
           cfg->version >= 2 ? sizeof(*cfg) : offsetof(struct vfm_server_config, sparse));
    s->cfg.socket_path = NULL; /* the caller's string: not kept */
    s->conn_fd = s->listen_fd = s->stop_fd = s->ep_fd = s->grace_fd = s->waiting_fd = -1;
    s->wake_fd = -1;
    pthread_mutex_init(&s->io_mu, NULL);
    pthread_mutex_init(&s->tx_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->io_cv, &ca);
    pthread_condattr_destroy(&ca);
    s->qtail = &s->qhead;
    atomic_init(&s->active_fd, -1);
    atomic_init(&s->stopping, false);
    vfm_vu_rx_init(&s->rx, -1, false);
    s->max_xfer = cfg->max_data_xfer_size ? cfg->max_data_xfer_size : VFM_VU_DEFAULT_MAX_XFER;
    s->max_msg = s->max_xfer + MSG_OVERHEAD;
    s->in = malloc(s->max_msg);
    s->out = malloc(s->max_msg);
    if (!s->in || !s->out)
        goto err;
    s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    s->grace_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    s->ep_fd = epoll_create1(EPOLL_CLOEXEC);
    if (s->stop_fd < 0 || s->grace_fd < 0 || s->wake_fd < 0 || s->ep_fd < 0) {
        ret = -errno;
        goto err;
    }
    if ((ret = ep_add(s, s->stop_fd, EPOLLIN)) || (ret = ep_add(s, s->grace_fd, EPOLLIN)) ||
        (ret = ep_add(s, s->wake_fd, EPOLLIN)))
        goto err;
    if (cfg->socket_path) {
        struct stat made;
        ret = listen_on(cfg->socket_path, &s->listen_fd, &made);
        if (ret)
            goto err;
        s->path_dev = made.st_dev;
        s->path_ino = made.st_ino;
        s->path = strdup(cfg->socket_path);
        if (!s->path) {
            ret = -ENOMEM;
            unlink(cfg->socket_path); /* ours: just made */
            goto err;
        }
        if ((ret = ep_add(s, s->listen_fd, EPOLLIN)))
            goto err;
    }
    *out = s;
    return 0;

err:
    vfm_server_free(s);
    return ret;
}

void vfm_server_stop(struct vfm_server *s)
{
    uint64_t one = 1;
    ssize_t r;
    int fd;

    /* all async-signal-safe: a store, write(), shutdown() */
    atomic_store(&s->stopping, true);
    r = write(s->stop_fd, &one, sizeof(one));
    (void)r;
    fd = atomic_load(&s->active_fd);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR); /* a read or write that waits returns */
}

void vfm_server_set_log(struct vfm_server *s, vfm_log_fn fn, void *ctx, int max_level)
{
    s->log = (struct vfm_log_sink){fn, ctx, max_level};
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

void vfm_server_free(struct vfm_server *s)
{
    if (!s)
        return;
    if (s->conn_fd >= 0)
        io_end(s);
    vfm_vu_rx_reset(&s->rx);
    vfm_vu_tx_reset(&s->tx);
    close_fd(&s->conn_fd);
    close_fd(&s->waiting_fd);
    close_fd(&s->listen_fd);
    close_fd(&s->stop_fd);
    close_fd(&s->grace_fd);
    close_fd(&s->wake_fd);
    close_fd(&s->ep_fd);
    pthread_mutex_destroy(&s->io_mu);
    pthread_mutex_destroy(&s->tx_mu);
    pthread_cond_destroy(&s->io_cv);
    if (s->path) {
        /* only the socket this server created, not one that replaced it */
        struct stat now;
        if (lstat(s->path, &now) == 0 && now.st_dev == s->path_dev && now.st_ino == s->path_ino)
            unlink(s->path);
    }
    free(s->out);
    free(s->in);
    free(s->path);
    free(s);
}

static const char *dev_name(struct vfm_server *s)
{
    return vfm_device_name(s->cfg.dev);
}

/* The client is gone: its mappings go, and the runtime's release policy
 * (vfm_device_release()) leaves the device for the next client. */
static void drop_client(struct vfm_server *s, const char *why)
{
    uint32_t st;

    slog(s, LOG_INFO, "%s: client disconnected (%s)", dev_name(s), why);
    io_end(s); /* before the fd goes: a device thread may be reading it */
    atomic_store(&s->active_fd, -1);
    epoll_ctl(s->ep_fd, EPOLL_CTL_DEL, s->conn_fd, NULL);
    close_fd(&s->conn_fd);
    vfm_vu_rx_reset(&s->rx);
    vfm_vu_tx_reset(&s->tx);
    s->conn_out = false;
    s->negotiated = false;
    vfm_dma_unmap_all(s->cfg.dma);
    st = vfm_device_release(s->cfg.dev);
    slog(s, LOG_INFO, "%s: left in %s for the next client", dev_name(s), vfm_state_str(st));
}

/* Sends one message on the connection: queued (whole) or written. */
static int conn_send(struct vfm_server *s, const struct vfm_vu_hdr *h, const struct iovec *iov,
                     int iovcnt, const int *fds, unsigned nfds)
{
    int ret;

    pthread_mutex_lock(&s->tx_mu); /* device threads send DMA commands too */
    if (s->conn_whole)
        ret = vfm_vu_tx_send(&s->tx, s->conn_fd, h, iov, iovcnt, fds, nfds);
    else
        ret = vfm_vu_send(s->conn_fd, h, iov, iovcnt, fds, nfds);
    pthread_mutex_unlock(&s->tx_mu);
    return ret;
}

static bool tx_pending(struct vfm_server *s)
{
    bool p;

    pthread_mutex_lock(&s->tx_mu);
    p = vfm_vu_tx_pending(&s->tx);
    pthread_mutex_unlock(&s->tx_mu);
    return p;
}

static int tx_flush(struct vfm_server *s)
{
    int ret;

    pthread_mutex_lock(&s->tx_mu);
    ret = vfm_vu_tx_flush(&s->tx, s->conn_fd);
    pthread_mutex_unlock(&s->tx_mu);
    return ret;
}

static int send_error(struct vfm_server *s, const struct vfm_vu_hdr *req, int err)
{
    struct vfm_vu_hdr h = vfm_vu_error_hdr(req, err);
    return conn_send(s, &h, NULL, 0, NULL, 0);
}

/* Sends a reply with a payload (and fds). */
static int reply(struct vfm_server *s, const struct vfm_vu_hdr *req, const struct iovec *iov,
                 int iovcnt, const int *fds, unsigned nfds)
{
    struct vfm_vu_hdr h = {
        .msg_id = req->msg_id,
        .cmd = req->cmd,
        .msg_size = sizeof(h),
        .flags = VFM_VU_TYPE_REPLY,
    };

    if (req->flags & VFM_VU_NO_REPLY)
        return 0;
    for (int i = 0; i < iovcnt; i++)
        h.msg_size += (uint32_t)iov[i].iov_len;
    return conn_send(s, &h, iov, iovcnt, fds, nfds);
}

static int reply_buf(struct vfm_server *s, const struct vfm_vu_hdr *req, const void *p, size_t len)
{
    struct iovec v = {(void *)p, len};
    return reply(s, req, &v, len ? 1 : 0, NULL, 0);
}

static int do_version(struct vfm_server *s, const struct vfm_vu_hdr *h,
                      const struct vfm_vu_request *r)
{
    struct vfm_vu_version v = {VFM_VU_MAJOR, 0};
    struct vfm_vu_caps ours;
    struct iovec iov[2];
    char *json;
    int ret;

    if (s->negotiated)
        return -EINVAL; /* once per connection */
    if (r->u.version.major != VFM_VU_MAJOR)
        return -ENOTSUP;
    ret = vfm_vu_caps_parse((const char *)r->data, r->data_len, &s->client);
    if (ret)
        return ret;
    if (s->client.max_data_xfer_size < 512)
        return -EINVAL; /* too small to carry a region read reply usefully */
    v.minor = r->u.version.minor < VFM_VU_MINOR ? r->u.version.minor : VFM_VU_MINOR;
    vfm_vu_caps_default(&ours);
    ours.max_msg_fds = SERVER_MAX_MSG_FDS;
    ours.max_data_xfer_size = s->max_xfer;
    ours.max_dma_maps = SERVER_MAX_DMA_MAPS;
    ours.pgsizes = SERVER_PGSIZE;
    ours.migration_pgsize = SERVER_PGSIZE;
    /* the reader takes a body across any reads; said only to a client that
     * knows the extension (it said the same of itself): QEMU 11.1 warns
     * "spurious capabilities" at any key it does not know */
    ours.whole_bodies = s->client.whole_bodies;
    /* the data fd extension: to a client that asked for it */
    ours.data_fd = s->client.data_fd;
    /* the pre-copy information extension: when both want it */
    ours.precopy_info =
        s->client.precopy_info && (vfm_device_flags(s->cfg.dev) & VFM_MIGRATION_PRE_COPY);
    s->client.precopy_info = ours.precopy_info;
    json = vfm_vu_caps_format(&ours);
    if (!json)
        return -ENOMEM;
    iov[0] = (struct iovec){&v, sizeof(v)};
    iov[1] = (struct iovec){json, strlen(json) + 1};
    ret = reply(s, h, iov, 2, NULL, 0);
    free(json);
    if (ret)
        return ret;
    s->negotiated = true;
    pthread_mutex_lock(&s->io_mu);
    s->peer_xfer = s->client.max_data_xfer_size; /* DMA commands may go now */
    pthread_mutex_unlock(&s->io_mu);
    return 1; /* replied */
}

static int do_region_info(struct vfm_server *s, const struct vfm_vu_hdr *h,
                          const struct vfm_vu_request *r)
{
    const struct vfm_server_region *reg;
    const struct vfm_server_sparse *sp;
    struct vfm_vu_region_info info = {.argsz = sizeof(info)};
    struct vfm_vu_sparse_mmap cap = {.header = {VFM_VU_REGION_INFO_CAP_SPARSE_MMAP, 1, 0}};
    struct iovec v[3] = {{&info, sizeof(info)}};
    int nv = 1;
    bool send_fd;

    if (r->u.region_info.index >= s->cfg.nregions)
        return -EINVAL;
    reg = &s->cfg.regions[r->u.region_info.index];
    sp = &s->cfg.sparse[r->u.region_info.index];
    info.index = r->u.region_info.index;
    info.size = reg->size;
    info.flags = reg->size ? reg->flags & (VFM_VU_REGION_READ_FLAG | VFM_VU_REGION_WRITE_FLAG) : 0;
    send_fd = reg->size && reg->fd >= 0 && s->client.max_msg_fds >= 1;
    if (send_fd)
        info.flags |= VFM_VU_REGION_MMAP_FLAG;
    if (send_fd && sp->n) {
        /* only these parts may be mapped: the capability, when the client's
         * buffer holds it; else the size it needs (it asks again) */
        size_t need = sizeof(info) + sizeof(cap) + sp->n * sizeof(sp->areas[0]);
        info.flags |= VFM_VU_REGION_CAPS_FLAG;
        info.argsz = (uint32_t)need;
        if (r->u.region_info.argsz >= need) {
            info.cap_offset = sizeof(info);
            cap.nr_areas = sp->n;
            v[nv++] = (struct iovec){&cap, sizeof(cap)};
            v[nv++] = (struct iovec){(void *)sp->areas, sp->n * sizeof(sp->areas[0])};
        }
    }
    return reply(s, h, v, nv, send_fd ? &reg->fd : NULL, send_fd ? 1 : 0) ?: 1;
}

static int do_irq_info(struct vfm_server *s, const struct vfm_vu_hdr *h,
                       const struct vfm_vu_request *r)
{
    struct vfm_vu_irq_info info = {.argsz = sizeof(info), .index = r->u.irq_info.index};
    int ret;

    if (info.index >= s->cfg.nirqs)
        return -EINVAL;
    if ((ret = s->cfg.irq_info(s->cfg.priv, info.index, &info)))
        return ret;
    info.argsz = sizeof(info);
    info.index = r->u.irq_info.index;
    return reply_buf(s, h, &info, sizeof(info)) ?: 1;
}

static int do_set_irqs(struct vfm_server *s, const struct vfm_vu_hdr *h,
                       const struct vfm_vu_request *r, const int *fds, unsigned nfds)
{
    const struct vfm_vu_irq_set *q = &r->u.irq_set;
    struct vfm_vu_irq_info info = {.argsz = sizeof(info), .index = q->index};
    uint32_t data = q->flags & VFM_VU_IRQ_SET_DATA_MASK,
             action = q->flags & VFM_VU_IRQ_SET_ACTION_MASK_ALL;
    int ret;

    if (q->index >= s->cfg.nirqs ||
        (q->flags & ~(VFM_VU_IRQ_SET_DATA_MASK | VFM_VU_IRQ_SET_ACTION_MASK_ALL)) || !data ||
        (data & (data - 1)) || !action || (action & (action - 1)))
        return -EINVAL;
    if ((ret = s->cfg.irq_info(s->cfg.priv, q->index, &info)))
        return ret;
    /* count 0: DATA_NONE with TRIGGER turns the whole index off */
    if (q->count == 0
            ? !(data == VFM_VU_IRQ_SET_DATA_NONE && action == VFM_VU_IRQ_SET_ACTION_TRIGGER)
            : q->start > info.count || q->count > info.count - q->start)
        return -EINVAL;
    if ((data == VFM_VU_IRQ_SET_DATA_NONE && (r->data_len || nfds)) ||
        (data == VFM_VU_IRQ_SET_DATA_BOOL && (r->data_len != q->count || nfds)) ||
        (data == VFM_VU_IRQ_SET_DATA_EVENTFD && (r->data_len || nfds != q->count)))
        return -EINVAL;
    if ((ret = s->cfg.set_irqs(s->cfg.priv, q, r->data, r->data_len, fds, nfds)))
        return ret;
    return reply_buf(s, h, NULL, 0) ?: 1;
}

static int do_region_access(struct vfm_server *s, const struct vfm_vu_hdr *h,
                            const struct vfm_vu_request *r)
{
    const struct vfm_vu_region_access *a = &r->u.access;
    const struct vfm_server_region *reg;
    bool write = h->cmd == VFM_VU_REGION_WRITE;
    struct vfm_vu_region_access out = *a;
    struct iovec iov[2] = {{&out, sizeof(out)}, {s->out, a->count}};
    int ret;

    if (a->region >= s->cfg.nregions)
        return -EINVAL;
    reg = &s->cfg.regions[a->region];
    if (!reg->size || a->offset > reg->size || a->count > reg->size - a->offset)
        return -EINVAL;
    if (!(reg->flags & (write ? VFM_VU_REGION_WRITE_FLAG : VFM_VU_REGION_READ_FLAG)))
        return -EPERM;
    if (reg->mem) {
        if (write)
            memcpy((char *)reg->mem + a->offset, r->data, a->count);
        else
            memcpy(s->out, (char *)reg->mem + a->offset, a->count);
    } else if (reg->access) {
        ret = reg->access(s->cfg.priv, a->region, a->offset,
                          write ? (void *)r->data : (void *)s->out, a->count, write);
        if (ret)
            return ret;
    } else {
        return -EINVAL;
    }
    return reply(s, h, iov, write ? 1 : 2, NULL, 0) ?: 1;
}

/* VFIO_USER_DEVICE_FEATURE: the device runtime decides (its rules are the
 * kernel core's); PROBE and SET are answered with the request's payload,
 * as the specification says, GET with the feature's data. */
static int do_feature(struct vfm_server *s, const struct vfm_vu_hdr *h,
                      const struct vfm_vu_request *r)
{
    uint32_t flags = r->u.feature.flags;
    struct vfm_vu_feature *f = (struct vfm_vu_feature *)s->out;
    uint8_t *data = s->out + sizeof(*f);
    size_t dlen = 0;
    int ret;

    /* DMA_LOGGING_REPORT's reply is its request with the bitmap after it
     * (the specification); every other GET's is the data alone */
    size_t pre =
        !(flags & VFM_FEATURE_PROBE) && (flags & VFM_FEATURE_MASK) == VFM_FEATURE_DMA_LOGGING_REPORT
            ? r->data_len
            : 0;

    /* the data fd extension: a SET that opens a session gets its fd, when
     * there is a reply to carry it */
    bool want_fd = s->client.data_fd && !(h->flags & VFM_VU_NO_REPLY) &&
                   (flags & VFM_FEATURE_MASK) == VFM_FEATURE_MIG_DEVICE_STATE &&
                   (flags & VFM_FEATURE_SET) && !(flags & VFM_FEATURE_PROBE);
    int fd = -1;

    if (pre > s->max_msg - sizeof(*f))
        return -EINVAL;
    ret = vfm_device_feature_fd(s->cfg.dev, flags, r->u.feature.argsz, r->data, r->data_len,
                                data + pre, s->max_msg - sizeof(*f) - pre, &dlen,
                                want_fd ? &fd : NULL);
    if (ret)
        return ret;
    f->flags = flags;
    if (fd >= 0) {
        /* the request's {device_state, data_fd} with data_fd 0: the fd
         * this reply carries; our copy goes once it is sent */
        struct vfm_vu_mig_state ms;
        struct iovec v = {s->out, sizeof(*f) + sizeof(ms)};
        memcpy(&ms, r->data, sizeof(ms)); /* the runtime checked its size */
        ms.data_fd = 0;
        f->argsz = r->u.feature.argsz;
        memcpy(data, &ms, sizeof(ms));
        ret = reply(s, h, &v, 1, &fd, 1);
        close(fd);
        return ret ?: 1;
    }
    if ((flags & VFM_FEATURE_PROBE) || (!(flags & VFM_FEATURE_GET) && !dlen)) {
        /* a SET's reply is its request; DMA_LOGGING_START's carries the
         * page size kept (dlen) */
        f->argsz = r->u.feature.argsz;
        memcpy(data, r->data, r->data_len); /* fits: it came in a message */
        return reply_buf(s, h, s->out, sizeof(*f) + r->data_len) ?: 1;
    }
    memcpy(data, r->data, pre);
    dlen += pre;
    f->argsz = (uint32_t)(sizeof(*f) + dlen);
    return reply_buf(s, h, s->out, sizeof(*f) + dlen) ?: 1;
}

struct mig_read_ctx {
    struct vfm_server *s;
    const struct vfm_vu_hdr *req;
    uint32_t want;
};

/* Sends the MIG_DATA_READ reply straight from the session's bytes. */
static int mig_read_send(void *arg, const void *data, size_t n)
{
    struct mig_read_ctx *c = arg;
    struct vfm_vu_mig_data m = {.argsz = (uint32_t)(sizeof(m) + n), .size = (uint32_t)n};
    struct iovec iov[2] = {{&m, sizeof(m)}, {(void *)data, n}};
    struct vfm_vu_hdr h = {
        .msg_id = c->req->msg_id, .cmd = c->req->cmd, .flags = VFM_VU_TYPE_REPLY};

    if (c->req->flags & VFM_VU_NO_REPLY)
        return 0;
    h.msg_size = (uint32_t)(sizeof(h) + sizeof(m) + n);
    return conn_send(c->s, &h, iov, 2, NULL, 0);
}

/* The same, gathered from the session's pieces (a device saving in
 * pieces: record headers and the device's memory), in one message. */
static int mig_read_sendv(void *arg, const struct iovec *data, int cnt, size_t n)
{
    struct mig_read_ctx *c = arg;
    struct vfm_vu_mig_data m = {.argsz = (uint32_t)(sizeof(m) + n), .size = (uint32_t)n};
    struct iovec iov[1 + VFM_DATA_IOV_MAX] = {{&m, sizeof(m)}};
    struct vfm_vu_hdr h = {
        .msg_id = c->req->msg_id, .cmd = c->req->cmd, .flags = VFM_VU_TYPE_REPLY};

    if (c->req->flags & VFM_VU_NO_REPLY)
        return 0;
    memcpy(iov + 1, data, (size_t)cnt * sizeof(*data));
    h.msg_size = (uint32_t)(sizeof(h) + sizeof(m) + n);
    return conn_send(c->s, &h, iov, 1 + cnt, NULL, 0);
}

/*
 * MIG_DATA_READ in PRE_COPY / PRE_COPY_P2P. The specification reads a reply
 * shorter than asked as "no more data for now", so the reply is filled from
 * as many of the session's records as it takes, and is short only when the
 * device has nothing more pending (its temporary end) or the stream ended.
 */
static int mig_read_precopy(struct vfm_server *s, struct mig_read_ctx *c)
{
    uint8_t *buf = s->out + sizeof(struct vfm_vu_mig_data);
    size_t n = 0;

    while (n < c->want) {
        ssize_t k = vfm_device_data_read(s->cfg.dev, buf + n, c->want - n);
        if (k == -ENOMSG || k == 0)
            break; /* the temporary end, or the end of the whole stream */
        if (k < 0) {
            if (n)
                break; /* send what was read; the next read gets the error */
            return (int)k;
        }
        n += (size_t)k;
    }
    return mig_read_send(c, buf, n) ?: 1;
}

static int do_mig_read(struct vfm_server *s, const struct vfm_vu_hdr *h,
                       const struct vfm_vu_request *r)
{
    struct mig_read_ctx c = {s, h, r->u.mig.size};
    uint32_t st;
    ssize_t n;

    if (c.want > s->client.max_data_xfer_size)
        return -E2BIG; /* the client said it cannot take that much */
    st = vfm_device_get_state(s->cfg.dev);
    if (st == VFM_STATE_PRE_COPY || st == VFM_STATE_PRE_COPY_P2P)
        return mig_read_precopy(s, &c);
    /* STOP_COPY: a read is short only at the end of the state (or, rarely,
     * when a reply would need more pieces than one gather takes) */
    n = vfm_device_data_read_iov(s->cfg.dev, c.want, mig_read_sendv, &c);
    if (n == -ENOMSG) /* pre-copy, nothing now: a short (empty) reply */
        return mig_read_send(&c, "", 0) ?: 1;
    return n < 0 ? (int)n : 1;
}

/* What is wrong with a MIG_DATA_WRITE head, for a body of @body bytes:
 * 0, or the errno its reply carries. */
static int mig_write_check(const struct vfm_server *s, const struct vfm_vu_mig_data *m, size_t body)
{
    if (m->size != body || m->argsz < sizeof(*m))
        return -EINVAL;
    return m->size > s->max_xfer ? -E2BIG : 0;
}

/* A MIG_DATA_WRITE refused for its head: the body was dropped (framing
 * kept) and nothing reached the load session. */
#define MIG_WRITE_REFUSED (-ECANCELED)

struct mig_write_ctx {
    struct vfm_server *s;
    struct vfm_vu_mig_data m;
    size_t body;
    bool head_read; /* m is in; the head comes with the first piece */
    int refused;    /* mig_write_check()'s error */
};

static int mig_write_recv(void *arg, void *data, size_t n)
{
    struct mig_write_ctx *c = arg;
    struct vfm_vu_rx *rx = &c->s->rx;
    int ret;

    if (c->head_read)
        return vfm_vu_rx_body(rx, &(struct iovec){data, n}, 1);
    /* the 8-byte head and the first piece together (from the bytes the
     * header's read took, then in one system call): the head is checked
     * before the piece is committed, and a refused piece is left where it
     * landed (space the session had not filled yet) */
    ret = vfm_vu_rx_body(rx, (struct iovec[]){{&c->m, sizeof(c->m)}, {data, n}}, 2);
    if (ret)
        return ret;
    c->head_read = true;
    c->refused = mig_write_check(c->s, &c->m, c->body);
    if (!c->refused)
        return 0;
    ret = vfm_vu_rx_discard(rx, c->body - n);
    return ret ? ret : MIG_WRITE_REFUSED;
}

/*
 * MIG_DATA_WRITE, read straight into the load session: the 8-byte head
 * comes with the first piece of the body (a message is then taken in two
 * system calls, as a bare loop takes it). Return: as dispatch(), or
 * VFM_DROP (-EPROTO, the socket failed mid-body) to drop the client.
 */
static int do_mig_write(struct vfm_server *s, const struct vfm_vu_hdr *h, size_t len)
{
    struct mig_write_ctx c = {.s = s};
    ssize_t n;
    int ret;

    (void)h;
    if (len < sizeof(c.m) || !s->negotiated) {
        ret = vfm_vu_rx_discard(&s->rx, len);
        return ret ? ret : -EINVAL;
    }
    c.body = len - sizeof(c.m);
    n = vfm_device_data_write_with(s->cfg.dev, c.body, mig_write_recv, &c);
    if (n == MIG_WRITE_REFUSED && c.refused)
        return c.refused;
    if (n < 0 && c.head_read)
        return (int)n; /* the stream's error, or the socket's */
    if (!c.head_read) {
        /* nothing asked for (no load session, or an empty body) */
        ret = vfm_vu_rx_body(&s->rx, &(struct iovec){&c.m, sizeof(c.m)}, 1);
        if (!ret)
            ret = vfm_vu_rx_discard(&s->rx, c.body);
        if (ret)
            return ret;
        ret = mig_write_check(s, &c.m, c.body);
        if (ret)
            return ret;
    }
    return n < 0 ? (int)n : 0;
}

/* Handles one checked command. Return: 1 replied; 0 reply with no payload;
 * negative errno: error reply. */
static int dispatch(struct vfm_server *s, const struct vfm_vu_hdr *h,
                    const struct vfm_vu_request *r, int *fds, unsigned nfds)
{
    int ret;

    if (h->cmd == VFM_VU_VERSION)
        return do_version(s, h, r);
    if (!s->negotiated)
        return -EINVAL; /* VERSION first */

    switch (h->cmd) {
    case VFM_VU_DMA_MAP:
        slog(s, LOG_DEBUG, "%s: DMA_MAP 0x%llx+0x%llx %s%s%s", dev_name(s),
             (unsigned long long)r->u.dma_map.addr, (unsigned long long)r->u.dma_map.size,
             r->u.dma_map.flags & VFM_VU_DMA_READ_FLAG ? "r" : "",
             r->u.dma_map.flags & VFM_VU_DMA_WRITE_FLAG ? "w" : "",
             nfds ? " (fd)" : " (no fd: DMA_READ/DMA_WRITE)");
        ret = vfm_dma_map(s->cfg.dma, r->u.dma_map.addr, r->u.dma_map.size, nfds ? fds[0] : -1,
                          r->u.dma_map.offset,
                          r->u.dma_map.flags & (VFM_VU_DMA_READ_FLAG | VFM_VU_DMA_WRITE_FLAG));
        return ret;
    case VFM_VU_DMA_UNMAP:
        slog(s, LOG_DEBUG, "%s: DMA_UNMAP 0x%llx+0x%llx", dev_name(s),
             (unsigned long long)r->u.dma_unmap.addr, (unsigned long long)r->u.dma_unmap.size);
        ret = vfm_dma_unmap(s->cfg.dma, r->u.dma_unmap.addr, r->u.dma_unmap.size);
        if (ret)
            return ret;
        return reply_buf(s, h, &r->u.dma_unmap, sizeof(r->u.dma_unmap)) ?: 1;
    case VFM_VU_DEVICE_GET_INFO: {
        struct vfm_vu_device_info info = {
            .argsz = sizeof(info),
            .flags = VFM_VU_DEVICE_FLAGS_RESET | VFM_VU_DEVICE_FLAGS_PCI,
            .num_regions = s->cfg.nregions,
            .num_irqs = s->cfg.nirqs,
        };
        return reply_buf(s, h, &info, sizeof(info)) ?: 1;
    }
    case VFM_VU_DEVICE_GET_REGION_INFO:
        return do_region_info(s, h, r);
    case VFM_VU_DEVICE_GET_REGION_IO_FDS:
        return -ENOTSUP;
    case VFM_VU_DEVICE_GET_IRQ_INFO:
        return do_irq_info(s, h, r);
    case VFM_VU_DEVICE_SET_IRQS:
        return do_set_irqs(s, h, r, fds, nfds);
    case VFM_VU_REGION_READ:
    case VFM_VU_REGION_WRITE:
        return do_region_access(s, h, r);
    case VFM_VU_DEVICE_RESET:
        ret = vfm_device_reset(s->cfg.dev);
        return ret > 0 ? 0 : ret; /* deferred: done when the transition ends */
    case VFM_VU_DEVICE_FEATURE:
        return do_feature(s, h, r);
    case VFM_VU_MIG_DATA_READ:
        return do_mig_read(s, h, r);
    case VFM_VU_VFIOMIG_PRECOPY_INFO: {
        struct vfm_vu_precopy_info pi = {.argsz = sizeof(pi)};
        uint64_t initial, dirty;
        uint32_t flags;
        if (!s->client.precopy_info)
            return -ENOSYS; /* not negotiated: as unknown as it is to others */
        ret = vfm_device_precopy_info_flags(s->cfg.dev, &initial, &dirty, &flags);
        if (ret)
            return ret;
        pi.flags = flags; /* VFIO_PRECOPY_INFO_REINIT, after the v2 opt-in */
        pi.initial_bytes = initial;
        pi.dirty_bytes = dirty;
        return reply_buf(s, h, &pi, sizeof(pi)) ?: 1;
    }
    default:
        return -ENOSYS;
    }
}

/* ---- commands to the client: DMA_READ and DMA_WRITE ------------------ */

static void wake(struct vfm_server *s)
{
    uint64_t one = 1;
    ssize_t r = write(s->wake_fd, &one, sizeof(one));
    (void)r; /* a counter at its limit is awake already */
}

static void deadline_in(struct timespec *t, unsigned ms)
{
    clock_gettime(CLOCK_MONOTONIC, t);
    t->tv_sec += ms / 1000;
    t->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

static int ms_left(const struct timespec *t)
{
    struct timespec now;
    int64_t ms;

    clock_gettime(CLOCK_MONOTONIC, &now);
    ms = (int64_t)(t->tv_sec - now.tv_sec) * 1000 + (t->tv_nsec - now.tv_nsec) / 1000000L;
    return ms < 0 ? 0 : ms > 60000 ? 60000 : (int)ms;
}

/* The server's next step: a queued command (returned), or the reader role
 * (NULL). A device thread that waits for its reply keeps taking the role;
 * the commands it queues meanwhile are the server's to run (the client
 * may be waiting for one before it replies: QEMU waits for DMA_UNMAP). */
static struct qmsg *role_or_queued(struct vfm_server *s)
{
    struct qmsg *q = NULL;

    pthread_mutex_lock(&s->io_mu);
    while (s->reading && !s->qhead)
        pthread_cond_wait(&s->io_cv, &s->io_mu);
    if (s->qhead) {
        q = s->qhead;
        s->qhead = q->next;
        if (!s->qhead)
            s->qtail = &s->qhead;
    } else {
        s->reading = true;
    }
    pthread_mutex_unlock(&s->io_mu);
    return q;
}

static void role_give(struct vfm_server *s)
{
    pthread_mutex_lock(&s->io_mu);
    s->reading = false;
    pthread_cond_broadcast(&s->io_cv);
    pthread_mutex_unlock(&s->io_mu);
}

/* A reply's body (reader role held): checked and given to the thread
 * waiting for it, or dropped (a stray reply: no one asked, or the one who
 * asked gave up). Return: 0, or the connection's error. */
static int route_reply(struct vfm_server *s, const struct vfm_vu_hdr *h, size_t len)
{
    struct vfm_vu_dma_rw rw = {0};
    struct pend *p = NULL;
    int ret = 0, err = 0;

    pthread_mutex_lock(&s->io_mu);
    for (unsigned i = 0; i < sizeof(s->pend) / sizeof(s->pend[0]); i++)
        if (s->pend[i].used && !s->pend[i].done && s->pend[i].id == h->msg_id &&
            s->pend[i].cmd == h->cmd) {
            p = &s->pend[i];
            p->filling = true; /* its caller waits for us before it leaves */
            break;
        }
    pthread_mutex_unlock(&s->io_mu);
    if (!p) {
        slog(s, LOG_DEBUG, "%s: a reply no one waits for: %s id %u (%zu bytes)", dev_name(s),
             vfm_vu_cmd_name(h->cmd), (unsigned)h->msg_id, len);
        return vfm_vu_rx_discard(&s->rx, len);
    }
    if (h->flags & VFM_VU_ERROR) {
        err = h->error ? -(int)h->error : -EIO;
        ret = vfm_vu_rx_discard(&s->rx, len);
    } else if (h->cmd == VFM_VU_DMA_READ) {
        if (len != sizeof(rw) + p->count) {
            err = -EPROTO;
            ret = vfm_vu_rx_discard(&s->rx, len);
        } else {
            ret = vfm_vu_rx_body(&s->rx, &(struct iovec){&rw, sizeof(rw)}, 1);
            if (!ret && (rw.addr != p->addr || rw.count != p->count)) {
                err = -EPROTO;
                ret = vfm_vu_rx_discard(&s->rx, p->count);
            } else if (!ret) {
                ret = vfm_vu_rx_body(&s->rx, &(struct iovec){p->buf, p->count}, 1);
            }
        }
    } else if (len < 12 || len > sizeof(rw)) { /* DMA_WRITE: count u32 or u64 */
        err = -EPROTO;
        ret = vfm_vu_rx_discard(&s->rx, len);
    } else {
        ret = vfm_vu_rx_body(&s->rx, &(struct iovec){&rw, len}, 1);
        if (!ret && (rw.addr != p->addr || (uint32_t)rw.count != (uint32_t)p->count))
            err = -EPROTO;
    }
    pthread_mutex_lock(&s->io_mu);
    p->filling = false;
    p->done = true;
    p->err = ret ? ret : err;
    pthread_cond_broadcast(&s->io_cv);
    pthread_mutex_unlock(&s->io_mu);
    return ret;
}

static void queue_push(struct vfm_server *s, struct qmsg *q)
{
    pthread_mutex_lock(&s->io_mu);
    *s->qtail = q;
    s->qtail = &q->next;
    pthread_cond_broadcast(&s->io_cv); /* a server waiting for the role runs it */
    pthread_mutex_unlock(&s->io_mu);
    wake(s);
}

static struct qmsg *queue_pop(struct vfm_server *s)
{
    struct qmsg *q;

    pthread_mutex_lock(&s->io_mu);
    q = s->qhead;
    if (q) {
        s->qhead = q->next;
        if (!s->qhead)
            s->qtail = &s->qhead;
    }
    pthread_mutex_unlock(&s->io_mu);
    return q;
}

/* Reads the next message for a thread that waits for a reply (reader role
 * held): a reply is routed, a command is queued for the server, whole.
 * Return: 0; -ETIMEDOUT (nothing came by @deadline); the connection's
 * error. */
static int follower_read(struct vfm_server *s, const struct timespec *deadline)
{
    struct vfm_vu_hdr h;
    int fds[VFM_VU_MAX_FDS], ret, dec;
    unsigned nfds = 0;
    bool ctrunc, cmd;
    struct qmsg *q;
    size_t len;

    for (;;) {
        struct pollfd pf = {.fd = s->conn_fd, .events = POLLIN};
        int ms;

        ret = vfm_vu_rx_ready(&s->rx, s->max_msg);
        if (ret < 0)
            return ret;
        if (ret == 1)
            break;
        if (!(ms = ms_left(deadline)))
            return -ETIMEDOUT;
        ret = poll(&pf, 1, ms);
        if (ret < 0 && errno != EINTR)
            return -errno;
        if (ret > 0)
            vfm_vu_rx_readable(&s->rx);
    }
    ret = vfm_vu_rx_hdr(&s->rx, &h, fds, &nfds, &ctrunc);
    if (ret)
        return ret;
    dec = vfm_vu_decode_hdr(&h, s->max_msg);
    len = dec == -EINVAL && h.msg_size < sizeof(h) ? 0 : h.msg_size - sizeof(h);
    if (!dec && (h.flags & VFM_VU_TYPE_MASK) == VFM_VU_TYPE_REPLY) {
        vfm_vu_close_fds(fds, nfds);
        return route_reply(s, &h, len);
    }
    cmd = !dec && (h.flags & VFM_VU_TYPE_MASK) == VFM_VU_TYPE_COMMAND && !ctrunc;
    q = calloc(1, sizeof(*q) + (cmd ? len : 0));
    if (!q) {
        vfm_vu_close_fds(fds, nfds);
        return -ENOMEM; /* the message is half read: the client goes */
    }
    q->h = h;
    q->dec = dec ? dec : cmd || ctrunc ? 0 : -EINVAL;
    q->ctrunc = ctrunc;
    q->lost = dec == -EINVAL && h.msg_size < sizeof(h);
    q->nfds = nfds;
    memcpy(q->fds, fds, nfds * sizeof(int));
    if (!q->lost) {
        ret = cmd ? vfm_vu_rx_body(&s->rx, &(struct iovec){q->body, len}, 1)
                  : vfm_vu_rx_discard(&s->rx, len);
        if (ret) {
            vfm_vu_close_fds(q->fds, q->nfds);
            free(q);
            return ret;
        }
        q->len = cmd ? len : 0;
    }
    queue_push(s, q);
    return 0;
}

/* One DMA_READ or DMA_WRITE of @n bytes (at most the client's
 * max_data_xfer_size), and its reply. */
static int remote_one(struct vfm_server *s, bool write, uint64_t addr, void *buf, uint32_t n)
{
    struct vfm_vu_dma_rw rw = {.addr = addr, .count = n};
    struct iovec iov[2] = {{&rw, sizeof(rw)}, {buf, n}};
    struct vfm_vu_hdr h = {.flags = VFM_VU_TYPE_COMMAND};
    struct pend *p = NULL;
    struct timespec dl;
    int ret = 0;

    deadline_in(&dl, VFM_DMA_MSG_TIMEOUT_MS);
    pthread_mutex_lock(&s->io_mu);
    while (!s->gone && s->peer_xfer && !p) {
        for (unsigned i = 0; i < sizeof(s->pend) / sizeof(s->pend[0]) && !p; i++)
            if (!s->pend[i].used)
                p = &s->pend[i];
        if (!p && pthread_cond_timedwait(&s->io_cv, &s->io_mu, &dl) == ETIMEDOUT) {
            ret = -ETIMEDOUT;
            break;
        }
    }
    if (!p) {
        pthread_mutex_unlock(&s->io_mu);
        return ret ? ret : -ENOTCONN;
    }
    *p = (struct pend){.used = true,
                       .id = s->next_id++,
                       .cmd = write ? VFM_VU_DMA_WRITE : VFM_VU_DMA_READ,
                       .addr = addr,
                       .count = n,
                       .buf = buf};
    h.msg_id = p->id;
    h.cmd = p->cmd;
    slog(s, LOG_DEBUG, "%s: %s id %u 0x%llx+0x%x", dev_name(s), vfm_vu_cmd_name(h.cmd),
         (unsigned)h.msg_id, (unsigned long long)addr, n);
    h.msg_size = (uint32_t)(sizeof(h) + sizeof(rw) + (write ? n : 0));
    pthread_mutex_unlock(&s->io_mu);

    ret = conn_send(s, &h, iov, write ? 2 : 1, NULL, 0);
    if (!ret && s->conn_whole && tx_pending(s))
        wake(s); /* the loop asks for room to send the rest */
    pthread_mutex_lock(&s->io_mu);
    while (!ret && !p->done && !s->gone) {
        if (!s->reading) {
            int r;
            s->reading = true;
            pthread_mutex_unlock(&s->io_mu);
            r = follower_read(s, &dl);
            pthread_mutex_lock(&s->io_mu);
            s->reading = false;
            pthread_cond_broadcast(&s->io_cv);
            wake(s); /* what we read past may be the server's */
            if (r && !p->done)
                ret = r;
        } else if (pthread_cond_timedwait(&s->io_cv, &s->io_mu, &dl) == ETIMEDOUT && !p->done) {
            ret = -ETIMEDOUT;
        }
    }
    while (p->filling) /* a reader is writing into @buf */
        pthread_cond_wait(&s->io_cv, &s->io_mu);
    if (!ret)
        ret = p->done ? p->err : -ENOTCONN;
    p->used = false;
    pthread_cond_broadcast(&s->io_cv);
    pthread_mutex_unlock(&s->io_mu);
    return ret;
}

/* The DMA table's message path while a client is served (dma_remote.h). */
static int remote_dma(void *ctx, bool write, uint64_t addr, void *buf, uint64_t len)
{
    struct vfm_server *s = ctx;
    uint32_t max;
    int ret = 0;

    pthread_mutex_lock(&s->io_mu);
    max = s->gone ? 0 : s->peer_xfer;
    pthread_mutex_unlock(&s->io_mu);
    if (!max)
        return -ENOTCONN;
    for (uint64_t off = 0; off < len && !ret; off += max) {
        uint32_t n = (uint32_t)(len - off < max ? len - off : max);
        ret = remote_one(s, write, addr + off, (uint8_t *)buf + off, n);
    }
    if (ret)
        slog(s, LOG_DEBUG, "%s: %s 0x%llx+0x%llx: %s", dev_name(s),
             write ? "DMA_WRITE" : "DMA_READ", (unsigned long long)addr, (unsigned long long)len,
             vfm_err_name(ret));
    return ret;
}

/* Ends the commands to the client (it is leaving): a waiting thread fails,
 * one reading returns (the socket is shut down), and the DMA table's
 * message path is cleared once no call is under way; queued commands go. */
static void io_end(struct vfm_server *s)
{
    struct qmsg *q;

    pthread_mutex_lock(&s->io_mu);
    s->gone = true;
    s->peer_xfer = 0;
    pthread_cond_broadcast(&s->io_cv);
    pthread_mutex_unlock(&s->io_mu);
    if (s->conn_fd >= 0)
        shutdown(s->conn_fd, SHUT_RDWR);
    vfm_dma_set_remote(s->cfg.dma, NULL, NULL);
    while ((q = queue_pop(s))) {
        vfm_vu_close_fds(q->fds, q->nfds);
        free(q);
    }
}

/* ---- commands from the client ----------------------------------------- */

/* A command's reply, from its handler's result (as dispatch()). */
static int finish(struct vfm_server *s, const struct vfm_vu_hdr *h, int ret)
{
    if (ret == 1)
        return 0;
    if (ret < 0) {
        slog(s, LOG_WARNING, "%s: %s failed: %s", dev_name(s), vfm_vu_cmd_name(h->cmd),
             vfm_err_name(ret));
        if (h->flags & VFM_VU_NO_REPLY)
            return 0;
        return send_error(s, h, ret);
    }
    return reply(s, h, NULL, 0, NULL, 0);
}

/* A message refused for its header, its type or its fds (body dropped). */
static int refused(struct vfm_server *s, const struct vfm_vu_hdr *h, int err, bool ctrunc)
{
    slog(s, LOG_WARNING, "%s: refused a %s message: %s", dev_name(s), vfm_vu_cmd_name(h->cmd),
         ctrunc ? "too many fds" : vfm_err_name(err));
    return send_error(s, h, err);
}

/* MIG_DATA_WRITE from memory (a command queued while a device thread read
 * the connection). */
static int mig_write_mem(struct vfm_server *s, const uint8_t *body, size_t len)
{
    struct vfm_vu_mig_data m;
    ssize_t n;
    int ret;

    if (len < sizeof(m) || !s->negotiated)
        return -EINVAL;
    memcpy(&m, body, sizeof(m));
    if ((ret = mig_write_check(s, &m, len - sizeof(m))))
        return ret;
    n = vfm_device_data_write(s->cfg.dev, body + sizeof(m), len - sizeof(m));
    return n < 0 ? (int)n : 0;
}

/* Handles a command a device thread queued. Return: as handle_one(). */
static int handle_queued(struct vfm_server *s, struct qmsg *q)
{
    struct vfm_vu_request r;
    int ret;

    slog(s, LOG_DEBUG, "%s: %s (id %u, %zu bytes, %u fds; read while a DMA command waited)",
         dev_name(s), vfm_vu_cmd_name(q->h.cmd), (unsigned)q->h.msg_id, q->len, q->nfds);
    if (q->lost) {
        send_error(s, &q->h, EINVAL);
        ret = -EPROTO; /* no framing left to follow */
    } else if (q->dec || q->ctrunc) {
        ret = refused(s, &q->h, q->dec ? q->dec : -EINVAL, q->ctrunc);
    } else if (q->h.cmd == VFM_VU_MIG_DATA_WRITE && !q->nfds) {
        ret = finish(s, &q->h, mig_write_mem(s, q->body, q->len));
    } else {
        ret = vfm_vu_decode_request(q->h.cmd, q->body, q->len, q->nfds, s->max_xfer, &r);
        if (!ret)
            ret = dispatch(s, &q->h, &r, q->fds, q->nfds);
        ret = finish(s, &q->h, ret);
    }
    vfm_vu_close_fds(q->fds, q->nfds);
    free(q);
    return ret;
}

/* Reads and handles one message. The reader role is held on entry and
 * given back once the message is read, before a command runs (a device
 * thread's DMA command may need to read its reply meanwhile). Return: 0
 * to go on; negative to drop the client. */
static int handle_one(struct vfm_server *s)
{
    struct vfm_vu_request r;
    struct vfm_vu_hdr h;
    int fds[VFM_VU_MAX_FDS];
    unsigned nfds = 0;
    bool ctrunc;
    size_t len;
    int ret;

    ret = vfm_vu_rx_hdr(&s->rx, &h, fds, &nfds, &ctrunc);
    if (ret) {
        role_give(s);
        return ret;
    }
    ret = vfm_vu_decode_hdr(&h, s->max_msg);
    if (ret == -EINVAL && h.msg_size < sizeof(h)) {
        role_give(s);
        vfm_vu_close_fds(fds, nfds);
        send_error(s, &h, EINVAL);
        return -EPROTO; /* no framing left to follow */
    }
    len = h.msg_size - sizeof(h);
    if (!ret && (h.flags & VFM_VU_TYPE_MASK) == VFM_VU_TYPE_REPLY) {
        /* the reply to a DMA command of a device thread's, or a stray one */
        vfm_vu_close_fds(fds, nfds);
        ret = route_reply(s, &h, len);
        role_give(s);
        return ret;
    }
    if (!ret && h.cmd != VFM_VU_DMA_MAP && h.cmd != VFM_VU_DMA_UNMAP)
        slog(s, LOG_DEBUG, "%s: %s (id %u, %zu bytes, %u fds)", dev_name(s), vfm_vu_cmd_name(h.cmd),
             (unsigned)h.msg_id, len, nfds);
    if (ret || (h.flags & VFM_VU_TYPE_MASK) != VFM_VU_TYPE_COMMAND || ctrunc) {
        int err = ret ? ret : -EINVAL;

        vfm_vu_close_fds(fds, nfds);
        ret = vfm_vu_rx_discard(&s->rx, len); /* keeps framing */
        role_give(s);
        if (ret)
            return ret;
        return refused(s, &h, err, ctrunc);
    }
    if (h.cmd == VFM_VU_MIG_DATA_WRITE && !nfds) {
        /* the bulk path: the body goes straight into the load session */
        ret = do_mig_write(s, &h, len);
        role_give(s);
        if (ret == -EPROTO || ret == -ECONNRESET || ret == -EPIPE)
            return ret; /* the socket failed mid-body: framing is lost */
    } else {
        ret = vfm_vu_rx_body(&s->rx, &(struct iovec){s->in, len}, 1);
        role_give(s);
        if (ret) {
            vfm_vu_close_fds(fds, nfds);
            return ret;
        }
        ret = vfm_vu_decode_request(h.cmd, s->in, len, nfds, s->max_xfer, &r);
        if (!ret)
            ret = dispatch(s, &h, &r, fds, nfds);
    }
    vfm_vu_close_fds(fds, nfds); /* a DMA mapping keeps its own reference */
    return finish(s, &h, ret);
}

/* An error reply to the VERSION a refused client is about to send, then
 * close. */
static void refuse(struct vfm_server *s, int fd)
{
    struct vfm_vu_hdr h = {.cmd = VFM_VU_VERSION};

    vfm_vu_send_error(fd, &h, EBUSY); /* 16 bytes into a new socket: never waits */
    close(fd);
    slog(s, LOG_WARNING, "%s: refused a second client (one at a time)", dev_name(s));
}

/* How long a new client waits for a departing one to be gone before it is
 * refused: a client that connects just after the previous one closed must
 * not be told the server is busy. */
#define HANDOFF_GRACE_MS 100

static void arm_grace(struct vfm_server *s, unsigned ms)
{
    struct itimerspec t = {.it_value = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L}};
    timerfd_settime(s->grace_fd, 0, &t, NULL);
}

static int set_blocking(int fd, bool blocking)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0)
        return -errno;
    fl = blocking ? fl & ~O_NONBLOCK : fl | O_NONBLOCK;
    return fcntl(fd, F_SETFL, fl) ? -errno : 0;
}

/* Serves @fd (owned from here on) as the client: whole messages and queued
 * replies for a loop that is not ours, reads that wait (with a deadline)
 * for vfm_server_run(). */
static int start_conn(struct vfm_server *s, int fd, bool whole)
{
    struct timeval tv = {.tv_sec = VFM_VU_DEFAULT_TIMEOUT_MS / 1000};
    int ret = set_blocking(fd, !whole);

    if (!ret && !whole &&
        (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
         setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv))))
        ret = -errno;
    if (!ret)
        ret = ep_add(s, fd, EPOLLIN);
    if (ret) {
        close(fd);
        slog(s, LOG_WARNING, "%s: could not serve a client: %s", dev_name(s), vfm_err_name(ret));
        return ret;
    }
    s->conn_fd = fd;
    s->conn_whole = whole;
    s->conn_out = false;
    vfm_vu_rx_init(&s->rx, fd, whole);
    pthread_mutex_lock(&s->io_mu);
    s->gone = false;
    s->reading = false;
    s->peer_xfer = 0; /* until VERSION */
    pthread_mutex_unlock(&s->io_mu);
    vfm_dma_set_remote(s->cfg.dma, remote_dma, s);
    atomic_store(&s->active_fd, fd);
    slog(s, LOG_INFO, "%s: client connected", dev_name(s));
    if (atomic_load(&s->stopping))
        shutdown(fd, SHUT_RDWR); /* a stop that came before active_fd was set */
    return 0;
}

int vfm_server_adopt(struct vfm_server *s, int fd)
{
    int type = 0;
    socklen_t len = sizeof(type);

    if (fd < 0)
        return -EBADF;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) || type != SOCK_STREAM) {
        int err = errno == ENOTSOCK || !errno ? -ENOTSOCK : -errno;
        close(fd);
        return type && type != SOCK_STREAM ? -ENOTSOCK : err;
    }
    if (s->conn_fd >= 0) {
        close(fd);
        return -EBUSY;
    }
    return start_conn(s, fd, true);
}

int vfm_server_poll_fd(const struct vfm_server *s)
{
    return s->ep_fd;
}

/* The client has gone or was dropped: the one waiting, if any, is next. */
static void end_conn(struct vfm_server *s, const char *why)
{
    drop_client(s, why);
    if (s->waiting_fd >= 0) {
        int fd = s->waiting_fd;
        s->waiting_fd = -1;
        arm_grace(s, 0);
        start_conn(s, fd, !s->in_run);
    }
}

/* Ready messages on the connection (and commands a device thread queued),
 * and replies to finish. */
static void on_conn(struct vfm_server *s, bool readable)
{
    int ret = 0, fl = 0;

    if (readable) {
        /* not by waiting for the reader role: a device thread that holds it
         * waits for a reply the client sends only after we answer what it
         * queued (it reads the socket itself: the hint is for us) */
        pthread_mutex_lock(&s->io_mu);
        if (!s->reading)
            vfm_vu_rx_readable(&s->rx);
        pthread_mutex_unlock(&s->io_mu);
    }
    if (tx_pending(s))
        fl = tx_flush(s);
    if (fl != -EAGAIN)
        ret = fl;
    while (!ret && fl != -EAGAIN && !atomic_load(&s->stopping)) {
        struct qmsg *q = role_or_queued(s);

        if (q) {
            ret = handle_queued(s, q);
        } else {
            ret = vfm_vu_rx_ready(&s->rx, s->max_msg);
            if (ret <= 0) {
                role_give(s);
                break;
            }
            ret = handle_one(s); /* gives the role back */
            if (ret == -EAGAIN)
                ret = -ETIMEDOUT; /* a blocking read's deadline (SO_RCVTIMEO) */
        }
        if (!ret && tx_pending(s)) {
            /* the rest of a reply waits for room; no new message meanwhile */
            fl = tx_flush(s);
            if (fl != -EAGAIN)
                ret = fl;
        }
    }
    if (!ret && s->conn_whole && tx_pending(s) != s->conn_out) {
        struct epoll_event e = {.events = EPOLLIN, .data.fd = s->conn_fd};
        s->conn_out = !s->conn_out;
        if (s->conn_out)
            e.events |= EPOLLOUT;
        if (epoll_ctl(s->ep_fd, EPOLL_CTL_MOD, s->conn_fd, &e))
            ret = -errno;
    }
    if (ret)
        end_conn(s, atomic_load(&s->stopping) ? "server stopping"
                    : ret == -ENOTCONN        ? "closed"
                                              : vfm_err_name(ret));
}

static int on_listen(struct vfm_server *s)
{
    for (;;) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                errno == ECONNABORTED || errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM)
                return 0; /* nothing more now, or a passing shortage */
            return -errno;
        }
        vfm_sock_bulk(fd);
        if (s->conn_fd < 0) {
            start_conn(s, fd, !s->in_run);
        } else if (s->waiting_fd < 0) {
            s->waiting_fd = fd;
            arm_grace(s, HANDOFF_GRACE_MS);
        } else {
            refuse(s, fd);
        }
    }
}

static int handle_events(struct vfm_server *s, const struct epoll_event *ev, int n)
{
    bool conn = false, readable = false, listen = false, grace = false;
    int ret = 0;

    for (int i = 0; i < n; i++) {
        if (ev[i].data.fd == s->conn_fd && s->conn_fd >= 0) {
            conn = true;
            readable |= !!(ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR));
        }
        listen |= ev[i].data.fd == s->listen_fd && s->listen_fd >= 0;
        grace |= ev[i].data.fd == s->grace_fd;
        if (ev[i].data.fd == s->wake_fd) {
            uint64_t v;
            ssize_t r = read(s->wake_fd, &v, sizeof(v));
            (void)r;
            conn |= s->conn_fd >= 0; /* queued commands, buffered bytes, replies to send */
        }
    }
    /* the connection first: a client that has left makes room for the next */
    if (conn && !atomic_load(&s->stopping))
        on_conn(s, readable);
    if (grace) {
        uint64_t v;
        ssize_t r = read(s->grace_fd, &v, sizeof(v));
        (void)r;
        if (s->waiting_fd >= 0 && r > 0) {
            refuse(s, s->waiting_fd);
            s->waiting_fd = -1;
        }
    }
    if (listen && !atomic_load(&s->stopping))
        ret = on_listen(s);
    if (atomic_load(&s->stopping)) {
        if (s->conn_fd >= 0)
            drop_client(s, "server stopping");
        close_fd(&s->waiting_fd);
        return -ESHUTDOWN;
    }
    return ret;
}

#define MAX_EVENTS 8

int vfm_server_dispatch(struct vfm_server *s)
{
    struct epoll_event ev[MAX_EVENTS];
    int n = epoll_wait(s->ep_fd, ev, MAX_EVENTS, 0);

    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    return handle_events(s, ev, n);
}

int vfm_server_run(struct vfm_server *s)
{
    int ret;

    s->in_run = true;
    for (;;) {
        struct epoll_event ev[MAX_EVENTS];
        int n = epoll_wait(s->ep_fd, ev, MAX_EVENTS, -1);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            ret = -errno;
            break;
        }
        ret = handle_events(s, ev, n);
        if (ret == -ESHUTDOWN)
            ret = 0;
        if (ret || atomic_load(&s->stopping))
            break;
    }
    s->in_run = false;
    return ret;
}
