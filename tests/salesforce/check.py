#!/usr/bin/env python3
"""check.py: the Salesforce metadata under deploy/salesforce/ is well-formed and hangs together.

    python3 tests/salesforce/check.py        (from anywhere; ends with "salesforce: N passed, M failed")

What it checks (standard library only, no Salesforce org needed):
  - every XML file parses, uses the Metadata API namespace, and its root element is the type its
    file suffix names; sfdx-project.json is valid and points at folders that exist;
  - the External Credential uses the Custom protocol with a named principal and an Authorization
    header 'Bearer ' & $Credential.<itself>.<parameter>; no secret value is in any file;
  - the Named Credential is https, enabled, and uses that External Credential;
  - the permission set grants that External Credential's principal and the flow;
  - the External Service registration uses the Named Credential, is OpenAPI 3, embeds
    proto/openapi.yaml verbatim (deploy/salesforce/scripts/sync_openapi.py writes it) and lists
    exactly its operations, getAccessToken and createAuthorizeLink active;
  - the screen flow: unique element names, every connector leads to an element, starts at a
    screen, its External Service actions name operations of the registration and have a fault
    path, its Apex-defined variables name schemas of the contract and their assigned fields
    exist in those schemas;
  - declared responses are outputs, not faults (Salesforce: each response code the schema
    declares becomes an output of the action, with responseCode; only undeclared codes fault):
    each External Service action stores responseCode and every declared status of its operation,
    and goes on to a Decision on responseCode whose success rule alone reaches the element that
    reads the success output; the guide and proto/openapi.yaml do not say that errors fault;
  - manifest/package.xml lists exactly the components in the source folder;
  - the admin guide (deploy/salesforce/README.md) exists and names every component.
"""
import json
import os
import re
import sys
import traceback
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SF = os.path.join(REPO, "deploy", "salesforce")
SRC = os.path.join(SF, "force-app", "main", "default")
SPEC = os.path.join(REPO, "proto", "openapi.yaml")
NS = "http://soap.sforce.com/2006/04/metadata"
Q = "{%s}" % NS

# file suffix → (folder, Metadata API type)
TYPES = {
    ".externalCredential-meta.xml": ("externalCredentials", "ExternalCredential"),
    ".namedCredential-meta.xml": ("namedCredentials", "NamedCredential"),
    ".externalServiceRegistration-meta.xml": ("externalServiceRegistrations", "ExternalServiceRegistration"),
    ".flow-meta.xml": ("flows", "Flow"),
    ".permissionset-meta.xml": ("permissionsets", "PermissionSet"),
}

RESULTS = []


def check(name):
    def wrap(fn):
        try:
            fn()
            RESULTS.append((name, None))
            print("ok - %s" % name)
        except AssertionError as e:
            RESULTS.append((name, str(e)))
            print("not ok - %s\n    %s" % (name, str(e).replace("\n", "\n    ")))
        except Exception:  # a crash in a check is a failure of that check
            RESULTS.append((name, traceback.format_exc()))
            print("not ok - %s\n    %s" % (name, traceback.format_exc().replace("\n", "\n    ")))
        return fn
    return wrap


def text(el, tag):
    c = el.find(Q + tag)
    return c.text if c is not None and c.text is not None else None


def _p(path):
    return "/".join(Q + part for part in path.split("/"))


def components():
    """{type: {name: path}} of the source folder."""
    out = {}
    for folder, _, files in os.walk(SRC):
        for f in files:
            for suffix, (want_folder, typ) in TYPES.items():
                if f.endswith(suffix):
                    out.setdefault(typ, {})[f[: -len(suffix)]] = os.path.join(folder, f)
    return out


def only(typ):
    comps = components().get(typ, {})
    assert len(comps) == 1, "expected exactly one %s, found %s" % (typ, sorted(comps))
    name = next(iter(comps))
    return name, ET.parse(comps[name]).getroot()


def spec_text():
    with open(SPEC, encoding="utf-8") as f:
        return f.read()


