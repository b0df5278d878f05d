"""getAccessToken, connections, webhook secrets and authorize links (CONTRACT §4.2)."""

import json
import time
import urllib.parse
from datetime import datetime, timezone

import harness as h

S = None


def setup_module():
    global S
    S = h.Stack("token")


def teardown_module():
    S.close()


def setup_function():
    S.reset()


def connect(org, mode="test", **kw):
    return h.Flow(S.broker, S.sim, org, mode, **kw).run()


def assert_token_body(r, mode, account):
    h.assert_status(r, 200)
    h.assert_json_headers(r)
    j = r.json()
    assert isinstance(j.get("access_token"), str) and j["access_token"], r.describe()
    assert j.get("token_type") == "bearer", r.describe()
    assert j.get("mode") == mode, r.describe()
    assert j.get("livemode") is (mode == "live"), f"livemode must be the boolean {mode == 'live'}: {j}"
    assert j.get("stripe_user_id") == account, f"stripe_user_id {j.get('stripe_user_id')} != {account}"
    assert isinstance(j.get("stripe_publishable_key"), str) and \
        j["stripe_publishable_key"].startswith("pk_"), r.describe()
    assert j.get("scope") == "read_write", r.describe()
    assert "expires_at" not in j, f"connect-flavor tokens do not expire: {j}"
    assert "refresh_token" not in j and not any(
        isinstance(v, str) and v.startswith("rt_") for v in j.values()), "a refresh token leaked"
    for k, v in j.items():
        assert not isinstance(v, float), f"{k} is a float"
        assert not isinstance(v, int) or isinstance(v, bool) or abs(v) < 2 ** 31, f"{k} is a long"
    return j


# ===== getAccessToken =====

def test_access_token_without_connection_is_404_not_connected():
    org = h.new_org()
    for mode in ("test", "live"):
        r = S.broker.access_token(org, mode)
        h.assert_error(r, 404, "not_connected")


def test_access_token_after_browser_flow_has_every_field():
    org = h.new_org()
    f = connect(org, "test")
    assert_token_body(S.broker.access_token(org, "test"), "test", f.account)


def test_access_token_is_active_at_stripe():
    org = h.new_org()
    connect(org, "test")
    tok = S.broker.access_token(org, "test").json()["access_token"]
    assert S.sim.token_active(tok) is True, "the simulator says the token is not active"


def test_access_token_with_the_orgs_api_key():
    org = h.new_org()
    f = connect(org, "test")
    key = S.broker.create_api_key(org)["api_key"]
    a = assert_token_body(S.broker.access_token(org, "test", token=key), "test", f.account)
    b = S.broker.access_token(org, "test").json()
    assert a["access_token"] == b["access_token"], "org key and admin token see different tokens"


def test_access_token_with_15_char_org_id():
    org15 = h.new_org15()
    f = connect(h.org18(org15), "test")
    assert_token_body(S.broker.access_token(org15, "test"), "test", f.account)


def test_access_token_is_stable_and_does_not_call_stripe():
    org = h.new_org()
    connect(org, "test")
    calls = S.sim.calls("token")
    toks = {S.broker.access_token(org, "test").json()["access_token"] for _ in range(5)}
    assert len(toks) == 1, f"getAccessToken returned {len(toks)} different tokens"
    assert S.sim.calls("token") == calls, "getAccessToken called Stripe for a non-expiring token"


def test_live_flow_gives_a_live_token():
    org = h.new_org()
    f = connect(org, "live")
    j = assert_token_body(S.broker.access_token(org, "live"), "live", f.account)
    info = S.sim._call("POST", "/_sim/token-info", {"access_token": j["access_token"]})
    assert info.get("active") is True and info.get("livemode") is True, info


def test_both_modes_via_the_browser_flow():
    org = h.new_org()
    ft = connect(org, "test")
    fl = connect(org, "live")
    t = assert_token_body(S.broker.access_token(org, "test"), "test", ft.account)
    l = assert_token_body(S.broker.access_token(org, "live"), "live", fl.account)
    assert t["access_token"] != l["access_token"]
    assert S.sim.token_active(t["access_token"]) and S.sim.token_active(l["access_token"])
    conns = S.broker.connections(org)
    assert sorted(c["mode"] for c in conns) == ["live", "test"], conns
    assert all("derived_from" not in c for c in conns), conns


