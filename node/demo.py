"""`medledger demo`: the four-institution demo network and the consent story, for real.

From the packaged `demo.toml` (`node/demo.toml`; `--config` for another) it creates a network (a
clinic, a hospital, an insurer and a research institute, each a validator on its own node process),
then drives the scenario through the real interfaces: the patient's SDK (keys on the patient's side,
decryption and signatures local) and each institution's REST API (bearer token). It registers a
synthetic patient, has the clinic add records, the hospital inquire, the patient grant, the hospital
read, prints the patient's audit trail, the app's address and where to reach the nodes, and keeps
the network running until Ctrl-C (or exits with `once`).
The FHIR data is synthetic, generated here from a seed, offline.

Every node publishes its ledger events to a real mosquitto broker that the demo starts
(`node.demo_events`), keeping the broker's ACL and password files current as patients register;
the patient subscribes as soon as they are registered and each notification is printed where it
arrives in the story.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import random
import secrets
import shutil
import signal
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Final

from medledger.chain.types import ConsensusParams
from medledger.crypto import Identity, save_identity
from medledger.health.event_subscription import EventSubscription
from medledger.health.event_topics import DEFAULT_TOPIC_PREFIX, compute_patient_subscription
from medledger.health.events import (
    EVENT_CLAIM_DECIDED,
    EVENT_INQUIRY_FILED,
    EVENT_INQUIRY_GRANTED,
    EVENT_RECORD_ADDED,
    EVENT_RECORD_READ,
)
from medledger.health.sdk import (
    PatientClient,
    describe_audit,
    format_audit,
    get_genesis_pin_path,
    save_genesis_pin,
)
from medledger.health.types import ROLES
from medledger.node.demo_claims import run_insurer_story
from medledger.node.demo_events import (
    BROKER_HOST,
    DemoBroker,
    PatientNotifications,
    find_mosquitto,
    pick_free_port,
)
from medledger.node.demo_research import run_research_story
from medledger.node.errors import ConfigError, NodeError
from medledger.node.home import write_secret_file
from medledger.node.mqtt_acl import build_broker_access, get_node_username, save_broker_access
from medledger.node.process import NodeProcess
from medledger.node.testnet import (
    DEMO_NETWORK_DIR,
    NEW_NETWORK_CONSENSUS_PARAMS,
    TestnetNode,
    create_testnet,
    write_cluster_record,
)

DEMO_MARKER: Final = ".medledger-demo"
DEMO_CONFIG_NAME: Final = "demo.toml"
NETWORK_DIR: Final = DEMO_NETWORK_DIR  # where `cluster status --dir <home>` looks too
PATIENT_KEY: Final = "patient.key"
PATIENT_PASSPHRASE: Final = "patient.passphrase"
READY_TIMEOUT_S: Final = 120.0
#: Where the broker's configuration, pid file and log go (in the network directory).
BROKER_DIR: Final = "mosquitto"
#: In each node's home: the broker files the node keeps current, and its own broker password.
NODE_ACL_DIR: Final = "broker"
NODE_MQTT_PASSWORD: Final = "mqtt.password"

Echo = Callable[[str], None]


@dataclasses.dataclass(frozen=True, slots=True)
class DemoConfig:
    chain_id: str
    block_interval_ms: int
    base_port: int
    institutions: tuple[tuple[str, str], ...]
    #: The genesis's block caps and leader window (keys `block_txs_max`, `block_bytes_max`,
    #: `leader_window` of demo.toml; each defaults to a new network's).
    consensus_params: ConsensusParams = NEW_NETWORK_CONSENSUS_PARAMS


def load_demo_config(path: Path) -> DemoConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        institutions = tuple((str(i["name"]), str(i["role"])) for i in data["institutions"])
        config = DemoConfig(
            chain_id=str(data.get("chain_id", "medledger-demo")),
            block_interval_ms=int(data.get("block_interval_ms", 0)),
            base_port=int(data.get("base_port", 0)),
            institutions=institutions,
            consensus_params=ConsensusParams(
                block_txs_max=int(data.get("block_txs_max", NEW_NETWORK_CONSENSUS_PARAMS.block_txs_max)),
                block_bytes_max=int(
                    data.get("block_bytes_max", NEW_NETWORK_CONSENSUS_PARAMS.block_bytes_max)
                ),
                leader_window=int(data.get("leader_window", NEW_NETWORK_CONSENSUS_PARAMS.leader_window)),
            ),
        )
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a demo network description ({type(exc).__name__}: {exc})") from None
    roles = {role for _, role in institutions}
    if not {"clinic", "hospital"} <= roles or not roles <= ROLES:
        raise ConfigError(
            f"{path}: the demo needs a clinic and a hospital; roles are {', '.join(sorted(ROLES))}"
        )
    return config


def packaged_demo_config() -> Path:
    """The demo's network description, shipped inside the package (`medledger/node/demo.toml`), so
    `medledger demo` runs from any directory, as an installed command is used."""
    path = Path(str(importlib.resources.files("medledger.node").joinpath(DEMO_CONFIG_NAME)))
    if not path.is_file():  # a broken installation, not a user's mistake
        raise ConfigError(
            f"the packaged demo description {path} is missing; reinstall medledger or pass --config"
        )
    return path


# --- synthetic FHIR (offline) ---------------------------------------------------------------------


def make_synthetic_records(seed: int) -> list[dict[str, Any]]:
    """A glucose Observation, a Condition and an Immunization for a made-up patient."""
    rng = random.Random(seed)  # noqa: S311 - synthetic demo data, not security
    subject = {"reference": f"Patient/synthetic-{seed:08x}"}
    day = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return [
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}]},
            "subject": subject,
            "effectiveDateTime": f"{day}T08:30:00Z",
            "valueQuantity": {
                "value": round(rng.uniform(4.0, 9.0), 1),
                "unit": "mmol/L",
                "system": "http://unitsofmeasure.org",
                "code": "mmol/L",
            },
        },
        {
            "resourceType": "Condition",
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                ]
            },
            "code": {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "44054006",
                        "display": "Diabetes mellitus type 2",
                    }
                ]
            },
            "subject": subject,
            "onsetDateTime": f"20{rng.randint(10, 22)}-06-01",
        },
        {
            "resourceType": "Immunization",
            "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
            "patient": subject,
            "occurrenceDateTime": day,
            "lotNumber": f"SYN-{rng.randint(0, 9999):04d}",
        },
    ]


# --- an institution's API client -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class InstitutionClient:
    name: str
    url: str
    token: str

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)  # noqa: S310 - loopback
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise NodeError(
                f"{self.name}: {method} {path}: {exc.code} {exc.read(2000).decode(errors='replace')}"
            ) from None


# --- the scenario ----------------------------------------------------------------------------------


def _prepare(home: Path, config: DemoConfig, base_port: int | None) -> list[TestnetNode]:
    network = home / NETWORK_DIR
    if network.exists():
        if not (network / DEMO_MARKER).exists():
            raise ConfigError(
                f"{network} exists and was not created by `medledger demo`; choose another --home"
            )
        shutil.rmtree(network)  # the previous demo's chain: the demo always starts anew
    nodes = create_testnet(
        network,
        validators=len(config.institutions),
        chain_id=config.chain_id,
        block_interval_ms=config.block_interval_ms,
        base_port=config.base_port if base_port is None else base_port,
        app="health",
        names=[name for name, _ in config.institutions],
        roles=[role for _, role in config.institutions],
        consensus_params=config.consensus_params,
    )
    (network / DEMO_MARKER).write_text(
        "created by medledger demo; deleted by its next run\n", encoding="utf-8"
    )
    return nodes


def _patient(home: Path) -> tuple[Identity, Path]:
    """A fresh synthetic patient's key file (the passphrase file is for the demo only)."""
    key_path, passphrase_path = home / PATIENT_KEY, home / PATIENT_PASSPHRASE
    passphrase = secrets.token_urlsafe(18).encode()
    write_secret_file(passphrase_path, passphrase + b"\n")
    identity = Identity.generate()
    save_identity(key_path, identity, passphrase, overwrite=True)
    get_genesis_pin_path(key_path).unlink(missing_ok=True)  # a new key: a new network to pin
    return identity, key_path


