"""Plot evaluation grids of finished runs.

    python scripts/plot_grid.py runs/addition20_abacus-none_2x8_w1024_s0
    python scripts/plot_grid.py runs/RUN_A runs/RUN_B [--out DIR]

For each run directory: ``heatmap_<task>.png`` and ``.pdf`` inside it (titled from the run's config.yaml).
With several runs, also ``compare.png`` and ``compare.pdf`` (accuracy against operand length, one line per run)
in ``--out`` (default: the first run's parent folder). Prints every path written. A run without evaluation
results is a one-line error and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arith.cli import user_errors
from arith.errors import ArithError


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (each holding eval/*.csv)")
    parser.add_argument("--out", type=Path, default=None, help="folder for compare.png/pdf (several runs)")
    parser.add_argument("--summary", action="store_true", help="also print accuracy by operand length")
    args = parser.parse_args(argv)

    from arith.eval.grid import format_summary, read_results  # after argparse, so --help stays instant
    from arith.plots import plot_compare, plot_run

    try:
        for run in args.runs:  # check every run first: fail before writing anything
            if not read_results(run):
                raise ArithError(f"{run}: no evaluation results (no CSV rows under {run / 'eval'})")
        written = [p for run in args.runs for p in plot_run(run)]
        if len(args.runs) > 1:
            out_dir = args.out if args.out is not None else args.runs[0].resolve().parent
            written += plot_compare(args.runs, out_dir / "compare")
    except ArithError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in written:
        print(p)
    if args.summary:
        for run in args.runs:
            rows = read_results(run)
            trained = _trained_length(run)
            for task in sorted({r["task"] for r in rows}):
                print(f"\n{run}\n" + format_summary(rows, task, trained))
    return 0


def _trained_length(run: Path) -> int | None:
    config = run / "config.yaml"
    if not config.exists():
        return None
    from omegaconf import OmegaConf

    data = OmegaConf.load(config).get("data", {})
    return max(data.get("max_len") or 0, data.get("max_len_b") or 0) or None


if __name__ == "__main__":
    sys.exit(main())