def spec_operation_ids(t):
    return re.findall(r"^\s+operationId:\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?\s*$", t, re.M)


def spec_responses(t):
    """{operationId: [status codes]} of proto/openapi.yaml (block-style YAML, as written there)."""
    out, cur = {}, None
    for l in t.splitlines():
        m = re.match(r"^\s+operationId:\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)", l)
        if m:
            cur = m.group(1)
            out[cur] = []
            continue
        m = re.match(r"^        '([1-5][0-9X]{2})':\s*$", l)
        if cur and m:
            out[cur].append(m.group(1))
        if re.match(r"^\S", l):
            cur = None
    return out


def spec_schemas(t):
    """{schema name: set(property names)} of components/schemas, read from the block-style YAML."""
    lines = t.splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if re.match(r"^  schemas:\s*$", l))
    except StopIteration:
        return {}
    out, cur, in_props, props_indent = {}, None, False, None
    for l in lines[start + 1:]:
        if l.strip() == "" or l.lstrip().startswith("#"):
            continue
        indent = len(l) - len(l.lstrip())
        if indent <= 2:
            break
        m = re.match(r"^    ([A-Za-z_][A-Za-z0-9_]*):\s*$", l)
        if m:
            cur, in_props = m.group(1), False
            out[cur] = set()
            continue
        if cur is None:
            continue
        if re.match(r"^      properties:\s*$", l):
            in_props, props_indent = True, 8
            continue
        if indent == 6:
            in_props = False
        if in_props and indent == props_indent:
            m = re.match(r"^\s+([A-Za-z_][A-Za-z0-9_]*):", l)
            if m:
                out[cur].add(m.group(1))
    return out


# ===== the checks =====

@check("every XML file is well-formed, in the Metadata API namespace, with the right root element")
def _():
    seen = 0
    problems = []
    for folder, _, files in os.walk(SF):
        for f in files:
            if not f.endswith(".xml"):
                continue
            path = os.path.join(folder, f)
            rel = os.path.relpath(path, REPO)
            seen += 1
            try:
                root = ET.parse(path).getroot()
            except ET.ParseError as e:
                problems.append("%s: not well-formed XML: %s" % (rel, e))
                continue
            with open(path, "rb") as fh:
                head = fh.read(60)
            if not head.startswith(b'<?xml version="1.0" encoding="UTF-8"?>'):
                problems.append("%s: does not start with the XML declaration (UTF-8)" % rel)
            if not root.tag.startswith(Q):
                problems.append("%s: root %s is not in the namespace %s" % (rel, root.tag, NS))
                continue
            for suffix, (want_folder, typ) in TYPES.items():
                if f.endswith(suffix):
                    if root.tag != Q + typ:
                        problems.append("%s: root element %s, expected %s" % (rel, root.tag[len(Q):], typ))
                    if os.path.basename(folder) != want_folder:
                        problems.append("%s: a %s belongs in a folder named %s" % (rel, typ, want_folder))
            if f == "package.xml" and root.tag != Q + "Package":
                problems.append("%s: root element is not Package" % rel)
    assert seen >= 6, "expected at least 6 XML files under deploy/salesforce, found %d" % seen
    assert not problems, "\n".join(problems)


@check("sfdx-project.json is valid and its package directory exists")
def _():
    with open(os.path.join(SF, "sfdx-project.json"), encoding="utf-8") as f:
        p = json.load(f)
    dirs = p.get("packageDirectories")
    assert isinstance(dirs, list) and dirs, "no packageDirectories"
    assert any(d.get("default") for d in dirs), "no default package directory"
    for d in dirs:
        assert os.path.isdir(os.path.join(SF, d["path"])), "package directory %s is missing" % d["path"]
    assert re.match(r"^\d{2}\.0$", p.get("sourceApiVersion", "")), "sourceApiVersion should look like 62.0"
    assert float(p["sourceApiVersion"]) >= 60.0, "External Credentials with custom headers need API 60.0 or later"


