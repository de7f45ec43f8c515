/* SPDX-License-Identifier: MIT */
/*
 * The planner (include/vfiomig/fsm.h, whose comment is the specification:
 * the arcs by capability and every multi-step path).
 *
 * Implementation: a next-hop table for a device with every optional feature,
 * plus the rule that a hop into a state the device lacks is followed through
 * to that state's own next hop. That is the kernel's algorithm; the table
 * rows below are the protocol's paths written as "first step of the path".
 */
#include <errno.h>

#include <vfiomig/fsm.h>

#include "../common/internal.h"

#define S_ERR VFM_STATE_ERROR
#define S_STOP VFM_STATE_STOP
#define S_RUN VFM_STATE_RUNNING
#define S_SC VFM_STATE_STOP_COPY
#define S_RES VFM_STATE_RESUMING
#define S_P2P VFM_STATE_RUNNING_P2P
#define S_PC VFM_STATE_PRE_COPY
#define S_PCP VFM_STATE_PRE_COPY_P2P

/*
 * next_hop[cur][target]: the first state after @cur on the way to @target for
 * a device with all features. ERROR as a hop means "refused". Columns are in
 * state-number order: ERROR STOP RUNNING STOP_COPY RESUMING RUNNING_P2P
 * PRE_COPY PRE_COPY_P2P.
 */
static const uint8_t next_hop[VFM_STATE_COUNT][VFM_STATE_COUNT] = {
    /*                ERR    STOP    RUN    SC     RES    P2P    PC     PCP */
    [S_ERR] = {S_ERR, S_ERR, S_ERR, S_ERR, S_ERR, S_ERR, S_ERR, S_ERR},
    [S_STOP] = {S_ERR, S_STOP, S_P2P, S_SC, S_RES, S_P2P, S_P2P, S_P2P},
    [S_RUN] = {S_ERR, S_P2P, S_RUN, S_P2P, S_P2P, S_P2P, S_PC, S_P2P},
    /* STOP_COPY cannot go back to pre-copy: refused (the 2026 kernel fix) */
    [S_SC] = {S_ERR, S_STOP, S_STOP, S_SC, S_STOP, S_STOP, S_ERR, S_ERR},
    [S_RES] = {S_ERR, S_STOP, S_STOP, S_STOP, S_RES, S_STOP, S_STOP, S_STOP},
    [S_P2P] = {S_ERR, S_STOP, S_RUN, S_STOP, S_STOP, S_P2P, S_RUN, S_PCP},
    [S_PC] = {S_ERR, S_RUN, S_RUN, S_PCP, S_RUN, S_RUN, S_PC, S_PCP},
    [S_PCP] = {S_ERR, S_P2P, S_P2P, S_SC, S_P2P, S_P2P, S_PC, S_PCP},
};

/* The flags a state needs. ERROR needs an impossible set: it is never
 * requested and never planned through. */
#define NEEDS_IMPOSSIBLE 0xffffffffu
static const uint32_t state_needs[VFM_STATE_COUNT] = {
    [S_ERR] = NEEDS_IMPOSSIBLE,
    [S_STOP] = VFM_MIGRATION_STOP_COPY,
    [S_RUN] = VFM_MIGRATION_STOP_COPY,
    [S_SC] = VFM_MIGRATION_STOP_COPY,
    [S_RES] = VFM_MIGRATION_STOP_COPY,
    [S_P2P] = VFM_MIGRATION_STOP_COPY | VFM_MIGRATION_P2P,
    [S_PC] = VFM_MIGRATION_STOP_COPY | VFM_MIGRATION_PRE_COPY,
    [S_PCP] = VFM_MIGRATION_STOP_COPY | VFM_MIGRATION_P2P | VFM_MIGRATION_PRE_COPY,
};

bool vfm_fsm_flags_valid(uint32_t flags)
{
    return (flags & VFM_MIGRATION_STOP_COPY) && !(flags & ~VFM_MIGRATION_ALL);
}

static bool has_state(uint32_t flags, uint32_t state)
{
    return (state_needs[state] & flags) == state_needs[state];
}

bool vfm_fsm_state_supported(uint32_t flags, uint32_t state)
{
    if (!vfm_fsm_flags_valid(flags) || state >= VFM_STATE_COUNT)
        return false;
    return state == S_ERR || has_state(flags, state);
}

int vfm_fsm_next(uint32_t flags, uint32_t cur, uint32_t target, uint32_t *next)
{
    uint32_t hop;

    if (!vfm_fsm_flags_valid(flags) || cur >= VFM_STATE_COUNT || target >= VFM_STATE_COUNT)
        return -EINVAL;
    if (!has_state(flags, cur) || !has_state(flags, target))
        return -EINVAL; /* also refuses ERROR, from or to */

    /*
     * Skip the states this device lacks. Every skipped state is one the
     * device does not have, so each iteration lands on a different row; a
     * refused hop (ERROR) ends the walk instead of being followed, which is
     * where the pre-2026 kernel looped forever.
     */
    hop = next_hop[cur][target];
    while (hop != S_ERR && !has_state(flags, hop))
        hop = next_hop[hop][target];
    if (hop == S_ERR)
        return -EINVAL;
    *next = hop;
    return 0;
}

