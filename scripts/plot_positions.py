"""Diagnose a run's position table: row norms and pairwise cosine, and which rows training reached.

    python scripts/plot_positions.py runs/quickstart [--rows 60] [--checkpoint best|latest|STEP]

Writes ``positions.png`` and ``.pdf`` in the run directory and prints, per row, its norm and its largest
|cosine| to another row. Rows past the highest one training reaches (model.max_k + the longest training digit
run for Abacus) keep their initial norm: evaluating there reads untrained rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arith.cli import user_errors  # noqa: E402
from arith.errors import ConfigError  # noqa: E402


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--rows", type=int, default=None, help="rows to show (default: reach + 20)")
    parser.add_argument(
        "--checkpoint", default=None, help="best | latest | a step (default: best, else latest)"
    )
    args = parser.parse_args(argv)

    import numpy as np

    import arith
    from arith.eval.reach import position_needs
    from arith.model.positions import position_rows
    from arith.plots import plot_positions, position_table_stats

    run = arith.load(args.run, checkpoint=args.checkpoint)
    table = getattr(run.model.abs_pos, "table", None)
    if table is None:
        raise ConfigError(f"{args.run}: model.abs_pos={str(run.cfg.model.abs_pos)} has no position table")
    weights = table.weight.detach().cpu().numpy()
    max_tokens, max_digits = position_needs(run.cfg, run.tok)
    reach = position_rows(run.cfg.model, max_tokens, max_digits, run.cfg.model.max_k)
    rows = min(weights.shape[0], args.rows or reach + 21)
    norms, cos = position_table_stats(weights, rows)
    np.fill_diagonal(cos, 0.0)
    print(f"{'row':>4} {'norm':>7} {'max|cos|':>9}")
    for r in range(rows):
        mark = "  (past training's reach)" if r > reach else ""
        print(f"{r:>4} {norms[r]:7.3f} {cos[r, 1:].max():9.3f}{mark}")
    title = f"{args.run.name}: {run.cfg.model.abs_pos} table, checkpoint {run.checkpoint} ({run.weights})"
    for path in plot_positions(weights, rows, reach, title, args.run / "positions"):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
