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
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from vericar.core.errors import VericarError, check_positive_int
from vericar.core.recognizer import Recognizer
from vericar.evaluation import metrics
from vericar.evaluation.answers import level_answer
from vericar.evaluation.attributes import check_vocabulary, evaluate_attributes, with_labels
from vericar.evaluation.data import Sample, load_source, parse_holdout, refuse_swapped
from vericar.models.embed_cache import cached_embeddings
from vericar.models.embedding import embed
from vericar.models.model import EmbeddingModel
from vericar.search.density import DensityCorrection
from vericar.search.gallery import Gallery
from vericar.search.taxonomy import LEVELS, Taxonomy

RANK_DEPTH = 50  # neighbours looked at to rank classes for top-5
TOP1_LEVELS = tuple(lvl for lvl in LEVELS if lvl != "year")  # top-1 is reported at these levels


def embed_samples(
    model: EmbeddingModel,
    samples: Sequence[Sample],
    *,
    batch_size: int = 32,
    num_workers: int = 1,
    progress: bool = True,
    desc: str = "embedding",
) -> np.ndarray:
    """Embed labelled photos (decoding in workers): :func:`vericar.models.embedding.embed`, kept under this name."""
    return embed(model, samples, batch_size=batch_size, num_workers=num_workers, progress=progress, desc=desc)


def evaluate_embeddings(
    recognizer: Recognizer, query_emb: np.ndarray, query_names: Sequence[str], mains: Sequence[Any] | None = None,
    answers: list | None = None,
) -> dict[str, Any]:
    """Every figure of the evaluation for already-embedded queries (no timing). ``mains``: each query's
    main region as the detector found it (``scene.embed_main_vehicles``); a query that is no vehicle
    there (``scene.keeps``) is answered "no vehicle" (wrong). ``answers``: a list that receives each
    query's Prediction, as scored (the report's per-class figures are drawn from them)."""
    known_classes = set(recognizer.gallery.classes)
    taxonomy = Taxonomy.from_labels(sorted(known_classes | set(query_names)))
    preds = recognizer.predict_embeddings(query_emb)
    if mains is not None:
        from vericar.vision.scene import keeps, no_vehicle

        preds = [p if keeps(r, p) else no_vehicle() for p, r in zip(preds, mains)]
    if answers is not None:
        answers[:] = preds
    depth = min(RANK_DEPTH, len(recognizer.gallery))
    _, _, idx = recognizer.search(query_emb, depth)  # top-5: classes in the order the product ranks them
    plain = recognizer.gallery.search(query_emb, 1)[1]  # Recall@1: the embedding's own nearest photo
    labels = recognizer.gallery.labels
    known = np.array([n in known_classes for n in query_names])
    result: dict[str, Any] = {"n_queries": int(len(query_names))}
    kq = np.flatnonzero(known)
    if len(kq):
        true = [query_names[i] for i in kq]
        top1, balanced = {}, {}
        for level in TOP1_LEVELS:
            t = [taxonomy.level_value(n, level) for n in true]
            # What the product shows: the per-level k-NN vote (Prediction.make / .type), or the
            # label's own value where the label set is flat.
            p = [level_answer(preds[i], level, taxonomy) for i in kq]
            top1[level] = metrics.topk_accuracy(t, [[x] for x in p], 1)
            balanced[level] = metrics.balanced_accuracy(t, p)
        ranked = []
        for i in kq:  # the prediction first, then other classes by their best similarity
            order = [preds[i].label]
            for j in idx[i]:
                if j >= 0 and labels[j] not in order:
                    order.append(labels[j])
            ranked.append(order)
        neigh = np.array([[labels[j] if j >= 0 else "" for j in plain[i]] for i in kq], dtype=object)
        result.update(
            top1=top1,
            balanced_accuracy=balanced,
            top5={"model": metrics.topk_accuracy(true, ranked, 5)},
            macro_f1=metrics.macro_f1(true, [preds[i].label for i in kq]),
            recall_at_1=metrics.recall_at_k(true, neigh, 1),
        )
    else:
        result.update(top1=None, balanced_accuracy=None, top5=None, macro_f1=None, recall_at_1=None)
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


