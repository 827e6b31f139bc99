"""Attachments on a node: the blob store, its peer service, the repair loop and the API routes.

See docs/adr/0013-attachment-blobs.md. What a node does with blobs:

- **Upload** (`POST /v1/health/institution/blobs`, raw body): the body is read a MiB at a time,
  each MiB encrypted under a fresh blob key and appended to the store; nothing larger than a chunk
  is held in memory. The answer names the blob (`urn:medledger:blob:<id>`); the blob key stays in
  the node's blob directory (mode 0600) for the record that will cite it.
- **Records that cite blobs**: `POST /v1/health/institution/records` with a resource whose
  `Attachment.url` names uploaded blobs becomes a `health.add_document` tx (`build_record_tx`),
  each blob key sealed under the record key.
- **Download** (`GET /v1/health/institution/records/{record_id}/attachments/{blob_id}`): the same
  rules as reading the record (`policy.get_read_access`; a grantee's read is receipted on the
  ledger before a byte of plaintext leaves), streamed a chunk at a time, each chunk verified
  against the manifest and decrypted; a blob this node does not hold is fetched from peers first.
- **Replication and repair** (`BlobRepair`): every node walks the ledger's list of attachments
  (`h1/blob/…`), and fetches from its peers every blob it should hold (`compute_blob_holders`)
  and lacks, verified chunk by chunk: a wiped node gets its blobs back as it gets its blocks back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from medledger.chain.blobstore import BlobError, BlobStore, BlobUpload
from medledger.chain.errors import StoreError
from medledger.chain.store import TxLocation
from medledger.crypto import DecryptionError, open_content_key, seal_content_key
from medledger.crypto.envelope import SEALED_KEY_SIZE
from medledger.health import policy
from medledger.health import state as st
from medledger.health.app import decode_genesis
from medledger.health.blobs import (
    PLAIN_CHUNK_BYTES,
    AttachmentError,
    BlobDecryptionError,
    build_blob_refs,
    compute_blob_holders,
    compute_blob_url,
    decrypt_chunk,
    encrypt_chunk,
    find_blob_ids,
    generate_blob_key,
    open_blob_key,
    plaintext_size,
)
from medledger.health.claims_client import build_add_labelled_record
from medledger.health.client import build_add_document, build_add_record, build_read_receipt
from medledger.health.errors import RecordVerificationError
from medledger.health.records import EncryptedRecord, compute_binding_of, get_record_key, open_record
from medledger.health.types import (
    ATTACHMENT_BYTES_MAX,
    BlobIndexEntry,
    BlobRef,
    RecordState,
)
from medledger.network.blobsync import BLOB_FRAME_KINDS, BlobSync, FetchProgress
from medledger.node.auth import Access, add_route
from medledger.node.node import Node
from medledger.node.problems import problem_response

log = logging.getLogger("medledger.blobs")

SubmitAndWait = Callable[[bytes, int], Awaitable[TxLocation | None]]

#: How often the repair loop looks for new attachments on the ledger, and rescans all of them
#: (a blob the store discarded as damaged is found again by the rescan).
REPAIR_POLL_S: Final = 0.25
REPAIR_RESCAN_S: Final = 30.0
#: A blob no peer could supply is asked again after this long (doubling, up to the maximum).
REPAIR_RETRY_S_MIN: Final = 0.5
REPAIR_RETRY_S_MAX: Final = 30.0
#: How long a download waits for a blob this node must first fetch from its peers.
DOWNLOAD_FETCH_TIMEOUT_S: Final = 60.0
#: An upload no record on the ledger cites is removed (blob and key) this long after it was made.
UPLOAD_TTL_S: Final = 24 * 3600.0
#: A fetch's progress is logged every this many chunks.
PROGRESS_LOG_CHUNKS: Final = 16
_KEYS_DIR: Final = "keys"
#: A staged key file: the blob key sealed to the node, the plaintext size (then the patient id,
#: once a record cites the upload).
_STAGED_BYTES: Final = SEALED_KEY_SIZE + 8


class BlobService:
    """One node's blobs: the store, the peer service, the staged blob keys and the repair loop."""

    def __init__(self, node: Node, submit_and_wait: SubmitAndWait, receipt_wait_ms: int) -> None:
        self.node = node
        #: The health API's one way of writing a tx and waiting for its commit (a 422 if refused).
        self.submit_and_wait = submit_and_wait
        self.receipt_wait_ms = receipt_wait_ms
        self.store = BlobStore(node.config.blobs_dir)
        self.keys_dir = node.config.blobs_dir / _KEYS_DIR
        self.keys_dir.mkdir(mode=0o700, exist_ok=True)
        self.replicas = node.config.blobs.replicas
        genesis = decode_genesis(node.genesis.app_state)
        self.institution_keys = frozenset(i.sign_key for i in genesis.institutions)
        self.me = next((i for i in genesis.institutions if i.sign_key == node.identity.public.sign_key), None)
        self.sync = BlobSync(
            store=self.store,
            offload=asyncio.to_thread,
            transport=lambda: node.peers,
            monotonic_s=time.monotonic,
        )
        self.repair = BlobRepair(self)
        self._fetching: dict[bytes, asyncio.Task[bool]] = {}

    # -- staged keys (uploaded blobs not yet, or not only, cited by a record) -------------------

    def _key_path(self, blob_id: bytes) -> Path:
        return self.keys_dir / blob_id.hex()

    def save_staged_key(self, blob_id: bytes, blob_key: bytes, size: int, patient_id: bytes = b"") -> None:
        """Keep an upload's key (and, once a record cites it, the patient it belongs to).

        The key is sealed to this node's own x25519 key, as a record's key is: a copy of the
        node's home without the node key's passphrase (a backup, a stolen disk) holds the blobs
        and their keys side by side, and must not open them."""
        sealed = seal_content_key(blob_key, self.node.identity.public.enc_key)
        path = self._key_path(blob_id)
        temp = path.with_name(path.name + ".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(sealed + size.to_bytes(8, "big") + patient_id)
        os.replace(temp, path)

    def get_staged(self, blob_id: bytes, patient_id: bytes) -> tuple[bytes, int, bytes]:
        """(blob id, plaintext size, blob key) of a blob uploaded here for a record of
        `patient_id`; `AttachmentError` if none, or if it is already another patient's.

        An upload is one patient's document: the first record citing it binds it to that patient
        (a correction of the record may cite it again). Sealing its key into a record of another
        patient would hand that patient, and everyone they grant, the first patient's document.
        """
        not_uploaded = AttachmentError(
            f"attachment {blob_id.hex()[:16]}… was not uploaded to this node (POST "
            "/v1/health/institution/blobs first)",
            paths=("url",),
        )
        try:
            raw = self._key_path(blob_id).read_bytes()
        except FileNotFoundError:
            raw = b""
        if len(raw) not in (_STAGED_BYTES, _STAGED_BYTES + len(patient_id)) or not self.store.has(blob_id):
            raise not_uploaded
        try:
            blob_key = open_content_key(raw[:SEALED_KEY_SIZE], self.node.identity)
        except DecryptionError:
            raise not_uploaded from None
        size = int.from_bytes(raw[SEALED_KEY_SIZE:_STAGED_BYTES], "big")
        bound = raw[_STAGED_BYTES:]
        if bound and bound != patient_id:
            raise AttachmentError(
                f"attachment {blob_id.hex()[:16]}… belongs to a record of another patient; upload "
                "this patient's document on its own",
                paths=("url",),
            )
        if not bound:
            self.save_staged_key(blob_id, blob_key, size, patient_id)
        return blob_id, size, blob_key

    def expire_uploads(self, referenced: set[bytes]) -> None:
        """Forget uploads no record on the ledger cites `UPLOAD_TTL_S` after they were made (their
        key and their blob): an upload is a step towards a record, not storage of its own."""
        cutoff = time.time() - UPLOAD_TTL_S
        for path in self.keys_dir.iterdir():
            try:
                blob_id = bytes.fromhex(path.name)
                if blob_id in referenced or path.stat().st_mtime > cutoff:
                    continue
            except (ValueError, FileNotFoundError):
                continue
            log.info("upload %s expired: no record cites it", path.name[:16])
            self.store.delete(blob_id)
            path.unlink(missing_ok=True)

    # -- placement and fetching ---------------------------------------------------------------

    def is_holder(self, entry: BlobIndexEntry) -> bool:
        me = self.node.identity.public.sign_key
        return me in compute_blob_holders(entry.blob_id, entry.author, self.institution_keys, self.replicas)

    def peers_for(self, blob_id: bytes, author: bytes) -> list[bytes]:
        """Linked peers to ask for a blob: its holders first (author, then by rank), then the rest."""
        peers = self.node.peers
        if peers is None:
            return []
        linked = list(peers.links)
        holders = compute_blob_holders(blob_id, author, self.institution_keys, self.replicas)
        return sorted(linked, key=lambda key: (key not in holders, key != author, key))

    async def fetch(self, blob_id: bytes, author: bytes) -> bool:
        """Fetch a blob from peers (one fetch per blob at a time, shared by whoever waits)."""
        if self.store.has(blob_id):
            return True
        task = self._fetching.get(blob_id)
        if task is None:
            task = asyncio.ensure_future(self._fetch(blob_id, author))
            self._fetching[blob_id] = task
            task.add_done_callback(lambda _: self._fetching.pop(blob_id, None))
        return await asyncio.shield(task)

    async def _fetch(self, blob_id: bytes, author: bytes) -> bool:
        started = time.monotonic()

        def on_progress(progress: FetchProgress) -> None:
            if progress.done % PROGRESS_LOG_CHUNKS == 0 and progress.done < progress.chunks:
                log.info(
                    "blob %s: %d of %d chunks fetched", blob_id.hex()[:16], progress.done, progress.chunks
                )

        ok = await self.sync.fetch(blob_id, self.peers_for(blob_id, author), on_progress=on_progress)
        if ok:
            manifest = self.store.get_manifest(blob_id)
            size = manifest.size if manifest is not None else 0
            log.info(
                "blob %s fetched from peers and verified: %.1f MiB in %.2f s",
                blob_id.hex()[:16],
                size / 2**20,
                time.monotonic() - started,
            )
        return ok


class BlobRepair:
    """Fetches every blob this node should hold and lacks; reports its progress in the log."""

    def __init__(self, service: BlobService) -> None:
        self.service = service
        self._cursor = 0
        self._wanted: dict[bytes, BlobIndexEntry] = {}
        self._retry_at: dict[bytes, tuple[float, float]] = {}
        self._last_rescan = 0.0
        #: Every blob id the ledger names (complete after each full rescan).
        self._referenced: set[bytes] = set()
        self.fetched = 0
        self.task: asyncio.Task[None] | None = None

    @property
    def wanted(self) -> int:
        return len(self._wanted)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="blob repair")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    def _scan(self, *, rescan: bool) -> None:
        node = self.service.node
        store = self.service.store
        if rescan:
            self._cursor = 0
            self._referenced.clear()
        while True:
            entries = st.list_blob_entries(node.store, start=self._cursor)
            if not entries:
                break
            self._cursor += len(entries)
            for entry in entries:
                self._referenced.add(entry.blob_id)
                wanted = entry.blob_id not in self._wanted and self.service.is_holder(entry)
                if wanted and not store.has(entry.blob_id):
                    self._wanted[entry.blob_id] = entry
        if rescan:
            self.service.expire_uploads(self._referenced)

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except StoreError:
                pass  # the node is not (or no longer) started: try again on the next round
            except Exception:  # the repair loop must outlive any one blob's trouble
                log.exception("blob repair round failed; retrying")
            await asyncio.sleep(REPAIR_POLL_S)

    async def _step(self) -> None:
        now = time.monotonic()
        rescan = now - self._last_rescan >= REPAIR_RESCAN_S
        if rescan:
            self._last_rescan = now
        await asyncio.to_thread(self._scan, rescan=rescan)
        for blob_id, entry in list(self._wanted.items()):
            if self.service.store.has(blob_id):
                del self._wanted[blob_id]
                continue
            retry_at, backoff = self._retry_at.get(blob_id, (0.0, REPAIR_RETRY_S_MIN))
            if time.monotonic() < retry_at:
                continue
            if not self.service.peers_for(blob_id, entry.author):
                return  # no peer linked yet
            if await self.service.fetch(blob_id, entry.author):
                del self._wanted[blob_id]
                self._retry_at.pop(blob_id, None)
                self.fetched += 1
                log.info("blob repair: %d fetched, %d still wanted", self.fetched, len(self._wanted))
            else:
                self._retry_at[blob_id] = (time.monotonic() + backoff, min(backoff * 2, REPAIR_RETRY_S_MAX))
                log.info(
                    "blob repair: no peer could supply blob %s yet; %d wanted",
                    blob_id.hex()[:16],
                    len(self._wanted),
                )


