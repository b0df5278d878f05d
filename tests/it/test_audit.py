"""The audit trail (CONTRACT §4.4): every change of state is an event in the org's stream,
written by the script that makes the change; GET /v1/orgs/{org}/audit-events reads it
newest first with cursor paging."""

import re
import time

import harness as h
import ops_fixtures

F = ops_fixtures.OpsStack("audit")
S = None
PREFIX = "stb:"   # BROKER_REDIS_PREFIX's default


def setup_module():
    global S
    S = F.start()


def teardown_module():
    F.close()


def setup_function():
    S.reset()


connect = F.connect


def audit(org, token=None, broker=None, **q):
    return F.get(f"/v1/orgs/{org}/audit-events", token=token, broker=broker, **q)


def events(org, **q):
    r = audit(org, limit=500, **q)
    h.assert_status(r, 200)
    h.assert_json_headers(r)
    j = r.json()
    for e in j["events"]:
        assert set(e) <= {"id", "type", "at", "mode", "actor", "request_id", "details"}, e
        h.parse_rfc3339(e["at"])
        assert e["actor"]["kind"] in ("admin", "api_key", "setup_session", "stripe", "broker"), e
    return j["events"]


def of_type(org, type_):
    return [e for e in events(org) if e["type"] == type_]


def assert_no_secret(text):
    for cat, vals in h.SEEN.items():
        for v in vals:
            if isinstance(v, str) and len(v) >= 12:
                assert v not in text, f"a {cat} value is in the audit trail"


# ===== One event per change, by the right actor =====

def test_authorization_is_recorded_with_the_setup_session_mode_and_account():
    org = h.new_org()
    f = connect(org, "live")
    [e] = of_type(org, "connection.authorized")
    assert e["mode"] == "live"
    assert e["actor"]["kind"] == "setup_session" and re.fullmatch(r"[0-9a-f]{16}", e["actor"]["id"]), e
    assert e["details"]["stripe_user_id"] == f.account
    assert e["details"]["flavor"] == "connect"
    h.assert_recent(e["at"])
    assert re.fullmatch(r"[0-9a-f]{16}", e.get("request_id", "")), e
    assert_no_secret(audit(org).text)


def test_api_keys_created_and_revoked_name_the_key_id_never_the_key():
    org = h.new_org()
    k = S.broker.create_api_key(org)
    h.assert_status(S.broker.admin("DELETE", f"/v1/admin/orgs/{org}/api-keys/{k['key_id']}"), 204)
    # revoking again changes nothing, so it records nothing
    h.assert_status(S.broker.admin("DELETE", f"/v1/admin/orgs/{org}/api-keys/{k['key_id']}"), 404)
    ev = events(org)
    assert [e["type"] for e in ev] == ["api_key.revoked", "api_key.created"], ev
    for e in ev:
        assert e["details"] == {"key_id": k["key_id"]} and e["actor"] == {"kind": "admin"}, e
        assert "mode" not in e
    assert k["api_key"] not in audit(org).text


def test_minted_and_rotated_tokens_name_the_org_key_that_asked():
    org = h.new_org()
    connect(org, "live")
    k = S.broker.create_api_key(org)
    r = S.broker.access_token(org, "test", token=k["api_key"])
    h.assert_status(r, 200)
    r = S.broker.request("POST", f"/v1/orgs/{org}/access-token/rotate?mode=live", token=k["api_key"])
    h.assert_status(r, 200)
    [m] = of_type(org, "token.minted")
    assert m["mode"] == "test" and m["details"]["derived_from"] == "live"
    assert m["actor"] == {"kind": "api_key", "id": k["key_id"]}, m
    [rot] = of_type(org, "token.rotated")
    assert rot["mode"] == "live" and rot["actor"] == {"kind": "api_key", "id": k["key_id"]}, rot
    assert re.fullmatch(r"[0-9a-f]{16}", rot.get("request_id", "")), rot
    # a stored token served again is not an event
    before = len(events(org))
    for _ in range(3):
        h.assert_status(S.broker.access_token(org, "live", token=k["api_key"]), 200)
    assert len(events(org)) == before
    assert_no_secret(audit(org).text)


def test_a_failed_refresh_records_its_class_and_changes_nothing():
    org = h.new_org()
    connect(org, "live")
    S.sim.fault(endpoint="token", kind="status", status=503)
    h.assert_error(S.broker.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=live"), 502,
                   "stripe_unavailable")
    S.sim._call("DELETE", "/_sim/faults")
    [e] = of_type(org, "token.refresh_failed")
    assert e["mode"] == "live" and e["details"] == {"class": "transient", "operation": "rotate"}, e
    assert of_type(org, "token.rotated") == []


