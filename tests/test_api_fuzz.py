"""Schemathesis against the OpenAPI schema, over real HTTP to a live server: no 5xx, no
undocumented status code or content type, no answer that violates the schema, invalid input
refused with a 4xx, and no operation that works without a key.

The schema is generated at collection time (schemathesis' lazy fixture loader does not work with
pytest 9.2); `test_served_schema_is_the_fuzzed_one` shows it is the one /api/v1/schema.json serves.

Bounded: FUZZ_EXAMPLES examples per operation (environment variable, default 15), so the whole
run stays well under a minute."""

import copy
import json
import os

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fleet.models import Credential, Mailbox, Tag

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


@pytest.fixture
def fuzz_data(transactional_db, api_keys, mailboxes, ws_a, settings, oauth_app):
    """Some of everything; the OAuth app is registered with the Microsoft sandbox, so that the
    connect operations reach a (loopback) Microsoft."""
    settings.API_RATE_LIMIT = "100000/min"  # the fuzzer is one fast client
    # A bulk add the fuzzer manages to start (naming the credential below) answers 202 at once;
    # no worker runs here, so it never reaches Graph.
    settings.API_BULK_WAIT_SECONDS = 0
    Tag.objects.create(workspace=ws_a, name="fuzz")
    Mailbox.objects.create(workspace=ws_a, email="fuzz@alpha.example", auth_method="oauth")
    Credential.objects.create(
        workspace=ws_a, name="graph", kind="graph_app_only", client_id="c", client_secret="s"
    )
    return api_keys


def generated_schema() -> dict:
    spec = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(spec))


SPEC = generated_schema()
schema = schemathesis.openapi.from_dict(SPEC)


def test_served_schema_is_the_fuzzed_one(client):
    served = client.get("/api/v1/schema.json")
    assert served.status_code == 200
    assert served.json() == SPEC
    operations = [(path, m) for path, item in SPEC["paths"].items() for m in item]
    assert len(operations) >= 12


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_schema(case, fuzz_data, live_server):
    # A superuser's platform key reaches every operation, so the fuzzer gets past auth.
    case.call_and_validate(
        base_url=live_server.url,
        headers={"X-Api-Key": fuzz_data["root_platform"]},
        checks=CHECKS,
        timeout=30,
    )


@schema.parametrize()
@settings(
    max_examples=max(3, EXAMPLES // 3),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_with_a_workspace_key(case, fuzz_data, live_server):
    # A viewer's workspace key: most writes answer 403, which must be documented and enveloped.
    case.call_and_validate(
        base_url=live_server.url,
        headers={"X-Api-Key": fuzz_data["a_viewer"]},
        checks=CHECKS,
        timeout=30,
    )


def bulk_add_spec() -> dict:
    """The bulk add operation alone, without its `workspace_id` parameter: a workspace key acts
    in its own workspace, and random ids would spend most examples on 400/403."""
    spec = copy.deepcopy(SPEC)
    post = spec["paths"]["/api/v1/mailboxes/microsoft/bulk"]["post"]
    post["parameters"] = [p for p in post.get("parameters", []) if p["name"] != "workspace_id"]
    spec["paths"] = {"/api/v1/mailboxes/microsoft/bulk": {"post": post}}
    return spec


@schemathesis.openapi.from_dict(bulk_add_spec()).parametrize()
@settings(
    max_examples=EXAMPLES * 2,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_bulk_add_body_fuzzed_with_an_operator_key(case, fuzz_data, live_server):
    """Seed 004's bulk add with a key that reaches its workspace, so generated bodies get past
    the key to the body and credential checks; the workspace's one Graph credential is valid, so
    a good body starts a run (202 at once: API_BULK_WAIT_SECONDS is 0 and no worker runs)."""
    Credential.objects.filter(kind="graph_app_only").update(status="valid")
    case.call_and_validate(
        base_url=live_server.url,
        headers={"X-Api-Key": fuzz_data["a_operator"]},
        checks=CHECKS,
        timeout=30,
    )
