/* SPDX-License-Identifier: MIT */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "large.h"
#include "mailbox.h"
#include "servers.h"
#include "ticker.h"

/* The server process's answerer: one byte in, its CPU time so far out. */
static void *cpu_answerer(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char c;

    while (read(fd, &c, 1) == 1) {
        struct rusage ru;
        double s = -1;
        if (getrusage(RUSAGE_SELF, &ru) == 0)
            s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
        if (write(fd, &s, sizeof(s)) != sizeof(s))
            break;
    }
    return NULL;
}

pid_t bench_serve(const char *path, enum bench_dev kind, size_t mem)
{
    return bench_serve_cpu(path, kind, mem, NULL);
}

pid_t bench_serve_cpu(const char *path, enum bench_dev kind, size_t mem, int *ctl)
{
    int sv[2] = {-1, -1};
    pid_t pid;

    if (ctl && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
        return -1;
    pid = fork();
    if (pid < 0) {
        if (ctl) {
            close(sv[0]);
            close(sv[1]);
        }
        return -1;
    }
    if (ctl) {
        close(pid ? sv[1] : sv[0]);
        *ctl = pid ? sv[0] : -1;
    }
    if (pid == 0) {
        struct vfm_server_config cfg = {.socket_path = path};
        struct vfm_server *srv;
        struct mailbox *mb = NULL;
        struct ticker *tk = NULL;
        struct large *lg = NULL;
        struct vfm_dma *dma;
        pthread_t th;

        prctl(PR_SET_NAME, "bench-server");
        if (ctl && pthread_create(&th, NULL, cpu_answerer, (void *)(intptr_t)sv[1]))
            _exit(1);
        if (vfm_dma_new(64, &dma))
            _exit(1);
        if (kind == BENCH_MAILBOX) {
            if (mailbox_new("bench-mailbox", true, dma, &mb))
                _exit(1);
            cfg.dev = mailbox_device(mb);
            mailbox_server_regions(mb, &cfg);
        } else if (kind == BENCH_LARGE || kind == BENCH_LARGE_IN_PLACE ||
                   kind == BENCH_LARGE_COPY) {
            struct large_config lc = {.name = "bench-large",
                                      .size = mem,
                                      .page = 4096,
                                      .p2p = true,
                                      .no_verify = kind != BENCH_LARGE,
                                      .load_in_place = kind != BENCH_LARGE,
                                      .save_copy = kind == BENCH_LARGE_COPY,
                                      .seed = 1};
            if (large_new(&lc, &lg))
                _exit(1);
            cfg.dev = large_device(lg);
            large_server_regions(lg, &cfg);
        } else {
            if (ticker_new("bench-ticker", mem, &tk))
                _exit(1);
            cfg.dev = ticker_device(tk);
        }
        cfg.dma = dma;
        cfg.max_data_xfer_size = 4u << 20;
        if (vfm_server_new(&cfg, &srv))
            _exit(1);
        signal(SIGTERM, SIG_DFL);
        vfm_server_run(srv);
        _exit(0);
    }
    return pid;
}

struct vfm_vu_client *bench_connect(const char *path)
{
    struct vfm_vu_client *c;

    for (int i = 0; i < 500; i++) {
        if (vfm_vu_client_connect(path, NULL, &c) == 0)
            return c;
        usleep(10000);
    }
    return NULL;
}

struct vfm_vu_client *bench_connect_flags(const char *path, unsigned flags)
{
    struct vfm_vu_client *c;

    for (int i = 0; i < 500; i++) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || strlen(path) >= sizeof(a.sun_path))
            return NULL;
        strcpy(a.sun_path, path);
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
            if (vfm_vu_client_adopt(fd, NULL, flags, 0, &c) == 0)
                return c;
        } else {
            close(fd);
        }
        usleep(10000);
    }
    return NULL;
}

double bench_server_cpu(int ctl)
{
    struct pollfd p = {.fd = ctl, .events = POLLIN};
    double s;

    if (ctl < 0 || write(ctl, "?", 1) != 1 || poll(&p, 1, 5000) != 1 ||
        read(ctl, &s, sizeof(s)) != sizeof(s))
        return -1;
    return s;
}

void bench_unserve(pid_t pid)
{
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
}
