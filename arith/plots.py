"""The one heatmap module: accuracy grids of finished runs, titled from each run's own config.

    from arith.plots import plot_run, plot_compare
    plot_run("runs/addition20_abacus-none_2x8_w1024_s0")           # heatmap_<task>.png/.pdf in the run dir
    plot_compare([run_a, run_b], Path("runs/compare"))             # compare.png/.pdf: accuracy vs length

Figures are built on matplotlib's ``Figure`` with the Agg canvas, never through pyplot, so nothing here
opens a window or touches global state. Results come from ``arith.eval.grid.read_results``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from arith.errors import DataError
from arith.eval.grid import read_results

ANNOTATE_MAX = 30  # annotate every cell with its value when the grid is at most this many cells a side
_CMAP = "viridis"
_OUTLINE = "#ff3030"  # red stands out against every colour of viridis
_VALUE_LABELS = {"acc": "exact match", "first_acc": "first label right"}


def _records(df) -> list[dict]:
    """Accept a list of row dicts or anything with ``to_dict("records")`` (a pandas DataFrame)."""
    if hasattr(df, "to_dict"):
        return list(df.to_dict("records"))
    return list(df)


def _axis_labels(task: str | None) -> tuple[str, str]:
    """(y label for a_len, x label for b_len)."""
    if task == "sorting":
        return "max digits", "array length"
    return "length of operand 1", "length of operand 2"


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
    ylabel, xlabel = _axis_labels(task)
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


# ----------------------------------------------------------------------------------------------------------------
# run config


def _run_info(run_dir: Path) -> dict:
    """The few config values the plots use, from ``<run_dir>/config.yaml``; missing keys are ``None``."""
    keys = {
        "task": "data.task",
        "max_len": "data.max_len",
        "max_len_b": "data.max_len_b",
        "name": "name",
        "abs_pos": "model.abs_pos",
        "rel_pos": "model.rel_pos",
        "layers": "model.layers",
        "recurrences": "model.recurrences",
        "injection": "model.input_injection",
    }
    info: dict = dict.fromkeys(keys)
    path = run_dir / "config.yaml"
    if path.is_file():
        from omegaconf import OmegaConf

        try:
            cfg = OmegaConf.load(path)
        except Exception:  # an unreadable config only costs the title, never the plot
            cfg = None
        for short, key in keys.items():
            try:
                v = (
                    OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
                    if cfg
                    else None
                )
            except Exception:
                v = None
            info[short] = getattr(v, "value", v)
    if info["max_len"] is not None and info["max_len_b"] is None:
        info["max_len_b"] = info["max_len"]
    return info


def _run_name(run_dir: Path, info: dict) -> str:
    return str(info["name"]) if info["name"] else run_dir.resolve().name


def _title(task: str, info: dict) -> str:
    """E.g. ``addition · abacus/none · 2x8 inj=add · trained ≤20``."""
    parts = [task]
    if info["abs_pos"] is not None or info["rel_pos"] is not None:
        parts.append(f"{info['abs_pos'] or 'none'}/{info['rel_pos'] or 'none'}")
    if info["layers"] is not None:
        arch = f"{info['layers']}x{info['recurrences'] if info['recurrences'] is not None else 1}"
        if info["injection"] is not None:
            arch += f" inj={info['injection']}"
        parts.append(arch)
    if info["max_len"] is not None and info["task"] == task:
        n, m = info["max_len"], info["max_len_b"]
        parts.append(f"trained ≤{n}" if n == m and task != "sorting" else f"trained ≤{n}x{m}")
    return " · ".join(parts)


def _train_region(task: str, info: dict) -> tuple[int, int] | None:
    if info["max_len"] is None or info["task"] != task:
        return None  # no config, or evaluated on a task the run was not trained on
    return int(info["max_len"]), int(info["max_len_b"])


def _settings_note(rows: list[dict]) -> str:
    """A title line ``checkpoint 3231 (ema) · k=5 · r=6 · vote 0 3 5 (answer)``: how the plotted rows were made
    (read_results keeps one setting together); empty for CSVs written before settings were recorded."""
    r = rows[0]
    if r.get("checkpoint") is None:
        return ""
    parts = [
        f"checkpoint {r['checkpoint']} ({r.get('weights')})",
        f"k={r.get('k')}",
        f"r={r.get('recurrences')}",
    ]
    if r.get("vote_ks"):
        parts.append(f"vote {r['vote_ks']} ({r.get('vote_mode')})")
    if r.get("attn_scale") not in (None, 1.0) or r.get("attn_scale_mode") == "log":
        parts.append(f"attn x{r['attn_scale']:g} {r.get('attn_scale_mode')} {r.get('attn_scale_where')}")
    return "\n" + " · ".join(parts)


def _save(fig: Figure, stem: Path) -> list[Path]:
    FigureCanvasAgg(fig)  # attach the Agg canvas explicitly: no pyplot, no backend switching
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")]
    stem.parent.mkdir(parents=True, exist_ok=True)
    for p in paths:
        fig.savefig(p, dpi=120)
    return paths


def _results(run_dir: Path) -> list[dict]:
    rows = read_results(run_dir)
    if not rows:
        raise DataError(f"{run_dir}: no evaluation results (no CSV rows under {run_dir / 'eval'})")
    return rows


# ----------------------------------------------------------------------------------------------------------------
# figures


def plot_run(run_dir: str | os.PathLike) -> list[Path]:
    """One figure per evaluated task: ``<run_dir>/heatmap_<task>.png`` and ``.pdf``; returns the paths.

    Sorting gets exact match and first-label accuracy side by side. Raises ``DataError`` when the run has no
    evaluation results.
    """
    run_dir = Path(run_dir)
    rows = _results(run_dir)
    info = _run_info(run_dir)
    written: list[Path] = []
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        values = ["acc"]
        if task == "sorting" and any(r.get("first_acc") is not None for r in task_rows):
            values.append("first_acc")
        grid, _, _ = _matrix(task_rows, "acc")
        side = min(9.0, max(4.5, 0.25 * max(grid.shape) + 2.0))  # room for the numbers on annotated grids
        fig = Figure(figsize=(side * 1.2 * len(values), side + 0.6), layout="constrained")
        axes = fig.subplots(1, len(values), squeeze=False)[0]
        region = _train_region(task, info)
        for ax, value in zip(axes, values):
            im = heatmap(ax, task_rows, value=value, train_region=region, title=f"{_VALUE_LABELS[value]} (%)")
            fig.colorbar(im, ax=ax, shrink=0.85)
        name = info["name"]
        fig.suptitle(
            _title(task, info) + (f"\n{name}" if name else "") + _settings_note(task_rows), fontsize=11
        )
        written += _save(fig, run_dir / f"heatmap_{task}")
    return written


def _accuracy_by_length(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Mean accuracy (x 100) over the cells with ``max(a_len, b_len) == L``, for every L present.

    On a square grid plus diagonal sizes beyond it, the lengths past the square are the diagonal cells alone.
    """
    by_len: dict[int, list[float]] = {}
    for r in rows:
        if r.get("acc") is not None:
            by_len.setdefault(max(r["a_len"], r["b_len"]), []).append(100.0 * float(r["acc"]))
    lengths = np.array(sorted(by_len))
    return lengths, np.array([np.mean(by_len[L]) for L in lengths])