def test_invalid_grant_records_the_deauthorization_by_the_broker():
    org = h.new_org()
    f = connect(org, "live")
    S.sim._call("POST", "/_sim/revoke", {"account": f.account})
    h.assert_error(S.broker.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=live"), 409,
                   "reauthorization_required")
    [e] = of_type(org, "connection.deauthorized")
    assert e["mode"] == "live" and e["details"] == {"reason": "invalid_grant"}, e
    assert e["actor"] == {"kind": "admin"}, e


def test_stripes_deauthorization_webhook_is_recorded_with_the_event_id():
    org = h.new_org()
    f = connect(org, "test")
    F.deauthorize(f.account)
    [e] = of_type(org, "connection.deauthorized")
    assert e["actor"]["kind"] == "stripe" and e["actor"]["id"].startswith("evt_"), e
    assert e["details"]["reason"] == "stripe_webhook" and e["details"]["stripe_event_id"] == e["actor"]["id"]
    assert e["details"]["stripe_user_id"] == f.account and e["mode"] == "test"


def test_webhook_secrets_set_and_deleted_never_hold_the_secret():
    org = h.new_org()
    secret = "whsec_" + h.rand_str(32)
    h.remember("webhook_secret", secret)
    path = f"/v1/orgs/{org}/webhook-secrets/live"
    h.assert_status(S.broker.admin("PUT", path, json_body={"signing_secret": secret}), 204)
    h.assert_status(S.broker.admin("DELETE", path), 204)
    h.assert_status(S.broker.admin("DELETE", path), 204)   # nothing left: no second event
    assert [e["type"] for e in events(org)] == ["webhook_secret.deleted", "webhook_secret.set"]
    assert secret not in audit(org).text


def test_deleting_a_connection_is_recorded_once():
    org = h.new_org()
    f = connect(org, "live")
    h.assert_status(S.broker.access_token(org, "test"), 200)      # derived from live
    h.assert_status(S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/live"), 204)
    [e] = of_type(org, "connection.deleted")
    assert e["mode"] == "live" and e["details"] == {"stripe_user_id": f.account, "derived_deleted": "test",
                                                    "deauthorized_at_stripe": True}, e


def test_a_refused_delete_records_nothing():
    org = h.new_org()
    connect(org, "live")
    S.sim.fault(endpoint="deauthorize", kind="status", status=500)
    h.assert_error(S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/live"), 502, "stripe_unavailable")
    assert of_type(org, "connection.deleted") == []


def test_proxied_posts_and_deletes_are_recorded_gets_are_not():
    org = h.new_org()
    connect(org, "test")
    k = S.broker.create_api_key(org)
    auth = {"Authorization": f"Bearer {k['api_key']}", "Content-Type": "application/x-www-form-urlencoded"}
    base = S.broker.url(f"/v1/orgs/{org}/stripe/test")
    r = h.http_request("POST", base + "/v1/customers", headers=auth, body="description=audit")
    h.assert_status(r, 200)
    cus = r.json()["id"]
    h.assert_status(h.http_request("GET", base + f"/v1/customers/{cus}", headers=auth), 200)
    h.assert_status(h.http_request("DELETE", base + f"/v1/customers/{cus}", headers=auth), 200)
    calls = h.wait_until(lambda: (lambda c: c if len(c) == 2 else None)(of_type(org, "stripe.call")), 5,
                         what="two stripe.call events")
    assert [(c["details"]["method"], c["details"]["path"]) for c in calls] == \
        [("DELETE", f"/v1/customers/{cus}"), ("POST", "/v1/customers")], calls
    for c in calls:
        assert c["details"]["status"] == 200 and c["details"]["request_id"].startswith("req_"), c
        assert c["actor"] == {"kind": "api_key", "id": k["key_id"]} and c["mode"] == "test"


# ===== Reading =====

def test_paging_is_newest_first_and_the_cursor_continues_where_it_stopped():
    org = h.new_org()
    ids = [S.broker.create_api_key(org)["key_id"] for _ in range(7)]
    got, cursor = [], None
    while True:
        q = {"limit": 3}
        if cursor:
            q["cursor"] = cursor
        r = audit(org, **q)
        h.assert_status(r, 200)
        j = r.json()
        assert len(j["events"]) <= 3
        got += [e["details"]["key_id"] for e in j["events"]]
        cursor = j["next"]
        if cursor is None:
            break
        # an event added between pages does not disturb the next page
        S.broker.admin("PUT", f"/v1/orgs/{org}/webhook-secrets/test", json_body={"signing_secret": "whsec_x" * 3})
    assert got == list(reversed(ids)), got


def test_since_keeps_only_events_at_or_after_that_time():
    org = h.new_org()
    c = S.rc()
    try:   # an old event, as a stream entry written 10 days ago would be
        old_ms = int(time.time() * 1000) - 10 * 86400 * 1000
        c.command("XADD", PREFIX + f"audit:{org}", f"{old_ms}-0", "e",
                  '{"type":"api_key.created","actor":{"kind":"admin"},"details":{}}')
    finally:
        c.close()
    S.broker.create_api_key(org)
    assert len(events(org)) == 2
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400))
    assert len(events(org, since=since)) == 1


