"""Answer a problem with a trained run.

    python -m arith.solve runs/quickstart "12345+678"        # prints 13023
    >>> import arith; arith.load("runs/quickstart").solve("12345+678")
    '13023'

Problems are written the natural way (most significant digit first); the tool reverses them for the model and
reverses the answer back. Sorting problems are comma-separated numbers ("305,7,41"); the answer is the labels
in ascending order of value ("b,c,a").
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from arith.cli import user_errors
from arith.data.tasks import get_task
from arith.errors import DataError
from arith.eval.decode import generate


def _digit_runs(ids: np.ndarray, tok) -> list[int]:
    runs, current = [], 0
    for is_digit in tok.is_digit(ids):
        if is_digit:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs + ([current] if current else [])


def solve(run, problem: str, recurrences: int | None = None, k: int | None = None) -> str:
    from arith.runs import position_needs

    task_name = run.cfg.data.task.value
    spec = get_task(task_name)
    try:
        prompt = spec.prompt(problem.strip())
    except ValueError as e:
        raise DataError(f"cannot read {problem!r}: {e}") from None
    ids = np.asarray(run.tok.encode(prompt), dtype=np.int64)
    runs = _digit_runs(ids, run.tok)
    a_len, b_len = (max(runs), len(runs)) if task_name == "sorting" else (runs[0], runs[-1])
    position_needs(
        run.cfg, run.tok, a_len, b_len, training=False, k=k
    )  # a clear error past the position table
    device = next(run.model.parameters()).device
    out = generate(
        run.model,
        torch.as_tensor(ids[None], device=device),
        max_new=len(ids) + 2,  # every task's answer (with EOS) is shorter than its prompt + 2
        eos_id=run.tok.eos_id,
        pad_id=run.tok.pad_id,
        recurrences=recurrences,
        k=k,
    )[0].tolist()
    if run.tok.eos_id not in out:
        raise DataError(f"the model gave no answer for {problem!r} (no end-of-sequence token)")
    return spec.answer(run.tok.decode(out))


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arith.solve", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("problem", help='e.g. "12345+678" (natural digit order)')
    parser.add_argument("--recurrences", type=int, default=None, help="test-time recurrences")
    parser.add_argument("--k", type=int, default=None, help="Abacus offset at evaluation")
    args = parser.parse_args(argv)
    import arith

    print(arith.load(args.run_dir).solve(args.problem, recurrences=args.recurrences, k=args.k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
