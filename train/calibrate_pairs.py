"""Fit an artifact's comparison (same model / make / type, vericar/search/pair_calibration.py) on
pairs of its validation photos, and write it into its config.json ("compare").

    python train/calibrate_pairs.py --artifact OUT [--features cosine agree_model ...] [--dev-csv CSV]

As train/calibrate.py does for the confidences: the validation photos (found again from the split
the artifact's train_config describes, train/crossfit.py ``validation_slice``) are seen as the
product sees them (train/realinput.py views) and searched in a gallery of the other training photos.
Every same-model pair among them and up to ``--negatives`` pairs of each different kind (easy,
medium, hard) are scored twice: with their classes in the gallery (a known vehicle) and taken
out of it (a vehicle the gallery lacks), each photo flagged unknown or not as ``predict`` would
flag it there. Each set of rules is fitted on the pairs it will answer: the known rules on pairs
with neither photo flagged (classes in the gallery), the open rules on pairs with a photo flagged.
``--monotone`` keeps the weights of the evidence of likeness >= 0 (pair_calibration.MONOTONE).
Candidate feature sets are compared by class-grouped cross-validation on these pairs, each test
pair answered by the rules ``compare`` would pick for it, and reported (``--report``); the one
fitted is ``--features``. Photos listed in the dev CSV are refused: dev is for measuring only.
Re-run it after the weights or the gallery change (e.g. a re-shipped vericar/default).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

if __name__ == "__main__" and not __package__:  # run as a file: put the repository first (see train/calibrate.py)
    import os as _os, sys as _sys
    _here = _os.path.dirname(_os.path.abspath(__file__))
    _sys.path[:] = [_os.path.dirname(_here)] + [p for p in _sys.path if _os.path.abspath(p or ".") != _here]

import numpy as np

from train.errors import TrainError, cli
from train.fix_channels import refuse_fixed
from train.pair_table import answering, pair_table, pair_weights, subset
from vericar.evaluation.pairs import KINDS
from vericar.search.pair_calibration import (FEATURES, MONOTONE, PAIR_LEVELS, LevelRule, PairCalibration,
                                             capped_probabilities, fit_band, fit_rule)

DEV_CSV = Path(__file__).resolve().parents[2] / "shared/data/stanford_cars/dev.csv"
CANDIDATES = {"cosine": ("cosine",), "vote agreement": ("agree_model", "agree_make", "agree_type"),
              "cosine + agreement": ("cosine", "agree_model", "agree_make", "agree_type"),
              "cosine + agreement + nearness": FEATURES[:5], "cosine + agreement x nearness": FEATURES[:8],
              "cosine + agreement within make + nearness": ("cosine", "agree_make", "agree_model_in_make",
                                                            "agree_type", "nearness")}
# Best or equal-best known hard AUC with the fewest features (the first choice, docs/verification.md); the
# balanced mix of the later candidates, fitted freely, is within 0.3 points of it on validation pairs.
CHOSEN = "cosine + agreement + nearness"
RULE_SETS = ("known", "open")
# Which rules have P(same model) capped by P(same make) (--cap): none by default. In the known rules the cap lifted
# validation easy pairs (two makes) by 0.003 at an equal mix, but on dev only by 0.001 at 0.7 points less mix, and
# it costs the pairs of never-seen models; measured, not shipped (docs/verification.md).
CAP = "none"
CAPS = {"known": ("known",), "open": ("open",), "both": RULE_SETS, "none": ()}
# Which rules are factored (--factor, the same choices): P(same model) = P(same model | same make) x P(same make),
# the conditional rule fitted on the pairs of one make only (pair_calibration: ``given``). None by default: measured
# on validation pairs by a rule written first, not shipped (docs/verification.md).
FACTOR = "none"


def refuse_dev(paths: Sequence[str], dev_csv: Path | None) -> None:
    """TrainError when any of ``paths`` is a photo of the dev CSV (resolved paths compared)."""
    if dev_csv is None or not Path(dev_csv).is_file():
        return
    from vericar.evaluation.data import load_csv

    dev = {str(Path(s.image).resolve()) for s in load_csv(dev_csv)}
    hit = [p for p in paths if str(Path(p).resolve()) in dev]
    if hit:
        raise TrainError(f"{len(hit)} of the photos to fit on are dev photos ({hit[0]}, listed in {dev_csv}); "
                         "dev is for measuring only. Fit on an artifact trained on the training split.")


def fit_set(t: dict[str, Any], m: np.ndarray, features: Sequence[str], level: str,
            monotone: Sequence[str]) -> LevelRule:
    """One level's rule fitted on the pairs ``m`` of ``t``, weighed as ``pair_weights`` weighs them."""
    cols = [FEATURES.index(f) for f in features]
    s = subset(t, m)
    return fit_rule(s["x"][:, cols], s["y"][:, PAIR_LEVELS.index(level)], features, pair_weights(s, level),
                    monotone=monotone)


