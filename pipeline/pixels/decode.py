"""Frames out of a dataset's pixel data, for every transfer syntax a site sends.

pydicom decodes; the back-ends it uses for compressed syntaxes are installed
by default (pylibjpeg with its libjpeg, openjpeg and rle plugins for JPEG
baseline/extended/lossless, JPEG-LS and JPEG 2000; pyjpegls; Pillow). Colour
in a YCbCr space comes out as RGB, as pydicom gives it, and the outcome says
so: a masked file is then written as RGB.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    HTJ2K,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
)

from pipeline.dicomraw import value_of

#: Syntaxes whose decoded pixels are not the original's: never re-encoded in kind.
LOSSY_SYNTAXES = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEG2000, JPEGLSNearLossless, HTJ2K})


class PixelDecodeError(Exception):
    """The pixel data cannot be decoded; the message names why, never a value."""


@dataclass
class DecodedPixels:
    """All frames as one array: (frames, rows, columns) or (frames, rows, columns, samples)."""

    frames: np.ndarray
    photometric: str  # of ``frames`` (RGB where the source was YBR_*)
    source_photometric: str
    transfer_syntax: UID
    lossy: bool  # the source syntax is lossy: re-encoding in kind would lose more

    @property
    def count(self) -> int:
        return int(self.frames.shape[0])

    @property
    def samples(self) -> int:
        return 1 if self.frames.ndim == 3 else int(self.frames.shape[3])


def decode(ds: Dataset, transfer_syntax: UID, *, max_bytes: int | None = None) -> DecodedPixels:
    """Every frame of ``ds`` (its pixel data loaded), writable; PixelDecodeError if it cannot be.

    ``max_bytes`` refuses an image whose frames would take more memory than
    that once decoded (a long cine), before anything is decoded.
    """
    from pydicom.pixels import get_decoder

    if 0x7FE00010 not in ds._dict:
        raise PixelDecodeError("it has no Pixel Data (float or double pixel data is not examined)")
    if int(value_of(ds, "BitsAllocated", 0) or 0) == 1:
        raise PixelDecodeError("its pixel data is 1 bit per pixel, which OCR cannot read")
    if max_bytes is not None:
        size = 1
        for kw in ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel"):
            size *= max(1, int(float(value_of(ds, kw, 1) or 1)))
        size *= max(1, int(value_of(ds, "BitsAllocated", 8) or 8) // 8)
        if size > max_bytes:
            raise PixelDecodeError(f"its frames take {size / 2**20:.1f} MB decoded, more than the "
                                   f"{max_bytes // 2**20} MB examined in memory (max_decoded_mb)")
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        raise PixelDecodeError(f"no decoder for its transfer syntax {transfer_syntax}") from None
    if not decoder.is_available:
        raise PixelDecodeError(
            f"no installed back-end decodes {transfer_syntax.name}; install pylibjpeg, "
            "pylibjpeg-libjpeg, pylibjpeg-openjpeg and pylibjpeg-rle") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr, meta = decoder.as_array(ds, as_rgb=True)
    except Exception as exc:  # decoders raise many types; their messages are about codecs, not PHI
        raise PixelDecodeError(f"its {transfer_syntax.name} pixel data cannot be decoded "
                               f"({type(exc).__name__})") from None
    frames = int(meta.get("number_of_frames", 1) or 1)
    samples = int(meta.get("samples_per_pixel", 1) or 1)
    rows, cols = int(meta["rows"]), int(meta["columns"])
    shape = (frames, rows, cols) + ((samples,) if samples > 1 else ())
    arr = np.ascontiguousarray(arr.reshape(shape))
    if not arr.flags.writeable:
        arr = arr.copy()
    source_pi = str(value_of(ds, "PhotometricInterpretation", "") or "").strip().upper()
    return DecodedPixels(
        frames=arr, photometric=str(meta.get("photometric_interpretation", source_pi)).upper(),
        source_photometric=source_pi, transfer_syntax=UID(str(transfer_syntax)),
        lossy=UID(str(transfer_syntax)) in LOSSY_SYNTAXES,
    )


def back_ends() -> dict[str, bool]:
    """Which compressed syntaxes this installation decodes (for `telerad` diagnostics and tests)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless

    out = {}
    for uid in (JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless,
                JPEG2000Lossless, JPEG2000, RLELossless):
        out[uid.name] = get_decoder(uid).is_available
    return out
