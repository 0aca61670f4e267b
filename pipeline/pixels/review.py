"""The review queue: images OCR was unsure about, held on site until a person decides.

An item lives in ``TELERAD_HOME/review/ID/``: a copy of the original file
(``source.dcm``, PHI: it never leaves the site, the folder is 0700) and
``item.json`` (why it is held, the proposed masks as (frame, x, y, w, h) and
their confidences; no values from the file). The ID is a digest of the file's
bytes, so the same file submitted again finds its decision: ``approved``
(mask the proposed boxes plus any a reviewer added, then let it through) or
``rejected`` (refused for good). Decisions are made with ``telerad review``
and written to the audit log.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pipeline.exceptions import SubmissionError

STATES = ("pending", "approved", "rejected")


def file_digest(path: Path) -> str:
    """The review ID of a file: 20 hex digits of the SHA-256 of its bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:20]


@dataclass
class ReviewItem:
    """One held image and the decision about it."""

    id: str
    reason: str
    status: str = "pending"
    created: str = ""
    decided: str = ""
    modality: str = ""
    sop_class_uid: str = ""
    rows: int = 0
    columns: int = 0
    frames: int = 0
    proposed: list[list[int]] = field(default_factory=list)   # [frame, x, y, w, h]
    confidences: list[float] = field(default_factory=list)
    added: list[list[int]] = field(default_factory=list)      # boxes a reviewer added; frame -1 = all

    @property
    def boxes(self) -> list[list[int]]:
        """The masks an approval applies: proposed and added (an added box on frame -1 covers all frames)."""
        out = [list(b) for b in self.proposed]
        for f, x, y, w, h in self.added:
            out += [[i, x, y, w, h] for i in range(self.frames)] if f < 0 else [[f, x, y, w, h]]
        return out


class ReviewQueue:
    """Items under one folder (``Settings.home / "review"``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _dir(self, item_id: str) -> Path:
        if not item_id or not all(c in "0123456789abcdef" for c in item_id):
            raise SubmissionError(f"{item_id!r} is not a review ID (see `telerad review list`)")
        return self.root / item_id

    def add(self, source: Path, item: ReviewItem) -> ReviewItem:
        """Hold ``source`` for review (a copy), unless it is already held; returns the stored item."""
        d = self._dir(item.id)
        if (d / "item.json").exists():
            return self.get(item.id)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        tmp = self.root / f".{item.id}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        shutil.copyfile(source, tmp / "source.dcm")
        item.created = item.created or _now()
        (tmp / "item.json").write_text(json.dumps(asdict(item), indent=1))
        try:
            os.replace(tmp, d)
        except OSError:  # another process held the same file first
            shutil.rmtree(tmp, ignore_errors=True)
        return self.get(item.id)

    def find(self, item_id: str) -> ReviewItem | None:
        p = self._dir(item_id) / "item.json"
        if not p.exists():
            return None
        data = json.loads(p.read_text())
        return ReviewItem(**{k: v for k, v in data.items() if k in ReviewItem.__dataclass_fields__})

    def get(self, item_id: str) -> ReviewItem:
        item = self.find(item_id)
        if item is None:
            raise SubmissionError(f"no review item {item_id} (see `telerad review list`)")
        return item

    def source(self, item_id: str) -> Path:
        return self._dir(item_id) / "source.dcm"

    def items(self) -> list[ReviewItem]:
        if not self.root.is_dir():
            return []
        found = [self.find(p.name) for p in sorted(self.root.iterdir())
                 if p.is_dir() and not p.name.startswith(".")]
        return sorted((i for i in found if i is not None), key=lambda i: i.created)

    def decide(self, item_id: str, status: str, *, add_box: list[int] | None = None) -> ReviewItem:
        """Record a decision (and a reviewer's extra box); returns the updated item."""
        if status not in STATES[1:]:
            raise ValueError(status)
        item = self.get(item_id)
        if add_box is not None:
            f, x, y, w, h = add_box
            if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > item.columns or y + h > item.rows:
                raise SubmissionError(
                    f"--box must lie inside the {item.columns}x{item.rows} image with a positive size")
            if f >= item.frames:
                raise SubmissionError(f"--frame must be below {item.frames} (or omitted for every frame)")
            item.added.append([f, x, y, w, h])
        item.status = status
        item.decided = _now()
        p = self._dir(item_id) / "item.json"
        tmp = p.with_name(".item.json.tmp")
        tmp.write_text(json.dumps(asdict(item), indent=1))
        os.replace(tmp, p)
        return item


def preview(item: ReviewItem, source: Path, out: Path, frame: int = 0) -> Path:
    """A PNG of one frame with the boxes an approval would mask drawn in red (local use: it shows PHI)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from pipeline import dicomio
    from pipeline.pixels.decode import decode
    from pipeline.pixels.render import render

    src = dicomio.read(source, load_pixels=True)
    pixels = decode(src.dataset, src.transfer_syntax)
    frame = min(max(frame, 0), pixels.count - 1)
    grey = render(pixels.frames[frame], pixels.photometric, src.dataset)
    image = Image.fromarray(np.stack([grey] * 3, axis=-1))
    draw = ImageDraw.Draw(image)
    for f, x, y, w, h in item.boxes:
        if f == frame:
            draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(255, 0, 0), width=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, format="PNG")
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
