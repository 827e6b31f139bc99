"""The OpenAPI document restates nothing by hand: its enums are the models' code lists and enums,
its bounds the named limits the handlers enforce, and each health view's schema the view's model
fields. These tests fail when a value in the document drifts from its source, show that a change to
a model or a limit changes the document, and check the JSON views against the schemas (the fuzz
tests check the same against a live node's answers).

No node process: `build_openapi` and the views are plain functions.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from typing import Any, cast

import pytest

from medledger.chain.codec import Text, encode
from medledger.chain.limits import API_BATCH_TXS_MAX, API_BLOCK_RANGE_MAX
from medledger.health import policy
from medledger.health import state as st
from medledger.health.types import (
    EVENTS,
    GRANT_RECORDS_MAX,
    INQUIRY_STATUSES,
    INSTITUTION_NAME_LENGTH_MAX,
    PURPOSES,
    REASON_LENGTH_MAX,
    RECEIPT_RECORDS_MAX,
    RECORD_TYPES,
    REPRESENTATIVES_MAX,
    ROLES,
    SCOPE_RECORD_IDS_MAX,
    AuditEvent,
    EnvelopeWire,
    GrantState,
    InquiryState,
    Institution,
    PatientState,
    RecordKey,
    RecordState,
    RequestAccessBody,
    Scope,
    SealedReason,
    WrappedKey,
)
from medledger.node import api, health_api
from medledger.node.health_api import VIEW_OMITS, HealthService, WriteStatus
from medledger.node.node import Node
from medledger.node.openapi import build_openapi

Document = dict[str, Any]


@pytest.fixture
def document() -> Document:
    return build_openapi(health=True)


def schema_of(document: Document, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


def prop(document: Document, name: str, field: str) -> dict[str, Any]:
    schema: dict[str, Any] = schema_of(document, name)["properties"][field]
    return schema


def parameter(document: Document, path: str, name: str, method: str = "get") -> dict[str, Any]:
    (found,) = [p for p in document["paths"][path][method]["parameters"] if p["name"] == name]
    schema: dict[str, Any] = found["schema"]
    return schema


# --- enums: the models' code lists and enums ----------------------------------------------------

ENUMS: list[tuple[str, str, frozenset[str]]] = [
    ("NewInquiry", "purpose", PURPOSES),
    ("Inquiry", "purpose", PURPOSES),
    ("Grant", "purpose", PURPOSES),
    ("EncryptedRecord", "record_type", RECORD_TYPES),
    ("HealthWrite", "record_type", RECORD_TYPES),
    ("Inquiry", "status", INQUIRY_STATUSES),
    ("InstitutionInquiry", "status", INQUIRY_STATUSES),
    ("Institution", "role", ROLES),
    ("AuditEvent", "event", EVENTS),
    ("InstitutionRecord", "access", frozenset(policy.RecordAccess)),
    ("HealthWrite", "status", frozenset(WriteStatus)),
]


@pytest.mark.parametrize(("schema", "field", "members"), ENUMS, ids=[f"{s}.{f}" for s, f, _ in ENUMS])
def test_enum_is_the_model_code_list(
    document: Document, schema: str, field: str, members: frozenset[str]
) -> None:
    assert prop(document, schema, field)["enum"] == sorted(members)


def test_purpose_enum_is_what_the_codec_accepts(document: Document) -> None:
    purpose = RequestAccessBody.WIRE_FIELDS["purpose"]
    assert isinstance(purpose, Text)
    assert purpose.allowed is not None
    assert prop(document, "NewInquiry", "purpose")["enum"] == sorted(purpose.allowed)


def test_record_type_lists_are_the_record_types(document: Document) -> None:
    assert prop(document, "Scope", "record_types")["items"]["enum"] == sorted(RECORD_TYPES)
    assert prop(document, "NewInquiry", "record_types")["items"]["enum"] == sorted(RECORD_TYPES)


def test_inquiry_status_filter_is_the_statuses(document: Document) -> None:
    status = parameter(document, "/v1/health/patients/{patient_id}/inquiries", "status")
    assert status["enum"] == sorted(INQUIRY_STATUSES)


# --- limits: the named constants ----------------------------------------------------------------


def test_request_limits_are_the_constants(document: Document) -> None:
    assert prop(document, "NewInquiry", "reason")["maxLength"] == REASON_LENGTH_MAX
    assert prop(document, "NewInquiry", "record_ids")["maxItems"] == SCOPE_RECORD_IDS_MAX
    ttl = prop(document, "NewInquiry", "ttl_ms")
    assert (ttl["minimum"], ttl["maximum"]) == (policy.INQUIRY_TTL_MS_MIN, policy.INQUIRY_TTL_MS_REQUEST_MAX)
    assert prop(document, "NewInquiry", "to_ms")["maximum"] == health_api.TIME_MS_MAX
    wait = parameter(document, "/v1/health/institution/records", "wait_ms", "post")
    assert wait["maximum"] == health_api.WAIT_MS_MAX
    assert (
        str(health_api.WAIT_MS_DEFAULT)
        in document["paths"]["/v1/health/institution/records"]["post"]["parameters"][0]["description"]
    )
    limit = parameter(document, "/v1/health/patients/{patient_id}/records", "limit")
    assert limit["maximum"] == health_api.LIST_LIMIT_MAX == st.LIST_LIMIT_MAX
    start = parameter(document, "/v1/health/patients/{patient_id}/audit", "start")
    assert start["maximum"] == health_api.LIST_START_MAX


def test_core_limits_are_the_api_constants(document: Document) -> None:
    assert parameter(document, "/v1/txs", "wait_ms", "post")["maximum"] == api.WAIT_MS_MAX
    assert schema_of(document, "TxBatch")["properties"]["txs"]["maxItems"] == API_BATCH_TXS_MAX
    summary = document["paths"]["/v1/blocks"]["get"]["summary"]
    assert f"at most {API_BLOCK_RANGE_MAX} blocks" in summary
    assert f"about {api.API_BLOCKS_PAGE_BYTES_MAX // (1024 * 1024)} MB" in summary


def test_view_limits_are_the_model_limits(document: Document) -> None:
    assert prop(document, "Patient", "representatives")["maxItems"] == REPRESENTATIVES_MAX
    assert prop(document, "Institution", "name")["maxLength"] == INSTITUTION_NAME_LENGTH_MAX
    assert prop(document, "Grant", "record_ids")["maxItems"] == GRANT_RECORDS_MAX
    assert prop(document, "AuditEvent", "record_ids")["maxItems"] == RECEIPT_RECORDS_MAX
    assert prop(document, "Scope", "record_ids")["maxItems"] == SCOPE_RECORD_IDS_MAX


# --- the document follows its sources -----------------------------------------------------------


def test_document_follows_a_model_change(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the document reads the patched specs here: nothing is encoded while they are patched.
    monkeypatch.setitem(Institution.WIRE_FIELDS, "name", Text(max_length=7))
    monkeypatch.setitem(VIEW_OMITS, PatientState, frozenset({"representatives"}))
    monkeypatch.setattr(api, "WAIT_MS_MAX", 1234)
    document = build_openapi(health=True)
    assert prop(document, "Institution", "name")["maxLength"] == 7
    assert "representatives" not in schema_of(document, "Patient")["properties"]
    assert parameter(document, "/v1/txs", "wait_ms", "post")["maximum"] == 1234


VIEW_SCHEMAS: dict[type, str] = {
    Institution: "Institution",
    PatientState: "Patient",
    Scope: "Scope",
    RecordState: "EncryptedRecord",
    InquiryState: "Inquiry",
    GrantState: "Grant",
    AuditEvent: "AuditEvent",
}


@pytest.mark.parametrize("model", list(VIEW_SCHEMAS), ids=lambda m: m.__name__)
def test_view_schema_lists_the_model_fields(document: Document, model: type) -> None:
    properties = schema_of(document, VIEW_SCHEMAS[model])["properties"]
    names = {f.name for f in dataclasses.fields(model)}
    assert names - VIEW_OMITS[model] <= set(properties)
    assert not VIEW_OMITS[model] & set(properties)


# --- the views match the schemas ----------------------------------------------------------------


def check(document: Document, schema: dict[str, Any], value: object, where: str) -> None:
    """`value` conforms to `schema` for the keywords this document uses."""
    if "$ref" in schema:
        check(document, schema_of(document, schema["$ref"].rsplit("/", 1)[1]), value, where)
        return
    if value is None:
        assert schema.get("nullable"), f"{where}: null"
        return
    if "allOf" in schema:
        for part in schema["allOf"]:
            check(document, part, value, where)
        return
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict), where
        assert set(schema.get("required", ())) <= set(value), (where, sorted(value))
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                check(document, properties[key], item, f"{where}.{key}")
            else:
                assert schema.get("additionalProperties", True) is not False, f"{where}.{key}"
    elif kind == "array":
        assert isinstance(value, list), where
        assert len(value) <= schema.get("maxItems", len(value)), where
        for i, item in enumerate(value):
            check(document, schema["items"], item, f"{where}[{i}]")
    elif kind == "integer":
        assert type(value) is int, where
        assert schema.get("minimum", value) <= value <= schema.get("maximum", value), where
    elif kind == "boolean":
        assert type(value) is bool, where
    elif kind == "string":
        assert isinstance(value, str), where
        if "enum" in schema:
            assert value in schema["enum"], where
        if "pattern" in schema:
            assert re.search(schema["pattern"], value), (where, value)
        assert schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)), where


def key(n: int) -> bytes:
    return bytes([n]) * 32


CLINIC = Institution("Synthetic Clinic", "clinic", key(1), key(2))
SCOPE = Scope(("Immunization", "Observation"), (key(9),), 0, 2**64 - 1)
ENVELOPE = EnvelopeWire(bytes(24), bytes(40), (WrappedKey(key(2), bytes(80)), WrappedKey(key(5), bytes(80))))
REASON = SealedReason(bytes(24), bytes(40), (WrappedKey(key(2), bytes(80)),))
PATIENT = PatientState(key(3), key(4), key(5), (key(6),), 2, 1_700_000_000_000)
RECORD = RecordState(
    key(7), key(3), key(1), "Observation", key(8), ENVELOPE, b"", key(10), 3, 1_700_000_001_000
)
INQUIRY = InquiryState(key(11), key(3), key(12), SCOPE, "TREAT", 1_800_000_000_000, REASON, "open", b"", 4, 1)
GRANT = GrantState(
    key(13), key(11), key(3), key(12), key(14), key(4), SCOPE, "TREAT", 1_800_000_000_000,
    (RecordKey(key(7), bytes(80)),), 0, 0, 5, 1_700_000_002_000,
)  # fmt: skip
EVENT = AuditEvent("grant", key(13), key(4), key(11), (key(7),), 5, 1_700_000_002_000)


def encoded(value: Any) -> str:
    return base64.b64encode(encode(value)).decode()


def test_views_match_their_schemas(document: Document) -> None:
    # The views read only the institutions' names from the service.
    service = HealthService(node=cast(Node, None), fixed_institutions={CLINIC.sign_key: CLINIC})
    views: list[tuple[str, dict[str, Any]]] = [
        ("Institution", health_api.institution_json(CLINIC)),
        ("Patient", health_api.patient_json(PATIENT)),
        ("Scope", health_api.model_json(SCOPE)),
        ("EncryptedRecord", {**health_api.record_json(service, RECORD), "encoded": encoded(RECORD)}),
        ("Inquiry", {**health_api.inquiry_json(service, INQUIRY), "encoded": encoded(INQUIRY)}),
        ("Grant", {**health_api.grant_json(service, GRANT), "encoded": encoded(GRANT)}),
        ("AuditEvent", {**health_api.audit_json(service, EVENT), "encoded": encoded(EVENT)}),
    ]
    for name, view in views:
        check(document, schema_of(document, name), view, name)
        # Every key documented (`check` asserts the required ones are there).
        assert set(view) <= set(schema_of(document, name)["properties"]), name
    record = health_api.record_json(service, RECORD)
    assert (record["author_name"], record["readers"], record["supersedes"]) == ("Synthetic Clinic", 2, "")
    assert health_api.grant_json(service, GRANT)["record_ids"] == [key(7).hex()]


def test_invalid_view_of_a_value_that_is_no_model() -> None:
    with pytest.raises(TypeError, match="dataclass"):
        health_api.model_json(Institution)
    with pytest.raises(TypeError, match="dataclass"):
        health_api.model_json({"name": "x"})
