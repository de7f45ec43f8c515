/* SPDX-License-Identifier: MIT */
/*
 * bench_stopcopy — the downtime of a stop-copy migration of one large
 * device between two device server processes, through a sending and a
 * receiving process joined by one UNIX socket (what `vfiomig migrate` and
 * `vfiomig receive` are), next to baselines measured in the same run (the
 * machines are shared and noisy: compare the ratios):
 *
 *  - raw: the same number of bytes written by one process and read by
 *    another through one UNIX socket, with the kernel's default socket
 *    buffers and with the 4 MiB ones vfiomig's sockets get;
 *  - messages: the same device, its bytes moved by MIG_DATA_READ /
 *    MIG_DATA_WRITE messages instead of the data fd extension;
 *  - copy: the same device saving by a copy of its whole state at the
 *    STOP_COPY arc, then sent a message at a time from that copy (one copy
 *    per byte before the socket: how libvfio-user's devices give their
 *    state, through a read callback into each message).
 *
 * Both devices load in place and skip their self-check (no digest of the
 * memory at either end), so what is measured is the migration's own work:
 * the state stream and its checksums, the migration stream and its
 * checksums, the vfio-user messages, the copies. Each case runs ROUNDS
 * migrations (alternating direction) and prints the median and the best.
 * It prints figures; it never fails the build.
 * Then the same device over TLS (a pre-shared key made for the run; the
 * bytes go through both processes, encrypted, where the clear path splices
 * them). Last, the same state split over 4 devices, on 1, 2, 4 and 8 streams
 * (connections between the sender and the receiver; device i on stream
 * i mod N, each stream's devices loaded on its own receiver thread): the
 * aggregate throughput, against 1 stream in the same run. Each case also
 * prints the CPU time (user + system) every process taking part used per
 * migration: on C CPUs no schedule can finish in less than CPU / C, which
 * bounds what more streams (or threads) could gain.
 * usage: bench_stopcopy [STATE_MIB [ROUNDS]]   (default 256, 5); BENCH_PHASES=1 also
 * prints each migration's save and load phases (stderr); BENCH_ONLY=K runs
 * only case K (and case 0), for a profiler.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vfiomig/migrate.h>
#ifdef VFM_HAVE_TLS
#include <vfiomig/tls.h>
#endif

#include "servers.h"
#include "stats.h"

#define MAX_ROUNDS 32

static void bulk(int fd)
{
    int v = 4 << 20;
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
}

static double cpu_of(const struct rusage *ru)
{
    return (double)ru->ru_utime.tv_sec + ru->ru_utime.tv_usec / 1e6 + (double)ru->ru_stime.tv_sec +
           ru->ru_stime.tv_usec / 1e6;
}

/* This process's CPU seconds so far (every thread, ended ones too). */
static double self_cpu(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) ? 0 : cpu_of(&ru);
}

/* @len bytes from one process's memory to another's through one socket.
 * Return: seconds, or -1; added to *@cpu, both processes' CPU seconds. */
static double raw_move(size_t len, bool big, double *cpu)
{
    static char buf[1 << 20];
    struct rusage ru;
    int sv[2];
    pid_t pid;
    double t0, c0 = self_cpu();
    char done;

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        return -1;
    if (big) {
        bulk(sv[0]);
        bulk(sv[1]);
    }
    memset(buf, 0x5a, sizeof(buf));
    pid = fork();
    if (pid == 0) {
        size_t got = 0;
        prctl(PR_SET_NAME, "bench-raw-read");
        close(sv[0]);
        while (got < len) {
            ssize_t r = read(sv[1], buf, sizeof(buf));
            if (r <= 0)
                _exit(1);
            got += (size_t)r;
        }
        _exit(write(sv[1], "k", 1) == 1 ? 0 : 1);
    }
    close(sv[1]);
    t0 = bench_now();
    bench_write_len(sv[0], buf, sizeof(buf), len);
    if (read(sv[0], &done, 1) != 1)
        t0 = -1; /* the reader did not get it all */
    t0 = t0 < 0 ? -1 : bench_now() - t0;
    close(sv[0]);
    if (wait4(pid, NULL, 0, &ru) == pid)
        *cpu += self_cpu() - c0 + cpu_of(&ru);
    return t0;
}

