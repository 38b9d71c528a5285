"""The GPU check's parts that train and evaluate arith (scripts/gpu_check.sh, docs/GPU.md): d_dist (a tiny run
inside a torchrun group), e_paper_run (the numbers of the paper-style run) and f_grid (a sample of the grid
timed, bf16 against float32). Each appends its numbers to the results file; torch and arith are imported inside
the subcommands. scripts/gpu_check.py, next to it, runs them."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from gpu_check_results import numbers

ROOT = Path(__file__).resolve().parents[1]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from arith import schema

    schema.register()
    with initialize_config_dir(config_dir=str(ROOT / "arith" / "config"), version_base="1.3"):
        return hydra_compose(config_name="pretrain", overrides=overrides)


# ---------------------------------------------------------------------------------------------- d: dist
# the run trained inside the group: arith.tiny's, with these on top
DIST_RUN = ("train.warmup=0", "train.cooldown=0", "train.log_every=5", "name=dist_check")


def cmd_dist(a) -> int:
    """Under torchrun: a process group (NCCL on CUDA, gloo on CPU), an all-reduce, one DDP step, then a tiny
    training run inside the group, saved at `steps` and resumed to 2 x steps."""
    import torch
    import torch.distributed as tdist

    from arith import checkpoint, dist
    from arith.tiny import tiny_overrides
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
        extra = [*tiny_overrides(*DIST_RUN), f"runs_root={runs}", "train.compile=false"]
        if a.dry_run:
            extra.append("train.threads=1")
        t1 = time.perf_counter()
        run_dir = train(compose([*extra, f"train.steps={a.steps}"]))
        out["train_s"] = round(time.perf_counter() - t1, 2)
        first = checkpoint.latest(run_dir)
        t2 = time.perf_counter()
        train(compose([*extra, f"train.steps={2 * a.steps}"]))  # the same run: resumes
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
