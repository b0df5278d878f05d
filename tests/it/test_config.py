"""Configuration from the environment and the CLI (CONTRACT §2, §7 CLI)."""

import base64
import json
import os
import re
import secrets
import tempfile
import time

import harness as h

S = None
TMP = None


def setup_module():
    global S, TMP
    TMP = tempfile.mkdtemp(prefix="stb-it-config-")
    S = h.Stack("config")


def teardown_module():
    S.close()


def setup_function():
    S.reset()


def write_file(content):
    fd, path = tempfile.mkstemp(dir=TMP)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    return path


# ===== a bad configuration: exit before listening, one line, no secret =====

def check_rejected(var, overrides, secrets_=()):
    S.assert_rejected(var, overrides, secrets_)


KEY_A = h.new_encryption_key()
KEY_B = h.new_encryption_key()
SHORT_KEY = base64.b64encode(secrets.token_bytes(16)).decode()
LONG_KEY = base64.b64encode(secrets.token_bytes(48)).decode()
SHORT_ADMIN = h.rand_str(31)
REDIS_PASSWORD = "pw" + h.rand_str(20)
EVENTS_SECRET = "evsec_" + h.rand_str(24)

# name, variable the line must name, overrides, secret values that must not be printed
REJECTED = [
    ("missing_public_url", "BROKER_PUBLIC_URL", {"BROKER_PUBLIC_URL": None}, []),
    ("malformed_public_url", "BROKER_PUBLIC_URL", {"BROKER_PUBLIC_URL": "ftp://broker.example.com"}, []),
    ("public_url_path_with_dot_dot", "BROKER_PUBLIC_URL",
     {"BROKER_PUBLIC_URL": "https://apps.example.com/a/../stripe-broker"}, []),
    ("public_url_path_with_empty_segment", "BROKER_PUBLIC_URL",
     {"BROKER_PUBLIC_URL": "https://apps.example.com//stripe-broker"}, []),
    ("public_url_path_with_markup", "BROKER_PUBLIC_URL",
     {"BROKER_PUBLIC_URL": "https://apps.example.com/x\"><b>"}, []),
    # the router strips BROKER_PUBLIC_URL's path: one named like a route breaks that route
    ("public_url_path_v1", "BROKER_PUBLIC_URL", {"BROKER_PUBLIC_URL": "https://apps.example.com/v1"}, []),
    ("public_url_path_setup", "BROKER_PUBLIC_URL", {"BROKER_PUBLIC_URL": "https://apps.example.com/setup/x"}, []),
    ("public_url_path_healthz", "BROKER_PUBLIC_URL", {"BROKER_PUBLIC_URL": "https://apps.example.com/healthz"}, []),
    ("missing_encryption_keys", "BROKER_ENCRYPTION_KEYS", {"BROKER_ENCRYPTION_KEYS": None}, []),
    ("encryption_key_of_16_bytes", "BROKER_ENCRYPTION_KEYS",
     {"BROKER_ENCRYPTION_KEYS": "k1:" + SHORT_KEY}, [SHORT_KEY]),
    ("encryption_key_of_48_bytes", "BROKER_ENCRYPTION_KEYS",
     {"BROKER_ENCRYPTION_KEYS": "k1:" + LONG_KEY}, [LONG_KEY]),
    ("encryption_key_not_base64", "BROKER_ENCRYPTION_KEYS",
     {"BROKER_ENCRYPTION_KEYS": "k1:" + KEY_A[:20] + "!!" + KEY_A[22:]}, [KEY_A[:20]]),
    ("encryption_key_without_kid", "BROKER_ENCRYPTION_KEYS",
     {"BROKER_ENCRYPTION_KEYS": KEY_A}, [KEY_A]),
    ("encryption_key_with_empty_kid", "BROKER_ENCRYPTION_KEYS",
     {"BROKER_ENCRYPTION_KEYS": ":" + KEY_A}, [KEY_A]),
    ("encryption_key_with_bad_kid_chars", "BROKER_ENCRYPTION_KEYS",
     {"BROKER_ENCRYPTION_KEYS": "k 1:" + KEY_A}, [KEY_A]),
    ("encryption_key_with_33_char_kid", "BROKER_ENCRYPTION_KEYS",
     {"BROKER_ENCRYPTION_KEYS": "k" * 33 + ":" + KEY_A}, [KEY_A]),
    ("encryption_keys_with_duplicate_kid", "BROKER_ENCRYPTION_KEYS",
     {"BROKER_ENCRYPTION_KEYS": f"k1:{KEY_A},k1:{KEY_B}"}, [KEY_A, KEY_B]),
    ("missing_admin_token", "BROKER_ADMIN_TOKEN", {"BROKER_ADMIN_TOKEN": None}, []),
    ("admin_token_of_31_chars", "BROKER_ADMIN_TOKEN", {"BROKER_ADMIN_TOKEN": SHORT_ADMIN}, [SHORT_ADMIN]),
    ("unknown_oauth_flavor", "BROKER_OAUTH_FLAVOR", {"BROKER_OAUTH_FLAVOR": "oauth2"}, []),
    ("non_loopback_http_connect_url", "STRIPE_CONNECT_URL",
     {"STRIPE_CONNECT_URL": "http://connect.example.com"}, []),
    ("non_loopback_http_connect_url_by_ip", "STRIPE_CONNECT_URL",
     {"STRIPE_CONNECT_URL": "http://10.0.0.7:8080"}, []),
    ("loopback_lookalike_http_connect_url", "STRIPE_CONNECT_URL",
     {"STRIPE_CONNECT_URL": "http://127.0.0.1.evil.example"}, []),
    ("non_loopback_http_api_url", "STRIPE_API_URL", {"STRIPE_API_URL": "http://api.example.com"}, []),
    ("non_loopback_http_marketplace_url", "STRIPE_MARKETPLACE_URL",
     {"STRIPE_MARKETPLACE_URL": "http://marketplace.example.com"}, []),
    ("threads_zero", "BROKER_THREADS", {"BROKER_THREADS": "0"}, []),
    ("threads_not_a_number", "BROKER_THREADS", {"BROKER_THREADS": "two"}, []),
    ("threads_with_trailing_garbage", "BROKER_THREADS", {"BROKER_THREADS": "2x"}, []),
    ("threads_negative", "BROKER_THREADS", {"BROKER_THREADS": "-1"}, []),
    ("upstream_timeout_not_a_number", "BROKER_UPSTREAM_TIMEOUT_MS",
     {"BROKER_UPSTREAM_TIMEOUT_MS": "fast"}, []),
    ("refresh_margin_not_a_number", "BROKER_REFRESH_MARGIN_S", {"BROKER_REFRESH_MARGIN_S": "5m"}, []),
    ("proxy_allow_with_a_path", "BROKER_PROXY_ALLOW", {"BROKER_PROXY_ALLOW": "charges,v1/accounts"}, []),
    ("proxy_allow_upper_case", "BROKER_PROXY_ALLOW", {"BROKER_PROXY_ALLOW": "Charges"}, []),
    ("proxy_timeout_too_small", "BROKER_PROXY_TIMEOUT_MS", {"BROKER_PROXY_TIMEOUT_MS": "10"}, []),
    ("proxy_timeout_not_a_number", "BROKER_PROXY_TIMEOUT_MS", {"BROKER_PROXY_TIMEOUT_MS": "30s"}, []),
    ("unknown_log_level", "BROKER_LOG_LEVEL", {"BROKER_LOG_LEVEL": "verbose"}, []),
    ("non_loopback_http_events_url", "BROKER_EVENTS_URL",
     {"BROKER_EVENTS_URL": "http://hooks.example.com/in", "BROKER_EVENTS_SECRET": EVENTS_SECRET}, [EVENTS_SECRET]),
    ("events_url_not_a_url", "BROKER_EVENTS_URL",
     {"BROKER_EVENTS_URL": "hooks.example.com", "BROKER_EVENTS_SECRET": EVENTS_SECRET}, [EVENTS_SECRET]),
    ("events_url_without_secret", "BROKER_EVENTS_SECRET", {"BROKER_EVENTS_URL": "https://hooks.example.com/in"}, []),
    ("events_secret_without_url", "BROKER_EVENTS_URL", {"BROKER_EVENTS_SECRET": EVENTS_SECRET}, [EVENTS_SECRET]),
    ("short_events_secret", "BROKER_EVENTS_SECRET",
     {"BROKER_EVENTS_URL": "https://hooks.example.com/in", "BROKER_EVENTS_SECRET": "short"}, ["short"]),
    ("audit_retention_zero", "BROKER_AUDIT_RETENTION_DAYS", {"BROKER_AUDIT_RETENTION_DAYS": "0"}, []),
    ("audit_retention_not_a_number", "BROKER_AUDIT_RETENTION_DAYS", {"BROKER_AUDIT_RETENTION_DAYS": "1y"}, []),
    ("refresh_failing_not_a_number", "BROKER_REFRESH_FAILING_S", {"BROKER_REFRESH_FAILING_S": "15m"}, []),
    ("events_retry_max_zero", "BROKER_EVENTS_RETRY_MAX_S", {"BROKER_EVENTS_RETRY_MAX_S": "0"}, []),
    ("listen_without_port", "BROKER_LISTEN", {"BROKER_LISTEN": "127.0.0.1"}, []),
    ("listen_with_bad_port", "BROKER_LISTEN", {"BROKER_LISTEN": "127.0.0.1:99999"}, []),
    ("redis_url_with_bad_scheme", "BROKER_REDIS_URL", {"BROKER_REDIS_URL": "http://127.0.0.1:6379/0"}, []),
    ("redis_url_with_bad_port_hides_password", "BROKER_REDIS_URL",
     {"BROKER_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:notaport/0"}, [REDIS_PASSWORD]),
    ("trusted_proxies_not_an_address", "BROKER_TRUSTED_PROXIES",
     {"BROKER_TRUSTED_PROXIES": "10.0.0.0/8,ingress.internal"}, []),
    ("trusted_proxies_prefix_too_long", "BROKER_TRUSTED_PROXIES", {"BROKER_TRUSTED_PROXIES": "10.0.0.0/33"}, []),
    ("trusted_proxies_empty_entry", "BROKER_TRUSTED_PROXIES", {"BROKER_TRUSTED_PROXIES": "fd00::/8,,10.0.0.1"}, []),
    ("no_stripe_mode_enabled", "STRIPE_", {"STRIPE_CLIENT_ID_TEST": None, "STRIPE_SECRET_KEY_TEST": None,
                                           "STRIPE_CLIENT_ID_LIVE": None, "STRIPE_SECRET_KEY_LIVE": None}, []),
]


