/* SPDX-License-Identifier: MIT */
/**
 * @file
 * vfiomig device runtime — one device's migration state, driven through the
 * arcs its author implements.
 *
 * A device author writes one callback per arc the device's capabilities need
 * (one const ops table per capability, as the kernel's vfio core asks of its
 * drivers), plus save and load. The runtime owns everything else: it plans
 * each requested change with the planner (vfiomig/fsm.h) and steps it arc by
 * arc, runs the data sessions, keeps the true state for GET, and handles
 * ERROR and reset. The flags a device advertises follow from the ops it
 * gives: vfm_mig_ops gives VFM_MIGRATION_STOP_COPY (mandatory);
 * vfm_p2p_ops gives VFM_MIGRATION_P2P; vfm_precopy_ops gives
 * VFM_MIGRATION_PRE_COPY (and, with P2P, PRE_COPY_P2P). A capability whose
 * table is NULL is not advertised, and the planner never asks for its arcs.
 *
 * States. A new device is RUNNING. vfm_device_set_state() walks the planned
 * path; vfm_device_get_state() always tells the state the device is really
 * in. Only vfm_device_reset() leaves ERROR; it returns the device to RUNNING.
 *
 * Arc callbacks. Each returns 0 when the device has completed the arc, or a
 * negative errno when it has not, in which case it must have left the device
 * in the arc's source state. A callback that cannot even do that calls
 * vfm_device_mark_broken() before returning its error: the runtime then puts
 * the device in ERROR. When an arc fails, the request fails with the arc's
 * error and the device stays in the last state it reached (the source state
 * of the failed arc), or ERROR if marked broken — what the uAPI allows.
 *
 * Data sessions. STOP -> STOP_COPY opens a save session: the runtime calls
 * the device's save(), which writes the whole device state into a vfm_buf
 * (the device is stopped, so the state cannot change under it), or, for a
 * device that saves in pieces (vfm_mig_ops.save_begin / save_piece), asks
 * only the state's size and streams it from the device's memory as it is
 * read. STOP ->
 * RESUMING opens a load session. The runtime wraps the saved bytes in a
 * stream of checksummed records (src/device/stream.h: a header with the
 * device's compat id, then numbered records, each with its length and an
 * XXH3-64 checksum of its header and of its payload, ending with an END
 * record), so that a truncated, extended, corrupted, reordered or foreign
 * stream is refused before load() is ever called; the load session checks
 * the records as they arrive. RESUMING -> STOP checks that the stream is
 * complete and calls load() with the state; if either refuses, the request
 * fails, the device stays in RESUMING with its session (or goes to ERROR if
 * load() marked it broken) and is never half-loaded: load() must check all
 * of its input before changing any device state.
 * A session ends when its group of states is left (the saving group
 * STOP_COPY / PRE_COPY / PRE_COPY_P2P for save, RESUMING for load), or on
 * reset.
 *
 * Pre-copy (vfm_precopy_ops). RUNNING -> PRE_COPY and RUNNING_P2P ->
 * PRE_COPY_P2P open a save session while the device runs: precopy->start()
 * begins the device's tracking of what changes. Reading the session then
 * gives PRECOPY records, each one precopy->save_precopy() call's output
 * (the initial data first, then what changed since it was given); a read
 * that finds nothing pending fails with -ENOMSG ("no more data now", as
 * the kernel's data_fd answers), never 0, which in STOP_COPY means the end
 * of the whole state. vfm_device_precopy_info() gives the bytes still to
 * come (VFIO_MIG_GET_PRECOPY_INFO). PRE_COPY <-> PRE_COPY_P2P (the P2P
 * ops' running_to_running_p2p / running_p2p_to_running) and PRE_COPY[_P2P]
 * -> STOP_COPY keep the same session and stream: the latter stops the
 * device (mig->running_to_stop, or p2p->running_p2p_to_stop), then save()
 * writes the FINAL record — what the pre-copy records lack; the device
 * knows from start() that it is tracking. If that save() fails, the device
 * is started again (stop_to_running / stop_to_running_p2p) and stays in
 * its pre-copy state. PRE_COPY -> RUNNING and PRE_COPY_P2P -> RUNNING_P2P
 * end the session: precopy->end() stops the tracking (its error fails the
 * arc). A pre-copy session that went on to STOP_COPY ends at STOP_COPY ->
 * STOP: stop_copy_to_stop, then precopy->end() (its error is only logged;
 * the arc is done). A reset ends it without either. On the load side a
 * device with pre-copy ops accepts PRECOPY records, and the runtime hands
 * each to precopy->load_precopy() as soon as it has arrived whole and
 * checked, in order, before the final load(); a device without them refuses
 * a stream that has any. A pre-copy session moves its bytes with the data
 * calls only: asking for a data fd on RUNNING -> PRE_COPY[_P2P] fails with
 * -EOPNOTSUPP and the state unchanged (a socket cannot answer ENOMSG).
 *
 * A session's bytes move in one of two ways, chosen by the caller of the
 * request that opens it:
 *  - as a file descriptor, like the kernel's data_fd: pass a non-NULL
 *    @data_fd to vfm_device_set_state(). It is one end of an AF_UNIX stream
 *    socket pair (O_CLOEXEC, blocking) that a runtime thread feeds or drains;
 *    the caller owns it and must close it. A save fd reads to end-of-file (0)
 *    exactly when the whole state was read. Once the session has ended, a
 *    save fd whose state was not all sent fails with ECONNRESET after the
 *    bytes already queued, and a load fd fails writes with EPIPE (callers
 *    should ignore SIGPIPE or use send(MSG_NOSIGNAL)). The kernel answers
 *    ENODEV here; a userspace fd cannot, and these are the nearest errors
 *    that cannot be mistaken for success. Bytes written to a load fd before
 *    RESUMING -> STOP are all taken into account by that arc.
 *  - as calls, for transports that move bytes themselves (vfio-user's
 *    MIG_DATA_READ / MIG_DATA_WRITE): pass @data_fd == NULL and use
 *    vfm_device_data_read() / vfm_device_data_write(), which fail with
 *    -ENODEV when there is no session of the right kind, exactly as the
 *    kernel's data_fd does after its session ended.
 *
 * Threading. Every function may be called from any thread. One lock (the
 * state lock) serialises set_state, get_state, data_size and the reset
 * itself; arc callbacks run with it held, one at a time, on the caller's
 * thread. Data calls take a second lock (the data lock) and may run
 * concurrently with a GET or a long SET; a SET that ends the session waits
 * for a data call in progress to return. Lock order: state, then data.
 * vfm_device_reset() never blocks on the state lock: if a transition holds
 * it (even one whose own callback asks for the reset, or one on another
 * thread), the reset is deferred and performed by that thread as soon as the
 * transition finishes, as the kernel drivers' deferred_reset does. Callbacks
 * must not call set_state, get_state or data_size on their own device
 * (deadlock); they may call vfm_device_reset() and vfm_device_mark_broken().
 * vfm_device_free() must not race with any other call on the same device.
 */
