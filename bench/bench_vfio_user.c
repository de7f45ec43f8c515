/* SPDX-License-Identifier: MIT */
/*
 * bench_vfio_user — what the vfio-user transport costs, against bare
 * sockets measured in the same run (the machines are shared and noisy:
 * compare the ratios).
 *
 *  1. State-change round trip: SET MIG_DEVICE_STATE alternating RUNNING and
 *     RUNNING_P2P on a p2p-mailbox device in a server process (its arcs
 *     quiesce and restart its sender thread), and on a large-state device
 *     whose P2P arcs do nothing (the transport and the runtime alone),
 *     against a bare ping-pong of messages of the same sizes between two
 *     processes, whose server takes each message in one read (it knows the
 *     size: the least a bare loop can do; one that reads the header and
 *     then the body is about 1.5 us slower here).
 *  2. MIG_DATA_READ and MIG_DATA_WRITE of a 256 MiB state (a ticker device)
 *     at 32 KiB, 1 MiB and 4 MiB per message, against a bare
 *     request/response loop moving the same bytes in messages of the same
 *     shape (the server side answers from, or reads into, a buffer as large
 *     as the state, faulted in beforehand, at successive offsets: the bytes
 *     of a state go to, or come from, a state's worth of memory, not one
 *     cache-hot 4 MiB buffer, which flattered the baseline before). The
 *     ticker loads in place (vfm_mig_ops.load_buffer: the runtime receives
 *     into the ticker's spare block); "rt buffer" is MIG_DATA_WRITE into a
 *     large-state device that does not, so its load session receives into
 *     fresh memory the runtime allocates (the kernel zeroes it as the bytes
 *     arrive).
 *
 * Servers are forked processes; the client is this process. It prints
 * figures and never fails the build.
 * usage: bench_vfio_user [STATE_MIB] [ROUND_TRIPS]   (default 256, 20000)
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vfiomig/vfio_user.h>

#include "servers.h"

#define REPEAT 5

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of @n values (sorted in place). */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int full_read(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, (char *)buf + got, len - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static int full_write(int fd, const struct iovec *iov, int n)
{
    struct iovec v[4];
    memcpy(v, iov, sizeof(*iov) * (size_t)n);
    struct iovec *p = v;
    while (n) {
        ssize_t w = writev(fd, p, n);
        if (w < 0)
            return -1;
        while (n && (size_t)w >= p->iov_len) {
            w -= (ssize_t)p->iov_len;
            p++;
            n--;
        }
        if (n) {
            p->iov_base = (char *)p->iov_base + w;
            p->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* ---- servers (children) ---- */

/* The bare peer for throughput: reads a header; if the header says "reply
 * with N bytes" (cmd 1) it replies header + N bytes from a buffer; if it
 * carries N bytes (cmd 2) it reads them into a buffer and replies a
 * header. */
static pid_t serve_bare(const char *path, size_t state)
{
    pid_t pid = fork();

    if (pid == 0) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        int l = socket(AF_UNIX, SOCK_STREAM, 0), c;
        size_t cap = state + (4u << 20), roff = 0, woff = 0;
        uint8_t *buf = malloc(cap + 64);

        strcpy(a.sun_path, path);
        unlink(path);
        if (!buf || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1))
            _exit(1);
        memset(buf, 0x5a, cap + 64);
        while ((c = accept(l, NULL, NULL)) >= 0) {
            struct vfm_vu_hdr h;
            while (full_read(c, &h, sizeof(h)) == 0) {
                uint32_t n = h.msg_size - (uint32_t)sizeof(h);
                struct vfm_vu_mig_data m;
                if (h.cmd == 1) { /* read: reply with m.size bytes */
                    if (full_read(c, &m, sizeof(m)))
                        break;
                    if (roff + m.size > cap)
                        roff = 0;
                    h.msg_size = (uint32_t)(sizeof(h) + sizeof(m) + m.size);
                    struct iovec v[3] = {{&h, sizeof(h)}, {&m, sizeof(m)}, {buf + roff, m.size}};
                    full_write(c, v, 3);
                    roff += m.size;
                } else { /* write: take the bytes, reply the header */
                    if (woff + n > cap)
                        woff = 0;
                    if (full_read(c, buf + woff, n))
                        break;
                    woff += n;
                    h.msg_size = sizeof(h);
                    struct iovec v = {&h, sizeof(h)};
                    full_write(c, &v, 1);
                }
            }
            close(c);
        }
        _exit(0);
    }
    return pid;
}

/* The bare peer for round trips: messages of @size bytes, each taken in
 * one read (it knows their size: the least a bare loop can do) and sent
 * back. */
static pid_t serve_pingpong(const char *path, size_t size)
{
    pid_t pid = fork();

    if (pid == 0) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        int l = socket(AF_UNIX, SOCK_STREAM, 0), c;
        uint8_t msg[256];

        strcpy(a.sun_path, path);
        unlink(path);
        if (size > sizeof(msg) || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1))
            _exit(1);
        while ((c = accept(l, NULL, NULL)) >= 0) {
            while (full_read(c, msg, size) == 0) {
                struct iovec v = {msg, size};
                if (full_write(c, &v, 1))
                    break;
            }
            close(c);
        }
        _exit(0);
    }
    return pid;
}

