"""Mask regions of frames and write the pixel data back, losslessly where the source was.

A masked region is recorded as (frame, x, y, width, height), 0-based frame, in
pixels of the written image: exactly the places where the output's pixels may
differ from the source's (the per-file pixel completeness gate checks this).
The frames are re-encoded in the source's transfer syntax when it is lossless
and an encoder is installed (uncompressed, RLE, JPEG-LS lossless, JPEG 2000
lossless); otherwise (lossy JPEG / JPEG 2000, JPEG Lossless, big endian) they
are written Explicit VR Little Endian, and the outcome says why.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from pipeline.dicomraw import value_of
from pipeline.pixels.decode import DecodedPixels

_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
_REENCODE = (RLELossless, JPEGLSLossless, JPEG2000Lossless)


@dataclass(frozen=True, order=True)
class Region:
    """A masked rectangle of one frame (0-based), in pixels."""

    frame: int
    x: int
    y: int
    w: int
    h: int

    def as_list(self) -> list[int]:
        return [self.frame, self.x, self.y, self.w, self.h]


def padded(frame: int, x: int, y: int, w: int, h: int, margin: int, rows: int, cols: int) -> Region | None:
    """The box grown by ``margin`` on every side and clipped to the image (None if nothing is left)."""
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(cols, x + w + margin), min(rows, y + h + margin)
    if x1 <= x0 or y1 <= y0:
        return None
    return Region(frame, x0, y0, x1 - x0, y1 - y0)


def fill_value(frames: np.ndarray, photometric: str) -> int | float:
    """What a masked pixel becomes: black as the screen shows it."""
    if photometric == "MONOCHROME1":
        return frames.max()
    if photometric == "MONOCHROME2":
        return frames.min()
    return 0


def apply(pixels: DecodedPixels, regions: list[Region]) -> None:
    """Set every region of ``pixels.frames`` to the fill value, in place."""
    fill = fill_value(pixels.frames, pixels.photometric)
    for r in regions:
        pixels.frames[r.frame, r.y:r.y + r.h, r.x:r.x + r.w, ...] = fill


def write_back(ds: Dataset, pixels: DecodedPixels) -> tuple[UID, str]:
    """Put ``pixels`` into ``ds``; returns the output transfer syntax and a note on why it was chosen."""
    source = pixels.transfer_syntax
    _describe_pixels(ds, pixels)
    if source in _NATIVE:
        _native(ds, pixels)
        return source, "re-encoded in the source transfer syntax (uncompressed)"
    if source in _REENCODE:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.compress(source, pixels.frames if pixels.count > 1 else pixels.frames[0],
                            generate_instance_uid=False)
            return source, f"re-encoded in the source transfer syntax ({source.name}, lossless)"
        except Exception as exc:  # an encoder that refuses this bit depth or colour space
            why = f"no {source.name} encoder accepted the image ({type(exc).__name__})"
    elif pixels.lossy:
        why = f"the source ({source.name}) is lossy; re-encoding it would lose more"
    elif not source.is_little_endian:
        why = f"the source ({source.name}) is big endian"
    else:
        why = f"no lossless encoder is installed for {source.name}"
    _native(ds, pixels)
    if pixels.lossy:
        ds.LossyImageCompression = "01"
    return ExplicitVRLittleEndian, f"written Explicit VR Little Endian: {why}"


def _describe_pixels(ds: Dataset, pixels: DecodedPixels) -> None:
    """The Image Pixel attributes of the frames as decoded (YBR became RGB, planes interleaved)."""
    if pixels.photometric != pixels.source_photometric:
        ds.PhotometricInterpretation = pixels.photometric
    if pixels.samples > 1:
        ds.PlanarConfiguration = 0
    if pixels.count > 1 or 0x00280008 in ds._dict:
        ds.NumberOfFrames = pixels.count


def _native(ds: Dataset, pixels: DecodedPixels) -> None:
    bits = int(value_of(ds, "BitsAllocated", 8) or 8)
    arr = pixels.frames
    size = bits // 8 if bits in (8, 16, 32) else arr.dtype.itemsize  # as many bytes as Bits Allocated says
    data = arr.astype(f"<{arr.dtype.kind}{size}", copy=False).tobytes()
    if len(data) % 2:
        data += b"\x00"
    ds.PixelData = data
    elem = ds["PixelData"]
    elem.VR = "OB" if bits <= 8 else "OW"
    elem.is_undefined_length = False
