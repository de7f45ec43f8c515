/* SPDX-License-Identifier: MIT */
/* vfio-user message transport over a UNIX stream socket (internal). */
#ifndef VFIOMIG_VU_SOCK_H
#define VFIOMIG_VU_SOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include <vfiomig/vfio_user.h>

/* Sends the header then the iovecs, with @fds as SCM_RIGHTS on the first
 * byte; loops over short writes. Return: 0 or -errno (-EPIPE: peer gone). */
int vfm_vu_send(int sock, const struct vfm_vu_hdr *h, const struct iovec *iov, int iovcnt,
                const int *fds, unsigned nfds);

/* Receives exactly one header and the fds that came with it (at most
 * VFM_VU_MAX_FDS; more are reported by *ctrunc and closed), and the same
 * system call may also fill @rest with the bytes after the header (*@extra
 * of them): for a peer that sends nothing but the reply being waited for
 * (a client with one request in flight), this saves a system call per
 * reply. @fds NULL: none is expected (one plain read; any the peer sends
 * are closed by the kernel). Return: 0; -ENOTCONN on a clean end of file
 * before the header; -EPROTO on one inside it; -errno. */
int vfm_vu_recv_hdr_more(int sock, struct vfm_vu_hdr *h, const struct iovec *rest, int nrest,
                         size_t *extra, int *fds, unsigned *nfds, bool *ctrunc);

/* Receives exactly @len bytes. Return: 0, -EPROTO (end of file), -errno. */
int vfm_vu_recv_all(int sock, void *buf, size_t len);

/* Receives exactly the bytes @iov describes (at most 8 entries), in as few
 * system calls as the peer's sending allows. Return: as vfm_vu_recv_all(). */
int vfm_vu_recv_iov_all(int sock, const struct iovec *iov, int iovcnt);

/* Reads and drops @len bytes (to keep framing after a refused body). */
int vfm_vu_recv_discard(int sock, size_t len);

/* The header of an error reply to @req carrying @err (either sign), no
 * payload. */
static inline struct vfm_vu_hdr vfm_vu_error_hdr(const struct vfm_vu_hdr *req, int err)
{
    struct vfm_vu_hdr h = {
        .msg_id = req->msg_id,
        .cmd = req->cmd,
        .msg_size = sizeof(h),
        .flags = VFM_VU_TYPE_REPLY | VFM_VU_ERROR,
        .error = (uint32_t)(err < 0 ? -err : err),
    };
    return h;
}

/* Sends a reply header with the error flag and @err (positive errno), no
 * payload. */
int vfm_vu_send_error(int sock, const struct vfm_vu_hdr *req, int err);

void vfm_vu_close_fds(int *fds, unsigned nfds);

/*
 * A buffered reader of messages. One system call takes a small message
 * whole, header and body (a bare loop that knows its message size needs
 * one read; reading the header and then the body costs a second system
 * call). A peer may send several messages before reading a reply: what a
 * read takes beyond the current message stays buffered for the next.
 *
 * File descriptors: the kernel ends a read of a UNIX stream socket right
 * after the bytes that carried fds (the sendmsg() that passed them), so the
 * fds a read brings belong to the last message that begins in it — the one
 * whose bytes run up to, or past, the end of that read. A message claims
 * the pending fds when it starts before that point and does not end before
 * it; that is the message the peer sent them with, however it split it.
 *
 * Two ways to wait. A blocking reader (a loop with nothing else to do)
 * learns from vfm_vu_rx_ready() that a header has come and then reads the
 * body as it arrives; a large body does not pass through the buffer but
 * goes straight into the caller's memory. A whole-message reader (driven
 * by someone else's event loop, on a non-blocking socket) is ready only
 * once the whole message is buffered (the buffer grows, as the bytes come,
 * to the largest message taken), so the calls after it never wait; a body too large to
 * be taken is skipped as its bytes come.
 * Not thread-safe: one reader.
 */
#define VFM_VU_RX_CAP 4096u

