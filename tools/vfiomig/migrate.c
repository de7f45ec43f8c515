/* SPDX-License-Identifier: MIT */
/*
 * vfiomig migrate / receive — the two sides of a live migration of a set of
 * vfio-user devices, over a UNIX or TCP stream, on one machine or two.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <vfiomig/open.h>
#include <vfiomig/kernel.h>
#include <vfiomig/migrate.h>
#include <vfiomig/vfio_user.h>

#include "cli.h"

#define MAX_DEV 64

static void migrate_help(const char *verb)
{
    bool send = !strcmp(verb, "migrate");

    printf("Usage: vfiomig %s --device DEV [--device DEV ...] %s ADDRESS\n"
           "                       [--json] [--trace FILE] [--verbose] [--timeout MS]%s\n\n",
           verb, send ? "--to" : "--listen",
           send ? "\n                       [--no-precopy] [--downtime-limit MS] [--max-rounds N]"
                  "\n                       [--max-downtime MS]"
                : "");
    if (send)
        printf("Live-migrate the given devices (one VM: device i goes to the receiver's\n"
               "device i) to `vfiomig receive` at ADDRESS. Each device's state is read\n"
               "first and every request planned from it (one found stopped is migrated\n"
               "stopped, and the notes say so; one in ERROR or RESUMING is refused).\n"
               "Devices with PRE_COPY first send their state while the VM runs, in rounds,\n"
               "until the estimated downtime fits the limit, the round limit is reached,\n"
               "or - for devices that give no estimate - every device reached its\n"
               "temporary end. Then all devices are quiesced (RUNNING_P2P / PRE_COPY_P2P)\n"
               "before any stops; their states are read concurrently and sent framed and\n"
               "checksummed. If the receiver fails, goes away or stops answering, the\n"
               "devices are rolled back to RUNNING (all to RUNNING_P2P first).\n\n");
    else
        printf("Receive a live migration from `vfiomig migrate` into the devices served on\n"
               "the given sockets (stopped first: they must not run before their state\n"
               "arrives). Accepts one connection; loads every device; starts them all in\n"
               "RUNNING_P2P, then all in RUNNING. On a bad stream the devices are reset and\n"
               "never run on it.\n\n");
    printf(
        "ADDRESS is unix:PATH or tcp:HOST:PORT (%s), or file:PATH, a one-way\n"
        "stream (file:- is %s): %s\n\n"
        "Options:\n"
        "  -d, --device DEV     a device, in device order (1..64): a vfio-user\n"
        "                       socket, or a kernel VFIO device as\n"
        "                       vfio-group:/dev/vfio/N:NAME or vfio-cdev:PATH\n"
        "  %s\n"
        "  -j, --json           print the report as JSON\n"
        "  -t, --trace FILE     write a Chrome trace-event timeline (Perfetto)\n" CLI_TIMEOUT_HELP
        "  -v, --verbose        trace every arc on stderr\n%s"
        "  -h, --help           show this help\n\n"
        "Exit status: 0 success, 1 failure (the message names the device, the state\n"
        "and the cause), 2 usage error, 3 outcome unknown: a message of the commit\n"
        "was lost, so this side cannot know whether the other runs the devices; its\n"
        "own are left stopped with their state, and never started twice.\n",
        send ? "connect to it" : "listen on it; tcp:PORT listens on every address",
        send ? "standard output, for a pipe" : "standard input",
        send ? "the devices' states are saved there and the devices stay\n"
               "stopped; nothing answers, so nothing is rolled back after the last byte"
             : "the stream is checked as from a socket, and no answer is sent",
        send ? "    --to ADDRESS     where the receiver listens"
             : "    --listen ADDRESS where to listen",
        send ? "      --no-precopy     stop-copy every device, even those with PRE_COPY\n"
               "      --downtime-limit MS\n"
               "                       the downtime pre-copy aims for (default 300)\n"
               "      --max-rounds N   at most N pre-copy rounds (default 30)\n"
               "      --max-downtime MS\n"
               "                       abort, and resume the sources, when the destinations\n"
               "                       have not all loaded within MS of the switchover\n"
               "                       (default 30000; 0: no bound)\n"
             : "");
}

/* Parses unix:PATH / tcp:HOST:PORT / tcp:PORT into a socket address. */
static int parse_addr(const char *a, bool listening, struct sockaddr_storage *ss, socklen_t *len)
{
    if (!strncmp(a, "unix:", 5)) {
        struct sockaddr_un *u = (struct sockaddr_un *)ss;
        if (strlen(a + 5) == 0 || strlen(a + 5) >= sizeof(u->sun_path))
            return -EINVAL;
        memset(u, 0, sizeof(*u));
        u->sun_family = AF_UNIX;
        strcpy(u->sun_path, a + 5);
        *len = sizeof(*u);
        return 0;
    }
    if (!strncmp(a, "tcp:", 4)) {
        char host[256] = "", *port;
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
        unsigned long long pn;
        if (snprintf(host, sizeof(host), "%s", a + 4) >= (int)sizeof(host))
            return -EINVAL;
        if (host[0] == '[') {
            /* [v6]:PORT */
            char *close = strchr(host, ']');
            if (!close || close[1] != ':')
                return -EINVAL;
            *close = '\0';
            port = close + 2;
            memmove(host, host + 1, strlen(host + 1) + 1);
        } else if ((port = strrchr(host, ':'))) {
            *port++ = '\0';
            if (strchr(host, ':'))
                return -EINVAL; /* a v6 address goes in brackets */
        } else if (listening) {
            port = host;
            memmove(host + 1, host, strlen(host) + 1);
            host[0] = '\0';
            port = host + 1;
        } else {
            return -EINVAL;
        }
        /* a port is a whole number, 1..65535: never another one silently */
        if (cli_parse_uint(port, 1, 65535, &pn))
            return -EINVAL;
        if (listening)
            hints.ai_flags |= AI_PASSIVE;
        if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res))
            return -EINVAL;
        memcpy(ss, res->ai_addr, res->ai_addrlen);
        *len = res->ai_addrlen;
        freeaddrinfo(res);
        return 0;
    }
    return -EINVAL;
}

