/* SPDX-License-Identifier: MIT */
/**
 * @file
 * vfiomig vfio-user, part 1: the wire — message layouts, and a pure codec
 * that checks every length, offset, count and fd count before anything is
 * used (vfm_vu_decode_*); fuzzed by fuzz/fuzz_vfio_user.c. Pure functions:
 * any thread. (vfiomig/vfio_user.h has the whole protocol.)
 */
#ifndef VFIOMIG_VFIO_USER_WIRE_H
#define VFIOMIG_VFIO_USER_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <vfiomig/uapi.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* 1. The wire                                                         */
/* ------------------------------------------------------------------ */

#define VFM_VU_MAJOR 0
#define VFM_VU_MINOR 1

enum vfm_vu_cmd {
    VFM_VU_VERSION = 1,
    VFM_VU_DMA_MAP = 2,
    VFM_VU_DMA_UNMAP = 3,
    VFM_VU_DEVICE_GET_INFO = 4,
    VFM_VU_DEVICE_GET_REGION_INFO = 5,
    VFM_VU_DEVICE_GET_REGION_IO_FDS = 6,
    VFM_VU_DEVICE_GET_IRQ_INFO = 7,
    VFM_VU_DEVICE_SET_IRQS = 8,
    VFM_VU_REGION_READ = 9,
    VFM_VU_REGION_WRITE = 10,
    VFM_VU_DMA_READ = 11,
    VFM_VU_DMA_WRITE = 12,
    VFM_VU_DEVICE_RESET = 13,
    VFM_VU_REGION_WRITE_MULTI = 15,
    VFM_VU_DEVICE_FEATURE = 16,
    VFM_VU_MIG_DATA_READ = 17,
    VFM_VU_MIG_DATA_WRITE = 18,
    /* vfiomig's extension, sent only when both sides announced
     * "vfiomig": {"precopy_info": true} in VERSION: the pre-copy bytes still
     * to read (VFIO_MIG_GET_PRECOPY_INFO). */
    VFM_VU_VFIOMIG_PRECOPY_INFO = 0x7f01,
};

/* Header flags */
#define VFM_VU_TYPE_MASK 0xfu
#define VFM_VU_TYPE_COMMAND 0u
#define VFM_VU_TYPE_REPLY 1u
#define VFM_VU_NO_REPLY (1u << 4)
#define VFM_VU_ERROR (1u << 5)

struct vfm_vu_hdr {
    uint16_t msg_id;
    uint16_t cmd;
    uint32_t msg_size; /* header included */
    uint32_t flags;
    uint32_t error;
} __attribute__((packed));

struct vfm_vu_version {
    uint16_t major;
    uint16_t minor;
    /* then, optionally, NUL-terminated JSON */
} __attribute__((packed));

#define VFM_VU_DMA_READ_FLAG (1u << 0)
#define VFM_VU_DMA_WRITE_FLAG (1u << 1)

struct vfm_vu_dma_map {
    uint32_t argsz;
    uint32_t flags;
    uint64_t offset; /* into the fd passed with the message */
    uint64_t addr;   /* DMA address (IOVA) */
    uint64_t size;
} __attribute__((packed));

struct vfm_vu_dma_unmap {
    uint32_t argsz;
    uint32_t flags;
    uint64_t addr;
    uint64_t size;
} __attribute__((packed));

/* VFIO_DEVICE_FLAGS_* */
#define VFM_VU_DEVICE_FLAGS_RESET (1u << 0)
#define VFM_VU_DEVICE_FLAGS_PCI (1u << 1)

struct vfm_vu_device_info {
    uint32_t argsz;
    uint32_t flags;
    uint32_t num_regions;
    uint32_t num_irqs;
} __attribute__((packed));

/* VFIO_REGION_INFO_FLAG_* */
#define VFM_VU_REGION_READ_FLAG (1u << 0)
#define VFM_VU_REGION_WRITE_FLAG (1u << 1)
#define VFM_VU_REGION_MMAP_FLAG (1u << 2)
#define VFM_VU_REGION_CAPS_FLAG (1u << 3)

struct vfm_vu_region_info {
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t cap_offset;
    uint64_t size;
    uint64_t offset; /* mmap() offset into the fd passed with the reply */
} __attribute__((packed));

struct vfm_vu_region_access {
    uint64_t offset;
    uint32_t region;
    uint32_t count;
    /* then count bytes (REGION_WRITE request, REGION_READ reply) */
} __attribute__((packed));