BLOBS_KEY: Final = web.AppKey("blobs", BlobService)


# --- building the record tx -----------------------------------------------------------------------


def build_record_tx(
    app: web.Application,
    patient_id: bytes,
    encrypted: EncryptedRecord,
    resource: dict[str, Any],
    labels: tuple[str, ...] = (),
) -> tuple[bytes, bytes]:
    """The signed tx (raw, id) of a new record: a document (`health.add_document`, or
    `health.add_labelled_document` with security labels, issue 12) if its resource names uploaded
    blobs, else `health.add_labelled_record` if it carries labels, else `health.add_record`.
    `AttachmentError` (422) for a blob not uploaded here."""
    node = app[BLOBS_KEY].node
    identity, chain_id = node.identity, node.genesis.chain_id
    blob_ids = find_blob_ids(resource)
    if labels and not blob_ids:
        _, raw, tx_id = build_add_labelled_record(identity, patient_id, encrypted, labels, chain_id=chain_id)
        return raw, tx_id
    if not blob_ids:
        _, raw, tx_id = build_add_record(identity, patient_id, encrypted, chain_id=chain_id)
        return raw, tx_id
    staged = [app[BLOBS_KEY].get_staged(blob_id, patient_id) for blob_id in blob_ids]
    refs = build_blob_refs(encrypted, patient_id, identity, staged)
    _, raw, tx_id = build_add_document(
        identity, patient_id, encrypted, refs, chain_id=chain_id, labels=labels
    )
    return raw, tx_id


