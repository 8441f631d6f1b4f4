"""Metric-learning losses: Multi-Similarity (pytorch-metric-learning) and HiMS-Min.

HiMS-Min (Veri-Car, Muñoz et al., arXiv 2411.06864) trains one embedding with a
Multi-Similarity loss per level of the label hierarchy (make -> type -> model,
coarse to fine). The "Min" part bounds a finer level's loss by the coarser ones:

    eff_0 = L_0                                  (coarsest level)
    eff_l = min(L_l, eff_{l-1})                  (bound="cumulative", default)
    eff_l = min(L_l, L_{l-1})                    (bound="parent")
    total = sum_l w_l * eff_l                    (w_l = 1/n_levels unless given)

The paper's exact formula was not available offline; this is the natural reading
of "a finer level's loss never exceeds the coarser level's". The min is taken
with ``torch.minimum`` on tensors, so the gradient flows into whichever branch is
smaller (the coarse level also keeps its own ``w_0 * L_0`` term).

A level whose labels give no positive pair or no negative pair in the batch (all
labels equal, or all distinct) has no defined MS loss: pml returns 0 for it. That
0 would wipe out every finer level through the min, so such a level is *skipped*:
it contributes 0 and does not bound the levels below it.
"""

from __future__ import annotations

from typing import Callable, Literal, Mapping, Sequence

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from torch import nn

from vericar.search.taxonomy import COARSE_TO_FINE

__all__ = [
    "MultiSimilarity",
    "HiMSMin",
    "build_level_index",
    "level_label_tensors",
]

DEFAULT_LEVELS: tuple[str, ...] = COARSE_TO_FINE


def _check_batch(embeddings: torch.Tensor, labels: torch.Tensor, name: str) -> None:
    """Raise a clear ValueError when embeddings/labels do not fit together."""
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
        shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings)
        raise ValueError(
            f"embeddings must be a 2-D tensor (batch, dim); got {shape}. "
            "Flatten or stack the model outputs before the loss."
        )
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
        got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels)
        raise ValueError(f"labels for {name!r} must be a 1-D tensor; got {got}.")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(
            f"labels for {name!r} must be integer (LongTensor); got {labels.dtype}. "
            "Use level_label_tensors() to build them."
        )
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels for {name!r} have {labels.shape[0]} entries but there are "
            f"{embeddings.shape[0]} embeddings; give one label per embedding."
        )


def _has_pairs(labels: torch.Tensor) -> bool:
    """True when the batch holds at least one positive and one negative pair."""
    _, counts = torch.unique(labels, return_counts=True)
    return counts.numel() >= 2 and bool(counts.max() >= 2)


