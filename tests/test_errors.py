"""Typed errors in importable code: vericar and train raise, only command lines exit."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from train.errors import TrainError, cli
from vericar.core.errors import GalleryError, VericarError, check_positive_int

ROOT = Path(__file__).resolve().parents[1]
CODE = sorted((ROOT / "vericar").glob("*.py")) + sorted((ROOT / "train").glob("*.py"))


def _under_main_guard(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
            return True
    return False


def _exits(path: Path) -> list[str]:
    """Lines that end the process (``SystemExit``, ``sys.exit``) outside ``if __name__ == "__main__"``."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        text = ast.unparse(node) if isinstance(node, (ast.Raise, ast.Call)) else ""
        if (isinstance(node, ast.Raise) and "SystemExit" in text) or (isinstance(node, ast.Call) and text.startswith("sys.exit(")):
            if not _under_main_guard(node, parents):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_importable_code_raises_instead_of_exiting():
    # cli() and the `vericar` console script's main() are the places a command exits.
    found = [hit for path in CODE for hit in _exits(path) if not hit.startswith(("train/errors.py", "vericar/cli.py"))]
    assert found == [], f"SystemExit / sys.exit outside a __main__ block: {found}"
    assert _exits(ROOT / "train" / "errors.py"), "cli() is the one place a command exits"


ENTRY_FILES = {"train/train.py", "train/calibrate.py", "train/ship.py", "train/calibrate_pairs.py", "train/ensemble.py",
               "train/fix_channels.py"}


def test_no_sys_path_changes_in_the_packages():
    """Only the training entry files touch sys.path, and only when run as a file (under their guard):
    Python then puts train/ first, where `train` would be train.py itself, so they put the repository there."""
    hits = [f"{p.relative_to(ROOT)}" for p in CODE if "sys.path" in p.read_text()]
    assert set(hits) <= ENTRY_FILES
    for rel in hits:
        tree = ast.parse((ROOT / rel).read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        uses = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "path"
                and ast.unparse(n.value).endswith("sys")]
        assert uses and all(_under_main_guard(n, parents) for n in uses), rel


def test_cli_turns_errors_into_the_messages_commands_print():
    def fails(exc):
        def main():
            raise exc
        return main

    with pytest.raises(SystemExit) as e:
        cli(fails(TrainError("--resume X: no checkpoint there")))
    assert e.value.code == "--resume X: no checkpoint there"
    with pytest.raises(SystemExit) as e:
        cli(fails(GalleryError("k must be a positive integer, got 0.")))
    assert e.value.code == "error: k must be a positive integer, got 0."
    with pytest.raises(ZeroDivisionError):  # a bug stays a traceback
        cli(fails(ZeroDivisionError()))
    assert cli(lambda: 7) == 7


def test_training_settings_errors_are_typed(tmp_path, tiny_vit_model):
    from train.featcache import check_supported
    from train.steps import resume

    with pytest.raises(TrainError, match="--feature-cache-stages works with timm EfficientNet backbones only"):
        check_supported(tiny_vit_model)
    run = SimpleNamespace(cfg=SimpleNamespace(resume=str(tmp_path)), accelerator=None, out=tmp_path)
    with pytest.raises(TrainError, match="no checkpoint there"):
        resume(run)
    assert issubclass(TrainError, VericarError)


@pytest.mark.parametrize("script", ["train.py", "calibrate.py", "ship.py", "ensemble.py", "fix_channels.py"])
def test_training_scripts_run_as_files_from_any_folder(script, tmp_path):
    """The promised form (accelerate launch train/train.py) runs the file: from the root and from elsewhere."""
    for cwd, path in [(ROOT, f"train/{script}"), (tmp_path, str(ROOT / "train" / script))]:
        r = subprocess.run([sys.executable, path, "--help"], cwd=cwd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and f"usage: train/{script}" in r.stdout, r.stderr[-2000:]


@pytest.mark.parametrize("bad", [0, -3, True, 2.0, "3", None])
def test_positive_int_check_refuses(bad):
    with pytest.raises(GalleryError, match=r"^k must be a positive integer, got "):
        check_positive_int(bad, "k", GalleryError)


def test_positive_int_check_accepts_and_explains():
    assert check_positive_int(np.int64(3), "k") == 3 and type(check_positive_int(np.int64(3), "k")) is int
    with pytest.raises(VericarError, match=r"dim must be a positive integer \(the embedding size\), got 0\."):
        check_positive_int(0, "dim", what="the embedding size")


def test_level_tuples_are_the_taxonomys():
    from vericar.search import calibration
    from vericar.models import losses
    from vericar.core import prediction
    from vericar.search import taxonomy
    from vericar.evaluate import TOP1_LEVELS

    assert prediction.PREDICTION_LEVELS is taxonomy.LEVELS and calibration.LEVELS is taxonomy.LEVELS
    assert losses.DEFAULT_LEVELS is taxonomy.COARSE_TO_FINE
    assert TOP1_LEVELS == ("model", "make", "type")
