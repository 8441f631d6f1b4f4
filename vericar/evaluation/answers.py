"""What each query was answered, as one table: the rows every per-class figure of the report is drawn from.

``level_answer`` is the answer the product shows at a level (the per-level k-NN vote, or the label's
own value where the label set is flat); ``evaluate_embeddings`` scores top-1 with it, and
``query_table`` keeps it per photo beside the truth, the confidences and the unknown score.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from vericar.search.taxonomy import LEVELS, Taxonomy

CONFIDENCE_PREFIX = "conf_"  # conf_model, conf_make, ...: the calibrated confidence shown at each level


def level_answer(pred: Any, level: str, taxonomy: Taxonomy) -> str | None:
    """The answer shown at ``level``: the vote's value, or the label's own where the vote gave none;
    None where no vehicle was found."""
    if level == "model" or pred.label is None:  # None: no vehicle found
        return pred.label
    value = getattr(pred, level)
    return value if value is not None else taxonomy.level_value(pred.label, level)


def query_table(files: Sequence[str], truth: Sequence[str], preds: Sequence[Any], known: Sequence[bool],
                mains: Sequence[Any] | None = None) -> pd.DataFrame:
    """One row per query: ``file``, ``known`` (its class is in the gallery), ``true_<level>`` and
    ``pred_<level>`` for every level (None: no vehicle found), ``conf_<level>``, ``unknown`` (flagged),
    ``ood_score`` and, when a detector ran, ``detected`` (a sure vehicle was found)."""
    if not len(files) == len(truth) == len(preds) == len(known):
        raise ValueError(f"{len(files)} files, {len(truth)} labels, {len(preds)} answers and {len(known)} "
                         "known flags; give one of each per query.")
    taxonomy = Taxonomy.from_labels(sorted(set(truth) | {p.label for p in preds if p.label is not None}))
    rows = []
    for i, (f, t, p, k) in enumerate(zip(files, truth, preds, known)):
        row: dict[str, Any] = {"file": f, "known": bool(k)}
        for level in LEVELS:
            row[f"true_{level}"] = taxonomy.level_value(t, level)
            row[f"pred_{level}"] = level_answer(p, level, taxonomy)
            row[f"{CONFIDENCE_PREFIX}{level}"] = float(p.confidence.get(level, 0.0)) if p.confidence else 0.0
        row["unknown"] = bool(p.unknown)
        row["ood_score"] = float(p.ood_score) if p.ood_score is not None else float("nan")
        if mains is not None:
            r = mains[i]
            row["detected"] = bool(r is not None and not r.tentative)
        rows.append(row)
    return pd.DataFrame(rows)
