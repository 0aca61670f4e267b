"""Burned-in text in the pixels: decode, render, OCR, mask, region rules and the review queue.

The burned-in guard (``guard.py``) lives here; the engine asks it about each
file, and only candidates are decoded; ``telerad review`` (``pipeline/cli/review.py``) works the queue.

    decode.py   frames out of any transfer syntax (pydicom + pylibjpeg back-ends)
    render.py   a frame as 8-bit grey for OCR (photometric, palette, window)
    ocr.py      Tesseract word boxes and confidences; engine name and version
    screen.py   classify words: text, header values (certain hits), doubt, noise
    mask.py     mask regions, write back losslessly where the source was
    rules.py    config/deid/pixels.toml: policy, candidates, OCR settings, region rules
    guard.py    the guard the engine calls: candidates, policy, what a finding means
    outcome.py  what was done to one file's pixels (boxes and counts, for every report)
    inspect.py  one candidate start to end
    review.py   the review queue under TELERAD_HOME/review
"""
