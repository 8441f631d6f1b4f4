"""The per-epoch steps of a training run: train until the epoch ends or a stop, validate, checkpoint.

Embedding for validation, the gallery and the unknown threshold goes through ``embed_photos``:
``vericar.models.embedding.embed`` (the path the recogniser and evaluation take too) with DataLoader
workers, uint8 batches normalised on the accelerator, and the model's plain float32 forward (no
autocast), so the threshold calibrated here applies to the scores a user's photos get.
"""
from __future__ import annotations

import shutil
import time
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm.auto import tqdm

from train.augment import color_jitter
from train.card import write_curve
from train.checkpoints import swap_in
from train.featcache import embed_cached, train_views
from train.heads import COARSE_CE_LEVELS, cap_per_class
from train.stopping import ignore_sigint
from train.steps import Run, current_weights, planned_epochs
from vericar.core.recognizer import Recognizer
from vericar.evaluate import evaluate_embeddings
from vericar.models.embedding import embed
from vericar.models.losses import HiMSMin, level_label_tensors
from vericar.models.transforms import normalize_batch
from vericar.search.gallery import Gallery
from vericar.search.ood import KNNOOD


def plain_forward(module: torch.nn.Module):
    """The module's own forward, without the autocast wrapper accelerate puts on prepared models."""
    return type(module).forward.__get__(module)


def embed_photos(run: Run, images: Sequence[torch.Tensor]) -> np.ndarray:
    """Embed cached photos with the eval preprocessing, float32; sharded and gathered across processes."""
    cfg, acc = run.cfg, run.accelerator
    model = acc.unwrap_model(run.model)
    return embed(model, images, preprocess=run.pre, batch_size=max(64, cfg.batch_size), num_workers=cfg.num_workers,
                 channels_last=cfg.channels_last, forward=plain_forward(model), accelerator=acc,
                 worker_init_fn=ignore_sigint)


def embed_rows(run: Run, split: str, rows: list[int] | None = None) -> np.ndarray:
    """Embeddings of training (``split="train"``) or validation photos (all, or ``rows``)."""
    imgs, ys = (run.tr_imgs, run.tr_y) if split == "train" else (run.va_imgs, run.va_y)
    rows = list(range(len(ys))) if rows is None else rows
    if run.cfg.feature_cache_stages:
        feats = run.feats_tr if split == "train" else run.feats_va
        late = run.accelerator.unwrap_model(run.net)
        return embed_cached(late, feats[rows], views=run.cfg.views).numpy()
    return embed_photos(run, [imgs[i] for i in rows])


def validate(run: Run) -> dict[str, Any]:
    """Validation slice against a gallery of (at most ``val_gallery_per_class`` per class) training photos."""
    cfg, names = run.cfg, run.class_names
    keep = cap_per_class(run.tr_y, cfg.val_gallery_per_class)  # a smaller gallery keeps epochs cheap
    g, q = embed_rows(run, "train", keep), embed_rows(run, "val")
    gallery = Gallery(g.shape[1])
    gallery.add(g, [names[run.tr_y[i]] for i in keep])
    rec = Recognizer(run.accelerator.unwrap_model(run.model), gallery, KNNOOD(cfg.ood_k), k=cfg.k, density=run.density)
    return evaluate_embeddings(rec, q, [names[y] for y in run.va_y])


