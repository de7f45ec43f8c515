/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: a whole vfio-user server, as a hostile client meets it — the
 * buffered reader's framing, every command's handling, migration data into
 * and out of a real device's sessions, and what a connection that ends
 * anywhere leaves behind. Two servers run in this process on threads (one
 * with the default max_data_xfer_size, one with the smallest, 4 KiB, so
 * that the size limits are reached), each with a
 * large-state device (2 KiB of memory, P2P and pre-copy), over real UNIX
 * sockets; the device's state carries over from one input to the next, as
 * it does from one client to the next. A third server is driven by this
 * thread's own loop (vfm_server_dispatch() on an adopted socketpair): the
 * reader that takes messages only once whole and the queue of replies the
 * socket cannot take.
 *
 * Input: byte 0: bit 0 picks a threaded server, bit 4 the looped one
 * instead; bits 1-3 the size of the writes the
 * rest is sent in (all at once, 1, 3, 16, 61, 512 or 4096 bytes), so the
 * server sees messages whole, in pieces and run together. The rest: bytes
 * for the socket, a stream of messages (the seeds are valid sessions).
 * Invariants: no crash, leak or out-of-bounds access (sanitizers); the
 * server answers and, once the client has sent everything and shut its
 * side, closes within 10 seconds (a server that waits for bytes that will
 * never come is a hang, reported by abort()).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <vfiomig/vfio_user.h>

#include "device/stream.h"
#include "fuzz.h"
#include "large.h"

#define DEV_MEM 2048u

struct fuzz_server {
    char path[108];
    struct large *lg;
    struct vfm_dma *dma;
    struct vfm_server *srv;
    pthread_t thread;
};

static struct fuzz_server servers[2];
static struct fuzz_server looped; /* no thread, no path: this thread's loop */
static char dir[64];

static void *serve(void *arg)
{
    vfm_server_run(arg);
    return NULL;
}

static int new_large(struct large **out)
{
    struct large_config lc = {
        .name = "fuzz-large", .size = DEV_MEM, .page = 512, .p2p = true, .seed = 7};
    return large_new(&lc, out);
}

static void stop_servers(void)
{
    for (int i = 0; i < 2; i++) {
        struct fuzz_server *f = &servers[i];
        if (!f->srv)
            continue;
        vfm_server_stop(f->srv);
        pthread_join(f->thread, NULL);
        vfm_server_free(f->srv);
        large_free(f->lg);
        vfm_dma_free(f->dma);
    }
    rmdir(dir);
    if (looped.srv) {
        vfm_server_free(looped.srv);
        large_free(looped.lg);
        vfm_dma_free(looped.dma);
    }
}

static void start_servers(void)
{
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof(dir), "/tmp/vfiomig-fuzz-XXXXXX");
    if (!mkdtemp(dir))
        abort();
    for (int i = 0; i < 2; i++) {
        struct fuzz_server *f = &servers[i];
        struct vfm_server_config cfg = {.max_data_xfer_size = i == 1 ? 4096 : 0};

        snprintf(f->path, sizeof(f->path), "%s/s%d.sock", dir, i);
        if (vfm_dma_new(16, &f->dma) || new_large(&f->lg))
            abort();
        cfg.socket_path = f->path;
        cfg.dev = large_device(f->lg);
        cfg.dma = f->dma;
        large_server_regions(f->lg, &cfg);
        if (vfm_server_new(&cfg, &f->srv) || pthread_create(&f->thread, NULL, serve, f->srv))
            abort();
    }
    {
        struct vfm_server_config cfg = {0};
        if (vfm_dma_new(16, &looped.dma) || new_large(&looped.lg))
            abort();
        cfg.dev = large_device(looped.lg);
        cfg.dma = looped.dma;
        large_server_regions(looped.lg, &cfg);
        if (vfm_server_new(&cfg, &looped.srv))
            abort();
    }
    atexit(stop_servers);
}

static void hang(const uint8_t *data, size_t size)
{
    FILE *f = fopen("fuzz-server-hang.bin", "wb");
    if (f) {
        fwrite(data, 1, size, f);
        fclose(f);
    }
    fprintf(stderr, "fuzz_server: the server neither answered nor closed in 10 s "
                    "(input after its first byte: fuzz-server-hang.bin)\n");
    abort();
}

/* Sends @data in writes of @chunk bytes (0: as much as goes) while taking
 * whatever the server answers, then shuts the sending side and reads
 * until the server closes. */
