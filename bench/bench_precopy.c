/* SPDX-License-Identifier: MIT */
/*
 * bench_precopy — downtime of a large-state device migrated with pre-copy
 * against stop-copy only, for several memory sizes and dirty rates, both
 * measured in this one run on the same devices (the machine is shared and
 * noisy: compare the ratio, not the absolute figures).
 *
 * The devices are in this process (local endpoints): the device runtime,
 * its sessions and the engine with its framed stream (through a socket pair
 * between a sending and a receiving thread) are all real; the vfio-user
 * transport is left out so that the figure is the pre-copy algorithm's.
 * The devices' self-check (a digest of the whole memory at the source's
 * stop and after the destination's load: two passes over the memory inside
 * the downtime) is off; instead the memories are compared after each
 * migration, the source stopped and the destination not dirtying (its
 * dirty rate is set only once it becomes the source).
 * `vfiomig demo --large` keeps the self-check on.
 *
 * Usage: bench_precopy [MAX_MIB [RATES...]]
 *   MAX_MIB  the largest memory, doubling from 64 MiB (default 1024)
 *   RATES    dirty rates in percent of memory per second (default 0.1 1 10)
 * Prints one line per case and never fails the build.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vfiomig/migrate.h>

#include "large.h"

struct pair {
    struct large *lg[2];
    struct vfm_endpoint *ep[2];
};

static int pair_new(struct pair *p, uint64_t mib, double pct)
{
    for (int side = 0; side < 2; side++) {
        struct large_config c = {.name = side ? "dst" : "src",
                                 .size = mib << 20,
                                 .page = 4096,
                                 .dirty_rate =
                                     side ? 0 : (uint64_t)((double)(mib << 20) * pct / 100.0),
                                 .p2p = true,
                                 .no_verify = true,
                                 .seed = (uint32_t)side + 1};
        int ret = large_new(&c, &p->lg[side]);
        if (ret)
            return ret;
        if ((ret = vfm_ep_local_new(large_device(p->lg[side]), &p->ep[side])))
            return ret;
    }
    /* the destination waits, stopped, for its state */
    return vfm_device_set_state(large_device(p->lg[1]), VFM_STATE_STOP, NULL);
}

static void pair_free(struct pair *p)
{
    for (int side = 0; side < 2; side++) {
        vfm_ep_free(p->ep[side]);
        large_free(p->lg[side]);
    }
}

/* Migrates from side @from to the other; the destination then waits for
 * the way back. Return: 0 and the report. */
static int migrate(struct pair *p, int from, bool precopy, struct vfm_mig_report *rep)
{
    struct vfm_mig_config cfg = {.src = &p->ep[from],
                                 .dst = &p->ep[!from],
                                 .ndev = 1,
                                 .no_precopy = !precopy};
    int ret = vfm_migrate_local(&cfg, rep);

    if (ret) {
        fprintf(stderr, "bench_precopy: migration failed: %s\n", rep->message);
    } else if (large_digest(p->lg[0]) != large_digest(p->lg[1])) {
        fprintf(stderr, "bench_precopy: the restored state differs\n");
        ret = -1;
    }
    return ret;
}

int main(int argc, char **argv)
{
    unsigned max_mib = argc > 1 ? (unsigned)atoi(argv[1]) : 1024;
    double def_rates[] = {0.1, 1, 10}, rates[16];
    int nrates = 0;

    for (int i = 2; i < argc && nrates < 16; i++)
        rates[nrates++] = atof(argv[i]);
    if (!nrates) {
        memcpy(rates, def_rates, sizeof(def_rates));
        nrates = 3;
    }
    printf("bench_precopy: downtime of one large-state device, pre-copy vs stop-copy only\n"
           "(in-process endpoints, 4 KiB dirty tracking, downtime limit %u ms)\n\n",
           VFM_MIG_DEFAULT_DOWNTIME_MS);
    printf("%8s %8s | %12s %7s %10s %9s | %12s | %7s\n", "memory", "dirty/s", "pre-copy ms",
           "rounds", "sent live", "converged", "stop-copy ms", "ratio");
    for (unsigned mib = 64; mib <= max_mib; mib *= 2) {
        for (int r = 0; r < nrates; r++) {
            struct pair p = {0};
            struct vfm_mig_report pc, sc;

            if (pair_new(&p, mib, rates[r])) {
                fprintf(stderr, "bench_precopy: cannot make %u MiB devices\n", mib);
                pair_free(&p);
                return 0;
            }
            usleep(200000); /* the workload runs a while first */
            /* there with pre-copy, back without: the same devices, the
             * same workload, one after the other */
            if (migrate(&p, 0, true, &pc) == 0) {
                /* the same workload on the way back */
                large_set_rate(p.lg[0], 0);
                large_set_rate(p.lg[1], (uint64_t)((double)((uint64_t)mib << 20) * rates[r] / 100));
                usleep(200000);
                vfm_device_set_state(large_device(p.lg[0]), VFM_STATE_STOP, NULL);
                if (migrate(&p, 1, false, &sc) == 0) {
                    printf("%5u MiB %7.1f%% | %12.2f %7u %7.1f MiB %9s | %12.2f | %6.1fx\n", mib,
                           rates[r], pc.downtime_ns / 1e6, pc.precopy_rounds,
                           pc.precopy_bytes / 1048576.0, pc.precopy_converged ? "yes" : "no",
                           sc.downtime_ns / 1e6,
                           pc.downtime_ns ? (double)sc.downtime_ns / (double)pc.downtime_ns : 0);
                    fflush(stdout);
                }
                vfm_mig_report_free(&sc);
            }
            vfm_mig_report_free(&pc);
            pair_free(&p);
        }
    }
    return 0;
}
