"""Look at a candidate's frames: where text is, how sure OCR is, and whether masking left any.

Each frame is rendered (``render``) and read by Tesseract (``ocr``). A word is
*text* (masked) when its confidence reaches ``mask_confidence`` or when it
matches a value captured from the file's own header (the patient's name, ID,
birth date, accession number, institution): those are certain hits whatever
the confidence. A word between ``review_confidence`` and ``mask_confidence``
with a few letters or digits, mostly capitals or digits, is *doubt*: the image
goes to review, unless the word sits on a line of text right next to a word
that is masked (then it is a piece of that text, and masked). Anything less
is noise (ultrasound speckle or film grain read as short lower-case jumble).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from pipeline.dicomraw import value_of
from pipeline.pixels.decode import DecodedPixels
from pipeline.pixels.mask import Region, padded
from pipeline.pixels.ocr import Word, read_words
from pipeline.pixels.render import apart_from_background, render
from pipeline.pixels.rules import OcrSettings, PixelRule

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
# Letters and digits OCR confuses with each other, folded to one form before comparing.
_FOLD = str.maketrans({"O": "0", "Q": "0", "D": "0", "I": "1", "L": "1", "|": "1", "S": "5", "B": "8",
                       "Z": "2", "G": "6"})


def _norm(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


def _fold(text: str) -> str:
    return _norm(text).translate(_FOLD)


def _close(a: str, b: str) -> bool:
    """Equal up to a small edit distance (about one edit per four characters)."""
    if a == b:
        return True
    budget = len(b) // 4
    if budget == 0 or abs(len(a) - len(b)) > budget:
        return False
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        prev = cur
    return prev[-1] <= budget


@dataclass
class HeaderValues:
    """Identifying values from the file's header, folded for comparison with OCR words (memory only)."""

    tokens: tuple[str, ...] = ()

    @classmethod
    def of(cls, ds: Dataset, captured: Iterable[str] = ()) -> "HeaderValues":
        """The header's name, IDs, birth date, accession and institution, plus ``captured``
        (the identifying values the engine captured for the verifier: physicians,
        addresses, the submitted file's folder names...)."""
        raw: list[str] = [t for text in captured for t in re.split(r"[\s^=,\\/]+", text) if t]
        for kw in ("PatientName", "PatientID", "AccessionNumber", "InstitutionName", "OtherPatientIDs"):
            try:
                value = str(value_of(ds, kw, "") or "")
            except Exception:  # a damaged value: nothing to compare with
                continue
            raw += [t for t in re.split(r"[\s^=,\\]+", value) if t]
            if kw in ("PatientID", "AccessionNumber") and value.strip():
                raw.append(value)
        try:
            birth = _norm(str(value_of(ds, "PatientBirthDate", "") or ""))
        except Exception:
            birth = ""
        if len(birth) == 8 and birth.isdigit():
            y, m, d = birth[:4], birth[4:6], birth[6:]
            month = _MONTHS[int(m) - 1] if 1 <= int(m) <= 12 else m
            raw += [birth, d + m + y, m + d + y, d + month + y, d + month + y[2:], d + m + y[2:], m + d + y[2:]]
        tokens = {_fold(t) for t in raw}
        return cls(tuple(sorted(t for t in tokens if len(t) >= 3)))

    def hit(self, word: str) -> bool:
        """Whether an OCR word shows one of the header's values (or a piece of one, or one inside it)."""
        w = _fold(word)
        if len(w) < 3:
            return False
        for t in self.tokens:
            if t in w or w in t or _close(w, t):
                return True
        return False


@dataclass
class Screening:
    """What OCR saw in the frames it read."""

    frames_examined: int = 0
    masks: list[Region] = field(default_factory=list)   # padded boxes of text (and rule rectangles)
    doubts: list[Region] = field(default_factory=list)  # padded boxes of doubtful words
    words: int = 0          # words taken as text
    header_hits: int = 0    # of which matched a header value
    frames_with_text: set[int] = field(default_factory=set)
    confidences: list[float] = field(default_factory=list)  # of the words masked or doubted


