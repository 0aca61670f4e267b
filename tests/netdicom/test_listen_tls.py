"""TLS on the listener, checked with dcmtk's echoscu/storescu: client certificates required when a CA is set."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pipeline.testing import make_study
from tests.netdicom.helpers import dcmtk, queued, wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(folder: Path, name: str, issuer: tuple | None = None, *, ca: bool = False, server: bool = False):
    """A key and certificate (PEM files), signed by ``issuer`` (key, cert) or self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(name))
               .issuer_name(issuer[1].subject if issuer else _name(name))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    cert = builder.sign(issuer[0] if issuer else key, hashes.SHA256())
    key_path, cert_path = folder / f"{name}.key", folder / f"{name}.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, key_path, cert_path


def test_tls_listener_takes_only_callers_with_a_certificate_from_its_ca(start_listener, tmp_path, telerad_home):
    """A caller with a CA-signed certificate echoes and stores; one self-signed, or without TLS, is refused."""
    ca_key, ca_cert, _, ca_path = issue(tmp_path, "site-ca", ca=True)
    _, _, server_key, server_cert = issue(tmp_path, "listener", (ca_key, ca_cert), server=True)
    _, _, good_key, good_cert = issue(tmp_path, "modality", (ca_key, ca_cert))
    _, _, bad_key, bad_cert = issue(tmp_path, "stranger")
    listener = start_listener(TELERAD_LISTEN_TLS_CERT_FILE=str(server_cert), TELERAD_LISTEN_TLS_KEY_FILE=str(server_key),
                              TELERAD_LISTEN_TLS_CA_FILE=str(ca_path))
    port = str(listener.port)

    def tls(key: Path, cert: Path) -> list[str]:
        return ["+tls", str(key), str(cert), "+cf", str(ca_path)]

    ok = dcmtk("echoscu", *tls(good_key, good_cert), "-aec", "TELERAD", "127.0.0.1", port)
    assert ok.returncode == 0, ok.stderr
    stranger = dcmtk("echoscu", *tls(bad_key, bad_cert), "-aec", "TELERAD", "127.0.0.1", port)
    assert stranger.returncode != 0
    plain = dcmtk("echoscu", "-aec", "TELERAD", "127.0.0.1", port, timeout=60)
    assert plain.returncode != 0

    study = make_study(tmp_path / "s", series=1, images=3)
    sent = dcmtk("storescu", *tls(good_key, good_cert), "-aec", "TELERAD", "+sd", "+r", "127.0.0.1", port,
                 str(study.root))
    assert sent.returncode == 0, sent.stderr
    [record] = wait_for(lambda: queued(telerad_home), 20, "the study's batch")
    assert len(list(Path(record.source).iterdir())) == 3