def _make_rejection_test(var, overrides, secret_values):
    def t():
        check_rejected(var, overrides, secret_values)
    return t


for _name, _var, _ov, _sec in REJECTED:
    _t = _make_rejection_test(_var, _ov, _sec)
    _t.__name__ = f"test_rejects_{_name}"
    globals()[_t.__name__] = _t


def test_rejects_admin_token_and_admin_token_file_both_set():
    token = h.new_admin_token()
    path = write_file(token + "\n")
    check_rejected("BROKER_ADMIN_TOKEN", {"BROKER_ADMIN_TOKEN": token, "BROKER_ADMIN_TOKEN_FILE": path},
                   [token])


def test_rejects_secret_key_and_secret_key_file_both_set():
    path = write_file(h.TEST_SECRET_KEY + "\n")
    check_rejected("STRIPE_SECRET_KEY_TEST", {"STRIPE_SECRET_KEY_TEST_FILE": path}, [h.TEST_SECRET_KEY])


def test_rejects_admin_token_file_that_does_not_exist():
    check_rejected("BROKER_ADMIN_TOKEN", {"BROKER_ADMIN_TOKEN": None,
                                          "BROKER_ADMIN_TOKEN_FILE": os.path.join(TMP, "absent")})


def test_rejects_short_admin_token_from_file_without_printing_it():
    path = write_file(SHORT_ADMIN + "\n")
    check_rejected("BROKER_ADMIN_TOKEN", {"BROKER_ADMIN_TOKEN": None, "BROKER_ADMIN_TOKEN_FILE": path},
                   [SHORT_ADMIN])


