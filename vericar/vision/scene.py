"""From a whole photo to the vehicle crops the recognizer embeds.

The embedding model was trained on tight bounding-box crops, so each detected vehicle is cut out
at its box grown by ``CROP_MARGIN`` (chosen by measurement, README "Whole photos": 0, the SSD's
boxes already hold the whole car). A photo that
already is such a crop goes through whole, exactly as without a detector, so nothing that works
on tight crops changes:

- the largest vehicle box (any score down to ``FAINT_SCORE``) covers ``TIGHT_AREA`` of the photo
  or more → one vehicle, the whole photo;
- otherwise every confident box (``Detector.score_threshold``) is a vehicle, largest first,
  at most ``MAX_VEHICLES``;
- only faint boxes → the whole photo is embedded; if it then looks like a known vehicle (the
  unknown-vehicle detector accepts it) it is a tight crop the detector was unsure of, else "no vehicle";
- no box at all, not even a faint one → "no vehicle". The unknown check alone let real photos of
  coffee, coins and grass through as cars (README "Whole photos"); a car crop with no faint box
  is rare (measured on the training photos, same place).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

from vericar.core.prediction import Prediction
from vericar.search.taxonomy import LEVELS
from vericar.vision.detect import Box, Detector, NoDetector, clip_box

#: Margin added on each side of a detected box, as a fraction of the box's width / height.
CROP_MARGIN = 0.0  # best of 0-0.2 on scene frames of train photos (README "Whole photos")
#: A box covering this share of the photo's area means the photo is already a tight crop.
TIGHT_AREA = 0.5
#: Lowest detector score that still counts for the tight-crop rule.
FAINT_SCORE = 0.05
MAX_VEHICLES = 10


@dataclass(frozen=True)
class Region:
    """One vehicle to recognise: its box in the photo's pixels (None: no detector ran) and the
    pixel rectangle that is cropped and embedded (``whole``: the photo as it is). ``tentative``: the
    detector saw only faint boxes; the whole photo is a vehicle only if the unknown check accepts it."""

    box: Box | None
    crop: tuple[int, int, int, int]
    whole: bool = False
    tentative: bool = False

    def image(self, photo: Any) -> Any:
        """The part of ``photo`` (PIL) that is embedded."""
        return photo if self.whole else photo.crop(self.crop)


def grow(box: Box, margin: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``box`` grown by ``margin`` × its width (left/right) and height (top/bottom), rounded outwards
    to whole pixels and clipped to ``size = (width, height)``; never empty."""
    import math

    w, h = size
    dx, dy = margin * box.width, margin * box.height
    x1, y1 = max(0, math.floor(box.x1 - dx)), max(0, math.floor(box.y1 - dy))
    x2, y2 = min(w, math.ceil(box.x2 + dx)), min(h, math.ceil(box.y2 + dy))
    return x1, y1, max(x2, min(w, x1 + 1)), max(y2, min(h, y1 + 1))


def main_first(boxes: Sequence[Box], size: tuple[int, int]) -> list[Box]:
    """Boxes largest first (whole pixels of area); equal areas: the one nearest the centre first."""
    cx, cy = size[0] / 2, size[1] / 2

    def key(b: Box) -> tuple[int, float]:
        return -round(b.area), ((b.x1 + b.x2) / 2 - cx) ** 2 + ((b.y1 + b.y2) / 2 - cy) ** 2

    return sorted(boxes, key=key)


def locate(detector: Detector, photo: Any, *, margin: float | None = None,
           max_vehicles: int = MAX_VEHICLES) -> list[Region]:
    """The vehicles in ``photo`` (PIL, EXIF already applied), main vehicle first. Only faint boxes:
    the whole photo as one ``tentative`` region (see ``keeps``); no box at all: ``[]``, no vehicle."""
    if isinstance(detector, NoDetector):
        w, h = photo.size
        return [Region(None, (0, 0, w, h), whole=True)]
    # A tight crop (a box over TIGHT_AREA) goes through whole: the detector skips its second look there.
    found = detector.detect(photo, min_score=min(FAINT_SCORE, detector.score_threshold), whole_above=TIGHT_AREA)
    regions = plan(found, photo.size, score_threshold=detector.score_threshold, margin=margin,
                   max_vehicles=max_vehicles)
    if regions or not found:
        return regions
    return [replace(whole_photo(photo), tentative=True)]


def keeps(region: Region | None, pred: Any) -> bool:
    """Whether ``pred``, the answer for ``region`` (None: the detector saw no vehicle), is a vehicle:
    a tentative region only when the unknown check accepted it."""
    return region is not None and not (region.tentative and pred.unknown)


def plan(found: Sequence[Box], size: tuple[int, int], *, score_threshold: float, margin: float | None = None,
         tight_area: float = TIGHT_AREA, max_vehicles: int = MAX_VEHICLES) -> list[Region]:
    """Regions from detections (any score ≥ ``FAINT_SCORE``) in a photo of ``size``: the rules in
    this module's docstring, as pure geometry."""
    w, h = size
    margin = CROP_MARGIN if margin is None else margin
    found = main_first(found, size)
    if found and found[0].area >= tight_area * w * h:
        return [Region(found[0], (0, 0, w, h), whole=True)]
    sure = [b for b in found if b.score >= score_threshold][:max_vehicles]
    return [Region(b, grow(b, margin, size)) for b in sure]


