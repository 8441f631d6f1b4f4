"""The evaluation report (vericar/evaluation/report.py), the dataset explorer and the Insights file.

Per-class figures against naive loops on a hand-made case; a report folder written by the real CLI on a
tiny model and drawn photos, checked against its own JSON; the explorer on a few real photos of the
shared dataset (skipped where it is absent); train/ship.py carrying the insights into an artifact.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from test_evaluate import NAMES, data  # noqa: F401 - the tiny model and CSVs of drawn photos
from vericar.core.errors import VericarError
from vericar.evaluate import main
from vericar.evaluation import insights, metrics
from vericar.evaluation.report import confusion_pairs, per_class_table

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "stanford_cars"
TRUE = ["a", "a", "a", "a", "b", "b", "c", "c", "c", "d"]
PRED = ["a", "a", "b", "b", "b", None, "c", "a", "c", "b"]  # no ties among a class's mistakes


def test_per_class_figures_and_confusions_match_a_naive_loop():
    table = per_class_table(TRUE, PRED).set_index("class")
    assert list(table.index) == ["a", "b", "c", "d"]
    recalls = []
    for c in "abcd":
        tp = sum(t == c and p == c for t, p in zip(TRUE, PRED))
        answered, support = sum(p == c for p in PRED), sum(t == c for t in TRUE)
        precision = tp / answered if answered else 0.0
        recall = tp / support
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        row = table.loc[c]
        assert (row["support"], row["precision"], row["recall"], row["f1"]) == pytest.approx(
            (support, precision, recall, f1))
        recalls.append(recall)
        wrong = [metrics.NO_ANSWER if p is None else p for t, p in zip(TRUE, PRED) if t == c and p != c]
        worst = max(set(wrong), key=wrong.count) if wrong else ""
        assert (row["confused_with"], row["confused_count"]) == (worst, wrong.count(worst) if wrong else 0)
    assert table.loc["b", "confused_with"] == metrics.NO_ANSWER  # "no vehicle found" is a mistake of its own
    assert table.loc["a", ["confused_with", "confused_count"]].tolist() == ["b", 2]
    assert metrics.balanced_accuracy(TRUE, PRED) == pytest.approx(np.mean(recalls))
    pairs = confusion_pairs(TRUE, PRED)
    naive: dict[tuple, int] = {}
    for t, p in zip(TRUE, PRED):
        p = metrics.NO_ANSWER if p is None else p
        if t != p:
            naive[(t, p)] = naive.get((t, p), 0) + 1
    assert {(r.true, r.predicted): r.count for r in pairs.itertuples()} == naive
    assert list(pairs["count"]) == sorted(pairs["count"], reverse=True)
    with pytest.raises(metrics.MetricError, match="one prediction per item"):
        per_class_table(TRUE, PRED[:-1])
    # A None read back from a table (pandas keeps it as NaN) is the same "no answer", not a class "nan".
    assert metrics.as_class_names(["a", "b"], [None, float("nan")])[1] == [metrics.NO_ANSWER] * 2


def _with_colour(q: str) -> str:
    """The query CSV with a colour column (the report then draws accuracy per colour)."""
    rows = list(csv.DictReader(open(q, encoding="utf-8")))
    path = Path(q).with_name("q_colour.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["file", "label", "class_name", "colour"])
        w.writeheader()
        w.writerows({**r, "colour": "red" if int(r["label"]) % 2 else "blue"} for r in rows)
    return str(path)


def test_report_folder_agrees_with_its_json(data):  # noqa: F811
    tmp, g, q = data
    out = tmp / "report"
    r = main(["--model", f"local-dir:{tmp / 'm'}", "--gallery", g, "--queries", _with_colour(q), "--no-progress",
              "--gallery-filter", "label<4", "--report", str(out), "--explore", g])
    assert {p.name for p in out.iterdir()} >= {"report.html", "per_class.csv", "confusions.csv", "result.json",
                                               "predictions.csv", "insights"}
    assert json.loads((out / "result.json").read_text()) == r
    per_class = pd.read_csv(out / "per_class.csv")
    n_known = r["n_queries"] - r["ood"]["n_unknown"]
    assert per_class["support"].sum() == n_known == 4
    assert set(per_class["class"]) == set(NAMES[:4])
    assert r["balanced_accuracy"]["model"] == pytest.approx(per_class["recall"].mean())
    predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    known = predictions[predictions["known"]]
    assert r["top1"]["model"] == pytest.approx((known["pred_model"] == known["true_model"]).mean())
    confusions = pd.read_csv(out / "confusions.csv")
    assert (confusions["true"] != confusions["predicted"]).all()
    assert confusions["count"].sum() == round(n_known * (1 - r["top1"]["model"]))
    html = (out / "report.html").read_text()
    srcs = re.findall(r'src="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/") for s in srcs)  # self-contained: nothing fetched
    assert "Accuracy per colour" in html and "Balanced accuracy" in html.replace("balanced", "Balanced")
    assert "<script" not in html.lower()
    doc = insights.load(out)
    assert doc["result"] == r and len(doc["per_class"]) == 4 and doc["explore"]["n_photos"] == 15
    assert {f["name"] for f in doc["figures"]} >= {"f1", "make_confusion", "model_confusion", "reliability",
                                                   "unknown_scores", "by_colour"}
    # Only figures and the JSON go into the app's folder: never a photo (the samples stay in the page).
    assert {p.suffix for p in (out / "insights").iterdir()} == {".json", ".png"}
    assert len(list((out / "insights").iterdir())) == len(doc["figures"]) + len(doc["explore"]["figures"]) + 1


def test_report_refuses_bad_folders_before_any_work(data, tmp_path):  # noqa: F811
    tmp, g, q = data
    base = ["--model", f"local-dir:{tmp / 'm'}", "--gallery", g, "--queries", q, "--no-progress"]
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    with pytest.raises(VericarError, match="is a file; give a folder"):
        main(base + ["--report", str(a_file)])
    with pytest.raises(VericarError, match="--explore CSV adds to a report"):
        main(base + ["--explore", g])
    with pytest.raises(VericarError, match="--into-artifact DIR adds to a report"):
        main(base + ["--into-artifact", str(tmp / "m")])
    with pytest.raises(VericarError, match="is not an artifact folder"):
        main(base + ["--report", str(tmp_path / "r"), "--into-artifact", str(tmp_path)])
    bad = tmp_path / "insights"
    bad.mkdir()
    (bad / "insights.json").write_text('{"format": 99}')
    with pytest.raises(VericarError, match="not an insights file of format 1"):
        insights.load(tmp_path)
    assert insights.load(tmp_path / "nothing") is None


@pytest.mark.skipif(not (DATA / "train.csv").is_file(), reason="the shared Stanford Cars copy is not here")
def test_explorer_on_real_photos(tmp_path):
    from vericar.evaluation import explore

    rows = list(csv.DictReader(open(DATA / "train.csv", encoding="utf-8")))[:10]
    small = tmp_path / "few.csv"
    with open(small, "w", newline="") as f:
        w = csv.DictWriter(f, ["file", "label", "class_name"])
        w.writeheader()
        w.writerows({"file": str(DATA / r["file"]), "label": r["label"], "class_name": r["class_name"]} for r in rows)
        w.writerow({"file": str(tmp_path / "missing.jpg"), "label": 0, "class_name": rows[0]["class_name"]})
    res = explore.main([str(small), "--out", str(tmp_path / "out"), "--workers", "2", "--samples", "2"])
    table = res["photos"].set_index("file")
    for r in rows:
        with Image.open(DATA / r["file"]) as img:
            assert (table.loc[str(DATA / r["file"]), "width"], table.loc[str(DATA / r["file"]), "height"]) == img.size
    assert res["summary"]["unreadable"] == 1 and res["n_photos"] == 11
    good = res["photos"].dropna()
    assert (good["blur"] > 0).all() and good[["mean_r", "mean_g", "mean_b"]].stack().between(0, 255).all()
    assert res["class_counts"][rows[0]["class_name"]] == sum(r["class_name"] == rows[0]["class_name"] for r in rows) + 1
    assert set(res["figures"]) == {"class_counts", "sizes", "aspect", "colour", "blur"}
    assert all(v.startswith(b"\xff\xd8") for v in res["samples"].values())  # JPEG grids, one per class
    html = (tmp_path / "out" / "explore.html").read_text()
    assert html.count("data:image/jpeg") == len(res["samples"]) and (tmp_path / "out" / "photos.csv").is_file()
    # A sharper copy scores higher than a blurred one: the blur score measures what it says.
    from PIL import ImageFilter

    src = Image.open(DATA / rows[0]["file"]).convert("RGB")
    src.save(tmp_path / "sharp.jpg")
    src.filter(ImageFilter.GaussianBlur(4)).save(tmp_path / "blurred.jpg")
    assert explore.measure(str(tmp_path / "sharp.jpg"))[0]["blur"] > 3 * explore.measure(str(tmp_path / "blurred.jpg"))[0]["blur"]


def test_insights_go_into_an_artifact_without_local_folders(data, tmp_path):  # noqa: F811
    from test_app import make_artifact
    from train.ship import main as ship
    from vericar.artifacts.hub import load
    from vericar.search.gallery import Gallery

    tmp, g, q = data
    art = make_artifact(tmp_path / "art")
    before = {p.name: p.read_bytes() for p in art.iterdir()}
    out = tmp_path / "rep"
    main(["--model", f"local-dir:{art}", "--queries", q, "--no-progress", "--report", str(out),
          "--into-artifact", str(art)])
    assert {p.name: p.read_bytes() for p in art.iterdir() if p.is_file()} == before  # only insights/ was added
    doc = insights.load(art)
    assert doc is not None and str(tmp_path) not in json.dumps({k: doc[k] for k in ("command", "title")})
    assert f"local-dir:{art.name}" in doc["command"] and load(f"local-dir:{art}").gallery.classes
    dest = tmp_path / "shipped"
    ship(["--artifact", str(art), "--dest", str(dest), "--detector", "none", "--insights", str(out)])
    assert insights.load(dest)["per_class"] == doc["per_class"]
    again = tmp_path / "again"  # re-shipping the shipped copy keeps its insights and its photo references
    ship(["--artifact", str(dest), "--dest", str(again), "--detector", "none"])
    assert insights.load(again)["per_class"] == doc["per_class"]
    assert Gallery.load(again).refs == Gallery.load(dest).refs
    with pytest.raises(Exception, match="holds no insights"):
        ship(["--artifact", str(art), "--dest", str(dest), "--detector", "none", "--insights", str(tmp_path)])


def test_the_shipped_default_carries_the_insights_of_its_dev_run():
    """vericar/default/insights: made by docs/report.md's command; figures and tables only, no local folder."""
    from vericar.artifacts.hub import DEFAULT_DIR

    doc = insights.load(DEFAULT_DIR)
    assert doc is not None, "the shipped default has no insights: run the command in docs/report.md"
    r = doc["result"]
    # dev.csv's 1,006 photos show 195 of the 196 classes
    assert len(doc["per_class"]) == 195 and sum(c["support"] for c in doc["per_class"]) == r["n_queries"] == 1006
    assert r["balanced_accuracy"]["model"] == pytest.approx(np.mean([c["recall"] for c in doc["per_class"]]))
    assert doc["explore"]["n_photos"] == 8144 and sum(doc["explore"]["class_counts"].values()) == 8144
    assert {p.suffix for p in (DEFAULT_DIR / insights.FOLDER).iterdir()} == {".json", ".png"}
    text = (DEFAULT_DIR / insights.FOLDER / insights.FILE).read_text()
    assert not re.search(r"(?<![\w.])/(work|home|tmp|root|Users)/", text)