# ===== accepted variants =====

def test_admin_token_from_file_works():
    token = h.new_admin_token()
    path = write_file(token + "\n")
    b = S.new_broker("adminfile", BROKER_ADMIN_TOKEN=None, BROKER_ADMIN_TOKEN_FILE=path)
    try:
        org = h.new_org()
        r = b.request("GET", f"/v1/admin/orgs/{org}/api-keys", token=token)
        assert r.status == 200, f"the admin token from the file is refused: {r.describe()}"
        r = b.request("GET", f"/v1/admin/orgs/{org}/api-keys", token=S.broker.admin_token)
        h.assert_error(r, 401, "unauthorized")
    finally:
        b.stop()


def test_encryption_keys_and_stripe_secrets_from_files_work():
    keys_path = write_file("k1:" + h.new_encryption_key() + "\n")
    sk_test = write_file(h.TEST_SECRET_KEY + "\n")
    sk_live = write_file(h.LIVE_SECRET_KEY + "\n")
    b = S.new_broker("secretfiles", BROKER_ENCRYPTION_KEYS=None, BROKER_ENCRYPTION_KEYS_FILE=keys_path,
                     STRIPE_SECRET_KEY_TEST=None, STRIPE_SECRET_KEY_TEST_FILE=sk_test,
                     STRIPE_SECRET_KEY_LIVE=None, STRIPE_SECRET_KEY_LIVE_FILE=sk_live)
    try:
        org = h.new_org()
        f = h.Flow(b, S.sim, org, "live").run()
        r = b.access_token(org, "live")
        h.assert_status(r, 200)
        assert r.json()["stripe_user_id"] == f.account
    finally:
        b.stop()


