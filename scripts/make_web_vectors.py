"""Generate what keeps the web app's codec and crypto identical to Python's (docs/adr/0018).

    .venv/bin/python scripts/make_web_vectors.py           # writes the two files below
    .venv/bin/python scripts/make_web_vectors.py --check   # exit 1 if either is not current

Two committed files, both written from the Python code itself:

- `web/src/wire.ts`: the wire schemas (from each type's `WIRE_FIELDS`), tx kinds, code lists,
  domain tags and limits the app needs, so that none of them is restated by hand in TypeScript.
- `web/test/vectors.json`: test vectors made by the Python codec, builders and crypto from fixed
  keys, nonces and timestamps: canonical encodings, encodings the codec refuses, signed patient
  transactions and their ids, ed25519 signatures, sealed boxes, XChaCha20-Poly1305 ciphertexts,
  a record and an inquiry reason as the ledger holds them, and key files as the CLI writes them.
  `web/test/*.test.ts` (node's test runner) checks every one; `tests/web/` checks that this
  script still writes these exact bytes, so a change on either side shows.

Sealed boxes are random by design (an ephemeral key per box); here they are built from fixed
ephemeral keys the way libsodium builds them, and each is opened with PyNaCl before it is written,
as is every record, reason and key file: a vector is only written once Python's own code reads it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import msgpack
import nacl.bindings
import nacl.encoding
import nacl.hash
import nacl.public
import nacl.pwhash.argon2id

from medledger.chain import blobstore, limits
from medledger.chain.codec import Bytes, FieldSpec, HumanText, Seq, Struct, Text, UInt, decode, encode
from medledger.chain.errors import CodecError
from medledger.chain.lightclient import (
    LightClientError,
    verify_genesis,
    verify_next_block,
    verify_tx_inclusion,
)
from medledger.chain.txbuilder import sign_commit
from medledger.chain.types import (
    TX_SIGN_DOMAIN,
    VOTE_SIGN_DOMAIN,
    Block,
    Commit,
    CommitSig,
    ConsensusParams,
    Genesis,
    GenesisV1,
    GenesisV2,
    Header,
    Tx,
    Validator,
    ValidatorSet,
    Vote,
    VoteKind,
    compute_tx_id,
    compute_tx_signing_bytes,
)
from medledger.chain.types import (
    encode_genesis as encode_chain_genesis,
)
from medledger.chain.validation import compute_tx_root
from medledger.crypto import (
    HASH_SIZE,
    PUBLIC_KEY_SIZE,
    SEED_SIZE,
    SIGNATURE_SIZE,
    Identity,
    MerkleProof,
    compute_merkle_proof,
    compute_merkle_root,
    decode_identity,
    digest,
    encode_identity,
    keyfile,
    open_content_key,
    verify_merkle_proof,
    verify_signature,
)
from medledger.crypto import envelope as crypto_envelope
from medledger.crypto.signing import FINGERPRINT_HEX_CHARS
from medledger.health import blobs as health_blobs
from medledger.health import (
    claim_seal,
    claims_client,
    claims_types,
    client,
    records,
    research,
    research_client,
    research_types,
    types,
)
from medledger.health.app import encode_genesis
from medledger.health.auth import build_authorization, compute_request_signing_input
from medledger.health.preview import PURPOSE_WORDS, RECORD_TYPE_WORDS
from medledger.health.reasons import open_reason
from medledger.health.record_types import CONTEXT_TYPES
from medledger.health.rights_seal import build_request_records
from medledger.health.rights_types import (
    AMENDMENT_TEXT_AD_DOMAIN,
    AMENDMENT_TEXT_BYTES_MAX,
    AMENDMENT_TEXT_LENGTH_MAX,
    AMENDMENT_TEXT_PADDED_BYTES,
    AcceptAmendmentBody,
    RequestAmendmentBody,
    RequestRecordsBody,
    SealedText,
)
from medledger.health.types import (
    AuditEvent,
    EnvelopeWire,
    GrantState,
    InquiryState,
    PatientState,
    RecordKey,
    RecordState,
    Scope,
    SealedReason,
    WrappedKey,
    compute_patient_id,
)

ROOT: Final = Path(__file__).resolve().parent.parent
WIRE_TS: Final = ROOT / "web" / "src" / "wire.ts"
VECTORS: Final = ROOT / "web" / "test" / "vectors.json"
CHAIN_ID: Final = "medledger-web-vectors"
#: A fixed block time for every vector (2026-01-02T03:04:05.678Z).
TIME_MS: Final = 1_767_323_045_678

#: The wire types the app encodes or decodes, dependencies first.
WIRE_TYPES: Final[tuple[type[Any], ...]] = (
    Tx,
    Header,
    Block,
    CommitSig,
    Commit,
    Validator,
    ValidatorSet,
    GenesisV1,
    ConsensusParams,
    GenesisV2,
    Vote,
    WrappedKey,
    EnvelopeWire,
    SealedReason,
    Scope,
    RecordKey,
    types.RegisterPatientBody,
    types.RepresentativeBody,
    types.AddRecordBody,
    types.SupersedeRecordBody,
    types.RequestAccessBody,
    types.GrantBody,
    types.DenyBody,
    types.RevokeBody,
    types.ReadReceiptBody,
    types.BlobRef,
    types.AddDocumentBody,
    types.GrantManifestBody,
    types.GrantPartBody,
    types.GrantTerms,
    types.NarrowedGrantBody,
    types.NarrowedGrantManifestBody,
    RequestRecordsBody,
    AcceptAmendmentBody,
    SealedText,
    RequestAmendmentBody,
    blobstore.BlobManifest,
    types.Institution,
    types.HealthGenesis,
    types.HealthGenesisWithPolicy,
    PatientState,
    RecordState,
    InquiryState,
    GrantState,
    AuditEvent,
    # Claims (issue 12): what the patient's app verifies, opens and signs of them.
    claims_types.LabelledRecordBody,
    claims_types.LabelledDocumentBody,
    claims_types.LabelledAmendmentBody,
    claims_types.ConsentTerms,
    claims_types.GrantConsentBody,
    claims_types.ConsentManifestBody,
    claims_types.FileClaimBody,
    claims_types.AmendClaimBody,
    claims_types.DecideClaimBody,
    claims_types.ClaimReadReceiptBody,
    claims_types.ClaimState,
    claims_types.ClaimDecision,
    # Research (issue 13): the studies the page lists, the opt-ins it signs, the queries it shows.
    research_types.QueryTemplate,
    research_types.RegisterStudyBody,
    research_types.StudyMembershipBody,
    research_types.QueryParams,
    research_types.SubmitQueryBody,
    research_types.AnswerCell,
    research_types.PostAnswerBody,
)

#: Code lists named in schemas (a `Text(allowed=...)` that is one of these refers to it by name).
CODE_LISTS: Final[dict[str, frozenset[str]]] = {
    "RECORD_TYPES": types.RECORD_TYPES,
    "PURPOSES": types.PURPOSES,
    "ROLES": types.ROLES,
    "INQUIRY_STATUSES": types.INQUIRY_STATUSES,
    "EVENTS": types.EVENTS,
    # Resources a record may carry inside (`contained`, a Bundle's entries) besides its own type.
    "CONTEXT_TYPES": CONTEXT_TYPES,
    "SECURITY_LABELS": claims_types.SECURITY_LABELS,
    "OUTCOMES": claims_types.OUTCOMES,
    "CLAIM_STATUSES": claims_types.CLAIM_STATUSES,
    "AUTHOR_ROLES": types.AUTHOR_ROLES,
    "TEMPLATE_KINDS": research_types.TEMPLATE_KINDS,
    "RANGED_TEMPLATE_KINDS": research_types.RANGED_TEMPLATE_KINDS,
    "GROUPINGS": research_types.GROUPINGS,
    "CELL_LABELS": research_types.CELL_LABELS,
    "CELL_STATUSES": research_types.CELL_STATUSES,
}

CONSTANTS: Final[dict[str, int | str | bytes]] = {
    "TX_SIGN_DOMAIN": TX_SIGN_DOMAIN,
    "VOTE_SIGN_DOMAIN": VOTE_SIGN_DOMAIN,
    "PATIENT_ID_DOMAIN": types.PATIENT_ID_DOMAIN,
    "RECORD_AD_DOMAIN": types.RECORD_AD_DOMAIN,
    "RECORD_KEY_DOMAIN": types.RECORD_KEY_DOMAIN,
    "COMMITMENT_DOMAIN": types.COMMITMENT_DOMAIN,
    "REASON_AD_DOMAIN": types.REASON_AD_DOMAIN,
    "GRANT_PART_DOMAIN": types.GRANT_PART_DOMAIN,
    "HASH_SIZE": HASH_SIZE,
    "PUBLIC_KEY_SIZE": PUBLIC_KEY_SIZE,
    "SEED_SIZE": SEED_SIZE,
    "SIGNATURE_SIZE": SIGNATURE_SIZE,
    "FINGERPRINT_HEX_CHARS": FINGERPRINT_HEX_CHARS,
    "CONTENT_KEY_SIZE": crypto_envelope.CONTENT_KEY_SIZE,
    "AEAD_NONCE_SIZE": crypto_envelope.NONCE_SIZE,
    "AEAD_TAG_SIZE": crypto_envelope.TAG_SIZE,
    "SEALED_KEY_SIZE": crypto_envelope.SEALED_KEY_SIZE,
    "RECORD_SALT_SIZE": records.SALT_SIZE,
    "TX_BYTES_MAX": limits.TX_BYTES_MAX,
    "TX_BODY_BYTES_MAX": limits.TX_BODY_BYTES_MAX,
    "STATE_VALUE_BYTES_MAX": types.STATE_VALUE_BYTES_MAX,
    "TEXT_ID_LENGTH_MAX": limits.TEXT_ID_LENGTH_MAX,
    "REASON_LENGTH_MAX": types.REASON_LENGTH_MAX,
    "REASON_BYTES_MAX": types.REASON_BYTES_MAX,
    "REASON_PADDED_BYTES": types.REASON_PADDED_BYTES,
    "GRANT_RECORDS_MAX": types.GRANT_RECORDS_MAX,
    "GRANT_PART_RECORDS_MAX": types.GRANT_PART_RECORDS_MAX,
    "GRANT_MANIFEST_RECORDS_MAX": types.GRANT_MANIFEST_RECORDS_MAX,
    "SCOPE_RECORD_IDS_MAX": types.SCOPE_RECORD_IDS_MAX,
    "REPRESENTATIVES_MAX": types.REPRESENTATIVES_MAX,
    "INQUIRY_TTL_MS_MAX": types.INQUIRY_TTL_MS_MAX,
    "KIND_REGISTER_PATIENT": types.KIND_REGISTER_PATIENT,
    "KIND_ADD_REPRESENTATIVE": types.KIND_ADD_REPRESENTATIVE,
    "KIND_REMOVE_REPRESENTATIVE": types.KIND_REMOVE_REPRESENTATIVE,
    "KIND_ADD_RECORD": types.KIND_ADD_RECORD,
    "KIND_SUPERSEDE_RECORD": types.KIND_SUPERSEDE_RECORD,
    "KIND_REQUEST_ACCESS": types.KIND_REQUEST_ACCESS,
    "KIND_GRANT": types.KIND_GRANT,
    "KIND_DENY": types.KIND_DENY,
    "KIND_REVOKE": types.KIND_REVOKE,
    "KIND_READ_RECEIPT": types.KIND_READ_RECEIPT,
    "KIND_GRANT_MANIFEST": types.KIND_GRANT_MANIFEST,
    "KIND_GRANT_PART": types.KIND_GRANT_PART,
    "KIND_GRANT_NARROWED": types.KIND_GRANT_NARROWED,
    "KIND_GRANT_MANIFEST_NARROWED": types.KIND_GRANT_MANIFEST_NARROWED,
    "KIND_REQUEST_RECORDS": types.KIND_REQUEST_RECORDS,
    "KIND_ADD_DOCUMENT": types.KIND_ADD_DOCUMENT,
    "KIND_ACCEPT_AMENDMENT": types.KIND_ACCEPT_AMENDMENT,
    "KIND_REQUEST_AMENDMENT": types.KIND_REQUEST_AMENDMENT,
    "KIND_ADD_LABELLED_RECORD": types.KIND_ADD_LABELLED_RECORD,
    "KIND_ADD_LABELLED_DOCUMENT": types.KIND_ADD_LABELLED_DOCUMENT,
    "KIND_ACCEPT_LABELLED_AMENDMENT": types.KIND_ACCEPT_LABELLED_AMENDMENT,
    "KIND_GRANT_CONSENT": types.KIND_GRANT_CONSENT,
    "KIND_CONSENT_MANIFEST": types.KIND_CONSENT_MANIFEST,
    "KIND_FILE_CLAIM": types.KIND_FILE_CLAIM,
    "KIND_AMEND_CLAIM": types.KIND_AMEND_CLAIM,
    "KIND_DECIDE_CLAIM": types.KIND_DECIDE_CLAIM,
    "KIND_CLAIM_READ_RECEIPT": types.KIND_CLAIM_READ_RECEIPT,
    "CLAIM_AD_DOMAIN": claim_seal.CLAIM_AD_DOMAIN,
    "CLAIM_RESPONSE_AD_DOMAIN": claim_seal.CLAIM_RESPONSE_AD_DOMAIN,
    "CLAIM_PAD_BYTES": claim_seal.CLAIM_PAD_BYTES,
    "CONSENT_TTL_MS_MAX": claims_types.CONSENT_TTL_MS_MAX,
    "KIND_REGISTER_STUDY": types.KIND_REGISTER_STUDY,
    "KIND_JOIN_STUDY": types.KIND_JOIN_STUDY,
    "KIND_LEAVE_STUDY": types.KIND_LEAVE_STUDY,
    "KIND_SUBMIT_QUERY": types.KIND_SUBMIT_QUERY,
    "KIND_POST_ANSWER": types.KIND_POST_ANSWER,
    "QUERY_DIGEST_DOMAIN": research_types.QUERY_DIGEST_DOMAIN,
    "STUDY_QUERIES_MAX": research_types.STUDY_QUERIES_MAX,
    "TEMPLATE_HISTOGRAM": research_types.TEMPLATE_HISTOGRAM,
    "GROUP_NONE": research_types.GROUP_NONE,
    "AMENDMENT_TEXT_AD_DOMAIN": AMENDMENT_TEXT_AD_DOMAIN,
    "AMENDMENT_TEXT_LENGTH_MAX": AMENDMENT_TEXT_LENGTH_MAX,
    "AMENDMENT_TEXT_BYTES_MAX": AMENDMENT_TEXT_BYTES_MAX,
    "AMENDMENT_TEXT_PADDED_BYTES": AMENDMENT_TEXT_PADDED_BYTES,
    "BLOB_ID_DOMAIN": blobstore.BLOB_ID_DOMAIN,
    "BLOB_CHUNK_DOMAIN": blobstore.BLOB_CHUNK_DOMAIN,
    "BLOB_KEY_AD_DOMAIN": health_blobs.BLOB_KEY_AD_DOMAIN,
    "BLOB_CHUNK_AD_DOMAIN": health_blobs.BLOB_CHUNK_AD_DOMAIN,
    "BLOB_URL_PREFIX": health_blobs.BLOB_URL_PREFIX,
    "BLOB_MANIFEST_BYTES_MAX": blobstore.BLOB_MANIFEST_BYTES_MAX,
    "BLOB_CHUNK_BYTES_MAX": blobstore.BLOB_CHUNK_BYTES_MAX,
    "KEY_FILE_FORMAT": keyfile.KEY_FILE_FORMAT,
    "KEY_FILE_VERSION": keyfile.KEY_FILE_VERSION,
    "KEY_FILE_KDF": keyfile.KEY_FILE_KDF,
    "KEY_FILE_SIZE_MAX": keyfile.KEY_FILE_SIZE_MAX,
    "KDF_OPSLIMIT_MIN": keyfile.KDF_OPSLIMIT_MIN,
    "KDF_OPSLIMIT_MAX": keyfile.KDF_OPSLIMIT_MAX,
    "KDF_MEMLIMIT_MIN": keyfile.KDF_MEMLIMIT_MIN,
    "KDF_MEMLIMIT_MAX": keyfile.KDF_MEMLIMIT_MAX,
    "KDF_OPSLIMIT_DEFAULT": nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
    "KDF_MEMLIMIT_DEFAULT": nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    "KEY_FILE_SALT_SIZE": keyfile.SALT_SIZE,
    "KEY_FILE_NONCE_SIZE": keyfile.NONCE_SIZE,
    "KEY_FILE_CIPHERTEXT_SIZE": keyfile.CIPHERTEXT_SIZE,
}

# --- web/src/wire.ts ------------------------------------------------------------------------------


def _ts_spec(spec: FieldSpec) -> tuple[str, str]:
    """The TypeScript spec expression and value type of one field spec."""
    if isinstance(spec, UInt):
        return f"uint({spec.maximum}n, {spec.minimum}n)", "bigint"
    if isinstance(spec, Bytes):
        return f"bytes({spec.max_length}, {spec.min_length})", "Uint8Array"
    if isinstance(spec, Text):
        allowed = "null"
        if spec.allowed is not None:
            named = [name for name, values in CODE_LISTS.items() if values == spec.allowed]
            allowed = named[0] if named else json.dumps(sorted(spec.allowed))
        return f"text({spec.max_length}, {spec.min_length}, {allowed})", "string"
    if isinstance(spec, HumanText):
        return f"humanText({spec.max_length}, {spec.max_bytes}, {spec.min_length})", "string"
    if isinstance(spec, Struct):
        return f"struct({spec.cls.__name__}Schema)", spec.cls.__name__
    if isinstance(spec, Seq):
        item, item_type = _ts_spec(spec.item)
        return f"seq({item}, {spec.max_items})", f"readonly {item_type}[]"
    raise TypeError(f"no TypeScript form for {spec!r}")


def _ts_constant(value: int | str | bytes) -> str:
    if isinstance(value, bytes):
        return f'fromHex("{value.hex()}")'
    return json.dumps(value)


def compute_wire_ts() -> str:
    lines = [
        "// Generated by scripts/make_web_vectors.py from the Python wire types: do not edit.",
        "// tests/web/test_web_vectors.py fails when this file is not what the script writes now.",
        "",
        'import { fromHex } from "./bytes.js";',
        'import { bytes, humanText, seq, struct, text, uint, schema, type Schema } from "./codec.js";',
        "",
    ]
    for name, value in CONSTANTS.items():
        lines.append(f"export const {name} = {_ts_constant(value)};")
    # Values of uint fields are bigint on the TypeScript side.
    lines.append(f"export const VOTE_KIND_PRECOMMIT = {int(VoteKind.PRECOMMIT)}n;")
    # Types whose Python class adds a cross-field rule (`__post_init__`): web/src/checks.ts has each.
    post_init = sorted(cls.__name__ for cls in WIRE_TYPES if "__post_init__" in vars(cls))
    lines.append(f"export const POST_INIT_TYPES: readonly string[] = {json.dumps(post_init)};")
    lines.append("")
    for name, values in CODE_LISTS.items():
        lines.append(f"export const {name}: readonly string[] = {json.dumps(sorted(values))};")
    # What the patient is shown, in the same words the CLI and SDK use (health/preview.py).
    for name, words in (("PURPOSE_WORDS", PURPOSE_WORDS), ("RECORD_TYPE_WORDS", RECORD_TYPE_WORDS)):
        rendered_words = json.dumps(dict(sorted(words.items())), ensure_ascii=False)
        lines.append(f"export const {name}: Readonly<Record<string, string>> = {rendered_words};")
    for cls in WIRE_TYPES:
        fields = sorted(cls.WIRE_FIELDS.items())
        rendered = [(field, *_ts_spec(spec)) for field, spec in fields]
        lines += ["", f"export interface {cls.__name__} {{"]
        lines += [f"  readonly {field}: {value_type};" for field, _, value_type in rendered]
        lines += [
            "}",
            f"export const {cls.__name__}Schema: Schema<{cls.__name__}> = schema<{cls.__name__}>(",
            f'  "{cls.__name__}",',
            "  {",
        ]
        lines += [f"    {field}: {expression}," for field, expression, _ in rendered]
        lines += ["  },", ");"]
    return "\n".join(lines) + "\n"


# --- vectors --------------------------------------------------------------------------------------


def _identity(name: str) -> Identity:
    """A fixed identity for the vectors, its secrets derived from its name."""
    return Identity.from_secrets(
        digest(f"web-vectors/{name}/sign".encode()), digest(f"web-vectors/{name}/enc".encode())
    )


def _fixed(label: str, size: int) -> bytes:
    return nacl.hash.blake2b(label.encode(), digest_size=size, encoder=nacl.encoding.RawEncoder)


def seal_deterministic(message: bytes, reader: bytes, ephemeral_label: str) -> bytes:
    """`crypto_box_seal` with a fixed ephemeral key: libsodium's construction, step by step.

    A sealed box is the ephemeral public key, then `crypto_box` of the message under the nonce
    BLAKE2b-192(ephemeral public key || reader key). Only vectors may fix the ephemeral key.
    """
    ephemeral_pk, ephemeral_sk = nacl.bindings.crypto_box_seed_keypair(_fixed(ephemeral_label, 32))
    nonce = nacl.hash.blake2b(ephemeral_pk + reader, digest_size=24, encoder=nacl.encoding.RawEncoder)
    return ephemeral_pk + nacl.bindings.crypto_box(message, nonce, reader, ephemeral_sk)


def _typed_json(spec: FieldSpec, value: Any) -> Any:
    """A wire value as JSON the TypeScript tests turn back into values by the same schema:
    bytes as hex, integers as decimal strings (beyond 2^53), text as is."""
    if isinstance(spec, UInt):
        return str(value)
    if isinstance(spec, Bytes):
        return bytes(value).hex()
    if isinstance(spec, Text | HumanText):
        return value
    if isinstance(spec, Struct):
        return _struct_json(value)
    if isinstance(spec, Seq):
        return [_typed_json(spec.item, v) for v in value]
    raise TypeError(f"no JSON form for {spec!r}")


def _struct_json(value: Any) -> dict[str, Any]:
    return {name: _typed_json(spec, getattr(value, name)) for name, spec in type(value).WIRE_FIELDS.items()}


def _encoding_vector(name: str, value: Any) -> dict[str, Any]:
    encoded = encode(value)
    assert decode(type(value), encoded, max_bytes=len(encoded)) == value
    return {
        "name": name,
        "schema": type(value).__name__,
        "value": _struct_json(value),
        "encoded": encoded.hex(),
    }


def _identity_json(name: str, identity: Identity) -> dict[str, str]:
    sign_seed, enc_secret = identity.secrets()
    return {
        "name": name,
        "sign_seed": sign_seed.hex(),
        "enc_secret": enc_secret.hex(),
        "sign_key": identity.public.sign_key.hex(),
        "enc_key": identity.public.enc_key.hex(),
        "patient_id": compute_patient_id(identity.public.sign_key).hex(),
        "fingerprint": identity.public.fingerprint(),
    }


#: The terms of the narrowed grants' vectors: one type, a window in 2024, an expiry before the
#: inquiry's (the rules check them against an inquiry; the codec only encodes them).
NARROWED_TERMS: Final = types.GrantTerms(
    Scope(("Observation",), (), 1_704_067_200_000, 1_735_689_599_999), 1_767_225_600_000
)


def _terms_args(terms: types.GrantTerms) -> dict[str, Any]:
    return {
        "record_types": list(terms.scope.record_types),
        "record_ids": [i.hex() for i in terms.scope.record_ids],
        "from_ms": str(terms.scope.from_ms),
        "to_ms": str(terms.scope.to_ms),
        "expires_ms": str(terms.expires_ms),
    }


def _tx_vector(name: str, signer: str, args: dict[str, Any], signed: client.SignedTx) -> dict[str, Any]:
    tx, raw, tx_id = signed
    assert decode(Tx, raw, max_bytes=limits.TX_BYTES_MAX) == tx
    signing = compute_tx_signing_bytes(tx.chain_id, tx.kind, tx.sender, tx.nonce, tx.timestamp_ms, tx.body)
    assert verify_signature(tx.sender, signing, tx.signature)
    return {
        "name": name,
        "signer": signer,
        "kind": tx.kind,
        "nonce": str(tx.nonce),
        "timestamp_ms": str(tx.timestamp_ms),
        "args": args,
        "body": tx.body.hex(),
        "signing_bytes": signing.hex(),
        "signature": tx.signature.hex(),
        "tx": raw.hex(),
        "tx_id": bytes(tx_id).hex(),
    }


def _record(patient: Identity, author: Identity, grantee: Identity) -> tuple[dict[str, Any], RecordState]:
    """A record as the ledger holds it, sealed for the patient and the author, and its key re-sealed
    for a grantee, built from fixed salt, content key and nonce as `records.encrypt_record` builds it."""
    patient_id = compute_patient_id(patient.public.sign_key)
    plaintext = (
        b'{"resourceType":"Observation","status":"final","code":{"text":"Glucose"},'
        b'"valueQuantity":{"value":5.4,"unit":"mmol/L"},"subject":{"reference":"Patient/example"}}'
    )
    salt = _fixed("record/salt", records.SALT_SIZE)
    content_key = _fixed("record/content-key", crypto_envelope.CONTENT_KEY_SIZE)
    nonce = _fixed("record/nonce", crypto_envelope.NONCE_SIZE)
    binding = types.compute_record_binding(patient_id, author.public.sign_key, "Observation", b"")
    record_key = records.compute_record_key(content_key, binding)
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        salt + plaintext, types.compute_record_associated_data(binding), nonce, record_key
    )
    readers = sorted({patient.public.enc_key, author.public.enc_key})
    wrapped = tuple(
        WrappedKey(reader, seal_deterministic(content_key, reader, f"record/ephemeral/{i}"))
        for i, reader in enumerate(readers)
    )
    record = RecordState(
        record_id=digest(b"web-vectors/record-id"),
        patient_id=patient_id,
        author=author.public.sign_key,
        record_type="Observation",
        commitment=types.compute_commitment(binding, salt, plaintext),
        envelope=EnvelopeWire(nonce, ciphertext, wrapped),
        supersedes=b"",
        superseded_by=b"",
        height=7,
        time_ms=TIME_MS,
    )
    granted_key = seal_deterministic(record_key, grantee.public.enc_key, "record/ephemeral/grantee")
    for reader in (patient, author):  # Python's own reader opens it, or no vector is written
        assert records.open_record(record, reader).canonical_json == plaintext
    assert records.open_record(record, grantee, sealed_key=granted_key).canonical_json == plaintext
    encoded = encode(record)
    vector = {
        "name": "observation for the patient and its author",
        "record": _struct_json(record),
        "encoded": encoded.hex(),
        "binding": binding.hex(),
        "record_key": record_key.hex(),
        "salt": salt.hex(),
        "plaintext": plaintext.decode(),
        "grantee": "hospital",
        "grantee_sealed_key": granted_key.hex(),
        "readers": ["patient", "author"],
    }
    return vector, record


def _inquiry(patient: Identity, requester: Identity, reason: str) -> dict[str, Any]:
    """An inquiry whose reason is sealed for the patient and the requester (`reasons.seal_reason`'s
    construction with fixed key, nonce and ephemeral keys)."""
    patient_id = compute_patient_id(patient.public.sign_key)
    padded = nacl.bindings.sodium_pad(reason.encode(), types.REASON_PADDED_BYTES)
    key = _fixed("reason/key", crypto_envelope.CONTENT_KEY_SIZE)
    nonce = _fixed("reason/nonce", crypto_envelope.NONCE_SIZE)
    associated_data = types.compute_reason_associated_data(patient_id, requester.public.sign_key)
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(padded, associated_data, nonce, key)
    readers = sorted({patient.public.enc_key, requester.public.enc_key})
    wrapped = tuple(
        WrappedKey(r, seal_deterministic(key, r, f"reason/ephemeral/{i}")) for i, r in enumerate(readers)
    )
    inquiry = InquiryState(
        inquiry_id=digest(b"web-vectors/inquiry-id"),
        patient_id=patient_id,
        requester=requester.public.sign_key,
        scope=client.make_scope(record_types=("Observation", "Immunization"), from_ms=0, to_ms=TIME_MS),
        purpose=types.PURPOSE_TREAT,
        expires_ms=TIME_MS + 30 * 24 * 3600 * 1000,
        sealed_reason=SealedReason(nonce, ciphertext, wrapped),
        status=types.INQUIRY_OPEN,
        decision_id=b"",
        height=9,
        time_ms=TIME_MS,
    )
    assert open_reason(inquiry, patient) == reason
    assert open_reason(inquiry, requester) == reason
    return {
        "name": "an inquiry with a non-ASCII reason",
        "inquiry": _struct_json(inquiry),
        "encoded": encode(inquiry).hex(),
        "reason": reason,
    }


def _sealed_for(plaintext: bytes, readers: list[bytes], associated_data: bytes, label: str) -> EnvelopeWire:
    """`seal_envelope` of a claim-padded plaintext with fixed content key, nonce and ephemeral keys."""
    padded = nacl.bindings.sodium_pad(plaintext, claim_seal.CLAIM_PAD_BYTES)
    key = _fixed(f"{label}/key", crypto_envelope.CONTENT_KEY_SIZE)
    nonce = _fixed(f"{label}/nonce", crypto_envelope.NONCE_SIZE)
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(padded, associated_data, nonce, key)
    wrapped = tuple(
        WrappedKey(r, seal_deterministic(key, r, f"{label}/ephemeral/{i}"))
        for i, r in enumerate(sorted(set(readers)))
    )
    return EnvelopeWire(nonce, ciphertext, wrapped)


def _claim_vectors(patient: Identity, clinic: Identity, insurer: Identity) -> dict[str, Any]:
    """A claim (version 2) sealed for patient, clinic and insurer as `claim_seal.seal_claim` seals it,
    and a decision of each outcome, each opened by Python's `open_claim_*_validated` first."""
    patient_id = compute_patient_id(patient.public.sign_key)
    readers = [patient.public.enc_key, clinic.public.enc_key, insurer.public.enc_key]
    claim_id = digest(b"web-vectors/claim-id")
    encounter_id = digest(b"web-vectors/encounter-id")
    claim_text = (
        '{"resourceType":"Claim","status":"active","use":"claim","type":{"coding":[{"system":'
        '"http://terminology.hl7.org/CodeSystem/claim-type","code":"professional"}]},'
        '"patient":{"reference":"Patient/example"},"created":"2026-01-02",'
        '"provider":{"reference":"Organization/clinic"},"priority":{"coding":[{"code":"normal"}]},'
        '"insurance":[{"sequence":1,"focal":true,"coverage":{"reference":"Coverage/example"}}],'
        '"item":[{"sequence":1,"productOrService":{"text":"Consultation — suivi"},'
        '"net":{"value":120.0,"currency":"EUR"}}],"total":{"value":120.0,"currency":"EUR"}}'
    )
    ad = claim_seal.compute_claim_associated_data(
        patient_id, clinic.public.sign_key, insurer.public.sign_key, encounter_id, 2
    )
    claim = claims_types.ClaimState(
        claim_id=claim_id,
        patient_id=patient_id,
        clinic=clinic.public.sign_key,
        insurer=insurer.public.sign_key,
        encounter_id=encounter_id,
        version=2,
        record_ids=(encounter_id,),
        sealed_claim=_sealed_for(claim_text.encode(), readers, ad, "claim"),
        status=claims_types.OUTCOME_DENIED,
        decided_version=2,
        height=12,
        time_ms=TIME_MS,
    )
    for reader in (patient, clinic, insurer):
        assert claim_seal.open_claim_validated(claim, reader).plaintext == claim_text.encode()
    base = (
        '{"resourceType":"ClaimResponse","status":"active","type":{"coding":[{"system":'
        '"http://terminology.hl7.org/CodeSystem/claim-type","code":"professional"}]},"use":"claim",'
        '"patient":{"reference":"Patient/example"},"created":"2026-01-02",'
        '"insurer":{"reference":"Organization/insurer"},'
    )
    responses = {
        claims_types.OUTCOME_PENDED: base
        + '"outcome":"queued","processNote":[{"number":1,"text":"Envoyez le bilan HbA1c"}]}',
        claims_types.OUTCOME_DENIED: base + '"outcome":"error","error":[{"code":{"coding":[{"system":'
        '"http://terminology.hl7.org/CodeSystem/adjudication-error","code":"a001",'
        '"display":"Missing Identifier"}],"text":"Not covered by the policy"}}]}',
        claims_types.OUTCOME_APPROVED: base + '"outcome":"complete","disposition":"Settled in full"}',
    }
    decisions = []
    for version, (outcome, text) in enumerate(responses.items(), start=1):
        decision = claims_types.ClaimDecision(
            claim_id=claim_id,
            version=version,
            decision_id=digest(f"web-vectors/decision/{version}".encode()),
            insurer=insurer.public.sign_key,
            outcome=outcome,
            sealed_response=_sealed_for(
                text.encode(),
                readers,
                claim_seal.compute_response_associated_data(claim_id, version, insurer.public.sign_key),
                f"claim-response/{version}",
            ),
            height=12 + version,
            time_ms=TIME_MS + version,
        )
        assert claim_seal.open_claim_response_validated(decision, patient).plaintext == text.encode()
        decisions.append(
            {"decision": _struct_json(decision), "encoded": encode(decision).hex(), "text": text}
        )
    # A response whose outcome on the ledger disagrees with its content is refused when opened.
    wrong = dataclasses.replace(
        decision, outcome=claims_types.OUTCOME_DENIED, decision_id=digest(b"web-vectors/decision/wrong")
    )
    try:
        claim_seal.open_claim_response_validated(wrong, patient)
    except claim_seal.ClaimUnreadableError:
        pass
    else:
        raise AssertionError("a response disagreeing with its outcome opened")
    return {
        "claim": _struct_json(claim),
        "encoded": encode(claim).hex(),
        "text": claim_text,
        "decisions": decisions,
        "disagreeing": {"decision": _struct_json(wrong), "encoded": encode(wrong).hex()},
    }


