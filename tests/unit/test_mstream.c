/* SPDX-License-Identifier: MIT */
/*
 * The migration stream's codec (src/migrate/mstream.h): a stream decodes to
 * exactly what was encoded, fed whole or a byte at a time; every truncation
 * is incomplete, every single-bit flip is refused, and each rule of the
 * framing (order, device range, byte counts, the end) is refused with a
 * message that names it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "migrate/mstream.h"

#define NDEV 3

struct built {
    uint8_t buf[20480];
    size_t len;
    size_t rec_at[32]; /* where each record starts */
    unsigned nrec;
    uint32_t seq;
};

static void put(struct built *b, enum vfm_ms_kind kind, uint32_t dev, const void *p, size_t n)
{
    b->rec_at[b->nrec++] = b->len;
    vfm_ms_put_record(b->buf + b->len, kind, dev, b->seq++, vfm_ms_payload_sum(p, n), n);
    if (n)
        memcpy(b->buf + b->len + VFM_MS_REC_SIZE, p, n);
    b->len += VFM_MS_REC_SIZE + n;
}

/* A valid stream of NDEV devices: 2 DATA records each (sizes 0..), their
 * ends, the end. */
static void build(struct built *b)
{
    uint32_t flags[NDEV] = {1, 3, 7 | VFM_MS_STOPPED};
    uint64_t total[NDEV] = {0};
    uint8_t payload[200];

    memset(b, 0, sizeof(*b));
    for (size_t k = 0; k < sizeof(payload); k++)
        payload[k] = (uint8_t)(k ^ 0xa5);
    vfm_ms_put_header(b->buf, NDEV, NULL);
    b->len = VFM_MS_HDR_SIZE;
    put(b, VFM_MS_DEVICES, 0, flags, sizeof(flags));
    for (unsigned r = 0; r < 2 * NDEV; r++) {
        size_t n = r * 37;
        put(b, VFM_MS_DATA, r % NDEV, payload, n);
        total[r % NDEV] += n;
    }
    for (uint32_t d = 0; d < NDEV; d++)
        put(b, VFM_MS_DEVICE_END, d, &total[d], 8);
    put(b, VFM_MS_STREAM_END, 0, NULL, 0);
}

struct seen {
    unsigned events[16];
    uint64_t ram_bytes, ram_digest, ram_flags, ram_iova_sum;
    uint64_t bytes[NDEV];
    uint32_t flags[NDEV];
    int ret;   /* the first error, or 0 */
    bool done; /* STREAM_END seen */
    char why[160];
};

/* The guest RAM a receiver expects (decode_ram()), and its pages. */
static const struct vfm_ms_ram_range *want_ram;
static uint32_t want_nram;

/* How a test's receiver decodes: its device count, the migration id it
 * expects (NULL: any), and, for one of many streams, their count and token
 * (@other); *@hdr gets the header's event. */
struct dec_opts {
    uint32_t ndev;
    const char *id;
    bool other;
    uint32_t nlanes;
    uint64_t token;
    struct vfm_ms_event *hdr;
};

/* Decodes @len bytes of @p in pieces of @piece (0: all at once). */
static void decode_with(const uint8_t *p, size_t len, size_t piece, const struct dec_opts *o,
                        struct seen *s)
{
    struct vfm_ms_dec d;
    size_t off = 0;

    memset(s, 0, sizeof(*s));
    assert_int_equal(vfm_ms_dec_init(&d, o->ndev), 0);
    assert_int_equal(vfm_ms_dec_expect_ram(&d, want_ram, want_nram), 0);
    assert_int_equal(vfm_ms_dec_expect_id(&d, o->id), 0);
    if (o->other)
        assert_int_equal(vfm_ms_dec_expect_lane(&d, o->nlanes, o->token), 0);
    while (off < len) {
        struct vfm_ms_event ev;
        size_t n = piece && len - off > piece ? piece : len - off, used;
        int ret = vfm_ms_dec_feed(&d, p + off, n, &used, &ev);

        off += used;
        if (ret < 0) {
            s->ret = ret;
            strcpy(s->why, d.why);
            break;
        }
        if (ret == 0)
            continue;
        s->events[ev.kind]++;
        if (ev.kind == VFM_MS_EV_HEADER && o->hdr)
            *o->hdr = ev;
        if (ev.kind == VFM_MS_EV_DATA)
            s->bytes[ev.device] += ev.len;
        if (ev.kind == VFM_MS_EV_DEVICES)
            memcpy(s->flags, ev.flags, sizeof(s->flags));
        if (ev.kind == VFM_MS_EV_RAM) {
            s->ram_bytes += ev.len;
            s->ram_iova_sum += ev.iova;
            assert_int_equal(ev.data[0], (uint8_t)(ev.iova >> 12));
        }
        if (ev.kind == VFM_MS_EV_RAM_END) {
            s->ram_digest = ev.total;
            s->ram_flags = ev.ram_flags;
        }
    }
    s->done = vfm_ms_dec_done(&d);
    vfm_ms_dec_release(&d);
}

static void decode(const uint8_t *p, size_t len, size_t piece, uint32_t ndev, struct seen *s)
{
    decode_with(p, len, piece, &(struct dec_opts){.ndev = ndev}, s);
}

