/* SPDX-License-Identifier: MIT */
/* The VERSION message's JSON capabilities, read and written with json-c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include <vfiomig/vfio_user.h>

void vfm_vu_caps_default(struct vfm_vu_caps *caps)
{
    memset(caps, 0, sizeof(*caps));
    caps->max_msg_fds = 1;
    caps->max_data_xfer_size = VFM_VU_DEFAULT_MAX_XFER;
    caps->max_dma_maps = 65535;
    caps->pgsizes = 4096;
}

/* A non-negative integer member, bounded. 1 found, 0 absent, -EINVAL bad. */
static int get_uint(struct json_object *obj, const char *key, uint64_t max, uint64_t *out)
{
    struct json_object *v;
    int64_t n;

    if (!json_object_object_get_ex(obj, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_int))
        return -EINVAL;
    errno = 0;
    n = json_object_get_int64(v);
    if (errno || n < 0 || (uint64_t)n > max)
        return -EINVAL;
    *out = (uint64_t)n;
    return 1;
}

int vfm_vu_caps_parse(const char *json, size_t len, struct vfm_vu_caps *caps)
{
    struct json_object *top, *c, *m;
    struct json_tokener *tok;
    uint64_t v;
    int ret = -EINVAL, r;

    vfm_vu_caps_default(caps);
    if (len == 0)
        return 0; /* no JSON: all defaults */
    if (json[len - 1] != '\0' || strlen(json) != len - 1)
        return -EINVAL; /* not NUL-terminated exactly at the end */
    tok = json_tokener_new();
    if (!tok)
        return -ENOMEM;
    top = json_tokener_parse_ex(tok, json, (int)len);
    if (!top || json_tokener_get_error(tok) != json_tokener_success ||
        json_tokener_get_parse_end(tok) != len - 1) {
        json_object_put(top);
        json_tokener_free(tok);
        return -EINVAL;
    }
    json_tokener_free(tok);
    if (!json_object_is_type(top, json_type_object))
        goto out;
    if (!json_object_object_get_ex(top, "capabilities", &c)) {
        ret = 0;
        goto out;
    }
    if (!json_object_is_type(c, json_type_object))
        goto out;
    if ((r = get_uint(c, "max_msg_fds", 1024, &v)) < 0)
        goto out;
    if (r)
        caps->max_msg_fds = (uint32_t)v;
    if ((r = get_uint(c, "max_data_xfer_size", UINT32_MAX, &v)) < 0)
        goto out;
    if (r) {
        if (v == 0)
            goto out;
        caps->max_data_xfer_size = (uint32_t)v;
    }
    if ((r = get_uint(c, "max_dma_maps", UINT32_MAX, &v)) < 0)
        goto out;
    if (r)
        caps->max_dma_maps = (uint32_t)v;
    if ((r = get_uint(c, "pgsizes", INT64_MAX, &v)) < 0)
        goto out;
    if (r)
        caps->pgsizes = v;
    if (json_object_object_get_ex(c, "migration", &m)) {
        if (!json_object_is_type(m, json_type_object))
            goto out;
        if ((r = get_uint(m, "pgsize", INT64_MAX, &v)) < 0)
            goto out;
        if (r)
            caps->migration_pgsize = v;
    }
    if (json_object_object_get_ex(c, "vfiomig", &m)) {
        struct json_object *b;
        if (!json_object_is_type(m, json_type_object))
            goto out;
        if (json_object_object_get_ex(m, "precopy_info", &b)) {
            if (!json_object_is_type(b, json_type_boolean))
                goto out;
            caps->precopy_info = json_object_get_boolean(b);
        }
        if (json_object_object_get_ex(m, "whole_bodies", &b)) {
            if (!json_object_is_type(b, json_type_boolean))
                goto out;
            caps->whole_bodies = json_object_get_boolean(b);
        }
        if (json_object_object_get_ex(m, "data_fd", &b)) {
            if (!json_object_is_type(b, json_type_boolean))
                goto out;
            caps->data_fd = json_object_get_boolean(b);
        }
    }
    ret = 0;
out:
    json_object_put(top);
    return ret;
}

char *vfm_vu_caps_format(const struct vfm_vu_caps *caps)
{
    struct json_object *top = json_object_new_object(), *c = json_object_new_object();
    char *s = NULL;

    if (!top || !c)
        goto out;
    json_object_object_add(c, "max_msg_fds", json_object_new_int64(caps->max_msg_fds));
    json_object_object_add(c, "max_data_xfer_size",
                           json_object_new_int64(caps->max_data_xfer_size));
    json_object_object_add(c, "max_dma_maps", json_object_new_int64(caps->max_dma_maps));
    json_object_object_add(c, "pgsizes", json_object_new_int64((int64_t)caps->pgsizes));
    if (caps->migration_pgsize) {
        struct json_object *m = json_object_new_object();
        if (!m)
            goto out;
        json_object_object_add(m, "pgsize", json_object_new_int64((int64_t)caps->migration_pgsize));
        json_object_object_add(c, "migration", m);
    }
    if (caps->precopy_info || caps->whole_bodies || caps->data_fd) {
        struct json_object *x = json_object_new_object();
        if (!x)
            goto out;
        if (caps->precopy_info)
            json_object_object_add(x, "precopy_info", json_object_new_boolean(1));
        if (caps->whole_bodies)
            json_object_object_add(x, "whole_bodies", json_object_new_boolean(1));
        if (caps->data_fd)
            json_object_object_add(x, "data_fd", json_object_new_boolean(1));
        json_object_object_add(c, "vfiomig", x);
    }
    json_object_object_add(top, "capabilities", c);
    c = NULL;
    s = strdup(json_object_to_json_string_ext(top, JSON_C_TO_STRING_PLAIN));
out:
    json_object_put(c);
    json_object_put(top);
    return s;
}
