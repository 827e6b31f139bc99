"""Randomized requests over the health routes of a real node's OpenAPI document: never a 5xx.

Schemathesis reads the node's own `/openapi.json` (with the health routes) and generates requests
within and outside the schema for every health operation, sending the institution's token; every
answer must be below 500, every 4xx problem+json, and every answer as documented. (The core routes
are fuzzed in tests/node.)

Strictness is that of `schemathesis run --checks all` (issue 14): every check schemathesis has
runs on every answer (`ALL_CHECKS`), including positive-data acceptance: a request the document
calls valid is never refused as malformed (400, 415). It may still be refused by what a schema
cannot state (a FHIR resource that does not validate, an unknown patient, a rule): 404, 409, 413,
422 (`POSITIVE_REFUSALS`), each documented for its operation.
"""

from __future__ import annotations

import json
from typing import Any, Final

import schemathesis
from health_harness import PROBLEM, HealthNet
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, Case, CheckFunction, GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Ok

load_all_checks()
#: Every check schemathesis registers, as `--checks all` runs them.
ALL_CHECKS: list[CheckFunction] = [check for check in CHECKS.get_all() if not isinstance(check, type)]
#: What a schema-valid request may still get besides 2xx (no 400 or 415: the document says what
#: is well-formed).
POSITIVE_REFUSALS: Final = ["2xx", "401", "403", "404", "409", "413", "422", "429"]
FUZZ_CONFIG: Final = SchemathesisConfig.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": POSITIVE_REFUSALS}}}
)
FUZZ_SETTINGS = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


def fuzz(url: str, token: str, operation: APIOperation[Any, Any, Any, Any], mode: GenerationMode) -> int:
    sent = 0
    auth = {"Authorization": f"Bearer {token}"}

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: Case[Any]) -> None:
        nonlocal sent
        # A case whose headers were made invalid (an empty or missing Authorization) goes as
        # generated: sending our token over it would make a schema-violating request valid.
        headers_mutated = any(
            location == ParameterLocation.HEADER and info.mode == GenerationMode.NEGATIVE
            for location, info in (case.meta.components.items() if case.meta is not None else ())
        )
        response = case.call(base_url=url, timeout=60, headers=None if headers_mutated else auth)
        what = f"{operation.label} [{mode.value}]: {case.as_curl_command()}"
        assert response.status_code < 500, (what, response.content[:500])
        if response.status_code >= 400:
            content_type = next(iter(response.headers.get("content-type", [])), "").split(";")[0]
            assert content_type == PROBLEM, what
            assert json.loads(response.content)["status"] == response.status_code, what
        case.validate_response(
            response, checks=ALL_CHECKS, headers=auth, transport_kwargs={"base_url": url, "headers": auth}
        )
        sent += 1

    call()
    return sent


def test_health_operations_answer_generated_requests_without_server_errors(shared_net: HealthNet) -> None:
    clinic = shared_net["clinic"]
    document = clinic.get("/openapi.json").json()
    assert {"apiToken", "patientSignature"} <= set(document["components"]["securitySchemes"])
    schema = schemathesis.openapi.from_dict(document, config=FUZZ_CONFIG)
    operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
    # The event page (ADR 0015) too; not its stream, which never ends.
    health = [op for op in operations if op.path.startswith("/v1/health/") or op.path == "/v1/events"]
    # 13; 1 bulk read (ADR 0012), 7 patient's rights (0014), 5 attachments (0013), 1 events (0015),
    # 6 claims (0017), 6 research (0019), 1 membership (0020)
    assert len(health) == 40
    for operation in health:
        assert fuzz(clinic.url, clinic.token, operation, GenerationMode.POSITIVE) > 0, operation.label
        spec = document["paths"][operation.path][operation.method.lower()]
        if spec.get("parameters") or spec.get("requestBody"):
            assert fuzz(clinic.url, clinic.token, operation, GenerationMode.NEGATIVE) > 0, operation.label
