/* SPDX-License-Identifier: MIT */
/*
 * lvu-emul — a vfio-user server that behaves as a server built on
 * libvfio-user does, so that vfiomig's client, engine and conformance suite
 * are tested against that peer's behaviours in `make check` (libvfio-user is
 * not packaged for Debian, and its code never enters this repository).
 *
 * Every behaviour below was observed on libvfio-user itself (commit efd091b,
 * built by hand outside the repository, its samples/server.c and a small
 * device with N bytes of migration state), and is written here from those
 * observations:
 *
 *  - VERSION: it speaks 0.2 and answers a client's minor with the smaller
 *    of the two; its capabilities carry none of vfiomig's extensions;
 *  - framing: the 16-byte header comes with one recvmsg() (a short one
 *    drops the client), the body with one recv() that does not wait for
 *    all of it: a body whose bytes have not all arrived is refused with
 *    EINVAL ("short read") and what is left of it is read as the next
 *    headers — framing is lost, as with the real library;
 *  - a header whose msg_size is 16 for any command but DEVICE_RESET, or is
 *    above 1 MiB + 32, or is not a command, is refused with EINVAL; its
 *    body is not skipped;
 *  - in STOP and STOP_COPY only REGION_READ, REGION_WRITE, DEVICE_FEATURE
 *    and MIG_DATA_READ are executed; anything else (DEVICE_RESET among
 *    them) is refused with EINVAL;
 *  - region access in STOP_COPY: EINVAL;
 *  - DEVICE_RESET elsewhere: success, and the migration state does not
 *    change (in RESUMING and PRE_COPY too);
 *  - DEVICE_FEATURE: MIGRATION answers STOP_COPY | PRE_COPY for every
 *    device; MIG_DEVICE_STATE GET and SET (the uAPI's paths without P2P; a
 *    refused request or a failing arc answers EINVAL and leaves the state
 *    where the last arc that worked left it); every other feature id,
 *    MIG_DATA_SIZE and unknown ones among them, EINVAL (the kernel says
 *    ENOTTY); GET with SET, an argsz short of the reply (GET) or of the
 *    request (SET, PROBE), an operation the feature lacks, an undefined
 *    flag bit: EINVAL; PROBE echoes the request; no pre-copy information;
 *  - MIG_DATA_READ: only in PRE_COPY and STOP_COPY, else EINVAL (also
 *    after a session: EINVAL where the kernel says ENODEV); size above the
 *    client's max_data_xfer_size or argsz below 8 + size: EINVAL; the reply
 *    is padded with zeros to 8 + the size asked, its `size` the valid bytes;
 *  - MIG_DATA_WRITE: only in RESUMING, else EINVAL; argsz must cover the
 *    data;
 *  - unknown commands: EINVAL;
 *  - the process exits when its client leaves.
 *
 * The device: its migration state is SIZE bytes held in memory, first a
 * pattern made from a seed, after a load the bytes loaded. Pre-copy gives
 * the state from its start, and then nothing (a reply of 0 bytes) until
 * STOP_COPY, which goes on from where pre-copy stopped to the end. A load
 * takes at most SIZE bytes and RESUMING -> STOP fails unless exactly SIZE
 * arrived. BAR0 (region 0, 4 KiB, readable) holds, as u64s: the state size
 * (0x0), the seed (0x8), the digest of the state (0x10: of the pattern, or
 * of the bytes last loaded), and how many loads completed (0x18).
 *
 *   lvu-emul --socket PATH --size BYTES [--seed N]
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <vfiomig/fsm.h>
#include <vfiomig/uapi.h>
#include <vfiomig/vfio_user.h>

#define LVU_MINOR 2
#define LVU_MAX_XFER (1u << 20)
#define LVU_MAX_MSG (LVU_MAX_XFER + 32u) /* header + region access + data */
#define LVU_NUM_REGIONS 9u               /* BAR0-5, ROM, config space, VGA */
#define LVU_NUM_IRQS 5u                  /* INTx, MSI, MSI-X, ERR, REQ */
#define BAR0_SIZE 4096u
#define LVU_FLAGS (VFM_MIGRATION_STOP_COPY | VFM_MIGRATION_PRE_COPY)

struct emul {
    int conn;
    uint32_t state;
    uint64_t size, seed;
    uint64_t digest;      /* of the state the device holds */
    uint64_t loads;       /* loads completed */
    uint64_t save_pos;    /* bytes given in this save session */
    uint64_t load_pos;    /* bytes taken in this load session */
    uint64_t load_digest; /* of the bytes taken */
    uint8_t load_tail[8]; /* a partial word of the load */
    uint8_t *mem;         /* the state */
    uint8_t *load;        /* a load in progress (swapped with mem when it completes) */
    uint32_t client_max_xfer;
    uint8_t *out;
};

