"""Encryption keys: rotate-keys, and records that cannot be opened (CONTRACT §4 500
record_unreadable, §7 CLI rotate-keys, §8)."""

import json

import harness as h

S = None
K1 = "k1:" + h.new_encryption_key()


def setup_module():
    global S
    S = h.Stack("keys", BROKER_ENCRYPTION_KEYS=K1)


def teardown_module():
    S.close()


def setup_function():
    S.reset()


def connected(org, mode="test"):
    return h.Flow(S.broker, S.sim, org, mode).run()


def broker_with_keys(label, keys):
    return S.new_broker(label, BROKER_ENCRYPTION_KEYS=keys)


def conn_keys(c, org):
    return [k for k in c.keys() if org.encode() in k]


def test_rotate_keys_reseals_everything_under_the_first_key():
    org = h.new_org()
    connected(org, "live")
    h.assert_status(S.broker.access_token(org, "test"), 200)
    whsec = "whsec_" + h.rand_str(32)
    h.remember("webhook_secret", whsec)
    h.assert_status(S.broker.admin("PUT", f"/v1/orgs/{org}/webhook-secrets/live",
                                   json_body={"signing_secret": whsec}), 204)
    before = {m: S.broker.access_token(org, m).json()["access_token"] for m in ("test", "live")}
    k2 = "k2:" + h.new_encryption_key()
    env = dict(S.broker.env, BROKER_ENCRYPTION_KEYS=f"{k2},{K1}")
    p = h.run_cli(["rotate-keys"], env, timeout=60, log_name="keys")
    assert p.returncode == 0, f"rotate-keys exit {p.returncode}: {p.stderr!r}"
    p = h.run_cli(["rotate-keys"], env, timeout=60, log_name="keys")
    assert p.returncode == 0, f"a second rotate-keys run failed: {p.stderr!r}"
    only_new = broker_with_keys("onlyk2", k2)
    try:
        for m in ("test", "live"):
            r = only_new.access_token(org, m)
            h.assert_status(r, 200)
            assert r.json()["access_token"] == before[m]
        r = only_new.admin("GET", f"/v1/orgs/{org}/webhook-secrets/live")
        assert r.json().get("configured") is True, r.describe()
    finally:
        only_new.stop()


def test_record_under_an_unknown_key_is_500_record_unreadable():
    org = h.new_org()
    connected(org)
    other = broker_with_keys("otherkey", "k9:" + h.new_encryption_key())
    try:
        r = other.access_token(org, "test")
        h.assert_error(r, 500, "record_unreadable")
    finally:
        other.stop()


def test_record_under_a_different_key_with_the_same_id_is_500_record_unreadable():
    org = h.new_org()
    connected(org)
    other = broker_with_keys("samekid", "k1:" + h.new_encryption_key())
    try:
        h.assert_error(other.access_token(org, "test"), 500, "record_unreadable")
    finally:
        other.stop()


def test_tampered_record_is_500_record_unreadable_and_logged_with_the_key_name():
    org = h.new_org()
    connected(org)
    c = S.rc()
    try:
        keys = [k for k in conn_keys(c, org) if b"test" in k and c.command("TYPE", k) == "string"]
        assert keys, f"no string key names org {org} and test mode (layout unknown)"
        tampered = []
        for k in keys:
            v = c.command("GET", k)
            if len(v) < 20:
                continue
            i = len(v) - 5
            flipped = v[:i] + bytes([v[i] ^ 0x01 if chr(v[i] ^ 0x01).isalnum() else v[i] ^ 0x02]) + v[i + 1:]
            c.command("SET", k, flipped, "KEEPTTL")
            tampered.append(k)
        assert tampered, "no sealed value to tamper with"
    finally:
        c.close()
    off = S.broker.log_size()
    r = S.broker.access_token(org, "test")
    h.assert_error(r, 500, "record_unreadable")

    def error_lines():
        errors = []
        for l in S.broker.log_lines(off):
            try:
                j = json.loads(l)
            except ValueError:
                continue
            if j.get("level") == "error":
                errors.append(l)
        return errors or None
    # a worker writes its log lines at the end of its loop turn, just after the answer
    errors = h.wait_until(error_lines, 3, what="an error log line for the unreadable record")
    assert any(k.decode() in " ".join(errors) for k in tampered), \
        f"the error line does not name the key: {errors}"


def test_unreadable_record_does_not_break_other_orgs():
    org, fine = h.new_org(), h.new_org()
    connected(org)
    connected(fine)
    c = S.rc()
    try:
        for k in conn_keys(c, org):
            if c.command("TYPE", k) == "string":
                c.command("SET", k, b"1:garbage")
    finally:
        c.close()
    h.assert_error(S.broker.access_token(org, "test"), 500, "record_unreadable")
    h.assert_status(S.broker.access_token(fine, "test"), 200)
    h.assert_status(S.broker.request("GET", "/healthz"), 200)
