/* SPDX-License-Identifier: MIT */
/* The conformance suite (include/vfiomig/conform.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/conform.h>
#include <vfiomig/fsm.h>

#include "../common/internal.h"

#define CHUNK (64u * 1024u)

struct run {
    const struct vfm_conform_config *cfg;
    struct vfm_conform_summary *sum;
    struct vfm_endpoint *ep;
    uint32_t flags;
    uint64_t limit;
    uint8_t *saved; /* a whole stop-copy state (NULL when it is 0 bytes) */
    size_t saved_len;
    bool have_saved;       /* the state was read to its end */
    bool saved_over_limit; /* ... or not, for the data limit: no verdict */
    uint64_t load_written; /* bytes written in the current load session */
    bool feature_raw_seen; /* a raw feature request got a device's answer */
};

static void report(struct run *r, const char *rule, enum vfm_conform_verdict v,
                   const char *expected, const char *seen, const char *fmt, ...) VFM_PRINTF(6, 7);

static void report(struct run *r, const char *rule, enum vfm_conform_verdict v,
                   const char *expected, const char *seen, const char *fmt, ...)
{
    struct vfm_conform_check c = {.rule = rule, .verdict = v};
    va_list ap;

    c.number = ++r->sum->checks;
    va_start(ap, fmt);
    vsnprintf(c.what, sizeof(c.what), fmt, ap);
    va_end(ap);
    snprintf(c.expected, sizeof(c.expected), "%s", expected ? expected : "");
    snprintf(c.seen, sizeof(c.seen), "%s", seen ? seen : "");
    if (v == VFM_CONFORM_PASS)
        r->sum->passed++;
    else if (v == VFM_CONFORM_FAIL)
        r->sum->failed++;
    else
        r->sum->skipped++;
    if (r->cfg->report)
        r->cfg->report(r->cfg->ctx, &c);
}

/* "EINVAL", "success", "state STOP"... into a buffer */
static const char *res(char *buf, size_t len, int ret)
{
    snprintf(buf, len, "%s", ret ? vfm_err_name(ret) : "success");
    return buf;
}

static bool saving(uint32_t s)
{
    return s == VFM_STATE_STOP_COPY || s == VFM_STATE_PRE_COPY || s == VFM_STATE_PRE_COPY_P2P;
}

static uint32_t get(struct run *r)
{
    uint32_t s = VFM_STATE_COUNT;
    if (vfm_ep_get_state(r->ep, &s))
        return VFM_STATE_COUNT;
    return s;
}

/* Reads the session until it gives <= 0 or @limit bytes; appends to *buf
 * when @buf. Return: the last read's result (0, -ENOMSG, an error) or 1
 * when the limit stopped it. */
static ssize_t read_until(struct run *r, uint8_t **buf, size_t *len, uint64_t limit)
{
    uint8_t *tmp = malloc(CHUNK);
    uint64_t got = 0;
    ssize_t n = -ENOMEM;

    if (!tmp)
        return -ENOMEM;
    while (got < limit) {
        n = vfm_ep_read(r->ep, tmp, CHUNK);
        if (n <= 0)
            break;
        if (buf) {
            uint8_t *p = realloc(*buf, *len + (size_t)n);
            if (!p) {
                n = -ENOMEM;
                break;
            }
            memcpy(p + *len, tmp, (size_t)n);
            *buf = p;
            *len += (size_t)n;
        }
        got += (uint64_t)n;
    }
    free(tmp);
    return got >= limit ? 1 : n;
}

/* What read_until()'s result @n says of a rule that passes when @pass: a
 * read stopped by the data limit (1) says nothing of the device, so the
 * rule is skipped, not failed. */
#define OVER_LIMIT "more than --data-limit: not read to its end"
/* ... and what a skipped check's line says */
#define EXPECT(n, expected) ((n) == 1 ? OVER_LIMIT : (expected))
static enum vfm_conform_verdict judged(ssize_t n, bool pass)
{
    return n == 1 ? VFM_CONFORM_SKIP : pass ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL;
}

static int write_all(struct run *r, const uint8_t *buf, size_t len)
{
    for (size_t off = 0; off < len;) {
        size_t k = len - off < CHUNK ? len - off : CHUNK;
        ssize_t w = vfm_ep_write(r->ep, buf + off, k);
        if (w < 0)
            return (int)w;
        if (w == 0)
            return -EIO;
        off += (size_t)w;
        r->load_written += (uint64_t)w;
    }
    return 0;
}

/* Moves the device to @s with one request (the device walks the planner's
 * path). Return: 0 or the request's error, described in @why. */
static int go(struct run *r, uint32_t from, uint32_t s, char *why, size_t wlen)
{
    char b[64];
    int ret = vfm_ep_set_state(r->ep, s);
    uint32_t now;

    if (ret) {
        snprintf(why, wlen, "%s -> %s failed: %s", vfm_state_str(from), vfm_state_str(s),
                 res(b, sizeof(b), ret));
        return ret;
    }
    now = get(r);
    if (now != s) { /* GET tells the truth, whatever SET answered */
        snprintf(why, wlen, "%s -> %s answered success, but GET says %s", vfm_state_str(from),
                 vfm_state_str(s), now < VFM_STATE_COUNT ? vfm_state_str(now) : "nothing");
        return -EIO;
    }
    if (s == VFM_STATE_RESUMING)
        r->load_written = 0;
    return 0;
}

/* Out of RESUMING: by loading what was written; else, when what was
 * written is the start of the saved state, by writing the rest of it and
 * loading that; else by reset (the uAPI's way to abort a load). A device
 * whose reset leaves it in RESUMING (libvfio-user's) is then stuck.
 * Return: 0 (the device is out of RESUMING) or an error in @why. */
static int leave_resuming(struct run *r, char *why, size_t wlen)
{
    int load = vfm_ep_set_state(r->ep, VFM_STATE_STOP), rst;

    if (get(r) != VFM_STATE_RESUMING)
        return 0;
    if (r->have_saved && r->load_written <= r->saved_len &&
        write_all(r, r->saved + r->load_written, r->saved_len - r->load_written) == 0)
        vfm_ep_set_state(r->ep, VFM_STATE_STOP);
    if (get(r) != VFM_STATE_RESUMING)
        return 0;
    rst = vfm_ep_reset(r->ep);
    if (get(r) != VFM_STATE_RESUMING)
        return 0;
    snprintf(why, wlen, "stuck in RESUMING: -> STOP gave %s, reset gave %s", vfm_err_name(load),
             rst ? vfm_err_name(rst) : "success");
    return -EBUSY;
}

