/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "procs.h"

static char dir[64];

static void cleanup_dir(void)
{
    if (dir[0])
        rmdir(dir);
}

const char *test_dir(void)
{
    if (!dir[0]) {
        snprintf(dir, sizeof(dir), "/tmp/vfiomig-test-XXXXXX");
        if (!mkdtemp(dir))
            abort();
        atexit(cleanup_dir);
    }
    return dir;
}

int server_start(struct server_proc *sp, const char *tag, ...)
{
    const char *bin = getenv("VFIOMIG");
    const char *argv[32];
    int argc = 0;
    va_list ap;

    if (!bin)
        return -ENOENT;
    snprintf(sp->path, sizeof(sp->path), "%s/%s.sock", test_dir(), tag);
    unlink(sp->path);
    argv[argc++] = bin;
    argv[argc++] = "serve";
    argv[argc++] = "--socket";
    argv[argc++] = sp->path;
    va_start(ap, tag);
    for (const char *a; (a = va_arg(ap, const char *)) && argc < 31;)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    sp->pid = fork();
    if (sp->pid < 0)
        return -errno;
    if (sp->pid == 0) {
        /* die with the test: a crashed test must not leave a server holding
         * the test harness's output pipe */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() == 1)
            _exit(127);
        if (!freopen("/dev/null", "w", stdout))
            _exit(127);
        if (!getenv("VFIOMIG_TEST_VERBOSE") && !freopen("/dev/null", "w", stderr))
            _exit(127);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        struct vfm_vu_client *c;
        int ret = vfm_vu_client_connect(sp->path, NULL, &c);
        if (ret == 0) {
            vfm_vu_client_free(c);
            return 0;
        }
        if (waitpid(sp->pid, NULL, WNOHANG) == sp->pid) {
            sp->pid = -1;
            return -ECHILD;
        }
        usleep(10000);
    }
    return -ETIMEDOUT;
}

int server_stop(struct server_proc *sp)
{
    int st;

    if (sp->pid <= 0)
        return -1;
    kill(sp->pid, SIGTERM);
    if (waitpid(sp->pid, &st, 0) != sp->pid)
        return -1;
    sp->pid = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int client_connect(const struct server_proc *sp, struct vfm_vu_client **out)
{
    int ret = -1;

    for (int i = 0; i < 300; i++) {
        ret = vfm_vu_client_connect(sp->path, sp->path, out);
        if (ret != -EBUSY && ret != -ECONNREFUSED && ret != -ENOENT)
            return ret;
        usleep(10000); /* the previous client's disconnect is being handled */
    }
    return ret;
}
