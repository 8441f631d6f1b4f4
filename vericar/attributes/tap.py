"""What the attribute heads read from the recogniser's own embedding pass: no second network pass.

``FeatureTap`` hooks the tapped network (an ensemble's first member, the one the heads were fitted
on) and, while a :meth:`FeatureTap.capture` is open in the calling thread, keeps per crop:
- ``backbone``: the pooled backbone features, on their way into the embedding head;
- ``columns``: the means of the left, centre and right thirds of the last feature map, on its way
  into the global pool (``column_means``). Global pooling throws away where things are, and a
  viewpoint is mostly that: which end of the car is on which side, and how wide each face is;
- ``early``: the early stages' maps pooled over where the body is (``body_pooled``). They are close
  to ImageNet's (the shipped networks were trained with the stem and ``blocks`` 0-2 frozen; block 3
  was fine-tuned), so they still carry the colour that the later stages learn to ignore (a model is a
  model in any paint).

One tap per model (``tap_of``), hooked once; each capture says which parts to keep (a part no head
reads costs nothing), and requests served side by side never see each other's rows (thread-local).
The heads name what they read in their JSON (``features``, e.g. ``backbone+columns``;
vericar.attributes.stage).
"""
from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import numpy as np

PARTS = ("backbone", "columns", "early")  # what the tap can catch, by the name a head's features use
EARLY_STAGES = (1, 2, 3)  # timm EfficientNet ``blocks`` whose outputs are pooled for ``early``


def column_means(fmap: Any) -> Any:
    """A feature map ``(B, C, H, W)`` (torch) -> ``(B, 3C)``: the means of its left, centre and right thirds
    (a map under 3 wide: its mean three times)."""
    import torch

    w = fmap.shape[-1]
    if w < 3:
        return fmap.mean((2, 3)).repeat(1, 3)
    a = w // 3
    return torch.cat([fmap[..., lo:hi].mean((2, 3)) for lo, hi in ((0, a), (a, w - a), (w - a, w))], 1)


def body_pooled(fmap: Any) -> Any:
    """A feature map ``(B, C, H, W)`` (torch) -> ``(B, C)``: its mean weighted by where a vehicle's body is
    in its crop (vericar.attributes.colour.body_weights, at the map's size)."""
    import torch

    from vericar.attributes.colour import body_weights

    w = torch.from_numpy(body_weights(fmap.shape[-2], fmap.shape[-1])).to(fmap)
    return (fmap * w).sum((2, 3))


def _tapped(model: Any) -> Any:
    return model.members[0] if hasattr(model, "members") else model


def map_pool(model: Any) -> Any:
    """The module that pools the tapped network's last feature map (a timm CNN's ``global_pool``), or None
    (a ViT has tokens, not a map; a channels-last pool's input would be averaged over the wrong axis)."""
    m = _tapped(model)
    if getattr(m, "kind", None) == "vit":
        return None
    pool = getattr(getattr(m, "backbone", None), "global_pool", None)
    if not callable(getattr(pool, "register_forward_pre_hook", None)):
        return None
    return pool if getattr(pool, "input_fmt", None) in (None, "NCHW") else None


def early_stages(model: Any) -> list | None:
    """The tapped network's early stages (``EARLY_STAGES`` of a timm EfficientNet's ``blocks``), or None."""
    m = _tapped(model)
    blocks = getattr(getattr(m, "backbone", None), "blocks", None)
    if getattr(m, "kind", None) == "vit" or blocks is None or len(blocks) <= max(EARLY_STAGES) \
            or map_pool(model) is None:  # no NCHW map at the end: the stages are not such maps either
        return None
    return [blocks[i] for i in EARLY_STAGES]


class Captured(list):
    """The pooled feature batches a capture caught, in forward order; ``columns``: the column means of the
    same passes' last maps; ``early``: per early stage, its body-pooled batches (empty when not caught)."""

    def __init__(self) -> None:
        super().__init__()
        self.columns: list = []
        self.early: list[list] = [[] for _ in EARLY_STAGES]

    def part(self, name: str, n: int) -> np.ndarray | None:
        """One part (``PARTS``) for ``n`` crops as ``(n, width)``, or None (not caught, or not one row per crop)."""
        if name == "backbone":
            return tap_features(self, n)
        if name == "columns":
            return tap_features(self.columns, n)
        if name != "early":
            raise KeyError(f"{name!r} is not a part the tap catches ({list(PARTS)})")
        stages = [tap_features(s, n) for s in self.early]
        return None if any(s is None for s in stages) else np.concatenate(stages, 1)


