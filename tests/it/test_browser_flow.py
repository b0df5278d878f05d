"""The setup assistant in the admin's browser (CONTRACT §5)."""

import re
import time
import urllib.parse

import harness as h

S = None
HTTPS_BROKER = None


def setup_module():
    global S
    S = h.Stack("browser")


def teardown_module():
    S.close()


def setup_function():
    S.reset()


def flow(org=None, mode="test", broker=None, **kw):
    """A new flow for org (a new one by default) on broker (the module's by default)."""
    return h.Flow(broker or S.broker, S.sim, org or h.new_org(), mode, **kw)


# The flow brought to a step, for the tests that probe the next one (each step asserts
# what the contract promises of it, see harness.Flow).

def opened(org=None, mode="test", **kw):
    """The setup link opened: the browser holds a setup session."""
    f = flow(org, mode, **kw)
    f.open()
    return f


def on_setup_page(org=None, mode="test", **kw):
    """… and the setup page read (its csrf value in f.csrf)."""
    f = opened(org, mode, **kw)
    f.setup_page()
    return f


def sent_to_stripe(org=None, mode="test", **kw):
    """… and Authorize with Stripe posted: a state issued, the browser-binding cookie set."""
    f = on_setup_page(org, mode, **kw)
    f.authorize_ok()
    return f


def back_from_stripe(org=None, mode="test", **kw):
    """… and approved at Stripe: f.callback_url holds the code, not yet followed."""
    f = sent_to_stripe(org, mode, **kw)
    f.stripe()
    return f


def assert_page(r, status=None):
    """An HTML page of the setup assistant with the contract's headers."""
    if status is not None:
        assert r.status == status, f"expected a {status} page, got {r.describe()}"
    ct = (r.header("Content-Type") or "").lower()
    assert ct.startswith("text/html"), f"not an HTML page: {r.describe()}"
    csp = r.header("Content-Security-Policy")
    assert csp and csp.strip(), f"no Content-Security-Policy: {r.describe()}"
    assert (r.header("X-Frame-Options") or "").strip().upper() == "DENY", \
        f"X-Frame-Options is {r.header('X-Frame-Options')!r}"
    assert (r.header("Referrer-Policy") or "").strip().lower() == "no-referrer", \
        f"Referrer-Policy is {r.header('Referrer-Policy')!r}"
    assert "no-store" in (r.header("Cache-Control") or "").lower(), \
        f"Cache-Control is {r.header('Cache-Control')!r}"


# ===== the whole flow =====

def test_full_flow_connects_test_mode():
    f = flow(mode="test").run()
    r = S.broker.access_token(f.org, "test")
    h.assert_status(r, 200)
    assert r.json()["stripe_user_id"] == f.account and r.json()["livemode"] is False


def test_full_flow_connects_live_mode():
    f = flow(mode="live").run()
    r = S.broker.access_token(f.org, "live")
    h.assert_status(r, 200)
    assert r.json()["stripe_user_id"] == f.account and r.json()["livemode"] is True


def test_reauthorizing_replaces_the_connection():
    org = h.new_org()
    flow(org, "test").run()
    old = S.broker.access_token(org, "test").json()
    f2 = flow(org, "test").run()
    new = S.broker.access_token(org, "test").json()
    assert new["stripe_user_id"] == f2.account and new["access_token"] != old["access_token"]
    assert len(S.broker.connections(org)) == 1


# ===== tickets and sessions =====

def test_ticket_redirects_to_setup_and_sets_a_session_cookie():
    f = flow()
    f.link()
    r = f.open_ticket()
    assert r.status == 303, f"expected 303 See Other: {r.describe()}"
    loc = urllib.parse.urlsplit(r.header("Location") or "")
    assert loc.path == "/setup", f"Location is {r.header('Location')!r}"
    assert f.ticket not in (r.header("Location") or ""), "the ticket stays in the address bar"
    assert r.header_all("Set-Cookie"), "no session cookie"


def test_ticket_reuse_is_a_400_page():
    f = opened()
    r = f.open_ticket()
    assert_page(r, 400)
    r = h.Browser().get(S.broker.url(urllib.parse.urlsplit(f.link_url).path + "?ticket=" + f.ticket))
    assert_page(r, 400)


