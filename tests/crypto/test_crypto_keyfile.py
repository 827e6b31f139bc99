"""Tests of passphrase-protected key files: round trip, permissions, refusals, hostile files."""

import base64
import json
import os
import random
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypedDict

import nacl.pwhash.argon2id
import pytest

from medledger.crypto import (
    CryptoError,
    Identity,
    KeyFileError,
    WrongPassphraseError,
    decode_identity,
    decode_public_identity,
    encode_identity,
    keyfile,
    load_identity,
    read_public_identity,
    save_identity,
)
from medledger.crypto.keyfile import KDF_MEMLIMIT_MAX, KDF_OPSLIMIT_MAX, KEY_FILE_SIZE_MAX


# Tiny argon2id limits keep the suite fast; one test uses the defaults.
class KdfLimits(TypedDict):
    opslimit: int
    memlimit: int


FAST: KdfLimits = {
    "opslimit": nacl.pwhash.argon2id.OPSLIMIT_MIN,
    "memlimit": nacl.pwhash.argon2id.MEMLIMIT_MIN,
}
PASSPHRASE = b"correct horse battery staple"
IDENTITY = Identity.generate()
OTHER = Identity.generate()
GOOD_BYTES = encode_identity(IDENTITY, PASSPHRASE, **FAST)


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "validator.key"


@pytest.fixture
def saved(key_path: Path) -> Path:
    save_identity(key_path, IDENTITY, PASSPHRASE, **FAST)
    return key_path


def directory_snapshot(directory: Path) -> dict[str, bytes]:
    return {entry.name: entry.read_bytes() for entry in directory.iterdir() if entry.is_file()}


def assert_rejected(
    directory: Path, action: Callable[[], object], error: type[Exception], match: str | None
) -> pytest.ExceptionInfo[Exception]:
    """Run a refused action; check the typed error and that no file was created or changed."""
    before = directory_snapshot(directory)
    with pytest.raises(error, match=match) as info:
        action()
    assert directory_snapshot(directory) == before
    return info


def document() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(GOOD_BYTES)
    return parsed


def write_document(path: Path, doc: object) -> None:
    path.write_text(json.dumps(doc))


@pytest.fixture
def umask_zero() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


# --- round trip ------------------------------------------------------------------------------


def test_save_load_round_trip(saved: Path) -> None:
    loaded = load_identity(saved, PASSPHRASE)
    assert loaded.secrets() == IDENTITY.secrets()
    assert loaded.public == IDENTITY.public
    assert loaded.sign(b"m") == IDENTITY.sign(b"m")
    assert read_public_identity(saved) == IDENTITY.public
    assert [entry.name for entry in saved.parent.iterdir()] == [saved.name]


def test_file_format_is_the_documented_json(saved: Path) -> None:
    doc = json.loads(saved.read_bytes())
    assert set(doc) == {
        "format", "version", "kdf", "opslimit", "memlimit", "salt", "nonce", "ciphertext", "public",
    }  # fmt: skip
    assert doc["format"] == "medledger-key"
    assert doc["version"] == 1
    assert doc["kdf"] == "argon2id"
    assert (doc["opslimit"], doc["memlimit"]) == (FAST["opslimit"], FAST["memlimit"])
    assert len(base64.b64decode(doc["salt"])) == 16
    assert len(base64.b64decode(doc["nonce"])) == 24
    assert len(base64.b64decode(doc["ciphertext"])) == 64 + 16
    assert doc["public"] == {
        "sign_key": IDENTITY.public.sign_key.hex(),
        "enc_key": IDENTITY.public.enc_key.hex(),
    }
    text = saved.read_text()
    for secret in IDENTITY.secrets():
        assert secret.hex() not in text
        assert base64.b64encode(secret).decode() not in text


def test_each_save_uses_a_fresh_salt_and_nonce() -> None:
    first = json.loads(encode_identity(IDENTITY, PASSPHRASE, **FAST))
    second = json.loads(encode_identity(IDENTITY, PASSPHRASE, **FAST))
    assert first["salt"] != second["salt"]
    assert first["nonce"] != second["nonce"]
    assert first["ciphertext"] != second["ciphertext"]


