/* SPDX-License-Identifier: MIT */
/**
 * @file
 * vfiomig migration — move all the devices of one VM, which DMA to each
 * other, from a set of source endpoints to a set of destination endpoints,
 * with nothing lost.
 *
 * The ordering, and why. A VMM cannot stop every device at the same instant.
 * If it stopped them one by one, a device still running could DMA into a
 * peer that is already stopped and whose state was (or is being) saved: the
 * write lands in the source after its state left, and is lost — or it
 * corrupts the state being saved. RUNNING_P2P exists to prevent that: a
 * device in it starts no new peer-to-peer DMA but still accepts it, and has
 * finished what it had in flight. So the engine:
 *
 *   1. moves every source RUNNING -> RUNNING_P2P, in parallel, and waits
 *      until all have completed: from then on no P2P transaction is started
 *      or in flight anywhere;
 *   2. moves every source to STOP_COPY and reads each device's state
 *      concurrently, framing it into the migration stream;
 *   3. on the destination, moves every device to RESUMING, writes its state,
 *      and moves it to STOP (the device checks and loads it there);
 *   4. moves every destination STOP -> RUNNING_P2P, and only when all have
 *      completed (every device can accept P2P) moves them all to RUNNING
 *      (each may now issue it).
 *
 * A device without the P2P flag has RUNNING_P2P merged away by the planner
 * (its step 1 is RUNNING -> STOP at once); the engine still quiesces the
 * P2P-capable devices first, so they stop issuing before any device stops.
 *
 * Pre-copy. Devices with the PRE_COPY flag (unless no_precopy) first move
 * RUNNING -> PRE_COPY while the VM runs, and the engine reads their state
 * in rounds: each round reads, from every such device at once, until the
 * device says "nothing now" (its temporary end: ENOMSG from a data fd, a
 * short MIG_DATA_READ reply over vfio-user) or, for a device that answers
 * precopy info, until it has read what the device had pending when the
 * round began. The destinations are already in RESUMING and load that data
 * as it arrives. After each round the engine estimates the downtime: the
 * bytes still to move at switchover, as the devices say (MIG_DATA_SIZE, else
 * precopy info), over the throughput measured over all rounds so far. It
 * switches over once the estimate fits downtime_limit_ms (converged), or
 * after max_rounds rounds, or — when some device gives no estimate at all,
 * or no throughput could be measured because nothing was read — after the
 * first round in which every pre-copy device reached its temporary end.
 * Convergence and an expected downtime are reported only when every
 * device's answers support them; the report says which estimate was used.
 * Whatever the estimate, it never switches over while a pre-copy device
 * still has initial bytes (precopy info's initial_bytes above 0: the
 * uAPI's advice). The engine opts every pre-copy source in to
 * VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2, so a device that announces new
 * initial data (VFIO_PRECOPY_INFO_REINIT) is waited for again; one that
 * keeps doing so past max_rounds + VFM_MIG_INITIAL_EXTRA_ROUNDS fails the
 * migration (-ETIME), and the sources run on.
 * The switchover is step 1
 * above with PRE_COPY -> PRE_COPY_P2P for pre-copy devices with P2P (a
 * pre-copy device without P2P goes PRE_COPY -> STOP_COPY with the other
 * non-P2P devices), then step 2 reads only what pre-copy has not sent.
 * Devices without PRE_COPY in the same VM are stop-copied. The downtime is
 * measured from the switchover.
 *
 * Where the devices are. The engine reads every device's state (GET) before
 * its first request, plans every request from the state it knows, and
 * never sends a request the planner refuses (so never STOP_COPY ->
 * PRE_COPY, on which kernels before the 2026 fix loop for ever). A source
 * found in ERROR or RESUMING is refused before anything is sent. A source
 * found elsewhere is first brought to where a migration starts, and the
 * report's notes say so: PRE_COPY[_P2P] and RUNNING_P2P (a session or a
 * quiesce left by another process) go back to RUNNING; STOP_COPY (a save
 * session no one reads) goes to STOP; a stopped source is migrated stopped
 * (no pre-copy), its destination is loaded and left in STOP, and a rollback
 * leaves it stopped. A destination found in
 * ERROR is reset before it is loaded.
 *
 * Failure, before the destinations run: the sources go back to RUNNING with
 * the same ordering (all to RUNNING_P2P first, then all to RUNNING), the
 * destinations are reset and stopped (a reset device is RUNNING: it is
 * stopped again, so none runs), and the error names the device, the state and the
 * cause. A source that cannot be brought back is reset (QEMU's policy:
 * recover state, else reset), and the report says so.
 *
 * The stream (a socket pair, a UNIX or TCP socket; or, one-way, a file or a
 * pipe):
 *   header   "VFMM", version, device count, XXH3-64 of the header (with
 *            many streams: the count of streams, this one's index and the
 *            migration's token too)
 *   records  "VFMR", kind (DEVICES: every source's flags, first; DATA;
 *            DEVICE_END: a device's byte count; STREAM_END), device index,
 *            sequence number, length, XXH3-64 of the payload, XXH3-64 of the
 *            record header; then the payload. A source whose state stream
 *            is self-checked (vfm_ep_self_checked(): the vfiomig runtime's
 *            format, every record of it checksummed and checked where it
 *            loads) sends its state as DATA_SC, whose payload is not hashed
 *            again: the sender splices it from the device's data fd into
 *            the stream and the receiver from the stream into the
 *            destination's, so neither copies nor hashes it; a receiver
 *            takes DATA_SC only for a destination that checks its stream
 *            itself, and still checks every record header, sequence and
 *            byte count
 * and, on a two-way stream, the commit: the receiver loads every
 * destination (RESUMING -> STOP) and answers LOADED; the sender answers
 * COMMIT; only then does the receiver start its destinations, and it
 * answers RUNNING. Before the COMMIT is sent the sender may roll back;
 * after it, only on the receiver's word that none of its destinations runs
 * (RUNNING with an error: it reset and stopped them). A side that misses the message it
 * waits for cannot know the outcome: it leaves its devices stopped with
 * their state (report.outcome_unknown, and a message saying so), so at most
 * one side ever runs the devices. A truncated, reordered or corrupted
 * stream is detected by the receiver, which then never lets a destination
 * run.
 *
 * Guest RAM (cfg->ram, version 3). A VM's memory moves with its devices,
 * and its devices write into it by DMA, so the pages they write must be
 * sent again. The sender asks every source for a DMA dirty log of the RAM
 * ranges (VFIO_DEVICE_FEATURE_DMA_LOGGING_START, 4 KiB pages) before any
 * request, sends every page while the VM runs, and then, in each pre-copy
 * round, the pages the devices report dirty since (DMA_LOGGING_REPORT,
 * which clears what it returns). Pre-copy rounds run for the RAM even when
 * no device has PRE_COPY; the pages a round found dirty count in the
 * downtime estimate as bytes still to move. Once every source is stopped
 * (no device DMAs in STOP or STOP_COPY), a last report's pages go in the
 * downtime, then an XXH3-64 digest of the whole RAM; the logs are stopped
 * on every path (success, failure, rollback). A source that keeps no
 * usable log (its START or a REPORT fails: ENOTTY; mtty's EOPNOTSUPP)
 * makes every page dirty at every sync, so the whole RAM moves in the
 * downtime, and the notes say
 * so. The receiver writes each page into its own RAM, only inside its
 * ranges (which must be the sender's), and compares the digest of its RAM
 * with the sender's before it loads any device: a difference fails the
 * migration, and no destination runs. With ram_untracked (a demonstration,
 * as `vfiomig demo --no-dirty-log`): no log is asked for, every page is
 * sent once while the VM runs and never again, as a VMM that tracks only
 * its CPUs' writes would; the receiver then reports a difference
 * (report.ram_match false) instead of failing.
 *
 * Many streams (cfg->nstreams, version 4). One stream is one connection,
 * one receiving thread and one sequence of records; with several devices
 * the sender reads them in parallel but everything funnels through that
 * connection, and the receiver writes each destination in turn. With N
 * streams (2..VFM_MIG_MAX_STREAMS connections between the same two sides,
 * as QEMU's multifd channels), device i's records (its DATA, DEVICE_END
 * and INITIAL_END) go on stream i mod N, and the receiver reads each stream
 * on its own thread and writes its devices' state from there, so the
 * devices load in parallel. Stream 0 is the main stream: it alone carries
 * the device list, guest RAM, STREAM_END and the commit's messages, in both
 * directions; streams 1..N-1 only carry device records one way. Each
 * stream opens with its own header (the main one's count of streams, this
 * stream's index, the migration's id, and a random token that the main
 * header announces, so a stream of another migration is refused), numbers
 * its records from 0, and ends with its own STREAM_END once every device
 * it carries has ended; each device's records arrive in order on their
 * stream, and its DEVICE_END still says how many bytes it had. Nothing is
 * loaded (RESUMING -> STOP) before every stream has ended and every check
 * held, so a stream that is truncated, corrupted, reordered, of another
 * migration or missing fails the whole migration, as one stream's would.
 * The receiver learns N from the main header and takes the other
 * connections through cfg->accept_stream.
 *
 * Threading: one migration runs on the calling thread plus one worker thread
 * per device (and, on the receiver, one per extra stream); endpoints must be
 * usable from any thread (they are).
 */
