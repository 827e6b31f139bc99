"""The health application's vocabulary: tx kinds, wire bodies, stored values, ids and limits.

Every transaction body and every stored value is a frozen dataclass with a declared schema, encoded
by the chain's canonical codec, so that one value has exactly one encoding: every node stores the
same bytes and computes the same state root. Everything that is on the ledger in the clear is
declared here, in one place, and `docs/health.md` says why each field must be.

Ids: a patient's id is the hash of their signing key under a domain tag (pseudonymous: it links a
patient's own records, but names nobody); records, inquiries and grants are named by the id of the
transaction that created them, which the client knows as soon as it has signed it.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Final, NewType, Self

from medledger.chain.codec import (
    Bytes,
    FieldSpec,
    FixedBytes,
    HumanText,
    Seq,
    Struct,
    Text,
    UInt,
    wire_fields,
)
from medledger.chain.limits import TX_BODY_BYTES_MAX
from medledger.crypto import HASH_SIZE, PUBLIC_KEY_SIZE, Envelope, digest
from medledger.crypto.envelope import NONCE_SIZE, SEALED_KEY_SIZE, TAG_SIZE
from medledger.health.record_types import RECORD_TYPE_WORDS

PatientId = NewType("PatientId", bytes)
RecordId = NewType("RecordId", bytes)
InquiryId = NewType("InquiryId", bytes)
GrantId = NewType("GrantId", bytes)

HASH = FixedBytes(HASH_SIZE)
KEY = FixedBytes(PUBLIC_KEY_SIZE)
SEALED_KEY = FixedBytes(SEALED_KEY_SIZE)
#: A hash or nothing (an empty byte string), e.g. "supersedes no record".
OPTIONAL_HASH = Bytes(HASH_SIZE)

PATIENT_ID_DOMAIN: Final = b"medledger/health/patient-id/v1\x00"
#: Prefixes a record's binding (`compute_record_binding`) as its ciphertext's associated data.
RECORD_AD_DOMAIN: Final = b"medledger/health/record/v2\x00"
#: Prefixes a record's binding when its record key is derived from its content key (keyed BLAKE2b).
RECORD_KEY_DOMAIN: Final = b"medledger/health/record-key/v1\x00"
#: Prefixes a record's binding and salted plaintext in its commitment.
COMMITMENT_DOMAIN: Final = b"medledger/health/commitment/v2\x00"
#: Prefixes an inquiry's binding as its sealed reason's associated data.
REASON_AD_DOMAIN: Final = b"medledger/health/reason/v1\x00"

# --- transaction kinds --------------------------------------------------------------------------

KIND_REGISTER_PATIENT: Final = "health.register_patient"
KIND_ADD_REPRESENTATIVE: Final = "health.add_representative"
KIND_REMOVE_REPRESENTATIVE: Final = "health.remove_representative"
KIND_ADD_RECORD: Final = "health.add_record"
KIND_SUPERSEDE_RECORD: Final = "health.supersede_record"
KIND_REQUEST_ACCESS: Final = "health.request_access"
KIND_GRANT: Final = "health.grant"
KIND_DENY: Final = "health.deny"
KIND_REVOKE: Final = "health.revoke"
KIND_READ_RECEIPT: Final = "health.read_receipt"
#: A grant too large for one tx (ADR 0012): the decision, declaring its records part by part.
KIND_GRANT_MANIFEST: Final = "health.grant_manifest"
#: One part of a grant in parts: the re-sealed keys of the records one part digest names.
KIND_GRANT_PART: Final = "health.grant_part"
#: A grant (or a grant's manifest) narrower than its inquiry: its own scope within the inquiry's
#: and an expiry no later than the inquiry's, which rule everything the grant opens from then on.
KIND_GRANT_NARROWED: Final = "health.grant_narrowed"
KIND_GRANT_MANIFEST_NARROWED: Final = "health.grant_manifest_narrowed"
# Patient rights (issue 14; bodies in `rights_types`, rules in `rights`): access and amendment.
KIND_REQUEST_RECORDS: Final = "health.request_records"
KIND_CLOSE_RECORDS_REQUEST: Final = "health.close_records_request"
KIND_REQUEST_AMENDMENT: Final = "health.request_amendment"
KIND_ACCEPT_AMENDMENT: Final = "health.accept_amendment"
KIND_REFUSE_AMENDMENT: Final = "health.refuse_amendment"
KIND_DISAGREE: Final = "health.disagree"
#: A record with attachments stored off the ledger as blobs (docs/adr/0013-attachment-blobs.md).
KIND_ADD_DOCUMENT: Final = "health.add_document"
# Claims (issue 12; bodies in `claims_types`, rules in `claims`, docs/adr/0017-claims.md).
#: A record with FHIR security labels (meta.security) the rules seal by.
KIND_ADD_LABELLED_RECORD: Final = "health.add_labelled_record"
#: A document (`health.add_document`) with security labels: a labelled record with attachments.
KIND_ADD_LABELLED_DOCUMENT: Final = "health.add_labelled_document"
#: An accepted amendment (`health.accept_amendment`) whose correction carries security labels.
KIND_ACCEPT_LABELLED_AMENDMENT: Final = "health.accept_labelled_amendment"
#: A standing consent's re-sealing of the records already in its scope (ADR 0017, amendment): the
#: manifest of `health.grant_part` txs under the consent.
KIND_CONSENT_MANIFEST: Final = "health.consent_manifest"
#: A patient's standing consent for payment to an insurer: a grant covering future records.
KIND_GRANT_CONSENT: Final = "health.grant_consent"
KIND_FILE_CLAIM: Final = "health.file_claim"
KIND_AMEND_CLAIM: Final = "health.amend_claim"
KIND_DECIDE_CLAIM: Final = "health.decide_claim"
#: An insurer's read receipt for a claim's supporting records (also a plain read receipt).
KIND_CLAIM_READ_RECEIPT: Final = "health.claim_read_receipt"
# Research (issue 13; bodies in `research_types`, rules in `research`, docs/adr/0019-research.md).
KIND_REGISTER_STUDY: Final = "health.register_study"
KIND_JOIN_STUDY: Final = "health.join_study"
KIND_LEAVE_STUDY: Final = "health.leave_study"
KIND_SUBMIT_QUERY: Final = "health.submit_query"
KIND_POST_ANSWER: Final = "health.post_answer"

TX_KINDS: Final = frozenset(
    {
        KIND_REGISTER_PATIENT,
        KIND_ADD_REPRESENTATIVE,
        KIND_REMOVE_REPRESENTATIVE,
        KIND_ADD_RECORD,
        KIND_SUPERSEDE_RECORD,
        KIND_REQUEST_ACCESS,
        KIND_GRANT,
        KIND_DENY,
        KIND_REVOKE,
        KIND_READ_RECEIPT,
        KIND_GRANT_MANIFEST,
        KIND_GRANT_PART,
        KIND_GRANT_NARROWED,
        KIND_GRANT_MANIFEST_NARROWED,
        KIND_REQUEST_RECORDS,
        KIND_CLOSE_RECORDS_REQUEST,
        KIND_REQUEST_AMENDMENT,
        KIND_ACCEPT_AMENDMENT,
        KIND_REFUSE_AMENDMENT,
        KIND_DISAGREE,
        KIND_ADD_DOCUMENT,
        KIND_ADD_LABELLED_RECORD,
        KIND_ADD_LABELLED_DOCUMENT,
        KIND_ACCEPT_LABELLED_AMENDMENT,
        KIND_CONSENT_MANIFEST,
        KIND_GRANT_CONSENT,
        KIND_FILE_CLAIM,
        KIND_AMEND_CLAIM,
        KIND_DECIDE_CLAIM,
        KIND_CLAIM_READ_RECEIPT,
        # research (issue 13)
        KIND_REGISTER_STUDY,
        KIND_JOIN_STUDY,
        KIND_LEAVE_STUDY,
        KIND_SUBMIT_QUERY,
        KIND_POST_ANSWER,
    }
)

# --- code lists ---------------------------------------------------------------------------------

ROLE_CLINIC: Final = "clinic"
ROLE_HOSPITAL: Final = "hospital"
ROLE_INSURER: Final = "insurer"
ROLE_RESEARCH: Final = "research"
ROLES: Final = frozenset({ROLE_CLINIC, ROLE_HOSPITAL, ROLE_INSURER, ROLE_RESEARCH})
#: Roles whose members author clinical records.
AUTHOR_ROLES: Final = frozenset({ROLE_CLINIC, ROLE_HOSPITAL})

#: HL7 v3 PurposeOfUse codes (http://terminology.hl7.org/CodeSystem/v3-ActReason) we accept.
PURPOSE_TREAT: Final = "TREAT"  # treatment
PURPOSE_ETREAT: Final = "ETREAT"  # emergency treatment
PURPOSE_HPAYMT: Final = "HPAYMT"  # healthcare payment
PURPOSE_HOPERAT: Final = "HOPERAT"  # healthcare operations
PURPOSE_HRESCH: Final = "HRESCH"  # healthcare research
PURPOSE_PUBHLTH: Final = "PUBHLTH"  # public health
PURPOSES: Final = frozenset(
    {PURPOSE_TREAT, PURPOSE_ETREAT, PURPOSE_HPAYMT, PURPOSE_HOPERAT, PURPOSE_HRESCH, PURPOSE_PUBHLTH}
)
#: Which purposes each role may ask for: an insurer cannot ask "for treatment", a research
#: institute only for research. The patient still decides; this only keeps requests honest.
PURPOSES_BY_ROLE: Final[dict[str, frozenset[str]]] = {
    ROLE_CLINIC: frozenset({PURPOSE_TREAT, PURPOSE_ETREAT, PURPOSE_HOPERAT, PURPOSE_PUBHLTH}),
    ROLE_HOSPITAL: frozenset({PURPOSE_TREAT, PURPOSE_ETREAT, PURPOSE_HOPERAT, PURPOSE_PUBHLTH}),
    ROLE_INSURER: frozenset({PURPOSE_HPAYMT, PURPOSE_HOPERAT}),
    ROLE_RESEARCH: frozenset({PURPOSE_HRESCH, PURPOSE_PUBHLTH}),
}

#: Record type categories: the FHIR resource type of the record (a Bundle is "Bundle"). This is the
#: one piece of content metadata on the ledger, because scopes ("my immunizations") are written
#: in it and the rules must decide coverage without reading the record.
RECORD_TYPES: Final = frozenset(
    {
        "AllergyIntolerance",
        "Bundle",
        "Condition",
        "DiagnosticReport",
        "DocumentReference",
        "Encounter",
        "Immunization",
        "MedicationRequest",
        "MedicationStatement",
        "Observation",
        "Procedure",
    }
) | frozenset(RECORD_TYPE_WORDS)  # every FHIR R4 type of a patient's care (issue 14, defect 2)

INQUIRY_OPEN: Final = "open"
INQUIRY_GRANTED: Final = "granted"
INQUIRY_DENIED: Final = "denied"
INQUIRY_STATUSES: Final = frozenset({INQUIRY_OPEN, INQUIRY_GRANTED, INQUIRY_DENIED})

EVENT_INQUIRY: Final = "inquiry"
EVENT_GRANT: Final = "grant"
EVENT_DENY: Final = "deny"
EVENT_REVOKE: Final = "revoke"
EVENT_READ: Final = "read"
EVENT_REPRESENTATIVE_ADDED: Final = "representative_added"
EVENT_REPRESENTATIVE_REMOVED: Final = "representative_removed"
#: One part of a grant in parts arrived: its record ids are the records it shares.
EVENT_GRANT_PART: Final = "grant_part"
EVENT_RECORDS_REQUEST: Final = "records_request"
EVENT_RECORDS_REQUEST_CLOSED: Final = "records_request_closed"
EVENT_AMENDMENT_REQUEST: Final = "amendment_request"
EVENT_AMENDMENT_ACCEPTED: Final = "amendment_accepted"
EVENT_AMENDMENT_REFUSED: Final = "amendment_refused"
EVENT_DISAGREEMENT: Final = "disagreement"
#: A standing consent (issue 12): `subject_id` is the grantee's signing key.
EVENT_CONSENT: Final = "consent"
#: Claims (issue 12): `subject_id` is the claim id; `record_ids` the version's supporting records
#: (filed, amended) or the records read for the claim (claim_read).
EVENT_CLAIM_FILED: Final = "claim_filed"
EVENT_CLAIM_AMENDED: Final = "claim_amended"
EVENT_CLAIM_DECIDED: Final = "claim_decided"
EVENT_CLAIM_READ: Final = "claim_read"
#: Research (issue 13): the patient joined or left a study; `subject_id` is the study id.
EVENT_STUDY_JOINED: Final = "study_joined"
EVENT_STUDY_LEFT: Final = "study_left"
EVENTS: Final = frozenset(
    {
        EVENT_INQUIRY,
        EVENT_GRANT,
        EVENT_DENY,
        EVENT_REVOKE,
        EVENT_READ,
        EVENT_REPRESENTATIVE_ADDED,
        EVENT_REPRESENTATIVE_REMOVED,
        EVENT_GRANT_PART,
        EVENT_RECORDS_REQUEST,
        EVENT_RECORDS_REQUEST_CLOSED,
        EVENT_AMENDMENT_REQUEST,
        EVENT_AMENDMENT_ACCEPTED,
        EVENT_AMENDMENT_REFUSED,
        EVENT_DISAGREEMENT,
        EVENT_CONSENT,
        EVENT_CLAIM_FILED,
        EVENT_CLAIM_AMENDED,
        EVENT_CLAIM_DECIDED,
        EVENT_CLAIM_READ,
        EVENT_STUDY_JOINED,
        EVENT_STUDY_LEFT,
    }
)

# --- limits (TIGER_STYLE: a limit on everything, named, in one place) ---------------------------

REPRESENTATIVES_MAX: Final = 8
#: Readers one record envelope may name (patient, author and live grantees).
RECORD_READERS_MAX: Final = 64
#: Largest record ciphertext: the body must still fit a transaction with its sealed keys.
RECORD_CIPHERTEXT_BYTES_MAX: Final = TX_BODY_BYTES_MAX - RECORD_READERS_MAX * 160 - 4096
SCOPE_RECORD_IDS_MAX: Final = 256
GRANT_RECORDS_MAX: Final = 256
RECEIPT_RECORDS_MAX: Final = 256
#: Grants of one patient that may be live at once (add_record checks readers against them).
PATIENT_LIVE_GRANTS_MAX: Final = 256
#: Longest inquiry reason, in characters (free text: it travels sealed, never in the clear).
REASON_LENGTH_MAX: Final = 200
#: Longest reason in UTF-8 bytes (four per character at most).
REASON_BYTES_MAX: Final = 4 * REASON_LENGTH_MAX
#: Every reason is padded to this size before encryption, so its ciphertext leaks no length.
REASON_PADDED_BYTES: Final = REASON_BYTES_MAX + 1
#: Readers of a sealed reason: the patient and the requester (one entry if they share a key).
REASON_READERS_MAX: Final = 2
INSTITUTION_NAME_LENGTH_MAX: Final = 64
#: Longest institution name in UTF-8 bytes (names are Unicode: "Hôpital Saint-Louis").
INSTITUTION_NAME_BYTES_MAX: Final = 4 * INSTITUTION_NAME_LENGTH_MAX
GENESIS_INSTITUTIONS_MAX: Final = 1024
#: Longest an inquiry (and so the grant answering it) may stay open: one year.
INQUIRY_TTL_MS_MAX: Final = 366 * 24 * 3600 * 1000
#: Records one part of a grant in parts carries (ADR 0012): one audit event lists them all.
GRANT_PART_RECORDS_MAX: Final = RECEIPT_RECORDS_MAX
#: Parts one grant may have: its manifest lists one digest a part and must fit one tx.
GRANT_PARTS_MAX: Final = 4096
#: Records one grant in parts may share (1,048,576: far beyond any patient's history).
GRANT_MANIFEST_RECORDS_MAX: Final = GRANT_PARTS_MAX * GRANT_PART_RECORDS_MAX
#: Prefixes a part's digest: the inquiry, the part's index and its record ids.
GRANT_PART_DOMAIN: Final = b"medledger/health/grant-part/v1\x00"
#: Largest stored value we decode (a record with its envelope is the largest).
STATE_VALUE_BYTES_MAX: Final = TX_BODY_BYTES_MAX + 4096


def compute_patient_id(sign_key: bytes) -> PatientId:
    """The pseudonymous id of the patient holding `sign_key`."""
    return PatientId(digest(PATIENT_ID_DOMAIN + sign_key))


def compute_record_binding(patient_id: bytes, author: bytes, record_type: str, supersedes: bytes) -> bytes:
    """Everything on the ledger the rules key a record on, in one unambiguous byte string.

    Patient id (32), author's signing key (32), the superseded record's id (32, zeros for none),
    then the record type, length-prefixed. Bound into the ciphertext (associated data) and the
    commitment, so a record re-published under another author, patient, type or superseded record
    fails to open and its commitment fails to verify (issue 9, defect 6).
    """
    if len(patient_id) != HASH_SIZE or len(author) != PUBLIC_KEY_SIZE:
        raise ValueError("a record binding needs a 32-byte patient id and a 32-byte author key")
    if supersedes and len(supersedes) != HASH_SIZE:
        raise ValueError("a superseded record id is 32 bytes (or empty: none)")
    type_bytes = record_type.encode("ascii")
    return patient_id + author + (supersedes or bytes(HASH_SIZE)) + bytes([len(type_bytes)]) + type_bytes


def compute_record_associated_data(binding: bytes) -> bytes:
    """A record ciphertext's associated data: its binding under the record domain."""
    return RECORD_AD_DOMAIN + binding


