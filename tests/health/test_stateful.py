"""A stateful property test of the health rules against a model of who may do and read what.

Hypothesis drives random sequences of registrations, representatives, records, corrections,
inquiries, grants, denials, revocations, reads, time passing, and forged or unauthorised attempts,
as real signed txs through `HealthApp.check_tx` and `apply_block` (`health_testkit.Ledger`). The
model predicts for every tx whether it must be accepted; `Ledger.submit` asserts that every refusal
changes nothing. After every step the invariants are checked against the ledger's state:

* who can decrypt each record, by actually opening envelopes and grant-sealed keys as each party's
  client would with what the ledger state gives it, is exactly: the patient, the author, the holders
  of grants that covered the record when it was sealed, and the grantees it was re-sealed for;
  and no one the patient did not authorise (a revoked grantee gets nothing added after revocation);
* the plaintext each of them gets is the one the author wrote (its commitment verifies);
* every read performed has a read receipt in the patient's audit trail;
* inquiries, grants and representatives on the ledger are the model's.
"""

from __future__ import annotations

import dataclasses

from health_testkit import RECORD_MAKERS, Ledger, make_identity
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as stg
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from medledger.chain.txbuilder import sign_tx
from medledger.crypto import DecryptionError, Identity
from medledger.health import client, policy
from medledger.health import state as st
from medledger.health.records import (
    encrypt_record,
    open_record,
    reseal_record_keys,
)
from medledger.health.types import (
    EVENT_READ,
    INQUIRY_DENIED,
    INQUIRY_GRANTED,
    INQUIRY_OPEN,
    INQUIRY_TTL_MS_MAX,
    PURPOSES,
    PURPOSES_BY_ROLE,
    TX_KINDS,
    Scope,
    compute_patient_id,
    is_covered,
)

INSTITUTIONS = ("clinic", "hospital", "insurer", "research")
PATIENTS = ("patient-0", "patient-1")
REPRESENTATIVES = ("rep-0", "rep-1")
STRANGER = "stranger"
PARTIES = (*INSTITUTIONS, *PATIENTS, *REPRESENTATIVES, STRANGER)
IDENTITIES: dict[str, Identity] = {name: make_identity(name) for name in PARTIES}
ROLES = {"clinic": "clinic", "hospital": "hospital", "insurer": "insurer", "research": "research"}
AUTHORS = frozenset({"clinic", "hospital"})
RECORD_TYPES = tuple(sorted(RECORD_MAKERS))
MAX_RECORDS = 12


def pid(name: str) -> bytes:
    return compute_patient_id(IDENTITIES[name].public.sign_key)


def enc(name: str) -> bytes:
    return IDENTITIES[name].public.enc_key


@dataclasses.dataclass
class MRecord:
    record_id: bytes
    patient: str
    author: str
    record_type: str
    time_ms: int
    plaintext: bytes
    #: Parties the author's client sealed the content key for.
    readers: set[str]
    superseded: bool = False


@dataclasses.dataclass
class MInquiry:
    inquiry_id: bytes
    patient: str
    requester: str
    scope: Scope
    expires_ms: int
    status: str = INQUIRY_OPEN


@dataclasses.dataclass
class MGrant:
    grant_id: bytes
    patient: str
    grantee: str
    scope: Scope
    expires_ms: int
    record_ids: set[bytes]
    revoked: bool = False


class HealthMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(ROLES)
        self.registered: set[str] = set()
        self.reps: dict[str, set[str]] = {p: set() for p in PATIENTS}
        self.records: dict[bytes, MRecord] = {}
        self.inquiries: list[MInquiry] = []
        self.grants: list[MGrant] = []
        #: (grant id, record ids) of every read an institution performed.
        self.reads: list[tuple[bytes, tuple[bytes, ...]]] = []
        self.counter = 0

    # --- helpers --------------------------------------------------------------------------------

    def submit(self, signed: client.SignedTx, expect_ok: bool, why: str) -> bytes | None:
        outcome = self.ledger.submit(signed)
        event(f"{why}: {'accepted' if outcome.ok else outcome.rule}")
        assert outcome.ok == expect_ok, (
            f"{why}: expected ok={expect_ok}, got {outcome.rule}: {outcome.message}"
        )
        return outcome.tx_id if outcome.ok else None

    def is_live(self, grant: MGrant, time_ms: int) -> bool:
        return not grant.revoked and time_ms < grant.expires_ms

    def acts_for(self, signer: str, patient: str) -> bool:
        return signer == patient or signer in self.reps[patient]

    def sealable_readers(self, patient: str, author: str, record_type: str, time_ms: int) -> set[str]:
        """What an honest author's client seals for: patient, author, live covering grantees."""
        readers = {patient, author}
        for g in self.grants:
            if (
                g.patient == patient
                and self.is_live(g, time_ms)
                and is_covered(g.scope, b"", record_type, time_ms)
            ):
                readers.add(g.grantee)
        return readers

    def coverable(self, grant: MGrant, record: MRecord) -> bool:
        if record.patient != grant.patient:
            return False
        if record.record_id in grant.record_ids:
            return True
        return grant.grantee in record.readers and is_covered(
            grant.scope, record.record_id, record.record_type, record.time_ms
        )

    # --- patients and representatives -----------------------------------------------------------

    @initialize()
    def register_first_patient(self) -> None:
        # Most interesting sequences need a registered patient; the rule below covers the rest.
        self.register_patient(PATIENTS[0])

    @rule(patient=stg.sampled_from(PATIENTS))
    def register_patient(self, patient: str) -> None:
        signed = self.ledger.sign(client.build_register_patient, IDENTITIES[patient])
        if self.submit(signed, patient not in self.registered, "register patient"):
            self.registered.add(patient)

    @rule(name=stg.sampled_from((*INSTITUTIONS, *REPRESENTATIVES, STRANGER)))
    def register_non_patient(self, name: str) -> None:
        # Institutions may not double as patients; others may register (but we keep them apart).
        if name in INSTITUTIONS:
            self.submit(
                self.ledger.sign(client.build_register_patient, IDENTITIES[name]), False, "institution"
            )

    @rule(
        patient=stg.sampled_from((PATIENTS[0], *PATIENTS)),
        rep=stg.sampled_from((*REPRESENTATIVES, *REPRESENTATIVES, *PATIENTS)),
        signer=stg.sampled_from(("patient", "patient", "patient", *PATIENTS, *REPRESENTATIVES, STRANGER)),
        add=stg.booleans(),
    )
    def change_representative(self, patient: str, rep: str, signer: str, add: bool) -> None:
        signer = patient if signer == "patient" else signer
        build = client.build_add_representative if add else client.build_remove_representative
        signed = self.ledger.sign(build, IDENTITIES[signer], pid(patient), IDENTITIES[rep].public.sign_key)
        ok = patient in self.registered and signer == patient and rep != patient
        ok = ok and ((rep not in self.reps[patient]) if add else (rep in self.reps[patient]))
        if self.submit(signed, ok, "representative change"):
            (self.reps[patient].add if add else self.reps[patient].discard)(rep)

    # --- records --------------------------------------------------------------------------------

    @rule(
        author=stg.sampled_from(
            ("clinic", "hospital", "clinic", "hospital", "insurer", STRANGER, PATIENTS[0])
        ),
        patient=stg.sampled_from((PATIENTS[0], *PATIENTS)),
        record_type=stg.sampled_from(RECORD_TYPES),
        leak=stg.one_of(
            stg.none(), stg.none(), stg.sampled_from((*INSTITUTIONS, STRANGER, *REPRESENTATIVES))
        ),
        drop_patient=stg.sampled_from((False, False, False, True)),
        supersede=stg.booleans(),
        data=stg.data(),
    )
    def add_record(
        self,
        author: str,
        patient: str,
        record_type: str,
        leak: str | None,
        drop_patient: bool,
        supersede: bool,
        data: stg.DataObject,
    ) -> None:
        if len(self.records) >= MAX_RECORDS:
            return
        time_ms = self.ledger.next_time_ms
        readers = self.sealable_readers(patient, author, record_type, time_ms)
        # A leak seals for someone without a live covering grant (e.g. a revoked grantee).
        leaked = leak is not None and leak not in readers
        if leak is not None:
            readers = readers | {leak}
        if drop_patient and author != patient:
            readers = readers - {patient}
        self.counter += 1
        target: MRecord | None = None
        if supersede and self.records:
            target = data.draw(stg.sampled_from(list(self.records.values())))
        encrypted = encrypt_record(
            RECORD_MAKERS[record_type](self.counter),
            patient_id=pid(patient),
            author=IDENTITIES[author].public.sign_key,
            readers=[enc(r) for r in readers],
            supersedes=target.record_id if target is not None else b"",
        )
        ok = (
            author in AUTHORS
            and patient in self.registered
            and not leaked
            and patient in readers
            and author in readers
        )
        if target is not None:
            ok = ok and target.author == author and target.patient == patient and not target.superseded
            signed = self.ledger.sign(
                client.build_supersede_record, IDENTITIES[author], pid(patient), target.record_id, encrypted
            )
        else:
            signed = self.ledger.sign(client.build_add_record, IDENTITIES[author], pid(patient), encrypted)
        record_id = self.submit(signed, ok, "add record")
        if record_id is not None:
            stored = st.get_record(self.ledger.state, record_id)
            assert stored is not None
            assert stored.time_ms == time_ms
            plaintext = open_record(stored, IDENTITIES[patient]).canonical_json
            self.records[record_id] = MRecord(
                record_id, patient, author, record_type, time_ms, plaintext, readers
            )
            if target is not None:
                target.superseded = True

    # --- inquiries and decisions ----------------------------------------------------------------

    @rule(
        requester=stg.sampled_from((*INSTITUTIONS, *INSTITUTIONS, STRANGER)),
        patient=stg.sampled_from((PATIENTS[0], *PATIENTS)),
        scope_kind=stg.sampled_from(("all", "types", "ids", "past")),
        purpose=stg.sampled_from(sorted(PURPOSES)),
        honest_purpose=stg.sampled_from((True, True, True, False)),
        ttl_ms=stg.sampled_from((3_600_000, 3_600_000, 3_600_000, 5_000, -1, INQUIRY_TTL_MS_MAX + 1)),
        data=stg.data(),
    )
    def request_access(
        self,
        requester: str,
        patient: str,
        scope_kind: str,
        purpose: str,
        honest_purpose: bool,
        ttl_ms: int,
        data: stg.DataObject,
    ) -> None:
        time_ms = self.ledger.next_time_ms
        if honest_purpose and requester in ROLES:
            purpose = sorted(PURPOSES_BY_ROLE[ROLES[requester]])[0]
        if scope_kind == "types":
            scope = client.make_scope(
                record_types=data.draw(stg.sets(stg.sampled_from(RECORD_TYPES), min_size=1))
            )
        elif scope_kind == "ids":
            ids = [r.record_id for r in self.records.values() if r.patient == patient]
            chosen = data.draw(stg.sets(stg.sampled_from(ids), min_size=1)) if ids else {bytes(32)}
            scope = client.make_scope(record_ids=chosen)
        elif scope_kind == "past":
            scope = client.make_scope(to_ms=time_ms - 1)
        else:
            scope = client.make_scope()
        expires_ms = time_ms + ttl_ms
        signed = self.ledger.sign(
            client.build_request_access,
            IDENTITIES[requester],
            pid(patient),
            scope,
            purpose,
            expires_ms,
            "synthetic",
            patient_enc_key=enc(patient),
        )
        ok = (
            requester in ROLES
            and patient in self.registered
            and purpose in PURPOSES_BY_ROLE[ROLES[requester]]
            and 0 < ttl_ms <= INQUIRY_TTL_MS_MAX
        )
        inquiry_id = self.submit(signed, ok, "request access")
        if inquiry_id is not None:
            self.inquiries.append(MInquiry(inquiry_id, patient, requester, scope, expires_ms))

    @rule(
        who=stg.sampled_from(
            ("patient", "patient", "patient", *REPRESENTATIVES, STRANGER, "clinic", PATIENTS[1])
        ),
        grant=stg.sampled_from((True, True, False)),
        outside=stg.sampled_from((False, False, True)),
        data=stg.data(),
    )
    def decide(self, who: str, grant: bool, outside: bool, data: stg.DataObject) -> None:
        if not self.inquiries:
            return
        inquiry = data.draw(stg.sampled_from(self.inquiries))
        signer = inquiry.patient if who == "patient" else who
        time_ms = self.ledger.next_time_ms
        ok = (
            inquiry.status == INQUIRY_OPEN
            and time_ms < inquiry.expires_ms
            and self.acts_for(signer, inquiry.patient)
        )
        if not grant:
            signed = self.ledger.sign(client.build_deny, IDENTITIES[signer], inquiry.inquiry_id)
            if self.submit(signed, ok, "deny"):
                inquiry.status = INQUIRY_DENIED
            return
        # Draws index lists in insertion order, never in (random) id order, so examples replay.
        own = [r for r in self.records.values() if r.patient == inquiry.patient]
        covered = [r for r in own if is_covered(inquiry.scope, r.record_id, r.record_type, r.time_ms)]
        uncovered = [r for r in own if r not in covered]
        chosen: list[MRecord] = []
        # Only the patient's client holds reader keys to re-seal; a representative's grant (and a
        # stranger's attempt) carries none and covers only records sealed for the grantee later.
        if signer == inquiry.patient:
            if covered:
                chosen = data.draw(stg.lists(stg.sampled_from(covered), unique_by=lambda r: r.record_id))
            if outside and uncovered:
                chosen.append(data.draw(stg.sampled_from(uncovered)))
                ok = False
        stored = [st.get_record(self.ledger.state, r.record_id) for r in chosen]
        keys = reseal_record_keys(
            [r for r in stored if r is not None], IDENTITIES[signer], enc(inquiry.requester)
        )
        signed = self.ledger.sign(client.build_grant, IDENTITIES[signer], inquiry.inquiry_id, keys)
        grant_id = self.submit(signed, ok, "grant")
        if grant_id is not None:
            inquiry.status = INQUIRY_GRANTED
            self.grants.append(
                MGrant(
                    grant_id,
                    inquiry.patient,
                    inquiry.requester,
                    inquiry.scope,
                    inquiry.expires_ms,
                    {k.record_id for k in keys},
                )
            )

    @rule(
        who=stg.sampled_from(("patient", "patient", *REPRESENTATIVES, STRANGER, "hospital")), data=stg.data()
    )
    def revoke(self, who: str, data: stg.DataObject) -> None:
        if not self.grants:
            return
        grant = data.draw(stg.sampled_from(self.grants))
        signer = grant.patient if who == "patient" else who
        ok = not grant.revoked and self.acts_for(signer, grant.patient)
        if self.submit(
            self.ledger.sign(client.build_revoke, IDENTITIES[signer], grant.grant_id), ok, "revoke"
        ):
            grant.revoked = True

    # --- reads ----------------------------------------------------------------------------------

    @rule(
        who=stg.sampled_from(("grantee", "grantee", "grantee", *INSTITUTIONS, STRANGER)),
        stray=stg.sampled_from((False, False, True)),
        data=stg.data(),
    )
    def read(self, who: str, stray: bool, data: stg.DataObject) -> None:
        """An institution's node reads under a grant: it must file a receipt first, and only then decrypt."""
        if not self.grants:
            return
        grant = data.draw(stg.sampled_from(self.grants))
        reader = grant.grantee if who == "grantee" else who
        coverable = [r.record_id for r in self.records.values() if self.coverable(grant, r)]
        others = [r for r in self.records if r not in coverable]
        chosen = set(data.draw(stg.lists(stg.sampled_from(coverable), max_size=3))) if coverable else set()
        if stray and others:
            chosen.add(data.draw(stg.sampled_from(others)))
        ok = (
            reader == grant.grantee
            and self.is_live(grant, self.ledger.next_time_ms)
            and bool(chosen)
            and all(r in coverable for r in chosen)
        )
        signed = self.ledger.sign(client.build_read_receipt, IDENTITIES[reader], grant.grant_id, chosen)
        if self.submit(signed, ok, "read receipt") is None:
            return
        stored_grant = st.get_grant(self.ledger.state, grant.grant_id)
        assert stored_grant is not None
        for record_id in sorted(chosen):
            record = st.get_record(self.ledger.state, record_id)
            assert record is not None
            sealed = policy.get_grant_sealed_key(self.ledger.state, stored_grant, record_id)
            opened = open_record(record, IDENTITIES[reader], grant=stored_grant, sealed_key=sealed)
            assert opened.canonical_json == self.records[record_id].plaintext
        self.reads.append((grant.grant_id, tuple(sorted(chosen))))

    @rule(
        requester=stg.sampled_from(("hospital", "clinic", "research", "insurer")),
        patient=stg.sampled_from((PATIENTS[0], *PATIENTS)),
        types=stg.sets(stg.sampled_from(RECORD_TYPES), max_size=2),
    )
    def share_and_read(self, requester: str, patient: str, types: set[str]) -> None:
        """The honest path in one step: inquiry, the patient's grant of every covered record, a read."""
        if patient not in self.registered:
            return
        time_ms = self.ledger.next_time_ms
        scope = client.make_scope(record_types=types)
        purpose = sorted(PURPOSES_BY_ROLE[ROLES[requester]])[0]
        signed = self.ledger.sign(
            client.build_request_access,
            IDENTITIES[requester],
            pid(patient),
            scope,
            purpose,
            time_ms + 3_600_000,
            "x",
            patient_enc_key=enc(patient),
        )
        inquiry_id = self.submit(signed, True, "share: request")
        assert inquiry_id is not None
        inquiry = MInquiry(inquiry_id, patient, requester, scope, time_ms + 3_600_000)
        self.inquiries.append(inquiry)
        covered = [
            st.get_record(self.ledger.state, r.record_id)
            for r in self.records.values()
            if r.patient == patient and is_covered(scope, r.record_id, r.record_type, r.time_ms)
        ]
        keys = reseal_record_keys([r for r in covered if r is not None], IDENTITIES[patient], enc(requester))
        grant_id = self.submit(
            self.ledger.sign(client.build_grant, IDENTITIES[patient], inquiry_id, keys), True, "share: grant"
        )
        assert grant_id is not None
        inquiry.status = INQUIRY_GRANTED
        grant = MGrant(grant_id, patient, requester, scope, inquiry.expires_ms, {k.record_id for k in keys})
        self.grants.append(grant)
        if not keys:
            return
        record_ids = tuple(k.record_id for k in keys)
        signed = self.ledger.sign(client.build_read_receipt, IDENTITIES[requester], grant_id, record_ids)
        self.submit(signed, True, "share: read receipt")
        stored_grant = st.get_grant(self.ledger.state, grant_id)
        assert stored_grant is not None
        for record_id in record_ids:
            record = st.get_record(self.ledger.state, record_id)
            assert record is not None
            opened = open_record(record, IDENTITIES[requester], grant=stored_grant)
            assert opened.canonical_json == self.records[record_id].plaintext
        self.reads.append((grant_id, record_ids))

    @rule(
        requester=stg.sampled_from(("hospital", "clinic", "research", "insurer")),
        patient=stg.sampled_from((PATIENTS[0], *PATIENTS)),
        types=stg.sets(stg.sampled_from(RECORD_TYPES), max_size=2),
        deliver=stg.sampled_from(("all", "all", "some", "none")),
    )
    def share_in_parts(self, requester: str, patient: str, types: set[str], deliver: str) -> None:
        """A grant in parts (ADR 0012): the manifest, then its parts (all, some or none of them),
        each key delivered by a part opening its record for the grantee, and nothing else."""
        if patient not in self.registered:
            return
        time_ms = self.ledger.next_time_ms
        scope = client.make_scope(record_types=types)
        purpose = sorted(PURPOSES_BY_ROLE[ROLES[requester]])[0]
        signed = self.ledger.sign(
            client.build_request_access,
            IDENTITIES[requester],
            pid(patient),
            scope,
            purpose,
            time_ms + 3_600_000,
            "x",
            patient_enc_key=enc(patient),
        )
        inquiry_id = self.submit(signed, True, "parts: request")
        assert inquiry_id is not None
        inquiry = MInquiry(inquiry_id, patient, requester, scope, time_ms + 3_600_000, INQUIRY_GRANTED)
        self.inquiries.append(inquiry)
        covered = [
            st.get_record(self.ledger.state, r.record_id)
            for r in self.records.values()
            if r.patient == patient and is_covered(scope, r.record_id, r.record_type, r.time_ms)
        ]
        keys = reseal_record_keys([r for r in covered if r is not None], IDENTITIES[patient], enc(requester))
        manifest = client.compute_grant_manifest(inquiry_id, keys)
        grant_id = self.submit(
            self.ledger.sign(client.build_grant_manifest, IDENTITIES[patient], manifest),
            True,
            "parts: manifest",
        )
        assert grant_id is not None
        grant = MGrant(grant_id, patient, requester, scope, inquiry.expires_ms, set())
        self.grants.append(grant)
        parts = client.split_grant_parts(keys)
        for index, part in enumerate(parts):
            if deliver == "none" or (deliver == "some" and index % 2):
                continue
            signed = self.ledger.sign(client.build_grant_part, IDENTITIES[patient], grant_id, index, part)
            self.submit(signed, True, "parts: part")
            grant.record_ids |= {k.record_id for k in part}
            # A part again, or by the requester, is refused.
            again = self.ledger.sign(client.build_grant_part, IDENTITIES[requester], grant_id, index, part)
            self.submit(again, False, "parts: forged part")

    # --- time and garbage -----------------------------------------------------------------------

    @rule(ms=stg.sampled_from((1_000, 6_000, 3_600_000)))
    def advance_time(self, ms: int) -> None:
        self.ledger.advance(ms)

    @rule(
        signer=stg.sampled_from(PARTIES),
        kind=stg.sampled_from((*sorted(TX_KINDS), "health.unknown")),
        body=stg.binary(max_size=40),
    )
    def garbage(self, signer: str, kind: str, body: bytes) -> None:
        _, raw, tx_id = signed = sign_tx(
            IDENTITIES[signer],
            chain_id="medledger-health-test",
            kind=kind,
            body=body,
            nonce=self.ledger.nonce(),
        )
        outcome = self.ledger.submit(signed)
        assert not outcome.ok
        assert outcome.rule == ("health.kind" if kind == "health.unknown" else "health.body"), outcome.rule
        assert raw
        assert tx_id

    # --- invariants -----------------------------------------------------------------------------

    def can_decrypt(self, party: str, record_id: bytes) -> bytes | None:
        """What `party`'s client gets from the ledger state for this record: plaintext or nothing."""
        state = self.ledger.state
        record = st.get_record(state, record_id)
        assert record is not None
        identity = IDENTITIES[party]
        try:
            return open_record(record, identity).canonical_json
        except DecryptionError:
            pass
        for grant in st.list_grants(state, record.patient_id):
            sealed = policy.get_grant_sealed_key(state, grant, record_id)  # one-tx grant or a part
            if grant.grantee == identity.public.sign_key and sealed is not None:
                try:
                    return open_record(record, identity, grant=grant, sealed_key=sealed).canonical_json
                except DecryptionError:
                    continue
        return None

    @invariant()
    def only_authorised_parties_decrypt(self) -> None:
        for record in self.records.values():
            granted_to = {g.grantee for g in self.grants if record.record_id in g.record_ids}
            expected = record.readers | granted_to
            assert record.patient in expected
            assert record.author in expected
            for party in PARTIES:
                plaintext = self.can_decrypt(party, record.record_id)
                if party in expected:
                    assert plaintext == record.plaintext, f"{party} should read the record"
                else:
                    assert plaintext is None, f"{party} must not read the record"

    @invariant()
    def every_read_has_a_receipt(self) -> None:
        receipts: set[tuple[bytes, tuple[bytes, ...]]] = set()
        for patient in PATIENTS:
            for audit in st.list_audit_events(self.ledger.state, pid(patient)):
                if audit.event == EVENT_READ:
                    receipts.add((audit.subject_id, audit.record_ids))
                    assert audit.height >= 1
                    assert audit.time_ms > 0
        assert set(self.reads) <= receipts
        assert len(receipts) == len(set(self.reads))

    @invariant()
    def ledger_matches_model(self) -> None:
        state = self.ledger.state
        for patient in PATIENTS:
            stored = st.get_patient(state, pid(patient))
            assert (stored is not None) == (patient in self.registered)
            if stored is not None:
                assert set(stored.representatives) == {
                    IDENTITIES[r].public.sign_key for r in self.reps[patient]
                }
                assert len(st.list_records(state, pid(patient))) == sum(
                    1 for r in self.records.values() if r.patient == patient
                )
        for inquiry in self.inquiries:
            stored_inquiry = st.get_inquiry(state, inquiry.inquiry_id)
            assert stored_inquiry is not None
            assert stored_inquiry.status == inquiry.status
        for grant in self.grants:
            stored_grant = st.get_grant(state, grant.grant_id)
            assert stored_grant is not None
            assert stored_grant.is_revoked == grant.revoked


TestHealthRules = HealthMachine.TestCase
TestHealthRules.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