static void run_client(const char *path, const uint8_t *data, size_t size, size_t chunk)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    size_t off = 0;
    bool shut = false;

    if (fd < 0)
        abort();
    strcpy(a.sun_path, path);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)))
        abort();
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN | (off < size ? POLLOUT : 0)};
        uint8_t buf[65536];
        int n;

        if (off == size && !shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        n = poll(&p, 1, 10000);

        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            hang(data, size);
        if (p.revents & POLLOUT) {
            size_t k = chunk && size - off > chunk ? chunk : size - off;
            ssize_t w = send(fd, data + off, k, MSG_NOSIGNAL);
            if (w > 0)
                off += (size_t)w;
            else if (w < 0 && errno != EAGAIN)
                off = size; /* the server closed: nothing more goes */
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = recv(fd, buf, sizeof(buf), 0);
            if (r == 0 || (r < 0 && errno != EAGAIN))
                break; /* closed (or reset): the server is done with us */
        }
    }
    close(fd);
}

/* As run_client(), against the looped server: one poll() for both ends,
 * then the server handles what is ready and the client takes what came. */
static void run_loop(const uint8_t *data, size_t size, size_t chunk)
{
    int sv[2];
    size_t off = 0;
    bool shut = false;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) ||
        vfm_server_adopt(looped.srv, sv[0]))
        abort();
    for (;;) {
        struct pollfd p[2] = {{.fd = sv[1], .events = POLLIN | (off < size ? POLLOUT : 0)},
                              {.fd = vfm_server_poll_fd(looped.srv), .events = POLLIN}};
        uint8_t buf[65536];
        ssize_t r;
        int n;

        if (off == size && !shut) {
            shutdown(sv[1], SHUT_WR);
            shut = true;
        }
        n = poll(p, 2, 10000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            hang(data, size);
        if (p[0].revents & POLLOUT) {
            size_t k = chunk && size - off > chunk ? chunk : size - off;
            ssize_t w = send(sv[1], data + off, k, MSG_NOSIGNAL);
            if (w > 0)
                off += (size_t)w;
            else if (w < 0 && errno != EAGAIN)
                off = size;
        }
        if (vfm_server_dispatch(looped.srv))
            abort(); /* only a stop ends it, and there is none */
        r = recv(sv[1], buf, sizeof(buf), 0);
        if (r == 0 || (r < 0 && errno != EAGAIN))
            break;
    }
    close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t chunks[8] = {0, 1, 3, 16, 61, 512, 4096, 0};

    if (size < 1)
        return 0;
    if (!servers[0].srv)
        start_servers();
    if (data[0] & 0x10)
        run_loop(data + 1, size - 1, chunks[(data[0] >> 1) & 7]);
    else
        run_client(servers[data[0] & 1].path, data + 1, size - 1, chunks[(data[0] >> 1) & 7]);
    return 0;
}

/* ---- seeds: valid sessions ---- */

struct seed {
    uint8_t *out;
    size_t len, cap;
    uint16_t id;
};

static void put(struct seed *s, uint16_t cmd, const void *a, size_t alen, const void *b,
                size_t blen)
{
    struct vfm_vu_hdr h = {.msg_id = s->id++, .cmd = cmd};
    size_t n = sizeof(h) + alen + blen;

    if (s->len + n > s->cap)
        return;
    h.msg_size = (uint32_t)n;
    memcpy(s->out + s->len, &h, sizeof(h));
    if (alen)
        memcpy(s->out + s->len + sizeof(h), a, alen);
    if (blen)
        memcpy(s->out + s->len + sizeof(h) + alen, b, blen);
    s->len += n;
}

static void version(struct seed *s, const char *json)
{
    struct vfm_vu_version v = {VFM_VU_MAJOR, VFM_VU_MINOR};
    put(s, VFM_VU_VERSION, &v, sizeof(v), json, json ? strlen(json) + 1 : 0);
}

static void set_state(struct seed *s, uint32_t state)
{
    struct {
        struct vfm_vu_feature f;
        struct vfm_vu_mig_state m;
    } __attribute__((packed))
    q = {{sizeof(q), VFM_FEATURE_MIG_DEVICE_STATE | VFM_FEATURE_SET}, {state, -1}};
    put(s, VFM_VU_DEVICE_FEATURE, &q, sizeof(q), NULL, 0);
}

static void feature_get(struct seed *s, uint32_t id)
{
    struct vfm_vu_feature f = {64, id | VFM_FEATURE_GET};
    put(s, VFM_VU_DEVICE_FEATURE, &f, sizeof(f), NULL, 0);
}

static void mig_read(struct seed *s, uint32_t n)
{
    struct vfm_vu_mig_data m = {sizeof(m) + n, n};
    put(s, VFM_VU_MIG_DATA_READ, &m, sizeof(m), NULL, 0);
}

static void mig_write(struct seed *s, const void *data, uint32_t n)
{
    struct vfm_vu_mig_data m = {sizeof(m) + n, n};
    put(s, VFM_VU_MIG_DATA_WRITE, &m, sizeof(m), data, n);
}

