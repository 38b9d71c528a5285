"""Benchmark dataset generation: build() 1M addition examples up to 20x20 digits into a temp dir.

    python scripts/bench_data.py                  # 1M rows, appends a dated section to docs/BENCHMARKS.md
    python scripts/bench_data.py --n 200000 --no-log

Prints seconds per stage (generate, arrow, save) and the linear extrapolation to 20M rows (the paper's
training-set size; goal: under 2 minutes).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import shutil
import sys
import tempfile
from pathlib import Path

from arith.cli import user_errors
from arith.data import datasets
from arith.schema import DataConfig, Task

ROOT = Path(__file__).resolve().parents[1]
TARGET = 20_000_000


@user_errors
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--max-len", type=int, default=20)
    p.add_argument("--no-log", action="store_true", help="do not append to docs/BENCHMARKS.md")
    args = p.parse_args()

    tmp = tempfile.mkdtemp(prefix="arith-bench-")
    try:
        cfg = DataConfig(task=Task.addition, max_len=args.max_len, n_train=args.n, root=tmp, name="bench")
        timings: dict[str, float] = {}
        datasets.build(cfg, progress=False, timings=timings)
        size = sum(f.stat().st_size for f in Path(tmp, "bench").rglob("*") if f.is_file())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    scale = TARGET / args.n
    lines = [f"{k:>9}: {v:7.2f} s" for k, v in timings.items()]
    how = "measured" if args.n == TARGET else f"x{scale:g}, linear"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux -> GiB
    lines.append(f"20M ({how}): {timings['total'] * scale:.1f} s")
    lines.append(f"on disk {size / 2**20:.0f} MiB, peak RSS {peak:.1f} GiB")
    print("\n".join(lines))
    if args.no_log:
        return

    machine = f"2-core CPU ({platform.processor() or platform.machine()}, os.cpu_count()={os.cpu_count()})"
    command = "python scripts/bench_data.py " + " ".join(sys.argv[1:])
    section = (
        f"\n## Data generation: {args.n:,} addition rows up to {args.max_len}x{args.max_len} "
        f"({datetime.date.today().isoformat()})\n\n"
        f"- command: `{command.strip()}`\n- machine: {machine}\n\n```\n" + "\n".join(lines) + "\n```\n"
    )
    bench = ROOT / "docs" / "BENCHMARKS.md"
    bench.parent.mkdir(exist_ok=True)
    text = bench.read_text() if bench.exists() else "# Benchmarks\n"
    bench.write_text(text.rstrip("\n") + "\n" + section)
    print(f"appended to {bench}")


if __name__ == "__main__":
    main()
