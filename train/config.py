"""Training configuration: defaults < YAML preset (--config) < command-line ``--key value``."""
from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import yaml

from vericar.core.config import TRAIN_SETTINGS_IN_TREE
from train.errors import TrainError


@dataclass
class TrainConfig:
    """Every training setting; a preset YAML sets any subset.

    The artifact's settings (backbone, preprocessing, ranking, OOD: ``TRAIN_SETTINGS_IN_TREE``) become
    its vericar.core.config.VericarConfig; the rest (data, optimisation) its meta.train_config.
    """

    backbone: str = "timm:tf_efficientnet_lite0"
    pretrained: bool = True
    embed_dim: int = 128
    data: str = "../shared/data/stanford_cars/train.csv"
    output_dir: str = "runs/vericar"
    holdout_classes: str | None = None  # open-world protocol, e.g. "label%5==4"
    val_fraction: float = 0.1
    seed: int = 0
    # images
    train_size: int = 160  # training crop (px)
    eval_size: int | None = None  # input size written into the model's preprocessing (None: backbone's)
    resize_mode: str | None = "squash"  # None: backbone's
    tta: str = "none"  # test-time views of the artifact's embeddings: none | flip (each photo averaged with its mirror)
    cache_short_side: int | None = 224  # decoded photos kept in RAM at this short side; None: full size
    scale_min: float = 0.35
    color_jitter: float = 0.2
    # optimisation
    epochs: int = 10
    batch_size: int = 64
    m_per_class: int = 4
    grad_accum: int = 1
    lr_backbone: float = 1e-3
    lr_head: float = 1e-2
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    freeze_stages: int = 0  # stem + the first N stages/blocks stay frozen (cheaper on CPU)
    feature_cache_stages: int = 0  # >0: stem + N stages frozen AND cached once; epochs train the rest (CPU path)
    cache_flip: bool = True  # also cache each photo's mirror image (augmentation in the cached path)
    feature_crop_min: float = 0.7  # random crops of the cached feature map: side fraction in [min, 1]
    feature_cache_dir: str | None = None  # keep the cached maps on disk for later runs on the same photos
    channels_last: bool = True  # oneDNN's fast convolution layout on CPU
    mixed_precision: str = "auto"  # auto: bf16 on a GPU that has it, else fp16 on GPU, no on CPU
    max_steps: int | None = None  # stop early (smoke tests)
    # losses
    loss: str = "hims_min"  # hims_min | ms | none
    metric_weight: float = 1.0
    ce_weight: float = 1.0  # cosine-softmax head over the classes (0 = off, unless coarse_ce_weight > 0)
    ce_scale: float = 16.0
    coarse_ce_weight: float = 0.0  # a cosine-softmax head per coarse level too (make and type: each adds this × its CE)
    label_smoothing: float = 0.1
    ms_alpha: float = 2.0
    ms_beta: float = 50.0
    ms_base: float = 0.5
    # evaluation / artifact
    eval_every: int = 1
    val_gallery_per_class: int | None = 10  # per-epoch validation gallery size (the final one is full)
    patience: int = 3  # early stopping on validation top-1 (epochs without improvement)
    k: int = 10
    ood_k: int = 10
    density_weight: float = 0.5  # rank neighbours by cos - w * local density: 0.5 = CSLS, 0 = plain cosine (vericar/search/density.py)
    density_k: int = 10
    ood_tpr: float = 0.95
    thumbnails: bool = True
    weights_half: bool = False
    num_workers: int = 1  # DataLoader workers for training batches, validation and gallery embedding
    decode_workers: int | None = None  # workers decoding the photos into RAM at the start (None: num_workers)
    time_limit: float | None = None  # seconds from the start: then stop at the next step and write the artifact
    fit_to_time_limit: bool = False  # after epochs 1-2, cut --epochs (and the cosine schedule) to what fits the limit
    resume: str | None = None  # a checkpoint folder, or "auto" (OUTPUT_DIR/checkpoints/last)
    push_to_hub: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        # A preset's value of the wrong kind ("lr_head: fast") would fail deep in the scheduler.
        for f in fields(self):
            value, default = getattr(self, f.name), f.default
            if value is None and default is not None and "None" not in str(f.type):
                raise TrainError(f"{f.name}: needs a value (default {default!r}); fix it in the preset or on the "
                                 "command line.")
            if value is None or default is None or isinstance(default, str):
                continue
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if (isinstance(default, bool) and not isinstance(value, bool)) or (
                    not isinstance(default, bool) and isinstance(default, (int, float)) and not number):
                raise TrainError(f"{f.name}: {value!r} is not a {type(default).__name__} (default {default!r}); "
                                 "fix it in the preset or on the command line.")
        # A negative weight would not turn a loss off but train against it (or, for the coarse
        # heads, be skipped without a word): refuse it.
        for name in ("metric_weight", "ce_weight", "coarse_ce_weight"):
            if getattr(self, name) < 0:
                raise TrainError(f"--{name.replace('_', '-')} {getattr(self, name)}: a loss weight is >= 0 (0 turns it off).")
        # NaN gives NaN embeddings found only at the end; a head that does not learn trains nothing
        # (a backbone rate of 0 is a linear probe: the backbone stays as it is).
        for name, strict in (("lr_head", True), ("lr_backbone", False), ("weight_decay", False)):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (strict and value == 0):
                raise TrainError(f"--{name.replace('_', '-')} {value}: must be a finite number "
                                 f"{'> 0' if strict else '>= 0'}.")

        if self.tta not in ("none", "flip"):
            raise TrainError(f"--tta {self.tta!r}: none or flip (each photo's embedding averaged with its mirror image's).")

    @property
    def views(self) -> tuple[str, ...]:
        """``tta`` as the config tree's ModelCfg.tta."""
        return () if self.tta == "none" else (self.tta,)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def optimisation_dict(self) -> dict[str, Any]:
        """The settings an artifact keeps in meta.train_config: all but those its config tree holds
        (backbone, preprocessing, ranking, OOD: vericar.core.config.TRAIN_SETTINGS_IN_TREE)."""
        return {k: v for k, v in asdict(self).items() if k not in TRAIN_SETTINGS_IN_TREE}