def test_unpadded_base64_encryption_key_is_accepted():
    key = h.new_encryption_key().rstrip("=")
    b = S.new_broker("unpadded", BROKER_ENCRYPTION_KEYS="k1:" + key)
    b.stop()


def test_several_encryption_keys_are_accepted():
    b = S.new_broker("twokeys", BROKER_ENCRYPTION_KEYS=f"new_1:{KEY_A},old-0:{KEY_B}")
    b.stop()


def test_half_a_stripe_pair_starts_with_that_mode_disabled_and_warns():
    """CONTRACT §2: a mode is enabled when its client id and secret key are both set."""
    b = S.new_broker("halfpair", STRIPE_SECRET_KEY_LIVE=None)
    try:
        h.assert_error(b.access_token(h.new_org(), "live"), 400, "mode_not_enabled")
        h.assert_error(b.access_token(h.new_org(), "test"), 404, "not_connected")
        warn = [json.loads(l) for l in b.log_lines() if "STRIPE_SECRET_KEY_LIVE" in l]
        assert [(j["level"], j.get("mode")) for j in warn] == [("warn", "live")], warn
    finally:
        b.stop()


def test_half_a_stripe_pair_with_no_other_mode_is_rejected_naming_the_missing_one():
    check_rejected("STRIPE_SECRET_KEY_TEST", {"STRIPE_SECRET_KEY_TEST": None, "STRIPE_CLIENT_ID_LIVE": None,
                                              "STRIPE_SECRET_KEY_LIVE": None})


def test_http_localhost_upstream_is_accepted():
    b = S.new_broker("localhost", STRIPE_CONNECT_URL=f"http://localhost:{S.sim.port}")
    b.stop()


def test_trailing_slash_of_public_url_is_ignored():
    port = h.free_port()
    b = S.new_broker("slash", BROKER_LISTEN=f"127.0.0.1:{port}",
                     BROKER_PUBLIC_URL=f"http://127.0.0.1:{port}/")
    try:
        r = b.authorize_link(h.new_org(), "test")
        h.assert_status(r, 201)
        assert r.json()["url"].startswith(f"http://127.0.0.1:{port}/setup?ticket="), r.describe()
    finally:
        b.stop()


