/* SPDX-License-Identifier: MIT */
/*
 * DMA dirty logging (VFIO_DEVICE_FEATURE_DMA_LOGGING_*): a device whose
 * log is its DMA table (vfm_dma_log_ops()), driven through
 * vfm_device_feature() as every transport drives it. Known writes are
 * reported dirty, untouched pages clean, a report clears what it returns;
 * the kernel core's checks on START and REPORT; reports at coarser and
 * finer sizes than the one kept; writes racing reports are never lost.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include <vfiomig/vfio_user.h>

#define BASE 0x100000ull
#define SIZE (64u * 4096u)
#define PG 4096u

static int nop(struct vfm_device *d, void *p)
{
    (void)d;
    (void)p;
    return 0;
}

static int save(struct vfm_device *d, void *p, struct vfm_buf *out)
{
    (void)d;
    (void)p;
    return vfm_buf_append(out, "x", 1);
}

static int load(struct vfm_device *d, void *p, const void *data, size_t len)
{
    (void)d;
    (void)p;
    (void)data;
    return len == 1 ? 0 : -EINVAL;
}

static const struct vfm_mig_ops ops = {
    .save = save, .load = load, .running_to_stop = nop, .stop_to_running = nop, .reset = nop};

struct fx {
    struct vfm_dma *dma;
    struct vfm_device *dev;
    int mfd;
};

static int setup(void **state)
{
    static struct fx f;
    struct vfm_device_config c = {.version = VFM_DEVICE_CONFIG_VERSION, .name = "logdev",
                                  .compat = 1, .mig = &ops};

    f.mfd = memfd_create("dmalog", MFD_CLOEXEC);
    if (f.mfd < 0 || ftruncate(f.mfd, SIZE) || vfm_dma_new(8, &f.dma) ||
        vfm_dma_map(f.dma, BASE, SIZE, f.mfd, 0, VFM_VU_DMA_READ_FLAG | VFM_VU_DMA_WRITE_FLAG))
        return -1;
    c.dma_log = vfm_dma_log_ops();
    c.dma_log_ctx = f.dma;
    if (vfm_device_new(&c, &f.dev))
        return -1;
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    vfm_device_free(f->dev);
    vfm_dma_free(f->dma);
    close(f->mfd);
    return 0;
}

#define SET (VFM_FEATURE_SET)
#define GET (VFM_FEATURE_GET)

/* START with @n ranges at @page; *@kept the page size the log keeps. */
static int start(struct fx *f, uint64_t page, const struct vfm_dma_range *r, uint32_t n,
                 uint64_t *kept)
{
    uint8_t in[24 + 300 * 16], out[sizeof(in)];
    uint64_t ctl[3] = {page, n, 0};
    size_t len = 24 + (size_t)n * 16, got = 0;
    int ret;

    memcpy(in, ctl, 24);
    memcpy(in + 24, r, (size_t)n * 16);
    ret = vfm_device_feature(f->dev, SET | VFM_FEATURE_DMA_LOGGING_START, (uint32_t)(8 + len), in,
                             len, out, sizeof(out), &got);
    if (!ret) {
        assert_int_equal(got, len); /* the request back, with the page size kept */
        assert_memory_equal(out + 8, in + 8, len - 8);
        if (kept)
            memcpy(kept, out, 8);
    }
    return ret;
}

static int stop(struct fx *f)
{
    size_t got;
    return vfm_device_feature(f->dev, SET | VFM_FEATURE_DMA_LOGGING_STOP, 8, NULL, 0, NULL, 0,
                              &got);
}

/* REPORT of [iova, iova+len) at @page into @bm (@words u64s). */
static int report(struct fx *f, uint64_t iova, uint64_t len, uint64_t page, uint64_t *bm,
                  size_t words)
{
    uint64_t q[3] = {iova, len, page};
    size_t got = 0;
    int ret;

    memset(bm, 0xa5, words * 8); /* the runtime gives a zeroed bitmap back, not ours */
    ret = vfm_device_feature(f->dev, GET | VFM_FEATURE_DMA_LOGGING_REPORT, 8 + 24, q, 24, bm,
                             words * 8, &got);
    if (!ret)
        assert_int_equal(got, ((len / page + (len % page ? 1 : 0)) + 63) / 64 * 8);
    return ret;
}

static void dirty(struct fx *f, uint64_t off, uint64_t len)
{
    uint8_t b[3 * PG];
    memset(b, 0x5a, sizeof(b));
    assert_true(len <= sizeof(b));
    assert_int_equal(vfm_dma_write(f->dma, BASE + off, b, len), 0);
}

