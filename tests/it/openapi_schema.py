#!/usr/bin/env python3
"""openapi_schema.py: load proto/openapi.yaml and validate API responses against it.

Python 3 standard library only. It contains:

  parse_yaml(text)     a strict parser for the YAML subset proto/openapi.yaml is written in
                       (block mappings and sequences, plain / 'single' / "double" quoted
                       scalars, | and > block scalars with - or + chomping, [] / {} and
                       one-line flow sequences of scalars, comments). Anything outside that
                       subset, and anything a YAML 1.1 reader would read differently from a
                       YAML 1.2 one (yes/no/on/off, dates, sexagesimals, 1_000 ...), is an
                       error rather than a guess, so the file stays readable the same way by
                       any real parser.
  load_spec(path)      the parsed spec (cached per path).
  find_operation(key)  key is an operationId ("getAccessToken") or "METHOD /path", where the
                       path is a template ("/v1/orgs/{org_id}/access-token") or a concrete
                       request path, query string allowed ("/v1/orgs/00D.../access-token?mode=test").
  validate(key, status, json_body)
                       checks a response: the status must be documented for the operation;
                       204 must have no body; any other status must carry a JSON value that
                       matches the schema (type, required, properties, additionalProperties
                       when false, items, $ref, pattern, min/maxLength, int32 range); an error
                       body's code must be one the contract allows for that status.
                       json_body is the parsed value (bytes/bytearray are parsed as JSON
                       first; None means "no body"). Raises SchemaError (an AssertionError)
                       listing every mismatch; returns the schema used (None for 204).

Used by tests/it/check_openapi.py and by the integration tests:

    from openapi_schema import validate
    validate("getAccessToken", r.status, r.json())
"""
import json
import os
import re

SPEC_PATH = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto", "openapi.yaml"))

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

# CONTRACT §4: the only error codes each status may carry.
ERROR_CODES = {
    400: {"invalid_request", "mode_not_enabled"},
    401: {"unauthorized"},
    403: {"forbidden"},
    404: {"not_connected", "not_found"},
    405: {"method_not_allowed"},
    409: {"reauthorization_required"},
    413: {"payload_too_large"},
    429: {"rate_limited"},
    500: {"record_unreadable"},
    502: {"stripe_unavailable"},
    503: {"store_unavailable"},
}


# --------------------------------------------------------------------------------------------
# YAML subset parser
# --------------------------------------------------------------------------------------------

class YamlError(ValueError):
    def __init__(self, lineno, msg):
        super().__init__("line %d: %s" % (lineno, msg))
        self.lineno = lineno


_INT_RE = re.compile(r"^[-+]?[0-9]+$")
_FLOAT_RE = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
# Plain scalars a YAML 1.1 reader (SnakeYAML, PyYAML) resolves differently: refuse them.
_YAML11_RE = re.compile(
    r"^(y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF|"
    r"[-+]?0b[01_]+|[-+]?0[0-7_]+|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?|"
    r"[-+]?[0-9][0-9_]*_[0-9_]*|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ].*)?|=|<<)$")
_INDICATORS = set("-?:,[]{}#&*!|>'\"%@`")


class _Line:
    __slots__ = ("no", "indent", "text")

    def __init__(self, no, indent, text):
        self.no, self.indent, self.text = no, indent, text


def _strip_comment(s, lineno):
    """Drop a trailing ' # comment' outside quotes; s has no leading spaces."""
    q = None
    i = 0
    while i < len(s):
        c = s[i]
        if q == "'":
            if c == "'":
                if i + 1 < len(s) and s[i + 1] == "'":
                    i += 1
                else:
                    q = None
        elif q == '"':
            if c == "\\":
                i += 1
            elif c == '"':
                q = None
        elif c in "'\"" and (i == 0 or s[i - 1] in " [{,:" or s[i - 1:i + 1] == "- "):
            q = c
        elif c == "#" and (i == 0 or s[i - 1] in " \t"):
            return s[:i].rstrip()
        i += 1
    return s.rstrip()