static void test_round_trip(void **state)
{
    static const size_t pieces[] = {0, 1, 3, 40, 1000};
    struct built b;
    (void)state;

    build(&b);
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        struct seen s;
        decode(b.buf, b.len, pieces[i], NDEV, &s);
        assert_int_equal(s.ret, 0);
        assert_true(s.done);
        assert_int_equal(s.events[VFM_MS_EV_HEADER], 1);
        assert_int_equal(s.events[VFM_MS_EV_DEVICES], 1);
        assert_int_equal(s.events[VFM_MS_EV_DATA], 2 * NDEV);
        assert_int_equal(s.events[VFM_MS_EV_DEVICE_END], NDEV);
        assert_int_equal(s.events[VFM_MS_EV_STREAM_END], 1);
        assert_int_equal(s.bytes[0], 0 + 3 * 37);
        assert_int_equal(s.bytes[2], 2 * 37 + 5 * 37);
        assert_int_equal(s.flags[2], 7 | VFM_MS_STOPPED);
    }
}

/* A stream cut anywhere never reaches its end, and says where it stopped. */
static void test_every_truncation(void **state)
{
    struct built b;
    (void)state;

    build(&b);
    for (size_t cut = 0; cut < b.len; cut++) {
        struct seen s;
        decode(b.buf, cut, 0, NDEV, &s);
        assert_int_equal(s.ret, 0);
        assert_false(s.done);
    }
}

/* Every single-bit flip anywhere is refused before the end. */
static void test_every_bit_flip(void **state)
{
    struct built b;
    (void)state;

    build(&b);
    for (size_t bit = 0; bit < b.len * 8; bit++) {
        uint8_t copy[sizeof(b.buf)];
        struct seen s;
        memcpy(copy, b.buf, b.len);
        copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        decode(copy, b.len, 0, NDEV, &s);
        if (s.ret != -EBADMSG || s.done)
            fail_msg("a flip of bit %zu (byte %zu) was not refused", bit % 8, bit / 8);
    }
}

static void expect_refused(const uint8_t *p, size_t len, uint32_t ndev, const char *why)
{
    struct seen s;

    decode(p, len, 0, ndev, &s);
    assert_int_equal(s.ret, -EBADMSG);
    assert_false(s.done);
    if (!strstr(s.why, why))
        fail_msg("refused with \"%s\", expected \"%s\"", s.why, why);
}

/* Each rule of the framing, broken alone (every checksum valid). */
static void test_rules(void **state)
{
    struct built b, c;
    uint64_t wrong = 999;
    uint8_t big[VFM_MS_REC_SIZE];
    (void)state;

    build(&b);
    /* the receiver expects another device count */
    expect_refused(b.buf, b.len, 2, "carries 3 devices; this side has 2");
    /* two records swapped */
    memcpy(&c, &b, sizeof(c));
    memcpy(c.buf + b.rec_at[1], b.buf + b.rec_at[2], b.rec_at[3] - b.rec_at[2]);
    memcpy(c.buf + b.rec_at[1] + (b.rec_at[3] - b.rec_at[2]), b.buf + b.rec_at[1],
           b.rec_at[2] - b.rec_at[1]);
    expect_refused(c.buf, c.len, NDEV, "out of order (record 2 where 1 was due)");
    /* no device list first */
    memset(&c, 0, sizeof(c));
    vfm_ms_put_header(c.buf, NDEV, NULL);
    c.len = VFM_MS_HDR_SIZE;
    put(&c, VFM_MS_DATA, 0, "abc", 3);
    expect_refused(c.buf, c.len, NDEV, "device list is invalid");
    /* a device out of range; a byte count that disagrees; DATA after the
     * device ended; the end before every device ended; an oversized record
     * (refused before its payload is read) */
    {
        uint32_t flags[NDEV] = {1, 1, 1};
        struct {
            enum vfm_ms_kind kind;
            uint32_t dev;
            const void *p;
            size_t n;
            const char *why;
        } cases[] = {
            {VFM_MS_DATA, NDEV, "abc", 3, "invalid record 1"},
            {VFM_MS_DEVICE_END, 0, &wrong, 8, "999 state bytes announced, 0 received"},
            {VFM_MS_STREAM_END, 0, NULL, 0, "ended without device 0's state"},
        };
        for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
            memset(&c, 0, sizeof(c));
            vfm_ms_put_header(c.buf, NDEV, NULL);
            c.len = VFM_MS_HDR_SIZE;
            put(&c, VFM_MS_DEVICES, 0, flags, sizeof(flags));
            put(&c, cases[k].kind, cases[k].dev, cases[k].p, cases[k].n);
            expect_refused(c.buf, c.len, NDEV, cases[k].why);
        }
        memset(&c, 0, sizeof(c));
        vfm_ms_put_header(c.buf, NDEV, NULL);
        c.len = VFM_MS_HDR_SIZE;
        put(&c, VFM_MS_DEVICES, 0, flags, sizeof(flags));
        wrong = 0;
        put(&c, VFM_MS_DEVICE_END, 1, &wrong, 8);
        put(&c, VFM_MS_DATA, 1, "abc", 3);
        expect_refused(c.buf, c.len, NDEV, "invalid record 2");
        vfm_ms_put_record(big, VFM_MS_DATA, 0, 2, 0, (uint64_t)VFM_MS_MAX_PAYLOAD + 1);
        memcpy(c.buf + c.len - VFM_MS_REC_SIZE - 3, big, sizeof(big));
        expect_refused(c.buf, c.len - 3, NDEV, "invalid record");
    }
}

