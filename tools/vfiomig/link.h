/* SPDX-License-Identifier: MIT */
/*
 * The migration stream's connection, for migrate and receive: addresses,
 * the loopback rule for plain TCP, TLS, and a listener that takes the real
 * sender while peers that stay silent or fail the handshake are dropped.
 */
#ifndef VFIOMIG_LINK_H
#define VFIOMIG_LINK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <vfiomig/migrate.h>

struct vfm_tls_creds;
struct vfm_tls;

/* Parses unix:PATH / tcp:HOST:PORT / tcp:[V6]:PORT / tcp:PORT (listening:
 * loopback, or every address when @any) into @ss; *@host gets HOST ("" for
 * none). Return: 0 or -EINVAL. */
int link_parse_addr(const char *a, bool listening, bool any, struct sockaddr_storage *ss,
                    socklen_t *len, char *host, size_t hostlen);

/* Whether @ss is a loopback address (or a UNIX socket). */
bool link_is_local(const struct sockaddr_storage *ss);

/* Whether this vfiomig has TLS. */
bool link_have_tls(void);

/* Loads --tls-creds @dir for a sender (@server false) or a receiver.
 * Return: 0, or -errno after saying why on stderr (naming @verb). */
int link_load_creds(const char *verb, const char *dir, bool server, struct vfm_tls_creds **out);
void link_free_creds(struct vfm_tls_creds *c);

/* One connection of the stream: its fd, and its TLS session if any, whose
 * transport the engine uses (link_transport()). */
struct link {
    int fd;
    struct vfm_tls *tls;
    struct vfm_mig_transport tp;
    char peer[96]; /* the peer's address, for messages */
};

/* Connects to @ss and, with @creds, completes the TLS handshake within
 * @timeout_ms, checking the receiver's certificate against @hostname.
 * Return: 0, or -errno after saying why on stderr. */
int link_connect(const char *verb, const char *addr, const struct sockaddr_storage *ss,
                 socklen_t sl, struct vfm_tls_creds *creds, const char *hostname,
                 unsigned timeout_ms, struct link *out);

/* What the TLS session said last of a failure ("" when none, or plain):
 * after the handshake, a fatal alert the peer ended the session with. */
const char *link_tls_said(const struct link *lk);

/* A listener's connecting peers, each with a deadline for its handshake. */
struct link_listener;

int link_listener_new(int lfd, struct vfm_tls_creds *creds, unsigned handshake_ms,
                      struct link_listener **out);
/* The next peer that completed its handshake (TLS), or sent its first
 * bytes (plain), waiting as long as it takes; those that fail it or stay
 * silent past the deadline are dropped, and stderr says so.
 * Return: 0 and *@out (the caller owns it: link_close()), or -errno. */
int link_accept(const char *verb, struct link_listener *l, struct link *out);
/* The same, waiting at most @timeout_ms (-ETIMEDOUT then). */
int link_accept_within(const char *verb, struct link_listener *l, unsigned timeout_ms,
                       struct link *out);
/* The same, until @until on link_now_ms()'s clock (-1: for ever). */
int link_accept_until(const char *verb, struct link_listener *l, int64_t until, struct link *out);
/* Milliseconds on the monotonic clock. */
int64_t link_now_ms(void);
/* Makes link_accept() return -ECANCELED once @fd is readable (a pipe the
 * caller writes to, a signalfd), with every peer still pending dropped. */
void link_listener_cancel_on(struct link_listener *l, int fd);
void link_listener_free(struct link_listener *l);

/* The transport the engine uses for @lk (NULL: its fd itself). */
const struct vfm_mig_transport *link_transport(struct link *lk);
void link_close(struct link *lk);

#endif