def test_round_trip_with_default_kdf_limits(key_path: Path) -> None:
    save_identity(key_path, IDENTITY, PASSPHRASE)
    doc = json.loads(key_path.read_bytes())
    assert doc["opslimit"] == nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
    assert doc["memlimit"] == nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
    assert load_identity(key_path, PASSPHRASE).secrets() == IDENTITY.secrets()


def test_bytes_functions_round_trip_for_export_and_import() -> None:
    assert decode_identity(GOOD_BYTES, PASSPHRASE).secrets() == IDENTITY.secrets()
    assert decode_public_identity(GOOD_BYTES) == IDENTITY.public


def test_empty_passphrase_round_trips() -> None:
    data = encode_identity(IDENTITY, b"", **FAST)
    assert decode_identity(data, b"").public == IDENTITY.public
    with pytest.raises(WrongPassphraseError):
        decode_identity(data, b"x")


# --- permissions and overwriting -------------------------------------------------------------


@pytest.mark.usefixtures("umask_zero")
def test_file_mode_is_0600_whatever_the_umask(key_path: Path) -> None:
    save_identity(key_path, IDENTITY, PASSPHRASE, **FAST)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    os.umask(0o277)  # would leave 0400 if the mode were not set explicitly
    save_identity(key_path, OTHER, PASSPHRASE, overwrite=True, **FAST)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_invalid_overwrite_is_refused(saved: Path) -> None:
    info = assert_rejected(
        saved.parent,
        lambda: save_identity(saved, OTHER, PASSPHRASE, **FAST),
        KeyFileError,
        "already exists",
    )
    assert str(saved) in str(info.value)
    assert load_identity(saved, PASSPHRASE).public == IDENTITY.public


def test_overwrite_true_replaces_the_file(saved: Path) -> None:
    save_identity(saved, OTHER, b"new", overwrite=True, **FAST)
    assert load_identity(saved, b"new").public == OTHER.public
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert [entry.name for entry in saved.parent.iterdir()] == [saved.name]


