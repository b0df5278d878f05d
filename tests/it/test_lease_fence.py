"""The token write is fenced (CONTRACT §4.2 exactly once; proto/redis.md "Connections",
"Refresh lease"; threat model "Two writers racing on a connection").

A mint, refresh or rotation holds the Redis lease while it calls Stripe (delayed here by
the simulator's delay faults) and then writes with one Lua script. That write must
require, in the same script:
  * the current lease owner: a holder whose lease vanished (a failover, a Redis restart
    without persistence) writes nothing and never serves its token, which another
    holder's Stripe call may have revoked meanwhile;
  * the version of the record it read, versions never repeating for a key (a per-org
    counter that survives deletion), so a delete + re-authorize inside one Stripe call
    is never overwritten;
  * for a mint, the live record it minted from.
With a Redis replica attached, a lease and a rotated refresh token are confirmed with
WAIT before the answer.
"""

import os
import shutil
import subprocess
import tempfile
import threading

import harness as h

UPSTREAM_MS = 4000          # room for a 2.5 s Stripe delay inside one call
ENV = dict(BROKER_UPSTREAM_TIMEOUT_MS=str(UPSTREAM_MS))

APPS_ENV = dict(ENV, BROKER_OAUTH_FLAVOR="apps")

S = None
R2 = None
A = None        # apps flavor
A2 = None


def setup_module():
    global S, R2, A, A2
    S = h.Stack("lease", **ENV)
    R2 = S.new_broker("r2", **ENV)
    A = h.Stack("lease-apps", **APPS_ENV)
    A2 = A.new_broker("a2", **APPS_ENV)


def teardown_module():
    for st in (S, A):
        if st is not None:
            st.close()


def setup_function():
    S.reset()
    A.reset()
    assert R2.running() and A2.running(), "a second replica died"


def live_org(account=None):
    org = h.new_org()
    h.Flow(S.broker, S.sim, org, "live").run(account=account)
    return org


