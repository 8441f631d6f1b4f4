"""Data sources: the HF-Hub code path on a local dataset in the Hub's format, and the local CSV."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vericar.core.errors import VericarError
from vericar.evaluation.data import load_csv, load_source


def test_hf_source_reads_image_and_classlabel_names(tmp_path):
    """Same columns as tanganke/stanford_cars (image, label: ClassLabel), served from a local folder."""
    datasets = pytest.importorskip("datasets")
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
    imgs = [Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)) for i in range(4)]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    ds = datasets.Dataset.from_dict({"image": imgs, "label": [0, 1, 1, 0]}, features=feats)
    (tmp_path / "data").mkdir()
    ds.to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    samples = load_source(f"hf:{tmp_path}", split="train")
    assert [s.class_name for s in samples] == [names[0], names[1], names[1], names[0]]
    assert samples[0].image.size == (24, 20) and samples[1].label == 1


def test_csv_errors_say_what_is_expected(tmp_path):
    with pytest.raises(VericarError, match="not found"):
        load_csv(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,y\na.jpg,1\n")
    with pytest.raises(VericarError, match="file,label,class_name"):
        load_csv(bad)
    bad.write_text("file,label,class_name\na.jpg,one,X\n")
    with pytest.raises(VericarError, match="not an integer"):
        load_csv(bad)
    ok = tmp_path / "ok.csv"
    ok.write_text("file,label,class_name\nimg/a.jpg,3,BMW X5 SUV 2007\n")
    (s,) = load_csv(ok)
    assert s.image == str(tmp_path / "img/a.jpg") and s.label == 3 and s.class_name == "BMW X5 SUV 2007"
