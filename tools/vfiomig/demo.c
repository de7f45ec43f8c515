/* SPDX-License-Identifier: MIT */
/*
 * vfiomig demo — save a running sample device (the ticker of
 * docs/device-guide.md) and restore it into a fresh one, through the real
 * data fds the device runtime gives, then show both states identical.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <vfiomig/fsm.h>

#include <vfiomig/device.h>

#include "cli.h"
#include "demo_link.h"
#include "fault_ep.h"
#include "large.h"
#include "ticker.h"
#include "vm.h"

#include <vfiomig/migrate.h>

static void demo_help(void)
{
    printf(
        "Usage: vfiomig demo [--devices N] [--run-ms MS] [--ram SIZE] [--no-dirty-log]\n"
        "                    [--unsafe-order] [--mix]\n"
        "                    [--large SIZE [--dirty-rate RATE] [--no-precopy]\n"
        "                    [--reconfigure] [--downtime-limit MS]]\n"
        "                    [--link ADDR [--via ADDR]] [--tls] [--streams N]\n"
        "                    [--timeout MS] [--max-downtime MS] [--json] [--trace FILE]\n"
        "                    [--verbose]\n"
        "       vfiomig demo --ticker [--mem SIZE] [--run-ms MS] [--json] [--verbose]\n\n"
        "Live-migrate a VM of N p2p-mailbox devices (default 4), each a vfio-user\n"
        "server process, that write messages into each other's inbox BARs (shared\n"
        "memory mapped with DMA_MAP), to N fresh destination processes while the\n"
        "traffic flows; let the destinations run; then prove from the devices'\n"
        "counters that every message sent on either side was consumed exactly once,\n"
        "and from the delivery rings in the destination's guest RAM that each one\n"
        "arrived there.\n"
        "The migration quiesces every device (RUNNING_P2P) before any stops, and\n"
        "starts every destination in RUNNING_P2P before any runs.\n\n"
        "  -n, --devices N     devices in the VM (1..64, default 4)\n"
        "  -r, --run-ms MS     how long the VM runs before and after (default 300)\n"
        "      --ram SIZE      the VM's guest RAM (K/M/G, 4M..1G, default 32M; 0: none):\n"
        "                      a shared memfd every device process DMA-maps, where each\n"
        "                      mailbox appends every message it consumes to a ring and\n"
        "                      writes its status, and the large device its result; the\n"
        "                      engine pre-copies it in rounds, asking the devices which\n"
        "                      pages they wrote (DMA dirty logging), and sends the last\n"
        "                      ones in the downtime; then the rings are checked record\n"
        "                      by record at the destination\n"
        "      --no-dirty-log  migrate the RAM without the devices' dirty reports: it is\n"
        "                      copied once while the VM runs and what the devices write\n"
        "                      after is lost; the demo says how much (exit status 1)\n"
        "      --unsafe-order  stop the devices one by one with no P2P phase, the\n"
        "                      ordering RUNNING_P2P exists to prevent: messages are\n"
        "                      lost, and the demo says how many (exit status 1);\n"
        "                      without guest RAM (each device would move it again)\n"
        "      --mix           every second device without P2P (STOP_COPY only)\n"
        "      --ping-pong N   migrate N times, back and forth\n"
        "      --large SIZE    add a large-state device process with SIZE of memory\n"
        "                      (K/M/G, up to 1G) that its worker dirties while it runs;\n"
        "                      it is migrated with pre-copy, and then migrated back\n"
        "                      without, so both downtimes are measured on one workload\n"
        "      --dirty-rate RATE\n"
        "                      the large device's dirtying, bytes/s (4M) or a share\n"
        "                      of its memory per second (default 1%%)\n"
        "      --no-precopy    stop-copy every device (no comparison run)\n"
        "      --reconfigure   the guest reconfigures the large device halfway through\n"
        "                      its first pre-copy pass: it announces new initial data\n"
        "                      (VFIO_PRECOPY_INFO_REINIT) and the switchover waits until\n"
        "                      all of it is across\n"
        "      --downtime-limit MS\n"
        "                      the downtime pre-copy aims for (default 300)\n"
        "      --fail-at SIDE:N:STATE\n"
        "                      make the request moving device N of SIDE (source or\n"
        "                      destination) into STATE fail, to see the rollback\n"
        "      --kill-destination N\n"
        "                      kill destination process N while the state flows\n"
        "      --link ADDR     send the stream over a real connection, as migrate and\n"
        "                      receive do, commit included: a receiving thread\n"
        "                      listens on ADDR (unix:PATH, or tcp:PORT on loopback)\n"
        "                      (default: an in-process socket pair)\n"
        "      --via ADDR      the sender connects to ADDR instead: a relay that\n"
        "                      forwards to the --link address (one migration only)\n"
        "      --tls           TLS over TCP loopback (or the --link tcp: port) with a\n"
        "                      key made for this run, as migrate/receive --tls-creds\n"
        "                      with keys.psk\n"
        "      --streams N     move the state over N streams (1..16, default 1): device\n"
        "                      i's on stream i mod N, each stream's devices loaded by\n"
        "                      their own receiving thread (with --link: N connections)\n"
        "      --timeout MS    the longest wait on a device or the other end of the\n"
        "                      stream (default 30000)\n"
        "      --max-downtime MS\n"
        "                      abort and roll back when the destinations have not\n"
        "                      loaded within MS of the stop (default 30000, 0: none)\n"
        "  -t, --trace FILE    write a Chrome trace-event timeline (Perfetto)\n"
        "  -j, --json          print the result as JSON\n"
        "  -v, --verbose       trace every arc on stderr\n"
        "  -h, --help          show this help\n\n"
        "Exit status: 0 when nothing was lost or duplicated (messages, ring records,\n"
        "guest RAM equal at the destination), 1 otherwise or on a\n"
        "failure, 2 usage error, 3 when the migration's outcome is unknown to a side\n"
        "(a message of the commit was lost: its devices are left stopped).\n\n"
        "With --ticker: start a sample device (a 'ticker' whose worker thread changes its counter\n"
        "and memory while it runs), let it run, move it RUNNING -> STOP_COPY and read\n"
        "its state from the data fd, move a fresh ticker RUNNING -> RESUMING and\n"
        "write the state into its data fd, load it (RESUMING -> STOP), and compare\n"
        "the two devices' state digests. Then run the restored device.\n\n"
        "Options:\n"
        "  -m, --mem SIZE    device memory, with K/M/G suffix (default 1M, max 512M)\n"
        "  -r, --run-ms MS   how long the source runs first (default 200)\n"
        "  -j, --json        print the result as JSON\n"
        "  -v, --verbose     trace every arc the devices take (on stderr)\n"
        "  -h, --help        show this help\n\n"
        "Exit status: 0 the restored state is identical, 1 it is not or a step\n"
        "failed, 2 usage error.\n");
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Copies the save fd into the load fd until the end of the state.
 * Return: bytes copied, or a negative errno. */