def _broker_ports(config: DemoConfig, base_port: int | None, count: int) -> list[int]:
    """After the nodes' ports (base_port + 3i .. + 3i + 2): base_port + 3n + i; free ports for 0."""
    base = config.base_port if base_port is None else base_port
    if base == 0:
        return [pick_free_port() for _ in range(count)]
    return [base + 3 * count + i for i in range(count)]


def _prepare_broker(
    binary: str, home: Path, nodes: list[TestnetNode], ports: list[int], chain_id: str
) -> DemoBroker:
    """The broker's configuration, and each node's `[mqtt]` section and first access files.

    The chain is new, so the first files name no patient; each node rewrites them as patients
    register (`[mqtt] acl_dir`) and signals the broker through its pid file.
    """
    broker = DemoBroker(
        binary,
        home / NETWORK_DIR / BROKER_DIR,
        [(p, n.home / NODE_ACL_DIR) for n, p in zip(nodes, ports, strict=True)],
    )
    institutions = [n.identity.public.sign_key for n in nodes]
    for node, port in zip(nodes, ports, strict=True):
        user = get_node_username(node.identity.public.sign_key)
        password = secrets.token_urlsafe(24)
        write_secret_file(node.home / NODE_MQTT_PASSWORD, password.encode() + b"\n")
        access = build_broker_access(
            node.identity, chain_id, DEFAULT_TOPIC_PREFIX, institutions, (), passwords={user: password}
        )
        save_broker_access(node.home / NODE_ACL_DIR, access)
        with (node.home / "config.toml").open("a", encoding="utf-8") as config:
            config.write(
                "\n# Written by `medledger demo`: ledger events to the demo's mosquitto (ADR 0015).\n"
                "[mqtt]\n"
                f'url = "mqtt://{BROKER_HOST}:{port}"\n'
                f'username = "{user}"\n'
                f'password_file = "{NODE_MQTT_PASSWORD}"\n'
                f'acl_dir = "{NODE_ACL_DIR}"\n'
                f'broker_pid_file = "{broker.pid_file}"\n'
            )
    return broker


