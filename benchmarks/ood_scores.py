"""Which unknown-vehicle score separates known from unseen classes best, on a model's own gallery.

    python benchmarks/ood_scores.py --model local-dir:OUT --queries ../shared/data/stanford_cars/dev.csv [--json out.json]

Queries whose class is not in the gallery are the unknowns. Compares KNN+ (1 - cosine to the k-th
neighbour) for several k with class-prototype scores (max cosine; softmax over prototypes) and with
the score the recognizer itself serves (KNN+ on its density-corrected ranking), and with
Mahalanobis scores (class means + one shared covariance of the gallery; "relative" subtracts the
distance to the whole gallery's Gaussian, Ren et al. 2021, meant for near-duplicate unknowns).
``--flip`` also embeds each query's mirror image and averages the two (test-time augmentation).
``--backbone-features`` adds the same scores on the backbone's pooled features (before the
embedding head; the gallery's photos are embedded again, so it needs an artifact whose gallery
refs are photo paths on this machine, i.e. not the shipped default). ``--flip`` does not apply to
those features: they are always of the photos as they are.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if TYPE_CHECKING:
    from vericar.evaluation.data import Sample
    from vericar.models.model import EmbeddingModel
    from vericar.core.recognizer import Recognizer


def main(argv: list[str] | None = None) -> list[dict]:
    """Print AUROC / FPR95 of each score; returns the rows."""
    import vericar
    from vericar.evaluation import metrics
    from vericar.evaluation.data import load_source
    from vericar.models.embedding import embed

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--json")
    ap.add_argument("--flip", action="store_true", help="average each query's embedding with its mirror image's")
    ap.add_argument("--backbone-features", action="store_true", help="also score the backbone's pooled features")
    args = ap.parse_args(argv)
    rec = vericar.load(args.model)
    queries = load_source(args.queries, "test")
    # Refuse what cannot work before minutes of embedding.
    g, labels = rec.gallery.embeddings, np.array(rec.gallery.labels)
    known = np.array([s.class_name in set(labels) for s in queries])
    if known.all() or not known.any():
        raise SystemExit("the queries need both known and unknown classes (e.g. a model trained with --holdout-classes).")
    missing = [r for r in rec.gallery.refs if not Path(r).is_file()] if args.backbone_features else []
    if missing:
        raise SystemExit(f"--backbone-features re-embeds the gallery's photos, but {len(missing)} refs are not files "
                         f"here (e.g. {missing[0]!r}); use an artifact trained on this machine (local-dir:OUT).")
    q = embed(rec.model, queries)
    if args.flip:
        q = q + _embed_mirrored(rec.model, queries)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    preds = rec.predict_embeddings(q)
    if args.flip:
        acc = np.mean([p.label == s.class_name for p, s, k in zip(preds, queries, known) if k])
        print(f"flip-averaged queries: in-distribution top-1 {100 * acc:.2f}%")
    sims = -np.sort(-(q @ g.T), axis=1)
    classes = sorted(set(labels))
    protos = np.stack([g[labels == c].mean(0) for c in classes])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    sp = q @ protos.T
    scores = {f"KNN+ k={k}": 1 - sims[:, k - 1] for k in (1, 3, 5, 10, 20, 50) if k <= len(g)}
    # What the recognizer serves: KNN+ on its own ranking (density correction, per-query k cap).
    scores[f"served ({rec.density!r}, KNN+ k={rec.ood.k})"] = np.array([p.ood_score for p in preds])
    scores["prototype max cosine"] = 1 - sp.max(1)
    for t in (0.05, 0.1):
        z = np.exp((sp - sp.max(1, keepdims=True)) / t)
        scores[f"prototype softmax T={t}"] = -(z / z.sum(1, keepdims=True)).max(1)
    scores.update(_mahalanobis(q, g, labels))
    if args.backbone_features:
        qf, gf = _backbone_features(rec, queries)
        fsims = -np.sort(-(qf @ gf.T), axis=1)
        scores.update({f"backbone features: KNN+ k={k}": 1 - fsims[:, k - 1] for k in (1, 5, 10) if k <= len(gf)})
        scores.update({f"backbone features: {n}": v for n, v in _mahalanobis(qf, gf, labels).items()})
    rows = [{"score": name, "auroc": metrics.auroc(s[known], s[~known]), "fpr95": metrics.fpr_at_tpr(s[known], s[~known])}
            for name, s in scores.items()]
    print(f"{int(known.sum())} known / {int((~known).sum())} unknown queries\n| score | AUROC | FPR95 |\n|---|---|---|")
    for r in rows:
        print(f"| {r['score']} | {100 * r['auroc']:.1f}% | {100 * r['fpr95']:.1f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


def _embed_mirrored(model: "EmbeddingModel", queries: Sequence["Sample"]) -> np.ndarray:
    """Embeddings of the mirrored photos (flipping the preprocessed tensor: the eval crop is centred)."""
    import torch

    from vericar.models.embedding import embed

    return embed(model, queries, forward=lambda x: model(torch.flip(x, dims=[3])), tta=())


def _backbone_features(rec: "Recognizer", queries: Sequence["Sample"]) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised pooled backbone features of the queries and of the gallery's photos."""
    from vericar.evaluation.data import Sample
    from vericar.models.embedding import embed

    photos = [Sample(r, -1, lab) for r, lab in zip(rec.gallery.refs, rec.gallery.labels)]
    out = []
    for samples in (queries, photos):
        f = embed(rec.model, samples, forward=rec.model.features, tta=())
        out.append(f / np.linalg.norm(f, axis=1, keepdims=True))
    return out[0], out[1]


def _sq_mahalanobis(q: np.ndarray, means: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """(Q, C) squared Mahalanobis distances, expanded so no (Q, C, D) array is built."""
    prec = np.linalg.pinv(cov)
    qp = q @ prec
    return (qp * q).sum(1)[:, None] - 2 * qp @ means.T + ((means @ prec) * means).sum(1)[None, :]


def _mahalanobis(q: np.ndarray, g: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Min class-conditional Mahalanobis distance (shared covariance) and its relative form."""
    q, g = q.astype(np.float64), g.astype(np.float64)
    classes = sorted(set(labels))
    mus = np.stack([g[labels == c].mean(0) for c in classes])
    centred = g - mus[np.searchsorted(classes, labels)]
    d = _sq_mahalanobis(q, mus, centred.T @ centred / len(g))
    mu0 = g.mean(0)
    d0 = _sq_mahalanobis(q, mu0[None], (g - mu0).T @ (g - mu0) / len(g))
    return {"Mahalanobis (min over classes)": d.min(1), "relative Mahalanobis": (d - d0).min(1)}


if __name__ == "__main__":
    main()
