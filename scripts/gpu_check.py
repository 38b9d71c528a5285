"""The Python parts of scripts/gpu_check.sh (docs/GPU.md): each subcommand appends its numbers to a JSON-lines
results file, and `summary` turns that file into summary.md and summary.json.

    python scripts/gpu_check.py env      --results R [--dry-run]
    python scripts/gpu_check.py install  --results R --wheels .gpu_wheels [--dry-run]
    python scripts/gpu_check.py record   --results R --part c_bench_train --rc 0 --seconds 81.2 --limit 120
    python scripts/gpu_check.py pytest   --results R --log part.log
    python scripts/gpu_check.py bench    --results R --bench-json bench.jsonl
    torchrun --standalone --nproc_per_node=1 scripts/gpu_check.py dist --results R --work W [--dry-run]
    python scripts/gpu_check.py paper    --results R --run RUN --log part.log [--copy-csv OUT/diagonal.csv]
    python scripts/gpu_check.py grid     --results R --run RUN [--max-len 100 --sample-seconds 25 ...]
    python scripts/gpu_check.py summary  --results R --out OUT [--dry-run]

A record is {"part": NAME, "rc": ..., "seconds": ..., "limit": ..., "status": ...} (from the shell, one per
part) or {"part": NAME, "numbers": {...}} (from a subcommand; several merge). Module imports stay light:
torch and arith are imported inside the subcommands that need them.

The subcommands live here (env, install, pytest, bench), in gpu_check_runs.py next to it (dist, paper, grid: the
parts that train and evaluate arith) and in gpu_check_results.py (record, summary: the results file). Run as a
script, this file's folder is on sys.path, so both import as top-level modules, under torchrun too.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from gpu_check_results import cmd_record, cmd_summary, emit, numbers
from gpu_check_runs import cmd_dist, cmd_grid, cmd_paper

ROOT = Path(__file__).resolve().parents[1]

# what the wheels folder may provide (scripts/gpu_wheels.sh), by distribution and import name
WHEEL_PACKAGES = {
    "hydra-core": "hydra",
    "omegaconf": "omegaconf",
    "antlr4-python3-runtime": "antlr4",
    "datasets": "datasets",
    "dill": "dill",
    "multiprocess": "multiprocess",
    "fsspec": "fsspec",
    "pyarrow": "pyarrow",
}
IMPORTS = [
    "torch",
    "arith",
    "hydra",
    "omegaconf",
    "datasets",
    "safetensors",
    "tokenizers",
    "matplotlib",
    "tqdm",
]


# ---------------------------------------------------------------------------------------------- env
def suspects(doc: Path = ROOT / "docs" / "GPU.md") -> list[str]:
    """The bullets of docs/GPU.md's "Suspects still open" section (continuation lines joined)."""
    if not doc.exists():
        return []
    out, inside = [], False
    for line in doc.read_text().splitlines():
        if line.startswith("## "):
            inside = line.strip() == "## Suspects still open"
            continue
        if not inside:
            continue
        if line.startswith("- "):
            out.append(line[2:].strip())
        elif line.startswith("  ") and out:
            out[-1] += " " + line.strip()
    return out


