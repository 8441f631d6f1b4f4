"""Offline EfficientNet-Lite weights: key remap, strict load, and real ImageNet predictions."""

from __future__ import annotations

import pandas as pd
import pytest
import timm
import torch
from PIL import Image

from conftest import CARS_DIR
from vericar.core.errors import SpecError
from vericar.models.backbones import create_backbone
from vericar.models.transforms import eval_transform
from vericar.models.weights import load_efficientnet_lite_state_dict, remap_efficientnet_pytorch_keys

# ImageNet-1k classes a car photo can fairly be called.
VEHICLE_CLASSES = {407, 436, 468, 479, 511, 555, 569, 573, 581, 609, 627, 654, 656, 661, 675, 705, 717, 734,
                   751, 757, 817, 864, 867}


@pytest.fixture(scope="module")
def lite0_state():
    return load_efficientnet_lite_state_dict("tf_efficientnet_lite0")


def test_lite0_strict_load_and_key_count(lite0_state):
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    reference = model.state_dict()
    assert len(lite0_state) == len(reference) == 296
    result = model.load_state_dict(lite0_state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in lite0_state.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_remap_rejects_wrong_variant(lite0_state):
    raw = {"_blocks.99._bn1.weight": torch.zeros(3)}
    with pytest.raises(SpecError, match="different EfficientNet-Lite variant"):
        remap_efficientnet_pytorch_keys(raw, [1, 2])
    with pytest.raises(SpecError, match="no offline weights"):
        load_efficientnet_lite_state_dict("tf_efficientnet_lite4")


def test_headless_backbone_matches_full_model_features(lite0_state):
    """The pretrained backbone's pooled features equal timm's pre-logits of the full classifier."""
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    full.load_state_dict(lite0_state, strict=True)
    backbone = create_backbone("timm:tf_efficientnet_lite0", pretrained=True)
    backbone.module.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = full.forward_head(full.forward_features(x), pre_logits=True)
        assert torch.allclose(backbone.module(x), expected, atol=1e-5)
    assert backbone.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)


@pytest.mark.skipif(not (CARS_DIR / "train.csv").exists(), reason="Stanford Cars photos not available")
def test_lite0_recognises_real_cars_as_vehicles(lite0_state):
    """With the right weights and preprocessing, ImageNet top-1 is a vehicle class for real car photos."""
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(lite0_state, strict=True)
    cfg = create_backbone("timm:tf_efficientnet_lite0", pretrained=False).pretrained_cfg
    transform = eval_transform(cfg)
    files = pd.read_csv(CARS_DIR / "train.csv").sample(6, random_state=0)["file"]
    x = torch.stack([transform(Image.open(CARS_DIR / f).convert("RGB")) for f in files])
    with torch.no_grad():
        top1 = model(x).argmax(-1).tolist()
    hits = sum(c in VEHICLE_CLASSES for c in top1)
    assert hits >= 5, f"top-1 ImageNet classes {top1}: only {hits}/6 are vehicles"
