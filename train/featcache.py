"""Cached frozen early-stage features: fine-tune only the late stages, fast on a 2-core CPU.

On a CPU the stem and the first high-resolution stages of an EfficientNet take most of the time
of every step, while their generic filters need little adapting. Here they run once per photo
(and once more for its mirror image); each epoch then trains the late stages + head on the cached
maps, with random crops of the feature map and the cached mirror as augmentation. The model that
is saved is the whole network: the frozen stages keep their ImageNet weights and statistics, so
its ordinary forward pass on a photo equals trunk → cached map → late stages.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from train.errors import TrainError
from vericar.models.embed_cache import cached
from vericar.models.embedding import average_views, forward_batches


def check_supported(model: nn.Module) -> None:
    """Only timm EfficientNet-style backbones (conv_stem, bn1, blocks, conv_head, bn2) are split here."""
    bb = model.backbone
    if not all(hasattr(bb, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
        raise TrainError(
            f"--feature-cache-stages works with timm EfficientNet backbones only, not {type(bb).__name__}; "
            "set it to 0 (train the whole network) for this backbone."
        )


def trunk_forward(model: nn.Module, x: torch.Tensor, n: int) -> torch.Tensor:
    """Stem + the first ``n`` stages."""
    bb = model.backbone
    x = bb.bn1(bb.conv_stem(x))
    for stage in list(bb.blocks)[:n]:
        x = stage(x)
    return x


class LateStages(nn.Module):
    """Stages ``n…`` + head of an EmbeddingModel: cached map → L2-normalised embedding."""

    def __init__(self, model: nn.Module, n: int) -> None:
        super().__init__()
        self.model, self.n = model, n

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        bb = self.model.backbone
        x = feats
        for stage in list(bb.blocks)[self.n:]:
            x = stage(x)
        x = bb.forward_head(bb.bn2(bb.conv_head(x)), pre_logits=True)
        return F.normalize(self.model.head(x), dim=-1)


def cache_features(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    pre: dict,
    n: int,
    *,
    flip: bool,
    batch_size: int = 32,
    progress: bool = True,
) -> torch.Tensor:
    """Trunk maps of every photo at the model's eval preprocessing: (N, 1 or 2, C, h, w) float16."""

    def views(x: torch.Tensor) -> torch.Tensor:
        maps = [trunk_forward(model, x, n)]
        if flip:
            maps.append(trunk_forward(model, torch.flip(x, dims=[3]), n))
        return torch.stack(maps, dim=1)

    # channels_last: oneDNN's fast path for these convolutions on CPU (~1.5x here)
    return forward_batches(model, images, preprocess=pre, batch_size=batch_size, channels_last=True, forward=views,
                           out_dtype=torch.float16, progress=progress, desc="caching early features")


def train_views(feats: torch.Tensor, idx: torch.Tensor, min_crop: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A training batch from the cache: a random mirror per photo and one random-size crop per batch.

    One crop size per batch keeps the batch a single tensor; positions differ per photo.
    """
    n_views, _, h, w = feats.shape[1:]
    b = len(idx)
    view = torch.randint(n_views, (b,), generator=generator)
    s = float(torch.empty(()).uniform_(min_crop, 1.0, generator=generator))
    ch, cw = max(1, math.ceil(h * s)), max(1, math.ceil(w * s))
    top = torch.randint(h - ch + 1, (b,), generator=generator)
    left = torch.randint(w - cw + 1, (b,), generator=generator)
    crops = [feats[i, v, :, t : t + ch, l : l + cw] for i, v, t, l in zip(idx.tolist(), view.tolist(), top.tolist(), left.tolist())]
    return torch.stack(crops).float().contiguous(memory_format=torch.channels_last)


def embed_cached(late: LateStages, feats: torch.Tensor, batch_size: int = 128, views: tuple[str, ...] = ()) -> torch.Tensor:
    """Embeddings of the uncropped cached maps (what the full model gives on the photos): the un-mirrored
    maps, or with ``views`` ("flip",) each photo's two maps in one batch, averaged as vericar's embed does."""
    if "flip" not in views:
        return forward_batches(late, feats[:, 0], preprocess=None, batch_size=batch_size, channels_last=True)
    if feats.shape[1] < 2:
        raise TrainError("--tta flip with the feature cache needs the mirror images' maps too: set cache_flip: true.")
    pairs = feats[:, :2].flatten(0, 1)  # photo 0, its mirror, photo 1, ...: an even batch keeps each pair together
    y = forward_batches(late, pairs, preprocess=None, batch_size=2 * max(1, batch_size // 2), channels_last=True)
    return average_views(y, 2)


def trunk_weights(model: nn.Module, n: int) -> dict[str, torch.Tensor]:
    """The weights ``trunk_forward`` uses: stem and the first ``n`` stages (the cache key)."""
    keep = ("backbone.conv_stem.", "backbone.bn1.", *(f"backbone.blocks.{i}." for i in range(n)))
    return {k: v for k, v in model.state_dict().items() if k.startswith(keep)}


def cached_trunk(model: nn.Module, cfg, pre: dict, samples, imgs, n: int, progress: bool) -> torch.Tensor:
    """Early-stage maps of every photo, from ``cfg.feature_cache_dir`` when an identical run made them."""
    return cached(cfg.feature_cache_dir,
                  lambda: cache_features(model, imgs, pre, n, flip=cfg.cache_flip, progress=progress),
                  weights=trunk_weights(model, n), preprocess=pre, files=[s.ref for s in samples],
                  extra={"stages": n, "flip": cfg.cache_flip, "short_side": cfg.cache_short_side}, prefix="trunk")