def attachments_json(state: Any, record: RecordState) -> list[dict[str, Any]]:
    """A record's attachments as the API lists them (ids and sizes: the keys travel sealed only)."""
    return [
        {"blob_id": ref.blob_id.hex(), "size": ref.size, "url": compute_blob_url(ref.blob_id)}
        for ref in st.get_record_attachments(state, record.record_id)
    ]


# --- routes ---------------------------------------------------------------------------------------


def _problem(
    status: int, title: str, detail: str, code: str, headers: dict[str, str] | None = None
) -> web.Response:
    return problem_response(status, title, detail, code=code, headers=headers)


def _unknown_query(request: web.Request, allowed: frozenset[str] = frozenset()) -> web.Response | None:
    """A 400 for query parameters the route does not take (never echoed: client-chosen text)."""
    unknown = set(request.query) - allowed
    if not unknown:
        return None
    names = ", ".join(sorted(allowed)) or "none"
    return _problem(
        400, "Bad request", f"{len(unknown)} unknown query parameter(s); allowed: {names}", "bad_request"
    )


def _hex32(value: str) -> bytes | None:
    if len(value) != 64:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


async def post_blob(request: web.Request) -> web.StreamResponse:
    """Upload an attachment: a raw body, streamed into the store a chunk at a time, encrypted."""
    service = request.app[BLOBS_KEY]
    if (refused := _unknown_query(request)) is not None:
        return refused
    institution = service.me
    if institution is None:
        return _problem(
            403, "Forbidden", "this node's key is not a registered institution", "not_institution"
        )
    if not policy.is_author_role(institution.role):
        return _problem(
            403,
            "Forbidden",
            f"an institution with role {institution.role!r} cannot author records",
            "author_role",
        )
    if request.content_type != "application/octet-stream":
        return _problem(
            415, "Unsupported media type", "upload the file as application/octet-stream", "bad_request"
        )
    too_large = _problem(
        413, "Attachment too large", f"an attachment is at most {ATTACHMENT_BYTES_MAX} bytes", "too_large"
    )
    # The rest of an oversized body is never read: the connection closes after the answer.
    too_large.force_close()
    if request.content_length is not None and request.content_length > ATTACHMENT_BYTES_MAX:
        return too_large
    blob_key = generate_blob_key()
    upload: BlobUpload = await asyncio.to_thread(service.store.begin_upload)
    size = 0
    index = 0
    buffer = bytearray()
    pending: bytes | None = None  # the last full chunk is held back: only the end says it is last

    def seal(plain: bytes, chunk_index: int, last: bool) -> None:
        upload.append(encrypt_chunk(blob_key, chunk_index, plain, last=last))

    try:
        while True:
            data = await request.content.read(PLAIN_CHUNK_BYTES)
            if not data:
                break
            size += len(data)
            if size > ATTACHMENT_BYTES_MAX:
                await asyncio.to_thread(upload.abort)
                return too_large
            buffer += data
            while len(buffer) >= PLAIN_CHUNK_BYTES:
                if pending is not None:
                    await asyncio.to_thread(seal, pending, index, False)
                    index += 1
                pending = bytes(buffer[:PLAIN_CHUNK_BYTES])
                del buffer[:PLAIN_CHUNK_BYTES]
        if buffer:
            if pending is not None:
                await asyncio.to_thread(seal, pending, index, False)
                index += 1
            pending = bytes(buffer)
        if pending is None:
            await asyncio.to_thread(upload.abort)
            return _problem(422, "Empty attachment", "the upload has no bytes", "empty_attachment")
        await asyncio.to_thread(seal, pending, index, True)
        blob_id, manifest = await asyncio.to_thread(upload.finish)
    except BaseException:
        await asyncio.to_thread(upload.abort)
        raise
    await asyncio.to_thread(service.save_staged_key, blob_id, blob_key, size)
    body = {
        "blob_id": blob_id.hex(),
        "url": compute_blob_url(blob_id),
        "size": size,
        "chunks": manifest.chunks,
    }
    return web.json_response(body, status=201)


