"""Shared test fixtures: tiny random models and synthetic car-like images (CPU, offline, fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vericar.models.model import EmbeddingModel, create_model

# Tiny models gain nothing from intra-op threads, and on a shared CPU they lose a lot.
torch.set_num_threads(1)

#: real photos for the few tests that need them (skipped when absent); never written to.
CARS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "stanford_cars"


def make_car_image(seed: int = 0, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A PIL RGB image (width, height) = ``size``: sky, road, car body, windows and two wheels.

    Colours and positions depend on ``seed``, so different seeds give visibly different "cars".
    """
    rng = np.random.default_rng(seed)
    w, h = size
    colour = lambda: tuple(int(c) for c in rng.integers(0, 256, 3))  # noqa: E731
    img = Image.new("RGB", size, colour())
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, int(h * 0.75), w, h], fill=colour())  # road
    x0, x1 = int(w * rng.uniform(0.05, 0.2)), int(w * rng.uniform(0.8, 0.95))
    y0, y1 = int(h * rng.uniform(0.35, 0.5)), int(h * 0.78)
    draw.rectangle([x0, y0, x1, y1], fill=colour())  # body
    draw.polygon([(x0 + (x1 - x0) // 5, y0), (x0 + (x1 - x0) // 3, int(h * 0.2)),
                  (x1 - (x1 - x0) // 3, int(h * 0.2)), (x1 - (x1 - x0) // 6, y0)], fill=colour())  # cabin
    r = max(2, (x1 - x0) // 8)
    for cx in (x0 + 2 * r, x1 - 2 * r):  # wheels
        draw.ellipse([cx - r, y1 - r, cx + r, y1 + r], fill=(20, 20, 20), outline=colour())
    return img


@pytest.fixture(name="make_car_image")
def make_car_image_fixture():
    """The :func:`make_car_image` helper as a fixture: ``make_car_image(seed, size)``."""
    return make_car_image


@pytest.fixture
def tiny_model() -> EmbeddingModel:
    """Random-init tiny timm CNN (``test_efficientnet``) with a 16-d head, eval mode."""
    torch.manual_seed(0)
    return create_model("timm:test_efficientnet", embed_dim=16, pretrained=False).eval()


@pytest.fixture
def tiny_vit_model() -> EmbeddingModel:
    """Random-init tiny timm ViT (``test_vit``) with a 16-d head, eval mode."""
    torch.manual_seed(0)
    return create_model("timm:test_vit", embed_dim=16, pretrained=False).eval()
