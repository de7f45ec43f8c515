/* SPDX-License-Identifier: MIT */
/**
 * @file
 * vfiomig vocabulary — the migration states, capability flags and feature
 * numbers of the Linux VFIO migration uAPI ("v2"), with the same numbers as
 * include/uapi/linux/vfio.h, and their names.
 *
 * The values are checked at compile time against <linux/vfio.h> for every
 * value that header defines (src/uapi/uapi.c); the header on Debian 12 is
 * from Linux 6.1 and lacks the PRE_COPY values, which were added in 6.2.
 *
 * Threading: everything here is pure and may be called from any thread.
 */
#ifndef VFIOMIG_UAPI_H
#define VFIOMIG_UAPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vfiomig/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* enum vfio_device_mig_state */
enum vfm_state {
    VFM_STATE_ERROR = 0,
    VFM_STATE_STOP = 1,
    VFM_STATE_RUNNING = 2,
    VFM_STATE_STOP_COPY = 3,
    VFM_STATE_RESUMING = 4,
    VFM_STATE_RUNNING_P2P = 5,
    VFM_STATE_PRE_COPY = 6,
    VFM_STATE_PRE_COPY_P2P = 7,
};
/* Number of states; any state number >= VFM_STATE_COUNT is out of range. */
#define VFM_STATE_COUNT 8u

/* struct vfio_device_feature_migration.flags */
#define VFM_MIGRATION_STOP_COPY (1u << 0) /* mandatory: STOP, STOP_COPY, RESUMING */
#define VFM_MIGRATION_P2P (1u << 1)       /* RUNNING_P2P (and PRE_COPY_P2P) */
#define VFM_MIGRATION_PRE_COPY (1u << 2)  /* PRE_COPY (and PRE_COPY_P2P) */
#define VFM_MIGRATION_ALL (VFM_MIGRATION_STOP_COPY | VFM_MIGRATION_P2P | VFM_MIGRATION_PRE_COPY)

/* VFIO_DEVICE_FEATURE: flags = feature id | GET | SET | PROBE */
#define VFM_FEATURE_MASK 0xffffu
#define VFM_FEATURE_GET (1u << 16)
#define VFM_FEATURE_SET (1u << 17)
#define VFM_FEATURE_PROBE (1u << 18)
#define VFM_FEATURE_MIGRATION 1u
#define VFM_FEATURE_MIG_DEVICE_STATE 2u
#define VFM_FEATURE_DMA_LOGGING_START 6u
#define VFM_FEATURE_DMA_LOGGING_STOP 7u
#define VFM_FEATURE_DMA_LOGGING_REPORT 8u
#define VFM_FEATURE_MIG_DATA_SIZE 9u
/* SET (no data): VFIO_MIG_GET_PRECOPY_INFO's flags become an output
 * (VFM_PRECOPY_INFO_REINIT); a device without PRE_COPY answers EINVAL.
 * Kernels before it answer ENOTTY. */
#define VFM_FEATURE_MIG_PRECOPY_INFOV2 12u

/* struct vfio_precopy_info.flags, an output only after the
 * MIG_PRECOPY_INFOv2 opt-in: the device has new initial data (its
 * initial_bytes is a new count, from which it falls to 0 again; dirty_bytes
 * restarts from 0). Without the opt-in the flags carry nothing. */
#define VFM_PRECOPY_INFO_REINIT (1u << 0)

/* One range of DMA_LOGGING_START (struct
 * vfio_device_feature_dma_logging_range). */
struct vfm_dma_range {
    uint64_t iova;
    uint64_t length;
};

/* The most ranges one DMA_LOGGING_START takes (the kernel's: a page of
 * them). */
#define VFM_DMA_LOG_MAX_RANGES 256u

/**
 * vfm_state_name - the uAPI name of a state ("RUNNING_P2P").
 * Return: a static string, or NULL when @state is out of range.
 */
VFM_EXPORT const char *vfm_state_name(uint32_t state);

/**
 * vfm_state_str - like vfm_state_name() but never NULL: an out-of-range
 * state gives "INVALID". For messages.
 */
VFM_EXPORT const char *vfm_state_str(uint32_t state);

/**
 * vfm_state_parse - a state from a name or a number.
 * @s: a uAPI name, case-insensitive, with or without the
 *     "VFIO_DEVICE_STATE_" prefix ("running_p2p", "STOP"), or a decimal
 *     number 0..7.
 * @out: the state on success.
 * Return: 0, or -EINVAL (unknown name, out-of-range number, empty string).
 */
VFM_EXPORT int vfm_state_parse(const char *s, uint32_t *out);

/**
 * vfm_flags_parse - migration flags from a list or a number.
 * @s: comma-separated names ("stop-copy,p2p,pre-copy"; '-' or '_', any case,
 *     an optional "VFIO_MIGRATION_" prefix) or a number (decimal or 0x hex).
 * @out: the flags on success. The value is not checked for validity
 *       (see vfm_fsm_flags_valid()), only for being known bits.
 * Return: 0, or -EINVAL (unknown name, unknown bit, empty list).
 */
VFM_EXPORT int vfm_flags_parse(const char *s, uint32_t *out);

/**
 * vfm_flags_format - "STOP_COPY|P2P|PRE_COPY" into @buf.
 * Unknown bits are printed as a hex remainder; 0 prints "0".
 * Return: the length the full string needs (snprintf semantics).
 */
VFM_EXPORT int vfm_flags_format(uint32_t flags, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif /* VFIOMIG_UAPI_H */
