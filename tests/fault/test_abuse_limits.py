"""Rate limits (CONTRACT §4: 429 rate_limited with Retry-After) and timing-safe
comparisons of every secret.

Limits: the browser endpoints (/setup*, /oauth/callback) per client IP
(BROKER_RATE_LIMIT_IP_PER_MIN, default 1200), the API under /v1/orgs/{org_id}/ per org
(BROKER_RATE_LIMIT_ORG_PER_S, default 1000), each per worker thread. With one worker the
counts are exact; with N workers a client gets at most N × the limit.

Timing: a black-box timing test cannot see a memcmp on loopback, so the comparisons are
audited in the source: every comparison of a secret goes through ct_equal, ct_equal is
CRYPTO_memcmp with no early exit, and no other comparison primitive touches a secret.
"""

import os
import re
import time

import faultlib as F

h = F.h
S = None


def setup_module():
    global S
    S = F.LimitedBrokers("flimits", default_limits=True)


def teardown_module():
    S.close()


def test_browser_endpoints_are_limited_per_client_ip():
    b = S.start("ip", BROKER_RATE_LIMIT_IP_PER_MIN="10")
    try:
        paths = ["/setup", "/setup?ticket=" + "A" * 43, "/oauth/callback?state=" + "A" * 43 + "&code=x"]
        statuses = [F.one(b, paths[i % 3])[0] for i in range(10)]
        assert 429 not in statuses, f"limited before 10 requests: {statuses}"
        st, hd, body = F.one(b, "/setup")
        F.assert_429((st, hd, body), page=True)
        st, hd, body = F.one(b, "/oauth/callback?error=access_denied")
        F.assert_429((st, hd, body), page=True)
        # another client address is not affected; nor are the probes
        st, _, _ = F.one(b, "/setup", source="127.0.0.2")
        assert st == 401, f"127.0.0.2 was limited by 127.0.0.1's traffic: {st}"
        assert F.one(b, "/healthz")[0] == 200 and F.one(b, "/readyz")[0] == 200
    finally:
        S.stop(b)


def test_api_is_limited_per_org():
    b = S.start("org", BROKER_RATE_LIMIT_ORG_PER_S="5")
    try:
        org, other = h.new_org(), h.new_org()
        key = b.create_api_key(org)["api_key"]
        okey = b.create_api_key(other)["api_key"]
        # 11 requests in well under a second: at least one 1-second window holds 6 of them
        t0 = time.monotonic()
        res = F.burst(b, f"/v1/orgs/{org}/connections", 11, key)
        assert time.monotonic() - t0 < 1.0, "the burst was too slow to be meaningful"
        sts = [r[0] for r in res]
        assert 429 not in sts[:5], f"limited within the first 5 requests: {sts}"
        limited = [r for r in res if r[0] == 429]
        assert limited, f"11 requests in under a second were never limited: {sts}"
        F.assert_429(limited[0])
        # another org is not affected
        assert all(r[0] == 200 for r in F.burst(b, f"/v1/orgs/{other}/connections", 3, okey))
        # and the limited org recovers once Retry-After has passed
        ra = int(limited[0][1]["retry-after"])
        h.wait_until(lambda: F.one(b, f"/v1/orgs/{org}/connections",
                                 headers={"Authorization": f"Bearer {key}"})[0] == 200,
                     ra + 1.5, interval=0.05, what="the org is served again after Retry-After")
    finally:
        S.stop(b)


def test_default_limits_are_1200_per_minute_and_1000_per_second():
    b = S.start("defaults")
    try:
        sts = [r[0] for r in F.burst(b, "/setup", 1201)]
        assert 429 not in sts[:1200], f"a browser client was limited before 1200 requests: first at {sts.index(429)}"
        assert 429 in sts, "1201 browser requests within a minute were never limited"
        org = h.new_org()
        key = b.create_api_key(org)["api_key"]
        # the broker counts in windows of whole seconds of CLOCK_MONOTONIC (the clock of
        # time.monotonic() too): start at a window's start, and assert only when the burst
        # ended inside that window
        h.wait_until(lambda: time.monotonic() % 1.0 < 0.05, 2, interval=0.005, what="a new second")
        t0 = time.monotonic()
        sts = [r[0] for r in F.burst(b, f"/v1/orgs/{org}/connections", 1001, key)]
        fast = int(time.monotonic()) == int(t0)
        assert 429 not in sts[:1000], f"an org was limited before 1000 requests: first at {sts.index(429)}"
        if fast:
            assert 429 in sts, "1001 API requests in under a second were never limited"
    finally:
        S.stop(b)


