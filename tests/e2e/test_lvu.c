/* SPDX-License-Identifier: MIT */
/*
 * vfiomig's client and engine against servers that behave as libvfio-user's
 * do (tests/emul/lvu_emul.c, written from behaviours observed on the real
 * library): the emulation's own behaviours first (so a change to it that
 * makes it kinder than the real peer fails here), then live migrations of
 * a VM holding a libvfio-user device and a vfiomig device, there with
 * pre-copy and back with stop-copy, at every state size from 0 B to 1 GiB.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include <vfiomig/migrate.h>

#include "procs.h"

/* lvu-emul's BAR0 registers */
#define REG_SIZE 0x0
#define REG_SEED 0x8
#define REG_DIGEST 0x10
#define REG_LOADS 0x18

static uint64_t reg(struct vfm_vu_client *c, uint32_t off)
{
    uint64_t v = 0;
    assert_int_equal(vfm_vu_client_region_read(c, 0, off, &v, sizeof(v)), 0);
    return v;
}

static void start_emul(struct server_proc *sp, const char *tag, unsigned long long size,
                       unsigned seed, struct vfm_vu_client **c)
{
    char sz[32], sd[32];

    snprintf(sz, sizeof(sz), "%llu", size);
    snprintf(sd, sizeof(sd), "%u", seed);
    assert_int_equal(emul_start(sp, tag, "--size", sz, "--seed", sd, NULL), 0);
    if (client_connect(sp, c)) {
        print_message("# %s (%llu bytes) did not start\n", tag, size);
        fail();
    }
}

static void stop_emul(struct server_proc *sp, struct vfm_vu_client *c)
{
    vfm_vu_client_free(c);
    /* it exits by itself once its client has left, as libvfio-user's
     * samples do */
    assert_int_equal(proc_wait(sp, 10000), 0);
}

/* The behaviours vfiomig must cope with, as observed on libvfio-user. */
static void test_emulation_behaves_as_libvfio_user(void **state)
{
    struct server_proc sp;
    struct vfm_vu_client *c;
    struct vfm_endpoint *ep;
    uint8_t buf[64];
    uint64_t size, a, b;
    uint32_t flags, st;
    (void)state;

    start_emul(&sp, "behaviours", 100, 3, &c);
    ep = vfm_vu_client_endpoint(c);
    /* 0.2 answers our 0.1 with 0.1; none of vfiomig's extensions */
    assert_int_equal(vfm_vu_client_info(c)->minor, 1);
    assert_false(vfm_vu_client_info(c)->server_caps.whole_bodies);
    assert_false(vfm_vu_client_info(c)->server_caps.precopy_info);
    /* PRE_COPY advertised, no P2P; no MIG_DATA_SIZE, no precopy info */
    assert_int_equal(vfm_ep_flags(ep, &flags), 0);
    assert_int_equal(flags, VFM_MIGRATION_STOP_COPY | VFM_MIGRATION_PRE_COPY);
    assert_int_equal(vfm_ep_data_size(ep, &size), -ENOTTY);
    /* data calls outside a session: EINVAL (the kernel says ENODEV) */
    assert_int_equal(vfm_ep_read(ep, buf, sizeof(buf)), -EINVAL);
    assert_int_equal(vfm_ep_write(ep, buf, 8), -EINVAL);
    /* reset in RUNNING works; in PRE_COPY it answers success and the
     * migration state stays */
    assert_int_equal(vfm_ep_reset(ep), 0);
    assert_int_equal(vfm_ep_set_state(ep, VFM_STATE_PRE_COPY), 0);
    assert_int_equal(vfm_ep_precopy_info(ep, &a, &b), -ENOTTY);
    /* pre-copy: the whole state, a short (padded) reply at its end, then
     * nothing for now */
    assert_int_equal(vfm_ep_read(ep, buf, sizeof(buf)), 64);
    assert_int_equal(vfm_ep_read(ep, buf, sizeof(buf)), 36);
    assert_int_equal(vfm_ep_read(ep, buf, sizeof(buf)), -ENOMSG);
    assert_int_equal(vfm_ep_reset(ep), 0);
    assert_int_equal(vfm_ep_get_state(ep, &st), 0);
    assert_int_equal(st, VFM_STATE_PRE_COPY);
    /* STOP_COPY: region access refused; reset refused (EINVAL) */
    assert_int_equal(vfm_ep_set_state(ep, VFM_STATE_STOP_COPY), 0);
    assert_int_equal(vfm_vu_client_region_read(c, 0, 0, &a, sizeof(a)), -EINVAL);
    assert_int_equal(vfm_ep_reset(ep), -EINVAL);
    assert_int_equal(vfm_ep_read(ep, buf, sizeof(buf)), 0); /* pre-copy sent it all */
    /* STOP: reset refused too */
    assert_int_equal(vfm_ep_set_state(ep, VFM_STATE_STOP), 0);
    assert_int_equal(vfm_ep_reset(ep), -EINVAL);
    /* RESUMING: reset answers success, the state stays */
    assert_int_equal(vfm_ep_set_state(ep, VFM_STATE_RESUMING), 0);
    assert_int_equal(vfm_ep_reset(ep), 0);
    assert_int_equal(vfm_ep_get_state(ep, &st), 0);
    assert_int_equal(st, VFM_STATE_RESUMING);
    /* an incomplete load is refused, the device stays in RESUMING */
    assert_int_equal(vfm_ep_write(ep, buf, 10), 10);
    assert_int_equal(vfm_ep_set_state(ep, VFM_STATE_STOP), -EINVAL);
    assert_int_equal(vfm_ep_get_state(ep, &st), 0);
    assert_int_equal(st, VFM_STATE_RESUMING);
    /* no P2P states */
    assert_int_equal(vfm_ep_set_state(ep, VFM_STATE_RUNNING_P2P), -EINVAL);
    stop_emul(&sp, c);
}

