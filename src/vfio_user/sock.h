/* SPDX-License-Identifier: MIT */
/* vfio-user message transport over a UNIX stream socket (internal). */
#ifndef VFIOMIG_VU_SOCK_H
#define VFIOMIG_VU_SOCK_H

#include <stdbool.h>
#include <sys/uio.h>

#include <vfiomig/vfio_user.h>

/* Sends the header then the iovecs, with @fds as SCM_RIGHTS on the first
 * byte; loops over short writes. Return: 0 or -errno (-EPIPE: peer gone). */
int vfm_vu_send(int sock, const struct vfm_vu_hdr *h, const struct iovec *iov, int iovcnt,
                const int *fds, unsigned nfds);

/* Receives exactly one header and the fds that came with it (at most
 * VFM_VU_MAX_FDS; more are reported by *ctrunc and closed by the kernel).
 * Return: 0; -ENOTCONN on a clean end of file before the header; -EPROTO
 * on one inside it; -errno. */
int vfm_vu_recv_hdr(int sock, struct vfm_vu_hdr *h, int *fds, unsigned *nfds, bool *ctrunc);

/* Like vfm_vu_recv_hdr(), but the same system call may also fill @rest
 * with the bytes after the header (*@extra of them): for a peer that sends
 * nothing but the reply being waited for (a client with one request in
 * flight), this saves a system call per reply. */
int vfm_vu_recv_hdr_more(int sock, struct vfm_vu_hdr *h, const struct iovec *rest, int nrest,
                         size_t *extra, int *fds, unsigned *nfds, bool *ctrunc);

/* Receives exactly @len bytes. Return: 0, -EPROTO (end of file), -errno. */
int vfm_vu_recv_all(int sock, void *buf, size_t len);

/* Receives exactly the bytes @iov describes (at most 8 entries), in as few
 * system calls as the peer's sending allows. Return: as vfm_vu_recv_all(). */
int vfm_vu_recv_iov_all(int sock, const struct iovec *iov, int iovcnt);

/* Reads and drops @len bytes (to keep framing after a refused body). */
int vfm_vu_recv_discard(int sock, size_t len);

/* Sends a reply header with the error flag and @err (positive errno), no
 * payload. */
int vfm_vu_send_error(int sock, const struct vfm_vu_hdr *req, int err);

void vfm_vu_close_fds(int *fds, unsigned nfds);

#endif
