"""Node configuration: a TOML file in the node's home, overridable by environment and flags.

Precedence, lowest first: built-in defaults < `HOME/config.toml` < `MEDLEDGER_<SECTION>_<KEY>`
environment variables < command-line flags. Every value is validated with a message that names
where it came from, so an operator sees e.g. "MEDLEDGER_API_PORT: expected an integer in
[0, 65535], got 'abc'" instead of a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from medledger.chain.limits import BLOCK_BYTES_MAX, BLOCK_TXS_MAX, MEMPOOL_BYTES_MAX, MEMPOOL_TXS_MAX
from medledger.node.errors import ConfigError

CONFIG_FILE: Final = "config.toml"
ENV_PREFIX: Final = "MEDLEDGER_"
ENV_PASSPHRASE: Final = "MEDLEDGER_KEY_PASSPHRASE"
APPS: Final = ("kv-fixture", "health")
#: The file (in the node's home) holding the API's bearer token (the institution and its operator).
API_TOKEN_FILE: Final = "api_token"
#: Default port of the operations endpoints (`/livez`, `/readyz`, `/metrics`, `/status`).
OPS_PORT_DEFAULT: Final = 26660


@dataclasses.dataclass(frozen=True, slots=True)
class NodeSection:
    name: str = "node0"
    app: str = "kv-fixture"
    data_dir: str = "data"
    key_file: str = "node_key.json"
    key_passphrase_file: str = "node_key.passphrase"
    genesis_file: str = "genesis.json"
    log_level: str = "info"


@dataclasses.dataclass(frozen=True, slots=True)
class ApiSection:
    host: str = "127.0.0.1"
    port: int = 26657
    max_body_bytes: int = 48 * 1024 * 1024
    #: File holding the bearer token of the institution and its operator (mode 0600, one line).
    token_file: str = API_TOKEN_FILE
    #: PEM certificate chain and private key: with both, the API is served over TLS only.
    tls_cert: str = ""
    tls_key: str = ""
    #: The operations endpoints' own address (no credentials: keep it on loopback or a
    #: management network).
    ops_host: str = "127.0.0.1"
    ops_port: int = OPS_PORT_DEFAULT
    #: The built patient's web app served at `/app/` (empty: the checkout's `web/dist`).
    app_dir: str = ""
    #: Event streams (`GET /v1/events/stream`) open at once per principal (the API token; a
    #: patient's or representative's signing key), and signed (patients') streams on the whole
    #: node (the token's are bounded by the first only); beyond, 429.
    event_streams_per_principal: int = 4
    event_streams_max: int = 256


@dataclasses.dataclass(frozen=True, slots=True)
class ConsensusSection:
    #: The least time from one commit to the start of the next height (0: start as soon as a tx
    #: waits; a longer interval batches more txs per block at the cost of their latency).
    block_interval_ms: int = 0
    max_block_txs: int = 5_000
    max_block_bytes: int = 16 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class P2pSection:
    """The peer endpoint (separate from the API) and whom to dial; empty `peers`: no network."""

    host: str = "127.0.0.1"
    port: int = 26656
    #: Peer URLs to dial, e.g. ["http://10.0.0.2:26656"].
    peers: tuple[str, ...] = ()
    #: Node keys (hex) of observers allowed to connect besides the validators.
    observers: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class MempoolSection:
    max_txs: int = MEMPOOL_TXS_MAX
    max_bytes: int = MEMPOOL_BYTES_MAX
    #: Backpressure (`node/backpressure.py`): the API refuses txs (429, `Retry-After`) while the
    #: mempool holds what the network finalizes in `queue_target_ms` at its measured rate (at
    #: least `high_water_min_txs`); a non-zero `high_water_txs` fixes the mark instead.
    queue_target_ms: int = 1000
    high_water_min_txs: int = 2000
    high_water_txs: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class HealthSection:
    """The health application's settings (only read when `[node] app = "health"`)."""

    #: Deprecated: the token is `[api] token_file`; a value here (other than the default) still
    #: names the token file, so that homes made before the move keep working.
    api_token_file: str = API_TOKEN_FILE


@dataclasses.dataclass(frozen=True, slots=True)
class BlobsSection:
    """Attachments stored off the ledger as encrypted blobs (docs/adr/0013-attachment-blobs.md)."""

    #: The blob store's directory (relative to the home); wiping it is recovered from peers.
    dir: str = "blobs"
    #: Nodes besides the author's that hold each blob (the issue's floor is two).
    replicas: int = 2


