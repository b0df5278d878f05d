"""Admin API, bearer authentication, org ids and modes (CONTRACT §3, §4, §4.1)."""

import time

import harness as h

S = None
TEST_ONLY = None


def setup_module():
    global S
    S = h.Stack("admin")


def teardown_module():
    S.close()


def setup_function():
    S.reset()


def _test_only_broker():
    """A broker (on the same Redis) with only test-mode Stripe credentials."""
    global TEST_ONLY
    if TEST_ONLY is None or not TEST_ONLY.running():
        TEST_ONLY = S.new_broker("testonly", STRIPE_CLIENT_ID_LIVE=None, STRIPE_SECRET_KEY_LIVE=None)
    return TEST_ONLY


# ===== API keys =====

def test_create_api_key_is_201_with_key_id_api_key_org_id_created_at():
    org = h.new_org()
    r = S.broker.admin("POST", f"/v1/admin/orgs/{org}/api-keys")
    h.assert_status(r, 201)
    h.assert_json_headers(r)
    j = r.json()
    h.remember("api_key", j.get("api_key"))
    assert isinstance(j.get("key_id"), str) and j["key_id"], r.describe()
    assert isinstance(j.get("api_key"), str) and len(j["api_key"]) >= 20, r.describe()
    assert j.get("org_id") == org, f"org_id {j.get('org_id')!r} != {org}"
    h.assert_recent(j.get("created_at"))
    assert j["key_id"] not in j["api_key"] or len(j["api_key"]) > len(j["key_id"]) + 20


def test_create_api_key_normalises_15_char_org_id():
    org15 = h.new_org15()
    r = S.broker.admin("POST", f"/v1/admin/orgs/{org15}/api-keys")
    h.assert_status(r, 201)
    assert r.json().get("org_id") == h.org18(org15), r.describe()


def test_create_api_key_normalises_18_char_org_id_case():
    org = h.new_org()
    r = S.broker.admin("POST", f"/v1/admin/orgs/{org.lower()}/api-keys")
    h.assert_status(r, 201)
    assert r.json().get("org_id") == org, f"expected canonical {org}: {r.describe()}"


def test_api_keys_are_distinct():
    org = h.new_org()
    a = S.broker.create_api_key(org)
    b = S.broker.create_api_key(org)
    assert a["api_key"] != b["api_key"] and a["key_id"] != b["key_id"]


def test_list_api_keys_shows_key_id_and_created_at_but_never_api_key():
    org = h.new_org()
    a = S.broker.create_api_key(org)
    b = S.broker.create_api_key(org)
    r = S.broker.admin("GET", f"/v1/admin/orgs/{org}/api-keys")
    h.assert_status(r, 200)
    h.assert_json_headers(r)
    keys = r.json().get("api_keys")
    assert isinstance(keys, list) and len(keys) == 2, r.describe()
    assert {k.get("key_id") for k in keys} == {a["key_id"], b["key_id"]}, r.describe()
    for k in keys:
        h.parse_rfc3339(k.get("created_at"))
        assert "api_key" not in k, f"the list shows an api_key: {r.describe()}"
    assert a["api_key"] not in r.text and b["api_key"] not in r.text, "the list contains a key"


def test_list_api_keys_of_org_without_keys_is_empty():
    r = S.broker.admin("GET", f"/v1/admin/orgs/{h.new_org()}/api-keys")
    h.assert_status(r, 200)
    assert r.json() == {"api_keys": []}, r.describe()


def test_list_api_keys_shows_only_that_orgs_keys():
    org_a, org_b = h.new_org(), h.new_org()
    a = S.broker.create_api_key(org_a)
    S.broker.create_api_key(org_b)
    r = S.broker.admin("GET", f"/v1/admin/orgs/{org_a}/api-keys")
    assert [k["key_id"] for k in r.json()["api_keys"]] == [a["key_id"]], r.describe()


def test_delete_api_key_is_204_and_removes_it_from_the_list():
    org = h.new_org()
    a = S.broker.create_api_key(org)
    r = S.broker.admin("DELETE", f"/v1/admin/orgs/{org}/api-keys/{a['key_id']}")
    assert r.status == 204 and r.body == b"", f"expected an empty 204: {r.describe()}"
    r = S.broker.admin("GET", f"/v1/admin/orgs/{org}/api-keys")
    assert r.json() == {"api_keys": []}, r.describe()


