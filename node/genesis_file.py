"""The genesis file: the chain's start, shared by every node of a network, as readable JSON.

{"chain_id": "...", "genesis_time_ms": 1700000000000,
 "validators": [{"name": "...", "sign_key": "<hex>", "enc_key": "<hex>"}],
 "app_state": "<base64>"}
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any

from medledger.chain.codec import decode, encode
from medledger.chain.errors import CodecError
from medledger.chain.types import Genesis, Validator, ValidatorSet
from medledger.node.errors import ConfigError


def genesis_to_json(genesis: Genesis) -> dict[str, Any]:
    return {
        "chain_id": genesis.chain_id,
        "genesis_time_ms": genesis.genesis_time_ms,
        "validators": [
            {"name": v.name, "sign_key": v.sign_key.hex(), "enc_key": v.enc_key.hex()}
            for v in genesis.validators.validators
        ],
        "app_state": base64.b64encode(genesis.app_state).decode(),
    }


def genesis_from_json(data: Any, where: str) -> Genesis:
    try:
        validators = [
            Validator(str(v["name"]), bytes.fromhex(v["sign_key"]), bytes.fromhex(v["enc_key"]))
            for v in data["validators"]
        ]
        genesis = Genesis(
            chain_id=str(data["chain_id"]),
            genesis_time_ms=int(data["genesis_time_ms"]),
            validators=ValidatorSet.of(validators),
            app_state=base64.b64decode(data.get("app_state", ""), validate=True),
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ConfigError(f"{where}: not a valid genesis file ({type(exc).__name__}: {exc})") from None
    # Round-trip through the canonical codec so every limit of the wire type applies.
    try:
        return decode(Genesis, encode(genesis), max_bytes=64 * 1024 * 1024)
    except CodecError as exc:
        raise ConfigError(f"{where}: not a valid genesis: {exc.message}") from None


def load_genesis(path: Path) -> Genesis:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"genesis file {path} does not exist") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, huge numbers
        raise ConfigError(f"{path}: cannot be read as JSON: {exc}") from None
    return genesis_from_json(data, str(path))


def save_genesis(path: Path, genesis: Genesis) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(genesis_to_json(genesis), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
