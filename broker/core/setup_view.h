/* setup_view.h — the setup page's view model (GET /setup, README "The browser flow"):
 * what the page shows, decided once from the facts of the session and the org's two
 * connections, so that the HTML is written by small render functions that decide
 * nothing (routes/setup.c).
 *
 * The caller fills the facts (org, mode, return_url, flavor, each mode's status, the
 * CSRF token) and calls setup_view_decide, which fills the decisions (the notice, the
 * step indicator, which buttons are secondary, which hints show). The CSRF token is
 * the one secret-bearing field: it lives inside the struct and setup_view_clear wipes
 * the whole struct. Pure, no I/O; tested by tests/unit/test_setup_view.c and, through
 * the pages, tests/it/test_browser_flow.py. */
#ifndef BROKER_CORE_SETUP_VIEW_H
#define BROKER_CORE_SETUP_VIEW_H
#include <time.h>
#include "core/mode.h"
#include "core/orgid.h"

/* The status of one mode's connection. */
enum { SV_OFF = 0, SV_NONE, SV_CONNECTED, SV_REAUTH, SV_UNREADABLE };
/* The notice at the top of the page: what happened and what to do next. */
enum { SV_NOTICE_START = 0, SV_NOTICE_CONNECTED, SV_NOTICE_COMPLETE, SV_NOTICE_REAUTH };
/* The steps of the indicator, and the state of each. */
enum { SV_STEP_AUTHORIZE = 0, SV_STEP_WHSEC, SV_STEP_FINISH, SV_STEPS };
enum { SV_TODO = 0, SV_CURRENT, SV_DONE };

#define SV_ACCT_MAX 128 /* a Stripe account id shown (longer ones are cut) */
#define SV_CSRF_CHARS 64

/* One mode's facts. */
typedef struct setup_view_mode {
    int enabled;             /* the mode has Stripe credentials on this service */
    int state;               /* SV_OFF (not enabled) … SV_UNREADABLE */
    int whsec;               /* a webhook signing secret is stored (enabled modes only) */
    char acct[SV_ACCT_MAX];  /* SV_CONNECTED: the Stripe account id */
    char derived_from[8];    /* SV_CONNECTED: "" or the mode it was minted from */
    time_t connected_at;     /* SV_CONNECTED: when it was authorized */
} setup_view_mode_t;

typedef struct setup_view {
    /* ---- facts (the caller's) ---- */
    char org[ORGID_LEN + 1];             /* the session's org */
    int mode;                            /* the session's mode (MODE_TEST / MODE_LIVE) */
    const char *return_url;              /* the Finish link, NULL for none (not owned) */
    int connect_flavor;                  /* Stripe Connect OAuth (test can be minted from live) */
    setup_view_mode_t modes[MODE_COUNT];
    char csrf[SV_CSRF_CHARS + 1];        /* the forms' CSRF token (secret: wiped by setup_view_clear) */
    /* ---- decisions (setup_view_decide's) ---- */
    int connected;                       /* the session's mode is connected */
    int stored;                          /* … and has a signing secret */
    int notice;                          /* SV_NOTICE_* */
    int steps[SV_STEPS];                 /* SV_TODO / SV_CURRENT / SV_DONE */
    int authorize_secondary;             /* "Authorize with Stripe" is not the next step */
    int save_secondary;                  /* "Save signing secret" is not the next step */
    int switch_hint;                     /* say that test needs no authorization once live has one */
    int finish_later_hint;               /* a Finish link while steps remain: say they can wait */
} setup_view_t;

/* Fill v's decisions from its facts (v->mode must be MODE_TEST or MODE_LIVE). */
void setup_view_decide(setup_view_t *v);
/* Wipe the whole view (its CSRF token with it); it may be filled again. */
void setup_view_clear(setup_view_t *v);
#endif
