"""vericar identify --engine ray: Ray Data in local mode (2 CPUs) gives the plain engine's rows."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from batch_helpers import real_photo_folder
from conftest import CARS_DIR

ray = pytest.importorskip("ray", reason="the Ray engine is the vericar[ray] extra")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs whose workers import this checkout's vericar; shut down at the end."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    ray.shutdown()
    for sig, handler in before.items():  # ray.init replaced them; later tests expect this process's own
        signal.signal(sig, handler)


@pytest.mark.timeout(480)
@pytest.mark.skipif(not (CARS_DIR / "dev").is_dir(), reason="no real photos in ../shared")
def test_ray_engine_gives_the_plain_engines_rows(local_ray, tmp_path):
    from vericar.batch.run import identify

    real_photo_folder(tmp_path / "in", 18)  # + a truncated photo and a non-image: 20 rows
    ray_stats = identify([tmp_path / "in"], tmp_path / "ray.jsonl", engine="ray", workers=2, batch_size=4,
                         data_dir=tmp_path / "data")
    assert local_ray.is_initialized()  # a Ray the caller started is the caller's to stop
    identify([tmp_path / "in"], tmp_path / "plain.jsonl", batch_size=4, data_dir=tmp_path / "data")
    plain = sorted((json.loads(s) for s in (tmp_path / "plain.jsonl").read_text().splitlines()), key=str)
    got = sorted((json.loads(s) for s in (tmp_path / "ray.jsonl").read_text().splitlines()), key=str)
    assert (ray_stats.photos, ray_stats.rows, ray_stats.errors) == (20, 20, 2)
    floats = {"confidence_make", "confidence_model", "confidence_type", "confidence_year", "ood_score"}
    for a, b in zip(got, plain, strict=True):  # exact but for float summation order (1e-7)
        assert {k: v for k, v in a.items() if k not in floats} == {k: v for k, v in b.items() if k not in floats}
        assert all(a[k] is None and b[k] is None or abs(a[k] - b[k]) < 1e-5 for k in floats)
    again = identify([tmp_path / "in"], tmp_path / "ray.jsonl", engine="ray", data_dir=tmp_path / "data")
    assert (again.skipped, again.photos) == (20, 0)  # resumed: nothing left to do, no actor started
