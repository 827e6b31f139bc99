"""Client-side crypto of claims (issue 12): seal and open a FHIR Claim and its ClaimResponse.

A claim version's FHIR R4 `Claim` is validated, padded to a multiple of `CLAIM_PAD_BYTES` (so its
ciphertext leaks its size only coarsely) and sealed for exactly the patient, the clinic and the
insurer; its associated data binds it to the claim's patient, clinic, insurer, encounter and
version, so a Claim copied into another claim (or version) does not open. A decision's FHIR R4
`ClaimResponse` is sealed the same way for the same three, bound to the claim id, the version and
the insurer.

The outcome in the clear (`approved` / `denied` / `pended`) must agree with the ClaimResponse
(`validate_claim_response`): approved is `outcome: complete` with no error; denied is
`outcome: error` with at least one `error.code` (the reason code); pended is `outcome: queued` or
`partial` with at least one `processNote` saying what is missing. The rules cannot check this (the
response is sealed); the insurer's node checks before it signs, the clinic's and patient's clients
when they open it.

These functions run on clients, never inside the rules: they draw randomness and decrypt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import nacl.bindings
import nacl.exceptions

from medledger.crypto import DecryptionError, Identity, open_envelope, seal_envelope
from medledger.health.claims_types import (
    OUTCOME_APPROVED,
    OUTCOME_DENIED,
    OUTCOME_PENDED,
    ClaimDecision,
    ClaimState,
)
from medledger.health.errors import HealthError, InvalidRecordError
from medledger.health.fhir import ValidatedRecord, validate_resource
from medledger.health.types import EnvelopeWire

CLAIM_AD_DOMAIN: Final = b"medledger/health/claim/v1\x00"
CLAIM_RESPONSE_AD_DOMAIN: Final = b"medledger/health/claim-response/v1\x00"
#: Claims and responses are padded to a multiple of this many bytes before encryption.
CLAIM_PAD_BYTES: Final = 1024


class ClaimUnreadableError(HealthError):
    """A sealed Claim or ClaimResponse does not open for this key, or is not what it says."""

    code = "claim_unreadable"


def compute_claim_associated_data(
    patient_id: bytes, clinic: bytes, insurer: bytes, encounter_id: bytes, version: int
) -> bytes:
    return CLAIM_AD_DOMAIN + patient_id + clinic + insurer + encounter_id + bytes([version])


def compute_response_associated_data(claim_id: bytes, version: int, insurer: bytes) -> bytes:
    return CLAIM_RESPONSE_AD_DOMAIN + claim_id + bytes([version]) + insurer


def validate_claim(claim: bytes | str | Mapping[str, Any]) -> ValidatedRecord:
    """A FHIR R4 `Claim` (`InvalidRecordError` naming paths, never values)."""
    return validate_resource(claim, "Claim")


def validate_claim_response(response: bytes | str | Mapping[str, Any], outcome: str) -> ValidatedRecord:
    """A FHIR R4 `ClaimResponse` whose content agrees with `outcome` (see the module docstring)."""
    validated = validate_resource(response, "ClaimResponse")
    resource = validated.resource
    fhir_outcome = resource.get("outcome")
    errors = resource.get("error") or []
    notes = resource.get("processNote") or []
    if outcome == OUTCOME_APPROVED:
        ok = fhir_outcome == "complete" and not errors
    elif outcome == OUTCOME_DENIED:
        ok = fhir_outcome == "error" and bool(errors)
    elif outcome == OUTCOME_PENDED:
        ok = fhir_outcome in ("queued", "partial") and bool(notes)
    else:
        raise InvalidRecordError("the outcome is not one of approved, denied, pended", paths=("outcome",))
    if not ok:
        raise InvalidRecordError(
            f"ClaimResponse.outcome does not agree with the outcome {outcome!r} (docs/health.md, Claims)",
            paths=("ClaimResponse.outcome",),
        )
    return validated


def _pad(plaintext: bytes) -> bytes:
    return nacl.bindings.sodium_pad(plaintext, CLAIM_PAD_BYTES)


def _unpad(padded: bytes, what: str) -> bytes:
    try:
        return nacl.bindings.sodium_unpad(padded, CLAIM_PAD_BYTES)
    except (nacl.exceptions.CryptoError, ValueError):
        raise ClaimUnreadableError(f"{what} is not padded as a claim") from None


def seal_claim(
    claim: ValidatedRecord,
    readers: Sequence[bytes],
    *,
    patient_id: bytes,
    clinic: bytes,
    insurer: bytes,
    encounter_id: bytes,
    version: int,
) -> EnvelopeWire:
    """Seal a validated Claim for `readers` (the patient's, clinic's and insurer's x25519 keys)."""
    envelope = seal_envelope(
        _pad(claim.plaintext),
        readers,
        associated_data=compute_claim_associated_data(patient_id, clinic, insurer, encounter_id, version),
    )
    return EnvelopeWire.from_envelope(envelope)


def seal_claim_response(
    response: ValidatedRecord, readers: Sequence[bytes], *, claim_id: bytes, version: int, insurer: bytes
) -> EnvelopeWire:
    envelope = seal_envelope(
        _pad(response.plaintext),
        readers,
        associated_data=compute_response_associated_data(claim_id, version, insurer),
    )
    return EnvelopeWire.from_envelope(envelope)


def open_claim_validated(claim: ClaimState, identity: Identity) -> ValidatedRecord:
    """The current version's Claim as `identity` (patient, clinic or insurer) reads it: its parsed
    resource and, as `plaintext`, its JSON text exactly as the clinic submitted it (ADR 0011)."""
    what = f"the claim {claim.claim_id.hex()} (version {claim.version})"
    ad = compute_claim_associated_data(
        claim.patient_id, claim.clinic, claim.insurer, claim.encounter_id, claim.version
    )
    try:
        padded = open_envelope(claim.sealed_claim.to_envelope(), identity, associated_data=ad)
    except DecryptionError as exc:
        raise ClaimUnreadableError(f"{what} does not open for this key: {exc.message}") from None
    try:
        return validate_claim(_unpad(padded, what))
    except InvalidRecordError:
        raise ClaimUnreadableError(f"{what} is not a valid FHIR Claim") from None


def open_claim(claim: ClaimState, identity: Identity) -> dict[str, Any]:
    """The current version's Claim, parsed (`open_claim_validated` has its submitted text)."""
    return open_claim_validated(claim, identity).resource


def open_claim_response_validated(decision: ClaimDecision, identity: Identity) -> ValidatedRecord:
    """A decision's ClaimResponse, checked against its outcome on the ledger: parsed, and as
    `plaintext` its JSON text exactly as the insurer submitted it."""
    what = f"the decision on claim {decision.claim_id.hex()} (version {decision.version})"
    ad = compute_response_associated_data(decision.claim_id, decision.version, decision.insurer)
    try:
        padded = open_envelope(decision.sealed_response.to_envelope(), identity, associated_data=ad)
    except DecryptionError as exc:
        raise ClaimUnreadableError(f"{what} does not open for this key: {exc.message}") from None
    try:
        return validate_claim_response(_unpad(padded, what), decision.outcome)
    except InvalidRecordError:
        raise ClaimUnreadableError(f"{what} is not a ClaimResponse agreeing with its outcome") from None


def open_claim_response(decision: ClaimDecision, identity: Identity) -> dict[str, Any]:
    """A decision's ClaimResponse, parsed (`open_claim_response_validated` has its text)."""
    return open_claim_response_validated(decision, identity).resource
