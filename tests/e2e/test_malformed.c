/* SPDX-License-Identifier: MIT */
/*
 * Malformed vfio-user messages against a real server process: truncated
 * headers, wrong sizes, bad offsets, too many or misplaced fds, unknown
 * commands, bad JSON, messages before or after a failed negotiation. Each
 * gets an error reply with the right errno (or, where framing is lost, the
 * connection is dropped), and the server goes on serving. Raw sockets: the
 * library's client would refuse to send most of these.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mailbox.h"
#include "procs.h"

#include <vfiomig/pci.h>

static struct server_proc srv;
static uint16_t next_id = 100;

static int setup(void **state)
{
    (void)state;
    return server_start(&srv, "malformed", "--device", "p2p-mailbox", NULL) ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    return server_stop(&srv) == 0 ? 0 : -1;
}

/* Sends raw bytes with optional fds. */
static void send_raw(int fd, const void *buf, size_t len, const int *fds, unsigned nfds)
{
    char ctl[CMSG_SPACE(sizeof(int) * 16)];
    struct iovec v = {(void *)buf, len};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};

    if (nfds) {
        struct cmsghdr *c;
        memset(ctl, 0, sizeof(ctl));
        m.msg_control = ctl;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    assert_int_equal(sendmsg(fd, &m, MSG_NOSIGNAL), (ssize_t)len);
}

/* Sends a command: header + payload (msg_size from @size_override if
 * non-zero). */
static uint16_t send_cmd(int fd, uint16_t cmd, uint32_t flags, const void *payload, size_t len,
                         uint32_t size_override, const int *fds, unsigned nfds)
{
    uint8_t buf[1 << 16];
    struct vfm_vu_hdr h = {.msg_id = next_id++, .cmd = cmd, .flags = flags};

    h.msg_size = size_override ? size_override : (uint32_t)(sizeof(h) + len);
    memcpy(buf, &h, sizeof(h));
    if (len)
        memcpy(buf + sizeof(h), payload, len);
    send_raw(fd, buf, sizeof(h) + len, fds, nfds);
    return h.msg_id;
}

/* Reads one reply. Return: its payload size, -1 on end of file. */
static ssize_t recv_reply(int fd, struct vfm_vu_hdr *h, void *buf, size_t cap)
{
    size_t got = 0, len;

    while (got < sizeof(*h)) {
        ssize_t r = recv(fd, (char *)h + got, sizeof(*h) - got, 0);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    len = h->msg_size - sizeof(*h);
    assert_true(len <= cap);
    for (got = 0; got < len;) {
        ssize_t r = recv(fd, (char *)buf + got, len - got, 0);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return (ssize_t)len;
}

/* The reply to message @id is an error with @err. */
static void expect_error(int fd, uint16_t id, uint16_t cmd, int err)
{
    struct vfm_vu_hdr h;
    uint8_t buf[1 << 16];
    ssize_t n = recv_reply(fd, &h, buf, sizeof(buf));

    assert_true(n >= 0);
    assert_int_equal(h.msg_id, id);
    assert_int_equal(h.cmd, cmd);
    assert_int_equal(h.flags & VFM_VU_TYPE_MASK, VFM_VU_TYPE_REPLY);
    if (!(h.flags & VFM_VU_ERROR))
        fail_msg("%s: expected error %d, got success", vfm_vu_cmd_name(cmd), err);
    if ((int)h.error != err)
        fail_msg("%s: expected %s, got %s", vfm_vu_cmd_name(cmd), vfm_err_name(err),
                 vfm_err_name((int)h.error));
    assert_int_equal(n, 0); /* an error reply is only the header */
}

static void expect_ok(int fd, uint16_t id, uint16_t cmd)
{
    struct vfm_vu_hdr h;
    uint8_t buf[1 << 16];

    assert_true(recv_reply(fd, &h, buf, sizeof(buf)) >= 0);
    assert_int_equal(h.msg_id, id);
    assert_int_equal(h.cmd, cmd);
    if (h.flags & VFM_VU_ERROR)
        fail_msg("%s: unexpected error %s", vfm_vu_cmd_name(cmd), vfm_err_name((int)h.error));
}

static int raw_connect_json(const char *json);

static int raw_connect(void)
{
    return raw_connect_json(NULL);
}

/* Connects and negotiates, with @json as VERSION's capabilities (NULL:
 * none, as a minimal client sends). */
static int raw_connect_json(const char *json)
{
    for (int i = 0; i < 300; i++) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct vfm_vu_hdr h;
        uint8_t buf[4096];
        struct vfm_vu_version v = {0, 1};
        uint16_t id;

        strcpy(a.sun_path, srv.path);
        assert_true(fd >= 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
            /* probe with a VERSION: a busy server says EBUSY and closes, so
             * the send itself may fail */
            size_t jl = json ? strlen(json) + 1 : 0;
            struct vfm_vu_hdr q = {.msg_id = id = next_id++,
                                   .cmd = VFM_VU_VERSION,
                                   .msg_size = (uint32_t)(sizeof(q) + sizeof(v) + jl)};
            uint8_t m[sizeof(q) + sizeof(v) + 1024];
            memcpy(m, &q, sizeof(q));
            memcpy(m + sizeof(q), &v, sizeof(v));
            if (jl)
                memcpy(m + sizeof(q) + sizeof(v), json, jl);
            if (send(fd, m, q.msg_size, MSG_NOSIGNAL) == (ssize_t)q.msg_size &&
                recv_reply(fd, &h, buf, sizeof(buf)) >= 0 && !(h.flags & VFM_VU_ERROR) &&
                h.msg_id == id) {
                /* a server that stops answering fails the test, not hangs it */
                struct timeval tv = {.tv_sec = 20};
                assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
                return fd;
            }
        }
        close(fd);
        usleep(10000);
    }
    fail_msg("cannot connect to the server");
    return -1;
}

/* A healthy exchange on @fd: DEVICE_GET_INFO works. */
static void still_serving(int fd)
{
    struct vfm_vu_device_info q = {.argsz = sizeof(q)};
    uint16_t id = send_cmd(fd, VFM_VU_DEVICE_GET_INFO, 0, &q, sizeof(q), 0, NULL, 0);
    expect_ok(fd, id, VFM_VU_DEVICE_GET_INFO);
}

/* Before and around negotiation. */
static void test_negotiation(void **state)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct vfm_vu_device_info q = {.argsz = sizeof(q)};
    struct {
        struct vfm_vu_version v;
        char json[64];
    } m;
    uint16_t id;
    (void)state;

    strcpy(a.sun_path, srv.path);
    for (int i = 0; i < 300 && connect(fd, (struct sockaddr *)&a, sizeof(a)); i++)
        usleep(10000);
    /* a command before VERSION */
    id = send_cmd(fd, VFM_VU_DEVICE_GET_INFO, 0, &q, sizeof(q), 0, NULL, 0);
    expect_error(fd, id, VFM_VU_DEVICE_GET_INFO, EINVAL);
    /* another major */
    m.v = (struct vfm_vu_version){1, 0};
    id = send_cmd(fd, VFM_VU_VERSION, 0, &m.v, sizeof(m.v), 0, NULL, 0);
    expect_error(fd, id, VFM_VU_VERSION, ENOTSUP);
    /* JSON without its NUL, invalid JSON, wrong types, nonsense sizes */
    m.v = (struct vfm_vu_version){0, 1};
    memcpy(m.json, "{\"capabilities\":{}}", 19);
    id = send_cmd(fd, VFM_VU_VERSION, 0, &m, sizeof(m.v) + 19, 0, NULL, 0);
    expect_error(fd, id, VFM_VU_VERSION, EINVAL);
    static const char *const bad_json[] = {
        "{\"capabilities\":",
        "[1,2]",
        "{\"capabilities\":{\"max_msg_fds\":\"8\"}}",
        "{\"capabilities\":{\"max_msg_fds\":-1}}",
        "{\"capabilities\":{\"max_data_xfer_size\":0}}",
        "{\"capabilities\":{\"migration\":7}}",
        "{\"capabilities\":[]}",
        "{} trailing",
    };
    for (size_t i = 0; i < sizeof(bad_json) / sizeof(bad_json[0]); i++) {
        size_t n = strlen(bad_json[i]) + 1;
        memcpy(m.json, bad_json[i], n);
        id = send_cmd(fd, VFM_VU_VERSION, 0, &m, sizeof(m.v) + n, 0, NULL, 0);
        expect_error(fd, id, VFM_VU_VERSION, EINVAL);
    }
    /* a short VERSION payload */
    id = send_cmd(fd, VFM_VU_VERSION, 0, &m, 2, 0, NULL, 0);
    expect_error(fd, id, VFM_VU_VERSION, EINVAL);
    /* after those failures: still not negotiated */
    id = send_cmd(fd, VFM_VU_DEVICE_GET_INFO, 0, &q, sizeof(q), 0, NULL, 0);
    expect_error(fd, id, VFM_VU_DEVICE_GET_INFO, EINVAL);
    /* a good VERSION now works, and only once */
    memcpy(m.json, "{\"capabilities\":{\"max_msg_fds\":4}}", 35);
    id = send_cmd(fd, VFM_VU_VERSION, 0, &m, sizeof(m.v) + 35, 0, NULL, 0);
    expect_ok(fd, id, VFM_VU_VERSION);
    id = send_cmd(fd, VFM_VU_VERSION, 0, &m, sizeof(m.v) + 35, 0, NULL, 0);
    expect_error(fd, id, VFM_VU_VERSION, EINVAL);
    still_serving(fd);
    close(fd);
}

