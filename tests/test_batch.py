"""vericar identify (the plain engine), its writers and resume, and the vericar command's enroll / remove.

Real photos from ../shared (skipped when absent) with the shipped model for the answers; a tiny saved
model where only the plumbing is under test (resume after a kill, enroll / remove, formats).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from batch_helpers import NAMES, made_photos, real_photo_folder, tiny_artifact
from conftest import CARS_DIR
from vericar.batch.run import identify
from vericar.batch.rows import columns
from vericar.batch.writer import open_writer
from vericar.core.errors import VericarError
from vericar.ui.scene_view import VEHICLE_KEYS, identify_answer
from vericar.vision.scene import no_vehicle

ROOT = Path(__file__).resolve().parents[1]
needs_photos = pytest.mark.skipif(not (CARS_DIR / "dev").is_dir(), reason="no real photos in ../shared")
FLOATS = ("confidence_make", "confidence_model", "confidence_type", "confidence_year", "ood_score")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def same_answer(row: dict, want: dict) -> None:
    """Equal rows: exactly, except the floats (batches of other sizes sum in another order: ~1e-7)."""
    assert {k: v for k, v in row.items() if k not in FLOATS} == {k: v for k, v in want.items() if k not in FLOATS}
    for k in FLOATS:
        assert (row[k] is None) == (want[k] is None) and (row[k] is None or abs(row[k] - want[k]) < 1e-5), k


def vericar_cmd(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vericar", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, **kw)


@pytest.fixture(scope="module")
def default_rec():
    import vericar

    return vericar.load("default")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return tiny_artifact(tmp_path_factory.mktemp("tiny") / "model")


@needs_photos
def test_rows_are_predict_and_identify_answers_with_error_rows(default_rec, tmp_path):
    from vericar.batch.rows import vehicle_row

    photos = real_photo_folder(tmp_path / "in", 7)
    stats = identify([tmp_path / "in"], tmp_path / "out.jsonl", rec=default_rec, batch_size=3)
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [r["file"] for r in rows] == sorted(str(p) for p in photos) + [
        str(tmp_path / "in" / "notes.jpg"), str(tmp_path / "in" / "sub" / "broken.jpg")]  # readme.txt: not an image type
    assert (stats.photos, stats.rows, stats.errors) == (9, 9, 2)
    by_file = {r["file"]: r for r in rows}
    assert "not an image" in by_file[str(tmp_path / "in" / "notes.jpg")]["error"]
    assert "truncated" in by_file[str(tmp_path / "in" / "sub" / "broken.jpg")]["error"]
    assert all(by_file[str(tmp_path / "in" / n)]["label"] is None for n in ("notes.jpg", "sub/broken.jpg"))
    for p in photos:
        row, pred = by_file[str(p)], default_rec.predict(p)
        same_answer(row, vehicle_row(str(p), pred))
        assert row["error"] is None and row["box"] == pred.box and row["label"] == (None if pred.unknown else pred.label)
        preds = default_rec.predict_all(p)
        main = identify_answer(preds, preds[0] if preds else no_vehicle())  # the app's /identify (handlers.py)
        assert row["box"] == main["box"] and all(row[k] == main[k] for k in VEHICLE_KEYS if k not in
                                                 ("confidence", "ood_score"))


@needs_photos
def test_all_vehicles_rows_are_predict_all(default_rec, tmp_path):
    photos = real_photo_folder(tmp_path / "in", 2)
    scene = Image.new("RGB", (900, 420), (120, 130, 125))  # two real cars side by side: two vehicles
    for i, p in enumerate(photos):
        car = Image.open(p).convert("RGB")
        scene.paste(car.resize((400, round(400 * car.height / car.width))), (30 + 450 * i, 60))
    scene.save(tmp_path / "in" / "scene.jpg")
    identify([tmp_path / "in"], tmp_path / "out.csv", rec=default_rec, all_vehicles=True, batch_size=2)
    with open(tmp_path / "out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == columns(all_vehicles=True)
    for p in [*photos, tmp_path / "in" / "scene.jpg"]:
        preds = default_rec.predict_all(p)
        mine = [r for r in rows if r["file"] == str(p)]
        assert [int(r["vehicle"]) for r in mine] == list(range(1, len(preds) + 1))
        assert [json.loads(r["box"]) for r in mine] == [q.box for q in preds]
        assert [r["label"] or None for r in mine] == [None if q.unknown else q.label for q in preds]
    assert len([r for r in rows if r["file"].endswith("scene.jpg")]) == 2
    assert sum(bool(r["error"]) for r in rows) == 2


def test_formats_give_the_same_rows(tiny, tmp_path):
    import pandas as pd

    made_photos(tmp_path / "in", 5)
    (tmp_path / "in" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    for suffix in ("jsonl", "csv", "parquet"):
        identify([tmp_path / "in"], tmp_path / f"out.{suffix}", model=tiny, data_dir=tmp_path / "data", batch_size=2)
    want = pd.read_json(tmp_path / "out.jsonl", lines=True)
    got_csv = pd.read_csv(tmp_path / "out.csv")
    got_pq = pd.read_parquet(tmp_path / "out.parquet")  # a folder of parts, read as one table
    assert len(list((tmp_path / "out.parquet").glob("part-*.parquet"))) == 3
    for got in (got_csv, got_pq):
        assert list(got.columns) == list(want.columns)
        assert got["file"].tolist() == want["file"].tolist()
        assert got["label"].fillna("").tolist() == want["label"].fillna("").tolist()
        assert got["error"].isna().tolist() == want["error"].isna().tolist()
    assert [list(b) for b in got_pq["box"].dropna()] == [b for b in want["box"].dropna()]
    assert [json.loads(b) for b in got_csv["box"].dropna()] == [b for b in want["box"].dropna()]


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_a_half_written_row_is_cut_before_appending(tmp_path, suffix):
    cols = columns(all_vehicles=False)
    out = tmp_path / f"out.{suffix}"
    rows = [dict.fromkeys(cols) | {"file": f"a{i}.jpg", "label": "X", "box": [1, 2, 3, 4]} for i in range(3)]
    open_writer(out, cols).write(rows[:2])
    whole = out.read_bytes()
    out.write_bytes(whole + (b'{"file": "a2.jpg", "err' if suffix == "jsonl" else b'a2.jpg,,"[1, 2,'))
    w = open_writer(out, cols)
    assert w.done == {"a0.jpg", "a1.jpg"} and out.read_bytes() == whole
    w.write(rows[2:])
    assert open_writer(out, cols).done == {"a0.jpg", "a1.jpg", "a2.jpg"}
    if suffix == "csv":
        with open(out, newline="") as f:
            assert [r["file"] for r in csv.DictReader(f)] == ["a0.jpg", "a1.jpg", "a2.jpg"]


def test_parquet_parts_keep_one_schema_when_a_batch_brings_types(tmp_path):
    import pandas as pd
    import pyarrow.parquet as pq

    cols = columns(all_vehicles=False)
    out = tmp_path / "out.parquet"
    w = open_writer(out, cols)
    w.write([dict.fromkeys(cols) | {"file": "bad.jpg", "error": "not an image"}])  # answer columns all null
    w.write([dict.fromkeys(cols) | {"file": "a.jpg", "label": "X", "box": [1, 2, 3, 4], "ood_score": 0.5,
                                    "unknown": False, "plate": {"text": "AB12", "confidence": 0.9}}])
    schemas = [pq.read_schema(p) for p in sorted(out.glob("part-*.parquet"))]
    assert len(schemas) == 2 and schemas[0].equals(schemas[1]) and "plate" in schemas[0].names
    table = pd.read_parquet(out)
    assert table["label"].tolist()[1] == "X" and list(table["box"][1]) == [1, 2, 3, 4]
    assert open_writer(out, cols).done == {"bad.jpg", "a.jpg"}
    with pytest.raises(VericarError, match="per vehicle|per photo"):
        open_writer(out, columns(all_vehicles=True))


@pytest.mark.timeout(900)  # subprocesses that import torch / gradio: slow on a loaded machine
def test_resume_after_a_killed_run_has_no_duplicate_and_no_missing_row(tiny, tmp_path):
    photos = made_photos(tmp_path / "in", 60)
    out = tmp_path / "out.csv"
    args = [str(tmp_path / "in"), "--out", str(out), "--model", tiny, "--batch-size", "2", "--data-dir",
            str(tmp_path / "data")]
    proc = subprocess.Popen([sys.executable, "-m", "vericar", "identify", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 200
    while (not out.is_file() or out.read_text().count("\n") < 3) and proc.poll() is None:
        assert time.monotonic() < deadline, "no row was written in time"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open(out, newline="") as f:
        first = [r["file"] for r in csv.DictReader(f)]
    assert 0 < len(first) < len(photos), "the run ended before it could be killed; nothing was tested"
    done = vericar_cmd("identify", *args, "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{len(first)} already there, skipped" in done.stdout
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["file"] for r in rows) == sorted(map(str, photos))  # each photo once
    assert all(r["label"] in NAMES for r in rows)


@pytest.mark.timeout(900)  # subprocesses that import torch / gradio: slow on a loaded machine
def test_enroll_and_remove_from_the_command_line_are_seen_by_a_fresh_load(tiny, tmp_path):
    import vericar
    from vericar.ui.enrolled import EnrolledStore, merge_added, read_added

    photos = made_photos(tmp_path / "new", 3)
    data = tmp_path / "data"
    label = "Newmake Roadster Convertible 2024"
    r = vericar_cmd("enroll", *map(str, photos), "--label", label, "--model", tiny, "--data-dir", str(data))
    assert r.returncode == 0, r.stderr[-2000:]
    assert label in r.stdout
    with EnrolledStore(vericar.load(tiny), data) as store:  # what `python app.py --data-dir` starts with
        assert store.summary() == [(label, 3)] and label in store.rec.gallery.classes
        busy = vericar_cmd("remove", label, "--model", tiny, "--data-dir", str(data))
        assert busy.returncode == 1 and "another vericar app" in busy.stderr  # the app's lock holds
    rec = vericar.load(tiny)
    assert merge_added(rec, read_added(data)) == [label]
    assert rec.predict(photos[0]).label == label
    got = vericar_cmd("identify", str(photos[0]), "--out", str(tmp_path / "r.jsonl"), "--model", tiny,
                      "--data-dir", str(data))
    assert got.returncode == 0 and read_jsonl(tmp_path / "r.jsonl")[0]["label"] == label  # identify sees it too
    r = vericar_cmd("remove", label, "--model", tiny, "--data-dir", str(data))
    assert r.returncode == 0, r.stderr[-2000:]
    with EnrolledStore(vericar.load(tiny), data) as store:
        assert store.summary() == [] and label not in store.rec.gallery.classes


def test_command_line_errors_are_one_line(tiny, tmp_path, capsys):
    from vericar.cli import main

    def fails(*argv: str) -> str:
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        assert str(e.value.code).startswith("error: ")
        return str(e.value.code)

    assert "does not exist" in fails("identify", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.csv"))
    made_photos(tmp_path / "in", 1)
    assert ".csv, .jsonl or .parquet" in fails("identify", str(tmp_path / "in"), "--out", str(tmp_path / "r.xlsx"))
    (tmp_path / "list.csv").write_text("path\nin/car000.jpg\n")
    assert "no 'file' column" in fails("identify", str(tmp_path / "list.csv"), "--out", str(tmp_path / "r.csv"))
    (tmp_path / "list.csv").write_text("file\nin/car000.jpg\n")  # relative to the CSV's folder
    main(["identify", str(tmp_path / "list.csv"), "--out", str(tmp_path / "r.csv"), "--model", tiny,
          "--data-dir", str(tmp_path / "data")])
    assert "wrote 1 row for 1 photo" in capsys.readouterr().out


def test_outputs_it_cannot_resume_and_empty_inputs_are_refused(tiny, tmp_path):
    made_photos(tmp_path / "in", 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VericarError, match="no photos were found"):
        identify([tmp_path / "empty"], tmp_path / "r.csv", model=tiny)
    (tmp_path / "latin1.csv").write_bytes("file,label\ncaf\xe9.jpg,x\n".encode("latin-1"))
    (tmp_path / "part.parquet").mkdir()
    (tmp_path / "part.parquet" / "part-000000.parquet").write_text("not parquet")
    for out in ("latin1.csv", "part.parquet"):
        with pytest.raises(VericarError, match="cannot be resumed"):
            identify([tmp_path / "in"], tmp_path / out, model=tiny)
    stats = identify([tmp_path / "in"], tmp_path / "new" / "deeper" / "r.jsonl", model=tiny,
                     data_dir=tmp_path / "data")  # a missing folder for --out is made
    assert stats.rows == 1 and stats.errors == 0


@pytest.mark.timeout(900)  # subprocesses that import torch / gradio: slow on a loaded machine
def test_serve_and_evaluate_are_the_app_and_the_evaluate_cli():
    serve = vericar_cmd("serve", "--help")
    assert serve.returncode == 0 and "vericar Gradio app" in serve.stdout and "--data-dir" in serve.stdout
    assert serve.stdout.startswith("usage: vericar serve")  # the app's parser, run in this process (no app.py)
    bad = vericar_cmd("serve", "--model", "local-dir:/no/such/model")  # one line saying why, not a traceback
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in bad.stderr
    ev = vericar_cmd("evaluate", "--help")
    assert ev.returncode == 0 and "--queries" in ev.stdout