@check("External Credential: Custom protocol, named principal, Authorization: 'Bearer ' & the org key")
def _():
    name, ec = only("ExternalCredential")
    assert text(ec, "authenticationProtocol") == "Custom", "authenticationProtocol must be Custom"
    assert text(ec, "label"), "no label"
    params = ec.findall(Q + "externalCredentialParameters")
    principals = [p for p in params if text(p, "parameterType") == "NamedPrincipal"]
    assert len(principals) == 1, "expected one NamedPrincipal parameter"
    headers = [p for p in params if text(p, "parameterType") == "AuthHeader"]
    assert len(headers) == 1 and text(headers[0], "parameterName") == "Authorization", \
        "expected one AuthHeader parameter named Authorization"
    value = text(headers[0], "parameterValue") or ""
    m = re.match(r"^\{!\s*'Bearer '\s*&\s*\$Credential\.([A-Za-z][A-Za-z0-9_]*)\.([A-Za-z][A-Za-z0-9_]*)\s*\}$", value)
    assert m, "the Authorization header must be {!'Bearer ' & $Credential.<ExternalCredential>.<Parameter>}, is %r" % value
    assert m.group(1) == name, "the header formula names External Credential %s, this one is %s" % (m.group(1), name)
    for p in params:
        assert text(p, "sequenceNumber") is None or text(p, "sequenceNumber").isdigit(), "bad sequenceNumber"


@check("Named Credential: enabled, https, uses the External Credential")
def _():
    ec_name, _ = only("ExternalCredential")
    name, nc = only("NamedCredential")
    assert text(nc, "calloutStatus") == "Enabled", "calloutStatus must be Enabled"
    assert text(nc, "namedCredentialType") == "SecuredEndpoint", "namedCredentialType must be SecuredEndpoint"
    params = nc.findall(Q + "namedCredentialParameters")
    urls = [text(p, "parameterValue") for p in params if text(p, "parameterType") == "Url"]
    assert len(urls) == 1 and urls[0].startswith("https://"), "expected one https Url parameter, got %r" % urls
    assert not urls[0].endswith("/"), "the Url should not end with / (the contract's paths start with /)"
    auth = [text(p, "externalCredential") for p in params if text(p, "parameterType") == "Authentication"]
    assert auth == [ec_name], "the Named Credential must use External Credential %s, uses %r" % (ec_name, auth)
    assert text(nc, "allowMergeFieldsInHeader") == "false" and text(nc, "allowMergeFieldsInBody") == "false", \
        "merge fields in headers or bodies are not needed and should stay off"


@check("permission set grants the External Credential principal and the flow")
def _():
    ec_name, ec = only("ExternalCredential")
    principal = [text(p, "parameterName") for p in ec.findall(Q + "externalCredentialParameters")
                 if text(p, "parameterType") == "NamedPrincipal"][0]
    _, ps = only("PermissionSet")
    granted = [(text(a, "externalCredentialPrincipal"), text(a, "enabled"))
               for a in ps.findall(Q + "externalCredentialPrincipalAccesses")]
    assert ("%s-%s" % (ec_name, principal), "true") in granted, \
        "the permission set must enable %s-%s, has %r" % (ec_name, principal, granted)
    flows = set(components().get("Flow", {}))
    for a in ps.findall(Q + "flowAccesses"):
        assert text(a, "flow") in flows, "flowAccesses names an unknown flow %s" % text(a, "flow")


