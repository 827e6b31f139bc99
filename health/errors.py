"""Typed errors of the health layer (rule rejections use the chain's `TxRejectedError`).

A transaction that breaks a rule is refused with `medledger.chain.errors.TxRejectedError`, whose
`rule` names the rule (`health.<rule>`): that is what the chain records in the block's results and
what the API reports. The errors here are the health layer's own: a record that is not valid FHIR,
a record that fails verification on a reader's side (its ciphertext is not bound to what the ledger
says about it, or its plaintext does not match its commitment), an inquiry reason that cannot be
sealed or opened, a malformed genesis, or a stored value that does not decode (a bug or a corrupted
store: the node must stop, never guess). None of their messages carries record content or a reason.
"""

from medledger.chain.errors import TxRejectedError
from medledger.errors import MedledgerError


def reject(rule: str, message: str) -> TxRejectedError:
    """The refusal of health rule `rule`: a `TxRejectedError` whose rule is `health.<rule>`."""
    return TxRejectedError(message, rule=f"health.{rule}")


class HealthError(MedledgerError):
    code = "health_error"


class InvalidRecordError(HealthError):
    """A record is not acceptable FHIR R4; the message names field paths, never field values."""

    code = "invalid_record"

    def __init__(self, message: str, *, paths: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.paths = paths


class RecordVerificationError(HealthError):
    """A record on the ledger fails a reader's verification: it must not be shown or re-shared.

    `record_id` names the record (empty if not known yet).
    """

    code = "record_unverified"

    def __init__(self, message: str, *, record_id: bytes = b"") -> None:
        super().__init__(message)
        self.record_id = record_id


class RecordBindingError(RecordVerificationError):
    """The content key opened but the ciphertext is not bound to the record's author, patient,
    type and superseded record: it was re-published under another name, or altered."""

    code = "record_binding"


class CommitmentMismatchError(RecordVerificationError):
    """A decrypted record does not match the commitment on the ledger (tampered or misattributed)."""

    code = "commitment_mismatch"


class InvalidReasonError(HealthError):
    """An inquiry reason cannot be sealed (empty, too long, control characters); names no content."""

    code = "invalid_reason"


class ReasonUnreadableError(HealthError):
    """A sealed inquiry reason does not open for this identity (not a reader, or not bound to the
    inquiry's patient and requester)."""

    code = "reason_unreadable"


class InvalidGenesisError(HealthError):
    """`Genesis.app_state` is not a valid health genesis."""

    code = "invalid_genesis"


class HealthStateError(HealthError):
    """A stored value does not decode or contradicts the layout: the state is corrupt."""

    code = "health_state_corrupt"
