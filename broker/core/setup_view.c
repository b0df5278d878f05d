/* setup_view.c — the setup page's decisions (see setup_view.h).
 * Owns: which notice, which step is next, which buttons and hints show. Never: writes
 * HTML, or keeps the CSRF token anywhere but inside the view. Tested by
 * tests/unit/test_setup_view.c and tests/it/test_browser_flow.py. */
#include "core/setup_view.h"
#include <string.h>

static int step(int done, int current)
{
    return done ? SV_DONE : current ? SV_CURRENT : SV_TODO;
}

void setup_view_decide(setup_view_t *v)
{
    const setup_view_mode_t *cur = &v->modes[v->mode];
    v->connected = cur->state == SV_CONNECTED;
    v->stored = cur->whsec;
    if (v->connected && v->stored)
        v->notice = SV_NOTICE_COMPLETE;
    else if (v->connected)
        v->notice = SV_NOTICE_CONNECTED;
    else if (cur->state == SV_REAUTH || cur->state == SV_UNREADABLE)
        v->notice = SV_NOTICE_REAUTH;
    else
        v->notice = SV_NOTICE_START;
    v->steps[SV_STEP_AUTHORIZE] = step(v->connected, !v->connected);
    v->steps[SV_STEP_WHSEC] = step(v->stored, v->connected && !v->stored);
    v->steps[SV_STEP_FINISH] = step(0, v->connected && v->stored);
    v->authorize_secondary = v->connected;
    v->save_secondary = v->stored || !v->connected;
    v->switch_hint = v->connect_flavor && v->modes[MODE_TEST].enabled && v->modes[MODE_LIVE].enabled;
    v->finish_later_hint = v->return_url != NULL && !(v->connected && v->stored);
}

void setup_view_clear(setup_view_t *v)
{
    explicit_bzero(v, sizeof(*v));
}
