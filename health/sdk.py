"""The patient's client (SDK): talk to any node over HTTP with the patient's own keys.

Everything that needs the patient's private keys happens here, on the patient's device: records are
decrypted locally, grants re-seal record keys locally, and every decision is a transaction signed
locally and submitted to `POST /v1/txs`. The node only ever receives signed transactions and
serves what it holds anyway (public keys, ciphertexts, inquiries, grants, audit events), each with
its canonical encoding, which this client decodes and checks itself (right patient, right type).

Standard library HTTP only (urllib), so the SDK has no dependency beyond medledger's own layers.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final, TypeVar

from medledger.chain.codec import WireType, decode
from medledger.chain.errors import CodecError
from medledger.crypto import DecryptionError, Identity
from medledger.health.client import (
    SignedTx,
    build_add_representative,
    build_deny,
    build_grant,
    build_register_patient,
    build_revoke,
)
from medledger.health.errors import HealthError, ReasonUnreadableError, RecordVerificationError
from medledger.health.reasons import open_reason
from medledger.health.records import DecryptedRecord, is_record_verified, open_record, reseal_record_keys
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
PAGE_SIZE: Final = 200

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


class PatientClient:
    """A patient's (or a representative's) client of one node at `url`.

    `identity` signs; `patient_id` is the patient acted for (default: the identity's own, i.e.
    the patient themself; a representative passes the patient's id).
    """

    def __init__(
        self, url: str, identity: Identity, *, patient_id: bytes | None = None, timeout_s: float = 30.0
    ) -> None:
        self.url = url.rstrip("/")
        self.identity = identity
        self.patient_id = PatientId(patient_id or compute_patient_id(identity.public.sign_key))
        self.timeout_s = timeout_s
        self._chain_id = ""
        self._names: dict[bytes, str] | None = None

    # -- HTTP ------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)  # noqa: S310 - the node's URL
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                return json.loads(response.read(RESPONSE_BYTES_MAX))
        except urllib.error.HTTPError as exc:
            try:
                problem = json.loads(exc.read(64 * 1024))
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
        if not self._chain_id:
            self._chain_id = str(self._request("GET", "/status")["chain_id"])
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
                    LocalRecord(record, names.get(record.author), open_record(record, self.identity))
                )
            except (DecryptionError, RecordVerificationError) as exc:
                result.append(LocalRecord(record, names.get(record.author), None, exc.message))
        return result

    def list_inquiries(self, status: str | None = None) -> list[InquiryState]:
        query = f"?status={urllib.parse.quote(status)}" if status else ""
        items = self._request("GET", self._patient_path(f"/inquiries{query}"))["inquiries"]
        inquiries = [self._decode(InquiryState, item) for item in items]
        for inquiry in inquiries:
            self._check_patient(inquiry)
        return inquiries

    def inquiry_reason(self, inquiry: InquiryState) -> str | None:
        """The inquiry's reason, opened here (sealed on the ledger); None if not sealed for this key."""
        try:
            return open_reason(inquiry, self.identity)
        except ReasonUnreadableError:
            return None

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
            and is_record_verified(r, self.identity)  # never re-seal the key of a record that fails
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