#ifdef VFM_HAVE_TLS
/* The TLS case's credentials (a pre-shared key made for the run), and
 * whether the migration being run uses them. */
static struct vfm_tls_creds *tls_server, *tls_client;
static bool use_tls;

/* A TLS session over @fd, its handshake done (the other side's runs in
 * the other process), as the engine's transport in @tp. */
static struct vfm_tls *tls_on(int fd, bool server, struct vfm_mig_transport *tp)
{
    struct vfm_tls *t;

    if (vfm_tls_new(server ? tls_server : tls_client, server ? VFM_TLS_SERVER : VFM_TLS_CLIENT, fd,
                    NULL, &t))
        return NULL;
    if (vfm_tls_handshake(t, 10000)) {
        fprintf(stderr, "bench_stopcopy: TLS handshake: %s\n", vfm_tls_error(t));
        vfm_tls_free(t);
        return NULL;
    }
    vfm_tls_transport(t, tp);
    return t;
}

/* Credentials for both ends from a keys.psk written, loaded and removed. */
static int tls_creds(void)
{
    char dir[] = "/tmp/bench-tls-XXXXXX", path[64], err[256];
    uint8_t key[32];
    FILE *f;
    int ret = -1;

    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof(path), "%s/keys.psk", dir);
    f = fopen(path, "w");
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)(rand() ^ (int)(i * 77)); /* a benchmark's key */
    if (f) {
        fprintf(f, "bench:");
        for (size_t i = 0; i < sizeof(key); i++)
            fprintf(f, "%02x", key[i]);
        fprintf(f, "\n");
        fclose(f);
        ret = vfm_tls_creds_load(dir, VFM_TLS_SERVER, &tls_server, err, sizeof(err)) ||
                      vfm_tls_creds_load(dir, VFM_TLS_CLIENT, &tls_client, err, sizeof(err))
                  ? -1
                  : 0;
        if (ret)
            fprintf(stderr, "bench_stopcopy: TLS credentials: %s\n", err);
    }
    unlink(path);
    rmdir(dir);
    return ret;
}
#endif

#define MAX_DEV 8
#define MAX_STREAMS 8

/* The receiver's further connections: the socket pairs' other ends. */
struct more {
    int fd[MAX_STREAMS];
    unsigned n, next;
};
static int take_more(void *ctx, unsigned timeout_ms, struct vfm_mig_stream *out)
{
    struct more *m = ctx;
    (void)timeout_ms;
    if (m->next >= m->n)
        return -ETIMEDOUT;
    out->fd = m->fd[m->next++];
    out->transport = NULL;
    return 0;
}

/* One migration of @n devices from the servers at @from to those at @to:
 * this process sends, a child receives. Return: 0 and the downtime and the
 * bytes; added to *@cpu the CPU seconds of the sender and the receiver (the
 * servers' are the caller's to count), to *@wall the whole migration's
 * seconds (connecting the devices, RESUMING, the downtime, ending); or -1. */
