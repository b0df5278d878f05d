"""Exactly once across three replicas (CONTRACT §4.2, DESIGN "Refresh and mint").

Three broker processes share one Redis and one Stripe simulator. Every call that
needs Stripe's token endpoint (a test-from-live mint, a rotation, an apps refresh)
must reach Stripe exactly once however many callers arrive at once on however many
replicas, and every caller must get the same, still-valid token. A replica killed
while its Stripe call is in flight delays the org by at most the lease, revokes
nothing extra, and leaves no request hanging. rotate-keys re-seals everything while
traffic runs, and the apps background pass refreshes tokens nobody read.
"""

import base64
import os
import signal
import threading
import time

import harness as h

UPSTREAM_MS = 1500
LEASE_S = (UPSTREAM_MS + 1000) / 1000.0   # the broker's lease: upstream timeout + 1 s
MARGIN_S = 30                              # apps: refresh a token this close to expiry
SHORT_S = 20                               # a token lifetime inside the margin
LONG_S = 3600                              # a token lifetime far outside it

S = None        # connect flavor: three replicas
A = None        # apps flavor: three replicas
REPLICAS = []
APPS_REPLICAS = []


CONNECT_ENV = dict(BROKER_UPSTREAM_TIMEOUT_MS=str(UPSTREAM_MS))
APPS_ENV = dict(BROKER_OAUTH_FLAVOR="apps", BROKER_UPSTREAM_TIMEOUT_MS=str(UPSTREAM_MS),
                BROKER_REFRESH_MARGIN_S=str(MARGIN_S), BROKER_BACKGROUND_REFRESH_S="3600")


def setup_module():
    global S, A
    S = h.Stack("once", **CONNECT_ENV)
    REPLICAS.extend([S.broker, S.new_broker("r2", **CONNECT_ENV), S.new_broker("r3", **CONNECT_ENV)])
    A = h.Stack("once-apps", **APPS_ENV)
    APPS_REPLICAS.extend([A.broker, A.new_broker("a2", **APPS_ENV), A.new_broker("a3", **APPS_ENV)])


def teardown_module():
    for st in (S, A):
        if st is not None:
            st.close()


def setup_function():
    S.reset()
    A.reset()
    for b in REPLICAS:
        assert b.running(), "a replica died"


def spread(replicas, n, fn):
    """n calls at once, spread round-robin over the replicas."""
    return h.together([(lambda b=replicas[i % len(replicas)]: fn(b)) for i in range(n)])


def assert_all_same_token(results, sim):
    bad = [r.describe() for r in results if r.status != 200]
    assert not bad, f"{len(bad)} of {len(results)} callers failed, e.g. {bad[0]}"
    toks = {r.json()["access_token"] for r in results}
    assert len(toks) == 1, f"{len(toks)} different tokens handed out to concurrent callers"
    tok = toks.pop()
    assert sim.token_active(tok), "the token every caller got was already revoked at Stripe"
    return tok


def live_org(stack):
    org = h.new_org()
    h.Flow(stack.broker, stack.sim, org, "live").run()
    return org


def test_200_concurrent_mints_on_three_replicas_make_one_stripe_call():
    org = live_org(S)
    before = S.sim.calls("token")
    S.sim.fault(endpoint="token", kind="delay", delay_ms=300)
    res = spread(REPLICAS, 200, lambda b: b.access_token(org, "test"))
    assert_all_same_token(res, S.sim)
    assert S.sim.calls("token") - before == 1, f"{S.sim.calls('token') - before} Stripe calls for one mint"


