/* SPDX-License-Identifier: MIT */
/*
 * vfiomig migrate / receive — the two sides of a live migration of a set of
 * vfio-user devices, over a UNIX or TCP stream, on one machine or two.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
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
#include "link.h"

#define MAX_DEV 64

static void migrate_help(const char *verb)
{
    bool send = !strcmp(verb, "migrate");

    printf("Usage: vfiomig %s --device DEV [--device DEV ...] %s ADDRESS\n"
           "                       [--json] [--trace FILE] [--verbose] [--timeout MS]\n"
           "                       [--tls-creds DIR] [--insecure] [--id ID]%s\n\n",
           verb, send ? "--to" : "--listen",
           send ? " [--tls-hostname NAME]"
                  "\n                       [--no-precopy] [--downtime-limit MS] [--max-rounds N]"
                  "\n                       [--max-downtime MS] [--streams N]"
                : " [--handshake-timeout MS]"
                  "\n                       [--accept-timeout MS]");
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
               "arrives). Loads every device and, on the sender's commit, starts them all\n"
               "in RUNNING_P2P, then all in RUNNING. On a bad stream the devices are reset\n"
               "and never run on it. A peer that fails the TLS handshake, stays silent, or\n"
               "sends a stream with another migration id is dropped before any device is\n"
               "touched, and the real sender waited for.\n\n");
    printf("ADDRESS is unix:PATH or tcp:HOST:PORT (%s),\n"
           "or file:PATH, a one-way stream (file:- is %s): %s\n\n",
           send ? "connect to it; tcp:[V6]:PORT for IPv6"
                : "listen on it; tcp:PORT listens on 127.0.0.1,\n"
                  "or on every address with --tls-creds",
           send ? "standard output, for a pipe" : "standard input",
           send ? "the devices' states are saved\n"
                  "there and the devices stay stopped; nothing answers, so nothing is\n"
                  "rolled back after the last byte"
                : "the stream is checked as\n"
                  "from a socket, and no answer is sent");
    printf("Plain TCP is for loopback: another address needs --tls-creds, or --insecure.\n\n");
    printf(
        "Options:\n"
        "  -d, --device DEV     a device, in device order (1..64): a vfio-user\n"
        "                       socket, or a kernel VFIO device as\n"
        "                       vfio-group:/dev/vfio/N:NAME or vfio-cdev:PATH\n"
        "  %s\n"
        "  -j, --json           print the report as JSON\n"
        "  -t, --trace FILE     write a Chrome trace-event timeline (Perfetto)\n" CLI_TIMEOUT_HELP
        "  -v, --verbose        trace every arc on stderr\n"
        "      --tls-creds DIR  TLS over tcp:, in QEMU's layout: ca-cert.pem and\n"
        "                       %s-cert.pem, %s-key.pem (x509: both peers\n"
        "                       verified), or keys.psk (IDENTITY:HEXKEY lines)\n"
        "      --insecure       allow plain TCP to a non-loopback address: the\n"
        "                       state travels unencrypted and unauthenticated\n"
        "      --id ID          the migration's id (letters, digits, . _ : -; at\n"
        "                       most 64): %s\n",
        send ? "    --to ADDRESS     where the receiver listens"
             : "    --listen ADDRESS where to listen",
        send ? "client" : "server", send ? "client" : "server",
        send ? "written into the stream, for the receiver to\n"
               "                       check"
             : "a stream with another (a replayed one) is\n"
               "                       refused before any device is touched, and the\n"
               "                       real sender waited for; required over TCP");
    if (send)
        printf("      --tls-hostname NAME\n"
               "                       the name the receiver's certificate must carry\n"
               "                       (default: HOST of tcp:HOST:PORT)\n"
               "      --no-precopy     stop-copy every device, even those with PRE_COPY\n"
               "      --downtime-limit MS\n"
               "                       the downtime pre-copy aims for (default 300)\n"
               "      --max-rounds N   at most N pre-copy rounds (default 30); pre-copy\n"
               "                       goes on while a device still has initial data,\n"
               "                       and the receiver acknowledges each device's initial\n"
               "                       data before the switchover (switchover-ack)\n"
               "      --max-downtime MS\n"
               "                       abort, and resume the sources, when the destinations\n"
               "                       have not all loaded within MS of the switchover\n"
               "                       (default 30000; 0: no bound)\n"
               "      --streams N      move the state over N connections (1..16, default\n"
               "                       1): device i's state goes on connection i mod N,\n"
               "                       and the receiver loads each connection's devices\n"
               "                       on its own thread; the receiver follows the\n"
               "                       sender's count (unix: and tcp:, not file:)\n");
    else
        printf("      --handshake-timeout MS\n"
               "                       drop a connecting peer that has not completed\n"
               "                       the TLS handshake (or, plain, sent its stream's\n"
               "                       header) within MS, and keep waiting for the\n"
               "                       real sender (default 10000); a sender's further\n"
               "                       connections (migrate --streams) must connect and\n"
               "                       send their header within it too\n"
               "      --accept-timeout MS\n"
               "                       give up when no sender's stream has begun within\n"
               "                       MS of listening (refused peers do not extend it;\n"
               "                       default: wait until stopped); the devices are\n"
               "                       left stopped, nothing loaded (unix: and tcp:)\n");
    printf("  -h, --help           show this help\n\n"
           "Exit status: 0 success, 1 failure (the message names the device, the state\n"
           "and the cause), 2 usage error, 3 outcome unknown: a message of the commit\n"
           "was lost, so this side cannot know whether the other runs the devices; its\n"
           "own are left stopped with their state, and never started twice.\n");
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
    if (r->nstreams > 1) {
        printf("  streams: %u, bytes on each:", r->nstreams);
        for (unsigned k = 0; k < r->nstreams && k < VFM_MIG_MAX_STREAMS; k++)
            printf(" %llu", (unsigned long long)r->stream_bytes_by[k]);
        printf("\n");
    }
    if (r->precopy_rounds) {
        char v[256];
        printf("  %-44s %8.2f ms: %u devices, %u rounds, %llu bytes, %s\n",
               vfm_mig_phase_name(VFM_PHASE_PRECOPY), r->phase_ns[VFM_PHASE_PRECOPY] / 1e6,
               r->precopy_devices, r->precopy_rounds, (unsigned long long)r->precopy_bytes,
               cli_precopy_verdict(r, v, sizeof(v)));
        if (r->switchover_acks || r->precopy_reinits)
            printf("  switchover-ack: %u acknowledgements of initial data%s; %u new initial data "
                   "announced (REINIT)\n",
                   r->switchover_acks, r->switchover_ack_wait_ns > 0 ? " (waited for)" : "",
                   r->precopy_reinits);
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

/* receive: the socket this process bound, removed when a signal ends it
 * (SIGINT, SIGTERM, SIGHUP) as at its normal end — only if it is still the
 * one bound (lstat and unlink are async-signal-safe). */