@dataclasses.dataclass(frozen=True, slots=True)
class MqttSection:
    """Ledger events to an MQTT broker (docs/adr/0015-ledger-events.md); off while `url` is empty."""

    #: `mqtt://host:port` of the broker (empty: no publishing).
    url: str = ""
    #: The node's broker user name and the file (relative to the home) holding its password.
    username: str = ""
    password_file: str = ""
    #: The root of the topic tree.
    topic_prefix: str = "medledger"
    #: Messages waiting for the broker at most; beyond, the oldest is dropped (and counted).
    queue_max: int = 10_000
    #: Directory (relative to the home) where the node keeps the broker's `acl`, `passwd` and
    #: `credentials.json` current while it runs: rewritten at start and whenever a patient
    #: registers (empty: not kept; `medledger mqtt acl` writes them for a stopped node).
    acl_dir: str = ""
    #: The broker's pid file (mosquitto's `pid_file`): sent SIGHUP after each rewrite, so that the
    #: broker reloads the files (empty: the operator reloads it).
    broker_pid_file: str = ""


_BOUNDS: Final[dict[tuple[str, str], tuple[int, int]]] = {
    ("api", "port"): (0, 65535),
    ("api", "max_body_bytes"): (1024, 1024 * 1024 * 1024),
    ("api", "ops_port"): (0, 65535),
    ("api", "event_streams_per_principal"): (1, 1024),
    ("api", "event_streams_max"): (1, 65_536),
    ("consensus", "block_interval_ms"): (0, 60_000),
    ("consensus", "max_block_txs"): (1, BLOCK_TXS_MAX),
    ("consensus", "max_block_bytes"): (1024, BLOCK_BYTES_MAX),
    ("mempool", "max_txs"): (1, 10 * MEMPOOL_TXS_MAX),
    ("mempool", "max_bytes"): (1024, 8 * MEMPOOL_BYTES_MAX),
    ("mempool", "queue_target_ms"): (1, 600_000),
    ("mempool", "high_water_min_txs"): (1, 10 * MEMPOOL_TXS_MAX),
    ("mempool", "high_water_txs"): (0, 10 * MEMPOOL_TXS_MAX),
    ("p2p", "port"): (0, 65535),
    ("blobs", "replicas"): (2, 1024),
    ("mqtt", "queue_max"): (1, 10_000_000),
}
_TOPIC_PREFIX: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}(/[A-Za-z0-9_.-]{1,64}){0,7}")
_CHOICES: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("node", "app"): APPS,
    ("node", "log_level"): ("debug", "info", "warning", "error"),
}
#: String settings that may be empty (empty: the feature is off).
_MAY_BE_EMPTY: Final = frozenset(
    {
        ("api", "tls_cert"),
        ("api", "tls_key"),
        ("api", "app_dir"),
        ("mqtt", "url"),
        ("mqtt", "username"),
        ("mqtt", "password_file"),
        ("mqtt", "acl_dir"),
        ("mqtt", "broker_pid_file"),
    }
)
_SECTIONS: Final[dict[str, type[Any]]] = {
    "node": NodeSection,
    "api": ApiSection,
    "consensus": ConsensusSection,
    "mempool": MempoolSection,
    "p2p": P2pSection,
    "health": HealthSection,
    "blobs": BlobsSection,
    "mqtt": MqttSection,
}


