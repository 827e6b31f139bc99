"""What granting an inquiry would share, in words a patient understands (issue 9, defect 1).

An inquiry's scope covers more than its record types: records named by id and everything in its
time window, and, while the grant is live, records written later that fall in the scope (their
authors seal them for the grantee). A patient who is shown only "Immunization" and approves must
not be sharing a Condition named by id. So before anything is signed, `compute_grant_preview`
spells out the whole scope (each record type in words; each named record resolved to its type,
author and date; the window; the purpose; the expiry; the reason) and the exact list of records
the grant would re-seal, each Bundle with the record types it holds (a bundle's own type says
nothing about the diagnoses inside), and the grant signs exactly that list.

It refuses (`ScopeNotShowableError`, with a `problem` code) a scope it cannot fully show: a record
id that is not one of the patient's verified records (unknown, or another patient's), a record or
requester whose institution is unknown, more records than a grant may carry (over a million:
ADR 0012), an inquiry that is no longer open.

However many records a grant shares, the patient is told exactly how many, counted per record
type, per author and per year (`RecordCounts`); up to `PREVIEW_RECORD_LINES_MAX` records are
also listed one a line, and the JSON form always lists every record. Nothing is cut silently.

A representative (who holds no reader key of the patient's records) is shown the covered records
it cannot re-seal apart: they are not shared. Everything it reads comes from the
verified `PatientLedger`, never a node's word.

Pure: the caller passes the ledger and the inquiry's reason (the reason becomes encrypted for the
patient; the SDK decrypts it and passes plain text in).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from typing import Any, Final

from medledger.chain.limits import UINT_MAX
from medledger.health.errors import HealthError, InvalidRecordError
from medledger.health.fhir import BUNDLE_EXTRA_TYPES
from medledger.health.record_types import RECORD_TYPE_WORDS as CATALOG_TYPE_WORDS
from medledger.health.records import DecryptedRecord
from medledger.health.types import (
    GRANT_MANIFEST_RECORDS_MAX,
    GRANT_RECORDS_MAX,
    INQUIRY_OPEN,
    PURPOSE_ETREAT,
    PURPOSE_HOPERAT,
    PURPOSE_HPAYMT,
    PURPOSE_HRESCH,
    PURPOSE_PUBHLTH,
    PURPOSE_TREAT,
    GrantTerms,
    InquiryState,
    RecordState,
    compute_grant_part_count,
    is_covered,
)
from medledger.health.verify import PatientLedger

#: HL7 PurposeOfUse codes in plain words.
PURPOSE_WORDS: Final[dict[str, str]] = {
    PURPOSE_TREAT: "to treat you",
    PURPOSE_ETREAT: "to treat you in an emergency",
    PURPOSE_HPAYMT: "to pay for your care (billing, insurance claims)",
    PURPOSE_HOPERAT: "to run their healthcare operations (quality, administration)",
    PURPOSE_HRESCH: "for medical research",
    PURPOSE_PUBHLTH: "for public health reporting",
}

#: FHIR resource types in plain words.
RECORD_TYPE_WORDS: Final[dict[str, str]] = {
    **CATALOG_TYPE_WORDS,  # every record type (`health.record_types`, issue 14 defect 2)
    "AllergyIntolerance": "allergies and intolerances",
    "Bundle": "bundles of several records",
    "Condition": "conditions and diagnoses",
    "DiagnosticReport": "diagnostic reports (lab, imaging)",
    "DocumentReference": "documents",
    "Encounter": "visits and hospital stays",
    "Immunization": "vaccinations",
    "MedicationRequest": "prescriptions",
    "MedicationStatement": "medications you take",
    "Observation": "measurements and test results",
    "Procedure": "procedures and operations",
}

#: Most shared records the preview's text lists one a line (beyond, it counts them; `to_json`
#: lists them all).
PREVIEW_RECORD_LINES_MAX: Final = 50

PROBLEM_NOT_OPEN: Final = "inquiry_not_open"
PROBLEM_EXPIRED: Final = "inquiry_expired"
PROBLEM_UNKNOWN_REQUESTER: Final = "unknown_requester"
PROBLEM_UNKNOWN_RECORD: Final = "unknown_record"
PROBLEM_UNKNOWN_AUTHOR: Final = "unknown_author"
PROBLEM_UNKNOWN_PURPOSE: Final = "unknown_purpose"
PROBLEM_UNKNOWN_TYPE: Final = "unknown_record_type"
PROBLEM_TOO_MANY: Final = "too_many_records"
PROBLEM_REASON_UNREADABLE: Final = "reason_unreadable"
PROBLEM_NOT_NARROWER: Final = "not_narrower"


class ScopeNotShowableError(HealthError):
    """The grant's scope cannot be fully shown to the patient, so it must not be signed."""

    code = "scope_not_showable"

    def __init__(self, message: str, *, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


class PreviewChangedError(HealthError):
    """What the grant would share changed since the patient saw it: show it again."""

    code = "preview_changed"


def format_time_ms(time_ms: int) -> str:
    """A block time as a UTC date and time a person reads."""
    if time_ms >= UINT_MAX // 2 or time_ms > 253_402_300_799_000:  # past year 9999: "no end"
        return "no end date"
    return datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclasses.dataclass(frozen=True, slots=True)
class PreviewRecord:
    """One record, described: its id, type (and in words), author and date."""

    record_id: bytes
    record_type: str
    type_words: str
    author: bytes
    author_name: str
    time_ms: int
    #: For a record named by id: whether it lies in the window (outside, it is not shared).
    in_window: bool = True
    #: For a Bundle: the record types of the resources it holds (opened on this device; context
    #: such as a Practitioner left out). A bundle's own type says nothing about what is inside.
    contents: tuple[str, ...] = ()
    #: The record's security labels on the ledger (issue 12): sensitive records are flagged.
    labels: tuple[str, ...] = ()

    def contents_words(self) -> str:
        return ", ".join(f"{RECORD_TYPE_WORDS[t]} ({t})" for t in self.contents)

    def to_json(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id.hex(),
            "record_type": self.record_type,
            "type_words": self.type_words,
            "author": self.author.hex(),
            "author_name": self.author_name,
            "time_ms": self.time_ms,
            "date": format_time_ms(self.time_ms),
            "in_window": self.in_window,
            "contents": list(self.contents),
            "contents_words": [RECORD_TYPE_WORDS[t] for t in self.contents],
            "labels": list(self.labels),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class RecordCounts:
    """How many records, per record type, per author (name) and per year (UTC, of block time)."""

    total: int
    by_type: tuple[tuple[str, int], ...]
    by_author: tuple[tuple[str, int], ...]
    by_year: tuple[tuple[str, int], ...]
    #: Per record type, how many of the bundles hold one (a bundle's own type says nothing).
    in_bundles: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, records: tuple[PreviewRecord, ...]) -> RecordCounts:
        def count(keys: list[str]) -> tuple[tuple[str, int], ...]:
            totals: dict[str, int] = {}
            for key in keys:
                totals[key] = totals.get(key, 0) + 1
            return tuple(sorted(totals.items()))

        return cls(
            total=len(records),
            by_type=count([r.record_type for r in records]),
            by_author=count([r.author_name for r in records]),
            by_year=count([format_year(r.time_ms) for r in records]),
            in_bundles=count([t for r in records for t in r.contents]),
        )

    def lines(self, indent: str = "  ") -> list[str]:
        out = [f"{indent}by type:"]
        out += [f"{indent}  {n:>7}  {RECORD_TYPE_WORDS[t]} ({t})" for t, n in self.by_type]
        out.append(f"{indent}by author:")
        out += [f"{indent}  {n:>7}  {name}" for name, n in self.by_author]
        out.append(f"{indent}by year recorded:")
        out += [f"{indent}  {n:>7}  {year}" for year, n in self.by_year]
        if self.in_bundles:
            out.append(f"{indent}inside the bundles (bundles holding each kind):")
            out += [f"{indent}  {n:>7}  {RECORD_TYPE_WORDS[t]} ({t})" for t, n in self.in_bundles]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_type": [
                {"record_type": t, "words": RECORD_TYPE_WORDS[t], "count": n} for t, n in self.by_type
            ],
            "by_author": [{"author_name": a, "count": n} for a, n in self.by_author],
            "by_year": [{"year": y, "count": n} for y, n in self.by_year],
            "in_bundles": [{"record_type": t, "count": n} for t, n in self.in_bundles],
        }