/* The VERSION reply's capabilities JSON to a VERSION that sends @json. */
static void version_reply(const char *json, char *out, size_t cap)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct {
        struct vfm_vu_version v;
        char json[128];
    } m = {.v = {0, 1}};
    uint8_t buf[4096];
    struct vfm_vu_hdr h;
    size_t n = strlen(json) + 1;
    ssize_t r;
    uint16_t id;

    strcpy(a.sun_path, srv.path);
    for (int i = 0; i < 300 && connect(fd, (struct sockaddr *)&a, sizeof(a)); i++)
        usleep(10000);
    memcpy(m.json, json, n);
    id = send_cmd(fd, VFM_VU_VERSION, 0, &m, sizeof(m.v) + n, 0, NULL, 0);
    r = recv_reply(fd, &h, buf, sizeof(buf));
    assert_true(r > (ssize_t)sizeof(struct vfm_vu_version));
    assert_int_equal(h.msg_id, id);
    assert_false(h.flags & VFM_VU_ERROR);
    snprintf(out, cap, "%.*s", (int)(r - (ssize_t)sizeof(struct vfm_vu_version)),
             (const char *)buf + sizeof(struct vfm_vu_version));
    close(fd);
}

/* vfiomig's own capabilities go only to a client that named them: QEMU
 * 11.1 warns "spurious capabilities" at any key it does not know (seen
 * with its vfio-user-pci device). */
static void test_caps_only_to_who_asks(void **state)
{
    char js[4096];
    (void)state;

    version_reply("{\"capabilities\":{\"max_msg_fds\":8}}", js, sizeof(js));
    if (strstr(js, "vfiomig"))
        fail_msg("a standard client got vfiomig's capabilities: %s", js);
    assert_non_null(strstr(js, "max_data_xfer_size"));
    version_reply("{\"capabilities\":{\"vfiomig\":{\"whole_bodies\":true}}}", js, sizeof(js));
    if (!strstr(js, "\"whole_bodies\":true"))
        fail_msg("a vfiomig client did not get whole_bodies: %s", js);
    if (strstr(js, "data_fd"))
        fail_msg("a client that did not ask got data_fd: %s", js);
    version_reply("{\"capabilities\":{\"vfiomig\":{\"data_fd\":true}}}", js, sizeof(js));
    if (!strstr(js, "\"data_fd\":true"))
        fail_msg("a client that asked did not get data_fd: %s", js);
}

/* Header faults that keep framing: error reply, connection goes on. */
static void test_header_faults(void **state)
{
    int fd = raw_connect();
    struct vfm_vu_device_info q = {.argsz = sizeof(q)};
    uint8_t big[8192] = {0};
    uint16_t id;
    (void)state;

    /* reserved flag bits; a reply type (stray replies are ignored); an
     * unknown type */
    id = send_cmd(fd, VFM_VU_DEVICE_GET_INFO, 1u << 9, &q, sizeof(q), 0, NULL, 0);
    expect_error(fd, id, VFM_VU_DEVICE_GET_INFO, EINVAL);
    id = send_cmd(fd, VFM_VU_DEVICE_GET_INFO, 7, &q, sizeof(q), 0, NULL, 0);
    expect_error(fd, id, VFM_VU_DEVICE_GET_INFO, EINVAL);
    send_cmd(fd, VFM_VU_DEVICE_GET_INFO, VFM_VU_TYPE_REPLY, &q, sizeof(q), 0, NULL, 0);
    still_serving(fd);
    /* unknown commands, and server-to-client ones */
    id = send_cmd(fd, 99, 0, NULL, 0, 0, NULL, 0);
    expect_error(fd, id, 99, ENOSYS);
    id = send_cmd(fd, 0, 0, NULL, 0, 0, NULL, 0);
    expect_error(fd, id, 0, ENOSYS);
    id = send_cmd(fd, VFM_VU_DMA_READ, 0, big, 16, 0, NULL, 0);
    expect_error(fd, id, VFM_VU_DMA_READ, EINVAL);
    id = send_cmd(fd, VFM_VU_REGION_WRITE_MULTI, 0, big, 8, 0, NULL, 0);
    expect_error(fd, id, VFM_VU_REGION_WRITE_MULTI, EOPNOTSUPP);
    id = send_cmd(fd, VFM_VU_DEVICE_GET_REGION_IO_FDS, 0, big, 16, 0, NULL, 0);
    expect_error(fd, id, VFM_VU_DEVICE_GET_REGION_IO_FDS, ENOTSUP);
    /* a no-reply command that fails: no reply, and the next one is fine */
    send_cmd(fd, VFM_VU_DEVICE_GET_INFO, VFM_VU_NO_REPLY, &q, 8, 0, NULL, 0);
    still_serving(fd);
    close(fd);

    /* a message larger than the server takes: its body is read and dropped,
     * EMSGSIZE, and framing holds */
    fd = raw_connect();
    {
        size_t len = (1u << 20) + 8192;
        uint8_t *huge = calloc(1, len);
        struct vfm_vu_hdr h = {
            .msg_id = 7, .cmd = VFM_VU_MIG_DATA_WRITE, .msg_size = (uint32_t)(sizeof(h) + len)};
        assert_non_null(huge);
        send_raw(fd, &h, sizeof(h), NULL, 0);
        for (size_t off = 0; off < len; off += 65536)
            send_raw(fd, huge + off, len - off < 65536 ? len - off : 65536, NULL, 0);
        expect_error(fd, 7, VFM_VU_MIG_DATA_WRITE, EMSGSIZE);
        free(huge);
    }
    still_serving(fd);
    close(fd);
}

/* Faults that break framing: the server drops that client and serves the
 * next. */
