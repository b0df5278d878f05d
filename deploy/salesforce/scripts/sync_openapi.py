#!/usr/bin/env python3
"""sync_openapi.py: write the External Service registration from proto/openapi.yaml.

    python3 deploy/salesforce/scripts/sync_openapi.py           # rewrite the registration
    python3 deploy/salesforce/scripts/sync_openapi.py --check   # exit 1 when it is out of date

The registration (force-app/main/default/externalServiceRegistrations/
StripeTokenBroker.externalServiceRegistration-meta.xml) embeds the broker's OpenAPI contract
verbatim, bound to the Named Credential Stripe_Token_Broker. Run this after every change to
proto/openapi.yaml; tests/salesforce/check.py fails while the two differ.

Operations: every operationId of the contract is listed (External Services names an operation by
its operationId in lower case). The operator-only ones (API keys, the fleet view) are registered
inactive: an org key cannot call them, so a Flow should not offer them.
Standard library only.
"""
import os
import re
import sys
from xml.sax.saxutils import escape

HERE = os.path.dirname(os.path.abspath(__file__))
SF = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(SF))
SPEC = os.path.join(REPO, "proto", "openapi.yaml")
OUT = os.path.join(SF, "force-app", "main", "default", "externalServiceRegistrations",
                   "StripeTokenBroker.externalServiceRegistration-meta.xml")

NAME = "StripeTokenBroker"
NAMED_CREDENTIAL = "Stripe_Token_Broker"
INACTIVE = {"createApiKey", "listApiKeys", "deleteApiKey", "listOrgs"}  # operator only (admin token)
SERVICE_BINDING = ('{"host":"","basePath":"/","allowedSchemes":[],"requestMediaTypes":[],'
                   '"responseMediaTypes":[],"compatibleMediaTypes":{}}')


def operation_ids(text):
    """The operationIds of the spec, in file order."""
    return re.findall(r"^\s+operationId:\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?\s*$", text, re.M)


def render(spec_text):
    ops = operation_ids(spec_text)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<ExternalServiceRegistration xmlns="http://soap.sforce.com/2006/04/metadata">',
           "    <description>The Stripe token broker: getAccessToken for the payment Flow, connection "
           "status, one-time setup links and webhook signing secrets. Generated from proto/openapi.yaml "
           "by deploy/salesforce/scripts/sync_openapi.py; do not edit by hand.</description>",
           "    <label>%s</label>" % NAME,
           "    <namedCredential>%s</namedCredential>" % NAMED_CREDENTIAL]
    for op in ops:
        out += ["    <operations>",
                "        <active>%s</active>" % ("false" if op in INACTIVE else "true"),
                "        <name>%s</name>" % op.lower(),
                "    </operations>"]
    out += ["    <registrationProviderType>Custom</registrationProviderType>",
            "    <schema>%s</schema>" % escape(spec_text),
            "    <schemaType>OpenApi3</schemaType>",
            "    <schemaUploadFileExtension>yaml</schemaUploadFileExtension>",
            "    <schemaUploadFileName>openapi</schemaUploadFileName>",
            "    <serviceBinding>%s</serviceBinding>" % escape(SERVICE_BINDING, {'"': "&quot;"}),
            "    <status>Complete</status>",
            "    <systemVersion>3</systemVersion>",
            "</ExternalServiceRegistration>"]
    return "\n".join(out) + "\n"


def main(argv):
    with open(SPEC, encoding="utf-8") as f:
        text = f.read()
    want = render(text)
    if "--check" in argv:
        try:
            with open(OUT, encoding="utf-8") as f:
                have = f.read()
        except OSError:
            have = None
        if have != want:
            print("%s is out of date with proto/openapi.yaml: run python3 deploy/salesforce/scripts/sync_openapi.py"
                  % os.path.relpath(OUT, REPO))
            return 1
        print("up to date")
        return 0
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    tmp = OUT + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(want)
    os.replace(tmp, OUT)
    print("wrote %s (%d operations)" % (os.path.relpath(OUT, REPO), len(operation_ids(text))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
