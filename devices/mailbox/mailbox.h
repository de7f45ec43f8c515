/* SPDX-License-Identifier: MIT */
/*
 * p2p-mailbox — a sample device whose devices really DMA to each other.
 *
 * Each device has an inbox: BAR0, 64 KiB of shared memory (a sealed memfd
 * the server mmaps and hands to the client with REGION_INFO), one lane per
 * possible sender. A driver (a guest's, or the VMM's wiring in `vfiomig
 * demo`) programs each device through its registers, BAR1: its index (the
 * lane it writes in its peers' inboxes), the bus address of every peer's
 * inbox (in a VM: the guest-physical address of the peer's BAR0, which the
 * VMM maps for P2P DMA), and the control bits that start traffic, ask for an
 * interrupt when messages arrive, and a status record written into the
 * driver's memory. A RUNNING device with traffic on then sends
 * sequence-numbered messages to its peers by DMA into their inboxes: into
 * shared memory when the client mapped it with an fd (one process writing
 * memory another owns), else with DMA_READ/DMA_WRITE messages the client
 * carries out (QEMU maps a peer's BAR so). No DMA at all unless the bus
 * master enable is set in its config space.
 *
 * A device consumes its own inbox while RUNNING or RUNNING_P2P (a
 * P2P-quiesced device still accepts incoming P2P). In RUNNING_P2P it starts
 * no new write, and the write in flight completes before the arc into
 * RUNNING_P2P returns. Its migration state is what the driver programmed
 * (registers, config space, interrupt setup), its counters and its inbox
 * (nothing is in flight once it is stopped). The counters prove that every
 * message sent was consumed exactly once: for every pair, sent[i->j] ==
 * consumed[j<-i], and no device saw a gap or a repeat.
 *
 * Its own inbox is a sealed memfd (no one can shrink it); a peer's inbox is
 * the client's memory, touched only through vfm_dma_read()/vfm_dma_write(),
 * so a client that shrinks the file behind a mapping costs a send
 * (MB_REG_DMA_FAULTS), not the process.
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

/* Where vfiomig's VMM (`vfiomig demo`) maps peer @j's inbox in each
 * device's DMA space, and programs MB_REG_PEER(j) to. */
#define MB_PEER_IOVA(j) (((uint64_t)(j) + 1) << 32)

/* BAR1 register offsets (little-endian, host order). u64 registers take
 * 8-byte accesses or 4-byte ones to either half. */
#define MB_REG_MAGIC 0x000u     /* u32 RO: "MBOX" */
#define MB_REG_ABI 0x004u       /* u32 RO: this register layout, MB_ABI */
#define MB_REG_INDEX 0x008u     /* u32 RW: this device's index (0..63): its lane in peers' inboxes */
#define MB_REG_INTERVAL 0x00cu  /* u32 RW: microseconds between send rounds (1 s at most) */
#define MB_REG_SENT 0x010u      /* u64 RO: messages sent, all peers */
#define MB_REG_CONSUMED 0x018u  /* u64 RO: messages consumed, all peers */
#define MB_REG_GAPS 0x020u      /* u64 RO: messages skipped in a sender's sequence */
#define MB_REG_FULL 0x028u      /* u64 RO: sends postponed on a full lane */
#define MB_REG_PENDING 0x030u   /* u64 RO: messages waiting in the inbox */
#define MB_REG_DUPS 0x038u      /* u64 RO: messages seen again (sequence went back), or in a
                                 * lane found inconsistent (skipped) */
#define MB_REG_DMA_FAULTS 0x040u /* u64 RO: sends cut short because a peer's inbox could not be
                                  * reached (the memory behind a mapping went away, or the
                                  * client refused or did not answer a DMA message); not
                                  * migrated */
#define MB_REG_CONTROL 0x048u   /* u32 RW: MB_CTL_* */
#define MB_REG_IRQ_STATUS 0x04cu /* u32 RW1C: MB_IRQ_*; an interrupt is raised when a bit
                                  * goes from 0 to 1 with MB_CTL_IRQ set */
