/* SPDX-License-Identifier: MIT */
/* large-state: a big, changing device memory with dirty tracking (large.h). */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <xxhash.h>

#include "large.h"

#define CHUNK_MAGIC 0x4843474cu /* "LGCH" */
#define CHUNK_FINAL 1u

/* A chunk: this header, then nruns runs (struct run + count pages), then,
 * in a final chunk, struct trailer. */
struct chunk_hdr {
    uint32_t magic;
    uint32_t flags;
    uint64_t nruns;
};

struct run {
    uint64_t first;
    uint64_t count;
};

/* The rest of the device state: the worker's registers, so the restored
 * device goes on where the source stopped; then struct pci_tail and its
 * bytes (what a driver programmed into the PCI function). */
struct trailer {
    uint64_t digest; /* of the memory; 0: not computed (no_verify) */
    uint64_t size;
    uint64_t rng, counter, writes;
    uint64_t result, results; /* LG_REG_RESULT, LG_REG_RESULTS */
};

struct pci_tail {
    uint32_t len; /* bytes of vfm_pci_save() that follow; 0: no PCI model */
    uint32_t pad;
};

/* Room for the PCI model's state in a load-in-place buffer (one MSI-X
 * vector, a 256-byte config space: well under this). */
#define PCI_STATE_MAX 8192u

struct large {
    struct vfm_device *dev;
    uint8_t *mem;
    uint64_t size, page, npages;
    uint32_t seed;
    bool no_verify;
    bool save_copy;

    pthread_mutex_t lock; /* everything below, and mem */
    pthread_cond_t cond;
    pthread_t worker;
    bool quit;
    bool running;          /* the worker changes mem */
    uint64_t rate;         /* bytes dirtied per second */
    uint64_t writes;       /* page writes so far */
    uint64_t rng;          /* xorshift state */
    uint64_t counter;      /* the value written next */
    bool tracking;         /* a pre-copy session is open */
    uint64_t initial_next; /* first page of the initial pass not given yet */
    uint64_t *dirty;       /* pages changed since given (npages bits) */
    uint64_t ndirty;
    uint64_t dirty_cursor; /* where the next dirty scan starts */
    uint64_t *recv;        /* destination: pages received in this load */
    uint64_t nrecv;
    uint64_t digest_saved, digest_loaded, precopy_bytes, final_bytes;
    uint8_t *staging; /* load in place: where final states arrive, or NULL */
    size_t staging_size;
    struct vfm_pci *pci;            /* its PCI model, once asked for */
    uint64_t irqs;                  /* raised: not migrated */
    struct vfm_dma *dma;            /* NULL: no DMA */
    uint64_t result;                /* LG_REG_RESULT */
    uint64_t results;               /* LG_REG_RESULTS */
    bool busy;                      /* the worker's result DMA is in flight (without the lock) */
    uint32_t reconfigures, reinits; /* LG_REG_RECONFIGURES */
    uint64_t swaps;                 /* loads that swapped the memory in (no copy) */
    pthread_cond_t idle;            /* busy went false */
    uint8_t msix_bar[4096];         /* BAR1: the model serves its table and PBA */
    struct saving *sv;              /* save in pieces: from save_begin on, or NULL */
};

/* Save in pieces: the final chunk as it is given — its header, then per run
 * the struct run and the pages (straight from mem: the device is stopped),
 * then the tail (trailer, pci_tail, PCI state), the same bytes lg_save
 * writes. The memory's digest (the trailer's) is hashed as the pages are
 * given in order, and finished when the tail is asked for. */
struct saving {
    struct chunk_hdr h;
    struct run *runs;
    size_t nruns;
    uint64_t total;
    size_t seg;         /* the segment the last piece came from */
    uint64_t seg_start; /* its first byte's offset in the state */
    XXH3_state_t *xs;   /* the memory's digest so far */
    uint64_t hashed;    /* bytes of mem hashed, from its start */
    bool tail_done;     /* the digest is in the tail */
    size_t tail_len;
    uint8_t tail[sizeof(struct trailer) + sizeof(struct pci_tail) + PCI_STATE_MAX];
};

static bool bit_test(const uint64_t *b, uint64_t i)
{
    return b[i / 64] >> (i % 64) & 1;
}

static void bit_set(uint64_t *b, uint64_t i)
{
    b[i / 64] |= 1ull << (i % 64);
}

