"""Choose the Abacus evaluation offset by measurement: exact match on (L, L) cells for several offsets k.

    python scripts/scan_k.py runs/quickstart --ks 0,3,5,10 --lens 8,12,16,24 [--n 50] [--recurrences 4]

A short training run leaves the low position rows (1..9, used with k = 0) rarely trained; an offset inside the
trained range reads better-trained rows. Set the winner as `model.eval_k` (training) or `eval.k` (evaluation).
"""

from __future__ import annotations

import argparse
import sys

from arith.cli import user_errors


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--ks", default="0,3,5,10", help="comma-separated offsets")
    parser.add_argument("--lens", default="8,12,16,24", help="comma-separated operand lengths")
    parser.add_argument("--n", type=int, default=50, help="problems per cell")
    parser.add_argument("--seed", type=int, default=4321)
    parser.add_argument("--recurrences", type=int, default=None)
    args = parser.parse_args(argv)

    import arith
    from arith.eval.quick import evaluate_cell

    run = arith.load(args.run)
    task = run.cfg.data.task.value
    lens = [int(x) for x in args.lens.split(",")]
    print(f"{'k':>4} " + " ".join(f"{L:>6}" for L in lens) + "   (accuracy %, L x L digits)")
    for k in (int(x) for x in args.ks.split(",")):
        accs = [
            evaluate_cell(
                run.model, run.tok, task, L, L, args.n, args.seed, k=k, recurrences=args.recurrences
            )
            for L in lens
        ]
        print(f"{k:>4} " + " ".join(f"{100 * a['correct'] / a['n']:6.1f}" for a in accs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
