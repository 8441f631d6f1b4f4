"""train/calibrate_pairs.py: the comparison is fitted on pairs of an artifact's validation photos,
written into its config.json, and never on dev photos."""
from __future__ import annotations

import json

import pytest

from test_train import _args, _photo, tiny_csv  # noqa: F401  (tiny_csv is a fixture)
from train.calibrate_pairs import main as calibrate_pairs
from vericar.search.pair_calibration import MONOTONE
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
    info = cfg["compare"]["info"]
    assert info["pairs"]["known same"] == 4 and "cross_validation" in info and set(info["flagged"]) == {"known", "open"}
    assert cfg["meta"]["command"].splitlines()[-1] == "python train/calibrate_pairs.py --artifact OUT --negatives 50"
    assert cfg["ood"] == before["ood"] and cfg["calibration"] == before["calibration"]  # only "compare" changed
    rec = vericar.load(f"local-dir:{out}")
    assert rec.comparison.levels == cal.levels
    calibrate_pairs(["--artifact", str(out), "--negatives", "50", "--cache", str(tmp_path / "cache")])  # a re-run
    assert json.loads((out / "config.json").read_text())["meta"]["command"].count("calibrate_pairs") == 1
    assert cfg["compare"]["info"]["monotone"] == [] and cfg["compare"]["info"]["cap"] == "none"
    assert "capped_by" not in cfg["compare"]["levels"]["model"]  # no cap by default
    capped = calibrate_pairs(["--artifact", str(out), "--negatives", "50", "--cache", str(tmp_path / "cache"),
                              "--cap", "known"])
    assert capped.levels["model"].capped_by == ("make",) and capped.open_levels["model"].capped_by == ()
    mono = calibrate_pairs(["--artifact", str(out), "--negatives", "50", "--cache", str(tmp_path / "cache"),
                            "--monotone"])
    for rule in (*mono.levels.values(), *mono.open_levels.values()):
        assert all(w >= 0 for f, w in zip(rule.features, rule.weights) if f in MONOTONE)
    assert json.loads((out / "config.json").read_text())["compare"]["info"]["monotone"] == list(MONOTONE)
    c = rec.compare(_photo(1, 2), _photo(1, 3))
    assert 0.0 <= c.probability <= 1.0 and c.a.label is not None


def test_validation_flags_are_predicts_flags(tmp_path):
    """A validation photo is flagged unknown, with or without classes out of the gallery, exactly as
    predict would flag it there: the cross-validation routes its pairs to the rules compare uses."""
    import numpy as np

    import vericar
    from test_app import BASE, make_artifact, vehicle_photo
    from train.pair_table import flagged, ranked_neighbours
    from vericar.core.recognizer import Recognizer
    from vericar.search.density import DensityCorrection
    from vericar.search.gallery import Gallery
    from vericar.search.ood import KNNOOD

    rec = vericar.load(f"local-dir:{make_artifact(tmp_path / 'art')}")
    photos = [vehicle_photo(c, i) for c in range(len(BASE)) for i in (0, 100, 101)]
    rng = np.random.default_rng(0)
    emb = np.vstack([rec.embed(photos), rng.normal(size=(4, rec.gallery.dim))]).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    for density in (DensityCorrection(0.0), DensityCorrection(0.5, k=3)):
        ood = KNNOOD(rec.ood.k)  # calibrated under this ranking, as train/calibrate.py does
        r = Recognizer(rec.model, rec.gallery, ood, k=rec.k, density=density)
        ood.calibrate(r.search(emb[[0, 3, 6, 9]], ood.k)[0], tpr=0.75)
        got = [flagged(r, x, set()) for x in ranked_neighbours(r, emb)]
        assert got == [p.unknown for p in r.predict_embeddings(emb)] and any(got) and not all(got)
    labels, out = rec.gallery.labels, {BASE[0], BASE[2]}
    keep = [i for i, lab in enumerate(labels) if lab not in out]
    without = Recognizer(rec.model, Gallery.from_arrays(rec.gallery.embeddings[keep], [labels[i] for i in keep]),
                         rec.ood, k=rec.k)
    r = Recognizer(rec.model, rec.gallery, rec.ood, k=rec.k)
    got = [flagged(r, x, out) for x in ranked_neighbours(r, emb)]
    assert got == [p.unknown for p in without.predict_embeddings(emb)] and got[0]  # class 0's photo: now unknown
    # A class with fewer photos than KNN+'s k: predict caps k at its count, and so must the flags.
    small = [i for i, lab in enumerate(labels) if lab != BASE[1] or i % 6 < 3]
    few = Recognizer(rec.model, Gallery.from_arrays(rec.gallery.embeddings[small], [labels[i] for i in small]),
                     rec.ood, k=rec.k)
    ranked = ranked_neighbours(few, emb)
    assert [flagged(few, x, set()) for x in ranked] == [p.unknown for p in few.predict_embeddings(emb)]
    uncapped = few.ood.score(np.array([[s for _, _, s in ranked[3][: few.ood.k]]]))  # class 1's photo, k not capped
    assert not flagged(few, ranked[3], set()) and few.ood.is_unknown(uncapped)[0]  # the cap is what keeps it known


