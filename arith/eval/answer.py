"""`solve`: the answer of a loaded run to one problem written the natural way (`Run.solve`, `python -m arith.solve`)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from arith.data.spec import Cell
from arith.data.tasks import task_for
from arith.errors import DataError
from arith.eval import settings as eval_settings
from arith.eval.reach import UntrainedPositionsWarning, position_needs, untrained_rows
from arith.eval.vote import decode


def solve(
    run,
    problem: str,
    recurrences: int | None = None,
    k: int | None = None,
    vote_ks: list[int] | None = None,
    vote_mode: str = "answer",
    attn_scale: float = 1.0,
    attn_scale_mode: str = "const",
    attn_scale_where: str = "all",
    row_window: int | None = None,
    show_work: bool = False,
) -> str:
    """The answer of `run` (an `arith.runs.Run`: its checkpoint and weights are `run.checkpoint`, `run.weights`)
    to `problem`, in natural form; the keyword arguments are the eval.* settings of the grid (None = the run's
    defaults). show_work: the model's whole output after '=' spelled out (a scratchpad's steps, then the answer)."""
    s = eval_settings.for_run(
        run,
        prefix="",
        k=k,
        recurrences=recurrences,
        vote_ks=vote_ks,
        vote_mode=vote_mode,
        attn_scale=attn_scale,
        attn_scale_mode=attn_scale_mode,
        attn_scale_where=attn_scale_where,
        row_window=row_window,
    )
    spec = task_for(run.cfg.data)
    try:
        prompt = spec.prompt(problem.strip())
    except ValueError as e:
        raise DataError(f"cannot read {problem!r}: {e}") from None
    ids = np.asarray(run.tok.encode(prompt), dtype=np.int64)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], run.tok.is_digit(ids).astype(np.int64), [0]])))
    a_len, b_len = spec.problem_cell((edges[1::2] - edges[::2]).tolist())  # runs of digits: even to odd edges
    # a clear error past the position table, a warning past the rows training reached
    position_needs(run.cfg, run.tok, a_len, b_len, training=False, k=max(s.offsets))
    warning = untrained_rows(run.cfg, run.tok, [Cell(a_len, b_len)], max(s.offsets), run_dir=run.run_dir)
    if warning:
        warnings.warn(warning, UntrainedPositionsWarning, stacklevel=3)
    device = next(run.model.parameters()).device
    with eval_settings.applied(run, s):
        out = decode(
            run.model,
            torch.as_tensor(ids[None], device=device),
            max_new=spec.max_answer_len(a_len, b_len),  # answer tokens and EOS (a scratchpad's steps too)
            eos_id=run.tok.eos_id,
            pad_id=run.tok.pad_id,
            recurrences=s.recurrences,
            k=s.k,
            vote_ks=s.vote_ks,
            vote_mode=s.vote_mode or "answer",
        )[0].tolist()
    if run.tok.eos_id not in out:
        raise DataError(f"the model gave no answer for {problem!r} (no end-of-sequence token)")
    text = run.tok.decode(out)
    return spec.work(text) if show_work else spec.answer(text)
