"""Answer a problem with a trained run.

    python -m arith.solve runs/quickstart "12345+678"        # prints 13023
    python -m arith.solve runs/quickstart "12345+678" --vote-ks 0,3,5 --checkpoint latest --verbose
    >>> import arith; arith.load("runs/quickstart").solve("12345+678")
    '13023'
    python -m arith.solve runs/quickstart --file problems.txt --out answers.csv   # one problem a line
    cat problems.txt | python -m arith.solve runs/quickstart --file - > answers.csv     # stdin, stdout
    >>> arith.load("runs/quickstart").solve_many(["12345+678", "9+9"])   # ['13023', '18']

Problems are written the natural way (most significant digit first); the tool reverses them for the model and
reverses the answer back. With `--file` (`-`: stdin) every non-blank line is a problem; the answers are
written as CSV (`problem,answer,error`, in the file's order; `--out`, default stdout) with a progress bar on
stderr: problems of like prompt lengths are decoded together (`--batch-size` at a time, `Run.solve_many`), and a
line it cannot read or answer gets its error in the `error` column while the others are answered (exit 0).
Sorting problems are comma-separated numbers ("305,7,41"); the answer is the labels in ascending order of
value ("b,c,a"). `--verbose` names the checkpoint and settings used on stderr; a problem
that reads position rows training never reached gets a warning there (`UntrainedPositionsWarning`).
"""

from __future__ import annotations

import argparse
import csv
import sys
import warnings

from arith.cli import user_errors
from arith.errors import ArithError, DataError, storage_error
from arith.eval import settings as eval_settings
from arith.eval.answer import SETTINGS, solve
from arith.eval.reach import UntrainedPositionsWarning
from arith.runs import load

__all__ = ["main", "solve"]

CSV_COLUMNS = ("problem", "answer", "error")


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated offsets, got {text!r}") from None


def _read_problems(path: str) -> list[str]:
    """The non-blank lines of a file ('-': stdin), stripped."""
    try:
        if path == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
    except OSError as e:
        raise storage_error(e, "read", path) from None
    except UnicodeDecodeError as e:
        raise DataError(f"cannot read {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return [line.strip() for line in lines if line.strip()]


def _write_answers(out: str | None, problems: list[str], answers: list) -> None:
    """CSV problem,answer,error (an answer or an error a row, in the problems' order) to `out` or stdout."""
    rows = [(p, "", str(a)) if isinstance(a, ArithError) else (p, a, "") for p, a in zip(problems, answers)]
    failed = sum(1 for _, _, e in rows if e)
    if failed:
        print(f"{failed} of {len(rows)} problems not answered (see the error column)", file=sys.stderr)
    try:
        if out is None:
            _write_csv(sys.stdout, rows)
        else:
            with open(out, "w", encoding="utf-8", newline="") as f:
                _write_csv(f, rows)
    except OSError as e:
        raise storage_error(e, "write", out or "stdout") from None


def _write_csv(stream, rows) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)


@user_errors
def _parser() -> argparse.ArgumentParser:
    """The command line: a problem or --file, and the eval.* settings as flags."""
    parser = argparse.ArgumentParser(prog="python -m arith.solve", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("problem", nargs="?", help='e.g. "12345+678" (natural digit order)')
    parser.add_argument(
        "--file", default=None, help="problems, one a line ('-' = stdin): answers as CSV problem,answer,error"
    )
    parser.add_argument("--out", default=None, help="with --file: the CSV to write (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=256, help="with --file: problems decoded at once")
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
    parser.add_argument(
        "--order-votes",
        type=int,
        default=None,
        help="sorting: orders of the items that vote (0 or 1 = off; default: the run's)",
    )
    parser.add_argument(
        "--label-permutation",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sorting: decode each answer as a permutation of the prompt's labels (default: the run's)",
    )
    parser.add_argument(
        "--order-view-items",
        type=int,
        default=None,
        help="sorting: the most items one order of the vote shows (sub-arrays; 0 = all; default: the run's)",
    )
    parser.add_argument("--checkpoint", default=None, help="best, latest or a step (default: best if any)")
    parser.add_argument("--weights", default=None, help="ema or raw (default: ema when saved)")
    parser.add_argument("--verbose", action="store_true", help="name the checkpoint and settings on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.problem is None) == (args.file is None):
        parser.error(
            "give one problem or --file FILE (one problem a line), not both"
            if args.file
            else 'give a problem, e.g. "12345+678", or --file FILE (one problem a line)'
        )
    if args.file is None and args.out is not None:
        parser.error("--out writes the answers of --file; with one problem the answer is printed")
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size} must be at least 1")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UntrainedPositionsWarning)
            run = load(args.run_dir, checkpoint=args.checkpoint, weights=args.weights)
            options = {name: getattr(args, name) for name in SETTINGS}
            if args.file is None:
                answer = run.solve(args.problem, **options)
            else:
                problems = _read_problems(args.file)
                answers = run.solve_many(
                    problems, batch_size=args.batch_size, errors="return", progress=True, **options
                )
        for w in caught:  # one line each on stderr, not Python's two-line warning format
            print(f"warning: {w.message}", file=sys.stderr)
        if args.verbose:
            settings = eval_settings.for_run(run, prefix="", **options)
            print(f"{args.run_dir}: {settings.describe()}", file=sys.stderr)
        if args.file is None:
            print(answer)
        else:
            _write_answers(args.out, problems, answers)
    except ArithError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
