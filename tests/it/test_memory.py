"""No secret left in the broker's memory after it served it (CONTRACT §8; the rule
"wipe secrets from memory when done").

A replica that never talks to Stripe answers getAccessToken from the sealed record in
Redis, with its read cache off (BROKER_CACHE_BUSY_RPS=0: every request reads Redis and
nothing is kept). Once the answer is sent, the process's writable memory (heap, thread
stacks, anonymous mappings; read through /proc/<pid>/mem, which a parent may read) must
hold neither the access token nor the refresh token: every copy made on the way (the
decrypted record, jansson's parse, the answer being built, the answer handed to the
HTTP layer) was wiped before it was freed.
"""

import re

import harness as h

S = None


def setup_module():
    global S
    S = h.Stack("memory")


def teardown_module():
    S.close()


def setup_function():
    S.reset()


MAPPING_MAX = 1 << 30   # larger: a sanitizer's shadow memory, not the heap
CHUNK = 16 << 20


def count_in_memory(pid, needle):
    """How many times needle occurs in the private writable mappings of the process."""
    found = 0
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) rw.p \S+ \S+ \S+\s*(\S*)", line)
            if not m or m.group(3) in ("[vvar]", "[vsyscall]"):
                continue
            start, end = int(m.group(1), 16), int(m.group(2), 16)
            if end - start > MAPPING_MAX:
                continue
            tail = b""
            for at in range(start, end, CHUNK):
                try:
                    mem.seek(at)
                    data = tail + mem.read(min(CHUNK, end - at))
                except OSError:
                    break
                found += data.count(needle)
                tail = data[-(len(needle) - 1):]   # a match across chunks is counted once
    return found


def test_served_token_is_not_left_in_memory():
    f = h.Flow(S.broker, S.sim, h.new_org(), "test").run()
    reader = S.new_broker("reader", BROKER_CACHE_BUSY_RPS="0", BROKER_THREADS="1")
    try:
        r = reader.access_token(f.org, "test")
        h.assert_status(r, 200)
        token = r.json()["access_token"]
        assert len(token) >= 40, token[:8]
        # its last 24 characters: a copy whose first bytes were reused is still found
        token = token[-24:].encode()
        # the same answer again, so that a copy kept by the first request would have
        # had a chance to be reused rather than left alone
        h.assert_status(reader.access_token(f.org, "test"), 200)
        # wait until the answer was handed over entirely (the log line follows it)
        h.wait_until(lambda: sum("access-token" in l or "token" in l for l in reader.log_lines()) >= 2, 5,
                     what="the request log lines")
        found = count_in_memory(reader.proc.pid, token)
        assert found == 0, f"the access token is still in {found} place(s) of the broker's memory"
        # the scan itself: a value the broker does keep (its admin token) is found
        assert count_in_memory(reader.proc.pid, reader.admin_token.encode()) > 0, \
            "the memory scan finds nothing at all"
    finally:
        reader.stop()


def test_stored_signing_secret_is_not_left_in_memory():
    org = h.new_org()
    b = S.new_broker("whsec", BROKER_CACHE_BUSY_RPS="0", BROKER_THREADS="1")
    try:
        secret = "whsec_" + h.rand_str(40)
        h.remember("webhook_secret", secret)
        r = b.admin("PUT", f"/v1/orgs/{org}/webhook-secrets/test", json_body={"signing_secret": secret})
        h.assert_status(r, 204)
        # the last request: nothing after it reuses the memory it used
        h.wait_until(lambda: any("webhook-secrets" in l for l in b.log_lines()), 5,
                     what="the request log line")
        # the request's copies are wiped when h2o clears its pool, after the connection
        # closed, which may come a loop turn after the answer: awaited, bounded at 2 s
        left = [None]

        def wiped():
            left[0] = count_in_memory(b.proc.pid, secret[-24:].encode())
            return left[0] == 0
        try:
            h.wait_until(wiped, 2, interval=0.1, what="the signing secret wiped")
        except AssertionError:
            raise AssertionError(f"the signing secret is still in {left[0]} place(s) of the broker's memory") from None
    finally:
        b.stop()