#ifndef VFIOMIG_MIGRATE_H
#define VFIOMIG_MIGRATE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <vfiomig/endpoint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VFM_MIG_MAX_DEVICES 256u
/* The most streams (connections) one migration uses (cfg->nstreams). */
#define VFM_MIG_MAX_STREAMS 16u

/* Phases, for progress and the report. */
enum vfm_mig_phase {
    VFM_PHASE_QUIESCE = 0, /* sources -> RUNNING_P2P */
    VFM_PHASE_SAVE,        /* sources -> STOP_COPY, state read and sent */
    VFM_PHASE_LOAD,        /* destinations RESUMING, written, -> STOP */
    VFM_PHASE_START_P2P,   /* destinations -> RUNNING_P2P */
    VFM_PHASE_START,       /* destinations -> RUNNING */
    VFM_PHASE_ROLLBACK,    /* after a failure */
    VFM_PHASE_PRECOPY,     /* pre-copy rounds, the VM running (not downtime) */
    VFM_PHASE_COUNT,
};

/* Defaults: QEMU's downtime limit, and a bound on rounds for workloads
 * that dirty faster than the stream moves. */
#define VFM_MIG_DEFAULT_DOWNTIME_MS 300u
#define VFM_MIG_DEFAULT_MAX_ROUNDS 30u
/* Rounds past max_rounds that pre-copy goes on for while a device still
 * has initial data (VFIO_PRECOPY_INFO_REINIT again and again); then the
 * migration fails (-ETIME) and the sources run on. */