def _invalid_encodings() -> list[dict[str, str]]:
    """Bytes the Python codec refuses (each checked here), with the schema they were offered as."""
    deny = {"inquiry_id": bytes(range(32))}
    good_tx = client.build_deny(
        _identity("patient"), bytes(32), chain_id=CHAIN_ID, nonce=5, timestamp_ms=TIME_MS
    )[0]
    tx_fields = {name: getattr(good_tx, name) for name in sorted(Tx.WIRE_FIELDS)}

    def packed(obj: Any) -> bytes:
        data: bytes = msgpack.packb(obj, use_bin_type=True)
        return data

    def with_field(**changes: Any) -> bytes:
        return packed({**tx_fields, **changes})

    canonical_tx = packed(tx_fields)
    nonce_key = packed("nonce")
    at = canonical_tx.index(nonce_key) + len(nonce_key)
    cases: list[tuple[str, str, bytes]] = [
        ("DenyBody", "an empty map", packed({})),
        (
            "Tx",
            "nonce in a 16-bit form where a fixint fits",
            canonical_tx[:at] + b"\xcd\x00\x05" + canonical_tx[at + 1 :],
        ),
        ("Tx", "nonce as a signed 8-bit integer", canonical_tx[:at] + b"\xd0\x05" + canonical_tx[at + 1 :]),
        ("Tx", "a negative nonce", with_field(nonce=-1)),
        ("Tx", "a float nonce", with_field(nonce=1.5)),
        ("Tx", "a boolean nonce", with_field(nonce=True)),
        ("Tx", "a nil nonce", with_field(nonce=None)),
        ("Tx", "a nonce as a string", with_field(nonce="5")),
        ("Tx", "sender as a string, not binary", with_field(sender="a" * 32)),
        ("Tx", "chain id as binary, not a string", with_field(chain_id=CHAIN_ID.encode())),
        ("Tx", "a 31-byte sender", with_field(sender=bytes(31))),
        ("Tx", "a 65-byte signature", with_field(signature=bytes(65))),
        ("Tx", "a chain id with a control character", with_field(chain_id="chain\n")),
        ("Tx", "a non-ASCII kind", with_field(kind="health.grant\u00e9")),
        ("Tx", "an empty kind", with_field(kind="")),
        ("Tx", "a 65-character chain id", with_field(chain_id="c" * 65)),
        ("Tx", "an unknown field", packed({**tx_fields, "zzz": 1})),
        ("Tx", "a missing field", packed({k: v for k, v in tx_fields.items() if k != "body"})),
        ("Tx", "fields out of order", packed(dict(reversed(list(tx_fields.items()))))),
        ("Tx", "trailing bytes", canonical_tx + b"\x00"),
        ("Tx", "truncated", canonical_tx[:-1]),
        ("Tx", "an array, not a map", packed(list(tx_fields.values()))),
        ("Tx", "an extension type", packed(msgpack.ExtType(1, b"x"))),
        (
            "Tx",
            "invalid UTF-8 in the chain id",
            canonical_tx.replace(packed(CHAIN_ID), b"\xb5" + b"\xff" * 21, 1),
        ),
        ("Tx", "a str8 header for a short string", canonical_tx.replace(packed("kind"), b"\xd9\x04kind", 1)),
        ("Tx", "a bin16 header for a 32-byte key", canonical_tx.replace(b"\xc4\x20", b"\xc5\x00\x20", 1)),
        ("Tx", "a map16 header for 7 fields", b"\xde\x00\x07" + canonical_tx[1:]),
        ("Tx", "an integer map key", packed({1: 2})),
        ("Tx", "an array claiming more items than bytes remain", b"\xdd\xff\xff\xff\xff"),
        ("DenyBody", "a 31-byte inquiry id", packed({"inquiry_id": bytes(31)})),
        (
            "DenyBody",
            "a duplicated field",
            b"\x82" + packed("inquiry_id") + packed(bytes(32)) + packed("inquiry_id") + packed(bytes(32)),
        ),
    ]
    deny_encoded = packed(deny)
    cases.append(
        ("DenyBody", "nested deeper than the schema", packed({"inquiry_id": [[[[[[[[[[bytes(32)]]]]]]]]]]}))
    )
    cases.append(
        ("DenyBody", "the canonical encoding followed by a second value", deny_encoded + deny_encoded)
    )
    schemas: dict[str, type[Any]] = {"Tx": Tx, "DenyBody": types.DenyBody}
    vectors = []
    for schema_name, why, data in cases:
        try:
            decode(schemas[schema_name], data, max_bytes=limits.TX_BYTES_MAX)
        except CodecError:
            pass
        else:
            raise AssertionError(f"the Python codec accepts an invalid vector: {why}")
        vectors.append({"schema": schema_name, "why": why, "encoded": data.hex()})
    return vectors


