"""Licence plates: where a vehicle's plate is, what it says, and hiding it (``--plates read|blur|off``).

``PlateReader`` runs rapidocr (Apache-2.0; its ONNX text detector and recogniser ship inside the
wheel and run on onnxruntime, nothing is downloaded) inside one vehicle's box: the detector finds
text lines in the lower part of the box, upscaled; the lines whose geometry looks like a plate
(wide, low in the car, small against the box) are read one by one, each cut along its own tilt
(``line_crop``), and only text that looks like a registration is kept (vericar/attributes/plate_text.py),
so badges, dealer frames and slogans are not taken for plates. Two engines, not one: a
per-call ``use_det=False`` sticks to a rapidocr engine.

``hide_plates`` paints each plate box with its own mean colour, so no pixel of the plate is left
(docs/plates.md: how the thresholds were chosen on train photos and what they give on dev).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from vericar.attributes.plate_text import plate_like_text, without_sticker

PLATE_MODES = ("read", "blur", "off")
# Chosen on train photos squashed to 224x224 as the dev photos are (benchmarks/plates.py --tune,
# docs/plates.md), never on dev. At 224 px a plate's characters are 5-8 px high: the detector finds
# more of them upscaled to 640 than to 480 (17 vs 9 of 35 train plates read right), at ~2x the cost.
# On the 643 train photos of benchmarks/labels/plates_train.csv (docs/plates.md), 0.85 read 148 of 191
# plates right against 150 at 0.75-0.80, with 79 false plates against 91-99; with the text rules of
# plate_text.py, 162 against 165, with 86 against 100-108.
MIN_CONFIDENCE = 0.85  # recogniser's mean character probability for a read plate
DET_SIDE = 640  # the searched part of the box is scaled so that its longer side is this many pixels
# onnxruntime threads. The detector's 640 px pass is most of the stage's cost: on this 2-core machine
# two threads took the stage's dev p50 from ~118 to ~95 ms wall, at ~184 ms of CPU (the second
# thread's pool spins while it waits). The recogniser's inputs are small: a second thread would
# only spin. rapidocr ignores a count above os.cpu_count() and then uses onnxruntime's default.
THREADS = 2  # the detector's
REC_THREADS = 1
TOP_SKIP = 0.30  # plates are never in the top 30% of a vehicle's box (roof, windows, bonnet)
MAX_LINES = 4  # text lines read per vehicle, most plate-like first (each read costs ~25-30 ms)
# A plate's text line, as a share of the vehicle's box: not a sliver, not a slogan across the car.
LINE_ASPECT = (1.3, 9.0)  # width / height of the line
LINE_HEIGHT = (0.02, 0.16)  # line height / box height
LINE_WIDTH = (0.05, 0.55)  # line width / box width
LINE_LOW = 0.40  # the line's centre is at least this far down the box
# Around the text line, the plate itself (its border and the country strip), for the box and blur.
PAD_X, PAD_Y = 0.35, 0.45  # × line height
REC_HEIGHT = 48  # the recogniser's input height: each line is scaled to it
# The detector grows each text region by area x 1.6 / perimeter (its unclip ratio), a margin in
# which a plate's frame edge or a sticker is read as one more letter ("EYUA355" for YUA355): the
# line is cut this much tighter (x the line's height), along its tilt.
SHRINK_X, SHRINK_Y = 0.10, 0.05
UPSCALE = 4  # small lines are cut from pixels upscaled this many times (fewer for a big one)
UPSCALE_PIXELS = 4_000_000  # at most this many upscaled pixels around one line (a full-size upload)


@dataclass(frozen=True)
class Plate:
    """One plate: its text (uppercase letters and digits, no spaces), box in photo pixels
    ``[x1, y1, x2, y2]`` (x2, y2 exclusive) and the recogniser's confidence."""

    text: str
    box: tuple[int, int, int, int]
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"text", "box", "confidence"}``."""
        return {"text": self.text, "box": list(self.box), "confidence": round(float(self.confidence), 4)}


def line_is_plate_like(line: Sequence[float], box: Sequence[float]) -> bool:
    """Whether a text line ``[x1, y1, x2, y2]`` has a plate's geometry inside vehicle ``box``."""
    w, h = line[2] - line[0], line[3] - line[1]
    bw, bh = box[2] - box[0], box[3] - box[1]
    if w <= 0 or h <= 0 or bw <= 0 or bh <= 0:
        return False
    low = ((line[1] + line[3]) / 2 - box[1]) / bh
    return (LINE_ASPECT[0] <= w / h <= LINE_ASPECT[1] and LINE_HEIGHT[0] <= h / bh <= LINE_HEIGHT[1]
            and LINE_WIDTH[0] <= w / bw <= LINE_WIDTH[1] and low >= LINE_LOW)


def merge_lines(lines: list[list[float]]) -> list[list[float]]:
    """Join text boxes that sit side by side on one line (``M·PE`` and ``3389`` found apart)."""
    return [box for box, _ in group_lines(lines)]


