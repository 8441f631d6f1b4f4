"""Copy a trained artifact into the package as the shipped default model (``vericar/default``).

    python -m train.ship --artifact OUT --dest vericar/default --eval-json dev.json --eval-command "python -m vericar.evaluate ..."

What ships: config.json, model.safetensors, the gallery's embeddings + labels, the model card and
training curve. What does not: training checkpoints, and the gallery thumbnails — they are small
copies of the dataset's photos, which must not be committed (the app then shows label tiles).
References are rewritten to dataset-relative ids (no local paths in the package).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Sequence

if __name__ == "__main__" and not __package__:  # run as a file: train/ would be on the path, not the repository
    raise SystemExit("run it as a module from the repository root: python -m train.ship --artifact OUT ...")

from train.errors import cli
from vericar.artifacts.hub import CONFIG_NAME, WEIGHTS_NAME, is_complete, read_artifact, read_config, write_config
from vericar.core.config import DetectorCfg
from vericar.search.gallery import Gallery

COPY = (CONFIG_NAME, WEIGHTS_NAME, "README.md", "training_curve.png", "metrics.csv", "train_config.yaml")


def short_ref(ref: str) -> str:
    """"dataset:folder/file" for a photo path: what a shipped gallery keeps of it (no local paths)."""
    p = Path(ref)
    return f"{p.parent.parent.name}:{p.parent.name}/{p.name}" if p.parent.name else ref


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--dest", default=str(Path(__file__).resolve().parents[1] / "vericar" / "default"))
    ap.add_argument("--eval-json", help="python -m vericar.evaluate --json output on dev, quoted in the card")
    ap.add_argument("--eval-command", help="the command that produced --eval-json")
    ap.add_argument("--detector", default="opencv-ssd:mobilenet_v2_coco",
                    help="the vehicle detector the shipped model runs (training writes 'none': the training "
                         "machine may lack the detector's files); 'none' keeps the artifact's own setting")
    args = ap.parse_args(argv)
    src, dest = Path(args.artifact), Path(args.dest)
    read_config(src)  # refuse to ship something that would not load
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
    if args.detector != "none":
        # tmp is not served yet, so a plain write is safe (the renames below make the swap atomic).
        config, meta = read_artifact(src)
        write_config(tmp, dataclasses.replace(config, detector=DetectorCfg(args.detector)), meta)
    g = Gallery.load(src)
    slim = Gallery(g.dim)
    slim.add(g.embeddings, g.labels, refs=[short_ref(r) for r in g.refs])
    slim.save(tmp)
    if args.eval_json:
        r = json.loads(Path(args.eval_json).read_text())
        t = r["top1"]
        extra = (
            f"## Dev accuracy ({r['n_queries']:,} photos of the Stanford Cars test split, k-NN on this gallery)\n\n"
            "| top-1 model | top-1 make | top-1 type | top-5 model | macro-F1 | Recall@1 |\n|---|---|---|---|---|---|\n"
            f"| {100 * t['model']:.2f}% | {100 * t['make']:.2f}% | {100 * t['type']:.2f}% | "
            f"{100 * r['top5']['model']:.2f}% | {100 * r['macro_f1']:.2f}% | {100 * r['recall_at_1']:.2f}% |\n\n"
            f"```\n{args.eval_command or ''}\n```\n\nThe gallery ships without thumbnails (they would be copies "
            "of the dataset's photos).\n"
        )
        card = tmp / "README.md"
        card.write_text(card.read_text() + "\n" + extra if card.is_file() else extra)
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)  # two renames: there is always a whole model at dest or at dest.old
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    size = sum(f.stat().st_size for f in dest.iterdir()) / 2**20
    print(f"shipped {src} -> {dest} ({size:.1f} MiB)")


if __name__ == "__main__":
    cli(main)