def test_deleted_api_key_is_rejected_within_1s():
    org = h.new_org()
    a = S.broker.create_api_key(org)
    path = f"/v1/orgs/{org}/connections"
    h.assert_status(S.broker.request("GET", path, token=a["api_key"]), 200)
    r = S.broker.admin("DELETE", f"/v1/admin/orgs/{org}/api-keys/{a['key_id']}")
    h.assert_status(r, 204)
    t0 = time.monotonic()
    h.wait_until(lambda: S.broker.request("GET", path, token=a["api_key"]).status == 401, 1.2,
                 interval=0.05, what="the deleted key to be rejected")
    r = S.broker.request("GET", path, token=a["api_key"])
    h.assert_error(r, 401, "unauthorized")
    assert time.monotonic() - t0 < 2


def test_deleted_api_key_is_rejected_by_another_replica_within_1s():
    other = S.new_broker("replica")
    try:
        org = h.new_org()
        a = S.broker.create_api_key(org)
        path = f"/v1/orgs/{org}/connections"
        for _ in range(3):   # warm whatever the replica caches
            h.assert_status(other.request("GET", path, token=a["api_key"]), 200)
        h.assert_status(S.broker.admin("DELETE", f"/v1/admin/orgs/{org}/api-keys/{a['key_id']}"), 204)
        h.wait_until(lambda: other.request("GET", path, token=a["api_key"]).status == 401, 1.2,
                     interval=0.05, what="the other replica to reject the deleted key")
    finally:
        other.stop()


def test_deleting_one_key_keeps_the_others():
    org = h.new_org()
    a = S.broker.create_api_key(org)
    b = S.broker.create_api_key(org)
    path = f"/v1/orgs/{org}/connections"
    for k in (a, b):   # both in use (and in whatever the broker caches)
        h.assert_status(S.broker.request("GET", path, token=k["api_key"]), 200)
    h.assert_status(S.broker.admin("DELETE", f"/v1/admin/orgs/{org}/api-keys/{a['key_id']}"), 204)
    # once the deleted key is refused, a wrong revocation of the other would show too
    h.wait_until(lambda: S.broker.request("GET", path, token=a["api_key"]).status == 401, 1.2,
                 interval=0.02, what="the deleted key refused")
    h.assert_status(S.broker.request("GET", path, token=b["api_key"]), 200)
    listed = S.broker.admin("GET", f"/v1/admin/orgs/{org}/api-keys").json()
    assert [k["key_id"] for k in listed["api_keys"]] == [b["key_id"]], listed


def test_delete_unknown_api_key_is_404_not_found():
    org = h.new_org()
    r = S.broker.admin("DELETE", f"/v1/admin/orgs/{org}/api-keys/nosuchkey123")
    h.assert_error(r, 404, "not_found")


def test_delete_api_key_of_another_org_is_404_and_keeps_it():
    org_a, org_b = h.new_org(), h.new_org()
    a = S.broker.create_api_key(org_a)
    r = S.broker.admin("DELETE", f"/v1/admin/orgs/{org_b}/api-keys/{a['key_id']}")
    h.assert_error(r, 404, "not_found")
    r = S.broker.request("GET", f"/v1/orgs/{org_a}/connections", token=a["api_key"])
    h.assert_status(r, 200)


# ===== bearer authentication =====

def _assert_unauthorized(r):
    h.assert_error(r, 401, "unauthorized")
    www = r.header("WWW-Authenticate") or ""
    assert www.lower().startswith("bearer"), f"WWW-Authenticate is {www!r}: {r.describe()}"


def test_missing_bearer_is_401_with_www_authenticate():
    org = h.new_org()
    _assert_unauthorized(S.broker.request("GET", f"/v1/orgs/{org}/connections"))
    _assert_unauthorized(S.broker.request("GET", f"/v1/orgs/{org}/access-token?mode=test"))
    _assert_unauthorized(S.broker.request("GET", f"/v1/admin/orgs/{org}/api-keys"))


