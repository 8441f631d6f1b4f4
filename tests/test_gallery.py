"""Gallery: search vs a NumPy reference, approximate recall, vote, atomic save/load."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vericar.core.errors import ArtifactError
from vericar.search.gallery import FORMAT_VERSION, Gallery, GalleryError


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _naive_search(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = q @ x.T
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, idx, axis=1), idx


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)]))


def test_flat_search_matches_numpy_loop():
    x, q = _unit(500, 16, 0), _unit(20, 16, 1)
    g = Gallery.from_arrays(x, [f"c{i % 7}" for i in range(500)])
    scores, idx = g.search(q, 10)
    ref_s, ref_i = _naive_search(x, q, 10)
    assert scores.dtype == np.float32 and idx.dtype == np.int64 and scores.shape == (20, 10)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)


def test_unnormalised_input_is_normalised():
    x = _unit(50, 8) * 3.0
    g = Gallery.from_arrays(x.astype(np.float64), ["a"] * 50)
    np.testing.assert_allclose(np.linalg.norm(g.embeddings, axis=1), 1.0, atol=1e-6)
    assert g.embeddings.dtype == np.float32


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_recall_vs_flat(kind):
    # Clustered like real embeddings (photos of one vehicle sit together); uniform random
    # vectors are IVF's worst case and not what a gallery holds.
    rng = np.random.default_rng(2)
    centres = _unit(64, 32, 3)
    x = centres[rng.integers(0, 64, 4000)] + 0.15 * rng.standard_normal((4000, 32)).astype(np.float32)
    q = centres[rng.integers(0, 64, 100)] + 0.15 * rng.standard_normal((100, 32)).astype(np.float32)
    labels = ["x"] * len(x)
    flat = Gallery.from_arrays(x, labels)
    approx = Gallery.from_arrays(x, labels, index=kind, nlist=32, nprobe=8)
    if kind == "ivf":
        assert approx.ivf_trained
    _, exact_i = flat.search(q, 10)
    _, app_i = approx.search(q, 10)
    assert _recall(app_i, exact_i) > 0.9


def test_ivf_is_flat_until_enough_vectors_then_trains():
    g = Gallery(8, "ivf", nlist=4)
    x = _unit(4 * 39, 8, 4)
    g.add(x[:100], ["a"] * 100)
    assert not g.ivf_trained
    np.testing.assert_array_equal(g.search(x[:5], 3)[1], _naive_search(x[:100], x[:5], 3)[1])
    g.add(x[100:], ["b"] * (len(x) - 100))
    assert g.ivf_trained and len(g) == len(x)
    assert g.search(x[120:121], 1)[1][0, 0] == 120
    g.nprobe = 4  # visiting every list makes IVF exact
    np.testing.assert_array_equal(g.search(x[:20], 5)[1], _naive_search(x, x[:20], 5)[1])


def test_padding_when_k_exceeds_size():
    g = Gallery.from_arrays(_unit(3, 4), ["a", "b", "c"])
    s, i = g.search(_unit(2, 4, 9), 5)
    assert (i[:, 3:] == -1).all() and np.isneginf(s[:, 3:]).all()
    assert np.isfinite(s[:, :3]).all() and sorted(i[0, :3]) == [0, 1, 2]
    s, i = Gallery(4).search(_unit(1, 4), 2)
    assert (i == -1).all() and np.isneginf(s).all()


@pytest.mark.parametrize(
    "emb,labels,match",
    [
        (np.zeros((2, 3), np.float32) + 1, ["a", "b"], "shape"),
        (_unit(2, 4).astype(np.int32), ["a", "b"], "float"),
        (np.full((1, 4), np.nan, np.float32), ["a"], "NaN"),
        (np.zeros((1, 4), np.float32), ["a"], "zero"),
        (_unit(2, 4), ["a"], "labels"),
        (_unit(1, 4), "a", "list"),
        (_unit(1, 4), [""], "non-empty"),
    ],
)
def test_add_validates(emb, labels, match):
    g = Gallery(4)
    with pytest.raises(GalleryError, match=match):
        g.add(emb, labels)
    assert len(g) == 0 and isinstance(GalleryError("x"), ValueError)


def test_bad_settings():
    for v in ("abc", None, float("inf")):
        with pytest.raises(GalleryError, match="nprobe must be a positive integer"):
            Gallery(4, nprobe=v)
    with pytest.raises(ValueError, match="index type"):
        Gallery(4, "lsh")
    with pytest.raises(ValueError, match="dim"):
        Gallery(0)
    with pytest.raises(ValueError, match="k must"):
        Gallery.from_arrays(_unit(2, 4), ["a", "b"]).search(_unit(1, 4), 0)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_remove_label(kind):
    x = _unit(30, 8, 5)
    labels = ["a", "b", "c"] * 10
    g = Gallery.from_arrays(x, labels, refs=[f"r{i}" for i in range(30)], index=kind)
    assert g.remove_label("b") == 10 and g.remove_label("zzz") == 0
    keep = [i for i, lab in enumerate(labels) if lab != "b"]
    assert g.labels == [labels[i] for i in keep] and g.refs == [f"r{i}" for i in keep]
    assert g.classes == ["a", "c"]
    _, idx = g.search(x, 20)
    assert {g.labels[j] for j in idx.ravel() if j >= 0} <= {"a", "c"}
    np.testing.assert_allclose(g.embeddings, x[keep], atol=1e-6)


def _naive_vote(scores, idx, labels, level_of):
    out = []
    for s_row, i_row in zip(scores, idx):
        w: dict = {}
        for s, j in zip(s_row, i_row):
            if j >= 0:
                v = level_of(labels[j])
                w[v] = w.get(v, 0.0) + max(float(s), 0.0)
        best = max(w.values())
        winner = next(v for v in w if w[v] == best)
        out.append((winner, best / sum(w.values())))
    return out


def test_vote_matches_naive_reference():
    rng = np.random.default_rng(6)
    x = _unit(300, 16, 6)
    labels = [f"Make{m} Model{i % 9}" for i, m in enumerate(rng.integers(0, 4, 300))]
    g = Gallery.from_arrays(x, labels)
    s, i = g.search(_unit(40, 16, 7), 15)
    make = lambda lab: lab.split()[0]  # noqa: E731
    for level_of in (None, make):
        got = g.vote(s, i, level_of)
        ref = _naive_vote(s, i, labels, level_of or (lambda lab: lab))
        assert [w for w, _ in got] == [w for w, _ in ref]
        np.testing.assert_allclose([c for _, c in got], [c for _, c in ref], rtol=1e-6)
        assert all(0.0 <= c <= 1.0 for _, c in got)


def test_vote_hand_example_and_padding():
    g = Gallery.from_arrays(_unit(3, 4), ["a", "b", "b"])
    scores = np.array([[0.9, 0.5, 0.3, -np.inf], [0.2, -0.4, -np.inf, -np.inf], [-0.1, -0.2, -np.inf, -np.inf],
                       [-np.inf] * 4], np.float32)
    idx = np.array([[0, 1, 2, -1], [1, 0, -1, -1], [0, 1, -1, -1], [-1] * 4])
    got = g.vote(scores, idx, None)
    assert got[0][0] == "a" and got[0][1] == pytest.approx(0.9 / 1.7)
    assert got[1] == ("b", pytest.approx(1.0))  # the negative neighbour weighs nothing
    assert got[2] == ("a", 0.0)  # nothing similar: plain count, first wins, no confidence
    assert got[3] == (None, 0.0)


def _thumbs(n):
    return [Image.fromarray(np.full((12, 10, 3), (20 * i) % 256, np.uint8)) for i in range(n)]


def test_save_load_round_trip(tmp_path):
    x = _unit(40, 8, 8)
    labels = [f"c{i % 4}" for i in range(40)]
    thumbs = _thumbs(40)
    thumbs[3] = None
    g = Gallery.from_arrays(x, labels, refs=[f"img{i}.jpg" for i in range(40)], thumbnails=thumbs, index="hnsw",
                            ef_search=77)
    g.save(tmp_path)
    h = Gallery.load(tmp_path)
    assert h.labels == g.labels and h.refs == g.refs and h.dim == 8 and h.settings() == g.settings()
    np.testing.assert_array_equal(h.embeddings, g.embeddings)
    assert h.thumbnail(3) is None
    t = h.thumbnail(5)
    assert t.size == (10, 12) and abs(int(np.asarray(t).mean()) - 100) <= 3  # JPEG is lossy
    np.testing.assert_array_equal(h.search(x[:5], 4)[1], g.search(x[:5], 4)[1])
    assert len(list(tmp_path.glob("gallery-*.safetensors"))) == 1
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    # The same gallery saved again is the same bytes under the same name (safetensors writes several
    # metadata keys in a random order: each re-ship of the default would add a new file to git).
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for i in range(10):
        h.save(tmp_path / f"again{i}")
        assert {p.name: p.read_bytes() for p in (tmp_path / f"again{i}").iterdir()} == first
    # A second save replaces the first and leaves exactly one tensors file.
    h.remove_label("c0")
    h.save(tmp_path)
    assert len(Gallery.load(tmp_path)) == 30 and len(list(tmp_path.glob("gallery-*.safetensors"))) == 1


@pytest.mark.parametrize("fail_at", [1, 2])
def test_crash_during_save_keeps_old_gallery(tmp_path, monkeypatch, fail_at):
    old = Gallery.from_arrays(_unit(10, 8, 9), ["old"] * 10)
    old.save(tmp_path)
    new = Gallery.from_arrays(_unit(12, 8, 10), ["new"] * 12)
    real_replace = os.replace
    calls = []

    def crashing_replace(src, dst):
        calls.append(dst)
        if len(calls) == fail_at:  # 1: the tensors file, 2: gallery.json
            raise OSError("simulated power cut")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="power cut"):
        new.save(tmp_path)
    monkeypatch.setattr(os, "replace", real_replace)
    back = Gallery.load(tmp_path)
    assert back.labels == ["old"] * 10
    np.testing.assert_array_equal(back.embeddings, old.embeddings)
    new.save(tmp_path)  # a later save still works and tidies up
    assert Gallery.load(tmp_path).labels == ["new"] * 12
    assert len(list(tmp_path.glob("gallery-*.safetensors"))) == 1


def test_load_errors(tmp_path):
    with pytest.raises(ArtifactError, match="no gallery.json"):
        Gallery.load(tmp_path)
    Gallery.from_arrays(_unit(5, 4), ["a"] * 5).save(tmp_path)
    jpath = tmp_path / "gallery.json"
    meta = json.loads(jpath.read_text())
    tfile = tmp_path / meta["tensors"]["file"]

    jpath.write_text(json.dumps({**meta, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ArtifactError, match="format version"):
        Gallery.load(tmp_path)
    for bad in ({"index": "kd-tree"}, {"nprobe": 0}, {"nprobe": "many"}, {"nprobe": None}, {"leaf_size": 4}):
        # edited by hand, or written by a newer vericar
        jpath.write_text(json.dumps({**meta, "settings": {**meta["settings"], **bad}}))
        with pytest.raises(ArtifactError, match="rebuild it"):
            Gallery.load(tmp_path)
    jpath.write_text(json.dumps(meta))

    data = tfile.read_bytes()
    tfile.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ArtifactError, match="SHA-256"):
        Gallery.load(tmp_path)
    tfile.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        Gallery.load(tmp_path)
    jpath.write_text("{not json")
    with pytest.raises(ArtifactError, match="JSON"):
        Gallery.load(tmp_path)


def test_save_shares_directory_with_model_files(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"model")
    (tmp_path / "config.json").write_text("{}")
    Gallery.from_arrays(_unit(3, 4), ["a", "b", "c"]).save(tmp_path)
    Gallery.from_arrays(_unit(2, 4), ["a", "b"]).save(Path(tmp_path))
    assert (tmp_path / "model.safetensors").read_bytes() == b"model" and (tmp_path / "config.json").exists()