def _merkle_vectors() -> list[dict[str, Any]]:
    """Roots and every audit path of trees of 1 to 7 leaves, and proofs Python refuses."""
    out = []
    for n in range(1, 8):
        leaves = [digest(f"leaf/{n}/{i}".encode()) for i in range(n)]
        root = compute_merkle_root(leaves)
        proofs = []
        for index in range(n):
            proof = compute_merkle_proof(leaves, index)
            assert verify_merkle_proof(root, leaves[index], proof)
            proofs.append(
                {"index": index, "leaf_count": n, "path": [h.hex() for h in proof.path], "valid": True}
            )
        # Refused: another leaf, a shifted index, a count of another shape, a cut path.
        proof = compute_merkle_proof(leaves, n - 1)
        for index, count, path, leaf in (
            (proof.index, n, proof.path, digest(b"not a leaf")),
            ((proof.index + 1) % n, n, proof.path, leaves[n - 1]),
            (proof.index, n + 3, proof.path, leaves[n - 1]),
            (proof.index, n, proof.path[:-1], leaves[n - 1]),
        ):
            bad = MerkleProof(index, count, path)
            valid = verify_merkle_proof(root, leaf, bad)
            proofs.append(
                {
                    "index": index,
                    "leaf_count": count,
                    "path": [h.hex() for h in path],
                    "valid": valid,
                    "leaf": leaf.hex(),
                }
            )
        out.append({"leaves": [leaf.hex() for leaf in leaves], "root": root.hex(), "proofs": proofs})
    return out


