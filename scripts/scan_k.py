"""Choose evaluation settings by measurement: exact match on (L, L) cells for several Abacus offsets k, vote
sets and attention scales, on the run's selection lengths (train.select_lens, never the reported grid).

    python scripts/scan_k.py runs/quickstart --ks 0,3,5,10 [--n 50] [--recurrences 4]
    python scripts/scan_k.py runs/quickstart --votes 0,3,5 2,4,6,8 --vote-mode answer --scales 1,1.2
    python scripts/scan_k.py runs/quickstart --ks 5 --scales 1,1.5 --scale-mode log --scale-where first
    python scripts/scan_k.py runs/old_run --lens 8,12,16    # a run without train.select_lens
    python scripts/scan_k.py runs/old_run --ks 5 --windows 0,3,4 --lens 16,24,32   # a test-time row window

One row per (k or vote set) x scale x row window. A short training run leaves the low position rows (1..9, used with k = 0)
rarely trained; an offset inside the trained range reads better-trained rows. Set the winners as
`model.eval_k` / `model.eval_vote_ks` (training) or `eval.k` / `eval.vote_ks` / `eval.attn_scale` /
`eval.row_window` (evaluation).
Problems come from the selection seed (train.select_seed) unless --seed is given.
"""

from __future__ import annotations

import argparse
import sys

from arith.cli import user_errors


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--ks", type=_ints, default=None, help="comma-separated offsets (default 0,3,5,10)")
    parser.add_argument("--votes", nargs="+", type=_ints, default=[], help="vote sets, each comma-separated")
    parser.add_argument("--vote-mode", default="answer", help="answer or logits")
    parser.add_argument("--scales", default="1", help="comma-separated test-time attention scales")
    parser.add_argument("--scale-mode", default="const", help="const or log")
    parser.add_argument("--scale-where", default="all", help="all or first")
    parser.add_argument(
        "--windows",
        type=_ints,
        default=None,
        help="comma-separated row windows (0 = off; default: the run's)",
    )
    parser.add_argument(
        "--lens", type=_ints, default=None, help="operand lengths (default: train.select_lens)"
    )
    parser.add_argument("--n", type=int, default=50, help="problems per cell")
    parser.add_argument("--seed", type=int, default=None, help="problem seed (default: train.select_seed)")
    parser.add_argument("--recurrences", type=int, default=None)
    parser.add_argument("--checkpoint", default=None, help="best, latest or a step")
    parser.add_argument("--weights", default=None, help="ema or raw")
    parser.add_argument("--device", default="auto", help="auto (CUDA when visible), cpu or cuda")
    args = parser.parse_args(argv)

    import arith
    from arith.data.tasks import task_for
    from arith.dist import pick_device
    from arith.errors import ConfigError
    from arith.eval import settings as eval_settings
    from arith.eval.grid import Cell
    from arith.eval.quick import evaluate_cell
    from arith.eval.reach import untrained_rows

    run = arith.load(args.run, pick_device(args.device), checkpoint=args.checkpoint, weights=args.weights)
    task = task_for(run.cfg.data)  # the training format (padded operands when data.pad_operands)
    select_lens = list(run.cfg.train.select_lens)
    lens = args.lens or select_lens
    if not lens:
        raise ConfigError(f"{args.run} has no train.select_lens: pass --lens, e.g. --lens 8,12,16")
    source = "--lens" if args.lens else "train.select_lens"
    seed = run.cfg.train.select_seed if args.seed is None else args.seed
    scales = [float(x) for x in args.scales.split(",")]
    ks = args.ks if args.ks is not None else ([] if args.votes else [0, 3, 5, 10])
    choices = [dict(k=k, vote_ks=[]) for k in ks] + [
        dict(vote_ks=v, vote_mode=args.vote_mode) for v in args.votes
    ]
    mode, where = args.scale_mode, args.scale_where
    plans = [
        eval_settings.for_run(
            run, prefix="", recurrences=args.recurrences, attn_scale=x, attn_scale_mode=mode,
            attn_scale_where=where, row_window=w, **c,
        )
        for c in choices
        for x in scales
        for w in (args.windows or [None])
    ]  # fmt: skip
    print(
        f"{args.run}: checkpoint {run.checkpoint} ({run.weights}); lengths {lens} ({source}), {args.n} per cell"
    )
    cells = [Cell(L, L) for L in lens]
    top = max(max(p.offsets) for p in plans)
    warning = untrained_rows(run.cfg, run.tok, cells, top, run_dir=run.run_dir) if plans else None
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"{'offsets':>16} {'scale':>6} {'window':>6} "
        + " ".join(f"{L:>6}" for L in lens)
        + "   (accuracy %, L x L digits)"
    )
    for p in plans:
        with eval_settings.applied(run, p):
            accs = [
                evaluate_cell(
                    run.model, run.tok, task, L, L, args.n, seed, k=p.k, recurrences=p.recurrences,
                    vote_ks=p.vote_ks, vote_mode=p.vote_mode or "answer",
                )
                for L in lens
            ]  # fmt: skip
        name = (("vote " if len(p.vote_ks) > 1 else "k ") + ",".join(map(str, p.offsets)))[:16]
        cols = " ".join(f"{100 * a['correct'] / a['n']:6.1f}" for a in accs)
        print(f"{name:>16} {p.attn_scale:>6g} {p.row_window:>6} {cols}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
