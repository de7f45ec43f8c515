/* SPDX-License-Identifier: MIT */
/*
 * A "VM" of p2p-mailbox devices, each a real `vfiomig serve` process, wired
 * so that every device writes into every other's inbox BAR (DMA_MAP of the
 * peer's shared memory), and the checker that proves, from the devices'
 * counters, that every message sent was consumed exactly once.
 */
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "large.h"
#include "mailbox.h"
#include "vm.h"

extern char **environ;

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The VM's RAM: a shared memfd, its power-on pattern (a source's) or
 * zeros (a destination's, which the migration fills). */
static int ram_new(struct vm *vm, uint64_t size, bool pattern)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;

    vm->ram_fd = memfd_create("guest-ram", MFD_CLOEXEC);
    if (vm->ram_fd < 0)
        return -errno;
    vm->ram_size = size; /* vm_stop() closes what is set */
    if (ftruncate(vm->ram_fd, (off_t)size) < 0)
        return -errno;
    vm->ram = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, vm->ram_fd, 0);
    if (vm->ram == MAP_FAILED) {
        vm->ram = NULL;
        return -errno;
    }
    for (uint64_t off = VM_RING_BASE; pattern && off < size; off += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(vm->ram + off, &x, 8);
    }
    /* each ring a power of two of records, 64 Ki at most, in half the RAM */
    vm->ring_slots = 65536;
    while (vm->n && (uint64_t)vm->ring_slots * sizeof(struct mb_ring_rec) * vm->n > size / 2)
        vm->ring_slots /= 2;
    return 0;
}

void vm_ram_range(const struct vm *vm, struct vfm_mig_ram *r)
{
    *r = (struct vfm_mig_ram){.base = vm->ram, .iova = VM_RAM_IOVA, .size = vm->ram_size};
}

