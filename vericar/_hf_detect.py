"""``hf-hub:ORG/NAME``: any COCO object detector on the Hugging Face Hub, run by transformers
(``AutoImageProcessor`` + ``AutoModelForObjectDetection``; DETR, RT-DETR, YOLOS, ...). A local
folder written by ``save_pretrained`` works too (``hf-hub:/path/to/folder``), which is how it is
tested offline."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .detect import VEHICLE_NAMES, Detector
from .errors import ArtifactError, VericarError


class HFDetector(Detector):
    """A transformers object-detection model; vehicles are the classes named car / bus / truck in
    ``model.config.id2label``."""

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
