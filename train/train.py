"""Train a vericar embedding model with accelerate.

    accelerate launch train/train.py --config train/configs/offline-cpu.yaml --data ../shared/data/stanford_cars/train.csv --output-dir OUT
    python train/train.py ...            # the same, one process

Writes OUT/ as a vericar artifact (config.json, model.safetensors, gallery, README.md model card,
training_curve.png, metrics.csv, train_config.yaml) that ``vericar.load("local-dir:OUT")`` and the
app use; ``--push-to-hub ORG/NAME`` uploads it (main process only).
"""
from __future__ import annotations

import copy
import math
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make vericar + train importable

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import set_seed  # noqa: E402
from pytorch_metric_learning.samplers import MPerClassSampler  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from train.cache import TensorPhotos, decode_all  # noqa: E402
from train.calibrate import calibrate  # noqa: E402
from train.card import write_card, write_curve  # noqa: E402
from train.checkpoints import latest_checkpoint, swap_in  # noqa: E402
from train.config import TrainConfig, parse_args  # noqa: E402
from train.featcache import LateStages, cache_features, check_supported, embed_cached, train_views  # noqa: E402
from train.heads import CosineClassifier, cap_per_class, freeze_early  # noqa: E402
from vericar.data import load_source, split_holdout, stratified_split  # noqa: E402
from vericar._runtime import tune_malloc  # noqa: E402
from vericar.density import DensityCorrection  # noqa: E402
from vericar.evaluate import evaluate_embeddings  # noqa: E402
from vericar.gallery import Gallery  # noqa: E402
from vericar.hub import push_to_hub, save_pretrained  # noqa: E402
from vericar.losses import HiMSMin, MultiSimilarity, build_level_index, level_label_tensors  # noqa: E402
from vericar.model import create_model  # noqa: E402
from vericar.ood import KNNOOD  # noqa: E402
from vericar.recognizer import Recognizer  # noqa: E402
from vericar.taxonomy import Taxonomy  # noqa: E402
from vericar.transforms import eval_transform, train_transform  # noqa: E402

LEVELS = ("make", "type", "model")  # coarse → fine, for HiMS-Min


