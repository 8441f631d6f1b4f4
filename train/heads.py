"""Training-only pieces: the cosine-softmax head, freezing early layers, validation subsets."""
from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vericar.search.taxonomy import COARSE_TO_FINE

#: The levels ``--coarse-ce-weight`` gives a head of their own (the finest, the model, always has one).
COARSE_CE_LEVELS = tuple(lvl for lvl in COARSE_TO_FINE if lvl != "model")


class CosineClassifier(nn.Module):
    """Scaled cosine logits between the (L2-normalised) embedding and one weight per class.

    A normalised softmax is a strong metric-learning objective on its own (Zhai & Wu, BMVC 2019)
    and pulls same-class embeddings together around a proxy, which is what k-NN needs. It is
    dropped after training: the artifact keeps only the embedding model.

    ``coarse`` (level -> number of values, e.g. ``{"make": 49}``) adds one proxy per value of each
    coarse level: a model never seen in training still shares its make's proxy, so the embedding
    learns what a make's models have in common. ``forward`` returns every level's logits in one
    call (``{"model": ..., "make": ...}``), so a wrapped (DDP) head syncs all of its weights.
    """

    def __init__(self, dim: int, n_classes: int, scale: float = 16.0, coarse: Mapping[str, int] | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.coarse_levels = tuple(coarse or ())
        # A list, not a ParameterDict: "type" is a name nn.Module already has.
        self.coarse = nn.ParameterList([nn.Parameter(torch.randn(n, dim) * 0.01) for n in (coarse or {}).values()])
        self.scale = scale

    def forward(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        e = F.normalize(emb.float(), dim=-1)
        out = {"model": self.scale * F.linear(e, F.normalize(self.weight, dim=-1))}
        for lvl, w in zip(self.coarse_levels, self.coarse):
            out[lvl] = self.scale * F.linear(e, F.normalize(w, dim=-1))
        return out


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
