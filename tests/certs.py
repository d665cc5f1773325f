"""A private certificate authority and a server certificate for loopback, made with openssl.

The IMAP and SMTP tests run real TLS with certificate checks on, trusting this CA through the
same ``ca_file`` setting a user with a private CA would use.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # trust this
    cert: Path  # the server's certificate, for 127.0.0.1 and localhost
    key: Path
    other_ca: Path  # a CA that did not sign the server: trusting it must fail verification


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", str(key), "-out", str(cert),
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def make_tls_files(folder: Path) -> TlsFiles:
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca(folder, "test-ca")
    other_ca, _ = _ca(folder, "other-ca")
    key, csr, cert, ext = (folder / n for n in ("server.key", "server.csr", "server.pem", "server.ext"))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr))
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-days", "2", "-extfile", str(ext), "-out", str(cert))
    for path in (folder, ca, cert, key, other_ca):  # Dovecot reads them as its own unprivileged users
        path.chmod(0o755 if path.is_dir() else 0o644)
    return TlsFiles(ca, cert, key, other_ca)
