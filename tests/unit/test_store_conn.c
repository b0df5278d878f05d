/* test_store_conn.c — the connection scripts of store/conn.c against a real redis-server
 * (started by the test: free port, no persistence), through hiredis' blocking client:
 * put (compare-and-set, index, drop of another connection), drop, revoke (all or
 * nothing), re-seal, the token service's lease (acquire, renew, the fenced commit), the
 * version counter (never repeats) and the optional audit event (written with the change,
 * never without it; one per revoked record; refresh.failing and connection.recovered of
 * the fenced commit). Values are opaque strings here: sealing is test_store.c's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "redis_proc.h"
#include "store_cmd_run.h"
#include "config.h"
#include "store/audit.h"
#include "store/conn.h"
#include "store/keys.h"

#define P "t:"
#define ORG "00D000000000001EAA"
#define KCONN_TEST P "conn:" ORG ":test"
#define KCONN_LIVE P "conn:" ORG ":live"

/* GET key as a string ("" when absent). */
static const char *get(const char *key)
{
    static char out[256];
    redisReply *r = redisCommand(g_c, "GET %s", key);
    snprintf(out, sizeof(out), "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    return out;
}

static long long integer(const char *fmt, const char *a, const char *b)
{
    redisReply *r = redisCommand(g_c, fmt, a, b);
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -99;
    freeReplyObject(r);
    return v;
}

/* put with expected; returns the new version or -1 (asserting the reply's shape). */
static long long put(int mode, const char *sealed, const char *acct, long expected, const store_conn_drop_t *drop,
                     const store_audit_t *audit, long long *dropped)
{
    store_cmd_t cmd;
    store_conn_put(&cmd, P, ORG, mode, sealed, acct, expected, drop, audit);
    redisReply *r = run(&cmd);
    long long v;
    if (r->type == REDIS_REPLY_INTEGER) {
        v = r->integer;
    } else {
        assert_int_equal(r->type, REDIS_REPLY_ARRAY);
        assert_int_equal(r->elements, 2);
        v = r->element[0]->integer;
        if (dropped != NULL)
            *dropped = r->element[1]->integer;
    }
    freeReplyObject(r);
    return v;
}

/* ===== put / get / drop ===== */

static void test_put_writes_a_version_and_the_index(void **state)
{
    assert_int_equal(put(MODE_LIVE, "sealed-a", "acct_1", STORE_ANY_VERSION, NULL, NULL, NULL), 1);
    assert_string_equal(get(KCONN_LIVE), "1:sealed-a");
    assert_int_equal(integer("SISMEMBER %s %s", P "acct:acct_1", ORG ":live"), 1);
    store_cmd_t cmd;
    store_conn_get(&cmd, P, ORG, MODE_LIVE);
    redisReply *r = run(&cmd);
    assert_string_equal(r->str, "1:sealed-a");
    freeReplyObject(r);
}

static void test_put_compares_the_expected_version(void **state)
{
    assert_int_equal(put(MODE_LIVE, "a", "acct_1", STORE_ANY_VERSION, NULL, NULL, NULL), 1);
    assert_int_equal(put(MODE_LIVE, "b", "acct_1", 7, NULL, NULL, NULL), -1);
    assert_string_equal(get(KCONN_LIVE), "1:a");
    assert_int_equal(put(MODE_LIVE, "c", "acct_1", 1, NULL, NULL, NULL), 2);
    assert_string_equal(get(KCONN_LIVE), "2:c");
}

static void test_put_drops_the_other_connection_only_at_its_version(void **state)
{
    long long dropped = -1;
    assert_int_equal(put(MODE_TEST, "t", "acct_old", STORE_ANY_VERSION, NULL, NULL, NULL), 1);
    store_conn_drop_t stale = {MODE_TEST, "acct_old", 5};
    assert_int_equal(put(MODE_LIVE, "l", "acct_new", STORE_ANY_VERSION, &stale, NULL, &dropped), 2);
    assert_int_equal(dropped, 0);
    assert_string_equal(get(KCONN_TEST), "1:t");
    store_conn_drop_t current = {MODE_TEST, "acct_old", 1};
    assert_int_equal(put(MODE_LIVE, "l2", "acct_new", STORE_ANY_VERSION, &current, NULL, &dropped), 3);
    assert_int_equal(dropped, 1);
    assert_string_equal(get(KCONN_TEST), "");
    assert_int_equal(integer("SISMEMBER %s %s", P "acct:acct_old", ORG ":test"), 0);
}

static void test_drop_deletes_the_record_its_index_and_the_derived_one(void **state)
{
    put(MODE_LIVE, "l", "acct_1", STORE_ANY_VERSION, NULL, NULL, NULL);
    put(MODE_TEST, "t", "acct_1", STORE_ANY_VERSION, NULL, NULL, NULL);
    store_cmd_t cmd;
    store_conn_drop(&cmd, P, ORG, MODE_LIVE, "acct_1", MODE_TEST, NULL);
    assert_int_equal(run_int(&cmd), 1);
    assert_string_equal(get(KCONN_LIVE), "");
    assert_string_equal(get(KCONN_TEST), "");
    assert_int_equal(integer("SCARD %s%s", P "acct:acct_1", ""), 0);
}

static void test_versions_never_repeat_across_drop_and_put(void **state)
{
    assert_int_equal(put(MODE_LIVE, "a", "acct_1", STORE_ANY_VERSION, NULL, NULL, NULL), 1);
    store_cmd_t cmd;
    store_conn_drop(&cmd, P, ORG, MODE_LIVE, "acct_1", -1, NULL);
    run_int(&cmd);
    assert_int_equal(put(MODE_LIVE, "b", "acct_1", STORE_ANY_VERSION, NULL, NULL, NULL), 2);
}

/* ===== revoke / re-seal ===== */

static void test_revoke_is_all_or_nothing_and_remembers_the_event(void **state)
{
    put(MODE_LIVE, "l", "acct_1", STORE_ANY_VERSION, NULL, NULL, NULL);
    put(MODE_TEST, "t", "acct_1", STORE_ANY_VERSION, NULL, NULL, NULL);
    store_conn_revoked_t recs[2] = {{ORG, MODE_LIVE, "1:l", 3, "L-revoked"}, {ORG, MODE_TEST, "9:t", 3, "T-revoked"}};
    store_cmd_t cmd;
    store_conn_revoke(&cmd, P, recs, 2, "evt_1", 60, NULL);
    assert_int_equal(run_int(&cmd), -1); /* the test record is not "9:t" */
    assert_string_equal(get(KCONN_LIVE), "1:l");
    assert_string_equal(get(P "evt:evt_1"), "");
    recs[1].old = "2:t";
    store_conn_revoke(&cmd, P, recs, 2, "evt_1", 60, NULL);
    assert_int_equal(run_int(&cmd), 2);
    assert_string_equal(get(KCONN_LIVE), "3:L-revoked");
    assert_string_equal(get(KCONN_TEST), "4:T-revoked");
    assert_string_equal(get(P "evt:evt_1"), "1");
    assert_true(integer("TTL %s%s", P "evt:evt_1", "") > 0);
}

static void test_reseal_replaces_only_the_value_it_read(void **state)
{
    put(MODE_LIVE, "old", "acct_1", STORE_ANY_VERSION, NULL, NULL, NULL);
    store_cmd_t cmd;
    store_value_reseal(&cmd, KCONN_LIVE, "1:other", 7, "1:new", NULL);
    assert_int_equal(run_int(&cmd), 0);
    store_value_reseal(&cmd, KCONN_LIVE, "1:old", 5, "1:new", NULL);
    assert_int_equal(run_int(&cmd), 1);
    assert_string_equal(get(KCONN_LIVE), "1:new");
}

/* ===== the lease ===== */

static long long acquire(long seen, const char *owner, redisReply **out)
{
    store_cmd_t cmd;
    store_lease_acquire(&cmd, P, ORG, MODE_TEST, MODE_LIVE, seen, owner, 5000);
    redisReply *r = run(&cmd);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    long long what = r->element[0]->integer;
    if (out != NULL)
        *out = r;
    else
        freeReplyObject(r);
    return what;
}

static long long commit(const char *owner, const store_lease_commit_t *w)
{
    store_cmd_t cmd;
    store_lease_commit(&cmd, P, ORG, MODE_TEST, owner, w, NULL);
    return run_int(&cmd);
}

static void test_lease_acquire_changed_acquired_wait_cooling(void **state)
{
    redisReply *r;
    put(MODE_LIVE, "live", "acct_1", STORE_ANY_VERSION, NULL, NULL, NULL);
    assert_int_equal(acquire(0, "owner-a", &r), 1); /* acquired: the mint's source comes with it */
    assert_int_equal(r->element[1]->type, REDIS_REPLY_NIL);
    assert_string_equal(r->element[2]->str, "1:live");
    freeReplyObject(r);
    assert_string_equal(get(P "lock:" ORG ":test"), "owner-a");
    assert_int_equal(acquire(0, "owner-b", NULL), 2); /* another owner holds it */
    assert_int_equal(acquire(5, "owner-b", NULL), 0); /* the caller saw another version */
    store_lease_commit_t w = {.write_mode = MODE_TEST, .source_mode = MODE_LIVE, .source_version = -1,
                              .cooldown_ms = 5000};
    assert_int_equal(commit("owner-a", &w), 0); /* a failure: cooldown, lease released */
    assert_string_equal(get(P "lock:" ORG ":test"), "");
    assert_int_equal(acquire(0, "owner-b", NULL), 3);
}

static void test_lease_renew_only_by_its_owner(void **state)
{
    assert_int_equal(acquire(0, "owner-a", NULL), 1);
    store_cmd_t cmd;
    store_lease_renew(&cmd, P, ORG, MODE_TEST, "owner-b", 60000);
    assert_int_equal(run_int(&cmd), 0);
    store_lease_renew(&cmd, P, ORG, MODE_TEST, "owner-a", 60000);
    assert_int_equal(run_int(&cmd), 1);
    assert_true(integer("PTTL %s%s", P "lock:" ORG ":test", "") > 5000);
}

static void test_commit_is_fenced_by_the_lease_and_the_versions(void **state)
{
    put(MODE_LIVE, "live", "acct_1", STORE_ANY_VERSION, NULL, NULL, NULL);
    store_lease_commit_t w = {.write_mode = MODE_TEST, .source_mode = MODE_LIVE, .sealed = "minted",
                              .expected = 0, .source_version = 1, .acct = "acct_1", .cooldown_ms = 5000};
    /* no lease: nothing at all, not even the cooldown */
    assert_int_equal(commit("owner-a", &w), -2);
    assert_string_equal(get(KCONN_TEST), "");
    assert_string_equal(get(P "cool:" ORG ":test"), "");
    /* the lease, but the source moved on: refused, lease released */
    assert_int_equal(acquire(0, "owner-a", NULL), 1);
    w.source_version = 9;
    w.cooldown_ms = 0;
    assert_int_equal(commit("owner-a", &w), -1);
    assert_string_equal(get(KCONN_TEST), "");
    assert_string_equal(get(P "lock:" ORG ":test"), "");
    /* the lease and the versions: written, indexed, released */
    assert_int_equal(acquire(0, "owner-a", NULL), 1);
    w.source_version = 1;
    assert_int_equal(commit("owner-a", &w), 2);
    assert_string_equal(get(KCONN_TEST), "2:minted");
    assert_int_equal(integer("SISMEMBER %s %s", P "acct:acct_1", ORG ":test"), 1);
    assert_string_equal(get(P "lock:" ORG ":test"), "");
    /* a rotated refresh token is written without the lease (the version still counts) */
    store_lease_commit_t rot = {.write_mode = MODE_TEST, .source_mode = MODE_TEST, .sealed = "rotated",
                                .expected = 2, .source_version = -1, .without_lease = 1};
    assert_int_equal(commit("owner-gone", &rot), 3);
    assert_string_equal(get(KCONN_TEST), "3:rotated");
    rot.expected = 2;
    assert_int_equal(commit("owner-gone", &rot), -1);
}

/* ===== the audit event ===== */

static config_t audit_cfg(char *events_url)
{
    config_t cfg = {0};
    cfg.redis_prefix = (char *)P;
    cfg.audit_retention_days = 30;
    cfg.events_url = events_url;
    return cfg;
}

static void test_audit_event_is_written_with_the_change_and_never_without(void **state)
{
    config_t cfg = audit_cfg("https://events.example.com/in");
    audit_actor_t actor = {"admin", NULL};
    store_audit_t t;
    audit_tail_make(&t, &cfg, ORG, "connection.authorized", MODE_LIVE, &actor, "req-1", "{\"stripe_user_id\":\"acct_1\"}",
                    "connection.authorized", "{}");
    assert_int_equal(put(MODE_LIVE, "a", "acct_1", STORE_ANY_VERSION, NULL, &t, NULL), 1);
    assert_int_equal(integer("XLEN %s%s", P "audit:" ORG, ""), 1);
    assert_int_equal(integer("XLEN %s%s", P "outbox", ""), 1);
    assert_int_equal(integer("ZCARD %s%s", P "orgs", ""), 1);
    assert_int_equal(put(MODE_LIVE, "b", "acct_1", 7, NULL, &t, NULL), -1); /* refused: no event */
    assert_int_equal(integer("XLEN %s%s", P "audit:" ORG, ""), 1);
    assert_int_equal(integer("XLEN %s%s", P "outbox", ""), 1);
    redisReply *r = redisCommand(g_c, "XRANGE %s - +", P "audit:" ORG);
    redisReply *f = r->element[0]->element[1];
    assert_int_equal(f->elements, 2); /* one field: the event as JSON */
    assert_string_equal(f->element[0]->str, "e");
    assert_non_null(strstr(f->element[1]->str, "\"type\":\"connection.authorized\""));
    assert_non_null(strstr(f->element[1]->str, "\"request_id\":\"req-1\""));
    freeReplyObject(r);
    audit_tail_free(&t);
    /* without an audit event the same write adds nothing anywhere */
    assert_int_equal(put(MODE_LIVE, "c", "acct_1", 1, NULL, NULL, NULL), 2);
    assert_int_equal(integer("XLEN %s%s", P "audit:" ORG, ""), 1);
    /* nor with the tail of a write that records nothing */
    audit_tail_none(&t);
    assert_int_equal(put(MODE_LIVE, "d", "acct_1", 2, NULL, &t, NULL), 3);
    audit_tail_free(&t);
    assert_int_equal(integer("XLEN %s%s", P "audit:" ORG, ""), 1);
}

/* One event per revoked record, in the same step; none when the revoke is refused. */
static void test_revoke_records_one_event_per_record(void **state)
{
    config_t cfg = audit_cfg(NULL);
    audit_actor_t actor = {"stripe", "evt_1"};
    store_audit_t t[2];
    put(MODE_LIVE, "live", "acct_1", STORE_ANY_VERSION, NULL, NULL, NULL);
    put(MODE_TEST, "test", "acct_1", STORE_ANY_VERSION, NULL, NULL, NULL);
    char *live = strdup(get(KCONN_LIVE)), *test = strdup(get(KCONN_TEST));
    store_conn_revoked_t recs[2] = {{ORG, MODE_LIVE, live, strlen(live), "dead-live"},
                                    {ORG, MODE_TEST, test, strlen(test), "dead-test"}};
    for (int i = 0; i < 2; i++)
        audit_tail_make(&t[i], &cfg, ORG, "connection.deauthorized", i == 0 ? MODE_LIVE : MODE_TEST, &actor, NULL,
                        NULL, "connection.reauthorization_required", NULL);
    store_cmd_t cmd;
    store_conn_revoke(&cmd, P, recs, 2, "evt_1", 60, t);
    assert_int_equal(run_int(&cmd), 2);
    assert_int_equal(integer("XLEN %s%s", P "audit:" ORG, ""), 2);
    assert_int_equal(integer("EXISTS %s%s", P "outbox", ""), 0); /* events out are off */
    store_conn_revoke(&cmd, P, recs, 2, "evt_1", 60, t); /* the records changed: refused */
    assert_int_equal(run_int(&cmd), -1);
    assert_int_equal(integer("XLEN %s%s", P "audit:" ORG, ""), 2);
    for (int i = 0; i < 2; i++)
        audit_tail_free(&t[i]);
    free(live);
    free(test);
}

static long long commit_audited(const char *owner, const store_lease_commit_t *w, const store_audit_t *t)
{
    store_cmd_t cmd;
    store_lease_commit(&cmd, P, ORG, MODE_TEST, owner, w, t);
    return run_int(&cmd);
}

/* A run of transient failures sends refresh.failing once (after failing_s), and the next
 * good write sends connection.recovered; without refresh.failing, no recovered. */
static void test_commit_failing_then_recovered(void **state)
{
    config_t cfg = audit_cfg("https://events.example.com/in");
    audit_actor_t actor = {"broker", NULL};
    store_audit_t fail, ok;
    audit_tail_make(&fail, &cfg, ORG, "token.refresh_failed", MODE_TEST, &actor, NULL, NULL, "refresh.failing", NULL);
    audit_tail_make(&ok, &cfg, ORG, "token.refreshed", MODE_TEST, &actor, NULL, NULL, "connection.recovered", NULL);
    store_lease_commit_t w = {.write_mode = MODE_TEST, .source_mode = MODE_TEST, .source_version = -1,
                              .audit_kind = "fail", .failing_s = 3600};
    assert_int_equal(acquire(0, "o1", NULL), 1);
    assert_int_equal(commit_audited("o1", &w, &fail), 0);
    assert_int_equal(integer("XLEN %s%s", P "audit:" ORG, ""), 1);
    assert_int_equal(integer("EXISTS %s%s", P "outbox", ""), 0); /* not failing long enough */
    freeReplyObject(redisCommand(g_c, "DEL %s", P "cool:" ORG ":test"));
    w.failing_s = 0;
    assert_int_equal(acquire(0, "o2", NULL), 1);
    assert_int_equal(commit_audited("o2", &w, &fail), 0);
    assert_int_equal(integer("XLEN %s%s", P "outbox", ""), 1); /* refresh.failing */
    freeReplyObject(redisCommand(g_c, "DEL %s", P "cool:" ORG ":test"));
    assert_int_equal(acquire(0, "o3", NULL), 1);
    assert_int_equal(commit_audited("o3", &w, &fail), 0);
    assert_int_equal(integer("XLEN %s%s", P "outbox", ""), 1); /* once per run */
    assert_int_equal(commit_audited("o3", &w, &fail), -2);    /* the lease is gone: nothing */
    assert_int_equal(integer("XLEN %s%s", P "audit:" ORG, ""), 3);
    store_lease_commit_t good = {.write_mode = MODE_TEST, .source_mode = MODE_TEST, .sealed = "fresh",
                                 .source_version = -1, .audit_kind = "ok"};
    assert_int_equal(acquire(0, "o4", NULL), 1);
    assert_true(commit_audited("o4", &good, &ok) > 0);
    assert_int_equal(integer("XLEN %s%s", P "outbox", ""), 2); /* connection.recovered */
    assert_int_equal(integer("EXISTS %s%s", P "failing:" ORG ":test", ""), 0);
    good.expected = 1;
    assert_int_equal(acquire(1, "o5", NULL), 1);
    assert_true(commit_audited("o5", &good, &ok) > 0);
    assert_int_equal(integer("XLEN %s%s", P "outbox", ""), 2); /* nothing to recover from */
    assert_int_equal(integer("XLEN %s%s", P "audit:" ORG, ""), 5);
    audit_tail_free(&fail);
    audit_tail_free(&ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_put_writes_a_version_and_the_index, flush),
        cmocka_unit_test_setup(test_put_compares_the_expected_version, flush),
        cmocka_unit_test_setup(test_put_drops_the_other_connection_only_at_its_version, flush),
        cmocka_unit_test_setup(test_drop_deletes_the_record_its_index_and_the_derived_one, flush),
        cmocka_unit_test_setup(test_versions_never_repeat_across_drop_and_put, flush),
        cmocka_unit_test_setup(test_revoke_is_all_or_nothing_and_remembers_the_event, flush),
        cmocka_unit_test_setup(test_reseal_replaces_only_the_value_it_read, flush),
        cmocka_unit_test_setup(test_lease_acquire_changed_acquired_wait_cooling, flush),
        cmocka_unit_test_setup(test_lease_renew_only_by_its_owner, flush),
        cmocka_unit_test_setup(test_commit_is_fenced_by_the_lease_and_the_versions, flush),
        cmocka_unit_test_setup(test_audit_event_is_written_with_the_change_and_never_without, flush),
        cmocka_unit_test_setup(test_revoke_records_one_event_per_record, flush),
        cmocka_unit_test_setup(test_commit_failing_then_recovered, flush),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
