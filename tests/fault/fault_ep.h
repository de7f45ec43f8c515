/* SPDX-License-Identifier: MIT */
/*
 * A fault-injecting endpoint (test code, never in the library): it forwards
 * every call to the endpoint it wraps, except the first request to move the
 * device into one chosen state, which fails with -EIO without reaching the
 * device, as a device whose arc fails does (later requests pass: the
 * rollback that follows can use that state). Built from public calls only;
 * the demo's --fail-at uses it too.
 */
#ifndef VFIOMIG_FAULT_EP_H
#define VFIOMIG_FAULT_EP_H

#include <stdint.h>

#include <vfiomig/endpoint.h>

/* Wraps @inner (which stays the caller's, and must outlive the wrapper):
 * the first vfm_ep_set_state(@fail_state) fails. Free with vfm_ep_free(). Return: 0
 * and *@out, or -ENOMEM. */
int fault_ep_new(struct vfm_endpoint *inner, uint32_t fail_state, struct vfm_endpoint **out);

/* How many requests the wrapper refused. */
unsigned fault_ep_refused(const struct vfm_endpoint *ep);

#endif
