/* SPDX-License-Identifier: MIT */
/* Library-internal helpers shared by the layers; not installed. */
#ifndef VFIOMIG_INTERNAL_H
#define VFIOMIG_INTERNAL_H

#include <syslog.h>

#include <vfiomig/common.h>

#define VFM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Formats and sends one message to the installed sink (common.c). */
void vfm_log(int level, const char *fmt, ...) VFM_PRINTF(2, 3);

#endif
