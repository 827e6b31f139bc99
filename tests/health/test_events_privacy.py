"""No PHI in an event's payload or MQTT topic, over generated stories (issue 11, ADR 0015).

Hypothesis generates stories through the rules (`health_testkit.Ledger`: real signed txs through
`check_tx` and `apply_block`): patients registering, records whose content carries a generated
name and free text, corrections, inquiries with generated reasons and purposes, grants, denials,
revocations, reads, representatives, records requests, amendment requests with text, refusals
with a reason, acceptances with corrected content, statements of disagreement, and time passing
so that grants expire. Then every event of the chain is derived as a node derives it
(`compute_block_events`) and, for each institution's node, the MQTT messages it would publish
(`node.mqtt.compute_event_messages` with the node's real patient topic tokens). No payload and no
topic may contain, raw (case-insensitive), as hex or as base64, any patient id, patient or
representative key, name, record content, free text, reason, purpose or record type of the story;
and a payload's keys are only the documented ones.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Iterable

from health_testkit import BLOCK_INTERVAL_MS, CHAIN_ID, Ledger, make_identity
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as stg

from medledger.crypto import Identity
from medledger.health import client, rights_seal
from medledger.health import state as st
from medledger.health.events import EVENT_KINDS, ID_FIELDS, LedgerEvent
from medledger.health.records import encrypt_record, get_verified_record_key, reseal_record_keys
from medledger.health.rights_types import AMENDMENT_OPEN, AMENDMENT_REFUSED
from medledger.health.types import (
    INQUIRY_OPEN,
    PURPOSES_BY_ROLE,
    GrantState,
    InquiryState,
    RecordState,
    compute_patient_id,
    is_covered,
)
from medledger.node.mqtt import compute_event_messages, compute_node_patient_token

INSTITUTIONS = ("clinic", "hospital", "insurer")
AUTHORS = ("clinic", "hospital")
IDENTITIES = {name: make_identity(name) for name in INSTITUTIONS}
PREFIX = "medledger"
#: What every payload carries, and the ids it may carry besides (ADR 0015).
PAYLOAD_KEYS = frozenset({"seq", "kind", "height", "tx_index", "event_index", "tx_id", "time_ms"})
PAYLOAD_ID_KEYS = frozenset(ID_FIELDS)
HEX_ID = re.compile(r"[0-9a-f]{64}")

#: The fixed words a payload is made of (its keys and event kinds): a generated "secret" that is
#: a piece of one of them (hypothesis found "representati") would be a false alarm, not a leak.
VOCABULARY = " ".join(sorted(EVENT_KINDS | PAYLOAD_KEYS | PAYLOAD_ID_KEYS | {PREFIX}))
#: Generated human text: long enough that a chance match inside a 64-digit hex id is negligible.
TEXT = stg.text(
    alphabet=stg.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789äöüéßñ"),
    min_size=12,
    max_size=40,
).filter(lambda text: text.lower() not in VOCABULARY)


@dataclasses.dataclass
class Patient:
    name: str
    identity: Identity
    patient_id: bytes
    representatives: list[Identity] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Story:
    ledger: Ledger
    patients: list[Patient] = dataclasses.field(default_factory=list)
    #: Everything the events must not reveal: bytes (ids, keys) and text.
    secret_bytes: set[bytes] = dataclasses.field(default_factory=set)
    secret_text: set[str] = dataclasses.field(default_factory=set)
    #: Ids of the records requests filed.
    requests: list[bytes] = dataclasses.field(default_factory=list)

    def submit(self, signed: client.SignedTx, what: str) -> bytes | None:
        outcome = self.ledger.submit(signed)
        event(f"{what}: {'ok' if outcome.ok else outcome.rule}")
        return outcome.tx_id if outcome.ok else None

    def records_of(self, patient: Patient) -> list[RecordState]:
        return [r for r in st.list_records(self.ledger.state, patient.patient_id) if not r.superseded_by]


def make_resource(kind: str, name: str, text: str, value: int) -> dict[str, object]:
    """A FHIR record carrying the patient's generated name and a generated free text."""
    subject = {"reference": "Patient/synthetic-1", "display": name}
    if kind == "Condition":
        return {
            "resourceType": "Condition",
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                ]
            },
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}], "text": text},
            "subject": subject,
            "note": [{"text": text}],
        }
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": text},
        "subject": subject,
        "effectiveDateTime": "2024-03-01T10:00:00Z",
        "valueQuantity": {"value": value, "unit": "beats/minute"},
        "note": [{"text": text}],
    }


