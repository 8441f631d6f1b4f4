"""Cross-fitted calibration (train/crossfit.py): trainings of one recipe with other seeds lend their
validation photos to the confidence calibration's fit."""
from __future__ import annotations

import json

import numpy as np
import pytest

from test_train import _args, _photo, tiny_csv  # noqa: F401  (tiny_csv is a fixture)
from train.errors import TrainError
from train.train import main as train


@pytest.fixture()
def two_seeds(tiny_csv, tmp_path):  # noqa: F811
    outs = [tmp_path / f"seed{s}" for s in (0, 1)]
    for s, out in enumerate(outs):
        train(_args(tiny_csv, out, "--epochs", "1", "--max-steps", "2", "--k", "2", "--ood-k", "2", "--seed", str(s)))
    return outs


def test_pooled_calibration_is_one_fit_on_every_trainings_photos(two_seeds):
    """--pool gives the temperatures, biases and thresholds of one fit on the joined votes of both
    trainings' validation photos (each against its own training photos); the OOD threshold and
    the weights stay the calibrated artifact's own; config.json and the card say what it was fitted on."""
    import vericar
    from train.calibrate import main as calibrate
    from train.crossfit import join, member_votes
    from vericar.search.calibration import fit_votes

    a0, a1 = two_seeds
    rec0 = vericar.load(f"local-dir:{a0}")
    own, info0 = member_votes(a0, rec0, rec0.density)
    other, info1 = member_votes(a1, rec0, rec0.density)
    assert info1["seed"] == 1 and info0["n"] + info1["n"] == len(own[0]["model"].winners) + len(other[0]["model"].winners)
    expected, _ = fit_votes(*join([own, other]))
    before = json.loads((a0 / "config.json").read_text())
    calibrate(["--artifact", str(a0), "--pool", str(a1)])
    after = json.loads((a0 / "config.json").read_text())
    cal = after["calibration"]
    for key in ("temperatures", "biases", "thresholds"):
        assert cal[key] == pytest.approx(getattr(expected, key)), key
    assert after["ood"]["threshold"] == pytest.approx(before["ood"]["threshold"], abs=1e-6)
    rep = after["meta"]["metrics"]["calibration"]
    assert rep["n"] == info0["n"] + info1["n"]
    assert [m["seed"] for m in rep["pool"]["members"]] == [1]
    assert len(rep["pool"]["leave_one_out_ece"]["model"]) == 2
    assert "of 2 trainings of this recipe (seeds [0, 1])" in cal["info"]["fitted_on"]
    card = (a0 / "README.md").read_text()
    assert "seed 1 (" in card and "fitted on the other trainings' only" in card
    assert vericar.load(f"local-dir:{a0}").predict(_photo(1, 2)).confidence["model"] > 0


def test_pool_refuses_another_recipe_with_a_message(two_seeds, tiny_csv, tmp_path):  # noqa: F811
    from train.calibrate import main as calibrate

    a0, _ = two_seeds
    odd = tmp_path / "odd"
    train(_args(tiny_csv, odd, "--epochs", "1", "--max-steps", "2", "--k", "2", "--ood-k", "2", "--lr-head", "0.0123"))
    before = (a0 / "config.json").read_text()
    with pytest.raises(TrainError, match=r"cannot join the calibration pool.*\['lr_head'\].*--seed 1"):
        calibrate(["--artifact", str(a0), "--pool", str(odd)])
    with pytest.raises(Exception, match="drop --clean-views"):
        calibrate(["--artifact", str(a0), "--pool", str(odd), "--clean-views"])
    assert (a0 / "config.json").read_text() == before  # nothing written


def test_concatenated_votes_are_the_votes_of_all_photos():
    """LevelVotes.concat of two halves = the votes of all photos at once (photos keep their own counts)."""
    from vericar.search.calibration import LevelVotes

    rng = np.random.default_rng(0)

    def votes(n, n_values, per_query):
        return LevelVotes([{"a": float(x)} for x in rng.random(n)], ["a"] * n, [3] * n, n_values,
                          rng.random(n) > 0.5, [n_values - 1] * n if per_query else None)

    x, y = votes(4, 10, False), votes(3, 10, True)
    j = LevelVotes.concat([x, y])
    assert j.weights == x.weights + y.weights and j.winners == x.winners + y.winners and j.ks == [3] * 7
    assert j.n_values_per_query == [10] * 4 + [9] * 3
    assert list(j.correct) == list(x.correct) + list(y.correct)
    assert np.allclose(j.confidences(0.5, -1.0), np.r_[x.confidences(0.5, -1.0), y.confidences(0.5, -1.0)])
    with pytest.raises(ValueError, match="at least one"):
        LevelVotes.concat([])