static char bound_path[sizeof(((struct sockaddr_un *)0)->sun_path) + 32];
static struct stat bound_st;

static void on_end_signal(int sig)
{
    struct stat now;

    if (bound_path[0] && lstat(bound_path, &now) == 0 && now.st_dev == bound_st.st_dev &&
        now.st_ino == bound_st.st_ino)
        unlink(bound_path);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void remove_on_signal(const char *path, const struct stat *st)
{
    struct sigaction sa = {.sa_handler = on_end_signal};

    snprintf(bound_path, sizeof(bound_path), "%s", path);
    bound_st = *st;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* receive: the sender's further connections (migrate --streams), taken
 * from the listener; closed at the end. */
struct more_links {
    const char *verb;
    struct link_listener *listener;
    struct link lk[VFM_MIG_MAX_STREAMS];
    unsigned n;
    /* migrate: where and how to connect them */
    const char *addr, *host;
    const struct sockaddr_storage *ss;
    socklen_t sl;
    struct vfm_tls_creds *creds;
};

static int accept_more(void *ctx, unsigned timeout_ms, struct vfm_mig_stream *out)
{
    struct more_links *ml = ctx;
    struct link *lk;
    int ret;

    if (ml->n == VFM_MIG_MAX_STREAMS)
        return -EMFILE;
    lk = &ml->lk[ml->n];
    if ((ret = link_accept_within(ml->verb, ml->listener, timeout_ms, lk)))
        return ret;
    ml->n++;
    out->fd = lk->fd;
    out->transport = link_transport(lk);
    return 0;
}

/* migrate: stream @k's connection, made when the engine asks for it (the
 * receiver is taking them then: a TLS handshake needs its part). */
static int connect_more(void *ctx, unsigned k, unsigned timeout_ms, struct vfm_mig_stream *out)
{
    struct more_links *ml = ctx;
    struct link *lk;

    (void)k;
    if (ml->n == VFM_MIG_MAX_STREAMS)
        return -EMFILE;
    lk = &ml->lk[ml->n];
    if (link_connect(ml->verb, ml->addr, ml->ss, ml->sl, ml->creds, ml->host, timeout_ms, lk))
        return -ECONNREFUSED; /* link_connect said why */
    ml->n++;
    out->fd = lk->fd;
    out->transport = link_transport(lk);
    return 0;
}

static void close_links(struct link *lk, unsigned *n)
{
    for (unsigned k = 0; k < *n; k++)
        link_close(&lk[k]);
    *n = 0;
}

static int run(int argc, char **argv, const char *verb)
{
    enum {
        OPT_UNSAFE = 256,
        OPT_NO_PRECOPY,
        OPT_LIMIT,
        OPT_ROUNDS,
        OPT_TIMEOUT,
        OPT_MAX_DOWN,
        OPT_TLS_CREDS,
        OPT_TLS_HOST,
        OPT_INSECURE,
        OPT_ID,
        OPT_STREAMS,
        OPT_HANDSHAKE,
        OPT_ACCEPT,
    };
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
        {"tls-creds", required_argument, NULL, OPT_TLS_CREDS},
        {"tls-hostname", required_argument, NULL, OPT_TLS_HOST},
        {"insecure", no_argument, NULL, OPT_INSECURE},
        {"id", required_argument, NULL, OPT_ID},
        {"handshake-timeout", required_argument, NULL, OPT_HANDSHAKE},
        {"accept-timeout", required_argument, NULL, OPT_ACCEPT},
        {"streams", required_argument, NULL, OPT_STREAMS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dev[MAX_DEV], *addr = NULL, *trace = NULL, *tls_dir = NULL, *tls_host = NULL;
    struct vfm_tls_creds *creds = NULL;
    struct link_listener *listener = NULL;
    struct link lk = {.fd = -1};
    struct more_links more = {.verb = verb};      /* the further connections (--streams) */
    unsigned handshake_ms = 10000, accept_ms = 0; /* 0: no bound */
    int64_t accept_until;
    bool insecure = false;
    char host[256] = "";
    struct vfm_endpoint *ep[MAX_DEV] = {0}; /* each owns its backend */
    struct vfm_mig_config cfg = {
        .version = VFM_MIG_CONFIG_VERSION, .max_downtime_ms = 30000, .switchover_ack = true};
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
        case OPT_TLS_CREDS:
            tls_dir = optarg;
            break;
        case OPT_TLS_HOST:
            if (!send)
                return cli_usage_error(verb, "--tls-hostname is an option of vfiomig migrate");
            tls_host = optarg;
            break;
        case OPT_INSECURE:
            insecure = true;
            break;
        case OPT_ID:
            if (!optarg[0] || strlen(optarg) > VFM_MIG_ID_MAX ||
                strspn(optarg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                               "._:-") != strlen(optarg))
                return cli_usage_error(verb,
                                       "bad --id '%s' (1..%u of letters, digits, '.', '_', "
                                       "':', '-')",
                                       optarg, VFM_MIG_ID_MAX);
            cfg.id = optarg;
            break;
        case OPT_HANDSHAKE:
            if (send)
                return cli_usage_error(verb, "--handshake-timeout is an option of vfiomig receive");
            if (cli_parse_timeout(optarg, &handshake_ms))
                return cli_usage_error(verb, "bad --handshake-timeout '%s' (milliseconds)", optarg);
            break;
        case OPT_ACCEPT:
            if (send)
                return cli_usage_error(verb, "--accept-timeout is an option of vfiomig receive");
            if (cli_parse_timeout(optarg, &accept_ms))
                return cli_usage_error(verb, "bad --accept-timeout '%s' (milliseconds)", optarg);
            break;
        case OPT_STREAMS: {
            unsigned long long v;
            if (!send)
                return cli_usage_error(verb, "--streams is an option of vfiomig migrate (the "
                                             "receiver follows the sender's count)");
            if (cli_parse_uint(optarg, 1, VFM_MIG_MAX_STREAMS, &v))
                return cli_usage_error(verb, "bad --streams '%s' (1..%u)", optarg,
                                       VFM_MIG_MAX_STREAMS);
            cfg.nstreams = (unsigned)v;
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
        if (tls_dir)
            return cli_usage_error(verb, "--tls-creds is for tcp: streams");
        if (cfg.nstreams > 1)
            return cli_usage_error(verb, "--streams is for unix: and tcp: addresses (a file is "
                                         "one stream)");
        if (accept_ms)
            return cli_usage_error(verb, "--accept-timeout is for unix: and tcp: addresses");
        cfg.one_way = true;
    } else if (link_parse_addr(addr, !send, tls_dir != NULL, &ss, &sl, host, sizeof(host))) {
        return cli_usage_error(verb, "bad address '%s' (unix:PATH, tcp:HOST:PORT, file:PATH)",
                               addr);
    } else if (ss.ss_family == AF_UNIX && tls_dir) {
        return cli_usage_error(verb, "--tls-creds is for tcp: streams");
    } else if (!tls_dir && !link_is_local(&ss) && !insecure) {
        /* a VM's state in the clear, to or from anyone on the network */
        return cli_usage_error(verb,
                               "%s is not a loopback address: give --tls-creds DIR, or "
                               "--insecure to send the devices' state unencrypted and "
                               "unauthenticated",
                               addr);
    }
    if (!send && !cfg.one_way && ss.ss_family != AF_UNIX && !cfg.id)
        return cli_usage_error(verb, "receiving over TCP needs --id ID: the migration's id, "
                                     "which the sender passes to vfiomig migrate --id");
    if (tls_dir && link_load_creds(verb, tls_dir, !send, &creds))
        return EXIT_FAIL;

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
    if (send) {
        if (link_connect(verb, addr, &ss, sl, creds, tls_host ? tls_host : host,
                         cfg.timeout_ms ? cfg.timeout_ms : VFM_MIG_DEFAULT_TIMEOUT_MS, &lk))
            goto out;
        cfg.transport = link_transport(&lk);
        /* the further connections (--streams), made as the engine asks */
        more.addr = addr;
        more.host = tls_host ? tls_host : host;
        more.ss = &ss;
        more.sl = sl;
        more.creds = creds;
        cfg.connect_stream = connect_more;
        cfg.connect_ctx = &more;
        ret = vfm_migrate_send(&cfg, lk.fd, &rep);
    } else {
        int one = 1, b;
        mode_t old;
        lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (lfd < 0)
            goto out_errno;
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        old = umask(0177); /* a UNIX socket is 0600 from the start */
        b = bind(lfd, (struct sockaddr *)&ss, sl);
        umask(old);
        if (b < 0)
            goto out_errno;
        if (ss.ss_family == AF_UNIX && lstat(((struct sockaddr_un *)&ss)->sun_path, &bound) == 0) {
            bound_unix = true; /* ours: removed at the end if it is still ours */
            remove_on_signal(((struct sockaddr_un *)&ss)->sun_path, &bound);
        }
        if (listen(lfd, 8) < 0)
            goto out_errno;
        if ((ret = link_listener_new(lfd, creds, handshake_ms, &listener))) {
            errno = -ret;
            goto out_errno;
        }
        if (!json)
            fprintf(stderr, "vfiomig: receive: waiting on %s for %u devices%s\n", addr, n,
                    creds ? " (TLS)" : "");
        /* a peer that fails the handshake, stays silent, or sends another
         * migration's stream is dropped, and the real sender waited for */
        cfg.header_timeout_ms = handshake_ms;
        more.listener = listener;
        cfg.accept_stream = accept_more;
        cfg.accept_ctx = &more;
        accept_until = accept_ms ? link_now_ms() + accept_ms : -1;
        for (;;) {
            ret = link_accept_until(verb, listener, accept_until, &lk);
            if (ret == -ETIMEDOUT) {
                snprintf(rep.message, sizeof(rep.message),
                         "no sender's stream began on %s within %u ms (--accept-timeout); the "
                         "devices are left stopped, nothing loaded",
                         addr, accept_ms);
                goto report;
            }
            if (ret) {
                errno = -ret;
                goto out_errno;
            }
            cfg.transport = link_transport(&lk);
            ret = vfm_migrate_receive(&cfg, lk.fd, &rep);
            if (!ret || !rep.refused)
                break;
            cli_error("%s: refused the stream from %s: %s", verb, lk.peer, rep.message);
            link_close(&lk);
            close_links(more.lk, &more.n);
            vfm_mig_report_free(&rep);
        }
    }
report:
    if (cfg.progress)
        fprintf(stderr, "\n");
    if (ret)
        cli_error("%s: %s%s", verb, rep.message[0] ? rep.message : vfm_strerror(ret),
                  !rep.rolled_back   ? ""
                  : rep.sources_lost ? "; the devices that answer were rolled back to RUNNING"
                                     : "; the devices were rolled back to RUNNING");
    if (ret && *link_tls_said(&lk))
        cli_error("%s: %s: %s", verb, addr, link_tls_said(&lk));
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
    link_close(&lk);
    close_links(more.lk, &more.n);
    link_listener_free(listener);
    link_free_creds(creds);
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
