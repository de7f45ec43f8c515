/* SPDX-License-Identifier: MIT */
/* TLS for the migration stream, with GnuTLS (include/vfiomig/tls.h). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <vfiomig/tls.h>

#include "../common/internal.h"

#define PSK_MAX_KEYS 64
#define PSK_MAX_LINE 1024
/* TLS 1.3 and 1.2 only; the PSK key exchanges with forward secrecy first */
#define PSK_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:+ECDHE-PSK:+DHE-PSK:+PSK"
#define X509_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
/* With AES instructions, AES-GCM and the receiver's order. Observed with
 * GnuTLS 3.7.9 here: a server left to the client's order agreed on
 * CHACHA20-POLY1305 (0.27 GB/s in `gnutls-cli --benchmark-ciphers`) with a
 * client that listed AES-256-GCM first (AES-128-GCM: 4.4 GB/s), and a
 * 256 MiB stop-copy over TLS took 3.4-4.1 s against 0.4-0.9 s in clear. */
#define AES_FIRST ":-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:%SERVER_PRECEDENCE"

static const char *priority(bool psk)
{
#if defined(__x86_64__) || defined(__i386__)
    if (__builtin_cpu_supports("aes"))
        return psk ? PSK_PRIORITY AES_FIRST : X509_PRIORITY AES_FIRST;
#endif
    return psk ? PSK_PRIORITY : X509_PRIORITY;
}

struct psk_key {
    char *identity;
    char *hex; /* the key, as the file has it (validated hex) */
};

struct vfm_tls_creds {
    enum vfm_tls_role role;
    bool psk;
    gnutls_certificate_credentials_t x509;
    gnutls_psk_server_credentials_t psk_server;
    gnutls_psk_client_credentials_t psk_client;
    struct psk_key keys[PSK_MAX_KEYS];
    unsigned nkeys;
};

struct vfm_tls {
    const struct vfm_tls_creds *creds;
    gnutls_session_t s;
    int fd;
    bool done;
    char *hostname;
    char error[256];
    char peer[256];
    /* stream bytes read while looking for an alert after a failed write:
     * the next reads return them first */
    uint8_t held[64];
    size_t nheld, held_at;
    /* the socket's bytes read ahead for GnuTLS (one recv for many records,
     * not two per record) */
    uint8_t *in;
    size_t in_have, in_at;
    /* a write's records, encrypted into one buffer and sent with one send
     * (not one per record); @taken: the plaintext bytes they carry, to
     * report when the last of them is sent */
    bool batching;
    uint8_t *out;
    size_t out_len, out_at, out_cap, taken;
};

/* Read-ahead and write batches: a 256 KiB recv or send instead of one or
 * two syscalls per 16 KiB record (each syscall costs several microseconds
 * in the nested guests this runs on). */
#define TLS_IN_SIZE (256u << 10)
#define TLS_BATCH (256u << 10)

