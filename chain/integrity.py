"""Integrity checks of a node's own store: is what is on disk still the chain it committed?

Pure functions over a `BlockStore` and the genesis (no network, no clock). Two depths:

- `check_tail` (run by every node start): the last N blocks each decode, link by hash to their
  parent, match their tx root, carry a commit certificate valid for the validator set, and are
  found again through the hash → height index. Cheap, so a corrupted tip is never served.
- `check_all` (`medledger verify`): every block as above, then the whole chain is replayed from
  genesis into an in-memory store through the block pipeline a live node uses
  (`BlockExecutor.validate_certified`: certificate, header link, time, validator sets, proposer,
  txs, state root), so verify refuses exactly the blocks a node would have refused. Every tx
  index entry must agree with the replay, and at the end the stored state root and every
  application entry must equal the replay's.

What the tail check cannot see: the state root after the tip block is certified by no header yet
(the next block's header will carry it) and the roots chain a hash over every block's writes, so
only a replay (`check_all`) can check it.

Problems are collected into an `IntegrityReport` rather than raised one by one, so an operator
sees all of them; `IntegrityReport.raise_if_corrupted` turns a report with problems into a
`StoreCorruptedError`. A LevelDB-level fault (bad checksum, unreadable or missing table file)
surfaces from the store as `StoreCorruptedError` and is reported like any other problem.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

from medledger.chain.app import App
from medledger.chain.errors import (
    BlockRule,
    InvalidBlockError,
    StateDivergedError,
    StoreCorruptedError,
)
from medledger.chain.executor import BlockExecutor
from medledger.chain.memdb import MemDB
from medledger.chain.store import BlockStore, TxLocation
from medledger.chain.types import Block, Commit, Genesis, ValidatorSet
from medledger.chain.validation import validate_block_shape, validate_commit

#: Blocks a node checks at start (the tip and the blocks under it).
TAIL_BLOCKS_DEFAULT = 16
#: Problems kept in a report; past this only the count grows (a wrecked store is not listed whole).
PROBLEMS_MAX = 100

#: `progress(blocks_done, blocks_total)`, called after each block.
Progress = Callable[[int, int], None]
#: The validator set that certifies blocks at a height (default: the genesis set at every height;
#: a chain whose set changed by governance passes the set its history gives).
ValidatorsAt = Callable[[int], ValidatorSet]


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """One thing found wrong; `height` 0 means the store as a whole (meta, state).

    `rule`: the block rule a stored block breaks (None: the store itself is damaged, e.g. an
    unreadable entry or an index that contradicts the blocks)."""

    height: int
    what: str
    rule: BlockRule | None = None

    def __str__(self) -> str:
        text = f"height {self.height}: {self.what}" if self.height else self.what
        return text if self.rule is None else f"{text} [rule: {self.rule}]"


@dataclasses.dataclass(frozen=True, slots=True)
class IntegrityReport:
    """What a check looked at and what it found."""

    path: str
    height: int
    first_height: int
    blocks_checked: int
    txs_checked: int
    #: The replay reached the tip and the stored state root (and every app entry) was compared.
    state_checked: bool
    state_root: bytes
    problems: tuple[Problem, ...]
    problems_total: int

    @property
    def is_clean(self) -> bool:
        return self.problems_total == 0

    def raise_if_corrupted(self) -> None:
        if self.is_clean:
            return
        first = self.problems[0]
        more = f" (and {self.problems_total - 1} more)" if self.problems_total > 1 else ""
        raise StoreCorruptedError(f"{self.path}: the store is corrupted: {first}{more}")


class _Findings:
    """Problems collected during one check, capped at `PROBLEMS_MAX`."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.total = 0

    def add(self, height: int, what: str, rule: BlockRule | None = None) -> None:
        self.total += 1
        if len(self.problems) < PROBLEMS_MAX:
            self.problems.append(Problem(height, what, rule))


def _check_meta(store: BlockStore, genesis: Genesis, findings: _Findings) -> None:
    if store.genesis != genesis:
        findings.add(0, "the store holds another chain's genesis than the one given")
    if len(store.state_root) != 32:
        findings.add(0, f"the stored state root is {len(store.state_root)} bytes, not 32")


def _check_block(
    store: BlockStore,
    genesis: Genesis,
    validators_at: ValidatorsAt,
    height: int,
    parent_hash: bytes | None,
    findings: _Findings,
    *,
    check_certificate: bool = True,
) -> tuple[Block, Commit] | None:
    """The checks of one stored block that need no replay; (block, commit) if all passed.

    `parent_hash` None: the parent could not be read, so the link is not checked.
    `check_certificate` False: the replay checks it (with the validator sets it replays).
    """
    try:
        block = store.get_block(height)
        commit = store.get_commit(height)
    except StoreCorruptedError as exc:
        findings.add(height, exc.message)
        return None
    if block is None or commit is None:
        findings.add(height, "the block or its certificate is missing")
        return None
    before = findings.total
    block_hash = block.hash()
    try:
        validate_block_shape(block, chain_id=genesis.chain_id)
    except InvalidBlockError as exc:
        findings.add(height, exc.message, exc.rule)
    if parent_hash is not None and block.header.parent_hash != parent_hash:
        findings.add(height, "the parent hash does not match the stored block below it", BlockRule.PARENT)
    if check_certificate:
        try:
            validate_commit(
                commit,
                chain_id=genesis.chain_id,
                validators=validators_at(height),
                block_hash=block_hash,
                height=height,
            )
        except InvalidBlockError as exc:
            findings.add(height, f"invalid certificate: {exc.message}", exc.rule)
    try:
        indexed = store.get_height_by_hash(block_hash)
    except StoreCorruptedError as exc:
        findings.add(height, exc.message)
    else:
        if indexed != height:
            findings.add(height, f"the hash index names height {indexed} for this block")
    return (block, commit) if findings.total == before else None


