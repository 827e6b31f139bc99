"""Attachments: documents too large for the ledger, stored off it as encrypted blobs (ADR 0013).

A PDF discharge letter, a scan or an imaging report is uploaded to the author's node, which
encrypts it chunk by chunk under a fresh *blob key* (XChaCha20-Poly1305, one MiB of plaintext per
chunk, the chunk's index and a last-chunk flag as associated data, so chunks can be neither
reordered nor dropped from the end) and stores the ciphertext content-addressed
(`chain/blobstore.py`). The FHIR resource names the attachment as `urn:medledger:blob:<blob id>`
in an `Attachment.url` (DocumentReference.content.attachment, Media.content,
DiagnosticReport.presentedForm, …). The record on the ledger (`health.add_document`) carries each
blob's id, its plaintext size and its key envelope: the blob key sealed under the *record key*,
with the blob id and the record's binding as associated data (`BlobRef`). So exactly whoever may
open the record may open its attachments: its readers, and a grantee through the record key its
grant re-seals; and an attachment key cannot be moved to another record or blob.

Which nodes hold a blob (`compute_blob_holders`): its author's, and `replicas` other registered
institutions, chosen by rendezvous hashing of the blob id with each institution's key, so every
node computes the same set without coordination and a new institution moves few blobs.

These are client-side functions (randomness, decryption): the rules only check shapes.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import nacl.bindings
import nacl.exceptions

from medledger.crypto import HASH_SIZE, Identity, digest, unwrap_content_key
from medledger.crypto.envelope import NONCE_SIZE, TAG_SIZE
from medledger.health.errors import InvalidRecordError
from medledger.health.records import (
    EncryptedRecord,
    compute_binding_of,
    compute_record_key,
    get_record_key,
    open_record,
)
from medledger.health.types import (
    ATTACHMENTS_MAX,
    SEALED_BLOB_KEY_SIZE,
    BlobRef,
    GrantState,
    RecordState,
    compute_record_binding,
)

#: Plaintext bytes per chunk (the last chunk is shorter).
PLAIN_CHUNK_BYTES: Final = 1024 * 1024
BLOB_KEY_SIZE: Final = 32
#: How a FHIR Attachment.url names a blob: this prefix and the blob id in lowercase hex.
BLOB_URL_PREFIX: Final = "urn:medledger:blob:"
BLOB_KEY_AD_DOMAIN: Final = b"medledger/health/blob-key/v1\x00"
BLOB_CHUNK_AD_DOMAIN: Final = b"medledger/health/blob-chunk/v1\x00"
PLACEMENT_DOMAIN: Final = b"medledger/health/blob-placement/v1\x00"
#: Other nodes (besides the author's) that hold each blob, unless configured otherwise.
BLOB_REPLICAS_DEFAULT: Final = 2

_BLOB_URL: Final = re.compile(re.escape(BLOB_URL_PREFIX) + "([0-9a-f]{64})")
_aead_encrypt = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt
_aead_decrypt = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt


class AttachmentError(InvalidRecordError):
    """A resource's attachment URL names no usable blob (malformed, unknown, or too many)."""

    code = "invalid_attachment"


class BlobDecryptionError(InvalidRecordError):
    """An attachment that does not open under its key (altered, truncated, or another's key)."""

    code = "attachment_undecryptable"


def compute_blob_url(blob_id: bytes) -> str:
    return BLOB_URL_PREFIX + blob_id.hex()


def find_blob_ids(resource: Mapping[str, Any]) -> list[bytes]:
    """The blob ids a resource's `url` fields name, in order of first appearance, without repeats.

    A `url` that starts like a blob URL but does not name one exactly is an `AttachmentError`
    (a typo must not silently store a document without its file).
    """
    found: list[bytes] = []
    for url in _iter_urls(resource):
        if not url.startswith(BLOB_URL_PREFIX):
            continue
        match = _BLOB_URL.fullmatch(url)
        if match is None:
            raise AttachmentError(
                f"an attachment url must be {BLOB_URL_PREFIX} and 64 lowercase hex characters",
                paths=("url",),
            )
        blob_id = bytes.fromhex(match.group(1))
        if blob_id not in found:
            found.append(blob_id)
    if len(found) > ATTACHMENTS_MAX:
        raise AttachmentError(f"a record carries at most {ATTACHMENTS_MAX} attachments", paths=("url",))
    return found


def _iter_urls(value: object) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if key == "url" and isinstance(child, str):
                    yield child
                elif isinstance(child, dict | list):
                    stack.append(child)
        elif isinstance(item, list):
            stack.extend(child for child in item if isinstance(child, dict | list))


# --- the blob key and its envelope --------------------------------------------------------------


def generate_blob_key() -> bytes:
    return secrets.token_bytes(BLOB_KEY_SIZE)


def _chunk_nonce(index: int) -> bytes:
    # The blob key is fresh for every blob, so a counter nonce never repeats under one key.
    return bytes(NONCE_SIZE - 8) + index.to_bytes(8, "big")


def _chunk_ad(index: int, last: bool) -> bytes:
    return BLOB_CHUNK_AD_DOMAIN + index.to_bytes(8, "big") + (b"\x01" if last else b"\x00")