def test_unknown_ticket_is_a_400_page():
    r = h.Browser().get(S.broker.url("/setup?ticket=" + h.rand_str(43)))
    assert_page(r, 400)
    r = h.Browser().get(S.broker.url("/setup?ticket="))
    assert r.status == 400 or r.status == 401, r.describe()


def test_setup_without_session_is_a_401_page():
    r = h.Browser().get(S.broker.url("/setup"))
    assert_page(r, 401)


def test_setup_with_forged_session_cookie_is_a_401_page():
    f = opened()
    b = h.Browser()
    for (host, name, path), value in f.browser.jar.items():
        b.jar[(host, name, path)] = h.rand_str(len(value) or 43)
    r = b.get(S.broker.url("/setup"))
    assert_page(r, 401)


def test_setup_page_shows_org_mode_and_both_forms():
    org15 = h.new_org15()
    f = opened(h.org18(org15), "live")
    r = f.setup_page()
    assert_page(r, 200)
    assert f.org in r.text, "the page does not show the org id"
    auth = h.find_form(r.text, "/setup/authorize")
    assert auth and auth["method"] == "post", "no POST form to /setup/authorize"
    assert "csrf" in auth["inputs"], "the authorize form has no csrf field"
    assert auth["inputs"].get("mode") == "live", \
        f"the ticket's mode is not preselected: {auth['inputs']} / {auth['options']}"
    wh = h.find_form(r.text, "/setup/webhook-secret")
    assert wh and wh["method"] == "post", "no POST form to /setup/webhook-secret"
    assert "csrf" in wh["inputs"] and "signing_secret" in wh["inputs"], wh


def test_setup_page_has_no_inline_script():
    f = opened()
    r = f.setup_page()
    assert "<script>" not in r.text.lower() and "javascript:" not in r.text.lower()


# ===== POST /setup/authorize =====

def test_authorize_with_wrong_csrf_is_rejected_without_redirect_to_stripe():
    f = on_setup_page()
    for bad in ("wrong", "", f.csrf[:-1] + ("A" if f.csrf[-1:] != "A" else "B")):
        r = f.authorize(csrf=bad)
        assert 400 <= r.status < 500, f"csrf {bad!r}: {r.describe()}"
        loc = r.header("Location") or ""
        assert S.sim.base not in loc and "oauth/authorize" not in loc, f"redirected to Stripe: {loc}"
    r = f.browser.post_form(S.broker.url("/setup/authorize"), {"mode": "test"})
    assert 400 <= r.status < 500, f"no csrf: {r.describe()}"
    assert S.sim.calls("authorize") == 0


def test_authorize_csrf_of_another_session_is_rejected():
    a = on_setup_page()
    b = on_setup_page()
    r = a.authorize(csrf=b.csrf)
    assert 400 <= r.status < 500 and "oauth/authorize" not in (r.header("Location") or ""), \
        r.describe()


def test_authorize_without_session_is_rejected():
    r = h.Browser().post_form(S.broker.url("/setup/authorize"), {"csrf": h.rand_str(43), "mode": "test"})
    assert 400 <= r.status < 500, r.describe()
    assert "oauth/authorize" not in (r.header("Location") or "")


def _check_authorize_location(f, mode, client_id):
    f.authorize_ok(mode)
    u = urllib.parse.urlsplit(f.authorize_location)
    assert f"{u.scheme}://{u.netloc}{u.path}" == S.sim.base + "/oauth/authorize", f.authorize_location
    q = urllib.parse.parse_qs(u.query)
    assert q.get("response_type") == ["code"], q
    assert q.get("client_id") == [client_id], q
    assert q.get("scope") == ["read_write"], q
    assert q.get("redirect_uri") == [S.broker.public + "/oauth/callback"], q
    assert q.get("state") and len(q["state"][0]) >= 32, f"state missing or short: {q}"


def test_authorize_redirect_has_the_test_mode_oauth_parameters():
    _check_authorize_location(on_setup_page(mode="test"), "test", h.TEST_CLIENT_ID)


def test_authorize_redirect_has_the_live_mode_oauth_parameters():
    _check_authorize_location(on_setup_page(mode="live"), "live", h.LIVE_CLIENT_ID)


