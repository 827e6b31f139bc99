"""Consensus for a chain with exactly one validator: propose, precommit, commit.

With n = 1 the quorum is the validator itself, so one signed precommit is the commit certificate.
The certificate has the same shape and is checked by the same `validate_commit` as a multi-node
one, so a chain started solo stays verifiable by any later node. Crash safety: the precommit is
recorded (synced) before it is signed; after a crash between signing and committing, the
validator moves to the next round rather than ever signing a second block at one (height, round).
"""

from __future__ import annotations

from medledger.chain.app import App
from medledger.chain.errors import SigningRefusedError
from medledger.chain.execution import ExecutedBlock, build_block, execute_block
from medledger.chain.store import BlockStore, LastSigned
from medledger.chain.types import Commit, CommitSig, ValidatorSet, VoteKind, compute_vote_signing_bytes
from medledger.chain.validation import CheckedTx, validate_commit
from medledger.crypto import Identity


class SoloValidator:
    """Produces and commits blocks on its own. Owned by one task; not for concurrent use."""

    def __init__(self, *, store: BlockStore, app: App, identity: Identity, validators: ValidatorSet) -> None:
        me = identity.public.sign_key
        if len(validators) != 1 or not validators.contains(me):
            raise ValueError("solo consensus needs a validator set of exactly this node")
        self._store = store
        self._app = app
        self._identity = identity
        self._validators = validators

    def next_round(self, height: int) -> int:
        """Round 0, or one past any round this validator already signed at `height`."""
        last = self._store.load_last_signed()
        if last is not None and last.height == height:
            return last.round + 1
        return 0

    def propose(self, txs: list[CheckedTx], *, time_ms: int) -> ExecutedBlock:
        """Build and execute the next block (nothing is written yet)."""
        height = self._store.height + 1
        block = build_block(
            store=self._store,
            validators=self._validators,
            proposer=self._identity.public.sign_key,
            round_=self.next_round(height),
            time_ms=time_ms,
            txs=txs,
        )
        return execute_block(self._app, self._store, block, tuple(c.tx for c in txs), [c.tx_id for c in txs])

    def certify(self, executed: ExecutedBlock) -> Commit:
        """Sign the precommit (persisting it first) and wrap it as the commit certificate."""
        header = executed.block.header
        block_hash = executed.block.hash()
        last = self._store.load_last_signed()
        already_signed = last is not None and (last.height, last.round) >= (header.height, header.round)
        if already_signed and last != LastSigned(header.height, header.round, VoteKind.PRECOMMIT, block_hash):
            # Signing here would equivocate: a broken invariant in the caller, never input.
            assert last is not None
            raise SigningRefusedError(
                f"refusing to sign block {header.height} round {header.round}: already signed "
                f"height {last.height} round {last.round}"
            )
        self._store.save_last_signed(LastSigned(header.height, header.round, VoteKind.PRECOMMIT, block_hash))
        me = self._identity.public.sign_key
        signature = self._identity.sign(
            compute_vote_signing_bytes(
                header.chain_id, VoteKind.PRECOMMIT, header.height, header.round, block_hash, me
            )
        )
        commit = Commit(header.height, header.round, block_hash, (CommitSig(me, signature),))
        validate_commit(
            commit,
            chain_id=header.chain_id,
            validators=self._validators,
            block_hash=block_hash,
            height=header.height,
        )
        return commit

    def commit(self, executed: ExecutedBlock, commit: Commit) -> None:
        """Write the block, its certificate and its state changes in one synced batch."""
        self._store.save_block(executed.block, executed.raw, commit, executed.tx_ids, executed.execution)