/* The fuzz device's own saved state: a stream a load accepts. */
static size_t saved_state(uint8_t *out, size_t cap)
{
    struct large *lg;
    struct vfm_device *dev;
    size_t len = 0;
    ssize_t r;

    if (new_large(&lg))
        return 0;
    dev = large_device(lg);
    if (vfm_device_set_state(dev, VFM_STATE_STOP_COPY, NULL) == 0)
        while ((r = vfm_device_data_read(dev, out + len, cap - len)) > 0)
            len += (size_t)r;
    large_free(lg);
    return len;
}

size_t fuzz_seed(unsigned i, uint8_t *out, size_t cap)
{
    struct seed s = {out + 1, 0, cap - 1, 1};

    if (i >= 9 || cap < 8192)
        return 0;
    out[0] = (uint8_t)((i & 1) | ((i % 7) << 1));
    if (i >= 6) {
        /* seeds 1, 3 and 4 again, to the looped server */
        i = i == 6 ? 1 : i == 7 ? 3 : 4;
        out[0] = (uint8_t)(0x10 | ((i % 7) << 1));
    }
    switch (i) {
    case 0: { /* what a client asks first, and region access */
        struct vfm_vu_device_info di = {sizeof(di)};
        struct vfm_vu_region_info ri = {.argsz = sizeof(ri), .index = 0};
        struct vfm_vu_region_access ra = {.offset = 0, .region = 0, .count = 8};
        uint64_t v = 0x1122334455667788ull;
        version(&s, "{\"capabilities\":{\"max_msg_fds\":8,\"max_data_xfer_size\":65536}}");
        put(&s, VFM_VU_DEVICE_GET_INFO, &di, sizeof(di), NULL, 0);
        put(&s, VFM_VU_DEVICE_GET_REGION_INFO, &ri, sizeof(ri), NULL, 0);
        put(&s, VFM_VU_REGION_READ, &ra, sizeof(ra), NULL, 0);
        put(&s, VFM_VU_REGION_WRITE, &ra, sizeof(ra), &v, sizeof(v));
        feature_get(&s, VFM_FEATURE_MIGRATION);
        feature_get(&s, VFM_FEATURE_MIG_DEVICE_STATE);
        feature_get(&s, VFM_FEATURE_MIG_DATA_SIZE);
        break;
    }
    case 1: /* a save, read in pieces */
    case 2:
        version(&s, NULL);
        set_state(&s, VFM_STATE_RUNNING_P2P);
        set_state(&s, VFM_STATE_STOP_COPY);
        for (int k = 0; k < 4; k++)
            mig_read(&s, 1500);
        set_state(&s, VFM_STATE_STOP);
        set_state(&s, VFM_STATE_RUNNING);
        break;
    case 3: { /* a load of the device's own state, in two writes */
        static uint8_t st[8192];
        size_t n = saved_state(st, sizeof(st));
        version(&s, NULL);
        set_state(&s, VFM_STATE_RESUMING);
        mig_write(&s, st, (uint32_t)(n / 3));
        mig_write(&s, st + n / 3, (uint32_t)(n - n / 3));
        set_state(&s, VFM_STATE_RUNNING);
        break;
    }
    case 4: { /* pre-copy, with vfiomig's precopy info */
        struct vfm_vu_precopy_info pi = {.argsz = sizeof(pi)};
        version(&s, "{\"capabilities\":{\"vfiomig\":{\"precopy_info\":true}}}");
        set_state(&s, VFM_STATE_PRE_COPY);
        put(&s, VFM_VU_VFIOMIG_PRECOPY_INFO, &pi, sizeof(pi), NULL, 0);
        mig_read(&s, 2048);
        mig_read(&s, 4096);
        set_state(&s, VFM_STATE_PRE_COPY_P2P);
        set_state(&s, VFM_STATE_STOP_COPY);
        mig_read(&s, 4096);
        set_state(&s, VFM_STATE_RUNNING);
        break;
    }
    case 5: { /* reset, unmapping, and what no device here has */
        struct vfm_vu_dma_unmap um = {sizeof(um), 0, 1ull << 30, 4096};
        struct vfm_vu_irq_info ii = {sizeof(ii), 0, 0, 0};
        version(&s, NULL);
        set_state(&s, VFM_STATE_STOP);
        put(&s, VFM_VU_DEVICE_RESET, NULL, 0, NULL, 0);
        put(&s, VFM_VU_DMA_UNMAP, &um, sizeof(um), NULL, 0);
        put(&s, VFM_VU_DEVICE_GET_IRQ_INFO, &ii, sizeof(ii), NULL, 0);
        put(&s, 99, NULL, 0, NULL, 0);
        break;
    }
    }
    return 1 + s.len;
}
