/* SPDX-License-Identifier: MIT */
/*
 * The PCI device model (include/vfiomig/pci.h): declarations no hardware
 * could have are refused; the config space reads as the declaration says
 * (ids, class, header type, interrupt pin, the capability list walked
 * from the pointer); a guest's writes change only what hardware would let
 * them (read-only ids, BAR sizing with all ones, the command register's
 * enables, status bits cleared by writing one); and the state saved is
 * restored into a model of the same declaration, never into another.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cmocka.h>

#include <vfiomig/pci.h>

#include "device/stream.h"

static uint8_t bar_mem[3][1 << 16];
static int reg_calls;

static int regs(void *priv, uint32_t region, uint64_t off, void *buf, uint32_t count, bool write)
{
    (void)priv, (void)region, (void)off, (void)count;
    reg_calls++;
    if (!write)
        memset(buf, 0xab, count);
    return 0;
}

/* A device with a 64-bit prefetchable memory BAR (0+1) with MSI-X in its
 * second half, a 32-bit register BAR (2), an I/O BAR (4); INTx, MSI (4),
 * MSI-X (8), PM and PCI Express. */
static struct vfm_pci_config full(void)
{
    struct vfm_pci_config c = {
        .version = VFM_PCI_CONFIG_VERSION,
        .ids = {.vendor = VFM_PCI_VENDOR_EXPERIMENTAL,
                .device = VFM_PCI_DEVICE_EXPERIMENTAL_FIRST,
                .class_code = 0x058000, /* memory controller, other */
                .revision = 3},
        .intx = true,
        .msi_vectors = 4,
        .msix = {.vectors = 8, .table_bar = 0, .table_offset = 0x8000, .pba_bar = 0,
                 .pba_offset = 0x9000},
        .pm = true,
        .express = true,
    };
    c.bars[0] = (struct vfm_pci_bar){.type = VFM_PCI_BAR_MEM64, .prefetchable = true,
                                     .size = 1 << 16, .fd = 3, .mem = bar_mem[0], .nmmap = 1};
    c.bars[0].mmap[0] = (struct vfm_pci_mmap_area){0, 0x8000};
    c.bars[2] = (struct vfm_pci_bar){.type = VFM_PCI_BAR_MEM32, .size = 4096, .fd = -1,
                                     .access = regs};
    c.bars[4] = (struct vfm_pci_bar){.type = VFM_PCI_BAR_IO, .size = 32, .fd = -1, .access = regs};
    c.bars[1].fd = c.bars[3].fd = c.bars[5].fd = -1;
    return c;
}

static uint32_t rd(struct vfm_pci *p, uint64_t off, uint32_t n)
{
    uint32_t v = 0;
    assert_int_equal(vfm_pci_config_read(p, off, &v, n), 0);
    return v;
}

static void wr(struct vfm_pci *p, uint64_t off, uint32_t v, uint32_t n)
{
    assert_int_equal(vfm_pci_config_write(p, off, &v, n), 0);
}

static void test_refused(void **state)
{
    struct vfm_pci *p = NULL;
    struct vfm_pci_config c;
    (void)state;

#define REFUSE(change)                                                                             \
    do {                                                                                           \
        c = full();                                                                                \
        change;                                                                                    \
        assert_int_equal(vfm_pci_new(&c, NULL, &p), -EINVAL);                                      \
    } while (0)
    REFUSE(c.bars[2].size = 6000);                            /* not a power of two */
    REFUSE(c.bars[2].size = 2048);                            /* memory under a page */
    REFUSE(c.bars[4].size = 512);                             /* I/O over 256 */
    REFUSE(c.bars[1].type = VFM_PCI_BAR_MEM32; c.bars[1].size = 4096; c.bars[1].access = regs);
    REFUSE(c.bars[5] = c.bars[0]; c.msix.vectors = 0);        /* 64-bit in the last slot */
    REFUSE(c.bars[2].access = NULL);                          /* nothing answers */
    REFUSE(c.bars[0].mmap[0].offset = 100);                   /* unaligned area */
    REFUSE(c.bars[0].mmap[0].size = 0x20000);                 /* area past the BAR */
    REFUSE(c.bars[0].nmmap = 0);                              /* whole BAR mapped over MSI-X */
    REFUSE(c.msix.pba_offset = 0x8040);                       /* PBA over the table */
    REFUSE(c.msix.table_bar = 4);                             /* MSI-X in an I/O BAR */
    REFUSE(c.msix.table_offset = 0xfff8);                     /* table past its BAR */
    REFUSE(c.msix.vectors = 4096);
    REFUSE(c.msi_vectors = 3);
    REFUSE(c.msi_vectors = 64);
    REFUSE(c.ids.class_code = 0x1000000);
    REFUSE(c.version = VFM_PCI_CONFIG_VERSION + 1);
#undef REFUSE
    assert_null(p);
    c = full();
    assert_int_equal(vfm_pci_new(&c, NULL, &p), 0);
    vfm_pci_free(p);
}

