"""Run an evaluation grid for a trained run: cells -> shard -> one CSV row per finished cell."""

from __future__ import annotations

import contextlib
import sys
import time

import torch
from tqdm import tqdm

from arith.data.tasks import get_task, task_for
from arith.dist import pick_device
from arith.errors import ConfigError
from arith.eval import settings as eval_settings
from arith.eval.grid import GridCSV, csv_path, grid_cells, shard_cells
from arith.eval.quick import evaluate_cells
from arith.eval.reach import position_needs, untrained_rows
from arith.runs import load
from arith.schema import EvalAppConfig


def run_grid(cfg: EvalAppConfig, sorting: bool) -> list[dict]:
    """This shard's unfinished cells, evaluated; returns the rows written. sorting: called by sort_eval.py."""
    e = cfg.eval
    device = pick_device("auto").type  # CUDA when a GPU is visible, unless ARITH_DEVICE says otherwise
    for key, value in [("eval.n_per_cell", e.n_per_cell), ("eval.batch_size", e.batch_size)]:
        if value <= 0:
            raise ConfigError(f"{key}={value} must be > 0")
    run = load(
        cfg.run, device, checkpoint=e.checkpoint, weights=None if e.weights is None else str(e.weights)
    )
    task, spec = _task(cfg, run, sorting)
    s = _settings(run, e, spec)
    cells = shard_cells(grid_cells(e.a_lens, e.b_lens, e.square), e.num_shards, e.shard, spec)
    if cells:  # fail before any work when the longest cell does not fit the position table
        a_max, b_max = max(c.a_len for c in cells), max(c.b_len for c in cells)
        position_needs(run.cfg, run.tok, a_max, b_max, training=False, k=max(s.offsets))
    path = csv_path(
        cfg.run,
        task,
        a_lens=e.a_lens,
        b_lens=e.b_lens,
        square=e.square,
        num_shards=e.num_shards,
        shard=e.shard,
        out=e.out,
        tag=s.tag(),
    )
    table = GridCSV(path, extra_columns=spec.extra_columns, settings=s.columns())
    done = table.done()
    todo = [c for c in cells if (c.a_len, c.b_len) not in done]
    print(
        f"{task}: {len(cells)} cells in shard {e.shard}/{e.num_shards}, {len(cells) - len(todo)} done "
        f"already; {s.describe()}, cache={e.cache} -> {path}",
        flush=True,
    )
    warning = untrained_rows(run.cfg, run.tok, todo, max(s.offsets), task=task, run_dir=run.run_dir)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return _evaluate(run, task, spec, e, s, table, todo, device)


def _task(cfg: EvalAppConfig, run, sorting: bool):
    """(task name, Task): the training task's format (padded operands) unless another task is asked for."""
    task = str(cfg.task or run.cfg.data.task)
    spec = task_for(run.cfg.data) if task == run.cfg.data.task else get_task(task)
    if spec.eval_script != ("sort_eval.py" if sorting else "arithmetic_eval.py"):
        raise ConfigError(f"task {task} is evaluated with {spec.eval_script}")
    return task, spec


def _settings(run, e, spec) -> eval_settings.EvalSettings:
    """The evaluation settings: eval.* where given, the run's own defaults otherwise; checked for the task `spec`
    the grid evaluates."""
    return eval_settings.for_run(
        run,
        k=e.k,
        recurrences=e.recurrences,
        vote_ks=None if e.vote_ks is None else list(e.vote_ks),
        vote_mode=e.vote_mode,
        attn_scale=e.attn_scale,
        attn_scale_mode=e.attn_scale_mode,
        attn_scale_where=e.attn_scale_where,
        row_window=e.row_window,
        order_votes=e.order_votes,
        label_permutation=e.label_permutation,
        order_view_items=e.order_view_items,
        task=(spec.name, spec.answer_format),
    )


def _evaluate(run, task: str, spec, e, s, table: GridCSV, todo: list, device: str) -> list[dict]:
    """Evaluate the cells `todo` in groups that share decoding calls (`groups`), appending a CSV row per cell as
    each group finishes; returns the rows."""
    rows = []
    bar = tqdm(
        total=sum(spec.cell_cost(c.a_len, c.b_len) for c in todo),
        unit="cost",
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {percentage:3.0f}% [{elapsed}<{remaining}] {postfix}",
    )
    t0 = time.perf_counter()
    # on CUDA decode in bf16 like training, so SDPA can take its flash / efficient kernels (CPU stays float32)
    fast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()
    with eval_settings.applied(run, s):
        for group in groups(todo, e.n_per_cell, e.batch_size):
            with fast:
                results = _cells(run, spec, e, s, group)
            for c, r in zip(group, results):
                extra = spec.extra_results(r)
                table.append(task, c, r["n"], r["correct"], **extra)
                rows.append({"a_len": c.a_len, "b_len": c.b_len, "acc": r["correct"] / r["n"], **extra})
                bar.update(spec.cell_cost(c.a_len, c.b_len))
            bar.set_postfix_str(
                f"cells {len(rows)}/{len(todo)} last ({c.a_len},{c.b_len}) acc {rows[-1]['acc']:.2f}"
            )
    bar.close()
    if todo:
        mean = sum(r["acc"] for r in rows) / len(rows)
        print(
            f"{len(todo)} cells in {time.perf_counter() - t0:.1f}s, mean accuracy {100 * mean:.1f}%",
            flush=True,
        )
    return rows


def groups(cells: list, n: int, batch_size: int) -> list[list]:
    """The cells in groups decoded together: cells of one operand-length sum (one prompt length for + - x and
    OR) side by side, at most batch_size problems a group (one cell when a cell alone fills a batch). A group is
    the most work a killed evaluation loses."""
    per = max(1, batch_size // n)
    out: list[list] = []
    for c in sorted(cells, key=lambda c: (c.a_len + c.b_len, c.a_len, c.b_len)):
        last = out[-1] if out else None
        if last and len(last) < per and last[0].a_len + last[0].b_len == c.a_len + c.b_len:
            last.append(c)
        else:
            out.append([c])
    return out


def _cells(run, spec, e, s, group: list) -> list[dict]:
    """The counts of each cell of a group (evaluate_cells' dicts)."""
    return evaluate_cells(
        run.model,
        run.tok,
        spec,
        [(c.a_len, c.b_len) for c in group],
        e.n_per_cell,
        e.seed,
        batch_size=e.batch_size,
        use_cache=e.cache,
        **s.decode_args(),
    )
