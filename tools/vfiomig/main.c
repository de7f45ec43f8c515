/* SPDX-License-Identifier: MIT */
/* vfiomig — the command: `vfiomig <verb> [options]`. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <vfiomig/common.h>
#include <vfiomig/kernel.h>
#include <vfiomig/vfio_user.h>
#include <vfiomig/migrate.h>

#include "cli.h"

static const struct verb {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} verbs[] = {
    {"plan", cmd_plan, "show the path the protocol takes between two migration states"},
    {"demo", cmd_demo, "live-migrate a VM of P2P mailbox devices and prove nothing was lost"},
    {"migrate", cmd_migrate, "live-migrate a set of vfio-user devices to a receiver"},
    {"receive", cmd_receive, "receive a live migration into a set of vfio-user devices"},
    {"serve", cmd_serve, "run a sample device as a vfio-user server process"},
    {"state", cmd_state, "get or set a vfio-user device's migration state"},
    {"conform", cmd_conform, "check a device (vfio-user or kernel) against the uAPI's rules"},
    {"region", cmd_region, "read or write bytes of a device's region (a BAR)"},
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: vfiomig <verb> [options]\n"
               "       vfiomig --help | --version\n\n"
               "Live migration of VFIO devices (the Linux migration uAPI v2).\n\nVerbs:\n");
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        fprintf(f, "  %-8s %s\n", verbs[i].name, verbs[i].summary);
    fprintf(f, "\nRun 'vfiomig <verb> --help' for a verb's options.\n"
               "Exit status: 0 success, 1 failure, 2 usage error.\n");
}

int cli_usage_error(const char *verb, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "vfiomig%s%s: ", verb ? " " : "", verb ? verb : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'vfiomig%s%s --help'.\n", verb ? " " : "", verb ? verb : "");
    return EXIT_USAGE;
}

void cli_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "vfiomig: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

const char *cli_precopy_verdict(const struct vfm_mig_report *r, char *buf, size_t len)
{
    if (r->expected_downtime_ns >= 0)
        snprintf(buf, len, "%s, ~%.1f ms expected (%s)",
                 r->precopy_converged ? "converged" : "round limit reached",
                 r->expected_downtime_ns / 1e6, vfm_mig_estimate_name(r->precopy_estimate));
    else if (r->precopy_estimate == VFM_MIG_EST_NONE)
        snprintf(buf, len, "not judged: a device says neither MIG_DATA_SIZE nor precopy info; %s",
                 r->precopy_drained ? "switched over once every device reached its temporary end"
                                    : "round limit reached");
    else
        snprintf(buf, len, "not judged: no throughput measured (nothing was read); %s",
                 r->precopy_drained ? "switched over once every device reached its temporary end"
                                    : "round limit reached");
    return buf;
}

void cli_print_notes(const struct vfm_mig_report *r)
{
    const char *p = r->notes;

    while (*p) {
        const char *end = strstr(p, "; ");
        size_t n = end ? (size_t)(end - p) : strlen(p);
        fprintf(stderr, "vfiomig: note: %.*s\n", (int)n, p);
        p += n + (end ? 2 : 0);
    }
}

void cli_progress_line(double *t0, int phase, unsigned long long bytes, unsigned long long total)
{
    struct timespec ts;
    double now, dt;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = ts.tv_sec + ts.tv_nsec / 1e9;
    if (!*t0)
        *t0 = now;
    dt = now - *t0;
    fprintf(stderr, "\r  %-40s %10.1f MiB", vfm_mig_phase_name(phase), bytes / 1048576.0);
    if (total)
        fprintf(stderr, " of %.1f MiB", total / 1048576.0);
    if (dt > 0)
        fprintf(stderr, "  %8.1f MiB/s ", bytes / 1048576.0 / dt);
}

int cli_parse_uint(const char *s, unsigned long long min, unsigned long long max,
                   unsigned long long *out)
{
    char *end;
    unsigned long long v;

    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_size(const char *s, unsigned long long *out)
{
    char *end;
    unsigned long long v, mul = 1;

    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    switch (*end) {
    case '\0':
        break;
    case 'k':
    case 'K':
        mul = 1ull << 10;
        end++;
        break;
    case 'm':
    case 'M':
        mul = 1ull << 20;
        end++;
        break;
    case 'g':
    case 'G':
        mul = 1ull << 30;
        end++;
        break;
    default:
        return -1;
    }
    if (*end == 'i' && end[-1] != '\0')
        end++;
    if (*end == 'B')
        end++;
    if (*end || (v && mul > ~0ull / v))
        return -1;
    *out = v * mul;
    return 0;
}

int cli_parse_rate(const char *s, unsigned long long whole, unsigned long long *out)
{
    size_t n = s ? strlen(s) : 0;
    char buf[64];

    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n + 1);
    if (buf[n - 1] == '%') {
        char *end;
        double pct;
        buf[n - 1] = '\0';
        if (buf[0] < '0' || buf[0] > '9')
            return -1;
        errno = 0;
        pct = strtod(buf, &end);
        if (errno || *end || pct < 0 || pct > 10000)
            return -1;
        *out = (unsigned long long)((double)whole * pct / 100.0);
        return 0;
    }
    if (n > 2 && !strcmp(buf + n - 2, "/s"))
        buf[n - 2] = '\0';
    return cli_parse_size(buf, out);
}

int cli_parse_timeout(const char *s, unsigned *ms)
{
    unsigned long long v;

    if (cli_parse_uint(s, 1, 24ull * 3600 * 1000, &v))
        return -1;
    *ms = (unsigned)v;
    return 0;
}

int cli_can_create(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');

    if (!*path)
        return -ENOENT;
    if (!slash)
        strcpy(dir, ".");
    else if ((size_t)(slash - path) >= sizeof(dir))
        return -ENAMETOOLONG;
    else {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
        if (!dir[0])
            strcpy(dir, "/");
    }
    return access(dir, W_OK | X_OK) ? -errno : 0;
}

int main(int argc, char **argv)
{
    /* A data fd whose peer is gone must fail a write with EPIPE, not kill
     * the command. */
    signal(SIGPIPE, SIG_IGN);
    /* Errors from the library reach the user; a verb's --verbose adds the
     * trace of every arc. */
    vfm_log_set(vfm_log_stderr, NULL, LOG_ERR);

    if (argc < 2)
        return usage(stderr), EXIT_USAGE;
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("vfiomig %s\n", vfm_version());
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        if (!strcmp(argv[1], verbs[i].name))
            return verbs[i].fn(argc - 1, argv + 1);
    }
    return cli_usage_error(NULL, "unknown verb '%s'", argv[1]);
}
