"""Accuracy grids of finished runs: ``heatmap`` of one task's cells, one figure per evaluated task and
settings (``grid_figures``), written by ``plot_run``."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from arith.eval.grid import BASE_COLUMNS
from arith.plots.common import _OUTLINE, _results, _run_info, _spec, _title, _train_region, save_figure

ANNOTATE_MAX = 30  # annotate every cell with its value when the grid is at most this many cells a side
_CMAP = "viridis"


def _records(df) -> list[dict]:
    """Accept a list of row dicts or anything with ``to_dict("records")`` (a pandas DataFrame)."""
    if hasattr(df, "to_dict"):
        return list(df.to_dict("records"))
    return list(df)


def _matrix(rows: list[dict], value: str) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """Value x 100 on a dense (a_len, b_len) grid spanning the rows; cells without a row are NaN."""
    a_lo = min(r["a_len"] for r in rows)
    a_hi = max(r["a_len"] for r in rows)
    b_lo = min(r["b_len"] for r in rows)
    b_hi = max(r["b_len"] for r in rows)
    grid = np.full((a_hi - a_lo + 1, b_hi - b_lo + 1), np.nan)  # (a, b)
    for r in rows:
        v = r.get(value)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            grid[r["a_len"] - a_lo, r["b_len"] - b_lo] = 100.0 * float(v)
    return grid, (a_lo, a_hi), (b_lo, b_hi)


def heatmap(
    ax: Axes,
    df_task,
    value: str = "acc",
    train_region: tuple[int, int] | None = None,
    title: str | None = None,
    annotate: bool | None = None,
):
    """Draw one task's grid of ``value`` x 100 on ``ax``: a_len up the y axis, b_len along x, scale 0-100.

    ``df_task``: rows of a single task (dicts with a_len, b_len and ``value``, or a DataFrame).
    ``train_region=(n, m)`` outlines the cells 1..n x 1..m the model was trained on. ``annotate=None`` writes
    each cell's integer value when the grid is at most ``ANNOTATE_MAX`` a side; True/False force it.
    Returns the image, for a colour bar.
    """
    rows = _records(df_task)
    if not rows:
        raise ValueError("heatmap: no rows to plot")
    tasks = {r.get("task") for r in rows}
    task = tasks.pop() if len(tasks) == 1 else None
    grid, (a_lo, a_hi), (b_lo, b_hi) = _matrix(rows, value)

    cmap = matplotlib.colormaps[_CMAP].with_extremes(bad="#dddddd")  # missing cells in light grey
    extent = (b_lo - 0.5, b_hi + 0.5, a_lo - 0.5, a_hi + 0.5)  # cell (a, b) centred on integer coordinates
    im = ax.imshow(
        grid,
        origin="lower",
        extent=extent,
        cmap=cmap,
        vmin=0,
        vmax=100,
        aspect="auto",
        interpolation="nearest",
    )
    ylabel, xlabel = _spec(task).axis_labels
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if title is not None:
        ax.set_title(title)

    if annotate is None:
        annotate = max(grid.shape) <= ANNOTATE_MAX
    if annotate:
        size = max(4.0, min(9.0, 200.0 / max(grid.shape)))
        for i, j in zip(*np.nonzero(~np.isnan(grid))):
            v = grid[i, j]
            colour = "black" if v >= 60 else "white"  # viridis is light at the top of the scale
            ax.text(b_lo + j, a_lo + i, f"{round(v)}", ha="center", va="center", fontsize=size, color=colour)

    if train_region is not None:
        n, m = train_region
        # clip to the plotted range so the outline never stretches the axes
        x0, x1 = max(0.5, extent[0]), min(m + 0.5, extent[1])
        y0, y1 = max(0.5, extent[2]), min(n + 0.5, extent[3])
        if x1 > x0 and y1 > y0:
            ax.add_patch(
                Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=_OUTLINE, linewidth=2.0, zorder=3)
            )
    return im


def settings_columns(rows: list[dict]) -> list[str]:
    """The CSV columns beyond the base ones that are not results (``X_correct``, ``X_acc``): what a row was
    made with (the checkpoint, the evaluation settings), whatever columns the CSVs carry."""
    columns = dict.fromkeys(c for r in rows for c in r)
    return [c for c in columns if c not in BASE_COLUMNS and not c.endswith(("_correct", "_acc"))]


@dataclass
class GridFigure:
    stem: str  # file name without suffix: heatmap_<task>, or heatmap_<task>_<i> when settings differ
    task: str
    settings: dict  # settings column -> value shared by the rows (None: not recorded)
    rows: list[dict]
    figure: Figure


def grid_figures(run_dir: str | os.PathLike) -> list[GridFigure]:
    """One heatmap figure per evaluated task and distinct settings (see ``settings_columns``).

    Sorting gets exact match and first-label accuracy side by side. Raises ``DataError`` when the run has no
    evaluation results.
    """
    run_dir = Path(run_dir)
    rows = _results(run_dir)
    info = _run_info(run_dir)
    columns = settings_columns(rows)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], *(str(r.get(c)) for c in columns)), []).append(r)
    figures = []
    for task in sorted({r["task"] for r in rows}):
        keys = sorted(k for k in groups if k[0] == task)
        for i, key in enumerate(keys):
            task_rows = groups[key]
            settings = {c: task_rows[0].get(c) for c in columns}
            stem = f"heatmap_{task}" + (f"_{i}" if len(keys) > 1 else "")
            figures.append(
                GridFigure(stem, task, settings, task_rows, _grid_figure(task, task_rows, info, settings))
            )
    return figures


def settings_text(settings: dict) -> str:
    """E.g. ``step=4281 · k=5``; settings not recorded are left out."""
    return " · ".join(f"{c}={v}" for c, v in settings.items() if v is not None)


def _grid_figure(task: str, task_rows: list[dict], info: dict, settings: dict) -> Figure:
    panels = {"acc": "exact match", **_spec(task).extra_panels}
    values = [v for v in panels if v == "acc" or any(r.get(v) is not None for r in task_rows)]
    grid, _, _ = _matrix(task_rows, "acc")
    side = min(9.0, max(4.5, 0.25 * max(grid.shape) + 2.0))  # room for the numbers on annotated grids
    fig = Figure(figsize=(side * 1.2 * len(values), side + 0.6), layout="constrained")
    axes = fig.subplots(1, len(values), squeeze=False)[0]
    region = _train_region(task, info)
    for ax, value in zip(axes, values):
        im = heatmap(ax, task_rows, value=value, train_region=region, title=f"{panels[value]} (%)")
        fig.colorbar(im, ax=ax, shrink=0.85)
    # about 11 characters an inch at fontsize 11: the settings wrap at " · " instead of running off the figure
    width = int(fig.get_figwidth() * 11)
    lines = [_title(task, info), info["name"], *_wrapped(settings_text(settings), width)]
    fig.suptitle("\n".join(line for line in lines if line), fontsize=11)
    return fig


def _wrapped(text: str, width: int, sep: str = " · ") -> list[str]:
    """`text` cut into lines of at most `width` characters at `sep` (a longer single item keeps its line)."""
    lines: list[str] = []
    for part in text.split(sep) if text else []:
        if lines and len(lines[-1]) + len(sep) + len(part) <= width:
            lines[-1] += sep + part
        else:
            lines.append(part)
    return lines


def plot_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    formats: Sequence[str] = ("png", "pdf"),
) -> list[Path]:
    """Every figure of ``grid_figures``: ``heatmap_<task>.png`` and ``.pdf`` in ``out_dir`` (default: the run
    dir); returns the paths. Raises ``DataError`` when the run has no evaluation results."""
    out = Path(run_dir if out_dir is None else out_dir)
    return [p for f in grid_figures(run_dir) for p in save_figure(f.figure, out / f.stem, formats)]
