/* SPDX-License-Identifier: MIT */
/* p2p-mailbox — see mailbox.h. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "mailbox.h"

/* The inbox's layout is in mailbox.h; its fields are used atomically here. */
#define ATOMIC(p) ((_Atomic uint64_t *)(p))

_Static_assert(sizeof(struct mb_lane) == 1024, "a lane is 1 KiB");
_Static_assert(sizeof(struct mb_inbox) == MB_INBOX_SIZE, "the inbox is BAR0");

enum mb_mode {
    MB_STOPPED = 0, /* neither sends nor consumes */
    MB_QUIESCED,    /* RUNNING_P2P: consumes, starts no send */
    MB_RUNNING,     /* sends and consumes */
};

/* What a driver programs (registers), saved and restored as is. */
struct mb_prog {
    uint32_t index;
    uint32_t interval_us;
    uint32_t control;    /* MB_CTL_* */
    uint32_t irq_status; /* MB_IRQ_* */
    uint64_t writeback;
    uint64_t ring;       /* MB_REG_RING */
    uint32_t ring_slots; /* MB_REG_RING_SLOTS */
    uint32_t pad;
    uint64_t peer[MB_MAX_DEVICES];
};

struct mailbox {
    struct vfm_device *dev;
    struct vfm_dma *dma;
    int inbox_fd;
    struct mb_inbox *inbox;
    pthread_t worker;
    pthread_mutex_t lock; /* everything below */
    pthread_cond_t idle;  /* busy went false */
    bool busy;            /* a round's DMA is in flight (without the lock) */
    enum mb_mode mode;
    bool quit;
    struct mb_prog prog;
    uint64_t sent_to[MB_MAX_DEVICES];   /* count = last sequence number sent */
    uint64_t cons_from[MB_MAX_DEVICES]; /* count consumed */
    uint64_t last_seq[MB_MAX_DEVICES];  /* highest sequence number seen */
    uint64_t gaps;
    uint64_t dups;
    uint64_t full;
    uint64_t writebacks;
    uint64_t ring_count; /* records put in the ring */
    uint64_t dma_faults; /* not migrated: this process's own counts */
    uint64_t irqs;
    struct vfm_pci *pci;    /* its PCI model, once asked for */
    uint8_t msix_bar[4096]; /* BAR2: the model serves its table and PBA */
};

/* The saved state: this, then the PCI model's state (pci_len bytes), then
 * the inbox. */
struct mb_state {
    uint32_t version; /* 2 */
    uint32_t inbox_size;
    uint32_t pci_len;
    uint32_t pad;
    struct mb_prog prog;
    uint64_t sent_to[MB_MAX_DEVICES];
    uint64_t cons_from[MB_MAX_DEVICES];
    uint64_t last_seq[MB_MAX_DEVICES];
    uint64_t gaps;
    uint64_t dups;
    uint64_t full;
    uint64_t writebacks;
    uint64_t ring_count;
};

/* Whether the device may start DMA: the bus master enable of its config
 * space, when it is a PCI device. Lock held. */
static bool may_dma(struct mailbox *mb)
{
    return !mb->pci || vfm_pci_bus_master(mb->pci);
}

/* Counts a DMA that failed: the client's memory went away (-EIO), or it
 * refused or did not answer a DMA message. A range not mapped is not a
 * fault (the peer is not there yet). */
static void dma_failed(struct mailbox *mb, int ret)
{
    if (ret && ret != -EFAULT && ret != -EACCES)
        mb->dma_faults++;
}

/* Sends one message (@seq) into the lane at @lane of a peer's inbox, with
 * plain reads and writes (memory the client shared, or DMA messages).
 * Return: 1 sent; 0 the lane is full; 2 it is not a lane (inconsistent);
 * a DMA error. Called without the lock. */
static int send_one(struct vfm_dma *dma, uint64_t lane, uint64_t seq)
{
    uint64_t ht[2], tail;
    int ret = vfm_dma_read(dma, lane, ht, sizeof(ht));

    if (ret)
        return ret;
    if (ht[1] - ht[0] > MB_LANE_SLOTS)
        return 2; /* not a mailbox's lane, or one its owner must repair */
    if (ht[1] - ht[0] == MB_LANE_SLOTS)
        return 0;
    tail = ht[1] + 1;
    ret = vfm_dma_write(dma, lane + offsetof(struct mb_lane, seq) + (ht[1] % MB_LANE_SLOTS) * 8,
                        &seq, 8);
    /* the message first, then the tail that publishes it (each access a
     * release of the DMA table's lock, or a message the client answered) */
    if (!ret)
        ret = vfm_dma_write(dma, lane + offsetof(struct mb_lane, tail), &tail, 8);
    return ret ? ret : 1;
}

