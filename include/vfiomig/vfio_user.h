/* SPDX-License-Identifier: MIT */
/*
 * vfiomig vfio-user — the protocol of QEMU's docs/interop/vfio-user.rst
 * (version 0.1; libvfio-user speaks 0.2, whose addition — a second socket
 * for server-to-client commands, offered in VERSION — vfiomig does not use;
 * it answers a 0.1 client with 0.1), in three parts:
 *
 *  1. the wire: message layouts and a pure codec that checks every length,
 *     offset, count and fd count before anything is used (vfm_vu_decode_*);
 *     fuzzed by fuzz/fuzz_vfio_user.c;
 *  2. the server: vfm_server serves one vfiomig device (vfiomig/device.h) on
 *     a UNIX socket; its state changes go through the device runtime only;
 *  3. the client: vfm_vu_client connects to any vfio-user server (vfiomig's
 *     or one built on libvfio-user) and is a backend of the endpoint
 *     interface (vfiomig/endpoint.h).
 *
 * The extensions vfiomig brings (RUNNING_P2P over vfio-user, MIG_DATA_SIZE,
 * PRE_COPY information) are written down in docs/vfio-user-extensions.md.
 *
 * All multi-byte fields are in host byte order, as the specification says
 * for this protocol revision; the structs below are packed and their sizes
 * checked at compile time.
 */
#ifndef VFIOMIG_VFIO_USER_H
#define VFIOMIG_VFIO_USER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <vfiomig/device.h>
#include <vfiomig/endpoint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* 1. The wire                                                         */
/* ------------------------------------------------------------------ */

#define VFM_VU_MAJOR 0
#define VFM_VU_MINOR 1

enum vfm_vu_cmd {
    VFM_VU_VERSION = 1,
    VFM_VU_DMA_MAP = 2,
    VFM_VU_DMA_UNMAP = 3,
    VFM_VU_DEVICE_GET_INFO = 4,
    VFM_VU_DEVICE_GET_REGION_INFO = 5,
    VFM_VU_DEVICE_GET_REGION_IO_FDS = 6,
    VFM_VU_DEVICE_GET_IRQ_INFO = 7,
    VFM_VU_DEVICE_SET_IRQS = 8,
    VFM_VU_REGION_READ = 9,
    VFM_VU_REGION_WRITE = 10,
    VFM_VU_DMA_READ = 11,
    VFM_VU_DMA_WRITE = 12,
    VFM_VU_DEVICE_RESET = 13,
    VFM_VU_REGION_WRITE_MULTI = 15,
    VFM_VU_DEVICE_FEATURE = 16,
    VFM_VU_MIG_DATA_READ = 17,
    VFM_VU_MIG_DATA_WRITE = 18,
    /* vfiomig's extension, sent only when both sides announced
     * "vfiomig": {"precopy_info": true} in VERSION: the pre-copy bytes still
     * to read (VFIO_MIG_GET_PRECOPY_INFO). */
    VFM_VU_VFIOMIG_PRECOPY_INFO = 0x7f01,
};

/* Header flags */
#define VFM_VU_TYPE_MASK 0xfu
#define VFM_VU_TYPE_COMMAND 0u
#define VFM_VU_TYPE_REPLY 1u
#define VFM_VU_NO_REPLY (1u << 4)
#define VFM_VU_ERROR (1u << 5)

struct vfm_vu_hdr {
    uint16_t msg_id;
    uint16_t cmd;
    uint32_t msg_size; /* header included */
    uint32_t flags;
    uint32_t error;
} __attribute__((packed));

struct vfm_vu_version {
    uint16_t major;
    uint16_t minor;
    /* then, optionally, NUL-terminated JSON */
} __attribute__((packed));

#define VFM_VU_DMA_READ_FLAG (1u << 0)
#define VFM_VU_DMA_WRITE_FLAG (1u << 1)

struct vfm_vu_dma_map {
    uint32_t argsz;
    uint32_t flags;
    uint64_t offset; /* into the fd passed with the message */
    uint64_t addr;   /* DMA address (IOVA) */
    uint64_t size;
} __attribute__((packed));

struct vfm_vu_dma_unmap {
    uint32_t argsz;
    uint32_t flags;
    uint64_t addr;
    uint64_t size;
} __attribute__((packed));

/* VFIO_DEVICE_FLAGS_* */
#define VFM_VU_DEVICE_FLAGS_RESET (1u << 0)
#define VFM_VU_DEVICE_FLAGS_PCI (1u << 1)

struct vfm_vu_device_info {
    uint32_t argsz;
    uint32_t flags;
    uint32_t num_regions;
    uint32_t num_irqs;
} __attribute__((packed));