/* ---- guest RAM ---- */

static const struct vfm_ms_ram_range ram2[2] = {{0x0, 0x4000}, {0x100000, 0x2000}};

/* A RAM record: @pages pages from @iova, each page's first byte its page
 * number. */
static void put_ram(struct built *b, uint64_t iova, unsigned pages, size_t extra)
{
    static uint8_t p[8 + 2 * VFM_MS_RAM_PAGE + 16];
    memset(p, 0x5a, sizeof(p));
    memcpy(p, &iova, 8);
    for (unsigned k = 0; k < pages; k++)
        p[8 + k * VFM_MS_RAM_PAGE] = (uint8_t)((iova >> 12) + k);
    put(b, VFM_MS_RAM, 0, p, 8 + pages * VFM_MS_RAM_PAGE + extra);
}

/* A valid stream with guest RAM (ram2): devices, the RAM list, RAM
 * pages, the device ends, RAM_END with @flags_end, the end. */
static void build_ram(struct built *b, uint64_t flags_end)
{
    uint32_t flags[NDEV] = {1, 1, 1};
    uint64_t zero = 0;
    struct vfm_ms_ram_end e = {.digest = 0x1234, .flags = flags_end};

    memset(b, 0, sizeof(*b));
    vfm_ms_put_header(b->buf, NDEV, NULL);
    b->len = VFM_MS_HDR_SIZE;
    put(b, VFM_MS_DEVICES, 0, flags, sizeof(flags));
    put(b, VFM_MS_RAM_LIST, 0, ram2, sizeof(ram2));
    put_ram(b, 0x2000, 2, 0);   /* the end of range 0 */
    put_ram(b, 0x101000, 1, 0); /* the last page of range 1 */
    for (uint32_t d = 0; d < NDEV; d++)
        put(b, VFM_MS_DEVICE_END, d, &zero, 8);
    put(b, VFM_MS_RAM_END, 0, &e, sizeof(e));
    put(b, VFM_MS_STREAM_END, 0, NULL, 0);
}

/* The stream with RAM decodes to its pages, in pieces or whole; cut
 * anywhere it never ends; a receiver with no RAM, or other RAM, refuses it. */
static void test_ram_round_trip(void **state)
{
    static const size_t pieces[] = {0, 1, 7, 4096};
    static const struct vfm_ms_ram_range other = {0x0, 0x8000};
    struct built b;
    struct seen s;
    (void)state;

    build_ram(&b, VFM_MS_RAM_UNTRACKED);
    want_ram = ram2;
    want_nram = 2;
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        decode(b.buf, b.len, pieces[i], NDEV, &s);
        assert_int_equal(s.ret, 0);
        assert_true(s.done);
        assert_int_equal(s.events[VFM_MS_EV_RAM], 2);
        assert_int_equal(s.events[VFM_MS_EV_RAM_END], 1);
        assert_int_equal(s.ram_bytes, 3 * VFM_MS_RAM_PAGE);
        assert_int_equal(s.ram_iova_sum, 0x2000 + 0x101000);
        assert_int_equal(s.ram_digest, 0x1234);
        assert_int_equal(s.ram_flags, VFM_MS_RAM_UNTRACKED);
    }
    for (size_t cut = 0; cut < b.len; cut += 97) {
        decode(b.buf, cut, 0, NDEV, &s);
        assert_int_equal(s.ret, 0);
        assert_false(s.done);
    }
    want_nram = 0;
    expect_refused(b.buf, b.len, NDEV, "carries guest RAM; this side was given none");
    want_ram = &other;
    want_nram = 1;
    expect_refused(b.buf, b.len, NDEV, "RAM list has 32 bytes; this side expects 1 range");
    {
        /* one range, the same size as the stream's list but other ranges */
        static const struct vfm_ms_ram_range two[2] = {{0x0, 0x4000}, {0x200000, 0x2000}};
        want_ram = two;
        want_nram = 2;
        expect_refused(b.buf, b.len, NDEV, "guest RAM is not this side's");
    }
    /* a receiver expecting RAM, a stream without */
    want_ram = ram2;
    build(&b);
    expect_refused(b.buf, b.len, NDEV, "carries no guest RAM; this side expects 2 ranges");
    want_nram = 0;
    want_ram = NULL;
}

