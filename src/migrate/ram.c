/* SPDX-License-Identifier: MIT */
/*
 * Guest RAM (migrate.h, "Guest RAM"): the sender's passes over the VM's
 * memory, driven by the devices' DMA dirty logs, and the receiver's side.
 *
 * One bitmap covers every range's pages, in the config's order. A sync
 * ORs into it what each logging source reports (which clears the device's
 * log); a pass sends the pages it holds and clears them. A source without
 * a usable log sets every bit at every sync.
 *
 * Threading: the sender's RAM work runs on the calling thread only (its
 * records go through mig_put_record(), beside the device workers'); the
 * receiver's on its reading thread.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/fsm.h>

#include "../common/hash.h"
#include "mig.h"

_Static_assert(VFM_MIG_RAM_PAGE == VFM_MS_RAM_PAGE && VFM_MIG_MAX_RAM == VFM_MS_MAX_RAM,
               "the stream's RAM is migrate.h's");

/* A report asks for at most this much at once (a 32 KiB bitmap: well
 * inside a vfio-user reply). */
#define REPORT_SPAN (1ull << 30)

struct mig_ram {
    unsigned n;
    struct vfm_ms_ram_range r[VFM_MIG_MAX_RAM];
    uint8_t *base[VFM_MIG_MAX_RAM];
    uint64_t first[VFM_MIG_MAX_RAM]; /* range i's first page in the bitmap */
    uint64_t pages;
    uint64_t *dirty; /* pages to send */
    uint64_t *tmp;   /* one report's bitmap */
    uint8_t *buf;    /* one record's payload: an iova, then pages */
    bool logged[VFM_MIG_MAX_DEVICES];
    bool all_dirty;  /* a source keeps no usable log */
    bool untracked;  /* cfg->ram_untracked */
    bool first_done; /* the first pass was sent */
};

unsigned mig_nram(const struct vfm_mig_config *cfg)
{
    return cfg && cfg->version >= 3 && cfg->ram ? cfg->nram : 0;
}

/* The config's ranges as the stream's. Return: 0 or -EINVAL. */
static int ranges(const struct vfm_mig_config *cfg, struct vfm_ms_ram_range *r)
{
    unsigned n = mig_nram(cfg);

    if (n > VFM_MIG_MAX_RAM)
        return -EINVAL;
    for (unsigned i = 0; i < n; i++) {
        if (!cfg->ram[i].base)
            return -EINVAL;
        r[i].iova = cfg->ram[i].iova;
        r[i].size = cfg->ram[i].size;
    }
    return vfm_ms_ram_valid(r, n);
}

int mig_ram_check(const struct vfm_mig_config *cfg)
{
    struct vfm_ms_ram_range r[VFM_MIG_MAX_RAM];

    if (cfg->version >= 3 && cfg->nram && !cfg->ram)
        return -EINVAL;
    return ranges(cfg, r);
}

static void ram_free(struct mig_ram *g)
{
    if (!g)
        return;
    free(g->dirty);
    free(g->tmp);
    free(g->buf);
    free(g);
}

/* The side's RAM, set up. Return: 0 (m->ram NULL when there is none), or -errno. */
static int ram_new(struct mig *m)
{
    struct mig_ram *g;
    unsigned n = mig_nram(m->cfg);

    if (!n)
        return 0;
    g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    g->n = n;
    if (ranges(m->cfg, g->r)) {
        free(g);
        return -EINVAL;
    }
    for (unsigned i = 0; i < n; i++) {
        g->base[i] = m->cfg->ram[i].base;
        g->first[i] = g->pages;
        g->pages += g->r[i].size / VFM_MIG_RAM_PAGE;
    }
    g->untracked = m->cfg->ram_untracked;
    m->ram = g;
    return 0;
}

/* The digest of all the RAM, range by range. */
static int digest(const struct mig_ram *g, uint64_t *out)
{
    struct vfm_xxh3_stream *s = vfm_xxh3_stream_new();

    if (!s)
        return -ENOMEM;
    for (unsigned i = 0; i < g->n; i++)
        vfm_xxh3_stream_update(s, g->base[i], (size_t)g->r[i].size);
    *out = vfm_xxh3_stream_digest(s);
    vfm_xxh3_stream_free(s);
    return 0;
}

