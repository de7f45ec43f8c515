/* SPDX-License-Identifier: MIT */
/* vfm_ep_open() (include/vfiomig/open.h): a spec string to an endpoint
 * that owns its backend. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/open.h>
#ifdef VFM_HAVE_VFIO_USER
#include <vfiomig/vfio_user_client.h>
#endif
#ifdef VFM_HAVE_KERNEL
#include <vfiomig/kernel.h>
#endif

/* @s, whole, as an fd number. Return: the fd or -1. */
static int parse_fd(const char *s)
{
    char *end;
    long v;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    return errno || *end || v > INT_MAX ? -1 : (int)v;
}

#ifdef VFM_HAVE_KERNEL
/* @ret: the open's result; *@k its backend (read only after the open: the
 * order in which a call's arguments are evaluated is unspecified). */
static int kernel_ep(int ret, struct vfm_kernel *const *k, const char *label,
                     struct vfm_endpoint **out)
{
    if (ret)
        return ret;
    *out = vfm_kernel_into_endpoint(*k, label);
    return *out ? 0 : -ENOMEM;
}
#endif

static int open_kernel(const char *spec, struct vfm_endpoint **out)
{
#ifdef VFM_HAVE_KERNEL
    struct vfm_kernel *k = NULL;

    if (!strncmp(spec, "vfio-group:", 11)) {
        char group[256];
        const char *colon = strrchr(spec + 11, ':');
        size_t len = colon ? (size_t)(colon - (spec + 11)) : 0;

        if (!colon || !len || len >= sizeof(group) || !colon[1])
            return -EINVAL;
        memcpy(group, spec + 11, len);
        group[len] = '\0';
        return kernel_ep(vfm_kernel_open_group(group, colon + 1, &k), &k, colon + 1, out);
    }
    if (!strncmp(spec, "vfio-cdev:", 10))
        return spec[10] ? kernel_ep(vfm_kernel_open_cdev(spec + 10, &k), &k, spec + 10, out)
                        : -EINVAL;
    if (!strncmp(spec, "vfio-fd:", 8)) {
        int fd = parse_fd(spec + 8);
        return fd < 0 ? -EINVAL : kernel_ep(vfm_kernel_adopt_fd(fd, 0, spec, &k), &k, spec, out);
    }
    if (!strncmp(spec, "vfio-cdev-fd:", 13)) {
        int fd = parse_fd(spec + 13);
        return fd < 0 ? -EINVAL
                      : kernel_ep(vfm_kernel_adopt_fd(fd, VFM_KERNEL_ADOPT_BIND, spec, &k), &k,
                                  spec, out);
    }
    return -EINVAL;
#else
    (void)spec;
    (void)out;
    return -EPROTONOSUPPORT;
#endif
}

int vfm_ep_open(const char *spec, unsigned timeout_ms, struct vfm_endpoint **out)
{
    static const char *const kernel_prefixes[] = {
        "vfio-group:", "vfio-cdev:", "vfio-fd:", "vfio-cdev-fd:"};

    if (!spec || !*spec || !out)
        return -EINVAL;
    for (size_t i = 0; i < sizeof(kernel_prefixes) / sizeof(kernel_prefixes[0]); i++)
        if (!strncmp(spec, kernel_prefixes[i], strlen(kernel_prefixes[i])))
            return open_kernel(spec, out);
    if (!strncmp(spec, "vfio-user:", 10))
        spec += 10;
    if (!*spec)
        return -EINVAL;
#ifdef VFM_HAVE_VFIO_USER
    {
        struct vfm_vu_client *c;
        int ret = vfm_vu_client_connect_timeout(spec, spec, timeout_ms, &c);

        if (ret)
            return ret;
        *out = vfm_vu_client_into_endpoint(c);
        return *out ? 0 : -ENOMEM;
    }
#else
    (void)timeout_ms;
    return -EPROTONOSUPPORT;
#endif
}
