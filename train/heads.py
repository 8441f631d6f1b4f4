"""Training-only pieces: the cosine-softmax head, freezing early layers, validation subsets."""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class CosineClassifier(nn.Module):
    """Scaled cosine logits between the (L2-normalised) embedding and one weight per class.

    A normalised softmax is a strong metric-learning objective on its own (Zhai & Wu, BMVC 2019)
    and pulls same-class embeddings together around a proxy, which is what k-NN needs. It is
    dropped after training: the artifact keeps only the embedding model.
    """

    def __init__(self, dim: int, n_classes: int, scale: float = 16.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.scale = scale

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(emb.float(), dim=-1), F.normalize(self.weight, dim=-1))


def freeze_early(model: nn.Module, n: int) -> list[nn.Module]:
    """Freeze the stem and the first ``n`` stages (CNN) or blocks (ViT) of ``model.backbone``.

    On a CPU the early high-resolution layers cost most of the backward pass while generic
    edge/texture filters need little adapting. Returns the frozen modules (to keep in eval mode).
    """
    if n <= 0:
        return []
    bb = model.backbone
    frozen: list[nn.Module] = []
    if hasattr(bb, "conv_stem") and hasattr(bb, "blocks"):  # timm EfficientNet / MobileNet
        frozen = [bb.conv_stem, bb.bn1, *list(bb.blocks)[:n]]
    elif hasattr(bb, "patch_embed") and hasattr(bb, "blocks"):  # timm ViT
        frozen = [bb.patch_embed, *list(bb.blocks)[:n]]
    elif hasattr(bb, "conv1") and hasattr(bb, "transformer"):  # open_clip ViT
        frozen = [bb.conv1, *list(bb.transformer.resblocks)[:n]]
    elif hasattr(bb, "conv1") and hasattr(bb, "layer1"):  # timm ResNet
        frozen = [bb.conv1, bb.bn1, *[getattr(bb, f"layer{i}") for i in range(1, n + 1)]]
    else:
        raise ValueError(f"freeze_stages={n}: don't know the stages of {type(bb).__name__}; use --freeze-stages 0.")
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    return frozen


def cap_per_class(labels: Sequence[int], cap: int | None) -> list[int]:
    """Indices of at most ``cap`` items per label (all when ``cap`` is None), in order."""
    seen: Counter = Counter()
    keep = []
    for i, y in enumerate(labels):
        if cap is None or seen[y] < cap:
            keep.append(i)
            seen[y] += 1
    return keep
