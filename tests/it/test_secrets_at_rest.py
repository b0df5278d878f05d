"""Nothing sensitive in Redis or in the log, in clear (CONTRACT §7 logs, §8).

One scenario runs first (both modes through the browser, a minted test token, a
rotation, webhook secrets through the API and the form, API keys from the API and the
CLI, an unused link and a flow left half-way so tickets, sessions and states are still
in Redis). Every sensitive value the test saw is then looked for in every Redis key and
value (all types) and in the broker's stderr, also without its Stripe prefix and in
base64 and hex."""

import base64
import glob
import os
import re

import harness as h

S = None
SCENARIO = None


def setup_module():
    global S
    S = h.Stack("secrets")


def teardown_module():
    S.close()


def scenario():
    global SCENARIO
    if SCENARIO is not None:
        return SCENARIO
    b = S.broker
    org_a, org_b = h.new_org(), h.new_org()
    fa = h.Flow(b, S.sim, org_a, "test").run()
    h.Flow(b, S.sim, org_a, "live").run()
    h.Flow(b, S.sim, org_b, "live").run()
    for org, mode in ((org_a, "test"), (org_a, "live"), (org_b, "live"), (org_b, "test")):
        h.assert_status(b.access_token(org, mode), 200)    # org_b test is minted from live
    h.assert_status(b.admin("POST", f"/v1/orgs/{org_a}/access-token/rotate?mode=test"), 200)
    key_a = b.create_api_key(org_a)["api_key"]
    b.create_api_key(org_b)
    h.assert_status(b.access_token(org_a, "test", token=key_a), 200)
    p = h.run_cli(["create-api-key", org_b], b.env, log_name="secrets")
    assert p.returncode == 0, p.stderr
    cli_key = p.stdout.strip().splitlines()[-1].split()[-1].strip('"')
    h.remember("api_key", cli_key)
    whsec = "whsec_" + h.rand_str(32)
    h.remember("webhook_secret", whsec)
    h.assert_status(b.admin("PUT", f"/v1/orgs/{org_a}/webhook-secrets/test",
                            json_body={"signing_secret": whsec}), 204)
    # the form, in the session of a fresh setup flow for org_b live
    fw = h.Flow(b, S.sim, org_b, "live")
    fw.open()
    fw.setup_page()
    whsec2 = "whsec_" + h.rand_str(32)
    h.remember("webhook_secret", whsec2)
    r = fw.browser.post_form(b.url("/setup/webhook-secret"), {"csrf": fw.csrf, "signing_secret": whsec2})
    assert r.status in (200, 303), r.describe()
    # left half-way: a session and a state that are still pending, and an unused ticket
    fw.authorize_ok()
    fw.stripe()
    b.authorize_link(org_a, "live")
    # a replayed callback (the code seen twice by the browser, once by Stripe)
    fa.callback()
    S.sim.stats()
    SCENARIO = {"orgs": (org_a, org_b)}
    return SCENARIO


# ===== what to look for =====

STRIPE_PREFIXES = ("sk_test_", "sk_live_", "rk_test_", "rk_live_", "rt_", "whsec_", "ac_", "pk_test_",
                   "pk_live_")


def needles(*categories):
    """Every seen value of these categories, plus its random part without the Stripe
    prefix, and its base64 and hex encodings (values shorter than 12 are skipped)."""
    out = {}
    for cat in categories:
        for v in h.SEEN.get(cat, ()):
            if len(v) < 12:
                continue
            forms = {v: v}
            for p in STRIPE_PREFIXES:
                if v.startswith(p) and len(v) - len(p) >= 12:
                    forms[v[len(p):]] = v
            raw = v.encode()
            forms[base64.b64encode(raw).decode().rstrip("=")] = v
            forms[base64.urlsafe_b64encode(raw).decode().rstrip("=")] = v
            forms[raw.hex()] = v
            for f, orig in forms.items():
                out[f.encode()] = (cat, orig)
    return out


def find_in(items, categories):
    ns = needles(*categories)
    hits = []
    for item in items:
        for n, (cat, orig) in ns.items():
            if n in item:
                hits.append(f"{cat} {orig[:10]}… inside {item[:80]!r}")
    return hits


def redis_items():
    scenario()
    c = S.rc()
    try:
        return c.all_bytes()
    finally:
        c.close()


def assert_redis_clean(*categories):
    items = redis_items()
    assert items, "Redis is empty after the scenario"
    for cat in categories:
        assert h.SEEN.get(cat) or cat in OPTIONAL, f"the scenario saw no {cat} (test bug)"
    hits = find_in(items, categories)
    assert not hits, f"{len(hits)} clear value(s) in Redis, e.g. {hits[:3]}"


OPTIONAL = {"refresh_token", "csrf", "encryption_key"}


# ===== Redis =====

