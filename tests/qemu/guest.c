/* SPDX-License-Identifier: MIT */
/*
 * The guest side of the QEMU test (tests/qemu/guest.sh): a static program
 * that runs as a Linux guest's only job and drives vfiomig's p2p-mailbox
 * PCI devices the way a driver would, with nothing but sysfs:
 * /sys/bus/pci/devices/N/{vendor,device,config,resource,resourceN,enable}
 * and /proc/self/pagemap. uio_pci_generic (bound by the init script) owns
 * the devices' INTx; its /sys/class/uio/uioN/event counts interrupts.
 *
 * It finds the mailboxes by id, checks their config space (class, BAR
 * sizes, the capability list), programs each with the other's inbox BAR
 * address (a guest-physical address: device-to-device DMA through the
 * VMM's mapping of a BAR), starts traffic, stops it, and checks from the
 * counters that every message sent was consumed exactly once; device 0
 * also writes its status record by DMA into a page of this program, and
 * the interrupts on delivery reach the guest. The large-state device
 * (1af4:10f1) is checked the same way, and its doorbell's interrupt must
 * reach the guest. Output: TAP lines prefixed
 * "GUEST: " on the console, which the host reads.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "large.h"
#include "mailbox.h"

#define MAXDEV 4

struct dev {
    char path[300];
    uint64_t bar[3], size[3];
    volatile uint8_t *regs;
    char uio[64]; /* /sys/class/uio/uioN, once bound */
};

static int n_out, fails;

static void ok(int cond, const char *fmt, ...)
{
    va_list ap;
    printf("GUEST: %s %d - ", cond ? "ok" : "not ok", ++n_out);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    if (!cond)
        fails++;
}

static long read_num(const char *dir, const char *file)
{
    char p[400], b[64] = "";
    FILE *f;

    snprintf(p, sizeof(p), "%s/%s", dir, file);
    if (!(f = fopen(p, "r")))
        return -1;
    if (!fgets(b, sizeof(b), f))
        b[0] = 0;
    fclose(f);
    return strtol(b, NULL, 0);
}

static int cfg_read(struct dev *d, unsigned off, void *buf, size_t len)
{
    char p[400];
    int fd, ret;

    snprintf(p, sizeof(p), "%s/config", d->path);
    if ((fd = open(p, O_RDONLY)) < 0)
        return -errno;
    ret = pread(fd, buf, len, off) == (ssize_t)len ? 0 : -EIO;
    close(fd);
    return ret;
}

static int cfg_write16(struct dev *d, unsigned off, uint16_t v)
{
    char p[400];
    int fd, ret;

    snprintf(p, sizeof(p), "%s/config", d->path);
    if ((fd = open(p, O_WRONLY)) < 0)
        return -errno;
    ret = pwrite(fd, &v, 2, off) == 2 ? 0 : -EIO;
    close(fd);
    return ret;
}

static uint32_t r32(struct dev *d, uint32_t off)
{
    return *(volatile uint32_t *)(d->regs + off);
}

static uint64_t r64(struct dev *d, uint32_t off)
{
    return *(volatile uint64_t *)(d->regs + off);
}

static void w32(struct dev *d, uint32_t off, uint32_t v)
{
    *(volatile uint32_t *)(d->regs + off) = v;
}