def test_other_org_sees_no_connection():
    org = h.new_org()
    connect(org, "test")
    other = h.new_org()
    h.assert_error(S.broker.access_token(other, "test"), 404, "not_connected")
    assert S.broker.connections(other) == []


def test_test_token_is_minted_from_a_live_connection():
    org = h.new_org()
    f = connect(org, "live")
    r = S.broker.access_token(org, "test")
    j = assert_token_body(r, "test", f.account)
    info = S.sim._call("POST", "/_sim/token-info", {"access_token": j["access_token"]})
    assert info.get("active") is True and info.get("livemode") is False, info
    live = S.broker.access_token(org, "live").json()["access_token"]
    assert S.sim.token_active(live), "minting the test token killed the live token"
    calls = S.sim.calls("token")
    again = S.broker.access_token(org, "test").json()["access_token"]
    assert again == j["access_token"], "the minted test token was not stored"
    assert S.sim.calls("token") == calls, "the test token was minted twice"
    conns = {c["mode"]: c for c in S.broker.connections(org)}
    assert conns.get("test", {}).get("derived_from") == "live", conns
    assert "derived_from" not in conns.get("live", {}), conns


def test_live_authorized_again_for_another_account_drops_the_minted_test_token():
    org = h.new_org()
    first = connect(org, "live")
    old = S.broker.access_token(org, "test").json()
    assert old["stripe_user_id"] == first.account, old
    second = connect(org, "live")
    assert second.account != first.account
    conns = {c["mode"]: c for c in S.broker.connections(org)}
    assert set(conns) == {"live"}, f"the test token of the old account is still listed: {conns}"
    calls = S.sim.calls("token")
    new = S.broker.access_token(org, "test")
    j = assert_token_body(new, "test", second.account)
    assert j["access_token"] != old["access_token"], "the old account's test token was served"
    assert S.sim.calls("token") == calls + 1, "the new test token was not minted exactly once"
    conns = {c["mode"]: c for c in S.broker.connections(org)}
    assert conns["test"].get("derived_from") == "live" and conns["test"]["stripe_user_id"] == second.account, conns
    # the old account's index no longer names this org's test connection: its
    # deauthorization leaves the new connections alone
    assert S.rc().command("SISMEMBER", "stb:acct:" + first.account, org + ":test") == 0
    live = S.broker.access_token(org, "live").json()
    assert live["stripe_user_id"] == second.account and S.sim.token_active(live["access_token"]), live


def test_live_authorized_again_for_the_same_account_keeps_the_minted_test_token():
    org = h.new_org()
    first = connect(org, "live")
    old = S.broker.access_token(org, "test").json()["access_token"]
    h.Flow(S.broker, S.sim, org, "live").run(account=first.account)
    calls = S.sim.calls("token")
    again = S.broker.access_token(org, "test").json()
    assert again["access_token"] == old and again["stripe_user_id"] == first.account, again
    assert S.sim.calls("token") == calls, "a working test token was minted again"
    assert S.sim.token_active(old)


def test_live_authorized_again_leaves_a_test_connection_of_its_own():
    org = h.new_org()
    test = connect(org, "test")
    tok = S.broker.access_token(org, "test").json()["access_token"]
    live = connect(org, "live")
    assert live.account != test.account
    again = S.broker.access_token(org, "test").json()
    assert again["access_token"] == tok and again["stripe_user_id"] == test.account, again


def test_live_token_is_never_minted_from_a_test_connection():
    org = h.new_org()
    connect(org, "test")
    calls = S.sim.calls("token")
    h.assert_error(S.broker.access_token(org, "live"), 404, "not_connected")
    assert S.sim.calls("token") == calls, "the broker asked Stripe for a live token"


def test_rotate_gives_a_new_token_and_revokes_the_old_one():
    org = h.new_org()
    f = connect(org, "test")
    old = S.broker.access_token(org, "test").json()["access_token"]
    r = S.broker.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=test")
    new = assert_token_body(r, "test", f.account)["access_token"]
    assert new != old, "rotate returned the same token"
    assert S.sim.token_active(new) and not S.sim.token_active(old)
    assert S.broker.access_token(org, "test").json()["access_token"] == new


