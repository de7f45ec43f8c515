/* SPDX-License-Identifier: MIT */
/*
 * ticker — the minimal example device of docs/device-guide.md.
 *
 * While RUNNING, a worker thread "ticks": it counts, and writes the count
 * into a block of device memory (a stand-in for registers and RAM that a
 * real device changes while it runs). Its migration state is the count and
 * the memory. It implements the STOP_COPY capability only: RUNNING -> STOP,
 * STOP -> RUNNING, save, load and reset.
 */
#ifndef VFIOMIG_TICKER_H
#define VFIOMIG_TICKER_H

#include <stddef.h>
#include <stdint.h>

#include <vfiomig/device.h>
#include <vfiomig/pci.h>

/* The state format id stamped into saved streams ("TICK"). */
#define TICKER_COMPAT 0x4b434954u

struct ticker;

/* Creates a ticker with @mem_size bytes of memory (>= 8), running. */
int ticker_new(const char *name, size_t mem_size, struct ticker **out);
void ticker_free(struct ticker *t);

/* The device runtime that migrates it. */
struct vfm_device *ticker_device(struct ticker *t);

/* As a PCI device (docs/device-guide.md, "A PCI device"): 1af4:10f2, class
 * 0x088000 (a system peripheral); BAR0 its registers (8-byte accesses),
 * BAR1 the MSI-X table (one vector) and PBA; INTx. */
#define TICKER_PCI_DEVICE 0x10f2u
#define TICKER_REG_TICKS 0x0u /* RO: the count */
#define TICKER_REG_ALARM 0x8u /* RW: interrupt when the count reaches it (once; 0: never) */

/* Fills @cfg (for vfm_server_new()) with the ticker as a PCI device; the
 * caller sets the socket and the DMA table. Return: 0 or -errno. */
int ticker_server_config(struct ticker *t, struct vfm_server_config *cfg);

/* Ticks so far, and a digest (XXH3-64) of the whole device state. */
uint64_t ticker_ticks(struct ticker *t);
uint64_t ticker_digest(struct ticker *t);

#endif
