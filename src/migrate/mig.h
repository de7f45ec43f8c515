/* SPDX-License-Identifier: MIT */
/*
 * The migration engine's inside (internal): one side's state, the calls
 * every part of the engine shares, and the ordering of the phases.
 *
 *   engine.c   the two sides and their drivers (send, receive, local), the
 *              devices' starting states, the receive loop
 *   phases.c   the order of a migration: one table of steps that the
 *              sender, the receiver and the rollback all read
 *   precopy.c  pre-copy rounds and the downtime estimate
 *   core.c     failure and notes, the timeline, one device's state change,
 *              the stream's records, the workers (pool.c)
 *   mstream.c  the stream's codec (pure); report.c the report's JSON
 *
 * Threading: a side's calls run on its workers, one per device; m->lock
 * (shared by both sides of vfm_migrate_local) guards the report, and
 * m->wlock this side's stream writes.
 */
#ifndef VFIOMIG_MIGRATE_MIG_H
#define VFIOMIG_MIGRATE_MIG_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vfiomig/migrate.h>

#include "../common/internal.h"
#include "mstream.h"
#include "pool.h"

/* State moves in records of at most this much (the codec's limit). */
#define CHUNK VFM_MS_MAX_PAYLOAD

/* ------------------------------------------------------------------ */

/* One of many streams (migrate.h, "Many streams"), 1..nlanes-1: stream 0
 * is the main one (struct mig's fd, tp, wlock and seq). */
struct mig_lane {
    int fd;
    const struct vfm_mig_transport *tp;
    pthread_mutex_t wlock; /* the sender's writes and sequence numbers */
    uint32_t seq;
    /* the receiver: the stream's decoder and its thread */
    struct vfm_ms_dec dec;
    pthread_t thread;
    bool running;
    struct mig *m;
    int pipe[2]; /* the receiver's splices (-1: none yet) */
};

/* What the threads of one side (or of both, in vfm_migrate_local) share. */
struct mig_shared {
    pthread_mutex_t lock;
    unsigned span_cap;
};
struct mig {
    const struct vfm_mig_config *cfg;
    struct vfm_mig_report *rep;
    pthread_mutex_t *lock; /* shared by both sides: report, spans (never held over I/O) */
    pthread_mutex_t wlock; /* this side's stream writes and sequence numbers */
    int fd;                /* this side's end of the stream (polled) */
    /* what moves its bytes when not the fd itself (cfg->transport) */
    const struct vfm_mig_transport *tp;
    const char *id;             /* cfg->id (version 2), or NULL */
    unsigned header_timeout_ms; /* the receiver's wait for the header */
    unsigned timeout_ms;        /* the longest wait on the other end */
    /* the sender, from the switchover to LOADED: when --max-downtime runs
     * out (mig_now_ns() clock; 0: no bound). A wait on the other end that
     * it cuts short fails with -ETIME. */
    int64_t downtime_deadline_ns;
    uint32_t seq;
    uint64_t total_est;
    uint64_t sent;
    uint32_t flags[VFM_MIG_MAX_DEVICES];
    unsigned *span_cap;           /* shared: the spans array belongs to the report */
    enum vfm_mig_phase phase;     /* for progress */
    bool pc[VFM_MIG_MAX_DEVICES]; /* migrated with pre-copy */
    bool in_stop_copy[VFM_MIG_MAX_DEVICES];
    uint64_t dev_sent[VFM_MIG_MAX_DEVICES]; /* state bytes sent, all phases */
    uint64_t round_bytes;                   /* this pre-copy round's device state bytes */
    uint64_t round_ram_bytes;               /* and guest RAM bytes */
    /* the state this side's device i is in, as far as the engine knows
     * (VFM_STATE_COUNT: unknown, asked with GET before the next request) */
    uint32_t cur[VFM_MIG_MAX_DEVICES];
    bool touched[VFM_MIG_MAX_DEVICES];     /* a request was sent to it */
    bool stopped[VFM_MIG_MAX_DEVICES];     /* a source migrated stopped */
    bool drained[VFM_MIG_MAX_DEVICES];     /* reached its temporary end this round */
    struct vfm_pool *pool;                 /* this side's workers (mig_parallel()) */
    struct mig_ram *ram;                   /* guest RAM (ram.c); NULL: none */
    bool v2[VFM_MIG_MAX_DEVICES];          /* opted in to MIG_PRECOPY_INFOv2 */
    uint64_t initial[VFM_MIG_MAX_DEVICES]; /* initial bytes left, as last told */
    /* switchover-ack (sender): each device's initial-data epoch (bumped by
     * a REINIT) and the epoch whose INITIAL_END went out (0: none); the
     * INITIAL_ENDs sent and the answers counted; a partial answer */
    bool ack_on;
    uint32_t epoch[VFM_MIG_MAX_DEVICES], sent_epoch[VFM_MIG_MAX_DEVICES];
    uint32_t ends_sent[VFM_MIG_MAX_DEVICES], acks[VFM_MIG_MAX_DEVICES];
    uint8_t abuf[VFM_MS_ACK_SIZE];
    size_t ahave;
    /* the receiver's LOADED, read early (a failure it reported during
     * pre-copy): the answer is not awaited again */
    bool early_loaded;
    int32_t early_status;
    /* many streams: how many (1: the main one only), the others
     * (lanes[1..nlanes); NULL with one), the migration's token */
    unsigned nlanes;
    struct mig_lane *lanes;
    uint64_t token;
    /* the receiver: stream k is a socket a payload can be spliced from (1),
     * is not (-1), not looked at yet (0); each entry is its stream's
     * reading thread's only */
    signed char spliceable[VFM_MIG_MAX_STREAMS];
    /* the receiver while it reads the streams: readable once any of its
     * threads failed, so every other wait on a stream ends (-ECANCELED);
     * -1 otherwise */
    int cancel_fd, cancel_wr; /* the pipe's ends */
    /* the receiver: other streams that connected before the main one,
     * their headers read (kept until the main header says how many) */
    struct mig_lane *early;
    unsigned nearly;
    /* device i's state stream is checked where it loads (the source's, on
     * the sender: sent as DATA_SC, unhashed; the destination's, on the
     * receiver: DATA_SC taken for it) */
    bool sc[VFM_MIG_MAX_DEVICES];
    int pipe[2]; /* the receiver's main thread's splices (-1: none yet) */
};

