"""Typed errors of the chain layer; the API maps each to one problem+json status."""

from medledger.errors import MedledgerError


class ChainError(MedledgerError):
    code = "chain_error"


class CodecError(ChainError):
    """Bytes that are not a valid canonical encoding of the expected wire type."""

    code = "malformed"


class InvalidTxError(ChainError):
    """A transaction that must not enter the mempool or a block."""

    code = "invalid_tx"


class MalformedTxError(InvalidTxError):
    """Bytes that do not decode as a canonical transaction."""

    code = "malformed_tx"


class TxTooLargeError(InvalidTxError):
    code = "tx_too_large"


class WrongChainError(InvalidTxError):
    code = "wrong_chain"


class BadSignatureError(InvalidTxError):
    code = "bad_signature"


class DuplicateTxError(InvalidTxError):
    """The transaction is already committed (a replay) or already pending."""

    code = "duplicate_tx"


class StaleTxError(InvalidTxError):
    """The transaction's timestamp is too far from the node's clock."""

    code = "stale_tx"


class TxRejectedError(InvalidTxError):
    """The application refused the transaction; `rule` names the rule that refused it."""

    code = "tx_rejected"

    def __init__(self, message: str, *, rule: str = "app") -> None:
        super().__init__(message)
        self.rule = rule


class MempoolFullError(ChainError):
    code = "mempool_full"


class InvalidBlockError(ChainError):
    code = "invalid_block"


class InvalidCommitError(InvalidBlockError):
    code = "invalid_commit"


class StoreError(ChainError):
    code = "store_error"


class StoreCorruptedError(StoreError):
    """The store's contents contradict themselves; the node must refuse to serve them."""

    code = "store_corrupted"


class StateDivergedError(StoreCorruptedError):
    """A quorum certified a block on our tip whose state root is not ours: our state is wrong.

    Not the serving peer's fault (the certificate vouches for the block): this node must halt, not
    drop honest peers one after the other.
    """

    code = "state_diverged"


class NotFoundError(ChainError):
    code = "not_found"


class SigningRefusedError(ChainError):
    """Signing would contradict a vote this validator already signed (double-signing)."""

    code = "signing_refused"