# --- the story's steps (each picks what it acts on with `data`, and skips if there is nothing) ---


def register(s: Story, data: stg.DataObject) -> None:
    name = data.draw(TEXT, label="name")
    identity = make_identity("patient/" + name)
    patient = Patient(name, identity, compute_patient_id(identity.public.sign_key))
    if s.submit(s.ledger.sign(client.build_register_patient, identity), "register"):
        s.patients.append(patient)
    s.secret_text.add(name)
    s.secret_bytes |= {patient.patient_id, identity.public.sign_key, identity.public.enc_key}


def add_record(s: Story, data: stg.DataObject, *, supersede: bool = False) -> None:
    if not s.patients:
        return
    patient = data.draw(stg.sampled_from(s.patients))
    author_name = data.draw(stg.sampled_from(AUTHORS))
    author = IDENTITIES[author_name]
    old = None
    if supersede:
        mine = [r for r in s.records_of(patient) if r.author == author.public.sign_key]
        if not mine:
            return
        old = data.draw(stg.sampled_from(mine))
    kind = data.draw(stg.sampled_from(("Condition", "Observation")))
    text = data.draw(TEXT, label="record text")
    resource = make_resource(kind, patient.name, text, data.draw(stg.integers(30, 200)))
    s.secret_text |= {text, kind, json.dumps(resource, sort_keys=True)}
    # What an honest author's client seals for: the patient, itself and the live covering grantees.
    readers = {patient.identity.public.enc_key, author.public.enc_key}
    time_ms = s.ledger.next_time_ms
    for grant in st.list_grants(s.ledger.state, patient.patient_id):
        if (
            not grant.is_revoked
            and time_ms < grant.expires_ms
            and is_covered(grant.scope, b"", kind, time_ms)
        ):
            readers.add(grant.grantee_enc_key)
    encrypted = encrypt_record(
        resource,
        patient_id=patient.patient_id,
        author=author.public.sign_key,
        readers=sorted(readers),
        supersedes=old.record_id if old else b"",
    )
    if old is None:
        s.submit(s.ledger.sign(client.build_add_record, author, patient.patient_id, encrypted), "record")
    else:
        signed = s.ledger.sign(
            client.build_supersede_record, author, patient.patient_id, old.record_id, encrypted
        )
        s.submit(signed, "supersede")


def inquire(s: Story, data: stg.DataObject) -> None:
    if not s.patients:
        return
    patient = data.draw(stg.sampled_from(s.patients))
    requester_name = data.draw(stg.sampled_from(INSTITUTIONS))
    requester = IDENTITIES[requester_name]
    purpose = data.draw(
        stg.sampled_from(sorted(PURPOSES_BY_ROLE[s.ledger.institutions[requester_name].role]))
    )
    reason = data.draw(TEXT, label="reason")
    types = data.draw(stg.sets(stg.sampled_from(("Condition", "Observation"))), label="types")
    ttl_ms = data.draw(stg.integers(2, 12), label="ttl blocks") * BLOCK_INTERVAL_MS
    s.secret_text |= {reason, purpose}
    signed = s.ledger.sign(
        client.build_request_access,
        requester,
        patient.patient_id,
        client.make_scope(record_types=types),
        purpose,
        s.ledger.next_time_ms + ttl_ms,
        reason,
        patient_enc_key=patient.identity.public.enc_key,
    )
    s.submit(signed, "inquire")


def _open_inquiries(s: Story) -> list[tuple[Patient, InquiryState]]:
    found = []
    for patient in s.patients:
        for audit in st.list_audit_events(s.ledger.state, patient.patient_id):
            inquiry = st.get_inquiry(s.ledger.state, audit.event_id)
            if (
                inquiry is not None
                and inquiry.status == INQUIRY_OPEN
                and s.ledger.next_time_ms < inquiry.expires_ms
            ):
                found.append((patient, inquiry))
    return found