def fit_rules(t: dict[str, Any], m: np.ndarray, features: Sequence[str], monotone: Sequence[str], capped: bool,
              levels: Sequence[str] = PAIR_LEVELS, factored: bool = False) -> dict[str, LevelRule]:
    """The rules of ``levels`` fitted on the pairs ``m`` of ``t``. ``capped``: the model rule is capped by the
    make's (P(same model) <= P(same make): one model is one make; the make rule is then fitted too). Its
    band of no verdict stays the one fitted on its own probabilities: found again on the capped ones
    it widened and lost 0.8 points of validation mix for nothing (docs/verification.md). ``factored``:
    the model rule is fitted on the pairs of one make only, ``given`` the make, and its band is fitted
    on the product P(same model | same make) x P(same make) that it answers with (where the pairs of one
    make are all of one model, or none is, the rule is fitted unfactored: no ``given`` in its JSON, and
    ``fit`` names the set in its info's ``factor_fell_back``)."""
    levels = list(dict.fromkeys([*levels, "make"])) if capped or factored else list(levels)
    one_make = m & t["y"][:, PAIR_LEVELS.index("make")]
    outcomes = t["y"][one_make][:, PAIR_LEVELS.index("model")]
    factored = factored and bool(outcomes.any() and not outcomes.all())  # else (a tiny split) not factored
    rules = {lvl: fit_set(t, one_make if factored and lvl == "model" else m, features, lvl, monotone)
             for lvl in levels}
    if factored:
        s = subset(t, m)
        cols = [FEATURES.index(f) for f in features]
        rules["model"] = replace(rules["model"], given=("make",))
        p = [capped_probabilities(rules, dict(zip(features, row)))["model"] for row in s["x"][:, cols]]
        rules["model"] = replace(rules["model"], band=fit_band(np.array(p), s["y"][:, 0], pair_weights(s, "model")))
    if capped:
        rules["model"] = replace(rules["model"], capped_by=("make",))
    return rules


def cross_validate(t: dict[str, Any], folds: int = 5, seed: int = 0, monotone: Sequence[str] = (),
                   cap: str = CAP, factor: str = FACTOR) -> dict[str, Any]:
    """Per candidate feature set (CANDIDATES, fitted with ``monotone`` weights kept >= 0 and the model rule
    capped by the make's in the rule sets ``CAPS[cap]`` and factored in ``CAPS[factor]``; and the chosen
    one fitted the other way: MONOTONE kept >= 0, or all free; and with each other cap and each other
    factoring), model-level ROC-AUC per kind and mode on held-out folds of classes (a pair is tested
    when both its classes are in the fold, trained on when neither is). The rules are fitted as ``fit``
    fits them, and each test pair is answered by the rules ``compare`` would pick: the open ones when a
    photo is flagged unknown. So "known" mixes the two rules as dev pairs do, and "open" as pairs of
    never-seen models do. ``<mode> mix``: the balanced mix answered right by the verdict (None wrong),
    as benchmarks/verify.py counts it."""
    from sklearn.metrics import roc_auc_score

    names = sorted({c for g in t["groups"] for c in g})
    fold = {c: i % folds for i, c in enumerate(np.random.default_rng(seed).permutation(names))}
    fa = np.array([fold[a] for a, _ in t["groups"]])
    fb = np.array([fold[b] for _, b in t["groups"]])
    y = t["y"][:, 0]
    other = (f"{CHOSEN}, fitted freely", ()) if monotone else (f"{CHOSEN}, monotone", MONOTONE)
    runs = {**{c: (f, monotone, cap, factor) for c, f in CANDIDATES.items()},
            other[0]: (CANDIDATES[CHOSEN], other[1], cap, factor),
            **{f"{CHOSEN}, cap {c}": (CANDIDATES[CHOSEN], monotone, c, factor) for c in CAPS if c != cap},
            **{f"{CHOSEN}, factor {c}": (CANDIDATES[CHOSEN], monotone, cap, c) for c in CAPS if c != factor}}
    out: dict[str, Any] = {}
    for cand, (feats, mono, cap_in, factor_in) in runs.items():
        cols = [FEATURES.index(f) for f in feats]
        prob, right = np.full(len(y), np.nan), np.zeros(len(y), bool)
        for k in range(folds):
            train, test = (fa != k) & (fb != k), (fa == k) & (fb == k)
            # both outcomes at the model and the make level (a capped rule fits the make's too)
            fold_sets = answering(t, train)[:2]
            sets = [m for m in fold_sets if t["y"][m][:, :2].any(0).all() and not t["y"][m][:, :2].all(0).any()]
            if len(sets) < 2:
                continue
            rules = [fit_rules(t, m, feats, mono, name in CAPS[cap_in], ("model",), name in CAPS[factor_in])
                     for m, name in zip(sets, RULE_SETS)]
            for i in np.where(test)[0]:
                rule = rules[int(t["flag"][i])]
                prob[i] = capped_probabilities(rule, dict(zip(feats, t["x"][i, cols])))["model"]
                right[i] = rule["model"].verdict(prob[i]) == bool(y[i])  # None (inside the band) is wrong
        res = {}
        for mode in ("known", "open"):
            tested = (t["mode"] == mode) & ~np.isnan(prob)
            for kind in KINDS[1:]:
                m = tested & ((t["kind"] == "same") | (t["kind"] == kind))
                if (y[m]).any() and (~y[m]).any():
                    res[f"{mode} {kind}"] = float(roc_auc_score(y[m], prob[m]))
            per = [right[tested & (t["kind"] == kind)] for kind in KINDS]
            if all(len(r) for r in per):  # same-model pairs half the weight, each different kind a sixth
                res[f"{mode} mix"] = float(0.5 * per[0].mean() + sum(r.mean() for r in per[1:]) / (2 * len(per[1:])))
        out[cand] = res
    return out


