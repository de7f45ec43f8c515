/* SPDX-License-Identifier: MIT */
/* The DMA table of a vfio-user server (include/vfiomig/vfio_user.h). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vfiomig/vfio_user.h>

struct dma_map {
    uint64_t iova;
    uint64_t size;
    void *mem; /* NULL: known range, no memory */
    uint32_t prot;
};

struct vfm_dma {
    /* Readers are device threads touching memory; the writer is the server
     * changing the table. Writers are preferred so a busy device cannot
     * starve DMA_UNMAP. Readers must not nest get() calls. */
    pthread_rwlock_t lock;
    struct dma_map *maps;
    uint32_t n;
    uint32_t max;
};

int vfm_dma_new(uint32_t max_maps, struct vfm_dma **out)
{
    struct vfm_dma *d = calloc(1, sizeof(*d));
    pthread_rwlockattr_t attr;

    if (!d)
        return -ENOMEM;
    d->max = max_maps ? max_maps : 1024;
    d->maps = calloc(d->max, sizeof(*d->maps));
    if (!d->maps) {
        free(d);
        return -ENOMEM;
    }
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&d->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    *out = d;
    return 0;
}

void vfm_dma_free(struct vfm_dma *d)
{
    if (!d)
        return;
    vfm_dma_unmap_all(d);
    pthread_rwlock_destroy(&d->lock);
    free(d->maps);
    free(d);
}

int vfm_dma_map(struct vfm_dma *d, uint64_t iova, uint64_t size, int fd, uint64_t offset,
                uint32_t prot)
{
    long page = sysconf(_SC_PAGESIZE);
    void *mem = NULL;
    int mprot = 0, ret = 0;

    if (size == 0 || iova + size < iova || offset + size < offset ||
        (prot & ~(VFM_VU_DMA_READ_FLAG | VFM_VU_DMA_WRITE_FLAG)))
        return -EINVAL;
    if (fd >= 0 && (offset % (uint64_t)page || size > SIZE_MAX))
        return -EINVAL;
    if (fd >= 0) {
        /* a file's mapping ends at its end: bytes past it are a SIGBUS at
         * the first touch, not memory (a client could map 64 TiB of a 4 KiB
         * file) */
        struct stat st;
        if (fstat(fd, &st) < 0)
            return -errno;
        if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < offset + size)
            return -EINVAL;
    }
    pthread_rwlock_wrlock(&d->lock);
    for (uint32_t i = 0; i < d->n; i++) {
        if (iova < d->maps[i].iova + d->maps[i].size && d->maps[i].iova < iova + size) {
            ret = -EEXIST;
            goto out;
        }
    }
    if (d->n == d->max) {
        ret = -ENOSPC;
        goto out;
    }
    if (fd >= 0) {
        if (prot & VFM_VU_DMA_READ_FLAG)
            mprot |= PROT_READ;
        if (prot & VFM_VU_DMA_WRITE_FLAG)
            mprot |= PROT_WRITE;
        mem = mmap(NULL, (size_t)size, mprot ? mprot : PROT_NONE, MAP_SHARED, fd, (off_t)offset);
        if (mem == MAP_FAILED) {
            ret = -errno;
            goto out;
        }
    }
    d->maps[d->n++] = (struct dma_map){iova, size, mem, prot};
out:
    pthread_rwlock_unlock(&d->lock);
    return ret;
}

int vfm_dma_unmap(struct vfm_dma *d, uint64_t iova, uint64_t size)
{
    int ret = -EINVAL;

    pthread_rwlock_wrlock(&d->lock); /* waits for every holder */
    for (uint32_t i = 0; i < d->n; i++) {
        if (d->maps[i].iova == iova && d->maps[i].size == size) {
            if (d->maps[i].mem)
                munmap(d->maps[i].mem, (size_t)size);
            d->maps[i] = d->maps[--d->n];
            ret = 0;
            break;
        }
    }
    pthread_rwlock_unlock(&d->lock);
    return ret;
}

void vfm_dma_unmap_all(struct vfm_dma *d)
{
    pthread_rwlock_wrlock(&d->lock);
    for (uint32_t i = 0; i < d->n; i++)
        if (d->maps[i].mem)
            munmap(d->maps[i].mem, (size_t)d->maps[i].size);
    d->n = 0;
    pthread_rwlock_unlock(&d->lock);
}

void *vfm_dma_get(struct vfm_dma *d, uint64_t iova, uint64_t len, uint32_t prot)
{
    pthread_rwlock_rdlock(&d->lock);
    for (uint32_t i = 0; i < d->n; i++) {
        struct dma_map *m = &d->maps[i];
        if (iova >= m->iova && len <= m->size && iova - m->iova <= m->size - len) {
            if (!m->mem || (m->prot & prot) != prot)
                break;
            return (char *)m->mem + (iova - m->iova);
        }
    }
    pthread_rwlock_unlock(&d->lock);
    return NULL;
}

void vfm_dma_put(struct vfm_dma *d)
{
    pthread_rwlock_unlock(&d->lock);
}
