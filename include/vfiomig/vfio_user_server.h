/* SPDX-License-Identifier: MIT */
/**
 * @file
 * vfiomig vfio-user, part 2: the server — one vfiomig device
 * (vfiomig/device.h) served to one client at a time, over a socket it
 * listens on or one the caller hands it, driven by its own loop or by the
 * caller's; and the table of DMA mappings its client gives it. State
 * changes go through the device runtime only. (vfiomig/vfio_user.h has the
 * whole protocol.)
 */
#ifndef VFIOMIG_VFIO_USER_SERVER_H
#define VFIOMIG_VFIO_USER_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include <vfiomig/common.h>
#include <vfiomig/device.h>
#include <vfiomig/vfio_user_wire.h>

#ifdef __cplusplus
extern "C" {
#endif

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

/*
 * Touching the client's memory safely. The memory behind a mapping is a
 * file the client owns: it can shrink it at any moment, and a load or store
 * past the file's new end is a SIGBUS. The accessors below survive that:
 * the access fails with -EIO and the device goes on. vfm_dma_new()
 * installs a SIGBUS handler for them (SA_SIGINFO, SA_NODEFER, SA_ONSTACK)
 * unless SIGBUS's handler already is it; a SIGBUS outside a guarded access
 * goes to the handler it replaced (or kills, as without one). A handler the
 * application installs later for SIGBUS must chain to it in turn, or be in
 * place before the device's vfm_dma_new().
 */

/**
 * vfm_dma_fn - the work vfm_dma_access() guards: touch @mem, @len bytes
 * of the client's memory. It may be left at any instruction (when the
 * memory goes away under it), so it only loads and stores: no lock, no
 * allocation, no call that is not async-signal-safe, and nothing it
 * changes elsewhere is counted on until vfm_dma_access() returns 0.
 */
typedef void (*vfm_dma_fn)(void *mem, uint64_t len, void *arg);

/**
 * vfm_dma_access - hold [iova, iova+len) of a mapping with memory and @prot
 * (VFM_VU_DMA_READ_FLAG / WRITE_FLAG) and run @work on it, guarded against
 * the memory going away (see vfm_dma_fn).
 * Return: 0; -EFAULT (not mapped, not whole inside one mapping, or a range
 *      known with no memory: vfm_dma_read() and vfm_dma_write() reach
 *      those); -EACCES (the mapping does not allow @prot);
 *      -EIO (the memory went away under @work: the client shrank its file);
 *      -EINVAL (no @work).
 * Threading: as vfm_dma_get(); @work runs with the mapping held, so a
 *      DMA_UNMAP of it waits for @work.
 */
VFM_EXPORT int vfm_dma_access(struct vfm_dma *dma, uint64_t iova, uint64_t len, uint32_t prot,
                              vfm_dma_fn work, void *arg);
/* How long one DMA_READ or DMA_WRITE message waits for the client's reply. */
#define VFM_DMA_MSG_TIMEOUT_MS 2000u

/**
 * vfm_dma_read - copy @len bytes of the client's memory at @iova to @buf.
 * In a mapping with memory: a guarded copy. In a range the client mapped
 * without an fd (QEMU maps another device's BAR so): DMA_READ messages to
 * the client, at most its max_data_xfer_size each, while a server serves
 * it; each waits VFM_DMA_MSG_TIMEOUT_MS at most for its reply, which is
 * checked (the address and count asked for) before a byte reaches @buf.
 * Return: as vfm_dma_access(), and through messages: the client's error
 *      reply (its errno, negative; -EIO when it gave none); -ETIMEDOUT (no
 *      reply in time); -ENOTCONN (no client, or it left); -EPROTO (a reply
 *      that does not answer the request). On -EIO or a message error @buf
 *      may hold part of it.
 * Threading: any thread, the server's own included (while it waits for
 *      its reply it reads the connection itself, and queues the client's
 *      commands for the server); a caller must not hold a lock that the
 *      device's region callbacks or arcs take, or the client's commands
 *      behind its DMA wait for the timeout (QEMU waits for the reply to an
 *      MMIO access before it answers DMA: an MMIO to such a register
 *      stalls the guest until then).
 */
VFM_EXPORT int vfm_dma_read(struct vfm_dma *dma, uint64_t iova, void *buf, uint64_t len);
/**
 * vfm_dma_write - copy @len bytes of @buf to the client's memory at @iova:
 * a guarded copy, or DMA_WRITE messages, as vfm_dma_read().
 * Return: as vfm_dma_read() (on an error part of it may be written).
 */
VFM_EXPORT int vfm_dma_write(struct vfm_dma *dma, uint64_t iova, const void *buf, uint64_t len);

/**
 * vfm_dma_get - hold [iova, iova+len) of a mapping with memory and @prot
 * (VFM_VU_DMA_READ_FLAG / WRITE_FLAG), and get its address. Unguarded:
 * a touch after the client shrank its file kills the process with SIGBUS,
 * so a device that cannot trust its client uses vfm_dma_access() instead.
 * Return: the address, or NULL (not mapped, not whole inside one mapping,
 *      no memory, or not allowed). Every non-NULL get needs one put.
 */
VFM_EXPORT void *vfm_dma_get(struct vfm_dma *dma, uint64_t iova, uint64_t len, uint32_t prot);
/**
 * vfm_dma_put - releases what one vfm_dma_get() held.
 */
VFM_EXPORT void vfm_dma_put(struct vfm_dma *dma);

/**
 * vfm_dma_log_ops - the DMA table as a device's dirty log: give these ops
 * and the table (as dma_log_ctx) to vfm_device_new(), and the device
 * answers DMA_LOGGING_START/STOP/REPORT. While logging, every
 * vfm_dma_write() and every vfm_dma_access() with VFM_VU_DMA_WRITE_FLAG
 * marks the pages it covers (in memory or through messages; a write that
 * failed may have written some: it marks them too), and a vfm_dma_get()
 * for writing marks its whole range when it is taken (what is written
 * through the pointer is not seen; a REPORT waits for the hold to be put,
 * so that no write through it lands after the report cleared it). The log is kept at the START's page
 * size rounded up to a power of two, at least 4096 and at most 2 MiB; a
 * REPORT at a finer size sets every bit of a kept unit, and clears the
 * kept unit only when it covers it whole. At most 2^28 units in all
 * (-E2BIG beyond).
 * Threading: marking is lock-free among the device threads (atomic bit
 * operations under the table's read lock); START and STOP take the write
 * lock (they wait for accesses in progress); so does REPORT (a write
 * marks after it lands, so one a report does not see is in the next).
 */
VFM_EXPORT const struct vfm_dma_log_ops *vfm_dma_log_ops(void);

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

/* The parts of a region a client may mmap, when not all of it (REGION_INFO
 * then carries the sparse-mmap capability; page-aligned, inside the region). */
struct vfm_server_mmap_area {
    uint64_t offset;
    uint64_t size;
};

#define VFM_SERVER_MAX_MMAP_AREAS 8u

struct vfm_server_sparse {
    uint32_t n; /* 0: the whole region may be mmapped (when it has an fd) */
    struct vfm_server_mmap_area areas[VFM_SERVER_MAX_MMAP_AREAS];
};

/* DEVICE_GET_IRQ_INFO for @index (< nirqs): fill @info's flags and count.
 * Return: 0 or a negative errno (sent to the client). */
typedef int (*vfm_irq_info_fn)(void *priv, uint32_t index, struct vfm_vu_irq_info *info);
/* DEVICE_SET_IRQS, checked against vfm_irq_info_fn's count for its index
 * (start + count within it, exactly one DATA_ and one ACTION_ flag, a
 * DATA_BOOL with count bytes, a DATA_EVENTFD with count fds). @fds are
 * the server's, closed after the call: the callee dup()s those it keeps.
 * Return: 0 or a negative errno (sent to the client). */
typedef int (*vfm_set_irqs_fn)(void *priv, const struct vfm_vu_irq_set *set, const void *data,
                               size_t len, const int *fds, unsigned nfds);

/* The layout of struct vfm_server_config this header describes. */
#define VFM_SERVER_CONFIG_VERSION 2u

struct vfm_server_config {
    /* VFM_SERVER_CONFIG_VERSION: the members a caller built against know
     * of (0 is taken as 1); members are only ever added at the end */
    uint32_t version;
    const char *socket_path; /* listened on, mode 0600; NULL: no listener,
                              * clients come only by vfm_server_adopt() */
    struct vfm_device *dev;  /* migration goes through it only */
    struct vfm_dma *dma;     /* the device's DMA table (the server fills it) */
    struct vfm_server_region regions[VFM_SERVER_MAX_REGIONS];
    uint32_t nregions;
    void *priv;                  /* passed to region callbacks */
    uint32_t max_data_xfer_size; /* 0: VFM_VU_DEFAULT_MAX_XFER */
    /* ---- version 2 ---- */
    /* per region: the parts a client may mmap (vfiomig/pci.h fills them) */
    struct vfm_server_sparse sparse[VFM_SERVER_MAX_REGIONS];
    /* interrupts: DEVICE_GET_INFO's num_irqs, and where GET_IRQ_INFO and
     * SET_IRQS go (0 / NULL: none; both are then EINVAL, as before) */
    uint32_t nirqs;
    vfm_irq_info_fn irq_info;
    vfm_set_irqs_fn set_irqs;
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

#ifdef __cplusplus
}
#endif
#endif /* VFIOMIG_VFIO_USER_SERVER_H */