def compute_commitment(binding: bytes, salt: bytes, plaintext: bytes) -> bytes:
    """The salted commitment to a record's canonical plaintext and binding (the salt defeats guessing)."""
    return digest(COMMITMENT_DOMAIN + binding + salt + plaintext)


def compute_reason_associated_data(patient_id: bytes, requester: bytes) -> bytes:
    """A sealed reason's associated data: it opens only as this requester's reason to this patient."""
    return REASON_AD_DOMAIN + patient_id + requester


# --- wire values --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class WrappedKey:
    """A record's content key sealed to one reader's x25519 key."""

    reader: bytes
    sealed_key: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(reader=KEY, sealed_key=SEALED_KEY)


class _SealedEnvelope:
    """What an envelope on the wire can do (`EnvelopeWire`, `SealedReason`): the same three fields."""

    __slots__ = ()
    nonce: bytes
    ciphertext: bytes
    wrapped_keys: tuple[WrappedKey, ...]

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> Self:
        return cls(  # type: ignore[call-arg]  # the dataclasses below take these three fields
            envelope.nonce, envelope.ciphertext, tuple(WrappedKey(r, k) for r, k in envelope.wrapped_keys)
        )

    def to_envelope(self) -> Envelope:
        """The crypto layer's envelope; raises `DecryptionError` if malformed (unsorted readers)."""
        return Envelope(
            nonce=self.nonce,
            ciphertext=self.ciphertext,
            wrapped_keys=tuple((w.reader, w.sealed_key) for w in self.wrapped_keys),
        )

    @property
    def readers(self) -> tuple[bytes, ...]:
        return tuple(w.reader for w in self.wrapped_keys)