static void test_rules(void **state)
{
    struct fx *f = *state;
    struct vfm_dma_range r[300], whole = {BASE, SIZE};
    uint64_t bm[1], kept;
    size_t got;

    /* nothing started */
    assert_int_equal(report(f, BASE, SIZE, PG, bm, 1), -EINVAL);
    assert_int_equal(stop(f), -EINVAL);
    /* PROBE: supported; GET of START, SET of REPORT: not */
    assert_int_equal(vfm_device_feature(f->dev, VFM_FEATURE_PROBE | SET |
                                                    VFM_FEATURE_DMA_LOGGING_START,
                                        8, NULL, 0, NULL, 0, &got),
                     0);
    assert_int_equal(vfm_device_feature(f->dev, GET | VFM_FEATURE_DMA_LOGGING_START, 64, NULL, 0,
                                        NULL, 0, &got),
                     -EINVAL);
    assert_int_equal(vfm_device_feature(f->dev, SET | VFM_FEATURE_DMA_LOGGING_REPORT, 64, NULL, 0,
                                        NULL, 0, &got),
                     -EINVAL);
    /* START's checks */
    assert_int_equal(start(f, PG, r, 0, NULL), -EINVAL);
    for (int i = 0; i < 300; i++)
        r[i] = (struct vfm_dma_range){BASE + (uint64_t)i * PG, PG};
    assert_int_equal(start(f, PG, r, VFM_DMA_LOG_MAX_RANGES + 1, NULL), -E2BIG);
    r[0] = (struct vfm_dma_range){BASE + 1, PG};
    assert_int_equal(start(f, PG, r, 1, NULL), -EINVAL); /* not aligned */
    r[0] = (struct vfm_dma_range){BASE, 0};
    assert_int_equal(start(f, PG, r, 1, NULL), -EINVAL); /* empty */
    r[0] = (struct vfm_dma_range){BASE, 2 * PG};
    r[1] = (struct vfm_dma_range){BASE + PG, PG};
    assert_int_equal(start(f, PG, r, 2, NULL), -EINVAL); /* overlapping */
    r[0] = (struct vfm_dma_range){~0ull - PG + 1, 2 * PG};
    assert_int_equal(start(f, PG, r, 1, NULL), -EOVERFLOW);
    assert_int_equal(start(f, 3000, &whole, 1, NULL), -EINVAL); /* not a power of two */
    /* started once, not twice */
    assert_int_equal(start(f, PG, &whole, 1, &kept), 0);
    assert_int_equal(kept, PG);
    assert_int_equal(start(f, PG, &whole, 1, NULL), -EBUSY);
    /* REPORT's checks */
    assert_int_equal(report(f, BASE, SIZE, 2048, bm, 1), -EINVAL);
    assert_int_equal(report(f, BASE, SIZE, 3 * PG, bm, 1), -EINVAL);
    assert_int_equal(report(f, ~0ull - PG + 1, 2 * PG, PG, bm, 1), -EOVERFLOW);
    assert_int_equal(report(f, BASE + SIZE, PG, PG, bm, 1), -EINVAL); /* not logged */
    assert_int_equal(report(f, BASE, SIZE, PG, bm, 0), -E2BIG);        /* no room */
    assert_int_equal(stop(f), 0);
    assert_int_equal(report(f, BASE, SIZE, PG, bm, 1), -EINVAL);
}

