/* SPDX-License-Identifier: MIT */
/* p2p-mailbox — see mailbox.h. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "mailbox.h"

/* The ring's layout is in mailbox.h; its fields are used atomically here. */
#define ATOMIC(p) ((_Atomic uint64_t *)(p))

#define MB_NSLOTS ((MB_INBOX_SIZE - sizeof(struct mb_ring)) / sizeof(struct mb_slot))

enum mb_mode {
    MB_STOPPED = 0, /* neither sends nor consumes */
    MB_QUIESCED,    /* RUNNING_P2P: consumes, starts no send */
    MB_RUNNING,     /* sends and consumes */
};

struct mailbox {
    struct vfm_device *dev;
    struct vfm_dma *dma;
    int inbox_fd;
    struct mb_ring *ring;
    pthread_t worker;
    pthread_mutex_t lock; /* everything below; held across a send */
    enum mb_mode mode;
    bool quit;
    uint32_t index;
    uint32_t interval_us;
    uint64_t sent_to[MB_MAX_DEVICES];   /* count = last sequence number sent */
    uint64_t cons_from[MB_MAX_DEVICES]; /* count consumed */
    uint64_t last_seq[MB_MAX_DEVICES];  /* highest sequence number seen */
    uint64_t gaps;
    uint64_t dups;
    uint64_t full;
    uint64_t dma_faults; /* not migrated: this process's own count */
    struct vfm_pci *pci;    /* its PCI model, once asked for */
    uint8_t msix_bar[4096]; /* BAR2: the model serves its table and PBA */
};

/* The saved state: this, then the inbox bytes. */
struct mb_state {
    uint32_t version; /* 1 */
    uint32_t index;
    uint32_t interval_us;
    uint32_t inbox_size;
    uint64_t sent_to[MB_MAX_DEVICES];
    uint64_t cons_from[MB_MAX_DEVICES];
    uint64_t last_seq[MB_MAX_DEVICES];
    uint64_t gaps;
    uint64_t dups;
    uint64_t full;
};

/* One send into a peer's inbox, run by vfm_dma_access(): the inbox is the
 * client's memory, which it may shrink under us (then the access fails
 * with -EIO) or fill with anything (read once, checked). */
struct send_ctx {
    uint32_t from;
    uint64_t seq;
    int result; /* 1 sent, 0 full, -1 not a mailbox inbox (yet) */
};

static void send_fn(void *mem, uint64_t len, void *arg)
{
    struct mb_ring *r = mem;
    struct send_ctx *c = arg;
    uint64_t t, h, n = atomic_load_explicit(ATOMIC(&r->nslots), memory_order_relaxed);
    struct mb_slot *s;
    (void)len;

    c->result = -1;
    if (n == 0 || n > MB_NSLOTS)
        return;
    for (;;) {
        t = atomic_load_explicit(ATOMIC(&r->tail), memory_order_acquire);
        h = atomic_load_explicit(ATOMIC(&r->head), memory_order_acquire);
        if (t - h >= n) {
            c->result = 0;
            return;
        }
        if (atomic_compare_exchange_weak_explicit(ATOMIC(&r->tail), &t, t + 1, memory_order_acq_rel,
                                                  memory_order_acquire))
            break;
    }
    s = &r->slots[t % n];
    s->from = c->from;
    s->seq = c->seq;
    atomic_store_explicit(ATOMIC(&s->ready), t + 1, memory_order_release);
    c->result = 1;
}

/* Sends one message into peer @j's inbox (mapped in our DMA space).
 * Return: 1 sent, 0 not possible now (unmapped, full, or the memory went
 * away). Lock held. */
static int send_one(struct mailbox *mb, uint32_t j)
{
    struct send_ctx c = {.from = mb->index, .seq = mb->sent_to[j] + 1};
    int ret = vfm_dma_access(mb->dma, MB_PEER_IOVA(j), MB_INBOX_SIZE,
                             VFM_VU_DMA_READ_FLAG | VFM_VU_DMA_WRITE_FLAG, send_fn, &c);

    if (ret == -EIO)
        mb->dma_faults++; /* the client shrank the file behind the mapping */
    if (ret || c.result < 0)
        return 0;
    if (c.result == 0) {
        mb->full++;
        return 0;
    }
    mb->sent_to[j] = c.seq;
    return 1;
}

/* Consumes what is in our inbox, checking each sender's sequence: a jump
 * forward is a gap (messages lost), a step back a repeat. Lock held. */
