"""The one embedding path (vericar/models/embedding.py) and the one embedding cache (vericar/models/embed_cache.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vericar.core.errors import ImageError, VericarError
from vericar.evaluation.data import Sample
from vericar.models.embed_cache import EmbeddingCache, cached, cached_embeddings, weights_digest
from vericar.models.embedding import embed, forward_batches
from vericar.models.transforms import eval_transform, normalize_batch


def _photos(make_car_image, n: int = 7) -> list:
    sizes = [(96, 64), (50, 120), (200, 200), (64, 64), (120, 40), (80, 90), (33, 70)]
    return [make_car_image(i, sizes[i % len(sizes)]) for i in range(n)]


def _naive(model, images) -> np.ndarray:
    """The reference: one photo at a time, torchvision's float transform, the model's forward."""
    tf = eval_transform(model.pretrained_cfg)
    with torch.no_grad():
        return np.stack([model(tf(im.convert("RGB"))[None])[0].numpy() for im in images])


def test_batch_of_one_equals_the_naive_loop_bit_for_bit(tiny_model, make_car_image):
    """Normalising uint8 batches on the device is the same float32 arithmetic as torchvision's
    ToDtype + Normalize: a photo's embedding does not depend on which side normalised it."""
    photos = _photos(make_car_image)
    got = embed(tiny_model, photos, batch_size=1)
    assert got.dtype == np.float32 and got.shape == (len(photos), 16)
    np.testing.assert_array_equal(got, _naive(tiny_model, photos))


def test_normalize_batch_is_torchvisions_arithmetic(tiny_model, make_car_image):
    cfg = tiny_model.pretrained_cfg
    photos = _photos(make_car_image, 3)
    floats = torch.stack([eval_transform(cfg)(p) for p in photos])
    uint8 = torch.stack([eval_transform(cfg, normalize=False)(p) for p in photos])
    assert torch.equal(normalize_batch(uint8, cfg), floats)


def test_batches_workers_and_input_kinds_keep_order_and_numbers(tiny_model, make_car_image, tmp_path):
    photos = _photos(make_car_image)
    ref = _naive(tiny_model, photos)
    batched = embed(tiny_model, photos, batch_size=3)  # 3 + 3 + 1
    np.testing.assert_allclose(batched, ref, atol=1e-5)
    paths = []
    for i, p in enumerate(photos):
        paths.append(str(tmp_path / f"{i}.png"))
        p.save(paths[-1])
    samples = [Sample(p, i, f"class {i}") for i, p in enumerate(paths)]
    # Files decoded in two worker processes come back in input order, with the same numbers.
    np.testing.assert_array_equal(embed(tiny_model, samples, batch_size=3, num_workers=2), batched)
    np.testing.assert_array_equal(embed(tiny_model, paths, batch_size=3), batched)
    tensors = [torch.from_numpy(np.array(p)).permute(2, 0, 1).contiguous() for p in photos]
    np.testing.assert_allclose(embed(tiny_model, tensors, batch_size=3), ref, atol=0.05)  # tensor resize != PIL's
    assert embed(tiny_model, []).shape == (0, 16)


def test_precision_autocasts_but_returns_float32_and_mode_is_restored(tiny_model, make_car_image):
    photos = _photos(make_car_image, 4)
    tiny_model.train()
    f32 = embed(tiny_model, photos)
    bf16 = embed(tiny_model, photos, precision="bf16")
    assert tiny_model.training  # given back in the mode it had
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, f32)  # autocast really ran
    np.testing.assert_allclose(bf16, f32, atol=0.05)
    np.testing.assert_allclose(f32, embed(tiny_model.eval(), photos), atol=0)  # eval mode inside either way
    calls = []
    tiny_model.train = lambda mode=True: calls.append(mode)  # eval() calls train(False): walks every submodule
    embed(tiny_model, photos)
    assert calls == [] and not tiny_model.training  # an eval model is left as it is: no per-request walk


def test_custom_forward_and_model_ready_tensors(tiny_model, make_car_image):
    photos = _photos(make_car_image, 5)
    mirrored = embed(tiny_model, photos, forward=lambda x: tiny_model(torch.flip(x, dims=[3])))
    feats = forward_batches(tiny_model, photos, forward=tiny_model.features, batch_size=2)
    assert feats.shape == (5, tiny_model.num_features) and feats.dtype == torch.float32
    ready = torch.stack([eval_transform(tiny_model.pretrained_cfg)(p) for p in photos])
    np.testing.assert_allclose(embed(tiny_model, ready, preprocess=None, batch_size=2), _naive(tiny_model, photos),
                               atol=1e-5)
    assert not np.allclose(mirrored, _naive(tiny_model, photos), atol=1e-3)


def test_bad_inputs_are_refused_with_their_index(tiny_model, make_car_image):
    with pytest.raises(ImageError, match=r"inputs\[1\] is a ndarray"):
        embed(tiny_model, [make_car_image(0), np.zeros((8, 8, 3))])
    with pytest.raises(VericarError, match="batch_size must be a positive integer"):
        embed(tiny_model, [make_car_image(0)], batch_size=0)
    with pytest.raises(VericarError, match="precision must be one of"):
        embed(tiny_model, [make_car_image(0)], precision="fp8")


