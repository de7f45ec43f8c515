/* SPDX-License-Identifier: MIT */
/*
 * The migration stream's codec: the framing a source sends its receiver
 * (include/vfiomig/migrate.h describes it), as pure functions — no I/O,
 * no threads — so that the most hostile input vfiomig takes, a stream from
 * a network peer, is decoded by code a fuzzer drives (fuzz/fuzz_mstream.c)
 * and unit tests walk byte by byte (tests/unit/test_mstream.c).
 *
 *   header   "VFMM", version, size, device count, the migration's id
 *            (64 bytes, NUL-padded printable ASCII; all NULs: none),
 *            XXH3-64 of the above. Many streams (migrate.h): version 4,
 *            96 bytes, with this stream's index and the count of streams
 *            where version 3 has a reserved word, and the migration's
 *            random token before the checksum; every stream opens with
 *            one. Device i's records go on stream i mod N; stream 0 (the
 *            main one) alone has the device list, RAM and the commit.
 *   records  "VFMR", kind, device, sequence number, payload length,
 *            XXH3-64 of the payload, XXH3-64 of the record header; then the
 *            payload. The first record is DEVICES (one u32 per device: its
 *            migration flags, and VFM_MS_STOPPED for a source migrated
 *            stopped); then DATA and DEVICE_END (a device's byte count)
 *            records of any device, interleaved (DATA_SC for DATA whose
 *            payload the device's own stream checks); last STREAM_END.
 *            With guest RAM: RAM_LIST second (each range's iova and
 *            size, u64 each), RAM records (an iova, then whole 4 KiB
 *            pages) anywhere after it, and one RAM_END (the digest of all
 *            the RAM at the source's stop, and flags) before STREAM_END;
 *            these carry device 0.
 *   after    (a two-way stream) the commit, in three messages of the same
 *            form ("VFMA", kind, status, XXH3-64): the receiver's LOADED
 *            (every destination loaded and stopped, or why not), the
 *            sender's COMMIT (from here the sender never rolls back), the
 *            receiver's RUNNING (its destinations started, or why not).
 *            A receiver starts nothing without the COMMIT; a side that
 *            cannot know the outcome keeps its devices stopped.
 *
 * All fields are little-endian (the host's order: x86_64 and aarch64).
 *
 * The decoder is fed as the bytes come: vfm_ms_dec_want() says where the
 * next bytes go and how many are needed (a header into the decoder, a
 * payload into its payload buffer), vfm_ms_dec_commit() takes them and
 * says when a whole event (the header, one record with its payload) has
 * been checked. Nothing is handed out before it is checked: every header,
 * length, sequence number, device index and checksum, the byte counts,
 * and that every device ended before the stream did.
 *
 * Threading: a decoder is used by one thread at a time.
 */
#ifndef VFIOMIG_MSTREAM_H
#define VFIOMIG_MSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VFM_MS_HDR_SIZE 88u
/* The header of each of many streams (version 4). */
#define VFM_MS_HDR_LANE_SIZE 96u
/* The most streams (migrate.h's VFM_MIG_MAX_STREAMS). */
#define VFM_MS_MAX_LANES 16u
/* The migration id's field (migrate.h's VFM_MIG_ID_MAX). */
#define VFM_MS_ID_MAX 64u
#define VFM_MS_REC_SIZE 40u
#define VFM_MS_ACK_SIZE 24u
/* The largest record payload: big enough to amortise the per-record work,
 * small enough to interleave devices. */
#define VFM_MS_MAX_PAYLOAD (1u << 20)
/* The most devices one stream carries (migrate.h's VFM_MIG_MAX_DEVICES). */
#define VFM_MS_MAX_DEVICES 256u
/* In the DEVICES record, beside a source's flags: it was migrated stopped;
 * its destination is loaded and left in STOP. */
#define VFM_MS_STOPPED (1u << 31)