def _is_header_text(value: str) -> bool:
    return value.isascii() and value.isprintable() and 0 < len(value) <= 128


def _attachment_content_type(resource: dict[str, Any], blob_id: bytes) -> str:
    """The contentType the record's resource gives the attachment (application/octet-stream if none)."""
    url = compute_blob_url(blob_id)
    stack: list[Any] = [resource]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            content_type = item.get("contentType")
            if item.get("url") == url and isinstance(content_type, str) and _is_header_text(content_type):
                return content_type
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))
    return "application/octet-stream"


async def _ensure_held(service: BlobService, blob_id: bytes, author: bytes) -> bool:
    """Whether this node holds the blob, fetching it from peers first if not (within
    `DOWNLOAD_FETCH_TIMEOUT_S`)."""
    if service.store.has(blob_id):
        return True
    try:
        async with asyncio.timeout(DOWNLOAD_FETCH_TIMEOUT_S):
            return await service.fetch(blob_id, author)
    except TimeoutError:
        return False


async def get_attachment(request: web.Request) -> web.StreamResponse:
    """Stream a record's attachment, decrypted, under the record's own read rules and receipts."""
    service = request.app[BLOBS_KEY]
    if (refused := _unknown_query(request)) is not None:
        return refused
    node = service.node
    me = service.me
    if me is None:
        return _problem(
            403, "Forbidden", "this node's key is not a registered institution", "not_institution"
        )
    record_id = _hex32(request.match_info["record_id"])
    blob_id = _hex32(request.match_info["blob_id"])
    if record_id is None or blob_id is None:
        return _problem(400, "Bad request", "record and blob ids are 64 hex characters", "bad_request")
    state = node.store
    record = st.get_record(state, record_id)
    ref = next((r for r in st.get_record_attachments(state, record_id) if r.blob_id == blob_id), None)
    if record is None or ref is None:
        return _problem(
            404, "Unknown attachment", "the record has no attachment with this id", "attachment_unknown"
        )
    access = policy.get_read_access(state, me, record, node.clock_ms())
    if access is None:
        return _problem(
            403,
            "Forbidden",
            "this institution holds no live grant covering the record; file an inquiry",
            "no_grant",
        )
    # The ciphertext first (it may have to come from peers), so a receipt is never spent on nothing.
    if not await _ensure_held(service, blob_id, record.author):
        return _problem(
            503,
            "Attachment not available",
            "no peer could supply the attachment yet; nothing was decrypted, retry",
            "attachment_unavailable",
            headers={"Retry-After": "5"},
        )
    receipt_headers: dict[str, str] = {}
    try:
        if access.grant is not None:
            grant = access.grant
            _, raw, tx_id = build_read_receipt(
                node.identity, grant.grant_id, [record_id], chain_id=node.genesis.chain_id
            )
            location = await service.submit_and_wait(raw, service.receipt_wait_ms)
            if location is None:
                return _problem(
                    503,
                    "Read receipt pending",
                    "the read receipt was not committed in time; nothing was decrypted, retry",
                    "receipt_pending",
                    headers={"Retry-After": "1"},
                )
            receipt_headers = {
                "Medledger-Receipt-Tx": tx_id.hex(),
                "Medledger-Receipt-Height": str(location.height),
            }
        # A grant in parts carries the record key in one of its parts (ADR 0012).
        sealed_key = (
            policy.get_grant_sealed_key(state, access.grant, record.record_id) if access.grant else None
        )
        decrypted = open_record(record, node.identity, grant=access.grant, sealed_key=sealed_key)
        record_key = get_record_key(record, node.identity, access.grant, sealed_key)
        blob_key = open_blob_key(record_key, ref, compute_binding_of(record))
    except DecryptionError as exc:
        return _problem(
            409,
            "Record cannot be decrypted",
            f"the record does not open with this institution's key: {exc.message}",
            "undecryptable",
        )
    except (RecordVerificationError, BlobDecryptionError) as exc:
        return _problem(409, "Attachment fails verification", exc.message, exc.code)
    manifest = service.store.get_manifest(blob_id)
    if manifest is not None and plaintext_size(manifest.size, manifest.chunks) != ref.size:
        # The author stated another size than it stored: the answer's length would lie.
        return _problem(
            409,
            "Attachment fails verification",
            "the attachment is not the size its record states",
            "blob_size",
        )
    if manifest is None:
        return _problem(
            503,
            "Attachment not available",
            "the attachment was lost; retry",
            "attachment_unavailable",
            {"Retry-After": "5"},
        )
    response = web.StreamResponse(
        headers={
            "Content-Type": _attachment_content_type(decrypted.resource, blob_id),
            "Content-Length": str(ref.size),
            "ETag": f'"{blob_id.hex()}"',
            "Cache-Control": "no-store",
            # The type is the author's word: never let a browser sniff or render it as a page.
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": "attachment",
            **receipt_headers,
        }
    )
    await response.prepare(request)

    def read_plain(index: int) -> bytes:
        data = service.store.read_chunk(blob_id, index, manifest)
        if data is None:
            raise BlobError(f"blob {blob_id.hex()} failed verification at chunk {index}")
        return decrypt_chunk(blob_key, index, data, last=index == manifest.chunks - 1)

    sent = 0
    for index in range(manifest.chunks):
        try:
            plain = await asyncio.to_thread(read_plain, index)
        except (BlobError, BlobDecryptionError) as exc:
            # Headers are out: cut the answer short (the length tells the client), never send bad bytes.
            log.warning("attachment download cut short: %s", exc.message)
            if request.transport is not None:
                request.transport.close()
            return response
        sent += len(plain)
        try:
            await response.write(plain)
        except ConnectionResetError:
            return response  # the reader went away: nothing more to send, nothing to report
    if sent != ref.size:
        log.warning("attachment %s holds %d bytes, its record says %d", blob_id.hex()[:16], sent, ref.size)
    await response.write_eof()
    return response