#ifndef VFIOMIG_DEVICE_H
#define VFIOMIG_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <vfiomig/uapi.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vfm_device;

/* An append-only byte buffer that save() writes the device state into. */
struct vfm_buf;

/**
 * vfm_buf_append - add @len bytes to the saved state.
 * Return: 0, -ENOMEM, or -EFBIG past the device's max_state_size.
 */
VFM_EXPORT int vfm_buf_append(struct vfm_buf *buf, const void *data, size_t len);

/**
 * vfm_buf_reserve - add @len uninitialised bytes and return where they are,
 * for a device that fills its state in place. The pointer is valid until the
 * next append or reserve.
 * Return: the pointer, or NULL (out of memory, or past max_state_size).
 */
VFM_EXPORT void *vfm_buf_reserve(struct vfm_buf *buf, size_t len);

/*
 * The STOP_COPY capability (mandatory). Every callback receives the device
 * and the config's @priv.
 */
struct vfm_mig_ops {
    /* STOP -> STOP_COPY: write the whole device state into @out. Required. */
    int (*save)(struct vfm_device *dev, void *priv, struct vfm_buf *out);
    /* RESUMING -> STOP: check, then load, a state save() produced (the
     * runtime has already checked the stream). All or nothing. Required. */
    int (*load)(struct vfm_device *dev, void *priv, const void *data, size_t len);
    /* RUNNING -> STOP: stop DMA, interrupts and state changes. Required
     * unless the device has P2P ops (then RUNNING_P2P -> STOP is used). */
    int (*running_to_stop)(struct vfm_device *dev, void *priv);
    /* STOP -> RUNNING. Required unless the device has P2P ops. */
    int (*stop_to_running)(struct vfm_device *dev, void *priv);
    /* STOP_COPY -> STOP, after the save session ended. Optional. */
    int (*stop_copy_to_stop)(struct vfm_device *dev, void *priv);
    /* STOP -> RESUMING, before the load session opens. Optional. */
    int (*stop_to_resuming)(struct vfm_device *dev, void *priv);
    /* Return the device to its power-on state, RUNNING. Required. On failure
     * the device is left in ERROR. */
    int (*reset)(struct vfm_device *dev, void *priv);
    /* An estimate of the bytes save() would write now (MIG_DATA_SIZE).
     * Optional: without it vfm_device_data_size() answers -ENOTTY. */
    int (*data_size)(struct vfm_device *dev, void *priv, uint64_t *bytes);
    /* Load in place, optional: in RESUMING, once the FINAL record's length
     * @len is known (its header checked), memory of the device's own where
     * the runtime receives that record's bytes — the state save() wrote —
     * instead of a buffer it allocates; load() then gets that memory. A
     * device that keeps such a staging buffer faulted in spares every load
     * session a fresh allocation (and the kernel's zeroing of it), and can
     * swap buffers in load() instead of copying. Return NULL to let the
     * runtime buffer it. The memory must stay valid and untouched by the
     * device until the load session ends (load() succeeds, or a reset).
     * Runs with the data lock held, like load_precopy. */
    void *(*load_buffer)(struct vfm_device *dev, void *priv, size_t len);
    /* Save in place, optional, read only from a config of version 3 or
     * later: at STOP -> STOP_COPY, memory of the device's own (*@len: its
     * size in bytes) where the runtime builds the save session's stream —
     * framing, then what save() appends — instead of memory it allocates.
     * Fresh memory for a large state costs the kernel's zeroing of every
     * page before the first byte can go (measured here: 0.74 s of a 1.1 s
     * stop-copy of 256 MiB); a staging buffer kept faulted in does not.
     * Return NULL to let the runtime allocate; a stream that does not fit
     * (save() then fails: its appends cannot grow the memory) is saved
     * again into the runtime's memory. The memory must stay valid and
     * untouched by the device until the save session ends (-> STOP, a
     * reset). Runs in the arc, like save(). A device may give the same
     * memory as load_buffer: a device never saves and loads at once. */
    void *(*save_buffer)(struct vfm_device *dev, void *priv, size_t *len);
    /* Save in pieces, optional (both or neither), read only from a config
     * of version 4 or later; given, they are used instead of save() and
     * save_buffer. For a state that lies in memory the device keeps
     * unchanged while stopped: the runtime streams it from there as the
     * client reads, instead of copying it whole at the arc. The stream
     * carries it as a FINAL_BEGIN record (the size) and FINAL_PART records
     * (each one piece or part of one, checksummed as it is made), so the
     * load side still gets every check and load() still gets the whole
     * state in one buffer.
     *
     * save_begin: at the arc into STOP_COPY (STOP -> STOP_COPY, or
     * PRE_COPY[_P2P] -> STOP_COPY once the device stopped), say the
     * state's size in *@len, in time that does not depend on it: nothing
     * is copied, so the arc completes at once. Runs in the arc, like
     * save(). Return: 0; -EOPNOTSUPP to have save() used this time;
     * another negative errno fails the arc as save()'s would. */
    int (*save_begin)(struct vfm_device *dev, void *priv, uint64_t *len);
    /* save_piece: the state's bytes from @offset (< the size save_begin
     * said) on: *@data and *@n, 1 to @max bytes of memory that stays valid
     * and unchanged until the save session ends. Offsets come in order; one
     * may be asked again (the same bytes must come). Called as the client
     * reads — on the data path, with the data lock held, perhaps on a
     * runtime thread — never concurrently with itself, never after the
     * session ended (the runtime stops reading before STOP_COPY -> STOP's
     * callback and before a reset), but possibly while another of the
     * device's callbacks runs: it may take the device's own lock, and must
     * not call back into the runtime. An error (negative errno) fails that
     * read, and the session gives nothing more: its reader sees the error
     * (a data fd: ECONNRESET), never a clean end. */
    int (*save_piece)(struct vfm_device *dev, void *priv, uint64_t offset, size_t max,
                      const void **data, size_t *n);
};