def _light_client_vectors(txs: list[bytes]) -> dict[str, Any]:
    """A genesis of four validators and three certified blocks (the second hands over to a set of
    three), which the Python light client follows; then blocks it refuses, each with the check
    (`what`) that refuses it."""
    signers = [_identity(f"validator/{i}") for i in range(5)]
    by_key = {s.public.sign_key: s for s in signers}

    def validator_set(members: list[Identity]) -> ValidatorSet:
        return ValidatorSet.of(
            [Validator(f"v{i}", m.public.sign_key, m.public.enc_key) for i, m in enumerate(members)]
        )

    first, second = validator_set(signers[:4]), validator_set(signers[2:5])
    genesis = Genesis(CHAIN_ID, TIME_MS, first, b"")

    def make_block(
        height: int, parent: bytes, block_txs: list[bytes], current: ValidatorSet, after: ValidatorSet
    ) -> Block:
        header = Header(
            CHAIN_ID,
            height,
            0,
            parent,
            TIME_MS + 1000 * height,
            current.validators[0].sign_key,
            len(block_txs),
            compute_tx_root(block_txs),
            digest(f"state/{height}".encode()),
            current.hash(),
            after.hash(),
        )
        return Block(header, tuple(block_txs))

    def certify(block: Block, current: ValidatorSet, count: int) -> Commit:
        members = [by_key[v.sign_key] for v in current.validators][:count]
        return sign_commit(
            members, chain_id=CHAIN_ID, height=block.header.height, round_=0, block_hash=block.hash()
        )

    plan = [(txs[:3], first, first), ([], first, second), (txs[3:5], second, second)]
    blocks, head, parent = [], verify_genesis(genesis, genesis.hash()), genesis.hash()
    for height, (block_txs, current, after) in enumerate(plan, start=1):
        block = make_block(height, parent, block_txs, current, after)
        commit = certify(block, current, current.quorum)
        next_set = after if after is not current else None
        head, _ = verify_next_block(head, block, commit, next_set)
        blocks.append(
            {
                "block": encode(block).hex(),
                "commit": encode(commit).hex(),
                "next_validators": encode(next_set).hex() if next_set is not None else None,
            }
        )
        parent = block.hash()
    assert head.validators == second
    assert head.set_changes == 1

    # Refusals of block 1 on top of genesis (and one of block 3 on top of block 2).
    block1 = make_block(1, genesis.hash(), txs[:3], first, first)
    good = certify(block1, first, 3)
    outsider = sign_commit(
        [signers[0], signers[1], signers[4]], chain_id=CHAIN_ID, height=1, round_=0, block_hash=block1.hash()
    )
    forged_sigs = list(good.signatures)
    forged_sigs[1] = CommitSig(forged_sigs[1].validator, bytes(64))
    twice = Commit(1, 0, block1.hash(), (good.signatures[0], good.signatures[0], good.signatures[1]))
    dropped = Block(dataclasses.replace(block1.header, tx_count=2), block1.txs[:2])
    late = make_block(1, genesis.hash(), txs[:3], first, first)
    back_in_time = Block(dataclasses.replace(late.header, time_ms=TIME_MS - 1), late.txs)
    other_chain = Block(dataclasses.replace(block1.header, chain_id="another-chain"), block1.txs)
    wrong_parent = Block(dataclasses.replace(block1.header, parent_hash=digest(b"elsewhere")), block1.txs)
    wrong_set = Block(dataclasses.replace(block1.header, validators_hash=second.hash()), block1.txs)
    handover = Block(dataclasses.replace(block1.header, next_validators_hash=second.hash()), block1.txs)
    cases: list[tuple[str, Block, Commit, ValidatorSet | None]] = [
        ("below quorum (2 of 4)", block1, certify(block1, first, 2), None),
        ("a signer outside the set", block1, outsider, None),
        ("a forged precommit signature", block1, Commit(1, 0, block1.hash(), tuple(forged_sigs)), None),
        ("one validator counted twice", block1, twice, None),
        (
            "a commit for another block",
            block1,
            certify(make_block(1, genesis.hash(), txs[:2], first, first), first, 3),
            None,
        ),
        (
            "a tx dropped (header and commit made for it: the root does not match)",
            dropped,
            certify(dropped, first, 3),
            None,
        ),
        ("time before genesis", back_in_time, certify(back_in_time, first, 3), None),
        ("another chain", other_chain, certify(other_chain, first, 3), None),
        ("another parent", wrong_parent, certify(wrong_parent, first, 3), None),
        ("a validator set that does not govern it", wrong_set, certify(wrong_set, first, 3), None),
        ("a set change without the new set", handover, certify(handover, first, 3), None),
        ("a set change with another set", handover, certify(handover, first, 3), validator_set(signers[1:4])),
    ]
    refusals = []
    start = verify_genesis(genesis, genesis.hash())
    for why, block, commit, next_set in cases:
        try:
            verify_next_block(start, block, commit, next_set)
        except LightClientError as exc:
            what = exc.what
        else:
            raise AssertionError(f"the Python light client accepts a block it must refuse: {why}")
        refusals.append(
            {
                "why": why,
                "block": encode(block).hex(),
                "commit": encode(commit).hex(),
                "next_validators": encode(next_set).hex() if next_set is not None else None,
                "what": what,
            }
        )
    proof = compute_merkle_proof([compute_tx_id(t) for t in txs[:3]], 1)
    assert verify_tx_inclusion(make_block(1, genesis.hash(), txs[:3], first, first).header, txs[1], proof)
    # A genesis that sets a network policy (its research k; health/app.py): the page reads it too.
    clinic = signers[0].public
    with_policy = Genesis(
        CHAIN_ID,
        TIME_MS,
        first,
        encode_genesis(
            types.HealthGenesis((types.Institution("Clinic", "clinic", clinic.sign_key, clinic.enc_key),)),
            research_k_min=20,
        ),
    )
    # A version-2 genesis (docs/adr/0023): block caps and leader skipping set by the network.
    with_params = dataclasses.replace(
        with_policy,
        params=ConsensusParams(block_txs_max=5_000, block_bytes_max=16 * 1024 * 1024, leader_window=12),
    )
    return {
        "inclusion": {"block": 0, "tx_index": 1, "path": [h.hex() for h in proof.path]},
        "genesis": encode_chain_genesis(genesis).hex(),
        "genesis_hash": genesis.hash().hex(),
        "genesis_with_policy": encode_chain_genesis(with_policy).hex(),
        "genesis_with_policy_hash": with_policy.hash().hex(),
        "genesis_v2": encode_chain_genesis(with_params).hex(),
        "genesis_v2_hash": with_params.hash().hex(),
        "blocks": blocks,
        "final_validators_hash": second.hash().hex(),
        "refusals": refusals,
    }