static void consume(struct mailbox *mb)
{
    struct mb_ring *r = mb->ring;

    /* at most one lap per round: head is in memory a guest can write, and
     * one that keeps winding it back must not keep the worker (and the
     * lock a state change needs) here */
    for (uint64_t k = 0; k < MB_NSLOTS; k++) {
        uint64_t h = atomic_load_explicit(ATOMIC(&r->head), memory_order_relaxed);
        /* our own ring's size, never the copy in the inbox: the inbox is
         * memory a client (a guest) can write */
        struct mb_slot *s = &r->slots[h % MB_NSLOTS];
        uint32_t from;
        uint64_t seq;

        if (atomic_load_explicit(ATOMIC(&s->ready), memory_order_acquire) != h + 1)
            return; /* empty, or the next writer has not published yet */
        from = s->from;
        seq = s->seq;
        if (from < MB_MAX_DEVICES) {
            if (seq > mb->last_seq[from] + 1)
                mb->gaps += seq - mb->last_seq[from] - 1;
            else if (seq <= mb->last_seq[from])
                mb->dups++;
            if (seq > mb->last_seq[from])
                mb->last_seq[from] = seq;
            mb->cons_from[from]++;
        } else {
            mb->dups++; /* not from any device */
        }
        atomic_store_explicit(ATOMIC(&r->head), h + 1, memory_order_release);
    }
}

static void *worker(void *arg)
{
    struct mailbox *mb = arg;

    pthread_mutex_lock(&mb->lock);
    while (!mb->quit) {
        struct timespec ts;
        if (mb->mode >= MB_QUIESCED)
            consume(mb);
        if (mb->mode == MB_RUNNING)
            for (uint32_t j = 0; j < MB_MAX_DEVICES; j++)
                if (j != mb->index)
                    send_one(mb, j);
        ts.tv_sec = mb->interval_us / 1000000;
        ts.tv_nsec = (long)(mb->interval_us % 1000000) * 1000;
        pthread_mutex_unlock(&mb->lock);
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&mb->lock);
    }
    pthread_mutex_unlock(&mb->lock);
    return NULL;
}

static void set_mode(struct mailbox *mb, enum mb_mode m)
{
    /* Taking the lock waits for a send in flight: when this returns, no
     * write started in the old mode is unfinished. */
    pthread_mutex_lock(&mb->lock);
    mb->mode = m;
    pthread_mutex_unlock(&mb->lock);
}

static int to_stopped(struct vfm_device *d, void *p)
{
    (void)d;
    set_mode(p, MB_STOPPED);
    return 0;
}

static int to_running(struct vfm_device *d, void *p)
{
    (void)d;
    set_mode(p, MB_RUNNING);
    return 0;
}

static int to_quiesced(struct vfm_device *d, void *p)
{
    (void)d;
    set_mode(p, MB_QUIESCED);
    return 0;
}

static int mb_save(struct vfm_device *d, void *p, struct vfm_buf *out)
{
    struct mailbox *mb = p;
    struct mb_state st = {.version = 1, .inbox_size = MB_INBOX_SIZE};
    int ret;
    (void)d;

    pthread_mutex_lock(&mb->lock);
    st.index = mb->index;
    st.interval_us = mb->interval_us;
    memcpy(st.sent_to, mb->sent_to, sizeof(st.sent_to));
    memcpy(st.cons_from, mb->cons_from, sizeof(st.cons_from));
    memcpy(st.last_seq, mb->last_seq, sizeof(st.last_seq));
    st.gaps = mb->gaps;
    st.dups = mb->dups;
    st.full = mb->full;
    ret = vfm_buf_append(out, &st, sizeof(st));
    if (!ret)
        ret = vfm_buf_append(out, mb->ring, MB_INBOX_SIZE);
    pthread_mutex_unlock(&mb->lock);
    return ret;
}

static int mb_load(struct vfm_device *d, void *p, const void *data, size_t len)
{
    struct mailbox *mb = p;
    const struct mb_ring *r;
    struct mb_state st;
    (void)d;

    if (len != sizeof(st) + MB_INBOX_SIZE)
        return -EINVAL;
    memcpy(&st, data, sizeof(st));
    r = (const struct mb_ring *)((const uint8_t *)data + sizeof(st));
    if (st.version != 1 || st.inbox_size != MB_INBOX_SIZE || st.index >= MB_MAX_DEVICES ||
        !st.interval_us || st.interval_us > MB_MAX_INTERVAL_US || r->nslots != MB_NSLOTS ||
        r->tail - r->head > MB_NSLOTS)
        return -EINVAL;
    pthread_mutex_lock(&mb->lock);
    mb->index = st.index;
    mb->interval_us = st.interval_us;
    memcpy(mb->sent_to, st.sent_to, sizeof(st.sent_to));
    memcpy(mb->cons_from, st.cons_from, sizeof(st.cons_from));
    memcpy(mb->last_seq, st.last_seq, sizeof(st.last_seq));
    mb->gaps = st.gaps;
    mb->dups = st.dups;
    mb->full = st.full;
    memcpy(mb->ring, r, MB_INBOX_SIZE);
    pthread_mutex_unlock(&mb->lock);
    return 0;
}

