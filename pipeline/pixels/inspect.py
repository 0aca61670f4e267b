"""One candidate, start to end: decode, rules, OCR, mask, OCR again, write back (or hold for review).

Called by the burned-in guard (``pipeline/pixels/guard.py``) for candidates
only. Returns the source the engine walks (the original, untouched, when no
text was found) and the ``PixelOutcome`` every report reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import dicomio
from pipeline.dicomraw import value_of
from pipeline.exceptions import DeidentificationError, RefusedFileError
from pipeline.pixels import mask as masking
from pipeline.pixels.decode import DecodedPixels, PixelDecodeError, decode
from pipeline.pixels.ocr import OcrUnavailable, engine
from pipeline.pixels.outcome import PixelOutcome
from pipeline.pixels.review import ReviewItem, ReviewQueue, file_digest
from pipeline.pixels.screen import HeaderValues, Screening, read_frames, rule_regions, too_small

#: Second (and further) OCR passes over masked frames before the file is held for review.
RECHECKS = 3

if TYPE_CHECKING:  # the guard calls this module; it is only named here
    from pipeline.pixels.guard import BurnedInGuard


def inspect_candidate(guard: "BurnedInGuard", path: Path, source: dicomio.SourceFile, reason: str,
                      inflate_limits: dicomio.InflateLimits = dicomio.DEFAULT_INFLATE,
                      before_change: Callable[[dicomio.SourceFile], None] | None = None,
                      captured: Iterable[str] = (),
                      ) -> tuple[dicomio.SourceFile, PixelOutcome]:
    try:
        name, version = engine()
    except OcrUnavailable as exc:
        raise DeidentificationError(f"a file may show burned-in text and OCR cannot run: {exc}") from None
    outcome = PixelOutcome(reason=reason, action="no text", engine=name, engine_version=version,
                           transfer_syntax_in=str(source.transfer_syntax))
    queue = ReviewQueue(guard.review_dir) if guard.review_dir is not None else None
    decided = queue.find(file_digest(path)) if queue is not None else None
    if decided is not None and decided.status == "rejected":
        raise RefusedFileError(f"possible burned-in annotation: rejected in review {decided.id}")
    header = HeaderValues.of(source.dataset, captured)  # before the walk replaces them
    flag_yes = reason.startswith("BurnedInAnnotation is YES")

    full = dicomio.read(path, load_pixels=True, inflate_limits=inflate_limits)
    ds = full.dataset
    try:
        pixels = decode(ds, full.transfer_syntax, max_bytes=guard.config.ocr.max_decoded_mb * 2**20)
    except PixelDecodeError as exc:
        return source, _doubt(guard, queue, path, outcome, ds, None, [], [],
                              f"{reason}, and its pixels cannot be examined: {exc}")

    if decided is not None and decided.status == "approved":
        regions = [masking.Region(*b) for b in decided.boxes if 0 <= b[0] < pixels.count]
        outcome.reviewed = decided.id
        if not regions:  # a person saw no text: the pixels pass unchanged
            source.dataset.BurnedInAnnotation = "NO"
            outcome.action = "no text (reviewed)"
            return source, outcome
        return _masked(full, pixels, regions, outcome, "masked (reviewed)", before_change)

    if too_small(pixels, guard.config.ocr):
        if flag_yes:
            return source, _doubt(guard, queue, path, outcome, ds, pixels, [], [],
                                  "BurnedInAnnotation is YES and the image is too small to read")
        return source, outcome  # too small to hold legible text: unchanged

    regions: list[masking.Region] = []
    for rule in guard.matching_rules(ds):
        regions += rule_regions(rule, pixels)
        outcome.rules.append(rule.name)
    masking.apply(pixels, regions)
    seen = read_frames(pixels, ds, header, guard.config.ocr)
    outcome.frames_examined = seen.frames_examined
    outcome.words_masked, outcome.header_hits = seen.words, seen.header_hits

    if guard.policy != "mask":
        if seen.masks:
            what = (f"OCR found {seen.words} word(s) of text in {len(seen.frames_with_text)} of "
                    f"{pixels.count} frame(s)" + (f", {seen.header_hits} matching the header's "
                                                   "identifying values" if seen.header_hits else ""))
            return source, _found(guard, outcome, what)
        if seen.doubts or flag_yes:
            return source, _doubt(guard, queue, path, outcome, ds, pixels, seen.doubts, seen.confidences,
                                  _doubt_reason(seen, flag_yes))
        return source, outcome

    if seen.doubts:
        return source, _doubt(guard, queue, path, outcome, ds, pixels, regions + seen.masks + seen.doubts,
                              seen.confidences, _doubt_reason(seen, flag_yes))
    if not seen.masks and not regions:
        if flag_yes:
            return source, _doubt(guard, queue, path, outcome, ds, pixels, [], [],
                                  _doubt_reason(seen, flag_yes))
        return source, outcome  # no text: the file passes unchanged, byte for byte
    masking.apply(pixels, seen.masks)
    regions += seen.masks
    # Read the masked frames again, apart from their background: text OCR reads now (light text
    # on a light ground, a neighbour the first pass merged into the image, a header value) is
    # masked too, up to RECHECKS times; doubt here is not text.
    for _ in range(RECHECKS):
        again = read_frames(pixels, ds, header, guard.config.ocr, frames=sorted({r.frame for r in regions}),
                            second_look=True, masked=regions)
        if not again.masks:
            break
        masking.apply(pixels, again.masks)
        regions += again.masks
        outcome.words_masked += again.words
        outcome.header_hits += again.header_hits
    else:
        return source, _doubt(guard, queue, path, outcome, ds, pixels, regions, seen.confidences,
                              f"OCR still reads text after masking {RECHECKS} times")
    return _masked(full, pixels, regions, outcome, "masked", before_change)


def _doubt_reason(seen: Screening, flag_yes: bool) -> str:
    if seen.doubts:
        return (f"OCR is unsure about {len(seen.doubts)} word(s) (confidence below the mask threshold)")
    return "BurnedInAnnotation is YES but OCR found no text"


def _masked(full: dicomio.SourceFile, pixels: DecodedPixels, regions: list[masking.Region],
            outcome: "PixelOutcome", action: str, before_change: Callable | None,
            ) -> tuple[dicomio.SourceFile, "PixelOutcome"]:
    """Write the masked frames into the dataset; the engine then walks and writes it."""
    ds = full.dataset
    if before_change is not None:
        before_change(full)
    if action == "masked (reviewed)":
        masking.apply(pixels, regions)
    syntax, note = masking.write_back(ds, pixels)
    ds.BurnedInAnnotation = "NO"
    full.transfer_syntax = syntax
    full.pixel_span = None
    outcome.action = action
    outcome.regions = [r.as_list() for r in sorted(set(regions))]
    outcome.transfer_syntax_out, outcome.encoding = str(syntax), note
    if outcome.frames_examined == 0 and action == "masked (reviewed)":
        outcome.frames_examined = pixels.count
    return full, outcome


def _found(guard: "BurnedInGuard", outcome: "PixelOutcome", what: str) -> "PixelOutcome":
    if guard.policy == "warn":
        outcome.action = "warned"
        outcome.warning = f"burned-in text uploaded unmasked (policy warn): {what}"
        return outcome
    guard.refuse(what)


def _doubt(guard: "BurnedInGuard", queue: ReviewQueue | None, path: Path, outcome: "PixelOutcome", ds,
           pixels: DecodedPixels | None, proposed: list[masking.Region], confidences: list[float],
           why: str) -> "PixelOutcome":
    """OCR cannot decide: hold the file for a person (``warn``: let it through, said loudly)."""
    if guard.policy == "warn":
        outcome.action = "warned"
        outcome.warning = f"uploaded without a decision (policy warn): {why}"
        return outcome
    if guard.policy == "fail":
        raise DeidentificationError(f"possible burned-in annotation: {why}")
    if queue is None:
        raise RefusedFileError(f"possible burned-in annotation: {why}; a person must review it")
    rows = int(value_of(ds, "Rows", 0) or 0)
    cols = int(value_of(ds, "Columns", 0) or 0)
    item = queue.add(path, ReviewItem(
        id=file_digest(path), reason=why, modality=str(value_of(ds, "Modality", "") or ""),
        sop_class_uid=str(value_of(ds, "SOPClassUID", "") or ""), rows=rows, columns=cols,
        frames=pixels.count if pixels is not None else int(value_of(ds, "NumberOfFrames", 1) or 1),
        proposed=[r.as_list() for r in sorted(set(proposed))],
        confidences=[round(c, 1) for c in confidences]))
    raise RefusedFileError(f"possible burned-in annotation: {why}; held for review as {item.id} "
                           f"(`telerad review show {item.id}`)")
