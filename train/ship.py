"""Copy a trained artifact into the package as the shipped default model (``vericar/default``).

    python train/ship.py --artifact OUT --dest vericar/default --eval-json dev.json --eval-command "python -m vericar.evaluate ..." \
        [--card-extra dev_confidences.md] [--insights DIR]

``--insights DIR``: the app's Insights tab file from ``python -m vericar.evaluate --model local-dir:OUT --queries
DEV.csv --explore TRAIN.csv --report DIR`` (docs/report.md); without it, the artifact's own ``insights/`` ships
if it has one (re-shipping the shipped copy keeps them).

What ships: config.json, model.safetensors, the gallery's embeddings + labels, the model card and
training curve. What does not: training checkpoints, and the gallery thumbnails — they are small
copies of the dataset's photos, which must not be committed (the app then shows label tiles).
References are rewritten to dataset-relative ids, and the training machine's folders (output,
feature cache, checkpoints, the artifacts a command read) leave the recorded settings and commands;
the card is written again from them. The data source stays as training was given it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
from pathlib import Path
from typing import Any, Sequence

if __name__ == "__main__" and not __package__:  # run as a file (accelerate launch train/ship.py): Python put
    import os as _os, sys as _sys  # train/ first on the path, where `train` is train.py; the repository instead
    _here = _os.path.dirname(_os.path.abspath(__file__))
    _sys.path[:] = [_os.path.dirname(_here)] + [p for p in _sys.path if _os.path.abspath(p or ".") != _here]

import yaml

from train.card import dev_figures, dev_section, write_card
from train.errors import TrainError, cli
from vericar.artifacts.hub import WEIGHTS_NAME, is_complete, load_local, read_artifact, read_config, write_config
from vericar.core.errors import VericarError
from vericar.core.config import DetectorCfg
from vericar.attributes.stage import COLOUR_FILE, VIEWPOINT_FILE
from vericar.evaluation import insights
from vericar.evaluation.data import portable_value, short_ref
from vericar.search.gallery import Gallery

# config.json, card, train_config.yaml: rewritten; the attribute heads (vericar/attributes) travel as they are
COPY = (WEIGHTS_NAME, "training_curve.png", "metrics.csv",
        *(f"{head}.{ext}" for head in (COLOUR_FILE, VIEWPOINT_FILE) for ext in ("json", "safetensors")))
OUT_FLAGS = ("--output-dir", "--artifact")  # a machine's folder in a recorded command -> "OUT"
DROP_FLAGS = ("--feature-cache-dir",)  # where a cache lived changes nothing the model learns
KEEP_FLAGS = ("--data",)  # as in the settings: a shipped copy finds its validation photos by it


def portable_command(line: str) -> str:
    """A recorded command line without the training machine's folders: the output / artifact folder
    becomes OUT, the feature cache flag goes, any other absolute path but the data's keeps only its name."""
    try:
        toks = shlex.split(line)
    except ValueError as e:
        raise TrainError(f"cannot read the recorded command {line!r} ({e}); fix meta.command in the "
                         "artifact's config.json, then ship again.") from e
    out: list[str] = []
    flag, skip = None, False
    for tok in toks:
        if tok.startswith("-") and len(tok) > 1:
            name, eq, value = tok.partition("=")
            flag = None if eq else name  # the values that follow belong to this flag; none after --flag=value
            skip = name in DROP_FLAGS and not eq  # its value is the next token
            if name in DROP_FLAGS:
                continue
            out.append(f"{name}={_portable_arg(name, value)}" if eq else tok)
        elif skip:
            skip = False
        else:
            out.append(_portable_arg(flag, tok))
    return shlex.join(out)


def _portable_arg(flag: str | None, value: str) -> str:
    if flag in OUT_FLAGS:
        return "OUT"
    return value if flag in KEEP_FLAGS else portable_value(value)


def portable_settings(tc: dict[str, Any]) -> dict[str, Any]:
    """Training settings without the training machine's folders: output OUT, no cache folder or
    checkpoint to resume from (the data source stays: a shipped copy still finds its photos by it)."""
    tc = dict(tc)
    for key, value in (("output_dir", "OUT"), ("feature_cache_dir", None), ("resume", None)):
        if key in tc:
            tc[key] = value
    return tc


