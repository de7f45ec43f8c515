/* SPDX-License-Identifier: MIT */
/**
 * @file
 * vfiomig PCI — the PCI device a vfio-user server presents, so that a VMM
 * can put a vfiomig device in a VM (QEMU's vfio-user-pci is the client it
 * is written against).
 *
 * A device author declares what the device is (struct vfm_pci_config):
 * its ids, its BARs (size, type, and what backs them: shared memory a
 * client may mmap, whole or in parts, and callbacks for registers), which
 * interrupts it has (INTx, MSI, MSI-X) and which capabilities (power
 * management, PCI Express). This layer then owns what a real device's
 * hardware would:
 *
 * - the config space, virtualised: ids and read-only fields that no write
 *   changes; the BARs' sizing (an all-ones write reads back the size mask
 *   and the type bits, as hardware does); the command and status
 *   registers (memory, I/O and bus-master enables, INTx disable; status
 *   bits write-one-to-clear); a capability list built from the
 *   declaration (PM, MSI, MSI-X with its table and PBA in a BAR,
 *   PCI Express endpoint) and chained in order;
 * - the vfio-user view of it: the nine VFIO PCI regions (BAR0-5, ROM,
 *   config, VGA: absent ones have size 0) and the five interrupt indexes
 *   (INTx, MSI, MSI-X, ERR, REQ), with the sparse-mmap capability on a BAR
 *   only part of which a client may map, for vfm_server_new();
 * - interrupts: SET_IRQS with the eventfds a client sends (trigger, mask,
 *   unmask; DATA_NONE, DATA_BOOL and DATA_EVENTFD), the MSI-X table and PBA
 *   (a masked vector's interrupt is held pending, and delivered when it is
 *   unmasked), and one call a device makes to raise an interrupt;
 * - what the guest programmed, as migration state: vfm_pci_save() and
 *   vfm_pci_load() carry the config space, the MSI and MSI-X setup and
 *   table, so that a destination served to another client is the device
 *   the guest left (eventfds are the client's and are not state: the
 *   destination's client sends its own).
 *
 * DMA into the client's memory is vfio-user's (vfm_dma_access() and
 * friends in vfiomig/vfio_user_server.h); the bus-master enable says when a
 * device may do it (vfm_pci_bus_master()).
 *
 * Ids: vfiomig's sample devices use vendor 0x1af4 (Red Hat) devices
 * 0x10f0-0x10ff, the range QEMU's docs/specs/pci-ids.rst leaves "for
 * experimental usage without registration" (see VFM_PCI_VENDOR_EXPERIMENTAL).
 * A device that ships needs ids of its own.
 *
 * Threading: every call may be made from any thread; a device's own
 * threads may call vfm_pci_raise() while the server thread handles the
 * client's config accesses and SET_IRQS (one lock per device). The BAR
 * access callbacks are called from the server thread, without that lock.
 */
#ifndef VFIOMIG_PCI_H
#define VFIOMIG_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include <vfiomig/common.h>
#include <vfiomig/device.h>
#include <vfiomig/vfio_user_server.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The VFIO PCI region indexes (linux/vfio.h VFIO_PCI_*_REGION_INDEX). */
#define VFM_PCI_BAR0_REGION 0u
#define VFM_PCI_ROM_REGION 6u
#define VFM_PCI_CONFIG_REGION 7u
#define VFM_PCI_VGA_REGION 8u
#define VFM_PCI_NUM_REGIONS 9u
/* The VFIO PCI interrupt indexes (linux/vfio.h VFIO_PCI_*_IRQ_INDEX). */
#define VFM_PCI_INTX_IRQ 0u
#define VFM_PCI_MSI_IRQ 1u
#define VFM_PCI_MSIX_IRQ 2u
#define VFM_PCI_ERR_IRQ 3u
#define VFM_PCI_REQ_IRQ 4u
#define VFM_PCI_NUM_IRQS 5u

#define VFM_PCI_NUM_BARS 6u
/* The config space: 256 bytes, or 4096 with the PCI Express capability. */
#define VFM_PCI_CONFIG_SIZE 256u
#define VFM_PCI_CONFIG_SIZE_EXPRESS 4096u

