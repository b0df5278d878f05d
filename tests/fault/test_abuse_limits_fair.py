"""Rate limits nobody else can spend (CONTRACT §4: "a per-org limit counts only requests
whose key checked out, so that nobody without the key can exhaust an org's allowance").

  * the per-org allowance is charged only after the key checked out: a flood with a
    made-up key (or the org's real key id with a wrong secret) never makes the org's
    own key get 429;
  * failed authentications have their own limit, per client address and per key id
    (BROKER_RATE_LIMIT_IP_PER_MIN a minute): over it a failure is 429 instead of 401,
    and a key that checks out from the same address is still served;
  * the client address is the TCP peer, or, when the peer is one of
    BROKER_TRUSTED_PROXIES, the right-most X-Forwarded-For address that is not itself a
    trusted proxy; an untrusted peer's X-Forwarded-For is ignored;
  * a browser in the middle of the setup flow (setup session / OAuth state cookie) is
    not refused because anonymous requests from its address flooded the pages.

Every broker here has one worker thread, so the counts are exact.
"""

import time

import faultlib as F

h = F.h
S = None
FAKE_KEY = "stb_" + "0" * 16 + "_" + "A" * 43


def setup_module():
    global S
    S = F.LimitedBrokers("ffair", BROKER_LOG_LEVEL="info")


def teardown_module():
    S.close()


def test_a_made_up_key_never_spends_the_orgs_allowance():
    """The audit: 2,800 pipelined getAccessToken with a made-up key made the org's real
    key get 429. Here: 5 per second for the org, 40 bad requests before each good one."""
    b = S.start("org", BROKER_RATE_LIMIT_ORG_PER_S="5")
    try:
        org = h.new_org()
        key = b.create_api_key(org)["api_key"]
        wrong_secret = key[:21] + ("B" if key[21] != "B" else "C") + key[22:]   # the real key id
        c = F.Client(b)
        try:
            for bad in (FAKE_KEY, wrong_secret, FAKE_KEY):
                t0 = time.monotonic()
                sts = [c.get(f"/v1/orgs/{org}/access-token?mode=live", bad)[0] for _ in range(40)]
                st, _, body = c.get(f"/v1/orgs/{org}/connections", key)
                assert time.monotonic() - t0 < 1.0, "too slow to share a 1-second window"
                assert st == 200, (f"the org's own key got {st} after a flood with a key that did not check "
                                   f"out: {body[:200]!r}")
                assert set(sts) == {401}, f"a made-up key was answered {sorted(set(sts))}"
            # the org's allowance still counts the requests whose key checked out
            t0 = time.monotonic()
            res = [c.get(f"/v1/orgs/{org}/connections", key) for _ in range(11)]
            if time.monotonic() - t0 < 1.0:
                limited = [r for r in res if r[0] == 429]
                assert limited, f"11 good requests in under a second were never limited: {[r[0] for r in res]}"
                F.assert_429(limited[0])
        finally:
            c.close()
    finally:
        S.stop(b)


def test_failed_authentications_have_their_own_limit_per_address_and_key_id():
    b = S.start("fail", BROKER_RATE_LIMIT_IP_PER_MIN="10")
    try:
        org = h.new_org()
        key = b.create_api_key(org)["api_key"]
        path = f"/v1/orgs/{org}/access-token?mode=test"
        c = F.Client(b, "127.0.0.1")
        try:
            sts = [c.get(path, FAKE_KEY)[0] for _ in range(10)]
            assert set(sts) == {401}, sts
            F.assert_429(c.get(path, FAKE_KEY))
            # a missing bearer from that address is a failure too
            F.assert_429(c.get(path))
            # the org's key from the same address is served (404: no connection yet)
            st, _, body = c.get(path, key)
            assert st == 404 and b"not_connected" in body, (st, body[:200])
            assert c.get(f"/v1/orgs/{org}/connections", key)[0] == 200
        finally:
            c.close()
        # the key id that failed is limited from any address; another key id is not
        F.assert_429(F.one(b, path, FAKE_KEY, source="127.0.0.2"))
        other = "stb_" + "1" * 16 + "_" + "A" * 43
        assert F.one(b, path, other, source="127.0.0.2")[0] == 401
        # the org's allowance was never touched by any of it
        assert F.one(b, f"/v1/orgs/{org}/connections", key, source="127.0.0.3")[0] == 200
    finally:
        S.stop(b)


def test_the_client_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy():
    b = S.start("proxy", BROKER_RATE_LIMIT_IP_PER_MIN="5",
                       BROKER_TRUSTED_PROXIES="127.0.0.1/32, ::1")
    try:
        xff = lambda v: {"X-Forwarded-For": v}   # noqa: E731
        sts = [F.one(b, "/setup", headers=xff("203.0.113.7"))[0] for _ in range(5)]
        assert sts == [401] * 5, sts
        F.assert_429(F.one(b, "/setup", headers=xff("203.0.113.7")), page=True)
        # another client behind the same proxy has its own allowance
        st = F.one(b, "/setup", headers=xff("203.0.113.8"))[0]
        assert st == 401, f"another client behind the trusted proxy got {st}"
        # what a client writes on the left is not believed: the proxy appended .7
        F.assert_429(F.one(b, "/setup", headers=xff("203.0.113.8, 203.0.113.7")), page=True)
        # an untrusted peer's header is ignored: it is limited as itself
        sts = [F.one(b, "/setup", source="127.0.0.2", headers=xff(f"198.51.100.{i}"))[0] for i in range(6)]
        assert sts == [401] * 5 + [429], sts
    finally:
        S.stop(b)


def test_a_browser_in_the_middle_of_a_flow_is_not_locked_out_by_an_anonymous_flood():
    """The audit: anonymous GET /setup from the ingress's address made an admin's
    /oauth/callback get 429."""
    b = S.start("flow", BROKER_RATE_LIMIT_IP_PER_MIN="10")
    try:
        org = h.new_org()
        f = h.Flow(b, S.sim, org, "test")
        f.open()
        f.setup_page()
        flood = [F.one(b, p)[0] for p in ["/setup", "/oauth/callback?state=" + "A" * 43 + "&code=x"] * 10]
        assert 429 in flood, f"20 anonymous page requests were never limited: {flood}"
        f.setup_page()
        f.authorize_ok()
        flood = [F.one(b, "/setup")[0] for _ in range(5)]
        assert set(flood) == {429}, flood
        f.stripe()
        f.finish()   # the callback, then /setup showing Connected
        st, _, body = F.one(b, f"/v1/orgs/{org}/connections", b.admin_token)
        assert st == 200 and f.account.encode() in body, (st, body[:300])
    finally:
        S.stop(b)


def test_made_up_session_cookies_count_as_failed_authentications():
    """A cookie does not buy its own allowance unless it holds: made-up sessions are
    failures of their address, limited like any other."""
    b = S.start("cookie", BROKER_RATE_LIMIT_IP_PER_MIN="5")
    try:
        sts = [F.one(b, "/setup", headers={"Cookie": f"stb_session={h.rand_str(43)}"})[0] for _ in range(8)]
        assert sts[:5] == [401] * 5 and set(sts[5:]) == {429}, sts
    finally:
        S.stop(b)
