"""Fast paths give the reference answers: torch.compile == eager, FlexAttention == SDPA for FIRE, bf16 runs.

GPU-only checks (fused kernels, compiled FlexAttention with gradients) skip without CUDA.
"""

import pytest
import torch
from omegaconf import OmegaConf

from arith.data.tokenizer import ArithTokenizer
from arith.eval.decode import generate
from arith.model import build_model
from arith.model import flex as flexmod
from arith.model.flex import set_attention_impl
from arith.schema import ModelConfig
from arith.train import compile_blocks, train

TOK = ArithTokenizer.build()
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def model(abs_pos="abacus", rel_pos="none", **kw):
    base = dict(
        width=32, heads=2, ffn=64, layers=1, recurrences=3, input_injection="add", max_pos=64, max_k=5
    )
    cfg = OmegaConf.structured(ModelConfig(**{**base, **kw, "abs_pos": abs_pos, "rel_pos": rel_pos}))
    return build_model(cfg, TOK)


def batch(b=4, t=12, device="cpu"):
    return torch.randint(4, 14, (b, t), device=device)  # digits only: long Abacus runs


# ---------------------------------------------------------------------------------------------- compile
@pytest.mark.parametrize("abs_pos, rel_pos", [("abacus", "none"), ("none", "fire"), ("learned", "rope")])
def test_whole_looped_model_traces_without_graph_breaks(abs_pos, rel_pos):
    m = model(abs_pos, rel_pos, recurrences=2)
    explained = torch._dynamo.explain(m)(batch(), recurrences=2, no_grad_recurrences=1, k=2)
    assert explained.graph_break_count == 0, [str(b.reason)[:200] for b in explained.break_reasons]
    assert explained.graph_count == 1


def test_compiled_block_matches_eager_forward_and_backward():
    torch._dynamo.reset()
    eager, compiled = model(), model()
    compiled.load_state_dict(eager.state_dict())
    for layer in compiled.layers:
        layer.compile(fullgraph=True, dynamic=False)  # fullgraph: a graph break is an error
    ids = batch()
    outs = []
    for m in (eager, compiled):
        logits = m(ids, recurrences=3, k=2)
        logits.square().mean().backward()
        outs.append((logits, {n: p.grad for n, p in m.named_parameters()}))
    (a, ga), (b, gb) = outs
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=1e-3, atol=1e-6, msg=name)
    assert list(compiled.state_dict()) == list(eager.state_dict()), "in-place compile keeps parameter names"


def test_compile_blocks_compiles_every_layer_in_place():
    m = model(layers=2)
    names = list(m.state_dict())
    compile_blocks(m)
    assert all(layer._compiled_call_impl is not None for layer in m.layers)
    assert list(m.state_dict()) == names


# ---------------------------------------------------------------------------------------------- FlexAttention
@pytest.mark.skipif(not flexmod.AVAILABLE, reason="torch without FlexAttention")
def test_auto_picks_flex_only_on_cuda_without_past_keys():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert not flexmod.wanted("auto", cpu, 8, 8)
    assert flexmod.wanted("auto", gpu, 8, 8) == (flexmod._torch_version() >= flexmod._MIN_TORCH)
    assert not flexmod.wanted("auto", gpu, 1, 9)  # one-token decode step: SDPA
    assert not flexmod.wanted("auto", gpu, 8, 8, head_dim=24)  # no power-of-two tiles: SDPA
    assert flexmod.wanted("flex", cpu, 8, 8) and not flexmod.wanted("sdpa", gpu, 8, 8)
    with pytest.raises(ValueError, match="sdpa"):
        set_attention_impl(model(), "fast")


@pytest.mark.skipif(not flexmod.AVAILABLE, reason="torch without FlexAttention")
@pytest.mark.parametrize("abs_pos", ["none", "abacus"])
def test_flex_fire_matches_sdpa_fire_on_cpu(abs_pos):
    """CPU FlexAttention has no backward: compare logits (and cached greedy decoding, whose prefill uses it)."""
    ref, fast = model(abs_pos, "fire"), model(abs_pos, "fire")
    fast.load_state_dict(ref.state_dict())
    set_attention_impl(ref, "sdpa")
    set_attention_impl(fast, "flex")
    ref.eval()
    fast.eval()
    ids = batch(t=20)
    pos = torch.arange(20)
    assert fast.layers[0].prepare(pos, pos).flex_bias is not None, "the flex path is taken"
    assert ref.layers[0].prepare(pos, pos).flex_bias is None
    with torch.no_grad():
        a, b = ref(ids, k=1), fast(ids, k=1)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    prompts = batch(t=9)
    args = dict(max_new=6, eos_id=TOK.eos_id, pad_id=TOK.pad_id)
    assert torch.equal(generate(fast, prompts, **args), generate(ref, prompts, **args))


