"""train/fix_channels.py: a network trained on red-and-blue-swapped photos made to take photos as they
are; on any photo the fixed network gives what the trained one gave on that photo with its colours
swapped, the gallery and everything fitted stay valid, and scripts that would re-embed the training
photos as stored refuse the fixed artifact."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import vericar
from train.errors import TrainError
from train.fix_channels import main as fix_channels
from vericar.artifacts import hub
from vericar.models.embedding import embed
from vericar.models.ensemble import EnsembleModel
from vericar.models.model import create_model
from vericar.search.gallery import Gallery
from vericar.search.ood import KNNOOD


def _swap(img: Image.Image) -> Image.Image:
    r, g, b = img.split()
    return Image.merge("RGB", (b, g, r))


def _photos(make_car_image, n=4):
    out = []
    for i in range(n):  # coloured, so that a swap changes the input
        img = Image.new("RGB", (96, 64), (200 - 30 * i, 80 + 20 * i, 40 + 40 * i))
        img.paste(make_car_image(i, (56, 36)), (8 + i, 14))
        out.append(img)
    return out


def _artifact(tmp_path, model, photos, name="m"):
    g = Gallery(model.output_dim)
    g.add(embed(model, photos), ["A X Sedan 2010", "A X Sedan 2010", "B Y SUV 2012", "B Y SUV 2012"])
    rec = vericar.Recognizer(model, g, KNNOOD(k=2), k=2)
    hub.save_pretrained(rec, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("members", [1, 2])
def test_fixed_network_on_a_photo_is_the_trained_one_on_the_swapped_photo(tmp_path, make_car_image, members):
    torch.manual_seed(0)
    nets = [create_model("timm:test_efficientnet", embed_dim=16, pretrained=False).eval() for _ in range(members)]
    model = nets[0] if members == 1 else EnsembleModel(nets).eval()
    photos = _photos(make_car_image)
    out = _artifact(tmp_path, model, [_swap(p) for p in photos])  # "trained" on swapped photos: its gallery too
    trained = vericar.load(f"local-dir:{out}")
    before = embed(trained.model, [_swap(p) for p in photos])
    names = fix_channels(["--artifact", str(out)])
    assert len(names) == members and all(n.endswith("conv_stem.weight") for n in names)
    fixed = vericar.load(f"local-dir:{out}")
    np.testing.assert_allclose(embed(fixed.model, photos), before, atol=1e-5)
    assert not np.allclose(embed(fixed.model, photos), embed(trained.model, photos), atol=1e-3)
    # The gallery was left as it was, and a photo as it is now finds its own class in it.
    np.testing.assert_array_equal(fixed.gallery.embeddings, trained.gallery.embeddings)
    assert fixed.predict(photos[2]).label == "B Y SUV 2012"
    meta = json.loads((out / "config.json").read_text())["meta"]
    assert meta["train_photos_channels"] == "bgr" and "python train/fix_channels.py --artifact OUT" in meta["command"]
    with pytest.raises(TrainError, match="already fixed"):
        fix_channels(["--artifact", str(out)])


def test_a_run_cut_short_after_the_weights_is_finished_not_swapped_twice(tmp_path, make_car_image):
    torch.manual_seed(0)
    model = create_model("timm:test_efficientnet", embed_dim=16, pretrained=False).eval()
    photos = _photos(make_car_image)
    out = _artifact(tmp_path, model, photos)
    before = embed(vericar.load(f"local-dir:{out}").model, [_swap(p) for p in photos])
    config = (out / "config.json").read_text()
    fix_channels(["--artifact", str(out)])
    (out / "config.json").write_text(config)  # as if the run stopped after writing the weights
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata()["train_photos_channels"] == "bgr"
    fix_channels(["--artifact", str(out)])
    np.testing.assert_allclose(embed(vericar.load(f"local-dir:{out}").model, photos), before, atol=1e-5)


def test_scripts_that_embed_training_photos_refuse_a_fixed_artifact(tmp_path, make_car_image):
    from train.calibrate import main as calibrate
    from train.calibrate_pairs import main as calibrate_pairs

    torch.manual_seed(0)
    model = create_model("timm:test_efficientnet", embed_dim=16, pretrained=False).eval()
    out = _artifact(tmp_path, model, _photos(make_car_image))
    fix_channels(["--artifact", str(out)])
    from train.crossfit import validation_slice
    from train.ensemble import main as ensemble

    for run in (calibrate, calibrate_pairs):
        with pytest.raises(TrainError, match="fix_channels.py --undo"):
            run(["--artifact", str(out)])
    other = _artifact(tmp_path, model, _photos(make_car_image), name="other")
    with pytest.raises(TrainError, match="fix_channels.py --undo"):
        ensemble(["--members", str(other), str(out), "--output-dir", str(tmp_path / "ens")])
    with pytest.raises(TrainError, match="validation photos.*fix_channels.py --undo"):
        validation_slice(vericar.load(f"local-dir:{out}"))
    assert not (tmp_path / "ens").exists()


def test_a_resaved_fixed_artifact_is_refused_and_undo_swaps_back(tmp_path, make_car_image):
    """The config's mark decides (a re-save writes the weights without the header's); --undo returns the
    network to the photos as stored, and fixing again gives the fixed network back."""
    torch.manual_seed(0)
    model = create_model("timm:test_efficientnet", embed_dim=16, pretrained=False).eval()
    photos = _photos(make_car_image)
    out = _artifact(tmp_path, model, photos)
    as_trained = embed(vericar.load(f"local-dir:{out}").model, photos)
    fix_channels(["--artifact", str(out)])
    fixed = vericar.load(f"local-dir:{out}")
    hub.save_pretrained(fixed, out)  # e.g. after an enrolment: the header mark is gone, the config's stays
    with pytest.raises(TrainError, match="already fixed"):
        fix_channels(["--artifact", str(out)])
    fix_channels(["--undo", "--artifact", str(out)])
    np.testing.assert_allclose(embed(vericar.load(f"local-dir:{out}").model, photos), as_trained, atol=1e-5)
    with pytest.raises(TrainError, match="already as trained"):
        fix_channels(["--undo", "--artifact", str(out)])
    fix_channels(["--artifact", str(out)])
    np.testing.assert_allclose(embed(vericar.load(f"local-dir:{out}").model, photos), embed(fixed.model, photos),
                               atol=1e-5)


def test_a_backbone_without_conv_stem_is_refused_and_nothing_changes(tmp_path, make_car_image):
    torch.manual_seed(0)
    model = create_model("timm:test_vit", embed_dim=16, pretrained=False).eval()
    out = _artifact(tmp_path, model, _photos(make_car_image))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(TrainError, match="no first convolution"):
        fix_channels(["--artifact", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_the_shipped_default_is_fixed():
    """vericar/default was trained on the swapped train photos: its config and its weights say it was fixed."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "vericar" / "default"
    assert json.loads((root / "config.json").read_text())["meta"]["train_photos_channels"] == "bgr"
    with safe_open(str(root / "model.safetensors"), "pt") as f:
        assert f.metadata().get("train_photos_channels") == "bgr"
        assert f.get_tensor("members.0.backbone.conv_stem.weight").dtype == torch.float16


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_unreadable_weights_are_refused_and_the_folder_left_as_it_was(tmp_path, make_car_image, damage):
    torch.manual_seed(0)
    model = create_model("timm:test_efficientnet", embed_dim=16, pretrained=False).eval()
    out = _artifact(tmp_path, model, _photos(make_car_image))
    weights = out / "model.safetensors"
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes(weights.read_bytes()[:1000])
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(TrainError, match="cannot read the weights .* left as it was"):
        fix_channels(["--artifact", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_the_recorded_command_keeps_what_reproduces_the_artifact():
    """fix, undo, refit, fix records as refit-then-fix: an undo right after the fix cancels it."""
    from train.fix_channels import recorded

    fix, undo = "python train/fix_channels.py --artifact OUT", "python train/fix_channels.py --undo --artifact OUT"
    fixed = recorded("python train/train.py --output-dir OUT", undo=False)
    assert fixed.splitlines() == ["python train/train.py --output-dir OUT", fix]
    assert recorded(fixed, undo=True) == "python train/train.py --output-dir OUT"
    refit = recorded(fixed, undo=True) + "\npython train/calibrate_pairs.py --artifact OUT"
    assert recorded(refit, undo=False).splitlines()[-2:] == ["python train/calibrate_pairs.py --artifact OUT", fix]
    assert recorded("python train/train.py --output-dir OUT", undo=True).splitlines()[-1] == undo  # no fix to cancel