/* Messages waiting in our inbox (lanes found inconsistent count none). */
static uint64_t pending(struct mailbox *mb)
{
    uint64_t n = 0;

    for (uint32_t f = 0; f < MB_MAX_DEVICES; f++) {
        struct mb_lane *l = &mb->inbox->lanes[f];
        uint64_t d = atomic_load_explicit(ATOMIC(&l->tail), memory_order_acquire) -
                     atomic_load_explicit(ATOMIC(&l->head), memory_order_relaxed);
        if (d <= MB_LANE_SLOTS)
            n += d;
    }
    return n;
}

/* Whether the device asserts its interrupt: a status bit set with
 * interrupts enabled (as a level, which MSI-X sends as an edge). */
static bool irq_line(const struct mb_prog *g)
{
    return (g->control & MB_CTL_IRQ) && g->irq_status;
}

/* Raises the interrupt when the line goes up (from @was). Lock held. */
static void irq_update(struct mailbox *mb, bool was)
{
    if (mb->pci && !was && irq_line(&mb->prog) && vfm_pci_raise(mb->pci, 0) >= 0)
        mb->irqs++;
}

/* The status record a round writes into the driver's memory. Lock held. */
static void status_fill(struct mailbox *mb, struct mb_status *st)
{
    *st = (struct mb_status){.magic = MB_COMPAT, .index = mb->prog.index, .gaps = mb->gaps,
                             .dups = mb->dups, .seq = mb->writebacks + 1};
    for (uint32_t j = 0; j < MB_MAX_DEVICES; j++) {
        st->sent += mb->sent_to[j];
        st->consumed += mb->cons_from[j];
    }
}

/* The most messages one round consumes: every lane full. */
#define ROUND_MAX_MSGS (MB_MAX_DEVICES * MB_LANE_SLOTS)

/* Consumes what is in our inbox, lane by lane, checking each sender's
 * sequence: a jump forward is a gap (messages lost), a step back a repeat.
 * The inbox is memory a client (a guest) can write: a lane whose tail is
 * more than a lap ahead of its head is skipped whole and counted. With
 * @ring, each message consumed becomes a ring record there (at most
 * ROUND_MAX_MSGS), numbered on from ring_count; *@nring: how many.
 * Return: messages consumed. Lock held. */
static uint64_t consume(struct mailbox *mb, struct mb_ring_rec *ring, uint32_t *nring)
{
    uint64_t total = 0;

    for (uint32_t from = 0; from < MB_MAX_DEVICES; from++) {
        struct mb_lane *l = &mb->inbox->lanes[from];
        uint64_t h = atomic_load_explicit(ATOMIC(&l->head), memory_order_relaxed);
        uint64_t t = atomic_load_explicit(ATOMIC(&l->tail), memory_order_acquire);

        if (t == h)
            continue;
        if (t - h > MB_LANE_SLOTS) {
            mb->dups++;
            atomic_store_explicit(ATOMIC(&l->head), t, memory_order_release);
            continue;
        }
        for (; h != t; h++, total++) {
            uint64_t seq = atomic_load_explicit(ATOMIC(&l->seq[h % MB_LANE_SLOTS]),
                                                memory_order_relaxed);
            if (seq > mb->last_seq[from] + 1)
                mb->gaps += seq - mb->last_seq[from] - 1;
            else if (seq <= mb->last_seq[from])
                mb->dups++;
            if (seq > mb->last_seq[from])
                mb->last_seq[from] = seq;
            mb->cons_from[from]++;
            if (ring && *nring < ROUND_MAX_MSGS) {
                uint64_t n = ++mb->ring_count;
                ring[(*nring)++] = (struct mb_ring_rec){.n = n, .magic = MB_COMPAT, .from = from,
                                                        .seq = seq,
                                                        .check = mb_ring_check(n, from, seq)};
            }
        }
        atomic_store_explicit(ATOMIC(&l->head), t, memory_order_release);
    }
    return total;
}

/* One round's DMA: planned under the lock, made without it (a DMA message
 * waits for the client, and the client's commands to our registers and
 * state must not wait for that), its results applied under the lock. A
 * state change waits for the round in flight (quiet()). */
