/* SPDX-License-Identifier: MIT */
/* The migration stream's connection (link.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifdef VFM_HAVE_TLS
#include <vfiomig/tls.h>
#endif

#include "cli.h"
#include "link.h"

/* Peers connecting at once, each given its handshake deadline. */
#define MAX_PENDING 16

int link_parse_addr(const char *a, bool listening, bool any, struct sockaddr_storage *ss,
                    socklen_t *len, char *hostout, size_t hostlen)
{
    if (hostlen)
        hostout[0] = '\0';
    if (!strncmp(a, "unix:", 5)) {
        struct sockaddr_un *u = (struct sockaddr_un *)ss;
        if (strlen(a + 5) == 0 || strlen(a + 5) >= sizeof(u->sun_path))
            return -EINVAL;
        memset(u, 0, sizeof(*u));
        u->sun_family = AF_UNIX;
        strcpy(u->sun_path, a + 5);
        *len = sizeof(*u);
        return 0;
    }
    if (!strncmp(a, "tcp:", 4)) {
        char host[256] = "", *port;
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
        unsigned long long pn;
        if (snprintf(host, sizeof(host), "%s", a + 4) >= (int)sizeof(host))
            return -EINVAL;
        if (host[0] == '[') {
            /* [v6]:PORT */
            char *close = strchr(host, ']');
            if (!close || close[1] != ':')
                return -EINVAL;
            *close = '\0';
            port = close + 2;
            memmove(host, host + 1, strlen(host + 1) + 1);
        } else if ((port = strrchr(host, ':'))) {
            *port++ = '\0';
            if (strchr(host, ':'))
                return -EINVAL; /* a v6 address goes in brackets */
        } else if (listening) {
            memmove(host + 1, host, strlen(host) + 1);
            host[0] = '\0';
            port = host + 1;
        } else {
            return -EINVAL;
        }
        /* a port is a whole number, 1..65535: never another one silently */
        if (cli_parse_uint(port, 1, 65535, &pn))
            return -EINVAL;
        if (hostlen)
            snprintf(hostout, hostlen, "%s", host);
        /* tcp:PORT: 127.0.0.1 only, unless every address is asked for */
        if (listening && !host[0] && any)
            hints.ai_flags |= AI_PASSIVE;
        if (getaddrinfo(host[0]             ? host
                        : listening && !any ? "127.0.0.1"
                                            : NULL,
                        port, &hints, &res))
            return -EINVAL;
        memcpy(ss, res->ai_addr, res->ai_addrlen);
        *len = res->ai_addrlen;
        freeaddrinfo(res);
        return 0;
    }
    return -EINVAL;
}

bool link_is_local(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_UNIX)
        return true;
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

static void peer_name(const struct sockaddr_storage *ss, char *out, size_t len)
{
    char h[INET6_ADDRSTRLEN] = "?";

    if (ss->ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, h, sizeof(h));
        snprintf(out, len, "%s:%u", h, ntohs(((const struct sockaddr_in *)ss)->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, h, sizeof(h));
        snprintf(out, len, "[%s]:%u", h, ntohs(((const struct sockaddr_in6 *)ss)->sin6_port));
    } else {
        snprintf(out, len, "%s", "a local peer");
    }
}

int64_t link_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#ifdef VFM_HAVE_TLS
bool link_have_tls(void)
{
    return true;
}

int link_load_creds(const char *verb, const char *dir, bool server, struct vfm_tls_creds **out)
{
    char err[512];
    int ret =
        vfm_tls_creds_load(dir, server ? VFM_TLS_SERVER : VFM_TLS_CLIENT, out, err, sizeof(err));
    if (ret)
        cli_error("%s: --tls-creds %s: %s", verb, dir, err[0] ? err : vfm_strerror(ret));
    return ret;
}

void link_free_creds(struct vfm_tls_creds *c)
{
    vfm_tls_creds_free(c);
}

const struct vfm_mig_transport *link_transport(struct link *lk)
{
    if (!lk->tls)
        return NULL;
    vfm_tls_transport(lk->tls, &lk->tp);
    return &lk->tp;
}

