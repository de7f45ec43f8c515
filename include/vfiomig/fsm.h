/* SPDX-License-Identifier: MIT */
/**
 * @file
 * vfiomig planner — which single arc to take next, and the whole path, for a
 * requested change of migration state, for any set of capability flags.
 *
 * The behaviour is exactly that of vfio_mig_get_next_state() in the Linux
 * kernel (drivers/vfio/vfio_main.c), with one deliberate difference: a
 * request for STOP_COPY -> PRE_COPY or STOP_COPY -> PRE_COPY_P2P is refused
 * with -EINVAL, where kernels before the 2026 fix ("vfio: prevent infinite
 * loop in vfio_mig_get_next_state() on blocked arc") loop forever.
 *
 * Rules (from include/uapi/linux/vfio.h):
 *  - flags must contain VFM_MIGRATION_STOP_COPY; any other combination of the
 *    three defined bits is valid; a set bit above them is refused. With
 *    invalid flags every request is refused.
 *  - RUNNING and ERROR always exist; STOP_COPY gives STOP, STOP_COPY and
 *    RESUMING; P2P gives RUNNING_P2P; PRE_COPY gives PRE_COPY; PRE_COPY and
 *    P2P together give PRE_COPY_P2P. A request naming a state the flags do
 *    not give, from or to, is refused.
 *  - ERROR can never be requested, and nothing leaves ERROR but a reset
 *    (which returns the device to RUNNING); the planner refuses both.
 *  - A state number >= VFM_STATE_COUNT is refused.
 *  - A request for the current state is an empty path (nothing to do).
 *  - Arcs touching a state the device does not support are skipped: a device
 *    without P2P sees RUNNING -> STOP where a P2P device sees
 *    RUNNING -> RUNNING_P2P -> STOP. This is how RUNNING_P2P is "merged into
 *    RUNNING" for such a device.
 *
 * The arcs a device implements, by capability (the planner composes every
 * other request from these):
 *
 *   always (VFM_MIGRATION_STOP_COPY):
 *       RESUMING -> STOP            STOP -> RESUMING
 *       STOP -> STOP_COPY           STOP_COPY -> STOP
 *   without P2P:
 *       RUNNING -> STOP             STOP -> RUNNING
 *   with P2P:
 *       RUNNING -> RUNNING_P2P      RUNNING_P2P -> RUNNING
 *       RUNNING_P2P -> STOP         STOP -> RUNNING_P2P
 *   with PRE_COPY (without P2P):
 *       RUNNING -> PRE_COPY         PRE_COPY -> RUNNING
 *       PRE_COPY -> STOP_COPY
 *   with PRE_COPY and P2P (in addition to the P2P arcs):
 *       RUNNING -> PRE_COPY         PRE_COPY -> RUNNING
 *       RUNNING_P2P -> PRE_COPY_P2P PRE_COPY_P2P -> RUNNING_P2P
 *       PRE_COPY -> PRE_COPY_P2P    PRE_COPY_P2P -> PRE_COPY
 *       PRE_COPY_P2P -> STOP_COPY
 *
 * The multi-step paths, with every optional feature supported (with fewer
 * features, drop the states the device lacks from the path):
 *
 *       PRE_COPY -> PRE_COPY_P2P -> STOP_COPY
 *       PRE_COPY -> RUNNING -> RUNNING_P2P
 *       PRE_COPY -> RUNNING -> RUNNING_P2P -> STOP
 *       PRE_COPY -> RUNNING -> RUNNING_P2P -> STOP -> RESUMING
 *       PRE_COPY_P2P -> RUNNING_P2P -> RUNNING
 *       PRE_COPY_P2P -> RUNNING_P2P -> STOP
 *       PRE_COPY_P2P -> RUNNING_P2P -> STOP -> RESUMING
 *       RESUMING -> STOP -> RUNNING_P2P
 *       RESUMING -> STOP -> RUNNING_P2P -> PRE_COPY_P2P
 *       RESUMING -> STOP -> RUNNING_P2P -> RUNNING
 *       RESUMING -> STOP -> RUNNING_P2P -> RUNNING -> PRE_COPY
 *       RESUMING -> STOP -> STOP_COPY
 *       RUNNING -> RUNNING_P2P -> PRE_COPY_P2P
 *       RUNNING -> RUNNING_P2P -> STOP
 *       RUNNING -> RUNNING_P2P -> STOP -> RESUMING
 *       RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY
 *       RUNNING_P2P -> RUNNING -> PRE_COPY
 *       RUNNING_P2P -> STOP -> RESUMING
 *       RUNNING_P2P -> STOP -> STOP_COPY
 *       STOP -> RUNNING_P2P -> PRE_COPY_P2P
 *       STOP -> RUNNING_P2P -> RUNNING
 *       STOP -> RUNNING_P2P -> RUNNING -> PRE_COPY
 *       STOP_COPY -> STOP -> RESUMING
 *       STOP_COPY -> STOP -> RUNNING_P2P
 *       STOP_COPY -> STOP -> RUNNING_P2P -> RUNNING
 *
 * Refused although both states exist (the saving session cannot go back to
 * running once the device was stopped):
 *       STOP_COPY -> PRE_COPY
 *       STOP_COPY -> PRE_COPY_P2P
 *
 * Every path is a shortest path over the arcs above, and the saving states
 * (PRE_COPY, PRE_COPY_P2P, STOP_COPY) appear only at its start or its end,
 * except that a path may stay inside that group (PRE_COPY -> PRE_COPY_P2P ->
 * STOP_COPY): a session is never opened by passing through.
 *
 * Threading: every function here is pure (no I/O, no allocation, no global
 * state) and may be called from any thread.
 */
