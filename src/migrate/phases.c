/* SPDX-License-Identifier: MIT */
/*
 * The order of a migration (mig.h), in one table: every step moves every
 * device of one side at once, on the side's workers, and the next step
 * begins only once it has ended on every device. The P2P rule is the order
 * of the rows: on each side, every device stops issuing P2P before any
 * device stops (sources), accepts P2P before any device issues it
 * (destinations, and sources rolled back).
 */
#include <errno.h>
#include <stdlib.h>

#include <vfiomig/fsm.h>

#include "mig.h"

/* ---- the steps, device by device ---- */

/* ---- the source side ---- */

static int src_quiesce(struct mig *m, unsigned i)
{
    /* P2P devices stop issuing P2P; the others wait for phase 1b */
    if (!(m->flags[i] & VFM_MIGRATION_P2P) || m->stopped[i])
        return 0;
    return mig_set_state(m, 0, i, m->pc[i] ? VFM_STATE_PRE_COPY_P2P : VFM_STATE_RUNNING_P2P);
}
static int src_stop_non_p2p(struct mig *m, unsigned i)
{
    if ((m->flags[i] & VFM_MIGRATION_P2P) || m->stopped[i])
        return 0;
    if (!m->pc[i])
        return mig_set_state(m, 0, i, VFM_STATE_STOP);
    /* PRE_COPY -> STOP would end the session: stop by saving */
    m->in_stop_copy[i] = true;
    return mig_set_state(m, 0, i, VFM_STATE_STOP_COPY);
}
static int src_save(struct mig *m, unsigned i)
{
    uint8_t *buf = malloc(CHUNK);
    uint64_t before = m->dev_sent[i], total;
    int64_t t0 = mig_now_ns();
    int ret;

    if (!buf)
        return -ENOMEM;
    ret = m->in_stop_copy[i] ? 0 : mig_set_state(m, 0, i, VFM_STATE_STOP_COPY);
    if (!ret)
        ret = mig_send_state(m, i, buf, 0, false);
    pthread_mutex_lock(m->lock);
    total = m->dev_sent[i] - before;
    pthread_mutex_unlock(m->lock);
    if (!ret) {
        uint64_t t = m->dev_sent[i]; /* pre-copy bytes included */
        ret = mig_put_record(m, VFM_MS_DEVICE_END, i, &t, sizeof(t));
        if (ret)
            mig_fail(m, ret, "the migration stream failed: %s", vfm_strerror(ret));
    }
    free(buf);
    pthread_mutex_lock(m->lock);
    m->rep->devices[i].bytes = m->dev_sent[i];
    m->rep->bytes += total;
    m->rep->devices[i].save_ns = mig_now_ns() - t0;
    pthread_mutex_unlock(m->lock);
    return ret;
}
/* Back to RUNNING after a failure: every source to RUNNING_P2P first (each
 * accepts P2P again before any issues it), then all to RUNNING; a source
 * that will not come back is reset. A source that was migrated stopped goes
 * back to STOP; one the engine never sent a request to is left alone. */
static int src_recover_p2p(struct mig *m, unsigned i)
{
    if (!(m->flags[i] & VFM_MIGRATION_P2P) || m->stopped[i] || !m->touched[i])
        return 0;
    m->cur[i] = VFM_STATE_COUNT; /* after a failure: ask */
    if (vfm_ep_get_state(m->cfg->src[i], &m->cur[i]))
        return 0;
    if (m->cur[i] == VFM_STATE_RUNNING || m->cur[i] == VFM_STATE_RUNNING_P2P ||
        m->cur[i] == VFM_STATE_ERROR)
        return 0; /* the RUNNING pass resets a device in ERROR */
    if (vfm_ep_set_state(m->cfg->src[i], VFM_STATE_RUNNING_P2P) == 0) {
        m->cur[i] = VFM_STATE_RUNNING_P2P;
        mig_span(m, 0, i, VFM_STATE_RUNNING_P2P);
    } else {
        m->cur[i] = VFM_STATE_COUNT;
    }
    return 0;
}
static int src_recover_run(struct mig *m, unsigned i)
{
    struct vfm_endpoint *e = m->cfg->src[i];
    uint32_t target = m->stopped[i] ? VFM_STATE_STOP : VFM_STATE_RUNNING, st = VFM_STATE_COUNT,
             next;

    if (!m->touched[i])
        return 0;
    vfm_ep_get_state(e, &st);
    if (st == target)
        return 0;
    if (st < VFM_STATE_COUNT && vfm_fsm_next(m->flags[i], st, target, &next) == 0 &&
        vfm_ep_set_state(e, target) == 0) {
        mig_span(m, 0, i, target);
        return 0;
    }
    /* recover state failed: reset (back to RUNNING, its state lost) */
    vfm_log(LOG_ERR, "source %s: cannot return to %s from %s; resetting it", vfm_ep_name(e),
            vfm_state_str(target), st < VFM_STATE_COUNT ? vfm_state_str(st) : "an unknown state");
    if (vfm_ep_reset(e) == 0) {
        pthread_mutex_lock(m->lock);
        m->rep->sources_reset++;
        pthread_mutex_unlock(m->lock);
        mig_span(m, 0, i, VFM_STATE_RUNNING);
        return 0;
    }
    /* it does not answer (a server that stopped, a connection closed at a
     * deadline): nothing more can be done from here */
    pthread_mutex_lock(m->lock);
    m->rep->sources_lost++;
    pthread_mutex_unlock(m->lock);
    mig_note(m,
             "source %s does not answer: it could be neither brought back nor reset, and is left "
             "as it is",
             vfm_ep_name(e));
    return 0;
}
static int src_finish(struct mig *m, unsigned i)
{
    /* the VM moved: the sources end their sessions, stopped */
    return mig_set_state(m, 0, i, VFM_STATE_STOP);
}
/* ---- the destination side ---- */