def test_since_takes_any_rfc3339_form_to_the_millisecond():
    org = h.new_org()
    base = (int(time.time()) - 5 * 86400) * 1000 + 250    # 5 days ago, at .250 s
    c = S.rc()
    try:
        for ms in (base, base + 1):
            c.command("XADD", PREFIX + f"audit:{org}", f"{ms}-0", "e",
                      '{"type":"api_key.created","actor":{"kind":"admin"},"details":{}}')
    finally:
        c.close()
    S.broker.create_api_key(org)
    sec = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base // 1000))
    east = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base // 1000 + 3600))
    cases = {   # since -> how many of the three events are at or after it
        f"{sec}.250Z": 3, f"{sec}.251Z": 2, f"{sec}.2505Z": 2, f"{sec}.252Z": 1, f"{sec}Z": 3,
        f"{east}.251%2B01:00": 2, f"{east}.251+01:00": 2,     # '+' encoded, and sent as is
        f"{sec.lower()}.251z": 2, "1969-07-20T20:17:40Z": 3,
    }
    for since, n in cases.items():
        r = S.broker.request("GET", f"/v1/orgs/{org}/audit-events?since={since}", token=S.broker.admin_token)
        h.assert_status(r, 200)
        assert len(r.json()["events"]) == n, (since, r.json())


def test_a_page_ends_with_next_null_exactly_at_the_last_event():
    org = h.new_org()
    for _ in range(4):
        S.broker.create_api_key(org)
    j = audit(org, limit=2).json()
    assert len(j["events"]) == 2 and j["next"] is not None
    j = audit(org, limit=2, cursor=j["next"]).json()
    assert len(j["events"]) == 2 and j["next"] is None, j
    j = audit(org, limit=4).json()
    assert len(j["events"]) == 4 and j["next"] is None, j
    # the oldest possible cursor has nothing after it: an empty last page, not an error
    for cursor in ("0-0", "0-1", "1-0"):
        r = audit(org, cursor=cursor)
        h.assert_status(r, 200)
        assert r.json() == {"events": [], "next": None}, (cursor, r.text)


def test_retention_trims_events_older_than_the_configured_days():
    org = h.new_org()
    c = S.rc()
    try:
        old_ms = int(time.time() * 1000) - 3 * 86400 * 1000
        c.command("XADD", PREFIX + f"audit:{org}", f"{old_ms}-0", "e",
                  '{"type":"api_key.created","actor":{"kind":"admin"},"details":{}}')
    finally:
        c.close()
    b = S.new_broker("retention", BROKER_AUDIT_RETENTION_DAYS="2")
    try:
        b.create_api_key(org)
        ev = events(org)
        assert len(ev) == 1 and ev[0]["id"] != f"{old_ms}-0", ev
    finally:
        b.stop()


def test_out_of_range_paging_parameters_are_400():
    org = h.new_org()
    for q in ("limit=0", "limit=501", "limit=abc", "limit=-1", "limit=", "limit=1&limit=2", "cursor=abc",
              "cursor=1-", "cursor=", "cursor=99999999999999999999-0", "since=yesterday", "since=",
              "since=2026-13-01T00:00:00Z", "since=2026-11-26T22:34:47", "since=2026-11-26T22:34:47%2B0100"):
        h.assert_error(S.broker.request("GET", f"/v1/orgs/{org}/audit-events?{q}", token=S.broker.admin_token),
                       400, "invalid_request")
    r = audit(org, limit=500)
    h.assert_status(r, 200)
    assert r.json() == {"events": [], "next": None}


def test_an_org_key_reads_its_own_org_only():
    org, other = h.new_org(), h.new_org()
    k = S.broker.create_api_key(org)
    h.assert_status(audit(org, token=k["api_key"]), 200)
    h.assert_error(audit(other, token=k["api_key"]), 403, "forbidden")
    h.assert_error(S.broker.request("GET", f"/v1/orgs/{org}/audit-events"), 401, "unauthorized")


def test_redis_down_fails_the_change_and_records_nothing():
    org = h.new_org()
    S.redis.stop()
    try:
        r = S.broker.admin("POST", f"/v1/admin/orgs/{org}/api-keys")
        h.assert_error(r, 503, "store_unavailable")
    finally:
        S.redis.ensure_running()
        S.broker.wait_ready()
    assert events(org) == []
