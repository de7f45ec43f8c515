/* SPDX-License-Identifier: MIT */
/* XXH3-64 through the fastest implementation the CPU runs (hash.h). */
#include <pthread.h>

#include <xxhash.h>

#include <vfiomig/common.h>

#include "hash.h"

/* One implementation's entry points; a stream state is always the chosen
 * one's (the choice is made once, before the first state exists). */
struct impl {
    const char *name;
    uint64_t (*oneshot)(const void *data, size_t len);
    void *(*make)(void);
    void (*release)(void *s);
    void (*reset)(void *s);
    void (*update)(void *s, const void *data, size_t len);
    uint64_t (*digest)(const void *s);
};

/* libxxhash's (SSE2 on x86-64): its state type and error codes adapted */
static uint64_t generic_oneshot(const void *data, size_t len)
{
    return XXH3_64bits(data, len);
}

static void *generic_make(void)
{
    return XXH3_createState();
}

static void generic_release(void *s)
{
    XXH3_freeState(s);
}

static void generic_reset(void *s)
{
    XXH3_64bits_reset(s);
}

static void generic_update(void *s, const void *data, size_t len)
{
    XXH3_64bits_update(s, data, len);
}

static uint64_t generic_digest(const void *s)
{
    return XXH3_64bits_digest(s);
}

static const struct impl generic = {"sse2",        generic_oneshot, generic_make,  generic_release,
                                    generic_reset, generic_update,  generic_digest};

#if defined(__x86_64__) && defined(VFM_HAVE_AVX2_HASH)
static const struct impl avx2 = {"avx2",
                                 vfm_xxh3_avx2,
                                 vfm_xxh3_avx2_new,
                                 vfm_xxh3_avx2_free,
                                 vfm_xxh3_avx2_reset,
                                 vfm_xxh3_avx2_update,
                                 vfm_xxh3_avx2_digest};
#endif

static const struct impl *chosen_impl = &generic;
static pthread_once_t chosen = PTHREAD_ONCE_INIT;

static void choose(void)
{
#if defined(__x86_64__) && defined(VFM_HAVE_AVX2_HASH)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        chosen_impl = &avx2;
#endif
}

static const struct impl *impl(void)
{
    pthread_once(&chosen, choose);
    return chosen_impl;
}

uint64_t vfm_xxh3_64(const void *data, size_t len)
{
    return vfm_xxh3(data, len);
}

const char *vfm_xxh3_impl(void)
{
    return impl()->name;
}

uint64_t vfm_xxh3(const void *data, size_t len)
{
    return impl()->oneshot(data, len);
}

struct vfm_xxh3_stream *vfm_xxh3_stream_new(void)
{
    void *s = impl()->make();

    if (s) /* xxhash's new state is uninitialised until its reset */
        impl()->reset(s);
    return s;
}

void vfm_xxh3_stream_free(struct vfm_xxh3_stream *s)
{
    impl()->release(s);
}

void vfm_xxh3_stream_reset(struct vfm_xxh3_stream *s)
{
    impl()->reset(s);
}

void vfm_xxh3_stream_update(struct vfm_xxh3_stream *s, const void *data, size_t len)
{
    impl()->update(s, data, len);
}

uint64_t vfm_xxh3_stream_digest(const struct vfm_xxh3_stream *s)
{
    return impl()->digest(s);
}
