/* SPDX-License-Identifier: MIT */
/* vfio-user message transport over a UNIX stream socket. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sock.h"

/* enough for a MIG_DATA_READ reply: its head and up to VFM_DATA_IOV_MAX
 * (64) pieces of a device saving in pieces */
#define MAX_IOV 72

/* Drops the first @n bytes from @msg's iovecs (after a short transfer). */
static void iov_advance(struct msghdr *msg, size_t n)
{
    while (msg->msg_iovlen && n >= msg->msg_iov->iov_len) {
        n -= msg->msg_iov->iov_len;
        msg->msg_iov++;
        msg->msg_iovlen--;
    }
    if (msg->msg_iovlen) {
        msg->msg_iov->iov_base = (char *)msg->msg_iov->iov_base + n;
        msg->msg_iov->iov_len -= n;
    }
}

/* Messages up to this size are sent from one flat buffer. */
#define SMALL_MSG 512u

static int send_flat(int sock, const uint8_t *p, size_t len)
{
    while (len) {
        ssize_t w = send(sock, p, len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int vfm_vu_send(int sock, const struct vfm_vu_hdr *h, const struct iovec *iov, int iovcnt,
                const int *fds, unsigned nfds)
{
    struct iovec v[MAX_IOV + 1];
    union {
        char buf[CMSG_SPACE(sizeof(int) * VFM_VU_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct msghdr msg = {.msg_iov = v};
    int n = 0;

    if (iovcnt > MAX_IOV || nfds > VFM_VU_MAX_FDS)
        return -EINVAL;
    if (!nfds) {
        /* a small message is gathered and goes with send(): a flat buffer
         * is the kernel's cheapest socket write (no iovec to import), and
         * MSG_NOSIGNAL still holds */
        uint8_t flat[SMALL_MSG];
        size_t len = sizeof(*h);
        for (int i = 0; i < iovcnt && len <= sizeof(flat); i++)
            len += iov[i].iov_len;
        if (len <= sizeof(flat)) {
            size_t off = sizeof(*h);
            memcpy(flat, h, sizeof(*h));
            for (int i = 0; i < iovcnt; i++)
                if (iov[i].iov_len) {
                    memcpy(flat + off, iov[i].iov_base, iov[i].iov_len);
                    off += iov[i].iov_len;
                }
            return send_flat(sock, flat, len);
        }
    }
    v[n].iov_base = (void *)h;
    v[n++].iov_len = sizeof(*h);
    for (int i = 0; i < iovcnt; i++)
        if (iov[i].iov_len)
            v[n++] = iov[i];
    msg.msg_iovlen = (size_t)n;
    if (nfds) {
        struct cmsghdr *c;
        memset(&ctl, 0, sizeof(ctl));
        msg.msg_control = ctl.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    while (msg.msg_iovlen) {
        /* sendmsg() even without fds: MSG_NOSIGNAL (a vanished peer is
         * -EPIPE, not a SIGPIPE the application may not handle) */
        ssize_t w = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        /* the fds went with the first bytes */
        msg.msg_control = NULL;
        msg.msg_controllen = 0;
        iov_advance(&msg, (size_t)w);
    }
    return 0;
}

/* Appends the fds of a received message's SCM_RIGHTS to @fds (closing
 * those beyond VFM_VU_MAX_FDS); *@ctrunc when some were lost. */
static void take_fds(struct msghdr *msg, int *fds, unsigned *nfds, bool *ctrunc)
{
    if (msg->msg_flags & MSG_CTRUNC)
        *ctrunc = true;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        size_t n;
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (*nfds < VFM_VU_MAX_FDS)
                fds[(*nfds)++] = fd;
            else {
                close(fd);
                *ctrunc = true;
            }
        }
    }
}

int vfm_vu_recv_hdr_more(int sock, struct vfm_vu_hdr *h, const struct iovec *rest, int nrest,
                         size_t *extra, int *fds, unsigned *nfds, bool *ctrunc)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * VFM_VU_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    size_t got = 0, want = sizeof(*h);

    *nfds = 0;
    *ctrunc = false;
    *extra = 0;
    if (nrest > MAX_IOV)
        nrest = MAX_IOV;
    for (int i = 0; i < nrest; i++)
        want += rest[i].iov_len;
    if (!fds && want <= SMALL_MSG) {
        /* a small reply, no fds: one flat recv(), as vfm_vu_send() sends */
        uint8_t flat[SMALL_MSG];
        ssize_t r;
        do
            r = recv(sock, flat, want, 0);
        while (r < 0 && errno == EINTR);
        if (r < 0)
            return -errno;
        if (r == 0)
            return -ENOTCONN;
        got = (size_t)r < sizeof(*h) ? (size_t)r : sizeof(*h);
        memcpy(h, flat, got);
        *extra = (size_t)r - got;
        for (int i = 0, off = (int)got; i < nrest && off < r; i++) {
            size_t k = rest[i].iov_len < (size_t)(r - off) ? rest[i].iov_len : (size_t)(r - off);
            if (k)
                memcpy(rest[i].iov_base, flat + off, k);
            off += (int)k;
        }
        if (got == sizeof(*h))
            return 0;
        /* the header's rest: a plain read below */
    }
    while (got < sizeof(*h)) {
        struct iovec v[MAX_IOV + 1] = {{(char *)h + got, sizeof(*h) - got}};
        struct msghdr msg = {.msg_iov = v, .msg_iovlen = 1};
        ssize_t r;

        /* only the first read may run past the header into @rest */
        if (got == 0)
            for (int i = 0; i < nrest; i++)
                v[msg.msg_iovlen++] = rest[i];
        if (fds) {
            msg.msg_control = ctl.buf;
            msg.msg_controllen = sizeof(ctl.buf);
            r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        } else {
            r = readv(sock, v, (int)msg.msg_iovlen); /* fds sent are closed */
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            vfm_vu_close_fds(fds, *nfds);
            *nfds = 0;
            return -errno;
        }
        if (r == 0) {
            vfm_vu_close_fds(fds, *nfds);
            *nfds = 0;
            return got ? -EPROTO : -ENOTCONN;
        }
        if (fds)
            take_fds(&msg, fds, nfds, ctrunc);
        if (got == 0 && (size_t)r > sizeof(*h)) {
            *extra = (size_t)r - sizeof(*h);
            r = sizeof(*h);
        }
        got += (size_t)r;
    }
    return 0;
}

int vfm_vu_recv_iov_all(int sock, const struct iovec *iov, int iovcnt)
{
    struct iovec v[MAX_IOV];
    struct msghdr msg = {.msg_iov = v};

    if (iovcnt > MAX_IOV)
        return -EINVAL;
    for (int i = 0; i < iovcnt; i++)
        if (iov[i].iov_len)
            v[msg.msg_iovlen++] = iov[i];
    while (msg.msg_iovlen) {
        ssize_t r = recvmsg(sock, &msg, MSG_WAITALL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EPROTO;
        iov_advance(&msg, (size_t)r);
    }
    return 0;
}

int vfm_vu_recv_all(int sock, void *buf, size_t len)
{
    return vfm_vu_recv_iov_all(sock, &(struct iovec){buf, len}, 1);
}

int vfm_vu_recv_discard(int sock, size_t len)
{
    char buf[4096];

    while (len) {
        size_t n = len < sizeof(buf) ? len : sizeof(buf);
        int ret = vfm_vu_recv_all(sock, buf, n);
        if (ret)
            return ret;
        len -= n;
    }
    return 0;
}

int vfm_vu_send_error(int sock, const struct vfm_vu_hdr *req, int err)
{
    struct vfm_vu_hdr h = vfm_vu_error_hdr(req, err);
    return vfm_vu_send(sock, &h, NULL, 0, NULL, 0);
}

void vfm_vu_close_fds(int *fds, unsigned nfds)
{
    for (unsigned i = 0; i < nfds; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* ---- the buffered reader ---- */

void vfm_vu_rx_init(struct vfm_vu_rx *rx, int sock, bool whole)
{
    rx->sock = sock;
    rx->whole = whole;
    rx->buf = rx->small;
    rx->cap = sizeof(rx->small);
    rx->start = rx->end = 0;
    rx->pos = rx->fds_end = rx->skip = 0;
    rx->nfds = 0;
    rx->ctrunc = rx->has_fds = rx->eof = rx->drained = false;
}

void vfm_vu_rx_reset(struct vfm_vu_rx *rx)
{
    vfm_vu_close_fds(rx->fds, rx->nfds);
    if (rx->buf != rx->small)
        free(rx->buf);
    vfm_vu_rx_init(rx, -1, rx->whole);
}

/* One read into the buffer's free space (@flags: MSG_DONTWAIT or 0).
 * Return: bytes read (0: end of file) or -errno. */
static ssize_t rx_fill(struct vfm_vu_rx *rx, int flags)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * VFM_VU_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct iovec v;
    struct msghdr msg = {.msg_iov = &v, .msg_iovlen = 1};
    ssize_t r;

    if (rx->start) {
        memmove(rx->buf, rx->buf + rx->start, rx->end - rx->start);
        rx->end -= rx->start;
        rx->start = 0;
    }
    v.iov_base = rx->buf + rx->end;
    v.iov_len = rx->cap - rx->end;
    do {
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof(ctl.buf);
        r = recvmsg(rx->sock, &msg, MSG_CMSG_CLOEXEC | flags);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    rx->end += (size_t)r;
    if (rx->skip) {
        /* the rest of a refused body: already counted in pos */
        size_t k = rx->end - rx->start < rx->skip ? rx->end - rx->start : (size_t)rx->skip;
        rx->start += k;
        rx->skip -= k;
    }
    if (msg.msg_controllen || (msg.msg_flags & MSG_CTRUNC)) {
        unsigned before = rx->nfds;
        bool lost = false;
        take_fds(&msg, rx->fds, &rx->nfds, &lost);
        if (rx->nfds > before || lost) {
            /* a second set before the first was claimed only comes from a
             * message split oddly by its sender: merged */
            rx->has_fds = true;
            rx->ctrunc |= lost;
            rx->fds_end = rx->pos + (rx->end - rx->start);
        }
    }
    return r;
}

/* Room for a whole message of @size bytes from buf[start]. */
static int rx_room(struct vfm_vu_rx *rx, size_t size)
{
    uint8_t *nb;

    if (size <= rx->cap - rx->start)
        return 0;
    if (size <= rx->cap) {
        memmove(rx->buf, rx->buf + rx->start, rx->end - rx->start);
        rx->end -= rx->start;
        rx->start = 0;
        return 0;
    }
    nb = malloc(size);
    if (!nb)
        return -ENOMEM;
    memcpy(nb, rx->buf + rx->start, rx->end - rx->start);
    if (rx->buf != rx->small)
        free(rx->buf);
    rx->buf = nb;
    rx->cap = size;
    rx->end -= rx->start;
    rx->start = 0;
    return 0;
}

int vfm_vu_rx_ready(struct vfm_vu_rx *rx, size_t max_msg)
{
    for (;;) {
        size_t have = rx->end - rx->start, room;
        unsigned had_fds;
        ssize_t r;

        if (rx->eof)
            return 1;
        if (have >= sizeof(struct vfm_vu_hdr) && !rx->skip) {
            struct vfm_vu_hdr h;
            memcpy(&h, rx->buf + rx->start, sizeof(h));
            if (!rx->whole || h.msg_size <= sizeof(h) || h.msg_size > max_msg || have >= h.msg_size)
                return 1; /* an oversized body is refused and skipped */
            /* the buffer grows as the bytes come, at most twice what has
             * come: a header alone (a peer's word) never buys max_msg */
            if (rx->end == rx->cap &&
                rx_room(rx, h.msg_size / 2 < rx->cap ? h.msg_size : 2 * rx->cap))
                return -ENOMEM;
        }
        if (rx->drained)
            return 0;
        room = rx->cap - (rx->end - rx->start);
        had_fds = rx->nfds;
        r = rx_fill(rx, MSG_DONTWAIT);
        if (r < 0 && (r == -EAGAIN || r == -EWOULDBLOCK)) {
            rx->drained = true;
            return 0;
        }
        if (r <= 0)
            rx->eof = true; /* the calls that follow read it again */
        else if ((size_t)r < room && rx->nfds == had_fds)
            rx->drained = true; /* a read ends early at fds, not otherwise */
    }
}

int vfm_vu_rx_hdr(struct vfm_vu_rx *rx, struct vfm_vu_hdr *h, int *fds, unsigned *nfds,
                  bool *ctrunc)
{
    uint64_t at, size;

    *nfds = 0;
    *ctrunc = false;
    while (rx->end - rx->start < sizeof(*h) || rx->skip) {
        ssize_t r = rx_fill(rx, 0);
        if (r < 0)
            return (int)r;
        if (r == 0)
            return rx->end > rx->start || rx->skip ? -EPROTO : -ENOTCONN;
    }
    memcpy(h, rx->buf + rx->start, sizeof(*h));
    at = rx->pos;
    rx->start += sizeof(*h);
    rx->pos += sizeof(*h);
    if (!rx->has_fds)
        return 0;
    size = h->msg_size > sizeof(*h) ? h->msg_size : sizeof(*h);
    if (rx->fds_end > at + size)
        return 0; /* a later message's */
    if (rx->fds_end > at) {
        memcpy(fds, rx->fds, rx->nfds * sizeof(int));
        *nfds = rx->nfds;
        *ctrunc = rx->ctrunc;
    } else {
        vfm_vu_close_fds(rx->fds, rx->nfds); /* no message of theirs: cannot happen */
    }
    rx->nfds = 0;
    rx->ctrunc = rx->has_fds = false;
    return 0;
}

int vfm_vu_rx_body(struct vfm_vu_rx *rx, const struct iovec *iov, int iovcnt)
{
    struct iovec rest[MAX_IOV];
    int nrest = 0;

    if (iovcnt > MAX_IOV)
        return -EINVAL;
    for (int i = 0; i < iovcnt; i++) {
        size_t have = rx->end - rx->start, k = iov[i].iov_len < have ? iov[i].iov_len : have;

        if (k)
            memcpy(iov[i].iov_base, rx->buf + rx->start, k);
        rx->start += k;
        rx->pos += iov[i].iov_len;
        if (k < iov[i].iov_len)
            rest[nrest++] = (struct iovec){(char *)iov[i].iov_base + k, iov[i].iov_len - k};
    }
    return nrest ? vfm_vu_recv_iov_all(rx->sock, rest, nrest) : 0;
}

const void *vfm_vu_rx_take(struct vfm_vu_rx *rx, size_t len)
{
    const void *p = rx->buf + rx->start;

    if (rx->end - rx->start < len)
        return NULL;
    rx->start += len;
    rx->pos += len;
    return p;
}

int vfm_vu_rx_discard(struct vfm_vu_rx *rx, size_t len)
{
    size_t have = rx->end - rx->start, k = len < have ? len : have;

    rx->start += k;
    rx->pos += len;
    if (k == len)
        return 0;
    if (rx->whole) {
        rx->skip = len - k; /* dropped by the reads that bring it */
        return 0;
    }
    return vfm_vu_recv_discard(rx->sock, len - k);
}

/* ---- the send queue ---- */

struct vfm_vu_tx_seg {
    struct vfm_vu_tx_seg *next;
    size_t len, off;
    int fds[VFM_VU_MAX_FDS];
    unsigned nfds; /* still to go with the first byte (off == 0) */
    uint8_t data[];
};

/* Sends @msg without waiting. Return: bytes sent (0 when the socket is
 * full) or -errno. */
static ssize_t send_nowait(int sock, struct msghdr *msg)
{
    ssize_t w;

    do
        w = sendmsg(sock, msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    return w;
}

static void set_fds(struct msghdr *msg, void *ctl, size_t ctlsize, const int *fds, unsigned nfds)
{
    struct cmsghdr *c;

    if (!nfds)
        return;
    memset(ctl, 0, ctlsize);
    msg->msg_control = ctl;
    msg->msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    c = CMSG_FIRSTHDR(msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
}

int vfm_vu_tx_send(struct vfm_vu_tx *tx, int sock, const struct vfm_vu_hdr *h,
                   const struct iovec *iov, int iovcnt, const int *fds, unsigned nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * VFM_VU_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct iovec v[MAX_IOV + 1];
    struct msghdr msg = {.msg_iov = v};
    struct vfm_vu_tx_seg *seg;
    size_t total = 0, sent = 0, at;
    int n = 0;

    if (iovcnt > MAX_IOV || nfds > VFM_VU_MAX_FDS)
        return -EINVAL;
    v[n++] = (struct iovec){(void *)h, sizeof(*h)};
    for (int i = 0; i < iovcnt; i++)
        if (iov[i].iov_len)
            v[n++] = iov[i];
    for (int i = 0; i < n; i++)
        total += v[i].iov_len;
    msg.msg_iovlen = (size_t)n;
    if (!tx->head) {
        set_fds(&msg, ctl.buf, sizeof(ctl.buf), fds, nfds);
        while (sent < total) {
            ssize_t w = send_nowait(sock, &msg);
            if (w < 0)
                return (int)w;
            if (w == 0)
                break;
            msg.msg_control = NULL; /* the fds went with the first bytes */
            msg.msg_controllen = 0;
            iov_advance(&msg, (size_t)w);
            sent += (size_t)w;
        }
        if (sent == total)
            return 0;
    }
    seg = malloc(sizeof(*seg) + (total - sent));
    if (!seg)
        return -ENOMEM;
    seg->next = NULL;
    seg->len = total - sent;
    seg->off = 0;
    seg->nfds = 0;
    if (!sent) {
        for (unsigned i = 0; i < nfds; i++) {
            seg->fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
            if (seg->fds[i] < 0) {
                int err = -errno;
                vfm_vu_close_fds(seg->fds, i);
                free(seg);
                return err;
            }
        }
        seg->nfds = nfds;
    }
    /* the part not sent: msg's iovecs were advanced past what went */
    at = 0;
    for (size_t i = 0; i < msg.msg_iovlen; i++) {
        memcpy(seg->data + at, msg.msg_iov[i].iov_base, msg.msg_iov[i].iov_len);
        at += msg.msg_iov[i].iov_len;
    }
    if (tx->tail)
        tx->tail->next = seg;
    else
        tx->head = seg;
    tx->tail = seg;
    tx->bytes += seg->len;
    return 0;
}

int vfm_vu_tx_flush(struct vfm_vu_tx *tx, int sock)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * VFM_VU_MAX_FDS)];
        struct cmsghdr align;
    } ctl;

    while (tx->head) {
        struct vfm_vu_tx_seg *seg = tx->head;
        struct iovec v = {seg->data + seg->off, seg->len - seg->off};
        struct msghdr msg = {.msg_iov = &v, .msg_iovlen = 1};
        ssize_t w;

        if (!seg->off)
            set_fds(&msg, ctl.buf, sizeof(ctl.buf), seg->fds, seg->nfds);
        w = send_nowait(sock, &msg);
        if (w < 0)
            return (int)w;
        if (w == 0)
            return -EAGAIN;
        if (!seg->off) {
            vfm_vu_close_fds(seg->fds, seg->nfds); /* the peer has them */
            seg->nfds = 0;
        }
        seg->off += (size_t)w;
        tx->bytes -= (size_t)w;
        if (seg->off == seg->len) {
            tx->head = seg->next;
            if (!tx->head)
                tx->tail = NULL;
            free(seg);
        }
    }
    return 0;
}

void vfm_vu_tx_reset(struct vfm_vu_tx *tx)
{
    while (tx->head) {
        struct vfm_vu_tx_seg *seg = tx->head;
        tx->head = seg->next;
        vfm_vu_close_fds(seg->fds, seg->nfds);
        free(seg);
    }
    tx->tail = NULL;
    tx->bytes = 0;
}
