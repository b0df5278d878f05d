"""The fused read (broker/http/router.h): a route that serves from an org's connection
(getAccessToken, its rotation, the Stripe proxy) reads the caller's key record and the connection in
one Redis round trip, a single MGET, when the caller has an org key; an admin's call
reads the connection alone. Counted with Redis's INFO commandstats on a quiet broker (its
read cache never answers for it, so every call reads Redis), so that a second round trip
cannot come back unnoticed."""

import harness as h

S = None
N = 12


def setup_module():
    global S
    S = h.Stack("fused")


def teardown_module():
    S.close()


def setup_function():
    S.reset()


def org_with_key(mode="test"):
    org = h.new_org()
    h.Flow(S.broker, S.sim, org, mode).run()
    return org, S.broker.create_api_key(org)["api_key"]


def reads():
    """(GET calls, MGET calls) Redis has run so far."""
    c = S.rc()
    try:
        info = c.command("INFO", "commandstats").decode()
    finally:
        c.close()
    calls = {"get": 0, "mget": 0}
    for line in info.splitlines():
        for cmd in calls:
            if line.startswith(f"cmdstat_{cmd}:"):
                calls[cmd] = int(line.split("calls=")[1].split(",")[0])
    return calls["get"], calls["mget"]


def proxy_get(org, key, path):
    return h.http_request("GET", S.broker.url(f"/v1/orgs/{org}/stripe/test{path}"),
                          headers={"Authorization": f"Bearer {key}"})


def test_proxy_call_with_org_key_reads_redis_once():
    org, key = org_with_key()
    created = h.http_request("POST", S.broker.url(f"/v1/orgs/{org}/stripe/test/v1/customers"),
                             headers={"Authorization": f"Bearer {key}",
                                      "Content-Type": "application/x-www-form-urlencoded"},
                             body="email=fused%40example.com")
    h.assert_status(created, 200)
    path = "/v1/customers/" + created.json()["id"]
    h.assert_status(proxy_get(org, key, path), 200)
    get0, mget0 = reads()
    for _ in range(N):
        h.assert_status(proxy_get(org, key, path), 200)
    get1, mget1 = reads()
    assert (get1 - get0, mget1 - mget0) == (0, N), \
        f"{N} proxied calls: {get1 - get0} GET and {mget1 - mget0} MGET (one MGET each expected)"


def test_rotation_with_org_key_reads_key_and_connection_in_one_mget():
    """The token service reads under its lease whoever calls; the route's own reads are
    one GET of the connection for an admin and one MGET (no GET) for an org key."""
    org, key = org_with_key()

    def rotations(token):
        g0, m0 = reads()
        for _ in range(3):
            h.assert_status(S.broker.request("POST", f"/v1/orgs/{org}/access-token/rotate?mode=test",
                                             token=token), 200)
        g1, m1 = reads()
        return g1 - g0, m1 - m0
    admin_get, admin_mget = rotations(S.broker.admin_token)
    org_get, org_mget = rotations(key)
    assert admin_mget == 0 and org_mget == 3, (admin_mget, org_mget)
    assert org_get == admin_get - 3, \
        f"3 rotations with the org key made {org_get} GETs, with the admin token {admin_get}: the org " \
        "key's should read the connection in the MGET, not in a GET of its own"


def test_access_token_with_org_key_reads_redis_once():
    org, key = org_with_key()
    h.assert_status(S.broker.access_token(org, "test", token=key), 200)
    get0, mget0 = reads()
    for _ in range(N):
        h.assert_status(S.broker.access_token(org, "test", token=key), 200)
    get1, mget1 = reads()
    assert (get1 - get0, mget1 - mget0) == (0, N), \
        f"{N} getAccessToken calls: {get1 - get0} GET and {mget1 - mget0} MGET (one MGET each expected)"


def test_admin_reads_the_connection_alone():
    org, _ = org_with_key()
    h.assert_status(S.broker.access_token(org, "test"), 200)
    get0, mget0 = reads()
    for _ in range(N):
        h.assert_status(S.broker.access_token(org, "test"), 200)
    get1, mget1 = reads()
    assert (get1 - get0, mget1 - mget0) == (N, 0), \
        f"{N} admin getAccessToken calls: {get1 - get0} GET and {mget1 - mget0} MGET (one GET each expected)"


def test_bad_mode_with_org_key_reads_the_key_alone_and_is_400():
    """The key is judged before the mode: a mode that is not valid reads the key record
    alone (no connection to read), then answers the mode's error."""
    org, key = org_with_key()
    get0, mget0 = reads()
    r = h.http_request("GET", S.broker.url(f"/v1/orgs/{org}/stripe/nope/v1/customers/cus_x"),
                       headers={"Authorization": f"Bearer {key}"})
    h.assert_status(r, 400)
    get1, mget1 = reads()
    assert (get1 - get0, mget1 - mget0) == (1, 0), f"bad mode: {get1 - get0} GET, {mget1 - mget0} MGET"