/* VFIO_REGION_INFO_FLAG_* */
#define VFM_VU_REGION_READ_FLAG (1u << 0)
#define VFM_VU_REGION_WRITE_FLAG (1u << 1)
#define VFM_VU_REGION_MMAP_FLAG (1u << 2)
#define VFM_VU_REGION_CAPS_FLAG (1u << 3)

struct vfm_vu_region_info {
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t cap_offset;
    uint64_t size;
    uint64_t offset; /* mmap() offset into the fd passed with the reply */
} __attribute__((packed));

struct vfm_vu_region_access {
    uint64_t offset;
    uint32_t region;
    uint32_t count;
    /* then count bytes (REGION_WRITE request, REGION_READ reply) */
} __attribute__((packed));

struct vfm_vu_irq_info {
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t count;
} __attribute__((packed));

struct vfm_vu_irq_set {
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t start;
    uint32_t count;
} __attribute__((packed));

struct vfm_vu_feature {
    uint32_t argsz; /* request: the most reply payload wanted */
    uint32_t flags; /* feature id | VFM_FEATURE_GET / SET / PROBE */
    /* then the feature's data */
} __attribute__((packed));

struct vfm_vu_mig_state {
    uint32_t device_state;
    int32_t data_fd; /* unused in vfio-user: -1 */
} __attribute__((packed));

struct vfm_vu_mig_data {
    uint32_t argsz;
    uint32_t size;
    /* then size bytes (MIG_DATA_WRITE request, MIG_DATA_READ reply) */
} __attribute__((packed));

/* VFM_VU_VFIOMIG_PRECOPY_INFO's request and reply (the kernel's struct
 * vfio_precopy_info): the request has argsz 24, flags 0 and zeros. */
struct vfm_vu_precopy_info {
    uint32_t argsz;
    uint32_t flags;
    uint64_t initial_bytes;
    uint64_t dirty_bytes;
} __attribute__((packed));

/* Default max_data_xfer_size: 1 MiB, the specification's default. */
#define VFM_VU_DEFAULT_MAX_XFER (1u << 20)
/* Our ceiling on max_data_xfer_size (either side): 64 MiB. */
#define VFM_VU_MAX_XFER_LIMIT (64u << 20)
/*
 * The largest body a vfiomig client sends to a server that did not announce
 * "whole_bodies": 32 KiB. Linux queues a UNIX-stream sendmsg() in buffers
 * of at most one page of header room plus 32 KiB of fragments (the
 * af_unix send path's fallback-to-order-0 limit), each appended to the
 * receiver's queue whole; a message of 16 + 8 + 32 KiB goes in one such
 * buffer, so a server that takes the header and then the body with one
 * recv() each finds the whole body there. Larger bodies can be read in
 * part (observed with libvfio-user: at a 256 KiB body, one recv() took
 * 219,248 of 262,152 bytes, and the server lost framing).
 */
#define VFM_VU_SAFE_BODY (32u << 10)
/* The fds vfiomig accepts in one message. */
#define VFM_VU_MAX_FDS 8u

/* What one side announced in VERSION (defaults when absent). */
struct vfm_vu_caps {
    uint32_t max_msg_fds;        /* default 1 */
    uint32_t max_data_xfer_size; /* default 1 MiB */
    uint32_t max_dma_maps;       /* default 65535 */
    uint64_t pgsizes;            /* default 4096 */
    uint64_t migration_pgsize;   /* "migration": {"pgsize"}; 0 when absent */
    bool precopy_info;           /* "vfiomig": {"precopy_info": true} */
    /* "vfiomig": {"whole_bodies": true}: this side reads a message's body
     * whole however its bytes arrive, so the other may send bodies up to
     * max_data_xfer_size. Without it, a vfiomig client keeps the bodies it
     * sends to VFM_VU_SAFE_BODY (a server may read a body with one recv(),
     * as libvfio-user does). */
    bool whole_bodies;
};

/**
 * vfm_vu_caps_default - the defaults of the specification.
 */
VFM_EXPORT void vfm_vu_caps_default(struct vfm_vu_caps *caps);

/**
 * vfm_vu_caps_parse - read a VERSION message's JSON (json-c).
 * @json: the bytes after major/minor, @len of them; must be NUL-terminated
 *        within @len and hold a JSON object. Unknown keys are ignored; a
 *        known key of the wrong type, a number out of range, or a missing
 *        NUL is refused.
 * Return: 0 and @caps (defaults for what is absent), or -EINVAL.
 */