async def _patient_attachment(request: web.Request) -> tuple[BlobService, BlobRef] | web.Response:
    """The attachment a patient's path names: of one of their records (the ciphertext only)."""
    service = request.app[BLOBS_KEY]
    if (refused := _unknown_query(request)) is not None:
        return refused
    ids = [_hex32(request.match_info[name]) for name in ("patient_id", "record_id", "blob_id")]
    patient_id, record_id, blob_id = ids
    if patient_id is None or record_id is None or blob_id is None:
        return _problem(
            400, "Bad request", "patient, record and blob ids are 64 hex characters", "bad_request"
        )
    state = service.node.store
    record = st.get_record(state, record_id)
    ref = next((r for r in st.get_record_attachments(state, record_id) if r.blob_id == blob_id), None)
    if record is None or record.patient_id != patient_id or ref is None:
        return _problem(
            404,
            "Unknown attachment",
            "none of the patient's records has this attachment",
            "attachment_unknown",
        )
    if not await _ensure_held(service, blob_id, record.author):
        return _problem(
            503,
            "Attachment not available",
            "no peer could supply the attachment yet; retry",
            "attachment_unavailable",
            headers={"Retry-After": "5"},
        )
    return service, ref


async def get_patient_attachment(request: web.Request) -> web.Response:
    """A patient's attachment as its manifest (the device checks it against the blob id)."""
    found = await _patient_attachment(request)
    if isinstance(found, web.Response):
        return found
    service, ref = found
    raw = await asyncio.to_thread(service.store.get_manifest_raw, ref.blob_id)
    if raw is None:
        return _problem(503, "Attachment not available", "the blob was lost; retry", "attachment_unavailable")
    body = {"blob_id": ref.blob_id.hex(), "size": ref.size, "manifest": base64.b64encode(raw).decode()}
    return web.json_response(body)


