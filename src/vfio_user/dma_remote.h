/* SPDX-License-Identifier: MIT */
/* The DMA table's message path (internal): how vfm_dma_read() and
 * vfm_dma_write() reach a range the client mapped without an fd. */
#ifndef VFIOMIG_VU_DMA_REMOTE_H
#define VFIOMIG_VU_DMA_REMOTE_H

#include <stdbool.h>
#include <stdint.h>

#include <vfiomig/vfio_user_server.h>

/* Carries one access of [iova, iova+len) to the client (DMA_READ into
 * @buf, or DMA_WRITE of @buf). Return: 0 or -errno. */
typedef int (*vfm_dma_remote_fn)(void *ctx, bool write, uint64_t iova, void *buf, uint64_t len);

/*
 * vfm_dma_set_remote - the server serving a client sets @fn (and @ctx);
 * NULL when the client goes. Clearing waits until no call of the previous
 * @fn is under way (the server makes them end first: a connection that is
 * gone fails them at once), so @ctx may be freed when it returns.
 */
void vfm_dma_set_remote(struct vfm_dma *dma, vfm_dma_remote_fn fn, void *ctx);

#endif