@check("External Service registration: the Named Credential, OpenAPI 3, proto/openapi.yaml verbatim")
def _():
    nc_name, _ = only("NamedCredential")
    name, esr = only("ExternalServiceRegistration")
    assert re.match(r"^[A-Za-z][A-Za-z0-9]*$", name), "the registration name %s must be a plain Apex identifier" % name
    assert text(esr, "label") == name, "label %r should equal the name %s (Flow actions show it)" % (text(esr, "label"), name)
    assert text(esr, "namedCredential") == nc_name, "namedCredential must be %s" % nc_name
    assert text(esr, "schemaType") == "OpenApi3", "schemaType must be OpenApi3"
    assert text(esr, "status") == "Complete", "status must be Complete"
    assert text(esr, "registrationProviderType") == "Custom", "registrationProviderType must be Custom"
    json.loads(text(esr, "serviceBinding") or "")
    assert text(esr, "schema") == spec_text(), \
        "the embedded schema differs from proto/openapi.yaml: run python3 deploy/salesforce/scripts/sync_openapi.py"


@check("External Service registration lists exactly the contract's operations; the Flow ones are active")
def _():
    _, esr = only("ExternalServiceRegistration")
    ops = {text(o, "name"): text(o, "active") for o in esr.findall(Q + "operations")}
    want = [o.lower() for o in spec_operation_ids(spec_text())]
    assert "getaccesstoken" in want, "proto/openapi.yaml has no getAccessToken operation"
    assert sorted(ops) == sorted(want), "operations differ from the contract: registered %s, contract %s" % (
        sorted(ops), sorted(want))
    for must in ("getaccesstoken", "createauthorizelink", "listconnections"):
        assert ops.get(must) == "true", "operation %s must be active" % must


@check("screen flow: elements, connectors and fault paths hang together")
def _():
    name, flow = only("Flow")
    assert text(flow, "processType") == "Flow", "processType must be Flow (a screen flow)"
    assert text(flow, "status") in ("Active", "Draft"), "status must be Active or Draft"
    assert text(flow, "label"), "no label"
    assert re.match(r"^\d{2}\.0$", text(flow, "apiVersion") or ""), "bad apiVersion"
    kinds = ("actionCalls", "assignments", "decisions", "screens", "recordCreates", "recordLookups", "loops",
             "subflows", "choices", "formulas", "variables", "constants", "textTemplates")
    names = []
    nodes = {}
    for k in kinds:
        for el in flow.findall(Q + k):
            n = text(el, "name")
            assert n and re.match(r"^[A-Za-z][A-Za-z0-9_]*$", n) and "__" not in n and not n.endswith("_"), \
                "bad element name %r" % n
            names.append(n)
            nodes[n] = (k, el)
    for field in flow.findall(_p("screens/fields")):  # screen components are referenced by name too
        n = text(field, "name")
        names.append(n)
        nodes[n] = ("screenFields", field)
    dup = sorted({n for n in names if names.count(n) > 1})
    assert not dup, "duplicate element names: %s" % dup
    targets = [t.text for t in flow.iter(Q + "targetReference")]
    for t in targets:
        assert t in nodes and nodes[t][0] in ("actionCalls", "assignments", "decisions", "screens", "recordCreates",
                                              "recordLookups", "loops", "subflows"), "connector to unknown element %r" % t
    start = flow.find(Q + "start")
    first = start.find(_p("connector/targetReference")) if start is not None else None
    assert first is not None and nodes[first.text][0] == "screens", "the flow must start with a screen"
    # every element but the start's target is reached from somewhere
    for n, (k, el) in nodes.items():
        if k in ("actionCalls", "assignments", "decisions", "screens") and n != first.text:
            assert n in targets, "element %s is never reached" % n
    # element references point at something that exists (or a global like $Organization)
    for ref in flow.iter(Q + "elementReference"):
        head = ref.text.split(".")[0]
        assert head.startswith("$") or head in nodes, "reference to unknown element %r" % ref.text
    for choice in flow.iter(Q + "choiceReferences"):
        assert nodes.get(choice.text, ("",))[0] == "choices", "unknown choice %r" % choice.text


