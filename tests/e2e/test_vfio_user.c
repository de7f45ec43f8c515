/* SPDX-License-Identifier: MIT */
/*
 * vfio-user end to end, with real server processes (`vfiomig serve`) and the
 * library's client: every path a device's flags allow, save in one process
 * and restore in another with identical counters, two mailboxes exchanging
 * messages through each other's shared-memory BARs, a libvfio-user-like
 * server (padded replies, no MIG_DATA_SIZE), a second client refused, and a
 * client vanishing mid-migration.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <vfiomig/fsm.h>
#include <vfiomig/pci.h>

#include "large.h"
#include "mailbox.h"
#include "procs.h"
#include "vfio_user/client.h" /* vfm_vu_client_raw(): a probe only tests make */

static uint64_t reg64(struct vfm_vu_client *c, uint32_t off)
{
    uint64_t v = 0;
    assert_int_equal(vfm_vu_client_region_read(c, MB_REGION_REGS, off, &v, 8), 0);
    return v;
}

static void set_reg32(struct vfm_vu_client *c, uint32_t off, uint32_t v)
{
    assert_int_equal(vfm_vu_client_region_write(c, MB_REGION_REGS, off, &v, 4), 0);
}

/* Reads a whole save session. Return: malloc'd bytes, *len. */
static void set_reg64(struct vfm_vu_client *c, uint32_t off, uint64_t v)
{
    assert_int_equal(vfm_vu_client_region_write(c, MB_REGION_REGS, off, &v, 8), 0);
}

/* Sets @bits in the command register of the config space (as a driver). */
static void command_set(struct vfm_vu_client *c, uint16_t bits)
{
    uint16_t cmd;
    assert_int_equal(vfm_vu_client_region_read(c, VFM_PCI_CONFIG_REGION, 4, &cmd, 2), 0);
    cmd |= bits;
    assert_int_equal(vfm_vu_client_region_write(c, VFM_PCI_CONFIG_REGION, 4, &cmd, 2), 0);
}

/* SET_IRQS on INTx: @action with an eventfd (TRIGGER) or none (UNMASK). */
static void intx_set(struct vfm_vu_client *c, uint32_t action, int efd)
{
    struct vfm_vu_irq_set q = {.argsz = sizeof(q), .index = VFM_PCI_INTX_IRQ, .count = 1};
    size_t got;
    q.flags = action | (efd >= 0 ? VFM_VU_IRQ_SET_DATA_EVENTFD : VFM_VU_IRQ_SET_DATA_NONE);
    assert_int_equal(vfm_vu_client_raw(c, VFM_VU_DEVICE_SET_IRQS, &q, sizeof(q), &efd,
                                       efd >= 0 ? 1 : 0, NULL, 0, &got),
                     0);
}

