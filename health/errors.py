"""Typed errors of the health layer (rule rejections use the chain's `TxRejectedError`).

A transaction that breaks a rule is refused with `medledger.chain.errors.TxRejectedError`, whose
`rule` names the rule (`health.<rule>`): that is what the chain records in the block's results and
what the API reports. The errors here are the health layer's own: a record that is not valid FHIR,
a record whose plaintext does not match its commitment, a malformed genesis, or a stored value that
does not decode (a bug or a corrupted store: the node must stop, never guess).
"""

from medledger.errors import MedledgerError


class HealthError(MedledgerError):
    code = "health_error"


class InvalidRecordError(HealthError):
    """A record is not acceptable FHIR R4; the message names field paths, never field values."""

    code = "invalid_record"

    def __init__(self, message: str, *, paths: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.paths = paths


class CommitmentMismatchError(HealthError):
    """A decrypted record does not match the commitment on the ledger (tampered or misattributed)."""

    code = "commitment_mismatch"


class InvalidGenesisError(HealthError):
    """`Genesis.app_state` is not a valid health genesis."""

    code = "invalid_genesis"


class HealthStateError(HealthError):
    """A stored value does not decode or contradicts the layout: the state is corrupt."""

    code = "health_state_corrupt"
