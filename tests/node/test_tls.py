"""TLS for the API (issue 9, #9), end to end with the self-signed certificate `medledger init --tls` makes.

A health home made by the real CLI, a real node process serving TLS: the patient's SDK pinned to
the home's certificate registers and reads its own records; the same SDK without the pin refuses
the node (the certificate is nobody's CA); plain HTTP to the TLS port gets no answer; the node's
log stays free of tracebacks through all of it.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
from pathlib import Path

import pytest
from click.testing import CliRunner
from node_harness import NODE_ENV, PASSPHRASE

from medledger.crypto import Identity
from medledger.health.sdk import PatientClient, PatientClientError
from medledger.node.cli import main
from medledger.node.config import load_config
from medledger.node.process import NodeProcess
from medledger.node.tls import CERT_FILE, KEY_FILE


def init_tls_home(home: Path) -> str:
    env = {k: None for k in os.environ if k.startswith("MEDLEDGER_")}
    result = CliRunner().invoke(
        main,
        ["init", "--home", str(home), "--app", "health", "--api-port", "0", "--ops-port", "0", "--tls"],
        env={**env, "MEDLEDGER_KEY_PASSPHRASE": PASSPHRASE},
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_trust_9_tls_works_end_to_end_with_the_certificate_init_makes(tmp_path: Path) -> None:
    home = tmp_path / "clinic"
    output = init_tls_home(home)
    assert "https://127.0.0.1:0" in output
    assert str(home / CERT_FILE) in output
    assert (home / KEY_FILE).stat().st_mode & 0o077 == 0  # the private key is the owner's only
    config = load_config(home, environ={})
    assert config.uses_tls
    assert config.tls_cert_file == home / CERT_FILE

    process = NodeProcess(home, env=dict(NODE_ENV))
    process.start()
    try:
        url = process.wait_ready()
        assert url.startswith("https://127.0.0.1:")
        assert process.get_json("/status")["height"] == 0  # the token over TLS, pinned

        patient = PatientClient(url, Identity.generate(), ca_file=home / CERT_FILE)
        registered = patient.register()
        assert registered.height >= 1
        assert patient.get_patient() is not None
        assert patient.list_records() == []

        # Without the pin the node's certificate is nobody's: refused before anything is sent.
        with pytest.raises(PatientClientError, match="CERTIFICATE_VERIFY_FAILED"):
            PatientClient(url, Identity.generate()).get_patient()

        # Plain HTTP to the TLS port: no HTTP answer.
        port = int(url.rsplit(":", 1)[1])
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        plain.request("GET", "/status")
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            plain.getresponse()
        plain.close()
        # A client speaking TLS to the node's certificate still gets through afterwards.
        context = ssl.create_default_context(cafile=str(home / CERT_FILE))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert patient.get_patient() is not None
    finally:
        process.stop()
    log = process.read_log()
    assert "Traceback" not in log, log[-3000:]
    assert " ERROR " not in log, log[-3000:]
