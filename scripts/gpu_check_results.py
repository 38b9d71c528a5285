"""The GPU check's results file (scripts/gpu_check.sh, docs/GPU.md): records go in one JSON line each (`emit`,
`numbers`, the `record` subcommand), and the `summary` subcommand turns them into summary.md and summary.json.
Standard library only; scripts/gpu_check.py and scripts/gpu_check_runs.py import it."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

PARTS = {
    "env": "torch, GPU, date; the open suspects (docs/GPU.md)",
    "a_install": "install arith offline (the image + .gpu_wheels)",
    "b_cuda_tests": "CUDA tests: pytest -k 'cuda or fast_paths'",
    "c_bench_train": "bench_train.py: 16x1 NoPE / FIRE / Abacus, sdpa and flex",
    "d_dist": "torchrun, one process: group, all-reduce, DDP, save, resume",
    "e_paper_run": "paper-style addition run, then the diagonal 1..100 (KV cache)",
    "f_grid": "100x100 grid sample extrapolated; bf16 vs float32 answers",
}


def emit(results: str | Path, part: str, **record) -> None:
    with open(results, "a") as f:
        f.write(json.dumps({"part": part, **record}, default=str) + "\n")


def numbers(results, part: str, **values) -> None:
    emit(results, part, numbers=values)
    for k, v in values.items():
        shown = f"{len(v)} rows" if isinstance(v, list) and v and isinstance(v[0], dict) else v
        print(f"  {part}: {k} = {shown}", flush=True)


# ---------------------------------------------------------------------------------------------- record / summary
def cmd_record(a) -> int:
    emit(a.results, a.part, rc=a.rc, seconds=a.seconds, limit=a.limit, status=a.status)
    return 0


def load(results: Path) -> tuple[dict, dict]:
    def blank(title: str) -> dict:
        return {
            "title": title,
            "rc": None,
            "seconds": None,
            "limit": None,
            "status": "missing",
            "numbers": {},
        }

    parts = {name: blank(title) for name, title in PARTS.items()}
    info: dict = {}
    for line in results.read_text().splitlines() if results.exists() else []:
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        p = parts.setdefault(r["part"], blank(r["part"]))
        if "info" in r:
            info.update(r["info"])
        if "numbers" in r:
            p["numbers"].update(r["numbers"])
        if "rc" in r:
            p.update({k: r[k] for k in ("rc", "seconds", "limit", "status")})
    return parts, info


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    if isinstance(v, (dict, list)):
        return "`" + json.dumps(v, default=str) + "`"
    return str(v)


def bench_table(rows: list[dict], peak) -> list[str]:
    out = [
        "| config | attention | model | params | batch | step (ms) | data (ms) | tokens/s | TFLOP/s | MFU "
        "| peak mem (GiB) | recompiles | sync warnings |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sync = "-" if r.get("sync_warnings_timed") is None else r["sync_warnings_timed"]
        out.append(
            f"| {r['config']} | {r['attention']} | {r['shape']} | {r['params_m']:.1f}M | {r['batch']} "
            f"| {r['step_ms']:.1f} | {r['data_ms']:.1f} | {r['tok_s']:,.0f} | {r['tflops']:.3f} "
            f"| {100 * r['mfu']:.1f}% | {r['mem_gib']:.2f} | {r.get('recompiles_timed')} | {sync} |"
        )
    return out + ["", f"MFU against {peak:g} TFLOP/s." if peak else "", ""]


def cmd_summary(a) -> int:
    out = Path(a.out)
    parts, info = load(Path(a.results))
    total = sum(p["seconds"] or 0 for p in parts.values())
    doc = {
        "date": info.get("date", datetime.date.today().isoformat()),
        "dry_run": a.dry_run,
        "env": info,
        "total_seconds": round(total, 1),
        "parts": parts,
    }
    (out / "summary.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    gpu = info.get("gpu", "?")
    md = [
        f"# GPU check{' (dry run, CPU)' if a.dry_run else ''}: {gpu}, torch {info.get('torch', '?')}, "
        f"{doc['date']}",
        "",
        f"Python {info.get('python', '?')}, CUDA {info.get('cuda')}, driver {info.get('driver', '-')}; "
        f"{total:.0f} s in all. Record these in docs/BENCHMARKS.md and docs/RESULTS.md (docs/GPU.md).",
        "",
        "| part | what | status | rc | seconds | limit |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in parts.items():
        sec = "-" if p["seconds"] is None else f"{p['seconds']:.1f}"
        md.append(f"| {name} | {p['title']} | {p['status']} | {p['rc']} | {sec} | {p.get('limit')} |")
    for name, p in parts.items():
        md += ["", f"## {name}: {p['title']}", "", f"status {p['status']}, rc {p['rc']}", ""]
        nums = dict(p["numbers"])
        rows = nums.pop("rows", None)
        if rows:
            md += bench_table(rows, nums.get("peak_tflops"))
        md += [f"- {k}: {_fmt(v)}" for k, v in nums.items()]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0
