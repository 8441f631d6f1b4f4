"""Hugging Face Space settings and deployment for the vericar demo.

    python -m vericar.space check                    # README.md front matter == space.yaml?
    python -m vericar.space front-matter             # print the block README.md must start with
    python -m vericar.space deploy --space USER/NAME [--model SPEC] [--dry-run]

``space.yaml`` (repo root) holds the Space settings under ``space:`` and the model spec under
``model:``. Deployment stages exactly the files a Space needs in a temporary folder and hands it
to :func:`vericar.artifacts.hub.deploy_space` (hub.py stays the only module importing huggingface_hub).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from vericar.artifacts.spec import parse_spec
from vericar.core.errors import VericarError

ROOT = Path(__file__).resolve().parent.parent
SPACE_YAML = "space.yaml"
README = "README.md"
# What a Space runs: the app, its requirements, the card, and the library (code + shipped model).
TOP_FILES = ("app.py", "requirements.txt", README, SPACE_YAML)
SKIP_PARTS = {"__pycache__", ".pytest_cache"}


class SpaceError(VericarError):
    """Space settings are missing or inconsistent."""


def read_settings(root: str | Path = ROOT) -> dict[str, Any]:
    """Parse ``space.yaml``: ``{"space": {...front matter...}, "model": spec}``."""
    path = Path(root) / SPACE_YAML
    if not path.is_file():
        raise SpaceError(f"{path} not found; run from the vericar repository (it ships space.yaml).")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("space"), dict):
        raise SpaceError(f"{path} must hold a mapping with a 'space:' block (the README front matter).")
    data.setdefault("model", "default")
    data.setdefault("variables", {})
    if not isinstance(data["variables"], dict):
        raise SpaceError(f"{path}: 'variables:' must map Space variable names to values.")
    return data


def front_matter(root: str | Path = ROOT) -> str:
    """The YAML front matter README.md must start with (from space.yaml's ``space:`` block)."""
    body = yaml.safe_dump(read_settings(root)["space"], sort_keys=False, allow_unicode=True)
    return f"---\n{body}---\n"


def parse_front_matter(text: str) -> dict[str, Any] | None:
    """The YAML mapping between the leading ``---`` lines of a Markdown file, or None if absent."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for end in range(1, len(lines)):
        if lines[end].strip() == "---":
            data = yaml.safe_load("\n".join(lines[1:end]))
            return data if isinstance(data, dict) else {}
    return None


def check(root: str | Path = ROOT) -> list[str]:
    """Problems with the Space settings (empty list when README front matter agrees with space.yaml)."""
    root = Path(root)
    settings = read_settings(root)
    want = settings["space"]
    problems: list[str] = []
    readme = root / README
    have = parse_front_matter(readme.read_text(encoding="utf-8")) if readme.is_file() else None
    if have is None:
        problems.append(f"{readme} has no YAML front matter; paste the output of `python -m vericar.space front-matter` at its top.")
    elif have != want:
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        problems.append(
            f"README.md front matter differs from space.yaml in {', '.join(diff)}; "
            "replace it with the output of `python -m vericar.space front-matter`."
        )
    for key in ("sdk", "sdk_version", "app_file", "python_version"):
        if key not in want:
            problems.append(f"space.yaml's space: block lacks {key!r}; a Space needs it.")
    if str(settings["variables"].get("VERICAR_PUBLIC")) != "1":
        problems.append("space.yaml's variables: must set VERICAR_PUBLIC: '1': a Space is used by strangers at once, "
                        "so each visitor's vehicles must stay in their session (see README, 'Public mode').")
    if want.get("app_file") and not (root / str(want["app_file"])).is_file():
        problems.append(f"app_file {want['app_file']!r} does not exist in {root}.")
    try:
        import gradio
    except ImportError:  # checking settings must not need the app's dependencies
        gradio = None
    if gradio is not None and str(want.get("sdk_version")) != gradio.__version__:
        problems.append(
            f"space.yaml pins sdk_version {want.get('sdk_version')} but gradio {gradio.__version__} is installed "
            "(and tested); update sdk_version so the Space runs what the tests ran."
        )
    return problems


def space_files(root: str | Path = ROOT, *, with_default_model: bool = True) -> list[str]:
    """Repo-relative paths a Space needs: app, requirements, README, space.yaml and vericar/."""
    root = Path(root)
    files = [name for name in TOP_FILES if (root / name).is_file()]
    for p in sorted((root / "vericar").rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or SKIP_PARTS & set(rel.parts) or p.suffix == ".pyc":
            continue
        if not with_default_model and rel.parts[:2] == ("vericar", "default"):
            continue
        files.append(rel.as_posix())
    return files


def stage(dest: str | Path, *, model: str, root: str | Path = ROOT) -> dict[str, str]:
    """Copy the Space's files into ``dest``; returns the Space variables to set (VERICAR_MODEL and
    space.yaml's ``variables:``, e.g. VERICAR_PUBLIC).

    A ``local-dir:PATH`` model is copied in as ``vericar/default`` so the Space serves it
    offline; ``hf-hub:`` models are downloaded by the Space itself at startup.
    """
    root, dest = Path(root), Path(dest)
    parsed = parse_spec(model)
    local = parsed.kind == "local-dir"
    model = str(parsed)
    for rel in space_files(root, with_default_model=not local and model == "default"):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
    if local:
        src = Path(parsed.name).expanduser()
        if not (src / "config.json").is_file():
            raise SpaceError(f"{src} has no config.json; --model local-dir: must point at a saved vericar model.")
        shutil.copytree(src, dest / "vericar" / "default", dirs_exist_ok=True)
        model = "default"
    elif model == "default" and not (dest / "vericar" / "default" / "config.json").is_file():
        raise SpaceError(
            "the default model is not in vericar/default, so the Space would have nothing to serve; "
            "train one and pass --model local-dir:OUT, or --model hf-hub:ORG/NAME."
        )
    return {"VERICAR_MODEL": model, **{k: str(v) for k, v in read_settings(root)["variables"].items()}}


def deploy(space_id: str, *, model: str | None = None, root: str | Path = ROOT, private: bool = False,
           token: str | None = None, dry_run: bool = False) -> str:
    """Create or update the Space ``space_id`` (USER/NAME) with the app and ``model``; returns its URL."""
    if space_id.count("/") != 1:
        raise SpaceError(f"--space must be USER/NAME, got {space_id!r}.")
    problems = check(root)
    if problems:
        raise SpaceError("fix the Space settings first:\n- " + "\n- ".join(problems))
    settings = read_settings(root)
    model = model or str(settings["model"])
    with tempfile.TemporaryDirectory(prefix="vericar-space-") as tmp:
        variables = stage(tmp, model=model, root=root)
        if dry_run:
            files = sorted(p.relative_to(tmp).as_posix() for p in Path(tmp).rglob("*") if p.is_file())
            return "dry run: would upload " + ", ".join(files) + f" with variables {variables}"
        from vericar.artifacts import hub  # lazy: the Hub client is only needed to upload

        # suggested_hardware stays a suggestion (front matter): requesting paid hardware is the owner's call.
        return hub.deploy_space(space_id, tmp, variables=variables, private=private, token=token)


def main(argv: list[str] | None = None) -> int:
    """Command line: check | front-matter | deploy."""
    ap = argparse.ArgumentParser(prog="python -m vericar.space", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="verify README.md front matter agrees with space.yaml")
    sub.add_parser("front-matter", help="print the README.md front matter made from space.yaml")
    d = sub.add_parser("deploy", help="create or update the Space")
    d.add_argument("--space", required=True, help="USER/NAME of the Space")
    d.add_argument("--model", default=None, help="model spec (default: space.yaml's model:)")
    d.add_argument("--private", action="store_true")
    d.add_argument("--dry-run", action="store_true", help="stage the files and list them; upload nothing")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "front-matter":
            print(front_matter(), end="")
        elif args.cmd == "check":
            problems = check()
            for p in problems:
                print(f"error: {p}", file=sys.stderr)
            if problems:
                return 1
            print("ok: README.md front matter matches space.yaml")
        else:
            print(deploy(args.space, model=args.model, private=args.private, dry_run=args.dry_run))
    except VericarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