static void test_known_writes(void **state)
{
    struct fx *f = *state;
    struct vfm_dma_range whole = {BASE, SIZE};
    uint64_t bm[1], kept;
    uint8_t rd[16];
    void *p;

    assert_int_equal(start(f, PG, &whole, 1, &kept), 0);
    assert_int_equal(report(f, BASE, SIZE, PG, bm, 1), 0);
    assert_int_equal(bm[0], 0); /* nothing written yet */
    dirty(f, 3 * PG + 10, 8);
    assert_int_equal(report(f, BASE, SIZE, PG, bm, 1), 0);
    assert_int_equal(bm[0], 1ull << 3);
    assert_int_equal(report(f, BASE, SIZE, PG, bm, 1), 0);
    assert_int_equal(bm[0], 0); /* a report clears what it returns */
    /* across a page boundary; reported at 8 KiB */
    dirty(f, 5 * PG + PG - 4, 8);
    assert_int_equal(report(f, BASE, SIZE, 2 * PG, bm, 1), 0);
    assert_int_equal(bm[0], (1ull << 2) | (1ull << 3));
    /* a report of part of the range clears only that part */
    dirty(f, 1 * PG, 8);
    dirty(f, 9 * PG, 8);
    assert_int_equal(report(f, BASE + 8 * PG, 4 * PG, PG, bm, 1), 0);
    assert_int_equal(bm[0], 1ull << 1); /* page 9 is bit 1 of this report */
    assert_int_equal(report(f, BASE, SIZE, PG, bm, 1), 0);
    assert_int_equal(bm[0], 1ull << 1); /* page 1 stayed dirty; page 9 was reported */
    /* reads and read-only holds mark nothing; a hold for writing marks its range */
    assert_int_equal(vfm_dma_read(f->dma, BASE + 20 * PG, rd, sizeof(rd)), 0);
    p = vfm_dma_get(f->dma, BASE + 21 * PG, 16, VFM_VU_DMA_READ_FLAG);
    assert_non_null(p);
    vfm_dma_put(f->dma);
    p = vfm_dma_get(f->dma, BASE + 22 * PG, 2 * PG, VFM_VU_DMA_WRITE_FLAG);
    assert_non_null(p);
    vfm_dma_put(f->dma);
    assert_int_equal(report(f, BASE, SIZE, PG, bm, 1), 0);
    assert_int_equal(bm[0], (1ull << 22) | (1ull << 23));
    assert_int_equal(stop(f), 0);

    /* kept at 8 KiB (the hint), reported at 4 KiB: both halves of a unit */
    assert_int_equal(start(f, 2 * PG, &whole, 1, &kept), 0);
    assert_int_equal(kept, 2 * PG);
    dirty(f, 4 * PG, 8);
    assert_int_equal(report(f, BASE, SIZE, PG, bm, 1), 0);
    assert_int_equal(bm[0], (1ull << 4) | (1ull << 5));
    /* half a kept unit reported: not cleared (reported again, never lost) */
    dirty(f, 6 * PG, 8);
    assert_int_equal(report(f, BASE + 6 * PG, PG, PG, bm, 1), 0);
    assert_int_equal(bm[0], 1);
    assert_int_equal(report(f, BASE, SIZE, PG, bm, 1), 0);
    assert_int_equal(bm[0], (1ull << 6) | (1ull << 7));
    assert_int_equal(stop(f), 0);
}

/* A writer writes each page once, in a shuffled order, while a reporter
 * reports without pause: a write that lands while its page is being
 * reported must be in that report or the next, so the union of all the
 * reports is every page (a lost write is a page missing, never written
 * again). */
struct race {
    struct fx *f;
    volatile int done;
};

static void *writer(void *arg)
{
    struct race *r = arg;
    unsigned order[64];
    uint64_t x = 0x9e3779b97f4a7c15ull;

    for (unsigned i = 0; i < 64; i++)
        order[i] = i;
    for (unsigned i = 63; i > 0; i--) { /* shuffled */
        unsigned j, t;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        j = (unsigned)(x % (i + 1));
        t = order[i], order[i] = order[j], order[j] = t;
    }
    for (unsigned i = 0; i < 64; i++) {
        assert_int_equal(vfm_dma_write(r->f->dma, BASE + (uint64_t)order[i] * PG, &x, 8), 0);
        usleep(200);
    }
    r->done = 1;
    return NULL;
}

static void test_racing_writes(void **state)
{
    struct race r = {.f = *state};
    struct vfm_dma_range whole = {BASE, SIZE};
    uint64_t bm[1], seen = 0;
    unsigned reports = 0;
    pthread_t t;

    assert_int_equal(start(r.f, PG, &whole, 1, NULL), 0);
    assert_int_equal(pthread_create(&t, NULL, writer, &r), 0);
    while (!r.done) {
        assert_int_equal(report(r.f, BASE, SIZE, PG, bm, 1), 0);
        assert_int_equal(seen & bm[0], 0); /* each page written once: reported once */
        seen |= bm[0];
        reports++;
    }
    pthread_join(t, NULL);
    assert_int_equal(report(r.f, BASE, SIZE, PG, bm, 1), 0);
    seen |= bm[0];
    assert_int_equal(seen, ~0ull);
    assert_true(reports > 64);
    assert_int_equal(stop(r.f), 0);
}

/* A device with no log: the feature is not there. */
static void test_no_log(void **state)
{
    struct vfm_device_config c = {.version = 1, .name = "nolog", .compat = 1, .mig = &ops};
    struct vfm_device *d;
    size_t got;
    (void)state;

    assert_int_equal(vfm_device_new(&c, &d), 0); /* a version 1 config */
    assert_int_equal(vfm_device_feature(d, VFM_FEATURE_PROBE | SET | VFM_FEATURE_DMA_LOGGING_START,
                                        8, NULL, 0, NULL, 0, &got),
                     -ENOTTY);
    vfm_device_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_known_writes),
        cmocka_unit_test(test_racing_writes),
        cmocka_unit_test(test_no_log),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
