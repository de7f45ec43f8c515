/* SPDX-License-Identifier: MIT */
/*
 * The demo's migration over a real connection (demo --link / --via /
 * --tls): a receiving thread that listens as `vfiomig receive` does and
 * the demo's own thread sending as `vfiomig migrate` does, each with its
 * half of the commit, so the demo shows what two hosts would — and a relay
 * (tests/fault/relay.c) can stand between them.
 */
#ifndef VFIOMIG_DEMO_LINK_H
#define VFIOMIG_DEMO_LINK_H

#include <stdbool.h>

#include <vfiomig/migrate.h>

struct vfm_tls_creds;

struct demo_link {
    const char *listen; /* unix:PATH / tcp:PORT; NULL: TCP loopback, a free port */
    const char *via;    /* the sender connects here (a relay); NULL: to listen */
    bool tls;           /* TLS with a pre-shared key made for this run */
    const char *dir;    /* the demo's own directory: the key file goes there */
    /* filled by demo_link_setup() */
    struct vfm_tls_creds *srv, *cli;
    char psk_path[4200];
};

/* Checks the addresses and, with tls, makes the key and loads both sides'
 * credentials. Return: 0, or -errno after saying why on stderr. */
int demo_link_setup(struct demo_link *dl);
void demo_link_free(struct demo_link *dl);

/* One migration of cfg->src to cfg->dst over the link. @tx: the sender's
 * report; @rx and *@rx_ret: the receiver's (both always filled). Every
 * wait is bounded by cfg->timeout_ms (the receiver's accept included:
 * it is cancelled once the sender has given up).
 * Return: the sender's result. */
int demo_link_migrate(struct demo_link *dl, const struct vfm_mig_config *cfg,
                      struct vfm_mig_report *tx, struct vfm_mig_report *rx, int *rx_ret);

#endif
