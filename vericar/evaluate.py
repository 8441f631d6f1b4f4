"""Evaluate a model on labelled photos: ``python -m vericar.evaluate --model SPEC --queries CSV``.

Queries whose class is not in the gallery are the unknown (OOD) ground truth; top-k figures
are over the known queries. ``--gallery CSV`` builds the gallery from those photos instead of
the model's own, so any model can be tested on any class set. Training uses the same
``evaluate_embeddings`` for its validation metrics.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from . import metrics
from .data import Sample, load_source
from .errors import VericarError
from .gallery import Gallery
from .images import open_image
from .model import EmbeddingModel
from .ood import KNNOOD
from .recognizer import Recognizer
from .taxonomy import Taxonomy
from .transforms import eval_transform

RANK_DEPTH = 50  # neighbours looked at to rank classes for top-5


class _PhotoDataset(Dataset):
    def __init__(self, samples: Sequence[Sample], transform) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(open_image(self.samples[i].image))


def embed_samples(
    model: EmbeddingModel,
    samples: Sequence[Sample],
    *,
    batch_size: int = 32,
    num_workers: int = 1,
    progress: bool = True,
    desc: str = "embedding",
) -> np.ndarray:
    """Embed labelled photos with the model's own eval preprocessing (decoding in a worker)."""
    from tqdm.auto import tqdm

    loader = DataLoader(
        _PhotoDataset(samples, eval_transform(model.pretrained_cfg)),
        batch_size=batch_size,
        num_workers=num_workers,
    )
    model.eval()
    out = []
    with torch.inference_mode():
        for x in tqdm(loader, desc=desc, unit="batch", disable=not progress, file=sys.stderr):
            out.append(model(x).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.output_dim), np.float32)


def build_gallery(
    model: EmbeddingModel, samples: Sequence[Sample], *, index: str = "flat", **embed_kw: Any
) -> Gallery:
    """A gallery of the given photos' embeddings, labelled by class name, referenced by path."""
    gallery = Gallery(model.output_dim, index=index)
    emb = embed_samples(model, samples, desc="gallery", **embed_kw)
    gallery.add(emb, [s.class_name for s in samples], refs=[s.ref for s in samples])
    return gallery


def evaluate_embeddings(
    recognizer: Recognizer, query_emb: np.ndarray, query_names: Sequence[str]
) -> dict[str, Any]:
    """Every figure of the evaluation for already-embedded queries (no timing)."""
    known_classes = set(recognizer.gallery.classes)
    taxonomy = Taxonomy.from_labels(sorted(known_classes | set(query_names)))
    preds = recognizer.predict_embeddings(query_emb)
    depth = min(RANK_DEPTH, len(recognizer.gallery))
    scores, idx = recognizer.gallery.search(query_emb, depth)
    labels = recognizer.gallery.labels
    known = np.array([n in known_classes for n in query_names])
    result: dict[str, Any] = {"n_queries": int(len(query_names))}
    kq = np.flatnonzero(known)
    if len(kq):
        true = [query_names[i] for i in kq]
        top1 = {}
        for level in ("model", "make", "type"):
            t = [taxonomy.level_value(n, level) for n in true]
            p = [taxonomy.level_value(preds[i].label, level) for i in kq]
            top1[level] = metrics.topk_accuracy(t, [[x] for x in p], 1)
        ranked = []
        for i in kq:  # the prediction first, then other classes by their best similarity
            order = [preds[i].label]
            for j in idx[i]:
                if j >= 0 and labels[j] not in order:
                    order.append(labels[j])
            ranked.append(order)
        neigh = np.array([[labels[j] if j >= 0 else "" for j in idx[i]] for i in kq], dtype=object)
        result.update(
            top1=top1,
            top5={"model": metrics.topk_accuracy(true, ranked, 5)},
            macro_f1=metrics.macro_f1(true, [preds[i].label for i in kq]),
            recall_at_1=metrics.recall_at_k(true, neigh, 1),
        )
    else:
        result.update(top1=None, top5=None, macro_f1=None, recall_at_1=None)
    if (~known).any() and known.any():
        s = np.array([p.ood_score for p in preds])
        result["ood"] = {
            "auroc": metrics.auroc(s[known], s[~known]),
            "fpr95": metrics.fpr_at_tpr(s[known], s[~known], 0.95),
            "n_unknown": int((~known).sum()),
        }
    else:
        result["ood"] = None
    return result


def _fmt(x: Any) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def format_table(r: dict[str, Any]) -> str:
    """A small markdown table of an evaluation result."""
    rows = [("queries", str(r["n_queries"]))]
    if r.get("top1"):
        rows += [(f"top-1 {lvl}", _fmt(v)) for lvl, v in r["top1"].items()]
        rows += [("top-5 model", _fmt(r["top5"]["model"])), ("macro-F1", _fmt(r["macro_f1"])),
                 ("Recall@1", _fmt(r["recall_at_1"]))]
    if r.get("ood"):
        rows += [("OOD AUROC", _fmt(r["ood"]["auroc"])), ("OOD FPR95", _fmt(r["ood"]["fpr95"])),
                 ("unknown queries", str(r["ood"]["n_unknown"]))]
    rows.append(("ms / image", f"{r['ms_per_image']:.1f}"))
    return "\n".join(["| metric | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry point; returns the result dict."""
    from .hub import load

    ap = argparse.ArgumentParser(prog="python -m vericar.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default", help="model spec (default, local-dir:PATH, hf-hub:ORG/NAME, timm:...)")
    ap.add_argument("--queries", required=True, help="CSV (file,label,class_name) or hf:ORG/NAME")
    ap.add_argument("--gallery", help="build the gallery from this CSV instead of the model's own")
    ap.add_argument("--split", default="test", help="split name when --queries is hf:...")
    ap.add_argument("--k", type=int, default=None, help="voting neighbours (default: the model's)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1, help="image-decoding worker processes")
    ap.add_argument("--limit", type=int, default=None, help="only the first N queries (quick checks)")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    torch.set_grad_enabled(False)
    rec = load(args.model)
    kw = dict(batch_size=args.batch_size, num_workers=args.workers, progress=not args.no_progress)
    if args.gallery:
        gallery = build_gallery(rec.model, load_source(args.gallery, "train"), **kw)
        rec = Recognizer(rec.model, gallery, rec.ood if rec.ood.threshold is not None else KNNOOD(), k=rec.k)
    if args.k is not None:
        rec.k = args.k
    queries = load_source(args.queries, args.split)[: args.limit]
    if len(rec.gallery) == 0:
        raise VericarError(f"model {args.model!r} has no gallery; pass --gallery CSV to build one.")
    t0 = time.perf_counter()
    q = embed_samples(rec.model, queries, desc="queries", **kw)
    rec.predict_embeddings(q)  # timed: search + vote + OOD
    elapsed = time.perf_counter() - t0
    result = evaluate_embeddings(rec, q, [s.class_name for s in queries])
    result["ms_per_image"] = 1000.0 * elapsed / max(1, len(queries))
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    try:
        main()
    except VericarError as e:
        sys.exit(f"error: {e}")