/*
 * Moves the device from wherever it is to @s along the planner's path (for
 * RESUMING, with the saved state written unless @empty), in a fresh data
 * session when @s has one. Reset is used only where nothing else leaves a
 * state (ERROR, an aborted load), so a device whose reset is refused in
 * some states is still assessed; reset's own behaviour is the reset rule's.
 * Return: 0, or an error described in @why.
 */
static int reach_ex(struct run *r, uint32_t s, bool empty, char *why, size_t wlen)
{
    char b[64];
    uint32_t cur = get(r);
    int ret;

    if (cur == VFM_STATE_COUNT) {
        snprintf(why, wlen, "reading the device's state (GET) failed");
        return -EIO;
    }
    if (cur == VFM_STATE_ERROR) {
        ret = vfm_ep_reset(r->ep);
        cur = get(r);
        if (cur == VFM_STATE_ERROR || cur == VFM_STATE_COUNT) {
            snprintf(why, wlen, "the device is in ERROR and reset answered %s",
                     res(b, sizeof(b), ret));
            return ret ? ret : -EIO;
        }
    }
    if (cur == VFM_STATE_RESUMING) {
        if ((ret = leave_resuming(r, why, wlen)))
            return ret;
        cur = get(r);
    }
    if (saving(cur)) {
        /* a fresh session: out of the saving group first (never STOP_COPY
         * -> PRE_COPY, which the planner refuses) */
        uint32_t out = cur == VFM_STATE_STOP_COPY ? VFM_STATE_STOP : VFM_STATE_RUNNING;
        if ((ret = go(r, cur, out, why, wlen)))
            return ret;
        cur = out;
    }
    if (cur != s && (ret = go(r, cur, s, why, wlen)))
        return ret;
    if (s == VFM_STATE_RESUMING && !empty && r->have_saved &&
        (ret = write_all(r, r->saved, r->saved_len))) {
        snprintf(why, wlen, "writing a saved state in RESUMING failed: %s", res(b, sizeof(b), ret));
        return ret;
    }
    return 0;
}

static int reach(struct run *r, uint32_t s, char *why, size_t wlen)
{
    return reach_ex(r, s, false, why, wlen);
}

/* Is there a data session now? Probed with zero-length data calls. */
static bool has_session(struct run *r, uint32_t state)
{
    uint8_t b = 0;
    if (state == VFM_STATE_RESUMING)
        return vfm_ep_write(r->ep, &b, 0) >= 0;
    {
        ssize_t n = vfm_ep_read(r->ep, &b, 0);
        return n >= 0 || n == -ENOMSG;
    }
}

static void check_flags(struct run *r)
{
    char seen[64];
    bool ok = (r->flags & VFM_MIGRATION_STOP_COPY) && !(r->flags & ~VFM_MIGRATION_ALL);

    vfm_flags_format(r->flags, seen, sizeof(seen));
    report(r, "flags", ok ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
           "STOP_COPY, optionally P2P and PRE_COPY, no other bit", seen,
           "the advertised migration flags (%s) are a valid combination", seen);
}

/* The device's whole stop-copy state, kept for the load checks; and
 * MIG_DATA_SIZE, asked in STOP just before, against its length. */
static void get_saved(struct run *r)
{
    char why[160], seen[160];
    uint64_t size = 0;
    int sret;
    ssize_t n;

    if (reach(r, VFM_STATE_STOP, why, sizeof(why)))
        return;
    sret = vfm_ep_data_size(r->ep, &size);
    if (reach(r, VFM_STATE_STOP_COPY, why, sizeof(why)))
        return;
    n = read_until(r, &r->saved, &r->saved_len, r->limit);
    r->have_saved = n == 0;
    r->saved_over_limit = n == 1;
    if (n != 0) {
        free(r->saved);
        r->saved = NULL;
        r->saved_len = 0;
    }
    if (sret == -ENOTTY) {
        report(r, "data-size", VFM_CONFORM_SKIP, "the device does not answer MIG_DATA_SIZE", NULL,
               "MIG_DATA_SIZE equals the bytes STOP_COPY gives");
        return;
    }
    if (!r->have_saved)
        return; /* the round-trip check reports it */
    if (sret)
        snprintf(seen, sizeof(seen), "MIG_DATA_SIZE failed: %s", vfm_err_name(sret));
    else
        snprintf(seen, sizeof(seen), "MIG_DATA_SIZE %llu, STOP_COPY gave %zu bytes",
                 (unsigned long long)size, r->saved_len);
    report(r, "data-size", !sret && size == r->saved_len ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
           "the same number", seen,
           "MIG_DATA_SIZE, asked in STOP, equals the bytes STOP_COPY gives");
}