static void w64(struct dev *d, uint32_t off, uint64_t v)
{
    *(volatile uint64_t *)(d->regs + off) = v;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The guest-physical address of the page at @p (mapped, locked). */
static uint64_t phys_of(void *p)
{
    uint64_t e = 0;
    long page = sysconf(_SC_PAGESIZE);
    int fd = open("/proc/self/pagemap", O_RDONLY);

    if (fd < 0)
        return 0;
    if (pread(fd, &e, 8, (off_t)((uintptr_t)p / (uintptr_t)page) * 8) != 8)
        e = 0;
    close(fd);
    if (!(e & (1ull << 63)))
        return 0;
    return (e & ((1ull << 55) - 1)) * (uint64_t)page;
}

static int find(struct dev *devs, long want)
{
    DIR *dir = opendir("/sys/bus/pci/devices");
    struct dirent *e;
    int n = 0;

    while (dir && (e = readdir(dir)) && n < MAXDEV) {
        char p[300];
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s", e->d_name);
        if (read_num(p, "vendor") == VFM_PCI_VENDOR_EXPERIMENTAL &&
            read_num(p, "device") == want)
            snprintf(devs[n++].path, sizeof(devs[0].path), "%s", p);
    }
    if (dir)
        closedir(dir);
    /* in bus order: device 0 is the first */
    if (n == 2 && strcmp(devs[0].path, devs[1].path) > 0) {
        struct dev t = devs[0];
        devs[0] = devs[1];
        devs[1] = t;
    }
    return n;
}

/* Ids, class, BARs and the capability list from the config space and
 * sysfs's resource file. */
static void check_config(struct dev *d, int i)
{
    uint8_t c[256];
    char p[400], line[200];
    unsigned caps[8], ncaps = 0, pos;
    int msix = 0;
    FILE *f;

    if (cfg_read(d, 0, c, sizeof(c))) {
        ok(0, "device %d: config space readable", i);
        return;
    }
    ok(c[0] == 0xf4 && c[1] == 0x1a && c[2] == (MB_PCI_DEVICE & 0xff) && c[3] == MB_PCI_DEVICE >> 8 &&
           c[9] == 0x00 && c[10] == 0x80 && c[11] == 0x05 && c[0x3d] == 1,
       "device %d (%s): 1af4:10f0, class 058000, INTx pin A", i, strrchr(d->path, '/') + 1);
    snprintf(p, sizeof(p), "%s/resource", d->path);
    f = fopen(p, "r");
    for (int b = 0; f && b < 3 && fgets(line, sizeof(line), f); b++) {
        unsigned long long s, e, fl;
        if (sscanf(line, "%llx %llx %llx", &s, &e, &fl) == 3) {
            d->bar[b] = s;
            d->size[b] = s ? e - s + 1 : 0;
        }
    }
    if (f)
        fclose(f);
    ok(d->size[0] == MB_INBOX_SIZE && d->size[1] == MB_REGS_SIZE && d->size[2] == 4096 &&
           d->bar[0] && !(d->bar[0] & (MB_INBOX_SIZE - 1)),
       "device %d: BAR0 64 KiB at 0x%llx, BAR1 4 KiB at 0x%llx, BAR2 4 KiB", i,
       (unsigned long long)d->bar[0], (unsigned long long)d->bar[1]);
    pos = (c[6] & 0x10) ? c[0x34] : 0;
    for (int k = 0; pos >= 0x40 && pos < 256 && k < 8; k++) {
        caps[ncaps++] = c[pos];
        if (c[pos] == 0x11)
            msix = 1 + (((unsigned)c[pos + 2] | (unsigned)c[pos + 3] << 8) & 0x7ff);
        pos = c[pos + 1];
    }
    ok(msix == 1 && pos == 0, "device %d: capability list ends, with MSI-X (%d vector%s; %u caps, first 0x%02x)",
       i, msix, msix == 1 ? "" : "s", ncaps, ncaps ? caps[0] : 0);
}

static int map_regs(struct dev *d, int bar)
{
    char p[400];
    int fd;
    void *m;

    snprintf(p, sizeof(p), "%s/enable", d->path);
    if ((fd = open(p, O_WRONLY)) >= 0) {
        if (write(fd, "1", 1) != 1)
            perror("enable");
        close(fd);
    }
    snprintf(p, sizeof(p), "%s/resource%d", d->path, bar);
    if ((fd = open(p, O_RDWR | O_SYNC)) < 0)
        return -errno;
    m = mmap(NULL, MB_REGS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return -errno;
    d->regs = m;
    return 0;
}

/* The uio device bound to @d, if any. */
static void find_uio(struct dev *d)
{
    DIR *dir = opendir("/sys/class/uio");
    struct dirent *e;

    while (dir && (e = readdir(dir))) {
        char p[300], t[400];
        ssize_t n;
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof(p), "/sys/class/uio/%s/device", e->d_name);
        n = readlink(p, t, sizeof(t) - 1);
        if (n > 0) {
            t[n] = 0;
            if (strstr(d->path, strrchr(t, '/') + 1))
                snprintf(d->uio, sizeof(d->uio), "/sys/class/uio/%s", e->d_name);
        }
    }
    if (dir)
        closedir(dir);
}

int main(void)
{
    static struct dev d[MAXDEV];
    int n = find(d, MB_PCI_DEVICE);
    uint64_t sent[2], cons[2], wb_phys;
    struct mb_status *st;
    long page = sysconf(_SC_PAGESIZE);

    ok(n == 2, "two p2p-mailboxes found by their ids (%d)", n);
    if (n != 2)
        goto out;
    for (int i = 0; i < 2; i++) {
        uint16_t cmd = 0;
        check_config(&d[i], i);
        find_uio(&d[i]);
        if (map_regs(&d[i], 1)) {
            ok(0, "device %d: BAR1 mapped through resource1", i);
            goto out;
        }
        cfg_read(&d[i], 4, &cmd, 2);
        cfg_write16(&d[i], 4, cmd | 0x0006); /* memory, bus master */
        ok(r32(&d[i], MB_REG_MAGIC) == MB_COMPAT && r32(&d[i], MB_REG_ABI) == MB_ABI,
           "device %d: registers through resource1: magic MBOX, ABI %u", i, r32(&d[i], MB_REG_ABI));
    }
    /* a page of ours for device 0's status record */
    st = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED,
              -1, 0);
    if (st == MAP_FAILED)
        goto out;
    memset(st, 0, (size_t)page);
    wb_phys = phys_of(st);
    ok(wb_phys != 0, "a locked page at guest-physical 0x%llx for the status record",
       (unsigned long long)wb_phys);
    for (int i = 0; i < 2; i++) {
        w32(&d[i], MB_REG_INDEX, (uint32_t)i);
        w32(&d[i], MB_REG_INTERVAL, 1000);
        w64(&d[i], MB_REG_PEER(1 - i), d[1 - i].bar[0]); /* the peer's inbox BAR */
    }
    w64(&d[0], MB_REG_WRITEBACK, wb_phys);
    /* traffic first, interrupts after: QEMU without KVM takes a BAR's
     * mapping away at each INTx until the guest's next access to the
     * device after it (the EOI it infers) and a timeout, and messages go
     * through that mapping */
    w32(&d[0], MB_REG_CONTROL, MB_CTL_SEND | MB_CTL_WRITEBACK);
    w32(&d[1], MB_REG_CONTROL, MB_CTL_SEND);
    ok(r64(&d[0], MB_REG_PEER(1)) == d[1].bar[0] && r32(&d[1], MB_REG_CONTROL) == MB_CTL_SEND,
       "programmed: peers' inbox addresses 0x%llx and 0x%llx, traffic on",
       (unsigned long long)d[1].bar[0], (unsigned long long)d[0].bar[0]);
    sleep_ms(2000);
    /* stop the traffic; the inboxes drain (device 0 still writes its
     * record after each round that consumed) */
    w32(&d[0], MB_REG_CONTROL, MB_CTL_WRITEBACK);
    w32(&d[1], MB_REG_CONTROL, 0);
    for (int k = 0; k < 100 && (r64(&d[0], MB_REG_PENDING) || r64(&d[1], MB_REG_PENDING)); k++)
        sleep_ms(50);
    sleep_ms(100);
    for (int i = 0; i < 2; i++) {
        sent[i] = r64(&d[i], MB_REG_SENT_TO + 8 * (uint32_t)(1 - i));
        cons[i] = r64(&d[i], MB_REG_CONS_FROM + 8 * (uint32_t)(1 - i));
    }
    printf("GUEST: # sent 0->1 %llu, 1->0 %llu; consumed 1<-0 %llu, 0<-1 %llu; dma faults %llu %llu\n",
           (unsigned long long)sent[0], (unsigned long long)sent[1], (unsigned long long)cons[1],
           (unsigned long long)cons[0], (unsigned long long)r64(&d[0], MB_REG_DMA_FAULTS),
           (unsigned long long)r64(&d[1], MB_REG_DMA_FAULTS));
    ok(sent[0] > 0 && sent[1] > 0,
       "messages went device to device through QEMU's mapping of the peer's BAR (%llu and %llu)",
       (unsigned long long)sent[0], (unsigned long long)sent[1]);
    ok(sent[0] == cons[1] && sent[1] == cons[0] && !r64(&d[0], MB_REG_PENDING) &&
           !r64(&d[1], MB_REG_PENDING),
       "every message sent was consumed: %llu = %llu and %llu = %llu", (unsigned long long)sent[0],
       (unsigned long long)cons[1], (unsigned long long)sent[1], (unsigned long long)cons[0]);
    ok(!r64(&d[0], MB_REG_GAPS) && !r64(&d[1], MB_REG_GAPS) && !r64(&d[0], MB_REG_DUPS) &&
           !r64(&d[1], MB_REG_DUPS),
       "exactly once: no gap, no repeat in either sequence");
    ok(st->magic == MB_COMPAT && st->index == 0 && st->consumed == cons[0] &&
           st->seq == r64(&d[0], MB_REG_WRITEBACKS) && st->seq > 0,
       "device 0 wrote its status record into guest RAM by DMA (record %llu: %llu consumed)",
       (unsigned long long)st->seq, (unsigned long long)st->consumed);
    /* interrupts: each device has its "delivered" status set; enabling
     * its interrupt raises it (INTx, which uio_pci_generic takes) */
    {
        long ev[2] = {-1, -1};
        uint32_t status[2];
        for (int i = 0; i < 2; i++) {
            status[i] = r32(&d[i], MB_REG_IRQ_STATUS);
            w32(&d[i], MB_REG_CONTROL, MB_CTL_IRQ);
        }
        for (int k = 0; k < 100; k++) {
            for (int i = 0; i < 2; i++)
                ev[i] = d[i].uio[0] ? read_num(d[i].uio, "event") : -1;
            if (ev[0] > 0 && ev[1] > 0)
                break;
            sleep_ms(20);
        }
        ok(status[0] == MB_IRQ_DELIVERED && status[1] == MB_IRQ_DELIVERED && ev[0] > 0 && ev[1] > 0,
           "interrupts reached the guest: INTx of both, uio_pci_generic events %ld and %ld "
           "(device interrupts raised %llu and %llu)",
           ev[0], ev[1], (unsigned long long)r64(&d[0], MB_REG_IRQS),
           (unsigned long long)r64(&d[1], MB_REG_IRQS));
        for (int i = 0; i < 2; i++)
            w32(&d[i], MB_REG_IRQ_STATUS, MB_IRQ_DELIVERED); /* acknowledged */
    }
    /* the large-state device: its config space, its registers, and the
     * interrupt its doorbell raises */
    {
        static struct dev lg[MAXDEV];
        uint8_t c[256];
        long ev = -1;
        int nl = find(lg, LG_PCI_DEVICE);

        ok(nl == 1, "the large-state device found by its id (1af4:10f1): %d", nl);
        if (nl == 1 && !cfg_read(&lg[0], 0, c, sizeof(c))) {
            unsigned pos = c[0x34], msix = 0;
            for (int k = 0; pos >= 0x40 && pos < 256 && k < 8; k++, pos = c[pos + 1])
                msix |= c[pos] == 0x11;
            char p[400], line[200];
            unsigned long long bs[2] = {0}, en[2] = {0}, fl;
            FILE *f;
            snprintf(p, sizeof(p), "%s/resource", lg[0].path);
            if ((f = fopen(p, "r"))) {
                for (int b = 0; b < 2 && fgets(line, sizeof(line), f); b++)
                    if (sscanf(line, "%llx %llx %llx", &bs[b], &en[b], &fl) != 3)
                        bs[b] = en[b] = 0;
                fclose(f);
            }
            ok(c[9] == 0 && c[10] == 0 && c[11] == 0x12 && c[0x3d] == 1 && msix &&
                   bs[0] && en[0] - bs[0] + 1 == LG_REGS_SIZE && bs[1] && en[1] - bs[1] + 1 == 4096,
               "large: class 120000 (processing accelerator), INTx pin A, MSI-X; BAR0 and BAR1 4 KiB");
            find_uio(&lg[0]);
            if (!map_regs(&lg[0], 0)) {
                uint16_t cmd = 0;
                cfg_read(&lg[0], 4, &cmd, 2);
                cfg_write16(&lg[0], 4, cmd | 0x0006);
                ok(r64(&lg[0], LG_REG_MAGIC) == LG_COMPAT && r64(&lg[0], LG_REG_SIZE) > 0,
                   "large: registers through resource0: magic LRGE, %llu bytes of device memory",
                   (unsigned long long)r64(&lg[0], LG_REG_SIZE));
                w64(&lg[0], LG_REG_DOORBELL, 1);
                for (int k = 0; k < 100 && ev <= 0; k++) {
                    ev = lg[0].uio[0] ? read_num(lg[0].uio, "event") : -1;
                    if (ev <= 0)
                        sleep_ms(20);
                }
                ok(ev > 0 && r64(&lg[0], LG_REG_IRQS) == 1,
                   "large: its doorbell's interrupt reached the guest (uio event %ld)", ev);
            } else {
                ok(0, "large: BAR0 mapped through resource0");
            }
        }
    }
    /* leave them programmed, quiet: the host saves what the guest set */
    for (int i = 0; i < 2; i++)
        w32(&d[i], MB_REG_CONTROL, 0);
out:
    printf("GUEST: 1..%d\nGUEST: done %d\n", n_out, fails);
    fflush(stdout);
    return fails != 0;
}
