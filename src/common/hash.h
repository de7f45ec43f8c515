/* SPDX-License-Identifier: MIT */
/*
 * XXH3-64, the checksum of vfiomig's streams, computed by the fastest code
 * this CPU runs: libxxhash's (SSE2, the x86-64 baseline) or an AVX2 build
 * of the same algorithm (src/common/hash_avx2.c), chosen once at first use.
 * XXH3's result does not depend on the vector width: both give the same
 * value for the same bytes (tests/unit/test_hash.c checks it).
 */
#ifndef VFIOMIG_HASH_H
#define VFIOMIG_HASH_H

#include <stddef.h>
#include <stdint.h>

/* One pass. */
uint64_t vfm_xxh3(const void *data, size_t len);

/* Streaming: the hash of everything given to update since reset. */
struct vfm_xxh3_stream;
struct vfm_xxh3_stream *vfm_xxh3_stream_new(void); /* reset, ready; NULL: out of memory */
void vfm_xxh3_stream_free(struct vfm_xxh3_stream *s);
void vfm_xxh3_stream_reset(struct vfm_xxh3_stream *s);
void vfm_xxh3_stream_update(struct vfm_xxh3_stream *s, const void *data, size_t len);
uint64_t vfm_xxh3_stream_digest(const struct vfm_xxh3_stream *s);

/* Which implementation runs: "avx2" or "sse2" (for benchmarks' output). */
const char *vfm_xxh3_impl(void);

/* The AVX2 build's entry points (hash_avx2.c; call only where AVX2 runs). */
uint64_t vfm_xxh3_avx2(const void *data, size_t len);
void *vfm_xxh3_avx2_new(void);
void vfm_xxh3_avx2_free(void *s);
void vfm_xxh3_avx2_reset(void *s);
void vfm_xxh3_avx2_update(void *s, const void *data, size_t len);
uint64_t vfm_xxh3_avx2_digest(const void *s);

#endif
