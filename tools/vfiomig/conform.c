/* SPDX-License-Identifier: MIT */
/* vfiomig conform — check a device against the migration uAPI's rules. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include <vfiomig/open.h>
#include <vfiomig/conform.h>
#include <vfiomig/kernel.h>
#include <vfiomig/vfio_user.h>

#include "cli.h"

static void conform_help(void)
{
    printf("Usage: vfiomig conform --vfio-user SOCKET [options]\n"
           "       vfiomig conform --vfio-group /dev/vfio/N --device NAME [options]\n"
           "       vfiomig conform --vfio-cdev /dev/vfio/devices/vfioX [options]\n\n"
           "Check a migratable device — a vfio-user server, or a kernel VFIO device\n"
           "through its group or its cdev — against every rule of the VFIO migration\n"
           "uAPI that userspace can observe: valid flags; every state change the flags\n"
           "allow reaches its state (GET agrees) and every other is refused with EINVAL,\n"
           "the state unchanged; a data session exactly where the protocol opens one,\n"
           "ENODEV once it ended; STOP_COPY reads to a clean end; pre-copy info and\n"
           "ENOMSG at pre-copy's temporary end; a saved state loads and a truncated one\n"
           "is refused; reset returns to RUNNING from every state. The device is moved\n"
           "through all of that along the planner's paths, reset only to leave ERROR\n"
           "or an aborted load, and left RUNNING.\n\n"
           "Output: TAP (one line per check, `prove` reads it); a failure names the rule,\n"
           "what it expects and what the device did. STOP_COPY -> PRE_COPY is sent to a\n"
           "kernel device only with --send-stop-copy-to-pre-copy (kernels before the 2026\n"
           "fix loop for ever on it; Debian's 6.12 refuses it from 6.12.96 on).\n\n"
           "Options:\n"
           "      --vfio-user SOCKET   a vfio-user server's socket\n"
           "      --vfio-group PATH    a VFIO group (/dev/vfio/N), with --device\n"
           "  -d, --device NAME        the device in the group (PCI address, mdev UUID)\n"
           "      --vfio-cdev PATH     a VFIO device cdev (iommufd)\n"
           "      --data-limit SIZE    the most state bytes read from one session\n"
           "                           (K/M/G; default 1G)\n"
           "  -j, --json               print the report as JSON instead of TAP\n"
           "      --timeout MS         the longest wait on a vfio-user server (default\n"
           "                           30000)\n"
           "      --reinit REGION:OFFSET[:VALUE[:LEN]]\n"
           "                           how to make the device announce new initial data\n"
           "                           in pre-copy (precopy-v2's REINIT checks): write\n"
           "                           VALUE (default 1) in LEN bytes (1, 2, 4, 8; default\n"
           "                           8) at OFFSET of region REGION; vfiomig's large\n"
           "                           device: 0:0x70 (without it those checks are skipped)\n"
           "      --send-stop-copy-to-pre-copy\n"
           "                           send that request to a kernel device too (only to\n"
           "                           a kernel known to refuse it)\n"
           "  -v, --verbose            log every request on stderr\n"
           "  -h, --help               show this help\n\n"
           "Exit status: 0 every check passed (or was skipped), 1 a check failed or the\n"
           "device could not be opened, 2 usage error.\n");
}

struct out {
    bool json;
    bool first;
};

static const char *verdict_name(enum vfm_conform_verdict v)
{
    return v == VFM_CONFORM_PASS ? "pass" : v == VFM_CONFORM_FAIL ? "fail" : "skip";
}

static void on_check(void *ctx, const struct vfm_conform_check *c)
{
    struct out *o = ctx;

    if (o->json) {
        printf("%s{\"n\":%u,\"rule\":", o->first ? "" : ",", c->number);
        json_str(stdout, c->rule);
        printf(",\"what\":");
        json_str(stdout, c->what);
        printf(",\"verdict\":\"%s\",\"expected\":", verdict_name(c->verdict));
        json_str(stdout, c->expected);
        printf(",\"seen\":");
        json_str(stdout, c->seen);
        printf("}");
        o->first = false;
        return;
    }
    switch (c->verdict) {
    case VFM_CONFORM_PASS:
        printf("ok %u - %s: %s\n", c->number, c->rule, c->what);
        break;
    case VFM_CONFORM_SKIP:
        printf("ok %u - %s: %s # SKIP %s\n", c->number, c->rule, c->what, c->expected);
        break;
    default:
        printf("not ok %u - %s: %s\n#   the rule: %s\n#   expected: %s\n#   seen:     %s\n",
               c->number, c->rule, c->what, c->rule, c->expected, c->seen);
    }
    fflush(stdout);
}

int cmd_conform(int argc, char **argv)
{
    enum { OPT_VU = 256, OPT_GROUP, OPT_CDEV, OPT_LIMIT, OPT_TIMEOUT, OPT_SC_PC, OPT_REINIT };
    static const struct option opts[] = {
        {"vfio-user", required_argument, NULL, OPT_VU},
        {"vfio-group", required_argument, NULL, OPT_GROUP},
        {"vfio-cdev", required_argument, NULL, OPT_CDEV},
        {"device", required_argument, NULL, 'd'},
        {"data-limit", required_argument, NULL, OPT_LIMIT},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"send-stop-copy-to-pre-copy", no_argument, NULL, OPT_SC_PC},
        {"reinit", required_argument, NULL, OPT_REINIT},
        {"json", no_argument, NULL, 'j'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *vu = NULL, *group = NULL, *cdev = NULL, *device = NULL, *what;
    unsigned long long limit = 0;
    struct vfm_conform_config cfg = {0};
    struct vfm_conform_summary sum;
    struct vfm_endpoint *ep = NULL; /* owns its backend */
    char spec[4096 + 64];
    struct out o = {.first = true};
    char fl[64];
    int c, ret;
    unsigned timeout = 0;

    optind = 1;
    while ((c = getopt_long(argc, argv, "d:jvh", opts, NULL)) != -1) {
        switch (c) {
        case OPT_VU:
            vu = optarg;
            break;
        case OPT_GROUP:
            group = optarg;
            break;
        case OPT_CDEV:
            cdev = optarg;
            break;
        case 'd':
            device = optarg;
            break;
        case OPT_LIMIT:
            if (cli_parse_size(optarg, &limit) || limit < 1)
                return cli_usage_error("conform", "bad --data-limit '%s'", optarg);
            break;
        case 'j':
            o.json = true;
            break;
        case OPT_TIMEOUT:
            if (cli_parse_timeout(optarg, &timeout))
                return cli_usage_error("conform", "bad --timeout '%s' (milliseconds)", optarg);
            break;
        case OPT_REINIT: {
            unsigned long long reg, off, val = 1, l = 8;
            char *e;
            int k = sscanf(optarg, "%llu:%lli:%lli:%llu", &reg, (long long *)&off,
                           (long long *)&val, &l);
            e = strchr(optarg, ' ');
            if (k < 2 || e || reg > 0xffffffffull || (l != 1 && l != 2 && l != 4 && l != 8))
                return cli_usage_error("conform", "bad --reinit '%s' (REGION:OFFSET[:VALUE[:LEN]])",
                                       optarg);
            cfg.reinit_region = (uint32_t)reg;
            cfg.reinit_offset = off;
            cfg.reinit_value = val;
            cfg.reinit_len = (uint32_t)l;
            break;
        }
        case OPT_SC_PC:
            cfg.kernel_stop_copy_to_pre_copy = true;
            break;
        case 'v':
            vfm_log_set(vfm_log_stderr, NULL, LOG_DEBUG);
            break;
        case 'h':
            conform_help();
            return EXIT_OK;
        default:
            return cli_usage_error("conform", "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error("conform", "unexpected argument '%s'", argv[optind]);
    if (!!vu + !!group + !!cdev != 1)
        return cli_usage_error("conform", "give one of --vfio-user, --vfio-group, --vfio-cdev");
    if (!!group != !!device)
        return cli_usage_error("conform", "--vfio-group and --device go together");

    what = vu ? vu : group ? device : cdev;
    /* the options as the spec vfm_ep_open() takes */
    if ((size_t)snprintf(spec, sizeof(spec), "%s%s%s%s",
                         vu      ? "vfio-user:"
                         : group ? "vfio-group:"
                                 : "vfio-cdev:",
                         vu      ? vu
                         : group ? group
                                 : cdev,
                         group ? ":" : "", group ? device : "") >= sizeof(spec))
        return cli_usage_error("conform", "the device's path is too long");
    ret = vfm_ep_open(spec, timeout, &ep);
    if (!ret)
        ret = vfm_ep_set_name(ep, what);
    if (ret) {
        cli_error("conform: %s: cannot open the device: %s", what, vfm_strerror(ret));
        vfm_ep_free(ep);
        return EXIT_FAIL;
    }
    cfg.ep = ep;
    cfg.kernel = !vu;
    cfg.data_limit = limit;
    cfg.report = on_check;
    cfg.ctx = &o;
    if (o.json) {
        printf("{\"device\":");
        json_str(stdout, what);
        printf(",\"transport\":\"%s\",\"checks\":[", vu      ? "vfio-user"
                                                     : group ? "vfio-group"
                                                             : "vfio-cdev");
    }
    ret = vfm_conform_run(&cfg, &sum);
    vfm_flags_format(sum.flags, fl, sizeof(fl));
    if (o.json) {
        printf("],\"flags\":");
        json_str(stdout, fl);
        printf(",\"checks_run\":%u,\"passed\":%u,\"failed\":%u,\"skipped\":%u,\"error\":",
               sum.checks, sum.passed, sum.failed, sum.skipped);
        json_str(stdout, ret < 0 ? vfm_strerror(ret) : "");
        printf("}\n");
    } else {
        printf("1..%u\n# %s (%s): %u checks, %u passed, %u failed, %u skipped\n", sum.checks, what,
               fl, sum.checks, sum.passed, sum.failed, sum.skipped);
    }
    if (ret < 0)
        cli_error("conform: %s: cannot read its migration flags: %s", what, vfm_strerror(ret));
    vfm_ep_free(ep);
    return ret ? EXIT_FAIL : EXIT_OK;
}