def _subscribe_patient(
    url: str, identity: Identity, genesis_hash: bytes | None, node_name: str, port: int, echo: Echo
) -> PatientNotifications:
    """The patient's notifications from the node at `url` (named `node_name` in the genesis).

    A client of its own (the subscription's thread uses it); the broker credentials are derived
    here, on the patient's side, from the patient's key and the node's public keys.
    """
    client = PatientClient(url, identity, genesis_hash=genesis_hash)
    sign_key = next(k for k, name in client.institution_names().items() if name == node_name)
    username, password, topic = compute_patient_subscription(
        identity, client.chain_id, sign_key, client.institution_enc_key(sign_key)
    )
    _, start = client.list_events(0, 1000)  # from now on: the story's events
    subscription = EventSubscription(
        host=BROKER_HOST,
        port=port,
        username=username,
        password=password,
        topic=topic,
        fetch=lambda after: client.list_events(after, 1000),
        after=start,
    )
    notifications = PatientNotifications(subscription, echo)
    notifications.start()
    return notifications


def wait_synced(clients: dict[str, InstitutionClient], height: int, timeout_s: float = 60.0) -> None:
    """Wait until every node has committed `height` (each applies a block in its own time)."""
    deadline = time.monotonic() + timeout_s
    for client in clients.values():
        while int(client.call("GET", "/status")["height"]) < height:
            if time.monotonic() > deadline:
                raise NodeError(f"{client.name} did not reach height {height} within {timeout_s} s")
            time.sleep(0.05)  # polling a condition with a deadline


def run_scenario(
    clients: dict[str, InstitutionClient],
    roles: dict[str, str],
    patient: PatientClient,
    echo: Echo,
    subscribe: Callable[[], PatientNotifications],
) -> PatientNotifications:
    """The consent story; `subscribe` starts the patient's notifications once they are registered."""
    clinic = next(clients[n] for n, r in roles.items() if r == "clinic")
    hospital = next(clients[n] for n, r in roles.items() if r == "hospital")
    patient_id = patient.patient_id.hex()

    done = patient.register()
    echo(f"1. patient {patient_id[:16]}… registered (signed on the patient's device) at height {done.height}")
    wait_synced(clients, done.height)
    notifications = subscribe()
    try:
        _run_story(clients, clinic, hospital, patient, notifications, echo)
        _run_insurer_story(clients, roles, patient, notifications, echo)
        echo("")
        echo("The research story: a study, opt-ins, a federated histogram (node/demo_research.py):")
        run_research_story(clients, roles, patient, echo)
    except BaseException:
        notifications.stop()
        raise
    return notifications


