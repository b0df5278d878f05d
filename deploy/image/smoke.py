#!/usr/bin/env python3
"""smoke.py: run the built container image and check that it works, without a Docker engine.

What it checks, in the image named by $IMAGE (default localhost/stripe-token-broker:<version>):
  - the image's config: numeric non-root user, exec-form entrypoint with `serve` as the command,
    BROKER_LISTEN=0.0.0.0:8080, port 8080 exposed, OCI labels source and version;
  - inside the image: no shell, runs as uid 65532, `--version`, `check` against a real Redis
    (exit 0) and against a closed port (exit 1, bounded);
  - `serve` inside the image (buildah run, chroot isolation, host network), secrets read from
    files through the *_FILE variables the way Kubernetes mounts them: /healthz, /readyz, one
    getAccessToken after a real setup flow through the Stripe simulator, then SIGTERM → exit 0
    within 10 s;
  - `serve` again from the image's root filesystem mounted read-only (buildah mount + a
    read-only bind in a private mount namespace + chroot as 65532:65532): /healthz, /readyz,
    getAccessToken, SIGTERM → exit 0. That is the readOnlyRootFilesystem of deploy/k8s.
Redis and the simulator run on the host, on free loopback ports, started by the integration
tests' harness (tests/it/harness.py, "Start-up"). Prints one line per check and
ends with "image: N passed, M failed"; exit status 1 when anything failed. Needs root, podman,
buildah, redis-server and python3. Every wait is bounded; a run takes a few seconds.
"""
import base64
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "it"))
import harness as h  # noqa: E402  Redis and the simulator start as in the integration tests
PODMAN = os.environ.get("PODMAN", "podman")
BUILDAH = os.environ.get("BUILDAH", "buildah")
PYTHON = sys.executable or "python3"
BIN_IN_IMAGE = "/usr/local/bin/stripe-token-broker"
SECRETS_IN_IMAGE = "/run/secrets/stripe-token-broker"
RUNTIME_UID = 65532
DRAIN_LIMIT_S = 10
ORG15 = "00D5e000000Smk1"


def makefile_version():
    with open(os.path.join(ROOT, "Makefile")) as f:
        for line in f:
            m = re.match(r"^VERSION\s*:?=\s*(\S+)", line)
            if m:
                return m.group(1)
    return "dev"


VERSION = os.environ.get("VERSION") or makefile_version()
IMAGE = os.environ.get("IMAGE") or f"localhost/stripe-token-broker:{VERSION}"

# ===== small helpers =====

RESULTS = {"passed": 0, "failed": 0}