static void bit_clear(uint64_t *b, uint64_t i)
{
    b[i / 64] &= ~(1ull << (i % 64));
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void fill_pattern(struct large *lg)
{
    uint64_t *w = (uint64_t *)lg->mem;
    for (uint64_t i = 0; i < lg->size / 8; i++)
        w[i] = (i + 1) * 0x9E3779B97F4A7C15ull ^ lg->seed;
}

/* The memory's digest: never 0, which in the stream means "none". */
static uint64_t mem_digest(const struct large *lg)
{
    return vfm_xxh3_64(lg->mem, (size_t)lg->size) | 1; /* libxxhash's value, faster */
}

static size_t bitmap_bytes(const struct large *lg)
{
    return (size_t)((lg->npages + 63) / 64 * 8);
}

/* The worker: while running, dirty rate bytes per second, in 1 ms steps. */
static void *worker_main(void *arg)
{
    struct large *lg = arg;
    struct timespec last, now;
    double due = 0;

    clock_gettime(CLOCK_MONOTONIC, &last);
    pthread_mutex_lock(&lg->lock);
    while (!lg->quit) {
        struct timespec until;
        if (!lg->running || !lg->rate) {
            /* nothing to do until it runs with a rate: no wake-ups */
            pthread_cond_wait(&lg->cond, &lg->lock);
            clock_gettime(CLOCK_MONOTONIC, &last);
            due = 0;
            continue;
        }
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&lg->cond, &lg->lock, &until);
        clock_gettime(CLOCK_MONOTONIC, &now);
        double dt = (double)(now.tv_sec - last.tv_sec) + (now.tv_nsec - last.tv_nsec) / 1e9;
        last = now;
        if (!lg->running || !lg->rate) {
            due = 0;
            continue;
        }
        due += (double)lg->rate * dt / (double)lg->page;
        /* the rate is a guest-writable register: at most every page once
         * per step, so no value holds the lock for longer than one pass
         * (2^64-1 bytes/s would otherwise be hours of writes in one step) */
        if (due > (double)lg->npages)
            due = (double)lg->npages;
        bool wrote = due >= 1;
        while (due >= 1) {
            uint64_t r = xorshift(&lg->rng), p = r % lg->npages;
            uint64_t off = p * lg->page + (r >> 40) % (lg->page / 8) * 8;
            uint64_t v = ++lg->counter;

            memcpy(lg->mem + off, &v, 8);
            lg->writes++;
            if (lg->tracking && p < lg->initial_next && !bit_test(lg->dirty, p)) {
                bit_set(lg->dirty, p);
                lg->ndirty++;
            }
            due -= 1;
        }
        if (wrote && lg->dma && lg->result && (!lg->pci || vfm_pci_bus_master(lg->pci))) {
            /* the result record, by DMA without the lock (a DMA message
             * waits for the client, whose commands to our registers must
             * not wait for it); a stop waits for it (quiet()) */
            struct lg_result r = {.magic = LG_COMPAT,
                                  .seq = lg->results + 1,
                                  .writes = lg->writes,
                                  .counter = lg->counter};
            uint64_t at = lg->result;
            int ret;
            lg->busy = true;
            pthread_mutex_unlock(&lg->lock);
            ret = vfm_dma_write(lg->dma, at, &r, sizeof(r));
            pthread_mutex_lock(&lg->lock);
            lg->busy = false;
            pthread_cond_broadcast(&lg->idle);
            if (!ret)
                lg->results = r.seq;
        }
    }
    pthread_mutex_unlock(&lg->lock);
    return NULL;
}

/* Waits for the result DMA in flight. Lock held. */
static void quiet(struct large *lg)
{
    while (lg->busy)
        pthread_cond_wait(&lg->idle, &lg->lock);
}

/* ---- the source side ---- */

/* Appends a run of @count pages from @first. Lock held. */
static int put_run(struct large *lg, struct vfm_buf *out, uint64_t first, uint64_t count)
{
    struct run r = {first, count};
    uint8_t *p;
    int ret = vfm_buf_append(out, &r, sizeof(r));

    if (ret)
        return ret;
    p = vfm_buf_reserve(out, (size_t)(count * lg->page));
    if (!p)
        return -ENOMEM;
    memcpy(p, lg->mem + first * lg->page, (size_t)(count * lg->page));
    return 0;
}

/* The runs a chunk will carry, planned before anything is written (the
 * chunk header comes first and holds their count). */
struct plan {
    struct run *r;
    size_t n, cap;
    uint64_t initial; /* pages of the initial pass */
    uint64_t dirty;   /* dirty pages */
    uint64_t cursor;  /* dirty_cursor after it */
};

static int plan_add(struct plan *pl, uint64_t first, uint64_t count)
{
    if (pl->n == pl->cap) {
        size_t cap = pl->cap ? pl->cap * 2 : 64;
        struct run *r = realloc(pl->r, cap * sizeof(*r));
        if (!r)
            return -ENOMEM;
        pl->r = r;
        pl->cap = cap;
    }
    pl->r[pl->n++] = (struct run){first, count};
    return 0;
}

/* Plans at most @budget pages (@all: no budget): the initial pass first,
 * then dirty pages in runs, from where the last scan stopped. Lock held. */
static int plan_chunk(struct large *lg, struct plan *pl, uint64_t budget, bool all)
{
    uint64_t left = budget, seen = 0;
    int ret;

    memset(pl, 0, sizeof(*pl));
    pl->cursor = lg->dirty_cursor;
    if (lg->initial_next < lg->npages && (all || left)) {
        uint64_t n = lg->npages - lg->initial_next;
        if (!all && n > left)
            n = left;
        if ((ret = plan_add(pl, lg->initial_next, n)))
            return ret;
        pl->initial = n;
        left -= all ? 0 : n;
    }
    for (uint64_t scanned = 0; seen < lg->ndirty && scanned < lg->npages && (all || left);) {
        uint64_t p = (lg->dirty_cursor + scanned) % lg->npages, n = 0;
        if (!bit_test(lg->dirty, p)) {
            scanned++;
            continue;
        }
        /* a run stops at the end of the memory and where this scan began
         * (after wrapping around): it never takes a page twice */
        while (p + n < lg->npages && scanned + n < lg->npages && bit_test(lg->dirty, p + n) &&
               (all || n < left))
            n++;
        if ((ret = plan_add(pl, p, n)))
            return ret;
        seen += n;
        pl->dirty += n;
        left -= all ? 0 : n;
        scanned += n;
        pl->cursor = (p + n) % lg->npages;
    }
    return 0;
}

/* Marks the planned pages given (after a successful write). Lock held. */
static void plan_given(struct large *lg, const struct plan *pl)
{
    lg->initial_next += pl->initial;
    for (size_t i = pl->initial ? 1 : 0; i < pl->n; i++)
        for (uint64_t k = 0; k < pl->r[i].count; k++)
            bit_clear(lg->dirty, pl->r[i].first + k);
    lg->ndirty -= pl->dirty;
    lg->dirty_cursor = pl->cursor;
}

