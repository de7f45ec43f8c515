/* SPDX-License-Identifier: MIT */
/*
 * The planner against the protocol, exhaustively: every flags value 0..15
 * (valid, invalid, unknown bits) and every (cur, target) in 0..9 (including
 * out-of-range numbers).
 *
 * The oracle is independent of src/fsm: the arcs and the multi-step paths are
 * transcribed from the comment above the kernel's table in
 * drivers/vfio/vfio_main.c (all features), and the kernel's rule for fewer
 * features — skip the states the device lacks — is applied to them here.
 * A constrained breadth-first search over the arcs proves every path is a
 * shortest one.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <vfiomig/fsm.h>

enum { ERR = 0, STOP, RUN, SC, RES, P2P, PC, PCP, NSTATES };
#define F_SC VFM_MIGRATION_STOP_COPY
#define F_P2P VFM_MIGRATION_P2P
#define F_PC VFM_MIGRATION_PRE_COPY
#define NONE 0xff

/* The arcs, by capability, as the kernel's comment lists them. */
struct arc {
    uint8_t from, to;
};
static const struct arc arcs_always[] = {{RES, STOP}, {STOP, RES}, {STOP, SC}, {SC, STOP}};
static const struct arc arcs_no_p2p[] = {{RUN, STOP}, {STOP, RUN}};
static const struct arc arcs_p2p[] = {{RUN, P2P}, {P2P, RUN}, {P2P, STOP}, {STOP, P2P}};
static const struct arc arcs_pre[] = {{RUN, PC}, {PC, RUN}};
static const struct arc arcs_pre_no_p2p[] = {{PC, SC}};
static const struct arc arcs_pre_p2p[] = {{P2P, PCP}, {PCP, P2P}, {PC, PCP}, {PCP, PC}, {PCP, SC}};

/* The multi-step paths with all features, from the kernel's comment. */
static const uint8_t kernel_paths[][6] = {
    {PC, PCP, SC, NONE},
    {PC, RUN, P2P, NONE},
    {PC, RUN, P2P, STOP, NONE},
    {PC, RUN, P2P, STOP, RES, NONE},
    {PCP, P2P, RUN, NONE},
    {PCP, P2P, STOP, NONE},
    {PCP, P2P, STOP, RES, NONE},
    {RES, STOP, P2P, NONE},
    {RES, STOP, P2P, PCP, NONE},
    {RES, STOP, P2P, RUN, NONE},
    {RES, STOP, P2P, RUN, PC, NONE},
    {RES, STOP, SC, NONE},
    {RUN, P2P, PCP, NONE},
    {RUN, P2P, STOP, NONE},
    {RUN, P2P, STOP, RES, NONE},
    {RUN, P2P, STOP, SC, NONE},
    {P2P, RUN, PC, NONE},
    {P2P, STOP, RES, NONE},
    {P2P, STOP, SC, NONE},
    {STOP, P2P, PCP, NONE},
    {STOP, P2P, RUN, NONE},
    {STOP, P2P, RUN, PC, NONE},
    {SC, STOP, RES, NONE},
    {SC, STOP, P2P, NONE},
    {SC, STOP, P2P, RUN, NONE},
};
static const struct arc blocked[] = {{SC, PC}, {SC, PCP}};

#define N(a) (sizeof(a) / sizeof((a)[0]))

static int in_list(const struct arc *l, size_t n, uint32_t a, uint32_t b)
{
    for (size_t i = 0; i < n; i++)
        if (l[i].from == a && l[i].to == b)
            return 1;
    return 0;
}

/* The oracle's own idea of an arc (not vfm_fsm_is_arc). */
static int oracle_arc(uint32_t flags, uint32_t a, uint32_t b)
{
    int p2p = !!(flags & F_P2P), pre = !!(flags & F_PC);

    return in_list(arcs_always, N(arcs_always), a, b) ||
           (!p2p && in_list(arcs_no_p2p, N(arcs_no_p2p), a, b)) ||
           (p2p && in_list(arcs_p2p, N(arcs_p2p), a, b)) ||
           (pre && in_list(arcs_pre, N(arcs_pre), a, b)) ||
           (pre && !p2p && in_list(arcs_pre_no_p2p, N(arcs_pre_no_p2p), a, b)) ||
           (pre && p2p && in_list(arcs_pre_p2p, N(arcs_pre_p2p), a, b));
}

static int oracle_flags_valid(uint32_t flags)
{
    return (flags & F_SC) && flags < 8;
}

