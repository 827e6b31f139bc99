"""Fuzzing a real node process through its HTTP API.

Schemathesis reads the node's own `/openapi.json` and generates requests for every operation, both
within the schema and deliberately outside it; plain Hypothesis strategies post arbitrary bytes,
JSON and near-transactions to the submission routes. Whatever arrives, the node must answer with a
status below 500, every 4xx must be application/problem+json with the RFC 9457 members, every
answer must match the document (status codes, media types, body schemas), and since no generated
request can carry a validly signed tx, the chain must not move.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import msgpack
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from node_harness import MSGPACK, PROBLEM, NodeClient, Reply, media_type
from schemathesis import APIOperation, Case, CheckFunction, GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi import checks as openapi_checks

CONFORMANCE_CHECKS: list[CheckFunction] = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
]
EXAMPLES_PER_OPERATION = 40
EXAMPLES_RAW = 300
#: derandomize: the same examples on every run, so a result here never depends on a seed.
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


def assert_client_error_shape(status: int, content_type: str, body: bytes, what: str) -> None:
    assert status < 500, f"{what}: {status} {body[:500]!r}"
    if status >= 400:
        assert content_type == PROBLEM, f"{what}: {status} with {content_type}"
        problem = json.loads(body)
        assert problem["status"] == status, what
        for member in ("type", "title", "detail"):
            assert isinstance(problem[member], str), (what, problem)
            assert problem[member], (what, problem)


def assert_chain_untouched(node: NodeClient) -> None:
    status = node.status()
    assert status["height"] == 0
    assert status["mempool"] == {"txs": 0, "bytes": 0}


def fuzz_operation(
    node: NodeClient, operation: APIOperation[Any, Any, Any, Any], mode: GenerationMode
) -> int:
    """Call `operation` with generated cases; returns how many were sent."""
    sent = 0

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: Case[Any]) -> None:
        nonlocal sent
        # With the node's token: the handlers behind the access check get the generated input.
        response = case.call(base_url=node.url, timeout=30, headers={"Authorization": f"Bearer {node.token}"})
        content_type = media_type(next(iter(response.headers.get("content-type", [])), None))
        what = f"{operation.label} [{mode.value}]: {case.as_curl_command()}"
        assert_client_error_shape(response.status_code, content_type, response.content, what)
        # And the answer is the documented one: status, media type and body schema; a request
        # outside the schema is refused. (Schema-valid requests may still be refused: random
        # base64 is never a signed tx, so schemathesis' positive-acceptance check does not apply.)
        case.validate_response(response, checks=CONFORMANCE_CHECKS)
        sent += 1

    call()
    return sent


def test_every_operation_answers_generated_requests_without_server_errors(node_process: NodeClient) -> None:
    node = node_process
    document = node.get("/openapi.json").json()
    # From the served document itself: `from_url` would leave out the schema's own endpoint.
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) == sum(len(item) for item in document["paths"].values())
    for operation in operations:
        assert fuzz_operation(node, operation, GenerationMode.POSITIVE) > 0, operation.label
        # Requests outside the schema exist only where it constrains something: parameters, bodies.
        spec = document["paths"][operation.path][operation.method.lower()]
        if spec.get("parameters") or spec.get("requestBody"):
            assert fuzz_operation(node, operation, GenerationMode.NEGATIVE) > 0, operation.label
    assert_chain_untouched(node)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
#: Every integer msgpack can carry.
msgpack_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
base64_strings = st.binary(max_size=300).map(lambda raw: base64.b64encode(raw).decode())
tx_like_fields = st.fixed_dictionaries(
    {
        "body": st.binary(max_size=64) | st.text(max_size=8) | msgpack_ints,
        "chain_id": st.sampled_from(["medledger-test", "x"]) | st.binary(max_size=8),
        "kind": st.sampled_from(["kv.set", "kv.other"]) | msgpack_ints,
        "nonce": msgpack_ints | st.binary(max_size=8),
        "sender": st.binary(min_size=31, max_size=33),
        "signature": st.binary(min_size=63, max_size=65),
        "timestamp_ms": st.integers(min_value=0, max_value=2**64 - 1) | st.none(),
    }
)
#: Bytes that look like canonical txs (the right keys, sometimes the right types, never a signature).
tx_like = tx_like_fields.map(lambda fields: msgpack.packb(dict(sorted(fields.items())), use_bin_type=True))
raw_txs = st.binary(max_size=400) | tx_like

bodies: st.SearchStrategy[tuple[str, bytes]] = st.one_of(
    st.tuples(st.sampled_from(["application/json", MSGPACK, "text/plain", ""]), st.binary(max_size=600)),
    st.tuples(st.just("application/json"), json_values.map(lambda v: json.dumps(v).encode())),
    st.tuples(
        st.just("application/json"),
        st.one_of(
            st.fixed_dictionaries(
                {"tx": base64_strings | tx_like.map(lambda r: base64.b64encode(r).decode())}
            ),
            st.fixed_dictionaries({"txs": st.lists(base64_strings | json_values, max_size=5)}),
        ).map(lambda v: json.dumps(v).encode()),
    ),
    st.tuples(st.sampled_from([MSGPACK, "application/x-msgpack"]), raw_txs),
    st.tuples(
        st.sampled_from([MSGPACK, "application/x-msgpack"]),
        st.lists(raw_txs | msgpack_ints | st.text(max_size=4), max_size=6).map(
            lambda items: msgpack.packb(items, use_bin_type=True)
        ),
    ),
)


def test_submission_routes_refuse_arbitrary_bodies_with_problems(node_process: NodeClient) -> None:
    node = node_process

    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES_RAW)
    @given(
        path=st.sampled_from(["/v1/txs", "/v1/txs/batch"]),
        wait=st.sampled_from(["", "?wait_ms=0", "?wait_ms=50"]),
        body=bodies,
    )
    def post(path: str, wait: str, body: tuple[str, bytes]) -> None:
        content_type, data = body
        headers = {"Content-Type": content_type} if content_type else {}
        reply: Reply = node.request("POST", path + wait, body=data, headers=headers)
        assert 400 <= reply.status < 500, (path, body, reply)
        assert_client_error_shape(reply.status, reply.content_type, reply.body, f"POST {path} {body!r}")

    post()
    assert_chain_untouched(node)
