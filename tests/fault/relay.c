/* SPDX-License-Identifier: MIT */
/*
 * fault-relay — a man in the middle of a migration stream, for the fault
 * test (tests/e2e/test_faults.sh). It takes one connection on a UNIX
 * socket, connects to the receiver's, and forwards both ways, cutting the
 * bytes into the stream's messages as it goes (the header, each record,
 * the commit's answers: src/migrate/mstream.h) so that it can do one thing
 * to one message:
 *
 *   --at stream    the third record of the stream (a device's state)
 *   --at loaded    the receiver's LOADED
 *   --at commit    the sender's COMMIT (or ABORT)
 *   --at running   the receiver's RUNNING
 *   --at state     the first record of a device's state (DATA, or DATA_SC:
 *                  unhashed by the stream, its device's own stream checked
 *                  where it loads) with 64 bytes or more
 *
 *   --do drop      swallow it and go on relaying the rest
 *   --do cut       close both connections instead of forwarding it
 *   --do delay:MS  hold it (and what follows in that direction) MS ms
 *   --do flip      flip one bit in the middle of its payload and go on
 *
 * It says on stderr "relay: <at> <do>" when it did it (the test checks the
 * fault fired), and exits once both directions ended, or after 120 s.
 * Nothing is parsed beyond the lengths it needs: a message it cannot frame
 * is forwarded as bytes.
 *
 * usage: fault-relay --listen PATH --to PATH --at WHERE --do WHAT
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HDR_SIZE 88u
#define REC_SIZE 40u
#define ACK_SIZE 24u
#define KIND_STREAM_END 3u
#define KIND_DATA 1u
#define KIND_DATA_SC 9u
#define ANS_LOADED 1u
#define ANS_COMMIT 2u
#define ANS_RUNNING 3u
#define ANS_ABORT 4u
#define LIFETIME_MS 120000
#define QUEUE_MAX (256u << 20)

enum at { AT_STREAM, AT_LOADED, AT_COMMIT, AT_RUNNING, AT_STATE };
enum act { DO_DROP, DO_CUT, DO_DELAY, DO_FLIP };

static enum at where;
static enum act what;
static long delay_ms;
static bool fired;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One direction: bytes read from @in are framed and queued for @out. */
struct dir {
    const char *name;
    int in, out;
    bool fwd;      /* sender -> receiver */
    bool in_eof;   /* nothing more to read */
    bool out_shut; /* its write side was shut */
    /* framing */
    int phase; /* fwd: 0 header, 1 records, 2 answers; back: answers */
    uint8_t head[REC_SIZE > HDR_SIZE ? REC_SIZE : HDR_SIZE];
    size_t head_have, head_need;
    uint64_t body_left; /* payload bytes of the current message still to come */
    bool dropping;      /* the current message is being swallowed */
    uint64_t flip_left; /* payload bytes before the one to flip (+1; 0: none) */
    unsigned records;
    /* the queue: q[qoff..qlen) waits to be written; bytes from hold_from
     * on wait until release_at */
    uint8_t *q;
    size_t qoff, qlen, qcap, hold_from;
    int64_t release_at;
};

static void die(const char *what_, const char *why)
{
    fprintf(stderr, "relay: %s: %s\n", what_, why);
    exit(1);
}

static void enqueue(struct dir *d, const uint8_t *p, size_t n)
{
    if (d->qlen + n > d->qcap) {
        size_t cap = d->qcap ? d->qcap : 65536;
        if (d->qoff) { /* compact first */
            memmove(d->q, d->q + d->qoff, d->qlen - d->qoff);
            d->qlen -= d->qoff;
            if (d->hold_from != SIZE_MAX)
                d->hold_from -= d->qoff;
            d->qoff = 0;
        }
        while (d->qlen + n > cap)
            cap *= 2;
        if (cap > QUEUE_MAX)
            die(d->name, "more than 256 MiB queued");
        d->q = realloc(d->q, cap);
        if (!d->q)
            die(d->name, "out of memory");
        d->qcap = cap;
    }
    memcpy(d->q + d->qlen, p, n);
    d->qlen += n;
}

