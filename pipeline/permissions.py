"""Everything Telerad creates is private to the account that runs it.

Unpacked originals, batch state (source paths, notes, overrides), staging, the
local bucket and mapping store, locks and the audit log all hold PHI or what
leads to it. Rather than passing a mode to every ``open`` and ``mkdir`` (and
missing one, or one inside a library such as kombu or zipfile), each process
sets its umask once at start: the ``telerad`` command in ``cli.main`` and every
worker in ``workers.app``. New files are then 0600 and new folders 0700 whatever
umask the operator's shell, a systemd unit or a container had.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: Group and others get nothing on anything this process creates.
PRIVATE_UMASK = 0o077


def make_process_private() -> int:
    """Set the process umask to 0o077; returns the previous one."""
    return os.umask(PRIVATE_UMASK)


def remove_unpacked_originals(state_dir: Path, batch_id: str) -> None:
    """Delete the batch's unpacked ZIP (full-PHI originals); the submitted ZIP stays where it was.

    Called when a batch fails and once its de-identification is finished: from then
    on the de-identified files in staging are all the later steps need, and a retry
    of de-identification unpacks the ZIP again.
    """
    work = Path(state_dir) / batch_id
    shutil.rmtree(work / "unpacked", ignore_errors=True)
    for leftover in work.glob(".unpacked.unpacking-*"):  # an extraction killed midway
        shutil.rmtree(leftover, ignore_errors=True)
