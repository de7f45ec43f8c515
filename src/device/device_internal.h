/* SPDX-License-Identifier: MIT */
/* Device runtime internals shared by device.c and session.c. */
#ifndef VFIOMIG_DEVICE_INTERNAL_H
#define VFIOMIG_DEVICE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <vfiomig/device.h>

struct vfm_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max; /* ceiling on len, frame included */
};

enum vfm_sess_kind {
    VFM_SESS_NONE = 0,
    VFM_SESS_SAVE,
    VFM_SESS_LOAD,
};

/* One data session. Fields are protected by the device's data lock, except
 * that while a pump thread runs it alone owns fd and, for save, pos. */
struct vfm_session {
    enum vfm_sess_kind kind;
    struct vfm_buf buf;   /* save: frame + state; load: bytes received */
    size_t pos;           /* save: next byte to hand out */
    uint32_t compat;      /* load: the compat id the frame must carry */
    uint64_t declared;    /* load: payload length from a valid header, or 0 */
    bool header_ok;       /* load: a whole valid header was received */
    int spoiled;          /* load: sticky error (negative errno) or 0 */
    bool has_fd;          /* opened with a data fd: data calls get -EBUSY */
    int fd;               /* runtime end of the socket pair, or -1 */
    int stop_fd;          /* eventfd that stops the pump */
    pthread_t pump;
    bool pump_started;
    pthread_mutex_t *lock; /* the device's data lock (for the load pump) */
};

/* The frame (little endian):
 *   0 u32 magic "VFMS"   4 u16 version (1)   6 u16 frame size (40)
 *   8 u32 compat id      12 u32 reserved (0)
 *  16 u64 payload length 24 u64 XXH3-64 of the payload
 *  32 u64 XXH3-64 of bytes 0..31                                       */
#define VFM_FRAME_MAGIC 0x534d4656u
#define VFM_FRAME_VERSION 1u

int vfm_buf_init(struct vfm_buf *buf, size_t max);
void vfm_buf_release(struct vfm_buf *buf);

/* Save: frames a state that save() wrote after VFM_STATE_FRAME_SIZE
 * reserved bytes. */
void vfm_frame_seal(struct vfm_buf *buf, uint32_t compat);

/* Starts a session on @s with @buf's bytes (save) or empty (load); with
 * @want_fd, creates the socket pair and the pump thread and returns the
 * caller's end in *@fd_out. On failure nothing is left open. */
int vfm_session_open(struct vfm_session *s, enum vfm_sess_kind kind, struct vfm_buf *buf,
                     uint32_t compat, uint64_t max_payload, bool want_fd, int *fd_out,
                     pthread_mutex_t *lock);

/* Stops the pump (taking, for load, every byte already written to the fd)
 * and keeps the session. Called with the data lock NOT held. */
void vfm_session_quiesce(struct vfm_session *s);

/* Load: restarts the pump after a refused RESUMING -> STOP, so the fd keeps
 * taking bytes. */
void vfm_session_resume(struct vfm_session *s);

/* Ends the session and frees everything; the session becomes NONE. Call
 * vfm_session_quiesce() first, without the data lock. */
void vfm_session_close(struct vfm_session *s);

/* Load: checks the whole received stream; on success points at the
 * payload. Data lock held. */
int vfm_session_check_load(struct vfm_session *s, const uint8_t **payload, size_t *len);

/* The data calls' bodies; data lock held. */
ssize_t vfm_session_read(struct vfm_session *s, void *buf, size_t len);
ssize_t vfm_session_write(struct vfm_session *s, const void *buf, size_t len);

#endif
