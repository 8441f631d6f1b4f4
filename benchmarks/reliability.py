"""Do the confidences mean what they say? Does the unknown flag fire at its stated rate? How often
is a partial answer ("probably a Jeep (make 70%) · SUV (96%) · model not in the gallery") right?

    python benchmarks/reliability.py --model default --queries $D/dev.csv --png benchmarks/reliability.png
    python benchmarks/reliability.py --model local-dir:OUT --queries $D/dev.csv     # open-world run

Queries of classes the gallery knows ("known"): per level (model, make, type, year) accuracy of
the answer, mean confidence, expected calibration error (ECE, 10 equal-width bins) of the
artifact's calibrated confidences and of the plain vote shares (beside it the ECE a perfectly
calibrated predictor with the same confidences shows on this many photos: the noise), and the share of photos shown a
wrong answer with confidence >= 0.8 (model level: shown = not flagged unknown); the share
flagged unknown (false-unknown rate, against the nominal 1 - TPR); where the make and type
shown are right. Queries of classes the gallery does not know, whose make it knows: make and type
given and right / given and wrong / withheld, as /identify answers them. With unknown queries
also top-1 and OOD AUROC / FPR95 (``vericar.evaluate``). The PNG is the reliability diagram.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vericar.artifacts.hub import load  # noqa: E402
from vericar.core.recognizer import Recognizer  # noqa: E402
from vericar.evaluate import evaluate_embeddings  # noqa: E402
from vericar.evaluation.data import load_source  # noqa: E402
from vericar.models.embed_cache import cached_embeddings  # noqa: E402
from vericar.search.calibration import Calibration  # noqa: E402
from vericar.search.calibration_fit import expected_calibration_error, reliability  # noqa: E402
from vericar.search.taxonomy import LEVELS, Taxonomy  # noqa: E402


def level_figures(preds, truth, tax: Taxonomy) -> dict:
    """Per level on known queries: accuracy, mean confidence, ECE, wrong shown at >= 0.8."""
    out = {}
    for lvl in LEVELS:
        ans = [p.label if lvl == "model" else getattr(p, lvl) for p in preds]
        ok = np.array([a == tax.level_value(t, lvl) for a, t in zip(ans, truth)])
        conf = np.array([p.confidence.get(lvl, 0.0) for p in preds])
        shown = np.array([p.is_known(lvl) for p in preds])
        out[lvl] = {"accuracy": float(ok.mean()), "mean_confidence": float(conf.mean()),
                    "ece": expected_calibration_error(conf, ok),
                    "wrong_shown_conf_ge_0.8": float((shown & ~ok & (conf >= 0.8)).mean()),
                    "shown": float(shown.mean()), "shown_right": float((shown & ok).mean()),
                    "precision_shown": float(ok[shown].mean()) if shown.any() else None,
                    "bins": reliability(conf, ok), "ece_noise": ece_noise(conf)}
    return out


def ece_noise(conf: np.ndarray, draws: int = 1000, seed: int = 0) -> dict:
    """The ECE a perfectly calibrated predictor with these confidences shows on this many photos
    (outcomes drawn as Bernoulli(conf)): mean and 95th percentile. An ECE inside it is noise."""
    rng = np.random.default_rng(seed)
    e = np.array([expected_calibration_error(conf, rng.random(len(conf)) < conf) for _ in range(draws)])
    return {"mean": float(e.mean()), "p95": float(np.quantile(e, 0.95))}


def partial_figures(preds, truth, tax: Taxonomy, known_makes: set) -> dict:
    """Make / type of unknown-class queries whose make the gallery knows: given right / wrong / withheld."""
    keep = [i for i, t in enumerate(truth) if tax.level_value(t, "make") in known_makes]
    out = {"n": len(keep), "flagged_unknown": float(np.mean([preds[i].unknown for i in keep])) if keep else None}
    flagged = np.array([preds[i].unknown for i in keep], dtype=bool)
    for lvl in ("make", "type"):
        given = np.array([preds[i].is_known(lvl) for i in keep], dtype=bool)
        right = np.array([getattr(preds[i], lvl) == tax.level_value(truth[i], lvl) for i in keep], dtype=bool)
        out[lvl] = {"given_right": float((given & right).mean()), "given_wrong": float((given & ~right).mean()),
                    "withheld": float((~given).mean()),
                    # does "make 70%" mean 70% on these photos too? (the confidence shown, where a value is shown)
                    "ece_given": expected_calibration_error(
                        np.array([preds[i].confidence.get(lvl, 0.0) for i in keep])[given], right[given])
                    if given.any() else None,
                    # the partial answers alone: photos the unknown check caught
                    "flagged_given_right": float((given & right)[flagged].mean()) if flagged.any() else None,
                    "flagged_given_wrong": float((given & ~right)[flagged].mean()) if flagged.any() else None}
    return out


def plot(figs: dict, path: str, title: str) -> None:
    """The reliability diagram per level, before and after calibration (vericar.evaluation.charts draws it)."""
    from vericar.evaluation.charts import plt, reliability_panel

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.8), dpi=100)
    for ax, lvl in zip(axes, LEVELS):
        reliability_panel(ax, [(figs[key][lvl]["bins"], style, f"{name}, ECE {100 * figs[key][lvl]['ece']:.1f}%")
                               for key, style, name in (("vote_share", "s--", "vote share (before)"),
                                                        ("calibrated", "o-", "calibrated"))], lvl)
    axes[0].set_ylabel("accuracy")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--queries", required=True)
    ap.add_argument("--cache", default=None, help="embedding cache folder (as vericar.evaluate --cache)")
    ap.add_argument("--gallery-holdout", help="remove the classes matching this rule (e.g. \"label%%5==4\") from the "
                    "model's gallery first: a proxy of the open-world protocol for a model that was trained on them")
    ap.add_argument("--png", help="write the reliability diagram here")
    ap.add_argument("--json", help="write every figure here")
    return ap.parse_args(argv)


def load_queries(args: argparse.Namespace) -> tuple[Recognizer, np.ndarray, list[str]]:
    """The recognizer (less the held-out classes, if asked), the query embeddings and their class names."""
    rec = load(args.model)
    samples = load_source(args.queries, "test")
    q = cached_embeddings(rec.model, samples, args.cache, desc="queries")
    names = [s.class_name for s in samples]
    if args.gallery_holdout:
        from vericar.evaluation.data import parse_holdout

        out = parse_holdout(args.gallery_holdout)
        for name in sorted({s.class_name for s in samples if out(s.label)}):
            rec.remove(name)
    return rec, q, names


def measure(rec: Recognizer, q: np.ndarray, names: list[str], model: str) -> dict:
    """Every figure: per level before / after calibration on known classes, partial answers on unknown ones."""
    classes = set(rec.gallery.classes)
    tax = Taxonomy.from_labels(sorted(classes | set(names)))
    kn = [i for i, n in enumerate(names) if n in classes]
    preds = rec.predict_embeddings(q)
    calibration = rec.calibration
    rec.calibration = Calibration()  # the plain vote shares, for comparison (same answers, same flags)
    plain = rec.predict_embeddings(q[kn])
    rec.calibration = calibration
    truth = [names[i] for i in kn]
    res = {"model": model, "n_known": len(kn), "nominal_unknown_rate": 1 - (rec.ood.tpr or 0.95),
           "false_unknown_rate": float(np.mean([preds[i].unknown for i in kn])),
           "calibrated": level_figures([preds[i] for i in kn], truth, tax),
           "vote_share": level_figures(plain, truth, tax), "calibration": calibration.to_dict()}
    unk = [i for i, n in enumerate(names) if n not in classes]
    if unk:
        makes = {tax.level_value(c, "make") for c in classes}
        res["unknown_classes"] = partial_figures([preds[i] for i in unk], [names[i] for i in unk], tax, makes)
        res["evaluate"] = evaluate_embeddings(rec, q, names)
    return res


def report(res: dict) -> None:
    """Print the known-class table and, with unknown-class queries, their partial answers and OOD figures."""
    print(f"{res['model']}: {res['n_known']} known-class queries, false-unknown rate "
          f"{100 * res['false_unknown_rate']:.2f}% (nominal {100 * res['nominal_unknown_rate']:.0f}%)")
    print("| level | accuracy | mean conf. (before → after) | ECE (before → after) | ECE if perfectly calibrated, "
          "same photos (mean / 95th pct) | wrong shown at ≥ 0.8 (before → after) | shown right / shown |")
    print("|---|---|---|---|---|---|---|")
    for lvl in LEVELS:
        a, b = res["vote_share"][lvl], res["calibrated"][lvl]
        print(f"| {lvl} | {100 * b['accuracy']:.2f}% | {a['mean_confidence']:.3f} → {b['mean_confidence']:.3f} | "
              f"{100 * a['ece']:.2f}% → {100 * b['ece']:.2f}% | {100 * b['ece_noise']['mean']:.2f}% / "
              f"{100 * b['ece_noise']['p95']:.2f}% | {100 * a['wrong_shown_conf_ge_0.8']:.2f}% → "
              f"{100 * b['wrong_shown_conf_ge_0.8']:.2f}% | {100 * b['shown_right']:.2f}% / {100 * b['shown']:.2f}% |")
    if "unknown_classes" in res:
        u, e = res["unknown_classes"], res["evaluate"]
        print(f"\nunknown-class queries whose make is known: {u['n']} (flagged unknown {100 * u['flagged_unknown']:.2f}%)")
        for lvl in ("make", "type"):
            print(f"  {lvl}: given and right {100 * u[lvl]['given_right']:.2f}%, given and wrong "
                  f"{100 * u[lvl]['given_wrong']:.2f}%, withheld {100 * u[lvl]['withheld']:.2f}%, ECE of the "
                  f"confidence shown {100 * (u[lvl]['ece_given'] or 0):.2f}%; of the photos "
                  f"flagged unknown (partial answers): right {100 * (u[lvl]['flagged_given_right'] or 0):.2f}%, "
                  f"wrong {100 * (u[lvl]['flagged_given_wrong'] or 0):.2f}%")
        print(f"ID top-1 model {100 * e['top1']['model']:.2f}% / make {100 * e['top1']['make']:.2f}% / type "
              f"{100 * e['top1']['type']:.2f}%; OOD AUROC {100 * e['ood']['auroc']:.2f}%, FPR95 {100 * e['ood']['fpr95']:.2f}%")


def main(argv: list[str] | None = None) -> dict:
    """Measure, print, and optionally draw the reliability diagram and save every figure."""
    from vericar._infra.runtime import tune_malloc

    tune_malloc()
    args = parse_args(argv)
    rec, q, names = load_queries(args)
    res = measure(rec, q, names, args.model)
    report(res)
    if args.png:
        plot(res, args.png, f"{args.model} on {args.queries} ({res['n_known']} known-class photos)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