/*
 * The P2P capability (VFM_MIGRATION_P2P): RUNNING_P2P, in which the device
 * starts no new peer-to-peer DMA (no DMA at all if it cannot tell P2P from
 * other DMA), has completed what was in flight before the arc into it
 * returns, and still accepts incoming peer accesses. All four are required.
 */
struct vfm_p2p_ops {
    int (*running_to_running_p2p)(struct vfm_device *dev, void *priv);
    int (*running_p2p_to_running)(struct vfm_device *dev, void *priv);
    int (*running_p2p_to_stop)(struct vfm_device *dev, void *priv);
    int (*stop_to_running_p2p)(struct vfm_device *dev, void *priv);
};

/*
 * The PRE_COPY capability (VFM_MIGRATION_PRE_COPY): see "Pre-copy" above.
 * Every callback is required.
 */
struct vfm_precopy_ops {
    /* RUNNING -> PRE_COPY, RUNNING_P2P -> PRE_COPY_P2P, before the session
     * opens: start tracking changes; the whole state is initial data. */
    int (*start)(struct vfm_device *dev, void *priv);
    /* The pre-copy session ended (PRE_COPY -> RUNNING, PRE_COPY_P2P ->
     * RUNNING_P2P, or STOP_COPY -> STOP after pre-copy): stop tracking. (A
     * reset ends pre-copy too: the reset callback stops tracking as well.) */
    int (*end)(struct vfm_device *dev, void *priv);
    /* Write the next pre-copy data into @out, about @hint bytes (more or
     * less is fine): initial data not yet given, then data that changed
     * since it was given. Writing nothing means nothing is pending now.
     * The device is running; this runs with the state lock held. */
    int (*save_precopy)(struct vfm_device *dev, void *priv, struct vfm_buf *out, size_t hint);
    /* The bytes save_precopy has not given yet: initial and dirty. */
    int (*info)(struct vfm_device *dev, void *priv, uint64_t *initial, uint64_t *dirty);
    /* Destination, in RESUMING: apply one chunk save_precopy wrote (chunks
     * come in order; load() with the FINAL record follows). An error spoils
     * the load session as a corrupted stream does. Runs with the data lock
     * held, never concurrently with another callback of this device. */
    int (*load_precopy)(struct vfm_device *dev, void *priv, const void *data, size_t len);
};

