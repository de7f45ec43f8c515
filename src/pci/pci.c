/* SPDX-License-Identifier: MIT */
/* The PCI device model (include/vfiomig/pci.h): the declaration checked,
 * the config space built and virtualised, and its state. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vfiomig/pci.h>

/* Config space offsets and bits (PCI Local Bus 3.0, PCI Express 4.0) */
#define CFG_VENDOR 0x00
#define CFG_DEVICE 0x02
#define CFG_COMMAND 0x04
#define CFG_STATUS 0x06
#define CFG_REVISION 0x08
#define CFG_CLASS 0x09
#define CFG_CACHE_LINE 0x0c
#define CFG_HEADER_TYPE 0x0e
#define CFG_BAR0 0x10
#define CFG_SUBSYS_VENDOR 0x2c
#define CFG_SUBSYS 0x2e
#define CFG_CAP_PTR 0x34
#define CFG_INT_LINE 0x3c
#define CFG_INT_PIN 0x3d
#define CFG_CAPS 0x40

#define CMD_IO 0x0001u
#define CMD_MEMORY 0x0002u
#define CMD_MASTER 0x0004u
#define CMD_PARITY 0x0040u
#define CMD_SERR 0x0100u
#define CMD_INTX_DISABLE 0x0400u
#define STATUS_INTX 0x0008u
#define STATUS_CAP_LIST 0x0010u
#define STATUS_W1C 0xf900u /* parity, SERR, master/target aborts, data parity */

#define CAP_PM 0x01
#define CAP_MSI 0x05
#define CAP_EXP 0x10
#define CAP_MSIX 0x11
#define PM_SIZE 8
#define MSI_SIZE 24 /* 64-bit, per-vector masking */
#define MSIX_SIZE 12
#define EXP_SIZE 60 /* capability version 2 */

#define STATE_MAGIC 0x49435056u /* "VPCI" */
#define STATE_VERSION 1u

struct vfm_pci {
    pthread_mutex_t lock;
    struct vfm_pci_config cfg;
    struct vfm_device *dev;
    uint32_t size; /* of the config space */
    uint8_t *space, *wmask, *w1c;
    uint8_t msi_cap, msix_cap, pm_cap, exp_cap; /* offsets, 0: absent */
    uint8_t *msix_table;                        /* 16 bytes a vector */
    uint64_t *msix_pba;
    uint32_t msix_pba_words;
    /* the client's eventfds (-1: none), one per vector of each index */
    int intx_fd, err_fd, req_fd;
    int msi_fd[32];
    int *msix_fd;
    bool intx_masked;   /* by the client, or automatically at each assertion */
    bool intx_asserted; /* raised and not yet delivered */
};

/* The saved form: this, then the config space, the MSI-X table, the PBA. */
struct pci_state {
    uint32_t magic;
    uint32_t version;
    uint16_t vendor, device;
    uint32_t config_size;
    uint32_t msix_vectors;
    uint32_t reserved;
};

static bool pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

static bool is_mem(enum vfm_pci_bar_type t)
{
    return t == VFM_PCI_BAR_MEM32 || t == VFM_PCI_BAR_MEM64;
}

static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

/* Whether [off, off+len) of BAR @b is free of the mmap areas (and of the
 * whole BAR when an fd with no areas makes all of it mappable). */
static bool unmapped(const struct vfm_pci_bar *b, uint64_t off, uint64_t len)
{
    if (b->fd >= 0 && b->nmmap == 0)
        return false;
    for (uint32_t i = 0; i < b->nmmap; i++)
        if (overlap(off, len, b->mmap[i].offset, b->mmap[i].size))
            return false;
    return true;
}