/* One request from @from to @to. */
static void check_pair(struct run *r, uint32_t from, uint32_t to)
{
    struct vfm_fsm_path path;
    bool forbidden = vfm_fsm_plan(r->flags, from, to, &path) != 0;
    char why[160], seen[160], b[64];
    uint32_t now;
    int ret;

    if (forbidden && r->cfg->kernel && !r->cfg->kernel_stop_copy_to_pre_copy &&
        from == VFM_STATE_STOP_COPY && (to == VFM_STATE_PRE_COPY || to == VFM_STATE_PRE_COPY_P2P)) {
        report(r, "refusal", VFM_CONFORM_SKIP,
               "not sent to a kernel unless asked: kernels before the 2026 fix loop for ever on it",
               NULL, "%s -> %s is refused", vfm_state_str(from), vfm_state_str(to));
        return;
    }
    if (reach(r, from, why, sizeof(why))) {
        report(r, forbidden ? "refusal" : "arc", VFM_CONFORM_FAIL,
               "the device reaches the state to start from", why, "%s -> %s", vfm_state_str(from),
               vfm_state_str(to));
        return;
    }
    ret = vfm_ep_set_state(r->ep, to);
    now = get(r);
    if (!ret && to == VFM_STATE_RESUMING && from != VFM_STATE_RESUMING)
        r->load_written = 0;
    if (forbidden) {
        snprintf(seen, sizeof(seen), "%s, then the device in %s", res(b, sizeof(b), ret),
                 vfm_state_str(now));
        report(r, "refusal", ret == -EINVAL && now == from ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
               "EINVAL, and the state unchanged", seen, "%s -> %s is refused", vfm_state_str(from),
               to < VFM_STATE_COUNT ? vfm_state_str(to) : "state 8");
        return;
    }
    snprintf(seen, sizeof(seen), "%s, then GET says %s", res(b, sizeof(b), ret),
             vfm_state_str(now));
    {
        char exp[64];
        snprintf(exp, sizeof(exp), "success, then GET says %s", vfm_state_str(to));
        /* leaving RESUMING through STOP needs the state loaded: without
         * one (the data limit kept it from being read) no verdict */
        bool no_state = from == VFM_STATE_RESUMING && r->saved_over_limit && ret;
        if (no_state)
            snprintf(seen, sizeof(seen), "no whole state to load (%s)", OVER_LIMIT);
        report(r, "arc",
               no_state            ? VFM_CONFORM_SKIP
               : !ret && now == to ? VFM_CONFORM_PASS
                                   : VFM_CONFORM_FAIL,
               exp, seen, "%s -> %s (%u arcs)", vfm_state_str(from), vfm_state_str(to),
               path.len - 1);
    }
    if (ret)
        return;
    {
        enum vfm_fsm_session k = path.len > 1 ? vfm_fsm_arc_session(path.states[path.len - 2], to)
                                              : VFM_FSM_SESSION_NONE;
        bool opens = k == VFM_FSM_SESSION_OPEN_SAVE || k == VFM_FSM_SESSION_OPEN_LOAD;
        int so = vfm_ep_session_opened(r->ep);

        if (so >= 0) {
            report(r, "data-fd", (so == 1) == opens ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
                   opens ? "a data_fd" : "no data_fd", so ? "a data_fd" : "no data_fd",
                   "%s -> %s returns a data_fd exactly when it opens a session",
                   vfm_state_str(from), vfm_state_str(to));
        } else {
            bool want = saving(to) || to == VFM_STATE_RESUMING, got = has_session(r, to);
            report(r, "data-fd", want == got ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
                   want ? "a data session" : "no data session",
                   got ? "a data session" : "no data session",
                   "after %s -> %s, a data session exactly in a saving state or RESUMING",
                   vfm_state_str(from), vfm_state_str(to));
        }
    }
}

static void check_pairs(struct run *r)
{
    for (uint32_t from = VFM_STATE_STOP; from < VFM_STATE_COUNT; from++) {
        if (!vfm_fsm_state_supported(r->flags, from))
            continue;
        for (uint32_t to = 0; to <= VFM_STATE_COUNT; to++)
            check_pair(r, from, to);
    }
}

/* After @end ends the session opened in @state, its data call fails with
 * ENODEV. */
static void check_enodev(struct run *r, uint32_t state, uint32_t end, bool by_reset)
{
    char why[160], seen[64];
    uint8_t b[16] = {0};
    ssize_t n;
    int ret;

    if (reach(r, state, why, sizeof(why))) {
        report(r, "enodev", VFM_CONFORM_FAIL, "the device reaches the session's state", why,
               "%s's session", vfm_state_str(state));
        return;
    }
    if (state != VFM_STATE_RESUMING)
        (void)vfm_ep_read(r->ep, b, 1); /* the session is in use */
    ret = by_reset ? vfm_ep_reset(r->ep) : vfm_ep_set_state(r->ep, end);
    if (ret && by_reset) {
        /* reset's own behaviour is the reset rule's finding, not this one's */
        report(r, "enodev", VFM_CONFORM_SKIP, "a reset that ends the session",
               res(seen, sizeof(seen), ret), "%s's session ended by reset", vfm_state_str(state));
        return;
    }
    if (ret) {
        report(r, "enodev", VFM_CONFORM_FAIL, "the session can be ended",
               res(seen, sizeof(seen), ret), "%s's session ended by %s", vfm_state_str(state),
               by_reset ? "reset" : vfm_state_str(end));
        return;
    }
    n = state == VFM_STATE_RESUMING ? vfm_ep_write(r->ep, b, 1) : vfm_ep_read(r->ep, b, 1);
    snprintf(seen, sizeof(seen), "%s",
             n >= 0 ? "data (the session goes on)" : vfm_err_name((int)n));
    report(r, "enodev", n == -ENODEV ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL, "ENODEV", seen,
           "%s's session's %s fails with ENODEV after %s%s", vfm_state_str(state),
           state == VFM_STATE_RESUMING ? "write" : "read", by_reset ? "a reset" : "-> ",
           by_reset ? "" : vfm_state_str(end));
}

static void check_stop_copy_end(struct run *r)
{
    char why[160], seen[64];
    uint8_t b[16] = {0};
    ssize_t n;

    if (reach(r, VFM_STATE_STOP_COPY, why, sizeof(why))) {
        report(r, "stop-copy-end", VFM_CONFORM_FAIL, "the device reaches STOP_COPY", why,
               "STOP_COPY reads to a clean end");
        return;
    }
    n = read_until(r, NULL, NULL, r->limit);
    if (n == 0)
        n = vfm_ep_read(r->ep, b, sizeof(b)); /* and stays at the end */
    snprintf(seen, sizeof(seen), "%s",
             n == 1  ? OVER_LIMIT
             : n < 0 ? vfm_err_name((int)n)
             : n     ? "more data after the end"
                     : "0");
    report(r, "stop-copy-end", judged(n, n == 0),
           EXPECT(n, "reads give the state, then 0, and 0 again"), seen,
           "STOP_COPY reads to a clean end");
}

static void check_load(struct run *r, const uint8_t *state, size_t len, size_t cut,
                       const char *what)
{
    char why[160] = "", seen[160], b[64];
    uint32_t now;
    int ret;

    if (reach_ex(r, VFM_STATE_RESUMING, true, why, sizeof(why)) ||
        (ret = write_all(r, state, cut)) != 0) {
        if (!why[0])
            snprintf(why, sizeof(why), "writing the state failed");
        report(r, cut < len ? "truncated" : "round-trip", VFM_CONFORM_FAIL,
               "the state can be written in RESUMING", why, "%s", what);
        return;
    }
    ret = vfm_ep_set_state(r->ep, VFM_STATE_STOP);
    now = get(r);
    snprintf(seen, sizeof(seen), "RESUMING -> STOP: %s, then the device in %s",
             res(b, sizeof(b), ret), vfm_state_str(now));
    if (cut < len)
        report(r, "truncated", ret ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL, "RESUMING -> STOP fails",
               seen, "%s", what);
    else
        report(r, "round-trip", !ret && now == VFM_STATE_STOP ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
               "RESUMING -> STOP succeeds", seen, "%s", what);
}