/* The bytes save_precopy is asked for at a time. */
#define VFM_PRECOPY_CHUNK_HINT (4u << 20)

/*
 * DMA dirty logging (VFIO_DEVICE_FEATURE_DMA_LOGGING_START / _STOP /
 * _REPORT): which pages of its client's memory a device wrote, so that a
 * VMM can migrate that memory with the device. The runtime checks each
 * request as the kernel's core does (vfm_device_feature()); the ops keep
 * the log. A device that writes its client's memory only through a DMA
 * table's accessors gets them for free: vfm_dma_log_ops() in
 * vfiomig/vfio_user_server.h. Called with no runtime lock held; the ops
 * serialise themselves.
 */
/* struct vfm_dma_range and VFM_DMA_LOG_MAX_RANGES: vfiomig/uapi.h. */
struct vfm_dma_log_ops {
    /* Start logging writes into @ranges (checked: 1 to
     * VFM_DMA_LOG_MAX_RANGES of them, each non-empty, aligned to
     * *@page_size, not wrapping, not overlapping). *@page_size is a hint:
     * set it to the granularity kept. Return: 0; -EBUSY (already started);
     * -EINVAL (a granularity it cannot keep); -E2BIG; -ENOMEM. */
    int (*start)(void *ctx, const struct vfm_dma_range *ranges, uint32_t n, uint64_t *page_size);
    /* Stop logging and forget the log. Return: 0, or -EINVAL when not
     * started. */
    int (*stop)(void *ctx);
    /* For each @page_size unit of [@iova, @iova+@length) written since it
     * was last reported (or since START), set its bit in @bitmap (bit i of
     * word i / 64 for the unit at @iova + i * @page_size; the caller zeroed
     * it), and clear those units in the log. @page_size is any power of two
     * from 4096 (checked); a unit partly written counts as written. Return:
     * 0; -EINVAL (not started, or a range not wholly inside the logged
     * ones). */
    int (*report)(void *ctx, uint64_t iova, uint64_t length, uint64_t page_size, uint64_t *bitmap);
};

