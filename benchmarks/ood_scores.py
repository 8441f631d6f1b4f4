"""Which unknown-vehicle score separates known from unseen classes best, on a model's own gallery.

    python benchmarks/ood_scores.py --model local-dir:OUT --queries ../shared/data/stanford_cars/dev.csv [--json out.json]

Queries whose class is not in the gallery are the unknowns. Compares KNN+ (1 - cosine to the k-th
neighbour) for several k with class-prototype scores (max cosine; softmax over prototypes) and with
the score the recognizer itself serves (KNN+ on its density-corrected ranking).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> list[dict]:
    """Print AUROC / FPR95 of each score; returns the rows."""
    import vericar
    from vericar import metrics
    from vericar.data import load_source
    from vericar.evaluate import embed_samples

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    rec = vericar.load(args.model)
    queries = load_source(args.queries, "test")
    q = embed_samples(rec.model, queries, progress=False, num_workers=0)
    g, labels = rec.gallery.embeddings, np.array(rec.gallery.labels)
    known = np.array([s.class_name in set(labels) for s in queries])
    if known.all() or not known.any():
        raise SystemExit("the queries need both known and unknown classes (e.g. a model trained with --holdout-classes).")
    sims = -np.sort(-(q @ g.T), axis=1)
    classes = sorted(set(labels))
    protos = np.stack([g[labels == c].mean(0) for c in classes])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    sp = q @ protos.T
    scores = {f"KNN+ k={k}": 1 - sims[:, k - 1] for k in (1, 3, 5, 10, 20, 50)}
    # What the recognizer serves: KNN+ on its own ranking (density correction, per-query k cap).
    scores[f"served ({rec.density!r}, KNN+ k={rec.ood.k})"] = np.array([p.ood_score for p in rec.predict_embeddings(q)])
    scores["prototype max cosine"] = 1 - sp.max(1)
    for t in (0.05, 0.1):
        z = np.exp((sp - sp.max(1, keepdims=True)) / t)
        scores[f"prototype softmax T={t}"] = -(z / z.sum(1, keepdims=True)).max(1)
    rows = [{"score": name, "auroc": metrics.auroc(s[known], s[~known]), "fpr95": metrics.fpr_at_tpr(s[known], s[~known])}
            for name, s in scores.items()]
    print(f"{int(known.sum())} known / {int((~known).sum())} unknown queries\n| score | AUROC | FPR95 |\n|---|---|---|")
    for r in rows:
        print(f"| {r['score']} | {100 * r['auroc']:.1f}% | {100 * r['fpr95']:.1f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