static void check_saved(struct run *r)
{
    if (!r->have_saved) {
        report(r, "round-trip", r->saved_over_limit ? VFM_CONFORM_SKIP : VFM_CONFORM_FAIL,
               r->saved_over_limit ? OVER_LIMIT : "a whole state from STOP_COPY",
               r->saved_over_limit ? OVER_LIMIT : "reading the state failed",
               "a stop-copy state loads into the device");
        return;
    }
    check_load(r, r->saved, r->saved_len, r->saved_len, "a stop-copy state loads into the device");
    if (r->saved_len < 2) {
        report(r, "truncated", VFM_CONFORM_SKIP, "a state of at least 2 bytes", NULL,
               "a truncated state is refused");
        return;
    }
    check_load(r, r->saved, r->saved_len, r->saved_len / 2, "a state cut in half is refused");
    check_load(r, r->saved, r->saved_len, r->saved_len - 1,
               "a state without its last byte is refused");
}

/* Writes @len bytes of @state in RESUMING in @piece-byte writes (0: as
 * write_all() does), then one more byte when @extra; then RESUMING -> STOP.
 * Fills @seen with what happened. Return: 0 when every write was taken, the
 * load succeeded and the device is in STOP; else LOAD_WRITE_REFUSED and/or
 * LOAD_REFUSED; -1 when RESUMING was not reached (described in @seen). */
#define LOAD_WRITE_REFUSED 1
#define LOAD_REFUSED 2
static int load_as(struct run *r, const uint8_t *state, size_t len, size_t piece, bool extra,
                   char *seen, size_t slen)
{
    char why[160];
    int wret = 0, ret;
    uint32_t now;

    if (reach_ex(r, VFM_STATE_RESUMING, true, why, sizeof(why))) {
        snprintf(seen, slen, "%s", why);
        return -1;
    }
    for (size_t off = 0; off < len && !wret;) {
        size_t k = piece && len - off > piece ? piece : len - off;
        wret = write_all(r, state + off, k);
        off += k;
    }
    if (!wret && extra) {
        uint8_t b = 0;
        ssize_t w = vfm_ep_write(r->ep, &b, 1);
        wret = w == 1 ? 0 : w < 0 ? (int)w : -EIO;
    }
    ret = vfm_ep_set_state(r->ep, VFM_STATE_STOP);
    now = get(r);
    snprintf(seen, slen, "write: %s; RESUMING -> STOP: %s, then the device in %s",
             wret ? vfm_err_name(wret) : "accepted", ret ? vfm_err_name(ret) : "success",
             now < VFM_STATE_COUNT ? vfm_state_str(now) : "?");
    return (wret ? LOAD_WRITE_REFUSED : 0) | (ret || now != VFM_STATE_STOP ? LOAD_REFUSED : 0);
}

static bool need_saved(struct run *r, const char *rule, const char *what)
{
    if (r->have_saved && r->saved_len)
        return true;
    report(r, rule, VFM_CONFORM_SKIP, "a stop-copy state of at least 1 byte", NULL, "%s", what);
    return false;
}

/* A state with one byte changed is refused (as an incomplete one is). */
static void check_corrupted(struct run *r, size_t at, const char *what)
{
    char seen[160];
    uint8_t *bad;
    int ret;

    if (!need_saved(r, "corrupted", what))
        return;
    bad = malloc(r->saved_len);
    if (!bad)
        return;
    memcpy(bad, r->saved, r->saved_len);
    bad[at] ^= 0x5a;
    ret = load_as(r, bad, r->saved_len, 0, false, seen, sizeof(seen));
    /* a refused write whose bytes the load then takes anyway is no refusal
     * (mtty: EFAULT, then RESUMING -> STOP succeeds) */
    report(r, "corrupted", ret > 0 && (ret & LOAD_REFUSED) ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
           "RESUMING -> STOP fails (whatever the writes answered)", seen, "%s", what);
    free(bad);
}

/* Loads in small pieces, then saves again while stopped: the same bytes. */
static void check_pieces_restore(struct run *r)
{
    const char *what = "a state written in small pieces loads as one write does";
    size_t piece = r->saved_len <= 65536 ? 7 : 65537;
    uint8_t *again = NULL;
    size_t alen = 0, diff;
    char seen[160], why[160];
    ssize_t n;
    int ret;

    if (!need_saved(r, "pieces", what))
        return;
    ret = load_as(r, r->saved, r->saved_len, piece, false, seen, sizeof(seen));
    report(r, "pieces", ret == 0 ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
           "every write accepted, then RESUMING -> STOP succeeds", seen, "%s (%zu-byte writes)",
           what, piece);
    if (ret)
        return;
    what = "a loaded state, saved again while stopped, gives the bytes loaded";
    if (go(r, VFM_STATE_STOP, VFM_STATE_STOP_COPY, why, sizeof(why))) {
        report(r, "restore", VFM_CONFORM_FAIL, "STOP -> STOP_COPY succeeds", why, "%s", what);
        return;
    }
    n = read_until(r, &again, &alen, r->limit);
    for (diff = 0; diff < alen && diff < r->saved_len && again[diff] == r->saved[diff]; diff++)
        ;
    if (n)
        snprintf(seen, sizeof(seen), "reading it failed: %s",
                 n == 1 ? OVER_LIMIT : vfm_err_name((int)n));
    else if (alen == r->saved_len && diff == alen)
        snprintf(seen, sizeof(seen), "the same %zu bytes", alen);
    else
        snprintf(seen, sizeof(seen),
                 "%zu bytes where %zu were loaded, the first difference at byte %zu", alen,
                 r->saved_len, diff);
    report(r, "restore", judged(n, !n && alen == r->saved_len && diff == alen),
           EXPECT(n, "the bytes that were loaded"), seen, "%s", what);
    free(again);
}

