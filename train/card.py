"""Model card (README.md) and training curve of a training run."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

from vericar.core.config import VericarConfig


def write_curve(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Loss and validation top-1 per epoch → PNG; the same rows → metrics.csv beside it."""
    if not history:
        return
    keys = sorted({k for row in history for k in row}, key=lambda k: (k != "epoch", k))
    with open(path.with_name("metrics.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(ep, [r["loss"] for r in history], "o-", color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss", color="tab:blue")
    ax2 = ax.twinx()
    for key, style in (("val_top1_model", "s-"), ("val_top1_make", "^--"), ("val_top1_type", "v:")):
        pts = [(r["epoch"], r[key]) for r in history if key in r]
        if pts:
            ax2.plot(*zip(*pts), style, label=key.replace("val_top1_", "val top-1 "))
    ax2.set_ylabel("validation top-1")
    ax2.set_ylim(0, 1)
    fig.legend(loc="lower center", ncol=4, fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def _stopped(meta: dict[str, Any]) -> str:
    why = meta.get("stopped")
    if not why or why == "early stop":
        return " Early stopping on validation top-1." if why else ""
    return (f" Training was stopped ({why}) after {meta.get('epochs_done', '?')} whole epoch(s), "
            f"{meta.get('steps_done', '?')} steps; the weights are the best validated so far (or the last, if none was).")


def _pct(x: Any) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def _calibration_lines(meta: dict[str, Any]) -> list[str]:
    """The confidence calibration's fit (train/calibrate.py), if the artifact has one."""
    rep = (meta.get("metrics") or {}).get("calibration")
    if not rep:
        return []
    pool = rep.get("pool") or {}
    members = ", ".join(f"`{m['artifact']}`: seed {m['seed']}, {m['n']} photos, validation top-1 "
                        f"{_pct(m['validation_top1'])}" for m in pool.get("members", []))
    n_other = len(pool.get("members", []))
    pooled = (f", this training's own and those of {n_other} other training{'s' if n_other > 1 else ''} of the "
              "same command line "
              f"with another seed (train/crossfit.py; each is the training command under Reproduce with "
              f"`--seed N --output-dir NAME`: {members}); the unknown threshold above comes from this "
              "training's own views only" if members else "; the unknown threshold above comes from the same views")
    lines = ["## Confidence calibration (validation photos as the product sees them: train/realinput.py)", "",
             f"Fitted on {rep['n']} validation photos (margin, lower resolution, 224x224 squash, JPEG){pooled}. "
             "Partial answers: make / type are still named "
             "for an unknown model when their confidence clears the lowest threshold at which at most "
             f"{100 * rep['max_wrong']:.0f}% of these photos, each with its own class taken out of the gallery, "
             "got a wrong one.", "",
             "| level | temperature | logit of unvoted values | nearness scale | accuracy | ECE vote share → "
             "calibrated (these photos) | partial-answer threshold |", "|---|---|---|---|---|---|---|"]
    for lvl, r in rep["levels"].items():
        thr = r.get("partial_threshold")
        lines.append(f"| {lvl} | {r['temperature']:.4f} | {r.get('bias', 0.0):.2f} | {r.get('scale', 0.0):.2f} | "
                     f"{_pct(r['accuracy'])} | "
                     f"{_pct(r['ece_vote_share'])} → "
                     f"{_pct(r['ece_calibrated'])} | {'—' if thr is None else format(thr, '.3f')} |")
    return lines + [""] + _pool_lines(pool)


def _pool_lines(pool: dict[str, Any]) -> list[str]:
    """Each training's ECE with a fit on its own photos against one on the other trainings' only."""
    loo = pool.get("leave_one_out_ece")
    if not loo:
        return []
    seeds = [m["seed"] for m in pool["members"]]
    lines = ["How a fit on other trainings' photos transfers (ECE of each training's photos: fitted on them "
             "→ fitted on the other trainings' only; the first is this training's):", "",
             "| level | " + " | ".join(["this training"] + [f"seed {s}" for s in seeds]) + " |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for lvl, rows in loo.items():
        lines.append(f"| {lvl} | " + " | ".join(f"{_pct(r['ece_own_fit'])} → {_pct(r['ece_others_fit'])}"
                                                 for r in rows) + " |")
    return lines + [""]


def _heads(tc: dict[str, Any]) -> str:
    """" + cosine-softmax (...)": which proxies the classification head had, at which loss weight."""
    ce, coarse = float(tc.get("ce_weight", 1.0) or 0.0), float(tc.get("coarse_ce_weight") or 0.0)
    parts = ([f"a proxy per model at weight {ce:g}"] if ce else []) + (
        [f"{'' if ce else 'a proxy '}per make and body type at weight {coarse:g}"] if coarse else [])
    return f" + cosine-softmax ({', '.join(parts)})" if parts else ""


def write_card(out: Path, config: VericarConfig, meta: dict[str, Any]) -> None:
    """README.md of the artifact: what it is, how well it does, how to reproduce it. Every setting is
    read from the artifact itself (its config tree, and meta.train_config for data and optimisation)."""
    v, tc, density, ood = meta["metrics"]["validation"], meta.get("train_config") or {}, config.ranking.density, config.ood
    top1 = v.get("top1") or {}
    holdout = tc.get("holdout_classes")
    tpr = "" if ood.tpr is None else f" ({100 * ood.tpr:.0f}% TPR)"
    lines = [
        "---", "library_name: vericar", "tags: [vehicle-recognition, metric-learning, stanford-cars]", "---",
        "# vericar embedding model", "",
        f"Backbone `{config.model.spec}` + {config.model.embed_dim}-d projection head, trained with "
        f"{tc.get('loss', '?')}{_heads(tc)} on {meta['classes']} classes from `{tc.get('data', '?')}`"
        + (f" (classes `{holdout}` held out)." if holdout else "."), "",
        (f"Gallery neighbours are ranked by `cos - {density.weight:g} * density` (CSLS, density = mean cosine to "
         f"the {density.k} nearest gallery entries); the unknown threshold is calibrated for that ranking."
         if density.weight else "Gallery neighbours are ranked by plain cosine similarity."), "",
        "## Validation (stratified slice of the training CSV, k-NN on the other training photos)", "",
        f"| top-1 model | top-1 make | top-1 type | top-5 model | OOD threshold{tpr} |", "|---|---|---|---|---|",
        f"| {_pct(top1.get('model'))} | {_pct(top1.get('make'))} | {_pct(top1.get('type'))} | "
        f"{_pct((v.get('top5') or {}).get('model'))} | "
        f"{'—' if ood.threshold is None else format(ood.threshold, '.4f')} |", "",
        *_calibration_lines(meta),
        f"Training wall time: {meta['train_seconds'] / 60:.1f} min.", "",
        "## Reproduce", "", "```", meta["command"], "```", "",
        "![training curve](training_curve.png)", "",
        *([_stopped(meta).strip(), ""] if _stopped(meta) else []),
        "## Settings", "", "```json",
        json.dumps({**{key: val for key, val in config.to_dict().items() if key not in ("calibration", "source")},
                    "train_config": tc}, indent=1), "```",
    ]
    extra = meta.get("card_extra")
    if extra:
        lines += ["", extra]
    (out / "README.md").write_text("\n".join(lines) + "\n")
