"""Exact match by cell on problems made outside the framework's generators (issue 13's yardstick).

    python scripts/bench_self_improve.py runs/quickstart runs/quickstart_si --lens 8,16,24,32,40,48,56,64
    python scripts/bench_self_improve.py runs/a_si runs/b_si --n 200 --votes 4,5,6,7,8 --json docs/si.json
    python scripts/bench_self_improve.py runs/quickstart_bitwise_or --lens 8,16,24,32
    python scripts/bench_self_improve.py runs/quickstart_sorting --cells 5x5,10x5,5x10,10x10,15x15
    python scripts/bench_self_improve.py runs/quickstart --lens 24,100,1000 --carry 0.9   # long carry chains

Problems are drawn with Python's `random.Random(seed)` (no numpy generator, no hash split) and checked with
Python's integers; the task is the run's own (data.task):
  + - x: a cell AxB is an A-digit and a B-digit operand (--lens L: the diagonal cell L x L); the answer is the
    integer (a negative difference as "-333").
  --carry P (addition, diagonal cells): carry-heavy sums. The lowest digit pair sums to >= 10, so a carry enters;
    each pair above it, the top one excepted, sums to exactly 9 (the carry passes on) with probability P, else
    is uniform; P = 1 carries through every digit (999...9 + 000...1 shaped, in random digits).
  bitwise_or: two 0/1 strings of A and B bits written most significant bit first, leading zeros kept; the
    shorter (either, chosen at random, when A == B) has one 1 at a uniformly random index, the other is all
    zeros, as the framework's generator makes them; the answer is the OR, max(A, B) bits, natural order.
  sorting: a cell AxB is B numbers of 1..A digits (uniform; one number has exactly A), "n1,n2,..."; the answer is
    the labels Sorting.prompt gives them (a, b, c, ...) in ascending order of value, ties by position: "b,c,a".
Each run decodes with its vote (--votes, else its model.eval_vote_ks; sorting: --order-votes, else its
model.eval_order_votes, and --label-permutation, else its model.eval_label_permutation) in batches of one prompt
length. Prints a
markdown table (one row per run, then the median over runs) and writes the numbers as JSON when asked.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from arith.cli import user_errors  # noqa: E402
from arith.data.tasks import task_for  # noqa: E402
from arith.data.tokenizer import LABELS  # noqa: E402
from arith.eval import order_vote  # noqa: E402
from arith.eval import settings as eval_settings  # noqa: E402
from arith.eval.vote import decode  # noqa: E402

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "x": lambda a, b: a * b}
OTHER_TASKS = ("bitwise_or", "sorting")  # dispatched on task.name (bitwise_or's op is "+" too)


def _cell(cell) -> tuple[int, int]:
    """An int L (the diagonal cell L x L) or an (a, b) pair -> (a, b)."""
    return (cell, cell) if isinstance(cell, int) else (int(cell[0]), int(cell[1]))


def _number(rng: random.Random, length: int) -> int:
    """Uniform with exactly `length` digits (a 1-digit number may be 0)."""
    return rng.randint(0 if length == 1 else 10 ** (length - 1), 10**length - 1)


def problems(length: int, n: int, seed: int, b_len: int | None = None) -> list[tuple[int, int]]:
    """n operand pairs of `length` x `b_len` (default: `length`) digits."""
    b_len = length if b_len is None else b_len
    rng = random.Random(f"{seed}-{length}" if b_len == length else f"{seed}-{length}x{b_len}")
    return [(_number(rng, length), _number(rng, b_len)) for _ in range(n)]


def carry_problems(length: int, n: int, seed: int, p: float) -> list[tuple[int, int]]:
    """n pairs of `length`-digit numbers whose sum carries from the lowest digit through runs of 9-sums
    (probability p a digit pair below the top one)."""
    if not 0.0 <= p <= 1.0:
        raise SystemExit(f"bench_self_improve: --carry {p} is not a probability in [0, 1]")
    rng = random.Random(f"{seed}-carry{p}-{length}")
    out = []
    for _ in range(n):
        if length == 1:
            a = rng.randint(1, 9)
            out.append((a, rng.randint(10 - a, 9)))
            continue
        a0 = rng.randint(1, 9)
        da, db = [a0], [rng.randint(10 - a0, 9)]  # least significant first: the lowest pair carries
        for _ in range(1, length - 1):
            x = rng.randint(0, 9)
            da.append(x)
            db.append(9 - x if rng.random() < p else rng.randint(0, 9))
        da.append(rng.randint(1, 9))
        db.append(rng.randint(1, 9))
        out.append(tuple(int("".join(map(str, reversed(d)))) for d in (da, db)))
    return out


def or_problems(a_len: int, b_len: int, n: int, seed: int) -> list[tuple[str, str]]:
    """n (a, b) bit strings, most significant bit first: the shorter one-hot (either when equal), the other 0."""
    rng = random.Random(f"{seed}-or-{a_len}x{b_len}")
    out = []
    for _ in range(n):
        hot_a = rng.random() < 0.5 if a_len == b_len else a_len < b_len
        hot = rng.randrange(min(a_len, b_len))  # index from the least significant bit
        a, b = ["0"] * a_len, ["0"] * b_len
        (a if hot_a else b)[-1 - hot] = "1"
        out.append(("".join(a), "".join(b)))
    return out


def sort_problems(max_digits: int, m: int, n: int, seed: int) -> list[list[int]]:
    """n arrays of m numbers of 1..max_digits digits (uniform), one of exactly max_digits (Sorting._sample)."""
    if not 1 <= m <= len(LABELS):
        raise SystemExit(f"bench_self_improve: sorting array length {m} is not in 1..{len(LABELS)} (labels)")
    return sort_arrays(random.Random(f"{seed}-sort-{max_digits}x{m}"), max_digits, m, n)


def sort_arrays(rng: random.Random, max_digits: int, m: int, n: int) -> list[list[int]]:
    """n arrays of m numbers drawn from rng: lengths 1..max_digits (uniform), one of exactly max_digits."""
    out = []
    for _ in range(n):
        lens = [rng.randint(1, max_digits) for _ in range(m)]
        lens[rng.randrange(m)] = max_digits
        out.append([_number(rng, k) for k in lens])
    return out


def sorted_labels(nums: list[int]) -> str:
    """The labels Sorting.prompt gives the numbers (LABELS[i] for the i-th), ascending by value, ties by position."""
    return ",".join(LABELS[i] for i in sorted(range(len(nums)), key=lambda i: (nums[i], i)))


def problems_for(task, cell, n: int, seed: int, carry: float | None = None) -> list[tuple[str, str]]:
    """n (problem, expected answer) pairs of a cell: the problem as `task.prompt` reads it (natural order), the
    answer as `task.answer` returns it for a right model output; carry: carry-heavy sums (`carry_problems`)."""
    a_len, b_len = _cell(cell)
    if carry is not None:
        if task.name != "addition" or a_len != b_len:
            raise SystemExit(
                f"bench_self_improve: --carry needs addition and diagonal cells, got {task.name} "
                f"{a_len}x{b_len}"
            )
        return [(f"{a}+{b}", str(a + b)) for a, b in carry_problems(a_len, n, seed, carry)]
    if task.name == "bitwise_or":
        width = max(a_len, b_len)
        return [
            (f"{a}{task.op}{b}", format(int(a, 2) | int(b, 2), f"0{width}b"))
            for a, b in or_problems(a_len, b_len, n, seed)
        ]
    if task.name == "sorting":
        return [
            (",".join(map(str, nums)), sorted_labels(nums)) for nums in sort_problems(a_len, b_len, n, seed)
        ]
    if task.op not in OPS:
        raise SystemExit(
            f"bench_self_improve: {task.name} is not an integer operation ({', '.join(OPS)}) "
            f"or one of {', '.join(OTHER_TASKS)}"
        )
    return [(f"{a}{task.op}{b}", str(OPS[task.op](a, b))) for a, b in problems(a_len, n, seed, b_len)]


@torch.no_grad()
def accuracy(
    run,
    cell,
    n: int,
    seed: int,
    vote_ks,
    batch: int,
    row_window=None,
    carry=None,
    order_votes=None,
    label_permutation=None,
    order_view_items=None,
) -> float:
    """Exact match on n problems of a cell (an int L: L x L); carry: carry-heavy sums (`carry_problems`);
    order_votes: sorting's vote over orders of the items (None: the run's model.eval_order_votes);
    label_permutation: sorting's answers as permutations of the labels (None: the run's); order_view_items: the
    most items one order of that vote shows (None: the run's)."""
    task = task_for(run.cfg.data)
    a_len, b_len = _cell(cell)
    tok, right = run.tok, 0
    pairs = problems_for(task, (a_len, b_len), n, seed, carry)
    by_len: dict[int, list[tuple[list[int], str]]] = {}  # prompt length -> (prompt ids, expected), in order
    for problem, want in pairs:
        ids = tok.encode(task.prompt(problem))
        by_len.setdefault(len(ids), []).append((ids, want))
    max_new = task.max_answer_len(a_len, b_len)  # answer tokens and EOS
    settings = eval_settings.for_run(
        run,
        prefix="--",
        row_window=row_window,
        order_votes=order_votes,
        label_permutation=label_permutation,
        order_view_items=order_view_items,
    )
    task_key = (task.name, task.answer_format)
    eval_settings.check_order_votes(settings.order_votes, "--order-votes", task_key)
    eval_settings.check_label_permutation(settings.label_permutation, "--label-permutation", task_key)
    if order_view_items is not None:
        eval_settings.check_order_view_items(order_view_items, "--order-view-items", task_key)
    items = order_vote.ItemTokens.of(tok) if settings.order_votes > 1 or settings.label_permutation else None
    with eval_settings.applied(run, settings):
        for group in by_len.values():
            prompts = torch.tensor([ids for ids, _ in group])
            for start in range(0, len(group), batch):
                out = decode(
                    run.model,
                    prompts[start : start + batch],
                    max_new,
                    tok.eos_id,
                    tok.pad_id,
                    vote_ks=vote_ks,
                    order_votes=settings.order_votes,
                    label_permutation=settings.label_permutation,
                    order_view_items=settings.order_view_items,
                    items=items,
                )
                for (_, want), row in zip(group[start : start + batch], out.tolist()):
                    right += task.answer(tok.decode(row)) == want
    return right / n


def parse_cells(text: str) -> list[tuple[int, int]]:
    """ "5x5,10x5" -> [(5, 5), (10, 5)]."""
    cells = []
    for part in text.split(","):
        a, sep, b = part.strip().lower().partition("x")
        if not sep or not a.strip().isdigit() or not b.strip().isdigit() or min(int(a), int(b)) < 1:
            raise ValueError(f"--cells: expected AxB with A, B >= 1 (like 5x5,10x5), got {part!r}")
        cells.append((int(a), int(b)))
    return cells


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--lens", default="8,16,24,32,40,48,56,64", help="diagonal cells L x L")
    p.add_argument(
        "--cells",
        default=None,
        help="cells AxB instead of --lens, e.g. 5x5,10x5 (sorting: max digits x array length; "
        "else: the operands' digits)",
    )
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument(
        "--votes", default=None, help="offsets that vote, e.g. 4,5,6,7,8 (default: each run's own)"
    )
    p.add_argument(
        "--order-votes",
        type=int,
        default=None,
        help="sorting: orders of the items that vote (0 or 1 = off; default: each run's own)",
    )
    p.add_argument(
        "--label-permutation",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sorting: decode each answer as a permutation of the prompt's labels (default: each run's own)",
    )
    p.add_argument(
        "--order-view-items",
        type=int,
        default=None,
        help="sorting: the most items one order of the vote shows (sub-arrays; 0 = all; default: each run's own)",
    )
    p.add_argument("--checkpoint", default=None, help="best | latest | STEP (default: arith.load's)")
    p.add_argument(
        "--row-window",
        type=int,
        default=None,
        help="digit keys within this many indices (0 = off; default: the run's)",
    )
    p.add_argument("--batch", type=int, default=100)
    p.add_argument(
        "--carry",
        type=float,
        default=None,
        help="addition: carry-heavy sums, each digit pair summing to 9 with this probability (0..1)",
    )
    p.add_argument("--json", default=None, help="also write the numbers here")
    return p


