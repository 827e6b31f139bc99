"""Randomized requests over the health routes of a real node's OpenAPI document: never a 5xx.

Schemathesis reads the node's own `/openapi.json` (with the health routes) and generates requests
within and outside the schema for every health operation, sending the institution's token; every
answer must be below 500, every 4xx problem+json, and every answer as documented. (The core routes
are fuzzed in tests/node.)
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from health_harness import PROBLEM, HealthNet
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, Case, CheckFunction, GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi import checks as openapi_checks

CONFORMANCE_CHECKS: list[CheckFunction] = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
]
FUZZ_SETTINGS = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


def fuzz(url: str, token: str, operation: APIOperation[Any, Any, Any, Any], mode: GenerationMode) -> int:
    sent = 0

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: Case[Any]) -> None:
        nonlocal sent
        response = case.call(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"})
        what = f"{operation.label} [{mode.value}]: {case.as_curl_command()}"
        assert response.status_code < 500, (what, response.content[:500])
        if response.status_code >= 400:
            content_type = next(iter(response.headers.get("content-type", [])), "").split(";")[0]
            assert content_type == PROBLEM, what
            assert json.loads(response.content)["status"] == response.status_code, what
        case.validate_response(response, checks=CONFORMANCE_CHECKS)
        sent += 1

    call()
    return sent


def test_health_operations_answer_generated_requests_without_server_errors(shared_net: HealthNet) -> None:
    clinic = shared_net["clinic"]
    document = clinic.get("/openapi.json").json()
    assert {"apiToken", "patientSignature"} <= set(document["components"]["securitySchemes"])
    schema = schemathesis.openapi.from_dict(document)
    operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
    health = [op for op in operations if op.path.startswith("/v1/health/")]
    assert len(health) == 26  # 13; 1 bulk read (ADR 0012), 7 patient's rights (0014), 5 attachments (0013)
    for operation in health:
        assert fuzz(clinic.url, clinic.token, operation, GenerationMode.POSITIVE) > 0, operation.label
        spec = document["paths"][operation.path][operation.method.lower()]
        if spec.get("parameters") or spec.get("requestBody"):
            assert fuzz(clinic.url, clinic.token, operation, GenerationMode.NEGATIVE) > 0, operation.label