static void test_space(void **state)
{
    struct vfm_pci_config c = full();
    struct vfm_pci *p;
    uint8_t seen[256] = {0}, at;
    unsigned ncaps = 0;
    (void)state;

    assert_int_equal(vfm_pci_new(&c, NULL, &p), 0);
    assert_int_equal(rd(p, 0x00, 2), VFM_PCI_VENDOR_EXPERIMENTAL);
    assert_int_equal(rd(p, 0x02, 2), VFM_PCI_DEVICE_EXPERIMENTAL_FIRST);
    assert_int_equal(rd(p, 0x08, 4), 0x05800003); /* class, revision */
    assert_int_equal(rd(p, 0x0e, 1), 0);          /* header type 0 */
    assert_int_equal(rd(p, 0x2c, 2), VFM_PCI_VENDOR_EXPERIMENTAL);
    assert_int_equal(rd(p, 0x3d, 1), 1); /* INTA# */
    assert_true(rd(p, 0x06, 2) & 0x10);  /* a capability list */
    /* the list: PM, MSI, MSI-X, Express, each once, in the space, aligned */
    for (at = (uint8_t)rd(p, 0x34, 1); at; at = (uint8_t)rd(p, at + 1u, 1)) {
        uint8_t id = (uint8_t)rd(p, at, 1);
        assert_true(at >= 0x40 && at % 4 == 0);
        assert_false(seen[id]);
        seen[id] = 1;
        if (id == 0x11) { /* MSI-X: table size, BIR and offsets */
            assert_int_equal(rd(p, at + 2u, 2) & 0x7ff, 7);
            assert_int_equal(rd(p, at + 4u, 4), 0x8000);
            assert_int_equal(rd(p, at + 8u, 4), 0x9000);
        }
        if (id == 0x05) /* MSI: 64-bit, maskable, 4 vectors (MMC 2) */
            assert_int_equal(rd(p, at + 2u, 2), 0x0184);
        assert_true(++ncaps <= 4);
    }
    assert_int_equal(ncaps, 4);
    assert_true(seen[0x01] && seen[0x05] && seen[0x10] && seen[0x11]);
    /* 4096 bytes with Express; nothing past it */
    assert_int_equal(rd(p, 4092, 4), 0);
    uint32_t v;
    assert_int_equal(vfm_pci_config_read(p, 4093, &v, 4), -EINVAL);
    assert_int_equal(vfm_pci_config_write(p, 4096, &v, 1), -EINVAL);
    vfm_pci_free(p);
}

