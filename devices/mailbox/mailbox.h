/* SPDX-License-Identifier: MIT */
/*
 * p2p-mailbox — a sample device whose devices really DMA to each other.
 *
 * Each device has an inbox: BAR0 (region 0), a ring in shared memory (a
 * memfd the server mmaps and hands to the client with REGION_INFO). The VMM
 * maps every peer's inbox into each device's DMA space (DMA_MAP with the
 * peer's BAR0 fd, at MB_PEER_IOVA(peer index)); a RUNNING device then sends
 * sequence-numbered messages to its peers by writing straight into their
 * inboxes — one process writing memory another process owns.
 *
 * A device consumes its own inbox while RUNNING or RUNNING_P2P (a
 * P2P-quiesced device still accepts incoming P2P). In RUNNING_P2P it starts
 * no new write, and the write in flight completes before the arc into
 * RUNNING_P2P returns. Its migration state is its counters and its inbox
 * (nothing is in flight once it is stopped). Its registers, BAR1 (region
 * 1, read with REGION_READ), give the counters, so a checker can prove that
 * every message sent was consumed exactly once: for every pair,
 * sent[i->j] == consumed[j<-i], and no device saw a gap or a repeat.
 *
 * Its own inbox is a sealed memfd (no one can shrink it); a peer's inbox is
 * the client's memory, touched only through vfm_dma_access(), so a client
 * that shrinks the file behind a mapping costs a send (MB_REG_DMA_FAULTS),
 * not the process.
 *
 * It advertises STOP_COPY|P2P, or STOP_COPY only when made without P2P (then
 * RUNNING -> STOP stops sending and consuming at once).
 */
#ifndef VFIOMIG_MAILBOX_H
#define VFIOMIG_MAILBOX_H

#include <stdbool.h>
#include <stdint.h>

#include <vfiomig/pci.h>
#include <vfiomig/vfio_user.h>

#define MB_MAX_DEVICES 64u
#define MB_COMPAT 0x584f424du /* "MBOX" */

/* Regions */
#define MB_REGION_INBOX 0u
#define MB_REGION_REGS 1u
#define MB_INBOX_SIZE (64u * 1024u)
#define MB_REGS_SIZE 4096u
/* The longest pause between send rounds: the worker answers a stop within it. */
#define MB_MAX_INTERVAL_US 1000000u

/* Where the VMM maps peer @j's inbox in each device's DMA space. */
#define MB_PEER_IOVA(j) (((uint64_t)(j) + 1) << 32)

/* BAR1 register offsets (little-endian, host order) */
#define MB_REG_MAGIC 0x000u     /* u32 RO: "MBOX" */
#define MB_REG_INDEX 0x008u     /* u32 RW: this device's index (0..63) */
#define MB_REG_INTERVAL 0x00cu  /* u32 RW: microseconds between send rounds (1 s at most) */
#define MB_REG_SENT 0x010u      /* u64 RO: messages sent, all peers */
#define MB_REG_CONSUMED 0x018u  /* u64 RO: messages consumed, all peers */
#define MB_REG_GAPS 0x020u      /* u64 RO: messages skipped in a sender's sequence */
#define MB_REG_FULL 0x028u      /* u64 RO: sends postponed on a full inbox */
#define MB_REG_PENDING 0x030u   /* u64 RO: messages waiting in the inbox */
#define MB_REG_DUPS 0x038u      /* u64 RO: messages seen again (sequence went back) */
#define MB_REG_DMA_FAULTS 0x040u /* u64 RO: sends cut short because the memory behind a peer's
                                  * mapping went away (the client shrank its file); not
                                  * migrated */
#define MB_REG_SENT_TO 0x100u   /* u64[64] RO: sent to peer j */
#define MB_REG_CONS_FROM 0x300u /* u64[64] RO: messages consumed from peer j */

/* The inbox ring, at offset 0 of BAR0 (shared memory). Writers (peers)
 * claim a slot by advancing tail with a compare-and-swap while the ring is
 * not full, fill it, then publish it by storing its position + 1 in
 * `ready`; the owner consumes slots in order and advances head. A checker
 * may read it (REGION_READ of BAR0) to count what is still waiting. */
struct mb_slot {
    uint64_t ready; /* atomic: claimed position + 1 once published */
    uint32_t from;
    uint32_t pad;
    uint64_t seq;
    uint64_t pad2;
};

struct mb_ring {
    uint64_t head; /* atomic: next to consume (owner only) */
    uint64_t tail; /* atomic: next to claim (writers) */
    uint64_t nslots;
    uint64_t pad[5];
    struct mb_slot slots[];
};

struct mailbox;

/*
 * mailbox_new - a mailbox device.
 * @p2p: offer the P2P capability.
 * @dma: the DMA table its server fills (peer inboxes appear there).
 */
int mailbox_new(const char *name, bool p2p, struct vfm_dma *dma, struct mailbox **out);
void mailbox_free(struct mailbox *mb);
struct vfm_device *mailbox_device(struct mailbox *mb);

/* Fills @cfg's regions and priv for vfm_server_new(). */
void mailbox_server_regions(struct mailbox *mb, struct vfm_server_config *cfg);

/* The PCI device (vfiomig/pci.h) the mailbox is to a VMM: 1af4:10f0, class
 * 0x058000 (a memory controller, "other"); BAR0 the inbox (64 KiB of
 * shared memory, mappable), BAR1 the registers (4 KiB, MB_REG_*), BAR2
 * the MSI-X table (one vector, at 0) and PBA (at 0x800); INTx. The model
 * is the mailbox's (freed with it). Return: 0 and *@out, or -errno. */
#define MB_PCI_DEVICE 0x10f0u
#define MB_PCI_CLASS 0x058000u
#define MB_REGION_MSIX 2u
int mailbox_pci(struct mailbox *mb, struct vfm_pci **out);

#endif
