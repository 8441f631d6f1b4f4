"""The evaluation report: per-class table, confusions and figures from one run's answers, as files.

``python -m vericar.evaluate ... --report DIR`` writes, from the same run as its JSON:

- ``DIR/report.html``: the page a person reads (self-contained: images are data URIs; see page.py);
- ``DIR/per_class.csv``: class, support, precision, recall, F1, the class it is most often taken for, how often;
- ``DIR/confusions.csv``: true, predicted, count for every off-diagonal pair;
- ``DIR/result.json`` (what ``--json`` writes) and ``DIR/predictions.csv`` (one row per query, answers.py);
- ``DIR/insights/``: what the app's Insights tab reads (insights.py); ``train/ship.py --insights DIR``
  puts it into an artifact. It holds figures and tables only, never a photo.

Per-class figures are over the queries of classes the gallery knows, as top-1 is; the answer at a
level is the one the product shows (answers.level_answer). scikit-learn computes them.
"""
from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from vericar.core.errors import VericarError
from vericar.evaluation import charts, metrics
from vericar.evaluation.answers import query_table
from vericar.evaluation.data import portable_value
from vericar.search.calibration_fit import expected_calibration_error, reliability
from vericar.search.taxonomy import LEVELS

TOP_PAIRS = 20  # most-confused pairs shown
ATTRIBUTE_COLUMNS = ("colour", "color", "viewpoint", "scene")  # optional query CSV columns: accuracy per value


def per_class_table(true: Sequence[Any], pred: Sequence[Any]) -> pd.DataFrame:
    """One row per true class (sorted by name): support, precision, recall, F1, and the class it is most
    often taken for with how often ("" / 0 when never mistaken). A None answer is ``metrics.NO_ANSWER``."""
    t, p = metrics.as_class_names(true, pred)
    classes = sorted(set(t))
    labels = classes + sorted(set(p) - set(classes))  # answers that are no true class still count against precision
    prec, rec, f1, support = precision_recall_fscore_support(t, p, labels=labels, zero_division=0)
    off = confusion_matrix(t, p, labels=labels)
    np.fill_diagonal(off, 0)
    worst = off.argmax(axis=1)
    n = len(classes)
    return pd.DataFrame({
        "class": classes, "support": support[:n].astype(int), "precision": prec[:n], "recall": rec[:n],
        "f1": f1[:n], "confused_with": [labels[j] if off[i, j] else "" for i, j in enumerate(worst[:n])],
        "confused_count": [int(off[i, j]) for i, j in enumerate(worst[:n])],
    })


def confusion_pairs(true: Sequence[Any], pred: Sequence[Any]) -> pd.DataFrame:
    """(true, predicted, count) for every pair with true != predicted, most frequent first."""
    t, p = metrics.as_class_names(true, pred)
    pairs = pd.DataFrame({"true": t, "predicted": p})
    pairs = pairs[pairs["true"] != pairs["predicted"]]
    counted = pairs.value_counts(["true", "predicted"]).rename("count").reset_index()
    return counted.sort_values(["count", "true", "predicted"], ascending=[False, True, True], ignore_index=True)


def level_matrix(true: Sequence[Any], pred: Sequence[Any]) -> tuple[np.ndarray, list[str]]:
    """The confusion matrix over the true values (sorted) and any other answer after them."""
    t, p = metrics.as_class_names(true, pred)
    labels = sorted(set(t)) + sorted(set(p) - set(t))
    return confusion_matrix(t, p, labels=labels), labels


def per_make_table(known: pd.DataFrame) -> pd.DataFrame:
    """Per true make: photos, the share whose model is right and the share whose make is right."""
    ok = known.assign(model_right=known["pred_model"] == known["true_model"],
                      make_right=known["pred_make"] == known["true_make"])
    g = ok.groupby("true_make")
    return pd.DataFrame({"make": list(g.groups), "photos": g.size().to_numpy(),
                         "model_accuracy": g["model_right"].mean().to_numpy(),
                         "make_accuracy": g["make_right"].mean().to_numpy()})