def decide(s: Story, data: stg.DataObject, *, deny: bool | None = None) -> None:
    open_ = _open_inquiries(s)
    if not open_:
        return
    patient, inquiry = data.draw(stg.sampled_from(open_))
    signer = data.draw(stg.sampled_from([patient.identity, *patient.representatives]))
    if data.draw(stg.booleans(), label="deny") if deny is None else deny:
        s.submit(s.ledger.sign(client.build_deny, signer, inquiry.inquiry_id), "deny")
        return
    covered = [
        r for r in s.records_of(patient) if is_covered(inquiry.scope, r.record_id, r.record_type, r.time_ms)
    ]
    chosen = (
        data.draw(stg.lists(stg.sampled_from(covered), min_size=1, unique_by=lambda r: r.record_id))
        if covered
        else []
    )
    grantee = s.ledger.institutions[
        next(n for n in INSTITUTIONS if IDENTITIES[n].public.sign_key == inquiry.requester)
    ]
    keys = reseal_record_keys(chosen, patient.identity, grantee.enc_key)
    if data.draw(stg.booleans(), label="in parts"):
        manifest, parts = client.build_grant_in_parts(
            signer, inquiry.inquiry_id, keys, chain_id=CHAIN_ID, timestamp_ms=s.ledger.next_time_ms
        )
        if s.submit(manifest, "grant manifest"):
            for part in parts:
                s.submit(part, "grant part")
    else:
        s.submit(s.ledger.sign(client.build_grant, signer, inquiry.inquiry_id, keys), "grant")


def _grants(s: Story, *, live: bool) -> list[tuple[Patient, GrantState]]:
    time_ms = s.ledger.next_time_ms
    return [
        (patient, grant)
        for patient in s.patients
        for grant in st.list_grants(s.ledger.state, patient.patient_id)
        if not live or (not grant.is_revoked and time_ms < grant.expires_ms)
    ]


def revoke(s: Story, data: stg.DataObject) -> None:
    grants = [(p, g) for p, g in _grants(s, live=False) if not g.is_revoked]
    if grants:
        patient, grant = data.draw(stg.sampled_from(grants))
        signer = data.draw(stg.sampled_from([patient.identity, *patient.representatives]))
        s.submit(s.ledger.sign(client.build_revoke, signer, grant.grant_id), "revoke")


def read(s: Story, data: stg.DataObject) -> None:
    readable = []
    for patient, grant in _grants(s, live=True):
        ids = {rk.record_id for rk in grant.record_keys} | {
            r.record_id
            for r in st.list_records(s.ledger.state, patient.patient_id)
            if st.get_grant_key(s.ledger.state, grant.grant_id, r.record_id) is not None
        }
        if ids:
            readable.append((grant, tuple(sorted(ids))))
    if readable:
        grant, chosen = data.draw(stg.sampled_from(readable))
        grantee = next(IDENTITIES[n] for n in INSTITUTIONS if IDENTITIES[n].public.sign_key == grant.grantee)
        s.submit(s.ledger.sign(client.build_read_receipt, grantee, grant.grant_id, chosen), "read")


def representative(s: Story, data: stg.DataObject) -> None:
    if not s.patients:
        return
    patient = data.draw(stg.sampled_from(s.patients))
    if len(patient.representatives) > 0 and data.draw(stg.booleans(), label="remove"):
        rep = data.draw(stg.sampled_from(patient.representatives))
        signed = s.ledger.sign(
            client.build_remove_representative, patient.identity, patient.patient_id, rep.public.sign_key
        )
        if s.submit(signed, "remove representative"):
            patient.representatives.remove(rep)
        return
    rep = make_identity("representative/" + data.draw(TEXT, label="representative"))
    s.secret_bytes |= {rep.public.sign_key, rep.public.enc_key}
    signed = s.ledger.sign(
        client.build_add_representative, patient.identity, patient.patient_id, rep.public.sign_key
    )
    if s.submit(signed, "add representative"):
        patient.representatives.append(rep)


def records_request(s: Story, data: stg.DataObject) -> None:
    if not s.patients:
        return
    patient = data.draw(stg.sampled_from(s.patients))
    for request_id in s.requests:
        request = st.get_records_request(s.ledger.state, request_id)
        if request is not None and not request.close_id and data.draw(stg.booleans(), label="close"):
            institution = next(
                IDENTITIES[n] for n in INSTITUTIONS if IDENTITIES[n].public.sign_key == request.institution
            )
            signed = s.ledger.sign(rights_seal.build_close_records_request, institution, request.request_id)
            s.submit(signed, "close records request")
            return
    institution = IDENTITIES[data.draw(stg.sampled_from(INSTITUTIONS))]
    signed = s.ledger.sign(
        rights_seal.build_request_records, patient.identity, patient.patient_id, institution.public.sign_key
    )
    filed = s.submit(signed, "records request")
    if filed:
        s.requests.append(filed)


