/* SPDX-License-Identifier: MIT */
/*
 * What a migration tells its caller (include/vfiomig/migrate.h): the JSON
 * report tools read, and the Perfetto timeline.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include <vfiomig/migrate.h>

#include "../common/internal.h"

/* A number of milliseconds, printed with microsecond precision. */
static struct json_object *ms(double v)
{
    char s[48];

    snprintf(s, sizeof(s), "%.3f", v);
    return json_object_new_double_s(v, s);
}

static void add(struct json_object *o, const char *key, struct json_object *v)
{
    json_object_object_add(o, key, v);
}

char *vfm_mig_report_json(const struct vfm_mig_report *r, const char *side, int result)
{
    struct json_object *o = json_object_new_object(), *pc = json_object_new_object(),
                       *ph = json_object_new_object(), *db = json_object_new_array(),
                       *ds = json_object_new_array(), *di = json_object_new_array();
    char *s = NULL;

    if (!o || !pc || !ph || !db || !ds || !di) {
        json_object_put(pc);
        json_object_put(ph);
        json_object_put(db);
        json_object_put(ds);
        json_object_put(di);
        goto out;
    }
    add(o, "ok", json_object_new_boolean(!result));
    add(o, "side", json_object_new_string(side ? side : ""));
    add(o, "devices", json_object_new_int64(r->ndev));
    add(o, "downtime_ms", ms(r->downtime_ns / 1e6));
    add(o, "bytes", json_object_new_uint64(r->bytes));
    add(o, "stream_bytes", json_object_new_uint64(r->stream_bytes));
    add(o, "streams", json_object_new_int64(r->nstreams ? r->nstreams : 1));
    add(o, "spliced_bytes", json_object_new_uint64(r->spliced_bytes));
    {
        struct json_object *sb = json_object_new_array();
        for (unsigned k = 0; sb && k < (r->nstreams ? r->nstreams : 1) && k < VFM_MIG_MAX_STREAMS;
             k++)
            json_object_array_add(sb, json_object_new_uint64(r->stream_bytes_by[k]));
        if (sb)
            add(o, "stream_bytes_by", sb);
    }
    add(o, "rolled_back", json_object_new_boolean(r->rolled_back));
    add(o, "committed", json_object_new_boolean(r->committed));
    add(o, "outcome_unknown", json_object_new_boolean(r->outcome_unknown));
    add(o, "sources_reset", json_object_new_int64(r->sources_reset));
    add(o, "sources_lost", json_object_new_int64(r->sources_lost));
    add(pc, "devices", json_object_new_int64(r->precopy_devices));
    add(pc, "rounds", json_object_new_int64(r->precopy_rounds));
    add(pc, "converged", json_object_new_boolean(r->precopy_converged));
    add(pc, "bytes", json_object_new_uint64(r->precopy_bytes));
    add(pc, "expected_downtime_ms",
        ms(r->precopy_rounds && r->expected_downtime_ns >= 0 ? r->expected_downtime_ns / 1e6
                                                             : -1.0));
    add(pc, "estimate", json_object_new_string(vfm_mig_estimate_name(r->precopy_estimate)));
    add(pc, "drained", json_object_new_boolean(r->precopy_drained));
    add(pc, "reinits", json_object_new_int64(r->precopy_reinits));
    add(pc, "switchover_acks", json_object_new_int64(r->switchover_acks));
    add(pc, "switchover_ack_wait_ms", ms(r->switchover_ack_wait_ns / 1e6));
    add(o, "precopy", pc);
    {
        json_object *ram = json_object_new_object();
        add(ram, "logged_sources", json_object_new_int64(r->ram_logged));
        add(ram, "bytes", json_object_new_uint64(r->ram_bytes));
        add(ram, "precopy_bytes", json_object_new_uint64(r->ram_precopy_bytes));
        add(ram, "precopy_pages", json_object_new_uint64(r->ram_precopy_pages));
        add(ram, "downtime_pages", json_object_new_uint64(r->ram_downtime_pages));
        char d[24];
        snprintf(d, sizeof(d), "%016llx", (unsigned long long)r->ram_digest);
        add(ram, "digest", json_object_new_string(d));
        add(ram, "match", json_object_new_boolean(r->ram_match));
        add(o, "ram", ram);
    }
    for (int p = 0; p < VFM_PHASE_COUNT; p++)
        add(ph, vfm_mig_phase_name(p), ms(r->phase_ns[p] / 1e6));
    add(o, "phases_ms", ph);
    for (unsigned i = 0; i < r->ndev && r->devices; i++) {
        json_object_array_add(db, json_object_new_uint64(r->devices[i].bytes));
        json_object_array_add(ds, ms(r->devices[i].save_ns / 1e6));
        json_object_array_add(di,
                              json_object_new_string(vfm_state_str(r->devices[i].initial_state)));
    }
    add(o, "device_bytes", db);
    add(o, "device_save_ms", ds);
    add(o, "device_initial_state", di);
    add(o, "notes", json_object_new_string(r->notes));
    add(o, "error", json_object_new_string(result ? r->message : ""));
    s = strdup(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
out:
    json_object_put(o);
    return s;
}

int vfm_mig_trace_write(const struct vfm_mig_report *r, const char *path)
{
    FILE *f = fopen(path, "w");
    bool first = true;

    if (!f)
        return -errno;
    fprintf(f, "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n");
    for (int side = 0; side < 2; side++) {
        for (unsigned d = 0; d < r->ndev; d++) {
            /* a row per device and side; a span per state, until the next */
            int64_t prev_t = r->t_start_ns;
            uint32_t prev_state = VFM_STATE_RUNNING;
            bool any = false;
            fprintf(f,
                    "%s{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%u,"
                    "\"args\":{\"name\":\"%s device %u\"}}",
                    first ? "" : ",\n", side + 1, d, side ? "destination" : "source", d);
            first = false;
            for (unsigned k = 0; k < r->nspans; k++) {
                const struct vfm_mig_span *s = &r->spans[k];
                if (s->side != side || s->device != d)
                    continue;
                if (any)
                    fprintf(f,
                            ",\n{\"ph\":\"X\",\"name\":\"%s\",\"pid\":%d,\"tid\":%u,"
                            "\"ts\":%.3f,\"dur\":%.3f}",
                            vfm_state_str(prev_state), side + 1, d, (prev_t - r->t_start_ns) / 1e3,
                            (s->t_ns - prev_t) / 1e3);
                prev_t = s->t_ns;
                prev_state = s->state;
                any = true;
            }
            if (any) {
                int64_t end = r->t_end_ns > prev_t ? r->t_end_ns : prev_t + 1000;
                fprintf(f,
                        ",\n{\"ph\":\"X\",\"name\":\"%s\",\"pid\":%d,\"tid\":%u,\"ts\":%.3f,"
                        "\"dur\":%.3f}",
                        vfm_state_str(prev_state), side + 1, d, (prev_t - r->t_start_ns) / 1e3,
                        (end - prev_t) / 1e3);
            }
        }
    }
    fprintf(f, ",\n{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":1,\"args\":{\"name\":"
               "\"sources\"}},\n{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":2,\"args\":"
               "{\"name\":\"destinations\"}}\n]}\n");
    return fclose(f) ? -errno : 0;
}
