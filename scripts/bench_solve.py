"""`Run.solve_many` against `Run.solve` one at a time: problems/s of each and the speed-up, answers checked equal.

    python pretrain.py +experiment=quickstart        # once, to have the model
    python scripts/bench_solve.py [--run runs/quickstart] [--n 1000] [--digits 8 64] [--batch-size 256]
        [--solo N] [--out docs/BENCHMARKS.md]

The problems are additions whose operands have random lengths in --digits (uniform, Python's random, --seed), so
a call holds many prompt lengths (issue 29: >= 10x the one-at-a-time rate on 1,000 problems of 8 to 64 digits).
`solve` answers the first --solo of them (default all) one at a time; `solve_many` answers all of them in one
call; its answers to those --solo must equal `solve`'s (checked, exit 1 otherwise). The rates are printed, and
appended to --out with the command, machine and date when it is given.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's arith, not an installed one
from arith.cli import append_section, user_errors  # noqa: E402


def additions(n: int, lo: int, hi: int, seed: int) -> list[str]:
    """n problems a+b, each operand of a length uniform in lo..hi digits (no leading zero)."""
    rng = random.Random(seed)

    def number() -> str:
        digits = rng.randint(lo, hi)
        return str(rng.randrange(10 ** (digits - 1), 10**digits))

    return [f"{number()}+{number()}" for _ in range(n)]


def answers(run, problems: list[str], batch_size: int | None) -> tuple[list, float]:
    """(answers or errors as text, seconds): solve one at a time (batch_size None), else one solve_many call."""
    t0 = time.perf_counter()
    if batch_size is None:
        got = []
        for p in problems:
            try:
                got.append(run.solve(p))
            except Exception as e:  # an answer without EOS: compared as text
                got.append(f"{type(e).__name__}: {e}")
    else:
        got = [
            a if isinstance(a, str) else f"{type(a).__name__}: {a}"
            for a in run.solve_many(problems, batch_size=batch_size, errors="return")
        ]
    return got, time.perf_counter() - t0


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path(os.environ.get("ARITH_RUNS", "runs")) / "quickstart")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--digits", type=int, nargs=2, default=[8, 64], metavar=("LO", "HI"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--solo", type=int, default=None, help="problems solve answers one at a time (all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="markdown file to append to; '' = none")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    args = parser.parse_args(argv)

    import arith
    from arith.dist import pick_device

    run = arith.load(args.run, pick_device(args.device))
    problems = additions(args.n, *args.digits, args.seed)
    solo = problems[: args.n if args.solo is None else args.solo]
    warnings.simplefilter("ignore")  # rows past training's: the same for both paths
    answers(run, problems[:2], args.batch_size)  # warm-up
    many, many_s = answers(run, problems, args.batch_size)
    one, one_s = answers(run, solo, None)
    same = sum(a == b for a, b in zip(one, many))
    many_rate, one_rate = len(problems) / many_s, len(solo) / one_s
    lines = [
        f"## solve_many against solve one at a time ({datetime.date.today().isoformat()})",
        "",
        f"- command: `python scripts/bench_solve.py --run {args.run} --n {args.n} --digits {args.digits[0]} "
        f"{args.digits[1]} --batch-size {args.batch_size} --solo {len(solo)} --device {args.device}`",
        f"- machine: {os.cpu_count()}-core CPU ({platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        f"- model: {args.run.name}, pads_left={getattr(run.model, 'pads_left', False)}; additions of "
        f"{args.digits[0]}-{args.digits[1]} digits",
        "",
        "| path | problems | seconds | problems/s |",
        "|---|---|---|---|",
        f"| solve, one at a time | {len(solo)} | {one_s:.1f} | {one_rate:.2f} |",
        f"| solve_many | {len(problems)} | {many_s:.1f} | {many_rate:.2f} |",
        f"| speed-up | | | {many_rate / one_rate:.1f}x |",
        "",
        f"Identical answers on {same}/{len(solo)} problems; "
        f"{sum(a == str(int(p.split('+')[0]) + int(p.split('+')[1])) for p, a in zip(problems, many))}"
        f"/{len(problems)} right.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        append_section(args.out, text)
    return 0 if same == len(solo) else 1


if __name__ == "__main__":
    sys.exit(main())
