/* SPDX-License-Identifier: MIT */
/*
 * Guest RAM through the migration engine (migrate.h, "Guest RAM"), in
 * process: devices that write into a VM's RAM through a DMA table (memfd
 * memory, as a server's) while they run, migrated with the RAM. With the
 * devices' dirty logs the destination's RAM equals the source's at its
 * stop, byte for byte; without them (ram_untracked) it does not, and the
 * report says so; a device without a log, or whose REPORT fails (mtty's
 * EOPNOTSUPP), makes the engine send the whole RAM in the downtime; the
 * logs are stopped after every migration, failed ones too; a receiver
 * with other RAM refuses the stream.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <vfiomig/device.h>
#include <vfiomig/endpoint.h>
#include <vfiomig/migrate.h>
#include <vfiomig/vfio_user_server.h>

#define RAM_SIZE (2u << 20)
#define RAM_IOVA 0x40000000ull
#define NDEV 2

enum log_kind { LOG_TABLE, LOG_NONE, LOG_REPORT_FAILS };

/* A device that writes records into its client's RAM while it runs, each
 * at its own pages: record n at page (n * 7 + dev) % pages, word n % 512. */
struct dmadev {
    struct vfm_device *dev;
    struct vfm_dma *dma;
    unsigned index;
    pthread_t worker;
    pthread_mutex_t lock;
    bool running, quit, busy;
    uint64_t n;      /* records written (its state) */
    int fail_load;   /* load answers this (0: loads) */
    unsigned errors; /* writes that failed (none may) */
    bool mute;       /* a destination: writes nothing, so its RAM stays as it arrived */
    enum log_kind log;
};

static void *worker(void *arg)
{
    struct dmadev *d = arg;
    struct timespec ts = {0, 50000};

    pthread_mutex_lock(&d->lock);
    while (!d->quit) {
        if (d->running && !d->mute) {
            uint64_t n = ++d->n, page = (n * 7 + d->index) % (RAM_SIZE / 4096);
            d->busy = true;
            pthread_mutex_unlock(&d->lock);
            /* through the table: the write is logged */
            int r = vfm_dma_write(d->dma, RAM_IOVA + page * 4096 + (n % 512) * 8, &n, sizeof(n));
            pthread_mutex_lock(&d->lock);
            d->errors += r != 0;
            d->busy = false;
        }
        pthread_mutex_unlock(&d->lock);
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&d->lock);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

static int set_running(struct dmadev *d, bool on)
{
    struct timespec ts = {0, 10000};

    pthread_mutex_lock(&d->lock);
    d->running = on;
    while (d->busy) { /* the write in flight lands before the arc returns */
        pthread_mutex_unlock(&d->lock);
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&d->lock);
    }
    pthread_mutex_unlock(&d->lock);
    return 0;
}
static int to_stop(struct vfm_device *dev, void *p)
{
    (void)dev;
    return set_running(p, false);
}
static int to_run(struct vfm_device *dev, void *p)
{
    (void)dev;
    return set_running(p, true);
}
static int save(struct vfm_device *dev, void *p, struct vfm_buf *out)
{
    struct dmadev *d = p;
    (void)dev;
    return vfm_buf_append(out, &d->n, sizeof(d->n));
}
static int load(struct vfm_device *dev, void *p, const void *data, size_t len)
{
    struct dmadev *d = p;
    (void)dev;
    if (d->fail_load)
        return d->fail_load;
    if (len != sizeof(d->n))
        return -EINVAL;
    memcpy(&d->n, data, len);
    return 0;
}
static int reset(struct vfm_device *dev, void *p)
{
    struct dmadev *d = p;
    (void)dev;
    set_running(d, true);
    d->n = 0;
    return 0;
}

static const struct vfm_mig_ops ops = {.save = save,
                                       .load = load,
                                       .running_to_stop = to_stop,
                                       .stop_to_running = to_run,
                                       .reset = reset};

/* mtty's log: START and STOP succeed, REPORT is not supported */
static int mtty_start(void *ctx, const struct vfm_dma_range *r, uint32_t n, uint64_t *ps)
{
    (void)ctx, (void)r, (void)n, (void)ps;
    return 0;
}
static int mtty_stop(void *ctx)
{
    (void)ctx;
    return 0;
}
static int mtty_report(void *ctx, uint64_t iova, uint64_t len, uint64_t ps, uint64_t *bitmap)
{
    (void)ctx, (void)iova, (void)len, (void)ps, (void)bitmap;
    return -EOPNOTSUPP;
}
static const struct vfm_dma_log_ops mtty_log = {mtty_start, mtty_stop, mtty_report};

