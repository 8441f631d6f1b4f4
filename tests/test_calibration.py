"""Calibrated confidences and partial answers (vericar/search/calibration.py) against naive references,
on embeddings placed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import softmax

from vericar.search.calibration import Calibration, level_maxima, softmax_confidence
from vericar.search.calibration_fit import (LevelVotes, collect_votes, expected_calibration_error, fit_calibration,
                                            fit_softmax, log_loss, threshold_at_max_wrong)
from vericar.artifacts.hub import load, save_pretrained
from vericar.core.errors import ArtifactError
from vericar.core.recognizer import Recognizer
from vericar.models.model import create_model
from vericar.search.gallery import Gallery
from vericar.search.ood import KNNOOD
from vericar.ui.present import prediction_dict, result_markdown

DIM = 16
# Make "Jeep": three models far apart; "Audi": two models far apart from the Jeeps.
CLASSES = {"Jeep Compass SUV 2012": 0, "Jeep Liberty SUV 2012": 1, "Jeep Wrangler SUV 2012": 2,
           "Audi A4 Sedan 2012": 8, "Audi S6 Sedan 2011": 9}
JEEP_AXIS = 5  # a direction the Jeeps share (the make), on top of their own axis (the model)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def class_centre(label: str) -> np.ndarray:
    c = np.zeros(DIM)
    c[CLASSES[label]] = 1.0
    if label.startswith("Jeep"):
        c[JEEP_AXIS] = 0.8
    return c


def photos(label: str, n: int, seed: int, spread: float = 0.08) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return unit(class_centre(label) + spread * rng.normal(size=(n, DIM)))


@pytest.fixture(scope="module")
def model():
    return create_model("timm:test_efficientnet", embed_dim=DIM, pretrained=False).eval()


def make_rec(model, calibration=None, per_class=8) -> Recognizer:
    labels = [lab for lab in CLASSES for _ in range(per_class)]
    emb = np.concatenate([photos(lab, per_class, seed=i) for i, lab in enumerate(CLASSES)])
    rec = Recognizer(model, Gallery.from_arrays(emb, labels), KNNOOD(k=5), k=5, calibration=calibration)
    held = np.concatenate([photos(lab, 6, seed=100 + i) for i, lab in enumerate(CLASSES)])
    rec.ood.calibrate(np.array([p.ood_score for p in rec.predict_embeddings(held)]), tpr=0.95)
    return rec


def naive_softmax(weights: dict, winner, k: int, n_values: int, t: float, b: float = 0.0,
                  maxima: dict | None = None, a: float = 0.0) -> float:
    logits = np.full(n_values, b)  # every value the gallery knows; the voted ones first
    for i, (v, w) in enumerate(weights.items()):
        logits[i] = w / (k * t) + a * (maxima[v] if maxima else 0.0)
    return float(softmax(logits)[list(weights).index(winner)])


def test_softmax_confidence_matches_a_full_softmax():
    w = {"a": 3.1, "b": 0.7, "c": 0.0}
    for t in (0.02, 0.1, 1.0, 5.0):
        for n in (3, 10, 196):
            for b in (-4.0, 0.0, 2.5):
                assert softmax_confidence(w, "a", 5, n, t, b) == pytest.approx(naive_softmax(w, "a", 5, n, t, b), rel=1e-9)
    assert softmax_confidence(w, "b", 5, 3, 1e-3) == pytest.approx(0.0, abs=1e-12)  # no overflow either
    assert softmax_confidence(w, None, 5, 3, 1.0) == 0.0
    near = {"a": 0.9, "b": 0.7, "c": 0.0}
    for a in (0.5, 4.0, 60.0):
        for b in (-4.0, 1.0):
            assert softmax_confidence(w, "b", 5, 196, 0.3, b, near, a) == pytest.approx(
                naive_softmax(w, "b", 5, 196, 0.3, b, near, a), rel=1e-9)
    assert softmax_confidence(w, "a", 5, 10, 0.3, 1.0, near, 0.0) == softmax_confidence(w, "a", 5, 10, 0.3, 1.0)


def test_level_maxima_match_a_naive_loop():
    rng = np.random.default_rng(3)
    labels = [f"M{i % 4} x" for i in range(12)]
    scores, idx = rng.uniform(-0.3, 1.0, 8), rng.permutation(12)[:8]
    idx[-1] = -1  # a missing neighbour (faiss pads with -1) counts for nothing
    make = lambda lab: lab.split()[0]  # noqa: E731
    want: dict = {}
    for s_, j in zip(scores[:-1], idx[:-1]):
        want[make(labels[j])] = max(want.get(make(labels[j]), 0.0), max(s_, 0.0))
    assert level_maxima(scores, idx, labels, make) == pytest.approx(want)


def random_votes(rng, n=300) -> LevelVotes:
    """Held-out votes whose right answers get more weight, so some temperature fits best."""
    weights, winners, correct = [], [], []
    for _ in range(n):
        right = rng.random() < 0.7
        w = {"win": rng.uniform(1.5, 4.5) if right else rng.uniform(0.8, 3.0), "other": rng.uniform(0, 1.5)}
        weights.append(w)
        winners.append("win")
        correct.append(right)
    return LevelVotes(weights, winners, [5] * n, 20, np.array(correct))


def test_fit_softmax_matches_a_grid_search():
    votes = random_votes(np.random.default_rng(0))
    t, b, a = fit_softmax(votes)
    assert a == 0.0  # votes without maxima: no nearness term
    logits = np.zeros((len(votes.winners), 20))
    logits[:, :2] = [[w["win"], w["other"]] for w in votes.weights]

    def nll(temp, bias):  # the full softmax over 20 values, for every photo at once
        z = logits / (5 * temp)
        z[:, 2:] = bias
        p = np.clip(softmax(z, axis=1)[:, 0], 1e-7, 1 - 1e-7)
        return -np.mean(np.where(votes.correct, np.log(p), np.log(1 - p)))

    grid = [(g, h) for g in np.exp(np.linspace(math.log(1e-2), math.log(10), 121)) for h in np.linspace(-8, 8, 81)]
    best = min(grid, key=lambda p: nll(*p))
    assert nll(t, b) <= nll(*best) + 1e-5  # at least as good as the best point of a fine grid
    assert t == pytest.approx(best[0], rel=0.1) and b == pytest.approx(best[1], abs=0.3)
    assert nll(t, b) < nll(fit_softmax_t_only(votes), 0.0)  # the bias earns its place on these votes


def near_votes(rng, n=400) -> LevelVotes:
    """Votes whose winner is right more often when its nearest neighbour is nearer, at equal weights:
    what the vote weight cannot tell, the nearness term can."""
    weights, maxima, correct = [], [], []
    for _ in range(n):
        near = rng.uniform(0.3, 1.0)
        weights.append({"win": 2.0, "other": 1.0})
        maxima.append({"win": near, "other": 0.5})
        correct.append(rng.random() < 1 / (1 + math.exp(-(8 * near - 4))))
    return LevelVotes(weights, ["win"] * n, [5] * n, 20, np.array(correct), maxima=maxima)


def test_fit_softmax_with_nearness_matches_a_grid_search():
    votes = near_votes(np.random.default_rng(4))
    t, b, a = fit_softmax(votes)
    near = np.array([m["win"] for m in votes.maxima])

    def nll(temp, bias, scale):  # the full softmax over 20 values, written out
        z = np.full((len(near), 20), bias)
        z[:, 0], z[:, 1] = 2.0 / (5 * temp) + scale * near, 1.0 / (5 * temp) + scale * 0.5
        p = np.clip(softmax(z, axis=1)[:, 0], 1e-7, 1 - 1e-7)
        return -np.mean(np.where(votes.correct, np.log(p), np.log(1 - p)))

    grid = [(g, h, s) for g in np.exp(np.linspace(math.log(0.05), math.log(10), 25)) for h in np.linspace(-6, 6, 25)
            for s in np.linspace(0, 16, 33)]
    best = min(grid, key=lambda p: nll(*p))
    assert nll(t, b, a) <= nll(*best) + 1e-4  # at least as good as the best point of the grid
    assert a > 2.0  # the nearness carries what the weights cannot
    t2, b2 = fit_softmax(LevelVotes(votes.weights, votes.winners, votes.ks, 20, votes.correct))[:2]
    assert nll(t, b, a) < nll(t2, b2, 0.0) - 0.02  # and it earns its place
    assert np.allclose(votes.confidences(t, b, a), [naive_softmax(w, "win", 5, 20, t, b, m, a)
                                                    for w, m in zip(votes.weights, votes.maxima)])


def two_mechanism_votes(seed: int = 136, n: int = 300) -> LevelVotes:
    """Votes right when the vote is lopsided or when the winner is much nearer than its rival: the
    loss over the nearness scale has a dip at 0 (sharp on the weights) and a lower one further out,
    where a search started at a = 0 stopped (the shipped default's type level did too)."""
    rng = np.random.default_rng(seed)
    sharp, scale = rng.uniform(0.05, 0.2), rng.uniform(8, 25)
    weights, maxima, correct = [], [], []
    for _ in range(n):
        kw, near_w, near_o = int(rng.integers(4, 11)), rng.uniform(0.3, 0.95), rng.uniform(0.2, 0.95)
        w = {"win": kw * near_w * 0.8, **({"other": (10 - kw) * near_o * 0.8} if kw < 10 else {})}
        weights.append(w)
        maxima.append({k: m for k, m in (("win", near_w), ("other", near_o)) if k in w})
        z = (kw - 7) / (10 * sharp) + scale * (near_w - near_o) * (kw < 10)
        correct.append(rng.random() < 1 / (1 + math.exp(-z)))
    return LevelVotes(weights, ["win"] * n, [10] * n, 9, np.array(correct), maxima=maxima)


def test_fit_softmax_finds_the_lower_of_two_dips():
    votes = two_mechanism_votes()
    w = np.array([[x["win"], x.get("other", np.nan)] for x in votes.weights])
    m = np.array([[x["win"], x.get("other", np.nan)] for x in votes.maxima])

    def nll(temp, bias, scale):  # the full softmax over 9 values, written out (no rival: 8 unvoted)
        z = np.full((len(w), 9), bias)
        z[:, :2] = w / (10 * temp) + scale * m
        z[np.isnan(z)] = bias
        p = np.clip(softmax(z, axis=1)[:, 0], 1e-7, 1 - 1e-7)
        return -np.mean(np.where(votes.correct, np.log(p), np.log(1 - p)))

    t, b, a = fit_softmax(votes)
    grid = [(g, h, s) for g in np.exp(np.linspace(math.log(0.02), math.log(3), 30)) for h in np.linspace(-4, 6, 21)
            for s in np.linspace(0, 12, 25)]
    best = min(grid, key=lambda p: nll(*p))
    assert nll(t, b, a) <= nll(*best) + 1e-4
    no_term = min((p for p in grid if p[2] == 0), key=lambda p: nll(*p))
    assert a > 1.0 and nll(t, b, a) < nll(*no_term) - 5e-4  # not the dip at a = 0
    assert nll(t, b, a) == pytest.approx(log_loss(votes.confidences(t, b, a), votes.correct), abs=1e-9)


def test_a_nearness_term_that_saves_nothing_is_dropped():
    """Votes where nearness carries nothing beyond the weights: a = 0 exactly, so the calibration is
    written in the format older vericars read."""
    votes = random_votes(np.random.default_rng(5))
    votes.maxima = [{v: 0.5 for v in w} for w in votes.weights]  # the same nearness for every value
    t, b, a = fit_softmax(votes)
    assert a == 0.0 and (t, b) == pytest.approx(fit_softmax(random_votes(np.random.default_rng(5)))[:2])


def fit_softmax_t_only(votes):
    grid = np.exp(np.linspace(math.log(1e-2), math.log(10), 150))
    return grid[np.argmin([-np.mean(np.where(votes.correct, np.log(np.clip(votes.confidences(g), 1e-7, 1)),
                                             np.log(np.clip(1 - votes.confidences(g), 1e-7, 1)))) for g in grid])]


def test_threshold_and_ece_match_naive_loops():
    rng = np.random.default_rng(1)
    conf = np.round(rng.random(400), 2)  # ties on purpose
    correct = rng.random(400) < conf
    t = threshold_at_max_wrong(conf, correct, 0.1)
    ok = [c for c in sorted(set(conf)) if ((conf >= c) & ~correct).mean() <= 0.1]
    assert t == min(ok)
    assert threshold_at_max_wrong(np.array([0.9, 0.8]), np.array([False, False]), 0.1) is None
    ece = sum(abs(correct[m].mean() - conf[m].mean()) * m.sum()
              for b in range(10) if (m := (np.minimum((conf * 10).astype(int), 9) == b)).any()) / len(conf)
    assert expected_calibration_error(conf, correct) == pytest.approx(ece)
    assert expected_calibration_error(np.array([0.25, 0.25, 0.25, 0.25]), np.array([1, 0, 0, 0])) == 0.0


def test_collect_votes_vote_as_the_recognizer_does(model):
    rec = make_rec(model)
    q = np.concatenate([photos(lab, 3, seed=200 + i, spread=0.5) for i, lab in enumerate(CLASSES)])
    truth = [lab for lab in CLASSES for _ in range(3)]
    votes = collect_votes(rec, q, truth)
    preds = rec.predict_embeddings(q)
    assert votes["model"].winners == [p.label for p in preds]
    assert votes["make"].winners == [p.make for p in preds]
    np.testing.assert_allclose(votes["make"].confidences(None), [p.confidence["make"] for p in preds], rtol=1e-6)
    rec.calibration = Calibration({"model": 0.2, "make": 0.3})
    preds = rec.predict_embeddings(q)
    np.testing.assert_allclose(votes["model"].confidences(0.2), [p.confidence["model"] for p in preds], rtol=1e-6)
    rec.calibration = Calibration({"model": 0.2, "make": 0.3}, biases={"model": -2.0}, scales={"model": 5.0, "make": 3.0})
    preds = rec.predict_embeddings(q)
    for lvl, t, b, a in (("model", 0.2, -2.0, 5.0), ("make", 0.3, 0.0, 3.0)):
        conf = votes[lvl].confidences(t, b, a)
        np.testing.assert_allclose(conf, [p.confidence[lvl] for p in preds], rtol=1e-6)
        assert not np.allclose(conf, votes[lvl].confidences(t, b))  # the term is used, not ignored
    # With its own class taken out, a Jeep photo's model vote is never right, its make vote usually is.
    loo = collect_votes(rec, q, truth, exclude_own=True)
    assert not loo["model"].correct.any() and loo["make"].correct[:9].all()
    assert loo["model"].n_values_per_query == [len(CLASSES) - 1] * len(truth)


def test_fit_calibration_on_noisy_photos(model):
    """Fitted on photos that the votes sometimes get wrong: calibrated confidences beat vote shares on
    the fitting photos, and the partial-answer thresholds keep wrong makes to 10% of the photos."""
    q = np.concatenate([photos(lab, 12, seed=300 + i, spread=0.75) for i, lab in enumerate(CLASSES)])
    truth = [lab for lab in CLASSES for _ in range(12)]
    rec = make_rec(model)
    cal, report = fit_calibration(rec, q, truth, max_wrong=0.1)
    assert set(cal.temperatures) == {"model", "make", "type", "year"} and set(cal.thresholds) == {"make", "type"}
    model_level = report["levels"]["model"]
    assert 0.5 < model_level["accuracy"] < 1.0
    assert model_level["ece_calibrated"] < model_level["ece_vote_share"]
    loo = collect_votes(rec, q, truth, exclude_own=True)["make"]
    given = loo.confidences(cal.temperatures["make"], cal.biases["make"], cal.scales.get("make", 0.0)) >= cal.thresholds["make"]
    assert given.any() and (given & ~loo.correct).mean() <= 0.1
    assert report["levels"]["make"]["partial_given_right"] == pytest.approx((given & loo.correct).mean())


def test_partial_answer_on_a_hand_built_gallery(model, tmp_path):
    """A photo near the Jeeps' shared direction but far from every Jeep model: Jeep, SUV, model unknown."""
    cal = Calibration({lvl: 0.1 for lvl in ("model", "make", "type", "year")}, {"make": 0.6, "type": 0.6})
    rec = make_rec(model, calibration=cal)
    centre = np.zeros(DIM)
    centre[[0, 1, 2]] = 0.45  # between the three Jeep models, on the Jeep direction
    centre[JEEP_AXIS] = 1.0
    (pred,) = rec.predict_embeddings(unit(centre[None, :]))
    assert pred.unknown and pred.make == "Jeep" and pred.type == "SUV"
    assert pred.unknown_levels == ["model", "year"] and pred.is_known("make") and not pred.is_known("model")
    assert pred.confidence["make"] >= cal.thresholds["make"]
    d = prediction_dict(pred)
    assert (d["label"], d["model"], d["year"], d["make"], d["type"]) == (None, None, None, "Jeep", "SUV")
    assert d["confidence"]["model"] == 0.0 and d["confidence"]["make"] == pytest.approx(pred.confidence["make"])
    words = f"Probably a Jeep (make {pred.confidence['make']:.0%}) · SUV ({pred.confidence['type']:.0%}) · model not in the gallery"
    assert f"### {words}" in result_markdown(pred, rec.ood.threshold)
    assert d["summary"] == words[0].lower() + words[1:]
    # Far from everything: nothing is named.
    far = np.zeros(DIM)
    far[12] = 1.0
    (pred,) = rec.predict_embeddings(unit(far[None, :]))
    assert pred.unknown and not any(pred.is_known(lvl) for lvl in ("model", "make", "type", "year"))
    assert "Unknown vehicle" in result_markdown(pred, rec.ood.threshold)
    # The calibration travels with the artifact; one written before it existed loads uncalibrated.
    save_pretrained(rec, tmp_path / "a")
    assert load(f"local-dir:{tmp_path / 'a'}").calibration == cal
    rec.calibration = Calibration()
    save_pretrained(rec, tmp_path / "b")
    assert not load(f"local-dir:{tmp_path / 'b'}").calibration.active


def test_calibration_from_dict_refuses_bad_input():
    assert not Calibration.from_dict(None).active
    cal = Calibration({"model": 0.3}, {"make": 0.7}, {"fitted_on": "x"}, {"model": -4.0}, {"model": 6.0})
    assert cal.to_dict()["method"] == "knn-softmax-sim" and Calibration.from_dict(cal.to_dict()) == cal
    # Without a nearness term the artifact stays readable by the vericar before it (same method name).
    assert Calibration({"model": 0.3}, scales={"model": 0.0}).to_dict()["method"] == "knn-softmax"
    assert "scales" not in Calibration({"model": 0.3}).to_dict()
    for bad in ({"method": "platt"}, {"method": "knn-softmax", "temperatures": {"model": -1}},
                {"method": "knn-softmax-sim", "temperatures": {"model": 1}, "scales": {"model": -2.0}},
                {"method": "knn-softmax-sim", "scales": {"model": float("nan")}}, "knn-softmax",
                {"method": "knn-softmax", "temperatures": {"model": 1}, "scales": {"model": 2.0}},  # old readers ignore
                {"method": "knn-softmax-sim", "scales": {"model": True}}, {"method": "knn-softmax-sim", "scales": 0},
                {"method": "knn-softmax-sim", "scales": [1.0]}, {"method": "knn-softmax", "thresholds": {"make": float("nan")}},
                {"method": "knn-softmax", "thresholds": {"make": 1.5}}, {"method": "knn-softmax", "info": "x"},
                {"method": "knn-softmax", "temperatures": {"model": 1e308}}, {"method": "knn-softmax-sim", "scales": {"model": 1e9}},
                {"method": "knn-softmax", "thresholds": {"colour": 0.5}},
                {"method": "knn-softmax", "temperatures": {"model": "hot"}}):
        with pytest.raises(ArtifactError, match="calibrat"):
            Calibration.from_dict(bad)
