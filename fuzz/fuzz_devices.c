/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: the sample devices' own inputs, as a hostile guest or client
 * meets them — everything the device reads that someone else can write.
 *
 *  - two p2p-mailboxes, A (index 0) and B (index 1), each with its DMA
 *    table: A's has B's inbox and B's has A's (as the VMM maps them), and
 *    both have a third "inbox" at MB_PEER_IOVA(2) that is this fuzzer's own
 *    memfd: bytes in it are anything, and the fuzzer shrinks and regrows the
 *    file under the devices (the SIGBUS a guarded access must survive) and
 *    unmaps and remaps it while they send; each is programmed as a driver
 *    would (index, peers' inbox addresses, traffic, interrupt and a status
 *    record written into the hostile file);
 *  - their registers (BAR1, the region callback the server calls, with the
 *    bounds the server checks: 4- and 8-byte writes anywhere, peers'
 *    addresses and control bits included) and their own inboxes (BAR0,
 *    shared memory a client mmaps and may write anything into, lanes' heads
 *    and tails included);
 *  - the large device's registers (the dirty rate, any u64);
 *  - state changes among all of them while their workers run.
 * The ticker has no register or shared memory: its only input is its
 * state stream, which the stream and server targets cover.
 *
 * Input: a list of operations, each an opcode byte and its arguments (see
 * the OP_* below); bytes run out, the input ends. Devices and their
 * workers live across inputs; each input starts from a reset.
 * Invariants: no crash, leak or out-of-bounds access (sanitizers), and no
 * device stops answering: at the end of every input each device's
 * registers read and RUNNING -> STOP -> RUNNING completes, all within a
 * watchdog of 10 s per input (a hang is reported by abort()).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <vfiomig/device.h>
#include <vfiomig/uapi.h>
#include <vfiomig/vfio_user.h>

#include "fuzz.h"
#include "large.h"
#include "mailbox.h"

#define NMB 2
#define HOSTILE_PEER 2u
#define LG_MEM (64u * 1024u)
#define WATCHDOG_S 10

enum {
    OP_REG_WRITE = 0, /* dev, off:u16, value:u64 */
    OP_REG_READ,      /* dev, off:u16, count */
    OP_INBOX_WRITE,   /* mailbox, off:u16, len, bytes: into its own BAR0 */
    OP_PEER_WRITE,    /* off:u16, len, bytes: into the hostile inbox */
    OP_RESIZE,        /* pages: the hostile file becomes pages % 17 pages */
    OP_STATE,         /* dev, state */
    OP_RUN,           /* n: let the workers run n * 50 us */
    OP_REMAP,         /* mailbox: unmap and map the hostile inbox again */
    OP_COUNT
};

struct dev {
    struct vfm_device *d;
    struct vfm_server_config cfg; /* its regions, as its server has them */
};

static struct mailbox *mbs[NMB];
static struct vfm_dma *dmas[NMB];
static struct large *lg;
static struct dev devs[NMB + 1]; /* A, B, the large device */
static int hostile_fd = -1;
static uint8_t *hostile;     /* our mapping of the whole 64 KiB */
static uint64_t hostile_len; /* the file's size now */
static atomic_long input_started;

static long now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec;
}

static void *watchdog(void *arg)
{
    (void)arg;
    for (;;) {
        long t = atomic_load(&input_started);
        if (t && now_s() - t > WATCHDOG_S) {
            fprintf(stderr, "fuzz_devices: an input ran for more than %d s: a device hangs\n",
                    WATCHDOG_S);
            abort();
        }
        sleep(1);
    }
    return NULL;
}

static void die(const char *what, int err)
{
    fprintf(stderr, "fuzz_devices: %s: %s\n", what, strerror(err < 0 ? -err : err));
    abort();
}

static void map_hostile(unsigned i)
{
    int ret = vfm_dma_map(dmas[i], MB_PEER_IOVA(HOSTILE_PEER), MB_INBOX_SIZE, hostile_fd, 0,
                          VFM_VU_DMA_READ_FLAG | VFM_VU_DMA_WRITE_FLAG);
    /* refused while the file is shorter than the mapping: as a server does */
    if (ret && !(ret == -EINVAL && hostile_len < MB_INBOX_SIZE))
        die("map the hostile inbox", ret);
}

