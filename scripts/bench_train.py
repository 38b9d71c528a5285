"""Training throughput per config: tokens/s and model FLOPs utilization (MFU), padded and useful, step time.

    python scripts/bench_train.py --device cuda                                  # the paper's configs, one GPU
    python scripts/bench_train.py --device cpu --configs quickstart --steps 20
    python scripts/bench_train.py --device cpu --configs paper_16x1,nope_16x1,fire_16x1 --steps 3 --batch 16
    python scripts/bench_train.py --device cuda --sync-debug --json rows.jsonl   # as scripts/gpu_check.sh runs it

Each config is a Hydra preset plus overrides (CONFIGS below), built with `build_model` and fed real streaming
batches from `make_batches`. A step is what `train()` does: fetch the batch, bf16 autocast (CUDA; CPU only with
train.cpu_bf16, or where it is null and the CPU has AMX), `forward_loss` (progressive loss included), backward,
gradient clipping, optimizer step (fused AdamW on CUDA); `--compile` compiles the layers as `train.compile` does,
and train.trim_prompt's last block application from the answer on (on a CPU without --compile by default; the
FLOPs below count the whole application, the work the model defines, so the MFU of a trimmed step reads higher).
Warm-up steps (compilation) are not timed; the table reports medians over the timed steps, which keeps late
recompilations out. Each row also counts the frames torch.compile (re)compiled during the timed steps, and with
--sync-debug (CUDA) the host-device synchronizations they made (torch.cuda.set_sync_debug_mode("warn")); --json
appends each row as a JSON line as soon as its config finishes; --override adds Hydra overrides to every config
(tiny sizes); --profile FILE runs the timed steps under torch.profiler and appends where the step's time goes (the
ops by self time, and by input shapes) to FILE: the profiler slows the steps it watches, so time without it.

FLOPs (matmuls only, counted per model call; embeddings, norms and softmax are left out):
    one layer, forward, per token:  2 * (4 C^2 + 1.5 C F) + 4 T C   (qkv + out proj, GELU-GLU FFN, QK^T and AV
                                                                    over the full T x T, PaLM's convention)
    the head, forward, per token:   2 C V
    training = 3 x forward for the layers run with gradient and the head, 1 x for the no-grad recurrences
with C width, F ffn, T the padded sequence length, V the vocabulary. The number of layer applications is
that of the call (progressive loss: n no-grad recurrences + k with gradient, drawn per step), so MFU is exact
for looped models too. For a standard model this is 6 N_matmul + 12 L T C per token.
MFU = model FLOPs per second / peak: H100 / H200 SXM bf16 dense 989 TFLOP/s (A100 312); on a CPU the peak
is measured: the best of a few 2048 x 2048 matmuls in the dtype the step computes in.

Useful (non-PAD) tokens, counted on the host from the row lengths of the very batches timed
(`Batches.counted_batch`, as `train()` counts them): "useful tokens/s" is the real tokens of the padded rows
(the sum of the examples' lengths) per second, beside "tokens/s" (rows x padded length, PAD included).
"useful MFU" applies the same FLOPs per token (padded T in the attention term included) to the useful input
positions only: those whose next token is real, a loss target (each row's length - 1, of the row's T - 1 input
positions); so useful MFU = MFU x useful input positions / input positions, and equals MFU without padding.
JSON keys beside the old ones: useful_tok_s, useful_fps (useful model FLOP/s), useful_mfu.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arith import dist, schema  # noqa: E402
from arith.cli import append_section, user_errors  # noqa: E402
from arith.data.datasets import make_batches  # noqa: E402
from arith.model import build_model  # noqa: E402
from arith.model.flex import set_attention_impl  # noqa: E402
from arith.optim import build_optimizer  # noqa: E402
from arith.step import answer_positions, trims  # noqa: E402
from arith.train import compile_blocks, forward_loss  # noqa: E402

PAPER = ["+experiment=paper_addition"]  # width 1024, FFN 2048, 16 heads, addition up to 20 digits
LOOPED = ["model.input_injection=add"]
CONFIGS: dict[str, list[str]] = {
    "paper_16x1": [*PAPER, "model.layers=16", "model.recurrences=1"],  # Abacus (goal: >= 45% MFU on H100)
    "paper_8x2": [*PAPER, "model.layers=8", "model.recurrences=2", *LOOPED],
    "paper_1x16": [*PAPER, "model.layers=1", "model.recurrences=16", *LOOPED],
    "nope_16x1": [*PAPER, "model.layers=16", "model.recurrences=1", "model.abs_pos=none"],
    "fire_16x1": [
        *PAPER,
        "model.layers=16",
        "model.recurrences=1",
        "model.abs_pos=none",
        "model.rel_pos=fire",
    ],
    "quickstart": ["+experiment=quickstart"],
    # each task's CPU main job (shells/quickstart.sh TASK)
    "quickstart_subtraction": ["+experiment=quickstart_subtraction"],
    "quickstart_bitwise_or": ["+experiment=quickstart_bitwise_or"],
    "quickstart_multiplication": ["+experiment=quickstart_multiplication"],
    "quickstart_sorting": ["+experiment=quickstart_sorting"],
}
GPU_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # bf16 dense, SXM


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    schema.register()
    with initialize_config_dir(config_dir=str(ROOT / "arith" / "config"), version_base="1.3"):
        return hydra_compose(config_name="pretrain", overrides=overrides)


# ---------------------------------------------------------------------------------------------- FLOPs
class CountingModel:
    """Calls the model as `forward_loss` does and records (tokens, seq len, depth, no-grad depth) per call."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __call__(self, x, recurrences, no_grad_recurrences=0, k=None, **kw):
        self.calls.append((x.shape[0] * x.shape[1], x.shape[1], recurrences, no_grad_recurrences))
        return self.model(x, recurrences=recurrences, no_grad_recurrences=no_grad_recurrences, k=k, **kw)