/* DMA_READ / DMA_WRITE (server to client). The request is this, then
 * count bytes for DMA_WRITE; the DMA_READ reply is this and the bytes; the
 * DMA_WRITE reply is this (the specification's table gives its count 4
 * bytes: a reply of 12 bytes is taken too). */
struct vfm_vu_dma_rw {
    uint64_t addr;
    uint64_t count;
} __attribute__((packed));

struct vfm_vu_irq_info {
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t count;
} __attribute__((packed));

/* VFIO_IRQ_INFO_* (DEVICE_GET_IRQ_INFO flags) */
#define VFM_VU_IRQ_INFO_EVENTFD (1u << 0)
#define VFM_VU_IRQ_INFO_MASKABLE (1u << 1)
#define VFM_VU_IRQ_INFO_AUTOMASKED (1u << 2)
#define VFM_VU_IRQ_INFO_NORESIZE (1u << 3)
/* VFIO_IRQ_SET_* (DEVICE_SET_IRQS flags): one DATA_ and one ACTION_ */
#define VFM_VU_IRQ_SET_DATA_NONE (1u << 0)
#define VFM_VU_IRQ_SET_DATA_BOOL (1u << 1)
#define VFM_VU_IRQ_SET_DATA_EVENTFD (1u << 2)
#define VFM_VU_IRQ_SET_ACTION_MASK (1u << 3)
#define VFM_VU_IRQ_SET_ACTION_UNMASK (1u << 4)
#define VFM_VU_IRQ_SET_ACTION_TRIGGER (1u << 5)
#define VFM_VU_IRQ_SET_DATA_MASK 0x7u
#define VFM_VU_IRQ_SET_ACTION_MASK_ALL 0x38u

/* REGION_INFO capabilities (VFIO_REGION_INFO_CAP_*): a chain after the
 * struct vfm_vu_region_info, at its cap_offset */
struct vfm_vu_cap_header {
    uint16_t id;
    uint16_t version;
    uint32_t next; /* offset of the next from the start of the reply; 0: last */
} __attribute__((packed));
#define VFM_VU_REGION_INFO_CAP_SPARSE_MMAP 1u
struct vfm_vu_sparse_mmap {
    struct vfm_vu_cap_header header; /* id SPARSE_MMAP, version 1 */
    uint32_t nr_areas;
    uint32_t reserved;
    /* then nr_areas of {u64 offset; u64 size;} */
} __attribute__((packed));

struct vfm_vu_irq_set {
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t start;
    uint32_t count;
} __attribute__((packed));

struct vfm_vu_feature {
    uint32_t argsz; /* request: the most reply payload wanted */
    uint32_t flags; /* feature id | VFM_FEATURE_GET / SET / PROBE */
    /* then the feature's data */
} __attribute__((packed));

struct vfm_vu_mig_state {
    uint32_t device_state;
    int32_t data_fd; /* -1; with the data fd extension, a SET's reply says 0
                      * when it carries the session's fd */
} __attribute__((packed));

struct vfm_vu_mig_data {
    uint32_t argsz;
    uint32_t size;
    /* then size bytes (MIG_DATA_WRITE request, MIG_DATA_READ reply) */
} __attribute__((packed));

/* VFM_VU_VFIOMIG_PRECOPY_INFO's request and reply (the kernel's struct
 * vfio_precopy_info): the request has argsz 24, flags 0 and zeros. */
struct vfm_vu_precopy_info {
    uint32_t argsz;
    uint32_t flags;
    uint64_t initial_bytes;
    uint64_t dirty_bytes;
} __attribute__((packed));

/* Default max_data_xfer_size: 1 MiB, the specification's default. */
#define VFM_VU_DEFAULT_MAX_XFER (1u << 20)
/* Our ceiling on max_data_xfer_size (either side): 64 MiB. */
#define VFM_VU_MAX_XFER_LIMIT (64u << 20)
/*
 * The largest body a vfiomig client sends to a server that did not announce
 * "whole_bodies": 32 KiB. Linux queues a UNIX-stream sendmsg() in buffers
 * of at most one page of header room plus 32 KiB of fragments (the
 * af_unix send path's fallback-to-order-0 limit), each appended to the
 * receiver's queue whole; a message of 16 + 8 + 32 KiB goes in one such
 * buffer, so a server that takes the header and then the body with one
 * recv() each finds the whole body there. Larger bodies can be read in
 * part (observed with libvfio-user: at a 256 KiB body, one recv() took
 * 219,248 of 262,152 bytes, and the server lost framing).
 */
#define VFM_VU_SAFE_BODY (32u << 10)
/* The fds vfiomig accepts in one message. */
#define VFM_VU_MAX_FDS 8u

