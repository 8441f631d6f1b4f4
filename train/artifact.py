"""The last step of a training run: best weights → gallery, calibrated unknown threshold, model card.

Runs after a normal end, an early stop, a time limit or a SIGTERM / SIGINT alike, so a stopped
run still leaves an artifact that ``vericar.load("local-dir:OUT")`` opens.
"""
from __future__ import annotations

import shlex
import sys
import time
from typing import Any, Sequence

import numpy as np

from train.calibrate import calibrate
from train.card import write_card
from train.loop import embed_rows
from train.steps import Run, planned_epochs, write_settings
from vericar.artifacts.hub import push_to_hub, save_pretrained
from vericar.core.recognizer import Recognizer
from vericar.search.gallery import Gallery


def write_artifact(run: Run, argv: Sequence[str] | None, stopped: str | None) -> dict[str, Any]:
    """Embed every kept photo with the best weights, calibrate, save (main process), push if asked."""
    cfg, acc, names, state = run.cfg, run.accelerator, run.class_names, run.state
    # Training is over: drop accelerate's autocast wrapper for good, so that whatever embeds with
    # ``final`` from here on (gallery, calibration, the saved model) runs in float32.
    final = acc.unwrap_model(run.model, keep_fp32_wrapper=False)
    if run.best_weights is not None:
        final.load_state_dict(run.best_weights)
    else:
        acc.print("no validated weights yet: the artifact holds the current ones")
    g_tr, g_va = embed_rows(run, "train"), embed_rows(run, "val")
    # Threshold and confidences fitted on the validation photos as the product sees them (train/realinput.py).
    ood, calibration, cal_metrics = calibrate(final, g_tr, [names[y] for y in run.tr_y], [s.image for s in run.val_s],
                                              [names[y] for y in run.va_y], k=cfg.k, ood_k=cfg.ood_k, tpr=cfg.ood_tpr,
                                              density=run.density, g_va_clean=g_va, seed=cfg.seed)
    val_metrics = cal_metrics["validation"]
    gallery = Gallery(g_tr.shape[1])
    gallery.add(np.concatenate([g_tr, g_va]), [names[y] for y in run.tr_y + run.va_y],
                refs=[s.ref for s in run.train_s + run.val_s], thumbnails=_thumbs(run.thumbs) if cfg.thumbnails else None)
    wall = time.time() - run.t_start
    command = "python train/train.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    meta = {"metrics": cal_metrics, "command": command,
            "train_seconds": round(wall, 1), "classes": len(names), "holdout_classes": cfg.holdout_classes,
            "train_config": cfg.optimisation_dict(), "held_out_class_names": sorted({s.class_name for s in run.held}),
            "stopped": stopped, "epochs_done": state["epoch"], "steps_done": state["step"],
            "epochs_planned": planned_epochs(run),
            "processes": acc.num_processes}
    if run.main_proc:
        rec = Recognizer(final.cpu().float(), gallery, ood, k=cfg.k, density=run.density, meta=meta,
                         calibration=calibration)
        save_pretrained(rec, run.out, half=cfg.weights_half)
        write_settings(run.out, run.config_text)  # with its artifact (a failed run leaves the old pair as it was)
        write_card(run.out, rec.config, meta)
        acc.print(f"wrote {run.out} in {wall / 60:.1f} min; validation top-1 model "
                  f"{(val_metrics['top1'] or {}).get('model', float('nan')):.4f}")
        if cfg.push_to_hub:
            acc.print(push_to_hub(str(run.out), cfg.push_to_hub))
    acc.wait_for_everyone()
    return {"output_dir": str(run.out), "validation": val_metrics, "history": state["history"], "seconds": wall,
            "stopped": stopped}


def _thumbs(thumbs):
    from PIL import Image

    return [Image.fromarray(t.permute(1, 2, 0).numpy()) for t in thumbs]