static void test_writes(void **state)
{
    struct vfm_pci_config c = full();
    struct vfm_pci *p;
    uint8_t msi = 0;
    (void)state;

    assert_int_equal(vfm_pci_new(&c, NULL, &p), 0);
    /* ids and class are read-only */
    wr(p, 0x00, 0xdeadbeef, 4);
    wr(p, 0x08, 0xffffffff, 4);
    assert_int_equal(rd(p, 0x00, 2), VFM_PCI_VENDOR_EXPERIMENTAL);
    assert_int_equal(rd(p, 0x08, 4), 0x05800003);
    /* BAR sizing: all ones read back the size mask and the type bits */
    wr(p, 0x10, 0xffffffff, 4);
    wr(p, 0x14, 0xffffffff, 4);
    assert_int_equal(rd(p, 0x10, 4), 0xffff000c); /* 64 KiB, 64-bit, prefetchable */
    assert_int_equal(rd(p, 0x14, 4), 0xffffffff);
    assert_int_equal(vfm_pci_bar_address(p, 0), 0); /* sizing is no address */
    wr(p, 0x18, 0xffffffff, 4);
    assert_int_equal(rd(p, 0x18, 4), 0xfffff000); /* 4 KiB, 32-bit */
    wr(p, 0x20, 0xffffffff, 4);
    assert_int_equal(rd(p, 0x20, 4), 0xffffffe1); /* 32 bytes of I/O */
    wr(p, 0x1c, 0xffffffff, 4);
    assert_int_equal(rd(p, 0x1c, 4), 0); /* no BAR 3 */
    /* addresses */
    wr(p, 0x10, 0xfe012345, 4);
    wr(p, 0x14, 0x00000001, 4);
    assert_int_equal(vfm_pci_bar_address(p, 0), 0x1fe010000ull);
    wr(p, 0x18, 0xfebf1234, 4);
    assert_int_equal(vfm_pci_bar_address(p, 2), 0xfebf1000ull);
    assert_int_equal(vfm_pci_bar_address(p, 4), 0); /* still the sizing value */
    wr(p, 0x20, 0xc041, 4);
    assert_int_equal(vfm_pci_bar_address(p, 4), 0xc040);
    /* command: only the enables there are */
    assert_false(vfm_pci_bus_master(p));
    wr(p, 0x04, 0xffff, 2);
    assert_int_equal(rd(p, 0x04, 2), 0x0547); /* I/O, memory, master, parity, SERR, INTx off */
    assert_true(vfm_pci_bus_master(p));
    wr(p, 0x04, 0x0002, 2);
    assert_false(vfm_pci_bus_master(p));
    /* status: the capability bit stays, writing ones clears only the
     * error bits (none set: nothing changes) */
    wr(p, 0x06, 0xffff, 2);
    assert_int_equal(rd(p, 0x06, 2), 0x0010);
    /* MSI: enable and the enabled count writable, the rest not */
    for (uint8_t at = (uint8_t)rd(p, 0x34, 1); at; at = (uint8_t)rd(p, at + 1u, 1))
        if (rd(p, at, 1) == 0x05)
            msi = at;
    assert_true(msi);
    wr(p, msi + 2u, 0xffff, 2);
    assert_int_equal(rd(p, msi + 2u, 2), 0x01f5); /* enabled; MME 7 (as written); MMC, 64-bit, mask */
    wr(p, msi + 4u, 0xfee00003, 4);
    assert_int_equal(rd(p, msi + 4u, 4), 0xfee00000); /* dword aligned */
    wr(p, msi + 16u, 0xffffffff, 4);
    assert_int_equal(rd(p, msi + 16u, 4), 0xf); /* a mask bit per vector */
    vfm_pci_free(p);
}