class MultiSimilarity(nn.Module):
    """Multi-Similarity loss (Wang et al. 2019) with its MS pair miner, via pml.

    Cosine similarity on L2-normalised embeddings; pml averages the per-anchor
    losses over *all* anchors in the batch (MeanReducer). ``miner_epsilon=None``
    turns mining off (every pair is used).
    """

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        miner_epsilon: float | None = 0.1,
    ) -> None:
        super().__init__()
        if alpha <= 0 or beta <= 0:
            raise ValueError(f"alpha and beta must be > 0; got alpha={alpha}, beta={beta}.")
        if miner_epsilon is not None and miner_epsilon < 0:
            raise ValueError(f"miner_epsilon must be >= 0 or None; got {miner_epsilon}.")
        self.loss_fn = pml_losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base)
        self.miner = (
            None if miner_epsilon is None else pml_miners.MultiSimilarityMiner(epsilon=miner_epsilon)
        )

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scalar MS loss of ``embeddings`` (B, D) under integer ``labels`` (B,)."""
        _check_batch(embeddings, labels, "labels")
        labels = labels.to(embeddings.device)
        pairs = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss_fn(embeddings, labels, pairs)


class HiMSMin(nn.Module):
    """Hierarchical MS loss with the finer levels bounded by the coarser ones.

    ``levels`` go coarse -> fine. ``weights`` default to ``1/len(levels)`` each so
    the total stays on the scale of one MS loss. ``bound`` picks the min rule
    (see the module docstring). ``ms_kwargs`` go to :class:`MultiSimilarity`.
    """

    def __init__(
        self,
        levels: Sequence[str] = DEFAULT_LEVELS,
        weights: Sequence[float] | None = None,
        bound: Literal["cumulative", "parent"] = "cumulative",
        **ms_kwargs: float | None,
    ) -> None:
        super().__init__()
        self.levels = tuple(levels)
        if not self.levels or len(set(self.levels)) != len(self.levels):
            raise ValueError(f"levels must be non-empty and distinct; got {list(levels)}.")
        if weights is None:
            weights = [1.0 / len(self.levels)] * len(self.levels)
        weights = [float(w) for w in weights]
        if len(weights) != len(self.levels) or any(w < 0 for w in weights):
            raise ValueError(
                f"weights must be {len(self.levels)} non-negative numbers (one per level "
                f"{list(self.levels)}); got {weights}."
            )
        if bound not in ("cumulative", "parent"):
            raise ValueError(f"bound must be 'cumulative' or 'parent'; got {bound!r}.")
        self.weights = tuple(weights)
        self.bound = bound
        self.ms = MultiSimilarity(**ms_kwargs)

    def forward(
        self, embeddings: torch.Tensor, level_labels: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return ``(total_loss, parts)``.

        ``parts`` (floats, for logging) holds each level's raw MS loss under its
        name, the bounded value under ``"<level>/min"`` and the sum under
        ``"total"``; a skipped level (no pairs) logs 0 for both.
        """
        missing = [lvl for lvl in self.levels if lvl not in level_labels]
        if missing:
            raise ValueError(
                f"level_labels lacks {missing}; expected a LongTensor for each of "
                f"{list(self.levels)} (build them with level_label_tensors())."
            )
        raw: list[torch.Tensor | None] = []
        for lvl in self.levels:
            labels = level_labels[lvl]
            _check_batch(embeddings, labels, lvl)
            raw.append(self.ms(embeddings, labels) if _has_pairs(labels) else None)

        total = embeddings.sum() * 0.0  # keeps the graph (and device/dtype) when all levels skip
        effective: list[torch.Tensor | None] = []
        bound_by: torch.Tensor | None = None  # value the next finer level may not exceed
        for w, loss in zip(self.weights, raw):
            if loss is None:
                effective.append(None)
                continue  # skipped: neither contributes nor bounds (see module docstring)
            eff = loss if bound_by is None else torch.minimum(loss, bound_by)
            effective.append(eff)
            total = total + w * eff
            bound_by = eff if self.bound == "cumulative" else loss

        # Logging only after all tensor math, on detached copies.
        parts: dict[str, float] = {}
        for lvl, loss, eff in zip(self.levels, raw, effective):
            parts[lvl] = 0.0 if loss is None else float(loss.detach())
            parts[f"{lvl}/min"] = 0.0 if eff is None else float(eff.detach())
        parts["total"] = float(total.detach())
        return total, parts


def build_level_index(
    class_names: Sequence[str],
    level_value: Callable[[str, str], str],
    levels: Sequence[str] = DEFAULT_LEVELS,
) -> dict[str, list[int]]:
    """Map class id -> integer id per level: ``out[level][class_id] = level_id``.

    ``level_value(class_name, level)`` gives the level's value (e.g. a taxonomy's
    ``level_value``, whose "model" is the full label, so models of different makes
    never merge). Level ids follow the sorted distinct values, so they do not
    depend on class order.
    """
    if not class_names:
        raise ValueError("class_names is empty; pass the training classes in class-id order.")
    index: dict[str, list[int]] = {}
    for lvl in levels:
        values = [str(level_value(name, lvl)) for name in class_names]
        vocab = {v: i for i, v in enumerate(sorted(set(values)))}
        index[lvl] = [vocab[v] for v in values]
    return index


def level_label_tensors(
    class_ids: torch.Tensor, level_index: Mapping[str, Sequence[int]]
) -> dict[str, torch.Tensor]:
    """Per-level LongTensor labels for a batch of class ids (same device)."""
    if not isinstance(class_ids, torch.Tensor) or class_ids.dtype.is_floating_point:
        raise ValueError("class_ids must be an integer tensor of class ids (0..n_classes-1).")
    out: dict[str, torch.Tensor] = {}
    for lvl, table in level_index.items():
        lookup = torch.as_tensor(list(table), dtype=torch.long, device=class_ids.device)
        if class_ids.numel() and (int(class_ids.min()) < 0 or int(class_ids.max()) >= len(lookup)):
            raise ValueError(
                f"class id out of range for level {lvl!r}: ids span "
                f"[{int(class_ids.min())}, {int(class_ids.max())}] but the index knows "
                f"{len(lookup)} classes; rebuild it with build_level_index() on the same classes."
            )
        out[lvl] = lookup[class_ids.long()]
    return out
