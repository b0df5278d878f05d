"""Path tricks, CRLF and HTML injection, open redirects, and the security headers.

  * paths: "..", %2f, double encoding and odd separators never reach another route or
    another org (an org key never gets an admin answer, nothing is created);
  * CRLF in any value never becomes a response header;
  * every value a page can reflect (the Stripe account id, the return_url, query and
    form fields, cookies) is HTML-escaped;
  * return_url accepts only allow-listed https origins, however the URL is dressed up,
    and every redirect the broker makes goes to itself or to the configured Stripe;
  * every page carries CSP, X-Frame-Options, Referrer-Policy, no-store and nosniff;
    cookies are HttpOnly, SameSite=Lax, and Secure behind an https public URL.
"""

import html
import urllib.parse

import faultlib as F

h = F.h
S = None
PAYLOAD = "\"'><x-inj onmouseover=alert(1)>"
RAW_MARKERS = (b"<x-inj", b"\"'><", b"onmouseover=alert(1)>")


def setup_module():
    global S
    S = h.Stack("fweb", **F.fault_env())


def teardown_module():
    S.close()


def setup_function():
    S.reset()


def org_with_key():
    org = h.new_org()
    return org, S.broker.create_api_key(org)["api_key"]


def api_key_count():
    return sum(1 for k in S.rc().keys() if (k.decode() if isinstance(k, bytes) else k).startswith("stb:key:"))


# ===== paths =====

def test_path_tricks_never_reach_another_route_or_org():
    org, key = org_with_key()
    other, _ = org_with_key()
    keys0 = api_key_count()
    q = urllib.parse.quote
    tries = [
        ("POST", f"/v1/orgs/{org}/../../admin/orgs/{org}/api-keys"),
        ("POST", f"/v1/orgs/{org}/%2e%2e/%2e%2e/admin/orgs/{org}/api-keys"),
        ("POST", f"/v1/orgs/{org}/..%2f..%2fadmin/orgs/{org}/api-keys"),
        ("POST", f"/v1/admin%2forgs/{org}/api-keys"),
        ("POST", f"/v1//admin/orgs/{org}/api-keys"),
        ("POST", f"/v1/./admin/orgs/{org}/api-keys"),
        ("POST", f"/V1/admin/orgs/{org}/api-keys"),
        ("POST", f"/v1/admin/orgs/{org}/api-keys/"),
        ("POST", f"/v1/admin/orgs/{org}/api-keys;x"),
        ("POST", f"/v1/admin/orgs/{org}/api-keys"),            # plain: 403 for an org key
        ("GET", f"/v1/orgs/{org}%2f..%2f{other}/connections"),
        ("GET", f"/v1/orgs/{other}/connections"),
        ("GET", f"/v1/orgs/{q(other)}%00/connections"),
        ("GET", "/v1/orgs/" + "".join(f"%{ord(c):02x}" for c in other) + "/connections"),
        ("GET", "/v1/orgs/" + "".join(f"%25{ord(c):02x}" for c in org) + "/connections"),
        ("GET", f"/v1/orgs/{org}/connections/..%2f..%2f{other}"),
        ("GET", f"/setup/..%2fv1/orgs/{org}/connections"),
        ("GET", f"/setup/../v1/orgs/{org}/connections"),
        ("GET", "/%2e%2e/%2e%2e/etc/passwd"),
        ("GET", "/openapi.yaml/../../../../etc/passwd"),
        ("GET", "/setup/style.css/..%2f..%2f..%2fetc%2fpasswd"),
    ]
    for method, path in tries:
        r = S.broker.request(method, path, token=key)
        assert r.status in (400, 401, 403, 404, 405), f"{method} {path}: {r.describe()}"
        assert b"root:" not in r.body, f"{method} {path} served a file"
    assert api_key_count() == keys0, "a path trick created an API key"
    # the org's own id, percent-encoded, is still that org (decoded before validation)
    r = S.broker.request("GET", "/v1/orgs/" + "".join(f"%{ord(c):02x}" for c in org) + "/connections", token=key)
    assert r.status in (200, 400), r.describe()