@check("screen flow: External Service actions and Apex-defined variables match the contract")
def _():
    esr_name, _ = only("ExternalServiceRegistration")
    _, flow = only("Flow")
    t = spec_text()
    ops = set(spec_operation_ids(t))
    schemas = spec_schemas(t)
    assert "AuthorizeLink" in schemas and "url" in schemas["AuthorizeLink"], \
        "could not read components/schemas of proto/openapi.yaml"
    actions = [a for a in flow.findall(Q + "actionCalls") if text(a, "actionType") == "externalService"]
    assert actions, "the flow calls no External Service action"
    for a in actions:
        svc, _, op = (text(a, "actionName") or "").partition(".")
        assert svc == esr_name and op in ops, "action %s names an unknown operation" % text(a, "actionName")
        assert a.find(Q + "faultConnector") is not None, "action %s has no fault path" % text(a, "name")
        inputs = {text(p, "name") for p in a.findall(Q + "inputParameters")}
        assert "org_id" in inputs, "action %s does not pass org_id" % text(a, "name")
    assert any(text(a, "actionName") == esr_name + ".createAuthorizeLink" for a in actions), \
        "the flow must create an authorize link"
    apex_vars = {}
    for v in flow.findall(Q + "variables"):
        if text(v, "dataType") == "Apex":
            cls = text(v, "apexClass") or ""
            prefix = "ExternalService__%s_" % esr_name
            assert cls.startswith(prefix) and cls[len(prefix):] in schemas, \
                "variable %s: apexClass %s is not a schema of the contract" % (text(v, "name"), cls)
            apex_vars[text(v, "name")] = schemas[cls[len(prefix):]]
    for ref in list(flow.iter(Q + "assignToReference")) + list(flow.iter(Q + "elementReference")):
        var, _, field = ref.text.partition(".")
        if var in apex_vars and field:
            assert field in apex_vars[var], "%s: the schema has no field %s" % (ref.text, field)
    for m in re.finditer(r"\{!([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\}", ET.tostring(flow, "unicode")):
        if m.group(1) in apex_vars:
            assert m.group(2) in apex_vars[m.group(1)], "{!%s.%s}: no such field" % (m.group(1), m.group(2))


@check("screen flow: declared responses are outputs; a Decision on responseCode, not the fault path")
def _():
    esr_name, _ = only("ExternalServiceRegistration")
    _, flow = only("Flow")
    responses = spec_responses(spec_text())
    assert responses.get("createAuthorizeLink"), "could not read the responses of proto/openapi.yaml"
    decisions = {text(d, "name"): d for d in flow.findall(Q + "decisions")}
    for a in flow.findall(Q + "actionCalls"):
        if text(a, "actionType") != "externalService":
            continue
        name = text(a, "name")
        op = (text(a, "actionName") or "").partition(".")[2]
        outs = {text(o, "name"): text(o, "assignToReference") for o in a.findall(Q + "outputParameters")}
        code_var = outs.get("responseCode")
        assert code_var, "action %s does not store responseCode: a declared error would continue as success" % name
        declared = responses.get(op, [])
        missing = [c for c in declared if c not in outs]
        assert not missing, "action %s does not store the declared responses %s of %s" % (name, missing, op)
        ok = [c for c in declared if c.startswith("2")]
        assert ok, "%s declares no 2xx response" % op
        nxt = a.find(_p("connector/targetReference"))
        assert nxt is not None and nxt.text in decisions, \
            "action %s must go on to a Decision on %s (declared errors are not faults)" % (name, code_var)
        d = decisions[nxt.text]
        ok_vars = {outs[c] for c in ok}
        success_rules = []
        for r in d.findall(Q + "rules"):
            conds = r.findall(Q + "conditions")
            on_code = [c for c in conds if text(c, "leftValueReference") == code_var]
            assert on_code, "decision %s rule %s does not test %s" % (nxt.text, text(r, "name"), code_var)
            vals = {str(int(float(c.find(_p("rightValue/numberValue")).text))) for c in on_code
                    if text(c, "operator") == "EqualTo" and c.find(_p("rightValue/numberValue")) is not None}
            if vals and vals <= set(ok):
                success_rules.append(r)
        assert success_rules, "decision %s has no rule for %s" % (nxt.text, ok)
        default = d.find(_p("defaultConnector/targetReference"))
        assert default is not None, "decision %s has no default path for the declared errors" % nxt.text
        # the element that reads the success output is reached by a success rule only
        readers = set()
        for k in ("screens", "assignments", "actionCalls", "decisions"):
            for el in flow.findall(Q + k):
                body = ET.tostring(el, "unicode")
                if any(re.search(r"\{!%s\.|>%s\." % (v, v), body) for v in ok_vars):
                    readers.add(text(el, "name"))
        assert readers, "nothing reads the success output %s" % sorted(ok_vars)
        targets = {text(r, "name"): r.find(_p("connector/targetReference")).text for r in d.findall(Q + "rules")}
        for rname, t in targets.items():
            if t in readers:
                assert any(text(r, "name") == rname for r in success_rules), \
                    "decision %s: rule %s reaches %s, which reads the success output" % (nxt.text, rname, t)
        assert default.text not in readers, \
            "decision %s: the default path (declared errors) reaches %s, which reads the success output" % (
                nxt.text, default.text)
    for path in (os.path.join(SF, "README.md"), SPEC):
        with open(path, encoding="utf-8") as f:
            body = re.sub(r"\s+", " ", f.read())
        m = re.search(r"(every|any) (status|answer)[^.]{0,40}(300|error)[^.]{0,60}fault path", body, re.I)
        assert not m, "%s still says %r" % (os.path.relpath(path, REPO), m.group(0))
    with open(os.path.join(SF, "README.md"), encoding="utf-8") as f:
        assert "responseCode" in f.read(), "the admin guide does not explain the responseCode Decision"