#define VFM_MIG_INITIAL_EXTRA_ROUNDS 64u
/* The default for timeout_ms: longer than any single wait of a healthy
 * migration here (the receiver's answer comes after every destination has
 * loaded and started). */
#define VFM_MIG_DEFAULT_TIMEOUT_MS 30000u

/**
 * vfm_mig_phase_name - a phase's name ("quiesce", ...), as the report and
 * the progress callback show it.
 */
VFM_EXPORT const char *vfm_mig_phase_name(enum vfm_mig_phase p);

/* How the engine knew what was left to move at switchover, for the pre-copy
 * report: from every device's MIG_DATA_SIZE (the stop-copy length);
 * from precopy info for at least one device (what pre-copy still has, which
 * leaves out what a device adds only when it stops); or from nothing for
 * at least one device (libvfio-user's answer neither): then no expected
 * downtime or convergence is reported. */
enum vfm_mig_estimate {
    VFM_MIG_EST_NONE = 0,
    VFM_MIG_EST_PRECOPY_INFO,
    VFM_MIG_EST_DATA_SIZE,
};

/**
 * vfm_mig_estimate_name - "MIG_DATA_SIZE", "precopy info" or "none".
 */
VFM_EXPORT const char *vfm_mig_estimate_name(enum vfm_mig_estimate e);

