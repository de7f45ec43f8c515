/* SPDX-License-Identifier: MIT */
/*
 * Data sessions of the device runtime: the saved stream, the load decoder,
 * and the socket pair + pump thread that expose a session as a data fd.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <xxhash.h>

#include "../common/hash.h"
#include "../common/internal.h"
#include "device_internal.h"

/* Bytes moved per pump system call: a 256 MiB state is a few hundred
 * calls (the socket's buffer is VFM_SOCK_BULK_BUF). */
#define PUMP_CHUNK (1024u * 1024u)

int vfm_buf_init(struct vfm_buf *buf, size_t max)
{
    memset(buf, 0, sizeof(*buf));
    buf->max = max;
    return 0;
}

/* Buffers from this size on are their own mapping, with transparent huge
 * pages asked for: a 256 MiB state then costs 128 page faults instead of
 * 65536, which is most of the cost of filling fresh memory. */
#define BUF_MAP_THRESHOLD (4u << 20)
#define HUGE_PAGE (2u << 20)

void vfm_buf_release(struct vfm_buf *buf)
{
    if (buf->external)
        ; /* not ours */
    else if (buf->mapped)
        munmap(buf->data, buf->cap);
    else
        free(buf->data);
    memset(buf, 0, sizeof(*buf));
}

/* Makes room for @len more bytes. */
static int buf_grow(struct vfm_buf *buf, size_t len)
{
    size_t need, cap;
    uint8_t *p;

    if (len > buf->max || buf->len > buf->max - len)
        return -EFBIG;
    need = buf->len + len;
    if (need <= buf->cap)
        return 0;
    if (buf->external)
        return -EFBIG; /* someone else's memory cannot grow */
    cap = buf->cap ? buf->cap : 4096;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > buf->max)
        cap = buf->max;
    if (cap < BUF_MAP_THRESHOLD) {
        p = realloc(buf->data, cap);
        if (!p)
            return -ENOMEM;
    } else {
        cap = (cap + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
        if (buf->mapped) {
            p = mremap(buf->data, buf->cap, cap, MREMAP_MAYMOVE);
        } else {
            p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
            if (p != MAP_FAILED) {
                if (buf->len)
                    memcpy(p, buf->data, buf->len);
                free(buf->data);
            }
        }
        if (p == MAP_FAILED)
            return -ENOMEM;
        madvise(p, cap, MADV_HUGEPAGE); /* a hint: THP may be off */
        /* a save buffer is faulted in one go, before the device fills it;
         * a load buffer (lazy) as the bytes arrive, so that the kernel's
         * zeroing of each page overlaps the sender filling the socket
         * (measured: MIG_DATA_WRITE 0.45x -> 0.70x of a bare loop) */
        if (!buf->lazy)
            madvise((uint8_t *)p + buf->cap, cap - buf->cap, MADV_POPULATE_WRITE);
        buf->mapped = true;
    }
    buf->data = p;
    buf->cap = cap;
    return 0;
}

void *vfm_buf_reserve(struct vfm_buf *buf, size_t len)
{
    void *p;

    if (!buf || buf_grow(buf, len))
        return NULL;
    p = buf->data + buf->len;
    buf->len += len;
    return p;
}

int vfm_buf_append(struct vfm_buf *buf, const void *data, size_t len)
{
    int ret;

    if (!buf || (!data && len))
        return -EINVAL;
    if (len == 0)
        return 0;
    ret = buf_grow(buf, len);
    if (ret)
        return ret;
    memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    return 0;
}

int vfm_save_seal(struct vfm_buf *buf, uint32_t compat)
{
    uint64_t state_len = buf->len - VFM_SAVE_PREFIX;
    uint8_t end[VFM_STREAM_REC_SIZE];

    vfm_stream_put_record(end, VFM_REC_END, 1, NULL, 0);
    /* the END record may exceed max by its own size: allow it */
    buf->max += VFM_SAVE_SUFFIX;
    if (vfm_buf_append(buf, end, sizeof(end)))
        return -ENOMEM;
    vfm_stream_put_header(buf->data, compat, VFM_STREAM_VERSION);
    vfm_stream_put_record(buf->data + VFM_STREAM_HDR_SIZE, VFM_REC_FINAL, 0,
                          buf->data + VFM_SAVE_PREFIX, state_len);
    return 0;
}