/* A raw connection, for what the client library never sends. */
static int raw_connect(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = 20};
    int fd = -1;

    strcpy(a.sun_path, path);
    for (int i = 0; i < 300; i++) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
            break;
        close(fd);
        fd = -1;
        usleep(10000);
    }
    assert_true(fd >= 0);
    /* a server that stops answering fails the test instead of hanging it */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

static void raw_send(int fd, const void *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        p = (const char *)p + w;
        n -= (size_t)w;
    }
}

/* Reads one reply: its header, and its payload into @buf (dropped past
 * @cap). */
static void raw_reply(int fd, struct vfm_vu_hdr *h, void *buf, size_t cap)
{
    uint8_t sink[4096];
    size_t left;

    assert_int_equal(recv(fd, h, sizeof(*h), MSG_WAITALL), (ssize_t)sizeof(*h));
    assert_true(h->msg_size >= sizeof(*h));
    left = h->msg_size - sizeof(*h);
    while (left) {
        size_t k = left < sizeof(sink) ? left : sizeof(sink);
        ssize_t r = recv(fd, sink, k, MSG_WAITALL);
        assert_true(r > 0);
        if (cap) {
            size_t c = (size_t)r < cap ? (size_t)r : cap;
            memcpy(buf, sink, c);
            buf = (char *)buf + c;
            cap -= c;
        }
        left -= (size_t)r;
    }
}

static void raw_call(int fd, uint16_t id, uint16_t cmd, const void *p, size_t n,
                     struct vfm_vu_hdr *rep)
{
    struct vfm_vu_hdr h = {.msg_id = id, .cmd = cmd, .msg_size = (uint32_t)(sizeof(h) + n)};

    raw_send(fd, &h, sizeof(h));
    raw_send(fd, p, n);
    raw_reply(fd, rep, NULL, 0);
}

/* The reason for VFM_VU_SAFE_BODY: a server built on libvfio-user reads a
 * body with one recv(), so a body that has not all arrived when it reads
 * (here: sent in two parts, 100 ms apart; in real use, any body larger
 * than what the socket queues in one piece) is refused, and the rest of it
 * is read as headers. */
static void test_emulation_loses_framing_on_split_bodies(void **state)
{
    static const char caps[] = "{\"capabilities\":{\"max_data_xfer_size\":1048576}}";
    struct server_proc sp;
    struct vfm_vu_hdr rep, h;
    uint8_t ver[4 + sizeof(caps)] = {0, 0, 1, 0};
    struct {
        struct vfm_vu_feature f;
        struct vfm_vu_mig_state ms;
    } __attribute__((packed))
    set = {{sizeof(set), VFM_FEATURE_MIG_DEVICE_STATE | VFM_FEATURE_SET}, {VFM_STATE_RESUMING, -1}};
    size_t body = 64u << 10;
    uint8_t *msg = calloc(1, sizeof(struct vfm_vu_mig_data) + body);
    struct vfm_vu_mig_data *m = (struct vfm_vu_mig_data *)msg;
    int fd;
    (void)state;

    assert_non_null(msg);
    memcpy(ver + 4, caps, sizeof(caps));
    assert_int_equal(emul_start(&sp, "framing", "--size", "1048576", NULL), 0);
    fd = raw_connect(sp.path);
    raw_call(fd, 1, VFM_VU_VERSION, ver, sizeof(ver), &rep);
    assert_false(rep.flags & VFM_VU_ERROR);
    raw_call(fd, 2, VFM_VU_DEVICE_FEATURE, &set, sizeof(set), &rep);
    assert_false(rep.flags & VFM_VU_ERROR);
    /* a 64 KiB MIG_DATA_WRITE, its body in two parts */
    m->argsz = (uint32_t)(sizeof(*m) + body);
    m->size = (uint32_t)body;
    h = (struct vfm_vu_hdr){.msg_id = 3,
                            .cmd = VFM_VU_MIG_DATA_WRITE,
                            .msg_size = (uint32_t)(sizeof(h) + sizeof(*m) + body)};
    raw_send(fd, &h, sizeof(h));
    raw_send(fd, msg, sizeof(*m) + 4096);
    usleep(100000);
    raw_send(fd, msg + sizeof(*m) + 4096, body - 4096);
    raw_reply(fd, &rep, NULL, 0);
    assert_int_equal(rep.msg_id, 3);
    assert_true(rep.flags & VFM_VU_ERROR);
    assert_int_equal(rep.error, EINVAL);
    /* the rest of the body (zeros) is now headers to it: replies to
     * messages nobody sent (msg_id 0, command 0) */
    raw_reply(fd, &rep, NULL, 0);
    assert_int_equal(rep.msg_id, 0);
    assert_int_equal(rep.cmd, 0);
    assert_true(rep.flags & VFM_VU_ERROR);
    close(fd);
    free(msg);
    assert_int_equal(proc_wait(&sp, 10000), 0);
}