def available_parts(model: Any) -> set[str]:
    """The parts (``PARTS``) a tap on ``model`` can catch."""
    return {"backbone"} | ({"columns"} if map_pool(model) is not None else set()) \
        | ({"early"} if early_stages(model) is not None else set())


class FeatureTap:
    """Catches, during :meth:`capture` and in the calling thread only, the input of ``model.head`` (the
    pooled backbone features) and the parts the capture asks for: the column means of the map its pool
    reads, the body-pooled maps of the early stages. Rows come in forward order."""

    def __init__(self, model: Any) -> None:
        self._local = threading.local()
        self._handles = [model.head.register_forward_pre_hook(self._hook)]
        pool = map_pool(model)
        if pool is not None:
            self._handles.append(pool.register_forward_pre_hook(self._map_hook))
        for i, stage in enumerate(early_stages(model) or []):
            self._handles.append(stage.register_forward_hook(lambda m, a, out, i=i: self._early_hook(i, out)))

    def _rows(self, part: str) -> Captured | None:
        rows = getattr(self._local, "rows", None)
        return rows if rows is not None and part in self._local.parts else None

    def _hook(self, module: Any, args: tuple) -> None:
        rows = self._rows("backbone")
        if rows is not None:
            rows.append(args[0].detach().float().cpu().numpy())

    def _map_hook(self, module: Any, args: tuple) -> None:
        rows = self._rows("columns")
        if rows is not None and args[0].dim() == 4:
            rows.columns.append(column_means(args[0].detach().float()).cpu().numpy())

    def _early_hook(self, i: int, out: Any) -> None:
        rows = self._rows("early")
        if rows is not None and getattr(out, "dim", lambda: 0)() == 4:
            rows.early[i].append(body_pooled(out.detach().float()).cpu().numpy())

    @contextmanager
    def capture(self, parts: Iterable[str] = PARTS) -> Iterator[Captured]:
        """``with tap.capture(parts) as rows: model(...)``: ``rows`` then holds what was caught of ``parts``
        (the pooled features always; a part not asked for costs nothing)."""
        rows = Captured()
        self._local.parts = {"backbone", *parts}
        self._local.rows = rows
        try:
            yield rows
        finally:
            self._local.rows = None

    def remove(self) -> None:
        """Take the hooks off the model."""
        for h in self._handles:
            h.remove()


_TAPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TAPS_LOCK = threading.Lock()


def tap_of(model: Any) -> FeatureTap:
    """The one tap on ``model``, hooked on first use: every Attributes on that model shares it, so hooks
    never pile up (a copy of the stage, e.g. with plates switched, does not add its own)."""
    with _TAPS_LOCK:
        tap = _TAPS.get(model)
        if tap is None:
            tap = _TAPS[model] = FeatureTap(model)
        return tap


def tap_features(rows: list, n: int) -> np.ndarray | None:
    """The captured rows as one ``(n, F)`` array; None when their count is neither ``n`` nor ``2n`` (the
    forward pass was not one row per crop, so rows cannot be matched to vehicles). ``2n``: a flip-averaged
    pass (vericar.models.embedding.flip_averaged) puts each crop and its mirror image through in turn; the
    heads read the crop as shown."""
    if not rows:
        return None
    x = np.concatenate(rows)
    return x if len(x) == n else x[0::2] if len(x) == 2 * n else None


def tapped_features(model: Any, crops: list, parts: tuple[str, ...] = PARTS) -> dict[str, np.ndarray]:
    """What the tap catches for each crop in one plain forward pass (no test-time views): the features to
    fit the heads on (benchmarks/attributes_fit.py), so they are the product's own. A part the network
    cannot give is left out."""
    import torch

    from vericar.models.embedding import forward_batches

    with tap_of(model).capture(parts) as rows, torch.inference_mode():
        forward_batches(model, crops)
    got = {p: rows.part(p, len(crops)) for p in parts}
    return {p: x for p, x in got.items() if x is not None}
