"""Key backup: `medledger keys export` re-encrypts a node key under a backup passphrase, and
`medledger keys import` restores it (mode 0600) under a new key passphrase: same identity."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from medledger.crypto import Identity, WrongPassphraseError, load_identity, save_identity
from medledger.node.cli import main


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, Identity]:
    identity = Identity.generate()
    path = tmp_path / "node_key.json"
    save_identity(path, identity, b"node-pass")
    return path, identity


def write(path: Path, text: str) -> Path:
    path.write_text(text + "\n", encoding="utf-8")
    return path


def test_export_then_import_restores_the_same_identity(tmp_path: Path, key: tuple[Path, Identity]) -> None:
    key_file, identity = key
    node_pass, backup_pass = write(tmp_path / "node.pass", "node-pass"), write(tmp_path / "backup.pass", "bk")
    backup, restored = tmp_path / "backup.key", tmp_path / "restored" / "node_key.json"
    restored.parent.mkdir()
    runner = CliRunner()
    exported = runner.invoke(
        main,
        [
            "keys",
            "export",
            "--key",
            str(key_file),
            "--out",
            str(backup),
            "--key-passphrase-file",
            str(node_pass),
            "--passphrase-file",
            str(backup_pass),
        ],
    )
    assert exported.exit_code == 0, exported.output
    assert identity.public.fingerprint() in exported.output
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    # The backup is under the backup passphrase only.
    assert load_identity(backup, b"bk").secrets() == identity.secrets()
    with pytest.raises(WrongPassphraseError):
        load_identity(backup, b"node-pass")

    new_pass = write(tmp_path / "new.pass", "new-node-pass")
    imported = runner.invoke(
        main,
        [
            "keys",
            "import",
            "--in",
            str(backup),
            "--out",
            str(restored),
            "--passphrase-file",
            str(backup_pass),
            "--key-passphrase-file",
            str(new_pass),
        ],
    )
    assert imported.exit_code == 0, imported.output
    assert stat.S_IMODE(restored.stat().st_mode) == 0o600
    assert load_identity(restored, b"new-node-pass").secrets() == identity.secrets()
    assert identity.public.sign_key.hex() in imported.output


def test_invalid_backup_passphrase_is_refused_and_writes_nothing(
    tmp_path: Path, key: tuple[Path, Identity], monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file, _ = key
    monkeypatch.setenv("MEDLEDGER_KEY_PASSPHRASE", "node-pass")
    monkeypatch.setenv("MEDLEDGER_BACKUP_PASSPHRASE", "right")
    backup, restored = tmp_path / "backup.key", tmp_path / "restored.json"
    runner = CliRunner()
    assert (
        runner.invoke(main, ["keys", "export", "--key", str(key_file), "--out", str(backup)]).exit_code == 0
    )

    monkeypatch.setenv("MEDLEDGER_BACKUP_PASSPHRASE", "wrong")
    refused = runner.invoke(main, ["keys", "import", "--in", str(backup), "--out", str(restored)])
    assert refused.exit_code == 1
    assert "wrong passphrase" in refused.output
    assert not restored.exists()


def test_invalid_key_passphrase_on_export_is_refused(tmp_path: Path, key: tuple[Path, Identity]) -> None:
    key_file, _ = key
    wrong, backup_pass = write(tmp_path / "wrong.pass", "nope"), write(tmp_path / "backup.pass", "bk")
    backup = tmp_path / "backup.key"
    refused = CliRunner().invoke(
        main,
        [
            "keys",
            "export",
            "--key",
            str(key_file),
            "--out",
            str(backup),
            "--key-passphrase-file",
            str(wrong),
            "--passphrase-file",
            str(backup_pass),
        ],
    )
    assert refused.exit_code == 1
    assert "wrong passphrase" in refused.output
    assert not backup.exists()


def test_invalid_import_over_an_existing_key_is_refused_without_force(
    tmp_path: Path, key: tuple[Path, Identity], monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file, identity = key
    monkeypatch.setenv("MEDLEDGER_KEY_PASSPHRASE", "node-pass")
    monkeypatch.setenv("MEDLEDGER_BACKUP_PASSPHRASE", "bk")
    backup = tmp_path / "backup.key"
    runner = CliRunner()
    assert (
        runner.invoke(main, ["keys", "export", "--key", str(key_file), "--out", str(backup)]).exit_code == 0
    )
    other = tmp_path / "other.json"
    save_identity(other, Identity.generate(), b"node-pass")
    before = other.read_bytes()

    refused = runner.invoke(main, ["keys", "import", "--in", str(backup), "--out", str(other)])
    assert refused.exit_code == 1
    assert "refusing to overwrite" in refused.output
    assert other.read_bytes() == before

    forced = runner.invoke(main, ["keys", "import", "--in", str(backup), "--out", str(other), "--force"])
    assert forced.exit_code == 0, forced.output
    assert load_identity(other, b"node-pass").secrets() == identity.secrets()
