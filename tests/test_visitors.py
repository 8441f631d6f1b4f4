"""Public mode without Gradio: per-session search, caps, rate limit, expiry, admin token, labels."""
from __future__ import annotations

import numpy as np
import pytest

from test_enrolled import NEW, OTHER, fresh_rec, photos, weights  # noqa: F401 (fixture)
from vericar.core.errors import VericarError
from vericar.search.density import DensityCorrection
from vericar.ui.labels import LabelError, check_not_confusable, md_text, normalise_label, skeleton
from vericar.ui.sessions import SessionRecognizer
from vericar.ui.visitors import LocalVehicles, RateLimit, SessionVehicles, make_vehicles


def public(weights, tmp_path, **kw) -> SessionVehicles:  # noqa: F811
    return make_vehicles(fresh_rec(weights), tmp_path, public=True, **kw)


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_session_search_matches_local_enrolment(weights, tmp_path, weight):  # noqa: F811
    """A visitor's view ranks and votes as local mode does after enrolling the same photos.

    With the density correction off it is the same search exactly; with CSLS on, the visitor's
    entries get local mode's densities and the shared ones keep theirs (the documented approximation),
    so the neighbour sets still agree here.
    """
    local = fresh_rec(weights)
    vis = public(weights, tmp_path)
    for r in (local, vis.rec):
        r.density = DensityCorrection(weight, k=2)
    new = photos([501, 502, 503])
    local.enroll(new, NEW)
    vis.enroll("a", new, NEW)
    view = vis.recognizer("a")
    assert isinstance(view, SessionRecognizer) and len(vis.rec.gallery) == 6  # the shared gallery is untouched
    queries = local.embed(photos([501, 7, 504, 20]))
    for want, got in zip(local.predict_embeddings(queries), view.predict_embeddings(queries)):
        assert got.label == want.label and got.unknown == want.unknown
        assert [n.label for n in got.neighbours] == [n.label for n in want.neighbours]
        np.testing.assert_allclose([n.score for n in got.neighbours], [n.score for n in want.neighbours], atol=1e-5)
        if weight == 0:
            assert got.ood_score == pytest.approx(want.ood_score, abs=1e-5)
    if weight:
        r_local = local.density.densities(local.gallery)[-3:]
        np.testing.assert_allclose(view.own_density, r_local, atol=1e-5)
    assert view.thumbnail(6, NEW) is not None and view.explain(new[0]).label == NEW


def test_sessions_are_isolated(weights, tmp_path):  # noqa: F811
    vis = public(weights, tmp_path)
    out = vis.enroll("a", photos([501, 502]), NEW)
    assert out["enrolled"] == [NEW]
    assert vis.enroll("b", photos([601, 602]), OTHER)["enrolled"] == [OTHER]  # A's label is not listed
    assert vis.recognizer("b").predict(photos([501])[0]).neighbours[0].label != NEW
    assert vis.recognizer("a").predict(photos([501])[0]).neighbours[0].label == NEW
    assert vis.recognizer("c") is vis.rec  # a visitor with no vehicles searches the shared gallery
    with pytest.raises(VericarError) as e:
        vis.remove("b", NEW)
    assert "yours: " + OTHER in str(e.value)
    assert vis.summary("a") == [(NEW, 2)] and vis.summary("b") == [(OTHER, 2)] and vis.summary("c") == []
    assert not (vis.store.dir / "gallery.json").exists()  # never written to the shared store
    assert vis.remove("a", NEW)["enrolled"] == [] and vis.recognizer("a") is vis.rec


def test_caps_rate_limit_and_expiry(weights, tmp_path):  # noqa: F811
    vis = public(weights, tmp_path, max_vehicles=2, max_photos=3, write_rate=(3, 60.0))
    with pytest.raises(VericarError, match="more than the 3"):
        vis.enroll("a", photos([1, 2, 3, 4]), NEW)
    vis.enroll("a", photos([501]), NEW)
    vis.enroll("a", photos([601]), OTHER)
    with pytest.raises(VericarError, match="most one visitor can keep"):
        vis.enroll("a", photos([701]), "Third Car Sedan 2020")
    with pytest.raises(VericarError, match="Too many additions and removals"):
        vis.remove("a", NEW)
    vis.end("a")
    assert vis.sessions() == 0 and vis.summary("a") == []
    vis.close()  # frees the data dir for the next public app over it
    short = public(weights, tmp_path, ttl_s=0.0)
    short.enroll("x", photos([501]), NEW)
    short.summary("y")  # any later access sweeps sessions idle longer than ttl_s
    assert short.sessions() == 0
    short.close()
    few = public(weights, tmp_path, max_sessions=2)
    for sid in "pqr":
        few.enroll(sid, photos([501]), NEW)
    assert few.sessions() <= 3 and few.summary("p") == [] and few.summary("r") == [(NEW, 1)]


def test_rate_limit_window():
    rl = RateLimit(2, 60.0)
    rl.check("s", "requests")
    rl.check("s", "requests")
    with pytest.raises(VericarError, match=r"try again in \d+ s"):
        rl.check("s", "requests")
    rl.check("t", "requests")  # another session has its own budget