/* The layout of struct vfm_device_config this header describes: 2 added
 * dma_log and dma_log_ctx (a version 1 config ends before them); 3 says
 * its mig ops have save_buffer (an ops table built for an older header
 * ends before it); 4, save_begin and save_piece; 5, pieces_by_reference. */
#define VFM_DEVICE_CONFIG_VERSION 5u

/* The smallest piece a device with pieces_by_reference lends by reference. */
#define VFM_PIECE_BY_REFERENCE_MIN (64u * 1024u)

/* Default of max_state_size: 1 GiB, a bound on what one load session
 * buffers from an untrusted stream; a device may ask for up to 4 GiB. */
#define VFM_DEVICE_DEFAULT_MAX_STATE (1ull << 30)
#define VFM_DEVICE_MAX_STATE_LIMIT (4ull << 30)

struct vfm_device_config {
    uint32_t version;                      /* VFM_DEVICE_CONFIG_VERSION */
    const char *name;                      /* for messages; copied */
    uint32_t compat;                       /* state format id: load refuses others */
    const struct vfm_mig_ops *mig;         /* required */
    const struct vfm_p2p_ops *p2p;         /* NULL: no P2P */
    const struct vfm_precopy_ops *precopy; /* NULL: no PRE_COPY */
    void *priv;                            /* passed to every callback */
    uint64_t max_state_size;               /* 0: VFM_DEVICE_DEFAULT_MAX_STATE */
    /* version 2: */
    const struct vfm_dma_log_ops *dma_log; /* NULL: no DMA logging (-ENOTTY) */
    void *dma_log_ctx;                     /* passed to the dma_log ops */
    /* version 5: the memory of every piece of VFM_PIECE_BY_REFERENCE_MIN
     * bytes or more that save_piece gives stays the device's as long as
     * the device exists (never freed, never reused for anything else;
     * changed only by the device's own running): the runtime may then hand
     * such pieces to a data fd by reference (vmsplice) instead of copying
     * them, so a reader may see those pages until it has read them, even
     * after the session ended. A page that changed in flight fails the
     * state stream's checksum where it loads. Smaller pieces are always
     * copied. false: every piece is copied into the data fd as it is
     * sent. */
    bool pieces_by_reference;
};

/**
 * vfm_device_new - create a device runtime, in RUNNING.
 * Return: 0 and *@out, or -EINVAL (bad version, no name, a required callback
 * missing: the log names it) or -ENOMEM.
 */
VFM_EXPORT int vfm_device_new(const struct vfm_device_config *cfg, struct vfm_device **out);

/**
 * vfm_device_free - ends any session (closing the runtime's side of its fd) and frees. NULL
 * does nothing. Does not call any device callback.
 */
VFM_EXPORT void vfm_device_free(struct vfm_device *dev);

/**
 * vfm_device_name - the name the device was made with (for messages).
 */
VFM_EXPORT const char *vfm_device_name(const struct vfm_device *dev);
/**
 * vfm_device_flags - the VFM_MIGRATION_* flags its ops give it (STOP_COPY always; P2P with
 * p2p ops; PRE_COPY with precopy ops).
 */
VFM_EXPORT uint32_t vfm_device_flags(const struct vfm_device *dev);
/**
 * vfm_device_priv - the priv pointer of its config.
 */
VFM_EXPORT void *vfm_device_priv(const struct vfm_device *dev);

/**
 * vfm_device_set_state - move the device to @state (VFIO_DEVICE_FEATURE SET
 * of MIG_DEVICE_STATE).
 * @data_fd: NULL to use the data calls for a session this opens; otherwise
 *      set to the new session's fd when the request opens one (STOP ->
 *      STOP_COPY, STOP -> RESUMING) and to -1 when it does not or fails.
 * Return: 0; -EINVAL for a request the planner refuses (state unchanged;
 *      also from ERROR); an arc's error (see "Arc callbacks"); -EINVAL from
 *      RESUMING -> STOP for a stream that is truncated, extended, corrupted,
 *      of another device type, or that load() refused.
 */