def test_cross_validation_answers_each_pair_with_the_rules_compare_would_pick():
    """Known pairs separate by cosine one way, open pairs the other: routed by their flag, both are
    answered right; with every flag off, the known rules answer the open pairs, and get them wrong."""
    import numpy as np

    from train.calibrate_pairs import CHOSEN, cross_validate

    rng = np.random.default_rng(0)
    rows, ys, kinds, modes, groups = [], [], [], [], []
    classes = [f"Make{m} Model{i} Sedan 2012" for m in range(6) for i in range(4)]
    for mode, sign in (("known", 1.0), ("open", -1.0)):
        for n in range(1500):
            a, b = rng.choice(len(classes), 2)
            kind = "same" if n % 2 == 0 else ("easy", "medium", "hard")[n % 3]
            same = kind == "same"
            c = 0.5 + sign * (0.2 if same else -0.2) + rng.normal(0, 0.05)
            rows.append([c, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 1.0])
            ys.append([same, same, same]), kinds.append(kind), modes.append(mode)
            groups.append((classes[a], classes[a] if same else classes[b]))
    t = {"x": np.array(rows), "y": np.array(ys), "kind": np.array(kinds), "mode": np.array(modes), "groups": groups}
    routed = cross_validate({**t, "flag": t["mode"] == "open"})[CHOSEN]
    unrouted = cross_validate({**t, "flag": np.zeros(len(rows), bool)})[CHOSEN]
    assert min(routed.values()) > 0.95  # every AUC and both balanced mixes
    assert unrouted["known easy"] > 0.95 and unrouted["known mix"] > 0.95
    assert unrouted["open easy"] < 0.05 and unrouted["open mix"] < 0.05


def test_each_set_of_rules_is_fitted_on_the_pairs_it_answers():
    """Known rules: pairs of gallery classes with no photo flagged; open rules: every flagged pair. A set
    whose pairs lack an outcome falls back to its mode's pairs."""
    import numpy as np

    from train.pair_table import answering

    mode = np.array(["known"] * 4 + ["open"] * 4)
    flag = np.array([False, False, True, True, False, True, True, False])
    y = np.array([[True] * 3, [False] * 3, [True] * 3, [False] * 3] * 2)
    t = {"mode": mode, "flag": flag, "y": y}
    known, open_, fell_back = answering(t, np.ones(8, bool))
    assert known.tolist() == [True, True, False, False, False, False, False, False] and fell_back == []
    assert open_.tolist() == [False, False, True, True, False, True, True, False]
    known, open_, _ = answering(t, np.array([True] * 4 + [False] * 4))  # the training folds only
    assert open_.tolist() == [False, False, True, True] + [False] * 4
    t["flag"] = np.array([False, False, False, True, False, False, False, True])  # flagged: "different" only
    _, open_, fell_back = answering(t, np.ones(8, bool))
    assert open_.tolist() == [False] * 4 + [True] * 4 and fell_back == ["open"]


def test_the_rules_are_fitted_on_the_pairs_they_answer():
    """Unflagged known pairs: alike means same. Flagged pairs (of either mode) the other way round. The
    known rules must learn the first, the open rules the second (fitted per mode, the known rules
    would see half their pairs inverted and learn neither)."""
    import numpy as np

    from train.calibrate_pairs import fit

    rng = np.random.default_rng(1)
    rows, ys, kinds, modes, flags, groups = [], [], [], [], [], []
    for n in range(3000):
        mode, flag = ("known", n % 4 == 1) if n % 4 < 2 else ("open", True)
        kind = "same" if n % 8 < 4 else ("easy", "medium", "hard")[n % 3]
        same = kind == "same"
        c = 0.5 + (-0.2 if flag else 0.2) * (1 if same else -1) + rng.normal(0, 0.05)
        rows.append([c] + [0.5] * 8), ys.append([same] * 3), kinds.append(kind), modes.append(mode)
        flags.append(flag), groups.append(("A", "A" if same else "B"))
    t = {"x": np.array(rows), "y": np.array(ys), "kind": np.array(kinds), "mode": np.array(modes),
         "flag": np.array(flags), "groups": groups}
    cal = fit(t, ["cosine"], {})
    assert cal.levels["model"].weights[0] > 10 and cal.open_levels["model"].weights[0] < -10
    assert cal.info["flagged"] == {"known": 0.5, "open": 1.0} and cal.info["fitted_by_mode"] == []