int vfm_session_append(struct vfm_session *s, uint16_t type, uint64_t max_payload,
                       int (*fill)(void *ctx, struct vfm_buf *out), void *ctx, bool end,
                       bool skip_empty, size_t *payload_len)
{
    struct vfm_buf *b = &s->buf;
    size_t start, len;
    int ret;

    *payload_len = 0;
    if (s->pos == b->len) {
        b->len = 0; /* all read: reuse the buffer from its start */
        s->pos = 0;
    }
    start = b->len;
    if (max_payload > SIZE_MAX - start - 2 * VFM_STREAM_REC_SIZE)
        return -EFBIG;
    b->max = start + VFM_STREAM_REC_SIZE + (size_t)max_payload;
    if (!vfm_buf_reserve(b, VFM_STREAM_REC_SIZE)) {
        ret = -ENOMEM;
        goto undo;
    }
    ret = fill(ctx, b);
    if (ret > 0)
        ret = 0;
    if (ret)
        goto undo;
    len = b->len - start - VFM_STREAM_REC_SIZE;
    if (skip_empty && len == 0)
        goto undo; /* ret == 0: nothing to add */
    if (end) {
        uint8_t rec[VFM_STREAM_REC_SIZE];
        b->max = b->len + VFM_STREAM_REC_SIZE;
        vfm_stream_put_record(rec, VFM_REC_END, s->seq + 1, NULL, 0);
        ret = vfm_buf_append(b, rec, sizeof(rec));
        if (ret)
            goto undo;
    }
    vfm_stream_put_record(b->data + start, type, s->seq, b->data + start + VFM_STREAM_REC_SIZE,
                          len);
    s->seq += end ? 2 : 1;
    b->max = b->len;
    *payload_len = len;
    return 0;

undo:
    b->len = start;
    b->max = b->len;
    return ret;
}

int vfm_session_set_pieces(struct vfm_session *s, uint64_t total, uint32_t seq, vfm_piece_fn piece,
                           void *ctx)
{
    struct vfm_xxh3_stream *xs = vfm_xxh3_stream_new();

    if (!xs)
        return -ENOMEM;
    vfm_xxh3_stream_free(s->xs);
    s->xs = xs;
    s->pieces = true;
    s->by_reference = false; /* vfm_session_open() says when */
    s->total = total;
    s->seq = seq;
    s->piece = piece;
    s->piece_ctx = ctx;
    /* no part yet: the first one starts at offset 0 */
    memset(&s->part, 0, sizeof(s->part));
    s->part.done = VFM_STREAM_REC_SIZE;
    return 0;
}

/* The part after the current one (all handed out): the state's next
 * pieces as a FINAL_PART record — VFM_SAVE_PART_MAX bytes, or what is
 * left, or what VFM_PART_PIECES pieces hold — or the END record.
 * Return: 0 or piece()'s error. */
static int next_part(struct vfm_session *s)
{
    struct vfm_part *pt = &s->part;
    uint64_t off = pt->off + pt->len, left = s->total - off;
    size_t max = left < VFM_SAVE_PART_MAX ? (size_t)left : VFM_SAVE_PART_MAX;
    int ret;

    if (left == 0) {
        pt->off = off;
        pt->len = 0;
        pt->npieces = 0;
        pt->done = 0;
        pt->end = true;
        vfm_stream_put_record(pt->hdr, VFM_REC_END, s->seq++, NULL, 0);
        return 0;
    }
    pt->off = off;
    pt->len = 0;
    pt->npieces = 0;
    vfm_xxh3_stream_reset(s->xs);
    while (pt->len < max && pt->npieces < VFM_PART_PIECES) {
        const void *data = NULL;
        size_t n = 0;
        /* piece() checks its answer: 1 to max - len bytes */
        ret = s->piece(s->piece_ctx, off + pt->len, max - pt->len, &data, &n);
        if (ret)
            return ret;
        pt->piece[pt->npieces].data = data;
        pt->piece[pt->npieces++].len = n;
        pt->len += n;
        /* the checksum now, while the bytes are about to be sent anyway:
         * a part is small enough to stay in the cache for its send */
        vfm_xxh3_stream_update(s->xs, data, n);
    }
    pt->done = 0;
    vfm_stream_put_record_sum(pt->hdr, VFM_REC_FINAL_PART, s->seq++, pt->len,
                              vfm_xxh3_stream_digest(s->xs));
    return 0;
}

