"""EmbeddingModel, create_model, embed_images, transforms and spec errors on tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from vericar.core.errors import ArtifactError, ImageError, SpecError
from vericar.models.backbones import create_backbone
from vericar.models.model import EmbeddingModel, create_model, embed_images
from vericar.models.transforms import eval_transform, train_transform

SPECS = ["timm:test_efficientnet", "timm:test_vit", "open_clip:tiny-test"]


def _batch(model: EmbeddingModel, n: int = 2) -> torch.Tensor:
    _, h, w = model.pretrained_cfg["input_size"]
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("spec,kind", [(SPECS[0], "cnn"), (SPECS[1], "vit"), (SPECS[2], "vit")])
def test_forward_shape_unit_norm_and_kind(spec, kind):
    model = create_model(spec, embed_dim=16, pretrained=False).eval()
    out = model(_batch(model, 3))
    assert out.shape == (3, 16) and model.output_dim == 16 and model.kind == kind
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert model.features(_batch(model)).shape == (2, model.num_features)


def test_embed_dim_zero_is_normalised_raw_features(tiny_model):
    model = create_model("timm:test_efficientnet", embed_dim=0, pretrained=False).eval()
    assert isinstance(model.head, torch.nn.Identity) and model.output_dim == model.num_features
    x = _batch(model)
    with torch.no_grad():
        assert torch.allclose(model(x), F.normalize(model.features(x), dim=-1))
    with pytest.raises(SpecError, match="embed_dim"):
        create_model("timm:test_efficientnet", embed_dim=-1, pretrained=False)


def test_embed_images_matches_manual_forward(tiny_model, make_car_image):
    images = [make_car_image(i, size) for i, size in enumerate([(96, 64), (50, 120), (200, 200)])]
    images.append(make_car_image(7).convert("L"))  # greyscale input is converted to RGB
    emb = embed_images(tiny_model, images, batch_size=3)
    assert emb.shape == (4, 16) and emb.dtype == np.float32
    transform = eval_transform(tiny_model.pretrained_cfg)
    with torch.no_grad():
        expected = tiny_model(torch.stack([transform(im.convert("RGB")) for im in images])).numpy()
    np.testing.assert_allclose(emb, expected, atol=1e-5)
    np.testing.assert_allclose(embed_images(tiny_model, images, batch_size=1), emb, atol=1e-5)
    assert not np.allclose(emb[0], emb[1], atol=1e-3)  # different images, different embeddings
    assert embed_images(tiny_model, []).shape == (0, 16)
    with pytest.raises(ImageError, match="open_image"):
        embed_images(tiny_model, [np.zeros((8, 8, 3))])


def test_embed_images_restores_training_mode(tiny_model, make_car_image):
    tiny_model.train()
    embed_images(tiny_model, [make_car_image(0)])
    assert tiny_model.training


@pytest.mark.parametrize("spec", SPECS)
def test_config_round_trip_rebuilds_identical_model(spec):
    torch.manual_seed(0)
    model = create_model(spec, embed_dim=8, pretrained=False).eval()
    cfg = json.loads(json.dumps(model.config()))  # must be JSON-able
    clone = EmbeddingModel.from_config(cfg).eval()
    clone.load_state_dict(model.state_dict(), strict=True)
    assert clone.pretrained_cfg == model.pretrained_cfg and clone.kind == model.kind
    x = _batch(model)
    with torch.no_grad():
        assert torch.allclose(clone(x), model(x), atol=1e-6)


def test_from_config_rejects_bad_config():
    with pytest.raises(ArtifactError, match="spec"):
        EmbeddingModel.from_config({"embed_dim": 8})
    with pytest.raises(ArtifactError, match="pretrained_cfg"):
        EmbeddingModel.from_config({"spec": SPECS[0], "embed_dim": 8, "pretrained_cfg": {"mean": [0.5] * 3}})


@pytest.mark.parametrize(
    "spec", ["tf_efficientnet_lite0", "resnet:50", "timm:no_such_net_xyz", "open_clip:NoSuchArch/openai", "timm:", ""]
)
def test_bad_spec_raises_spec_error_naming_valid_forms(spec):
    with pytest.raises(SpecError) as err:
        create_model(spec, pretrained=False)
    assert "timm:" in str(err.value) and "open_clip:" in str(err.value)


def test_keep_text_only_for_open_clip_and_not_in_state_dict():
    model = create_model("open_clip:tiny-test", embed_dim=0, pretrained=False, keep_text=True)
    assert model.clip_model is not None and model.tokenizer is not None
    with torch.no_grad():
        text = model.clip_model.encode_text(model.tokenizer(["a photo of a red car"]))
    assert text.shape == (1, model.output_dim)  # text lives in the same space as raw image embeddings
    assert not any(k.startswith("clip") or k.startswith("_text") for k in model.state_dict())
    assert create_model("open_clip:tiny-test", pretrained=False).clip_model is None
    with pytest.raises(SpecError, match="open_clip"):
        create_backbone("timm:test_efficientnet", pretrained=False, keep_text=True)
    with pytest.raises(SpecError, match="pretrained=False"):
        create_backbone("open_clip:tiny-test", pretrained=True)


def _activations(model: EmbeddingModel) -> torch.Tensor:
    captured = []
    handle = model.target_layers()[0].register_forward_hook(lambda mod, inp, out: captured.append(out))
    with torch.no_grad():
        model(_batch(model))
    handle.remove()
    return captured[0]


def test_cnn_target_layer_is_a_feature_map(tiny_model):
    assert tiny_model.reshape_transform is None and tiny_model.grid_size is None
    act = _activations(tiny_model)
    assert act.ndim == 4 and act.shape[1] == tiny_model.num_features


@pytest.mark.parametrize("spec,grid", [(SPECS[1], (10, 10)), (SPECS[2], (4, 4))])
def test_vit_reshape_transform_uses_own_patch_grid(spec, grid):
    model = create_model(spec, embed_dim=8, pretrained=False).eval()
    assert model.grid_size == grid and model.prefix_tokens == 1
    tokens = _activations(model)
    assert tokens.shape[1] == model.prefix_tokens + grid[0] * grid[1]
    fmap = model.reshape_transform(tokens)
    assert fmap.shape == (2, tokens.shape[2], *grid)
    # naive reference: patch token (r, c) lands at fmap[:, :, r, c]
    r, c = grid[0] - 1, 1
    assert torch.equal(fmap[:, :, r, c], tokens[:, 1 + r * grid[1] + c, :])


CFG = {"input_size": (3, 48, 80), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bicubic", "crop_pct": 1.0}


@pytest.mark.parametrize("mode", ["shortest", "squash"])
@pytest.mark.parametrize("image_size", [(300, 100), (90, 260), (80, 48)])
def test_eval_transform_output_size_matches_cfg(mode, image_size, make_car_image):
    out = eval_transform({**CFG, "resize_mode": mode})(make_car_image(3, image_size))
    assert out.shape == (3, 48, 80) and out.dtype == torch.float32


def test_shortest_crops_center_while_squash_keeps_everything():
    from PIL import Image

    img = Image.new("RGB", (300, 100), (0, 0, 0))
    img.paste((255, 255, 255), (100, 0, 200, 100))  # white center square, black sides
    cfg = {**CFG, "input_size": (3, 32, 32)}
    shortest = eval_transform({**cfg, "resize_mode": "shortest"})(img)
    squash = eval_transform({**cfg, "resize_mode": "squash"})(img)
    # only the white center survives the center crop (white -> +1 after norm; edges blur a little)
    assert shortest[:, :, 2:-2].min() > 0.9 and shortest.mean() > 0.95
    assert squash.min() < -0.9 and squash.max() > 0.9  # squash keeps the black sides


def test_train_transform_size_and_no_vertical_flip(make_car_image):
    t = train_transform({**CFG, "resize_mode": "shortest"}, scale=(0.5, 1.0))
    assert t(make_car_image(1, (120, 90))).shape == (3, 48, 80)
    kinds = {type(op) for op in t.transforms}
    assert v2.RandomHorizontalFlip in kinds and v2.RandomVerticalFlip not in kinds
    assert v2.RandomHorizontalFlip not in {type(op) for op in train_transform(CFG, hflip=False).transforms}


def test_transform_rejects_bad_cfg():
    with pytest.raises(SpecError, match="interpolation"):
        eval_transform({**CFG, "interpolation": "lanczos9"})
    with pytest.raises(SpecError, match="input_size"):
        eval_transform({"mean": (0.5,) * 3, "std": (0.5,) * 3})