static bool is_target(const struct dir *d, uint32_t ack_kind, bool record, uint64_t len)
{
    if (fired)
        return false;
    switch (where) {
    case AT_STATE:
        return d->fwd && record && (ack_kind == KIND_DATA || ack_kind == KIND_DATA_SC) && len >= 64;
    case AT_STREAM:
        return d->fwd && record && d->records == 2;
    case AT_LOADED:
        return !d->fwd && ack_kind == ANS_LOADED;
    case AT_COMMIT:
        return d->fwd && (ack_kind == ANS_COMMIT || ack_kind == ANS_ABORT);
    case AT_RUNNING:
        return !d->fwd && ack_kind == ANS_RUNNING;
    }
    return false;
}

static const char *at_name[] = {"stream", "loaded", "commit", "running", "state"};

/* A whole message head is in d->head: decide what happens to the message. */
static void message_start(struct dir *d)
{
    uint32_t kind = 0;
    uint64_t len = 0;
    bool record = false;

    if (d->fwd && d->phase == 1) {
        uint16_t k;
        memcpy(&k, d->head + 4, 2);
        memcpy(&len, d->head + 16, 8);
        kind = k;
        record = true;
    } else if (d->phase == 2 || !d->fwd) {
        memcpy(&kind, d->head + 4, 4);
    }
    d->body_left = len;
    if (is_target(d, record && where != AT_STATE ? 0 : kind, record, len)) {
        fired = true;
        fprintf(stderr, "relay: %s %s\n", at_name[where],
                what == DO_DROP   ? "drop"
                : what == DO_CUT  ? "cut"
                : what == DO_FLIP ? "flip"
                                  : "delay");
        if (what == DO_CUT)
            exit(0); /* both connections close with the process */
        if (what == DO_DROP)
            d->dropping = true;
        else if (what == DO_FLIP)
            d->flip_left = len / 2 + 1;
        else {
            d->hold_from = d->qlen;
            d->release_at = now_ms() + delay_ms;
        }
    }
    if (!d->dropping)
        enqueue(d, d->head, d->head_have);
    if (record)
        d->records++;
    /* the next message's head */
    if (d->fwd && d->phase == 0)
        d->phase = 1;
    else if (record && kind == KIND_STREAM_END)
        d->phase = 2;
    d->head_have = 0;
    d->head_need = d->fwd && d->phase == 1 ? REC_SIZE : ACK_SIZE;
}

static void take(struct dir *d, const uint8_t *p, size_t n)
{
    while (n) {
        if (d->body_left) {
            size_t k = n < d->body_left ? n : (size_t)d->body_left;
            if (d->flip_left && d->flip_left <= k) {
                uint8_t b = p[d->flip_left - 1] ^ 0x10; /* the payload's middle byte */
                enqueue(d, p, d->flip_left - 1);
                enqueue(d, &b, 1);
                enqueue(d, p + d->flip_left, k - d->flip_left);
                d->flip_left = 0;
            } else if (!d->dropping) {
                if (d->flip_left)
                    d->flip_left -= k;
                enqueue(d, p, k);
            }
            d->body_left -= k;
            p += k;
            n -= k;
            if (!d->body_left)
                d->dropping = false;
            continue;
        }
        size_t k = d->head_need - d->head_have;
        if (k > n)
            k = n;
        memcpy(d->head + d->head_have, p, k);
        d->head_have += k;
        p += k;
        n -= k;
        if (d->head_have == d->head_need) {
            message_start(d);
            if (!d->body_left)
                d->dropping = false;
        }
    }
}

static size_t writable(const struct dir *d, int64_t now)
{
    size_t end = d->qlen;
    if (d->hold_from != SIZE_MAX) {
        if (now < d->release_at)
            end = d->hold_from;
    }
    return end > d->qoff ? end - d->qoff : 0;
}

static int connect_to(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0 || strlen(path) >= sizeof(a.sun_path))
        die(path, "no socket");
    strcpy(a.sun_path, path);
    for (int i = 0; i < 200; i++) {
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
            return fd;
        usleep(10000);
    }
    die(path, strerror(errno));
    return -1;
}

