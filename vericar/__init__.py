"""vericar: open-world vehicle recognition.

    import vericar
    rec = vericar.load("default")            # or "local-dir:PATH", "hf-hub:ORG/NAME", "timm:tf_efficientnet_lite2"
    pred = rec.predict("car.jpg")            # make / model / type / year, confidences, unknown flag, neighbours
    rec.predict_all("street.jpg")            # every vehicle in a whole photo, largest first (needs a detector)
    rec.enroll(["a.jpg", "b.jpg"], "Tesla Model 3 Sedan 2021")   # learn a new vehicle, no retraining
    rec.explain("car.jpg").overlay           # Grad-CAM++

Names are imported lazily (PEP 562) so that ``import vericar.images`` does not pay for torch,
timm and faiss.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ArtifactError": "errors", "GalleryError": "errors", "ImageError": "errors", "SpecError": "errors",
    "VericarError": "errors",
    "DensityCorrection": "density", "Gallery": "gallery", "KNNOOD": "ood", "open_image": "images",
    "tune_malloc": "_runtime",
    "load": "hub", "push_to_hub": "hub", "save_pretrained": "hub",
    "EmbeddingModel": "model", "create_model": "model",
    "Explanation": "prediction", "Neighbour": "prediction", "Prediction": "prediction", "Recognizer": "recognizer",
    "Taxonomy": "taxonomy", "parse_class_name": "taxonomy",
    "Box": "detect", "Detector": "detect", "create_detector": "detect",
    "VericarConfig": "config", "parse_spec": "spec",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'vericar' has no attribute {name!r}")
