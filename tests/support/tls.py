"""A self-signed certificate for 127.0.0.1, for TLS servers in tests and benchmarks.

Usage::

    context, ca_file = server_context(tmp_path)   # server side; clients trust ca_file
    # (AWS_CA_BUNDLE=ca_file for botocore and the push sender)
"""
from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Tuple


def loopback_certificate(directory: Path) -> Tuple[str, str]:
    """Write a self-signed P-256 certificate for the IP address 127.0.0.1 (valid one day either
    side of now) and its key to ``directory``.

    Returns:
        ``(cert_path, key_path)``: PEM files; the certificate is its own CA.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory = Path(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def server_context(directory: Path) -> Tuple[ssl.SSLContext, str]:
    """A server-side TLS context (Python's defaults: TLS 1.3 allowed, so session tickets are
    sent after the handshake) for :func:`loopback_certificate`.

    Returns:
        ``(context, ca_file)``: clients verify the server with ``ca_file``.
    """
    cert_path, key_path = loopback_certificate(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path
