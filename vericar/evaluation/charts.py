"""The evaluation report's figures, drawn with matplotlib (Agg: no display) and returned as PNG bytes.

Each function takes plain tables or arrays and draws one figure; nothing here knows a recognizer.
``reliability_panel`` is the one reliability diagram: benchmarks/reliability.py draws with it too.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: a server or a CLI has no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

DPI = 100
MIN_BIN = 5  # reliability bins with fewer photos say little and are not drawn


def to_png(fig: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed (pyplot keeps every open one)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def reliability_panel(ax: Any, curves: Sequence[tuple[Sequence[Sequence[float]], str, str]], title: str) -> None:
    """One reliability diagram on ``ax``: each curve is (bins of ``calibration_fit.reliability``, line
    style, legend label); bins with fewer than ``MIN_BIN`` photos are left out."""
    ax.plot([0, 1], [0, 1], ":", color="grey")
    for bins, style, label in curves:
        kept = [b for b in bins if b[2] >= MIN_BIN]
        ax.plot([b[3] for b in kept], [b[4] for b in kept], style, label=label)
    ax.set(title=title, xlabel="confidence", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")


def reliability_figure(levels: dict[str, dict[str, Any]], title: str = "") -> bytes:
    """Accuracy against confidence per level; ``levels[level]`` has ``bins`` and ``ece``."""
    fig, axes = plt.subplots(1, len(levels), figsize=(3.5 * len(levels), 3.6), squeeze=False)
    for ax, (level, f) in zip(axes[0], levels.items()):
        reliability_panel(ax, [(f["bins"], "o-", f"ECE {100 * f['ece']:.1f}%")], level)
    axes[0][0].set_ylabel("accuracy")
    if title:
        fig.suptitle(title, fontsize=9)
    return to_png(fig)


def sorted_bars(names: Sequence[str], values: Sequence[float], *, xlabel: str, title: str,
                counts: Sequence[int] | None = None) -> bytes:
    """Horizontal bars, lowest value at the top (where the problems are); a count beside each bar if given."""
    order = np.argsort(np.asarray(values, dtype=float), kind="stable")
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.16 * len(names)))
    y = np.arange(len(order))
    vals = np.asarray(values, dtype=float)[order]
    ax.barh(y, vals, color=plt.cm.RdYlGn(np.clip(vals, 0, 1)), height=0.8)
    ax.set_yticks(y, [names[i] for i in order], fontsize=6 if len(names) > 60 else 8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.08 if counts is not None else 1), xlabel=xlabel, title=title)
    ax.margins(y=0.002)
    if counts is not None:
        for yy, i in zip(y, order):
            ax.text(min(vals[yy] + 0.01, 1.0), yy, str(counts[i]), va="center", fontsize=6, color="#444")
    ax.grid(axis="x", alpha=0.3)
    return to_png(fig)


def confusion_figure(matrix: np.ndarray, labels: Sequence[str], *, title: str, annotate: bool) -> bytes:
    """A confusion matrix (rows: true, columns: answered) on a log colour scale. ``annotate``: the count
    in each non-empty cell and every tick labelled (for a few dozen classes); otherwise an image."""
    n = len(labels)
    size = min(16.0, max(6.0, 3 + 0.22 * n)) if annotate else 11.0
    fig, ax = plt.subplots(figsize=(size, size))
    shown = np.where(matrix > 0, matrix, np.nan)
    im = ax.imshow(shown, cmap="viridis", norm=LogNorm(vmin=1, vmax=max(2, int(matrix.max()))),
                   interpolation="nearest")
    if annotate:
        ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(n), labels, fontsize=7)
        for i, j in zip(*np.nonzero(matrix)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=5,
                    color="black" if matrix[i, j] > matrix.max() / 4 else "white")
    else:
        ax.set(xticks=[], yticks=[])
    ax.set(xlabel="answered", ylabel="true", title=title)
    bar = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="photos")
    for axis in (bar.ax.yaxis.set_major_formatter, bar.ax.yaxis.set_minor_formatter):  # 2, 3 rather than 2×10⁰
        axis(FuncFormatter(lambda v, _: f"{v:g}"))
    return to_png(fig)


def score_histograms(known: np.ndarray, unknown: np.ndarray, threshold: float | None) -> bytes:
    """Unknown-score histograms of known and unknown vehicles, with the threshold that flags one."""
    known, unknown = (np.asarray(a, dtype=float) for a in (known, unknown))
    known, unknown = known[np.isfinite(known)], unknown[np.isfinite(unknown)]  # inf: no vehicle found
    fig, ax = plt.subplots(figsize=(7, 3.4))
    both = np.concatenate([known, unknown])
    bins = np.linspace(both.min(), both.max(), 40) if both.size else 10
    ax.hist(known, bins=bins, alpha=0.6, density=True, label=f"known vehicles ({known.size})")
    ax.hist(unknown, bins=bins, alpha=0.6, density=True, label=f"unknown vehicles ({unknown.size})")
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="unknown score (higher = more unknown)", ylabel="density", title="Unknown score")
    ax.legend(fontsize=8)
    return to_png(fig)


def count_bars(names: Sequence[str], counts: Sequence[int], *, title: str, ylabel: str = "photos") -> bytes:
    """Vertical bars in the given order (a class distribution, detection outcomes)."""
    fig, ax = plt.subplots(figsize=(min(14, 3 + 0.06 * len(names)) if len(names) > 20 else 6, 3.4))
    ax.bar(range(len(names)), counts, color="#4C72B0", width=0.85)
    if len(names) <= 20:
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    else:
        ax.set(xticks=[], xlabel=f"{len(names)} classes, fewest photos first")
    ax.set(ylabel=ylabel, title=title)
    return to_png(fig)