def _coerce(value: str, default: Any, name: str) -> Any:
    """Turn a command-line string into the type the field has (YAML rules: 1e-3, true, null)."""
    if isinstance(default, float):  # YAML reads "1e-3" as a string; Python does not
        try:
            return float(value)
        except ValueError:
            pass
    parsed = yaml.safe_load(value)
    if parsed is None or default is None or isinstance(parsed, type(default)):
        return parsed
    if isinstance(default, float) and isinstance(parsed, int):
        return float(parsed)
    if isinstance(default, str):
        return value
    raise TrainError(f"--{name.replace('_', '-')}: {value!r} is not a {type(default).__name__}")


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Build the config from ``--config PRESET.yaml`` and ``--key value`` overrides."""
    known = {f.name: f for f in fields(TrainConfig)}
    ap = argparse.ArgumentParser(
        prog="train/train.py",
        description="Train a vericar embedding model. Any setting of train/config.py can be given as --key value.",
    )
    ap.add_argument("--config", help="preset YAML (train/configs/*.yaml)")
    for name, f in known.items():
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, default=argparse.SUPPRESS, metavar=str(f.type).upper())
    args = vars(ap.parse_args(argv))
    values: dict[str, Any] = {}
    if args.get("config"):
        path = Path(args.pop("config"))
        if not path.is_file():
            raise TrainError(f"--config {path}: no such file; presets are in train/configs/.")
        try:
            preset = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise TrainError(f"--config {path} is not valid YAML: {e}".replace("\n", " ")) from None
        if not isinstance(preset, dict):
            raise TrainError(f"--config {path}: expected 'key: value' lines (a mapping), got a {type(preset).__name__}.")
        unknown = sorted(set(preset) - set(known))
        if unknown:
            raise TrainError(f"{path}: unknown setting(s) {unknown}; see train/config.py for the valid names.")
        for name, value in preset.items():  # YAML reads "1e-3" as text, as the command line's _coerce knows
            if isinstance(value, str) and isinstance(known[name].default, float):
                try:
                    preset[name] = float(value)
                except ValueError:
                    pass  # __post_init__ says what is wrong
        values.update(preset)
    else:
        args.pop("config", None)
    defaults = TrainConfig()
    for name, raw in args.items():
        values[name] = _coerce(raw, getattr(defaults, name), name)
    return TrainConfig(**values)