/* ---- core.c ---- */

/* Ends this side's sending (the transport's way, else shutdown(2)). */
void mig_shutdown_write(const struct mig *m);
/* Reads what is there, without waiting: a count, 0 at the end, -EAGAIN. */
ssize_t mig_read_some(const struct mig *m, void *buf, size_t len);

int64_t mig_now_ns(void);
/* Keeps the first failure (the report's error and message). */
void mig_fail(struct mig *m, int err, const char *fmt, ...) VFM_PRINTF(3, 4);
/* Adds a sentence to the report's notes. */
void mig_note(struct mig *m, const char *fmt, ...) VFM_PRINTF(2, 3);
/* Whether either side has failed. */
bool mig_failed(struct mig *m);
/* The timeline: device @dev of @side entered @state now. */
void mig_span(struct mig *m, int side, unsigned dev, uint32_t state);
struct vfm_endpoint *mig_ep(struct mig *m, int side, unsigned i);
const char *mig_side_name(int side);
/* Moves device @i of @side to @state, planned from where the engine knows
 * it is, never with a request the planner refuses. Return: 0 or -errno
 * (reported). */
int mig_set_state(struct mig *m, int side, unsigned i, uint32_t state);
/* fn(m, i) for every device at once, on the side's workers. Return: the
 * first failure in device order, or 0. */
int mig_parallel(struct mig *m, int (*fn)(struct mig *, unsigned));
/* The stream, each wait bounded by the side's timeout. */
int mig_wait_ready(const struct mig *m, short events);
int mig_write_all(const struct mig *m, const void *buf, size_t len);
int mig_read_all(const struct mig *m, void *buf, size_t len);
/* The same on stream @k (0: the main one), with the same bounds. */
int mig_lane_wait(const struct mig *m, unsigned k, short events);
int mig_lane_write_all(const struct mig *m, unsigned k, const void *buf, size_t len);
int mig_lane_read_all(const struct mig *m, unsigned k, void *buf, size_t len);
ssize_t mig_lane_read_some(const struct mig *m, unsigned k, void *buf, size_t len);
void mig_lane_shutdown_write(const struct mig *m, unsigned k);
/* The stream device @dev's records go on. */
unsigned mig_lane_of(const struct mig *m, unsigned dev);
/* One record on stream @k, written whole with respect to the other
 * threads' records there. */
