"""Space settings: README front matter == space.yaml, and what a deploy would upload (no network)."""
from __future__ import annotations

import shutil
from pathlib import Path

import gradio
import pytest
import yaml

from vericar import space

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = {"VERICAR_PUBLIC": "1", "VERICAR_GALLERY_IMAGES": "hf-dataset:tanganke/stanford_cars"}  # space.yaml


def _fake_repo(tmp: Path, *, readme_matter: str | None = None, default_model: bool = True) -> Path:
    """A minimal repo tree: space.yaml from the real one, app.py, README.md, vericar/ with junk to skip."""
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "space.yaml", tmp / "space.yaml")
    (tmp / "app.py").write_text("demo = None\n")
    (tmp / "requirements.txt").write_text("gradio\n")
    matter = space.front_matter(tmp) if readme_matter is None else readme_matter
    (tmp / "README.md").write_text(matter + "\n# vericar\n")
    (tmp / "vericar" / "__pycache__").mkdir(parents=True)
    (tmp / "vericar" / "__init__.py").write_text("")
    (tmp / "vericar" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    if default_model:
        (tmp / "vericar" / "default").mkdir()
        (tmp / "vericar" / "default" / "config.json").write_text("{}")
    return tmp


def test_space_yaml_is_complete_and_pins_installed_gradio():
    settings = space.read_settings(ROOT)
    s = settings["space"]
    assert s["sdk"] == "gradio" and s["app_file"] == "app.py" and s["suggested_hardware"] == "cpu-basic"
    assert s["python_version"] == "3.11"  # a string: YAML would read 3.10 as the float 3.1
    assert str(s["sdk_version"]) == gradio.__version__
    assert isinstance(settings["model"], str) and settings["model"]


def test_repo_readme_front_matter_matches_space_yaml():
    """The lead pastes `python -m vericar.space front-matter` at the top of README.md."""
    assert space.check(ROOT) == []


def test_front_matter_round_trips():
    text = space.front_matter(ROOT)
    assert text.startswith("---\n") and text.endswith("---\n")
    assert space.parse_front_matter(text + "\n# title\n") == space.read_settings(ROOT)["space"]
    assert space.parse_front_matter("# no front matter\n") is None


def test_check_reports_mismatch_and_missing(tmp_path):
    repo = _fake_repo(tmp_path)
    assert space.check(repo) == []
    bad = space.front_matter(repo).replace("cpu-basic", "t4-small")
    (repo / "README.md").write_text(bad + "# x\n")
    problems = space.check(repo)
    assert len(problems) == 1 and "suggested_hardware" in problems[0]
    (repo / "README.md").write_text("# vericar\n")
    assert "no YAML front matter" in space.check(repo)[0]
    assert space.main(["check"]) == (0 if space.check(ROOT) == [] else 1)


def test_space_files_and_stage_default(tmp_path):
    repo = _fake_repo(tmp_path / "repo")
    files = space.space_files(repo)
    assert {"app.py", "README.md", "requirements.txt", "space.yaml", "vericar/__init__.py",
            "vericar/default/config.json"} == set(files)
    out = tmp_path / "out"
    assert space.stage(out, model="default", root=repo) == {"VERICAR_MODEL": "default", **PUBLIC}
    assert (out / "vericar" / "default" / "config.json").is_file() and not (out / "vericar" / "__pycache__").exists()


def test_stage_local_dir_and_hub_models(tmp_path):
    repo = _fake_repo((tmp_path / "repo"), default_model=False)
    model = tmp_path / "trained"
    model.mkdir()
    (model / "config.json").write_text('{"format": "vericar"}')
    (model / "model.safetensors").write_bytes(b"w")
    out = tmp_path / "a"
    assert space.stage(out, model=f"local-dir:{model}", root=repo) == {"VERICAR_MODEL": "default", **PUBLIC}
    assert (out / "vericar" / "default" / "model.safetensors").read_bytes() == b"w"
    out = tmp_path / "b"
    assert space.stage(out, model="hf-hub:org/cars", root=repo) == {"VERICAR_MODEL": "hf-hub:org/cars", **PUBLIC}
    assert not (out / "vericar" / "default").exists()
    with pytest.raises(space.SpaceError, match="default model is not in vericar/default"):
        space.stage(tmp_path / "c", model="default", root=repo)
    with pytest.raises(space.SpaceError, match="no config.json"):
        space.stage(tmp_path / "d", model=f"local-dir:{tmp_path / 'nothing'}", root=repo)


def test_deploy_dry_run_and_refusals(tmp_path):
    repo = _fake_repo(tmp_path)
    msg = space.deploy("me/vericar", model="hf-hub:org/cars", root=repo, dry_run=True)
    assert "app.py" in msg and "vericar/__init__.py" in msg and "hf-hub:org/cars" in msg
    with pytest.raises(space.SpaceError, match="USER/NAME"):
        space.deploy("no-slash", root=repo, dry_run=True)
    settings = yaml.safe_load((repo / "space.yaml").read_text())
    settings["space"]["sdk_version"] = "0.0.1"
    (repo / "space.yaml").write_text(yaml.safe_dump(settings))
    with pytest.raises(space.SpaceError, match="sdk_version"):
        space.deploy("me/vericar", root=repo, dry_run=True)


def test_check_requires_public_mode(tmp_path):
    repo = _fake_repo(tmp_path)
    settings = yaml.safe_load((repo / "space.yaml").read_text())
    settings["variables"]["VERICAR_PUBLIC"] = "0"
    (repo / "space.yaml").write_text(yaml.safe_dump(settings))
    assert any("VERICAR_PUBLIC" in p for p in space.check(repo))