VFM_EXPORT int vfm_vu_caps_parse(const char *json, size_t len, struct vfm_vu_caps *caps);

/** vfm_vu_caps_format - the JSON for @caps; malloc'd, NUL-terminated, or
 * NULL (out of memory). */
VFM_EXPORT char *vfm_vu_caps_format(const struct vfm_vu_caps *caps);

/**
 * vfm_vu_decode_hdr - check a received header.
 * @max_size: the largest msg_size this side accepts.
 * Return: 0; -EINVAL (msg_size below 16, a reserved flag bit, a type other
 *      than command/reply); -EMSGSIZE (msg_size above @max_size).
 */
VFM_EXPORT int vfm_vu_decode_hdr(const struct vfm_vu_hdr *h, uint32_t max_size);

/* A command, checked and decoded. */
struct vfm_vu_request {
    uint16_t cmd;
    union {
        struct vfm_vu_version version;
        struct vfm_vu_dma_map dma_map;
        struct vfm_vu_dma_unmap dma_unmap;
        struct vfm_vu_device_info info;
        struct vfm_vu_region_info region_info;
        struct vfm_vu_region_access access;
        struct vfm_vu_irq_info irq_info;
        struct vfm_vu_irq_set irq_set;
        struct vfm_vu_feature feature;
        struct vfm_vu_mig_data mig;
        struct vfm_vu_precopy_info precopy;
    } u;
    const uint8_t *data; /* trailing bytes: version JSON, write data, feature data */
    size_t data_len;
};

/**
 * vfm_vu_decode_request - check a command's payload against the layout of
 * its command, before any field is used.
 * @cmd: the header's command.
 * @payload, @len: the bytes after the header (@len = msg_size - 16).
 * @nfds: file descriptors that came with it.
 * @max_xfer: the most data a REGION_WRITE or MIG_DATA_WRITE may carry, and
 *      a REGION_READ or MIG_DATA_READ may ask for.
 * Return: 0 and @out; -EINVAL for a payload of the wrong size or
 *      inconsistent lengths, or fds where the command takes none (or too
 *      many); -E2BIG for a count above @max_xfer; -ENOSYS for a command
 *      this implementation does not know. Semantic checks (a region index,
 *      an offset inside a region) belong to the server.
 */
VFM_EXPORT int vfm_vu_decode_request(uint16_t cmd, const void *payload, size_t len, unsigned nfds,
                                     uint32_t max_xfer, struct vfm_vu_request *out);

/**
 * vfm_vu_cmd_name - the name of a command ("MIG_DATA_READ"), or "UNKNOWN".
 */
VFM_EXPORT const char *vfm_vu_cmd_name(uint16_t cmd);

/* ------------------------------------------------------------------ */
/* DMA: the client memory a server's device may touch                  */
/* ------------------------------------------------------------------ */

/*
 * The table of DMA mappings a client gave the server (DMA_MAP with an fd:
 * the server mmap()s it). A device thread takes a mapping with
 * vfm_dma_get() and releases it with vfm_dma_put(); DMA_UNMAP (and a client
 * disconnect) waits until no mapping of the range is held, as the
 * specification requires ("release all references ... before replying").
 *
 * Threading: all calls are thread-safe; get/put are a read lock, so many
 * device threads may hold mappings at once; map/unmap take the write lock.
 */
struct vfm_dma;

/**
 * vfm_dma_new - an empty table for at most @max_maps mappings.
 * Return: 0 and *@out, or -ENOMEM.
 */
VFM_EXPORT int vfm_dma_new(uint32_t max_maps, struct vfm_dma **out);
/**
 * vfm_dma_free - unmaps everything and frees. NULL does nothing.
 */
VFM_EXPORT void vfm_dma_free(struct vfm_dma *dma);

/**
 * vfm_dma_map - add [iova, iova+size): mmap @fd at @offset (or no memory
 * when @fd < 0: the range is known but not directly accessible).
 * Return: 0; -EEXIST (overlaps a mapping); -EINVAL (size 0, wrap-around,
 *      unaligned offset, bad prot); -ENOSPC (max_maps reached); an mmap
 *      error. On success the table owns nothing of @fd (it is not closed).
 */
VFM_EXPORT int vfm_dma_map(struct vfm_dma *dma, uint64_t iova, uint64_t size, int fd,
                           uint64_t offset, uint32_t prot);

/**
 * vfm_dma_unmap - removes the mapping that is exactly [iova, iova+size), waiting for
 * holders. Return: 0 or -EINVAL (no such mapping).
 */
VFM_EXPORT int vfm_dma_unmap(struct vfm_dma *dma, uint64_t iova, uint64_t size);