static void print_report(const struct vfm_mig_report *r, bool json, const char *verb, int ret,
                         bool one_way)
{
    if (json) {
        char *j = vfm_mig_report_json(r, verb, ret);
        printf("%s\n", j ? j : "{\"ok\":false,\"error\":\"out of memory\"}");
        free(j);
        return;
    }
    cli_print_notes(r);
    if (ret)
        return;
    if (strcmp(verb, "migrate"))
        printf("received %u devices: loaded and started in %.2f ms, %llu state bytes, %llu on "
               "the stream\n",
               r->ndev,
               (r->phase_ns[VFM_PHASE_LOAD] + r->phase_ns[VFM_PHASE_START_P2P] +
                r->phase_ns[VFM_PHASE_START]) /
                   1e6,
               (unsigned long long)r->bytes, (unsigned long long)r->stream_bytes);
    else if (one_way)
        printf("saved %u devices in %.2f ms (they stay stopped), %llu state bytes, %llu on the "
               "stream\n",
               r->ndev, r->downtime_ns / 1e6, (unsigned long long)r->bytes,
               (unsigned long long)r->stream_bytes);
    else
        printf("migrated %u devices: downtime %.2f ms, %llu state bytes, %llu on the stream\n",
               r->ndev, r->downtime_ns / 1e6, (unsigned long long)r->bytes,
               (unsigned long long)r->stream_bytes);
    if (r->precopy_rounds) {
        char v[256];
        printf("  %-44s %8.2f ms: %u devices, %u rounds, %llu bytes, %s\n",
               vfm_mig_phase_name(VFM_PHASE_PRECOPY), r->phase_ns[VFM_PHASE_PRECOPY] / 1e6,
               r->precopy_devices, r->precopy_rounds, (unsigned long long)r->precopy_bytes,
               cli_precopy_verdict(r, v, sizeof(v)));
    }
    for (int p = 0; p < VFM_PHASE_ROLLBACK; p++)
        if (r->phase_ns[p])
            printf("  %-44s %8.2f ms\n", vfm_mig_phase_name(p), r->phase_ns[p] / 1e6);
}

struct prog {
    double t0;
};

static void on_progress(void *ctx, enum vfm_mig_phase phase, uint64_t bytes, uint64_t total)
{
    struct prog *p = ctx;
    cli_progress_line(&p->t0, phase, bytes, total);
}

