/* SPDX-License-Identifier: MIT */
/* vfiomig plan — the planner, for people and tools. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <vfiomig/fsm.h>

#include "cli.h"

static void plan_help(void)
{
    printf("Usage: vfiomig plan [--flags LIST|N] [--json] FROM TO\n"
           "       vfiomig plan --table [--flags LIST|N] [--json]\n\n"
           "Print the path of single arcs the VFIO migration protocol takes from state\n"
           "FROM to state TO, exactly as the kernel's vfio_mig_get_next_state() plans it\n"
           "(except that STOP_COPY -> PRE_COPY[_P2P], on which kernels before 2026 loop\n"
           "forever, is refused).\n\n"
           "States are uAPI names, any case, with or without VFIO_DEVICE_STATE_, or\n"
           "numbers: ERROR 0, STOP 1, RUNNING 2, STOP_COPY 3, RESUMING 4,\n"
           "RUNNING_P2P 5, PRE_COPY 6, PRE_COPY_P2P 7.\n\n"
           "Options:\n"
           "  -f, --flags LIST|N  the device's migration flags: a comma list of\n"
           "                      stop-copy, p2p, pre-copy, or a number (1, 3, 0x7...);\n"
           "                      default: stop-copy,p2p,pre-copy (7)\n"
           "  -t, --table         print the path for every pair of states\n"
           "  -j, --json          print JSON instead of text\n"
           "  -h, --help          show this help\n\n"
           "Exit status: 0 the request is accepted, 1 it is refused (the message says\n"
           "which rule refuses it), 2 usage error.\n"
           "Example: vfiomig plan RUNNING STOP_COPY\n"
           "         RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY\n");
}

static void print_path_text(const struct vfm_fsm_path *p)
{
    for (uint32_t i = 0; i < p->len; i++)
        printf("%s%s", i ? " -> " : "", vfm_state_name(p->states[i]));
    printf("\n");
}

static void print_path_json(const struct vfm_fsm_path *p)
{
    printf("[");
    for (uint32_t i = 0; i < p->len; i++) {
        printf("%s", i ? "," : "");
        json_str(stdout, vfm_state_name(p->states[i]));
    }
    printf("]");
}

static const char *abbrev(uint32_t s)
{
    static const char *const a[VFM_STATE_COUNT] = {"ERR", "STOP", "RUN", "SC",
                                                   "RES", "P2P",  "PC",  "PCP"};
    return a[s];
}

static int print_table(uint32_t flags, bool json)
{
    char fl[64];
    struct vfm_fsm_path p;
    bool first = true;

    vfm_flags_format(flags, fl, sizeof(fl));
    if (json) {
        printf("{\"flags\":%u,\"flags_names\":", flags);
        json_str(stdout, fl);
        printf(",\"paths\":[");
        for (uint32_t a = 0; a < VFM_STATE_COUNT; a++) {
            for (uint32_t b = 0; b < VFM_STATE_COUNT; b++) {
                int ret = vfm_fsm_plan(flags, a, b, &p);
                printf("%s{\"from\":\"%s\",\"to\":\"%s\",\"path\":", first ? "" : ",",
                       vfm_state_name(a), vfm_state_name(b));
                first = false;
                if (ret) {
                    printf("null,\"reason\":");
                    json_str(stdout, vfm_fsm_refusal(flags, a, b));
                } else {
                    print_path_json(&p);
                }
                printf("}");
            }
        }
        printf("]}\n");
        return EXIT_OK;
    }

    printf("Paths for flags %s (%u). Row: from; column: to; cell: the states after FROM.\n", fl,
           flags);
    printf(
        "'=' already there; '-' refused. ERR=ERROR RUN=RUNNING SC=STOP_COPY RES=RESUMING\n"
        "P2P=RUNNING_P2P PC=PRE_COPY PCP=PRE_COPY_P2P. States these flags lack are left out.\n\n");
    printf("%-6s", "");
    for (uint32_t b = 0; b < VFM_STATE_COUNT; b++)
        if (vfm_fsm_state_supported(flags, b))
            printf("| %-17s", abbrev(b));
    printf("\n");
    for (uint32_t a = 0; a < VFM_STATE_COUNT; a++) {
        if (!vfm_fsm_state_supported(flags, a))
            continue;
        printf("%-6s", abbrev(a));
        for (uint32_t b = 0; b < VFM_STATE_COUNT; b++) {
            char cell[64] = "";
            size_t n = 0;

            if (!vfm_fsm_state_supported(flags, b))
                continue;
            if (vfm_fsm_plan(flags, a, b, &p))
                snprintf(cell, sizeof(cell), "-");
            else if (p.len == 1)
                snprintf(cell, sizeof(cell), "=");
            else
                for (uint32_t i = 1; i < p.len; i++)
                    n += (size_t)snprintf(cell + n, sizeof(cell) - n, "%s%s", i > 1 ? ">" : "",
                                          abbrev(p.states[i]));
            printf("| %-17s", cell);
        }
        printf("\n");
    }
    return EXIT_OK;
}

int cmd_plan(int argc, char **argv)
{
    static const struct option opts[] = {
        {"flags", required_argument, NULL, 'f'},
        {"table", no_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint32_t flags = VFM_MIGRATION_ALL, from, to;
    bool json = false, table = false;
    struct vfm_fsm_path p;
    const char *why;
    char fl[64];
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "f:tjh", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (vfm_flags_parse(optarg, &flags))
                return cli_usage_error("plan",
                                       "bad --flags '%s' (use stop-copy,p2p,pre-copy "
                                       "or a number 0..7)",
                                       optarg);
            break;
        case 't':
            table = true;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            plan_help();
            return EXIT_OK;
        default:
            return cli_usage_error("plan", "unknown option");
        }
    }
    if (table) {
        if (optind != argc)
            return cli_usage_error("plan", "--table takes no states");
        if (!vfm_fsm_flags_valid(flags)) {
            cli_error("plan: flags %u: %s", flags, vfm_fsm_refusal(flags, 1, 1));
            return EXIT_FAIL;
        }
        return print_table(flags, json);
    }
    if (argc - optind != 2)
        return cli_usage_error("plan", "expected FROM and TO states, got %d argument%s",
                               argc - optind, argc - optind == 1 ? "" : "s");
    if (vfm_state_parse(argv[optind], &from))
        return cli_usage_error("plan", "unknown state '%s'", argv[optind]);
    if (vfm_state_parse(argv[optind + 1], &to))
        return cli_usage_error("plan", "unknown state '%s'", argv[optind + 1]);

    vfm_flags_format(flags, fl, sizeof(fl));
    why = vfm_fsm_plan(flags, from, to, &p) ? vfm_fsm_refusal(flags, from, to) : NULL;
    if (json) {
        printf("{\"flags\":%u,\"flags_names\":", flags);
        json_str(stdout, fl);
        printf(",\"from\":\"%s\",\"to\":\"%s\",\"ok\":%s,", vfm_state_name(from),
               vfm_state_name(to), why ? "false" : "true");
        if (why) {
            printf("\"error\":\"EINVAL\",\"reason\":");
            json_str(stdout, why);
        } else {
            printf("\"arcs\":%u,\"path\":", p.len - 1);
            print_path_json(&p);
        }
        printf("}\n");
    } else if (why) {
        cli_error("plan: %s -> %s refused for flags %s: %s", vfm_state_name(from),
                  vfm_state_name(to), fl, why);
    } else {
        print_path_text(&p);
    }
    return why ? EXIT_FAIL : EXIT_OK;
}