/**
 * vfm_dma_unmap_all - removes every mapping (client gone).
 */
VFM_EXPORT void vfm_dma_unmap_all(struct vfm_dma *dma);

/**
 * vfm_dma_get - hold [iova, iova+len) of a mapping with memory and @prot
 * (VFM_VU_DMA_READ_FLAG / WRITE_FLAG), and get its address.
 * Return: the address, or NULL (not mapped, not whole inside one mapping,
 *      no memory, or not allowed). Every non-NULL get needs one put.
 */
VFM_EXPORT void *vfm_dma_get(struct vfm_dma *dma, uint64_t iova, uint64_t len, uint32_t prot);
/**
 * vfm_dma_put - releases what one vfm_dma_get() held.
 */
VFM_EXPORT void vfm_dma_put(struct vfm_dma *dma);

/* ------------------------------------------------------------------ */
/* 2. The server                                                       */
/* ------------------------------------------------------------------ */

/* Region access callback for a region without memory: read or write
 * @count bytes at @offset (already checked against the region's size).
 * Return: 0 or a negative errno (sent to the client). */
typedef int (*vfm_region_access_fn)(void *priv, uint32_t region, uint64_t offset, void *buf,
                                    uint32_t count, bool write);

struct vfm_server_region {
    uint64_t size;               /* 0: the region does not exist */
    uint32_t flags;              /* VFM_VU_REGION_READ_FLAG / WRITE_FLAG */
    int fd;                      /* >= 0: mmap-able (MMAP flag, fd sent in REGION_INFO) */
    void *mem;                   /* the server's own mapping of it, for REGION_READ/WRITE */
    vfm_region_access_fn access; /* used when mem is NULL */
};

#define VFM_SERVER_MAX_REGIONS 16u

struct vfm_server_config {
    const char *socket_path; /* listened on, mode 0600; NULL: no listener,
                              * clients come only by vfm_server_adopt() */
    struct vfm_device *dev;  /* migration goes through it only */
    struct vfm_dma *dma;     /* the device's DMA table (the server fills it) */
    struct vfm_server_region regions[VFM_SERVER_MAX_REGIONS];
    uint32_t nregions;
    void *priv;                  /* passed to region callbacks */
    uint32_t max_data_xfer_size; /* 0: VFM_VU_DEFAULT_MAX_XFER */
};

struct vfm_server;

/**
 * vfm_server_new - a server for one device; listens on the socket path
 * (mode 0600) when the config has one.
 * Return: 0 and *@out; -EEXIST when the path exists and is not a dead
 *      server's socket; -EADDRINUSE when a server answers on it; a socket
 *      error.
 */
VFM_EXPORT int vfm_server_new(const struct vfm_server_config *cfg, struct vfm_server **out);

/**
 * vfm_server_adopt - serve an already-connected stream socket (one a VMM
 * made, or one end of a socketpair()) as the client. The server owns @fd
 * from then on, and closes it even when the call fails.
 * Return: 0; -EBUSY when a client is being served; -ENOTSOCK; -errno.
 * Threading: as vfm_server_dispatch().
 */
VFM_EXPORT int vfm_server_adopt(struct vfm_server *srv, int fd);

/**
 * vfm_server_poll_fd - one fd for the caller's event loop: readable
 * whenever vfm_server_dispatch() has work (a connection to accept, a
 * message, a reply to finish sending, a stop). Owned by the server.
 */
VFM_EXPORT int vfm_server_poll_fd(const struct vfm_server *srv);

/**
 * vfm_server_dispatch - handle what is ready, without waiting for
 * anything: accepts or refuses a new connection, sends what is left of a
 * reply the socket could not take, and handles every message that has
 * arrived whole (one that has not is kept, and handled by a later call).
 * The rules of the protocol are vfm_server_run()'s. A reply the socket
 * cannot take at once is kept (the connection's socket is made
 * non-blocking) and no further message is handled until it is gone.
 * Return: 0; -ESHUTDOWN once vfm_server_stop() was called; a negative
 *      errno when the listening socket failed. A client that vanishes or
 *      breaks framing is dropped (as vfm_server_run() says), which is not
 *      an error of the server.
 * Threading: one thread at a time calls vfm_server_adopt(),
 * vfm_server_dispatch() and vfm_server_run() on a server. The device's
 * own threads may run meanwhile.
 */
VFM_EXPORT int vfm_server_dispatch(struct vfm_server *srv);

