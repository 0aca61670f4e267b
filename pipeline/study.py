"""One study walker and one outcome classification, for every way a study comes in.

``telerad anonymize``, ``telerad submit`` (and so the inbox, the listener and
the gateway, which submit) all see a study the same way:

- ``walk(root)``: every regular file under the study, sorted by path; a link
  that leaves the study is not followed and is listed as skipped.
- ``classify(exc)``: what an engine error means for the file: ``skipped``
  (not DICOM), ``refused`` (policy: quarantined with the reason) or ``failed``
  (cannot be de-identified), with a reason that echoes no value from the file.
- ``Placement``: de-identified files are written to a private scratch name
  and placed under their output path (pseudonyms and new UIDs) here, one at a
  time, so two sources never overwrite each other. Sources that share a SOP
  Instance UID are handled one way everywhere: the same de-identified bytes
  are written once (the copy is skipped, noted); different content refuses
  every copy, since no one can tell which is right.

Every summary is built from these outcomes, so its counts equal the files on disk:
``files_seen = written + skipped + refused + failed``.
"""

from __future__ import annotations

import errno
import filecmp
import os
import shutil
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from pipeline.exceptions import NotDicomError, RefusedFileError, TeleradError


class Outcome(str, Enum):
    """What became of one file of a study."""

    WRITTEN = "written"
    SKIPPED = "skipped"  # not DICOM, a link out of the study, or a duplicate written once
    REFUSED = "refused"  # policy: kept out, with the reason (quarantine)
    FAILED = "failed"  # could not be de-identified


@dataclass(frozen=True)
class StudyFile:
    """One file of a study: its path relative to the study (posix) and its size."""

    index: int  # 1-based position in the walk: how reasons name another file without its name
    rel: str
    size: int


@dataclass
class FileOutcome:
    """The outcome of one file, with a reason for anything not written."""

    index: int
    rel: str
    outcome: Outcome
    reason: str = ""
    relpath: str = ""  # the output's path (written files)
    size: int = 0
    sha256: str = ""

    def to_dict(self) -> dict:
        return {"index": self.index, "file": self.rel, "outcome": self.outcome.value, "reason": self.reason}


@dataclass
class Walk:
    """The files of a study to de-identify, and those passed over while walking."""

    root: Path
    files: list[StudyFile]
    passed_over: list[FileOutcome] = field(default_factory=list)

    @property
    def seen(self) -> int:
        return len(self.files) + len(self.passed_over)


def walk(root: Path) -> Walk:
    """Every regular file under ``root``, sorted; links that leave the study are passed over."""
    root = Path(root)
    real_root = root.resolve()
    files: list[StudyFile] = []
    passed: list[FileOutcome] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() and not path.resolve().is_relative_to(real_root):
            passed.append(FileOutcome(0, rel, Outcome.SKIPPED,
                                      "symbolic link leaves the study folder; not followed"))
            continue
        if path.is_file():
            files.append(StudyFile(0, rel, path.stat().st_size))
    # Numbered after sorting so that "file 3" means the same file in every message.
    numbered = [StudyFile(i, f.rel, f.size) for i, f in enumerate(files, start=1)]
    for n, item in enumerate(passed, start=len(numbered) + 1):
        item.index = n
    return Walk(root, numbered, passed)


def classify(exc: BaseException) -> tuple[Outcome, str]:
    """The outcome an engine error means for its file, and a reason that quotes no value."""
    if isinstance(exc, NotDicomError):
        return Outcome.SKIPPED, str(exc)
    if isinstance(exc, RefusedFileError):
        return Outcome.REFUSED, str(exc)
    if isinstance(exc, TeleradError):
        return Outcome.FAILED, str(exc)
    # A parser bug fails the file closed, without echoing values.
    return Outcome.FAILED, f"unexpected {type(exc).__name__} while reading"


class Placement:
    """Places de-identified files under ``dest`` one at a time; duplicates decided in one place.

    ``place`` moves a file from its scratch path to ``dest/relpath``, or
    decides what a second file with the same output path (the same SOP
    Instance UID) means. It returns the outcomes that changed: the new file's,
    and, when a conflict refuses a file already placed, that file's too (its
    output is removed from ``dest``). With ``keep=False`` (a dry run) nothing
    is kept: outcomes are decided by SHA-256 alone.
    """

    def __init__(self, dest: Path | None) -> None:
        self.dest = dest
        self.placed: dict[str, FileOutcome] = {}
        self.conflicted: set[str] = set()

    def place(self, item: FileOutcome, scratch: Path | None) -> list[FileOutcome]:
        relpath = item.relpath
        first = self.placed.get(relpath)
        if relpath in self.conflicted:
            _discard(scratch)
            return [self._refuse(item, first)]
        if first is None:
            if scratch is not None and self.dest is not None:
                _move(scratch, self.dest / relpath)
            self.placed[relpath] = item
            return [item]
        if self._same(first, item, scratch):
            _discard(scratch)
            item.outcome = Outcome.SKIPPED
            item.reason = (f"the same image as file {first.index} (same SOP Instance UID, "
                           "same de-identified content): written once")
            return [item]
        # Two different files claim one SOP Instance UID: neither can be trusted to be the one.
        _discard(scratch)
        if self.dest is not None:
            (self.dest / relpath).unlink(missing_ok=True)
        self.conflicted.add(relpath)
        refused_first = self._refuse(first, item)
        return [refused_first, self._refuse(item, first)]

    def _same(self, first: FileOutcome, item: FileOutcome, scratch: Path | None) -> bool:
        if first.sha256 and item.sha256:
            return first.sha256 == item.sha256
        if scratch is None or self.dest is None:
            return False
        return filecmp.cmp(self.dest / first.relpath, scratch, shallow=False)

    @staticmethod
    def _refuse(item: FileOutcome, other: FileOutcome | None) -> FileOutcome:
        item.outcome = Outcome.REFUSED
        with_ = f"file {other.index}" if other is not None else "another file"
        item.reason = (f"it shares its SOP Instance UID with {with_} but their content differs; "
                       "neither was sent: remove the wrong copy and send the study again")
        item.size = 0
        return item


def counts(outcomes: list[FileOutcome]) -> dict[str, int]:
    """How many files ended in each outcome (every outcome present, zero or not)."""
    out = {o.value: 0 for o in Outcome}
    for item in outcomes:
        out[item.outcome.value] += 1
    return out


def _move(src: Path, dest: Path) -> None:
    """Rename ``src`` to ``dest`` (same disk), copying only across disks."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(str(src), str(dest))


def _discard(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)