static int bare_connect(const char *path)
{
    for (int i = 0; i < 500; i++) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        strcpy(a.sun_path, path);
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
            return fd;
        close(fd);
        usleep(10000);
    }
    return -1;
}

/* ---- 1. round trips ---- */

/* A ping of @size bytes (a header and a body from two places, as a
 * request is sent), answered by a pong of the same size taken in one read. */
static double bare_pingpong(int fd, unsigned n, size_t size)
{
    uint8_t buf[256] = {0};
    struct vfm_vu_hdr h = {.cmd = 3, .msg_size = (uint32_t)size};
    double t0 = now();

    for (unsigned i = 0; i < n; i++) {
        struct iovec v[2] = {{&h, sizeof(h)}, {buf, size - sizeof(h)}};
        if (full_write(fd, v, 2) || full_read(fd, buf, size))
            return -1;
    }
    return (now() - t0) / n;
}

static double vu_state_changes(struct vfm_endpoint *ep, unsigned n)
{
    double t0 = now();
    for (unsigned i = 0; i < n; i++)
        if (vfm_ep_set_state(ep, i & 1 ? VFM_STATE_RUNNING : VFM_STATE_RUNNING_P2P))
            return -1;
    return (now() - t0) / n;
}

/* ---- 2. throughput ---- */

static double bare_read(int fd, uint8_t *dst, size_t total, size_t chunk)
{
    double t0 = now();
    for (size_t off = 0; off < total; off += chunk) {
        size_t n = total - off < chunk ? total - off : chunk;
        struct vfm_vu_hdr h = {.cmd = 1, .msg_size = sizeof(h) + 8};
        struct vfm_vu_mig_data m = {.argsz = (uint32_t)(8 + n), .size = (uint32_t)n};
        struct iovec v[2] = {{&h, sizeof(h)}, {&m, sizeof(m)}};
        if (full_write(fd, v, 2) || full_read(fd, &h, sizeof(h)) || full_read(fd, &m, 8) ||
            full_read(fd, dst + off, m.size))
            return -1;
    }
    return now() - t0;
}

static double bare_write(int fd, const uint8_t *src, size_t total, size_t chunk)
{
    double t0 = now();
    for (size_t off = 0; off < total; off += chunk) {
        size_t n = total - off < chunk ? total - off : chunk;
        struct vfm_vu_hdr h = {.cmd = 2, .msg_size = (uint32_t)(sizeof(h) + 8 + n)};
        struct vfm_vu_mig_data m = {.argsz = (uint32_t)(8 + n), .size = (uint32_t)n};
        struct iovec v[3] = {{&h, sizeof(h)}, {&m, sizeof(m)}, {(void *)src + off, n}};
        if (full_write(fd, v, 3) || full_read(fd, &h, sizeof(h)))
            return -1;
    }
    return now() - t0;
}

static double vu_read(struct vfm_endpoint *ep, uint8_t *dst, size_t cap, size_t chunk,
                      size_t *total)
{
    double t0, t;
    ssize_t r;

    *total = 0;
    if (vfm_ep_set_state(ep, VFM_STATE_STOP_COPY))
        return -1;
    t0 = now();
    while ((r = vfm_ep_read(ep, dst + *total, cap - *total < chunk ? cap - *total : chunk)) > 0)
        *total += (size_t)r;
    t = now() - t0;
    if (r < 0 || vfm_ep_set_state(ep, VFM_STATE_RUNNING))
        return -1;
    return t;
}