/**
 * vfm_server_run - serve until vfm_server_stop() is called (from any thread
 * or a signal handler): a loop that waits on vfm_server_poll_fd() and
 * handles what is ready. One client at a time: a second connection gets an
 * EBUSY error reply and is closed (one that connects just as the previous
 * client closes is served). Messages are processed in order, each fully; a
 * client may send several before it reads the replies, and the fds sent
 * with a message go with that message however its bytes arrive. A
 * malformed message gets an error reply with its errno, and serving goes
 * on. DEVICE_FEATURE is answered by the device runtime
 * (vfm_device_feature()). A client that vanishes (or breaks framing) is
 * dropped: its DMA mappings are all removed (after device threads let go),
 * and the runtime's release policy (vfm_device_release(): a save or load
 * in progress is ended, the state otherwise kept) leaves the device for the
 * next client, who is then accepted.
 * Unlike vfm_server_dispatch(), once a message's header has come its body
 * is read as it arrives, straight into the device for MIG_DATA_WRITE, and
 * replies are sent with blocking writes: a loop with nothing else to do
 * waits in the kernel rather than in poll(). A body that stops coming for
 * VFM_VU_DEFAULT_TIMEOUT_MS drops the client.
 * Return: 0 after a stop, or a negative errno if the listening socket
 *      failed.
 * Threading: call from one thread; it starts no other.
 */
VFM_EXPORT int vfm_server_run(struct vfm_server *srv);

/**
 * vfm_server_stop - makes vfm_server_run() return, and vfm_server_dispatch() return
 * -ESHUTDOWN. Async-signal-safe; any thread.
 */
VFM_EXPORT void vfm_server_stop(struct vfm_server *srv);

/**
 * vfm_server_set_log - this server's own log sink (messages that name its
 * device); @sink NULL goes back to the process's (vfm_log_set()). Call before
 * serving.
 */
VFM_EXPORT void vfm_server_set_log(struct vfm_server *srv, vfm_log_fn sink, void *ctx,
                                   int max_level);

/**
 * vfm_server_free - closes the sockets, removes the socket path it created. NULL does
 * nothing.
 */
VFM_EXPORT void vfm_server_free(struct vfm_server *srv);

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

/* vfm_vu_client_adopt() flag: the caller's loop drives the client. */
#define VFM_VU_CLIENT_ASYNC 1u

/**
 * vfm_vu_client_adopt - a client over an already-connected stream socket
 * (one a VMM made, or one end of a socketpair()). The client owns @fd from
 * then on, and closes it even when the call fails.
 * @flags: 0 negotiates here, as vfm_vu_client_connect_timeout() does.
 *      VFM_VU_CLIENT_ASYNC makes the socket non-blocking and returns at
 *      once, VERSION and DEVICE_GET_INFO queued: the caller's loop drives
 *      the client (vfm_vu_client_poll(), vfm_vu_client_dispatch()), and
 *      vfm_vu_client_ready() says when it is negotiated.
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
 * (VFM_VU_DMA_READ_FLAG / WRITE_FLAG); @fd >= 0 (mapped from @offset) is
 * sent with SCM_RIGHTS and the caller keeps it.
 * Return: 0 or the server's negative errno.
 */
VFM_EXPORT int vfm_vu_client_dma_map(struct vfm_vu_client *c, uint64_t iova, uint64_t size, int fd,
                                     uint64_t offset, uint32_t prot);
/**
 * vfm_vu_client_dma_unmap - DMA_UNMAP of exactly what one DMA_MAP mapped.
 * Return: 0 or the server's negative errno.
 */
VFM_EXPORT int vfm_vu_client_dma_unmap(struct vfm_vu_client *c, uint64_t iova, uint64_t size);

/**
 * vfm_vu_client_raw - send one message as given and receive its reply (for
 * tests and tools that probe a server). @payload may be anything; @fds are
 * sent with it.
 * @reply, @reply_cap: where the reply payload goes; *@reply_len its size
 *      (the rest of a longer reply is discarded).
 * Return: the reply's errno as a negative number when it has the error
 *      flag, else 0; or a transport error.
 */
VFM_EXPORT int vfm_vu_client_raw(struct vfm_vu_client *c, uint16_t cmd, const void *payload,
                                 size_t len, const int *fds, unsigned nfds, void *reply,
                                 size_t reply_cap, size_t *reply_len);

/**
 * vfm_vu_client_endpoint - the client as an endpoint (owned by the client: valid until it is
 * freed).
 */
VFM_EXPORT struct vfm_endpoint *vfm_vu_client_endpoint(struct vfm_vu_client *c);

#ifdef __cplusplus
}
#endif
#endif /* VFIOMIG_VFIO_USER_H */
