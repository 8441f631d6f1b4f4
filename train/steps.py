"""The set-up steps of a training run, in the order train.py's main calls them.

Each step fills in part of one ``Run``: the accelerator, the data, the model and losses, the
loader / optimizer / schedule (prepared by accelerate), and the state restored by ``--resume``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from pytorch_metric_learning.samplers import MPerClassSampler
from torch.utils.data import DataLoader

from train.cache import TensorPhotos, decode_all
from train.checkpoints import latest_checkpoint
from train.config import TrainConfig
from train.errors import TrainError
from train.featcache import LateStages, cached_trunk, check_supported
from train.heads import COARSE_CE_LEVELS, CosineClassifier, freeze_early
from train.stopping import StopSignal, ignore_sigint
from vericar.artifacts.hub import is_complete
from vericar.evaluation.data import Sample, load_source, split_holdout, stratified_split
from vericar.models.losses import HiMSMin, MultiSimilarity, build_level_index
from vericar.models.model import EmbeddingModel, create_model
from vericar.models.transforms import train_transform
from vericar.search.density import DensityCorrection
from vericar.search.taxonomy import COARSE_TO_FINE as LEVELS
from vericar.search.taxonomy import Taxonomy


@dataclass
class Run:
    """Everything one training run holds; the steps below fill it in order."""

    cfg: TrainConfig
    accelerator: Accelerator
    out: Path
    stopper: StopSignal
    t_start: float
    config_text: str = ""  # train_config.yaml: the settings as given at the start
    train_s: list[Sample] = field(default_factory=list)
    val_s: list[Sample] = field(default_factory=list)
    held: list[Sample] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    tr_imgs: list[torch.Tensor] = field(default_factory=list)
    va_imgs: list[torch.Tensor] = field(default_factory=list)
    thumbs: list[torch.Tensor] = field(default_factory=list)
    tr_y: list[int] = field(default_factory=list)
    va_y: list[int] = field(default_factory=list)
    model: EmbeddingModel | None = None
    net: Any = None  # what trains: the model, or its late stages on cached maps (prepared by accelerate)
    pre: dict = field(default_factory=dict)  # the preprocessing the artifact carries
    train_pre: dict = field(default_factory=dict)
    frozen: list = field(default_factory=list)
    feats_tr: torch.Tensor | None = None
    feats_va: torch.Tensor | None = None
    classifier: Any = None
    metric_loss: Any = None
    level_index: Any = None
    density: DensityCorrection | None = None
    loader: Any = None
    optimizer: Any = None
    scheduler: Any = None
    state: dict = field(default_factory=dict)
    steps_per_epoch: int = 1
    best_weights: dict | None = None

    @property
    def main_proc(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def progress(self) -> bool:
        return bool(self.cfg.progress and self.main_proc)


def start(cfg: TrainConfig, t_start: float) -> Run:
    """Accelerator (bf16 on a GPU that has it), seed, output folder, stop signals."""
    cuda = torch.cuda.is_available()
    mp = cfg.mixed_precision
    if mp == "auto":
        mp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "no"
    accelerator = Accelerator(mixed_precision=mp, gradient_accumulation_steps=cfg.grad_accum, cpu=not cuda,
                              dataloader_config=DataLoaderConfiguration(non_blocking=cuda))  # with pinned memory
    set_seed(cfg.seed)
    torch.backends.cudnn.benchmark = cuda  # fixed input sizes: let cuDNN pick its fastest kernels once
    out = Path(cfg.output_dir)
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    if accelerator.is_main_process:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrainError(f"--output-dir {out}: cannot create it as a folder ({e}); pass a folder path you "
                             "can write to (new, or one to resume or overwrite).") from e
        if not is_complete(out):  # an artifact's own settings are replaced only with the new artifact (artifact.py)
            write_settings(out, text)
    # Signal handlers last: train.py restores them once this returns.
    return Run(cfg, accelerator, out, StopSignal(cfg.time_limit).install(), t_start, config_text=text)


def write_settings(out: Path, text: str) -> None:
    """The settings a run started with, as ``train_config.yaml`` in its output folder."""
    (out / "train_config.yaml").write_text(text)


def load_data(run: Run) -> None:
    """Open-world holdout, stratified validation slice, photos decoded once into RAM (uint8)."""
    cfg = run.cfg
    kept, run.held = split_holdout(load_source(cfg.data, "train"), cfg.holdout_classes)
    run.train_s, run.val_s = stratified_split(kept, cfg.val_fraction, cfg.seed)
    run.class_names = sorted({s.class_name for s in kept})
    cid = {n: i for i, n in enumerate(run.class_names)}
    run.accelerator.print(f"{len(kept)} photos of {len(run.class_names)} classes kept ({len(run.held)} held out); "
                          f"{len(run.train_s)} train / {len(run.val_s)} validation")
    workers = cfg.num_workers if cfg.decode_workers is None else cfg.decode_workers
    imgs, run.thumbs = decode_all(run.train_s + run.val_s, cfg.cache_short_side, num_workers=workers,
                                  progress=run.progress)
    run.tr_imgs, run.va_imgs = imgs[: len(run.train_s)], imgs[len(run.train_s):]
    run.tr_y = [cid[s.class_name] for s in run.train_s]
    run.va_y = [cid[s.class_name] for s in run.val_s]


def build_model(run: Run) -> None:
    """Backbone + head (its preprocessing fixed here, once), frozen stages / feature cache, losses."""
    cfg = run.cfg
    model = create_model(cfg.backbone, embed_dim=cfg.embed_dim, pretrained=cfg.pretrained)
    model.preprocess = model.preprocess.override(size=cfg.eval_size, crop_mode=cfg.resize_mode)
    model.tta = cfg.views  # validation and the artifact's gallery are embedded as the served model embeds
    run.pre = model.preprocess.to_dict()
    run.train_pre = model.preprocess.override(size=cfg.train_size).to_dict()
    fc = cfg.feature_cache_stages
    if fc:  # CPU path: early stages frozen and run once per photo; epochs train the rest
        check_supported(model)
    run.frozen = freeze_early(model, max(cfg.freeze_stages, fc))
    taxonomy = Taxonomy.from_labels(run.class_names)
    run.level_index = build_level_index(run.class_names, taxonomy.level_value, LEVELS)
    coarse = {lvl: max(run.level_index[lvl]) + 1 for lvl in COARSE_CE_LEVELS} if cfg.coarse_ce_weight > 0 else None
    run.classifier = CosineClassifier(model.output_dim, len(run.class_names), cfg.ce_scale, coarse=coarse)
    run.density = DensityCorrection(cfg.density_weight, cfg.density_k)
    ms_kw = dict(alpha=cfg.ms_alpha, beta=cfg.ms_beta, base=cfg.ms_base)
    run.metric_loss = {"hims_min": lambda: HiMSMin(LEVELS, **ms_kw), "ms": lambda: MultiSimilarity(**ms_kw),
                       "none": lambda: None}[cfg.loss]()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    run.model, run.net = model, model
    if fc:
        feats = cached_trunk(model, cfg, run.pre, run.train_s + run.val_s, run.tr_imgs + run.va_imgs, fc,
                             progress=run.progress)
        # Validation photos are only embedded, never trained on: their mirror maps only serve --tta flip.
        run.feats_tr, run.feats_va = feats[: len(run.train_s)], feats[len(run.train_s):, :2 if cfg.views else 1]
        run.net = LateStages(model, fc)


class WarmupCosine:
    """Linear warm-up, then cosine decay to 0 (per optimizer step). A callable object, not a
    function, so LambdaLR's state_dict keeps ``total`` (a shortened schedule survives a resume)."""

    def __init__(self, total: int, warmup: int) -> None:
        self.total, self.warmup = total, warmup

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))))


