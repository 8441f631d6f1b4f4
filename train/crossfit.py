"""Cross-fitted calibration: other trainings of the same recipe lend their validation slices.

One training holds out 5% of the training CSV (390 photos) to fit its confidence calibration on;
that is few photos for a softmax over 196 models, and dev showed the model level's ECE above what
noise alone explains. Trainings of the same recipe with other seeds hold out other photos. Their
held-out votes (each pool member's validation photos, seen as the product sees them, against that
member's own training photos) stand in for more of the shipped model's own, so the calibration is
fitted on all of them together (``python train/calibrate.py --artifact OUT --pool FOLD1 FOLD2``). Nothing is
fitted on dev, and the shipped model's weights and gallery stay as they are. Whether a fit on the
other trainings' photos transfers is measured, not assumed (``leave_one_out_ece``, in the card).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from train.errors import TrainError
from vericar.core.recognizer import Recognizer
from vericar.evaluation.data import load_source, short_ref, split_holdout, stratified_split
from vericar.search.calibration_fit import LevelVotes, expected_calibration_error, fit_softmax, held_out_votes
from vericar.search.density import DensityCorrection
from vericar.search.gallery import Gallery

Votes = tuple[dict[str, LevelVotes], "dict[str, LevelVotes] | None"]
# Settings that may differ between pool members: where things are written, and the seed (the point).
# (A --time-limit that never fired changes nothing; a run it did stop is refused as cut short.)
FREE_SETTINGS = frozenset({"seed", "output_dir", "feature_cache_dir", "resume", "push_to_hub", "progress",
                           "num_workers", "decode_workers", "time_limit"})


def validation_slice(rec: Any, where: Any = "the artifact") -> tuple[np.ndarray, list[Any]]:
    """Which gallery entries of a train/train.py artifact are its validation photos (bool mask),
    and those photos' samples in gallery order (so their files line up with their embeddings).
    Refuses an artifact made to take photos as they are (train/fix_channels.py): whoever asks for its
    validation photos embeds them, and they are stored with red and blue swapped."""
    from train.fix_channels import refuse_fixed

    refuse_fixed(rec.meta, f"embedding {where}'s validation photos")
    tc = dict(rec.meta.get("train_config") or {})
    kept, _ = split_holdout(load_source(tc["data"], "train"), tc.get("holdout_classes"))
    _, val_s = stratified_split(kept, tc["val_fraction"], tc["seed"])
    # A shipped copy (train/ship.py) keeps refs as "dataset:folder/file": compare in that form too.
    by_ref = {r: s for s in val_s for r in (s.ref, short_ref(s.ref))}
    is_val = np.array([r in by_ref for r in rec.gallery.refs])
    if is_val.sum() != len(val_s):
        raise TrainError(f"found {int(is_val.sum())} of the {len(val_s)} validation photos in {where}'s gallery; "
                         f"run this from the folder training ran in (data was {tc['data']!r}).")
    return is_val, [by_ref[r] for r, v in zip(rec.gallery.refs, is_val) if v]


def recipe_differences(member: Recognizer, like: Recognizer) -> list[str]:
    """What ``member`` was trained or is set up differently from ``like`` with: training settings
    (meta.train_config, bar FREE_SETTINGS), model and preprocessing, k, classes, and a run cut short."""
    tc, tc_like = dict(member.meta.get("train_config") or {}), dict(like.meta.get("train_config") or {})
    diff = sorted(k for k in set(tc) | set(tc_like) if k not in FREE_SETTINGS and tc.get(k) != tc_like.get(k))
    return diff + [name for name, a, b in (
        ("model (backbone, head, preprocessing)", member.config.model.to_dict(), like.config.model.to_dict()),
        ("k", member.k, like.k), ("classes", sorted(member.gallery.classes), sorted(like.gallery.classes)),
        ("a whole run (it was stopped)", _cut_short(member.meta.get("stopped")), False)) if a != b]


def _cut_short(stopped: str | None) -> bool:
    """A run ended by a time limit or a signal; early stopping and --max-steps are part of the recipe."""
    return bool(stopped) and stopped != "early stop" and not str(stopped).startswith("max_steps=")


def load_member(path: Path, like: Recognizer, taken: Sequence[Any] = ()) -> tuple[Recognizer, np.ndarray, list[Any]]:
    """The training saved at ``path``, its validation mask and photos (``validation_slice``), refused
    unless it has ``like``'s recipe (``recipe_differences``) and a seed not in ``taken`` (a
    validation slice counted twice would weigh twice). Cheap: nothing is embedded."""
    from vericar.artifacts.hub import load

    rec = load(f"local-dir:{path}")
    tc = dict(rec.meta.get("train_config") or {})
    diff = recipe_differences(rec, like) if tc else ["train_config (it has none)"]
    seed = tc.get("seed")
    if diff or seed in taken:
        why = f"it differs in {diff}" if diff else f"its seed {seed} is already in the pool (seeds {list(taken)})"
        raise TrainError(f"{path} cannot join the calibration pool: {why}. Pool only whole trainings of the "
                         "calibrated artifact's command line (its model card's Reproduce section), each with a new "
                         "--output-dir and an unused --seed.")
    return (rec, *validation_slice(rec, path))


def member_votes(path: Path, member: tuple[Recognizer, np.ndarray, list[Any]], like: Recognizer,
                 density: DensityCorrection, recipe: dict[str, Any] | None = None) -> tuple[Votes, dict[str, Any]]:
    """The held-out votes of a ``load_member`` result, as ``like`` would vote (its k, the ranking
    ``density``): its validation photos' real-input views (``recipe`` overrides train/realinput.py's)
    against its own training photos.

    Returns the votes and what the report says of the member (its folder, seed, photos, validation top-1).
    """
    from train.realinput import real_input_views
    from vericar.models.embedding import embed

    rec, is_val, val_in_g = member
    seed = (rec.meta.get("train_config") or {}).get("seed", 0)
    labels = np.array(rec.gallery.labels)
    q = embed(rec.model, real_input_views([s.image for s in val_in_g], seed, recipe))
    gallery = Gallery(rec.gallery.dim)
    gallery.add(rec.gallery.embeddings[~is_val], list(labels[~is_val]))
    voter = Recognizer(rec.model, gallery, rec.ood, k=like.k, density=density)
    top1 = ((rec.meta.get("metrics") or {}).get("validation") or {}).get("top1") or {}
    return held_out_votes(voter, q, list(labels[is_val])), {
        "artifact": path.name, "seed": seed, "n": int(is_val.sum()), "validation_top1": top1.get("model")}


def join(sources: Sequence[Votes]) -> Votes:
    """Several sources' votes as one set of photos, level by level (the sources must have the same
    levels, and all or none the votes with each photo's own class taken out)."""
    shapes = {(tuple(known), None if loo is None else tuple(loo)) for known, loo in sources}
    if len(shapes) != 1:
        raise TrainError(f"the pool's votes differ in their levels ({sorted(map(str, shapes))}): pool only "
                         "trainings on the same labels.")
    known = {lvl: LevelVotes.concat([s[0][lvl] for s in sources]) for lvl in sources[0][0]}
    loo = None if sources[0][1] is None else {
        lvl: LevelVotes.concat([s[1][lvl] for s in sources]) for lvl in sources[0][1]}
    return known, loo


def leave_one_out_ece(sources: Sequence[Votes]) -> dict[str, list[dict[str, float]]]:
    """Per level and source: its ECE with a calibration fitted on itself alone, and with one fitted on
    the other sources only (how well a fit on other trainings' photos transfers to this one's)."""
    out: dict[str, list[dict[str, float]]] = {}
    for lvl in sources[0][0]:
        rows = []
        for i, (known, _) in enumerate(sources):
            v = known[lvl]
            own = fit_softmax(v)
            other = fit_softmax(LevelVotes.concat([s[0][lvl] for j, s in enumerate(sources) if j != i]))
            rows.append({"n": len(v.winners),
                         "ece_own_fit": expected_calibration_error(v.confidences(*own), v.correct),
                         "ece_others_fit": expected_calibration_error(v.confidences(*other), v.correct)})
        out[lvl] = rows
    return out
