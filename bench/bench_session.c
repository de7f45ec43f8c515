/* SPDX-License-Identifier: MIT */
/*
 * bench_session — what a device runtime save + restore costs, against the
 * raw cost of moving the same bytes, measured in the same run (the machines
 * are shared and noisy: compare the ratio, not the absolute times).
 *
 * For each state size: a ticker device is saved (RUNNING -> STOP_COPY, read
 * to the end of its data fd) and restored into another (RUNNING -> RESUMING,
 * written to its data fd, RESUMING -> STOP). Baseline: copying the same
 * number of bytes once from memory into a socket pair and out of it, which
 * is the least a data fd transfer can cost. Best of REPEAT runs each.
 *
 * It prints figures; it never fails (exit 0 unless it could not run).
 * usage: bench_session [MAX_SIZE_MIB]   (default 256)
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ticker.h"

#define REPEAT 3
#define CHUNK (1u << 16)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

struct writer {
    int fd;
    const uint8_t *src;
    size_t len;
};

static void *write_all(void *arg)
{
    struct writer *w = arg;
    size_t off = 0;

    while (off < w->len) {
        ssize_t n = write(w->fd, w->src + off, w->len - off < CHUNK ? w->len - off : CHUNK);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    shutdown(w->fd, SHUT_WR);
    return NULL;
}

/* Baseline: @len bytes from memory through a socket pair into memory. */
static double baseline(const uint8_t *src, uint8_t *dst, size_t len)
{
    struct writer w;
    pthread_t th;
    int sv[2];
    size_t got = 0;
    double t0 = now();

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        return -1;
    w = (struct writer){.fd = sv[0], .src = src, .len = len};
    pthread_create(&th, NULL, write_all, &w);
    for (;;) {
        ssize_t n = read(sv[1], dst + got, len - got < CHUNK ? len - got : CHUNK);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    pthread_join(th, NULL);
    close(sv[0]);
    close(sv[1]);
    return got == len ? now() - t0 : -1;
}

/* Save @a and restore into @b through their data fds. */
static double migrate(struct ticker *a, struct ticker *b, size_t *bytes)
{
    static uint8_t buf[CHUNK];
    int sfd = -1, lfd = -1;
    double t0 = now(), t;

    *bytes = 0;
    if (vfm_device_set_state(ticker_device(a), VFM_STATE_STOP_COPY, &sfd) ||
        vfm_device_set_state(ticker_device(b), VFM_STATE_RESUMING, &lfd))
        return -1;
    for (;;) {
        ssize_t n = read(sfd, buf, sizeof(buf)), w = 0;
        if (n <= 0)
            break;
        while (w < n) {
            ssize_t k = write(lfd, buf + w, (size_t)(n - w));
            if (k <= 0)
                return -1;
            w += k;
        }
        *bytes += (size_t)n;
    }
    if (vfm_device_set_state(ticker_device(b), VFM_STATE_STOP, NULL))
        return -1;
    t = now() - t0;
    close(sfd);
    close(lfd);
    vfm_device_set_state(ticker_device(a), VFM_STATE_RUNNING, NULL);
    vfm_device_set_state(ticker_device(b), VFM_STATE_RUNNING, NULL);
    return t;
}

int main(int argc, char **argv)
{
    size_t max_mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;

    signal(SIGPIPE, SIG_IGN);
    printf("device save+restore through data fds vs. raw socket copy, best of %d\n", REPEAT);
    printf("%10s %12s %12s %12s %10s %8s\n", "state", "stream B", "vfiomig ms", "raw ms", "MiB/s",
           "ratio");
    for (size_t size = 4096; size <= max_mib << 20; size *= 4) {
        struct ticker *a, *b;
        uint8_t *src = malloc(size), *dst = malloc(size);
        double best = 1e9, base = 1e9;
        size_t bytes = 0;

        if (!src || !dst || ticker_new("bench-a", size, &a) || ticker_new("bench-b", size, &b)) {
            fprintf(stderr, "bench_session: cannot allocate %zu bytes\n", size);
            return 1;
        }
        memset(src, 0x5a, size);
        for (int r = 0; r < REPEAT; r++) {
            double t = migrate(a, b, &bytes), u = baseline(src, dst, size);
            if (t < 0 || u < 0) {
                fprintf(stderr, "bench_session: a run failed at %zu bytes\n", size);
                return 1;
            }
            best = t < best ? t : best;
            base = u < base ? u : base;
        }
        printf("%9zuK %12zu %12.3f %12.3f %10.1f %7.2fx\n", size >> 10, bytes, best * 1e3,
               base * 1e3, (double)bytes / best / (1 << 20), best / base);
        ticker_free(a);
        ticker_free(b);
        free(src);
        free(dst);
    }
    return 0;
}