struct ram {
    int fd;
    uint8_t *mem;
};

static void ram_new(struct ram *r, uint8_t fill)
{
    r->fd = memfd_create("test-ram", MFD_CLOEXEC);
    assert_true(r->fd >= 0);
    assert_int_equal(ftruncate(r->fd, RAM_SIZE), 0);
    r->mem = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
    assert_true(r->mem != MAP_FAILED);
    memset(r->mem, fill, RAM_SIZE);
}
static void ram_free(struct ram *r)
{
    munmap(r->mem, RAM_SIZE);
    close(r->fd);
}

static struct dmadev *dmadev_new(const char *name, unsigned index, const struct ram *ram,
                                 enum log_kind log, bool running)
{
    struct dmadev *d = calloc(1, sizeof(*d));
    struct vfm_device_config cfg = {
        .version = VFM_DEVICE_CONFIG_VERSION, .name = name, .compat = 0x52414d44, .mig = &ops};

    assert_non_null(d);
    d->index = index;
    d->mute = !running;
    d->log = log;
    assert_int_equal(vfm_dma_new(4, &d->dma), 0);
    assert_int_equal(vfm_dma_map(d->dma, RAM_IOVA, RAM_SIZE, ram->fd, 0,
                                 VFM_VU_DMA_READ_FLAG | VFM_VU_DMA_WRITE_FLAG),
                     0);
    if (log == LOG_TABLE) {
        cfg.dma_log = vfm_dma_log_ops();
        cfg.dma_log_ctx = d->dma;
    } else if (log == LOG_REPORT_FAILS) {
        cfg.dma_log = &mtty_log;
    }
    cfg.priv = d;
    assert_int_equal(vfm_device_new(&cfg, &d->dev), 0);
    pthread_mutex_init(&d->lock, NULL);
    assert_int_equal(pthread_create(&d->worker, NULL, worker, d), 0);
    if (!running)
        assert_int_equal(vfm_device_set_state(d->dev, VFM_STATE_STOP, NULL), 0);
    else
        set_running(d, true);
    return d;
}
static void dmadev_free(struct dmadev *d)
{
    pthread_mutex_lock(&d->lock);
    d->quit = true;
    pthread_mutex_unlock(&d->lock);
    pthread_join(d->worker, NULL);
    assert_int_equal(d->errors, 0);
    vfm_device_free(d->dev);
    vfm_dma_free(d->dma);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

/* A VM: NDEV devices on each side, each side's RAM; the sources running. */
struct vm {
    struct ram sram, dram;
    struct dmadev *src[NDEV], *dst[NDEV];
    struct vfm_endpoint *se[NDEV], *de[NDEV];
    struct vfm_mig_ram sr, dr;
    struct vfm_mig_config cfg;
};

static void vm_new(struct vm *v, enum log_kind log0)
{
    memset(v, 0, sizeof(*v));
    ram_new(&v->sram, 0x11);
    ram_new(&v->dram, 0x00);
    for (unsigned i = 0; i < NDEV; i++) {
        char n[16];
        snprintf(n, sizeof(n), "src-%u", i);
        v->src[i] = dmadev_new(n, i, &v->sram, i == 0 ? log0 : LOG_TABLE, true);
        snprintf(n, sizeof(n), "dst-%u", i);
        v->dst[i] = dmadev_new(n, i, &v->dram, LOG_TABLE, false);
        assert_int_equal(vfm_ep_local_new(v->src[i]->dev, &v->se[i]), 0);
        assert_int_equal(vfm_ep_local_new(v->dst[i]->dev, &v->de[i]), 0);
    }
    v->sr = (struct vfm_mig_ram){.base = v->sram.mem, .iova = RAM_IOVA, .size = RAM_SIZE};
    v->dr = (struct vfm_mig_ram){.base = v->dram.mem, .iova = RAM_IOVA, .size = RAM_SIZE};
    v->cfg = (struct vfm_mig_config){.version = VFM_MIG_CONFIG_VERSION,
                                     .src = v->se,
                                     .dst = v->de,
                                     .ndev = NDEV,
                                     .timeout_ms = 10000,
                                     .ram = &v->sr,
                                     .nram = 1,
                                     .dst_ram = &v->dr};
    /* let the devices write for a while first */
    usleep(20000);
}
static void vm_free(struct vm *v)
{
    for (unsigned i = 0; i < NDEV; i++) {
        vfm_ep_free(v->se[i]);
        vfm_ep_free(v->de[i]);
        dmadev_free(v->src[i]);
        dmadev_free(v->dst[i]);
    }
    ram_free(&v->sram);
    ram_free(&v->dram);
}

/* Every source's log was stopped: a table's refuses a second STOP
 * (EINVAL: not started); a device without one says ENOTTY. (The mtty-like
 * log answers STOP with 0 whatever: nothing to tell from it.) */
static void logs_stopped(struct vm *v)
{
    for (unsigned i = 0; i < NDEV; i++) {
        int r = vfm_ep_dma_log_stop(v->se[i]);
        if (v->src[i]->log == LOG_TABLE)
            assert_int_equal(r, -EINVAL);
        else if (v->src[i]->log == LOG_NONE)
            assert_int_equal(r, -ENOTTY);
    }
}

/* With the logs: the destination's RAM is the source's at its stop, byte
 * for byte, and what the devices wrote while the RAM moved went again. */
static void test_tracked(void **state)
{
    struct vm v;
    struct vfm_mig_report rep;
    (void)state;

    vm_new(&v, LOG_TABLE);
    assert_int_equal(vfm_migrate_local(&v.cfg, &rep), 0);
    /* the sources are stopped: their RAM is what it was at the stop */
    assert_memory_equal(v.sram.mem, v.dram.mem, RAM_SIZE);
    assert_true(rep.ram_match);
    assert_int_equal(rep.ram_logged, NDEV);
    assert_true(rep.precopy_rounds >= 1);
    assert_true(rep.ram_precopy_pages >= RAM_SIZE / 4096); /* every page once, at least */
    assert_true(rep.ram_downtime_pages < RAM_SIZE / 4096); /* not the whole RAM again */
    assert_int_equal(rep.ram_bytes,
                     (rep.ram_precopy_pages + rep.ram_downtime_pages) * VFM_MIG_RAM_PAGE);
    assert_true(v.src[0]->n > 0 && v.dst[0]->n == v.src[0]->n); /* its state moved */
    logs_stopped(&v);
    vfm_mig_report_free(&rep);
    vm_free(&v);
}

/* Without the logs: pages written after the first pass never go again. */
static void test_untracked(void **state)
{
    struct vm v;
    struct vfm_mig_report rep;
    (void)state;

    vm_new(&v, LOG_TABLE);
    v.cfg.ram_untracked = true;
    v.cfg.no_precopy = true;
    assert_int_equal(vfm_migrate_local(&v.cfg, &rep), 0);
    assert_false(rep.ram_match);
    assert_true(memcmp(v.sram.mem, v.dram.mem, RAM_SIZE) != 0);
    assert_int_equal(rep.ram_downtime_pages, 0);
    assert_int_equal(rep.ram_logged, 0);
    assert_non_null(strstr(rep.notes, "no device dirty log asked for"));
    vfm_mig_report_free(&rep);
    vm_free(&v);
}

/* A device with no log, and one whose REPORT fails: the whole RAM moves
 * in the downtime, and it arrives equal. */
static void test_no_usable_log(void **state)
{
    static const enum log_kind kinds[] = {LOG_NONE, LOG_REPORT_FAILS};
    (void)state;

    for (unsigned k = 0; k < 2; k++) {
        struct vm v;
        struct vfm_mig_report rep;
        vm_new(&v, kinds[k]);
        assert_int_equal(vfm_migrate_local(&v.cfg, &rep), 0);
        assert_memory_equal(v.sram.mem, v.dram.mem, RAM_SIZE);
        assert_true(rep.ram_match);
        assert_int_equal(rep.ram_downtime_pages, RAM_SIZE / 4096);
        assert_non_null(strstr(rep.notes, "source src-0 keeps no DMA dirty log"));
        assert_non_null(
            strstr(rep.notes, k ? "DMA_LOGGING_REPORT: EOPNOTSUPP" : "DMA_LOGGING_START: ENOTTY"));
        logs_stopped(&v);
        vfm_mig_report_free(&rep);
        vm_free(&v);
    }
}

/* A destination that refuses its state: the sources run on, and their
 * logs are stopped all the same. */
static void test_failure_stops_logs(void **state)
{
    struct vm v;
    struct vfm_mig_report rep;
    uint32_t st;
    (void)state;

    vm_new(&v, LOG_TABLE);
    v.dst[1]->fail_load = -EINVAL;
    assert_int_equal(vfm_migrate_local(&v.cfg, &rep), -EINVAL);
    assert_true(rep.rolled_back);
    for (unsigned i = 0; i < NDEV; i++) {
        assert_int_equal(vfm_ep_get_state(v.se[i], &st), 0);
        assert_int_equal(st, VFM_STATE_RUNNING);
        assert_int_equal(vfm_ep_dma_log_stop(v.se[i]), -EINVAL); /* stopped already */
    }
    vfm_mig_report_free(&rep);
    vm_free(&v);
}

struct rx {
    struct vfm_mig_config cfg;
    int fd, ret;
    struct vfm_mig_report rep;
};
static void *rx_main(void *arg)
{
    struct rx *r = arg;
    r->ret = vfm_migrate_receive(&r->cfg, r->fd, &r->rep);
    return NULL;
}

/* Configs: RAM the engine refuses; a receiver with other RAM, or none. */
static void test_config(void **state)
{
    struct vm v;
    struct vfm_mig_report rep;
    struct vfm_mig_ram two[2];
    (void)state;

    vm_new(&v, LOG_TABLE);
    /* local without the destination's RAM, or with the source's */
    v.cfg.dst_ram = NULL;
    assert_int_equal(vfm_migrate_local(&v.cfg, &rep), -EINVAL);
    v.cfg.dst_ram = &v.sr;
    assert_int_equal(vfm_migrate_local(&v.cfg, &rep), -EINVAL);
    v.cfg.dst_ram = &v.dr;
    /* unaligned, empty, overlapping, too many */
    two[0] = v.sr;
    two[0].iova += 512;
    v.cfg.ram = two;
    assert_int_equal(vfm_migrate_local(&v.cfg, &rep), -EINVAL);
    two[0] = v.sr;
    two[0].size = 0;
    assert_int_equal(vfm_migrate_local(&v.cfg, &rep), -EINVAL);
    two[0] = two[1] = v.sr;
    v.cfg.nram = 2;
    assert_int_equal(vfm_migrate_local(&v.cfg, &rep), -EINVAL);
    v.cfg.nram = VFM_MIG_MAX_RAM + 1;
    assert_int_equal(vfm_migrate_local(&v.cfg, &rep), -EINVAL);
    v.cfg.ram = &v.sr;
    v.cfg.nram = 1;

    /* a receiver with half the RAM, then one with none: refused, the
     * sources run on */
    for (unsigned k = 0; k < 2; k++) {
        struct rx r = {.cfg = v.cfg};
        struct vfm_mig_ram half = v.dr;
        pthread_t t;
        int sv[2];
        uint32_t st;

        half.size /= 2;
        r.cfg.ram = k ? NULL : &half;
        r.cfg.nram = k ? 0 : 1;
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        r.fd = sv[1];
        assert_int_equal(pthread_create(&t, NULL, rx_main, &r), 0);
        assert_true(vfm_migrate_send(&v.cfg, sv[0], &rep) < 0);
        pthread_join(t, NULL);
        assert_true(r.ret < 0);
        assert_non_null(strstr(r.rep.message, k ? "carries guest RAM; this side was given none"
                                                : "guest RAM is not this side's"));
        assert_int_equal(vfm_ep_get_state(v.se[0], &st), 0);
        assert_int_equal(st, VFM_STATE_RUNNING);
        logs_stopped(&v);
        vfm_mig_report_free(&rep);
        vfm_mig_report_free(&r.rep);
        close(sv[0]);
        close(sv[1]);
    }
    vm_free(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tracked),       cmocka_unit_test(test_untracked),
        cmocka_unit_test(test_no_usable_log), cmocka_unit_test(test_failure_stops_logs),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
