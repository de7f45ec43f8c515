/* SPDX-License-Identifier: MIT */
/* ticker — see ticker.h and docs/device-guide.md. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "ticker.h"

struct ticker {
    struct vfm_device *dev;
    pthread_t worker;
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t cond;
    bool running; /* the worker may tick */
    bool quit;
    uint64_t ticks;
    size_t mem_size;
    uint8_t *mem;   /* the device memory: block + the state header's size */
    uint8_t *block; /* a saved state's layout: header room, then memory */
    uint8_t *spare; /* the same, where a load arrives (then swapped in) */
    uint64_t alarm; /* TICKER_REG_ALARM */
    struct vfm_pci *pci;    /* as a PCI device, once served as one */
    uint8_t msix_bar[4096]; /* BAR1: the PCI layer keeps the MSI-X table here */
};

/* Room after the memory for the PCI model's state in a block (one MSI-X
 * vector, a 256-byte config space: well under this). */
#define PCI_STATE_ROOM 4096u

/* Maps @len bytes of fresh zeroed memory in: a store per page, through a
 * volatile pointer (a memset of zeros into calloc()'d memory is dropped by
 * the compiler, which knows it is zero already). */
static void prefault(uint8_t *p, size_t len)
{
    volatile uint8_t *v = p;
    for (size_t i = 0; i < len; i += 4096)
        v[i] = 0;
}

/* The saved state: this header, mem_size bytes of memory, then pci_len
 * bytes of the PCI model's state (none when it was not a PCI device). */
struct ticker_state {
    uint32_t version; /* 2 */
    uint32_t mem_size;
    uint64_t ticks;
    uint64_t alarm;
    uint32_t pci_len;
    uint32_t pad;
};

