"""A certificate authority and a broker certificate, made for one run of a secured cluster.

Kafka 4.x reads PEM directly (``ssl.keystore.type=PEM``, ``ssl.truststore.type=PEM``), and
the pinned release accepts a file-based PEM key store whose PKCS#8 private key is *not*
encrypted (no ``ssl.key.password``), so no ``keytool`` and no JKS/PKCS#12 file is needed.
The CA's private key signs the broker certificate and is then dropped: nothing can sign a
second certificate with it, and the next ``up`` makes a new CA.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from typing import Final

#: the broker certificate's subject; brokers and controllers authenticate to each other
#: with it (mutual TLS), and ``ssl.principal.mapping.rules`` turns it into ``User:broker``
BROKER_CN: Final = "broker"
CA_CN: Final = "mdpeer local Kafka CA"
VALID_DAYS: Final = 30


@dataclass(frozen=True, slots=True)
class Certificates:
    """PEM text: the CA certificate, and the broker's key followed by its chain."""

    ca_pem: bytes
    #: PKCS#8 private key (unencrypted), then the broker certificate, then the CA's
    broker_pem: bytes


def make_certificates(hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Certificates:
    """A fresh CA and a broker certificate for ``hosts`` (IP addresses or DNS names).

    EC P-256 keys: generated in a millisecond, and both the JVM and librdkafka's OpenSSL
    accept them. The broker certificate serves TLS (clients check the subject alternative
    names) and is also the brokers' client certificate on the internal listeners.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    # a little in the past: a clock that differs by seconds never sees a future certificate
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=VALID_DAYS)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_CN)])

    def issued(
        subject: x509.Name, key: ec.EllipticCurvePrivateKey, *, ca: bool
    ) -> x509.CertificateBuilder:
        """A certificate the CA issues for the run's validity: its own (``ca``: it signs only
        certificates), or a broker's (it signs handshakes and agrees keys, ECDHE)."""
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=not ca,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=not ca,
                    key_cert_sign=ca,
                    crl_sign=ca,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )

    ca_cert = (
        issued(ca_name, ca_key, ca=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        issued(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BROKER_CN)]), key, ca=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    ca_pem = ca_cert.public_bytes(pem)
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Certificates(ca_pem=ca_pem, broker_pem=key_pem + cert.public_bytes(pem) + ca_pem)
