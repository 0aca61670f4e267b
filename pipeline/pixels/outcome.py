"""What the burned-in guard did to one file's pixels: boxes and counts, never a value from the file."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PixelOutcome:
    """What was done to one candidate's pixels; no values from the file (boxes and counts only)."""

    reason: str                     # why it was a candidate
    action: str                     # "no text", "masked", "warned"
    frames_examined: int = 0
    regions: list[list[int]] = field(default_factory=list)  # masked: [frame, x, y, w, h], output pixels
    words_masked: int = 0
    header_hits: int = 0
    rules: list[str] = field(default_factory=list)  # names of the region rules applied
    engine: str = ""
    engine_version: str = ""
    transfer_syntax_in: str = ""
    transfer_syntax_out: str = ""
    encoding: str = ""              # why the output syntax was chosen
    reviewed: str | None = None     # the review item whose decision was applied
    warning: str | None = None

    @property
    def cleaned(self) -> bool:
        return bool(self.regions)

    def as_report(self, relpath: str) -> dict:
        out = {"file": relpath, "candidate_because": self.reason, "action": self.action,
               "frames_examined": self.frames_examined, "boxes_masked": len(self.regions),
               "masked_regions": self.regions, "words_masked": self.words_masked,
               "header_values_found": self.header_hits,
               "ocr_engine": self.engine, "ocr_engine_version": self.engine_version}
        if self.rules:
            out["rules"] = self.rules
        if self.reviewed:
            out["review_id"] = self.reviewed
        if self.transfer_syntax_out:
            out["transfer_syntax"] = {"source": self.transfer_syntax_in, "output": self.transfer_syntax_out,
                                      "note": self.encoding}
        if self.warning:
            out["warning"] = self.warning
        return out
