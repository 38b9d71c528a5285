"""Where a sorting run goes wrong: problems made with Python's `random` (one cell, max digits x numbers, the same
draw as `bench_self_improve.py`'s lengths: each number 1..D digits, one of exactly D), answered by
`solve_many`, each miss classified at its first wrong label by what it named instead of the right number: a
number of the same length (and at which digit from the top the two first differ), a number of another length,
an equal number (a tie in the wrong order), or no label of the problem.

    python scripts/sort_errors.py runs/quickstart_sorting --digits 5 --numbers 5 --n 200
"""

from __future__ import annotations

import argparse
import random
import sys
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's arith, not an installed one
from bench_self_improve import sort_arrays  # noqa: E402  (beside this script)

from arith.cli import user_errors  # noqa: E402
from arith.data.tokenizer import LABELS  # noqa: E402


def problems(digits: int, numbers: int, n: int, seed: int) -> list[list[int]]:
    """bench_self_improve's draw of sorting arrays, from random.Random(seed)."""
    return sort_arrays(random.Random(seed), digits, numbers, n)


def classify(nums: list[int], answer) -> str | None:
    """None when right, else the kind of the first wrong label."""
    if not isinstance(answer, str):
        return "no answer (error)"
    want = sorted(range(len(nums)), key=lambda i: (nums[i], i))
    got = [LABELS.index(c) if len(c) == 1 and c in LABELS else -1 for c in answer.split(",")]
    if got == want:
        return None
    k = next((j for j in range(min(len(got), len(want))) if got[j] != want[j]), None)
    if k is None:
        return "too few or too many labels"
    if not 0 <= got[k] < len(nums):
        return "a label not in the problem"
    g, w = str(nums[got[k]]), str(nums[want[k]])
    if g == w:
        return "an equal number (tie order)"
    if len(g) != len(w):
        return "a number of another length"
    d = next(j for j in range(len(g)) if g[j] != w[j])
    return f"same length, first differs at digit {d} from the top"


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--digits", type=int, default=5)
    parser.add_argument("--numbers", type=int, default=5)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="best, latest or a step (default: arith.load's)")
    args = parser.parse_args(argv)

    import arith

    run = arith.load(args.run, checkpoint=args.checkpoint)
    probs = problems(args.digits, args.numbers, args.n, args.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        answers = run.solve_many([",".join(map(str, p)) for p in probs], errors="return")
    kinds = Counter(classify(p, a) for p, a in zip(probs, answers))
    right = kinds.pop(None, 0)
    print(f"{args.run}: {right}/{len(probs)} right on {args.numbers} numbers of up to {args.digits} digits")
    for kind, count in kinds.most_common():
        print(f"  {count:4d}  {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