def compute_vectors() -> dict[str, Any]:
    patient, representative, hospital, clinic, insurer = (
        _identity(n) for n in ("patient", "representative", "hospital", "clinic", "insurer")
    )
    identities = {
        "patient": patient,
        "representative": representative,
        "hospital": hospital,
        "clinic": clinic,
        "insurer": insurer,
    }
    patient_id = compute_patient_id(patient.public.sign_key)
    inquiry_id = digest(b"web-vectors/inquiry-id")
    grant_id = digest(b"web-vectors/grant-id")
    record_vector, record = _record(patient, clinic, hospital)
    record_keys = [
        RecordKey(record.record_id, bytes.fromhex(record_vector["grantee_sealed_key"])),
        RecordKey(
            digest(b"web-vectors/record-id/0"),
            seal_deterministic(bytes(32), hospital.public.enc_key, "grant/1"),
        ),
    ]

    def common(n: int) -> dict[str, Any]:
        return {"chain_id": CHAIN_ID, "nonce": n, "timestamp_ms": TIME_MS + n}

    txs = [
        _tx_vector("register_patient", "patient", {}, client.build_register_patient(patient, **common(1))),
        _tx_vector(
            "register_patient with the largest nonce",
            "patient",
            {},
            client.build_register_patient(patient, chain_id=CHAIN_ID, nonce=2**64 - 1, timestamp_ms=0),
        ),
        _tx_vector(
            "add_representative",
            "patient",
            {"patient_id": patient_id.hex(), "representative": representative.public.sign_key.hex()},
            client.build_add_representative(patient, patient_id, representative.public.sign_key, **common(2)),
        ),
        _tx_vector(
            "remove_representative",
            "patient",
            {"patient_id": patient_id.hex(), "representative": representative.public.sign_key.hex()},
            client.build_remove_representative(
                patient, patient_id, representative.public.sign_key, **common(3)
            ),
        ),
        _tx_vector(
            "grant",
            "patient",
            {
                "inquiry_id": inquiry_id.hex(),
                # Given out of order: the builder sorts by record id.
                "record_keys": [
                    {"record_id": rk.record_id.hex(), "sealed_key": rk.sealed_key.hex()}
                    for rk in sorted(record_keys, key=lambda rk: rk.record_id, reverse=True)
                ],
            },
            client.build_grant(patient, inquiry_id, record_keys, **common(4)),
        ),
        _tx_vector(
            "grant of no records",
            "representative",
            {"inquiry_id": inquiry_id.hex(), "record_keys": []},
            client.build_grant(representative, inquiry_id, [], **common(5)),
        ),
        _tx_vector(
            "grant_narrowed to Observations, a shorter window and an earlier expiry",
            "patient",
            {
                "inquiry_id": inquiry_id.hex(),
                "record_keys": [
                    {"record_id": rk.record_id.hex(), "sealed_key": rk.sealed_key.hex()} for rk in record_keys
                ],
                "terms": _terms_args(NARROWED_TERMS),
            },
            client.build_grant(patient, inquiry_id, record_keys, terms=NARROWED_TERMS, **common(30)),
        ),
        _tx_vector(
            "grant_manifest_narrowed of the same records",
            "patient",
            {
                "inquiry_id": inquiry_id.hex(),
                "record_ids": [rk.record_id.hex() for rk in record_keys],
                "terms": _terms_args(NARROWED_TERMS),
            },
            client.build_grant_manifest(
                patient,
                client.compute_grant_manifest(inquiry_id, record_keys),
                terms=NARROWED_TERMS,
                **common(31),
            ),
        ),
        _tx_vector(
            "deny",
            "patient",
            {"inquiry_id": inquiry_id.hex()},
            client.build_deny(patient, inquiry_id, **common(6)),
        ),
        _tx_vector(
            "request_records",
            "patient",
            {
                "patient_id": patient_id.hex(),
                "institution": clinic.public.sign_key.hex(),
                # Given unsorted and repeated: the builder sorts and drops duplicates.
                "record_types": ["Observation", "Immunization", "Observation"],
                "from_ms": "1000",
                "to_ms": str(TIME_MS),
            },
            build_request_records(
                patient,
                patient_id,
                clinic.public.sign_key,
                record_types=("Observation", "Immunization", "Observation"),
                from_ms=1000,
                to_ms=TIME_MS,
                **common(8),
            ),
        ),
        _tx_vector(
            "grant_consent",
            "patient",
            {
                "patient_id": patient_id.hex(),
                "grantee": insurer.public.sign_key.hex(),
                # Given unsorted and repeated: the builder sorts and drops duplicates.
                "record_types": ["Observation", "Encounter", "Observation"],
                "authors": [clinic.public.sign_key.hex(), hospital.public.sign_key.hex()][::-1],
                "labels": ["PSY", "HIV"],
                "from_ms": "0",
                "to_ms": str(2**64 - 1),
                "expires_ms": str(TIME_MS + 30 * 24 * 3600 * 1000),
            },
            claims_client.build_grant_consent(
                patient,
                claims_client.make_consent(
                    patient_id,
                    insurer.public.sign_key,
                    record_types=("Observation", "Encounter", "Observation"),
                    authors=(hospital.public.sign_key, clinic.public.sign_key),
                    labels=("PSY", "HIV"),
                    expires_ms=TIME_MS + 30 * 24 * 3600 * 1000,
                ),
                **common(11),
            ),
        ),
        _tx_vector(
            "consent_manifest",
            "patient",
            # Given out of order: the manifest declares the records sorted by id.
            {"grant_id": grant_id.hex(), "record_ids": [rk.record_id.hex() for rk in record_keys][::-1]},
            claims_client.build_consent_in_parts(
                patient, grant_id, sorted(record_keys, key=lambda rk: rk.record_id), **common(12)
            )[0],
        ),
        _tx_vector(
            "revoke",
            "representative",
            {"grant_id": grant_id.hex()},
            client.build_revoke(representative, grant_id, **common(7)),
        ),
        *_grant_in_parts_vectors(patient, hospital, inquiry_id, common(9), common(10)),
        _tx_vector(
            "join_study",
            "patient",
            {"study_id": STUDY_ID.hex(), "patient_id": patient_id.hex()},
            research_client.build_join_study(patient, STUDY_ID, patient_id, **common(40)),
        ),
        _tx_vector(
            "leave_study",
            "representative",
            {"study_id": STUDY_ID.hex(), "patient_id": patient_id.hex()},
            research_client.build_leave_study(representative, STUDY_ID, patient_id, **common(41)),
        ),
    ]
    signatures = []
    for i, message in enumerate((b"", b"medledger", bytes(range(256)) * 4)):
        signer = (patient, hospital, representative)[i]
        signatures.append(
            {
                "signer": ("patient", "hospital", "representative")[i],
                "message": message.hex(),
                "signature": signer.sign(message).hex(),
            }
        )
    sealed_boxes = []
    for i, message in enumerate((bytes(32), b"a sealed box for the patient", b"")):
        sealed = seal_deterministic(message, patient.public.enc_key, f"box/{i}")
        assert nacl.public.SealedBox(patient.private_key).decrypt(sealed) == message
        sealed_boxes.append({"reader": "patient", "message": message.hex(), "sealed": sealed.hex()})
    first_box = bytes.fromhex(sealed_boxes[0]["sealed"])
    assert open_content_key(first_box, patient) == bytes(32)  # the crypto layer's own opening
    aead = []
    for i, (plaintext, associated_data) in enumerate(
        ((b"", b""), (b"record content", b"medledger/health/record/v2\x00"), (bytes(1000), bytes(77)))
    ):
        key = _fixed(f"aead/key/{i}", 32)
        nonce = _fixed(f"aead/nonce/{i}", 24)
        ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, associated_data, nonce, key
        )
        aead.append(
            {
                "key": key.hex(),
                "nonce": nonce.hex(),
                "associated_data": associated_data.hex(),
                "plaintext": plaintext.hex(),
                "ciphertext": ciphertext.hex(),
            }
        )
    key_files = []
    for name, passphrase, ops, mem in (
        (
            "patient",
            "correct horse battery staple",
            nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
            nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
        ),
        ("representative", "mot de passe très sûr ✓", keyfile.KDF_OPSLIMIT_MIN, keyfile.KDF_MEMLIMIT_MIN),
    ):
        data = encode_identity(
            identities[name],
            passphrase.encode(),
            opslimit=ops,
            memlimit=mem,
            salt=_fixed(f"keyfile/{name}/salt", keyfile.SALT_SIZE),
            nonce=_fixed(f"keyfile/{name}/nonce", keyfile.NONCE_SIZE),
        )
        assert decode_identity(data, passphrase.encode()).secrets() == identities[name].secrets()
        key_files.append({"identity": name, "passphrase": passphrase, "file": data.decode("ascii")})
    scope = client.make_scope(
        record_ids=(digest(b"b"), digest(b"a")), record_types=("Immunization",), from_ms=1, to_ms=2**64 - 1
    )
    encodings = [
        _encoding_vector("a scope", scope),
        _encoding_vector("an empty scope", client.make_scope()),
        _encoding_vector(
            "a patient",
            PatientState(
                patient_id,
                patient.public.sign_key,
                patient.public.enc_key,
                (representative.public.sign_key,),
                3,
                TIME_MS,
            ),
        ),
        _encoding_vector(
            "an audit event",
            AuditEvent(
                types.EVENT_READ,
                grant_id,
                hospital.public.sign_key,
                grant_id,
                (record.record_id,),
                12,
                TIME_MS,
            ),
        ),
        _encoding_vector(
            "a grant",
            GrantState(
                grant_id,
                inquiry_id,
                patient_id,
                hospital.public.sign_key,
                hospital.public.enc_key,
                patient.public.sign_key,
                scope,
                types.PURPOSE_TREAT,
                TIME_MS + 1000,
                tuple(sorted(record_keys, key=lambda rk: rk.record_id)),
                0,
                0,
                10,
                TIME_MS,
            ),
        ),
        _encoding_vector(
            "an institution with a non-ASCII name",
            types.Institution(
                "Hôpital Saint-Louis", types.ROLE_HOSPITAL, hospital.public.sign_key, hospital.public.enc_key
            ),
        ),
        _encoding_vector("a record", record),
        # Past the short forms: 16-bit array headers, and a 256-byte name in a str16.
        _encoding_vector(
            "a scope of 20 types and 17 records",
            client.make_scope(
                record_types=sorted(types.RECORD_TYPES)[:20],
                record_ids=[digest(f"id/{i}".encode()) for i in range(17)],
            ),
        ),
        _encoding_vector(
            "an institution whose name is 256 bytes of UTF-8",
            types.Institution(
                "\U0001d11e" * 64, types.ROLE_CLINIC, clinic.public.sign_key, clinic.public.enc_key
            ),
        ),
    ]
    return {
        "generated_by": "scripts/make_web_vectors.py (do not edit: run it again)",
        "chain_id": CHAIN_ID,
        "identities": {name: _identity_json(name, identity) for name, identity in identities.items()},
        "encodings": encodings,
        "invalid_encodings": _invalid_encodings(),
        "txs": txs,
        "signatures": signatures,
        "sealed_boxes": sealed_boxes,
        "aead": aead,
        "records": [record_vector],
        "reasons": [_inquiry(patient, hospital, "Suivi après la consultation de mars — 続き")],
        "key_files": key_files,
        "merkle": _merkle_vectors(),
        "light_client": _light_client_vectors([bytes.fromhex(t["tx"]) for t in txs]),
        "request_auth": _request_auth_vectors(patient, representative, patient_id),
        "attachments": [_attachment_vector(record, patient, bytes.fromhex(record_vector["record_key"]))],
        "claims": _claim_vectors(patient, clinic, insurer),
        "research": _research_vectors(clinic, hospital),
    }