static void test_framing_lost(void **state)
{
    struct vfm_vu_hdr h = {.msg_id = 1, .cmd = VFM_VU_DEVICE_GET_INFO, .msg_size = 8};
    int fd;
    (void)state;

    /* msg_size below the header size */
    fd = raw_connect();
    send_raw(fd, &h, sizeof(h), NULL, 0);
    expect_error(fd, 1, VFM_VU_DEVICE_GET_INFO, EINVAL);
    close(fd);
    /* a truncated header, then the client goes away */
    fd = raw_connect();
    send_raw(fd, &h, 10, NULL, 0);
    close(fd);
    /* a header that promises a body that never comes */
    fd = raw_connect();
    h.msg_size = 16 + 16;
    send_raw(fd, &h, sizeof(h), NULL, 0);
    send_raw(fd, &h, 5, NULL, 0);
    close(fd);
    fd = raw_connect();
    still_serving(fd);
    close(fd);
}

/* Wrong sizes and bad values, command by command. */
static void test_payload_faults(void **state)
{
    int fd = raw_connect();
    uint8_t b[256] = {0};
    uint16_t id;
    (void)state;

#define ERR(cmd, payload, len, err)                                                                \
    do {                                                                                           \
        id = send_cmd(fd, cmd, 0, payload, len, 0, NULL, 0);                                       \
        expect_error(fd, id, cmd, err);                                                            \
    } while (0)

    /* fixed-size payloads of the wrong size */
    ERR(VFM_VU_DEVICE_GET_INFO, b, 8, EINVAL);
    ERR(VFM_VU_DEVICE_GET_INFO, b, 20, EINVAL);
    ERR(VFM_VU_DEVICE_GET_REGION_INFO, b, 16, EINVAL);
    ERR(VFM_VU_DMA_MAP, b, 31, EINVAL);
    ERR(VFM_VU_DMA_UNMAP, b, 25, EINVAL);
    ERR(VFM_VU_REGION_READ, b, 15, EINVAL);
    ERR(VFM_VU_MIG_DATA_READ, b, 4, EINVAL);
    ERR(VFM_VU_DEVICE_RESET, b, 1, EINVAL);
    ERR(VFM_VU_DEVICE_FEATURE, b, 4, EINVAL);
    {
        /* argsz smaller than the structure */
        struct vfm_vu_device_info q = {.argsz = 8};
        ERR(VFM_VU_DEVICE_GET_INFO, &q, sizeof(q), EINVAL);
        struct vfm_vu_region_info r = {.argsz = sizeof(r), .index = 9};
        ERR(VFM_VU_DEVICE_GET_REGION_INFO, &r, sizeof(r), EINVAL); /* the PCI regions are 0..8 */
        r.index = UINT32_MAX;
        ERR(VFM_VU_DEVICE_GET_REGION_INFO, &r, sizeof(r), EINVAL);
    }
    {
        /* region accesses: bad region, past the end, wrap-around, too big,
         * inconsistent count, writing read-only registers */
        struct vfm_vu_region_access a = {.offset = 0, .region = 9, .count = 4};
        ERR(VFM_VU_REGION_READ, &a, sizeof(a), EINVAL);
        a = (struct vfm_vu_region_access){.offset = MB_REGS_SIZE - 2, .region = 1, .count = 4};
        ERR(VFM_VU_REGION_READ, &a, sizeof(a), EINVAL);
        a = (struct vfm_vu_region_access){.offset = UINT64_MAX - 1, .region = 1, .count = 4};
        ERR(VFM_VU_REGION_READ, &a, sizeof(a), EINVAL);
        a = (struct vfm_vu_region_access){.offset = 0, .region = 0, .count = (1u << 20) + 1};
        ERR(VFM_VU_REGION_READ, &a, sizeof(a), E2BIG);
        uint8_t w[sizeof(a) + 8];
        a = (struct vfm_vu_region_access){.offset = 0, .region = 1, .count = 4};
        memcpy(w, &a, sizeof(a));
        ERR(VFM_VU_REGION_WRITE, w, sizeof(w), EINVAL); /* 8 bytes carried, count 4 */
        a.count = 8;
        memcpy(w, &a, sizeof(a));
        ERR(VFM_VU_REGION_WRITE, w, sizeof(w), EINVAL); /* the magic is read-only */
    }
    {
        /* DMA: zero size, wrap-around, unknown flags, overlap, unmap of
         * what is not mapped */
        struct vfm_vu_dma_map m = {.argsz = sizeof(m), .flags = 3, .addr = 1 << 20, .size = 0};
        ERR(VFM_VU_DMA_MAP, &m, sizeof(m), EINVAL);
        m.size = 4096;
        m.addr = UINT64_MAX - 100;
        ERR(VFM_VU_DMA_MAP, &m, sizeof(m), EINVAL);
        m.addr = 1 << 20;
        m.flags = 1u << 7;
        ERR(VFM_VU_DMA_MAP, &m, sizeof(m), EINVAL);
        m.flags = 3; /* no fd: a known range without memory, accepted */
        id = send_cmd(fd, VFM_VU_DMA_MAP, 0, &m, sizeof(m), 0, NULL, 0);
        expect_ok(fd, id, VFM_VU_DMA_MAP);
        m.addr += 2048;
        ERR(VFM_VU_DMA_MAP, &m, sizeof(m), EEXIST);
        struct vfm_vu_dma_unmap u = {.argsz = sizeof(u), .addr = 1 << 20, .size = 8192};
        ERR(VFM_VU_DMA_UNMAP, &u, sizeof(u), EINVAL); /* not the exact range */
        u.size = 4096;
        u.flags = 1; /* dirty bitmap: not offered */
        ERR(VFM_VU_DMA_UNMAP, &u, sizeof(u), EINVAL);
        u.flags = 0;
        id = send_cmd(fd, VFM_VU_DMA_UNMAP, 0, &u, sizeof(u), 0, NULL, 0);
        expect_ok(fd, id, VFM_VU_DMA_UNMAP);
    }
    {
        /* features: unknown flag bits, GET with SET, an unknown id, DMA
         * logging (not implemented: ENOTTY), a state out of range, ERROR,
         * an argsz too small for the data */
        struct {
            struct vfm_vu_feature f;
            struct vfm_vu_mig_state s;
        } q = {{sizeof(q), VFM_FEATURE_MIGRATION | VFM_FEATURE_GET | (1u << 20)}, {0, -1}};
        ERR(VFM_VU_DEVICE_FEATURE, &q, sizeof(q), EINVAL);
        q.f.flags = VFM_FEATURE_MIG_DEVICE_STATE | VFM_FEATURE_GET | VFM_FEATURE_SET;
        ERR(VFM_VU_DEVICE_FEATURE, &q, sizeof(q), EINVAL);
        q.f.flags = 3 | VFM_FEATURE_GET; /* an id no driver has: ENOTTY, as the kernel */
        ERR(VFM_VU_DEVICE_FEATURE, &q, sizeof(q), ENOTTY);
        /* the mailbox keeps a DMA dirty log: its requests checked as the
         * kernel's core checks them (test_dmalog covers the rest) */
        q.f.flags = VFM_FEATURE_DMA_LOGGING_START | VFM_FEATURE_SET; /* no room for the control */
        ERR(VFM_VU_DEVICE_FEATURE, &q, sizeof(q), EINVAL);
        q.f.flags = VFM_FEATURE_DMA_LOGGING_STOP | VFM_FEATURE_SET; /* not started */
        ERR(VFM_VU_DEVICE_FEATURE, &q, sizeof(q), EINVAL);
        q.f.flags = VFM_FEATURE_DMA_LOGGING_REPORT | VFM_FEATURE_SET; /* GET only */
        ERR(VFM_VU_DEVICE_FEATURE, &q, sizeof(q), EINVAL);
        q.f.flags = VFM_FEATURE_DMA_LOGGING_REPORT | VFM_FEATURE_GET; /* no room */
        ERR(VFM_VU_DEVICE_FEATURE, &q, sizeof(q), EINVAL);
        {
            struct {
                struct vfm_vu_feature f;
                uint64_t page_size;
                uint32_t n, reserved;
                uint64_t ranges;
                uint64_t r[2];
            } __attribute__((packed))
            st = {{sizeof(st), VFM_FEATURE_DMA_LOGGING_START | VFM_FEATURE_SET},
                  4096,
                  2,
                  0,
                  0,
                  {0, 4096}};
            ERR(VFM_VU_DEVICE_FEATURE, &st, sizeof(st), EINVAL); /* 2 ranges, 1 sent */
            st.n = 0;
            ERR(VFM_VU_DEVICE_FEATURE, &st, sizeof(st), EINVAL); /* no range */
            st.n = 100000;
            ERR(VFM_VU_DEVICE_FEATURE, &st, sizeof(st), E2BIG);
        }
        q.f.flags = VFM_FEATURE_MIGRATION | VFM_FEATURE_SET; /* GET only */
        ERR(VFM_VU_DEVICE_FEATURE, &q, sizeof(q), EINVAL);
        q.f.flags = VFM_FEATURE_MIG_DEVICE_STATE | VFM_FEATURE_SET;
        q.s.device_state = 99;
        ERR(VFM_VU_DEVICE_FEATURE, &q, sizeof(q), EINVAL);
        q.s.device_state = VFM_STATE_ERROR;
        ERR(VFM_VU_DEVICE_FEATURE, &q, sizeof(q), EINVAL);
        q.s.device_state = VFM_STATE_PRE_COPY; /* a state this device lacks */
        ERR(VFM_VU_DEVICE_FEATURE, &q, sizeof(q), EINVAL);
        q.f.argsz = sizeof(q.f);
        q.s.device_state = VFM_STATE_STOP;
        ERR(VFM_VU_DEVICE_FEATURE, &q, sizeof(q.f), EINVAL); /* SET without its data */
        ERR(VFM_VU_DEVICE_FEATURE, &q, sizeof(q), EINVAL);   /* argsz too small */
        /* PROBE of what is supported: success, with no state change */
        q.f.argsz = sizeof(q);
        q.f.flags = VFM_FEATURE_MIG_DEVICE_STATE | VFM_FEATURE_PROBE | VFM_FEATURE_SET;
        id = send_cmd(fd, VFM_VU_DEVICE_FEATURE, 0, &q, sizeof(q), 0, NULL, 0);
        expect_ok(fd, id, VFM_VU_DEVICE_FEATURE);
    }
    {
        /* migration data outside a session; argsz too small; count
         * mismatch; too big */
        struct vfm_vu_mig_data d = {.argsz = 8 + 64, .size = 64};
        ERR(VFM_VU_MIG_DATA_READ, &d, sizeof(d), ENODEV);
        d.argsz = 8;
        ERR(VFM_VU_MIG_DATA_READ, &d, sizeof(d), EINVAL);
        d.argsz = UINT32_MAX;
        d.size = (1u << 20) + 1;
        ERR(VFM_VU_MIG_DATA_READ, &d, sizeof(d), E2BIG);
        uint8_t w[8 + 16];
        d = (struct vfm_vu_mig_data){.argsz = sizeof(w), .size = 8};
        memcpy(w, &d, sizeof(d));
        ERR(VFM_VU_MIG_DATA_WRITE, w, sizeof(w), EINVAL);
        d.size = 16;
        memcpy(w, &d, sizeof(d));
        ERR(VFM_VU_MIG_DATA_WRITE, w, sizeof(w), ENODEV);
    }
    still_serving(fd);
    close(fd);
#undef ERR
}

