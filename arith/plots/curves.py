"""Training curves from metrics.jsonl: one panel per logged metric of ``CURVES``, against the step."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from arith.plots.common import save_figure

# (metrics key, panel title, log y axis); a panel is drawn when some run logged its key
CURVES = (
    ("loss", "loss", True),
    ("lr", "learning rate", False),
    ("tokens_per_s", "tokens / s", False),
    ("grad_norm", "gradient norm (before clipping)", False),
    ("emb_max_abs", "largest |entry| of the embedding tables", False),
    ("select_mean", "selection accuracy", False),
)


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows that logged a number under ``key``: training and selection rows share
    metrics.jsonl, each kind with its own keys."""
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and "step" in r]
    return [s for s, _ in points], [float(v) for _, v in points]


def plot_curves(
    histories: dict[str, list[dict]], out: str | os.PathLike, formats: Sequence[str] = ("png", "pdf")
) -> list[Path]:
    """``curves_figure`` written to ``out``.png/.pdf; [] when no run logged anything."""
    fig = curves_figure(histories)
    return [] if fig is None else save_figure(fig, Path(out), formats)


def curves_figure(histories: dict[str, list[dict]]) -> Figure | None:
    """Training curves against the step, one panel per metric of ``CURVES`` that was logged, one colour per
    run (``histories`` maps a label to its metrics.jsonl rows, ``arith.metrics.read_metrics``). With a single
    run the selection panel also draws each selection length. None when no run logged anything."""
    panels = [c for c in CURVES if any(_series(rows, c[0])[0] for rows in histories.values())]
    if not panels:
        return None
    cols = 2 if len(panels) > 1 else 1
    n_rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5.5 * cols, 3.0 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, cols, squeeze=False).ravel()
    for ax, (key, title, log) in zip(axes, panels):
        for i, (label, rows) in enumerate(histories.items()):
            steps, values = _series(rows, key)
            single = len(histories) == 1
            if key == "select_mean" and single:
                _selection_lengths(ax, rows)
            ax.plot(
                steps,
                values,
                color="black" if key == "select_mean" and single else f"C{i % 10}",
                linewidth=1.6 if key == "select_mean" else 1.2,
                marker="o" if len(steps) < 30 else None,
                markersize=3,
                label="mean" if key == "select_mean" and single else label,
            )
        if log:
            ax.set_yscale("log")
            # plain numbers (2, 0.5), on the minor ticks too when the curve spans less than a decade or so
            ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
            ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(histories) > 1 or key == "select_mean":
            ax.legend(fontsize=7, loc="best")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if len(histories) == 1:
        fig.suptitle(next(iter(histories)), fontsize=11)
    return fig


def _selection_lengths(ax: Axes, rows: list[dict]) -> None:
    """One thin line per selection length of the rows' ``select`` dicts (length -> accuracy)."""
    lengths = sorted(
        {k for r in rows if isinstance(r.get("select"), dict) for k in r["select"]}, key=_length_key
    )
    for j, length in enumerate(lengths):
        points = [
            (r["step"], float(r["select"][length]))
            for r in rows
            if isinstance(r.get("select"), dict) and r["select"].get(length) is not None
        ]
        ax.plot(
            [s for s, _ in points],
            [v for _, v in points],
            color=f"C{j % 10}",
            linewidth=0.9,
            alpha=0.8,
            label=f"L={length}",
        )


def _length_key(length: str):
    return (0, int(length)) if str(length).isdigit() else (1, str(length))
