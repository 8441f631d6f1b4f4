"""Eval / train image transforms built only from a model's preprocessing (``vericar.core.config.PreprocessCfg``,
or a dict of it in timm's vocabulary: ``input_size`` (3, H, W), ``mean``, ``std``, ``interpolation``,
``crop_mode``, ``crop_pct``).

``crop_mode`` "center" resizes the short side to ``max(H, W) / crop_pct`` and center-crops (timm / CLIP
eval); "squash" resizes to exactly (H, W) ignoring the aspect ratio. The geometry is built in one
place (:func:`eval_geometry`), so the explanation overlay shows exactly the pixels the model saw.

timm's ``create_transform`` is not used for the eval transform: it normalises on the CPU only (this
one can stop at uint8 for :func:`normalize_batch` on the device), it crops non-square inputs
differently (a (3, 48, 80) centre crop: other pixels), and on square inputs it agrees only to
1.2e-7 (ToTensor divides where ToDtype multiplies), which could move a borderline photo.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from vericar.core.config import PreprocessCfg

__all__ = ["eval_transform", "eval_geometry", "input_view", "normalize_batch", "train_transform"]

_INTERPOLATION = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


def _pre(cfg: PreprocessCfg | Mapping[str, Any]) -> PreprocessCfg:
    """SpecError (from PreprocessCfg) when a setting is missing or invalid."""
    return cfg if isinstance(cfg, PreprocessCfg) else PreprocessCfg.from_dict(cfg)


def _to_tensor(cfg: PreprocessCfg, normalize: bool = True) -> list[Callable]:
    if not normalize:  # uint8 out: a quarter of the bytes to move; normalize_batch finishes on the device
        return [v2.ToImage()]
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(cfg.mean), std=list(cfg.std)),
    ]


def eval_geometry(cfg: PreprocessCfg | Mapping[str, Any]) -> list[Callable]:
    """The resize (and crop) steps of the eval transform; they work on PIL images and tensors alike."""
    pre = _pre(cfg)
    (_, height, width), interpolation = pre.input_size, _INTERPOLATION[pre.interpolation]
    if pre.crop_mode == "squash":
        return [v2.Resize((height, width), interpolation=interpolation, antialias=True)]
    # Short side to max(H, W) / crop_pct covers both sides of a non-square target too.
    short = int(max(height, width) / pre.crop_pct)
    return [v2.Resize(short, interpolation=interpolation, antialias=True), v2.CenterCrop((height, width))]


def eval_transform(cfg: PreprocessCfg | Mapping[str, Any], *, normalize: bool = True) -> Callable:
    """Deterministic transform: PIL RGB image (or uint8 tensor) -> normalised float tensor (3, H, W).

    ``normalize=False`` stops at the uint8 tensor; :func:`normalize_batch` then does the rest on a batch.
    """
    pre = _pre(cfg)
    return v2.Compose([*eval_geometry(pre), *_to_tensor(pre, normalize)])


def input_view(image: Any, cfg: PreprocessCfg | Mapping[str, Any]) -> Any:
    """The part of a PIL photo the model sees, for drawing a heatmap on the right pixels: the whole
    photo when squashed (stretching the heatmap back is exact), else the eval crop at input size."""
    pre = _pre(cfg)
    return image if pre.crop_mode == "squash" else v2.Compose(eval_geometry(pre))(image)


def train_transform(
    cfg: PreprocessCfg | Mapping[str, Any],
    *,
    scale: tuple[float, float] = (0.35, 1.0),
    hflip: bool = True,
    color_jitter: float = 0.2,
    normalize: bool = True,
) -> Callable:
    """Augmenting transform for metric learning: random resized crop, horizontal flip, color jitter.

    No vertical flip: cars are never upside down, so it would only teach the model impossible views.
    """
    pre = _pre(cfg)
    (_, height, width), interpolation = pre.input_size, _INTERPOLATION[pre.interpolation]
    ops: list[Callable] = [
        v2.RandomResizedCrop((height, width), scale=tuple(scale), interpolation=interpolation, antialias=True)
    ]
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    if color_jitter > 0:
        ops.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    return v2.Compose([*ops, *_to_tensor(pre, normalize)])


def normalize_batch(x: torch.Tensor, cfg: PreprocessCfg | Mapping[str, Any]) -> torch.Tensor:
    """uint8 batch ``(B, 3, H, W)`` (or float already in [0, 1]) -> normalised float32, on ``x``'s device.

    The same float32 operations as the ``normalize=True`` transforms (torchvision's ``ToDtype``
    scales by ``1 / 255``, ``Normalize`` subtracts then divides), done where the model runs, so a
    photo gives the same embedding bit for bit whichever side of the DataLoader normalises it.
    """
    if x.dtype == torch.uint8:
        x = x.to(torch.float32).mul_(1.0 / 255)
    pre = _pre(cfg)
    mean = torch.tensor([float(m) for m in pre.mean], device=x.device).view(1, -1, 1, 1)
    std = torch.tensor([float(s) for s in pre.std], device=x.device).view(1, -1, 1, 1)
    return x.sub(mean).div_(std)