/* One state span of one device, for the timeline. */
struct vfm_mig_span {
    uint16_t side; /* 0 source, 1 destination */
    uint16_t device;
    uint32_t state; /* the state entered */
    int64_t t_ns;   /* when (CLOCK_MONOTONIC) */
};

/* What a report says of one device of its side. */
struct vfm_mig_dev_report {
    uint64_t bytes;         /* state bytes moved (pre-copy included) */
    int64_t save_ns;        /* source: its save, STOP_COPY to the end */
    uint32_t initial_state; /* the state it was found in before its first request */
};

struct vfm_mig_report {
    int error;              /* 0, or the first failure's negative errno */
    char message[512];      /* the first failure: device, state, cause */
    bool remote_failure;    /* sender: the first failure was the receiver's */
    bool rolled_back;       /* sources the engine had moved were brought back */
    unsigned sources_reset; /* sources that had to be reset */
    unsigned sources_lost;  /* sources that answered neither: left as they are */
    /* the commit (a two-way stream): the sender sent it, the receiver got
     * it (only then does it start its destinations). After it the sources
     * come back only on the receiver's word that none of its destinations
     * runs */
    bool committed;
    /* this side cannot know how the migration ended (a message of the
     * commit was lost): its devices are left stopped with their state,
     * and the message says so */
    bool outcome_unknown;
    /* the receiver refused the stream at its header (missing, damaged,
     * late, or another migration's id) before touching any destination:
     * they are as they were, and a listener may wait for another sender */
    bool refused;
    int64_t t_start_ns;       /* first source leaves RUNNING */
    int64_t t_end_ns;         /* last destination enters RUNNING */
    int64_t t_switch_ns;      /* switchover: the first source stops running */
    int64_t downtime_ns;      /* t_end - t_switch (0 on failure) */
    unsigned precopy_devices; /* devices migrated with pre-copy */
    unsigned precopy_rounds;
    bool precopy_converged; /* the estimate fit the limit (else: round limit) */
    uint64_t precopy_bytes; /* state bytes sent while the VM ran */
    /* the last round's estimate of the downtime; -1 when the devices'
     * answers do not support one (see precopy_estimate) */
    int64_t expected_downtime_ns;
    enum vfm_mig_estimate precopy_estimate; /* what the bytes left were known from */
    bool precopy_drained; /* every pre-copy device reached its temporary end in the last round */
    /* new initial data announced by sources during pre-copy
     * (VFIO_PRECOPY_INFO_REINIT, after the MIG_PRECOPY_INFOv2 opt-in); the
     * switchover waits until every device's initial bytes are 0 */
    unsigned precopy_reinits;
    /* switchover-ack: the answers the sender got (one per device and
     * initial data sent), and how long it waited for them once it would
     * otherwise have switched over */
    unsigned switchover_acks;
    int64_t switchover_ack_wait_ns;
    int64_t phase_ns[VFM_PHASE_COUNT];
    uint64_t bytes;        /* device state bytes moved */
    uint64_t stream_bytes; /* bytes on the stream, framing included */
    unsigned ndev;
    /* per device, ndev of them: vfm_mig_report_device() */
    struct vfm_mig_dev_report *devices;
    /* what the engine did beyond the plan (sources that were not RUNNING,
     * destinations reset first), one sentence each; "" when nothing */
    char notes[1024];
    struct vfm_mig_span *spans; /* malloc'd; vfm_mig_report_free() */
    unsigned nspans;
    /* guest RAM (cfg->ram; see "Guest RAM" above) */
    unsigned ram_logged;         /* sender: sources whose dirty log was used to the end */
    uint64_t ram_bytes;          /* page bytes sent (sender) or written (receiver) */
    uint64_t ram_precopy_bytes;  /* of them, while the VM ran */
    uint64_t ram_precopy_pages;  /* pages sent while the VM ran (the first pass included) */
    uint64_t ram_downtime_pages; /* pages sent after the switchover */
    /* XXH3-64 of all the RAM: the sender's once every source stopped, the
     * receiver's once every page arrived */
    uint64_t ram_digest;
    /* receiver, and vfm_migrate_local's report: the receiver's RAM digest
     * equals the sender's */
    bool ram_match;
    /* the streams the migration used (1, or cfg->nstreams: "Many streams"),
     * and the bytes each carried, framing included (streams[0]: the main
     * one); 0 before the header was read */
    unsigned nstreams;
    uint64_t stream_bytes_by[VFM_MIG_MAX_STREAMS];
    /* device state bytes this side moved between a device's data fd and
     * the stream by splice (never in this process's memory), of a source
     * or destination whose stream is self-checked (vfm_ep_self_checked()) */
    uint64_t spliced_bytes;
};

