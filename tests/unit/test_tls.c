/* SPDX-License-Identifier: MIT */
/*
 * The TLS layer's sessions and transport against GnuTLS itself as the
 * other end (a peer this project did not write), over socket pairs, with
 * a pre-shared key written here:
 *  - a peer that ends the session with a fatal alert after the handshake:
 *    the transport's write (the connection gone) and read name the alert
 *    and fail with -EACCES for one that refuses the credentials, else
 *    -ECONNRESET;
 *  - stream bytes the peer sent before it went, read while the failed
 *    write looked for an alert, come out of the next reads, in order;
 *  - a handshake this side fails tells the peer why: the peer's own
 *    handshake ends on the alert, not on a closed connection;
 *  - the batched writes and the read-ahead: megabytes each way through a
 *    socket that takes a few KiB at a time, driven as the engine drives a
 *    transport (a write that could not go is offered again with the same
 *    bytes; what the transport holds is read without polling): every byte
 *    once, in order.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <gnutls/gnutls.h>

#include <vfiomig/migrate.h>
#include <vfiomig/tls.h>

#define KEY_HEX "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define WRONG_HEX "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"

static char dir[64];

static int setup(void **state)
{
    char path[128];
    FILE *f;
    (void)state;

    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof(dir), "/tmp/vfiomig-test-tls-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/keys.psk", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "vfiomig:%s\n", KEY_HEX);
    fclose(f);
    return 0;
}
static int teardown(void **state)
{
    char path[128];
    (void)state;

    snprintf(path, sizeof(path), "%s/keys.psk", dir);
    unlink(path);
    rmdir(dir);
    return 0;
}

/* GnuTLS's own session on @fd (blocking), with @hex as the key. */
struct raw {
    gnutls_session_t s;
    gnutls_psk_client_credentials_t cc;
    gnutls_psk_server_credentials_t sc;
    int fd, ret;
    bool server;
    const char *hex;
};
static int raw_key(gnutls_session_t s, const char *user, gnutls_datum_t *key)
{
    struct raw *r = gnutls_session_get_ptr(s);
    gnutls_datum_t hex = {(unsigned char *)r->hex, (unsigned)strlen(r->hex)};
    size_t n = strlen(r->hex) / 2;
    (void)user;

    key->data = gnutls_malloc(n);
    key->size = (unsigned)n;
    return key->data && gnutls_hex_decode(&hex, key->data, &n) == 0 ? 0 : -1;
}
static void raw_new(struct raw *r, int fd, bool server, const char *hex)
{
    memset(r, 0, sizeof(*r));
    r->fd = fd;
    r->server = server;
    r->hex = hex;
    assert_int_equal(gnutls_init(&r->s, server ? GNUTLS_SERVER : GNUTLS_CLIENT), 0);
    gnutls_session_set_ptr(r->s, r);
    assert_int_equal(
        gnutls_priority_set_direct(r->s, "NORMAL:-KX-ALL:+ECDHE-PSK:+DHE-PSK:+PSK", NULL), 0);
    if (server) {
        assert_int_equal(gnutls_psk_allocate_server_credentials(&r->sc), 0);
        gnutls_psk_set_server_credentials_function(r->sc, raw_key);
        assert_int_equal(gnutls_credentials_set(r->s, GNUTLS_CRD_PSK, r->sc), 0);
    } else {
        gnutls_datum_t key = {(unsigned char *)hex, (unsigned)strlen(hex)};
        assert_int_equal(gnutls_psk_allocate_client_credentials(&r->cc), 0);
        assert_int_equal(
            gnutls_psk_set_client_credentials(r->cc, "vfiomig", &key, GNUTLS_PSK_KEY_HEX), 0);
        assert_int_equal(gnutls_credentials_set(r->s, GNUTLS_CRD_PSK, r->cc), 0);
    }
    gnutls_transport_set_int(r->s, fd);
    gnutls_handshake_set_timeout(r->s, 5000);
}
static void raw_free(struct raw *r)
{
    gnutls_deinit(r->s);
    if (r->sc)
        gnutls_psk_free_server_credentials(r->sc);
    if (r->cc)
        gnutls_psk_free_client_credentials(r->cc);
}
static void *raw_handshake(void *arg)
{
    struct raw *r = arg;
    do
        r->ret = gnutls_handshake(r->s);
    while (r->ret < 0 && !gnutls_error_is_fatal(r->ret));
    return NULL;
}

/* A vfiomig client session on sv[0] and GnuTLS's server on sv[1], both
 * through the handshake. */
static void connected(int sv[2], struct vfm_tls_creds **cc, struct vfm_tls **t, struct raw *srv)
{
    char err[256] = "";
    pthread_t th;

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    if (vfm_tls_creds_load(dir, VFM_TLS_CLIENT, cc, err, sizeof(err)))
        fail_msg("credentials: %s", err);
    assert_int_equal(vfm_tls_new(*cc, VFM_TLS_CLIENT, sv[0], NULL, t), 0);
    raw_new(srv, sv[1], true, KEY_HEX);
    pthread_create(&th, NULL, raw_handshake, srv);
    if (vfm_tls_handshake(*t, 5000))
        fail_msg("handshake: %s", vfm_tls_error(*t));
    pthread_join(th, NULL);
    assert_int_equal(srv->ret, 0);
}

