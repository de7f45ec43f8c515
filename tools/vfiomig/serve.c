/* SPDX-License-Identifier: MIT */
/* vfiomig serve — a sample device as a vfio-user server process. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <syslog.h>
#include <unistd.h>

#include <vfiomig/vfio_user.h>

#include "cli.h"
#include "large.h"
#include "mailbox.h"
#include "ticker.h"

static struct vfm_server *the_server;

static void on_signal(int sig)
{
    (void)sig;
    if (the_server)
        vfm_server_stop(the_server);
}

static void serve_help(void)
{
    printf("Usage: vfiomig serve --device TYPE --socket PATH [options]\n\n"
           "Run a sample device as a vfio-user server in the foreground, one client at a\n"
           "time, until SIGINT or SIGTERM. The socket is created with mode 0600.\n\n"
           "Devices:\n"
           "  p2p-mailbox   sends sequence-numbered messages into its peers' inboxes\n"
           "                (shared-memory BARs mapped with DMA_MAP); STOP_COPY|P2P\n"
           "  ticker        the device guide's example; its state is --mem bytes\n"
           "  large         --mem bytes of device memory (default 256M) that its worker\n"
           "                dirties at --dirty-rate while running, with dirty tracking;\n"
           "                STOP_COPY|P2P|PRE_COPY; its restored state checks itself\n\n"
           "Options:\n"
           "  -d, --device TYPE     p2p-mailbox, ticker or large (required)\n"
           "  -s, --socket PATH     where to listen (required)\n"
           "  -n, --name NAME       the device's name in messages (default: TYPE)\n"
           "      --no-p2p          p2p-mailbox, large: no P2P capability\n"
           "  -m, --mem SIZE        ticker: state size, K/M/G suffix (default 1M);\n"
           "                        large: device memory (default 256M, max 1G)\n"
           "      --dirty-rate RATE large: bytes dirtied per second while running, with\n"
           "                        K/M/G suffix, or a percentage of --mem (default 1%%)\n"
           "      --page SIZE       large: dirty-tracking granularity (default 4K)\n"
           "      --load-in-place   large: keep a staging buffer the runtime receives a\n"
           "                        final state into (no fresh memory per load; a whole\n"
           "                        memory is swapped in, not copied). Saves go in\n"
           "                        pieces straight from the device's memory either way\n"
           "      --max-xfer SIZE   max_data_xfer_size to offer (default 1M, max 64M)\n"
           "  -v, --verbose         log every message and state change on stderr\n"
           "  -h, --help            show this help\n\n"
           "Exit status: 0 after a clean shutdown, 1 on failure, 2 usage error.\n");
}

int cmd_serve(int argc, char **argv)
{
    enum { OPT_NO_P2P = 256, OPT_MAX_XFER, OPT_RATE, OPT_PAGE, OPT_IN_PLACE };
    static const struct option opts[] = {
        {"device", required_argument, NULL, 'd'},
        {"socket", required_argument, NULL, 's'},
        {"name", required_argument, NULL, 'n'},
        {"no-p2p", no_argument, NULL, OPT_NO_P2P},
        {"mem", required_argument, NULL, 'm'},
        {"max-xfer", required_argument, NULL, OPT_MAX_XFER},
        {"dirty-rate", required_argument, NULL, OPT_RATE},
        {"page", required_argument, NULL, OPT_PAGE},
        {"load-in-place", no_argument, NULL, OPT_IN_PLACE},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *type = NULL, *path = NULL, *name = NULL;
    unsigned long long mem = 0, xfer = 0, page = 4096, rate = 0;
    const char *rate_arg = "1%";
    bool p2p = true, in_place = false;
    struct vfm_server_config cfg = {0};
    struct mailbox *mb = NULL;
    struct ticker *tk = NULL;
    struct large *lg = NULL;
    struct vfm_dma *dma = NULL;
    int c, ret, rc = EXIT_FAIL;

    optind = 1;
    while ((c = getopt_long(argc, argv, "d:s:n:m:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            type = optarg;
            break;
        case 's':
            path = optarg;
            break;
        case 'n':
            name = optarg;
            break;
        case OPT_NO_P2P:
            p2p = false;
            break;
        case 'm':
            if (cli_parse_size(optarg, &mem) || mem < 8 || mem > (1ull << 30))
                return cli_usage_error("serve", "bad --mem '%s' (8 bytes .. 1G)", optarg);
            break;
        case OPT_RATE:
            rate_arg = optarg;
            break;
        case OPT_IN_PLACE:
            in_place = true;
            break;
        case OPT_PAGE:
            if (cli_parse_size(optarg, &page) || page < 512 || page > (2u << 20) ||
                (page & (page - 1)))
                return cli_usage_error("serve", "bad --page '%s' (a power of two, 512 .. 2M)",
                                       optarg);
            break;
        case OPT_MAX_XFER:
            if (cli_parse_size(optarg, &xfer) || xfer < 4096 || xfer > VFM_VU_MAX_XFER_LIMIT)
                return cli_usage_error("serve", "bad --max-xfer '%s' (4K .. 64M)", optarg);
            break;
        case 'v':
            vfm_log_set(vfm_log_stderr, NULL, LOG_DEBUG);
            break;
        case 'h':
            serve_help();
            return EXIT_OK;
        default:
            return cli_usage_error("serve", "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error("serve", "unexpected argument '%s'", argv[optind]);
    if (!type || !path)
        return cli_usage_error("serve", "--device and --socket are required");
    if (strcmp(type, "p2p-mailbox") && strcmp(type, "ticker") && strcmp(type, "large"))
        return cli_usage_error("serve", "unknown device '%s' (p2p-mailbox, ticker, large)", type);
    if (!name)
        name = type;
    if (!mem)
        mem = !strcmp(type, "large") ? 256ull << 20 : 1ull << 20;
    if (!strcmp(type, "large")) {
        if (mem % page)
            return cli_usage_error("serve", "--mem must be a multiple of --page (%llu)", page);
        if (cli_parse_rate(rate_arg, mem, &rate))
            return cli_usage_error("serve", "bad --dirty-rate '%s' (e.g. 4M, 1%%)", rate_arg);
    }

    ret = vfm_dma_new(1024, &dma);
    if (!ret && !strcmp(type, "p2p-mailbox")) {
        ret = mailbox_new(name, p2p, dma, &mb);
    } else if (!ret && !strcmp(type, "large")) {
        struct large_config lc = {.name = name,
                                  .size = mem,
                                  .page = page,
                                  .dirty_rate = rate,
                                  .p2p = p2p,
                                  .load_in_place = in_place,
                                  .seed = 1,
                                  .dma = dma};
        ret = large_new(&lc, &lg);
    } else if (!ret) {
        ret = ticker_new(name, (size_t)mem, &tk);
    }
    if (ret) {
        cli_error("serve: %s: cannot create the device: %s", name, vfm_strerror(ret));
        goto out;
    }
    cfg.socket_path = path;
    cfg.dev = mb ? mailbox_device(mb) : lg ? large_device(lg) : ticker_device(tk);
    cfg.dma = dma;
    cfg.max_data_xfer_size = (uint32_t)xfer;
    {
        /* a PCI device, as a VMM needs one (vfiomig/pci.h) */
        struct vfm_pci *pci = NULL;
        cfg.version = VFM_SERVER_CONFIG_VERSION;
        if (tk)
            ret = ticker_server_config(tk, &cfg);
        else if (!(ret = mb ? mailbox_pci(mb, &pci) : large_pci(lg, &pci)))
            ret = vfm_pci_server_config(pci, &cfg);
        if (ret) {
            cli_error("serve: %s: its PCI model: %s", name, vfm_strerror(ret));
            goto out;
        }
    }
    ret = vfm_server_new(&cfg, &the_server);
    if (ret) {
        cli_error("serve: %s: cannot listen on %s: %s", name, path,
                  ret == -EADDRINUSE ? "another server is serving there" : vfm_strerror(ret));
        goto out;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    {
        /* a device process of the demo ends with the demo, however the
         * demo ends (a crash included): never an orphan copy running */
        const char *parent = getenv("VFIOMIG_DEMO_PARENT");
        if (parent && strtol(parent, NULL, 10) == (long)getppid()) {
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (strtol(parent, NULL, 10) != (long)getppid())
                raise(SIGTERM); /* it ended before the line above */
        }
    }
    {
        char fl[64];
        vfm_flags_format(vfm_device_flags(cfg.dev), fl, sizeof(fl));
        fprintf(stderr, "vfiomig: serving %s '%s' (%s) on %s\n", type, name, fl, path);
    }
    ret = vfm_server_run(the_server);
    if (ret)
        cli_error("serve: %s: %s", name, vfm_strerror(ret));
    else
        rc = EXIT_OK;
out:
    vfm_server_free(the_server);
    the_server = NULL;
    mailbox_free(mb);
    ticker_free(tk);
    large_free(lg);
    vfm_dma_free(dma);
    return rc;
}