static int oracle_has(uint32_t flags, uint32_t s)
{
    switch (s) {
    case STOP:
    case RUN:
    case SC:
    case RES:
        return 1;
    case P2P:
        return !!(flags & F_P2P);
    case PC:
        return !!(flags & F_PC);
    case PCP:
        return (flags & F_P2P) && (flags & F_PC);
    default:
        return 0; /* ERROR can never be requested or left; >= 8 is nothing */
    }
}

static int saving(uint32_t s)
{
    return s == SC || s == PC || s == PCP;
}

/* The all-features path for a pair: 0 refused, else its length (states). */
static int full_path(uint32_t a, uint32_t b, uint8_t out[6])
{
    if (a == b) {
        out[0] = (uint8_t)a;
        return 1;
    }
    if (in_list(blocked, N(blocked), a, b))
        return 0;
    if (oracle_arc(F_SC | F_P2P | F_PC, a, b)) {
        out[0] = (uint8_t)a;
        out[1] = (uint8_t)b;
        return 2;
    }
    for (size_t i = 0; i < N(kernel_paths); i++) {
        int n = 0;
        while (kernel_paths[i][n] != NONE)
            n++;
        if (kernel_paths[i][0] == a && kernel_paths[i][n - 1] == b) {
            memcpy(out, kernel_paths[i], (size_t)n);
            return n;
        }
    }
    return -1; /* not in the kernel's comment: a hole in the oracle */
}

/* Shortest path length (states) over the arcs of @flags in which a saving
 * state is passed through only while the path has stayed inside the group
 * since its start. 0 when unreachable. */
static int constrained_shortest(uint32_t flags, uint32_t a, uint32_t b)
{
    /* BFS over (state, still-in-group) */
    int dist[NSTATES][2];
    uint32_t qs[2 * NSTATES], qg[2 * NSTATES];
    int head = 0, tail = 0;

    memset(dist, -1, sizeof(dist));
    dist[a][saving(a)] = 1;
    qs[tail] = a;
    qg[tail++] = (uint32_t)saving(a);
    while (head < tail) {
        uint32_t s = qs[head], g = qg[head++];
        if (s == b)
            return dist[s][g];
        for (uint32_t t = 1; t < NSTATES; t++) {
            uint32_t ng;
            if (!oracle_arc(flags, s, t) || !oracle_has(flags, t))
                continue;
            /* t may be an intermediate state: allowed if not saving, or if
             * the path is still in the group (or t is the target). */
            if (saving(t) && !g && t != b)
                continue;
            ng = g && saving(t);
            if (dist[t][ng] >= 0)
                continue;
            dist[t][ng] = dist[s][g] + 1;
            qs[tail] = t;
            qg[tail++] = ng;
        }
    }
    return 0;
}

/* Every pair with all features is an arc, a listed path, blocked or
 * identity: the transcription has no hole. And the planner gives exactly
 * the kernel's paths. */
static void test_kernel_paths_all_features(void **state)
{
    uint32_t flags = F_SC | F_P2P | F_PC;
    (void)state;

    for (uint32_t a = STOP; a < NSTATES; a++) {
        for (uint32_t b = STOP; b < NSTATES; b++) {
            uint8_t want[6];
            struct vfm_fsm_path got;
            int n = full_path(a, b, want);
            int ret = vfm_fsm_plan(flags, a, b, &got);

            assert_int_not_equal(n, -1); /* the oracle covers the pair */
            if (n == 0) {
                assert_int_equal(ret, -EINVAL);
                assert_int_equal(got.len, 0);
                continue;
            }
            assert_int_equal(ret, 0);
            assert_int_equal(got.len, n);
            for (int i = 0; i < n; i++)
                assert_int_equal(got.states[i], want[i]);
        }
    }
}

