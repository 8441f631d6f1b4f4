"""Recognizer.compare (vericar/core/compare.py): same model / make / type of two photos, calibrated."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from test_app import BASE, make_artifact, vehicle_photo
from vericar.artifacts import hub
from vericar.core.errors import ArtifactError, VericarError
from vericar.evaluation.pairs import (Pair, balanced_accuracy, load_pairs, make_pairs, pair_kind, pair_report,
                                      write_pairs)
from vericar.search.pair_calibration import FEATURES, LevelRule, PairCalibration, fit_rule, pair_features
from vericar.search.taxonomy import Taxonomy

WEIGHTS = {"cosine": 6.0, "agree_model": 2.0, "agree_make": 0.5, "agree_type": 0.5, "nearness": -1.0,
           "agree_model_near": 1.0, "agree_make_near": 0.0, "agree_type_near": 0.0}


def rule(bias: float = -4.0, band: tuple[float, float] = (0.4, 0.6), weights: dict | None = None) -> LevelRule:
    w = weights or WEIGHTS
    return LevelRule(tuple(w), tuple(w.values()), bias, band)


def calibration(**kw) -> PairCalibration:
    return PairCalibration({lvl: rule(**kw) for lvl in ("model", "make", "type")}, {"fitted_on": "a test"})


def with_compare(folder: Path, cal: PairCalibration) -> Path:
    cfg, meta = hub.read_artifact(folder)
    hub.write_config(folder, replace(cfg, compare=cal.to_dict()), meta)
    return folder


@pytest.fixture(scope="module")
def cmp_artifact(tmp_path_factory) -> Path:
    """test_app's tiny artifact (4 vehicles x 6 photos, k=3) with a hand-set comparison."""
    return with_compare(make_artifact(tmp_path_factory.mktemp("cmp")), calibration())


def naive(rec, a, b, r: LevelRule) -> tuple[float, float]:
    """Rule ``r``'s probability (no cap) and the cosine, computed from scratch with numpy (plain cosine ranking)."""
    ea, eb = rec.embed([a])[0], rec.embed([b])[0]
    g, labels = rec.gallery.embeddings, rec.gallery.labels
    tax = Taxonomy.from_labels(labels)
    shares = []
    for e in (ea, eb):
        sims = g @ e
        order = np.argsort(-sims, kind="stable")
        k = min(rec.k, labels.count(labels[order[0]]))
        top = [(labels[j], float(sims[j])) for j in order[:k]]
        per_level = {}
        for lvl in ("model", "make", "type"):
            w = {}
            for lab, s in top:
                v = tax.level_value(lab, lvl)
                w[v] = w.get(v, 0.0) + max(s, 0.0)
            per_level[lvl] = {v: x / sum(w.values()) for v, x in w.items()}
        shares.append((per_level, top[0][1]))
    f = {"cosine": float(ea @ eb), "nearness": min(shares[0][1], shares[1][1])}
    for lvl in ("model", "make", "type"):
        pa, pb = shares[0][0][lvl], shares[1][0][lvl]
        f[f"agree_{lvl}"] = sum(p * pb.get(v, 0.0) for v, p in pa.items())
        f[f"agree_{lvl}_near"] = f[f"agree_{lvl}"] * f["nearness"]
    z = r.bias + sum(w * f[n] for n, w in zip(r.features, r.weights))
    return 1 / (1 + math.exp(-z)), f["cosine"]


def test_compare_matches_a_naive_reference(cmp_artifact):
    rec = hub.load(f"local-dir:{cmp_artifact}")
    assert rec.comparison is not None and rec.config.compare["method"] == "pair-logistic"
    same = (vehicle_photo(0, 50), vehicle_photo(0, 51))
    diff = (vehicle_photo(0, 50), vehicle_photo(2, 50))
    for a, b in (same, diff):
        c = rec.compare(a, b)
        p, cos = naive(rec, a, b, rec.comparison.levels["model"])
        assert c.probability == pytest.approx(p, abs=1e-5) and c.cosine == pytest.approx(cos, abs=1e-5)
        assert c.a.label == rec.predict(a).label and c.b.label == rec.predict(b).label
    assert rec.compare(*same).same_model is True and rec.compare(*diff).same_model is False
    assert rec.compare(*same).probability > 0.9 > 0.1 > rec.compare(*diff).probability


