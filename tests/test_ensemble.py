"""Ensembles (vericar/models/ensemble.py, train/ensemble.py): several trainings of one architecture embed
a photo together; a cosine is the mean of theirs; the artifact is format 6 and loads back as the same."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vericar
from test_train import _args, _photo, tiny_csv  # noqa: F401  (tiny_csv is a fixture)
from train.errors import TrainError
from vericar.artifacts import hub
from vericar.core.errors import ArtifactError, SpecError
from vericar.models.embedding import embed
from vericar.models.ensemble import EnsembleModel, model_from_config
from vericar.models.model import create_model
from vericar.models.transforms import eval_transform
from vericar.search.gallery import Gallery
from vericar.search.ood import KNNOOD


def _two(dim=16):
    torch.manual_seed(0)
    a = create_model("timm:test_efficientnet", embed_dim=dim, pretrained=False).eval()
    torch.manual_seed(1)
    b = create_model("timm:test_efficientnet", embed_dim=dim, pretrained=False).eval()
    return a, b


def _photos(make_car_image, n=5):
    out = []
    for i in range(n):  # the car at one side: the mirror image is another input
        img = Image.new("RGB", (120, 64), (90 + 10 * i, 120, 150))
        img.paste(make_car_image(i, (60, 40)), (4 + i, 12))
        out.append(img)
    return out


@pytest.mark.parametrize("views", [(), ("flip",)])
def test_ensemble_embedding_against_a_naive_loop(make_car_image, views):
    """Each photo, each view, each member one at a time: the members' unit embeddings side by side over
    sqrt(2), the views' mean renormalised; so a cosine is the mean of the members' cosines."""
    a, b = _two()
    ens = EnsembleModel([a, b]).eval()
    ens.tta = views
    photos = _photos(make_car_image)
    got = embed(ens, photos, batch_size=2)
    tf = eval_transform(ens.preprocess)
    naive = []
    with torch.no_grad():
        for p in photos:
            x = tf(p).unsqueeze(0)
            xs = [x] + ([torch.flip(x, dims=[3])] if views else [])
            v = sum(np.concatenate([a(xi)[0].numpy(), b(xi)[0].numpy()]) / np.sqrt(2) for xi in xs)
            naive.append(v / np.linalg.norm(v))
    np.testing.assert_allclose(got, np.stack(naive), atol=1e-5)
    assert got.shape == (len(photos), 32) and ens.output_dim == 32
    if not views:
        ea, eb = embed(a, photos), embed(b, photos)
        np.testing.assert_allclose(got @ got.T, (ea @ ea.T + eb @ eb.T) / 2, atol=1e-5)


def test_ensemble_refuses_members_of_another_architecture():
    a, _ = _two()
    other = create_model("timm:test_efficientnet", embed_dim=8, pretrained=False)
    with pytest.raises(SpecError, match="member 1 is timm:test_efficientnet \\(8-d.*one architecture"):
        EnsembleModel([a, other])
    with pytest.raises(SpecError, match="at least two"):
        EnsembleModel([a])


def test_ensemble_artifact_round_trip_is_format_6(tmp_path, make_car_image):
    a, b = _two()
    ens = EnsembleModel([a, b]).eval()
    ens.tta = ("flip",)
    photos = _photos(make_car_image, 4)
    g = Gallery(ens.output_dim, tta=("flip",))
    g.add(embed(ens, photos), ["A X Sedan 2010", "A X Sedan 2010", "B Y SUV 2012", "B Y SUV 2012"])
    rec = vericar.Recognizer(ens, g, KNNOOD(k=2), k=2)
    hub.save_pretrained(rec, tmp_path / "ens")
    raw = json.loads((tmp_path / "ens" / "config.json").read_text())
    assert raw["format_version"] == 6 and raw["model"]["members"] == 2 and raw["model"]["tta"] == ["flip"]
    back = vericar.load(f"local-dir:{tmp_path / 'ens'}")
    assert isinstance(back.model, EnsembleModel) and back.model.model_cfg == ens.model_cfg
    np.testing.assert_allclose(embed(back.model, photos), embed(ens, photos), atol=1e-5)
    assert back.predict(photos[2]).label == "B Y SUV 2012"
    # Enrolment embeds through the ensemble too: the new photos' rows are what the ensemble gives them.
    new = _photos(make_car_image, 7)[5:]
    assert back.enroll(new, "C Z Coupe 2013") == 2
    np.testing.assert_allclose(back.gallery.embeddings[-2:], embed(ens, new), atol=1e-5)
    assert back.predict(new[0]).label == "C Z Coupe 2013"
    # Another member count in config.json: the weights do not fit, and loading says so.
    raw["model"]["members"] = 3
    (tmp_path / "ens" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="does not match the architecture"):
        vericar.load(f"local-dir:{tmp_path / 'ens'}")
    raw["model"]["members"] = 0
    (tmp_path / "ens" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="members must be an integer >= 1"):
        vericar.load(f"local-dir:{tmp_path / 'ens'}")


def test_ensemble_reads_the_first_members_features_and_explains_through_all(make_car_image):
    """The attribute heads read the first member's pooled features (the ones they were trained on);
    Grad-CAM++ hooks every member's last stage and gives one map of the photo's input size."""
    from vericar.attributes.tap import FeatureTap
    from vericar.models.explain import gradcam_pp

    a, b = _two()
    ens = EnsembleModel([a, b]).eval()
    x = eval_transform(ens.preprocess)(_photos(make_car_image, 1)[0]).unsqueeze(0)
    tap = FeatureTap(ens)
    with tap.capture() as rows, torch.no_grad():
        ens(x)
    tap.remove()
    with torch.no_grad():
        np.testing.assert_allclose(rows[0], a.features(x).numpy(), atol=1e-6)
    assert len(rows) == 1 and len(rows.columns) == 1  # the first member's pool only, as its head
    assert ens.target_layers() == a.target_layers() + b.target_layers()
    with torch.no_grad():
        target = ens(torch.flip(x, dims=[3])).numpy()
    heat = gradcam_pp(ens, x, target)
    assert heat.shape == tuple(x.shape[-2:]) and np.isfinite(heat).all() and heat.max() > 0


def test_model_from_config_builds_either_kind():
    a, b = _two()
    a.tta = ("flip",)
    assert type(model_from_config(a.config())).__name__ == "EmbeddingModel"
    ens = EnsembleModel([a, b])
    assert a.tta == ("flip",) and ens.tta == ()  # the caller's member is left as it was
    built = model_from_config(ens.config())
    assert isinstance(built, EnsembleModel) and len(built.members) == 2
    with pytest.raises(ArtifactError, match="ensemble of 2 networks; build it with vericar.models.ensemble"):
        type(a).from_config(ens.model_cfg)


@pytest.fixture()
def two_trainings(tiny_csv, tmp_path):  # noqa: F811
    outs = {}
    for name, extra in (("a", []), ("b", ["--lr-head", "0.0123"]), ("seed1", ["--seed", "1"])):
        outs[name] = tmp_path / name
        vericar_train(_args(tiny_csv, outs[name], "--epochs", "1", "--max-steps", "2", "--k", "2", "--ood-k", "2",
                            *extra))
    return outs


def vericar_train(argv):
    from train.train import main

    return main(argv)


def test_train_ensemble_builds_and_calibrates_an_artifact(two_trainings, tmp_path):
    """train/ensemble.py: the gallery re-embedded by both members, the threshold and confidences refitted on
    the validation photos, the comparison dropped, the card saying what it is; other splits refused."""
    from train.ensemble import main as ensemble

    a, b = two_trainings["a"], two_trainings["b"]
    out = tmp_path / "ens"
    metrics = ensemble(["--members", str(a), str(b), "--output-dir", str(out)])
    assert metrics["n_queries"] > 0
    raw = json.loads((out / "config.json").read_text())
    assert raw["format_version"] == 6 and raw["model"]["members"] == 2
    assert raw["ood"]["threshold"] is not None and raw["calibration"]["method"] and raw.get("compare") is None
    assert raw["meta"]["ensemble"]["members"] == ["a", "b"] and "train/ensemble.py" in raw["meta"]["command"]
    rec, ra, rb = (vericar.load(f"local-dir:{p}") for p in (out, a, b))
    assert rec.gallery.refs == ra.gallery.refs
    photo = _photo(1, 2)
    ea, eb = ra.embed([photo]), rb.embed([photo])
    np.testing.assert_allclose(rec.embed([photo]), np.concatenate([ea, eb], axis=1) / np.sqrt(2), atol=1e-5)
    assert rec.predict(photo).confidence["model"] > 0
    card = (out / "README.md").read_text()
    assert "ensemble of 2 trainings" in card and "one training per member" in card
    assert f"--artifact {out}" in raw["meta"]["command"] and ".building" not in raw["meta"]["command"]
    with pytest.raises(TrainError, match=r"seed1 differs from \S*/a in train_config seed\. Join trainings"):
        ensemble(["--members", str(a), str(two_trainings["seed1"]), "--output-dir", str(tmp_path / "x")])
    with pytest.raises(TrainError, match="--output-dir is one of the --members"):
        ensemble(["--members", str(a), str(b), "--output-dir", str(a)])
    with pytest.raises(TrainError, match="names one folder twice"):
        ensemble(["--members", str(a), str(a), "--output-dir", str(tmp_path / "x")])
    with pytest.raises(TrainError, match="ens is an ensemble already"):
        ensemble(["--members", str(out), str(b), "--output-dir", str(tmp_path / "x")])
    with pytest.raises(TrainError, match="exists and is not an empty folder"):
        ensemble(["--members", str(a), str(b), "--output-dir", str(out)])
    assert not (tmp_path / "x").exists()


def test_train_ensemble_leaves_nothing_when_calibration_fails(two_trainings, tmp_path, monkeypatch):
    from train import calibrate
    from train.ensemble import main as ensemble

    def fails(argv):
        raise TrainError("calibration stopped")

    monkeypatch.setattr(calibrate, "main", fails)
    (tmp_path / "ens").mkdir()  # an empty folder is taken
    with pytest.raises(TrainError, match="calibration stopped"):
        ensemble(["--members", str(two_trainings["a"]), str(two_trainings["b"]), "--output-dir", str(tmp_path / "ens")])
    assert not any((tmp_path / "ens").iterdir()) and not (tmp_path / ".ens.building").exists()


def test_train_ensemble_weights_half_survive_calibration(two_trainings, tmp_path):
    """--weights-half: float16 on disk, also after train/calibrate.py saved the artifact again; the embedding
    is the float32 one's to float16 rounding."""
    from safetensors.torch import load_file

    from train.ensemble import main as ensemble

    out = tmp_path / "half"
    ensemble(["--members", str(two_trainings["a"]), str(two_trainings["b"]), "--output-dir", str(out), "--weights-half"])
    state = load_file(out / "model.safetensors")
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    ra, rb, rec = (vericar.load(f"local-dir:{p}") for p in (two_trainings["a"], two_trainings["b"], out))
    photo = _photo(2, 1)
    full = np.concatenate([ra.embed([photo]), rb.embed([photo])], axis=1) / np.sqrt(2)
    np.testing.assert_allclose(rec.embed([photo]), full, atol=5e-3)
    assert "--weights-half" in json.loads((out / "config.json").read_text())["meta"]["command"]