static int migrate_once(char (*from)[256], char (*to)[256], unsigned n, unsigned flags,
                        unsigned nstreams, double *downtime, uint64_t *bytes, double *cpu,
                        double *wall)
{
    double cpu0 = self_cpu(), t0 = bench_now();
    struct rusage ru;
    struct vfm_vu_client *c[MAX_DEV] = {NULL};
    struct vfm_endpoint *ep[MAX_DEV];
    struct vfm_mig_stream st[MAX_STREAMS];
    struct more more = {.n = nstreams - 1};
    struct vfm_mig_config cfg = {.version = VFM_MIG_CONFIG_VERSION,
                                 .ndev = n,
                                 .no_precopy = true,
                                 .nstreams = nstreams,
                                 .streams = st,
                                 .accept_stream = take_more,
                                 .accept_ctx = &more};
    struct vfm_mig_report rep;
    int sv[2], lsv[MAX_STREAMS][2], ret = 0, status;
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        return -1;
    bulk(sv[0]);
    bulk(sv[1]);
    for (unsigned k = 1; k < nstreams; k++) {
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, lsv[k]))
            return -1;
        bulk(lsv[k][0]);
        bulk(lsv[k][1]);
        st[k - 1] = (struct vfm_mig_stream){.fd = lsv[k][0]};
        more.fd[k - 1] = lsv[k][1];
    }
    pid = fork();
    if (pid == 0) {
        prctl(PR_SET_NAME, "bench-receiver");
        close(sv[0]);
        for (unsigned i = 0; i < n; i++) {
            c[i] = bench_connect_flags(to[i], flags);
            if (!c[i])
                _exit(1);
            ep[i] = vfm_vu_client_endpoint(c[i]);
            if (vfm_ep_set_state(ep[i], VFM_STATE_STOP))
                _exit(1);
        }
        cfg.dst = ep;
#ifdef VFM_HAVE_TLS
        struct vfm_mig_transport tp;
        struct vfm_tls *t = NULL;
        if (use_tls) {
            if (!(t = tls_on(sv[1], true, &tp)))
                _exit(1);
            cfg.transport = &tp;
        }
#endif
        ret = vfm_migrate_receive(&cfg, sv[1], &rep);
        vfm_mig_report_free(&rep);
        for (unsigned i = 0; i < n; i++)
            vfm_vu_client_free(c[i]);
#ifdef VFM_HAVE_TLS
        vfm_tls_free(t);
#endif
        _exit(ret ? 1 : 0);
    }
    close(sv[1]);
    for (unsigned k = 1; k < nstreams; k++) {
        close(lsv[k][1]); /* the child's */
        lsv[k][1] = -1;
    }
    for (unsigned i = 0; i < n && !ret; i++) {
        c[i] = bench_connect_flags(from[i], flags);
        if (!c[i])
            ret = -1;
        else
            ep[i] = vfm_vu_client_endpoint(c[i]);
    }
#ifdef VFM_HAVE_TLS
    struct vfm_mig_transport tp;
    struct vfm_tls *t = NULL;
    if (!ret && use_tls) {
        if (!(t = tls_on(sv[0], false, &tp)))
            ret = -1;
        cfg.transport = &tp;
    }
#endif
    if (!ret) {
        cfg.src = ep;
        ret = vfm_migrate_send(&cfg, sv[0], &rep);
        if (!ret) {
            *downtime = rep.downtime_ns / 1e9;
            if (getenv("BENCH_PHASES"))
                fprintf(stderr, "  save %.1f ms, load %.1f ms\n",
                        rep.phase_ns[VFM_PHASE_SAVE] / 1e6, rep.phase_ns[VFM_PHASE_LOAD] / 1e6);
            *bytes = rep.bytes;
        } else {
            fprintf(stderr, "bench_stopcopy: %s\n", rep.message);
        }
        vfm_mig_report_free(&rep);
    }
    for (unsigned i = 0; i < n; i++)
        vfm_vu_client_free(c[i]);
#ifdef VFM_HAVE_TLS
    vfm_tls_free(t);
#endif
    close(sv[0]);
    for (unsigned k = 1; k < nstreams; k++)
        close(lsv[k][0]);
    if (wait4(pid, &status, 0, &ru) != pid)
        ret = -1;
    else if (!ret && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        ret = -1;
    else {
        *cpu += self_cpu() - cpu0 + cpu_of(&ru);
        *wall += bench_now() - t0;
    }
    return ret ? -1 : 0;
}

/* The CPU seconds @n servers' processes used so far, or -1. */
static double servers_cpu(const int *ctl, unsigned n)
{
    double sum = 0;
    for (unsigned i = 0; i < n; i++) {
        double s = bench_server_cpu(ctl[i]);
        if (s < 0)
            return -1;
        sum += s;
    }
    return sum;
}

/* ROUNDS migrations back and forth between two sets of @n servers of
 * @kind, @mem bytes each; in *@cpu the CPU seconds of every process taking
 * part (servers, sender, receiver) and in *@wall the wall seconds, both per
 * whole migration (means). */
