/* SPDX-License-Identifier: MIT */
/* vfiomig region — read or write bytes of a device's region (a BAR), as a
 * VMM reaches one it does not mmap: to put a recognisable state into a
 * device before a migration and to read it back after. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/open.h>
#include <vfiomig/kernel.h>
#include <vfiomig/vfio_user.h>

#include "cli.h"

/* The most one call moves: a register block, not a memory dump. */
#define REGION_MAX 4096u

static void region_help(void)
{
    printf(
        "Usage: vfiomig region --device DEVICE --index N --read OFFSET:LENGTH [--json]\n"
        "       vfiomig region --device DEVICE --index N --write OFFSET:HEXBYTES\n\n"
        "Read LENGTH bytes at OFFSET of the device's region N (0 is BAR0), printed as\n"
        "hex, or write the bytes given in hex in one access of that many bytes\n"
        "(\"2a000000\" at a 32-bit register writes 42; to feed a byte register such\n"
        "as a UART's data register several bytes, write them one call each).\n"
        "DEVICE is a vfio-user socket (or vfio-user:SOCKET), vfio-group:/dev/vfio/N:NAME\n"
        "or vfio-cdev:PATH. At most %u bytes a call.\n\n"
        "Options:\n"
        "  -d, --device DEVICE  the device (required)\n"
        "  -i, --index N        the region (required)\n"
        "  -r, --read OFF:LEN   read (decimal or 0x numbers)\n"
        "  -w, --write OFF:HEX  write\n"
        "  -j, --json           print {\"device\",\"index\",\"offset\",\"hex\"}\n" CLI_TIMEOUT_HELP
        "  -h, --help           show this help\n\n"
        "Exit status: 0 success, 1 failure (the device and the region named), 2 usage\n"
        "error.\n",
        REGION_MAX);
}

static int parse_num(const char *s, unsigned long long *v)
{
    char *end;

    errno = 0;
    *v = strtoull(s, &end, 0);
    return errno || end == s || *end ? -1 : 0;
}

static int parse_hex(const char *s, unsigned char *buf, size_t *len)
{
    size_t n = strlen(s);

    if (!n || n % 2 || n / 2 > REGION_MAX)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1 || !strchr("0123456789abcdefABCDEF", s[2 * i]) ||
            !strchr("0123456789abcdefABCDEF", s[2 * i + 1]))
            return -1;
        buf[i] = (unsigned char)v;
    }
    *len = n / 2;
    return 0;
}

int cmd_region(int argc, char **argv)
{
    enum { OPT_TIMEOUT = 256 };
    static const struct option opts[] = {
        {"device", required_argument, NULL, 'd'}, {"index", required_argument, NULL, 'i'},
        {"read", required_argument, NULL, 'r'},   {"write", required_argument, NULL, 'w'},
        {"json", no_argument, NULL, 'j'},         {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *dev = NULL, *rd = NULL, *wr = NULL;
    unsigned long long index = ~0ull, off = 0, len = 0;
    unsigned char buf[REGION_MAX];
    struct vfm_endpoint *ep = NULL; /* owns its backend */
    unsigned timeout = 0;
    bool json = false;
    size_t wlen = 0;
    int c, ret = 0;

    optind = 1;
    while ((c = getopt_long(argc, argv, "d:i:r:w:jh", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dev = optarg;
            break;
        case 'i':
            if (parse_num(optarg, &index) || index > UINT32_MAX)
                return cli_usage_error("region", "bad --index '%s'", optarg);
            break;
        case 'r':
            rd = optarg;
            break;
        case 'w':
            wr = optarg;
            break;
        case 'j':
            json = true;
            break;
        case OPT_TIMEOUT:
            if (cli_parse_timeout(optarg, &timeout))
                return cli_usage_error("region", "bad --timeout '%s' (milliseconds)", optarg);
            break;
        case 'h':
            region_help();
            return EXIT_OK;
        default:
            return cli_usage_error("region", "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error("region", "unexpected argument '%s'", argv[optind]);
    if (!dev || index == ~0ull || !!rd == !!wr)
        return cli_usage_error("region",
                               "--device, --index and one of --read, --write are required");
    {
        const char *arg = rd ? rd : wr, *colon = strchr(arg, ':');
        char num[64];
        if (!colon || (size_t)(colon - arg) >= sizeof(num))
            return cli_usage_error("region", "bad %s '%s' (OFFSET:%s)", rd ? "--read" : "--write",
                                   arg, rd ? "LENGTH" : "HEXBYTES");
        memcpy(num, arg, (size_t)(colon - arg));
        num[colon - arg] = '\0';
        if (parse_num(num, &off))
            return cli_usage_error("region", "bad offset '%s'", num);
        if (rd && (parse_num(colon + 1, &len) || len < 1 || len > REGION_MAX))
            return cli_usage_error("region", "bad length '%s' (1 .. %u)", colon + 1, REGION_MAX);
        if (wr && parse_hex(colon + 1, buf, &wlen))
            return cli_usage_error("region", "bad bytes '%s' (hex, an even number of digits)",
                                   colon + 1);
    }
    ret = vfm_ep_open(dev, timeout, &ep);
    if (ret) {
        cli_error("region: %s: cannot open it: %s", dev, vfm_strerror(ret));
        return EXIT_FAIL;
    }
    if (rd)
        ret = vfm_ep_region_read(ep, (uint32_t)index, off, buf, len);
    if (wr)
        ret = vfm_ep_region_write(ep, (uint32_t)index, off, buf, wlen);
    if (ret) {
        cli_error("region: %s: %s region %llu at 0x%llx failed: %s", dev,
                  rd ? "reading" : "writing", index, off, vfm_strerror(ret));
    } else if (rd) {
        if (json) {
            printf("{\"device\":");
            json_str(stdout, dev);
            printf(",\"index\":%llu,\"offset\":%llu,\"hex\":\"", index, off);
        }
        for (unsigned long long i = 0; i < len; i++)
            printf("%02x", buf[i]);
        printf(json ? "\"}\n" : "\n");
    }
    vfm_ep_free(ep);
    return ret ? EXIT_FAIL : EXIT_OK;
}