/* The pattern's byte at @off: bytes of splitmix64(seed + word index). */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void pattern(uint64_t seed, uint64_t off, uint8_t *buf, size_t n)
{
    for (; n >= 8 && off % 8 == 0; n -= 8, off += 8, buf += 8) {
        uint64_t w = mix(seed + off / 8);
        memcpy(buf, &w, 8);
    }
    while (n) {
        uint64_t w = mix(seed + off / 8);
        unsigned b = (unsigned)(off % 8);
        size_t k = 8 - b < n ? 8 - b : n;
        memcpy(buf, (uint8_t *)&w + b, k);
        buf += k;
        off += k;
        n -= k;
    }
}

/* The digest of a byte stream, fed in any pieces: a polynomial over its
 * 8-byte words (the last one zero-padded) and its length. */
static uint64_t digest_word(uint64_t d, uint64_t w)
{
    return (d ^ w) * 0x100000001b3ull + 0x2545f4914f6cdd1dull;
}

static void digest_feed(uint64_t *d, uint8_t *tail, uint64_t pos, const uint8_t *p, size_t n)
{
    while (n) {
        unsigned b = (unsigned)(pos % 8);
        size_t k = 8 - b < n ? 8 - b : n;
        memcpy(tail + b, p, k);
        if (b + k == 8) {
            uint64_t w;
            memcpy(&w, tail, 8);
            *d = digest_word(*d, w);
        }
        pos += k;
        p += k;
        n -= k;
    }
}

static uint64_t digest_end(uint64_t d, uint8_t *tail, uint64_t len)
{
    if (len % 8) {
        uint64_t w = 0;
        memcpy(&w, tail, len % 8);
        d = digest_word(d, w);
    }
    return digest_word(d, len);
}

static uint64_t mem_digest(const uint8_t *p, uint64_t size)
{
    uint8_t tail[8];
    uint64_t d = 0, off = 0;

    for (; off + 8 <= size; off += 8) {
        uint64_t w;
        memcpy(&w, p + off, 8);
        d = digest_word(d, w);
    }
    memcpy(tail, p + off, (size_t)(size - off));
    return digest_end(d, tail, size);
}

/* ---- the device's arcs (libvfio-user's transition callback) ---- */

static int arc(struct emul *e, uint32_t to)
{
    uint32_t from = e->state;

    if (from == VFM_STATE_RESUMING && to == VFM_STATE_STOP) {
        if (e->load_pos != e->size)
            return -EINVAL; /* an incomplete state: the arc fails */
        uint8_t *old = e->mem;
        e->digest = digest_end(e->load_digest, e->load_tail, e->load_pos);
        e->loads++;
        e->mem = e->load;
        e->load = old;
    }
    if (to == VFM_STATE_RESUMING) {
        e->load_pos = 0;
        e->load_digest = 0;
    }
    if ((from == VFM_STATE_RUNNING && to == VFM_STATE_PRE_COPY) ||
        (from == VFM_STATE_STOP && to == VFM_STATE_STOP_COPY))
        e->save_pos = 0;
    e->state = to;
    return 0;
}

static int set_state(struct emul *e, uint32_t target)
{
    while (e->state != target) {
        uint32_t next;
        if (vfm_fsm_next(LVU_FLAGS, e->state, target, &next))
            return -EINVAL;
        if (arc(e, next))
            return -EINVAL;
    }
    return 0;
}

/* ---- the wire ---- */

static int send_all(int fd, const void *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p = (const char *)p + w;
        n -= (size_t)w;
    }
    return 0;
}

static int reply(struct emul *e, const struct vfm_vu_hdr *req, int err, const void *p, size_t n)
{
    struct vfm_vu_hdr h = {.msg_id = req->msg_id,
                           .cmd = req->cmd,
                           .msg_size = (uint32_t)(sizeof(h) + (err ? 0 : n)),
                           .flags = VFM_VU_TYPE_REPLY | (err ? VFM_VU_ERROR : 0),
                           .error = (uint32_t)err};

    if (send_all(e->conn, &h, sizeof(h)))
        return -1;
    return err || !n ? 0 : send_all(e->conn, p, n);
}

static bool stopped(const struct emul *e)
{
    return e->state == VFM_STATE_STOP || e->state == VFM_STATE_STOP_COPY;
}