def test_same_model_is_never_likelier_than_same_make(tmp_path):
    """A model rule capped by the make's: P(same model) = min(its own, the make rule's), as a naive
    reference computes them; the verdict reads the capped probability; uncapped it is its own."""
    strict = rule(bias=-7.0)  # the make rule: less sure of "same" than the model rule (bias -4)
    cal = PairCalibration({"model": replace(rule(), capped_by=("make",)), "make": strict, "type": rule()}, {})
    rec = hub.load(f"local-dir:{with_compare(make_artifact(tmp_path / 'art'), cal)}")
    assert rec.comparison.levels["model"].capped_by == ("make",)  # through config.json
    a, b = vehicle_photo(0, 50), vehicle_photo(0, 51)
    own, make = naive(rec, a, b, rule())[0], naive(rec, a, b, strict)[0]
    assert own - make > 0.05  # the cap has room to show
    c = rec.compare(a, b)
    assert c.probability == pytest.approx(make, abs=1e-5) and c.probabilities["make"] == pytest.approx(make, abs=1e-5)
    assert c.same_model is rec.comparison.levels["model"].verdict(make)
    rec.comparison.levels["model"] = rule()  # no cap: the rule's own probability
    assert rec.compare(a, b).probability == pytest.approx(own, abs=1e-5)


def test_a_chain_of_caps_holds_all_the_way_down():
    """Make capped by type, model by make: P(model) <= P(make) <= P(type) whatever the raw rules say, as a
    naive min over the coarser levels, applied from the coarsest, gives."""
    from vericar.search.pair_calibration import capped_probabilities

    feats = {f: 0.5 for f in WEIGHTS}
    for biases in ((-2.0, -3.0, -4.5), (-4.5, -3.0, -2.0), (-3.0, -4.5, -2.0)):
        raw = {lvl: rule(bias=b) for lvl, b in zip(("model", "make", "type"), biases)}
        rules = {"model": replace(raw["model"], capped_by=("make",)), "make": replace(raw["make"], capped_by=("type",)),
                 "type": raw["type"]}
        p = capped_probabilities(rules, feats)
        r = {lvl: raw[lvl].probability(feats) for lvl in raw}
        assert p["type"] == r["type"] and p["make"] == min(r["make"], r["type"])
        assert p["model"] == min(r["model"], r["make"], r["type"]) and p["model"] <= p["make"] <= p["type"]


def test_a_rule_given_a_coarser_level_is_multiplied_by_its_probability():
    """Model given make: P(model) = P(model | make) x P(make), the make's own caps applied first; a naive
    product of the raw rules' probabilities, and never above P(make)."""
    from vericar.search.pair_calibration import capped_probabilities

    feats = {f: 0.5 for f in WEIGHTS}
    for biases in ((-2.0, -3.0, -4.5), (1.0, 2.0, -1.0)):
        raw = {lvl: rule(bias=b) for lvl, b in zip(("model", "make", "type"), biases)}
        r = {lvl: raw[lvl].probability(feats) for lvl in raw}
        p = capped_probabilities({**raw, "model": replace(raw["model"], given=("make",))}, feats)
        assert p["model"] == pytest.approx(r["model"] * r["make"]) and p["model"] <= p["make"] == r["make"]
        chained = {"model": replace(raw["model"], given=("make",)), "make": replace(raw["make"], capped_by=("type",)),
                   "type": raw["type"]}
        p = capped_probabilities(chained, feats)
        assert p["model"] == pytest.approx(r["model"] * min(r["make"], r["type"]))


