"""Boxes and their geometry: clipping, IoU, containment, non-maximum suppression, and the window
of the detector's second look (vericar.vision.detect uses them; they are re-exported there)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

NMS_IOU = 0.6
# A box lying PART_INSIDE of its area or more inside a confident box of the same class at least
# 1 / PART_AREA times its size (any score) is a part of that vehicle, which the SSD sometimes boxes
# as a car of its own: on the dev scene frames 130 of the 142 boxes that matched no pasted car lay
# inside their car's matched box, at 1-32% of its area. Same class only, so a car in front of a bus
# keeps its box; a third at most, so two cars under one loose box keep theirs.
PART_INSIDE = 0.8
PART_AREA = 1 / 3
# Second look (chosen on scene frames of train photos, README "Whole photos"): the SSD sees a whole
# frame at 300x300, where a car a quarter of the frame wide is ~75 px and often boxed right but
# scored low. Up to ZOOM_LOOKS such faint boxes (score from ZOOM_FLOOR up, under the threshold,
# not already covered by a confident box) are cut out with ZOOM_CONTEXT × their longest side of
# surroundings on every side and detected again; a confident box there that is the same box
# (IoU ≥ ZOOM_IOU) is a vehicle. A faint box that is a confident box's part or its surroundings
# is a vehicle already found: never looked at, never added (cut-off cars in a crop are boxed
# confidently, and would be one car twice). "Part": ZOOM_INSIDE of its area lies inside the
# confident box; "surroundings": it holds ZOOM_CONTAINS of the confident box's area. On train
# frames, every look that found a missed car was at a box barely overlapping any confident one,
# while most looks went to such parts and surroundings (README "Whole photos"; each look is one
# more SSD pass: the latency target). A box under ZOOM_MIN_SIDE pixels of the photo is too small
# to name. Both skips can hide a vehicle: a faint one mostly behind a confident one, or a faint bus
# whose box holds a confident car in front of it (not in the benchmark's frames: not measured).
ZOOM_LOOKS = 2
ZOOM_FLOOR = 0.03
ZOOM_CONTEXT = 0.5
ZOOM_IOU = 0.7
ZOOM_INSIDE = 0.3
ZOOM_CONTAINS = 0.5
ZOOM_MIN_SIDE = 32


@dataclass(frozen=True)
class Box:
    """One detected vehicle: pixel corners (x2, y2 exclusive), detector score, COCO class name."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float = 1.0
    label: str = "car"

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        return self.width * self.height

    def to_list(self) -> list[int]:
        """``[x1, y1, x2, y2]`` rounded to whole pixels (the JSON form)."""
        return [int(round(v)) for v in (self.x1, self.y1, self.x2, self.y2)]


def clip_box(box: Box, size: tuple[int, int]) -> Box:
    """``box`` clipped to an image of ``size = (width, height)``."""
    w, h = size
    x1, x2 = sorted((min(max(box.x1, 0.0), w), min(max(box.x2, 0.0), w)))
    y1, y2 = sorted((min(max(box.y1, 0.0), h), min(max(box.y2, 0.0), h)))
    return Box(x1, y1, x2, y2, box.score, box.label)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    iw = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    ih = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = iw * ih
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def inside(a: Box, b: Box) -> float:
    """The share of ``a``'s area that lies inside ``b`` (0 when ``a`` is empty)."""
    iw = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    ih = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    return iw * ih / a.area if a.area > 0 else 0.0


def nms(boxes: Sequence[Box], iou_threshold: float = NMS_IOU) -> list[Box]:
    """Class-agnostic non-maximum suppression, best score first."""
    kept: list[Box] = []
    for b in sorted(boxes, key=lambda b: -b.score):
        if all(iou(b, k) < iou_threshold for k in kept):
            kept.append(b)
    return kept


def drop_parts(boxes: Sequence[Box], sure: float) -> list[Box]:
    """``boxes`` (order kept) without those lying ``PART_INSIDE`` or more inside a box of the same
    class scoring ``sure`` or more and at least ``1 / PART_AREA`` times as big: parts of a vehicle
    already boxed."""
    return [b for b in boxes if not any(o.score >= sure and o.label == b.label and b.area <= PART_AREA * o.area
                                        and inside(b, o) >= PART_INSIDE for o in boxes)]


def zoom_window(box: Box, size: tuple[int, int], context: float = ZOOM_CONTEXT) -> tuple[int, int, int, int]:
    """The square around ``box``'s centre, ``1 + 2 × context`` times its longest side, clipped to
    ``size = (width, height)``, in whole pixels: what the second look detects on."""
    half = (1 + 2 * context) * max(box.width, box.height) / 2
    cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
    w, h = size
    return (int(max(0, cx - half)), int(max(0, cy - half)), int(min(w, cx + half)), int(min(h, cy + half)))