static int check_bars(const struct vfm_pci_config *c)
{
    for (unsigned i = 0; i < VFM_PCI_NUM_BARS; i++) {
        const struct vfm_pci_bar *b = &c->bars[i];
        if (b->type == VFM_PCI_BAR_NONE) {
            if (b->size || b->nmmap)
                return -EINVAL;
            continue;
        }
        if (b->type > VFM_PCI_BAR_IO || !pow2(b->size) || b->nmmap > VFM_PCI_MAX_MMAP_AREAS)
            return -EINVAL;
        if (is_mem(b->type) &&
            (b->size < 4096 || (b->type == VFM_PCI_BAR_MEM32 && b->size > (1ull << 31))))
            return -EINVAL;
        if (b->type == VFM_PCI_BAR_IO &&
            (b->size < 4 || b->size > 256 || b->prefetchable || b->fd >= 0))
            return -EINVAL;
        if (b->type == VFM_PCI_BAR_MEM64) {
            /* the next slot is its upper half */
            if (i + 1 >= VFM_PCI_NUM_BARS || c->bars[i + 1].type != VFM_PCI_BAR_NONE ||
                c->bars[i + 1].size)
                return -EINVAL;
        }
        if (!b->mem && !b->access)
            return -EINVAL; /* nothing would answer an access */
        if (b->fd >= 0 && !b->mem)
            return -EINVAL; /* REGION_READ/WRITE of a mapped part need it */
        if (b->nmmap && b->fd < 0)
            return -EINVAL;
        for (uint32_t k = 0; k < b->nmmap; k++) {
            const struct vfm_pci_mmap_area *m = &b->mmap[k];
            if (!m->size || m->offset % 4096 || m->size % 4096 || m->offset > b->size ||
                m->size > b->size - m->offset)
                return -EINVAL;
            for (uint32_t j = 0; j < k; j++)
                if (overlap(m->offset, m->size, b->mmap[j].offset, b->mmap[j].size))
                    return -EINVAL;
        }
        if (b->type == VFM_PCI_BAR_MEM64)
            i++;
    }
    return 0;
}

static int check_msix(const struct vfm_pci_config *c)
{
    const struct vfm_pci_msix *x = &c->msix;
    uint64_t tlen = 16ull * x->vectors, plen = 8ull * ((x->vectors + 63u) / 64u);
    const struct vfm_pci_bar *tb, *pb;

    if (!x->vectors)
        return 0;
    if (x->vectors > 2048 || x->table_bar >= VFM_PCI_NUM_BARS || x->pba_bar >= VFM_PCI_NUM_BARS ||
        x->table_offset % 8 || x->pba_offset % 8)
        return -EINVAL;
    tb = &c->bars[x->table_bar];
    pb = &c->bars[x->pba_bar];
    if (!is_mem(tb->type) || !is_mem(pb->type) || x->table_offset + tlen > tb->size ||
        x->pba_offset + plen > pb->size)
        return -EINVAL;
    if (x->table_bar == x->pba_bar && overlap(x->table_offset, tlen, x->pba_offset, plen))
        return -EINVAL;
    /* the layer serves them: no client may map over them */
    if (!unmapped(tb, x->table_offset, tlen) || !unmapped(pb, x->pba_offset, plen))
        return -EINVAL;
    return 0;
}

static void put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static uint16_t get16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Appends a capability of @len bytes with @id at *@at; chains it. */
static uint8_t add_cap(struct vfm_pci *p, uint8_t *prev_next, uint8_t *at, uint8_t id, uint8_t len)
{
    uint8_t off = *at;

    p->space[off] = id;
    p->space[off + 1] = 0;
    *prev_next = off;
    *at = (uint8_t)(off + ((len + 3u) & ~3u));
    return off;
}

