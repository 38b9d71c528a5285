"""The one plotting module: accuracy grids of finished runs, titled from each run's own config, and training
curves from metrics.jsonl.

    from arith.plots import plot_run, plot_compare, plot_curves
    plot_run("runs/addition20_abacus-none_2x8_w1024_s0")           # heatmap_<task>.png/.pdf in the run dir
    plot_compare([run_a, run_b], Path("runs/compare"))             # compare.png/.pdf: accuracy vs length
    plot_curves({"a": read_metrics(run_a)}, Path("runs/curves"))   # curves.png/.pdf: loss, lr, ... vs step

Figures are built on matplotlib's ``Figure`` with the Agg canvas, never through pyplot, so nothing here
opens a window or touches global state. Results come from ``arith.eval.grid.read_results``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import LogFormatter, MaxNLocator

from arith.data.spec import TaskSpec
from arith.data.tasks import TASKS
from arith.errors import DataError
from arith.eval.grid import BASE_COLUMNS, read_results

ANNOTATE_MAX = 30  # annotate every cell with its value when the grid is at most this many cells a side
_CMAP = "viridis"
_OUTLINE = "#ff3030"  # red stands out against every colour of viridis


def _records(df) -> list[dict]:
    """Accept a list of row dicts or anything with ``to_dict("records")`` (a pandas DataFrame)."""
    if hasattr(df, "to_dict"):
        return list(df.to_dict("records"))
    return list(df)


def _spec(task: str | None):
    """The task's spec; the default answers for rows of no single (or an unknown) task."""
    return TASKS.get(task, TaskSpec)


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


# ----------------------------------------------------------------------------------------------------------------
# run config


def _run_info(run_dir: Path) -> dict:
    """The few config values the plots use, from ``<run_dir>/config.yaml`` (an export folder: the run config in
    its config.json); missing keys are ``None``."""
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
    exported = run_dir / "config.json"
    if path.is_file() or exported.is_file():
        from omegaconf import OmegaConf

        try:
            cfg = (
                OmegaConf.load(path)
                if path.is_file()
                else OmegaConf.create(json.loads(exported.read_text())["run"])
            )
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
            info[short] = v
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
        parts.append(f"trained ≤{n}" if n == m and _spec(task).lengths_alike else f"trained ≤{n}x{m}")
    return " · ".join(parts)


def _train_region(task: str, info: dict) -> tuple[int, int] | None:
    if info["max_len"] is None or info["task"] != task:
        return None  # no config, or evaluated on a task the run was not trained on
    return int(info["max_len"]), int(info["max_len_b"])


def save_figure(fig: Figure, stem: Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """``stem``.png, .pdf (or the ``formats`` given); returns the paths written."""
    FigureCanvasAgg(fig)  # attach the Agg canvas explicitly: no pyplot, no backend switching
    paths = [stem.with_name(f"{stem.name}.{fmt}") for fmt in formats]
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
    lines = [_title(task, info), info["name"], settings_text(settings)]
    fig.suptitle("\n".join(line for line in lines if line), fontsize=11)
    return fig


def plot_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    formats: Sequence[str] = ("png", "pdf"),
) -> list[Path]:
    """Every figure of ``grid_figures``: ``heatmap_<task>.png`` and ``.pdf`` in ``out_dir`` (default: the run
    dir); returns the paths. Raises ``DataError`` when the run has no evaluation results."""
    out = Path(run_dir if out_dir is None else out_dir)
    return [p for f in grid_figures(run_dir) for p in save_figure(f.figure, out / f.stem, formats)]


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


def plot_compare(
    run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, formats: Sequence[str] = ("png", "pdf")
) -> list[Path]:
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
    return save_figure(fig, out, formats)


def _length_axes(ax: Axes, title: str) -> None:
    """Labels, limits, grid and legend of an accuracy-against-length plot."""
    ax.set_xlabel("operand length (max of the two)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title)


def plot_groups(
    groups: dict[str, Sequence[str | os.PathLike]],
    out: str | os.PathLike,
    formats: Sequence[str] = ("png", "pdf"),
) -> list[Path]:
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
    return save_figure(fig, out, formats)


# ----------------------------------------------------------------------------------------------------------------
# training curves (metrics.jsonl)

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


def position_table_stats(table: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(norm of each row 0..rows-1, |cosine| between every pair of them) of a position table (max_pos, width)."""
    t = np.asarray(table[:rows], dtype=np.float64)
    norms = np.linalg.norm(t, axis=1)
    unit = t / np.maximum(norms[:, None], 1e-12)
    return norms, np.abs(unit @ unit.T)


def plot_positions(table: np.ndarray, rows: int, reach: int | None, title: str, out: Path) -> list[Path]:
    """Two panels: each row's norm (with the highest row training reaches marked), and the pairwise |cosine|
    of rows 1..rows-1 (row 0 is the non-digit row). Writes out.png/.pdf."""
    norms, cos = position_table_stats(table, rows)
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    ax_n, ax_c = fig.subplots(1, 2)
    ax_n.plot(np.arange(rows), norms, marker=".", color="#1f77b4")
    if reach is not None:
        ax_n.axvline(reach + 0.5, color=_OUTLINE, linestyle="--", label=f"highest row trained ({reach})")
        ax_n.legend(loc="best")
    ax_n.set_xlabel("position row")
    ax_n.set_ylabel("L2 norm")
    ax_n.set_title("row norms")
    im = ax_c.imshow(cos[1:, 1:], origin="lower", extent=(0.5, rows - 0.5, 0.5, rows - 0.5), vmin=0, vmax=1)
    ax_c.set_xlabel("row")
    ax_c.set_ylabel("row")
    ax_c.set_title("|cosine| between rows")
    fig.colorbar(im, ax=ax_c)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)
