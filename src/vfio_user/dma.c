/* SPDX-License-Identifier: MIT */
/* The DMA table of a vfio-user server (include/vfiomig/vfio_user.h). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vfiomig/vfio_user.h>

#include "dma_remote.h"

struct dma_map {
    uint64_t iova;
    uint64_t size;
    void *mem; /* NULL: known range, no memory */
    uint32_t prot;
};

/* A logged range: one bit per unit of the kept page size. */
struct log_range {
    uint64_t iova, length;
    _Atomic uint64_t *bits;
};

struct vfm_dma {
    /* Readers are device threads touching memory; the writer is the server
     * changing the table. Writers are preferred so a busy device cannot
     * starve DMA_UNMAP. Readers must not nest get() calls. */
    pthread_rwlock_t lock;
    struct dma_map *maps;
    uint32_t n;
    uint32_t max;
    /* the message path (dma_remote.h); its calls are counted so that
     * clearing it can wait for them */
    vfm_dma_remote_fn remote;
    void *remote_ctx;
    pthread_mutex_t remote_mu;
    pthread_cond_t remote_cv;
    unsigned remote_calls;
    /* the dirty log (vfm_dma_log_ops()): set under the write lock, read
     * and marked under the read lock */
    struct log_range *log;
    uint32_t nlog;
    unsigned log_shift; /* log2 of the kept page size */
};

/*
 * The SIGBUS guard. A guarded access arms this thread's jump buffer; a
 * SIGBUS from a fault while it is armed jumps back out of the access
 * (SA_NODEFER: the handler leaves the signal mask as it found it, so the
 * jump needs no mask restore). Any other SIGBUS goes where it went before.
 */
static __thread sigjmp_buf *dma_guard;
static __thread int bus_chaining; /* a later handler that chains back to us */
static struct sigaction prev_bus;
static pthread_mutex_t bus_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
    sigjmp_buf *env = dma_guard;
    struct sigaction dfl = {.sa_handler = SIG_DFL};

    if (env && si && si->si_code > 0) { /* a fault, not a kill() */
        dma_guard = NULL;
        siglongjmp(*env, 1);
    }
    if (!bus_chaining) {
        bus_chaining = 1;
        if (prev_bus.sa_flags & SA_SIGINFO) {
            prev_bus.sa_sigaction(sig, si, uc);
            bus_chaining = 0;
            return;
        }
        if (prev_bus.sa_handler != SIG_DFL && prev_bus.sa_handler != SIG_IGN) {
            prev_bus.sa_handler(sig);
            bus_chaining = 0;
            return;
        }
        bus_chaining = 0;
        if (prev_bus.sa_handler == SIG_IGN && si && si->si_code <= 0)
            return; /* an ignored kill() */
    }
    /* die of it, as without this handler (raised again rather than left to
     * recur on return, which not every emulator does) */
    sigaction(SIGBUS, &dfl, NULL);
    raise(SIGBUS);
}

/* Installs on_sigbus unless SIGBUS's handler already is it (someone may
 * have replaced it since: a test harness, the application). */
static void install_sigbus(void)
{
    struct sigaction sa = {.sa_sigaction = on_sigbus,
                           .sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK | SA_RESTART},
                     cur;

    sigemptyset(&sa.sa_mask);
    pthread_mutex_lock(&bus_lock);
    if (sigaction(SIGBUS, NULL, &cur) == 0 &&
        !((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_sigbus)) {
        prev_bus = cur;
        sigaction(SIGBUS, &sa, NULL);
    }
    pthread_mutex_unlock(&bus_lock);
}

int vfm_dma_new(uint32_t max_maps, struct vfm_dma **out)
{
    struct vfm_dma *d = calloc(1, sizeof(*d));
    pthread_rwlockattr_t attr;

    if (!d)
        return -ENOMEM;
    install_sigbus();
    d->max = max_maps ? max_maps : 1024;
    d->maps = calloc(d->max, sizeof(*d->maps));
    if (!d->maps) {
        free(d);
        return -ENOMEM;
    }
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&d->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&d->remote_mu, NULL);
    pthread_cond_init(&d->remote_cv, NULL);
    *out = d;
    return 0;
}

void vfm_dma_free(struct vfm_dma *d)
{
    if (!d)
        return;
    vfm_dma_unmap_all(d);
    for (uint32_t i = 0; i < d->nlog; i++)
        free(d->log[i].bits);
    free(d->log);
    pthread_rwlock_destroy(&d->lock);
    pthread_mutex_destroy(&d->remote_mu);
    pthread_cond_destroy(&d->remote_cv);
    free(d->maps);
    free(d);
}