@dataclasses.dataclass(frozen=True, slots=True)
class EnvelopeWire(_SealedEnvelope):
    """An `Envelope` on the wire: nonce, ciphertext and the wrapped keys sorted by reader."""

    nonce: bytes
    ciphertext: bytes
    wrapped_keys: tuple[WrappedKey, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        nonce=FixedBytes(NONCE_SIZE),
        ciphertext=Bytes(RECORD_CIPHERTEXT_BYTES_MAX, TAG_SIZE),
        wrapped_keys=Seq(Struct(WrappedKey), RECORD_READERS_MAX),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class SealedReason(_SealedEnvelope):
    """An inquiry's reason, padded and encrypted, its key sealed to the patient and the requester.

    The rules never read the reason (free text: it must not be in the clear on every node); they
    only check who it is sealed for. The ciphertext has one fixed size (`REASON_PADDED_BYTES` plus
    the tag), so it does not even leak the reason's length.
    """

    nonce: bytes
    ciphertext: bytes
    wrapped_keys: tuple[WrappedKey, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        nonce=FixedBytes(NONCE_SIZE),
        ciphertext=FixedBytes(REASON_PADDED_BYTES + TAG_SIZE),
        wrapped_keys=Seq(Struct(WrappedKey), REASON_READERS_MAX),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Scope:
    """What an inquiry asks for and a grant covers.

    A record is covered when it lies in the time window [from_ms, to_ms] (its block time) and either
    both lists are empty (everything in the window) or its type is in `record_types` or its id is
    in `record_ids`. Both lists are sorted and unique so that a scope has one encoding.
    """

    record_types: tuple[str, ...]
    record_ids: tuple[bytes, ...]
    from_ms: int
    to_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        record_types=Seq(Text(allowed=RECORD_TYPES), len(RECORD_TYPES)),
        record_ids=Seq(HASH, SCOPE_RECORD_IDS_MAX),
        from_ms=UInt(),
        to_ms=UInt(),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class RecordKey:
    """A granted record's content key, re-sealed by the patient's client for the grantee."""

    record_id: bytes
    sealed_key: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(record_id=HASH, sealed_key=SEALED_KEY)


# --- transaction bodies -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RegisterPatientBody:
    """Self-signed by the patient: their signing key is the sender, this is their x25519 key."""

    enc_key: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(enc_key=KEY)


@dataclasses.dataclass(frozen=True, slots=True)
class RepresentativeBody:
    """Add or remove a representative (a signing key that may grant, deny and revoke)."""

    patient_id: bytes
    representative: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(patient_id=HASH, representative=KEY)


@dataclasses.dataclass(frozen=True, slots=True)
class AddRecordBody:
    """A new encrypted record for a patient, by its author institution (the sender)."""

    patient_id: bytes
    record_type: str
    commitment: bytes
    envelope: EnvelopeWire

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        patient_id=HASH,
        record_type=Text(allowed=RECORD_TYPES),
        commitment=HASH,
        envelope=Struct(EnvelopeWire),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class SupersedeRecordBody:
    """A correcting record that names the record it supersedes (nothing is edited or deleted)."""

    supersedes: bytes
    record: AddRecordBody

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(supersedes=HASH, record=Struct(AddRecordBody))


@dataclasses.dataclass(frozen=True, slots=True)
class RequestAccessBody:
    """An institution's inquiry: whose records, which, why, until when, and a short sealed reason."""

    patient_id: bytes
    scope: Scope
    purpose: str
    expires_ms: int
    sealed_reason: SealedReason

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        patient_id=HASH,
        scope=Struct(Scope),
        purpose=Text(allowed=PURPOSES),
        expires_ms=UInt(),
        sealed_reason=Struct(SealedReason),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class GrantBody:
    """The patient's (or a representative's) yes to an open inquiry, with re-sealed record keys."""

    inquiry_id: bytes
    record_keys: tuple[RecordKey, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        inquiry_id=HASH, record_keys=Seq(Struct(RecordKey), GRANT_RECORDS_MAX)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class DenyBody:
    inquiry_id: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(inquiry_id=HASH)


@dataclasses.dataclass(frozen=True, slots=True)
class RevokeBody:
    grant_id: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(grant_id=HASH)


@dataclasses.dataclass(frozen=True, slots=True)
class ReadReceiptBody:
    """The reading institution's receipt: which records it read under which grant."""

    grant_id: bytes
    record_ids: tuple[bytes, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        grant_id=HASH, record_ids=Seq(HASH, RECEIPT_RECORDS_MAX)
    )


# --- attachments (docs/adr/0013-attachment-blobs.md) ----------------------------------------------

#: Most attachments (blobs) one record carries.
ATTACHMENTS_MAX: Final = 16
#: Largest attachment, in plaintext bytes (the issue asks for at least 50 MB).
ATTACHMENT_BYTES_MAX: Final = 64 * 1024 * 1024
#: A blob key sealed under its record's key: nonce, key, tag (`health/blobs.py`).
SEALED_BLOB_KEY_SIZE: Final = NONCE_SIZE + 32 + TAG_SIZE


@dataclasses.dataclass(frozen=True, slots=True)
class BlobRef:
    """An attachment of a record: the blob's content address, its size and its key envelope.

    `blob_id` is the hash of the encrypted blob's manifest (chain/blobstore.py), `size` the
    plaintext's length in bytes, `sealed_key` the blob's own key encrypted under the record key
    with the blob id and the record's binding as associated data: whoever may open the record (its
    readers, and a grantee through the record key a grant re-seals) may open its attachments, and
    nobody else.
    """

    blob_id: bytes
    size: int
    sealed_key: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        blob_id=HASH,
        size=UInt(maximum=ATTACHMENT_BYTES_MAX, minimum=1),
        sealed_key=FixedBytes(SEALED_BLOB_KEY_SIZE),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class AddDocumentBody:
    """A record (new, or superseding `supersedes`) and its attachments, sorted by blob id."""

    supersedes: bytes
    record: AddRecordBody
    attachments: tuple[BlobRef, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        supersedes=OPTIONAL_HASH,
        record=Struct(AddRecordBody),
        attachments=Seq(Struct(BlobRef), ATTACHMENTS_MAX),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class RecordAttachments:
    """A record's attachments as stored (`h1/ratt/<record id>`)."""

    record_id: bytes
    attachments: tuple[BlobRef, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        record_id=HASH, attachments=Seq(Struct(BlobRef), ATTACHMENTS_MAX)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class BlobIndexEntry:
    """One entry of the ledger-wide list of attachments (`h1/blob/<u64>`): what nodes replicate."""

    blob_id: bytes
    record_id: bytes
    author: bytes
    size: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        blob_id=HASH, record_id=HASH, author=KEY, size=UInt(maximum=ATTACHMENT_BYTES_MAX)
    )


BODY_TYPES: Final[dict[str, type]] = {
    KIND_REGISTER_PATIENT: RegisterPatientBody,
    KIND_ADD_REPRESENTATIVE: RepresentativeBody,
    KIND_REMOVE_REPRESENTATIVE: RepresentativeBody,
    KIND_ADD_RECORD: AddRecordBody,
    KIND_SUPERSEDE_RECORD: SupersedeRecordBody,
    KIND_REQUEST_ACCESS: RequestAccessBody,
    KIND_GRANT: GrantBody,
    KIND_DENY: DenyBody,
    KIND_REVOKE: RevokeBody,
    KIND_READ_RECEIPT: ReadReceiptBody,
    KIND_ADD_DOCUMENT: AddDocumentBody,
}

# --- genesis and stored values ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Institution:
    """A registered institution: display name, role, signing key (its sender) and x25519 key."""

    name: str
    role: str
    sign_key: bytes
    enc_key: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        name=HumanText(max_length=INSTITUTION_NAME_LENGTH_MAX, max_bytes=INSTITUTION_NAME_BYTES_MAX),
        role=Text(allowed=ROLES),
        sign_key=KEY,
        enc_key=KEY,
    )


#: State layouts a genesis may declare (`HealthGenesis.layout`, `health.state`). Layout 1 is every
#: chain made before grant expiry events; layout 2 adds the grant expiry index, written by the tx
#: that creates a grant. A chain keeps its genesis layout for life, so an old chain replays with
#: exactly the writes (and state roots) it was certified with. Layout 3 also refuses a patient's
#: registration whose x25519 key is of low order (`health.enc_key_unusable`): on an older chain
#: that tx was valid, so its replay must still accept it. Layout 4 also refuses a record version
#: whose key is not sealed for the insurer of a live standing consent that covers it in its block
#: (`health.record_consent_unsealed`, ADR 0017 amendment 2): an older chain may hold such records.
STATE_LAYOUT_V1: Final = 1
#: The network's research small-cell threshold when its genesis sets none (ADR 0019: a network
#: policy), the lowest a genesis may set, and the largest k anything may name.
RESEARCH_K_MIN_DEFAULT: Final = 11
RESEARCH_K_MIN_LOWEST: Final = 2
RESEARCH_K_MAX: Final = 1000
STATE_LAYOUT_GRANT_EXPIRY: Final = 2
STATE_LAYOUT_ENC_KEY_CHECK: Final = 3
STATE_LAYOUT_CONSENT_SEALING: Final = 4
STATE_LAYOUT_LATEST: Final = STATE_LAYOUT_CONSENT_SEALING


@dataclasses.dataclass(frozen=True, slots=True)
class HealthGenesis:
    """`Genesis.app_state`: the canonical encoding of this (an empty `app_state` means no one).

    Layout 1 is encoded as `HealthGenesisV1` (the bytes every chain before layout 2 has); a later
    layout as this struct, whose `layout` field is at least 2 (`health.app.encode_genesis`).
    """

    institutions: tuple[Institution, ...]
    layout: int = STATE_LAYOUT_LATEST

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        institutions=Seq(Struct(Institution), GENESIS_INSTITUTIONS_MAX),
        layout=UInt(minimum=STATE_LAYOUT_GRANT_EXPIRY, maximum=STATE_LAYOUT_LATEST),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class HealthGenesisWithPolicy:
    """A genesis that also sets a network policy: the research small-cell threshold k, which no
    study may go below (ADR 0019 amendment "k at genesis"). Encoded only when k differs from
    `RESEARCH_K_MIN_DEFAULT`, so every genesis that sets no policy keeps its bytes and hash."""

    institutions: tuple[Institution, ...]
    layout: int
    research_k_min: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        institutions=Seq(Struct(Institution), GENESIS_INSTITUTIONS_MAX),
        layout=UInt(minimum=STATE_LAYOUT_GRANT_EXPIRY, maximum=STATE_LAYOUT_LATEST),
        research_k_min=UInt(minimum=RESEARCH_K_MIN_LOWEST, maximum=RESEARCH_K_MAX),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class HealthGenesisV1:
    """The genesis of a layout-1 chain, as it was encoded before layouts existed."""

    institutions: tuple[Institution, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        institutions=Seq(Struct(Institution), GENESIS_INSTITUTIONS_MAX)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class PatientState:
    patient_id: bytes
    sign_key: bytes
    enc_key: bytes
    representatives: tuple[bytes, ...]
    height: int
    time_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        patient_id=HASH,
        sign_key=KEY,
        enc_key=KEY,
        representatives=Seq(KEY, REPRESENTATIVES_MAX),
        height=UInt(),
        time_ms=UInt(),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class RecordState:
    """A stored record: ciphertext, commitment and the least metadata the rules need."""

    record_id: bytes
    patient_id: bytes
    author: bytes
    record_type: str
    commitment: bytes
    envelope: EnvelopeWire
    supersedes: bytes
    superseded_by: bytes
    height: int
    time_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        record_id=HASH,
        patient_id=HASH,
        author=KEY,
        record_type=Text(allowed=RECORD_TYPES),
        commitment=HASH,
        envelope=Struct(EnvelopeWire),
        supersedes=OPTIONAL_HASH,
        superseded_by=OPTIONAL_HASH,
        height=UInt(),
        time_ms=UInt(),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class InquiryState:
    inquiry_id: bytes
    patient_id: bytes
    requester: bytes
    scope: Scope
    purpose: str
    expires_ms: int
    sealed_reason: SealedReason
    status: str
    decision_id: bytes
    height: int
    time_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        inquiry_id=HASH,
        patient_id=HASH,
        requester=KEY,
        scope=Struct(Scope),
        purpose=Text(allowed=PURPOSES),
        expires_ms=UInt(),
        sealed_reason=Struct(SealedReason),
        status=Text(allowed=INQUIRY_STATUSES),
        decision_id=OPTIONAL_HASH,
        height=UInt(),
        time_ms=UInt(),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class GrantState:
    """A grant: live while not revoked and block time < `expires_ms` (`revoked_height` 0: never)."""

    grant_id: bytes
    inquiry_id: bytes
    patient_id: bytes
    grantee: bytes
    grantee_enc_key: bytes
    granted_by: bytes
    scope: Scope
    purpose: str
    expires_ms: int
    record_keys: tuple[RecordKey, ...]
    revoked_height: int
    revoked_time_ms: int
    height: int
    time_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        grant_id=HASH,
        inquiry_id=HASH,
        patient_id=HASH,
        grantee=KEY,
        grantee_enc_key=KEY,
        granted_by=KEY,
        scope=Struct(Scope),
        purpose=Text(allowed=PURPOSES),
        expires_ms=UInt(),
        record_keys=Seq(Struct(RecordKey), GRANT_RECORDS_MAX),
        revoked_height=UInt(),
        revoked_time_ms=UInt(),
        height=UInt(),
        time_ms=UInt(),
    )

    @property
    def is_revoked(self) -> bool:
        return self.revoked_height != 0

    def get_sealed_key(self, record_id: bytes) -> bytes | None:
        return next((rk.sealed_key for rk in self.record_keys if rk.record_id == record_id), None)


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEvent:
    """One entry of a patient's audit trail; `event_id` is the id of the tx that caused it."""

    event: str
    event_id: bytes
    actor: bytes
    subject_id: bytes
    record_ids: tuple[bytes, ...]
    height: int
    time_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        event=Text(allowed=EVENTS),
        event_id=HASH,
        actor=KEY,
        subject_id=Bytes(max(HASH_SIZE, PUBLIC_KEY_SIZE)),
        record_ids=Seq(HASH, RECEIPT_RECORDS_MAX),
        height=UInt(),
        time_ms=UInt(),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class IdList:
    """A bounded list of ids stored under one key (a patient's live grants)."""

    ids: tuple[bytes, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(ids=Seq(HASH, PATIENT_LIVE_GRANTS_MAX))


def is_covered(scope: Scope, record_id: bytes, record_type: str, time_ms: int | None) -> bool:
    """Whether `scope` covers a record; `time_ms` None (block time unknown) skips the window."""
    if time_ms is not None and not scope.from_ms <= time_ms <= scope.to_ms:
        return False
    if not scope.record_types and not scope.record_ids:
        return True
    return record_type in scope.record_types or record_id in scope.record_ids


def is_grant_live(grant: GrantState, time_ms: int | None) -> bool:
    """Not revoked and not expired; with no block time (admission) only revocation counts."""
    if grant.is_revoked:
        return False
    return time_ms is None or time_ms < grant.expires_ms


# --- grants in parts (ADR 0012) -----------------------------------------------------------------


def compute_grant_part_count(record_count: int) -> int:
    """How many parts a grant in parts of `record_count` records has (all full but the last)."""
    return -(-record_count // GRANT_PART_RECORDS_MAX)


def compute_grant_part_size(record_count: int, part: int) -> int:
    """How many records part `part` of a grant of `record_count` records carries."""
    return max(0, min(GRANT_PART_RECORDS_MAX, record_count - part * GRANT_PART_RECORDS_MAX))


def compute_grant_part_digest(inquiry_id: bytes, part: int, record_ids: tuple[bytes, ...]) -> bytes:
    """What a manifest commits to for one part: the inquiry, the part's index, its record ids.

    The ids alone (not the sealed keys): what the patient approves is which records are shared.
    """
    return digest(GRANT_PART_DOMAIN + inquiry_id + part.to_bytes(4, "big") + b"".join(record_ids))


@dataclasses.dataclass(frozen=True, slots=True)
class GrantManifestBody:
    """The patient's yes to an open inquiry whose records do not fit one tx (ADR 0012).

    Declares exactly what is shared: `record_count` records, sorted by id and cut into parts of
    `GRANT_PART_RECORDS_MAX` (the last one shorter), each pinned by its digest
    (`compute_grant_part_digest`). The keys follow in `GrantPartBody` txs, one a part.
    """

    inquiry_id: bytes
    record_count: int
    part_digests: tuple[bytes, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        inquiry_id=HASH,
        record_count=UInt(GRANT_MANIFEST_RECORDS_MAX),
        part_digests=Seq(HASH, GRANT_PARTS_MAX),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class GrantPartBody:
    """One part of a grant in parts: the re-sealed keys of exactly the records its digest names."""

    grant_id: bytes
    part: int
    record_keys: tuple[RecordKey, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        grant_id=HASH,
        part=UInt(GRANT_PARTS_MAX - 1),
        record_keys=Seq(Struct(RecordKey), GRANT_PART_RECORDS_MAX),
    )


BODY_TYPES[KIND_GRANT_MANIFEST] = GrantManifestBody
BODY_TYPES[KIND_GRANT_PART] = GrantPartBody


@dataclasses.dataclass(frozen=True, slots=True)
class GrantTerms:
    """What a narrowed grant covers instead of its inquiry's terms: a scope within the inquiry's
    (every record it covers the inquiry covers too) and an expiry no later than the inquiry's."""

    scope: Scope
    expires_ms: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(scope=Struct(Scope), expires_ms=UInt())


@dataclasses.dataclass(frozen=True, slots=True)
class NarrowedGrantBody:
    """A grant (`GrantBody`) on narrower terms: the patient shares less, or for less long, than asked."""

    grant: GrantBody
    terms: GrantTerms

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        grant=Struct(GrantBody), terms=Struct(GrantTerms)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class NarrowedGrantManifestBody:
    """A grant in parts (`GrantManifestBody`, ADR 0012) on narrower terms."""

    manifest: GrantManifestBody
    terms: GrantTerms

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        manifest=Struct(GrantManifestBody), terms=Struct(GrantTerms)
    )


BODY_TYPES[KIND_GRANT_NARROWED] = NarrowedGrantBody
BODY_TYPES[KIND_GRANT_MANIFEST_NARROWED] = NarrowedGrantManifestBody


@dataclasses.dataclass(frozen=True, slots=True)
class GrantPartsState:
    """A grant in parts: what its manifest declared and which parts have arrived (a bitmap).

    Stored beside its `GrantState` (whose `record_keys` is empty); each arrived key is stored under
    the grant and the record (`state.save_grant_key`), so a reader finds it without a scan.
    """

    grant_id: bytes
    record_count: int
    part_digests: tuple[bytes, ...]
    #: Bit `i % 8` of byte `i // 8` set: part `i` arrived.
    parts_received: bytes
    keys_received: int

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        grant_id=HASH,
        record_count=UInt(GRANT_MANIFEST_RECORDS_MAX),
        part_digests=Seq(HASH, GRANT_PARTS_MAX),
        parts_received=Bytes(GRANT_PARTS_MAX // 8),
        keys_received=UInt(GRANT_MANIFEST_RECORDS_MAX),
    )

    def is_part_received(self, part: int) -> bool:
        return bool(self.parts_received[part // 8] >> (part % 8) & 1)

    def with_part_received(self, part: int, keys: int) -> GrantPartsState:
        bitmap = bytearray(self.parts_received)
        bitmap[part // 8] |= 1 << (part % 8)
        return dataclasses.replace(
            self, parts_received=bytes(bitmap), keys_received=self.keys_received + keys
        )

    @property
    def is_complete(self) -> bool:
        return self.keys_received == self.record_count
