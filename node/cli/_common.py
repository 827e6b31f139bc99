"""What several command groups of the `medledger` CLI share: failing with a message, reading a
passphrase, asking a node's JSON endpoint, and the options that recur (`--home`, `--passphrase-file`,
`--force`, `--json`).

Every option a command shows is declared once here when two commands show it the same way, so that
their help texts cannot drift apart.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, NoReturn, ParamSpec, TypeVar

import click

from medledger.errors import MedledgerError
from medledger.node.config import ENV_PASSPHRASE

#: The API port of `medledger init` and the patient client's default node URL.
DEFAULT_API_PORT = 26657
#: How long `fetch_json` waits for a node's answer, in seconds.
FETCH_TIMEOUT_S_DEFAULT = 5.0

_F = TypeVar("_F", bound=Callable[..., Any])
_P = ParamSpec("_P")


def fail(message: str) -> NoReturn:
    """Stop the command: click prints `Error: message` on stderr and exits 1."""
    raise click.ClickException(message)


def parse_hex32(value: str, message: str) -> bytes:
    """32 bytes given as 64 hex characters (a key, a study or change id); else fail with `message`."""
    try:
        parsed = bytes.fromhex(value)
    except ValueError:
        parsed = b""
    if len(parsed) != 32:
        fail(message)
    return parsed


def read_secret(
    passphrase_file: Path | None, *, env: str, prompt: str, confirm: bool, missing: str | None = None
) -> bytes:
    """From the file, else the environment variable `env`, else a prompt on a terminal.

    Off a terminal with neither, fails with `missing` (default: name --passphrase-file and `env`).
    """
    if passphrase_file is not None:
        try:
            return passphrase_file.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            fail(f"{passphrase_file}: cannot be read: {exc.strerror}")
    if env in os.environ:
        return os.environ[env].encode()
    if not sys.stdin.isatty():
        fail(missing or f"no passphrase: pass --passphrase-file or set {env}")
    value: str = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return value.encode()


def read_key_passphrase(passphrase_file: Path | None, *, confirm: bool) -> bytes:
    """A node key file's passphrase: --passphrase-file, else MEDLEDGER_KEY_PASSPHRASE, else a prompt."""
    return read_secret(passphrase_file, env=ENV_PASSPHRASE, prompt="Passphrase", confirm=confirm)


def fetch_json(url: str, timeout_s: float = FETCH_TIMEOUT_S_DEFAULT, *, token: str | None = None) -> Any:
    """GET `url` from one of our nodes and decode its JSON body (with the API token, if given)."""
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - our node
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
        return json.loads(response.read())


#: `--home` of a node home that must exist (start, verify, rebuild).
home_option = click.option(
    "--home", type=click.Path(path_type=Path, file_okay=False, exists=True), required=True
)
#: `--force` where a command writes a key file.
overwrite_key_option = click.option("--force", is_flag=True, help="Overwrite an existing key file.")


def passphrase_file_option(*decls: str, help_text: str | None = None) -> Callable[[_F], _F]:
    """An existing file holding a passphrase (default name: `--passphrase-file`)."""
    return click.option(
        *(decls or ("--passphrase-file",)),
        type=click.Path(path_type=Path, exists=True, dir_okay=False),
        help=help_text,
    )


def json_option(help_text: str | None = None) -> Callable[[_F], _F]:
    """`--json`: print the command's answer as JSON (the parameter is `as_json`)."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def reports_errors(command: Callable[_P, None]) -> Callable[_P, None]:
    """Let `command` fail with the message of any `MedledgerError` it raises (exit 1, no traceback).

    Apply it right above the `def`, below the click decorators.
    """

    @functools.wraps(command)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except MedledgerError as exc:
            fail(exc.message)

    return run


#: Milliseconds in a day (dates on the command line are whole UTC days).
DAY_MS: Final = 24 * 3600 * 1000


def parse_date_ms(value: str | None, default: int, option: str) -> int:
    """A `YYYY-MM-DD` date (UTC midnight) in ms since the epoch; `default` when not given."""
    if value is None:
        return default
    try:
        day = datetime.date.fromisoformat(value)
    except ValueError:
        fail(f"{option} must be a date (YYYY-MM-DD)")
    return int(datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp() * 1000)