/* Each RAM rule broken alone (every checksum valid). */
static void test_ram_rules(void **state)
{
    uint32_t flags[NDEV] = {1, 1, 1};
    uint64_t zero = 0;
    struct vfm_ms_ram_end e = {0};
    static const struct {
        uint64_t iova;
        unsigned pages;
        size_t extra;
        const char *why;
    } recs[] = {
        {0x3000, 2, 0, "(0x3000, 8192 bytes) is outside the guest RAM"}, /* past range 0 */
        {0x4000, 1, 0, "is outside the guest RAM"},                      /* between ranges */
        {0x102000, 1, 0, "is outside the guest RAM"},                    /* past range 1 */
        {0x1800, 1, 0, "is outside the guest RAM"},                      /* unaligned */
        {0x0, 1, 8, "invalid RAM record"},                               /* part of a page */
        {0x0, 0, 0, "invalid RAM record"},                               /* no page */
    };
    struct built c;
    (void)state;

    want_ram = ram2;
    want_nram = 2;
    for (size_t k = 0; k < sizeof(recs) / sizeof(recs[0]); k++) {
        memset(&c, 0, sizeof(c));
        vfm_ms_put_header(c.buf, NDEV, NULL);
        c.len = VFM_MS_HDR_SIZE;
        put(&c, VFM_MS_DEVICES, 0, flags, sizeof(flags));
        put(&c, VFM_MS_RAM_LIST, 0, ram2, sizeof(ram2));
        put_ram(&c, recs[k].iova, recs[k].pages, recs[k].extra);
        expect_refused(c.buf, c.len, NDEV, recs[k].why);
    }
    /* a second list; pages after RAM_END; unknown flags; the end without
     * RAM_END; RAM_END twice */
    memset(&c, 0, sizeof(c));
    vfm_ms_put_header(c.buf, NDEV, NULL);
    c.len = VFM_MS_HDR_SIZE;
    put(&c, VFM_MS_DEVICES, 0, flags, sizeof(flags));
    put(&c, VFM_MS_RAM_LIST, 0, ram2, sizeof(ram2));
    {
        struct built d = c;
        put(&d, VFM_MS_RAM_LIST, 0, ram2, sizeof(ram2));
        expect_refused(d.buf, d.len, NDEV, "second RAM list");
        d = c;
        put(&d, VFM_MS_RAM_END, 0, &e, sizeof(e));
        put_ram(&d, 0, 1, 0);
        expect_refused(d.buf, d.len, NDEV, "invalid RAM record 3");
        d = c;
        put(&d, VFM_MS_RAM_END, 0, &e, sizeof(e));
        put(&d, VFM_MS_RAM_END, 0, &e, sizeof(e));
        expect_refused(d.buf, d.len, NDEV, "invalid RAM end (record 3)");
        d = c;
        e.flags = 2;
        put(&d, VFM_MS_RAM_END, 0, &e, sizeof(e));
        expect_refused(d.buf, d.len, NDEV, "unknown flags 0x2");
        e.flags = 0;
        d = c;
        for (uint32_t k = 0; k < NDEV; k++)
            put(&d, VFM_MS_DEVICE_END, k, &zero, 8);
        put(&d, VFM_MS_STREAM_END, 0, NULL, 0);
        expect_refused(d.buf, d.len, NDEV, "ended without the end of its guest RAM");
    }
    want_nram = 0;
    want_ram = NULL;
}

/* The ranges a receiver may expect. */
static void test_ram_ranges(void **state)
{
    struct vfm_ms_dec d;
    struct vfm_ms_ram_range r[VFM_MS_MAX_RAM + 1];
    static const struct vfm_ms_ram_range bad[][2] = {
        {{0x0, 0x0}, {0x0, 0x0}},                      /* empty */
        {{0x800, 0x1000}, {0x0, 0x0}},                 /* unaligned */
        {{0x0, 0x1800}, {0x0, 0x0}},                   /* part of a page */
        {{0xfffffffffffff000ull, 0x2000}, {0x0, 0x0}}, /* wraps */
        {{0x0, 0x2000}, {0x1000, 0x1000}},             /* overlaps */
    };
    (void)state;

    assert_int_equal(vfm_ms_dec_init(&d, 1), 0);
    assert_int_equal(vfm_ms_dec_expect_ram(&d, ram2, 2), 0);
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
        assert_int_equal(vfm_ms_dec_expect_ram(&d, bad[k], bad[k][1].size ? 2 : 1), -EINVAL);
    for (unsigned k = 0; k <= VFM_MS_MAX_RAM; k++)
        r[k] = (struct vfm_ms_ram_range){.iova = (uint64_t)k << 20, .size = 4096};
    assert_int_equal(vfm_ms_dec_expect_ram(&d, r, VFM_MS_MAX_RAM), 0);
    assert_int_equal(vfm_ms_dec_expect_ram(&d, r, VFM_MS_MAX_RAM + 1), -EINVAL);
    assert_int_equal(vfm_ms_dec_expect_ram(&d, NULL, 1), -EINVAL);
    vfm_ms_dec_release(&d);
}

/* Nothing is taken after the end; the decoder says where a stream stopped. */
static void test_end_and_where(void **state)
{
    struct built b;
    struct vfm_ms_dec d;
    struct vfm_ms_event ev;
    char where[64];
    uint8_t *p;
    (void)state;

    build(&b);
    assert_int_equal(vfm_ms_dec_init(&d, NDEV), 0);
    assert_string_equal(vfm_ms_dec_where(&d, where, sizeof(where)), "before its header");
    for (size_t off = 0; off < b.len;) {
        size_t n = vfm_ms_dec_want(&d, &p);
        assert_true(n > 0);
        if (off == b.rec_at[1])
            assert_string_equal(vfm_ms_dec_where(&d, where, sizeof(where)), "after 1 records");
        memcpy(p, b.buf + off, n);
        off += n;
        assert_true(vfm_ms_dec_commit(&d, n, &ev) >= 0);
        if (off == b.rec_at[2] + VFM_MS_REC_SIZE)
            assert_string_equal(vfm_ms_dec_where(&d, where, sizeof(where)),
                                "inside record 2 (device 1)");
    }
    assert_true(vfm_ms_dec_done(&d));
    assert_int_equal(vfm_ms_dec_want(&d, &p), 0);
    assert_int_equal(vfm_ms_dec_commit(&d, 1, &ev), -EBADMSG);
    assert_non_null(strstr(d.why, "after its end"));
    vfm_ms_dec_release(&d);
    assert_int_equal(vfm_ms_dec_init(&d, 0), -EINVAL);
    assert_int_equal(vfm_ms_dec_init(&d, VFM_MS_MAX_DEVICES + 1), -EINVAL);
}

