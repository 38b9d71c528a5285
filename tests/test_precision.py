"""Precision under bf16 autocast, stated and tested on the CPU's autocast (and on CUDA's where a GPU is):
FIRE's bias is float32, FlexAttention gets one dtype, cached decoding equals uncached decoding, and a run
resumed elsewhere takes its own device's optimizer implementation (docs/GPU.md, suspects 1, 6, 10 and 11)."""

import pytest
import torch
from omegaconf import OmegaConf

from arith.data.tokenizer import ArithTokenizer
from arith.eval.decode import generate
from arith.model import build_model
from arith.model import flex as flexmod
from arith.model.flex import set_attention_impl
from arith.model.positions import FIRE
from arith.optim import load_optimizer_state
from arith.schema import ModelConfig

TOK = ArithTokenizer.build()
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
]


def model(abs_pos="abacus", rel_pos="fire", device="cpu", **kw):
    base = dict(
        width=32, heads=4, ffn=64, layers=2, recurrences=2, input_injection="add", max_pos=64, max_k=5
    )
    cfg = OmegaConf.structured(ModelConfig(**{**base, **kw, "abs_pos": abs_pos, "rel_pos": rel_pos}))
    torch.manual_seed(0)
    return build_model(cfg, TOK).to(device)


def encode(*texts, eos=True, device="cpu"):
    rows = [TOK.encode(t) + ([TOK.eos_id] if eos else []) for t in texts]
    width = max(map(len, rows))
    return torch.tensor([r + [TOK.pad_id] * (width - len(r)) for r in rows], device=device)


@pytest.mark.parametrize("device", DEVICES)
def test_fire_bias_is_float32_under_bf16_autocast(device):
    """At 300 tokens the bf16 MLP input gave the last query 86 distinct biases for 300 distances (CPU)."""
    torch.manual_seed(0)
    fire = FIRE(ModelConfig(heads=4)).to(device)
    pos = torch.arange(300, device=device)
    ref = fire.bias(pos, pos)
    with torch.autocast(device, dtype=torch.bfloat16):
        got = fire.bias(pos, pos)
    assert got.dtype == torch.float32 and torch.equal(got, ref)
    assert torch.unique(got[0, -1]).numel() == 300, "every distance its own bias"


@pytest.mark.skipif(not flexmod.AVAILABLE, reason="torch without FlexAttention")
@pytest.mark.parametrize("block", ["sas_p", "pre_ln"])
def test_flex_gets_one_dtype_under_autocast(monkeypatch, block):
    """Suspect 1: SAS-P's values are the float32 residual stream while q and k are bf16 under autocast; flex is
    not on autocast's list (CUDA raised "Expected query, key, and value to have the same dtype"). The CPU's
    flex accepts the mix, so the dtypes are checked at the call."""
    from torch.nn.attention import flex_attention as fa

    seen, real = [], fa.flex_attention

    def spy(q, k, v, **kw):
        seen.append((q.dtype, k.dtype, v.dtype))
        return real(q, k, v, **kw)

    monkeypatch.setattr(fa, "flex_attention", spy)
    m = model(block=block).eval()
    set_attention_impl(m, "flex")
    ids = encode("21+543=753", "999+1=0001")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        m(ids, k=1)
    assert seen and all(len(set(d)) == 1 for d in seen), seen


KINDS = [
    dict(abs_pos="abacus", rel_pos="fire"),
    dict(abs_pos="abacus", rel_pos="fire", block="sas_p"),  # float32 values in the cache, bf16 q and k
    dict(abs_pos="abacus", rel_pos="rerope", block="post_ln"),
    dict(abs_pos="coupling", rel_pos="rope", block="parallel", row_window=2),
    dict(abs_pos="learned", rel_pos="none", eval_recurrences=3),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(map(str, k.values())))
def test_cached_decoding_equals_uncached_under_bf16_autocast(kind, device):
    """Suspect 10: the grid decodes in bf16 on CUDA with the KV cache; cached == uncached there too."""
    m = model(device=device, **kind).eval()
    ids = encode("21+543=753", "999+1=0001", device=device)
    prompts = encode("21+543=", "999+1=", eos=False, device=device)
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
        full = m(ids, k=1)
        cache, pieces, start = m.new_cache(), [], 0
        for end in (4, 7, 8, 9, 10, 11):
            pieces.append(m(ids[:, start:end], k=1, cache=cache, start=start))
            start = end
        args = dict(max_new=6, eos_id=TOK.eos_id, pad_id=TOK.pad_id, k=1)
        cached, uncached = (
            generate(m, prompts, use_cache=True, **args),
            generate(m, prompts, use_cache=False, **args),
        )
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=2e-2, atol=2e-2)  # bf16 rounding at most
    assert torch.equal(cached, uncached)


def test_resume_takes_this_devices_optimizer_implementation():
    """Suspect 11: load_state_dict restored the saved param_groups' `fused` flag, so a run started on the CPU
    (foreach) resumed on a GPU stayed on foreach. Fused AdamW runs on the CPU too, which stands in here."""
    net = torch.nn.Linear(4, 3)
    cpu_run = torch.optim.AdamW(net.parameters(), fused=None)
    net(torch.randn(2, 4)).sum().backward()
    cpu_run.step()
    saved = cpu_run.state_dict()
    plain = torch.optim.AdamW(net.parameters(), fused=True)
    plain.load_state_dict(saved)
    assert plain.param_groups[0]["fused"] is None, "the confirmed problem (torch's behaviour)"
    gpu_run = torch.optim.AdamW(net.parameters(), fused=True)
    load_optimizer_state(gpu_run, saved)
    assert gpu_run.param_groups[0]["fused"] is True
    assert torch.equal(gpu_run.state[net.weight]["exp_avg"], cpu_run.state[net.weight]["exp_avg"])
    net(torch.randn(2, 4)).sum().backward()
    gpu_run.step()  # the fused kernel takes the loaded state
    assert int(gpu_run.state[net.weight]["step"]) == 2
    same = torch.optim.AdamW(net.parameters(), fused=None)
    load_optimizer_state(same, saved)  # CPU -> CPU: the saved groups as they were
    assert same.state_dict()["param_groups"] == saved["param_groups"]