def step_flops(calls, layers: int, width: int, ffn: int, vocab: int) -> float:
    C, F, total = width, ffn, 0.0
    for tokens, T, depth, no_grad in calls:
        layer = (
            2 * (4 * C * C + 3 * C * F // 2) + 4 * T * C
        )  # forward, per token (GLU: C x F in, F/2 x C out)
        applied = layers * (3 * (depth - no_grad) + no_grad)  # forward-equivalents of layer work
        total += tokens * (applied * layer + 3 * 2 * C * vocab)
    return total


def useful_share(shape: tuple[int, int], useful: int) -> float:
    """The share of a batch's input positions whose next token is real (a loss target): the model reads
    ids[:, :-1], rows x (T - 1) positions, and a row of `length` real tokens has length - 1 targets, so the
    `useful` real tokens of `shape[0]` rows give useful - rows of them."""
    rows, width = shape
    return (useful - rows) / max(rows * (width - 1), 1)


def cpu_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def gpu_peak(override: float | None) -> tuple[float, str]:
    if override:
        return override * 1e12, f"{override:g} TFLOP/s (--peak-tflops)"
    name = torch.cuda.get_device_name()
    for key, peak in GPU_PEAKS.items():
        if key in name:
            return peak, f"{peak / 1e12:g} TFLOP/s ({key} bf16 dense)"
    raise SystemExit(f"no known bf16 peak for {name!r}: pass --peak-tflops")


# ---------------------------------------------------------------------------------------------- memory
def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    try:  # Linux: writing 5 resets the process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ---------------------------------------------------------------------------------------------- diagnostics
def compile_counts() -> tuple[int, int]:
    """(frames compiled, graphs made) so far by torch.compile in this process: their growth over the timed
    steps counts recompilations."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0, 0
    return int(counters["frames"]["ok"]), int(counters["stats"]["unique_graphs"])


class SyncWarnings:
    """With `torch.cuda.set_sync_debug_mode("warn")` on inside `watch()`, the host-device synchronizations the
    step makes arrive as warnings: counted here (the first few distinct messages kept)."""

    def __init__(self, enabled: bool):
        self.enabled, self.count, self.messages = enabled, 0, []

    @contextmanager
    def watch(self):
        if not self.enabled:
            yield
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield
            finally:
                torch.cuda.set_sync_debug_mode(0)
        for w in caught:
            if "synchroniz" in str(w.message):
                self.count += 1
                msg = str(w.message).splitlines()[0][:200]
                if msg not in self.messages and len(self.messages) < 3:
                    self.messages.append(msg)


class StepProfile:
    """--profile FILE: the timed steps run under `torch.profiler` (which slows them: time a step without it), and
    the ops by self time, then the same grouped by input shapes, are appended to FILE under the config's name."""

    ROWS = 40

    def __init__(self, path: str | None, device: torch.device):
        self.path, self.prof = path, None
        self.sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        self.activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            self.activities.append(torch.profiler.ProfilerActivity.CUDA)

    def start(self) -> None:
        if self.path:
            self.prof = torch.profiler.profile(activities=self.activities, record_shapes=True)
            self.prof.start()

    def finish(self, name: str, steps: int) -> None:
        if self.prof is None:
            return
        self.prof.stop()
        ops = self.prof.key_averages()
        shapes = self.prof.key_averages(group_by_input_shape=True)
        with open(self.path, "a") as f:
            f.write(f"## {name}: {steps} timed steps, ops by {self.sort}\n\n")
            f.write(ops.table(sort_by=self.sort, row_limit=self.ROWS) + "\n")
            f.write(f"### {name}: by input shapes\n\n")
            f.write(shapes.table(sort_by=self.sort, row_limit=self.ROWS, max_shapes_column_width=80) + "\n")
        self.prof = None


# ---------------------------------------------------------------------------------------------- one config
def config_for(name: str, args):
    overrides = [*CONFIGS[name], "data.streaming=true", f"train.compile={args.compile}"]
    if args.batch:
        overrides.append(f"train.batch_size={args.batch}")
    overrides += args.override  # e.g. tiny sizes for a dry run (scripts/gpu_check.sh --dry-run)
    return compose(overrides)


def bench(name: str, cfg, args, device: torch.device) -> dict:
    tcfg, m = cfg.train, cfg.model
    torch.manual_seed(0)
    batches, tok = make_batches(cfg.data, tcfg.batch_size, tcfg.seed)
    model = build_model(m, tok).to(device)
    set_attention_impl(model, args.attention)
    if args.compile:
        compile_blocks(model)
    opt = build_optimizer(model, tcfg)
    use_bf16 = dist.use_bf16(device, tcfg.bf16, tcfg.cpu_bf16)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
    counter = CountingModel(model)
    # the step's trim as train() decides it (train.trim_prompt; --compile compiles the layers as train.compile does)
    trim_on = trims(cfg, device) and not (args.compile and tcfg.trim_prompt is None)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    model.train()
    times, data_times, tokens, useful_tokens, flops, useful_flops = [], [], [], [], [], []
    reset_peak_memory(device)
    syncs = SyncWarnings(args.sync_debug and device.type == "cuda")
    profile = StepProfile(args.profile, device)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            compiled_before = compile_counts()
            profile.start()
        timed = step >= args.warmup
        sync()
        t0 = time.perf_counter()
        with syncs.watch() if timed else nullcontext():
            ids, useful = batches.counted_batch(step)  # useful: non-PAD tokens, from the host-side lengths
            trim = answer_positions(ids, tok) if trim_on else None
            ids = ids.to(device, non_blocking=True)
            t_data = time.perf_counter() - t0  # batch generation + copy: the GPU idles meanwhile in train()
            counter.calls.clear()
            with autocast:
                loss = forward_loss(counter, model, ids, cfg, tok, trim)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip)
            opt.step()
        sync()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
            data_times.append(t_data)
            tokens.append(ids.numel())
            useful_tokens.append(useful)
            flops.append(step_flops(counter.calls, m.layers, m.width, m.ffn, tok.vocab_size))
            useful_flops.append(flops[-1] * useful_share(ids.shape, useful))
    profile.finish(name, args.steps)
    fps = [f / t for f, t in zip(flops, times)]
    useful_fps = [f / t for f, t in zip(useful_flops, times)]
    frames, graphs = (a - b for a, b in zip(compile_counts(), compiled_before))
    return {
        "config": name,
        "shape": f"{m.layers}x{m.recurrences} w{m.width} {m.abs_pos}/{m.rel_pos}",
        "params_m": model.num_params() / 1e6,
        "batch": tcfg.batch_size,
        "step_ms": 1e3 * statistics.median(times),
        "data_ms": 1e3 * statistics.median(data_times),
        "tok_s": statistics.median(n / t for n, t in zip(tokens, times)),
        "useful_tok_s": statistics.median(n / t for n, t in zip(useful_tokens, times)),  # non-PAD tokens / s
        "tflops": statistics.median(fps) / 1e12,
        "fps": statistics.median(fps),
        "useful_fps": statistics.median(useful_fps),  # model FLOP/s of the input positions with a real target
        "mem_gib": peak_memory_gib(device),
        "bf16": use_bf16,
        "trim": trim_on,  # train.trim_prompt: the last block application from the answer on
        "recompiles_timed": frames,  # frames torch.compile compiled during the timed steps (0 is right)
        "graphs_timed": graphs,
        "sync_warnings_timed": syncs.count if syncs.enabled else None,  # None: not watched (--sync-debug)
        "sync_messages": syncs.messages,
    }