enum vfm_ms_kind {
    VFM_MS_DATA = 1,
    VFM_MS_DEVICE_END = 2,
    VFM_MS_STREAM_END = 3,
    VFM_MS_DEVICES = 4,
    VFM_MS_RAM_LIST = 5,
    VFM_MS_RAM = 6,
    VFM_MS_RAM_END = 7,
    /* switchover-ack: the sender has sent device N's initial pre-copy
     * data (its initial_bytes reached 0); the receiver answers
     * INITIAL_LOADED once it has written all of it. No payload. */
    VFM_MS_INITIAL_END = 8,
    /* DATA whose payload is a vfiomig device state stream (the runtime's
     * format: every record of it checksummed, and checked by the runtime
     * that loads it): its checksum field is 0 and the payload is not
     * hashed here, so a sender and a receiver can move it without
     * touching it (splice). A receiver takes it only for devices whose
     * destination checks it (vfm_ms_dec_allow_self_checked()). */
    VFM_MS_DATA_SC = 9,
};

/* Guest RAM (migrate.h's VFM_MIG_RAM_PAGE, VFM_MIG_MAX_RAM). */
#define VFM_MS_RAM_PAGE 4096u
#define VFM_MS_MAX_RAM 16u
/* The most pages one RAM record carries (its payload: an iova and them). */
#define VFM_MS_RAM_MAX_PAGES ((VFM_MS_MAX_PAYLOAD - 8u) / VFM_MS_RAM_PAGE)
/* RAM_END's flags: the sender tracked no device writes (ram_untracked):
 * a digest that differs is reported, not refused. */
#define VFM_MS_RAM_UNTRACKED 1u
struct vfm_ms_ram_range {
    uint64_t iova;
    uint64_t size;
};
/* A RAM_END record's payload. */
struct vfm_ms_ram_end {
    uint64_t digest;
    uint64_t flags;
};

/* The encoder: fixed-size headers for the caller to send before a payload. */
/* @id: the migration's id (vfm_ms_id_valid()), or NULL for none. */
void vfm_ms_put_header(uint8_t out[VFM_MS_HDR_SIZE], uint32_t ndev, const char *id);
/* The header of stream @lane of @nlanes (2..VFM_MS_MAX_LANES) of one
 * migration, whose token is @token. */
void vfm_ms_put_lane_header(uint8_t out[VFM_MS_HDR_LANE_SIZE], uint32_t ndev, const char *id,
                            uint32_t lane, uint32_t nlanes, uint64_t token);
/* 1..VFM_MS_ID_MAX bytes of printable ASCII, no space. */
bool vfm_ms_id_valid(const char *id);
/* The checksum of a record's payload, for vfm_ms_put_record(): computed
 * apart, so that several senders can hash at once and only take a lock
 * for the sequence number. */
uint64_t vfm_ms_payload_sum(const void *payload, size_t len);
/* A record header for a payload of @len bytes whose checksum is @psum. */
void vfm_ms_put_record(uint8_t out[VFM_MS_REC_SIZE], enum vfm_ms_kind kind, uint32_t device,
                       uint32_t seq, uint64_t psum, uint64_t len);
/* The messages of the commit (see above). */
enum vfm_ms_ans {
    VFM_MS_ANS_LOADED = 1,
    VFM_MS_ANS_COMMIT = 2,
    VFM_MS_ANS_RUNNING = 3,
    VFM_MS_ANS_ABORT = 4, /* the sender's instead of COMMIT: start nothing */
    /* the receiver, during pre-copy (switchover-ack): device @arg's initial
     * data, up to its INITIAL_END record, is written into its destination */
    VFM_MS_ANS_INITIAL_LOADED = 5,
};
void vfm_ms_put_ack(uint8_t out[VFM_MS_ACK_SIZE], enum vfm_ms_ans kind, int32_t status);
/* Return: 0 and *@status, or -EBADMSG (not that message, or damaged). */
int vfm_ms_get_ack(const uint8_t in[VFM_MS_ACK_SIZE], enum vfm_ms_ans kind, int32_t *status);
/* INITIAL_LOADED of device @dev. */
void vfm_ms_put_initial_loaded(uint8_t out[VFM_MS_ACK_SIZE], uint32_t dev);
/* Return: 0 and *@dev (below @ndev), or -EBADMSG. */
int vfm_ms_get_initial_loaded(const uint8_t in[VFM_MS_ACK_SIZE], uint32_t ndev, uint32_t *dev);