struct round {
    uint32_t n;
    uint32_t peer[MB_MAX_DEVICES];
    uint64_t lane[MB_MAX_DEVICES];
    uint64_t seq[MB_MAX_DEVICES];
    int result[MB_MAX_DEVICES];
    bool wb;
    uint64_t wb_addr;
    struct mb_status st;
    int wb_result;
    uint64_t ring_addr;  /* the ring, its slots, and the records to write */
    uint32_t ring_slots;
    uint32_t nring;
    int ring_result;
    struct mb_ring_rec ring[ROUND_MAX_MSGS];
};

/* Waits for the round in flight. Lock held. */
static void quiet(struct mailbox *mb)
{
    while (mb->busy)
        pthread_cond_wait(&mb->idle, &mb->lock);
}

static void plan(struct mailbox *mb, struct round *r)
{
    bool ring = (mb->prog.control & MB_CTL_RING) && mb->prog.ring && mb->prog.ring_slots &&
                may_dma(mb);

    r->n = 0;
    r->wb = false;
    r->nring = 0;
    r->ring_addr = mb->prog.ring;
    r->ring_slots = mb->prog.ring_slots;
    if (mb->mode >= MB_QUIESCED && consume(mb, ring ? r->ring : NULL, &r->nring)) {
        bool was = irq_line(&mb->prog);
        mb->prog.irq_status |= MB_IRQ_DELIVERED;
        irq_update(mb, was);
        if ((mb->prog.control & MB_CTL_WRITEBACK) && mb->prog.writeback && may_dma(mb)) {
            r->wb = true;
            r->wb_addr = mb->prog.writeback;
            status_fill(mb, &r->st);
        }
    }
    if (mb->mode == MB_RUNNING && (mb->prog.control & MB_CTL_SEND) && may_dma(mb))
        for (uint32_t j = 0; j < MB_MAX_DEVICES; j++)
            if (j != mb->prog.index && mb->prog.peer[j]) {
                r->peer[r->n] = j;
                r->lane[r->n] = mb->prog.peer[j] + (uint64_t)mb->prog.index * sizeof(struct mb_lane);
                r->seq[r->n] = mb->sent_to[j] + 1;
                r->n++;
            }
}

static void apply(struct mailbox *mb, const struct round *r)
{
    for (uint32_t k = 0; k < r->n; k++) {
        if (r->result[k] == 1)
            mb->sent_to[r->peer[k]] = r->seq[k];
        else if (r->result[k] == 0)
            mb->full++;
        else if (r->result[k] < 0)
            dma_failed(mb, r->result[k]);
    }
    if (r->wb && r->wb_result)
        dma_failed(mb, r->wb_result);
    else if (r->wb)
        mb->writebacks++;
    if (r->nring && r->ring_result)
        dma_failed(mb, r->ring_result);
}

/* Writes a round's ring records, in runs that do not wrap. Without the
 * lock. Return: 0 or the first DMA error. */
static int ring_write(struct mailbox *mb, const struct round *r)
{
    uint32_t k = 0;

    while (k < r->nring) {
        uint64_t slot = (r->ring[k].n - 1) % r->ring_slots;
        uint32_t run = r->nring - k;
        int ret;

        if (run > r->ring_slots - slot)
            run = (uint32_t)(r->ring_slots - slot);
        ret = vfm_dma_write(mb->dma, r->ring_addr + slot * sizeof(struct mb_ring_rec), &r->ring[k],
                            (uint64_t)run * sizeof(struct mb_ring_rec));
        if (ret)
            return ret;
        k += run;
    }
    return 0;
}

static void *worker(void *arg)
{
    struct mailbox *mb = arg;
    struct round *r = malloc(sizeof(*r));

    pthread_mutex_lock(&mb->lock);
    while (!mb->quit) {
        struct timespec ts;
        if (r) {
            plan(mb, r);
            if (r->n || r->wb || r->nring) {
                mb->busy = true;
                pthread_mutex_unlock(&mb->lock);
                for (uint32_t k = 0; k < r->n; k++)
                    r->result[k] = send_one(mb->dma, r->lane[k], r->seq[k]);
                /* the ring before the status record, which counts it */
                r->ring_result = r->nring ? ring_write(mb, r) : 0;
                if (r->wb)
                    r->wb_result = vfm_dma_write(mb->dma, r->wb_addr, &r->st, sizeof(r->st));
                pthread_mutex_lock(&mb->lock);
                apply(mb, r);
                mb->busy = false;
                pthread_cond_broadcast(&mb->idle);
            }
        }
        ts.tv_sec = mb->prog.interval_us / 1000000;
        ts.tv_nsec = (long)(mb->prog.interval_us % 1000000) * 1000;
        pthread_mutex_unlock(&mb->lock);
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&mb->lock);
    }
    pthread_mutex_unlock(&mb->lock);
    free(r);
    return NULL;
}