static void setup(void)
{
    static bool done;
    struct large_config lc = {.name = "fz-large", .size = LG_MEM, .page = 4096, .p2p = true};
    pthread_t wd;
    int ret;

    if (done)
        return;
    done = true;
    for (unsigned i = 0; i < NMB; i++) {
        char name[16];
        snprintf(name, sizeof(name), "fz-mb%u", i);
        if ((ret = vfm_dma_new(16, &dmas[i])) || (ret = mailbox_new(name, true, dmas[i], &mbs[i])))
            die("mailbox_new", ret);
        devs[i].d = mailbox_device(mbs[i]);
        mailbox_server_regions(mbs[i], &devs[i].cfg);
    }
    for (unsigned i = 0; i < NMB; i++) {
        const struct vfm_server_region *peer = &devs[1 - i].cfg.regions[MB_REGION_INBOX];
        ret = vfm_dma_map(dmas[i], MB_PEER_IOVA(1 - i), MB_INBOX_SIZE, peer->fd, 0,
                          VFM_VU_DMA_READ_FLAG | VFM_VU_DMA_WRITE_FLAG);
        if (ret)
            die("map a peer's inbox", ret);
    }
    if ((ret = large_new(&lc, &lg)))
        die("large_new", ret);
    devs[NMB].d = large_device(lg);
    large_server_regions(lg, &devs[NMB].cfg);
    hostile_fd = memfd_create("fz-hostile", MFD_CLOEXEC);
    if (hostile_fd < 0 || ftruncate(hostile_fd, MB_INBOX_SIZE) < 0)
        die("memfd", errno);
    hostile_len = MB_INBOX_SIZE;
    hostile = mmap(NULL, MB_INBOX_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, hostile_fd, 0);
    if (hostile == MAP_FAILED)
        die("mmap", errno);
    for (unsigned i = 0; i < NMB; i++)
        map_hostile(i);
    if (pthread_create(&wd, NULL, watchdog, NULL))
        die("watchdog", EAGAIN);
    pthread_detach(wd);
}

/* The bytes of the input, read in order; past the end, zeros. */
struct in {
    const uint8_t *p;
    size_t n;
};

static uint8_t u8(struct in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static uint64_t un(struct in *in, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned k = 0; k < bytes; k++)
        v |= (uint64_t)u8(in) << (8 * k);
    return v;
}

/* A register access with the bounds a server checks before calling. */
static void reg_access(unsigned dv, uint64_t off, uint32_t count, void *buf, bool write)
{
    const struct vfm_server_region *r =
        &devs[dv].cfg.regions[dv < NMB ? MB_REGION_REGS : LG_REGION_REGS];
    off %= r->size;
    if (off + count > r->size)
        off = r->size - count;
    (void)r->access(devs[dv].cfg.priv, dv < NMB ? MB_REGION_REGS : LG_REGION_REGS, off, buf, count,
                    write);
}

static void hostile_resize(uint64_t len)
{
    if (ftruncate(hostile_fd, (off_t)len) < 0)
        die("ftruncate", errno);
    hostile_len = len;
}

/* A clean start: the hostile file whole and an empty ring, every device
 * reset (RUNNING, rings empty), the mailboxes' index and interval set,
 * the large device still. */
static void begin(void)
{
    uint32_t v;
    uint64_t rate = 0, wb;

    for (unsigned i = 0; i < NMB; i++)
        vfm_dma_unmap(dmas[i], MB_PEER_IOVA(HOSTILE_PEER), MB_INBOX_SIZE);
    hostile_resize(0); /* zeroes it: empty lanes */
    hostile_resize(MB_INBOX_SIZE);
    for (unsigned i = 0; i < NMB; i++)
        map_hostile(i);
    for (unsigned i = 0; i <= NMB; i++)
        if (vfm_device_reset(devs[i].d) < 0)
            die("reset", EIO);
    for (unsigned i = 0; i < NMB; i++) {
        v = i;
        reg_access(i, MB_REG_INDEX, 4, &v, true);
        v = 20;
        reg_access(i, MB_REG_INTERVAL, 4, &v, true);
        for (unsigned j = 0; j <= HOSTILE_PEER; j++) {
            uint64_t a = MB_PEER_IOVA(j);
            if (j != i)
                reg_access(i, MB_REG_PEER(j), 8, &a, true);
        }
        wb = MB_PEER_IOVA(HOSTILE_PEER) + MB_INBOX_SIZE - 64;
        reg_access(i, MB_REG_WRITEBACK, 8, &wb, true);
        v = MB_CTL_SEND | MB_CTL_IRQ | MB_CTL_WRITEBACK;
        reg_access(i, MB_REG_CONTROL, 4, &v, true);
    }
    reg_access(NMB, LG_REG_RATE, 8, &rate, true);
}

/* Every device answers: its registers read, and it stops and runs again
 * (from ERROR or a session, a reset first). */
