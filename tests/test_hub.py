"""Hub round trips with the network mocked: push_to_hub → download → load, and deploy_space.

As open_clip does in its tests, the Hub client is replaced by a fake that keeps repos in a local
folder; everything vericar does around it (saving, uploading a folder, snapshot download, loading,
staging the Space) runs for real.
"""
from __future__ import annotations

import shutil
from pathlib import Path
import numpy as np
import pytest

import huggingface_hub
from vericar import space
from vericar.artifacts import hub
from vericar.core.errors import ArtifactError, SpecError, VericarError
from vericar.core.recognizer import Recognizer
from vericar.models.model import create_model
from vericar.search.gallery import Gallery
from vericar.search.ood import KNNOOD

from PIL import Image, ImageDraw

NAMES = ["Audi TTS Coupe 2012", "BMW X5 SUV 2007", "Audi S4 Sedan 2012"]
COLORS = [(220, 30, 30), (30, 200, 40), (40, 60, 230)]


def photo(cls: int, i: int) -> Image.Image:
    """A dark frame with a coloured block: one colour per class, shifted by ``i``."""
    img = Image.new("RGB", (64, 48), (10 * i, 20, 30))
    ImageDraw.Draw(img).rectangle([4 + i, 6, 40 + i, 36], fill=COLORS[cls])
    return img


class FakeHub:
    """A Hub in a folder: repos are sub-folders; records every call for the assertions."""

    def __init__(self, root: Path, fail: Exception | None = None) -> None:
        self.root, self.fail, self.calls = root, fail, []

    def api(self, token: str | None = None) -> "FakeHub":
        self.calls.append(("HfApi", token))
        return self

    def _repo(self, repo_id: str, repo_type: str = "model") -> Path:
        return self.root / repo_type / repo_id

    def create_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False, exist_ok: bool = False,
                    space_sdk: str | None = None) -> str:
        if self.fail:
            raise self.fail
        self.calls.append(("create_repo", repo_id, repo_type, private, space_sdk))
        self._repo(repo_id, repo_type).mkdir(parents=True, exist_ok=exist_ok)
        return f"https://huggingface.co/{'spaces/' if repo_type == 'space' else ''}{repo_id}"

    def upload_folder(self, *, repo_id: str, folder_path: str, repo_type: str = "model", commit_message: str = "",
                      delete_patterns: list[str] | None = None) -> str:
        self.calls.append(("upload_folder", repo_id, repo_type, commit_message, delete_patterns))
        shutil.copytree(folder_path, self._repo(repo_id, repo_type), dirs_exist_ok=True)
        return f"https://huggingface.co/{repo_id}/commit/0123abc"

    def add_space_variable(self, repo_id: str, key: str, value: str) -> None:
        self.calls.append(("add_space_variable", repo_id, key, value))

    def snapshot_download(self, *, repo_id: str, revision: str | None = None) -> str:
        self.calls.append(("snapshot_download", repo_id, revision))
        folder = self._repo(repo_id)
        if not folder.is_dir():
            raise FileNotFoundError(f"404 Client Error: Repository Not Found for url: .../{repo_id}")
        return str(folder)


@pytest.fixture()
def fake_hub(tmp_path, monkeypatch) -> FakeHub:
    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub, "HfApi", fake.api)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    return fake


def _recognizer() -> Recognizer:
    model = create_model("timm:test_efficientnet", embed_dim=16, pretrained=False)
    r = Recognizer(model, Gallery(16), KNNOOD(k=2), k=3, meta={"command": "tiny"})
    for c, name in enumerate(NAMES):
        r.enroll([photo(c, i) for i in range(3)], name)
    r.ood.calibrate(r.ood.score(r.gallery.search(r.embed([photo(c, 4) for c in range(3)]), 2)[0]), tpr=0.95)
    return r


def test_push_download_load_round_trip(fake_hub):
    rec = _recognizer()
    url = hub.push_to_hub(rec, "someone/tiny-vericar", token="hf_test", commit_message="first")
    assert url.endswith("/commit/0123abc")
    assert ("HfApi", "hf_test") in fake_hub.calls
    assert ("create_repo", "someone/tiny-vericar", "model", False, None) in fake_hub.calls
    uploaded = sorted(p.name for p in (fake_hub.root / "model" / "someone/tiny-vericar").iterdir())
    assert "config.json" in uploaded and "model.safetensors" in uploaded

    loaded = hub.load("hf-hub:someone/tiny-vericar@v1")
    assert ("snapshot_download", "someone/tiny-vericar", "v1") in fake_hub.calls
    q = [photo(1, 6), photo(2, 7)]
    np.testing.assert_allclose(loaded.embed(q), rec.embed(q), atol=1e-5)
    assert [p.label for p in loaded.predict_batch(q)] == [p.label for p in rec.predict_batch(q)]
    assert loaded.ood.threshold == pytest.approx(rec.ood.threshold)


