#!/usr/bin/env python3
"""check_openapi.py: check proto/openapi.yaml against CONTRACT §4 and the limits of Salesforce
External Services (no enum, no number type, no 64-bit integer, Apex operationIds, JSON only,
a schema on every 2xx but 204). Python 3 standard library only.

    python3 tests/it/check_openapi.py [path/to/openapi.yaml] [-v]

Prints every failed check (and, with -v, every passed one), then "openapi: N passed, M failed";
exits 1 when a check failed. The YAML is read with the same loader the integration tests use
(openapi_schema.py), so the file must stay inside its strict YAML subset.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import openapi_schema as oas  # noqa: E402

# (method, path, operationId, statuses the operation must document) — CONTRACT §4 and §7.
ORG_AUTH = {"400", "401", "403", "429", "503"}
ADMIN_AUTH = {"400", "401", "403", "429", "503"}
REQUIRED = [
    ("GET", "/v1/orgs/{org_id}/access-token", "getAccessToken",
     {"200", "404", "409", "500", "502"} | ORG_AUTH),
    ("POST", "/v1/orgs/{org_id}/access-token/rotate", "rotateAccessToken",
     {"200", "404", "409", "500", "502"} | ORG_AUTH),
    ("GET", "/v1/orgs/{org_id}/connections", "listConnections", {"200", "500"} | ORG_AUTH),
    ("DELETE", "/v1/orgs/{org_id}/connections/{mode}", "deleteConnection",
     {"204", "404", "500", "502"} | ORG_AUTH),
    ("POST", "/v1/orgs/{org_id}/authorize-links", "createAuthorizeLink",
     {"201", "413"} | ORG_AUTH),
    ("PUT", "/v1/orgs/{org_id}/webhook-secrets/{mode}", "putWebhookSecret",
     {"204", "413"} | ORG_AUTH),
    ("GET", "/v1/orgs/{org_id}/webhook-secrets/{mode}", "getWebhookSecret", {"200"} | ORG_AUTH),
    ("DELETE", "/v1/orgs/{org_id}/webhook-secrets/{mode}", "deleteWebhookSecret",
     {"204"} | ORG_AUTH),
    ("POST", "/v1/orgs/{org_id}/webhook-events/verify", "verifyWebhookEvent",
     {"200", "413"} | ORG_AUTH),
    ("POST", "/v1/admin/orgs/{org_id}/api-keys", "createApiKey", {"201"} | ADMIN_AUTH),
    ("GET", "/v1/admin/orgs/{org_id}/api-keys", "listApiKeys", {"200"} | ADMIN_AUTH),
    ("DELETE", "/v1/admin/orgs/{org_id}/api-keys/{key_id}", "deleteApiKey",
     {"204", "404"} | ADMIN_AUTH),
    ("GET", "/v1/orgs/{org_id}/audit-events", "listAuditEvents", {"200"} | ORG_AUTH),
    ("GET", "/v1/admin/orgs", "listOrgs", {"200"} | ADMIN_AUTH),
    ("GET", "/healthz", ("getHealth", "healthz"), {"200"}),
    ("GET", "/readyz", "getReady", {"200", "503"}),
]
# Not for Flows: browser pages, Stripe's redirect, Prometheus text. Present only if clearly marked.
BROWSER_PATHS = ("/setup", "/oauth")
SERVER_URL = "https://stripe-broker.example.com"
APEX_ID = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|_(?!_))*$")
APEX_RESERVED = {
    "abstract", "activate", "and", "any", "array", "as", "asc", "autonomous", "begin", "bigdecimal",
    "blob", "boolean", "break", "bulk", "by", "byte", "case", "cast", "catch", "char", "class",
    "collect", "commit", "const", "continue", "currency", "date", "datetime", "decimal", "default",
    "delete", "desc", "do", "double", "else", "end", "enum", "exception", "exit", "export",
    "extends", "false", "final", "finally", "float", "for", "from", "global", "goto", "group",
    "having", "hint", "if", "implements", "import", "in", "inner", "insert", "instanceof", "int",
    "integer", "interface", "into", "join", "like", "limit", "list", "long", "loop", "map",
    "merge", "new", "not", "null", "nulls", "number", "object", "of", "on", "or", "outer",
    "override", "package", "parallel", "pragma", "private", "protected", "public", "retrieve",
    "return", "rollback", "select", "set", "short", "sobject", "sort", "static", "string",
    "super", "switch", "synchronized", "system", "testmethod", "then", "this", "throw", "time",
    "transaction", "trigger", "true", "try", "undelete", "update", "upsert", "using", "virtual",
    "void", "webservice", "when", "where", "while"}
# Schema keywords the validator understands; anything else would be silently ignored by it.
SCHEMA_KEYS = {"type", "format", "description", "properties", "required", "items",
               "additionalProperties", "pattern", "minLength", "maxLength", "minItems",
               "maxItems", "minimum", "maximum", "example", "title", "$ref", "nullable",
               "readOnly", "writeOnly", "default"}
DESC_MAX = 1333  # External Services keeps only the first 1,333 characters of a description


class Checks:
    def __init__(self, verbose):
        self.passed = 0
        self.failed = 0
        self.verbose = verbose

    def __call__(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            if self.verbose:
                print("ok    " + name)
        else:
            self.failed += 1
            print("FAIL  " + name + (": " + detail if detail else ""))
        return ok


def walk(node, path="$"):
    """Yield (json path, key, value) for every mapping entry in the document."""
    if isinstance(node, dict):
        for k, v in node.items():
            p = "%s.%s" % (path, k)
            yield p, k, v
            yield from walk(v, p)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, "%s[%d]" % (path, i))


def schemas_in(node, path="$"):
    """Yield (json path, schema) for every schema object (components, media, parameters, nested)."""
    if isinstance(node, dict):
        for k, v in node.items():
            p = "%s.%s" % (path, k)
            if k == "schema" and isinstance(v, dict):
                yield from schema_tree(v, p)
            elif k == "schemas" and isinstance(v, dict) and path.endswith(".components"):
                for name, s in v.items():
                    yield from schema_tree(s, "%s.%s" % (p, name))
            else:
                yield from schemas_in(v, p)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from schemas_in(v, "%s[%d]" % (path, i))


def schema_tree(s, path):
    yield path, s
    if not isinstance(s, dict):
        return
    for k, v in (s.get("properties") or {}).items():
        yield from schema_tree(v, "%s.properties.%s" % (path, k))
    if isinstance(s.get("items"), dict):
        yield from schema_tree(s["items"], path + ".items")
    if isinstance(s.get("additionalProperties"), dict):
        yield from schema_tree(s["additionalProperties"], path + ".additionalProperties")


def main(argv):
    verbose = "-v" in argv
    args = [a for a in argv if a != "-v"]
    path = args[0] if args else oas.SPEC_PATH
    c = Checks(verbose)

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        c("read " + path, False, str(e))
        return finish(c)
    try:
        text = raw.decode("utf-8")
        c("file is UTF-8", True)
    except UnicodeDecodeError as e:
        c("file is UTF-8", False, str(e))
        return finish(c)
    c("no tab characters", "\t" not in text)
    c("no carriage returns", "\r" not in text)
    try:
        spec = oas.load_spec(path)
        c("parses as YAML (strict subset)", isinstance(spec, dict), "root is not a mapping")
    except oas.YamlError as e:
        c("parses as YAML (strict subset)", False, str(e))
        return finish(c)
    if not isinstance(spec, dict):
        return finish(c)

    # ---- document ------------------------------------------------------------------------
    ver = spec.get("openapi")
    c("openapi is 3.0.x", isinstance(ver, str) and re.match(r"^3\.0\.\d+$", ver) is not None,
      repr(ver))
    info = spec.get("info") or {}
    c("info.title and info.version", bool(info.get("title")) and isinstance(info.get("version"), str))
    servers = spec.get("servers") or []
    c("server url is the placeholder " + SERVER_URL,
      len(servers) == 1 and servers[0].get("url") == SERVER_URL, repr(servers))
    comps = spec.get("components") or {}
    bearer = [n for n, s in (comps.get("securitySchemes") or {}).items()
              if s.get("type") == "http" and str(s.get("scheme", "")).lower() == "bearer"]
    c("a bearer security scheme is defined", bool(bearer))
    glob_sec = spec.get("security") or []
    c("the bearer scheme is the default security",
      any(set(r) == {bearer[0]} for r in glob_sec) if bearer else False, repr(glob_sec))
    c("Error schema is {error: {code, message}}", error_schema_ok(spec))

    # ---- Salesforce External Services limits, anywhere in the file ----------------------
    bad = [p for p, k, v in walk(spec) if k == "enum"]
    c("no enum", not bad, ", ".join(bad[:5]))
    schemas = list(schemas_in(spec))
    bad = [p for p, s in schemas if isinstance(s, dict) and s.get("type") == "number"]
    c("no type: number", not bad, ", ".join(bad[:5]))
    bad = [p for p, k, v in walk(spec)
           if k == "format" and str(v).lower() in ("int64", "float", "double")]
    c("no format int64/float/double", not bad, ", ".join(bad[:5]))
    bad = [p for p, s in schemas if isinstance(s, dict) and s.get("type") == "integer"
           and s.get("format") != "int32"]
    c("every integer is format int32", not bad, ", ".join(bad[:5]))
    bad = [p for p, k, v in walk(spec) if k in ("oneOf", "anyOf", "allOf", "not", "discriminator")]
    c("no composition keywords (oneOf/anyOf/allOf/not)", not bad, ", ".join(bad[:5]))
    bad = [p for p, s in schemas if isinstance(s, dict) and "$ref" not in s and "type" not in s]
    c("every schema has a type or a $ref", not bad, ", ".join(bad[:5]))
    bad = [p for p, s in schemas if isinstance(s, dict) and "$ref" in s and len(s) > 1]
    c("no siblings next to $ref", not bad, ", ".join(bad[:5]))
    bad = [p for p, s in schemas if isinstance(s, dict) and s.get("type") == "object"
           and not s.get("properties")]
    c("every object schema has properties", not bad, ", ".join(bad[:5]))
    bad = [p for p, s in schemas if isinstance(s, dict) and s.get("type") == "array"
           and not isinstance(s.get("items"), dict)]
    c("every array has one items schema (no mixed lists)", not bad, ", ".join(bad[:5]))
    bad = [p for p, s in schemas if isinstance(s, dict) and s.get("type") == "array"
           and isinstance(s.get("items"), dict) and s["items"].get("type") == "array"]
    c("no nested anonymous arrays", not bad, ", ".join(bad[:5]))
    bad = ["%s.%s" % (p, k) for p, s in schemas if isinstance(s, dict)
           for k in s if k not in SCHEMA_KEYS]
    c("schemas use only keywords the validator knows", not bad, ", ".join(bad[:5]))
    bad = []
    for p, s in schemas:
        if isinstance(s, dict) and isinstance(s.get("required"), list):
            missing = [r for r in s["required"] if r not in (s.get("properties") or {})]
            if missing:
                bad.append("%s: %s" % (p, missing))
    c("every required property is defined", not bad, "; ".join(bad[:5]))
    bad = []
    for p, s in schemas:
        if isinstance(s, dict) and "pattern" in s:
            try:
                re.compile(s["pattern"])
            except re.error as e:
                bad.append("%s: %s" % (p, e))
    c("every pattern compiles", not bad, "; ".join(bad[:5]))
    bad = [p for p, k, v in walk(spec) if k == "description" and isinstance(v, str)
           and len(v) > DESC_MAX]
    c("descriptions fit in %d characters" % DESC_MAX, not bad, ", ".join(bad[:5]))
    bad = []
    for p, k, v in walk(spec):
        if k == "$ref":
            try:
                oas.resolve_ref(spec, v)
                if not v.startswith("#/components/"):
                    bad.append("%s -> %s (not under #/components/)" % (p, v))
            except KeyError as e:
                bad.append("%s: %s" % (p, e))
    c("every $ref resolves", not bad, "; ".join(bad[:5]))
    # examples must match their schema (they show up in Salesforce's registration preview)
    bad = []
    for p, s in schemas:
        if isinstance(s, dict) and "example" in s:
            errs = oas.check_value(s["example"], {k: v for k, v in s.items() if k != "example"},
                                   spec, p + ".example")
            bad.extend(errs)
    c("every example matches its schema", not bad, "; ".join(bad[:5]))

    # ---- operations ------------------------------------------------------------------------
    ops = oas.operations(spec)
    ids = [op.get("operationId") for _, _, op in ops]
    c("every operation has an operationId", all(ids),
      ", ".join("%s %s" % (m, p) for m, p, op in ops if not op.get("operationId")))
    dup = sorted({i for i in ids if i and ids.count(i) > 1})
    c("operationIds are unique", not dup, ", ".join(dup))
    bad = [i for i in ids if i and (not APEX_ID.match(i) or i.endswith("_")
                                    or i.lower() in APEX_RESERVED)]
    c("operationIds are valid Apex identifiers", not bad, ", ".join(map(str, bad)))
    bad = [i for i in ids if i and len(i) > 80]
    c("operationIds are at most 80 characters", not bad, ", ".join(bad))

    by_mp = {(m, p): op for m, p, op in ops}
    for method, p, opid, statuses in REQUIRED:
        op = by_mp.get((method, p))
        names = opid if isinstance(opid, tuple) else (opid,)
        label = "%s %s (%s)" % (method, p, names[0])
        if not c("present: " + label, op is not None):
            continue
        c("operationId of %s %s is %s" % (method, p, " or ".join(names)),
          op.get("operationId") in names, repr(op.get("operationId")))
        have = set((op.get("responses") or {}).keys())
        missing = sorted(statuses - have)
        c("documents every status of " + label, not missing, "missing " + ", ".join(missing))

    for m, p, op in ops:
        name = op.get("operationId") or "%s %s" % (m, p)
        if p.startswith(BROWSER_PATHS):
            c("browser route %s is marked as not for Flows" % p,
              "not for flows" in (op.get("description") or "").lower()
              or op.get("x-salesforce-exclude") is True)
        check_parameters(c, spec, m, p, op, name)
        check_request(c, spec, m, op, name)
        check_responses(c, spec, op, name)

    return finish(c)


def error_schema_ok(spec):
    try:
        e = oas.resolve_ref(spec, "#/components/schemas/Error")
        sample = {"error": {"code": "not_found", "message": "There is nothing here."}}
        return (not oas.check_value(sample, e, spec)
                and oas.check_value({"error": {"code": "x"}}, e, spec) != []
                and oas.check_value({"code": "x", "message": "y"}, e, spec) != [])
    except KeyError:
        return False


def check_parameters(c, spec, m, p, op, name):
    params = op.get("parameters") or []
    tpl = re.findall(r"\{([^}/]+)\}", p)
    declared = {}
    bad = []
    for prm in params:
        if "$ref" in prm:
            bad.append("parameter $ref (inline parameters only)")
            continue
        if not prm.get("name") or prm.get("in") not in ("path", "query", "header"):
            bad.append("parameter without name or with in=%r" % prm.get("in"))
            continue
        declared[(prm["in"], prm["name"])] = prm
        sch = prm.get("schema") or {}
        if sch.get("type") not in ("string", "boolean", "integer"):
            bad.append("%s: type %r" % (prm["name"], sch.get("type")))
        if not prm.get("description"):
            bad.append("%s: no description" % prm["name"])
    for t in tpl:
        prm = declared.get(("path", t))
        if prm is None:
            bad.append("path parameter {%s} not declared" % t)
        elif prm.get("required") is not True:
            bad.append("path parameter {%s} not required" % t)
    for (where, n) in declared:
        if where == "path" and n not in tpl:
            bad.append("path parameter %s not in the path" % n)
    c("%s: parameters are declared, typed and described" % name, not bad, "; ".join(bad))


def check_request(c, spec, m, op, name):
    rb = op.get("requestBody")
    if rb is None:
        return
    if m in ("GET", "DELETE", "HEAD"):
        c("%s: no request body on %s" % (name, m), False)
        return
    content = rb.get("content") or {}
    c("%s: request body is application/json only" % name, list(content) == ["application/json"],
      repr(list(content)))
    sch = (content.get("application/json") or {}).get("schema")
    c("%s: request body has a schema" % name, isinstance(sch, dict))


def check_responses(c, spec, op, name):
    responses = op.get("responses") or {}
    c("%s: has responses" % name, bool(responses))
    bad_keys = [k for k in responses if not re.match(r"^[1-5][0-9][0-9]$", k)]
    c("%s: response keys are explicit status codes" % name, not bad_keys, ", ".join(bad_keys))
    c("%s: has a 2xx response" % name, any(k.startswith("2") for k in responses))
    for st, resp in responses.items():
        where = "%s %s" % (name, st)
        if "$ref" in resp:
            c(where + ": inline response (no $ref)", False)
            continue
        c(where + ": has a description", bool(resp.get("description")))
        c(where + ": no response headers (Salesforce does not read them)", "headers" not in resp)
        content = resp.get("content") or {}
        if st == "204":
            c(where + ": 204 has no content", not content)
            continue
        c(where + ": content is application/json only", list(content) == ["application/json"],
          repr(list(content)))
        sch = (content.get("application/json") or {}).get("schema")
        if st.startswith("2"):
            c(where + ": 2xx has a schema", isinstance(sch, dict))
        elif st.startswith(("4", "5")):
            c(where + ": error uses the shared Error schema",
              sch == {"$ref": "#/components/schemas/Error"}, repr(sch))
            code = int(st)
            desc = resp.get("description") or ""
            codes = oas.ERROR_CODES.get(code, set())
            c(where + ": status is one of CONTRACT §4", code in oas.ERROR_CODES)
            c(where + ": description names its error code",
              any(cd in desc for cd in codes), "expected one of " + ", ".join(sorted(codes)))


def finish(c):
    print("openapi: %d passed, %d failed" % (c.passed, c.failed))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