def embed(model, images, labels, cfg_pre, accelerator, bs=64, workers=0) -> np.ndarray:
    """Embed cached photos with the model's eval preprocessing; gathered across processes."""
    loader = accelerator.prepare(
        DataLoader(TensorPhotos(images, labels, eval_transform(cfg_pre)), batch_size=bs, num_workers=workers)
    )
    model.eval()
    out = []
    with torch.inference_mode():
        for x, _ in loader:
            out.append(accelerator.gather_for_metrics(model(x).float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def cached_trunk(model, cfg: TrainConfig, pre: dict, samples, imgs, n: int, progress: bool) -> torch.Tensor:
    """Early-stage maps of every photo, from ``--feature-cache-dir`` when an identical run made them."""
    path = None
    if cfg.feature_cache_dir:
        import hashlib
        import json

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


def lr_lambda(total: int, warmup: int):
    """Linear warm-up, then cosine decay to 0 (per optimizer step)."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    cfg = parse_args(argv)
    tune_malloc()  # before the first big allocation: ~1.5x faster CPU steps (vericar/_runtime.py)
    out = Path(cfg.output_dir)
    cuda = torch.cuda.is_available()
    mp = cfg.mixed_precision
    if mp == "auto":
        mp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "no"
    accelerator = Accelerator(mixed_precision=mp, gradient_accumulation_steps=cfg.grad_accum, cpu=not cuda)
    main_proc = accelerator.is_main_process
    set_seed(cfg.seed)
    t_start = time.time()
    if main_proc:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    # ---- data: open-world holdout, stratified validation slice, photos decoded once into RAM
    samples = load_source(cfg.data, "train")
    kept, held = split_holdout(samples, cfg.holdout_classes)
    train_s, val_s = stratified_split(kept, cfg.val_fraction, cfg.seed)
    class_names = sorted({s.class_name for s in kept})
    cid = {n: i for i, n in enumerate(class_names)}
    accelerator.print(f"{len(kept)} photos of {len(class_names)} classes kept ({len(held)} held out); "
                      f"{len(train_s)} train / {len(val_s)} validation")
    imgs, thumbs = decode_all(train_s + val_s, cfg.cache_short_side, num_workers=2, progress=cfg.progress and main_proc)
    tr_imgs, va_imgs = imgs[: len(train_s)], imgs[len(train_s):]
    tr_y = [cid[s.class_name] for s in train_s]
    va_y = [cid[s.class_name] for s in val_s]

    # ---- model: backbone + head; the preprocessing it will carry is fixed here, once
    model = create_model(cfg.backbone, embed_dim=cfg.embed_dim, pretrained=cfg.pretrained)
    if cfg.eval_size:
        model.pretrained_cfg["input_size"] = (3, cfg.eval_size, cfg.eval_size)
    if cfg.resize_mode:
        model.pretrained_cfg["resize_mode"] = cfg.resize_mode
        model.pretrained_cfg["crop_pct"] = 1.0 if cfg.resize_mode == "squash" else model.pretrained_cfg.get("crop_pct", 1.0)
    pre = dict(model.pretrained_cfg)
    fc = cfg.feature_cache_stages
    if fc:  # CPU path: early stages frozen and run once per photo; epochs train the rest
        check_supported(model)
    frozen = freeze_early(model, max(cfg.freeze_stages, fc))
    classifier = CosineClassifier(model.output_dim, len(class_names), cfg.ce_scale)
    taxonomy = Taxonomy.from_labels(class_names)
    level_index = build_level_index(class_names, taxonomy.level_value, LEVELS)
    density = DensityCorrection(cfg.density_weight, cfg.density_k)
    ms_kw = dict(alpha=cfg.ms_alpha, beta=cfg.ms_beta, base=cfg.ms_base)
    metric_loss = {"hims_min": lambda: HiMSMin(LEVELS, **ms_kw), "ms": lambda: MultiSimilarity(**ms_kw),
                   "none": lambda: None}[cfg.loss]()

    # m photos of each of batch/m classes; a small class set caps the batch (pml requires it)
    batch = min(cfg.batch_size, cfg.m_per_class * len(set(tr_y)))
    batch -= batch % cfg.m_per_class
    sampler = MPerClassSampler(tr_y, m=cfg.m_per_class, batch_size=batch, length_before_new_iter=len(tr_y))
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if fc:
        feats = cached_trunk(model, cfg, pre, train_s + val_s, imgs, fc, progress=cfg.progress and main_proc)
        feats_tr, feats_va = feats[: len(train_s)], feats[len(train_s):, :1]
        train_ds = list(zip(range(len(tr_y)), tr_y))  # (cache row, class id)
        net: torch.nn.Module = LateStages(model, fc)
    else:
        train_pre = dict(pre, input_size=(3, cfg.train_size, cfg.train_size))
        tf = train_transform(train_pre, scale=(cfg.scale_min, 1.0), color_jitter=cfg.color_jitter)
        train_ds = TensorPhotos(tr_imgs, tr_y, tf)
        net = model
    loader = DataLoader(train_ds, batch_size=batch, sampler=sampler, num_workers=0 if fc else cfg.num_workers,
                        drop_last=True, persistent_workers=cfg.num_workers > 0 and not fc)
    head_params = list(model.head.parameters()) + list(classifier.parameters())
    back_params = [p for p in model.backbone.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": back_params, "lr": cfg.lr_backbone}, {"params": head_params, "lr": cfg.lr_head}],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = max(1, len(loader) // cfg.grad_accum)
    total = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, int(cfg.warmup_epochs * steps_per_epoch)))
    net, classifier, optimizer, loader, scheduler = accelerator.prepare(net, classifier, optimizer, loader, scheduler)

    # ---- resume: accelerate restores model, optimizer, scheduler and RNG; our json the rest
    ckpt = out / "checkpoints" / "last"
    state = {"epoch": 0, "step": 0, "best": -1.0, "bad_epochs": 0, "history": []}
    if cfg.resume:
        rdir = Path(cfg.resume) if cfg.resume != "auto" else latest_checkpoint(ckpt)
        if not (rdir / "trainer_state.yaml").is_file():
            raise SystemExit(f"--resume {rdir}: no checkpoint there (expected trainer_state.yaml); "
                             "use --resume auto with the same --output-dir, or omit --resume.")
        accelerator.load_state(str(rdir))
        state = yaml.safe_load((rdir / "trainer_state.yaml").read_text())
        accelerator.print(f"resumed from {rdir} at epoch {state['epoch']}")
    unwrapped = accelerator.unwrap_model(model)
    best_weights = copy.deepcopy(unwrapped.state_dict())
    # Older versions kept the best weights beside the checkpoint folder, not in it.
    best_file = next((p for p in (rdir / "best.safetensors", ckpt.parent / "best.safetensors") if p.is_file()),
                     None) if cfg.resume else None
    if best_file is not None:
        from safetensors.torch import load_file
        best_weights = load_file(str(best_file))
    elif cfg.resume and state["best"] >= 0:
        accelerator.print(f"warning: {rdir} has no best.safetensors; the best weights so far are lost, "
                          "so the artifact will hold the best weights from here on (or the last ones).")

    def embed_rows(split: str, rows: list[int] | None = None) -> np.ndarray:
        imgs, ys = (tr_imgs, tr_y) if split == "train" else (va_imgs, va_y)
        rows = list(range(len(ys))) if rows is None else rows
        if fc:
            feats = feats_tr if split == "train" else feats_va
            return embed_cached(accelerator.unwrap_model(net), feats[rows]).numpy()
        return embed(model, [imgs[i] for i in rows], [ys[i] for i in rows], pre, accelerator)

    def validate() -> dict[str, Any]:
        keep = cap_per_class(tr_y, cfg.val_gallery_per_class)  # a smaller gallery keeps epochs cheap on CPU
        g = embed_rows("train", keep)
        q = embed_rows("val")
        gallery = Gallery(g.shape[1])
        gallery.add(g, [class_names[tr_y[i]] for i in keep])
        rec = Recognizer(accelerator.unwrap_model(model), gallery, KNNOOD(cfg.ood_k), k=cfg.k, density=density)
        return evaluate_embeddings(rec, q, [class_names[y] for y in va_y])

    # ---- the loop
    stop = False
    for epoch in range(state["epoch"], cfg.epochs):
        net.train()
        for m in frozen:  # frozen BatchNorms keep their ImageNet statistics
            m.eval()
        t_epoch, losses = time.time(), []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and main_proc))
        for x, y in bar:
            with accelerator.accumulate(net, classifier):
                if fc:
                    x = train_views(feats_tr, x, cfg.feature_crop_min).to(accelerator.device)
                elif cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                emb = net(x)
                loss = emb.new_zeros(())
                if cfg.ce_weight > 0:
                    loss = loss + cfg.ce_weight * F.cross_entropy(classifier(emb), y, label_smoothing=cfg.label_smoothing)
                if metric_loss is not None and cfg.metric_weight > 0:
                    if isinstance(metric_loss, HiMSMin):
                        ml, _ = metric_loss(emb.float(), level_label_tensors(y, level_index))
                    else:
                        ml = metric_loss(emb.float(), y)
                    loss = loss + cfg.metric_weight * ml
                accelerator.backward(loss)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                    state["step"] += 1
                optimizer.zero_grad()
            losses.append(loss.detach().item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if cfg.max_steps is not None and state["step"] >= cfg.max_steps:
                stop = True
                break
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
               "lr": scheduler.get_last_lr()[0], "epoch_s": time.time() - t_epoch}
        if (epoch + 1) % cfg.eval_every == 0 or stop or epoch + 1 == cfg.epochs:
            r = validate()
            row.update({f"val_top1_{k}": v for k, v in (r["top1"] or {}).items()})
            score = row.get("val_top1_model", -1.0)
            if score > state["best"]:
                state["best"], state["bad_epochs"] = score, 0
                best_weights = copy.deepcopy(accelerator.unwrap_model(model).state_dict())
            else:
                state["bad_epochs"] += 1
            accelerator.print(f"epoch {epoch + 1}: loss {row['loss']:.4f}  val top-1 model {score:.4f} "
                              f"make {row.get('val_top1_make', 0):.4f} type {row.get('val_top1_type', 0):.4f}  ({row['epoch_s']:.0f}s)")
        state["history"].append(row)
        state["epoch"] = epoch + 1
        accelerator.wait_for_everyone()
        # Into a fresh folder, then swapped in: a crash while saving leaves the previous checkpoint whole.
        nxt = ckpt.with_name("next")
        if main_proc:
            shutil.rmtree(nxt, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(nxt))
        accelerator.wait_for_everyone()  # every process's RNG file is in nxt before it moves
        if main_proc:
            from safetensors.torch import save_file

            # The best weights travel with the state they belong to (state["best"], bad_epochs).
            save_file({k: v.contiguous() for k, v in best_weights.items()}, str(nxt / "best.safetensors"))
            (nxt / "trainer_state.yaml").write_text(yaml.safe_dump(state))  # written last: marks it complete
            swap_in(nxt, ckpt)
            write_curve(state["history"], out / "training_curve.png")
        accelerator.wait_for_everyone()
        if stop or state["bad_epochs"] >= cfg.patience:
            accelerator.print("early stop" if not stop else f"stopped at max_steps={cfg.max_steps}")
            break

    # ---- the artifact: best weights, gallery of every kept training photo, calibrated OOD threshold
    final = accelerator.unwrap_model(model)
    final.load_state_dict(best_weights)
    g_tr, g_va = embed_rows("train"), embed_rows("val")
    # Threshold and confidences fitted on the validation photos as the product sees them (train/realinput.py).
    ood, calibration, cal_metrics = calibrate(final, g_tr, [class_names[y] for y in tr_y], [s.image for s in val_s],
                                              [class_names[y] for y in va_y], k=cfg.k, ood_k=cfg.ood_k, tpr=cfg.ood_tpr,
                                              density=density, g_va_clean=g_va, seed=cfg.seed)
    val_metrics = cal_metrics["validation"]
    gallery = Gallery(g_tr.shape[1])
    gallery.add(np.concatenate([g_tr, g_va]), [class_names[y] for y in tr_y + va_y],
                refs=[s.ref for s in train_s + val_s], thumbnails=_thumbs(thumbs) if cfg.thumbnails else None)
    wall = time.time() - t_start
    command = "python train/train.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    meta = {"metrics": cal_metrics, "command": command, "ood_threshold": ood.threshold,
            "train_seconds": round(wall, 1),
            "classes": len(class_names), "holdout_classes": cfg.holdout_classes, "train_config": cfg.to_dict(),
            "held_out_class_names": sorted({s.class_name for s in held})}
    if main_proc:
        rec = Recognizer(final.cpu().float(), gallery, ood, k=cfg.k, density=density, meta=meta, calibration=calibration)
        save_pretrained(rec, out, half=cfg.weights_half)
        write_card(out, cfg, meta, state["history"])
        accelerator.print(f"wrote {out} in {wall / 60:.1f} min; validation top-1 model "
                          f"{(val_metrics['top1'] or {}).get('model', float('nan')):.4f}")
        if cfg.push_to_hub:
            accelerator.print(push_to_hub(str(out), cfg.push_to_hub))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"output_dir": str(out), "validation": val_metrics, "history": state["history"], "seconds": wall}


def _thumbs(thumbs):
    from PIL import Image

    return [Image.fromarray(t.permute(1, 2, 0).numpy()) for t in thumbs]


if __name__ == "__main__":
    main()