def test_60_concurrent_rotations_on_three_replicas_make_one_stripe_call():
    org = live_org(S)
    old = S.broker.access_token(org, "live").json()["access_token"]
    before = S.sim.calls("token")
    S.sim.fault(endpoint="token", kind="delay", delay_ms=300)
    res = spread(REPLICAS, 60, lambda b: b.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=live"))
    tok = assert_all_same_token(res, S.sim)
    assert tok != old, "a rotation must hand out a new token"
    assert not S.sim.token_active(old), "Stripe should have revoked the old token"
    assert S.sim.calls("token") - before == 1, f"{S.sim.calls('token') - before} Stripe calls for one rotation"
    # the stored token is the rotated one, on every replica
    for b in REPLICAS:
        assert b.access_token(org, "live").json()["access_token"] == tok


def apps_org_needing_refresh(broker=None):
    """An apps connection whose token is already inside the refresh margin; the tokens
    Stripe hands out after that live long, so one refresh is all it needs."""
    A.sim.config(apps_token_lifetime=SHORT_S)
    org = h.new_org()
    h.Flow(broker or A.broker, A.sim, org, "test").run()
    A.sim.config(apps_token_lifetime=LONG_S)
    return org


def test_apps_200_concurrent_reads_inside_the_margin_make_one_refresh_and_the_new_refresh_token_works():
    org = apps_org_needing_refresh()
    before = A.sim.calls("apps_token")
    A.sim.fault(endpoint="apps_token", kind="delay", delay_ms=300)
    res = spread(APPS_REPLICAS, 200, lambda b: b.access_token(org, "test"))
    tok = assert_all_same_token(res, A.sim)
    assert "expires_at" in res[0].json(), "apps tokens carry expires_at"
    assert A.sim.calls("apps_token") - before == 1, \
        f"{A.sim.calls('apps_token') - before} Stripe calls for one refresh"
    A.sim._call("DELETE", "/_sim/faults")
    # the refresh token rotated in the same write: using the stored one works again
    r = A.broker.admin("POST", f"/v1/orgs/{org}/access-token/rotate?mode=test")
    h.assert_status(r, 200)
    assert r.json()["access_token"] != tok
    assert A.sim.token_active(r.json()["access_token"])


def test_a_replica_killed_during_its_stripe_call_delays_the_org_at_most_the_lease():
    org = live_org(S)
    victim = S.new_broker("victim", **CONNECT_ENV)
    try:
        before = S.sim.calls("token")
        S.sim.fault(endpoint="token", kind="delay", delay_ms=int(UPSTREAM_MS * 0.8), count=1)
        hung = []
        t = threading.Thread(target=lambda: hung.append(victim.access_token(org, "test", timeout=10)), daemon=True)
        t.start()
        h.wait_until(lambda: S.sim.calls("token") - before >= 1, 5, what="the victim's Stripe call to start")
        victim.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.proc.wait(5)
        # every other replica serves the org within the lease plus a second, and no
        # request on them hangs meanwhile
        deadline = killed_at + LEASE_S + 1.0
        served = None
        while time.monotonic() < deadline + 0.5:
            t0 = time.monotonic()
            r = REPLICAS[int(t0 * 10) % 3].access_token(org, "test", timeout=5)
            assert time.monotonic() - t0 < UPSTREAM_MS / 1000.0 + 1.5, f"a request hung: {r.describe()}"
            if r.status == 200:
                served = time.monotonic()
                tok = r.json()["access_token"]
                break
            assert r.status in (502, 503), f"unexpected answer while the lease is held: {r.describe()}"
            time.sleep(0.05)
        assert served is not None and served <= deadline, \
            f"the org was not served within the lease ({LEASE_S}s) plus a second"
        assert S.sim.token_active(tok), "the token served after the crash is not active"
        # at most one more token call: the dead replica's mint is redone once, and
        # nothing is refreshed twice (no token handed out got revoked)
        assert S.sim.calls("token") - before <= 2
        for b in REPLICAS:
            assert b.access_token(org, "test").json()["access_token"] == tok
    finally:
        if victim.running():
            victim.kill()


def test_rotate_keys_with_a_new_first_key_while_traffic_runs():
    orgs = [live_org(S) for _ in range(3)]
    for org in orgs:
        S.broker.admin("PUT", f"/v1/orgs/{org}/webhook-secrets/live", json_body={"signing_secret": "whsec_" + h.rand_str(24)})
        S.broker.access_token(org, "test")   # a derived test connection too
    old_keys = S.broker.env["BROKER_ENCRYPTION_KEYS"]
    new_key = "k2:" + base64.b64encode(os.urandom(32)).decode()
    rotated = S.new_broker("rotated", BROKER_ENCRYPTION_KEYS=new_key + "," + old_keys, **CONNECT_ENV)
    rotated2 = S.new_broker("rotated2", BROKER_ENCRYPTION_KEYS=new_key + "," + old_keys, **CONNECT_ENV)
    errors, stop = [], threading.Event()

    # the procedure: every replica runs with [new, old] first, then rotate-keys
    def traffic():
        i = 0
        while not stop.is_set():
            for b in (rotated, rotated2):
                r = b.access_token(orgs[i % len(orgs)], ("test", "live")[i % 2], timeout=5)
                if r.status != 200:
                    errors.append(r.describe())
                i += 1

    workers = [threading.Thread(target=traffic, daemon=True) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        env = dict(rotated.env)
        rc = h.run_cli(["rotate-keys"], env, log_name="rotate-keys")
        assert rc.returncode == 0, f"rotate-keys failed: {rc.stderr}"
        assert "failed" in rc.stdout and " 0 failed" in rc.stdout, rc.stdout
        rc2 = h.run_cli(["rotate-keys"], env, log_name="rotate-keys-again")
        assert rc2.returncode == 0 and " 0 re-sealed" in rc2.stdout, f"a rerun should find nothing to do: {rc2.stdout}"
    finally:
        stop.set()
        for w in workers:
            w.join(10)
    assert not errors, f"{len(errors)} requests failed during rotate-keys, e.g. {errors[0]}"
    # every sealed value is now under k2 ...
    rc = S.rc()
    for key in rc.keys():
        k = key.decode() if isinstance(key, bytes) else key
        if ":conn:" in k or ":whsec:" in k:
            v = rc.command("GET", k)
            v = v.decode() if isinstance(v, bytes) else v
            assert ".k2." in v.split(":", 1)[1][:8] or v.split(":", 1)[1].startswith("1.k2."), f"{k} not re-sealed"
    # ... so the old key can be removed
    only_new = S.new_broker("only-new", BROKER_ENCRYPTION_KEYS=new_key, **CONNECT_ENV)
    try:
        for org in orgs:
            for mode in ("test", "live"):
                h.assert_status(only_new.access_token(org, mode), 200)
            r = only_new.admin("GET", f"/v1/orgs/{org}/webhook-secrets/live")
            assert r.status == 200 and r.json()["configured"] is True
    finally:
        only_new.stop()
        rotated.stop()
        rotated2.stop()


def test_apps_background_pass_refreshes_a_token_nobody_reads():
    first = A.sim.calls("apps_token")
    org = apps_org_needing_refresh()          # on a replica whose own pass is hourly
    assert A.sim.calls("apps_token") == first + 1, "only the code exchange so far"
    b = A.new_broker("bg", **dict(APPS_ENV, BROKER_BACKGROUND_REFRESH_S="1"))
    try:
        # nobody reads the token: the background pass refreshes it, once
        h.wait_until(lambda: A.sim.calls("apps_token") > first + 1, 10, interval=0.1,
                     what="the background pass to refresh the unread token")
        r = b.access_token(org, "test")
        h.assert_status(r, 200)
        assert A.sim.token_active(r.json()["access_token"])
        exp = h.parse_rfc3339(r.json()["expires_at"]).timestamp()
        assert exp - time.time() > MARGIN_S, "the served token should be the refreshed, long-lived one"
        assert A.sim.calls("apps_token") == first + 2, "one background refresh, and none on read"
    finally:
        b.stop()