static long long pump(int from, int to)
{
    static char buf[1 << 16];
    long long total = 0;

    for (;;) {
        ssize_t r = read(from, buf, sizeof(buf)), w = 0;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return total;
        while (w < r) {
            ssize_t n = write(to, buf + w, (size_t)(r - w));
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return -errno;
            w += n;
        }
        total += r;
    }
}

static int step(struct vfm_device *dev, uint32_t state, int *fd)
{
    uint32_t before = vfm_device_get_state(dev);
    int ret = vfm_device_set_state(dev, state, fd);

    if (ret)
        cli_error("%s: %s -> %s failed: %s (%s); device is now %s", vfm_device_name(dev),
                  vfm_state_name(before), vfm_state_name(state), vfm_strerror(ret),
                  vfm_err_name(ret), vfm_state_name(vfm_device_get_state(dev)));
    return ret;
}

static int demo_ticker(int argc, char **argv)
{
    static const struct option opts[] = {
        {"mem", required_argument, NULL, 'm'},
        {"run-ms", required_argument, NULL, 'r'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {"verbose", no_argument, NULL, 'v'},
        {"ticker", no_argument, NULL, 'T'},
        {NULL, 0, NULL, 0},
    };
    unsigned long long mem = 1 << 20, run_ms = 200;
    struct ticker *src = NULL, *dst = NULL;
    int save_fd = -1, load_fd = -1, c, rc = EXIT_FAIL;
    uint64_t src_digest, dst_digest, src_ticks, dst_ticks, later_ticks;
    long long bytes;
    double t0, t_copy;
    bool json = false;

    optind = 1;
    while ((c = getopt_long(argc, argv, "m:r:jvhT", opts, NULL)) != -1) {
        switch (c) {
        case 'T':
            break;
        case 'v':
            vfm_log_set(vfm_log_stderr, NULL, LOG_DEBUG);
            break;
        case 'm':
            if (cli_parse_size(optarg, &mem) || mem < 8 || mem > (512ull << 20))
                return cli_usage_error("demo", "bad --mem '%s' (8 bytes .. 512M)", optarg);
            break;
        case 'r':
            if (cli_parse_uint(optarg, 0, 60000, &run_ms))
                return cli_usage_error("demo", "bad --run-ms '%s' (0..60000)", optarg);
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            demo_help();
            return EXIT_OK;
        default:
            return cli_usage_error("demo", "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error("demo", "unexpected argument '%s'", argv[optind]);

    if ((c = ticker_new("ticker-src", (size_t)mem, &src)) ||
        (c = ticker_new("ticker-dst", (size_t)mem, &dst))) {
        cli_error("demo: cannot create the sample devices: %s", vfm_strerror(c));
        goto out;
    }
    if (!json)
        printf("source ticker running (%llu bytes of memory) for %llu ms...\n", mem, run_ms);
    sleep_ms((long)run_ms);

    t0 = now_ms();
    if (step(ticker_device(src), VFM_STATE_STOP_COPY, &save_fd))
        goto out;
    src_digest = ticker_digest(src);
    src_ticks = ticker_ticks(src);
    if (step(ticker_device(dst), VFM_STATE_RESUMING, &load_fd))
        goto out;
    bytes = pump(save_fd, load_fd);
    if (bytes < 0) {
        cli_error("demo: copying the state stream failed: %s", vfm_strerror((int)bytes));
        goto out;
    }
    if (step(ticker_device(dst), VFM_STATE_STOP, NULL) ||
        step(ticker_device(src), VFM_STATE_STOP, NULL))
        goto out;
    t_copy = now_ms() - t0;
    dst_digest = ticker_digest(dst);
    dst_ticks = ticker_ticks(dst);

    if (step(ticker_device(dst), VFM_STATE_RUNNING, NULL))
        goto out;
    sleep_ms(50);
    later_ticks = ticker_ticks(dst);
    rc = (src_digest == dst_digest && later_ticks > dst_ticks) ? EXIT_OK : EXIT_FAIL;

    if (json) {
        printf("{\"ok\":%s,\"bytes\":%lld,\"mem\":%llu,\"ticks\":%llu,"
               "\"source_digest\":\"%016llx\",\"restored_digest\":\"%016llx\","
               "\"save_restore_ms\":%.3f,\"ticks_after_resume\":%llu}\n",
               rc ? "false" : "true", bytes, mem, (unsigned long long)src_ticks,
               (unsigned long long)src_digest, (unsigned long long)dst_digest, t_copy,
               (unsigned long long)later_ticks);
    } else {
        printf("saved   %s: %llu ticks, %lld bytes through its data fd (RUNNING -> STOP -> "
               "STOP_COPY)\n",
               vfm_device_name(ticker_device(src)), (unsigned long long)src_ticks, bytes);
        printf("loaded  %s: RUNNING -> STOP -> RESUMING, state written, RESUMING -> STOP\n",
               vfm_device_name(ticker_device(dst)));
        printf("digest  source %016llx, restored %016llx: %s\n", (unsigned long long)src_digest,
               (unsigned long long)dst_digest,
               src_digest == dst_digest ? "identical" : "DIFFERENT");
        printf("resumed %s: %llu -> %llu ticks in 50 ms\n", vfm_device_name(ticker_device(dst)),
               (unsigned long long)dst_ticks, (unsigned long long)later_ticks);
        printf("save + restore took %.1f ms\n%s\n", t_copy,
               rc ? "FAILED: the restored device differs" : "OK: the restored device is identical");
    }
out:
    if (save_fd >= 0)
        close(save_fd);
    if (load_fd >= 0)
        close(load_fd);
    ticker_free(dst);
    ticker_free(src);
    return rc;
}

/* ---- the VM migration demo ---- */

/* One migration's figures: downtime, bytes, and the time of each phase. */
/*
 * The unsafe order, from public calls: each device migrated on its own, one
 * after the other, while the others still run and send P2P traffic into it
 * (no device waits in RUNNING_P2P for the rest): what RUNNING_P2P exists to
 * prevent. @rep: the last device's report, with every device's bytes and the
 * longest downtime.
 */
static int migrate_one_by_one(const struct vfm_mig_config *cfg, struct vfm_mig_report *rep)
{
    uint64_t bytes = 0, stream_bytes = 0;
    int64_t downtime = 0;
    int ret = 0;

    for (unsigned i = 0; i < cfg->ndev && !ret; i++) {
        struct vfm_mig_config one = *cfg;

        one.src = &cfg->src[i];
        one.dst = &cfg->dst[i];
        one.ndev = 1;
        if (i)
            vfm_mig_report_free(rep);
        ret = vfm_migrate_local(&one, rep);
        bytes += rep->bytes;
        stream_bytes += rep->stream_bytes;
        if (rep->downtime_ns > downtime)
            downtime = rep->downtime_ns;
    }
    rep->bytes = bytes;
    rep->stream_bytes = stream_bytes;
    if (!ret)
        rep->downtime_ns = downtime;
    return ret;
}

static void print_migration(const struct vfm_mig_report *rep, unsigned ndev)
{
    printf("migrated %u devices: downtime %.2f ms, %llu state bytes (%llu on the stream)\n", ndev,
           rep->downtime_ns / 1e6, (unsigned long long)rep->bytes,
           (unsigned long long)rep->stream_bytes);
    if (rep->precopy_rounds)
        printf("  %-44s %8.2f ms (before the downtime)\n", vfm_mig_phase_name(VFM_PHASE_PRECOPY),
               rep->phase_ns[VFM_PHASE_PRECOPY] / 1e6);
    for (int p = 0; p < VFM_PHASE_ROLLBACK; p++)
        printf("  %-44s %8.2f ms\n", vfm_mig_phase_name(p), rep->phase_ns[p] / 1e6);
}

struct progress {
    double t0;
    bool show;
    pid_t kill_pid; /* --kill-destination: killed when the state starts to flow */
    /* --reconfigure: once pre-copy has moved this many bytes, the guest
     * reconfigures the large device (a thread writes its register: the
     * engine calls this with its lock held) */
    uint64_t reconf_at;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool reconf_due, reconf_quit;
};

/* The guest driver's write of LG_REG_RECONFIGURE, when on_progress says. */
struct reconf {
    struct progress *p;
    struct vfm_vu_client *c; /* the large source's */
    int ret;                 /* 1: written; 0: not yet; or -errno */
};

static void *reconf_main(void *arg)
{
    struct reconf *r = arg;
    struct progress *p = r->p;
    uint64_t one = 1;
    bool due;

    pthread_mutex_lock(&p->mu);
    while (!p->reconf_due && !p->reconf_quit)
        pthread_cond_wait(&p->cv, &p->mu);
    due = p->reconf_due;
    pthread_mutex_unlock(&p->mu);
    if (due)
        r->ret = vfm_vu_client_region_write(r->c, LG_REGION_REGS, LG_REG_RECONFIGURE, &one, 8) ?: 1;
    return NULL;
}

/* Ends the reconfiguring thread (its write done, or never due), so that
 * its result may be read. */
static void reconf_join(struct progress *p, pthread_t *t, bool *started)
{
    if (!*started)
        return;
    pthread_mutex_lock(&p->mu);
    p->reconf_quit = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(*t, NULL);
    *started = false;
}

static void on_progress(void *ctx, enum vfm_mig_phase phase, uint64_t bytes, uint64_t total)
{
    struct progress *p = ctx;

    if (p->reconf_at && phase == VFM_PHASE_PRECOPY && bytes >= p->reconf_at) {
        pthread_mutex_lock(&p->mu);
        p->reconf_due = true;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
        p->reconf_at = 0;
    }

    if (p->kill_pid > 0) {
        kill(p->kill_pid, SIGKILL);
        p->kill_pid = 0;
    }
    if (p->show)
        cli_progress_line(&p->t0, phase, bytes, total);
}

/*
 * Migrated, and then device @failed of @vm (destinations when @is_dst) did
 * not answer (@err): say which, and which copy runs (@other is the other
 * side); with --json, as a failure object too.
 */
static void gone(struct vm *vm, struct vm *other, bool is_dst, int failed, int err, bool json)
{
    unsigned run = vm_running(vm), orun = vm_running(other);
    const char *side = is_dst ? "destination" : "source";
    char msg[256];

    snprintf(msg, sizeof(msg), "migrated, but %s %s no longer answers: %s", side,
             failed >= 0 ? vm->name[failed] : "?", vfm_strerror(err));
    cli_error("demo: %s", msg);
    if (run && orun)
        cli_error("demo: BOTH COPIES RUN: %u and %u devices", run, orun);
    if (json) {
        printf("{\"ok\":false,\"migrated\":true,\"error\":");
        json_str(stdout, msg);
        printf(",\"running\":\"%s\",\"counted\":false}\n",
               run && orun ? "both"
               : run       ? (is_dst ? "destinations" : "sources")
               : orun      ? (is_dst ? "sources" : "destinations")
                           : "none");
    }
}

/*
 * A migration that failed: say what each side said, find which copy runs
 * (at most one may), and count the messages of the copy that holds them —
 * the one that runs, or the stopped sources when neither does.
 * @rx: the receiver's report over a link (NULL: in-process, one report).
 * Return: the exit status: 3 when a side cannot know the outcome, else 1.
 */
static int demo_failed(struct vm *from, struct vm *to, const struct vfm_mig_report *tx,
                       const struct vfm_mig_report *rx, int rx_ret, long run_ms, bool json)
{
    bool unknown = tx->outcome_unknown || (rx && rx->outcome_unknown);
    unsigned srun, drun;
    struct vm_tally t;
    const char *running;
    struct vm *holder;
    int ret;

    cli_error("demo: migration failed: %s%s%s", tx->message[0] ? tx->message : "(no message)",
              tx->rolled_back        ? "; the sources were rolled back to RUNNING"
              : !tx->outcome_unknown ? "; no source had left RUNNING (the failure came first)"
                                     : "",
              tx->outcome_unknown ? " (the sender's outcome is unknown: sources stopped, state "
                                    "intact)"
                                  : "");
    if (rx && rx_ret)
        cli_error("demo: the receiver: %s%s", rx->message[0] ? rx->message : vfm_strerror(rx_ret),
                  rx->outcome_unknown
                      ? " (the receiver's outcome is unknown: destinations stopped, state intact)"
                      : "");
    else if (rx)
        printf("the receiver: its destinations run (it got the commit)\n");
    if (tx->sources_reset)
        cli_error("demo: %u source devices could not return to RUNNING and were reset",
                  tx->sources_reset);
    if (tx->sources_lost)
        cli_error("demo: %u source devices did not answer and could not be brought back",
                  tx->sources_lost);
    /* the copy that runs must still exchange messages, none lost */
    sleep_ms(run_ms);
    srun = vm_running(from);
    drun = vm_running(to);
    running = srun && drun ? "both" : drun ? "destinations" : srun ? "sources" : "none";
    if (srun && drun)
        cli_error("demo: BOTH COPIES RUN: %u sources and %u destinations", srun, drun);
    else if (!srun && !drun)
        cli_error("demo: no copy runs: the sources are stopped with their state%s",
                  unknown ? "; the outcome is unknown, so resuming either side is the "
                            "operator's call"
                          : "");
    holder = drun ? to : from;
    ret = vm_tally(holder, &t, srun || drun);
    if (ret)
        cli_error("demo: cannot count the messages: %s %s does not answer: %s",
                  holder == to ? "destination" : "source",
                  t.failed >= 0 ? holder->name[t.failed] : "?", vfm_strerror(ret));
    else if (!json)
        printf("%s: %llu sent, %llu consumed, %llu lost, %llu duplicated, %llu waiting\n",
               drun   ? "the destinations run (the commit was made)"
               : srun ? "after rollback, the sources ran on"
                      : "the stopped sources hold",
               (unsigned long long)t.sent, (unsigned long long)t.consumed,
               (unsigned long long)t.lost, (unsigned long long)t.duplicated,
               (unsigned long long)t.waiting);
    if (json) {
        printf("{\"ok\":false,\"error\":");
        json_str(stdout, tx->message);
        printf(",\"receiver_error\":");
        json_str(stdout, rx && rx_ret ? rx->message : "");
        printf(",\"rolled_back\":%s,\"sender_outcome_unknown\":%s,"
               "\"receiver_outcome_unknown\":%s,\"committed\":%s,\"running\":\"%s\","
               "\"counted\":%s",
               tx->rolled_back ? "true" : "false", tx->outcome_unknown ? "true" : "false",
               rx && rx->outcome_unknown ? "true" : "false", tx->committed ? "true" : "false",
               running, ret ? "false" : "true");
        if (!ret)
            printf(",\"sent\":%llu,\"consumed\":%llu,\"waiting\":%llu,\"lost\":%llu,"
                   "\"duplicated\":%llu,\"corrupted_inboxes\":%u",
                   (unsigned long long)t.sent, (unsigned long long)t.consumed,
                   (unsigned long long)t.waiting, (unsigned long long)t.lost,
                   (unsigned long long)t.duplicated, t.corrupted);
        printf("}\n");
    }
    if (srun && drun)
        return EXIT_FAIL;
    return unknown ? EXIT_UNKNOWN : EXIT_FAIL;
}

/* ---- guest RAM: figures over the migrations, and the rings' verdict ---- */

struct ram_figures {
    unsigned migrations;
    unsigned rounds;         /* pre-copy rounds, all migrations */
    uint64_t precopy_bytes;  /* RAM bytes sent while the VM ran */
    uint64_t downtime_pages; /* RAM pages sent in the downtimes */
    unsigned logged;         /* sources whose log was used (the last migration) */
    bool all_equal;          /* every migration's RAM equal at the destination */
};

/* One migration's RAM figures (@rx: the receiver's report over a link). */
static void ram_add(struct ram_figures *f, const struct vfm_mig_report *tx,
                    const struct vfm_mig_report *rx)
{
    bool equal = rx ? rx->ram_match : tx->ram_match;

    f->all_equal = (f->migrations == 0 || f->all_equal) && equal;
    f->migrations++;
    f->rounds += tx->precopy_rounds;
    f->precopy_bytes += tx->ram_precopy_bytes;
    f->downtime_pages += tx->ram_downtime_pages;
    f->logged = tx->ram_logged;
}

static void ram_print(const struct vfm_mig_report *tx, const struct vfm_mig_report *rx,
                      bool untracked)
{
    bool equal = rx ? rx->ram_match : tx->ram_match;

    printf("  guest RAM: %u pre-copy round%s moved %.1f MiB while the VM ran (%llu pages); %llu "
           "pages (%.1f KiB) in the downtime, %s\n",
           tx->precopy_rounds, tx->precopy_rounds == 1 ? "" : "s",
           tx->ram_precopy_bytes / 1048576.0, (unsigned long long)tx->ram_precopy_pages,
           (unsigned long long)tx->ram_downtime_pages, tx->ram_downtime_pages * 4.0,
           untracked        ? "no device dirty log asked for (--no-dirty-log)"
           : tx->ram_logged ? "from the devices' dirty logs"
                            : "no device kept a dirty log");
    printf("  guest RAM: digest %016llx at the source's stop; at the destination %s\n",
           (unsigned long long)tx->ram_digest,
           equal ? "the same" : "DIFFERENT (pages the devices wrote were not sent again)");
}

static void ring_print(const struct vm_ring_tally *t, const struct ram_figures *f, bool large)
{
    printf("rings in guest RAM: %llu records checked%s: %llu lost, %llu gaps, %llu messages "
           "consumed but not in a ring%s%s; RAM %s after %s\n",
           (unsigned long long)t->records,
           t->wrapped ? " (the last lap of rings that wrapped)" : "", (unsigned long long)t->bad,
           (unsigned long long)t->gaps, (unsigned long long)t->missing,
           large ? "; the large device's result record " : "",
           large ? (t->result_ok ? "consistent" : "INCONSISTENT") : "",
           f->all_equal ? "equal" : "DIFFERENT",
           !f->all_equal       ? "a migration"
           : f->migrations > 1 ? "every migration"
                               : "the migration");
}

/* Ring records lost: slots without their record, or (a ring that did
 * not wrap) messages consumed that no slot holds: the same records, seen
 * twice, so the larger of the two. */
static uint64_t ring_lost(const struct vm_ring_tally *t)
{
    return t->bad > t->missing ? t->bad : t->missing;
}

static void ram_json(const struct ram_figures *f, const struct vm_ring_tally *t,
                     unsigned long long size, bool untracked)
{
    printf(",\"ram\":{\"size\":%llu,\"dirty_log\":%s,\"logged_sources\":%u,"
           "\"precopy_rounds\":%u,\"precopy_bytes\":%llu,\"downtime_pages\":%llu,"
           "\"equal\":%s,\"ring_records\":%llu,\"ring_lost\":%llu,\"ring_gaps\":%llu,"
           "\"ring_missing\":%llu,\"result_ok\":%s}",
           size, untracked ? "false" : "true", f->logged, f->rounds,
           (unsigned long long)f->precopy_bytes, (unsigned long long)f->downtime_pages,
           f->all_equal ? "true" : "false", (unsigned long long)t->records,
           (unsigned long long)t->bad, (unsigned long long)t->gaps, (unsigned long long)t->missing,
           t->result_ok ? "true" : "false");
}

int cmd_demo(int argc, char **argv)
{
    enum {
        OPT_UNSAFE = 256,
        OPT_MIX,
        OPT_FAIL,
        OPT_KILL,
        OPT_PINGPONG,
        OPT_LARGE,
        OPT_RATE,
        OPT_NO_PRECOPY,
        OPT_LIMIT,
        OPT_LINK,
        OPT_VIA,
        OPT_TLS,
        OPT_STREAMS,
        OPT_TIMEOUT,
        OPT_MAX_DOWNTIME,
        OPT_RAM,
        OPT_NO_DIRTY_LOG,
        OPT_RECONFIGURE
    };
    static const struct option opts[] = {
        {"devices", required_argument, NULL, 'n'},
        {"run-ms", required_argument, NULL, 'r'},
        {"unsafe-order", no_argument, NULL, OPT_UNSAFE},
        {"mix", no_argument, NULL, OPT_MIX},
        {"trace", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"ticker", no_argument, NULL, 'T'},
        {"mem", required_argument, NULL, 'm'},
        {"fail-at", required_argument, NULL, OPT_FAIL},
        {"kill-destination", required_argument, NULL, OPT_KILL},
        {"ping-pong", required_argument, NULL, OPT_PINGPONG},
        {"large", required_argument, NULL, OPT_LARGE},
        {"dirty-rate", required_argument, NULL, OPT_RATE},
        {"no-precopy", no_argument, NULL, OPT_NO_PRECOPY},
        {"downtime-limit", required_argument, NULL, OPT_LIMIT},
        {"link", required_argument, NULL, OPT_LINK},
        {"via", required_argument, NULL, OPT_VIA},
        {"tls", no_argument, NULL, OPT_TLS},
        {"streams", required_argument, NULL, OPT_STREAMS},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"max-downtime", required_argument, NULL, OPT_MAX_DOWNTIME},
        {"ram", required_argument, NULL, OPT_RAM},
        {"no-dirty-log", no_argument, NULL, OPT_NO_DIRTY_LOG},
        {"reconfigure", no_argument, NULL, OPT_RECONFIGURE},
        {NULL, 0, NULL, 0},
    };
    struct vm_large large = {.mem = NULL, .rate = "1%"};
    bool no_precopy = false, compare = false;
    double dt_ms[2] = {0, 0};
    unsigned pc_rounds = 0;
    uint64_t pc_bytes = 0;
    unsigned long long n = 4, run_ms = 300, rounds = 1;
    long kill_dst = -1;
    bool unsafe = false, mix = false, json = false, no_p2p[VM_MAX] = {0};
    const char *trace = NULL;
    char dir[] = "/tmp/vfiomig-demo-XXXXXX";
    struct vm src, dst;
    struct vfm_mig_config cfg = {.version = VFM_MIG_CONFIG_VERSION, .switchover_ack = true};
    struct vfm_endpoint *sv[VM_MAX + 1], *dv[VM_MAX + 1], *faulty = NULL;
    struct vm *mig_from = NULL;
    int fail_side = -1;
    unsigned fail_dev = 0;
    uint32_t fail_state = 0;
    struct vfm_mig_report rep, rxrep;
    FILE *say;
    struct demo_link dl = {0};
    bool linked = false;
    int rx_ret = 0;
    struct vm_tally tally;
    struct vm *final;
    struct progress prog;
    double downtime_sum = 0, downtime_max = 0;
    int c, ret, rc = EXIT_FAIL;
    bool trace_failed = false;
    unsigned long long ram_size = 32ull << 20;
    struct vfm_mig_ram sram, dram;
    struct ram_figures rf = {0};
    struct vm_ring_tally rt = {.failed = -1, .result_ok = true};
    bool reconfigure = false;
    struct reconf rc_job = {0};
    pthread_t rc_thread;
    bool rc_started = false;
    unsigned reinits = 0;
    uint64_t pc_after = 0;

    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--ticker"))
            return demo_ticker(argc, argv);
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:r:t:jvh", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (cli_parse_uint(optarg, 1, VM_MAX, &n))
                return cli_usage_error("demo", "bad --devices '%s' (1..64)", optarg);
            break;
        case 'r':
            if (cli_parse_uint(optarg, 0, 60000, &run_ms))
                return cli_usage_error("demo", "bad --run-ms '%s' (0..60000)", optarg);
            break;
        case OPT_UNSAFE:
            unsafe = true;
            break;
        case OPT_MIX:
            mix = true;
            break;
        case 't':
            trace = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'v':
            vfm_log_set(vfm_log_stderr, NULL, LOG_DEBUG);
            break;
        case 'h':
            demo_help();
            return EXIT_OK;
        case 'm':
            return cli_usage_error("demo", "--mem goes with --ticker");
        case OPT_FAIL: {
            char side[16], st[32];
            unsigned dev;
            if (sscanf(optarg, "%15[a-z]:%u:%31s", side, &dev, st) != 3 ||
                (strcmp(side, "source") && strcmp(side, "destination")) ||
                vfm_state_parse(st, &fail_state))
                return cli_usage_error("demo", "bad --fail-at '%s' (source|destination:N:STATE)",
                                       optarg);
            fail_side = side[0] == 'd';
            fail_dev = dev;
            break;
        }
        case OPT_KILL: {
            unsigned long long k;
            if (cli_parse_uint(optarg, 0, VM_MAX - 1, &k))
                return cli_usage_error("demo", "bad --kill-destination '%s'", optarg);
            kill_dst = (long)k;
            break;
        }
        case OPT_PINGPONG:
            if (cli_parse_uint(optarg, 1, 1000, &rounds))
                return cli_usage_error("demo", "bad --ping-pong '%s' (1..1000)", optarg);
            break;
        case OPT_LARGE: {
            unsigned long long sz;
            if (cli_parse_size(optarg, &sz) || sz < 4096 || sz > (1ull << 30) || sz % 4096)
                return cli_usage_error("demo", "bad --large '%s' (4K .. 1G, whole pages)", optarg);
            large.mem = optarg;
            break;
        }
        case OPT_RATE: {
            unsigned long long r;
            if (cli_parse_rate(optarg, 1ull << 30, &r))
                return cli_usage_error("demo", "bad --dirty-rate '%s' (e.g. 4M, 1%%)", optarg);
            large.rate = optarg;
            break;
        }
        case OPT_NO_PRECOPY:
            no_precopy = true;
            break;
        case OPT_LIMIT: {
            unsigned long long ms;
            if (cli_parse_uint(optarg, 1, 600000, &ms))
                return cli_usage_error("demo", "bad --downtime-limit '%s'", optarg);
            cfg.downtime_limit_ms = (uint32_t)ms;
            break;
        }
        case OPT_LINK:
            dl.listen = optarg;
            break;
        case OPT_VIA:
            dl.via = optarg;
            break;
        case OPT_TLS:
            dl.tls = true;
            break;
        case OPT_STREAMS: {
            unsigned long long v;
            if (cli_parse_uint(optarg, 1, VFM_MIG_MAX_STREAMS, &v))
                return cli_usage_error("demo", "bad --streams '%s' (1..%u)", optarg,
                                       VFM_MIG_MAX_STREAMS);
            cfg.nstreams = (unsigned)v;
            break;
        }
        case OPT_TIMEOUT:
            if (cli_parse_timeout(optarg, &cfg.timeout_ms))
                return cli_usage_error("demo", "bad --timeout '%s'", optarg);
            break;
        case OPT_RAM:
            if (cli_parse_size(optarg, &ram_size) ||
                (ram_size && (ram_size < VM_RAM_MIN || ram_size > VM_RAM_MAX || ram_size % 4096)))
                return cli_usage_error("demo", "bad --ram '%s' (0, or 4M .. 1G in whole pages)",
                                       optarg);
            break;
        case OPT_NO_DIRTY_LOG:
            cfg.ram_untracked = true;
            break;
        case OPT_RECONFIGURE:
            reconfigure = true;
            break;
        case OPT_MAX_DOWNTIME: {
            unsigned long long ms;
            if (cli_parse_uint(optarg, 0, 86400000, &ms))
                return cli_usage_error("demo", "bad --max-downtime '%s' (0..86400000)", optarg);
            cfg.max_downtime_ms = (unsigned)ms;
            break;
        }
        default:
            return cli_usage_error("demo", "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error("demo", "unexpected argument '%s'", argv[optind]);
    if (unsafe && fail_side >= 0)
        return cli_usage_error("demo", "--fail-at goes with the safe order only");
    if (unsafe && cfg.ram_untracked)
        return cli_usage_error("demo", "--no-dirty-log and --unsafe-order show one loss at a time");
    if (unsafe)
        ram_size = 0; /* one device at a time cannot move a RAM the others write */
    if (reconfigure && (!large.mem || no_precopy || unsafe))
        return cli_usage_error("demo", "--reconfigure needs --large with pre-copy");
    if (cfg.ram_untracked && !ram_size)
        return cli_usage_error("demo", "--no-dirty-log needs guest RAM (--ram)");
    linked = dl.listen || dl.via || dl.tls;
    if (linked && unsafe)
        return cli_usage_error("demo", "--unsafe-order migrates in-process only");
    if (cfg.nstreams > 1 && (dl.via || unsafe))
        return cli_usage_error("demo", "--streams goes with neither --via (a relay of one "
                                       "connection) nor --unsafe-order");
    if (dl.via && !dl.listen)
        return cli_usage_error("demo", "--via needs --link: the address the relay forwards to");
    if (dl.via && (rounds > 1 || (large.mem && !no_precopy)))
        return cli_usage_error("demo", "--via is for one migration (no --ping-pong, and "
                                       "--no-precopy with --large)");
    if (trace && (ret = cli_can_create(trace))) {
        cli_error("demo: cannot write the trace %s: %s", trace, vfm_strerror(ret));
        return EXIT_FAIL;
    }
    if (kill_dst >= (long)n + (large.mem ? 1 : 0) ||
        (fail_side >= 0 && fail_dev >= n + (large.mem ? 1 : 0)))
        return cli_usage_error("demo", "a device index is past --devices%s",
                               large.mem ? " (the large device is the last)" : "");
    for (unsigned i = 0; i < n; i++)
        no_p2p[i] = mix && (i % 2);
    /* with a large device and pre-copy: a second run, back, without it */
    compare = large.mem && !no_precopy && !unsafe && rounds == 1;
    if (compare)
        rounds = 2;
    if (!mkdtemp(dir)) {
        cli_error("demo: cannot create a directory for the sockets: %s", strerror(errno));
        return EXIT_FAIL;
    }
    memset(&src, 0, sizeof(src));
    memset(&dst, 0, sizeof(dst));
    memset(&rxrep, 0, sizeof(rxrep));
    dl.dir = dir;
    if (linked && demo_link_setup(&dl)) {
        rmdir(dir);
        return EXIT_FAIL;
    }
    /* progress: on stdout, or with --json on stderr (stdout is the JSON's) */
    say = json ? stderr : stdout;
    fprintf(say, "starting %llu p2p-mailbox device processes and %llu destinations%s...\n", n, n,
            mix ? " (every second one without P2P)" : "");
    if (large.mem)
        fprintf(say, "and a large-state device with %s of memory dirtied at %s per second\n",
                large.mem, large.rate);
    if (ram_size)
        fprintf(say, "with %llu MiB of guest RAM (a shared memfd) DMA-mapped by every device\n",
                ram_size >> 20);
    if ((ret = vm_start(&src, dir, "src", (unsigned)n, no_p2p, large.mem ? &large : NULL,
                        ram_size)) ||
        (ret = vm_start(&dst, dir, "dst", (unsigned)n, no_p2p, large.mem ? &large : NULL,
                        ram_size)) ||
        (ret = vm_wire(&src, false)) || (ret = vm_wire(&dst, true))) {
        cli_error("demo: cannot set up the device processes: %s", vfm_strerror(ret));
        if (json) {
            printf("{\"ok\":false,\"migrated\":false,\"error\":\"cannot set up the device "
                   "processes: %s\",\"running\":\"none\",\"counted\":false}\n",
                   vfm_strerror(ret));
        }
        goto out;
    }
    fprintf(say, "VM running: every device writes into every other's inbox for %llu ms\n", run_ms);
    fflush(say);
    sleep_ms((long)run_ms);

    cfg.ndev = (unsigned)n + src.nlarge;
    memset(&prog, 0, sizeof(prog));
    prog.show = !json && isatty(2);
    prog.kill_pid = kill_dst >= 0 ? dst.pid[kill_dst] : 0;
    pthread_mutex_init(&prog.mu, NULL);
    pthread_cond_init(&prog.cv, NULL);
    if (reconfigure) {
        /* halfway through the large device's first pre-copy pass */
        unsigned long long sz = 0;
        cli_parse_size(large.mem, &sz);
        prog.reconf_at = sz / 2;
        rc_job.p = &prog;
        rc_job.c = src.c[src.n];
        if (pthread_create(&rc_thread, NULL, reconf_main, &rc_job) == 0)
            rc_started = true;
    }
    if (prog.show || prog.kill_pid || prog.reconf_at) {
        cfg.progress = on_progress;
        cfg.progress_ctx = &prog;
    }
    memset(&rep, 0, sizeof(rep));
    for (unsigned long long k = 0; k < rounds; k++) {
        struct vm *from = k % 2 ? &dst : &src, *to = k % 2 ? &src : &dst;
        memcpy(sv, from->ep, sizeof(sv));
        memcpy(dv, to->ep, sizeof(dv));
        if (fail_side >= 0 && k == 0) {
            /* that device refuses that state: the tests' fault injector */
            struct vfm_endpoint **slot = fail_side ? &dv[fail_dev] : &sv[fail_dev];
            if ((ret = fault_ep_new(*slot, fail_state, &faulty))) {
                cli_error("demo: %s", vfm_strerror(ret));
                goto out;
            }
            *slot = faulty;
        }
        cfg.src = sv;
        cfg.dst = dv;
        mig_from = from;
        if (ram_size) {
            vm_ram_range(from, &sram);
            vm_ram_range(to, &dram);
            cfg.ram = &sram;
            cfg.dst_ram = &dram;
            cfg.nram = 1;
        }
        cfg.no_precopy = no_precopy || unsafe || (compare && k == 1);
        fprintf(say, "migrating%s %s...\n", rounds > 1 ? (k % 2 ? " back" : " there") : "",
                unsafe           ? "in the UNSAFE order (one by one, no RUNNING_P2P)"
                : !large.mem     ? "(all to RUNNING_P2P first, then STOP_COPY)"
                : cfg.no_precopy ? "without pre-copy (all to RUNNING_P2P, then STOP_COPY)"
                                 : "with pre-copy (PRE_COPY rounds while running, then all "
                                   "to RUNNING_P2P / PRE_COPY_P2P, then STOP_COPY)");
        vfm_mig_report_free(&rep);
        vfm_mig_report_free(&rxrep);
        if (linked && k == 0)
            fprintf(say, "the stream goes over %s%s, committed by both sides\n",
                    dl.listen ? dl.listen : "TCP loopback",
                    dl.tls ? " with TLS (a pre-shared key made for this run)" : "");
        if (cfg.nstreams > 1 && k == 0)
            fprintf(say,
                    "the state goes over %u streams%s: device i's on stream i mod %u, each "
                    "stream's devices loaded by their own receiving thread\n",
                    cfg.nstreams, linked ? " (connections)" : "", cfg.nstreams);
        if (unsafe)
            ret = migrate_one_by_one(&cfg, &rep);
        else if (linked) {
            ret = demo_link_migrate(&dl, &cfg, &rep, &rxrep, &rx_ret);
            ret = ret ? ret : rx_ret;
        } else
            ret = vfm_migrate_local(&cfg, &rep);
        vfm_ep_free(faulty);
        faulty = NULL;
        if (prog.show)
            fprintf(stderr, "\n");
        if (ret)
            break;
        if (ram_size) {
            ram_add(&rf, &rep, linked ? &rxrep : NULL);
            if (!json)
                ram_print(&rep, linked ? &rxrep : NULL, cfg.ram_untracked);
        }
        if (large.mem) {
            uint64_t saved = 0, loaded = 0, unused;
            if ((ret = vm_large_digests(from, &saved, &unused))) {
                gone(from, to, from == &dst, (int)from->n, ret, json);
                goto out_report;
            }
            if ((ret = vm_large_digests(to, &unused, &loaded))) {
                gone(to, from, to == &dst, (int)to->n, ret, json);
                goto out_report;
            }
            if (saved != loaded) {
                cli_error("demo: the large device's state differs after migration %llu: digest "
                          "%016llx at the source, %016llx restored",
                          k + 1, (unsigned long long)saved, (unsigned long long)loaded);
                ret = ret ? ret : -EIO;
                goto out_report;
            }
            if (!json) {
                print_migration(&rep, cfg.ndev);
                char v[256];
                if (rep.precopy_devices)
                    printf("  pre-copy rounds: %u (%s); %.1f MiB sent while the VM ran, %.1f MiB "
                           "after the switchover\n",
                           rep.precopy_rounds, cli_precopy_verdict(&rep, v, sizeof(v)),
                           rep.precopy_bytes / 1048576.0,
                           (rep.bytes - rep.precopy_bytes) / 1048576.0);
                printf("  large device: digest %016llx at the source's stop, the same after the "
                       "load\n",
                       (unsigned long long)saved);
            }
            if (k < 2)
                dt_ms[k] = rep.downtime_ns / 1e6;
            if (reconfigure && k == 0) {
                reconf_join(&prog, &rc_thread, &rc_started);
                reinits = rep.precopy_reinits;
                if (rc_job.ret != 1 || !reinits) {
                    cli_error("demo: --reconfigure: %s",
                              rc_job.ret < 0    ? vfm_strerror(rc_job.ret)
                              : rc_job.ret == 0 ? "pre-copy ended before the reconfiguration"
                                                : "the source announced no new initial data");
                    ret = -EIO;
                    goto out_report;
                }
                if (!json)
                    printf("  the guest reconfigured the large device halfway through pre-copy: "
                           "it announced new initial data (REINIT, %u) and the switchover "
                           "waited until all of it was across\n",
                           reinits);
            }
            if (rep.precopy_devices) {
                pc_after = rep.bytes - rep.precopy_bytes;
                pc_rounds = rep.precopy_rounds;
                pc_bytes = rep.precopy_bytes;
            }
        }
        downtime_sum += rep.downtime_ns / 1e6;
        if (rep.downtime_ns / 1e6 > downtime_max)
            downtime_max = rep.downtime_ns / 1e6;
        if (k + 1 < rounds)
            sleep_ms((long)(run_ms / 4));
    }
    final = rounds % 2 ? &dst : &src;
    if (ret) {
        rc = demo_failed(mig_from, mig_from == &src ? &dst : &src, &rep, linked ? &rxrep : NULL,
                         rx_ret, (long)run_ms, json);
        goto out_report;
    }
    if (trace && (ret = vfm_mig_trace_write(&rep, trace))) {
        cli_error("demo: cannot write the trace %s: %s", trace, vfm_strerror(ret));
        trace_failed = true;
    }
    sleep_ms((long)run_ms);
    if (!(ret = vm_check(final, &tally))) {
        /* every device of the running copy answers, the large one too (the
         * counters cover the mailboxes only) */
        for (unsigned i = 0; i < final->n + final->nlarge && !ret; i++) {
            uint32_t st;
            if ((ret = vfm_ep_get_state(final->ep[i], &st)))
                tally.failed = (int)i;
        }
    }
    if (!ret && (ret = vm_ring_check(final, &rt)))
        tally.failed = rt.failed;
    if (ret) {
        /* migrated, and then a device of the running copy went away */
        gone(final, final == &dst ? &src : &dst, final == &dst, tally.failed, ret, json);
        goto out_report;
    }
    rc = tally.lost || tally.duplicated || tally.corrupted || trace_failed || rt.bad || rt.gaps ||
                 rt.missing || !rt.result_ok || (ram_size && !rf.all_equal)
             ? EXIT_FAIL
             : EXIT_OK;
    if (json) {
        printf("{\"ok\":%s,\"devices\":%llu,\"unsafe_order\":%s,\"mix\":%s,"
               "\"sent\":%llu,\"consumed\":%llu,\"waiting\":%llu,\"lost\":%llu,\"duplicated\":%llu,"
               "\"corrupted_inboxes\":%u,\"downtime_ms\":%.3f,\"phases_ms\":{",
               rc ? "false" : "true", n, unsafe ? "true" : "false", mix ? "true" : "false",
               (unsigned long long)tally.sent, (unsigned long long)tally.consumed,
               (unsigned long long)tally.waiting, (unsigned long long)tally.lost,
               (unsigned long long)tally.duplicated, tally.corrupted, rep.downtime_ns / 1e6);
        for (int p = 0; p < VFM_PHASE_ROLLBACK; p++)
            printf("%s\"%d\":%.3f", p ? "," : "", p, rep.phase_ns[p] / 1e6);
        printf("},\"bytes\":%llu,\"stream_bytes\":%llu,\"spliced_bytes\":%llu,\"streams\":%u,"
               "\"migrations\":%llu,"
               "\"downtime_ms_mean\":%.3f,\"downtime_ms_max\":%.3f",
               (unsigned long long)rep.bytes, (unsigned long long)rep.stream_bytes,
               (unsigned long long)rep.spliced_bytes, rep.nstreams ? rep.nstreams : 1, rounds,
               downtime_sum / (double)rounds, downtime_max);
        if (ram_size)
            ram_json(&rf, &rt, ram_size, cfg.ram_untracked);
        if (large.mem) {
            printf(",\"large\":{\"mem\":");
            json_str(stdout, large.mem);
            printf(",\"dirty_rate\":");
            json_str(stdout, large.rate);
            printf(",\"precopy_rounds\":%u,\"precopy_bytes\":%llu,\"downtime_ms\":%.3f,"
                   "\"reinits\":%u,\"bytes_after_switchover\":%llu",
                   pc_rounds, (unsigned long long)pc_bytes, dt_ms[0], reinits,
                   (unsigned long long)pc_after);
            if (compare)
                printf(",\"downtime_ms_without_precopy\":%.3f", dt_ms[1]);
            printf("}");
        }
        printf("}\n");
    } else {
        if (rounds > 1)
            printf("%llu migrations back and forth: downtime mean %.2f ms, max %.2f ms\n", rounds,
                   downtime_sum / (double)rounds, downtime_max);
        if (compare)
            printf("downtime of the same VM: %.2f ms with pre-copy, %.2f ms without: %.1fx "
                   "lower\n(both include the large device's self-check: a digest of all its "
                   "memory at the source's stop and after the load)\n",
                   dt_ms[0], dt_ms[1], dt_ms[0] > 0 ? dt_ms[1] / dt_ms[0] : 0.0);
        if (!large.mem)
            print_migration(&rep, cfg.ndev);
        printf("messages: %llu sent, %llu consumed, %llu waiting in stopped inboxes, %llu lost, "
               "%llu duplicated\n",
               (unsigned long long)tally.sent, (unsigned long long)tally.consumed,
               (unsigned long long)tally.waiting, (unsigned long long)tally.lost,
               (unsigned long long)tally.duplicated);
        if (tally.corrupted)
            printf("%u inboxes corrupted: a peer wrote into them while their state was being "
                   "saved\n",
                   tally.corrupted);
        if (ram_size)
            ring_print(&rt, &rf, large.mem != NULL);
        if (rc && unsafe)
            printf("LOST %llu messages: devices stopped one by one kept writing into peers whose "
                   "state was already saved.\nThis is what RUNNING_P2P prevents: run without "
                   "--unsafe-order.\n",
                   (unsigned long long)tally.lost);
        else if (rc && cfg.ram_untracked)
            printf("LOST %llu ring records: the devices wrote them into guest RAM after its pages "
                   "were copied,\nand without their dirty logs the VMM never sent those pages "
                   "again. Run without --no-dirty-log.\n",
                   (unsigned long long)ring_lost(&rt));
        else if (rc)
            printf("FAILED: %llu messages lost, %llu duplicated; %llu ring records lost\n",
                   (unsigned long long)tally.lost, (unsigned long long)tally.duplicated,
                   (unsigned long long)ring_lost(&rt));
        else
            printf("OK: every message sent on either side was consumed exactly once%s\n",
                   ram_size ? ", and is in its consumer's ring in guest RAM" : "");
    }
out_report:
    vfm_mig_report_free(&rep);
    vfm_mig_report_free(&rxrep);
out:
    reconf_join(&prog, &rc_thread, &rc_started);
    vm_stop(&src);
    vm_stop(&dst);
    demo_link_free(&dl);
    rmdir(dir);
    return rc;
}
