"""Metrics against small hand-computed examples."""
from __future__ import annotations

import numpy as np
import pytest

from vericar.evaluation.metrics import auroc, fpr_at_tpr, macro_f1, recall_at_k, topk_accuracy


def test_topk_accuracy():
    true = ["a", "b", "c", "d"]
    ranked = [["a", "x"], ["x", "b"], ["x", "y", "c"], []]
    assert topk_accuracy(true, ranked, 1) == 0.25
    assert topk_accuracy(true, ranked, 2) == 0.5
    assert topk_accuracy(true, ranked, 3) == 0.75
    with pytest.raises(ValueError, match="ranked lists"):
        topk_accuracy(true, ranked[:2], 1)
    with pytest.raises(ValueError, match="k must"):
        topk_accuracy(true, ranked, 0)


def test_macro_f1_hand_example():
    # class a: tp=1 fp=1 fn=1 -> F1 0.5 ; class b: tp=1 fp=0 fn=1 -> 2/3 ; class c: tp=1 fp=1 fn=0 -> 2/3
    true = ["a", "a", "b", "b", "c"]
    pred = ["a", "c", "b", "a", "c"]
    assert macro_f1(true, pred) == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert macro_f1(["a", "b"], ["a", "b"]) == 1.0
    # None ("no answer") is its own class, never equal to a real one.
    assert macro_f1(["a", "a"], ["a", None]) == pytest.approx((2 / 3 + 0.0) / 2)


def test_recall_at_k():
    q = ["a", "b", "c"]
    neigh = np.array([["x", "a", "a"], ["b", "x", "x"], ["x", "x", "x"]], dtype=object)
    assert recall_at_k(q, neigh, 1) == pytest.approx(1 / 3)
    assert recall_at_k(q, neigh, 2) == pytest.approx(2 / 3)
    assert recall_at_k(q, [["a", None], [None, None], ["c"]], 2) == pytest.approx(2 / 3)


def test_auroc_hand_example():
    # unknown positives {0.4, 0.9}, known {0.1, 0.5}: pairs (pos > neg) = 0.4>0.1, 0.9>0.1, 0.9>0.5 -> 3/4
    assert auroc([0.1, 0.5], [0.4, 0.9]) == pytest.approx(0.75)
    assert auroc([0.1, 0.2], [0.8, 0.9]) == 1.0
    assert auroc([0.8, 0.9], [0.1, 0.2]) == 0.0
    with pytest.raises(ValueError, match="known and unknown"):
        auroc([], [0.1])


def test_fpr_at_tpr_hand_example():
    known = np.arange(1, 21) / 20.0  # 0.05 .. 1.0 ; 95% kept known -> threshold 0.95
    unknown = np.array([0.5, 0.94, 0.95, 0.96, 2.0])
    assert fpr_at_tpr(known, unknown) == pytest.approx(3 / 5)
    assert fpr_at_tpr(known, unknown, tpr=0.5) == pytest.approx(1 / 5)  # threshold 0.5
    assert fpr_at_tpr([0.1, 0.2], [0.9, 1.0]) == 0.0
    with pytest.raises(ValueError, match="NaN"):
        fpr_at_tpr([np.nan], [0.1])
