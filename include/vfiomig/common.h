/* SPDX-License-Identifier: MIT */
/**
 * @file
 * vfiomig — common definitions shared by every layer: symbol export, error
 * names and the log sink.
 *
 * Error convention: every function that can fail returns 0 (or a count) on
 * success and a negative errno on failure, as the kernel's VFIO core does.
 * vfm_err_name(-EINVAL) gives "EINVAL"; vfm_strerror() gives the text.
 *
 * Threading: vfm_log_set() may be called at any time from any thread; the
 * sink itself may be called concurrently from several threads and must be
 * thread-safe. The other functions here are pure.
 */
#ifndef VFIOMIG_COMMON_H
#define VFIOMIG_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(VFM_BUILDING_LIBRARY)
#define VFM_EXPORT __attribute__((visibility("default")))
#else
#define VFM_EXPORT
#endif

#define VFM_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

/**
 * vfm_version - the library's version, as "MAJOR.MINOR.PATCH".
 */
VFM_EXPORT const char *vfm_version(void);

/**
 * vfm_err_name - the symbolic name of an error code.
 * @err: a negative (or positive) errno value.
 * Return: a static string such as "EINVAL"; "E?" for a value it does not know.
 */
VFM_EXPORT const char *vfm_err_name(int err);

/**
 * vfm_strerror - a human description of an error code (thread-safe).
 * @err: a negative (or positive) errno value.
 * Return: a static string.
 */
VFM_EXPORT const char *vfm_strerror(int err);

/* Log levels are syslog's: LOG_ERR 3, LOG_WARNING 4, LOG_NOTICE 5,
 * LOG_INFO 6, LOG_DEBUG 7. */
typedef void (*vfm_log_fn)(void *ctx, int level, const char *msg);

/**
 * vfm_log_set - install the library's log sink.
 * @sink: called once per message, without a trailing newline; NULL silences
 *      the library (the default).
 * @ctx: passed back to @sink.
 * @max_level: messages above this level are not formatted at all.
 */
VFM_EXPORT void vfm_log_set(vfm_log_fn sink, void *ctx, int max_level);

/**
 * vfm_log_stderr - A ready-made sink that writes "vfiomig: <msg>\n" to stderr.
 */
VFM_EXPORT void vfm_log_stderr(void *ctx, int level, const char *msg);

/**
 * vfm_xxh3_64 - XXH3-64 of @len bytes — the streams' checksum, the same value as
 * libxxhash's XXH3_64bits(), computed by its fastest build for this CPU
 * (AVX2 where there is one). For devices that digest their own memory.
 */
VFM_EXPORT uint64_t vfm_xxh3_64(const void *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* VFIOMIG_COMMON_H */
