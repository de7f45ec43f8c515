/* SPDX-License-Identifier: MIT */
/*
 * vfiomig demo — save a running sample device (the ticker of
 * docs/device-guide.md) and restore it into a fresh one, through the real
 * data fds the device runtime gives, then show both states identical.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <vfiomig/device.h>

#include "cli.h"
#include "ticker.h"

static void demo_help(void)
{
    printf("Usage: vfiomig demo [--mem SIZE] [--run-ms MS] [--json] [--verbose]\n\n"
           "Start a sample device (a 'ticker' whose worker thread changes its counter\n"
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

int cmd_demo(int argc, char **argv)
{
    static const struct option opts[] = {
        {"mem", required_argument, NULL, 'm'}, {"run-ms", required_argument, NULL, 'r'},
        {"json", no_argument, NULL, 'j'},      {"help", no_argument, NULL, 'h'},
        {"verbose", no_argument, NULL, 'v'},   {NULL, 0, NULL, 0},
    };
    unsigned long long mem = 1 << 20, run_ms = 200;
    struct ticker *src = NULL, *dst = NULL;
    int save_fd = -1, load_fd = -1, c, rc = EXIT_FAIL;
    uint64_t src_digest, dst_digest, src_ticks, dst_ticks, later_ticks;
    long long bytes;
    double t0, t_copy;
    bool json = false;
    char *end;

    optind = 1;
    while ((c = getopt_long(argc, argv, "m:r:jvh", opts, NULL)) != -1) {
        switch (c) {
        case 'v':
            vfm_log_set(vfm_log_stderr, NULL, LOG_DEBUG);
            break;
        case 'm':
            if (cli_parse_size(optarg, &mem) || mem < 8 || mem > (512ull << 20))
                return cli_usage_error("demo", "bad --mem '%s' (8 bytes .. 512M)", optarg);
            break;
        case 'r':
            run_ms = strtoull(optarg, &end, 10);
            if (*optarg < '0' || *optarg > '9' || *end || run_ms > 60000)
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
