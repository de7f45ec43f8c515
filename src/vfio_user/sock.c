/* SPDX-License-Identifier: MIT */
/* vfio-user message transport over a UNIX stream socket. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sock.h"

#define MAX_IOV 8

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
    struct vfm_vu_hdr h = {
        .msg_id = req->msg_id,
        .cmd = req->cmd,
        .msg_size = sizeof(h),
        .flags = VFM_VU_TYPE_REPLY | VFM_VU_ERROR,
        .error = (uint32_t)(err < 0 ? -err : err),
    };
    return vfm_vu_send(sock, &h, NULL, 0, NULL, 0);
}

void vfm_vu_close_fds(int *fds, unsigned nfds)
{
    for (unsigned i = 0; i < nfds; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* ---- the buffered reader ---- */

void vfm_vu_rx_init(struct vfm_vu_rx *rx, int sock)
{
    rx->sock = sock;
    rx->start = rx->end = 0;
    rx->pos = rx->fds_end = 0;
    rx->nfds = 0;
    rx->ctrunc = rx->has_fds = false;
}

void vfm_vu_rx_reset(struct vfm_vu_rx *rx)
{
    vfm_vu_close_fds(rx->fds, rx->nfds);
    vfm_vu_rx_init(rx, -1);
}

/* One read into the buffer's free space. Return: bytes read (0: end of
 * file) or -errno. */
static ssize_t rx_fill(struct vfm_vu_rx *rx)
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
    v.iov_len = sizeof(rx->buf) - rx->end;
    do {
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof(ctl.buf);
        r = recvmsg(rx->sock, &msg, MSG_CMSG_CLOEXEC);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    rx->end += (size_t)r;
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

int vfm_vu_rx_hdr(struct vfm_vu_rx *rx, struct vfm_vu_hdr *h, int *fds, unsigned *nfds,
                  bool *ctrunc)
{
    uint64_t at, size;

    *nfds = 0;
    *ctrunc = false;
    while (rx->end - rx->start < sizeof(*h)) {
        ssize_t r = rx_fill(rx);
        if (r < 0)
            return (int)r;
        if (r == 0)
            return rx->end > rx->start ? -EPROTO : -ENOTCONN;
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

int vfm_vu_rx_discard(struct vfm_vu_rx *rx, size_t len)
{
    size_t have = rx->end - rx->start, k = len < have ? len : have;

    rx->start += k;
    rx->pos += len;
    return k < len ? vfm_vu_recv_discard(rx->sock, len - k) : 0;
}
