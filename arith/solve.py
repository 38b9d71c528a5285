"""Answer a problem with a trained run.

    python -m arith.solve runs/quickstart "12345+678"        # prints 13023
    python -m arith.solve runs/quickstart "12345+678" --vote-ks 0,3,5 --checkpoint latest --verbose
    >>> import arith; arith.load("runs/quickstart").solve("12345+678")
    '13023'

Problems are written the natural way (most significant digit first); the tool reverses them for the model and
reverses the answer back. Sorting problems are comma-separated numbers ("305,7,41"); the answer is the labels
in ascending order of value ("b,c,a"). `--verbose` names the checkpoint and settings used on stderr; a problem
that reads position rows training never reached gets a warning there (`UntrainedPositionsWarning`).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from arith.cli import user_errors
from arith.errors import ArithError
from arith.eval import settings as eval_settings
from arith.eval.answer import solve
from arith.eval.reach import UntrainedPositionsWarning
from arith.runs import load

__all__ = ["main", "solve"]


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated offsets, got {text!r}") from None


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arith.solve", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("problem", help='e.g. "12345+678" (natural digit order)')
    parser.add_argument("--recurrences", type=int, default=None, help="test-time recurrences")
    parser.add_argument("--k", type=int, default=None, help="Abacus offset at evaluation")
    parser.add_argument(
        "--vote-ks", type=_ints, default=None, help='offsets that vote, e.g. "0,3,5" ("" = off)'
    )
    parser.add_argument("--vote-mode", default="answer", help="answer (majority of answers) or logits")
    parser.add_argument("--attn-scale", type=float, default=1.0, help="test-time attention temperature")
    parser.add_argument("--attn-scale-mode", default="const", help="const or log")
    parser.add_argument("--attn-scale-where", default="all", help="all or first")
    parser.add_argument(
        "--row-window",
        type=int,
        default=None,
        help="digit keys within this many indices (0 = off; default: the run's)",
    )
    parser.add_argument("--checkpoint", default=None, help="best, latest or a step (default: best if any)")
    parser.add_argument("--weights", default=None, help="ema or raw (default: ema when saved)")
    parser.add_argument("--verbose", action="store_true", help="name the checkpoint and settings on stderr")
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UntrainedPositionsWarning)
            run = load(args.run_dir, checkpoint=args.checkpoint, weights=args.weights)
            options = dict(
                recurrences=args.recurrences,
                k=args.k,
                vote_ks=args.vote_ks,
                vote_mode=args.vote_mode,
                attn_scale=args.attn_scale,
                attn_scale_mode=args.attn_scale_mode,
                attn_scale_where=args.attn_scale_where,
                row_window=args.row_window,
            )
            answer = run.solve(args.problem, **options)
        for w in caught:  # one line each on stderr, not Python's two-line warning format
            print(f"warning: {w.message}", file=sys.stderr)
        if args.verbose:
            settings = eval_settings.for_run(run, prefix="", **options)
            print(f"{args.run_dir}: {settings.describe()}", file=sys.stderr)
        print(answer)
    except ArithError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
