"""Claims on the ledger: security labels, standing consents and claims (issue 12, ADR 0017).

Three things the mission's insurer story needs, each a small set of transactions whose kinds are in
`types.TX_KINDS` (rules in `health.claims`, client crypto in `health.claim_seal`):

- **Security labels.** A record may carry FHIR security labels (`meta.security`): the HL7 v3
  ActCode sensitivity codes (`SENSITIVITY_LABELS`: HIV, PSY, SUD, SEX, ETH, ...) and the
  restrictive v3 Confidentiality codes R and V. Only these are on the ledger (as bare codes: the
  two code systems share no code), and only on a labelled record (`health.add_labelled_record`,
  stored beside the record under `h1/rlab/`; a labelled document `health.add_labelled_document`, a
  labelled correction answering an amendment `health.accept_labelled_amendment`): they are the
  least metadata the sealing rule needs,
  because a labelled record is sealed at write time only for a grant that names each of its labels.
  Unrestricted confidentiality codes (U, L, M, N) change no rule and stay inside the ciphertext.
- **Standing consents** (`health.grant_consent`): the patient's (or a representative's) grant to an
  insurer for payment (HPAYMT) with no inquiry before it. Its terms name record types, authoring
  institutions, a window of block time, an expiry and the labels it covers (none unless named). It
  is stored as a grant (`GrantState`, its own id as its inquiry id) plus its `ConsentTerms`, so it
  is revoked, pruned, listed and read under exactly like any grant; while it is live, every new
  record it covers is sealed for the insurer by the authoring node (`policy.compute_record_readers`).
- **Claims** (`health.file_claim`, `health.amend_claim`, `health.decide_claim`): a clinic's FHIR
  R4 Claim for one of its encounters, sealed for the insurer, the patient and the clinic, citing
  supporting records; the addressed insurer's decision per claim version (FHIR ClaimResponse,
  sealed for the clinic, the patient and the insurer) whose outcome is in the clear because the
  rules act on it (approved closes the claim; pended and denied may be answered with a new
  version). `health.claim_read_receipt` receipts an insurer's reads of a claim's records.

The Claim and ClaimResponse themselves (amounts, codes, reasons, what is missing) travel sealed.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Final

from medledger.chain.codec import FieldSpec, Seq, Struct, Text, UInt, wire_fields
from medledger.health.rights_types import AcceptAmendmentBody
from medledger.health.types import (
    GRANT_MANIFEST_RECORDS_MAX,
    GRANT_PARTS_MAX,
    HASH,
    KEY,
    KIND_ACCEPT_LABELLED_AMENDMENT,
    KIND_ADD_LABELLED_DOCUMENT,
    KIND_ADD_LABELLED_RECORD,
    KIND_AMEND_CLAIM,
    KIND_CLAIM_READ_RECEIPT,
    KIND_CONSENT_MANIFEST,
    KIND_DECIDE_CLAIM,
    KIND_FILE_CLAIM,
    KIND_GRANT_CONSENT,
    OPTIONAL_HASH,
    RECORD_TYPES,
    AddDocumentBody,
    AddRecordBody,
    EnvelopeWire,
)

# --- security labels ----------------------------------------------------------------------------

#: HL7 v3 ActCode information sensitivity codes (http://terminology.hl7.org/CodeSystem/v3-ActCode)
#: a record may be labelled with on the ledger.
SENSITIVITY_LABELS: Final = frozenset(
    {
        "BH",  # behavioral health
        "COGN",  # cognitive disability
        "DVD",  # developmental disability
        "EMOTDIS",  # emotional disturbance
        "ETH",  # substance abuse
        "GDIS",  # genetic disease
        "HIV",  # HIV/AIDS
        "MH",  # mental health
        "MST",  # military sexual trauma
        "PSY",  # psychiatry disorder
        "PSYTHPN",  # psychotherapy note
        "SCA",  # sickle cell anemia
        "SDV",  # sexual assault, abuse or domestic violence
        "SEX",  # sexuality and reproductive health
        "SPI",  # specially protected information
        "STD",  # sexually transmitted disease
        "SUD",  # substance use disorder
        "TBOO",  # taboo
    }
)
SENSITIVITY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
#: HL7 v3 Confidentiality codes that restrict (http://terminology.hl7.org/CodeSystem/v3-Confidentiality):
#: R restricted, V very restricted. U, L, M and N restrict nothing, so they are never on the ledger.
CONFIDENTIALITY_LABELS: Final = frozenset({"R", "V"})
CONFIDENTIALITY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
SECURITY_LABELS: Final = SENSITIVITY_LABELS | CONFIDENTIALITY_LABELS
#: Labels one record, or one consent, may name (every code at most once).
RECORD_LABELS_MAX: Final = len(SECURITY_LABELS)

# --- limits -------------------------------------------------------------------------------------

#: Authoring institutions one standing consent may name.
CONSENT_AUTHORS_MAX: Final = 64
#: Longest a standing consent may stay live: one year, as an inquiry (`INQUIRY_TTL_MS_MAX`).
CONSENT_TTL_MS_MAX: Final = 366 * 24 * 3600 * 1000
#: Supporting records one claim version may cite.
CLAIM_RECORDS_MAX: Final = 64
#: Versions one claim may have (the first filing and its amendments).
CLAIM_VERSIONS_MAX: Final = 16
#: Readers of a sealed claim or decision: the patient, the clinic and the insurer.
CLAIM_READERS_MAX: Final = 3

# --- claim outcomes and statuses ----------------------------------------------------------------

OUTCOME_APPROVED: Final = "approved"
OUTCOME_DENIED: Final = "denied"
OUTCOME_PENDED: Final = "pended"
OUTCOMES: Final = frozenset({OUTCOME_APPROVED, OUTCOME_DENIED, OUTCOME_PENDED})
#: A claim's status: its current version awaits a decision (open), or the decision's outcome.
CLAIM_OPEN: Final = "open"
CLAIM_STATUSES: Final = OUTCOMES | {CLAIM_OPEN}

# --- bodies -------------------------------------------------------------------------------------

LABELS = Seq(Text(allowed=SECURITY_LABELS), RECORD_LABELS_MAX)


@dataclasses.dataclass(frozen=True, slots=True)
class LabelledRecordBody:
    """A record (new, or superseding `supersedes`) with its security labels, sorted and unique."""

    supersedes: bytes
    record: AddRecordBody
    labels: tuple[str, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        supersedes=OPTIONAL_HASH, record=Struct(AddRecordBody), labels=LABELS
    )


@dataclasses.dataclass(frozen=True, slots=True)
class LabelledDocumentBody:
    """A document (a record with attachments, ADR 0013) with its security labels, sorted and
    unique: ruled as `health.add_document`, its readers judged with its labels, as a labelled record's."""

    document: AddDocumentBody
    labels: tuple[str, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(document=Struct(AddDocumentBody), labels=LABELS)


@dataclasses.dataclass(frozen=True, slots=True)
class LabelledAmendmentBody:
    """An accepted amendment whose correction carries security labels (those of the corrected
    content; the rules add the corrected record's): ruled as `health.accept_amendment`, the
    correction's readers judged with its labels, so a correction that adds e.g. an HIV diagnosis
    is sealed for no consent that does not name HIV."""

    accept: AcceptAmendmentBody
    labels: tuple[str, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        accept=Struct(AcceptAmendmentBody), labels=LABELS
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ConsentTerms:
    """What a standing consent covers beyond its grant's scope: authors and named labels.

    A record is covered when its type is one of the grant scope's `record_types`, its block time
    lies in the scope's window, its author is one of `authors` and every label it carries is in
    `labels` (an unlabelled record needs none). Stored under `h1/consent/<grant id>`.
    """

    grant_id: bytes
    authors: tuple[bytes, ...]
    labels: tuple[str, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        grant_id=HASH, authors=Seq(KEY, CONSENT_AUTHORS_MAX), labels=LABELS
    )


@dataclasses.dataclass(frozen=True, slots=True)
class GrantConsentBody:
    """A standing consent for payment: to `grantee` (an insurer's signing key), for records of
    `record_types` by `authors` written in [from_ms, to_ms], labelled at most with `labels`, live
    until `expires_ms`. Lists sorted and unique; types and authors at least one each."""

    patient_id: bytes
    grantee: bytes
    record_types: tuple[str, ...]
    authors: tuple[bytes, ...]
    labels: tuple[str, ...]
    from_ms: int
    to_ms: int
    expires_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        patient_id=HASH,
        grantee=KEY,
        record_types=Seq(Text(allowed=RECORD_TYPES), len(RECORD_TYPES)),
        authors=Seq(KEY, CONSENT_AUTHORS_MAX),
        labels=LABELS,
        from_ms=UInt(),
        to_ms=UInt(),
        expires_ms=UInt(),
    )


CLAIM_ENVELOPE = Struct(EnvelopeWire)


@dataclasses.dataclass(frozen=True, slots=True)
class FileClaimBody:
    """A clinic's claim to `insurer` for one of its encounters (`encounter_id`, an Encounter
    record it wrote), citing `record_ids` (sorted, unique), the FHIR Claim in `sealed_claim`."""

    patient_id: bytes
    insurer: bytes
    encounter_id: bytes
    record_ids: tuple[bytes, ...]
    sealed_claim: EnvelopeWire

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        patient_id=HASH,
        insurer=KEY,
        encounter_id=HASH,
        record_ids=Seq(HASH, CLAIM_RECORDS_MAX),
        sealed_claim=CLAIM_ENVELOPE,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class AmendClaimBody:
    """The filing clinic's next version (`version` = current + 1) of a claim not yet approved:
    e.g. a pended claim answered with more records."""

    claim_id: bytes
    version: int
    record_ids: tuple[bytes, ...]
    sealed_claim: EnvelopeWire

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        claim_id=HASH,
        version=UInt(CLAIM_VERSIONS_MAX, 2),
        record_ids=Seq(HASH, CLAIM_RECORDS_MAX),
        sealed_claim=CLAIM_ENVELOPE,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class DecideClaimBody:
    """The addressed insurer's decision on a claim's current `version` (once per version)."""

    claim_id: bytes
    version: int
    outcome: str
    sealed_response: EnvelopeWire

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        claim_id=HASH,
        version=UInt(CLAIM_VERSIONS_MAX, 1),
        outcome=Text(allowed=OUTCOMES),
        sealed_response=CLAIM_ENVELOPE,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimReadReceiptBody:
    """The insurer's receipt for reading `record_ids` of claim `claim_id` under grant `grant_id`."""

    claim_id: bytes
    grant_id: bytes
    record_ids: tuple[bytes, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        claim_id=HASH, grant_id=HASH, record_ids=Seq(HASH, CLAIM_RECORDS_MAX)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ConsentManifestBody:
    """The records already on the ledger that a standing consent covers, declared for re-sealing
    (ADR 0017, amendment): `record_count` records sorted by id, cut into parts as a grant manifest's
    (`types.compute_grant_part_digest` bound to the consent's id); their keys follow in
    `health.grant_part` txs under the consent. Signed by the consent's signer, once."""

    grant_id: bytes
    record_count: int
    part_digests: tuple[bytes, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        grant_id=HASH,
        record_count=UInt(GRANT_MANIFEST_RECORDS_MAX),
        part_digests=Seq(HASH, GRANT_PARTS_MAX),
    )


CLAIMS_BODY_TYPES: Final[dict[str, type]] = {
    KIND_ADD_LABELLED_RECORD: LabelledRecordBody,
    KIND_ADD_LABELLED_DOCUMENT: LabelledDocumentBody,
    KIND_ACCEPT_LABELLED_AMENDMENT: LabelledAmendmentBody,
    KIND_GRANT_CONSENT: GrantConsentBody,
    KIND_CONSENT_MANIFEST: ConsentManifestBody,
    KIND_FILE_CLAIM: FileClaimBody,
    KIND_AMEND_CLAIM: AmendClaimBody,
    KIND_DECIDE_CLAIM: DecideClaimBody,
    KIND_CLAIM_READ_RECEIPT: ClaimReadReceiptBody,
}

# --- stored values ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RecordLabels:
    """A labelled record's security labels as stored (`h1/rlab/<record id>`)."""

    record_id: bytes
    labels: tuple[str, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(record_id=HASH, labels=LABELS)


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimState:
    """A claim: who filed it with whom for what, its current version and its last decision.

    `record_ids` and `sealed_claim` are the current version's (earlier versions' record lists are in
    the patient's audit trail); `decided_version` is the version the last decision answered (0:
    none yet) and `status` its outcome, or open while the current version awaits one. Each decision
    is stored apart (`ClaimDecision`), so every version's answer stays readable.
    """

    claim_id: bytes
    patient_id: bytes
    clinic: bytes
    insurer: bytes
    encounter_id: bytes
    version: int
    record_ids: tuple[bytes, ...]
    sealed_claim: EnvelopeWire
    status: str
    decided_version: int
    height: int
    time_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        claim_id=HASH,
        patient_id=HASH,
        clinic=KEY,
        insurer=KEY,
        encounter_id=HASH,
        version=UInt(CLAIM_VERSIONS_MAX, 1),
        record_ids=Seq(HASH, CLAIM_RECORDS_MAX),
        sealed_claim=CLAIM_ENVELOPE,
        status=Text(allowed=CLAIM_STATUSES),
        decided_version=UInt(CLAIM_VERSIONS_MAX),
        height=UInt(),
        time_ms=UInt(),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimDecision:
    """The insurer's decision on one version of a claim (`h1/cdec/<claim id><version u8>`)."""

    claim_id: bytes
    version: int
    decision_id: bytes
    insurer: bytes
    outcome: str
    sealed_response: EnvelopeWire
    height: int
    time_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        claim_id=HASH,
        version=UInt(CLAIM_VERSIONS_MAX, 1),
        decision_id=HASH,
        insurer=KEY,
        outcome=Text(allowed=OUTCOMES),
        sealed_response=CLAIM_ENVELOPE,
        height=UInt(),
        time_ms=UInt(),
    )
