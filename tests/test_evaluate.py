"""python -m vericar.evaluate on a tiny saved model and CSVs of images made here."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vericar.artifacts.hub import save_pretrained
from vericar.core.errors import VericarError
from vericar.core.recognizer import Recognizer
from vericar.evaluate import main
from vericar.evaluation import metrics
from vericar.evaluation.data import load_csv, parse_holdout, split_holdout, stratified_split
from vericar.models.model import create_model
from vericar.search.gallery import Gallery
from vericar.search.ood import KNNOOD
from vericar.vision.scene import Region

NAMES = ["Audi TTS Coupe 2012", "BMW X5 SUV 2007", "Audi S4 Sedan 2012", "Ford F-150 Regular Cab 2012", "Volvo 240 Sedan 1993"]
COLORS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (240, 240, 20), (240, 240, 240)]
KEYS = {"n_queries", "top1", "balanced_accuracy", "top5", "macro_f1", "recall_at_1", "ood", "ms_per_image"}


def _csv(folder, name, rows):
    path = folder / name
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "class_name"])
        w.writerows(rows)
    return str(path)


@pytest.fixture()
def data(tmp_path):
    (tmp_path / "img").mkdir()
    rows = {"g": [], "q": []}
    for c, name in enumerate(NAMES):
        for i in range(4):
            img = Image.new("RGB", (48, 40), (10 + i, 10, 10))
            ImageDraw.Draw(img).rectangle([4 + i, 4, 36, 32], fill=COLORS[c])
            f = f"img/{c}_{i}.png"
            img.save(tmp_path / f)
            rows["q" if i == 3 else "g"].append((f, c, name))
    model = create_model("timm:test_efficientnet", embed_dim=16, pretrained=False)
    rec = Recognizer(model, Gallery(16), KNNOOD(k=2), k=3)
    save_pretrained(rec, tmp_path / "m")
    return tmp_path, _csv(tmp_path, "g.csv", rows["g"]), _csv(tmp_path, "q.csv", rows["q"])


def test_cli_keys_and_figures_match_a_naive_loop(data, capsys):
    tmp, g, q = data
    out = tmp / "r.json"
    r = main(["--model", f"local-dir:{tmp / 'm'}", "--gallery", g, "--queries", q, "--json", str(out),
              "--no-progress", "--gallery-filter", "label<4"])
    saved = json.loads(out.read_text())
    assert set(saved) == KEYS and saved["n_queries"] == 5
    assert set(saved["top1"]) == set(saved["balanced_accuracy"]) == {"model", "make", "type"}
    assert set(saved["top5"]) == {"model"}
    assert saved["ood"]["n_unknown"] == 1 and 0 <= saved["ood"]["auroc"] <= 1
    assert "top-1 model" in capsys.readouterr().out
    # naive reference: 1-NN over the gallery for Recall@1
    from vericar.artifacts.hub import load

    rec = load(f"local-dir:{tmp / 'm'}")
    gs = [s for s in load_csv(g) if s.label < 4]
    qs = [s for s in load_csv(q) if s.label < 4]
    ge, qe = rec.embed([s.image for s in gs]), rec.embed([s.image for s in qs])
    nn1 = [gs[int(np.argmax(ge @ e))].class_name for e in qe]
    assert r["recall_at_1"] == pytest.approx(np.mean([a == b.class_name for a, b in zip(nn1, qs)]))


def test_enroll_and_query_filters(data):
    tmp, g, q = data
    r = main(["--model", f"local-dir:{tmp / 'm'}", "--enroll", g, "--enroll-filter", "label%2==0",
              "--queries", q, "--queries-filter", "label%2==0", "--no-progress"])
    assert r["n_queries"] == 3 and r["ood"] is None and r["top1"]["model"] is not None
    with pytest.raises(VericarError, match="no photo matches"):
        main(["--model", f"local-dir:{tmp / 'm'}", "--gallery", g, "--gallery-filter", "label>99", "--queries", q])
    with pytest.raises(VericarError, match="has no gallery"):
        main(["--model", f"local-dir:{tmp / 'm'}", "--queries", q, "--no-progress"])


def test_embedding_cache_is_reused(data):
    tmp, g, q = data
    args = ["--model", f"local-dir:{tmp / 'm'}", "--gallery", g, "--queries", q, "--cache", str(tmp / "c"), "--no-progress"]
    a = main(args)
    files = list((tmp / "c").glob("*.safetensors"))
    assert len(files) == 1
    b = main(args)
    assert a["top1"] == b["top1"] and list((tmp / "c").glob("*.safetensors")) == files


def test_holdout_rules_and_splits():
    assert [y for y in range(12) if parse_holdout("label%5==4")(y)] == [4, 9]
    assert parse_holdout(" label < 3 ")(2) and not parse_holdout("label<3")(3)
    for bad in ("__import__('os')", "label%0==1", "label == x", ""):
        with pytest.raises(VericarError):
            parse_holdout(bad)
    from vericar.evaluation.data import Sample

    samples = [Sample(f"{i}.jpg", i % 5, f"c{i % 5}") for i in range(50)]
    kept, held = split_holdout(samples, "label%5==4")
    assert len(held) == 10 and all(s.label != 4 for s in kept)
    tr, va = stratified_split(kept, 0.2, seed=1)
    assert len(va) == 8 and {s.label for s in va} == {0, 1, 2, 3} and not set(tr) & set(va)


def test_metrics_reference():
    assert metrics.topk_accuracy(["a", "b"], [["b", "a"], ["b"]], 1) == 0.5
    assert metrics.auroc([0.1, 0.2], [0.3, 0.4]) == 1.0


def test_detector_runs_queries_through_the_whole_pipeline(data):
    tmp, g, q = data
    plain = main(["--model", f"local-dir:{tmp / 'm'}", "--gallery", g, "--queries", q, "--no-progress"])
    # The drawn squares are no cars: the real detector sees nothing in them, not even a faint box, so
    # every query is "no vehicle" (wrong) although the uncalibrated unknown check would accept it.
    r = main(["--model", f"local-dir:{tmp / 'm'}", "--gallery", g, "--queries", q, "--no-progress",
              "--detector", "opencv-ssd:mobilenet_v2_coco"])
    assert r["detector"] == "opencv-ssd:mobilenet_v2_coco" and r["no_detection"] == 5
    assert plain["top1"]["model"] > 0 and r["top1"] == {"model": 0.0, "make": 0.0, "type": 0.0}
    assert r["recall_at_1"] == plain["recall_at_1"]  # the same photos, embedded whole
    with pytest.raises(VericarError, match="unknown detector spec"):
        main(["--model", f"local-dir:{tmp / 'm'}", "--queries", q, "--detector", "yolo"])


def test_no_vehicle_queries_count_as_wrong(data):
    from vericar.evaluate import evaluate_embeddings
    from vericar.artifacts.hub import load

    tmp, g, q = data
    rec = load(f"local-dir:{tmp / 'm'}")
    gs = load_csv(g)
    rec.add_embeddings(rec.embed([s.image for s in gs]), [s.class_name for s in gs])
    qs = load_csv(q)
    emb = rec.embed([s.image for s in qs])
    names = [s.class_name for s in qs]
    faint = [Region(None, (0, 0, 1, 1), True, tentative=True)] * len(qs)  # only faint boxes seen
    sure = [Region(None, (0, 0, 1, 1))] * len(qs)
    for threshold in (-1.0, None):  # the detector saw nothing: no vehicle, known-looking or not
        rec.ood.threshold = threshold
        r = evaluate_embeddings(rec, emb, names, [None] * len(qs))
        assert r["top1"] == {"model": 0.0, "make": 0.0, "type": 0.0} and r["macro_f1"] == 0.0
        assert evaluate_embeddings(rec, emb, names, sure)["top1"]["model"] > 0.0  # detected: a vehicle either way
    assert evaluate_embeddings(rec, emb, names, faint)["top1"]["model"] > 0.0  # accepted by the unknown check
    rec.ood.threshold = -1.0
    assert evaluate_embeddings(rec, emb, names, faint)["top1"]["model"] == 0.0  # rejected too: no vehicle


def test_bad_arguments_and_csvs_are_refused_before_any_work(data, tmp_path):
    """Wrong figures (k <= 0) or a failure after minutes of embedding (--json to a folder) are refused up front."""
    tmp, g, q = data
    base = ["--model", f"local-dir:{tmp / 'm'}", "--gallery", g, "--queries", q, "--no-progress"]
    for extra, says in ((["--k", "0"], "--k must be a positive"), (["--limit", "0"], "--limit must be a positive"),
                        (["--input-size", "0"], "--input-size must be a positive"),
                        (["--workers", "-1"], "--workers must be 0"),
                        (["--json", str(tmp_path)], "is a folder"),
                        (["--json", str(tmp_path / "no" / "r.json")], "its folder does not exist")):
        with pytest.raises(VericarError, match=says):
            main(base + extra)
    rows = open(q, encoding="utf-8").read()
    bom = tmp_path / "bom.csv"  # as a spreadsheet saves it; paths relative to the CSV
    bom.write_bytes(b"\xef\xbb\xbf" + rows.replace("\n", "\r\n").encode())
    assert load_csv(bom) == load_csv(q)  # the byte-order mark is not part of the first column's name
    latin = tmp_path / "latin.csv"
    latin.write_bytes(rows.encode() + "x.jpg,1,Citroën C4\n".encode("latin-1"))
    with pytest.raises(VericarError, match="is not UTF-8 text.*save it as a UTF-8 CSV"):
        load_csv(latin)
    with pytest.raises(VericarError, match="is a folder, not a CSV"):
        load_csv(tmp_path)


def test_offline_hub_sources_say_what_to_do(monkeypatch):
    """No network: a Hub dataset or a pretrained non-Lite backbone fails with a message, not a traceback."""
    import datasets
    import timm

    from vericar.core.errors import SpecError
    from vericar.evaluation.data import load_hf
    from vericar.models.backbones import create_backbone

    def offline(*a, **kw):
        raise ConnectionError("Couldn't reach the Hub")  # what datasets / huggingface_hub raise offline

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(VericarError, match="hf:org/name .*could not be loaded.*pass a local CSV"):
        load_hf("org/name", "test")
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(SpecError, match="weights of 'resnet18' could not be fetched.*pretrained=False"):
        create_backbone("timm:resnet18", pretrained=True)


def test_a_fixed_models_swapped_training_photos_are_refused_as_a_gallery(data):
    """A model fixed by train/fix_channels.py takes photos as they are; its training CSV's photos are
    stored swapped, so a gallery or an enrolment built from them as stored would be wrong: refused."""

    from vericar.artifacts.hub import read_artifact, write_config

    tmp, g, q = data
    cfg, meta = read_artifact(tmp / "m")
    write_config(tmp / "m", cfg, {**meta, "train_photos_channels": "bgr", "train_config": {"data": g}})
    for flag in ("--gallery", "--enroll"):
        with pytest.raises(VericarError, match="stored with red and blue swapped"):
            main(["--model", f"local-dir:{tmp / 'm'}", flag, g, "--queries", q, "--no-progress"])
    r = main(["--model", f"local-dir:{tmp / 'm'}", "--gallery", q, "--queries", q, "--no-progress"])  # another CSV
    assert r["n_queries"] == 5
