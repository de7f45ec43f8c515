/* SPDX-License-Identifier: MIT */
/*
 * large-state — a sample device with a big state, for pre-copy.
 *
 * It owns SIZE bytes of device memory (default 256 MiB; think of a GPU's
 * memory or a NIC's tables) that its worker thread changes while the device
 * runs (RUNNING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P): every millisecond it
 * writes 8 bytes into as many pseudo-random pages as the dirty rate asks
 * for (bytes of memory dirtied per second). While a pre-copy session is
 * open it tracks, at PAGE granularity (default 4 KiB), which pages changed
 * after they were given, so each pre-copy round sends only those.
 *
 * Capabilities: STOP_COPY | PRE_COPY, and P2P unless made without it (the
 * device does no peer-to-peer DMA, so RUNNING_P2P only means "the VMM may
 * quiesce me with the others"; its worker keeps changing its own memory).
 *
 * Its state stream: pre-copy chunks and the final state are runs of pages
 * (first page, count, bytes); the final one ends with the XXH3-64 digest of
 * the whole memory, computed by the source when it stops. The destination
 * applies pre-copy chunks as they arrive, refuses a final state unless
 * every page has arrived, and compares its own digest of its memory after
 * the load with the source's: a different digest refuses the load
 * (RESUMING -> STOP fails), so a restored device has checked itself.
 *
 * Registers (region 0, LG_REGS_SIZE bytes, REGION_READ / REGION_WRITE; u64
 * little endian): see LG_REG_*.
 *
 * As a PCI device (large_pci()): 1af4:10f1, class 0x120000 (a processing
 * accelerator); BAR0 the registers, BAR1 the MSI-X table (one vector, at
 * 0) and PBA (at 0x800); INTx. Writing LG_REG_DOORBELL raises its
 * interrupt. What a driver programmed into the function (config space,
 * MSI-X) is part of the final state.
 *
 * Threading: the worker and the runtime's callbacks share one mutex.
 */
#ifndef VFIOMIG_LARGE_H
#define VFIOMIG_LARGE_H

#include <stdbool.h>
#include <stdint.h>

#include <vfiomig/pci.h>
#include <vfiomig/vfio_user.h>

#define LG_COMPAT 0x4547524cu /* "LRGE" */

#define LG_REGION_REGS 0u
#define LG_REGS_SIZE 4096u

#define LG_REG_MAGIC 0x00u         /* RO: LG_COMPAT */
#define LG_REG_SIZE 0x08u          /* RO: memory bytes */
#define LG_REG_PAGE 0x10u          /* RO: dirty-tracking page size */
#define LG_REG_RATE 0x18u          /* RW: bytes dirtied per second (at most every page per ms) */
#define LG_REG_WRITES 0x20u        /* RO: page writes the worker made */
#define LG_REG_DIGEST_SAVED 0x28u  /* RO: digest at the last final save */
#define LG_REG_DIGEST_LOADED 0x30u /* RO: digest after the last load */
#define LG_REG_DIGEST_NOW 0x38u    /* RO: digest of the memory, computed on read */
#define LG_REG_PRECOPY_BYTES 0x40u /* RO: pre-copy bytes given, this session */
#define LG_REG_FINAL_BYTES 0x48u   /* RO: bytes of the last final save */
#define LG_REG_DOORBELL 0x50u      /* WO: raises the device's interrupt (vector 0) */
#define LG_REG_IRQS                                                                                \
    0x58u /* RO: interrupts raised (delivered or held pending by a                                 \
           * mask); not migrated */
#define LG_REG_RESULT                                                                              \
    0x60u                    /* RW: bus address of a struct lg_result (8-byte aligned; 0:          \
                              * none) the device writes by DMA after every step in which           \
                              * its worker wrote (needs a DMA table and, as a PCI device,          \
                              * the bus master enable) */
#define LG_REG_RESULTS 0x68u /* RO: results written (migrated) */
#define LG_REG_RECONFIGURE                                                                         \
    0x70u /* WO: reconfigure: the device rewrites its first page (its                              \
           * "configuration"), and during pre-copy its whole memory                                \
           * becomes initial data again, announced to the VMM as new                               \
           * initial data (VFIO_PRECOPY_INFO_REINIT) */
#define LG_REG_RECONFIGURES                                                                        \
    0x78u /* RO: reconfigurations, and of them announced during                                    \
           * pre-copy (high 32 bits); not migrated */
#define LG_REG_SWAPS                                                                               \
    0x80u /* RO: loads that took a whole memory received in place by                               \
           * swapping pages (no copy); not migrated */

/* The result record a running device keeps up to date in its driver's
 * memory (a VM's RAM): how far its work has gone. */
struct lg_result {
    uint32_t magic; /* LG_COMPAT */
    uint32_t pad;
    uint64_t seq;     /* the record's number, from 1 (LG_REG_RESULTS after it) */
    uint64_t writes;  /* LG_REG_WRITES when it was written */
    uint64_t counter; /* the last value the worker wrote into its memory */
};

struct large_config {
    const char *name;
    uint64_t size;       /* bytes of device memory; a multiple of page */
    uint64_t page;       /* tracking granularity: a power of two, 512 .. 2 MiB */
    uint64_t dirty_rate; /* bytes dirtied per second while running */
    bool p2p;            /* offer P2P */
    /* No self-check: the source computes no digest at its stop (digest 0 in
     * the stream), and a destination given none computes none; the two
     * passes over the memory are then out of the downtime (benchmarks). */
    bool no_verify;
    /* Load (and save) in place: keep a staging buffer as large as the
     * biggest final state, faulted in, where the runtime receives a final
     * state (vfm_mig_ops.load_buffer) and builds one in a stop-copy
     * (save_buffer): no fresh memory per load or save, at the cost of that
     * much more memory for the device's life. */
    bool load_in_place;
    /* Save by copying: the whole final state into a buffer at the stop
     * (save(); into the staging buffer with load_in_place), as before save
     * in pieces — the baseline benchmarks compare against. Default: in
     * pieces, streamed from the memory as the client reads. */
    bool save_copy;
    uint32_t seed; /* the memory's power-on pattern */
    /* The DMA table its server fills (NULL: no DMA): the result record
     * (LG_REG_RESULT) goes through it, and the table keeps the DMA dirty
     * log a VMM asks for. */
    struct vfm_dma *dma;
};

struct large;

/* Return: 0 and *@out, -EINVAL (a size or page out of range), -ENOMEM. */
int large_new(const struct large_config *cfg, struct large **out);
void large_free(struct large *lg);
struct vfm_device *large_device(struct large *lg);

/* Fills @cfg's regions and priv for vfm_server_new(). */
void large_server_regions(struct large *lg, struct vfm_server_config *cfg);

/* The PCI device (vfiomig/pci.h) it is to a VMM, described above; the
 * model is the device's (freed with it). Return: 0 and *@out, or -errno. */
#define LG_PCI_DEVICE 0x10f1u
#define LG_PCI_CLASS 0x120000u
#define LG_REGION_MSIX 1u
int large_pci(struct large *lg, struct vfm_pci **out);

/* Sets the dirty rate (bytes per second while running). */
void large_set_rate(struct large *lg, uint64_t rate);

/* What a driver's write of LG_REG_RECONFIGURE does (see there). Call
 * with no lock held, not from a callback. */
void large_reconfigure(struct large *lg);

/* The digest of the memory now (the device should be stopped to compare). */
uint64_t large_digest(struct large *lg);

/* Loads that took the memory by swapping pages (LG_REG_SWAPS). */
uint64_t large_swaps(struct large *lg);

#endif