@pytest.mark.parametrize("members, tta", [(1, ()), (1, ("flip",)), (2, ()), (2, ("flip",))])
def test_attribute_training_features_are_what_the_tap_catches(make_car_image, members, tta):
    """benchmarks/attributes_fit.py fits the heads on ``tapped_features`` (a plain pass); the product's heads
    read what FeatureTap catches in the embedding pass (one network or an ensemble, with or without flip
    averaging, whose mirror rows the tap skips). The two must be the same numbers, or a head reads other
    features than it was fitted on. And each part against a reference computed from the network directly."""
    from vericar.attributes.colour import body_weights
    from vericar.attributes.tap import PARTS, FeatureTap, column_means, tapped_features

    a, b = _two()
    model = a if members == 1 else EnsembleModel([a, b]).eval()
    model.tta = tta
    photos = _photos(make_car_image, 5)
    tap = FeatureTap(model)
    with tap.capture() as rows:
        embed(model, photos, batch_size=2)
    tap.remove()
    fitted = tapped_features(model, photos)
    assert set(fitted) == set(PARTS)
    for part in PARTS:
        np.testing.assert_allclose(rows.part(part, 5), fitted[part], atol=1e-5)
    x = torch.stack([eval_transform(a.preprocess)(p) for p in photos])
    with torch.no_grad():
        maps, h = [], x
        h = a.backbone.bn1(a.backbone.conv_stem(h))
        for block in a.backbone.blocks:
            h = block(h)
            maps.append(h)
        last = a.backbone.bn2(a.backbone.conv_head(h))
    np.testing.assert_allclose(fitted["columns"], column_means(last).numpy(), atol=1e-5)
    early = [(m * torch.from_numpy(body_weights(m.shape[2], m.shape[3]))).sum((2, 3)) for m in maps[1:4]]
    np.testing.assert_allclose(fitted["early"], torch.cat(early, 1).numpy(), atol=1e-5)
    # embed ran 3 batches (5 photos, 2 a batch): one row batch per part each, the first member's hooks only
    assert len(rows) == len(rows.columns) == len(rows.early[0]) == 3
