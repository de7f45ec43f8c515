/* SPDX-License-Identifier: MIT */
/* What each fuzz target gives the replay driver (fuzz/replay.c). */
#ifndef VFIOMIG_FUZZ_H
#define VFIOMIG_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Writes valid seed input number @i into @out (at most @cap bytes).
 * Return: its size, or 0 when there is no seed @i. */
size_t fuzz_seed(unsigned i, uint8_t *out, size_t cap);

#endif