/* File descriptors: on a command that takes none, too many for DMA_MAP,
 * more than the server accepts at all, and a DMA_MAP whose fd cannot be
 * mapped. All are closed by the server (no leak) and refused. */
static void test_fd_faults(void **state)
{
    int fd = raw_connect();
    int efd[12];
    struct vfm_vu_device_info q = {.argsz = sizeof(q)};
    struct vfm_vu_dma_map m = {.argsz = sizeof(m), .flags = 3, .addr = 1ull << 40, .size = 4096};
    uint16_t id;
    (void)state;

    for (int i = 0; i < 12; i++) {
        efd[i] = eventfd(0, EFD_CLOEXEC);
        assert_true(efd[i] >= 0);
    }
    id = send_cmd(fd, VFM_VU_DEVICE_GET_INFO, 0, &q, sizeof(q), 0, efd, 1);
    expect_error(fd, id, VFM_VU_DEVICE_GET_INFO, EINVAL);
    id = send_cmd(fd, VFM_VU_DMA_MAP, 0, &m, sizeof(m), 0, efd, 2);
    expect_error(fd, id, VFM_VU_DMA_MAP, EINVAL);
    id = send_cmd(fd, VFM_VU_DMA_MAP, 0, &m, sizeof(m), 0, efd, 12);
    expect_error(fd, id, VFM_VU_DMA_MAP, EINVAL);
    /* an eventfd cannot be mmap()ed: the mapping fails, with mmap's errno */
    id = send_cmd(fd, VFM_VU_DMA_MAP, 0, &m, sizeof(m), 0, efd, 1);
    expect_error(fd, id, VFM_VU_DMA_MAP, ENODEV);
    /* a file's mapping ends at its end: 64 TiB of a 4 KiB memfd, or its
     * second page, are refused (a touch there would be SIGBUS); its first
     * page is a mapping */
    {
        int mfd = memfd_create("vfiomig-dma", MFD_CLOEXEC);
        struct vfm_vu_dma_map big = m;
        assert_true(mfd >= 0);
        assert_int_equal(ftruncate(mfd, 4096), 0);
        big.size = 64ull << 40;
        id = send_cmd(fd, VFM_VU_DMA_MAP, 0, &big, sizeof(big), 0, &mfd, 1);
        expect_error(fd, id, VFM_VU_DMA_MAP, EINVAL);
        big.size = 4096;
        big.offset = 4096;
        id = send_cmd(fd, VFM_VU_DMA_MAP, 0, &big, sizeof(big), 0, &mfd, 1);
        expect_error(fd, id, VFM_VU_DMA_MAP, EINVAL);
        big.offset = 0;
        id = send_cmd(fd, VFM_VU_DMA_MAP, 0, &big, sizeof(big), 0, &mfd, 1);
        expect_ok(fd, id, VFM_VU_DMA_MAP);
        close(mfd);
    }
    /* eventfds for interrupts the device does not have (index 5 is past the
     * PCI ones; the mailbox has one MSI-X vector), more fds than vectors;
     * then its INTx takes one */
    {
        struct vfm_vu_irq_set s = {.argsz = sizeof(s), .flags = 0x24, .index = 5, .count = 1};
        id = send_cmd(fd, VFM_VU_DEVICE_SET_IRQS, 0, &s, sizeof(s), 0, efd, 1);
        expect_error(fd, id, VFM_VU_DEVICE_SET_IRQS, EINVAL);
        s.index = 2;
        s.start = 1;
        id = send_cmd(fd, VFM_VU_DEVICE_SET_IRQS, 0, &s, sizeof(s), 0, efd, 1);
        expect_error(fd, id, VFM_VU_DEVICE_SET_IRQS, EINVAL);
        s.start = 0;
        s.index = 0;
        id = send_cmd(fd, VFM_VU_DEVICE_SET_IRQS, 0, &s, sizeof(s), 0, efd, 2);
        expect_error(fd, id, VFM_VU_DEVICE_SET_IRQS, EINVAL);
        id = send_cmd(fd, VFM_VU_DEVICE_SET_IRQS, 0, &s, sizeof(s), 0, efd, 1);
        expect_ok(fd, id, VFM_VU_DEVICE_SET_IRQS);
    }
    for (int i = 0; i < 12; i++)
        close(efd[i]);
    still_serving(fd);
    close(fd);
}

