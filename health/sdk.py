"""The patient's client (SDK): talk to any node over HTTP with the patient's own keys.

Everything that needs the patient's private keys happens here, on the patient's device: records are
decrypted locally, grants re-seal record keys locally, and every decision is a transaction signed
locally and submitted to `POST /v1/txs`. Every read is a signed request (`medledger.health.auth`:
a fresh challenge from the node, signed with the patient's key with the method and path), so a
node serves a patient only their own data; plain HTTP is refused to any host but loopback (unless
`insecure_http`), and a node's self-signed certificate can be pinned with `ca_file`. The node
only ever receives signed transactions and serves what it holds anyway (public keys,
ciphertexts, inquiries, grants, audit events), each with its canonical encoding, which this
client decodes and checks itself (right patient, right type).

Standard library HTTP only (urllib), so the SDK has no dependency beyond medledger's own layers.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Final, TypeVar

from medledger.chain.codec import WireType, decode
from medledger.chain.errors import CodecError
from medledger.crypto import DecryptionError, Identity
from medledger.health.auth import CHALLENGE_SIZE, build_authorization
from medledger.health.client import (
    SignedTx,
    build_add_representative,
    build_deny,
    build_grant,
    build_register_patient,
    build_revoke,
)
from medledger.health.errors import CommitmentMismatchError, HealthError
from medledger.health.records import DecryptedRecord, decrypt_record, reseal_record_keys
from medledger.health.types import (
    GRANT_RECORDS_MAX,
    INQUIRY_OPEN,
    STATE_VALUE_BYTES_MAX,
    AuditEvent,
    GrantState,
    InquiryState,
    PatientId,
    PatientState,
    RecordState,
    compute_patient_id,
    is_covered,
)

#: How long a submission waits for its commit.
COMMIT_WAIT_MS: Final = 15_000
#: Largest answer the client reads (a page of records with ciphertexts).
RESPONSE_BYTES_MAX: Final = 512 * 1024 * 1024
#: Largest problem+json body, and challenge answer, the client reads.
PROBLEM_BYTES_MAX: Final = 64 * 1024
PAGE_SIZE: Final = 200
#: Where a challenge for a signed request comes from.
CHALLENGE_PATH: Final = "/v1/auth/challenge"
#: Host names that are loopback without a DNS lookup (IP literals are checked as addresses).
LOOPBACK_HOSTS: Final = frozenset({"localhost"})

W = TypeVar("W", bound=WireType)


class PatientClientError(HealthError):
    """The node refused a request (`status`, problem `detail` and `rule`), or could not be reached."""

    code = "patient_client"

    def __init__(self, message: str, *, status: int = 0, rule: str = "", problem: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.rule = rule
        self.problem = problem


@dataclasses.dataclass(frozen=True, slots=True)
class LocalRecord:
    """A record as the patient's device sees it: the ledger entry and its local decryption."""

    record: RecordState
    author_name: str | None
    decrypted: DecryptedRecord | None
    error: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Submitted:
    tx_id: bytes
    height: int


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
        self._chain_id = ""
        self._names: dict[bytes, str] | None = None

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
        self._chain_id = self._chain_id or chain_id
        return challenge, chain_id

    def _sign(self, method: str, path: str) -> str:
        """The `Authorization` header of a signed request (its challenge is used once, here)."""
        challenge, chain_id = self._challenge()
        return build_authorization(
            self.identity,
            chain_id=chain_id,
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
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PatientClientError(f"cannot reach the node at {self.url}: {reason}") from None

    def _patient_path(self, suffix: str = "") -> str:
        return f"/v1/health/patients/{self.patient_id.hex()}{suffix}"

    @property
    def chain_id(self) -> str:
        if not self._chain_id:  # a challenge names it (a patient not yet registered needs it)
            self._challenge()
        return self._chain_id

    def _submit(self, signed: SignedTx) -> Submitted:
        """Submit a locally signed tx and wait for its commit; a refusal raises with its rule."""
        _, raw, tx_id = signed
        reply = self._request(
            "POST", f"/v1/txs?wait_ms={COMMIT_WAIT_MS}", {"tx": base64.b64encode(raw).decode()}
        )
        if reply.get("status") != "committed":
            raise PatientClientError(
                f"transaction {tx_id.hex()} was not committed within {COMMIT_WAIT_MS} ms"
            )
        result = reply.get("result", {})
        if not result.get("ok"):
            rule = str(result.get("code", ""))
            raise PatientClientError(f"the ledger refused the transaction ({rule})", status=422, rule=rule)
        return Submitted(tx_id, int(reply["height"]))

    @staticmethod
    def _decode(wire_type: type[W], item: Any) -> W:
        try:
            return decode(
                wire_type, base64.b64decode(item["encoded"], validate=True), max_bytes=STATE_VALUE_BYTES_MAX
            )
        except (KeyError, TypeError, ValueError, CodecError) as exc:
            what = wire_type.__name__
            raise PatientClientError(f"the node sent a {what} that does not decode: {exc}") from None

    def _check_patient(self, value: RecordState | InquiryState | GrantState) -> None:
        if value.patient_id != self.patient_id:
            raise PatientClientError("the node sent an item of another patient")

    # -- reads -----------------------------------------------------------------------------

    def institution_names(self) -> dict[bytes, str]:
        """Registered institutions by signing key → name (cached)."""
        if self._names is None:
            items = self._request("GET", "/v1/health/institutions")["institutions"]
            self._names = {bytes.fromhex(i["sign_key"]): str(i["name"]) for i in items}
        return self._names

    def institution_enc_key(self, sign_key: bytes) -> bytes:
        for item in self._request("GET", "/v1/health/institutions")["institutions"]:
            if bytes.fromhex(item["sign_key"]) == sign_key:
                return bytes.fromhex(item["enc_key"])
        raise PatientClientError("the requester is not a registered institution")

    def get_patient(self) -> PatientState | None:
        try:
            item = self._request("GET", self._patient_path())
        except PatientClientError as exc:
            if exc.status == 404:
                return None
            raise
        patient = self._decode(PatientState, item)
        if patient.patient_id != self.patient_id:
            raise PatientClientError("the node sent another patient")
        return patient

    def list_records(self) -> list[RecordState]:
        records: list[RecordState] = []
        while True:
            page = self._request(
                "GET", self._patient_path(f"/records?start={len(records)}&limit={PAGE_SIZE}")
            )
            items = page["records"]
            for item in items:
                record = self._decode(RecordState, item)
                self._check_patient(record)
                records.append(record)
            if not items or len(records) >= int(page["total"]):
                return records

    def read_records(self) -> list[LocalRecord]:
        """Every record, decrypted here with the patient's key (the commitment is checked)."""
        names = self.institution_names()
        result = []
        for record in self.list_records():
            try:
                result.append(
                    LocalRecord(record, names.get(record.author), decrypt_record(record, self.identity))
                )
            except (DecryptionError, CommitmentMismatchError) as exc:
                result.append(LocalRecord(record, names.get(record.author), None, exc.message))
        return result

    def list_inquiries(self, status: str | None = None) -> list[InquiryState]:
        query = f"?status={urllib.parse.quote(status)}" if status else ""
        items = self._request("GET", self._patient_path(f"/inquiries{query}"))["inquiries"]
        inquiries = [self._decode(InquiryState, item) for item in items]
        for inquiry in inquiries:
            self._check_patient(inquiry)
        return inquiries

    def list_pending_inquiries(self) -> list[InquiryState]:
        return self.list_inquiries(INQUIRY_OPEN)

    def list_grants(self) -> list[GrantState]:
        items = self._request("GET", self._patient_path("/grants"))["grants"]
        grants = [self._decode(GrantState, item) for item in items]
        for grant in grants:
            self._check_patient(grant)
        return grants

    def audit(self) -> list[AuditEvent]:
        """The full audit trail: inquiries, decisions, revocations, reads, representative changes."""
        events: list[AuditEvent] = []
        while True:
            page = self._request("GET", self._patient_path(f"/audit?start={len(events)}&limit={PAGE_SIZE}"))
            items = page["events"]
            events.extend(self._decode(AuditEvent, item) for item in items)
            if not items or len(events) >= int(page["total"]):
                return events

    def find_inquiry(self, prefix: str) -> InquiryState:
        """The inquiry whose id (hex) starts with `prefix` (unique)."""
        return _unique(self.list_inquiries(), prefix, lambda i: i.inquiry_id, "inquiry")

    def find_grant(self, prefix: str) -> GrantState:
        return _unique(self.list_grants(), prefix, lambda g: g.grant_id, "grant")

    # -- signed actions ----------------------------------------------------------------------

    def register(self) -> Submitted:
        return self._submit(build_register_patient(self.identity, chain_id=self.chain_id))

    def grant(self, inquiry_id: bytes) -> Submitted:
        """Grant an open inquiry: the keys of the records in its scope are re-sealed here."""
        inquiry = next((i for i in self.list_inquiries() if i.inquiry_id == inquiry_id), None)
        if inquiry is None:
            raise PatientClientError("no such inquiry for this patient", status=404)
        enc_key = self.institution_enc_key(inquiry.requester)
        covered = [
            r
            for r in self.list_records()
            if is_covered(inquiry.scope, r.record_id, r.record_type, r.time_ms)
            and self.identity.public.enc_key in r.envelope.readers
        ]
        covered = covered[-GRANT_RECORDS_MAX:]  # the latest, if more than a grant can carry
        record_keys = reseal_record_keys(covered, self.identity, enc_key)
        return self._submit(build_grant(self.identity, inquiry_id, record_keys, chain_id=self.chain_id))

    def deny(self, inquiry_id: bytes) -> Submitted:
        return self._submit(build_deny(self.identity, inquiry_id, chain_id=self.chain_id))

    def revoke(self, grant_id: bytes) -> Submitted:
        return self._submit(build_revoke(self.identity, grant_id, chain_id=self.chain_id))

    def add_representative(self, representative_sign_key: bytes) -> Submitted:
        return self._submit(
            build_add_representative(
                self.identity, self.patient_id, representative_sign_key, chain_id=self.chain_id
            )
        )


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
        if e["record_ids"]:
            detail += f" records {', '.join(r[:12] + '…' for r in e['record_ids'])}"
        who = e["actor_name"] or e["actor"][:12]
        purpose = e["purpose"] or "-"
        lines.append(
            f"{e['index']:>3}  {e['height']:>6}  {when:<19}  {e['event']:<22} {who:<14} {purpose:<8} {detail}"
        )
    return lines