/* Writes the planned chunk into @out (the runtime undoes a failed write),
 * and only then marks its pages given. Lock held. */
static int put_chunk(struct large *lg, struct vfm_buf *out, uint64_t budget, bool all,
                     uint32_t flags, uint64_t *given)
{
    struct plan pl;
    struct chunk_hdr h = {CHUNK_MAGIC, flags, 0};
    int ret = plan_chunk(lg, &pl, budget, all);

    *given = 0;
    h.nruns = pl.n;
    if (!ret)
        ret = vfm_buf_append(out, &h, sizeof(h));
    for (size_t i = 0; !ret && i < pl.n; i++)
        ret = put_run(lg, out, pl.r[i].first, pl.r[i].count);
    if (!ret) {
        plan_given(lg, &pl);
        *given = pl.initial + pl.dirty;
    }
    free(pl.r);
    return ret;
}

static struct large *LG(void *priv)
{
    return priv;
}

static int lg_save(struct vfm_device *dev, void *priv, struct vfm_buf *out)
{
    struct large *lg = LG(priv);
    struct trailer t = {0, lg->size, 0, 0, 0};
    uint64_t given;
    int ret;
    (void)dev;

    pthread_mutex_lock(&lg->lock);
    quiet(lg);
    if (!lg->tracking)
        lg->initial_next = 0; /* no pre-copy: everything */
    ret = put_chunk(lg, out, 0, true, CHUNK_FINAL, &given);
    if (!ret) {
        t.digest = lg->no_verify ? 0 : mem_digest(lg);
        t.rng = lg->rng;
        t.counter = lg->counter;
        t.writes = lg->writes;
        t.result = lg->result;
        t.results = lg->results;
        ret = vfm_buf_append(out, &t, sizeof(t));
    }
    if (!ret) {
        struct pci_tail pt = {.len = lg->pci ? (uint32_t)vfm_pci_state_size(lg->pci) : 0};
        ret = vfm_buf_append(out, &pt, sizeof(pt));
        if (!ret && lg->pci)
            ret = vfm_pci_save(lg->pci, out);
    }
    if (!ret) {
        lg->digest_saved = t.digest;
        lg->final_bytes = given * lg->page;
    }
    pthread_mutex_unlock(&lg->lock);
    return ret;
}

static void saving_free(struct saving *sv)
{
    if (!sv)
        return;
    XXH3_freeState(sv->xs);
    free(sv->runs);
    free(sv);
}

/* Save in pieces, at the stop: plans the final chunk (the pages not given
 * yet: all of them without pre-copy), captures the registers and the PCI
 * state, and says the size. Nothing of the memory is copied or hashed. */
static int lg_save_begin(struct vfm_device *dev, void *priv, uint64_t *len)
{
    struct large *lg = LG(priv);
    struct trailer t = {0, lg->size, 0, 0, 0};
    struct pci_tail pt = {.len = lg->pci ? (uint32_t)vfm_pci_state_size(lg->pci) : 0};
    struct saving *sv;
    struct plan pl;
    int ret;
    (void)dev;

    if (lg->save_copy || pt.len > PCI_STATE_MAX)
        return -EOPNOTSUPP; /* save() then */
    sv = calloc(1, sizeof(*sv));
    if (!sv || !(sv->xs = XXH3_createState()) || XXH3_64bits_reset(sv->xs) != XXH_OK) {
        saving_free(sv);
        return -ENOMEM;
    }
    pthread_mutex_lock(&lg->lock);
    quiet(lg);
    if (!lg->tracking)
        lg->initial_next = 0; /* no pre-copy: everything */
    ret = plan_chunk(lg, &pl, 0, true);
    if (!ret && pt.len)
        ret = vfm_pci_save_mem(lg->pci, sv->tail + sizeof(t) + sizeof(pt), pt.len);
    if (ret) {
        pthread_mutex_unlock(&lg->lock);
        free(pl.r);
        saving_free(sv);
        return ret;
    }
    sv->h = (struct chunk_hdr){CHUNK_MAGIC, CHUNK_FINAL, pl.n};
    sv->runs = pl.r;
    sv->nruns = pl.n;
    sv->total = sizeof(sv->h);
    for (size_t i = 0; i < pl.n; i++)
        sv->total += sizeof(struct run) + pl.r[i].count * lg->page;
    t.rng = lg->rng;
    t.counter = lg->counter;
    t.writes = lg->writes;
    t.result = lg->result;
    t.results = lg->results;
    memcpy(sv->tail, &t, sizeof(t)); /* the digest comes with the tail */
    memcpy(sv->tail + sizeof(t), &pt, sizeof(pt));
    sv->tail_len = sizeof(t) + sizeof(pt) + pt.len;
    sv->total += sv->tail_len;
    plan_given(lg, &pl);
    lg->final_bytes = (pl.initial + pl.dirty) * lg->page;
    saving_free(lg->sv);
    lg->sv = sv;
    *len = sv->total;
    pthread_mutex_unlock(&lg->lock);
    return 0;
}

/* Segment @k of the final chunk: header, (run, pages) per run, tail. */
static void segment(const struct large *lg, size_t k, const uint8_t **p, uint64_t *len)
{
    const struct saving *sv = lg->sv;

    if (k == 0) {
        *p = (const uint8_t *)&sv->h;
        *len = sizeof(sv->h);
    } else if (k <= 2 * sv->nruns) {
        const struct run *r = &sv->runs[(k - 1) / 2];
        if (k % 2) {
            *p = (const uint8_t *)r;
            *len = sizeof(*r);
        } else {
            *p = lg->mem + r->first * lg->page;
            *len = r->count * lg->page;
        }
    } else {
        *p = sv->tail;
        *len = sv->tail_len;
    }
}