static void say(char *err, size_t errlen, const char *fmt, ...) VFM_PRINTF(3, 4);
static void say(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int path_in(char *out, size_t len, const char *dir, const char *file)
{
    return snprintf(out, len, "%s/%s", dir, file) >= (int)len ? -ENAMETOOLONG : 0;
}

/* keys.psk: IDENTITY:HEXKEY lines; blank lines and '#' comments skipped. */
static int load_psk(struct vfm_tls_creds *c, const char *path, char *err, size_t errlen)
{
    char line[PSK_MAX_LINE];
    unsigned ln = 0;
    FILE *f = fopen(path, "re");

    if (!f) {
        int e = -errno;
        say(err, errlen, "%s: %s", path, strerror(-e));
        return e;
    }
    while (fgets(line, sizeof(line), f)) {
        char *colon, *end = line + strcspn(line, "\r\n");
        size_t hl;
        ln++;
        if (!*end && !feof(f)) {
            say(err, errlen, "%s:%u: line too long", path, ln);
            goto bad;
        }
        *end = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        colon = strchr(line, ':');
        if (!colon || colon == line || colon - line > 128) {
            say(err, errlen, "%s:%u: not IDENTITY:HEXKEY", path, ln);
            goto bad;
        }
        *colon = '\0';
        hl = strlen(colon + 1);
        /* a key of at least 128 bits, whole bytes, hex digits only */
        if (hl < 32 || hl % 2 || strspn(colon + 1, "0123456789abcdefABCDEF") != hl) {
            say(err, errlen, "%s:%u: the key of '%s' is not hex of 16 bytes or more", path, ln,
                line);
            goto bad;
        }
        if (c->nkeys == PSK_MAX_KEYS) {
            say(err, errlen, "%s: more than %u keys", path, PSK_MAX_KEYS);
            goto bad;
        }
        c->keys[c->nkeys].identity = strdup(line);
        c->keys[c->nkeys].hex = strdup(colon + 1);
        if (!c->keys[c->nkeys].identity || !c->keys[c->nkeys].hex) {
            free(c->keys[c->nkeys].identity);
            free(c->keys[c->nkeys].hex);
            fclose(f);
            return -ENOMEM;
        }
        c->nkeys++;
    }
    fclose(f);
    if (!c->nkeys) {
        say(err, errlen, "%s: no key", path);
        return -EINVAL;
    }
    return 0;
bad:
    fclose(f);
    return -EINVAL;
}

/* The server's lookup of a client's identity. */
static int psk_lookup(gnutls_session_t s, const char *username, gnutls_datum_t *key)
{
    struct vfm_tls *t = gnutls_session_get_ptr(s);
    const struct vfm_tls_creds *c = t->creds;

    for (unsigned i = 0; i < c->nkeys; i++) {
        gnutls_datum_t hex = {(unsigned char *)c->keys[i].hex, (unsigned)strlen(c->keys[i].hex)};
        if (strcmp(c->keys[i].identity, username))
            continue;
        return gnutls_hex_decode2(&hex, key) ? -1 : 0;
    }
    snprintf(t->error, sizeof(t->error), "the peer's identity '%.64s' is not in keys.psk",
             username);
    return -1;
}

static int load_x509(struct vfm_tls_creds *c, const char *dir, char *err, size_t errlen)
{
    const char *who = c->role == VFM_TLS_SERVER ? "server" : "client";
    char ca[4096], cert[4096], key[4096], name[32];
    struct stat st;
    int r;

    if (path_in(ca, sizeof(ca), dir, "ca-cert.pem"))
        return -ENAMETOOLONG;
    snprintf(name, sizeof(name), "%s-cert.pem", who);
    if (path_in(cert, sizeof(cert), dir, name))
        return -ENAMETOOLONG;
    snprintf(name, sizeof(name), "%s-key.pem", who);
    if (path_in(key, sizeof(key), dir, name))
        return -ENAMETOOLONG;
    for (const char *p = ca; p; p = p == ca ? cert : p == cert ? key : NULL)
        if (stat(p, &st) < 0) {
            int e = -errno;
            say(err, errlen,
                "%s: %s (x509 credentials: ca-cert.pem, %s-cert.pem, %s-key.pem; "
                "psk: keys.psk)",
                p, strerror(-e), who, who);
            return e;
        }
    if (gnutls_certificate_allocate_credentials(&c->x509))
        return -ENOMEM;
    r = gnutls_certificate_set_x509_trust_file(c->x509, ca, GNUTLS_X509_FMT_PEM);
    if (r <= 0) {
        say(err, errlen, "%s: no certificate authority in it%s%s", ca, r ? ": " : "",
            r ? gnutls_strerror(r) : "");
        return -EINVAL;
    }
    r = gnutls_certificate_set_x509_key_file(c->x509, cert, key, GNUTLS_X509_FMT_PEM);
    if (r < 0) {
        say(err, errlen, "%s, %s: %s", cert, key, gnutls_strerror(r));
        return -EINVAL;
    }
    return 0;
}

int vfm_tls_creds_load(const char *dir, enum vfm_tls_role role, struct vfm_tls_creds **out,
                       char *err, size_t errlen)
{
    struct vfm_tls_creds *c;
    char psk[4096];
    struct stat st;
    int ret;

    say(err, errlen, "%s", "");
    if (!dir || !out || (role != VFM_TLS_CLIENT && role != VFM_TLS_SERVER))
        return -EINVAL;
    if (stat(dir, &st) < 0) {
        ret = -errno;
        say(err, errlen, "%s: %s", dir, strerror(-ret));
        return ret;
    }
    if (!S_ISDIR(st.st_mode)) {
        ret = -ENOTDIR;
        say(err, errlen, "%s: %s", dir, strerror(-ret));
        return ret;
    }
    if (path_in(psk, sizeof(psk), dir, "keys.psk"))
        return -ENAMETOOLONG;
    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->role = role;
    c->psk = access(psk, F_OK) == 0;
    if (c->psk && !(ret = load_psk(c, psk, err, errlen))) {
        if (role == VFM_TLS_SERVER) {
            ret = gnutls_psk_allocate_server_credentials(&c->psk_server) ? -ENOMEM : 0;
            if (!ret)
                gnutls_psk_set_server_credentials_function(c->psk_server, psk_lookup);
        } else {
            gnutls_datum_t k = {(unsigned char *)c->keys[0].hex, (unsigned)strlen(c->keys[0].hex)};
            ret = gnutls_psk_allocate_client_credentials(&c->psk_client) ? -ENOMEM : 0;
            if (!ret && gnutls_psk_set_client_credentials(c->psk_client, c->keys[0].identity, &k,
                                                          GNUTLS_PSK_KEY_HEX)) {
                say(err, errlen, "%s: the key of '%s' was refused", psk, c->keys[0].identity);
                ret = -EINVAL;
            }
        }
    } else if (!c->psk) {
        ret = load_x509(c, dir, err, errlen);
    }
    if (ret) {
        vfm_tls_creds_free(c);
        return ret;
    }
    *out = c;
    return 0;
}

const char *vfm_tls_creds_kind(const struct vfm_tls_creds *c)
{
    return c && c->psk ? "psk" : "x509";
}

void vfm_tls_creds_free(struct vfm_tls_creds *c)
{
    if (!c)
        return;
    if (c->x509)
        gnutls_certificate_free_credentials(c->x509);
    if (c->psk_server)
        gnutls_psk_free_server_credentials(c->psk_server);
    if (c->psk_client)
        gnutls_psk_free_client_credentials(c->psk_client);
    for (unsigned i = 0; i < c->nkeys; i++) {
        /* the keys leave no copy behind in freed memory */
        explicit_bzero(c->keys[i].hex, strlen(c->keys[i].hex));
        free(c->keys[i].hex);
        free(c->keys[i].identity);
    }
    free(c);
}

/* GnuTLS's reads of the socket, from the read-ahead buffer. */
static ssize_t tls_pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
    struct vfm_tls *t = p;
    size_t n;

    if (t->in_at == t->in_have) {
        ssize_t r = recv(t->fd, t->in, TLS_IN_SIZE, 0);
        if (r < 0) {
            gnutls_transport_set_errno(t->s, errno);
            return -1;
        }
        if (r == 0)
            return 0;
        t->in_have = (size_t)r;
        t->in_at = 0;
    }
    n = t->in_have - t->in_at < len ? t->in_have - t->in_at : len;
    memcpy(buf, t->in + t->in_at, n);
    t->in_at += n;
    return (ssize_t)n;
}

