#!/usr/bin/env python3
"""stripe_sim.py: a local, faithful simulator of the parts of Stripe the broker talks to.

What it simulates (see /work/shared/STRIPE.md for the real behaviour):
  GET  /oauth/authorize           Connect authorize (consent page, or auto approve / deny)
  GET  /oauth/v2/authorize        Stripe Apps (marketplace) install link
  POST /oauth/authorize/decision  the consent page's Approve / Decline forms
  POST /oauth/token               Connect token endpoint (form; client_secret, Bearer or Basic sk_)
  POST /v1/oauth/token            Apps token endpoint (HTTP Basic sk_…: only; expiring access
                                  tokens, rotating refresh tokens)
  POST /oauth/deauthorize         disconnect an account (Bearer sk_…, form client_id, stripe_user_id)
Faithful rules: codes are single use and live 5 minutes; presenting a used code again revokes the
whole connection; every token grant revokes the previous access token of that account and mode;
a live refresh token may mint a test token, never the reverse; Connect refresh tokens do not
rotate, Apps refresh tokens do. Errors are flat {"error", "error_description"}.

Stripe's payment API (what the broker's Stripe proxy forwards to; form-encoded bodies with
Stripe's brackets, metadata[k]=v, expand[]=f; JSON answers; amounts are integers):
  POST /v1/payment_intents                 amount, currency, capture_method (automatic|manual),
                                           payment_method (pm_card_visa, pm_card_mastercard,
                                           pm_card_amex, pm_card_chargeDeclined[InsufficientFunds]),
                                           confirm, customer, metadata, description, …
  GET  /v1/payment_intents/pi_…            POST …/confirm (payment_method), …/capture
                                           (amount_to_capture), …/cancel (cancellation_reason)
  POST /v1/refunds                         payment_intent or charge, amount (partial), reason
  GET  /v1/refunds/re_…, /v1/charges/ch_…, POST /v1/customers, GET|DELETE /v1/customers/cus_…
  GET  /v1/payment_intents|charges|refunds|customers   lists: limit, starting_after, filters
                                           (customer, payment_intent, charge, email), expand[]=data.f
Rules: the bearer (or Basic user) is an access token this simulator issued, active and, for Apps,
unexpired (else 401 "Invalid API Key provided: sk_test_****abcd" / "Expired API Key provided…",
code api_key_expired), or a platform secret key (acting on its own account, or with
Stripe-Account on a connected one; any other Stripe-Account is 403 account_invalid). Objects belong
to the token's account and mode (another's: 404 resource_missing). Status: requires_payment_method
→ (payment_method) requires_confirmation → confirm → requires_capture (manual) or succeeded, with
a charge (latest_charge); capture → succeeded, amount_received; cancel → canceled (a held charge is
released); a wrong state is 400 payment_intent_unexpected_state; declines are 402 card_error (test
cards are declined in live mode). Refunds: at most what was captured and not yet refunded.
Unknown parameters 400 parameter_unknown, unknown paths 404 "Unrecognized request URL". Errors are
{"error": {"type", "code"?, "message", "param"?}}. Every answer has Request-Id: req_…, Stripe-Version
(the one sent, else 2024-06-20) and the Idempotency-Key sent; faulted 5xx add Stripe-Should-Retry.
Idempotency-Key (POST; per account and mode; 24 h of simulated time): the same key, endpoint and
parameters replay the first answer (Idempotent-Replayed: true, Original-Request: its req_…),
other parameters or another endpoint are 400 idempotency_error; only calls that executed
(2xx, 402) are kept. Not simulated: updates, other resources, ending_before, Stripe-Account for
tokens of other platforms, concurrent use of one key (Stripe's 409).

How to run:
  python3 tests/fakes/stripe_sim.py --port 0 --test-client-id ca_test_sim \
      --test-secret-key sk_test_platform_sim --live-client-id ca_live_sim \
      --live-secret-key sk_live_platform_sim [--authorize consent|approve|deny] \
      [--apps-token-lifetime 3600] [--ready-file PATH] [--host 127.0.0.1] [--verbose]
It writes the port to --ready-file (atomically), then prints
"stripe-sim listening on http://HOST:PORT" to stdout.

How to control it (JSON, same port, for tests):
  GET    /_sim/stats        calls per endpoint (payment API: "api" and per resource), every grant
                            with its outcome, codes presented, number of revoked access tokens
  POST   /_sim/reset        forget all OAuth and payment state, records, counters, faults and
                            config changes
  POST   /_sim/faults       {"endpoint": token|apps_token|deauthorize|authorize|any,
                             "kind": status|delay|hang|close|malformed, "status": 500,
                             "body": "raw", "delay_ms": 200, "count": N}  (appended; checked in
                            order; a delay is applied and checking goes on; the first other kind
                            answers the call; "any" = token, apps_token and deauthorize)
                            Payment API: {"endpoint": api|payment_intents|refunds|charges|customers,
                             "match"?: substring of "POST /v1/payment_intents/pi_…/capture",
                             "kind": status|delay|hang|close|malformed|huge|truncated,
                             "when": before_body|after_body (default)|after_processing (delay,
                             hang and close; the others answer instead of the call, after_body),
                             "status", "body" (default: Stripe's error for that status),
                             "headers"?: {…}, "retry_after": 1 (429), "size": bytes of a huge
                             200 (default 1 MiB + 1 KiB), "chunked"?: bool, "delay_ms", "count"}.
                            close/hang before_body: nothing read, nothing done; after_body: the
                            body is read, nothing done; after_processing: done (and kept for its
                            Idempotency-Key), then the connection closes without an answer.
                            truncated: a 200 whose body stops halfway. "any" is not the payment API.
  GET    /_sim/requests?since=SEQ   every payment API call after SEQ, oldest first: {"requests":
                            [{"seq", "t", "method", "path", "query", "headers": [[name, value], …]
                             as received, "body", "params", "account", "mode", "status" (null:
                             no answer), "request_id", "replayed", "fault"}]}; a call is listed
                            from its arrival on, so a test can await a held one
  DELETE /_sim/faults       clear faults (and release hung calls)
  POST   /_sim/config       {"authorize": consent|approve|deny, "next_account": "acct_…",
                             "apps_token_lifetime": 30, "code_lifetime": 300,
                             "clock_offset": seconds added to the simulator's clock,
                             "apps_send_expires_in": false (apps tokens still expire)}
  POST   /_sim/token-info   {"access_token": "…"} or {"refresh_token": "…"} → {"active": bool, …}
  POST   /_sim/issue-code   {"client_id": "ca_…", "account"?, "flavor"?: connect|apps,
                             "scope"?} → {"code": "ac_…", "account": "acct_…"}
  POST   /_sim/revoke       {"account": "acct_…"} → revoke a connection as if the user did
  POST   /_sim/webhook      {"url", "secret", "type", "account", "id"?, "livemode"?, "timestamp"?,
                             "extra_signatures"?: [secrets], "data_object"?: {…}, "revoke"?: bool}
                            → signs and POSTs a Stripe event; {"status", "body", "event_id"}
"""
import argparse
import base64
import hashlib
import hmac
import html
import json
import os
import re
import secrets
import select
import signal
import socket
import string
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ALNUM = string.ascii_letters + string.digits
MAX_BODY = 1 << 20
HANG_MAX_S = 120.0


def rand(n):
    return "".join(secrets.choice(ALNUM) for _ in range(n))


class OAuthError(Exception):
    """A flat Stripe OAuth error: {"error": code, "error_description": desc}."""

    def __init__(self, status, code, desc):
        super().__init__(desc)
        self.status, self.code, self.desc = status, code, desc


def redact(key):
    return key[:8] + "****" + key[-4:] if len(key) > 12 else "****"