/* A byte past the end of a state is refused. */
static void check_extended(struct run *r)
{
    const char *what = "a RESUMING write past the end of a state is refused";
    char seen[160];
    int ret;

    if (!need_saved(r, "extended", what))
        return;
    ret = load_as(r, r->saved, r->saved_len, 0, true, seen, sizeof(seen));
    report(r, "extended", ret > 0 ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
           "the extra byte's write, or RESUMING -> STOP, fails", seen, "%s", what);
}

/* Closed and opened again in @state: RUNNING. */
static void check_reopen(struct run *r, uint32_t state)
{
    char why[160], seen[160];
    uint8_t b;
    uint32_t now;
    int ret;

    if (reach(r, state, why, sizeof(why))) {
        report(r, "reopen", VFM_CONFORM_FAIL, "the device reaches the state", why,
               "a device closed in %s is RUNNING when opened again", vfm_state_str(state));
        return;
    }
    if (state == VFM_STATE_STOP_COPY)
        (void)vfm_ep_read(r->ep, &b, 1); /* a session in use */
    ret = vfm_ep_reopen(r->ep);
    if (ret == -ENOTTY) {
        report(r, "reopen", VFM_CONFORM_SKIP, "the transport has no device fd to close and reopen",
               NULL, "a device closed in %s is RUNNING when opened again", vfm_state_str(state));
        return;
    }
    now = get(r);
    if (ret)
        snprintf(seen, sizeof(seen), "opening it again failed: %s", vfm_err_name(ret));
    else
        snprintf(seen, sizeof(seen), "%s",
                 now < VFM_STATE_COUNT ? vfm_state_str(now) : "GET failed");
    report(r, "reopen", !ret && now == VFM_STATE_RUNNING ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
           "RUNNING", seen, "a device closed in %s is RUNNING when opened again",
           vfm_state_str(state));
}

/* The argsz of a well-formed request below: its 8-byte header and 16 bytes
 * of data (room for any of the features asked). */
#define FEAT_ARGSZ (8u + 16u)

/* One malformed (or probing) VFIO_DEVICE_FEATURE and the answer it must
 * get (0: success). */
static void feature_case(struct run *r, uint32_t argsz, uint32_t flags, int want, const char *what)
{
    uint8_t data[16] = {0};
    char seen[64], exp[64];
    int ret;

    if (flags & VFM_FEATURE_SET) { /* a SET of MIG_DEVICE_STATE names the state it has */
        uint32_t st = get(r);
        memcpy(data, &st, sizeof(st));
        memset(data + 4, 0xff, 4); /* data_fd -1 */
    }
    ret = vfm_ep_feature_raw(r->ep, argsz, flags, data, sizeof(data));
    if (ret == -ENOTTY && !r->feature_raw_seen) {
        /* the backend has no raw path, or the device said ENOTTY: tell
         * them apart with a request every device answers */
        uint8_t d[8];
        if (vfm_ep_feature_raw(r->ep, 8 + sizeof(d), VFM_FEATURE_MIGRATION | VFM_FEATURE_GET, d,
                               sizeof(d)) == -ENOTTY) {
            report(r, "feature", VFM_CONFORM_SKIP, "the transport carries no raw feature request",
                   NULL, "%s", what);
            return;
        }
    }
    r->feature_raw_seen = true;
    snprintf(seen, sizeof(seen), "%s", ret ? vfm_err_name(ret) : "success");
    snprintf(exp, sizeof(exp), "%s", want ? vfm_err_name(want) : "success");
    report(r, "feature", ret == want ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL, exp, seen, "%s", what);
}

/* VFIO_DEVICE_FEATURE's own checks (vfio_ioctl_device_feature). */
static void check_features(struct run *r)
{
    char why[160];

    if (reach(r, VFM_STATE_RUNNING, why, sizeof(why)))
        return;
    feature_case(r, FEAT_ARGSZ, VFM_FEATURE_MIG_DEVICE_STATE | VFM_FEATURE_GET | VFM_FEATURE_SET,
                 -EINVAL, "GET and SET together (without PROBE) are refused with EINVAL");
    feature_case(r, 8, VFM_FEATURE_MIGRATION | VFM_FEATURE_GET, -EINVAL,
                 "an argsz with no room for the data is refused with EINVAL");
    feature_case(r, FEAT_ARGSZ, VFM_FEATURE_MIGRATION | VFM_FEATURE_SET, -EINVAL,
                 "SET on MIGRATION (GET only) is refused with EINVAL");
    feature_case(r, FEAT_ARGSZ, 0x3ff | VFM_FEATURE_GET, -ENOTTY,
                 "an unknown feature is refused with ENOTTY");
    feature_case(r, FEAT_ARGSZ, VFM_FEATURE_MIGRATION | VFM_FEATURE_GET | (1u << 20), -EINVAL,
                 "an undefined flag bit is refused with EINVAL");
    feature_case(r, FEAT_ARGSZ, VFM_FEATURE_MIGRATION | VFM_FEATURE_GET | VFM_FEATURE_PROBE, 0,
                 "PROBE of MIGRATION with GET succeeds");
    feature_case(r, FEAT_ARGSZ, VFM_FEATURE_MIGRATION | VFM_FEATURE_SET | VFM_FEATURE_PROBE,
                 -EINVAL, "PROBE of MIGRATION with SET is refused with EINVAL");
    feature_case(r, FEAT_ARGSZ,
                 VFM_FEATURE_MIG_DEVICE_STATE | VFM_FEATURE_GET | VFM_FEATURE_SET |
                     VFM_FEATURE_PROBE,
                 0, "PROBE of MIG_DEVICE_STATE with GET and SET succeeds");
}

/* DMA dirty logging: a device without it says ENOTTY to all three; one
 * with it keeps its log as the uAPI says, checked with an IOVA this client
 * never mapped (no device can write there: its pages must be clean). */