def test_rotate_without_connection_is_404_not_connected():
    r = S.broker.admin("POST", f"/v1/orgs/{h.new_org()}/access-token/rotate?mode=test")
    h.assert_error(r, 404, "not_connected")


# ===== connections =====

def test_connections_of_org_without_any_is_empty_list():
    r = S.broker.admin("GET", f"/v1/orgs/{h.new_org()}/connections")
    h.assert_status(r, 200)
    h.assert_json_headers(r)
    assert r.json() == {"connections": []}, r.describe()


def test_connections_lists_the_connection_without_any_token():
    org = h.new_org()
    f = connect(org, "test")
    tok = S.broker.access_token(org, "test").json()
    r = S.broker.admin("GET", f"/v1/orgs/{org}/connections")
    h.assert_status(r, 200)
    conns = r.json()["connections"]
    assert len(conns) == 1, r.describe()
    c = conns[0]
    assert c.get("mode") == "test" and c.get("status") == "connected", c
    assert c.get("stripe_user_id") == f.account, c
    assert c.get("livemode") is False, c
    assert c.get("scope") == "read_write", c
    h.assert_recent(c.get("connected_at"))
    h.assert_recent(c.get("refreshed_at"))
    assert "derived_from" not in c, c
    assert tok["access_token"] not in r.text, "connections shows the access token"
    for bad in ("access_token", "refresh_token", "sk_test_", "sk_live_", "rt_"):
        assert bad not in r.text, f"connections contains {bad!r}: {r.text}"


def test_delete_connection_deauthorizes_at_stripe_and_removes_it():
    org = h.new_org()
    connect(org, "test")
    tok = S.broker.access_token(org, "test").json()["access_token"]
    r = S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/test")
    assert r.status == 204 and r.body == b"", f"expected an empty 204: {r.describe()}"
    assert S.sim.calls("deauthorize") == 1, "Stripe's deauthorize was not called once"
    assert S.sim.token_active(tok) is False
    h.assert_error(S.broker.access_token(org, "test"), 404, "not_connected")
    assert S.broker.connections(org) == []


