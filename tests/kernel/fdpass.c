/* SPDX-License-Identifier: MIT */
/*
 * fdpass GROUP DEVICE PROGRAM [ARGS...]: what a VMM's manager does before it
 * starts the VMM (libvirt before QEMU) — open a VFIO group, set it up, get
 * the device's fd — then exec PROGRAM with that fd inherited, every "%FD" in
 * ARGS replaced by its number. The real-kernel test uses it to hand a device
 * fd to `vfiomig ... --device vfio-fd:N` (test code; static, for the guest).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "kernel/kuapi.h"

static int die(const char *what)
{
    fprintf(stderr, "fdpass: %s: %s\n", what, strerror(errno));
    return 1;
}

int main(int argc, char **argv)
{
    struct vfm_k_group_status st = {.argsz = sizeof(st)};
    char num[16];
    int container, group, dev;

    if (argc < 4) {
        fprintf(stderr, "usage: fdpass GROUP DEVICE PROGRAM [ARGS...]\n");
        return 2;
    }
    container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
    if (container < 0)
        return die("/dev/vfio/vfio");
    group = open(argv[1], O_RDWR | O_CLOEXEC);
    if (group < 0)
        return die(argv[1]);
    if (ioctl(group, VFM_K_GROUP_GET_STATUS, &st) < 0 || !(st.flags & VFM_K_GROUP_FLAGS_VIABLE))
        return die("the group is not viable");
    if (ioctl(group, VFM_K_GROUP_SET_CONTAINER, &container) < 0)
        return die("VFIO_GROUP_SET_CONTAINER");
    if (ioctl(container, VFM_K_SET_IOMMU, VFM_K_TYPE1v2_IOMMU) < 0 &&
        ioctl(container, VFM_K_SET_IOMMU, VFM_K_TYPE1_IOMMU) < 0 &&
        ioctl(container, VFM_K_SET_IOMMU, VFM_K_NOIOMMU_IOMMU) < 0)
        return die("VFIO_SET_IOMMU");
    dev = ioctl(group, VFM_K_GROUP_GET_DEVICE_FD, argv[2]);
    if (dev < 0)
        return die("VFIO_GROUP_GET_DEVICE_FD");
    if (fcntl(dev, F_SETFD, 0) < 0) /* the kernel gives it close-on-exec */
        return die("F_SETFD");
    snprintf(num, sizeof(num), "%d", dev);
    for (int i = 3; i < argc; i++) {
        char *at = strstr(argv[i], "%FD");
        if (at) {
            size_t n = strlen(argv[i]) + sizeof(num);
            char *s = malloc(n);
            if (!s)
                return die("malloc");
            snprintf(s, n, "%.*s%s%s", (int)(at - argv[i]), argv[i], num, at + 3);
            argv[i] = s;
        }
    }
    execv(argv[3], argv + 3);
    return die(argv[3]);
}
