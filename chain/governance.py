"""On-chain governance of the validator set, and equivocation evidence, as chain-level txs.

`GovernedApp` wraps the application: txs whose kind starts with `chain.` are handled here, all
others go to the wrapped app. Its state lives under the `chain/` prefix of the app keyspace (no
application uses it), so it is committed, synced and re-executed like any other state.

* `chain.validator_add` (body: a `Validator`) and `chain.validator_remove` (body: its signing key)
  are approvals, signed by current validators. A change passes in the block where more than two
  thirds of the current set have approved it (strictly: the approvals outnumber ⌊2n/3⌋) and takes
  effect at that height + 2, so the next header's `next_validators_hash` announces it one block
  ahead and nobody is surprised by a set. One change at a time; a change that would leave fewer
  validators than the old set's quorum (the blocks around the switch still need that quorum) or
  an empty set is refused.
* `chain.evidence` (body: two conflicting votes) and `chain.evidence_proposal` (body: two
  conflicting signed proposals) record an offence once per slot (signer, height, round, kind):
  both messages must be validly signed by one validator of the set at their height (see
  `medledger.chain.evidence`). Evidence is filed by a proposer in its own block, never through
  the mempool: `check_tx` refuses it (`chain.evidence_in_block`), so a node that sees an
  equivocation never floods the network with its own copy of the report.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Final

from medledger.chain.app import TX_OK, App, BlockExecution, OverlayState, StateReader, TxResult
from medledger.chain.codec import (
    FieldSpec,
    FixedBytes,
    Seq,
    Struct,
    UInt,
    decode,
    encode,
    encode_primitive,
    wire_fields,
)
from medledger.chain.errors import CodecError, TxRejectedError
from medledger.chain.evidence import (
    ConflictingProposalEvidence,
    DuplicateVoteEvidence,
    Evidence,
    validate_evidence,
)
from medledger.chain.limits import CONSENSUS_MESSAGE_BYTES_MAX
from medledger.chain.types import (
    Block,
    Genesis,
    Tx,
    TxId,
    Validator,
    ValidatorSet,
    Vote,
)
from medledger.crypto import PUBLIC_KEY_SIZE, digest

KIND_PREFIX: Final = "chain."
KIND_VALIDATOR_ADD: Final = "chain.validator_add"
KIND_VALIDATOR_REMOVE: Final = "chain.validator_remove"
KIND_EVIDENCE: Final = "chain.evidence"
KIND_EVIDENCE_PROPOSAL: Final = "chain.evidence_proposal"
#: The tx kinds that carry evidence, and the body each decodes to.
EVIDENCE_KINDS: Final[dict[str, type[DuplicateVoteEvidence] | type[ConflictingProposalEvidence]]] = {
    KIND_EVIDENCE: DuplicateVoteEvidence,
    KIND_EVIDENCE_PROPOSAL: ConflictingProposalEvidence,
}
#: Blocks between the block that passes a change and the first height it governs.
ACTIVATION_DELAY: Final = 2
#: Validator sets kept for checking evidence about recent heights.
HISTORY_MAX: Final = 16

_PREFIX: Final = b"chain/"
_HISTORY: Final = _PREFIX + b"vset-history"
_PENDING: Final = _PREFIX + b"pending"
_EVIDENCE: Final = _PREFIX + b"evidence/"
_ROOT_DOMAIN: Final = b"medledger/governed-root/v1\x00"


@dataclasses.dataclass(frozen=True, slots=True)
class RemoveBody:
    sign_key: bytes

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(sign_key=FixedBytes(PUBLIC_KEY_SIZE))


#: The body of a `chain.evidence` tx (kept under its old name: the wire is the same).
EvidenceBody = DuplicateVoteEvidence


@dataclasses.dataclass(frozen=True, slots=True)
class SetEpoch:
    """The validator set that governs heights from `since`."""

    since: int
    validators: ValidatorSet

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        since=UInt(minimum=1), validators=Struct(ValidatorSet)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class SetHistory:
    epochs: tuple[SetEpoch, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(epochs=Seq(Struct(SetEpoch), HISTORY_MAX + 1))


@dataclasses.dataclass(frozen=True, slots=True)
class Pending:
    """A proposed change and the validators that approved it so far."""

    change: bytes  # digest of (kind, body): what the approvals are for
    kind_add: int
    validator: Validator
    approvals: tuple[bytes, ...]

    WIRE_FIELDS: ClassVar[dict[str, FieldSpec]] = wire_fields(
        change=FixedBytes(32),
        kind_add=UInt(maximum=1),
        validator=Struct(Validator),
        approvals=Seq(FixedBytes(PUBLIC_KEY_SIZE), 256),
    )


def get_history(state: StateReader, genesis_validators: ValidatorSet) -> SetHistory:
    raw = state.get(_HISTORY)
    if raw is None:
        return SetHistory((SetEpoch(1, genesis_validators),))
    return decode(SetHistory, raw, max_bytes=1 << 20)


def get_validators_at(history: SetHistory, height: int) -> ValidatorSet:
    """The set that governs `height` (the latest epoch that started at or before it)."""
    current = history.epochs[0].validators
    for epoch in history.epochs:
        if epoch.since <= height:
            current = epoch.validators
    return current


def _get_pending(state: StateReader) -> Pending | None:
    raw = state.get(_PENDING)
    return None if raw is None else decode(Pending, raw, max_bytes=1 << 16)


class GovernedApp:
    """An `App` that adds validator-set governance and evidence to the wrapped application."""

    def __init__(self, inner: App, genesis_validators: ValidatorSet) -> None:
        self.inner = inner
        self.genesis_validators = genesis_validators

    def get_validators(self, state: StateReader, height: int) -> ValidatorSet:
        return get_validators_at(get_history(state, self.genesis_validators), height)

    # -- App ---------------------------------------------------------------------------------------

    def init_state(self, genesis: Genesis) -> BlockExecution:
        return self.inner.init_state(genesis)

    def check_tx(self, tx: Tx, tx_id: TxId, state: StateReader) -> None:
        if tx.kind in EVIDENCE_KINDS:
            raise TxRejectedError(
                "evidence is filed by a proposer in its block, not through the mempool",
                rule="chain.evidence_in_block",
            )
        if tx.kind.startswith(KIND_PREFIX):
            # Admission checks against the next height's set; the block re-checks at its own.
            history = get_history(state, self.genesis_validators)
            self._process(tx, OverlayState(state), history, height=None)
        else:
            self.inner.check_tx(tx, tx_id, state)

    def apply_block(
        self, block: Block, txs: tuple[Tx, ...], state: StateReader, state_root: bytes
    ) -> BlockExecution:
        app_txs = tuple(tx for tx in txs if not tx.kind.startswith(KIND_PREFIX))
        if len(app_txs) == len(txs):  # the common case: no governance in this block
            return self._wrap_root(self.inner.apply_block(block, txs, state, state_root), {}, state_root)
        # The inner app sees the block without the chain's txs: each of its txs beside its own
        # encoding (an app derives tx ids from `block.txs`, index by index). The view keeps the
        # header's height, time and proposer, which is all an app reads; its tx root is the block's.
        app_raws = tuple(
            raw for raw, tx in zip(block.txs, txs, strict=True) if not tx.kind.startswith(KIND_PREFIX)
        )
        app_block = Block(dataclasses.replace(block.header, tx_count=len(app_raws)), app_raws)
        inner = self.inner.apply_block(app_block, app_txs, state, state_root)
        overlay = OverlayState(state)
        history = get_history(state, self.genesis_validators)
        results: list[TxResult] = []
        inner_results = iter(inner.results)
        for tx in txs:
            if not tx.kind.startswith(KIND_PREFIX):
                results.append(next(inner_results))
                continue
            scratch = OverlayState(overlay)
            try:
                history = self._process(tx, scratch, history, height=block.header.height)
            except TxRejectedError as exc:
                results.append(TxResult(False, exc.rule, exc.message))
                continue
            for key, value in scratch.writes.items():
                overlay.put(key, value)
            results.append(TX_OK)
        merged = BlockExecution(inner.writes, tuple(results), inner.state_root)
        return self._wrap_root(merged, overlay.writes, state_root)

    @staticmethod
    def _wrap_root(
        execution: BlockExecution, gov_writes: dict[bytes, bytes | None], parent_root: bytes
    ) -> BlockExecution:
        if not gov_writes:
            return execution
        writes = dict(execution.writes)
        writes.update(gov_writes)
        changes = encode_changes(gov_writes)
        return BlockExecution(
            writes, execution.results, digest(_ROOT_DOMAIN + execution.state_root + digest(changes))
        )

    # -- rules -------------------------------------------------------------------------------------

    def _process(self, tx: Tx, state: OverlayState, history: SetHistory, *, height: int | None) -> SetHistory:
        """Apply one chain tx to `state`; raises `TxRejectedError` naming the rule."""
        # At admission (height None) the tx is judged by the newest set; in a block by its height's.
        at = height if height is not None else max(e.since for e in history.epochs)
        validators = get_validators_at(history, at)
        if tx.kind in EVIDENCE_KINDS:
            self._process_evidence(tx, state, history)
            return history
        if tx.kind not in (KIND_VALIDATOR_ADD, KIND_VALIDATOR_REMOVE):
            raise TxRejectedError(f"unknown chain transaction kind {tx.kind!r}", rule="chain.kind")
        if not validators.contains(tx.sender):
            raise TxRejectedError(
                "only a current validator may approve a validator change", rule="chain.approver"
            )
        if any(e.since > at for e in history.epochs):
            raise TxRejectedError("another validator change is still to take effect", rule="chain.one_change")
        try:
            if tx.kind == KIND_VALIDATOR_ADD:
                validator = decode(Validator, tx.body, max_bytes=1024)
            else:
                key = decode(RemoveBody, tx.body, max_bytes=1024).sign_key
                found = [v for v in validators.validators if v.sign_key == key]
                if not found:
                    raise TxRejectedError("that key is not a validator", rule="chain.not_validator")
                validator = found[0]
        except CodecError as exc:
            raise TxRejectedError(f"malformed body: {exc.message}", rule="chain.body") from None
        adding = tx.kind == KIND_VALIDATOR_ADD
        members = [v for v in validators.validators if v.sign_key != validator.sign_key]
        if adding:
            if validators.contains(validator.sign_key):
                raise TxRejectedError("that key is already a validator", rule="chain.already_validator")
            new_set = ValidatorSet.of([*members, validator])
        else:
            if len(members) < max(1, validators.quorum):
                raise TxRejectedError(
                    f"removing it would leave {len(members)} validators, fewer than the quorum of "
                    f"{validators.quorum} the blocks around the change need",
                    rule="chain.breaks_quorum",
                )
            new_set = ValidatorSet.of(members)
        change = digest(tx.kind.encode() + b"\x00" + encode(validator))
        pending = _get_pending(state)
        if pending is None or pending.change != change:
            pending = Pending(change, int(adding), validator, ())
        if tx.sender in pending.approvals:
            raise TxRejectedError(
                "this validator already approved the change", rule="chain.duplicate_approval"
            )
        approvals = tuple(sorted({*pending.approvals, tx.sender}))
        if len(approvals) * 3 <= 2 * len(validators) or height is None:
            state.put(_PENDING, encode(Pending(change, int(adding), validator, approvals)))
            return history
        # Passed: it governs from height + ACTIVATION_DELAY.
        state.put(_PENDING, None)
        epochs = (*history.epochs, SetEpoch(height + ACTIVATION_DELAY, new_set))[-(HISTORY_MAX + 1) :]
        new_history = SetHistory(epochs)
        state.put(_HISTORY, encode(new_history))
        return new_history

    def _process_evidence(self, tx: Tx, state: OverlayState, history: SetHistory) -> None:
        try:
            evidence = decode(EVIDENCE_KINDS[tx.kind], tx.body, max_bytes=2 * CONSENSUS_MESSAGE_BYTES_MAX)
        except CodecError as exc:
            raise TxRejectedError(f"malformed evidence: {exc.message}", rule="chain.body") from None
        self.validate_new_evidence(state, evidence, chain_id=tx.chain_id, history=history)
        state.put(_EVIDENCE + evidence.compute_slot(), encode(evidence))

    def validate_new_evidence(
        self, state: StateReader, evidence: Evidence, *, chain_id: str, history: SetHistory | None = None
    ) -> None:
        """That `evidence` is valid and its slot not on the ledger yet (what a block would check:
        a proposer asks this before it includes evidence); raises `TxRejectedError`."""
        if history is None:
            history = get_history(state, self.genesis_validators)
        validators = get_validators_at(history, evidence.height)
        validate_evidence(evidence, chain_id=chain_id, validators=validators)
        if state.get(_EVIDENCE + evidence.compute_slot()) is not None:
            raise TxRejectedError("this offence is already on the ledger", rule="chain.evidence_known")

    @staticmethod
    def is_evidence_recorded(state: StateReader, slot: bytes) -> bool:
        return state.get(_EVIDENCE + slot) is not None


def get_evidence_kind(evidence: Evidence) -> str:
    return KIND_EVIDENCE if isinstance(evidence, DuplicateVoteEvidence) else KIND_EVIDENCE_PROPOSAL


def encode_changes(writes: dict[bytes, bytes | None]) -> bytes:
    return encode_primitive(sorted(writes.items(), key=lambda kv: kv[0]))


def encode_evidence(vote_a: Vote, vote_b: Vote) -> bytes:
    return encode(DuplicateVoteEvidence(vote_a, vote_b))


def encode_evidence_tx(evidence: Evidence) -> tuple[str, bytes]:
    """The tx kind and body that file `evidence`."""
    return get_evidence_kind(evidence), encode(evidence)


def decode_evidence_tx(tx: Tx) -> Evidence | None:
    """The evidence a `chain.evidence*` tx carries; None for another kind or a malformed body."""
    cls = EVIDENCE_KINDS.get(tx.kind)
    if cls is None:
        return None
    try:
        return decode(cls, tx.body, max_bytes=2 * CONSENSUS_MESSAGE_BYTES_MAX)
    except CodecError:
        return None


def encode_removal(sign_key: bytes) -> bytes:
    return encode(RemoveBody(sign_key))