static void *ticker_worker(void *arg)
{
    struct ticker *t = arg;
    struct timespec pause = {.tv_nsec = 100 * 1000}; /* 10 kHz: visible, cheap */

    pthread_mutex_lock(&t->lock);
    while (!t->quit) {
        if (!t->running) {
            pthread_cond_wait(&t->cond, &t->lock);
            continue;
        }
        t->ticks++;
        memcpy(t->mem + (t->ticks * 8) % (t->mem_size - 7), &t->ticks, 8);
        if (t->alarm == t->ticks && t->pci) {
            t->alarm = 0; /* once */
            vfm_pci_raise(t->pci, 0); /* MSI-X, MSI or INTx: what the guest enabled */
        }
        pthread_mutex_unlock(&t->lock);
        nanosleep(&pause, NULL);
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

/* RUNNING -> STOP. Once the lock is dropped the worker sees running ==
 * false before it can tick again: the state is frozen when this returns. */
static int ticker_stop(struct vfm_device *dev, void *priv)
{
    struct ticker *t = priv;
    (void)dev;
    pthread_mutex_lock(&t->lock);
    t->running = false;
    pthread_mutex_unlock(&t->lock);
    return 0;
}

/* STOP -> RUNNING */
static int ticker_run(struct vfm_device *dev, void *priv)
{
    struct ticker *t = priv;
    (void)dev;
    pthread_mutex_lock(&t->lock);
    t->running = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

/* STOP -> STOP_COPY: the device is stopped; write its whole state. */
static int ticker_save(struct vfm_device *dev, void *priv, struct vfm_buf *out)
{
    struct ticker *t = priv;
    struct ticker_state st = {.version = 2, .mem_size = (uint32_t)t->mem_size};
    int ret;
    (void)dev;

    pthread_mutex_lock(&t->lock);
    st.ticks = t->ticks;
    st.alarm = t->alarm;
    st.pci_len = t->pci ? (uint32_t)vfm_pci_state_size(t->pci) : 0;
    ret = vfm_buf_append(out, &st, sizeof(st));
    if (!ret)
        ret = vfm_buf_append(out, t->mem, t->mem_size);
    if (!ret && t->pci) /* what the guest programmed: config space, MSI-X */
        ret = vfm_pci_save(t->pci, out);
    pthread_mutex_unlock(&t->lock);
    return ret;
}

/* RESUMING -> STOP: check everything, then change anything. */
static int ticker_load(struct vfm_device *dev, void *priv, const void *data, size_t len)
{
    struct ticker *t = priv;
    const uint8_t *pci_state = (const uint8_t *)data + sizeof(struct ticker_state) + t->mem_size;
    struct ticker_state st;
    int ret;
    (void)dev;

    if (len < sizeof(st))
        return -EINVAL;
    memcpy(&st, data, sizeof(st));
    if (st.version != 2 || st.mem_size != t->mem_size || st.pci_len > PCI_STATE_ROOM ||
        len != sizeof(st) + t->mem_size + st.pci_len || (st.pci_len && !t->pci) ||
        (st.alarm && !st.pci_len))
        return -EINVAL;
    pthread_mutex_lock(&t->lock);
    /* checks its bytes against this model and changes nothing if they fail */
    if (st.pci_len && (ret = vfm_pci_load(t->pci, pci_state, st.pci_len))) {
        pthread_mutex_unlock(&t->lock);
        return ret;
    }
    t->ticks = st.ticks;
    t->alarm = st.alarm;
    if (data == t->spare) {
        /* received in place (ticker_load_buffer): swap, no copy */
        uint8_t *old = t->block;
        t->block = t->spare;
        t->spare = old;
        t->mem = t->block + sizeof(st);
    } else {
        memcpy(t->mem, (const uint8_t *)data + sizeof(st), t->mem_size);
    }
    pthread_mutex_unlock(&t->lock);
    return 0;
}

/* RESUMING: receive a saved state straight into the spare block, laid out
 * as save() writes it (header, then memory), so load() can swap it in. */
static void *ticker_load_buffer(struct vfm_device *dev, void *priv, size_t len)
{
    struct ticker *t = priv;
    (void)dev;
    return len >= sizeof(struct ticker_state) + t->mem_size &&
                   len <= sizeof(struct ticker_state) + t->mem_size + PCI_STATE_ROOM
               ? t->spare
               : NULL;
}

/* Power-on state, running. */
static int ticker_reset(struct vfm_device *dev, void *priv)
{
    struct ticker *t = priv;
    (void)dev;
    pthread_mutex_lock(&t->lock);
    t->ticks = 0;
    t->alarm = 0;
    memset(t->mem, 0, t->mem_size);
    t->running = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

static int ticker_data_size(struct vfm_device *dev, void *priv, uint64_t *bytes)
{
    struct ticker *t = priv;
    (void)dev;
    pthread_mutex_lock(&t->lock);
    *bytes = sizeof(struct ticker_state) + t->mem_size + (t->pci ? vfm_pci_state_size(t->pci) : 0);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

static const struct vfm_mig_ops ticker_mig_ops = {
    .save = ticker_save,
    .load = ticker_load,
    .running_to_stop = ticker_stop,
    .stop_to_running = ticker_run,
    .reset = ticker_reset,
    .data_size = ticker_data_size,
    .load_buffer = ticker_load_buffer,
};

int ticker_new(const char *name, size_t mem_size, struct ticker **out)
{
    struct vfm_device_config cfg = {
        .version = VFM_DEVICE_CONFIG_VERSION,
        .name = name,
        .compat = TICKER_COMPAT,
        .mig = &ticker_mig_ops,
        .p2p = NULL, /* no peer-to-peer DMA: no P2P capability */
    };
    struct ticker *t;
    int ret;

    if (mem_size < 8 || mem_size > UINT32_MAX)
        return -EINVAL;
    t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->mem_size = mem_size;
    t->block = calloc(1, sizeof(struct ticker_state) + mem_size + PCI_STATE_ROOM);
    t->spare = calloc(1, sizeof(struct ticker_state) + mem_size + PCI_STATE_ROOM);
    if (!t->block || !t->spare) {
        ret = -ENOMEM;
        goto err_free_mem;
    }
    t->mem = t->block + sizeof(struct ticker_state);
    /* both faulted in now, not page by page as a state arrives: a swap
     * makes either one the spare */
    prefault(t->block, sizeof(struct ticker_state) + mem_size + PCI_STATE_ROOM);
    prefault(t->spare, sizeof(struct ticker_state) + mem_size + PCI_STATE_ROOM);
    t->running = true;
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->cond, NULL);
    cfg.priv = t;
    ret = vfm_device_new(&cfg, &t->dev);
    if (ret)
        goto err_free_sync;
    ret = -pthread_create(&t->worker, NULL, ticker_worker, t);
    if (ret)
        goto err_free_dev;
    *out = t;
    return 0;

err_free_dev:
    vfm_device_free(t->dev);
err_free_sync:
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
err_free_mem:
    free(t->block);
    free(t->spare);
    free(t);
    return ret;
}

void ticker_free(struct ticker *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    t->quit = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->worker, NULL);
    vfm_pci_free(t->pci);
    vfm_device_free(t->dev);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
    free(t->block);
    free(t->spare);
    free(t);
}

/* BAR0: the registers (the PCI layer checked the bounds). */
static int ticker_regs(void *priv, uint32_t bar, uint64_t off, void *buf, uint32_t count,
                       bool write)
{
    struct ticker *t = priv;
    uint64_t v;
    (void)bar;

    if (count != 8 || off % 8 || (write && off != TICKER_REG_ALARM))
        return -EINVAL;
    pthread_mutex_lock(&t->lock);
    if (write)
        memcpy(&t->alarm, buf, 8);
    v = off == TICKER_REG_TICKS ? t->ticks : off == TICKER_REG_ALARM ? t->alarm : 0;
    pthread_mutex_unlock(&t->lock);
    if (!write)
        memcpy(buf, &v, 8);
    return 0;
}

/* The PCI device a VMM sees, declared once; the PCI layer then serves its
 * config space, MSI-X table and interrupts (include/vfiomig/pci.h). */
int ticker_server_config(struct ticker *t, struct vfm_server_config *cfg)
{
    struct vfm_pci_config c = {
        .version = VFM_PCI_CONFIG_VERSION,
        .ids = {.vendor = VFM_PCI_VENDOR_EXPERIMENTAL, .device = TICKER_PCI_DEVICE,
                .class_code = 0x088000},
        .bars = {{.type = VFM_PCI_BAR_MEM32, .size = 4096, .fd = -1, .access = ticker_regs},
                 {.type = VFM_PCI_BAR_MEM32, .size = 4096, .fd = -1, .mem = t->msix_bar},
                 {.fd = -1}, {.fd = -1}, {.fd = -1}, {.fd = -1}},
        .intx = true,
        .msix = {.vectors = 1, .table_bar = 1, .pba_bar = 1, .pba_offset = 2048},
        .priv = t,
    };
    struct vfm_pci *pci = NULL;
    int ret = 0;

    pthread_mutex_lock(&t->lock);
    if (!t->pci && !(ret = vfm_pci_new(&c, t->dev, &pci)))
        t->pci = pci; /* the worker reads it under the lock */
    pthread_mutex_unlock(&t->lock);
    if (ret)
        return ret;
    if (vfm_pci_state_size(t->pci) > PCI_STATE_ROOM)
        return -E2BIG; /* not for this declaration */
    cfg->version = VFM_SERVER_CONFIG_VERSION;
    return vfm_pci_server_config(t->pci, cfg);
}

struct vfm_device *ticker_device(struct ticker *t)
{
    return t->dev;
}

uint64_t ticker_ticks(struct ticker *t)
{
    uint64_t n;
    pthread_mutex_lock(&t->lock);
    n = t->ticks;
    pthread_mutex_unlock(&t->lock);
    return n;
}

uint64_t ticker_digest(struct ticker *t)
{
    XXH3_state_t *h = XXH3_createState();
    uint64_t d;

    if (!h)
        return 0;
    XXH3_64bits_reset(h);
    pthread_mutex_lock(&t->lock);
    XXH3_64bits_update(h, &t->ticks, sizeof(t->ticks));
    XXH3_64bits_update(h, t->mem, t->mem_size);
    pthread_mutex_unlock(&t->lock);
    d = XXH3_64bits_digest(h);
    XXH3_freeState(h);
    return d;
}