static void build(struct vfm_pci *p)
{
    const struct vfm_pci_config *c = &p->cfg;
    uint8_t *s = p->space, *w = p->wmask, at = CFG_CAPS, *next = &s[CFG_CAP_PTR];
    uint16_t cmd_mask = CMD_MASTER | CMD_PARITY | CMD_SERR;
    bool caps = false;

    put16(s + CFG_VENDOR, c->ids.vendor);
    put16(s + CFG_DEVICE, c->ids.device);
    s[CFG_REVISION] = c->ids.revision;
    s[CFG_CLASS] = (uint8_t)c->ids.class_code;
    s[CFG_CLASS + 1] = (uint8_t)(c->ids.class_code >> 8);
    s[CFG_CLASS + 2] = (uint8_t)(c->ids.class_code >> 16);
    s[CFG_HEADER_TYPE] = 0; /* a type 0 header, one function */
    put16(s + CFG_SUBSYS_VENDOR, c->ids.subsystem_vendor ? c->ids.subsystem_vendor : c->ids.vendor);
    put16(s + CFG_SUBSYS, c->ids.subsystem ? c->ids.subsystem : c->ids.device);
    w[CFG_CACHE_LINE] = 0xff;
    w[CFG_INT_LINE] = 0xff;
    if (c->intx) {
        s[CFG_INT_PIN] = 1; /* INTA# */
        cmd_mask |= CMD_INTX_DISABLE;
    }
    /* BARs: only the address bits are writable, so that all ones read
     * back as the size mask with the type bits */
    for (unsigned i = 0; i < VFM_PCI_NUM_BARS; i++) {
        const struct vfm_pci_bar *b = &c->bars[i];
        uint8_t *r = s + CFG_BAR0 + 4 * i, *m = w + CFG_BAR0 + 4 * i;
        uint64_t mask = ~(b->size - 1);
        switch (b->type) {
        case VFM_PCI_BAR_NONE:
            continue;
        case VFM_PCI_BAR_IO:
            put32(r, 0x1);
            put32(m, (uint32_t)mask & ~0x3u);
            cmd_mask |= CMD_IO;
            continue;
        case VFM_PCI_BAR_MEM32:
            put32(r, b->prefetchable ? 0x8u : 0);
            put32(m, (uint32_t)mask & ~0xfu);
            cmd_mask |= CMD_MEMORY;
            continue;
        case VFM_PCI_BAR_MEM64:
            put32(r, 0x4u | (b->prefetchable ? 0x8u : 0));
            put32(m, (uint32_t)mask & ~0xfu);
            put32(m + 4, (uint32_t)(mask >> 32));
            cmd_mask |= CMD_MEMORY;
            i++;
            continue;
        }
    }
    put16(w + CFG_COMMAND, cmd_mask);
    put16(p->w1c + CFG_STATUS, STATUS_W1C);
    /* the capability list */
    if (c->pm) {
        uint8_t o = p->pm_cap = add_cap(p, next, &at, CAP_PM, PM_SIZE);
        put16(s + o + 2, 0x0003); /* PMC: version 3, D0 and D3hot only */
        put16(w + o + 4, 0x0003); /* PMCSR: the power state */
        next = &s[o + 1];
        caps = true;
    }
    if (c->msi_vectors) {
        uint8_t o = p->msi_cap = add_cap(p, next, &at, CAP_MSI, MSI_SIZE);
        uint16_t mmc = 0;
        while ((1u << mmc) < c->msi_vectors)
            mmc++;
        /* 64-bit, per-vector masking; enable and the enabled count writable */
        put16(s + o + 2, (uint16_t)(0x0180u | (mmc << 1)));
        put16(w + o + 2, 0x0071);
        put32(w + o + 4, 0xfffffffcu); /* address, dword aligned */
        put32(w + o + 8, 0xffffffffu); /* upper address */
        put16(w + o + 12, 0xffff);     /* data */
        put32(w + o + 16, c->msi_vectors == 32 ? 0xffffffffu : (1u << c->msi_vectors) - 1);
        next = &s[o + 1];
        caps = true;
    }
    if (c->msix.vectors) {
        uint8_t o = p->msix_cap = add_cap(p, next, &at, CAP_MSIX, MSIX_SIZE);
        put16(s + o + 2, (uint16_t)(c->msix.vectors - 1));
        put16(w + o + 2, 0xc000); /* enable, function mask */
        put32(s + o + 4, c->msix.table_offset | c->msix.table_bar);
        put32(s + o + 8, c->msix.pba_offset | c->msix.pba_bar);
        next = &s[o + 1];
        caps = true;
    }
    if (c->express) {
        uint8_t o = p->exp_cap = add_cap(p, next, &at, CAP_EXP, EXP_SIZE);
        put16(s + o + 2, 0x0002);       /* version 2, an endpoint */
        put32(s + o + 4, 0x00008000u);  /* device caps: role-based error reporting */
        put16(w + o + 8, 0x7fff);       /* device control */
        put16(p->w1c + o + 10, 0x000f); /* device status: the error bits */
        put32(s + o + 12, 0x00000011u); /* link caps: 2.5 GT/s, x1 */
        put16(w + o + 16, 0x01c3);      /* link control: ASPM, RCB, common clock, ext. sync */
        put16(s + o + 18, 0x0011);      /* link status: 2.5 GT/s, x1 */
        put16(w + o + 40, 0x7fff);      /* device control 2 */
        next = &s[o + 1];
        caps = true;
    }
    (void)next;
    if (caps)
        put16(s + CFG_STATUS, STATUS_CAP_LIST);
}