/* GnuTLS's writes: into the write's batch while one is made, else sent. */
static ssize_t tls_push(gnutls_transport_ptr_t p, const giovec_t *iov, int iovcnt)
{
    struct vfm_tls *t = p;
    struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    size_t total = 0;
    ssize_t w;

    if (!t->batching) {
        w = sendmsg(t->fd, &mh, MSG_NOSIGNAL);
        if (w < 0)
            gnutls_transport_set_errno(t->s, errno);
        return w;
    }
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (t->out_len + total > t->out_cap) {
        size_t cap = t->out_len + total + (64u << 10);
        uint8_t *nb = realloc(t->out, cap);
        if (!nb) {
            gnutls_transport_set_errno(t->s, ENOMEM);
            return -1;
        }
        t->out = nb;
        t->out_cap = cap;
    }
    for (int i = 0; i < iovcnt; i++) {
        memcpy(t->out + t->out_len, iov[i].iov_base, iov[i].iov_len);
        t->out_len += iov[i].iov_len;
    }
    return (ssize_t)total;
}

int vfm_tls_new(const struct vfm_tls_creds *c, enum vfm_tls_role role, int fd, const char *hostname,
                struct vfm_tls **out)
{
    struct vfm_tls *t;
    int fl, r;

    if (!c || !out || fd < 0 || role != c->role)
        return -EINVAL;
    fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->creds = c;
    t->fd = fd;
    if ((hostname && !(t->hostname = strdup(hostname))) || !(t->in = malloc(TLS_IN_SIZE))) {
        free(t->hostname);
        free(t);
        return -ENOMEM;
    }
    r = gnutls_init(&t->s,
                    (role == VFM_TLS_SERVER ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK);
    if (r) {
        free(t->in);
        free(t->hostname);
        free(t);
        return -ENOMEM;
    }
    gnutls_session_set_ptr(t->s, t);
    r = gnutls_priority_set_direct(t->s, priority(c->psk), NULL);
    if (!r && c->psk)
        r = role == VFM_TLS_SERVER ? gnutls_credentials_set(t->s, GNUTLS_CRD_PSK, c->psk_server)
                                   : gnutls_credentials_set(t->s, GNUTLS_CRD_PSK, c->psk_client);
    if (!r && !c->psk) {
        r = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, c->x509);
        if (role == VFM_TLS_SERVER)
            gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
        if (!r && role == VFM_TLS_CLIENT && t->hostname)
            r = gnutls_server_name_set(t->s, GNUTLS_NAME_DNS, t->hostname, strlen(t->hostname));
        /* the peer's chain against the authority, and (client) its name;
         * a failure fails the handshake */
        if (!r)
            gnutls_session_set_verify_cert(t->s, role == VFM_TLS_CLIENT ? t->hostname : NULL, 0);
    }
    if (r) {
        vfm_tls_free(t);
        return -EINVAL;
    }
    gnutls_transport_set_ptr(t->s, t);
    gnutls_transport_set_pull_function(t->s, tls_pull);
    gnutls_transport_set_vec_push_function(t->s, tls_push);
    gnutls_handshake_set_timeout(t->s, 0); /* the caller's deadline, not GnuTLS's */
    *out = t;
    return 0;
}