struct vfm_vu_rx {
    int sock;
    bool whole;        /* a whole-message reader */
    uint8_t *buf;      /* small, or grown on the heap (whole) */
    size_t cap;        /* of buf */
    size_t start, end; /* unread bytes: buf[start, end) */
    uint64_t pos;      /* stream offset of buf[start] */
    uint64_t fds_end;  /* stream offset just after the read that brought fds */
    uint64_t skip;     /* bytes still to drop as they come (whole) */
    int fds[VFM_VU_MAX_FDS];
    unsigned nfds; /* pending, not claimed yet */
    bool ctrunc;   /* the read that brought them lost some */
    bool has_fds;
    bool eof;     /* the socket said end of file, or failed */
    bool drained; /* the last read found the socket empty: wait for poll */
    uint8_t small[VFM_VU_RX_CAP];
};

/* Starts reading @sock (nothing buffered); @whole: a whole-message
 * reader. */
void vfm_vu_rx_init(struct vfm_vu_rx *rx, int sock, bool whole);

/* Closes pending fds, frees a grown buffer and forgets what is buffered
 * (the connection ended). */
void vfm_vu_rx_reset(struct vfm_vu_rx *rx);

/*
 * vfm_vu_rx_ready - reads what has come, without waiting. Return: 1 when
 * the next vfm_vu_rx_hdr() (and, for a whole-message reader, the body
 * calls after it, for a message of at most @max_msg bytes) will not wait:
 * the bytes are buffered, or the socket has ended or failed (the calls
 * then say how); 0 when more must come first; -ENOMEM.
 */
int vfm_vu_rx_ready(struct vfm_vu_rx *rx, size_t max_msg);

/* The caller's poll says the socket is readable: vfm_vu_rx_ready() reads
 * again (after a read that emptied the socket it does not, to spare a
 * system call that would find nothing). */
static inline void vfm_vu_rx_readable(struct vfm_vu_rx *rx)
{
    rx->drained = false;
}

/* The next message's header, and the fds it came with (*@ctrunc: more than
 * VFM_VU_MAX_FDS were sent, or the kernel dropped some; the ones that came
 * are still given and are the caller's to close). Return: 0; -ENOTCONN on
 * a clean end of file before the header; -EPROTO on one inside it;
 * -errno. */
int vfm_vu_rx_hdr(struct vfm_vu_rx *rx, struct vfm_vu_hdr *h, int *fds, unsigned *nfds,
                  bool *ctrunc);

/* Exactly the bytes @iov describes (at most 8 entries), from the current
 * message's body: buffered bytes first, then straight from the socket.
 * Return: 0; -EPROTO (end of file); -errno. */
int vfm_vu_rx_body(struct vfm_vu_rx *rx, const struct iovec *iov, int iovcnt);

/* The current body's @len bytes where they lie in the buffer (valid until
 * the next call), consumed; NULL when they are not all buffered. */
const void *vfm_vu_rx_take(struct vfm_vu_rx *rx, size_t len);

/* Drops @len bytes of the current body (to keep framing): a whole-message
 * reader drops the ones not yet come as they come. */
int vfm_vu_rx_discard(struct vfm_vu_rx *rx, size_t len);

/*
 * A queue of outgoing messages for a non-blocking socket: what the socket
 * does not take at once is copied and sent by vfm_vu_tx_flush() when it
 * can be (the fds of a message go with its first byte). Not thread-safe.
 */
struct vfm_vu_tx_seg;
struct vfm_vu_tx {
    struct vfm_vu_tx_seg *head, *tail;
    size_t bytes; /* queued */
};

/* Sends the message now as far as the socket takes it, queues the rest
 * (fds are duplicated when none of the message went). Return: 0 (sent or
 * queued); -ENOMEM; -errno of the socket (-EPIPE: the peer is gone). */
int vfm_vu_tx_send(struct vfm_vu_tx *tx, int sock, const struct vfm_vu_hdr *h,
                   const struct iovec *iov, int iovcnt, const int *fds, unsigned nfds);

/* Sends what is queued. Return: 0 when nothing is left; -EAGAIN when the
 * socket is full; -errno. */
int vfm_vu_tx_flush(struct vfm_vu_tx *tx, int sock);

static inline bool vfm_vu_tx_pending(const struct vfm_vu_tx *tx)
{
    return tx->head != NULL;
}

/* Drops what is queued (closing queued fds). */
void vfm_vu_tx_reset(struct vfm_vu_tx *tx);

#endif
