/* SPDX-License-Identifier: MIT */
/* The kernel backend (include/vfiomig/kernel.h). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <vfiomig/kernel.h>

#include "../common/internal.h"
#include "kuapi.h"

struct vfm_kernel {
    int container; /* group path: /dev/vfio/vfio */
    int group;     /* group path: /dev/vfio/N */
    int iommufd;   /* cdev path: /dev/iommu */
    int dev;       /* the device fd */
    int data_fd;   /* the latest session's data_fd, or -1 */
    bool opened;   /* the last successful SET returned a new data_fd */
    char *what;    /* for messages: the device's name or cdev path */
    bool by_group; /* opened through a group (what is the device's name) */
    pthread_mutex_t lock;
    struct vfm_endpoint *ep; /* ours (no destroy op) */
};

static const struct vfm_endpoint_ops kernel_ep_ops;

static struct vfm_kernel *kalloc(const char *what)
{
    struct vfm_kernel *k = calloc(1, sizeof(*k));

    if (!k)
        return NULL;
    k->container = k->group = k->iommufd = k->dev = k->data_fd = -1;
    k->what = strdup(what);
    if (!k->what) {
        free(k);
        return NULL;
    }
    pthread_mutex_init(&k->lock, NULL);
    if (vfm_ep_new(&kernel_ep_ops, k->what, k, &k->ep)) {
        vfm_kernel_free(k);
        return NULL;
    }
    return k;
}

static int region_io(struct vfm_kernel *k, uint32_t index, uint64_t offset, void *buf, size_t len,
                     bool write)
{
    struct vfm_k_region_info ri = {.argsz = sizeof(ri), .index = index};
    ssize_t n;
    int ret = 0;

    pthread_mutex_lock(&k->lock);
    if (ioctl(k->dev, VFM_K_DEVICE_GET_REGION_INFO, &ri) < 0) {
        ret = -errno;
        goto out;
    }
    if (offset > ri.size || len > ri.size - offset) {
        ret = -EINVAL;
        goto out;
    }
    if (!(ri.flags & (write ? VFM_K_REGION_INFO_FLAG_WRITE : VFM_K_REGION_INFO_FLAG_READ))) {
        ret = -EPERM;
        goto out;
    }
    n = write ? pwrite(k->dev, buf, len, (off_t)(ri.offset + offset))
              : pread(k->dev, buf, len, (off_t)(ri.offset + offset));
    if (n < 0)
        ret = -errno;
    else if ((size_t)n != len)
        ret = -EIO;
out:
    pthread_mutex_unlock(&k->lock);
    return ret;
}

int vfm_kernel_region_read(struct vfm_kernel *k, uint32_t index, uint64_t offset, void *buf,
                           size_t len)
{
    return region_io(k, index, offset, buf, len, false);
}

int vfm_kernel_region_write(struct vfm_kernel *k, uint32_t index, uint64_t offset, const void *buf,
                            size_t len)
{
    return region_io(k, index, offset, (void *)buf, len, true);
}

void vfm_kernel_free(struct vfm_kernel *k)
{
    if (!k)
        return;
    if (k->data_fd >= 0)
        close(k->data_fd);
    if (k->dev >= 0)
        close(k->dev);
    if (k->group >= 0)
        close(k->group);
    if (k->container >= 0)
        close(k->container);
    if (k->iommufd >= 0)
        close(k->iommufd);
    pthread_mutex_destroy(&k->lock);
    vfm_ep_delete(k->ep);
    free(k->what);
    free(k);
}

/* A failed step: log it, return its errno. */
static int step_failed(struct vfm_kernel *k, const char *step, int err)
{
    vfm_log(LOG_ERR, "%s: %s failed: %s", k->what, step, vfm_strerror(-err));
    return -err;
}