static void test_state(void **state)
{
    struct vfm_pci_config c = full(), other = full();
    struct vfm_pci *a, *b, *x;
    struct vfm_buf buf = {.max = SIZE_MAX};
    uint8_t before[4096], after[4096];
    (void)state;

    assert_int_equal(vfm_pci_new(&c, NULL, &a), 0);
    assert_int_equal(vfm_pci_new(&c, NULL, &b), 0);
    other.ids.device++;
    assert_int_equal(vfm_pci_new(&other, NULL, &x), 0);
    /* what a guest programs */
    wr(a, 0x04, 0x0006, 2);
    wr(a, 0x10, 0xfe000000, 4);
    wr(a, 0x14, 0x2, 4);
    wr(a, 0x3c, 11, 1);
    /* and an MSI interrupt held pending under its mask: device state, kept */
    {
        struct vfm_server_config sc = {.version = VFM_SERVER_CONFIG_VERSION};
        uint8_t msi = 0x48; /* after PM (0x40, 8 bytes) */
        assert_int_equal(rd(a, msi, 1), 0x05);
        assert_int_equal(vfm_pci_server_config(a, &sc), 0);
        wr(a, msi + 2u, 0x0021, 2);
        wr(a, msi + 16u, 0x4, 4);
        assert_int_equal(vfm_pci_raise(a, 2), 0);
        assert_int_equal(rd(a, msi + 20u, 4), 0x4);
    }
    assert_int_equal(vfm_pci_save(a, &buf), 0);
    assert_int_equal(buf.len, vfm_pci_state_size(a));
    assert_int_equal(vfm_pci_load(b, buf.data, buf.len), 0);
    assert_int_equal(vfm_pci_config_read(a, 0, before, 4096), 0);
    assert_int_equal(vfm_pci_config_read(b, 0, after, 4096), 0);
    assert_memory_equal(before, after, 4096);
    assert_int_equal(vfm_pci_bar_address(b, 0), 0x2fe000000ull);
    assert_int_equal(rd(b, 0x48 + 20, 4), 0x4); /* the pending MSI came along */
    assert_true(vfm_pci_bus_master(b));
    /* another model, a truncated save, a damaged read-only byte: refused,
     * nothing changed */
    assert_int_equal(vfm_pci_load(x, buf.data, buf.len), -EINVAL);
    assert_int_equal(vfm_pci_load(b, buf.data, buf.len - 1), -EINVAL);
    buf.data[sizeof(uint32_t) * 6 + 0x0e] = 0x80; /* header type: multi-function */
    assert_int_equal(vfm_pci_load(b, buf.data, buf.len), -EINVAL);
    buf.data[0] ^= 1;
    assert_int_equal(vfm_pci_load(b, buf.data, buf.len), -EINVAL);
    assert_int_equal(vfm_pci_config_read(b, 0, after, 4096), 0);
    assert_memory_equal(before, after, 4096);
    vfm_buf_release(&buf);
    vfm_pci_free(a);
    vfm_pci_free(b);
    vfm_pci_free(x);
}

static int efd(void)
{
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    assert_true(fd >= 0);
    return fd;
}

/* How many times @fd was signalled since the last look. */
static uint64_t fired(int fd)
{
    uint64_t n = 0;
    return read(fd, &n, 8) == 8 ? n : 0;
}

static int set(struct vfm_server_config *sc, uint32_t flags, uint32_t index, uint32_t start,
               uint32_t count, const void *data, size_t len, const int *fds, unsigned nfds)
{
    struct vfm_vu_irq_set q = {sizeof(q), flags, index, start, count};
    return sc->set_irqs(sc->priv, &q, data, len, fds, nfds);
}

static uint8_t cap_at(struct vfm_pci *p, uint8_t id)
{
    for (uint8_t at = (uint8_t)rd(p, 0x34, 1); at; at = (uint8_t)rd(p, at + 1u, 1))
        if (rd(p, at, 1) == id)
            return at;
    fail_msg("no capability %#x", id);
    return 0;
}

/* Serving the model: the nine regions and five interrupt indexes; INTx
 * automasked until the client unmasks it; MSI and MSI-X with their masks
 * holding an interrupt pending until they are lifted; the MSI-X table and
 * PBA served by the model, the rest of a BAR by the device. */
