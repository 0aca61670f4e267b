"""Burned-in text in the pixels: decode, render, OCR, mask, region rules and the review queue.

Used by the burned-in guard (``pipeline/deid/guards.py``) for candidate files
only; ``telerad review`` (``pipeline/cli/review.py``) works the queue.

    decode.py   frames out of any transfer syntax (pydicom + pylibjpeg back-ends)
    render.py   a frame as 8-bit grey for OCR (photometric, palette, window)
    ocr.py      Tesseract word boxes and confidences; engine name and version
    screen.py   classify words: text, header values (certain hits), doubt, noise
    mask.py     mask regions, write back losslessly where the source was
    rules.py    config/deid/pixels.toml: policy, candidates, OCR settings, region rules
    inspect.py  one candidate start to end
    review.py   the review queue under TELERAD_HOME/review
"""
