"""Certificates for 127.0.0.1, for wss:// to the emulator (google-genai only speaks TLS): a
test CA, which clients trust, and a server certificate it signed (rustls, like browsers, does
not take a CA certificate as a server's own). Used by tests and benchmarks."""

from __future__ import annotations

import secrets
import ssl
import subprocess
from pathlib import Path

import msgspec


class LoopbackTls(msgspec.Struct, frozen=True):
    ca: Path  # what clients trust (PEM)
    chain: Path  # the server's certificate, then the CA's (PEM)
    key: Path  # the server's private key (PEM)

    def server(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.chain, self.key)
        return context

    def client(self) -> ssl.SSLContext:
        """A Python ``ssl`` client context that trusts the test CA (and verifies)."""
        return ssl.create_default_context(cafile=str(self.ca))


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def loopback_tls(directory: Path | str) -> LoopbackTls:
    """A fresh test CA and a certificate for 127.0.0.1 it signed, valid for a day."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", d / "ca-key.pem", "-out", d / "ca.pem", "-days", "1",
             "-subj", f"/CN=geminilive test CA {secrets.token_hex(4)}")  # fmt: skip
    _openssl("req", *ec, "-keyout", d / "key.pem", "-out", d / "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n")
    _openssl("x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca-key.pem",
             "-CAcreateserial", "-out", d / "server.pem", "-days", "1", "-extfile", d / "server.ext")  # fmt: skip
    (d / "chain.pem").write_bytes((d / "server.pem").read_bytes() + (d / "ca.pem").read_bytes())
    return LoopbackTls(ca=d / "ca.pem", chain=d / "chain.pem", key=d / "key.pem")
