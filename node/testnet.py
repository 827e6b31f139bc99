"""Local networks: node homes sharing one genesis (`medledger testnet`) and their processes
(`medledger cluster up|status|down`), all on loopback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from medledger.chain.errors import CodecError
from medledger.chain.limits import TX_BYTES_MAX
from medledger.chain.types import (
    ConsensusParams,
    Genesis,
    Validator,
    ValidatorSet,
    decode_genesis,
    encode_genesis,
)
from medledger.crypto import Identity, save_identity
from medledger.health.types import RESEARCH_K_MIN_DEFAULT
from medledger.node.config import API_TOKEN_FILE, CONFIG_FILE, render_config
from medledger.node.errors import ConfigError, NodeError
from medledger.node.genesis_file import save_genesis
from medledger.node.home import (
    GENESIS_FILE,
    KEY_FILE,
    PASSPHRASE_FILE,
    compute_health_app_state,
    write_api_token,
    write_secret_file,
)
from medledger.node.process import NodeProcess
from medledger.node.tls import CERT_FILE, create_self_signed_certificate
from medledger.node.tls import KEY_FILE as TLS_KEY_FILE

CLUSTER_FILE = "cluster.json"


def find_free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclasses.dataclass(frozen=True, slots=True)
class TestnetNode:
    name: str
    home: Path
    identity: Identity
    validator: bool
    api_port: int
    p2p_port: int
    #: The institution's role (health networks), else "".
    role: str = ""
    #: The node's API token (`HOME/api_token`).
    api_token: str = ""
    #: The operations endpoints' port (`/livez`, `/readyz`, `/metrics`, `/status`).
    ops_port: int = 0
    #: Whether the API serves TLS with a self-signed certificate (`HOME/tls_cert.pem`).
    tls: bool = False


#: The consensus params of a network `create_testnet` makes (a version-2 genesis, docs/adr/0023):
#: the node config's default block limits as genesis caps, and leader skipping on (safe: who
#: proposes never decides safety, and rounds ≥ 1 stay plain round-robin).
NEW_NETWORK_CONSENSUS_PARAMS: Final = ConsensusParams(
    block_txs_max=5_000, block_bytes_max=16 * 1024 * 1024, leader_window=12
)


def create_testnet(
    out: Path,
    *,
    validators: int,
    observers: int = 0,
    chain_id: str = "medledger-testnet",
    block_interval_ms: int = 0,
    base_port: int = 0,
    passphrase: bytes | None = None,
    key_opslimit: int | None = None,
    key_memlimit: int | None = None,
    app: str = "kv-fixture",
    names: Sequence[str] | None = None,
    roles: Sequence[str] | None = None,
    tls: bool = False,
    research_k_min: int = RESEARCH_K_MIN_DEFAULT,
    consensus_params: ConsensusParams | None = NEW_NETWORK_CONSENSUS_PARAMS,
) -> list[TestnetNode]:
    """Homes `out/<name>` for validators `validator0..` and observers `observer0..`, one genesis.

    `names` renames the validators. With `app` "health", `roles` gives each validator's institution
    role: the genesis registers every validator as an institution (its node key is its identity)
    Every home gets an API token; with `tls` each node also gets a self-signed certificate.
    Each node takes three ports: API, p2p and operations (`base_port + 3i`, `+1`, `+2`).
    `research_k_min` is the health network's research small-cell threshold (ADR 0019).
    `consensus_params`: the genesis's block caps and leader window; None writes a version-1
    genesis (chain/limits.py's caps, plain round-robin), as networks were made before ADR 0023.
    """
    if validators < 1:
        raise ConfigError("a testnet needs at least one validator")
    if names is not None and (len(names) != validators or len(set(names)) != validators):
        raise ConfigError("names must give each validator a distinct name")
    if app == "health" and (roles is None or len(roles) != validators):
        raise ConfigError("a health testnet needs one institution role per validator")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; choose another directory")
    total = validators + observers
    ports = [base_port + i for i in range(3 * total)] if base_port else find_free_ports(3 * total)
    validator_names = list(names) if names is not None else [f"validator{i}" for i in range(validators)]
    node_names = validator_names + [f"observer{i}" for i in range(observers)]
    nodes = [
        TestnetNode(
            name=node_names[i],
            home=out / node_names[i],
            identity=Identity.generate(),
            validator=i < validators,
            api_port=ports[3 * i],
            p2p_port=ports[3 * i + 1],
            ops_port=ports[3 * i + 2],
            role=roles[i] if roles is not None and app == "health" and i < validators else "",
            tls=tls,
        )
        for i in range(total)
    ]
    app_state = b""
    if app == "health":
        app_state = compute_health_app_state(
            [(n.name, n.role, n.identity) for n in nodes if n.validator], research_k_min=research_k_min
        )
    genesis = Genesis(
        chain_id=chain_id,
        genesis_time_ms=time.time_ns() // 1_000_000,
        validators=ValidatorSet.of(
            [
                Validator(n.name, n.identity.public.sign_key, n.identity.public.enc_key)
                for n in nodes
                if n.validator
            ]
        ),
        app_state=app_state,
        params=consensus_params,
    )
    try:  # every limit of the wire types, before a home is written
        decode_genesis(encode_genesis(genesis), max_bytes=TX_BYTES_MAX * 64)
    except CodecError as exc:
        raise ConfigError(f"not a valid genesis: {exc.message}") from None
    observer_keys = tuple(n.identity.public.sign_key.hex() for n in nodes if not n.validator)
    kdf: dict[str, int] = {}
    if key_opslimit is not None:
        kdf["opslimit"] = key_opslimit
    if key_memlimit is not None:
        kdf["memlimit"] = key_memlimit
    for node in nodes:
        node.home.mkdir(parents=True)
        secret = passphrase if passphrase is not None else os.urandom(18).hex().encode()
        write_secret_file(node.home / PASSPHRASE_FILE, secret + b"\n")
        save_identity(node.home / KEY_FILE, node.identity, secret, overwrite=False, **kdf)
        save_genesis(node.home / GENESIS_FILE, genesis)
        write_api_token(node.home)
        if tls:
            create_self_signed_certificate(
                node.home / CERT_FILE, node.home / TLS_KEY_FILE, common_name=node.name
            )
        peers = tuple(f"http://127.0.0.1:{other.p2p_port}" for other in nodes if other is not node)
        (node.home / CONFIG_FILE).write_text(
            render_config(
                node.name,
                api_port=node.api_port,
                block_interval_ms=block_interval_ms,
                p2p_port=node.p2p_port,
                peers=peers,
                observers=observer_keys,
                app=app,
                ops_port=node.ops_port,
                tls_cert=CERT_FILE if tls else "",
                tls_key=TLS_KEY_FILE if tls else "",
            ),
            encoding="utf-8",
        )
    return [dataclasses.replace(n, api_token=load_api_token(n.home)) for n in nodes]


def load_api_token(home: Path) -> str:
    """The API token written in `home`."""
    try:
        return (home / API_TOKEN_FILE).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{home / API_TOKEN_FILE}: cannot be read: {exc.strerror}") from None


def list_homes(directory: Path) -> list[Path]:
    homes = sorted(p for p in directory.iterdir() if (p / CONFIG_FILE).exists()) if directory.is_dir() else []
    if not homes:
        raise ConfigError(f"{directory} holds no node homes; create them with `medledger testnet`")
    return homes


def cluster_up(directory: Path, *, timeout_s: float = 60.0) -> dict[str, dict[str, object]]:
    """Start every node under `directory` (detached), wait until each serves, record them."""
    record_path = directory / CLUSTER_FILE
    if record_path.exists() and any(_alive(int(str(v["pid"]))) for v in _read_record(record_path).values()):
        raise NodeError(f"a cluster from {directory} is already running; `medledger cluster down` first")
    procs = []
    for home in list_homes(directory):
        proc = NodeProcess(home, use_config_ports=True, detach=True)
        proc.start()
        procs.append((home, proc))
    record: dict[str, dict[str, object]] = {}
    try:
        for home, proc in procs:
            url = proc.wait_ready(timeout_s, require_ready=False)
            assert proc.proc is not None
            record[home.name] = {"pid": proc.proc.pid, "url": url, "ops_url": proc.ops_url, "home": str(home)}
    except BaseException:
        for _, proc in procs:
            proc.stop()
        raise
    record_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def cluster_down(directory: Path, *, timeout_s: float = 15.0) -> list[str]:
    """SIGTERM every recorded node and wait for it to exit; returns the names stopped."""
    record_path = directory / CLUSTER_FILE
    if not record_path.exists():
        return []
    stopped = []
    record = _read_record(record_path)
    for name, entry in record.items():
        pid = int(str(entry["pid"]))
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            stopped.append(name)
    deadline = time.monotonic() + timeout_s
    for entry in record.values():
        pid = int(str(entry["pid"]))
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling another process's exit, with a deadline
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    record_path.unlink()
    return stopped


def read_cluster(directory: Path) -> dict[str, dict[str, object]]:
    record_path = directory / CLUSTER_FILE
    if not record_path.exists() and (directory / DEMO_NETWORK_DIR / CLUSTER_FILE).exists():
        record_path = directory / DEMO_NETWORK_DIR / CLUSTER_FILE  # a demo's home (`medledger demo`)
    if not record_path.exists():
        raise NodeError(f"no cluster is running from {directory} (no {CLUSTER_FILE})")
    return _read_record(record_path)


#: Where `medledger demo --home H` keeps its network (H/network), which `cluster status --dir H` reads.
DEMO_NETWORK_DIR = "network"


def write_cluster_record(directory: Path, processes: list[tuple[Path, NodeProcess]]) -> Path:
    """Record running nodes as `cluster up` does, so `cluster status` sees a network started otherwise
    (the demo's: issue 14, defect 8); returns the record's path (remove it when they stop)."""
    record = {}
    for home, proc in processes:
        assert proc.proc is not None  # started
        record[home.name] = {
            "pid": proc.proc.pid,
            "url": proc.url,
            "ops_url": proc.ops_url,
            "home": str(home),
        }
    path = directory / CLUSTER_FILE
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def _read_record(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NodeError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise NodeError(f"{path}: not a cluster record")
    return data


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True
