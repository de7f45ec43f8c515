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

/* The state format id stamped into saved streams ("TICK"). */
#define TICKER_COMPAT 0x4b434954u

struct ticker;

/* Creates a ticker with @mem_size bytes of memory (>= 8), running. */
int ticker_new(const char *name, size_t mem_size, struct ticker **out);
void ticker_free(struct ticker *t);

/* The device runtime that migrates it. */
struct vfm_device *ticker_device(struct ticker *t);

/* Ticks so far, and a digest (XXH3-64) of the whole device state. */
uint64_t ticker_ticks(struct ticker *t);
uint64_t ticker_digest(struct ticker *t);

#endif
