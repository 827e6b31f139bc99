"""Typed errors of the chain layer; the API maps each to one problem+json status."""

from enum import StrEnum

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


class BlockRule(StrEnum):
    """Every rule a block must satisfy to extend a node's chain (`chain/executor.py` applies them).

    A refusal names its rule, so callers decide by the rule (drop the peer that served it, report
    it in `medledger verify`), never by reading the message.
    """

    ENCODING = "encoding"
    CHAIN_ID = "chain_id"
    TX_ROOT = "tx_root"
    HEIGHT = "height"
    PARENT = "parent"
    TIME = "time"
    STATE_ROOT = "state_root"
    VALIDATORS = "validators"
    NEXT_VALIDATORS = "next_validators"
    PROPOSER = "proposer"
    CAPS = "caps"
    REPEATED_TX = "repeated_tx"
    MALFORMED_TX = "malformed_tx"
    TX_SIGNATURE = "tx_signature"
    CERTIFICATE = "certificate"


class InvalidBlockError(ChainError):
    """A block that breaks `rule`; nothing of it was applied."""

    code = "invalid_block"

    def __init__(self, message: str, *, rule: BlockRule) -> None:
        super().__init__(message)
        self.rule = rule


class InvalidCommitError(InvalidBlockError):
    """A commit certificate that does not certify the block for the validator set."""

    code = "invalid_commit"

    def __init__(self, message: str, *, forged: bool = False) -> None:
        super().__init__(message, rule=BlockRule.CERTIFICATE)
        #: A signature in it does not verify: whoever sent it forged or garbled it (an honest
        #: peer relays only certificates it checked), unlike one that is merely short or stale.
        self.forged = forged


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

    def __init__(self, message: str, *, rule: BlockRule) -> None:
        super().__init__(message)
        #: The rule the certified block breaks against our chain (parent or state root).
        self.rule = rule


class NotFoundError(ChainError):
    code = "not_found"


class SigningRefusedError(ChainError):
    """Signing would contradict a vote this validator already signed (double-signing)."""

    code = "signing_refused"