/* Free for experimental use (QEMU docs/specs/pci-ids.rst): 1af4:10f0-10ff. */
#define VFM_PCI_VENDOR_EXPERIMENTAL 0x1af4u
#define VFM_PCI_DEVICE_EXPERIMENTAL_FIRST 0x10f0u
#define VFM_PCI_DEVICE_EXPERIMENTAL_LAST 0x10ffu

enum vfm_pci_bar_type {
    VFM_PCI_BAR_NONE = 0, /* no BAR (and the upper half of a 64-bit one) */
    VFM_PCI_BAR_MEM32,    /* memory, 32-bit address */
    VFM_PCI_BAR_MEM64,    /* memory, 64-bit address: takes this BAR and the next */
    VFM_PCI_BAR_IO,       /* I/O space */
};

/* A part of a BAR a client may mmap (page-aligned offset and size). */
struct vfm_pci_mmap_area {
    uint64_t offset;
    uint64_t size;
};

#define VFM_PCI_MAX_MMAP_AREAS 8u

struct vfm_pci_bar {
    enum vfm_pci_bar_type type;
    bool prefetchable; /* memory BARs only */
    /* A power of two: at least 4096 for memory (a page: what can be
     * mmapped), at least 4 and at most 256 for I/O. */
    uint64_t size;
    /* Shared memory behind the BAR, or -1. With an fd the client may mmap
     * the BAR (all of it, or the areas below), and REGION_READ/WRITE of the
     * rest reach @mem, except where @access is given. */
    int fd;
    void *mem; /* the device's own mapping of @fd */
    /* The parts of the BAR a client may mmap (the sparse-mmap capability);
     * none: all of it, when there is an fd. An access outside them goes to
     * @access, or to @mem when there is no @access. */
    struct vfm_pci_mmap_area mmap[VFM_PCI_MAX_MMAP_AREAS];
    uint32_t nmmap;
    /* Registers: called for accesses the client cannot make through its
     * mapping (bounds already checked). NULL: @mem serves every access.
     * A BAR with neither @mem nor @access is refused. */
    vfm_region_access_fn access;
};

struct vfm_pci_ids {
    uint16_t vendor;
    uint16_t device;
    uint16_t subsystem_vendor; /* 0: the same as vendor */
    uint16_t subsystem;        /* 0: the same as device */
    uint32_t class_code;       /* 24 bits: base class, sub-class, programming interface */
    uint8_t revision;
};

/* MSI-X: the table (16 bytes a vector) and the PBA live in BARs the device
 * declares (memory BARs, the ranges not in any mmap area: the layer
 * serves them, the device's @access never sees them). */
struct vfm_pci_msix {
    uint16_t vectors; /* 0: no MSI-X; at most 2048 */
    uint8_t table_bar;
    uint32_t table_offset; /* 8-byte aligned */
    uint8_t pba_bar;
    uint32_t pba_offset; /* 8-byte aligned */
};

/* The layout of struct vfm_pci_config this header describes. */
#define VFM_PCI_CONFIG_VERSION 1u

struct vfm_pci_config {
    /* VFM_PCI_CONFIG_VERSION (0 is taken as 1); members are only ever
     * added at the end */
    uint32_t version;
    struct vfm_pci_ids ids;
    struct vfm_pci_bar bars[VFM_PCI_NUM_BARS];
    bool intx;           /* INTx, on pin A */
    uint8_t msi_vectors; /* 0: no MSI capability; else 1, 2, 4, 8, 16 or 32 (64-bit, maskable) */
    struct vfm_pci_msix msix;
    bool pm;      /* the power management capability (D0 and D3hot) */
    bool express; /* the PCI Express capability (an endpoint; config space 4096 bytes) */
    void *priv;   /* passed to the BARs' access callbacks */
};

struct vfm_pci;

/**
 * vfm_pci_new - a PCI device model as @cfg declares it, for the migration
 * device @dev (whose state vfm_pci_save() and vfm_pci_load() complement).
 * Return: 0 and *@out; -EINVAL for a declaration that no hardware could
 *      have (a size that is not a power of two or too small, a 64-bit BAR
 *      in the last slot or whose upper half is declared, MSI-X structures
 *      outside their BAR or overlapping each other or an mmap area, a
 *      vector count out of range, a BAR with no backing); -ENOMEM.
 */
VFM_EXPORT int vfm_pci_new(const struct vfm_pci_config *cfg, struct vfm_device *dev,
                           struct vfm_pci **out);