@cuda
@pytest.mark.skipif(flexmod._torch_version() < flexmod._MIN_TORCH, reason="needs torch >= 2.6")
def test_flex_fire_matches_sdpa_on_cuda_with_gradients():
    torch.manual_seed(0)
    ref, fast = model("abacus", "fire", width=64, heads=4), model("abacus", "fire", width=64, heads=4)
    fast.load_state_dict(ref.state_dict())
    ref, fast = ref.cuda(), fast.cuda()
    set_attention_impl(ref, "sdpa")
    set_attention_impl(fast, "auto")
    ids = batch(b=8, t=40, device="cuda")
    outs = []
    for m in (ref, fast):
        logits = m(ids, recurrences=3, k=2)
        logits.square().mean().backward()
        outs.append((logits, {n: p.grad for n, p in m.named_parameters()}))
    (a, ga), (b, gb) = outs
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=1e-3, atol=1e-4, msg=name)
    assert ga["layers.0.attn.rel.c"].abs() > 0, "the FIRE bias gets a gradient through FlexAttention"


@cuda
@pytest.mark.parametrize("abs_pos, rel_pos", [("none", "none"), ("learned", "none"), ("abacus", "rope")])
def test_sdpa_uses_fused_kernels_on_cuda(abs_pos, rel_pos):
    """Restricting SDPA to flash / memory-efficient kernels raises if a layer would need the math fallback."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    m = model(abs_pos, rel_pos, width=128, heads=2).cuda()
    ids = batch(b=8, t=40, device="cuda")
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            m(ids, recurrences=3, k=2).float().mean().backward()
        m.eval()
        generate(m, ids[:, :10], max_new=4, eos_id=TOK.eos_id, pad_id=TOK.pad_id)


# ---------------------------------------------------------------------------------------------- bf16
def test_bf16_autocast_training_runs_on_cpu(compose, tmp_path):
    from tests.test_train import TINY, metrics

    cfg = compose(
        [*TINY, f"runs_root={tmp_path}", "train.steps=3", "train.log_every=1", "train.cpu_bf16=true"]
    )
    run_dir = train(cfg)
    losses = [row["loss"] for row in metrics(run_dir)]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_cpu_bf16_auto_follows_the_cpus_amx_tiles():
    """train.cpu_bf16=null: bf16 on the CPU exactly where it has AMX tiles; true / false as written; train.bf16=false
    turns autocast off everywhere; CUDA follows train.bf16 alone."""
    from arith import dist

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    expected = dist.cpuinfo_has_amx()
    if expected is not None:  # Linux: torch's probe agrees with the kernel's flags
        assert dist.cpu_has_amx() == expected
    assert dist.use_bf16(cpu, True, None) == dist.cpu_has_amx()
    assert dist.use_bf16(cpu, True, True) and not dist.use_bf16(cpu, True, False)
    assert not dist.use_bf16(cpu, False, True) and not dist.use_bf16(cpu, False, None)
    assert dist.use_bf16(gpu, True, False) and not dist.use_bf16(gpu, False, None)


def test_cpu_bf16_takes_null_and_rejects_a_word(compose):
    from hydra.errors import ConfigCompositionException

    assert compose(["train.cpu_bf16=null"]).train.cpu_bf16 is None
    assert compose(["train.cpu_bf16=true"]).train.cpu_bf16 is True
    with pytest.raises(ConfigCompositionException, match="cpu_bf16=sometimes"):
        compose(["train.cpu_bf16=sometimes"])


# ---------------------------------------------------------------------------------------------- benchmark
def bench_module():
    """scripts/bench_train.py, imported as a module."""
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "scripts" / "bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_flop_count_is_6n_plus_attention_for_a_standard_model():
    """scripts/bench_train.py counts 6 x (matmul weights) + 12 L T C per token for a standard model: the
    weights must be those the model really has (a changed layer layout must change the count too)."""
    bench = bench_module()
    m = model("abacus", "none", layers=3, recurrences=1, width=64, ffn=96)
    matmul = sum(
        mod.weight.numel()
        for name, mod in m.named_modules()
        if isinstance(mod, torch.nn.Linear) and (name.startswith("layers.") or name == "head")
    )
    B, T, L, C = 4, 10, 3, 64
    counted = bench.step_flops([(B * T, T, 1, 0)], L, C, 96, TOK.vocab_size)
    assert counted == B * T * (6 * matmul + 12 * L * T * C)
    # a looped call: no-grad recurrences cost one forward, the rest forward + backward
    looped = bench.step_flops([(B * T, T, 4, 1)], 1, C, 96, TOK.vocab_size)
    layer = 2 * (4 * C * C + 3 * C * 96 // 2) + 4 * T * C  # GLU: C x F in, F/2 x C out
    assert looped == B * T * ((3 * 3 + 1) * layer + 6 * C * TOK.vocab_size)


def run_tiny_bench(bench, monkeypatch, overrides, steps: int, *flags: str) -> None:
    """`bench_train.py` on the quick start at tiny sizes: one warm-up step, `steps` timed, one thread, no compile."""
    import sys

    argv = ["bench_train.py", "--device=cpu", "--configs=quickstart", f"--steps={steps}", "--warmup=1"]
    argv += [
        "--threads=1",
        "--no-compile",
        "--peak-tflops=1",
        *flags,
        *(f"--override={o}" for o in overrides),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()


def test_bench_reports_useful_tokens_and_useful_mfu_of_the_timed_batch(tmp_path, monkeypatch, capsys):
    """The table and the --json rows carry useful (non-PAD) tokens/s and useful MFU beside the padded ones,
    whose keys stay. One timed step (step 1, after one warm-up step): the ratios are those of that batch,
    counted here from the batch itself (useful MFU: the input positions with a real next token)."""
    import json

    from arith.data.datasets import make_batches
    from tests.test_train import TINY

    bench = bench_module()
    overrides = [o for o in TINY if not o.startswith(("data.streaming=", "train.progress="))]
    out = tmp_path / "rows.jsonl"
    run_tiny_bench(bench, monkeypatch, overrides, 1, f"--json={out}")
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| config |"))
    assert "| tokens/s | useful tokens/s |" in header and "| MFU | useful MFU |" in header
    cfg = bench.compose([*bench.CONFIGS["quickstart"], "data.streaming=true", *overrides])
    ids = make_batches(cfg.data, cfg.train.batch_size, cfg.train.seed)[0].batch(1)
    (b, t), real = ids.shape, int((ids != TOK.pad_id).sum())
    assert all(row[k] > 0 for k in ("tok_s", "fps", "mfu", "useful_tok_s", "useful_fps", "useful_mfu"))
    assert row["useful_tok_s"] / row["tok_s"] == pytest.approx(real / ids.numel()) and real < ids.numel()
    share = (real - b) / (b * (t - 1))  # input positions whose next token is real, of all b x (t - 1)
    assert row["useful_fps"] / row["fps"] == pytest.approx(share)
    assert row["useful_mfu"] / row["mfu"] == pytest.approx(share) and row["useful_mfu"] < row["mfu"]


def test_bench_profile_writes_where_the_timed_steps_spent_their_time(tmp_path, monkeypatch):
    """--profile FILE: the timed steps (not the warm-up) run under torch.profiler, and FILE gets, under the
    config's name, the ops by self CPU time (the step's matrix products and its optimizer among them) and the same
    grouped by input shapes; without the flag no profiler runs."""

    from tests.test_train import TINY

    bench = bench_module()
    overrides = [o for o in TINY if not o.startswith(("data.streaming=", "train.progress="))]
    out = tmp_path / "profile.txt"
    run_tiny_bench(bench, monkeypatch, overrides, 2, f"--profile={out}")
    text = out.read_text()
    assert text.startswith("## quickstart: 2 timed steps, ops by self_cpu_time_total")
    assert "### quickstart: by input shapes" in text and "Input Shapes" in text
    assert "aten::mm" in text and "Optimizer.step#AdamW.step" in text  # the products and the optimizer
    by_op = text.split("### ")[0].splitlines()  # the first table: its last column is the number of calls
    calls = {line.split()[0]: line.split()[-1] for line in by_op if line.strip().startswith("Optim")}
    assert calls["Optimizer.step#AdamW.step"] == "2"  # the two timed steps, not the warm-up
    assert bench.StepProfile(None, torch.device("cpu")).prof is None
