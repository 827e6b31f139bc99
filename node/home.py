"""Node home directories: what `medledger init` creates and what tests and launchers reuse.

A home holds `config.toml`, `genesis.json`, `node_key.json` (passphrase-protected, 0600), the
key's passphrase file (0600) unless the operator keeps it elsewhere, and `data/` (LevelDB).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from medledger.chain.types import Genesis, Validator, ValidatorSet
from medledger.crypto import Identity, save_identity
from medledger.health.app import encode_genesis
from medledger.health.types import RESEARCH_K_MIN_DEFAULT, ROLES, HealthGenesis, Institution
from medledger.node.config import API_TOKEN_FILE, CONFIG_FILE, OPS_PORT_DEFAULT, render_config
from medledger.node.errors import ConfigError
from medledger.node.genesis_file import save_genesis
from medledger.node.tls import CERT_FILE, create_self_signed_certificate
from medledger.node.tls import KEY_FILE as TLS_KEY_FILE

KEY_FILE = "node_key.json"
PASSPHRASE_FILE = "node_key.passphrase"
GENESIS_FILE = "genesis.json"
DATA_DIR = "data"


@dataclasses.dataclass(frozen=True, slots=True)
class InitResult:
    home: Path
    identity: Identity
    genesis: Genesis
    passphrase_written: bool
    moved_data_to: Path | None


def write_secret_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def write_api_token(home: Path) -> str:
    """A fresh API token in `home/api_token` (mode 0600); returns it."""
    token = secrets.token_urlsafe(32)
    write_secret_file(home / API_TOKEN_FILE, token.encode() + b"\n")
    return token


def compute_health_app_state(
    institutions: Sequence[tuple[str, str, Identity]], *, research_k_min: int = RESEARCH_K_MIN_DEFAULT
) -> bytes:
    """`Genesis.app_state` registering (name, role, identity) institutions, with the network's
    research small-cell threshold; checks the roles and the threshold."""
    for name, role, _ in institutions:
        if role not in ROLES:
            raise ConfigError(f"institution {name!r}: role must be one of {', '.join(sorted(ROLES))}")
    return encode_genesis(
        HealthGenesis(
            tuple(
                # Names are human text, kept in NFC (one byte form for one name: issue 14, defect 5).
                Institution(
                    unicodedata.normalize("NFC", name),
                    role,
                    identity.public.sign_key,
                    identity.public.enc_key,
                )
                for name, role, identity in institutions
            )
        ),
        research_k_min=research_k_min,
    )


def init_home(
    home: Path,
    *,
    name: str = "node0",
    chain_id: str = "medledger-local",
    api_port: int = 26657,
    block_interval_ms: int = 0,
    passphrase: bytes | None = None,
    force: bool = False,
    key_opslimit: int | None = None,
    key_memlimit: int | None = None,
    app: str = "kv-fixture",
    role: str = "clinic",
    tls: bool = False,
    tls_hosts: Sequence[str] = (),
    ops_port: int | None = None,
) -> InitResult:
    """Create a single-validator node home. Refuses to replace anything unless `force`.

    With `app` "health" the genesis registers this node as an institution with `role`. An API
    token is written to `api_token` (mode 0600). With `tls`, a self-signed certificate for
    loopback and `tls_hosts` is made and the API is configured to serve TLS with it.

    With `passphrase` None a random one is generated and written to the passphrase file; with
    `force`, an existing data directory is moved aside (never deleted).
    """
    home = home.expanduser().resolve()
    config_path, key_path, genesis_path = home / CONFIG_FILE, home / KEY_FILE, home / GENESIS_FILE
    data_dir = home / DATA_DIR
    existing = [p for p in (config_path, key_path, genesis_path) if p.exists()]
    if existing and not force:
        raise ConfigError(
            f"{home} is already initialised ({existing[0].name} exists); use --force to replace it"
        )
    holds_chain = data_dir.exists() and any(data_dir.iterdir())
    if holds_chain and not force:
        raise ConfigError(f"{data_dir} holds a chain; use --force to move it aside and start anew")
    home.mkdir(parents=True, exist_ok=True)
    moved: Path | None = None
    if holds_chain:
        moved = home / f"data.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        data_dir.rename(moved)

    written = passphrase is None
    if passphrase is None:
        passphrase = secrets.token_urlsafe(24).encode()
        write_secret_file(home / PASSPHRASE_FILE, passphrase + b"\n")
    identity = Identity.generate()
    kdf: dict[str, int] = {}
    if key_opslimit is not None:
        kdf["opslimit"] = key_opslimit
    if key_memlimit is not None:
        kdf["memlimit"] = key_memlimit
    save_identity(key_path, identity, passphrase, overwrite=force, **kdf)
    public = identity.public
    genesis = Genesis(
        chain_id=chain_id,
        genesis_time_ms=time.time_ns() // 1_000_000,
        validators=ValidatorSet.of([Validator(name, public.sign_key, public.enc_key)]),
        app_state=compute_health_app_state([(name, role, identity)]) if app == "health" else b"",
    )
    save_genesis(genesis_path, genesis)
    write_api_token(home)
    if tls:
        create_self_signed_certificate(
            home / CERT_FILE, home / TLS_KEY_FILE, common_name=name, hosts=tls_hosts
        )
    config_path.write_text(
        render_config(
            name,
            api_port=api_port,
            block_interval_ms=block_interval_ms,
            app=app,
            ops_port=OPS_PORT_DEFAULT if ops_port is None else ops_port,
            tls_cert=CERT_FILE if tls else "",
            tls_key=TLS_KEY_FILE if tls else "",
        ),
        encoding="utf-8",
    )
    return InitResult(home, identity, genesis, written, moved)
