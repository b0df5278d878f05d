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

How to run:
  python3 tests/fakes/stripe_sim.py --port 0 --test-client-id ca_test_sim \
      --test-secret-key sk_test_platform_sim --live-client-id ca_live_sim \
      --live-secret-key sk_live_platform_sim [--authorize consent|approve|deny] \
      [--apps-token-lifetime 3600] [--ready-file PATH] [--host 127.0.0.1] [--verbose]
It writes the port to --ready-file (atomically), then prints
"stripe-sim listening on http://HOST:PORT" to stdout.

How to control it (JSON, same port, for tests):
  GET    /_sim/stats        calls per endpoint, every grant with its outcome, codes presented,
                            number of revoked access tokens
  POST   /_sim/reset        forget all OAuth state, counters, faults and config changes
  POST   /_sim/faults       {"endpoint": token|apps_token|deauthorize|authorize|any,
                             "kind": status|delay|hang|close|malformed, "status": 500,
                             "body": "raw", "delay_ms": 200, "count": N}  (appended; checked in
                            order; a delay is applied and checking goes on; the first other kind
                            answers the call; "any" = token, apps_token and deauthorize)
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
                             "created"?, "extra_signatures"?: [secrets], "data_object"?: {…},
                             "revoke"?: bool}
                            → signs and POSTs a Stripe event; {"status", "body", "event_id"}
                            ("timestamp" is the signature's t, default now; "created" the
                            event's, default the timestamp: a redelivery signs an old event anew)
"""
import argparse
import base64
import hashlib
import hmac
import html
import json
import os
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
                ev, deadline = self.sim.release, time.monotonic() + HANG_MAX_S
                while not ev.is_set() and time.monotonic() < deadline and not self.client_gone():
                    ev.wait(0.05)
                self.close_connection = True
            return True
        return False

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
        # Stripe answers every refusal here with 401 invalid_client; only the description
        # tells "not connected" (the account is already gone) from a wrong key or client id.
        cmode = self.sim.clients.get(cid)
        if cmode is None:
            raise OAuthError(401, "invalid_client", "No such application: '%s'" % cid)
        if cmode != mode:
            raise OAuthError(401, "invalid_client", "The API key's mode (%s) does not match "
                             "client_id %s (%s mode)" % (mode, cid, cmode))
        if not self.sim.revoke_account(acct):
            raise OAuthError(401, "invalid_client", "This application is not connected to stripe account "
                             "%s, or that account does not exist." % acct)
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
        created = int(req["created"]) if req.get("created") is not None else ts
        event = {"id": evt_id, "object": "event", "api_version": "2024-06-20", "created": created,
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