#ifndef VFIOMIG_FSM_H
#define VFIOMIG_FSM_H

#include <stdbool.h>
#include <stdint.h>

#include <vfiomig/uapi.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The longest path has 5 states (4 arcs); this leaves room for growth. */
#define VFM_FSM_MAX_PATH 8u

/* A planned path: states[0] is the current state, states[len - 1] the
 * target. len == 1 means "already there". */
struct vfm_fsm_path {
    uint32_t len;
    uint32_t states[VFM_FSM_MAX_PATH];
};

/**
 * vfm_fsm_flags_valid - whether @flags is a valid capability set: contains STOP_COPY, no unknown
 * bits.
 */
VFM_EXPORT bool vfm_fsm_flags_valid(uint32_t flags);

/**
 * vfm_fsm_state_supported - whether a device with @flags has @state (ERROR and RUNNING always, the
 * others by flag). False for invalid flags or an out-of-range state.
 */
VFM_EXPORT bool vfm_fsm_state_supported(uint32_t flags, uint32_t state);

/**
 * vfm_fsm_next - the next single arc towards a target state.
 * @flags: the device's VFM_MIGRATION_* flags.
 * @cur: the current state.
 * @target: the requested state.
 * @next: on success, the state the next arc leads to (== @cur when
 *        @cur == @target).
 * Return: 0, or -EINVAL when the request is refused by the rules above
 *         (@next is then left untouched).
 */
VFM_EXPORT int vfm_fsm_next(uint32_t flags, uint32_t cur, uint32_t target, uint32_t *next);

/**
 * vfm_fsm_plan - the whole path from @cur to @target.
 * @path: on success, the states visited, @cur first and @target last.
 * Return: 0, or -EINVAL as vfm_fsm_next() (@path->len is then 0).
 */
VFM_EXPORT int vfm_fsm_plan(uint32_t flags, uint32_t cur, uint32_t target,
                            struct vfm_fsm_path *path);

/**
 * vfm_fsm_is_arc - whether @from -> @to is one of the single arcs a device
 * with @flags implements (the list above). False for invalid flags.
 */
VFM_EXPORT bool vfm_fsm_is_arc(uint32_t flags, uint32_t from, uint32_t to);

/**
 * vfm_fsm_refusal - why the planner refuses @cur -> @target, in words.
 * Return: a static sentence naming the rule, or NULL when the request is
 * accepted.
 */
VFM_EXPORT const char *vfm_fsm_refusal(uint32_t flags, uint32_t cur, uint32_t target);

/**
 * vfm_fsm_is_saving - whether @state belongs to the saving group (PRE_COPY, PRE_COPY_P2P,
 * STOP_COPY), in which one save session lives.
 */
VFM_EXPORT bool vfm_fsm_is_saving(uint32_t state);

/* What an arc does to the data session. */
enum vfm_fsm_session {
    VFM_FSM_SESSION_NONE = 0,   /* no session change */
    VFM_FSM_SESSION_OPEN_SAVE,  /* STOP -> STOP_COPY, RUNNING -> PRE_COPY,
                                   RUNNING_P2P -> PRE_COPY_P2P: new data_fd */
    VFM_FSM_SESSION_OPEN_LOAD,  /* STOP -> RESUMING: new data_fd */
    VFM_FSM_SESSION_KEEP,       /* inside the saving group: same fd */
    VFM_FSM_SESSION_CLOSE_SAVE, /* leaving the saving group */
    VFM_FSM_SESSION_CLOSE_LOAD, /* RESUMING -> STOP */
};

/**
 * vfm_fsm_arc_session - the effect of the single arc @from -> @to on the data session (the arc is
 * not checked; see vfm_fsm_is_arc()).
 */
VFM_EXPORT enum vfm_fsm_session vfm_fsm_arc_session(uint32_t from, uint32_t to);

#ifdef __cplusplus
}
#endif
#endif /* VFIOMIG_FSM_H */