static int lg_save_piece(struct vfm_device *dev, void *priv, uint64_t offset, size_t max,
                         const void **data, size_t *n)
{
    struct large *lg = LG(priv);
    struct saving *sv;
    const uint8_t *p;
    uint64_t len, in;
    (void)dev;

    pthread_mutex_lock(&lg->lock);
    sv = lg->sv;
    if (!sv || offset >= sv->total) {
        pthread_mutex_unlock(&lg->lock);
        return -EINVAL;
    }
    if (offset < sv->seg_start) {
        sv->seg = 0; /* asked again from further back */
        sv->seg_start = 0;
    }
    for (;;) {
        segment(lg, sv->seg, &p, &len);
        if (offset < sv->seg_start + len)
            break;
        sv->seg_start += len;
        sv->seg++;
    }
    in = offset - sv->seg_start;
    *data = p + in;
    *n = len - in < max ? (size_t)(len - in) : max;
    if (p == sv->tail && !sv->tail_done) {
        /* the digest: the memory not hashed in order yet, then into the
         * trailer */
        uint64_t d = 0;
        if (!lg->no_verify) {
            XXH3_64bits_update(sv->xs, lg->mem + sv->hashed, (size_t)(lg->size - sv->hashed));
            sv->hashed = lg->size;
            d = XXH3_64bits_digest(sv->xs) | 1;
        }
        memcpy(sv->tail + offsetof(struct trailer, digest), &d, sizeof(d));
        lg->digest_saved = d;
        sv->tail_done = true;
    } else if (p >= lg->mem && p < lg->mem + lg->size && !lg->no_verify &&
               (uint64_t)((const uint8_t *)*data - lg->mem) == sv->hashed) {
        /* pages given in memory order: hashed now, while in the cache */
        XXH3_64bits_update(sv->xs, *data, *n);
        sv->hashed += *n;
    }
    pthread_mutex_unlock(&lg->lock);
    return 0;
}

static int pc_start(struct vfm_device *dev, void *priv)
{
    struct large *lg = LG(priv);
    (void)dev;
    pthread_mutex_lock(&lg->lock);
    lg->tracking = true;
    lg->initial_next = 0;
    memset(lg->dirty, 0, bitmap_bytes(lg));
    lg->ndirty = 0;
    lg->dirty_cursor = 0;
    lg->precopy_bytes = 0;
    pthread_mutex_unlock(&lg->lock);
    return 0;
}

static int pc_end(struct vfm_device *dev, void *priv)
{
    struct large *lg = LG(priv);
    (void)dev;
    pthread_mutex_lock(&lg->lock);
    lg->tracking = false;
    pthread_mutex_unlock(&lg->lock);
    return 0;
}

static int pc_save(struct vfm_device *dev, void *priv, struct vfm_buf *out, size_t hint)
{
    struct large *lg = LG(priv);
    uint64_t budget = hint / lg->page ? hint / lg->page : 1, given;
    int ret;
    (void)dev;

    pthread_mutex_lock(&lg->lock);
    if (lg->initial_next == lg->npages && lg->ndirty == 0) {
        pthread_mutex_unlock(&lg->lock);
        return 0; /* nothing pending: the caller sees ENOMSG */
    }
    ret = put_chunk(lg, out, budget, false, 0, &given);
    if (!ret)
        lg->precopy_bytes += given * lg->page;
    pthread_mutex_unlock(&lg->lock);
    return ret;
}

static int pc_info(struct vfm_device *dev, void *priv, uint64_t *initial, uint64_t *dirty)
{
    struct large *lg = LG(priv);
    (void)dev;
    pthread_mutex_lock(&lg->lock);
    *initial = (lg->npages - lg->initial_next) * lg->page;
    *dirty = lg->ndirty * lg->page;
    pthread_mutex_unlock(&lg->lock);
    return 0;
}

static int lg_data_size(struct vfm_device *dev, void *priv, uint64_t *bytes)
{
    struct large *lg = LG(priv);
    uint64_t pages;
    (void)dev;
    pthread_mutex_lock(&lg->lock);
    pages = lg->tracking ? lg->npages - lg->initial_next + lg->ndirty : lg->npages;
    *bytes = pages * lg->page + sizeof(struct chunk_hdr) + sizeof(struct trailer) +
             (lg->tracking ? lg->ndirty + 1 : 1) * sizeof(struct run) + sizeof(struct pci_tail) +
             (lg->pci ? vfm_pci_state_size(lg->pci) : 0);
    pthread_mutex_unlock(&lg->lock);
    return 0;
}

/* ---- the destination side ---- */

/* Checks a chunk's layout; points at the trailer of a final one, and at
 * its PCI state (*@pci, *@pci_len). */
static int check_chunk(const struct large *lg, const uint8_t *data, size_t len, bool final,
                       struct trailer *tr, const uint8_t **pci, uint32_t *pci_len)
{
    struct chunk_hdr h;
    size_t off = sizeof(h);

