/* SPDX-License-Identifier: MIT */
/**
 * @file
 * vfiomig vfio-user, part 3: the client — connects to any vfio-user server
 * (vfiomig's or one built on libvfio-user), blocking or driven by the
 * caller's loop, and is a backend of the endpoint interface
 * (vfiomig/endpoint.h). (vfiomig/vfio_user.h has the whole protocol.)
 */
#ifndef VFIOMIG_VFIO_USER_CLIENT_H
#define VFIOMIG_VFIO_USER_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vfiomig/common.h>
#include <vfiomig/endpoint.h>
#include <vfiomig/vfio_user_wire.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* 3. The client                                                       */
/* ------------------------------------------------------------------ */

struct vfm_vu_client;

struct vfm_vu_client_info {
    uint32_t flags; /* VFM_VU_DEVICE_FLAGS_* */
    uint32_t num_regions;
    uint32_t num_irqs;
    struct vfm_vu_caps server_caps;
    uint16_t minor; /* the negotiated minor version */
};

/**
 * vfm_vu_client_connect - connect to a server's socket and negotiate
 * (VERSION), then read DEVICE_GET_INFO.
 * @label: the device's name in messages (NULL: the socket path).
 * Return: 0 and *@out; -ECONNREFUSED / -ENOENT (no server); -EBUSY (the
 *      server has a client); -EPROTO (a reply that breaks the protocol);
 *      -ETIMEDOUT (no answer within VFM_VU_DEFAULT_TIMEOUT_MS); the
 *      server's errno for a refused VERSION.
 * Threading: a client may be used from several threads; one lock
 * serialises its request/reply pairs.
 */
VFM_EXPORT int vfm_vu_client_connect(const char *socket_path, const char *label,
                                     struct vfm_vu_client **out);

/** vfm_vu_client_connect_timeout - vfm_vu_client_connect() waiting at most
 * @timeout_ms (0: the default) for the connection and every answer, from
 * VERSION on (as vfm_vu_client_set_timeout()). */
VFM_EXPORT int vfm_vu_client_connect_timeout(const char *socket_path, const char *name,
                                             unsigned timeout_ms, struct vfm_vu_client **out);

/* How long the client waits on a server by default: for a connection, for
 * a message to go out, for each part of a reply. A state change that
 * loads a large state takes seconds, not tens of them. */
#define VFM_VU_DEFAULT_TIMEOUT_MS 30000u

/**
 * vfm_vu_client_set_timeout - the longest the client waits on the server
 * at any one time (a send that cannot go, a reply that does not come); 0
 * sets the default. A request whose wait passes it fails with -ETIMEDOUT,
 * and so does every later one: the connection is closed, since its framing
 * is no longer known. Return: 0 or -errno.
 */
VFM_EXPORT int vfm_vu_client_set_timeout(struct vfm_vu_client *c, unsigned ms);

/* vfm_vu_client_adopt() flags: the caller's loop drives the client; the
 * client does not ask for the data fd extension (a session's bytes then go
 * by MIG_DATA_READ / MIG_DATA_WRITE messages, as with any server: for
 * tests and benchmarks of that path). */
#define VFM_VU_CLIENT_ASYNC 1u
#define VFM_VU_CLIENT_NO_DATA_FD 2u

/**
 * vfm_vu_client_adopt - a client over an already-connected stream socket
 * (one a VMM made, or one end of a socketpair()). The client owns @fd from
 * then on, and closes it even when the call fails.
 * @flags: 0 negotiates here, as vfm_vu_client_connect_timeout() does.
 *      VFM_VU_CLIENT_ASYNC makes the socket non-blocking and returns at
 *      once, VERSION and DEVICE_GET_INFO queued: the caller's loop drives
 *      the client (vfm_vu_client_poll(), vfm_vu_client_dispatch()), and
 *      vfm_vu_client_ready() says when it is negotiated.
 *      VFM_VU_CLIENT_NO_DATA_FD: see above.
 * Return: 0 and *@out, or as vfm_vu_client_connect().
 */
VFM_EXPORT int vfm_vu_client_adopt(int fd, const char *name, unsigned flags, unsigned timeout_ms,
                                   struct vfm_vu_client **out);

/*
 * vfm_vu_client_done_fn - the end of a request sent by vfm_vu_client_submit().
 * @status: 0; the server's errno (negative) for an error reply; -ETIMEDOUT
 *      when the answer did not come in time; -EPROTO for a reply that breaks
 *      the protocol; -ECONNRESET when the connection ended; -ECANCELED when
 *      the client is freed first. After any but the first two the client
 *      is dead and every other request ends with the same status.
 * @reply, @len: the reply's payload (valid during the call only).
 * @fds, @nfds: fds that came with the reply; the callback may take one by
 *      setting its slot to -1, the others are closed after it returns.
 */
typedef void (*vfm_vu_client_done_fn)(void *arg, int status, const void *reply, size_t len,
                                      int *fds, unsigned nfds);