static void test_ack(void **state)
{
    uint8_t a[VFM_MS_ACK_SIZE];
    int32_t st = 1;
    (void)state;

    vfm_ms_put_ack(a, VFM_MS_ANS_LOADED, -EIO);
    assert_int_equal(vfm_ms_get_ack(a, VFM_MS_ANS_LOADED, &st), 0);
    assert_int_equal(st, -EIO);
    for (size_t bit = 0; bit < sizeof(a) * 8; bit++) {
        uint8_t c[VFM_MS_ACK_SIZE];
        memcpy(c, a, sizeof(c));
        c[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_equal(vfm_ms_get_ack(c, VFM_MS_ANS_LOADED, &st), -EBADMSG);
    }
    vfm_ms_put_ack(a, VFM_MS_ANS_LOADED, 5); /* a status is 0 or an errno */
    assert_int_equal(vfm_ms_get_ack(a, VFM_MS_ANS_LOADED, &st), -EBADMSG);
    /* one message is never taken for another: a LOADED is no COMMIT */
    vfm_ms_put_ack(a, VFM_MS_ANS_LOADED, 0);
    assert_int_equal(vfm_ms_get_ack(a, VFM_MS_ANS_COMMIT, &st), -EBADMSG);
    assert_int_equal(vfm_ms_get_ack(a, VFM_MS_ANS_RUNNING, &st), -EBADMSG);
    vfm_ms_put_ack(a, VFM_MS_ANS_COMMIT, 0);
    assert_int_equal(vfm_ms_get_ack(a, VFM_MS_ANS_COMMIT, &st), 0);
}

/* ---- many streams ---- */

#define TOKEN 0x1234abcd5678ef90ull

/* A migration of NDEV devices on @n streams: out[k] is stream k (device d,
 * two DATA records and its end, on stream d mod @n); stream 0 has the
 * device list and ends last. */
static void build_lanes(struct built *out, unsigned n, uint64_t token, const char *id)
{
    uint32_t flags[NDEV] = {1, 3, 7};
    uint8_t payload[200];

    for (size_t k = 0; k < sizeof(payload); k++)
        payload[k] = (uint8_t)(k * 7);
    for (unsigned k = 0; k < n; k++) {
        struct built *b = &out[k];
        memset(b, 0, sizeof(*b));
        vfm_ms_put_lane_header(b->buf, NDEV, id, k, n, token);
        b->len = VFM_MS_HDR_LANE_SIZE;
        if (k == 0)
            put(b, VFM_MS_DEVICES, 0, flags, sizeof(flags));
        for (uint32_t d = 0; d < NDEV; d++) {
            uint64_t total = 0;
            if (d % n != k)
                continue;
            for (unsigned r = 0; r < 2; r++) {
                put(b, VFM_MS_DATA, d, payload, 50 + 30 * d + r);
                total += 50 + 30 * d + r;
            }
            put(b, VFM_MS_DEVICE_END, d, &total, 8);
        }
        put(b, VFM_MS_STREAM_END, 0, NULL, 0);
    }
}

/* Decodes one stream of many: the main one (the count learnt from its
 * header) or another (@other: expected as one of @nlanes with @token). */
static void decode_lane(const uint8_t *p, size_t len, size_t piece, bool other, uint32_t nlanes,
                        uint64_t token, const char *id, struct seen *s, struct vfm_ms_event *hdr)
{
    struct dec_opts o = {
        .ndev = NDEV, .id = id, .other = other, .nlanes = nlanes, .token = token, .hdr = hdr};
    decode_with(p, len, piece, &o, s);
}

/* 1..4 streams of 3 devices: each stream decodes whole, in any piece size;
 * each device's bytes arrive on its stream only; the main header says the
 * count and the token. */
static void test_lanes_round_trip(void **state)
{
    static const size_t pieces[] = {0, 1, 7, 96, 1000};
    (void)state;

    for (unsigned n = 2; n <= 4; n++) {
        struct built b[4];
        build_lanes(b, n, TOKEN, "mig-1");
        for (unsigned k = 0; k < n; k++)
            for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
                struct seen s;
                struct vfm_ms_event hdr = {0};
                decode_lane(b[k].buf, b[k].len, pieces[i], k != 0, n, TOKEN, "mig-1", &s, &hdr);
                if (s.ret)
                    fail_msg("stream %u of %u refused: %s", k, n, s.why);
                assert_true(s.done);
                assert_int_equal(hdr.nlanes, n);
                assert_int_equal(hdr.lane, k);
                assert_true(hdr.token == TOKEN);
                assert_int_equal(s.events[VFM_MS_EV_DEVICES], k == 0);
                for (uint32_t d = 0; d < NDEV; d++)
                    assert_int_equal(s.bytes[d], d % n == k ? 2 * (50 + 30 * d) + 1 : 0);
            }
    }
    /* one stream: the version 3 header, count 1 */
    {
        struct built b;
        struct seen s;
        struct vfm_ms_event hdr = {0};
        build(&b);
        decode_lane(b.buf, b.len, 0, false, 0, 0, NULL, &s, &hdr);
        assert_int_equal(s.ret, 0);
        assert_int_equal(hdr.nlanes, 1);
    }
}

