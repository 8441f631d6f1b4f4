"""Zero-shot gallery entries: OpenCLIP text prototypes of class names.

CLIP's image tower ends in the joint image-text space, so a sentence like "a photo of a 2012 BMW
3 Series Sedan." embedded by the text tower can be searched like a photo of that car. This only
holds for the raw CLIP image embedding (``embed_dim=0``): a trained projection head maps images
into a new space the text tower has never seen, where text prototypes are meaningless.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from vericar.artifacts.spec import parse_spec
from vericar.core.errors import SpecError, VericarError
from vericar.search.gallery import Gallery

__all__ = ["CARS_TEMPLATES", "DEFAULT_TEMPLATES", "class_phrase", "text_prototypes", "zeroshot_gallery"]

#: CLIP's prompt ensemble for Stanford Cars (Radford et al. 2021, "Prompt engineering" notebook).
CARS_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of my {}.",
    "i love my {}!",
    "a photo of my dirty {}.",
    "a photo of my clean {}.",
    "a photo of my new {}.",
    "a photo of my old {}.",
)
DEFAULT_TEMPLATES = CARS_TEMPLATES


def class_phrase(class_name: str) -> str:
    """Natural phrasing of a label: "BMW 3 Series Sedan 2012" -> "2012 BMW 3 Series Sedan".

    Uses vericar.search.taxonomy when the label parses as make/model/type/year; flat labels are kept as is.
    """
    from vericar.search.taxonomy import parse_class_name

    v = parse_class_name(class_name)
    if not v.is_hierarchical:
        return v.label
    return " ".join(p for p in (v.year, v.make, v.model, v.type) if p)


def _clip_parts(model: Any) -> tuple[torch.nn.Module, Any]:
    """The CLIP model + tokenizer behind ``model``, after checking text prototypes make sense for it."""
    spec = str(getattr(model, "spec", ""))
    try:
        kind = parse_spec(spec).kind
    except SpecError:
        kind = None
    if kind != "open_clip":
        raise VericarError(
            f"zero-shot text prototypes need an OpenCLIP backbone, but this model is {spec!r}; "
            "create one with vericar.create_model('open_clip:ARCH/TAG', embed_dim=0, keep_text=True)"
        )
    if int(getattr(model, "embed_dim", -1)) != 0:
        raise VericarError(
            f"zero-shot text prototypes only live in the raw CLIP image space, but this model has a trained "
            f"{model.embed_dim}-d projection head (the text tower never saw that space); use the same backbone "
            "with embed_dim=0, or enrol photos of the new classes instead"
        )
    clip, tokenizer = getattr(model, "clip_model", None), getattr(model, "tokenizer", None)
    if clip is None or tokenizer is None:
        raise VericarError(
            "this model was built without CLIP's text tower; recreate it with "
            f"vericar.create_model({spec!r}, embed_dim=0, keep_text=True)"
        )
    # Same weights, same space: the image tower used for queries must be the CLIP model's own.
    if getattr(clip, "visual", None) is not getattr(model, "backbone", None):
        raise VericarError(
            "the model's image tower is not the image tower of its CLIP model (weights were replaced?), so "
            "text and image embeddings would not share a space; recreate the model with keep_text=True"
        )
    return clip, tokenizer


def _check_names(class_names: Sequence[str], templates: Sequence[str]) -> tuple[list[str], list[str]]:
    if isinstance(class_names, str):
        raise VericarError("class_names must be a list of strings, not a single string; wrap it: [name]")
    names = list(class_names)
    if not names or any(not isinstance(n, str) or not n.strip() for n in names):
        raise VericarError(f"class_names must be a non-empty list of non-empty strings, got {names!r}")
    if isinstance(templates, str):
        raise VericarError("templates must be a list of strings each containing '{}', not a single string")
    temps = list(templates)
    if not temps or any(not isinstance(t, str) or "{}" not in t for t in temps):
        raise VericarError(f"templates must be a non-empty list of strings each containing '{{}}', got {temps!r}")
    return names, temps


def text_prototypes(
    model: Any, class_names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES, batch_size: int = 16
) -> np.ndarray:
    """One L2-normalised text embedding per class (mean over ``templates``) -> float32 ``(N, D)``.

    ``model`` must be an open_clip EmbeddingModel with ``embed_dim=0`` created with ``keep_text=True``;
    D equals ``model.output_dim`` so the rows can go straight into a Gallery.
    """
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    names, temps = _check_names(class_names, templates)
    clip, tokenizer = _clip_parts(model)
    phrases = [class_phrase(n) for n in names]
    # the text tower can sit on another device than the image tower (it is not a submodule).
    text_params = [p for n, p in clip.named_parameters() if not n.startswith("visual.")]
    device = text_params[0].device if text_params else torch.device("cpu")
    # eval() for deterministic text features, then put every submodule back as it was
    # (the image tower is shared with a model that may be training).
    modes = [(m, m.training) for m in clip.modules()]
    clip.eval()
    try:
        weights = build_zero_shot_classifier(
            clip, tokenizer, phrases, temps, num_classes_per_batch=max(1, int(batch_size)), device=device
        )
    finally:
        for m, flag in modes:
            m.training = flag
    protos = weights.T.float().cpu().numpy()  # (D, N) -> (N, D), already re-normalised after the mean
    if protos.shape[1] != model.output_dim:
        raise VericarError(
            f"text embeddings are {protos.shape[1]}-d but image embeddings are {model.output_dim}-d; "
            "the model's backbone does not end in CLIP's joint space"
        )
    return np.ascontiguousarray(protos, dtype=np.float32)


def zeroshot_gallery(
    model: Any, class_names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES, index: str = "flat"
) -> Gallery:
    """A Gallery with one text prototype per class: labels = class names, refs = ``"text:<phrase>"``."""
    protos = text_prototypes(model, class_names, templates)
    names = list(class_names)
    gallery = Gallery(dim=int(model.output_dim), index=index)
    gallery.add(protos, labels=names, refs=[f"text:{class_phrase(n)}" for n in names])
    return gallery