/* The exhaustive sweep. */
static void test_exhaustive(void **state)
{
    unsigned accepted = 0, refused = 0;
    (void)state;

    for (uint32_t flags = 0; flags < 16; flags++) {
        for (uint32_t a = 0; a < NSTATES + 2; a++) {
            for (uint32_t b = 0; b < NSTATES + 2; b++) {
                struct vfm_fsm_path p;
                uint8_t full[6];
                uint32_t next = 0xdead;
                int ret = vfm_fsm_plan(flags, a, b, &p);
                int nret = vfm_fsm_next(flags, a, b, &next);
                int expect_ok, n, k = 0;

                expect_ok = oracle_flags_valid(flags) && oracle_has(flags, a) &&
                            oracle_has(flags, b) && !in_list(blocked, N(blocked), a, b);
                if (!expect_ok) {
                    if (ret != -EINVAL)
                        fail_msg("flags %u %u -> %u: accepted, must be refused", flags, a, b);
                    assert_int_equal(nret, -EINVAL);
                    assert_int_equal(next, 0xdead); /* untouched */
                    assert_non_null(vfm_fsm_refusal(flags, a, b));
                    refused++;
                    continue;
                }
                if (ret != 0)
                    fail_msg("flags %u %u -> %u: refused, must be accepted", flags, a, b);
                assert_null(vfm_fsm_refusal(flags, a, b));
                accepted++;

                /* Kernel rule for fewer features: the full path without the
                 * states this device lacks. */
                n = full_path(a, b, full);
                assert_true(n > 0);
                for (int i = 0; i < n; i++) {
                    if (!oracle_has(flags, full[i]))
                        continue;
                    assert_true((uint32_t)k < p.len);
                    if (p.states[k] != full[i])
                        fail_msg("flags %u %u -> %u: step %d is %s, kernel gives %s", flags, a, b,
                                 k, vfm_state_str(p.states[k]), vfm_state_str(full[i]));
                    k++;
                }
                assert_int_equal(p.len, k);

                assert_int_equal(p.states[0], a);
                assert_int_equal(p.states[p.len - 1], b);
                assert_int_equal(nret, 0);
                assert_int_equal(next, p.len > 1 ? p.states[1] : a);

                /* every step an arc this feature set requires */
                for (uint32_t i = 1; i < p.len; i++) {
                    if (!oracle_arc(flags, p.states[i - 1], p.states[i]))
                        fail_msg("flags %u %u -> %u: %s -> %s is not a required arc", flags, a, b,
                                 vfm_state_str(p.states[i - 1]), vfm_state_str(p.states[i]));
                    assert_true(vfm_fsm_is_arc(flags, p.states[i - 1], p.states[i]));
                }
                /* no longer than the shortest */
                assert_int_equal(p.len, constrained_shortest(flags, a, b));
                /* saving states only at the ends, or while still inside the
                 * group the path started in */
                for (uint32_t i = 1; i + 1 < p.len; i++) {
                    int all_saving = 1;
                    for (uint32_t j = 0; j <= i; j++)
                        all_saving &= saving(p.states[j]);
                    if (saving(p.states[i]) && !all_saving)
                        fail_msg("flags %u %u -> %u passes through %s", flags, a, b,
                                 vfm_state_str(p.states[i]));
                    assert_int_not_equal(p.states[i], RES);
                }
            }
        }
    }
    /* 4 valid flag sets: 6 + 7*7 + 6*6-... counted, not assumed: */
    assert_true(accepted > 0 && refused > 0);
    assert_int_equal(accepted + refused, 16 * 10 * 10);
}

/* vfm_fsm_is_arc agrees with the oracle on every pair and flags value. */
static void test_is_arc(void **state)
{
    (void)state;
    for (uint32_t flags = 0; flags < 16; flags++)
        for (uint32_t a = 0; a < NSTATES + 2; a++)
            for (uint32_t b = 0; b < NSTATES + 2; b++) {
                int want = oracle_flags_valid(flags) && oracle_has(flags, a) &&
                           oracle_has(flags, b) && oracle_arc(flags, a, b);
                if (vfm_fsm_is_arc(flags, a, b) != want)
                    fail_msg("is_arc(%u, %u, %u) != %d", flags, a, b, want);
            }
}

/* A device without P2P never sees RUNNING_P2P: RUNNING -> STOP is direct. */
static void test_p2p_merged(void **state)
{
    struct vfm_fsm_path p;
    (void)state;

    assert_int_equal(vfm_fsm_plan(F_SC, RUN, STOP, &p), 0);
    assert_int_equal(p.len, 2);
    assert_int_equal(vfm_fsm_plan(F_SC, RUN, SC, &p), 0);
    assert_int_equal(p.len, 3);
    assert_int_equal(p.states[1], STOP);
    assert_int_equal(vfm_fsm_plan(F_SC | F_P2P, RUN, SC, &p), 0);
    assert_int_equal(p.len, 4);
    assert_int_equal(p.states[1], P2P);
    assert_int_equal(vfm_fsm_plan(F_SC | F_PC, PC, SC, &p), 0); /* PRE_COPY_P2P merged */
    assert_int_equal(p.len, 2);
    assert_int_equal(vfm_fsm_plan(F_SC, RUN, P2P, &p), -EINVAL);
}

