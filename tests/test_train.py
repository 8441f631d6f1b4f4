"""Training smoke run: tiny model, tiny images made here, a few steps, then --resume; the artifact loads."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from train.config import parse_args
from train.errors import TrainError, cli
from train.train import main
from vericar.core.errors import VericarError

NAMES = ["Audi TTS Coupe 2012", "Acura TL Sedan 2012", "BMW X5 SUV 2007", "Dodge Ram Pickup 3500 Crew Cab 2010"]


def _photo(cls: int, i: int) -> Image.Image:
    rng = np.random.default_rng(100 * cls + i)
    img = Image.new("RGB", (48 + 4 * i, 40), tuple(int(c) for c in rng.integers(0, 60, 3)))
    d = ImageDraw.Draw(img)
    color = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 40)][cls]
    d.rectangle([6 + i, 8, 30 + 3 * cls, 30], fill=color)
    return img


@pytest.fixture()
def tiny_csv(tmp_path):
    (tmp_path / "img").mkdir()
    rows = []
    for c, name in enumerate(NAMES):
        for i in range(6):
            f = f"img/{c}_{i}.jpg"
            _photo(c, i).save(tmp_path / f)
            rows.append((f, c, name))
    path = tmp_path / "train.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "class_name"])
        w.writerows(rows)
    return path


def _args(csv_path, out, *extra):
    return ["--backbone", "timm:test_efficientnet", "--pretrained", "false", "--embed-dim", "16",
            "--data", str(csv_path), "--output-dir", str(out), "--train-size", "32", "--eval-size", "32",
            "--batch-size", "8", "--m-per-class", "2", "--val-fraction", "0.2", "--num-workers", "0",
            "--progress", "false", "--val-gallery-per-class", "3", "--freeze-stages", "1", *extra]


def test_train_resume_and_load(tiny_csv, tmp_path):
    import vericar

    out = tmp_path / "out"
    r = main(_args(tiny_csv, out, "--epochs", "1"))
    assert (out / "checkpoints" / "last" / "trainer_state.yaml").is_file()
    assert len(r["history"]) == 1
    # resume continues from epoch 1 to 2 instead of starting over
    r2 = main(_args(tiny_csv, out, "--epochs", "2", "--resume", "auto"))
    assert [h["epoch"] for h in r2["history"]] == [1, 2]
    for name in ("config.json", "model.safetensors", "README.md", "training_curve.png", "metrics.csv", "train_config.yaml"):
        assert (out / name).is_file(), name
    rec = vericar.load(f"local-dir:{out}")
    assert len(rec.gallery) == 24 and rec.ood.threshold is not None
    assert rec.model.pretrained_cfg["input_size"][1:] == (32, 32)
    pred = rec.predict(_photo(2, 1))
    assert pred.label in NAMES and len(pred.neighbours) > 0
    assert json.loads((out / "config.json").read_text())["meta"]["command"].startswith("python train/train.py")


def test_resume_finds_best_weights_of_the_older_checkpoint_layout(tiny_csv, tmp_path, capsys):
    """Older versions kept best.safetensors beside checkpoints/last; resuming such a run keeps them,
    and a checkpoint without best weights anywhere says so instead of silently shipping the last ones."""
    out = tmp_path / "out"
    main(_args(tiny_csv, out, "--epochs", "1"))
    (out / "checkpoints" / "last" / "best.safetensors").rename(out / "checkpoints" / "best.safetensors")
    capsys.readouterr()
    main(_args(tiny_csv, out, "--epochs", "2", "--resume", "auto"))
    assert "no best.safetensors" not in capsys.readouterr().out
    (out / "checkpoints" / "best.safetensors").unlink(missing_ok=True)
    (out / "checkpoints" / "last" / "best.safetensors").unlink()
    main(_args(tiny_csv, out, "--epochs", "3", "--resume", "auto"))
    assert "no best.safetensors" in capsys.readouterr().out


def test_feature_cache_path_matches_full_model(tiny_csv, tmp_path):
    """The cached-feature CPU path trains, and its artifact's plain forward equals trunk → late stages."""
    import torch

    import vericar
    from train.featcache import LateStages, trunk_forward

    out = tmp_path / "fc"
    main(_args(tiny_csv, out, "--epochs", "1", "--feature-cache-stages", "2", "--freeze-stages", "0"))
    rec = vericar.load(f"local-dir:{out}")
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        rec.model.eval()
        split = LateStages(rec.model, 2)(trunk_forward(rec.model, x, 2))
        torch.testing.assert_close(split, rec.model(x), atol=1e-5, rtol=1e-4)
    assert len(rec.gallery) == 24


