"""EnrolledStore without Gradio: enrol, refuse, restart, remove, and roll back when the save fails."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_car_image
from vericar.core.errors import VericarError
from vericar.core.recognizer import Recognizer
from vericar.models.model import create_model, embed_images
from vericar.search.gallery import Gallery
from vericar.search.ood import KNNOOD
from vericar.ui.enrolled import LOCK_NAME, MAX_ENROL_PHOTOS, EnrolledStore, default_data_dir, model_key

ROOT = Path(__file__).resolve().parents[1]

BASE = ["Audi A4 Sedan 2012", "BMW X5 SUV 2007", "Ford F-150 Regular Cab 2012"]
NEW = "Testmake Roadster Convertible 2024"
OTHER = "Othermake Wagon Wagon 2023"
BASE_IMGS = [make_car_image(10 * c + i) for c in range(len(BASE)) for i in range(2)]


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("timm:test_efficientnet", embed_dim=16, pretrained=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


def fresh_rec(weights: dict[str, torch.Tensor], labels: list[str] = BASE, imgs=BASE_IMGS) -> Recognizer:
    """A new recognizer (as after a restart): the same weights, a gallery of ``labels`` x 2 photos."""
    model = create_model("timm:test_efficientnet", embed_dim=16, pretrained=False)
    model.load_state_dict(weights)
    model.eval()
    gallery = Gallery.from_arrays(embed_images(model, imgs), [lab for lab in labels for _ in range(2)])
    return Recognizer(model, gallery, KNNOOD(k=2), k=3)


def photos(seeds: list[int]) -> list:
    return [make_car_image(s, size=(120, 80)) for s in seeds]


def state(rec: Recognizer) -> tuple[int, list[str]]:
    return len(rec.gallery), list(rec.gallery.labels)


def test_enrol_is_recognised_and_saved(weights, tmp_path):
    rec = fresh_rec(weights)
    store = EnrolledStore(rec, tmp_path)
    new = photos([501, 502, 503])
    out = store.enroll(new, f"  {NEW}\n")  # whitespace is tidied
    assert out == {"label": NEW, "added": 3, "enrolled": [NEW], "gallery_size": 9}
    for im in new:
        best = rec.predict(im).neighbours[0]
        assert best.label == NEW and best.score > 0.99
    # The stored embeddings are the model's embeddings of exactly these photos (naive reference).
    np.testing.assert_allclose(store.gallery.embeddings, rec.embed(new), atol=1e-5)
    assert store.summary() == [(NEW, 3)]
    saved = json.loads((store.dir / "gallery.json").read_text())
    assert saved["labels"] == [NEW] * 3 and store.dir.parent == tmp_path / "enrolled"


@pytest.mark.parametrize("label, match", [
    ("", "label is empty"), ("   ", "label is empty"), ("x" * 121, "at most 120"), ("bad\x00name", "plain text"),
    (BASE[1].upper(), "already a vehicle the model knows"), (NEW.lower(), "already added"),
])
def test_bad_labels_change_nothing(weights, tmp_path, label, match):
    rec = fresh_rec(weights)
    store = EnrolledStore(rec, tmp_path)
    store.enroll(photos([501]), NEW)
    before, on_disk = state(rec), (store.dir / "gallery.json").read_bytes()
    with pytest.raises(VericarError, match=match):
        store.enroll(photos([601, 602]), label)
    assert state(rec) == before and store.summary() == [(NEW, 1)]
    assert (store.dir / "gallery.json").read_bytes() == on_disk


def test_bad_photos_change_nothing(weights, tmp_path):
    rec = fresh_rec(weights)
    store = EnrolledStore(rec, tmp_path)
    before = state(rec)
    junk = tmp_path / "notes.jpg"
    junk.write_text("not a picture")
    with pytest.raises(VericarError, match="notes.jpg.*Nothing was added"):
        store.enroll([photos([1])[0], str(junk)], NEW)
    with pytest.raises(VericarError, match="No photos"):
        store.enroll([], NEW)
    with pytest.raises(VericarError, match=f"more than the {MAX_ENROL_PHOTOS}"):
        store.enroll(photos([1]) * (MAX_ENROL_PHOTOS + 1), NEW)
    assert state(rec) == before and store.summary() == [] and not (store.dir / "gallery.json").exists()


def test_restart_restores_and_remove_persists(weights, tmp_path):
    store = EnrolledStore(fresh_rec(weights), tmp_path)
    new, other = photos([501, 502]), photos([701, 702, 703])
    store.enroll(new, NEW)
    store.enroll(other, OTHER)

    store.close()  # a restart: the old app ends; a new recognizer and store over the same data dir
    rec2 = fresh_rec(weights)
    store2 = EnrolledStore(rec2, tmp_path)
    assert store2.summary() == [(OTHER, 3), (NEW, 2)]
    assert len(rec2.gallery) == 6 + 5 and rec2.predict(new[1]).neighbours[0].label == NEW
    best = rec2.predict(other[0]).neighbours[0]
    assert best.label == OTHER and rec2.thumbnail(best.index, OTHER) is not None  # thumbnails kept
    assert rec2.thumbnail(best.index, NEW) is None and rec2.thumbnail(10**6, OTHER) is None

    with pytest.raises(VericarError, match="model's own vehicles"):
        store2.remove(BASE[0])
    with pytest.raises(VericarError, match=f"No added vehicle is called 'Nope'.*{OTHER}"):
        store2.remove("Nope")
    out = store2.remove(NEW)
    assert out == {"label": NEW, "removed": 2, "enrolled": [OTHER], "gallery_size": 9}
    assert NEW not in {n.label for n in rec2.predict(new[1]).neighbours}

    store2.close()
    rec3 = fresh_rec(weights)
    store3 = EnrolledStore(rec3, tmp_path)
    assert store3.summary() == [(OTHER, 3)] and NEW not in rec3.gallery.labels
    store3.enroll(new, NEW)  # removed, so the name is free again
    assert store3.summary() == [(OTHER, 3), (NEW, 2)]


def test_enrolled_belong_to_their_model(weights, tmp_path):
    with EnrolledStore(fresh_rec(weights), tmp_path) as store:
        store.enroll(photos([501]), NEW)
    torch.manual_seed(1)
    other_model = {k: v.clone() for k, v in
                   create_model("timm:test_efficientnet", embed_dim=16, pretrained=False).state_dict().items()}
    rec = fresh_rec(other_model)
    assert model_key(rec) != model_key(fresh_rec(weights)) == model_key(fresh_rec(weights))
    with EnrolledStore(rec, tmp_path) as store:
        assert store.summary() == [] and NEW not in rec.gallery.labels


def test_label_the_model_learnt_since_is_dropped(weights, tmp_path):
    with EnrolledStore(fresh_rec(weights), tmp_path) as store:
        store.enroll(photos([501, 502, 503]), NEW)
    rec = fresh_rec(weights, BASE + [NEW], BASE_IMGS + photos([801, 802]))  # same weights, NEW now known
    store = EnrolledStore(rec, tmp_path)
    assert store.summary() == [] and rec.gallery.labels.count(NEW) == 2  # the model's own entries only


def test_save_failure_rolls_back_enrol_and_remove(weights, tmp_path):
    rec = fresh_rec(weights)
    store = EnrolledStore(rec, tmp_path)
    store.enroll(photos([501]), NEW)
    good_dir, before = store.dir, state(rec)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    store.dir = blocker  # Gallery.save cannot create its folder here: a real OSError

    with pytest.raises(VericarError, match="could not save.*writable"):
        store.enroll(photos([701, 702]), OTHER)
    assert state(rec) == before and store.summary() == [(NEW, 1)]
    assert OTHER not in {n.label for n in rec.predict(photos([701])[0]).neighbours}

    with pytest.raises(VericarError, match="could not save"):
        store.remove(NEW)
    assert sorted(rec.gallery.labels) == sorted(before[1]) and store.summary() == [(NEW, 1)]
    assert rec.predict(photos([501])[0]).neighbours[0].label == NEW  # still recognised after the rollback

    store.dir = good_dir  # the disk was never touched: it holds exactly NEW
    assert Gallery.load(good_dir).labels == [NEW]
    store.remove(NEW)  # and once saving works again, removal goes through
    store.close()
    with EnrolledStore(fresh_rec(weights), tmp_path) as restarted:
        assert restarted.summary() == []


def test_one_store_per_data_dir(weights, tmp_path):
    """Two stores of one model on one folder would each save only their own vehicles (the last save
    dropping the other's): the second is refused at start, and can open once the first is closed."""
    first_rec = fresh_rec(weights)
    first = EnrolledStore(first_rec, tmp_path)
    first.enroll(photos([501]), NEW)
    rec = fresh_rec(weights)
    with pytest.raises(VericarError, match=rf"another EnrolledStore in this process is using the folder "
                                           rf"{first.dir}.*close\(\) the other store first"):
        EnrolledStore(rec, tmp_path)
    link = tmp_path.parent / f"{tmp_path.name}-link"
    link.symlink_to(tmp_path)
    with pytest.raises(VericarError, match="another EnrolledStore"):  # any spelling of the folder: one folder
        EnrolledStore(fresh_rec(weights), link)
    assert NEW not in rec.gallery.labels  # refused before it read anything
    retrained = {k: v + 1e-3 if v.is_floating_point() else v for k, v in weights.items()}
    with EnrolledStore(fresh_rec(retrained), tmp_path) as other_model:
        assert other_model.dir != first.dir and other_model.summary() == []  # another model: its own folder
    first.close()
    first.close()  # twice is fine
    assert NEW not in first_rec.gallery.labels  # a closed store's vehicles leave its recognizer
    with pytest.raises(VericarError, match="was closed.*open a new EnrolledStore"):
        first.enroll(photos([601]), OTHER)
    with pytest.raises(VericarError, match="was closed"):
        first.remove(NEW)
    with EnrolledStore(first_rec, tmp_path) as again:  # reopened over the same recognizer: nothing is lost
        assert again.summary() == [(NEW, 1)] and first_rec.predict(photos([501])[0]).label == NEW
    with EnrolledStore(rec, tmp_path) as second:  # the first's vehicles are all there
        assert second.summary() == [(NEW, 1)]
        second.enroll(photos([601]), OTHER)
    with EnrolledStore(fresh_rec(weights), tmp_path) as third:
        assert third.summary() == [(OTHER, 1), (NEW, 1)]


def test_a_store_that_fails_to_start_frees_the_folder(weights, tmp_path):
    with EnrolledStore(fresh_rec(weights), tmp_path) as store:
        store.enroll(photos([501]), NEW)
        (store.dir / "gallery.json").write_text("{ not json")
    for _ in range(2):  # the same clear error each time, never "another store is using it"
        with pytest.raises(VericarError, match="cannot be read.*move that folder away"):
            EnrolledStore(fresh_rec(weights), tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(VericarError, match="cannot keep added vehicles in .*a-file.*VERICAR_DATA_DIR"):
        EnrolledStore(fresh_rec(weights), blocker)


def test_another_process_holding_the_data_dir(weights, tmp_path):
    """The real case: a second `python app.py` on the same folder. The lock dies with its process."""
    folder = tmp_path / "enrolled" / model_key(fresh_rec(weights))  # what a store of this model locks
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from vericar.ui.enrolled import lock_data_dir; "
         "lock = lock_data_dir(sys.argv[1]); print('held', flush=True); sys.stdin.read()", str(folder)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(VericarError, match=f"another vericar app of this model is using its added vehicles in "
                                               f"{folder} \\(it holds {LOCK_NAME} there\\).*Stop the other app, or set "
                                               "VERICAR_DATA_DIR"):
            EnrolledStore(fresh_rec(weights), tmp_path)
    finally:
        holder.kill()  # no clean exit: the OS frees the lock of a killed process
        holder.wait(timeout=60)
    with EnrolledStore(fresh_rec(weights), tmp_path) as store:
        assert store.summary() == []


def test_one_photo_and_label_types(weights, tmp_path):
    rec = fresh_rec(weights)
    with EnrolledStore(rec, tmp_path) as store:
        path = tmp_path / "car.jpg"
        photos([501])[0].save(path)
        assert store.enroll(str(path), NEW)["added"] == 1  # one photo is a list of one, not of characters
        for bad in (5, ["x"], b"Bytes Car Sedan 2020"):
            with pytest.raises(VericarError, match="must be text like 'Tesla Model 3 Sedan 2021'"):
                store.enroll(photos([601]), bad)
        assert store.summary() == [(NEW, 1)]


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VERICAR_DATA_DIR", str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"
    monkeypatch.delenv("VERICAR_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache" / "vericar"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_data_dir() == Path.home() / ".cache" / "vericar"


def test_enrolled_module_does_not_import_gradio():
    import ast

    import vericar.ui.enrolled

    tree = ast.parse(Path(vericar.ui.enrolled.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m.split(".")[0] == "gradio" for m in names)