VFM_EXPORT int vfm_device_set_state(struct vfm_device *dev, uint32_t state, int *data_fd);

/**
 * vfm_device_get_state - the state the device is in now (never fails; returns it).
 */
VFM_EXPORT uint32_t vfm_device_get_state(struct vfm_device *dev);

/**
 * vfm_device_reset - VFIO_DEVICE_RESET: end any session and return the
 * device to RUNNING through the reset callback, from any state, ERROR
 * included.
 * Return: 0 when done; 1 when deferred to the end of a transition in
 *      progress (see "Threading"); a negative errno when the reset callback
 *      failed (the device is then in ERROR).
 */
VFM_EXPORT int vfm_device_reset(struct vfm_device *dev);

/**
 * vfm_device_data_read - read the save session's next bytes.
 * Return: bytes read (> 0), 0 at the end of the whole state, -ENOMSG in
 *      PRE_COPY[_P2P] when nothing is pending now, -ENODEV when there is no
 *      save session, -EBUSY when the session was opened with a data fd, or
 *      save_precopy's error.
 */
VFM_EXPORT ssize_t vfm_device_data_read(struct vfm_device *dev, void *buf, size_t len);

/**
 * vfm_device_data_write - append bytes to the load session.
 * Return: @len; -ENODEV when there is no load session; -EBUSY when it was
 *      opened with a data fd; -EINVAL once the bytes are not a valid stream
 *      (a bad header or checksum, a record out of sequence, another device's
 *      compat id, anything after the END record); -EFBIG for a record longer
 *      than max_state_size. Either error spoils the session for good:
 *      RESUMING -> STOP then fails, and only a reset leaves RESUMING.
 */
VFM_EXPORT ssize_t vfm_device_data_write(struct vfm_device *dev, const void *buf, size_t len);

/*
 * Zero-copy data calls, for transports that move bytes between the session
 * and a socket themselves (the vfio-user server). The data lock is held
 * while the callback runs, so a reset or a SET that ends the session waits
 * for it: keep the callback to moving those bytes.
 *
 * vfm_device_data_read_with - @send is called once with a pointer to the
 *      save session's next n <= @len bytes (n == 0 at the end of the state;
 *      in pre-copy, -ENOMSG without calling @send when nothing is pending);
 *      it returns 0 once it has taken them (they are then consumed) or a
 *      negative errno (nothing is consumed). The bytes are contiguous, so n
 *      may also be short of @len where the stream's bytes change place (a
 *      device saving in pieces: at each part's record header).
 *      Return: n; -ENODEV / -EBUSY as vfm_device_data_read(); @send's error;
 *      save_piece's error.
 *
 * vfm_device_data_read_iov - the same, gathered: @sendv is called once with
 *      up to VFM_DATA_IOV_MAX pieces totalling the next n <= @len bytes,
 *      short of @len only at the end of the state (n == 0 at the end), in
 *      pre-copy when nothing more is pending, or when the pieces ran out
 *      (the next call goes on). Return: as vfm_device_data_read_with().
 *
 * vfm_device_data_write_with - the next @len bytes of the load session come
 *      from @recv, which is called as often as needed with where to put
 *      exactly n bytes and returns 0 once they are there (or a negative
 *      errno: the transport failed). Every one of the @len bytes is asked
 *      for even when the stream turns out invalid, so the transport keeps
 *      its framing.
 *      Return: @len; -ENODEV / -EBUSY (nothing asked for); the stream's
 *      error as vfm_device_data_write(); @recv's error.
 */
typedef int (*vfm_data_send_fn)(void *ctx, const void *data, size_t n);
typedef int (*vfm_data_recv_fn)(void *ctx, void *data, size_t n);
struct iovec;
typedef int (*vfm_data_sendv_fn)(void *ctx, const struct iovec *iov, int iovcnt, size_t n);
#define VFM_DATA_IOV_MAX 64
/**
 * vfm_device_data_read_with - the save session's next bytes, handed to @send
 * in place (see above). Return: as above.
 */
