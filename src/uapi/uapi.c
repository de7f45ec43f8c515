/* SPDX-License-Identifier: MIT */
/* State and flag names (include/vfiomig/uapi.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <linux/vfio.h>

#include <vfiomig/uapi.h>

#include "../common/internal.h"

/* Our numbers are the uAPI's: check every value the installed header has. */
_Static_assert((int)VFM_STATE_ERROR == (int)VFIO_DEVICE_STATE_ERROR, "ERROR");
_Static_assert((int)VFM_STATE_STOP == (int)VFIO_DEVICE_STATE_STOP, "STOP");
_Static_assert((int)VFM_STATE_RUNNING == (int)VFIO_DEVICE_STATE_RUNNING, "RUNNING");
_Static_assert((int)VFM_STATE_STOP_COPY == (int)VFIO_DEVICE_STATE_STOP_COPY, "STOP_COPY");
_Static_assert((int)VFM_STATE_RESUMING == (int)VFIO_DEVICE_STATE_RESUMING, "RESUMING");
_Static_assert((int)VFM_STATE_RUNNING_P2P == (int)VFIO_DEVICE_STATE_RUNNING_P2P, "RUNNING_P2P");
_Static_assert(VFM_MIGRATION_STOP_COPY == VFIO_MIGRATION_STOP_COPY, "flag STOP_COPY");
_Static_assert(VFM_MIGRATION_P2P == VFIO_MIGRATION_P2P, "flag P2P");
_Static_assert(VFM_FEATURE_MASK == VFIO_DEVICE_FEATURE_MASK, "feature mask");
_Static_assert(VFM_FEATURE_GET == VFIO_DEVICE_FEATURE_GET, "feature GET");
_Static_assert(VFM_FEATURE_SET == VFIO_DEVICE_FEATURE_SET, "feature SET");
_Static_assert(VFM_FEATURE_PROBE == VFIO_DEVICE_FEATURE_PROBE, "feature PROBE");
_Static_assert(VFM_FEATURE_MIGRATION == VFIO_DEVICE_FEATURE_MIGRATION, "MIGRATION");
_Static_assert(VFM_FEATURE_MIG_DEVICE_STATE == VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, "MIG_STATE");
#ifdef VFIO_DEVICE_FEATURE_DMA_LOGGING_START
_Static_assert(VFM_FEATURE_DMA_LOGGING_START == VFIO_DEVICE_FEATURE_DMA_LOGGING_START, "LOG_START");
_Static_assert(VFM_FEATURE_DMA_LOGGING_STOP == VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP, "LOG_STOP");
_Static_assert(VFM_FEATURE_DMA_LOGGING_REPORT == VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, "LOG_REP");
#endif
#ifdef VFIO_MIGRATION_PRE_COPY /* Linux >= 6.2 */
_Static_assert((int)VFM_STATE_PRE_COPY == (int)VFIO_DEVICE_STATE_PRE_COPY, "PRE_COPY");
_Static_assert((int)VFM_STATE_PRE_COPY_P2P == (int)VFIO_DEVICE_STATE_PRE_COPY_P2P, "PRE_COPY_P2P");
_Static_assert(VFM_MIGRATION_PRE_COPY == VFIO_MIGRATION_PRE_COPY, "flag PRE_COPY");
#endif
#ifdef VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
_Static_assert(VFM_FEATURE_MIG_DATA_SIZE == VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, "MIG_DATA_SIZE");
#endif

static const char *const state_names[VFM_STATE_COUNT] = {
    [VFM_STATE_ERROR] = "ERROR",       [VFM_STATE_STOP] = "STOP",
    [VFM_STATE_RUNNING] = "RUNNING",   [VFM_STATE_STOP_COPY] = "STOP_COPY",
    [VFM_STATE_RESUMING] = "RESUMING", [VFM_STATE_RUNNING_P2P] = "RUNNING_P2P",
    [VFM_STATE_PRE_COPY] = "PRE_COPY", [VFM_STATE_PRE_COPY_P2P] = "PRE_COPY_P2P",
};

