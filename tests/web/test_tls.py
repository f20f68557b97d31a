"""The page's certificate: a device CA whose key never reaches the disk signs a server certificate for the
configured names; the owner's own pair replaces it; the CA's fingerprint is what the setup page shows."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.clock import FakeClock
from edge.errors import ConfigError
from edge.web.tls import ensure_tls, fingerprint

from .helpers import Site, make_config


def sans(cert_pem: bytes) -> list[str]:
    cert = x509.load_pem_x509_certificates(cert_pem)[0]
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in ext]


def test_the_generated_certificate_names_the_host_and_its_local_name_and_the_ca_signed_it(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, hostname="frontdoor", extra_names=["doorbell.test", "192.168.1.9"])
    files = ensure_tls(cfg)
    names = sans(files.cert.read_bytes())
    assert {"frontdoor", "frontdoor.local", "doorbell.test", "192.168.1.9", "127.0.0.1"} <= set(names)
    assert files.ca is not None
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    server = x509.load_pem_x509_certificates(files.cert.read_bytes())[0]
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    assert server.signature_hash_algorithm is not None
    ca_key.verify(server.signature, server.tbs_certificate_bytes, ec.ECDSA(server.signature_hash_algorithm))
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ipaddress.ip_address("192.168.1.9") in [
        n for n in server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        .get_values_for_type(x509.IPAddress)]
    assert (files.key.stat().st_mode & 0o777) == 0o600


def test_no_ca_private_key_is_left_on_disk(tmp_path: Path) -> None:
    files = ensure_tls(make_config(tmp_path))
    keys = []
    for path in tmp_path.rglob("*"):
        if path.is_file() and b"PRIVATE KEY" in path.read_bytes():
            keys.append(path)
    assert keys == [files.key]
    key = serialization.load_pem_private_key(files.key.read_bytes(), None)
    server = x509.load_pem_x509_certificates(files.cert.read_bytes())[0]
    assert key.public_key().public_numbers() == server.public_key().public_numbers()  # type: ignore[union-attr]
    assert files.ca is not None
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    assert key.public_key().public_numbers() != ca.public_key().public_numbers()  # type: ignore[union-attr]


def test_the_same_names_keep_the_ca_and_new_names_issue_a_new_one(tmp_path: Path) -> None:
    first = ensure_tls(make_config(tmp_path))
    assert first.ca is not None
    fp = fingerprint(first.ca.read_bytes())
    assert fingerprint(ensure_tls(make_config(tmp_path)).ca.read_bytes()) == fp  # type: ignore[union-attr]
    again = ensure_tls(make_config(tmp_path, extra_names=["door.example"]))
    assert again.ca is not None and fingerprint(again.ca.read_bytes()) != fp
    assert "door.example" in sans(again.cert.read_bytes())


def test_the_owners_own_certificate_is_used_instead(tmp_path: Path) -> None:
    own = tmp_path / "own"
    generated = ensure_tls(make_config(own))
    cert, key = tmp_path / "mine.crt", tmp_path / "mine.key"
    cert.write_bytes(generated.cert.read_bytes())
    key.write_bytes(generated.key.read_bytes())
    state = tmp_path / "state"
    cfg = make_config(state, cert_file=str(cert), key_file=str(key))
    files = ensure_tls(cfg)
    assert (files.cert, files.key, files.ca) == (cert, key, None)
    assert not (state / "web" / "tls").exists()
    with pytest.raises(ConfigError, match="does not exist"):
        ensure_tls(make_config(state, cert_file=str(tmp_path / "gone.crt"), key_file=str(key)))
    with pytest.raises(ValueError, match="go together"):
        make_config(state, cert_file=str(cert))


def test_the_setup_page_shows_the_ca_fingerprint_and_offers_the_ca(tmp_path: Path) -> None:
    site = Site(make_config(tmp_path), FakeClock())
    assert site.tls.ca is not None
    fp = fingerprint(site.tls.ca.read_bytes())
    client = site.client()
    assert fp in client.get("/setup").text.replace("<wbr>", "")
    r = client.get("/ca.crt")
    assert r.status_code == 200 and r.content == site.tls.ca.read_bytes()
    cert = x509.load_pem_x509_certificate(r.content)
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    assert fp.replace(":", "") == digest


def private_keys_under(root: Path) -> list[Path]:
    """Every file under root that holds a private key in any encoding cryptography reads (PEM, DER, OpenSSH)."""
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for load in (serialization.load_pem_private_key, serialization.load_der_private_key,
                     serialization.load_ssh_private_key):
            try:
                load(data, None)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                continue
            found.append(path)
            break
    return found


def test_the_cli_s_fingerprint_is_the_setup_page_s_and_the_ca_s_and_only_the_server_key_is_on_disk(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Draft item 7: after `web setup-code` (the first thing an owner runs) the fingerprint it prints is the one
    /setup shows and the SHA-256 of the /ca.crt a browser downloads; the only private key anywhere in the state
    dir, in any encoding, is the server's, and it is not the CA's."""
    import re

    import yaml

    from edge.cli import main

    state = tmp_path / "state"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"state_dir": str(state)}, "mqtt": {"enabled": False},
                                   "web": {"enabled": True, "hostname": "doorbell.test",
                                           "argon2_memory_kib": 19456, "argon2_time_cost": 2}}))
    assert main(["web", "setup-code", "-c", str(cfg)]) == 0
    printed = re.search(r"fingerprint \(SHA-256\): (\S+)", capsys.readouterr().out)
    assert printed
    site = Site(make_config(state), FakeClock())  # the daemon starting over the same state dir
    client = site.client()
    assert printed.group(1) in client.get("/setup").text.replace("<wbr>", "")
    ca_der = x509.load_pem_x509_certificate(client.get("/ca.crt").content)
    assert ca_der.fingerprint(hashes.SHA256()).hex().upper() == printed.group(1).replace(":", "")
    assert private_keys_under(tmp_path) == [site.tls.key]
    key = serialization.load_pem_private_key(site.tls.key.read_bytes(), None)
    assert key.public_key().public_numbers() != ca_der.public_key().public_numbers()  # type: ignore[union-attr]