/* What a commit completed. */
enum vfm_ms_event_kind {
    VFM_MS_EV_NONE = 0,
    VFM_MS_EV_HEADER,  /* the stream header: ndev, nlanes, lane, token */
    VFM_MS_EV_DEVICES, /* the device list: flags[0..ndev) */
    VFM_MS_EV_DATA, /* a device's state bytes: device, data, len (data NULL: moved by the caller) */
    VFM_MS_EV_DEVICE_END,  /* a device's state is complete: device, total */
    VFM_MS_EV_STREAM_END,  /* the end: every device ended */
    VFM_MS_EV_RAM,         /* guest RAM pages: iova, data, len (whole pages, inside a range) */
    VFM_MS_EV_RAM_END,     /* the RAM is complete: total (the sender's digest), ram_flags */
    VFM_MS_EV_INITIAL_END, /* device's initial pre-copy data all sent: device */
};

struct vfm_ms_event {
    enum vfm_ms_event_kind kind;
    uint32_t ndev;
    uint32_t device;
    const uint32_t *flags; /* DEVICES: valid until the next commit */
    const uint8_t *data;   /* DATA: valid until the next commit */
    size_t len;
    uint64_t total;        /* DEVICE_END; RAM_END: the digest */
    uint64_t iova;         /* RAM */
    uint64_t ram_flags;    /* RAM_END: VFM_MS_RAM_* */
    bool self_checked;     /* DATA: of a DATA_SC record */
    uint32_t nlanes, lane; /* HEADER: the count of streams (1: one), this one's index */
    uint64_t token;        /* HEADER of many streams: the migration's token */
};

struct vfm_xxh3_stream;

struct vfm_ms_dec {
    uint32_t ndev; /* what the receiver expects */
    int phase;     /* decoder-internal */
    uint8_t hdr[VFM_MS_HDR_LANE_SIZE > VFM_MS_REC_SIZE ? VFM_MS_HDR_LANE_SIZE : VFM_MS_REC_SIZE];
    size_t hdr_size; /* the stream header's size, once its first part said */
    size_t have;     /* bytes of the current header or payload */
    uint32_t seq;    /* the next record's */
    uint32_t kind, device;
    uint64_t len, psum;
    uint8_t *payload; /* grown to the largest payload seen, at most VFM_MS_MAX_PAYLOAD */
    size_t payload_cap;
    uint64_t got[VFM_MS_MAX_DEVICES];
    uint8_t ended[VFM_MS_MAX_DEVICES];
    uint32_t flags[VFM_MS_MAX_DEVICES];
    int err;
    char why[224];
    char expect_id[VFM_MS_ID_MAX]; /* vfm_ms_dec_expect_id() */
    bool header_valid;             /* the header is a stream's, of the expected migration */
    uint32_t nram;                 /* vfm_ms_dec_expect_ram() */
    struct vfm_ms_ram_range ram[VFM_MS_MAX_RAM];
    bool ram_ended;
    /* many streams: this stream's index and the count (1/0: one stream);
     * set by the main header, or expected (vfm_ms_dec_expect_lane()) */
    uint32_t nlanes, lane;
    uint64_t token;
    bool is_lane;                      /* one of the other streams: no device list, RAM or commit */
    uint8_t sc_ok[VFM_MS_MAX_DEVICES]; /* vfm_ms_dec_allow_self_checked() */
};

/* Return: 0 or -EINVAL (@ndev 0 or above VFM_MS_MAX_DEVICES). */
int vfm_ms_dec_init(struct vfm_ms_dec *d, uint32_t ndev);
void vfm_ms_dec_release(struct vfm_ms_dec *d);
/* The stream must carry migration id @id (NULL: any): a header with
 * another, or none, fails the decoder with -EACCES (a refusal, not damage).
 * Return: 0, or -EINVAL for an invalid @id. */
int vfm_ms_dec_expect_id(struct vfm_ms_dec *d, const char *id);

/* The decoder reads one of the other streams of a migration whose main
 * header announced @nlanes streams and @token: its header must be version
 * 4 with an index 1..@nlanes-1, the same count, token and id; then records
 * only of its devices (device i on stream i mod @nlanes), numbered from 0,
 * no device list or RAM, and STREAM_END once each of them ended.
 * Return: 0, or -EINVAL (@nlanes not 2..VFM_MS_MAX_LANES). */