def test_each_authorize_gets_a_new_state():
    f = sent_to_stripe()
    s1 = f.state
    f.authorize_ok()
    assert f.state != s1, "the state was reused"


def test_switching_mode_in_the_form_connects_live():
    org = h.new_org()
    f = on_setup_page(org, "test")
    f.authorize_ok("live")
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(f.authorize_location).query)
    assert q.get("client_id") == [h.LIVE_CLIENT_ID], q
    f.stripe()
    f.finish()
    conns = S.broker.connections(org)
    assert [c["mode"] for c in conns] == ["live"], conns
    r = S.broker.access_token(org, "live")
    h.assert_status(r, 200)
    assert r.json()["livemode"] is True


def test_authorize_with_unknown_mode_is_rejected():
    f = on_setup_page()
    r = f.authorize(mode="staging")
    assert 400 <= r.status < 500 and "oauth/authorize" not in (r.header("Location") or ""), \
        r.describe()


# ===== GET /oauth/callback =====

def test_state_replay_is_400_and_the_code_is_presented_once():
    f = flow().run()
    r = f.callback()
    assert_page(r, 400)
    used = S.sim.stats()["codes_used"]
    assert used.get(f.code) == 1, f"the code was presented {used.get(f.code)} times"
    r = S.broker.access_token(f.org, "test")
    h.assert_status(r, 200)
    assert S.sim.token_active(r.json()["access_token"]), "the connection was revoked"


def test_callback_from_another_browser_is_400_and_never_reaches_stripe():
    f = back_from_stripe()
    r = f.callback(browser=h.Browser())
    assert_page(r, 400)
    assert S.sim.calls("token") == 0, "the token endpoint was called"
    assert S.broker.connections(f.org) == []


def _jar_cookies(browser, name_suffix):
    """{(host, name, path): value} of the cookies in the jar whose name ends with suffix."""
    return {k: v for k, v in browser.jar.items() if k[1].endswith(name_suffix)}


def test_callback_with_the_right_browser_cookie_but_another_session_is_400():
    # an attacker's state and browser cookie, planted in a victim's browser that has
    # its own setup session (or none): the state is bound to the attacker's session
    a = back_from_stripe()
    planted = _jar_cookies(a.browser, "stb_oauth")
    assert planted, f"no browser-binding cookie after POST /setup/authorize: {a.browser.jar}"
    b = opened()
    assert _jar_cookies(b.browser, "stb_session"), "the victim has no session cookie"
    b.browser.jar.update(planted)
    r = a.callback(browser=b.browser)
    assert_page(r, 400)
    assert S.sim.calls("token") == 0, "a state of another setup session reached Stripe"
    assert S.broker.connections(a.org) == [] and S.broker.connections(b.org) == []


def test_callback_with_the_right_session_but_another_browser_cookie_is_400():
    # the other half of the binding: the session is the one the state was issued to, but
    # the browser-binding cookie is not (a browser that lost it, or one planted over it)
    a = back_from_stripe()
    victim = h.Browser()
    victim.jar.update(_jar_cookies(a.browser, "stb_session"))
    assert victim.jar, "no session cookie after GET /setup?ticket"
    other = sent_to_stripe()
    victim.jar.update(_jar_cookies(other.browser, "stb_oauth"))
    r = a.callback(browser=victim)
    assert_page(r, 400)
    assert S.sim.calls("token") == 0, "a state reached Stripe from a browser it was not issued to"
    assert S.broker.connections(a.org) == []


def test_callback_with_the_right_browser_cookie_and_no_session_is_400():
    a = back_from_stripe()
    victim = h.Browser()
    victim.jar.update(_jar_cookies(a.browser, "stb_oauth"))
    assert victim.jar, "no browser-binding cookie after POST /setup/authorize"
    r = a.callback(browser=victim)
    assert_page(r, 400)
    assert S.sim.calls("token") == 0, "a state without its setup session reached Stripe"
    assert S.broker.connections(a.org) == []


