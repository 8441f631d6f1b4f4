"""``--plates blur``: every plate found in a photo hidden before anything is shown or stored.

The photo is blurred as it comes in, before the recogniser, the boxes image, the Grad-CAM++
overlay or an enrolment sees it, so nothing made from it (answers' images, enrolled photos and
their gallery tiles) can hold a plate's pixels. Plates are looked for in each vehicle the
recogniser's own detector finds (the whole photo when it finds none), read loosely: any
plate-shaped line that reads as 3-10 letters or digits is hidden, whatever its confidence.
"""
from __future__ import annotations

from typing import Any, Callable

from PIL import Image

from vericar.attributes.plates import PLATE_MODES, Plate, PlateReader, hide_plates
from vericar.core.errors import SpecError
from vericar.vision.scene import locate


def vehicle_boxes(detector: Any, photo: Image.Image) -> list[tuple[float, float, float, float]]:
    """The boxes plates are looked for in: each vehicle the detector finds (its box, else its crop),
    or the whole photo when it finds none (a close-up may show a plate and no whole vehicle)."""
    out = []
    for region in locate(detector, photo):
        b = region.box
        out.append((b.x1, b.y1, b.x2, b.y2) if b is not None else tuple(map(float, region.crop)))
    return out or [(0.0, 0.0, float(photo.width), float(photo.height))]


def find_plates(reader: PlateReader, detector: Any, photo: Image.Image) -> list[Plate]:
    """Every plate to hide in ``photo`` (loose reads, any confidence)."""
    return [p for box in vehicle_boxes(detector, photo) for p in reader.candidates(photo, box, strict=False)]


def blur_plates(reader: PlateReader, detector: Any, photo: Image.Image) -> Image.Image:
    """``photo`` with every plate found in it hidden (``hide_plates``); the photo itself when none."""
    found = find_plates(reader, detector, photo)
    return hide_plates(photo, [p.box for p in found]) if found else photo


def plate_stage(rec: Any, mode: str, reader: PlateReader | None = None) -> Callable[[Any, Image.Image], Image.Image] | None:
    """Set ``rec`` up for the app's ``--plates`` mode and return what hides plates in incoming photos.

    "read": ``rec.attributes`` reads each vehicle's plate into its answer; "blur": no plate text, and
    the returned ``(recognizer, photo) -> photo`` hides every plate found; "off": neither (no cost).
    """
    if mode not in PLATE_MODES:
        raise SpecError(f"plates must be one of {', '.join(PLATE_MODES)}, got {mode!r}.")
    reader = reader or PlateReader()
    rec.attributes = rec.attributes.with_plates("read" if mode == "read" else "off", reader)
    if mode != "blur":
        return None
    return lambda r, photo: blur_plates(reader, r.detector, photo)
