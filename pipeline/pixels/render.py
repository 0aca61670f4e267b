"""A frame as an 8-bit grey picture for OCR: photometric, palette and windowing honoured.

Burned-in text is drawn at an extreme of the range (white, or black on a
light screen), so a frame is stretched to its own minimum and maximum after
the VOI window (when the image has one and more than 8 bits); MONOCHROME1 is
inverted so that text reads as on the modality's screen; colour becomes
luminance; a palette is applied first. Planar configuration was resolved by
the decoder (frames arrive as rows x columns x samples).
"""

from __future__ import annotations

import warnings

import numpy as np
from pydicom.dataset import Dataset

from pipeline.dicomraw import value_of


def render(frame: np.ndarray, photometric: str, ds: Dataset) -> np.ndarray:
    """``frame`` (rows x columns [x samples]) as rows x columns uint8."""
    pi = photometric.upper()
    if pi == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = apply_color_lut(frame, ds)
    if frame.ndim == 3:  # RGB (YBR arrives converted): luminance, as a screen shows it
        grey = frame[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    else:
        grey = frame.astype(np.float32)
        bits = int(value_of(ds, "BitsStored", 8) or 8)
        if bits > 8 and pi.startswith("MONOCHROME") and _has_window(ds):
            from pydicom.pixels import apply_voi_lut

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    grey = apply_voi_lut(frame, ds).astype(np.float32)
                except Exception:  # a damaged window: the full range still shows the text
                    grey = frame.astype(np.float32)
    lo, hi = float(grey.min()), float(grey.max())
    if hi > lo:
        out = ((grey - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    else:
        out = np.zeros(grey.shape, np.uint8)
    if pi == "MONOCHROME1":
        out = 255 - out
    return out


def _has_window(ds: Dataset) -> bool:
    d = ds._dict
    return (0x00281050 in d and 0x00281051 in d) or 0x00283010 in d


def apart_from_background(picture: np.ndarray, threshold: int = 24) -> np.ndarray:
    """Black where a pixel differs from the background level (the median), white elsewhere.

    The second look at a masked frame: text lighter than a light background
    (white on grey) or darker than a dark one vanishes in Tesseract's own
    binarisation of the plain picture, but not here.
    """
    level = int(np.median(picture))
    apart = np.abs(picture.astype(np.int16) - level) > threshold
    return np.where(apart, 0, 255).astype(np.uint8)