const char *link_tls_said(const struct link *lk)
{
    return lk->tls ? vfm_tls_error(lk->tls) : "";
}

void link_close(struct link *lk)
{
    vfm_tls_free(lk->tls);
    lk->tls = NULL;
    if (lk->fd >= 0)
        close(lk->fd);
    lk->fd = -1;
}
#else
bool link_have_tls(void)
{
    return false;
}

int link_load_creds(const char *verb, const char *dir, bool server, struct vfm_tls_creds **out)
{
    (void)server;
    (void)out;
    cli_error("%s: --tls-creds %s: this vfiomig was built without TLS", verb, dir);
    return -ENOTSUP;
}

void link_free_creds(struct vfm_tls_creds *c)
{
    (void)c;
}

const struct vfm_mig_transport *link_transport(struct link *lk)
{
    (void)lk;
    return NULL;
}

const char *link_tls_said(const struct link *lk)
{
    (void)lk;
    return "";
}

void link_close(struct link *lk)
{
    if (lk->fd >= 0)
        close(lk->fd);
    lk->fd = -1;
}
#endif

/* A UNIX migration stream gets big socket buffers: a 1 MiB record then
 * goes with few wake-ups of either side (TCP keeps its own autotuning,
 * which a fixed size would turn off). Best effort. */
static void bulk_unix(int fd, int family)
{
    int v = 4 << 20;

    if (family != AF_UNIX)
        return;
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
}

int link_connect(const char *verb, const char *addr, const struct sockaddr_storage *ss,
                 socklen_t sl, struct vfm_tls_creds *creds, const char *hostname,
                 unsigned timeout_ms, struct link *out)
{
    int ret;

    memset(out, 0, sizeof(*out));
    out->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (out->fd >= 0)
        bulk_unix(out->fd, ss->ss_family);
    if (out->fd < 0 || connect(out->fd, (const struct sockaddr *)ss, sl) < 0) {
        ret = -errno;
        cli_error("%s: %s: %s", verb, addr, strerror(-ret));
        link_close(out);
        return ret;
    }
    peer_name(ss, out->peer, sizeof(out->peer));
    if (!creds)
        return 0;
#ifdef VFM_HAVE_TLS
    ret = vfm_tls_new(creds, VFM_TLS_CLIENT, out->fd, hostname && hostname[0] ? hostname : NULL,
                      &out->tls);
    if (!ret && (ret = vfm_tls_handshake(out->tls, timeout_ms)))
        cli_error("%s: %s: the TLS handshake failed: %s", verb, addr, vfm_tls_error(out->tls));
    else if (ret)
        cli_error("%s: %s: %s", verb, addr, vfm_strerror(ret));
    if (ret)
        link_close(out);
    return ret;
#else
    (void)hostname;
    (void)timeout_ms;
    link_close(out);
    return -ENOTSUP;
#endif
}

struct pending {
    struct link lk;
    int64_t deadline;
    short events;
};

struct link_listener {
    int lfd;
    struct vfm_tls_creds *creds;
    unsigned handshake_ms;
    struct pending p[MAX_PENDING];
    unsigned n;
    int cancel_fd; /* -1: none */
};

int link_listener_new(int lfd, struct vfm_tls_creds *creds, unsigned handshake_ms,
                      struct link_listener **out)
{
    struct link_listener *l = calloc(1, sizeof(*l));

    if (!l)
        return -ENOMEM;
    l->lfd = lfd;
    l->cancel_fd = -1;
    l->creds = creds;
    l->handshake_ms = handshake_ms;
    *out = l;
    return 0;
}

static void drop(struct link_listener *l, unsigned i)
{
    link_close(&l->p[i].lk);
    l->p[i] = l->p[--l->n];
}

/* A peer advances: 1 when it is ready, 0 when it is not yet, -1 when it
 * was dropped (and stderr says why). */