def test_holdout_keeps_classes_out(tiny_csv, tmp_path):
    import vericar

    out = tmp_path / "ow"
    main(_args(tiny_csv, out, "--epochs", "1", "--max-steps", "1", "--holdout-classes", "label%4==3"))
    rec = vericar.load(f"local-dir:{out}")
    assert NAMES[3] not in rec.gallery.classes and len(rec.gallery.classes) == 3


def test_ood_scores_benchmark_runs_on_a_holdout_artifact(tiny_csv, tmp_path):
    """benchmarks/ood_scores.py end to end (flip TTA + backbone features) on a tiny open-world artifact,
    and its expanded Mahalanobis distance against the naive per-class loop."""
    from benchmarks import ood_scores

    rng = np.random.default_rng(0)
    q, means = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
    a = rng.normal(size=(5, 5))
    cov = a @ a.T + np.eye(5)
    naive = np.array([[(x - m) @ np.linalg.inv(cov) @ (x - m) for m in means] for x in q])
    np.testing.assert_allclose(ood_scores._sq_mahalanobis(q, means, cov), naive, rtol=1e-8, atol=1e-8)
    g, labels = rng.normal(size=(40, 5)), np.array(list("abcd") * 10)  # relative form: Ren et al. 2021, eq. 3
    mus = {c: g[labels == c].mean(0) for c in "abcd"}
    within = sum(np.outer(x - mus[c], x - mus[c]) for x, c in zip(g, labels)) / len(g)
    mu0 = g.mean(0)
    whole = sum(np.outer(x - mu0, x - mu0) for x in g) / len(g)
    md = lambda x, m, c: (x - m) @ np.linalg.inv(c) @ (x - m)  # noqa: E731
    want = [min(md(x, mus[c], within) - md(x, mu0, whole) for c in "abcd") for x in q]
    np.testing.assert_allclose(ood_scores._mahalanobis(q, g, labels)["relative Mahalanobis"], want, rtol=1e-7)

    out = tmp_path / "ow"
    main(_args(tiny_csv, out, "--epochs", "1", "--max-steps", "1", "--holdout-classes", "label%4==3"))
    rows = ood_scores.main(["--model", f"local-dir:{out}", "--queries", str(tiny_csv), "--flip", "--backbone-features",
                            "--json", str(tmp_path / "rows.json")])
    # Mirroring the preprocessed tensor == preprocessing the mirrored photo (the eval crop is centred).
    import vericar
    from PIL import ImageOps

    from vericar.evaluation.data import Sample, load_csv
    from vericar.evaluate import embed_samples

    model = vericar.load(f"local-dir:{out}").model
    samples = load_csv(tiny_csv)[:8]
    mirrored = [Sample(ImageOps.mirror(Image.open(s.image).convert("RGB")), s.label, s.class_name) for s in samples]
    got = ood_scores._embed_mirrored(model, samples)
    want = embed_samples(model, mirrored, progress=False, num_workers=0)
    plain = embed_samples(model, samples, progress=False, num_workers=0)
    assert (got * want).sum(1).min() > 0.999 and np.abs(got - want).max() < np.abs(plain - want).max() / 5
    names = [r["score"] for r in rows]
    assert "relative Mahalanobis" in names and "backbone features: relative Mahalanobis" in names
    assert all(0.0 <= r["auroc"] <= 1.0 and 0.0 <= r["fpr95"] <= 1.0 for r in rows)
    assert json.loads((tmp_path / "rows.json").read_text()) == rows