# ---------------------------------------------------------------------------------------------- report
def table(rows: list[dict], peak: float) -> list[str]:
    out = [
        "| config | model | params | batch | step (ms) | of it data (ms) | tokens/s | useful tokens/s "
        "| model TFLOP/s | MFU | useful MFU | peak mem (GiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['config']} | {r['shape']} | {r['params_m']:.1f}M | {r['batch']} | {r['step_ms']:.1f} "
            f"| {r['data_ms']:.1f} | {r['tok_s']:,.0f} | {r['useful_tok_s']:,.0f} | {r['tflops']:.3f} "
            f"| {100 * r['fps'] / peak:.1f}% | {100 * r['useful_fps'] / peak:.1f}% | {r['mem_gib']:.2f} |"
        )
    return out


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="paper_16x1,paper_8x2,paper_1x16,nope_16x1,fire_16x1,quickstart")
    p.add_argument("--steps", type=int, default=20, help="timed steps per config")
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (default: 5 CUDA, 1 CPU, 300 CPU bf16)"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=0, help="global batch (default: the config's)")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the layers (default: on for CUDA, off for CPU)",
    )
    p.add_argument("--attention", default="auto", choices=["auto", "sdpa", "flex"])
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak to divide by (default: see doc)")
    p.add_argument("--out", default=None, help="append a dated section to this markdown file")
    p.add_argument("--note", default="", help="a line to add to the section")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override added to every config (repeatable), e.g. model.width=64 for a dry run",
    )
    p.add_argument("--json", default=None, help="append one JSON line per config to this file as it finishes")
    p.add_argument(
        "--profile",
        default=None,
        metavar="FILE",
        help="run the timed steps under torch.profiler and append the ops by self time to FILE (slows the steps)",
    )
    p.add_argument(
        "--sync-debug",
        action="store_true",
        help="CUDA: count host-device synchronizations in the timed steps (torch.cuda.set_sync_debug_mode)",
    )
    return p.parse_args()