static void set_mode(struct mailbox *mb, enum mb_mode m)
{
    /* waits for the round in flight: when this returns, no write started
     * in the old mode is unfinished */
    pthread_mutex_lock(&mb->lock);
    mb->mode = m;
    quiet(mb);
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
    struct mb_state st = {.version = 3, .inbox_size = MB_INBOX_SIZE};
    int ret;
    (void)d;

    pthread_mutex_lock(&mb->lock);
    quiet(mb);
    st.pci_len = mb->pci ? (uint32_t)vfm_pci_state_size(mb->pci) : 0;
    st.prog = mb->prog;
    memcpy(st.sent_to, mb->sent_to, sizeof(st.sent_to));
    memcpy(st.cons_from, mb->cons_from, sizeof(st.cons_from));
    memcpy(st.last_seq, mb->last_seq, sizeof(st.last_seq));
    st.gaps = mb->gaps;
    st.dups = mb->dups;
    st.full = mb->full;
    st.writebacks = mb->writebacks;
    st.ring_count = mb->ring_count;
    ret = vfm_buf_append(out, &st, sizeof(st));
    if (!ret && mb->pci)
        ret = vfm_pci_save(mb->pci, out);
    if (!ret)
        ret = vfm_buf_append(out, mb->inbox, MB_INBOX_SIZE);
    pthread_mutex_unlock(&mb->lock);
    return ret;
}

static bool prog_valid(const struct mb_prog *g)
{
    if (g->index >= MB_MAX_DEVICES || !g->interval_us || g->interval_us > MB_MAX_INTERVAL_US ||
        (g->control & ~(MB_CTL_SEND | MB_CTL_IRQ | MB_CTL_WRITEBACK | MB_CTL_RING)) ||
        (g->irq_status & ~MB_IRQ_DELIVERED) || (g->writeback & 7) || (g->ring & 4095) ||
        g->ring_slots > MB_RING_MAX_SLOTS || (g->ring_slots & (g->ring_slots - 1)) || g->pad)
        return false;
    for (uint32_t j = 0; j < MB_MAX_DEVICES; j++)
        if (g->peer[j] & (MB_INBOX_SIZE - 1))
            return false;
    return true;
}

static int mb_load(struct vfm_device *d, void *p, const void *data, size_t len)
{
    struct mailbox *mb = p;
    const uint8_t *pci_bytes, *inbox;
    struct vfm_pci *pci = NULL;
    struct mb_state st;
    int ret;
    (void)d;

    if (len < sizeof(st))
        return -EINVAL;
    memcpy(&st, data, sizeof(st));
    if (st.version != 3 || st.inbox_size != MB_INBOX_SIZE || !prog_valid(&st.prog) ||
        len != sizeof(st) + (size_t)st.pci_len + MB_INBOX_SIZE)
        return -EINVAL;
    pci_bytes = (const uint8_t *)data + sizeof(st);
    inbox = pci_bytes + st.pci_len;
    /* what a driver programmed into the PCI function: the model is made
     * when the source had one and this side has none yet (a device served
     * without it so far) */
    if (st.pci_len && (ret = mailbox_pci(mb, &pci)))
        return ret;
    pthread_mutex_lock(&mb->lock);
    quiet(mb);
    if (st.pci_len && (ret = vfm_pci_load(mb->pci, pci_bytes, st.pci_len))) {
        pthread_mutex_unlock(&mb->lock);
        return ret;
    }
    mb->prog = st.prog;
    memcpy(mb->sent_to, st.sent_to, sizeof(st.sent_to));
    memcpy(mb->cons_from, st.cons_from, sizeof(st.cons_from));
    memcpy(mb->last_seq, st.last_seq, sizeof(st.last_seq));
    mb->gaps = st.gaps;
    mb->dups = st.dups;
    mb->full = st.full;
    mb->writebacks = st.writebacks;
    mb->ring_count = st.ring_count;
    /* the lanes as they were; one found inconsistent is skipped by consume() */
    memcpy(mb->inbox, inbox, MB_INBOX_SIZE);
    pthread_mutex_unlock(&mb->lock);
    return 0;
}

