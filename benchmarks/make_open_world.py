"""Make and type answers in the open world: can a make-level rule keep wrong makes off photos of
vehicle models the gallery does not know without taking them off the known ones?

    python benchmarks/make_open_world.py --model local-dir:OUT --queries $D/dev.csv --cache DIR

Everything is fitted on the artifact's validation slice as the product sees it (the real-input
views of train/realinput.py, as train/calibrate.py fits on), in two situations: *known* (gallery:
the other training photos) and *unseen* (leave-class-out: each validation class taken out of that
gallery in turn, its views queried). Dev is only measured: its trained-class photos (known) and,
for an open-world run, its held-out-class photos whose make the gallery knows (unseen). Rules:

- current: the make is given unless the vehicle is flagged unknown and the make's confidence is
  under its partial-answer threshold (vericar/search/calibration.py).
- make threshold on every photo: the make is given only when its confidence clears the lowest
  threshold at which <= 10% of the leave-class-out views (of known makes) get a wrong make. A
  model name carries its make, so the name is withheld with it: "model withheld" is the
  false-unknown rate this rule would have.
- make floor at the nominal rate: unknown = KNN+ score > t_o or make confidence < t_m, t_o refit
  so that (1 - TPR) of the known views are flagged, t_m (a low quantile of the known views'
  make confidence) the one with the fewest wrong makes on the leave-class-out views.
- aggregated make probability: the model-level calibrated probabilities summed over each make's
  classes (its winner and that sum instead of the make vote and its confidence).

The bound: the make vote's top-1 on unseen photos; no rule that names one make gets more right.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vericar.artifacts.hub import load  # noqa: E402
from vericar.core.recognizer import Recognizer  # noqa: E402
from vericar.evaluate import cached_embeddings  # noqa: E402
from vericar.evaluation.data import load_source  # noqa: E402
from vericar.search.calibration_fit import expected_calibration_error as ece  # noqa: E402
from vericar.search.calibration_fit import threshold_at_max_wrong  # noqa: E402
from vericar.search.gallery import Gallery  # noqa: E402
from vericar.search.taxonomy import Taxonomy  # noqa: E402


def aggregated_make(pred, make_of, classes_per_make: dict, n_classes: int, t: float, b: float,
                    a: float = 0.0) -> tuple:
    """The make with the largest summed model-level probability (softmax of vericar/search/calibration.py,
    unvoted classes at logit ``b``, nearness scale ``a``) and that sum."""
    k, w, near = len(pred.neighbours), {}, {}
    for n in pred.neighbours:
        if not math.isfinite(n.score):  # as the calibrated vote skips them (vericar/search/calibration.py)
            continue
        w[n.label] = w.get(n.label, 0.0) + max(n.score, 0.0)
        near[n.label] = max(near.get(n.label, 0.0), n.score, 0.0)
    z = {c: x / (max(k, 1) * t) + a * near[c] for c, x in w.items()}
    m = max(max(z.values()), b)
    mass = {mk: n * math.exp(b - m) for mk, n in classes_per_make.items()}
    for c, v in z.items():
        mass[make_of(c)] += math.exp(v - m) - math.exp(b - m)
    best = max(mass, key=mass.get)
    return best, mass[best] / sum(mass.values())


def records(rec, preds, make_of) -> list[dict]:
    classes = set(rec.gallery.classes)
    per_make: dict = {}
    for c in classes:
        per_make[make_of(c)] = per_make.get(make_of(c), 0) + 1
    cal = rec.calibration
    t, b, a = cal.temperatures.get("model", 1.0), cal.biases.get("model", 0.0), cal.scales.get("model", 0.0)
    out = []
    for p in preds:
        agg, p_agg = aggregated_make(p, make_of, per_make, len(classes), t, b, a)
        out.append({"unknown": p.unknown, "ood": p.ood_score, "make": p.make, "p_make": p.confidence.get("make", 0.0),
                    "type": p.type, "p_type": p.confidence.get("type", 0.0), "agg": agg, "p_agg": p_agg})
    return out


def rule_figures(r: list[dict], truth: list[str], tax: Taxonomy, given_fn, lvl: str = "make") -> dict:
    """given right / given wrong / withheld / precision of ``lvl``, and how often the model name is withheld."""
    ok = np.array([x[lvl] == tax.level_value(t, lvl) for x, t in zip(r, truth)], bool)
    given, model_given = given_fn(r)
    return {"n": len(r), "given_right": float(np.mean(given & ok)), "given_wrong": float(np.mean(given & ~ok)),
            "withheld": float(np.mean(~given)), "precision": float(ok[given].mean()) if given.any() else None,
            "model_withheld": float(np.mean(~model_given)), "top1": float(ok.mean())}


def arrays(r):
    return (np.array([x["unknown"] for x in r], bool), np.array([x["ood"] for x in r]),
            np.array([x["p_make"] for x in r]), np.array([x["p_type"] for x in r]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a train/train.py artifact (its validation slice is needed)")
    ap.add_argument("--queries", required=True)
    ap.add_argument("--cache", help="embedding cache folder for the dev queries")
    ap.add_argument("--max-wrong", type=float, default=0.1)
    ap.add_argument("--json")
    return ap.parse_args(argv)


def validation_records(rec: Recognizer, is_val: np.ndarray, vq: np.ndarray, make_of: Callable) -> tuple[list, list]:
    """Records of the validation views against the training gallery (known) and leave-class-out (unseen)."""
    g, labels = rec.gallery.embeddings, np.array(rec.gallery.labels)
    vl = list(labels[is_val])

    def sub(mask) -> Recognizer:
        return Recognizer(rec.model, Gallery.from_arrays(g[mask], list(labels[mask])), rec.ood, k=rec.k,
                          density=rec.density, calibration=rec.calibration)

    train = sub(~is_val)
    known = records(train, train.predict_embeddings(vq), make_of)
    unseen: list = [None] * len(vl)
    for c in sorted(set(vl)):  # leave-class-out
        qi = np.flatnonzero(np.array(vl) == c)
        r = sub(~is_val & (labels != c))
        for i, x in zip(qi, records(r, r.predict_embeddings(vq[qi]), make_of)):
            unseen[i] = x
    return known, unseen


def build_sets(rec: Recognizer, model: str, queries: str, cache: str | None) -> tuple[Taxonomy, dict]:
    """The taxonomy and the four query sets (validation / dev, known / unseen) as (records, true labels)."""
    from train.crossfit import validation_slice
    from train.realinput import real_input_views
    from vericar.models.model import embed_images

    is_val, val_s = validation_slice(rec, model)
    labels = np.array(rec.gallery.labels)
    vl = list(labels[is_val])
    vq = embed_images(rec.model, real_input_views([s.image for s in val_s], rec.meta["train_config"].get("seed", 0)))
    samples = load_source(queries, "test")
    dq = cached_embeddings(rec.model, samples, cache, desc="queries", batch_size=32, num_workers=0, progress=False)
    dl = [s.class_name for s in samples]
    tax = Taxonomy.from_labels(sorted(set(labels) | set(dl)))
    make_of = lambda c: tax.level_value(c, "make")  # noqa: E731
    known, unseen = validation_records(rec, is_val, vq, make_of)
    makes = {make_of(c): 0 for c in rec.gallery.classes}
    for c in rec.gallery.classes:
        makes[make_of(c)] += 1
    u_keep = [i for i, c in enumerate(vl) if makes[make_of(c)] > 1]  # a make left once its class is out
    dev = records(rec, rec.predict_embeddings(dq), make_of)
    d_known = [i for i, c in enumerate(dl) if c in set(rec.gallery.classes)]
    d_unseen = [i for i, c in enumerate(dl) if c not in set(rec.gallery.classes) and make_of(c) in makes]
    return tax, {"val_known": (known, vl), "val_unseen": ([unseen[i] for i in u_keep], [vl[i] for i in u_keep]),
                 "dev_known": ([dev[i] for i in d_known], [dl[i] for i in d_known]),
                 "dev_unseen": ([dev[i] for i in d_unseen], [dl[i] for i in d_unseen])}


def measure_levels(rec: Recognizer, tax: Taxonomy, sets: dict, max_wrong: float, res: dict) -> None:
    """Fit each rule for make and type on the validation views; its figures on every set into ``res["levels"]``."""
    cal = rec.calibration
    for lvl, pi in (("make", 2), ("type", 3)):
        uv = sets["val_unseen"]
        ok_u = np.array([x[lvl] == tax.level_value(t, lvl) for x, t in zip(*uv)])
        t_all = threshold_at_max_wrong(arrays(uv[0])[pi], ok_u, max_wrong)
        t_part = cal.thresholds.get(lvl, math.inf)
        rules = {"current": lambda r, pi=pi, tp=t_part: ((~arrays(r)[0]) | (arrays(r)[pi] >= tp), ~arrays(r)[0]),
                 "threshold_every_photo": lambda r, pi=pi, t=t_all: (
                     arrays(r)[pi] >= (t if t is not None else math.inf),
                     ~arrays(r)[0] & (arrays(r)[pi] >= (t if t is not None else math.inf)))}
        if lvl == "make":
            rules["floor_at_nominal"] = floor_rule(sets["val_known"][0], uv[0], ok_u, rec.ood.tpr or 0.95,
                                                   t_part, res)
        res["levels"][lvl] = {"threshold_every_photo": t_all, "rules": {
            name: {s: rule_figures(r, t, tax, fn, lvl) for s, (r, t) in sets.items() if r}
            for name, fn in rules.items()}}


def make_estimators(sets: dict, tax: Taxonomy) -> dict:
    """Top-1 and ECE of the make vote and of the aggregated make probability on every non-empty set."""
    out = {}
    for s, (r, t) in sets.items():
        if r:
            ok1 = np.array([x["make"] == tax.level_value(c, "make") for x, c in zip(r, t)])
            ok2 = np.array([x["agg"] == tax.level_value(c, "make") for x, c in zip(r, t)])
            out[s] = {"vote_top1": float(ok1.mean()), "vote_ece": ece(arrays(r)[2], ok1),
                      "aggregated_top1": float(ok2.mean()),
                      "aggregated_ece": ece(np.array([x["p_agg"] for x in r]), ok2)}
    return out


def main(argv: list[str] | None = None) -> dict:
    """Fit the rules on the validation views, measure them on dev, print (and optionally save) the figures."""
    args = parse_args(argv)
    rec = load(args.model)
    tax, sets = build_sets(rec, args.model, args.queries, args.cache)
    res: dict = {"model": args.model, "levels": {}}
    measure_levels(rec, tax, sets, args.max_wrong, res)
    estimators = make_estimators(sets, tax)
    if estimators:
        res["make_estimators"] = estimators
    report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


def floor_rule(known, unseen, ok_unseen, tpr: float, t_part: float, res: dict):
    """Fit (t_o, t_m) of "unknown = KNN+ > t_o or make conf < t_m" on the validation views; the rule."""
    k_unk, k_ood, k_p, _ = arrays(known)
    u_unk, u_ood, u_p, _ = arrays(unseen)
    budget = int(math.ceil((1 - tpr) * len(known) - 1e-9))
    best = None
    for t_m in [0.0, *np.quantile(k_p, [0.005, 0.01, 0.02, 0.03, 0.04])]:
        low = k_p < t_m
        rest = np.sort(k_ood[~low])[::-1]
        left = budget - int(low.sum())
        if left < 0:
            continue
        t_o = float(rest[left]) if left < len(rest) else -math.inf  # flag the `left` highest scores
        flag = (u_ood > t_o) | (u_p < t_m)
        wrong = float(np.mean((~flag | (u_p >= t_part)) & ~ok_unseen))
        if best is None or wrong < best[0] - 1e-12:
            best = (wrong, t_o, float(t_m))
    _, t_o, t_m = best
    res["floor_at_nominal"] = {"t_o": t_o, "t_m": t_m, "stored_t_o": res.get("stored_t_o")}

    def fn(r):
        _, ood, p, _ = arrays(r)
        flag = (ood > t_o) | (p < t_m)
        return ~flag | (p >= t_part), ~flag
    return fn


def report(res: dict) -> None:
    print(f"{res['model']}: make estimators (top-1 / ECE):")
    for s, e in res["make_estimators"].items():
        print(f"  {s}: vote {100 * e['vote_top1']:.2f}% / {100 * e['vote_ece']:.2f}%; aggregated "
              f"{100 * e['aggregated_top1']:.2f}% / {100 * e['aggregated_ece']:.2f}%")
    if "floor_at_nominal" in res:
        print(f"make floor at nominal: {res['floor_at_nominal']}")
    for lvl, L in res["levels"].items():
        print(f"{lvl}: threshold on every photo (<= 10% wrong on leave-class-out views): {L['threshold_every_photo']}")
        print("| rule | set | n | given right | given wrong | withheld | precision | model withheld |")
        print("|---|---|---|---|---|---|---|---|")
        for name, per in L["rules"].items():
            for s, f in per.items():
                prec = "" if f["precision"] is None else f"{100 * f['precision']:.2f}%"
                print(f"| {name} | {s} | {f['n']} | {100 * f['given_right']:.2f}% | {100 * f['given_wrong']:.2f}% | "
                      f"{100 * f['withheld']:.2f}% | {prec} | {100 * f['model_withheld']:.2f}% |")


if __name__ == "__main__":
    main()