/**
 * vfm_mig_report_free - frees what a report holds (its devices and spans),
 * not the report itself. A zeroed report may be freed.
 */
VFM_EXPORT void vfm_mig_report_free(struct vfm_mig_report *r);

/**
 * vfm_mig_report_device - what @r says of device @i of its side.
 * Return: the device's entry (valid until vfm_mig_report_free()), or NULL
 *      when @i is not below r->ndev or the migration ended before it knew
 *      its devices.
 */
VFM_EXPORT const struct vfm_mig_dev_report *vfm_mig_report_device(const struct vfm_mig_report *r,
                                                                  unsigned i);

/* Progress: called from the engine's threads, serialised. */
typedef void (*vfm_mig_progress_fn)(void *ctx, enum vfm_mig_phase phase, uint64_t bytes,
                                    uint64_t total_estimate);

/**
 * struct vfm_mig_transport - how the stream's bytes move when they are not
 * a plain fd's (a TLS session over the fd: include/vfiomig/tls.h). The
 * engine still polls the fd it is given for readiness; the transport moves
 * the bytes. Called from the engine's threads, one call at a time (a write
 * that returned -EAGAIN is called again with the same bytes).
 * @read: up to @len bytes without waiting: the count, 0 at the stream's
 *      end, -EAGAIN when the fd must be polled first, or -errno
 * @write: as @read, the other way; after -EAGAIN the engine polls the fd
 *      for POLLOUT and offers the same bytes again, so a transport may
 *      take bytes, report -EAGAIN while it cannot pass them all on, and
 *      report them taken at that next call (the TLS transport's batches)
 * @pending: bytes already read from the fd and held, which a poll of the
 *      fd does not show (NULL: never any)
 * @shutdown_write: ends this side's sending, without waiting (NULL: a
 *      shutdown(2) of the fd)
 * @ctx: passed to each
 */
struct vfm_mig_transport {
    ssize_t (*read)(void *ctx, void *buf, size_t len);
    ssize_t (*write)(void *ctx, const void *buf, size_t len);
    size_t (*pending)(void *ctx);
    void (*shutdown_write)(void *ctx);
    void *ctx;
};

/* The longest migration id (vfm_mig_config.id), in bytes. */
#define VFM_MIG_ID_MAX 64u

/* Guest RAM moves in pages of this size. */
#define VFM_MIG_RAM_PAGE 4096u
/* The most RAM ranges one migration carries. */
#define VFM_MIG_MAX_RAM 16u

/**
 * struct vfm_mig_ram - one range of guest RAM that moves with the devices
 * (vfm_mig_config.ram).
 * @base: where this process maps it: the sender reads it, the receiver
 *      writes it (both sides map their own VM's RAM, shared with its device
 *      processes, as QEMU's memory-backend-memfd is)
 * @iova: where the devices see it (the bus address the VMM DMA-maps it at
 *      for them, and asks their dirty logs about); VFM_MIG_RAM_PAGE aligned
 * @size: bytes, a non-zero multiple of VFM_MIG_RAM_PAGE
 */
struct vfm_mig_ram {
    void *base;
    uint64_t iova;
    uint64_t size;
};

/**
 * struct vfm_mig_stream - one more connection of a migration ("Many
 * streams"), as the caller made it.
 * @fd: a connected stream socket (UNIX or TCP) to the same peer as the
 *      main stream's; polled by the engine, never closed by it
 * @transport: how its bytes move when not by @fd itself (a TLS session),
 *      as vfm_mig_config.transport; NULL: @fd itself
 */
struct vfm_mig_stream {
    int fd;
    const struct vfm_mig_transport *transport;
};