static void test_serve_and_raise(void **state)
{
    struct vfm_pci_config c = full();
    struct vfm_server_config sc = {.version = VFM_SERVER_CONFIG_VERSION};
    struct vfm_vu_irq_info ii;
    struct vfm_pci *p;
    int ix = efd(), m[4], x[8];
    uint8_t msi, msix;
    uint32_t v32;
    uint64_t pba;
    (void)state;

    assert_int_equal(vfm_pci_new(&c, NULL, &p), 0);
    assert_int_equal(vfm_pci_server_config(p, &(struct vfm_server_config){.version = 1}), -EINVAL);
    assert_int_equal(vfm_pci_server_config(p, &sc), 0);
    assert_int_equal(sc.nregions, VFM_PCI_NUM_REGIONS);
    assert_int_equal(sc.regions[0].size, 1 << 16);
    assert_int_equal(sc.regions[1].size, 0); /* the upper half of BAR 0 */
    assert_int_equal(sc.regions[VFM_PCI_ROM_REGION].size, 0);
    assert_int_equal(sc.regions[VFM_PCI_CONFIG_REGION].size, VFM_PCI_CONFIG_SIZE_EXPRESS);
    assert_int_equal(sc.regions[VFM_PCI_VGA_REGION].size, 0);
    assert_int_equal(sc.sparse[0].n, 1);
    assert_int_equal(sc.sparse[0].areas[0].size, 0x8000);
    assert_int_equal(sc.nirqs, VFM_PCI_NUM_IRQS);
    for (uint32_t i = 0; i < VFM_PCI_NUM_IRQS; i++) {
        static const uint32_t want[] = {1, 4, 8, 1, 1}; /* INTx, MSI, MSI-X, ERR, REQ */
        assert_int_equal(sc.irq_info(sc.priv, i, &ii), 0);
        assert_int_equal(ii.count, want[i]);
        assert_true(ii.flags & VFM_VU_IRQ_INFO_EVENTFD);
    }
    /* the config region is the model's */
    assert_int_equal(sc.regions[7].access(sc.priv, 7, 0, &v32, 4, false), 0);
    assert_int_equal(v32 & 0xffff, VFM_PCI_VENDOR_EXPERIMENTAL);

    /* INTx: nothing without an eventfd; then signalled once, automasked */
    assert_int_equal(vfm_pci_raise(p, 0), 0);
    assert_int_equal(set(&sc, VFM_VU_IRQ_SET_DATA_EVENTFD | VFM_VU_IRQ_SET_ACTION_TRIGGER, 0, 0, 1,
                         NULL, 0, &ix, 1), 0);
    assert_int_equal(vfm_pci_raise(p, 0), 1);
    assert_int_equal(fired(ix), 1);
    assert_true(rd(p, 0x06, 2) & 0x0008); /* interrupt status */
    assert_int_equal(vfm_pci_raise(p, 0), 0); /* masked: held */
    assert_int_equal(fired(ix), 0);
    assert_int_equal(set(&sc, VFM_VU_IRQ_SET_DATA_NONE | VFM_VU_IRQ_SET_ACTION_UNMASK, 0, 0, 1,
                         NULL, 0, NULL, 0), 0);
    assert_int_equal(fired(ix), 1); /* delivered at the unmask */
    assert_int_equal(set(&sc, VFM_VU_IRQ_SET_DATA_NONE | VFM_VU_IRQ_SET_ACTION_UNMASK, 0, 0, 1,
                         NULL, 0, NULL, 0), 0);
    assert_false(rd(p, 0x06, 2) & 0x0008);
    wr(p, 0x04, 0x0400, 2); /* INTx disabled by the guest */
    assert_int_equal(vfm_pci_raise(p, 0), 0);
    assert_int_equal(fired(ix), 0);
    assert_int_equal(vfm_pci_raise(p, 1), 0); /* nothing enabled: nothing to check against */

    /* MSI: 4 vectors enabled; a masked one held pending until unmasked */
    for (int i = 0; i < 4; i++)
        m[i] = efd();
    assert_int_equal(set(&sc, VFM_VU_IRQ_SET_DATA_EVENTFD | VFM_VU_IRQ_SET_ACTION_TRIGGER, 1, 0, 4,
                         NULL, 0, m, 4), 0);
    msi = cap_at(p, 0x05);
    wr(p, msi + 2u, 0x0021, 2); /* enable, MME 2: 4 vectors */
    assert_int_equal(vfm_pci_raise(p, 2), 1);
    assert_int_equal(fired(m[2]), 1);
    assert_int_equal(vfm_pci_raise(p, 4), -EINVAL);
    wr(p, msi + 16u, 0x2, 4); /* mask vector 1 */
    assert_int_equal(vfm_pci_raise(p, 1), 0);
    assert_int_equal(fired(m[1]), 0);
    assert_int_equal(rd(p, msi + 20u, 4), 0x2); /* pending */
    wr(p, msi + 16u, 0x0, 4);
    assert_int_equal(fired(m[1]), 1);
    assert_int_equal(rd(p, msi + 20u, 4), 0);
    /* masking MSI through SET_IRQS is not how it is done */
    assert_int_equal(set(&sc, VFM_VU_IRQ_SET_DATA_NONE | VFM_VU_IRQ_SET_ACTION_MASK, 1, 0, 1, NULL,
                         0, NULL, 0), -EINVAL);

    /* MSI-X, enabled over MSI: vectors start masked in the table */
    for (int i = 0; i < 8; i++)
        x[i] = efd();
    assert_int_equal(set(&sc, VFM_VU_IRQ_SET_DATA_EVENTFD | VFM_VU_IRQ_SET_ACTION_TRIGGER, 2, 0, 8,
                         NULL, 0, x, 8), 0);
    msix = cap_at(p, 0x11);
    wr(p, msix + 2u, 0x8000, 2);
    assert_int_equal(vfm_pci_raise(p, 3), 0);
    assert_int_equal(fired(x[3]), 0);
    assert_int_equal(fired(m[3]), 0); /* not MSI either */
    assert_int_equal(sc.regions[0].access(sc.priv, 0, 0x9000, &pba, 8, false), 0);
    assert_int_equal(pba, 1u << 3);
    v32 = 0; /* unmask vector 3: its pending interrupt goes */
    assert_int_equal(sc.regions[0].access(sc.priv, 0, 0x8000 + 16 * 3 + 12, &v32, 4, true), 0);
    assert_int_equal(fired(x[3]), 1);
    assert_int_equal(sc.regions[0].access(sc.priv, 0, 0x9000, &pba, 8, false), 0);
    assert_int_equal(pba, 0);
    assert_int_equal(vfm_pci_raise(p, 3), 1);
    assert_int_equal(fired(x[3]), 1);
    wr(p, msix + 2u, 0xc000, 2); /* the function masked */
    assert_int_equal(vfm_pci_raise(p, 3), 0);
    wr(p, msix + 2u, 0x8000, 2);
    assert_int_equal(fired(x[3]), 1);
    assert_int_equal(vfm_pci_raise(p, 8), -EINVAL);
    /* the PBA is read-only; an access across the table's end is refused */
    pba = ~0ull;
    assert_int_equal(sc.regions[0].access(sc.priv, 0, 0x9000, &pba, 8, true), 0);
    assert_int_equal(sc.regions[0].access(sc.priv, 0, 0x9000, &pba, 8, false), 0);
    assert_int_equal(pba, 0);
    assert_int_equal(sc.regions[0].access(sc.priv, 0, 0x8000 + 16 * 8 - 4, &pba, 8, false), -EINVAL);
    /* the rest of BAR 0 is the device's memory; BAR 2 its registers */
    bar_mem[0][0x100] = 0x5a;
    assert_int_equal(sc.regions[0].access(sc.priv, 0, 0x100, &v32, 1, false), 0);
    assert_int_equal(v32 & 0xff, 0x5a);
    reg_calls = 0;
    assert_int_equal(sc.regions[2].access(sc.priv, 2, 0x10, &v32, 4, false), 0);
    assert_int_equal(reg_calls, 1);
    assert_int_equal(v32, 0xabababab);
    /* the whole index off: no more signals */
    assert_int_equal(set(&sc, VFM_VU_IRQ_SET_DATA_NONE | VFM_VU_IRQ_SET_ACTION_TRIGGER, 2, 0, 0,
                         NULL, 0, NULL, 0), 0);
    assert_int_equal(vfm_pci_raise(p, 3), 0);
    assert_int_equal(fired(x[3]), 0);
    vfm_pci_free(p); /* closes its copies of the fds */
    close(ix);
    for (int i = 0; i < 4; i++)
        close(m[i]);
    for (int i = 0; i < 8; i++)
        close(x[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_space),
        cmocka_unit_test(test_writes),
        cmocka_unit_test(test_state),
        cmocka_unit_test(test_serve_and_raise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