static int run_kind(const char *dir, enum bench_dev kind, unsigned flags, size_t mem, unsigned n,
                    unsigned nstreams, int rounds, double *t, uint64_t *bytes, double *cpu,
                    double *wall)
{
    char a[MAX_DEV][256], b[MAX_DEV][256];
    pid_t pa[MAX_DEV], pb[MAX_DEV];
    int ctl[2 * MAX_DEV], ret = 0;
    double before = -1, after;

    *cpu = *wall = 0;
    for (unsigned i = 0; i < n; i++) {
        snprintf(a[i], sizeof(a[i]), "%s/a%u.sock", dir, i);
        snprintf(b[i], sizeof(b[i]), "%s/b%u.sock", dir, i);
        pa[i] = bench_serve_cpu(a[i], kind, mem, &ctl[2 * i]);
        pb[i] = bench_serve_cpu(b[i], kind, mem, &ctl[2 * i + 1]);
        if (pa[i] < 0 || pb[i] < 0)
            ret = -1;
    }
    for (unsigned i = 0; i < n; i++) {
        /* wait for every server to listen (the receiver sets the
         * destinations to STOP) */
        struct vfm_vu_client *ca = bench_connect(a[i]), *cb = bench_connect(b[i]);
        if (!ca || !cb)
            ret = -1;
        vfm_vu_client_free(ca);
        vfm_vu_client_free(cb);
    }
    if (!ret && (before = servers_cpu(ctl, 2 * n)) < 0)
        ret = -1;
    for (int r = 0; r < rounds && !ret; r++)
        ret =
            migrate_once(r % 2 ? b : a, r % 2 ? a : b, n, flags, nstreams, &t[r], bytes, cpu, wall);
    if (!ret && (after = servers_cpu(ctl, 2 * n)) < 0)
        ret = -1;
    if (!ret) {
        *cpu = (*cpu + after - before) / rounds;
        *wall /= rounds;
    }
    for (unsigned i = 0; i < n; i++) {
        bench_unserve(pa[i]);
        bench_unserve(pb[i]);
        if (pa[i] >= 0)
            close(ctl[2 * i]);
        if (pb[i] >= 0)
            close(ctl[2 * i + 1]);
    }
    return ret;
}

int main(int argc, char **argv)
{
    unsigned long mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    char dir[] = "/tmp/bench-stopcopy-XXXXXX";
    static const struct {
        const char *name;
        enum bench_dev kind;
        unsigned flags, ndev, nstreams;
        bool tls;
    } cases[] = {
        {"in pieces, data fd (vfiomig)", BENCH_LARGE_IN_PLACE, 0, 1, 1, false},
        {"in pieces, messages", BENCH_LARGE_IN_PLACE, VFM_VU_CLIENT_NO_DATA_FD, 1, 1, false},
        {"copy at the arc, messages (one-copy)", BENCH_LARGE_COPY, VFM_VU_CLIENT_NO_DATA_FD, 1, 1,
         false},
        {"in pieces, data fd, TLS (PSK)", BENCH_LARGE_IN_PLACE, 0, 1, 1, true},
        {"4 devices of a quarter each, 1 stream", BENCH_LARGE_IN_PLACE, 0, 4, 1, false},
        {"4 devices of a quarter each, 2 streams", BENCH_LARGE_IN_PLACE, 0, 4, 2, false},
        {"4 devices of a quarter each, 4 streams", BENCH_LARGE_IN_PLACE, 0, 4, 4, false},
        {"4 devices of a quarter each, 8 streams", BENCH_LARGE_IN_PLACE, 0, 4, 8, false},
    };
    /* the TLS case, and the first of the 4 devices' */
    enum { NCASES = sizeof(cases) / sizeof(cases[0]), TLS = 3, FOUR = 4 };
    double t[NCASES][MAX_ROUNDS], raw[MAX_ROUNDS], rawbig[MAX_ROUNDS], med[NCASES], mr, mb;
    double cpu[NCASES] = {0}, wall[NCASES] = {0}, rawcpu = 0, rawbigcpu = 0;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    uint64_t bytes = 0, other = 0;
    bool skipped[NCASES] = {false};

    if (mib < 4 || mib > 1024 || rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "usage: bench_stopcopy [STATE_MIB (4..1024) [ROUNDS (1..%d)]]\n",
                MAX_ROUNDS);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(dir)) {
        perror("bench_stopcopy: mkdtemp");
        return 1;
    }
    printf("stop-copy of one %lu MiB large device, server process -> sender process -> one "
           "UNIX socket -> receiver process -> server process; %d rounds each\n",
           mib, rounds);
    fflush(stdout);
#ifdef VFM_HAVE_TLS
    bool have_tls = tls_creds() == 0;
