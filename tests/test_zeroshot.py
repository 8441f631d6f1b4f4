"""OpenCLIP text prototypes as gallery entries (tiny random CLIP, offline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vericar.core.errors import VericarError
from vericar.models.model import create_model
from vericar.models.zeroshot import DEFAULT_TEMPLATES, class_phrase, text_prototypes, zeroshot_gallery
from vericar.search.gallery import Gallery

torch.set_num_threads(1)

NAMES = ["BMW 3 Series Sedan 2012", "Audi TTS Coupe 2012", "AM General Hummer SUV 2000", "my tractor"]


@pytest.fixture(scope="module")
def clip_model():
    torch.manual_seed(0)
    return create_model("open_clip:tiny-test", embed_dim=0, pretrained=False, keep_text=True).eval()


def test_class_phrase() -> None:
    assert class_phrase("BMW 3 Series Sedan 2012") == "2012 BMW 3 Series Sedan"
    assert class_phrase("AM General Hummer SUV 2000") == "2000 AM General Hummer SUV"
    assert class_phrase("my tractor") == "my tractor"  # flat labels stay as they are


def test_prototypes_match_naive_reference(clip_model) -> None:
    templates = ["a photo of a {}.", "a blurry photo of the {}."]
    protos = text_prototypes(clip_model, NAMES, templates)
    assert protos.shape == (len(NAMES), clip_model.output_dim) and protos.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(protos, axis=1), 1.0, atol=1e-5)
    clip, tok = clip_model.clip_model, clip_model.tokenizer
    with torch.no_grad():
        for row, name in zip(protos, NAMES):
            prompts = [t.format(class_phrase(name)) for t in templates]
            mean = clip.encode_text(tok(prompts), normalize=True).mean(0)
            np.testing.assert_allclose(row, (mean / mean.norm()).numpy(), atol=1e-5)
    # different names give different prototypes
    assert np.abs(protos[0] - protos[1]).max() > 1e-3


def test_image_and_text_share_the_space(clip_model) -> None:
    """The model's image embedding is CLIP's own normalised image embedding, so text rows are comparable."""
    x = torch.randn(2, *clip_model.pretrained_cfg["input_size"])
    with torch.no_grad():
        ours = clip_model(x)
        theirs = clip_model.clip_model.encode_image(x, normalize=True)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_modes_restored(clip_model) -> None:
    clip_model.clip_model.train()
    before = [m.training for m in clip_model.clip_model.modules()]
    text_prototypes(clip_model, NAMES[:1])
    assert [m.training for m in clip_model.clip_model.modules()] == before
    clip_model.clip_model.eval()


def test_zeroshot_gallery(clip_model) -> None:
    gallery = zeroshot_gallery(clip_model, NAMES)
    assert isinstance(gallery, Gallery) and len(gallery) == len(NAMES)
    assert gallery.labels == NAMES
    assert gallery.refs[0] == "text:2012 BMW 3 Series Sedan"
    protos = text_prototypes(clip_model, NAMES, DEFAULT_TEMPLATES)
    scores, idx = gallery.search(protos, 1)
    assert idx[:, 0].tolist() == list(range(len(NAMES)))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)


def test_refuses_trained_head() -> None:
    model = create_model("open_clip:tiny-test", embed_dim=8, pretrained=False, keep_text=True)
    with pytest.raises(VericarError, match="projection head"):
        text_prototypes(model, NAMES)


def test_refuses_without_text_tower_or_non_clip() -> None:
    with pytest.raises(VericarError, match="keep_text=True"):
        text_prototypes(create_model("open_clip:tiny-test", embed_dim=0, pretrained=False), NAMES)
    with pytest.raises(VericarError, match="OpenCLIP"):
        text_prototypes(create_model("timm:test_efficientnet", embed_dim=0, pretrained=False), NAMES)


def test_bad_names_and_templates(clip_model) -> None:
    with pytest.raises(VericarError):
        text_prototypes(clip_model, "BMW 3 Series Sedan 2012")
    with pytest.raises(VericarError):
        text_prototypes(clip_model, [])
    with pytest.raises(VericarError):
        text_prototypes(clip_model, NAMES, ["no placeholder"])