def group_lines(lines: Sequence[Sequence[float]]) -> list[tuple[list[float], list[int]]]:
    """``merge_lines``, with the indices of the boxes joined into each line (to cut it along its quads)."""
    out: list[tuple[list[float], list[int]]] = []
    for i in sorted(range(len(lines)), key=lambda i: lines[i][0]):
        b = lines[i]
        for m, members in out:
            h = min(b[3] - b[1], m[3] - m[1])
            overlap = min(b[3], m[3]) - max(b[1], m[1])
            gap = b[0] - m[2]
            same_size = max(b[3] - b[1], m[3] - m[1]) <= 1.6 * h
            if h > 0 and overlap >= 0.6 * h and same_size and gap <= 1.2 * h:
                m[:] = [min(m[0], b[0]), min(m[1], b[1]), max(m[2], b[2]), max(m[3], b[3])]
                members.append(i)
                break
        else:
            out.append(([float(v) for v in b], [i]))
    return out


def line_crop(photo: Image.Image, points: np.ndarray, height: int = REC_HEIGHT) -> Image.Image | None:
    """The text line as the recogniser reads it: the smallest rotated rectangle around the
    detector's ``points`` (photo pixels; a plate seen from three-quarters is tilted), cut
    ``SHRINK_X`` / ``SHRINK_Y`` line heights tighter, straightened and scaled to ``height``.

    Cut from pixels upscaled ``UPSCALE`` times (bicubic; fewer for a line over 64 px tall or around
    more than ``UPSCALE_PIXELS`` upscaled pixels). ``photo`` is RGB. With
    the seal rule, 150 of the 191 legible train plates are read right at threshold 0.75, against 103
    from the line's axis-aligned box (docs/plates.md)."""
    import cv2  # only when a plate is read: importing the recogniser should not load OpenCV

    corners = cv2.boxPoints(cv2.minAreaRect(np.asarray(points, np.float32))).astype(np.float64)
    edges = np.roll(corners, -1, axis=0) - corners
    e = int(np.argmax(np.linalg.norm(edges, axis=1)))
    u = edges[e] if edges[e][0] >= 0 else -edges[e]  # along the line, left to right
    w = float(np.linalg.norm(u))
    h = float(np.linalg.norm(edges[(e + 1) % 4]))
    if w < 1 or h < 1:
        return None
    u /= w
    v = np.array([-u[1], u[0]])  # across the line, downwards
    w, h = w - 2 * SHRINK_X * h, h - 2 * SHRINK_Y * h
    if w < 1:
        return None
    c = corners.mean(axis=0)
    tl, tr, bl = c - u * w / 2 - v * h / 2, c + u * w / 2 - v * h / 2, c - u * w / 2 + v * h / 2
    quad = np.array([tl, tr, bl, tr + bl - tl])
    # upscale only the part of the photo around the line (two pixels more, for the interpolation)
    x1, y1 = np.maximum(0, np.floor(quad.min(axis=0)) - 2).astype(int)
    x2, y2 = np.minimum((photo.width, photo.height), np.ceil(quad.max(axis=0)) + 2).astype(int)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    # a big line (a full-size upload) needs no upscaling: keep >= UPSCALE x height rows, no more,
    # and a long tilted one no more than UPSCALE_PIXELS around it
    k = int(min(UPSCALE, max(1, np.ceil(UPSCALE * height / h)),
                max(1, np.sqrt(UPSCALE_PIXELS / ((x2 - x1) * (y2 - y1))))))
    big = np.asarray(photo.crop((x1, y1, x2, y2)).resize(((x2 - x1) * k, (y2 - y1) * k), Image.BICUBIC))
    size = (max(2, round(w * k)), max(2, round(h * k)))
    src = np.float32([(p - (x1, y1)) * k for p in (tl, tr, bl)])
    dst = np.float32([[0, 0], [size[0], 0], [0, size[1]]])
    out = cv2.warpAffine(big, cv2.getAffineTransform(src, dst), size, flags=cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_REPLICATE)
    scale = height / size[1]
    return Image.fromarray(out).resize((max(1, round(size[0] * scale)), height), Image.BICUBIC)