async def get_patient_attachment_chunk(request: web.Request) -> web.Response:
    """One encrypted chunk of a patient's attachment (the device verifies and decrypts it)."""
    raw_index = request.match_info["index"]
    if not raw_index.isdigit() or len(raw_index) > 4:
        return _problem(400, "Bad request", "the chunk index is a small integer", "bad_request")
    found = await _patient_attachment(request)
    if isinstance(found, web.Response):
        return found
    service, ref = found
    data = await asyncio.to_thread(service.store.read_chunk, ref.blob_id, int(raw_index))
    if data is None:
        return _problem(404, "Unknown chunk", "the attachment has no such chunk", "attachment_unknown")
    return web.json_response({"index": int(raw_index), "data": base64.b64encode(data).decode()})


async def list_blobs(request: web.Request) -> web.Response:
    """The blobs this node holds (`?verify=true`: each re-read and checked against its manifest)."""
    service = request.app[BLOBS_KEY]
    if (refused := _unknown_query(request, frozenset({"verify"}))) is not None:
        return refused
    verify_query = request.query.get("verify", "false")
    if verify_query not in ("true", "false"):
        return _problem(400, "Bad request", "verify must be true or false", "bad_request")
    verify = verify_query == "true"

    def collect() -> list[dict[str, Any]]:
        items = []
        for blob_id in service.store.list_blob_ids():
            manifest = service.store.get_manifest(blob_id)
            if manifest is None:
                continue
            item: dict[str, Any] = {
                "blob_id": blob_id.hex(),
                "size": manifest.size,
                "chunks": manifest.chunks,
            }
            if verify:
                item["verified"] = service.store.verify(blob_id)
            items.append(item)
        return items

    items = await asyncio.to_thread(collect)
    return web.json_response(
        {"blobs": items, "wanted": service.repair.wanted, "fetched": service.repair.fetched}
    )