def test_limits_are_per_worker_thread():
    b = S.start("workers", BROKER_THREADS="2", BROKER_RATE_LIMIT_IP_PER_MIN="10")
    try:
        # new connections spread over both workers; at most 2 × 10 get through
        sts = [F.one(b, "/setup")[0] for _ in range(40)]
        ok = sum(1 for s in sts if s != 429)
        assert 10 <= ok <= 20, f"{ok} of 40 browser requests passed with 2 workers × 10/min: {sts}"
    finally:
        S.stop(b)


# ===== timing-safe comparisons (source audit) =====
# The audit below sees *how* each secret is compared, not that the result decides: it passed
# with the CSRF comparison's result ignored. Each property it names has a behavioural test
# (BEHAVIOUR, checked to exist by test_every_audited_property_has_a_behavioural_test) and a
# mutant in tests/mutants/mutants.txt that the behavioural test catches.

BROKER = os.path.join(F.REPO, "broker")
COMPARATORS = re.compile(r"\b(memcmp|strcmp|strncmp|strcasecmp|strncasecmp|bcmp|timingsafe_bcmp|CRYPTO_memcmp)\s*\(")
SECRETISH = re.compile(r"token|secret|csrf|hash|sig|mac|state|browser|cookie|ticket|code|password|passwd|"
                       r"api_?key|expect|want|admin|sealed|tag", re.I)
# Reviewed comparisons whose operands look secret-ish by name but are public values.
REVIEWED = {
    ("auth.c", 'memcmp(tok, "stb_", 4)'): "the public prefix of the key format",
    ("core/stripe_resp.c", 'strcmp(json_string_value(e), "invalid_grant")'): "an error code from Stripe",
    ("core/stripe_resp.c", 'strcmp(err, "invalid_grant")'): "an error code from Stripe",
    ("stripe/oauth.c", 'strcmp(grant, "authorization_code")'): "the grant type name",
    ("tokens/token_service.c", 'strcmp(ts->bg_cursor, "0")'): "a SCAN cursor",
    ("routes/oauth.c", 'strcmp(error, "access_denied")'): "the OAuth error parameter",
}
# Where each secret is compared, and the comparison that must be there.
REQUIRED = [
    ("auth.c", r"ct_equal\(tok, n, cfg->admin_token", "the admin token"),
    ("auth.c", r"ct_equal\(rec \+ 19, 64, bk->hash, 64\)", "the API key hash"),
    ("routes/setup.c", r"ct_equal\(csrf, strlen\(csrf\), expect, 64\)", "the CSRF token"),
    ("routes/oauth.c", r"ct_equal\(st\.browser, 64, c->browser, 64\)", "the OAuth state's browser binding"),
    ("core/webhook_sig.c", r"ct_equal\(want, WHSIG_HEX_LEN", "Stripe webhook signatures"),
]


# property -> the integration tests (tests/it/<module>.py::<function>) that see it decide
BEHAVIOUR = {
    "the admin token": ["test_admin::test_an_admin_token_off_by_one_character_is_401",
                        "test_admin::test_malformed_authorization_is_401_with_www_authenticate"],
    "the API key hash": ["test_admin::test_api_key_with_a_wrong_secret_part_is_401"],
    "the CSRF token": ["test_browser_flow::test_authorize_with_wrong_csrf_is_rejected_without_redirect_to_stripe",
                       "test_browser_flow::test_authorize_csrf_of_another_session_is_rejected",
                       "test_browser_flow::test_webhook_secret_form_with_wrong_csrf_stores_nothing"],
    "the OAuth state's browser binding": [
        "test_browser_flow::test_callback_from_another_browser_is_400_and_never_reaches_stripe",
        "test_browser_flow::test_callback_with_the_state_of_another_session_is_400"],
    "Stripe webhook signatures": ["test_webhooks::test_bad_signature_is_400_and_changes_nothing"],
    "lookups by hash": ["test_secrets_at_rest::test_redis_holds_no_ticket_state_or_cookie_value_in_clear"],
}


