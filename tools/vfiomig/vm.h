/* SPDX-License-Identifier: MIT */
/* A "VM" of p2p-mailbox device processes (and perhaps one large-state
 * device, the last), and its checker (vm.c). */
#ifndef VFIOMIG_VM_H
#define VFIOMIG_VM_H

#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <vfiomig/migrate.h>
#include <vfiomig/vfio_user.h>

#define VM_MAX 64u

struct vm {
    unsigned n;      /* mailboxes: devices 0 .. n-1 */
    unsigned nlarge; /* 0 or 1: the large-state device is device n */
    pid_t pid[VM_MAX + 1];
    char path[VM_MAX + 1][108];
    char name[VM_MAX + 1][32];
    struct vfm_vu_client *c[VM_MAX + 1];
    struct vfm_endpoint *ep[VM_MAX + 1];
    int bar_fd[VM_MAX + 1];
    /* guest RAM (vm_start() with ram_size): a shared memfd every device
     * process DMA-maps at VM_RAM_IOVA, as QEMU's memory-backend-memfd */
    int ram_fd;
    uint8_t *ram;
    uint64_t ram_size;
    uint32_t ring_slots; /* each mailbox's delivery ring */
};

/* The guest RAM's layout: the devices' status records in page 0 (64 bytes
 * each), the large device's result record in page 1, each mailbox's
 * delivery ring from VM_RING_BASE on, the rest a power-on pattern. */
#define VM_RAM_IOVA 0x0ull
#define VM_RAM_MIN (4ull << 20)
#define VM_RAM_MAX (1ull << 30)
#define VM_STATUS_OFF(i) ((uint64_t)(i) * 64)
#define VM_RESULT_OFF 4096ull
#define VM_RING_BASE (1ull << 20)

/* What the delivery rings in a VM's RAM say (vm_ring_check()). */
struct vm_ring_tally {
    uint64_t records; /* ring records checked */
    uint64_t bad;     /* slots that should hold a record and do not (lost) */
    uint64_t gaps;    /* a sender's sequence broken between two records */
    uint64_t missing; /* messages a device consumed that its ring lacks (rings that did not wrap) */
    bool wrapped;     /* some ring wrapped: only its last laps are checked */
    bool result_ok;   /* the large device's result record matches its registers (or no large) */
    int failed;       /* the device that did not answer, or -1 */
};

/* The large-state device of a VM: `vfiomig serve --device large` options. */
struct vm_large {
    const char *mem;  /* --mem */
    const char *rate; /* --dirty-rate */
};

struct vm_tally {
    uint64_t sent;       /* messages sent, all pairs */
    uint64_t consumed;   /* messages consumed, all pairs */
    uint64_t waiting;    /* still in an inbox (a stopped device without P2P) */
    uint64_t lost;       /* sent, and neither consumed nor waiting */
    uint64_t duplicated; /* consumed or waiting more often than sent */
    uint64_t gaps;       /* messages the consumers saw skipped in a sequence */
    unsigned corrupted;  /* inbox lanes left inconsistent (written while saved) */
    int failed;          /* on an error: the device that did not answer (-1: none) */
};

/* Starts @n `vfiomig serve --device p2p-mailbox` processes with sockets
 * DIR/SIDE-i.sock (device i without P2P when no_p2p[i]), and with @large a
 * large-state device after them, and connects. */
int vm_start(struct vm *vm, const char *dir, const char *side, unsigned n, const bool *no_p2p,
             const struct vm_large *large, uint64_t ram_size);

/* The VM's RAM as the migration engine takes it (one range). */
void vm_ram_range(const struct vm *vm, struct vfm_mig_ram *r);

/* Stops the large device (if any) and checks every mailbox's delivery ring
 * in the VM's RAM, record by record, and the large device's result record.
 * Call after vm_check() (the mailboxes quiesced). Return: 0 or -errno (a
 * device did not answer: t->failed). */
int vm_ring_check(struct vm *vm, struct vm_ring_tally *t);

/* The large device's digests: at its last save (source) and after its
 * last load (destination). Return: 0 or -errno. */
int vm_large_digests(struct vm *vm, uint64_t *saved, uint64_t *loaded);

/* Gives every device its index and every peer's inbox in its DMA space;
 * with @stopped, stops each device first (a destination waiting for its
 * state). */
int vm_wire(struct vm *vm, bool stopped);

/* Quiesces every device (no new sends, inboxes drained) and counts, for
 * every pair, messages sent against messages consumed. */
int vm_check(struct vm *vm, struct vm_tally *t);
/* As vm_check() with @quiesce; without, the devices' states are left as
 * they are (a stopped VM whose outcome is unknown is only read). */
int vm_tally(struct vm *vm, struct vm_tally *t, bool quiesce);
/* How many of the VM's devices are RUNNING (or RUNNING_P2P) now; a device
 * that does not answer counts as not running. */
unsigned vm_running(struct vm *vm);

/* Disconnects and stops the processes. */
void vm_stop(struct vm *vm);

#endif