/* ---- the sender ---- */

static void set_all(struct mig_ram *g)
{
    memset(g->dirty, 0xff, (size_t)((g->pages + 63) / 64) * 8);
    if (g->pages % 64)
        g->dirty[g->pages / 64] = (1ull << (g->pages % 64)) - 1;
}

/* A source's log is of no more use (@why): from now on every page is dirty
 * at every sync. */
static void log_lost(struct mig *m, unsigned i, const char *what, int err)
{
    struct mig_ram *g = m->ram;

    g->logged[i] = false;
    if (!g->all_dirty)
        mig_note(m,
                 "source %s keeps no DMA dirty log of the guest RAM (%s: %s): every page counts "
                 "as dirty at every sync, so all %llu MiB move in the downtime",
                 vfm_ep_name(m->cfg->src[i]), what, vfm_err_name(err),
                 (unsigned long long)(g->pages * VFM_MIG_RAM_PAGE >> 20));
    g->all_dirty = true;
}

int mig_ram_begin(struct mig *m)
{
    struct vfm_dma_range dr[VFM_MIG_MAX_RAM];
    struct mig_ram *g;
    int ret = ram_new(m);

    if (ret || !(g = m->ram))
        return ret;
    g->dirty = calloc((size_t)(g->pages + 63) / 64, 8);
    g->tmp = malloc((size_t)(REPORT_SPAN / VFM_MIG_RAM_PAGE / 8));
    g->buf = malloc(8 + (size_t)VFM_MS_RAM_MAX_PAGES * VFM_MIG_RAM_PAGE);
    if (!g->dirty || !g->tmp || !g->buf) {
        mig_fail(m, -ENOMEM, "no memory for the guest RAM's dirty bitmap (%llu pages)",
                 (unsigned long long)g->pages);
        return -ENOMEM;
    }
    ret = mig_put_record(m, VFM_MS_RAM_LIST, 0, g->r, g->n * sizeof(g->r[0]));
    if (ret) {
        mig_fail(m, ret, "the migration stream failed: %s", vfm_strerror(ret));
        return ret;
    }
    pthread_mutex_lock(m->lock);
    m->total_est += g->pages * VFM_MIG_RAM_PAGE;
    pthread_mutex_unlock(m->lock);
    if (g->untracked) {
        mig_note(m, "guest RAM: no device dirty log asked for (untracked): each page is sent "
                    "once while the VM runs, and what the devices write after is not sent");
        return 0;
    }
    for (unsigned k = 0; k < g->n; k++)
        dr[k] = (struct vfm_dma_range){.iova = g->r[k].iova, .length = g->r[k].size};
    /* the logs start before the first page is read: a write after that
     * read is in a report */
    for (unsigned i = 0; i < m->cfg->ndev; i++) {
        uint64_t ps = VFM_MIG_RAM_PAGE;
        int r = vfm_ep_dma_log_start(m->cfg->src[i], dr, g->n, &ps);
        if (r)
            log_lost(m, i, "DMA_LOGGING_START", r);
        else
            g->logged[i] = true;
    }
    return 0;
}

/* Adds what every logging source reports to the bitmap (or every page).
 * Return: pages set now that were not. */