def _double_quoted(s, lineno):
    out = []
    i = 0
    esc = {"0": "\0", "a": "\a", "b": "\b", "t": "\t", "n": "\n", "v": "\v", "f": "\f",
           "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85",
           "_": "\xa0", "L": "\u2028", "P": "\u2029"}
    while i < len(s):
        c = s[i]
        if c == "\\":
            if i + 1 >= len(s):
                raise YamlError(lineno, "dangling backslash in a double-quoted scalar")
            e = s[i + 1]
            if e in esc:
                out.append(esc[e])
                i += 2
            elif e in "xuU":
                n = {"x": 2, "u": 4, "U": 8}[e]
                h = s[i + 2:i + 2 + n]
                if len(h) != n or not re.match(r"^[0-9A-Fa-f]+$", h):
                    raise YamlError(lineno, "bad \\%s escape" % e)
                out.append(chr(int(h, 16)))
                i += 2 + n
            else:
                raise YamlError(lineno, "unknown escape \\%s" % e)
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _quoted_end(s, lineno):
    """s starts with a quote: return (value, rest after the closing quote)."""
    q = s[0]
    i = 1
    while i < len(s):
        c = s[i]
        if q == "'" and c == "'":
            if i + 1 < len(s) and s[i + 1] == "'":
                i += 2
                continue
            return s[1:i].replace("''", "'"), s[i + 1:]
        if q == '"' and c == "\\":
            i += 2
            continue
        if q == '"' and c == '"':
            return _double_quoted(s[1:i], lineno), s[i + 1:]
        i += 1
    raise YamlError(lineno, "unterminated quoted scalar (multi-line quoted scalars are not "
                            "supported: use a block scalar)")


def _plain(s, lineno, in_flow=False):
    if s == "":
        return None
    if s[0] in _INDICATORS and not (s[0] in "-?:" and len(s) > 1 and s[1] not in " ,[]{}"):
        raise YamlError(lineno, "plain scalar %r starts with an indicator: quote it" % s)
    if ": " in s or s.endswith(":") or " #" in s or "\t" in s:
        raise YamlError(lineno, "plain scalar %r is ambiguous: quote it" % s)
    if in_flow and any(c in s for c in ",[]{}"):
        raise YamlError(lineno, "flow indicator in plain scalar %r" % s)
    if _YAML11_RE.match(s):
        raise YamlError(lineno, "plain scalar %r reads differently in YAML 1.1: quote it" % s)
    if s in ("null", "Null", "NULL", "~"):
        return None
    if s in ("true", "True", "TRUE"):
        return True
    if s in ("false", "False", "FALSE"):
        return False
    if _INT_RE.match(s):
        return int(s)
    if re.match(r"^0x[0-9a-fA-F]+$", s):
        return int(s, 16)
    if re.match(r"^0o[0-7]+$", s):
        return int(s[2:], 8)
    if _FLOAT_RE.match(s) and any(ch.isdigit() for ch in s):
        return float(s)
    if s in (".inf", ".Inf", ".INF", "+.inf", "-.inf", ".nan", ".NaN", ".NAN"):
        raise YamlError(lineno, "special float %r is not allowed" % s)
    return s


def _scalar(s, lineno):
    """A one-line scalar or simple flow collection: s is stripped of comments."""
    if s == "":
        return None
    if s[0] in "'\"":
        v, rest = _quoted_end(s, lineno)
        if rest.strip():
            raise YamlError(lineno, "text after a quoted scalar: %r" % rest)
        return v
    if s[0] == "[":
        if not s.endswith("]"):
            raise YamlError(lineno, "multi-line flow sequences are not supported")
        inner = s[1:-1].strip()
        if inner == "":
            return []
        items = []
        while True:
            inner = inner.lstrip()
            if inner[:1] in ("'", '"'):
                v, inner = _quoted_end(inner, lineno)
                inner = inner.lstrip()
            else:
                m = re.match(r"^([^,]*)", inner)
                tok = m.group(1).strip()
                if tok.startswith(("[", "{")):
                    raise YamlError(lineno, "nested flow collections are not supported")
                v = _plain(tok, lineno, in_flow=True)
                if tok == "":
                    raise YamlError(lineno, "empty flow sequence entry")
                inner = inner[m.end():]
            items.append(v)
            if inner == "":
                return items
            if not inner.startswith(","):
                raise YamlError(lineno, "expected ',' in flow sequence")
            inner = inner[1:]
    if s[0] == "{":
        if s.replace(" ", "") != "{}":
            raise YamlError(lineno, "only the empty flow mapping {} is supported")
        return {}
    return _plain(s, lineno)


