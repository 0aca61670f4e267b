"""Builders: ultrasound, secondary capture and multi-frame XA images with identifiers drawn into the pixels.

``make_image`` writes a real Part 10 file whose header carries the patient's
name, ID, birth date and accession number, and whose pixels show chosen text
(Pillow, DejaVu fonts when installed) at chosen places, sizes and contrasts;
it returns where each piece of text was drawn, so a test can check that the
masked boxes cover it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
XA_IMAGE = "1.2.840.10008.5.1.4.1.1.12.1"
FONTS = {
    "sans": "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "mono": "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "serif-bold": "/usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf",
}


def font(name: str, size: int):
    path = FONTS.get(name, "")
    if path and Path(path).exists():
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


@dataclass
class Label:
    """One piece of text to draw: what, where (x, y), font, size (px) and grey level (0-255)."""

    text: str
    x: int
    y: int
    size: int = 16
    font: str = "sans"
    level: int = 255


@dataclass
class Identity:
    """Unique identifiers for one synthetic patient (unique so a test can search for them)."""

    tag: str = field(default_factory=lambda: "".join(secrets.choice("BCDFGHJKLMNPRSTVWXZ") for _ in range(5)))

    @property
    def family(self) -> str:
        return f"QUIST{self.tag}"

    @property
    def given(self) -> str:
        return "MARGARETHE"

    @property
    def patient_id(self) -> str:
        return f"{int.from_bytes(self.tag.encode(), 'big') % 10**8:08d}"

    @property
    def birth_date(self) -> str:
        return "19620417"

    @property
    def accession(self) -> str:
        return f"A{int.from_bytes(self.tag[::-1].encode(), 'big') % 10**7:07d}"


def background(kind: str, rows: int, cols: int, seed: int = 7) -> np.ndarray:
    """A plausible image without text: an ultrasound sector of speckle, or a smooth X-ray-like field."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    if kind == "US":
        img = (rng.random((rows, cols)) * 25).astype(np.float32)
        cx, top = cols / 2, -rows * 0.1
        r = np.hypot(xx - cx, yy - top)
        sector = (r > rows * 0.3) & (r < rows * 0.8) & (np.abs(xx - cx) < (yy - top) * 0.75)
        img[sector] = 40 + rng.gamma(2.0, 30.0, int(sector.sum())).clip(0, 170)
        return img.astype(np.uint8)
    field_ = 60 + 80 * np.exp(-(((xx - cols / 2) / (cols / 3)) ** 2 + ((yy - rows / 2) / (rows / 3)) ** 2))
    return (field_ + rng.normal(0, 4, (rows, cols))).clip(0, 255).astype(np.uint8)


def draw(img: np.ndarray, labels: list[Label]) -> list[tuple[int, int, int, int]]:
    """Draw ``labels`` into ``img`` (uint8, in place); returns each label's ink box (x, y, w, h)."""
    pic = Image.fromarray(img)
    pen = ImageDraw.Draw(pic)
    boxes = []
    for lab in labels:
        f = font(lab.font, lab.size)
        x0, y0, x1, y1 = pen.textbbox((lab.x, lab.y), lab.text, font=f)
        pen.text((lab.x, lab.y), lab.text, fill=lab.level, font=f)
        boxes.append((x0, y0, x1 - x0, y1 - y0))
    img[...] = np.asarray(pic)
    return boxes


@dataclass
class Drawn:
    """A written image and where its text is."""

    path: Path
    who: Identity
    boxes: list[tuple[int, int, int, int, int]]  # (frame, x, y, w, h) of drawn text
    texts: list[str]
    ink: np.ndarray  # (frames, rows, cols) bool: the pixels the text changed


def make_image(path: Path, *, kind: str = "US", rows: int = 480, cols: int = 640, frames: int = 1,
               labels: list[Label] | None = None, who: Identity | None = None, rgb: bool = False,
               burned_in: str | None = None, syntax: str = "native", seed: int = 7,
               per_frame: list[list[Label]] | None = None, study_uid: str | None = None) -> Drawn:
    """Write one image of ``kind`` (US, SC or XA) with ``labels`` drawn in every frame (or ``per_frame``)."""
    who = who or Identity()
    labels = labels or []
    stack, boxes, ink = [], [], []
    for f in range(frames):
        img = background("US" if kind == "US" else "XA", rows, cols, seed + f)
        plain = img.copy()
        for box in draw(img, per_frame[f] if per_frame else labels):
            boxes.append((f, *box))
        stack.append(img)
        ink.append(img != plain)
    arr = np.stack(stack)
    if rgb:
        arr = np.repeat(arr[..., None], 3, axis=-1)
        arr[..., 2] = (arr[..., 2] * 0.8).astype(np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop_class = {"US": US_IMAGE, "SC": SC_IMAGE, "XA": XA_IMAGE}[kind]
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid or generate_uid(), generate_uid()
    ds.PatientName = f"{who.family}^{who.given}"
    ds.PatientID = who.patient_id
    ds.PatientBirthDate = who.birth_date
    ds.AccessionNumber = who.accession
    ds.InstitutionName = "RIVERBEND CLINIC"
    ds.StudyDate, ds.StudyTime = "20261120", "101500"
    ds.Modality = {"US": "US", "SC": "OT", "XA": "XA"}[kind]
    if kind == "SC":
        ds.ConversionType = "WSD"
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = 0x00181063
        ds.FrameTime = 33.3
    data = arr if frames > 1 else arr[0]
    ds.PixelData = data.tobytes()
    if syntax != "native":
        from pydicom import uid

        target = {"rle": uid.RLELossless, "jpeg": uid.JPEGBaseline8Bit, "j2k": uid.JPEG2000Lossless,
                  "j2k-lossy": uid.JPEG2000, "jpegls": uid.JPEGLSLossless}[syntax]
        if syntax == "jpeg":
            encoded = _jpeg_frames(arr, rgb)
            from pydicom.encaps import encapsulate

            ds.PixelData = encapsulate(encoded)
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
            ds.file_meta.TransferSyntaxUID = target
            if rgb:
                ds.PhotometricInterpretation = "YBR_FULL_422"
            ds.LossyImageCompression = "01"
        else:
            kwargs = {"j2k_cr": [20]} if syntax == "j2k-lossy" else {}
            ds.compress(target, data, generate_instance_uid=False, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return Drawn(path, who, boxes, [lab.text for lab in labels], np.stack(ink))


def _jpeg_frames(arr: np.ndarray, rgb: bool) -> list[bytes]:
    import io

    out = []
    for frame in arr:
        buf = io.BytesIO()
        Image.fromarray(frame, "RGB" if rgb else "L").save(buf, format="JPEG", quality=95)
        out.append(buf.getvalue())
    return out


def identity_labels(who: Identity, *, size: int = 16, level: int = 255, font_name: str = "sans",
                    where: str = "top", cols: int = 640, rows: int = 480) -> list[Label]:
    """The patient's name, ID, birth date and accession as a scanner prints them, at ``where``."""
    line1 = f"{who.family}, {who.given}"
    line2 = f"ID {who.patient_id}  DOB {who.birth_date[6:]}/{who.birth_date[4:6]}/{who.birth_date[:4]}"
    line3 = f"ACC {who.accession}"
    step = size + size // 2
    if where == "top":
        x, y = 8, 6
    elif where == "bottom":
        x, y = 8, rows - 3 * step - 6
    else:  # right
        x, y = max(8, cols - 17 * size), 6
    return [Label(line1, x, y, size, font_name, level), Label(line2, x, y + step, size, font_name, level),
            Label(line3, x, y + 2 * step, size, font_name, level)]
