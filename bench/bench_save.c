/* SPDX-License-Identifier: MIT */
/*
 * bench_save — a stop-copy save of a large device, in process: the
 * RUNNING -> STOP_COPY request (the arc, where the runtime builds the state
 * stream) and the read of the whole stream, with the stream built in fresh
 * memory the runtime allocates, against the same device saving in place
 * (vfm_mig_ops.save_buffer: its staging buffer, faulted in when it was
 * made). Both in the same run, alternating (the machines are shared and
 * noisy: compare the ratio). Fresh memory costs the kernel's zeroing of
 * every page; how much depends on whether the kernel has recently freed
 * pages to hand out, so the first round is printed apart.
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

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One save: the arc's time and the whole (arc + read) time, in seconds.
 * Return: 0, or -1 when a step failed. */
static int save_once(struct large *lg, uint8_t *buf, size_t cap, double *arc, double *all,
                     size_t *bytes)
{
    struct vfm_device *d = large_device(lg);
    double t0 = now(), t1;
    ssize_t n;

    *bytes = 0;
    if (vfm_device_set_state(d, VFM_STATE_STOP_COPY, NULL))
        return -1;
    t1 = now();
    while ((n = vfm_device_data_read(d, buf, cap)) > 0)
        *bytes += (size_t)n;
    *arc = t1 - t0;
    *all = now() - t0;
    if (n < 0 || vfm_device_set_state(d, VFM_STATE_RUNNING, NULL))
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    unsigned long mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    size_t cap = 1u << 20, bytes = 0;
    uint8_t *buf = malloc(cap);
    struct large *lg[2] = {NULL, NULL};
    double arc[2][64], all[2][64], first[2][2];

    if (!buf || mib < 1 || mib > 1024 || rounds < 1 || rounds > 64) {
        fprintf(stderr, "usage: bench_save [SIZE_MIB (1..1024) [ROUNDS (1..64)]]\n");
        return 2;
    }
    for (int k = 0; k < 2; k++) {
        struct large_config c = {.name = k ? "in-place" : "fresh",
                                 .size = (uint64_t)mib << 20,
                                 .page = 4096,
                                 .dirty_rate = 0,
                                 .load_in_place = k == 1,
                                 .seed = 7};
        if (large_new(&c, &lg[k])) {
            fprintf(stderr, "bench_save: cannot make a %lu MiB device\n", mib);
            return 1;
        }
    }
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < 2; k++) {
            /* alternate which goes first, so that neither always follows
             * the other's freed memory */
            int w = (r % 2) ? 1 - k : k;
            if (save_once(lg[w], buf, cap, &arc[w][r], &all[w][r], &bytes)) {
                fprintf(stderr, "bench_save: a save failed\n");
                return 1;
            }
        }
    for (int k = 0; k < 2; k++) {
        first[k][0] = arc[k][0];
        first[k][1] = all[k][0];
    }
    printf("stop-copy save of a %lu MiB large device in process (%zu bytes of stream), "
           "%d rounds each, alternating\n",
           mib, bytes, rounds);
    printf("  %-36s %10s %10s\n", "", "arc ms", "arc+read ms");
    printf("  %-36s %10.1f %10.1f\n", "fresh memory, first round", first[0][0] * 1e3,
           first[0][1] * 1e3);
    printf("  %-36s %10.1f %10.1f\n", "in place, first round", first[1][0] * 1e3,
           first[1][1] * 1e3);
    double fa = median(arc[0], rounds), ft = median(all[0], rounds);
    double ia = median(arc[1], rounds), it = median(all[1], rounds);
    printf("  %-36s %10.1f %10.1f\n", "fresh memory, median", fa * 1e3, ft * 1e3);
    printf("  %-36s %10.1f %10.1f\n", "in place, median", ia * 1e3, it * 1e3);
    printf("  in place / fresh (median): arc %.2fx, arc+read %.2fx; first round: %.2fx, %.2fx\n",
           ia / fa, it / ft, first[1][0] / first[0][0], first[1][1] / first[0][1]);
    large_free(lg[0]);
    large_free(lg[1]);
    free(buf);
    return 0;
}