/* Who the peer is, once verified. */
static void note_peer(struct vfm_tls *t)
{
    const gnutls_datum_t *certs;
    unsigned n = 0;

    if (t->creds->psk) {
        const char *u = t->creds->role == VFM_TLS_SERVER ? gnutls_psk_server_get_username(t->s)
                                                         : t->creds->keys[0].identity;
        snprintf(t->peer, sizeof(t->peer), "psk identity %.128s", u ? u : "?");
        return;
    }
    certs = gnutls_certificate_get_peers(t->s, &n);
    if (n) {
        gnutls_x509_crt_t crt;
        size_t len = sizeof(t->peer);
        if (gnutls_x509_crt_init(&crt) == 0) {
            if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) ||
                gnutls_x509_crt_get_dn(crt, t->peer, &len))
                snprintf(t->peer, sizeof(t->peer), "%s", "(a certificate)");
            gnutls_x509_crt_deinit(crt);
        }
    }
}

/* A failed handshake: say why, and sort it. */
static int failed(struct vfm_tls *t, int r)
{
    const char *what = gnutls_strerror(r);
    char buf[160] = "";
    int ret = -EPROTO;

    switch (r) {
    case GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR: {
        gnutls_datum_t d = {0};
        unsigned status = gnutls_session_get_verify_cert_status(t->s);
        if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &d, 0) == 0) {
            snprintf(buf, sizeof(buf), "%s", (char *)d.data);
            gnutls_free(d.data);
        }
        ret = -EACCES;
        break;
    }
    case GNUTLS_E_FATAL_ALERT_RECEIVED:
        snprintf(buf, sizeof(buf), "the peer refused this side: %s",
                 gnutls_alert_get_name(gnutls_alert_get(t->s)));
        ret = -EACCES;
        break;
    case GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER:
        /* a TLS 1.3 server whose client's PSK binder does not verify
         * (seen with GnuTLS 3.7: the client holds another key) */
        if (t->creds->psk && t->creds->role == VFM_TLS_SERVER) {
            snprintf(buf, sizeof(buf), "%s", "the client's pre-shared key is not this side's");
            ret = -EACCES;
        }
        break;
    case GNUTLS_E_NO_CERTIFICATE_FOUND:
    case GNUTLS_E_CERTIFICATE_ERROR:
    case GNUTLS_E_CERTIFICATE_REQUIRED:
    case GNUTLS_E_DECRYPTION_FAILED:
    case GNUTLS_E_INSUFFICIENT_CREDENTIALS:
    case GNUTLS_E_PK_SIG_VERIFY_FAILED:
    case GNUTLS_E_USER_ERROR:
    case GNUTLS_E_UNKNOWN_CIPHER_SUITE:
    case GNUTLS_E_NO_CIPHER_SUITES:
    case GNUTLS_E_NO_COMMON_KEY_SHARE:
        ret = -EACCES;
        break;
    case GNUTLS_E_PREMATURE_TERMINATION:
    case GNUTLS_E_PUSH_ERROR:
    case GNUTLS_E_PULL_ERROR:
        snprintf(buf, sizeof(buf), "%s", "the peer closed the connection during the handshake");
        ret = -ECONNRESET;
        break;
    default:
        break;
    }
    if (!t->error[0]) /* the PSK lookup may have said it better */
        snprintf(t->error, sizeof(t->error), "%s%s%s", what, buf[0] ? ": " : "", buf);
    /* tell the peer why (GnuTLS leaves that to its caller): a TLS 1.3
     * client whose certificate this server refuses has finished its own
     * handshake and learns it only from this alert. Best effort, never
     * waiting (the socket is non-blocking); not to a peer that already
     * went or sent its own */
    if (r != GNUTLS_E_FATAL_ALERT_RECEIVED && r != GNUTLS_E_PREMATURE_TERMINATION &&
        r != GNUTLS_E_PUSH_ERROR && r != GNUTLS_E_PULL_ERROR)
        (void)gnutls_alert_send_appropriate(t->s, r);
    return ret;
}

