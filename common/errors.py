"""The root of medledger's error hierarchy.

Every layer derives its own typed errors from `MedledgerError`; the REST API maps them to
problem+json responses in one place (`medledger.node.problems`). Errors carry their details as
attributes so callers never parse messages.
"""


class MedledgerError(Exception):
    """Base class of every error medledger raises on purpose."""

    #: A short, stable, machine-readable code (used as the problem+json `type` suffix).
    code: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