int vfm_dma_map(struct vfm_dma *d, uint64_t iova, uint64_t size, int fd, uint64_t offset,
                uint32_t prot)
{
    long page = sysconf(_SC_PAGESIZE);
    void *mem = NULL;
    int mprot = 0, ret = 0;

    if (size == 0 || iova + size < iova || offset + size < offset ||
        (prot & ~(VFM_VU_DMA_READ_FLAG | VFM_VU_DMA_WRITE_FLAG)))
        return -EINVAL;
    if (fd >= 0 && (offset % (uint64_t)page || size > SIZE_MAX))
        return -EINVAL;
    if (fd >= 0) {
        /* a file's mapping ends at its end: bytes past it are a SIGBUS at
         * the first touch, not memory (a client could map 64 TiB of a 4 KiB
         * file) */
        struct stat st;
        if (fstat(fd, &st) < 0)
            return -errno;
        if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < offset + size)
            return -EINVAL;
    }
    pthread_rwlock_wrlock(&d->lock);
    for (uint32_t i = 0; i < d->n; i++) {
        if (iova < d->maps[i].iova + d->maps[i].size && d->maps[i].iova < iova + size) {
            ret = -EEXIST;
            goto out;
        }
    }
    if (d->n == d->max) {
        ret = -ENOSPC;
        goto out;
    }
    if (fd >= 0) {
        if (prot & VFM_VU_DMA_READ_FLAG)
            mprot |= PROT_READ;
        if (prot & VFM_VU_DMA_WRITE_FLAG)
            mprot |= PROT_WRITE;
        mem = mmap(NULL, (size_t)size, mprot ? mprot : PROT_NONE, MAP_SHARED, fd, (off_t)offset);
        if (mem == MAP_FAILED) {
            ret = -errno;
            goto out;
        }
    }
    d->maps[d->n++] = (struct dma_map){iova, size, mem, prot};
out:
    pthread_rwlock_unlock(&d->lock);
    return ret;
}

int vfm_dma_unmap(struct vfm_dma *d, uint64_t iova, uint64_t size)
{
    int ret = -EINVAL;

    pthread_rwlock_wrlock(&d->lock); /* waits for every holder */
    for (uint32_t i = 0; i < d->n; i++) {
        if (d->maps[i].iova == iova && d->maps[i].size == size) {
            if (d->maps[i].mem)
                munmap(d->maps[i].mem, (size_t)size);
            d->maps[i] = d->maps[--d->n];
            ret = 0;
            break;
        }
    }
    pthread_rwlock_unlock(&d->lock);
    return ret;
}

void vfm_dma_unmap_all(struct vfm_dma *d)
{
    pthread_rwlock_wrlock(&d->lock);
    for (uint32_t i = 0; i < d->n; i++)
        if (d->maps[i].mem)
            munmap(d->maps[i].mem, (size_t)d->maps[i].size);
    d->n = 0;
    pthread_rwlock_unlock(&d->lock);
}

/* Marks the logged units that [iova, iova+len) touches. Read lock held. */
static void log_mark(struct vfm_dma *d, uint64_t iova, uint64_t len)
{
    if (!d->nlog || !len)
        return;
    for (uint32_t i = 0; i < d->nlog; i++) {
        struct log_range *r = &d->log[i];
        uint64_t lo = iova > r->iova ? iova : r->iova;
        uint64_t hi = iova + len - 1 < r->iova + r->length - 1 ? iova + len - 1
                                                                 : r->iova + r->length - 1;
        if (iova + len - 1 < r->iova || iova > r->iova + r->length - 1)
            continue;
        for (uint64_t u = (lo - r->iova) >> d->log_shift; u <= (hi - r->iova) >> d->log_shift; u++)
            atomic_fetch_or_explicit(&r->bits[u / 64], 1ull << (u % 64), memory_order_relaxed);
    }
}

/* The address of [iova, iova+len) with @prot, read lock held by the caller.
 * Return: 0 and *@mem, -EFAULT or -EACCES; REMOTE for a range mapped
 * without memory that allows @prot. */
#define REMOTE 1
static int lookup(struct vfm_dma *d, uint64_t iova, uint64_t len, uint32_t prot, void **mem)
{
    for (uint32_t i = 0; i < d->n; i++) {
        struct dma_map *m = &d->maps[i];
        if (iova >= m->iova && len <= m->size && iova - m->iova <= m->size - len) {
            if ((m->prot & prot) != prot)
                return -EACCES;
            if (!m->mem)
                return REMOTE;
            *mem = (char *)m->mem + (iova - m->iova);
            return 0;
        }
    }
    return -EFAULT;
}