static const struct {
    uint32_t bit;
    const char *name;
} flag_names[] = {
    {VFM_MIGRATION_STOP_COPY, "STOP_COPY"},
    {VFM_MIGRATION_P2P, "P2P"},
    {VFM_MIGRATION_PRE_COPY, "PRE_COPY"},
};

const char *vfm_state_name(uint32_t state)
{
    return state < VFM_STATE_COUNT ? state_names[state] : NULL;
}

const char *vfm_state_str(uint32_t state)
{
    return state < VFM_STATE_COUNT ? state_names[state] : "INVALID";
}

/* Compares a user's spelling with a canonical UPPER_CASE name: any case, and
 * '-' accepted for '_'. */
static int name_equal(const char *user, size_t len, const char *canon)
{
    size_t i;

    if (strlen(canon) != len)
        return 0;
    for (i = 0; i < len; i++) {
        char c = user[i];
        if (c == '-')
            c = '_';
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        if (c != canon[i])
            return 0;
    }
    return 1;
}

/* Parses a whole string as an unsigned number (decimal or 0x hex). */
static int parse_number(const char *s, size_t len, unsigned long long *out)
{
    char buf[32];
    char *end;

    if (len == 0 || len >= sizeof(buf) || s[0] < '0' || s[0] > '9')
        return -EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    *out = strtoull(buf, &end, 0);
    if (errno || *end)
        return -EINVAL;
    return 0;
}

static size_t strip_prefix(const char **s, size_t len, const char *prefix)
{
    size_t plen = strlen(prefix);

    if (len > plen && strncasecmp(*s, prefix, plen) == 0) {
        *s += plen;
        return len - plen;
    }
    return len;
}

int vfm_state_parse(const char *s, uint32_t *out)
{
    unsigned long long n;
    size_t len;
    uint32_t i;

    if (!s || !*s)
        return -EINVAL;
    len = strlen(s);
    if (parse_number(s, len, &n) == 0) {
        if (n >= VFM_STATE_COUNT)
            return -EINVAL;
        *out = (uint32_t)n;
        return 0;
    }
    len = strip_prefix(&s, len, "VFIO_DEVICE_STATE_");
    for (i = 0; i < VFM_STATE_COUNT; i++) {
        if (name_equal(s, len, state_names[i])) {
            *out = i;
            return 0;
        }
    }
    return -EINVAL;
}

int vfm_flags_parse(const char *s, uint32_t *out)
{
    unsigned long long n;
    uint32_t flags = 0;
    const char *p;
    size_t len, i;

    if (!s || !*s)
        return -EINVAL;
    if (parse_number(s, strlen(s), &n) == 0) {
        if (n & ~(unsigned long long)VFM_MIGRATION_ALL)
            return -EINVAL;
        *out = (uint32_t)n;
        return 0;
    }
    for (p = s;; p += len + 1) {
        const char *item = p;
        int found = 0;

        len = strcspn(p, ",");
        i = strip_prefix(&item, len, "VFIO_MIGRATION_");
        for (size_t k = 0; k < VFM_ARRAY_SIZE(flag_names); k++) {
            if (name_equal(item, i, flag_names[k].name)) {
                flags |= flag_names[k].bit;
                found = 1;
            }
        }
        if (!found)
            return -EINVAL;
        if (p[len] == '\0')
            break;
    }
    *out = flags;
    return 0;
}

int vfm_flags_format(uint32_t flags, char *buf, size_t size)
{
    size_t need = 0;
    uint32_t rest = flags;
    char tmp[96];
    int n;

    tmp[0] = '\0';
    for (size_t k = 0; k < VFM_ARRAY_SIZE(flag_names); k++) {
        if (flags & flag_names[k].bit) {
            n = snprintf(tmp + need, sizeof(tmp) - need, "%s%s", need ? "|" : "",
                         flag_names[k].name);
            need += (size_t)n;
            rest &= ~flag_names[k].bit;
        }
    }
    if (rest || !flags) {
        n = snprintf(tmp + need, sizeof(tmp) - need, "%s0x%x", need ? "|" : "", rest);
        need += (size_t)n;
        if (!flags)
            snprintf(tmp, sizeof(tmp), "0");
    }
    return snprintf(buf, size, "%s", tmp);
}
