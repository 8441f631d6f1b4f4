"""What cheap test-time variants of the embedding buy, on validation and on dev, with their cost.

    python benchmarks/tta_variants.py --model local-dir:A --previous PREV \
        --data ../shared/data/stanford_cars --split validation --cache CACHE --json val.json
    python benchmarks/tta_variants.py ... --split dev --json dev.json     # only after the shipping rule is written

A and PREV: two single-network trainings of one recipe with the same validation split (docs/flip.md
used the flip default, a37661f:vericar/default in git, and the one before it, c75e06f:vericar/default).

Variants, from one network pass per (model, input size, mirror or not), each cached:
plain; flip (each photo averaged with its mirror image); multi-scale (224 and 256 px averaged);
flip + multi-scale; an ensemble of the shipped default and the previous default (the two embeddings
concatenated, so a cosine is the mean of the two models' cosines); the ensemble with flip.

``--split validation``: the shipped default's 390 validation photos (held out of its training, as
the product sees them: train/realinput.py views) against a gallery of its other training photos.
``--split dev``: the dev photos (whole photo, no detector) against all training photos.
Every variant is ranked and voted exactly as the product does (the model's k and CSLS density).
The cost column is the forward passes each variant needs per photo (1 = today's).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere

from train.crossfit import validation_slice  # noqa: E402
from train.realinput import real_input_views  # noqa: E402
from vericar.artifacts.hub import load  # noqa: E402
from vericar.core.recognizer import Recognizer  # noqa: E402
from vericar.evaluate import evaluate_embeddings  # noqa: E402
from vericar.evaluation.data import load_csv, short_ref  # noqa: E402
from vericar.models.embed_cache import cached  # noqa: E402
from vericar.models.embedding import embed  # noqa: E402
from vericar.search.gallery import Gallery  # noqa: E402
from vericar.search.ood import KNNOOD  # noqa: E402

VARIANTS = {  # name: (models, sizes, mirror), cost = passes per photo
    "plain": (("cur",), (224,), False),
    "flip": (("cur",), (224,), True),
    "multi-scale 224+256": (("cur",), (224, 256), False),
    "flip + multi-scale": (("cur",), (224, 256), True),
    "ensemble (previous + shipped)": (("cur", "prev"), (224,), False),
    "ensemble + flip": (("cur", "prev"), (224,), True),
}


class _Width:
    """Stands in for the model in a Recognizer over precomputed embeddings of another width."""

    def __init__(self, dim: int) -> None:
        self.output_dim, self.tta = dim, ()

    def eval(self) -> "_Width":
        return self


def _pass(model, items, size: int, mirror: bool, cache: str, what: str, refs: list[str]) -> np.ndarray:
    m = model
    m.preprocess = m.preprocess.override(size=size)
    fwd = (lambda x: m(torch.flip(x, dims=[3]))) if mirror else None
    return cached(cache, lambda: torch.from_numpy(embed(m, items, tta=(), forward=fwd, batch_size=32, progress=True,
                                                        desc=f"{what} {size}px{' mirror' if mirror else ''}")),
                  weights=m, preprocess=dict(m.pretrained_cfg), files=refs,
                  extra={"mirror": mirror, "what": what}).numpy()


def _variant(parts: dict, models, sizes, mirror: bool) -> np.ndarray:
    out = []
    for name in models:  # per model: the mean over its views, unit length; models side by side
        views = [parts[(name, s, f)] for s in sizes for f in ((False, True) if mirror else (False,))]
        v = np.sum(views, axis=0)
        out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    e = np.concatenate(out, axis=1)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--previous", required=True, help="the previous default's artifact folder")
    ap.add_argument("--data", default="../shared/data/stanford_cars")
    ap.add_argument("--split", choices=("validation", "dev"), required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    recs = {"cur": load(args.model, detector="none"), "prev": load(f"local-dir:{args.previous}", detector="none")}
    rec = recs["cur"]
    train = load_csv(Path(args.data) / "train.csv")
    by_ref = {r: s for s in train for r in (s.ref, short_ref(s.ref))}  # a shipped gallery keeps short refs
    g_samples = [by_ref[r] for r in rec.gallery.refs]
    if args.split == "validation":
        is_val, val_s = validation_slice(rec, args.model)
        q_items = real_input_views([s.image for s in val_s], seed=0)
        q_refs, q_names = [f"view0:{short_ref(s.ref)}" for s in val_s], [s.class_name for s in val_s]
        g_keep = ~is_val
    else:
        dev = load_csv(Path(args.data) / "dev.csv")
        q_items, q_refs, q_names = dev, [s.ref for s in dev], [s.class_name for s in dev]
        g_keep = np.ones(len(g_samples), bool)
    g_refs = [s.ref for s in g_samples]
    parts_g, parts_q = {}, {}
    needed = {(m, s, f) for ms, ss, mir in VARIANTS.values() for m in ms for s in ss for f in ((False, True) if mir else (False,))}
    for m, s, f in sorted(needed):
        model = recs[m].model
        pre = model.preprocess
        parts_g[(m, s, f)] = _pass(model, g_samples, s, f, args.cache, "gallery", g_refs)
        parts_q[(m, s, f)] = _pass(model, q_items, s, f, args.cache, args.split, q_refs)
        model.preprocess = pre
    labels = np.array(rec.gallery.labels)
    rows = {}
    for name, (ms, ss, mir) in VARIANTS.items():
        g, q = _variant(parts_g, ms, ss, mir)[g_keep], _variant(parts_q, ms, ss, mir)
        r = Recognizer(_Width(g.shape[1]), Gallery.from_arrays(g, list(labels[g_keep])), KNNOOD(rec.ood.k),
                       k=rec.k, density=rec.density)
        res = evaluate_embeddings(r, q, q_names)
        rows[name] = {"top1": res["top1"], "passes_per_photo": len(ms) * len(ss) * (2 if mir else 1),
                      "cost_note": "256 px costs ~1.3x a 224 px pass" if 256 in ss else ""}
        t = res["top1"]
        print(f"| {name} | {100 * t['model']:.2f}% | {100 * t['make']:.2f}% | {100 * t['type']:.2f}% | "
              f"{rows[name]['passes_per_photo']} |", flush=True)
    out = {"split": args.split, "n_queries": len(q_names), "variants": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
