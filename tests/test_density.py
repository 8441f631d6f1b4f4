"""Density correction (CSLS): densities and re-ranking against naive loops; fairness to enrolled vehicles."""
from __future__ import annotations

import numpy as np
import pytest

from vericar.artifacts.hub import load, save_pretrained
from vericar.core.errors import VericarError
from vericar.core.recognizer import Recognizer
from vericar.models.model import create_model
from vericar.search.density import DensityCorrection
from vericar.search.gallery import Gallery
from vericar.search.ood import KNNOOD


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


def _naive_top(q: np.ndarray, g: Gallery, r: np.ndarray, w: float, depth: int) -> np.ndarray:
    full = q @ g.embeddings.T - w * r[None, :]
    return np.stack([np.argsort(-row, kind="stable")[:depth] for row in full])


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_neighbours_match_naive_full_ranking(index):
    """The corrected top equals a naive ranking by cos - w * r over the whole gallery, for an exhaustive
    and an approximate index; the cosines returned are the plain ones."""
    g = _random_gallery(1, n=80, index=index)
    dc = DensityCorrection(0.7, k=4)
    r = dc.densities(g)
    q = _unit(np.random.default_rng(2).standard_normal((5, 8)))
    corrected, cosine, top = dc.neighbours(g, q, r, 6)
    np.testing.assert_array_equal(top, _naive_top(q, g, r, 0.7, 6))
    full = q @ g.embeddings.T
    np.testing.assert_allclose(cosine, np.take_along_axis(full, top, 1), atol=1e-5)
    np.testing.assert_allclose(corrected, np.take_along_axis(full, top, 1) - 0.7 * r[top], atol=1e-5)


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_neighbours_found_beyond_a_large_tight_cluster(index):
    """120 near-identical photos of one vehicle are nearer the query than a loose class of 6; the loose
    class wins the corrected ranking though every one of its photos is behind the whole tight cluster."""
    rng = np.random.default_rng(5)
    dim = 16
    a, b = np.eye(dim)[0], _unit(np.eye(dim)[0] + 0.9 * np.eye(dim)[1])
    g = Gallery(dim, index=index)
    g.add(_unit(a + 0.01 * rng.standard_normal((120, dim))), ["tight"] * 120)
    g.add(_unit(b + 0.25 * rng.standard_normal((6, dim))), ["loose"] * 6)
    q = _unit(0.45 * a + 0.55 * b)[None, :]
    dc = DensityCorrection(1.0, k=5)
    r = dc.densities(g)
    cos_order = np.argsort(-(q @ g.embeddings.T)[0])
    assert set(g.labels[j] for j in cos_order[:120]) == {"tight"}  # plain cosine: the tight cluster first
    _, _, top = dc.neighbours(g, q, r, 3)
    np.testing.assert_array_equal(top, _naive_top(q, g, r, 1.0, 3))
    assert [g.labels[j] for j in top[0]] == ["loose"] * 3


def test_neighbours_pad_when_gallery_is_small():
    g = _random_gallery(3, n=3)
    dc = DensityCorrection(0.5, k=2)
    corrected, cosine, top = dc.neighbours(g, _unit(np.ones((1, 8))), dc.densities(g), 5)
    assert (top[0, 3:] == -1).all() and np.isneginf(corrected[0, 3:]).all() and np.isneginf(cosine[0, 3:]).all()
    assert (top[0, :3] >= 0).all()


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


def test_densities_are_recomputed_for_a_swapped_gallery_of_the_same_size():
    rec, q = _tight_and_loose(0.5)
    rec.predict_embeddings(q[:1])
    other = Gallery(16)
    rng = np.random.default_rng(9)
    other.add(_unit(rng.standard_normal((40, 16))), [f"class {i % 4}" for i in range(40)])
    rec.gallery = other
    top = rec.search(q[:2], 4)[2]
    np.testing.assert_array_equal(top, _naive_top(q[:2], other, rec.density.densities(other), 0.5, 4))


def test_densities_are_recomputed_after_an_in_place_change_of_the_same_size():
    """Removing a class and adding as many other photos straight on ``rec.gallery`` (bypassing enroll)
    leaves the size unchanged; the ranking must still use the new gallery's densities."""
    rec, q = _tight_and_loose(0.5)
    rec.predict_embeddings(q[:1])
    rec.gallery.remove_label("Audi S6 Sedan 2011")
    new = _unit(q[:1] + 0.1 * np.random.default_rng(3).standard_normal((20, q.shape[1])))
    rec.gallery.add(new, ["Tesla Model 3 Sedan 2021"] * 20)
    top = rec.search(q[:2], 4)[2]
    np.testing.assert_array_equal(top, _naive_top(q[:2], rec.gallery, rec.density.densities(rec.gallery), 0.5, 4))