def format_year(time_ms: int) -> str:
    """The UTC year of a block time."""
    return datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.UTC).strftime("%Y")


@dataclasses.dataclass(frozen=True, slots=True)
class GrantPreview:
    """Everything granting `inquiry_id` would do; `records` is exactly what the grant re-seals."""

    inquiry_id: bytes
    requester: bytes
    requester_name: str
    requester_role: str
    purpose: str
    purpose_words: str
    expires_ms: int
    reason: str
    record_types: tuple[str, ...]
    named_records: tuple[PreviewRecord, ...]
    from_ms: int
    to_ms: int
    #: No types and no ids: every record in the window.
    everything: bool
    records: tuple[PreviewRecord, ...]
    #: Covered records the signer cannot re-seal (a representative): not shared by this grant.
    unsealable: tuple[PreviewRecord, ...]
    #: Covered records whose content fails its binding on this device (a copied or mislabelled
    #: record): never re-sealed, shown apart.
    unverifiable: tuple[PreviewRecord, ...]
    #: The verified height the preview was computed at.
    height: int
    #: The narrower terms this grant is on (`health.grant_narrowed`), or None: the inquiry's. The
    #: scope and expiry above are then these terms', which rule what the grant opens from then on.
    terms: GrantTerms | None = None

    @property
    def record_ids(self) -> tuple[bytes, ...]:
        return tuple(r.record_id for r in self.records)

    def counts(self) -> RecordCounts:
        """The shared records counted per type, author and year."""
        return RecordCounts.of(self.records)

    @property
    def transactions(self) -> int:
        """How many txs the patient signs: one grant, or a manifest and its parts (ADR 0012)."""
        if len(self.records) <= GRANT_RECORDS_MAX:
            return 1
        return 1 + compute_grant_part_count(len(self.records))

    def window_words(self) -> str:
        if self.from_ms == 0 and self.to_ms >= UINT_MAX:
            return "records of any date"
        if self.from_ms == 0:
            return f"records dated up to {format_time_ms(self.to_ms)}"
        return f"records dated from {format_time_ms(self.from_ms)} to {format_time_ms(self.to_ms)}"

    def lines(self) -> list[str]:
        """The preview as a patient reads it (the CLI prints these before asking)."""
        out = [
            f"{self.requester_name} ({self.requester_role}) asks to see your records "
            f"{self.purpose_words} [{self.purpose}].",
            f"Their reason: {self.reason or '(none given)'}",
            f"Access would last until {format_time_ms(self.expires_ms)} unless you revoke it.",
            "What they ask for:" if self.terms is None else "What you narrowed it to (they asked for more):",
        ]
        if self.everything:
            out.append("  - ALL your records")
        for record_type in self.record_types:
            out.append(f"  - all your {RECORD_TYPE_WORDS[record_type]} ({record_type})")
        for named in self.named_records:
            where = "" if named.in_window else " (outside the time window: not shared)"
            out.append(
                f"  - one specific record: {named.type_words} ({named.record_type}) written by "
                f"{named.author_name} on {format_time_ms(named.time_ms)}{where}"
            )
            if named.contents:
                out.append(f"      it holds: {named.contents_words()}")
        out.append(f"  limited to {self.window_words()}")
        out.append(f"Granting shares exactly these {len(self.records)} record(s) now:")
        if self.records:
            out.extend(self.counts().lines())
        listed = self.records if len(self.records) <= PREVIEW_RECORD_LINES_MAX else ()
        if not listed and self.records:
            out.append(
                f"  (all {len(self.records)} are counted above; the JSON form lists each one: "
                "medledger patient inquiries --json)"
            )
        labelled = [r for r in self.records if r.labels]
        if labelled:
            names = ", ".join(sorted({label for r in labelled for label in r.labels}))
            out.append(f"  {len(labelled)} of them are labelled sensitive ({names}) and are shared too.")
        for record in listed:
            flag = f"  [sensitive: {', '.join(record.labels)}]" if record.labels else ""
            out.append(
                f"  {record.record_id.hex()[:16]}  {record.record_type:<20} by {record.author_name:<14} "
                f"{format_time_ms(record.time_ms)}{flag}"
            )
            if record.contents:
                out.append(f"      it holds: {record.contents_words()}")
        if self.transactions > 1:
            out.append(
                f"  (too many for one transaction: you sign {self.transactions}, a manifest naming "
                "exactly these records and the parts that carry their keys)"
            )
        if self.unsealable:
            out.append(
                f"{len(self.unsealable)} other covered record(s) are sealed for the patient only "
                "and are NOT shared by this grant:"
            )
            if len(self.unsealable) > PREVIEW_RECORD_LINES_MAX:
                out.extend(RecordCounts.of(self.unsealable).lines())
            for record in self.unsealable if len(self.unsealable) <= PREVIEW_RECORD_LINES_MAX else ():
                out.append(
                    f"  {record.record_id.hex()[:16]}  {record.record_type:<20} by {record.author_name:<14} "
                    f"{format_time_ms(record.time_ms)}"
                )
        if self.unverifiable:
            out.append(
                f"{len(self.unverifiable)} covered record(s) failed verification on this device (their "
                "content is not what the ledger says its author wrote) and are NOT shared:"
            )
            if len(self.unverifiable) > PREVIEW_RECORD_LINES_MAX:
                out.extend(RecordCounts.of(self.unverifiable).lines())
            for record in self.unverifiable if len(self.unverifiable) <= PREVIEW_RECORD_LINES_MAX else ():
                out.append(
                    f"  {record.record_id.hex()[:16]}  {record.record_type:<20} by {record.author_name:<14} "
                    f"{format_time_ms(record.time_ms)}"
                )
        if self.record_types or self.everything:
            kinds = (
                "records" if self.everything else " or ".join(RECORD_TYPE_WORDS[t] for t in self.record_types)
            )
            out.append(
                f"And until access ends, any new {kinds} your care providers add in the time window "
                f"may also be shared with {self.requester_name}."
            )
            if "Bundle" in self.record_types:
                out.append("  (a new bundle may hold records of any kind)")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "inquiry_id": self.inquiry_id.hex(),
            "requester": self.requester.hex(),
            "requester_name": self.requester_name,
            "requester_role": self.requester_role,
            "purpose": self.purpose,
            "purpose_words": self.purpose_words,
            "expires_ms": self.expires_ms,
            "expires": format_time_ms(self.expires_ms),
            "reason": self.reason,
            "scope": {
                "everything": self.everything,
                "record_types": [
                    {"record_type": t, "words": RECORD_TYPE_WORDS[t]} for t in self.record_types
                ],
                "record_ids": [r.to_json() for r in self.named_records],
                "from_ms": self.from_ms,
                "to_ms": self.to_ms,
                "window": self.window_words(),
            },
            "records": [r.to_json() for r in self.records],
            "counts": self.counts().to_json(),
            "transactions": self.transactions,
            "unsealable": [r.to_json() for r in self.unsealable],
            "unverifiable": [r.to_json() for r in self.unverifiable],
            "height": self.height,
            "text": self.lines(),
        }