def test_state_replay_with_the_browser_cookie_restored_is_400():
    # a second tab or a reload still holds the browser cookie the first callback cleared:
    # only consuming the state (GETDEL) keeps the code from reaching Stripe twice
    f = back_from_stripe()
    kept = _jar_cookies(f.browser, "stb_oauth")
    assert kept, "no browser-binding cookie after POST /setup/authorize"
    f.finish()
    f.browser.jar.update(kept)
    r = f.callback()
    assert_page(r, 400)
    assert S.sim.calls("token") == 1, f"the token endpoint was called {S.sim.calls('token')} times"
    used = S.sim.stats()["codes_used"]
    assert used.get(f.code) == 1, f"the code was presented {used.get(f.code)} times"
    r = S.broker.access_token(f.org, "test")
    h.assert_status(r, 200)
    assert S.sim.token_active(r.json()["access_token"]), "the connection was revoked"


def test_callback_with_the_state_of_another_session_is_400():
    a = back_from_stripe()
    b = sent_to_stripe()   # a browser that went as far as Stripe itself: it holds a binding of its own
    r = a.callback(browser=b.browser)
    assert_page(r, 400)
    assert S.sim.calls("token") == 0
    assert S.broker.connections(a.org) == []


def test_declined_authorization_shows_a_page_and_stores_nothing():
    S.sim.config(authorize="deny")
    f = sent_to_stripe()
    r = f.browser.get(f.authorize_location)
    assert r.status in (302, 303), r.describe()
    f.callback_url = r.header("Location")
    assert "error=access_denied" in f.callback_url
    r = f.callback()
    # the contract asks for a status below 500; declining is not an error: the broker
    # answers the page itself, 200, with the page headers
    assert_page(r, 200)
    assert "declined" in r.text.lower(), f"the page does not say the admin declined: {r.text[:600]!r}"
    assert S.sim.calls("token") == 0
    assert S.broker.connections(f.org) == []
    h.assert_error(S.broker.access_token(f.org, "test"), 404, "not_connected")


def test_unknown_state_is_400_and_never_reaches_stripe():
    f = on_setup_page()
    code = S.sim.issue_code(h.TEST_CLIENT_ID)
    r = f.browser.get(S.broker.url(f"/oauth/callback?code={code}&scope=read_write&state={h.rand_str(43)}"))
    assert_page(r, 400)
    assert S.sim.calls("token") == 0


def test_callback_without_state_or_code_is_400():
    f = sent_to_stripe()
    for q in ("", f"?code=ac_{h.rand_str(24)}", f"?state={f.state}&code=", "?state=&code=x"):
        r = f.browser.get(S.broker.url("/oauth/callback" + q))
        assert r.status == 400, f"/oauth/callback{q}: {r.describe()}"
    assert S.sim.calls("token") == 0


def test_expired_state_is_400():
    f = on_setup_page()
    c = S.rc()
    try:
        before = set(c.keys())
        f.authorize_ok()
        new = [k for k in c.keys() if k not in before and c.command("PTTL", k) > 0]
        assert new, "no new expiring Redis key after POST /setup/authorize (where is the state?)"
        f.stripe()
        for k in new:
            c.command("PEXPIRE", k, 1)
        h.wait_until(lambda: all(c.command("EXISTS", k) == 0 for k in new), 2, what="expiry")
    finally:
        c.close()
    r = f.callback()
    assert_page(r, 400)
    assert S.sim.calls("token") == 0


def test_stripe_token_failure_stores_nothing_and_does_not_crash():
    f = back_from_stripe()
    S.sim.fault(endpoint="token", kind="status", status=500, count=1)
    r = f.callback()
    assert r.status != 500, r.describe()
    page = f.browser.get(S.broker.url("/setup"))
    assert f.account not in page.text, "the page shows an account that was never connected"
    assert S.broker.connections(f.org) == []
    h.assert_status(S.broker.request("GET", "/healthz"), 200)


# ===== headers and cookies =====

def test_pages_have_the_security_headers():
    f = opened()
    assert_page(f.setup_page(), 200)
    assert_page(h.Browser().get(S.broker.url("/setup")), 401)
    assert_page(h.Browser().get(S.broker.url("/setup?ticket=" + h.rand_str(43))), 400)
    f.authorize_ok()
    f.stripe()
    f.callback()
    assert_page(f.callback(), 400)
    page = f.setup_page()
    assert_page(page, 200)


