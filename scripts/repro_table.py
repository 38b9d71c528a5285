"""Seed tables for docs/RESULTS.md: accuracy in distribution and at 2x/3x/5x the training length.

    python scripts/repro_table.py runs/r_abacus_s* runs/r_nope_s* runs/r_fire_s* [--per-run] [--cost] [--lengths 8-16] [--plot OUT]

Runs named ``<group>_s<seed>`` are one group; each group's row reads ``mean (min-max)`` over its seeds, in %
(definitions in ``arith/eval/tables.py``). ``--lengths A-B`` also prints each run's diagonal cells (L, L) for L = A..B. ``--plot OUT`` also writes OUT.png/.pdf: the mean over each group's
seeds against operand length, with the min-max band. ``--cost`` adds to the per-run rows what each run cost:
parameters, steps and ms per step at its last checkpoint, its last logged loss and largest embedding entry. A run without a config or evaluation results is a one-line
error and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arith.cli import user_errors


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (each holding eval/*.csv)")
    parser.add_argument("--per-run", action="store_true", help="also print one row per run")
    parser.add_argument(
        "--cost",
        action="store_true",
        help="per-run rows also give parameters, steps, ms/step, loss, max |emb|",
    )
    parser.add_argument("--lengths", default=None, help="also print diagonal cells per run, e.g. 8-16")
    parser.add_argument("--plot", type=Path, default=None, help="write the group plot to PLOT.png/.pdf")
    args = parser.parse_args(argv)

    from arith.eval.tables import diagonal_table, group_runs, markdown_table, per_run_table
    from arith.plots import plot_groups

    groups = group_runs(args.runs)
    print(markdown_table(groups))
    if args.per_run or args.cost:
        print("\n" + per_run_table(groups, cost=args.cost))
    if args.lengths:
        lo, _, hi = args.lengths.partition("-")
        print("\n" + diagonal_table(groups, range(int(lo), int(hi or lo) + 1)))
    if args.plot is not None:
        for p in plot_groups({name: [s.path for s in runs] for name, runs in groups.items()}, args.plot):
            print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