static void check_alive(void)
{
    uint8_t buf[8];

    for (unsigned i = 0; i <= NMB; i++) {
        uint32_t st = vfm_device_get_state(devs[i].d);
        int ret;
        reg_access(i, 0, 8, buf, false);
        if (st != VFM_STATE_RUNNING && st != VFM_STATE_STOP)
            if (vfm_device_reset(devs[i].d) < 0)
                die("reset after the input", EIO);
        ret = vfm_device_set_state(devs[i].d, VFM_STATE_STOP, NULL);
        if (ret)
            die("RUNNING -> STOP", ret);
        ret = vfm_device_set_state(devs[i].d, VFM_STATE_RUNNING, NULL);
        if (ret)
            die("STOP -> RUNNING", ret);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct in in = {data, size};
    uint8_t buf[256];

    setup();
    atomic_store(&input_started, now_s());
    begin();
    while (in.n) {
        uint8_t op = u8(&in);
        switch (op % OP_COUNT) {
        case OP_REG_WRITE: {
            unsigned dv = u8(&in) % (NMB + 1);
            uint64_t off = un(&in, 2), v = un(&in, 8);
            /* the mailboxes' registers: bit 15 of the offset picks 8 bytes */
            reg_access(dv, off & 0x7fff, dv < NMB && !(off & 0x8000) ? 4 : 8, &v, true);
            break;
        }
        case OP_REG_READ: {
            unsigned dv = u8(&in) % (NMB + 1);
            uint64_t off = un(&in, 2);
            uint32_t count = 1 + u8(&in) % 8;
            reg_access(dv, off, count, buf, false);
            break;
        }
        case OP_INBOX_WRITE: {
            const struct vfm_server_region *r = &devs[u8(&in) % NMB].cfg.regions[MB_REGION_INBOX];
            uint64_t off = un(&in, 2) % r->size;
            size_t len = u8(&in) % 64;
            for (size_t k = 0; k < len && off + k < r->size; k++)
                ((volatile uint8_t *)r->mem)[off + k] = u8(&in);
            break;
        }
        case OP_PEER_WRITE: {
            uint64_t off = un(&in, 2) % MB_INBOX_SIZE;
            size_t len = u8(&in) % 64;
            for (size_t k = 0; k < len; k++) {
                uint8_t b = u8(&in);
                if (off + k < hostile_len) /* ours is not guarded */
                    ((volatile uint8_t *)hostile)[off + k] = b;
            }
            break;
        }
        case OP_RESIZE:
            hostile_resize((uint64_t)(u8(&in) % 17) * 4096);
            break;
        case OP_STATE: {
            unsigned dv = u8(&in) % (NMB + 1);
            int ret = vfm_device_set_state(devs[dv].d, u8(&in) % 9, NULL);
            if (ret && vfm_device_get_state(devs[dv].d) == VFM_STATE_ERROR &&
                vfm_device_reset(devs[dv].d) < 0)
                die("reset from ERROR", EIO);
            break;
        }
        case OP_RUN:
            usleep((useconds_t)(u8(&in) % 16) * 50);
            break;
        case OP_REMAP: {
            unsigned i = u8(&in) % NMB;
            vfm_dma_unmap(dmas[i], MB_PEER_IOVA(HOSTILE_PEER), MB_INBOX_SIZE);
            map_hostile(i);
            break;
        }
        }
    }
    check_alive();
    atomic_store(&input_started, 0);
    return 0;
}

/* ---- seeds ---- */

struct out {
    uint8_t *p;
    size_t n, cap;
};

static void put(struct out *o, uint64_t v, unsigned bytes)
{
    for (unsigned k = 0; k < bytes && o->n < o->cap; k++)
        o->p[o->n++] = (uint8_t)(v >> (8 * k));
}

static void put_run(struct out *o, unsigned n)
{
    put(o, OP_RUN, 1);
    put(o, n, 1);
}

size_t fuzz_seed(unsigned i, uint8_t *out, size_t cap)
{
    struct out o = {out, 0, cap};

    switch (i) {
    case 0: /* traffic, then the counters */
        put(&o, OP_REG_WRITE, 1), put(&o, 0, 1), put(&o, MB_REG_INTERVAL, 2), put(&o, 1, 8);
        put_run(&o, 15);
        for (unsigned r = MB_REG_SENT; r <= MB_REG_WRITEBACKS; r += 8)
            put(&o, OP_REG_READ, 1), put(&o, 1, 1), put(&o, r, 2), put(&o, 7, 1);
        break;
    case 1: /* the hostile inbox's lanes: a tail a lap ahead, then the largest */
        put(&o, OP_PEER_WRITE, 1), put(&o, 8, 2), put(&o, 8, 1), put(&o, MB_LANE_SLOTS, 8);
        put_run(&o, 10);
        put(&o, OP_PEER_WRITE, 1), put(&o, 1024 + 8, 2), put(&o, 8, 1), put(&o, ~0ull, 8);
        put_run(&o, 10);
        break;
    case 2: /* a guest winds its own inbox's head and publishes messages */
        put(&o, OP_INBOX_WRITE, 1), put(&o, 1, 1), put(&o, 0, 2), put(&o, 16, 1);
        put(&o, ~0ull - 5, 8), put(&o, 3, 8);
        put(&o, OP_INBOX_WRITE, 1), put(&o, 1, 1), put(&o, 2048, 2), put(&o, 32, 1);
        put(&o, 0, 8), put(&o, 3, 8), put(&o, 0, 8), put(&o, 0, 8);
        put(&o, OP_INBOX_WRITE, 1), put(&o, 1, 1), put(&o, 2048 + 64, 2), put(&o, 24, 1);
        put(&o, 7, 8), put(&o, 7, 8), put(&o, 1, 8);
        put_run(&o, 10);
        break;
    case 3: /* the hostile file shrinks under the senders, then grows */
        put_run(&o, 4);
        put(&o, OP_RESIZE, 1), put(&o, 0, 1);
        put_run(&o, 15);
        put(&o, OP_RESIZE, 1), put(&o, 3, 1);
        put(&o, OP_REMAP, 1), put(&o, 0, 1);
        put_run(&o, 8);
        put(&o, OP_RESIZE, 1), put(&o, 16, 1);
        put(&o, OP_REMAP, 1), put(&o, 1, 1);
        put_run(&o, 8);
        break;
    case 4: /* the large device's rate register: its largest value */
        put(&o, OP_REG_WRITE, 1), put(&o, 2, 1), put(&o, LG_REG_RATE, 2), put(&o, ~0ull, 8);
        put_run(&o, 15);
        put(&o, OP_REG_READ, 1), put(&o, 2, 1), put(&o, LG_REG_WRITES, 2), put(&o, 7, 1);
        break;
    case 5: /* state changes, P2P and pre-copy, while the others run */
        put(&o, OP_STATE, 1), put(&o, 0, 1), put(&o, VFM_STATE_RUNNING_P2P, 1);
        put_run(&o, 4);
        put(&o, OP_STATE, 1), put(&o, 2, 1), put(&o, VFM_STATE_PRE_COPY, 1);
        put(&o, OP_STATE, 1), put(&o, 0, 1), put(&o, VFM_STATE_STOP, 1);
        put(&o, OP_STATE, 1), put(&o, 1, 1), put(&o, VFM_STATE_STOP_COPY, 1);
        put(&o, OP_STATE, 1), put(&o, 0, 1), put(&o, VFM_STATE_RESUMING, 1);
        put_run(&o, 4);
        break;
    case 6: /* the interval register's extremes and an index out of range */
        put(&o, OP_REG_WRITE, 1), put(&o, 0, 1), put(&o, MB_REG_INTERVAL, 2), put(&o, 0, 8);
        put(&o, OP_REG_WRITE, 1), put(&o, 1, 1), put(&o, MB_REG_INTERVAL, 2),
            put(&o, 0xffffffffu, 8);
        put(&o, OP_REG_WRITE, 1), put(&o, 1, 1), put(&o, MB_REG_INDEX, 2), put(&o, 64, 8);
        put_run(&o, 6);
        break;
    case 7: /* a driver reprograms a peer by halves, the status record, bad values */
        put(&o, OP_REG_WRITE, 1), put(&o, 0, 1), put(&o, MB_REG_PEER(1) + 4, 2), put(&o, 5, 8);
        put(&o, OP_REG_WRITE, 1), put(&o, 0, 1), put(&o, MB_REG_PEER(1), 2), put(&o, 0x1000, 8);
        put(&o, OP_REG_WRITE, 1), put(&o, 0, 1), put(&o, 0x8000 | MB_REG_WRITEBACK, 2),
            put(&o, 3, 8);
        put(&o, OP_REG_WRITE, 1), put(&o, 1, 1), put(&o, MB_REG_IRQ_STATUS, 2), put(&o, ~0ull, 8);
        put(&o, OP_REG_WRITE, 1), put(&o, 1, 1), put(&o, MB_REG_CONTROL, 2), put(&o, 0xff, 8);
        put_run(&o, 8);
        put(&o, OP_REG_READ, 1), put(&o, 0, 1), put(&o, MB_REG_PEER(1), 2), put(&o, 7, 1);
        break;
    default:
        return 0;
    }
    return o.n;
}