int main(int argc, char **argv)
{
    const char *listen_path = NULL, *to = NULL;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    struct dir dirs[2];
    int64_t t0 = now_ms();
    int lfd, cfd, sfd;
    struct pollfd pf;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--listen"))
            listen_path = argv[i + 1];
        else if (!strcmp(argv[i], "--to"))
            to = argv[i + 1];
        else if (!strcmp(argv[i], "--at")) {
            unsigned k;
            for (k = 0; k < 5 && strcmp(argv[i + 1], at_name[k]); k++)
                ;
            if (k == 5)
                die("--at", "stream, loaded, commit, running or state");
            where = (enum at)k;
        } else if (!strcmp(argv[i], "--do")) {
            if (!strcmp(argv[i + 1], "drop"))
                what = DO_DROP;
            else if (!strcmp(argv[i + 1], "cut"))
                what = DO_CUT;
            else if (!strcmp(argv[i + 1], "flip"))
                what = DO_FLIP;
            else if (sscanf(argv[i + 1], "delay:%ld", &delay_ms) == 1 && delay_ms >= 0)
                what = DO_DELAY;
            else
                die("--do", "drop, cut, flip or delay:MS");
        } else
            die(argv[i], "unknown option");
    }
    if (!listen_path || !to || strlen(listen_path) >= sizeof(a.sun_path))
        die("usage", "fault-relay --listen PATH --to PATH --at WHERE --do WHAT");
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    strcpy(a.sun_path, listen_path);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 1) < 0)
        die(listen_path, strerror(errno));
    pf = (struct pollfd){.fd = lfd, .events = POLLIN};
    if (poll(&pf, 1, LIFETIME_MS) != 1)
        die(listen_path, "no sender came");
    cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    close(lfd);
    unlink(listen_path); /* ours: bound above */
    if (cfd < 0)
        die("accept", strerror(errno));
    sfd = connect_to(to);
    memset(dirs, 0, sizeof(dirs));
    dirs[0] = (struct dir){.name = "sender->receiver",
                           .in = cfd,
                           .out = sfd,
                           .fwd = true,
                           .head_need = HDR_SIZE,
                           .hold_from = SIZE_MAX};
    dirs[1] = (struct dir){.name = "receiver->sender",
                           .in = sfd,
                           .out = cfd,
                           .fwd = false,
                           .head_need = ACK_SIZE,
                           .hold_from = SIZE_MAX};
    for (;;) {
        struct pollfd p[4];
        int np = 0, idx[4], timeout = 200;
        int64_t now = now_ms();

        if (now - t0 > LIFETIME_MS)
            die("relay", "still running after 120 s");
        for (int k = 0; k < 2; k++) {
            struct dir *d = &dirs[k];
            if (!d->in_eof) {
                idx[np] = k;
                p[np++] = (struct pollfd){.fd = d->in, .events = POLLIN};
            }
            if (writable(d, now)) {
                idx[np] = k | 2;
                p[np++] = (struct pollfd){.fd = d->out, .events = POLLOUT};
            } else if (d->hold_from != SIZE_MAX && d->qlen > d->qoff && now < d->release_at) {
                int64_t w = d->release_at - now;
                if (w < timeout)
                    timeout = (int)w;
            }
            if (d->in_eof && d->qoff == d->qlen && !d->out_shut) {
                shutdown(d->out, SHUT_WR);
                d->out_shut = true;
            }
        }
        if (dirs[0].out_shut && dirs[1].out_shut)
            break;
        if (poll(p, (nfds_t)np, timeout) < 0 && errno != EINTR)
            die("poll", strerror(errno));
        now = now_ms();
        for (int i = 0; i < np; i++) {
            struct dir *d = &dirs[idx[i] & 1];
            if (!p[i].revents)
                continue;
            if (idx[i] & 2) {
                ssize_t w =
                    send(d->out, d->q + d->qoff, writable(d, now), MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w < 0 && errno != EAGAIN && errno != EINTR) {
                    /* the other end went away: this direction is over */
                    d->qoff = d->qlen;
                    d->in_eof = true;
                } else if (w > 0) {
                    d->qoff += (size_t)w;
                }
            } else {
                uint8_t buf[65536];
                ssize_t r = recv(d->in, buf, sizeof(buf), MSG_DONTWAIT);
                if (r > 0)
                    take(d, buf, (size_t)r);
                else if (r == 0 || (errno != EAGAIN && errno != EINTR))
                    d->in_eof = true;
            }
        }
    }
    free(dirs[0].q);
    free(dirs[1].q);
    return 0;
}
