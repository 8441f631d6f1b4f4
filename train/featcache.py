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
from tqdm.auto import tqdm

from vericar.transforms import eval_transform


def check_supported(model: nn.Module) -> None:
    """Only timm EfficientNet-style backbones (conv_stem, bn1, blocks, conv_head, bn2) are split here."""
    bb = model.backbone
    if not all(hasattr(bb, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
        raise SystemExit(
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


@torch.inference_mode()
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
    tf = eval_transform(pre)
    was = model.training
    model.eval()
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc="caching early features", disable=not progress):
        # channels_last: oneDNN's fast path for these convolutions on CPU (~1.5x here)
        x = torch.stack([tf(im) for im in images[i : i + batch_size]]).contiguous(memory_format=torch.channels_last)
        views = [trunk_forward(model, x, n)]
        if flip:
            views.append(trunk_forward(model, torch.flip(x, dims=[3]), n))
        out.append(torch.stack(views, dim=1).half())
    model.train(was)
    return torch.cat(out)


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


@torch.inference_mode()
def embed_cached(late: LateStages, feats: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Embeddings of the un-mirrored, uncropped cached maps (what the full model gives on the photos)."""
    late.eval()
    dev = next(late.parameters()).device
    return torch.cat(
        [
            late(feats[i : i + batch_size, 0].float().to(dev).contiguous(memory_format=torch.channels_last)).float().cpu()
            for i in range(0, len(feats), batch_size)
        ]
    )


def cached_trunk(model: nn.Module, cfg, pre: dict, samples, imgs, n: int, progress: bool) -> torch.Tensor:
    """Early-stage maps of every photo, from ``cfg.feature_cache_dir`` when an identical run made them."""
    path = None
    if cfg.feature_cache_dir:
        import hashlib
        import json
        from pathlib import Path

        key = json.dumps([cfg.backbone, cfg.pretrained, n, cfg.cache_flip, cfg.cache_short_side, pre,
                          [s.ref for s in samples]], sort_keys=True, default=str)
        path = Path(cfg.feature_cache_dir) / f"trunk-{hashlib.sha256(key.encode()).hexdigest()[:20]}.safetensors"
        if path.is_file():
            from safetensors.torch import load_file
            return load_file(str(path))["feats"]
    feats = cache_features(model, imgs, pre, n, flip=cfg.cache_flip, progress=progress)
    if path is not None:
        from safetensors.torch import save_file
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"feats": feats.contiguous()}, str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").replace(path)  # atomic: never a half-written cache
    return feats