static void ring_init(struct mailbox *mb)
{
    memset(mb->ring, 0, MB_INBOX_SIZE);
    mb->ring->nslots = MB_NSLOTS;
}

static int mb_reset(struct vfm_device *d, void *p)
{
    struct mailbox *mb = p;
    (void)d;

    pthread_mutex_lock(&mb->lock);
    ring_init(mb);
    memset(mb->sent_to, 0, sizeof(mb->sent_to));
    memset(mb->cons_from, 0, sizeof(mb->cons_from));
    memset(mb->last_seq, 0, sizeof(mb->last_seq));
    mb->gaps = mb->dups = mb->full = 0;
    mb->mode = MB_RUNNING;
    pthread_mutex_unlock(&mb->lock);
    return 0;
}

static int mb_size(struct vfm_device *d, void *p, uint64_t *bytes)
{
    (void)d;
    (void)p;
    *bytes = sizeof(struct mb_state) + MB_INBOX_SIZE;
    return 0;
}

static const struct vfm_mig_ops mb_mig = {
    .save = mb_save,
    .load = mb_load,
    .running_to_stop = to_stopped,
    .stop_to_running = to_running,
    .reset = mb_reset,
    .data_size = mb_size,
};

static const struct vfm_p2p_ops mb_p2p = {
    .running_to_running_p2p = to_quiesced,
    .running_p2p_to_running = to_running,
    .running_p2p_to_stop = to_stopped,
    .stop_to_running_p2p = to_quiesced,
};

/* BAR1: the registers. */
static int regs_access(void *priv, uint32_t region, uint64_t off, void *buf, uint32_t count,
                       bool write)
{
    struct mailbox *mb = priv;
    uint8_t regs[MB_REGS_SIZE];
    uint64_t v;

    (void)region;
    pthread_mutex_lock(&mb->lock);
    if (write) {
        uint32_t x;
        if (count != 4 || (off != MB_REG_INDEX && off != MB_REG_INTERVAL)) {
            pthread_mutex_unlock(&mb->lock);
            return -EINVAL;
        }
        memcpy(&x, buf, 4);
        if ((off == MB_REG_INDEX && x >= MB_MAX_DEVICES) ||
            (off == MB_REG_INTERVAL && x > MB_MAX_INTERVAL_US)) {
            pthread_mutex_unlock(&mb->lock);
            return -EINVAL;
        }
        if (off == MB_REG_INDEX)
            mb->index = x;
        else
            mb->interval_us = x ? x : 1;
        pthread_mutex_unlock(&mb->lock);
        return 0;
    }
    memset(regs, 0, sizeof(regs));
    memcpy(regs + MB_REG_MAGIC, "MBOX", 4);
    memcpy(regs + MB_REG_INDEX, &mb->index, 4);
    memcpy(regs + MB_REG_INTERVAL, &mb->interval_us, 4);
    v = 0;
    for (int j = 0; j < (int)MB_MAX_DEVICES; j++)
        v += mb->sent_to[j];
    memcpy(regs + MB_REG_SENT, &v, 8);
    v = 0;
    for (int j = 0; j < (int)MB_MAX_DEVICES; j++)
        v += mb->cons_from[j];
    memcpy(regs + MB_REG_CONSUMED, &v, 8);
    memcpy(regs + MB_REG_GAPS, &mb->gaps, 8);
    memcpy(regs + MB_REG_DUPS, &mb->dups, 8);
    memcpy(regs + MB_REG_FULL, &mb->full, 8);
    memcpy(regs + MB_REG_DMA_FAULTS, &mb->dma_faults, 8);
    v = atomic_load(ATOMIC(&mb->ring->tail)) - atomic_load(ATOMIC(&mb->ring->head));
    memcpy(regs + MB_REG_PENDING, &v, 8);
    memcpy(regs + MB_REG_SENT_TO, mb->sent_to, sizeof(mb->sent_to));
    memcpy(regs + MB_REG_CONS_FROM, mb->cons_from, sizeof(mb->cons_from));
    pthread_mutex_unlock(&mb->lock);
    memcpy(buf, regs + off, count);
    return 0;
}

