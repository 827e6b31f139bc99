"""The patient's client (SDK): a light client of any node, with the patient's own keys.

Everything that needs the patient's private keys happens here, on the patient's device: records are
decrypted locally, grants re-seal record keys locally, and every decision is a transaction signed
locally and submitted to `POST /v1/txs`.

Nothing a node says is believed (issue 9, ADR 0008). The client pins the network's genesis hash
(passed in, or recorded on first use and exposed as `genesis_hash` for the caller to keep), and
follows the chain from it through the proof routes: every block's commit certificate is checked
against the validator set it trusts (set changes followed through `next_validators_hash`), every
block's txs against its tx root, and the patient's txs are re-executed by the health rules into a
`PatientLedger`. Institutions' keys come from the pinned genesis. Every answer the node gives on
its plain routes (institutions, the patient, records, inquiries, grants, audit) is compared with
that verified ledger: a difference (a substituted key, a forged inquiry, a hidden grant) raises
`NodeMisbehaviourError` naming the node, and nothing is signed. What is returned is always the
verified value.

Before a grant, `preview_grant` shows the whole scope in words and the exact records the grant
would re-seal (`medledger.health.preview`); `grant` signs exactly that list.

Transport: every read is a signed request (`medledger.health.auth`: a fresh challenge from the
node, signed with the patient's key with the method and path), so a node serves a patient only
their own data; plain HTTP is refused to any host but loopback (unless `insecure_http`), and a
node's self-signed certificate can be pinned with `ca_file`.

Standard library HTTP only (urllib), so the SDK has no dependency beyond medledger's own layers.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
import json
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from medledger.chain.blobstore import BlobError, compute_chunk_hash, decode_manifest
from medledger.chain.codec import WireType, decode, encode
from medledger.chain.errors import CodecError
from medledger.chain.lightclient import (
    LightClientError,
    TrustedHead,
    verify_genesis,
    verify_next_block,
    verify_tx_inclusion,
)
from medledger.chain.limits import BLOCK_BYTES_MAX, CONSENSUS_MESSAGE_BYTES_MAX, TX_BYTES_MAX, UINT_MAX
from medledger.chain.types import Block, Commit, Header, ValidatorSet, decode_genesis
from medledger.crypto import HASH_SIZE, DecryptionError, Identity, MerkleProof
from medledger.health import claims
from medledger.health.auth import CHALLENGE_SIZE, build_authorization
from medledger.health.blobs import open_attachment
from medledger.health.claim_seal import (
    ClaimUnreadableError,
    open_claim_response_validated,
    open_claim_validated,
)
from medledger.health.claims_client import build_consent_in_parts, build_grant_consent, make_consent
from medledger.health.claims_types import ClaimDecision, ClaimState, ConsentTerms
from medledger.health.client import (
    SignedTx,
    build_add_representative,
    build_deny,
    build_grant,
    build_grant_in_parts,
    build_grant_part,
    build_register_patient,
    build_remove_representative,
    build_revoke,
)
from medledger.health.errors import HealthError, ReasonUnreadableError, RecordVerificationError
from medledger.health.event_subscription import PAGE_LIMIT, EventSubscription
from medledger.health.event_topics import DEFAULT_TOPIC_PREFIX, compute_patient_subscription
from medledger.health.preview import (
    PROBLEM_REASON_UNREADABLE,
    GrantPreview,
    PreviewChangedError,
    ScopeNotShowableError,
    compute_grant_preview,
)
from medledger.health.reasons import open_reason
from medledger.health.records import (
    DecryptedRecord,
    get_verified_record_key,
    open_record,
    open_verified_record,
    reseal_record_keys,
)
from medledger.health.research_client import build_join_study, build_leave_study
from medledger.health.research_types import QueryState, StudyMembership, StudyState
from medledger.health.rights_seal import (
    AmendmentTextUnreadableError,
    build_disagree,
    build_request_amendment,
    build_request_records,
    open_refusal_reason,
    open_request_text,
    open_statement,
    seal_statement,
    validate_amendment_text,
)
from medledger.health.rights_types import (
    AMENDMENT_REFUSED,
    AmendmentState,
    RecordsRequestState,
    compute_request_status,
)
from medledger.health.types import (
    GRANT_PART_RECORDS_MAX,
    GRANT_RECORDS_MAX,
    INQUIRY_OPEN,
    STATE_VALUE_BYTES_MAX,
    AuditEvent,
    GrantState,
    GrantTerms,
    InquiryState,
    PatientId,
    PatientState,
    RecordState,
    Scope,
    compute_grant_part_digest,
    compute_patient_id,
    is_covered,
    is_grant_live,
)
from medledger.health.verify import LedgerVerificationError, PatientLedger

#: How long a submission waits for its commit.
COMMIT_WAIT_MS: Final = 15_000
#: Largest answer the client reads (a page of records with ciphertexts).
RESPONSE_BYTES_MAX: Final = 512 * 1024 * 1024
#: Largest problem+json body, and challenge answer, the client reads.
PROBLEM_BYTES_MAX: Final = 64 * 1024
PAGE_SIZE: Final = 200
#: Most record ids one audit line shows (beyond, it counts them).
AUDIT_RECORD_IDS_SHOWN: Final = 4
#: Most txs the client submits in one batch (a grant's parts: 40 for 10,000 records).
SUBMIT_BATCH_TXS_MAX: Final = 256
#: Times a node's answer is re-fetched and compared with the verified ledger before the node is
#: called a liar: a block committed between the answer and the proof makes an honest node differ
#: once; a lying node differs every time.
CROSS_CHECK_ATTEMPTS: Final = 3
#: First pause before a node is asked again for a block a witness proved (doubled each time).
FRESHNESS_RETRY_S: Final = 0.25
#: Largest encoded genesis the client accepts.
GENESIS_BYTES_MAX: Final = TX_BYTES_MAX * 64
#: Where a challenge for a signed request comes from.
CHALLENGE_PATH: Final = "/v1/auth/challenge"
#: Host names that are loopback without a DNS lookup (IP literals are checked as addresses).
LOOPBACK_HOSTS: Final = frozenset({"localhost"})

HTTP_NOT_FOUND: Final = 404

#: What a representative is shown for the reason (sealed for the patient and the requester only).
REASON_FOR_PATIENT_ONLY: Final = "(sealed for the patient only: a representative cannot read it)"

W = TypeVar("W", bound=WireType)
K = TypeVar("K", bound=Hashable)


class PatientClientError(HealthError):
    """The node refused a request (`status`, problem `detail` and `rule`), or could not be reached."""

    code = "patient_client"

    def __init__(self, message: str, *, status: int = 0, rule: str = "", problem: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.rule = rule
        self.problem = problem


class NodeUnreachableError(PatientClientError, ConnectionError):
    """The node could not be reached (refused, reset, timed out): worth trying again later.

    Also a `ConnectionError`, so code that retries on network errors (`EventSubscription`) retries
    on it without knowing this SDK.
    """

    code = "node_unreachable"


class NodeMisbehaviourError(PatientClientError):
    """A node served an answer that is wrong or cannot be proven; `node_url` names it.

    `what` says which check failed (e.g. "institution key", "inquiry", "commit certificate").
    """

    code = "node_unverified"

    def __init__(self, node_url: str, what: str, message: str) -> None:
        super().__init__(f"the node at {node_url} {message} (check: {what})", status=0, rule=what)
        self.node_url = node_url
        self.what = what


@dataclasses.dataclass(frozen=True, slots=True)
class Verification:
    """What `PatientClient.verify` checked (printed by `medledger patient verify`)."""

    node_url: str
    chain_id: str
    genesis_hash: bytes
    height: int
    time_ms: int
    blocks: int
    txs: int
    validators: int
    validator_set_changes: int
    patient_txs: int
    records: int
    inquiries: int
    grants: int
    audit_events: int
    inclusion_proofs: int
    #: Other nodes that confirmed no later block exists than the ones verified.
    witnesses: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class LocalRecord:
    """A record as the patient's device sees it: the ledger entry and its local decryption."""

    record: RecordState
    author_name: str | None
    decrypted: DecryptedRecord | None
    error: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimView:
    """A claim as the patient sees it: the current Claim and every decision's ClaimResponse opened
    with the patient's key (None: does not open), and the reads receipted for it (audit events)."""

    claim: ClaimState
    resource: dict[str, Any] | None
    decisions: tuple[tuple[ClaimDecision, dict[str, Any] | None], ...]
    reads: tuple[AuditEvent, ...]
    #: The Claim's JSON text exactly as the clinic submitted it (b"": does not open), and each
    #: decision's ClaimResponse text as the insurer submitted it, in the order of `decisions`:
    #: what to show or keep, where `resource` and the parsed responses lose decimal digits.
    claim_text: bytes = b""
    response_texts: tuple[bytes, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Submitted:
    tx_id: bytes
    height: int


@dataclasses.dataclass(frozen=True, slots=True)
class AmendmentTexts:
    """An amendment request's free text as this device opens it (None: not readable with its key)."""

    text: str | None
    refusal_reason: str | None
    statement: str | None


def is_loopback_host(host: str) -> bool:
    """Whether `host` (a URL's host) is this machine: `localhost` or a loopback address."""
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PatientClient:
    """A patient's (or a representative's) client of one node at `url`.

    `identity` signs; `patient_id` is the patient acted for (default: the identity's own, i.e.
    the patient themself; a representative passes the patient's id). An `http://` URL is
    refused unless its host is loopback or `insecure_http` is set (the patient's signed requests
    and the node's answers would cross the network in the clear); `ca_file` pins the CA (or the
    node's self-signed certificate) an `https://` node must present.
    """

    def __init__(
        self,
        url: str,
        identity: Identity,
        *,
        patient_id: bytes | None = None,
        genesis_hash: bytes | None = None,
        witnesses: tuple[str, ...] = (),
        timeout_s: float = 30.0,
        insecure_http: bool = False,
        ca_file: Path | str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise PatientClientError(f"{url!r} is not an http:// or https:// URL of a node")
        if parsed.scheme == "http" and not insecure_http and not is_loopback_host(parsed.hostname):
            raise PatientClientError(
                f"refusing plain HTTP to {parsed.hostname}: the patient's requests and data would cross "
                "the network unencrypted; use the node's https:// URL (pin a self-signed certificate "
                "with a CA file), or allow it explicitly (--insecure-http)"
            )
        self._base_path = parsed.path
        self._insecure_http, self._ca_file = insecure_http, ca_file  # witnesses are reached alike
        self._ssl_context: ssl.SSLContext | None = None
        if parsed.scheme == "https":
            try:
                self._ssl_context = ssl.create_default_context(
                    cafile=str(ca_file) if ca_file is not None else None
                )
            except (OSError, ssl.SSLError) as exc:
                raise PatientClientError(f"the CA file {ca_file} cannot be used: {exc}") from None
        self.identity = identity
        self.patient_id = PatientId(patient_id or compute_patient_id(identity.public.sign_key))
        self.timeout_s = timeout_s
        #: The pinned genesis hash; None until first use (then recorded: trust on first use).
        self.genesis_hash = genesis_hash
        self._chain_id = ""
        self._head: TrustedHead | None = None
        self._ledger: PatientLedger | None = None
        self._headers: dict[int, Header] = {}
        #: Other nodes asked whether the chain goes on beyond what this one served (freshness).
        self.witnesses = tuple(w.rstrip("/") for w in witnesses)

    # -- HTTP ------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        """One API call; a read (GET) is signed over a fresh challenge from the node."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if method == "GET":
            headers["Authorization"] = self._sign(method, path)
        return self._call(method, path, data, headers, RESPONSE_BYTES_MAX)

    def _challenge(self) -> tuple[bytes, str]:
        """A fresh challenge from the node, and the chain id it names."""
        reply = self._call("POST", CHALLENGE_PATH, None, {"Accept": "application/json"}, PROBLEM_BYTES_MAX)
        try:
            challenge = bytes.fromhex(reply["challenge"])
            chain_id = str(reply["chain_id"])
        except (KeyError, TypeError, ValueError):
            raise PatientClientError(f"the node at {self.url} sent a malformed challenge") from None
        if len(challenge) != CHALLENGE_SIZE:
            raise PatientClientError(f"the node at {self.url} sent a malformed challenge")
        return challenge, chain_id

    def _sign(self, method: str, path: str) -> str:
        """The `Authorization` header of a signed request (its challenge is used once, here)."""
        challenge, chain_id = self._challenge()
        return build_authorization(
            self.identity,
            chain_id=self._chain_id or chain_id,  # the pinned one once known; a read's only
            challenge=challenge,
            method=method,
            target=self._base_path + path,
            time_ms=time.time_ns() // 1_000_000,
            patient_id=self.patient_id,
        )

    def _call(self, method: str, path: str, data: bytes | None, headers: dict[str, str], limit: int) -> Any:
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)  # noqa: S310 - the node's URL
        try:
            with urllib.request.urlopen(  # noqa: S310 - the scheme is checked in __init__
                request, timeout=self.timeout_s, context=self._ssl_context
            ) as response:
                return json.loads(response.read(limit))
        except urllib.error.HTTPError as exc:
            try:
                problem = json.loads(exc.read(PROBLEM_BYTES_MAX))
            except ValueError:
                problem = {}
            detail = problem.get("detail", exc.reason) if isinstance(problem, dict) else exc.reason
            rule = problem.get("rule", "") if isinstance(problem, dict) else ""
            raise PatientClientError(
                f"{method} {path}: {exc.code} {detail}", status=exc.code, rule=str(rule), problem=problem
            ) from None
        except ValueError:
            raise PatientClientError(f"the node at {self.url} sent an answer that is not JSON") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NodeUnreachableError(f"cannot reach the node at {self.url}: {reason}") from None

    def _patient_path(self, suffix: str = "") -> str:
        return f"/v1/health/patients/{self.patient_id.hex()}{suffix}"

    def _decode(self, wire_type: type[W], item: Any) -> W:
        try:
            return decode(
                wire_type, base64.b64decode(item["encoded"], validate=True), max_bytes=STATE_VALUE_BYTES_MAX
            )
        except (KeyError, TypeError, ValueError, CodecError):
            raise self._lie(wire_type.__name__, f"sent a {wire_type.__name__} that does not decode") from None

    def _lie(self, what: str, message: str) -> NodeMisbehaviourError:
        return NodeMisbehaviourError(self.url, what, message)

    @property
    def chain_id(self) -> str:
        """The chain id of the pinned genesis (a patient not yet registered needs it to register)."""
        if not self._chain_id:
            self.load_genesis()
        return self._chain_id

    # -- verification: follow the chain from the pinned genesis --------------------------------

    def sync(self) -> PatientLedger:
        """Verify every block the node has committed since the last call; returns the ledger.

        Raises `NodeMisbehaviourError` naming the node for anything that does not verify; the
        verified position is then dropped (the next call starts again from the pinned genesis).
        """
        try:
            return self._follow()
        except NodeMisbehaviourError:
            self._head, self._ledger, self._headers = None, None, {}
            raise

    def load_genesis(self) -> tuple[TrustedHead, PatientLedger]:
        """The pinned genesis, from the public route (checked against the pin, or pinned now)."""
        if self._ledger is None or self._head is None:
            # Public (the patient may not be registered yet): no signed request, hence no challenge.
            answer = self._call(
                "GET", "/v1/proofs/genesis", None, {"Accept": "application/json"}, RESPONSE_BYTES_MAX
            )
            try:
                genesis = decode_genesis(
                    base64.b64decode(answer["genesis"], validate=True), max_bytes=GENESIS_BYTES_MAX
                )
            except (KeyError, TypeError, ValueError, CodecError):
                raise self._lie("genesis", "sent a genesis that does not decode") from None
            if self.genesis_hash is None:
                self.genesis_hash = genesis.hash()  # first use: the caller should keep it
            try:
                head = verify_genesis(genesis, self.genesis_hash)
            except LightClientError as exc:
                raise self._lie(exc.what, f"serves another network's genesis: {exc.message}") from None
            self._head, self._ledger, self._chain_id = (
                head,
                PatientLedger(genesis, self.patient_id),
                genesis.chain_id,
            )
        return self._head, self._ledger

    def _follow(self) -> PatientLedger:
        head, ledger = self.load_genesis()
        while True:
            page = self._request("GET", f"/v1/proofs/blocks?from={head.height + 1}")
            try:
                items, latest = list(page["blocks"]), int(page["latest_height"])
            except (KeyError, TypeError, ValueError):
                raise self._lie("proof page", "sent a block page that does not parse") from None
            for item in items:
                block, commit, next_validators = self._decode_block_item(item)
                voters = head.validators  # the set that must certify this block
                try:
                    head, certified = verify_next_block(head, block, commit, next_validators)
                    ledger.apply_block(certified, voters)
                except LightClientError as exc:
                    raise self._lie(
                        exc.what, f"served block {head.height + 1}, which does not verify: {exc.message}"
                    ) from None
                except LedgerVerificationError as exc:
                    raise self._lie("patient txs", exc.message) from None
                self._headers[block.header.height] = block.header
                self._head = head
            if not items or head.height >= latest:
                return ledger

    def _decode_raw(self, wire_type: type[W], item: Any, key: str, max_bytes: int = GENESIS_BYTES_MAX) -> W:
        try:
            return decode(wire_type, base64.b64decode(item[key], validate=True), max_bytes=max_bytes)
        except (KeyError, TypeError, ValueError, CodecError):
            raise self._lie(key, f"sent a {wire_type.__name__} that does not decode") from None

    def _decode_block_item(self, item: Any) -> tuple[Block, Commit, ValidatorSet | None]:
        block = self._decode_raw(Block, item, "block", BLOCK_BYTES_MAX)
        commit = self._decode_raw(Commit, item, "commit", CONSENSUS_MESSAGE_BYTES_MAX)
        announced = item.get("next_validators", "") if isinstance(item, dict) else ""
        validators = (
            self._decode_raw(ValidatorSet, item, "next_validators", CONSENSUS_MESSAGE_BYTES_MAX)
            if announced
            else None
        )
        return block, commit, validators

    def prove_tx(self, tx_id: bytes) -> int:
        """Check one tx by its Merkle inclusion proof in a verified block; returns its height."""
        self.sync()
        reply = self._request("GET", f"/v1/proofs/txs/{tx_id.hex()}")
        try:
            height = int(reply["height"])
            raw = base64.b64decode(reply["tx"], validate=True)
            proof = MerkleProof(
                index=int(reply["proof"]["index"]),
                leaf_count=int(reply["proof"]["leaf_count"]),
                path=tuple(bytes.fromhex(p) for p in reply["proof"]["path"]),
            )
        except (KeyError, TypeError, ValueError):
            raise self._lie("tx inclusion proof", "sent a tx proof that does not parse") from None
        header = self._headers.get(height)
        if header is None:
            raise self._lie("tx inclusion proof", f"proves a tx in block {height}, which it did not serve")
        try:
            proven = verify_tx_inclusion(header, raw, proof)
        except LightClientError as exc:
            raise self._lie(exc.what, exc.message) from None
        if proven != tx_id:
            raise self._lie("tx inclusion proof", "proved another tx than the one asked for")
        return height

    def _cross_check(
        self,
        what: str,
        fetch: Callable[[], dict[K, bytes]],
        verified: Callable[[PatientLedger], dict[K, bytes]],
    ) -> PatientLedger:
        """Compare the node's plain answer with the verified ledger; a liar is named.

        The answer is fetched before the chain is followed, so the ledger is never older than it.
        """
        claimed: dict[K, bytes] = {}
        proven: dict[K, bytes] = {}
        for _ in range(CROSS_CHECK_ATTEMPTS):
            claimed = fetch()
            ledger = self.sync()
            proven = verified(ledger)
            if claimed == proven:
                return ledger
        forged = [k for k in claimed if k not in proven]
        hidden = [k for k in proven if k not in claimed]
        one = f"an {what}" if what[0] in "aeiou" else f"a {what}"
        if forged:
            raise self._lie(what, f"served {one} that is not on the chain")
        if hidden:
            raise self._lie(what, f"hid {one} that is on the chain")
        raise self._lie(what, f"served {one} that differs from the chain")

    def _fetch_patient_items(
        self, suffix: str, field: str, wire_type: type[W], key: Callable[[W], K]
    ) -> dict[K, bytes]:
        items: dict[K, bytes] = {}
        while True:
            sep = "&" if "?" in suffix else "?"
            paged = f"{suffix}{sep}start={len(items)}&limit={PAGE_SIZE}"
            try:
                page = self._request("GET", self._patient_path(paged))
            except PatientClientError as exc:
                if exc.status == 404:  # the node says: no such patient (checked against the ledger)
                    return items
                raise
            if not isinstance(page, dict) or not isinstance(page.get(field, []), list):
                raise self._lie(wire_type.__name__, "sent a list that does not parse")
            before = len(items)
            for item in page.get(field, []):
                value = self._decode(wire_type, item)
                items[key(value)] = encode(value)
            total = page.get("total")
            # A page that adds nothing ends the listing (a node repeating itself cannot loop us).
            if len(items) == before or not isinstance(total, int) or len(items) >= total:
                return items

    # -- reads (every answer checked against the verified ledger) ----------------------------

    def _verified_institutions(self) -> PatientLedger:
        def fetch() -> dict[bytes, bytes]:
            reply = self._request("GET", "/v1/health/institutions")
            try:
                items = reply["institutions"]
                return {
                    bytes.fromhex(i["sign_key"]): json.dumps(
                        [i["name"], i["role"], i["enc_key"].lower()], sort_keys=True
                    ).encode()
                    for i in items
                }
            except (KeyError, TypeError, ValueError, AttributeError):
                raise self._lie("institution key", "sent an institution list that does not parse") from None

        def verified(ledger: PatientLedger) -> dict[bytes, bytes]:
            return {
                k: json.dumps([i.name, i.role, i.enc_key.hex()], sort_keys=True).encode()
                for k, i in ledger.institutions.items()
            }

        return self._cross_check("institution key", fetch, verified)

    def institution_names(self) -> dict[bytes, str]:
        """Registered institutions by signing key → name (from the pinned genesis)."""
        return {k: i.name for k, i in self._verified_institutions().institutions.items()}

    def institution_enc_key(self, sign_key: bytes) -> bytes:
        institution = self._verified_institutions().institutions.get(sign_key)
        if institution is None:
            raise PatientClientError("the requester is not a registered institution")
        return institution.enc_key

    def get_patient(self) -> PatientState | None:
        def fetch() -> dict[bytes, bytes]:
            try:
                item = self._request("GET", self._patient_path())
            except PatientClientError as exc:
                if exc.status == 404:
                    return {}
                raise
            patient = self._decode(PatientState, item)
            return {patient.patient_id: encode(patient)}

        def verified(ledger: PatientLedger) -> dict[bytes, bytes]:
            patient = ledger.get_patient()
            return {} if patient is None else {patient.patient_id: encode(patient)}

        return self._cross_check("patient", fetch, verified).get_patient()

    def list_records(self) -> list[RecordState]:
        ledger = self._cross_check(
            "record",
            lambda: self._fetch_patient_items("/records", "records", RecordState, lambda r: r.record_id),
            lambda ledger: {r.record_id: encode(r) for r in ledger.list_records()},
        )
        return ledger.list_records()

    def read_records(self) -> list[LocalRecord]:
        """Every record, decrypted here with the patient's key (the commitment is checked)."""
        names = self.institution_names()
        result = []
        for record in self.list_records():
            try:
                result.append(
                    LocalRecord(record, names.get(record.author), open_record(record, self.identity))
                )
            except (DecryptionError, RecordVerificationError) as exc:
                result.append(LocalRecord(record, names.get(record.author), None, exc.message))
        return result

    def list_inquiries(self, status: str | None = None) -> list[InquiryState]:
        ledger = self._cross_check(
            "inquiry",
            lambda: self._fetch_patient_items(
                "/inquiries", "inquiries", InquiryState, lambda i: i.inquiry_id
            ),
            lambda ledger: {i.inquiry_id: encode(i) for i in ledger.list_inquiries()},
        )
        return [i for i in ledger.list_inquiries() if status is None or i.status == status]

    def inquiry_reason(self, inquiry: InquiryState) -> str | None:
        """The inquiry's reason, opened here (sealed on the ledger); None if not sealed for this key."""
        try:
            return open_reason(inquiry, self.identity)
        except ReasonUnreadableError:
            return None

    def list_pending_inquiries(self) -> list[InquiryState]:
        return self.list_inquiries(INQUIRY_OPEN)

    def list_grants(self) -> list[GrantState]:
        ledger = self._cross_check(
            "grant",
            lambda: self._fetch_patient_items("/grants", "grants", GrantState, lambda g: g.grant_id),
            lambda ledger: {g.grant_id: encode(g) for g in ledger.list_grants()},
        )
        return ledger.list_grants()

    def audit(self) -> list[AuditEvent]:
        """The full audit trail: inquiries, decisions, revocations, reads, representative changes."""
        ledger = self._cross_check(
            "audit event",
            lambda: self._fetch_patient_items(
                "/audit", "events", AuditEvent, lambda e: (e.event_id, e.event)
            ),
            lambda ledger: {(e.event_id, e.event): encode(e) for e in ledger.list_audit_events()},
        )
        return ledger.list_audit_events()

    def find_inquiry(self, prefix: str) -> InquiryState:
        """The inquiry whose id (hex) starts with `prefix` (unique)."""
        return _unique(self.list_inquiries(), prefix, lambda i: i.inquiry_id, "inquiry")

    def find_grant(self, prefix: str) -> GrantState:
        return _unique(self.list_grants(), prefix, lambda g: g.grant_id, "grant")

    def preview_grant(self, inquiry_id: bytes, terms: GrantTerms | None = None) -> GrantPreview:
        """What granting would share: the whole scope in words and the exact records re-sealed.

        `terms` (`client.compute_grant_terms`): the patient's narrowing of the inquiry (fewer
        types, a shorter window, an earlier expiry); the grant is then on those terms, for the
        records already shared and for every record it opens later.
        Raises `ScopeNotShowableError` for a scope that cannot be fully shown (then do not grant).
        """
        self._verified_institutions()
        inquiry = next((i for i in self.list_inquiries() if i.inquiry_id == inquiry_id), None)
        if inquiry is None:
            raise PatientClientError("no such inquiry for this patient", status=404)
        ledger = self.sync()
        reason = self.inquiry_reason(inquiry)
        if reason is None:
            patient = ledger.get_patient()
            if patient is not None and patient.sign_key == self.identity.public.sign_key:
                # Sealed for the patient by the rules: not opening is something we cannot show.
                raise ScopeNotShowableError(
                    "the inquiry's reason does not open with your key", problem=PROBLEM_REASON_UNREADABLE
                )
            reason = REASON_FOR_PATIENT_ONLY  # a representative holds no key to it (docs/health.md)
        return compute_grant_preview(
            ledger,
            inquiry,
            reason=reason,
            signer_enc_key=self.identity.public.enc_key,
            open_verified=lambda record: open_verified_record(record, self.identity),
            terms=terms,
        )

    def verify(self) -> Verification:
        """Check the whole audit trail (and every other listing) against the chain; what was checked.

        Every list the node serves is compared with the ledger rebuilt from certified blocks, and
        each audit event's tx is proven again by its Merkle inclusion proof in a verified header.
        """
        self.institution_names()
        self.get_patient()
        records = self.list_records()
        inquiries = self.list_inquiries()
        grants = self.list_grants()
        self.list_records_requests()  # patient rights (issue 14): checked like every listing
        self.list_amendments()
        events = self.audit()
        witnesses = self.check_freshness()
        proofs = 0
        for event_id in dict.fromkeys(e.event_id for e in events):
            try:
                height = self.prove_tx(event_id)
            except NodeMisbehaviourError:
                raise
            except PatientClientError as exc:
                if exc.status != HTTP_NOT_FOUND:
                    raise
                # The tx is in a block this node served and we verified: it has its proof.
                raise self._lie(
                    "tx inclusion proof", "has no proof of an audited tx that its own certified blocks hold"
                ) from None
            if not any(e.event_id == event_id and e.height == height for e in events):
                raise self._lie(
                    "tx inclusion proof", "proved an audited tx at another height than its event's"
                )
            proofs += 1
        ledger, head = self.sync(), self._head
        assert head is not None  # set by sync
        assert self.genesis_hash is not None
        return Verification(
            node_url=self.url,
            chain_id=head.chain_id,
            genesis_hash=self.genesis_hash,
            height=head.height,
            time_ms=head.time_ms,
            blocks=ledger.blocks_checked,
            txs=ledger.txs_checked,
            validators=len(head.validators),
            validator_set_changes=head.set_changes,
            patient_txs=len(ledger.txs),
            records=len(records),
            inquiries=len(inquiries),
            grants=len(grants),
            audit_events=len(events),
            inclusion_proofs=proofs,
            witnesses=witnesses,
        )

    # -- signed actions ----------------------------------------------------------------------

    def check_freshness(self) -> int:
        """Ask each witness node for the block after our verified head; returns the witnesses asked.

        A node can serve a true but old chain (withhold the block with a new inquiry or a
        revocation). If a witness proves a block beyond what this node served (certified by the
        set we trust), this node must serve up to that height too: it is asked again, a little
        later each time (an honest node may commit a moment after the witness), and named if it
        still does not. The target is the witness's block, fixed once: a chain that keeps moving
        does not make an honest node look behind. A witness whose block does not verify is named.
        """
        for witness_url in self.witnesses:
            witness = PatientClient(
                witness_url,
                self.identity,
                patient_id=self.patient_id,
                genesis_hash=self.genesis_hash,
                timeout_s=self.timeout_s,
                insecure_http=self._insecure_http,
                ca_file=self._ca_file,
            )
            self.sync()
            head = self._head
            assert head is not None  # set by sync
            page = witness._request("GET", f"/v1/proofs/blocks?from={head.height + 1}&limit=1")
            items = page.get("blocks") if isinstance(page, dict) else None
            if not isinstance(items, list) or not items:
                continue  # the witness knows no later block either
            block, commit, next_validators = witness._decode_block_item(items[0])
            try:
                verify_next_block(head, block, commit, next_validators)
            except LightClientError as exc:
                raise witness._lie(
                    exc.what, f"served block {head.height + 1}, which does not verify"
                ) from None
            target = head.height + 1
            for attempt in range(CROSS_CHECK_ATTEMPTS):
                if attempt:
                    time.sleep(FRESHNESS_RETRY_S * 2 ** (attempt - 1))
                self.sync()
                if self._head is not None and self._head.height >= target:
                    break
            else:
                raise self._lie(
                    "freshness",
                    f"is behind the chain: it does not serve block {target}, which {witness_url} "
                    "proves (a lagging or a withholding node)",
                )
        return len(self.witnesses)

    def check_before_signing(self) -> PatientLedger:
        """Nothing is signed on a node's word: every listing it serves must match the chain first.

        A node hiding a grant, forging an inquiry or substituting a key is named here, before any
        decision is signed through it.
        """
        self._verified_institutions()
        self.get_patient()
        self.list_records()
        self.list_inquiries()
        self.list_grants()
        self.audit()
        self.check_freshness()
        return self.sync()

    def _submit(self, signed: SignedTx) -> Submitted:
        """Submit a locally signed tx; its commit and outcome are taken from the verified chain."""
        _, raw, tx_id = signed
        reply = self._request(
            "POST", f"/v1/txs?wait_ms={COMMIT_WAIT_MS}", {"tx": base64.b64encode(raw).decode()}
        )
        if reply.get("status") != "committed":
            raise PatientClientError(
                f"transaction {tx_id.hex()} was not committed within {COMMIT_WAIT_MS} ms"
            )
        fact = self.sync().txs.get(tx_id)
        if fact is None:
            raise self._lie(
                "commit", f"says transaction {tx_id.hex()} committed, and no verified block holds it"
            )
        if not fact.ok:
            raise PatientClientError(
                f"the ledger refused the transaction ({fact.rule})", status=422, rule=fact.rule
            )
        return Submitted(tx_id, fact.height)

    def register(self) -> Submitted:
        return self._submit(build_register_patient(self.identity, chain_id=self.chain_id))

    def grant(
        self, inquiry_id: bytes, *, preview: GrantPreview | None = None, terms: GrantTerms | None = None
    ) -> Submitted:
        """Grant an open inquiry, re-sealing exactly the records of its preview, and nothing else.

        `preview`: what the patient was shown; if the grant would now share anything else (a record
        was added or the inquiry changed), `PreviewChangedError` and nothing is signed. Without one,
        the preview is computed here (a scope that cannot be fully shown is refused all the same).
        `terms`: a narrowing (`preview_grant`); a preview's own terms are used when it has them.
        """
        self.check_before_signing()
        if preview is not None and terms is None:
            terms = preview.terms
        fresh = self.preview_grant(inquiry_id, terms)
        if preview is not None and dataclasses.replace(fresh, height=0) != dataclasses.replace(
            preview, height=0
        ):
            raise PreviewChangedError(
                "what this grant would share changed since it was shown: review it again"
            )
        enc_key = self.institution_enc_key(fresh.requester)
        ledger = self.sync()
        records = [ledger.get_record(record_id) for record_id in fresh.record_ids]
        if any(r is None for r in records):  # the ledger only grows: a previewed record cannot vanish
            raise PreviewChangedError("a previewed record is no longer on the verified ledger")
        record_keys = reseal_record_keys([r for r in records if r is not None], self.identity, enc_key)
        if tuple(k.record_id for k in record_keys) != fresh.record_ids:
            raise AssertionError("the re-sealed keys differ from the previewed records")
        if len(record_keys) <= GRANT_RECORDS_MAX:
            return self._submit(
                build_grant(self.identity, inquiry_id, record_keys, chain_id=self.chain_id, terms=terms)
            )
        # Too many for one tx (ADR 0012): the manifest names exactly these records; once it is
        # committed (its parts are judged against it), the parts go in one batch.
        manifest, parts = build_grant_in_parts(
            self.identity, inquiry_id, record_keys, chain_id=self.chain_id, terms=terms
        )
        done = self._submit(manifest)
        self._submit_batch(parts)
        return done

    def _submit_batch(self, batch: list[SignedTx]) -> list[Submitted]:
        """Submit locally signed txs at once (in order); each outcome from the verified chain."""
        submitted: list[Submitted] = []
        for start in range(0, len(batch), SUBMIT_BATCH_TXS_MAX):
            chunk = batch[start : start + SUBMIT_BATCH_TXS_MAX]
            txs = [base64.b64encode(raw).decode() for _, raw, _ in chunk]
            reply = self._request("POST", f"/v1/txs/batch?wait_ms={COMMIT_WAIT_MS}", {"txs": txs})
            results = reply.get("results") if isinstance(reply, dict) else None
            if not isinstance(results, list) or len(results) != len(chunk):
                raise self._lie("commit", "answered a batch of transactions with another number of results")
            if any(not isinstance(r, dict) or r.get("status") != "committed" for r in results):
                raise PatientClientError(
                    f"{len(chunk)} transactions were not all committed within {COMMIT_WAIT_MS} ms"
                )
            ledger = self.sync()
            for _, _, tx_id in chunk:
                fact = ledger.txs.get(tx_id)
                if fact is None:
                    raise self._lie(
                        "commit", f"says transaction {tx_id.hex()} committed, and no verified block holds it"
                    )
                if not fact.ok:
                    raise PatientClientError(
                        f"the ledger refused the transaction ({fact.rule})", status=422, rule=fact.rule
                    )
                submitted.append(Submitted(tx_id, fact.height))
        return submitted

    def complete_grant(self, grant_id: bytes) -> list[Submitted]:
        """Send the parts of a grant in parts that are not on the ledger yet (a client that stopped
        between the manifest and its last part); returns what was sent (nothing if complete).

        The declared records are rebuilt on this device: the covered, verified records this signer
        can re-seal, as the preview chose them at some height before the manifest's block. Each
        candidate height is tried against the manifest's digests; a part is sent only if its
        records are exactly the declared ones, else nothing is signed (revoke, and ask again).
        A standing consent's re-sealing (`health.consent_manifest`, ADR 0017, amendment) is
        resumed the same way; its records are those `preview_consent_records` chose after the
        consent's block: covered by its scope and terms and not sealed for the insurer.
        """
        self.check_before_signing()
        ledger = self.sync()
        grant = next((g for g in ledger.list_grants() if g.grant_id == grant_id), None)
        if grant is None:
            raise PatientClientError("no such grant for this patient", status=404)
        parts = ledger.get_grant_parts(grant_id)
        if parts is None or parts.is_complete:
            return []
        if grant.granted_by != self.identity.public.sign_key:
            raise PatientClientError("only the key that signed the grant's manifest may send its parts")
        if not is_grant_live(grant, ledger.time_ms):
            raise PatientClientError("the grant is revoked or expired: its parts are refused")
        enc_key = self.identity.public.enc_key
        terms = ledger.get_consent_terms(grant_id)
        if terms is None:
            covered = [r for r in ledger.list_records() if r.height < grant.height]
        else:  # as `preview_consent_records` chose them, at a height after the consent's block
            covered = [
                r
                for r in ledger.list_records()
                if ledger.is_consent_covering(terms, r) and grant.grantee_enc_key not in r.envelope.readers
            ]
        candidates = sorted(
            (
                r
                for r in covered
                if is_covered(grant.scope, r.record_id, r.record_type, r.time_ms)
                and enc_key in r.envelope.readers
                and open_verified_record(r, self.identity) is not None
            ),
            key=lambda r: r.record_id,
        )
        for height in sorted({r.height for r in candidates} | {0}, reverse=True):
            chosen = [r for r in candidates if r.height <= height]
            ids = [r.record_id for r in chosen]
            declared = [
                ids[i * GRANT_PART_RECORDS_MAX : (i + 1) * GRANT_PART_RECORDS_MAX]
                for i in range(len(parts.part_digests))
            ]
            if len(ids) == parts.record_count and all(
                compute_grant_part_digest(grant.inquiry_id, i, tuple(part)) == digest
                for i, (part, digest) in enumerate(zip(declared, parts.part_digests, strict=True))
            ):
                break
        else:
            again = "give a new consent" if terms is not None else "ask the institution for a new inquiry"
            raise PatientClientError(
                f"the records this grant declared cannot be rebuilt on this device: revoke it and {again}"
            )
        missing = [i for i in range(len(parts.part_digests)) if not parts.is_part_received(i)]
        grantee_enc_key = self.institution_enc_key(grant.grantee)
        by_id = {r.record_id: r for r in chosen}
        signed = [
            build_grant_part(
                self.identity,
                grant_id,
                i,
                reseal_record_keys([by_id[r] for r in declared[i]], self.identity, grantee_enc_key),
                chain_id=self.chain_id,
            )
            for i in missing
        ]
        return self._submit_batch(signed)

    def get_grant_progress(self, grant_id: bytes) -> tuple[int, int]:
        """(records whose keys the ledger holds, records the grant declared), verified.

        A one-tx grant is complete at once; a grant in parts is complete when every part arrived.
        """
        ledger = self.sync()
        grant = next((g for g in ledger.list_grants() if g.grant_id == grant_id), None)
        if grant is None:
            raise PatientClientError("no such grant for this patient", status=404)
        parts = ledger.get_grant_parts(grant_id)
        if parts is None:
            return len(grant.record_keys), len(grant.record_keys)
        return parts.keys_received, parts.record_count

    def deny(self, inquiry_id: bytes) -> Submitted:
        self.check_before_signing()
        if not any(i.inquiry_id == inquiry_id for i in self.list_pending_inquiries()):
            raise PatientClientError("no such open inquiry for this patient", status=404)
        return self._submit(build_deny(self.identity, inquiry_id, chain_id=self.chain_id))

    def revoke(self, grant_id: bytes) -> Submitted:
        self.check_before_signing()
        if not any(g.grant_id == grant_id for g in self.list_grants()):
            raise PatientClientError("no such grant for this patient", status=404)
        return self._submit(build_revoke(self.identity, grant_id, chain_id=self.chain_id))

    def add_representative(self, representative_sign_key: bytes) -> Submitted:
        self.check_before_signing()
        return self._submit(
            build_add_representative(
                self.identity, self.patient_id, representative_sign_key, chain_id=self.chain_id
            )
        )

    def remove_representative(self, representative_sign_key: bytes) -> Submitted:
        self.check_before_signing()
        return self._submit(
            build_remove_representative(
                self.identity, self.patient_id, representative_sign_key, chain_id=self.chain_id
            )
        )

    # -- research (issue 13, ADR 0019): studies joined, opt-in and withdrawal ----------------

    def list_studies(self) -> list[tuple[StudyState, StudyMembership | None]]:
        """Every study on the chain and whether this patient is in it, from the verified ledger
        (the study's title and ethics approval are what the patient decides on)."""
        self.audit()  # the trail (joins and leaves) as the node serves it equals the verified one
        return self.sync().list_studies()

    def list_queries_covering(self) -> list[QueryState]:
        """The queries recorded while this patient was a member of their study (verified)."""
        self.audit()
        return self.sync().list_queries_covering()

    def join_study(self, study_id: bytes) -> Submitted:
        """Opt in: from this block on, answers to the study's queries may count this patient.
        Joining is visible to the network (ADR 0019)."""
        self.check_before_signing()
        if not any(s.study_id == study_id for s, _ in self.sync().list_studies()):
            raise PatientClientError("no such study on the chain", status=404)
        return self._submit(
            build_join_study(self.identity, study_id, self.patient_id, chain_id=self.chain_id)
        )

    def leave_study(self, study_id: bytes) -> Submitted:
        """Withdraw: from this block on, no institution that has not answered yet counts this patient."""
        self.check_before_signing()
        return self._submit(
            build_leave_study(self.identity, study_id, self.patient_id, chain_id=self.chain_id)
        )

    # -- claims (issue 12, ADR 0017): standing consents and claims ------------------------------

    def preview_consent_records(
        self,
        insurer: bytes,
        *,
        record_types: Iterable[str],
        authors: Iterable[bytes],
        labels: Iterable[str] = (),
        from_ms: int = 0,
        to_ms: int = 2**64 - 1,
    ) -> list[RecordState]:
        """The patient's records already on the verified ledger that a consent with these terms
        covers and whose keys signing it re-seals for `insurer` (ADR 0017, amendment): of the
        types, by the authors, in the window, a labelled record only if every label is named (of
        its latest version: `policy.is_consent_covering`, as the rules judge the parts), that
        this device opens and verifies, and not already sealed for the insurer. Sorted by id."""
        ledger = self.sync()
        insurer_enc_key = self.institution_enc_key(insurer)
        consent = make_consent(
            self.patient_id,
            insurer,
            record_types=record_types,
            authors=authors,
            labels=labels,
            from_ms=from_ms,
            to_ms=to_ms,
            expires_ms=0,
        )
        scope = Scope(consent.record_types, (), consent.from_ms, consent.to_ms)
        terms = ConsentTerms(b"", consent.authors, consent.labels)
        enc_key = self.identity.public.enc_key
        return sorted(
            (
                r
                for r in ledger.list_records()
                if is_covered(scope, r.record_id, r.record_type, r.time_ms)
                and ledger.is_consent_covering(terms, r)
                and insurer_enc_key not in r.envelope.readers
                and enc_key in r.envelope.readers
                and open_verified_record(r, self.identity) is not None
            ),
            key=lambda r: r.record_id,
        )

    def grant_consent(
        self,
        insurer: bytes,
        *,
        record_types: Iterable[str],
        authors: Iterable[bytes],
        labels: Iterable[str] = (),
        from_ms: int = 0,
        to_ms: int = 2**64 - 1,
        expires_ms: int,
        existing: Sequence[bytes] | None = None,
        reseal_existing: bool = True,
    ) -> Submitted:
        """Give `insurer` (its signing key) a standing consent for payment: from its block on, every
        new record of `record_types` by `authors` in [from_ms, to_ms] is sealed for it by the
        authoring node, until `expires_ms` or a revocation (`revoke`). A labelled record only if
        every one of its labels is in `labels`. Show the patient the whole scope first (the CLI:
        `node/cli/patient_claims.compute_consent_lines`), with how many records already on the
        ledger it covers (`preview_consent_records`).

        Once the consent is committed, the keys of the records already in its scope are re-sealed
        for the insurer (`health.consent_manifest` and its `health.grant_part`s, ADR 0017,
        amendment). `existing`: the ids the patient was shown; if the records to re-seal are now
        others, `PreviewChangedError` and nothing is signed. `reseal_existing` False: only new
        records (nothing already on the ledger is re-sealed). Returns the consent's tx."""
        self.check_before_signing()
        names = self.institution_names()
        if insurer not in names:
            raise PatientClientError("no registered institution has this key", status=404)
        terms: dict[str, Any] = {
            "record_types": tuple(record_types),
            "authors": tuple(authors),
            "labels": tuple(labels),
            "from_ms": from_ms,
            "to_ms": to_ms,
        }
        shown = self.preview_consent_records(insurer, **terms) if reseal_existing else []
        if existing is not None and [r.record_id for r in shown] != sorted(existing):
            raise PreviewChangedError(
                "the records this consent would re-seal changed since they were shown: review it again"
            )
        consent = make_consent(self.patient_id, insurer, expires_ms=expires_ms, **terms)
        done = self._submit(build_grant_consent(self.identity, consent, chain_id=self.chain_id))
        # Records committed since the preview, up to the consent's block, were sealed by no node for
        # the insurer: re-sealed too (those after its block were sealed by their nodes).
        records = self.preview_consent_records(insurer, **terms) if reseal_existing else []
        if records:
            record_keys = reseal_record_keys(records, self.identity, self.institution_enc_key(insurer))
            manifest, parts = build_consent_in_parts(
                self.identity, done.tx_id, record_keys, chain_id=self.chain_id
            )
            self._submit(manifest)
            self._submit_batch(parts)
        return done

    def list_claims(self) -> list[ClaimState]:
        """The patient's claims in filing order (checked against the chain)."""
        ledger = self._cross_check(
            "claim",
            lambda: self._fetch_patient_items("/claims", "claims", ClaimState, lambda c: c.claim_id),
            lambda ledger: {c.claim_id: encode(c) for c in ledger.list_claims()},
        )
        return ledger.list_claims()

    def claim_views(self) -> list[ClaimView]:
        """Each claim with its Claim and decisions opened here, and which records each insurer
        read for it (from the verified audit trail)."""
        found = self.list_claims()
        ledger = self.sync()
        events = ledger.list_audit_events()
        views: list[ClaimView] = []
        for claim in found:
            try:
                opened = open_claim_validated(claim, self.identity)
                resource: dict[str, Any] | None = opened.resource
                claim_text = opened.plaintext
            except ClaimUnreadableError:
                resource, claim_text = None, b""
            decisions: list[tuple[ClaimDecision, dict[str, Any] | None]] = []
            texts: list[bytes] = []
            for decision in ledger.get_claim_decisions(claim):
                try:
                    response = open_claim_response_validated(decision, self.identity)
                    decisions.append((decision, response.resource))
                    texts.append(response.plaintext)
                except ClaimUnreadableError:
                    decisions.append((decision, None))
                    texts.append(b"")
            reads = tuple(claims.get_claim_reads(events, claim.claim_id))
            views.append(ClaimView(claim, resource, tuple(decisions), reads, claim_text, tuple(texts)))
        return views

    # -- patient rights (issue 14, ADR 0014): records requests and amendments ------------------

    def list_records_requests(self) -> list[RecordsRequestState]:
        """The patient's records requests, in the order filed (checked against the chain)."""
        ledger = self._cross_check(
            "records request",
            lambda: self._fetch_patient_items(
                "/records-requests", "requests", RecordsRequestState, lambda r: r.request_id
            ),
            lambda ledger: {r.request_id: encode(r) for r in ledger.list_records_requests()},
        )
        return ledger.list_records_requests()

    def records_request_status(self, request: RecordsRequestState) -> str:
        """open, closed or overdue, by the latest verified block time (the validators' clock)."""
        return compute_request_status(request, self.sync().time_ms)

    def list_amendments(self) -> list[AmendmentState]:
        """The patient's amendment requests, in the order filed (checked against the chain)."""
        ledger = self._cross_check(
            "amendment request",
            lambda: self._fetch_patient_items(
                "/amendments", "amendments", AmendmentState, lambda a: a.amendment_id
            ),
            lambda ledger: {a.amendment_id: encode(a) for a in ledger.list_amendments()},
        )
        return ledger.list_amendments()

    def find_records_request(self, prefix: str) -> RecordsRequestState:
        return _unique(self.list_records_requests(), prefix, lambda r: r.request_id, "records request")

    def find_amendment(self, prefix: str) -> AmendmentState:
        return _unique(self.list_amendments(), prefix, lambda a: a.amendment_id, "amendment request")

    def amendment_texts(self, amendment: AmendmentState) -> AmendmentTexts:
        """What was asked, the refusal's reason and the statement, opened here (None: not readable
        with this key, e.g. a representative's)."""
        ledger = self.sync()

        def attempt(open_text: Callable[[], str | None]) -> str | None:
            try:
                return open_text()
            except AmendmentTextUnreadableError:
                return None

        statement: str | None = None
        record = ledger.get_record(amendment.record_id)
        if amendment.statement and record is not None:
            try:
                key = get_verified_record_key(record, self.identity)
            except (DecryptionError, RecordVerificationError):
                key = None
            if key is not None:
                statement = attempt(lambda: open_statement(amendment, key))
        return AmendmentTexts(
            text=attempt(lambda: open_request_text(amendment, self.identity)),
            refusal_reason=attempt(lambda: open_refusal_reason(amendment, self.identity)),
            statement=statement,
        )

    def request_records(
        self,
        institution: bytes,
        *,
        record_types: tuple[str, ...] = (),
        from_ms: int = 0,
        to_ms: int = UINT_MAX,
    ) -> Submitted:
        """Ask `institution` (its signing key) for the records it holds: the 30-day clock starts."""
        ledger = self.check_before_signing()
        if institution not in ledger.institutions:
            raise PatientClientError("no registered institution has this key", status=404)
        return self._submit(
            build_request_records(
                self.identity,
                self.patient_id,
                institution,
                record_types=record_types,
                from_ms=from_ms,
                to_ms=to_ms,
                chain_id=self.chain_id,
            )
        )

    def request_amendment(self, record_id: bytes, text: str) -> Submitted:
        """Ask a record's author to correct it; `text` (what is wrong) is sealed for both of you."""
        text = validate_amendment_text(text)
        ledger = self.check_before_signing()
        record, patient = ledger.get_record(record_id), ledger.get_patient()
        if record is None or patient is None:
            raise PatientClientError("no such record of this patient", status=404)
        if record.superseded_by:
            raise PatientClientError("the record was superseded: ask to amend its latest version", status=409)
        author = ledger.institutions.get(record.author)
        if author is None:
            raise PatientClientError("the record's author is not a registered institution", status=409)
        return self._submit(
            build_request_amendment(
                self.identity,
                self.patient_id,
                record_id,
                text,
                author=record.author,
                patient_enc_key=patient.enc_key,
                author_enc_key=author.enc_key,
                chain_id=self.chain_id,
            )
        )

    def disagree(self, amendment_id: bytes, text: str) -> Submitted:
        """Attach a statement of disagreement to a refused amendment: every reader of the record
        (author, patient, today's and future grantees) reads it with the record."""
        text = validate_amendment_text(text, "statement")
        ledger = self.check_before_signing()
        self.list_amendments()
        amendment = next((a for a in ledger.list_amendments() if a.amendment_id == amendment_id), None)
        if amendment is None:
            raise PatientClientError("no such amendment request of this patient", status=404)
        if amendment.status != AMENDMENT_REFUSED or amendment.statement:
            raise PatientClientError(
                "a statement of disagreement answers a refused request, once", status=409
            )
        record = ledger.get_record(amendment.record_id)
        if record is None:
            raise self._lie("record", "has no record the verified amendment request cites")
        try:
            record_key = get_verified_record_key(record, self.identity)
        except DecryptionError:
            raise PatientClientError(
                "this key cannot read the record (a representative holds no record key): the patient "
                "must write the statement"
            ) from None
        statement = seal_statement(text, record_key=record_key, amendment=amendment)
        return self._submit(build_disagree(self.identity, amendment, statement, chain_id=self.chain_id))

    def read_attachment(self, record_id: bytes, blob_id: bytes) -> bytes:
        """An attachment of one of the patient's records, fetched and decrypted on the device.

        The record and its attachment are taken from the verified ledger (not from the node's
        word); the manifest must hash to the blob id and each chunk to its hash in the manifest,
        else the node is named (`NodeMisbehaviourError`). See docs/adr/0013-attachment-blobs.md.
        """
        ledger = self.sync()
        record = ledger.get_record(record_id)
        ref = next((r for r in ledger.get_record_attachments(record_id) if r.blob_id == blob_id), None)
        if record is None or ref is None:
            raise PatientClientError(f"record {record_id.hex()[:16]} has no attachment {blob_id.hex()[:16]}")
        path = self._patient_path(f"/records/{record_id.hex()}/attachments/{blob_id.hex()}")
        try:
            manifest = decode_manifest(base64.b64decode(self._request("GET", path)["manifest"]), blob_id)
        except (KeyError, TypeError, ValueError, BlobError):
            raise self._lie("attachment", "sent a manifest that does not hash to the blob id") from None
        chunks: list[bytes] = []
        for index in range(manifest.chunks):
            try:
                data = base64.b64decode(self._request("GET", f"{path}/chunks/{index}")["data"], validate=True)
            except (KeyError, TypeError, ValueError):
                raise self._lie("attachment", f"sent a malformed chunk {index}") from None
            if len(data) != manifest.get_chunk_length(index) or (
                compute_chunk_hash(data) != manifest.chunk_hashes[index]
            ):
                raise self._lie("attachment", f"sent a chunk {index} that does not match its hash")
            chunks.append(data)
        return open_attachment(record, ref, self.identity, chunks)

    def subscribe_events(
        self,
        *,
        host: str,
        port: int,
        node_sign_key: bytes,
        node_enc_key: bytes,
        after: int = 0,
        prefix: str = DEFAULT_TOPIC_PREFIX,
    ) -> EventSubscription:
        """The patient's live events as published by the node with these keys (ADR 0015).

        The broker credentials and topic are derived here, on the device, from the patient's key
        and the node's public keys; gaps are read from this client's node (`list_events`), which
        may be unreachable for a while (a restart) without ending the subscription.
        """
        if not self._chain_id:
            self.load_genesis()
        username, password, topic = compute_patient_subscription(
            self.identity, self._chain_id, node_sign_key, node_enc_key, prefix
        )
        return EventSubscription(
            host=host,
            port=port,
            username=username,
            password=password,
            topic=topic,
            fetch=lambda cursor: self.list_events(cursor, PAGE_LIMIT),
            after=after,
        )

    def list_events(self, after: int = 0, limit: int = 100) -> tuple[list[dict[str, Any]], int]:
        """The patient's ledger events after number `after` (ADR 0015), and where to go on from.

        Events are kinds and ledger ids only; what they name is read (and verified) with the
        other calls. Continue with `after=` the second value, which moves past empty blocks too.
        """
        answer = self._request("GET", f"/v1/events?after={int(after)}&limit={int(limit)}")
        try:
            events, cursor = answer["events"], int(answer["next"])
        except (KeyError, TypeError, ValueError):
            raise self._lie("events", "sent a malformed event page") from None
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise self._lie("events", "sent a malformed event page")
        return events, cursor


T = TypeVar("T")


def _unique(items: list[T], prefix: str, key: Any, what: str) -> T:
    prefix = prefix.lower()
    matches = [item for item in items if key(item).hex().startswith(prefix)]
    if not prefix or len(matches) != 1:
        found = "no" if not matches else "more than one"
        raise PatientClientError(
            f"{found} {what} of this patient has an id starting with {prefix!r}", status=404
        )
    return matches[0]


def describe_audit(client: PatientClient) -> list[dict[str, Any]]:
    """The audit trail for people: who (institution name), what, when, for which purpose, where.

    Each entry: index, event, height, time_ms, actor (key hex), actor_name, purpose (of the inquiry
    or grant it concerns), subject_id, record_ids (hex), tx_id.
    """
    names = client.institution_names()
    patient = client.get_patient()
    inquiries = {i.inquiry_id: i for i in client.list_inquiries()}
    grants = {g.grant_id: g for g in client.list_grants()}
    entries = []
    for index, event in enumerate(client.audit()):
        purpose = ""
        if event.subject_id in inquiries:
            purpose = inquiries[event.subject_id].purpose
        elif event.subject_id in grants:
            purpose = grants[event.subject_id].purpose
        actor_name = names.get(event.actor)
        if actor_name is None and patient is not None:
            actor_name = "patient" if event.actor == patient.sign_key else "representative"
        entries.append(
            {
                "index": index,
                "event": event.event,
                "height": event.height,
                "time_ms": event.time_ms,
                "actor": event.actor.hex(),
                "actor_name": actor_name,
                "purpose": purpose,
                "subject_id": event.subject_id.hex(),
                "record_ids": [r.hex() for r in event.record_ids],
                "tx_id": event.event_id.hex(),
            }
        )
    return entries


def format_audit(entries: list[dict[str, Any]]) -> list[str]:
    """One line per audit entry (used by `medledger patient audit` and `medledger demo`)."""
    lines = [f"{'#':>3}  {'height':>6}  {'time (UTC)':<19}  {'event':<22} {'who':<14} {'purpose':<8} detail"]
    for e in entries:
        when = datetime.datetime.fromtimestamp(e["time_ms"] / 1000, tz=datetime.UTC).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        detail = f"{e['subject_id'][:12]}…" if e["subject_id"] else ""
        if len(e["record_ids"]) > AUDIT_RECORD_IDS_SHOWN:  # a grant part or a bulk read: counted
            first = e["record_ids"][0][:12]
            detail += f" {len(e['record_ids'])} records ({first}… and others; --json lists all)"
        elif e["record_ids"]:
            detail += f" records {', '.join(r[:12] + '…' for r in e['record_ids'])}"
        who = e["actor_name"] or e["actor"][:12]
        purpose = e["purpose"] or "-"
        lines.append(
            f"{e['index']:>3}  {e['height']:>6}  {when:<19}  {e['event']:<22} {who:<14} {purpose:<8} {detail}"
        )
    return lines


# -- the pinned genesis, kept beside the patient's key file -----------------------------------------

#: Suffix of the file, next to the key file, that holds the pinned genesis hash.
GENESIS_PIN_SUFFIX: Final = ".genesis"
GENESIS_PIN_BYTES_MAX: Final = 4096


class GenesisPinError(PatientClientError):
    """The pinned genesis cannot be read, or contradicts the one given."""

    code = "genesis_pin"


def get_genesis_pin_path(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + GENESIS_PIN_SUFFIX)


def load_genesis_pin(key_file: Path) -> bytes | None:
    """The genesis hash pinned for this key file, or None if none was recorded yet."""
    path = get_genesis_pin_path(key_file)
    try:
        raw = path.read_bytes()[:GENESIS_PIN_BYTES_MAX]
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise GenesisPinError(f"cannot read the pinned genesis {path}: {exc.strerror}") from None
    try:
        value = json.loads(raw)["genesis_hash"]
        pinned = bytes.fromhex(value)
    except (ValueError, KeyError, TypeError):
        raise GenesisPinError(f"{path} does not hold a genesis hash") from None
    if len(pinned) != HASH_SIZE:
        raise GenesisPinError(f"{path} does not hold a genesis hash")
    return pinned


def save_genesis_pin(key_file: Path, genesis_hash: bytes, chain_id: str = "") -> Path:
    """Record the pinned genesis hash beside the key file (mode 0600, never overwritten)."""
    path = get_genesis_pin_path(key_file)
    existing = load_genesis_pin(key_file)
    if existing is not None:
        if existing != genesis_hash:
            raise GenesisPinError(f"{path} already pins another genesis ({existing.hex()})")
        return path
    data = json.dumps({"genesis_hash": genesis_hash.hex(), "chain_id": chain_id}, indent=2) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(data)
    return path