static uint8_t *read_all(struct vfm_endpoint *ep, size_t chunk, size_t *len)
{
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc(cap);
    ssize_t r;

    assert_non_null(buf);
    while ((r = vfm_ep_read(ep, buf + n, cap - n < chunk ? cap - n : chunk)) > 0) {
        n += (size_t)r;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    assert_int_equal(r, 0);
    *len = n;
    return buf;
}

static void write_all(struct vfm_endpoint *ep, const uint8_t *buf, size_t len, size_t chunk)
{
    for (size_t off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        assert_int_equal(vfm_ep_write(ep, buf + off, n), (ssize_t)n);
    }
}

/* Every (from, to) the device's flags allow, from every reachable state:
 * SET succeeds and GET agrees; refused requests leave the state. The
 * server @sp serves a device with @want_flags; @want_pairs is how many
 * requests must succeed. */
static void walk_server(struct server_proc *sp, const char *tag, uint32_t want_flags,
                        unsigned want_pairs)
{
    struct vfm_vu_client *c;
    struct vfm_endpoint *ep;
    uint8_t *stream;
    size_t len;
    uint32_t flags, st;
    unsigned walked = 0;

    assert_int_equal(client_connect(sp, &c), 0);
    ep = vfm_vu_client_endpoint(c);
    assert_int_equal(vfm_ep_flags(ep, &flags), 0);
    assert_int_equal(flags, want_flags);
    /* a valid state stream, to leave RESUMING with */
    assert_int_equal(vfm_ep_set_state(ep, VFM_STATE_STOP_COPY), 0);
    stream = read_all(ep, 4096, &len);

    for (uint32_t from = 1; from < VFM_STATE_COUNT; from++) {
        if (!vfm_fsm_state_supported(flags, from))
            continue;
        for (uint32_t to = 0; to < VFM_STATE_COUNT + 1; to++) {
            struct vfm_fsm_path path;
            int want = vfm_fsm_plan(flags, from, to, &path);

            assert_int_equal(vfm_ep_reset(ep), 0);
            assert_int_equal(vfm_ep_set_state(ep, from), 0);
            if (from == VFM_STATE_RESUMING)
                write_all(ep, stream, len, 1000);
            assert_int_equal(vfm_ep_get_state(ep, &st), 0);
            assert_int_equal(st, from);
            if (want) {
                assert_int_equal(vfm_ep_set_state(ep, to), -EINVAL);
            } else {
                if (vfm_ep_set_state(ep, to))
                    fail_msg("%s: %s -> %s failed", tag, vfm_state_str(from), vfm_state_str(to));
                walked++;
            }
            assert_int_equal(vfm_ep_get_state(ep, &st), 0);
            assert_int_equal(st, want ? from : to);
        }
    }
    assert_int_equal(walked, want_pairs);
    free(stream);
    vfm_vu_client_free(c);
    assert_int_equal(server_stop(sp), 0);
}

static void walk(const char *tag, int p2p)
{
    struct server_proc sp;

    assert_int_equal(server_start(&sp, tag, "--device", "p2p-mailbox", p2p ? "--name" : "--no-p2p",
                                  p2p ? "walker" : NULL, NULL),
                     0);
    /* every pair of the states it has */
    walk_server(&sp, tag,
                p2p ? (VFM_MIGRATION_STOP_COPY | VFM_MIGRATION_P2P) : VFM_MIGRATION_STOP_COPY,
                p2p ? 25u : 16u);
}

/* The large-state device has PRE_COPY: 7 states, all pairs but STOP_COPY
 * -> PRE_COPY[_P2P]; without P2P 5 states, all pairs but STOP_COPY ->
 * PRE_COPY. */
static void test_walk_precopy(void **state)
{
    struct server_proc sp;
    (void)state;

    assert_int_equal(server_start(&sp, "walk-pc", "--device", "large", "--mem", "256K", NULL), 0);
    walk_server(&sp, "walk-pc",
                VFM_MIGRATION_STOP_COPY | VFM_MIGRATION_P2P | VFM_MIGRATION_PRE_COPY, 47);
    assert_int_equal(
        server_start(&sp, "walk-pc-nop2p", "--device", "large", "--mem", "256K", "--no-p2p", NULL),
        0);
    walk_server(&sp, "walk-pc-nop2p", VFM_MIGRATION_STOP_COPY | VFM_MIGRATION_PRE_COPY, 24);
}

static uint64_t lg_reg(struct vfm_vu_client *c, uint32_t off)
{
    uint64_t v = 0;
    assert_int_equal(vfm_vu_client_region_read(c, LG_REGION_REGS, off, &v, 8), 0);
    return v;
}

/* Pre-copy between two processes through the client: the session rules as
 * the wire shows them (precopy info negotiated, ENOMSG at the temporary
 * end, the session going on through PRE_COPY_P2P into STOP_COPY, 0 only at
 * the end), while the source keeps writing its memory; the destination
 * loads the pre-copy data as it comes, and its own check (the digest of
 * its memory after the load against the source's at its stop) passes. */
static void test_precopy_processes(void **state)
{
    struct server_proc a, b;
    struct vfm_vu_client *ca, *cb;
    struct vfm_endpoint *ea, *eb;
    uint8_t *buf = malloc(1 << 20);
    uint64_t initial, dirty, sent = 0, writes0;
    uint32_t st;
    ssize_t n;
    (void)state;

    assert_non_null(buf);
    assert_int_equal(server_start(&a, "pc-src", "--device", "large", "--mem", "8M", "--dirty-rate",
                                  "400%", NULL),
                     0);
    assert_int_equal(server_start(&b, "pc-dst", "--device", "large", "--mem", "8M", NULL), 0);
    assert_int_equal(client_connect(&a, &ca), 0);
    assert_int_equal(client_connect(&b, &cb), 0);
    ea = vfm_vu_client_endpoint(ca);
    eb = vfm_vu_client_endpoint(cb);
    assert_true(vfm_vu_client_info(ca)->server_caps.precopy_info);
    assert_int_equal(vfm_ep_precopy_info(ea, &initial, &dirty), -EINVAL); /* RUNNING */
    assert_int_equal(vfm_ep_set_state(eb, VFM_STATE_RESUMING), 0);
    assert_int_equal(vfm_ep_set_state(ea, VFM_STATE_PRE_COPY), 0);
    assert_int_equal(vfm_ep_precopy_info(ea, &initial, &dirty), 0);
    assert_true(initial >= (8u << 20));
    writes0 = lg_reg(ca, LG_REG_WRITES);
    for (int round = 0; round < 3; round++) {
        while ((n = vfm_ep_read(ea, buf, 1 << 20)) > 0) {
            assert_int_equal(vfm_ep_write(eb, buf, (size_t)n), n);
            sent += (uint64_t)n;
        }
        assert_int_equal(n, -ENOMSG);
        /* the device runs on and dirties pages (a loaded machine may not
         * run its worker within 30 ms: up to 3 s) */
        for (int w = 0; w < 100; w++) {
            usleep(30000);
            assert_int_equal(vfm_ep_precopy_info(ea, &initial, &dirty), 0);
            if (dirty > 0)
                break;
        }
        assert_int_equal(initial, 0);
        assert_true(dirty > 0);
        if (round == 1) {
            assert_int_equal(vfm_ep_set_state(ea, VFM_STATE_PRE_COPY_P2P), 0);
            assert_int_equal(vfm_ep_precopy_info(ea, &initial, &dirty), 0);
        }
    }
    assert_true(lg_reg(ca, LG_REG_WRITES) > writes0);
    assert_true(lg_reg(ca, LG_REG_PRECOPY_BYTES) >= (8u << 20));
    assert_int_equal(vfm_ep_set_state(ea, VFM_STATE_STOP_COPY), 0);
    assert_int_equal(vfm_ep_precopy_info(ea, &initial, &dirty), -EINVAL);
    while ((n = vfm_ep_read(ea, buf, 1 << 20)) > 0) {
        assert_int_equal(vfm_ep_write(eb, buf, (size_t)n), n);
        sent += (uint64_t)n;
    }
    assert_int_equal(n, 0);
    assert_true(sent > (8u << 20)); /* the memory, and what changed again */
    /* the final state was only what pre-copy had not sent */
    assert_true(lg_reg(ca, LG_REG_FINAL_BYTES) < (8u << 20));
    assert_int_equal(vfm_ep_set_state(eb, VFM_STATE_STOP), 0);
    assert_int_equal(lg_reg(cb, LG_REG_DIGEST_LOADED), lg_reg(ca, LG_REG_DIGEST_SAVED));
    assert_int_equal(lg_reg(cb, LG_REG_DIGEST_NOW), lg_reg(ca, LG_REG_DIGEST_NOW));
    assert_int_equal(vfm_ep_set_state(eb, VFM_STATE_RUNNING), 0);
    assert_int_equal(vfm_ep_set_state(ea, VFM_STATE_STOP), 0);
    /* a client that vanishes in PRE_COPY_P2P: the session ends, the device
     * runs on (RUNNING_P2P) for the next client */
    assert_int_equal(vfm_ep_set_state(eb, VFM_STATE_PRE_COPY_P2P), 0);
    assert_true(vfm_ep_read(eb, buf, 4096) > 0);
    vfm_vu_client_free(cb);
    assert_int_equal(client_connect(&b, &cb), 0);
    eb = vfm_vu_client_endpoint(cb);
    assert_int_equal(vfm_ep_get_state(eb, &st), 0);
    assert_int_equal(st, VFM_STATE_RUNNING_P2P);
    assert_int_equal(vfm_ep_read(eb, buf, 4096), -ENODEV);
    free(buf);
    vfm_vu_client_free(ca);
    vfm_vu_client_free(cb);
    assert_int_equal(server_stop(&a), 0);
    assert_int_equal(server_stop(&b), 0);
}

static void test_walk_p2p(void **state)
{
    (void)state;
    walk("walk-p2p", 1);
}

static void test_walk_no_p2p(void **state)
{
    (void)state;
    walk("walk-nop2p", 0);
}

/* Save from one process, restore into another: registers (counters) and
 * the inbox bytes identical. */
static void test_save_restore(void **state)
{
    struct server_proc a, b;
    struct vfm_vu_client *ca, *cb;
    struct vfm_endpoint *ea, *eb;
    uint8_t regs_a[MB_REGS_SIZE], regs_b[MB_REGS_SIZE];
    uint8_t *inbox_a = malloc(MB_INBOX_SIZE), *inbox_b = malloc(MB_INBOX_SIZE);
    uint8_t *stream;
    size_t len;
    uint64_t size = 0;
    uint32_t st;
    (void)state;

    assert_int_equal(server_start(&a, "sr-a", "--device", "p2p-mailbox", NULL), 0);
    assert_int_equal(server_start(&b, "sr-b", "--device", "p2p-mailbox", NULL), 0);
    assert_int_equal(client_connect(&a, &ca), 0);
    assert_int_equal(client_connect(&b, &cb), 0);
    ea = vfm_vu_client_endpoint(ca);
    eb = vfm_vu_client_endpoint(cb);

    /* give the source a state of its own, as a driver programs it: index
     * 5, a peer, a status record address, interrupts on, bus master in its
     * config space (the destination is another process, another client) */
    set_reg32(ca, MB_REG_INDEX, 5);
    set_reg32(ca, MB_REG_INTERVAL, 777);
    set_reg64(ca, MB_REG_PEER(3), 0xfebe0000);
    set_reg64(ca, MB_REG_WRITEBACK, 0x12340);
    set_reg32(ca, MB_REG_CONTROL, MB_CTL_IRQ | MB_CTL_WRITEBACK);
    command_set(ca, 0x0006);
    assert_int_equal(vfm_ep_set_state(ea, VFM_STATE_STOP), 0);
    assert_int_equal(vfm_ep_data_size(ea, &size), 0);
    assert_true(size > MB_INBOX_SIZE);
    assert_int_equal(vfm_ep_set_state(ea, VFM_STATE_STOP_COPY), 0);
    stream = read_all(ea, 3000, &len);
    assert_int_equal(len, size); /* the estimate was exact for this device */

    assert_int_equal(vfm_ep_set_state(eb, VFM_STATE_RESUMING), 0);
    write_all(eb, stream, len, 4096);
    assert_int_equal(vfm_ep_set_state(eb, VFM_STATE_STOP), 0);
    assert_int_equal(vfm_ep_get_state(eb, &st), 0);
    assert_int_equal(st, VFM_STATE_STOP);

    assert_int_equal(vfm_vu_client_region_read(ca, MB_REGION_REGS, 0, regs_a, MB_REGS_SIZE), 0);
    assert_int_equal(vfm_vu_client_region_read(cb, MB_REGION_REGS, 0, regs_b, MB_REGS_SIZE), 0);
    assert_memory_equal(regs_a, regs_b, MB_REGS_SIZE);
    assert_int_equal(reg64(cb, MB_REG_INDEX) & 0xffffffff, 5);
    assert_int_equal(reg64(cb, MB_REG_PEER(3)), 0xfebe0000);
    assert_int_equal(reg64(cb, MB_REG_WRITEBACK), 0x12340);
    assert_int_equal(reg64(cb, MB_REG_CONTROL) & 0xffffffff, MB_CTL_IRQ | MB_CTL_WRITEBACK);
    {
        uint8_t cfg_a[256], cfg_b[256];
        assert_int_equal(vfm_vu_client_region_read(ca, VFM_PCI_CONFIG_REGION, 0, cfg_a, 256), 0);
        assert_int_equal(vfm_vu_client_region_read(cb, VFM_PCI_CONFIG_REGION, 0, cfg_b, 256), 0);
        assert_memory_equal(cfg_a, cfg_b, 256);
        assert_int_equal(cfg_b[4] & 6, 6); /* the command register as the driver left it */
    }
    assert_int_equal(vfm_vu_client_region_read(ca, MB_REGION_INBOX, 0, inbox_a, MB_INBOX_SIZE), 0);
    assert_int_equal(vfm_vu_client_region_read(cb, MB_REGION_INBOX, 0, inbox_b, MB_INBOX_SIZE), 0);
    assert_memory_equal(inbox_a, inbox_b, MB_INBOX_SIZE);

    /* a truncated stream is refused and the device stays in RESUMING */
    assert_int_equal(vfm_ep_reset(eb), 0);
    assert_int_equal(vfm_ep_set_state(eb, VFM_STATE_RESUMING), 0);
    write_all(eb, stream, len - 1, 4096);
    assert_int_equal(vfm_ep_set_state(eb, VFM_STATE_STOP), -EINVAL);
    assert_int_equal(vfm_ep_get_state(eb, &st), 0);
    assert_int_equal(st, VFM_STATE_RESUMING);

    free(stream);
    free(inbox_a);
    free(inbox_b);
    vfm_vu_client_free(ca);
    vfm_vu_client_free(cb);
    assert_int_equal(server_stop(&a), 0);
    assert_int_equal(server_stop(&b), 0);
}

/* A client like client_connect()'s, with adopt @flags. */
static int client_connect_flags(const struct server_proc *sp, unsigned flags,
                                struct vfm_vu_client **out)
{
    int ret = -1;

    for (int i = 0; i < 300; i++) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        strcpy(a.sun_path, sp->path);
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
            ret = vfm_vu_client_adopt(fd, sp->path, flags, 0, out);
            if (ret != -EBUSY)
                return ret;
        } else {
            close(fd);
        }
        usleep(10000);
    }
    return ret;
}

