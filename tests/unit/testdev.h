/* SPDX-License-Identifier: MIT */
/*
 * A device for the runtime's tests: records every callback, fails any
 * chosen one on demand (optionally marking the device broken), and carries
 * a content buffer that save/load move, with its own validity check.
 */
#ifndef VFIOMIG_TESTDEV_H
#define VFIOMIG_TESTDEV_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <vfiomig/device.h>

enum tcb {
    TCB_SAVE,
    TCB_LOAD,
    TCB_RUN_STOP,
    TCB_STOP_RUN,
    TCB_SC_STOP,
    TCB_STOP_RES,
    TCB_RESET,
    TCB_RUN_P2P,
    TCB_P2P_RUN,
    TCB_P2P_STOP,
    TCB_STOP_P2P,
    TCB_DATA_SIZE,
    TCB_PC_START,
    TCB_PC_END,
    TCB_PC_SAVE,
    TCB_PC_INFO,
    TCB_PC_LOAD,
    TCB_SAVE_BEGIN,
    TCB_SAVE_PIECE,
    TCB_COUNT,
};

#define TESTDEV_COMPAT 0x54534554u
#define TESTDEV_CONTENT 4096

struct testdev {
    struct vfm_device *dev;
    uint32_t calls[TCB_COUNT]; /* how many times each ran */
    enum tcb log[64];          /* the order they ran in (last 64) */
    unsigned nlog;
    int fail_cb;       /* which callback fails (-1: none) */
    int fail_cb2;      /* a second one that fails too (-1: none) */
    int fail_after;    /* let it succeed this many times first */
    int fail_err;      /* with this error */
    bool fail_broken;  /* and marks the device broken */
    bool reset_inside; /* the next callback calls vfm_device_reset() */
    int reset_inside_ret;
    unsigned slow_us;  /* each arc callback sleeps this long */
    atomic_int inside; /* callbacks running now (must stay <= 1) */
    atomic_int max_inside;
    uint8_t content[TESTDEV_CONTENT]; /* the device "state" */
    /* pre-copy: the content in TESTDEV_PAGES pages; save_precopy gives
     * pc_chunk_pages of them at a time, initial ones first, then dirty */
    bool tracking;
    uint32_t initial_mask; /* pages not given yet in the first pass */
    uint32_t dirty_mask;   /* pages written since given */
    unsigned pc_chunk_pages;
    uint8_t staging[TESTDEV_CONTENT]; /* destination: pages received */
    uint32_t staged_mask;
    /* load in place: the FINAL record is received here (load_buffer) */
    uint8_t in_place[TESTDEV_CONTENT + 64];
    bool use_in_place;       /* load_buffer answers in_place (else NULL) */
    const void *loaded_from; /* where the last load()'s data was */
    /* save in place: save_buffer answers save_mem with use_save_in_place,
     * saying it has save_mem_len bytes (0: all of it) */
    bool use_save_in_place;
    size_t save_mem_len;
    unsigned save_buffer_calls;
    uint8_t save_mem[TESTDEV_CONTENT + 256];
    /* save in pieces (testdev_new_pieces): with use_pieces, save_begin/save_piece give the
     * content by reference (after pre-copy: the pages not given, listed in
     * save_mem at save_begin), piece_len bytes at most per piece (0: as
     * many as asked); otherwise save_begin says -EOPNOTSUPP (save() is
     * used). piece_bad: a piece of 0 bytes (1) or of more than asked (2).
     * piece_after_end counts pieces asked for once the session ended
     * (STOP_COPY -> STOP's callback or a reset began): must stay 0. */
    bool use_pieces;
    size_t piece_len;
    int piece_bad;
    uint64_t begin_total;    /* what save_begin says, if not 0 */
    unsigned piece_delay_us; /* the next piece sleeps this long (once) */
    bool session_over;
    atomic_int piece_after_end;
    const uint8_t *pieces_src;
    size_t pieces_len;
};

#define TESTDEV_PAGES 16u
#define TESTDEV_PAGE (TESTDEV_CONTENT / TESTDEV_PAGES)

/* A test device with (@p2p) or without P2P ops and with every optional
 * callback; content filled from @seed. */
struct testdev *testdev_new(const char *name, bool p2p, uint32_t seed);
/* The same with another state format id. */
struct testdev *testdev_new_compat(const char *name, bool p2p, uint32_t seed, uint32_t compat);
/* ... and a max_state_size (0: the default). */
struct testdev *testdev_new_max(const char *name, bool p2p, uint32_t seed, uint32_t compat,
                                uint64_t max_state);
/* Every option: P2P ops, pre-copy ops. */
struct testdev *testdev_new_full(const char *name, bool p2p, bool precopy, uint32_t seed,
                                 uint32_t compat, uint64_t max_state);
/* A device that saves in pieces (use_pieces set; clear it to have its
 * save_begin decline). */
struct testdev *testdev_new_pieces(const char *name, bool precopy, uint32_t seed);
/* A device whose load_buffer gives the runtime t->in_place. */
struct testdev *testdev_new_in_place(const char *name, uint32_t seed);
void testdev_free(struct testdev *t);
/* The device writes one byte of its content while running (dirtying the
 * page while pre-copy tracks). */
void testdev_write(struct testdev *t, size_t off, uint8_t v);
void testdev_clear_log(struct testdev *t);

/* The callback the runtime must call first for the arc @from -> @to (a
 * pre-copy state -> STOP_COPY then calls TCB_SAVE). */
enum tcb testdev_arc_cb(uint32_t from, uint32_t to);
/* The callback that undoes the stop of PRE_COPY[_P2P] -> STOP_COPY. */
enum tcb testdev_restart_cb(uint32_t from);

#endif