def _loss(run: Run, emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    cfg, metric = run.cfg, run.metric_loss
    loss = emb.new_zeros(())
    if cfg.ce_weight > 0 or cfg.coarse_ce_weight > 0:
        logits = run.classifier(emb)
        # Kept when ce_weight is 0: a DDP-wrapped head wants a gradient (0) for every weight it returned.
        loss = loss + cfg.ce_weight * F.cross_entropy(logits["model"], y, label_smoothing=cfg.label_smoothing)
        if cfg.coarse_ce_weight > 0:
            levels = level_label_tensors(y, run.level_index)
            for lvl in COARSE_CE_LEVELS:
                loss = loss + cfg.coarse_ce_weight * F.cross_entropy(logits[lvl], levels[lvl],
                                                                     label_smoothing=cfg.label_smoothing)
    if metric is not None and cfg.metric_weight > 0:
        if isinstance(metric, HiMSMin):
            ml, _ = metric(emb.float(), level_label_tensors(y, run.level_index))
        else:
            ml = metric(emb.float(), y)
        loss = loss + cfg.metric_weight * ml
    return loss


def train_epoch(run: Run, epoch: int) -> tuple[dict[str, Any], str | None]:
    """One pass over the loader; returns the epoch's row and why it stopped early (None: it did not)."""
    cfg, acc, state = run.cfg, run.accelerator, run.state
    run.net.train()
    for m in run.frozen:  # frozen BatchNorms keep their ImageNet statistics
        m.eval()
    t_epoch, losses, stop = time.time(), [], None
    bar = tqdm(run.loader, desc=f"epoch {epoch + 1}/{planned_epochs(run)}", disable=not run.progress)
    for x, y in bar:
        with acc.accumulate(run.net, run.classifier):
            if cfg.feature_cache_stages:
                x = train_views(run.feats_tr, x, cfg.feature_crop_min).to(acc.device)
            else:  # uint8 on the device already (accelerate moved it, from pinned memory on a GPU)
                x = normalize_batch(color_jitter(x.float() / 255.0, cfg.color_jitter), run.train_pre)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
            loss = _loss(run, run.net(x), y)
            acc.backward(loss)
            run.optimizer.step()
            if acc.sync_gradients:
                run.scheduler.step()
                state["step"] += 1
            run.optimizer.zero_grad()
        losses.append(loss.detach().item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{run.scheduler.get_last_lr()[0]:.2e}")
        if cfg.max_steps is not None and state["step"] >= cfg.max_steps:
            stop = f"max_steps={cfg.max_steps}"
        if run.stopper.should_stop(acc):
            stop = run.stopper.reason
        if stop:
            break
    row = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
           "lr": run.scheduler.get_last_lr()[0], "epoch_s": time.time() - t_epoch}
    return row, stop


def end_epoch(run: Run, epoch: int, row: dict[str, Any], stop: str | None) -> bool:
    """Validate, keep the best weights, checkpoint; True when training should end here.

    A signal ends the epoch unvalidated and unfinished (a resume redoes it): the grace period
    before a hard kill is short. A time limit or max_steps counts it as done and validates it.
    """
    cfg, state, acc = run.cfg, run.state, run.accelerator
    by_signal = stop is not None and run.stopper.by_signal
    if not by_signal and ((epoch + 1) % cfg.eval_every == 0 or stop or epoch + 1 == planned_epochs(run)):
        r = validate(run)
        row.update({f"val_top1_{k}": v for k, v in (r["top1"] or {}).items()})
        score = row.get("val_top1_model", -1.0)
        if score > state["best"]:
            state["best"], state["bad_epochs"] = score, 0
            run.best_weights = current_weights(run)
        else:
            state["bad_epochs"] += 1
        acc.print(f"epoch {epoch + 1}: loss {row['loss']:.4f}  val top-1 model {score:.4f} "
                  f"make {row.get('val_top1_make', 0):.4f} type {row.get('val_top1_type', 0):.4f}  ({row['epoch_s']:.0f}s)")
    if not by_signal:
        state["history"].append(row)
        state["epoch"] = epoch + 1
    save_checkpoint(run)
    if stop:
        acc.print(f"stopped: {stop}")
        return True
    if state["bad_epochs"] >= cfg.patience:
        acc.print("early stop")
        return True
    return False


def save_checkpoint(run: Run) -> None:
    """Into a fresh folder, then swapped in: a crash while saving leaves the previous checkpoint whole."""
    acc, ckpt = run.accelerator, run.out / "checkpoints" / "last"
    acc.wait_for_everyone()
    nxt = ckpt.with_name("next")
    if run.main_proc:
        shutil.rmtree(nxt, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(nxt))
    acc.wait_for_everyone()  # every process's RNG file is in nxt before it moves
    if run.main_proc:
        from safetensors.torch import save_file

        # The best weights travel with the state they belong to (state["best"], bad_epochs).
        best = run.best_weights if run.best_weights is not None else current_weights(run)
        save_file({k: v.contiguous() for k, v in best.items()}, str(nxt / "best.safetensors"))
        (nxt / "trainer_state.yaml").write_text(yaml.safe_dump(run.state))  # written last: marks it complete
        swap_in(nxt, ckpt)
        write_curve(run.state["history"], run.out / "training_curve.png")
    acc.wait_for_everyone()


def fit_to_time_limit(run: Run, epoch: int, epoch_cost: float) -> None:
    """Shorten the run so its last epoch ends before ``--time-limit``, with the cosine schedule
    compressed to match: a run cut by the limit would stop at a high learning rate instead.

    ``epoch_cost``: seconds the epoch just done took, validation and checkpoint included. The main
    process decides; every process gets its decision (they must run the same epochs).
    """
    from accelerate.utils import broadcast_object_list

    state, deadline = run.state, run.stopper.deadline
    if deadline is None or epoch_cost <= 0:
        return
    fits = epoch + 1 + int(0.95 * (deadline - time.monotonic()) / epoch_cost)
    planned = [min(run.cfg.epochs, max(epoch + 1, fits))]  # the 2nd look may also give back epochs
    broadcast_object_list(planned)
    if planned[0] == planned_epochs(run):
        return
    state["epochs_fit"] = planned[0]
    total = planned[0] * run.steps_per_epoch
    sched = getattr(run.scheduler, "scheduler", run.scheduler)  # accelerate's wrapper around LambdaLR
    for f in sched.lr_lambdas:
        f.total = total if run.cfg.max_steps is None else min(run.cfg.max_steps, total)
    run.accelerator.print(f"--time-limit: {planned[0]} epochs fit ({epoch_cost:.1f} s each); the schedule ends there")