def test_weak_evidence_is_none_not_a_guess(cmp_artifact):
    """A pair whose probability falls inside the band gets None; the same rule still answers clear pairs."""
    rec = hub.load(f"local-dir:{cmp_artifact}")
    a, b = vehicle_photo(1, 60), vehicle_photo(3, 60)
    r = rec.comparison.levels["model"]
    p = rec.compare(a, b).probability
    logit = math.log(p / (1 - p))
    rec.comparison.levels["model"] = replace(r, bias=r.bias - logit)  # this pair now sits at exactly 0.5
    weak = rec.compare(a, b)
    assert weak.probability == pytest.approx(0.5, abs=1e-6) and weak.same_model is None
    assert rec.compare(vehicle_photo(1, 60), vehicle_photo(1, 61)).same_model is True
    rec.comparison.levels["model"] = replace(r, band=(0.5, 0.5))  # no band: every pair gets a verdict
    assert rec.compare(a, b).same_model in (True, False)


def test_a_pair_with_an_unknown_vehicle_uses_the_open_rules(cmp_artifact):
    rec = hub.load(f"local-dir:{cmp_artifact}")
    rec.comparison.open_levels = {lvl: rule(bias=30.0) for lvl in ("model", "make", "type")}
    a, b = vehicle_photo(0, 50), vehicle_photo(2, 50)
    threshold = rec.ood.threshold
    rec.ood.threshold = float("inf")  # both known: the known rules
    assert rec.compare(a, b).probability < 0.1
    rec.ood.threshold = -1.0  # both flagged unknown: the open rules
    c = rec.compare(a, b)
    assert c.a.unknown and c.probability > 0.99 and c.same_model is True
    rec.ood.threshold = threshold
    back = PairCalibration.from_dict(json.loads(json.dumps(rec.comparison.to_dict())))
    assert back.open_levels == rec.comparison.open_levels and back.rules(True) is back.open_levels


def test_compare_refuses_without_calibration_missing_and_bad_photos(tmp_path, cmp_artifact):
    rec = hub.load(f"local-dir:{make_artifact(tmp_path / 'old')}")  # an artifact from before comparisons
    assert rec.comparison is None and "compare" not in json.loads((tmp_path / "old/config.json").read_text())
    with pytest.raises(VericarError, match="calibrate_pairs.py"):
        rec.compare(vehicle_photo(0, 1), vehicle_photo(0, 2))
    rec = hub.load(f"local-dir:{cmp_artifact}")
    with pytest.raises(VericarError, match="photo B is missing"):
        rec.compare(vehicle_photo(0, 1), None)
    with pytest.raises(VericarError):
        rec.compare(vehicle_photo(0, 1), b"not an image")


