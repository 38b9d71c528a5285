"""Accuracy against operand length: one line per run (``plot_compare``), or a seed group's mean and
min-max band (``plot_groups``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from arith.errors import DataError
from arith.plots.common import _results, _run_info, _run_name, _train_region, save_figure


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