/* Sets the device state with a raw DEVICE_FEATURE SET. */
static void raw_set_state(int fd, uint32_t state, int err)
{
    struct {
        struct vfm_vu_feature f;
        struct vfm_vu_mig_state ms;
    } __attribute__((packed))
    q = {{sizeof(q), VFM_FEATURE_MIG_DEVICE_STATE | VFM_FEATURE_SET}, {state, -1}};
    uint16_t id = send_cmd(fd, VFM_VU_DEVICE_FEATURE, 0, &q, sizeof(q), 0, NULL, 0);
    if (err)
        expect_error(fd, id, VFM_VU_DEVICE_FEATURE, err);
    else
        expect_ok(fd, id, VFM_VU_DEVICE_FEATURE);
}

/* MIG_DATA_READ of up to 64 KiB, copied to @out if not NULL. Return: the
 * reply's size field. */
static uint32_t raw_mig_read(int fd, uint8_t *out)
{
    static uint8_t buf[(1 << 16) + 64];
    struct vfm_vu_mig_data q = {sizeof(q) + 65536, 65536}, r;
    struct vfm_vu_hdr h;
    uint16_t id = send_cmd(fd, VFM_VU_MIG_DATA_READ, 0, &q, sizeof(q), 0, NULL, 0);
    ssize_t n = recv_reply(fd, &h, buf, sizeof(buf));

    assert_true(n >= (ssize_t)sizeof(r));
    assert_int_equal(h.msg_id, id);
    assert_false(h.flags & VFM_VU_ERROR);
    memcpy(&r, buf, sizeof(r));
    assert_int_equal(r.size, (size_t)n - sizeof(r));
    if (out)
        memcpy(out, buf + sizeof(r), r.size);
    return r.size;
}

/* MIG_DATA_WRITE of @len bytes with the head {argsz, size}; its reply is
 * @err (0: success). */
static void raw_mig_write(int fd, uint32_t argsz, uint32_t size, const void *data, size_t len,
                          int err)
{
    struct vfm_vu_hdr h = {.msg_id = next_id++,
                           .cmd = VFM_VU_MIG_DATA_WRITE,
                           .msg_size = (uint32_t)(sizeof(h) + 8 + len)};
    struct vfm_vu_mig_data m = {argsz, size};
    uint8_t *msg = malloc(sizeof(h) + sizeof(m) + len);

    assert_non_null(msg);
    memcpy(msg, &h, sizeof(h));
    memcpy(msg + sizeof(h), &m, sizeof(m));
    memcpy(msg + sizeof(h) + sizeof(m), data, len);
    for (size_t off = 0, all = sizeof(h) + sizeof(m) + len; off < all;) {
        ssize_t w = send(fd, msg + off, all - off, MSG_NOSIGNAL);
        assert_true(w > 0);
        off += (size_t)w;
    }
    free(msg);
    if (err)
        expect_error(fd, h.msg_id, VFM_VU_MIG_DATA_WRITE, err);
    else
        expect_ok(fd, h.msg_id, VFM_VU_MIG_DATA_WRITE);
}

/* MIG_DATA_WRITEs whose head is wrong, inside a load session: at the
 * stream's start, in its middle, and one bigger than max_data_xfer_size
 * (the server reads a write's head together with the first piece of its
 * body, so the piece is already in the session's space when the head is
 * found wrong). Each is refused, none of the garbage they carried reaches
 * the stream (its checksums would refuse the load), and the device's own
 * state, sent around them, loads. */
static void test_write_head_faults(void **state)
{
    static uint8_t st[1 << 20];
    size_t big = (1u << 20) + 8, len = 0, half;
    uint8_t *junk = malloc(big);
    uint32_t n;
    int fd = raw_connect();
    (void)state;

    assert_non_null(junk);
    memset(junk, 0xee, big);
    raw_set_state(fd, VFM_STATE_STOP_COPY, 0);
    while ((n = raw_mig_read(fd, st + len)) > 0) {
        len += n;
        assert_true(len + 65536 <= sizeof(st));
    }
    assert_true(len > 64);
    half = len / 2;
    raw_set_state(fd, VFM_STATE_RESUMING, 0);
    raw_mig_write(fd, 8 + 64, 65, junk, 64, EINVAL); /* size is not the body's */
    raw_mig_write(fd, 4, 64, junk, 64, EINVAL);      /* argsz below the head */
    raw_mig_write(fd, 8 + (uint32_t)half, (uint32_t)half, st, half, 0);
    raw_mig_write(fd, 8 + 4096, 4095, junk, 4096, EINVAL);
    raw_mig_write(fd, 0, 4096, junk, 4096, EINVAL);
    raw_mig_write(fd, (uint32_t)(8 + big), (uint32_t)big, junk, big, E2BIG);
    raw_mig_write(fd, 8 + (uint32_t)(len - half), (uint32_t)(len - half), st + half, len - half, 0);
    raw_set_state(fd, VFM_STATE_RUNNING, 0); /* the load: the stream is whole and checked */
    still_serving(fd);
    close(fd);
    free(junk);
}

/* Pre-copy over the wire, against a large-state device: a client that did
 * not negotiate vfiomig's precopy info gets ENOSYS for it and the
 * specification's behaviour (an empty MIG_DATA_READ reply at the temporary
 * end, not an error); one that did gets it, and every malformed request
 * for it is refused; bad "vfiomig" capabilities fail VERSION. */
