"""Decoding speed: problems/s with and without the KV cache, on the quick start model, in one run.

    python pretrain.py +experiment=quickstart        # once, to have the model
    python scripts/bench_eval.py [--run runs/quickstart] [--digits 40] [--n 256] [--out docs/BENCHMARKS.md]

Both paths decode the same prompts greedily and must return identical tokens (checked); the numbers and the
speed-up are printed and appended to docs/BENCHMARKS.md with the command, machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch

from arith.cli import append_section, user_errors


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path(os.environ.get("ARITH_RUNS", "runs")) / "quickstart")
    parser.add_argument("--digits", type=int, default=40)
    parser.add_argument("--n", type=int, default=256, help="problems per path")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", default="docs/BENCHMARKS.md", help="markdown file to append to; '' = none")
    parser.add_argument("--device", default="auto", help="auto (CUDA when visible), cpu or cuda")
    args = parser.parse_args(argv)

    import arith
    from arith.data.tasks import eval_cell
    from arith.dist import pick_device
    from arith.errors import ArithError
    from arith.eval.decode import generate

    device = pick_device(args.device)
    try:
        run = arith.load(args.run, device)
    except ArithError as e:
        print(f"error: {e} (train it with: python pretrain.py +experiment=quickstart)", file=sys.stderr)
        return 2
    task = run.cfg.data.task.value
    ex = eval_cell(task, run.tok, args.digits, args.digits, args.n, seed=0)
    prompt_len = int(ex.prompt_len[0])
    max_new = int((ex.length - ex.prompt_len).max())
    prompts = torch.as_tensor(ex.ids[:, :prompt_len], device=device)

    def decode(use_cache: bool) -> tuple[float, torch.Tensor]:
        outs, t0 = [], time.perf_counter()
        for i in range(0, args.n, args.batch):
            outs.append(
                generate(
                    run.model,
                    prompts[i : i + args.batch],
                    max_new,
                    run.tok.eos_id,
                    run.tok.pad_id,
                    use_cache=use_cache,
                )
            )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.n / (time.perf_counter() - t0), torch.cat(outs).cpu()

    decode(True)  # warm-up
    cached, a = decode(True)
    uncached, b = decode(False)
    assert torch.equal(a, b), "cached and uncached decoding disagree"
    answers_right = sum(
        int(
            torch.equal(
                a[i, : ex.length[i] - prompt_len], torch.as_tensor(ex.ids[i, prompt_len : ex.length[i]])
            )
        )
        for i in range(args.n)
    )
    lines = [
        f"## Decoding with and without the KV cache ({datetime.date.today().isoformat()})",
        "",
        f"- command: `python scripts/bench_eval.py --run {args.run} --digits {args.digits} --n {args.n}`",
        f"- machine: {os.cpu_count()}-core CPU ({platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
        + (f"; decoding on {torch.cuda.get_device_name(device)} (float32)" if device.type == "cuda" else ""),
        f"- model: {args.run.name}, {run.model.num_params() / 1e6:.3f}M parameters, "
        f"{run.cfg.model.layers}x{run.cfg.model.recurrences}, {task} {args.digits}x{args.digits} digits, "
        f"batch {args.batch}, {max_new} new tokens",
        "",
        "| path | problems/s |",
        "|---|---|",
        f"| KV cache | {cached:.1f} |",
        f"| full recompute | {uncached:.1f} |",
        f"| speed-up | {cached / uncached:.2f}x |",
        "",
        f"Identical tokens on both paths; {answers_right}/{args.n} answers exactly right.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        append_section(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
