/* SPDX-License-Identifier: MIT */
/* XXH3-64 through the fastest implementation the CPU runs (hash.h). */
#include <pthread.h>
#include <stdbool.h>

#include <xxhash.h>

#include <vfiomig/common.h>

#include "hash.h"

static bool use_avx2;
static pthread_once_t chosen = PTHREAD_ONCE_INIT;

static void choose(void)
{
#if defined(__x86_64__) && defined(VFM_HAVE_AVX2_HASH)
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2");
#endif
}

static bool avx2(void)
{
    pthread_once(&chosen, choose);
    return use_avx2;
}

uint64_t vfm_xxh3_64(const void *data, size_t len)
{
    return vfm_xxh3(data, len);
}

const char *vfm_xxh3_impl(void)
{
    return avx2() ? "avx2" : "sse2";
}

uint64_t vfm_xxh3(const void *data, size_t len)
{
#ifdef VFM_HAVE_AVX2_HASH
    if (avx2())
        return vfm_xxh3_avx2(data, len);
#endif
    return XXH3_64bits(data, len);
}

/* The state is one implementation's or the other's, never mixed: the
 * choice is made once, before the first state exists. */
struct vfm_xxh3_stream *vfm_xxh3_stream_new(void)
{
#ifdef VFM_HAVE_AVX2_HASH
    if (avx2())
        return vfm_xxh3_avx2_new();
#endif
    return (struct vfm_xxh3_stream *)XXH3_createState();
}

void vfm_xxh3_stream_free(struct vfm_xxh3_stream *s)
{
#ifdef VFM_HAVE_AVX2_HASH
    if (avx2()) {
        vfm_xxh3_avx2_free(s);
        return;
    }
#endif
    XXH3_freeState((XXH3_state_t *)s);
}

void vfm_xxh3_stream_reset(struct vfm_xxh3_stream *s)
{
#ifdef VFM_HAVE_AVX2_HASH
    if (avx2()) {
        vfm_xxh3_avx2_reset(s);
        return;
    }
#endif
    XXH3_64bits_reset((XXH3_state_t *)s);
}

void vfm_xxh3_stream_update(struct vfm_xxh3_stream *s, const void *data, size_t len)
{
#ifdef VFM_HAVE_AVX2_HASH
    if (avx2()) {
        vfm_xxh3_avx2_update(s, data, len);
        return;
    }
#endif
    XXH3_64bits_update((XXH3_state_t *)s, data, len);
}

uint64_t vfm_xxh3_stream_digest(const struct vfm_xxh3_stream *s)
{
#ifdef VFM_HAVE_AVX2_HASH
    if (avx2())
        return vfm_xxh3_avx2_digest(s);
#endif
    return XXH3_64bits_digest((const XXH3_state_t *)s);
}
