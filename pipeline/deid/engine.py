"""The de-identification engine: read once, guard, walk with handlers, update, write.

``Deidentifier.deidentify_file`` is the only entry point the batch and the CLI
use. The steps, in order: recognise and read the file (``dicomio``); whole-file
guards (burned-in annotation policy); record the originals the mapping needs;
walk every element of the dataset, at every depth, asking the handlers in
order; apply per-submission overrides; record what was done (updaters);
rebuild the file meta and write under a path made of pseudonyms and new UIDs.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from pipeline import dicomio
from pipeline.dicomraw import value_of
from pipeline.deid import completeness, updaters
from pipeline.deid.iodtypes import IodTypes, TypeNode
from pipeline.deid.capture import Captured, capture
from pipeline.pixels.guard import BurnedInGuard
from pipeline.pixels.outcome import PixelOutcome
from pipeline.deid.cleaning import Cleaners, drop_empty_private_blocks, vocabulary_paths
from pipeline.deid import rawelem
from pipeline.deid.handlers import (
    NEED_VR, CodeMeaning, Context, Dependent, GroupLength, Identity, OverlayPlane, Plan, Private, TableRule, Unlisted,
)
from pipeline.deid.overrides import Overrides
from pipeline.deid.profile import Profile, keyword_or_tag
from pipeline.deid.vocabulary import Vocabulary
from pipeline.exceptions import (
    DeidentificationError,
    DicomReadError,
    NotDicomError,
    RefusedFileError,
    TeleradError,
)
from pipeline.pseudonyms import Pseudonyms
from pipeline.settings import config_dir


@dataclass(frozen=True)
class OriginalIds:
    """The original identifiers the encrypted mapping records (never uploaded).

    ``captured`` holds every identifying value of the source (``capture.capture``)
    for the leak verifier; it stays in memory and is never written anywhere.
    """

    patient_id: str
    study_instance_uid: str
    accession_number: str
    captured: Captured = field(default=Captured(), compare=False, repr=False)


@dataclass
class DeidentifiedFile:
    """One written, de-identified file and what the manifest and mapping need of it."""

    relpath: str
    cloud_study_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    size: int
    sha256: str  # "" when the caller asked for no digest
    original: OriginalIds
    pseudo_patient_id: str
    pseudo_accession_number: str
    actions: dict[str, dict[str, int]] = field(default_factory=dict)
    pixels_cleaned: bool = False
    # Burned-in text (pipeline/pixels): what was done to a candidate's pixels (None: not a candidate),
    # and the regions (frame, x, y, w, h) where the output's pixels may differ from the source's.
    pixels: PixelOutcome | None = None
    masked_regions: tuple[tuple[int, int, int, int, int], ...] = ()


def _keywords_to_tags(words: list[str], what: str) -> frozenset[int]:
    tags = set()
    for w in words:
        t = tag_for_keyword(w)
        if t is None:
            raise DeidentificationError(f"config/deid: unknown keyword {w!r} in {what}")
        tags.add(t)
    return frozenset(tags)


def _load_keep_lists(root: Path) -> tuple[frozenset[int], frozenset[int], frozenset[int]]:
    uids = tomllib.loads((root / "deid" / "uids.toml").read_text(encoding="utf-8"))
    keep = tomllib.loads((root / "deid" / "keep.toml").read_text(encoding="utf-8"))
    return (
        _keywords_to_tags(uids.get("never_remap", []), "uids.toml never_remap"),
        _keywords_to_tags(keep.get("keep", []), "keep.toml keep"),
        _keywords_to_tags(keep.get("clean", []), "keep.toml clean"),
    )


class Deidentifier:
    """De-identifies files with one profile and one keyed pseudonym source."""

    def __init__(self, profile: Profile, pseudonyms: Pseudonyms, overrides: dict | None = None,
                 *, config_root: Path | None = None, review_dir: Path | None = None,
                 inflate_limits: dicomio.InflateLimits = dicomio.DEFAULT_INFLATE) -> None:
        root = config_root or config_dir()
        dicomio.quiet_pydicom()
        self.inflate_limits = inflate_limits
        self.profile = profile
        self.pseudonyms = pseudonyms
        self.overrides = Overrides.parse(overrides or {})
        self.never_remap, self.keep_text, self.clean_text = _load_keep_lists(root)
        self.cleaners = Cleaners(Vocabulary.from_files(vocabulary_paths(root)))
        self.guard = BurnedInGuard.from_config(root, profile, review_dir)  # review_dir: doubt is held there
        self.handlers = [GroupLength(), Private(), Identity(), CodeMeaning(), OverlayPlane(), Dependent(), TableRule(), Unlisted()]
        # Plans are cached per Type node (one per SOP Class and sequence path): the same
        # tag may be Type 1 in one IOD or sequence and Type 3 in another.
        self.types = IodTypes()
        self._marks_cache: dict[tuple[bool, bool, bool], dict] = {}

    def describe_actions(self) -> list[str]:
        """One line per step, in the order they run."""
        return ([self.guard.describe()] + [h.describe() for h in self.handlers]
                + [self.overrides.describe()] + updaters.describe())

    # --- the walk ----------------------------------------------------------------------
    def _plan(self, node: TypeNode, tag: int, vr: str | None) -> Plan:
        """The first handler's plan for this tag (and VR) where ``node`` types it, cached on the node."""
        key = (tag, vr)
        plan = node.plans.get(key)
        if plan is None:
            plan = next((p for h in self.handlers if (p := h.plan(self, tag, vr, node)) is not None), None)
            if plan is None:  # pragma: no cover - Unlisted claims every element it can see
                raise DeidentificationError(f"internal: no handler for {keyword_or_tag(tag)}")
            node.plans[key] = plan
        return plan

    def plan_for(self, sop_class_uid: str, tag: int, vr: str | None = None) -> Plan:
        """The plan for a top-level ``tag`` in a file of this SOP Class (``need-vr``: ask again with the VR)."""
        return self._plan(self.types.root(sop_class_uid), tag, vr)

    def _walk(self, ctx: Context, ds: Dataset, *, top: bool = False) -> None:
        """Every element of ``ds`` by its plan; then the completeness gate's accounting of ``ds``."""
        d = ds._dict
        counts = ctx.counts
        node = ctx.node
        plans = node.plans
        before = list(d)
        removed: set[int] = set()  # what a rule removed: the only elements allowed to be gone
        for tag in before:
            elem = d.get(tag)
            if elem is None:
                continue  # removed while an earlier element was handled
            number = int(tag)  # plain int keys: BaseTag compares in Python, slowly
            if top:
                ctx.current_tag = number
            plan = plans.get((number, None)) or self._plan(node, number, None)
            vr = None
            if plan is NEED_VR:
                vr = rawelem.settle_vr(ds, tag, number, elem)  # the dictionary's VR, not the file's
                elem = d[tag]
                plan = plans.get((number, vr)) or self._plan(node, number, vr)
            kind = plan.kind
            if kind == "remove":
                del d[tag]
                removed.add(number)
            elif kind == "check":
                rawelem.check_kept(ds, tag, vr, plan.check_label, elem)
            elif kind == "walk":
                rawelem.walk_sequence(ctx, ds, tag)
            elif kind == "call":
                plan.handler(ctx, ds, tag, vr=vr, top=top)
                if tag not in d:
                    removed.add(number)
            if plan.what:
                counts[plan.label][plan.what] += 1
        if self.profile.has("retain-safe-private"):
            removed.update(drop_empty_private_blocks(ds))
        completeness.account(set(before), d, removed, "" if top else " inside a sequence item")

    def _nested_walk(self, ctx: Context, ds: Dataset) -> None:
        self._walk(ctx, ds, top=False)

    def _marks(self, cleaned_pixels: bool, syntax) -> dict:
        """The updaters' elements (the same for every file), encoded once per output syntax."""
        key = (cleaned_pixels, syntax.is_implicit_VR, syntax.is_little_endian)
        marks = self._marks_cache.get(key)
        if marks is None:
            marks = self._marks_cache[key] = updaters.as_raw(
                self.profile, cleaned_pixels=cleaned_pixels, implicit=key[1], little=key[2])
        return marks

    # --- one file --------------------------------------------------------------------
    def deidentify_file(self, src: Path, out_root: Path,
                        check: Callable[[bytes, str, OriginalIds], None] | None = None, *,
                        digest: bool = True, out_path: Path | None = None,
                        submitted: str | None = None) -> DeidentifiedFile:
        """De-identify ``src`` into ``out_root/relpath``; see the module docstring for the steps.

        ``check(header, relpath, originals)`` sees the encoded header before
        the file is written and raises (VerificationError) to stop it. Without
        ``digest`` no SHA-256 is computed (``sha256`` is ""): for outputs no
        manifest will list. ``out_path`` writes the file there instead (a
        scratch name that ``study.Placement`` later moves to ``relpath``).
        ``submitted`` is the file's path as submitted (the study folder's name
        and the path under it), whose names the verifier searches for like any
        captured identifier; by default the file's name.
        """
        src = Path(src)
        source = dicomio.read(src, inflate_limits=self.inflate_limits)
        ds = source.dataset
        originals = _originals(ds)
        originals["captured"] = capture(ds, submitted if submitted is not None else src.name,
                                        self.cleaners.vocabulary.word_ok)
        try:
            snapshot = completeness.Snapshot.of(source)  # before anything changes
        except TeleradError:
            raise
        except Exception as exc:  # an image attribute with a VR no one knows (b"U\x00")...
            raise DicomReadError(
                f"the image attributes the completeness check reads cannot be read ({type(exc).__name__})"
            ) from None
        masked_snapshot: list[completeness.Snapshot] = []
        try:  # burned-in text: candidates' pixels are read by OCR and masked, by policy
            source, pixels = self.guard.inspect(
                src, source, inflate_limits=self.inflate_limits,
                before_change=lambda full: masked_snapshot.append(completeness.Snapshot.of(full, keep_pixels=True)),
                captured=[text for text, _kind in originals["captured"].needles])
        except TeleradError:
            raise
        except Exception as exc:  # a damaged BurnedInAnnotation, Modality, SOP Class...
            raise DicomReadError(
                f"the attributes the burned-in policy reads cannot be read ({type(exc).__name__})"
            ) from None
        ds = source.dataset
        cleaned_pixels = pixels is not None and pixels.cleaned
        if cleaned_pixels:  # masked: the gate compares with the source as decoded, outside the regions
            snapshot = masked_snapshot[0]
            snapshot.cleaned([completeness.PixelRegion(x, y, w, h, frame=f) for f, x, y, w, h in pixels.regions])
        ctx = Context(
            profile=self.profile, pseudonyms=self.pseudonyms, patient_key=originals["patient_key"],
            never_remap=self.never_remap, keep_text=self.keep_text, cleaners=self.cleaners,
        )
        ctx.walk = self._nested_walk
        ctx.node = self.types.root(str(value_of(ds, "SOPClassUID", "") or "").strip())
        try:
            self._walk(ctx, ds, top=True)
            self.overrides.apply(ctx, ds)
            ds._dict.update(self._marks(cleaned_pixels, source.transfer_syntax))
        except TeleradError:
            raise
        except Exception as exc:  # a value pydicom could not convert, a bad sequence...
            tag = ctx.current_tag
            raise DeidentificationError(
                f"could not de-identify element ({tag >> 16:04X},{tag & 0xFFFF:04X}) "
                f"({type(exc).__name__}); the file is malformed there"
            ) from None
        snapshot.check_output(ds, source.transfer_syntax, streamed=source.pixel_span is not None)
        return self._write(source, ds, originals, ctx, out_root, pixels, check, digest, out_path)

    def _write(self, source, ds: Dataset, originals: dict, ctx: Context, out_root: Path,
               pixels: PixelOutcome | None, check, digest: bool, out_path: Path | None) -> DeidentifiedFile:
        study = str(value_of(ds, "StudyInstanceUID", "") or "")
        series = str(value_of(ds, "SeriesInstanceUID", "") or "")
        sop = str(value_of(ds, "SOPInstanceUID", "") or "")
        cloud = self.pseudonyms.study_id(originals["study"])
        relpath = f"{cloud}/{series}/{sop}.dcm"
        cleaned_pixels = pixels is not None and pixels.cleaned
        if source.pixel_span is not None and cleaned_pixels:
            raise DeidentificationError("internal: cleaned pixels must not be streamed from the source")
        original = OriginalIds(originals["patient_id"], originals["study"], originals["accession"],
                               originals["captured"])
        gate = None if check is None else (lambda header: check(header, relpath, original))
        try:
            size, sha = dicomio.write(source, ds, out_path or Path(out_root) / relpath, gate, digest=digest)
        except TeleradError:
            raise
        except Exception as exc:
            raise DeidentificationError(
                f"could not write the de-identified file ({type(exc).__name__})"
            ) from None
        return DeidentifiedFile(
            relpath=relpath, cloud_study_id=cloud, study_instance_uid=study,
            series_instance_uid=series, sop_instance_uid=sop,
            sop_class_uid=str(value_of(ds, "SOPClassUID", "")),
            modality=str(value_of(ds, "Modality", "") or ""),
            size=size, sha256=sha,
            original=original,
            pseudo_patient_id=str(value_of(ds, "PatientID", "") or ""),
            pseudo_accession_number=str(value_of(ds, "AccessionNumber", "") or ""),
            actions={k: dict(v) for k, v in ctx.counts.items()},
            pixels_cleaned=cleaned_pixels,
            pixels=pixels,
            masked_regions=tuple(tuple(r) for r in pixels.regions) if pixels is not None else (),
        )