def test_every_audited_property_has_a_behavioural_test():
    names = [what for _, _, what in REQUIRED] + ["lookups by hash"]
    assert sorted(names) == sorted(BEHAVIOUR), "REQUIRED and BEHAVIOUR name different properties"
    for what, tests in BEHAVIOUR.items():
        for t in tests:
            mod, fn = t.split("::")
            with open(os.path.join(F.REPO, "tests", "it", mod + ".py"), encoding="utf-8") as f:
                assert re.search(rf"^def {fn}\(", f.read(), re.M), f"{what}: {t} does not exist"


def _calls(src):
    """Every comparator call with its full argument text (balanced parentheses)."""
    for m in COMPARATORS.finditer(src):
        i, depth = m.end(), 1
        while i < len(src) and depth:
            depth += {"(": 1, ")": -1}.get(src[i], 0)
            i += 1
        yield m.group(1), src[m.start():i], src.count("\n", 0, m.start()) + 1


def _sources():
    for root, _, files in os.walk(BROKER):
        for fn in files:
            if fn.endswith(".c"):
                p = os.path.join(root, fn)
                with open(p, encoding="utf-8", errors="replace") as f:
                    yield os.path.relpath(p, BROKER), f.read()


def test_every_secret_is_compared_in_constant_time():
    problems = []
    for rel, src in _sources():
        for name, call, line in _calls(src):
            if rel == "core/crypto.c" and name == "CRYPTO_memcmp":
                continue
            args = call[call.index("(") + 1:-1]
            if not SECRETISH.search(args):
                continue
            norm = " ".join(call.split())
            if (rel, norm) in REVIEWED:
                continue
            problems.append(f"broker/{rel}:{line}: {norm}")
    assert not problems, ("comparisons that may involve a secret without ct_equal (review them, "
                          "or use ct_equal): " + "; ".join(problems))
    srcs = dict(_sources())
    for rel, pattern, what in REQUIRED:
        assert re.search(pattern, srcs.get(rel, "")), f"{what} is not compared with ct_equal in broker/{rel}"
    body = re.search(r"int ct_equal\([^)]*\)\s*\{(.*?)\n\}", srcs["core/crypto.c"], re.S)
    assert body, "ct_equal not found in broker/core/crypto.c"
    code = body.group(1)
    assert "CRYPTO_memcmp" in code, "ct_equal does not use CRYPTO_memcmp"
    assert not re.search(r"\b(if|return)\b[^;]*\b(a|b)\[", code) and "for" not in code and "while" not in code, \
        "ct_equal branches on the contents"


def test_secret_lookups_never_use_the_secret_as_a_redis_key():
    """Tickets, sessions and states are looked up by their SHA-256, never by the value
    (a Redis dictionary lookup is not constant time); API keys by their public key id."""
    srcs = dict(_sources())
    # the key names are spelled in broker/store/keys.h (KEY_TICKET "ticket:%s", …)
    keys = open(os.path.join(BROKER, "store", "keys.h"), encoding="utf-8").read()
    for name, spelled in (("KEY_TICKET", "ticket:%s"), ("KEY_SESS", "sess:%s"), ("KEY_STATE", "state:%s")):
        assert re.search(rf'#define {name} "{re.escape(spelled)}"', keys), f"store/keys.h: {name} is not \"{spelled}\""
    # their keys are built in broker/store/flows.c only, each through HASHED_KEY, which
    # puts the value's SHA-256 in the key name
    flows = srcs["store/flows.c"]
    macro = re.search(r"#define HASHED_KEY\(c, prefix, KEYFMT, value\)(.*?)\n\n", flows, re.S)
    assert macro, "broker/store/flows.c: HASHED_KEY not found"
    assert re.search(r"sha256_hex\(\(value\), strlen\(value\), h_\);", macro.group(1)) and \
        re.search(r'store_cmd_addf\(\(c\), "%s" KEYFMT, \(prefix\), h_\);', macro.group(1)), \
        "broker/store/flows.c: HASHED_KEY does not key by the value's SHA-256"
    for name in ("KEY_TICKET", "KEY_SESS", "KEY_STATE"):
        uses = len(re.findall(rf"\b{name}\b", flows))
        hashed = len(re.findall(rf"HASHED_KEY\(c, prefix, {name}, \w+\)", flows))
        assert uses >= 1 and uses == hashed, f"broker/store/flows.c: {name} used {uses} times, {hashed} by hash"
        elsewhere = [rel for rel, src in srcs.items() if rel != "store/flows.c" and re.search(rf"\b{name}\b", src)]
        assert not elsewhere, f"{name} is used outside broker/store/flows.c: {elsewhere}"