VFM_EXPORT ssize_t vfm_device_data_read_with(struct vfm_device *dev, size_t len,
                                             vfm_data_send_fn send, void *ctx);
/**
 * vfm_device_data_read_iov - the save session's next bytes, handed to
 * @sendv in place as a gather list (see above). Return: as above.
 */
VFM_EXPORT ssize_t vfm_device_data_read_iov(struct vfm_device *dev, size_t len,
                                            vfm_data_sendv_fn sendv, void *ctx);
/**
 * vfm_device_data_write_with - the load session's next @len bytes, asked
 * of @recv in place (see above). Return: as above.
 */
VFM_EXPORT ssize_t vfm_device_data_write_with(struct vfm_device *dev, size_t len,
                                              vfm_data_recv_fn recv, void *ctx);

/**
 * vfm_device_precopy_info - VFIO_MIG_GET_PRECOPY_INFO: the bytes of the
 * pre-copy session not read yet, split as the device counts them: initial
 * (the first pass over the state) and dirty (changed since given). Bytes
 * the runtime holds but the caller has not read count on the side they were
 * produced as. Return: 0; -EINVAL outside PRE_COPY / PRE_COPY_P2P; the
 * info callback's error.
 */
VFM_EXPORT int vfm_device_precopy_info(struct vfm_device *dev, uint64_t *initial, uint64_t *dirty);

/**
 * vfm_device_precopy_info_flags - vfm_device_precopy_info(), and *@flags:
 * VFM_PRECOPY_INFO_REINIT when the device announced new initial data
 * (vfm_device_precopy_reinit()) since the last precopy info call and the
 * client opted in (VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2 through
 * vfm_device_feature()); otherwise 0 (without the opt-in always 0: the
 * kernel's v1, whose flags carry nothing). Either call consumes a pending
 * REINIT: it is reported once. Return: as vfm_device_precopy_info().
 */
VFM_EXPORT int vfm_device_precopy_info_flags(struct vfm_device *dev, uint64_t *initial,
                                             uint64_t *dirty, uint32_t *flags);

/**
 * vfm_device_precopy_reinit - the device has new initial data, during
 * PRE_COPY / PRE_COPY_P2P (a reconfiguration whose state the destination
 * must have before the switchover): its precopy ops now count it as
 * initial (the info callback's @initial), and the next precopy info call
 * of an opted-in client reports VFM_PRECOPY_INFO_REINIT. Outside a
 * pre-copy session nothing is pending (the whole state is initial when one
 * opens). Called by the device from any thread, with no lock of its own
 * that a callback takes held (it takes the runtime's state lock); not from
 * inside a callback.
 */
VFM_EXPORT void vfm_device_precopy_reinit(struct vfm_device *dev);

/**
 * vfm_device_data_size - MIG_DATA_SIZE: estimate of the bytes a save session
 * started now would give, the stream's own bytes included.
 * Return: 0, -ENOTTY without a data_size callback, or its error.
 */
VFM_EXPORT int vfm_device_data_size(struct vfm_device *dev, uint64_t *bytes);

