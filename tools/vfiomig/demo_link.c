/* SPDX-License-Identifier: MIT */
/* The demo's migration over a real connection (demo_link.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "demo_link.h"
#include "link.h"

int demo_link_setup(struct demo_link *dl)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    uint8_t key[32];
    char line[128];
    int fd, ret;

    dl->srv = dl->cli = NULL;
    dl->psk_path[0] = '\0';
    if ((dl->listen && link_parse_addr(dl->listen, true, false, &ss, &sl, NULL, 0)) ||
        (dl->via && link_parse_addr(dl->via, false, false, &ss, &sl, NULL, 0))) {
        cli_error("demo: bad address '%s' (unix:PATH, tcp:PORT)",
                  dl->via && link_parse_addr(dl->via, false, false, &ss, &sl, NULL, 0)
                      ? dl->via
                      : dl->listen);
        return -EINVAL;
    }
    if (!dl->tls)
        return 0;
    if (!link_have_tls()) {
        cli_error("demo: --tls: this vfiomig was built without TLS");
        return -ENOTSUP;
    }
    if (dl->listen && !strncmp(dl->listen, "unix:", 5)) {
        cli_error("demo: --tls goes with a TCP link");
        return -EINVAL;
    }
    /* a key for this run only, in the demo's own directory (0700) */
    if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key)) {
        cli_error("demo: no random key: %s", strerror(errno));
        return -EIO;
    }
    ret = snprintf(line, sizeof(line), "vfiomig-demo:");
    for (size_t i = 0; i < sizeof(key); i++)
        ret += snprintf(line + ret, sizeof(line) - (size_t)ret, "%02x", key[i]);
    line[ret++] = '\n';
    snprintf(dl->psk_path, sizeof(dl->psk_path), "%s/keys.psk", dl->dir);
    fd = open(dl->psk_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, line, (size_t)ret) != ret) {
        ret = -errno;
        cli_error("demo: %s: %s", dl->psk_path, strerror(-ret));
        if (fd >= 0) {
            close(fd);
            unlink(dl->psk_path);
        }
        dl->psk_path[0] = '\0';
        return ret;
    }
    close(fd);
    if ((ret = link_load_creds("demo", dl->dir, true, &dl->srv)) ||
        (ret = link_load_creds("demo", dl->dir, false, &dl->cli)))
        demo_link_free(dl);
    return ret;
}

void demo_link_free(struct demo_link *dl)
{
    link_free_creds(dl->srv);
    link_free_creds(dl->cli);
    dl->srv = dl->cli = NULL;
    if (dl->psk_path[0])
        unlink(dl->psk_path); /* ours: made by demo_link_setup() */
    dl->psk_path[0] = '\0';
}

struct rx_job {
    struct vfm_mig_config cfg;
    struct link_listener *l;
    struct vfm_mig_report *rep;
    int ret;
    /* the sender's further connections (--streams), closed at the end */
    struct link more[VFM_MIG_MAX_STREAMS];
    unsigned nmore;
};

static int rx_accept_more(void *ctx, unsigned timeout_ms, struct vfm_mig_stream *out)
{
    struct rx_job *j = ctx;
    int ret;

    if (j->nmore == VFM_MIG_MAX_STREAMS)
        return -EMFILE;
    if ((ret = link_accept_within("demo: receiver", j->l, timeout_ms, &j->more[j->nmore])))
        return ret;
    out->fd = j->more[j->nmore].fd;
    out->transport = link_transport(&j->more[j->nmore]);
    j->nmore++;
    return 0;
}

static void rx_close_more(struct rx_job *j)
{
    for (unsigned k = 0; k < j->nmore; k++)
        link_close(&j->more[k]);
    j->nmore = 0;
}

static void *rx_main(void *arg)
{
    struct rx_job *j = arg;

    for (;;) {
        struct link lk = {.fd = -1};
        int ret = link_accept("demo: receiver", j->l, &lk);
        if (ret) {
            j->ret = ret;
            snprintf(j->rep->message, sizeof(j->rep->message), "no sender connected: %s",
                     vfm_strerror(ret));
            return NULL;
        }
        j->cfg.transport = link_transport(&lk);
        j->cfg.accept_stream = rx_accept_more;
        j->cfg.accept_ctx = j;
        j->ret = vfm_migrate_receive(&j->cfg, lk.fd, j->rep);
        link_close(&lk);
        rx_close_more(j);
        if (!j->ret || !j->rep->refused)
            return NULL;
        cli_error("demo: receiver: refused the stream from %s: %s", lk.peer, j->rep->message);
        vfm_mig_report_free(j->rep);
        memset(j->rep, 0, sizeof(*j->rep));
    }
}

/* The sender's further connections (--streams). */
struct tx_more {
    const struct demo_link *dl;
    const char *addr;
    const struct sockaddr_storage *ss;
    socklen_t sl;
    struct link lk[VFM_MIG_MAX_STREAMS];
    unsigned n;
};

static int tx_connect_more(void *ctx, unsigned k, unsigned timeout_ms, struct vfm_mig_stream *out)
{
    struct tx_more *t = ctx;

    (void)k;
    if (t->n == VFM_MIG_MAX_STREAMS)
        return -EMFILE;
    if (link_connect("demo: sender", t->addr, t->ss, t->sl, t->dl->cli, NULL, timeout_ms,
                     &t->lk[t->n]))
        return -ECONNREFUSED; /* link_connect said why */
    out->fd = t->lk[t->n].fd;
    out->transport = link_transport(&t->lk[t->n]);
    t->n++;
    return 0;
}