int vfm_pci_new(const struct vfm_pci_config *cfg, struct vfm_device *dev, struct vfm_pci **out)
{
    struct vfm_pci *p;
    int ret;

    if (!cfg || !out || cfg->version > VFM_PCI_CONFIG_VERSION || cfg->ids.class_code > 0xffffff)
        return -EINVAL;
    if (cfg->msi_vectors && (!pow2(cfg->msi_vectors) || cfg->msi_vectors > 32))
        return -EINVAL;
    if ((ret = check_bars(cfg)) || (ret = check_msix(cfg)))
        return ret;
    p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->cfg = *cfg;
    p->dev = dev;
    p->size = cfg->express ? VFM_PCI_CONFIG_SIZE_EXPRESS : VFM_PCI_CONFIG_SIZE;
    p->space = calloc(3, p->size);
    p->msix_pba_words = (cfg->msix.vectors + 63u) / 64u;
    p->msix_table = calloc(cfg->msix.vectors ? cfg->msix.vectors : 1, 16);
    p->msix_pba = calloc(p->msix_pba_words ? p->msix_pba_words : 1, 8);
    if (!p->space || !p->msix_table || !p->msix_pba) {
        vfm_pci_free(p);
        return -ENOMEM;
    }
    p->msix_fd = malloc(sizeof(int) * (cfg->msix.vectors ? cfg->msix.vectors : 1));
    if (!p->msix_fd) {
        vfm_pci_free(p);
        return -ENOMEM;
    }
    p->intx_fd = p->err_fd = p->req_fd = -1;
    for (unsigned i = 0; i < 32; i++)
        p->msi_fd[i] = -1;
    for (uint32_t i = 0; i < cfg->msix.vectors; i++)
        p->msix_fd[i] = -1;
    p->wmask = p->space + p->size;
    p->w1c = p->wmask + p->size;
    /* every vector starts masked (PCI Local Bus 3.0, 6.8.2.9) */
    for (uint32_t v = 0; v < cfg->msix.vectors; v++)
        put32(p->msix_table + 16 * v + 12, 1);
    pthread_mutex_init(&p->lock, NULL);
    build(p);
    *out = p;
    return 0;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

void vfm_pci_free(struct vfm_pci *p)
{
    if (!p)
        return;
    if (p->msix_fd) {
        close_fd(&p->intx_fd);
        close_fd(&p->err_fd);
        close_fd(&p->req_fd);
        for (unsigned i = 0; i < 32; i++)
            close_fd(&p->msi_fd[i]);
        for (uint32_t i = 0; i < p->cfg.msix.vectors; i++)
            close_fd(&p->msix_fd[i]);
        free(p->msix_fd);
    }
    if (p->space)
        pthread_mutex_destroy(&p->lock);
    free(p->space);
    free(p->msix_table);
    free(p->msix_pba);
    free(p);
}

/* ---- interrupts (lock held) ---- */

static void signal_fd(int fd)
{
    uint64_t one = 1;
    if (fd >= 0 && write(fd, &one, sizeof(one)) < 0) {
        /* an eventfd at its maximum count: the guest has the interrupt */
    }
}

static bool msix_enabled(const struct vfm_pci *p)
{
    return p->msix_cap && (get16(p->space + p->msix_cap + 2) & 0x8000);
}

static bool msix_function_masked(const struct vfm_pci *p)
{
    return get16(p->space + p->msix_cap + 2) & 0x4000;
}

static bool msix_vector_masked(const struct vfm_pci *p, uint32_t v)
{
    return get32(p->msix_table + 16 * v + 12) & 1;
}

static bool msi_enabled(const struct vfm_pci *p)
{
    return p->msi_cap && (get16(p->space + p->msi_cap + 2) & 0x0001);
}

/* MSI vectors the guest enabled (its MME, never more than declared). */
static uint32_t msi_count(const struct vfm_pci *p)
{
    uint32_t n = 1u << ((get16(p->space + p->msi_cap + 2) >> 4) & 7);
    return n < p->cfg.msi_vectors ? n : p->cfg.msi_vectors;
}

/* Pending MSI-X and MSI vectors whose masks were lifted: delivered. */
static void deliver_pending(struct vfm_pci *p)
{
    if (msix_enabled(p) && !msix_function_masked(p)) {
        for (uint32_t v = 0; v < p->cfg.msix.vectors; v++) {
            if ((p->msix_pba[v / 64] >> (v % 64) & 1) && !msix_vector_masked(p, v)) {
                p->msix_pba[v / 64] &= ~(1ull << (v % 64));
                signal_fd(p->msix_fd[v]);
            }
        }
    }
    if (msi_enabled(p)) {
        uint8_t o = p->msi_cap;
        uint32_t mask = get32(p->space + o + 16), pend = get32(p->space + o + 20);
        uint32_t go = pend & ~mask;
        for (uint32_t v = 0; go && v < 32; v++)
            if (go >> v & 1)
                signal_fd(p->msi_fd[v]);
        put32(p->space + o + 20, pend & mask);
    }
}

static void set_intx_status(struct vfm_pci *p, bool on)
{
    uint16_t st = get16(p->space + CFG_STATUS);
    put16(p->space + CFG_STATUS, on ? (uint16_t)(st | STATUS_INTX) : (uint16_t)(st & ~STATUS_INTX));
}

int vfm_pci_raise(struct vfm_pci *p, uint32_t vector)
{
    int ret = 0;

    if (!p)
        return -EINVAL;
    pthread_mutex_lock(&p->lock);
    if (msix_enabled(p)) {
        if (vector >= p->cfg.msix.vectors) {
            ret = -EINVAL;
        } else if (msix_function_masked(p) || msix_vector_masked(p, vector)) {
            p->msix_pba[vector / 64] |= 1ull << (vector % 64);
        } else if (p->msix_fd[vector] >= 0) {
            signal_fd(p->msix_fd[vector]);
            ret = 1;
        }
    } else if (msi_enabled(p)) {
        uint8_t o = p->msi_cap;
        if (vector >= msi_count(p)) {
            ret = -EINVAL;
        } else if (get32(p->space + o + 16) >> vector & 1) {
            put32(p->space + o + 20, get32(p->space + o + 20) | 1u << vector);
        } else if (p->msi_fd[vector] >= 0) {
            signal_fd(p->msi_fd[vector]);
            ret = 1;
        }
    } else if (p->cfg.intx && !(get16(p->space + CFG_COMMAND) & CMD_INTX_DISABLE)) {
        if (vector) {
            ret = -EINVAL;
        } else if (p->intx_masked) {
            p->intx_asserted = true; /* delivered at the unmask */
            set_intx_status(p, true);
        } else if (p->intx_fd >= 0) {
            signal_fd(p->intx_fd);
            p->intx_masked = true; /* automasked until the client unmasks */
            set_intx_status(p, true);
            ret = 1;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return ret;
}

static int pci_irq_info(void *priv, uint32_t index, struct vfm_vu_irq_info *info)
{
    struct vfm_pci *p = priv;

    switch (index) {
    case VFM_PCI_INTX_IRQ:
        info->count = p->cfg.intx;
        info->flags =
            VFM_VU_IRQ_INFO_EVENTFD | VFM_VU_IRQ_INFO_MASKABLE | VFM_VU_IRQ_INFO_AUTOMASKED;
        return 0;
    case VFM_PCI_MSI_IRQ:
        info->count = p->cfg.msi_vectors;
        info->flags = VFM_VU_IRQ_INFO_EVENTFD | VFM_VU_IRQ_INFO_NORESIZE;
        return 0;
    case VFM_PCI_MSIX_IRQ:
        info->count = p->cfg.msix.vectors;
        info->flags = VFM_VU_IRQ_INFO_EVENTFD | VFM_VU_IRQ_INFO_NORESIZE;
        return 0;
    case VFM_PCI_ERR_IRQ:
        /* one, as QEMU's vfio-pci sets it up for every device (it warns
         * "Could not enable error recovery" when it cannot); the model
         * raises none yet */
        info->count = 1;
        info->flags = VFM_VU_IRQ_INFO_EVENTFD;
        return 0;
    case VFM_PCI_REQ_IRQ:
        info->count = 1;
        info->flags = VFM_VU_IRQ_INFO_EVENTFD;
        return 0;
    }
    return -EINVAL;
}

/* The fds of an index's vectors [start, start+count). */
static int *index_fds(struct vfm_pci *p, uint32_t index)
{
    switch (index) {
    case VFM_PCI_INTX_IRQ:
        return &p->intx_fd;
    case VFM_PCI_MSI_IRQ:
        return p->msi_fd;
    case VFM_PCI_MSIX_IRQ:
        return p->msix_fd;
    case VFM_PCI_ERR_IRQ:
        return &p->err_fd;
    default:
        return &p->req_fd;
    }
}

/* SET_IRQS (the server checked the flags, the range and the data). */
static int pci_set_irqs(void *priv, const struct vfm_vu_irq_set *q, const void *data, size_t len,
                        const int *fds, unsigned nfds)
{
    struct vfm_pci *p = priv;
    uint32_t dt = q->flags & VFM_VU_IRQ_SET_DATA_MASK;
    uint32_t action = q->flags & VFM_VU_IRQ_SET_ACTION_MASK_ALL;
    const uint8_t *b = data;
    int *f = index_fds(p, q->index), ret = 0;
    (void)len;
    (void)nfds;

    pthread_mutex_lock(&p->lock);
    if (action == VFM_VU_IRQ_SET_ACTION_TRIGGER) {
        if (q->count == 0) { /* the whole index off */
            struct vfm_vu_irq_info info = {0};
            pci_irq_info(p, q->index, &info);
            for (uint32_t v = 0; v < info.count; v++)
                close_fd(&f[v]);
        }
        for (uint32_t k = 0; k < q->count; k++) {
            uint32_t v = q->start + k;
            if (dt == VFM_VU_IRQ_SET_DATA_EVENTFD) {
                int fd = dup(fds[k]);
                if (fd < 0) {
                    ret = -errno;
                    break;
                }
                close_fd(&f[v]);
                f[v] = fd;
            } else if (dt == VFM_VU_IRQ_SET_DATA_NONE || b[k]) {
                signal_fd(f[v]); /* a test trigger from the client */
            }
        }
    } else if (q->index == VFM_PCI_INTX_IRQ && dt != VFM_VU_IRQ_SET_DATA_EVENTFD) {
        bool on = dt == VFM_VU_IRQ_SET_DATA_NONE || b[0];
        if (on && action == VFM_VU_IRQ_SET_ACTION_MASK) {
            p->intx_masked = true;
        } else if (on) { /* unmask: an assertion held meanwhile is delivered */
            p->intx_masked = false;
            if (p->intx_asserted && p->intx_fd >= 0 &&
                !(get16(p->space + CFG_COMMAND) & CMD_INTX_DISABLE)) {
                p->intx_asserted = false;
                signal_fd(p->intx_fd);
                p->intx_masked = true;
            } else if (!p->intx_asserted) {
                set_intx_status(p, false);
            }
        }
    } else {
        ret = -EINVAL; /* masking MSI/MSI-X goes through the guest's own masks */
    }
    pthread_mutex_unlock(&p->lock);
    return ret;
}

/* ---- the regions ---- */

/* Whether [off, off+count) lies inside [base, base+len). */
static bool inside(uint64_t off, uint32_t count, uint64_t base, uint64_t len)
{
    return off >= base && count <= len && off - base <= len - count;
}

static int bar_access(void *priv, uint32_t region, uint64_t off, void *buf, uint32_t count,
                      bool write)
{
    struct vfm_pci *p = priv;
    const struct vfm_pci_msix *x = &p->cfg.msix;
    const struct vfm_pci_bar *b = &p->cfg.bars[region];
    uint64_t tlen = 16ull * x->vectors, plen = 8ull * p->msix_pba_words;

    if (x->vectors && region == x->table_bar && overlap(off, count, x->table_offset, tlen)) {
        if (!inside(off, count, x->table_offset, tlen))
            return -EINVAL;
        pthread_mutex_lock(&p->lock);
        if (write) {
            memcpy(p->msix_table + (off - x->table_offset), buf, count);
            deliver_pending(p); /* an unmasked vector's pending interrupt goes */
        } else {
            memcpy(buf, p->msix_table + (off - x->table_offset), count);
        }
        pthread_mutex_unlock(&p->lock);
        return 0;
    }
    if (x->vectors && region == x->pba_bar && overlap(off, count, x->pba_offset, plen)) {
        if (!inside(off, count, x->pba_offset, plen))
            return -EINVAL;
        if (!write) { /* the PBA is read-only */
            pthread_mutex_lock(&p->lock);
            memcpy(buf, (uint8_t *)p->msix_pba + (off - x->pba_offset), count);
            pthread_mutex_unlock(&p->lock);
        }
        return 0;
    }
    if (b->access)
        return b->access(p->cfg.priv, region, off, buf, count, write);
    if (write)
        memcpy((uint8_t *)b->mem + off, buf, count);
    else
        memcpy(buf, (const uint8_t *)b->mem + off, count);
    return 0;
}

static int config_access(void *priv, uint32_t region, uint64_t off, void *buf, uint32_t count,
                         bool write)
{
    (void)region;
    return write ? vfm_pci_config_write(priv, off, buf, count)
                 : vfm_pci_config_read(priv, off, buf, count);
}

int vfm_pci_server_config(struct vfm_pci *p, struct vfm_server_config *sc)
{
    if (!p || !sc || sc->version < 2)
        return -EINVAL;
    sc->dev = p->dev;
    memset(sc->regions, 0, sizeof(sc->regions));
    memset(sc->sparse, 0, sizeof(sc->sparse));
    for (unsigned i = 0; i < VFM_SERVER_MAX_REGIONS; i++)
        sc->regions[i].fd = -1;
    for (unsigned i = 0; i < VFM_PCI_NUM_BARS; i++) {
        const struct vfm_pci_bar *b = &p->cfg.bars[i];
        if (b->type == VFM_PCI_BAR_NONE)
            continue;
        sc->regions[i] = (struct vfm_server_region){
            .size = b->size,
            .flags = VFM_VU_REGION_READ_FLAG | VFM_VU_REGION_WRITE_FLAG,
            .fd = b->fd,
            .access = bar_access,
        };
        sc->sparse[i].n = b->nmmap;
        for (uint32_t k = 0; k < b->nmmap; k++)
            sc->sparse[i].areas[k] =
                (struct vfm_server_mmap_area){b->mmap[k].offset, b->mmap[k].size};
    }
    sc->regions[VFM_PCI_CONFIG_REGION] = (struct vfm_server_region){
        .size = p->size,
        .flags = VFM_VU_REGION_READ_FLAG | VFM_VU_REGION_WRITE_FLAG,
        .fd = -1,
        .access = config_access,
    };
    sc->nregions = VFM_PCI_NUM_REGIONS;
    sc->priv = p;
    sc->nirqs = VFM_PCI_NUM_IRQS;
    sc->irq_info = pci_irq_info;
    sc->set_irqs = pci_set_irqs;
    return 0;
}

int vfm_pci_config_read(struct vfm_pci *p, uint64_t off, void *buf, uint32_t count)
{
    if (!p || !buf || off > p->size || count > p->size - off)
        return -EINVAL;
    pthread_mutex_lock(&p->lock);
    memcpy(buf, p->space + off, count);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

int vfm_pci_config_write(struct vfm_pci *p, uint64_t off, const void *buf, uint32_t count)
{
    const uint8_t *in = buf;

    if (!p || !buf || off > p->size || count > p->size - off)
        return -EINVAL;
    pthread_mutex_lock(&p->lock);
    for (uint32_t i = 0; i < count; i++) {
        uint64_t o = off + i;
        uint8_t v = p->space[o];
        v = (uint8_t)((v & ~p->wmask[o]) | (in[i] & p->wmask[o])); /* writable bits */
        v = (uint8_t)(v & ~(in[i] & p->w1c[o]));                   /* write one to clear */
        p->space[o] = v;
    }
    deliver_pending(p); /* an unmask, or an enable, may release some */
    pthread_mutex_unlock(&p->lock);
    return 0;
}

/* What a BAR's address bits read after all ones were written to them. */
static uint64_t sizing_value(const struct vfm_pci_bar *b)
{
    uint64_t mask = ~(b->size - 1);

    switch (b->type) {
    case VFM_PCI_BAR_IO:
        return mask & 0xfffffffcull;
    case VFM_PCI_BAR_MEM32:
        return mask & 0xfffffff0ull;
    case VFM_PCI_BAR_MEM64:
        return mask & ~0xfull;
    default:
        return 0;
    }
}

uint64_t vfm_pci_bar_address(struct vfm_pci *p, uint32_t bar)
{
    uint64_t a = 0;

    if (!p || bar >= VFM_PCI_NUM_BARS)
        return 0;
    pthread_mutex_lock(&p->lock);
    switch (p->cfg.bars[bar].type) {
    case VFM_PCI_BAR_NONE:
        break;
    case VFM_PCI_BAR_IO:
        a = get32(p->space + CFG_BAR0 + 4 * bar) & ~0x3u;
        break;
    case VFM_PCI_BAR_MEM32:
        a = get32(p->space + CFG_BAR0 + 4 * bar) & ~0xfu;
        break;
    case VFM_PCI_BAR_MEM64:
        a = (get32(p->space + CFG_BAR0 + 4 * bar) & ~0xfull) |
            (uint64_t)get32(p->space + CFG_BAR0 + 4 * bar + 4) << 32;
        break;
    }
    /* all ones written (the guest is sizing it): no address yet */
    if (a && a == sizing_value(&p->cfg.bars[bar]))
        a = 0;
    pthread_mutex_unlock(&p->lock);
    return a;
}

bool vfm_pci_bus_master(struct vfm_pci *p)
{
    bool on;

    if (!p)
        return false;
    pthread_mutex_lock(&p->lock);
    on = get16(p->space + CFG_COMMAND) & CMD_MASTER;
    pthread_mutex_unlock(&p->lock);
    return on;
}

size_t vfm_pci_state_size(const struct vfm_pci *p)
{
    return sizeof(struct pci_state) + p->size + 16u * p->cfg.msix.vectors + 8u * p->msix_pba_words;
}

int vfm_pci_save_mem(struct vfm_pci *p, void *mem, size_t len)
{
    struct pci_state st = {.magic = STATE_MAGIC,
                           .version = STATE_VERSION,
                           .vendor = p->cfg.ids.vendor,
                           .device = p->cfg.ids.device,
                           .config_size = p->size,
                           .msix_vectors = p->cfg.msix.vectors};
    uint8_t *out = mem;

    if (len != vfm_pci_state_size(p))
        return -EINVAL;
    pthread_mutex_lock(&p->lock);
    memcpy(out, &st, sizeof(st));
    out += sizeof(st);
    memcpy(out, p->space, p->size);
    out += p->size;
    memcpy(out, p->msix_table, 16u * p->cfg.msix.vectors);
    out += 16u * p->cfg.msix.vectors;
    memcpy(out, p->msix_pba, 8u * p->msix_pba_words);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

int vfm_pci_save(struct vfm_pci *p, struct vfm_buf *out)
{
    size_t len = vfm_pci_state_size(p);
    void *mem = vfm_buf_reserve(out, len);

    return mem ? vfm_pci_save_mem(p, mem, len) : -ENOMEM;
}

/* Read-only bits at @o that are the device's state, not its declaration:
 * the INTx status bit, and the MSI pending bits of the vectors it has. */
static uint8_t state_bits(const struct vfm_pci *p, uint32_t o)
{
    if (o == CFG_STATUS)
        return STATUS_INTX;
    if (p->msi_cap && o >= p->msi_cap + 20u && o < p->msi_cap + 24u) {
        uint32_t bits = p->cfg.msi_vectors == 32 ? 0xffffffffu : (1u << p->cfg.msi_vectors) - 1;
        return (uint8_t)(bits >> (8 * (o - p->msi_cap - 20u)));
    }
    return 0;
}

int vfm_pci_load(struct vfm_pci *p, const void *data, size_t len)
{
    const uint8_t *in = data, *space, *table, *pba;
    struct pci_state st;

    if (!p || !data || len != vfm_pci_state_size(p))
        return -EINVAL;
    memcpy(&st, in, sizeof(st));
    if (st.magic != STATE_MAGIC || st.version != STATE_VERSION || st.vendor != p->cfg.ids.vendor ||
        st.device != p->cfg.ids.device || st.config_size != p->size ||
        st.msix_vectors != p->cfg.msix.vectors || st.reserved)
        return -EINVAL;
    space = in + sizeof(st);
    table = space + p->size;
    pba = table + 16u * p->cfg.msix.vectors;
    /* the declaration's read-only bytes must be this device's: a save of
     * another model (other BARs, other capabilities) is refused */
    for (uint32_t o = 0; o < p->size; o++) {
        uint8_t ro = (uint8_t) ~(p->wmask[o] | p->w1c[o] | state_bits(p, o));
        if ((space[o] & ro) != (p->space[o] & ro))
            return -EINVAL;
    }
    pthread_mutex_lock(&p->lock);
    for (uint32_t o = 0; o < p->size; o++) {
        /* writable, sticky (write-one-to-clear) and device-state bits come
         * from the save */
        uint8_t keep = (uint8_t)(p->wmask[o] | p->w1c[o] | state_bits(p, o));
        p->space[o] = (uint8_t)((p->space[o] & ~keep) | (space[o] & keep));
    }
    memcpy(p->msix_table, table, 16u * p->cfg.msix.vectors);
    memcpy(p->msix_pba, pba, 8u * p->msix_pba_words);
    if (p->cfg.msix.vectors % 64) /* no pending bit past the last vector */
        p->msix_pba[p->msix_pba_words - 1] &= (1ull << (p->cfg.msix.vectors % 64)) - 1;
    pthread_mutex_unlock(&p->lock);
    return 0;
}
