"""Packaging and the shape of the import graph.

- pyproject.toml declares what requirements*.txt pin (a Space installs requirements.txt; `pip
  install .` reads pyproject), so a fact changed in one is caught here if not in the other.
- `pip install .` gives a package that imports and serves its default model from any folder.
- vericar's import graph, lazy (function-level) imports included, has no cycle and never reaches
  train/ or app.py.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "vericar"


def _requirements(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip() and not ln.startswith("-r")]


def test_pyproject_declares_the_requirements_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == _requirements("requirements.txt")
    extras = project["optional-dependencies"]
    assert extras["train"] == _requirements("requirements-train.txt")
    assert extras["dev"] == ["vericar[train]"] + _requirements("requirements-dev.txt")
    # the Ray engine's extra is what CI tests it with
    assert extras["ray"] == [r for r in _requirements("requirements-dev.txt") if r.startswith("ray[")]
    assert project["scripts"] == {"vericar": "vericar.cli:main"}
    assert (PKG / "py.typed").is_file()


@pytest.mark.slow
def test_installed_package_loads_the_default_model_from_any_folder(tmp_path):
    """`pip install .` (dependencies already present here), then import and load from elsewhere."""
    src, target = tmp_path / "src", tmp_path / "site"
    # A copy, because setuptools builds in the source folder (build/, *.egg-info) and the repo stays clean.
    shutil.copytree(PKG, src / "vericar", ignore=shutil.ignore_patterns("__pycache__", "default.old"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, cwd=tmp_path, timeout=300)
    assert (target / "vericar" / "py.typed").is_file()
    code = ("import vericar, sys; r = vericar.load('default'); "
            "assert vericar.__file__.startswith(sys.argv[1]), vericar.__file__; print(len(r.gallery.classes))")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code, str(target)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "196"
    # the console script: identify a photo with the installed package's default model, from elsewhere
    from conftest import make_car_image

    make_car_image(0, size=(200, 150)).save(tmp_path / "car.jpg")
    cli = subprocess.run([str(target / "bin" / "vericar"), "identify", "car.jpg", "--out", "r.csv", "--detector",
                          "none", "--data-dir", str(tmp_path / "data")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "wrote 1 row for 1 photo" in cli.stdout and (tmp_path / "r.csv").read_text().count("\n") == 2


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    """Modules ``path`` imports anywhere (lazy imports too), except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
            for n in ast.walk(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from . import hub` imports vericar.artifacts.hub
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in _imports(p, m) if i in files and i != m} for m, p in files.items()}


def test_vericar_never_imports_train_or_app():
    for path in PKG.rglob("*.py"):
        bad = {i for i in _imports(path, _module_name(path)) if i.split(".")[0] in {"train", "app"}}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_import_graph_has_no_cycle():
    graph = _graph()
    # vericar/__init__ resolves names lazily (PEP 562) and is imported by every submodule's package;
    # its edges are the public surface, not a dependency of the modules it re-exports.
    graph.pop("vericar", None)
    for deps in graph.values():
        deps.discard("vericar")
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_architecture_doc_names_every_module():
    """docs/ARCHITECTURE.md describes the layout: every module of a subpackage is named there."""
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    missing = [str(p.relative_to(PKG)) for p in PKG.glob("*/*.py")
               if p.name != "__init__.py" and p.name not in doc]
    assert not missing, f"docs/ARCHITECTURE.md does not mention {missing}"
    assert all(f"{p.name}/" in doc for p in PKG.iterdir() if (p / "__init__.py").is_file())
