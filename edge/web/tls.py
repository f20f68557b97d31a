"""The page's HTTPS certificate: a per-device CA (ECDSA P-256) signs a server certificate for the device's names
and addresses, then its private key is thrown away (it never touches the disk); or the owner's own pair."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge import layout
from edge.config import Config
from edge.errors import ConfigError
from edge.fsutil import replace_private

if TYPE_CHECKING:
    from cryptography import x509

# cryptography is imported only when a certificate is issued: a restart with the names unchanged (every boot
# after the first) does not load it, which keeps the page's share of the daemon's memory down.

CA_NAME = "ca.crt"
CERT_NAME = "server.crt"
KEY_NAME = "server.key"
NAMES_NAME = "names.json"
SERVER_DAYS = 825  # what Apple accepts for a server certificate from a CA the user installed
CA_DAYS = 3650


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None  # None: the owner's own certificate (nothing for the page to offer)


def device_names(config: Config) -> list[str]:
    """What the generated certificate names: the hostname, <hostname>.local, extra names, the device's addresses."""
    host = config.web.hostname or socket.gethostname()
    names = [host]
    if "." not in host and not is_ip(host):
        names.append(f"{host}.local")
    names += config.web.extra_names
    names += ["localhost", "127.0.0.1", "::1"]
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None):
            names.append(str(info[4][0]).split("%")[0])
    return list(dict.fromkeys(n for n in names if n))


def is_ip(text: str) -> bool:
    """True for an IPv4 or IPv6 address (not a host name)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate (DER), as browsers and `openssl x509 -fingerprint -sha256` show it."""
    der = ssl.PEM_cert_to_DER_cert(cert_pem.decode("ascii"))
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def ensure_tls(config: Config, now: dt.datetime | None = None) -> TlsFiles:
    """The certificate and key the page serves, generating (or regenerating, when the names changed) the device's
    CA and server certificate under <state_dir>/web/tls."""
    web = config.web
    if web.cert_file is not None and web.key_file is not None:
        for path in (web.cert_file, web.key_file):
            if not path.is_file():
                raise ConfigError(f"web: {path} does not exist or is not a file (web.cert_file / web.key_file)")
        return TlsFiles(web.cert_file, web.key_file, None)
    folder = layout.StateLayout.of(config.state_dir).web_tls
    files = TlsFiles(folder / CERT_NAME, folder / KEY_NAME, folder / CA_NAME)
    names = device_names(config)
    try:
        same = json.loads((folder / NAMES_NAME).read_text()) == names
    except (OSError, ValueError):
        same = False
    if same and all(p.is_file() for p in (files.cert, files.key, folder / CA_NAME)):
        return files
    issue(folder, names, now or dt.datetime.now(dt.UTC))
    return files


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """The TLS settings the page serves with: Python's defaults for a server (TLS 1.2 or newer, no compression)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    return context


def issue(folder: Path, names: list[str], now: dt.datetime) -> None:
    """A new CA and a server certificate for `names`; the CA key only ever lives in this function's memory."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"doorbell-edge device CA {names[0]}"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "doorbell-edge")])
    start = now - dt.timedelta(hours=1)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        # This CA signs one certificate, for these names only: say so, so a browser refuses anything else.
        .add_extension(x509.NameConstraints(permitted_subtrees=_subtrees(names), excluded_subtrees=None),
                       critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(n)) if is_ip(n) else x509.DNSName(n) for n in names
    ]
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    del ca_key  # never written anywhere: nothing can be signed with this CA again
    replace_private(folder / KEY_NAME, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    replace_private(folder / CERT_NAME, server.public_bytes(serialization.Encoding.PEM)
           + ca.public_bytes(serialization.Encoding.PEM))
    replace_private(folder / CA_NAME, ca.public_bytes(serialization.Encoding.PEM))
    replace_private(folder / NAMES_NAME, json.dumps(names).encode())


def _subtrees(names: list[str]) -> list[x509.GeneralName]:
    from cryptography import x509

    out: list[x509.GeneralName] = []
    for n in names:
        if is_ip(n):
            ip = ipaddress.ip_address(n)
            out.append(x509.IPAddress(ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}")))
        else:
            out.append(x509.DNSName(n))
    return out