/* Every cut of every stream stays incomplete; every bit flip is refused. */
static void test_lanes_cut_and_flipped(void **state)
{
    struct built b[3];
    (void)state;

    build_lanes(b, 3, TOKEN, NULL);
    for (unsigned k = 0; k < 3; k++) {
        for (size_t cut = 0; cut < b[k].len; cut++) {
            struct seen s;
            decode_lane(b[k].buf, cut, 0, k != 0, 3, TOKEN, NULL, &s, NULL);
            assert_int_equal(s.ret, 0);
            assert_false(s.done);
        }
        for (size_t bit = 0; bit < b[k].len * 8; bit++) {
            uint8_t copy[sizeof(b[k].buf)];
            struct seen s;
            memcpy(copy, b[k].buf, b[k].len);
            copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            decode_lane(copy, b[k].len, 0, k != 0, 3, TOKEN, NULL, &s, NULL);
            if (s.ret >= 0 || s.done)
                fail_msg("stream %u: a flip of bit %zu (byte %zu) was not refused", k, bit % 8,
                         bit / 8);
        }
    }
}

static void expect_lane_refused(const uint8_t *p, size_t len, bool other, uint32_t nlanes,
                                uint64_t token, const char *id, int err, const char *why)
{
    struct seen s;

    decode_lane(p, len, 0, other, nlanes, token, id, &s, NULL);
    assert_int_equal(s.ret, err);
    assert_false(s.done);
    if (!strstr(s.why, why))
        fail_msg("refused with \"%s\", expected \"%s\"", s.why, why);
}

/* @c: an empty stream @lane of 3 of migration TOKEN, its header only. */
static void lane_start(struct built *c, uint32_t lane)
{
    memset(c, 0, sizeof(*c));
    vfm_ms_put_lane_header(c->buf, NDEV, NULL, lane, 3, TOKEN);
    c->len = VFM_MS_HDR_LANE_SIZE;
}

