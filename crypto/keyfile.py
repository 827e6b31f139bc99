"""Passphrase-protected key files.

A key file holds one `Identity`: its two 32-byte secrets encrypted with NaCl's secretbox
(XSalsa20-Poly1305) under a key stretched from the passphrase by argon2id, plus the public keys
in clear, so that a node can tell whose key a file holds (`read_public_identity`) without asking
for the passphrase. The format is one small, versioned JSON object:

    {"format": "medledger-key", "version": 1, "kdf": "argon2id", "opslimit": int,
     "memlimit": int, "salt": b64, "nonce": b64, "ciphertext": b64,
     "public": {"sign_key": hex, "enc_key": hex}}

Why these rules:
- Files are outside input. Reading is bounded (`KEY_FILE_SIZE_MAX`) and every field is checked
  before use; the argon2id parameters are bounded too (`KDF_*_MIN/MAX`), so a hostile file cannot
  make us allocate gigabytes or spin for minutes. Anything wrong is a `KeyFileError` naming the
  file; a passphrase that does not decrypt is a `WrongPassphraseError`.
- After decryption the secrets must reproduce the clear public part, so an edited public part can
  never make a node announce keys it cannot use.
- Writes are atomic and private: a temporary file created 0600 with O_EXCL in the same directory,
  fsynced, then renamed over the target and the directory fsynced, so a crash leaves either the old
  file or the new one, never half a key. An existing file is never replaced unless asked.

The byte-level functions (`encode_identity`, `decode_identity`, `decode_public_identity`) are
separate from the file functions so that export and import can reuse the same format.
"""

import base64
import binascii
import contextlib
import json
import os
import re
import secrets as _secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import nacl.exceptions
import nacl.pwhash.argon2id
import nacl.secret
import nacl.utils

from medledger.crypto.errors import KeyFileError, WrongPassphraseError
from medledger.crypto.signing import PUBLIC_KEY_SIZE, SEED_SIZE, Identity, PublicIdentity

KEY_FILE_FORMAT: Final = "medledger-key"
KEY_FILE_VERSION: Final = 1
KEY_FILE_KDF: Final = "argon2id"
#: Largest key file we read, in bytes; a real one is about 500 bytes.
KEY_FILE_SIZE_MAX: Final = 64 * 1024
#: Permissions of a key file: owner read/write only.
KEY_FILE_MODE: Final = 0o600

#: Bounds on argon2id's parameters, both when writing and when reading a file. The upper bounds
#: cap what a hostile file can cost us: 256 MiB of memory ("moderate") and a few passes over it.
KDF_OPSLIMIT_MIN: Final = nacl.pwhash.argon2id.OPSLIMIT_MIN
KDF_OPSLIMIT_MAX: Final = 8
KDF_MEMLIMIT_MIN: Final = nacl.pwhash.argon2id.MEMLIMIT_MIN
KDF_MEMLIMIT_MAX: Final = nacl.pwhash.argon2id.MEMLIMIT_MODERATE

SALT_SIZE: Final = nacl.pwhash.argon2id.SALTBYTES
NONCE_SIZE: Final = nacl.secret.SecretBox.NONCE_SIZE
#: The plaintext is sign_seed || enc_secret; secretbox adds a 16-byte tag.
CIPHERTEXT_SIZE: Final = 2 * SEED_SIZE + nacl.secret.SecretBox.MACBYTES

_KEYS: Final = frozenset(
    {"format", "version", "kdf", "opslimit", "memlimit", "salt", "nonce", "ciphertext", "public"}
)
_PUBLIC_KEYS: Final = frozenset({"sign_key", "enc_key"})
_HEX_KEY = re.compile(rf"[0-9a-f]{{{2 * PUBLIC_KEY_SIZE}}}")

assert nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE <= KDF_OPSLIMIT_MAX
assert nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE <= KDF_MEMLIMIT_MAX
assert nacl.secret.SecretBox.KEY_SIZE == 32


def _validate_kdf_limits(opslimit: object, memlimit: object, source: str) -> tuple[int, int]:
    if type(opslimit) is not int or not KDF_OPSLIMIT_MIN <= opslimit <= KDF_OPSLIMIT_MAX:
        raise KeyFileError(
            f"{source}: argon2id opslimit must be an integer in "
            f"[{KDF_OPSLIMIT_MIN}, {KDF_OPSLIMIT_MAX}], got {opslimit!r}"
        )
    if type(memlimit) is not int or not KDF_MEMLIMIT_MIN <= memlimit <= KDF_MEMLIMIT_MAX:
        raise KeyFileError(
            f"{source}: argon2id memlimit must be an integer in "
            f"[{KDF_MEMLIMIT_MIN}, {KDF_MEMLIMIT_MAX}] bytes, got {memlimit!r}"
        )
    return opslimit, memlimit