int vfm_kernel_open_group(const char *group_path, const char *device, struct vfm_kernel **out)
{
    struct vfm_k_group_status st = {.argsz = sizeof(st)};
    struct vfm_kernel *k;
    int ret, type;

    if (!group_path || !device || !*device || !out)
        return -EINVAL;
    k = kalloc(device);
    if (!k)
        return -ENOMEM;
    k->container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
    if (k->container < 0) {
        ret = step_failed(k, "opening /dev/vfio/vfio", errno);
        goto err;
    }
    if (ioctl(k->container, VFM_K_GET_API_VERSION) != VFM_K_API_VERSION) {
        ret = step_failed(k, "VFIO_GET_API_VERSION (not version 0)", EPROTO);
        goto err;
    }
    k->group = open(group_path, O_RDWR | O_CLOEXEC);
    if (k->group < 0) {
        ret = step_failed(k, group_path, errno);
        goto err;
    }
    if (ioctl(k->group, VFM_K_GROUP_GET_STATUS, &st) < 0) {
        ret = step_failed(k, "VFIO_GROUP_GET_STATUS", errno);
        goto err;
    }
    if (!(st.flags & VFM_K_GROUP_FLAGS_VIABLE)) {
        ret = step_failed(k, "the group is not viable (a device of it is bound to another driver)",
                          EINVAL);
        goto err;
    }
    if (ioctl(k->group, VFM_K_GROUP_SET_CONTAINER, &k->container) < 0) {
        ret = step_failed(k, "VFIO_GROUP_SET_CONTAINER", errno);
        goto err;
    }
    if (ioctl(k->container, VFM_K_CHECK_EXTENSION, VFM_K_TYPE1v2_IOMMU) > 0)
        type = VFM_K_TYPE1v2_IOMMU;
    else if (ioctl(k->container, VFM_K_CHECK_EXTENSION, VFM_K_TYPE1_IOMMU) > 0)
        type = VFM_K_TYPE1_IOMMU;
    else
        type = VFM_K_NOIOMMU_IOMMU;
    if (ioctl(k->container, VFM_K_SET_IOMMU, type) < 0) {
        ret = step_failed(k, "VFIO_SET_IOMMU", errno);
        goto err;
    }
    k->dev = ioctl(k->group, VFM_K_GROUP_GET_DEVICE_FD, device);
    if (k->dev < 0) {
        ret = step_failed(k, "VFIO_GROUP_GET_DEVICE_FD", errno == EINVAL ? ENOENT : errno);
        goto err;
    }
    k->by_group = true;
    *out = k;
    return 0;
err:
    vfm_kernel_free(k);
    return ret;
}

/* Binds the device cdev k->dev to a new iommufd and attaches it to an IOAS
 * (what a VMM does before using a cdev). */
static int bind_cdev(struct vfm_kernel *k)
{
    struct vfm_k_bind_iommufd bind = {.argsz = sizeof(bind)};
    struct vfm_k_ioas_alloc ioas = {.size = sizeof(ioas)};
    struct vfm_k_attach_iommufd_pt at = {.argsz = sizeof(at)};

    k->iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
    if (k->iommufd < 0)
        return step_failed(k, "opening /dev/iommu", errno);
    bind.iommufd = k->iommufd;
    if (ioctl(k->dev, VFM_K_DEVICE_BIND_IOMMUFD, &bind) < 0)
        return step_failed(k, "VFIO_DEVICE_BIND_IOMMUFD", errno);
    if (ioctl(k->iommufd, VFM_K_IOMMU_IOAS_ALLOC, &ioas) < 0)
        return step_failed(k, "IOMMU_IOAS_ALLOC", errno);
    at.pt_id = ioas.out_ioas_id;
    if (ioctl(k->dev, VFM_K_DEVICE_ATTACH_IOMMUFD_PT, &at) < 0)
        return step_failed(k, "VFIO_DEVICE_ATTACH_IOMMUFD_PT", errno);
    return 0;
}

