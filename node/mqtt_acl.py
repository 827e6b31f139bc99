"""Broker access for ledger events: a mosquitto ACL file and password file (ADR 0015).

Users, each allowed exactly its own topics (`health.event_topics`):

    n-<node sign key hex[:32]>      the node: writes its institution's topic and patient topics
    i-<institution sign key[:32]>   an institution: reads its own topic
    p-<topic token hex[:32]>        a patient: reads their topic token's topic

Passwords: the node's and each institution's are random (returned to the caller to hand out);
a patient's is derived from the x25519 shared secret with the node, so the patient's device
computes it and nothing is handed over. The password file uses mosquitto 2's PBKDF2-SHA512
format (`$7$<iterations>$<salt b64>$<hash b64>`), which `mosquitto_passwd` writes too.

Two ways to produce them, the same files either way (`acl`, `passwd`, `credentials.json` in one
directory, each written atomically with mode 0600):

- `medledger mqtt acl --home H --out D` on a stopped node (`build_broker_access`), e.g. once
  before the broker first starts;
- the running node itself, with `[mqtt] acl_dir = D` (`LiveBrokerAccess`): at start it writes the
  files for every patient in its store, then adds each patient the moment their registration is
  committed (the event publisher's follower sees the `patient.registered` event before it
  publishes anything of theirs), and sends SIGHUP to the broker named by `[mqtt] broker_pid_file`
  so that mosquitto reloads them.

Both keep the passwords already handed out (`credentials.json` in the directory), so refreshing
the files never locks out an institution; the node's own password is the one in its
`[mqtt] password_file` when that is set.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from medledger.chain.store import BlockStore
from medledger.crypto import CryptoError, Identity, load_identity
from medledger.health import state as st
from medledger.health.app import decode_genesis
from medledger.health.event_topics import (
    compute_patient_password,
    compute_patient_topic_token,
    compute_shared_secret,
    get_institution_topic,
    get_institution_username,
    get_patient_topic,
    get_patient_username,
)
from medledger.node.config import NodeConfig, read_passphrase
from medledger.node.errors import ConfigError, NodeError
from medledger.node.genesis_file import load_genesis
from medledger.node.private_files import PrivateFileError, read_private_file
from medledger.node.private_files import write_private_file as write_private_bytes

log = logging.getLogger("medledger.mqtt")

ACL_FILE: Final = "acl"
PASSWD_FILE: Final = "passwd"
CREDENTIALS_FILE: Final = "credentials.json"
#: Largest credentials.json read back (one short line per institution).
CREDENTIALS_BYTES_MAX: Final = 1024 * 1024
#: Largest pid file read (a decimal number and a newline).
PID_FILE_BYTES_MAX: Final = 64
PBKDF2_ITERATIONS: Final = 101
PBKDF2_SALT_BYTES: Final = 12


def read_password(config: NodeConfig) -> str | None:
    """The node's broker password (`[mqtt] password_file`), if it has one."""
    mqtt = config.mqtt
    if not mqtt.password_file:
        return None
    try:
        return config.resolve(mqtt.password_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"[mqtt] password_file cannot be read: {exc.strerror}") from None


def hash_mosquitto_password(password: str, *, salt: bytes | None = None) -> str:
    """A password as mosquitto 2 stores it (PBKDF2-SHA512)."""
    salt = secrets.token_bytes(PBKDF2_SALT_BYTES) if salt is None else salt
    derived = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, 64)
    return f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(derived).decode()}"


def get_node_username(sign_key: bytes) -> str:
    return "n-" + sign_key.hex()[:32]


class BrokerAccessError(NodeError):
    """The broker's access files cannot be read or written (says which and why)."""

    code = "broker_access_error"


@dataclasses.dataclass(frozen=True, slots=True)
class PatientAccess:
    """One patient's entry: their ACL block and their password file line."""

    username: str
    acl: str
    passwd: str


def compute_patient_access(identity: Identity, chain_id: str, prefix: str, enc_key: bytes) -> PatientAccess:
    """A patient's user, read access to their topic, and their (derived) password, hashed.

    `CryptoError` for a key no secret can be agreed with (a low-order point, on an older chain).
    """
    own = identity.public.sign_key
    secret = compute_shared_secret(identity, enc_key)
    token = compute_patient_topic_token(secret, chain_id, own)
    user = get_patient_username(token)
    password = hash_mosquitto_password(compute_patient_password(secret, chain_id, own))
    return PatientAccess(
        user, f"user {user}\ntopic read {get_patient_topic(prefix, token)}\n", f"{user}:{password}\n"
    )


