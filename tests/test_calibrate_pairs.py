"""train/calibrate_pairs.py: the comparison is fitted on pairs of an artifact's validation photos,
written into its config.json, and never on dev photos."""
from __future__ import annotations

import json

import pytest

from test_train import _args, _photo, tiny_csv  # noqa: F401  (tiny_csv is a fixture)
from train.calibrate_pairs import main as calibrate_pairs
from train.errors import TrainError
from train.train import main as train


def test_fit_writes_the_comparison_and_refuses_dev_photos(tiny_csv, tmp_path):  # noqa: F811
    import vericar

    out = tmp_path / "out"
    train(_args(tiny_csv, out, "--epochs", "1", "--max-steps", "2", "--k", "2", "--ood-k", "2",
                "--val-fraction", "0.34"))  # two validation photos per class: one same-model pair each
    before = json.loads((out / "config.json").read_text())
    assert "compare" not in before
    # A "dev" list that holds the validation photos: refused before anything is fitted or written.
    with pytest.raises(TrainError, match="dev is for measuring only"):
        calibrate_pairs(["--artifact", str(out), "--dev-csv", str(tiny_csv)])
    assert json.loads((out / "config.json").read_text()) == before
    cal = calibrate_pairs(["--artifact", str(out), "--negatives", "50", "--cache", str(tmp_path / "cache")])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["compare"]["method"] == "pair-logistic" and set(cfg["compare"]["open_levels"]) == {"model", "make", "type"}
    assert cfg["compare"]["info"]["pairs"]["known same"] == 4 and "cross_validated_auc" in cfg["compare"]["info"]
    assert cfg["meta"]["command"].splitlines()[-1] == "python train/calibrate_pairs.py --artifact OUT --negatives 50"
    assert cfg["ood"] == before["ood"] and cfg["calibration"] == before["calibration"]  # only "compare" changed
    rec = vericar.load(f"local-dir:{out}")
    assert rec.comparison.levels == cal.levels
    calibrate_pairs(["--artifact", str(out), "--negatives", "50", "--cache", str(tmp_path / "cache")])  # a re-run
    assert json.loads((out / "config.json").read_text())["meta"]["command"].count("calibrate_pairs") == 1
    c = rec.compare(_photo(1, 2), _photo(1, 3))
    assert 0.0 <= c.probability <= 1.0 and c.a.label is not None