@dataclasses.dataclass(frozen=True, slots=True)
class NodeConfig:
    home: Path
    node: NodeSection
    api: ApiSection
    consensus: ConsensusSection
    mempool: MempoolSection
    p2p: P2pSection
    health: HealthSection = HealthSection()
    blobs: BlobsSection = BlobsSection()
    mqtt: MqttSection = MqttSection()

    def resolve(self, relative: str) -> Path:
        """A path from the config, relative to the node's home unless absolute."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self.home / path

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.node.data_dir)

    @property
    def key_file(self) -> Path:
        return self.resolve(self.node.key_file)

    @property
    def blobs_dir(self) -> Path:
        return self.resolve(self.blobs.dir)

    @property
    def genesis_file(self) -> Path:
        return self.resolve(self.node.genesis_file)

    @property
    def api_token_file(self) -> Path:
        if self.health.api_token_file != API_TOKEN_FILE:
            return self.resolve(self.health.api_token_file)
        return self.resolve(self.api.token_file)

    @property
    def uses_tls(self) -> bool:
        return bool(self.api.tls_cert)

    @property
    def tls_cert_file(self) -> Path:
        return self.resolve(self.api.tls_cert)

    @property
    def tls_key_file(self) -> Path:
        return self.resolve(self.api.tls_key)

    @property
    def api_url(self) -> str:
        scheme = "https" if self.uses_tls else "http"
        return f"{scheme}://{_url_host(self.api.host)}:{self.api.port}"

    @property
    def ops_url(self) -> str:
        return f"http://{_url_host(self.api.ops_host)}:{self.api.ops_port}"


def _url_host(host: str) -> str:
    """`host` as it goes in a URL (an IPv6 literal in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _coerce(section: str, key: str, value: Any, expected: type[Any], source: str) -> Any:
    where = f"{source}: [{section}] {key}"
    if expected is tuple:
        if isinstance(value, str):  # from the environment: comma-separated
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise ConfigError(f"{where}: expected a list of non-empty strings, got {value!r}")
        return tuple(value)
    if expected is int:
        if isinstance(value, str):
            try:
                value = int(value.strip(), 10)
            except ValueError:
                raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if type(value) is not int:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        low, high = _BOUNDS.get((section, key), (0, 2**63))
        if not low <= value <= high:
            raise ConfigError(f"{where}: expected an integer in [{low}, {high}], got {value}")
        return value
    if isinstance(value, str) and not value and (section, key) in _MAY_BE_EMPTY:
        return value
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    choices = _CHOICES.get((section, key))
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _field_types(cls: type[Any]) -> dict[str, type[Any]]:
    kinds: dict[str, type[Any]] = {}
    for f in dataclasses.fields(cls):
        annotation = str(f.type)
        kinds[f.name] = int if annotation == "int" else tuple if annotation.startswith("tuple") else str
    return kinds


def load_config(
    home: Path,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    require_file: bool = True,
) -> NodeConfig:
    """Read `home/config.toml`, then apply environment overrides and flag overrides."""
    environ = os.environ if environ is None else environ
    path = home / CONFIG_FILE
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    elif require_file:
        raise ConfigError(f"{path} does not exist; run `medledger init --home {home}` first")

    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        types = _field_types(cls)
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        bad = sorted(set(raw) - set(types))
        if bad:
            raise ConfigError(f"{path}: [{name}] has unknown key(s) {', '.join(bad)}")
        values = {k: _coerce(name, k, v, types[k], str(path)) for k, v in raw.items()}
        for key, expected in types.items():
            env_name = f"{ENV_PREFIX}{name.upper()}_{key.upper()}"
            if env_name in environ:
                values[key] = _coerce(name, key, environ[env_name], expected, env_name)
            flag = (overrides or {}).get(name, {}).get(key)
            if flag is not None:
                values[key] = _coerce(name, key, flag, expected, "command line")
        sections[name] = cls(**values)
    config = NodeConfig(home=home, **sections)
    _validate(config, str(path))
    return config


def _validate(config: NodeConfig, source: str) -> None:
    """Checks across settings, once every source is applied."""
    mqtt = config.mqtt
    # The prefix is written into the broker's ACL lines and topic names: a wildcard, a space or a
    # line break would widen or inject rules there.
    if _TOPIC_PREFIX.fullmatch(mqtt.topic_prefix) is None:
        raise ConfigError(
            f"{source}: [mqtt] topic_prefix must be topic levels of letters, digits, '_', '.' or '-' "
            f"joined by '/' (no wildcard, space or line break), got {mqtt.topic_prefix!r}"
        )
    if mqtt.acl_dir and not mqtt.url:
        raise ConfigError(f"{source}: [mqtt] acl_dir is kept by the event publisher: set [mqtt] url too")
    if mqtt.broker_pid_file and not mqtt.acl_dir:
        raise ConfigError(
            f"{source}: [mqtt] broker_pid_file is signalled after acl_dir is rewritten: set acl_dir"
        )
    api = config.api
    if bool(api.tls_cert) != bool(api.tls_key):
        raise ConfigError(f"{source}: [api] tls_cert and tls_key go together (set both, or neither)")
    same_host = api.ops_host == api.host or "0.0.0.0" in (api.ops_host, api.host)  # noqa: S104 - a comparison
    if same_host and api.ops_port == api.port and api.port != 0:
        raise ConfigError(
            f"{source}: [api] ops_port {api.ops_port} is the API's port: the operations endpoints "
            "need an address of their own"
        )


def render_config(
    name: str,
    *,
    api_port: int,
    app: str = "kv-fixture",
    block_interval_ms: int = 0,
    p2p_port: int = 26656,
    peers: tuple[str, ...] = (),
    observers: tuple[str, ...] = (),
    ops_port: int = OPS_PORT_DEFAULT,
    tls_cert: str = "",
    tls_key: str = "",
) -> str:
    """The commented `config.toml` that `medledger init` writes."""
    peers_toml = ", ".join(f'"{p}"' for p in peers)
    observers_toml = ", ".join(f'"{o}"' for o in observers)
    health = _HEALTH_TEMPLATE if app == "health" else ""
    rendered = _TEMPLATE.format(
        name=name,
        app=app,
        api_port=api_port,
        ops_port=ops_port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        block_interval_ms=block_interval_ms,
        p2p_port=p2p_port,
        peers=peers_toml,
        observers=observers_toml,
    )
    return rendered + health


_TEMPLATE = """\
# medledger node configuration. Any value can be overridden by an environment variable
# MEDLEDGER_<SECTION>_<KEY> (e.g. MEDLEDGER_API_PORT=8080) or a command-line flag.
# Relative paths are relative to this node's home directory.

[node]
name = "{name}"
# The application the chain drives: "health" (the medical application) or "kv-fixture" (a test
# fixture, a key-value store).
app = "{app}"
data_dir = "data"
key_file = "node_key.json"
# The key file's passphrase is read from MEDLEDGER_KEY_PASSPHRASE, else from this file (mode 0600).
key_passphrase_file = "node_key.passphrase"
genesis_file = "genesis.json"
log_level = "info"

[api]
host = "127.0.0.1"
port = {api_port}
max_body_bytes = 50331648
# Every read route needs a credential: this bearer token (the institution running the node and its
# operator's tools; `Authorization: Bearer <token>`; mode 0600) or a patient's signed request.
token_file = "api_token"
# TLS: a PEM certificate chain and its private key (both, or neither: plain HTTP). `medledger init
# --tls` writes a self-signed pair; for a real certificate see README.md ("TLS").
tls_cert = "{tls_cert}"
tls_key = "{tls_key}"
# The operations endpoints (/livez, /readyz, /metrics, /status) answer here without credentials,
# never on the API's address: keep this on loopback or a management network.
ops_host = "127.0.0.1"
ops_port = {ops_port}

[consensus]
# The least time from a commit to the next height (0: a height starts as soon as a transaction
# waits and the previous one is committed; more batches more transactions per block).
block_interval_ms = {block_interval_ms}
max_block_txs = 5000
max_block_bytes = 16777216

[mempool]
max_txs = 50000
max_bytes = 268435456
# Backpressure: past the high-water mark the API answers 429 with Retry-After. The mark is what
# the network finalizes in queue_target_ms at its measured rate, at least high_water_min_txs;
# high_water_txs > 0 fixes it instead.
queue_target_ms = 1000
high_water_min_txs = 2000
high_water_txs = 0

[p2p]
# The peer endpoint (authenticated with node keys; separate from the API).
host = "127.0.0.1"
port = {p2p_port}
# Peer URLs to dial, e.g. ["http://10.0.0.2:26656"]. Empty: a single node.
peers = [{peers}]
# Node keys (hex) of observer nodes allowed to connect besides the validators.
observers = [{observers}]
"""


_HEALTH_TEMPLATE = """
[health]
# The institution API (/v1/health/institution/...) takes the [api] token_file token.

[blobs]
# Attachments (PDFs, scans, images) are stored off the ledger as encrypted, content-addressed
# blobs in this directory; a lost one is fetched again from peers.
dir = "blobs"
# Each blob is held by its author's node and this many others (at least 2).
replicas = 2
"""


def read_passphrase(config: NodeConfig, environ: Mapping[str, str] | None = None) -> bytes:
    """The key file passphrase: from the environment, else from the configured file."""
    environ = os.environ if environ is None else environ
    if ENV_PASSPHRASE in environ:
        return environ[ENV_PASSPHRASE].encode()
    path = config.resolve(config.node.key_passphrase_file)
    try:
        return path.read_bytes().rstrip(b"\r\n")
    except FileNotFoundError:
        raise ConfigError(f"no passphrase for the node key: set {ENV_PASSPHRASE} or create {path}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
