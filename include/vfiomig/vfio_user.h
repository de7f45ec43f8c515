/* SPDX-License-Identifier: MIT */
/**
 * @file
 * vfiomig vfio-user — the protocol of QEMU's docs/interop/vfio-user.rst
 * (version 0.1; libvfio-user speaks 0.2, whose addition — a second socket
 * for server-to-client commands, offered in VERSION — vfiomig does not use;
 * it answers a 0.1 client with 0.1), in three parts:
 *
 *  1. the wire: message layouts and a pure codec that checks every length,
 *     offset, count and fd count before anything is used (vfm_vu_decode_*);
 *     fuzzed by fuzz/fuzz_vfio_user.c;
 *  2. the server: vfm_server serves one vfiomig device (vfiomig/device.h) on
 *     a UNIX socket or one it adopts; its state changes go through the
 *     device runtime only;
 *  3. the client: vfm_vu_client connects to any vfio-user server (vfiomig's
 *     or one built on libvfio-user) and is a backend of the endpoint
 *     interface (vfiomig/endpoint.h).
 *
 * The extensions vfiomig brings (RUNNING_P2P over vfio-user, MIG_DATA_SIZE,
 * PRE_COPY information) are written down in docs/vfio-user-extensions.md.
 *
 * All multi-byte fields are in host byte order, as the specification says
 * for this protocol revision; the wire structs are packed and their sizes
 * checked at compile time.
 */
#ifndef VFIOMIG_VFIO_USER_H
#define VFIOMIG_VFIO_USER_H

/* The three parts have a header each: */
#include <vfiomig/vfio_user_wire.h>   /* 1. the wire */
#include <vfiomig/vfio_user_server.h> /* 2. the server (and its DMA table) */
#include <vfiomig/vfio_user_client.h> /* 3. the client */

#endif /* VFIOMIG_VFIO_USER_H */
