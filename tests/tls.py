"""A certificate authority made in the test: a CA, a server certificate for 127.0.0.1 and localhost, a client one.

Everything is PEM in a directory the test owns (``tmp_path``): the CA certificate (what clients
trust, ``ssl_cafile``), the server's certificate and PKCS#8 private key (what Kafka's PEM keystore
and the stub registry's ``ssl.SSLContext`` load), and a client certificate and key (what a worker
loads as ``ssl_certfile``/``ssl_keyfile``). EC P-256 keys: quick to make.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TestCa", "make_ca"]


@dataclass(frozen=True)
class TestCa:
    """PEM paths of one test CA and the server and client certificates it signed."""

    __test__ = False  # a helper, not a pytest test class

    cafile: Path
    certfile: Path
    keyfile: Path
    client_certfile: Path
    client_keyfile: Path

    def private_key_bodies(self) -> list[str]:
        """The base64 bodies of the server's and the client's private keys: what must never appear in a log."""
        return [_body(path) for path in (self.keyfile, self.client_keyfile)]

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting the signed certificate (for an https stub)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certfile, self.keyfile)
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "museflow tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _body(pem_file: Path) -> str:
    return "".join(line for line in pem_file.read_text().splitlines() if not line.startswith("-----"))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.touch(mode=0o600)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _leaf(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, common_name: str,
          names: list[x509.GeneralName], usage: x509.ObjectIdentifier,
          valid: tuple[datetime.datetime, datetime.datetime]) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(valid[0]).not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def make_ca(directory: Path, name: str = "museflow-test-ca") -> TestCa:
    """A new CA, a server certificate for ``127.0.0.1``/``localhost`` and a client certificate it signed,
    written to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(_name(name))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(valid[0]).not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key, server_cert = _leaf(
        ca_key, ca_cert, "localhost", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        ExtendedKeyUsageOID.SERVER_AUTH, valid)
    client_key, client_cert = _leaf(ca_key, ca_cert, "museflow-worker", [x509.DNSName("museflow-worker")],
                                    ExtendedKeyUsageOID.CLIENT_AUTH, valid)

    ca = TestCa(cafile=directory / "ca.pem", certfile=directory / "server.pem", keyfile=directory / "server-key.pem",
                client_certfile=directory / "client.pem", client_keyfile=directory / "client-key.pem")
    ca.cafile.write_bytes(_pem(ca_cert))
    ca.certfile.write_bytes(_pem(server_cert) + _pem(ca_cert))
    ca.client_certfile.write_bytes(_pem(client_cert) + _pem(ca_cert))
    _write_key(ca.keyfile, server_key)
    _write_key(ca.client_keyfile, client_key)
    return ca
