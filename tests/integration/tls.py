"""A throw-away PKI for the SASL_SSL test broker, made with ``cryptography``.

:func:`make_test_pki` writes, into one directory:

* ``ca.pem``: the test CA's certificate (what clients pass as ``--ssl-cafile``);
* ``broker-keystore.pem``: the broker's private key (PKCS#8, unencrypted), its
  certificate (SAN ``127.0.0.1`` and ``localhost``) and the CA certificate, in
  the one-file PEM form Kafka reads with ``ssl.keystore.type=PEM``;
* ``other-ca.pem``: an unrelated CA, which signed nothing the broker presents
  (a client that trusts only it must refuse the broker).

Keys are ECDSA P-256 (fast to make; Java and OpenSSL both speak it). Nothing
here is fit for production: the keys are unencrypted on disk and live a day.

Run ``python -m tests.integration.tls DIR`` to make one by hand (for
``KAFKA_LOCAL_SECURITY=SASL_SSL scripts/kafka-local start``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=1)
# Certificates start a little in the past: a broker JVM and a client whose
# clocks differ by a second must not see a "not yet valid" certificate.
BACKDATE = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Pki:
    """Paths of one generated PKI."""

    directory: Path
    ca: Path
    broker_keystore: Path
    other_ca: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "zt-detector tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca(common_name: str, now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, now: dt.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_test_pki(directory: Path) -> Pki:
    """Generate a test CA, a broker certificate and an unrelated CA in ``directory``.

    Returns
    -------
    Pki
        The paths of the written files (see the module docstring).
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key, ca_cert = _ca("zt-detector test CA", now)
    broker_key, broker_cert = _leaf(ca_key, ca_cert, now)
    _other_key, other_cert = _ca("an unrelated CA", now)

    pki = Pki(
        directory=directory,
        ca=directory / "ca.pem",
        broker_keystore=directory / "broker-keystore.pem",
        other_ca=directory / "other-ca.pem",
    )
    pki.ca.write_bytes(_pem(ca_cert))
    pki.other_ca.write_bytes(_pem(other_cert))
    key_pem = broker_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pki.broker_keystore.touch(mode=0o600)
    pki.broker_keystore.write_bytes(key_pem + _pem(broker_cert) + _pem(ca_cert))
    return pki


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.integration.tls OUT_DIR")
    made = make_test_pki(Path(sys.argv[1]))
    print(made.directory)
