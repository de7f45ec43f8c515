/* SPDX-License-Identifier: MIT */
/* Helpers for end-to-end tests: real server processes. */
#ifndef VFIOMIG_TEST_PROCS_H
#define VFIOMIG_TEST_PROCS_H

#include <sys/types.h>

#include <vfiomig/vfio_user.h>

struct server_proc {
    pid_t pid;
    char path[108];
};

/* Starts `$VFIOMIG serve --socket <tmp path> ARGS...` (NULL-terminated) and
 * waits until it accepts a client. Return: 0 or -errno. */
int server_start(struct server_proc *sp, const char *tag, ...);

/* Starts `$LVU_EMUL --socket <tmp path> ARGS...` (NULL-terminated): a
 * server that behaves as libvfio-user's (tests/emul/lvu_emul.c). It takes
 * one client and exits when that client leaves, so nothing probes it:
 * connect with client_connect(), which retries while it starts.
 * Return: 0 or -errno. */
int emul_start(struct server_proc *sp, const char *tag, ...);

/* Waits up to @ms for the process to exit by itself (SIGKILL after that);
 * returns its exit status, or -1 when it had to be killed or died by a
 * signal. */
int proc_wait(struct server_proc *sp, int ms);

/* SIGTERM, then wait; returns its exit status (or -1). */
int server_stop(struct server_proc *sp);

/* Connects a client, retrying while the server starts. */
int client_connect(const struct server_proc *sp, struct vfm_vu_client **out);

/* A unique temporary directory for this test process's sockets. */
const char *test_dir(void);

#endif