def _genesis_validators(genesis: Genesis) -> ValidatorsAt:
    def validators_at(height: int) -> ValidatorSet:
        return genesis.validators

    return validators_at


def get_validators_at(app: App, store: BlockStore, genesis: Genesis) -> ValidatorsAt:
    """The sets that certified the stored chain, as the block pipeline reads them from the stored
    state (a governed app's history; genesis's set otherwise)."""
    return BlockExecutor(store=store, app=app, genesis=genesis).validators_for


def _parent_hash(store: BlockStore, genesis: Genesis, height: int) -> bytes | None:
    if height == 1:
        return genesis.hash()
    try:
        block = store.get_block(height - 1)
    except StoreCorruptedError:
        return None  # reported when that block itself is checked
    return None if block is None else block.hash()


def check_tail(
    store: BlockStore,
    genesis: Genesis,
    *,
    blocks: int = TAIL_BLOCKS_DEFAULT,
    validators_at: ValidatorsAt | None = None,
) -> IntegrityReport:
    """Check the last `blocks` blocks (and the tip meta) of `store`; see the module docstring."""
    validators_at = validators_at or _genesis_validators(genesis)
    findings = _Findings()
    _check_meta(store, genesis, findings)
    first = max(1, store.height - blocks + 1)
    parent_hash = _parent_hash(store, genesis, first) if store.height >= first else None
    checked = txs = 0
    for height in range(first, store.height + 1):
        found = _check_block(store, genesis, validators_at, height, parent_hash, findings)
        checked += 1
        if found is None:
            parent_hash = None
            continue
        block, _ = found
        txs += len(block.txs)
        parent_hash = block.hash()
    if parent_hash is not None and store.height > 0 and parent_hash != store.last_block_hash:
        findings.add(store.height, "the tip hash the store keeps differs from its tip block")
    return _report(store, first if store.height else 0, checked, txs, False, findings)


def check_all(
    store: BlockStore,
    genesis: Genesis,
    app_factory: Callable[[], App],
    *,
    progress: Progress | None = None,
    validators_at: ValidatorsAt | None = None,
) -> IntegrityReport:
    """Check every block and replay the chain from genesis; see the module docstring.

    `validators_at`: the sets that certified the chain, for blocks past where the replay stopped
    (default: the stored state's history). Replayed blocks are judged by the replay's own history.
    """
    app = app_factory()
    validators_at = validators_at or get_validators_at(app, store, genesis)
    findings = _Findings()
    _check_meta(store, genesis, findings)
    replay = BlockStore.open_memory(MemDB(), name=f"replay of {store.path}")
    replay.init_genesis(genesis, app.init_state(genesis))
    executor = BlockExecutor(store=replay, app=app, genesis=genesis)
    replaying = True
    parent_hash: bytes | None = genesis.hash()
    txs = 0
    for height in range(1, store.height + 1):
        found = _check_block(
            store, genesis, validators_at, height, parent_hash, findings, check_certificate=not replaying
        )
        if found is None:
            parent_hash = None
            if replaying:
                replaying = False
                findings.add(height, "the chain was not replayed past this block")
        else:
            block, commit = found
            parent_hash = block.hash()
            txs += len(block.txs)
            if replaying:
                replaying = _replay_block(store, executor, block, commit, findings)
        if progress is not None:
            progress(height, store.height)
    state_checked = replaying
    if replaying:
        if replay.state_root != store.state_root:
            findings.add(0, "the stored state root differs from the replayed chain's")
        _compare_app_state(store, replay, findings)
    return _report(store, 1 if store.height else 0, store.height, txs, state_checked, findings)


def _replay_block(
    store: BlockStore, executor: BlockExecutor, block: Block, commit: Commit, findings: _Findings
) -> bool:
    """Run `block` through the pipeline on the replay store and compare with what `store`
    recorded; False: the replay stops here."""
    height = block.header.height
    try:
        executed = executor.validate_certified(block, commit)
    except (InvalidBlockError, StateDivergedError) as exc:
        findings.add(height, exc.message, exc.rule)
        return False
    for index, (tx_id, result) in enumerate(zip(executed.tx_ids, executed.execution.results, strict=True)):
        expected = TxLocation(height, index, int(result.ok), result.code)
        try:
            stored = store.get_tx_location(tx_id)
        except StoreCorruptedError as exc:
            findings.add(height, exc.message)
            continue
        if stored != expected:
            findings.add(height, f"the tx index entry of {tx_id.hex()} differs from the replay")
    executor.commit(executed, commit)
    return True


def _compare_app_state(store: BlockStore, replay: BlockStore, findings: _Findings) -> None:
    """Every application entry of `store` equals the replay's (one problem: the first difference)."""
    try:
        pairs = itertools.zip_longest(store.iter_app(), replay.iter_app())
        for stored, replayed in pairs:
            if stored != replayed:
                key = (stored or replayed or (b"", b""))[0]
                findings.add(0, f"application state differs from the replay at key {key!r}")
                return
    except StoreCorruptedError as exc:
        findings.add(0, exc.message)


def _report(
    store: BlockStore, first: int, checked: int, txs: int, state_checked: bool, findings: _Findings
) -> IntegrityReport:
    return IntegrityReport(
        path=str(store.path),
        height=store.height,
        first_height=first,
        blocks_checked=checked,
        txs_checked=txs,
        state_checked=state_checked,
        state_root=store.state_root,
        problems=tuple(findings.problems),
        problems_total=findings.total,
    )