#: The study the research vectors name (a tx id as the ledger would give it).
STUDY_ID: Final = digest(b"web-vectors/study-id")


def _research_vectors(clinic: Identity, hospital: Identity) -> dict[str, Any]:
    """A study's registration and two queries as signed, with each query's digest (what makes two
    queries the same query, `research.compute_query_digest`) and charge."""
    study = research_types.RegisterStudyBody(
        title="Diabète et âge : une cohorte fédérée",
        ethics_ref="IRB-2026-0113",
        templates=(
            research_types.QueryTemplate(
                "by-age",
                research_types.TEMPLATE_HISTOGRAM,
                ("sct:44054006",),
                ("age_band", "sex"),
                0,
                0,
                1_000_000,
                0,
            ),
            research_types.QueryTemplate(
                "hba1c", research_types.TEMPLATE_MEAN, ("loinc:4548-4",), (), 3_000, 15_000, 500_000, 1_000
            ),
        ),
        epsilon_total_micro=4_000_000,
        delta_total_pico=10_000,
        k_min=11,
        expires_ms=TIME_MS + 30 * 24 * 3600 * 1000,
    )
    institutions = tuple(sorted((clinic.public.sign_key, hospital.public.sign_key)))
    queries = [
        research_types.SubmitQueryBody(
            STUDY_ID,
            "by-age",
            research_types.QueryParams("sct:44054006", "age_band", 0, 0),
            institutions,
            1_000_000,
            0,
            7,
        ),
        research_types.SubmitQueryBody(
            STUDY_ID,
            "hba1c",
            research_types.QueryParams("loinc:4548-4", "none", 5_000, 9_500),
            institutions[:1],
            250_000,
            500,
            9,
        ),
    ]
    return {
        "study": encode(study).hex(),
        "queries": [
            {
                "body": encode(query).hex(),
                "digest": research.compute_query_digest(query).hex(),
                "charge": [str(c) for c in research.compute_query_charge(query)],
            }
            for query in queries
        ],
    }