def test_pair_calibration_round_trip_and_refusals(tmp_path, cmp_artifact):
    cal = hub.load(f"local-dir:{cmp_artifact}").comparison
    assert PairCalibration.from_dict(json.loads(json.dumps(cal.to_dict()))).levels == cal.levels
    assert PairCalibration.from_dict(None) is None
    good = cal.to_dict()
    assert "capped_by" not in good["levels"]["model"]  # a rule saved before caps reads as uncapped
    capped = {**good, "levels": {**good["levels"], "model": {**good["levels"]["model"], "capped_by": ["make", "type"]}}}
    assert PairCalibration.from_dict(json.loads(json.dumps(capped))).levels["model"].capped_by == ("make", "type")
    assert "given" not in good["levels"]["model"]  # a rule saved before factoring reads as its own probability
    given = {**good, "method": "pair-logistic-given",
             "levels": {**good["levels"], "model": {**good["levels"]["model"], "given": ["make"]}}}
    back = PairCalibration.from_dict(json.loads(json.dumps(given)))
    assert back.levels["model"].given == ("make",) and back.to_dict()["levels"]["model"]["given"] == ["make"]
    assert back.to_dict()["method"] == "pair-logistic-given"  # a vericar from before conditions refuses it
    for bad in ({**given, "method": "pair-logistic"}, {**good, "method": "pair-logistic-given"}):
        with pytest.raises(ArtifactError, match="goes with such rules only"):
            PairCalibration.from_dict(bad)
    for bad in ({**good, "method": "siamese"}, {**good, "levels": {"model": good["levels"]["model"]}},
                {**good, "levels": {**good["levels"], "make": {**good["levels"]["make"], "band": [0.8, 0.2]}}},
                {**good, "levels": {**good["levels"], "type": {**good["levels"]["type"], "features": ["colour"]}}},
                {**good, "levels": {**good["levels"], "make": {**good["levels"]["make"], "capped_by": ["model"]}}},
                {**good, "levels": {**good["levels"], "model": {**good["levels"]["model"], "capped_by": "make"}}},
                {**good, "levels": {**good["levels"], "model": {**good["levels"]["model"], "capped_by": None}}},
                {**good, "levels": {**good["levels"], "model": {**good["levels"]["model"],
                                                                 "capped_by": ["make", "make"]}}},
                {**good, "levels": {**good["levels"], "type": {**good["levels"]["type"], "given": ["make"]}}},
                {**good, "levels": {**good["levels"], "model": {**good["levels"]["model"], "given": "make"}}}):
        with pytest.raises(ArtifactError, match="calibrate_pairs.py"):
            PairCalibration.from_dict(bad)
    for bad_given in (["make", "make"], "make", ["model"]):
        bad = {**good, "levels": {**good["levels"], "model": {**good["levels"]["model"], "given": bad_given}}}
        with pytest.raises(ArtifactError, match="given must be"):
            PairCalibration.from_dict(bad)
    cfg, meta = hub.read_artifact(cmp_artifact)
    with pytest.raises(ArtifactError, match="not saved"):  # refused before anything is written
        hub.write_config(tmp_path, replace(cfg, compare={**good, "method": "x"}), meta)


def test_fit_rule_learns_the_direction_and_a_band_of_weak_evidence():
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.5
    x = np.where(y, 0.7, 0.3)[:, None] + rng.normal(0, 0.15, (2000, 1))
    r = fit_rule(x, y, ["cosine"])
    assert r.weights[0] > 0 and r.band[0] < 0.5 < r.band[1]
    assert r.verdict(r.probability({"cosine": 0.95})) is True and r.verdict(r.probability({"cosine": 0.05})) is False
    assert r.verdict(r.probability({"cosine": 0.5})) is None
    with pytest.raises(ValueError, match="both same and different"):
        fit_rule(x, np.ones(2000, bool), ["cosine"])


def test_features_from_votes():
    tax = Taxonomy.from_labels(BASE)
    a = [("Audi A4 Sedan 2012", 0.9), ("BMW X5 SUV 2007", 0.3)]
    f = pair_features(0.8, a, a[:1], tax.level_value)
    assert set(f) == set(FEATURES) and f["agree_model"] == pytest.approx(0.75) and f["nearness"] == pytest.approx(0.9)
    assert f["agree_model_in_make"] == pytest.approx(f["agree_model"] / f["agree_make"])
    other = pair_features(0.1, a[:1], [("BMW X5 SUV 2007", 0.8)], tax.level_value)  # two makes: nothing within one
    assert other["agree_make"] == 0.0 and other["agree_model_in_make"] == 0.0
    assert pair_features(0.1, a[1:], a[:1], tax.level_value)["agree_make"] == 0.0