def _split_key(text, lineno):
    """'key: rest' -> (key, rest) or None when text is not a mapping entry."""
    if text[:1] in ("'", '"'):
        key, rest = _quoted_end(text, lineno)
        if rest == ":" or rest.startswith(": "):
            return key, rest[1:].strip()
        if rest.strip().startswith(":"):
            raise YamlError(lineno, "space before ':' after a quoted key")
        return None
    m = re.match(r"^([^\s#'\"][^:#]*?|[^\s#'\"][^#]*?[^\s:]):(\s|$)", text)
    if not m:
        return None
    key = m.group(1)
    k = _plain(key, lineno)
    if not isinstance(k, str):
        raise YamlError(lineno, "mapping key %r must be a string: quote it" % key)
    return k, text[m.end():].strip()


class _Parser:
    def __init__(self, text):
        if re.search(r"^ *\t", text, re.M):
            raise YamlError(1, "tab in indentation")
        self.raw = text.split("\n")
        self.lines = []
        for no, raw in enumerate(self.raw, 1):
            if raw.rstrip() == "" or raw.lstrip().startswith("#"):
                continue
            if raw.rstrip() == "---" and not self.lines:
                continue
            if raw.startswith(("---", "...", "%")):
                raise YamlError(no, "multiple documents and directives are not supported")
            ind = len(raw) - len(raw.lstrip(" "))
            self.lines.append(_Line(no, ind, raw[ind:].rstrip()))
        self.pos = 0

    def parse(self):
        if not self.lines:
            return None
        v = self.block(self.lines[0].indent)
        if self.pos < len(self.lines):
            ln = self.lines[self.pos]
            raise YamlError(ln.no, "unexpected indentation or content")
        return v

    def block(self, indent):
        ln = self.lines[self.pos]
        if ln.text == "-" or ln.text.startswith("- "):
            return self.sequence(indent)
        return self.mapping(indent)

    def value_after(self, ln, rest, parent_indent, seq_ok_same_indent):
        """Value of a 'key:' or '- ' entry whose remaining text is rest."""
        rest_nc = rest if rest[:1] in ("|", ">") else _strip_comment(rest, ln.no)
        if rest_nc[:1] in ("|", ">"):
            return self.block_scalar(ln, rest_nc, parent_indent)
        if rest_nc[:1] in ("&", "*", "!"):
            raise YamlError(ln.no, "anchors, aliases and tags are not supported")
        if rest_nc != "":
            return _scalar(rest_nc, ln.no)
        # nested block, or null
        if self.pos < len(self.lines):
            nxt = self.lines[self.pos]
            if nxt.indent > parent_indent:
                return self.block(nxt.indent)
            if (seq_ok_same_indent and nxt.indent == parent_indent
                    and (nxt.text == "-" or nxt.text.startswith("- "))):
                return self.sequence(parent_indent)
        return None

    def mapping(self, indent):
        out = {}
        while self.pos < len(self.lines):
            ln = self.lines[self.pos]
            if ln.indent < indent:
                break
            if ln.indent > indent:
                raise YamlError(ln.no, "unexpected indentation")
            if ln.text == "-" or ln.text.startswith("- "):
                break
            kv = _split_key(ln.text, ln.no)
            if kv is None:
                raise YamlError(ln.no, "expected 'key: value', got %r" % ln.text)
            key, rest = kv
            if key in out:
                raise YamlError(ln.no, "duplicate key %r" % key)
            if key == "<<":
                raise YamlError(ln.no, "merge keys are not supported")
            self.pos += 1
            out[key] = self.value_after(ln, rest, indent, True)
        return out

    def sequence(self, indent):
        out = []
        while self.pos < len(self.lines):
            ln = self.lines[self.pos]
            if ln.indent < indent:
                break
            if ln.indent > indent:
                raise YamlError(ln.no, "unexpected indentation")
            if not (ln.text == "-" or ln.text.startswith("- ")):
                break
            rest = ln.text[1:]
            sp = len(rest) - len(rest.lstrip(" "))
            rest = rest.lstrip(" ")
            if rest == "" or rest.startswith("#"):
                self.pos += 1
                out.append(self.value_after(ln, "", indent, False))
                continue
            col = indent + 1 + sp
            if rest.startswith("- "):
                raise YamlError(ln.no, "compact nested sequences are not supported")
            kv = None
            if rest[:1] not in ("|", ">"):
                kv = _split_key(rest, ln.no)
            if kv is not None:
                # "- key: value" opens a mapping at column col: reparse this line there
                self.lines[self.pos] = _Line(ln.no, col, rest)
                out.append(self.mapping(col))
            else:
                self.pos += 1
                out.append(self.value_after(ln, rest, indent, False))
        return out

    def block_scalar(self, ln, header, parent_indent):
        m = re.match(r"^([|>])([-+]?)(\s+#.*)?$", header)
        if not m:
            raise YamlError(ln.no, "unsupported block scalar header %r" % header)
        style, chomp = m.group(1), m.group(2)
        # raw lines after the header, up to the first non-empty line indented <= parent
        body = []
        no = ln.no  # 1-based line number of the header; raw index of next line == no
        i = no
        while i < len(self.raw):
            r = self.raw[i]
            if r.strip() == "":
                body.append("")
                i += 1
                continue
            ind = len(r) - len(r.lstrip(" "))
            if ind <= parent_indent:
                break
            body.append(r.rstrip("\r"))
            i += 1
        # skip the structural lines consumed
        while self.pos < len(self.lines) and self.lines[self.pos].no <= i:
            self.pos += 1
        while body and body[-1] == "":
            body.pop()
        nonempty = [b for b in body if b.strip()]
        if not nonempty:
            return ""
        ci = min(len(b) - len(b.lstrip(" ")) for b in nonempty)
        first_ind = len(nonempty[0]) - len(nonempty[0].lstrip(" "))
        if first_ind != ci:
            raise YamlError(ln.no + 1, "block scalar: first line must not be more indented")
        lines = [b[ci:] if b.strip() else "" for b in body]
        if style == "|":
            text = "\n".join(lines)
        else:
            if any(l.startswith(" ") for l in lines):
                raise YamlError(ln.no, "folded block scalar with more-indented lines: use |")
            text = ""
            prev_empty = True
            for l in lines:
                if l == "":
                    text += "\n"
                    prev_empty = True
                else:
                    if not prev_empty:
                        text += " "
                    elif text and not text.endswith("\n"):
                        text += " "
                    text += l
                    prev_empty = False
        if chomp == "-":
            return text
        if chomp == "+":
            raise YamlError(ln.no, "keep chomping (+) is not supported")
        return text + "\n"