def rule_regions(rule: PixelRule, pixels: DecodedPixels) -> list[Region]:
    """A rule's rectangles on every frame, clipped to the image."""
    rows, cols = pixels.frames.shape[1:3]
    out = []
    for f in range(pixels.count):
        for x, y, w, h in rule.rectangles:
            r = padded(f, x, y, w, h, 0, rows, cols)
            if r is not None:
                out.append(r)
    return out


def too_small(pixels: DecodedPixels, ocr: OcrSettings) -> bool:
    rows, cols = pixels.frames.shape[1:3]
    return rows < ocr.min_size or cols < ocr.min_size


def read_frames(pixels: DecodedPixels, ds: Dataset, header: HeaderValues, ocr: OcrSettings,
                frames: list[int] | None = None, *, second_look: bool = False,
                masked: list[Region] | None = None) -> Screening:
    """OCR ``frames`` (default: all) of ``pixels`` as they are now; classify every word.

    ``second_look`` reads each frame as "apart from its background" instead
    (``render.apart_from_background``): the check after masking sees what the
    first reading may have lost in the background. The ``masked`` regions are
    painted in the background level first, so their edges do not read as text.
    """
    rows, cols = pixels.frames.shape[1:3]
    scale = 2 if cols < ocr.upscale_below else 1
    out = Screening()
    for f in (range(pixels.count) if frames is None else frames):
        picture = render(pixels.frames[f], pixels.photometric, ds)
        if second_look:
            level = int(np.median(picture))
            for r in masked or ():
                if r.frame == f:
                    picture[r.y:r.y + r.h, r.x:r.x + r.w] = level
            picture = apart_from_background(picture)
        out.frames_examined += 1
        for word in read_words(picture, lang=ocr.lang, psm=ocr.psm, scale=scale):
            kind = classify(word, header, ocr)
            if kind is None:
                continue
            box = padded(f, word.x, word.y, word.w, word.h, ocr.margin, rows, cols)
            if box is None:
                continue
            out.confidences.append(word.confidence)
            if kind == "doubt":
                out.doubts.append(box)
                continue
            out.masks.append(box)
            out.words += 1
            out.header_hits += kind == "header"
            out.frames_with_text.add(f)
    _join_lines(out)
    return out


def _join_lines(out: Screening) -> None:
    """A doubtful word on the same line as text, right next to it, is part of that text: masked."""
    kept = []
    for d in out.doubts:
        if any(_same_line(d, m) for m in out.masks):
            out.masks.append(d)
            out.words += 1
        else:
            kept.append(d)
    out.doubts = kept


def _same_line(a: Region, b: Region) -> bool:
    if a.frame != b.frame:
        return False
    overlap = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    gap = max(a.x, b.x) - min(a.x + a.w, b.x + b.w)
    return overlap >= 0.5 * min(a.h, b.h) and gap <= max(a.h, b.h)


def classify(word: Word, header: HeaderValues, ocr: OcrSettings) -> str | None:
    """"header" (a certain hit), "text", "doubt", or None (noise)."""
    if word.characters == 0:
        return None
    # A header value is a certain hit at any confidence; a three-character piece of one only
    # when OCR is at least doubtful (noise reads as three letters often enough).
    if header.hit(word.text) and (word.characters >= 4 or word.confidence >= ocr.review_confidence):
        return "header"
    # Noise read into speckle or grain is mostly short lower-case jumble ("ae", "oe", "mite");
    # scanners print annotations in capitals and digits.
    if word.confidence >= ocr.mask_confidence and word.characters >= 2 and (
            word.characters >= 4 or word.capitals >= 0.5 or word.confidence >= 85):
        return "text"
    if (word.confidence >= ocr.review_confidence and word.characters >= ocr.min_characters
            and word.capitals >= 0.6):
        return "doubt"
    return None
