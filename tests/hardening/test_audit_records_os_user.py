"""Every audit entry records the OS account and host; `--actor` is kept apart as a claim."""

from __future__ import annotations

import json
import os
import pwd
import socket
from pathlib import Path

from pipeline.testing import make_study
from tests.harness.worker import telerad_env
from tests.hardening.helpers import run_telerad


def test_claimed_actor_is_kept_apart_from_the_os_user(tmp_path: Path) -> None:
    """With $USER/$LOGNAME forged and --actor claimed, each entry still names the real account and host."""
    real = pwd.getpwuid(os.geteuid()).pw_name
    home = tmp_path / "home"
    env = telerad_env(home, USER="chief-radiologist", LOGNAME="chief-radiologist")
    study = make_study(tmp_path / "study", series=1, images=1)
    sub = run_telerad(["submit", str(study.root), "--no-queue"], env)
    assert sub.returncode == 0, sub.stderr
    batch_id = sub.stdout.strip().splitlines()[-1]
    re_id = run_telerad(["reidentify", batch_id, "--reason", "report back", "--actor", "chief-radiologist"], env)
    assert re_id.returncode == 0, re_id.stderr

    entries = [json.loads(line) for line in (home / "audit" / "audit.jsonl").read_text().splitlines()]
    assert {e["action"] for e in entries} >= {"batch.submitted", "batch.done", "reidentify"}
    for e in entries:
        assert (e["os_user"], e["uid"], e["host"]) == (real, os.geteuid(), socket.gethostname()[:64])
    reid = next(e for e in entries if e["action"] == "reidentify")
    assert reid["actor"] == "chief-radiologist"

    shown = run_telerad(["audit", "show", "--action", "reidentify"], env)
    assert f"user={real}@{socket.gethostname()[:64]} actor=chief-radiologist(claimed)" in shown.stdout
    assert run_telerad(["audit", "verify"], env).returncode == 0
