"""The GPU path's data and precision, checked on the CPU: uint8 batches normalised on the device
give the transforms' own numbers; a bf16 (autocast) training run still embeds its gallery and
calibration photos in float32, exactly as vericar.evaluate embeds queries; colour jitter per batch."""
from __future__ import annotations

import numpy as np
import torch

from test_train import _args, tiny_csv  # noqa: F401  (tiny_csv is a fixture)
from train.train import main


def test_uint8_batches_normalised_on_the_device_match_the_float_transform(make_car_image):
    from vericar.models.transforms import eval_transform, normalize_batch

    cfg = {"input_size": (3, 40, 56), "mean": (0.48, 0.45, 0.41), "std": (0.23, 0.22, 0.23),
           "interpolation": "bicubic", "crop_pct": 0.9, "resize_mode": "shortest"}
    img = make_car_image(3, (90, 60))
    u8 = eval_transform(cfg, normalize=False)(img)
    assert u8.dtype == torch.uint8 and u8.shape == (3, 40, 56)
    torch.testing.assert_close(normalize_batch(u8[None], cfg)[0], eval_transform(cfg)(img), atol=1e-6, rtol=0)


def test_bf16_training_embeds_the_artifact_in_float32_like_evaluate(tiny_csv, tmp_path):
    import vericar
    from vericar.evaluation.data import load_csv
    from vericar.evaluate import embed_samples

    from accelerate.state import AcceleratorState

    out = tmp_path / "bf16"
    # accelerate keeps one AcceleratorState per process: earlier tests fixed mixed_precision="no" in it
    AcceleratorState._reset_state()
    try:
        main(_args(tiny_csv, out, "--epochs", "1", "--max-steps", "2", "--mixed-precision", "bf16"))
    finally:
        AcceleratorState._reset_state()
    rec = vericar.load(f"local-dir:{out}")
    by_ref = {s.ref: s for s in load_csv(tiny_csv)}
    queries = embed_samples(rec.model, [by_ref[r] for r in rec.gallery.refs], progress=False, num_workers=0)
    # float32 both ways (bf16 would differ by ~1e-2); only channels-last vs not remains (~1e-4)
    np.testing.assert_allclose(rec.gallery.embeddings, queries, atol=5e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = rec.model.eval()(torch.randn(2, 3, 32, 32))
    assert low.dtype == torch.bfloat16  # autocast does reach this model: the check above would see it


def test_color_jitter_per_photo_in_range():
    from train.augment import color_jitter

    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 16, 16, generator=g)
    assert color_jitter(x, 0.0) is x
    y = color_jitter(x, 0.4, generator=g)
    assert y.shape == x.shape and 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    ratio = (y.mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3)))
    assert float(ratio.std()) > 0.01  # each photo its own factors
    grey = torch.full((1, 3, 4, 4), 0.5)
    out = color_jitter(grey, 0.4, generator=g)
    assert float((out - out[:, :1]).abs().max()) < 1e-6  # a grey photo stays grey (saturation has nothing to move)