/* The layout of struct vfm_mig_config this header describes. */
#define VFM_MIG_CONFIG_VERSION 4u

struct vfm_mig_config {
    /* VFM_MIG_CONFIG_VERSION: the members a caller built against know of
     * (0 is taken as 1); members are only ever added at the end */
    uint32_t version;
    struct vfm_endpoint **src; /* source i is device i */
    struct vfm_endpoint **dst; /* destination i receives device i */
    unsigned ndev;
    /* A one-way stream (a file, a pipe): the sender does not wait for an
     * answer — its sources end stopped, their state saved — and the
     * receiver sends none. */
    bool one_way;
    vfm_mig_progress_fn progress;
    void *progress_ctx;
    /* Pre-copy: off for every device; the downtime to aim for (0: the
     * default); the most rounds (0: the default). */
    bool no_precopy;
    uint32_t downtime_limit_ms;
    unsigned max_rounds;
    /* The longest either side waits on the other end of the stream at any
     * one time — a receiver that stops reading, a sender that stops
     * sending, an answer that does not come (0: the default). When it
     * passes, the side fails as for any other failure (the sender rolls
     * back). Waits on devices are their endpoints' (e.g.
     * vfm_vu_client_set_timeout()). */
    unsigned timeout_ms;
    /* The longest downtime the sender accepts (0: no bound): when the
     * destinations have not all loaded within it from the switchover (their
     * LOADED is awaited no longer, and no wait on the stream in the downtime
     * outlasts it: a receiver that stops reading ends the save there), the
     * sender does not commit (it aborts: the receiver starts nothing and
     * resets its destinations) and its sources resume. A source device's own
     * calls are bounded by its endpoint's timeout. Past the commit a longer
     * downtime is only reported. */
    unsigned max_downtime_ms;
    /* ---- version 2 ---- */
    /* The stream's bytes go through this instead of read(2)/write(2) of
     * the fd (NULL: the fd itself). Not used by vfm_migrate_local(). */
    const struct vfm_mig_transport *transport;
    /* The migration's id (1..VFM_MIG_ID_MAX printable ASCII bytes, no
     * space): the sender writes it into the stream's header; a receiver
     * given one refuses a stream that carries another (or none) before it
     * touches any destination — a stream recorded from another migration
     * cannot be played into this one. NULL: the sender writes none, the
     * receiver takes any. */
    const char *id;
    /* The receiver: how long the stream's header may take to arrive (0:
     * timeout_ms). A peer that connects and stays silent is dropped at
     * this deadline, with no destination touched (report.refused). */
    unsigned header_timeout_ms;
    /* ---- version 3 ---- */
    /* Guest RAM (see "Guest RAM" above): nram ranges (at most
     * VFM_MIG_MAX_RAM, not overlapping, by iova), the same iovas and sizes
     * on both sides. NULL/0: none. */
    const struct vfm_mig_ram *ram;
    unsigned nram;
    /* vfm_migrate_local() only, where one config serves both sides: the
     * destination's RAM, the same iovas and sizes as ram at other bases
     * (ram is then the source's). Required with ram there. */
    const struct vfm_mig_ram *dst_ram;
    /* The sender asks for no dirty log and sends the RAM once (a
     * demonstration of what is lost without device dirty tracking). */
    bool ram_untracked;
    /* Switchover-ack (QEMU's capability of that name), the sender on a
     * two-way stream: after each pre-copy device's initial data has gone
     * (its initial_bytes reached 0) the sender says so in the stream, and
     * the receiver answers once it has written all of it into the
     * destination; the sender does not switch over before every such
     * answer, and asks again after a device announces new initial data
     * (REINIT). An answer that does not come within timeout_ms of the
     * moment the sender would have switched over fails the migration
     * (-ETIMEDOUT) and the sources run on. Ignored on a one-way stream.
     * The receiver always answers. */
    bool switchover_ack;
    /* ---- version 4 ---- */
    /* Many streams (see above), the sender: nstreams in all (0 or 1: the
     * main stream only; at most VFM_MIG_MAX_STREAMS); streams[0..nstreams-2]
     * are the other connections, in order (streams 1..N-1). Not on a
     * one-way stream. vfm_migrate_local() makes its own (streams is
     * ignored there). */
    unsigned nstreams;
    const struct vfm_mig_stream *streams;
    /* The sender, instead of streams: called for streams 1..nstreams-1 in
     * order (on the calling thread, once the device list is on the main
     * stream, when the receiver starts taking the others): fills *out for
     * stream @k and returns 0, or a negative errno (the migration then
     * fails and rolls back). The caller keeps what it gave. For
     * connections whose making needs the receiver's part while it runs (a
     * TLS handshake). */
    int (*connect_stream)(void *ctx, unsigned k, unsigned timeout_ms, struct vfm_mig_stream *out);
    void *connect_ctx;
    /* The receiver: when the main stream announces N > 1 streams, called
     * N-1 times (on the calling thread, after the device list arrived) for
     * the other connections, in any order: fills *out and returns 0, or a
     * negative errno (-ETIMEDOUT once @timeout_ms passed without one). The
     * caller keeps what it gave (it closes it after the migration). A
     * stream's header must then arrive within header_timeout_ms. NULL: a
     * sender that uses more than one stream is refused. */
    int (*accept_stream)(void *ctx, unsigned timeout_ms, struct vfm_mig_stream *out);
    void *accept_ctx;
};

