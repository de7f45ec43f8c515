/* SPDX-License-Identifier: MIT */
/* The threads of this process, from /proc (tests that check the library
 * started none, or reuses its own). */
#ifndef VFIOMIG_TEST_THREADS_H
#define VFIOMIG_TEST_THREADS_H

#include <stdio.h>

/* Return: the count, or -1 when /proc does not say. */
static inline int proc_threads(void)
{
    char line[256];
    int n = -1;
    FILE *f = fopen("/proc/self/status", "r");

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    fclose(f);
    return n;
}

#endif