int mailbox_new(const char *name, bool p2p, struct vfm_dma *dma, struct mailbox **out)
{
    struct vfm_device_config cfg = {
        .version = VFM_DEVICE_CONFIG_VERSION,
        .name = name,
        .compat = MB_COMPAT,
        .mig = &mb_mig,
        .p2p = p2p ? &mb_p2p : NULL,
    };
    struct mailbox *mb = calloc(1, sizeof(*mb));
    int ret;

    if (!mb)
        return -ENOMEM;
    mb->dma = dma;
    mb->mode = MB_RUNNING;
    mb->interval_us = 200;
    pthread_mutex_init(&mb->lock, NULL);
    mb->inbox_fd = memfd_create("mailbox-inbox", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (mb->inbox_fd < 0) {
        ret = -errno;
        goto err_free;
    }
    /* the client gets this fd (REGION_INFO): sealed, it cannot shrink the
     * inbox under our own loads and stores */
    if (ftruncate(mb->inbox_fd, MB_INBOX_SIZE) < 0 ||
        fcntl(mb->inbox_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        ret = -errno;
        goto err_close;
    }
    mb->ring = mmap(NULL, MB_INBOX_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mb->inbox_fd, 0);
    if (mb->ring == MAP_FAILED) {
        ret = -errno;
        goto err_close;
    }
    ring_init(mb);
    cfg.priv = mb;
    ret = vfm_device_new(&cfg, &mb->dev);
    if (ret)
        goto err_unmap;
    ret = -pthread_create(&mb->worker, NULL, worker, mb);
    if (ret)
        goto err_free_dev;
    *out = mb;
    return 0;

err_free_dev:
    vfm_device_free(mb->dev);
err_unmap:
    munmap(mb->ring, MB_INBOX_SIZE);
err_close:
    close(mb->inbox_fd);
err_free:
    pthread_mutex_destroy(&mb->lock);
    free(mb);
    return ret;
}

void mailbox_free(struct mailbox *mb)
{
    if (!mb)
        return;
    pthread_mutex_lock(&mb->lock);
    mb->quit = true;
    pthread_mutex_unlock(&mb->lock);
    pthread_join(mb->worker, NULL);
    vfm_pci_free(mb->pci);
    vfm_device_free(mb->dev);
    munmap(mb->ring, MB_INBOX_SIZE);
    close(mb->inbox_fd);
    pthread_mutex_destroy(&mb->lock);
    free(mb);
}

struct vfm_device *mailbox_device(struct mailbox *mb)
{
    return mb->dev;
}

void mailbox_server_regions(struct mailbox *mb, struct vfm_server_config *cfg)
{
    cfg->nregions = 2;
    cfg->regions[MB_REGION_INBOX] = (struct vfm_server_region){
        .size = MB_INBOX_SIZE,
        .flags = VFM_VU_REGION_READ_FLAG | VFM_VU_REGION_WRITE_FLAG,
        .fd = mb->inbox_fd,
        .mem = mb->ring,
    };
    cfg->regions[MB_REGION_REGS] = (struct vfm_server_region){
        .size = MB_REGS_SIZE,
        .flags = VFM_VU_REGION_READ_FLAG | VFM_VU_REGION_WRITE_FLAG,
        .fd = -1,
        .access = regs_access,
    };
    cfg->priv = mb;
}

int mailbox_pci(struct mailbox *mb, struct vfm_pci **out)
{
    struct vfm_pci_config c = {
        .version = VFM_PCI_CONFIG_VERSION,
        .ids = {.vendor = VFM_PCI_VENDOR_EXPERIMENTAL, .device = MB_PCI_DEVICE,
                .class_code = MB_PCI_CLASS},
        .intx = true,
        .msix = {.vectors = 1, .table_bar = MB_REGION_MSIX, .table_offset = 0,
                 .pba_bar = MB_REGION_MSIX, .pba_offset = 0x800},
        .priv = mb,
    };
    int ret;

    if (!mb->pci) {
        c.bars[MB_REGION_INBOX] = (struct vfm_pci_bar){
            .type = VFM_PCI_BAR_MEM32, .size = MB_INBOX_SIZE, .fd = mb->inbox_fd, .mem = mb->ring};
        c.bars[MB_REGION_REGS] = (struct vfm_pci_bar){
            .type = VFM_PCI_BAR_MEM32, .size = MB_REGS_SIZE, .fd = -1, .access = regs_access};
        c.bars[MB_REGION_MSIX] = (struct vfm_pci_bar){
            .type = VFM_PCI_BAR_MEM32, .size = sizeof(mb->msix_bar), .fd = -1, .mem = mb->msix_bar};
        for (unsigned i = MB_REGION_MSIX + 1; i < VFM_PCI_NUM_BARS; i++)
            c.bars[i].fd = -1;
        if ((ret = vfm_pci_new(&c, mb->dev, &mb->pci)))
            return ret;
    }
    *out = mb->pci;
    return 0;
}