static void test_precopy_faults(void **state)
{
    struct server_proc keep = srv;
    struct vfm_vu_precopy_info pi = {.argsz = sizeof(pi)}, got;
    struct vfm_vu_hdr h;
    uint8_t buf[4096];
    uint64_t total = 0;
    uint32_t n;
    uint16_t id;
    int fd;
    (void)state;

    assert_int_equal(server_start(&srv, "malformed-pc", "--device", "large", "--mem", "1M",
                                  "--dirty-rate", "0", NULL),
                     0);
    fd = raw_connect();
    id = send_cmd(fd, VFM_VU_VFIOMIG_PRECOPY_INFO, 0, &pi, sizeof(pi), 0, NULL, 0);
    expect_error(fd, id, VFM_VU_VFIOMIG_PRECOPY_INFO, ENOSYS);
    raw_set_state(fd, VFM_STATE_PRE_COPY, 0);
    while ((n = raw_mig_read(fd, NULL)) > 0)
        total += n;
    assert_true(total > (1u << 20)); /* the whole memory, then "no more now" */
    assert_int_equal(raw_mig_read(fd, NULL), 0);
    raw_set_state(fd, VFM_STATE_STOP_COPY, 0);
    while ((n = raw_mig_read(fd, NULL)) > 0)
        total += n;
    raw_set_state(fd, VFM_STATE_PRE_COPY, EINVAL); /* STOP_COPY -> PRE_COPY */
    raw_set_state(fd, VFM_STATE_RUNNING, 0);
    still_serving(fd);
    close(fd);

    /* bad capabilities */
    for (int k = 0; k < 2; k++) {
        static const char *const bad[] = {"{\"capabilities\":{\"vfiomig\":5}}",
                                          "{\"capabilities\":{\"vfiomig\":{\"precopy_info\":1}}}"};
        struct vfm_vu_version v = {0, 1};
        uint8_t m[256];
        size_t jl = strlen(bad[k]) + 1;
        fd = raw_connect();
        close(fd);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        {
            struct sockaddr_un a = {.sun_family = AF_UNIX};
            strcpy(a.sun_path, srv.path);
            for (int t = 0; t < 100 && connect(fd, (struct sockaddr *)&a, sizeof(a)); t++)
                usleep(10000);
        }
        memcpy(m, &v, sizeof(v));
        memcpy(m + sizeof(v), bad[k], jl);
        usleep(150000); /* the previous client's leaving is seen */
        id = send_cmd(fd, VFM_VU_VERSION, 0, m, sizeof(v) + jl, 0, NULL, 0);
        expect_error(fd, id, VFM_VU_VERSION, EINVAL);
        close(fd);
    }

    /* negotiated */
    fd = raw_connect_json("{\"capabilities\":{\"vfiomig\":{\"precopy_info\":true}}}");
    id = send_cmd(fd, VFM_VU_VFIOMIG_PRECOPY_INFO, 0, &pi, sizeof(pi), 0, NULL, 0);
    expect_error(fd, id, VFM_VU_VFIOMIG_PRECOPY_INFO, EINVAL); /* RUNNING */
    raw_set_state(fd, VFM_STATE_PRE_COPY, 0);
    id = send_cmd(fd, VFM_VU_VFIOMIG_PRECOPY_INFO, 0, &pi, 8, 0, NULL, 0);
    expect_error(fd, id, VFM_VU_VFIOMIG_PRECOPY_INFO, EINVAL); /* short */
    pi.flags = 1;
    id = send_cmd(fd, VFM_VU_VFIOMIG_PRECOPY_INFO, 0, &pi, sizeof(pi), 0, NULL, 0);
    expect_error(fd, id, VFM_VU_VFIOMIG_PRECOPY_INFO, EINVAL); /* flags */
    pi.flags = 0;
    pi.argsz = 8;
    id = send_cmd(fd, VFM_VU_VFIOMIG_PRECOPY_INFO, 0, &pi, sizeof(pi), 0, NULL, 0);
    expect_error(fd, id, VFM_VU_VFIOMIG_PRECOPY_INFO, EINVAL); /* argsz */
    pi.argsz = sizeof(pi);
    id = send_cmd(fd, VFM_VU_VFIOMIG_PRECOPY_INFO, 0, &pi, sizeof(pi), 0, &fd, 1);
    expect_error(fd, id, VFM_VU_VFIOMIG_PRECOPY_INFO, EINVAL); /* an fd */
    id = send_cmd(fd, VFM_VU_VFIOMIG_PRECOPY_INFO, 0, &pi, sizeof(pi), 0, NULL, 0);
    assert_int_equal(recv_reply(fd, &h, buf, sizeof(buf)), (ssize_t)sizeof(got));
    assert_int_equal(h.msg_id, id);
    assert_false(h.flags & VFM_VU_ERROR);
    memcpy(&got, buf, sizeof(got));
    assert_int_equal(got.initial_bytes, (1u << 20) + 24); /* all of it, and the header */
    assert_int_equal(got.dirty_bytes, 0);
    still_serving(fd);
    close(fd);
    assert_int_equal(server_stop(&srv), 0);
    srv = keep;
}

/* Appends a command to @buf at *@n. Return: its msg_id. */
static uint16_t append_cmd(uint8_t *buf, size_t *n, uint16_t cmd, const void *payload, size_t len)
{
    struct vfm_vu_hdr h = {
        .msg_id = next_id++, .cmd = cmd, .msg_size = (uint32_t)(sizeof(h) + len)};

    memcpy(buf + *n, &h, sizeof(h));
    if (len)
        memcpy(buf + *n + sizeof(h), payload, len);
    *n += sizeof(h) + len;
    return h.msg_id;
}

/* Commands sent before any reply is read, all in one write: each is
 * answered, in order, the unknown one with ENOSYS; the DMA_MAP at the end
 * gets the fd sent with that write (it is its message's), and the mapping
 * it made is there to unmap. */
static void test_pipelined(void **state)
{
    struct vfm_vu_device_info q = {.argsz = sizeof(q)};
    struct vfm_vu_dma_map m = {
        .argsz = sizeof(m), .flags = 3, .offset = 0, .addr = 1ull << 40, .size = 4096};
    struct vfm_vu_dma_unmap u = {.argsz = sizeof(u), .addr = 1ull << 40, .size = 4096};
    uint8_t buf[512];
    size_t n = 0;
    uint16_t a, b, c, d;
    int fd = raw_connect(), mfd = memfd_create("pipelined", MFD_CLOEXEC);
    (void)state;

    assert_true(mfd >= 0);
    assert_int_equal(ftruncate(mfd, 4096), 0);
    a = append_cmd(buf, &n, VFM_VU_DEVICE_GET_INFO, &q, sizeof(q));
    b = append_cmd(buf, &n, 99, NULL, 0);
    c = append_cmd(buf, &n, VFM_VU_DEVICE_GET_INFO, &q, sizeof(q));
    d = append_cmd(buf, &n, VFM_VU_DMA_MAP, &m, sizeof(m));
    send_raw(fd, buf, n, &mfd, 1);
    close(mfd);
    expect_ok(fd, a, VFM_VU_DEVICE_GET_INFO);
    expect_error(fd, b, 99, ENOSYS);
    expect_ok(fd, c, VFM_VU_DEVICE_GET_INFO);
    expect_ok(fd, d, VFM_VU_DMA_MAP);
    a = send_cmd(fd, VFM_VU_DMA_UNMAP, 0, &u, sizeof(u), 0, NULL, 0);
    expect_ok(fd, a, VFM_VU_DMA_UNMAP);
    a = send_cmd(fd, VFM_VU_DMA_UNMAP, 0, &u, sizeof(u), 0, NULL, 0);
    expect_error(fd, a, VFM_VU_DMA_UNMAP, EINVAL); /* it was mapped once: no more */
    still_serving(fd);
    close(fd);
}

/* A client that DMA-maps its own memfd as a peer's inbox and then shrinks
 * it under the device: the device's next send into it is a SIGBUS the
 * runtime catches (counted in MB_REG_DMA_FAULTS), not the end of the
 * server. And the device's own inbox, whose fd every client gets, is
 * sealed: no client can shrink it. */
