"""train.trim_prompt, paired step by step: forward + backward of a preset's model on its own batches, untrimmed
and trimmed in turn, in one process.

    python scripts/bench_trim.py --configs quickstart,quickstart_sorting --steps 80

Each batch runs both ways (the order alternating), with no optimizer step, so both see the same weights, rows,
offsets and progressive-loss depths; the saving is read pair by pair, which a VM whose speed drifts between runs
lets through where separate `bench_train.py` runs do not. Also prints the share of the last block application's
input positions that `arith.step.answer_positions` leaves out, and the largest gradient difference (float rounding).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# scripts/ beside this file: the preset composed as bench_train composes it
from bench_train import compose  # noqa: E402

from arith.data.datasets import make_batches  # noqa: E402
from arith.model import build_model  # noqa: E402
from arith.model.flex import set_attention_impl  # noqa: E402
from arith.step import answer_positions, forward_loss  # noqa: E402


def pair_bench(preset: str, steps: int) -> dict:
    cfg = compose([f"+experiment={preset}", "train.cpu_bf16=false"])
    batches, tok = make_batches(cfg.data, cfg.train.batch_size, cfg.train.seed)
    torch.manual_seed(0)
    model = build_model(cfg.model, tok).train()
    set_attention_impl(model, "auto")

    def run(step: int, trim: bool):
        ids = batches.batch(step)
        rows = answer_positions(ids, tok) if trim else None
        torch.manual_seed(step)  # the same offsets and depths both ways
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        forward_loss(model, model, ids, cfg, tok, rows).backward()
        took = time.perf_counter() - t0
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        left_out = 0.0 if rows is None else 1 - rows.shape[1] / (ids.shape[1] - 1)
        return took, grads, left_out

    times, ratios, shares, diff = {False: [], True: []}, [], [], 0.0
    for step in range(steps + 2):  # two warm-up pairs
        order = (False, True) if step % 2 else (True, False)
        out = {trim: run(step, trim) for trim in order}
        if step < 2:
            continue
        for trim in order:
            times[trim].append(out[trim][0])
        ratios.append(out[True][0] / out[False][0])
        shares.append(out[True][2])
        diff = max(diff, float((out[True][1] - out[False][1]).abs().max() / out[False][1].abs().max()))
    ratios.sort()
    q = len(ratios) // 4
    return {
        "config": preset,
        "full_ms": 1e3 * statistics.median(times[False]),
        "trim_ms": 1e3 * statistics.median(times[True]),
        "saving": 1 - statistics.median(ratios),
        "low": 1 - ratios[-1 - q],
        "high": 1 - ratios[q],
        "left_out": statistics.mean(shares),
        "grad_diff": diff,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--configs", default="quickstart", help="comma-separated presets (arith/config/experiment)"
    )
    p.add_argument("--steps", type=int, default=80, help="timed pairs per preset")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        "| preset | untrimmed (median ms) | trimmed (median ms) | paired median saving (quartiles) | left out | grad diff |"
    )
    print("|---|---|---|---|---|---|")
    for preset in args.configs.split(","):
        r = pair_bench(preset, args.steps)
        print(
            f"| {r['config']} | {r['full_ms']:.1f} | {r['trim_ms']:.1f} | {100 * r['saving']:.1f}% "
            f"({100 * r['low']:.1f} to {100 * r['high']:.1f}) | {100 * r['left_out']:.0f}% | {r['grad_diff']:.1e} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