    if (len < sizeof(h))
        return -EINVAL;
    memcpy(&h, data, sizeof(h));
    if (h.magic != CHUNK_MAGIC || h.flags != (final ? CHUNK_FINAL : 0u) || h.nruns > lg->npages)
        return -EINVAL;
    for (uint64_t i = 0; i < h.nruns; i++) {
        struct run r;
        if (len - off < sizeof(r))
            return -EINVAL;
        memcpy(&r, data + off, sizeof(r));
        off += sizeof(r);
        if (r.count == 0 || r.first >= lg->npages || r.count > lg->npages - r.first ||
            (len - off) / lg->page < r.count)
            return -EINVAL;
        off += (size_t)(r.count * lg->page);
    }
    if (final) {
        struct pci_tail pt;
        if (len - off < sizeof(struct trailer) + sizeof(pt))
            return -EINVAL;
        memcpy(tr, data + off, sizeof(*tr));
        memcpy(&pt, data + off + sizeof(*tr), sizeof(pt));
        off += sizeof(*tr) + sizeof(pt);
        if (tr->size != lg->size || tr->rng == 0 || pt.pad || pt.len != len - off ||
            pt.len > PCI_STATE_MAX)
            return -EINVAL;
        *pci = data + off;
        *pci_len = pt.len;
    } else if (off != len) {
        return -EINVAL;
    }
    return 0;
}

/* Applies a checked chunk. Lock held. */
static void apply_chunk(struct large *lg, const uint8_t *data)
{
    struct chunk_hdr h;
    size_t off = sizeof(h);

    memcpy(&h, data, sizeof(h));
    for (uint64_t i = 0; i < h.nruns; i++) {
        struct run r;
        memcpy(&r, data + off, sizeof(r));
        off += sizeof(r);
        memcpy(lg->mem + r.first * lg->page, data + off, (size_t)(r.count * lg->page));
        off += (size_t)(r.count * lg->page);
        for (uint64_t k = r.first; k < r.first + r.count; k++) {
            if (!bit_test(lg->recv, k)) {
                bit_set(lg->recv, k);
                lg->nrecv++;
            }
        }
    }
}

static int pc_load(struct vfm_device *dev, void *priv, const void *data, size_t len)
{
    struct large *lg = LG(priv);
    struct trailer tr;
    const uint8_t *pci;
    uint32_t pci_len;
    int ret = check_chunk(lg, data, len, false, &tr, &pci, &pci_len);
    (void)dev;

    if (ret)
        return ret;
    pthread_mutex_lock(&lg->lock);
    apply_chunk(lg, data);
    pthread_mutex_unlock(&lg->lock);
    return 0;
}

/* Load in place, and without a copy when it can: a final state of every
 * page in one run is received SWAP_PAGE - 32 bytes into the staging
 * buffer, so that its pages start aligned there; load() then swaps those
 * pages with the memory's (mremap: page tables move, no byte does). The
 * alignment is a huge page's, as the memory's and the staging buffer's
 * are: the page tables then move a huge page at a time, and the memory
 * stays in huge pages (measured here: with 4 KiB alignment the swapped
 * memory was read 20x slower afterwards, a 256 MiB save taking 1.5 s). */
#define SWAP_PAGE (2u << 20)
#define FULL_HEAD (sizeof(struct chunk_hdr) + sizeof(struct run))

/* A private anonymous mapping of @size bytes at a SWAP_PAGE-aligned
 * address (NULL: out of memory). */
