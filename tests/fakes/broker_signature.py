#!/usr/bin/env python3
"""broker_signature.py — verify the Broker-Signature of an event the broker sent out
(CONTRACT §4.5): the header is "t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" under
BROKER_EVENTS_SECRET>", the scheme Stripe uses for its webhooks. A receiver should also
refuse an old t (replay) and de-duplicate on the event's "id".

    verify(header, body: bytes, secret: str, tolerance_s=300, now=None) -> (ok, reason)

As a command: broker_signature.py SECRET HEADER < body  (exit 0 when valid)."""

import hashlib
import hmac
import sys
import time


def verify(header, body, secret, tolerance_s=300, now=None):
    if not header:
        return False, "no Broker-Signature header"
    t, sigs = None, []
    for part in header.split(","):
        k, _, v = part.strip().partition("=")
        if k == "t" and v.isdigit():
            t = int(v)
        elif k == "v1":
            sigs.append(v)
    if t is None or not sigs:
        return False, "malformed header"
    now = time.time() if now is None else now
    if abs(now - t) > tolerance_s:
        return False, "timestamp outside the tolerance"
    want = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    if any(hmac.compare_digest(want, s) for s in sigs):
        return True, "ok"
    return False, "no matching v1 signature"


if __name__ == "__main__":
    ok, why = verify(sys.argv[2], sys.stdin.buffer.read(), sys.argv[1])
    print(why)
    sys.exit(0 if ok else 1)