def whole_photo(photo: Any) -> Region:
    """The photo as one vehicle, boxed by its own edges."""
    w, h = photo.size
    return Region(clip_box(Box(0, 0, w, h), (w, h)), (0, 0, w, h), whole=True)


def recognise(rec: Any, photos: Sequence[Any], *, max_vehicles: int = MAX_VEHICLES,
              margin: float | None = None) -> list[list[Any]]:
    """Every vehicle in each photo (PIL, EXIF applied) as ``Prediction``s with their ``box``,
    main vehicle first; all crops of all photos go through the network in one batch.

    A photo in which the detector saw only faint boxes is embedded whole: kept as one vehicle if the
    unknown-vehicle detector accepts it (a tight crop the detector was unsure of), else no vehicle ([]).
    """
    return [[p for p, _ in found] for found in _recognise(rec, photos, max_vehicles, margin)]


def _recognise(rec: Any, photos: Sequence[Any], max_vehicles: int, margin: float | None) -> list[list[tuple[Any, Any]]]:
    """``recognise`` with each kept vehicle's embedding: per photo, [(Prediction, embedding row), ...]."""
    plans = [locate(rec.detector, photo, max_vehicles=max_vehicles, margin=margin) for photo in photos]
    crops = [r.image(p) for p, regions in zip(photos, plans) for r in regions]
    emb, described = rec._embed_described(crops) if crops else (None, [])
    preds = rec.predict_embeddings(emb) if crops else []
    for pred, attrs in zip(preds, described):
        pred.__dict__.update(vars(attrs))  # colour, viewpoint and their confidences
    out: list[list[tuple[Any, Any]]] = []
    i = 0
    for regions in plans:
        mine = list(zip(preds[i:i + len(regions)], range(i, i + len(regions))))
        i += len(regions)
        for (pred, _), region in zip(mine, regions):
            pred.box = region.box.to_list() if region.box is not None else None
            if pred.plate:  # read in the crop: its box in the photo's pixels
                x, y = region.crop[:2]
                b = pred.plate["box"]
                pred.plate = {**pred.plate, "box": [b[0] + x, b[1] + y, b[2] + x, b[3] + y]}
        out.append([(p, emb[j]) for (p, j), r in zip(mine, regions) if keeps(r, p)])
    return out


def main_vehicles(rec: Any, photos: Sequence[Any]) -> list[tuple[Any, Any] | None]:
    """Each photo's main vehicle as (Prediction with its box, its embedding), in one batch; None
    where no vehicle was found (``compare`` needs the embeddings as well as the answers)."""
    return [found[0] if found else None for found in _recognise(rec, photos, 1, None)]


def main_crop(rec: Any, photo: Any, *, none_if_blank: bool = False) -> Any:
    """The main vehicle's crop of ``photo`` (PIL): what ``similar``, ``explain`` and ``enroll`` look at.
    When the detector sees no box at all: None if ``none_if_blank`` (``similar`` / ``explain``: no
    vehicle, as ``predict`` says), else the whole photo (``enroll``: the user says what it shows)."""
    regions = locate(rec.detector, photo, max_vehicles=1)
    if regions:
        return regions[0].image(photo)
    return None if none_if_blank else photo


def main_predictions(rec: Any, photos: Sequence[Any]) -> list[Any]:
    """The main vehicle of each photo; a photo without one gets ``no_vehicle()``."""
    return [found[0] if found else no_vehicle() for found in recognise(rec, photos, max_vehicles=1)]


def no_vehicle() -> Any:
    """The answer for a photo in which no vehicle was found: no name, flagged, ``vehicle_found=False``."""
    return Prediction(label=None, make=None, model=None, type=None, year=None, confidence={}, unknown=True,
                      ood_score=float("inf"), vehicle_found=False,
                      unknown_levels=list(LEVELS))


def embed_main_vehicles(rec: Any, sources: Sequence[Any], *, batch_size: int = 32,
                        progress: bool = False) -> tuple[Any, Any]:
    """Embeddings of each photo's main vehicle (as ``predict`` crops it) and its region (None: the
    detector saw no vehicle; the whole photo is embedded): evaluation of the whole pipeline, see ``keeps``."""
    import numpy as np
    from tqdm.auto import tqdm

    from vericar.vision.images import open_image

    out, mains = [], []
    for i in tqdm(range(0, len(sources), batch_size), desc="queries", unit="batch", disable=not progress):
        crops = []
        for src in sources[i:i + batch_size]:
            photo = open_image(src)
            regions = locate(rec.detector, photo, max_vehicles=1)
            mains.append(regions[0] if regions else None)
            crops.append(regions[0].image(photo) if regions else photo)
        out.append(rec._embed_pil(crops))
    emb = np.concatenate(out) if out else np.zeros((0, rec.model.output_dim), np.float32)
    return emb, mains
