"""The open-world part of a calibration (vericar/search/unseen_fit.py), fitted on never-trained models:
checked against naive computations on embeddings placed by hand."""
from __future__ import annotations

import numpy as np
import pytest

from test_calibration import CLASSES, DIM, class_centre, make_rec, model, photos, unit  # noqa: F401 (model: fixture)
from vericar.artifacts import config_file
from vericar.artifacts.hub import load, save_pretrained
from vericar.core.errors import ArtifactError, VericarError
from vericar.search.calibration import Calibration
from vericar.search.calibration_fit import collect_votes, fit_calibration, fit_softmax
from vericar.search.unseen_fit import carry_over, fit_unseen, ood_threshold
from vericar.ui.present import prediction_dict

# Never-trained models: two more Jeeps near the Jeep direction, and a make the gallery lacks.
UNSEEN = {"Jeep Cherokee SUV 2012": 12, "Jeep Patriot SUV 2012": 13, "Tata Nano Hatchback 2011": 14}


def unseen_photos(label: str, n: int, seed: int) -> np.ndarray:
    c = np.zeros(DIM)
    c[UNSEEN[label]] = 1.0
    if label.startswith("Jeep"):
        c[0] = 0.5  # a never-trained Jeep leans towards one trained Jeep model...
        c[8] = 0.35  # ...and a little towards an Audi: makes go wrong sometimes
    return unit(c + 0.25 * np.random.default_rng(seed).normal(size=(n, DIM)))


def _fitted(model):
    rec = make_rec(model)
    known = np.concatenate([photos(lab, 10, seed=300 + i) for i, lab in enumerate(CLASSES)])
    known_labels = [lab for lab in CLASSES for _ in range(10)]
    cal, _ = fit_calibration(rec, known, known_labels)
    u_labels = [lab for lab in UNSEEN for _ in range(30)]
    u = np.concatenate([unseen_photos(lab, 30, seed=500 + i) for i, lab in enumerate(UNSEEN)])
    return rec, cal, known, u, u_labels


def test_thresholds_match_a_naive_computation(model):
    rec, cal, known, u, u_labels = _fitted(model)
    fitted, t_o, report = fit_unseen(rec, cal, known, u, u_labels, max_wrong=0.1, false_unknown=0.05)
    # Naive: every photo's answer as the recognizer gives it (known calibration, no floor), then the rule by loops.
    rec.calibration = Calibration(cal.temperatures, cal.thresholds, {}, cal.biases, cal.scales)
    pk, pu = rec.predict_embeddings(known), rec.predict_embeddings(u)
    truth = [lab.split()[0] for lab in u_labels]

    def full_answers(floor, t):
        return [p.ood_score <= t and p.confidence["make"] >= floor for p in pu]

    floor = report["make_floor"]
    flagged = sum(1 for p in pk if p.ood_score > t_o or p.confidence["make"] < floor)
    assert flagged == int(0.05 * len(pk)) and report["known_flagged"] == pytest.approx(flagged / len(pk))
    # No floor of the grid (each with its KNN+ threshold refitted to the same rate) gives fewer wrong full answers.
    wrong_full = sum(k and p.make != m for k, p, m in zip(full_answers(floor, t_o), pu, truth))
    for q in np.linspace(0, 0.05, 11):
        f = float(np.quantile([p.confidence["make"] for p in pk], q)) if q else 0.0
        rest = sorted((p.ood_score for p in pk if p.confidence["make"] >= f), reverse=True)
        n_more = int(0.05 * len(pk)) - sum(p.confidence["make"] < f for p in pk)
        t = rest[n_more] if 0 < n_more < len(rest) else (rest[0] if n_more <= 0 else -np.inf)
        assert sum(k and p.make != m for k, p, m in zip(full_answers(f, t), pu, truth)) >= wrong_full
    # The unseen softmax, and the partial threshold: the lowest at which <= 10% of the flagged photos get a wrong make.
    votes = collect_votes(rec, u, u_labels)["make"]
    fit = fit_softmax(votes)
    assert fitted.unseen["temperatures"]["make"] == pytest.approx(fit[0])
    conf = votes.confidences(*fit)
    flag = [not k for k in full_answers(floor, t_o)]
    cands = sorted({c for c, f in zip(conf, flag) if f}, reverse=True)
    ok = [c for c in cands if sum(f and c2 >= c and not v for c2, f, v in zip(conf, flag, votes.correct)) <= 0.1 * sum(flag)]
    assert fitted.thresholds.get("make") == (min(ok) if ok else None)
    m = report["levels"]["make"]
    assert m["full_answer_wrong"] == pytest.approx(wrong_full / len(u_labels))
    # What the recognizer now says of such photos is exactly that rule, with the unseen confidences.
    rec.calibration, rec.ood.threshold = fitted, t_o
    served = rec.predict_embeddings(u)
    given_wrong = sum(p.is_known("make") and p.make != t for p, t in zip(served, truth))
    assert given_wrong / len(u_labels) == pytest.approx(m["given_wrong"])
    shown = [p for p in served if p.unknown and p.is_known("make")]
    assert all(p.confidence["make"] >= fitted.thresholds["make"] for p in shown)


def test_the_fit_takes_never_trained_classes_only(model):
    rec, cal, known, u, u_labels = _fitted(model)
    with pytest.raises(VericarError, match="never-trained models only.*Jeep Compass SUV 2012"):
        fit_unseen(rec, cal, known, photos("Jeep Compass SUV 2012", 5, 1), ["Jeep Compass SUV 2012"] * 5)


def test_ood_threshold_against_a_loop():
    rng = np.random.default_rng(0)
    s = rng.normal(size=200)
    floored = rng.random(200) < 0.02
    t = ood_threshold(s, floored, 0.05)
    assert int(((s > t) | floored).sum()) == 10
    assert ood_threshold(s, np.ones(200, bool), 0.05) == float("inf")


def test_open_world_part_round_trips_refuses_bad_values_and_carries_over(model, tmp_path):
    rec, cal, known, u, u_labels = _fitted(model)
    fitted, t_o, _ = fit_unseen(rec, cal, known, u, u_labels)
    rec.calibration, rec.ood.threshold = fitted, t_o
    save_pretrained(rec, tmp_path / "a")
    assert config_file.read(tmp_path / "a")[2] == 5  # an older vericar must not show unseen answers it cannot make
    assert load(f"local-dir:{tmp_path / 'a'}").calibration == fitted
    d = fitted.to_dict()
    for bad in ({**d, "unseen": None}, {**d, "unseen": {**d["unseen"], "make_floor": 2.0}},
                {**d, "unseen": {**d["unseen"], "temperatures": {"model": 0.5}}}):
        with pytest.raises(ArtifactError, match="unseen"):
            Calibration.from_dict(bad)
    # Another training of the recipe, trained on every class: the part carried over, its own KNN+ threshold.
    other = make_rec(model)
    carried, t2 = carry_over(other, cal, fitted, known)
    assert carried.unseen["make_floor"] == fitted.unseen["make_floor"] and carried.thresholds == fitted.thresholds
    assert carried.unseen["info"]["carried_over_from"] == "another training"
    with pytest.raises(VericarError, match="no part fitted on never-trained"):
        carry_over(other, cal, cal, known)
    # An unknown vehicle's summary says how sure the make is, from the unseen softmax.
    other.calibration, other.ood.threshold = carried, t2
    p = next((p for p in other.predict_embeddings(u) if p.unknown and p.is_known("make")), None)
    if p is not None:
        assert prediction_dict(p)["summary"].startswith(f"probably a {p.make} (make {p.confidence['make']:.0%})")
