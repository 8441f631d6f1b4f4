"""One way through the network: photos, files or tensors in, float32 embeddings out.

Every caller that runs a model over many inputs comes through here: the recogniser (a user's
photos), evaluation (query and gallery files), training (validation and gallery photos decoded in
RAM, sharded across processes), the feature cache (a backbone's early stages) and calibration.
One place therefore decides the preprocessing arithmetic: the model's eval transform up to uint8
(decoded in DataLoader workers when asked), batches normalised on the model's device by
``normalize_batch`` (the same float32 arithmetic as torchvision's ``ToDtype`` + ``Normalize``),
the forward pass under ``torch.inference_mode`` in float32 unless ``precision`` asks for autocast,
and float32 out. It is also the one place that applies a model's test-time views (``model.tta``):
with "flip", each photo and its mirror image go through the network in one batch and their
embeddings are averaged (then L2-normalised), for the gallery, queries, enrolment, calibration,
evaluation and training's gallery alike.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vericar.core.config import check_tta
from vericar.core.errors import ArtifactError, ImageError, VericarError, check_positive_int
from vericar.models.transforms import eval_transform, normalize_batch
from vericar.vision.images import open_image

__all__ = ["PRECISIONS", "average_views", "check_views", "embed", "flip_averaged", "forward_batches"]

PRECISIONS = {"float32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class _Inputs(Dataset):
    """PIL images, file paths, samples (``.image``) or uint8 CHW tensors -> uint8 model-size tensors."""

    def __init__(self, items: Sequence[Any], transform: Callable) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.items[i]
        item = getattr(item, "image", item)  # a labelled Sample: its photo
        if isinstance(item, torch.Tensor):
            return self.transform(item)
        # A PIL image is used as given (no EXIF turn: callers pass photos already opened / cropped).
        img = item.convert("RGB") if isinstance(item, Image.Image) else open_image(item)
        return self.transform(img)


def _check_inputs(items: Sequence[Any]) -> None:
    """Refuse unusable inputs before any worker starts, with the index of the first bad one."""
    for i, item in enumerate(items):
        item = getattr(item, "image", item)
        if isinstance(item, (Image.Image, str, Path, bytes)):
            continue
        if isinstance(item, torch.Tensor) and item.dtype == torch.uint8 and item.ndim == 3:
            continue
        raise ImageError(
            f"inputs[{i}] is a {type(item).__name__}, not a photo; pass PIL images, file paths, samples or "
            "uint8 (3, H, W) tensors (open other sources with vericar.vision.images.open_image)."
        )


def _batches(inputs: Any, preprocess: dict | None, *, batch_size: int, num_workers: int, pin: bool,
             worker_init_fn: Callable | None, accelerator: Any) -> Iterable[torch.Tensor]:
    if preprocess is None:  # model-ready tensors (e.g. cached feature maps): sliced as they are
        if not isinstance(inputs, torch.Tensor):
            raise VericarError("preprocess=None needs one tensor (N, ...) of model-ready inputs.")
        return [inputs[i:i + batch_size] for i in range(0, len(inputs), batch_size)]
    _check_inputs(inputs)
    loader = DataLoader(_Inputs(inputs, eval_transform(preprocess, normalize=False)), batch_size=batch_size,
                        num_workers=num_workers, pin_memory=pin, worker_init_fn=worker_init_fn if num_workers else None)
    return accelerator.prepare(loader) if accelerator is not None else loader


def forward_batches(
    model: nn.Module,
    inputs: Any,
    *,
    preprocess: dict | None | str = "model",
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    precision: str = "float32",
    channels_last: bool = False,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    out_dtype: torch.dtype = torch.float32,
    accelerator: Any = None,
    worker_init_fn: Callable | None = None,
    progress: bool = False,
    desc: str = "embedding",
) -> torch.Tensor:
    """Run ``forward`` (default: ``model``) over ``inputs`` in batches -> one CPU tensor of ``out_dtype``.

    ``preprocess``: the eval preprocessing (a ``pretrained_cfg``); ``"model"``: ``model.pretrained_cfg``;
    ``None``: ``inputs`` is one tensor of model-ready inputs. ``accelerator`` (accelerate): the
    loader is sharded across its processes and the outputs gathered, in input order. The model is
    put in eval mode (unless it already is: its submodules are then left as they are) and given back in
    the mode it had.
    """
    check_positive_int(batch_size, "batch_size", VericarError)
    if precision not in PRECISIONS:
        raise VericarError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}.")
    if isinstance(preprocess, str):
        preprocess = model.pretrained_cfg
    if accelerator is not None:
        device = accelerator.device
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batches = _batches(inputs, preprocess, batch_size=batch_size, num_workers=num_workers,
                       pin=device.type == "cuda", worker_init_fn=worker_init_fn, accelerator=accelerator)
    run = forward or model
    dtype = PRECISIONS[precision]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    from tqdm.auto import tqdm

    was_training = model.training
    if was_training:  # eval() walks every submodule: an eval model (the served one) is left as it is, per request
        model.eval()
    out = []
    try:
        with torch.inference_mode(), autocast:
            for x in tqdm(batches, desc=desc, unit="batch", disable=not progress, file=sys.stderr):
                x = x.to(device, non_blocking=True)
                x = x.float() if preprocess is None else normalize_batch(x, preprocess)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = run(x).to(out_dtype)
                if accelerator is not None:
                    y = accelerator.gather_for_metrics(y)
                out.append(y.cpu())
    finally:
        if was_training:
            model.train()
    return torch.cat(out) if out else torch.zeros((0, getattr(model, "output_dim", 0)), dtype=out_dtype)


def average_views(y: torch.Tensor, n_views: int) -> torch.Tensor:
    """Outputs ``(N * n_views, D)``, each photo's views in consecutive rows -> ``(N, D)``: their mean, L2-normalised."""
    return F.normalize(y.view(-1, n_views, y.shape[-1]).sum(dim=1), dim=-1)


