"""KNN+ OOD: score vs a naive loop, calibration TPR, self-match exclusion, (de)serialisation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vericar.core.errors import ArtifactError
from vericar.search.gallery import Gallery
from vericar.search.ood import MAX_SCORE, KNNOOD


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _naive_knn_plus(gallery: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    out = []
    for q in queries:
        sims = sorted((float(q @ g) for g in gallery), reverse=True)
        out.append(1.0 - sims[k - 1])
    return np.array(out)


def test_score_matches_naive_loop():
    x, q = _unit(200, 16, 0), _unit(30, 16, 1)
    g = Gallery.from_arrays(x, ["a"] * 200)
    ood = KNNOOD(k=7)
    s, _ = g.search(q, 12)
    np.testing.assert_allclose(ood.score(s), _naive_knn_plus(x, q, 7), atol=1e-5)


def test_exclude_self_drops_own_photo():
    x = _unit(100, 8, 2)
    g = Gallery.from_arrays(x, ["a"] * 100)
    ood = KNNOOD(k=3)
    s, _ = g.search(x, 4)
    np.testing.assert_allclose(s[:, 0], 1.0, atol=1e-5)  # each photo finds itself first
    others = [np.delete(x, i, axis=0) for i in range(len(x))]
    ref = np.array([_naive_knn_plus(o, x[i : i + 1], 3)[0] for i, o in enumerate(others)])
    np.testing.assert_allclose(ood.score(s, exclude_self=True), ref, atol=1e-5)
    with pytest.raises(ValueError, match="k >= 4"):
        ood.score(s[:, :3], exclude_self=True)


def test_padding_clamps_k_and_empty_gives_max():
    ood = KNNOOD(k=3)
    s = np.array([[0.9, 0.4, -np.inf], [-np.inf, -np.inf, -np.inf], [0.9, 0.8, 0.1]], np.float32)
    np.testing.assert_allclose(ood.score(s), [0.6, MAX_SCORE, 0.9], atol=1e-6)


def test_calibration_gives_95_percent_tpr():
    centres = _unit(20, 32, 4)
    def sample(n, seed):
        r = np.random.default_rng(seed)
        return centres[r.integers(0, 20, n)] + 0.1 * r.standard_normal((n, 32)).astype(np.float32)
    g = Gallery.from_arrays(sample(2000, 5), ["x"] * 2000)
    ood = KNNOOD(k=5)
    assert not ood.is_unknown(np.array([5.0, 10.0])).any()  # uncalibrated flags nothing
    cal, test = sample(1000, 6), sample(2000, 7)
    thr = ood.calibrate(g.search(cal, 5)[0])
    assert ood.threshold == thr and ood.tpr == 0.95
    cal_tpr = np.mean(~ood.is_unknown(ood.score(g.search(cal, 5)[0])))
    assert 0.95 <= cal_tpr <= 0.952
    test_tpr = np.mean(~ood.is_unknown(ood.score(g.search(test, 5)[0])))
    assert 0.93 <= test_tpr <= 0.97
    far = _unit(500, 32, 8)  # unrelated directions: should mostly be flagged
    assert np.mean(ood.is_unknown(ood.score(g.search(far, 5)[0]))) > 0.9


def test_calibrate_accepts_1d_scores_and_checks_input():
    ood = KNNOOD(k=1)
    assert ood.calibrate(np.arange(100) / 100.0, tpr=0.9) == pytest.approx(0.89)  # 90 of 100 are <= 0.89
    assert ood.calibrate(np.arange(1, 21) / 20.0) == pytest.approx(0.95)  # 19 of 20
    assert ood.calibrate(np.array([3.0])) == 3.0
    with pytest.raises(ValueError, match="tpr"):
        ood.calibrate(np.ones(3), tpr=1.5)
    with pytest.raises(ValueError, match="at least one"):
        ood.calibrate(np.array([]))
    with pytest.raises(ValueError, match="k must"):
        KNNOOD(k=0)


def test_dict_round_trip_through_json():
    ood = KNNOOD(k=4)
    ood.calibrate(np.linspace(0, 1, 21))
    back = KNNOOD.from_dict(json.loads(json.dumps(ood.to_dict())))
    assert (back.k, back.threshold, back.tpr) == (4, ood.threshold, 0.95)
    assert KNNOOD.from_dict(KNNOOD().to_dict()).threshold is None
    empty = KNNOOD.from_dict({})  # a config saved without an "ood" entry
    assert (empty.k, empty.threshold) == (10, None)
    with pytest.raises(ArtifactError):
        KNNOOD.from_dict({"method": "energy", "k": 3})
    with pytest.raises(ArtifactError):
        KNNOOD.from_dict({"k": "many"})
