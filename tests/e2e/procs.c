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

/* Forks and execs @argv with its output silenced (unless
 * VFIOMIG_TEST_VERBOSE); the child dies with the test. */
static int spawn(struct server_proc *sp, const char *bin, const char **argv)
{
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
    return 0;
}

/* argv = BIN [VERB] --socket PATH, then the NULL-terminated @ap. */
static int build_argv(struct server_proc *sp, const char *bin, const char *verb, const char *tag,
                      va_list ap, const char **argv)
{
    int argc = 0;

    snprintf(sp->path, sizeof(sp->path), "%s/%s.sock", test_dir(), tag);
    unlink(sp->path);
    argv[argc++] = bin;
    if (verb)
        argv[argc++] = verb;
    argv[argc++] = "--socket";
    argv[argc++] = sp->path;
    for (const char *a; (a = va_arg(ap, const char *)) && argc < 31;)
        argv[argc++] = a;
    argv[argc] = NULL;
    return argc;
}

int server_start(struct server_proc *sp, const char *tag, ...)
{
    const char *bin = getenv("VFIOMIG");
    const char *argv[32];
    va_list ap;
    int ret;

    if (!bin)
        return -ENOENT;
    va_start(ap, tag);
    build_argv(sp, bin, "serve", tag, ap, argv);
    va_end(ap);
    if ((ret = spawn(sp, bin, argv)))
        return ret;
    for (int i = 0; i < 500; i++) {
        struct vfm_vu_client *c;
        ret = vfm_vu_client_connect(sp->path, NULL, &c);
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

int emul_start(struct server_proc *sp, const char *tag, ...)
{
    const char *bin = getenv("LVU_EMUL");
    const char *argv[32];
    va_list ap;

    if (!bin)
        return -ENOENT;
    va_start(ap, tag);
    build_argv(sp, bin, NULL, tag, ap, argv);
    va_end(ap);
    return spawn(sp, bin, argv);
}

int proc_wait(struct server_proc *sp, int ms)
{
    int st;

    if (sp->pid <= 0)
        return -1;
    for (int i = 0; i <= ms; i++) {
        pid_t r = waitpid(sp->pid, &st, WNOHANG);
        if (r == sp->pid) {
            sp->pid = -1;
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        usleep(1000);
    }
    kill(sp->pid, SIGKILL);
    waitpid(sp->pid, &st, 0);
    sp->pid = -1;
    return -1;
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