@user_errors
def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if args.compile is None:
        args.compile = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config(s) {unknown}; valid: {', '.join(CONFIGS)}")
    cfgs = {name: config_for(name, args) for name in names}
    if device.type == "cuda":
        args.warmup = 5 if args.warmup is None else args.warmup
        peak, peak_note = gpu_peak(args.peak_tflops)
        machine = torch.cuda.get_device_name()
    else:
        bf16 = any(dist.use_bf16(device, c.train.bf16, c.train.cpu_bf16) for c in cfgs.values())
        dtype = torch.bfloat16 if bf16 else torch.float32
        # bf16 on the CPU: oneDNN builds a kernel for each new matrix shape, and length-grouped batches bring many;
        # the first hundred steps read 1.3-1.5x the settled step (docs/BENCHMARKS.md, "bf16 autocast on an AMX CPU")
        args.warmup = (300 if bf16 else 1) if args.warmup is None else args.warmup
        peak = args.peak_tflops * 1e12 if args.peak_tflops else cpu_peak(dtype)
        peak_note = f"{peak / 1e9:.0f} GFLOP/s (measured {str(dtype).split('.')[-1]} 2048^3 matmul)"
        n = torch.get_num_threads()
        machine = f"CPU {platform.machine()}, {n} thread{'s' * (n != 1)} (os.cpu_count()={os.cpu_count()})"

    rows = []
    for name in names:
        row = bench(name, cfgs[name], args, device)
        rows.append(row)
        if args.json:  # one line per config at once, so a run stopped by a timeout keeps what it measured
            extra = {
                "machine": machine,
                "torch": torch.__version__,
                "attention": args.attention,
                "compile": args.compile,
                "steps": args.steps,
                "warmup": args.warmup,
                "peak_tflops": peak / 1e12,
                "mfu": row["fps"] / peak,
                "useful_mfu": row["useful_fps"] / peak,
            }
            with open(args.json, "a") as f:
                f.write(json.dumps({**row, **extra}) + "\n")
        print(
            f"{name:12s} {row['step_ms']:9.1f} ms/step {row['tok_s']:12,.0f} tok/s "
            f"({row['useful_tok_s']:,.0f} useful) {100 * row['fps'] / peak:5.1f}% MFU "
            f"({100 * row['useful_fps'] / peak:.1f}% useful) {row['mem_gib']:6.2f} GiB",
            flush=True,
        )
    lines = table(rows, peak)
    by = {r["config"]: r for r in rows}
    if "nope_16x1" in by and "fire_16x1" in by:
        ratio = by["fire_16x1"]["step_ms"] / by["nope_16x1"]["step_ms"]
        lines.append("")
        lines.append(f"FIRE / NoPE step time (16x1): {ratio:.2f}x (goal on one H100: <= 1.3x)")
    print("\n".join(lines))

    if args.out:
        cmd = "python scripts/bench_train.py " + shlex.join(sys.argv[1:])
        section = [
            f"## Training throughput on {machine} ({datetime.date.today().isoformat()})",
            "",
            f"- command: `{cmd}`",
            f"- torch {torch.__version__}; compile={args.compile}, attention={args.attention}, "
            f"bf16 autocast={'on' if any(r['bf16'] for r in rows) else 'off'}, "
            f"trim_prompt={'on' if any(r['trim'] for r in rows) else 'off'}; {args.warmup} warm-up + "
            f"{args.steps} timed steps, medians",
            f"- MFU divides matmul FLOPs (scripts/bench_train.py docstring) by {peak_note}; useful tokens/s and "
            "useful MFU count the non-PAD tokens only (the same docstring)",
            "- peak memory: " + ("torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS"),
        ]
        if args.note:
            section.append(f"- {args.note}")
        text = "\n".join([*section, "", *lines]) + "\n"
        print(f"appended to {append_section(args.out, text)}")


if __name__ == "__main__":
    main()