size_t vfm_session_peek(struct vfm_session *s, const uint8_t **p)
{
    struct vfm_part *pt = &s->part;
    size_t in;
    int ret;

    if (s->pos < s->buf.len) {
        *p = s->buf.data + s->pos;
        return s->buf.len - s->pos;
    }
    if (!s->pieces || s->err)
        return 0;
    if (pt->done == VFM_STREAM_REC_SIZE + pt->len) {
        if (pt->end)
            return 0; /* the END was handed out: the stream is whole */
        ret = next_part(s);
        if (ret) {
            s->err = ret;
            return 0;
        }
    }
    if (pt->done < VFM_STREAM_REC_SIZE) {
        *p = pt->hdr + pt->done;
        return VFM_STREAM_REC_SIZE - pt->done;
    }
    in = pt->done - VFM_STREAM_REC_SIZE;
    for (int i = 0;; i++) {
        if (in < pt->piece[i].len) {
            *p = pt->piece[i].data + in;
            return pt->piece[i].len - in;
        }
        in -= pt->piece[i].len;
    }
}

void vfm_session_consume(struct vfm_session *s, size_t n)
{
    if (s->pos < s->buf.len)
        s->pos += n;
    else
        s->part.done += n;
}

bool vfm_session_peek_is_hdr(const struct vfm_session *s, const uint8_t *p)
{
    return p >= s->part.hdr && p < s->part.hdr + VFM_STREAM_REC_SIZE;
}

void vfm_session_mark(const struct vfm_session *s, struct vfm_sess_mark *m)
{
    m->pos = s->pos;
    m->seq = s->seq;
    m->part = s->part;
    m->err = s->err;
}

void vfm_session_restore(struct vfm_session *s, const struct vfm_sess_mark *m)
{
    s->pos = m->pos;
    s->seq = m->seq;
    s->part = m->part;
    s->err = m->err;
}

ssize_t vfm_session_write(struct vfm_session *s, const void *data, size_t len)
{
    int ret = vfm_stream_dec_feed(&s->dec, data, len);

    return ret ? ret : (ssize_t)len;
}

int vfm_session_check_load(struct vfm_session *s, const uint8_t **payload, size_t *len)
{
    return vfm_stream_dec_finish(&s->dec, payload, len);
}

/* Waits until @fd is ready for @events or the stop eventfd fires.
 * Return: 1 ready, 0 stop requested, negative errno. */
static int pump_wait(struct vfm_session *s, short events)
{
    struct pollfd p[2] = {{.fd = s->fd, .events = events}, {.fd = s->stop_fd, .events = POLLIN}};

    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (p[1].revents)
            return 0;
        return 1;
    }
}

/* A large piece of device memory moved into the socket without a copy:
 * its pages put into @pipe by reference (vmsplice: the device keeps them
 * unchanged while the session lasts, the save_piece contract; a state
 * stream part's checksum was computed over them before, so a page that
 * changed in flight is refused where it loads) and spliced on. Return:
 * the bytes moved (0: none could be now), or -1 (use send()). */
