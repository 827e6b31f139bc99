"""Errors of the node layer (configuration, start-up, API requests)."""

from medledger.errors import MedledgerError


class NodeError(MedledgerError):
    code = "node_error"


class ConfigError(NodeError):
    """A configuration file, environment override or flag that cannot be used; says which and why."""

    code = "config_error"


class BadRequestError(NodeError):
    """A request the API cannot parse (bad JSON, wrong content type, bad parameter)."""

    code = "bad_request"

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
