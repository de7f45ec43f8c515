/* SPDX-License-Identifier: MIT */
/* Error names and the log sink (include/vfiomig/common.h). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <syslog.h>

#include "internal.h"

const char *vfm_version(void)
{
    return VFM_VERSION_STRING;
}

/* The errno values this library returns or passes through; the X-macro gives
 * both the name table and the descriptions. */
#define VFM_ERRNO_MAP(X)                                                                           \
    X(EPERM, "operation not permitted")                                                            \
    X(ENOENT, "no such file or directory")                                                         \
    X(EINTR, "interrupted")                                                                        \
    X(EIO, "input/output error")                                                                   \
    X(E2BIG, "argument list too long")                                                             \
    X(EBADF, "bad file descriptor")                                                                \
    X(EAGAIN, "resource temporarily unavailable")                                                  \
    X(ENOMEM, "out of memory")                                                                     \
    X(EACCES, "permission denied")                                                                 \
    X(EFAULT, "bad address")                                                                       \
    X(EBUSY, "device or resource busy")                                                            \
    X(EEXIST, "already exists")                                                                    \
    X(ENODEV, "no such device (session ended)")                                                    \
    X(EINVAL, "invalid argument")                                                                  \
    X(ENOSPC, "no space left")                                                                     \
    X(EPIPE, "broken pipe")                                                                        \
    X(ERANGE, "out of range")                                                                      \
    X(ENOTTY, "not supported by this device")                                                      \
    X(EFBIG, "too large")                                                                          \
    X(ENOSYS, "not implemented")                                                                   \
    X(ENOMSG, "no data for now")                                                                   \
    X(EPROTO, "protocol error")                                                                    \
    X(EBADMSG, "bad message")                                                                      \
    X(EOVERFLOW, "value too large")                                                                \
    X(EMSGSIZE, "message too long")                                                                \
    X(EOPNOTSUPP, "operation not supported")                                                       \
    X(ECONNRESET, "connection reset by peer")                                                      \
    X(ECONNREFUSED, "connection refused")                                                          \
    X(ENOTCONN, "not connected")                                                                   \
    X(ETIMEDOUT, "timed out")                                                                      \
    X(ECANCELED, "cancelled")

const char *vfm_err_name(int err)
{
    if (err < 0)
        err = -err;
    switch (err) {
    case 0:
        return "OK";
#define X(e, s)                                                                                    \
    case e:                                                                                        \
        return #e;
        VFM_ERRNO_MAP(X)
#undef X
    default:
        return "E?";
    }
}

const char *vfm_strerror(int err)
{
    if (err < 0)
        err = -err;
    switch (err) {
    case 0:
        return "success";
#define X(e, s)                                                                                    \
    case e:                                                                                        \
        return s;
        VFM_ERRNO_MAP(X)
#undef X
    default:
        return "unknown error";
    }
}

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static vfm_log_fn log_fn;
static void *log_ctx;
/* read without the lock: a filtered message (every arc's DEBUG line)
 * costs a load, not a mutex */
static _Atomic int log_max = LOG_INFO;

void vfm_log_set(vfm_log_fn fn, void *ctx, int max_level)
{
    pthread_mutex_lock(&log_lock);
    log_fn = fn;
    log_ctx = ctx;
    log_max = max_level;
    pthread_mutex_unlock(&log_lock);
}

void vfm_log_stderr(void *ctx, int level, const char *msg)
{
    (void)ctx;
    (void)level;
    fprintf(stderr, "vfiomig: %s\n", msg);
}

static void log_v(int level, const char *fmt, va_list ap)
{
    char msg[512]; /* one line of log; longer messages are cut, not lost */
    vfm_log_fn fn;
    void *ctx;

    if (level > atomic_load_explicit(&log_max, memory_order_relaxed))
        return;
    pthread_mutex_lock(&log_lock);
    fn = log_fn;
    ctx = log_ctx;
    if (!fn || level > log_max) {
        pthread_mutex_unlock(&log_lock);
        return;
    }
    pthread_mutex_unlock(&log_lock);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    fn(ctx, level, msg);
}

void vfm_log(int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_v(level, fmt, ap);
    va_end(ap);
}

void vfm_log_to(const struct vfm_log_sink *sink, int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (sink && sink->fn) {
        char msg[512];
        if (level <= sink->max_level) {
            vsnprintf(msg, sizeof(msg), fmt, ap);
            sink->fn(sink->ctx, level, msg);
        }
    } else {
        log_v(level, fmt, ap);
    }
    va_end(ap);
}

void vfm_sock_bulk(int fd)
{
    int v = VFM_SOCK_BULK_BUF;

    /* best effort: a smaller buffer is only slower */
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
}