def _derive_box(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> nacl.secret.SecretBox:
    if not isinstance(passphrase, bytes):
        raise KeyFileError("the passphrase must be bytes")
    key = nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit
    )
    return nacl.secret.SecretBox(key)


def encode_identity(
    identity: Identity,
    passphrase: bytes,
    *,
    opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
    memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    salt: bytes | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Return the key-file bytes of `identity`, its secrets encrypted under `passphrase`.

    `salt` and `nonce` default to fresh random bytes; they are parameters only so that test
    vectors (scripts/make_web_vectors.py) can be reproduced byte for byte.
    """
    opslimit, memlimit = _validate_kdf_limits(opslimit, memlimit, "key file")
    salt = nacl.utils.random(SALT_SIZE) if salt is None else salt
    nonce = nacl.utils.random(NONCE_SIZE) if nonce is None else nonce
    if len(salt) != SALT_SIZE or len(nonce) != NONCE_SIZE:
        raise KeyFileError(f"key file: the salt must be {SALT_SIZE} bytes and the nonce {NONCE_SIZE}")
    sign_seed, enc_secret = identity.secrets()
    encrypted = _derive_box(passphrase, salt, opslimit, memlimit).encrypt(sign_seed + enc_secret, nonce)
    ciphertext = encrypted.ciphertext
    assert len(ciphertext) == CIPHERTEXT_SIZE
    public = identity.public
    document = {
        "format": KEY_FILE_FORMAT,
        "version": KEY_FILE_VERSION,
        "kdf": KEY_FILE_KDF,
        "opslimit": opslimit,
        "memlimit": memlimit,
        "salt": base64.b64encode(salt).decode("ascii"),
        "nonce": base64.b64encode(nonce).decode("ascii"),
        "ciphertext": base64.b64encode(ciphertext).decode("ascii"),
        "public": {"sign_key": public.sign_key.hex(), "enc_key": public.enc_key.hex()},
    }
    return (json.dumps(document, indent=2) + "\n").encode("ascii")


@dataclass(frozen=True, slots=True)
class _ParsedKeyFile:
    """The checked fields of a key file."""

    opslimit: int
    memlimit: int
    salt: bytes
    nonce: bytes
    ciphertext: bytes
    public: PublicIdentity


def _decode_b64(document: dict[str, object], name: str, size: int, source: str) -> bytes:
    value = document[name]
    try:
        if not isinstance(value, str):
            raise ValueError
        decoded = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise KeyFileError(f"{source}: {name!r} is not valid base64") from None
    if len(decoded) != size:
        raise KeyFileError(f"{source}: {name!r} must be {size} bytes, got {len(decoded)}")
    return decoded


def _parse(data: bytes, source: str) -> _ParsedKeyFile:
    if len(data) > KEY_FILE_SIZE_MAX:
        raise KeyFileError(f"{source}: larger than {KEY_FILE_SIZE_MAX} bytes, not a key file")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise KeyFileError(f"{source}: not a medledger key file (not valid JSON)") from None
    if not isinstance(document, dict) or document.get("format") != KEY_FILE_FORMAT:
        raise KeyFileError(f"{source}: not a medledger key file (format is not {KEY_FILE_FORMAT!r})")
    version = document.get("version")
    if type(version) is not int or version != KEY_FILE_VERSION:
        raise KeyFileError(
            f"{source}: unsupported key file version {version!r} (this build reads "
            f"version {KEY_FILE_VERSION})"
        )
    if set(document) != _KEYS:
        missing = sorted(_KEYS - set(document))
        unexpected = sorted(set(document) - _KEYS)
        raise KeyFileError(
            f"{source}: malformed key file (missing fields {missing}, unexpected {unexpected})"
        )
    if document["kdf"] != KEY_FILE_KDF:
        raise KeyFileError(f"{source}: unsupported kdf {document['kdf']!r}")
    opslimit, memlimit = _validate_kdf_limits(document["opslimit"], document["memlimit"], source)
    public = document["public"]
    if not isinstance(public, dict) or set(public) != _PUBLIC_KEYS:
        raise KeyFileError(f"{source}: 'public' must hold exactly 'sign_key' and 'enc_key'")
    keys: dict[str, bytes] = {}
    for name in sorted(_PUBLIC_KEYS):
        value = public[name]
        if not isinstance(value, str) or _HEX_KEY.fullmatch(value) is None:
            raise KeyFileError(
                f"{source}: public {name!r} must be {2 * PUBLIC_KEY_SIZE} lowercase hex digits"
            )
        keys[name] = bytes.fromhex(value)
    return _ParsedKeyFile(
        opslimit=opslimit,
        memlimit=memlimit,
        salt=_decode_b64(document, "salt", SALT_SIZE, source),
        nonce=_decode_b64(document, "nonce", NONCE_SIZE, source),
        ciphertext=_decode_b64(document, "ciphertext", CIPHERTEXT_SIZE, source),
        public=PublicIdentity(sign_key=keys["sign_key"], enc_key=keys["enc_key"]),
    )


def decode_public_identity(data: bytes, *, source: str = "key data") -> PublicIdentity:
    """Return the clear public part of key-file bytes (checked, but nothing is decrypted)."""
    return _parse(data, source).public


def decode_identity(data: bytes, passphrase: bytes, *, source: str = "key data") -> Identity:
    """Decrypt key-file bytes with `passphrase`; `source` names the data in error messages."""
    parsed = _parse(data, source)
    box = _derive_box(passphrase, parsed.salt, parsed.opslimit, parsed.memlimit)
    try:
        plaintext = box.decrypt(parsed.ciphertext, parsed.nonce)
    except nacl.exceptions.CryptoError:
        raise WrongPassphraseError(
            f"{source}: wrong passphrase (or the encrypted part was altered)"
        ) from None
    if len(plaintext) != 2 * SEED_SIZE:
        raise KeyFileError(f"{source}: decrypted secrets have the wrong size")
    identity = Identity.from_secrets(plaintext[:SEED_SIZE], plaintext[SEED_SIZE:])
    if identity.public != parsed.public:
        raise KeyFileError(f"{source}: the secrets do not match the file's public keys")
    return identity


def _read_bounded(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(KEY_FILE_SIZE_MAX + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror or exc}") from None
    if not data:
        raise KeyFileError(f"{path}: key file is empty")
    return data


def load_identity(path: Path, passphrase: bytes) -> Identity:
    """Read and decrypt the key file at `path`."""
    return decode_identity(_read_bounded(path), passphrase, source=str(path))


def read_public_identity(path: Path) -> PublicIdentity:
    """Return the public identity stored in clear in the key file at `path` (no passphrase)."""
    return decode_public_identity(_read_bounded(path), source=str(path))


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _refuse_overwrite(path: Path) -> KeyFileError:
    return KeyFileError(f"{path}: a key file already exists; refusing to overwrite it")


def _write_private_file_atomically(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write `data` to `path` with mode 0600 so that a crash leaves the old file or the new one."""
    directory = path.parent
    temporary = directory / f".{path.name}.{_secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        try:
            # The umask may have cleared bits of 0600 at creation; set the mode exactly.
            os.fchmod(fd, KEY_FILE_MODE)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(temporary, path)
        else:
            # link() fails if `path` exists, so no concurrent writer is ever silently replaced.
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise _refuse_overwrite(path) from None
            except OSError:
                # A filesystem without hard links: fall back to check-then-rename.
                if path.exists():
                    raise _refuse_overwrite(path) from None
                os.replace(temporary, path)
            else:
                os.unlink(temporary)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def save_identity(
    path: Path,
    identity: Identity,
    passphrase: bytes,
    *,
    overwrite: bool = False,
    opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
    memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
) -> None:
    """Write `identity` to `path`, encrypted under `passphrase`, atomically and with mode 0600.

    Refuses (KeyFileError) to replace an existing file unless `overwrite` is true.
    """
    if not overwrite and path.exists():
        # Checked early to fail before the key stretching; the write itself re-checks atomically.
        raise _refuse_overwrite(path)
    data = encode_identity(identity, passphrase, opslimit=opslimit, memlimit=memlimit)
    try:
        _write_private_file_atomically(path, data, overwrite=overwrite)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write key file: {exc.strerror or exc}") from None
