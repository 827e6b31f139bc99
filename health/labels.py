"""Security labels of a record as its authoring node computes them on input (issue 12).

A record's labels on the ledger (`claims_types.SECURITY_LABELS`) are the union of

- the FHIR security labels its author put in `meta.security` (of the resource, of each entry of a
  Bundle, and of each contained resource): codings of the v3-ActCode system with a sensitivity
  code we list, and of the v3-Confidentiality system with R or V, each system under its URL, OID
  or pre-R4 URL, codes in any case, and a coding with no system whose code is one of those (other
  codes of those systems restrict nothing the rules act on and are ignored; codings of other
  systems too), and
- a default mapping from the diagnosis codes of a Condition (`DEFAULT_CONDITION_LABELS`): an
  author that forgets to label an HIV diagnosis still does not share it under a standing consent
  that does not name HIV. The mapping only ever adds labels.

Plain functions over the parsed resource: no I/O. The rules never read content (it is sealed); they
take the labels as the author's word, as they take its record type.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from medledger.health.claims_types import (
    CONFIDENTIALITY_LABELS,
    CONFIDENTIALITY_SYSTEM,
    SENSITIVITY_LABELS,
    SENSITIVITY_SYSTEM,
)

ICD10_SYSTEM: Final = "http://hl7.org/fhir/sid/icd-10"
SNOMED_SYSTEM: Final = "http://snomed.info/sct"
#: Each diagnosis system under every spelling met in real data (ICD-10-CM shares ICD-10's codes
#: for these chapters).
_DIAGNOSIS_SYSTEMS: Final[Mapping[str, str]] = {
    ICD10_SYSTEM: ICD10_SYSTEM,
    "urn:oid:2.16.840.1.113883.6.3": ICD10_SYSTEM,
    "http://hl7.org/fhir/sid/icd-10-cm": ICD10_SYSTEM,
    "urn:oid:2.16.840.1.113883.6.90": ICD10_SYSTEM,
    SNOMED_SYSTEM: SNOMED_SYSTEM,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED_SYSTEM,
}

#: Default labels of a Condition by its code: (system, code prefix) → label. ICD-10 B20-B24 is HIV
#: disease, F10-F19 mental and behavioural disorders due to psychoactive substance use, F20-F99 the
#: other psychiatric disorders; SNOMED CT 86406008 is HIV infection, 66214007 substance abuse.
DEFAULT_CONDITION_LABELS: Final[tuple[tuple[str, str, str], ...]] = (
    *((ICD10_SYSTEM, f"B2{d}", "HIV") for d in range(5)),
    *((ICD10_SYSTEM, f"F1{d}", "SUD") for d in range(10)),
    *((ICD10_SYSTEM, f"F{d}", "PSY") for d in range(2, 10)),
    (SNOMED_SYSTEM, "86406008", "HIV"),
    (SNOMED_SYSTEM, "66214007", "SUD"),
)


def _resources(resource: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The resource, its Bundle entries' resources and its contained resources (one level each)."""
    yield resource
    entries = resource.get("entry") if resource.get("resourceType") == "Bundle" else None
    for entry in entries if isinstance(entries, list) else ():
        inner = entry.get("resource") if isinstance(entry, Mapping) else None
        if isinstance(inner, Mapping):
            yield from _resources(inner)
    contained = resource.get("contained")
    for inner in contained if isinstance(contained, list) else ():
        if isinstance(inner, Mapping):
            yield inner


#: The spellings of the two label systems met in real data: the canonical URL, the OID and the
#: URL of FHIR before R4 (an author's spelling must not decide whether a record is shared).
_LABEL_SYSTEMS: Final[Mapping[str, frozenset[str]]] = {
    SENSITIVITY_SYSTEM: SENSITIVITY_LABELS,
    "urn:oid:2.16.840.1.113883.5.4": SENSITIVITY_LABELS,
    "http://hl7.org/fhir/v3/ActCode": SENSITIVITY_LABELS,
    CONFIDENTIALITY_SYSTEM: CONFIDENTIALITY_LABELS,
    "urn:oid:2.16.840.1.113883.5.25": CONFIDENTIALITY_LABELS,
    "http://hl7.org/fhir/v3/Confidentiality": CONFIDENTIALITY_LABELS,
}
_ALL_LABELS: Final = SENSITIVITY_LABELS | CONFIDENTIALITY_LABELS


def _meta_security_labels(resource: Mapping[str, Any]) -> set[str]:
    """Codes compared without regard to case; a coding without a system whose code is one of ours
    counts as that label (fail closed: a missing system must not share a sensitive record)."""
    meta = resource.get("meta")
    security = meta.get("security") if isinstance(meta, Mapping) else None
    labels: set[str] = set()
    for coding in security if isinstance(security, list) else ():
        if not isinstance(coding, Mapping) or not isinstance(coding.get("code"), str):
            continue
        system, code = coding.get("system"), coding["code"].strip().upper()
        allowed = _LABEL_SYSTEMS.get(system, frozenset()) if isinstance(system, str) else _ALL_LABELS
        if code in allowed:
            labels.add(code)
    return labels


def _condition_labels(resource: Mapping[str, Any]) -> set[str]:
    if resource.get("resourceType") != "Condition":
        return set()
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, Mapping) else None
    labels: set[str] = set()
    for coding in codings if isinstance(codings, list) else ():
        if not isinstance(coding, Mapping) or not isinstance(coding.get("code"), str):
            continue
        given = coding.get("system")
        canonical = _DIAGNOSIS_SYSTEMS.get(given) if isinstance(given, str) else None
        for system, prefix, label in DEFAULT_CONDITION_LABELS:
            if canonical == system and coding["code"].strip().upper().startswith(prefix):
                labels.add(label)
    return labels


def compute_security_labels(resource: Mapping[str, Any]) -> tuple[str, ...]:
    """The labels a record of `resource` carries on the ledger, sorted (see the module docstring)."""
    labels: set[str] = set()
    for item in _resources(resource):
        labels |= _meta_security_labels(item) | _condition_labels(item)
    return tuple(sorted(labels))
