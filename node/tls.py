"""TLS for the node's API: the server context and self-signed certificates for `init --tls`.

A self-signed certificate is made by the `openssl` binary rather than by a Python package:
Python's `ssl` module cannot create certificates, the `cryptography` package is not among
medledger's dependencies (nothing installed pulls it in), and `openssl` is the same library
Python's `ssl` already links, present wherever Python's `ssl` is. The key is an ECDSA P-256 key
(mode 0600), the certificate names loopback (`127.0.0.1`, `::1`, `localhost`) and any extra host
the operator gives, and lasts `CERT_DAYS` days. Clients pin it as their CA file; a real
certificate from a CA replaces both files (README.md "TLS").
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from collections.abc import Sequence
from ipaddress import ip_address
from pathlib import Path
from typing import Final

from medledger.node.errors import ConfigError

#: Lifetime of a self-signed certificate (825 days: the longest most clients accept).
CERT_DAYS: Final = 825
CERT_FILE: Final = "tls_cert.pem"
KEY_FILE: Final = "tls_key.pem"
#: Names every self-signed certificate carries (a node's API defaults to loopback).
LOOPBACK_NAMES: Final = ("127.0.0.1", "::1", "localhost")
OPENSSL_TIMEOUT_S: Final = 60.0


def _subject_alt_names(hosts: Sequence[str]) -> str:
    names = []
    for host in dict.fromkeys([*LOOPBACK_NAMES, *hosts]):
        try:
            ip_address(host)
        except ValueError:
            if not host or any(c in host for c in ",=/\\ \n"):
                raise ConfigError(f"{host!r} is not a host name for a certificate") from None
            names.append(f"DNS:{host}")
        else:
            names.append(f"IP:{host}")
    return ",".join(names)


def create_self_signed_certificate(
    cert_path: Path, key_path: Path, *, common_name: str, hosts: Sequence[str] = ()
) -> None:
    """Write a fresh key (mode 0600) and a self-signed certificate for `hosts` and loopback."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ConfigError("making a self-signed certificate needs the `openssl` program; install it")
    if any(c in common_name for c in "/\\=\n") or not common_name:
        raise ConfigError(f"{common_name!r} cannot name a certificate")
    key_path.unlink(missing_ok=True)
    # The key file exists with mode 0600 before openssl writes into it.
    os.close(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    argv = [
        openssl,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key_path),
        "-out",
        str(cert_path),
        "-days",
        str(CERT_DAYS),
        "-subj",
        f"/CN={common_name}",
        "-addext",
        f"subjectAltName={_subject_alt_names(hosts)}",
    ]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=OPENSSL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"openssl could not make a certificate: {exc}") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise ConfigError(f"openssl could not make a certificate: {message[0]}")
    os.chmod(key_path, 0o600)


def create_server_ssl_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """The API's TLS context (TLS 1.2 or later); a missing or mismatched pair is a `ConfigError`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_path, key_path)
    except FileNotFoundError as exc:
        raise ConfigError(f"[api] TLS: {exc.filename} does not exist") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"[api] TLS: {cert_path} and {key_path} are not a PEM certificate chain and its key ({exc})"
        ) from None
    return context
