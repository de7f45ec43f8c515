/* SPDX-License-Identifier: MIT */
/* Device server processes for the benchmarks (forked, not exec'd). */
#ifndef VFIOMIG_BENCH_SERVERS_H
#define VFIOMIG_BENCH_SERVERS_H

#include <stddef.h>
#include <sys/types.h>

#include <vfiomig/vfio_user.h>

enum bench_dev {
    BENCH_MAILBOX,
    BENCH_TICKER,
    BENCH_LARGE,
    BENCH_LARGE_IN_PLACE,
    BENCH_LARGE_COPY, /* in place, no self-check, saving by a copy at the arc */
};

/* Forks a process serving a mailbox (P2P), a ticker of @mem bytes, or a
 * large-state device of @mem bytes (P2P, no dirtying: its P2P arcs do
 * nothing, so a state change costs the transport and the runtime only;
 * BENCH_LARGE_IN_PLACE: one that loads in place, no self-check, and saves
 * in pieces; BENCH_LARGE_COPY: the same saving by a copy at the arc) on
 * @path, with max_data_xfer_size 4 MiB. */
pid_t bench_serve(const char *path, enum bench_dev kind, size_t mem);

/* The same, and in *@ctl a socket through which bench_server_cpu() asks
 * the server process for the CPU time it used so far (all its threads, the
 * ones that ended too); the caller closes *@ctl. The server processes are
 * named "bench-server" (for perf's per-command view). */
pid_t bench_serve_cpu(const char *path, enum bench_dev kind, size_t mem, int *ctl);

/* The server process's user + system CPU seconds so far, or -1 (it did
 * not answer within 5 s). */
double bench_server_cpu(int ctl);

/* Connects, retrying while the server starts; NULL on failure. */
struct vfm_vu_client *bench_connect(const char *path);
/* The same with vfm_vu_client_adopt() @flags (VFM_VU_CLIENT_NO_DATA_FD). */
struct vfm_vu_client *bench_connect_flags(const char *path, unsigned flags);

/* Stops a server process (SIGTERM) and waits for it. */
void bench_unserve(pid_t pid);

#endif