static double vu_write(struct vfm_endpoint *ep, const uint8_t *src, size_t total, size_t chunk)
{
    double t0, t;

    if (vfm_ep_set_state(ep, VFM_STATE_RESUMING))
        return -1;
    t0 = now();
    for (size_t off = 0; off < total; off += chunk) {
        size_t n = total - off < chunk ? total - off : chunk;
        if (vfm_ep_write(ep, src + off, n) != (ssize_t)n)
            return -1;
    }
    t = now() - t0;
    if (vfm_ep_set_state(ep, VFM_STATE_RUNNING))
        return -1;
    return t;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
    unsigned trips = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 20000;
    static const size_t chunks[] = {32u << 10, 1u << 20, 4u << 20};
    char dir[] = "/tmp/vfiomig-bench-XXXXXX", p_mb[128], p_tk[128], p_bare[128], p_lg[128],
         p_ip[128], p_pp[128];
    pid_t kids[6];
    static const int rt_kids[] = {0, 3, 5}; /* the round trips' servers */
    struct vfm_vu_client *cmb, *ctk, *clg, *cip;
    size_t state = mib << 20, cap = state + (1 << 20), total = 0;
    uint8_t *buf = malloc(cap), *scratch = malloc(cap); /* the bare loop's own buffer */
    int bare, pp;

    signal(SIGPIPE, SIG_IGN);
    if (!buf || !scratch || !mkdtemp(dir))
        return 1;
    snprintf(p_mb, sizeof(p_mb), "%s/mailbox.sock", dir);
    snprintf(p_tk, sizeof(p_tk), "%s/ticker.sock", dir);
    snprintf(p_bare, sizeof(p_bare), "%s/bare.sock", dir);
    snprintf(p_lg, sizeof(p_lg), "%s/large.sock", dir);
    snprintf(p_ip, sizeof(p_ip), "%s/inplace.sock", dir);
    snprintf(p_pp, sizeof(p_pp), "%s/pingpong.sock", dir);
    kids[0] = bench_serve(p_mb, BENCH_MAILBOX, 0);
    kids[1] = bench_serve(p_tk, BENCH_TICKER, state);
    kids[2] = serve_bare(p_bare, state);
    kids[3] = bench_serve(p_lg, BENCH_LARGE, 1u << 20);
    kids[4] = bench_serve(p_ip, BENCH_LARGE, state);
    kids[5] = serve_pingpong(p_pp, 32);
    cmb = bench_connect(p_mb);
    ctk = bench_connect(p_tk);
    clg = bench_connect(p_lg);
    cip = bench_connect(p_ip);
    bare = bare_connect(p_bare);
    pp = bare_connect(p_pp);
    if (!cmb || !ctk || !clg || !cip || bare < 0 || pp < 0) {
        fprintf(stderr, "bench_vfio_user: servers did not start\n");
        return 1;
    }
    memset(buf, 0x33, cap);
    memset(scratch, 0x33, cap);

    /* 1. round trips: request 16+16 bytes, reply 16+16 bytes. Every
     * process on one CPU for this part, when it can be arranged: a round
     * trip is then the two sides' work and two context switches, not the
     * luck of cross-CPU wake-ups, which swung the figure by +-20% */
    {
        cpu_set_t one, all;
        int pinned = 0;
        CPU_ZERO(&one);
        CPU_SET(0, &one);
        if (sched_getaffinity(0, sizeof(all), &all) == 0) {
            pinned = 1;
            for (int i = 0; i < 3 && pinned; i++)
                if (sched_setaffinity(kids[rt_kids[i]], sizeof(one), &one))
                    pinned = 0;
            if (pinned && sched_setaffinity(0, sizeof(one), &one))
                pinned = 0;
        }
        /* many short alternating batches, best of each: the least disturbed
         * figure for both, taken in the same minutes */
        double best_vu = 1e9, best_lg = 1e9, best_bare = 1e9;
        unsigned batch = trips / 10 ? trips / 10 : 1;
        for (int r = 0; r < 10 * REPEAT; r++) {
            double v = vu_state_changes(vfm_vu_client_endpoint(cmb), batch);
            double l = vu_state_changes(vfm_vu_client_endpoint(clg), batch);
            double b = bare_pingpong(pp, batch, 32);
            if (v < 0 || l < 0 || b < 0)
                return 1;
            best_vu = v < best_vu ? v : best_vu;
            best_lg = l < best_lg ? l : best_lg;
            best_bare = b < best_bare ? b : best_bare;
        }
        printf("state-change round trip (RUNNING <-> RUNNING_P2P), best of %d alternating "
               "batches of %u:\n",
               10 * REPEAT, batch);
        printf("  vfio-user SET, p2p-mailbox (arcs quiesce a thread) %8.2f us   ratio %.2fx\n",
               best_vu * 1e6, best_vu / best_bare);
        printf("  vfio-user SET, no-op arcs (transport + runtime)    %8.2f us   ratio %.2fx\n",
               best_lg * 1e6, best_lg / best_bare);
        printf("  bare ping-pong of the same message sizes           %8.2f us\n", best_bare * 1e6);
        printf("  (%s)\n", pinned ? "client and servers on one CPU" : "not pinned");
        if (pinned) {
            for (int i = 0; i < 3; i++)
                sched_setaffinity(kids[rt_kids[i]], sizeof(all), &all);
            sched_setaffinity(0, sizeof(all), &all);
        }
    }

    /* 2. throughput */
    printf("migration data, %zu MiB state, %d rounds (MiB/s: the best round; ratio: "
           "vfio-user/bare\nthroughput, of the best rounds and the median of each round's "
           "own):\n",
           mib, REPEAT);
    printf("  %6s %7s %7s %5s %5s  %7s %7s %5s %5s  %9s %5s %5s\n", "chunk", "READ", "bare", "best",
           "med", "WRITE", "bare", "best", "med", "rt buffer", "best", "med");
    for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
        /* per round: read, bare read, write, bare write, runtime-buffer write */
        double t[REPEAT][5], best[5] = {1e9, 1e9, 1e9, 1e9, 1e9};
        double rr[REPEAT], wr[REPEAT], ir[REPEAT];
        size_t itotal = 0;
        size_t c = chunks[k];
        for (int r = 0; r < REPEAT; r++) {
            if ((t[r][0] = vu_read(vfm_vu_client_endpoint(ctk), buf, cap, c, &total)) < 0 ||
                (t[r][1] = bare_read(bare, scratch, total, c)) < 0)
                return 1;
            if ((t[r][2] = vu_write(vfm_vu_client_endpoint(ctk), buf, total, c)) < 0) {
                fprintf(stderr, "write failed\n");
                return 1;
            }
            if ((t[r][3] = bare_write(bare, scratch, total, c)) < 0)
                return 1;
            /* the same size of state into a device whose load session
             * receives into a buffer of the runtime's */
            if (vu_read(vfm_vu_client_endpoint(cip), scratch, cap, 4u << 20, &itotal) < 0 ||
                (t[r][4] = vu_write(vfm_vu_client_endpoint(cip), scratch, itotal, c)) < 0) {
                fprintf(stderr, "runtime-buffer write failed\n");
                return 1;
            }
            for (int j = 0; j < 5; j++)
                best[j] = t[r][j] < best[j] ? t[r][j] : best[j];
            rr[r] = t[r][1] / t[r][0];
            wr[r] = t[r][3] / t[r][2];
            ir[r] = (t[r][3] / (double)total) / (t[r][4] / (double)itotal);
        }
        {
            double mb = (double)total / (1 << 20), mi = (double)itotal / (1 << 20);
            printf("  %5zuK %7.0f %7.0f %4.2fx %4.2fx  %7.0f %7.0f %4.2fx %4.2fx  %9.0f %4.2fx "
                   "%4.2fx\n",
                   c >> 10, mb / best[0], mb / best[1], best[1] / best[0], median(rr, REPEAT),
                   mb / best[2], mb / best[3], best[3] / best[2], median(wr, REPEAT), mi / best[4],
                   (mi / best[4]) / (mb / best[3]), median(ir, REPEAT));
        }
    }
    vfm_vu_client_free(cmb);
    vfm_vu_client_free(ctk);
    vfm_vu_client_free(clg);
    vfm_vu_client_free(cip);
    close(bare);
    close(pp);
    for (int i = 0; i < 6; i++) {
        kill(kids[i], SIGTERM);
        waitpid(kids[i], NULL, 0);
    }
    unlink(p_mb);
    unlink(p_tk);
    unlink(p_bare);
    unlink(p_pp);
    unlink(p_lg);
    unlink(p_ip);
    rmdir(dir);
    free(buf);
    free(scratch);
    return 0;
}
