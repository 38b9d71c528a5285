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

ROOT = Path(__file__).resolve().parents[1]

PARTS = {
    "env": "torch, GPU, date; the open suspects (docs/GPU.md)",
    "a_install": "install arith offline (the image + .gpu_wheels)",
    "b_cuda_tests": "CUDA tests: pytest -k 'cuda or fast_paths'",
    "c_bench_train": "bench_train.py: 16x1 NoPE / FIRE / Abacus, sdpa and flex",
    "d_dist": "torchrun, one process: group, all-reduce, DDP, save, resume",
    "e_paper_run": "paper-style addition run, then the diagonal 1..100 (KV cache)",
    "f_grid": "100x100 grid sample extrapolated; bf16 vs float32 answers",
}
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


def emit(results: str | Path, part: str, **record) -> None:
    with open(results, "a") as f:
        f.write(json.dumps({"part": part, **record}, default=str) + "\n")


def numbers(results, part: str, **values) -> None:
    emit(results, part, numbers=values)
    for k, v in values.items():
        shown = f"{len(v)} rows" if isinstance(v, list) and v and isinstance(v[0], dict) else v
        print(f"  {part}: {k} = {shown}", flush=True)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from arith import schema

    schema.register()
    with initialize_config_dir(config_dir=str(ROOT / "arith" / "config"), version_base="1.3"):
        return hydra_compose(config_name="pretrain", overrides=overrides)


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


# ---------------------------------------------------------------------------------------------- d: dist
TINY = [
    "model.width=32",
    "model.heads=2",
    "model.ffn=64",
    "model.layers=1",
    "model.recurrences=2",
    "model.max_pos=32",
    "model.max_k=5",
    "data.max_len=3",
    "data.streaming=true",
    "train.batch_size=16",
    "train.lr=3e-3",
    "train.warmup=0",
    "train.cooldown=0",
    "train.progress=false",
    "train.log_every=5",
    "name=dist_check",
]


