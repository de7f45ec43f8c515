/* SPDX-License-Identifier: MIT */
/* The vfiomig command's shared helpers. */
#ifndef VFIOMIG_CLI_H
#define VFIOMIG_CLI_H

#include <stdbool.h>
#include <stdio.h>

/* Exit codes (GNU convention). */
#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2
/* migrate / receive: a message of the commit was lost, this side cannot
 * know how the migration ended, and its devices are left stopped */
#define EXIT_UNKNOWN 3

/* Prints "vfiomig VERB: MSG\nTry 'vfiomig VERB --help'." and returns 2. */
int cli_usage_error(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints "vfiomig: MSG" to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes @s as a JSON string (quoted, escaped) to @f. */
void json_str(FILE *f, const char *s);

/* Parses a whole decimal number in [min, max]. Return: 0 or -1. */
int cli_parse_uint(const char *s, unsigned long long min, unsigned long long max,
                   unsigned long long *out);

/* Parses a size with an optional K/M/G suffix (binary). Return: 0 or -1. */
int cli_parse_size(const char *s, unsigned long long *out);

/* Parses a rate in bytes per second: a size (4M), optionally followed by
 * "/s", or a percentage of @whole per second (1%, 0.5%). Return: 0 or -1. */
int cli_parse_rate(const char *s, unsigned long long whole, unsigned long long *out);

/* The progress line of a migration on stderr ("\r" + phase, bytes, rate);
 * *@t0 is set at the first call. */
void cli_progress_line(double *t0, int phase, unsigned long long bytes, unsigned long long total);

struct vfm_mig_report;
/* What the pre-copy rounds of @r came to, in words, into @buf: "converged,
 * ~2.1 ms expected (MIG_DATA_SIZE)", "round limit reached, ~900.0 ms
 * expected (precopy info)", or, when the devices' answers support no
 * estimate, "not judged: ..." with the reason. */
const char *cli_precopy_verdict(const struct vfm_mig_report *r, char *buf, size_t len);
/* Prints @r's notes (what the engine did beyond the plan), one "note:" line
 * each, to stderr; nothing when there are none. */
void cli_print_notes(const struct vfm_mig_report *r);
int cmd_plan(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_state(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_receive(int argc, char **argv);
int cmd_conform(int argc, char **argv);
int cmd_region(int argc, char **argv);

/* Whether a file can be created at @path (its directory exists and may be
 * written): checked before the work whose result goes there. Return: 0 or
 * -errno. */
int cli_can_create(const char *path);
/* --timeout MS: 1 .. 24 hours. Return: 0 or -1. */
int cli_parse_timeout(const char *s, unsigned *ms);
/* The --timeout line of every verb's --help. */
#define CLI_TIMEOUT_HELP                                                                           \
    "      --timeout MS     the longest wait on a device server or the other end of\n"             \
    "                       the stream, at any one time (default 30000); when it\n"                \
    "                       passes, the operation fails naming the device and state\n"

#endif