def assert_cookie_scope(raw):
    """Path=/ and no Domain (CONTRACT §5): the cookie belongs to this host only."""
    _, _, attrs = h.parse_set_cookie(raw)
    assert attrs.get("path") == "/", f"cookie without Path=/: {raw}"
    assert "domain" not in attrs, f"cookie with a Domain: {raw}"


def test_cookies_are_httponly_samesite_lax_and_not_secure_on_http():
    f = flow().run()
    assert f.browser.set_cookies, "no cookies were set"
    for raw in f.browser.set_cookies:
        name, _, attrs = h.parse_set_cookie(raw)
        assert attrs.get("httponly") is True, f"cookie without HttpOnly: {raw}"
        assert str(attrs.get("samesite", "")).lower() == "lax", f"cookie without SameSite=Lax: {raw}"
        assert "secure" not in attrs, f"Secure cookie on an http:// public URL: {raw}"
        # a browser refuses a __Host- cookie without Secure
        assert not name.startswith("__Host-"), f"__Host- cookie on an http:// public URL: {raw}"
        assert_cookie_scope(raw)


def https_broker():
    global HTTPS_BROKER
    if HTTPS_BROKER is None or not HTTPS_BROKER.running():
        HTTPS_BROKER = S.new_broker("https", BROKER_PUBLIC_URL="https://broker.example.com")
    return HTTPS_BROKER


def test_cookies_are_secure_host_prefixed_when_the_public_url_is_https():
    # the broker is told its public URL is https while the test talks plain http to it
    # (as behind a TLS-terminating ingress); this jar sends Secure cookies anyway
    f = flow(broker=https_broker())
    f.link()
    assert f.link_url.startswith("https://broker.example.com/setup?ticket="), f.link_url
    r = f.open_ticket()
    assert r.status == 303, r.describe()
    assert r.header_all("Set-Cookie"), "no session cookie"
    f.setup_page()
    r = f.authorize_ok()
    assert r.header_all("Set-Cookie"), "no browser-binding cookie with the state"
    f.stripe()
    f.finish()
    names = set()
    for raw in f.browser.set_cookies:
        name, _, attrs = h.parse_set_cookie(raw)
        names.add(name)
        assert name.startswith("__Host-"), f"cookie without the __Host- prefix on https: {raw}"
        assert attrs.get("secure") is True, f"cookie without Secure on https: {raw}"
        assert attrs.get("httponly") is True and str(attrs.get("samesite", "")).lower() == "lax", raw
        assert_cookie_scope(raw)
    assert len(names) == 2, f"expected a session and a browser-binding cookie: {names}"
    h.assert_status(HTTPS_BROKER.access_token(f.org, "test"), 200)


def test_cookies_without_the_host_prefix_are_ignored_on_https():
    # what a sibling subdomain can plant (Domain=parent, no __Host-) is not a session
    f = opened(broker=https_broker())
    planted = h.Browser()
    for (host, name, path), value in f.browser.jar.items():
        assert name.startswith("__Host-"), name
        planted.jar[(host, name[len("__Host-"):], path)] = value
    assert_page(planted.get(HTTPS_BROKER.url("/setup")), 401)
    assert f.browser.get(HTTPS_BROKER.url("/setup")).status == 200


def test_https_public_url_gives_an_https_redirect_uri():
    f = flow(broker=https_broker())
    f.link()
    f.open_ticket()
    # the Secure cookie would not be sent over http by a real browser; this jar sends it
    r = f.browser.get(HTTPS_BROKER.url("/setup"))
    assert r.status == 200, r.describe()
    f.setup_html = r.text
    f.csrf = h.csrf_of(r.text)
    f.authorize_ok()
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(f.authorize_location).query)
    assert q.get("redirect_uri") == ["https://broker.example.com/oauth/callback"], q


# ===== webhook secret form, finish link, escaping =====

def test_webhook_secret_form_stores_the_secret():
    f = on_setup_page(mode="live")
    secret = "whsec_" + h.rand_str(32)
    h.remember("webhook_secret", secret)
    r = f.browser.post_form(S.broker.url("/setup/webhook-secret"),
                            {"csrf": f.csrf, "signing_secret": secret})
    assert r.status in (200, 303), f"storing the webhook secret failed: {r.describe()}"
    assert secret not in r.text
    g = S.broker.admin("GET", f"/v1/orgs/{f.org}/webhook-secrets/live")
    assert g.json().get("configured") is True, g.describe()
    g = S.broker.admin("GET", f"/v1/orgs/{f.org}/webhook-secrets/test")
    assert g.json().get("configured") is False, "stored under the wrong mode"
    page = f.browser.get(S.broker.url("/setup"))
    assert secret not in page.text, "the page shows the signing secret"