int vfm_kernel_open_cdev(const char *cdev_path, struct vfm_kernel **out)
{
    struct vfm_kernel *k;
    int ret;

    if (!cdev_path || !out)
        return -EINVAL;
    k = kalloc(cdev_path);
    if (!k)
        return -ENOMEM;
    k->dev = open(cdev_path, O_RDWR | O_CLOEXEC);
    if (k->dev < 0) {
        ret = step_failed(k, "opening the device cdev", errno);
        goto err;
    }
    ret = bind_cdev(k);
    if (ret)
        goto err;
    *out = k;
    return 0;
err:
    vfm_kernel_free(k);
    return ret;
}

int vfm_kernel_adopt_fd(int fd, unsigned flags, const char *label, struct vfm_kernel **out)
{
    struct vfm_k_device_info info = {.argsz = sizeof(info)};
    struct vfm_kernel *k;
    char name[32];
    int ret;

    if (fd < 0 || fcntl(fd, F_GETFD) < 0)
        return -EBADF;
    if (!out || (flags & ~VFM_KERNEL_ADOPT_BIND)) {
        close(fd);
        return -EINVAL;
    }
    snprintf(name, sizeof(name), "fd %d", fd);
    k = kalloc(label ? label : name);
    if (!k) {
        close(fd);
        return -ENOMEM;
    }
    k->dev = fd;
    ret = flags & VFM_KERNEL_ADOPT_BIND ? bind_cdev(k) : 0;
    /* a VFIO device answers GET_INFO once usable: anything else is not one */
    if (!ret && ioctl(k->dev, VFM_K_DEVICE_GET_INFO, &info) < 0)
        ret = step_failed(k, "VFIO_DEVICE_GET_INFO (is it a bound VFIO device?)",
                          errno == EINVAL ? ENOTTY : errno);
    if (ret) {
        vfm_kernel_free(k);
        return ret;
    }
    *out = k;
    return 0;
}

static int k_region(struct vfm_endpoint *ep, uint32_t index, uint64_t offset, void *buf, size_t len,
                    bool write)
{
    return region_io(vfm_ep_priv(ep), index, offset, buf, len, write);
}

/* The endpoint owns the backend: its destroy frees it (vfm_ep_free() then
 * frees the endpoint itself). */
static void k_destroy(struct vfm_endpoint *ep)
{
    struct vfm_kernel *k = vfm_ep_priv(ep);

    k->ep = NULL;
    vfm_kernel_free(k);
}

static const struct vfm_endpoint_ops kernel_owning_ops;

struct vfm_endpoint *vfm_kernel_into_endpoint(struct vfm_kernel *k, const char *label)
{
    struct vfm_endpoint *ep;

    if (vfm_ep_new(&kernel_owning_ops, label ? label : vfm_ep_name(k->ep), k, &ep)) {
        vfm_kernel_free(k);
        return NULL;
    }
    vfm_ep_delete(k->ep);
    k->ep = ep;
    return ep;
}

struct vfm_endpoint *vfm_kernel_endpoint(struct vfm_kernel *k, const char *name)
{
    if (name)
        vfm_ep_set_name(k->ep, name); /* out of memory: the old name stays */
    return k->ep;
}

/* VFIO_DEVICE_FEATURE @flags with @len bytes of data in/out of @data. */
static int feature(struct vfm_kernel *k, uint32_t flags, void *data, size_t len)
{
    uint64_t buf[(sizeof(struct vfm_k_feature) + 64) / 8];
    struct vfm_k_feature *f = (struct vfm_k_feature *)buf;

    if (len > 64)
        return -EINVAL;
    memset(buf, 0, sizeof(buf));
    f->argsz = (uint32_t)(sizeof(*f) + len);
    f->flags = flags;
    memcpy(f + 1, data, len);
    if (ioctl(k->dev, VFM_K_DEVICE_FEATURE, f) < 0)
        return -errno;
    memcpy(data, f + 1, len);
    return 0;
}

static int k_flags(struct vfm_endpoint *ep, uint32_t *flags)
{
    uint64_t f = 0;
    int ret = feature(vfm_ep_priv(ep), VFM_FEATURE_MIGRATION | VFM_FEATURE_GET, &f, sizeof(f));

    if (!ret)
        *flags = (uint32_t)f;
    return ret;
}