def add_blob_routes(
    app: web.Application, node: Node, *, submit_and_wait: SubmitAndWait, receipt_wait_ms: int
) -> None:
    """The blob service of a health node: its store, peer frames, repair loop and routes."""
    service = BlobService(node, submit_and_wait, receipt_wait_ms)
    app[BLOBS_KEY] = service
    for kind in BLOB_FRAME_KINDS:
        node.frame_handlers[int(kind)] = service.sync.on_frame

    async def repair_ctx(_: web.Application) -> AsyncIterator[None]:
        service.repair.start()
        yield
        await service.repair.stop()

    app.cleanup_ctx.append(repair_ctx)
    add_route(app, "POST", "/v1/health/institution/blobs", post_blob, Access.TOKEN)
    add_route(app, "GET", "/v1/health/institution/blobs", list_blobs, Access.TOKEN)
    add_route(
        app,
        "GET",
        "/v1/health/institution/records/{record_id}/attachments/{blob_id}",
        get_attachment,
        Access.TOKEN,
    )
    patient = "/v1/health/patients/{patient_id}/records/{record_id}/attachments/{blob_id}"
    add_route(app, "GET", patient, get_patient_attachment, Access.PATIENT)
    add_route(app, "GET", patient + "/chunks/{index}", get_patient_attachment_chunk, Access.PATIENT)