int vfm_tls_handshake_step(struct vfm_tls *t, short *events)
{
    int r;

    if (!t)
        return -EINVAL;
    if (t->done)
        return 0;
    r = gnutls_handshake(t->s);
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED || (r < 0 && !gnutls_error_is_fatal(r))) {
        if (events)
            *events = gnutls_record_get_direction(t->s) ? POLLOUT : POLLIN;
        return -EAGAIN;
    }
    if (r < 0)
        return failed(t, r);
    t->done = true;
    t->error[0] = '\0';
    note_peer(t);
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int vfm_tls_handshake(struct vfm_tls *t, unsigned timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;

    for (;;) {
        struct pollfd p = {.fd = t ? t->fd : -1};
        int64_t left;
        int ret = vfm_tls_handshake_step(t, &p.events);
        if (ret != -EAGAIN)
            return ret;
        left = end - now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) == 0) {
            snprintf(t->error, sizeof(t->error), "the handshake did not finish within %u ms",
                     timeout_ms);
            return -ETIMEDOUT;
        }
    }
}

const char *vfm_tls_error(const struct vfm_tls *t)
{
    return t ? t->error : "";
}

const char *vfm_tls_peer(const struct vfm_tls *t)
{
    return t && t->done ? t->peer : "";
}

/* The peer ended the session with a fatal alert (@r from a record call):
 * say which in t->error. Return: -EACCES for the alerts that refuse this
 * side's credentials (TLS 1.3's server verifies a client's certificate
 * after the client's handshake is done, so a refused sender learns it
 * here), else -ECONNRESET; 0 when @r is not such an alert. */
static int alert_received(struct vfm_tls *t, ssize_t r)
{
    gnutls_alert_description_t a;

    if (r != GNUTLS_E_FATAL_ALERT_RECEIVED)
        return 0;
    a = gnutls_alert_get(t->s);
    say(t->error, sizeof(t->error), "the peer ended the TLS session: %s", gnutls_alert_get_name(a));
    switch (a) {
    case GNUTLS_A_BAD_CERTIFICATE:
    case GNUTLS_A_UNSUPPORTED_CERTIFICATE:
    case GNUTLS_A_CERTIFICATE_REVOKED:
    case GNUTLS_A_CERTIFICATE_EXPIRED:
    case GNUTLS_A_CERTIFICATE_UNKNOWN:
    case GNUTLS_A_UNKNOWN_CA:
    case GNUTLS_A_ACCESS_DENIED:
    case GNUTLS_A_DECRYPT_ERROR:
    case GNUTLS_A_UNKNOWN_PSK_IDENTITY:
    case GNUTLS_A_CERTIFICATE_REQUIRED:
        return -EACCES;
    default:
        return -ECONNRESET;
    }
}

static ssize_t tls_read(void *ctx, void *buf, size_t len)
{
    struct vfm_tls *t = ctx;
    ssize_t r;
    int a;

    if (t->held_at < t->nheld) {
        size_t n = t->nheld - t->held_at < len ? t->nheld - t->held_at : len;
        memcpy(buf, t->held + t->held_at, n);
        t->held_at += n;
        return (ssize_t)n;
    }
    r = gnutls_record_recv(t->s, buf, len);
    if (r >= 0)
        return r;
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED || !gnutls_error_is_fatal((int)r))
        return -EAGAIN;
    if (r == GNUTLS_E_PREMATURE_TERMINATION)
        return 0; /* ended without close_notify: the framing finds what is missing */
    if ((a = alert_received(t, r)))
        return a;
    vfm_log(LOG_WARNING, "tls: reading the stream failed: %s", gnutls_strerror((int)r));
    return -EPROTO; /* a record that does not authenticate, among others */
}