def _plateness(line: Sequence[float], box: Sequence[float]) -> float:
    """Order of reading: low and central lines first (the plate), then the rest."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    cx = ((line[0] + line[2]) / 2 - box[0]) / bw
    cy = ((line[1] + line[3]) / 2 - box[1]) / bh
    return cy - abs(cx - 0.5)


def _rgb_to_bgr(img: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1])


class PlateReader:
    """Finds and reads licence plates inside vehicle boxes (a per-vehicle stage of the Recognizer).

    Args:
        min_confidence: a plate is read when the recogniser is at least this sure of it.
        threads: the detector's onnxruntime threads (default ``THREADS``; 0: onnxruntime's default,
            every core); the recogniser has ``REC_THREADS``.

    The engines load on first use (~0.3 s); calls are serialised (rapidocr engines keep per-call
    settings on themselves), so one reader can serve several request threads.
    """

    def __init__(self, min_confidence: float = MIN_CONFIDENCE, threads: int = THREADS) -> None:
        if not 0.0 <= float(min_confidence) <= 1.0:
            raise ValueError(f"min_confidence must be between 0 and 1, got {min_confidence!r}")
        self.min_confidence = float(min_confidence)
        self.threads = threads
        self._det: Any = None
        self._rec: Any = None
        self._lock = threading.Lock()

    def _engines(self) -> tuple[Any, Any]:
        if self._det is None:
            from rapidocr import RapidOCR  # heavy import, only when a plate is looked for

            common: dict[str, Any] = {"Global.use_cls": False, "Global.log_level": "error",
                                      "Det.limit_side_len": DET_SIDE, "Det.limit_type": "max"}
            common["EngineConfig.onnxruntime.inter_op_num_threads"] = 1

            def threads(n: int) -> dict[str, Any]:
                return {"EngineConfig.onnxruntime.intra_op_num_threads": int(n)} if n else {}

            self._rec = RapidOCR(params={**common, **threads(REC_THREADS), "Global.use_det": False,
                                         "Global.use_rec": True, "Global.return_word_box": True})
            self._det = RapidOCR(params={**common, **threads(self.threads), "Global.use_det": True,
                                         "Global.use_rec": False})
        return self._det, self._rec

    def candidates(self, photo: Image.Image, box: Sequence[float] | None = None, strict: bool = True) -> list[Plate]:
        """Every plate-like text line in ``box`` (photo pixels; None: the whole photo) whose read
        looks like a registration (``plate_like_text``), any confidence, best first. ``read`` keeps
        the best sure one; blurring takes them all, read loosely (``strict=False``)."""
        photo = photo.convert("RGB") if photo.mode != "RGB" else photo
        W, H = photo.size
        bx = [0.0, 0.0, float(W), float(H)] if box is None else [float(v) for v in box]
        x1, x2 = max(0, int(bx[0])), min(W, int(round(bx[2])))
        y1, y2 = max(0, int(bx[1] + TOP_SKIP * (bx[3] - bx[1]))), min(H, int(round(bx[3])))
        if x2 - x1 < 8 or y2 - y1 < 8:
            return []
        region = photo.crop((x1, y1, x2, y2))
        scale = DET_SIDE / max(region.size)
        scaled = region.resize((max(1, round(region.width * scale)), max(1, round(region.height * scale))),
                               Image.BICUBIC)
        with self._lock:
            det, rec = self._engines()
            found = det(_rgb_to_bgr(scaled))
            quads = [np.asarray(q, np.float64) / scale + (x1, y1)
                     for q in ([] if found.boxes is None else found.boxes)]
            boxes = [[q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()] for q in quads]
            lines = [(ln, np.concatenate([quads[i] for i in members])) for ln, members in group_lines(boxes)]
            lines = sorted((ln for ln in lines if line_is_plate_like(ln[0], bx)),
                           key=lambda ln: -_plateness(ln[0], bx))
            out = [p for p in (self._read_line(rec, photo, ln, pts, strict) for ln, pts in lines[:MAX_LINES])
                   if p is not None]
        return sorted(out, key=lambda p: -p.confidence)

    @staticmethod
    def _read_line(rec: Any, photo: Image.Image, line: Sequence[float], points: np.ndarray,
                   strict: bool) -> Plate | None:
        h = line[3] - line[1]
        crop = line_crop(photo, points)
        if crop is None:
            return None
        res = rec(_rgb_to_bgr(crop))
        if not res.txts:
            return None
        raw = "".join(res.txts)
        if res.word_results and res.word_results[0] is not None:  # a confidence per character of the read
            raw = without_sticker(raw, res.word_results[0].confs) or raw
        text = plate_like_text(raw, strict)
        if text is None:
            return None
        plate_box = (int(max(0, line[0] - PAD_X * h)), int(max(0, line[1] - PAD_Y * h)),
                     int(min(photo.width, np.ceil(line[2] + PAD_X * h))),
                     int(min(photo.height, np.ceil(line[3] + PAD_Y * h))))
        return Plate(text, plate_box, float(np.mean(res.scores)))

    def read(self, photo: Image.Image, box: Sequence[float] | None = None) -> Plate | None:
        """The vehicle's plate (the surest plate-like read at ``min_confidence`` or above), or None
        when it has no legible plate."""
        found = self.candidates(photo, box)
        return found[0] if found and found[0].confidence >= self.min_confidence else None


def hide_plates(photo: Image.Image, boxes: Sequence[Sequence[float]]) -> Image.Image:
    """A copy of ``photo`` with every box (photo pixels) painted in that box's mean colour: no
    pixel of a plate is left, only a patch of its average colour."""
    out = photo.convert("RGB").copy() if photo.mode != "RGB" else photo.copy()
    for b in boxes:
        x1, y1 = max(0, int(b[0])), max(0, int(b[1]))
        x2, y2 = min(out.width, int(np.ceil(b[2]))), min(out.height, int(np.ceil(b[3])))
        if x2 > x1 and y2 > y1:
            patch = out.crop((x1, y1, x2, y2))
            mean = tuple(int(v) for v in np.asarray(patch).reshape(-1, 3).mean(axis=0))
            out.paste(mean, (x1, y1, x2, y2))
    return out