# ===== CLI =====

def test_version_exits_0_and_prints_a_version():
    p = h.run_cli(["--version"], {}, log_name="config")
    assert p.returncode == 0, f"--version exit {p.returncode}: {p.stderr!r}"
    assert re.search(r"\d+\.\d+\.\d+", p.stdout + p.stderr), f"no version in {p.stdout!r}"


def test_help_exits_0_and_lists_the_commands():
    p = h.run_cli(["--help"], {}, log_name="config")
    assert p.returncode == 0, f"--help exit {p.returncode}: {p.stderr!r}"
    text = p.stdout + p.stderr
    for cmd in ("serve", "create-api-key", "rotate-keys", "check"):
        assert cmd in text, f"--help does not mention {cmd}: {text[:400]!r}"


def test_unknown_command_exits_non_zero():
    p = h.run_cli(["frobnicate"], S.broker.env, log_name="config")
    assert p.returncode != 0, "an unknown command exited 0"


def test_check_exits_0_with_redis_up():
    p = h.run_cli(["check"], S.broker.env, log_name="config")
    assert p.returncode == 0, f"check exit {p.returncode}: {p.stderr!r}"


def test_check_exits_1_with_redis_down():
    env = dict(S.broker.env, BROKER_REDIS_URL=f"redis://127.0.0.1:{h.free_port()}/0")
    t0 = time.monotonic()
    p = h.run_cli(["check"], env, timeout=20, log_name="config")
    assert p.returncode == 1, f"check exit {p.returncode} with Redis down: {p.stderr!r}"
    assert time.monotonic() - t0 < 15


def test_check_exits_1_with_bad_configuration():
    env = dict(S.broker.env, BROKER_ADMIN_TOKEN=SHORT_ADMIN)
    p = h.run_cli(["check"], env, log_name="config")
    assert p.returncode == 1, f"check exit {p.returncode} with a short admin token"
    assert SHORT_ADMIN not in p.stdout + p.stderr, "check printed the admin token"


def _printed_key(p):
    out = p.stdout.strip()
    try:
        j = json.loads(out)
        if isinstance(j, dict) and j.get("api_key"):
            return j["api_key"]
    except ValueError:
        pass
    lines = [l for l in out.splitlines() if l.strip()]
    assert lines, f"create-api-key printed nothing: {p.stderr!r}"
    return lines[-1].split()[-1]


def test_create_api_key_prints_a_key_that_works_for_that_org():
    org = h.new_org()
    p = h.run_cli(["create-api-key", org], S.broker.env, log_name="config")
    assert p.returncode == 0, f"create-api-key exit {p.returncode}: {p.stderr!r}"
    key = _printed_key(p)
    h.remember("api_key", key)
    r = S.broker.request("GET", f"/v1/orgs/{org}/connections", token=key)
    assert r.status == 200, f"the printed key does not work: {r.describe()}"
    r = S.broker.request("GET", f"/v1/orgs/{h.new_org()}/connections", token=key)
    h.assert_error(r, 403, "forbidden")


def test_create_api_key_accepts_15_char_org_id_and_normalises_it():
    org15 = h.new_org15()
    org = h.org18(org15)
    p = h.run_cli(["create-api-key", org15], S.broker.env, log_name="config")
    assert p.returncode == 0, f"create-api-key exit {p.returncode}: {p.stderr!r}"
    key = _printed_key(p)
    for path_org in (org, org15, org.upper()):
        r = S.broker.request("GET", f"/v1/orgs/{path_org}/connections", token=key)
        assert r.status == 200, f"the key for {org15} does not work on {path_org}: {r.describe()}"
    r = S.broker.admin("GET", f"/v1/admin/orgs/{org}/api-keys")
    h.assert_status(r, 200)
    assert len(r.json()["api_keys"]) == 1, f"the key is not listed under {org}: {r.describe()}"


def test_create_api_key_rejects_bad_org_id():
    p = h.run_cli(["create-api-key", "00Dnotanorgid"], S.broker.env, log_name="config")
    assert p.returncode != 0, "create-api-key accepted a bad org id"
