"""The web app's codec and crypto against Python's (docs/adr/0018-web-app-foundation.md).

Three checks keep the two sides identical: the committed vectors and generated schemas are what
`scripts/make_web_vectors.py` writes from the Python code today; the JS unit tests (node's test
runner, `npm test` in web/) check every vector; and what the TypeScript code makes with the
vector keys (signed txs, sealed boxes, ciphertexts, a key file) is read back here by Python's own
codec, signature check, PyNaCl and key-file loader.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import nacl.bindings
import nacl.public
import pytest

from medledger.chain import types as chain_types
from medledger.chain.codec import decode
from medledger.chain.errors import CodecError
from medledger.chain.limits import TX_BODY_BYTES_MAX, TX_BYTES_MAX
from medledger.chain.types import Tx, compute_tx_id
from medledger.crypto import Identity, decode_identity, decode_public_identity, verify_signature
from medledger.health import records
from medledger.health import types as health_types
from medledger.health.rights_types import RIGHTS_BODY_TYPES, RequestRecordsBody
from medledger.health.types import (
    BODY_TYPES,
    KIND_ADD_REPRESENTATIVE,
    KIND_DENY,
    KIND_GRANT,
    KIND_REGISTER_PATIENT,
    KIND_REMOVE_REPRESENTATIVE,
    KIND_REQUEST_RECORDS,
    KIND_REVOKE,
    STATE_VALUE_BYTES_MAX,
    DenyBody,
    GrantBody,
    RecordKey,
    RecordState,
    RegisterPatientBody,
    RepresentativeBody,
    RevokeBody,
    compute_patient_id,
)

ROOT: Final = Path(__file__).resolve().parents[2]
WEB: Final = ROOT / "web"
VECTORS: Final = WEB / "test" / "vectors.json"
NPM_TIMEOUT_S: Final = 240


def _npm(*args: str) -> subprocess.CompletedProcess[str]:
    """`npm ARGS` in web/, whose dependencies the set-up installed (`scripts/bootstrap.sh`)."""
    npm = shutil.which("npm")
    assert npm is not None, "npm is not installed: run scripts/bootstrap.sh"
    assert (WEB / "node_modules").is_dir(), "web/node_modules is missing: run scripts/bootstrap.sh"
    return subprocess.run(
        [npm, *args], cwd=WEB, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False
    )


def _identities() -> dict[str, Identity]:
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    return {
        name: Identity.from_secrets(bytes.fromhex(v["sign_seed"]), bytes.fromhex(v["enc_secret"]))
        for name, v in vectors["identities"].items()
    }


def test_vectors_and_schemas_are_what_the_python_code_makes_now() -> None:
    script = ROOT / "scripts" / "make_web_vectors.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr


def test_js_unit_tests_check_every_vector() -> None:
    result = _npm("test")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    counts = dict(re.findall(r"^# (pass|fail) (\d+)$", result.stdout, re.MULTILINE))
    assert counts.get("fail") == "0", result.stdout[-2000:]
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    # At least one JS test per tx, encoding and refused encoding: none was silently skipped.
    minimum = len(vectors["txs"]) + len(vectors["encodings"]) + len(vectors["invalid_encodings"])
    assert int(counts.get("pass", "0")) >= minimum, result.stdout[-2000:]


@pytest.fixture(scope="module")
def made_by_the_web_app() -> dict[str, Any]:
    """What web/test/interop.ts makes (compiled and run once for this module's tests)."""
    result = _npm("run", "-s", "interop")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    made: dict[str, Any] = json.loads(result.stdout)
    return made


def test_both_codecs_accept_and_refuse_the_same_mutated_encodings(
    made_by_the_web_app: dict[str, Any],
) -> None:
    """A differential test: seeded mutations of every valid vector (bit flips, bytes set, inserted,
    dropped, cuts), judged by the TypeScript codec there and by the Python codec here."""
    mutations = made_by_the_web_app["mutations"]
    assert len(mutations) >= 500
    accepted = 0
    for m in mutations:
        cls = getattr(chain_types, m["schema"], None) or getattr(health_types, m["schema"])
        try:
            decode(cls, bytes.fromhex(m["encoded"]), max_bytes=TX_BYTES_MAX)
        except CodecError:
            python_accepts = False
        else:
            python_accepts = True
        assert python_accepts == m["accepted"], m
        accepted += python_accepts
    # Both verdicts occur (a mutation inside a byte string stays valid; most others do not).
    assert 0 < accepted < len(mutations)
    # A tx past the 16-bit forms (a 70,000-byte body, bin32) is canonical for Python too.
    large = bytes.fromhex(made_by_the_web_app["large_tx"])
    tx = decode(Tx, large, max_bytes=TX_BYTES_MAX)
    assert len(tx.body) == 70_000
    assert verify_signature(tx.sender, tx.signing_bytes(), tx.signature)


def test_python_reads_what_the_web_app_signs_seals_and_writes(made_by_the_web_app: dict[str, Any]) -> None:
    made = made_by_the_web_app
    ids = _identities()
    patient, representative, hospital = ids["patient"], ids["representative"], ids["hospital"]
    patient_id = compute_patient_id(patient.public.sign_key)
    inquiry_id = bytes.fromhex(made["inquiry_id"])
    grant_key = RecordKey(
        bytes.fromhex(made["grant_record_key"]["record_id"]),
        bytes.fromhex(made["grant_record_key"]["sealed_key"]),
    )
    expected: dict[str, tuple[str, Identity, object]] = {
        "register_patient": (KIND_REGISTER_PATIENT, patient, RegisterPatientBody(patient.public.enc_key)),
        "add_representative": (
            KIND_ADD_REPRESENTATIVE,
            patient,
            RepresentativeBody(patient_id, representative.public.sign_key),
        ),
        "remove_representative": (
            KIND_REMOVE_REPRESENTATIVE,
            patient,
            RepresentativeBody(patient_id, representative.public.sign_key),
        ),
        "grant": (KIND_GRANT, patient, GrantBody(inquiry_id, (grant_key,))),
        "deny": (KIND_DENY, representative, DenyBody(inquiry_id)),
        "request_records": (
            KIND_REQUEST_RECORDS,
            representative,
            RequestRecordsBody(
                patient_id, ids["clinic"].public.sign_key, ("Immunization", "Observation"), 5, 2**64 - 1
            ),
        ),
    }
    assert set(made["txs"]) == {*expected, "revoke"}
    for name, item in made["txs"].items():
        raw = bytes.fromhex(item["tx"])
        tx = decode(Tx, raw, max_bytes=TX_BYTES_MAX)  # strict: only the canonical encoding passes
        assert compute_tx_id(raw).hex() == item["tx_id"], name
        assert verify_signature(tx.sender, tx.signing_bytes(), tx.signature), name
        body_type = BODY_TYPES.get(tx.kind) or RIGHTS_BODY_TYPES[tx.kind]
        body: object = decode(body_type, tx.body, max_bytes=TX_BODY_BYTES_MAX)
        if name == "revoke":
            assert (tx.kind, tx.sender, type(body)) == (KIND_REVOKE, patient.public.sign_key, RevokeBody)
            continue
        kind, signer, body_expected = expected[name]
        assert (tx.kind, tx.sender, body) == (kind, signer.public.sign_key, body_expected), name

    # The record key the app re-sealed in the grant opens the record for the hospital in Python.
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    record_vector = vectors["records"][0]
    record = decode(RecordState, bytes.fromhex(record_vector["encoded"]), max_bytes=STATE_VALUE_BYTES_MAX)
    opened = records.open_record(record, hospital, sealed_key=grant_key.sealed_key)
    assert opened.canonical_json.decode() == record_vector["plaintext"]

    # A sealed box the app made opens with PyNaCl, and its key opens the app's ciphertext.
    box, aead = made["sealed_box"], made["aead"]
    key = nacl.public.SealedBox(patient.private_key).decrypt(bytes.fromhex(box["sealed"]))
    assert key.hex() == box["message"] == aead["key"]
    plaintext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        bytes.fromhex(aead["ciphertext"]),
        bytes.fromhex(aead["associated_data"]),
        bytes.fromhex(aead["nonce"]),
        key,
    )
    assert plaintext.hex() == aead["plaintext"]

    # The key file the app wrote imports in Python (as `medledger patient --key` reads it).
    key_file = made["key_file"]
    data = key_file["file"].encode()
    assert decode_public_identity(data) == representative.public
    assert decode_identity(data, key_file["passphrase"].encode()).secrets() == representative.secrets()