static ssize_t pump_zero_copy(struct vfm_session *s, int pipe[2], const uint8_t *p, size_t n)
{
    struct iovec iov = {(void *)p, n};
    ssize_t in = vmsplice(pipe[1], &iov, 1, SPLICE_F_NONBLOCK), left;

    if (in <= 0)
        return -1;
    for (left = in; left > 0;) {
        ssize_t out =
            splice(pipe[0], NULL, s->fd, NULL, (size_t)left, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (out > 0) {
            left -= out;
            continue;
        }
        if (out < 0 && errno == EINTR)
            continue;
        if (out < 0 && errno != EAGAIN)
            return -2; /* the reader closed its end */
        if (pump_wait(s, POLLOUT) <= 0)
            return -2;
    }
    return in;
}

static void *save_pump(void *arg)
{
    struct vfm_session *s = arg;
    char sentinel;
    int zc[2] = {-1, -1};
    bool closed = false; /* the reader closed its end */

    /* the device's memory by reference for large pieces (a pipe of a
     * chunk), when the device allows it (pieces_by_reference) */
    if (s->by_reference && pipe2(zc, O_CLOEXEC | O_NONBLOCK) == 0)
        (void)fcntl(zc[1], F_SETPIPE_SZ, (int)PUMP_CHUNK);
    else
        zc[0] = zc[1] = -1;
    for (;;) {
        const uint8_t *p;
        size_t n;
        ssize_t w;

        /* the lock for the device's save_piece (the pump alone moves the
         * session on, so p stays valid after it) */
        pthread_mutex_lock(s->lock);
        n = vfm_session_peek(s, &p);
        pthread_mutex_unlock(s->lock);
        if (n == 0)
            break;
        if (pump_wait(s, POLLOUT) <= 0) {
            closed = true;
            break;
        }
        if (n > PUMP_CHUNK)
            n = PUMP_CHUNK;
        w = n >= VFM_PIECE_BY_REFERENCE_MIN && zc[0] >= 0 && !vfm_session_peek_is_hdr(s, p)
                ? pump_zero_copy(s, zc, p, n)
                : -1;
        if (w == -2) {
            closed = true;
            break;
        }
        if (w < 0)
            w = send(s->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            closed = true; /* the reader closed its end */
            break;
        }
        pthread_mutex_lock(s->lock);
        vfm_session_consume(s, (size_t)w);
        pthread_mutex_unlock(s->lock);
    }
    if (zc[0] >= 0) {
        close(zc[0]);
        close(zc[1]);
    }
    if (closed)
        return NULL;
    if (s->err) {
        /* the device could not give the rest: our end closes with the
         * sentinel unread, so the reader gets ECONNRESET after the bytes
         * queued, never a clean end of file */
        close(s->fd);
        s->fd = -1;
        return NULL;
    }
    /* Everything is queued: take back the sentinel byte so closing our end
     * later is a clean end of file, and send the end of file now. */
    if (recv(s->fd, &sentinel, 1, MSG_DONTWAIT) != 1) {
        /* unreachable: the sentinel was queued before the fd was handed out */
    }
    shutdown(s->fd, SHUT_WR);
    return NULL;
}

/* Reads what is available without blocking, straight into the decoder's
 * space (no copy between the socket and where the state goes). Return: 1
 * more may come, 0 end of file or error (the pump stops). The pump owns
 * the decoder while it runs; the data lock is for the device's hooks
 * (load_buffer, load_precopy), which space and commit may call. */
static int load_drain(struct vfm_session *s)
{
    uint8_t scratch[4096];

    for (;;) {
        uint8_t *p = NULL;
        size_t n;
        ssize_t r;

        pthread_mutex_lock(s->lock);
        n = vfm_stream_dec_space(&s->dec, &p);
        pthread_mutex_unlock(s->lock);
        if (n == 0) {
            /* complete or invalid: what still comes spoils the stream
             * (anything after the END is an error), as the data calls do */
            p = scratch;
            n = sizeof(scratch);
        }
        r = recv(s->fd, p, n, MSG_DONTWAIT);
        if (r > 0) {
            pthread_mutex_lock(s->lock);
            if (p == scratch)
                vfm_session_write(s, scratch, (size_t)r); /* errors stick in the decoder */
            else
                vfm_stream_dec_commit(&s->dec, (size_t)r);
            pthread_mutex_unlock(s->lock);
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return 1;
        return 0; /* writer closed (0) or failed */
    }
}

static void *load_pump(void *arg)
{
    struct vfm_session *s = arg;

    for (;;) {
        int w = pump_wait(s, POLLIN);
        if (w < 0)
            return NULL;
        if (w == 0) {
            /* Stop requested: every byte the writer's completed write()s
             * put in the socket is queued by now; take them all. */
            load_drain(s);
            return NULL;
        }
        if (!load_drain(s))
            return NULL;
    }
}

int vfm_session_open(struct vfm_session *s, enum vfm_sess_kind kind, struct vfm_buf *buf,
                     uint32_t compat, uint64_t max_payload, bool want_fd, int *fd_out,
                     pthread_mutex_t *lock, const struct vfm_pieces *pieces)
{
    int sv[2] = {-1, -1};
    int ret;

    memset(s, 0, sizeof(*s));
    s->fd = -1;
    s->stop_fd = -1;
    s->lock = lock;
    s->kind = kind;
    if (kind == VFM_SESS_SAVE) {
        s->buf = *buf;
        memset(buf, 0, sizeof(*buf));
        if (pieces) {
            ret = vfm_session_set_pieces(s, pieces->total, pieces->seq, pieces->piece, pieces->ctx);
            s->by_reference = !ret && pieces->by_reference;
            if (ret) {
                *buf = s->buf; /* still the caller's */
                memset(&s->buf, 0, sizeof(s->buf));
                s->kind = VFM_SESS_NONE;
                return ret;
            }
        }
    } else {
        vfm_stream_dec_init(&s->dec, compat, max_payload, false);
    }
    if (!want_fd)
        return 0;

    s->has_fd = true;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        ret = -errno;
        goto err_release;
    }
    vfm_sock_bulk(sv[0]); /* a state in few wake-ups of either side */
    vfm_sock_bulk(sv[1]);
    s->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (s->stop_fd < 0) {
        ret = -errno;
        goto err_close_pair;
    }
    /* A save session's sentinel: one byte queued towards our end. If we
     * close our end with it still unread (the session ended before the whole
     * state was sent), the reader's next read after the queued data fails
     * with ECONNRESET rather than reporting a clean end of file. */
    if (kind == VFM_SESS_SAVE && send(sv[1], "", 1, MSG_NOSIGNAL) != 1) {
        ret = -errno;
        goto err_close_stop;
    }
    s->fd = sv[0];
    ret = -pthread_create(&s->pump, NULL, kind == VFM_SESS_SAVE ? save_pump : load_pump, s);
    if (ret)
        goto err_close_stop;
    s->pump_started = true;
    *fd_out = sv[1];
    return 0;

err_close_stop:
    close(s->stop_fd);
    s->stop_fd = -1;
    s->fd = -1;
err_close_pair:
    close(sv[0]);
    close(sv[1]);
err_release:
    vfm_buf_release(&s->buf);
    vfm_stream_dec_release(&s->dec);
    vfm_xxh3_stream_free(s->xs);
    s->xs = NULL;
    s->kind = VFM_SESS_NONE;
    return ret;
}

void vfm_session_quiesce(struct vfm_session *s)
{
    uint64_t one = 1;

    if (!s->pump_started)
        return;
    if (write(s->stop_fd, &one, sizeof(one)) != sizeof(one)) {
        /* an eventfd write of 1 cannot fail short of a counter overflow */
    }
    pthread_join(s->pump, NULL);
    s->pump_started = false;
    if (read(s->stop_fd, &one, sizeof(one)) != sizeof(one)) {
        /* the counter was just set: this read cannot come back empty */
    }
}

void vfm_session_resume(struct vfm_session *s)
{
    if (s->kind != VFM_SESS_LOAD || !s->has_fd || s->pump_started)
        return;
    if (pthread_create(&s->pump, NULL, load_pump, s) == 0)
        s->pump_started = true;
}

void vfm_session_close(struct vfm_session *s)
{
    if (s->kind == VFM_SESS_NONE)
        return;
    if (s->fd >= 0)
        close(s->fd);
    if (s->stop_fd >= 0)
        close(s->stop_fd);
    vfm_buf_release(&s->buf);
    vfm_stream_dec_release(&s->dec);
    vfm_xxh3_stream_free(s->xs);
    memset(s, 0, sizeof(*s));
    s->fd = -1;
    s->stop_fd = -1;
}
