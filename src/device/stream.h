/* SPDX-License-Identifier: MIT */
/*
 * The device state stream: what a vfiomig device's data session carries.
 * Pure encode/decode, no I/O; the decoder is incremental (bytes may arrive
 * in any pieces) and every length is checked before it is used. Fuzzed by
 * fuzz/fuzz_stream.c.
 *
 * Format (versions 1 and 2, little endian):
 *
 *   stream header, 24 bytes
 *     0 u32 magic "VFMS"     4 u16 version (1, 2) 6 u16 header size (24)
 *     8 u32 compat id       12 u32 reserved (0)
 *    16 u64 XXH3-64 of bytes 0..15
 *   then records, each a 32-byte record header and its payload
 *     0 u16 type: 1 PRECOPY, 2 FINAL, 3 END, 4 FINAL_BEGIN, 5 FINAL_PART
 *     2 u16 reserved (0)     4 u32 sequence number (0, 1, 2, ...)
 *     8 u64 payload length  16 u64 XXH3-64 of the payload
 *    24 u64 XXH3-64 of bytes 0..23 of this record header
 *
 * A whole stream is: the header, any PRECOPY records, the state, and an
 * END record (length 0), after which nothing may follow. The state is
 * either exactly one FINAL record (what save() wrote), or — version 2
 * only, for a state saved in pieces — a FINAL_BEGIN record whose 8-byte
 * payload is the state's size S (at most max_payload) followed by
 * FINAL_PART records, each non-empty, whose payloads are the state's
 * bytes in order and add up to exactly S. Each part has its own checksum,
 * made as it is read, so the saver never hashes (or copies) the whole
 * state before the first byte goes. The header checksums let a corrupted
 * length be refused before a byte of payload is buffered; the sequence
 * numbers catch a lost or repeated record.
 */
#ifndef VFIOMIG_STREAM_H
#define VFIOMIG_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vfiomig/device.h>

/* The byte buffer behind struct vfm_buf (device.h). */
struct vfm_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max;    /* ceiling on len */
    bool mapped;   /* data is an mmap() (large buffers), not malloc() */
    bool external; /* data is someone else's memory of cap bytes: never
                      grown, never freed */
    bool lazy;     /* large growth is not faulted in at once: the pages are
                      touched as bytes arrive (a load receiving from a socket
                      zeroes them there, while the sender fills the next) */
};

int vfm_buf_init(struct vfm_buf *buf, size_t max);
void vfm_buf_release(struct vfm_buf *buf);

#define VFM_STREAM_MAGIC 0x534d4656u /* "VFMS" */
#define VFM_STREAM_VERSION 1u        /* FINAL only */
#define VFM_STREAM_VERSION2 2u       /* FINAL, or FINAL_BEGIN and FINAL_PART */
#define VFM_STREAM_HDR_SIZE 24u
#define VFM_STREAM_REC_SIZE 32u

enum vfm_rec_type {
    VFM_REC_PRECOPY = 1,
    VFM_REC_FINAL = 2,
    VFM_REC_END = 3,
    VFM_REC_FINAL_BEGIN = 4,
    VFM_REC_FINAL_PART = 5,
};

/* FINAL_BEGIN's payload: the state's size. */
#define VFM_STREAM_BEGIN_SIZE 8u

/* Encoding. */
void vfm_stream_put_header(uint8_t out[VFM_STREAM_HDR_SIZE], uint32_t compat, uint16_t version);
void vfm_stream_put_u64(uint8_t out[8], uint64_t v);
/* A record header whose payload's checksum @sum is already known. */
void vfm_stream_put_record_sum(uint8_t out[VFM_STREAM_REC_SIZE], uint16_t type, uint32_t seq,
                               uint64_t len, uint64_t sum);
void vfm_stream_put_record(uint8_t out[VFM_STREAM_REC_SIZE], uint16_t type, uint32_t seq,
                           const void *payload, uint64_t len);

enum vfm_dec_phase {
    VFM_DEC_HEADER,
    VFM_DEC_RECORD,
    VFM_DEC_PAYLOAD,
    VFM_DEC_DONE,
};

struct vfm_stream_dec {
    uint32_t compat;      /* the id the stream must carry */
    uint64_t max_payload; /* bound on one record's payload */
    bool allow_precopy;   /* PRECOPY records accepted */
    enum vfm_dec_phase phase;
    uint8_t hdr[VFM_STREAM_REC_SIZE];
    size_t have;   /* bytes of hdr received */
    uint16_t type; /* the record being received */
    uint64_t len;
    uint64_t sum;
    uint32_t next_seq;
    uint16_t version; /* the stream header's */
    bool final_seen;  /* FINAL, or FINAL_BEGIN */
    bool parts;       /* FINAL_BEGIN seen: parts_left bytes still due */
    uint64_t parts_left;
    struct vfm_buf payload; /* the current record's payload */
    struct vfm_buf final;   /* the FINAL record's payload, once complete;
                               FINAL_PART payloads are received in place */
    int err;                /* sticky: negative errno once invalid */
    /* the payload's XXH3-64, computed as its bytes arrive (while they are
     * still in the cache), not in one pass over the whole record at its end */
    struct vfm_xxh3_stream *xs;
    /* Called with each PRECOPY record's payload once it is whole and
     * checked; an error (negative errno) becomes the sticky error. NULL:
     * the payload is dropped. */
    int (*on_precopy)(void *ctx, const uint8_t *payload, size_t len);
    void *on_precopy_ctx;
    /* Where a FINAL record's @len payload bytes (or the @len bytes of
     * state a FINAL_BEGIN announced) should be received (memory of at
     * least @len bytes the caller owns), or NULL: the decoder's own buffer.
     * NULL hook: always the decoder's own. */
    void *(*final_buf)(void *ctx, uint64_t len);
    void *final_buf_ctx;
};

void vfm_stream_dec_init(struct vfm_stream_dec *d, uint32_t compat, uint64_t max_payload,
                         bool allow_precopy);
void vfm_stream_dec_release(struct vfm_stream_dec *d);

/*
 * vfm_stream_dec_feed - take the next @len bytes of a stream.
 * Return: 0, or the sticky error: -EINVAL (bad magic, version, checksum,
 *   sequence, type, order, bytes after END, a different compat id) or
 *   -EFBIG (a record longer than max_payload) or -ENOMEM.
 */
int vfm_stream_dec_feed(struct vfm_stream_dec *d, const void *data, size_t len);

/*
 * Zero-copy feeding: vfm_stream_dec_space() says where the next bytes go
 * (*p) and how many may go there at most (0: nothing more is accepted, the
 * stream is complete or invalid); after writing k <= that many bytes there,
 * vfm_stream_dec_commit(k) checks them like vfm_stream_dec_feed() would.
 */
size_t vfm_stream_dec_space(struct vfm_stream_dec *d, uint8_t **p);
int vfm_stream_dec_commit(struct vfm_stream_dec *d, size_t n);

/*
 * vfm_stream_dec_finish - the stream is complete and valid: points at the
 * state (the FINAL record's payload, or the FINAL_PARTs' together; owned
 * by @d or the final_buf hook's memory).
 * Return: 0, or -EINVAL (invalid, or truncated: END not received).
 */
int vfm_stream_dec_finish(struct vfm_stream_dec *d, const uint8_t **payload, size_t *len);

#endif