def _kinds_table(seed: int, same_type_when_one_make: bool = False) -> dict:
    """A synthetic pair table of 2,400 pairs, the four kinds in turn: the cosine separates same from the
    rest, make agreement easy pairs from the rest; flagged and not, known and open mixed. The type
    outcome is the make's (``same_type_when_one_make``) or, as in ``make_pairs``, medium pairs' two types."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = 2400
    kind = np.array(["same", "easy", "medium", "hard"] * (n // 4))
    cos = np.where(kind == "same", 0.8, np.where(kind == "easy", 0.3, 0.6)) + rng.normal(0, 0.1, n)
    make = np.where(kind == "easy", 0.1, 0.9) + rng.normal(0, 0.1, n)
    x = np.c_[cos, np.zeros(n), make, np.zeros((n, 6))]
    same_type = kind != "easy" if same_type_when_one_make else np.isin(kind, ["same", "hard"])
    y = np.c_[kind == "same", kind != "easy", same_type]
    flag = rng.random(n) < 0.5  # every kind among the flagged pairs and among the others
    return {"x": x, "y": y, "kind": kind, "mode": np.where(flag | (rng.random(n) < 0.5), "open", "known"),
            "flag": flag, "groups": [("A", "B")] * n}


def test_the_model_rule_is_capped_by_the_make_rule_where_asked():
    """Pairs of one make but two models look alike: the make rule says "same", the model rule must not
    say more. With the cap, every pair's P(same model) <= P(same make), in the sets ``--cap`` names."""
    import numpy as np

    from train.calibrate_pairs import CAPS, fit

    t = _kinds_table(2, same_type_when_one_make=True)
    n, kind, x = len(t["kind"]), t["kind"], t["x"]
    feats = ["cosine", "agree_make"]
    for cap, capped in CAPS.items():
        cal = fit(t, feats, {}, cap=cap)
        for unknown, name in ((False, "known"), (True, "open")):
            assert cal.rules(unknown)["model"].capped_by == (("make",) if name in capped else ())
            p = [cal.probabilities(dict(zip(feats, row[[0, 2]])), unknown) for row in x[:200]]
            raw = [cal.rules(unknown)["model"].probability(dict(zip(feats, row[[0, 2]]))) for row in x[:200]]
            if name in capped:
                assert all(q["model"] <= q["make"] + 1e-12 for q in p)
                assert any(q["model"] < r - 0.01 for q, r in zip(p, raw))  # the cap bites on some pairs
            else:
                assert [q["model"] for q in p] == raw


def test_a_factored_model_rule_is_fitted_on_pairs_of_one_make_given_the_make():
    """``--factor``: in the named sets the model rule is P(same model | same make), fitted on the pairs of
    one make only (a naive fit on exactly those pairs gives the same weights), and answers with
    P(same model | same make) x P(same make); the band is fitted on that product. Other sets are unchanged."""
    import numpy as np

    from train.calibrate_pairs import CAPS, fit
    from train.pair_table import answering, pair_weights, subset
    from vericar.search.pair_calibration import PairCalibration, fit_band, fit_rule

    t = _kinds_table(3)
    n, kind, x, y = len(t["kind"]), t["kind"], t["x"], t["y"]
    feats = ["cosine", "agree_make"]
    plain = fit(t, feats, {})
    known, open_, _ = answering(t, np.ones(n, bool))
    differs = []  # whether the product's band and the conditional rule's own differ, per factored set
    for factor, factored in CAPS.items():
        cal = fit(t, feats, {}, factor=factor)
        for unknown, name, m in ((False, "known", known), (True, "open", open_)):
            rule = cal.rules(unknown)["model"]
            if name not in factored:
                assert rule == plain.rules(unknown)["model"]
                continue
            assert rule.given == ("make",)
            s = subset(t, m & y[:, 1])
            naive = fit_rule(s["x"][:, [0, 2]], s["y"][:, 0], feats, pair_weights(s, "model"))
            assert np.allclose(rule.weights, naive.weights, atol=1e-4) and abs(rule.bias - naive.bias) < 1e-4
            for row in x[:100]:
                f = dict(zip(feats, row[[0, 2]]))
                p = cal.probabilities(f, unknown)
                assert p["model"] == pytest.approx(rule.probability(f) * p["make"])
            whole = subset(t, m)  # the band: fitted on the product over all the set's pairs, not the conditional's own
            product = [cal.probabilities(dict(zip(feats, row[[0, 2]])), unknown)["model"] for row in whole["x"]]
            assert rule.band == fit_band(np.array(product), whole["y"][:, 0], pair_weights(whole, "model"))
            differs.append(rule.band != naive.band)
        assert "factor_fell_back" not in cal.info
        d = json.loads(json.dumps(cal.to_dict()))  # as config.json holds it
        assert d["method"] == ("pair-logistic-given" if factored else "pair-logistic")
        assert PairCalibration.from_dict(d).levels == cal.levels
    assert any(differs)  # this data tells the two bands apart, so the band check above can fail
    # No pair of one make and two models (no medium or hard pair): nothing to fit P(model | make) on, so the
    # rules are fitted unfactored, without an error, and the fit says so.
    one_model = np.isin(kind, ["same", "easy"])
    small = subset(t, one_model)
    cal = fit(small, feats, {}, factor="both")
    assert all(not cal.rules(u)["model"].given for u in (False, True))
    assert cal.info["factor_fell_back"] == ["known", "open"]
