"""Grad-CAM++ with a similarity target: CNN and ViT, hooks cleaned up, shared model left untouched."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vericar.core.errors import ImageError, VericarError
from vericar.models.backbones import Backbone
from vericar.models.explain import SimilarityTarget, _concept, gradcam_pp, overlay
from vericar.models.model import EmbeddingModel, create_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cnn() -> EmbeddingModel:
    torch.manual_seed(0)
    return create_model("timm:test_efficientnet", embed_dim=16, pretrained=False).eval()


@pytest.fixture(scope="module")
def vit() -> EmbeddingModel:
    torch.manual_seed(0)
    return create_model("timm:test_vit", embed_dim=16, pretrained=False).eval()


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _image(model: EmbeddingModel, seed: int = 0) -> torch.Tensor:
    _, h, w = model.pretrained_cfg["input_size"]
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _targets(model: EmbeddingModel, n: int = 3, seed: int = 1) -> np.ndarray:
    _, h, w = model.pretrained_cfg["input_size"]
    with torch.no_grad():
        return model(torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))).numpy()


def _check_heatmap(heat: np.ndarray, shape: tuple[int, int]) -> None:
    assert heat.shape == shape and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
    assert heat.std() > 1e-3, "heatmap is constant"


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_heatmap_shape_range_and_model_untouched(name: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(name)
    model.train()  # a model mid-training must get its mode back
    flags = [p.requires_grad for p in model.parameters()]
    hooks = _hook_count(model)
    x = _image(model)
    heat = gradcam_pp(model, x, _targets(model))
    _check_heatmap(heat, tuple(x.shape[-2:]))
    assert _hook_count(model) == hooks
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters()), "Grad-CAM must not leave .grad on shared weights"
    assert model.training
    model.eval()


def test_vit_non_square_grid() -> None:
    """A ViT built for 160x96 (10x6 patch grid): the reshape comes from the model, not a fixed 14x14."""
    torch.manual_seed(0)
    module = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=(160, 96))
    cfg = {"input_size": (3, 160, 96), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bicubic",
           "crop_pct": 1.0, "resize_mode": "shortest"}
    model = EmbeddingModel(Backbone(module, module.num_features, cfg, "vit", "timm:test_vit"), embed_dim=8).eval()
    assert model.grid_size == (10, 6)
    heat = gradcam_pp(model, _image(model), _targets(model))
    _check_heatmap(heat, (160, 96))


def test_hooks_removed_on_error(vit: EmbeddingModel) -> None:
    hooks = _hook_count(vit)
    with pytest.raises(VericarError, match=r"grid is 10x10; feed images of size \(160, 160\)"):
        gradcam_pp(vit, torch.randn(1, 3, 64, 64), _targets(vit))
    assert _hook_count(vit) == hooks
    assert all(p.requires_grad for p in vit.parameters())


def test_open_clip_vit() -> None:
    torch.manual_seed(0)
    model = create_model("open_clip:tiny-test", embed_dim=0, pretrained=False).eval()
    heat = gradcam_pp(model, _image(model), _targets(model))
    _check_heatmap(heat, tuple(model.pretrained_cfg["input_size"][1:]))


def test_similarity_target_is_cosine_to_mean(cnn: EmbeddingModel) -> None:
    targets = _targets(cnn, n=4)
    rng = np.random.default_rng(0)
    out = rng.normal(size=cnn.output_dim).astype(np.float32)
    mean = targets.mean(axis=0)
    expected = float(out @ mean / (np.linalg.norm(out) * np.linalg.norm(mean)))
    concept = _concept(targets, cnn.output_dim)
    assert np.isclose(float(concept.norm()), 1.0, atol=1e-6)
    got = float(SimilarityTarget(concept)(torch.from_numpy(out)))
    assert np.isclose(got, expected, atol=1e-5)


def test_matches_naive_gradcam_pp(cnn: EmbeddingModel) -> None:
    """Reference Grad-CAM++ (Chattopadhay et al. 2018, eq. 19) written with plain autograd."""
    x, targets = _image(cnn, 3), _targets(cnn)
    layer = cnn.target_layers()[0]
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        emb = cnn(x)
    finally:
        handle.remove()
    c = torch.from_numpy(targets.mean(0))
    score = F.cosine_similarity(emb[0], c / c.norm(), dim=0)
    a = store["a"]
    g = torch.autograd.grad(score, a)[0][0].detach().numpy()
    a = a[0].detach().numpy()
    alpha = g**2 / (2 * g**2 + a.sum(axis=(1, 2), keepdims=True) * g**3 + 1e-6)
    alpha = np.where(g != 0, alpha, 0)
    w = (np.maximum(g, 0) * alpha).sum(axis=(1, 2))
    cam = np.maximum((w[:, None, None] * a).sum(0), 0)
    cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
    ref = cv2.resize(cam.astype(np.float32), (x.shape[-1], x.shape[-2]))
    ref = (ref - ref.min()) / (ref.max() + 1e-7)
    heat = gradcam_pp(cnn, x, targets)
    np.testing.assert_allclose(heat, ref, atol=1e-4)


class _RedDetector(nn.Module):
    """A hand-built embedding model whose answer is known: channel 0 fires on red pixels."""

    kind, output_dim, reshape_transform = "cnn", 2, None

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, -0.5, -0.5], [0.0, 0.0, 0.0]]).view(2, 3, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, 0.5]))
        self.act = nn.ReLU()

    def target_layers(self) -> list[nn.Module]:
        return [self.act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.act(self.conv(x)).mean(dim=(2, 3)), dim=-1)


@pytest.mark.parametrize("top,left", [(4, 4), (40, 36)])
def test_heatmap_follows_the_object(top: int, left: int) -> None:
    model = _RedDetector().eval()
    x = torch.zeros(1, 3, 64, 64)
    x[0, 0, top : top + 16, left : left + 20] = 1.0  # a red box
    heat = gradcam_pp(model, x, np.array([[1.0, 0.0]], dtype=np.float32))
    ys, xs = np.nonzero(heat > 0.5)
    assert ys.size > 0
    assert top - 2 <= ys.mean() - 7.5 <= top + 2 and left - 2 <= xs.mean() - 9.5 <= left + 2
    assert heat[top + 8, left + 10] > 0.9 and heat[(top + 32) % 64, (left + 32) % 64] < 0.1


def test_own_embedding_target_is_finite(cnn: EmbeddingModel) -> None:
    """cos(e, e) is at its maximum, so the gradient is ~0: the map may be flat, but must stay finite in [0, 1]."""
    x = _image(cnn, 5)
    with torch.no_grad():
        own = cnn(x).numpy()
    heat = gradcam_pp(cnn, x, own)
    assert heat.shape == tuple(x.shape[-2:]) and np.isfinite(heat).all()
    assert heat.min() >= 0.0 and heat.max() <= 1.0


def test_under_inference_mode_and_concurrent_inference(cnn: EmbeddingModel) -> None:
    x, targets = _image(cnn, 7), _targets(cnn)
    ref = gradcam_pp(cnn, x, targets)
    with torch.inference_mode():
        np.testing.assert_allclose(gradcam_pp(cnn, x, targets), ref, atol=1e-5)
    stop = threading.Event()

    def infer() -> None:  # another request embedding photos on the same model meanwhile
        other = torch.randn(1, 3, *x.shape[-2:])
        while not stop.is_set():
            with torch.no_grad():
                cnn(other)

    worker = threading.Thread(target=infer)
    worker.start()
    try:
        heats = [gradcam_pp(cnn, x, targets) for _ in range(3)]
    finally:
        stop.set()
        worker.join()
    for heat in heats:
        np.testing.assert_allclose(heat, ref, atol=1e-5)


def test_bad_inputs(cnn: EmbeddingModel) -> None:
    with pytest.raises(ImageError):
        gradcam_pp(cnn, torch.randn(3, 160, 160), _targets(cnn))
    with pytest.raises(VericarError, match="target_embeddings"):
        gradcam_pp(cnn, _image(cnn), np.zeros((2, cnn.output_dim + 1), np.float32))
    with pytest.raises(VericarError, match="target_embeddings"):
        gradcam_pp(cnn, _image(cnn), np.zeros((0, cnn.output_dim), np.float32))


def test_overlay() -> None:
    img = Image.new("RGB", (64, 48), (128, 128, 128))
    heat = np.zeros((10, 10), np.float32)
    heat[:, :5] = 1.0  # hot on the left half
    out = overlay(img, heat, alpha=0.5)
    assert out.size == img.size and out.mode == "RGB"
    a = np.asarray(out).astype(int)
    left, right = a[:, :20].mean(axis=(0, 1)), a[:, -20:].mean(axis=(0, 1))
    assert left[0] > left[2] and right[2] > right[0]  # jet: hot = red, cold = blue
    with pytest.raises(VericarError):
        overlay(img, np.zeros(5), alpha=0.5)
    with pytest.raises(VericarError):
        overlay(img, heat, alpha=2.0)
