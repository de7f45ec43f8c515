/* SPDX-License-Identifier: MIT */
/**
 * @file
 * vfiomig TLS — an authenticated, private migration stream over TCP, with
 * GnuTLS (as QEMU's migration uses).
 *
 * Credentials are a directory, in QEMU's layout:
 *
 *   x509   ca-cert.pem (the authority both sides trust), and this side's
 *          server-cert.pem + server-key.pem (the receiver) or
 *          client-cert.pem + client-key.pem (the sender).
 *          Both peers are verified: the sender checks the receiver's
 *          certificate against the authority and the host name it
 *          connected to; the receiver requires a client certificate from
 *          the same authority.
 *   psk    keys.psk, lines of IDENTITY:HEXKEY (QEMU's tls-creds-psk). The
 *          sender offers the first line's identity and key; the receiver
 *          accepts any identity the file lists, with its key. A wrong key
 *          fails the handshake; nothing is sent in the clear.
 *
 * A directory with keys.psk is taken as psk, else x509.
 *
 * One session is one connected socket. Its handshake is driven without
 * waiting (vfm_tls_handshake_step(), for a listener that serves several
 * connecting peers at once and drops the ones that stay silent) or with a
 * deadline (vfm_tls_handshake()). Once it is done, vfm_tls_transport()
 * gives the migration engine its transport (include/vfiomig/migrate.h):
 * the engine polls the socket and the session moves the bytes.
 *
 * Threading: credentials may be shared by sessions on any threads once
 * loaded; a session is used by one thread at a time (the engine's calls
 * are serialised).
 */
#ifndef VFIOMIG_TLS_H
#define VFIOMIG_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <vfiomig/common.h>
#include <vfiomig/migrate.h>

#ifdef __cplusplus
extern "C" {
#endif

/** enum vfm_tls_role - which end of the connection: the client connects
 * (the sender), the server accepts (the receiver). */
enum vfm_tls_role { VFM_TLS_CLIENT, VFM_TLS_SERVER };

struct vfm_tls_creds;
struct vfm_tls;

/**
 * vfm_tls_creds_load - reads the credentials in a directory (see above)
 * for one end of the connection, saying in a buffer what is wrong (a
 * missing file, a key, a format) when it fails.
 * Return: 0 and *@out, or -errno (-ENOENT: a file is missing; -EINVAL: a
 *      file does not parse).
 */
VFM_EXPORT int vfm_tls_creds_load(const char *dir, enum vfm_tls_role role,
                                  struct vfm_tls_creds **out, char *err, size_t errlen);

/**
 * vfm_tls_creds_kind - "x509" or "psk".
 */
VFM_EXPORT const char *vfm_tls_creds_kind(const struct vfm_tls_creds *c);

/**
 * vfm_tls_creds_free - frees @c (NULL is ignored), once no session uses it.
 */
VFM_EXPORT void vfm_tls_creds_free(struct vfm_tls_creds *c);

/**
 * vfm_tls_new - a session over the connected socket @fd (made
 * non-blocking; not closed by vfm_tls_free()).
 * @hostname: the client's name for the server, checked against its
 *      certificate (x509); NULL for the server, or to check none
 * Return: 0 and *@out, or -errno.
 */
VFM_EXPORT int vfm_tls_new(const struct vfm_tls_creds *c, enum vfm_tls_role role, int fd,
                           const char *hostname, struct vfm_tls **out);

/**
 * vfm_tls_handshake_step - advances the handshake without waiting.
 * Return: 0 when it is done and the peer verified; -EAGAIN when the
 *      socket must be polled for *@events first; -EACCES when the peer
 *      failed verification or authentication (a wrong key, an unknown
 *      authority, another host's certificate); -EPROTO or -ECONNRESET for
 *      anything else. vfm_tls_error() says what.
 */
VFM_EXPORT int vfm_tls_handshake_step(struct vfm_tls *t, short *events);

/**
 * vfm_tls_handshake - the whole handshake, waiting at most @timeout_ms.
 * Return: as vfm_tls_handshake_step(), or -ETIMEDOUT.
 */
VFM_EXPORT int vfm_tls_handshake(struct vfm_tls *t, unsigned timeout_ms);

/**
 * vfm_tls_error - why the last handshake step failed ("" when none did);
 * after the handshake, the fatal alert the peer ended the session with,
 * once the transport's read or write met it ("the peer ended the TLS
 * session: Certificate is required"). A session whose handshake fails
 * tells its peer why with the matching alert (best effort): a TLS 1.3
 * client's handshake is over before the server checks its certificate,
 * so that alert is how a refused sender learns the reason; its transport
 * then fails with -EACCES (an alert refusing its credentials) or
 * -ECONNRESET (any other) instead of -EPIPE.
 */
VFM_EXPORT const char *vfm_tls_error(const struct vfm_tls *t);

/**
 * vfm_tls_peer - who the verified peer is: its certificate's subject
 * (x509) or its identity (psk); "" before the handshake is done.
 */
VFM_EXPORT const char *vfm_tls_peer(const struct vfm_tls *t);

/**
 * vfm_tls_transport - the engine's transport over @t (handshake done):
 * fills @out, whose ctx is @t. Set vfm_mig_config.transport to it and pass
 * the session's fd to vfm_migrate_send() or vfm_migrate_receive().
 */
VFM_EXPORT void vfm_tls_transport(struct vfm_tls *t, struct vfm_mig_transport *out);

/**
 * vfm_tls_free - ends the session (no close_notify; the engine sends one
 * at the stream's end) and frees it (NULL is ignored); the fd stays open.
 */
VFM_EXPORT void vfm_tls_free(struct vfm_tls *t);

#ifdef __cplusplus
}
#endif

#endif /* VFIOMIG_TLS_H */
