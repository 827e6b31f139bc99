"""FHIR R4 validation of records, before they are encrypted (client side: the ledger never sees them).

A record is one FHIR resource or a Bundle of them, as JSON. It is checked twice:

1. structurally, with the `fhir.resources` R4B models (pydantic): element names, cardinalities,
   primitive formats (dates, decimals), references. Unknown elements are refused.
2. against the required code lists the models do not enforce: each resource's `status` (and
   Bundle `type`, DocumentReference `docStatus`, Condition clinical/verification status) must be
   one of the values the FHIR R4 specification binds them to, because the models accept any string.

Every failure is an `InvalidRecordError` whose message names the rule that failed and the *shape*
of the path (`Observation.code.coding[0].system`), never what the client submitted: a record is
PHI, error messages end up in logs, and a client-chosen element name is as much content as a value
(`Condition.Jane Doe DOB 1980-01-02 is not an element` leaked exactly that, issue 9, defect 8).
A path names an element only if it is declared by the FHIR model at that position (the walk in
`describe_path`); anything else is `<unknown element>`. Values, ids and resource type names a
client sent never appear.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from medledger.health.errors import InvalidRecordError
from medledger.health.json_text import JsonTextError, parse_json
from medledger.health.record_types import CONTEXT_TYPES
from medledger.health.types import RECORD_TYPES

#: Largest record JSON we accept (the encrypted record must fit a transaction).
RECORD_JSON_BYTES_MAX: Final = 160 * 1024
#: Deepest JSON nesting we accept (FHIR resources are shallow; bounds recursion).
RECORD_JSON_DEPTH_MAX: Final = 32
#: Most entries one Bundle record may carry.
BUNDLE_ENTRIES_MAX: Final = 200
#: Most error paths reported in one message.
ERRORS_REPORTED_MAX: Final = 10

#: Resource types a Bundle entry may hold besides the record types (context such a bundle needs:
#: `health.record_types.CONTEXT_TYPES`; a Patient and a Composition are record types).
BUNDLE_EXTRA_TYPES: Final = CONTEXT_TYPES
#: Resource types a resource may carry in `contained` besides its own type: context, never a
#: clinical resource of another type (an Immunization carrying a Condition would be shared, the
#: diagnosis with it, by a grant the patient was shown as "vaccinations").
CONTAINED_EXTRA_TYPES: Final = BUNDLE_EXTRA_TYPES

_OBSERVATION_STATUS = frozenset(
    {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"}
)
#: Required bindings (FHIR R4) of coded elements the models leave as free strings:
#: resource type → element → allowed codes.
CODE_LISTS: Final[dict[str, dict[str, frozenset[str]]]] = {
    "Observation": {"status": _OBSERVATION_STATUS},
    "DiagnosticReport": {
        "status": frozenset(
            {
                "registered",
                "partial",
                "preliminary",
                "final",
                "amended",
                "corrected",
                "appended",
                "cancelled",
                "entered-in-error",
                "unknown",
            }
        )
    },
    "Immunization": {"status": frozenset({"completed", "entered-in-error", "not-done"})},
    "DocumentReference": {
        "status": frozenset({"current", "superseded", "entered-in-error"}),
        "docStatus": frozenset({"preliminary", "final", "amended", "entered-in-error"}),
    },
    "Encounter": {
        "status": frozenset(
            {
                "planned",
                "arrived",
                "triaged",
                "in-progress",
                "onleave",
                "finished",
                "cancelled",
                "entered-in-error",
                "unknown",
            }
        )
    },
    "Procedure": {
        "status": frozenset(
            {
                "preparation",
                "in-progress",
                "not-done",
                "on-hold",
                "stopped",
                "completed",
                "entered-in-error",
                "unknown",
            }
        )
    },
    "MedicationStatement": {
        "status": frozenset(
            {
                "active",
                "completed",
                "entered-in-error",
                "intended",
                "stopped",
                "on-hold",
                "unknown",
                "not-taken",
            }
        )
    },
    "MedicationRequest": {
        "status": frozenset(
            {"active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"}
        ),
        "intent": frozenset(
            {
                "proposal",
                "plan",
                "order",
                "original-order",
                "reflex-order",
                "filler-order",
                "instance-order",
                "option",
            }
        ),
    },
    "Bundle": {
        "type": frozenset(
            {
                "document",
                "message",
                "transaction",
                "transaction-response",
                "batch",
                "batch-response",
                "history",
                "searchset",
                "collection",
            }
        )
    },
    "Composition": {"status": frozenset({"preliminary", "final", "amended", "entered-in-error"})},
}

#: Coded CodeableConcepts with a required binding: resource type → element → (system, codes).
CONCEPT_LISTS: Final[dict[str, dict[str, tuple[str, frozenset[str]]]]] = {
    "Condition": {
        "clinicalStatus": (
            "http://terminology.hl7.org/CodeSystem/condition-clinical",
            frozenset({"active", "recurrence", "relapse", "inactive", "remission", "resolved"}),
        ),
        "verificationStatus": (
            "http://terminology.hl7.org/CodeSystem/condition-ver-status",
            frozenset(
                {"unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error"}
            ),
        ),
    },
    "AllergyIntolerance": {
        "clinicalStatus": (
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
            frozenset({"active", "inactive", "resolved"}),
        ),
        "verificationStatus": (
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
            frozenset({"unconfirmed", "confirmed", "refuted", "entered-in-error"}),
        ),
    },
}

_ERROR_DESCRIPTIONS: Final = {
    "missing": "is required",
    "extra_forbidden": "is not an element of this resource",
    "value_error": "has a value of the wrong format",
    "string_pattern_mismatch": "has a value of the wrong format",
    "json_invalid": "has the wrong type",
    "string_type": "has the wrong type",
    "model_validation_format": "has the wrong type",
}
#: What a path shows in place of an element the model does not declare (the client chose its name).
UNKNOWN_ELEMENT: Final = "<unknown element>"
#: fhir.resources annotates complex elements with `abc.<Name>Type` (e.g. `abc.CodingType`).
_MODEL_TYPE_NAME = re.compile(r"\babc\.([A-Za-z]+)Type\b")
#: Polymorphic elements (`Bundle.entry.resource`, `contained`): the model is the item's resourceType.
_POLYMORPHIC_TYPES: Final = frozenset({"Resource", "DomainResource"})


@dataclasses.dataclass(frozen=True, slots=True)
class ValidatedRecord:
    """A record that passed validation: its type (the ledger's record type) and canonical JSON.

    `submitted_json` is the record's JSON text exactly as its author submitted it (UTF-8), which
    is what is encrypted and committed (`plaintext`): decimals keep their precision (`6.30`),
    long decimals their digits (issue 14, defect 4; ADR 0011). A record built in code from a
    Mapping has no submitted text: its plaintext is its canonical JSON.
    """

    record_type: str
    resource: dict[str, Any]
    canonical_json: bytes
    submitted_json: bytes = b""

    @property
    def plaintext(self) -> bytes:
        """The bytes a reader decrypts and the commitment covers."""
        return self.submitted_json or self.canonical_json


def compute_canonical_json(resource: Mapping[str, Any]) -> bytes:
    """One byte form of a JSON value: sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(
        resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def compute_record_json(resource: Mapping[str, Any]) -> bytes:
    """`compute_canonical_json` of a record, as an `InvalidRecordError` if it is not JSON text.

    A JSON parser accepts `"\\ud800"` (an escaped unpaired surrogate) and `1e400` (infinity), but
    neither can be written back as JSON text: such a record is invalid, never an untyped error
    (whose message would quote the offending character).
    """
    try:
        return compute_canonical_json(resource)
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        raise InvalidRecordError("record is not JSON text (not serialisable as UTF-8 JSON)") from None


def _depth(value: Any, depth: int = 0) -> int:
    if depth > RECORD_JSON_DEPTH_MAX:
        return depth
    if isinstance(value, dict):
        return max((_depth(v, depth + 1) for v in value.values()), default=depth + 1)
    if isinstance(value, list):
        return max((_depth(v, depth + 1) for v in value), default=depth + 1)
    return depth


def parse_record_json(data: bytes | str) -> dict[str, Any]:
    """Parse record JSON (bounded size, strict: `json_text.parse_json`); the top level must be an object.

    Strict because the text itself is what readers get (ADR 0011): UTF-8 only, no repeated
    member names (a validator and a reader must see one document), no NaN/Infinity, no number
    that overflows a float, no unpaired surrogate, no nesting deeper than `RECORD_JSON_DEPTH_MAX`.
    """
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    if size > RECORD_JSON_BYTES_MAX:
        raise InvalidRecordError(f"record JSON of {size} bytes exceeds {RECORD_JSON_BYTES_MAX}")
    try:
        value = parse_json(data)
    except JsonTextError as exc:
        raise InvalidRecordError(f"record is not valid JSON text: {exc.message}") from None
    if not isinstance(value, dict):
        raise InvalidRecordError("record JSON must be an object (a FHIR resource)")
    # Here, not only in `validate_record`: a reader opening a hostile author's record (its node
    # skipped validation) must refuse what the author's node would have, or it shows a record that
    # breaks the next program that walks it.
    if _depth(value) > RECORD_JSON_DEPTH_MAX:
        raise InvalidRecordError(f"record JSON nests deeper than {RECORD_JSON_DEPTH_MAX}")
    return value


@functools.cache
def _model_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A model's elements by their JSON name (`class`, `_status`), as FHIR spells them."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _model_class(name: str) -> type[BaseModel] | None:
    try:
        model: type[BaseModel] = get_fhir_model_class(name)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None
    return model


def _element_model(annotation: object, value: object) -> type[BaseModel] | None:
    """The model of an element's value (None: a primitive, or not determinable)."""
    names = set(_MODEL_TYPE_NAME.findall(str(annotation)))
    if len(names) != 1:
        return None
    (name,) = names
    if name in _POLYMORPHIC_TYPES:
        resource_type = value.get("resourceType") if isinstance(value, Mapping) else None
        # Only a name the FHIR models know is used (and never shown): it is vocabulary, not content.
        return _model_class(resource_type) if isinstance(resource_type, str) else None
    return _model_class(name)


def describe_path(resource_type: str, loc: tuple[int | str, ...], resource: Mapping[str, Any]) -> str:
    """The shape of an error location: declared element names and list indices, nothing else.

    Walks `loc` (a pydantic error location) down the FHIR models alongside the submitted JSON:
    a name is shown only if the model at that position declares it; anything else, and anything
    below it, is `UNKNOWN_ELEMENT`. The submitted JSON is only read to follow list items and the
    resourceType of polymorphic elements; nothing of it is copied into the path.
    """
    path = resource_type
    model: type[BaseModel] | None = _model_class(resource_type)
    annotation: object = None
    value: object = resource
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            value = value[part] if isinstance(value, list) and 0 <= part < len(value) else None
            continue
        if model is None and annotation is not None:
            model = _element_model(annotation, value)
        field = _model_fields(model).get(part) if model is not None else None
        if field is None:
            path += f".{UNKNOWN_ELEMENT}"
            model, annotation, value = None, None, None
            continue
        path += f".{part}"
        value = value.get(part) if isinstance(value, Mapping) else None
        model, annotation = None, field.annotation
    return path


def _validate_model(resource_type: str, resource: dict[str, Any]) -> None:
    model = get_fhir_model_class(resource_type)
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        problems: list[str] = []
        paths: list[str] = []
        for error in exc.errors()[:ERRORS_REPORTED_MAX]:
            loc = tuple(p for p in error["loc"] if p != "root")
            path = describe_path(resource_type, loc, resource)
            paths.append(path)
            problems.append(f"{path} {_ERROR_DESCRIPTIONS.get(error['type'], 'is invalid')}")
        more = exc.error_count() - len(problems)
        suffix = f" (and {more} more)" if more > 0 else ""
        raise InvalidRecordError(
            f"not a valid FHIR R4 {resource_type}: " + "; ".join(problems) + suffix, paths=tuple(paths)
        ) from None
    except (ValueError, TypeError, KeyError, AttributeError):
        # fhir.resources raises plain errors for some malformed inputs (e.g. unknown nested types).
        raise InvalidRecordError(f"not a valid FHIR R4 {resource_type}", paths=(resource_type,)) from None


def _validate_codes(resource_type: str, resource: Mapping[str, Any], where: str) -> None:
    for element, codes in CODE_LISTS.get(resource_type, {}).items():
        value = resource.get(element)
        path = f"{where}.{element}"
        # Bundle entries are checked before the model runs: a code may be any JSON value yet.
        if value is not None and not isinstance(value, str):
            raise InvalidRecordError(f"{path} has the wrong type", paths=(path,))
        if value is not None and value not in codes:
            raise InvalidRecordError(
                f"{path} is not one of the codes FHIR R4 allows: {', '.join(sorted(codes))}", paths=(path,)
            )
    for element, (system, codes) in CONCEPT_LISTS.get(resource_type, {}).items():
        concept = resource.get(element)
        if not isinstance(concept, Mapping):
            continue
        codings = concept.get("coding") or ()
        for i, coding in enumerate(codings if isinstance(codings, list) else ()):
            if not isinstance(coding, Mapping) or coding.get("system") != system:
                continue
            path = f"{where}.{element}.coding[{i}].code"
            code = coding.get("code")
            if code is not None and not isinstance(code, str):
                raise InvalidRecordError(f"{path} has the wrong type", paths=(path,))
            if code not in codes:
                raise InvalidRecordError(
                    f"{path} is not one of the codes of {system}: {', '.join(sorted(codes))}", paths=(path,)
                )


def _resource_type(resource: Mapping[str, Any], where: str, allowed: frozenset[str]) -> str:
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise InvalidRecordError(f"{where}.resourceType is required", paths=(f"{where}.resourceType",))
    if resource_type not in allowed:
        raise InvalidRecordError(
            f"{where}.resourceType is not a type accepted here ({len(allowed)} are: docs/health.md, "
            "Record types)",
            paths=(f"{where}.resourceType",),
        )
    return resource_type


def _validate_contained(resource: Mapping[str, Any], resource_type: str, where: str) -> None:
    contained = resource.get("contained")
    if contained is None:
        return
    if not isinstance(contained, list):
        path = f"{where}.contained"
        raise InvalidRecordError(f"{path} must be a list of resources", paths=(path,))
    for i, inner in enumerate(contained):
        path = f"{where}.contained[{i}]"
        if not isinstance(inner, Mapping):
            raise InvalidRecordError(f"{path} must be a resource", paths=(path,))
        _resource_type(inner, path, CONTAINED_EXTRA_TYPES | {resource_type})
        if "contained" in inner:
            raise InvalidRecordError(
                f"{path}.contained: a contained resource holds no others", paths=(f"{path}.contained",)
            )


def validate_content_types(resource: Mapping[str, Any], record_type: str) -> None:
    """That a record's content carries no clinical resource of another type than its label says.

    The ledger's record type is what grants are scoped by and what the patient is shown, so the
    resources inside a record (`contained`, also in a Bundle's entries) are context or of the
    type of the resource that holds them (`InvalidRecordError` naming the path). Structural only:
    readers run it on what they decrypt (`records.open_record`), authors as part of
    `validate_record`.
    """
    if record_type != "Bundle":
        _validate_contained(resource, record_type, record_type)
        return
    entries = resource.get("entry") or []
    for i, entry in enumerate(entries if isinstance(entries, list) else ()):
        inner = entry.get("resource") if isinstance(entry, Mapping) else None
        inner_type = inner.get("resourceType") if isinstance(inner, Mapping) else None
        if isinstance(inner, Mapping) and isinstance(inner_type, str):
            _validate_contained(inner, inner_type, f"Bundle.entry[{i}].resource")


def validate_record(record: bytes | str | Mapping[str, Any]) -> ValidatedRecord:
    """Validate a FHIR R4 record (a resource or a Bundle); raise `InvalidRecordError` if not valid."""
    if isinstance(record, bytes | str):
        resource = parse_record_json(record)
        # parse_record_json refused unpaired surrogates: the text encodes as UTF-8.
        submitted = record if isinstance(record, bytes) else record.encode("utf-8")
    else:
        # Round-trip so a Mapping from code obeys the same JSON rules as bytes from a client.
        submitted = compute_record_json(record)
        resource = parse_record_json(submitted)
    record_type = _resource_type(resource, "record", RECORD_TYPES)
    if record_type == "Bundle":
        entries = resource.get("entry") or []
        if not isinstance(entries, list) or len(entries) > BUNDLE_ENTRIES_MAX:
            raise InvalidRecordError(f"Bundle.entry must be a list of at most {BUNDLE_ENTRIES_MAX} entries")
        for i, entry in enumerate(entries):
            where = f"Bundle.entry[{i}].resource"
            inner = entry.get("resource") if isinstance(entry, Mapping) else None
            if not isinstance(inner, Mapping):
                raise InvalidRecordError(f"{where} is required", paths=(where,))
            inner_type = _resource_type(inner, where, (RECORD_TYPES - {"Bundle"}) | BUNDLE_EXTRA_TYPES)
            _validate_codes(inner_type, inner, where)
    validate_content_types(resource, record_type)
    _validate_model(record_type, resource)
    _validate_codes(record_type, resource, record_type)
    return ValidatedRecord(record_type, resource, compute_canonical_json(resource), submitted)


def validate_resource(resource: bytes | str | Mapping[str, Any], resource_type: str) -> ValidatedRecord:
    """Validate one FHIR R4 resource of `resource_type` that is not a patient record (a `Claim`,
    a `ClaimResponse`): the same JSON rules and model check as a record (`InvalidRecordError`)."""
    if isinstance(resource, bytes | str):
        parsed = parse_record_json(resource)
        submitted = resource if isinstance(resource, bytes) else resource.encode("utf-8")
    else:
        submitted = compute_record_json(resource)
        parsed = parse_record_json(submitted)
    _resource_type(parsed, resource_type, frozenset({resource_type}))
    _validate_model(resource_type, parsed)
    return ValidatedRecord(resource_type, parsed, compute_canonical_json(parsed), submitted)