/* Each rule of many streams, broken alone (every checksum valid). */
static void test_lanes_rules(void **state)
{
    struct built b[3], c;
    uint32_t flags[NDEV] = {1, 3, 7};
    uint64_t total = 5;
    uint8_t five[5] = {0};
    (void)state;

    build_lanes(b, 3, TOKEN, "mig-1");
    /* another migration's stream (its token), or another count */
    expect_lane_refused(b[1].buf, b[1].len, true, 3, TOKEN + 1, "mig-1", -EBADMSG,
                        "of another migration (its token differs)");
    expect_lane_refused(b[1].buf, b[1].len, true, 4, TOKEN, "mig-1", -EBADMSG,
                        "says 3 streams; the main one said 4");
    /* another migration's id, on any stream: a refusal */
    expect_lane_refused(b[1].buf, b[1].len, true, 3, TOKEN, "mig-2", -EACCES,
                        "not the expected 'mig-2'");
    /* the main stream where another was due, and the other way round */
    expect_lane_refused(b[0].buf, b[0].len, true, 3, TOKEN, "mig-1", -EBADMSG,
                        "a second main stream");
    /* another stream come first, on a fresh decoder: taken as that stream
     * (the receiver checks it against the main header when it comes) */
    {
        struct seen s2;
        struct vfm_ms_event hdr = {0};
        decode_lane(b[2].buf, b[2].len, 0, false, 0, 0, "mig-1", &s2, &hdr);
        assert_int_equal(s2.ret, 0);
        assert_true(s2.done);
        assert_int_equal(hdr.lane, 2);
        assert_int_equal(s2.events[VFM_MS_EV_DEVICES], 0);
        assert_int_equal(s2.bytes[2], 2 * 110 + 1);
    }
    /* a single stream's header where one of many was due */
    memset(&c, 0, sizeof(c));
    vfm_ms_put_header(c.buf, NDEV, "mig-1");
    expect_lane_refused(c.buf, VFM_MS_HDR_SIZE, true, 3, TOKEN, "mig-1", -EBADMSG,
                        "a single stream's header where one of 3 streams was due");
    /* counts out of range; an index past the count */
    vfm_ms_put_lane_header(c.buf, NDEV, NULL, 0, VFM_MS_MAX_LANES + 1, TOKEN);
    expect_lane_refused(c.buf, VFM_MS_HDR_LANE_SIZE, false, 0, 0, NULL, -EBADMSG,
                        "header is invalid");
    vfm_ms_put_lane_header(c.buf, NDEV, NULL, 0, 1, TOKEN);
    expect_lane_refused(c.buf, VFM_MS_HDR_LANE_SIZE, false, 0, 0, NULL, -EBADMSG,
                        "header is invalid");
    vfm_ms_put_lane_header(c.buf, NDEV, NULL, 3, 3, TOKEN);
    expect_lane_refused(c.buf, VFM_MS_HDR_LANE_SIZE, true, 3, TOKEN, NULL, -EBADMSG,
                        "header is invalid");
    assert_int_equal(vfm_ms_dec_expect_lane(&(struct vfm_ms_dec){0}, 1, TOKEN), -EINVAL);
    assert_int_equal(vfm_ms_dec_expect_lane(&(struct vfm_ms_dec){0}, VFM_MS_MAX_LANES + 1, TOKEN),
                     -EINVAL);

    /* a device's record on another device's stream: on the main stream, and
     * on another */
    lane_start(&c, 0);
    put(&c, VFM_MS_DEVICES, 0, flags, sizeof(flags));
    put(&c, VFM_MS_DATA, 1, five, 5);
    expect_lane_refused(c.buf, c.len, false, 0, 0, NULL, -EBADMSG,
                        "stream 0 carries device 1, which belongs on stream 1");
    lane_start(&c, 2);
    put(&c, VFM_MS_DEVICE_END, 0, &total, 8);
    expect_lane_refused(c.buf, c.len, true, 3, TOKEN, NULL, -EBADMSG,
                        "stream 2 carries device 0, which belongs on stream 0");
    /* what only the main stream carries: the device list, RAM */
    lane_start(&c, 1);
    put(&c, VFM_MS_DEVICES, 0, flags, sizeof(flags));
    expect_lane_refused(c.buf, c.len, true, 3, TOKEN, NULL, -EBADMSG,
                        "only the main stream may carry (record 0)");
    lane_start(&c, 1);
    put(&c, VFM_MS_RAM_END, 0, &(struct vfm_ms_ram_end){0}, sizeof(struct vfm_ms_ram_end));
    expect_lane_refused(c.buf, c.len, true, 3, TOKEN, NULL, -EBADMSG,
                        "only the main stream may carry (record 0)");
    /* a stream that ends before its device did; the byte count checked per
     * stream */
    lane_start(&c, 1);
    put(&c, VFM_MS_DATA, 1, five, 5);
    put(&c, VFM_MS_STREAM_END, 0, NULL, 0);
    expect_lane_refused(c.buf, c.len, true, 3, TOKEN, NULL, -EBADMSG,
                        "ended without device 1's state");
    lane_start(&c, 1);
    put(&c, VFM_MS_DATA, 1, five, 5);
    total = 6;
    put(&c, VFM_MS_DEVICE_END, 1, &total, 8);
    expect_lane_refused(c.buf, c.len, true, 3, TOKEN, NULL, -EBADMSG,
                        "device 1: 6 state bytes announced, 5 received");
    /* records numbered from 0 on each stream: the main stream's numbers on
     * another are out of order */
    lane_start(&c, 1);
    c.seq = 1;
    put(&c, VFM_MS_DATA, 1, five, 5);
    expect_lane_refused(c.buf, c.len, true, 3, TOKEN, NULL, -EBADMSG,
                        "out of order (record 1 where 0 was due)");
    /* the main stream still ends only with its own devices */
    memcpy(&c, &b[0], sizeof(c));
    c.len = c.rec_at[1]; /* header + DEVICES: device 0's records cut */
    c.seq = 1;
    put(&c, VFM_MS_STREAM_END, 0, NULL, 0);
    expect_lane_refused(c.buf, c.len, false, 0, 0, "mig-1", -EBADMSG,
                        "ended without device 0's state");
}

/* DATA_SC: device state the stream does not hash (the device's own stream
 * is checked where it loads). Taken only for devices allowed; moved
 * through the decoder (a flip in it passes here: the destination's check
 * is what catches it) or by the caller (vfm_ms_dec_passed()); its checksum
 * field must be 0, the byte counts still hold, a flip in its header is
 * refused. */