static int run(int argc, char **argv, const char *verb)
{
    enum { OPT_UNSAFE = 256, OPT_NO_PRECOPY, OPT_LIMIT, OPT_ROUNDS, OPT_TIMEOUT, OPT_MAX_DOWN };
    bool send = !strcmp(verb, "migrate");
    static const struct option opts[] = {
        {"device", required_argument, NULL, 'd'},
        {"to", required_argument, NULL, 'T'},
        {"listen", required_argument, NULL, 'L'},
        {"json", no_argument, NULL, 'j'},
        {"trace", required_argument, NULL, 't'},
        {"verbose", no_argument, NULL, 'v'},
        {"no-precopy", no_argument, NULL, OPT_NO_PRECOPY},
        {"downtime-limit", required_argument, NULL, OPT_LIMIT},
        {"max-rounds", required_argument, NULL, OPT_ROUNDS},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"max-downtime", required_argument, NULL, OPT_MAX_DOWN},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dev[MAX_DEV], *addr = NULL, *trace = NULL;
    struct vfm_endpoint *ep[MAX_DEV] = {0}; /* each owns its backend */
    struct vfm_mig_config cfg = {.version = VFM_MIG_CONFIG_VERSION, .max_downtime_ms = 30000};
    struct vfm_mig_report rep = {0};
    struct sockaddr_storage ss = {0};
    struct prog progress = {0};
    socklen_t sl = 0;
    unsigned n = 0;
    bool json = false;
    int c, ret, fd = -1, lfd = -1, rc = EXIT_FAIL;
    char tmp_path[4096 + 16];
    bool tmp_made = false, bound_unix = false;
    struct stat bound;

    optind = 1;
    while ((c = getopt_long(argc, argv, "d:t:jvh", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            if (n == MAX_DEV)
                return cli_usage_error(verb, "at most %u devices", MAX_DEV);
            dev[n++] = optarg;
            break;
        case 'T':
        case 'L':
            if ((c == 'T') != send)
                return cli_usage_error(verb, "%s is an option of vfiomig %s",
                                       c == 'T' ? "--to" : "--listen",
                                       c == 'T' ? "migrate" : "receive");
            addr = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 't':
            trace = optarg;
            break;
        case 'v':
            vfm_log_set(vfm_log_stderr, NULL, LOG_DEBUG);
            break;
        case OPT_NO_PRECOPY:
        case OPT_LIMIT:
        case OPT_ROUNDS: {
            unsigned long long v = 0;
            if (!send)
                return cli_usage_error(verb, "%s is an option of vfiomig migrate",
                                       c == OPT_NO_PRECOPY ? "--no-precopy"
                                       : c == OPT_LIMIT    ? "--downtime-limit"
                                                           : "--max-rounds");
            if (c == OPT_NO_PRECOPY)
                cfg.no_precopy = true;
            else if (cli_parse_uint(optarg, 1, c == OPT_LIMIT ? 600000 : 10000, &v))
                return cli_usage_error(verb, "bad %s '%s'",
                                       c == OPT_LIMIT ? "--downtime-limit" : "--max-rounds",
                                       optarg);
            if (c == OPT_LIMIT)
                cfg.downtime_limit_ms = (uint32_t)v;
            if (c == OPT_ROUNDS)
                cfg.max_rounds = (unsigned)v;
            break;
        }
        case OPT_MAX_DOWN: {
            unsigned long long v;
            if (!send)
                return cli_usage_error(verb, "--max-downtime is an option of vfiomig migrate");
            if (cli_parse_uint(optarg, 0, 24ull * 3600 * 1000, &v))
                return cli_usage_error(verb, "bad --max-downtime '%s' (milliseconds)", optarg);
            cfg.max_downtime_ms = (unsigned)v;
            break;
        }
        case OPT_TIMEOUT:
            if (cli_parse_timeout(optarg, &cfg.timeout_ms))
                return cli_usage_error(verb, "bad --timeout '%s' (milliseconds)", optarg);
            break;
        case 'h':
            migrate_help(verb);
            return EXIT_OK;
        default:
            return cli_usage_error(verb, "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error(verb, "unexpected argument '%s'", argv[optind]);
    if (!n || !addr)
        return cli_usage_error(verb, "--device and %s are required", send ? "--to" : "--listen");
    if (!strncmp(addr, "file:", 5)) {
        if (!addr[5])
            return cli_usage_error(verb, "bad address '%s' (file:PATH)", addr);
        cfg.one_way = true;
    } else if (parse_addr(addr, !send, &ss, &sl)) {
        return cli_usage_error(verb, "bad address '%s' (unix:PATH, tcp:HOST:PORT, file:PATH)",
                               addr);
    }

    if (trace && (ret = cli_can_create(trace))) {
        cli_error("%s: cannot write the trace %s: %s", verb, trace, vfm_strerror(ret));
        return EXIT_FAIL;
    }
    for (unsigned i = 0; i < n; i++) {
        ret = vfm_ep_open(dev[i], cfg.timeout_ms, &ep[i]);
        if (ret) {
            cli_error("%s: %s: cannot %s: %s", verb, dev[i],
                      ret == -EINVAL ? "parse it (vfio-group:/dev/vfio/N:NAME)" : "open it",
                      vfm_strerror(ret));
            goto out;
        }
        if (!send && (ret = vfm_ep_set_state(ep[i], VFM_STATE_STOP))) {
            cli_error("%s: %s: cannot stop it before its state arrives: %s", verb, dev[i],
                      vfm_strerror(ret));
            goto out;
        }
    }
    /* a progress line on a terminal, nothing otherwise */
    if (send && !json && isatty(2)) {
        cfg.progress = on_progress;
        cfg.progress_ctx = &progress;
    }
    cfg.ndev = n;
    cfg.src = send ? ep : NULL;
    cfg.dst = send ? NULL : ep;

    if (cfg.one_way) {
        const char *path = addr + 5;
        bool to_file = send && strcmp(path, "-");
        if (!strcmp(path, "-"))
            fd = dup(send ? 1 : 0);
        else if (send) {
            /* saved beside it and renamed once complete: a failed save
             * leaves no partial file, and never touches one that is there */
            if (snprintf(tmp_path, sizeof(tmp_path), "%s.XXXXXX", path) >= (int)sizeof(tmp_path)) {
                errno = ENAMETOOLONG;
                goto out_errno;
            }
            fd = mkostemp(tmp_path, O_CLOEXEC);
            tmp_made = fd >= 0;
        } else
            fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            goto out_errno;
        ret = send ? vfm_migrate_send(&cfg, fd, &rep) : vfm_migrate_receive(&cfg, fd, &rep);
        if (to_file && !ret && (fsync(fd) < 0 || rename(tmp_path, path) < 0)) {
            ret = -errno;
            snprintf(rep.message, sizeof(rep.message), "%s: %s", path, strerror(errno));
        } else if (to_file && !ret) {
            tmp_made = false; /* it is the file now */
        }
        goto report;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto out_errno;
    if (send) {
        if (connect(fd, (struct sockaddr *)&ss, sl) < 0)
            goto out_errno;
        ret = vfm_migrate_send(&cfg, fd, &rep);
    } else {
        int one = 1, b;
        mode_t old;
        lfd = fd;
        fd = -1;
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        old = umask(0177); /* a UNIX socket is 0600 from the start */
        b = bind(lfd, (struct sockaddr *)&ss, sl);
        umask(old);
        if (b < 0)
            goto out_errno;
        if (ss.ss_family == AF_UNIX && lstat(((struct sockaddr_un *)&ss)->sun_path, &bound) == 0)
            bound_unix = true; /* ours: removed at the end if it is still ours */
        if (listen(lfd, 1) < 0)
            goto out_errno;
        if (!json)
            fprintf(stderr, "vfiomig: receive: waiting on %s for %u devices\n", addr, n);
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            goto out_errno;
        ret = vfm_migrate_receive(&cfg, fd, &rep);
    }
report:
    if (cfg.progress)
        fprintf(stderr, "\n");
    if (ret)
        cli_error("%s: %s%s", verb, rep.message[0] ? rep.message : vfm_strerror(ret),
                  !rep.rolled_back   ? ""
                  : rep.sources_lost ? "; the devices that answer were rolled back to RUNNING"
                                     : "; the devices were rolled back to RUNNING");
    if (rep.sources_reset)
        cli_error("%s: %u devices could not return to RUNNING and were reset", verb,
                  rep.sources_reset);
    if (rep.sources_lost)
        cli_error("%s: %u devices did not answer and could not be brought back", verb,
                  rep.sources_lost);
    if (!(cfg.one_way && send && !strcmp(addr + 5, "-")))
        print_report(&rep, json, verb, ret, cfg.one_way); /* not into a stream on stdout */
    rc = ret ? (rep.outcome_unknown ? EXIT_UNKNOWN : EXIT_FAIL) : EXIT_OK;
    if (trace && ret == 0 && (ret = vfm_mig_trace_write(&rep, trace))) {
        cli_error("%s: cannot write the trace %s: %s", verb, trace, vfm_strerror(ret));
        rc = EXIT_FAIL;
    }
    goto out;

out_errno:
    cli_error("%s: %s: %s", verb, addr, strerror(errno));
out:
    vfm_mig_report_free(&rep);
    if (fd >= 0)
        close(fd);
    if (lfd >= 0)
        close(lfd);
    if (bound_unix) {
        /* only the socket this process bound, not one that replaced it */
        const char *sp = ((struct sockaddr_un *)&ss)->sun_path;
        struct stat now;
        if (lstat(sp, &now) == 0 && now.st_dev == bound.st_dev && now.st_ino == bound.st_ino)
            unlink(sp);
    }
    if (tmp_made)
        unlink(tmp_path); /* the partial save this process made */
    for (unsigned i = 0; i < n; i++)
        vfm_ep_free(ep[i]);
    return rc;
}

int cmd_migrate(int argc, char **argv)
{
    return run(argc, argv, "migrate");
}

int cmd_receive(int argc, char **argv)
{
    return run(argc, argv, "receive");
}
