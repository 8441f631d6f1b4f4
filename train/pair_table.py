"""The validation pairs a comparison is fitted on (train/calibrate_pairs.py): each pair's evidence,
with its classes in the gallery and out of it, whether ``predict`` would flag either photo unknown
there, and which pairs each set of rules answers.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vericar.evaluation.pairs import KINDS, make_pairs
from vericar.search.pair_calibration import FEATURES, PAIR_LEVELS, pair_features


def ranked_neighbours(rec: Any, emb: np.ndarray) -> list[list[tuple[str, float, float]]]:
    """Each photo's nearest gallery entries (label, cosine, ranking score) as ``rec`` ranks them, deep
    enough that ``rec.k`` remain once two classes are left out."""
    depth = min(len(rec.gallery), max(rec.k, rec.ood.k) + 2 * max(rec._class_counts().values()) + 1)
    scores, cos, idx = rec.search(np.asarray(emb, np.float32), depth)
    labels = rec.gallery.labels
    return [[(labels[j], float(c), float(s)) for c, s, j in zip(cos[q], scores[q], idx[q]) if j >= 0]
            for q in range(len(emb))]


def _left(rec: Any, ranked: list[tuple[str, float, float]], exclude: set[str]) -> tuple[list, int]:
    """The ranked entries left once the classes in ``exclude`` are out of the gallery, and the cap on
    k that ``rec.predict_embeddings`` puts there (the nearest class's photo count). The ranking's
    densities stay the whole gallery's: an approximation when a density correction is on."""
    kept = [n for n in ranked if n[0] not in exclude]
    return kept, rec._class_counts().get(kept[0][0], 1) if kept else 1


def voters(rec: Any, ranked: list[tuple[str, float, float]], exclude: set[str]) -> list[tuple[str, float]]:
    """The neighbours that vote for one photo, as ``rec.predict_embeddings`` picks them, with the
    classes in ``exclude`` out of the gallery: (label, cosine)."""
    kept, cap = _left(rec, ranked, exclude)
    return [(label, c) for label, c, _ in kept[: min(rec.k, cap)]]


def flagged(rec: Any, ranked: list[tuple[str, float, float]], exclude: set[str]) -> bool:
    """Whether ``rec.predict_embeddings`` would flag the photo unknown with the classes in ``exclude``
    out of the gallery: KNN+ on the ranking scores, k capped as there. (An open-world model's make
    floor, which also flags, is not applied: it needs the photo's calibrated confidences.)"""
    kept, cap = _left(rec, ranked, exclude)
    row = np.full((1, rec.ood.k), -np.inf)  # no neighbour at all scores as the farthest possible
    near = [s for _, _, s in kept[: min(rec.ood.k, cap)]]
    row[0, : len(near)] = near
    return bool(rec.ood.is_unknown(rec.ood.score(row))[0])


def pair_table(rec: Any, emb: np.ndarray, classes: Sequence[str], negatives: int, seed: int) -> dict[str, Any]:
    """Features and outcomes of the validation pairs, known (classes in the gallery) and open (out),
    and ``flag``: whether either photo would be flagged unknown there (the open rules answer it)."""
    pairs = make_pairs([str(i) for i in range(len(classes))], list(classes), negatives, seed)
    ranked = ranked_neighbours(rec, emb)
    rows, ys, kinds, modes, groups, flags = [], [], [], [], [], []
    tax = rec.taxonomy
    for mode in ("known", "open"):
        for p in pairs:
            i, j = int(p.file_a), int(p.file_b)
            out = {classes[i], classes[j]} if mode == "open" else set()  # open: neither class in the gallery
            f = pair_features(float(emb[i] @ emb[j]), voters(rec, ranked[i], out), voters(rec, ranked[j], out),
                              tax.level_value)
            rows.append([f[n] for n in FEATURES])
            ys.append([tax.level_value(classes[i], lvl) == tax.level_value(classes[j], lvl) for lvl in PAIR_LEVELS])
            kinds.append(p.kind), modes.append(mode), groups.append((classes[i], classes[j]))
            flags.append(flagged(rec, ranked[i], out) or flagged(rec, ranked[j], out))
    return {"x": np.array(rows), "y": np.array(ys, bool), "kind": np.array(kinds), "mode": np.array(modes),
            "groups": groups, "flag": np.array(flags, bool)}


def pair_weights(t: dict[str, Any], level: str) -> np.ndarray:
    """Per pair: known and open weigh the same; within each, "same at ``level``" as much as "not",
    and the model level's different pairs each kind equally. For the open rules this makes the two
    kinds of flagged pair (a hard photo of a model in the gallery, a model the gallery lacks) count
    alike whatever their numbers; pooling them instead measured no better (docs/verification.md)."""
    y = t["y"][:, PAIR_LEVELS.index(level)]
    w = np.zeros(len(y))
    for mode in ("known", "open"):
        m = t["mode"] == mode
        for side in (True, False):
            s = m & (y == side)
            if level == "model" and not side:
                present = [k for k in KINDS[1:] if (s & (t["kind"] == k)).any()]
                for k in present:
                    sk = s & (t["kind"] == k)
                    w[sk] = 1.0 / (sk.sum() * len(present))
            elif s.any():
                w[s] = 1.0 / s.sum()
    return w * len(y) / w.sum()


def subset(t: dict[str, Any], m: np.ndarray) -> dict[str, Any]:
    """The pairs of table ``t`` where ``m`` is True."""
    return {k: v[m] if isinstance(v, np.ndarray) else [g for g, keep in zip(v, m) if keep] for k, v in t.items()}


def answering(t: dict[str, Any], within: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The pairs (of ``within``) each set of rules is fitted on: those it answers. The known rules answer
    two photos of models in the gallery that are not flagged; the open rules every pair with a photo
    flagged unknown, whether its model is in the gallery (a hard photo) or not. A set whose pairs
    lack an outcome at some level (a tiny validation split) is fitted on its mode's pairs instead;
    the third value names those sets."""
    known, flag = t["mode"] == "known", t["flag"]
    out, fell_back = [], []
    for name, m, fallback in (("known", within & known & ~flag, within & known),
                              ("open", within & flag, within & ~known)):
        y = t["y"][m]
        ok = len(y) and y.any(0).all() and not y.all(0).any()
        out.append(m if ok else fallback)
        fell_back += [] if ok else [name]
    return out[0], out[1], fell_back