static uint64_t sync(struct mig *m)
{
    struct mig_ram *g = m->ram;
    uint64_t before = 0, after = 0, words = (g->pages + 63) / 64;

    for (uint64_t w = 0; w < words; w++)
        before += (uint64_t)__builtin_popcountll(g->dirty[w]);
    for (unsigned i = 0; i < m->cfg->ndev && !g->all_dirty; i++) {
        if (!g->logged[i])
            continue;
        for (unsigned k = 0; k < g->n && g->logged[i]; k++) {
            for (uint64_t off = 0; off < g->r[k].size; off += REPORT_SPAN) {
                uint64_t len = g->r[k].size - off < REPORT_SPAN ? g->r[k].size - off : REPORT_SPAN;
                uint64_t np = len / VFM_MIG_RAM_PAGE, p0 = g->first[k] + off / VFM_MIG_RAM_PAGE;
                int r = vfm_ep_dma_log_report(m->cfg->src[i], g->r[k].iova + off, len,
                                              VFM_MIG_RAM_PAGE, g->tmp);
                if (r) {
                    log_lost(m, i, "DMA_LOGGING_REPORT", r);
                    break;
                }
                for (uint64_t p = 0; p < np; p++)
                    if (g->tmp[p / 64] >> (p % 64) & 1)
                        g->dirty[(p0 + p) / 64] |= 1ull << ((p0 + p) % 64);
            }
        }
    }
    if (g->all_dirty)
        set_all(g);
    for (uint64_t w = 0; w < words; w++)
        after += (uint64_t)__builtin_popcountll(g->dirty[w]);
    return after - before;
}

/* Sends the pages the bitmap holds, clearing them. *@pages: how many.
 * Return: 0 or -errno (reported). */
static int send_dirty(struct mig *m, bool precopy, uint64_t *pages)
{
    struct mig_ram *g = m->ram;
    int ret = 0;

    *pages = 0;
    for (unsigned k = 0; k < g->n && !ret; k++) {
        uint64_t np = g->r[k].size / VFM_MIG_RAM_PAGE;
        for (uint64_t p = 0; p < np && !ret;) {
            uint64_t b = g->first[k] + p, run = 0, iova;
            if (!(g->dirty[b / 64] >> (b % 64) & 1)) {
                p++;
                continue;
            }
            /* a run of dirty pages in this range, at most a record's */
            while (p + run < np && run < VFM_MS_RAM_MAX_PAGES &&
                   (g->dirty[(b + run) / 64] >> ((b + run) % 64) & 1)) {
                g->dirty[(b + run) / 64] &= ~(1ull << ((b + run) % 64));
                run++;
            }
            iova = g->r[k].iova + p * VFM_MIG_RAM_PAGE;
            memcpy(g->buf, &iova, 8);
            memcpy(g->buf + 8, g->base[k] + p * VFM_MIG_RAM_PAGE, run * VFM_MIG_RAM_PAGE);
            if (mig_failed(m))
                return -ECANCELED;
            ret = mig_put_record(m, VFM_MS_RAM, 0, g->buf, 8 + run * VFM_MIG_RAM_PAGE);
            if (ret == -ETIME)
                mig_fail(m, ret,
                         "the downtime passed %u ms (--max-downtime) while sending the guest "
                         "RAM: the migration was aborted",
                         m->cfg->max_downtime_ms);
            else if (ret)
                mig_fail(m, ret, "the migration stream failed while sending the guest RAM: %s",
                         vfm_strerror(ret));
            if (ret)
                return ret;
            *pages += run;
            pthread_mutex_lock(m->lock);
            m->rep->ram_bytes += run * VFM_MIG_RAM_PAGE;
            if (precopy) {
                m->rep->ram_precopy_bytes += run * VFM_MIG_RAM_PAGE;
                m->rep->ram_precopy_pages += run;
                m->round_ram_bytes += run * VFM_MIG_RAM_PAGE;
            } else {
                m->rep->ram_downtime_pages += run;
            }
            pthread_mutex_unlock(m->lock);
            p += run;
        }
    }
    return ret;
}

int mig_ram_round(struct mig *m, uint64_t *est, bool *more)
{
    struct mig_ram *g = m->ram;
    uint64_t sent, found;
    int ret;

    *est = 0;
    *more = false;
    if (!g->first_done) {
        set_all(g);
        g->first_done = true;
    } else if (g->all_dirty || g->untracked) {
        /* nothing a round can improve: the RAM waits for the downtime */
        *est = g->all_dirty ? g->pages * VFM_MIG_RAM_PAGE : 0;
        return 0;
    }
    if ((ret = send_dirty(m, true, &sent)))
        return ret;
    if (g->untracked)
        return 0; /* what the VMM believes: nothing left */
    /* what the devices wrote while this pass ran: the next pass's pages,
     * and the estimate of what the downtime would move */
    found = sync(m);
    *est = found * VFM_MIG_RAM_PAGE;
    *more = !g->all_dirty && found > 0;
    vfm_log(LOG_INFO, "guest RAM pass: %llu pages sent, %llu dirtied meanwhile",
            (unsigned long long)sent, (unsigned long long)found);
    return 0;
}