void *vfm_dma_get(struct vfm_dma *d, uint64_t iova, uint64_t len, uint32_t prot)
{
    void *mem;

    pthread_rwlock_rdlock(&d->lock);
    if (lookup(d, iova, len, prot, &mem) == 0) {
        if (prot & VFM_VU_DMA_WRITE_FLAG)
            log_mark(d, iova, len); /* what is written through it is not seen */
        return mem; /* REMOTE is no address */
    }
    pthread_rwlock_unlock(&d->lock);
    return NULL;
}

/* Runs fn(mem, len, arg) with the guard armed. Return: 0, or -EIO when a
 * SIGBUS cut it short. */
static int guarded(vfm_dma_fn fn, void *mem, uint64_t len, void *arg)
{
    sigjmp_buf env, *outer = dma_guard;

    if (sigsetjmp(env, 0)) {
        dma_guard = outer;
        return -EIO;
    }
    dma_guard = &env;
    fn(mem, len, arg);
    dma_guard = outer;
    return 0;
}

int vfm_dma_access(struct vfm_dma *d, uint64_t iova, uint64_t len, uint32_t prot, vfm_dma_fn fn,
                   void *arg)
{
    void *mem;
    int ret;

    if (!d || !fn)
        return -EINVAL;
    pthread_rwlock_rdlock(&d->lock);
    ret = lookup(d, iova, len, prot, &mem);
    if (ret == 0)
        ret = guarded(fn, mem, len, arg);
    if ((ret == 0 || ret == -EIO) && (prot & VFM_VU_DMA_WRITE_FLAG))
        log_mark(d, iova, len);
    pthread_rwlock_unlock(&d->lock);
    return ret == REMOTE ? -EFAULT : ret;
}

static void copy_out(void *mem, uint64_t len, void *arg)
{
    memcpy(arg, mem, (size_t)len);
}

static void copy_in(void *mem, uint64_t len, void *arg)
{
    memcpy(mem, arg, (size_t)len);
}

void vfm_dma_set_remote(struct vfm_dma *d, vfm_dma_remote_fn fn, void *ctx)
{
    pthread_mutex_lock(&d->remote_mu);
    if (!fn)
        while (d->remote_calls)
            pthread_cond_wait(&d->remote_cv, &d->remote_mu);
    d->remote = fn;
    d->remote_ctx = ctx;
    pthread_mutex_unlock(&d->remote_mu);
}

/* A read or write: guarded in memory, or through the message path (taken
 * without the table's lock: a DMA_UNMAP the client sends meanwhile must
 * not wait for its own reply to come). */
static int rw(struct vfm_dma *d, bool write, uint64_t iova, void *buf, uint64_t len)
{
    vfm_dma_remote_fn fn;
    void *ctx;
    int ret;
    uint32_t prot = write ? VFM_VU_DMA_WRITE_FLAG : VFM_VU_DMA_READ_FLAG;
    void *mem;

    if (!d)
        return -EINVAL;
    pthread_rwlock_rdlock(&d->lock);
    ret = lookup(d, iova, len, prot, &mem);
    if (ret == 0)
        ret = guarded(write ? copy_in : copy_out, mem, len, buf);
    if (write && (ret == 0 || ret == -EIO || ret == REMOTE))
        log_mark(d, iova, len); /* a message may write some even when it fails */
    pthread_rwlock_unlock(&d->lock);
    if (ret != REMOTE)
        return ret;
    pthread_mutex_lock(&d->remote_mu);
    fn = d->remote;
    ctx = d->remote_ctx;
    if (fn)
        d->remote_calls++;
    pthread_mutex_unlock(&d->remote_mu);
    if (!fn)
        return -ENOTCONN;
    ret = fn(ctx, write, iova, buf, len);
    pthread_mutex_lock(&d->remote_mu);
    if (--d->remote_calls == 0)
        pthread_cond_broadcast(&d->remote_cv);
    pthread_mutex_unlock(&d->remote_mu);
    return ret;
}

int vfm_dma_read(struct vfm_dma *d, uint64_t iova, void *buf, uint64_t len)
{
    return rw(d, false, iova, buf, len);
}

int vfm_dma_write(struct vfm_dma *d, uint64_t iova, const void *buf, uint64_t len)
{
    return rw(d, true, iova, (void *)buf, len);
}

void vfm_dma_put(struct vfm_dma *d)
{
    pthread_rwlock_unlock(&d->lock);
}

/* ---- the dirty log (vfm_dma_log_ops()) ---- */

#define LOG_MIN_SHIFT 12u
#define LOG_MAX_SHIFT 21u
#define LOG_MAX_UNITS (1ull << 28)