static int do_version(struct emul *e, const struct vfm_vu_hdr *h, const uint8_t *b, size_t n)
{
    struct vfm_vu_version v;
    struct vfm_vu_caps c;
    char *json;
    int ret;

    if (n < sizeof(v))
        return reply(e, h, EINVAL, NULL, 0);
    memcpy(&v, b, sizeof(v));
    if (vfm_vu_caps_parse((const char *)b + sizeof(v), n - sizeof(v), &c))
        return reply(e, h, EINVAL, NULL, 0);
    e->client_max_xfer = c.max_data_xfer_size;
    v.minor = v.minor < LVU_MINOR ? v.minor : LVU_MINOR;
    vfm_vu_caps_default(&c);
    c.max_msg_fds = 16;
    c.max_data_xfer_size = LVU_MAX_XFER;
    c.migration_pgsize = 4096;
    json = vfm_vu_caps_format(&c);
    if (!json)
        return -1;
    memcpy(e->out, &v, sizeof(v));
    memcpy(e->out + sizeof(v), json, strlen(json) + 1);
    ret = reply(e, h, 0, e->out, sizeof(v) + strlen(json) + 1);
    free(json);
    return ret;
}

/* The operations libvfio-user takes for a feature: MIGRATION GET (and
 * PROBE), MIG_DEVICE_STATE GET and SET (and PROBE); none for any other id
 * this device has (no DMA). */
static uint32_t feature_ops(uint32_t id)
{
    if (id == VFM_FEATURE_MIGRATION)
        return VFM_FEATURE_GET | VFM_FEATURE_PROBE;
    if (id == VFM_FEATURE_MIG_DEVICE_STATE)
        return VFM_FEATURE_GET | VFM_FEATURE_SET | VFM_FEATURE_PROBE;
    return 0;
}

static int do_feature(struct emul *e, const struct vfm_vu_hdr *h, const uint8_t *b, size_t n)
{
    struct vfm_vu_feature f;
    uint32_t id, ops, sup;
    size_t out;

    if (n < sizeof(f))
        return reply(e, h, EINVAL, NULL, 0);
    memcpy(&f, b, sizeof(f));
    id = f.flags & VFM_FEATURE_MASK;
    ops = f.flags & ~VFM_FEATURE_MASK;
    sup = feature_ops(id);
    /* an operation the feature lacks, an undefined flag bit, an unknown
     * id (MIG_DATA_SIZE among them): EINVAL, not the kernel's ENOTTY */
    if ((f.flags & sup) != ops || !sup)
        return reply(e, h, EINVAL, NULL, 0);
    memcpy(e->out, b, n);
    if (ops == VFM_FEATURE_GET) {
        out = sizeof(f) +
              (id == VFM_FEATURE_MIGRATION ? sizeof(uint64_t) : sizeof(struct vfm_vu_mig_state));
        if (f.argsz < out)
            return reply(e, h, EINVAL, NULL, 0);
        if (id == VFM_FEATURE_MIGRATION) {
            uint64_t flags = LVU_FLAGS;
            memcpy(e->out + sizeof(f), &flags, sizeof(flags));
        } else {
            struct vfm_vu_mig_state ms = {.device_state = e->state, .data_fd = -1};
            memcpy(e->out + sizeof(f), &ms, sizeof(ms));
        }
        ((struct vfm_vu_feature *)e->out)->argsz = (uint32_t)out;
        return reply(e, h, 0, e->out, out);
    }
    /* SET, and PROBE (GET and SET may come with it): the reply echoes the
     * request, whose argsz must cover it */
    if (!(ops == VFM_FEATURE_SET || (ops & VFM_FEATURE_PROBE)) || f.argsz < n)
        return reply(e, h, EINVAL, NULL, 0);
    if (ops == VFM_FEATURE_SET) {
        struct vfm_vu_mig_state ms;
        if (n < sizeof(f) + sizeof(ms))
            return reply(e, h, EINVAL, NULL, 0);
        memcpy(&ms, b + sizeof(f), sizeof(ms));
        if (ms.device_state >= VFM_STATE_COUNT || set_state(e, ms.device_state))
            return reply(e, h, EINVAL, NULL, 0);
    }
    return reply(e, h, 0, e->out, n);
}

