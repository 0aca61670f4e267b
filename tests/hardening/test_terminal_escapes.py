"""File names and DICOM values reach the terminal as visible escapes, never as control sequences."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pydicom

from pipeline.cli.common import shown
from pipeline.testing import make_study
from tests.harness.worker import telerad_env
from tests.hardening.helpers import run_telerad

EVIL = "\x1b[2J\x1b[Hscan\u202e.exe\rFAKE: batch done, 0 errors\n[red]x[/red]\x07"


def test_shown_makes_every_control_character_visible() -> None:
    """ESC, CR, LF, BEL and a bidi override become visible escapes; plain text and accents are kept."""
    assert shown(EVIL) == r"\x1b[2J\x1b[Hscan\u202e.exe\x0dFAKE: batch done, 0 errors\x0a[red]x[/red]\x07"
    assert shown("Müller^Zoë 1.dcm") == "Müller^Zoë 1.dcm"
    assert shown("a\nb", keep_newlines=True) == "a\nb"
    assert shown("[red]x[/red]", markup=True) == r"\[red]x\[/red]"


def test_status_prints_an_evil_file_name_harmlessly(tmp_path: Path) -> None:
    """`telerad status` of a batch failing on a file named with escape sequences prints no ESC, CR or fake line."""
    study = make_study(tmp_path / "study", series=1, images=2)
    evil = study.files[0].parent / EVIL.replace("/", "_")
    evil.write_bytes(study.files[1].read_bytes()[:300])  # DICOM cut short: the batch fails naming it
    env = telerad_env(tmp_path / "home")
    sub = run_telerad(["submit", str(study.root), "--no-queue"], env)
    assert sub.returncode == 2
    assert "\x1b" not in sub.stderr
    for args in (["status"], ["status", "--limit", "5"]):
        out = run_telerad(args, env)
        assert "\x1b" not in out.stdout and "\r" not in out.stdout
    batch_id = json.loads(run_telerad(["status", "--json"], env).stdout)[0]["batch_id"]
    one = run_telerad(["status", batch_id], env)
    assert one.returncode == 1
    for bad in ("\x1b", "\r", "\x07", "\u202e"):
        assert bad not in one.stdout
    assert not any(line.startswith("FAKE") or line.startswith("[red]") for line in one.stdout.splitlines())
    assert r"\x1b[2J\x1b[Hscan\u202e.exe\x0dFAKE" in one.stdout


def test_watcher_lines_escape_names_and_reasons(capsys) -> None:
    """The watcher's --show-names line escapes a folder name and a reason holding escapes and markup."""
    from pipeline.cli.inbox import Printer

    Printer(show_names=True)(SimpleNamespace(
        kind="refused", claim_id="c" * 12, priority="STAT", local_name=EVIL, where="quarantine", reason=EVIL,
        batch_id=None, state=None,
    ))
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
    assert out.count("\n") == 1  # one event, one line
    assert "[red]x[/red]" in out  # shown as text, not taken as markup


def test_reidentify_escapes_dicom_values(tmp_path: Path) -> None:
    """A Patient ID holding escape sequences is printed escaped by `telerad reidentify`."""
    study = make_study(tmp_path / "study", series=1, images=1)
    ds = pydicom.dcmread(study.files[0])
    ds.PatientID = "ID\x1b]0;pwned\x07\x1b[31m"
    ds.save_as(study.files[0])
    env = telerad_env(tmp_path / "home")
    sub = run_telerad(["submit", str(study.root), "--no-queue"], env)
    assert sub.returncode == 0, sub.stderr
    batch_id = sub.stdout.strip().splitlines()[-1]
    out = run_telerad(["reidentify", batch_id, "--reason", "report returned"], env)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout
    assert r"patient ID:          ID\x1b]0;pwned\x07\x1b[31m" in out.stdout