def _grant_in_parts_vectors(
    patient: Identity, hospital: Identity, inquiry_id: bytes, first: dict[str, Any], second: dict[str, Any]
) -> list[dict[str, Any]]:
    """A grant of 260 records in parts (ADR 0012): its manifest (part digests over the record ids,
    given unsorted) and its second part (the 4 records after the first 256)."""
    keys = [
        RecordKey(
            digest(f"web-vectors/part-record/{i}".encode()),
            seal_deterministic(bytes(32), hospital.public.enc_key, f"part/{i}"),
        )
        for i in range(260)
    ]
    manifest = client.build_grant_manifest(patient, client.compute_grant_manifest(inquiry_id, keys), **first)
    ordered = sorted(keys, key=lambda rk: rk.record_id)
    part = client.build_grant_part(patient, manifest[2], 1, ordered[types.GRANT_PART_RECORDS_MAX :], **second)
    return [
        _tx_vector(
            "grant_manifest of 260 records",
            "patient",
            {"inquiry_id": inquiry_id.hex(), "record_ids": [rk.record_id.hex() for rk in reversed(keys)]},
            manifest,
        ),
        _tx_vector(
            "grant_part 1 of that grant",
            "patient",
            {
                "grant_id": bytes(manifest[2]).hex(),
                "part": 1,
                "record_keys": [
                    {"record_id": rk.record_id.hex(), "sealed_key": rk.sealed_key.hex()}
                    for rk in ordered[types.GRANT_PART_RECORDS_MAX :]
                ],
            },
            part,
        ),
    ]