def test_pair_lists_kinds_and_report(tmp_path):
    classes = ["Audi A4 Sedan 2012", "Audi A4 Sedan 2012", "Audi A5 Sedan 2012", "Audi Q7 SUV 2012",
               "BMW X5 SUV 2007", "BMW X5 SUV 2007"]
    tax = Taxonomy.from_labels(classes)
    assert [pair_kind(classes[0], c, tax) for c in classes[1:]] == ["same", "hard", "medium", "easy", "easy"]
    files = [f"p{i}.jpg" for i in range(len(classes))]
    pairs = make_pairs(files, classes, 2, seed=0)
    assert pairs == make_pairs(files, classes, 2, seed=0)  # seeded
    assert sorted({p.kind for p in pairs}) == ["easy", "hard", "medium", "same"]
    assert sum(p.kind == "same" for p in pairs) == 2 and sum(p.kind == "easy" for p in pairs) == 2
    write_pairs(tmp_path / "p.csv", pairs)
    back = load_pairs(tmp_path / "p.csv")
    assert [(Path(p.file_a).name, p.kind) for p in back] == [(p.file_a, p.kind) for p in pairs]
    (tmp_path / "bad.csv").write_text("file_a,file_b,kind\na.jpg,b.jpg,similar\n")
    with pytest.raises(VericarError, match="unknown kinds"):
        load_pairs(tmp_path / "bad.csv")
    kinds = ["same", "same", "easy", "hard"]
    r = pair_report(kinds, np.array([0.9, 0.55, 0.1, 0.6]), [True, None, False, True])
    assert r["auc"]["easy"] == 1.0 and r["auc"]["hard"] == 0.5
    assert r["with_band"]["accuracy"] == 0.5 and r["with_band"]["answered"] == 0.75
    assert balanced_accuracy(np.array(kinds), [True, None, False, True])["half_same"] == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)


def test_evaluate_pairs_command_line(tmp_path, cmp_artifact, capsys):
    from vericar.evaluate import main as evaluate

    for c in range(4):
        for i in range(2):
            vehicle_photo(c, 70 + i).save(tmp_path / f"{c}_{i}.png")
    pairs = [Pair(f"{c}_0.png", f"{c}_1.png", "same") for c in range(4)]
    pairs += [Pair("0_0.png", "2_0.png", "easy"), Pair("1_1.png", "3_0.png", "easy")]
    write_pairs(tmp_path / "pairs.csv", pairs)
    r = evaluate(["--model", f"local-dir:{cmp_artifact}", "--pairs", str(tmp_path / "pairs.csv"), "--no-progress",
                  "--json", str(tmp_path / "r.json")])
    assert r["counts"]["same"] == 4 and r["auc"]["easy"] == 1.0 and "ROC-AUC" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["with_band"]["n"] == 6
    with pytest.raises(VericarError, match="--pairs"):
        evaluate(["--model", f"local-dir:{cmp_artifact}"])


def test_logistic_fit_is_sklearns_and_keeps_monotone_weights_non_negative():
    from sklearn.linear_model import LogisticRegression

    from vericar.search.pair_calibration import logistic

    rng = np.random.default_rng(1)
    cos, near = rng.random(3000), rng.random(3000)
    make = np.clip(cos + rng.normal(0, 0.1, 3000), 0, 1)  # collinear with cosine ...
    y = rng.random(3000) < 1 / (1 + np.exp(-(10 * cos - 4 * make - 3)))  # ... and less likely "same" given cosine
    x, w = np.c_[cos, make, near], rng.random(3000) + 0.5
    ref = LogisticRegression(C=10.0, max_iter=5000, tol=1e-10).fit(x, y, sample_weight=w)  # the naive reference
    coef, bias = logistic(x, y, w, [False, False, False])
    assert coef == pytest.approx(ref.coef_[0], abs=2e-3) and bias == pytest.approx(ref.intercept_[0], abs=2e-3)
    assert coef[1] < 0
    r = fit_rule(x, y, ["cosine", "agree_make", "nearness"], w, monotone=("cosine", "agree_make"))
    assert r.weights[1] == 0.0 and r.weights[0] > 0  # the bound holds and binds ...
    alone, b_alone = logistic(x[:, [0, 2]], y, w, [False, False])  # ... so the rest is the fit without that feature
    assert [r.weights[0], r.weights[2]] == pytest.approx(list(alone), abs=2e-3)
    assert r.bias == pytest.approx(b_alone, abs=2e-3)
    assert fit_rule(x, y, ["cosine", "agree_make", "nearness"], w).weights[1] < 0  # free by default