def test_saving_the_same_model_twice_writes_the_same_bytes(tmp_path):
    """Weights and gallery files do not change when nothing in them did (a re-shipped default would
    otherwise add new multi-MB files to git: safetensors writes metadata keys in a random order)."""
    rec = _recognizer()
    hub.save_pretrained(rec, tmp_path / "first")
    want = {p.name: p.read_bytes() for p in (tmp_path / "first").iterdir() if p.suffix == ".safetensors"}
    assert "model.safetensors" in want and any(n.startswith("gallery-") for n in want)
    for i in range(8):
        hub.save_pretrained(rec, tmp_path / f"again{i}")
        assert {p.name: p.read_bytes() for p in (tmp_path / f"again{i}").iterdir() if p.suffix == ".safetensors"} == want


def test_saving_onto_a_file_says_to_pass_a_folder(tmp_path):
    rec = _recognizer()
    photo = tmp_path / "good1.jpg"
    photo.write_bytes(b"a photo")
    for where in (photo, photo / "model"):  # the path is a file, or a folder above it is
        with pytest.raises(VericarError, match="good1.jpg is a file; pass the path of a folder"):
            hub.save_pretrained(rec, where)
    assert photo.read_bytes() == b"a photo"


def test_push_of_a_folder_refuses_what_would_not_load(fake_hub, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="config.json"):
        hub.push_to_hub(tmp_path / "empty", "someone/broken")
    assert not any(c[0] == "upload_folder" for c in fake_hub.calls)  # nothing was uploaded


def test_download_errors_say_what_to_do(fake_hub):
    with pytest.raises(SpecError, match="ORG/NAME"):
        hub.download("no-slash")
    with pytest.raises(ArtifactError, match="(?s)Repository Not Found.*local-dir:PATH"):
        hub.download("someone/missing")


def test_deploy_space_uploads_the_app_and_sets_the_model(fake_hub):
    url = space.deploy("someone/vericar-space", model="hf-hub:someone/tiny-vericar", token="hf_test")
    assert url == "https://huggingface.co/spaces/someone/vericar-space"
    assert ("create_repo", "someone/vericar-space", "space", False, "gradio") in fake_hub.calls
    upload = next(c for c in fake_hub.calls if c[0] == "upload_folder")
    assert upload[2] == "space" and upload[4] == ["vericar/**"]  # stale library files are removed too
    assert ("add_space_variable", "someone/vericar-space", "VERICAR_MODEL", "hf-hub:someone/tiny-vericar") \
        in fake_hub.calls
    files = {p.relative_to(fake_hub.root / "space" / "someone/vericar-space").as_posix()
             for p in (fake_hub.root / "space" / "someone/vericar-space").rglob("*") if p.is_file()}
    assert {"app.py", "requirements.txt", "README.md", "vericar/__init__.py"} <= files
    assert not any(f.startswith("vericar/default/") for f in files)  # a Hub model is downloaded by the Space


def test_deploy_space_failure_is_one_clear_error(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path / "hub", fail=RuntimeError("401 Unauthorized"))
    monkeypatch.setattr(huggingface_hub, "HfApi", fake.api)
    with pytest.raises(ArtifactError, match="(?s)401 Unauthorized.*HF_TOKEN"):
        hub.deploy_space("someone/vericar-space", tmp_path, variables={"VERICAR_MODEL": "default"})


def test_a_hub_model_knows_its_folder_so_the_card_does_not_download_again(fake_hub):
    from vericar.ui import present
    from vericar.core.config import SourceCfg

    hub.push_to_hub(_recognizer(), "someone/tiny-vericar")
    folder = fake_hub.root / "model" / "someone/tiny-vericar"
    (folder / "README.md").write_text("---\nlibrary_name: vericar\n---\n# the tiny card\n")
    loaded = hub.load("hf-hub:someone/tiny-vericar@v2")
    assert loaded.config.source == SourceCfg("hf-hub:someone/tiny-vericar@v2", str(folder))
    downloads = [c for c in fake_hub.calls if c[0] == "snapshot_download"]
    md, _ = present.model_card(loaded)
    assert "# the tiny card" in md and "`hf-hub:someone/tiny-vericar@v2`" in md
    assert [c for c in fake_hub.calls if c[0] == "snapshot_download"] == downloads  # not resolved again