class Sim:
    """All simulator state, behind one lock."""

    def __init__(self, args):
        self.lock = threading.Lock()
        self.clients = {args.test_client_id: "test", args.live_client_id: "live"}
        self.client_of_mode = {"test": args.test_client_id, "live": args.live_client_id}
        self.keys = {args.test_secret_key: "test", args.live_secret_key: "live"}
        self.app_name = args.app_name
        self.defaults = {"authorize": args.authorize, "apps_token_lifetime": args.apps_token_lifetime,
                         "code_lifetime": 300, "clock_offset": 0.0, "apps_send_expires_in": True}
        self.release = threading.Event()  # set to release hung calls
        self.reset()

    def reset(self):
        with self.lock:
            self.config = dict(self.defaults)
            self.next_account = None
            self.accounts = {}    # acct -> {"connected": bool, "pk": {mode: pk}}
            self.codes = {}       # ac_ -> {mode, account, flavor, scope, created, used}
            self.access = {}      # sk_ -> {mode, account, flavor, scope, active, expires_at}
            self.refresh = {}     # rt_ -> {mode, account, flavor, scope, active}
            self.current = {}     # (account, mode) -> current access token
            self.faults = []
            self.calls = {"authorize": 0, "authorize_decision": 0, "token": 0, "apps_token": 0,
                          "deauthorize": 0, "webhook": 0}
            self.grants = []
            self.codes_used = {}
            self.revoked_count = 0
            self.pay = Payments(self)
            old, self.release = self.release, threading.Event()
        old.set()

    def now(self):
        return time.time() + self.config["clock_offset"]

    # -- faults ------------------------------------------------------------------------------
    def take_faults(self, endpoint):
        """Counts the call and returns the faults that apply to it, in order."""
        out = []
        with self.lock:
            self.calls[endpoint] = self.calls.get(endpoint, 0) + 1
            for f in self.faults:
                ep = f["endpoint"]
                match = ep == endpoint or (ep == "any" and endpoint in ("token", "apps_token", "deauthorize"))
                if not match or (f["count"] is not None and f["count"] <= 0):
                    continue
                if f["count"] is not None:
                    f["count"] -= 1
                out.append(dict(f))
                if f["kind"] != "delay":
                    break
        return out

    def take_api_faults(self, method, path):
        """take_faults for the payment API: endpoint "api" or the call's resource, and "match" (a
        substring of "METHOD /path"); counts the call under "api" and its resource."""
        res = (path.split("/") + ["", "", ""])[2]
        res = res if res in API_RESOURCES else None
        out = []
        with self.lock:
            for ep in ("api", res):
                if ep:
                    self.calls[ep] = self.calls.get(ep, 0) + 1
            for f in self.faults:
                if f["endpoint"] not in ("api", res) or f.get("match", "") not in method + " " + path \
                        or (f["count"] is not None and f["count"] <= 0):
                    continue
                if f["count"] is not None:
                    f["count"] -= 1
                out.append(dict(f))
                if f["kind"] != "delay":
                    break
        return out

    # -- accounts and codes (call with the lock held) ----------------------------------------
    def _account(self, acct=None):
        if acct is None:
            acct, self.next_account = self.next_account or "acct_" + rand(16), None
        a = self.accounts.setdefault(acct, {"connected": False, "pk": {}})
        return acct, a

    def propose_account(self):
        with self.lock:
            acct, self.next_account = self.next_account or "acct_" + rand(16), None
            return acct

    def issue_code(self, mode, flavor, scope, acct=None):
        with self.lock:
            acct, a = self._account(acct)
            a["connected"] = True
            code = "ac_" + rand(24)
            self.codes[code] = {"mode": mode, "account": acct, "flavor": flavor, "scope": scope,
                                "created": self.now(), "used": False}
            return code, acct

    def _revoke_access(self, tok):
        t = self.access.get(tok)
        if t and t["active"]:
            t["active"] = False
            self.revoked_count += 1

    def _revoke_account(self, acct):
        for tok, t in self.access.items():
            if t["account"] == acct:
                self._revoke_access(tok)
        for t in self.refresh.values():
            if t["account"] == acct:
                t["active"] = False
        for c in self.codes.values():
            if c["account"] == acct:
                c["used"] = True
        self.current = {k: v for k, v in self.current.items() if k[0] != acct}
        if acct in self.accounts:
            self.accounts[acct]["connected"] = False

    def revoke_account(self, acct):
        with self.lock:
            known = acct in self.accounts and self.accounts[acct]["connected"]
            self._revoke_account(acct)
            return known

    def _mint(self, acct, mode, flavor, scope, refresh_token):
        """Issues an access token for acct in mode; revokes the previous one of that mode."""
        prev = self.current.get((acct, mode))
        if prev:
            self._revoke_access(prev)
        tok = "sk_%s_%s" % (mode, rand(32))
        lifetime = self.config["apps_token_lifetime"] if flavor == "apps" else None
        self.access[tok] = {"mode": mode, "account": acct, "flavor": flavor, "scope": scope,
                            "active": True,
                            "expires_at": self.now() + lifetime if lifetime is not None else None}
        self.current[(acct, mode)] = tok
        a = self.accounts.setdefault(acct, {"connected": True, "pk": {}})
        pk = a["pk"].setdefault(mode, "pk_%s_%s" % (mode, rand(24)))
        body = {"access_token": tok, "refresh_token": refresh_token, "token_type": "bearer",
                "stripe_publishable_key": pk, "stripe_user_id": acct, "livemode": mode == "live",
                "scope": scope}
        if lifetime is not None and self.config["apps_send_expires_in"]:
            body["expires_in"] = int(lifetime)
        return body

    # -- token grants ------------------------------------------------------------------------
    def grant(self, flavor, key_mode, form):
        gt = form.get("grant_type")
        if not gt:
            raise OAuthError(400, "invalid_request", "No grant type specified")
        with self.lock:
            if gt == "authorization_code":
                return self._grant_code(flavor, key_mode, form.get("code"))
            if gt == "refresh_token":
                return self._grant_refresh(flavor, key_mode, form.get("refresh_token"), form.get("scope"))
        raise OAuthError(400, "unsupported_grant_type", "Unsupported grant type: %s" % gt)

    def _grant_code(self, flavor, key_mode, code):
        if not code:
            raise OAuthError(400, "invalid_request", "No authorization code provided")
        self.codes_used[code] = self.codes_used.get(code, 0) + 1
        c = self.codes.get(code)
        if c is None or c["flavor"] != flavor:
            raise OAuthError(400, "invalid_grant", "Authorization code does not exist: %s" % code)
        if c["used"]:
            self._revoke_account(c["account"])
            raise OAuthError(400, "invalid_grant", "This authorization code has already been used. "
                             "All tokens issued with this code have been revoked.")
        if self.now() - c["created"] > self.config["code_lifetime"]:
            raise OAuthError(400, "invalid_grant", "Authorization code expired: %s" % code)
        if c["mode"] != key_mode:
            raise OAuthError(400, "invalid_grant", "Authorization code provided does not belong to "
                             "you; it was issued in %s mode and the key is a %s mode key" % (c["mode"], key_mode))
        c["used"] = True
        rt = "rt_" + rand(32)
        self.refresh[rt] = {"mode": c["mode"], "account": c["account"], "flavor": flavor,
                            "scope": c["scope"], "active": True}
        self.accounts[c["account"]]["connected"] = True
        return self._mint(c["account"], key_mode, flavor, c["scope"], rt)

    def _grant_refresh(self, flavor, key_mode, rt, scope):
        if not rt:
            raise OAuthError(400, "invalid_request", "No refresh token provided")
        r = self.refresh.get(rt)
        if r is None or not r["active"] or r["flavor"] != flavor:
            raise OAuthError(400, "invalid_grant", "Invalid refresh token: %s" % rt)
        # A live authorization may mint test tokens (Connect); never the other way round.
        if r["mode"] != key_mode and not (flavor == "connect" and r["mode"] == "live"):
            raise OAuthError(400, "invalid_grant", "Refresh token provided does not belong to you: "
                             "it is a %s mode token and the key is a %s mode key" % (r["mode"], key_mode))
        granted = r["scope"]
        if scope and scope != granted:
            if not (flavor == "connect" and granted == "read_write" and scope == "read_only"):
                raise OAuthError(400, "invalid_scope", "Invalid scope: %s" % scope)
            granted = scope
        if flavor == "apps":  # rotation: the old refresh token dies now
            r["active"] = False
            new_rt = "rt_" + rand(32)
            self.refresh[new_rt] = dict(r, active=True)
            rt = new_rt
        return self._mint(r["account"], key_mode, flavor, granted, rt)

    def record(self, endpoint, form, mode, outcome, status, account=None):
        with self.lock:
            g = {"endpoint": endpoint, "grant_type": (form or {}).get("grant_type"), "mode": mode,
                 "outcome": outcome, "status": status, "t": round(time.time(), 6)}
            if account:
                g["account"] = account
            self.grants.append(g)

    def stats(self):
        with self.lock:
            return {"calls": dict(self.calls), "grants": list(self.grants),
                    "codes_used": dict(self.codes_used), "revoked_access_tokens": self.revoked_count}

    def token_info(self, req):
        with self.lock:
            if "access_token" in req:
                t = self.access.get(req["access_token"])
                if not t:
                    return {"active": False}
                exp = t["expires_at"]
                out = {"active": t["active"] and (exp is None or self.now() < exp), "mode": t["mode"],
                       "account": t["account"], "livemode": t["mode"] == "live", "flavor": t["flavor"],
                       "scope": t["scope"], "revoked": not t["active"]}
                if exp is not None:
                    out["expires_at"] = int(exp)
                return out
            r = self.refresh.get(req.get("refresh_token", ""))
            if not r:
                return {"active": False}
            return {"active": r["active"], "mode": r["mode"], "account": r["account"], "flavor": r["flavor"]}