/* The pre-2026 kernel loops forever here; we refuse, fast. */
static void test_stop_copy_to_pre_copy_refused(void **state)
{
    uint32_t next = 1234;
    (void)state;

    assert_int_equal(vfm_fsm_next(F_SC | F_PC, SC, PC, &next), -EINVAL);
    assert_int_equal(vfm_fsm_next(F_SC | F_P2P | F_PC, SC, PC, &next), -EINVAL);
    assert_int_equal(vfm_fsm_next(F_SC | F_P2P | F_PC, SC, PCP, &next), -EINVAL);
    assert_int_equal(next, 1234);
    assert_non_null(strstr(vfm_fsm_refusal(F_SC | F_PC, SC, PC), "pre-copy"));
}

static void test_error_rules(void **state)
{
    struct vfm_fsm_path p;
    (void)state;

    for (uint32_t s = 0; s < NSTATES; s++) {
        assert_int_equal(vfm_fsm_plan(7, ERR, s, &p), -EINVAL);
        assert_int_equal(vfm_fsm_plan(7, s, ERR, &p), -EINVAL);
    }
    assert_non_null(strstr(vfm_fsm_refusal(7, ERR, RUN), "reset"));
    assert_non_null(strstr(vfm_fsm_refusal(7, RUN, ERR), "cannot be requested"));
    assert_non_null(strstr(vfm_fsm_refusal(2, RUN, STOP), "STOP_COPY"));
    assert_non_null(strstr(vfm_fsm_refusal(9, RUN, STOP), "bit"));
    assert_non_null(strstr(vfm_fsm_refusal(7, RUN, 8), "range"));
    assert_non_null(strstr(vfm_fsm_refusal(1, RUN, P2P), "P2P"));
    assert_true(vfm_fsm_state_supported(1, ERR));
    assert_false(vfm_fsm_state_supported(1, P2P));
    assert_false(vfm_fsm_state_supported(0, RUN));
    assert_false(vfm_fsm_state_supported(7, 8));
}

static void test_sessions(void **state)
{
    (void)state;
    assert_int_equal(vfm_fsm_arc_session(STOP, SC), VFM_FSM_SESSION_OPEN_SAVE);
    assert_int_equal(vfm_fsm_arc_session(RUN, PC), VFM_FSM_SESSION_OPEN_SAVE);
    assert_int_equal(vfm_fsm_arc_session(P2P, PCP), VFM_FSM_SESSION_OPEN_SAVE);
    assert_int_equal(vfm_fsm_arc_session(STOP, RES), VFM_FSM_SESSION_OPEN_LOAD);
    assert_int_equal(vfm_fsm_arc_session(PC, PCP), VFM_FSM_SESSION_KEEP);
    assert_int_equal(vfm_fsm_arc_session(PCP, SC), VFM_FSM_SESSION_KEEP);
    assert_int_equal(vfm_fsm_arc_session(PC, SC), VFM_FSM_SESSION_KEEP);
    assert_int_equal(vfm_fsm_arc_session(SC, STOP), VFM_FSM_SESSION_CLOSE_SAVE);
    assert_int_equal(vfm_fsm_arc_session(PC, RUN), VFM_FSM_SESSION_CLOSE_SAVE);
    assert_int_equal(vfm_fsm_arc_session(PCP, P2P), VFM_FSM_SESSION_CLOSE_SAVE);
    assert_int_equal(vfm_fsm_arc_session(RES, STOP), VFM_FSM_SESSION_CLOSE_LOAD);
    assert_int_equal(vfm_fsm_arc_session(RUN, P2P), VFM_FSM_SESSION_NONE);
    assert_int_equal(vfm_fsm_arc_session(P2P, STOP), VFM_FSM_SESSION_NONE);
    /* exactly four arcs open a session with every feature; fewer features,
     * fewer: STOP->STOP_COPY, STOP->RESUMING, +RUNNING->PRE_COPY,
     * +RUNNING_P2P->PRE_COPY_P2P */
    for (uint32_t f = 1; f < 8; f += 2) {
        int opens = 0;
        for (uint32_t a = 0; a < NSTATES; a++)
            for (uint32_t b = 0; b < NSTATES; b++)
                if (vfm_fsm_is_arc(f, a, b) &&
                    (vfm_fsm_arc_session(a, b) == VFM_FSM_SESSION_OPEN_SAVE ||
                     vfm_fsm_arc_session(a, b) == VFM_FSM_SESSION_OPEN_LOAD))
                    opens++;
        assert_int_equal(opens, 2 + !!(f & F_PC) + ((f & F_PC) && (f & F_P2P)));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernel_paths_all_features),
        cmocka_unit_test(test_exhaustive),
        cmocka_unit_test(test_is_arc),
        cmocka_unit_test(test_p2p_merged),
        cmocka_unit_test(test_stop_copy_to_pre_copy_refused),
        cmocka_unit_test(test_error_rules),
        cmocka_unit_test(test_sessions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
