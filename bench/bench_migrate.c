/* SPDX-License-Identifier: MIT */
/*
 * bench_migrate — downtime of a live migration and its phases, with device
 * server processes, next to the raw time to move the same bytes through a
 * socket measured in the same run (the machines are shared and noisy:
 * compare the ratios).
 *
 *  1. 1..64 p2p-mailbox devices (about 66 KiB of state each);
 *  2. one ticker device whose state is 4 KiB .. 256 MiB.
 *
 * Each case migrates there and back REPEAT times (sources and destinations
 * swap) and keeps the best. It prints figures; it never fails the build.
 * usage: bench_migrate [MAX_DEVICES] [MAX_STATE_MIB]   (default 64, 256)
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <vfiomig/migrate.h>

#include "servers.h"
#include "stats.h"

#define REPEAT 3

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

struct sink {
    int fd;
    size_t len;
};

static void *drain(void *arg)
{
    struct sink *s = arg;
    static char buf[1 << 20];
    size_t got = 0;
    while (got < s->len) {
        ssize_t r = read(s->fd, buf, sizeof(buf));
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return NULL;
}

/* The raw baseline: @len bytes from memory through a socket pair. */
static double raw_move(size_t len)
{
    static char buf[1 << 20];
    struct sink s;
    pthread_t t;
    int sv[2];
    double t0;

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        return -1;
    s = (struct sink){sv[1], len};
    t0 = now();
    pthread_create(&t, NULL, drain, &s);
    bench_write_len(sv[0], buf, sizeof(buf), len);
    pthread_join(t, NULL);
    close(sv[0]);
    close(sv[1]);
    return now() - t0;
}

/* Migrates @n devices of @kind, there and back REPEAT times; prints a row. */
static int run_case(const char *dir, unsigned n, enum bench_dev kind, size_t mem, const char *label)
{
    pid_t pid[2][64];
    struct vfm_vu_client *c[2][64];
    struct vfm_endpoint *ep[2][64];
    struct vfm_mig_config cfg = {.ndev = n};
    struct vfm_mig_report best = {0}, rep;
    double raw = 1e9;
    int ret = 0;

    best.downtime_ns = INT64_MAX;
    for (int side = 0; side < 2; side++)
        for (unsigned i = 0; i < n; i++) {
            char path[256];
            snprintf(path, sizeof(path), "%s/%d-%u.sock", dir, side, i);
            pid[side][i] = bench_serve(path, kind, mem);
            c[side][i] = bench_connect(path);
            if (!c[side][i])
                return -1;
            ep[side][i] = vfm_vu_client_endpoint(c[side][i]);
        }
    for (unsigned i = 0; i < n; i++)
        vfm_ep_set_state(ep[1][i], VFM_STATE_STOP);
    for (int r = 0; r < 2 * REPEAT && !ret; r++) {
        cfg.src = ep[r % 2];
        cfg.dst = ep[1 - r % 2];
        ret = vfm_migrate_local(&cfg, &rep);
        if (!ret && rep.downtime_ns < best.downtime_ns) {
            vfm_mig_report_free(&best);
            best = rep;
            best.spans = NULL;
        }
        vfm_mig_report_free(&rep);
    }
    if (!ret)
        for (int r = 0; r < REPEAT; r++) {
            double t = raw_move(best.bytes);
            raw = t < raw ? t : raw;
        }
    if (!ret)
        printf("%-14s %10llu %10.2f %8.2f %8.2f %8.2f %8.2f %10.2f %7.1fx\n", label,
               (unsigned long long)best.bytes, best.downtime_ns / 1e6,
               best.phase_ns[VFM_PHASE_QUIESCE] / 1e6, best.phase_ns[VFM_PHASE_SAVE] / 1e6,
               best.phase_ns[VFM_PHASE_LOAD] / 1e6,
               (best.phase_ns[VFM_PHASE_START_P2P] + best.phase_ns[VFM_PHASE_START]) / 1e6,
               raw * 1e3, best.downtime_ns / 1e9 / raw);
    else
        printf("%-14s migration failed: %s\n", label, rep.message);
    for (int side = 0; side < 2; side++)
        for (unsigned i = 0; i < n; i++) {
            vfm_vu_client_free(c[side][i]);
            bench_unserve(pid[side][i]);
        }
    return ret;
}

int main(int argc, char **argv)
{
    unsigned max_dev = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 64;
    size_t max_mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 256;
    char dir[] = "/tmp/vfiomig-benchmig-XXXXXX";

    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(dir) || max_dev > 64)
        return 1;
    printf("live migration downtime, best of %d (ms); raw = the same bytes through a socket\n",
           2 * REPEAT);
    printf("%-14s %10s %10s %8s %8s %8s %8s %10s %8s\n", "case", "bytes", "downtime", "quiesce",
           "save", "load", "start", "raw ms", "ratio");
    for (unsigned n = 1; n <= max_dev; n *= 2) {
        char label[32];
        snprintf(label, sizeof(label), "%u mailbox", n);
        run_case(dir, n, BENCH_MAILBOX, 0, label);
    }
    for (size_t s = 4096; s <= max_mib << 20; s *= 4) {
        char label[32];
        if (s >= (1u << 20))
            snprintf(label, sizeof(label), "ticker %zuM", s >> 20);
        else
            snprintf(label, sizeof(label), "ticker %zuK", s >> 10);
        run_case(dir, 1, BENCH_TICKER, s, label);
    }
    rmdir(dir);
    return 0;
}
