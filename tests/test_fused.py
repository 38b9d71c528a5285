"""The one-copy backward of the GLU gate and the q/k/v split (arith/model/fused.py) against autograd's own."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from arith.model.fused import gelu_gate, split_heads
from tests.test_model import encode, make


def plain_gate(h):
    a, b = h.chunk(2, dim=-1)
    return F.gelu(a) * b


def plain_split(x, n, heads):
    B, T, C = x.shape
    return x.view(B, T, n, heads, C // (n * heads)).permute(2, 0, 3, 1, 4).unbind(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gelu_gate_matches_autograd(dtype):
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(3, 5, 24, generator=gen).to(dtype).requires_grad_()
    g = torch.randn(3, 5, 12, generator=gen).to(dtype)
    ref = plain_gate(h)
    (ref_grad,) = torch.autograd.grad(ref, h, g)
    out = gelu_gate(h)
    (grad,) = torch.autograd.grad(out, h, g)
    assert out.dtype == dtype and grad.dtype == dtype and grad.shape == h.shape
    assert torch.equal(out, ref)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=0)


def test_gelu_gate_gradcheck():
    h = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gelu_gate, (h,))


@pytest.mark.parametrize("n", [2, 3])
def test_split_heads_matches_autograd(n):
    gen = torch.Generator().manual_seed(1)
    heads, D = 4, 8
    x = torch.randn(2, 6, n * heads * D, generator=gen, requires_grad=True)
    grads = [torch.randn(2, heads, 6, D, generator=gen) for _ in range(n)]
    ref = plain_split(x, n, heads)
    (ref_grad,) = torch.autograd.grad(ref, x, grads)
    out = split_heads(x, n, heads)
    assert len(out) == n and all(o.shape == (2, heads, 6, D) for o in out)
    assert all(torch.equal(o, r) for o, r in zip(out, ref))
    (grad,) = torch.autograd.grad(out, x, grads)
    assert torch.equal(grad, ref_grad)


def test_split_heads_unused_output_gets_zero_gradient():
    x = torch.randn(1, 3, 3 * 2 * 4, requires_grad=True)
    q, k, v = split_heads(x, 3, 2)
    (grad,) = torch.autograd.grad(q.sum(), x)
    assert torch.equal(grad[..., :8], torch.ones(1, 3, 8)) and not grad[..., 8:].any()


def test_split_heads_gradcheck_and_no_grad_path():
    x = torch.randn(2, 3, 2 * 2 * 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: split_heads(t, 2, 2), (x,))
    with torch.no_grad():
        q, k = split_heads(x, 2, 2)
    assert q.grad_fn is None and q.data_ptr() == x.data_ptr()  # views of the input, nothing copied


def model_grads(block: str) -> dict[str, torch.Tensor]:
    """Every parameter's gradient of a tiny looped Abacus + FIRE model's loss on two rows."""
    model = make("abacus", "fire", layers=1, recurrences=2, injection="add", block=block)
    ids = encode("12+34=64", "5+7=21")
    logits = model(ids)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("block", ["pre_ln", "sas_p"])
def test_model_gradients_unchanged_by_fused_paths(monkeypatch, block):
    """A whole model's gradients with the one-copy backwards equal those with autograd's plain ones."""
    from arith.model import attention, blocks

    fused = model_grads(block)
    monkeypatch.setattr(blocks, "gelu_gate", plain_gate)
    monkeypatch.setattr(blocks, "split_heads", plain_split)
    monkeypatch.setattr(attention, "split_heads", plain_split)
    plain = model_grads(block)
    assert fused.keys() == plain.keys() and len(fused) > 5
    for name in fused:
        torch.testing.assert_close(fused[name], plain[name], rtol=1e-6, atol=1e-7, msg=name)


def test_bench_fused_script_runs_at_tiny_sizes(monkeypatch, capsys):
    """scripts/bench_fused.py prints one row a variant (a smoke run: 1 rep, tiny shapes)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_fused.py"
    spec = importlib.util.spec_from_file_location("bench_fused", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["bench_fused.py", "--batch=2", "--tokens=3", "--width=8", "--heads=2", "--threads=1", "--reps=1"]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    rows = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| GLU") or line.startswith("| q/")
    ]
    assert len(rows) == 4 and all(row.count("/") >= 4 for row in rows)