def lr_lambda(total: int, warmup: int) -> WarmupCosine:
    """Linear warm-up, then cosine decay to 0 (per optimizer step)."""
    return WarmupCosine(total, warmup)


def prepare_training(run: Run) -> None:
    """m-per-class batches (uint8, pinned on a GPU), AdamW, warm-up + cosine; accelerator.prepare."""
    cfg, fc = run.cfg, run.cfg.feature_cache_stages
    # m photos of each of batch/m classes; a small class set caps the batch (pml requires it)
    batch = min(cfg.batch_size, cfg.m_per_class * len(set(run.tr_y)))
    batch -= batch % cfg.m_per_class
    sampler = MPerClassSampler(run.tr_y, m=cfg.m_per_class, batch_size=batch, length_before_new_iter=len(run.tr_y))
    if fc:
        train_ds: Any = list(zip(range(len(run.tr_y)), run.tr_y))  # (cache row, class id)
    else:  # uint8 crops: normalised on the device (normalize_batch), a quarter of float32's bytes
        # colour jitter happens on the device, per batch (train/augment.py): it was most of a worker's time
        tf = train_transform(run.train_pre, scale=(cfg.scale_min, 1.0), color_jitter=0, normalize=False)
        train_ds = TensorPhotos(run.tr_imgs, run.tr_y, tf)
    workers = 0 if fc else cfg.num_workers
    loader = DataLoader(train_ds, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0, pin_memory=torch.cuda.is_available() and not fc,
                        worker_init_fn=ignore_sigint if workers else None)
    head_params = list(run.model.head.parameters()) + list(run.classifier.parameters())
    back_params = [p for p in run.model.backbone.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": back_params, "lr": cfg.lr_backbone}, {"params": head_params, "lr": cfg.lr_head}],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = max(1, len(loader) // cfg.grad_accum)
    total = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, int(cfg.warmup_epochs * steps_per_epoch)))
    run.steps_per_epoch = steps_per_epoch
    run.net, run.classifier, run.optimizer, run.loader, run.scheduler = run.accelerator.prepare(
        run.net, run.classifier, optimizer, loader, scheduler)


