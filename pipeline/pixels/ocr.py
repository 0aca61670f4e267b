"""Words in a picture, with boxes and confidences, from Tesseract (through pytesseract).

``image_to_data`` gives every word's box and confidence: the boxes are what is
masked, the confidences decide between text, doubt (review) and noise. The
engine's name and version go into deid-report.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Tesseract's OpenMP threads cost 2-3x the CPU per frame (0.43 against 0.16 CPU
# seconds on a 640x480 frame here) for no gain in wall time when processes
# already share the cores; each reading is its own `tesseract` process, which
# inherits this. A site may set it otherwise in the environment.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")


class OcrUnavailable(Exception):
    """Tesseract is not installed or cannot run."""


@dataclass(frozen=True)
class Word:
    """One word Tesseract read: its text (kept in memory only), confidence and box in image pixels."""

    text: str
    confidence: float
    x: int
    y: int
    w: int
    h: int

    @property
    def characters(self) -> int:
        return sum(1 for c in self.text if c.isalnum())

    @property
    def capitals(self) -> float:
        """The share of its letters and digits that are capitals or digits (annotations mostly are)."""
        alnum = [c for c in self.text if c.isalnum()]
        return sum(1 for c in alnum if c.isupper() or c.isdigit()) / len(alnum) if alnum else 0.0


@lru_cache(maxsize=1)
def engine() -> tuple[str, str]:
    """("tesseract", version), or OcrUnavailable naming the package to install."""
    try:
        import pytesseract

        return "tesseract", str(pytesseract.get_tesseract_version())
    except ImportError:
        raise OcrUnavailable("pytesseract is not installed (pip install pytesseract)") from None
    except Exception as exc:  # TesseractNotFoundError and friends
        raise OcrUnavailable(
            f"Tesseract cannot run ({type(exc).__name__}); install the Debian packages "
            "tesseract-ocr and tesseract-ocr-eng") from None


def read_words(picture: np.ndarray, *, lang: str = "eng", psm: int = 11, scale: int = 1) -> list[Word]:
    """Every word Tesseract finds in ``picture`` (uint8, rows x columns), boxes in its own pixels."""
    import pytesseract
    from PIL import Image

    engine()
    image = Image.fromarray(picture)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BICUBIC)
    try:
        data = pytesseract.image_to_data(image, lang=lang, config=f"--psm {psm}",
                                         output_type=pytesseract.Output.DICT)
    except Exception as exc:
        raise OcrUnavailable(f"Tesseract failed on a frame ({type(exc).__name__})") from None
    words = []
    for text, conf, x, y, w, h in zip(data["text"], data["conf"], data["left"], data["top"],
                                      data["width"], data["height"]):
        text = str(text).strip()
        if not text or float(conf) < 0:
            continue
        words.append(Word(text, float(conf), x // scale, y // scale, -(-w // scale), -(-h // scale)))
    return words
