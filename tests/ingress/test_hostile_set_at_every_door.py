"""The hostile set at every door, over real processes: one verdict, bounded memory, and the good instances done.

One site (one TELERAD_HOME) runs `telerad listen`, `telerad serve` (uvicorn) and a worker. dcmtk's
/usr/bin/storescu sends a study and its hostile set to the listener; httpx sends another study and
its hostile set to STOW-RS, and each hostile file to anonymize-stream and review; `telerad submit`
takes a ZIP that breaks the site's ZIP limits. The listener's and the gateway's peak resident memory
(psutil, and the kernel's VmHWM) stay under 600 MB although the bomb inflates to 1 GiB.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from pipeline.state import StateStore
from pipeline.testing import make_study
from tests.harness.worker import REPO, running_worker, telerad_env
from tests.ingress.conftest import PeakRSS
from tests.ingress.hostile import hostile_set

pytestmark = [pytest.mark.real, pytest.mark.slow]

STORESCU = "/usr/bin/storescu"  # dcmtk's, not pynetdicom's script of the same name in the venv
MAX_RSS_MB = 600
#: STOW-RS Failure Reason per case: 0xA900 the data does not match what it claims, 0xC000 cannot understand.
STOW_REASON = {"deflate_bomb": 0xC000, "truncated": 0xC000, "giant_length": 0xC000, "unknown_syntax": 0xC000,
               "wrong_syntax": 0xC000, "binary_vr_wrong_length": 0xA900, "changed_duplicate": 0xA900}
#: What dcmtk's storescu does with each case: the listener's answer, or dcmtk refusing to read the file itself.
STORESCU_VERDICT = {"deflate_bomb": "Error: CannotUnderstand", "binary_vr_wrong_length": "Error: DataSetDoesNotMatchSOPClass",
                    "changed_duplicate": "Error: DataSetDoesNotMatchSOPClass", "truncated": "Bad DICOM file",
                    "giant_length": "Bad DICOM file", "wrong_syntax": "Bad DICOM file"}


def telerad(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=180)


def storescu(port: int, path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([STORESCU, "-v", "-aet", "MODALITY", "-aec", "TELERAD", *extra, "+sd", "+r", "127.0.0.1",
                           str(port), str(path)], capture_output=True, text=True, timeout=300)


def related(files: list[Path]) -> tuple[bytes, str]:
    """A multipart/related; type="application/dicom" body (STOW-RS)."""
    boundary = uuid.uuid4().hex
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + f.read_bytes() + b"\r\n"
                    for f in files) + b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def wait_done(home: Path, origin: str, count: int, timeout: float = 180) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = [r for r in StateStore(home / "state").all() if r.origin == origin]
        if len(records) >= count and all(r.state in ("done", "failed") for r in records):
            return records
        time.sleep(0.3)
    raise AssertionError(f"{origin}: batches not done in {timeout}s: "
                         f"{[(r.state, r.error) for r in StateStore(home / 'state').all()]}")


def test_the_hostile_set_gets_one_verdict_at_every_door(tmp_path, serve_process):
    """Every door refuses every hostile file with a reason; memory stays bounded; the good instances are done."""
    home = tmp_path / "home"
    env = telerad_env(home, TELERAD_ORGANIZATION="ACME", TELERAD_LISTEN_STABLE_SECONDS="2",
                      TELERAD_LISTEN_MIN_FREE_BYTES="0", TELERAD_MAPPING_URL=(tmp_path / "mapping").as_uri())
    by_dimse = make_study(tmp_path / "DOE_JANE", series=1, images=3)
    by_web = make_study(tmp_path / "ROE_RICHARD", series=1, images=3)
    hostile_dimse = hostile_set(by_dimse, tmp_path / "hostile-dimse")
    hostile_web = hostile_set(by_web, tmp_path / "hostile-web")
    key = telerad(env, "keys", "api", "create", "--scope", "submit,read").stdout.strip().splitlines()[-1]
    listener = serve_process("listen", env)
    gateway = serve_process("serve", env)
    rss = {"listener": PeakRSS(listener.proc.pid), "gateway": PeakRSS(gateway.proc.pid)}

    with running_worker(env, tmp_path / "worker.log"):
        # --- C-STORE: dcmtk's storescu to `telerad listen` -----------------------------------------
        sent = storescu(listener.port, by_dimse.root)
        assert sent.stderr.count("Received Store Response (Success)") == 3, sent.stderr
        for name, verdict in STORESCU_VERDICT.items():
            # -xd: propose Deflated first, so the bomb travels deflated (1 MB), as a sender's file would
            out = storescu(listener.port, hostile_dimse[name], *(("-xd",) if name == "deflate_bomb" else ()))
            assert verdict in out.stderr and "(Success)" not in out.stderr, (name, out.stderr[-2000:])
        # An unknown transfer syntax never gets a presentation context (dcmtk itself re-encodes such a
        # file into a syntax it knows, so the listener judges what really arrives).
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage, ["1.2.826.0.1.3680043.9.9999.1"])
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", listener.port, ae_title="TELERAD")
        assert assoc.is_established
        assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == [Verification], assoc.accepted_contexts
        assoc.release()

        # --- STOW-RS with httpx to `telerad serve` ------------------------------------------------
        auth = {"Authorization": f"Bearer {key}"}
        body, ctype = related(list(by_web.files) + list(hostile_web.values()))
        answer = httpx.post(f"{gateway.url}/dicomweb/studies", content=body, headers={**auth, "Content-Type": ctype},
                            timeout=300)
        assert answer.status_code == 202, answer.text
        stow = answer.json()
        referenced = [i["00081155"]["Value"][0] for i in stow["00081199"]["Value"]]
        assert sorted(referenced) == sorted(by_web.sop_uids)
        failed = stow["00081198"]["Value"]
        assert [i["00081197"]["Value"][0] for i in failed] == list(STOW_REASON.values()), failed

        # --- anonymize-stream and review: 422 with the reason, for one file at a time -------------
        for name, path in hostile_web.items():
            if name == "changed_duplicate":
                continue  # one file alone is no duplicate: these doors keep no study
            one = httpx.post(f"{gateway.url}/api/anonymize-stream", content=path.read_bytes(),
                             headers={**auth, "Content-Type": "application/dicom"}, timeout=120)
            assert one.status_code == 422 and one.json()["detail"], (name, one.status_code, one.text[:300])
        review = httpx.post(f"{gateway.url}/api/review", files={"file": ("x.dcm", hostile_web["deflate_bomb"].read_bytes())},
                            headers=auth, timeout=120)
        assert review.status_code == 422 and "decompression bomb" in review.json()["detail"], review.text[:300]
        good = httpx.post(f"{gateway.url}/api/anonymize-stream", content=by_web.files[0].read_bytes(),
                          headers={**auth, "Content-Type": "application/dicom"}, timeout=120)
        assert good.status_code == 200 and good.content[128:132] == b"DICM"

        # --- submit: a ZIP past the site's TELERAD_ZIP_MAX_ENTRIES is refused before it is recorded ---
        archive = tmp_path / "study.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for i, path in enumerate(by_web.files):
                zf.write(path, f"{i}.dcm")
        zipped = telerad({**env, "TELERAD_ZIP_MAX_ENTRIES": "2"}, "submit", str(archive))
        assert zipped.returncode != 0 and "ZIP archive refused" in zipped.stdout + zipped.stderr, zipped

        peaks = {name: sampler.peak_mb() for name, sampler in rss.items()}
        for sampler in rss.values():
            sampler.stop()
        [dimse] = wait_done(home, "listen", 1)
        [web] = wait_done(home, "dicomweb", 1)

    assert peaks["listener"] < MAX_RSS_MB and peaks["gateway"] < MAX_RSS_MB, peaks
    for record, study in ((dimse, by_dimse), (web, by_web)):
        assert record.state == "done" and record.counts["images"] == len(study.files), (record.state, record.error)
    assert not [r for r in StateStore(home / "state").all() if r.state != "done"], "no queued or failed leftovers"
    assert not any(p.is_file() for p in (home / "listen" / "tmp").iterdir())
    logs = listener.log() + gateway.log()
    status = telerad(env, "status").stdout
    assert "changed duplicates refused: 2" in status, status
    for marker in by_dimse.markers() + by_web.markers() + ["PHIX"]:
        assert marker not in logs and marker not in status, marker
    print(f"peak RSS: listener {peaks['listener']:.0f} MB, gateway {peaks['gateway']:.0f} MB")