def resume(run: Run) -> None:
    """``--resume``: accelerate restores model, optimizer, scheduler and RNG; our yaml + best weights the rest."""
    cfg, acc = run.cfg, run.accelerator
    ckpt = run.out / "checkpoints" / "last"
    run.state = {"epoch": 0, "step": 0, "best": -1.0, "bad_epochs": 0, "history": []}
    run.best_weights = None  # None: nothing validated yet (the artifact then takes the current weights)
    if not cfg.resume:
        return
    rdir = Path(cfg.resume) if cfg.resume != "auto" else latest_checkpoint(ckpt)
    if not (rdir / "trainer_state.yaml").is_file():
        raise TrainError(f"--resume {rdir}: no checkpoint there (expected trainer_state.yaml); "
                         "use --resume auto with the same --output-dir, or omit --resume.")
    try:
        acc.load_state(str(rdir))
    except (RuntimeError, ValueError, KeyError) as e:  # weights or optimizer groups of another shape
        raise TrainError(
            f"--resume {rdir}: the checkpoint does not fit this run's model and heads ({type(e).__name__}: "
            f"{str(e)[:200]}). Resume with the settings that wrote it (--backbone, --embed-dim, "
            "--coarse-ce-weight, ...), or start over in a new --output-dir."
        ) from e
    run.state = yaml.safe_load((rdir / "trainer_state.yaml").read_text())
    acc.print(f"resumed from {rdir} at epoch {run.state['epoch']}")
    # Older versions kept the best weights beside the checkpoint folder, not in it.
    best_file = next((p for p in (rdir / "best.safetensors", ckpt.parent / "best.safetensors") if p.is_file()), None)
    if best_file is not None:
        from safetensors.torch import load_file
        run.best_weights = load_file(str(best_file))
    elif run.state["best"] >= 0:
        acc.print(f"warning: {rdir} has no best.safetensors; the best weights so far are lost, "
                  "so the artifact will hold the best weights from here on (or the last ones).")


def planned_epochs(run: Run) -> int:
    """``--epochs``, or fewer once ``--fit-to-time-limit`` shortened the run (kept across a resume,
    like the compressed schedule it goes with)."""
    return min(run.cfg.epochs, run.state.get("epochs_fit") or run.cfg.epochs)


def current_weights(run: Run) -> dict:
    """A copy of the embedding model's weights now."""
    return copy.deepcopy(run.accelerator.unwrap_model(run.model).state_dict())