static void done(int sv[2], struct vfm_tls_creds *cc, struct vfm_tls *t, struct raw *srv)
{
    vfm_tls_free(t);
    vfm_tls_creds_free(cc);
    raw_free(srv);
    close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
}

/* Writes until the transport fails (the peer is gone); its result. */
static ssize_t write_until_failed(const struct vfm_mig_transport *tp)
{
    static char buf[16384];

    for (int i = 0; i < 1000; i++) {
        ssize_t w = tp->write(tp->ctx, buf, sizeof(buf));
        if (w < 0 && w != -EAGAIN)
            return w;
        if (w == -EAGAIN)
            usleep(1000);
    }
    return 0;
}

/* Each alert, sent after the handshake and before the peer closes: the
 * next write fails naming it, with the errno its kind gives. */
static void test_alert_after_handshake(void **state)
{
    static const struct {
        gnutls_alert_description_t alert;
        int want;
    } cases[] = {
        {GNUTLS_A_ACCESS_DENIED, -EACCES},
        {GNUTLS_A_UNKNOWN_CA, -EACCES},
        {GNUTLS_A_CERTIFICATE_REQUIRED, -EACCES},
        {GNUTLS_A_INTERNAL_ERROR, -ECONNRESET},
    };
    (void)state;

    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct vfm_tls_creds *cc;
        struct vfm_tls *t;
        struct vfm_mig_transport tp;
        struct raw srv;
        char want[160];
        int sv[2];

        connected(sv, &cc, &t, &srv);
        vfm_tls_transport(t, &tp);
        assert_string_equal(vfm_tls_error(t), "");
        assert_int_equal(gnutls_alert_send(srv.s, GNUTLS_AL_FATAL, cases[k].alert), 0);
        close(sv[1]);
        sv[1] = -1;
        assert_int_equal(write_until_failed(&tp), cases[k].want);
        snprintf(want, sizeof(want), "the peer ended the TLS session: %s",
                 gnutls_alert_get_name(cases[k].alert));
        assert_string_equal(vfm_tls_error(t), want);
        done(sv, cc, t, &srv);
    }
}

/* The same alert met by a read. */
static void test_alert_read(void **state)
{
    struct vfm_tls_creds *cc;
    struct vfm_tls *t;
    struct vfm_mig_transport tp;
    struct raw srv;
    char buf[64];
    ssize_t r;
    int sv[2];
    (void)state;

    connected(sv, &cc, &t, &srv);
    vfm_tls_transport(t, &tp);
    assert_int_equal(gnutls_alert_send(srv.s, GNUTLS_AL_FATAL, GNUTLS_A_BAD_CERTIFICATE), 0);
    for (int i = 0; i < 1000 && (r = tp.read(tp.ctx, buf, sizeof(buf))) == -EAGAIN; i++)
        usleep(1000);
    assert_int_equal(r, -EACCES);
    assert_non_null(strstr(vfm_tls_error(t), "Certificate is bad"));
    done(sv, cc, t, &srv);
}

/* The peer's last bytes (an answer), then it goes without an alert: the
 * failed write keeps what it read while looking, and the reads return it
 * whole, in order, before the end. */
static void test_bytes_before_the_end_kept(void **state)
{
    /* longer than what the write's look reads at once: the rest stays in
     * GnuTLS's buffer, and pending counts both */
    static const char answer[] = "the receiver's answer: LOADED, and the status of every device "
                                 "it loaded, more than one look's worth";
    struct vfm_tls_creds *cc;
    struct vfm_tls *t;
    struct vfm_mig_transport tp;
    struct raw srv;
    char got[sizeof(answer) + 8];
    size_t have = 0;
    int sv[2];
    (void)state;

    connected(sv, &cc, &t, &srv);
    vfm_tls_transport(t, &tp);
    assert_int_equal(gnutls_record_send(srv.s, answer, sizeof(answer)), (ssize_t)sizeof(answer));
    close(sv[1]);
    sv[1] = -1;
    assert_int_equal(write_until_failed(&tp), -EPIPE);
    assert_string_equal(vfm_tls_error(t), "");
    assert_true(tp.pending(tp.ctx) > 0); /* kept: the engine reads without polling */
    /* in small reads, to cross the kept bytes' end */
    for (int i = 0; i < 1000 && have < sizeof(answer); i++) {
        ssize_t r = tp.read(tp.ctx, got + have, 7);
        if (r == -EAGAIN) {
            usleep(1000);
            continue;
        }
        assert_true(r > 0);
        have += (size_t)r;
    }
    assert_int_equal(have, sizeof(answer));
    assert_memory_equal(got, answer, sizeof(answer));
    assert_int_equal(tp.pending(tp.ctx), 0);
    assert_true(tp.read(tp.ctx, got, sizeof(got)) <= 0); /* then the end */
    done(sv, cc, t, &srv);
}

