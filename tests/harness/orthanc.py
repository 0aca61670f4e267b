"""A real Orthanc (Debian's `Orthanc` binary) on free loopback ports, with its REST API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import requests

from tests.harness.ports import free_port, stop_process


class Orthanc:
    """A running Orthanc: ``aet``, ``dicom_port``, ``url`` (REST), and a few REST helpers."""

    def __init__(self, proc: subprocess.Popen, aet: str, dicom_port: int, http_port: int, log_path: Path) -> None:
        self.proc, self.aet, self.dicom_port, self.http_port, self.log_path = proc, aet, dicom_port, http_port, log_path
        self.url = f"http://127.0.0.1:{http_port}"

    def get(self, path: str) -> Any:
        r = requests.get(self.url + path, timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: Any = None, data: bytes | None = None, timeout: float = 120) -> Any:
        r = requests.post(self.url + path, json=body if data is None else None, data=data, timeout=timeout)
        r.raise_for_status()
        return r.json() if r.content else None

    def upload(self, files: list[Path]) -> list[str]:
        """POST /instances for each file; returns Orthanc's instance IDs."""
        return [self.post("/instances", data=p.read_bytes())["ID"] for p in files]

    def counts(self) -> dict[str, int]:
        return {k: len(self.get(f"/{k}")) for k in ("patients", "studies", "series", "instances")}

    def clear(self) -> None:
        for pid in self.get("/patients"):
            requests.delete(f"{self.url}/patients/{pid}", timeout=30).raise_for_status()


def config(folder: Path, aet: str, dicom_port: int, http_port: int, modalities: dict[str, list]) -> dict[str, Any]:
    return {
        "Name": f"telerad-test-{aet}",
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": aet,
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomModalities": modalities,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        "StorageCompression": False,
        "Plugins": [],
        "HttpDescribeErrors": True,
    }


@contextmanager
def orthanc_server(folder: Path, *, aet: str = "ORTHANC", modalities: dict[str, list] | None = None,
                   dicom_port: int | None = None) -> Iterator[Orthanc]:
    """Start Orthanc with its own config and folders; stop exactly that process afterwards."""
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = dicom_port or free_port(), free_port()
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config(folder, aet, dicom_port, http_port, modalities or {}), indent=1))
    log_path = folder / "orthanc.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen([binary, str(cfg)], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    server = Orthanc(proc, aet, dicom_port, http_port, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                server.get("/system")
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Orthanc not up in 30s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.1)
        yield server
    finally:
        stop_process(proc, timeout=15)
        log.close()
