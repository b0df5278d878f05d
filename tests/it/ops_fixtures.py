"""ops_fixtures.py — the set-up that test_audit.py, test_fleet.py and test_events.py share:
one Stack per module with the platform's test-mode webhook secret (so that Stripe's
deauthorization webhook can be sent), the browser flow, that webhook, and the two paged
lists (audit-events, admin/orgs) read page by page.

    F = ops_fixtures.OpsStack("audit")           # at import: nothing starts yet
    def setup_module(): F.start()                 # F.S is the harness Stack
    def teardown_module(): F.close()
    def setup_function(): F.S.reset()
"""

import harness as h


class OpsStack:
    def __init__(self, name, **env):
        self.name = name
        self.env = env
        self.wh_test = "whsec_" + h.rand_str(32)
        self.S = None

    # ----- life -----

    def start(self):
        h.remember("webhook_secret", self.wh_test)
        self.S = h.Stack(self.name, STRIPE_WEBHOOK_SECRET_TEST=self.wh_test, **self.env)
        return self.S

    def close(self):
        if self.S:
            self.S.close()

    def replica(self, label, **extra):
        """Another broker on the same Redis and simulator, configured like the first."""
        return self.S.new_broker(label, STRIPE_WEBHOOK_SECRET_TEST=self.wh_test, **{**self.env, **extra})

    # ----- changes -----

    def connect(self, org, mode="test", account=None, broker=None):
        """An admin authorizes org in mode through the setup assistant; the Flow."""
        return h.Flow(broker or self.S.broker, self.S.sim, org, mode).run(account=account)

    def deauthorize(self, account):
        """Stripe's account.application.deauthorized for account (test mode), revoking
        its tokens at the simulator too; the broker must answer 200."""
        out = self.S.sim._call("POST", "/_sim/webhook", {"url": self.S.broker.url("/webhooks/stripe"),
                                                         "secret": self.wh_test,
                                                         "type": "account.application.deauthorized",
                                                         "account": account, "revoke": True})
        assert out["status"] == 200, out
        return out

    # ----- the two lists -----

    def get(self, path, token=None, broker=None, **q):
        """GET path?q (admin token unless token), as sent: values are not encoded."""
        b = broker or self.S.broker
        qs = "&".join(f"{k}={v}" for k, v in q.items())
        return b.request("GET", path + ("?" + qs if qs else ""), token=token or b.admin_token)

    def pages(self, path, key, **q):
        """Every item of a paged list, following next until it is null."""
        out, cursor = [], None
        for _ in range(1000):
            qq = dict(q)
            if cursor:
                qq["cursor"] = cursor
            r = self.get(path, **qq)
            h.assert_status(r, 200)
            h.assert_json_headers(r)
            j = r.json()
            out += j[key]
            cursor = j["next"]
            if cursor is None:
                return out
        raise AssertionError("paging never ended")