def check(name, ok, detail=""):
    """Record one check: one line, PASS or FAIL with what was seen."""
    RESULTS["passed" if ok else "failed"] += 1
    print(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""),
          flush=True)
    return ok


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(cond, timeout_s, interval_s=0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if cond():
                return True
        except OSError:
            pass
        time.sleep(interval_s)
    return False


def run(cmd, timeout_s=60, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, **kw)


def http_req(method, url, headers=None, body=None, timeout_s=5):
    """One request on a new connection, never following redirects → (status, headers, body)."""
    u = urllib.parse.urlsplit(url)
    path = (u.path or "/") + ("?" + u.query if u.query else "")
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        conn.close()


def header(headers, name):
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return None


def cookies_from(headers, jar):
    for k, v in headers:
        if k.lower() == "set-cookie":
            name, _, rest = v.partition("=")
            jar[name.strip()] = rest.split(";", 1)[0]


def cookie_header(jar):
    return "; ".join(f"{k}={v}" for k, v in jar.items())


def descendant_named(pid, name):
    """The pid of the first descendant of pid whose comm starts with name, or None."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        comm = st[st.index("(") + 1:st.rindex(")")]
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append((int(d), comm))
    todo = [pid]
    while todo:
        p = todo.pop()
        for c, comm in children.get(p, []):
            if comm.startswith(name):
                return c
            todo.append(c)
    return None


# ===== the environment: Redis, the simulator, secrets =====

class Env:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="stb-image-test.")
        os.chmod(self.tmp, 0o755)
        h.use_log_dir(self.tmp)
        self.redis = self.sim = None
        self.admin_token = secrets.token_urlsafe(30)
        self.enc_keys = "k1:" + base64.b64encode(secrets.token_bytes(32)).decode()

    def start_redis(self):
        """redis-server on the host (harness: ready when it answers PING). Returns True or
        the reason it did not start."""
        try:
            self.redis = h.start_redis("image")
        except AssertionError as e:
            return str(e)
        self.redis_port = self.redis.port
        return True

    def start_sim(self):
        """The Stripe simulator on the host (harness: ready when its control API answers)."""
        try:
            self.sim = h.start_sim("image", authorize="approve")
        except AssertionError as e:
            return str(e)
        self.sim_port = self.sim.port
        return True

    def write_secrets(self):
        """Secret files as a Kubernetes Secret volume presents them (readable by the pod's user)."""
        d = os.path.join(self.tmp, "secrets")
        os.mkdir(d, 0o755)
        for name, value in (("encryption-keys", self.enc_keys),
                            ("admin-token", self.admin_token),
                            ("stripe-secret-key-test", "sk_test_platform_sim")):
            with open(os.path.join(d, name), "w") as f:
                f.write(value + "\n")
            os.chmod(os.path.join(d, name), 0o444)
        self.secrets_dir = d

    def broker_env(self, port):
        return {
            "BROKER_LISTEN": f"127.0.0.1:{port}",
            "BROKER_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "BROKER_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "BROKER_THREADS": "2",
            "BROKER_ENCRYPTION_KEYS_FILE": f"{SECRETS_IN_IMAGE}/encryption-keys",
            "BROKER_ADMIN_TOKEN_FILE": f"{SECRETS_IN_IMAGE}/admin-token",
            "STRIPE_SECRET_KEY_TEST_FILE": f"{SECRETS_IN_IMAGE}/stripe-secret-key-test",
            "STRIPE_CLIENT_ID_TEST": "ca_test_sim",
            "STRIPE_CONNECT_URL": f"http://127.0.0.1:{self.sim_port}",
            "STRIPE_API_URL": f"http://127.0.0.1:{self.sim_port}",
            "STRIPE_MARKETPLACE_URL": f"http://127.0.0.1:{self.sim_port}",
        }

    def stop(self):
        for p in (self.sim, self.redis):
            if p is not None:
                p.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ===== a working container of the image =====

class Container:
    """`buildah from` the image; env set with `buildah config` (on this container only)."""

    def __init__(self, env_vars, secrets_dir):
        r = run([BUILDAH, "from", "--pull-never", "--name",
                 f"stb-image-test-{os.getpid()}-{secrets.token_hex(3)}", IMAGE])
        if r.returncode != 0:
            raise RuntimeError(f"buildah from: {r.stderr.strip()}")
        self.name = r.stdout.strip().splitlines()[-1]
        cfg = [BUILDAH, "config"]
        for k, v in env_vars.items():
            cfg += ["--env", f"{k}={v}"]
        r = run(cfg + [self.name])
        if r.returncode != 0:
            raise RuntimeError(f"buildah config: {r.stderr.strip()}")
        self.secrets_dir = secrets_dir
        self.mountpoint = None

    def argv(self, *cmd):
        return [BUILDAH, "run", "--isolation=chroot", "--network=host",
                "--mount", f"type=bind,src={self.secrets_dir},dst={SECRETS_IN_IMAGE},ro=true",
                self.name, "--"] + list(cmd)

    def run(self, *cmd, timeout_s=30):
        return run(self.argv(*cmd), timeout_s=timeout_s)

    def readonly_argv(self, env_vars, *cmd):
        """Run from the image's rootfs bound read-only, as 65532:65532, in a new mount ns."""
        if self.mountpoint is None:
            r = run([BUILDAH, "mount", self.name])
            if r.returncode != 0:
                raise RuntimeError(f"buildah mount: {r.stderr.strip()}")
            self.mountpoint = r.stdout.strip()
        mp = self.mountpoint
        # The secrets are bound first (onto a tmpfs, since /run is in the read-only root),
        # then the whole root is made read-only; only then chroot and drop to the user.
        script = (
            "set -e; "
            f"mount --bind {mp} {mp}; "
            f"mount -t tmpfs -o mode=0755,size=1m tmpfs {mp}/run; "
            f"mkdir -p {mp}{SECRETS_IN_IMAGE}; "
            f"mount --bind -o ro {self.secrets_dir} {mp}{SECRETS_IN_IMAGE}; "
            f"mount -o remount,bind,ro {mp}; "
            f"exec env -i {' '.join(f'{k}={v}' for k, v in env_vars.items())} "
            f"{shutil.which('chroot') or '/usr/sbin/chroot'} --userspec={RUNTIME_UID}:{RUNTIME_UID} {mp} " + " ".join(cmd))
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]

    def remove(self):
        if self.mountpoint:
            run([BUILDAH, "umount", self.name])
        run([BUILDAH, "rm", self.name])


# ===== the checks =====

def check_image_config():
    r = run([PODMAN, "image", "inspect", IMAGE])
    if not check("image exists", r.returncode == 0, r.stderr.strip()):
        return False
    cfg = json.loads(r.stdout)[0]["Config"]
    labels = cfg.get("Labels") or {}
    env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
    user = cfg.get("User", "")
    check("config: numeric non-root user", re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", user) is not None,
          repr(user))
    check("config: entrypoint is the binary (exec form)", cfg.get("Entrypoint") == [BIN_IN_IMAGE],
          repr(cfg.get("Entrypoint")))
    check("config: default command is serve", cfg.get("Cmd") == ["serve"], repr(cfg.get("Cmd")))
    check("config: BROKER_LISTEN=0.0.0.0:8080", env.get("BROKER_LISTEN") == "0.0.0.0:8080",
          repr(env.get("BROKER_LISTEN")))
    check("config: exposes 8080/tcp", "8080/tcp" in (cfg.get("ExposedPorts") or {}),
          repr(cfg.get("ExposedPorts")))
    check("config: OCI label source", bool(labels.get("org.opencontainers.image.source")),
          repr(labels))
    check("config: OCI label version", labels.get("org.opencontainers.image.version") == VERSION,
          repr(labels.get("org.opencontainers.image.version")))
    return True


def setup_connection(base, sim_base, admin, org):
    """The browser flow, by hand: authorize link → setup page → Stripe (simulator, approve) →
    callback. Returns None or what went wrong."""
    auth = {"Authorization": f"Bearer {admin}"}
    st, h, b = http_req("POST", f"{base}/v1/orgs/{org}/authorize-links",
                    {**auth, "Content-Type": "application/json"}, json.dumps({"mode": "test"}))
    if st != 201:
        return f"authorize-links: {st} {b[:200]!r}"
    link = urllib.parse.urlsplit(json.loads(b)["url"])
    jar = {}
    st, h, b = http_req("GET", f"{base}{link.path}?{link.query}")
    cookies_from(h, jar)
    if st != 303:
        return f"GET ticket link: {st} {b[:200]!r}"
    st, h, b = http_req("GET", f"{base}/setup", {"Cookie": cookie_header(jar)})
    cookies_from(h, jar)
    m = re.search(r'name="csrf"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf"', b.decode())
    if st != 200 or not m:
        return f"GET /setup: {st}, csrf {'found' if m else 'missing'}"
    csrf = m.group(1) or m.group(2)
    st, h, b = http_req("POST", f"{base}/setup/authorize",
                    {"Cookie": cookie_header(jar),
                     "Content-Type": "application/x-www-form-urlencoded"},
                    urllib.parse.urlencode({"csrf": csrf, "mode": "test"}))
    cookies_from(h, jar)
    loc = header(h, "Location") or ""
    if st != 303 or not loc.startswith(sim_base):
        return f"POST /setup/authorize: {st} Location {loc!r}"
    st, h, b = http_req("GET", loc)
    loc = header(h, "Location") or ""
    if st not in (302, 303) or "/oauth/callback?" not in loc:
        return f"simulator authorize: {st} Location {loc!r}"
    cb = urllib.parse.urlsplit(loc)
    st, h, b = http_req("GET", f"{base}{cb.path}?{cb.query}", {"Cookie": cookie_header(jar)})
    if st != 303:
        return f"oauth callback: {st} {b[:200]!r}"
    return None


def check_service(label, popen, env, port, connect):
    """/healthz, /readyz, getAccessToken (after the setup flow when connect), SIGTERM → 0."""
    base = f"http://127.0.0.1:{port}"

    def healthy():
        return http_req("GET", f"{base}/healthz", timeout_s=1)[0] == 200
    up = wait_until(lambda: popen.poll() is None and healthy(), 20)
    if not check(f"{label}: /healthz answers 200", up,
                 "exit status %s" % popen.poll() if popen.poll() is not None else "no answer"):
        return
    # readiness follows the Redis connection: await it (bounded), as a readiness probe does
    last = []

    def ready():
        last[:] = [http_req("GET", f"{base}/readyz", timeout_s=2)]
        return last[0][0] == 200
    ok = wait_until(ready, 5)
    st, _, b = last[0] if last else (None, None, b"")
    check(f"{label}: /readyz answers 200 with Redis up", ok, f"{st} {(b or b'')[:200]!r}")
    if connect:
        err = setup_connection(base, f"http://127.0.0.1:{env.sim_port}", env.admin_token, ORG15)
        check(f"{label}: setup flow through the simulator connects the org", err is None, err)
    st, _, b = http_req("GET", f"{base}/v1/orgs/{ORG15}/access-token?mode=test",
                    {"Authorization": f"Bearer {env.admin_token}"})
    body = {}
    try:
        body = json.loads(b)
    except ValueError:
        pass
    check(f"{label}: getAccessToken answers 200 with a token",
          st == 200 and body.get("token_type") == "bearer" and bool(body.get("access_token")),
          f"{st} {b[:200]!r}")
    broker = descendant_named(popen.pid, "stripe-token-br") or popen.pid
    t0 = time.monotonic()
    os.kill(broker, signal.SIGTERM)
    try:
        rc = popen.wait(DRAIN_LIMIT_S + 5)
    except subprocess.TimeoutExpired:
        popen.kill()
        rc = "still running"
    took = time.monotonic() - t0
    check(f"{label}: SIGTERM → exit 0 within {DRAIN_LIMIT_S} s", rc == 0 and took < DRAIN_LIMIT_S,
          f"exit {rc} after {took:.1f} s")


def main():
    for tool in (PODMAN, BUILDAH, "redis-server", "unshare", "chroot"):
        if shutil.which(tool) is None:
            print(f"image: {tool} is not installed")
            print("image: 0 passed, 1 failed")
            return 1
    print(f"testing {IMAGE}", flush=True)
    if not check_image_config():
        print(f"image: {RESULTS['passed']} passed, {RESULTS['failed']} failed")
        return 1
    env = Env()
    ctr = None
    procs = []
    try:
        r = env.start_redis()
        check("host: redis-server started", r is True, r)
        r = env.start_sim()
        check("host: Stripe simulator started", r is True, r)
        env.write_secrets()
        port = free_port()
        ctr = Container(env.broker_env(port), env.secrets_dir)

        r = ctr.run("/usr/bin/id", "-u")
        check(f"runs as uid {RUNTIME_UID}", r.stdout.strip() == str(RUNTIME_UID),
              r.stdout + r.stderr)
        r = ctr.run("/usr/bin/test", "-e", "/bin/sh")
        r2 = ctr.run("/usr/bin/test", "-e", "/usr/bin/bash")
        check("no shell in the image", r.returncode == 1 and r2.returncode == 1,
              f"test -e /bin/sh → {r.returncode}, /usr/bin/bash → {r2.returncode}")
        r = ctr.run(BIN_IN_IMAGE, "--version")
        check("--version", r.returncode == 0 and VERSION in r.stdout + r.stderr,
              f"exit {r.returncode}: {(r.stdout + r.stderr).strip()!r}")
        r = ctr.run(BIN_IN_IMAGE, "check")
        check("check against a real Redis exits 0 (secrets read through _FILE)",
              r.returncode == 0, f"exit {r.returncode}: {(r.stdout + r.stderr).strip()[:300]!r}")
        dead = Container({**env.broker_env(port),
                          "BROKER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
                         env.secrets_dir)
        try:
            t0 = time.monotonic()
            r = dead.run(BIN_IN_IMAGE, "check", timeout_s=30)
            check("check against a closed Redis port exits 1", r.returncode == 1
                  and time.monotonic() - t0 < 15, f"exit {r.returncode}")
        finally:
            dead.remove()

        log = open(os.path.join(env.tmp, "serve.log"), "w")
        p = subprocess.Popen(ctr.argv(BIN_IN_IMAGE, "serve"), stdout=log, stderr=log)
        procs.append(p)
        check_service("serve in the image", p, env, port, connect=True)

        port2 = free_port()
        r = run(ctr.readonly_argv(env.broker_env(port2), "/usr/bin/touch", "/tmp/probe"))
        check("read-only root: a write fails", r.returncode != 0 and "Read-only" in r.stderr,
              f"exit {r.returncode}: {r.stderr.strip()!r}")
        log2 = open(os.path.join(env.tmp, "serve-ro.log"), "w")
        p2 = subprocess.Popen(ctr.readonly_argv(env.broker_env(port2), BIN_IN_IMAGE, "serve"),
                              stdout=log2, stderr=log2)
        procs.append(p2)
        check_service("serve on a read-only root", p2, env, port2, connect=False)
        for name in ("serve.log", "serve-ro.log"):
            if RESULTS["failed"]:
                print(f"--- {name} (last lines)")
                with open(os.path.join(env.tmp, name)) as f:
                    print("".join(f.readlines()[-15:]))
    except Exception as e:  # an unexpected error is one failure, with its reason
        check("image test ran to the end", False, f"{type(e).__name__}: {e}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        if ctr is not None:
            ctr.remove()
        env.stop()
    print(f"image: {RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