@check("manifest/package.xml lists exactly the components of the source folder")
def _():
    root = ET.parse(os.path.join(SF, "manifest", "package.xml")).getroot()
    listed = {(text(t, "name"), m.text) for t in root.findall(Q + "types") for m in t.findall(Q + "members")}
    present = {(typ, n) for typ, names in components().items() for n in names}
    assert listed == present, "package.xml %s, source folder %s" % (sorted(listed - present), sorted(present - listed))
    assert re.match(r"^\d{2}\.0$", text(root, "version") or ""), "package.xml has no version"


@check("no secret in the metadata")
def _():
    pat = re.compile(r"(sk|rk)_(test|live)_[A-Za-z0-9]{8,}|whsec_[A-Za-z0-9]{8,}|stb_[A-Za-z0-9_-]{20,}|"
                     r"Bearer [A-Za-z0-9_-]{20,}")
    for folder, _, files in os.walk(SF):
        for f in files:
            path = os.path.join(folder, f)
            if f.endswith(".externalServiceRegistration-meta.xml"):
                continue  # the contract's examples are redacted; checked against proto/ above
            with open(path, encoding="utf-8", errors="replace") as fh:
                m = pat.search(fh.read())
            assert not m, "%s: looks like a secret: %r" % (os.path.relpath(path, REPO), m.group(0)[:16] + "…")


@check("the admin guide exists and names every component")
def _():
    path = os.path.join(SF, "README.md")
    with open(path, encoding="utf-8") as f:
        guide = f.read()
    for typ, names in components().items():
        for n in names:
            assert n in guide, "deploy/salesforce/README.md does not mention %s %s" % (typ, n)
    for word in ("getAccessToken", "Capture Funds", "Ensure Funds", "reauthorization_required", "not_connected",
                 "unauthorized", "forbidden", "stripe_unavailable", "store_unavailable", "mode_not_enabled",
                 "live", "test"):
        assert word in guide, "the admin guide does not cover %s" % word


def main():
    failed = sum(1 for _, e in RESULTS if e)
    print("salesforce: %d passed, %d failed" % (len(RESULTS) - failed, failed))
    return 1 if failed or not RESULTS else 0


if __name__ == "__main__":
    sys.exit(main())