def _contents(record: RecordState, opened: DecryptedRecord | None) -> tuple[str, ...]:
    """The record types a Bundle holds (empty for any other record, or one that did not open)."""
    if opened is None or record.record_type != "Bundle":
        return ()
    try:
        entries = opened.resource.get("entry") or []
    except InvalidRecordError:
        entries = None
    types = set()
    for entry in entries if isinstance(entries, list) else [None]:
        inner = entry.get("resource") if isinstance(entry, dict) else None
        inner_type = inner.get("resourceType") if isinstance(inner, dict) else None
        if (
            not isinstance(inner_type, str)
            or inner_type == "Bundle"  # a bundle in a bundle (no honest author writes one) hides its own
            or (inner_type not in RECORD_TYPE_WORDS and inner_type not in BUNDLE_EXTRA_TYPES)
        ):
            raise ScopeNotShowableError(
                f"bundle {record.record_id.hex()[:16]}… holds a resource that has no description",
                problem=PROBLEM_UNKNOWN_TYPE,
            )
        if inner_type in RECORD_TYPE_WORDS:
            types.add(inner_type)
    return tuple(sorted(types))


def _describe(
    ledger: PatientLedger, record: RecordState, *, in_window: bool = True, contents: tuple[str, ...] = ()
) -> PreviewRecord:
    author = ledger.institutions.get(record.author)
    if author is None:
        raise ScopeNotShowableError(
            f"record {record.record_id.hex()[:16]}… was written by an institution this network does not list",
            problem=PROBLEM_UNKNOWN_AUTHOR,
        )
    words = RECORD_TYPE_WORDS.get(record.record_type)
    if words is None:
        raise ScopeNotShowableError(
            f"record type {record.record_type!r} has no description", problem=PROBLEM_UNKNOWN_TYPE
        )
    return PreviewRecord(
        record.record_id,
        record.record_type,
        words,
        record.author,
        author.name,
        record.time_ms,
        in_window,
        contents,
        ledger.get_record_labels(record.record_id),
    )