static int do_mig_read(struct emul *e, const struct vfm_vu_hdr *h, const uint8_t *b, size_t n)
{
    struct vfm_vu_mig_data q, *r = (struct vfm_vu_mig_data *)e->out;
    uint64_t left;
    size_t k;

    if (n < sizeof(q))
        return reply(e, h, EINVAL, NULL, 0);
    memcpy(&q, b, sizeof(q));
    if ((e->state != VFM_STATE_PRE_COPY && e->state != VFM_STATE_STOP_COPY) ||
        q.size > e->client_max_xfer || q.argsz < sizeof(q) + q.size || q.size > LVU_MAX_XFER)
        return reply(e, h, EINVAL, NULL, 0);
    left = e->size - e->save_pos;
    k = q.size < left ? q.size : (size_t)left;
    memset(e->out, 0, sizeof(q) + q.size); /* padded to what was asked */
    memcpy(e->out + sizeof(q), e->mem + e->save_pos, k);
    e->save_pos += k;
    r->size = (uint32_t)k;
    r->argsz = (uint32_t)(sizeof(q) + k);
    return reply(e, h, 0, e->out, sizeof(q) + q.size);
}

static int do_mig_write(struct emul *e, const struct vfm_vu_hdr *h, const uint8_t *b, size_t n)
{
    struct vfm_vu_mig_data q;

    if (n < sizeof(q))
        return reply(e, h, EINVAL, NULL, 0);
    memcpy(&q, b, sizeof(q));
    if (e->state != VFM_STATE_RESUMING || q.size > e->client_max_xfer ||
        q.argsz < sizeof(q) + q.size || q.size != n - sizeof(q) || q.size > e->size - e->load_pos)
        return reply(e, h, EINVAL, NULL, 0);
    digest_feed(&e->load_digest, e->load_tail, e->load_pos, b + sizeof(q), q.size);
    memcpy(e->load + e->load_pos, b + sizeof(q), q.size);
    e->load_pos += q.size;
    return reply(e, h, 0, NULL, 0);
}

static int do_region(struct emul *e, const struct vfm_vu_hdr *h, const uint8_t *b, size_t n)
{
    struct vfm_vu_region_access a;
    uint64_t regs[4] = {e->size, e->seed, e->digest, e->loads};
    uint8_t bar[BAR0_SIZE] = {0};

    if (n < sizeof(a))
        return reply(e, h, EINVAL, NULL, 0);
    memcpy(&a, b, sizeof(a));
    if (e->state == VFM_STATE_STOP_COPY || a.region != 0 || a.offset > BAR0_SIZE ||
        a.count > BAR0_SIZE - a.offset)
        return reply(e, h, EINVAL, NULL, 0);
    if (h->cmd == VFM_VU_REGION_WRITE)
        return reply(e, h, 0, &a, sizeof(a)); /* writes are ignored */
    memcpy(bar, regs, sizeof(regs));
    memcpy(e->out, &a, sizeof(a));
    memcpy(e->out + sizeof(a), bar + a.offset, a.count);
    return reply(e, h, 0, e->out, sizeof(a) + a.count);
}

static int do_region_info(struct emul *e, const struct vfm_vu_hdr *h, const uint8_t *b, size_t n)
{
    struct vfm_vu_region_info q;

    if (n < sizeof(q))
        return reply(e, h, EINVAL, NULL, 0);
    memcpy(&q, b, sizeof(q));
    if (q.index >= LVU_NUM_REGIONS)
        return reply(e, h, EINVAL, NULL, 0);
    q.argsz = sizeof(q);
    q.cap_offset = 0;
    q.offset = 0;
    q.size = q.index == 0 ? BAR0_SIZE : q.index == 7 ? 256 : 0;
    q.flags = q.size ? VFM_VU_REGION_READ_FLAG | VFM_VU_REGION_WRITE_FLAG : 0;
    return reply(e, h, 0, &q, sizeof(q));
}

static int dispatch(struct emul *e, const struct vfm_vu_hdr *h, const uint8_t *b, size_t n)
{
    bool allowed_stopped = h->cmd == VFM_VU_REGION_READ || h->cmd == VFM_VU_REGION_WRITE ||
                           h->cmd == VFM_VU_DEVICE_FEATURE || h->cmd == VFM_VU_MIG_DATA_READ;

    if (stopped(e) && !allowed_stopped)
        return reply(e, h, EINVAL, NULL, 0);
    switch (h->cmd) {
    case VFM_VU_VERSION:
        return do_version(e, h, b, n);
    case VFM_VU_DEVICE_GET_INFO: {
        struct vfm_vu_device_info i = {sizeof(i),
                                       VFM_VU_DEVICE_FLAGS_RESET | VFM_VU_DEVICE_FLAGS_PCI,
                                       LVU_NUM_REGIONS, LVU_NUM_IRQS};
        return reply(e, h, 0, &i, sizeof(i));
    }
    case VFM_VU_DEVICE_GET_REGION_INFO:
        return do_region_info(e, h, b, n);
    case VFM_VU_REGION_READ:
    case VFM_VU_REGION_WRITE:
        return do_region(e, h, b, n);
    case VFM_VU_DEVICE_RESET:
        return reply(e, h, 0, NULL, 0); /* the migration state is not touched */
    case VFM_VU_DEVICE_FEATURE:
        return do_feature(e, h, b, n);
    case VFM_VU_MIG_DATA_READ:
        return do_mig_read(e, h, b, n);
    case VFM_VU_MIG_DATA_WRITE:
        return do_mig_write(e, h, b, n);
    case VFM_VU_DMA_MAP:
    case VFM_VU_DMA_UNMAP:
        return reply(e, h, 0, b, h->cmd == VFM_VU_DMA_UNMAP ? n : 0);
    default:
        return reply(e, h, EINVAL, NULL, 0);
    }
}