def test_crlf_never_becomes_a_header():
    org, key = org_with_key()
    inj = "%0d%0aX-Injected:%201%0d%0aSet-Cookie:%20inj=1"
    for method, path, kw in (
            ("GET", f"/v1/orgs/{org}/access-token?mode=test{inj}", {}),
            ("GET", f"/v1/orgs/{org}{inj}/connections", {}),
            ("GET", f"/setup?ticket={inj}", {}),
            ("GET", f"/oauth/callback?state={inj}&code={inj}", {}),
            ("GET", f"/oauth/callback?error={inj}&error_description={inj}", {}),
            ("POST", f"/v1/orgs/{org}/authorize-links",
             {"json_body": {"mode": "test", "return_url": "https://a.my.salesforce.com/\r\nX-Injected: 1"}}),
            ("POST", f"/v1/orgs/{org}/authorize-links",
             {"json_body": {"mode": "test", "return_url": "https://a.my.salesforce.com/%0d%0aX-Injected:%201"}})):
        r = S.broker.request(method, path, token=key, **kw)
        names = [k.lower() for k, _ in r.headers]
        assert "x-injected" not in names, f"{path}: a header was injected: {r.headers}"
        assert not any("inj=1" in v for v in r.header_all("Set-Cookie")), f"{path}: a cookie was injected"
        assert r.status < 500, r.describe()
    # a return_url that carried an encoded CRLF, if accepted, stays encoded on the page
    r = S.broker.authorize_link(org, "test", "https://a.my.salesforce.com/%0d%0aX-Injected:%201")
    if r.status == 201:
        f = h.Flow(S.broker, S.sim, org, "test")
        f.link_url = r.json()["url"]
        rr = f.open_ticket()
        assert "x-injected" not in [k.lower() for k, _ in rr.headers]
        page = f.setup_page()
        assert "\r\nX-Injected" not in page.text


# ===== HTML injection =====

def assert_escaped(r, where):
    for m in RAW_MARKERS:
        assert m not in r.body, f"{where}: the payload is reflected unescaped ({m!r}): {r.describe()}"


def test_every_reflected_value_is_html_escaped():
    org, key = org_with_key()
    allowed_ret = "https://acme.my.salesforce.com/lightning/" + urllib.parse.quote(PAYLOAD, safe="") \
        + "?x=" + urllib.parse.quote(PAYLOAD, safe="") + "#" + PAYLOAD.replace(" ", "")
    # 1. a return_url with the payload in path, query and fragment (accepted or refused, never raw)
    r = S.broker.authorize_link(org, "test", allowed_ret)
    ret_ok = r.status == 201
    f = h.Flow(S.broker, S.sim, org, "test", return_url=allowed_ret if ret_ok else None)
    f.open()
    page = f.setup_page()
    assert_escaped(page, "setup page with a crafted return_url")
    if ret_ok:
        links = h.parse_page(page.text).links
        assert allowed_ret in links, f"the Finish link does not round-trip the return_url: {links}"
    # 2. a Stripe account id carrying the payload (a hostile or broken upstream)
    f.authorize_ok()
    f.sim.config(next_account="acct_" + PAYLOAD)
    rr = f.browser.get(f.authorize_location)
    f.callback_url = rr.header("Location")
    cb = f.callback()
    assert_escaped(cb, "callback with a crafted account id")
    page = f.browser.get(S.broker.url("/setup"))
    assert_escaped(page, "setup page after a crafted account id")
    # 3. every query field, form field and cookie of the browser routes
    b = f.browser
    p = urllib.parse.quote(PAYLOAD, safe="")
    for path in (f"/setup?ticket={p}", f"/setup?x={p}", f"/oauth/callback?state={p}&code={p}",
                 f"/oauth/callback?error={p}&error_description={p}&state={p}",
                 f"/oauth/callback?error=access_denied&error_description={p}", f"/{p}", f"/setup/{p}"):
        assert_escaped(b.get(S.broker.url(path)), path)
        assert_escaped(h.http_request("GET", S.broker.url(path), headers={"Cookie": f"stb_setup={p}; stb_oauth={p}"}),
                       path + " with crafted cookies")
    csrf = h.csrf_of(b.get(S.broker.url("/setup")).text)
    for action, form in (("/setup/authorize", {"csrf": csrf, "mode": PAYLOAD}),
                         ("/setup/authorize", {"csrf": PAYLOAD, "mode": "test"}),
                         ("/setup/webhook-secret", {"csrf": csrf, "mode": PAYLOAD, "signing_secret": "whsec_x"}),
                         ("/setup/webhook-secret", {"csrf": csrf, "mode": "test", "signing_secret": PAYLOAD})):
        assert_escaped(b.post_form(S.broker.url(action), form), f"POST {action} {list(form)}")
    # 4. JSON answers reflecting input are JSON with nosniff, never HTML
    r = S.broker.request("GET", f"/v1/orgs/{p}/connections", token=key)
    h.assert_json_headers(r)
    assert (r.header("X-Content-Type-Options") or "").lower() == "nosniff"