def compute_grant_preview(
    ledger: PatientLedger,
    inquiry: InquiryState,
    *,
    reason: str,
    signer_enc_key: bytes,
    open_verified: Callable[[RecordState], DecryptedRecord | None],
    terms: GrantTerms | None = None,
) -> GrantPreview:
    """The whole scope of `inquiry` (or of the narrower `terms` the patient chose) and the exact
    records a grant would re-seal, or a refusal.

    `signer_enc_key`: the encryption key of whoever signs (the patient, or a representative): a
    record can be re-sealed only if its key is sealed for it. `open_verified(record)`: the record
    opened on this device if its content matches its binding (`records.open_verified_record`),
    else None; a record that does not verify is never re-sealed, and what a Bundle holds is named.
    """
    if inquiry.status != INQUIRY_OPEN:
        raise ScopeNotShowableError(f"the inquiry is already {inquiry.status}", problem=PROBLEM_NOT_OPEN)
    if ledger.time_ms >= inquiry.expires_ms:
        raise ScopeNotShowableError("the inquiry has expired", problem=PROBLEM_EXPIRED)
    requester = ledger.institutions.get(inquiry.requester)
    if requester is None:
        raise ScopeNotShowableError(
            "the inquiry comes from a key this network does not list as an institution",
            problem=PROBLEM_UNKNOWN_REQUESTER,
        )
    purpose_words = PURPOSE_WORDS.get(inquiry.purpose)
    if purpose_words is None:
        raise ScopeNotShowableError(
            f"purpose {inquiry.purpose!r} has no description", problem=PROBLEM_UNKNOWN_PURPOSE
        )
    if terms is not None:
        _check_narrower(inquiry, terms, ledger.time_ms)
    scope = inquiry.scope if terms is None else terms.scope
    for record_type in scope.record_types:
        if record_type not in RECORD_TYPE_WORDS:
            raise ScopeNotShowableError(
                f"record type {record_type!r} has no description", problem=PROBLEM_UNKNOWN_TYPE
            )
    named = []
    for record_id in scope.record_ids:
        record = ledger.get_record(record_id)
        if record is None:
            raise ScopeNotShowableError(
                f"the inquiry names record {record_id.hex()[:16]}…, which is not one of your records",
                problem=PROBLEM_UNKNOWN_RECORD,
            )
        in_window = scope.from_ms <= record.time_ms <= scope.to_ms
        contents = _contents(record, open_verified(record)) if record.record_type == "Bundle" else ()
        named.append(_describe(ledger, record, in_window=in_window, contents=contents))
    covered = [r for r in ledger.list_records() if is_covered(scope, r.record_id, r.record_type, r.time_ms)]
    if len(covered) > GRANT_MANIFEST_RECORDS_MAX:
        raise ScopeNotShowableError(
            f"the inquiry covers {len(covered)} records, "
            f"more than the {GRANT_MANIFEST_RECORDS_MAX} one grant may carry",
            problem=PROBLEM_TOO_MANY,
        )
    covered.sort(key=lambda r: r.record_id)
    # A representative holds no reader key of the patient's records: those it cannot re-seal are
    # shown apart, and not shared (for the patient themself every record is sealed for them).
    sealable = [r for r in covered if signer_enc_key in r.envelope.readers]
    unsealable = tuple(_describe(ledger, r) for r in covered if signer_enc_key not in r.envelope.readers)
    opened = [open_verified(r) for r in sealable]
    records = tuple(
        _describe(ledger, r, contents=_contents(r, o))
        for r, o in zip(sealable, opened, strict=True)
        if o is not None
    )
    unverifiable = tuple(_describe(ledger, r) for r, o in zip(sealable, opened, strict=True) if o is None)
    return GrantPreview(
        inquiry_id=inquiry.inquiry_id,
        requester=inquiry.requester,
        requester_name=requester.name,
        requester_role=requester.role,
        purpose=inquiry.purpose,
        purpose_words=purpose_words,
        expires_ms=inquiry.expires_ms if terms is None else terms.expires_ms,
        reason=reason,
        record_types=scope.record_types,
        named_records=tuple(named),
        from_ms=scope.from_ms,
        to_ms=scope.to_ms,
        everything=not scope.record_types and not scope.record_ids,
        records=records,
        unsealable=unsealable,
        unverifiable=unverifiable,
        height=ledger.height,
        terms=terms,
    )