def test_admin_token(weights, tmp_path):  # noqa: F811
    ro = public(weights, tmp_path / "ro")
    with pytest.raises(VericarError, match="read-only"):
        ro.admin_enroll("anything", photos([501]), NEW)
    vis = public(weights, tmp_path / "rw", admin_token="s3cret")
    for bad in ("", "s3cre", None, "s3cret "):
        with pytest.raises(VericarError, match="Wrong admin token"):
            vis.admin_enroll(bad, photos([501]), NEW)
    assert vis.admin_enroll("s3cret", photos([501, 502]), NEW)["added"] == 2
    assert NEW in (vis.store.dir / "gallery.json").read_text()  # the shared, persistent store
    assert vis.recognizer("anyone").predict(photos([501])[0]).neighbours[0].label == NEW
    assert vis.admin_remove("s3cret", NEW)["removed"] == 2
    assert isinstance(make_vehicles(fresh_rec(weights), tmp_path / "l", public=False), LocalVehicles)


@pytest.mark.parametrize("label, match", [
    ("Аudi A4 Sedan 2012", "looks the same"),  # Cyrillic capital A
    ("Audi A4 Sedan 2O12", "looks the same"),  # letter O for zero
    ("Audi\u200b A4 Sedan 2012", "U\\+200B"),  # zero-width space
    ("Tesla \u202eModel 3", "U\\+202E"),  # right-to-left override
    ("Tesla \u2066Model\u2069 3", "U\\+2066"),  # bidi isolate
    ("bad\x07bell", "U\\+0007"),
    ("x" * 121, "at most 120"),
    ("BMW\u2800X5 SUV 2007", "U\\+2800 BRAILLE PATTERN BLANK"),  # shows as "BMW X5 SUV 2007"
    ("BMW\u3164X5 SUV 2007", "U\\+3164 HANGUL FILLER"),  # named as typed, though NFKC makes it U+1160
    ("Tesla Model 3\u115f", "U\\+115F"),
    (5, "must be text like"),
])
def test_hostile_labels_refused(weights, tmp_path, label, match):  # noqa: F811
    for vis in (public(weights, tmp_path / "p"), make_vehicles(fresh_rec(weights), tmp_path / "l", public=False)):
        with pytest.raises(VericarError, match=match):
            vis.enroll("a", photos([501]), label)
        assert vis.summary("a") == []


def test_label_text_rules():
    assert normalise_label("  Ｔｅｓｌａ\u00a0Model\t3  ") == "Tesla Model 3"  # NFKC, spaces collapsed
    assert normalise_label("Tesla\u3000Model\u2009\u205f3") == "Tesla Model 3"  # ideographic, thin, math spaces
    with pytest.raises(LabelError, match="empty"):  # None (an empty text box) is empty, not a wrong type
        normalise_label(None)
    assert skeleton("Аudi") == skeleton("Audi") and skeleton("Audi") != skeleton("Audl")
    check_not_confusable("Audi A4 Sedan 2012", ["Audi A4 Sedan 2012"])  # the label itself is not a look-alike
    with pytest.raises(LabelError):
        check_not_confusable("BMW X5 SUV 2OO7", ["BMW X5 SUV 2007"])
    hostile = '<img src="http://host/pixel.png" width=400> [click](http://evil.example) **b** $$x$$'
    md = md_text(hostile)
    assert "<" not in md and "](" not in md and "**" not in md and "$$" not in md
    assert md.replace("\\", "").replace("&lt;", "<") == hostile


def test_blank_and_default_ignorable_letters_are_refused():
    """Every character Unicode marks Default_Ignorable_Code_Point, and the blanks outside that set, is
    refused: each can make a new label look like a known one ("BMW\u2800X5 SUV 2007")."""
    regex = pytest.importorskip("regex")
    ignorable = [chr(c) for c in range(0x110000) if regex.match(r"\p{Default_Ignorable_Code_Point}", chr(c))]
    assert len(ignorable) > 4000 and "\u3164" in ignorable and "\u2800" not in ignorable
    for ch in ignorable + ["\u2800", "\U0001d159", "\u115f", "\u1160", "\uffa0"]:
        with pytest.raises(LabelError, match="invisible, blank or control"):
            normalise_label(f"BMW{ch}X5 SUV 2007")


def test_public_enrolment_takes_one_photo(weights, tmp_path):  # noqa: F811
    vis = public(weights, tmp_path)
    assert vis.enroll("a", photos([501])[0], NEW)["added"] == 1  # a PIL image, not a list of one
    assert vis.summary("a") == [(NEW, 1)]


def test_merged_gallery_search_is_the_search_of_the_union():
    from vericar.search.gallery import Gallery
    from vericar.ui.sessions import MergedGallery

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(7, 8)).astype(np.float32)
    merged = MergedGallery(Gallery.from_arrays(a, [f"s{i}" for i in range(50)]),
                           Gallery.from_arrays(b, [f"o{i}" for i in range(7)]))
    union = Gallery.from_arrays(np.concatenate([a, b]), merged.labels)
    q = rng.normal(size=(4, 8)).astype(np.float32)
    (s1, i1), (s2, i2) = merged.search(q, 60), union.search(q, 60)  # deeper than both: -1 padding too
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-6)
    assert len(merged) == 57 and merged.classes == union.classes