#define LOG_IOVA 0x7f0000000000ull
static void check_dma_log(struct run *r)
{
    struct vfm_dma_range one = {LOG_IOVA, 4096}, two[2] = {{LOG_IOVA, 8192}, {LOG_IOVA + 4096, 4096}};
    uint64_t page = 4096, bm[1];
    char seen[64];
    int ret = vfm_ep_dma_log_start(r->ep, &one, 1, &page), rs, rr;

    if (ret == -ENOTTY) {
        rs = vfm_ep_dma_log_stop(r->ep);
        rr = vfm_ep_dma_log_report(r->ep, LOG_IOVA, 4096, 4096, bm);
        snprintf(seen, sizeof(seen), "STOP %s, REPORT %s", rs ? vfm_err_name(rs) : "success",
                 rr ? vfm_err_name(rr) : "success");
        report(r, "dma-log", rs == -ENOTTY && rr == -ENOTTY ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
               "ENOTTY", seen, "a device without DMA logging says ENOTTY to START, STOP and REPORT");
        return;
    }
    report(r, "dma-log", ret ? VFM_CONFORM_FAIL : VFM_CONFORM_PASS, "success or ENOTTY",
           res(seen, sizeof(seen), ret), "DMA_LOGGING_START of one page");
    if (ret)
        return;
    report(r, "dma-log", page >= 4096 && !(page & (page - 1)) ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
           "a power of two", NULL, "START gives back the page size it keeps (%llu)",
           (unsigned long long)page);
    ret = vfm_ep_dma_log_start(r->ep, &one, 1, &(uint64_t){4096});
    report(r, "dma-log", ret ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL, "an error",
           res(seen, sizeof(seen), ret), "a second START while logging is refused");
    ret = vfm_ep_dma_log_report(r->ep, LOG_IOVA, 4096, 4096, bm);
    if (ret == -EOPNOTSUPP) {
        /* a START that succeeds over a log that reports nothing (the
         * kernel's mtty: log ops that return 0, 0 and EOPNOTSUPP) */
        report(r, "dma-log", VFM_CONFORM_SKIP,
               "the device reports nothing (REPORT: EOPNOTSUPP): no log to check", NULL,
               "a page no one can write (never mapped) is reported clean");
        vfm_ep_dma_log_stop(r->ep);
        return;
    }
    report(r, "dma-log", !ret && !bm[0] ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
           "success, bit 0 clear", ret ? vfm_err_name(ret) : bm[0] ? "bit 0 set" : NULL,
           "a page no one can write (never mapped) is reported clean");
    rr = vfm_ep_feature_raw(r->ep, 8 + 24, VFM_FEATURE_DMA_LOGGING_REPORT | VFM_FEATURE_GET,
                            (uint64_t[4]){LOG_IOVA, 4096, 2048, 0}, 32);
    if (rr != -ENOTTY || r->feature_raw_seen)
        report(r, "dma-log", rr == -EINVAL ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL, "EINVAL",
               res(seen, sizeof(seen), rr), "a REPORT at a page size below 4096 is refused");
    ret = vfm_ep_dma_log_stop(r->ep);
    report(r, "dma-log", ret ? VFM_CONFORM_FAIL : VFM_CONFORM_PASS, "success",
           res(seen, sizeof(seen), ret), "DMA_LOGGING_STOP");
    ret = vfm_ep_dma_log_report(r->ep, LOG_IOVA, 4096, 4096, bm);
    report(r, "dma-log", ret ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL, "an error",
           res(seen, sizeof(seen), ret), "a REPORT after STOP is refused");
    one.iova += 512;
    ret = vfm_ep_dma_log_start(r->ep, &one, 1, &(uint64_t){4096});
    report(r, "dma-log", ret == -EINVAL ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL, "EINVAL",
           res(seen, sizeof(seen), ret), "a START with a range not aligned to its page size is refused");
    if (!ret)
        vfm_ep_dma_log_stop(r->ep);
    ret = vfm_ep_dma_log_start(r->ep, two, 2, &(uint64_t){4096});
    report(r, "dma-log", ret == -EINVAL ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL, "EINVAL",
           res(seen, sizeof(seen), ret), "a START with overlapping ranges is refused");
    if (!ret)
        vfm_ep_dma_log_stop(r->ep);
}

static void check_precopy(struct run *r)
{
    bool p2p = r->flags & VFM_MIGRATION_P2P;
    uint32_t pc = p2p ? VFM_STATE_PRE_COPY_P2P : VFM_STATE_PRE_COPY;
    uint8_t *stream = NULL;
    size_t len = 0;
    uint64_t initial = 0, dirty = 0;
    char why[160], seen[160];
    ssize_t n;
    int ret, so;

    if (!(r->flags & VFM_MIGRATION_PRE_COPY)) {
        report(r, "precopy-info", VFM_CONFORM_SKIP, "the device has no PRE_COPY", NULL,
               "pre-copy information");
        return;
    }
    if (reach(r, VFM_STATE_PRE_COPY, why, sizeof(why))) {
        report(r, "precopy-info", VFM_CONFORM_FAIL, "the device reaches PRE_COPY", why,
               "pre-copy information in PRE_COPY");
        return;
    }
    ret = vfm_ep_precopy_info(r->ep, &initial, &dirty);
    if (ret == -ENOTTY) {
        report(r, "precopy-info", VFM_CONFORM_SKIP, "the transport carries no pre-copy information",
               NULL, "pre-copy information");
    } else {
        snprintf(seen, sizeof(seen), "%s (initial %llu, dirty %llu)",
                 ret ? vfm_err_name(ret) : "success", (unsigned long long)initial,
                 (unsigned long long)dirty);
        report(r, "precopy-info", ret ? VFM_CONFORM_FAIL : VFM_CONFORM_PASS, "success", seen,
               "pre-copy information in PRE_COPY");
    }
    n = read_until(r, &stream, &len, r->limit);
    if (ret == 0 && n == -ENOMSG) {
        uint64_t initial1 = 0, dirty1 = 0;
        int ret1 = vfm_ep_precopy_info(r->ep, &initial1, &dirty1);
        snprintf(seen, sizeof(seen), "initial_bytes %llu at first, %zu bytes read, then %s %llu",
                 (unsigned long long)initial, len, ret1 ? vfm_err_name(ret1) : "initial_bytes",
                 (unsigned long long)initial1);
        report(r, "precopy-info",
               !ret1 && len >= initial && initial1 == 0 ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
               "at least initial_bytes read, then initial_bytes 0", seen,
               "initial_bytes counts down to 0 as pre-copy's data is read");
    }
    snprintf(seen, sizeof(seen), "%s after %zu bytes",
             n == 0   ? "0 (the end of the whole stream)"
             : n == 1 ? OVER_LIMIT
                      : vfm_err_name((int)n),
             len);
    report(r, "precopy-enomsg", judged(n, n == -ENOMSG), EXPECT(n, "ENOMSG"), seen,
           "a read at the temporary end of the pre-copy data");
    if (n != -ENOMSG && n != 0) {
        free(stream);
        return;
    }
    if (p2p && (ret = vfm_ep_set_state(r->ep, pc)) == 0) {
        n = read_until(r, &stream, &len, r->limit);
        snprintf(seen, sizeof(seen), "%s",
                 n == 0   ? "0"
                 : n == 1 ? OVER_LIMIT
                          : vfm_err_name((int)n));
        report(r, "precopy-enomsg", judged(n, n == -ENOMSG), EXPECT(n, "ENOMSG"), seen,
               "PRE_COPY -> PRE_COPY_P2P keeps the session, to its temporary end");
    }
    ret = vfm_ep_set_state(r->ep, VFM_STATE_STOP_COPY);
    if (ret) {
        report(r, "precopy-enomsg", VFM_CONFORM_FAIL, "success", vfm_err_name(ret),
               "%s -> STOP_COPY", vfm_state_str(pc));
        free(stream);
        return;
    }
    so = vfm_ep_session_opened(r->ep);
    if (so >= 0)
        report(r, "precopy-enomsg", so ? VFM_CONFORM_FAIL : VFM_CONFORM_PASS, "no new data_fd",
               so ? "a new data_fd" : "no new data_fd",
               "%s -> STOP_COPY keeps the pre-copy session",
               vfm_state_str(p2p ? pc : VFM_STATE_PRE_COPY));
    ret = vfm_ep_precopy_info(r->ep, &initial, &dirty);
    if (ret != -ENOTTY)
        report(r, "precopy-info", ret == -EINVAL ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL, "EINVAL",
               ret ? vfm_err_name(ret) : "success", "pre-copy information in STOP_COPY");
    n = read_until(r, &stream, &len, r->limit);
    snprintf(seen, sizeof(seen), "%s", n == 0 ? "0" : n == 1 ? OVER_LIMIT : vfm_err_name((int)n));
    report(r, "stop-copy-end", judged(n, n == 0), EXPECT(n, "0"), seen,
           "STOP_COPY after pre-copy reads to a clean end");
    if (n == 0)
        check_load(r, stream, len, len, "a pre-copy + stop-copy stream loads into the device");
    free(stream);
}

