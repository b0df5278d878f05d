/* test_setup_view.c — the setup page's decisions (core/setup_view.h): which notice, which
 * step is next, which buttons are secondary and which hints show, from the session's mode,
 * the status of each mode and the flavor; and that clearing the view wipes its CSRF token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "core/setup_view.h"

/* A view of the session's mode `mode` with both modes enabled, test in state `st` (the
 * signing secret stored when whsec), live not connected. */
static void view_of(setup_view_t *v, int mode, int st, int whsec)
{
    memset(v, 0, sizeof(*v));
    memcpy(v->org, "00D000000000001EAA", ORGID_LEN + 1);
    v->mode = mode;
    v->connect_flavor = 1;
    for (int m = 0; m < MODE_COUNT; m++) {
        v->modes[m].enabled = 1;
        v->modes[m].state = SV_NONE;
    }
    v->modes[MODE_TEST].state = st;
    v->modes[MODE_TEST].whsec = whsec;
}

typedef struct decide_case {
    int state, whsec;
    int notice, authorize, whsec_step, finish, authorize_secondary, save_secondary;
} decide_case_t;

static void test_setup_view_steps_follow_the_session_mode(void **state)
{
    static const decide_case_t cases[] = {
        /* state          whsec  notice               authorize   whsec step  finish      auth2 save2 */
        {SV_NONE, 0, SV_NOTICE_START, SV_CURRENT, SV_TODO, SV_TODO, 0, 1},
        {SV_NONE, 1, SV_NOTICE_START, SV_CURRENT, SV_DONE, SV_TODO, 0, 1},
        {SV_CONNECTED, 0, SV_NOTICE_CONNECTED, SV_DONE, SV_CURRENT, SV_TODO, 1, 0},
        {SV_CONNECTED, 1, SV_NOTICE_COMPLETE, SV_DONE, SV_DONE, SV_CURRENT, 1, 1},
        {SV_REAUTH, 0, SV_NOTICE_REAUTH, SV_CURRENT, SV_TODO, SV_TODO, 0, 1},
        {SV_REAUTH, 1, SV_NOTICE_REAUTH, SV_CURRENT, SV_DONE, SV_TODO, 0, 1},
        {SV_UNREADABLE, 0, SV_NOTICE_REAUTH, SV_CURRENT, SV_TODO, SV_TODO, 0, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const decide_case_t *c = &cases[i];
        setup_view_t v;
        view_of(&v, MODE_TEST, c->state, c->whsec);
        setup_view_decide(&v);
        if (v.notice != c->notice || v.steps[SV_STEP_AUTHORIZE] != c->authorize ||
            v.steps[SV_STEP_WHSEC] != c->whsec_step || v.steps[SV_STEP_FINISH] != c->finish ||
            v.authorize_secondary != c->authorize_secondary || v.save_secondary != c->save_secondary)
            fail_msg("case %zu: notice %d steps %d/%d/%d secondary %d/%d", i, v.notice, v.steps[0], v.steps[1],
                     v.steps[2], v.authorize_secondary, v.save_secondary);
        assert_int_equal(v.connected, c->state == SV_CONNECTED);
        assert_int_equal(v.stored, c->whsec);
    }
}

static void test_setup_view_other_mode_does_not_count(void **state)
{
    setup_view_t v;
    view_of(&v, MODE_LIVE, SV_CONNECTED, 1); /* test is complete, the session is in live */
    setup_view_decide(&v);
    assert_int_equal(v.notice, SV_NOTICE_START);
    assert_int_equal(v.connected, 0);
    assert_int_equal(v.steps[SV_STEP_AUTHORIZE], SV_CURRENT);
    assert_int_equal(v.steps[SV_STEP_FINISH], SV_TODO);
}

static void test_setup_view_switch_hint_needs_connect_and_both_modes(void **state)
{
    setup_view_t v;
    view_of(&v, MODE_TEST, SV_NONE, 0);
    setup_view_decide(&v);
    assert_int_equal(v.switch_hint, 1);

    view_of(&v, MODE_TEST, SV_NONE, 0);
    v.connect_flavor = 0; /* apps: a test token is never minted from live */
    setup_view_decide(&v);
    assert_int_equal(v.switch_hint, 0);

    view_of(&v, MODE_TEST, SV_NONE, 0);
    v.modes[MODE_LIVE].enabled = 0;
    v.modes[MODE_LIVE].state = SV_OFF;
    setup_view_decide(&v);
    assert_int_equal(v.switch_hint, 0);
}

static void test_setup_view_finish_later_hint_only_with_a_return_url_and_steps_left(void **state)
{
    setup_view_t v;
    view_of(&v, MODE_TEST, SV_CONNECTED, 0);
    setup_view_decide(&v);
    assert_int_equal(v.finish_later_hint, 0); /* no return_url: no Finish link at all */

    view_of(&v, MODE_TEST, SV_CONNECTED, 0);
    v.return_url = "https://acme.my.salesforce.com/lightning";
    setup_view_decide(&v);
    assert_int_equal(v.finish_later_hint, 1);

    view_of(&v, MODE_TEST, SV_CONNECTED, 1);
    v.return_url = "https://acme.my.salesforce.com/lightning";
    setup_view_decide(&v);
    assert_int_equal(v.finish_later_hint, 0);
}

static void test_setup_view_clear_wipes_the_csrf_token(void **state)
{
    setup_view_t v;
    view_of(&v, MODE_TEST, SV_CONNECTED, 1);
    memset(v.csrf, 'a', SV_CSRF_CHARS);
    v.csrf[SV_CSRF_CHARS] = '\0';
    setup_view_decide(&v);
    setup_view_clear(&v);
    for (size_t i = 0; i < sizeof(v); i++)
        if (((const unsigned char *)&v)[i] != 0)
            fail_msg("byte %zu of the view survived", i);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_setup_view_steps_follow_the_session_mode),
        cmocka_unit_test(test_setup_view_other_mode_does_not_count),
        cmocka_unit_test(test_setup_view_switch_hint_needs_connect_and_both_modes),
        cmocka_unit_test(test_setup_view_finish_later_hint_only_with_a_return_url_and_steps_left),
        cmocka_unit_test(test_setup_view_clear_wipes_the_csrf_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
