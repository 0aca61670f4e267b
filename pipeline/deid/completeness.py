"""The completeness gate: every file out is its source, whole, but for what a named rule changed.

The leak verifier asks "did anything identifying get through?"; this gate asks
the other half of the promise, "did anything clinical get lost?". It runs on
every file before it is written (staging or DEST) and fails the file closed:

- the pixel payload (PixelData, FloatPixelData, DoubleFloatPixelData, every
  fragment of encapsulated data) goes out byte-identical, or, where Clean Pixel
  Data changed it, identical outside the recorded regions;
- an image's geometry (Rows, Columns, NumberOfFrames, BitsAllocated,
  SamplesPerPixel), its SOP Class and its transfer syntax are unchanged;
- every element of the source is accounted for: kept, changed, or removed by a
  named rule of the plan (``account``); an element that vanished with no rule
  is a failure;
- native pixel data is as long as its geometry says, so a truncated image is
  refused instead of being sent as a partial one.

It is cheap by design: the pixel check compares the element object (or its
length and the bytes actually copied, for pixels streamed from the source),
never a second read or hash of the pixels; the ledger is a set operation per
dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.uid import UID

from pipeline.dicomraw import PIXEL_TAGS, value_of
from pipeline.exceptions import DeidentificationError, RefusedFileError

#: Attributes whose values must be the same in and out (the image as the reader will decode it).
GEOMETRY = {
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280008: "NumberOfFrames",
    0x00280100: "BitsAllocated",
    0x00280002: "SamplesPerPixel",
    0x00080016: "SOPClassUID",
}
_PIXEL_NAMES = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}


class IncompleteOutputError(DeidentificationError):
    """The de-identified file would not hold everything clinical its source holds."""


def _tag_name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def account(before: set[int], after, removed: set[int], where: str = "") -> None:
    """Fail when an element of ``before`` is neither in ``after`` nor removed by a rule.

    The walk calls this for every dataset it walks (top level and each item):
    ``removed`` holds the tags a plan removed (``remove`` plans, and handlers
    whose element is gone after they ran), so anything else that vanished was
    lost by accident.
    """
    vanished = before.difference(after).difference(removed)
    if vanished:
        first = min(vanished)
        raise IncompleteOutputError(
            f"element {_tag_name(first)}{where} vanished with no rule "
            f"({len(vanished)} element(s) unaccounted for); nothing was written"
        )


@dataclass
class PixelRegion:
    """A rectangle Clean Pixel Data (or OCR masking) changed, in one frame (None: every frame)."""

    x: int
    y: int
    width: int
    height: int
    frame: int | None = None


@dataclass
class Snapshot:
    """What the gate compares the output with, taken from the source before the walk."""

    transfer_syntax: str
    geometry: dict[int, str]
    pixel_tag: int | None
    pixel_value: object = None  # the source's pixel value (in memory), compared by identity first
    pixel_length: int = 0
    streamed: bool = False
    regions: list[PixelRegion] = field(default_factory=list)
    pixel_module: Dataset | None = None  # kept for OCR masking: the source image, decoded to compare

    @classmethod
    def of(cls, source, *, keep_pixels: bool = False) -> "Snapshot":
        """Record the source's pixel payload and geometry; refuse an image without its pixels.

        ``keep_pixels`` (a file about to be masked) also keeps the source's
        Image Pixel attributes, so masked output, which may be re-encoded, is
        compared with the source as both decode.
        """
        ds = source.dataset
        d = ds._dict
        geometry = {tag: _text(ds, kw) for tag, kw in GEOMETRY.items()}
        present = [t for t in PIXEL_TAGS if t in d]
        if len(present) > 1:
            raise RefusedFileError("the file holds more than one pixel data element; refused")
        if source.pixel_span is not None:
            length = source.pixel_span[1]
            snap = cls(str(source.transfer_syntax), geometry, pixel_tag=0x7FE00010, pixel_length=length,
                       streamed=True)
        elif present:
            elem = d[present[0]]
            value = elem.value
            snap = cls(str(source.transfer_syntax), geometry, pixel_tag=present[0], pixel_value=value,
                       pixel_length=len(value) if value is not None else 0)
        else:
            snap = cls(str(source.transfer_syntax), geometry, pixel_tag=None)
        if snap.pixel_tag is None and geometry[0x00280010] and geometry[0x00280011] and geometry[0x00280100]:
            raise RefusedFileError(
                "the file declares an image (Rows, Columns, Bits Allocated) but holds no pixel data; "
                "it would arrive as an image without pixels: send the complete file"
            )
        snap._check_native_length(source)
        if keep_pixels and snap.pixel_tag == 0x7FE00010 and not snap.streamed:
            snap.pixel_module = pixel_module(ds, source.transfer_syntax)
        return snap

    def _check_native_length(self, source) -> None:
        """Native pixel data must be as long as its geometry says (a truncated file is refused)."""
        if self.pixel_tag != 0x7FE00010 or source.transfer_syntax.is_compressed:
            return
        try:
            rows, cols = int(self.geometry[0x00280010]), int(self.geometry[0x00280011])
            bits = int(self.geometry[0x00280100])
            spp = int(self.geometry[0x00280002] or 1)
            frames = int(float(self.geometry[0x00280008] or 1))
        except ValueError:
            return  # geometry the validator and the reader judge; nothing to compute here
        bits_total = rows * cols * spp * frames * bits
        expected = (bits_total + 7) // 8
        if self.pixel_length < expected:
            raise RefusedFileError(
                f"the pixel data holds {self.pixel_length} bytes but Rows x Columns x frames x samples "
                f"x bits say {expected}: the image is truncated; send the complete file"
            )

    def cleaned(self, regions: list[PixelRegion]) -> None:
        """Clean Pixel Data changed these regions: the gate allows exactly them to differ."""
        self.regions = list(regions)

    # --- the output ----------------------------------------------------------------------
    def check_output(self, out: Dataset, transfer_syntax, *, streamed: bool) -> None:
        """Compare the de-identified dataset (about to be written) with the snapshot."""
        for tag, kw in GEOMETRY.items():
            now = _text(out, kw)
            if now != self.geometry[tag]:
                raise IncompleteOutputError(f"{kw} changed during de-identification; nothing was written")
        if str(transfer_syntax) != self.transfer_syntax and not self.regions:
            raise IncompleteOutputError("the transfer syntax changed with no recorded reason; nothing was written")
        d = out._dict
        present = [t for t in PIXEL_TAGS if t in d]
        if self.pixel_tag is None:
            if present:
                raise IncompleteOutputError("pixel data appeared that the source did not have")
            return
        name = _PIXEL_NAMES[self.pixel_tag]
        if self.streamed:
            if present or not streamed:
                raise IncompleteOutputError(f"{name} would not be copied from the source; nothing was written")
            return
        if present != [self.pixel_tag]:
            raise IncompleteOutputError(f"{name} is missing from the output; nothing was written")
        value = d[self.pixel_tag].value
        if value is self.pixel_value:
            return
        if not self.regions:
            if value != self.pixel_value:
                raise IncompleteOutputError(f"{name} differs from the source's; nothing was written")
            return
        if self.pixel_module is not None:
            self._check_decoded_regions(out, transfer_syntax)
            return
        self._check_regions(out, value)

    def check_written(self, header_size: int, size: int) -> None:
        """After the write: streamed pixels were copied whole."""
        if self.streamed and size - header_size != self.pixel_length:
            raise IncompleteOutputError("the pixel data was not copied whole")

    def _check_regions(self, out: Dataset, value) -> None:
        """Clean Pixel Data: the pixels differ from the source's only inside the recorded regions."""
        import numpy as np

        rows, cols = int(self.geometry[0x00280010]), int(self.geometry[0x00280011])
        spp = int(self.geometry[0x00280002] or 1)
        frames = int(float(self.geometry[0x00280008] or 1))
        bits = int(self.geometry[0x00280100])
        if bits % 8 or isinstance(self.pixel_value, (list, tuple)):
            return  # packed 1-bit data or fragments: geometry and length were checked above
        per_sample = bits // 8
        shape = (frames, rows, cols, spp * per_sample)
        n = frames * rows * cols * spp * per_sample
        if len(value) < n:
            raise IncompleteOutputError("the cleaned pixel data is shorter than the image")
        if UID(self.transfer_syntax).is_compressed or len(self.pixel_value) < n:
            return  # decoded from a compressed source: compared by geometry and length only
        after = np.frombuffer(value, dtype=np.uint8, count=n).reshape(shape).copy()
        before = np.frombuffer(self.pixel_value, dtype=np.uint8, count=n).reshape(shape)
        for r in self.regions:
            frames_hit = slice(None) if r.frame is None else slice(r.frame, r.frame + 1)
            after[frames_hit, r.y:r.y + r.height, r.x:r.x + r.width, :] = before[
                frames_hit, r.y:r.y + r.height, r.x:r.x + r.width, :]
        if not np.array_equal(after, before):
            raise IncompleteOutputError(
                "the cleaned pixel data differs from the source outside the recorded regions"
            )


    def _check_decoded_regions(self, out: Dataset, transfer_syntax) -> None:
        """OCR masking: the decoded output equals the decoded source outside the recorded regions."""
        import numpy as np

        try:
            before = _decoded(self.pixel_module)
            after = _decoded(pixel_module(out, transfer_syntax))
        except Exception as exc:  # a decoder's failure: the output cannot be shown to be whole
            raise IncompleteOutputError(
                f"the masked pixel data cannot be compared with the source ({type(exc).__name__})") from None
        if before.shape != after.shape:
            raise IncompleteOutputError("the masked image has a different shape from the source")
        after = after.copy()
        for r in self.regions:
            frames_hit = slice(None) if r.frame is None else slice(r.frame, r.frame + 1)
            after[frames_hit, r.y:r.y + r.height, r.x:r.x + r.width, ...] = before[
                frames_hit, r.y:r.y + r.height, r.x:r.x + r.width, ...]
        if not np.array_equal(after, before):
            raise IncompleteOutputError("the masked pixel data differs from the source outside the recorded regions")


