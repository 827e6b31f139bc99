"""Joining a running health network by governance (issue 16, ADR 0020): the joining side's home
and join request, and the validators' side: the txs that approve a change.

`join_home` makes the home of an institution that is not in the genesis: a fresh node key, the
network's genesis (checked to be a health network's, and not to know the key already), an API
token, and a config whose peers are the given URLs. It writes `join-request.json`, which a
validator's operator proposes (`medledger governance propose-institution`); the node syncs from
genesis as soon as a validator has proposed it and acts for its institution once the addition is
committed.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from pathlib import Path
from typing import Any, Final

from medledger.chain.codec import decode, encode
from medledger.chain.errors import CodecError
from medledger.chain.types import Genesis
from medledger.crypto import Identity, save_identity
from medledger.health.app import decode_genesis
from medledger.health.errors import InvalidGenesisError
from medledger.health.types import ROLES, Institution
from medledger.node.config import CONFIG_FILE, render_config
from medledger.node.errors import ConfigError
from medledger.node.genesis_file import load_genesis, save_genesis
from medledger.node.home import GENESIS_FILE, KEY_FILE, PASSPHRASE_FILE, write_api_token, write_secret_file

JOIN_REQUEST_FILE: Final = "join-request.json"
JOIN_REQUEST_FORMAT: Final = "medledger-join-request"
JOIN_REQUEST_VERSION: Final = 1
#: Largest join request file read (a few keys and a name).
JOIN_REQUEST_BYTES_MAX: Final = 16 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class JoinRequest:
    """What a joining institution asks the validators to register, on which network."""

    chain_id: str
    genesis_hash: bytes
    institution: Institution

    def to_json(self) -> dict[str, Any]:
        i = self.institution
        return {
            "format": JOIN_REQUEST_FORMAT,
            "version": JOIN_REQUEST_VERSION,
            "chain_id": self.chain_id,
            "genesis_hash": self.genesis_hash.hex(),
            "institution": {
                "name": i.name,
                "role": i.role,
                "sign_key": i.sign_key.hex(),
                "enc_key": i.enc_key.hex(),
            },
        }


def _check_wire(institution: Institution) -> None:
    """The wire's own checks (the name's length and characters): what the chain decodes."""
    raw = encode(institution)
    decode(Institution, raw, max_bytes=len(raw))


def _hex_key(value: object, what: str, source: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise ConfigError(f"{source}: {what} must be 64 hex characters")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"{source}: {what} must be 64 hex characters") from None


def load_join_request(path: Path) -> JoinRequest:
    """Read and check a join request file (untrusted: it comes from outside the network)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(JOIN_REQUEST_BYTES_MAX + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    if len(raw) > JOIN_REQUEST_BYTES_MAX:
        raise ConfigError(f"{path}: larger than a join request can be ({JOIN_REQUEST_BYTES_MAX} bytes)")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != JOIN_REQUEST_FORMAT:
        raise ConfigError(f"{path}: not a medledger join request")
    if data.get("version") != JOIN_REQUEST_VERSION:
        raise ConfigError(f"{path}: join request version {data.get('version')!r} is not supported")
    body = data.get("institution")
    chain_id = data.get("chain_id")
    if not isinstance(body, dict) or not isinstance(chain_id, str):
        raise ConfigError(f"{path}: a join request names its chain_id and institution")
    name, role = body.get("name"), body.get("role")
    if not isinstance(name, str) or not isinstance(role, str):
        raise ConfigError(f"{path}: the institution needs a name and a role")
    if role not in ROLES:
        raise ConfigError(f"{path}: role {role!r} is not one of {', '.join(sorted(ROLES))}")
    institution = Institution(
        name,
        role,
        _hex_key(body.get("sign_key"), "sign_key", str(path)),
        _hex_key(body.get("enc_key"), "enc_key", str(path)),
    )
    try:
        _check_wire(institution)
    except CodecError as exc:
        raise ConfigError(f"{path}: the institution does not encode: {exc.message}") from None
    return JoinRequest(chain_id, _hex_key(data.get("genesis_hash"), "genesis_hash", str(path)), institution)


@dataclasses.dataclass(frozen=True, slots=True)
class JoinResult:
    home: Path
    request: JoinRequest
    request_path: Path
    passphrase_written: bool


def join_home(
    home: Path,
    *,
    genesis_file: Path,
    name: str,
    role: str,
    peers: tuple[str, ...],
    api_port: int,
    p2p_port: int,
    ops_port: int,
    passphrase: bytes | None = None,
    block_interval_ms: int = 200,
    key_opslimit: int | None = None,
    key_memlimit: int | None = None,
) -> JoinResult:
    """Create the home of an institution joining the network `genesis_file` describes."""
    home = home.expanduser().resolve()
    if home.exists() and any(home.iterdir()):
        raise ConfigError(f"{home} is not empty; choose a new directory for the joining node")
    if role not in ROLES:
        raise ConfigError(f"role {role!r} is not one of {', '.join(sorted(ROLES))}")
    genesis: Genesis = load_genesis(genesis_file)
    try:
        health = decode_genesis(genesis.app_state)
    except InvalidGenesisError as exc:
        raise ConfigError(f"{genesis_file}: not a health network's genesis: {exc.message}") from None
    if not health.institutions:
        raise ConfigError(f"{genesis_file}: not a health network's genesis (it registers no institution)")
    for peer in peers:
        if not peer.startswith(("http://", "https://")):
            raise ConfigError(f"peer {peer!r} must be a URL such as http://10.0.0.2:26656")
    identity = Identity.generate()
    institution = Institution(name, role, identity.public.sign_key, identity.public.enc_key)
    try:
        _check_wire(institution)
    except CodecError as exc:
        raise ConfigError(f"the institution's name is refused: {exc.message}") from None
    home.mkdir(parents=True, exist_ok=True)
    written = passphrase is None
    if passphrase is None:
        passphrase = secrets.token_urlsafe(24).encode()
    write_secret_file(home / PASSPHRASE_FILE, passphrase + b"\n")
    kdf: dict[str, int] = {}
    if key_opslimit is not None:
        kdf["opslimit"] = key_opslimit
    if key_memlimit is not None:
        kdf["memlimit"] = key_memlimit
    save_identity(home / KEY_FILE, identity, passphrase, overwrite=False, **kdf)
    save_genesis(home / GENESIS_FILE, genesis)
    write_api_token(home)
    (home / CONFIG_FILE).write_text(
        render_config(
            name,
            api_port=api_port,
            block_interval_ms=block_interval_ms,
            p2p_port=p2p_port,
            peers=peers,
            app="health",
            ops_port=ops_port,
        ),
        encoding="utf-8",
    )
    request = JoinRequest(genesis.chain_id, genesis.hash(), institution)
    request_path = home / JOIN_REQUEST_FILE
    request_path.write_text(json.dumps(request.to_json(), indent=2) + "\n", encoding="utf-8")
    return JoinResult(home, request, request_path, written)
