"""Density correction (CSLS): densities and re-ranking against naive loops; fairness to enrolled vehicles."""
from __future__ import annotations

import numpy as np
import pytest

from vericar.density import DensityCorrection
from vericar.errors import VericarError
from vericar.gallery import Gallery
from vericar.hub import load, save_pretrained
from vericar.model import create_model
from vericar.ood import KNNOOD
from vericar.recognizer import Recognizer


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _random_gallery(seed: int, n: int = 60, dim: int = 8, index: str = "flat") -> Gallery:
    rng = np.random.default_rng(seed)
    g = Gallery(dim, index=index)
    g.add(_unit(rng.standard_normal((n, dim))), [f"class {i % 7}" for i in range(n)])
    return g


def test_densities_match_naive_loop():
    g = _random_gallery(0)
    dc = DensityCorrection(0.5, k=5)
    e = g.embeddings
    naive = []
    for i in range(len(e)):
        sims = sorted((float(e[i] @ e[j]) for j in range(len(e)) if j != i), reverse=True)
        naive.append(np.mean(sims[:5]))
    np.testing.assert_allclose(dc.densities(g), naive, atol=1e-5)


def test_densities_of_tiny_galleries():
    dc = DensityCorrection(0.5, k=10)
    assert dc.densities(Gallery(4)).shape == (0,)
    one = Gallery(4)
    one.add(_unit(np.ones((1, 4))), ["a"])
    np.testing.assert_array_equal(dc.densities(one), [0.0])  # no neighbours: no density
    two = Gallery(4)
    two.add(_unit(np.array([[1, 0, 0, 0], [1, 1, 0, 0]], dtype=np.float32)), ["a", "b"])
    np.testing.assert_allclose(dc.densities(two), [np.sqrt(0.5)] * 2, atol=1e-6)


def test_rerank_matches_naive_full_ranking():
    """Over-fetch + re-rank gives exactly the top of a naive ranking by cos - w * r over the whole gallery."""
    g = _random_gallery(1, n=80)
    dc = DensityCorrection(0.7, k=4)
    r = dc.densities(g)
    q = _unit(np.random.default_rng(2).standard_normal((5, 8)))
    cos, idx = g.search(q, dc.fetch_depth(6, len(g)))
    corrected, cosine, top = dc.rerank(cos, idx, r, 6)
    full = q @ g.embeddings.T
    for row in range(len(q)):
        naive = np.argsort(-(full[row] - 0.7 * r), kind="stable")[:6]
        np.testing.assert_array_equal(top[row], naive)
        np.testing.assert_allclose(cosine[row], full[row, naive], atol=1e-5)
        np.testing.assert_allclose(corrected[row], full[row, naive] - 0.7 * r[naive], atol=1e-5)


def test_rerank_pads_when_gallery_is_small():
    g = _random_gallery(3, n=3)
    dc = DensityCorrection(0.5, k=2)
    cos, idx = g.search(_unit(np.ones((1, 8))), 5)
    corrected, cosine, top = dc.rerank(cos, idx, dc.densities(g), 5)
    assert (top[0, 3:] == -1).all() and np.isneginf(corrected[0, 3:]).all() and np.isneginf(cosine[0, 3:]).all()


def test_bad_settings_are_refused():
    with pytest.raises(VericarError, match="weight"):
        DensityCorrection(-1)
    with pytest.raises(VericarError, match="k"):
        DensityCorrection(0.5, k=0)
    with pytest.raises(VericarError, match="density"):
        DensityCorrection.from_dict({"weight": "much"})
    assert not DensityCorrection.from_dict(None).active  # an older artifact: plain cosine


def _tight_and_loose(weight: float) -> tuple[Recognizer, np.ndarray]:
    """A trained class whose photos are a tight cluster, an enrolled look-alike whose photos are loose,
    and queries of the enrolled vehicle that lie between them (a little nearer its own photos)."""
    rng = np.random.default_rng(0)
    dim = 16
    a, b = np.zeros(dim), np.zeros(dim)
    a[0], b[0], b[1] = 1.0, 0.8, 0.6  # cos(a, b) = 0.8: look-alikes
    tight = _unit(a + 0.02 * rng.standard_normal((20, dim)))
    loose = _unit(b + 0.2 * rng.standard_normal((20, dim)))
    g = Gallery(dim)
    g.add(tight, ["Audi S4 Sedan 2012"] * 20)
    g.add(loose, ["Audi S6 Sedan 2011"] * 20)
    queries = _unit(0.3 * a + 0.7 * b + 0.05 * rng.standard_normal((30, dim)))
    model = create_model("timm:test_efficientnet", embed_dim=dim, pretrained=False)
    return Recognizer(model, g, KNNOOD(k=10), k=10, density=DensityCorrection(weight)), queries


def test_density_correction_lets_a_loosely_clustered_enrolled_vehicle_win():
    """Plain k-NN gives these queries to the tight look-alike; the CSLS ranking gives most to their own class."""
    plain, q = _tight_and_loose(0.0)
    csls, _ = _tight_and_loose(0.5)
    plain_acc = np.mean([p.label == "Audi S6 Sedan 2011" for p in plain.predict_embeddings(q)])
    csls_acc = np.mean([p.label == "Audi S6 Sedan 2011" for p in csls.predict_embeddings(q)])
    assert plain_acc < 0.5 < csls_acc
    # Shown similarities stay plain cosines, whatever the ranking.
    p = csls.predict_embeddings(q[:1])[0]
    sims = csls.gallery.embeddings[[n.index for n in p.neighbours]] @ q[0]
    np.testing.assert_allclose([n.score for n in p.neighbours], sims, atol=1e-5)


def test_densities_follow_enrolment_and_removal():
    rec, q = _tight_and_loose(0.5)
    before = rec.predict_embeddings(q[:3])
    rec.add_embeddings(_unit(np.tile(q[:1], (5, 1))), ["Tesla Model 3 Sedan 2021"] * 5)
    assert rec.predict_embeddings(q[:1])[0].label == "Tesla Model 3 Sedan 2021"
    assert len(rec._density_r) == len(rec.gallery)
    rec.remove("Tesla Model 3 Sedan 2021")
    after = rec.predict_embeddings(q[:3])
    assert [p.label for p in after] == [p.label for p in before]
    assert [n.index for n in after[0].neighbours] == [n.index for n in before[0].neighbours]


def test_density_settings_survive_save_and_load(tmp_path):
    rec, q = _tight_and_loose(0.5)
    save_pretrained(rec, tmp_path / "m")
    r2 = load(f"local-dir:{tmp_path / 'm'}")
    assert r2.density.weight == 0.5 and r2.density.k == 10
    assert [p.label for p in r2.predict_embeddings(q)] == [p.label for p in rec.predict_embeddings(q)]
