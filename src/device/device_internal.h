/* SPDX-License-Identifier: MIT */
/* Device runtime internals shared by device.c and session.c. */
#ifndef VFIOMIG_DEVICE_INTERNAL_H
#define VFIOMIG_DEVICE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <vfiomig/device.h>

#include "stream.h"

enum vfm_sess_kind {
    VFM_SESS_NONE = 0,
    VFM_SESS_SAVE,
    VFM_SESS_LOAD,
};

/* Save in pieces: where the state's bytes come from as they are read. */
typedef int (*vfm_piece_fn)(void *ctx, uint64_t offset, size_t max, const void **data, size_t *n);

/* Pieces one part gathers at most: a part is VFM_SAVE_PART_MAX bytes
 * (the state's last one: what is left) unless the device's pieces are so
 * small that this many do not fill it. */
#define VFM_PART_PIECES 64

/* Save in pieces: the record being handed out (a FINAL_PART: its header,
 * then its payload, the device's pieces; or the END record). */
struct vfm_part {
    uint64_t off; /* the state offset of its payload */
    size_t len;   /* its payload's length */
    size_t done;  /* bytes of header + payload handed out */
    bool end;     /* the END record: nothing follows */
    int npieces;
    struct {
        const uint8_t *data;
        size_t len;
    } piece[VFM_PART_PIECES];
    uint8_t hdr[VFM_STREAM_REC_SIZE];
};

/* Where a save session's reader is: restored when a gathered read could
 * not be sent (vfm_session_mark / vfm_session_restore). */
struct vfm_sess_mark {
    size_t pos;
    uint32_t seq;
    struct vfm_part part;
    int err;
};

/* One data session. Fields are protected by the device's data lock, except
 * that while a pump thread runs it alone owns fd. */
struct vfm_session {
    enum vfm_sess_kind kind;
    struct vfm_buf buf;        /* save: the whole stream */
    size_t pos;                /* save: next byte to hand out */
    struct vfm_stream_dec dec; /* load: the stream decoder */
    bool precopy;              /* save, in PRE_COPY[_P2P]: records made on demand */
    bool queue_initial;        /* save: the queued record was initial data */
    bool from_precopy;         /* save: opened by RUNNING[_P2P] -> PRE_COPY[_P2P] */
    uint32_t seq;              /* save: the next record's sequence number */
    bool pieces;               /* save: the state comes from piece() as it is read */
    bool by_reference;         /* and large pieces go to the data fd by reference */
    uint64_t total;            /* save in pieces: the state's size */
    struct vfm_part part;      /* save in pieces: the record being handed out */
    vfm_piece_fn piece;        /* save in pieces: the device's save_piece */
    void *piece_ctx;
    struct vfm_xxh3_stream *xs; /* save in pieces: a part's checksum */
    int err;                    /* save: sticky error of piece(); nothing more */
    bool has_fd;                /* opened with a data fd: data calls get -EBUSY */
    int fd;                     /* runtime end of the socket pair, or -1 */
    int stop_fd;                /* eventfd that stops the pump */
    pthread_t pump;
    bool pump_started;
    pthread_mutex_t *lock; /* the device's data lock (for the load pump) */
};

/* Save: the bytes before and after the state in a stream with no pre-copy
 * records (stream header + FINAL record header; END record). */
#define VFM_SAVE_PREFIX (VFM_STREAM_HDR_SIZE + VFM_STREAM_REC_SIZE)
#define VFM_SAVE_SUFFIX VFM_STREAM_REC_SIZE

/* Save: turns a buffer holding VFM_SAVE_PREFIX reserved bytes and then the
 * state into a whole stream. Return: 0 or -ENOMEM/-EFBIG. */
int vfm_save_seal(struct vfm_buf *buf, uint32_t compat);