def _originals(ds: Dataset) -> dict:
    """Originals the mapping needs; refuses files that are not composite instances."""
    try:
        study = str(value_of(ds, "StudyInstanceUID", "") or "").strip()
        series = str(value_of(ds, "SeriesInstanceUID", "") or "").strip()
        sop = str(value_of(ds, "SOPInstanceUID", "") or "").strip()
        sop_class = str(value_of(ds, "SOPClassUID", "") or "").strip()
        pid = str(value_of(ds, "PatientID", "") or "").strip()
        name = str(value_of(ds, "PatientName", "") or "").strip()
        acc = str(value_of(ds, "AccessionNumber", "") or "").strip()
    except Exception as exc:
        raise DicomReadError(f"the file's identifying attributes cannot be read ({type(exc).__name__})") from None
    missing = [k for k, v in (("SOPClassUID", sop_class), ("SOPInstanceUID", sop),
                              ("StudyInstanceUID", study), ("SeriesInstanceUID", series)) if not v]
    if missing:
        if not sop_class and not sop and not study:
            raise NotDicomError("not a composite DICOM instance (no SOP Class, SOP Instance or Study UID)")
        raise RefusedFileError(
            f"the file lacks {', '.join(missing)}, so it cannot be placed in a study; quarantined"
        )
    key = pid or (f"name:{name}" if name else f"study:{study}")
    return {"patient_id": pid, "study": study, "accession": acc, "patient_key": key}


def action_totals(actions: Iterable[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Sum per-file action counts (``DeidentifiedFile.actions``) into per-attribute totals."""
    total: dict[str, Counter] = {}
    for per_file in actions:
        for attr, counts in per_file.items():
            total.setdefault(attr, Counter()).update(counts)
    return {k: dict(v) for k, v in sorted(total.items())}