class _CountingGallery(Gallery):
    """A real HNSW gallery that records how deep each search went."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.fetches: list[tuple[int, int]] = []

    def search(self, queries, k):
        self.fetches.append((len(np.atleast_2d(queries)), k))
        return super().search(queries, k)


def test_approximate_search_stops_as_soon_as_the_top_is_complete():
    """On a clustered HNSW gallery the corrected top is found without fetching towards max_fetch, and
    only the queries not yet complete are searched again."""
    rng = np.random.default_rng(4)
    dim, n = 16, 3000
    centres = _unit(rng.standard_normal((100, dim)))
    g = _CountingGallery(dim, index="hnsw")
    g.add(_unit(centres[np.arange(n) % 100] + 0.15 * rng.standard_normal((n, dim))),
          [f"class {i % 100}" for i in range(n)])
    dc = DensityCorrection(0.5, k=10)
    r = dc.densities(g)
    q = _unit(centres[:20] + 0.15 * rng.standard_normal((20, dim)))
    g.fetches.clear()
    _, _, top = dc.neighbours(g, q, r, 10)
    assert max(k for _, k in g.fetches) <= 200 < dc.max_fetch
    assert all(nq <= 20 for nq, _ in g.fetches[1:])
    naive = _naive_top(q, g, r, 0.5, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, naive)]) > 0.9  # HNSW's own recall


def test_depth_and_bad_density_settings_get_clear_errors():
    from vericar.core.errors import ArtifactError
    from vericar.search.gallery import GalleryError

    g = _random_gallery(6, n=10)
    dc = DensityCorrection(0.5, k=3)
    for depth in (0, -1, 2.5, True):
        with pytest.raises(GalleryError, match="depth"):
            dc.neighbours(g, _unit(np.ones((1, 8))), dc.densities(g), depth)
    for bad in (0.5, "csls", [0.5], {"wieght": 0.5}, {"weight": True}, {"weight": 0.5, "k": 2.7}, {"weight": -1}):
        with pytest.raises(ArtifactError, match="density"):
            DensityCorrection.from_dict(bad)


def test_similar_follows_the_ranking_and_shows_cosines():
    rec, q = _tight_and_loose(0.5)
    img = np.zeros((32, 32, 3), np.uint8)
    emb = rec.embed([img])
    _, cosine, idx = rec.search(emb, 5)
    got = rec.similar(img, 5)
    assert [n.index for n in got] == idx[0].tolist()
    np.testing.assert_allclose([n.score for n in got], cosine[0], atol=1e-6)


def test_the_threshold_is_bound_to_the_ranking_it_was_fitted_under(tmp_path):
    """The artifact records the ranking its OOD threshold was calibrated for; a ranking changed after
    calibration is refused on save and on load (with the command that fixes it), not warned about."""
    import dataclasses
    import json

    from vericar.core.errors import ArtifactError

    csls, q = _tight_and_loose(0.5)
    csls.ood.calibrate(np.array([p.ood_score for p in csls.predict_embeddings(q)]), tpr=0.95)
    csls.ood.calibrated_for = csls.density.cfg
    save_pretrained(csls, tmp_path / "csls")
    cfg = json.loads((tmp_path / "csls" / "config.json").read_text())
    assert cfg["ood"]["calibrated_for"] == cfg["ranking"]["density"] == {"weight": 0.5, "k": 10, "max_fetch": 4096}
    assert load(f"local-dir:{tmp_path / 'csls'}").config.ood.calibrated_for == csls.density.cfg
    cfg["ranking"]["density"]["weight"] = 0.25  # a hand edit: the threshold no longer fits
    (tmp_path / "csls" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match=r"fitted for cos - 0.5 \* density.*cos - 0.25.*train.calibrate"):
        load(f"local-dir:{tmp_path / 'csls'}")
    csls.density = DensityCorrection(0.0)  # changed in code after calibration
    with pytest.raises(ArtifactError, match="plain cosine.*train.calibrate"):
        save_pretrained(csls, tmp_path / "other")
    assert not (tmp_path / "other" / "config.json").exists()
    csls.ood = KNNOOD.from_cfg(dataclasses.replace(csls.ood.cfg, calibrated_for=csls.density.cfg))
    save_pretrained(csls, tmp_path / "other")  # re-fitted (here: declared) for the new ranking: accepted
    assert not load(f"local-dir:{tmp_path / 'other'}").density.active
