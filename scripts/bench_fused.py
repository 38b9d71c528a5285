"""Forward + backward of the GLU gate and the q/k/v split: autograd's plain ops against arith/model/fused.py.

    python scripts/bench_fused.py [--batch 128] [--tokens 28] [--width 128] [--heads 4] [--threads 2] [--reps 200]

The shapes default to the quick start's (128 rows of about 28 tokens, width 128, FFN 512, four heads). Each
variant runs `--reps` times in each of 5 interleaved rounds; the table gives the median microseconds a call and
each round's median. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's arith, not an installed one

from arith.model.fused import gelu_gate, split_heads  # noqa: E402


def plain_gate(h: torch.Tensor) -> torch.Tensor:
    a, b = h.chunk(2, dim=-1)
    return F.gelu(a) * b


def plain_split(x: torch.Tensor, n: int, heads: int) -> tuple[torch.Tensor, ...]:
    B, T, C = x.shape
    return x.view(B, T, n, heads, C // (n * heads)).permute(2, 0, 3, 1, 4).unbind(0)


def median_us(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=28)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    if args.width % args.heads:
        ap.error(f"--width {args.width} is not a multiple of --heads {args.heads}")
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    B, T, C, H = args.batch, args.tokens, args.width, args.heads
    h = torch.randn(B, T, 4 * C, generator=gen, requires_grad=True)  # the GLU's input projection, FFN = 4C
    g_h = torch.randn(B, T, 2 * C, generator=gen)
    x = torch.randn(B, T, 3 * C, generator=gen, requires_grad=True)  # the fused q/k/v projection
    g_x = [torch.randn(B, H, T, C // H, generator=gen) for _ in range(3)]

    def split_step(split):  # each part read once, as attention reads q, k and v
        return lambda: torch.autograd.grad([p * 1.0 for p in split(x, 3, H)], x, g_x)

    variants = {
        "GLU gate, autograd": lambda: torch.autograd.grad(plain_gate(h), h, g_h),
        "GLU gate, fused": lambda: torch.autograd.grad(gelu_gate(h), h, g_h),
        "q/k/v split, autograd": split_step(plain_split),
        "q/k/v split, fused": split_step(split_heads),
    }
    rounds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(5):
        for name, fn in variants.items():
            rounds[name].append(median_us(fn, args.reps))
    print(f"batch {B}, {T} tokens, width {C}, {H} heads, {args.threads} threads, torch {torch.__version__}\n")
    print("| op | median us a call | rounds |\n|---|---|---|")
    for name, values in rounds.items():
        print(f"| {name} | {statistics.median(values):,.0f} | {' / '.join(f'{v:,.0f}' for v in values)} |")


if __name__ == "__main__":
    main()