/**
 * vfm_device_feature - VFIO_DEVICE_FEATURE, with the kernel core's rules
 * (vfio_ioctl_device_feature, vfio_check_feature), for any transport to
 * call: the vfio-user server, an in-process VMM.
 * @flags: the feature id | VFM_FEATURE_GET / SET / PROBE.
 * @argsz: the request's own size field (header + data), as the caller got it.
 * @in, @in_len: the request's data (after the 8-byte header).
 * @out, @out_cap: where a GET's data goes; *@out_len its size (0 for SET
 *      and PROBE, whose reply is the request itself).
 * Rules: unknown flag bits, GET with SET without PROBE, an operation the
 * feature lacks, an argsz with no room for the data: -EINVAL; PROBE: 0
 * when the operations are supported. MIGRATION (GET): the flags;
 * MIG_DEVICE_STATE (GET, SET): the state after the request (the state
 * {u32 device_state; s32 data_fd}, data_fd always -1: data moves by the
 * data calls); MIG_DATA_SIZE (GET): vfm_device_data_size();
 * MIG_PRECOPY_INFOV2 (SET, no data; a device without PRE_COPY: -EINVAL):
 * the client opts in to precopy info flags (vfm_device_precopy_info_flags()),
 * until vfm_device_release(); DMA_LOGGING_START
 * (SET; in: {u64 page_size; u32 num_ranges; u32 reserved; u64 ranges}
 * then num_ranges {u64 iova; u64 length} inline, as vfio-user carries
 * them; out: the same with the page size the log keeps, the reply
 * vfio-user sends), DMA_LOGGING_STOP (SET,
 * no data), DMA_LOGGING_REPORT (GET; in: {u64 iova; u64 length; u64
 * page_size}; out: the bitmap, (length / page_size + 63) / 64 u64s), with
 * the kernel core's checks: no ranges, an empty one or one not aligned to
 * the page size (a power of two), overlapping ranges: -EINVAL; more than VFM_DMA_LOG_MAX_RANGES:
 * -E2BIG; a range that wraps: -EOVERFLOW; a report page size below 4096 or
 * not a power of two: -EINVAL; a bitmap larger than @out_cap: -E2BIG. A
 * device without dma_log ops, and unknown ids: -ENOTTY (the kernel's answer
 * for a feature a driver lacks).
 * Return: 0 or a negative errno; a refused SET's error is the request's
 *      (the state is then whatever GET says). *@out_len is 0 for a SET
 *      or PROBE, except DMA_LOGGING_START's.
 */
VFM_EXPORT int vfm_device_feature(struct vfm_device *dev, uint32_t flags, uint32_t argsz,
                                  const void *in, size_t in_len, void *out, size_t out_cap,
                                  size_t *out_len);
/**
 * vfm_device_feature_fd - vfm_device_feature(), and for a MIG_DEVICE_STATE
 * SET whose request opens a save session (-> STOP_COPY from STOP) or a
 * load session (-> RESUMING) the session's data fd in *@data_fd, as the
 * kernel's SET gives one (vfm_device_set_state()'s @data_fd; the caller
 * owns it); -1 for every other request, a refused one included. A
 * pre-copy session (and STOP_COPY after pre-copy, which keeps it) has no
 * fd: its bytes move by the data calls. NULL @data_fd: exactly
 * vfm_device_feature().
 */
VFM_EXPORT int vfm_device_feature_fd(struct vfm_device *dev, uint32_t flags, uint32_t argsz,
                                     const void *in, size_t in_len, void *out, size_t out_cap,
                                     size_t *out_len, int *data_fd);

/**
 * vfm_device_release - the client that drove the device went away (its
 * connection closed, its process died): end what only it could finish.
 * STOP_COPY goes to STOP (the save is abandoned); PRE_COPY and PRE_COPY_P2P
 * go to RUNNING and RUNNING_P2P (the session ends, the device runs on as it
 * did); RESUMING is reset (the only way to abort a load) and moved to STOP;
 * any other state is kept, so a running device keeps running and a stopped
 * one stays stopped for the next client. Its MIG_PRECOPY_INFOv2 opt-in ends
 * (as the kernel's at the last close of the device). Return: the state the
 * device is left in.
 */
VFM_EXPORT uint32_t vfm_device_release(struct vfm_device *dev);

/**
 * vfm_device_mark_broken - called by an arc callback that is about to fail and could not leave the
 * device in the arc's source state: the device goes to ERROR. Ignored
 * outside a callback.
 */
VFM_EXPORT void vfm_device_mark_broken(struct vfm_device *dev);

/* Bytes the runtime adds around a saved state (no pre-copy records): the
 * stream header, the FINAL record header and the END record. Each
 * pre-copy record adds VFM_STATE_RECORD_OVERHEAD. A state saved in pieces
 * adds 8 bytes (the size, in FINAL_BEGIN) and VFM_STATE_RECORD_OVERHEAD
 * for each FINAL_PART: one per VFM_SAVE_PART_MAX bytes, or per piece when
 * the device's pieces are smaller. */
#define VFM_STATE_STREAM_OVERHEAD 88u
#define VFM_STATE_RECORD_OVERHEAD 32u
#define VFM_SAVE_PART_MAX (1u << 20)

#ifdef __cplusplus
}
#endif
#endif /* VFIOMIG_DEVICE_H */