def parse_yaml(text):
    if text.startswith("\ufeff"):
        text = text[1:]
    return _Parser(text).parse()


# --------------------------------------------------------------------------------------------
# Spec access
# --------------------------------------------------------------------------------------------

_CACHE = {}


def load_spec(path=None):
    path = os.path.abspath(path or SPEC_PATH)
    st = os.stat(path)
    hit = _CACHE.get(path)
    if hit and hit[0] == st.st_mtime_ns:
        return hit[1]
    with open(path, "r", encoding="utf-8") as f:
        spec = parse_yaml(f.read())
    _CACHE[path] = (st.st_mtime_ns, spec)
    return spec


def resolve_ref(spec, ref):
    """Resolve a local '#/a/b' reference; raise KeyError when it does not resolve."""
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise KeyError("not a local reference: %r" % (ref,))
    node = spec
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise KeyError("unresolved reference %r" % ref)
        node = node[part]
    return node


def operations(spec=None):
    """[(METHOD, path template, operation object)] in file order."""
    spec = spec if spec is not None else load_spec()
    out = []
    for path, item in (spec.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        for m, op in item.items():
            if m in METHODS and isinstance(op, dict):
                out.append((m.upper(), path, op))
    return out


def _template_regex(tpl):
    parts = re.split(r"(\{[^}/]+\})", tpl)
    return re.compile("^" + "".join("[^/]+" if p.startswith("{") else re.escape(p)
                                    for p in parts if p) + "$")


def find_operation(key, spec=None):
    spec = spec if spec is not None else load_spec()
    ops = operations(spec)
    key = key.strip()
    if " " not in key:
        for m, p, op in ops:
            if op.get("operationId") == key:
                return m, p, op
        raise KeyError("no operation with operationId %r" % key)
    method, path = key.split(None, 1)
    method = method.upper()
    path = path.split("?", 1)[0].split("#", 1)[0]
    for m, p, op in ops:
        if m == method and p == path:
            return m, p, op
    for m, p, op in ops:
        if m == method and _template_regex(p).match(path):
            return m, p, op
    raise KeyError("no operation for %s %s" % (method, path))


class SchemaError(AssertionError):
    pass


def response_for(key, status, spec=None):
    """(operation id, response object) for that status; KeyError when undocumented."""
    spec = spec if spec is not None else load_spec()
    m, p, op = find_operation(key, spec)
    responses = op.get("responses") or {}
    st = str(int(status))
    resp = responses.get(st)
    if resp is None:
        resp = responses.get(st[0] + "XX") or responses.get("default")
    if resp is None:
        raise KeyError("%s (%s %s) does not document status %s (documented: %s)"
                       % (op.get("operationId"), m, p, st, ", ".join(sorted(responses))))
    if "$ref" in resp:
        resp = resolve_ref(spec, resp["$ref"])
    return op.get("operationId") or "%s %s" % (m, p), resp


def check_value(value, schema, spec, where="$", errors=None, depth=0):
    """Append to errors every way value fails schema; return errors."""
    errors = [] if errors is None else errors
    if depth > 64:
        errors.append("%s: schema nesting too deep (recursive $ref?)" % where)
        return errors
    if not isinstance(schema, dict):
        errors.append("%s: schema is not an object" % where)
        return errors
    if "$ref" in schema:
        try:
            target = resolve_ref(spec, schema["$ref"])
        except KeyError as e:
            errors.append("%s: %s" % (where, e))
            return errors
        return check_value(value, target, spec, where, errors, depth + 1)
    if value is None:
        if not schema.get("nullable"):
            errors.append("%s: null where %s expected" % (where, schema.get("type", "a value")))
        return errors
    t = schema.get("type")
    if t == "object":
        if not isinstance(value, dict):
            errors.append("%s: expected an object, got %s" % (where, _jtype(value)))
            return errors
        props = schema.get("properties") or {}
        for r in schema.get("required") or []:
            if r not in value:
                errors.append("%s: missing required property %r" % (where, r))
        addl = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                check_value(v, props[k], spec, "%s.%s" % (where, k), errors, depth + 1)
            elif addl is False:
                errors.append("%s: unexpected property %r" % (where, k))
            elif isinstance(addl, dict):
                check_value(v, addl, spec, "%s.%s" % (where, k), errors, depth + 1)
    elif t == "array":
        if not isinstance(value, list):
            errors.append("%s: expected an array, got %s" % (where, _jtype(value)))
            return errors
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append("%s: fewer than %d items" % (where, schema["minItems"]))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append("%s: more than %d items" % (where, schema["maxItems"]))
        items = schema.get("items")
        if items is not None:
            for i, v in enumerate(value):
                check_value(v, items, spec, "%s[%d]" % (where, i), errors, depth + 1)
    elif t == "string":
        if not isinstance(value, str):
            errors.append("%s: expected a string, got %s" % (where, _jtype(value)))
            return errors
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append("%s: shorter than %d characters" % (where, schema["minLength"]))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append("%s: longer than %d characters" % (where, schema["maxLength"]))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append("%s: %s does not match %s" % (where, _show(value), schema["pattern"]))
    elif t == "boolean":
        if not isinstance(value, bool):
            errors.append("%s: expected a boolean, got %s" % (where, _jtype(value)))
    elif t == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append("%s: expected an integer, got %s" % (where, _jtype(value)))
            return errors
        if schema.get("format") == "int32" and not -2**31 <= value < 2**31:
            errors.append("%s: %d is outside int32" % (where, value))
        if "minimum" in schema and value < schema["minimum"]:
            errors.append("%s: %d is below %s" % (where, value, schema["minimum"]))
        if "maximum" in schema and value > schema["maximum"]:
            errors.append("%s: %d is above %s" % (where, value, schema["maximum"]))
    elif t is None:
        pass
    else:
        errors.append("%s: schema type %r is not supported here" % (where, t))
    return errors


def _jtype(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _show(v):
    """A string value for an error message: short ones as is, long ones (tokens, keys,
    links with tickets) shortened so that test output does not carry secrets."""
    return repr(v) if len(v) <= 24 else "%r... (%d characters)" % (v[:8], len(v))


_SECRET_FIELDS = ("access_token", "refresh_token", "api_key", "signing_secret", "url", "payload",
                  "signature")


def _redacted(v):
    if isinstance(v, dict):
        return {k: ("<%d characters>" % len(x) if k in _SECRET_FIELDS and isinstance(x, str)
                    else _redacted(x)) for k, x in v.items()}
    if isinstance(v, list):
        return [_redacted(x) for x in v]
    return v


_NO_BODY = object()


def validate(operation_id_or_path_method, status, json_body=_NO_BODY, spec=None):
    """Validate one response (see the module docstring). Returns the schema or None."""
    spec = spec if spec is not None else load_spec()
    status = int(status)
    try:
        name, resp = response_for(operation_id_or_path_method, status, spec)
    except KeyError as e:
        raise SchemaError(str(e.args[0] if e.args else e))
    if isinstance(json_body, (bytes, bytearray)):
        if len(json_body) == 0:
            json_body = None
        else:
            try:
                json_body = json.loads(json_body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise SchemaError("%s %d: body is not JSON: %s" % (name, status, e))
    content = resp.get("content") or {}
    if not content:
        if json_body not in (None, _NO_BODY):
            raise SchemaError("%s %d: expected no body, got %s"
                              % (name, status, json.dumps(_redacted(json_body))[:2000]))
        return None
    if json_body is _NO_BODY or json_body is None:
        raise SchemaError("%s %d: a JSON body is required" % (name, status))
    media = content.get("application/json")
    if media is None or "schema" not in media:
        raise SchemaError("%s %d: no application/json schema documented" % (name, status))
    schema = media["schema"]
    errors = check_value(json_body, schema, spec)
    if status >= 400 and not errors and isinstance(json_body, dict):
        code = (json_body.get("error") or {}).get("code") if isinstance(
            json_body.get("error"), dict) else None
        allowed = ERROR_CODES.get(status)
        if allowed is not None and code not in allowed:
            errors.append("$.error.code: %r is not a code of status %d (%s)"
                          % (code, status, ", ".join(sorted(allowed))))
    if errors:
        raise SchemaError("%s %d: response does not match the spec:\n  %s\n  body: %s"
                          % (name, status, "\n  ".join(errors),
                             json.dumps(_redacted(json_body))[:2000]))
    return schema


__all__ = ["parse_yaml", "YamlError", "load_spec", "resolve_ref", "operations",
           "find_operation", "response_for", "check_value", "validate", "SchemaError",
           "SPEC_PATH", "ERROR_CODES"]
