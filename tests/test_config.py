"""The config tree (vericar/core/config.py), its file form, older formats and their migration, and the spec parser."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from vericar.artifacts import hub
from vericar.artifacts.config_file import main as artifact_main
from vericar.core.config import (DensityCfg, DetectorCfg, ModelCfg, OODCfg, PreprocessCfg, RankingCfg, SourceCfg,
                            VericarConfig)
from vericar.artifacts.spec import ModelSpec, parse_spec
from vericar.core.errors import ArtifactError, SpecError
from vericar.core.recognizer import Recognizer
from vericar.models.model import create_model
from vericar.search.density import DensityCorrection
from vericar.search.gallery import Gallery
from vericar.search.ood import KNNOOD

from conftest import make_car_image

PRE = PreprocessCfg((3, 32, 48), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear", "center", 0.9)


def _tree() -> VericarConfig:
    csls = DensityCfg(0.5, 7, 512)
    return VericarConfig(
        model=ModelCfg("timm:test_efficientnet", 16, PRE),
        ranking=RankingCfg(5, csls),
        ood=OODCfg(4, 0.625, 0.95, csls),
        calibration={"method": "knn-softmax", "temperatures": {"make": 0.5}, "biases": {}, "thresholds": {},
                     "info": {"n": 3}},
        detector=DetectorCfg("opencv-ssd:mobilenet_v2_coco"),
        source=SourceCfg("local-dir:/somewhere", "/somewhere"),
    )


def test_round_trip_is_exact_and_json_able():
    cfg = _tree()
    d = json.loads(json.dumps(cfg.to_dict()))
    back = VericarConfig.from_dict(d)
    assert back == cfg and back.to_dict() == d
    assert d["model"]["preprocess"] == {"input_size": [3, 32, 48], "mean": [0.5] * 3, "std": [0.25] * 3,
                                        "interpolation": "bilinear", "crop_mode": "center", "crop_pct": 0.9}
    # Changing a setting is a new tree; the old one stays as it was.
    other = dataclasses.replace(cfg, ranking=dataclasses.replace(cfg.ranking, k=9))
    assert other != cfg and cfg.ranking.k == 5 and VericarConfig.from_dict(other.to_dict()) == other
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.ranking.k = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.calibration["method"] = "other"  # type: ignore[index]


def test_preprocess_speaks_timm_and_keeps_one_crop_rule():
    assert PRE.override(crop_mode="squash") == dataclasses.replace(PRE, crop_mode="squash", crop_pct=1.0)
    assert PRE.override(size=64) == dataclasses.replace(PRE, input_size=(3, 64, 64))
    assert PRE.override() == PRE
    legacy = {"input_size": [3, 32, 48], "mean": [0.5] * 3, "std": [0.25] * 3, "interpolation": "bilinear",
              "crop_pct": 0.9, "resize_mode": "shortest"}
    assert PreprocessCfg.from_dict(legacy) == PRE  # format 1-2's name for crop_mode
    for bad, words in (({"input_size": (3, 0, 4)}, "input_size"), ({"crop_mode": "border"}, "crop_mode"),
                       ({"crop_pct": 1.5}, "crop_pct"), ({"interpolation": "lanczos9"}, "interpolation"),
                       ({"mean": (0.5, 0.5)}, "mean")):
        with pytest.raises(SpecError, match=words):
            dataclasses.replace(PRE, **bad)


def test_a_threshold_fitted_under_another_ranking_is_refused():
    cfg = _tree()
    assert cfg.check() is cfg
    plain = dataclasses.replace(cfg, ranking=RankingCfg(5, DensityCfg()))
    with pytest.raises(ArtifactError, match=r"(?s)fitted for cos - 0.5.*plain cosine.*train.calibrate"):
        plain.check("somewhere")
    unrecorded = dataclasses.replace(cfg, ood=dataclasses.replace(cfg.ood, calibrated_for=None))
    with pytest.raises(ArtifactError, match="unrecorded ranking"):
        unrecorded.check()
    # No threshold, nothing to be inconsistent with; voting k is not part of what the threshold depends on.
    dataclasses.replace(plain, ood=OODCfg(4)).check()
    dataclasses.replace(cfg, ranking=dataclasses.replace(cfg.ranking, k=1)).check()


def _saved(tmp_path: Path, weight: float = 0.5) -> tuple[Recognizer, Path]:
    model = create_model("timm:test_efficientnet", embed_dim=16, pretrained=False)
    rec = Recognizer(model, Gallery(16), KNNOOD(k=2, threshold=0.4), k=3, density=DensityCorrection(weight, 3),
                     meta={"command": "tiny", "train_config": {"data": "x.csv", "seed": 1}})
    for c in range(3):
        rec.enroll([make_car_image(c * 10 + i) for i in range(3)], f"Audi A{c} Sedan 2012")
    hub.save_pretrained(rec, tmp_path / "new")
    return rec, tmp_path / "new"


def _as_format_2(folder: Path, out: Path) -> Path:
    """The artifact as vericar wrote it before the tree (format 2): restated settings and all."""
    import shutil

    shutil.copytree(folder, out)
    new = json.loads((folder / "config.json").read_text())
    pp = dict(new["model"]["preprocess"])
    pp["resize_mode"] = {"center": "shortest", "squash": "squash"}[pp.pop("crop_mode")]
    ood = {k: new["ood"][k] for k in ("method", "k", "threshold", "tpr")}
    old = {"format": "vericar", "format_version": 2, "k": new["ranking"]["k"], "density": new["ranking"]["density"],
           "model": {"spec": new["model"]["spec"], "embed_dim": new["model"]["embed_dim"], "pretrained_cfg": pp},
           "ood": ood, "detector": new["detector"]["spec"],
           "meta": {**new["meta"], "ood_threshold": ood["threshold"],
                    "train_config": {**new["meta"]["train_config"], "density_weight": 0.5, "k": 3}}}
    (out / "config.json").write_text(json.dumps(old))
    return out


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.name != "config.json"}


def test_format_2_loads_as_it_did_and_migrates_in_one_command(tmp_path, capsys):
    rec, new = _saved(tmp_path)
    old = _as_format_2(new, tmp_path / "old")
    before = _digests(old)
    loaded = hub.load(f"local-dir:{old}")
    assert dataclasses.replace(loaded.config, source=None) == dataclasses.replace(rec.config, source=None)
    q = [make_car_image(s) for s in (3, 17, 99)]
    a, b = loaded.predict_batch(q), rec.predict_batch(q)
    assert [(p.label, p.unknown) for p in a] == [(p.label, p.unknown) for p in b]
    assert "ood_threshold" not in loaded.meta and "density_weight" not in loaded.meta["train_config"]

    artifact_main(["migrate", str(old)])
    assert "migrated from format 2 to 3" in capsys.readouterr().out
    written = json.loads((old / "config.json").read_text())
    assert written["format_version"] == 3 and written["ood"]["calibrated_for"] == written["ranking"]["density"]
    assert written["meta"]["train_config"] == {"data": "x.csv", "seed": 1}
    assert _digests(old) == before  # weights and gallery untouched
    assert hub.read_config(old) == dataclasses.replace(rec.config, source=None)
    artifact_main(["migrate", str(old)])
    assert "nothing to do" in capsys.readouterr().out


def test_format_1_is_plain_cosine(tmp_path):
    rec, new = _saved(tmp_path, weight=0.0)
    old = _as_format_2(new, tmp_path / "old")
    raw = json.loads((old / "config.json").read_text())
    raw["format_version"] = 1
    del raw["density"]
    (old / "config.json").write_text(json.dumps(raw))
    cfg = hub.read_config(old)
    assert cfg.ranking.density == cfg.ood.calibrated_for == DensityCfg()


def test_format_4_only_for_a_nearness_calibration(tmp_path):
    """A calibration with a nearness term is written as format 4, which the vericar before it refuses
    cleanly ("install the version that wrote it"); without one an artifact stays format 3."""
    from vericar.search.calibration import Calibration

    rec, new = _saved(tmp_path)
    assert json.loads((new / "config.json").read_text())["format_version"] == 3
    for cal, version in ((Calibration({"model": 0.3}, biases={"model": -2.0}), 3),
                         (Calibration({"model": 0.3}, biases={"model": -2.0}, scales={"model": 7.0}), 4)):
        rec.calibration = cal
        hub.save_pretrained(rec, tmp_path / f"v{version}")
        raw = json.loads((tmp_path / f"v{version}" / "config.json").read_text())
        assert raw["format_version"] == version
        assert hub.load(f"local-dir:{tmp_path / f'v{version}'}").calibration == cal
        raw["format_version"] = 7  # a later vericar's: refused with the versions this one reads
        (tmp_path / f"v{version}" / "config.json").write_text(json.dumps(raw))
        with pytest.raises(ArtifactError, match="format version 7, this vericar reads versions 1, 2, 3, 4, 5, 6"):
            hub.load(f"local-dir:{tmp_path / f'v{version}'}")


def test_migrate_and_save_keep_format_and_calibration_honest(tmp_path, capsys):
    """migrate rewrites a format 3 config.json whose calibration has a nearness term as format 4;
    a calibration loading would refuse is refused on saving, before anything is written."""
    from vericar.search.calibration import Calibration

    rec, new = _saved(tmp_path)
    rec.calibration = Calibration({"model": 0.3}, scales={"model": 7.0})
    hub.save_pretrained(rec, new)
    raw = json.loads((new / "config.json").read_text())
    raw["format_version"] = 3  # as the first nearness calibrations were written
    (new / "config.json").write_text(json.dumps(raw))
    artifact_main(["migrate", str(new)])
    assert "migrated from format 3 to 4" in capsys.readouterr().out
    assert json.loads((new / "config.json").read_text())["format_version"] == 4
    before = {p.name: p.read_bytes() for p in new.iterdir()}
    for bad in (Calibration({"model": 20.0}), Calibration({"model": 0.3}, {"make": 1.2}),
                Calibration({"model": 0.3}, scales={"model": -1.0})):
        rec.calibration = bad
        with pytest.raises(ArtifactError, match="not saved.*calibration"):
            hub.save_pretrained(rec, new)
        assert {p.name: p.read_bytes() for p in new.iterdir()} == before  # nothing lost, nothing half-written


def test_the_shipped_default_is_current_and_consistent():
    raw = json.loads((hub.DEFAULT_DIR / "config.json").read_text())
    # Format 6: an ensemble of two trainings (docs/flip.md), one view per photo, calibrated for it.
    assert raw["format_version"] == 6 and raw["model"]["members"] == 2 and "tta" not in raw["model"]
    assert raw["calibration"]["method"] == "knn-softmax-sim" and raw["compare"]["method"]
    assert "tta" not in json.loads((hub.DEFAULT_DIR / "gallery.json").read_text())["settings"]
    assert raw["meta"]["ensemble"]["members"] == ["default", "prev_default"]
    assert "ood_threshold" not in raw["meta"]
    assert not set(raw["meta"]["train_config"]) & {"density_weight", "backbone", "ood_tpr", "k"}
    cfg = hub.read_config(hub.DEFAULT_DIR)
    assert cfg.ood.calibrated_for == cfg.ranking.density and cfg.ood.threshold is not None
    # Shipped with train.ship: no folder of the machine it was trained on (its data path is relative).
    from train.ship import portable_command, portable_settings

    tc = raw["meta"]["train_config"]
    assert portable_settings(tc) == tc and not Path(tc["data"]).is_absolute()
    assert all(portable_command(line) == line for line in raw["meta"]["command"].splitlines())
    for name in ("README.md", "train_config.yaml"):
        text = (hub.DEFAULT_DIR / name).read_text()
        assert not re.search(r"(?<![\w.])/(work|home|tmp|root|Users)/", text), name


SPECS = [
    ("default", ModelSpec("default")),
    ("  default ", ModelSpec("default")),
    ("local-dir:/a/b c", ModelSpec("local-dir", "/a/b c")),
    ("local-dir:rel/x", ModelSpec("local-dir", "rel/x")),
    ("hf-hub:org/name", ModelSpec("hf-hub", "org/name")),
    ("hf-hub:org/name@v1.2", ModelSpec("hf-hub", "org/name", "v1.2")),
    ("timm:tf_efficientnet_lite2", ModelSpec("timm", "tf_efficientnet_lite2")),
    ("timm:vit_base_patch16_clip_224.openai", ModelSpec("timm", "vit_base_patch16_clip_224.openai")),
    ("open_clip:ViT-B-16/laion2b_s34b_b88k", ModelSpec("open_clip", "ViT-B-16/laion2b_s34b_b88k")),
]


@pytest.mark.parametrize("text,expected", SPECS)
def test_spec_parsing_table(text, expected):
    parsed = parse_spec(text)
    assert parsed == expected and parse_spec(str(parsed)) == parsed
    assert parsed.is_artifact == (expected.kind in ("default", "local-dir", "hf-hub"))


@pytest.mark.parametrize("text,words", [("", "empty"), ("   ", "empty"), ("s3://bucket/x", "unknown model spec"),
                                        ("timm:", "names nothing"), ("hf-hub:noslash", "ORG/NAME"),
                                        ("hf-hub:a/b/c", "ORG/NAME"), ("hf-hub:/abs", "ORG/NAME"),
                                        ("default:x", "unknown model spec"), ("mystery", "unknown model spec")])
def test_bad_specs_say_which_forms_are_valid(text, words):
    with pytest.raises(SpecError, match=words) as e:
        parse_spec(text)
    assert "local-dir:PATH" in str(e.value)


def test_a_loaded_recognizer_knows_its_source(tmp_path):
    _, new = _saved(tmp_path)
    assert hub.load(f"local-dir:{new}").config.source == SourceCfg(f"local-dir:{new}", str(new))
    bare = hub.load("timm:test_efficientnet", pretrained=False)
    assert bare.config.source == SourceCfg("timm:test_efficientnet", None)
    default = hub.load("default")
    assert default.config.source == SourceCfg("default", str(hub.DEFAULT_DIR))
    # what the model was loaded with is what a save writes, apart from where it came from
    hub.save_pretrained(default, tmp_path / "copy")
    assert hub.read_config(tmp_path / "copy") == dataclasses.replace(default.config, source=None)
    assert np.array_equal(Gallery.load(tmp_path / "copy").embeddings, default.gallery.embeddings)