def amend(s: Story, data: stg.DataObject, mode: str | None = None) -> None:
    """Ask for an amendment, or answer one (accept with a correction, refuse), or disagree."""
    if mode is None:
        mode = data.draw(stg.sampled_from(("request", "answer", "disagree")), label="amend")
    if not s.patients:
        return
    patient = data.draw(stg.sampled_from(s.patients))
    text = data.draw(TEXT, label="amendment text")
    s.secret_text.add(text)
    amendments = [
        a
        for r in st.list_records(s.ledger.state, patient.patient_id)
        for a in (
            st.get_amendment(s.ledger.state, i)
            for i in st.get_record_amendment_ids(s.ledger.state, r.record_id)
        )
        if a is not None
    ]
    wanted = AMENDMENT_REFUSED if mode == "disagree" else AMENDMENT_OPEN
    choices = [a for a in amendments if a.status == wanted and not a.statement_by]
    if mode != "request":
        if not choices:
            return
        amendment = data.draw(stg.sampled_from(choices))
        record = st.get_record(s.ledger.state, amendment.record_id)
        assert record is not None
        author = next(IDENTITIES[n] for n in AUTHORS if IDENTITIES[n].public.sign_key == record.author)
        if amendment.status == AMENDMENT_REFUSED:
            key = get_verified_record_key(record, patient.identity)
            statement = rights_seal.seal_statement(text, record_key=key, amendment=amendment)
            s.submit(
                s.ledger.sign(rights_seal.build_disagree, patient.identity, amendment, statement), "disagree"
            )
        elif mode == "accept" or (mode == "answer" and data.draw(stg.booleans(), label="accept")):
            latest = record
            while latest.superseded_by:
                newer = st.get_record(s.ledger.state, latest.superseded_by)
                assert newer is not None
                latest = newer
            resource = make_resource(latest.record_type, patient.name, text, 90)
            s.secret_text.add(json.dumps(resource, sort_keys=True))
            corrected = encrypt_record(
                resource,
                patient_id=patient.patient_id,
                author=author.public.sign_key,
                readers=[patient.identity.public.enc_key, author.public.enc_key],
                supersedes=latest.record_id,
            )
            signed = s.ledger.sign(
                rights_seal.build_accept_amendment, author, amendment, latest.record_id, corrected
            )
            s.submit(signed, "accept amendment")
        else:
            signed = s.ledger.sign(
                rights_seal.build_refuse_amendment,
                author,
                amendment,
                text,
                patient_enc_key=patient.identity.public.enc_key,
            )
            s.submit(signed, "refuse amendment")
        return
    records = s.records_of(patient)
    if not records:
        return
    record = data.draw(stg.sampled_from(records))
    author = next(IDENTITIES[n] for n in AUTHORS if IDENTITIES[n].public.sign_key == record.author)
    signed = s.ledger.sign(
        rights_seal.build_request_amendment,
        patient.identity,
        patient.patient_id,
        record.record_id,
        text,
        author=record.author,
        patient_enc_key=patient.identity.public.enc_key,
        author_enc_key=author.public.enc_key,
    )
    s.submit(signed, "request amendment")


def pass_time(s: Story, data: stg.DataObject) -> None:
    s.ledger.advance(data.draw(stg.integers(0, 8), label="idle blocks") * BLOCK_INTERVAL_MS)
    s.ledger.commit_empty()


STEPS = (
    register,
    add_record,
    lambda s, data: add_record(s, data, supersede=True),
    inquire,
    inquire,
    decide,
    decide,
    revoke,
    read,
    read,
    representative,
    records_request,
    amend,
    amend,
    amend,
    pass_time,
)


# --- the check ----------------------------------------------------------------------------------


def encodings(value: bytes) -> set[str]:
    """The forms in which `value` could show in a payload or topic: hex, and base64 (standard and
    URL-safe) at each of the three byte alignments it could start at inside a longer value."""
    forms = {value.hex()}
    for offset in range(3):
        chunk = value[offset:]
        chunk = chunk[: len(chunk) - len(chunk) % 3]
        if chunk:
            forms.add(base64.b64encode(chunk).decode())
            forms.add(base64.urlsafe_b64encode(chunk).decode())
    return forms


def forbidden_forms(secret_bytes: Iterable[bytes], secret_text: Iterable[str]) -> set[str]:
    forms: set[str] = set()
    for value in secret_bytes:
        forms |= encodings(value)
    for text in secret_text:
        forms.add(text)
        forms |= encodings(text.encode("utf-8"))
    return {f.lower() for f in forms}


def find_leaks(haystacks: Iterable[str], forms: set[str]) -> list[tuple[str, str]]:
    return [(form, hay) for hay in haystacks for form in forms if form in hay.lower()]