def test_invalid_concurrent_writer_is_never_clobbered(
    key_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that appears while the passphrase is being stretched is still not replaced."""

    def encode_while_another_writer_wins(*args: Any, **kwargs: Any) -> bytes:
        key_path.write_bytes(b"the other writer's key")
        return encode_identity(*args, **kwargs)

    monkeypatch.setattr(keyfile, "encode_identity", encode_while_another_writer_wins)
    with pytest.raises(KeyFileError, match="already exists"):
        save_identity(key_path, IDENTITY, PASSPHRASE, **FAST)
    assert key_path.read_bytes() == b"the other writer's key"
    assert [entry.name for entry in key_path.parent.iterdir()] == [key_path.name]


def test_save_works_on_filesystems_without_hard_links(
    key_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: object, target: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    save_identity(key_path, IDENTITY, PASSPHRASE, **FAST)
    assert load_identity(key_path, PASSPHRASE).public == IDENTITY.public
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert [entry.name for entry in key_path.parent.iterdir()] == [key_path.name]


def test_invalid_save_into_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "node.key"
    with pytest.raises(KeyFileError, match="cannot write key file") as info:
        save_identity(path, IDENTITY, PASSPHRASE, **FAST)
    assert str(path) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_invalid_save_over_a_directory_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "node.key"
    target.mkdir()
    with pytest.raises(KeyFileError, match="cannot write key file"):
        save_identity(target, IDENTITY, PASSPHRASE, overwrite=True, **FAST)
    assert [entry.name for entry in tmp_path.iterdir()] == ["node.key"]
    assert target.is_dir()


@pytest.mark.parametrize(
    "limits",
    [
        KdfLimits(opslimit=0, memlimit=FAST["memlimit"]),
        KdfLimits(opslimit=KDF_OPSLIMIT_MAX + 1, memlimit=FAST["memlimit"]),
        KdfLimits(opslimit=FAST["opslimit"], memlimit=1024),
        KdfLimits(opslimit=FAST["opslimit"], memlimit=KDF_MEMLIMIT_MAX + 1),
    ],
)
def test_invalid_kdf_limits_are_refused_on_save(key_path: Path, limits: KdfLimits) -> None:
    assert_rejected(
        key_path.parent,
        lambda: save_identity(key_path, IDENTITY, PASSPHRASE, **limits),
        KeyFileError,
        "argon2id",
    )


# --- wrong passphrase and hostile files ------------------------------------------------------


def test_invalid_wrong_passphrase(saved: Path) -> None:
    info = assert_rejected(
        saved.parent,
        lambda: load_identity(saved, b"wrong"),
        WrongPassphraseError,
        "wrong passphrase",
    )
    assert str(saved) in str(info.value)
    assert isinstance(info.value, KeyFileError)


def test_invalid_missing_file(key_path: Path) -> None:
    for action in (lambda: load_identity(key_path, PASSPHRASE), lambda: read_public_identity(key_path)):
        info = assert_rejected(key_path.parent, action, KeyFileError, "cannot read key file")
        assert str(key_path) in str(info.value)


def test_invalid_every_truncation_is_a_key_file_error(key_path: Path) -> None:
    complete = GOOD_BYTES.rstrip()  # only trailing whitespace may go
    for length in range(len(complete)):
        key_path.write_bytes(complete[:length])
        info = assert_rejected(
            key_path.parent, lambda: load_identity(key_path, PASSPHRASE), KeyFileError, None
        )
        assert str(key_path) in str(info.value)
        assert not isinstance(info.value, WrongPassphraseError)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"\x00\xff\xfe garbage \x80", "not valid JSON"),
        (random.Random(0).randbytes(300), "not valid JSON"),
        (b"[" * 50_000, "not valid JSON"),
        (b" " * (KEY_FILE_SIZE_MAX + 1), "larger than"),
        (b"[]", "not a medledger key file"),
        (b'"medledger-key"', "not a medledger key file"),
        (b"null", "not a medledger key file"),
        (b'{"format": "other"}', "not a medledger key file"),
        (b'{"format": "medledger-key"}', "unsupported key file version None"),
    ],
)
def test_invalid_garbage_files(key_path: Path, content: bytes, match: str) -> None:
    key_path.write_bytes(content)
    for action in (lambda: load_identity(key_path, PASSPHRASE), lambda: read_public_identity(key_path)):
        info = assert_rejected(key_path.parent, action, KeyFileError, match)
        assert str(key_path) in str(info.value)
        assert not isinstance(info.value, WrongPassphraseError)


def _set(name: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        doc[name] = value

    return edit


def _set_public(name: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        doc["public"][name] = value

    return edit


def _delete(name: str) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        del doc[name]

    return edit


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_set("version", 2), "unsupported key file version 2"),
        (_set("version", True), "unsupported key file version True"),
        (_set("version", "1"), "unsupported key file version '1'"),
        (_set("kdf", "scrypt"), "unsupported kdf 'scrypt'"),
        (_delete("salt"), r"missing fields \['salt'\]"),
        (_set("extra", 1), r"unexpected \['extra'\]"),
        (_set("opslimit", 10**12), "opslimit"),
        (_set("opslimit", 0), "opslimit"),
        (_set("opslimit", 2.0), "opslimit"),
        (_set("opslimit", True), "opslimit"),
        (_set("memlimit", 2**40), "memlimit"),  # a hostile file must not allocate a terabyte
        (_set("memlimit", KDF_MEMLIMIT_MAX + 1), "memlimit"),
        (_set("memlimit", -1), "memlimit"),
        (_set("memlimit", "8192"), "memlimit"),
        (_set("salt", "not base64!"), "'salt' is not valid base64"),
        (_set("salt", 12), "'salt' is not valid base64"),
        (_set("salt", base64.b64encode(bytes(15)).decode()), "'salt' must be 16 bytes"),
        (_set("nonce", base64.b64encode(bytes(23)).decode()), "'nonce' must be 24 bytes"),
        (_set("nonce", "é"), "'nonce' is not valid base64"),
        (_set("ciphertext", base64.b64encode(bytes(79)).decode()), "'ciphertext' must be 80"),
        (_set("public", []), "'public' must hold exactly"),
        (_set("public", {"sign_key": "00" * 32}), "'public' must hold exactly"),
        (_set_public("sign_key", "AB" * 32), "lowercase hex"),
        (_set_public("enc_key", "ab" * 31), "lowercase hex"),
        (_set_public("enc_key", " ab" * 32), "lowercase hex"),
        (_set_public("enc_key", None), "lowercase hex"),
    ],
)
def test_invalid_malformed_fields(key_path: Path, edit: Callable[[dict[str, Any]], None], match: str) -> None:
    doc = document()
    edit(doc)
    write_document(key_path, doc)
    for action in (lambda: load_identity(key_path, PASSPHRASE), lambda: read_public_identity(key_path)):
        info = assert_rejected(key_path.parent, action, KeyFileError, match)
        assert str(key_path) in str(info.value)
        assert not isinstance(info.value, WrongPassphraseError)


def test_invalid_public_part_swapped_for_another_identity(key_path: Path) -> None:
    doc = document()
    doc["public"] = {"sign_key": OTHER.public.sign_key.hex(), "enc_key": OTHER.public.enc_key.hex()}
    write_document(key_path, doc)
    # The clear part alone looks fine; decrypting reveals the mismatch.
    assert read_public_identity(key_path) == OTHER.public
    info = assert_rejected(
        key_path.parent,
        lambda: load_identity(key_path, PASSPHRASE),
        KeyFileError,
        "do not match the file's public keys",
    )
    assert not isinstance(info.value, WrongPassphraseError)


@pytest.mark.parametrize("field", ["salt", "nonce", "ciphertext"])
def test_invalid_altered_encrypted_part_reads_as_wrong_passphrase(key_path: Path, field: str) -> None:
    doc = document()
    raw = bytearray(base64.b64decode(doc[field]))
    raw[len(raw) // 2] ^= 0x01
    doc[field] = base64.b64encode(bytes(raw)).decode()
    write_document(key_path, doc)
    assert_rejected(
        key_path.parent,
        lambda: load_identity(key_path, PASSPHRASE),
        WrongPassphraseError,
        "wrong passphrase",
    )


def test_invalid_altered_kdf_limit_reads_as_wrong_passphrase(key_path: Path) -> None:
    doc = document()
    doc["opslimit"] += 1
    write_document(key_path, doc)
    assert_rejected(
        key_path.parent,
        lambda: load_identity(key_path, PASSPHRASE),
        WrongPassphraseError,
        "wrong passphrase",
    )


def test_invalid_non_bytes_passphrase_is_refused(saved: Path) -> None:
    with pytest.raises(CryptoError, match="passphrase must be bytes"):
        load_identity(saved, "text")  # type: ignore[arg-type]


def test_a_given_salt_and_nonce_reproduce_a_key_file_byte_for_byte() -> None:
    """Only test vectors fix them (scripts/make_web_vectors.py); by default both are fresh."""
    salt, nonce = bytes(range(keyfile.SALT_SIZE)), bytes(range(keyfile.NONCE_SIZE))
    first = encode_identity(IDENTITY, PASSPHRASE, **FAST, salt=salt, nonce=nonce)
    assert first == encode_identity(IDENTITY, PASSPHRASE, **FAST, salt=salt, nonce=nonce)
    assert first != encode_identity(IDENTITY, PASSPHRASE, **FAST)
    assert decode_identity(first, PASSPHRASE).secrets() == IDENTITY.secrets()


def test_invalid_salt_or_nonce_sizes_are_refused() -> None:
    with pytest.raises(KeyFileError):
        encode_identity(IDENTITY, PASSPHRASE, **FAST, salt=bytes(keyfile.SALT_SIZE - 1))
    with pytest.raises(KeyFileError):
        encode_identity(IDENTITY, PASSPHRASE, **FAST, nonce=bytes(keyfile.NONCE_SIZE + 1))
