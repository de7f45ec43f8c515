/* SPDX-License-Identifier: MIT */
/*
 * XXH3-64 built for AVX2 (this file is compiled with -mavx2): xxhash's own
 * header, inlined here under a private namespace so that it does not clash
 * with libxxhash's symbols. Called only after the CPU was seen to run AVX2.
 */
#define XXH_INLINE_ALL
#define XXH_NAMESPACE vfm_avx2_
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>

#include "hash.h"

uint64_t vfm_xxh3_avx2(const void *data, size_t len)
{
    return XXH3_64bits(data, len);
}

void *vfm_xxh3_avx2_new(void)
{
    return XXH3_createState();
}

void vfm_xxh3_avx2_free(void *s)
{
    XXH3_freeState(s);
}

void vfm_xxh3_avx2_reset(void *s)
{
    XXH3_64bits_reset(s);
}

void vfm_xxh3_avx2_update(void *s, const void *data, size_t len)
{
    XXH3_64bits_update(s, data, len);
}

uint64_t vfm_xxh3_avx2_digest(const void *s)
{
    return XXH3_64bits_digest(s);
}
