/* SPDX-License-Identifier: MIT */
/*
 * vfm_ep_open() (include/vfiomig/open.h): every malformed spec refused
 * before anything is opened; a vfio-user spec gives an endpoint that owns
 * its client (freeing it ends the connection, which the server sees); the
 * endpoint's region calls reach the device's BAR; an fd handed over is the
 * endpoint's, and is closed when it is not a VFIO device (the real kernel's
 * answer to VFIO_DEVICE_GET_INFO on /dev/null).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <vfiomig/open.h>
#include <vfiomig/vfio_user.h>

#include "testdev.h"

static void bad_specs(void **state)
{
    static const char *const bad[] = {
        "",
        "vfio-user:",
        "vfio-group:/dev/vfio/3",
        "vfio-group::dev",
        "vfio-group:/dev/vfio/3:",
        "vfio-cdev:",
        "vfio-fd:",
        "vfio-fd:abc",
        "vfio-fd:-1",
        "vfio-fd:12x",
        "vfio-fd:99999999999",
        "vfio-cdev-fd:",
    };
    struct vfm_endpoint *ep = NULL;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int ret = vfm_ep_open(bad[i], 0, &ep);
        if (ret != -EINVAL)
            fail_msg("'%s': %d (%s), not -EINVAL", bad[i], ret, vfm_err_name(ret));
    }
    assert_int_equal(vfm_ep_open(NULL, 0, &ep), -EINVAL);
    /* a socket nobody listens on */
    assert_int_equal(vfm_ep_open("vfio-user:/nonexistent/vfiomig.sock", 500, &ep), -ENOENT);
}

static void fds_handed_over(void **state)
{
    struct vfm_endpoint *ep = NULL;
    char spec[32];
    int fd;

    (void)state;
    /* not an open fd */
    fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    close(fd);
    snprintf(spec, sizeof(spec), "vfio-fd:%d", fd);
    assert_int_equal(vfm_ep_open(spec, 0, &ep), -EBADF);
    /* an fd that is not a VFIO device: refused, and closed (it was given) */
    fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    snprintf(spec, sizeof(spec), "vfio-fd:%d", fd);
    assert_int_equal(vfm_ep_open(spec, 0, &ep), -ENOTTY);
    assert_int_equal(fcntl(fd, F_GETFD), -1);
    /* a cdev to bind that is none: an error, and closed too */
    fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    snprintf(spec, sizeof(spec), "vfio-cdev-fd:%d", fd);
    assert_true(vfm_ep_open(spec, 0, &ep) < 0);
    assert_int_equal(fcntl(fd, F_GETFD), -1);
}

static void *serve(void *arg)
{
    return (void *)(intptr_t)vfm_server_run(arg);
}

static void vfio_user_spec(void **state)
{
    struct testdev *td = testdev_new("opened", true, 11);
    struct vfm_server_config cfg = {0};
    struct vfm_server *srv;
    struct vfm_dma *dma;
    struct vfm_endpoint *ep, *local;
    char dir[] = "/tmp/vfiomig-open-XXXXXX", path[64], spec[80];
    uint8_t bar[256], got[16];
    uint32_t st;
    pthread_t th;

    (void)state;
    assert_non_null(td);
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/dev.sock", dir);
    for (size_t i = 0; i < sizeof(bar); i++)
        bar[i] = (uint8_t)(i * 3);
    assert_int_equal(vfm_dma_new(4, &dma), 0);
    cfg.socket_path = path;
    cfg.dev = td->dev;
    cfg.dma = dma;
    cfg.nregions = 1;
    cfg.regions[0] = (struct vfm_server_region){
        .size = sizeof(bar), .flags = VFM_VU_REGION_READ_FLAG | VFM_VU_REGION_WRITE_FLAG,
        .fd = -1, .mem = bar};
    assert_int_equal(vfm_server_new(&cfg, &srv), 0);
    assert_int_equal(pthread_create(&th, NULL, serve, srv), 0);

    snprintf(spec, sizeof(spec), "vfio-user:%s", path);
    assert_int_equal(vfm_ep_open(spec, 5000, &ep), 0);
    assert_string_equal(vfm_ep_name(ep), path);
    assert_int_equal(vfm_ep_get_state(ep, &st), 0);
    assert_int_equal(st, VFM_STATE_RUNNING);
    /* the BAR through the endpoint */
    assert_int_equal(vfm_ep_region_read(ep, 0, 16, got, sizeof(got)), 0);
    assert_memory_equal(got, bar + 16, sizeof(got));
    assert_int_equal(vfm_ep_region_write(ep, 0, 100, "\x42\x43", 2), 0);
    assert_int_equal(bar[100], 0x42);
    assert_int_equal(vfm_ep_region_read(ep, 0, sizeof(bar) - 1, got, 2), -EINVAL);
    assert_int_equal(vfm_ep_set_state(ep, VFM_STATE_STOP), 0);
    /* the endpoint owns the client: freeing it ends the connection, and the
     * server takes the next client (a bare path is a vfio-user spec) */
    vfm_ep_free(ep);
    assert_int_equal(vfm_ep_open(path, 5000, &ep), 0);
    assert_int_equal(vfm_ep_get_state(ep, &st), 0);
    assert_int_equal(st, VFM_STATE_STOP); /* the runtime's release policy kept it */
    vfm_ep_free(ep);
    /* an in-process device has no regions */
    assert_int_equal(vfm_ep_local_new(td->dev, &local), 0);
    assert_int_equal(vfm_ep_region_read(local, 0, 0, got, 1), -ENOTTY);
    vfm_ep_free(local);

    vfm_server_stop(srv);
    assert_int_equal(pthread_join(th, NULL), 0);
    vfm_server_free(srv);
    vfm_dma_free(dma);
    testdev_free(td);
    assert_int_equal(rmdir(dir), 0); /* the server removed its socket */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_specs),
        cmocka_unit_test(fds_handed_over),
        cmocka_unit_test(vfio_user_spec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
