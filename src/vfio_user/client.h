/* SPDX-License-Identifier: MIT */
/*
 * The vfio-user client's state, shared by its blocking half (client.c) and
 * its event-loop half (client_async.c). Internal.
 */
#ifndef VFIOMIG_VU_CLIENT_H
#define VFIOMIG_VU_CLIENT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <vfiomig/endpoint.h>
#include <vfiomig/vfio_user.h>

#include "../common/internal.h"
#include "sock.h"

/* What we announce: we read replies straight into the caller's buffers, so
 * we can take any size up to our ceiling. */
#define CLIENT_MAX_XFER VFM_VU_MAX_XFER_LIMIT

/* A request sent by an async client, waiting for its reply. */
struct vfm_vu_pending {
    struct vfm_vu_pending *next;
    uint16_t msg_id, cmd;
    uint64_t deadline_ns; /* CLOCK_MONOTONIC */
    vfm_vu_client_done_fn done;
    void *arg;
};

struct vfm_vu_client {
    int sock;
    pthread_mutex_t lock; /* one request/reply pair at a time */
    uint16_t next_id;
    char *name;
    struct vfm_vu_client_info info;
    uint32_t send_max; /* the most data we put in one message */
    uint32_t read_max; /* the most data we ask for in one message */
    uint32_t state;    /* the device's state as last set or read */
    /* pre-copy: the last MIG_DATA_READ reply was short, which the
     * specification defines as "no more data for now"; the next read
     * answers -ENOMSG without asking (data lock: the client lock) */
    bool precopy_end;
    /* The data fd extension: the session's fd a MIG_DEVICE_STATE SET got
     * with its reply (-1: none; reads and writes use the messages), and the
     * state it is for (STOP_COPY or RESUMING). Closed when a SET leaves
     * that state, at a reset, at free. (lock) */
    int data_fd;
    uint32_t data_fd_state;
    bool no_data_fd;         /* VFM_VU_CLIENT_NO_DATA_FD: not asked for */
    int dead;                /* the connection is unusable: this errno from then on (lock) */
    struct vfm_endpoint *ep; /* ours (no destroy op) */
    struct vfm_log_sink log;
    /* async (VFM_VU_CLIENT_ASYNC): driven by the caller's loop */
    bool async;
    int ready;           /* 1 negotiated, 0 not yet, or the status that failed it */
    unsigned timeout_ms; /* each request's deadline */
    struct vfm_vu_rx rx; /* whole replies */
    struct vfm_vu_tx tx; /* requests the socket has not taken yet */
    struct vfm_vu_pending *head, *tail;
};

#define clog(c, level, ...) vfm_log_to(&(c)->log, level, __VA_ARGS__)

/* The caps @c announces in VERSION (a string to free). */
char *vfm_vu_client_our_caps(const struct vfm_vu_client *c);

/* Takes the VERSION reply's payload: caps, limits. Return: 0, -EPROTO. */
int vfm_vu_client_take_version(struct vfm_vu_client *c, const void *reply, size_t len);

/* Takes the DEVICE_GET_INFO reply, and makes the endpoint. Return: 0,
 * -EPROTO. */
int vfm_vu_client_take_info(struct vfm_vu_client *c, const void *reply, size_t len);

/* The blocking xfer() of an async client: submits, then drives the client
 * (poll() and dispatch) until the reply has come. Arguments as xfer(). */
int vfm_vu_client_xfer_async(struct vfm_vu_client *c, uint16_t cmd, const struct iovec *req,
                             int nreq, const int *fds, unsigned nfds, const struct iovec *rep,
                             int nrep, size_t *got, int *rfds, unsigned *rnfds);

/* Makes the client async: its socket non-blocking, VERSION queued (then
 * DEVICE_GET_INFO, from VERSION's answer). Return: 0 or -errno. */
int vfm_vu_client_start_async(struct vfm_vu_client *c);

/* For a blocking call: an async client not negotiated yet is driven until
 * it is. Return: 0 (or a blocking client), or the status that failed it. */
int vfm_vu_client_wait_ready(struct vfm_vu_client *c);

/* Ends every request still waiting with @status; the client is dead. */
void vfm_vu_client_fail_all(struct vfm_vu_client *c, int status);

/*
 * vfm_vu_client_raw - send one message as given and receive its reply (for
 * the tests that probe a server; not in the installed API: a test
 * escape hatch, reached through this internal header). @payload may be anything; @fds are
 * sent with it.
 * @reply, @reply_cap: where the reply payload goes; *@reply_len its size
 *      (the rest of a longer reply is discarded).
 * Return: the reply's errno as a negative number when it has the error
 *      flag, else 0; or a transport error.
 */
int vfm_vu_client_raw(struct vfm_vu_client *c, uint16_t cmd, const void *payload, size_t len,
                      const int *fds, unsigned nfds, void *reply, size_t reply_cap,
                      size_t *reply_len);

#endif