static void prog_reset(struct mailbox *mb)
{
    memset(&mb->prog, 0, sizeof(mb->prog));
    mb->prog.interval_us = 200;
}

static int mb_reset(struct vfm_device *d, void *p)
{
    struct mailbox *mb = p;
    (void)d;

    pthread_mutex_lock(&mb->lock);
    quiet(mb);
    memset(mb->inbox, 0, MB_INBOX_SIZE);
    memset(mb->sent_to, 0, sizeof(mb->sent_to));
    memset(mb->cons_from, 0, sizeof(mb->cons_from));
    memset(mb->last_seq, 0, sizeof(mb->last_seq));
    mb->gaps = mb->dups = mb->full = mb->writebacks = mb->ring_count = 0;
    prog_reset(mb);
    mb->mode = MB_RUNNING;
    pthread_mutex_unlock(&mb->lock);
    return 0;
}

static int mb_size(struct vfm_device *d, void *p, uint64_t *bytes)
{
    struct mailbox *mb = p;
    (void)d;

    pthread_mutex_lock(&mb->lock);
    *bytes = sizeof(struct mb_state) + (mb->pci ? vfm_pci_state_size(mb->pci) : 0) + MB_INBOX_SIZE;
    pthread_mutex_unlock(&mb->lock);
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

/* A write of @count bytes at @off into a u64 register @reg: 8 bytes, or 4
 * to either half. Return: whether it hits @reg (then *@v is updated). */
static bool write64(uint64_t off, uint32_t count, const void *buf, uint64_t reg, uint64_t *v)
{
    uint32_t x;

    if (count == 8 && off == reg) {
        memcpy(v, buf, 8);
        return true;
    }
    if (count != 4 || (off != reg && off != reg + 4))
        return false;
    memcpy(&x, buf, 4);
    if (off == reg)
        *v = (*v & ~0xffffffffull) | x;
    else
        *v = (*v & 0xffffffffull) | ((uint64_t)x << 32);
    return true;
}

/* A register write. Return: 0 or -EINVAL (read-only, a bad width, or a
 * value out of range: nothing changes). Lock held. */
static int reg_write(struct mailbox *mb, uint64_t off, const void *buf, uint32_t count)
{
    struct mb_prog g = mb->prog;
    uint32_t x = 0;
    bool was;

    if (count == 4)
        memcpy(&x, buf, 4);
    if (off >= MB_REG_PEER(0) && off < MB_REG_PEER(MB_MAX_DEVICES)) {
        uint32_t j = (uint32_t)((off - MB_REG_PEER(0)) / 8);
        if (!write64(off, count, buf, MB_REG_PEER(j), &g.peer[j]))
            return -EINVAL;
    } else if (off == MB_REG_WRITEBACK || off == MB_REG_WRITEBACK + 4) {
        if (!write64(off, count, buf, MB_REG_WRITEBACK, &g.writeback))
            return -EINVAL;
        if (g.writeback & 7)
            return -EINVAL;
        mb->prog.writeback = g.writeback;
        return 0;
    } else if (off == MB_REG_RING || off == MB_REG_RING + 4) {
        if (!write64(off, count, buf, MB_REG_RING, &g.ring))
            return -EINVAL;
    } else if (count != 4) {
        return -EINVAL;
    } else if (off == MB_REG_RING_SLOTS) {
        g.ring_slots = x;
    } else if (off == MB_REG_INDEX) {
        g.index = x;
    } else if (off == MB_REG_INTERVAL) {
        g.interval_us = x ? x : 1;
    } else if (off == MB_REG_CONTROL) {
        g.control = x;
    } else if (off == MB_REG_IRQ_STATUS) {
        g.irq_status &= ~x; /* write one to clear */
    } else {
        return -EINVAL;
    }
    if (!prog_valid(&g))
        return -EINVAL;
    was = irq_line(&mb->prog);
    mb->prog = g;
    irq_update(mb, was); /* interrupts enabled with a status bit set */
    return 0;
}

/* BAR1: the registers. */
static int regs_access(void *priv, uint32_t region, uint64_t off, void *buf, uint32_t count,
                       bool write)
{
    struct mailbox *mb = priv;
    uint8_t regs[MB_REGS_SIZE];
    uint32_t abi = MB_ABI;
    uint64_t v;
    int ret;

    (void)region;
    pthread_mutex_lock(&mb->lock);
    if (write) {
        ret = reg_write(mb, off, buf, count);
        pthread_mutex_unlock(&mb->lock);
        return ret;
    }
    memset(regs, 0, sizeof(regs));
    memcpy(regs + MB_REG_MAGIC, "MBOX", 4);
    memcpy(regs + MB_REG_ABI, &abi, 4);
    memcpy(regs + MB_REG_INDEX, &mb->prog.index, 4);
    memcpy(regs + MB_REG_INTERVAL, &mb->prog.interval_us, 4);
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
    v = pending(mb);
    memcpy(regs + MB_REG_PENDING, &v, 8);
    memcpy(regs + MB_REG_CONTROL, &mb->prog.control, 4);
    memcpy(regs + MB_REG_IRQ_STATUS, &mb->prog.irq_status, 4);
    memcpy(regs + MB_REG_WRITEBACK, &mb->prog.writeback, 8);
    memcpy(regs + MB_REG_IRQS, &mb->irqs, 8);
    memcpy(regs + MB_REG_WRITEBACKS, &mb->writebacks, 8);
    memcpy(regs + MB_REG_RING, &mb->prog.ring, 8);
    memcpy(regs + MB_REG_RING_SLOTS, &mb->prog.ring_slots, 4);
    memcpy(regs + MB_REG_RING_COUNT, &mb->ring_count, 8);
    memcpy(regs + MB_REG_SENT_TO, mb->sent_to, sizeof(mb->sent_to));
    memcpy(regs + MB_REG_CONS_FROM, mb->cons_from, sizeof(mb->cons_from));
    memcpy(regs + MB_REG_PEER(0), mb->prog.peer, sizeof(mb->prog.peer));
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
        /* its DMA goes through the table's accessors: the table keeps the
         * dirty log a VMM asks for */
        .dma_log = dma ? vfm_dma_log_ops() : NULL,
        .dma_log_ctx = dma,
    };
    struct mailbox *mb = calloc(1, sizeof(*mb));
    int ret;

    if (!mb)
        return -ENOMEM;
    mb->dma = dma;
    mb->mode = MB_RUNNING;
    prog_reset(mb);
    pthread_mutex_init(&mb->lock, NULL);
    pthread_cond_init(&mb->idle, NULL);
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
    mb->inbox = mmap(NULL, MB_INBOX_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mb->inbox_fd, 0);
    if (mb->inbox == MAP_FAILED) {
        ret = -errno;
        goto err_close;
    }
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
    munmap(mb->inbox, MB_INBOX_SIZE);
err_close:
    close(mb->inbox_fd);
err_free:
    pthread_mutex_destroy(&mb->lock);
    pthread_cond_destroy(&mb->idle);
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
    munmap(mb->inbox, MB_INBOX_SIZE);
    close(mb->inbox_fd);
    pthread_mutex_destroy(&mb->lock);
    pthread_cond_destroy(&mb->idle);
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
        .mem = mb->inbox,
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
    struct vfm_pci *pci;
    int ret;

    pthread_mutex_lock(&mb->lock);
    pci = mb->pci;
    pthread_mutex_unlock(&mb->lock);
    if (!pci) {
        c.bars[MB_REGION_INBOX] = (struct vfm_pci_bar){
            .type = VFM_PCI_BAR_MEM32, .size = MB_INBOX_SIZE, .fd = mb->inbox_fd, .mem = mb->inbox};
        c.bars[MB_REGION_REGS] = (struct vfm_pci_bar){
            .type = VFM_PCI_BAR_MEM32, .size = MB_REGS_SIZE, .fd = -1, .access = regs_access};
        c.bars[MB_REGION_MSIX] = (struct vfm_pci_bar){
            .type = VFM_PCI_BAR_MEM32, .size = sizeof(mb->msix_bar), .fd = -1, .mem = mb->msix_bar};
        for (unsigned i = MB_REGION_MSIX + 1; i < VFM_PCI_NUM_BARS; i++)
            c.bars[i].fd = -1;
        if ((ret = vfm_pci_new(&c, mb->dev, &pci)))
            return ret;
        /* the worker reads mb->pci under the lock */
        pthread_mutex_lock(&mb->lock);
        mb->pci = pci;
        pthread_mutex_unlock(&mb->lock);
    }
    *out = pci;
    return 0;
}