def _run_story(
    clients: dict[str, InstitutionClient],
    clinic: InstitutionClient,
    hospital: InstitutionClient,
    patient: PatientClient,
    notifications: PatientNotifications,
    echo: Echo,
) -> None:
    patient_id = patient.patient_id.hex()
    # The node added the patient to the broker's files when it committed the registration.
    notifications.wait_live("the node did not add the patient to the broker's files")
    echo("   the patient's device subscribed to their notifications (credentials derived on the device)")
    for resource in make_synthetic_records(int.from_bytes(patient.patient_id[:4], "big")):
        added = clinic.call(
            "POST", "/v1/health/institution/records", {"patient_id": patient_id, "resource": resource}
        )
        echo(
            f"2. {clinic.name} added record {added['record_id'][:16]}… ({added['record_type']}) "
            f"(encrypted for {added['readers']} readers) at height {added['height']}"
        )
        notifications.expect(EVENT_RECORD_ADDED, record_id=added["record_id"])
        wait_synced(clients, added["height"])
    inquiry = {
        "patient_id": patient_id,
        "purpose": "TREAT",
        "reason": "referral for a diabetes follow-up",
        "record_types": ["Condition", "Observation"],
    }
    asked = hospital.call("POST", "/v1/health/institution/inquiries", inquiry)
    wait_synced(clients, asked["height"])
    echo(
        f"3. {hospital.name} asked for Condition + Observation records (TREAT): "
        f"inquiry {asked['inquiry_id'][:16]}…"
    )
    notifications.expect(EVENT_INQUIRY_FILED, inquiry_id=asked["inquiry_id"])
    for pending in patient.list_pending_inquiries():
        # The reason is sealed on the ledger for the patient and the hospital: opened on the device.
        echo(f"   the patient reads the sealed reason: {patient.inquiry_reason(pending)!r}")
        granted = patient.grant(pending.inquiry_id)
        echo(f"4. the patient granted inquiry {pending.inquiry_id.hex()[:16]}… at height {granted.height}")
        notifications.expect(EVENT_INQUIRY_GRANTED, inquiry_id=pending.inquiry_id.hex())
        wait_synced(clients, granted.height)
    readable = hospital.call("GET", f"/v1/health/institution/records?patient_id={patient_id}")["records"]
    for item in readable:
        read = hospital.call("GET", f"/v1/health/institution/records/{item['record_id']}")
        resource = read["resource"]
        coding = resource.get("code", {}).get("coding", [{}])[0]
        value = resource.get("valueQuantity", {})
        what = coding.get("display", resource["resourceType"])
        if value:
            what += f" = {value.get('value')} {value.get('unit', '')}"
        echo(
            f"5. {hospital.name} read {item['record_type']} {item['record_id'][:16]}…: {what} "
            f"(read receipt at height {read['receipt']['height']})"
        )
        notifications.expect(EVENT_RECORD_READ, inquiry_id=asked["inquiry_id"])


def _run_insurer_story(
    clients: dict[str, InstitutionClient],
    roles: dict[str, str],
    patient: PatientClient,
    notifications: PatientNotifications,
    echo: Echo,
) -> None:
    echo("")
    echo("The insurer's story: a standing consent for payment, then a claim (node/demo_claims.py):")
    claim_id = run_insurer_story(clients, roles, patient, echo)
    if claim_id is not None:
        notifications.expect(EVENT_CLAIM_DECIDED, claim_id=claim_id)
    echo("")
    echo("The patient's audit trail (fetched and checked by the patient's client):")
    for line in format_audit(describe_audit(patient)):
        echo("  " + line)