def test_redis_holds_no_access_token_in_clear():
    assert_redis_clean("access_token")


def test_redis_holds_no_refresh_token_in_clear():
    items = redis_items()
    pat = re.compile(rb"(?<![A-Za-z0-9])rt_[A-Za-z0-9]{24,}")
    hits = [i[:80] for i in items if pat.search(i)]
    assert not hits, f"refresh tokens in clear in Redis: {hits[:3]}"
    assert_redis_clean("refresh_token")


def test_redis_holds_no_webhook_secret_in_clear():
    assert_redis_clean("webhook_secret")


def test_redis_holds_no_api_key_or_admin_token_in_clear():
    assert_redis_clean("api_key", "admin_token")


def test_redis_holds_no_authorization_code_in_clear():
    assert_redis_clean("code")


def test_redis_holds_no_ticket_state_or_cookie_value_in_clear():
    assert_redis_clean("ticket", "state", "cookie")


def test_redis_holds_no_publishable_key_in_clear():
    assert_redis_clean("publishable_key")


def test_redis_holds_no_platform_secret_key_or_encryption_key():
    items = redis_items()
    for v in (h.TEST_SECRET_KEY, h.LIVE_SECRET_KEY):
        assert not [i for i in items if v.encode() in i], f"{v} is stored in Redis"
    assert_redis_clean("encryption_key")


def test_redis_has_no_stripe_prefixed_secret_at_all():
    items = redis_items()
    pats = [rb"sk_(test|live)_[A-Za-z0-9]{16,}", rb"whsec_[A-Za-z0-9]{16,}",
            rb"(?<![A-Za-z0-9])rt_[A-Za-z0-9]{24,}", rb"(?<![A-Za-z0-9])ac_[A-Za-z0-9]{20,}"]
    hits = []
    for i in items:
        for p in pats:
            m = re.search(p, i)
            if m:
                hits.append(m.group(0)[:16])
    assert not hits, f"Stripe secrets in clear in Redis: {hits[:5]}"


def test_every_redis_key_has_the_prefix():
    scenario()
    c = S.rc()
    try:
        keys = c.keys()
    finally:
        c.close()
    assert keys, "no keys"
    bad = [k for k in keys if not k.startswith(b"stb:")]
    assert not bad, f"keys without the stb: prefix: {bad[:5]}"


def test_connection_record_copied_to_another_org_does_not_open():
    org_a, _ = scenario()["orgs"]
    victim = h.new_org()
    c = S.rc()
    try:
        src = [k for k in c.keys() if org_a.encode() in k and b"test" in k.lower()]
        assert src, f"no Redis key names org {org_a} and test mode (layout unknown)"
        for k in src:
            dump = c.command("DUMP", k)
            c.command("RESTORE", k.replace(org_a.encode(), victim.encode()), 0, dump, "REPLACE")
    finally:
        c.close()
    r = S.broker.access_token(victim, "test")
    assert r.status != 200, f"a record copied from another org opened: {r.describe()}"
    h.assert_error(r, 500, "record_unreadable")


# ===== the log =====

def broker_log_lines():
    scenario()
    lines = []
    for path in sorted(glob.glob(os.path.join(h.log_dir(), "secrets.*.log"))):
        if path.endswith((".redis.log", ".sim.log", ".runner.log")):
            continue
        with open(path, "rb") as f:
            lines.extend(f.read().splitlines())
    assert lines, "the broker wrote no log lines"
    return lines


def test_log_holds_no_token_secret_key_code_ticket_state_or_cookie():
    lines = broker_log_lines()
    hits = find_in(lines, ["access_token", "refresh_token", "webhook_secret", "api_key", "admin_token",
                           "code", "ticket", "state", "cookie", "csrf", "encryption_key"])
    assert not hits, f"{len(hits)} sensitive value(s) in the log, e.g. {hits[:3]}"
    for v in (h.TEST_SECRET_KEY, h.LIVE_SECRET_KEY):
        assert not [l for l in lines if v.encode() in l], f"{v} is in the log"


def test_log_holds_no_stripe_prefixed_secret():
    lines = broker_log_lines()
    pats = [rb"sk_(test|live)_[A-Za-z0-9]{16,}", rb"whsec_[A-Za-z0-9]{16,}",
            rb"(?<![A-Za-z0-9])rt_[A-Za-z0-9]{24,}", rb"(?<![A-Za-z0-9])ac_[A-Za-z0-9]{20,}"]
    hits = [l[:120] for l in lines for p in pats if re.search(p, l)]
    assert not hits, f"Stripe secrets in the log: {hits[:3]}"


def test_log_holds_no_publishable_key():
    lines = broker_log_lines()
    hits = find_in(lines, ["publishable_key"])
    assert not hits, f"publishable keys in the log: {hits[:3]}"