# ===== open redirects =====

BAD_RETURN_URLS = [
    "https://evil.example", "https://evil.example/.my.salesforce.com", "//evil.example",
    "https://acme.my.salesforce.com.evil.example", "https://acme.my.salesforce.com@evil.example",
    "https://evil.example\\@acme.my.salesforce.com", "https://evil.example#.my.salesforce.com",
    "https://evil.example?.my.salesforce.com", "https://evil.example%2f.my.salesforce.com",
    "https://acme.my.salesforce.com%2e.evil.example", "https://acme.my.salesforce.com\\.evil.example",
    "javascript:alert(1)//acme.my.salesforce.com", "data:text/html,<script>alert(1)</script>",
    "http://acme.my.salesforce.com", "https://my.salesforce.com", "https://acme.my.salesforce.com:444",
    "https:acme.my.salesforce.com", "https:/acme.my.salesforce.com", "/relative/path",
    "https://user:pw@acme.my.salesforce.com", "https://acme.my.salesforce.com\t.evil.example",
    " https://acme.my.salesforce.com", "https://[::1]", "https://127.0.0.1", "https://acme.my.salesforce.com\x00.evil",
    "https://acme.my.salesforce.com\u3002evil.example", "https://acme.my.sаlesforce.com",   # Cyrillic a
    "https://*.my.salesforce.com", "https://evil.example/" + "a" * 5000,
]
GOOD_RETURN_URLS = ["https://acme.my.salesforce.com/lightning/page/home",
                    "https://acme--sandbox.sandbox.my.salesforce.com/", "https://a.b.lightning.force.com/x?y=1#z",
                    "HTTPS://ACME.MY.SALESFORCE.COM/Path"]
ALLOWED_SUFFIXES = (".my.salesforce.com", ".lightning.force.com", ".my.site.com", ".force.com")


def test_return_url_allows_only_the_allow_list():
    org, key = org_with_key()
    for url in BAD_RETURN_URLS:
        r = S.broker.authorize_link(org, "test", url, token=key)
        assert r.status == 400, f"return_url {url!r} was accepted: {r.describe()}"
        h.assert_error(r, 400, "invalid_request")
    for url in GOOD_RETURN_URLS:
        r = S.broker.authorize_link(org, "test", url, token=key)
        assert r.status == 201, f"return_url {url!r} was refused: {r.describe()}"
        f = h.Flow(S.broker, S.sim, org, "test")
        f.link_url = r.json()["url"]
        f.open_ticket()
        page = f.setup_page()
        finish = [u for u in h.parse_page(page.text).links if u.lower().startswith("https://")]
        assert finish, f"no Finish link for {url}"
        u = urllib.parse.urlsplit(finish[0])
        assert u.scheme == "https" and not u.username and u.port in (None, 443)
        assert (u.hostname or "").endswith(ALLOWED_SUFFIXES), f"Finish link leaves the allow-list: {finish[0]}"


def test_redirects_go_only_to_the_broker_or_the_configured_stripe():
    org, _ = org_with_key()
    evil = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
            "Forwarded": "host=evil.example"}
    r = S.broker.request("POST", f"/v1/orgs/{org}/authorize-links", token=S.broker.admin_token,
                         json_body={"mode": "test"}, headers=evil)
    assert r.status == 201 and r.json()["url"].startswith(S.broker.public + "/setup?"), r.describe()
    f = h.Flow(S.broker, S.sim, org, "test")
    f.link_url = r.json()["url"]
    u = urllib.parse.urlsplit(f.link_url)
    r = f.browser.get(S.broker.url(u.path + "?" + u.query + "&return_url=https://evil.example&next=//evil.example"),
                      headers=evil)
    assert r.status == 303 and r.header("Location") == "/setup", f"ticket redirect: {r.describe()}"
    f.setup_page()
    r = f.browser.post_form(S.broker.url("/setup/authorize"), {"csrf": f.csrf, "mode": "test",
                                                                "redirect_uri": "https://evil.example/cb"},
                            headers=evil)
    loc = r.header("Location") or ""
    assert r.status == 303 and loc.startswith(S.sim.base + "/oauth/authorize?"), f"authorize redirect: {r.describe()}"
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query)
    assert q.get("redirect_uri") == [S.broker.public + "/oauth/callback"], f"redirect_uri is {q.get('redirect_uri')}"
    f.authorize_location = loc
    f.state = q["state"][0]
    f.stripe()
    r = f.browser.get(S.broker.url(urllib.parse.urlsplit(f.callback_url).path + "?" +
                                   urllib.parse.urlsplit(f.callback_url).query + "&return_url=https://evil.example"),
                      headers=evil)
    assert r.status == 303 and r.header("Location") == "/setup", f"callback redirect: {r.describe()}"