def run_demo(
    home: Path,
    config_path: Path,
    *,
    once: bool,
    base_port: int | None,
    echo: Echo,
    mosquitto: str | None = None,
) -> None:
    """The demo; `mosquitto`: the broker's binary (default: on PATH, else /usr/sbin/mosquitto)."""
    config = load_demo_config(config_path)
    binary = find_mosquitto(mosquitto)  # before anything is created: say how to install it
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    echo(f"creating the demo network from {config_path} in {home / NETWORK_DIR}")
    nodes = _prepare(home, config, base_port)
    broker_ports = _broker_ports(config, base_port, len(nodes))
    broker = _prepare_broker(binary, home, nodes, broker_ports, config.chain_id)
    processes = [NodeProcess(n.home, use_config_ports=True) for n in nodes]
    stop = threading.Event()
    waiting = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if not waiting.is_set():  # mid-scenario: unwind now, the `finally` stops the nodes
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    record: Path | None = None
    notifications: PatientNotifications | None = None
    try:
        broker.start()
        echo(
            f"mosquitto up: a listener per node on {BROKER_HOST}:{', '.join(map(str, broker_ports))}, "
            "no anonymous access, each node's ACL"
        )
        for process in processes:
            process.start()
        urls = [process.wait_ready(READY_TIMEOUT_S) for process in processes]
        # `medledger cluster status --dir <home>` sees this network as one `cluster up` started.
        record = write_cluster_record(
            home / NETWORK_DIR, [(n.home, p) for n, p in zip(nodes, processes, strict=True)]
        )
        clients = {
            n.name: InstitutionClient(n.name, url, n.api_token) for n, url in zip(nodes, urls, strict=True)
        }
        roles = {n.name: n.role for n in nodes}
        identity, key_path = _patient(home)
        echo(f"{len(nodes)} institutions up, each a validator on its own node; the scenario:")
        patient = PatientClient(urls[0], identity)

        def subscribe() -> PatientNotifications:
            # The patient's node is the one their client talks to: its listener, its topic for them.
            return _subscribe_patient(
                urls[0], identity, patient.genesis_hash, nodes[0].name, broker_ports[0], echo
            )

        notifications = run_scenario(clients, roles, patient, echo, subscribe)
        if patient.genesis_hash is not None:  # the CLI commands below use the genesis the SDK pinned
            save_genesis_pin(key_path, patient.genesis_hash, patient.chain_id)
        echo("")
        echo(
            f"The patient's notifications: {notifications.shown} shown, "
            f"{notifications.shown_from_broker} of them delivered live by the broker"
        )
        echo("")
        echo("The nodes:")
        for node, url in zip(nodes, urls, strict=True):
            echo(
                f"  {node.name:<10} {node.role:<9} {url}   token: {node.home / 'api_token'}   "
                f"log: {node.home / 'node.log'}"
            )
        echo(
            f"  {'broker':<10} {'mosquitto':<9} mqtt://{BROKER_HOST}:{broker_ports[0]} (a port per node)   "
            f"ACLs: <node>/{NODE_ACL_DIR}/   log: {broker.log_file}"
        )
        echo("The patient's app (keys stay in the browser):")
        # The fragment pins the network's genesis in the page (never sent to a node).
        pin = f"#genesis={patient.genesis_hash.hex()}" if patient.genesis_hash is not None else ""
        echo(f"  open {urls[0]}/app/{pin} and import the key file {key_path}")
        echo(f"  with the passphrase in {home / PATIENT_PASSPHRASE}")
        echo("Try:")
        echo(f"  .venv/bin/medledger cluster status --dir {home / NETWORK_DIR}")
        echo(f'  curl -H "Authorization: Bearer $(cat {nodes[0].home / "api_token"})" {urls[0]}/status')
        echo(
            f"  .venv/bin/medledger patient --key {key_path} --passphrase-file {home / PATIENT_PASSPHRASE} "
            f"--url {urls[-1]} audit"
        )
        if once:
            return
        waiting.set()  # before the line that invites Ctrl-C: from here it stops the network gently
        echo(
            "The network keeps running (the patient's notifications are printed as they arrive); "
            "Ctrl-C stops it."
        )
        while not stop.wait(0.2):  # the wake-up prints notifications and checks the processes
            notifications.show_arrived()
            dead = [n.name for n, p in zip(nodes, processes, strict=True) if not p.running]
            if dead:
                raise NodeError(f"node(s) {', '.join(dead)} exited; see their node.log")
            if not broker.running:
                raise NodeError(f"mosquitto exited; see {broker.log_file}")
        echo("stopping the network")
    finally:
        _stop_all(record, notifications, processes, broker)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_process(process: NodeProcess) -> None:
    process.stop()


def _stop_all(
    record: Path | None,
    notifications: PatientNotifications | None,
    processes: list[NodeProcess],
    broker: DemoBroker,
) -> None:
    """Stop everything the demo started; one step failing does not skip the others."""
    steps: list[Callable[[], None]] = []
    if record is not None:
        steps.append(lambda: record.unlink(missing_ok=True))
    if notifications is not None:
        steps.append(notifications.stop)
    steps += [functools.partial(_stop_process, process) for process in processes]
    steps.append(broker.stop)  # last: the nodes flush their queues to it as they stop
    errors: list[BaseException] = []
    for step in steps:
        try:
            step()
        except Exception as exc:  # every step runs; the first error is raised after
            errors.append(exc)
    if errors:
        raise errors[0]