def test_webhook_secret_form_with_wrong_csrf_stores_nothing():
    f = on_setup_page()
    r = f.browser.post_form(S.broker.url("/setup/webhook-secret"),
                            {"csrf": "nope", "signing_secret": "whsec_" + h.rand_str(32)})
    assert 400 <= r.status < 500, r.describe()
    g = S.broker.admin("GET", f"/v1/orgs/{f.org}/webhook-secrets/test")
    assert g.json().get("configured") is False


def test_finish_link_points_at_the_return_url():
    ret = "https://acme.my.salesforce.com/lightning/page"
    f = opened(return_url=ret)
    r = f.setup_page()
    links = h.parse_page(r.text).links
    assert ret in links, f"no Finish link to {ret}: {links}"
    f.authorize_ok()
    f.stripe()
    page = f.finish()
    assert ret in h.parse_page(page.text).links, "the Finish link is gone after connecting"


def test_reflected_return_url_is_html_escaped():
    ret = "https://acme.my.salesforce.com/lightning/page?a=1&b='x'&c=%22"
    r = S.broker.authorize_link(h.new_org(), "test", return_url=ret)
    assert r.status == 201, f"a valid return_url was refused: {r.describe()}"
    f = opened(return_url=ret)
    page = f.setup_page()
    assert ret in h.parse_page(page.text).links, "the return_url does not round-trip through the HTML"

    evil = 'https://acme.my.salesforce.com/x?q="><script>alert(1)</script><a x=\''
    r = S.broker.authorize_link(h.new_org(), "test", return_url=evil)
    if r.status == 400:
        h.assert_error(r, 400, "invalid_request")
        return
    assert r.status == 201, r.describe()
    f = opened(return_url=evil)
    page = f.setup_page()
    assert "<script>alert(1)</script>" not in page.text, "the return_url breaks out of the HTML"
    hrefs = h.parse_page(page.text).links
    assert evil in hrefs or any(urllib.parse.unquote(x) == evil for x in hrefs), hrefs


def test_the_form_cannot_change_the_org_of_the_session():
    org, other = h.new_org(), h.new_org()
    f = on_setup_page(org, "test")
    r = f.browser.post_form(S.broker.url("/setup/authorize"),
                            {"csrf": f.csrf, "mode": "test", "org": other, "org_id": other})
    if r.status == 303 and "oauth/authorize" in (r.header("Location") or ""):
        f.authorize_location = r.header("Location")
        f.stripe()
        f.finish()
    assert S.broker.connections(other) == [], "the form connected another org"


def test_a_second_ticket_in_the_same_browser_switches_to_its_org():
    a = opened(h.new_org(), "test")
    b = opened(h.new_org(), "live", browser=a.browser)
    page = b.setup_page()
    assert b.org in page.text and a.org not in page.text, "the session still shows the first org"
    b.authorize_ok()
    b.stripe()
    b.finish()
    assert [c["mode"] for c in S.broker.connections(b.org)] == ["live"]
    assert S.broker.connections(a.org) == []


# ===== BROKER_PUBLIC_URL with a path (an ingress forwarding the prefix unchanged) =====

PREFIXED_BROKER = None


def prefixed_broker():
    global PREFIXED_BROKER
    if PREFIXED_BROKER is None or not PREFIXED_BROKER.running():
        port = h.free_port()
        PREFIXED_BROKER = S.new_broker("prefixed", port=port,
                                       BROKER_PUBLIC_URL=f"http://127.0.0.1:{port}/stripe-broker/")
    return PREFIXED_BROKER


def follow(browser, r):
    """The URL a browser goes to from a 303 (its Location resolved against the request)."""
    assert r.status in (302, 303), r.describe()
    return urllib.parse.urljoin(r.url, r.header("Location"))