def _attachment_vector(record: RecordState, patient: Identity, record_key: bytes) -> dict[str, Any]:
    """An attachment of `record` (health/blobs.py): its blob key sealed under the record key and
    bound to the blob and the record, its chunks encrypted as a node stores them, its manifest
    (small chunks here: the format does not depend on their size), checked and opened by Python
    first."""
    plaintext = "Discharge letter — synthetic, in three chunks.\n".encode() * 3
    chunk_bytes = 64
    blob_key = _fixed("blob/key", crypto_envelope.CONTENT_KEY_SIZE)
    pieces = [plaintext[i : i + chunk_bytes] for i in range(0, len(plaintext), chunk_bytes)]
    chunks = [
        health_blobs.encrypt_chunk(blob_key, i, piece, last=i == len(pieces) - 1)
        for i, piece in enumerate(pieces)
    ]
    # The manifest describes what the node stores: the ciphertext chunks.
    manifest = blobstore.BlobManifest(
        sum(len(c) for c in chunks), len(chunks[0]), tuple(blobstore.compute_chunk_hash(c) for c in chunks)
    )
    blob_id = blobstore.compute_blob_id(manifest)
    binding = records.compute_binding_of(record)
    # As `seal_blob_key` seals it, from a fixed nonce (it draws one at random).
    key_nonce = _fixed("blob/key-nonce", crypto_envelope.NONCE_SIZE)
    sealed_key = key_nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        blob_key, health_blobs.BLOB_KEY_AD_DOMAIN + blob_id + binding, key_nonce, record_key
    )
    ref = types.BlobRef(blob_id, len(plaintext), sealed_key)
    opened = b"".join(
        health_blobs.decrypt_chunks(health_blobs.open_blob_key(record_key, ref, binding), chunks, len(chunks))
    )
    assert opened == plaintext
    assert blobstore.decode_manifest(encode(manifest), blob_id) == manifest
    for i, chunk in enumerate(chunks):  # as the SDK checks what a node serves
        assert len(chunk) == manifest.get_chunk_length(i)
        assert blobstore.compute_chunk_hash(chunk) == manifest.chunk_hashes[i]
    assert health_blobs.open_attachment(record, ref, patient, chunks) == plaintext
    return {
        "record_key": record_key.hex(),
        "binding": binding.hex(),
        "ref": _struct_json(ref),
        "manifest": encode(manifest).hex(),
        "chunks": [c.hex() for c in chunks],
        "plaintext": plaintext.decode(),
    }


def _request_auth_vectors(
    patient: Identity, representative: Identity, patient_id: bytes
) -> list[dict[str, Any]]:
    """Patients' signed reads (health/auth.py): the signing input and the `Authorization` value."""
    vectors = []
    cases = [
        ("patient", patient, "GET", "/v1/health/patients/" + patient_id.hex() + "/records?start=0&limit=100"),
        ("representative", representative, "GET", "/v1/events/stream?after=0&heartbeat_s=5"),
        # A target past 255 bytes: the signing input's str16.
        ("patient", patient, "GET", "/v1/proofs/blocks?from=1&limit=100&" + "x" * 300),
    ]
    for i, (signer, identity, method, target) in enumerate(cases):
        challenge = digest(f"web-vectors/challenge/{i}".encode())
        time_ms = TIME_MS + i
        signing_input = compute_request_signing_input(
            chain_id=CHAIN_ID,
            challenge=challenge,
            method=method,
            target=target,
            time_ms=time_ms,
            key=identity.public.sign_key,
            patient_id=patient_id,
        )
        header = build_authorization(
            identity,
            chain_id=CHAIN_ID,
            challenge=challenge,
            method=method,
            target=target,
            time_ms=time_ms,
            patient_id=patient_id,
        )
        vectors.append(
            {
                "signer": signer,
                "method": method,
                "target": target,
                "challenge": challenge.hex(),
                "time_ms": time_ms,
                "patient_id": patient_id.hex(),
                "signing_input": signing_input.hex(),
                "authorization": header,
            }
        )
    return vectors


def compute_vectors_json() -> str:
    return json.dumps(compute_vectors(), indent=1, ensure_ascii=False) + "\n"


def _outputs() -> Iterable[tuple[Path, str]]:
    yield WIRE_TS, compute_wire_ts()
    yield VECTORS, compute_vectors_json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file is not current")
    args = parser.parse_args(argv)
    stale = []
    for path, content in _outputs():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            continue
        if args.check:
            stale.append(path.relative_to(ROOT))
        else:
            path.write_text(content, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)} ({len(content.encode())} bytes)")
    if stale:
        print(f"not current: {', '.join(map(str, stale))}; run scripts/make_web_vectors.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
