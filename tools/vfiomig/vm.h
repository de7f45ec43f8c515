/* SPDX-License-Identifier: MIT */
/* A "VM" of p2p-mailbox device processes, and its checker (vm.c). */
#ifndef VFIOMIG_VM_H
#define VFIOMIG_VM_H

#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <vfiomig/vfio_user.h>

#define VM_MAX 64u

struct vm {
    unsigned n;
    pid_t pid[VM_MAX];
    char path[VM_MAX][108];
    char name[VM_MAX][32];
    struct vfm_vu_client *c[VM_MAX];
    struct vfm_endpoint *ep[VM_MAX];
    int bar_fd[VM_MAX];
};

struct vm_tally {
    uint64_t sent;       /* messages sent, all pairs */
    uint64_t consumed;   /* messages consumed, all pairs */
    uint64_t waiting;    /* still in an inbox (a stopped device without P2P) */
    uint64_t lost;       /* sent, and neither consumed nor waiting */
    uint64_t duplicated; /* consumed or waiting more often than sent */
    uint64_t gaps;       /* messages the consumers saw skipped in a sequence */
    unsigned corrupted;  /* inboxes left inconsistent (written while saved) */
};

/* Starts @n `vfiomig serve --device p2p-mailbox` processes with sockets
 * DIR/SIDE-i.sock (device i without P2P when no_p2p[i]) and connects. */
int vm_start(struct vm *vm, const char *dir, const char *side, unsigned n, const bool *no_p2p);

/* Gives every device its index and every peer's inbox in its DMA space;
 * with @stopped, stops each device first (a destination waiting for its
 * state). */
int vm_wire(struct vm *vm, bool stopped);

/* Quiesces every device (no new sends, inboxes drained) and counts, for
 * every pair, messages sent against messages consumed. */
int vm_check(struct vm *vm, struct vm_tally *t);

/* Disconnects and stops the processes. */
void vm_stop(struct vm *vm);

#endif
