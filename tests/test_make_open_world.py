"""benchmarks/make_open_world.py: the aggregated make probability against a naive full softmax,
and the rule figures against counts made by hand."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from benchmarks.make_open_world import aggregated_make, rule_figures
from vericar.core.prediction import Neighbour, Prediction
from vericar.search.taxonomy import Taxonomy

CLASSES = ["Jeep Compass SUV 2012", "Jeep Liberty SUV 2012", "Jeep Wrangler SUV 2012", "Audi A4 Sedan 2012",
           "Audi S6 Sedan 2011", "BMW M3 Coupe 2012"]
TAX = Taxonomy.from_labels(CLASSES)


def make_of(c: str) -> str:
    return TAX.level_value(c, "make")


def pred(neigh: list[tuple[str, float]]) -> Prediction:
    return Prediction(label=neigh[0][0], make=None, model=None, type=None, year=None, confidence={}, unknown=False,
                      ood_score=0.0, neighbours=[Neighbour(lab, s) for lab, s in neigh])


@pytest.mark.parametrize("t,b,a", [(0.3, -5.8, 0.0), (0.1, 0.0, 0.0), (2.0, 1.5, 0.0), (0.3, -5.8, 7.0)])
def test_aggregated_make_is_the_full_softmax_summed_per_make(t, b, a):
    # Two Audi neighbours (one class), three Jeep neighbours over two classes; BMW and a Jeep unvoted.
    neigh = [("Audi A4 Sedan 2012", 0.9), ("Jeep Compass SUV 2012", 0.7), ("Jeep Liberty SUV 2012", 0.6),
             ("Audi A4 Sedan 2012", 0.5), ("Jeep Compass SUV 2012", 0.4)]
    k = len(neigh)
    w = {c: sum(max(s, 0) for lab, s in neigh if lab == c) for c in CLASSES}
    near = {c: max([s for lab, s in neigh if lab == c], default=0.0) for c in CLASSES}
    logits = np.array([w[c] / (k * t) + a * near[c] if w[c] > 0 else b for c in CLASSES])
    p = softmax(logits)
    per_make = {m: float(sum(pi for c, pi in zip(CLASSES, p) if make_of(c) == m)) for m in ("Jeep", "Audi", "BMW")}
    best = max(per_make, key=per_make.get)
    counts = {m: sum(make_of(c) == m for c in CLASSES) for m in per_make}
    got, prob = aggregated_make(pred(neigh), make_of, counts, len(CLASSES), t, b, a)
    assert got == best and prob == pytest.approx(per_make[best], rel=1e-9)


def test_rule_figures_count_by_hand():
    truth = ["Jeep Compass SUV 2012", "Jeep Liberty SUV 2012", "Audi A4 Sedan 2012", "Audi S6 Sedan 2011"]
    recs = [{"make": "Jeep"}, {"make": "Audi"}, {"make": "Audi"}, {"make": "Jeep"}]  # right, wrong, right, wrong
    given = np.array([True, True, False, False])
    model_given = np.array([True, False, False, False])
    f = rule_figures(recs, truth, TAX, lambda r: (given, model_given))
    assert f["given_right"] == 0.25 and f["given_wrong"] == 0.25 and f["withheld"] == 0.5
    assert f["precision"] == 0.5 and f["model_withheld"] == 0.75 and f["top1"] == 0.5