# ===== security headers =====

def assert_page_headers(r, where):
    csp = r.header("Content-Security-Policy") or ""
    for d in ("default-src 'none'", "frame-ancestors 'none'", "base-uri 'none'"):
        assert d in csp, f"{where}: CSP lacks {d!r}: {csp!r}"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "*" not in csp.replace("'none'", ""), \
        f"{where}: weak CSP {csp!r}"
    assert (r.header("X-Frame-Options") or "").upper() == "DENY", f"{where}: X-Frame-Options"
    assert (r.header("Referrer-Policy") or "").lower() == "no-referrer", f"{where}: Referrer-Policy"
    assert "no-store" in (r.header("Cache-Control") or "").lower(), f"{where}: Cache-Control"
    assert (r.header("X-Content-Type-Options") or "").lower() == "nosniff", f"{where}: nosniff"
    assert (r.header("Content-Type") or "").startswith("text/html"), f"{where}: {r.header('Content-Type')}"


def assert_cookies(r, where, secure):
    for raw in r.header_all("Set-Cookie"):
        _, _, attrs = h.parse_set_cookie(raw)
        assert "httponly" in attrs, f"{where}: cookie without HttpOnly: {raw.split('=')[0]}"
        assert str(attrs.get("samesite", "")).lower() == "lax", f"{where}: cookie without SameSite=Lax"
        assert ("secure" in attrs) == secure, f"{where}: Secure is {'secure' in attrs}, expected {secure}"


def _walk_pages(broker, secure):
    org = h.new_org()
    f = h.Flow(broker, S.sim, org, "test")
    seen = []
    seen.append(("no session", h.http_request("GET", broker.url("/setup"))))
    seen.append(("bad ticket", h.http_request("GET", broker.url("/setup?ticket=" + "A" * 43))))
    seen.append(("bad state", h.http_request("GET", broker.url("/oauth/callback?state=" + "A" * 43 + "&code=ac_x"))))
    seen.append(("declined", h.http_request("GET", broker.url("/oauth/callback?error=access_denied"))))
    f.open()
    seen.append(("ticket", f.browser.history[-1]))
    seen.append(("setup", f.setup_page()))
    seen.append(("csrf", f.browser.post_form(broker.url("/setup/authorize"), {"csrf": "x", "mode": "test"})))
    seen.append(("authorize", f.authorize_ok()))
    f.stripe()
    seen.append(("callback", f.callback()))
    seen.append(("bad secret", f.browser.post_form(broker.url("/setup/webhook-secret"),
                                                   {"csrf": h.csrf_of(f.browser.get(broker.url('/setup')).text),
                                                    "signing_secret": "bad secret"})))
    for name, r in seen:
        assert_page_headers(r, name) if r.status != 303 else None
        if r.status == 303:
            for k in ("X-Frame-Options", "Referrer-Policy", "Cache-Control"):
                assert r.header(k), f"{name}: redirect without {k}"
        assert_cookies(r, name, secure)
    assert any(r.header_all("Set-Cookie") for _, r in seen), "no cookie was set during the flow"


def test_security_headers_on_every_page_and_cookie_flags():
    _walk_pages(S.broker, secure=False)
    for path in ("/healthz", "/v1/orgs/bad/connections", "/nope"):
        r = h.http_request("GET", S.broker.url(path))
        assert "no-store" in (r.header("Cache-Control") or "") and \
            (r.header("X-Content-Type-Options") or "").lower() == "nosniff", f"{path}: {r.headers}"


def test_cookies_are_secure_behind_an_https_public_url():
    port = h.free_port()
    b = S.new_broker("https", port=port, BROKER_PUBLIC_URL="https://broker.example.test", **F.fault_env())
    try:
        _walk_pages(b, secure=True)
    finally:
        b.stop()
        S.extra.remove(b)
