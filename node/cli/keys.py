"""`medledger keys`: create, inspect, back up and restore a node's identity key file.

The key file is passphrase-protected (MEDLEDGER_KEY_PASSPHRASE); a backup is the same identity
re-encrypted under a separate backup passphrase (MEDLEDGER_BACKUP_PASSPHRASE).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import click

from medledger.crypto import Identity, KeyFileError, load_identity, read_public_identity, save_identity
from medledger.node.cli._common import (
    fail,
    overwrite_key_option,
    passphrase_file_option,
    read_key_passphrase,
    read_secret,
)
from medledger.node.config import ENV_PASSPHRASE

ENV_BACKUP_PASSPHRASE = "MEDLEDGER_BACKUP_PASSPHRASE"

_KEY_PASSPHRASE_HELP = f"The key file's passphrase (default: {ENV_PASSPHRASE}, else a prompt)."
_NEW_KEY_PASSPHRASE_HELP = f"The new key file's passphrase (default: {ENV_PASSPHRASE}, else a prompt)."
_BACKUP_PASSPHRASE_HELP = f"The backup's passphrase (default: {ENV_BACKUP_PASSPHRASE}, else a prompt)."


@click.group("keys")
def keys() -> None:
    """Create and inspect identity key files (ed25519 signing + x25519 encryption)."""


@keys.command("new")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Key file to write.")
@passphrase_file_option()
@overwrite_key_option
def keys_new(out: Path, passphrase_file: Path | None, force: bool) -> None:
    """Generate a new identity and write it to a passphrase-protected key file (mode 0600)."""
    passphrase = read_key_passphrase(passphrase_file, confirm=True)
    identity = Identity.generate()
    try:
        save_identity(out, identity, passphrase, overwrite=force)
    except KeyFileError as exc:
        fail(exc.message)
    _print_public(out)


def _print_public(path: Path) -> None:
    public = read_public_identity(path)
    click.echo(f"key file:    {path}")
    click.echo(f"fingerprint: {public.fingerprint()}")
    click.echo(f"sign key:    {public.sign_key.hex()}")
    click.echo(f"enc key:     {public.enc_key.hex()}")


@keys.command("show")
@click.argument("key_file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--check", is_flag=True, help="Also decrypt the key file to check the passphrase.")
@passphrase_file_option()
def keys_show(key_file: Path, check: bool, passphrase_file: Path | None) -> None:
    """Show a key file's public keys (no passphrase needed unless --check)."""
    try:
        _print_public(key_file)
        if check:
            load_identity(key_file, read_key_passphrase(passphrase_file, confirm=False))
            click.echo("passphrase:  ok")
    except KeyFileError as exc:
        fail(exc.message)


class _Passphrase(NamedTuple):
    """Where one passphrase comes from: the file, else the environment variable, else a prompt."""

    file: Path | None
    env: str
    prompt: str

    def read(self, *, confirm: bool) -> bytes:
        return read_secret(
            self.file,
            env=self.env,
            prompt=self.prompt,
            confirm=confirm,
            missing=f"no passphrase for {self.prompt.lower()}: pass a passphrase file or set {self.env}",
        )


def _key_passphrase(passphrase_file: Path | None) -> _Passphrase:
    return _Passphrase(passphrase_file, ENV_PASSPHRASE, "Key passphrase")


def _backup_passphrase(passphrase_file: Path | None) -> _Passphrase:
    return _Passphrase(passphrase_file, ENV_BACKUP_PASSPHRASE, "Backup passphrase")


def _rewrap(
    source: Path, source_passphrase: _Passphrase, out: Path, out_passphrase: _Passphrase, *, force: bool
) -> Identity:
    """Decrypt the key file `source` and write its identity to `out` under another passphrase."""
    try:
        identity = load_identity(source, source_passphrase.read(confirm=False))
        save_identity(out, identity, out_passphrase.read(confirm=True), overwrite=force)
    except KeyFileError as exc:
        fail(exc.message)
    return identity


@keys.command("export")
@click.option(
    "--key", "key_file", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True
)
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@passphrase_file_option("--key-passphrase-file", help_text=_KEY_PASSPHRASE_HELP)
@passphrase_file_option(help_text=_BACKUP_PASSPHRASE_HELP)
@click.option("--force", is_flag=True, help="Overwrite an existing backup file.")
def keys_export(
    key_file: Path, out: Path, key_passphrase_file: Path | None, passphrase_file: Path | None, force: bool
) -> None:
    """Write a backup of a key file, re-encrypted under a separate backup passphrase (mode 0600).

    Keep the backup and its passphrase apart (e.g. offline media and a safe): with both, anyone
    can act as this node.
    """
    identity = _rewrap(
        key_file, _key_passphrase(key_passphrase_file), out, _backup_passphrase(passphrase_file), force=force
    )
    click.echo(f"backup:      {out} (mode 0600, encrypted under the backup passphrase)")
    click.echo(f"fingerprint: {identity.public.fingerprint()}")


@keys.command("import")
@click.option("--in", "backup", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True)
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@passphrase_file_option(help_text=_BACKUP_PASSPHRASE_HELP)
@passphrase_file_option("--key-passphrase-file", help_text=_NEW_KEY_PASSPHRASE_HELP)
@overwrite_key_option
def keys_import(
    backup: Path, out: Path, passphrase_file: Path | None, key_passphrase_file: Path | None, force: bool
) -> None:
    """Restore a key file (mode 0600) from a backup made by `keys export`."""
    if out.exists() and not force:
        fail(f"{out}: a key file already exists; refusing to overwrite it (use --force)")
    _rewrap(
        backup, _backup_passphrase(passphrase_file), out, _key_passphrase(key_passphrase_file), force=force
    )
    _print_public(out)