/**
 * vfm_vu_client_submit - queue one request (any command; @payload as given,
 * @fds sent with it: the caller keeps its copies) and return at once; @done
 * is called from vfm_vu_client_dispatch() when its reply has come.
 * Requests are answered in the order they were submitted.
 * Return: 0; -EINVAL on a blocking client or a payload above what the
 *      server takes; -ENOMEM; the status that killed the client.
 */
VFM_EXPORT int vfm_vu_client_submit(struct vfm_vu_client *c, uint16_t cmd, const void *payload,
                                    size_t len, const int *fds, unsigned nfds,
                                    vfm_vu_client_done_fn done, void *arg);

/**
 * vfm_vu_client_poll - what the caller's loop waits for: the client's
 * socket, the poll() events it needs now (POLLIN, and POLLOUT while a
 * request is partly sent) and, in *@timeout_ms, how long until the oldest
 * request's deadline (-1: no request is waiting).
 * Return: the socket, or -ENOTCONN when the client is dead.
 */
VFM_EXPORT int vfm_vu_client_poll(const struct vfm_vu_client *c, short *events, int *timeout_ms);

/**
 * vfm_vu_client_dispatch - send what the socket takes, read what has come,
 * and end every request whose whole reply is there (or whose deadline has
 * passed); never waits. Return: 0; the status that killed the client.
 * Threading: an async client is driven from one thread at a time.
 */
VFM_EXPORT int vfm_vu_client_dispatch(struct vfm_vu_client *c);

/**
 * vfm_vu_client_ready - 1 once an async client is negotiated and has the device's info, 0
 * before, the negative status when negotiation failed.
 */
VFM_EXPORT int vfm_vu_client_ready(const struct vfm_vu_client *c);

/** vfm_vu_client_set_log - as vfm_server_set_log(), for the client. */
VFM_EXPORT void vfm_vu_client_set_log(struct vfm_vu_client *c, vfm_log_fn sink, void *ctx,
                                      int max_level);
/**
 * vfm_vu_client_free - closes the connection and frees; an async client's
 * waiting requests end with -ECANCELED first. NULL does nothing.
 */
VFM_EXPORT void vfm_vu_client_free(struct vfm_vu_client *c);
/**
 * vfm_vu_client_info - what negotiation and DEVICE_GET_INFO said (valid
 * while the client lives).
 */
VFM_EXPORT const struct vfm_vu_client_info *vfm_vu_client_info(const struct vfm_vu_client *c);

/**
 * vfm_vu_client_region_info - REGION_INFO for @index.
 * @fd: set to the region's mmap-able fd (caller owns it) or -1.
 * Return: 0 or the server's negative errno.
 */
VFM_EXPORT int vfm_vu_client_region_info(struct vfm_vu_client *c, uint32_t index,
                                         struct vfm_vu_region_info *info, int *fd);

/**
 * vfm_vu_client_region_read - REGION_READ of @count bytes (split into max_data_xfer_size
 * messages). Return: 0 or the server's negative errno.
 */
VFM_EXPORT int vfm_vu_client_region_read(struct vfm_vu_client *c, uint32_t region, uint64_t offset,
                                         void *buf, uint32_t count);
/**
 * vfm_vu_client_region_write - as vfm_vu_client_region_read(), the other
 * way.
 */
VFM_EXPORT int vfm_vu_client_region_write(struct vfm_vu_client *c, uint32_t region, uint64_t offset,
                                          const void *buf, uint32_t count);

/**
 * vfm_vu_client_dma_map - DMA_MAP of [@iova, @iova+@size) with @prot
 * (VFM_VU_DMA_READ_FLAG / WRITE_FLAG) of @fd from @offset, sent with
 * SCM_RIGHTS (the caller keeps it). This client shares memory only: it
 * does not carry out a server's DMA_READ/DMA_WRITE, so a range without an
 * fd (which a server reaches with those messages) is refused.
 * Return: 0; -EOPNOTSUPP (@fd < 0); the server's negative errno.
 */
VFM_EXPORT int vfm_vu_client_dma_map(struct vfm_vu_client *c, uint64_t iova, uint64_t size, int fd,
                                     uint64_t offset, uint32_t prot);
/**
 * vfm_vu_client_dma_unmap - DMA_UNMAP of exactly what one DMA_MAP mapped.
 * Return: 0 or the server's negative errno.
 */
VFM_EXPORT int vfm_vu_client_dma_unmap(struct vfm_vu_client *c, uint64_t iova, uint64_t size);

/**
 * vfm_vu_client_into_endpoint - the client becomes its endpoint's: from
 * then on vfm_ep_free() on the endpoint frees the client too, and @c must
 * not be used or freed by the caller.
 * Return: the endpoint, or NULL when out of memory (the client is freed).
 */
VFM_EXPORT struct vfm_endpoint *vfm_vu_client_into_endpoint(struct vfm_vu_client *c);

/**
 * vfm_vu_client_endpoint - the client as an endpoint (owned by the client: valid until it is
 * freed).
 */
VFM_EXPORT struct vfm_endpoint *vfm_vu_client_endpoint(struct vfm_vu_client *c);

#ifdef __cplusplus
}
#endif
#endif /* VFIOMIG_VFIO_USER_CLIENT_H */