static int k_set(struct vfm_endpoint *ep, uint32_t state)
{
    struct vfm_kernel *k = vfm_ep_priv(ep);
    struct vfm_k_mig_state ms = {.device_state = state, .data_fd = -1};
    int ret;

    pthread_mutex_lock(&k->lock);
    ret = feature(k, VFM_FEATURE_MIG_DEVICE_STATE | VFM_FEATURE_SET, &ms, sizeof(ms));
    k->opened = false;
    if (!ret && ms.data_fd >= 0) {
        /* a new session: the previous one's fd is of no more use */
        if (k->data_fd >= 0)
            close(k->data_fd);
        k->data_fd = ms.data_fd;
        k->opened = true;
    }
    pthread_mutex_unlock(&k->lock);
    return ret;
}

static int k_get(struct vfm_endpoint *ep, uint32_t *state)
{
    struct vfm_k_mig_state ms = {.data_fd = -1};
    int ret =
        feature(vfm_ep_priv(ep), VFM_FEATURE_MIG_DEVICE_STATE | VFM_FEATURE_GET, &ms, sizeof(ms));

    if (!ret)
        *state = ms.device_state;
    return ret;
}

static int data_fd(struct vfm_kernel *k)
{
    int fd;
    pthread_mutex_lock(&k->lock);
    fd = k->data_fd;
    pthread_mutex_unlock(&k->lock);
    return fd;
}