def fit(t: dict[str, Any], features: Sequence[str], info: dict[str, Any], monotone: Sequence[str] = (),
        cap: str = CAP, factor: str = FACTOR) -> PairCalibration:
    """Each level's rules, with their bands, each set fitted on the pairs it answers (``answering``;
    ``monotone``: weights kept >= 0; the model rule capped by the make's in the sets ``CAPS[cap]``, and
    given the make in the sets ``CAPS[factor]``)."""
    *sets, fell_back = answering(t, np.ones(len(t["y"]), bool))
    known, open_ = (fit_rules(t, m, features, monotone, name in CAPS[cap], factored=name in CAPS[factor])
                    for m, name in zip(sets, RULE_SETS))
    flagged_share = {mode: float(t["flag"][t["mode"] == mode].mean()) for mode in ("known", "open")}
    unfactored = [name for name, r in zip(RULE_SETS, (known, open_)) if name in CAPS[factor] and not r["model"].given]
    return PairCalibration(known, {**info, "flagged": flagged_share, "fitted_by_mode": fell_back,
                                   **({"factor_fell_back": unfactored} if unfactored else {})}, open_)


def recorded_command(previous: str, argv: Sequence[str]) -> str:
    """The artifact's command with this fit's line in place of any earlier one: what changes the fit
    only (the artifact is OUT; where caches and reports went, and the dev list, are left out)."""
    keep, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--cache", "--report", "--dev-csv"):
            skip = True
        elif not a.startswith(("--cache=", "--report=", "--dev-csv=")):
            keep.append(a)
    keep = ["OUT" if i and keep[i - 1] == "--artifact" else a for i, a in enumerate(keep)]
    lines = [ln for ln in previous.splitlines() if not ln.startswith("python train/calibrate_pairs.py")]
    return "\n".join(lines + ["python train/calibrate_pairs.py " + " ".join(shlex.quote(a) for a in keep)])


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="train/calibrate_pairs.py", description=__doc__.split("\n")[0])
    ap.add_argument("--artifact", required=True, help="a folder written by train/train.py (e.g. vericar/default)")
    ap.add_argument("--features", nargs="+", default=list(CANDIDATES[CHOSEN]), choices=FEATURES,
                    help=f"the features the rules weigh (default: {CHOSEN!r}, chosen by the cross-validation)")
    ap.add_argument("--monotone", action="store_true",
                    help="keep the weights of the likeness features (cosine, agreements) >= 0: easy pairs gain, "
                         "pairs of one make and of never-seen models lose (docs/verification.md)")
    ap.add_argument("--cap", choices=list(CAPS), default=CAP,
                    help="the rules whose P(same model) is capped by P(same make) (one model is one make; default "
                         f"{CAP!r}: measured, not shipped, docs/verification.md)")
    ap.add_argument("--factor", choices=list(CAPS), default=FACTOR,
                    help="the rules whose P(same model) is P(same model | same make) x P(same make), the first fitted "
                         f"on pairs of one make only (default {FACTOR!r}, docs/verification.md)")
    ap.add_argument("--negatives", type=int, default=2000, help="validation pairs of each different kind (at most)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dev-csv", default=str(DEV_CSV), help="photos listed here are refused (dev is for measuring)")
    ap.add_argument("--cache", help="folder to keep the validation views' embeddings in (re-runs skip embedding)")
    ap.add_argument("--report", help="also write the cross-validation of the candidate feature sets here (JSON)")
    return ap