/* Listens where the receiver does. *@caddr: where a sender connects. */
static int listen_on(const struct demo_link *dl, int *lfd, char *caddr, size_t clen,
                     struct stat *bound, bool *bound_unix)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(struct sockaddr_in);
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    mode_t old;
    int b, one = 1;

    *bound_unix = false;
    memset(&ss, 0, sizeof(ss));
    if (dl->listen) {
        link_parse_addr(dl->listen, true, false, &ss, &sl, NULL, 0); /* checked in setup */
    } else {
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* port 0: a free one */
    }
    *lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*lfd < 0)
        return -errno;
    setsockopt(*lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    old = umask(0177);
    b = bind(*lfd, (struct sockaddr *)&ss, sl);
    umask(old);
    if (b < 0 || listen(*lfd, 8) < 0)
        return -errno;
    if (ss.ss_family == AF_UNIX) {
        const char *p = ((struct sockaddr_un *)&ss)->sun_path;
        *bound_unix = lstat(p, bound) == 0;
        snprintf(caddr, clen, "unix:%s", p);
        return 0;
    }
    sl = sizeof(ss);
    if (getsockname(*lfd, (struct sockaddr *)&ss, &sl) < 0)
        return -errno;
    snprintf(caddr, clen, "tcp:127.0.0.1:%u", ntohs(in->sin_port));
    return 0;
}

int demo_link_migrate(struct demo_link *dl, const struct vfm_mig_config *cfg,
                      struct vfm_mig_report *tx, struct vfm_mig_report *rx, int *rx_ret)
{
    static unsigned serial;
    struct rx_job job = {.cfg = *cfg, .rep = rx};
    struct vfm_mig_config scfg = *cfg;
    struct sockaddr_storage ss;
    struct link lk = {.fd = -1};
    struct tx_more tm = {.dl = dl, .ss = &ss};
    struct stat bound;
    bool bound_unix = false;
    char caddr[160], id[64];
    int lfd = -1, cancel[2] = {-1, -1}, ret;
    socklen_t sl;
    pthread_t th;

    memset(tx, 0, sizeof(*tx));
    memset(rx, 0, sizeof(*rx));
    *rx_ret = -EIO;
    /* each migration its own id: the receiver takes no other stream */
    snprintf(id, sizeof(id), "demo-%ld-%u", (long)getpid(), ++serial);
    scfg.id = job.cfg.id = id;
    job.cfg.progress = NULL;
    if (cfg->nram)
        job.cfg.ram = cfg->dst_ram; /* the receiver writes the destination VM's RAM */
    if ((ret = listen_on(dl, &lfd, caddr, sizeof(caddr), &bound, &bound_unix)) ||
        pipe2(cancel, O_CLOEXEC) < 0 ||
        (ret =
             link_listener_new(lfd, dl->srv, cfg->timeout_ms ? cfg->timeout_ms : 10000, &job.l))) {
        ret = ret ? ret : -errno;
        snprintf(tx->message, sizeof(tx->message), "the receiver cannot listen on %s: %s",
                 dl->listen ? dl->listen : "TCP loopback", vfm_strerror(ret));
        snprintf(rx->message, sizeof(rx->message), "%s", tx->message);
        goto out;
    }
    link_listener_cancel_on(job.l, cancel[0]);
    if ((ret = -pthread_create(&th, NULL, rx_main, &job))) {
        snprintf(tx->message, sizeof(tx->message), "no receiver thread: %s", vfm_strerror(ret));
        goto out;
    }
    link_parse_addr(dl->via ? dl->via : caddr, false, false, &ss, &sl, NULL, 0);
    ret = link_connect("demo: sender", dl->via ? dl->via : caddr, &ss, sl, dl->cli, NULL,
                       cfg->timeout_ms ? cfg->timeout_ms : VFM_MIG_DEFAULT_TIMEOUT_MS, &lk);
    if (ret) {
        snprintf(tx->message, sizeof(tx->message), "cannot connect to %s: %s",
                 dl->via ? dl->via : caddr, vfm_strerror(ret));
    } else {
        /* --streams: the further connections, made as the engine asks */
        tm.addr = caddr;
        tm.sl = sl;
        scfg.transport = link_transport(&lk);
        scfg.connect_stream = tx_connect_more;
        scfg.connect_ctx = &tm;
        ret = vfm_migrate_send(&scfg, lk.fd, tx);
    }
    link_close(&lk);
    for (unsigned k = 0; k < tm.n; k++)
        link_close(&tm.lk[k]);
    /* a receiver still waiting for a connection waits for no one now */
    if (write(cancel[1], "x", 1) < 0)
        cli_error("demo: cannot stop the receiver's wait: %s", strerror(errno));
    pthread_join(th, NULL);
    *rx_ret = job.ret;
out:
    link_listener_free(job.l);
    if (cancel[0] >= 0) {
        close(cancel[0]);
        close(cancel[1]);
    }
    if (lfd >= 0)
        close(lfd);
    if (bound_unix) {
        /* only the socket this process bound, not one that replaced it */
        const char *p = caddr + 5;
        struct stat now;
        if (lstat(p, &now) == 0 && now.st_dev == bound.st_dev && now.st_ino == bound.st_ino)
            unlink(p);
    }
    return ret;
}