/**
 * vfm_migrate_local - migrate cfg->src to cfg->dst within this process: the
 * state travels through a socket pair (one per stream, cfg->nstreams)
 * between a sending and a receiving thread, framed and checksummed exactly
 * as between two hosts.
 * Return: 0 when every destination runs; else a negative errno, with the
 *      sources rolled back (see above) and @report saying what happened.
 */
VFM_EXPORT int vfm_migrate_local(const struct vfm_mig_config *cfg, struct vfm_mig_report *report);

/**
 * vfm_migrate_send - the sending half (with vfm_migrate_receive()), over a two-way
 * byte stream @fd (a connected UNIX or TCP socket): the sending side uses
 * cfg->src, the receiving side cfg->dst; each side's report covers what it
 * saw (the sender's downtime ends when the receiver's answer arrives, which
 * is sent once every destination runs). The sender rolls its sources back
 * when the receiver reports a failure or goes away; the receiver resets its
 * destinations on any failure.
 */
VFM_EXPORT int vfm_migrate_send(const struct vfm_mig_config *cfg, int fd,
                                struct vfm_mig_report *report);
/**
 * vfm_migrate_receive - the receiving half of vfm_migrate_send() (see
 * there), into cfg->dst.
 */
VFM_EXPORT int vfm_migrate_receive(const struct vfm_mig_config *cfg, int fd,
                                   struct vfm_mig_report *report);

/**
 * vfm_mig_report_json - @report as one JSON object, for tools: ok, side,
 * devices, downtime_ms, bytes, stream_bytes, streams, stream_bytes_by [per
 * stream], spliced_bytes, rolled_back, sources_reset,
 * sources_lost, precopy {devices, rounds, converged, bytes,
 * expected_downtime_ms (-1: none), estimate, drained, reinits, switchover_acks,
 * switchover_ack_wait_ms}, ram {logged_sources, bytes, precopy_bytes,
 * precopy_pages, downtime_pages, digest, match}, phases_ms {by phase
 * name}, device_bytes, device_save_ms, device_initial_state, notes, error.
 * @side: who saw it ("migrate", "receive"); @result: the migration's return
 * value (0: ok; else error holds the report's message).
 * Return: a malloc'd NUL-terminated string (the caller frees it), or NULL
 * when out of memory.
 */
VFM_EXPORT char *vfm_mig_report_json(const struct vfm_mig_report *report, const char *side,
                                     int result);

/**
 * vfm_mig_trace_write - a Chrome trace-event JSON timeline of @report (one
 * row per device and side, one span per state) that Perfetto opens.
 * Return: 0 or -errno.
 */
VFM_EXPORT int vfm_mig_trace_write(const struct vfm_mig_report *report, const char *path);

#ifdef __cplusplus
}
#endif
#endif /* VFIOMIG_MIGRATE_H */