# -- Stripe's payment API: state and rules ----------------------------------------------------
API_VERSION = "2024-06-20"
IDEMPOTENCY_TTL_S = 24 * 3600
PLATFORM_ACCOUNT = "acct_PLATFORMSIM00000"  # what the platform's own secret keys act on
API_RESOURCES = ("payment_intents", "refunds", "charges", "customers")
API_FAULT_ENDPOINTS = ("api",) + API_RESOURCES
API_ROUTE = re.compile(r"/v1/(payment_intents|refunds|charges|customers)(?:/([^/]+)(?:/([^/]+))?)?")
API_VERSION_RE = re.compile(r"\d{4}-\d{2}-\d{2}(\.[a-z_]+)?")
# Stripe's test payment methods: brand, last4, decline_code (None: the charge succeeds).
TEST_CARDS = {"pm_card_visa": ("visa", "4242", None), "pm_card_mastercard": ("mastercard", "4444", None),
              "pm_card_amex": ("amex", "8431", None),
              "pm_card_chargeDeclined": ("visa", "0002", "generic_decline"),
              "pm_card_chargeDeclinedInsufficientFunds": ("visa", "9995", "insufficient_funds")}
# Stripe's minimum charge amounts for a few currencies (others: 1).
MIN_AMOUNT = {"usd": 50, "eur": 50, "cad": 50, "aud": 50, "chf": 50, "gbp": 30, "jpy": 50}
LIST_FILTERS = {"payment_intents": {"customer"}, "charges": {"customer", "payment_intent"},
                "refunds": {"charge", "payment_intent"}, "customers": {"email"}}
EXPANDABLE = ("latest_charge", "customer", "payment_intent", "charge", "default_source")
NOUNS = {"pi_": "payment_intent", "ch_": "charge", "re_": "refund", "cus_": "customer"}
# Parameters each call accepts (anything else is Stripe's 400 parameter_unknown).
PI_CREATE = {"amount", "currency", "capture_method", "confirm", "customer", "description", "metadata",
             "payment_method", "payment_method_types", "receipt_email", "statement_descriptor",
             "statement_descriptor_suffix", "expand", "return_url", "off_session", "setup_future_usage"}
PI_CONFIRM = {"payment_method", "expand", "return_url", "off_session", "receipt_email"}
PI_CAPTURE = {"amount_to_capture", "expand", "metadata", "statement_descriptor", "statement_descriptor_suffix"}
PI_CANCEL = {"cancellation_reason", "expand"}
REFUND_CREATE = {"payment_intent", "charge", "amount", "reason", "metadata", "expand"}
CUSTOMER_CREATE = {"email", "name", "description", "phone", "metadata", "expand"}
RETRIEVE = {"expand"}
PI_CANCELABLE = ("requires_payment_method", "requires_capture", "requires_confirmation", "requires_action",
                 "processing")


class ApiError(Exception):
    """An error of Stripe's API: {"error": {"type", "code"?, "message", "param"?, …}}."""

    def __init__(self, status, message, type_="invalid_request_error", code=None, param=None,
                 headers=(), **extra):
        super().__init__(message)
        err = {"type": type_, "message": message}
        if code:
            err["code"] = code
        if param:
            err["param"] = param
        err.update(extra)
        self.status, self.body, self.headers = status, {"error": err}, list(headers)


def parse_form(text):
    """Stripe's form encoding: a[b]=1&l[]=x&l[]=y -> {"a": {"b": "1"}, "l": ["x", "y"]}."""
    out = {}
    for key, val in urllib.parse.parse_qsl(text, keep_blank_values=True):
        m = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", key)
        if not m:
            raise ApiError(400, "Invalid request: malformed parameter name '%s'." % key)
        parts = [m.group(1)] + re.findall(r"\[([^\[\]]*)\]", m.group(2))
        node = out
        for i, part in enumerate(parts):
            if part == "":
                part = str(len(node))
            if i == len(parts) - 1:
                if isinstance(node.get(part), dict):
                    raise ApiError(400, "Invalid request: '%s' is both a value and a hash." % key, param=key)
                node[part] = val
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ApiError(400, "Invalid request: '%s' is both a value and a hash." % key, param=key)

    def lists(v):  # {"0": a, "1": b} -> [a, b]
        if not isinstance(v, dict):
            return v
        v = {k: lists(x) for k, x in v.items()}
        if v and sorted(v) == sorted(str(i) for i in range(len(v))):
            return [v[str(i)] for i in range(len(v))]
        return v
    return lists(out)