def _filtered(samples: list[Sample], rule: str | None) -> list[Sample]:
    """Samples whose class id matches ``rule`` (e.g. ``label%5!=4``); all of them without a rule."""
    if not rule:
        return samples
    keep = parse_holdout(rule)
    out = [s for s in samples if keep(s.label)]
    if not out:
        raise VericarError(f"no photo matches the rule {rule!r}; check the rule and the CSV's label column.")
    return out


def _embed_filtered(
    model: EmbeddingModel, samples: list[Sample], rule: str | None, cache: str | None, desc: str, kw: dict
) -> tuple[list[Sample], np.ndarray]:
    """Embeddings of the samples matching ``rule``. With a cache the whole CSV is embedded (once)
    and then filtered, so runs with different filters share one cache file."""
    if not cache:
        samples = _filtered(samples, rule)
        return samples, embed(model, samples, desc=desc, **kw)
    emb = cached_embeddings(model, samples, cache, desc=desc, **kw)
    if not rule:
        return samples, emb
    keep = parse_holdout(rule)
    rows = [i for i, s in enumerate(samples) if keep(s.label)]
    if not rows:
        raise VericarError(f"no photo matches the rule {rule!r}; check the rule and the CSV's label column.")
    return [samples[i] for i in rows], emb[rows]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m vericar.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default", help="model spec (default, local-dir:PATH, hf-hub:ORG/NAME, timm:...)")
    ap.add_argument("--detector", help="vehicle detector: queries go through the whole pipeline (detect, crop the "
                    "main vehicle); 'opencv-ssd:mobilenet_v2_coco', 'hf-hub:ORG/NAME' or 'none' (default: the model's)")
    ap.add_argument("--queries", help="CSV (file,label,class_name) or hf:ORG/NAME (required unless --pairs)")
    ap.add_argument("--pairs", help="a pair list (file_a,file_b,kind): same-model verification (evaluation/pairs.py)")
    ap.add_argument("--gallery", help="build the gallery from this CSV instead of the model's own")
    ap.add_argument("--gallery-filter", help="keep only gallery classes matching a rule, e.g. \"label%%5!=4\"")
    ap.add_argument("--cache", help="folder for cached embeddings (safetensors), reused across runs")
    ap.add_argument("--split", default="test", help="split name when --queries is hf:...")
    ap.add_argument("--k", type=int, default=None, help="voting neighbours (default: the model's)")
    ap.add_argument("--density-weight", type=float, default=None,
                    help="rank neighbours by cosine - W * local density (0 = plain cosine, 0.5 = CSLS; default: the model's). "
                         "AUROC/FPR95 need no threshold; the per-photo unknown flags keep the one calibrated at the model's weight")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--enroll", help="add these photos to the model's gallery first (enrolment: no retraining)")
    ap.add_argument("--enroll-filter", help="only enroll classes matching a rule, e.g. \"label%%5==4\"")
    ap.add_argument("--queries-filter", help="only queries matching a rule, e.g. \"label%%5==4\"")
    # 0 = decode in the main process: on a 2-core CPU a decoding worker beside torch's two
    # threads oversubscribes the cores and makes embedding several times slower.
    ap.add_argument("--workers", type=int, default=0, help="image-decoding worker processes")
    ap.add_argument("--limit", type=int, default=None, help="only the first N queries (quick checks)")
    ap.add_argument("--input-size", type=int, help="override the model's input size (bare backbones: try others)")
    ap.add_argument("--crop-mode", "--resize-mode", choices=("center", "squash", "shortest"),
                    help="override the model's crop mode (timm's names; 'shortest' = 'center')")
    ap.add_argument("--tta", choices=("flip", "none"), help="test-time views: flip averages each photo with its "
                    "mirror image (default: the model's own; another than the model's needs --gallery CSV)")
    ap.add_argument("--device", default="cpu", help="where the model embeds: cpu, cuda, cuda:1 (float32 either way)")
    ap.add_argument("--attributes", help="CSV file,colour,viewpoint (file as in --queries): also score colour and "
                    "viewpoint (a --queries CSV with colour / viewpoint columns is scored without it)")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--report", metavar="DIR", help="also write a report a person reads: DIR/report.html, per_class.csv, "
                    "confusions.csv, and DIR/insights/ for the app (docs/report.md)")
    ap.add_argument("--into-artifact", metavar="DIR", help="with --report: put the report's insights/ into this "
                    "artifact (e.g. vericar/default) for the app's Insights tab; the rest of it is left as it is")
    ap.add_argument("--explore", metavar="CSV", help="with --report: add the dataset explorer's figures of these photos "
                    "(e.g. the training CSV; python -m vericar.evaluation.explore runs it alone)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def _override_preprocess(rec: Recognizer, args: argparse.Namespace) -> None:
    """``--input-size`` / ``--crop-mode`` / ``--tta``: an experiment on preprocessing; the embeddings (and
    explanations) follow it. Test-time views other than the gallery's need a gallery embedded with them."""
    rec.model.preprocess = rec.model.preprocess.override(size=args.input_size, crop_mode=args.crop_mode)
    tta = () if args.tta == "none" else (args.tta,) if args.tta else rec.model.tta
    if tta != rec.model.tta and not args.gallery:
        raise VericarError(f"--tta {args.tta}: the model's gallery was embedded with views {list(rec.model.tta)}; "
                           "give --gallery CSV to embed a gallery this way too.")
    rec.model.tta = tta


def _with_photos(rec: Recognizer, args: argparse.Namespace, kw: dict) -> Recognizer:
    """``--gallery``: a gallery built from that CSV instead of the model's; ``--enroll``: photos added to it."""
    for csv_path, flag in ((args.gallery, "--gallery"), (args.enroll, "--enroll")):
        if csv_path:
            refuse_swapped(rec.meta, csv_path, flag)
    if args.gallery:
        g_samples, emb = _embed_filtered(rec.model, load_source(args.gallery, "train"), args.gallery_filter,
                                         args.cache, "gallery", kw)
        gallery = Gallery(rec.model.output_dim)
        gallery.add(emb, [s.class_name for s in g_samples], refs=[s.ref for s in g_samples])
        rec = Recognizer(rec.model, gallery, rec.ood, k=rec.k, density=rec.density, detector=rec.detector,
                         comparison=rec.comparison)
    elif args.gallery_filter:
        raise VericarError("--gallery-filter needs --gallery CSV (it filters the photos the gallery is built from).")
    if args.enroll:
        e_samples, emb = _embed_filtered(rec.model, load_source(args.enroll, "train"), args.enroll_filter,
                                         args.cache, "enrolling", kw)
        rec.add_embeddings(emb, [s.class_name for s in e_samples], refs=[s.ref for s in e_samples])
    elif args.enroll_filter:
        raise VericarError("--enroll-filter needs --enroll CSV (it filters the photos to enroll).")
    return rec


def _set_ranking(rec: Recognizer, args: argparse.Namespace) -> None:
    """``--k`` and ``--density-weight`` replace the model's own settings."""
    if args.k is not None:
        rec.k = args.k
    if args.density_weight is not None:
        density = DensityCorrection(args.density_weight, rec.density.k, rec.density.max_fetch)  # checks it first
        if rec.ood.threshold is not None and density.cfg != rec.ood.calibrated_for:
            # An experiment: AUROC / FPR95 do not use the threshold; the share flagged unknown does.
            print(f"warning: the model's unknown threshold was calibrated for {rec.ood.calibrated_for}, not "
                  f"{density.cfg}: the unknown flags use a mismatched threshold (AUROC/FPR95 do not use it); "
                  "re-calibrate with python train/calibrate.py for a matching one.", file=sys.stderr)
        rec.density = density


def _answer_queries(rec: Recognizer, queries: list[Sample], args: argparse.Namespace,
                    kw: dict) -> tuple[np.ndarray, list | None, float]:
    """Query embeddings, each query's main region (None: no detector ran; see scene.embed_main_vehicles) and
    the seconds taken to answer them: embedding, detection and cropping, search, vote and OOD."""
    t0 = time.perf_counter()
    mains = None
    if rec.detector.spec == "none":
        q = embed(rec.model, queries, desc="queries", **kw)
    else:  # timed too: detection and cropping are part of each answer
        from vericar.vision.scene import embed_main_vehicles

        q, mains = embed_main_vehicles(rec, [s.image for s in queries], batch_size=args.batch_size,
                                        progress=not args.no_progress)
    rec.predict_embeddings(q)  # timed: search + vote + OOD
    return q, mains, time.perf_counter() - t0


def _check_args(args: argparse.Namespace) -> None:
    """Refuse what would fail late (after minutes of embedding) or give wrong figures silently."""
    if not (args.queries or args.pairs):
        raise VericarError("give --queries CSV (identification) or --pairs CSV (same-model verification).")
    for name in ("k", "limit", "input_size"):
        if getattr(args, name) is not None:
            check_positive_int(getattr(args, name), f"--{name.replace('_', '-')}")
    if args.workers < 0:
        raise VericarError(f"--workers must be 0 (decode in this process) or more, got {args.workers}.")
    from vericar.evaluation.report import check_options

    check_options(args.report, args.explore, args.into_artifact)
    if args.json:
        out = Path(args.json)
        if out.is_dir() or not out.parent.is_dir():
            raise VericarError(f"--json {out}: {'is a folder' if out.is_dir() else 'its folder does not exist'}; "
                               "give a file path in an existing folder, e.g. --json dev.json.")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise VericarError(f"--device {args.device}: this machine has no usable CUDA GPU; use --device cpu.")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry point; returns the result dict. Bad input raises ``VericarError``."""
    from vericar._infra.runtime import tune_malloc
    from vericar.artifacts.hub import load

    tune_malloc()  # ~2x faster CPU embedding (vericar/_infra/runtime.py)
    args = _parser().parse_args(argv)
    _check_args(args)
    rec = load(args.model, **({"detector": args.detector} if args.detector else {}))
    rec.model.to(args.device)
    if args.input_size or args.crop_mode or args.tta:
        _override_preprocess(rec, args)
    kw = dict(batch_size=args.batch_size, num_workers=args.workers, progress=not args.no_progress)
    rec = _with_photos(rec, args, kw)
    _set_ranking(rec, args)
    if args.pairs:
        from vericar.evaluation.pairs import main_pairs

        return main_pairs(rec, args.pairs, cache=args.cache, json_out=args.json, progress=not args.no_progress)
    queries = _filtered(load_source(args.queries, args.split), args.queries_filter)[: args.limit]
    if args.attributes:
        queries = with_labels(queries, args.attributes, args.queries)
    check_vocabulary(queries)
    if len(rec.gallery) == 0:
        raise VericarError(f"model {args.model!r} has no gallery; pass --gallery CSV to build one.")
    q, mains, elapsed = _answer_queries(rec, queries, args, kw)
    answers: list = []
    result = evaluate_embeddings(rec, q, [s.class_name for s in queries], mains, answers)
    if mains is not None:  # photos in which the detector saw no sure vehicle (none at all, or only faint boxes)
        result.update(detector=rec.detector.spec, no_detection=sum(r is None or r.tentative for r in mains))
    result["ms_per_image"] = 1000.0 * elapsed / max(1, len(queries))
    from vericar.evaluation.report import format_table, report_run

    attrs = evaluate_attributes(rec, queries, args.batch_size)
    if attrs is not None:
        result["attributes"] = attrs
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if args.report:
        page = report_run(args.report, result, queries, answers, rec, mains, queries_source=args.queries,
                          explore_source=args.explore, command=["python", "-m", "vericar.evaluate", *(argv or sys.argv[1:])])
        print(f"report: {page}")
        if args.into_artifact:
            from vericar.evaluation.insights import copy_into

            print(f"insights: {copy_into(args.report, args.into_artifact)}")
    return result


if __name__ == "__main__":
    try:
        main()
    except VericarError as e:
        sys.exit(f"error: {e}")