/* What one side announced in VERSION (defaults when absent). */
struct vfm_vu_caps {
    uint32_t max_msg_fds;        /* default 1 */
    uint32_t max_data_xfer_size; /* default 1 MiB */
    uint32_t max_dma_maps;       /* default 65535 */
    uint64_t pgsizes;            /* default 4096 */
    uint64_t migration_pgsize;   /* "migration": {"pgsize"}; 0 when absent */
    bool precopy_info;           /* "vfiomig": {"precopy_info": true} */
    /* "vfiomig": {"whole_bodies": true}: this side reads a message's body
     * whole however its bytes arrive, so the other may send bodies up to
     * max_data_xfer_size. Without it, a vfiomig client keeps the bodies it
     * sends to VFM_VU_SAFE_BODY (a server may read a body with one recv(),
     * as libvfio-user does). */
    bool whole_bodies;
    /* "vfiomig": {"data_fd": true}: a MIG_DEVICE_STATE SET that opens a
     * STOP_COPY or RESUMING session gets the session's bytes as a file
     * descriptor passed with its reply (docs/vfio-user-extensions.md),
     * instead of MIG_DATA_READ / MIG_DATA_WRITE messages. */
    bool data_fd;
};

/**
 * vfm_vu_caps_default - the defaults of the specification.
 */
VFM_EXPORT void vfm_vu_caps_default(struct vfm_vu_caps *caps);

/**
 * vfm_vu_caps_parse - read a VERSION message's JSON (json-c).
 * @json: the bytes after major/minor, @len of them; must be NUL-terminated
 *        within @len and hold a JSON object. Unknown keys are ignored; a
 *        known key of the wrong type, a number out of range, or a missing
 *        NUL is refused.
 * Return: 0 and @caps (defaults for what is absent), or -EINVAL.
 */
VFM_EXPORT int vfm_vu_caps_parse(const char *json, size_t len, struct vfm_vu_caps *caps);

/** vfm_vu_caps_format - the JSON for @caps; malloc'd, NUL-terminated, or
 * NULL (out of memory). */
VFM_EXPORT char *vfm_vu_caps_format(const struct vfm_vu_caps *caps);

/**
 * vfm_vu_decode_hdr - check a received header.
 * @max_size: the largest msg_size this side accepts.
 * Return: 0; -EINVAL (msg_size below 16, a reserved flag bit, a type other
 *      than command/reply); -EMSGSIZE (msg_size above @max_size).
 */
VFM_EXPORT int vfm_vu_decode_hdr(const struct vfm_vu_hdr *h, uint32_t max_size);

/* A command, checked and decoded. */
struct vfm_vu_request {
    uint16_t cmd;
    union {
        struct vfm_vu_version version;
        struct vfm_vu_dma_map dma_map;
        struct vfm_vu_dma_unmap dma_unmap;
        struct vfm_vu_device_info info;
        struct vfm_vu_region_info region_info;
        struct vfm_vu_region_access access;
        struct vfm_vu_irq_info irq_info;
        struct vfm_vu_irq_set irq_set;
        struct vfm_vu_feature feature;
        struct vfm_vu_mig_data mig;
        struct vfm_vu_precopy_info precopy;
    } u;
    const uint8_t *data; /* trailing bytes: version JSON, write data, feature data */
    size_t data_len;
};

/**
 * vfm_vu_decode_request - check a command's payload against the layout of
 * its command, before any field is used.
 * @cmd: the header's command.
 * @payload, @len: the bytes after the header (@len = msg_size - 16).
 * @nfds: file descriptors that came with it.
 * @max_xfer: the most data a REGION_WRITE or MIG_DATA_WRITE may carry, and
 *      a REGION_READ or MIG_DATA_READ may ask for.
 * Return: 0 and @out; -EINVAL for a payload of the wrong size or
 *      inconsistent lengths, or fds where the command takes none (or too
 *      many); -E2BIG for a count above @max_xfer; -ENOSYS for a command
 *      this implementation does not know. Semantic checks (a region index,
 *      an offset inside a region) belong to the server.
 */
VFM_EXPORT int vfm_vu_decode_request(uint16_t cmd, const void *payload, size_t len, unsigned nfds,
                                     uint32_t max_xfer, struct vfm_vu_request *out);

/**
 * vfm_vu_cmd_name - the name of a command ("MIG_DATA_READ"), or "UNKNOWN".
 */
VFM_EXPORT const char *vfm_vu_cmd_name(uint16_t cmd);

#ifdef __cplusplus
}
#endif
#endif /* VFIOMIG_VFIO_USER_WIRE_H */
