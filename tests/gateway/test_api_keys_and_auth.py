"""API keys: made by the CLI, stored hashed, required by every call, scoped, rate-limited."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import requests

from tests.gateway.conftest import make_key, telerad

pytestmark = [pytest.mark.real]

OPERATIONS = [
    ("get", "/api/batches"),
    ("post", "/api/batches"),
    ("get", "/api/batches/3f2a0c1e-0000-4000-8000-000000000000"),
    ("get", "/api/batches/3f2a0c1e-0000-4000-8000-000000000000/manifest"),
    ("post", "/api/batches/3f2a0c1e-0000-4000-8000-000000000000/retry"),
    ("post", "/api/batches/3f2a0c1e-0000-4000-8000-000000000000/reidentify"),
    ("post", "/api/anonymize-stream"),
    ("post", "/api/review"),
    ("post", "/dicomweb/studies"),
    ("get", "/console"),
    ("get", "/console/upload"),
]


def test_key_is_printed_last_and_stored_only_as_a_hash(site_env, tmp_path):
    """`keys api create` prints the key on its last line; the key file is 0600 and holds no key."""
    key = make_key(site_env, "submit,read")
    assert key.startswith("trk_") and len(key) > 40
    path = Path(site_env["TELERAD_HOME"]) / "secrets" / "api-keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert key not in text and key.split("_")[-1] not in text
    stored = json.loads(text)
    (record,) = stored.values()
    assert record["scopes"] == ["submit", "read"] and len(record["sha256"]) == 64
    listing = telerad(site_env, "keys", "api", "list", "--json").stdout
    assert json.loads(listing)[0]["scopes"] == "submit,read" and key not in listing
    bad = telerad(site_env, "keys", "api", "create", "--scope", "submit,admin", check=False)
    assert bad.returncode == 2 and "scopes must be" in bad.stderr


def test_every_operation_refuses_a_missing_or_wrong_key(gateway):
    """Every API and console operation answers 401 with no key and with a made-up or revoked key."""
    key = gateway.key("read")
    for method, path in OPERATIONS:
        for headers in ({}, {"Authorization": "Bearer trk_deadbeef_not-a-key"},
                        {"Authorization": f"Bearer {key}x"}):
            r = requests.request(method, gateway.url + path, headers=headers, timeout=30)
            assert r.status_code == 401, (method, path, headers, r.status_code)
    assert gateway.get("/api/batches", "read").status_code == 200
    key_id = key.split("_")[1]
    telerad(gateway.env, "keys", "api", "revoke", key_id)
    assert gateway.get("/api/batches", "read").status_code == 401


def test_scopes_are_enforced(gateway):
    """A read key cannot submit or re-identify; a submit key cannot read or re-identify."""
    batch = "3f2a0c1e-0000-4000-8000-000000000000"
    assert gateway.post("/api/batches", "read", data=b"x", headers={"Content-Type": "application/zip"}).status_code == 403
    assert gateway.post("/api/anonymize-stream", "read", data=b"x",
                        headers={"Content-Type": "application/dicom"}).status_code == 403
    assert gateway.get("/api/batches", "submit").status_code == 403
    r = gateway.post(f"/api/batches/{batch}/reidentify", "submit,read", json={"reason": "follow-up of a finding"})
    assert r.status_code == 403 and "reidentify" in r.json()["detail"]


def test_requests_over_the_rate_limit_get_429(gateway_factory, site_env):
    """Past gateway_rate_per_minute a key gets 429 with Retry-After; unauthenticated guessing is limited too."""
    gw = gateway_factory({**site_env, "TELERAD_GATEWAY_RATE_PER_MINUTE": "5"})
    codes = [gw.get("/api/batches", "read").status_code for _ in range(8)]
    assert codes[:5] == [200] * 5 and 429 in codes[5:]
    r = gw.get("/api/batches", "read")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    guesses = [requests.get(gw.url + "/api/batches", headers={"Authorization": "Bearer trk_x_y"}, timeout=10).status_code
               for _ in range(8)]
    assert guesses[:5] == [401] * 5 and 429 in guesses[5:]


def test_openapi_lists_every_operation_with_bearer_auth(gateway):
    """/openapi.json documents each API operation and the bearer scheme."""
    spec = requests.get(gateway.url + "/openapi.json", timeout=10).json()
    ops = {(m, p) for p, item in spec["paths"].items() for m in item}
    for method, path in OPERATIONS:
        if path.startswith("/console"):
            continue
        templ = path.replace("3f2a0c1e-0000-4000-8000-000000000000", "{batch_id}")
        assert (method, templ) in ops
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def _self_signed(tmp_path):
    """A certificate and key for 127.0.0.1, made here (cryptography), PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "gw.crt", tmp_path / "gw.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_serve_speaks_tls_with_uvicorns_settings(site_env, tmp_path):
    """`serve --ssl-certfile --ssl-keyfile`: HTTPS with that certificate; the console cookie is Secure."""
    import subprocess
    import sys

    from tests.harness.ports import free_port, stop_process, wait_for_port
    from tests.harness.worker import REPO

    cert, key_file = _self_signed(tmp_path)
    key = make_key(site_env, "read")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "serve", "--port", str(port),
                             "--ssl-certfile", str(cert), "--ssl-keyfile", str(key_file)],
                            env=site_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=proc, timeout=30)
        url = f"https://127.0.0.1:{port}"
        r = requests.get(url + "/api/batches", headers={"Authorization": f"Bearer {key}"}, verify=str(cert), timeout=10)
        assert r.status_code == 200 and r.json() == []
        login = requests.post(url + "/console/login", data={"key": key}, verify=str(cert), timeout=10,
                              allow_redirects=False)
        cookie = login.headers["set-cookie"].lower()
        assert login.status_code == 303 and "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url + "/openapi.json", timeout=10)  # not a certificate the system trusts
    finally:
        stop_process(proc)