static void test_dma_shrunk(void **state)
{
    struct vfm_vu_client *c;
    struct vfm_vu_region_info ri;
    struct mb_inbox *in;
    uint64_t faults = 0, peer = MB_PEER_IOVA(1);
    uint32_t index = 0, ctl = MB_CTL_SEND;
    uint16_t cmd = 0x0006; /* memory, bus master */
    int mfd = memfd_create("vfiomig-peer", MFD_CLOEXEC), rfd = -1, i;
    (void)state;

    assert_true(mfd >= 0);
    assert_int_equal(ftruncate(mfd, MB_INBOX_SIZE), 0);
    in = mmap(NULL, MB_INBOX_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    assert_true(in != MAP_FAILED);
    assert_int_equal(client_connect(&srv, &c), 0);
    assert_int_equal(vfm_vu_client_region_write(c, MB_REGION_REGS, MB_REG_INDEX, &index, 4), 0);
    assert_int_equal(vfm_vu_client_region_write(c, MB_REGION_REGS, MB_REG_PEER(1), &peer, 8), 0);
    assert_int_equal(vfm_vu_client_region_write(c, 7, 4, &cmd, 2), 0);
    assert_int_equal(vfm_vu_client_region_write(c, MB_REGION_REGS, MB_REG_CONTROL, &ctl, 4), 0);
    assert_int_equal(vfm_vu_client_dma_map(c, MB_PEER_IOVA(1), MB_INBOX_SIZE, mfd, 0,
                                           VFM_VU_DMA_READ_FLAG | VFM_VU_DMA_WRITE_FLAG),
                     0);
    /* the running device sends into it */
    for (i = 0; i < 500 && __atomic_load_n(&in->lanes[0].tail, __ATOMIC_ACQUIRE) == 0; i++)
        usleep(10000);
    assert_true(in->lanes[0].tail > 0);
    munmap(in, MB_INBOX_SIZE);
    assert_int_equal(ftruncate(mfd, 0), 0);
    for (i = 0; i < 500 && faults == 0; i++) {
        usleep(10000);
        assert_int_equal(
            vfm_vu_client_region_read(c, MB_REGION_REGS, MB_REG_DMA_FAULTS, &faults, 8), 0);
    }
    if (faults == 0)
        fail_msg("the device never reported the shrunk mapping");
    assert_int_equal(kill(srv.pid, 0), 0);
    assert_int_equal(vfm_vu_client_dma_unmap(c, MB_PEER_IOVA(1), MB_INBOX_SIZE), 0);
    /* its own inbox: the fd REGION_INFO gives cannot be shrunk or grown */
    assert_int_equal(vfm_vu_client_region_info(c, MB_REGION_INBOX, &ri, &rfd), 0);
    assert_true(rfd >= 0);
    assert_int_equal(ftruncate(rfd, 0), -1);
    assert_int_equal(errno, EPERM);
    assert_int_equal(ftruncate(rfd, 2 * MB_INBOX_SIZE), -1);
    assert_int_equal(errno, EPERM);
    close(rfd);
    close(mfd);
    vfm_vu_client_free(c);
    assert_int_equal(kill(srv.pid, 0), 0);
}

/* ---- DMA_READ / DMA_WRITE: the server's commands to a client that
 * mapped memory without an fd (QEMU maps another device's BAR so) ---- */

#define PEER_BASE 0x10000000ull
#define PEER_SIZE 0x20000u
#define PEER_WB (PEER_BASE + MB_INBOX_SIZE) /* the status record's page */

enum peer_mode { ANSWER, FAIL_EIO, BAD_COUNT, HOLD };

/* The client's memory the server reaches with messages, and how this
 * client answers them. */
struct peer {
    uint8_t mem[PEER_SIZE];
    enum peer_mode mode;
    unsigned reads, writes, refused;
    bool held; /* a DMA command left unanswered (HOLD) */
    struct vfm_vu_hdr held_h;
};

static void answer_dma(int fd, struct peer *p, const struct vfm_vu_hdr *h, const uint8_t *body,
                       size_t len)
{
    struct vfm_vu_dma_rw rw;
    struct vfm_vu_hdr r = {.msg_id = h->msg_id, .cmd = h->cmd, .flags = VFM_VU_TYPE_REPLY};
    uint8_t out[sizeof(r) + sizeof(rw) + 4096];
    bool in_range;

    assert_true(len >= sizeof(rw));
    memcpy(&rw, body, sizeof(rw));
    /* what the server asks is what it was given: inside the mapping, at
     * most max_data_xfer_size (ours: the default 1 MiB), the bytes there */
    in_range = rw.addr >= PEER_BASE && rw.count <= PEER_SIZE &&
               rw.addr - PEER_BASE <= PEER_SIZE - rw.count;
    assert_true(in_range);
    assert_true(rw.count <= 4096);
    assert_int_equal(len, sizeof(rw) + (h->cmd == VFM_VU_DMA_WRITE ? rw.count : 0));
    if (p->mode == HOLD && !p->held) {
        p->held = true;
        p->held_h = *h;
        return;
    }
    if (p->mode == FAIL_EIO || p->mode == HOLD) {
        r.flags |= VFM_VU_ERROR;
        r.error = EIO;
        r.msg_size = sizeof(r);
        p->refused++;
        send_raw(fd, &r, sizeof(r), NULL, 0);
        return;
    }
    if (h->cmd == VFM_VU_DMA_WRITE) {
        memcpy(p->mem + (rw.addr - PEER_BASE), body + sizeof(rw), rw.count);
        p->writes++;
        r.msg_size = sizeof(r) + sizeof(rw);
    } else {
        memcpy(out + sizeof(r) + sizeof(rw), p->mem + (rw.addr - PEER_BASE), rw.count);
        p->reads++;
        r.msg_size = (uint32_t)(sizeof(r) + sizeof(rw) + rw.count);
    }
    if (p->mode == BAD_COUNT)
        rw.count++; /* a reply that does not answer the request */
    memcpy(out, &r, sizeof(r));
    memcpy(out + sizeof(r), &rw, sizeof(rw));
    send_raw(fd, out, r.msg_size, NULL, 0);
}

/* Receives messages for up to @ms (or until the reply to @id, when @id is
 * not 0, whose payload goes to @buf), answering the server's DMA commands
 * on the way. Return: the reply's payload size; -1 when none came. */
static ssize_t pump(int fd, struct peer *p, uint16_t id, int ms, struct vfm_vu_hdr *rh, void *buf,
                    size_t cap)
{
    static uint8_t body[1 << 16];
    struct timespec t0, t;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        struct vfm_vu_hdr h;
        long left;
        ssize_t n;

        clock_gettime(CLOCK_MONOTONIC, &t);
        left = ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
            return -1;
        n = recv_reply(fd, &h, body, sizeof(body));
        assert_true(n >= 0);
        if ((h.flags & VFM_VU_TYPE_MASK) == VFM_VU_TYPE_COMMAND) {
            assert_true(h.cmd == VFM_VU_DMA_READ || h.cmd == VFM_VU_DMA_WRITE);
            answer_dma(fd, p, &h, body, (size_t)n);
            continue;
        }
        assert_int_equal(h.msg_id, id);
        assert_true((size_t)n <= cap);
        memcpy(buf, body, (size_t)n);
        *rh = h;
        return n;
    }
}

/* A request and its reply (which must not be an error), DMA answered. */
static ssize_t call_dma(int fd, struct peer *p, uint16_t cmd, const void *q, size_t len, void *buf,
                        size_t cap)
{
    struct vfm_vu_hdr h;
    uint16_t id = send_cmd(fd, cmd, 0, q, len, 0, NULL, 0);
    ssize_t n = pump(fd, p, id, 5000, &h, buf, cap);

    assert_true(n >= 0);
    if (h.flags & VFM_VU_ERROR)
        fail_msg("%s: error %s", vfm_vu_cmd_name(cmd), vfm_err_name((int)h.error));
    return n;
}

static void reg_put(int fd, struct peer *p, uint32_t region, uint64_t off, uint64_t v,
                    uint32_t count)
{
    uint8_t q[sizeof(struct vfm_vu_region_access) + 8], r[64];
    struct vfm_vu_region_access a = {.offset = off, .region = region, .count = count};

    memcpy(q, &a, sizeof(a));
    memcpy(q + sizeof(a), &v, count);
    call_dma(fd, p, VFM_VU_REGION_WRITE, q, sizeof(a) + count, r, sizeof(r));
}

static uint64_t reg_get(int fd, struct peer *p, uint64_t off)
{
    struct vfm_vu_region_access a = {.offset = off, .region = MB_REGION_REGS, .count = 8};
    uint8_t r[sizeof(a) + 8];
    uint64_t v;

    assert_int_equal(call_dma(fd, p, VFM_VU_REGION_READ, &a, sizeof(a), r, sizeof(r)), sizeof(r));
    memcpy(&v, r + sizeof(a), 8);
    return v;
}

/* A mailbox whose peer's inbox and driver memory the client mapped
 * without an fd sends into them with DMA_READ/DMA_WRITE messages, in
 * order, each inside the mapping; the client's error replies, malformed
 * replies and silence each cost a send (MB_REG_DMA_FAULTS, after
 * VFM_DMA_MSG_TIMEOUT_MS for silence), never the server: it answers the
 * client's own commands while its device waits for a reply, ignores a
 * reply nobody asked for, and serves the next client when this one leaves
 * with a command unanswered. */