def reliability_levels(known: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per level: the reliability bins and ECE of the confidence shown beside the answer."""
    out = {}
    for level in LEVELS:
        conf = known[f"conf_{level}"].to_numpy(dtype=float)
        right = (known[f"pred_{level}"] == known[f"true_{level}"]).to_numpy()
        out[level] = {"bins": reliability(conf, right), "ece": expected_calibration_error(conf, right)}
    return out


def attribute_accuracy(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Model-level accuracy of the known queries per value of an attribute column (e.g. colour)."""
    known = table[table["known"] & table[column].notna()]
    g = known.assign(right=known["pred_model"] == known["true_model"]).groupby(column)
    return pd.DataFrame({"value": [str(v) for v in g.groups], "photos": g.size().to_numpy(),
                         "accuracy": g["right"].mean().to_numpy()})


def build(result: dict[str, Any], table: pd.DataFrame, threshold: float | None = None) -> dict[str, Any]:
    """Every table and figure of the report (figures as PNG bytes under ``figures``)."""
    known = table[table["known"]]
    if known.empty:
        raise VericarError("no query of a class the gallery knows: there is no per-class figure to report; "
                           "query with photos of the gallery's classes (or drop --report).")
    per_class = per_class_table(known["true_model"].tolist(), known["pred_model"].tolist())
    per_class.insert(1, "make", [known.loc[known["true_model"] == c, "true_make"].iloc[0] for c in per_class["class"]])
    pairs = confusion_pairs(known["true_model"].tolist(), known["pred_model"].tolist())
    per_make = per_make_table(known)
    rel = reliability_levels(known)
    figs: dict[str, tuple[str, bytes]] = {}
    figs["f1"] = ("F1 per class, lowest first", charts.sorted_bars(
        per_class["class"].tolist(), per_class["f1"].tolist(), counts=per_class["support"].tolist(),
        xlabel="F1 (photos beside each bar)", title="F1 per class"))
    figs["make_accuracy"] = ("Model accuracy per make", charts.sorted_bars(
        per_make["make"].tolist(), per_make["model_accuracy"].tolist(), counts=per_make["photos"].tolist(),
        xlabel="share of photos whose model is right", title="Accuracy per make"))
    m, labels = level_matrix(known["true_make"].tolist(), known["pred_make"].tolist())
    figs["make_confusion"] = ("Make-level confusion matrix", charts.confusion_figure(
        m, labels, title="Makes: true (rows) against answered (columns)", annotate=True))
    m, labels = level_matrix(known["true_model"].tolist(), known["pred_model"].tolist())
    figs["model_confusion"] = ("Model-level confusion matrix (classes sorted by name, so a make's models are "
                               "neighbours)", charts.confusion_figure(m, labels, title=f"{len(labels)} classes: "
                               "true (rows) against answered (columns)", annotate=False))
    figs["reliability"] = ("Reliability diagram: accuracy against the confidence shown",
                           charts.reliability_figure(rel))
    unknown = table[~table["known"]]
    if len(unknown) and len(known):
        figs["unknown_scores"] = ("Unknown-score histograms", charts.score_histograms(
            known["ood_score"].to_numpy(), unknown["ood_score"].to_numpy(), threshold))
    attributes = {}
    if "detected" in table:
        found = table["detected"].map({True: "vehicle found", False: "no sure vehicle"})
        counts = found.value_counts()
        figs["scene"] = ("What the detector found in each query photo", charts.count_bars(
            counts.index.tolist(), counts.tolist(), title="Detector outcome per photo"))
        attributes["detector"] = attribute_accuracy(table.assign(detector=found), "detector")
    for col in ATTRIBUTE_COLUMNS:
        if col in table and table[col].notna().any():
            acc = attribute_accuracy(table, col)
            attributes[col] = acc
            figs[f"by_{col}"] = (f"Accuracy per {col}", charts.sorted_bars(
                acc["value"].tolist(), acc["accuracy"].tolist(), counts=acc["photos"].tolist(),
                xlabel="share of photos whose model is right", title=f"Accuracy per {col}"))
    return {"result": result, "per_class": per_class, "pairs": pairs, "per_make": per_make,
            "reliability": rel, "attributes": attributes, "figures": figs}


def write_report(out: str | Path, result: dict[str, Any], table: pd.DataFrame, *, title: str,
                 threshold: float | None = None, explore: dict[str, Any] | None = None,
                 photos: bool = True, command: str | None = None) -> Path:
    """Write the report folder (see the module docstring) and return the path of report.html.
    ``photos``: thumbnails of the most-confused pairs from the query photos (when they are files)."""
    from vericar.evaluation import insights, page

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rep = build(result, table, threshold)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    table.to_csv(out / "predictions.csv", index=False)
    rep["per_class"].to_csv(out / "per_class.csv", index=False)
    rep["pairs"].to_csv(out / "confusions.csv", index=False)
    insights.write(out / insights.FOLDER, rep, title=title, explore=explore, command=command)
    thumbs = page.pair_thumbnails(rep["pairs"].head(TOP_PAIRS), table) if photos else {}
    html = page.render_report(rep, title=title, thumbs=thumbs, explore=explore, command=command)
    (out / "report.html").write_text(html, encoding="utf-8")
    return out / "report.html"


def check_options(report: str | None, explore: str | None, into_artifact: str | None) -> None:
    """Refuse report options that would fail only after the whole evaluation has run."""
    if report and Path(report).is_file():
        raise VericarError(f"--report {report} is a file; give a folder (made if missing), e.g. --report dev-report.")
    if (explore or into_artifact) and not report:
        raise VericarError(f"{'--explore CSV' if explore else '--into-artifact DIR'} adds to a report: give --report "
                           "DIR too (python -m vericar.evaluation.explore CSV --out DIR runs the explorer alone).")
    if into_artifact and not (Path(into_artifact) / "config.json").is_file():
        raise VericarError(f"--into-artifact {into_artifact} is not an artifact folder (no config.json); give the "
                           "model's folder, e.g. vericar/default.")


def _fmt(x: Any) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def format_table(r: dict[str, Any]) -> str:
    """A small markdown table of an evaluation result (what the CLI prints)."""
    rows = [("queries", str(r["n_queries"]))]
    if r.get("top1"):
        rows += [(f"top-1 {lvl}", _fmt(v)) for lvl, v in r["top1"].items()]
        rows += [(f"balanced accuracy {lvl}", _fmt(v)) for lvl, v in r["balanced_accuracy"].items()]
        rows += [("top-5 model", _fmt(r["top5"]["model"])), ("macro-F1", _fmt(r["macro_f1"])),
                 ("Recall@1", _fmt(r["recall_at_1"]))]
    if r.get("ood"):
        rows += [("OOD AUROC", _fmt(r["ood"]["auroc"])), ("OOD FPR95", _fmt(r["ood"]["fpr95"])),
                 ("unknown queries", str(r["ood"]["n_unknown"]))]
    rows.append(("ms / image", f"{r['ms_per_image']:.1f}"))
    if r.get("attributes"):  # colour / viewpoint, for queries labelled with them
        from vericar.evaluation.attributes import table_rows

        rows += table_rows(r["attributes"])
    return "\n".join(["| metric | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows])


def with_attributes(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """``table`` with the query CSV's attribute columns (``ATTRIBUTE_COLUMNS``) joined by photo, if it has any."""
    path = Path(source)
    if source.startswith("hf:") or not path.is_file():
        return table
    cols = pd.read_csv(path, encoding="utf-8-sig", nrows=0).columns
    extra = [c for c in ATTRIBUTE_COLUMNS if c in cols]
    if not extra:
        return table
    rows = pd.read_csv(path, encoding="utf-8-sig", usecols=["file", *extra], dtype=str)
    rows["file"] = [str(path.parent / f) for f in rows["file"]]  # as load_csv writes a sample's path
    return table.merge(rows.drop_duplicates("file"), on="file", how="left")


def report_run(out: str | Path, result: dict[str, Any], samples: Sequence[Any], answers: Sequence[Any], rec: Any,
               mains: Sequence[Any] | None, *, queries_source: str, explore_source: str | None = None,
               command: Sequence[str] | None = None) -> Path:
    """The report of one ``vericar.evaluate`` run: its queries (``Sample``), the answers it scored, the
    recognizer it asked; with ``explore_source``, the explorer's figures of those photos too."""
    known = set(rec.gallery.classes)
    table = query_table([s.ref for s in samples], [s.class_name for s in samples], answers,
                        [s.class_name in known for s in samples], mains)
    table = with_attributes(table, queries_source)
    explore = None
    if explore_source:
        from vericar.evaluation.explore import explore as run_explore

        explore = run_explore(explore_source)
    spec = portable_value(rec.config.source.spec) if rec.config.source else "a model built in code"
    title = f"vericar evaluation: {spec} on {Path(queries_source).name}"
    # Recorded without this machine's folders: the insights may ship in an artifact.
    return write_report(out, result, table, title=title, threshold=rec.ood.threshold, explore=explore,
                        command=shlex.join(map(portable_value, command)) if command else None)