/* A large device (saving in pieces) to another, both ways a vfiomig client
 * moves a session's bytes: the data fd extension (the SET's reply carries
 * the session's fd; the data messages are then refused, EBUSY, as the
 * kernel's data calls are with a data_fd open) and, without it, the
 * MIG_DATA_READ / MIG_DATA_WRITE messages (gathered replies of record
 * headers and the device's memory). Both streams are the same bytes, and
 * both load into a device whose memory then has the source's digest. A
 * truncated stream written into the fd is refused at RESUMING -> STOP. */
static void test_data_fd_and_messages(void **state)
{
    struct server_proc a, b;
    uint8_t *stream[2];
    size_t len[2];
    uint64_t want = 0;
    (void)state;

    assert_int_equal(
        server_start(&a, "dfd-a", "--device", "large", "--mem", "8M", "--dirty-rate", "0", NULL),
        0);
    assert_int_equal(server_start(&b, "dfd-b", "--device", "large", "--mem", "8M", "--dirty-rate",
                                  "0", "--load-in-place", NULL),
                     0);
    for (int way = 0; way < 2; way++) {
        unsigned flags = way ? VFM_VU_CLIENT_NO_DATA_FD : 0;
        struct vfm_vu_client *ca, *cb;
        struct vfm_endpoint *ea, *eb;
        uint64_t digest_a = 0, digest_b = 0;
        uint32_t st;

        assert_int_equal(client_connect_flags(&a, flags, &ca), 0);
        assert_int_equal(client_connect_flags(&b, flags, &cb), 0);
        assert_int_equal(vfm_vu_client_info(ca)->server_caps.data_fd, way == 0);
        ea = vfm_vu_client_endpoint(ca);
        eb = vfm_vu_client_endpoint(cb);
        assert_int_equal(vfm_ep_set_state(ea, VFM_STATE_STOP), 0);
        assert_int_equal(
            vfm_vu_client_region_read(ca, LG_REGION_REGS, LG_REG_DIGEST_NOW, &digest_a, 8), 0);
        assert_int_equal(vfm_ep_set_state(ea, VFM_STATE_STOP_COPY), 0);
        {
            /* with the fd, the messages are not the session's way */
            struct vfm_vu_mig_data q = {.argsz = sizeof(q) + 16, .size = 16};
            uint8_t rep[64];
            size_t got = 0;
            int r = vfm_vu_client_raw(ca, VFM_VU_MIG_DATA_READ, &q, sizeof(q), NULL, 0, rep,
                                      sizeof(rep), &got);
            assert_int_equal(r, way == 0 ? -EBUSY : 0);
            if (way == 1)
                assert_int_equal(got, sizeof(q) + 16); /* the first 16 bytes, by message */
        }
        if (way == 1) {
            /* those 16 bytes were taken: start over for a whole stream */
            assert_int_equal(vfm_ep_set_state(ea, VFM_STATE_STOP), 0);
            assert_int_equal(vfm_ep_set_state(ea, VFM_STATE_STOP_COPY), 0);
        }
        stream[way] = read_all(ea, 1 << 20, &len[way]);
        assert_true(len[way] > (8u << 20));
        assert_int_equal(vfm_ep_set_state(ea, VFM_STATE_STOP), 0);

        assert_int_equal(vfm_ep_set_state(eb, VFM_STATE_STOP), 0);
        /* a truncated stream, then the whole one */
        assert_int_equal(vfm_ep_set_state(eb, VFM_STATE_RESUMING), 0);
        write_all(eb, stream[way], len[way] - 100, 1 << 20);
        assert_int_equal(vfm_ep_set_state(eb, VFM_STATE_STOP), -EINVAL);
        assert_int_equal(vfm_ep_get_state(eb, &st), 0);
        assert_int_equal(st, VFM_STATE_RESUMING);
        assert_int_equal(vfm_ep_reset(eb), 0);
        assert_int_equal(vfm_ep_set_state(eb, VFM_STATE_STOP), 0);
        assert_int_equal(vfm_ep_set_state(eb, VFM_STATE_RESUMING), 0);
        write_all(eb, stream[way], len[way], 1 << 20);
        assert_int_equal(vfm_ep_set_state(eb, VFM_STATE_STOP), 0);
        assert_int_equal(
            vfm_vu_client_region_read(cb, LG_REGION_REGS, LG_REG_DIGEST_NOW, &digest_b, 8), 0);
        assert_true(digest_a == digest_b);
        /* the whole memory was received in place and swapped in */
        assert_int_equal(vfm_vu_client_region_read(cb, LG_REGION_REGS, LG_REG_SWAPS, &want, 8), 0);
        assert_int_equal(want, (uint64_t)way + 1);
        assert_int_equal(vfm_ep_set_state(ea, VFM_STATE_RUNNING), 0);
        assert_int_equal(vfm_ep_set_state(eb, VFM_STATE_RUNNING), 0);
        vfm_vu_client_free(ca);
        vfm_vu_client_free(cb);
    }
    assert_int_equal(len[0], len[1]);
    assert_memory_equal(stream[0], stream[1], len[0]);
    free(stream[0]);
    free(stream[1]);
    assert_int_equal(server_stop(&a), 0);
    assert_int_equal(server_stop(&b), 0);
}