_PIXEL_MODULE = ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated", "BitsStored",
                 "HighBit", "PixelRepresentation", "PhotometricInterpretation", "PlanarConfiguration")


def pixel_module(ds: Dataset, transfer_syntax) -> Dataset:
    """The Image Pixel attributes and pixel data of ``ds`` (sharing its bytes), to decode on their own."""
    from pydicom.dataset import FileMetaDataset

    out = Dataset()
    out.file_meta = FileMetaDataset()
    out.file_meta.TransferSyntaxUID = UID(str(transfer_syntax))
    for kw in _PIXEL_MODULE:
        value = value_of(ds, kw, None)
        if value is not None and value != "":
            setattr(out, kw, value)
    elem = ds["PixelData"]
    out.PixelData = elem.value
    out["PixelData"].VR = elem.VR if elem.VR in ("OB", "OW") else "OB"
    out["PixelData"].is_undefined_length = UID(str(transfer_syntax)).is_compressed
    return out


def _decoded(module: Dataset):
    """All frames as (frames, rows, columns[, samples]), colour as RGB (as a reader's pydicom shows it)."""
    import warnings

    from pydicom.pixels import get_decoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr, meta = get_decoder(module.file_meta.TransferSyntaxUID).as_array(module, as_rgb=True)
    frames = int(meta.get("number_of_frames", 1) or 1)
    samples = int(meta.get("samples_per_pixel", 1) or 1)
    return arr.reshape((frames, int(meta["rows"]), int(meta["columns"])) + ((samples,) if samples > 1 else ()))


def _text(ds: Dataset, keyword: str) -> str:
    value = value_of(ds, keyword, None)
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return value.decode("ascii", "replace").strip("\x00 ")
    return str(value).strip()
