"""The Stripe proxy over TLS (stripe/api.c): STRIPE_API_URL is https in production, and
the proxy's own client must verify Stripe's certificate chain and name before anything
(the bearer first) is written to the connection.

A TLS relay in front of the simulator plays api.stripe.com: it terminates TLS with a
certificate of this module's own test CA and pipes the bytes to the simulator. The
broker trusts that CA through SSL_CERT_FILE (OpenSSL's default verify paths), so the
same broker is tested with a good certificate, one for another name, and one from a CA
it does not trust. One worker thread: consecutive calls share its connection."""

import os
import select
import socket
import ssl
import subprocess
import threading
import urllib.parse

import harness as h

S = None
CERTS = None


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=CERTS)


def make_certs():
    """ca.pem (trusted) signs localhost.pem and other.pem; rogue.pem signs itself."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=stb test CA")
    for name, san in (("localhost", "DNS:localhost"), ("other", "DNS:other.example")):
        with open(os.path.join(CERTS, f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName={san}\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={san[4:]}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.pem", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost")


class TlsRelay:
    """Accepts TLS on a free port with the certificate `name` (switchable), pipes each
    connection to the simulator; counts handshakes that completed."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.handshakes = 0
        self.live = set()
        self.ctx = None
        self.use("localhost")
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def use(self, name):
        """Serve the certificate `name` from now on; the connections open are closed, so
        that the broker must connect (and verify) again."""
        for t in list(self.live):
            try:
                t.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(CERTS, f"{name}.pem"), os.path.join(CERTS, f"{name}.key"))
        self.ctx = ctx

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c, self.ctx), daemon=True).start()

    def _serve(self, c, ctx):
        try:
            c.settimeout(5)
            t = ctx.wrap_socket(c, server_side=True)
        except (OSError, ssl.SSLError):
            c.close()
            return
        self.handshakes += 1
        self.live.add(t)
        u = socket.create_connection(("127.0.0.1", self.upstream_port))
        t.settimeout(None)
        try:
            while True:
                r, _, _ = select.select([t, u], [], [], 30) if t.pending() == 0 else ([t], [], [])
                if not r:
                    return
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    (u if s is t else t).sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.live.discard(t)
            t.close()
            u.close()

    def close(self):
        self.sock.close()


RELAY = None
BROKER = None


def setup_module():
    global S, CERTS, RELAY, BROKER
    CERTS = os.path.join(h.log_dir(), "proxy-tls-certs")
    os.makedirs(CERTS, exist_ok=True)
    make_certs()
    S = h.Stack("proxytls", broker=False)
    RELAY = TlsRelay(S.sim.port)
    S.broker = BROKER = S.new_broker("broker", BROKER_THREADS="1", BROKER_PROXY_TIMEOUT_MS="3000",
                                     STRIPE_API_URL=f"https://localhost:{RELAY.port}",
                                     SSL_CERT_FILE=os.path.join(CERTS, "ca.pem"))


def teardown_module():
    if RELAY:
        RELAY.close()
    if S:
        S.close()


def setup_function():
    S.reset()
    RELAY.use("localhost")


def org_with_key():
    org = h.new_org()
    h.Flow(BROKER, S.sim, org, "test").run()
    return org, BROKER.create_api_key(org)["api_key"]


def create_customer(org, key):
    return h.http_request("POST", BROKER.url(f"/v1/orgs/{org}/stripe/test/v1/customers"),
                          headers={"Authorization": f"Bearer {key}",
                                   "Content-Type": "application/x-www-form-urlencoded"},
                          body=urllib.parse.urlencode({"email": "tls@example.com"}))


def test_proxy_calls_stripe_over_verified_tls_and_keeps_the_connection():
    org, key = org_with_key()
    before = RELAY.handshakes
    for _ in range(3):
        r = create_customer(org, key)
        h.assert_status(r, 200)
        assert r.json()["object"] == "customer", r.describe()
    assert len([x for x in S.sim.requests() if x["method"] == "POST"]) == 3
    assert RELAY.handshakes == before + 1, f"{RELAY.handshakes - before} TLS handshakes for 3 calls"


def _refused_with(cert):
    org, key = org_with_key()
    RELAY.use(cert)
    r = h.http_request("POST", BROKER.url(f"/v1/orgs/{org}/stripe/test/v1/customers"),
                       headers={"Authorization": f"Bearer {key}"}, body="email=x%40example.com")
    j = h.assert_error(r, 502, "stripe_unavailable")
    assert j["error"].get("type") == "api_error", r.describe()
    assert S.sim.requests() == [], "a request went out on a connection whose certificate was refused"


def test_proxy_refuses_a_certificate_for_another_name():
    _refused_with("other")


def test_proxy_refuses_a_certificate_of_an_untrusted_ca():
    _refused_with("rogue")
