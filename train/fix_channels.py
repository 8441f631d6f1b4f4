"""Make a network trained on red-and-blue-swapped photos take photos as they are (RGB).

    python train/fix_channels.py --artifact OUT

The Stanford Cars train photos shipped in ../shared are stored with their red and blue channels
swapped (BGR written as RGB: blue tail lights, orange skies; docs/attributes.md, "Labels"), while
the dev and test photos, and users' photos, are not. A network trained on the train photos as
stored therefore sees every real photo with its colours swapped. Swapping the input channels of its
first convolution (``conv_stem``, every member of an ensemble), and the red and blue entries of the
preprocessing's mean and std, gives a network that computes, on a photo as it is, exactly what the
trained one computed on the photo with red and blue swapped: ``fixed(x) == trained(swap(x))``,
borders included. Everything fitted on the training photos as stored (the gallery, the
threshold, the confidences, the comparison) is therefore unchanged and stays valid: their
embeddings are what the fixed network gives on those photos with their colours put right.

The artifact records it (``meta.train_photos_channels = "bgr"``); what embeds its training photos
again (train/calibrate.py, train/calibrate_pairs.py, train/ensemble.py, and whatever asks
train/crossfit.py for the validation photos: benchmarks/tta_variants.py, benchmarks/make_open_world.py)
refuses such an artifact, because it would feed it the photos as stored: run those before this script.
``--undo`` swaps back (for a copy to refit, then fix again).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

if __name__ == "__main__" and not __package__:  # run as a file: put the repository first (see train/calibrate.py)
    import os as _os, sys as _sys
    _here = _os.path.dirname(_os.path.abspath(__file__))
    _sys.path[:] = [_os.path.dirname(_here)] + [p for p in _sys.path if _os.path.abspath(p or ".") != _here]

from train.errors import TrainError, cli
from vericar.evaluation.data import TRAIN_CHANNELS as MARK  # the meta key (and the weights' header mark)

FIRST_CONV = "conv_stem.weight"  # timm EfficientNet / EfficientNet-Lite; other backbones are refused


def refuse_fixed(meta: dict, what: str) -> None:
    """TrainError when the artifact's network was switched to RGB input by this script (``what``: the
    refusing command), since it would embed the training photos in the wrong channel order."""
    if meta.get(MARK) == "bgr":
        raise TrainError(f"{what}: the training photos are stored with red and blue swapped, but this artifact's "
                         "network takes photos as they are (train/fix_channels.py ran on it). Run this on a copy "
                         "made to take them as stored (python train/fix_channels.py --undo --artifact COPY), "
                         "then fix the copy again (python train/fix_channels.py --artifact COPY).")


def swap_first_conv(tensors: dict) -> list[str]:
    """Swap the red and blue input channels of every first convolution in ``tensors`` (in place);
    returns the names changed. TrainError when there is none, or one that does not take 3 channels."""
    names = [k for k in tensors if k == FIRST_CONV or k.endswith("." + FIRST_CONV)]
    if not names:
        raise TrainError(f"no first convolution ({FIRST_CONV}) in the weights; only EfficientNet-style "
                         "backbones are supported by this script")
    for k in names:
        w = tensors[k]
        if w.ndim != 4 or w.shape[1] != 3:
            raise TrainError(f"{k} has shape {tuple(w.shape)}, not (out, 3, kh, kw)")
        tensors[k] = w[:, [2, 1, 0]].contiguous()
    return names


def main(argv: Sequence[str] | None = None) -> list[str]:
    """Fix ``--artifact`` in place; returns the names of the convolutions changed."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from vericar.artifacts.hub import read_artifact, write_config

    ap = argparse.ArgumentParser(prog="train/fix_channels.py", description=__doc__.split("\n")[0])
    ap.add_argument("--artifact", required=True, help="a model folder trained on the swapped train photos")
    ap.add_argument("--undo", action="store_true", help="swap back: the network takes the photos as stored again")
    args = ap.parse_args(argv)
    out = Path(args.artifact)
    cfg, meta = read_artifact(out)
    path = out / "model.safetensors"
    try:
        with safe_open(str(path), "pt") as f:
            tensors, header = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # missing, truncated, not safetensors: nothing has been changed yet
        raise TrainError(f"cannot read the weights {path} ({type(e).__name__}: {e}); the folder is left as it was. "
                         "Point --artifact at a complete model folder (config.json and model.safetensors).") from e
    done, want = meta.get(MARK) == "bgr", not args.undo
    if done == want:
        raise TrainError(f"{out} is already {'fixed' if done else 'as trained'} (meta.{MARK} is "
                         f"{meta.get(MARK)!r}); swapping again would undo it"
                         + (" (--undo swaps back)." if done else "."))
    # A run cut short after the weights is finished by running again: the weights file says whether its
    # channels were swapped by the run whose config was not written (its header mark names the run).
    state = "undone" if args.undo else "bgr"
    names = swap_first_conv(tensors)  # checks the weights even when only the config is left to finish
    if header.get(MARK) != state:
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"format": header.get("format", "vericar"), MARK: state})
        os.replace(tmp, path)
    pre = cfg.model.preprocess  # its normalisation follows the channels (a no-op for (0.5, 0.5, 0.5))
    cfg = replace(cfg, model=replace(cfg.model, preprocess=replace(pre, mean=pre.mean[::-1], std=pre.std[::-1])))
    if args.undo:
        meta.pop(MARK, None)
    else:
        meta[MARK] = "bgr"
    meta["command"] = recorded(meta.get("command", ""), args.undo)
    write_config(out, cfg, meta)
    now = "the photos as stored (red and blue swapped)" if args.undo else "photos as they are"
    print(f"{out}: input channels of {', '.join(names)} swapped (red <-> blue); the network now takes {now}")
    return names


def recorded(previous: str, undo: bool) -> str:
    """The artifact's command with this run's line: an undo right after the fix takes the fix's line
    away instead (the two cancel; a refit in between records itself after the fix's line was taken
    away, and the fix that follows it then records itself again)."""
    fix = "python train/fix_channels.py --artifact OUT"
    lines = [ln for ln in previous.splitlines() if ln]
    if undo and lines and lines[-1] == fix:
        return "\n".join(lines[:-1])
    return "\n".join(lines + [fix.replace("--artifact", "--undo --artifact") if undo else fix])


if __name__ == "__main__":
    cli(main)