/* The connection is gone: did the peer say why before it went? (an alert
 * already in the socket, which is non-blocking; stream bytes before it,
 * say the receiver's answer, are kept for the next read) */
static int write_failed(struct vfm_tls *t)
{
    ssize_t r;
    int a;

    t->out_len = t->out_at = t->taken = 0;
    if (t->held_at >= t->nheld) {
        r = gnutls_record_recv(t->s, t->held, sizeof(t->held));
        t->held_at = 0;
        t->nheld = r > 0 ? (size_t)r : 0;
        if ((a = alert_received(t, r)))
            return a;
    }
    return -EPIPE;
}

/* Sends what is left of the batch without waiting. Return: 0 when all of
 * it is sent, -EAGAIN, or -errno. */
static int flush_batch(struct vfm_tls *t)
{
    while (t->out_at < t->out_len) {
        ssize_t w =
            send(t->fd, t->out + t->out_at, t->out_len - t->out_at, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -EAGAIN : -errno;
        t->out_at += (size_t)w;
    }
    t->out_len = t->out_at = 0;
    return 0;
}

/* Up to TLS_BATCH bytes become records in one buffer, sent with one send.
 * When the socket takes only part of it, -EAGAIN: the engine offers the
 * same bytes again once the fd is writable, and that call sends the rest
 * and reports them taken. */
static ssize_t tls_write(void *ctx, const void *buf, size_t len)
{
    struct vfm_tls *t = ctx;
    ssize_t w = 0;
    size_t n = 0;
    int ret;

    if (t->out_at < t->out_len) {
        /* the same bytes again: the rest of their batch */
        ret = flush_batch(t);
        if (ret == -EAGAIN)
            return -EAGAIN;
        if (ret)
            return write_failed(t);
        n = t->taken;
        t->taken = 0;
        return (ssize_t)n;
    }
    t->batching = true;
    while (n < len && n < TLS_BATCH) {
        size_t chunk = len - n < TLS_BATCH - n ? len - n : TLS_BATCH - n;
        w = gnutls_record_send(t->s, (const char *)buf + n, chunk);
        if (w <= 0)
            break; /* the records so far go; an error shows again next call */
        n += (size_t)w;
    }
    t->batching = false;
    if (n == 0)
        return w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED ? -EAGAIN : write_failed(t);
    ret = flush_batch(t);
    if (ret == -EAGAIN) {
        t->taken = n;
        return -EAGAIN;
    }
    if (ret)
        return write_failed(t);
    return (ssize_t)n;
}

static size_t tls_pending(void *ctx)
{
    struct vfm_tls *t = ctx;
    /* kept bytes, records GnuTLS decrypted, and bytes read ahead that it
     * has not looked at (it stops pulling once it has a record to give) */
    return (t->nheld - t->held_at) + gnutls_record_check_pending(t->s) + (t->in_have - t->in_at);
}

static void tls_shutdown_write(void *ctx)
{
    struct vfm_tls *t = ctx;

    /* what is left of a batch (a write given up), close_notify, then the
     * socket's own end; a peer that reads nothing more is given at most a
     * second */
    for (int i = 0; i < 10; i++) {
        struct pollfd p = {.fd = t->fd, .events = POLLOUT};
        int r = flush_batch(t);
        if (r && r != -EAGAIN)
            break;
        if (!r) {
            r = gnutls_bye(t->s, GNUTLS_SHUT_WR);
            if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED)
                break;
        }
        poll(&p, 1, 100);
    }
    shutdown(t->fd, SHUT_WR);
}

void vfm_tls_transport(struct vfm_tls *t, struct vfm_mig_transport *out)
{
    *out = (struct vfm_mig_transport){
        .read = tls_read,
        .write = tls_write,
        .pending = tls_pending,
        .shutdown_write = tls_shutdown_write,
        .ctx = t,
    };
}

void vfm_tls_free(struct vfm_tls *t)
{
    if (!t)
        return;
    gnutls_deinit(t->s);
    free(t->hostname);
    free(t->in);
    free(t->out);
    free(t);
}