def test_delete_live_connection_removes_the_derived_test_one():
    org = h.new_org()
    connect(org, "live")
    h.assert_status(S.broker.access_token(org, "test"), 200)
    h.assert_status(S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/live"), 204)
    assert S.broker.connections(org) == []
    h.assert_error(S.broker.access_token(org, "test"), 404, "not_connected")


def test_delete_derived_connection_is_local_only():
    org = h.new_org()
    connect(org, "live")
    h.assert_status(S.broker.access_token(org, "test"), 200)
    calls = S.sim.calls("deauthorize")
    h.assert_status(S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/test"), 204)
    assert S.sim.calls("deauthorize") == calls, "deleting a derived connection deauthorized"
    live = S.broker.access_token(org, "live")
    h.assert_status(live, 200)
    assert S.sim.token_active(live.json()["access_token"])


def test_delete_connection_already_disconnected_at_stripe_still_deletes():
    org = h.new_org()
    f = connect(org, "test")
    S.sim._call("POST", "/_sim/revoke", {"account": f.account})
    h.assert_status(S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/test"), 204)
    assert S.broker.connections(org) == []


def test_delete_missing_connection_is_404_not_connected():
    r = S.broker.admin("DELETE", f"/v1/orgs/{h.new_org()}/connections/test")
    h.assert_error(r, 404, "not_connected")


# ===== webhook secrets =====

def test_webhook_secret_is_not_configured_initially():
    r = S.broker.admin("GET", f"/v1/orgs/{h.new_org()}/webhook-secrets/test")
    h.assert_status(r, 200)
    h.assert_json_headers(r)
    assert r.json().get("configured") is False, r.describe()


def test_webhook_secret_put_get_delete():
    org = h.new_org()
    secret = "whsec_" + h.rand_str(32)
    h.remember("webhook_secret", secret)
    path = f"/v1/orgs/{org}/webhook-secrets/live"
    r = S.broker.admin("PUT", path, json_body={"signing_secret": secret})
    assert r.status == 204 and r.body == b"", f"expected an empty 204: {r.describe()}"
    r = S.broker.admin("GET", path)
    h.assert_status(r, 200)
    j = r.json()
    assert j.get("configured") is True, r.describe()
    h.assert_recent(j.get("updated_at"))
    assert secret not in r.text, "GET shows the signing secret"
    r = S.broker.admin("GET", f"/v1/orgs/{org}/webhook-secrets/test")
    assert r.json().get("configured") is False, f"the live secret shows up in test: {r.describe()}"
    r = S.broker.admin("DELETE", path)
    assert r.status == 204, r.describe()
    r = S.broker.admin("GET", path)
    h.assert_status(r, 200)
    assert r.json().get("configured") is False, r.describe()


def test_webhook_secret_with_org_key():
    org = h.new_org()
    key = S.broker.create_api_key(org)["api_key"]
    secret = "whsec_" + h.rand_str(32)
    h.remember("webhook_secret", secret)
    r = S.broker.request("PUT", f"/v1/orgs/{org}/webhook-secrets/test", token=key,
                         json_body={"signing_secret": secret})
    h.assert_status(r, 204)
    r = S.broker.request("GET", f"/v1/orgs/{org}/webhook-secrets/test", token=key)
    assert r.json().get("configured") is True


def test_webhook_secret_put_with_bad_json_is_400():
    org = h.new_org()
    path = f"/v1/orgs/{org}/webhook-secrets/test"
    for body in ("{not json", "", "[]", '"whsec_x"', '{"signing_secret": "whsec_x"'):
        r = S.broker.admin("PUT", path, body=body, headers={"Content-Type": "application/json"})
        assert r.status == 400, f"body {body!r}: {r.describe()}"
        h.assert_error(r, 400, "invalid_request")
    assert S.broker.admin("GET", path).json().get("configured") is False


def test_webhook_secret_put_without_signing_secret_is_400():
    org = h.new_org()
    path = f"/v1/orgs/{org}/webhook-secrets/test"
    for body in ({}, {"secret": "whsec_abc"}, {"signing_secret": ""}, {"signing_secret": 42},
                 {"signing_secret": None}):
        r = S.broker.admin("PUT", path, json_body=body)
        assert r.status == 400, f"body {body!r}: {r.describe()}"
        h.assert_error(r, 400, "invalid_request")
    assert S.broker.admin("GET", path).json().get("configured") is False


# ===== authorize links =====

def test_authorize_link_is_201_with_url_and_expires_at():
    org = h.new_org()
    r = S.broker.authorize_link(org, "test")
    h.assert_status(r, 201)
    h.assert_json_headers(r)
    j = r.json()
    assert j["url"].startswith(S.broker.public + "/setup?ticket="), r.describe()
    ticket = urllib.parse.parse_qs(urllib.parse.urlsplit(j["url"]).query)["ticket"][0]
    assert len(ticket) >= 32, f"the ticket is short: {ticket!r}"
    exp = h.parse_rfc3339(j.get("expires_at"))
    left = (exp - datetime.now(timezone.utc)).total_seconds()
    assert 540 <= left <= 660, f"the link expires in {left:.0f}s, not about 10 minutes"


def test_authorize_links_are_distinct():
    org = h.new_org()
    a = S.broker.authorize_link(org, "test").json()["url"]
    b = S.broker.authorize_link(org, "test").json()["url"]
    assert a != b


def test_authorize_link_with_bad_mode_is_400():
    org = h.new_org()
    for body in ({"mode": "foo"}, {"mode": "TEST"}, {"mode": 1}, {}, {"mode": None}):
        r = S.broker.admin("POST", f"/v1/orgs/{org}/authorize-links", json_body=body)
        assert r.status == 400, f"body {body}: {r.describe()}"
        h.assert_error(r, 400, "invalid_request")


def test_authorize_link_with_bad_json_is_400():
    org = h.new_org()
    r = S.broker.admin("POST", f"/v1/orgs/{org}/authorize-links", body="{mode: test}",
                       headers={"Content-Type": "application/json"})
    h.assert_error(r, 400, "invalid_request")


def test_authorize_link_with_return_url_outside_allow_list_is_400():
    org = h.new_org()
    for url in ("http://evil.example", "https://evil.com", "https://x.my.salesforce.com.evil.com",
                "javascript:alert(1)", "http://acme.my.salesforce.com/lightning/page",
                "https://my.salesforce.com/x", "//acme.my.salesforce.com/x",
                "https://acme.my.salesforce.com@evil.com/", "https://evil.com/.my.salesforce.com",
                "https://evil.com\\.my.salesforce.com", "data:text/html,hi", "/setup"):
        r = S.broker.authorize_link(org, "test", return_url=url)
        assert r.status == 400, f"return_url {url!r} accepted: {r.describe()}"
        h.assert_error(r, 400, "invalid_request")


def assert_link(r, org, mode, return_url=None):
    """A 201 authorize link as the contract shapes it, opened in a browser: the setup page
    of that org with the link's mode preselected and, when given, a Finish link to the
    return_url. Returns the Flow, its setup page loaded."""
    h.assert_status(r, 201)
    body = r.json()
    assert set(body) == {"url", "expires_at"}, body
    u = urllib.parse.urlsplit(body["url"])
    assert f"{u.scheme}://{u.netloc}" == S.broker.public and u.path == "/setup", body["url"]
    q = urllib.parse.parse_qs(u.query)
    assert list(q) == ["ticket"] and len(q["ticket"][0]) >= 43, body["url"]
    left = (h.parse_rfc3339(body["expires_at"]) - datetime.now(timezone.utc)).total_seconds()
    assert 600 - 5 <= left <= 600 + 1, f"the link expires in {left:.0f}s, not 10 minutes"
    f = h.Flow(S.broker, S.sim, org, mode, return_url=return_url)
    f.link_url, f.ticket = body["url"], q["ticket"][0]
    r = f.open_ticket()
    assert r.status == 303, f"opening the link: {r.describe()}"
    page = f.setup_page()
    assert org in page.text, "the setup page does not show the org"
    form = h.find_form(page.text, "/setup/authorize")
    assert form and form["inputs"].get("mode") == mode, f"{mode} is not preselected: {form}"
    links = h.parse_page(page.text).links
    if return_url is not None:
        assert return_url in links, f"no Finish link to {return_url}: {links}"
    else:
        assert not [l for l in links if l and l.startswith("https://")], f"a Finish link without return_url: {links}"
    return f


def test_authorize_link_with_allowed_return_url_is_201():
    org = h.new_org()
    for url in ("https://acme.my.salesforce.com/lightning/page",
                "https://acme--sandbox.sandbox.my.salesforce.com/lightning/n/Stripe",
                "https://acme.lightning.force.com/lightning/page/home"):
        r = S.broker.authorize_link(org, "test", return_url=url)
        assert r.status == 201, f"return_url {url!r} refused: {r.describe()}"
        assert_link(r, org, "test", return_url=url)


def test_authorize_link_for_live_mode_is_201():
    org = h.new_org()
    f = assert_link(S.broker.authorize_link(org, "live"), org, "live")
    f.authorize_ok()   # to Stripe with the live platform's client id
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(f.authorize_location).query)
    assert q.get("client_id") == [h.LIVE_CLIENT_ID], q


def test_delete_live_keeps_a_directly_authorized_test_connection():
    org = h.new_org()
    ft = connect(org, "test")
    connect(org, "live")
    tok = S.broker.access_token(org, "test").json()["access_token"]
    h.assert_status(S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/live"), 204)
    r = S.broker.access_token(org, "test")
    assert_token_body(r, "test", ft.account)
    assert r.json()["access_token"] == tok and S.sim.token_active(tok)
    assert [c["mode"] for c in S.broker.connections(org)] == ["test"]


def test_encoded_query_values_are_decoded():
    org = h.new_org()
    f = connect(org, "test")
    r = S.broker.admin("GET", f"/v1/orgs/{org}/access-token?mode=te%73t")
    assert_token_body(r, "test", f.account)