def iter_patient_access(
    identity: Identity, chain_id: str, prefix: str, patient_enc_keys: Iterable[bytes]
) -> Iterable[PatientAccess]:
    """Each patient's entry; a patient whose key gives no secret has none (logged, without the key)."""
    for enc_key in patient_enc_keys:
        try:
            yield compute_patient_access(identity, chain_id, prefix, enc_key)
        except CryptoError:
            log.warning("a patient's encryption key is a low-order x25519 point: no broker user for them")


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerAccess:
    acl: str
    passwd: str
    #: Username → password of the node and of each institution (patients derive theirs).
    handed_out: dict[str, str]
    patients: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Head:
    """The node's and the institutions' part of the files (fixed while the node runs)."""

    acl: str
    passwd: str
    handed_out: dict[str, str]


def _build_head(
    identity: Identity, prefix: str, institutions: Iterable[bytes], passwords: Mapping[str, str]
) -> _Head:
    own = identity.public.sign_key
    node_user = get_node_username(own)
    users = [node_user] + [get_institution_username(k) for k in sorted(set(institutions))]
    handed_out = {user: passwords.get(user) or secrets.token_urlsafe(24) for user in users}
    acl = [
        "# Generated by medledger (`medledger mqtt acl`, or the node's [mqtt] acl_dir;",
        "# docs/adr/0015-ledger-events.md); do not edit.",
        f"user {node_user}",
        f"topic write {get_institution_topic(prefix, own)}",
        f"topic write {prefix}/pat/#",
        "",
    ]
    for sign_key in sorted(set(institutions)):
        acl += [
            f"user {get_institution_username(sign_key)}",
            f"topic read {get_institution_topic(prefix, sign_key)}",
            "",
        ]
    passwd = "".join(f"{user}:{hash_mosquitto_password(password)}\n" for user, password in handed_out.items())
    return _Head("\n".join(acl) + "\n", passwd, handed_out)


def _render(head: _Head, patients: Iterable[PatientAccess]) -> tuple[str, str]:
    entries = list(patients)
    acl = head.acl + "".join(p.acl + "\n" for p in entries)
    return acl, head.passwd + "".join(p.passwd for p in entries)


def build_broker_access(
    identity: Identity,
    chain_id: str,
    prefix: str,
    institutions: Iterable[bytes],
    patient_enc_keys: Iterable[bytes],
    *,
    passwords: Mapping[str, str] | None = None,
) -> BrokerAccess:
    """ACL and password file for this node, every institution, and each patient (by enc key).

    `passwords`: the node's and institutions' passwords already handed out, kept; the others are new.
    """
    head = _build_head(identity, prefix, institutions, passwords or {})
    patients = {
        entry.username: entry for entry in iter_patient_access(identity, chain_id, prefix, patient_enc_keys)
    }
    acl, passwd = _render(head, patients.values())
    return BrokerAccess(acl, passwd, head.handed_out, len(patients))


# --- the files -------------------------------------------------------------------------------------


def write_private_file(path: Path, text: str) -> None:
    """Replace `path` atomically, mode 0600, never through a link (`node.private_files`)."""
    write_private_bytes(path, text.encode("utf-8"))


def load_handed_out(directory: Path) -> dict[str, str]:
    """The passwords of `directory/credentials.json` (none when it does not exist)."""
    path = directory / CREDENTIALS_FILE
    try:
        raw = read_private_file(path, CREDENTIALS_BYTES_MAX)
    except PrivateFileError as exc:
        raise BrokerAccessError(exc.message) from None
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise BrokerAccessError(
            f"{path} is not a JSON object of user names to passwords; delete it to start anew"
        )
    return data


