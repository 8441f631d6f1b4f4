"""Cross-fitted calibration (train/crossfit.py): trainings of one recipe with other seeds lend their
validation photos to the confidence calibration's fit."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from test_train import _args, _photo, tiny_csv  # noqa: F401  (tiny_csv is a fixture)
from train.errors import TrainError
from vericar.core.errors import VericarError
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
    from train.crossfit import join, load_member, member_votes
    from vericar.search.calibration_fit import fit_votes, log_loss

    a0, a1 = two_seeds
    rec0 = vericar.load(f"local-dir:{a0}")
    own, info0 = member_votes(a0, load_member(a0, rec0), rec0, rec0.density)
    other, info1 = member_votes(a1, load_member(a1, rec0, taken=[0]), rec0, rec0.density)
    assert (info0["seed"], info1["seed"]) == (0, 1) and info0["n"] > 0 and info1["n"] > 0
    expected, _ = fit_votes(*join([own, other]))
    alone, _ = fit_votes(*own)
    weights = load_file(a0 / "model.safetensors")
    before = json.loads((a0 / "config.json").read_text())
    calibrate(["--artifact", str(a0), "--pool", str(a1)])
    after = json.loads((a0 / "config.json").read_text())
    cal = after["calibration"]
    for key in ("temperatures", "biases", "thresholds", "scales"):
        assert cal.get(key, {}) == pytest.approx(getattr(expected, key)), key
    assert after["ood"]["threshold"] == pytest.approx(before["ood"]["threshold"], abs=1e-6)
    again = load_file(a0 / "model.safetensors")
    assert again.keys() == weights.keys() and all(torch.equal(again[n], weights[n]) for n in weights)
    # Not the fit on this training's photos alone (what a dropped source would give), and no worse than
    # it on both trainings' photos (the pooled fit is the log-loss optimum there).
    assert cal["temperatures"]["model"] != pytest.approx(alone.temperatures["model"])
    joined = join([own, other])[0]["model"]
    fitted = lambda c: (c["temperatures"]["model"], c["biases"]["model"], c.get("scales", {}).get("model", 0.0))  # noqa: E731
    pooled_loss = log_loss(joined.confidences(*fitted(cal)), joined.correct)
    assert pooled_loss <= log_loss(joined.confidences(*fitted(alone.to_dict())), joined.correct) + 1e-9
    assert "pool" not in cal["info"]["fit"]  # the diagnostics live in the metrics, not in the calibration
    rep = after["meta"]["metrics"]["calibration"]
    assert rep["n"] == info0["n"] + info1["n"]
    assert [m["seed"] for m in rep["pool"]["members"]] == [1]
    assert len(rep["pool"]["leave_one_out_ece"]["model"]) == 2
    assert "of 2 trainings of this recipe (seeds [0, 1];" in cal["info"]["fitted_on"]
    card = (a0 / "README.md").read_text()
    assert "`seed1`: seed 1, " in card and "fitted on the other trainings' only" in card
    assert vericar.load(f"local-dir:{a0}").predict(_photo(1, 2)).confidence["model"] > 0


def test_pool_refuses_another_recipe_with_a_message(two_seeds, tiny_csv, tmp_path):  # noqa: F811
    from train.calibrate import main as calibrate

    a0, a1 = two_seeds
    before = (a0 / "config.json").read_text()
    for name, extra, why in (("odd", ["--lr-head", "0.0123"], r"\['lr_head'\]"),
                             ("size", ["--eval-size", "40"], r"\['model \(backbone, head, preprocessing\)'\]"),
                             ("k", ["--k", "3"], r"\['k'\]")):
        train(_args(tiny_csv, tmp_path / name, "--epochs", "1", "--max-steps", "2", "--ood-k", "2",
                    *(["--k", "2"] if name != "k" else []), "--seed", "7", *extra))
        with pytest.raises(TrainError, match=rf"cannot join the calibration pool: it differs in {why}.*unused --seed"):
            calibrate(["--artifact", str(a0), "--pool", str(tmp_path / name)])
    # A validation slice counted twice would weigh twice: the artifact itself, or one seed twice.
    for pool in ([a0], [a1, a1]):
        with pytest.raises(TrainError, match=r"seed \d is already in the pool"):
            calibrate(["--artifact", str(a0), "--pool", *map(str, pool)])
    # A run a time limit or a signal cut short is not the recipe's model.
    raw = json.loads((a1 / "config.json").read_text())
    raw["meta"]["stopped"] = "time limit (60 s)"
    (a1 / "config.json").write_text(json.dumps(raw))
    with pytest.raises(TrainError, match=r"differs in \['a whole run \(it was stopped\)'\]"):
        calibrate(["--artifact", str(a0), "--pool", str(a1)])
    odd = tmp_path / "odd"
    with pytest.raises(VericarError, match="drop --clean-views"):
        calibrate(["--artifact", str(a0), "--pool", str(odd), "--clean-views"])
    assert (a0 / "config.json").read_text() == before  # nothing written


def test_concatenated_votes_are_the_votes_of_all_photos():
    """LevelVotes.concat of two halves = the votes of all photos at once (photos keep their own counts)."""
    from vericar.search.calibration_fit import LevelVotes

    rng = np.random.default_rng(0)

    def votes(n, n_values, per_query, near=True):
        return LevelVotes([{"a": float(x)} for x in rng.random(n)], ["a"] * n, [3] * n, n_values,
                          rng.random(n) > 0.5, [n_values - 1] * n if per_query else None,
                          [{"a": float(x)} for x in rng.random(n)] if near else None)

    x, y = votes(4, 10, False), votes(3, 10, True)
    j = LevelVotes.concat([x, y])
    assert j.weights == x.weights + y.weights and j.winners == x.winners + y.winners and j.ks == [3] * 7
    assert j.n_values_per_query == [10] * 4 + [9] * 3
    assert list(j.correct) == list(x.correct) + list(y.correct)
    assert j.maxima == x.maxima + y.maxima
    assert np.allclose(j.confidences(0.5, -1.0, 4.0), np.r_[x.confidences(0.5, -1.0, 4.0), y.confidences(0.5, -1.0, 4.0)])
    with pytest.raises(ValueError, match="at least one"):
        LevelVotes.concat([])
    with pytest.raises(ValueError, match="some not"):  # a fit must not silently lose the nearness term
        LevelVotes.concat([x, votes(2, 10, False, near=False)])


def test_join_refuses_votes_of_other_levels():
    from train.crossfit import join
    from vericar.search.calibration_fit import LevelVotes

    def votes(levels, loo):
        v = {lvl: LevelVotes([{"a": 1.0}], ["a"], [1], 2, np.array([True])) for lvl in levels}
        return v, (v if loo else None)

    known, loo = join([votes(("model", "make"), True), votes(("model", "make"), True)])
    assert len(known["make"].winners) == 2 and len(loo["model"].winners) == 2
    for other in (votes(("model",), False), votes(("model", "make"), False)):
        with pytest.raises(TrainError, match="differ in their levels.*same labels"):
            join([votes(("model", "make"), True), other])


def test_calibration_loto_scores_each_training_under_a_fit_on_the_others(two_seeds, tmp_path):
    """benchmarks/calibration_loto.py: each training's held-out votes scored under a fit on the other
    training only, with and without the nearness term (checked against the fits done by hand)."""
    import dataclasses

    import vericar
    from benchmarks.calibration_loto import main as loto
    from train.crossfit import load_member, member_votes
    from vericar.search.calibration_fit import fit_softmax, log_loss

    a0, a1 = two_seeds
    res = loto(["--artifacts", str(a0), str(a1), "--json", str(tmp_path / "loto.json")])
    assert json.loads((tmp_path / "loto.json").read_text()) == res
    rec0 = vericar.load(f"local-dir:{a0}")
    v0 = member_votes(a0, load_member(a0, rec0), rec0, rec0.density)[0][0]["model"]
    v1 = member_votes(a1, load_member(a1, rec0, taken=[0]), rec0, rec0.density)[0][0]["model"]
    for fam, strip in (("T, b, a", lambda v: v), ("T, b", lambda v: dataclasses.replace(v, maxima=None))):
        p = np.r_[strip(v0).confidences(*fit_softmax(strip(v1))), strip(v1).confidences(*fit_softmax(strip(v0)))]
        y = np.r_[v0.correct, v1.correct]
        assert res["model"][fam]["real_log_loss"] == pytest.approx(log_loss(p, y))
        assert res["model"][fam]["real_n"] == res["model"][fam]["harsh_n"] == len(y)
    with pytest.raises(SystemExit):  # one training cannot be scored under a fit on the others
        loto(["--artifacts", str(a0)])


def test_leave_one_out_against_a_naive_loop():
    """calibration_loto.leave_one_out on three sources of votes whose rightness depends on nearness:
    each source scored under fits on the other two, pooled; the nearness term wins held out."""
    import dataclasses

    from benchmarks.calibration_loto import leave_one_out
    from test_calibration import two_mechanism_votes
    from vericar.search.calibration_fit import LevelVotes, expected_calibration_error, fit_softmax, log_loss

    real = [two_mechanism_votes(seed=136 + i, n=200) for i in range(3)]
    harsh = [two_mechanism_votes(seed=236 + i, n=100) for i in range(3)]
    res = leave_one_out({"real": [{"model": v} for v in real], "harsh": [{"model": v} for v in harsh]})
    losses = {}
    for fam, strip in (("T, b, a", lambda v: v), ("T, b", lambda v: dataclasses.replace(v, maxima=None))):
        p, y, ph, yh = [], [], [], []
        for i in range(3):
            fit = fit_softmax(LevelVotes.concat([strip(real[j]) for j in range(3) if j != i]))
            p.append(strip(real[i]).confidences(*fit))
            y.append(real[i].correct)
            ph.append(strip(harsh[i]).confidences(*fit))
            yh.append(harsh[i].correct)
        p, y, ph, yh = map(np.concatenate, (p, y, ph, yh))
        row = res["model"][fam]
        assert row["real_log_loss"] == pytest.approx(log_loss(p, y))
        assert row["real_ece"] == pytest.approx(expected_calibration_error(p, y))
        assert row["harsh_gap"] == pytest.approx(ph.mean() - yh.mean())
        assert row["real_n"] == 600 and row["harsh_n"] == 300
        losses[fam] = row["real_log_loss"]
    assert losses["T, b, a"] < losses["T, b"]
