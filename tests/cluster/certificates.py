"""The test cluster's PKI: its CA, the API server's serving certificate, the ServiceAccount
signing key (`ClusterPki`), and certificates the CA signs (`issue_certificate`).

The API server trusts client certificates from that CA (`--client-ca-file`): the
subject's CN is the user name and each O is a group, as Kubernetes' x509 authenticator
reads them. The real Node (tests/cluster/node.py) uses this for the kubelet's serving
certificate (so `kubectl logs/exec/port-forward` verify it) and for the client
identities of the kubelet, kube-proxy, CoreDNS and the API server's kubelet client.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=30)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path`, readable by the owner only."""
    path.write_bytes(data)
    path.chmod(0o600)


@dataclass
class ClusterPki:
    """A CA, the API server's serving certificate and the ServiceAccount signing key."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path

    @classmethod
    def create(
        cls, directory: Path, extra_ips: Sequence[str] = (), service_cidr: str = "10.96.0.0/16"
    ) -> ClusterPki:
        """Generate them under `directory`; `extra_ips` become IP SANs of the serving cert, as does
        the first address of `service_cidr` (the `kubernetes` Service)."""
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        not_before = now - datetime.timedelta(hours=1)
        not_after = now + datetime.timedelta(days=30)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubemaas-test-ca")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )

        serving_key = ec.generate_private_key(ec.SECP256R1())
        first_service_ip = next(ipaddress.IPv4Network(service_cidr).hosts())
        names: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
            x509.IPAddress(first_service_ip),
            *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips),
        ]
        serving_cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name)
            .public_key(serving_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )

        # RSA for ServiceAccount tokens (RS256): what every token verifier accepts.
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

        pki = cls(
            ca_cert=directory / "ca.crt",
            ca_key=directory / "ca.key",
            serving_cert=directory / "apiserver.crt",
            serving_key=directory / "apiserver.key",
            sa_key=directory / "sa.key",
            sa_pub=directory / "sa.pub",
        )
        pem = serialization.Encoding.PEM
        private = serialization.PrivateFormat.TraditionalOpenSSL
        none = serialization.NoEncryption()
        pki.ca_cert.write_bytes(ca_cert.public_bytes(pem))
        write_private(pki.ca_key, ca_key.private_bytes(pem, private, none))
        pki.serving_cert.write_bytes(serving_cert.public_bytes(pem))
        write_private(pki.serving_key, serving_key.private_bytes(pem, private, none))
        write_private(pki.sa_key, sa_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, none))
        pki.sa_pub.write_bytes(
            sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return pki


def issue_certificate(
    ca_cert_path: Path,
    ca_key_path: Path,
    stem: Path,
    *,
    common_name: str,
    organization: str | None = None,
    client: bool = False,
    server_names: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Write `<stem>.crt` and `<stem>.key` (P-256) signed by the CA; return both paths.

    `client` adds the clientAuth usage; `server_names` (DNS names or IP addresses) add
    serverAuth with those subject alternative names. Raises ValueError when neither
    is asked for (a certificate good for nothing) or the CA key is not an EC key.
    """
    if not client and not server_names:
        raise ValueError(f"certificate {common_name!r}: ask for client=True and/or server_names")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_key_path}: expected an EC private key, got {type(ca_key).__name__}")
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    now = datetime.datetime.now(datetime.UTC)
    usages = ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else []) + (
        [ExtendedKeyUsageOID.SERVER_AUTH] if server_names else []
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(name) for name in server_names]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    stem.parent.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_bytes)
    return cert_path, key_path


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