def cmd_dist(a) -> int:
    """Under torchrun: a process group (NCCL on CUDA, gloo on CPU), an all-reduce, one DDP step, then a tiny
    training run inside the group, saved at `steps` and resumed to 2 x steps."""
    import torch
    import torch.distributed as tdist

    from arith import checkpoint, dist
    from arith.train import train

    cuda = torch.cuda.is_available() and not a.dry_run
    backend = "nccl" if cuda else "gloo"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    out: dict = {"backend": backend, "world": int(os.environ.get("WORLD_SIZE", "1"))}
    ok = True
    t0 = time.perf_counter()
    if cuda:
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend=backend)
    out["init_s"] = round(time.perf_counter() - t0, 2)
    try:
        x = torch.arange(4, dtype=torch.float32, device=device) + 1
        tdist.all_reduce(x)
        want = (torch.arange(4, dtype=torch.float32) + 1) * tdist.get_world_size()
        out["all_reduce_ok"] = bool(torch.equal(x.cpu(), want))
        ok &= out["all_reduce_ok"]

        from torch.nn.parallel import DistributedDataParallel as DDP

        torch.manual_seed(0)
        lin = torch.nn.Linear(8, 4).to(device)
        ref = torch.nn.Linear(8, 4).to(device)
        ref.load_state_dict(lin.state_dict())
        ddp = DDP(lin, device_ids=[local] if cuda else None)
        inp = torch.randn(16, 8, device=device)
        ddp(inp).square().mean().backward()
        ref(inp).square().mean().backward()
        # DDP averages the ranks' gradients; every rank saw the same input, so the average is the local one
        out["ddp_grad_ok"] = bool(torch.allclose(lin.weight.grad, ref.weight.grad, atol=1e-6))
        ok &= out["ddp_grad_ok"]

        runs = Path(a.work) / "dist_runs"
        extra = [f"runs_root={runs}", "train.compile=false"]
        if a.dry_run:
            extra.append("train.threads=1")
        t1 = time.perf_counter()
        run_dir = train(compose([*TINY, *extra, f"train.steps={a.steps}"]))
        out["train_s"] = round(time.perf_counter() - t1, 2)
        first = checkpoint.latest(run_dir)
        t2 = time.perf_counter()
        train(compose([*TINY, *extra, f"train.steps={2 * a.steps}"]))  # the same run: resumes
        out["resume_s"] = round(time.perf_counter() - t2, 2)
        last = checkpoint.latest(run_dir)
        logged = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        out["logged_steps"] = [r["step"] for r in logged if "loss" in r]
        out["saved_step"] = None if first is None else int(first.name)
        out["resumed_to"] = None if last is None else int(last.name)
        out["resume_ok"] = out["saved_step"] == a.steps and out["resumed_to"] == 2 * a.steps
        ok &= out["resume_ok"]
        dist.barrier()
    except Exception as e:  # recorded, then raised: the part fails with the traceback in its log
        out["error"] = f"{type(e).__name__}: {e}"[:500]
        ok = False
        raise
    finally:
        if dist.is_main():
            numbers(a.results, "d_dist", ok=ok, **out)
        dist.cleanup(synchronize=ok)
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------- e: paper
def cmd_paper(a) -> int:
    """Training numbers of the paper-style run (metrics.jsonl, the log's recompiles) and its diagonal CSV."""
    import csv
    import shutil

    run = Path(a.run)
    out: dict = {"run": run.name}
    log = Path(a.log).read_text(errors="replace") if a.log and Path(a.log).exists() else ""
    out["recompile_log_lines"] = len(re.findall(r"Recompiling function", log))
    m = re.search(r"run \S+: ([\d.]+)M parameters on (\S+), world (\d+)", log)
    if m:
        out["params_m"], out["device"] = float(m.group(1)), m.group(2)
    metrics = run / "metrics.jsonl"
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.exists() else []
    rows = [r for r in rows if "loss" in r]
    if rows:
        last = rows[-1]
        out.update(
            steps=last["step"],
            train_minutes=round(last.get("elapsed_s", 0) / 60, 2),
            final_loss=round(last["loss"], 5),
            tokens_per_s=round(last.get("tokens_per_s", 0)),
            tokens=last.get("tokens"),
        )
    csvs = sorted((run / "eval").glob("*.csv")) if (run / "eval").is_dir() else []
    cells = []
    for path in csvs:
        with open(path, newline="") as f:
            cells += [
                (int(r["a_len"]), float(r["acc"])) for r in csv.DictReader(f) if r["a_len"] == r["b_len"]
            ]
    cells.sort()
    if cells:
        accs = dict(cells)
        out.update(
            diagonal_cells=len(cells),
            diagonal_mean_acc=round(sum(accs.values()) / len(accs), 4),
            diagonal_min_acc=min(accs.values()),
            diagonal_cells_ge_99=sum(v >= 0.99 for v in accs.values()),
            diagonal_last_len=cells[-1][0],
            diagonal_acc={str(k): v for k, v in cells[:: max(1, len(cells) // 10)]},
        )
        if a.copy_csv:
            shutil.copyfile(csvs[-1], a.copy_csv)
    m = re.search(r"(\d+) cells in ([\d.]+)s, mean accuracy", log)
    if m:
        out["diagonal_seconds"] = float(m.group(2))
    numbers(a.results, "e_paper_run", **out)
    return 0 if rows and cells else 1


# ---------------------------------------------------------------------------------------------- f: grid
def cmd_grid(a) -> int:
    """A random sample of the L x L grid's cells timed as the grid runner decodes them (bf16 autocast on CUDA,
    KV cache), extrapolated to every cell; then bf16 against float32 greedy answers on cells x n problems."""
    from contextlib import nullcontext

    import numpy as np
    import torch

    import arith
    from arith.data.spec import Cell
    from arith.data.tasks import eval_cell, task_for
    from arith.eval import settings as eval_settings
    from arith.eval.quick import evaluate_cell, evaluate_cells
    from arith.eval.runner import groups
    from arith.eval.vote import decode, whole_answer

    if a.threads:
        torch.set_num_threads(a.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    run = arith.load(a.run, device)
    spec = task_for(run.cfg.data)
    s = eval_settings.for_run(run)
    kw = dict(k=s.k, recurrences=s.recurrences, vote_ks=s.vote_ks, vote_mode=s.vote_mode or "answer")

    def bf16():
        return torch.autocast(device, dtype=torch.bfloat16)

    out: dict = {"device": device, "run": Path(a.run).name, "step": run.step, "untrained": a.untrained}
    L, rng = a.max_len, np.random.default_rng(0)
    cells = [(int(i) // L + 1, int(i) % L + 1) for i in rng.permutation(L * L)]
    # the runner's groups (cells of one length sum share decoding calls of up to --batch problems), in random order
    grid = groups([Cell(i, j) for i in range(1, L + 1) for j in range(1, L + 1)], a.n, a.batch)
    order = rng.permutation(len(grid))
    with eval_settings.applied(run, s):
        with bf16() if device == "cuda" else nullcontext():  # as arith/eval/runner.py decodes
            evaluate_cell(run.model, run.tok, spec, L, L, a.n, 99, batch_size=a.batch, **kw)  # warm-up
            times, costs, n_cells, t_start = [], [], 0, time.perf_counter()
            for g in order[: a.max_cells]:
                group = [(c.a_len, c.b_len) for c in grid[g]]
                t0 = time.perf_counter()
                evaluate_cells(run.model, run.tok, spec, group, a.n, 1234, batch_size=a.batch, **kw)
                times.append(time.perf_counter() - t0)
                costs.append(sum(spec.cell_cost(*c) for c in group))
                n_cells += len(group)
                if time.perf_counter() - t_start > a.sample_seconds:
                    break
        all_cost = sum(spec.cell_cost(i, j) for i in range(1, L + 1) for j in range(1, L + 1))
        mean = float(np.mean(times))
        sem = float(np.std(times, ddof=1) / np.sqrt(len(times))) if len(times) > 1 else float("nan")
        out.update(
            grid=f"{L}x{L}",
            n_per_cell=a.n,
            batch=a.batch,
            problems=L * L * a.n,
            groups=len(grid),
            sampled_groups=len(times),
            sampled_cells=n_cells,
            sample_seconds=round(sum(times), 2),
            group_seconds_mean=round(mean, 4),
            grid_minutes_est=round(
                len(grid) * mean / 60, 2
            ),  # uniform sample of groups: unbiased for the total
            grid_minutes_est_sem=round(len(grid) * sem / 60, 2),
            grid_minutes_est_by_cost=round(sum(times) / sum(costs) * all_cost / 60, 2),
            problems_per_s=round(n_cells * a.n / sum(times), 1),
        )
        numbers(
            a.results, "f_grid", **out
        )  # the timing is kept even if the comparison below runs out of time
        out = {}

        # bf16 against float32: the same prompts, greedy, whole answers up to EOS
        pick = [
            cells[i] for i in rng.choice(len(cells), size=min(a.compare_cells, len(cells)), replace=False)
        ]
        total = disagree = right16 = right32 = 0
        where = []
        for a_len, b_len in pick:
            ex = eval_cell(spec, run.tok, a_len, b_len, a.compare_n, 4321)
            max_new = int((ex.length - ex.prompt_len).max())
            for p in np.unique(ex.prompt_len):
                idx = np.flatnonzero(ex.prompt_len == p)
                prompts = torch.as_tensor(ex.ids[idx, :p], device=device)
                outs = {}
                for name, ctx in (("bf16", bf16()), ("fp32", nullcontext())):
                    with ctx:
                        outs[name] = decode(run.model, prompts, max_new, run.tok.eos_id, run.tok.pad_id, **kw)
                    outs[name] = outs[name].cpu().tolist()
                for j, i in enumerate(idx):
                    truth = tuple(ex.ids[i, p : ex.length[i]].tolist())
                    x = whole_answer(outs["bf16"][j], run.tok.eos_id)
                    y = whole_answer(outs["fp32"][j], run.tok.eos_id)
                    total += 1
                    disagree += x != y
                    right16 += x == truth
                    right32 += y == truth
                    if x != y and len(where) < 10:
                        where.append(f"{a_len}x{b_len}")
    out.update(
        compare_problems=total,
        compare_cells=[f"{i}x{j}" for i, j in pick],
        bf16_fp32_disagreements=disagree,
        disagreement_cells=where,
        bf16_correct=right16,
        fp32_correct=right32,
        tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
    )
    numbers(a.results, "f_grid", **out)
    return 0


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