def plot_compare(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike) -> list[Path]:
    """Accuracy against operand length, one line per run, its training length dashed; ``out``.png/.pdf.

    Each run contributes its training task (from its config; without one, the task it has most rows for).
    """
    out = Path(out)
    if out.suffix in (".png", ".pdf"):
        out = out.with_suffix("")
    fig = Figure(figsize=(8.0, 4.8), layout="constrained")
    ax = fig.subplots()
    colours = [f"C{i % 10}" for i in range(len(run_dirs))]
    tasks = set()
    for run_dir, colour in zip(map(Path, run_dirs), colours):
        rows = _results(run_dir)
        info = _run_info(run_dir)
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["task"]] = counts.get(r["task"], 0) + 1
        task = info["task"] if info["task"] in counts else max(sorted(counts), key=counts.get)
        tasks.add(task)
        lengths, acc = _accuracy_by_length([r for r in rows if r["task"] == task])
        label = _run_name(run_dir, info) + (f" ({task})" if info["task"] != task else "")
        ax.plot(lengths, acc, marker="o", markersize=2.5, linewidth=1.5, color=colour, label=label)
        region = _train_region(task, info)
        if region is not None:
            ax.axvline(max(region), color=colour, linestyle="--", linewidth=1.0, alpha=0.8)
    _length_axes(ax, " / ".join(sorted(tasks)) + " · dashed: training length")
    return _save(fig, out)


def _length_axes(ax: Axes, title: str) -> None:
    """Labels, limits, grid and legend of an accuracy-against-length plot."""
    ax.set_xlabel("operand length (max of the two)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title)


def plot_groups(groups: dict[str, Sequence[str | os.PathLike]], out: str | os.PathLike) -> list[Path]:
    """Seed groups against operand length: the mean over a group's runs as a line, their min-max as a band.

    ``groups`` maps a label to its run directories (each scored on its own training task, lengths every run of
    the group evaluated); the first run's training length is drawn dashed. Writes ``out``.png/.pdf.
    """
    out = Path(out)
    if out.suffix in (".png", ".pdf"):
        out = out.with_suffix("")
    fig = Figure(figsize=(8.0, 4.8), layout="constrained")
    ax = fig.subplots()
    tasks = set()
    for i, (label, runs) in enumerate(groups.items()):
        colour = f"C{i % 10}"
        curves, infos = [], []
        for run_dir in map(Path, runs):
            info = _run_info(run_dir)
            infos.append(info)
            rows = [r for r in _results(run_dir) if r["task"] == info["task"]]
            if not rows:
                raise DataError(f"{run_dir}: no evaluation results for its training task {info['task']}")
            tasks.add(info["task"])
            curves.append(dict(zip(*_accuracy_by_length(rows))))
        lengths = sorted(set.intersection(*(set(c) for c in curves)))
        acc = np.array([[c[L] for L in lengths] for c in curves])
        ax.plot(
            lengths,
            acc.mean(0),
            marker="o",
            markersize=2.5,
            linewidth=1.5,
            color=colour,
            label=f"{label} (n={len(curves)})",
        )
        if len(curves) > 1:
            ax.fill_between(lengths, acc.min(0), acc.max(0), color=colour, alpha=0.15, linewidth=0)
        region = _train_region(infos[0]["task"], infos[0])
        if region is not None:
            ax.axvline(max(region), color=colour, linestyle="--", linewidth=1.0, alpha=0.8)
    _length_axes(
        ax, " / ".join(sorted(tasks)) + " · line: mean over seeds, band: min-max · dashed: training length"
    )
    return _save(fig, out)