/* The caller's way to make the device re-initialise (reinit_len). */
static int reinit(struct run *r)
{
    const struct vfm_conform_config *c = r->cfg;
    return vfm_ep_region_write(r->ep, c->reinit_region, c->reinit_offset, &c->reinit_value,
                               c->reinit_len);
}

/* One precopy info call: 0 and the three, or the error; @seen says what. */
static int info3(struct run *r, uint64_t *in, uint32_t *fl, char *seen, size_t len)
{
    uint64_t di = 0;
    int ret = vfm_ep_precopy_info_flags(r->ep, in, &di, fl);

    if (ret)
        snprintf(seen, len, "%s", vfm_err_name(ret));
    else
        snprintf(seen, len, "flags 0x%x, initial_bytes %llu", *fl, (unsigned long long)*in);
    return ret;
}

static void check_precopy_v2(struct run *r)
{
    bool trigger = r->cfg->reinit_len > 0;
    uint8_t *stream = NULL;
    size_t len = 0;
    uint64_t in = 0, in2 = 0;
    uint32_t fl = 0, fl2 = 0;
    char why[160], seen[160], b[64];
    int ret, ret2;
    ssize_t n;

    if (!(r->flags & VFM_MIGRATION_PRE_COPY)) {
        ret = vfm_ep_precopy_v2(r->ep);
        report(r, "precopy-v2", ret == -EINVAL || ret == -ENOTTY ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
               "EINVAL (ENOTTY: no such feature)", res(b, sizeof(b), ret),
               "a device without PRE_COPY refuses the MIG_PRECOPY_INFOv2 opt-in");
        return;
    }
    /* v1: before any opt-in */
    if (reach(r, VFM_STATE_PRE_COPY, why, sizeof(why))) {
        report(r, "precopy-v2", VFM_CONFORM_FAIL, "the device reaches PRE_COPY", why,
               "precopy info's flags before the v2 opt-in");
        return;
    }
    ret = info3(r, &in, &fl, seen, sizeof(seen));
    if (ret == -ENOTTY) {
        report(r, "precopy-v2", VFM_CONFORM_SKIP, "the transport carries no pre-copy information",
               NULL, "precopy info's flags");
        return;
    }
    report(r, "precopy-v2", !ret && !fl ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL, "success, flags 0",
           seen, "before the v2 opt-in, precopy info's flags carry nothing");
    if (trigger) {
        ret = reinit(r);
        ret2 = ret ? ret : info3(r, &in, &fl, seen, sizeof(seen));
        if (ret)
            snprintf(seen, sizeof(seen), "the re-initialising write: %s", vfm_err_name(ret));
        report(r, "precopy-v2", !ret2 && !fl ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
               "success, flags 0", seen,
               "before the v2 opt-in, a re-initialisation sets no flag either");
    }
    reach(r, VFM_STATE_RUNNING, why, sizeof(why));

    /* the opt-in */
    ret = vfm_ep_feature_raw(r->ep, 8, VFM_FEATURE_MIG_PRECOPY_INFOV2 | VFM_FEATURE_GET, NULL, 0);
    ret2 = vfm_ep_precopy_v2(r->ep);
    if (ret2 == -ENOTTY) {
        report(r, "precopy-v2", VFM_CONFORM_PASS, "success, or ENOTTY (not offered)", "ENOTTY",
               "the MIG_PRECOPY_INFOv2 opt-in (reported unsupported)");
        report(r, "precopy-v2", VFM_CONFORM_SKIP,
               "MIG_PRECOPY_INFOv2 is not offered (ENOTTY): the device is v1 only", NULL,
               "REINIT after the v2 opt-in");
        return;
    }
    report(r, "precopy-v2", ret2 ? VFM_CONFORM_FAIL : VFM_CONFORM_PASS,
           "success, or ENOTTY (not offered)", res(b, sizeof(b), ret2),
           "the MIG_PRECOPY_INFOv2 opt-in (PROBE, then SET)");
    if (ret2)
        return;
    report(r, "precopy-v2", ret == -EINVAL ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL, "EINVAL",
           res(b, sizeof(b), ret), "a GET of MIG_PRECOPY_INFOv2 is refused (SET only)");

    /* v2 */
    if (reach(r, VFM_STATE_PRE_COPY, why, sizeof(why))) {
        report(r, "precopy-v2", VFM_CONFORM_FAIL, "the device reaches PRE_COPY", why,
               "precopy info's flags after the v2 opt-in");
        return;
    }
    ret = info3(r, &in, &fl, seen, sizeof(seen));
    report(r, "precopy-v2", !ret && !fl ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
           "success, flags 0", seen, "after the v2 opt-in, a fresh session reports no REINIT");
    n = read_until(r, &stream, &len, r->limit);
    if (!trigger) {
        report(r, "precopy-v2", VFM_CONFORM_SKIP,
               "no way to make this device re-initialise was given (reinit_len; `vfiomig "
               "conform --reinit`)",
               NULL, "a re-initialisation is reported once, with new initial_bytes");
        goto out;
    }
    if (n != -ENOMSG) {
        report(r, "precopy-v2", VFM_CONFORM_FAIL, "the temporary end (ENOMSG)",
               n == 1 ? OVER_LIMIT : vfm_err_name((int)n),
               "pre-copy read to its temporary end before the re-initialisation");
        goto out;
    }
    ret = reinit(r);
    if (ret) {
        snprintf(seen, sizeof(seen), "the re-initialising write: %s", vfm_err_name(ret));
        report(r, "precopy-v2", VFM_CONFORM_FAIL, "success", seen,
               "a re-initialisation is reported once, with new initial_bytes");
        goto out;
    }
    ret = info3(r, &in, &fl, seen, sizeof(seen));
    ret2 = vfm_ep_precopy_info_flags(r->ep, &in2, &(uint64_t){0}, &fl2);
    if (!ret && !ret2)
        snprintf(seen + strlen(seen), sizeof(seen) - strlen(seen), "; then flags 0x%x", fl2);
    report(r, "precopy-v2",
           !ret && !ret2 && fl == VFM_PRECOPY_INFO_REINIT && in > 0 && fl2 == 0 ? VFM_CONFORM_PASS
                                                                               : VFM_CONFORM_FAIL,
           "REINIT with initial_bytes above 0, then flags 0", seen,
           "a re-initialisation is reported once, with new initial_bytes");
    len = 0;
    n = read_until(r, &stream, &len, r->limit);
    ret = info3(r, &in2, &fl2, seen, sizeof(seen));
    snprintf(seen + strlen(seen), sizeof(seen) - strlen(seen), " after %zu bytes (%s)", len,
             n == -ENOMSG ? "the temporary end" : n == 1 ? OVER_LIMIT : vfm_err_name((int)n));
    report(r, "precopy-v2",
           n == -ENOMSG && !ret && in2 == 0 && len >= in ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
           "at least the new initial_bytes read, then initial_bytes 0", seen,
           "the new initial_bytes fall to 0 as pre-copy's data is read");
out:
    free(stream);
    reach(r, VFM_STATE_RUNNING, why, sizeof(why));
}