def encrypt_chunk(blob_key: bytes, index: int, plaintext: bytes, *, last: bool) -> bytes:
    return bytes(_aead_encrypt(plaintext, _chunk_ad(index, last), _chunk_nonce(index), blob_key))


def decrypt_chunk(blob_key: bytes, index: int, ciphertext: bytes, *, last: bool) -> bytes:
    try:
        return bytes(_aead_decrypt(ciphertext, _chunk_ad(index, last), _chunk_nonce(index), blob_key))
    except nacl.exceptions.CryptoError:
        raise BlobDecryptionError(f"chunk {index} of the attachment does not open under its key") from None


def decrypt_chunks(blob_key: bytes, chunks: Iterable[bytes], count: int) -> Iterator[bytes]:
    """The plaintext of a blob's `count` ciphertext chunks, chunk by chunk."""
    index = -1
    for index, ciphertext in enumerate(chunks):
        yield decrypt_chunk(blob_key, index, ciphertext, last=index == count - 1)
    if index != count - 1:
        raise BlobDecryptionError("the attachment is truncated")


def ciphertext_size(plain_size: int) -> int:
    """Bytes of the blob holding `plain_size` bytes of attachment."""
    chunks = max(1, -(-plain_size // PLAIN_CHUNK_BYTES))
    return plain_size + chunks * TAG_SIZE


def plaintext_size(cipher_size: int, chunks: int) -> int:
    return cipher_size - chunks * TAG_SIZE


def _blob_key_ad(blob_id: bytes, binding: bytes) -> bytes:
    return BLOB_KEY_AD_DOMAIN + blob_id + binding


def seal_blob_key(record_key: bytes, blob_id: bytes, binding: bytes, blob_key: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_SIZE)
    sealed = nonce + bytes(_aead_encrypt(blob_key, _blob_key_ad(blob_id, binding), nonce, record_key))
    assert len(sealed) == SEALED_BLOB_KEY_SIZE
    return sealed


def open_blob_key(record_key: bytes, ref: BlobRef, binding: bytes) -> bytes:
    nonce, sealed = ref.sealed_key[:NONCE_SIZE], ref.sealed_key[NONCE_SIZE:]
    try:
        return bytes(_aead_decrypt(sealed, _blob_key_ad(ref.blob_id, binding), nonce, record_key))
    except nacl.exceptions.CryptoError:
        raise BlobDecryptionError(
            f"the key of attachment {ref.blob_id.hex()[:16]} does not open with the record's key"
        ) from None


def compute_author_record_key(record: EncryptedRecord, patient_id: bytes, author: Identity) -> bytes:
    """The record key of a record `author` just encrypted (the author is one of its readers)."""
    binding = compute_record_binding(patient_id, record.author, record.record_type, record.supersedes)
    content_key = unwrap_content_key(record.envelope.to_envelope(), author)
    return compute_record_key(content_key, binding)


def build_blob_refs(
    record: EncryptedRecord,
    patient_id: bytes,
    author: Identity,
    blobs: Sequence[tuple[bytes, int, bytes]],
) -> tuple[BlobRef, ...]:
    """The attachments of an encrypted record: (blob id, plaintext size, blob key) each sealed
    under its record key; sorted by blob id, as the rules want them."""
    record_key = compute_author_record_key(record, patient_id, author)
    binding = compute_record_binding(patient_id, record.author, record.record_type, record.supersedes)
    return tuple(
        BlobRef(blob_id, size, seal_blob_key(record_key, blob_id, binding, blob_key))
        for blob_id, size, blob_key in sorted(blobs)
    )


# --- placement ------------------------------------------------------------------------------------


def compute_blob_holders(
    blob_id: bytes, author: bytes, institutions: Iterable[bytes], replicas: int
) -> frozenset[bytes]:
    """The node keys that hold `blob_id`: its author's and the `replicas` others ranking first by
    rendezvous hash (all others if there are fewer)."""
    if len(blob_id) != HASH_SIZE:
        raise ValueError("a blob id is 32 bytes")
    others = sorted(
        (key for key in set(institutions) if key != author),
        key=lambda key: digest(PLACEMENT_DOMAIN + blob_id + key),
    )
    return frozenset([author, *others[: max(0, replicas)]])


def open_attachment(
    record: RecordState,
    ref: BlobRef,
    identity: Identity,
    ciphertext_chunks: Sequence[bytes],
    *,
    grant: GrantState | None = None,
) -> bytes:
    """A reader's device: an attachment's plaintext from its (already hash-verified) chunks.

    The record is opened and verified first (`open_record`); the blob key comes from its envelope
    under the record key. `BlobDecryptionError` if a chunk or the key does not open, or the
    plaintext is not the size the ledger states.
    """
    open_record(record, identity, grant=grant)
    record_key = get_record_key(record, identity, grant)
    blob_key = open_blob_key(record_key, ref, compute_binding_of(record))
    plaintext = b"".join(decrypt_chunks(blob_key, ciphertext_chunks, len(ciphertext_chunks)))
    if len(plaintext) != ref.size:
        raise BlobDecryptionError(f"the attachment holds {len(plaintext)} bytes; its record says {ref.size}")
    return plaintext