static void *map_aligned(size_t size, int prot)
{
    uint8_t *p =
        mmap(NULL, size + SWAP_PAGE, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    uintptr_t a;

    if (p == MAP_FAILED)
        return NULL;
    a = ((uintptr_t)p + SWAP_PAGE - 1) & ~(uintptr_t)(SWAP_PAGE - 1);
    if (a > (uintptr_t)p)
        munmap(p, a - (uintptr_t)p);
    munmap((uint8_t *)a + size, (uintptr_t)p + SWAP_PAGE - a);
    return (void *)a;
}

static bool full_chunk_len(const struct large *lg, size_t len)
{
    size_t min = FULL_HEAD + (size_t)lg->size + sizeof(struct trailer) + sizeof(struct pci_tail);

    return lg->size % SWAP_PAGE == 0 && len >= min && len <= min + PCI_STATE_MAX;
}

/* The memory becomes the received pages at @pages (page-aligned, in the
 * staging buffer), and the staging buffer gets the old memory's pages in
 * their place (faulted in already). Return: false when the kernel refused
 * (nothing changed then: the caller copies). Lock held. */
static bool swap_in(struct large *lg, uint8_t *pages)
{
    size_t sz = (size_t)lg->size;
    /* somewhere to move the old memory to (mremap to the same size moves
     * nothing unless told where) */
    void *old = map_aligned(sz, PROT_NONE);

    if (!old)
        return false;
    if (mremap(lg->mem, sz, sz, MREMAP_MAYMOVE | MREMAP_FIXED, old) == MAP_FAILED) {
        munmap(old, sz);
        return false;
    }
    if (mremap(pages, sz, sz, MREMAP_MAYMOVE | MREMAP_FIXED, lg->mem) == MAP_FAILED) {
        /* back where it was (the range is free: it was just ours) */
        if (mremap(old, sz, sz, MREMAP_MAYMOVE | MREMAP_FIXED, lg->mem) == MAP_FAILED) {
            if (mmap(lg->mem, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                     -1, 0) == MAP_FAILED)
                abort(); /* the device's memory cannot be had back */
            memcpy(lg->mem, old, sz);
            munmap(old, sz);
        }
        return false;
    }
    if (mremap(old, sz, sz, MREMAP_MAYMOVE | MREMAP_FIXED, pages) == MAP_FAILED) {
        /* the staging buffer's hole gets fresh memory instead */
        munmap(old, sz);
        if (mmap(pages, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
                 0) == MAP_FAILED)
            abort(); /* a hole in our own buffer: nothing sane remains */
    }
    return true;
}

/* Applies a checked final chunk: by a swap when it is every page received
 * page-aligned in the staging buffer, else by copying. Lock held. */
static void apply_final(struct large *lg, const uint8_t *data)
{
    struct chunk_hdr h;
    struct run r;

    memcpy(&h, data, sizeof(h));
    memcpy(&r, data + sizeof(h), sizeof(r));
    if (lg->staging && data == lg->staging + SWAP_PAGE - FULL_HEAD && h.nruns >= 1 &&
        r.first == 0 && r.count == lg->npages && lg->size % SWAP_PAGE == 0 &&
        swap_in(lg, lg->staging + SWAP_PAGE)) {
        memset(lg->recv, 0xff, bitmap_bytes(lg));
        lg->nrecv = lg->npages;
        lg->swaps++;
        return;
    }
    apply_chunk(lg, data);
}

static void *lg_load_buffer(struct vfm_device *dev, void *priv, size_t len)
{
    struct large *lg = LG(priv);
    (void)dev;
    if (lg->staging && full_chunk_len(lg, len) && SWAP_PAGE - FULL_HEAD + len <= lg->staging_size)
        return lg->staging + SWAP_PAGE - FULL_HEAD;
    return lg->staging && len <= lg->staging_size ? lg->staging : NULL;
}

/*
 * The final state. After pre-copy chunks the memory already holds most of
 * the state, so this cannot be all-or-nothing over the whole memory; it is
 * all-or-nothing over its own input (checked whole before a byte is
 * applied), and then the memory checks itself: every page must have
 * arrived and the digest must be the source's. Otherwise the load fails
 * and the device stays in RESUMING (only a reset leaves it), never running
 * on a wrong state.
 */
static int lg_load(struct vfm_device *dev, void *priv, const void *data, size_t len)
{
    struct large *lg = LG(priv);
    struct trailer t;
    uint64_t digest;
    const uint8_t *pci_state;
    uint32_t pci_len;
    struct vfm_pci *pci;
    int ret = check_chunk(lg, data, len, true, &t, &pci_state, &pci_len);
    (void)dev;

    if (ret)
        return ret;
    /* what a driver programmed: the model is made when the source had one
     * and this side has none yet */
    if (pci_len && (ret = large_pci(lg, &pci)))
        return ret;
    pthread_mutex_lock(&lg->lock);
    apply_final(lg, data);
    if (lg->nrecv != lg->npages) {
        ret = -EINVAL; /* a page never came */
    } else {
        digest = t.digest ? mem_digest(lg) : 0;
        if (digest != t.digest) {
            ret = -EINVAL;
        } else {
            ret = pci_len ? vfm_pci_load(lg->pci, pci_state, pci_len) : 0;
        }
        if (!ret) {
            lg->digest_loaded = digest;
            lg->rng = t.rng;
            lg->counter = t.counter;
            lg->writes = t.writes;
            lg->result = t.result;
            lg->results = t.results;
        }
    }
    pthread_mutex_unlock(&lg->lock);
    return ret;
}

/* ---- arcs ---- */

static int set_running(struct large *lg, bool on)
{
    pthread_mutex_lock(&lg->lock);
    lg->running = on; /* the worker checks it under the lock: no write after */
    quiet(lg);        /* nor a result DMA still in flight */
    pthread_cond_signal(&lg->cond);
    pthread_mutex_unlock(&lg->lock);
    return 0;
}

static int arc_stop(struct vfm_device *dev, void *priv)
{
    (void)dev;
    return set_running(LG(priv), false);
}

static int arc_run(struct vfm_device *dev, void *priv)
{
    (void)dev;
    return set_running(LG(priv), true);
}

static int arc_nop(struct vfm_device *dev, void *priv)
{
    (void)dev;
    (void)priv;
    return 0; /* no P2P DMA to quiesce or restart */
}

static int arc_resuming(struct vfm_device *dev, void *priv)
{
    struct large *lg = LG(priv);
    (void)dev;
    pthread_mutex_lock(&lg->lock);
    memset(lg->recv, 0, bitmap_bytes(lg));
    lg->nrecv = 0;
    pthread_mutex_unlock(&lg->lock);
    return 0;
}

static int lg_reset(struct vfm_device *dev, void *priv)
{
    struct large *lg = LG(priv);
    (void)dev;
    pthread_mutex_lock(&lg->lock);
    lg->tracking = false;
    lg->ndirty = 0;
    memset(lg->dirty, 0, bitmap_bytes(lg));
    lg->nrecv = 0;
    quiet(lg);
    fill_pattern(lg);
    lg->result = lg->results = 0;
    lg->running = true;
    pthread_cond_signal(&lg->cond);
    pthread_mutex_unlock(&lg->lock);
    return 0;
}

/* Save in place: a source builds its final state in the same staging
 * buffer (a device never saves and loads at once), faulted in when the
 * device was made: no fresh memory to fault at the STOP_COPY arc. */
static void *lg_save_buffer(struct vfm_device *dev, void *priv, size_t *len)
{
    struct large *lg = LG(priv);
    (void)dev;
    *len = lg->staging_size;
    return lg->staging;
}

/* load_buffer answers NULL without a staging buffer: the runtime then
 * receives into its own */
static const struct vfm_mig_ops mig_ops = {
    .save = lg_save,
    .load = lg_load,
    .running_to_stop = arc_stop,
    .stop_to_running = arc_run,
    .stop_to_resuming = arc_resuming,
    .reset = lg_reset,
    .data_size = lg_data_size,
    .load_buffer = lg_load_buffer,
    .save_buffer = lg_save_buffer,
    .save_begin = lg_save_begin,
    .save_piece = lg_save_piece,
};

static const struct vfm_p2p_ops p2p_ops = {
    .running_to_running_p2p = arc_nop,
    .running_p2p_to_running = arc_nop,
    .running_p2p_to_stop = arc_stop,
    .stop_to_running_p2p = arc_run,
};

static const struct vfm_precopy_ops pc_ops = {
    .start = pc_start,
    .end = pc_end,
    .save_precopy = pc_save,
    .info = pc_info,
    .load_precopy = pc_load,
};

void large_reconfigure(struct large *lg)
{
    bool reinit;
    uint64_t v;

    pthread_mutex_lock(&lg->lock);
    quiet(lg);
    v = ++lg->counter; /* a new "configuration" in the first page */
    for (uint64_t off = 0; off < lg->page; off += 8)
        memcpy(lg->mem + off, &v, 8);
    lg->reconfigures++;
    reinit = lg->tracking;
    if (reinit) {
        /* the destination needs all of it again before it can run: the
         * whole memory is initial data once more */
        lg->initial_next = 0;
        memset(lg->dirty, 0, bitmap_bytes(lg));
        lg->ndirty = 0;
        lg->dirty_cursor = 0;
        lg->reinits++;
    }
    pthread_mutex_unlock(&lg->lock);
    if (reinit) /* without our lock: the runtime's is taken */
        vfm_device_precopy_reinit(lg->dev);
}

/* ---- registers ---- */

static int regs_access(void *priv, uint32_t region, uint64_t offset, void *buf, uint32_t count,
                       bool write)
{
    struct large *lg = LG(priv);
    uint64_t v = 0;

    if (region != LG_REGION_REGS || count != 8 || offset % 8)
        return -EINVAL;
    if (write && offset == LG_REG_DOORBELL) {
        pthread_mutex_lock(&lg->lock);
        if (lg->pci && vfm_pci_raise(lg->pci, 0) >= 0)
            lg->irqs++;
        pthread_mutex_unlock(&lg->lock);
        return 0;
    }
    if (write && offset == LG_REG_RECONFIGURE) {
        large_reconfigure(lg);
        return 0;
    }
    if (write && offset == LG_REG_RESULT) {
        memcpy(&v, buf, 8);
        if (v % 8)
            return -EINVAL;
        pthread_mutex_lock(&lg->lock);
        lg->result = v;
        pthread_mutex_unlock(&lg->lock);
        return 0;
    }
    if (write) {
        if (offset != LG_REG_RATE)
            return -EACCES;
        memcpy(&v, buf, 8);
        pthread_mutex_lock(&lg->lock);
        lg->rate = v;
        pthread_cond_signal(&lg->cond);
        pthread_mutex_unlock(&lg->lock);
        return 0;
    }
    pthread_mutex_lock(&lg->lock);
    switch (offset) {
    case LG_REG_MAGIC:
        v = LG_COMPAT;
        break;
    case LG_REG_SIZE:
        v = lg->size;
        break;
    case LG_REG_PAGE:
        v = lg->page;
        break;
    case LG_REG_RATE:
        v = lg->rate;
        break;
    case LG_REG_WRITES:
        v = lg->writes;
        break;
    case LG_REG_DIGEST_SAVED:
        v = lg->digest_saved;
        break;
    case LG_REG_DIGEST_LOADED:
        v = lg->digest_loaded;
        break;
    case LG_REG_DIGEST_NOW:
        v = mem_digest(lg);
        break;
    case LG_REG_PRECOPY_BYTES:
        v = lg->precopy_bytes;
        break;
    case LG_REG_FINAL_BYTES:
        v = lg->final_bytes;
        break;
    case LG_REG_IRQS:
        v = lg->irqs;
        break;
    case LG_REG_RESULT:
        v = lg->result;
        break;
    case LG_REG_RESULTS:
        v = lg->results;
        break;
    case LG_REG_RECONFIGURES:
        v = lg->reconfigures | (uint64_t)lg->reinits << 32;
        break;
    case LG_REG_SWAPS:
        v = lg->swaps;
        break;
    default:
        v = 0;
    }
    pthread_mutex_unlock(&lg->lock);
    memcpy(buf, &v, 8);
    return 0;
}

void large_server_regions(struct large *lg, struct vfm_server_config *cfg)
{
    cfg->regions[LG_REGION_REGS] = (struct vfm_server_region){
        .size = LG_REGS_SIZE,
        .flags = VFM_VU_REGION_READ_FLAG | VFM_VU_REGION_WRITE_FLAG,
        .fd = -1,
        .access = regs_access,
    };
    cfg->nregions = 1;
    cfg->priv = lg;
}

/* ---- life ---- */

int large_new(const struct large_config *cfg, struct large **out)
{
    struct large *lg;
    struct vfm_device_config dc = {
        .version = VFM_DEVICE_CONFIG_VERSION,
        .name = cfg->name,
        .compat = LG_COMPAT,
        .mig = &mig_ops,
        .p2p = cfg->p2p ? &p2p_ops : NULL,
        .precopy = &pc_ops,
        /* its DMA goes through the table: the table keeps the dirty log */
        .dma_log = cfg->dma ? vfm_dma_log_ops() : NULL,
        .dma_log_ctx = cfg->dma,
        /* its large pieces are runs of its memory, kept until large_free()
         * (the headers and the tail, smaller, are copied): a data fd may
         * take them by reference */
        .pieces_by_reference = true,
    };
    int ret;

    if (cfg->page < 512 || cfg->page > (2u << 20) || (cfg->page & (cfg->page - 1)) ||
        cfg->size < cfg->page || cfg->size % cfg->page || cfg->size > (1ull << 30))
        return -EINVAL;
    lg = calloc(1, sizeof(*lg));
    if (!lg)
        return -ENOMEM;
    lg->size = cfg->size;
    lg->page = cfg->page;
    lg->npages = cfg->size / cfg->page;
    lg->seed = cfg->seed;
    lg->no_verify = cfg->no_verify;
    lg->save_copy = cfg->save_copy;
    lg->rate = cfg->dirty_rate;
    lg->dma = cfg->dma;
    lg->rng = 0x2545F4914F6CDD1Dull ^ cfg->seed;
    lg->running = true;
    lg->mem = map_aligned((size_t)lg->size, PROT_READ | PROT_WRITE);
    lg->dirty = calloc(1, bitmap_bytes(lg));
    lg->recv = calloc(1, bitmap_bytes(lg));
    if (!lg->mem || !lg->dirty || !lg->recv) {
        ret = -ENOMEM;
        goto err;
    }
    madvise(lg->mem, (size_t)lg->size, MADV_HUGEPAGE);
    fill_pattern(lg);
    if (cfg->load_in_place) {
        /* the biggest final state: every page in one run, and framing */
        lg->staging_size = (size_t)lg->size + sizeof(struct chunk_hdr) +
                           sizeof(struct run) * (lg->npages + 1) + sizeof(struct trailer) +
                           sizeof(struct pci_tail) + PCI_STATE_MAX + SWAP_PAGE;
        lg->staging = map_aligned(lg->staging_size, PROT_READ | PROT_WRITE);
        if (!lg->staging) {
            ret = -ENOMEM;
            goto err;
        }
        madvise(lg->staging, lg->staging_size, MADV_HUGEPAGE);
        memset(lg->staging, 0, lg->staging_size); /* faulted in now, not per load */
    }
    pthread_mutex_init(&lg->lock, NULL);
    pthread_cond_init(&lg->cond, NULL);
    pthread_cond_init(&lg->idle, NULL);
    /* the state stream carries the whole memory and a little framing */
    dc.max_state_size = lg->size + lg->size / 64 + 4096;
    dc.priv = lg;
    ret = vfm_device_new(&dc, &lg->dev);
    if (ret)
        goto err_sync;
    ret = -pthread_create(&lg->worker, NULL, worker_main, lg);
    if (ret)
        goto err_dev;
    *out = lg;
    return 0;

err_dev:
    vfm_device_free(lg->dev);
err_sync:
    pthread_cond_destroy(&lg->cond);
    pthread_cond_destroy(&lg->idle);
    pthread_mutex_destroy(&lg->lock);
err:
    if (lg->staging)
        munmap(lg->staging, lg->staging_size);
    if (lg->mem)
        munmap(lg->mem, (size_t)lg->size);
    free(lg->dirty);
    free(lg->recv);
    free(lg);
    return ret;
}

void large_free(struct large *lg)
{
    if (!lg)
        return;
    pthread_mutex_lock(&lg->lock);
    lg->quit = true;
    pthread_cond_signal(&lg->cond);
    pthread_mutex_unlock(&lg->lock);
    pthread_join(lg->worker, NULL);
    vfm_pci_free(lg->pci);
    vfm_device_free(lg->dev);
    pthread_cond_destroy(&lg->cond);
    pthread_cond_destroy(&lg->idle);
    pthread_mutex_destroy(&lg->lock);
    munmap(lg->mem, (size_t)lg->size);
    if (lg->staging)
        munmap(lg->staging, lg->staging_size);
    free(lg->dirty);
    free(lg->recv);
    saving_free(lg->sv);
    free(lg);
}

struct vfm_device *large_device(struct large *lg)
{
    return lg->dev;
}

void large_set_rate(struct large *lg, uint64_t rate)
{
    pthread_mutex_lock(&lg->lock);
    lg->rate = rate;
    pthread_cond_signal(&lg->cond);
    pthread_mutex_unlock(&lg->lock);
}

uint64_t large_digest(struct large *lg)
{
    uint64_t d;
    pthread_mutex_lock(&lg->lock);
    d = mem_digest(lg);
    pthread_mutex_unlock(&lg->lock);
    return d;
}

uint64_t large_swaps(struct large *lg)
{
    uint64_t n;
    pthread_mutex_lock(&lg->lock);
    n = lg->swaps;
    pthread_mutex_unlock(&lg->lock);
    return n;
}

int large_pci(struct large *lg, struct vfm_pci **out)
{
    struct vfm_pci_config c = {
        .version = VFM_PCI_CONFIG_VERSION,
        .ids = {.vendor = VFM_PCI_VENDOR_EXPERIMENTAL,
                .device = LG_PCI_DEVICE,
                .class_code = LG_PCI_CLASS},
        .intx = true,
        .msix = {.vectors = 1,
                 .table_bar = LG_REGION_MSIX,
                 .table_offset = 0,
                 .pba_bar = LG_REGION_MSIX,
                 .pba_offset = 0x800},
        .priv = lg,
    };
    struct vfm_pci *pci;
    int ret;

    pthread_mutex_lock(&lg->lock);
    pci = lg->pci;
    pthread_mutex_unlock(&lg->lock);
    if (!pci) {
        c.bars[LG_REGION_REGS] = (struct vfm_pci_bar){
            .type = VFM_PCI_BAR_MEM32, .size = LG_REGS_SIZE, .fd = -1, .access = regs_access};
        c.bars[LG_REGION_MSIX] = (struct vfm_pci_bar){
            .type = VFM_PCI_BAR_MEM32, .size = sizeof(lg->msix_bar), .fd = -1, .mem = lg->msix_bar};
        for (unsigned i = LG_REGION_MSIX + 1; i < VFM_PCI_NUM_BARS; i++)
            c.bars[i].fd = -1;
        if ((ret = vfm_pci_new(&c, lg->dev, &pci)))
            return ret;
        pthread_mutex_lock(&lg->lock); /* the doorbell reads lg->pci under it */
        lg->pci = pci;
        pthread_mutex_unlock(&lg->lock);
    }
    *out = pci;
    return 0;
}