static void check_reset(struct run *r)
{
    char why[160], seen[160], b[64];

    for (uint32_t s = VFM_STATE_STOP; s < VFM_STATE_COUNT; s++) {
        uint32_t now;
        int ret;

        if (!vfm_fsm_state_supported(r->flags, s))
            continue;
        if (reach(r, s, why, sizeof(why))) {
            report(r, "reset", VFM_CONFORM_FAIL, "the device reaches the state", why,
                   "reset from %s", vfm_state_str(s));
            continue;
        }
        ret = vfm_ep_reset(r->ep);
        now = get(r);
        snprintf(seen, sizeof(seen), "%s, then the device in %s", res(b, sizeof(b), ret),
                 vfm_state_str(now));
        report(r, "reset", !ret && now == VFM_STATE_RUNNING ? VFM_CONFORM_PASS : VFM_CONFORM_FAIL,
               "success, then RUNNING", seen, "reset from %s returns to RUNNING", vfm_state_str(s));
    }
    report(r, "reset", VFM_CONFORM_SKIP, "no request leads a healthy device to ERROR", NULL,
           "reset from ERROR returns to RUNNING");
}

int vfm_conform_run(const struct vfm_conform_config *cfg, struct vfm_conform_summary *sum)
{
    struct run r = {.cfg = cfg, .sum = sum};
    int ret;

    memset(sum, 0, sizeof(*sum));
    if (!cfg || !cfg->ep)
        return -EINVAL;
    r.ep = cfg->ep;
    r.limit = cfg->data_limit ? cfg->data_limit : (1ull << 30);
    ret = vfm_ep_flags(r.ep, &r.flags);
    if (ret)
        return ret;
    sum->flags = r.flags;
    check_flags(&r);
    if (!(r.flags & VFM_MIGRATION_STOP_COPY) || (r.flags & ~VFM_MIGRATION_ALL))
        return 1; /* nothing else can be planned */
    get_saved(&r);
    check_pairs(&r);
    check_enodev(&r, VFM_STATE_STOP_COPY, VFM_STATE_STOP, false);
    check_enodev(&r, VFM_STATE_STOP_COPY, 0, true);
    if (r.have_saved)
        check_enodev(&r, VFM_STATE_RESUMING, VFM_STATE_STOP, false);
    if (r.flags & VFM_MIGRATION_PRE_COPY)
        check_enodev(&r, VFM_STATE_PRE_COPY, VFM_STATE_RUNNING, false);
    check_stop_copy_end(&r);
    check_saved(&r);
    if (r.have_saved && r.saved_len) {
        check_corrupted(&r, 0, "a state with its first byte changed is refused");
        check_corrupted(&r, r.saved_len / 2,
                        "a state with a byte in its middle changed is refused");
    }
    check_extended(&r);
    check_pieces_restore(&r);
    check_precopy(&r);
    check_precopy_v2(&r);
    check_features(&r);
    check_dma_log(&r);
    check_reopen(&r, VFM_STATE_STOP_COPY);
    check_reopen(&r, VFM_STATE_STOP);
    check_reset(&r);
    {
        /* leave the device running, as it was found */
        char why[160];
        reach(&r, VFM_STATE_RUNNING, why, sizeof(why));
    }
    free(r.saved);
    return sum->failed ? 1 : 0;
}