def flip_averaged(run: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``run`` on a batch and its mirror images in ONE forward pass; each pair's mean, L2-normalised."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        return average_views(run(torch.stack([x, torch.flip(x, dims=[3])], dim=1).flatten(0, 1)), 2)

    return forward


def embed(model: nn.Module, inputs: Any, *, tta: Sequence[str] | None = None, **kw: Any) -> np.ndarray:
    """Embeddings ``(N, output_dim)`` float32 of photos / files / samples / uint8 tensors, in input order.

    ``tta``: test-time views to average over (default: the model's own ``model.tta``; ``()`` = none). They
    apply to ``forward`` too when one is given (e.g. the model without a wrapper): pass ``tta=()`` with a
    forward that is not the embedding (backbone features).
    Keywords as :func:`forward_batches` (batch_size, num_workers, device, precision, progress, ...).
    """
    views = check_tta(getattr(model, "tta", ()) if tta is None else tta)
    if "flip" in views:
        kw["forward"] = flip_averaged(kw.get("forward") or model)
    return forward_batches(model, inputs, out_dtype=torch.float32, **kw).numpy()


_VIEW_WORDS = {(): "plain (one view per photo)", ("flip",): "flip-averaged (each photo with its mirror image)"}


def check_views(made: Sequence[str] | None, asked: Sequence[str]) -> None:
    """Refuse queries embedded with views ``asked`` against a gallery made with ``made`` (None: not recorded):
    flip-averaged against plain, or the reverse, would put every similarity off a little, a silent loss."""
    if made is None or tuple(made) == tuple(asked):
        return
    raise ArtifactError(
        f"the gallery's embeddings are {_VIEW_WORDS.get(tuple(made), made)} but the model embeds queries "
        f"{_VIEW_WORDS.get(tuple(asked), asked)}; they would not compare fairly. Set model.tta to {list(made)}, or "
        f"re-embed the gallery with the model's setting (python train/calibrate.py --artifact DIR --tta "
        f"{'flip' if asked else 'none'} for a trained artifact; python -m vericar.evaluate --gallery CSV builds one).")