/*
 * Save: appends a record of @type whose payload @fill writes into the
 * session's buffer (at most @max_payload bytes), then, with @end, the END
 * record. Bytes already read are dropped first. With @skip_empty, a record
 * @fill left empty is not appended. All or nothing: on failure the stream
 * is as before. *@payload_len gets the payload's size. Data lock held.
 * Return: 0, @fill's error, -ENOMEM or -EFBIG.
 */
int vfm_session_append(struct vfm_session *s, uint16_t type, uint64_t max_payload,
                       int (*fill)(void *ctx, struct vfm_buf *out), void *ctx, bool end,
                       bool skip_empty, size_t *payload_len);

/*
 * Save in pieces: after the bytes in its buffer (which end with the
 * FINAL_BEGIN record for @total bytes, numbered @seq - 1), the session
 * makes a FINAL_PART record from each @piece answer as it is read, then the
 * END record. Data lock held, on a session with no pump running (a session
 * with an fd gets this through vfm_session_open, before its pump starts).
 * Return: 0 or -ENOMEM (the session is as before).
 */
int vfm_session_set_pieces(struct vfm_session *s, uint64_t total, uint32_t seq, vfm_piece_fn piece,
                           void *ctx);

/*
 * Save: the next bytes of the stream that are contiguous in memory: *@p and
 * their count (0: nothing now — the end, pre-copy's nothing pending, or an
 * error in s->err). Makes the next part when the last is all handed out.
 * vfm_session_consume() hands out @n of them. Data lock held (or the pump,
 * which owns the session while it runs, with it held for peek).
 */
size_t vfm_session_peek(struct vfm_session *s, const uint8_t **p);
void vfm_session_consume(struct vfm_session *s, size_t n);
/* True when @p (from peek) points into the part header, which the next
 * part overwrites: a gathered read must copy it. */
bool vfm_session_peek_is_hdr(const struct vfm_session *s, const uint8_t *p);
void vfm_session_mark(const struct vfm_session *s, struct vfm_sess_mark *m);
void vfm_session_restore(struct vfm_session *s, const struct vfm_sess_mark *m);

/* Starts a session on @s: a save session takes @buf's stream; a load
 * session starts an empty decoder. With @want_fd, creates the socket pair
 * and the pump thread and returns the caller's end in *@fd_out. On failure
 * nothing is left open. */
struct vfm_pieces {
    uint64_t total;
    uint32_t seq; /* the first part's sequence number */
    vfm_piece_fn piece;
    void *ctx;
    bool by_reference; /* the pieces' memory may go to the data fd by reference */
};
int vfm_session_open(struct vfm_session *s, enum vfm_sess_kind kind, struct vfm_buf *buf,
                     uint32_t compat, uint64_t max_payload, bool want_fd, int *fd_out,
                     pthread_mutex_t *lock, const struct vfm_pieces *pieces);

/* Stops the pump (taking, for load, every byte already written to the fd)
 * and keeps the session. Called with the data lock NOT held. */
void vfm_session_quiesce(struct vfm_session *s);

/* Load: restarts the pump after a refused RESUMING -> STOP, so the fd keeps
 * taking bytes. */
void vfm_session_resume(struct vfm_session *s);

/* Ends the session and frees everything; the session becomes NONE. Call
 * vfm_session_quiesce() first, without the data lock. */
void vfm_session_close(struct vfm_session *s);

/* Load: the whole received stream is valid; points at the state. Data lock
 * held. Return: 0 or -EINVAL (truncated, or invalid). */
int vfm_session_check_load(struct vfm_session *s, const uint8_t **payload, size_t *len);

/* The load data calls' body; data lock held. */
ssize_t vfm_session_write(struct vfm_session *s, const void *buf, size_t len);

/* The device's DMA logging ops and their ctx (NULL: none). */
const struct vfm_dma_log_ops *vfm_device_dma_log(struct vfm_device *dev, void **ctx);
/* MIG_PRECOPY_INFOv2: the client opted in (@on), or went away. */
void vfm_device_precopy_v2(struct vfm_device *dev, bool on);

#endif