/* One VM of a libvfio-user device (@size bytes of state) and a vfiomig
 * ticker, migrated there with pre-copy and back with stop-copy; the
 * libvfio-user device's state arrives intact both times. */
static void migrate_both_ways(unsigned long long size)
{
    struct server_proc e[2], t[2];
    struct vfm_vu_client *ce[2], *ct[2];
    struct vfm_endpoint *src[2], *dst[2];
    struct vfm_mig_config cfg = {.ndev = 2};
    struct vfm_mig_report rep;
    uint64_t d0;

    start_emul(&e[0], "lvu-a", size, 11, &ce[0]);
    start_emul(&e[1], "lvu-b", size, 22, &ce[1]);
    assert_int_equal(server_start(&t[0], "tick-a", "--device", "ticker", "--mem", "64K", NULL), 0);
    assert_int_equal(server_start(&t[1], "tick-b", "--device", "ticker", "--mem", "64K", NULL), 0);
    assert_int_equal(client_connect(&t[0], &ct[0]), 0);
    assert_int_equal(client_connect(&t[1], &ct[1]), 0);
    d0 = reg(ce[0], REG_DIGEST);
    assert_int_equal(reg(ce[0], REG_SIZE), size);
    if (size)
        assert_int_not_equal(reg(ce[1], REG_DIGEST), d0); /* another seed */

    for (int k = 0; k < 2; k++) {
        /* k = 0: a -> b with pre-copy; k = 1: b -> a, stop-copy */
        src[0] = vfm_vu_client_endpoint(ce[k]);
        src[1] = vfm_vu_client_endpoint(ct[k]);
        dst[0] = vfm_vu_client_endpoint(ce[1 - k]);
        dst[1] = vfm_vu_client_endpoint(ct[1 - k]);
        cfg.src = src;
        cfg.dst = dst;
        cfg.no_precopy = k == 1;
        if (vfm_migrate_local(&cfg, &rep)) {
            print_message("# %llu bytes, way %d: %s\n", size, k, rep.message);
            fail();
        }
        assert_int_equal(vfm_mig_report_device(&rep, 0)->bytes, size);
        if (reg(ce[1 - k], REG_DIGEST) != d0)
            print_message("# %llu bytes, way %d: digest differs\n", size, k);
        assert_int_equal(reg(ce[1 - k], REG_DIGEST), d0);
        assert_int_equal(reg(ce[1 - k], REG_LOADS), 1);
        if (k == 0) {
            /* honest pre-copy: the libvfio-user device says nothing of what
             * is left, so no convergence and no expected downtime are
             * claimed; every byte it had went while the VM ran */
            assert_int_equal(rep.precopy_devices, 1);
            assert_int_equal(rep.precopy_estimate, VFM_MIG_EST_NONE);
            assert_false(rep.precopy_converged);
            assert_true(rep.expected_downtime_ns < 0);
            assert_true(rep.precopy_drained);
            assert_int_equal(rep.precopy_bytes, size);
            assert_true(rep.precopy_rounds >= 1 && rep.precopy_rounds <= 2);
        } else {
            assert_int_equal(rep.precopy_rounds, 0);
        }
        vfm_mig_report_free(&rep);
    }
    for (int i = 0; i < 2; i++) {
        stop_emul(&e[i], ce[i]);
        vfm_vu_client_free(ct[i]);
        assert_int_equal(server_stop(&t[i]), 0);
    }
}

static void test_migrations_every_size(void **state)
{
    static const unsigned long long sizes[] = {0,        4096,      256u << 10,
                                               1u << 20, 64u << 20, 1ull << 30};
    const char *max_env = getenv("LVU_MAX_SIZE");
    unsigned long long max = max_env ? strtoull(max_env, NULL, 0) : 1ull << 30;
    (void)state;

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        if (sizes[i] > max) {
            print_message("# %llu bytes: skipped in this build (LVU_MAX_SIZE %llu)\n", sizes[i],
                          max);
            continue;
        }
        migrate_both_ways(sizes[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_emulation_behaves_as_libvfio_user),
        cmocka_unit_test(test_emulation_loses_framing_on_split_bodies),
        cmocka_unit_test(test_migrations_every_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
