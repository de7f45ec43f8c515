/* SPDX-License-Identifier: MIT */
/* vfio-user message transport over a UNIX stream socket. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sock.h"

#define MAX_IOV 8

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
        ssize_t w = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        /* the fds went with the first bytes */
        msg.msg_control = NULL;
        msg.msg_controllen = 0;
        while (msg.msg_iovlen && (size_t)w >= msg.msg_iov->iov_len) {
            w -= (ssize_t)msg.msg_iov->iov_len;
            msg.msg_iov++;
            msg.msg_iovlen--;
        }
        if (msg.msg_iovlen) {
            msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + w;
            msg.msg_iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

int vfm_vu_recv_hdr(int sock, struct vfm_vu_hdr *h, int *fds, unsigned *nfds, bool *ctrunc)
{
    size_t extra;
    return vfm_vu_recv_hdr_more(sock, h, NULL, 0, &extra, fds, nfds, ctrunc);
}

int vfm_vu_recv_hdr_more(int sock, struct vfm_vu_hdr *h, const struct iovec *rest, int nrest,
                         size_t *extra, int *fds, unsigned *nfds, bool *ctrunc)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * VFM_VU_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    size_t got = 0;

    *nfds = 0;
    *ctrunc = false;
    *extra = 0;
    if (nrest > MAX_IOV)
        nrest = MAX_IOV;
    while (got < sizeof(*h)) {
        struct iovec v[MAX_IOV + 1] = {{(char *)h + got, sizeof(*h) - got}};
        struct msghdr msg = {.msg_iov = v, .msg_iovlen = 1};
        struct cmsghdr *c;
        ssize_t r;

        /* only the first read may run past the header into @rest */
        if (got == 0)
            for (int i = 0; i < nrest; i++)
                v[msg.msg_iovlen++] = rest[i];
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof(ctl.buf);
        r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
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
        if (msg.msg_flags & MSG_CTRUNC)
            *ctrunc = true;
        for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
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
        if (got == 0 && (size_t)r > sizeof(*h)) {
            *extra = (size_t)r - sizeof(*h);
            r = sizeof(*h);
        }
        got += (size_t)r;
    }
    return 0;
}

int vfm_vu_recv_all(int sock, void *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t r = recv(sock, (char *)buf + got, len - got, MSG_WAITALL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EPROTO;
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
        while (msg.msg_iovlen && (size_t)r >= msg.msg_iov->iov_len) {
            r -= (ssize_t)msg.msg_iov->iov_len;
            msg.msg_iov++;
            msg.msg_iovlen--;
        }
        if (msg.msg_iovlen) {
            msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + r;
            msg.msg_iov->iov_len -= (size_t)r;
        }
    }
    return 0;
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