def cmd_env(a) -> int:
    import platform

    import torch

    info = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "dry_run": a.dry_run,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            capability=f"{p.major}.{p.minor}",
            gpu_mem_gib=round(p.total_memory / 2**30, 1),
            sms=p.multi_processor_count,
        )
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=15,
            )
            info["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, IndexError):
            info["driver"] = None
    else:
        info["gpu"] = f"none (CPU {platform.machine()}, {os.cpu_count()} cores)"
    print(f"torch {info['torch']} (CUDA {info['cuda']}), Python {info['python']}, {info['gpu']}")
    print("suspects still open (docs/GPU.md):")
    for s in suspects():
        print(f"  - {s}")
    emit(a.results, "env", info=info)
    numbers(a.results, "env", **{k: v for k, v in info.items() if k != "dry_run"})
    return 0


# ---------------------------------------------------------------------------------------------- a: install
def _installed(dist: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _pip(args: list[str], timeout: float) -> int:
    cmd = [sys.executable, "-m", "pip", *args]
    print("$ " + " ".join(cmd), flush=True)
    try:
        return subprocess.run(cmd, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return 124


def cmd_install(a) -> int:
    """arith and its dependencies from what the image has plus the wheels folder; never the image's torch."""
    wheels = Path(a.wheels)
    have = sorted(p.name for p in wheels.glob("*.whl")) if wheels.is_dir() else []
    before = {d: _installed(d) for d in ["torch", "numpy", *WHEEL_PACKAGES]}
    pins = [f"{d}=={v}" for d in ("torch", "numpy") if (v := before[d])]
    constraints = Path(a.work) / "constraints.txt"
    constraints.parent.mkdir(parents=True, exist_ok=True)
    constraints.write_text("".join(p + "\n" for p in pins))
    print(f"wheels: {len(have)} in {wheels}; pinned: {', '.join(pins)}", flush=True)
    base = [
        "install",
        "--no-index",
        "--find-links",
        str(wheels),
        "--no-build-isolation",
        "-c",
        str(constraints),
    ]
    dry = ["--dry-run"] if a.dry_run else []
    t0 = time.perf_counter()
    rc = _pip([*base, *dry, "-e", str(ROOT)], timeout=a.timeout)
    fallback = None
    if rc != 0 and not a.dry_run:
        # the resolver failed (a requirement the image and the folder cannot meet together): install what is
        # missing from the folder as it is, and arith without its dependencies
        missing = [d for d in WHEEL_PACKAGES if before[d] is None and any(_stem(d) in w for w in have)]
        fallback = missing
        rc_w = _pip([*base, "--no-deps", *missing], timeout=a.timeout) if missing else 0
        rc_e = _pip([*base, "--no-deps", "-e", str(ROOT)], timeout=a.timeout)
        rc = rc_w or rc_e
    seconds = time.perf_counter() - t0
    after = {d: _installed(d) for d in before}
    probe = subprocess.run(
        [sys.executable, "-c", f"import {', '.join(IMPORTS)}; print('imports ok')"],
        capture_output=True,
        text=True,
        cwd="/",  # arith from the install (or PYTHONPATH), not from the working directory
    )
    print(probe.stdout + probe.stderr, flush=True)
    changed = {d: [before[d], after[d]] for d in before if before[d] != after[d]}
    numbers(
        a.results,
        "a_install",
        wheels=len(have),
        pip_rc=rc,
        pip_seconds=round(seconds, 1),
        fallback_no_deps=fallback,
        installed_now=changed,
        torch_unchanged=before["torch"] == after["torch"],
        imports_ok=probe.returncode == 0,
        versions={d: after[d] for d in after},
    )
    return 0 if rc == 0 and probe.returncode == 0 and before["torch"] == after["torch"] else 1


def _stem(dist: str) -> str:
    return dist.replace("-", "_") + "-"


# ---------------------------------------------------------------------------------------------- b: pytest
def cmd_pytest(a) -> int:
    text = Path(a.log).read_text(errors="replace") if Path(a.log).exists() else ""
    counts = {}
    for line in reversed(text.splitlines()):  # the last summary line: "3 passed, 2 skipped, 1 failed in 4.2s"
        found = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", line)
        if found and re.search(r" in [\d.]+s", line):
            counts = {k.rstrip("s") if k.startswith("error") else k: int(n) for n, k in found}
            break
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, flags=re.M)
    numbers(a.results, "b_cuda_tests", **counts, failing=failed[:20], summary_found=bool(counts))
    return 0


# ---------------------------------------------------------------------------------------------- c: bench
def cmd_bench(a) -> int:
    path = Path(a.bench_json)
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    keep = [
        "config",
        "attention",
        "compile",
        "shape",
        "params_m",
        "batch",
        "step_ms",
        "data_ms",
        "tok_s",
        "tflops",
        "mfu",
        "mem_gib",
        "recompiles_timed",
        "graphs_timed",
        "sync_warnings_timed",
        "sync_messages",
    ]
    table = [{k: r.get(k) for k in keep} for r in rows]
    by = {(r["config"], r["attention"]): r for r in rows}
    out = {"rows": table}
    if rows:
        out["machine"], out["torch"] = rows[0].get("machine"), rows[0].get("torch")
        out["peak_tflops"] = rows[0].get("peak_tflops")
    nope = by.get(("nope_16x1", "sdpa"))
    for att in ("sdpa", "flex"):
        fire = by.get(("fire_16x1", att))
        if nope and fire:
            out[f"fire_{att}_over_nope_sdpa"] = round(fire["step_ms"] / nope["step_ms"], 3)
    if not any(r["attention"] == "flex" for r in rows):
        out["flex"] = "not run (the dry run skips it: FlexAttention has no CPU backward)"
    paper = by.get(("paper_16x1", "sdpa"))
    if paper:
        out["paper_16x1_mfu"] = round(paper["mfu"], 4)
    out["recompiles_timed_total"] = sum(r.get("recompiles_timed") or 0 for r in rows)
    syncs = [r.get("sync_warnings_timed") for r in rows if r.get("sync_warnings_timed") is not None]
    out["sync_warnings_timed_total"] = sum(syncs) if syncs else None
    numbers(a.results, "c_bench_train", **out)
    return 0 if rows else 1


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name, fn, **kw):
        s = sub.add_parser(name, **kw)
        s.add_argument("--results", required=True)
        s.add_argument("--dry-run", action="store_true")
        s.set_defaults(fn=fn)
        return s

    add("env", cmd_env)
    s = add("install", cmd_install)
    s.add_argument("--wheels", default=str(ROOT / ".gpu_wheels"))
    s.add_argument("--work", required=True)
    s.add_argument("--timeout", type=float, default=40)
    s = add("record", cmd_record)
    s.add_argument("--part", required=True)
    s.add_argument("--rc", type=int, required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--limit", type=float, default=None)
    s.add_argument("--status", default="")
    s = add("pytest", cmd_pytest)
    s.add_argument("--log", required=True)
    s = add("bench", cmd_bench)
    s.add_argument("--bench-json", required=True)
    s = add("dist", cmd_dist)
    s.add_argument("--work", required=True)
    s.add_argument("--steps", type=int, default=20)
    s = add("paper", cmd_paper)
    s.add_argument("--run", required=True)
    s.add_argument("--log", default=None)
    s.add_argument("--copy-csv", default=None)
    s = add("grid", cmd_grid)
    s.add_argument("--run", required=True)
    s.add_argument("--max-len", type=int, default=100)
    s.add_argument("--n", type=int, default=100, help="problems per cell")
    s.add_argument("--batch", type=int, default=256)
    s.add_argument("--max-cells", type=int, default=60)
    s.add_argument("--sample-seconds", type=float, default=25)
    s.add_argument("--compare-cells", type=int, default=10)
    s.add_argument("--compare-n", type=int, default=100)
    s.add_argument("--threads", type=int, default=0)
    s.add_argument("--untrained", action="store_true", help="the run is a stand-in (part e left none)")
    s = add("summary", cmd_summary)
    s.add_argument("--out", required=True)
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
