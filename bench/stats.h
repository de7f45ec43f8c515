/* SPDX-License-Identifier: MIT */
/* Timing helpers the benchmarks share. */
#ifndef VFIOMIG_BENCH_STATS_H
#define VFIOMIG_BENCH_STATS_H

#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Seconds on the monotonic clock. */
static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline int bench_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of @n values; sorts them (v[0] is then the best). */
static inline double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), bench_cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Writes @len bytes to @fd, @buf (of @size bytes) again and again: the
 * raw baselines' sender. Return: the bytes written (short on an error). */
static inline size_t bench_write_len(int fd, const void *buf, size_t size, size_t len)
{
    size_t off = 0;

    while (off < len) {
        size_t n = len - off < size ? len - off : size;
        ssize_t w = write(fd, buf, n);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    return off;
}

#endif
