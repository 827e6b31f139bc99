"""Patients' signed API requests: the wire format both the patient's client and the node use.

A patient reads their own data from a node by proving, on each request, that they hold their
ed25519 key (DESIGN.md §7 "Read access is authenticated"). The node hands out a random, single-use,
short-lived challenge (`POST /v1/auth/challenge`); the client signs the challenge together with
the chain id, the request's method, its exact path and query, the client's time, its key and the
patient it acts for, and sends the signature in the `Authorization` header:

    Authorization: Medledger-Signature key=<hex>, patient=<hex>, challenge=<hex>, time=<ms>, signature=<hex>

Replaying such a request is useless: the node consumes the challenge on first use, forgets it
after `CHALLENGE_TTL_MS`, and the signature covers the method and path, so it cannot be moved to
another route either. The signing input is canonical msgpack behind a domain tag, so it can never
be confused with a transaction, a vote or a grant signed by the same key.

This module owns the format only (building, parsing, the signing input); the node's checks (the
challenge store, who may read what) live in `medledger.node.auth`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final

from medledger.chain.codec import encode_primitive
from medledger.crypto import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, verify_signature
from medledger.health.errors import HealthError

#: The `Authorization` scheme of a patient's signed request.
SIGNATURE_SCHEME: Final = "Medledger-Signature"
#: Domain tag of the signing input (versioned: a new format gets a new tag).
REQUEST_SIGNING_DOMAIN: Final = "medledger/api-request/v1"
#: Random bytes of a challenge.
CHALLENGE_SIZE: Final = 32
#: How long a challenge may be used after the node issued it.
CHALLENGE_TTL_MS: Final = 30_000
#: How far the client's signed time may be from the node's clock (either way).
REQUEST_TIME_SKEW_MS_MAX: Final = 60_000
#: Longest `Authorization` header the node parses (the real one is about 400 characters).
AUTHORIZATION_CHARS_MAX: Final = 1024
#: Longest method + path + query a signature covers (aiohttp refuses longer request lines anyway).
SIGNED_TARGET_CHARS_MAX: Final = 8190
#: Largest time value in a header (milliseconds since the epoch; 19 digits fit an int64).
TIME_DIGITS_MAX: Final = 19

_PARAMS: Final = ("key", "patient", "challenge", "time", "signature")
_PARAM_RE: Final = re.compile(r"\s*([a-z]+)=([0-9a-f]+)\s*")


class RequestAuthError(HealthError):
    """An `Authorization: Medledger-Signature ...` header that is malformed (not one that fails)."""

    code = "request_auth_malformed"


@dataclasses.dataclass(frozen=True, slots=True)
class SignedRequest:
    """The parsed parameters of a patient's signed request."""

    #: The signer's ed25519 key: the patient's own or a representative's.
    key: bytes
    #: The patient the signer acts for.
    patient_id: bytes
    challenge: bytes
    time_ms: int
    signature: bytes


def compute_request_signing_input(
    *,
    chain_id: str,
    challenge: bytes,
    method: str,
    target: str,
    time_ms: int,
    key: bytes,
    patient_id: bytes,
) -> bytes:
    """The bytes a patient signs for one request; `target` is the path with its query string."""
    return encode_primitive(
        [REQUEST_SIGNING_DOMAIN, chain_id, challenge, method.upper(), target, time_ms, key, patient_id]
    )


def build_authorization(
    identity: Identity,
    *,
    chain_id: str,
    challenge: bytes,
    method: str,
    target: str,
    time_ms: int,
    patient_id: bytes,
) -> str:
    """The `Authorization` header value of a request signed with `identity`."""
    key = identity.public.sign_key
    signature = identity.sign(
        compute_request_signing_input(
            chain_id=chain_id,
            challenge=challenge,
            method=method,
            target=target,
            time_ms=time_ms,
            key=key,
            patient_id=patient_id,
        )
    )
    return (
        f"{SIGNATURE_SCHEME} key={key.hex()}, patient={patient_id.hex()}, challenge={challenge.hex()}, "
        f"time={time_ms}, signature={signature.hex()}"
    )


def parse_authorization(credentials: str) -> SignedRequest:
    """The parameters after the scheme name; raises `RequestAuthError` naming what is wrong."""
    if len(credentials) > AUTHORIZATION_CHARS_MAX:
        raise RequestAuthError(f"the Authorization header exceeds {AUTHORIZATION_CHARS_MAX} characters")
    values: dict[str, str] = {}
    for part in credentials.split(","):
        match = _PARAM_RE.fullmatch(part)
        if match is None:
            raise RequestAuthError("each parameter must be name=lowercase-hex-or-digits, comma-separated")
        name, value = match.groups()
        if name not in _PARAMS or name in values:
            raise RequestAuthError(f"unknown or repeated parameter {name[:16]!r}")
        values[name] = value
    missing = [name for name in _PARAMS if name not in values]
    if missing:
        raise RequestAuthError(f"missing parameter(s): {', '.join(missing)}")
    sizes = {"key": PUBLIC_KEY_SIZE, "patient": 32, "challenge": CHALLENGE_SIZE, "signature": SIGNATURE_SIZE}
    for name, size in sizes.items():
        if len(values[name]) != 2 * size:
            raise RequestAuthError(f"{name} must be {2 * size} hex characters")
    if not values["time"].isascii() or not values["time"].isdigit() or len(values["time"]) > TIME_DIGITS_MAX:
        raise RequestAuthError("time must be milliseconds since the epoch (decimal digits)")
    return SignedRequest(
        key=bytes.fromhex(values["key"]),
        patient_id=bytes.fromhex(values["patient"]),
        challenge=bytes.fromhex(values["challenge"]),
        time_ms=int(values["time"]),
        signature=bytes.fromhex(values["signature"]),
    )


def is_request_signature_valid(signed: SignedRequest, *, chain_id: str, method: str, target: str) -> bool:
    """Whether `signed.signature` is `signed.key`'s signature over this request."""
    message = compute_request_signing_input(
        chain_id=chain_id,
        challenge=signed.challenge,
        method=method,
        target=target,
        time_ms=signed.time_ms,
        key=signed.key,
        patient_id=signed.patient_id,
    )
    return verify_signature(signed.key, message, signed.signature)
