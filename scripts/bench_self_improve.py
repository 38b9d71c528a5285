"""Exact match by length on problems made outside the framework's generators (issue 13's yardstick).

    python scripts/bench_self_improve.py runs/quickstart runs/quickstart_si --lens 8,16,24,32,40,48,56,64
    python scripts/bench_self_improve.py runs/a_si runs/b_si --n 200 --votes 4,5,6,7,8 --json docs/si.json

Problems: both operands of exactly L digits (the diagonal cell L x L), drawn with Python's `random.Random(seed)`
(no numpy generator, no hash split); answers checked with Python's integers. Each run decodes with its vote
(--votes, else its model.eval_vote_ks) in batches of one prompt length. Prints a markdown table (one row per run,
then the median over runs) and writes the numbers as JSON when asked.
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
from arith.eval import settings as eval_settings  # noqa: E402
from arith.eval.vote import decode  # noqa: E402

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "x": lambda a, b: a * b}


def problems(length: int, n: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(f"{seed}-{length}")
    lo, hi = (0 if length == 1 else 10 ** (length - 1)), 10**length - 1
    return [(rng.randint(lo, hi), rng.randint(lo, hi)) for _ in range(n)]


@torch.no_grad()
def accuracy(run, length: int, n: int, seed: int, vote_ks, batch: int, row_window=None) -> float:
    task = task_for(run.cfg.data)
    if task.op not in OPS:
        raise SystemExit(f"bench_self_improve: {task.name} is not an integer operation ({', '.join(OPS)})")
    tok, right = run.tok, 0
    pairs = problems(length, n, seed)
    prompts = torch.tensor([tok.encode(task.prompt(f"{a}{task.op}{b}")) for a, b in pairs])
    max_new = task.max_answer_len(length, length)  # answer tokens and EOS
    settings = eval_settings.for_run(run, prefix="--", row_window=row_window)
    with eval_settings.applied(run, settings):
        for start in range(0, n, batch):
            out = decode(
                run.model, prompts[start : start + batch], max_new, tok.eos_id, tok.pad_id, vote_ks=vote_ks
            )
            for (a, b), row in zip(pairs[start : start + batch], out.tolist()):
                right += task.answer(tok.decode(row)) == str(OPS[task.op](a, b))
    return right / n


@user_errors
def main(argv=None) -> None:
    import arith

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--lens", default="8,16,24,32,40,48,56,64")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument(
        "--votes", default=None, help="offsets that vote, e.g. 4,5,6,7,8 (default: each run's own)"
    )
    p.add_argument("--checkpoint", default=None, help="best | latest | STEP (default: arith.load's)")
    p.add_argument(
        "--row-window",
        type=int,
        default=None,
        help="digit keys within this many indices (0 = off; default: the run's)",
    )
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    lens = [int(x) for x in args.lens.split(",")]
    vote_ks = None if args.votes is None else [int(x) for x in args.votes.split(",")]
    results = {}
    for path in args.runs:
        run = arith.load(path, checkpoint=args.checkpoint)
        t0 = time.perf_counter()
        results[path] = {
            L: accuracy(run, L, args.n, args.seed, vote_ks, args.batch, args.row_window) for L in lens
        }
        print(f"{path} (step {run.step}): {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(f"| run | {' | '.join(str(L) for L in lens)} |\n|---|{'---|' * len(lens)}")
    for path, acc in results.items():
        print(f"| {path} | {' | '.join(f'{100 * acc[L]:.0f}' for L in lens)} |")
    if len(results) > 1:
        med = {L: statistics.median(acc[L] for acc in results.values()) for L in lens}
        print(f"| median | {' | '.join(f'{100 * med[L]:.0f}' for L in lens)} |")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"n": args.n, "seed": args.seed, "votes": vote_ks, "results": results}, indent=1)
        )


if __name__ == "__main__":
    main()
