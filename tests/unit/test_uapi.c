/* SPDX-License-Identifier: MIT */
/* Names of states and flags, both ways; error names. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <vfiomig/uapi.h>

static const char *const names[] = {"ERROR",    "STOP",        "RUNNING",  "STOP_COPY",
                                    "RESUMING", "RUNNING_P2P", "PRE_COPY", "PRE_COPY_P2P"};

static void test_state_names(void **state)
{
    uint32_t s;
    (void)state;

    for (uint32_t i = 0; i < VFM_STATE_COUNT; i++) {
        char buf[64];
        assert_string_equal(vfm_state_name(i), names[i]);
        assert_int_equal(vfm_state_parse(names[i], &s), 0);
        assert_int_equal(s, i);
        /* lower case, '-' for '_', the uAPI prefix, the number */
        for (size_t k = 0; names[i][k]; k++)
            buf[k] = names[i][k] == '_' ? '-' : (char)(names[i][k] | 0x20);
        buf[strlen(names[i])] = '\0';
        assert_int_equal(vfm_state_parse(buf, &s), 0);
        assert_int_equal(s, i);
        snprintf(buf, sizeof(buf), "vfio_device_state_%s", names[i]);
        assert_int_equal(vfm_state_parse(buf, &s), 0);
        assert_int_equal(s, i);
        snprintf(buf, sizeof(buf), "%u", i);
        assert_int_equal(vfm_state_parse(buf, &s), 0);
        assert_int_equal(s, i);
    }
    assert_null(vfm_state_name(8));
    assert_null(vfm_state_name(UINT32_MAX));
    assert_string_equal(vfm_state_str(8), "INVALID");
}

static void test_state_parse_errors(void **state)
{
    static const char *const bad[] = {
        "",         "8",     "99",   "-1",           "RUN",
        "RUNNINGX", "STOP ", "0x10", "RUNNING,STOP", "VFIO_DEVICE_STATE_",
        "1a"};
    uint32_t s = 77;
    (void)state;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(vfm_state_parse(bad[i], &s), -EINVAL);
    assert_int_equal(vfm_state_parse(NULL, &s), -EINVAL);
    assert_int_equal(s, 77);
}

static void test_flags(void **state)
{
    uint32_t f = 0;
    char buf[64];
    (void)state;

    assert_int_equal(vfm_flags_parse("stop-copy,p2p,pre-copy", &f), 0);
    assert_int_equal(f, 7);
    assert_int_equal(vfm_flags_parse("STOP_COPY", &f), 0);
    assert_int_equal(f, 1);
    assert_int_equal(vfm_flags_parse("VFIO_MIGRATION_P2P,stop_copy", &f), 0);
    assert_int_equal(f, 3);
    assert_int_equal(vfm_flags_parse("5", &f), 0);
    assert_int_equal(f, 5);
    assert_int_equal(vfm_flags_parse("0x3", &f), 0);
    assert_int_equal(f, 3);
    assert_int_equal(vfm_flags_parse("0", &f), 0); /* parses; the planner refuses it */
    assert_int_equal(f, 0);
    assert_int_equal(vfm_flags_parse("8", &f), -EINVAL);
    assert_int_equal(vfm_flags_parse("p2p,", &f), -EINVAL);
    assert_int_equal(vfm_flags_parse("dirty", &f), -EINVAL);
    assert_int_equal(vfm_flags_parse("", &f), -EINVAL);

    vfm_flags_format(7, buf, sizeof(buf));
    assert_string_equal(buf, "STOP_COPY|P2P|PRE_COPY");
    vfm_flags_format(1, buf, sizeof(buf));
    assert_string_equal(buf, "STOP_COPY");
    vfm_flags_format(0, buf, sizeof(buf));
    assert_string_equal(buf, "0");
    vfm_flags_format(0x13, buf, sizeof(buf));
    assert_string_equal(buf, "STOP_COPY|P2P|0x10");
    assert_int_equal(vfm_flags_format(7, buf, 4), (int)strlen("STOP_COPY|P2P|PRE_COPY"));
    assert_string_equal(buf, "STO");
}

static void test_errors(void **state)
{
    (void)state;
    assert_string_equal(vfm_err_name(-EINVAL), "EINVAL");
    assert_string_equal(vfm_err_name(ENODEV), "ENODEV");
    assert_string_equal(vfm_err_name(-ENOMSG), "ENOMSG");
    assert_string_equal(vfm_err_name(0), "OK");
    assert_string_equal(vfm_err_name(-99999), "E?");
    assert_non_null(strstr(vfm_strerror(-ENODEV), "session"));
    assert_non_null(vfm_version());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_names),
        cmocka_unit_test(test_state_parse_errors),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
