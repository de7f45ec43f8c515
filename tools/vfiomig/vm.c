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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mailbox.h"
#include "vm.h"

extern char **environ;

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int vm_start(struct vm *vm, const char *dir, const char *side, unsigned n, const bool *no_p2p)
{
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

    memset(vm, 0, sizeof(*vm));
    vm->n = n;
    for (unsigned i = 0; i < n; i++) {
        vm->pid[i] = -1;
        vm->bar_fd[i] = -1;
    }
    if (len < 0)
        return -errno;
    exe[len] = '\0';
    for (unsigned i = 0; i < n; i++) {
        char name[64];
        const char *argv[12];
        int a = 0, ret;
        posix_spawn_file_actions_t fa;

        snprintf(vm->path[i], sizeof(vm->path[i]), "%s/%s-%u.sock", dir, side, i);
        snprintf(name, sizeof(name), "%s-%u", side, i);
        argv[a++] = exe;
        argv[a++] = "serve";
        argv[a++] = "--device";
        argv[a++] = "p2p-mailbox";
        argv[a++] = "--socket";
        argv[a++] = vm->path[i];
        argv[a++] = "--name";
        argv[a++] = name;
        if (no_p2p && no_p2p[i])
            argv[a++] = "--no-p2p";
        argv[a] = NULL;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
        ret = posix_spawn(&vm->pid[i], exe, &fa, NULL, (char *const *)argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (ret)
            return -ret;
    }
    for (unsigned i = 0; i < n; i++) {
        int ret = -ECONNREFUSED;
        for (int k = 0; k < 500 && ret; k++) {
            ret = vfm_vu_client_connect(vm->path[i], NULL, &vm->c[i]);
            if (ret)
                sleep_ms(10);
        }
        if (ret)
            return ret;
        vm->ep[i] = vfm_vu_client_endpoint(vm->c[i]);
        vm->ep[i]->name = vm->name[i];
        snprintf(vm->name[i], sizeof(vm->name[i]), "%s-%u", side, i);
    }
    return 0;
}

int vm_wire(struct vm *vm, bool stopped)
{
    for (unsigned i = 0; i < vm->n; i++) {
        struct vfm_vu_region_info info;
        uint32_t idx = i, interval = 200;
        int ret;

        /* a destination must not run before its state arrives */
        if (stopped && (ret = vfm_ep_set_state(vm->ep[i], VFM_STATE_STOP)))
            return ret;
        if ((ret = vfm_vu_client_region_info(vm->c[i], MB_REGION_INBOX, &info, &vm->bar_fd[i])))
            return ret;
        if (vm->bar_fd[i] < 0 || !(info.flags & VFM_VU_REGION_MMAP_FLAG))
            return -ENODEV;
        if ((ret = vfm_vu_client_region_write(vm->c[i], MB_REGION_REGS, MB_REG_INDEX, &idx, 4)) ||
            (ret = vfm_vu_client_region_write(vm->c[i], MB_REGION_REGS, MB_REG_INTERVAL,
                                              &interval, 4)))
            return ret;
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
    return 0;
}

static int reg(struct vm *vm, unsigned i, uint32_t off, uint64_t *v)
{
    return vfm_vu_client_region_read(vm->c[i], MB_REGION_REGS, off, v, 8);
}

int vm_check(struct vm *vm, struct vm_tally *t)
{
    uint64_t sent[MB_MAX_DEVICES][MB_MAX_DEVICES], cons[MB_MAX_DEVICES][MB_MAX_DEVICES];
    int ret;

    memset(t, 0, sizeof(*t));
    /* no new sends anywhere, inboxes still drained */
    for (unsigned i = 0; i < vm->n; i++) {
        uint32_t flags = 0;
        vfm_ep_flags(vm->ep[i], &flags);
        if (!(flags & VFM_MIGRATION_P2P))
            continue;
        if ((ret = vfm_ep_set_state(vm->ep[i], VFM_STATE_RUNNING_P2P)))
            return ret;
    }
    /* a device without P2P can only stop: its inbox stays as it is */
    for (unsigned i = 0; i < vm->n; i++) {
        uint32_t flags = 0;
        vfm_ep_flags(vm->ep[i], &flags);
        if (!(flags & VFM_MIGRATION_P2P) && (ret = vfm_ep_set_state(vm->ep[i], VFM_STATE_STOP)))
            return ret;
    }
    for (unsigned i = 0; i < vm->n; i++) {
        uint64_t pending = 1;
        uint32_t st = 0;
        vfm_ep_get_state(vm->ep[i], &st);
        for (int k = 0; k < 300 && st == VFM_STATE_RUNNING_P2P; k++) {
            if ((ret = reg(vm, i, MB_REG_PENDING, &pending)))
                return ret;
            if (!pending)
                break;
            sleep_ms(5);
        }
        for (unsigned j = 0; j < vm->n; j++) {
            if ((ret = reg(vm, i, MB_REG_SENT_TO + 8 * j, &sent[i][j])) ||
                (ret = reg(vm, i, MB_REG_CONS_FROM + 8 * j, &cons[i][j])))
                return ret;
        }
        uint64_t e, p;
        if ((ret = reg(vm, i, MB_REG_ERRORS, &e)) || (ret = reg(vm, i, MB_REG_PENDING, &p)))
            return ret;
        t->errors += e;
        t->stranded += p;
    }
    for (unsigned i = 0; i < vm->n; i++)
        for (unsigned j = 0; j < vm->n; j++) {
            if (i == j)
                continue;
            t->sent += sent[i][j];
            t->consumed += cons[j][i];
            if (sent[i][j] > cons[j][i])
                t->lost += sent[i][j] - cons[j][i];
            else
                t->duplicated += cons[j][i] - sent[i][j];
        }
    /* a message left unconsumed in an inbox (only with non-P2P devices,
     * which cannot drain once stopped) is not lost */
    if (t->lost >= t->stranded)
        t->lost -= t->stranded;
    t->duplicated += t->errors;
    return 0;
}

void vm_stop(struct vm *vm)
{
    for (unsigned i = 0; i < vm->n; i++) {
        vfm_vu_client_free(vm->c[i]);
        vm->c[i] = NULL;
        if (vm->bar_fd[i] >= 0)
            close(vm->bar_fd[i]);
        if (vm->pid[i] > 0)
            kill(vm->pid[i], SIGTERM);
    }
    for (unsigned i = 0; i < vm->n; i++) {
        if (vm->pid[i] > 0)
            waitpid(vm->pid[i], NULL, 0);
        unlink(vm->path[i]);
        vm->pid[i] = -1;
    }
}