def save_broker_access(directory: Path, access: BrokerAccess) -> None:
    """`acl`, `passwd` and `credentials.json` into `directory` (created with mode 0700)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private_file(directory / CREDENTIALS_FILE, json.dumps(access.handed_out, indent=2) + "\n")
    write_private_file(directory / PASSWD_FILE, access.passwd)
    write_private_file(directory / ACL_FILE, access.acl)


def is_broker_process(pid: int) -> bool:
    """Whether process `pid` is a mosquitto (Linux's /proc; without one, it cannot be told: True)."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return not Path("/proc/self/comm").exists()
    except OSError:
        return False
    return name.startswith("mosquitto")


def signal_broker(pid_file: Path) -> bool:
    """Ask the broker whose pid `pid_file` holds to reload its files (SIGHUP); False if it cannot.

    The pid file is read without following a link, and the pid must be a mosquitto process: SIGHUP
    ends most other programs, so a pid file pointed or rewritten at another of the node user's
    processes must not let the node kill it.
    """
    try:
        raw = read_private_file(pid_file, PID_FILE_BYTES_MAX)
        if raw is None:
            log.warning("MQTT broker pid file %s does not exist; the broker was not told to reload", pid_file)
            return False
        pid = int(raw.decode("ascii").strip())
        if pid <= 1:
            raise ValueError(pid)
        if not is_broker_process(pid):
            raise ValueError(f"process {pid} is not a mosquitto")
        os.kill(pid, signal.SIGHUP)
    except PrivateFileError as exc:
        log.warning("cannot signal the MQTT broker: %s; it was not told to reload", exc.message)
        return False
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.warning("cannot signal the MQTT broker from %s (%s); it was not told to reload", pid_file, exc)
        return False
    return True


class LiveBrokerAccess:
    """The broker's access files, kept current by the running node (`[mqtt] acl_dir`).

    `load` writes them for every patient of the store; `add_patients` adds the patients whose
    registration was just committed. Each writes the files only when something changed, then
    signals the broker (`[mqtt] broker_pid_file`). Blocking (x25519, PBKDF2, file writes): call
    from a worker thread. One caller at a time (the publisher's follower).
    """

    def __init__(
        self,
        identity: Identity,
        chain_id: str,
        prefix: str,
        institutions: Iterable[bytes],
        directory: Path,
        *,
        pid_file: Path | None = None,
        node_password: str | None = None,
    ) -> None:
        self.identity = identity
        self.chain_id = chain_id
        self.prefix = prefix
        self.institutions = tuple(institutions)
        self.directory = directory
        self.pid_file = pid_file
        self.node_password = node_password
        self._head: _Head | None = None
        self._patients: dict[str, PatientAccess] = {}
        #: Patients added since the files were last written (a failed write is retried).
        self._dirty = False
        #: Times the files were written (a test and the logs read it).
        self.writes = 0

    @property
    def patients(self) -> int:
        return len(self._patients)

    @property
    def is_dirty(self) -> bool:
        """Patients were added whose files could not be written yet."""
        return self._dirty

    def load(self, patient_enc_keys: Iterable[bytes]) -> None:
        passwords = load_handed_out(self.directory)
        if self.node_password:
            # The node connects with its [mqtt] password_file: the broker must accept exactly that.
            passwords[get_node_username(self.identity.public.sign_key)] = self.node_password
        self._head = _build_head(self.identity, self.prefix, self.institutions, passwords)
        self._patients = {}
        self._add(patient_enc_keys)
        self._save()

    def add_patients(self, patient_enc_keys: Iterable[bytes]) -> None:
        """Add these patients (already known ones are skipped); write if anything is unwritten."""
        self._add(patient_enc_keys)
        if self._dirty:
            self._save()

    def _add(self, patient_enc_keys: Iterable[bytes]) -> None:
        for entry in iter_patient_access(self.identity, self.chain_id, self.prefix, patient_enc_keys):
            if entry.username not in self._patients:
                self._patients[entry.username] = entry
                self._dirty = True

    def _save(self) -> None:
        if self._head is None:
            raise RuntimeError("LiveBrokerAccess.load must run before patients are added")  # a bug
        acl, passwd = _render(self._head, self._patients.values())
        access = BrokerAccess(acl, passwd, self._head.handed_out, len(self._patients))
        try:
            save_broker_access(self.directory, access)
        except OSError as exc:
            raise BrokerAccessError(
                f"cannot write the broker's files in {self.directory}: {exc.strerror}"
            ) from None
        self._dirty = False
        self.writes += 1
        log.info("wrote the MQTT broker's ACL and password files: %d patients", len(self._patients))
        if self.pid_file is not None:
            signal_broker(self.pid_file)


def export_broker_access(config: NodeConfig, out: Path) -> BrokerAccess:
    """The broker's files for the STOPPED node of `config` (it opens the store), written into `out`.

    A node that never started (no data directory) has no patients: the files name the node and
    the institutions only, enough for the broker's first start. Passwords already in
    `out/credentials.json` are kept; the node's is its `[mqtt] password_file` when it has one.
    """
    genesis = load_genesis(config.genesis_file)
    identity = load_identity(config.key_file, read_passphrase(config))
    institutions = [i.sign_key for i in decode_genesis(genesis.app_state).institutions]
    passwords = load_handed_out(out)
    node_password = read_password(config)
    if node_password:
        passwords[get_node_username(identity.public.sign_key)] = node_password
    enc_keys: list[bytes] = []
    if config.data_dir.exists():  # else a node that never started: no patient yet
        try:
            store = BlockStore.open(config.data_dir, create=False)
        except Exception as exc:
            raise BrokerAccessError(
                f"cannot open the store at {config.data_dir} (stop the node first, or let the "
                f"running node keep the files: [mqtt] acl_dir): {exc}"
            ) from None
        try:
            enc_keys = [patient.enc_key for patient in st.iter_patients(store)]
        finally:
            store.close()
    access = build_broker_access(
        identity, genesis.chain_id, config.mqtt.topic_prefix, institutions, enc_keys, passwords=passwords
    )
    try:
        save_broker_access(out, access)
    except OSError as exc:
        raise BrokerAccessError(f"cannot write the broker's files in {out}: {exc.strerror}") from None
    return access