def readable_forms(sent: bytes) -> list[str]:
    """A message as sent, and its JSON with escapes resolved (`json.dumps` writes `ü` as `\\u00fc`,
    which a plain substring check would miss)."""
    text = sent.decode("utf-8")
    return [text, json.dumps(json.loads(text), ensure_ascii=False)]


def check_payload_shape(payload: dict[str, object]) -> None:
    assert payload.keys() >= PAYLOAD_KEYS, payload
    assert payload.keys() <= PAYLOAD_KEYS | PAYLOAD_ID_KEYS, payload
    assert payload["kind"] in EVENT_KINDS
    for name in ("seq", "height", "tx_index", "event_index", "time_ms"):
        assert type(payload[name]) is int
    for name in payload.keys() & (PAYLOAD_ID_KEYS | {"tx_id"}):
        value = payload[name]
        assert isinstance(value, str), (name, payload)
        assert HEX_ID.fullmatch(value), (name, payload)


def published(s: Story, events: list[LedgerEvent]) -> list[tuple[str, bytes]]:
    """(topic, payload) of every MQTT message any institution's node would publish for `events`."""
    messages = []
    for name in INSTITUTIONS:
        identity = IDENTITIES[name]

        def token(patient_id: bytes, identity: Identity = identity) -> bytes | None:
            patient = st.get_patient(s.ledger.state, patient_id)
            if patient is None:
                return None
            return compute_node_patient_token(identity, CHAIN_ID, patient.enc_key)

        for message in compute_event_messages(events, PREFIX, identity.public.sign_key, token):
            messages.append((message.topic, message.payload))
    return messages


def prologue(s: Story, data: stg.DataObject) -> None:
    """Every kind of step at least once, in an order in which each can take effect."""
    register(s, data)
    add_record(s, data)
    add_record(s, data)
    inquire(s, data)
    decide(s, data, deny=False)
    read(s, data)
    inquire(s, data)
    decide(s, data, deny=True)
    representative(s, data)
    records_request(s, data)
    records_request(s, data)
    amend(s, data, "request")
    amend(s, data, "refuse")
    amend(s, data, "disagree")
    amend(s, data, "request")
    amend(s, data, "accept")
    add_record(s, data, supersede=True)
    revoke(s, data)
    pass_time(s, data)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=stg.data())
def test_no_event_payload_or_topic_reveals_phi(data: stg.DataObject) -> None:
    s = Story(Ledger({name: name for name in INSTITUTIONS}))
    prologue(s, data)
    for _ in range(data.draw(stg.integers(0, 20), label="steps")):
        data.draw(stg.sampled_from(STEPS), label="step")(s, data)
    pass_time(s, data)
    events = s.ledger.list_events()
    for kind in {e.kind for e in events}:
        event(f"kind {kind}")
    forms = forbidden_forms(s.secret_bytes, s.secret_text)
    payloads = [e.to_payload() for e in events]
    for payload in payloads:
        check_payload_shape(payload)
    messages = published(s, events)
    haystacks = [
        *(form for p in payloads for form in readable_forms(json.dumps(p).encode())),
        *(topic for topic, _ in messages),
        *(form for _, sent in messages for form in readable_forms(sent)),
    ]
    assert find_leaks(haystacks, forms) == []
    # The topics a patient's events go to are tokens, one per publishing node, never the patient id.
    assert all(topic.startswith((f"{PREFIX}/inst/", f"{PREFIX}/pat/")) for topic, _ in messages)


def test_the_leak_check_finds_what_it_looks_for() -> None:
    """The check is not vacuous: an id in hex or base64 (any alignment), or a text, is found."""
    secret = bytes(range(7, 39))
    forms = forbidden_forms([secret], ["Grüße von Jane Doe"])
    for leaked in (
        secret.hex().upper(),
        base64.b64encode(b"x" + secret).decode(),
        base64.urlsafe_b64encode(b"xy" + secret).decode(),
        "note: grüße von jane doe!",
        base64.b64encode("Grüße von Jane Doe".encode()).decode(),
    ):
        assert find_leaks(readable_forms(json.dumps({"kind": leaked}).encode()), forms), leaked
    clean = json.dumps({"kind": "record.added", "tx_id": "ab" * 32}).encode()
    assert find_leaks(readable_forms(clean), forms) == []
    try:
        check_payload_shape(
            {
                "seq": 1,
                "kind": "record.added",
                "height": 1,
                "tx_index": 0,
                "event_index": 0,
                "tx_id": "ab" * 32,
                "time_ms": 1,
                "patient_id": "cd" * 32,
            }
        )
    except AssertionError:
        return
    raise AssertionError("an undocumented payload key was accepted")
