"""Photos behind gallery refs: a local dataset copy and a Hugging Face dataset (built here, offline)."""
from __future__ import annotations

import datasets
import pytest

from conftest import make_car_image
from vericar.core.errors import VericarError
from vericar.ui.gallery_images import DRAWINGS_NOTE, HubImages, LocalImages, image_source, page_examples

NAMES = ["Audi A4 Sedan 2012", "BMW X5 SUV 2007"]


@pytest.fixture
def local_copy(tmp_path):
    """A two-photo 'stanford_cars' folder: train/00001.jpg (Audi), dev/00001.jpg (BMW), with CSVs."""
    root = tmp_path / "stanford_cars"
    for split, name, seed in (("train", NAMES[0], 1), ("dev", NAMES[1], 2)):
        (root / split).mkdir(parents=True)
        make_car_image(seed, (120, 80)).save(root / split / "00001.jpg")
        (root / f"{split}.csv").write_text(f"file,label,class_name\n{split}/00001.jpg,0,{name}\n")
    (tmp_path / "secret.jpg").write_bytes((root / "train" / "00001.jpg").read_bytes())
    return root


def test_local_copy_shows_only_the_right_photo(local_copy):
    src = image_source(str(local_copy))
    assert isinstance(src, LocalImages)
    tile = src.tile("stanford_cars:train/00001.jpg", NAMES[0])
    assert tile is not None and max(tile.size) <= 256
    assert src.tile("stanford_cars:train/00001.jpg", NAMES[1]) is None  # the source says another class
    for ref in ("stanford_cars:train/00002.jpg", "session:x:0", "stanford_cars:../secret.jpg", "", "/etc/passwd"):
        assert src.tile(ref, NAMES[0]) is None
    assert src.examples(3) == [(str(local_copy / "dev" / "00001.jpg"), NAMES[1])]
    with pytest.raises(VericarError, match="no such folder"):
        LocalImages(local_copy / "missing")


def fake_hub(calls: list):
    """`datasets.load_dataset` stand-in: a real in-memory Dataset with an Image column and ClassLabel."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})

    def load(repo, split, streaming=False):
        calls.append((repo, split, streaming))
        rows = {"image": [make_car_image(s, (120, 80)) for s in range(3)], "label": [0, 1, 0]}
        return datasets.Dataset.from_dict(rows, features=features)

    return load


def test_hub_dataset_tiles_and_examples(tmp_path):
    calls: list = []
    src = HubImages("org/cars", load=fake_hub(calls), background=False)
    assert src.tile("stanford_cars:train/00002.jpg", NAMES[1]) is not None  # row 1 is a BMW
    assert src.tile("stanford_cars:train/00002.jpg", NAMES[0]) is None  # not the gallery's label: no photo
    assert src.tile("stanford_cars:dev/00099.jpg", NAMES[0]) is None  # no such row
    paths, label, note = page_examples(src, tmp_path / "ex")
    assert len(paths) == 1 and paths[0].endswith(".jpg") and "test photos" in label and not note  # 3 rows: 1 taken
    assert calls[0] == ("org/cars", "train", False) and calls[-1] == ("org/cars", "test", True)  # examples stream


def test_hub_split_downloads_in_the_background():
    import threading

    gate, calls = threading.Event(), []
    slow = fake_hub(calls)

    def load(repo, split, streaming=False):
        gate.wait(10)
        return slow(repo, split, streaming)

    src = HubImages("org/cars", load=load)
    assert src.tile("stanford_cars:train/00002.jpg", NAMES[1]) is None  # not there yet: a text tile, no wait
    gate.set()
    src.warm("train").join(10)
    assert src.tile("stanford_cars:train/00002.jpg", NAMES[1]) is not None


def test_no_source_or_a_failing_one_gives_labelled_drawings(tmp_path):
    def down(repo, split, streaming=False):
        raise ConnectionError("the Hub is not reachable")

    for src in (None, HubImages("org/cars", load=down)):
        paths, label, note = page_examples(src, tmp_path / "ex")
        assert len(paths) == 3 and "drawings" in label and note == DRAWINGS_NOTE
    assert HubImages("org/cars", load=down, background=False).tile("stanford_cars:train/00001.jpg", NAMES[0]) is None


def test_training_photos_stored_swapped_are_shown_swapped_back(local_copy, monkeypatch):
    """A model trained on a copy whose train photos have red and blue swapped (meta.train_photos_channels,
    train/fix_channels.py) gets those tiles swapped back; other splits, and other copies, as stored."""
    import numpy as np
    from PIL import Image

    from vericar.evaluation.data import swapped_csv

    Image.new("RGB", (120, 80), (10, 30, 200)).save(local_copy / "train" / "00001.jpg", quality=95)  # stored "blue"
    meta = {"train_photos_channels": "bgr", "train_config": {"data": str(local_copy / "train.csv")}}
    assert swapped_csv(meta, local_copy) == "train.csv"
    assert swapped_csv({**meta, "train_photos_channels": None}, local_copy) is None  # not a fixed model
    assert swapped_csv(meta, local_copy / "train") is None  # another folder than the one it was trained on
    monkeypatch.chdir(local_copy.parent / "stanford_cars" / "train")  # recorded relative to where training ran
    assert swapped_csv({**meta, "train_config": {"data": "../train.csv"}}, local_copy) == "train.csv"
    assert swapped_csv({**meta, "train_config": {"data": "../elsewhere/train.csv"}}, local_copy) is None
    src, plain = image_source(str(local_copy), meta), image_source(str(local_copy))
    ref = "stanford_cars:train/00001.jpg"
    r, _, b = np.asarray(src.tile(ref, NAMES[0]), np.float64).reshape(-1, 3).mean(0)
    assert r > 150 and b < 60  # the paint was red: shown red
    r, _, b = np.asarray(plain.tile(ref, NAMES[0]), np.float64).reshape(-1, 3).mean(0)
    assert b > 150 and r < 60
    dev = np.asarray(src.tile("stanford_cars:dev/00001.jpg", NAMES[1]))
    assert np.array_equal(dev, np.asarray(plain.tile("stanford_cars:dev/00001.jpg", NAMES[1])))  # dev: as stored
