"""What every figure shares: writing it (``save_figure``, the Agg canvas), a task's spec, and the few
values of a run's config and results that titles, outlines and labels are drawn from."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from arith.data.spec import TaskSpec
from arith.data.tasks import TASKS
from arith.errors import DataError
from arith.eval.grid import read_results

_OUTLINE = "#ff3030"  # red stands out against every colour of viridis


def _spec(task: str | None):
    """The task's spec; the default answers for rows of no single (or an unknown) task."""
    return TASKS.get(task, TaskSpec)


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