def blob_openapi_paths() -> dict[str, Any]:
    """The OpenAPI description of the blob routes (merged into a health node's document)."""
    hex64 = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}

    def problem(description: str) -> dict[str, Any]:
        schema = {"$ref": "#/components/schemas/Problem"}
        return {"description": description, "content": {"application/problem+json": {"schema": schema}}}

    blob_item = {
        "type": "object",
        "required": ["blob_id", "size", "chunks"],
        "properties": {
            "blob_id": {"type": "string"},
            "size": {"type": "integer"},
            "chunks": {"type": "integer"},
            "verified": {"type": "boolean"},
        },
    }
    ids = [
        {"name": name, "in": "path", "required": True, "schema": hex64}
        for name in ("patient_id", "record_id", "blob_id")
    ]
    b64_answer = {
        "type": "object",
        "required": ["blob_id", "size", "manifest"],
        "properties": {
            "blob_id": {"type": "string"},
            "size": {"type": "integer"},
            "manifest": {"type": "string"},
        },
    }
    chunk_answer = {
        "type": "object",
        "required": ["index", "data"],
        "properties": {"index": {"type": "integer"}, "data": {"type": "string"}},
    }
    patient_errors = {
        "400": problem("Bad id."),
        "404": problem("None of the patient's records has this attachment (or chunk)."),
        "503": problem("Not yet available from peers; retry."),
    }
    return {
        "/v1/health/patients/{patient_id}/records/{record_id}/attachments/{blob_id}": {
            "get": {
                "operationId": "getPatientAttachment",
                "summary": "A patient's attachment: its manifest (chunk hashes), to check against the "
                "blob id on the ledger before fetching and decrypting its chunks on the device.",
                "parameters": ids,
                "responses": {
                    "200": {"description": "OK.", "content": {"application/json": {"schema": b64_answer}}},
                    **patient_errors,
                },
            }
        },
        "/v1/health/patients/{patient_id}/records/{record_id}/attachments/{blob_id}/chunks/{index}": {
            "get": {
                "operationId": "getPatientAttachmentChunk",
                "summary": "One encrypted chunk of a patient's attachment (base64).",
                "parameters": [
                    *ids,
                    {
                        "name": "index",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9]{1,4}$"},
                    },
                ],
                "responses": {
                    "200": {"description": "OK.", "content": {"application/json": {"schema": chunk_answer}}},
                    **patient_errors,
                },
            }
        },
        "/v1/health/institution/blobs": {
            "post": {
                "operationId": "uploadAttachment",
                "summary": "Upload an attachment (a PDF, a scan, an image) as a raw body, streamed and "
                "encrypted by the node; cite the answer's url in a resource's Attachment.url.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {
                                "type": "string",
                                "format": "binary",
                                "maxLength": ATTACHMENT_BYTES_MAX,
                            }
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": "Stored.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["blob_id", "url", "size", "chunks"],
                                    "properties": {
                                        "blob_id": {"type": "string"},
                                        "url": {"type": "string"},
                                        "size": {
                                            "type": "integer",
                                            "minimum": 1,
                                            "maximum": ATTACHMENT_BYTES_MAX,
                                        },
                                        "chunks": {"type": "integer"},
                                    },
                                }
                            }
                        },
                    },
                    "413": problem(f"More than {ATTACHMENT_BYTES_MAX} bytes."),
                    "415": problem("Not application/octet-stream."),
                    "422": problem("An empty body: an attachment has at least one byte."),
                },
            },
            "get": {
                "operationId": "listBlobs",
                "summary": "The blobs (encrypted attachments) this node holds; verify=true re-reads each.",
                "parameters": [
                    {"name": "verify", "in": "query", "schema": {"type": "string", "enum": ["true", "false"]}}
                ],
                "responses": {
                    "200": {
                        "description": "OK.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["blobs", "wanted", "fetched"],
                                    "properties": {
                                        "blobs": {"type": "array", "items": blob_item},
                                        "wanted": {"type": "integer"},
                                        "fetched": {"type": "integer"},
                                    },
                                }
                            }
                        },
                    },
                    "400": problem("Bad parameter."),
                },
            },
        },
        "/v1/health/institution/records/{record_id}/attachments/{blob_id}": {
            "get": {
                "operationId": "downloadAttachment",
                "summary": "Download a record's attachment, decrypted, under the record's read rule "
                "(a read under a grant is first recorded on the ledger).",
                "parameters": [
                    {"name": "record_id", "in": "path", "required": True, "schema": hex64},
                    {"name": "blob_id", "in": "path", "required": True, "schema": hex64},
                ],
                "responses": {
                    "200": {
                        "description": "The attachment, with the content type its record names.",
                        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "400": problem("Bad id."),
                    "404": problem("The record has no such attachment."),
                    "409": problem("The record or attachment does not open or verify."),
                    "422": problem("The read receipt was refused by the rules."),
                    "503": problem("Not yet available from peers, or the receipt is pending; retry."),
                },
            }
        },
    }


__all__: Sequence[str] = ("BLOBS_KEY", "BlobRef", "add_blob_routes", "attachments_json", "build_record_tx")
