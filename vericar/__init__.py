"""vericar: open-world vehicle recognition.

    import vericar
    rec = vericar.load("default")            # or "local-dir:PATH", "hf-hub:ORG/NAME", "timm:tf_efficientnet_lite2"
    pred = rec.predict("car.jpg")            # make / model / type / year, confidences, unknown flag, neighbours
    rec.predict_all("street.jpg")            # every vehicle in a whole photo, largest first (needs a detector)
    rec.enroll(["a.jpg", "b.jpg"], "Tesla Model 3 Sedan 2021")   # learn a new vehicle, no retraining
    rec.explain("car.jpg").overlay           # Grad-CAM++

Names are imported lazily (PEP 562) so that ``import vericar.vision.images`` does not pay for torch,
timm and faiss.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ArtifactError": "core.errors", "GalleryError": "core.errors", "ImageError": "core.errors", "SpecError": "core.errors",
    "VericarError": "core.errors",
    "DensityCorrection": "search.density", "Gallery": "search.gallery", "KNNOOD": "search.ood", "open_image": "vision.images",
    "tune_malloc": "_infra.runtime",
    "load": "artifacts.hub", "push_to_hub": "artifacts.hub", "save_pretrained": "artifacts.hub",
    "EmbeddingModel": "models.model", "create_model": "models.model", "EnsembleModel": "models.ensemble",
    "Explanation": "core.prediction", "Neighbour": "core.prediction", "Prediction": "core.prediction", "Recognizer": "core.recognizer",
    "Taxonomy": "search.taxonomy", "parse_class_name": "search.taxonomy",
    "Box": "vision.boxes", "Detector": "vision.detect", "create_detector": "vision.detect",
    "VericarConfig": "core.config", "parse_spec": "artifacts.spec",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'vericar' has no attribute {name!r}")