static int log_start(void *ctx, const struct vfm_dma_range *ranges, uint32_t n, uint64_t *page_size)
{
    struct vfm_dma *d = ctx;
    unsigned shift = LOG_MIN_SHIFT;
    struct log_range *log;
    uint64_t units = 0;
    int ret = 0;

    while (shift < LOG_MAX_SHIFT && (1ull << shift) < *page_size)
        shift++;
    for (uint32_t i = 0; i < n; i++)
        units += (ranges[i].length + (1ull << shift) - 1) >> shift;
    if (units > LOG_MAX_UNITS)
        return -E2BIG;
    log = calloc(n, sizeof(*log));
    if (!log)
        return -ENOMEM;
    for (uint32_t i = 0; i < n && !ret; i++) {
        uint64_t u = (ranges[i].length + (1ull << shift) - 1) >> shift;
        log[i].iova = ranges[i].iova;
        log[i].length = ranges[i].length;
        log[i].bits = calloc((size_t)((u + 63) / 64), sizeof(uint64_t));
        if (!log[i].bits)
            ret = -ENOMEM;
    }
    pthread_rwlock_wrlock(&d->lock);
    if (!ret && d->nlog)
        ret = -EBUSY;
    if (!ret) {
        d->log = log;
        d->nlog = n;
        d->log_shift = shift;
        *page_size = 1ull << shift;
    }
    pthread_rwlock_unlock(&d->lock);
    if (ret) {
        for (uint32_t i = 0; i < n; i++)
            free(log[i].bits);
        free(log);
    }
    return ret;
}

static int log_stop(void *ctx)
{
    struct vfm_dma *d = ctx;
    struct log_range *log;
    uint32_t n;

    pthread_rwlock_wrlock(&d->lock);
    log = d->log;
    n = d->nlog;
    d->log = NULL;
    d->nlog = 0;
    pthread_rwlock_unlock(&d->lock);
    if (!n)
        return -EINVAL;
    for (uint32_t i = 0; i < n; i++)
        free(log[i].bits);
    free(log);
    return 0;
}

/* REPORT: each kept unit the range touches is read once; one wholly
 * inside the range is read and cleared in one atomic step (a write beside
 * it lands before, and is reported, or after, and stays), one at an edge is
 * only read (reported again next time: too much, never too little). */
static int log_report(void *ctx, uint64_t iova, uint64_t length, uint64_t page_size,
                      uint64_t *bitmap)
{
    struct vfm_dma *d = ctx;
    struct log_range *r = NULL;
    unsigned shift = 0;
    int ret = 0;

    if (page_size < 4096 || (page_size & (page_size - 1)) || !length || iova + length < iova)
        return -EINVAL;
    while ((1ull << shift) < page_size)
        shift++;
    /* the write lock: a vfm_dma_get() for writing marked its range when
     * taken and writes through its pointer until its put; a report between
     * the two would clear the mark before the write lands */
    pthread_rwlock_wrlock(&d->lock);
    for (uint32_t i = 0; i < d->nlog && !r; i++)
        if (iova >= d->log[i].iova && length <= d->log[i].length &&
            iova - d->log[i].iova <= d->log[i].length - length)
            r = &d->log[i];
    if (!r) {
        ret = -EINVAL; /* not started, or outside what is logged */
    } else {
        uint64_t start = iova - r->iova, end = start + length - 1; /* in the range */
        uint64_t ksz = 1ull << d->log_shift;

        for (uint64_t u = start >> d->log_shift; u <= end >> d->log_shift; u++) {
            uint64_t ulo = u << d->log_shift, uhi = ulo + ksz - 1;
            uint64_t bit = 1ull << (u % 64), was;
            uint64_t lo = ulo > start ? ulo : start, hi = uhi < end ? uhi : end;

            if (ulo >= start && uhi <= end)
                was = atomic_fetch_and_explicit(&r->bits[u / 64], ~bit, memory_order_relaxed);
            else
                was = atomic_load_explicit(&r->bits[u / 64], memory_order_relaxed);
            if (!(was & bit))
                continue;
            for (uint64_t b = (lo - start) >> shift; b <= (hi - start) >> shift; b++)
                bitmap[b / 64] |= 1ull << (b % 64);
        }
    }
    pthread_rwlock_unlock(&d->lock);
    return ret;
}

static const struct vfm_dma_log_ops dma_log_ops = {
    .start = log_start,
    .stop = log_stop,
    .report = log_report,
};

const struct vfm_dma_log_ops *vfm_dma_log_ops(void)
{
    return &dma_log_ops;
}