def in_background(fn):
    """Run fn in a thread; returns (thread, results list)."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    return t, out


def joined(t, out, what):
    t.join(timeout=15)
    assert not t.is_alive() and out, f"{what} did not answer"
    return out[0]


def wait_stripe_calls(n, what):
    h.wait_until(lambda: S.sim.calls("token") >= n, 10, what=what)


def conn_keys(rc):
    ks = [k.decode() if isinstance(k, bytes) else k for k in rc.keys()]
    return sorted(k for k in ks if ":conn:" in k or ":acct:" in k)


def stored(org, mode):
    """The connection as listed (no tokens), or None."""
    for c in S.broker.connections(org):
        if c["mode"] == mode:
            return c
    return None


# ===== the lease fences the write =====

def test_a_holder_whose_lease_was_deleted_neither_writes_nor_serves_its_token():
    """The audit's run: 2 replicas, Stripe 2.5 s slow, the lease key deleted during
    replica 1's mint (what a failover does). Replica 2 calls Stripe again; replica 1's
    token is revoked by that call, so replica 1 must not store or serve it."""
    org = live_org()
    rc = S.rc()
    lock = f"stb:lock:{org}:test"
    before = S.sim.calls("token")
    S.sim.fault(endpoint="token", kind="delay", delay_ms=2500, count=2)
    t1, out1 = in_background(lambda: S.broker.access_token(org, "test"))
    wait_stripe_calls(before + 1, "replica 1's Stripe call")
    h.wait_until(lambda: rc.command("EXISTS", lock) == 1, 5, what="replica 1's lease")
    assert rc.command("DEL", lock) == 1
    t2, out2 = in_background(lambda: R2.access_token(org, "test"))
    wait_stripe_calls(before + 2, "replica 2's Stripe call under a new lease")
    r1, r2 = joined(t1, out1, "replica 1"), joined(t2, out2, "replica 2")
    h.assert_status(r1, 200)
    h.assert_status(r2, 200)
    tok = r2.json()["access_token"]
    assert r1.json()["access_token"] == tok, "the two replicas served different tokens"
    assert S.sim.token_active(tok), "the token served (and stored) was already revoked at Stripe"
    for b in (S.broker, R2):
        assert b.access_token(org, "test").json()["access_token"] == tok
    assert S.sim.calls("token") - before == 2
    rc.close()


def test_apps_a_holder_whose_lease_was_deleted_keeps_its_rotated_refresh_token():
    """The same run in the apps flavor: replica 1's refresh reaches Stripe first and
    rotates the refresh token, so replica 2's call with the old one fails
    (invalid_grant). Stripe accepts a refresh token once, so replica 1 holds the only
    live refresh token: it must still be stored (version-checked, lease or not), and
    replica 2 must not mark the connection revoked."""
    org = h.new_org()
    h.Flow(A.broker, A.sim, org, "live").run()
    rc = A.rc()
    lock = f"stb:lock:{org}:live"
    before = A.sim.calls("apps_token")
    A.sim.fault(endpoint="apps_token", kind="delay", delay_ms=2500, count=2)
    path = f"/v1/orgs/{org}/access-token/rotate?mode=live"
    t1, out1 = in_background(lambda: A.broker.admin("POST", path))
    h.wait_until(lambda: A.sim.calls("apps_token") >= before + 1, 10, what="replica 1's Stripe call")
    h.wait_until(lambda: rc.command("EXISTS", lock) == 1, 5, what="replica 1's lease")
    assert rc.command("DEL", lock) == 1
    t2, out2 = in_background(lambda: A2.admin("POST", path))
    h.wait_until(lambda: A.sim.calls("apps_token") >= before + 2, 10, what="replica 2's Stripe call")
    r1, r2 = joined(t1, out1, "replica 1"), joined(t2, out2, "replica 2")
    rc.close()
    h.assert_status(r1, 200)
    h.assert_status(r2, 200)
    tok = r1.json()["access_token"]
    assert r2.json()["access_token"] == tok and A.sim.token_active(tok)
    # the stored refresh token is the live one: the connection goes on
    again = A.broker.admin("POST", path)
    h.assert_status(again, 200)
    assert A.sim.token_active(again.json()["access_token"])


def test_a_holder_whose_redis_restarted_empty_writes_nothing_into_it():
    """kill -9 of a Redis without persistence during a mint: the holder's lease is gone
    with everything else, so its late write must not plant conn:/acct: keys in the
    empty Redis (a connection nobody authorized there)."""
    org = live_org()
    before = S.sim.calls("token")
    S.sim.fault(endpoint="token", kind="delay", delay_ms=2500, count=1)
    t, out = in_background(lambda: S.broker.access_token(org, "test"))
    wait_stripe_calls(before + 1, "the mint's Stripe call")
    S.redis.stop(keep_data=False)
    S.redis.start()
    S.broker.wait_ready()
    r = joined(t, out, "the mint")
    rc = S.rc()
    assert conn_keys(rc) == [], f"the fenced holder wrote into the empty Redis: {conn_keys(rc)}"
    rc.close()
    assert r.status in (404, 502, 503), f"a mint whose Redis was emptied served a token: {r.describe()}"
    h.assert_error(S.broker.access_token(org, "test"), 404, "not_connected")


# ===== versions: delete, re-authorize, mint from a live record that moved =====

def test_a_mint_racing_a_live_reauthorization_stores_the_new_account():
    """Live on acct_OLD, the mint's Stripe call 1.5 s slow, live re-authorized with
    acct_NEW meanwhile: the mint (from OLD) must not be stored; test follows NEW."""
    old, new = "acct_" + h.rand_str(16), "acct_" + h.rand_str(16)
    org = live_org(old)
    before = S.sim.calls("token")
    S.sim.fault(endpoint="token", kind="delay", delay_ms=1500, count=1)
    t, out = in_background(lambda: S.broker.access_token(org, "test"))
    wait_stripe_calls(before + 1, "the mint's Stripe call")
    h.Flow(S.broker, S.sim, org, "live").run(account=new)
    r = joined(t, out, "the mint")
    h.assert_status(r, 200)
    assert r.json()["stripe_user_id"] == new, f"the mint served the old account: {r.json()['stripe_user_id']}"
    c = stored(org, "test")
    assert c is not None and c["stripe_user_id"] == new and c.get("derived_from") == "live", c
    again = S.broker.access_token(org, "test")
    assert again.json()["stripe_user_id"] == new
    assert S.sim.token_active(again.json()["access_token"])


def test_delete_and_reauthorize_inside_one_rotation_keep_the_new_connection():
    """The rotation read version 1; the connection is deleted and authorized again (a
    version that must not be 1 again) before Stripe answers (invalid_grant: the old
    authorization was revoked). Its write must not touch the new connection."""
    org = live_org()
    before = S.sim.calls("token")
    S.sim.fault(endpoint="token", kind="delay", delay_ms=1500, count=1)
    t, out = in_background(lambda: S.broker.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=live"))
    wait_stripe_calls(before + 1, "the rotation's Stripe call")
    h.assert_status(S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/live"), 204)
    new = "acct_" + h.rand_str(16)
    h.Flow(S.broker, S.sim, org, "live").run(account=new)
    r = joined(t, out, "the rotation")
    assert r.status != 409, f"the rotation reported the new connection as revoked: {r.describe()}"
    c = stored(org, "live")
    assert c is not None and c["status"] == "connected" and c["stripe_user_id"] == new, c
    tok = S.broker.access_token(org, "live")
    h.assert_status(tok, 200)
    assert S.sim.token_active(tok.json()["access_token"])


def test_delete_while_a_delayed_rotation_runs_stays_deleted():
    org = live_org()
    before = S.sim.calls("token")
    S.sim.fault(endpoint="token", kind="delay", delay_ms=1500, count=1)
    t, out = in_background(lambda: S.broker.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=live"))
    wait_stripe_calls(before + 1, "the rotation's Stripe call")
    h.assert_status(S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/live"), 204)
    r = joined(t, out, "the rotation")
    assert r.status != 200, f"the rotation served a token of a deleted connection: {r.describe()}"
    assert S.broker.connections(org) == [], "the rotation's write brought the deleted connection back"
    h.assert_error(S.broker.access_token(org, "live"), 404, "not_connected")


def test_delete_of_a_derived_connection_while_its_rotation_runs_stays_deleted():
    """Same with a successful Stripe call: the derived test connection is deleted
    locally while its rotation (with the live refresh token, still valid) runs."""
    org = live_org()
    h.assert_status(S.broker.access_token(org, "test"), 200)
    before = S.sim.calls("token")
    S.sim.fault(endpoint="token", kind="delay", delay_ms=1500, count=1)
    t, out = in_background(lambda: S.broker.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=test"))
    wait_stripe_calls(before + 1, "the rotation's Stripe call")
    h.assert_status(S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/test"), 204)
    joined(t, out, "the rotation")
    assert stored(org, "test") is None, "the rotation's write brought the deleted connection back"
    assert stored(org, "live") is not None


def test_a_test_authorization_during_a_delayed_mint_is_not_overwritten():
    org = live_org()
    own = "acct_" + h.rand_str(16)
    before = S.sim.calls("token")
    S.sim.fault(endpoint="token", kind="delay", delay_ms=1500, count=1)
    t, out = in_background(lambda: S.broker.access_token(org, "test"))
    wait_stripe_calls(before + 1, "the mint's Stripe call")
    h.Flow(S.broker, S.sim, org, "test").run(account=own)
    r = joined(t, out, "the mint")
    c = stored(org, "test")
    assert c is not None and c["stripe_user_id"] == own and "derived_from" not in c, \
        f"the mint overwrote the test connection the admin just authorized: {c}"
    if r.status == 200:
        assert r.json()["stripe_user_id"] == own
    tok = S.broker.access_token(org, "test")
    assert tok.json()["stripe_user_id"] == own and S.sim.token_active(tok.json()["access_token"])


# ===== WAIT with a replica =====

def _replica_of(primary_port):
    port = h.free_port()
    d = tempfile.mkdtemp(prefix="stb-it-replica-")
    log = os.path.join(h.log_dir(), "lease.replica.log")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", d, "--daemonize", "no", "--protected-mode", "no",
                             "--logfile", log, "--replicaof", "127.0.0.1", str(primary_port)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, port, d


def _info(rc, section):
    raw = rc.command("INFO", section)
    raw = raw.decode() if isinstance(raw, bytes) else raw
    return dict(line.split(":", 1) for line in raw.splitlines() if ":" in line)


def test_apps_rotation_with_a_replica_attached_waits_for_it():
    apps = h.Stack("lease-wait", broker=False, BROKER_OAUTH_FLAVOR="apps")
    rc = apps.rc()
    rc.command("CONFIG", "SET", "repl-diskless-sync-delay", "0")   # sync now, not in 5 s
    proc, port, d = _replica_of(apps.redis.port)
    try:
        h.wait_until(lambda: "state=online" in _info(rc, "replication").get("slave0", ""), 10,
                     what="the replica to attach and sync")
        b = apps.new_broker("apps", BROKER_OAUTH_FLAVOR="apps")
        apps.broker = b
        org = h.new_org()
        h.Flow(b, apps.sim, org, "live").run()
        rc.command("CONFIG", "RESETSTAT")
        r = b.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=live")
        h.assert_status(r, 200)
        stats = _info(rc, "commandstats")
        assert "cmdstat_wait" in stats, "no WAIT was issued although a replica is attached"
        calls = int(stats["cmdstat_wait"].split(",")[0].split("=")[1])
        assert calls >= 2, f"{calls} WAIT: one after taking the lease, one after the rotated write expected"
        # the answer came after the replica had the rotated refresh token, or after WAIT
        # gave up (bounded at 200 ms, which a loaded machine can exceed) and said so
        rep = h.RedisClient(port)
        key = f"stb:conn:{org}:live"
        if rep.command("GET", key) != rc.command("GET", key):
            assert any("no replica confirmed it in time" in l for l in b.log_lines()), \
                "the replica lacks the rotated record and the broker did not say WAIT gave up"
        rep.close()
        rc.close()
        assert apps.sim.token_active(r.json()["access_token"])
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)
        apps.close()