int mig_put_record_on(struct mig *m, unsigned k, enum vfm_ms_kind kind, unsigned dev,
                      const void *data, size_t len);
/* One record, on its device's stream (DATA, DEVICE_END, INITIAL_END) or
 * the main one (the rest). */
int mig_put_record(struct mig *m, enum vfm_ms_kind kind, unsigned dev, const void *data,
                   size_t len);
enum { SENT_END = 0, SENT_TEMP_END = 1, SENT_BUDGET = 2 };
/* Sends what source @i gives as its records (core.c says until when).
 * Return: SENT_*, or a negative errno (reported). */
int mig_send_state(struct mig *m, unsigned i, uint8_t *buf, uint64_t budget, bool precopy);

/* Moves @len bytes from @from (a socket) into @to through @pipe (made
 * when it is -1; the caller closes it), each wait bounded as the stream's.
 * Return: 0, or -errno with *@at_to saying which side failed (-EPIPE from
 * @from: it ended first). */
int mig_splice(const struct mig *m, int from, int to, size_t len, int pipe[2], bool *at_to);
/* Whether @fd can be spliced into or out of (a socket). */
bool mig_spliceable(int fd);

/* ---- precopy.c ---- */

/* Pre-copy rounds, the VM running, until the estimated downtime fits, the
 * round limit, or (no estimate) every device has drained once. */
int mig_precopy(struct mig *m);

/* ---- ram.c ---- */

/* The config's RAM ranges (0 below version 3). */
unsigned mig_nram(const struct vfm_mig_config *cfg);
/* Whether the config's RAM is valid. Return: 0 or -EINVAL. */
int mig_ram_check(const struct vfm_mig_config *cfg);
/* Sender, after the device list: the RAM list, and every source's dirty
 * log started (a source that keeps none is noted). Return: 0 or -errno
 * (reported). */
int mig_ram_begin(struct mig *m);
/* Sender, one pre-copy pass: the first sends every page, the next the
 * pages reported dirty since. *@est: the bytes the downtime would move as
 * of now; *@more: whether another pass can lower it. Return: 0 or -errno
 * (reported). */
int mig_ram_round(struct mig *m, uint64_t *est, bool *more);
/* Sender, every source stopped: the last pages, the logs stopped, the
 * digest in RAM_END. Return: 0 or -errno (reported). */
int mig_ram_end(struct mig *m);
/* Sender: stops every log still started (every path). */
void mig_ram_release(struct mig *m);
/* Either side, at the end: releases and frees. */
void mig_ram_free(struct mig *m);
/* Receiver: the decoder expects this side's RAM. Return: 0 or -errno. */
int mig_ram_expect(struct mig *m, struct vfm_ms_dec *d);
/* Receiver: a RAM or RAM_END event. Return: 0 or -errno (reported). */
int mig_ram_take(struct mig *m, const struct vfm_ms_event *ev);

/* ---- phases.c ---- */

enum mig_step_id {
    MIG_QUIESCE,      /* sources with P2P stop issuing it */
    MIG_STOP_NON_P2P, /* then the sources without P2P stop */
    MIG_SAVE,         /* sources to STOP_COPY, their state sent */
    MIG_FINISH,       /* the VM moved: sources end stopped */
    MIG_RESUME,       /* destinations to RESUMING */
    MIG_LOAD,         /* destinations load (RESUMING -> STOP) */
    MIG_START_P2P,    /* destinations accept P2P before any issues it */
    MIG_START,        /* then they run */
    MIG_BACK_P2P,     /* rollback: sources accept P2P again first */
    MIG_BACK_RUN,     /* then run again (or are reset) */
    MIG_RESET_DST,    /* a failed destination never runs on bad state */
    MIG_STEP_END,
};

/* The plans: the steps each part runs, in order, ended by MIG_STEP_END. */
extern const enum mig_step_id mig_plan_switchover[], mig_plan_load[], mig_plan_start[],
    mig_plan_rollback[], mig_plan_finish[], mig_plan_resume[], mig_plan_discard[];

/* Runs @plan's steps in order, each on every device of its side at once;
 * stops at the first failure unless @all (a rollback runs every step).
 * With @t, each step's time goes to its phase in the report.
 * Return: the first failure, or 0. */
int mig_run_plan(struct mig *m, const enum mig_step_id *plan, bool all, int64_t *t);

#endif