def test_config_overrides_and_errors(tmp_path):
    cfg = parse_args(["--config", "train/configs/offline-cpu.yaml", "--epochs", "3", "--lr-head", "1e-3"])
    assert cfg.epochs == 3 and cfg.lr_head == pytest.approx(1e-3) and cfg.backbone.startswith("timm:tf_efficientnet_lite")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epocs: 3\n")
    with pytest.raises(TrainError, match="unknown setting"):
        parse_args(["--config", str(bad)])
    with pytest.raises(TrainError, match="--epochs: 'many' is not a int"):
        parse_args(["--epochs", "many"])
    with pytest.raises(TrainError, match="no such file; presets are in train/configs/"):
        parse_args(["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(TrainError, match="--coarse-ce-weight -1.0: a loss weight is >= 0"):
        parse_args(["--coarse-ce-weight", "-1"])
    assert parse_args(["--lr-backbone", "0"]).lr_backbone == 0.0  # a linear probe: the backbone stays as it is
    bad.write_text("lr_head: 1e-3\n")  # YAML reads this as text; it is the number it looks like
    assert parse_args(["--config", str(bad)]).lr_head == pytest.approx(1e-3)
    for flags, says in ((["--lr-head", "-1"], "--lr-head -1.0: must be a finite number > 0"),
                        (["--lr-head", "0"], "--lr-head 0.0: must be a finite number > 0"),
                        (["--lr-backbone", "nan"], "--lr-backbone nan: must be a finite number >= 0"),
                        (["--weight-decay", "-0.1"], "--weight-decay -0.1: must be a finite number >= 0")):
        with pytest.raises(TrainError, match=says):
            parse_args(flags)
    for text, says in (("lr_head: fast\n", "lr_head: 'fast' is not a float.*fix it in the preset"),
                       ("thumbnails: 3\n", "thumbnails: 3 is not a bool"),
                       ("epochs: [3\n", "is not valid YAML"), ("- epochs\n", "expected 'key: value' lines"),
                       ("weight_decay: null\n", "weight_decay: needs a value")):
        bad.write_text(text)
        with pytest.raises(TrainError, match=says):
            parse_args(["--config", str(bad)])


def test_recalibrate_artifact_with_density_correction(tiny_csv, tmp_path):
    """train/calibrate.py redoes train.py's calibration (same threshold at the same settings), then
    switches an artifact's ranking (CSLS weight / k): settings, threshold, command and card follow."""
    import vericar
    from train.calibrate import main as calibrate

    out = tmp_path / "cal"
    main(_args(tiny_csv, out, "--epochs", "1", "--max-steps", "2", "--ood-k", "2", "--k", "2"))
    trained = json.loads((out / "config.json").read_text())
    assert trained["ranking"]["density"]["weight"] == 0.5  # CSLS is the default ranking
    assert trained["ood"]["calibrated_for"] == trained["ranking"]["density"]
    assert "ood_threshold" not in trained["meta"] and "density_weight" not in trained["meta"]["train_config"]
    calibrate(["--artifact", str(out), "--density-weight", "0.5"])
    again = json.loads((out / "config.json").read_text())
    assert again["ood"]["threshold"] == pytest.approx(trained["ood"]["threshold"], abs=1e-6)
    calibrate(["--artifact", str(out), "--density-weight", "0.25", "--density-k", "3"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["ranking"]["density"]["weight"] == 0.25 and cfg["ranking"]["density"]["k"] == 3
    assert cfg["ood"]["calibrated_for"] == cfg["ranking"]["density"]  # the threshold follows the ranking
    assert "`cos - 0.25 * density`" in (out / "README.md").read_text()  # the card reads the artifact
    assert cfg["meta"]["command"].splitlines()[0].startswith("python train/train.py")
    assert cfg["meta"]["command"].splitlines()[-1].startswith("python train/calibrate.py")
    rec = vericar.load(f"local-dir:{out}")
    assert rec.density.weight == 0.25 and rec.ood.threshold == pytest.approx(cfg["ood"]["threshold"])
    assert "python train/calibrate.py" in (out / "README.md").read_text()
    assert rec.predict(_photo(1, 2)).label in NAMES


def test_recalibrate_refuses_bad_input_with_a_message(tmp_path):
    """A bad weight or a folder that is no artifact: one line saying what is wrong, nothing written."""
    from train.calibrate import main as calibrate

    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(VericarError, match="density weight must be a number >= 0"):
        calibrate(["--artifact", str(tmp_path), "--density-weight", "-1"])
    with pytest.raises(VericarError, match="not a vericar model folder"):
        calibrate(["--artifact", str(tmp_path), "--density-weight", "0.5"])
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_checkpoint_swap_survives_a_crash_between_renames(tmp_path):
    """A crash after last -> prev but before next -> last: resume finds the whole previous checkpoint."""
    from train.checkpoints import MARKER, latest_checkpoint, swap_in

    last, nxt = tmp_path / "last", tmp_path / "next"
    for d, epoch in ((last, 1), (nxt, 2)):
        d.mkdir()
        (d / MARKER).write_text(f"epoch: {epoch}\n")
    swap_in(nxt, last)
    assert (last / MARKER).read_text() == "epoch: 2\n" and not nxt.exists() and not (tmp_path / "prev").exists()
    assert latest_checkpoint(last) == last
    last.rename(tmp_path / "prev")  # the crash window
    (tmp_path / "next").mkdir()  # a half-written next: no marker
    assert latest_checkpoint(last) == tmp_path / "prev"


def test_ship_copies_a_loadable_model_without_thumbnails(tiny_csv, tmp_path):
    import vericar
    from train.ship import main as ship

    out, dest = tmp_path / "art", tmp_path / "pkg" / "default"
    main(_args(tiny_csv, out, "--epochs", "1", "--max-steps", "1"))
    for _ in range(2):  # shipping over an existing model replaces it
        ship(["--artifact", str(out), "--dest", str(dest)])
    assert not (dest / "checkpoints").exists() and not dest.with_name("default.old").exists()
    rec = vericar.load(f"local-dir:{dest}")
    assert len(rec.gallery) == 24 and rec.gallery.thumbnail(0) is None
    assert all(not r.startswith("/") for r in rec.gallery.refs)
    # Training writes no detector; the shipped model runs the SSD unless told otherwise.
    assert vericar.load(f"local-dir:{out}").detector.spec == "none"
    assert rec.detector.spec == "opencv-ssd:mobilenet_v2_coco"
    (tmp_path / "dev.json").write_text(json.dumps({"n_queries": 3, "top1": {"model": 1, "make": 1, "type": 1},
                                                  "top5": {"model": 1}, "macro_f1": 1, "recall_at_1": 1}))
    ship(["--artifact", str(out), "--dest", str(dest), "--detector", "none", "--eval-json", str(tmp_path / "dev.json"),
          "--eval-command", f"python -m vericar.evaluate --model local-dir:{out} --queries {tiny_csv}"])
    assert vericar.load(f"local-dir:{dest}").detector.spec == "none"
    assert f"--model local-dir:art --queries {tiny_csv.name}" in (dest / "README.md").read_text()
    # No folder of the training machine but the data's is recorded in the package; the card says how
    # to reproduce it.
    for f in dest.iterdir():
        if f.suffix in (".json", ".md", ".yaml", ".csv"):
            assert str(tmp_path) not in f.read_text().replace(str(tiny_csv), "DATA"), f.name
    assert "--output-dir OUT" in (dest / "README.md").read_text()
    assert "output_dir: OUT" in (dest / "train_config.yaml").read_text()
    # Unreadable extra inputs are refused before anything is written: the shipped model stays as it was.
    card = (dest / "README.md").read_text()
    (tmp_path / "bad.json").write_text('{"top1": 1}')
    for extra, words in ((["--card-extra", str(tmp_path / "missing.md")], "--card-extra .*cannot read it"),
                         (["--eval-json", str(tmp_path / "bad.json")], "not what python -m vericar.evaluate")):
        with pytest.raises(TrainError, match=words):
            ship(["--artifact", str(out), "--dest", str(dest), *extra])
        assert (dest / "README.md").read_text() == card and not dest.with_name("default.tmp").exists()
    # A half-written artifact, or a file as --dest, is refused and the shipped model stays as it was.
    half = tmp_path / "half"
    shutil.copytree(out, half)
    (half / "model.safetensors").unlink()
    with pytest.raises(TrainError, match="not a whole artifact"):
        ship(["--artifact", str(half), "--dest", str(dest)])
    (tmp_path / "a-file").write_text("")
    with pytest.raises(TrainError, match="--dest .*a-file is a file"):
        ship(["--artifact", str(out), "--dest", str(tmp_path / "a-file")])
    assert (dest / "README.md").read_text() == card and vericar.load(f"local-dir:{dest}").detector.spec == "none"


def test_portable_command_drops_machine_folders():
    from train.ship import portable_command, portable_settings

    line = ("python -m train.train --config train/configs/offline-cpu.yaml --data ../d/train.csv "
            "--feature-cache-dir /work/fc --output-dir '/home/me/my runs/a' --seed 1")
    assert portable_command(line) == ("python -m train.train --config train/configs/offline-cpu.yaml "
                                      "--data ../d/train.csv --output-dir OUT --seed 1")
    assert portable_command("python -m train.calibrate --artifact=/w/a --pool /w/f1 /w/f2 --feature-cache-dir=/x") == \
        "python -m train.calibrate --artifact=OUT --pool f1 f2"
    # A --flag=value, or a dropped flag, does not hand its role to the values after it.
    assert portable_command("x --artifact /w/a --pool=/w/f1 /w/f2 --feature-cache-dir /c /w/f3") == \
        "x --artifact OUT --pool=f1 f2 f3"
    assert portable_command("x --artifact=/w/a /w/b --data=/d/t.csv /w/c --output-dir /w/o -v /w/d") == \
        "x --artifact=OUT b --data=/d/t.csv c --output-dir OUT -v d"
    assert portable_command("x --model local-dir:/w/a --queries ../d/dev.csv --data=/d/train.csv") == \
        "x --model local-dir:a --queries ../d/dev.csv --data=/d/train.csv"
    with pytest.raises(TrainError, match="cannot read the recorded command.*meta.command"):
        portable_command("x --output-dir '/w/a")
    assert portable_settings({"output_dir": "/w/a", "feature_cache_dir": "/w/fc", "data": "/d/train.csv",
                              "resume": "/w/a/checkpoints/last", "seed": 0}) == \
        {"output_dir": "OUT", "feature_cache_dir": None, "data": "/d/train.csv", "resume": None, "seed": 0}


def test_ship_interrupted_between_renames_still_serves_and_recovers(tiny_csv, tmp_path, monkeypatch):
    """A crash after `default` -> `default.old` and before `default.tmp` -> `default`: the loader
    serves default.old (with a warning), and the next ship restores it before replacing it."""
    import vericar
    import vericar.artifacts.hub as hub
    from train.ship import main as ship

    out, dest = tmp_path / "art", tmp_path / "pkg" / "default"
    main(_args(tiny_csv, out, "--epochs", "1", "--max-steps", "1"))
    ship(["--artifact", str(out), "--dest", str(dest)])
    real_rename, calls = Path.rename, []

    def crash_on_second_rename(self, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError("simulated power cut")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", crash_on_second_rename)
    with pytest.raises(OSError, match="power cut"):
        ship(["--artifact", str(out), "--dest", str(dest)])
    monkeypatch.setattr(Path, "rename", real_rename)
    stranded = dest.with_name("default.old")
    assert not dest.exists() and (stranded / "config.json").is_file()
    monkeypatch.setattr(hub, "DEFAULT_DIR", dest)
    with pytest.warns(UserWarning, match="interrupted"):
        assert len(vericar.load("default").gallery) == 24
    tmp = dest.with_name("default.tmp")
    real_copy = shutil.copy2

    def fail_copy(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copy2", fail_copy)
    with pytest.raises(OSError, match="disk full"):  # fails again, but after putting the model back
        ship(["--artifact", str(out), "--dest", str(dest)])
    monkeypatch.setattr(shutil, "copy2", real_copy)
    assert (dest / "config.json").is_file() and not stranded.exists()
    ship(["--artifact", str(out), "--dest", str(dest)])
    assert len(vericar.load("default").gallery) == 24 and not stranded.exists() and not tmp.exists()


def test_coarse_heads_give_each_level_logits_and_add_their_loss(tiny_csv, tmp_path):
    """--coarse-ce-weight: a cosine-softmax head per make and type as well, checked against a naive loop."""
    from types import SimpleNamespace

    import torch
    import torch.nn.functional as F

    import vericar
    from train.card import _heads
    from train.config import TrainConfig
    from train.heads import COARSE_CE_LEVELS, CosineClassifier
    from train.loop import _loss

    assert COARSE_CE_LEVELS == ("make", "type")
    assert set(CosineClassifier(4, 3).state_dict()) == {"weight"}  # without coarse heads: the checkpoints of before
    torch.manual_seed(0)
    head = CosineClassifier(4, 3, scale=2.0, coarse={"make": 2, "type": 2})
    emb = torch.randn(5, 4)
    logits = head(emb)
    naive = [[2.0 * float(e @ w) / float(e.norm() * w.norm()) for w in head.coarse[0]] for e in emb]
    torch.testing.assert_close(logits["make"], torch.tensor(naive))
    assert logits["model"].shape == (5, 3) and logits["type"].shape == (5, 2)
    index = {"model": [0, 1, 2], "make": [0, 0, 1], "type": [1, 0, 1]}
    y = torch.tensor([0, 1, 2, 2, 0])
    run = SimpleNamespace(cfg=TrainConfig(ce_weight=1.0, coarse_ce_weight=0.5, label_smoothing=0.0),
                          classifier=head, metric_loss=None, level_index=index)
    want = F.cross_entropy(logits["model"], y) + sum(
        0.5 * F.cross_entropy(logits[lvl], torch.tensor([index[lvl][int(c)] for c in y])) for lvl in ("make", "type"))
    torch.testing.assert_close(_loss(run, emb, y), want)
    run.cfg = TrainConfig(ce_weight=1.0, coarse_ce_weight=0.0, label_smoothing=0.0)
    torch.testing.assert_close(_loss(run, emb, y), F.cross_entropy(logits["model"], y))
    # A real run with the heads trains and writes an artifact that loads (the heads are dropped with the classifier).
    out = tmp_path / "coarse"
    main(_args(tiny_csv, out, "--epochs", "1", "--max-steps", "2", "--coarse-ce-weight", "1.0"))
    assert vericar.load(f"local-dir:{out}").predict(_photo(1, 2)).label in NAMES
    assert "per make and body type at weight 1" in (out / "README.md").read_text()  # the card says how it was trained
    assert _heads({"ce_weight": 0.0, "coarse_ce_weight": 0.5}) == " + cosine-softmax (a proxy per make and body type at weight 0.5)"
    assert _heads({"ce_weight": 0.0, "coarse_ce_weight": 0.0}) == ""  # no classification head: nothing to name
    settings = (out / "train_config.yaml").read_text()
    with pytest.raises(TrainError, match="coarse-ce-weight"):  # its checkpoint has heads a plain run has not
        main(_args(tiny_csv, out, "--epochs", "2", "--resume", "auto"))
    assert (out / "train_config.yaml").read_text() == settings  # a failed run leaves the artifact's settings
    with pytest.raises(TrainError, match="--output-dir .*README.md: cannot create it as a folder"):
        main(_args(tiny_csv, out / "README.md", "--epochs", "1"))


def test_training_with_flip_and_recalibrating_to_flip_or_back(tiny_csv, tmp_path):
    """--tta flip trains an artifact whose gallery is flip-averaged (training's gallery goes through the
    one embedding path); train/calibrate.py --tta re-embeds an artifact's gallery from its photos either way."""
    import vericar
    from train.calibrate import main as calibrate
    from vericar.evaluation.data import load_csv
    from vericar.models.embedding import embed

    out = tmp_path / "flip"
    main(_args(tiny_csv, out, "--epochs", "1", "--max-steps", "2", "--ood-k", "2", "--k", "2", "--tta", "flip"))
    rec = vericar.load(f"local-dir:{out}")
    assert rec.model.tta == ("flip",) and rec.gallery.tta == ("flip",)
    by_ref = {s.ref: s for s in load_csv(tiny_csv)}
    photos = [by_ref[r] for r in rec.gallery.refs]
    np.testing.assert_allclose(rec.gallery.embeddings, embed(rec.model, photos), atol=5e-4)

    calibrate(["--artifact", str(out), "--tta", "none"])
    plain = vericar.load(f"local-dir:{out}")
    assert plain.model.tta == () and plain.gallery.tta == ()
    assert json.loads((out / "config.json").read_text())["format_version"] in (3, 4)
    np.testing.assert_allclose(plain.gallery.embeddings, embed(plain.model, photos), atol=5e-4)
    assert np.abs(plain.gallery.embeddings - rec.gallery.embeddings).max() > 1e-3
    assert plain.gallery.labels == rec.gallery.labels and plain.gallery.refs == rec.gallery.refs
    with pytest.raises(TrainError, match="--tta 'sideways'"):
        main(_args(tiny_csv, tmp_path / "bad", "--tta", "sideways"))

    # The CPU preset's path: the gallery from the cached early maps of each photo and of its mirror image.
    cached = tmp_path / "cached"
    main(_args(tiny_csv, cached, "--epochs", "1", "--max-steps", "2", "--feature-cache-stages", "2",
               "--freeze-stages", "0", "--tta", "flip"))
    rec = vericar.load(f"local-dir:{cached}")
    assert rec.gallery.tta == ("flip",)
    photos = [by_ref[r] for r in rec.gallery.refs]
    got, want, plain = rec.gallery.embeddings, embed(rec.model, photos), embed(rec.model, photos, tta=())
    # The maps are cached in float16: close to the flip-averaged embeddings, and much closer than to plain ones.
    assert np.abs(got - want).max() < 5e-3 and np.abs(got - want).mean() < 0.2 * np.abs(got - plain).mean()
