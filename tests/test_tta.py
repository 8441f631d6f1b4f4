"""Flip-averaged embeddings (``model.tta = ("flip",)``): one embedding path does it for every caller,
a gallery records how it was embedded and a mismatch is refused, Grad-CAM++ stays on the photo as shown."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vericar
from vericar.artifacts import config_file
from vericar.core.config import ModelCfg
from vericar.core.errors import ArtifactError, GalleryError, SpecError, VericarError
from vericar.models.embed_cache import cached_embeddings
from vericar.models.embedding import embed
from vericar.models.transforms import eval_transform
from vericar.search.gallery import Gallery
from vericar.search.ood import KNNOOD


def _photos(make_car_image, n=6):
    # Asymmetric scenes (the car at one side): a mirror image is really another input.
    out = []
    for i in range(n):
        img = Image.new("RGB", (120, 64), (90 + 10 * i, 120, 150))
        img.paste(make_car_image(i, (60, 40)), (4 + i, 12))
        out.append(img)
    return out


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flip_matches_a_naive_two_pass_reference(tiny_model, make_car_image):
    photos = _photos(make_car_image)
    tiny_model.preprocess = tiny_model.preprocess.override(crop_mode="squash")  # as the trained models (see below)
    plain = embed(tiny_model, photos, batch_size=4)
    tiny_model.tta = ("flip",)
    flipped = embed(tiny_model, photos, batch_size=4)
    # Naive: each photo and its mirror image through the network one at a time, means renormalised.
    tf = eval_transform(tiny_model.preprocess)
    with torch.no_grad():
        naive = []
        for p in photos:
            x = tf(p).unsqueeze(0)
            a, b = tiny_model(x)[0].numpy(), tiny_model(torch.flip(x, dims=[3]))[0].numpy()
            naive.append((a + b) / np.linalg.norm(a + b))
    np.testing.assert_allclose(flipped, np.stack(naive), atol=1e-5)
    # Mirroring the photo itself (the squash resize commutes with it) gives the same views.
    mirrored = embed(tiny_model, [p.transpose(Image.FLIP_LEFT_RIGHT) for p in photos], tta=())
    np.testing.assert_allclose(flipped, _unit(plain + mirrored), atol=1e-4)
    assert np.abs(flipped - plain).max() > 1e-3  # it changes something
    # A caller's own forward (e.g. backbone features) is run as given; tta=() overrides the model's.
    np.testing.assert_allclose(embed(tiny_model, photos, tta=()), plain, atol=1e-6)


def test_both_views_go_through_the_network_in_one_batch(tiny_model, make_car_image):
    seen = []
    hook = tiny_model.head.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    tiny_model.tta = ("flip",)
    embed(tiny_model, _photos(make_car_image, 3), batch_size=8)
    hook.remove()
    assert seen == [6]


def test_tta_settings_are_checked_and_round_trip(tiny_model):
    cfg = tiny_model.model_cfg
    assert "tta" not in cfg.to_dict()  # a plain model's config.json is as older vericars wrote it
    flip = ModelCfg(cfg.spec, cfg.embed_dim, cfg.preprocess, ("flip",))
    assert flip.to_dict()["tta"] == ["flip"] and ModelCfg.from_dict(flip.to_dict()) == flip
    for bad in ("flip", ["mirror"], ["flip", "flip"], None):
        with pytest.raises(SpecError, match="tta"):
            ModelCfg(cfg.spec, cfg.embed_dim, cfg.preprocess, bad)
        with pytest.raises(SpecError, match="tta"):
            tiny_model.tta = bad
    with pytest.raises(GalleryError, match="tta"):
        Gallery(4, tta=["rotate"])


def _recognizer(model, photos, labels):
    g = Gallery(model.output_dim)
    g.add(embed(model, photos), labels)
    return vericar.Recognizer(model, g, KNNOOD(k=2), k=2)


def test_artifact_records_its_views_and_loading_refuses_a_mismatch(tiny_model, make_car_image, tmp_path):
    photos = _photos(make_car_image)
    labels = ["Acme Roadster Coupe 2020"] * 3 + ["Bolt Hauler Pickup 2019"] * 3
    tiny_model.tta = ("flip",)
    rec = _recognizer(tiny_model, photos, labels)
    assert rec.gallery.tta == ("flip",)  # a gallery built in memory takes its recognizer's model's views
    vericar.save_pretrained(rec, tmp_path / "flip")
    raw = json.loads((tmp_path / "flip" / "config.json").read_text())
    assert raw["format_version"] == 5 and raw["model"]["tta"] == ["flip"]
    assert json.loads((tmp_path / "flip" / "gallery.json").read_text())["settings"]["tta"] == ["flip"]
    again = vericar.load(f"local-dir:{tmp_path / 'flip'}")
    assert again.model.tta == ("flip",) and again.predict(photos[4]).label == rec.predict(photos[4]).label

    # The config says plain, the gallery was flip-averaged: refused with a message, not a silent loss.
    raw["model"].pop("tta")
    raw["format_version"] = 3
    (tmp_path / "flip" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="flip-averaged .* but the model embeds queries plain"):
        vericar.load(f"local-dir:{tmp_path / 'flip'}")
    # The other way round, in memory: a plain gallery, then the model switched to flip.
    tiny_model.tta = ()
    plain = _recognizer(tiny_model, photos, labels)
    plain.model.tta = ("flip",)
    with pytest.raises(ArtifactError, match="plain .* but the model embeds queries flip-averaged"):
        plain.predict(photos[0])
    with pytest.raises(ArtifactError, match="re-embed the gallery"):
        vericar.save_pretrained(plain, tmp_path / "bad")
    assert not (tmp_path / "bad" / "config.json").exists()


def test_an_older_vericar_refuses_a_flip_artifact_by_its_format(tiny_model, make_car_image):
    tiny_model.tta = ("flip",)
    rec = _recognizer(tiny_model, _photos(make_car_image), ["A B Sedan 2000"] * 6)
    assert config_file.version_for(rec.config) == 5 > max(3, 4)  # 3 and 4 are what vericar read before it
    tiny_model.tta = ()
    assert config_file.version_for(_recognizer(tiny_model, _photos(make_car_image), ["A B Sedan 2000"] * 6).config) == 3


def test_gradcam_sees_the_photo_as_shown_not_its_mirror(tiny_model, make_car_image, monkeypatch):
    import vericar.models.explain as explain_mod

    photos = _photos(make_car_image)
    tiny_model.preprocess = tiny_model.preprocess.override(crop_mode="squash")  # the view is the whole photo
    tiny_model.tta = ("flip",)
    rec = _recognizer(tiny_model, photos, ["Acme Roadster Coupe 2020"] * 3 + ["Bolt Hauler Pickup 2019"] * 3)
    fed = []
    real = explain_mod.gradcam_pp
    monkeypatch.setattr(explain_mod, "gradcam_pp", lambda model, x, targets: fed.append(x) or real(model, x, targets))
    ex = rec.explain(photos[1])
    expected = eval_transform(tiny_model.preprocess)(photos[1]).unsqueeze(0)
    assert len(fed) == 1 and torch.equal(fed[0], expected)  # one view, not mirrored
    assert np.array_equal(np.asarray(ex.photo), np.asarray(photos[1]))  # the overlay lies on the photo as shown
    assert ex.overlay.size == photos[1].size


@pytest.mark.parametrize("views", [(), ("flip",)])
def test_enrolment_under_both_settings(views, tiny_model, make_car_image):
    photos = _photos(make_car_image)
    tiny_model.tta = views
    rec = _recognizer(tiny_model, photos[:4], ["Acme Roadster Coupe 2020"] * 2 + ["Bolt Hauler Pickup 2019"] * 2)
    new = [make_car_image(40 + i, (96, 64)) for i in range(2)]
    assert rec.enroll(new, "Zed Runner Hatchback 2024") == 2
    rows = [i for i, lab in enumerate(rec.gallery.labels) if lab == "Zed Runner Hatchback 2024"]
    np.testing.assert_allclose(rec.gallery.embeddings[rows], embed(tiny_model, new, tta=views), atol=1e-5)
    assert rec.predict(new[0]).neighbours[0].label == "Zed Runner Hatchback 2024"


def test_the_embedding_cache_keeps_flip_and_plain_apart(tiny_model, make_car_image, tmp_path):
    from vericar.evaluation.data import Sample

    files = []
    for i, p in enumerate(_photos(make_car_image, 3)):
        p.save(tmp_path / f"{i}.png")
        files.append(Sample(str(tmp_path / f"{i}.png"), 0, "A B Sedan 2000"))
    plain = cached_embeddings(tiny_model, files, tmp_path / "cache")
    tiny_model.tta = ("flip",)
    flipped = cached_embeddings(tiny_model, files, tmp_path / "cache")
    assert np.abs(plain - flipped).max() > 1e-3
    np.testing.assert_allclose(flipped, embed(tiny_model, files), atol=1e-6)


def test_evaluate_refuses_other_views_than_the_gallery_without_a_gallery_csv(tmp_path):
    from vericar.evaluate import main

    csv = tmp_path / "q.csv"
    csv.write_text("file,label,class_name\n")
    # The shipped default's gallery is embedded one view per photo: flip-averaged queries need a gallery of their own.
    with pytest.raises(VericarError, match="--tta flip: the model's gallery was embedded with views \\[\\]"):
        main(["--model", "default", "--queries", str(csv), "--tta", "flip", "--no-progress"])