static int advance(const char *verb, struct link_listener *l, unsigned i)
{
    struct pending *p = &l->p[i];

    if (!p->lk.tls) {
        /* plain: ready once its first bytes come; gone if it closed */
        char c;
        ssize_t r = recv(p->lk.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r > 0)
            return 1;
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        cli_error("%s: a connection from %s closed before sending anything", verb, p->lk.peer);
        drop(l, i);
        return -1;
    }
#ifdef VFM_HAVE_TLS
    int ret = vfm_tls_handshake_step(p->lk.tls, &p->events);
    if (ret == 0) {
        fprintf(stderr, "vfiomig: %s: %s authenticated (%s)\n", verb, p->lk.peer,
                vfm_tls_peer(p->lk.tls));
        return 1;
    }
    if (ret == -EAGAIN)
        return 0;
    cli_error("%s: refused a connection from %s: the TLS handshake failed: %s", verb, p->lk.peer,
              vfm_tls_error(p->lk.tls));
    drop(l, i);
#endif
    return -1;
}

int link_accept(const char *verb, struct link_listener *l, struct link *out)
{
    return link_accept_until(verb, l, -1, out);
}

int link_accept_within(const char *verb, struct link_listener *l, unsigned timeout_ms,
                       struct link *out)
{
    return link_accept_until(verb, l, link_now_ms() + timeout_ms, out);
}

int link_accept_until(const char *verb, struct link_listener *l, int64_t until, struct link *out)
{
    for (;;) {
        struct pollfd pf[MAX_PENDING + 2];
        int64_t now = link_now_ms(), first = until;
        unsigned np = 0;
        int n;

        if (until >= 0 && now >= until)
            return -ETIMEDOUT;

        /* past their deadline: dropped */
        for (unsigned i = 0; i < l->n;) {
            if (l->p[i].deadline <= now) {
                cli_error("%s: dropped a connection from %s: nothing %s within %u ms", verb,
                          l->p[i].lk.peer,
                          l->p[i].lk.tls ? "completed the TLS handshake" : "was sent",
                          l->handshake_ms);
                drop(l, i);
                continue;
            }
            if (first < 0 || l->p[i].deadline < first)
                first = l->p[i].deadline;
            i++;
        }
        for (unsigned i = 0; i < l->n; i++)
            pf[np++] = (struct pollfd){.fd = l->p[i].lk.fd, .events = l->p[i].events};
        if (l->n < MAX_PENDING)
            pf[np++] = (struct pollfd){.fd = l->lfd, .events = POLLIN};
        /* last, so the indexes above stay the peers' and the listener's */
        pf[np] = (struct pollfd){.fd = l->cancel_fd, .events = POLLIN};
        n = poll(pf, np + 1, first < 0 ? -1 : (int)(first - now));
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n <= 0)
            continue;
        if (pf[np].revents) {
            while (l->n)
                drop(l, 0);
            return -ECANCELED;
        }
        /* the peers first, in order; a drop moves the last into its place */
        for (unsigned i = l->n; i-- > 0;) {
            int r;
            if (!pf[i].revents)
                continue;
            r = advance(verb, l, i);
            if (r == 1) {
                *out = l->p[i].lk;
                l->p[i] = l->p[--l->n];
                return 0;
            }
        }
        if (l->n < MAX_PENDING && (pf[np - 1].revents & POLLIN)) {
            struct sockaddr_storage ss = {0};
            socklen_t sl = sizeof(ss);
            struct pending *p = &l->p[l->n];
            int fd = accept4(l->lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0)
                continue; /* gone before it was taken */
            bulk_unix(fd, ss.ss_family);
            memset(p, 0, sizeof(*p));
            p->lk.fd = fd;
            p->events = POLLIN;
            p->deadline = link_now_ms() + l->handshake_ms;
            peer_name(&ss, p->lk.peer, sizeof(p->lk.peer));
#ifdef VFM_HAVE_TLS
            if (l->creds && vfm_tls_new(l->creds, VFM_TLS_SERVER, fd, NULL, &p->lk.tls)) {
                close(fd);
                continue;
            }
#endif
            l->n++;
        }
    }
}

void link_listener_cancel_on(struct link_listener *l, int fd)
{
    l->cancel_fd = fd;
}

void link_listener_free(struct link_listener *l)
{
    if (!l)
        return;
    while (l->n)
        drop(l, 0);
    free(l);
}
