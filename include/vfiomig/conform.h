/* SPDX-License-Identifier: MIT */
/**
 * @file
 * vfiomig conformance — the rules of the VFIO migration uAPI (Linux
 * include/uapi/linux/vfio.h, "v2") that can be observed from userspace,
 * checked against any endpoint (vfiomig/endpoint.h): a vfio-user server, a
 * kernel VFIO device, a device runtime in this process.
 *
 * The rules (each check names one):
 *   flags          the advertised flags are a valid combination (STOP_COPY
 *                  set; no bit the uAPI does not define)
 *   arc            every (cur, new) pair the flags allow reaches new, and
 *                  GET agrees
 *   refusal        every request the rules forbid (a state the flags lack,
 *                  ERROR, a number past the last state, STOP_COPY ->
 *                  PRE_COPY[_P2P]) fails with EINVAL and leaves the state
 *                  unchanged; STOP_COPY -> PRE_COPY[_P2P] is sent to a
 *                  kernel device only when the caller asks for it
 *                  (kernels before the 2026 fix loop for ever on it)
 *   data-fd        a data session is opened exactly by the arcs that open
 *                  one (STOP -> STOP_COPY, RUNNING -> PRE_COPY, RUNNING_P2P
 *                  -> PRE_COPY_P2P, STOP -> RESUMING): where the transport
 *                  returns a data_fd (kernel), the SET returns one exactly
 *                  then; elsewhere (vfio-user) a session is there exactly in
 *                  the saving states and RESUMING
 *   enodev         a session's data calls fail with ENODEV once it ended
 *   stop-copy-end  STOP_COPY reads to a clean end (0), and stays there
 *   precopy-info   pre-copy info works in PRE_COPY[_P2P] and fails with
 *                  EINVAL outside (checked in STOP_COPY on the same session)
 *   precopy-enomsg a pre-copy read at the temporary end fails with ENOMSG,
 *                  never 0; the session goes on into STOP_COPY (no new fd)
 *   round-trip     a saved state (stop-copy, and pre-copy + stop-copy)
 *                  loads: RESUMING -> STOP succeeds
 *   truncated      a truncated state is refused: RESUMING -> STOP fails
 *   corrupted      a state with a byte changed (its first; one in its
 *                  middle) is refused: RESUMING -> STOP fails, whatever
 *                  the writes answered (a write refused whose bytes are
 *                  then loaded anyway is no refusal)
 *   extended       a state with a byte past its end is refused
 *   pieces         a state written in small pieces loads as one write does
 *   restore        a loaded state, saved again while the device is stopped,
 *                  gives the bytes that were loaded (devices whose state is
 *                  a function of what they loaded)
 *   data-size      MIG_DATA_SIZE, asked in STOP, equals the bytes STOP_COPY
 *                  then gives
 *   precopy-info   (also) the bytes pre-copy gives up to its temporary end
 *                  cover initial_bytes as first answered, and initial_bytes
 *                  is 0 there
 *   feature        VFIO_DEVICE_FEATURE's own checks: GET with SET (without
 *                  PROBE), an argsz with no room for the data, SET on a
 *                  GET-only feature and an undefined flag bit are EINVAL;
 *                  an unknown feature is ENOTTY (the kernel's answer since
 *                  its 2025 fix); PROBE answers what is supported
 *   dma-log        DMA dirty logging: a device without it says ENOTTY to
 *                  START, STOP and REPORT; one with it gives back a page
 *                  size it keeps (a power of two), refuses a second START,
 *                  reports a page no one can write (an IOVA never mapped)
 *                  clean, refuses a REPORT below 4 KiB, a REPORT after
 *                  STOP, a START with a range not aligned to its page size
 *                  and one with overlapping ranges (a device whose REPORT
 *                  says EOPNOTSUPP keeps no log: the rest is skipped)
 *   precopy-v2     VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2 and
 *                  VFIO_PRECOPY_INFO_REINIT: before the opt-in, precopy
 *                  info's flags carry nothing (0; also after the device
 *                  re-initialised, when the caller gave a way to make it:
 *                  reinit_len); a device without PRE_COPY refuses the
 *                  opt-in (EINVAL; ENOTTY from a kernel without the
 *                  feature); with PRE_COPY the opt-in succeeds or is
 *                  reported unsupported (ENOTTY: the rest is skipped), a
 *                  GET of it is refused (EINVAL); after it, a fresh session
 *                  reports no REINIT, and — with reinit_len — a
 *                  re-initialisation is reported once (REINIT, with new
 *                  initial_bytes above 0) and its initial_bytes then fall
 *                  to 0 as the data is read
 *   reopen         a device closed and opened again (the kernel's device
 *                  fd) is RUNNING, whatever state it was closed in, as the
 *                  in-tree variant drivers set it in open_device
 *   reset          VFIO_DEVICE_RESET returns the device to RUNNING from
 *                  every state (ERROR included, when a request reached it);
 *                  the suite reaches every state along the planner's
 *                  paths, so a device whose reset misbehaves fails this
 *                  rule alone
 *
 * Every check reports ok / not ok / skip with what was expected and what
 * was seen. The device is left RUNNING at the end.
 *
 * Threading: one run uses its endpoint alone.
 */
#ifndef VFIOMIG_CONFORM_H
#define VFIOMIG_CONFORM_H

#include <stdbool.h>
#include <stdint.h>

#include <vfiomig/endpoint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum vfm_conform_verdict {
    VFM_CONFORM_PASS,
    VFM_CONFORM_FAIL,
    VFM_CONFORM_SKIP,
};

struct vfm_conform_check {
    unsigned number;  /* 1, 2, ... in the order run */
    const char *rule; /* one of the rule names above */
    char what[160];   /* what was checked */
    enum vfm_conform_verdict verdict;
    char expected[160]; /* FAIL: what the rule asks; SKIP: why skipped */
    char seen[160];     /* FAIL: what the device did */
};

/* Called once per check, in order, from the caller's thread. */
typedef void (*vfm_conform_report_fn)(void *ctx, const struct vfm_conform_check *check);

struct vfm_conform_config {
    struct vfm_endpoint *ep;
    /* A kernel device: never send STOP_COPY -> PRE_COPY[_P2P]... */
    bool kernel;
    /* ...unless this is set (the kernel is known to refuse it: Debian's
     * 6.12 from 6.12.96 on). */
    bool kernel_stop_copy_to_pre_copy;
    /* The most state bytes read from one session (0: 1 GiB). */
    uint64_t data_limit;
    vfm_conform_report_fn report;
    void *ctx;
    /* How to make the device announce new initial data during pre-copy
     * (precopy-v2's REINIT checks): a write of @reinit_len bytes (1, 2, 4
     * or 8) of @reinit_value at @reinit_offset of region @reinit_region
     * (vfiomig's large device: region 0, LG_REG_RECONFIGURE). 0: none
     * known; those checks are skipped. */
    uint32_t reinit_region;
    uint32_t reinit_len;
    uint64_t reinit_offset;
    uint64_t reinit_value;
};

struct vfm_conform_summary {
    unsigned checks, passed, failed, skipped;
    uint32_t flags; /* the device's, as read */
};

/**
 * vfm_conform_run - run every check.
 * Return: 0 when no check failed; 1 when one did; a negative errno when
 *      the device could not be examined at all (its flags unreadable).
 */
VFM_EXPORT int vfm_conform_run(const struct vfm_conform_config *cfg,
                               struct vfm_conform_summary *sum);

#ifdef __cplusplus
}
#endif
#endif /* VFIOMIG_CONFORM_H */