#else
    bool have_tls = false;
#endif
    for (int k = 0; k < NCASES; k++) {
        if ((getenv("BENCH_ONLY") && atoi(getenv("BENCH_ONLY")) != k && k) ||
            (cases[k].tls && !have_tls)) {
            skipped[k] = true; /* profiling one case, or no TLS here */
            memcpy(t[k], t[0], sizeof(t[k]));
            continue;
        }
#ifdef VFM_HAVE_TLS
        use_tls = cases[k].tls;
#endif
        if (run_kind(dir, cases[k].kind, cases[k].flags, ((size_t)mib << 20) / cases[k].ndev,
                     cases[k].ndev, cases[k].nstreams, rounds, t[k], k ? &other : &bytes, &cpu[k],
                     &wall[k])) {
            fprintf(stderr, "bench_stopcopy: a migration failed (%s)\n", cases[k].name);
            rmdir(dir);
            return 1;
        }
    }
    for (int r = 0; r < rounds; r++) {
        raw[r] = raw_move((size_t)bytes, false, &rawcpu);
        rawbig[r] = raw_move((size_t)bytes, true, &rawbigcpu);
    }
    rmdir(dir);
    if (ncpu < 1)
        ncpu = 1;
    printf("  %-48s %10s %10s %10s %10s\n", "", "median ms", "best ms", "whole ms", "CPU ms");
    for (int k = 0; k < NCASES; k++) {
        med[k] = bench_median(t[k], rounds);
        if (skipped[k])
            printf("  downtime, %-38s %10s\n", cases[k].name, "skipped");
        else
            printf("  downtime, %-38s %10.1f %10.1f %10.1f %10.1f\n", cases[k].name, med[k] * 1e3,
                   t[k][0] * 1e3, wall[k] * 1e3, cpu[k] * 1e3);
    }
    mr = bench_median(raw, rounds);
    mb = bench_median(rawbig, rounds);
    printf("  %-48s %10.1f %10.1f %10s %10.1f\n", "raw socket, default buffers, same bytes",
           mr * 1e3, raw[0] * 1e3, "", rawcpu / rounds * 1e3);
    printf("  %-48s %10.1f %10.1f %10s %10.1f\n", "raw socket, 4 MiB buffers, same bytes", mb * 1e3,
           rawbig[0] * 1e3, "", rawbigcpu / rounds * 1e3);
    printf("  %llu state bytes; vfiomig / raw (default buffers) %.2fx, / raw (4 MiB) %.2fx; "
           "data fd / messages %.2fx; vfiomig / one-copy device %.2fx\n",
           (unsigned long long)bytes, med[0] / mr, med[0] / mb, med[0] / med[1], med[0] / med[2]);
    if (!skipped[TLS])
        printf("  over TLS (through both processes: encrypted, not spliced) / data fd in the "
               "clear %.2fx\n",
               med[TLS] / med[0]);
    printf("  aggregate: one device %.0f MB/s; 4 devices on 1 stream %.0f MB/s (%.2fx one "
           "device)\n",
           bytes / med[0] / 1e6, other / med[FOUR] / 1e6, (other / med[FOUR]) / (bytes / med[0]));
    for (int k = FOUR + 1; k < NCASES; k++)
        if (!skipped[k] && !skipped[FOUR])
            printf("  aggregate: 4 devices on %u streams %.0f MB/s (%.2fx 1 stream); whole "
                   "migrations %.2fx 1 stream's, where their CPU on %ld CPUs allows at most "
                   "%.2fx\n",
                   cases[k].nstreams, other / med[k] / 1e6, med[FOUR] / med[k],
                   wall[FOUR] / wall[k], ncpu, wall[FOUR] / (cpu[k] / (double)ncpu));
    printf("  whole ms, CPU ms: the wall time of a whole migration (connecting, RESUMING, the "
           "downtime, the end) and every process's user + system CPU in it (servers, sender, "
           "receiver), means over the rounds; on %ld CPUs no schedule takes less wall time than "
           "CPU / %ld, which bounds what more streams can gain\n",
           ncpu, ncpu);
#ifdef VFM_HAVE_TLS
    vfm_tls_creds_free(tls_server);
    vfm_tls_creds_free(tls_client);
#endif
    return 0;
}