def _check_narrower(inquiry: InquiryState, terms: GrantTerms, now_ms: int) -> None:
    """The patient's narrowing lies within the inquiry (the rules' `validate_grant_terms` decides;
    this says so in words before anything is signed)."""
    scope, asked = terms.scope, inquiry.scope
    if not asked.from_ms <= scope.from_ms <= scope.to_ms <= asked.to_ms:
        raise ScopeNotShowableError(
            "the narrowed window must lie within the one the inquiry asks for", problem=PROBLEM_NOT_NARROWER
        )
    if not now_ms < terms.expires_ms <= inquiry.expires_ms:
        raise ScopeNotShowableError(
            "the narrowed expiry must be in the future and no later than the inquiry's",
            problem=PROBLEM_NOT_NARROWER,
        )
    if (asked.record_types or asked.record_ids) and not set(scope.record_types) <= set(asked.record_types):
        raise ScopeNotShowableError(
            "the narrowed record types must be among those the inquiry asks for", problem=PROBLEM_NOT_NARROWER
        )


__all__ = [
    "PURPOSE_WORDS",
    "RECORD_TYPE_WORDS",
    "GrantPreview",
    "PreviewChangedError",
    "PreviewRecord",
    "RecordCounts",
    "ScopeNotShowableError",
    "compute_grant_preview",
    "format_time_ms",
]