def main(argv: Sequence[str] | None = None) -> PairCalibration:
    """Fit and write ``--artifact``'s comparison; returns it."""
    import torch

    from train.crossfit import validation_slice
    from train.realinput import real_input_views
    from vericar._infra.runtime import tune_malloc
    from vericar.artifacts.hub import load, read_artifact, write_config
    from vericar.core.recognizer import Recognizer
    from vericar.models.embed_cache import cached
    from vericar.models.embedding import embed
    from vericar.search.gallery import Gallery

    args = _parser().parse_args(argv)
    tune_malloc()
    out = Path(args.artifact)
    rec = load(f"local-dir:{out}")
    refuse_fixed(rec.meta, "train/calibrate_pairs.py")
    tc = dict(rec.meta.get("train_config") or {})
    if not tc.get("data"):
        raise TrainError(f"{out} has no train_config in its config.json meta; only train/train.py artifacts can be "
                         "fitted (their validation slice is needed).")
    is_val, val = validation_slice(rec, out)
    refuse_dev([s.image for s in val], Path(args.dev_csv) if args.dev_csv else None)
    labels = np.array(rec.gallery.labels)
    views = [s.image for s in val]
    emb = cached(args.cache, lambda: torch.from_numpy(embed(rec.model, real_input_views(views, tc.get("seed", 0)),
                                                            progress=False)),
                 weights=rec.model, preprocess=rec.model.pretrained_cfg, files=views,
                 extra={"views": "real-input", "seed": tc.get("seed", 0)}, prefix="val-views").numpy()
    gallery = Gallery(rec.gallery.dim)
    gallery.add(rec.gallery.embeddings[~is_val], list(labels[~is_val]))
    voter = Recognizer(rec.model, gallery, rec.ood, k=rec.k, density=rec.density)
    t = pair_table(voter, emb, list(labels[is_val]), args.negatives, args.seed)
    mono = MONOTONE if args.monotone else ()
    cv = cross_validate(t, seed=args.seed, monotone=mono, cap=args.cap, factor=args.factor)
    counts = {f"{m} {k}": int(((t["mode"] == m) & (t["kind"] == k)).sum()) for m in ("known", "open") for k in KINDS}
    info = {"fitted_on": f"pairs of {int(is_val.sum())} validation photos (real-input views, seed {tc.get('seed', 0)}) "
            f"against the other training photos, each pair with its classes in the gallery and out of it; "
            f"the known rules on the pairs with no photo flagged unknown and their classes in the gallery, "
            f"the open rules on the pairs with a photo flagged",
            "pairs": counts, "cross_validation": cv, "monotone": list(mono), "cap": args.cap,
            "factor": args.factor}
    cal = fit(t, args.features, info, mono, args.cap, args.factor)
    cfg, meta = read_artifact(out)
    meta["command"] = recorded_command(meta.get("command", ""), sys.argv[1:] if argv is None else argv)
    write_config(out, replace(cfg, compare=cal.to_dict()), meta)
    if args.report:
        report = {"cross_validation": cv, "pairs": counts, "flagged": cal.info["flagged"]}
        Path(args.report).write_text(json.dumps(report, indent=2))
    print(f"fitted the comparison of {out} on {len(t['y'])} validation pairs ({counts})")
    for cand, res in cv.items():
        print(f"  {cand:32s} " + "  ".join(f"{k} {v:.3f}" for k, v in res.items()))
    for name, rules in (("known", cal.levels), ("unknown", cal.open_levels or {})):
        for lvl, r in rules.items():
            print(f"  {name} {lvl}: " + ", ".join(f"{f} {w:+.2f}" for f, w in zip(r.features, r.weights))
                  + f", bias {r.bias:+.2f}, no verdict in {r.band[0]:.2f}-{r.band[1]:.2f}"
                  + (f", capped by {'/'.join(r.capped_by)}" if r.capped_by else "")
                  + (f", given {'/'.join(r.given)}" if r.given else ""))
    return cal


if __name__ == "__main__":
    cli(main)