int vfm_fsm_plan(uint32_t flags, uint32_t cur, uint32_t target, struct vfm_fsm_path *path)
{
    uint32_t s = cur;
    int ret;

    path->len = 0;
    if (!vfm_fsm_flags_valid(flags) || cur >= VFM_STATE_COUNT || target >= VFM_STATE_COUNT ||
        !has_state(flags, cur) || !has_state(flags, target))
        return -EINVAL;
    path->states[path->len++] = cur;
    while (s != target) {
        ret = vfm_fsm_next(flags, s, target, &s);
        if (ret) {
            path->len = 0;
            return ret;
        }
        /* The table is loop-free (tests prove it), so this bound is never
         * reached; it guards against an edit that breaks that. */
        if (path->len == VFM_FSM_MAX_PATH) {
            path->len = 0;
            return -EINVAL;
        }
        path->states[path->len++] = s;
    }
    return 0;
}

bool vfm_fsm_is_arc(uint32_t flags, uint32_t from, uint32_t to)
{
    bool p2p = flags & VFM_MIGRATION_P2P;
    bool pre = flags & VFM_MIGRATION_PRE_COPY;

    if (!vfm_fsm_flags_valid(flags) || from >= VFM_STATE_COUNT || to >= VFM_STATE_COUNT)
        return false;
    if (!has_state(flags, from) || !has_state(flags, to))
        return false;

#define ARC(a, b) (from == (a) && to == (b))
    if (ARC(S_RES, S_STOP) || ARC(S_STOP, S_RES) || ARC(S_STOP, S_SC) || ARC(S_SC, S_STOP))
        return true;
    if (!p2p && (ARC(S_RUN, S_STOP) || ARC(S_STOP, S_RUN)))
        return true;
    if (p2p && (ARC(S_RUN, S_P2P) || ARC(S_P2P, S_RUN) || ARC(S_P2P, S_STOP) || ARC(S_STOP, S_P2P)))
        return true;
    if (pre && (ARC(S_RUN, S_PC) || ARC(S_PC, S_RUN)))
        return true;
    if (pre && !p2p && ARC(S_PC, S_SC))
        return true;
    if (pre && p2p &&
        (ARC(S_P2P, S_PCP) || ARC(S_PCP, S_P2P) || ARC(S_PC, S_PCP) || ARC(S_PCP, S_PC) ||
         ARC(S_PCP, S_SC)))
        return true;
#undef ARC
    return false;
}

bool vfm_fsm_is_saving(uint32_t state)
{
    return state == S_SC || state == S_PC || state == S_PCP;
}

enum vfm_fsm_session vfm_fsm_arc_session(uint32_t from, uint32_t to)
{
    bool from_save = vfm_fsm_is_saving(from), to_save = vfm_fsm_is_saving(to);

    if (to == S_RES && from != S_RES)
        return VFM_FSM_SESSION_OPEN_LOAD;
    if (from == S_RES && to != S_RES)
        return VFM_FSM_SESSION_CLOSE_LOAD;
    if (!from_save && to_save)
        return VFM_FSM_SESSION_OPEN_SAVE;
    if (from_save && to_save)
        return from == to ? VFM_FSM_SESSION_NONE : VFM_FSM_SESSION_KEEP;
    if (from_save && !to_save)
        return VFM_FSM_SESSION_CLOSE_SAVE;
    return VFM_FSM_SESSION_NONE;
}

/* The flag a state needs beyond STOP_COPY, in words. */
static const char *needs_words(uint32_t state)
{
    switch (state) {
    case S_P2P:
        return "RUNNING_P2P needs the P2P capability, which these flags lack";
    case S_PC:
        return "PRE_COPY needs the PRE_COPY capability, which these flags lack";
    case S_PCP:
        return "PRE_COPY_P2P needs both the P2P and PRE_COPY capabilities, which these flags "
               "do not both have";
    default:
        return "the state is not supported by these flags";
    }
}

const char *vfm_fsm_refusal(uint32_t flags, uint32_t cur, uint32_t target)
{
    uint32_t next;

    if (flags & ~VFM_MIGRATION_ALL)
        return "the flags have a bit the uAPI does not define";
    if (!(flags & VFM_MIGRATION_STOP_COPY))
        return "the flags lack STOP_COPY, which every migratable device must have";
    if (cur >= VFM_STATE_COUNT || target >= VFM_STATE_COUNT)
        return "a state number is out of range (valid: 0..7)";
    if (cur == S_ERR)
        return "the device is in ERROR, which only a reset leaves";
    if (target == S_ERR)
        return "ERROR cannot be requested";
    if (!has_state(flags, cur))
        return needs_words(cur);
    if (!has_state(flags, target))
        return needs_words(target);
    if (cur == S_SC && (target == S_PC || target == S_PCP))
        return "a stopped device cannot go back to pre-copy (STOP_COPY -> PRE_COPY and "
               "STOP_COPY -> PRE_COPY_P2P are refused)";
    if (vfm_fsm_next(flags, cur, target, &next))
        return "the request is refused";
    return NULL;
}
