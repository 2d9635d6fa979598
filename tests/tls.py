"""A self-signed certificate for 127.0.0.1, for wss:// to the emulator (google-genai only
speaks TLS). Used by tests and benchmarks."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import msgspec


class LoopbackTls(msgspec.Struct, frozen=True):
    cert: Path
    key: Path

    def server(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client(self) -> ssl.SSLContext:
        """A client context that trusts this certificate (and verifies it)."""
        return ssl.create_default_context(cafile=str(self.cert))


def self_signed(directory: Path | str) -> LoopbackTls:
    directory = Path(directory)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return LoopbackTls(cert, key)