static int dst_resume(struct mig *m, unsigned i)
{
    return mig_set_state(m, 1, i, VFM_STATE_RESUMING);
}
static int dst_load(struct mig *m, unsigned i)
{
    return mig_set_state(m, 1, i, VFM_STATE_STOP);
}
static int dst_start_p2p(struct mig *m, unsigned i)
{
    if (m->stopped[i])
        return 0; /* migrated stopped: it stays in STOP */
    return mig_set_state(
        m, 1, i, (m->flags[i] & VFM_MIGRATION_P2P) ? VFM_STATE_RUNNING_P2P : VFM_STATE_STOP);
}
static int dst_start(struct mig *m, unsigned i)
{
    if (m->stopped[i])
        return 0;
    return mig_set_state(m, 1, i, VFM_STATE_RUNNING);
}
static int dst_reset(struct mig *m, unsigned i)
{
    /* a reset device is RUNNING (the uAPI's reset state): stopped again,
     * so that a destination given up on runs nothing, blank or not, while
     * the sources run on */
    if (vfm_ep_reset(m->cfg->dst[i]) == 0)
        vfm_ep_set_state(m->cfg->dst[i], VFM_STATE_STOP);
    return 0;
}

/* ---- the table ---- */

static const struct mig_step {
    int side;                 /* 0 sources, 1 destinations */
    enum vfm_mig_phase phase; /* where its time goes in the report */
    int (*fn)(struct mig *m, unsigned i);
} steps[MIG_STEP_END] = {
    [MIG_QUIESCE] = {0, VFM_PHASE_QUIESCE, src_quiesce},
    [MIG_STOP_NON_P2P] = {0, VFM_PHASE_QUIESCE, src_stop_non_p2p},
    [MIG_SAVE] = {0, VFM_PHASE_SAVE, src_save},
    [MIG_FINISH] = {0, VFM_PHASE_START, src_finish},
    [MIG_RESUME] = {1, VFM_PHASE_LOAD, dst_resume},
    [MIG_LOAD] = {1, VFM_PHASE_LOAD, dst_load},
    [MIG_START_P2P] = {1, VFM_PHASE_START_P2P, dst_start_p2p},
    [MIG_START] = {1, VFM_PHASE_START, dst_start},
    [MIG_BACK_P2P] = {0, VFM_PHASE_ROLLBACK, src_recover_p2p},
    [MIG_BACK_RUN] = {0, VFM_PHASE_ROLLBACK, src_recover_run},
    [MIG_RESET_DST] = {1, VFM_PHASE_ROLLBACK, dst_reset},
};

/* The sender at switchover: quiesce, stop, save. */
const enum mig_step_id mig_plan_switchover[] = {MIG_QUIESCE, MIG_STOP_NON_P2P, MIG_SAVE,
                                                MIG_STEP_END};
/* The receiver before the state comes, and once it has all come. */
const enum mig_step_id mig_plan_resume[] = {MIG_RESUME, MIG_STEP_END};
const enum mig_step_id mig_plan_load[] = {MIG_LOAD, MIG_STEP_END};
/* ... and, committed, the start: every destination accepts P2P before any
 * issues it */
const enum mig_step_id mig_plan_start[] = {MIG_START_P2P, MIG_START, MIG_STEP_END};
/* The sender once the receiver says its devices run. */
const enum mig_step_id mig_plan_finish[] = {MIG_FINISH, MIG_STEP_END};
/* The sender after any failure, and the receiver. */
const enum mig_step_id mig_plan_rollback[] = {MIG_BACK_P2P, MIG_BACK_RUN, MIG_STEP_END};
const enum mig_step_id mig_plan_discard[] = {MIG_RESET_DST, MIG_STEP_END};

int mig_run_plan(struct mig *m, const enum mig_step_id *plan, bool all, int64_t *t)
{
    int ret = 0;

    for (; *plan != MIG_STEP_END; plan++) {
        const struct mig_step *s = &steps[*plan];
        int r = mig_parallel(m, s->fn);

        if (t) {
            int64_t now = mig_now_ns();
            m->rep->phase_ns[s->phase] += now - *t;
            *t = now;
        }
        ret = ret ? ret : r;
        if (ret && !all)
            break;
    }
    return ret;
}