static void test_self_checked(void **state)
{
    uint32_t flags[NDEV] = {1, 3, 7};
    uint8_t payload[300];
    uint64_t total = 300;
    struct built b;
    struct vfm_ms_dec d;
    struct vfm_ms_event ev;
    (void)state;

    for (size_t k = 0; k < sizeof(payload); k++)
        payload[k] = (uint8_t)(k * 3);
    memset(&b, 0, sizeof(b));
    vfm_ms_put_header(b.buf, NDEV, NULL);
    b.len = VFM_MS_HDR_SIZE;
    put(&b, VFM_MS_DEVICES, 0, flags, sizeof(flags));
    b.rec_at[b.nrec++] = b.len;
    vfm_ms_put_record(b.buf + b.len, VFM_MS_DATA_SC, 1, b.seq++, 0, sizeof(payload));
    memcpy(b.buf + b.len + VFM_MS_REC_SIZE, payload, sizeof(payload));
    b.len += VFM_MS_REC_SIZE + sizeof(payload);
    for (uint32_t dev = 0; dev < NDEV; dev++) {
        uint64_t t = dev == 1 ? total : 0;
        put(&b, VFM_MS_DEVICE_END, dev, &t, 8);
    }
    put(&b, VFM_MS_STREAM_END, 0, NULL, 0);

    /* not allowed: refused at its header, naming why */
    expect_refused(b.buf, b.len, NDEV, "this side's destination does not check it");

    /* allowed, through the decoder: the bytes as sent, even flipped */
    for (int flip = 0; flip < 2; flip++) {
        size_t off = 0;
        uint64_t got = 0;
        bool done = false;
        assert_int_equal(vfm_ms_dec_init(&d, NDEV), 0);
        assert_int_equal(vfm_ms_dec_allow_self_checked(&d, 1), 0);
        if (flip)
            b.buf[b.rec_at[1] + VFM_MS_REC_SIZE + 10] ^= 1;
        while (off < b.len) {
            size_t used;
            int ret = vfm_ms_dec_feed(&d, b.buf + off, b.len - off, &used, &ev);
            off += used;
            assert_true(ret >= 0);
            if (ret && ev.kind == VFM_MS_EV_DATA) {
                assert_true(ev.self_checked);
                assert_int_equal(ev.device, 1);
                assert_int_equal(ev.data[10], (uint8_t)(payload[10] ^ flip));
                got += ev.len;
            }
            done |= ret && ev.kind == VFM_MS_EV_STREAM_END;
        }
        assert_true(done);
        assert_int_equal(got, sizeof(payload));
        vfm_ms_dec_release(&d);
        if (flip)
            b.buf[b.rec_at[1] + VFM_MS_REC_SIZE + 10] ^= 1;
    }

    /* allowed, moved by the caller in two parts */
    {
        size_t off = 0, left = 0;
        uint32_t dev = 99;
        int events = 0;
        assert_int_equal(vfm_ms_dec_init(&d, NDEV), 0);
        assert_int_equal(vfm_ms_dec_allow_self_checked(&d, 1), 0);
        assert_int_equal(vfm_ms_dec_allow_self_checked(&d, VFM_MS_MAX_DEVICES), -EINVAL);
        assert_false(vfm_ms_dec_passable(&d, &dev, &left));
        assert_int_equal(vfm_ms_dec_passed(&d, 1, &ev), -EBADMSG); /* not due: fails for good */
        vfm_ms_dec_release(&d);
        assert_int_equal(vfm_ms_dec_init(&d, NDEV), 0);
        assert_int_equal(vfm_ms_dec_allow_self_checked(&d, 1), 0);
        while (off < b.len) {
            size_t used;
            int ret;
            if (vfm_ms_dec_passable(&d, &dev, &left)) {
                assert_int_equal(dev, 1);
                assert_int_equal(left, sizeof(payload));
                assert_int_equal(vfm_ms_dec_passed(&d, 100, &ev), 0);
                assert_true(vfm_ms_dec_passable(&d, &dev, &left));
                assert_int_equal(left, 200);
                assert_int_equal(vfm_ms_dec_passed(&d, 200, &ev), 1);
                assert_true(ev.kind == VFM_MS_EV_DATA && !ev.data && ev.len == 300);
                off += sizeof(payload);
                events++;
                continue;
            }
            {
                /* no further than the decoder asks: the payload is ours */
                uint8_t *where;
                size_t want = vfm_ms_dec_want(&d, &where);
                ret = vfm_ms_dec_feed(&d, b.buf + off, want, &used, &ev);
            }
            off += used;
            assert_true(ret >= 0);
        }
        assert_int_equal(events, 1);
        assert_true(vfm_ms_dec_done(&d)); /* DEVICE_END's count held */
        vfm_ms_dec_release(&d);
    }

    /* a checksum in its header, an empty one, a flip in its header */
    {
        struct built c;
        memcpy(&c, &b, sizeof(c));
        vfm_ms_put_record(c.buf + c.rec_at[1], VFM_MS_DATA_SC, 1, 1, 5, sizeof(payload));
        assert_int_equal(vfm_ms_dec_init(&d, NDEV), 0);
        vfm_ms_dec_allow_self_checked(&d, 1);
        {
            size_t used;
            int ret = 0;
            for (size_t off = 0; off < c.len && ret >= 0; off += used)
                ret = vfm_ms_dec_feed(&d, c.buf + off, c.len - off, &used, &ev);
            assert_int_equal(ret, -EBADMSG);
            assert_non_null(strstr(d.why, "invalid record 1"));
        }
        vfm_ms_dec_release(&d);
        for (size_t bit = 0; bit < VFM_MS_REC_SIZE * 8; bit++) {
            size_t used, off = 0;
            int ret = 0;
            memcpy(&c, &b, sizeof(c));
            c.buf[c.rec_at[1] + bit / 8] ^= (uint8_t)(1u << (bit % 8));
            assert_int_equal(vfm_ms_dec_init(&d, NDEV), 0);
            vfm_ms_dec_allow_self_checked(&d, 1);
            while (off < c.len && ret >= 0) {
                ret = vfm_ms_dec_feed(&d, c.buf + off, c.len - off, &used, &ev);
                off += used;
            }
            if (ret >= 0)
                fail_msg("a flip of bit %zu of the DATA_SC header was not refused", bit);
            vfm_ms_dec_release(&d);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_every_bit_flip),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_end_and_where),
        cmocka_unit_test(test_ack),
        cmocka_unit_test(test_ram_round_trip),
        cmocka_unit_test(test_ram_rules),
        cmocka_unit_test(test_ram_ranges),
        cmocka_unit_test(test_lanes_round_trip),
        cmocka_unit_test(test_lanes_cut_and_flipped),
        cmocka_unit_test(test_lanes_rules),
        cmocka_unit_test(test_self_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
