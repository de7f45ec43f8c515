/* SPDX-License-Identifier: MIT */
/* vfiomig state — get or set a vfio-user device's migration state. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <vfiomig/open.h>
#include <vfiomig/fsm.h>
#include <vfiomig/kernel.h>
#include <vfiomig/vfio_user.h>

#include "cli.h"

static void state_help(void)
{
    printf("Usage: vfiomig state --socket PATH [--set STATE] [--json]\n"
           "       vfiomig state --device DEVICE [--set STATE] [--json]\n\n"
           "Print the migration state of the device served on PATH (vfio-user), or of\n"
           "DEVICE (vfio-user:SOCKET, vfio-group:/dev/vfio/N:NAME, vfio-cdev:PATH), or move\n"
           "it to STATE and print the path of arcs it took, as the protocol plans it for\n"
           "the device's flags. STATE is a uAPI name (any case) or a number.\n\n"
           "A save or load session belongs to its connection: when this command exits,\n"
           "the server ends it, so a device left in STOP_COPY or RESUMING goes to STOP\n"
           "(see vfm_server_run() in vfiomig/vfio_user.h). A kernel device keeps the\n"
           "state it is left in (its session ends with the data fd).\n\n"
           "Options:\n"
           "  -s, --socket PATH   the device's vfio-user socket\n"
           "  -d, --device DEVICE any device, as vfiomig migrate takes it\n"
           "  -S, --set STATE     request this state\n"
           "  -j, --json          print JSON\n"
           "      --timeout MS    the longest wait on the server (default 30000)\n"
           "  -h, --help          show this help\n\n"
           "Exit status: 0 success, 1 failure (refused request, device error, no server),\n"
           "2 usage error.\n");
}

int cmd_state(int argc, char **argv)
{
    static const struct option opts[] = {
        {"socket", required_argument, NULL, 's'},
        {"device", required_argument, NULL, 'd'},
        {"set", required_argument, NULL, 'S'},
        {"json", no_argument, NULL, 'j'},
        {"timeout", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL, *set = NULL;
    struct vfm_endpoint *ep = NULL; /* owns its backend */
    struct vfm_fsm_path plan = {0};
    uint32_t flags, from, to = 0, now;
    bool json = false;
    char fl[64];
    int c, ret, rc = EXIT_FAIL;
    unsigned timeout = 0;

    optind = 1;
    while ((c = getopt_long(argc, argv, "s:d:S:jh", opts, NULL)) != -1) {
        switch (c) {
        case 's':
        case 'd':
            if (path)
                return cli_usage_error("state", "one device: --socket or --device, once");
            path = optarg;
            break;
        case 'S':
            set = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'T':
            if (cli_parse_timeout(optarg, &timeout))
                return cli_usage_error("state", "bad --timeout '%s' (milliseconds)", optarg);
            break;
        case 'h':
            state_help();
            return EXIT_OK;
        default:
            return cli_usage_error("state", "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error("state", "unexpected argument '%s'", argv[optind]);
    if (!path)
        return cli_usage_error("state", "--socket (or --device) is required");
    if (set && vfm_state_parse(set, &to))
        return cli_usage_error("state", "unknown state '%s'", set);

    ret = vfm_ep_open(path, timeout, &ep);
    if (ret) {
        cli_error("state: %s: cannot connect: %s", path,
                  ret == -EBUSY ? "the server has another client" : vfm_strerror(ret));
        return EXIT_FAIL;
    }
    if ((ret = vfm_ep_flags(ep, &flags)) || (ret = vfm_ep_get_state(ep, &from))) {
        cli_error("%s: cannot read the migration state: %s", path, vfm_strerror(ret));
        goto out;
    }
    vfm_flags_format(flags, fl, sizeof(fl));
    if (!set) {
        if (json)
            printf("{\"device\":\"%s\",\"flags\":%u,\"flags_names\":\"%s\",\"state\":\"%s\"}\n",
                   path, flags, fl, vfm_state_str(from));
        else
            printf("%s\n", vfm_state_str(from));
        rc = EXIT_OK;
        goto out;
    }
    if (vfm_fsm_plan(flags, from, to, &plan)) {
        cli_error("%s: %s -> %s refused for flags %s: %s", path, vfm_state_str(from),
                  vfm_state_str(to), fl, vfm_fsm_refusal(flags, from, to));
        goto out;
    }
    ret = vfm_ep_set_state(ep, to);
    if (vfm_ep_get_state(ep, &now))
        now = VFM_STATE_COUNT;
    if (ret) {
        cli_error("%s: %s -> %s failed: %s (%s); the device is now %s", path, vfm_state_str(from),
                  vfm_state_str(to), vfm_strerror(ret), vfm_err_name(ret), vfm_state_str(now));
        if (json)
            printf("{\"device\":\"%s\",\"ok\":false,\"from\":\"%s\",\"to\":\"%s\",\"error\":\"%s\","
                   "\"state\":\"%s\"}\n",
                   path, vfm_state_str(from), vfm_state_str(to), vfm_err_name(ret),
                   vfm_state_str(now));
        goto out;
    }
    if (json) {
        printf("{\"device\":\"%s\",\"ok\":true,\"from\":\"%s\",\"to\":\"%s\",\"path\":[", path,
               vfm_state_str(from), vfm_state_str(to));
        for (uint32_t i = 0; i < plan.len; i++)
            printf("%s\"%s\"", i ? "," : "", vfm_state_str(plan.states[i]));
        printf("],\"state\":\"%s\"}\n", vfm_state_str(now));
    } else {
        for (uint32_t i = 0; i < plan.len; i++)
            printf("%s%s", i ? " -> " : "", vfm_state_str(plan.states[i]));
        printf("\n");
    }
    rc = now == to ? EXIT_OK : EXIT_FAIL;
    if (rc)
        cli_error("%s: the device reports %s after the request for %s", path, vfm_state_str(now),
                  vfm_state_str(to));
out:
    vfm_ep_free(ep);
    return rc;
}
