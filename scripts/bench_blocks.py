"""Blocks side by side at the quick start size: parameters and training step time of each `model.block`.

    python scripts/bench_blocks.py [--steps 60] [--device cpu] [--out docs/BENCHMARKS.md] [overrides ...]

Every block trains the quick start model (`+experiment=quickstart`: width 128, one layer looped 4 times, input
injection, Abacus, batch 128, addition up to 8 digits, progressive loss, AdamW) on the same streaming batches.
Blocks take turns at every step (in a rotating order) and see the same batches, depths and offsets, so the
drift of a shared machine hits them alike. The table gives the median wall-clock and CPU (process) seconds per
optimizer step, and the median over steps of each block's time relative to pre-LN's at the same step (the
robust comparison on a busy machine); it is appended to docs/BENCHMARKS.md with the command, machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from arith.cli import append_section, user_errors

ROOT = Path(__file__).resolve().parents[1]


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per block")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    parser.add_argument("--out", default="docs/BENCHMARKS.md", help="markdown file to append to; '' = none")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. model.width=256")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from hydra import compose, initialize_config_dir

    from arith import schema
    from arith.data.datasets import make_batches
    from arith.model import BLOCKS, build_model
    from arith.optim import build_optimizer
    from arith.train import forward_loss

    schema.register()
    device = torch.device(args.device)
    runs = {}
    with initialize_config_dir(config_dir=str(ROOT / "arith" / "config"), version_base="1.3"):
        for block in BLOCKS:
            cfg = compose("pretrain", ["+experiment=quickstart", f"model.block={block}", *args.overrides])
            torch.manual_seed(cfg.train.seed)
            batches, tok = make_batches(cfg.data, cfg.train.batch_size, cfg.train.seed)
            model = build_model(cfg.model, tok).to(device).train()
            runs[block] = dict(
                cfg=cfg, tok=tok, batches=batches, model=model, opt=build_optimizer(model, cfg.train)
            )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(run: dict, i: int) -> tuple[float, float]:
        ids = run["batches"].batch(i).to(device)
        torch.manual_seed(i)  # the same progressive-loss depths and offsets for every block at step i
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        with autocast:
            loss = forward_loss(run["model"], run["model"], ids, run["cfg"], run["tok"])
        run["opt"].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run["model"].parameters(), run["cfg"].train.clip)
        run["opt"].step()
        sync()
        run["loss"] = loss.item()
        return time.perf_counter() - t0, time.process_time() - c0

    times: dict[str, list[tuple[float, float]]] = {b: [] for b in runs}
    for run in runs.values():  # warm-up: allocator, kernels, first-call paths
        for i in range(3):
            step(run, i)
    names = list(runs)
    for i in range(args.steps):
        for b in names[i % len(names) :] + names[: i % len(names)]:
            times[b].append(step(runs[b], 3 + i))

    def medians(b: str) -> tuple[float, float, float, float]:
        """(wall, CPU) seconds per step, then the medians of the per-step ratios to pre-LN (wall, CPU)."""
        pairs = list(zip(times[b], times["pre_ln"]))
        return (
            statistics.median(t for t, _ in times[b]),
            statistics.median(c for _, c in times[b]),
            statistics.median(t / t0 for (t, _), (t0, _) in pairs),
            statistics.median(c / c0 for (_, c), (_, c0) in pairs),
        )

    base_p = runs["pre_ln"]["model"].num_params()
    cfg = runs["pre_ln"]["cfg"]
    extra = "".join(f" {o}" for o in args.overrides)
    where = (
        f"{torch.cuda.get_device_name(device)}"
        if device.type == "cuda"
        else f"{os.cpu_count()}-core CPU ({platform.machine()}), {torch.get_num_threads()} threads"
    )
    lines = [
        f"## Blocks at the quick start size{' with' + extra if extra else ''}: parameters and step time "
        f"({datetime.date.today().isoformat()})",
        "",
        f"- command: `python scripts/bench_blocks.py --steps {args.steps} --device {args.device}{extra}`",
        f"- machine: {where}, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at the end",
        f"- model: width {cfg.model.width}, ffn {cfg.model.ffn}, {cfg.model.heads} heads, "
        f"{cfg.model.layers}x{cfg.model.recurrences}, {cfg.model.abs_pos}, batch {cfg.train.batch_size}, "
        f"addition up to {cfg.data.max_len} digits, AdamW, progressive loss; "
        f"{args.steps} timed steps per block, interleaved step by step",
        "",
        "| block | parameters | vs pre_ln | s/step (wall) | vs pre_ln | CPU s/step | vs pre_ln |",
        "|---|---|---|---|---|---|---|",
    ]
    for b, run in runs.items():
        p, (t, c, rt, rc) = run["model"].num_params(), medians(b)
        lines.append(
            f"| {b} | {p:,} | {p / base_p - 1:+.1%} | {t:.4f} | {rt - 1:+.1%} | {c:.4f} | {rc - 1:+.1%} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    print("loss after the last step (a sanity check, not a comparison):")
    print(", ".join(f"{b} {run['loss']:.3f}" for b, run in runs.items()))
    if args.out:
        append_section(ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