int vfm_ms_dec_expect_lane(struct vfm_ms_dec *d, uint32_t nlanes, uint64_t token);

/* Device @dev's destination checks its state stream itself: DATA_SC
 * records of it are taken. Return: 0, or -EINVAL (@dev out of range). */
int vfm_ms_dec_allow_self_checked(struct vfm_ms_dec *d, uint32_t dev);

/* Whether the next bytes are (the rest of) a DATA_SC record's payload,
 * which the caller may move itself (splice) instead of through
 * vfm_ms_dec_want(): *@dev its device, *@left the bytes left. */
bool vfm_ms_dec_passable(const struct vfm_ms_dec *d, uint32_t *dev, size_t *left);
/* @n (at most *@left) bytes of that payload were moved by the caller.
 * Return: 1 and a DATA event (data NULL, len the whole record's) when
 * they complete it; 0 when more are due; -EBADMSG when no such payload
 * was due (or @n too many). */
int vfm_ms_dec_passed(struct vfm_ms_dec *d, size_t n, struct vfm_ms_event *ev);

/* The stream must carry guest RAM of exactly these @n ranges (0: none):
 * its RAM_LIST must list them, each RAM record must lie inside one, and
 * RAM_END must come before STREAM_END. A stream with RAM and a receiver
 * without, or the other way round, is invalid.
 * Return: 0, or -EINVAL (above VFM_MS_MAX_RAM, a range empty, unaligned,
 * wrapping or overlapping another). */
int vfm_ms_dec_expect_ram(struct vfm_ms_dec *d, const struct vfm_ms_ram_range *r, uint32_t n);
/* The same checks for a list of ranges. Return: 0 or -EINVAL. */
int vfm_ms_ram_valid(const struct vfm_ms_ram_range *r, uint32_t n);

/* A decoder not told vfm_ms_dec_expect_lane() takes a version 4 header
 * of any index: the HEADER event says which (ev.lane); for one other than
 * 0 it goes on as that stream's decoder, and the caller must check its
 * count and token against the main header's. */

/*
 * vfm_ms_dec_want - where the next bytes go (*@where) and how many the
 * decoder needs before it can check anything more (the caller may give
 * fewer). Return: that count; 0 once the stream ended or failed.
 */
size_t vfm_ms_dec_want(struct vfm_ms_dec *d, uint8_t **where);

/*
 * vfm_ms_dec_commit - @n bytes (at most what vfm_ms_dec_want() asked for)
 * were written where it said.
 * Return: 1 and *@ev when they completed an event; 0 when more is needed;
 *      -EBADMSG when the stream is invalid (d->why says how, naming the
 *      record and device), and every later call returns it again;
 *      -EACCES when the header names another migration (the same way); -ENOMEM
 *      when a payload's buffer could not be had (also for good).
 */
int vfm_ms_dec_commit(struct vfm_ms_dec *d, size_t n, struct vfm_ms_event *ev);

/*
 * vfm_ms_dec_feed - the decoder fed from bytes the caller already holds
 * (vfm_ms_dec_want() and _commit() with the copying done here): takes
 * bytes of @p, up to @len, and stops after the first event they complete.
 * *@used: how many it took.
 * Return: 1 and *@ev (an event); 0 (all @len taken, no event yet); a
 *      negative errno as vfm_ms_dec_commit() (bytes after the end too).
 */
int vfm_ms_dec_feed(struct vfm_ms_dec *d, const uint8_t *p, size_t len, size_t *used,
                    struct vfm_ms_event *ev);

/*
 * vfm_ms_dec_where - where the decoder is, for a message about a stream
 * that ended or stalled there: "before its header", "after 12 records",
 * "inside record 12 (device 3)". Return: @buf.
 */
const char *vfm_ms_dec_where(const struct vfm_ms_dec *d, char *buf, size_t len);

/* Whether the stream reached STREAM_END, every device ended. */
bool vfm_ms_dec_done(const struct vfm_ms_dec *d);

#endif
