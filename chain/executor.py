"""The block pipeline: the one place that decides whether a block extends a node's chain.

Every path that accepts a block goes through a `BlockExecutor`: a proposal consensus must vote
on (`validate_proposal`), a block learned with its certificate from block sync or a late decision
(`validate_certified`), and `medledger verify`'s replay of a whole store (`chain/integrity.py`),
so a chain that verifies is exactly a chain a live node would have accepted. It is synchronous and
clock-free (time is an argument, as in Ethereum's `process_block`): the reactor runs it in a
worker thread, the simulator inline.

The rules, each refused as `InvalidBlockError` naming its `BlockRule`:

* shape: chain id, and the txs hash to the header's tx root (the tx count is bound at decoding);
* link: the height follows our tip, the parent hash is our tip's, the time is after the parent's
  (docs/adr/0007-block-time.md), the state root is ours after the parent;
* validators: the header names the set governing its height and the one governing the next, and
  the proposer is the proposer of (height, header round) (`chain/leader.py`: round-robin, with
  leader skipping at round 0 under a version-2 genesis);
* caps: a version-2 genesis's `ConsensusParams` bound the tx count and the txs' summed bytes (a
  version-1 genesis has chain/limits.py's, which decoding enforces already);
* txs: each decodes, none repeats inside the block or a committed one; for a proposal each
  signature verifies (a certified block's txs were checked by the quorum's honest members);
* certificate (`validate_certified` only): a quorum of that height's set precommitted the block.

A certified block that does not fit our tip (another parent, another state root) is not the
serving peer's fault: a quorum vouched for it, so our own chain or state is wrong, and that is
`StateDivergedError` (the node halts rather than drop honest peers one after another).

This is also the only module that knows whether the application governs its validator set
(`GovernedApp`): who validates a height, and filing and pruning evidence, are asked of it here.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Final

from medledger.chain.app import App
from medledger.chain.errors import (
    BlockRule,
    ChainError,
    InvalidBlockError,
    InvalidTxError,
    StateDivergedError,
    StoreCorruptedError,
)
from medledger.chain.evidence import EvidencePool
from medledger.chain.execution import ExecutedBlock, build_block, execute_block
from medledger.chain.governance import GovernedApp, encode_evidence_tx
from medledger.chain.leader import LeaderSchedule, compute_window
from medledger.chain.store import BlockStore
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import Block, Commit, Genesis, Header, Tx, TxId, ValidatorSet
from medledger.chain.validation import (
    CheckedTx,
    Verifier,
    decode_tx,
    validate_block_shape,
    validate_commit,
    validate_header_link,
    validate_tx_envelope,
)
from medledger.crypto import Identity, verify_signature

#: `lookup(tx_id)`: a tx this node already decoded and verified (its mempool), or None.
KnownTxs = Callable[[TxId], CheckedTx | None]


#: Heights whose validator sets one executor keeps (per tip; peers ask about a few heights).
VALIDATOR_SETS_CACHED_MAX: Final = 64


def _no_known_txs(tx_id: TxId) -> CheckedTx | None:
    return None


class ForkDetectedError(ChainError):
    """Two different blocks certified at one height: more than f validators are faulty. Halt."""

    code = "fork_detected"


class BlockExecutor:
    """Validates, executes and commits blocks on top of one store. Owned by one task at a time."""

    def __init__(
        self, *, store: BlockStore, app: App, genesis: Genesis, verify: Verifier = verify_signature
    ) -> None:
        self.store = store
        self.app = app
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self._verify = verify
        #: Sets (and their keys) by height, valid while the tip is `_cached_tip`: the reactor asks
        #: for them at every peer message, and a governed app decodes its history to answer.
        self._cached_tip = b""
        self._sets: dict[int, tuple[ValidatorSet, frozenset[bytes]]] = {}
        self.params = genesis.consensus_params
        #: Proposers of committed blocks by height (committed headers never change).
        self._proposers: dict[int, bytes] = {}

    # -- validators --------------------------------------------------------------------------------

    def validators_for(self, height: int) -> ValidatorSet:
        """The set governing `height`, from committed state (known up to the tip + 2)."""
        return self._get_set(height)[0]

    def get_members(self, height: int) -> frozenset[bytes]:
        """The signing keys of the set governing `height`."""
        return self._get_set(height)[1]

    def _get_set(self, height: int) -> tuple[ValidatorSet, frozenset[bytes]]:
        tip = self.store.last_block_hash
        if tip != self._cached_tip:
            self._sets.clear()
            self._cached_tip = tip
        cached = self._sets.get(height)
        if cached is None:
            if isinstance(self.app, GovernedApp):
                validators = self.app.get_validators(self.store, height)
            else:
                validators = self.genesis.validators
            cached = (validators, frozenset(v.sign_key for v in validators.validators))
            if len(self._sets) < VALIDATOR_SETS_CACHED_MAX:
                self._sets[height] = cached
        return cached

    def leader_schedule(self, height: int) -> LeaderSchedule:
        """Who proposes each round of `height` (at most the tip + 1), from the committed chain."""
        validators = self.validators_for(height)
        leader_window = self.params.leader_window
        window = compute_window(len(validators), leader_window)
        if window == 0 or height <= window:
            return LeaderSchedule(validators, height, leader_window)
        if height > self.store.height + 1:
            raise ValueError(f"height {height}: its proposers depend on blocks not committed yet")
        first = height - window
        for stale in list(self._proposers):  # a copy taken at once (a worker may add meanwhile)
            if stale < first:
                self._proposers.pop(stale, None)
        recent = tuple(self._get_committed_proposer(h) for h in range(first, height))
        return LeaderSchedule(validators, height, leader_window, recent)

    def _get_committed_proposer(self, height: int) -> bytes:
        proposer = self._proposers.get(height)
        if proposer is None:
            block = self.store.get_block(height)
            if block is None:
                raise StoreCorruptedError(f"block {height} is missing from this node's store")
            proposer = self._proposers[height] = block.header.proposer
        return proposer

    def is_known_validator(self, key: bytes) -> bool:
        """A member of the genesis set, the next height's set or the one after (peer membership)."""
        height = self.store.height + 1
        return (
            self.genesis.validators.contains(key)
            or key in self.get_members(height)
            or key in self.get_members(height + 1)
        )

    # -- building ----------------------------------------------------------------------------------

    def build_proposal(
        self, *, proposer: bytes, round_: int, time_ms: int, txs: list[CheckedTx]
    ) -> ExecutedBlock:
        """The next block carrying `txs` in order, executed (nothing is written)."""
        height = self.store.height + 1
        block = build_block(
            store=self.store,
            validators=self.validators_for(height),
            next_validators=self.validators_for(height + 1),
            proposer=proposer,
            round_=round_,
            time_ms=time_ms,
            txs=txs,
        )
        return execute_block(self.app, self.store, block, tuple(c.tx for c in txs), [c.tx_id for c in txs])

    def file_evidence(self, pool: EvidencePool, identity: Identity, *, time_ms: int) -> list[CheckedTx]:
        """The pending evidence as txs signed by `identity`, to go first in the block it proposes.

        Evidence the ledger would refuse (recorded meanwhile, or about a signer the set at its
        height no longer shows) leaves the pool rather than wasting a slot in every block.
        """
        app = self.app
        if not isinstance(app, GovernedApp):
            return []
        filed: list[CheckedTx] = []
        for evidence in pool.get_pending():
            try:
                app.validate_new_evidence(self.store, evidence, chain_id=self.chain_id)
            except InvalidTxError:
                pool.remove(evidence)
                continue
            kind, body = encode_evidence_tx(evidence)
            # The nonce comes from the offence, not from randomness: a filing is a function of
            # what this node saw (the simulator replays runs from a seed).
            nonce = int.from_bytes(evidence.compute_slot()[:8], "big")
            tx, raw, tx_id = sign_tx(
                identity, chain_id=self.chain_id, kind=kind, body=body, nonce=nonce, timestamp_ms=time_ms
            )
            filed.append(CheckedTx(tx, raw, tx_id))
        return filed

    def prune_evidence(self, pool: EvidencePool) -> None:
        """Forget pending evidence the committed chain has recorded."""
        if len(pool) and isinstance(self.app, GovernedApp):
            pool.prune(lambda slot: GovernedApp.is_evidence_recorded(self.store, slot))

    # -- validating --------------------------------------------------------------------------------

    def validate_proposal(
        self, block: Block, *, known: KnownTxs = _no_known_txs, verified: Container[bytes] = ()
    ) -> ExecutedBlock:
        """Every rule for a fresh block on our tip, tx signatures included; then its execution.

        `known`: txs this node holds decoded and verified already; `verified`: ids whose signature
        it checked before (each signature is checked once).
        """
        return self._validate(block, certified=False, known=known, verified=verified, raw=None)

    def validate_certified(
        self, block: Block, commit: Commit, *, raw: bytes | None = None, known: KnownTxs = _no_known_txs
    ) -> ExecutedBlock:
        """A block with its commit certificate: the certificate, then every rule but tx signatures.

        `raw`: the block's canonical bytes, when the caller holds them (a block from a peer).
        Raises `StateDivergedError` when the certified block follows another parent or state.
        """
        height = block.header.height
        if height != self.store.height + 1:
            raise InvalidBlockError(
                f"expected height {self.store.height + 1}, got {height}", rule=BlockRule.HEIGHT
            )
        validate_commit(
            commit,
            chain_id=self.chain_id,
            validators=self.validators_for(height),
            block_hash=block.hash(),
            height=height,
            verify=self._verify,
        )
        self._validate_fits_tip(block.header)
        return self._validate(block, certified=True, known=known, verified=(), raw=raw)

    def _validate_fits_tip(self, header: Header) -> None:
        store = self.store
        if header.parent_hash != store.last_block_hash:
            raise StateDivergedError(
                f"a block the network certified at height {header.height} follows another block "
                f"{store.height} than this node's",
                rule=BlockRule.PARENT,
            )
        if header.state_root != store.state_root:
            raise StateDivergedError(
                f"this node's state after height {store.height} differs from the state the network "
                f"certified (root {store.state_root.hex()[:16]}…, the network's "
                f"{header.state_root.hex()[:16]}…)",
                rule=BlockRule.STATE_ROOT,
            )

    def _validate(
        self,
        block: Block,
        *,
        certified: bool,
        known: KnownTxs,
        verified: Container[bytes],
        raw: bytes | None,
    ) -> ExecutedBlock:
        header = block.header
        store = self.store
        block_tx_ids = validate_block_shape(block, chain_id=self.chain_id)
        height = store.height + 1
        validators = self.validators_for(height)
        validate_header_link(
            header,
            parent_hash=store.last_block_hash,
            parent_time_ms=store.last_block_time_ms,
            height=height,
            state_root=store.state_root,
            validators_hash=validators.hash(),
        )
        if header.next_validators_hash != self.validators_for(height + 1).hash():
            raise InvalidBlockError(
                f"block {height}: names another next validator set than the chain's",
                rule=BlockRule.NEXT_VALIDATORS,
            )
        if header.proposer != self.leader_schedule(height).get_proposer(header.round).sign_key:
            raise InvalidBlockError(
                f"block {height}: not proposed by round {header.round}'s proposer", rule=BlockRule.PROPOSER
            )
        params = self.params
        if len(block.txs) > params.block_txs_max:
            raise InvalidBlockError(
                f"block {height}: {len(block.txs)} txs, the cap is {params.block_txs_max}",
                rule=BlockRule.CAPS,
            )
        tx_bytes = sum(len(raw_tx) for raw_tx in block.txs)
        if tx_bytes > params.block_bytes_max:
            raise InvalidBlockError(
                f"block {height}: {tx_bytes} bytes of txs, the cap is {params.block_bytes_max}",
                rule=BlockRule.CAPS,
            )
        txs: list[Tx] = []
        seen: set[bytes] = set()
        has_tx = store.has_tx
        for tx_raw, tx_id in zip(block.txs, block_tx_ids, strict=True):
            if tx_id in seen or has_tx(tx_id):
                raise InvalidBlockError(
                    f"block {height}: transaction {tx_id.hex()[:16]}… is committed twice",
                    rule=BlockRule.REPEATED_TX,
                )
            seen.add(tx_id)
            pending = known(tx_id)
            if pending is not None:
                txs.append(pending.tx)
                continue
            try:
                tx, _ = decode_tx(tx_raw, tx_id=tx_id)
            except InvalidTxError as exc:
                raise InvalidBlockError(
                    f"block {height}: {exc.message}", rule=BlockRule.MALFORMED_TX
                ) from None
            if tx.chain_id != self.chain_id:
                # Cheap, so checked even when a certificate vouches for the block's signatures.
                raise InvalidBlockError(
                    f"block {height}: a transaction is for chain {tx.chain_id!r}", rule=BlockRule.CHAIN_ID
                )
            if not certified and tx_id not in verified:
                try:
                    validate_tx_envelope(tx, chain_id=self.chain_id)
                except InvalidTxError as exc:
                    raise InvalidBlockError(
                        f"block {height}: {exc.message}", rule=BlockRule.TX_SIGNATURE
                    ) from None
            txs.append(tx)
        return execute_block(self.app, store, block, tuple(txs), list(block_tx_ids), raw=raw)

    # -- committing --------------------------------------------------------------------------------

    def commit(self, executed: ExecutedBlock, commit: Commit) -> None:
        """Write the block, its certificate and its state changes in one synced batch."""
        self.store.save_block(executed.block, executed.raw, commit, executed.tx_ids, executed.execution)

    def is_committed(self, block: Block) -> bool:
        """Whether `block` is ours at its height already; `ForkDetectedError` if another block is."""
        height = block.header.height
        if height > self.store.height:
            return False
        stored = self.store.get_block(height)
        if stored is None or stored.hash() != block.hash():
            raise ForkDetectedError(f"height {height}: a quorum certified a block that differs from ours")
        return True
