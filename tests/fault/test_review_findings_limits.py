"""Rate-limit defects found by an outside review (CONTRACT §4 429 rate_limited; the
limits of broker/http/ratelimit.c):

  * a made-up flow cookie buys its own page allowance unless the page it reaches fails
    with a 4xx; the declined callback (?error=access_denied) answers 200 whatever the
    cookie and the state, so one address gets unlimited page requests (each one a Redis
    DEL when it carries a state) past the per-address limit;
  * failed authentications are limited per address, but an IPv6 client holds a whole
    /64 (SLAAC, privacy addresses): counting each of its addresses on its own gives it
    2^64 allowances.

Every broker here has one worker thread, so the counts are exact.
"""

import faultlib as F

h = F.h
S = None


def setup_module():
    global S
    S = F.LimitedBrokers("freview", BROKER_LOG_LEVEL="info")


def teardown_module():
    S.close()


def test_made_up_cookies_on_the_declined_callback_count_as_failed_authentications():
    b = S.start("declined", BROKER_RATE_LIMIT_IP_PER_MIN="5")
    try:
        sts = []
        for _ in range(8):
            path = f"/oauth/callback?error=access_denied&state={h.rand_str(43)}"
            sts.append(F.one(b, path, headers={"Cookie": f"stb_oauth={h.rand_str(43)}"})[0])
        assert all(s < 500 for s in sts[:5]) and set(sts[5:]) == {429}, \
            f"made-up state cookies on the declined callback are never limited: {sts}"
    finally:
        S.stop(b)


def test_failed_authentications_of_one_ipv6_64_share_one_allowance():
    b = S.start("v6", BROKER_RATE_LIMIT_IP_PER_MIN="5", BROKER_TRUSTED_PROXIES="127.0.0.1/32")
    try:
        org = h.new_org()
        path = f"/v1/orgs/{org}/access-token?mode=test"
        # no bearer: a failed authentication of the client address
        sts = [F.one(b, path, headers={"X-Forwarded-For": f"2001:db8:1:2::{i + 1:x}"})[0] for i in range(5)]
        assert sts == [401] * 5, sts
        # the sixth address of the same /64 is the same client
        F.assert_429(F.one(b, path, headers={"X-Forwarded-For": "2001:db8:1:2:ffff:1:2:3"}))
        # another /64 is another client
        st = F.one(b, path, headers={"X-Forwarded-For": "2001:db8:1:3::1"})[0]
        assert st == 401, f"a client of another /64 got {st}"
    finally:
        S.stop(b)
