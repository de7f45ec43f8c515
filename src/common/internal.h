/* SPDX-License-Identifier: MIT */
/* Library-internal helpers shared by the layers; not installed. */
#ifndef VFIOMIG_INTERNAL_H
#define VFIOMIG_INTERNAL_H

#include <syslog.h>

#include <vfiomig/common.h>

#define VFM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Formats and sends one message to the installed sink (common.c). */
void vfm_log(int level, const char *fmt, ...) VFM_PRINTF(2, 3);

/* The log sink of one context (a server, a client); fn NULL: the
 * process's. */
struct vfm_log_sink {
    vfm_log_fn fn;
    void *ctx;
    int max_level;
};

/* Formats and sends one message to @sink (NULL or unset: the process's). */
void vfm_log_to(const struct vfm_log_sink *sink, int level, const char *fmt, ...) VFM_PRINTF(3, 4);

/* A socket that carries bulk state (a vfio-user connection, a migration
 * stream): send and receive buffers of VFM_SOCK_BULK_BUF (the kernel caps
 * them at net.core.wmem_max / rmem_max), so that a 1 MiB message goes with
 * few wake-ups of either side. Best effort: a refusal changes nothing. */
#define VFM_SOCK_BULK_BUF (4 << 20)
void vfm_sock_bulk(int fd);

#endif
