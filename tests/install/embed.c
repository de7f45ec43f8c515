/* SPDX-License-Identifier: MIT */
/*
 * A program a VMM author would write, built against the installed library
 * with nothing but `pkg-config --cflags --libs vfiomig` (tests/install/
 * run.sh): two devices with P2P, each served over vfio-user on a socket
 * pair the program made (the servers adopt one end, the clients the
 * other), migrated together to two fresh devices, and the state checked
 * on arrival. Public headers only.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vfiomig/device.h>
#include <vfiomig/endpoint.h>
#include <vfiomig/migrate.h>
#include <vfiomig/vfio_user.h>

#define NDEV 2
#define STATE_BYTES 65536

struct dev {
    struct vfm_device *dev;
    struct vfm_dma *dma;
    struct vfm_server *srv;
    pthread_t thread;
    struct vfm_vu_client *client;
    unsigned char state[STATE_BYTES];
};

static int save(struct vfm_device *d, void *priv, struct vfm_buf *out)
{
    struct dev *x = priv;
    (void)d;
    return vfm_buf_append(out, x->state, sizeof(x->state));
}

static int load(struct vfm_device *d, void *priv, const void *data, size_t len)
{
    struct dev *x = priv;
    (void)d;
    if (len != sizeof(x->state))
        return -EINVAL;
    memcpy(x->state, data, len);
    return 0;
}

static int arc(struct vfm_device *d, void *priv)
{
    (void)d;
    (void)priv;
    return 0;
}

static int reset(struct vfm_device *d, void *priv)
{
    struct dev *x = priv;
    (void)d;
    memset(x->state, 0, sizeof(x->state));
    return 0;
}

static const struct vfm_mig_ops mig_ops = {.save = save, .load = load, .reset = reset};
static const struct vfm_p2p_ops p2p_ops = {arc, arc, arc, arc};

static void *serve(void *arg)
{
    return (void *)(long)vfm_server_run(arg);
}

static int dev_up(struct dev *x, const char *name, unsigned seed)
{
    struct vfm_device_config dc = {.version = VFM_DEVICE_CONFIG_VERSION,
                                   .name = name,
                                   .compat = 0x454d4244u,
                                   .mig = &mig_ops,
                                   .p2p = &p2p_ops,
                                   .priv = x};
    struct vfm_server_config sc = {0};
    int sv[2], ret;

    for (size_t i = 0; i < sizeof(x->state); i++)
        x->state[i] = seed ? (unsigned char)(i * seed + seed) : 0;
    if ((ret = vfm_device_new(&dc, &x->dev)) || (ret = vfm_dma_new(8, &x->dma)))
        return ret;
    sc.dev = x->dev;
    sc.dma = x->dma;
    if ((ret = vfm_server_new(&sc, &x->srv)))
        return ret;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
        return -errno;
    if ((ret = vfm_server_adopt(x->srv, sv[0])))
        return ret;
    if ((ret = -pthread_create(&x->thread, NULL, serve, x->srv)))
        return ret;
    return vfm_vu_client_adopt(sv[1], name, 0, 10000, &x->client);
}

static void dev_down(struct dev *x)
{
    vfm_vu_client_free(x->client);
    vfm_server_stop(x->srv);
    pthread_join(x->thread, NULL);
    vfm_server_free(x->srv);
    vfm_dma_free(x->dma);
    vfm_device_free(x->dev);
}

int main(void)
{
    static struct dev src[NDEV], dst[NDEV];
    struct vfm_endpoint *s[NDEV], *d[NDEV];
    struct vfm_mig_config cfg = {
        .src = s, .dst = d, .ndev = NDEV};
    struct vfm_mig_report rep;
    char *json;
    int ret;

    printf("vfiomig %s\n", vfm_version());
    for (unsigned i = 0; i < NDEV; i++) {
        char name[32];
        snprintf(name, sizeof(name), "src%u", i);
        if ((ret = dev_up(&src[i], name, 3 + i))) {
            fprintf(stderr, "%s: %s\n", name, vfm_strerror(ret));
            return 1;
        }
        snprintf(name, sizeof(name), "dst%u", i);
        if ((ret = dev_up(&dst[i], name, 0))) {
            fprintf(stderr, "%s: %s\n", name, vfm_strerror(ret));
            return 1;
        }
        s[i] = vfm_vu_client_endpoint(src[i].client);
        d[i] = vfm_vu_client_endpoint(dst[i].client);
    }
    ret = vfm_migrate_local(&cfg, &rep);
    json = vfm_mig_report_json(&rep, "migrate", ret);
    printf("%s\n", json ? json : "(no memory)");
    free(json);
    vfm_mig_report_free(&rep);
    if (ret) {
        fprintf(stderr, "migration failed: %s\n", vfm_strerror(ret));
        return 1;
    }
    for (unsigned i = 0; i < NDEV; i++) {
        if (memcmp(src[i].state, dst[i].state, STATE_BYTES)) {
            fprintf(stderr, "dst%u: the state differs from src%u's\n", i, i);
            return 1;
        }
        if (vfm_device_get_state(dst[i].dev) != VFM_STATE_RUNNING ||
            vfm_device_get_state(src[i].dev) != VFM_STATE_STOP) {
            fprintf(stderr, "dev %u: src in %s, dst in %s\n", i,
                    vfm_state_str(vfm_device_get_state(src[i].dev)),
                    vfm_state_str(vfm_device_get_state(dst[i].dev)));
            return 1;
        }
    }
    for (unsigned i = 0; i < NDEV; i++) {
        dev_down(&src[i]);
        dev_down(&dst[i]);
    }
    printf("migrated %d devices, %d bytes of state each\n", NDEV, STATE_BYTES);
    return 0;
}
