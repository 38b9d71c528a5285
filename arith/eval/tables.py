"""Seed tables: score finished runs at 1x/2x/3x/5x their training length and summarize groups of seeds.

    from arith.eval.tables import group_runs, markdown_table
    print(markdown_table(group_runs(["runs/r_abacus_s0", "runs/r_abacus_s1", "runs/r_nope_s0"])))

A run's scores come from its evaluation CSVs (``arith.eval.grid.read_results``) and its ``config.yaml``
(task, ``data.max_len``, ``data.max_len_b``):

- ``in_dist``: mean accuracy over the evaluated cells inside the training region (a <= max_len, b <= max_len_b);
- ``x2``, ``x3``, ``x5``: accuracy of the cell (k * max_len, k * max_len_b), ``None`` where it was not evaluated;
- ``near``: mean accuracy over the evaluated diagonal cells (l, l) with max_len < l <= 2 * max_len, the first
  lengths past training, where differences between schemes show before everything falls to 0;
- ``reach``: the largest L such that every evaluated diagonal cell (l, l) with l <= L has accuracy >= 90%.

Runs named ``<group>_s<seed>`` form one group; a group's cell reads ``mean (min-max)`` over its seeds.

``run_cost`` adds what a run cost to train, for comparisons at a fixed wall-clock budget: parameters of the
rebuilt model (a tied matrix counts once), optimizer steps and seconds at the last checkpoint, and from
``metrics.jsonl`` the last logged loss and the largest logged ``emb_max_abs``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arith.errors import DataError
from arith.eval.grid import read_results

MULTIPLES = (2, 3, 5)
REACH_THRESHOLD = 0.9
_SEED = re.compile(r"_s\d+$")


@dataclass(frozen=True)
class RunScores:
    path: Path  # the run directory as given
    name: str
    task: str
    trained: tuple[int, int]
    in_dist: float | None
    near: float | None  # mean over diagonal cells (l, l), n < l <= 2n
    at: dict[int, float | None]  # multiple -> accuracy of the cell (k*n, k*m)
    reach: int
    diagonal: dict[int, float]  # L -> accuracy of the cell (L, L), for every evaluated L


def _trained(run: Path) -> tuple[str, int, int]:
    from omegaconf import OmegaConf

    path = run / "config.yaml"
    if not path.is_file():
        raise DataError(f"{run}: no config.yaml, so no training length to score against")
    data = OmegaConf.load(path).get("data") or {}
    task, n, m = data.get("task"), data.get("max_len"), data.get("max_len_b")
    if task is None or n is None:
        raise DataError(f"{path}: data.task and data.max_len are needed to score the run")
    return str(task), int(n), int(m if m is not None else n)


def score_run(run_dir: str | os.PathLike, multiples: Sequence[int] = MULTIPLES) -> RunScores:
    """Scores of one run on its own training task (see the module docstring)."""
    run = Path(run_dir)
    task, n, m = _trained(run)
    rows = [r for r in read_results(run) if r["task"] == task and r.get("acc") is not None]
    if not rows:
        raise DataError(f"{run}: no evaluation results for its task {task} under {run / 'eval'}")
    cells = {(r["a_len"], r["b_len"]): float(r["acc"]) for r in rows}
    inside = [acc for (a, b), acc in cells.items() if a <= n and b <= m]
    near = [acc for (a, b), acc in cells.items() if a == b and n < a <= 2 * n and m < b <= 2 * m]
    reach = 0
    for length in sorted(a for a, b in cells if a == b):
        if cells[(length, length)] < REACH_THRESHOLD:
            break
        reach = length
    return RunScores(
        path=run,
        name=run.resolve().name,
        task=task,
        trained=(n, m),
        in_dist=float(np.mean(inside)) if inside else None,
        near=float(np.mean(near)) if near else None,
        at={k: cells.get((k * n, k * m)) for k in multiples},
        reach=reach,
        diagonal={a: acc for (a, b), acc in sorted(cells.items()) if a == b},
    )


@dataclass(frozen=True)
class RunCost:
    params: int
    steps: int
    seconds: float
    final_loss: float | None  # last logged training loss
    emb_max_abs: float | None  # largest logged max-abs entry of the embedding tables

    @property
    def ms_per_step(self) -> float:
        return 1000.0 * self.seconds / max(self.steps, 1)


def run_cost(run_dir: str | os.PathLike) -> RunCost:
    """Training cost of a finished run (see the module docstring); raises when it has no checkpoint."""
    from arith import checkpoint
    from arith.metrics import read_metrics
    from arith.runs import load

    run = load(run_dir)
    state = checkpoint.load_trainer_state(checkpoint.latest(run.run_dir))
    loss = emb = None
    for record in read_metrics(run_dir):
        loss = record.get("loss", loss)
        if record.get("emb_max_abs") is not None:
            emb = max(emb or 0.0, float(record["emb_max_abs"]))
    return RunCost(
        params=run.model.num_params(),
        steps=int(state["step"]),
        seconds=float(state["elapsed"]),
        final_loss=None if loss is None else float(loss),
        emb_max_abs=emb,
    )


def group_runs(run_dirs: Iterable[str | os.PathLike]) -> dict[str, list[RunScores]]:
    """Score every run and group them by name without the ``_s<seed>`` suffix, in first-seen order."""
    groups: dict[str, list[RunScores]] = {}
    for run in run_dirs:
        scores = score_run(run)
        groups.setdefault(_SEED.sub("", scores.name), []).append(scores)
    return groups


def _cell(values: Sequence[float | None], percent: bool = True) -> str:
    """``mean (min-max)`` of the known values (x 100 when ``percent``); the mean alone when they all agree."""
    known = [v for v in values if v is not None]
    if not known:
        return "–"
    scale = 100.0 if percent else 1.0
    mean, lo, hi = (scale * float(f(known)) for f in (np.mean, np.min, np.max))
    text = f"{mean:.0f}" if percent or mean == round(mean) else f"{mean:.1f}"
    if f"{lo:.0f}" == f"{hi:.0f}":
        return text
    return f"{text} ({lo:.0f}–{hi:.0f})"


def markdown_table(groups: dict[str, list[RunScores]], multiples: Sequence[int] = MULTIPLES) -> str:
    """One row per group: seeds, in-distribution, (1x, 2x] mean and per-multiple accuracy (%), 90% reach."""
    head = ["runs", "seeds", "in-dist", "(1x, 2x] mean", *(f"{k}x" for k in multiples), "≥90% up to"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, runs in groups.items():
        row = [
            f"{group} ({runs[0].task} ≤{_size(runs[0].trained)})",
            str(len(runs)),
            _cell([r.in_dist for r in runs]),
            _cell([r.near for r in runs]),
            *(_cell([r.at.get(k) for r in runs]) for k in multiples),
            _cell([float(r.reach) for r in runs], percent=False),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def per_run_table(
    groups: dict[str, list[RunScores]], multiples: Sequence[int] = MULTIPLES, cost: bool = False
) -> str:
    """One row per run (the numbers behind ``markdown_table``); ``cost`` adds the ``run_cost`` columns."""
    head = ["run", "in-dist", "(1x, 2x] mean", *(f"{k}x" for k in multiples), "≥90% up to"]
    if cost:
        head += ["params", "steps", "ms/step", "final loss", "max abs emb"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for runs in groups.values():
        for r in runs:
            row = [
                r.name,
                _cell([r.in_dist]),
                _cell([r.near]),
                *(_cell([r.at.get(k)]) for k in multiples),
                str(r.reach),
            ]
            if cost:
                c = run_cost(r.path)
                row += [
                    f"{c.params / 1e3:.1f}k",
                    str(c.steps),
                    f"{c.ms_per_step:.0f}",
                    "–" if c.final_loss is None else f"{c.final_loss:.2g}",
                    "–" if c.emb_max_abs is None else f"{c.emb_max_abs:.2f}",
                ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def diagonal_table(groups: dict[str, list[RunScores]], lengths: Sequence[int]) -> str:
    """One row per run: the accuracy (%) of each diagonal cell (L, L) for L in ``lengths`` ("–" if absent)."""
    head = ["run", *map(str, lengths)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for runs in groups.values():
        for r in runs:
            lines.append("| " + " | ".join([r.name, *(_cell([r.diagonal.get(L)]) for L in lengths)]) + " |")
    return "\n".join(lines)


def _size(trained: tuple[int, int]) -> str:
    n, m = trained
    return str(n) if n == m else f"{n}x{m}"