/* Two mailboxes in two processes exchange messages by writing into each
 * other's BAR0 (memfd shared memory given by REGION_INFO, passed on with
 * DMA_MAP), programmed through their registers as a driver would. A
 * delivery raises INTx (the client's eventfd; automasked until unmasked,
 * then raised again), and device 0 writes its status record into memory
 * of the client's. After quiescing both (RUNNING_P2P: no new sends,
 * inboxes still drained), every message sent was consumed exactly once. */
static void test_two_mailboxes(void **state)
{
    struct server_proc sp[2];
    struct vfm_vu_client *c[2];
    int fd[2], efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int mfd = memfd_create("driver-memory", MFD_CLOEXEC);
    uint64_t sent[2], cons[2], ev = 0;
    volatile struct mb_status *rec;
    (void)state;

    assert_true(efd >= 0 && mfd >= 0);
    assert_int_equal(ftruncate(mfd, 4096), 0);
    rec = mmap(NULL, 4096, PROT_READ, MAP_SHARED, mfd, 0);
    assert_true(rec != MAP_FAILED);
    for (int i = 0; i < 2; i++) {
        struct vfm_vu_region_info info;
        assert_int_equal(server_start(&sp[i], i ? "mb-b" : "mb-a", "--device", "p2p-mailbox", NULL),
                         0);
        assert_int_equal(client_connect(&sp[i], &c[i]), 0);
        assert_int_equal(vfm_vu_client_region_info(c[i], MB_REGION_INBOX, &info, &fd[i]), 0);
        assert_true(info.flags & VFM_VU_REGION_MMAP_FLAG);
        assert_int_equal(info.size, MB_INBOX_SIZE);
        assert_true(fd[i] >= 0);
        assert_int_equal(reg64(c[i], MB_REG_MAGIC) >> 32, MB_ABI);
        set_reg32(c[i], MB_REG_INDEX, (uint32_t)i);
        set_reg32(c[i], MB_REG_INTERVAL, 100);
    }
    /* each device gets the other's inbox in its DMA space, and device 0
     * the driver's page at 1 MiB */
    for (int i = 0; i < 2; i++)
        assert_int_equal(vfm_vu_client_dma_map(c[i], MB_PEER_IOVA(1 - i), MB_INBOX_SIZE, fd[1 - i],
                                               0, VFM_VU_DMA_READ_FLAG | VFM_VU_DMA_WRITE_FLAG),
                         0);
    assert_int_equal(vfm_vu_client_dma_map(c[0], 1 << 20, 4096, mfd, 0, VFM_VU_DMA_WRITE_FLAG), 0);
    /* memory without an fd: this client does not serve DMA messages */
    assert_int_equal(vfm_vu_client_dma_map(c[0], 2 << 20, 4096, -1, 0, VFM_VU_DMA_WRITE_FLAG),
                     -EOPNOTSUPP);
    intx_set(c[0], VFM_VU_IRQ_SET_ACTION_TRIGGER, efd);
    /* programmed, but traffic off and no bus master: nothing is sent */
    for (int i = 0; i < 2; i++)
        set_reg64(c[i], MB_REG_PEER(1 - i), MB_PEER_IOVA(1 - i));
    set_reg32(c[0], MB_REG_CONTROL, MB_CTL_SEND);
    usleep(20000);
    assert_int_equal(reg64(c[0], MB_REG_SENT), 0);
    /* bus master on: traffic */
    for (int i = 0; i < 2; i++) {
        command_set(c[i], 0x0006);
        set_reg32(c[i], MB_REG_CONTROL, MB_CTL_SEND);
    }
    set_reg64(c[0], MB_REG_WRITEBACK, 1 << 20);
    set_reg32(c[0], MB_REG_CONTROL, MB_CTL_SEND | MB_CTL_IRQ | MB_CTL_WRITEBACK);
    /* the VMM side sees the same shared memory: messages land in lane 1 */
    {
        volatile struct mb_inbox *in = mmap(NULL, MB_INBOX_SIZE, PROT_READ, MAP_SHARED, fd[0], 0);
        assert_true(in != MAP_FAILED);
        for (int i = 0; i < 500 && in->lanes[1].tail < 50; i++)
            usleep(1000);
        assert_true(in->lanes[1].tail >= 50);
        munmap((void *)in, MB_INBOX_SIZE);
    }
    /* the interrupt: signalled once, automasked; cleared and unmasked, again */
    for (int i = 0; i < 500 && read(efd, &ev, 8) != 8; i++)
        usleep(1000);
    assert_int_equal(ev, 1);
    assert_int_equal(reg64(c[0], MB_REG_IRQ_STATUS) & 0xffffffff, MB_IRQ_DELIVERED);
    assert_int_equal(reg64(c[0], MB_REG_IRQS), 1);
    set_reg32(c[0], MB_REG_IRQ_STATUS, MB_IRQ_DELIVERED);
    intx_set(c[0], VFM_VU_IRQ_SET_ACTION_UNMASK, -1);
    ev = 0;
    for (int i = 0; i < 500 && read(efd, &ev, 8) != 8; i++)
        usleep(1000);
    assert_int_equal(ev, 1);
    assert_int_equal(reg64(c[0], MB_REG_IRQS), 2);
    /* the status record, written by DMA into the driver's page */
    for (int i = 0; i < 500 && rec->seq < 2; i++)
        usleep(1000);
    assert_int_equal(rec->magic, MB_COMPAT);
    assert_int_equal(rec->index, 0);
    assert_true(rec->consumed > 0);
    ev = rec->seq; /* the record counts itself; the register counts on */
    assert_true(ev >= 2 && reg64(c[0], MB_REG_WRITEBACKS) >= ev);
    /* DMA dirty logging over vfio-user (DEVICE_FEATURE, ranges inline):
     * device 0's status record page and its lane in device 1's inbox are
     * reported dirty, the rest of that inbox clean, and a report clears */
    {
        struct {
            struct vfm_vu_feature f;
            uint64_t page_size;
            uint32_t n, reserved;
            uint64_t ranges;
            struct vfm_dma_range r[2];
        } __attribute__((packed))
        q = {.f = {.argsz = sizeof(q), .flags = VFM_FEATURE_SET | VFM_FEATURE_DMA_LOGGING_START},
             .page_size = 4096,
             .n = 2,
             .r = {{1 << 20, 4096}, {MB_PEER_IOVA(1), MB_INBOX_SIZE}}};
        struct {
            struct vfm_vu_feature f;
            uint64_t iova, length, page_size;
        } __attribute__((packed))
        rq = {.f = {.argsz = 256, .flags = VFM_FEATURE_GET | VFM_FEATURE_DMA_LOGGING_REPORT},
              .length = MB_INBOX_SIZE,
              .page_size = 4096};
        uint8_t rep[256];
        uint64_t bm;
        size_t got;

        assert_int_equal(vfm_vu_client_raw(c[0], VFM_VU_DEVICE_FEATURE, &q, sizeof(q), NULL, 0, rep,
                                           sizeof(rep), &got),
                         0);
        assert_int_equal(got, sizeof(q)); /* the request back, page size kept */
        usleep(50000);                    /* traffic and records on */
        rq.iova = MB_PEER_IOVA(1);
        assert_int_equal(vfm_vu_client_raw(c[0], VFM_VU_DEVICE_FEATURE, &rq, sizeof(rq), NULL, 0,
                                           rep, sizeof(rep), &got),
                         0);
        assert_int_equal(got, sizeof(rq) + 8); /* the request, then the bitmap */
        memcpy(&bm, rep + sizeof(rq), 8);
        assert_int_equal(bm, 1); /* its lane (index 0) is in the inbox's first page only */
        rq.iova = 1 << 20;
        rq.length = 4096;
        assert_int_equal(vfm_vu_client_raw(c[0], VFM_VU_DEVICE_FEATURE, &rq, sizeof(rq), NULL, 0,
                                           rep, sizeof(rep), &got),
                         0);
        memcpy(&bm, rep + sizeof(rq), 8);
        assert_int_equal(bm, 1); /* the status record's page */
        q.f.flags = VFM_FEATURE_SET | VFM_FEATURE_DMA_LOGGING_STOP;
        assert_int_equal(vfm_vu_client_raw(c[0], VFM_VU_DEVICE_FEATURE, &q.f, sizeof(q.f), NULL, 0,
                                           rep, sizeof(rep), &got),
                         0);
        assert_int_equal(vfm_vu_client_raw(c[0], VFM_VU_DEVICE_FEATURE, &rq, sizeof(rq), NULL, 0,
                                           rep, sizeof(rep), &got),
                         -EINVAL); /* stopped */
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(vfm_ep_set_state(vfm_vu_client_endpoint(c[i]), VFM_STATE_RUNNING_P2P), 0);
    for (int i = 0; i < 2; i++) {
        for (int k = 0; k < 500 && reg64(c[i], MB_REG_PENDING); k++)
            usleep(1000);
        assert_int_equal(reg64(c[i], MB_REG_PENDING), 0);
        sent[i] = reg64(c[i], MB_REG_SENT_TO + 8 * (uint32_t)(1 - i));
        cons[i] = reg64(c[i], MB_REG_CONS_FROM + 8 * (uint32_t)(1 - i));
        assert_int_equal(reg64(c[i], MB_REG_GAPS), 0);
        assert_int_equal(reg64(c[i], MB_REG_DUPS), 0);
    }
    assert_true(sent[0] > 0 && sent[1] > 0);
    assert_int_equal(sent[0], cons[1]);
    assert_int_equal(sent[1], cons[0]);
    /* quiesced devices send nothing more */
    usleep(20000);
    assert_int_equal(reg64(c[0], MB_REG_SENT), sent[0]);
    /* DMA_UNMAP waits for the device and removes the mapping */
    assert_int_equal(vfm_vu_client_dma_unmap(c[0], MB_PEER_IOVA(1), MB_INBOX_SIZE), 0);
    assert_int_equal(vfm_vu_client_dma_unmap(c[0], MB_PEER_IOVA(1), MB_INBOX_SIZE), -EINVAL);
    for (int i = 0; i < 2; i++) {
        close(fd[i]);
        vfm_vu_client_free(c[i]);
        assert_int_equal(server_stop(&sp[i]), 0);
    }
    munmap((void *)rec, 4096);
    close(mfd);
    close(efd);
}

/* The specification reads a MIG_DATA_READ reply shorter than asked, in
 * pre-copy, as "no more data for now" (libvfio-user's client stops there),
 * so a reply is short only at the device's temporary end: every reply of a
 * pre-copy that has megabytes pending is full, but the last, and the read
 * after it is empty. */
static void test_precopy_replies_full(void **state)
{
    enum { WANT = 256 * 1024 };
    struct server_proc sp;
    struct vfm_vu_client *c;
    struct vfm_vu_mig_data q = {.argsz = sizeof(q) + WANT, .size = WANT};
    uint8_t *rep = malloc(sizeof(q) + WANT);
    uint64_t total = 0;
    unsigned short_replies = 0, replies = 0;
    (void)state;

    assert_non_null(rep);
    assert_int_equal(
        server_start(&sp, "pc-full", "--device", "large", "--mem", "4M", "--dirty-rate", "0", NULL),
        0);
    assert_int_equal(client_connect(&sp, &c), 0);
    assert_int_equal(vfm_ep_set_state(vfm_vu_client_endpoint(c), VFM_STATE_PRE_COPY), 0);
    for (;;) {
        size_t got = 0;
        uint32_t n;
        assert_int_equal(vfm_vu_client_raw(c, VFM_VU_MIG_DATA_READ, &q, sizeof(q), NULL, 0, rep,
                                           sizeof(q) + WANT, &got),
                         0);
        assert_true(got >= sizeof(q));
        n = ((struct vfm_vu_mig_data *)rep)->size;
        assert_int_equal(got, sizeof(q) + n);
        if (n == 0)
            break;
        replies++;
        total += n;
        if (n < WANT)
            short_replies++;
        assert_int_equal(short_replies > 0, n < WANT); /* no full reply after a short one */
    }
    assert_true(total > 4u << 20); /* the whole memory, framed */
    assert_true(replies >= 16);
    assert_true(short_replies <= 1);
    vfm_vu_client_free(c);
    free(rep);
    assert_int_equal(server_stop(&sp), 0);
}

/* A server that stops answering (SIGSTOP) fails the request in the
 * client's timeout, and every later one at once: the connection is closed,
 * its framing unknown. */
static void test_stalled_server(void **state)
{
    struct server_proc sp;
    struct vfm_vu_client *c;
    struct vfm_endpoint *ep;
    struct timespec t0, t1;
    uint32_t st;
    double secs;
    (void)state;

    assert_int_equal(server_start(&sp, "stall", "--device", "ticker", "--mem", "64K", NULL), 0);
    assert_int_equal(client_connect(&sp, &c), 0);
    /* a vfiomig server reads bodies whole, and says so (the client then
     * sends bodies up to max_data_xfer_size) */
    assert_true(vfm_vu_client_info(c)->server_caps.whole_bodies);
    assert_int_equal(vfm_vu_client_set_timeout(c, 300), 0);
    ep = vfm_vu_client_endpoint(c);
    assert_int_equal(vfm_ep_get_state(ep, &st), 0);
    kill(sp.pid, SIGSTOP);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(vfm_ep_set_state(ep, VFM_STATE_STOP), -ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(secs >= 0.25 && secs < 5);
    assert_int_equal(vfm_ep_get_state(ep, &st), -ETIMEDOUT);
    kill(sp.pid, SIGCONT);
    vfm_vu_client_free(c);
    assert_int_equal(server_stop(&sp), 0);
}

/* One client at a time; a client that vanishes mid-migration leaves the
 * device in the documented state, and the server serves the next one. */
static void test_second_client_and_vanishing(void **state)
{
    struct server_proc sp;
    struct vfm_vu_client *c, *c2;
    struct vfm_endpoint *ep;
    uint8_t buf[1000], *stream;
    size_t len;
    uint32_t st;
    (void)state;

    assert_int_equal(server_start(&sp, "single", "--device", "p2p-mailbox", NULL), 0);
    assert_int_equal(client_connect(&sp, &c), 0);
    assert_int_equal(vfm_vu_client_connect(sp.path, NULL, &c2), -EBUSY);
    ep = vfm_vu_client_endpoint(c);

    /* vanish in the middle of a save */
    assert_int_equal(vfm_ep_set_state(ep, VFM_STATE_STOP_COPY), 0);
    assert_int_equal(vfm_ep_read(ep, buf, sizeof(buf)), (ssize_t)sizeof(buf));
    vfm_vu_client_free(c);
    assert_int_equal(client_connect(&sp, &c), 0);
    ep = vfm_vu_client_endpoint(c);
    assert_int_equal(vfm_ep_get_state(ep, &st), 0);
    assert_int_equal(st, VFM_STATE_STOP);
    assert_int_equal(vfm_ep_read(ep, buf, sizeof(buf)), -ENODEV); /* session ended */

    /* vanish in the middle of a load */
    assert_int_equal(vfm_ep_set_state(ep, VFM_STATE_STOP_COPY), 0);
    stream = read_all(ep, 65536, &len);
    assert_int_equal(vfm_ep_set_state(ep, VFM_STATE_RESUMING), 0);
    write_all(ep, stream, len / 2, 4096);
    vfm_vu_client_free(c);
    assert_int_equal(client_connect(&sp, &c), 0);
    ep = vfm_vu_client_endpoint(c);
    assert_int_equal(vfm_ep_get_state(ep, &st), 0);
    assert_int_equal(st, VFM_STATE_STOP);
    assert_int_equal(vfm_ep_set_state(ep, VFM_STATE_RUNNING), 0);
    free(stream);
    vfm_vu_client_free(c);
    assert_int_equal(server_stop(&sp), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_walk_p2p),       cmocka_unit_test(test_walk_no_p2p),
        cmocka_unit_test(test_walk_precopy),   cmocka_unit_test(test_precopy_processes),
        cmocka_unit_test(test_save_restore),   cmocka_unit_test(test_data_fd_and_messages),
        cmocka_unit_test(test_two_mailboxes),  cmocka_unit_test(test_precopy_replies_full),
        cmocka_unit_test(test_stalled_server), cmocka_unit_test(test_second_client_and_vanishing),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