def test_the_whole_flow_works_under_the_public_url_path():
    b = prefixed_broker()
    pub = b.public
    assert pub.endswith("/stripe-broker"), pub
    org = h.new_org()
    ret = "https://acme.my.salesforce.com/lightning/page"
    r = b.authorize_link(org, "test", return_url=ret)
    h.assert_status(r, 201)
    link = r.json()["url"]
    assert link.startswith(pub + "/setup?ticket="), link
    browser = h.Browser()
    # every URL below is the one the broker gave (a link, a form action, a Location)
    r = browser.get(link)
    setup_url = follow(browser, r)
    assert urllib.parse.urlsplit(setup_url).path == "/stripe-broker/setup", r.describe()
    for raw in r.header_all("Set-Cookie"):
        assert h.parse_set_cookie(raw)[2].get("path") == "/", f"cookie not on Path=/: {raw}"
    page = browser.get(setup_url)
    assert_page(page, 200)
    assert org in page.text
    hrefs = [v for k, v in re.findall(r'<link ([^>]*)href="([^"]+)"', page.text)]
    assert hrefs == ["/stripe-broker/setup/style.css"], hrefs
    r = browser.get(urllib.parse.urljoin(setup_url, hrefs[0]))
    assert r.status == 200 and (r.header("Content-Type") or "").startswith("text/css"), r.describe()
    auth = h.find_form(page.text, "/setup/authorize")
    wh = h.find_form(page.text, "/setup/webhook-secret")
    assert auth["action"] == "/stripe-broker/setup/authorize", auth
    assert wh["action"] == "/stripe-broker/setup/webhook-secret", wh
    assert ret in h.parse_page(page.text).links, "no Finish link"
    csrf = h.csrf_of(page.text)

    # an error page's way back
    r = browser.post_form(urllib.parse.urljoin(setup_url, auth["action"]), {"csrf": "x", "mode": "test"})
    assert 400 <= r.status < 500, r.describe()
    assert "/stripe-broker/setup" in h.parse_page(r.text).links, h.parse_page(r.text).links

    r = browser.post_form(urllib.parse.urljoin(setup_url, auth["action"]), {"csrf": csrf, "mode": "test"})
    assert r.status == 303, r.describe()
    loc = r.header("Location")
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query)
    assert q.get("redirect_uri") == [pub + "/oauth/callback"], q
    account = "acct_" + h.rand_str(16)
    S.sim.config(next_account=account)
    r = browser.get(loc)
    callback = follow(browser, r)
    assert callback.startswith(pub + "/oauth/callback?"), callback
    r = browser.get(callback)
    back = follow(browser, r)
    assert urllib.parse.urlsplit(back).path == "/stripe-broker/setup", r.describe()
    page = browser.get(back)
    assert_page(page, 200)
    assert "Connected" in page.text and account in page.text, page.text[:600]

    secret = "whsec_" + h.rand_str(32)
    h.remember("webhook_secret", secret)
    r = browser.post_form(urllib.parse.urljoin(setup_url, wh["action"]),
                          {"csrf": csrf, "mode": "test", "signing_secret": secret})
    assert urllib.parse.urlsplit(follow(browser, r)).path == "/stripe-broker/setup", r.describe()

    # the API under the prefix too
    r = h.http_request("GET", f"{pub}/v1/orgs/{org}/access-token?mode=test",
                       headers={"Authorization": f"Bearer {b.admin_token}"})
    h.assert_status(r, 200)
    assert r.json()["stripe_user_id"] == account
    r = h.http_request("GET", f"{pub}/v1/orgs/{org}/webhook-secrets/test",
                       headers={"Authorization": f"Bearer {b.admin_token}"})
    assert r.status == 200 and r.json().get("configured") is True, r.describe()


def test_requests_without_the_public_url_path_are_served_too():
    # probes and scrapers reach the pod directly, without the ingress's prefix (README)
    b = prefixed_broker()
    for path in ("/healthz", "/stripe-broker/healthz", "/readyz", "/stripe-broker/metrics"):
        r = h.http_request("GET", b.url(path))
        assert r.status == 200, f"{path}: {r.describe()}"
    for path in ("/stripe-broker", "/stripe-brokerx/healthz", "/stripe-broker/stripe-broker/healthz"):
        r = h.http_request("GET", b.url(path))
        h.assert_error(r, 404, "not_found")