#define MB_REG_WRITEBACK 0x050u /* u64 RW: bus address of a struct mb_status (8-byte aligned)
                                 * written after each round that consumed messages, with
                                 * MB_CTL_WRITEBACK */
#define MB_REG_IRQS 0x058u      /* u64 RO: interrupts raised (delivered, or held pending by
                                 * a mask); not migrated */
#define MB_REG_WRITEBACKS 0x060u /* u64 RO: status records written */
#define MB_REG_RING 0x068u      /* u64 RW: bus address of the delivery ring (4 KiB aligned), a
                                 * struct mb_ring_rec per message consumed, with MB_CTL_RING */
#define MB_REG_RING_SLOTS 0x070u /* u32 RW: records in the ring: a power of two up to
                                  * MB_RING_MAX_SLOTS, or 0 */
#define MB_REG_RING_COUNT 0x078u /* u64 RO: records written to the ring since reset (record n
                                  * is in slot (n - 1) % slots); migrated */
#define MB_REG_SENT_TO 0x100u   /* u64[64] RO: sent to peer j */
#define MB_REG_CONS_FROM 0x300u /* u64[64] RO: messages consumed from peer j */
#define MB_REG_PEER(j) (0x500u + 8u * (j)) /* u64[64] RW: bus address of peer j's inbox
                                            * (0: none); 4 KiB aligned */

#define MB_ABI 3u
#define MB_CTL_SEND 0x1u      /* send to every programmed peer while RUNNING */
#define MB_CTL_IRQ 0x2u       /* interrupt (MSI-X vector 0, or INTx) on MB_IRQ_* */
#define MB_CTL_WRITEBACK 0x4u /* write the status record at MB_REG_WRITEBACK */
#define MB_CTL_RING 0x8u      /* append every message consumed to the ring at MB_REG_RING */
#define MB_IRQ_DELIVERED 0x1u /* messages were consumed */
#define MB_RING_MAX_SLOTS (1u << 20)

/* The inbox, BAR0: a lane per sender index. Sender i writes only lane i:
 * it reads head and tail, writes the message's sequence number at
 * seq[tail % MB_LANE_SLOTS] and then tail + 1 (plain reads and writes, so
 * that DMA messages can do it); the owner consumes from head and advances
 * it. A lane whose tail - head exceeds MB_LANE_SLOTS is inconsistent. */
#define MB_LANE_SLOTS 120u
struct mb_lane {
    uint64_t head; /* next to consume (owner) */
    uint64_t tail; /* next to write (the sender) */
    uint64_t pad[6];
    uint64_t seq[MB_LANE_SLOTS]; /* sequence numbers, from 1 */
};

struct mb_inbox {
    struct mb_lane lanes[MB_MAX_DEVICES];
};

/* The status record a device writes into its driver's memory. */
struct mb_status {
    uint32_t magic; /* MB_COMPAT */
    uint32_t index;
    uint64_t sent;
    uint64_t consumed;
    uint64_t gaps;
    uint64_t dups;
    uint64_t seq; /* the record's number, from 1 */
};

/*
 * The delivery ring, in the driver's memory (a VM's RAM): each message the
 * device consumes becomes one record, written by DMA in the round that
 * consumed it, in the order consumed: a driver (or a checker) reads every
 * message that arrived, which sender sent it and its sequence number. The
 * record's check ties its fields together (mb_ring_check()), so a slot
 * that holds something else — never written, or a stale lap — is told from
 * a record.
 */
struct mb_ring_rec {
    uint64_t n;     /* the record's number, from 1 (MB_REG_RING_COUNT after it) */
    uint32_t magic; /* MB_COMPAT */
    uint32_t from;  /* the sender's index */
    uint64_t seq;   /* the sender's sequence number for this device */
    uint64_t check; /* mb_ring_check(n, from, seq) */
};

static inline uint64_t mb_ring_check(uint64_t n, uint32_t from, uint64_t seq)
{
    uint64_t x = n * 0x9e3779b97f4a7c15ull ^ seq * 0xc2b2ae3d27d4eb4full ^ from;
    return x ^ (x >> 29);
}

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