@user_errors
def main(argv=None) -> None:
    import arith

    p = parser()
    args = p.parse_args(argv)
    if args.cells is None:
        cells = [int(x) for x in args.lens.split(",")]
        names, keys = [str(L) for L in cells], cells  # results keyed by the length, as before --cells
    else:
        try:
            cells = parse_cells(args.cells)
        except ValueError as e:
            p.error(str(e))
        names = keys = [f"{a}x{b}" for a, b in cells]
    vote_ks = None if args.votes is None else [int(x) for x in args.votes.split(",")]
    results = {}
    for path in args.runs:
        run = arith.load(path, checkpoint=args.checkpoint)
        t0 = time.perf_counter()
        results[path] = {
            k: accuracy(
                run,
                cell,
                args.n,
                args.seed,
                vote_ks,
                args.batch,
                args.row_window,
                args.carry,
                args.order_votes,
                args.label_permutation,
                args.order_view_items,
            )
            for k, cell in zip(keys, cells)
        }
        print(f"{path} (step {run.step}): {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(f"| run | {' | '.join(names)} |\n|---|{'---|' * len(names)}")
    for path, acc in results.items():
        print(f"| {path} | {' | '.join(f'{100 * acc[k]:.0f}' for k in keys)} |")
    if len(results) > 1:
        med = {k: statistics.median(acc[k] for acc in results.values()) for k in keys}
        print(f"| median | {' | '.join(f'{100 * med[k]:.0f}' for k in keys)} |")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "n": args.n,
                    "seed": args.seed,
                    "votes": vote_ks,
                    "order_votes": args.order_votes,
                    "label_permutation": args.label_permutation,
                    "order_view_items": args.order_view_items,
                    "carry": args.carry,
                    "results": results,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