int vm_start(struct vm *vm, const char *dir, const char *side, unsigned n, const bool *no_p2p,
             const struct vm_large *large, uint64_t ram_size)
{
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    unsigned total = n + (large ? 1 : 0);
    int ret;

    memset(vm, 0, sizeof(*vm));
    vm->n = n;
    vm->nlarge = large ? 1 : 0;
    vm->ram_fd = -1;
    for (unsigned i = 0; i < total; i++) {
        vm->pid[i] = -1;
        vm->bar_fd[i] = -1;
    }
    if (len < 0)
        return -errno;
    if (ram_size && (ret = ram_new(vm, ram_size, !strcmp(side, "src"))))
        return ret;
    exe[len] = '\0';
    {
        /* the device processes end with this one (serve.c) */
        char pid[32];
        snprintf(pid, sizeof(pid), "%ld", (long)getpid());
        setenv("VFIOMIG_DEMO_PARENT", pid, 1);
    }
    for (unsigned i = 0; i < total; i++) {
        char name[64];
        const char *argv[16];
        int a = 0;
        posix_spawn_file_actions_t fa;

        snprintf(vm->path[i], sizeof(vm->path[i]), "%s/%s-%u.sock", dir, side, i);
        snprintf(name, sizeof(name), "%s-%u", side, i);
        argv[a++] = exe;
        argv[a++] = "serve";
        argv[a++] = "--device";
        argv[a++] = i < n ? "p2p-mailbox" : "large";
        if (i == n) {
            argv[a++] = "--mem";
            argv[a++] = large->mem;
            argv[a++] = "--dirty-rate"; /* a destination is stopped by vm_wire */
            argv[a++] = large->rate;
            argv[a++] = "--load-in-place"; /* its state lands in warm memory */
        }
        argv[a++] = "--socket";
        argv[a++] = vm->path[i];
        argv[a++] = "--name";
        argv[a++] = name;
        if (no_p2p && i < n && no_p2p[i])
            argv[a++] = "--no-p2p";
        argv[a] = NULL;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
        ret = posix_spawn(&vm->pid[i], exe, &fa, NULL, (char *const *)argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (ret)
            return -ret;
    }
    for (unsigned i = 0; i < total; i++) {
        ret = -ECONNREFUSED;
        snprintf(vm->name[i], sizeof(vm->name[i]), "%s-%u", side, i);
        for (int k = 0; k < 500 && ret; k++) {
            ret = vfm_vu_client_connect(vm->path[i], vm->name[i], &vm->c[i]);
            if (ret)
                sleep_ms(10);
        }
        if (ret)
            return ret;
        vm->ep[i] = vfm_vu_client_endpoint(vm->c[i]);
        /* the guest RAM in its DMA space, shared, as QEMU maps it */
        if (vm->ram &&
            (ret = vfm_vu_client_dma_map(vm->c[i], VM_RAM_IOVA, vm->ram_size, vm->ram_fd, 0,
                                         VFM_VU_DMA_READ_FLAG | VFM_VU_DMA_WRITE_FLAG)))
            return ret;
    }
    return 0;
}

/* Memory space and bus master enables in device @i's config space. */
static int bus_master(struct vm *vm, unsigned i)
{
    uint16_t cmd;
    int ret = vfm_vu_client_region_read(vm->c[i], VFM_PCI_CONFIG_REGION, 4, &cmd, 2);

    if (ret)
        return ret;
    cmd |= 0x0006;
    return vfm_vu_client_region_write(vm->c[i], VFM_PCI_CONFIG_REGION, 4, &cmd, 2);
}

/* Programs mailbox @i as a driver would: its index and send interval, the
 * bus address of every peer's inbox (where this VMM maps it), memory and
 * bus-master enables in its config space, traffic on. */
static int program(struct vm *vm, unsigned i)
{
    uint32_t idx = i, interval = 200, ctl = MB_CTL_SEND;
    uint64_t a;
    int ret;

    if ((ret = vfm_vu_client_region_write(vm->c[i], MB_REGION_REGS, MB_REG_INDEX, &idx, 4)) ||
        (ret = vfm_vu_client_region_write(vm->c[i], MB_REGION_REGS, MB_REG_INTERVAL, &interval, 4)))
        return ret;
    for (unsigned j = 0; j < vm->n; j++) {
        a = MB_PEER_IOVA(j);
        if (j != i &&
            (ret = vfm_vu_client_region_write(vm->c[i], MB_REGION_REGS, MB_REG_PEER(j), &a, 8)))
            return ret;
    }
    if (vm->ram) {
        /* in guest RAM: its status record and its delivery ring */
        uint32_t slots = vm->ring_slots;
        a = VM_RAM_IOVA + VM_STATUS_OFF(i);
        if ((ret = vfm_vu_client_region_write(vm->c[i], MB_REGION_REGS, MB_REG_WRITEBACK, &a, 8)))
            return ret;
        a = VM_RAM_IOVA + VM_RING_BASE + (uint64_t)i * slots * sizeof(struct mb_ring_rec);
        if ((ret = vfm_vu_client_region_write(vm->c[i], MB_REGION_REGS, MB_REG_RING, &a, 8)) ||
            (ret = vfm_vu_client_region_write(vm->c[i], MB_REGION_REGS, MB_REG_RING_SLOTS, &slots,
                                              4)))
            return ret;
        ctl |= MB_CTL_WRITEBACK | MB_CTL_RING;
    }
    if ((ret = bus_master(vm, i)))
        return ret;
    /* the control bits without traffic first: every device records what
     * it consumes before any peer sends (traffic_on()) */
    ctl &= ~MB_CTL_SEND;
    return vfm_vu_client_region_write(vm->c[i], MB_REGION_REGS, MB_REG_CONTROL, &ctl, 4);
}

/* Traffic on, once every device is programmed. */
static int traffic_on(struct vm *vm, unsigned i)
{
    uint32_t ctl;
    int ret = vfm_vu_client_region_read(vm->c[i], MB_REGION_REGS, MB_REG_CONTROL, &ctl, 4);

    if (ret)
        return ret;
    ctl |= MB_CTL_SEND;
    return vfm_vu_client_region_write(vm->c[i], MB_REGION_REGS, MB_REG_CONTROL, &ctl, 4);
}

int vm_wire(struct vm *vm, bool stopped)
{
    for (unsigned i = vm->n; i < vm->n + vm->nlarge; i++) {
        uint64_t a = VM_RAM_IOVA + VM_RESULT_OFF;
        int ret;
        if (stopped && (ret = vfm_ep_set_state(vm->ep[i], VFM_STATE_STOP)))
            return ret;
        /* its result record in guest RAM */
        if (vm->ram &&
            ((ret = vfm_vu_client_region_write(vm->c[i], LG_REGION_REGS, LG_REG_RESULT, &a, 8)) ||
             (ret = bus_master(vm, i))))
            return ret;
    }
    for (unsigned i = 0; i < vm->n; i++) {
        struct vfm_vu_region_info info;
        int ret;

        /* a destination must not run before its state arrives */
        if (stopped && (ret = vfm_ep_set_state(vm->ep[i], VFM_STATE_STOP)))
            return ret;
        if ((ret = vfm_vu_client_region_info(vm->c[i], MB_REGION_INBOX, &info, &vm->bar_fd[i])))
            return ret;
        if (vm->bar_fd[i] < 0 || !(info.flags & VFM_VU_REGION_MMAP_FLAG))
            return -ENODEV;
    }
    /* every device sees every peer's inbox in its DMA space */
    for (unsigned i = 0; i < vm->n; i++)
        for (unsigned j = 0; j < vm->n; j++) {
            int ret;
            if (i == j)
                continue;
            ret = vfm_vu_client_dma_map(vm->c[i], MB_PEER_IOVA(j), MB_INBOX_SIZE, vm->bar_fd[j], 0,
                                        VFM_VU_DMA_READ_FLAG | VFM_VU_DMA_WRITE_FLAG);
            if (ret)
                return ret;
        }
    for (unsigned i = 0; i < vm->n; i++) {
        int ret = program(vm, i);
        if (ret)
            return ret;
    }
    for (unsigned i = 0; i < vm->n; i++) {
        int ret = traffic_on(vm, i);
        if (ret)
            return ret;
    }
    return 0;
}

static int reg(struct vm *vm, unsigned i, uint32_t off, uint64_t *v)
{
    return vfm_vu_client_region_read(vm->c[i], MB_REGION_REGS, off, v, 8);
}

/* Counts the messages still waiting in device @i's inbox, by sender; a
 * lane whose tail is more than a lap ahead of its head was corrupted: a
 * peer's write landed in it while its state was being saved. Return: the
 * lanes corrupted, or -errno. */
static int count_waiting(struct vm *vm, unsigned i, uint64_t waiting[MB_MAX_DEVICES])
{
    struct mb_inbox *in = malloc(sizeof(*in));
    int ret, bad = 0;

    if (!in)
        return -ENOMEM;
    ret = vfm_vu_client_region_read(vm->c[i], MB_REGION_INBOX, 0, in, sizeof(*in));
    for (unsigned f = 0; !ret && f < MB_MAX_DEVICES; f++) {
        uint64_t d = in->lanes[f].tail - in->lanes[f].head;
        if (d > MB_LANE_SLOTS)
            bad++;
        else
            waiting[f] += d;
    }
    free(in);
    return ret ? ret : bad;
}

int vm_check(struct vm *vm, struct vm_tally *t)
{
    return vm_tally(vm, t, true);
}

int vm_tally(struct vm *vm, struct vm_tally *t, bool quiesce)
{
    static uint64_t sent[MB_MAX_DEVICES][MB_MAX_DEVICES], cons[MB_MAX_DEVICES][MB_MAX_DEVICES],
        wait[MB_MAX_DEVICES][MB_MAX_DEVICES];
    uint32_t flags[MB_MAX_DEVICES];
    int ret;

    memset(t, 0, sizeof(*t));
    t->failed = -1;
    memset(wait, 0, sizeof(wait));
    for (unsigned i = 0; i < vm->n; i++)
        if ((ret = vfm_ep_flags(vm->ep[i], &flags[i])))
            return t->failed = (int)i, ret;
    /* P2P devices first: no new sends from them, inboxes still drained;
     * then the others, which can only stop */
    for (unsigned i = 0; i < vm->n && quiesce; i++)
        if ((flags[i] & VFM_MIGRATION_P2P) &&
            (ret = vfm_ep_set_state(vm->ep[i], VFM_STATE_RUNNING_P2P)))
            return t->failed = (int)i, ret;
    for (unsigned i = 0; i < vm->n && quiesce; i++)
        if (!(flags[i] & VFM_MIGRATION_P2P) && (ret = vfm_ep_set_state(vm->ep[i], VFM_STATE_STOP)))
            return t->failed = (int)i, ret;
    for (unsigned i = 0; i < vm->n; i++) {
        uint64_t pending = 1, v;
        for (int k = 0; k < 300 && quiesce && (flags[i] & VFM_MIGRATION_P2P); k++) {
            if ((ret = reg(vm, i, MB_REG_PENDING, &pending)))
                return t->failed = (int)i, ret;
            if (!pending)
                break;
            sleep_ms(5);
        }
        for (unsigned j = 0; j < vm->n; j++)
            if ((ret = reg(vm, i, MB_REG_SENT_TO + 8 * j, &sent[i][j])) ||
                (ret = reg(vm, i, MB_REG_CONS_FROM + 8 * j, &cons[i][j])))
                return t->failed = (int)i, ret;
        ret = count_waiting(vm, i, wait[i]);
        if (ret < 0)
            return t->failed = (int)i, ret;
        t->corrupted += (unsigned)ret;
        if ((ret = reg(vm, i, MB_REG_GAPS, &v)))
            return t->failed = (int)i, ret;
        t->gaps += v;
        if ((ret = reg(vm, i, MB_REG_DUPS, &v)))
            return t->failed = (int)i, ret;
        t->duplicated += v;
    }
    for (unsigned i = 0; i < vm->n; i++)
        for (unsigned j = 0; j < vm->n; j++) {
            uint64_t got = cons[j][i] + wait[j][i];
            if (i == j)
                continue;
            t->sent += sent[i][j];
            t->consumed += cons[j][i];
            t->waiting += wait[j][i];
            if (sent[i][j] > got)
                t->lost += sent[i][j] - got;
            else
                t->duplicated += got - sent[i][j];
        }
    return 0;
}

int vm_large_digests(struct vm *vm, uint64_t *saved, uint64_t *loaded)
{
    int ret;

    if (!vm->nlarge)
        return -ENODEV;
    ret = vfm_vu_client_region_read(vm->c[vm->n], LG_REGION_REGS, LG_REG_DIGEST_SAVED, saved, 8);
    if (!ret)
        ret = vfm_vu_client_region_read(vm->c[vm->n], LG_REGION_REGS, LG_REG_DIGEST_LOADED, loaded,
                                        8);
    return ret;
}

int vm_ring_check(struct vm *vm, struct vm_ring_tally *t)
{
    uint32_t slots = vm->ring_slots;
    int ret;

    memset(t, 0, sizeof(*t));
    t->failed = -1;
    t->result_ok = true;
    if (!vm->ram)
        return 0;
    for (unsigned i = 0; i < vm->n; i++) {
        const struct mb_ring_rec *ring =
            (const struct mb_ring_rec *)(vm->ram + VM_RING_BASE +
                                         (uint64_t)i * slots * sizeof(struct mb_ring_rec));
        uint64_t count, cons[MB_MAX_DEVICES], last[MB_MAX_DEVICES] = {0},
                                              seen[MB_MAX_DEVICES] = {0};

        if ((ret = reg(vm, i, MB_REG_RING_COUNT, &count)))
            return t->failed = (int)i, ret;
        for (unsigned j = 0; j < vm->n; j++)
            if ((ret = reg(vm, i, MB_REG_CONS_FROM + 8 * j, &cons[j])))
                return t->failed = (int)i, ret;
        if (count > slots)
            t->wrapped = true;
        for (uint64_t k = count > slots ? count - slots + 1 : 1; k <= count; k++) {
            struct mb_ring_rec r;
            memcpy(&r, &ring[(k - 1) % slots], sizeof(r));
            t->records++;
            if (r.n != k || r.magic != MB_COMPAT || r.from >= vm->n || r.from == i ||
                r.check != mb_ring_check(r.n, r.from, r.seq)) {
                t->bad++;
                continue;
            }
            if (last[r.from] && r.seq != last[r.from] + 1)
                t->gaps++;
            last[r.from] = r.seq;
            seen[r.from]++;
        }
        /* a ring that never wrapped holds every message consumed */
        for (unsigned j = 0; j < vm->n && count <= slots; j++)
            if (cons[j] > seen[j])
                t->missing += cons[j] - seen[j];
    }
    if (vm->nlarge) {
        /* stopped, its last result record is final */
        struct lg_result r;
        uint64_t results = 0, writes = 0;
        unsigned l = vm->n;
        if ((ret = vfm_ep_set_state(vm->ep[l], VFM_STATE_STOP)) ||
            (ret = vfm_vu_client_region_read(vm->c[l], LG_REGION_REGS, LG_REG_RESULTS, &results,
                                             8)) ||
            (ret = vfm_vu_client_region_read(vm->c[l], LG_REGION_REGS, LG_REG_WRITES, &writes, 8)))
            return t->failed = (int)l, ret;
        memcpy(&r, vm->ram + VM_RESULT_OFF, sizeof(r));
        t->result_ok =
            results > 0 && r.magic == LG_COMPAT && r.seq == results && r.writes == writes;
    }
    return 0;
}

void vm_stop(struct vm *vm)
{
    unsigned total = vm->n + vm->nlarge;

    for (unsigned i = 0; i < total; i++) {
        vfm_vu_client_free(vm->c[i]);
        vm->c[i] = NULL;
        if (vm->bar_fd[i] >= 0)
            close(vm->bar_fd[i]);
        if (vm->pid[i] > 0)
            kill(vm->pid[i], SIGTERM);
    }
    for (unsigned i = 0; i < total; i++) {
        if (vm->pid[i] > 0)
            waitpid(vm->pid[i], NULL, 0);
        unlink(vm->path[i]);
        vm->pid[i] = -1;
    }
    if (vm->ram)
        munmap(vm->ram, (size_t)vm->ram_size);
    if (vm->ram_size)
        close(vm->ram_fd);
    vm->ram = NULL;
    vm->ram_size = 0;
}

unsigned vm_running(struct vm *vm)
{
    unsigned n = 0;

    for (unsigned i = 0; i < vm->n + vm->nlarge; i++) {
        uint32_t st;
        if (vm->ep[i] && vfm_ep_get_state(vm->ep[i], &st) == 0 &&
            (st == VFM_STATE_RUNNING || st == VFM_STATE_RUNNING_P2P))
            n++;
    }
    return n;
}