def cents(n):
    return "$%d.%02d" % (n // 100, n % 100)


class Payments:
    """Objects, idempotency results and the call record of the payment API (sim.lock held)."""

    def __init__(self, sim):
        self.sim = sim
        self.objects = {}  # id -> {"account", "mode", "obj"}
        self.idem = {}     # (account, mode, key) -> {method, path, params, status, body, request_id, at}
        self.log = []      # one record per call, oldest first

    # -- the record --
    def begin(self, method, path, query, headers, request_id):
        r = {"seq": len(self.log) + 1, "t": round(time.time(), 6), "method": method, "path": path,
             "query": query, "headers": [[k, v] for k, v in headers], "body": None, "params": None,
             "account": None, "mode": None, "status": None, "request_id": request_id,
             "replayed": False, "fault": None}
        self.log.append(r)
        return r

    # -- authentication --
    def auth(self, key, stripe_account):
        sim = self.sim
        if not key:
            raise ApiError(401, "You did not provide an API key. You need to provide your API key in the "
                           "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                           "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, "
                           "or we can help at https://support.stripe.com/.",
                           headers=[("WWW-Authenticate", 'Basic realm="Stripe"')])
        platform = key in sim.keys
        if platform:
            acct, mode = PLATFORM_ACCOUNT, sim.keys[key]
        else:
            t = sim.access.get(key)
            if t is None or not t["active"]:
                raise ApiError(401, "Invalid API Key provided: %s" % redact(key),
                               headers=[("WWW-Authenticate", 'Basic realm="Stripe"')])
            if t["expires_at"] is not None and sim.now() >= t["expires_at"]:
                raise ApiError(401, "Expired API Key provided: %s. Refresh the access token of your "
                               "Stripe App to continue." % redact(key), code="api_key_expired",
                               headers=[("WWW-Authenticate", 'Basic realm="Stripe"')])
            acct, mode = t["account"], t["mode"]
        if stripe_account is not None and stripe_account != acct:
            a = sim.accounts.get(stripe_account)
            if not (platform and a and a["connected"]):
                raise ApiError(403, "The provided key '%s' does not have access to account '%s' (or that "
                               "account does not exist). Application access may have been revoked."
                               % (redact(key), stripe_account), code="account_invalid")
            acct = stripe_account
        return acct, mode

    # -- idempotency --
    def replay(self, acct, mode, key, method, path, params):
        """The stored answer for this key, None when there is none; 400 when it was used otherwise."""
        if len(key) > 255:
            raise ApiError(400, "Idempotency-Key must be at most 255 characters long.", param="Idempotency-Key")
        e = self.idem.get((acct, mode, key))
        if e is not None and self.sim.now() - e["at"] > IDEMPOTENCY_TTL_S:
            del self.idem[(acct, mode, key)]
            e = None
        if e is None:
            return None
        if (e["method"], e["path"]) != (method, path):
            raise ApiError(400, "Keys for idempotent requests can only be used for the same endpoint they "
                           "were first used for ('%s %s' vs '%s %s'). Try using a key other than '%s' if "
                           "you meant to execute a different request."
                           % (e["method"], e["path"], method, path, key), type_="idempotency_error")
        if e["params"] != params:
            raise ApiError(400, "Keys for idempotent requests can only be used with the same parameters "
                           "they were first used with. Try using a key other than '%s' if you meant to "
                           "execute a different request." % key, type_="idempotency_error")
        return e

    def remember(self, acct, mode, key, method, path, params, status, body, request_id):
        # Stripe saves a result once the endpoint started executing: successes and card errors,
        # not requests that failed validation.
        if status < 400 or status == 402:
            self.idem[(acct, mode, key)] = {"method": method, "path": path, "params": params,
                                            "status": status, "body": body, "request_id": request_id,
                                            "at": self.sim.now()}

    # -- objects --
    def new(self, prefix, n, acct, mode, fields):
        oid = prefix + rand(n)
        obj = {"id": oid, "object": NOUNS[prefix], "created": int(self.sim.now()), "livemode": mode == "live"}
        obj.update(fields)
        self.objects[oid] = {"account": acct, "mode": mode, "obj": obj}
        return obj

    def get(self, oid, acct, mode, noun, param="id"):
        o = self.objects.get(oid or "")
        if o is None or o["account"] != acct or o["obj"]["object"] != noun:
            raise ApiError(404, "No such %s: '%s'" % (noun, oid), code="resource_missing", param=param)
        if o["mode"] != mode:
            raise ApiError(404, "No such %s: '%s'; a similar object exists in %s mode, but a %s mode key "
                           "was used to make this request." % (noun, oid, o["mode"], mode),
                           code="resource_missing", param=param)
        return o["obj"]

    def expanded(self, obj, params, acct, mode):
        out = json.loads(json.dumps(obj))
        for field in params.get("expand") or []:
            if field not in EXPANDABLE or field not in obj:
                raise ApiError(400, "This property cannot be expanded (%s)." % field, param="expand")
            o = self.objects.get(obj[field] or "")
            if o is not None and o["account"] == acct and o["mode"] == mode:
                out[field] = json.loads(json.dumps(o["obj"]))
        return out

    # -- parameters --
    @staticmethod
    def allow(params, allowed):
        for k in params:
            if k not in allowed:
                raise ApiError(400, "Received unknown parameter: %s" % k, code="parameter_unknown", param=k)
        if "expand" in params and not isinstance(params["expand"], list):
            raise ApiError(400, "Invalid array", code="parameter_invalid_string", param="expand")

    @staticmethod
    def integer(params, name, required=False, default=None):
        v = params.get(name)
        if v is None:
            if required:
                raise ApiError(400, "Missing required param: %s." % name, code="parameter_missing", param=name)
            return default
        if not isinstance(v, str) or not re.fullmatch(r"-?\d{1,15}", v):
            raise ApiError(400, "Invalid integer: %s" % v, code="parameter_invalid_integer", param=name)
        if int(v) < 1:
            raise ApiError(400, "This value must be greater than or equal to 1.",
                           code="parameter_invalid_integer", param=name)
        return int(v)

    @staticmethod
    def choice(params, name, values, default=None):
        if name in params and params[name] not in values:
            raise ApiError(400, "Invalid %s: must be one of %s" % (name, ", ".join(values)), param=name)
        return params.get(name, default)

    @staticmethod
    def boolean(params, name):
        v = params.get(name, "false")
        if v not in ("true", "false"):
            raise ApiError(400, "Invalid boolean: %s" % v, param=name)
        return v == "true"

    @staticmethod
    def metadata(params, base=None):
        md = dict(base or {})
        v = params.get("metadata", {})
        if v == "":
            return {}
        if not isinstance(v, dict) or any(not isinstance(x, str) for x in v.values()):
            raise ApiError(400, "Invalid hash", code="parameter_invalid_string", param="metadata")
        for k, x in v.items():
            if x == "":
                md.pop(k, None)
            else:
                md[k] = x
        return md

    @staticmethod
    def strings(params, names):
        for n in names:
            if n in params and not isinstance(params[n], str):
                raise ApiError(400, "Invalid string: %s" % json.dumps(params[n]), param=n)

    # -- routes: (status, body) or ApiError --
    def route(self, method, path, acct, mode, p):
        m = API_ROUTE.fullmatch(path)
        res, oid, action = m.groups() if m else (None, None, None)
        if res == "payment_intents" and method == "POST" and oid is None:
            return self.pi_create(acct, mode, p)
        if res == "payment_intents" and method == "POST" and action in ("confirm", "capture", "cancel"):
            self.allow(p, {"confirm": PI_CONFIRM, "capture": PI_CAPTURE, "cancel": PI_CANCEL}[action])
            pi = self.get(oid, acct, mode, "payment_intent", "intent")
            getattr(self, "pi_" + action)(acct, mode, pi, p)
            return 200, self.expanded(pi, p, acct, mode)
        if res == "refunds" and method == "POST" and oid is None:
            return self.refund_create(acct, mode, p)
        if res == "customers" and method == "POST" and oid is None:
            self.allow(p, CUSTOMER_CREATE)
            self.strings(p, ("email", "name", "description", "phone"))
            cus = self.new("cus_", 14, acct, mode, {
                "address": None, "balance": 0, "currency": None, "default_source": None, "delinquent": False,
                "description": p.get("description"), "email": p.get("email"), "invoice_prefix": rand(8).upper(),
                "metadata": self.metadata(p), "name": p.get("name"), "phone": p.get("phone"),
                "preferred_locales": [], "tax_exempt": "none"})
            return 200, self.expanded(cus, p, acct, mode)
        if res == "customers" and method == "DELETE" and oid is not None and action is None:
            self.allow(p, set())
            cus = self.get(oid, acct, mode, "customer")
            if cus.get("deleted"):
                raise ApiError(404, "No such customer: '%s'" % oid, code="resource_missing", param="id")
            stub = {"id": oid, "object": "customer", "deleted": True}
            self.objects[oid]["obj"] = stub  # what a retrieve answers from now on
            return 200, dict(stub)
        if res and method == "GET" and oid is not None and action is None:
            self.allow(p, RETRIEVE)
            obj = self.get(oid, acct, mode, res[:-1], "intent" if res == "payment_intents" else "id")
            return 200, self.expanded(obj, p, acct, mode)
        if res and method == "GET" and oid is None:
            return self.list(res, acct, mode, p)
        raise ApiError(404, "Unrecognized request URL (%s: %s). Please see https://stripe.com/docs or we can "
                       "help at https://support.stripe.com/." % (method, path))

    def list(self, res, acct, mode, p):
        """A list, newest first: limit (1-100, default 10), starting_after, and LIST_FILTERS."""
        self.allow(p, {"limit", "starting_after", "expand"} | LIST_FILTERS[res])
        limit = self.integer(p, "limit", default=10)
        if limit > 100:
            raise ApiError(400, "This value must be less than or equal to 100.",
                           code="parameter_invalid_integer", param="limit")
        objs = [o["obj"] for o in reversed(list(self.objects.values()))
                if o["account"] == acct and o["mode"] == mode and o["obj"]["object"] == res[:-1]
                and not o["obj"].get("deleted") and all(o["obj"].get(f) == p[f] for f in LIST_FILTERS[res] if f in p)]
        if "starting_after" in p:
            ids = [o["id"] for o in objs]
            if p["starting_after"] not in ids:
                raise ApiError(404, "No such %s: '%s'" % (res[:-1], p["starting_after"]),
                               code="resource_missing", param="starting_after")
            objs = objs[ids.index(p["starting_after"]) + 1:]
        sub = {"expand": [e[len("data."):] for e in p.get("expand") or [] if e.startswith("data.")]}
        if len(sub["expand"]) != len(p.get("expand") or []):
            raise ApiError(400, "This property cannot be expanded (%s)." % p["expand"][0], param="expand")
        return 200, {"object": "list", "url": "/v1/" + res, "has_more": len(objs) > limit,
                     "data": [self.expanded(o, sub, acct, mode) for o in objs[:limit]]}

    def payment_method(self, p, pm):
        if not isinstance(pm, str) or pm not in TEST_CARDS:
            raise ApiError(400, "No such PaymentMethod: '%s'" % pm, code="resource_missing",
                           param="payment_method")
        return pm

    def pi_create(self, acct, mode, p):
        self.allow(p, PI_CREATE)
        self.strings(p, ("currency", "description", "customer", "receipt_email", "statement_descriptor"))
        amount = self.integer(p, "amount", required=True)
        currency = p.get("currency")
        if currency is None:
            raise ApiError(400, "Missing required param: currency.", code="parameter_missing", param="currency")
        if not re.fullmatch(r"[A-Za-z]{3}", currency):
            raise ApiError(400, "Invalid currency: %s." % currency, param="currency")
        least = MIN_AMOUNT.get(currency.lower(), 1)
        if amount < least:
            raise ApiError(400, "Amount must be at least %d (the smallest unit of %s)." % (least, currency.lower()),
                           code="amount_too_small", param="amount")
        if amount > 99999999:
            raise ApiError(400, "Amount must be no more than 99999999 (the smallest unit of %s)."
                           % currency.lower(), code="amount_too_large", param="amount")
        cm = self.choice(p, "capture_method", ("automatic", "automatic_async", "manual"), "automatic")
        confirm = self.boolean(p, "confirm")
        if p.get("customer") is not None and self.get(p["customer"], acct, mode, "customer", "customer").get("deleted"):
            raise ApiError(404, "No such customer: '%s'" % p["customer"], code="resource_missing", param="customer")
        pm = self.payment_method(p, p["payment_method"]) if "payment_method" in p else None
        pmt = p.get("payment_method_types", ["card"])
        if not isinstance(pmt, list):
            raise ApiError(400, "Invalid array", param="payment_method_types")
        pi = self.new("pi_", 24, acct, mode, {
            "amount": amount, "amount_capturable": 0, "amount_received": 0, "canceled_at": None,
            "cancellation_reason": None, "capture_method": cm, "confirmation_method": "automatic",
            "currency": currency.lower(), "customer": p.get("customer"), "description": p.get("description"),
            "last_payment_error": None, "latest_charge": None, "metadata": self.metadata(p),
            "payment_method": pm, "payment_method_types": pmt, "receipt_email": p.get("receipt_email"),
            "status": "requires_confirmation" if pm else "requires_payment_method"})
        pi["client_secret"] = pi["id"] + "_secret_" + rand(24)
        if confirm:
            self.pi_confirm(acct, mode, pi, {})
        return 200, self.expanded(pi, p, acct, mode)

    def unexpected(self, pi, what, allowed):
        raise ApiError(400, "You cannot %s this PaymentIntent because it has a status of %s. Only a "
                       "PaymentIntent with one of the following statuses may be %s: %s."
                       % (what[0], pi["status"], what[1], ", ".join(allowed)),
                       code="payment_intent_unexpected_state", payment_intent=json.loads(json.dumps(pi)))

    def pi_confirm(self, acct, mode, pi, p):
        if pi["status"] not in ("requires_payment_method", "requires_confirmation"):
            self.unexpected(pi, ("confirm", "confirmed"), ("requires_confirmation", "requires_payment_method"))
        pm = self.payment_method(p, p["payment_method"]) if "payment_method" in p else pi["payment_method"]
        if pm is None:
            raise ApiError(400, "You cannot confirm this PaymentIntent because it's missing a payment "
                           "method. Update the PaymentIntent with a payment method and then confirm it "
                           "again.", code="payment_intent_unexpected_state", param="payment_method")
        brand, last4, decline = TEST_CARDS[pm]
        if mode == "live":  # Stripe's test cards are declined in live mode
            decline = "test_mode_live_card"
        manual = pi["capture_method"] == "manual"
        ch = self.new("ch_", 24, acct, mode, {
            "amount": pi["amount"], "amount_captured": 0, "amount_refunded": 0, "balance_transaction": None,
            "captured": False, "currency": pi["currency"], "customer": pi["customer"],
            "description": pi["description"], "failure_code": None, "failure_message": None,
            "metadata": dict(pi["metadata"]), "paid": False, "payment_intent": pi["id"], "payment_method": pm,
            "payment_method_details": {"type": "card", "card": {"brand": brand, "last4": last4}},
            "refunded": False, "status": "failed"})
        pi.update(payment_method=pm, latest_charge=ch["id"])
        if decline:
            msg = "Your card was declined." + (" Your request was in live mode, but used a known test card."
                                               if decline == "test_mode_live_card" else "")
            err = {"type": "card_error", "code": "card_declined", "decline_code": decline, "message": msg,
                   "charge": ch["id"]}
            ch.update(failure_code="card_declined", failure_message=msg)
            pi.update(status="requires_payment_method", payment_method=None, last_payment_error=dict(err))
            raise ApiError(402, msg, type_="card_error", code="card_declined", decline_code=decline,
                           charge=ch["id"], payment_intent=json.loads(json.dumps(pi)))
        ch.update(paid=True, status="succeeded")
        pi["last_payment_error"] = None
        if manual:
            pi.update(status="requires_capture", amount_capturable=pi["amount"])
        else:
            ch.update(captured=True, amount_captured=pi["amount"], balance_transaction="txn_" + rand(24))
            pi.update(status="succeeded", amount_received=pi["amount"])

    def pi_capture(self, acct, mode, pi, p):
        if pi["status"] != "requires_capture":
            raise ApiError(400, "This PaymentIntent could not be captured because it has a status of %s. "
                           "Only a PaymentIntent with one of the following statuses may be captured: "
                           "requires_capture." % pi["status"], code="payment_intent_unexpected_state",
                           payment_intent=json.loads(json.dumps(pi)))
        n = self.integer(p, "amount_to_capture", default=pi["amount_capturable"])
        if n > pi["amount_capturable"]:
            raise ApiError(400, "The amount to capture (%d) is greater than the amount capturable (%d)."
                           % (n, pi["amount_capturable"]), code="amount_too_large", param="amount_to_capture")
        ch = self.objects[pi["latest_charge"]]["obj"]
        ch.update(captured=True, amount_captured=n, balance_transaction="txn_" + rand(24))
        pi.update(status="succeeded", amount_received=n, amount_capturable=0,
                  metadata=self.metadata(p, pi["metadata"]))

    def pi_cancel(self, acct, mode, pi, p):
        if pi["status"] not in PI_CANCELABLE:
            self.unexpected(pi, ("cancel", "canceled"), PI_CANCELABLE)
        reason = self.choice(p, "cancellation_reason", ("duplicate", "fraudulent", "requested_by_customer",
                                                        "abandoned"))
        if pi["status"] == "requires_capture":  # the authorization is released
            ch = self.objects[pi["latest_charge"]]["obj"]
            ch.update(refunded=True, amount_refunded=ch["amount"])
        pi.update(status="canceled", canceled_at=int(self.sim.now()), cancellation_reason=reason,
                  amount_capturable=0)

    def refund_create(self, acct, mode, p):
        self.allow(p, REFUND_CREATE)
        self.strings(p, ("payment_intent", "charge"))
        if p.get("payment_intent") is None and p.get("charge") is None:
            raise ApiError(400, "One of the following params should be provided for this request: "
                           "payment_intent or charge.", code="parameter_missing")
        if p.get("payment_intent") is not None:
            pi = self.get(p["payment_intent"], acct, mode, "payment_intent", "payment_intent")
            if p.get("charge") is not None and p["charge"] != pi["latest_charge"]:
                raise ApiError(400, "The charge %s does not belong to the PaymentIntent %s."
                               % (p["charge"], pi["id"]), param="charge")
            if pi["latest_charge"] is None or pi["status"] != "succeeded":
                raise ApiError(400, "This PaymentIntent (%s) does not have a successful charge to refund."
                               % pi["id"], code="charge_not_refundable", param="payment_intent")
            ch = self.objects[pi["latest_charge"]]["obj"]
        else:
            ch = self.get(p["charge"], acct, mode, "charge", "charge")
        if not ch["captured"] or ch["status"] != "succeeded":
            raise ApiError(400, "Charge %s has not been captured; cancel its PaymentIntent instead."
                           % ch["id"], code="charge_not_refundable", param="charge")
        left = ch["amount_captured"] - ch["amount_refunded"]
        if left <= 0:
            raise ApiError(400, "Charge %s has already been refunded." % ch["id"], code="charge_already_refunded")
        amount = self.integer(p, "amount", default=left)
        if amount > left:
            raise ApiError(400, "Refund amount (%s) is greater than unrefunded amount on charge (%s)"
                           % (cents(amount), cents(left)), code="amount_too_large", param="amount")
        reason = self.choice(p, "reason", ("duplicate", "fraudulent", "requested_by_customer"))
        re_ = self.new("re_", 24, acct, mode, {
            "amount": amount, "balance_transaction": "txn_" + rand(24), "charge": ch["id"],
            "currency": ch["currency"], "metadata": self.metadata(p), "payment_intent": ch["payment_intent"],
            "reason": reason, "status": "succeeded"})
        ch["amount_refunded"] += amount
        ch["refunded"] = ch["amount_refunded"] >= ch["amount_captured"]
        return 200, self.expanded(re_, p, acct, mode)

    # -- one call, under the lock --
    def call(self, rec, method, path, query, raw, headers, key):
        """Authenticates, replays or executes one call; returns (status, body, extra headers)."""
        rid = rec["request_id"]
        out = [("Stripe-Version", headers.get("Stripe-Version") or API_VERSION)]
        ik = headers.get("Idempotency-Key")
        if ik is not None:
            out.append(("Idempotency-Key", ik))
        try:
            acct, mode = self.auth(key, headers.get("Stripe-Account"))
            rec.update(account=acct, mode=mode)
            v = headers.get("Stripe-Version")
            if v is not None and not API_VERSION_RE.fullmatch(v):
                raise ApiError(400, "Invalid Stripe API version: %s" % v, code="api_version_invalid")
            ctype = headers.get("Content-Type", "").split(";")[0].strip().lower()
            if raw.strip() and ctype != "application/x-www-form-urlencoded":
                raise ApiError(400, "Invalid request: unsupported Content-Type %s. If error persists and you "
                               "need assistance, please contact support@stripe.com." % headers.get("Content-Type"))
            params = parse_form(query + ("&" if query and raw else "") + raw.decode("utf-8", "replace"))
            rec["params"] = params
            if method == "POST" and ik is not None:
                e = self.replay(acct, mode, ik, method, path, params)
                if e is not None:
                    rec["replayed"] = True
                    out += [("Idempotent-Replayed", "true"), ("Original-Request", e["request_id"])]
                    return e["status"], json.loads(json.dumps(e["body"])), out
            try:
                status, body = self.route(method, path, acct, mode, params)
            except ApiError as e:
                status, body = e.status, e.body
            if method == "POST" and ik is not None:
                self.remember(acct, mode, ik, method, path, params, status, body, rid)
            return status, body, out
        except ApiError as e:
            return e.status, e.body, out + e.headers


# -- HTML --------------------------------------------------------------------------------------
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Stripe (simulator)</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main>
<h1>Stripe (simulator)</h1>
%s
</main></body></html>
"""


def error_page(msg):
    return PAGE % ("<h2>Something went wrong</h2>\n<p role=\"alert\">%s</p>" % html.escape(msg))


def consent_page(sim, p, mode, flavor, acct):
    hidden = "".join('<input type="hidden" name="%s" value="%s">\n' % (k, html.escape(v, quote=True))
                     for k, v in (("client_id", p["client_id"]), ("redirect_uri", p["redirect_uri"]),
                                  ("state", p.get("state", "")), ("scope", p["scope"]),
                                  ("flavor", flavor)))
    body = """<h2>Connect your Stripe account to %(app)s</h2>
<p><strong>%(app)s</strong> asks for <strong>%(scope)s</strong> access to your Stripe account
in <strong>%(mode)s mode</strong>.</p>
<form method="post" action="/oauth/authorize/decision">
%(hidden)s<input type="hidden" name="decision" value="approve">
<p><label for="account">Stripe account id</label>
<input type="text" id="account" name="account" value="%(acct)s" required pattern="acct_[A-Za-z0-9]+"></p>
<p><button type="submit" id="approve">Approve</button></p>
</form>
<form method="post" action="/oauth/authorize/decision">
%(hidden)s<input type="hidden" name="decision" value="deny">
<p><button type="submit" id="decline">Decline</button></p>
</form>""" % {"app": html.escape(sim.app_name), "scope": html.escape(p["scope"]), "mode": mode,
              "hidden": hidden, "acct": html.escape(acct)}
    return PAGE % body


def with_query(uri, params):
    sep = "&" if "?" in uri else "?"
    return uri + sep + urllib.parse.urlencode([(k, v) for k, v in params if v is not None])


# -- HTTP --------------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stripe-sim/1.0"
    timeout = 120  # idle keep-alive connections

    @property
    def sim(self):
        return self.server.sim

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("stripe-sim: %s %s\n" % (self.address_string(), fmt % args))

    # -- plumbing --
    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
                if len(data) > MAX_BODY:
                    raise ValueError("body too large")
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(n) if n > 0 else b""

    def send(self, status, body, ctype="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if not any(k == "Request-Id" for k, _ in headers):
            self.send_header("Request-Id", "req_" + rand(14))
        self.send_header("Cache-Control", "no-store")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_html(self, status, page):
        self.send(status, page, "text/html; charset=utf-8")

    def oauth_error(self, e):
        self.send(e.status, {"error": e.code, "error_description": e.desc})

    def not_found(self):
        self.send(404, {"error": "invalid_request", "error_description": "Unrecognized request URL"})

    def client_gone(self):
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            return bool(r) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def apply_faults(self, endpoint):
        """Returns True when a fault answered (or dropped) the call."""
        for f in self.sim.take_faults(endpoint):
            kind = f["kind"]
            if kind == "delay":
                self.sim.release.wait(max(0, f.get("delay_ms") or 0) / 1000.0)
                continue
            self.fault_kind = kind
            if kind == "status":
                status = int(f.get("status") or 500)
                body = f.get("body")
                if body is None:
                    body = {"error": "rate_limited" if status == 429 else "server_error",
                            "error_description": "Simulated failure (HTTP %d)" % status}
                self.fault_status = status
                self.send(status, body)
            elif kind == "malformed":
                self.fault_status = 200
                self.send(200, "{not json")
            elif kind == "close":
                self.close_connection = True
            elif kind == "hang":
                self.hang()
                self.close_connection = True
            return True
        return False

    def hang(self):
        """Waits until the faults are cleared, the client gives up, or HANG_MAX_S."""
        ev, deadline = self.sim.release, time.monotonic() + HANG_MAX_S
        while not ev.is_set() and time.monotonic() < deadline and not self.client_gone():
            ev.wait(0.05)

    def key_from_headers(self, allow_bearer=True, allow_basic=True):
        auth = self.headers.get("Authorization", "")
        scheme, _, cred = auth.partition(" ")
        cred = cred.strip()
        if allow_bearer and scheme.lower() == "bearer" and cred:
            return cred
        if allow_basic and scheme.lower() == "basic" and cred:
            try:
                return base64.b64decode(cred, validate=True).decode().partition(":")[0]
            except ValueError:
                return ""
        return None

    def key_mode(self, key):
        mode = self.sim.keys.get(key or "")
        if mode is None:
            raise OAuthError(401, "invalid_client", "Invalid API Key provided: %s" % redact(key)
                             if key else "No API key provided. Authenticate with your secret key.")
        return mode

    # -- dispatch --
    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def dispatch(self, method):
        url = urllib.parse.urlsplit(self.path)
        self.query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        if url.path.startswith("/v1/") and url.path != "/v1/oauth/token":
            return self.api(method, url)  # Stripe's payment API reads its body itself
        try:
            raw = self.read_body()
        except ValueError:
            self.close_connection = True
            return self.send(413, {"error": "invalid_request", "error_description": "Request too large"})
        routes = {
            ("GET", "/oauth/authorize"): lambda: self.authorize("connect"),
            ("GET", "/oauth/v2/authorize"): lambda: self.authorize("apps"),
            ("POST", "/oauth/authorize/decision"): lambda: self.decision(raw),
            ("POST", "/oauth/token"): lambda: self.token("connect", raw),
            ("POST", "/v1/oauth/token"): lambda: self.token("apps", raw),
            ("POST", "/oauth/deauthorize"): lambda: self.deauthorize(raw),
        }
        handler = routes.get((method, url.path))
        if handler is None and url.path.startswith("/_sim/"):
            handler = lambda: self.control(method, url.path, raw)  # noqa: E731
        try:
            handler() if handler else self.not_found()
        except OAuthError as e:
            self.oauth_error(e)
        except (ValueError, TypeError, KeyError) as e:  # malformed control requests
            self.send(400, {"error": "invalid_request", "error_description": "Bad request: %r" % e})

    # -- Stripe endpoints --
    def authorize(self, flavor):
        if self.apply_faults("authorize"):
            return
        p = self.query
        if flavor == "connect" and p.get("response_type") != "code":
            return self.send_html(400, error_page("Invalid response_type: expected 'code'."))
        mode = self.sim.clients.get(p.get("client_id", ""))
        if mode is None:
            return self.send_html(400, error_page("No such application: '%s'." % p.get("client_id", "")))
        if not p.get("redirect_uri", "").startswith(("http://", "https://")):
            return self.send_html(400, error_page("Invalid or missing redirect_uri."))
        if flavor == "apps":
            p["scope"] = "stripe_apps"
        else:
            p["scope"] = p.get("scope") or "read_only"
            if p["scope"] not in ("read_only", "read_write"):
                return self.send_html(400, error_page("Invalid scope: '%s'." % p["scope"]))
        behaviour = self.sim.config["authorize"]
        if behaviour == "deny":
            return self.redirect_denied(p)
        if behaviour == "approve":
            code, _ = self.sim.issue_code(mode, flavor, p["scope"])
            return self.redirect_code(p, code)
        self.send_html(200, consent_page(self.sim, p, mode, flavor, self.sim.propose_account()))

    def redirect_code(self, p, code):
        loc = with_query(p["redirect_uri"], [("code", code), ("scope", p["scope"]), ("state", p.get("state"))])
        self.send(302, {"redirect": loc}, headers=[("Location", loc)])

    def redirect_denied(self, p):
        loc = with_query(p["redirect_uri"], [("error", "access_denied"),
                                             ("error_description", "The user denied your request"),
                                             ("state", p.get("state"))])
        self.send(302, {"redirect": loc}, headers=[("Location", loc)])

    def decision(self, raw):
        with self.sim.lock:
            self.sim.calls["authorize_decision"] += 1
        f = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        mode = self.sim.clients.get(f.get("client_id", ""))
        flavor = f.get("flavor", "connect")
        if mode is None or flavor not in ("connect", "apps") or not f.get("redirect_uri"):
            return self.send_html(400, error_page("Invalid authorization request."))
        f.setdefault("scope", "read_only")
        if f.get("state") == "":
            f["state"] = None
        if f.get("decision") != "approve":
            return self.redirect_denied(f)
        acct = f.get("account", "")
        if not acct.startswith("acct_") or len(acct) < 6 or not all(c in ALNUM for c in acct[5:]):
            return self.send_html(400, error_page("Invalid account id."))
        code, _ = self.sim.issue_code(mode, flavor, f["scope"], acct)
        self.redirect_code(f, code)

    def token(self, flavor, raw):
        endpoint = "token" if flavor == "connect" else "apps_token"
        form = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        self.fault_kind, self.fault_status = None, None
        if self.apply_faults(endpoint):
            return self.sim.record(endpoint, form, None, "fault:" + self.fault_kind, self.fault_status)
        mode = None
        try:
            if flavor == "apps":
                key = self.key_from_headers(allow_bearer=False)
            else:
                key = self.key_from_headers() or form.get("client_secret")
            mode = self.key_mode(key)
            body = self.sim.grant(flavor, mode, form)
        except OAuthError as e:
            self.sim.record(endpoint, form, mode, e.code, e.status)
            raise
        self.sim.record(endpoint, form, mode, "ok", 200, body["stripe_user_id"])
        self.send(200, body)

    def deauthorize(self, raw):
        if self.apply_faults("deauthorize"):
            return
        form = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        mode = self.key_mode(self.key_from_headers())
        cid, acct = form.get("client_id", ""), form.get("stripe_user_id", "")
        if not cid or not acct:
            raise OAuthError(400, "invalid_request", "client_id and stripe_user_id are required")
        cmode = self.sim.clients.get(cid)
        if cmode is None:
            raise OAuthError(400, "invalid_client", "No such application: %s" % cid)
        if cmode != mode:
            raise OAuthError(401, "invalid_client", "The API key's mode (%s) does not match "
                             "client_id %s (%s mode)" % (mode, cid, cmode))
        if not self.sim.revoke_account(acct):
            raise OAuthError(400, "invalid_client", "No such user connected to this application")
        self.send(200, {"stripe_user_id": acct})

    # -- control interface --
    def control(self, method, path, raw):
        sim = self.sim
        try:
            req = json.loads(raw) if raw.strip() else {}
            if not isinstance(req, dict):
                raise ValueError("expected a JSON object")
        except ValueError as e:
            return self.send(400, {"error": "bad_json", "message": str(e)})
        if (method, path) == ("GET", "/_sim/stats"):
            return self.send(200, sim.stats())
        if (method, path) == ("POST", "/_sim/reset"):
            sim.reset()
            return self.send(200, {"ok": True})
        if path == "/_sim/faults" and method == "POST" and req.get("endpoint") in API_FAULT_ENDPOINTS:
            return self.api_fault_add(req)
        if (method, path) == ("GET", "/_sim/requests"):
            since = int(self.query.get("since") or 0)
            with sim.lock:
                return self.send(200, {"requests": [json.loads(json.dumps(r)) for r in sim.pay.log
                                                    if r["seq"] > since]})
        if path == "/_sim/faults" and method == "POST":
            kind, ep = req.get("kind"), req.get("endpoint", "any")
            if kind not in ("status", "delay", "hang", "close", "malformed") or \
                    ep not in ("token", "apps_token", "deauthorize", "authorize", "any"):
                return self.send(400, {"error": "bad_fault", "message": "unknown kind or endpoint"})
            f = {"endpoint": ep, "kind": kind, "status": int(req.get("status", 500)),
                 "body": req.get("body"), "delay_ms": int(req.get("delay_ms", 0)),
                 "count": None if req.get("count") is None else int(req["count"])}
            with sim.lock:
                sim.faults.append(f)
                n = len(sim.faults)
            return self.send(200, {"ok": True, "faults": n})
        if path == "/_sim/faults" and method == "DELETE":
            with sim.lock:
                sim.faults = []
                old, sim.release = sim.release, threading.Event()
            old.set()
            return self.send(200, {"ok": True})
        if path == "/_sim/faults" and method == "GET":
            with sim.lock:
                return self.send(200, {"faults": [dict(f) for f in sim.faults]})
        if (method, path) == ("POST", "/_sim/config"):
            with sim.lock:
                if "authorize" in req:
                    if req["authorize"] not in ("consent", "approve", "deny"):
                        return self.send(400, {"error": "bad_config", "message": "authorize"})
                    sim.config["authorize"] = req["authorize"]
                if "next_account" in req:
                    sim.next_account = req["next_account"] or None
                for k in ("apps_token_lifetime", "code_lifetime", "clock_offset"):
                    if k in req:
                        sim.config[k] = float(req[k])
                if "apps_send_expires_in" in req:
                    sim.config["apps_send_expires_in"] = bool(req["apps_send_expires_in"])
                out = dict(sim.config, next_account=sim.next_account)
            return self.send(200, out)
        if (method, path) == ("POST", "/_sim/token-info"):
            return self.send(200, sim.token_info(req))
        if (method, path) == ("POST", "/_sim/issue-code"):
            mode = sim.clients.get(req.get("client_id", ""))
            flavor = req.get("flavor", "connect")
            if mode is None or flavor not in ("connect", "apps"):
                return self.send(400, {"error": "bad_client", "message": "unknown client_id or flavor"})
            scope = req.get("scope") or ("stripe_apps" if flavor == "apps" else "read_write")
            code, acct = sim.issue_code(mode, flavor, scope, req.get("account"))
            return self.send(200, {"code": code, "account": acct, "mode": mode})
        if (method, path) == ("POST", "/_sim/revoke"):
            return self.send(200, {"revoked": sim.revoke_account(req.get("account", ""))})
        if (method, path) == ("POST", "/_sim/webhook"):
            return self.send(200, self.webhook(req))
        self.send(404, {"error": "not_found", "message": "unknown control path"})

    def webhook(self, req):
        sim = self.sim
        if not str(req.get("url", "")).startswith(("http://", "https://")):
            raise ValueError("url is required")
        with sim.lock:
            sim.calls["webhook"] += 1
        live = bool(req.get("livemode", False))
        ts = int(req.get("timestamp") or time.time())
        evt_id = req.get("id") or "evt_" + rand(24)
        etype = req.get("type", "account.application.deauthorized")
        obj = req.get("data_object") or {"id": sim.client_of_mode["live" if live else "test"],
                                         "object": "application", "name": sim.app_name}
        event = {"id": evt_id, "object": "event", "api_version": "2024-06-20", "created": ts,
                 "type": etype, "account": req.get("account"), "livemode": live,
                 "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
                 "data": {"object": obj}}
        if req.get("revoke") and req.get("account"):
            sim.revoke_account(req["account"])
        body = json.dumps(event).encode()
        signed = str(ts).encode() + b"." + body
        sigs = [s for s in [req.get("secret")] + list(req.get("extra_signatures") or []) if s]
        header = "t=%d" % ts + "".join(",v1=" + hmac.new(s.encode(), signed, hashlib.sha256).hexdigest()
                                      for s in sigs)
        r = urllib.request.Request(req["url"], data=body, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "Stripe-Signature": header,
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"})
        out = {"event_id": evt_id, "signature": header}
        try:
            with urllib.request.urlopen(r, timeout=15) as resp:
                out.update(status=resp.status, body=resp.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as e:
            out.update(status=e.code, body=e.read().decode("utf-8", "replace"))
        except (OSError, ValueError) as e:
            out.update(status=0, body="", error=str(e))
        return out

    # -- Stripe's payment API --
    def api(self, method, url):
        """One payment API call: faults at their stage, the call, the record."""
        sim, rid = self.sim, "req_" + rand(14)
        with sim.lock:
            rec = sim.pay.begin(method, url.path, url.query, self.headers.items(), rid)
        faults = sim.take_api_faults(method, url.path)
        if self.api_faults(faults, "before_body", rec):
            return
        try:
            raw = self.read_body()
        except ValueError:
            self.close_connection = True
            return self.api_send(rec, 413, ApiError(413, "Request body too large.").body)
        with sim.lock:
            rec["body"] = raw.decode("utf-8", "replace")
        if self.api_faults(faults, "after_body", rec):
            return
        key = self.key_from_headers()
        with sim.lock:
            status, body, headers = sim.pay.call(rec, method, url.path, url.query, raw, self.headers, key)
        if self.api_faults(faults, "after_processing", rec):
            return
        self.api_send(rec, status, body, headers)

    def api_send(self, rec, status, body, headers=(), fault=None):
        with self.sim.lock:
            rec.update(status=status, fault=fault)
        self.send(status, body, headers=[("Request-Id", rec["request_id"])] + list(headers))

    def api_faults(self, faults, stage, rec):
        """Applies the faults of this stage; True when one of them answered or dropped the call."""
        for f in faults:
            if f["when"] != stage:
                continue
            kind = f["kind"]
            if kind == "delay":
                self.sim.release.wait(max(0, f["delay_ms"]) / 1000.0)
                continue
            if kind in ("close", "hang"):
                with self.sim.lock:
                    rec["fault"] = kind
                if kind == "hang":
                    self.hang()
                self.close_connection = True
            elif kind == "status":
                st = f["status"]
                body = f["body"]
                if body is None:
                    body = ApiError(st, "Too many requests hit the API too quickly. We recommend an exponential "
                                    "backoff of your requests.", "rate_limit_error", "rate_limit").body \
                        if st == 429 else ApiError(st, "Simulated failure (HTTP %d)." % st,
                                                   "api_error" if st >= 500 else "invalid_request_error").body
                hdrs = [("Stripe-Version", API_VERSION)]
                if st == 429:
                    hdrs.append(("Retry-After", str(f["retry_after"])))
                if st >= 500 or st == 409:
                    hdrs.append(("Stripe-Should-Retry", "true"))
                self.api_send(rec, st, body, hdrs + [(k, str(v)) for k, v in f["headers"].items()], "status")
            elif kind == "malformed":
                self.api_send(rec, 200, "{not json", fault="malformed")
            elif kind == "huge":
                self.api_huge(rec, f)
            elif kind == "truncated":
                data = json.dumps({"id": "pi_" + rand(24), "object": "payment_intent",
                                   "metadata": {"pad": "x" * 512}}).encode()
                with self.sim.lock:
                    rec.update(status=200, fault="truncated")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", rec["request_id"])
                self.end_headers()
                self.wfile.write(data[:len(data) // 2])
                self.close_connection = True
            return True
        return False

    def api_huge(self, rec, f):
        """A 200 whose JSON body is f["size"] bytes (default: just over 1 MiB), chunked if asked."""
        size = f["size"]
        head = b'{"object": "payment_intent", "id": "pi_huge", "metadata": {"pad": "'
        data = head + b"x" * max(0, size - len(head) - 3) + b'"}}'
        with self.sim.lock:
            rec.update(status=200, fault="huge")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Request-Id", rec["request_id"])
        if f["chunked"]:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            for i in range(0, len(data), 65536):
                part = data[i:i + 65536]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if f["chunked"] else part)
            if f["chunked"]:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client gave up on it
            self.close_connection = True

    def api_fault_add(self, req):
        """POST /_sim/faults for a payment API endpoint (api or one resource)."""
        kind, when = req.get("kind"), req.get("when", "after_body")
        answers = ("status", "malformed", "huge", "truncated")
        if kind not in ("delay", "hang", "close") + answers or \
                when not in ("before_body", "after_body", "after_processing") or \
                (kind in answers and when != "after_body"):
            return self.send(400, {"error": "bad_fault", "message": "unknown kind or when (answers: after_body)"})
        f = {"endpoint": req["endpoint"], "kind": kind, "when": when, "match": req.get("match") or "",
             "status": int(req.get("status", 500)), "body": req.get("body"),
             "headers": dict(req.get("headers") or {}), "retry_after": int(req.get("retry_after", 1)),
             "delay_ms": int(req.get("delay_ms", 0)), "size": int(req.get("size", MAX_BODY + 1024)),
             "chunked": bool(req.get("chunked", False)),
             "count": None if req.get("count") is None else int(req["count"])}
        with self.sim.lock:
            self.sim.faults.append(f)
            n = len(self.sim.faults)
        return self.send(200, {"ok": True, "faults": n})


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    block_on_close = False


def main(argv=None):
    ap = argparse.ArgumentParser(description="Local Stripe OAuth simulator")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--test-client-id", default="ca_test_sim")
    ap.add_argument("--test-secret-key", default="sk_test_platform_sim")
    ap.add_argument("--live-client-id", default="ca_live_sim")
    ap.add_argument("--live-secret-key", default="sk_live_platform_sim")
    ap.add_argument("--authorize", choices=("consent", "approve", "deny"), default="consent")
    ap.add_argument("--apps-token-lifetime", type=float, default=3600)
    ap.add_argument("--app-name", default="Stripe Token Broker (demo platform)")
    ap.add_argument("--ready-file")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if not args.test_secret_key.startswith("sk_test_") or not args.live_secret_key.startswith("sk_live_"):
        ap.error("secret keys must start with sk_test_ / sk_live_")

    server = SimServer((args.host, args.port), Handler)
    server.sim, server.verbose = Sim(args), args.verbose
    port = server.server_address[1]
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.ready_file)
    print("stripe-sim listening on http://%s:%d" % (args.host, port), flush=True)

    def stop(*_):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.sim.release.set()
        server.server_close()


if __name__ == "__main__":
    main()