/* One message, read as libvfio-user reads it. Return: 0 to go on, -1 when
 * the client is gone. */
static int serve_one(struct emul *e, uint8_t *in)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * 16)];
        struct cmsghdr align;
    } ctl;
    struct vfm_vu_hdr h;
    struct iovec iov = {&h, sizeof(h)};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = ctl.buf,
                         .msg_controllen = sizeof(ctl.buf)};
    ssize_t r = recvmsg(e->conn, &msg, 0);
    size_t len;

    if (r < (ssize_t)sizeof(h))
        return -1; /* end of file, or a short header: the client is dropped */
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            for (size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++)
                close(((int *)CMSG_DATA(c))[k]);
    if ((h.flags & VFM_VU_TYPE_MASK) != VFM_VU_TYPE_COMMAND || h.msg_size < sizeof(h) ||
        (h.msg_size == sizeof(h) && h.cmd != VFM_VU_DEVICE_RESET) || h.msg_size > LVU_MAX_MSG)
        return reply(e, &h, EINVAL, NULL, 0); /* the body is not skipped */
    len = h.msg_size - sizeof(h);
    if (len) {
        r = recv(e->conn, in, len, 0); /* one recv(): no waiting for the rest */
        if (r == 0)
            return -1;
        if (r < 0)
            return reply(e, &h, errno, NULL, 0);
        if ((size_t)r != len) {
            fprintf(stderr, "lvu-emul: msg%#hx: short read: expected=%zu, actual=%zd\n", h.msg_id,
                    len, r);
            return reply(e, &h, EINVAL, NULL, 0);
        }
    }
    return dispatch(e, &h, in, len);
}

static int usage(void)
{
    fprintf(stderr, "usage: lvu-emul --socket PATH --size BYTES [--seed N]\n");
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"socket", required_argument, NULL, 's'},
                                         {"size", required_argument, NULL, 'n'},
                                         {"seed", required_argument, NULL, 'e'},
                                         {NULL, 0, NULL, 0}};
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct emul e = {.state = VFM_STATE_RUNNING, .seed = 1};
    const char *path = NULL;
    uint8_t *in;
    int c, lfd;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 's':
            path = optarg;
            break;
        case 'n':
            e.size = strtoull(optarg, &end, 0);
            if (*end)
                return usage();
            break;
        case 'e':
            e.seed = strtoull(optarg, &end, 0);
            if (*end)
                return usage();
            break;
        default:
            return usage();
        }
    }
    if (!path || optind != argc || strlen(path) >= sizeof(addr.sun_path))
        return usage();
    signal(SIGPIPE, SIG_IGN);
    e.client_max_xfer = LVU_MAX_XFER;
    in = malloc(LVU_MAX_MSG);
    e.out = malloc(LVU_MAX_MSG + 64);
    if (!in || !e.out)
        return 1;
    strcpy(addr.sun_path, path);
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) || listen(lfd, 1)) {
        perror("lvu-emul: listen");
        return 1;
    }
    /* a client may connect meanwhile: it waits for the answer to VERSION.
     * The state's memory is mapped, not malloc'd: only what is written is
     * ever touched (MALLOC_PERTURB_ would fill a malloc'd GiB) */
    e.mem = mmap(NULL, e.size + 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    e.load = mmap(NULL, e.size + 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (e.mem == MAP_FAILED || e.load == MAP_FAILED)
        return 1;
    pattern(e.seed, 0, e.mem, e.size);
    e.digest = mem_digest(e.mem, e.size);
    /* like libvfio-user's vfu_attach_ctx(): one client; the sample servers
     * exit when it leaves */
    e.conn = accept(lfd, NULL, NULL);
    close(lfd);
    unlink(path);
    if (e.conn < 0)
        return 1;
    while (serve_one(&e, in) == 0)
        ;
    close(e.conn);
    free(in);
    free(e.out);
    munmap(e.mem, e.size + 1);
    munmap(e.load, e.size + 1);
    return 0;
}