int mig_ram_end(struct mig *m)
{
    struct mig_ram *g = m->ram;
    struct vfm_ms_ram_end e = {.flags = g->untracked ? VFM_MS_RAM_UNTRACKED : 0};
    uint64_t sent;
    int ret;

    if (!g->first_done)
        set_all(g); /* no pre-copy ran (a source migrated stopped...): all of it now */
    if (!g->untracked)
        sync(m); /* every source is stopped: nothing is written after this */
    if ((ret = send_dirty(m, false, &sent)))
        return ret;
    mig_ram_release(m);
    if ((ret = digest(g, &e.digest))) {
        mig_fail(m, ret, "no memory for the guest RAM's digest");
        return ret;
    }
    m->rep->ram_digest = e.digest;
    ret = mig_put_record(m, VFM_MS_RAM_END, 0, &e, sizeof(e));
    if (ret)
        mig_fail(m, ret, "the migration stream failed after the guest RAM: %s", vfm_strerror(ret));
    return ret;
}

void mig_ram_release(struct mig *m)
{
    struct mig_ram *g = m->ram;
    unsigned logged = 0;

    if (!g)
        return;
    for (unsigned i = 0; i < m->cfg->ndev; i++) {
        if (!g->logged[i])
            continue;
        logged++;
        g->logged[i] = false;
        if (vfm_ep_dma_log_stop(m->cfg->src[i]))
            vfm_log(LOG_WARNING, "source %s: stopping its DMA dirty log failed",
                    vfm_ep_name(m->cfg->src[i]));
    }
    if (logged)
        m->rep->ram_logged = logged;
}

void mig_ram_free(struct mig *m)
{
    mig_ram_release(m);
    ram_free(m->ram);
    m->ram = NULL;
}

/* ---- the receiver ---- */

int mig_ram_expect(struct mig *m, struct vfm_ms_dec *d)
{
    /* made once: each of many streams' decoders is told of the same RAM */
    int ret = m->ram ? 0 : ram_new(m);

    if (ret || !m->ram)
        return ret;
    return vfm_ms_dec_expect_ram(d, m->ram->r, m->ram->n);
}

int mig_ram_take(struct mig *m, const struct vfm_ms_event *ev)
{
    struct mig_ram *g = m->ram;
    uint64_t mine;
    int ret;

    if (ev->kind == VFM_MS_EV_RAM) {
        /* the decoder checked it lies inside one range */
        for (unsigned k = 0; k < g->n; k++)
            if (ev->iova >= g->r[k].iova && ev->iova - g->r[k].iova < g->r[k].size) {
                memcpy(g->base[k] + (ev->iova - g->r[k].iova), ev->data, ev->len);
                break;
            }
        pthread_mutex_lock(m->lock);
        m->rep->ram_bytes += ev->len;
        pthread_mutex_unlock(m->lock);
        return 0;
    }
    if ((ret = digest(g, &mine))) {
        mig_fail(m, ret, "no memory for the guest RAM's digest");
        return ret;
    }
    m->rep->ram_digest = mine;
    m->rep->ram_match = mine == ev->total;
    if (m->rep->ram_match)
        return 0;
    if (ev->ram_flags & VFM_MS_RAM_UNTRACKED) {
        mig_note(m,
                 "guest RAM differs from the source's at its stop (digest %016llx here, %016llx "
                 "there): the source tracked no device writes",
                 (unsigned long long)mine, (unsigned long long)ev->total);
        return 0;
    }
    mig_fail(m, -EIO,
             "guest RAM differs from the source's at its stop after every page arrived (digest "
             "%016llx here, %016llx there): no destination is loaded",
             (unsigned long long)mine, (unsigned long long)ev->total);
    return -EIO;
}