static ssize_t k_read(struct vfm_endpoint *ep, void *buf, size_t len)
{
    int fd = data_fd(vfm_ep_priv(ep));
    ssize_t n;

    if (fd < 0)
        return -ENODEV; /* no session was ever opened */
    do
        n = read(fd, buf, len);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

static ssize_t k_write(struct vfm_endpoint *ep, const void *buf, size_t len)
{
    int fd = data_fd(vfm_ep_priv(ep));
    size_t done = 0;

    if (fd < 0)
        return -ENODEV;
    while (done < len) {
        ssize_t n = write(fd, (const char *)buf + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return done ? (ssize_t)done : -errno;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

static int k_size(struct vfm_endpoint *ep, uint64_t *bytes)
{
    return feature(vfm_ep_priv(ep), VFM_FEATURE_MIG_DATA_SIZE | VFM_FEATURE_GET, bytes,
                   sizeof(*bytes));
}

static int k_precopy_info_flags(struct vfm_endpoint *ep, uint64_t *initial, uint64_t *dirty,
                                uint32_t *flags)
{
    struct vfm_k_precopy_info pi = {.argsz = sizeof(pi)};
    int fd = data_fd(vfm_ep_priv(ep));

    if (fd < 0)
        return -EINVAL;
    if (ioctl(fd, VFM_K_MIG_GET_PRECOPY_INFO, &pi) < 0)
        return -errno;
    *initial = pi.initial_bytes;
    *dirty = pi.dirty_bytes;
    *flags = pi.flags; /* we send 0: a v1 driver echoes it */
    return 0;
}

static int k_precopy_info(struct vfm_endpoint *ep, uint64_t *initial, uint64_t *dirty)
{
    uint32_t flags;
    return k_precopy_info_flags(ep, initial, dirty, &flags);
}

static int k_reset(struct vfm_endpoint *ep)
{
    struct vfm_kernel *k = vfm_ep_priv(ep);
    return ioctl(k->dev, VFM_K_DEVICE_RESET) < 0 ? -errno : 0;
}

static int k_session_opened(struct vfm_endpoint *ep)
{
    struct vfm_kernel *k = vfm_ep_priv(ep);
    int r;
    pthread_mutex_lock(&k->lock);
    r = k->opened;
    pthread_mutex_unlock(&k->lock);
    return r;
}

static int k_feature(struct vfm_endpoint *ep, uint32_t argsz, uint32_t flags, void *data,
                     size_t len)
{
    struct vfm_kernel *k = vfm_ep_priv(ep);
    uint64_t buf[(sizeof(struct vfm_k_feature) + 64) / 8];
    struct vfm_k_feature *f = (struct vfm_k_feature *)buf;
    int ret = 0;

    if (len > 64)
        return -EINVAL;
    memset(buf, 0, sizeof(buf));
    f->argsz = argsz;
    f->flags = flags;
    if (len) /* (a request without data may come with no buffer) */
        memcpy(f + 1, data, len);
    pthread_mutex_lock(&k->lock);
    if (ioctl(k->dev, VFM_K_DEVICE_FEATURE, f) < 0)
        ret = -errno;
    pthread_mutex_unlock(&k->lock);
    if (len)
        memcpy(data, f + 1, len);
    return ret;
}

/* DMA logging: the kernel's layouts, ranges and bitmap by address. */
static int k_log_start(struct vfm_endpoint *ep, const struct vfm_dma_range *ranges, uint32_t n,
                       uint64_t *page_size)
{
    struct vfm_k_log_control c = {.page_size = *page_size, .num_ranges = n,
                                  .ranges = (uint64_t)(uintptr_t)ranges};
    int ret = k_feature(ep, (uint32_t)(sizeof(struct vfm_k_feature) + sizeof(c)),
                        VFM_FEATURE_DMA_LOGGING_START | VFM_FEATURE_SET, &c, sizeof(c));
    if (!ret)
        *page_size = c.page_size;
    return ret;
}

static int k_log_stop(struct vfm_endpoint *ep)
{
    uint8_t none[1];
    return k_feature(ep, sizeof(struct vfm_k_feature),
                     VFM_FEATURE_DMA_LOGGING_STOP | VFM_FEATURE_SET, none, 0);
}

static int k_log_report(struct vfm_endpoint *ep, uint64_t iova, uint64_t length,
                        uint64_t page_size, uint64_t *bitmap)
{
    struct vfm_k_log_report r = {.iova = iova, .length = length, .page_size = page_size,
                                 .bitmap = (uint64_t)(uintptr_t)bitmap};
    return k_feature(ep, (uint32_t)(sizeof(struct vfm_k_feature) + sizeof(r)),
                     VFM_FEATURE_DMA_LOGGING_REPORT | VFM_FEATURE_GET, &r, sizeof(r));
}

/* Closes the device fd (and the data_fd) and gets a new one from the group,
 * as a VMM that restarts does. The cdev path: -ENOTTY (it would need a new
 * bind and attach; not done yet). */
static int k_reopen(struct vfm_endpoint *ep)
{
    struct vfm_kernel *k = vfm_ep_priv(ep);
    int ret = 0;

    if (!k->by_group)
        return -ENOTTY;
    pthread_mutex_lock(&k->lock);
    if (k->data_fd >= 0)
        close(k->data_fd);
    k->data_fd = -1;
    k->opened = false;
    close(k->dev);
    k->dev = ioctl(k->group, VFM_K_GROUP_GET_DEVICE_FD, k->what);
    if (k->dev < 0)
        ret = step_failed(k, "VFIO_GROUP_GET_DEVICE_FD (reopen)", errno);
    pthread_mutex_unlock(&k->lock);
    return ret;
}

/* The backend's calls; two tables that differ only in destroy: the
 * endpoint the backend owns (none), and one that owns the backend. */
#define KERNEL_OPS(destroy_op)                                                                     \
    {                                                                                              \
        .get_flags = k_flags, .set_state = k_set, .get_state = k_get, .read = k_read,              \
        .write = k_write, .data_size = k_size, .reset = k_reset, .precopy_info = k_precopy_info,   \
        .precopy_info_flags = k_precopy_info_flags,                                                \
        .session_opened = k_session_opened, .reopen = k_reopen, .feature = k_feature,              \
        .dma_log_start = k_log_start, .dma_log_stop = k_log_stop, .dma_log_report = k_log_report,  \
        .region = k_region, .destroy = destroy_op,                                                 \
    }

static const struct vfm_endpoint_ops kernel_ep_ops = KERNEL_OPS(NULL);
static const struct vfm_endpoint_ops kernel_owning_ops = KERNEL_OPS(k_destroy);
