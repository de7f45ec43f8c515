/* SPDX-License-Identifier: MIT */
/*
 * bench_save — a stop-copy save of a large device, in process: the
 * RUNNING -> STOP_COPY request (the arc) and the read of the whole stream,
 * three ways: the state copied at the arc into fresh memory the runtime
 * allocates; copied in place (vfm_mig_ops.save_buffer: the device's
 * staging buffer, faulted in when it was made); and in pieces
 * (save_begin/save_piece: nothing copied at the arc, the stream made from
 * the device's memory as it is read). All in the same run, rotating (the
 * machines are shared and noisy: compare the ratios). Fresh memory costs
 * the kernel's zeroing of every page; how much depends on whether the
 * kernel has recently freed pages to hand out, so the first round is
 * printed apart.
 *
 * It prints figures; it never fails (exit 0 unless it could not run).
 * usage: bench_save [SIZE_MIB [ROUNDS]]   (default 256 MiB, 5 rounds)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vfiomig/device.h>

#include "large.h"
#include "stats.h"

/* One save: the arc's time and the whole (arc + read) time, in seconds.
 * Return: 0, or -1 when a step failed. */
static int save_once(struct large *lg, uint8_t *buf, size_t cap, double *arc, double *all,
                     size_t *bytes)
{
    struct vfm_device *d = large_device(lg);
    double t0 = bench_now(), t1;
    ssize_t n;

    *bytes = 0;
    if (vfm_device_set_state(d, VFM_STATE_STOP_COPY, NULL))
        return -1;
    t1 = bench_now();
    while ((n = vfm_device_data_read(d, buf, cap)) > 0)
        *bytes += (size_t)n;
    *arc = t1 - t0;
    *all = bench_now() - t0;
    if (n < 0 || vfm_device_set_state(d, VFM_STATE_RUNNING, NULL))
        return -1;
    return 0;
}

#define KINDS 3
static const char *const kind_name[KINDS] = {"copy into fresh memory", "copy in place",
                                             "in pieces"};

int main(int argc, char **argv)
{
    unsigned long mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    size_t cap = 1u << 20, bytes = 0;
    uint8_t *buf = malloc(cap);
    struct large *lg[KINDS] = {NULL};
    double arc[KINDS][64], all[KINDS][64], fa[KINDS], ft[KINDS];

    if (!buf || mib < 1 || mib > 1024 || rounds < 1 || rounds > 64) {
        fprintf(stderr, "usage: bench_save [SIZE_MIB (1..1024) [ROUNDS (1..64)]]\n");
        return 2;
    }
    for (int k = 0; k < KINDS; k++) {
        struct large_config c = {.name = kind_name[k],
                                 .size = (uint64_t)mib << 20,
                                 .page = 4096,
                                 .dirty_rate = 0,
                                 .load_in_place = k == 1,
                                 .save_copy = k < 2,
                                 .seed = 7};
        if (large_new(&c, &lg[k])) {
            fprintf(stderr, "bench_save: cannot make a %lu MiB device\n", mib);
            return 1;
        }
    }
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < KINDS; i++) {
            /* rotate which goes first, so that none always follows
             * another's freed memory */
            int w = (i + r) % KINDS;
            if (save_once(lg[w], buf, cap, &arc[w][r], &all[w][r], &bytes)) {
                fprintf(stderr, "bench_save: a save failed\n");
                return 1;
            }
        }
    printf("stop-copy save of a %lu MiB large device in process (%zu bytes of stream), "
           "%d rounds each, rotating\n",
           mib, bytes, rounds);
    printf("  %-36s %10s %12s\n", "", "arc ms", "arc+read ms");
    for (int k = 0; k < KINDS; k++)
        printf("  %-24s first round %10.3f %12.1f\n", kind_name[k], arc[k][0] * 1e3,
               all[k][0] * 1e3);
    for (int k = 0; k < KINDS; k++) {
        fa[k] = bench_median(arc[k], rounds);
        ft[k] = bench_median(all[k], rounds);
        printf("  %-24s median      %10.3f %12.1f\n", kind_name[k], fa[k] * 1e3, ft[k] * 1e3);
    }
    printf("  against copy into fresh memory (median): copy in place arc %.3fx, arc+read %.2fx; "
           "in pieces arc %.4fx, arc+read %.2fx\n",
           fa[1] / fa[0], ft[1] / ft[0], fa[2] / fa[0], ft[2] / ft[0]);
    for (int k = 0; k < KINDS; k++)
        large_free(lg[k]);
    free(buf);
    return 0;
}