def test_malformed_authorization_is_401_with_www_authenticate():
    org = h.new_org()
    tok = S.broker.admin_token
    for value in ("Basic " + tok, "Bearer", "Bearer ", tok, "Bearer" + tok, "Token " + tok,
                  "Bearer " + tok + " extra", "Bearer " + tok[:-1], "Bearer " + tok + "x",
                  "Bearer \t"):
        r = S.broker.request("GET", f"/v1/orgs/{org}/connections",
                             headers={"Authorization": value})
        _assert_unauthorized(r)


def test_an_admin_token_off_by_one_character_is_401():
    """The whole admin token decides (tests/fault/test_abuse_limits checks that it is
    compared in constant time; this, that the comparison's result is used): a token of the
    right length differing in its first, a middle or its last character is refused."""
    org = h.new_org()
    tok = S.broker.admin_token
    for i in (0, len(tok) // 2, len(tok) - 1):
        bad = tok[:i] + ("A" if tok[i] != "A" else "B") + tok[i + 1:]
        _assert_unauthorized(S.broker.request("GET", f"/v1/admin/orgs/{org}/api-keys", token=bad))
        _assert_unauthorized(S.broker.request("GET", f"/v1/orgs/{org}/connections", token=bad))
    h.assert_status(S.broker.request("GET", f"/v1/admin/orgs/{org}/api-keys", token=tok), 200)


def test_unknown_bearer_is_401_with_www_authenticate():
    org = h.new_org()
    r = S.broker.request("GET", f"/v1/orgs/{org}/connections", token=h.rand_str(43))
    _assert_unauthorized(r)
    r = S.broker.request("POST", f"/v1/admin/orgs/{org}/api-keys", token=h.rand_str(43))
    _assert_unauthorized(r)


def test_org_key_for_another_org_is_403_forbidden():
    org_a, org_b = h.new_org(), h.new_org()
    a = S.broker.create_api_key(org_a)
    for path in (f"/v1/orgs/{org_b}/connections", f"/v1/orgs/{org_b}/access-token?mode=test",
                 f"/v1/orgs/{org_b}/webhook-secrets/test"):
        r = S.broker.request("GET", path, token=a["api_key"])
        h.assert_error(r, 403, "forbidden")


def test_access_token_judges_the_key_before_the_mode():
    """getAccessToken answers 401/403 for a bad key whatever the mode, as every route
    does; only a good key learns that its mode is wrong."""
    org_a, org_b = h.new_org(), h.new_org()
    a = S.broker.create_api_key(org_a)
    flip = "A" if a["api_key"][-1] != "A" else "B"
    for mode in ("bogus", "", "LIVE", "test&mode=live"):
        path_a = f"/v1/orgs/{org_a}/access-token?mode={mode}"
        _assert_unauthorized(S.broker.request("GET", path_a, token=a["api_key"][:-1] + flip))
        h.assert_error(S.broker.request("GET", f"/v1/orgs/{org_b}/access-token?mode={mode}",
                                        token=a["api_key"]), 403, "forbidden")
        h.assert_error(S.broker.request("GET", path_a, token=a["api_key"]), 400, "invalid_request")
    _assert_unauthorized(S.broker.request("GET", f"/v1/orgs/{org_a}/access-token", token=h.rand_str(43)))


def test_org_key_on_admin_route_is_403_forbidden():
    org = h.new_org()
    a = S.broker.create_api_key(org)
    r = S.broker.request("POST", f"/v1/admin/orgs/{org}/api-keys", token=a["api_key"])
    h.assert_error(r, 403, "forbidden")
    r = S.broker.request("GET", f"/v1/admin/orgs/{org}/api-keys", token=a["api_key"])
    h.assert_error(r, 403, "forbidden")
    r = S.broker.request("DELETE", f"/v1/admin/orgs/{org}/api-keys/{a['key_id']}", token=a["api_key"])
    h.assert_error(r, 403, "forbidden")
    r = S.broker.request("GET", f"/v1/orgs/{org}/connections", token=a["api_key"])
    h.assert_status(r, 200)


def test_org_key_works_on_its_org_routes():
    org = h.new_org()
    a = S.broker.create_api_key(org)
    r = S.broker.request("GET", f"/v1/orgs/{org}/connections", token=a["api_key"])
    h.assert_status(r, 200)
    assert r.json() == {"connections": []}, r.describe()


def test_admin_token_works_on_org_routes():
    org = h.new_org()
    r = S.broker.admin("GET", f"/v1/orgs/{org}/connections")
    h.assert_status(r, 200)
    r = S.broker.admin("GET", f"/v1/orgs/{org}/webhook-secrets/test")
    h.assert_status(r, 200)
    r = S.broker.admin("POST", f"/v1/orgs/{org}/authorize-links", json_body={"mode": "test"})
    h.assert_status(r, 201)
    r = S.broker.admin("GET", f"/v1/orgs/{org}/access-token?mode=test")
    h.assert_error(r, 404, "not_connected")


# ===== org ids =====

def _bad_org_ids():
    org15 = h.new_org15()
    org = h.org18(org15)
    # 18-char ids are case-insensitive, so a checksum is wrong only when it marks a
    # digit as upper case, or when a suffix character is outside A-Z0-5. The first
    # chunk starts with "00": bit 0 marks a digit.
    table = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
    wrong = org[:15] + table[table.index(org[15]) | 1] + org[16:]
    digit_flagged = org15[:3] + org15[3:].lower() + table[table.index(org[15]) | 1] + "AA"
    return [
        ("wrong checksum", wrong),
        ("wrong checksum case-folded", wrong.lower()),
        ("checksum flags a digit", digit_flagged),
        ("suffix char outside the alphabet", org[:17] + "9"),
        ("suffix char outside the alphabet lower", org[:15].lower() + "a9a"),
        ("15 chars with 18-char suffix cut", org[:16]),
        ("bad prefix", "00E" + org15[3:]),
        ("bad prefix 18", h.org18("001" + org15[3:])),
        ("14 chars", org15[:14]),
        ("16 chars", org15 + "A"),
        ("17 chars", org[:17]),
        ("19 chars", org + "A"),
        ("empty-ish", "00D"),
        ("non-alnum", "00D" + org15[3:14] + "-"),
        ("underscore", "00D" + org15[3:14] + "_"),
        ("percent-encoded slash", "00D" + org15[3:14] + "%2F"),
        ("percent-encoded NUL", org15 + "%00"),
        ("percent-encoded space", org15 + "%20"),
        ("percent-encoded dot-dot", "%2E%2E"),
        ("double-encoded", "%2530%2530D" + org15[3:]),
        ("invalid percent escape", "00D" + org15[3:13] + "%zz"),
        ("trailing percent", org15 + "%"),
        ("non-ascii", "00D" + org15[3:14] + "%C3%A9"),
        ("percent-encoded checksum tamper", org[:15] + "%" + format(ord(wrong[15]), "02X") + org[16:]),
    ]


# A decoded "/" or ".." changes the path's shape; a router may then call it not found.
ROUTING_AMBIGUOUS = {"percent-encoded slash", "percent-encoded dot-dot"}


def test_bad_org_ids_are_400_invalid_request():
    for label, bad in _bad_org_ids():
        for method, path in (("GET", f"/v1/orgs/{bad}/connections"),
                             ("GET", f"/v1/orgs/{bad}/access-token?mode=test"),
                             ("POST", f"/v1/admin/orgs/{bad}/api-keys")):
            r = S.broker.admin(method, path)
            if label in ROUTING_AMBIGUOUS and r.status == 404:
                # decoded before routing, the path has another shape: not found is fine
                h.assert_error(r, 404, "not_found")
                continue
            assert r.status == 400, f"{label} ({bad!r}): {r.describe()}"
            h.assert_error(r, 400, "invalid_request")


def test_percent_encoded_valid_org_id_names_the_same_org():
    org = h.new_org()
    a = S.broker.create_api_key(org)
    enc = "".join("%%%02X" % ord(c) for c in org)
    r = S.broker.request("GET", f"/v1/orgs/{enc}/connections", token=a["api_key"])
    assert r.status == 200, f"the percent-encoded org id is not the same org: {r.describe()}"


def test_15_and_18_char_forms_name_the_same_org():
    org15 = h.new_org15()
    org = h.org18(org15)
    a = S.broker.create_api_key(org15)
    for form in (org15, org, org.lower(), org.upper()):
        r = S.broker.request("GET", f"/v1/orgs/{form}/connections", token=a["api_key"])
        assert r.status == 200, f"key of {org15} refused on {form}: {r.describe()}"
    b = S.broker.create_api_key(org.lower())
    r = S.broker.request("GET", f"/v1/orgs/{org15}/connections", token=b["api_key"])
    h.assert_status(r, 200)
    r = S.broker.admin("GET", f"/v1/admin/orgs/{org.upper()}/api-keys")
    assert {k["key_id"] for k in r.json()["api_keys"]} == {a["key_id"], b["key_id"]}, r.describe()


def test_15_char_org_ids_are_case_sensitive():
    org15 = h.new_org15()
    other15 = org15[:3] + org15[3:].swapcase()
    a = S.broker.create_api_key(org15)
    r = S.broker.request("GET", f"/v1/orgs/{other15}/connections", token=a["api_key"])
    h.assert_error(r, 403, "forbidden")


# ===== modes =====

def test_unknown_mode_is_400_invalid_request():
    org = h.new_org()
    for mode in ("foo", "TEST", "Live", "", "test%00", "test,live"):
        r = S.broker.admin("GET", f"/v1/orgs/{org}/access-token?mode={mode}")
        assert r.status == 400, f"mode={mode!r}: {r.describe()}"
        h.assert_error(r, 400, "invalid_request")


def test_missing_mode_is_400_invalid_request():
    org = h.new_org()
    r = S.broker.admin("GET", f"/v1/orgs/{org}/access-token")
    h.assert_error(r, 400, "invalid_request")


def test_unknown_mode_in_path_is_400_invalid_request():
    org = h.new_org()
    r = S.broker.admin("GET", f"/v1/orgs/{org}/webhook-secrets/foo")
    h.assert_error(r, 400, "invalid_request")
    r = S.broker.admin("DELETE", f"/v1/orgs/{org}/connections/foo")
    h.assert_error(r, 400, "invalid_request")


def test_mode_without_credentials_is_400_mode_not_enabled():
    b = _test_only_broker()
    org = h.new_org()
    r = b.admin("GET", f"/v1/orgs/{org}/access-token?mode=live")
    h.assert_error(r, 400, "mode_not_enabled")
    r = b.admin("POST", f"/v1/orgs/{org}/authorize-links", json_body={"mode": "live"})
    h.assert_error(r, 400, "mode_not_enabled")
    r = b.admin("GET", f"/v1/orgs/{org}/access-token?mode=test")
    h.assert_error(r, 404, "not_connected")


def test_every_route_with_a_disabled_mode_is_400_mode_not_enabled():
    b = _test_only_broker()
    org = h.new_org()
    for method, path, body in (
            ("POST", f"/v1/orgs/{org}/access-token/rotate?mode=live", None),
            ("GET", f"/v1/orgs/{org}/webhook-secrets/live", None),
            ("PUT", f"/v1/orgs/{org}/webhook-secrets/live", {"signing_secret": "whsec_" + h.rand_str(32)}),
            ("DELETE", f"/v1/orgs/{org}/connections/live", None)):
        r = b.admin(method, path, json_body=body)
        assert r.status == 400, f"{method} {path}: {r.describe()}"
        h.assert_error(r, 400, "mode_not_enabled")


def test_setup_form_cannot_switch_to_a_disabled_mode():
    b = _test_only_broker()
    f = h.Flow(b, S.sim, h.new_org(), "test")
    f.open()
    f.setup_page()
    r = f.authorize(mode="live")
    assert 400 <= r.status < 500, r.describe()
    assert "oauth/authorize" not in (r.header("Location") or ""), r.describe()


def test_enabled_mode_works_on_a_single_mode_broker():
    b = _test_only_broker()
    org = h.new_org()
    r = b.admin("POST", f"/v1/orgs/{org}/authorize-links", json_body={"mode": "test"})
    h.assert_status(r, 201)


def test_api_key_with_a_wrong_secret_part_is_401():
    org = h.new_org()
    key = S.broker.create_api_key(org)["api_key"]
    flip = "A" if key[-1] != "A" else "B"
    for bad in (key[:-1] + flip, key[:-1], key + "A", key[: len(key) // 2], key.upper(), key.lower()):
        if bad == key:
            continue
        r = S.broker.request("GET", f"/v1/orgs/{org}/connections", token=bad)
        assert r.status == 401, f"a mangled key was accepted ({bad!r}): {r.describe()}"
        h.assert_error(r, 401, "unauthorized")