# ------------------------------------------------------------------------------------ the cache
def test_cache_hits_and_misses_on_weights_preprocessing_files_and_extra(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(6, dtype=torch.float32).reshape(3, 2) + len(calls)

    lin = torch.nn.Linear(2, 2)
    key = dict(weights=lin, preprocess={"input_size": (3, 8, 8)}, files=["a", "b", "c"], extra={"n": 1})
    first = cached(tmp_path, compute, **key)
    assert torch.equal(cached(tmp_path, compute, **key), first) and len(calls) == 1  # hit
    with torch.no_grad():
        lin.weight[0, 0] += 1e-3
    cached(tmp_path, compute, **key)
    assert len(calls) == 2  # the weights changed
    cached(tmp_path, compute, **{**key, "preprocess": {"input_size": (3, 9, 9)}})
    cached(tmp_path, compute, **{**key, "files": ["a", "c", "b"]})  # order is part of the key
    cached(tmp_path, compute, **{**key, "extra": {"n": 2}})
    assert len(calls) == 5
    assert torch.equal(cached(tmp_path, compute, **key), first + 1) and len(calls) == 5  # each entry kept
    assert cached(None, compute, **key) is not None and len(calls) == 6  # no folder: no cache
    assert len(list(tmp_path.glob("emb-*.safetensors"))) == 5


def test_cache_entries_carry_their_key_as_json(tmp_path):
    from safetensors import safe_open

    cache = EmbeddingCache(tmp_path, "trunk")
    key = cache.key(weights="w", preprocess={"mean": (0.5,)}, files=["x.jpg"], extra={"flip": True})
    path = cache.save(key, torch.ones(2, 3, dtype=torch.float16))
    assert path.name.startswith("trunk-")
    with safe_open(str(path), framework="pt") as f:
        stored = json.loads(f.metadata()["vericar_cache"])
    assert stored["preprocess"] == {"mean": [0.5]} and stored["files"]["count"] == 1 and stored["extra"] == {"flip": True}
    assert cache.load(key).dtype == torch.float16
    other = cache.key(weights="w2", preprocess=None, files=[])
    path.rename(cache.path(other))  # a file under another key's name (e.g. a hash collision) is not trusted
    assert cache.load(other) is None


def test_interrupted_write_leaves_the_previous_entry_and_no_partial_file(tmp_path, monkeypatch):
    import safetensors.torch

    cache = EmbeddingCache(tmp_path)
    key = cache.key(weights="w", preprocess=None, files=["a"])
    cache.save(key, torch.zeros(4))
    real_save = safetensors.torch.save_file

    def dies_half_way(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(10)  # half a file on disk, then the process is interrupted
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        cache.save(key, torch.ones(4))
    assert torch.equal(cache.load(key), torch.zeros(4))  # the previous entry, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == [cache.path(key).name]  # no temporary left
    monkeypatch.undo()
    cache.path(key).write_bytes(cache.path(key).read_bytes()[:20])  # damaged by something else
    assert cache.load(key) is None
    assert torch.equal(cache.get(key, lambda: torch.full((4,), 2.0)), torch.full((4,), 2.0))
    assert torch.equal(cache.load(key), torch.full((4,), 2.0))  # recomputed and replaced


def test_weights_digest_sees_values_dtypes_and_names():
    a = {"w": torch.zeros(2, 2)}
    assert weights_digest(a) == weights_digest({"w": torch.zeros(2, 2)})
    assert weights_digest(a) != weights_digest({"w": torch.zeros(2, 2, dtype=torch.float16)})
    assert weights_digest(a) != weights_digest({"v": torch.zeros(2, 2)})
    assert weights_digest(a) != weights_digest({"w": torch.zeros(4)})
    assert weights_digest({"w": torch.ones(2, dtype=torch.bfloat16)}) != weights_digest({"w": torch.zeros(2, dtype=torch.bfloat16)})


def test_cached_embeddings_embed_once_per_model_and_photos(tiny_model, make_car_image, tmp_path, monkeypatch):
    import vericar.models.embedding

    paths = []
    for i, p in enumerate(_photos(make_car_image, 4)):
        paths.append(str(tmp_path / f"{i}.png"))
        p.save(paths[-1])
    samples = [Sample(p, i, f"c{i}") for i, p in enumerate(paths)]
    calls = []
    real = vericar.models.embedding.embed
    monkeypatch.setattr(vericar.models.embedding, "embed", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = cached_embeddings(tiny_model, samples, tmp_path / "cache", batch_size=2)
    again = cached_embeddings(tiny_model, samples, tmp_path / "cache", batch_size=2)
    assert len(calls) == 1 and np.array_equal(first, again) and again.dtype == np.float32
    np.testing.assert_array_equal(first, real(tiny_model, samples, batch_size=2))
    tiny_model.preprocess = tiny_model.preprocess.override(size=48)
    cached_embeddings(tiny_model, samples, tmp_path / "cache", batch_size=2)
    assert len(calls) == 2  # new preprocessing, new entry