static void test_dma_messages(void **state)
{
    static struct peer p;
    const struct mb_inbox *in = (const struct mb_inbox *)p.mem;
    struct vfm_vu_dma_map m = {
        .argsz = sizeof(m), .flags = 3, .addr = PEER_BASE, .size = PEER_SIZE};
    const struct mb_status *st = (const struct mb_status *)(p.mem + MB_INBOX_SIZE);
    struct vfm_vu_hdr h;
    uint64_t faults, tail;
    uint8_t r[64];
    int fd = raw_connect(), i;
    (void)state;

    memset(&p, 0, sizeof(p));
    call_dma(fd, &p, VFM_VU_DEVICE_RESET, NULL, 0, r, sizeof(r));
    call_dma(fd, &p, VFM_VU_DMA_MAP, &m, sizeof(m), r, sizeof(r)); /* no fd */
    faults = reg_get(fd, &p, MB_REG_DMA_FAULTS); /* the process's count: earlier tests' too */
    reg_put(fd, &p, MB_REGION_REGS, MB_REG_INTERVAL, 1000, 4);
    reg_put(fd, &p, MB_REGION_REGS, MB_REG_PEER(1), PEER_BASE, 8);
    reg_put(fd, &p, MB_REGION_REGS, MB_REG_WRITEBACK, PEER_WB, 8);
    reg_put(fd, &p, VFM_PCI_CONFIG_REGION, 4, 0x0006, 2); /* memory, bus master */
    reg_put(fd, &p, MB_REGION_REGS, MB_REG_CONTROL, MB_CTL_SEND | MB_CTL_WRITEBACK, 4);
    /* a message for it to consume (as a peer would leave it), so that it
     * writes its status record */
    reg_put(fd, &p, MB_REGION_INBOX, 5 * sizeof(struct mb_lane) + offsetof(struct mb_lane, seq), 1,
            8);
    reg_put(fd, &p, MB_REGION_INBOX, 5 * sizeof(struct mb_lane) + offsetof(struct mb_lane, tail), 1,
            8);
    for (i = 0; i < 100 && (in->lanes[0].tail < 5 || st->magic != MB_COMPAT); i++)
        pump(fd, &p, 0, 50, &h, r, sizeof(r));
    tail = in->lanes[0].tail;
    assert_true(tail >= 5);
    for (uint64_t k = 0; k < tail && k < MB_LANE_SLOTS; k++)
        assert_int_equal(in->lanes[0].seq[k], k + 1);
    for (unsigned j = 1; j < MB_MAX_DEVICES; j++) /* its own lane only */
        assert_int_equal(in->lanes[j].tail, 0);
    assert_int_equal(st->magic, MB_COMPAT);
    assert_int_equal(st->index, 0);
    assert_int_equal(st->consumed, 1);
    assert_true(p.reads > 0 && p.writes > 0);
    assert_int_equal(reg_get(fd, &p, MB_REG_DMA_FAULTS), faults); /* none on the way */

    /* error replies and replies that do not answer: sends fail, counted */
    for (enum peer_mode mode = FAIL_EIO; mode <= BAD_COUNT; mode++) {
        faults = reg_get(fd, &p, MB_REG_DMA_FAULTS);
        p.mode = mode;
        tail = in->lanes[0].tail;
        pump(fd, &p, 0, 30, &h, r, sizeof(r));
        for (i = 0; i < 100 && reg_get(fd, &p, MB_REG_DMA_FAULTS) == faults; i++)
            pump(fd, &p, 0, 20, &h, r, sizeof(r));
        assert_true(reg_get(fd, &p, MB_REG_DMA_FAULTS) > faults);
        if (mode == FAIL_EIO)
            assert_int_equal(in->lanes[0].tail, tail); /* nothing written */
        p.mode = ANSWER;
        /* a round whose replies went out in this mode counts its faults
         * when it ends: let it end before the next baseline */
        pump(fd, &p, 0, 150, &h, r, sizeof(r));
    }

    /* silence: the client's commands are answered meanwhile, and the
     * unanswered command fails in its time */
    faults = reg_get(fd, &p, MB_REG_DMA_FAULTS);
    p.mode = HOLD;
    for (i = 0; i < 100 && !p.held; i++)
        pump(fd, &p, 0, 20, &h, r, sizeof(r));
    assert_true(p.held);
    /* answered while the command waits, not after it failed (a client such
     * as QEMU replies to DMA only after its own command is answered): sent
     * a byte at a time, so that the server sees its socket readable while
     * the device thread that waits holds the reader role */
    for (int rep = 0; rep < 4; rep++) {
        struct vfm_vu_region_access a = {
            .offset = MB_REG_DMA_FAULTS, .region = MB_REGION_REGS, .count = 8};
        struct vfm_vu_hdr q = {
            .msg_id = next_id++, .cmd = VFM_VU_REGION_READ, .msg_size = sizeof(q) + sizeof(a)};
        uint8_t b[sizeof(q) + sizeof(a)];
        uint64_t v;
        memcpy(b, &q, sizeof(q));
        memcpy(b + sizeof(q), &a, sizeof(a));
        for (size_t k = 0; k < sizeof(b); k++) {
            send_raw(fd, b + k, 1, NULL, 0);
            usleep(2000);
        }
        assert_int_equal(pump(fd, &p, q.msg_id, 5000, &h, r, sizeof(r)), sizeof(a) + 8);
        memcpy(&v, r + sizeof(a), 8);
        assert_int_equal(v, faults); /* the held command has not failed yet */
    }
    assert_int_equal(reg_get(fd, &p, MB_REG_MAGIC) & 0xffffffff, MB_COMPAT);
    for (i = 0; i < 60 && reg_get(fd, &p, MB_REG_DMA_FAULTS) == faults; i++)
        pump(fd, &p, 0, 100, &h, r, sizeof(r));
    assert_true(reg_get(fd, &p, MB_REG_DMA_FAULTS) > faults);
    /* its late reply, and one no one asked for: ignored */
    {
        struct vfm_vu_dma_rw rw = {.addr = PEER_BASE, .count = 16};
        struct vfm_vu_hdr lr = {.msg_id = p.held_h.msg_id,
                                .cmd = p.held_h.cmd,
                                .msg_size = sizeof(lr) + sizeof(rw),
                                .flags = VFM_VU_TYPE_REPLY};
        uint8_t b[sizeof(lr) + sizeof(rw)];
        memcpy(b, &lr, sizeof(lr));
        memcpy(b + sizeof(lr), &rw, sizeof(rw));
        send_raw(fd, b, sizeof(b), NULL, 0);
        lr.msg_id ^= 0x5a5a;
        memcpy(b, &lr, sizeof(lr));
        send_raw(fd, b, sizeof(b), NULL, 0);
    }
    p.mode = ANSWER;
    assert_int_equal(reg_get(fd, &p, MB_REG_MAGIC) & 0xffffffff, MB_COMPAT);

    /* a client that leaves with a command unanswered: the next one is served */
    p.mode = HOLD;
    p.held = false;
    for (i = 0; i < 100 && !p.held; i++)
        pump(fd, &p, 0, 20, &h, r, sizeof(r));
    assert_true(p.held);
    close(fd);
    fd = raw_connect();
    still_serving(fd);
    /* the device is left quiet for the tests after this one */
    {
        uint16_t id = send_cmd(fd, VFM_VU_DEVICE_RESET, 0, NULL, 0, 0, NULL, 0);
        expect_ok(fd, id, VFM_VU_DEVICE_RESET);
    }
    close(fd);
    assert_int_equal(kill(srv.pid, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_negotiation),       cmocka_unit_test(test_header_faults),
        cmocka_unit_test(test_framing_lost),      cmocka_unit_test(test_payload_faults),
        cmocka_unit_test(test_fd_faults),         cmocka_unit_test(test_precopy_faults),
        cmocka_unit_test(test_write_head_faults), cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_dma_shrunk),        cmocka_unit_test(test_caps_only_to_who_asks),
        cmocka_unit_test(test_dma_messages),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, setup, teardown);
}
