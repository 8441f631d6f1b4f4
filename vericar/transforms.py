"""Eval / train image transforms built only from a backbone's ``pretrained_cfg``.

``pretrained_cfg`` keys: ``input_size`` (3, H, W), ``mean``, ``std``, ``interpolation``
("bicubic" | "bilinear" | "nearest"), ``crop_pct`` and ``resize_mode``:
"shortest" resizes the short side to ``size / crop_pct`` and center-crops (timm / CLIP eval),
"squash" resizes to exactly (H, W) ignoring the aspect ratio.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from vericar.errors import SpecError

__all__ = ["eval_transform", "normalize_batch", "train_transform"]

_INTERPOLATION = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}
_REQUIRED = ("input_size", "mean", "std")


def _parse(cfg: dict[str, Any]) -> tuple[tuple[int, int], InterpolationMode, float, str]:
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise SpecError(f"pretrained_cfg lacks {missing}; it needs {list(_REQUIRED)} (take it from model.pretrained_cfg)")
    size = tuple(int(v) for v in cfg["input_size"])
    if len(size) != 3 or size[0] != 3 or min(size) < 1:
        raise SpecError(f"pretrained_cfg['input_size'] must be (3, H, W), got {cfg['input_size']!r}")
    name = cfg.get("interpolation", "bicubic")
    if name not in _INTERPOLATION:
        raise SpecError(f"pretrained_cfg['interpolation'] {name!r} is not one of {sorted(_INTERPOLATION)}")
    crop_pct = float(cfg.get("crop_pct", 1.0))
    if not 0.0 < crop_pct <= 1.0:
        raise SpecError(f"pretrained_cfg['crop_pct'] must be in (0, 1], got {crop_pct}")
    mode = cfg.get("resize_mode", "shortest")
    if mode not in ("shortest", "squash"):
        raise SpecError(f"pretrained_cfg['resize_mode'] must be 'shortest' or 'squash', got {mode!r}")
    return (size[1], size[2]), _INTERPOLATION[name], crop_pct, mode


def _to_tensor(cfg: dict[str, Any], normalize: bool = True) -> list[Callable]:
    if not normalize:  # uint8 out: a quarter of the bytes to move; normalize_batch finishes on the device
        return [v2.ToImage()]
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=[float(m) for m in cfg["mean"]], std=[float(s) for s in cfg["std"]]),
    ]


def eval_transform(cfg: dict[str, Any], *, normalize: bool = True) -> Callable:
    """Deterministic transform: PIL RGB image (or uint8 tensor) -> normalised float tensor (3, H, W).

    ``normalize=False`` stops at the uint8 tensor; :func:`normalize_batch` then does the rest on a batch.
    """
    (height, width), interpolation, crop_pct, mode = _parse(cfg)
    if mode == "squash":
        resize = [v2.Resize((height, width), interpolation=interpolation, antialias=True)]
    else:
        # Short side to max(H, W) / crop_pct covers both sides of a non-square target too.
        short = int(max(height, width) / crop_pct)
        resize = [v2.Resize(short, interpolation=interpolation, antialias=True), v2.CenterCrop((height, width))]
    return v2.Compose([*resize, *_to_tensor(cfg, normalize)])


def train_transform(
    cfg: dict[str, Any],
    *,
    scale: tuple[float, float] = (0.35, 1.0),
    hflip: bool = True,
    color_jitter: float = 0.2,
    normalize: bool = True,
) -> Callable:
    """Augmenting transform for metric learning: random resized crop, horizontal flip, color jitter.

    No vertical flip: cars are never upside down, so it would only teach the model impossible views.
    """
    (height, width), interpolation, _, _ = _parse(cfg)
    ops: list[Callable] = [
        v2.RandomResizedCrop((height, width), scale=tuple(scale), interpolation=interpolation, antialias=True)
    ]
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    if color_jitter > 0:
        ops.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    return v2.Compose([*ops, *_to_tensor(cfg, normalize)])


def normalize_batch(x: torch.Tensor, cfg: dict[str, Any]) -> torch.Tensor:
    """uint8 batch ``(B, 3, H, W)`` (or float already in [0, 1]) -> normalised float32, on ``x``'s device.

    The same float32 operations as the ``normalize=True`` transforms (torchvision's ``ToDtype``
    scales by ``1 / 255``, ``Normalize`` subtracts then divides), done where the model runs, so a
    photo gives the same embedding bit for bit whichever side of the DataLoader normalises it.
    """
    if x.dtype == torch.uint8:
        x = x.to(torch.float32).mul_(1.0 / 255)
    mean = torch.tensor([float(m) for m in cfg["mean"]], device=x.device).view(1, -1, 1, 1)
    std = torch.tensor([float(s) for s in cfg["std"]], device=x.device).view(1, -1, 1, 1)
    return x.sub(mean).div_(std)