/* A client with the wrong key: this side's handshake fails, and the client
 * is told why by an alert (before, its handshake ended on a closed
 * connection). */
static void test_failed_handshake_tells_the_peer(void **state)
{
    struct vfm_tls_creds *sc;
    struct vfm_tls *t;
    struct raw cli;
    pthread_t th;
    char err[256] = "";
    int sv[2], ret;
    (void)state;

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    if (vfm_tls_creds_load(dir, VFM_TLS_SERVER, &sc, err, sizeof(err)))
        fail_msg("credentials: %s", err);
    assert_int_equal(vfm_tls_new(sc, VFM_TLS_SERVER, sv[1], NULL, &t), 0);
    raw_new(&cli, sv[0], false, WRONG_HEX);
    pthread_create(&th, NULL, raw_handshake, &cli);
    ret = vfm_tls_handshake(t, 5000);
    pthread_join(th, NULL);
    assert_int_equal(ret, -EACCES);
    assert_non_null(strstr(vfm_tls_error(t), "the client's pre-shared key is not this side's"));
    /* without the alert the client waited for its own timeout (5 s) */
    if (cli.ret != GNUTLS_E_FATAL_ALERT_RECEIVED)
        fail_msg("the client's handshake ended with %s", gnutls_strerror(cli.ret));
    vfm_tls_free(t);
    vfm_tls_creds_free(sc);
    raw_free(&cli);
    close(sv[0]);
    close(sv[1]);
}

#define BIG (3u << 20)
static uint8_t pattern(size_t i)
{
    return (uint8_t)(i * 131 + (i >> 12));
}
/* GnuTLS's end: reads BIG bytes and checks them (r->ret: 0, or -1). */
static void *raw_reader(void *arg)
{
    struct raw *r = arg;
    static uint8_t buf[65536];
    size_t got = 0;

    r->ret = 0;
    while (got < BIG) {
        ssize_t n = gnutls_record_recv(r->s, buf, sizeof(buf));
        if (n <= 0) {
            r->ret = -1;
            return NULL;
        }
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != pattern(got + (size_t)i)) {
                r->ret = -1;
                return NULL;
            }
        got += (size_t)n;
    }
    return NULL;
}

static void test_batches_and_read_ahead(void **state)
{
    struct vfm_tls_creds *cc;
    struct vfm_tls *t;
    struct vfm_mig_transport tp;
    struct raw srv;
    pthread_t th;
    uint8_t *data = malloc(BIG), *got = malloc(BIG);
    size_t off = 0;
    unsigned again = 0;
    int sv[2], small = 4096;
    (void)state;

    assert_non_null(data);
    assert_non_null(got);
    for (size_t i = 0; i < BIG; i++)
        data[i] = pattern(i);
    connected(sv, &cc, &t, &srv);
    vfm_tls_transport(t, &tp);
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);

    /* this side writes: the engine's loop */
    pthread_create(&th, NULL, raw_reader, &srv);
    while (off < BIG) {
        struct pollfd p = {.fd = sv[0], .events = POLLOUT};
        ssize_t w = tp.write(tp.ctx, data + off, BIG - off);
        if (w == -EAGAIN) {
            again++;
            assert_int_equal(poll(&p, 1, 5000), 1);
            continue;
        }
        assert_true(w > 0);
        off += (size_t)w;
    }
    pthread_join(th, NULL);
    assert_int_equal(srv.ret, 0);
    assert_true(again > 0); /* batches were sent in parts, and reported once */

    /* GnuTLS's end writes: this side reads in pieces of every size */
    off = 0;
    for (size_t sent = 0; sent < BIG;) {
        ssize_t w = gnutls_record_send(srv.s, data + sent, BIG - sent < 16384 ? BIG - sent : 16384);
        if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED)
            w = 0;
        assert_true(w >= 0);
        sent += (size_t)w;
        /* read what has come, so that the writer is not blocked for ever */
        for (;;) {
            size_t want = 1 + (off * 7) % 70000;
            ssize_t r;
            if (want > BIG - off)
                want = BIG - off;
            if (!want)
                break;
            r = tp.read(tp.ctx, got + off, want);
            if (r == -EAGAIN)
                break;
            assert_true(r > 0);
            off += (size_t)r;
        }
    }
    while (off < BIG) {
        struct pollfd p = {.fd = sv[0], .events = POLLIN};
        ssize_t r;
        if (!tp.pending(tp.ctx))
            assert_int_equal(poll(&p, 1, 5000), 1); /* never waiting on what it holds */
        r = tp.read(tp.ctx, got + off, BIG - off);
        if (r == -EAGAIN)
            continue;
        assert_true(r > 0);
        off += (size_t)r;
    }
    assert_memory_equal(got, data, BIG);
    done(sv, cc, t, &srv);
    free(data);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alert_after_handshake),
        cmocka_unit_test(test_alert_read),
        cmocka_unit_test(test_bytes_before_the_end_kept),
        cmocka_unit_test(test_failed_handshake_tells_the_peer),
        cmocka_unit_test(test_batches_and_read_ahead),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
