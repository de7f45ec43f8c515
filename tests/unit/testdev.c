/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testdev.h"

/* The content's own format: 4-byte magic then data. load() refuses content
 * without it, to test a device-level refusal. */
#define CONTENT_MAGIC 0x21544e43u

static int enter(struct testdev *t, enum tcb cb)
{
    int now = atomic_fetch_add(&t->inside, 1) + 1;
    int max = atomic_load(&t->max_inside);

    while (now > max && !atomic_compare_exchange_weak(&t->max_inside, &max, now))
        ;
    t->calls[cb]++;
    t->log[t->nlog++ % 64] = cb;
    if (t->slow_us)
        usleep(t->slow_us);
    if (t->reset_inside) {
        t->reset_inside = false;
        t->reset_inside_ret = vfm_device_reset(t->dev);
    }
    if ((int)cb == t->fail_cb) {
        if (t->fail_after > 0) {
            t->fail_after--;
            return 0;
        }
        if (t->fail_broken)
            vfm_device_mark_broken(t->dev);
        return t->fail_err;
    }
    return 0;
}

static int leave(struct testdev *t, int ret)
{
    atomic_fetch_sub(&t->inside, 1);
    return ret;
}

#define ARC_CB(fn, id)                                                                             \
    static int fn(struct vfm_device *dev, void *priv)                                              \
    {                                                                                              \
        (void)dev;                                                                                 \
        return leave(priv, enter(priv, id));                                                       \
    }
ARC_CB(t_run_stop, TCB_RUN_STOP)
ARC_CB(t_stop_run, TCB_STOP_RUN)
ARC_CB(t_sc_stop, TCB_SC_STOP)
ARC_CB(t_stop_res, TCB_STOP_RES)
ARC_CB(t_run_p2p, TCB_RUN_P2P)
ARC_CB(t_p2p_run, TCB_P2P_RUN)
ARC_CB(t_p2p_stop, TCB_P2P_STOP)
ARC_CB(t_stop_p2p, TCB_STOP_P2P)

static int t_save(struct vfm_device *dev, void *priv, struct vfm_buf *out)
{
    struct testdev *t = priv;
    int ret = enter(t, TCB_SAVE);
    (void)dev;
    if (!ret)
        ret = vfm_buf_append(out, t->content, sizeof(t->content));
    return leave(t, ret);
}

static int t_load(struct vfm_device *dev, void *priv, const void *data, size_t len)
{
    struct testdev *t = priv;
    int ret = enter(t, TCB_LOAD);
    uint32_t magic;
    (void)dev;

    if (!ret && len != sizeof(t->content))
        ret = -EINVAL;
    if (!ret) {
        memcpy(&magic, data, 4);
        if (magic != CONTENT_MAGIC)
            ret = -EINVAL;
    }
    if (!ret)
        memcpy(t->content, data, len);
    return leave(t, ret);
}

static int t_reset(struct vfm_device *dev, void *priv)
{
    struct testdev *t = priv;
    (void)dev;
    return leave(t, enter(t, TCB_RESET));
}

static int t_data_size(struct vfm_device *dev, void *priv, uint64_t *bytes)
{
    struct testdev *t = priv;
    int ret = enter(t, TCB_DATA_SIZE);
    (void)dev;
    *bytes = sizeof(t->content);
    return leave(t, ret);
}

static const struct vfm_mig_ops mig_ops = {
    .save = t_save,
    .load = t_load,
    .running_to_stop = t_run_stop,
    .stop_to_running = t_stop_run,
    .stop_copy_to_stop = t_sc_stop,
    .stop_to_resuming = t_stop_res,
    .reset = t_reset,
    .data_size = t_data_size,
};

static const struct vfm_p2p_ops p2p_ops = {
    .running_to_running_p2p = t_run_p2p,
    .running_p2p_to_running = t_p2p_run,
    .running_p2p_to_stop = t_p2p_stop,
    .stop_to_running_p2p = t_stop_p2p,
};

struct testdev *testdev_new(const char *name, bool p2p, uint32_t seed)
{
    return testdev_new_compat(name, p2p, seed, TESTDEV_COMPAT);
}

struct testdev *testdev_new_compat(const char *name, bool p2p, uint32_t seed, uint32_t compat)
{
    return testdev_new_max(name, p2p, seed, compat, 0);
}

struct testdev *testdev_new_max(const char *name, bool p2p, uint32_t seed, uint32_t compat,
                                uint64_t max_state)
{
    struct testdev *t = calloc(1, sizeof(*t));
    struct vfm_device_config cfg = {
        .version = VFM_DEVICE_CONFIG_VERSION,
        .name = name,
        .compat = compat,
        .mig = &mig_ops,
        .p2p = p2p ? &p2p_ops : NULL,
        .priv = t,
        .max_state_size = max_state,
    };
    uint32_t magic = CONTENT_MAGIC;

    if (!t)
        return NULL;
    t->fail_cb = -1;
    for (size_t i = 0; i < sizeof(t->content); i++)
        t->content[i] = (uint8_t)(seed * 31 + i * 7);
    memcpy(t->content, &magic, 4);
    if (vfm_device_new(&cfg, &t->dev)) {
        free(t);
        return NULL;
    }
    return t;
}

void testdev_free(struct testdev *t)
{
    if (!t)
        return;
    vfm_device_free(t->dev);
    free(t);
}

void testdev_clear_log(struct testdev *t)
{
    memset(t->calls, 0, sizeof(t->calls));
    t->nlog = 0;
}

enum tcb testdev_arc_cb(uint32_t from, uint32_t to)
{
    static const struct {
        uint32_t from, to;
        enum tcb cb;
    } map[] = {
        {VFM_STATE_STOP, VFM_STATE_STOP_COPY, TCB_SAVE},
        {VFM_STATE_RESUMING, VFM_STATE_STOP, TCB_LOAD},
        {VFM_STATE_RUNNING, VFM_STATE_STOP, TCB_RUN_STOP},
        {VFM_STATE_STOP, VFM_STATE_RUNNING, TCB_STOP_RUN},
        {VFM_STATE_STOP_COPY, VFM_STATE_STOP, TCB_SC_STOP},
        {VFM_STATE_STOP, VFM_STATE_RESUMING, TCB_STOP_RES},
        {VFM_STATE_RUNNING, VFM_STATE_RUNNING_P2P, TCB_RUN_P2P},
        {VFM_STATE_RUNNING_P2P, VFM_STATE_RUNNING, TCB_P2P_RUN},
        {VFM_STATE_RUNNING_P2P, VFM_STATE_STOP, TCB_P2P_STOP},
        {VFM_STATE_STOP, VFM_STATE_RUNNING_P2P, TCB_STOP_P2P},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (map[i].from == from && map[i].to == to)
            return map[i].cb;
    return TCB_COUNT;
}