/**
 * vfm_pci_free - frees the model (not the BARs' memory, which is the
 * device's). NULL does nothing.
 */
VFM_EXPORT void vfm_pci_free(struct vfm_pci *pci);

/**
 * vfm_pci_server_config - fills @scfg (version 2 or later) for
 * vfm_server_new(): the device given to vfm_pci_new(), the nine PCI regions
 * (BARs with their sparse-mmap areas, an absent ROM, the config region this
 * model serves, an absent VGA) and the five interrupt indexes with their
 * SET_IRQS handling. The MSI-X table and PBA accesses are this model's;
 * every other BAR access goes to the BAR's access callback or memory. The
 * caller sets the socket and the DMA table.
 * Return: 0, or -EINVAL when @scfg's version is older than 2.
 */
VFM_EXPORT int vfm_pci_server_config(struct vfm_pci *pci, struct vfm_server_config *scfg);

/**
 * vfm_pci_config_read - read @count bytes (1, 2 or 4, naturally aligned, or
 * any run of whole bytes) of the virtual config space at @offset, as the
 * client's REGION_READ of the config region does.
 * Return: 0, or -EINVAL (past the config space).
 */
VFM_EXPORT int vfm_pci_config_read(struct vfm_pci *pci, uint64_t offset, void *buf, uint32_t count);
/**
 * vfm_pci_config_write - write to the virtual config space as the client's
 * REGION_WRITE of the config region does: read-only bits keep their value,
 * write-one-to-clear bits clear, a BAR keeps only its address bits.
 * Return: 0, or -EINVAL (past the config space).
 */
VFM_EXPORT int vfm_pci_config_write(struct vfm_pci *pci, uint64_t offset, const void *buf,
                                    uint32_t count);

/**
 * vfm_pci_bar_address - the address the guest programmed into BAR @bar
 * (both halves of a 64-bit one), or 0 when none is (or the BAR is absent).
 */
VFM_EXPORT uint64_t vfm_pci_bar_address(struct vfm_pci *pci, uint32_t bar);
/**
 * vfm_pci_bus_master - whether the command register lets the device start
 * DMA (bus master enable). A device checks it before each DMA it starts.
 */
VFM_EXPORT bool vfm_pci_bus_master(struct vfm_pci *pci);

/**
 * vfm_pci_raise - the device raises interrupt @vector: an MSI-X vector when
 * the guest enabled MSI-X (held pending in the PBA while the vector or the
 * function is masked, and delivered when it is unmasked), else an MSI
 * vector when it enabled MSI (held pending while masked), else INTx
 * (unless the command register disables it): the client's eventfd is
 * signalled and the line stays asserted, masked, until the client unmasks
 * it (SET_IRQS UNMASK), as VFIO's automasked INTx.
 * Return: 1 signalled; 0 held pending, or nothing to signal (the guest
 *      enabled no interrupt, or the client gave no eventfd for it);
 *      -EINVAL (a vector the enabled interrupt does not have).
 */
VFM_EXPORT int vfm_pci_raise(struct vfm_pci *pci, uint32_t vector);

/**
 * vfm_pci_save - appends what the guest programmed (the config space, MSI
 * and MSI-X state, the MSI-X table and PBA) to @out, in a versioned form
 * vfm_pci_load() checks.
 * Return: 0 or -ENOMEM.
 */
VFM_EXPORT int vfm_pci_save(struct vfm_pci *pci, struct vfm_buf *out);
/**
 * vfm_pci_save_mem - the same bytes into @mem, for a device that keeps its
 * state in its own memory (save in pieces).
 * Return: 0, or -EINVAL when @len is not vfm_pci_state_size().
 */
VFM_EXPORT int vfm_pci_save_mem(struct vfm_pci *pci, void *mem, size_t len);
/**
 * vfm_pci_load - restores what vfm_pci_save() saved, into a model of the
 * same declaration (ids, BARs, capabilities).
 * Return: 0; -EINVAL for bytes that are not a save of this device's model
 *      (nothing is changed then).
 */
VFM_EXPORT int vfm_pci_load(struct vfm_pci *pci, const void *data, size_t len);
/**
 * vfm_pci_state_size - the bytes vfm_pci_save() appends.
 */
VFM_EXPORT size_t vfm_pci_state_size(const struct vfm_pci *pci);

#ifdef __cplusplus
}
#endif

#endif