def portable_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with portable commands and settings (what a shipped config.json and card record)."""
    meta = dict(meta)
    if meta.get("command"):
        meta["command"] = "\n".join(portable_command(line) for line in str(meta["command"]).splitlines())
    if meta.get("train_config"):
        meta["train_config"] = portable_settings(dict(meta["train_config"]))
    return meta


def _write_metadata(src: Path, tmp: Path, detector: str, card_extra: str | None = None,
                    dev: dict[str, Any] | None = None) -> None:
    """config.json, train_config.yaml and the card of ``src`` (with the ``dev`` figures), written to ``tmp``
    without local folders."""
    config, meta = read_artifact(src)
    if detector != "none":
        config = dataclasses.replace(config, detector=DetectorCfg(detector))
    meta = portable_meta(meta)
    if card_extra is not None:
        meta["card_extra"] = card_extra.strip()
    write_config(tmp, config, meta)
    if (src / "train_config.yaml").is_file():
        settings = portable_settings(yaml.safe_load((src / "train_config.yaml").read_text()) or {})
        (tmp / "train_config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    if (meta.get("metrics") or {}).get("validation") is not None:
        write_card(tmp, config, meta, dev)
        return
    card = (src / "README.md").read_text() if (src / "README.md").is_file() else ""
    if card:
        print(f"warning: {src} has no training metrics to write a card from; its README.md is copied as "
              "written (check it for local folders).")
    if card or dev:
        (tmp / "README.md").write_text(card + ("\n" + dev_section(dev) if dev else ""))


def _read_input(path: str, flag: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise TrainError(f"{flag} {path}: cannot read it ({e}); give an existing text file.") from e


def _read_dev(eval_json: str, command: str | None) -> dict[str, Any]:
    """The dev figures for the card, from ``python -m vericar.evaluate --json`` output (checked here)."""
    try:
        result = json.loads(eval_json)
        dev_figures(result)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise TrainError(f"--eval-json is not what python -m vericar.evaluate --json writes ({e!r}); "
                         "give that command's output.") from e
    return {"result": result, "command": portable_command(command) if command else None}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="train/ship.py", description=__doc__.split("\n")[0])
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--dest", default=str(Path(__file__).resolve().parents[1] / "vericar" / "default"))
    ap.add_argument("--eval-json", help="python -m vericar.evaluate --json output on dev, quoted in the card")
    ap.add_argument("--eval-command", help="the command that produced --eval-json")
    ap.add_argument("--card-extra", help="a Markdown file appended to the card (kept in meta.card_extra, so a "
                                         "later ship of the shipped copy keeps it), e.g. dev figures measured after")
    ap.add_argument("--insights", metavar="DIR", help="a report folder of python -m vericar.evaluate --report DIR "
                    "(its insights/ go into the artifact: the app's Insights tab; default: the artifact's own)")
    ap.add_argument("--detector", default="opencv-ssd:mobilenet_v2_coco",
                    help="the vehicle detector the shipped model runs (training writes 'none': the training "
                         "machine may lack the detector's files); 'none' keeps the artifact's own setting")
    args = ap.parse_args(argv)
    src, dest = Path(args.artifact), Path(args.dest)
    read_config(src)  # refuse to ship something that would not load
    if not is_complete(src):
        raise TrainError(f"{src} is not a whole artifact (it needs config.json, {WEIGHTS_NAME} and gallery.json); "
                         "ship the output folder of a finished training (or re-run train.calibrate on it).")
    if dest.exists() and not dest.is_dir():
        raise TrainError(f"--dest {dest} is a file; pass the folder to ship into (e.g. vericar/default).")
    # The other inputs too, before anything is written.
    card_extra = _read_input(args.card_extra, "--card-extra") if args.card_extra else None
    dev = _read_dev(_read_input(args.eval_json, "--eval-json"), args.eval_command) if args.eval_json else None
    insights_from = Path(args.insights) if args.insights else src
    try:
        has_insights = insights.load(insights_from) is not None
    except VericarError as e:
        raise TrainError(f"{'--insights ' + args.insights if args.insights else src}: {e}") from e
    if args.insights and not has_insights:
        raise TrainError(f"--insights {args.insights} holds no {insights.FOLDER}/{insights.FILE}; {insights.HOW}.")
    old = dest.with_name(dest.name + ".old")
    if not dest.exists() and is_complete(old):
        # An earlier ship stopped between its two renames: put the previous model back first, so
        # a failure of this run too still leaves a whole model at dest.
        old.rename(dest)
        print(f"restored {dest} from {old.name} (an earlier ship was interrupted)")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in COPY:
        if (src / name).is_file():
            shutil.copy2(src / name, tmp / name)
    # tmp is not served yet, so plain writes are safe (the renames below make the swap atomic).
    _write_metadata(src, tmp, args.detector, card_extra, dev)
    g = Gallery.load(src)
    slim = Gallery(g.dim, tta=g.tta)  # the views its embeddings were made with travel with them
    slim.add(g.embeddings, g.labels, refs=[short_ref(r) for r in g.refs])
    slim.save(tmp)
    if has_insights:  # their recorded command has no local folders (vericar.evaluation.report writes it so)
        insights.copy_into(insights_from, tmp)
    try:  # what would be served must load before it replaces anything
        load_local(tmp, detector="none")
    except VericarError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainError(f"the copy of {src} does not load ({e}); nothing was changed at {dest}.") from e
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)  # two renames: there is always a whole model at dest or at dest.old
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    size = sum(f.stat().st_size for f in dest.iterdir()) / 2**20
    print(f"shipped {src} -> {dest} ({size:.1f} MiB)")


if __name__ == "__main__":
    cli(main)
