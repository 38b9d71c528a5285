"""The short-row CPU training attention (`arith.model.small_attention`) gives SDPA's outputs and gradients, and
runs exactly where it should."""

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from arith.data.tokenizer import ArithTokenizer
from arith.model import build_model
from arith.model import small_attention as sa
from arith.model.flex import set_attention_impl
from arith.schema import ModelConfig

TOK = ArithTokenizer.build()


def qkv(b=3, h=2, t=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, d, generator=g, requires_grad=True) for _ in range(3)]


def grads(out, tensors, seed=1):
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(out, tensors, upstream, retain_graph=True)  # the inputs share a graph


@pytest.mark.parametrize("scale", [None, 0.7])
def test_matches_sdpa_with_a_causal_bool_mask(scale):
    q, k, v = qkv()
    allow = torch.ones(7, 7, dtype=torch.bool).tril()
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=allow, scale=scale)
    bias = torch.zeros(7, 7).masked_fill(~allow, float("-inf"))
    out = sa.attention(q, k, v, bias, scale)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads(out, [q, k, v]), grads(ref, [q, k, v])):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_a_learned_per_head_bias_gets_sdpas_gradient_under_a_per_row_window():
    """FIRE's case: a (H, Tq, Tk) bias that learns, masked by a (B, 1, Tq, Tk) window."""
    q, k, v = qkv()
    fire = torch.randn(2, 7, 7, requires_grad=True)
    allow = torch.ones(3, 1, 7, 7, dtype=torch.bool).tril()
    allow[1, :, 4:, :2] = False  # one row's window hides two keys from its last queries
    masked = fire.masked_fill(~allow, float("-inf"))  # (B, H, Tq, Tk)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=masked)
    out = sa.attention(q, k, v, masked, None)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads(out, [q, k, v, fire]), grads(ref, [q, k, v, fire])):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_a_broadcast_bias_gradient_is_summed_to_its_shape():
    q, k, v = qkv()
    bias = torch.randn(1, 2, 7, 7) + torch.zeros(7, 7).masked_fill(~torch.ones(7, 7).tril().bool(), -1e9)
    bias.requires_grad_(True)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    out = sa.attention(q, k, v, bias, None)
    (g_ref,), (g_out,) = grads(ref, [bias]), grads(out, [bias])
    assert g_out.shape == bias.shape
    torch.testing.assert_close(g_out, g_ref, rtol=1e-5, atol=1e-5)


def test_wanted_only_for_cpu_float32_or_bf16_training_rows_up_to_max_keys():
    q = torch.zeros(1, 1, 4, 8)
    assert sa.wanted("auto", q, 4) and sa.wanted("auto", q, sa.MAX_KEYS)
    assert not sa.wanted("auto", q, sa.MAX_KEYS + 1)  # long rows: SDPA's blocked kernel
    assert not sa.wanted("sdpa", q, 4)  # train.attention=sdpa turns it off
    assert not sa.wanted("flex", q, 4)
    assert sa.wanted("auto", q.bfloat16(), 4)  # CPU autocast (train.cpu_bf16): float32 inside
    assert not sa.wanted("auto", q.half(), 4)
    with torch.no_grad():
        assert not sa.wanted("auto", q, 4)  # evaluation stays on SDPA


def test_under_cpu_autocast_it_computes_in_float32_on_the_bf16_inputs():
    """train.cpu_bf16: q, k, v arrive in bf16 from autocast's linears; the path upcasts them and runs with autocast
    off, so its output is float32 attention of the bf16 values, and each gradient comes back in its input's dtype."""
    q, k, v = (t.detach().bfloat16().requires_grad_(True) for t in qkv())
    bias = torch.zeros(7, 7).masked_fill(~torch.ones(7, 7, dtype=torch.bool).tril(), float("-inf"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sa.attention(q, k, v, bias, None)
    assert out.dtype == torch.float32
    q32, k32, v32 = (t.detach().float().requires_grad_(True) for t in (q, k, v))
    ref = sa.attention(q32, k32, v32, bias, None)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    for g, g_ref, t in zip(grads(out, [q, k, v]), grads(ref, [q32, k32, v32]), (q, k, v)):
        assert g.dtype == t.dtype
        torch.testing.assert_close(g, g_ref.bfloat16(), rtol=0, atol=0)


def model(**kw):
    base = dict(width=32, heads=2, ffn=64, layers=1, recurrences=3, max_pos=64, max_k=5)
    return build_model(OmegaConf.structured(ModelConfig(**{**base, **kw})), TOK)


def graph_names(t: torch.Tensor) -> set[str]:
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        todo.extend(nxt for nxt, _ in fn.next_functions)
    return names


def twin_steps(kw, bf16: bool = False):
    """One training forward and backward of the same weights with train.attention=auto (this path) and with sdpa,
    under CPU bf16 autocast when `bf16` -> [(loss, logits, graph op names, model)] for each."""
    fast, ref = model(**kw), model(**kw)
    ref.load_state_dict(fast.state_dict())
    set_attention_impl(ref, "sdpa")
    ids = torch.tensor([[4, 5, 6, 7, 1, 8, 9, 2, 5, 6, 3], [9, 8, 7, 6, 5, 4, 1, 5, 2, 7, 3]])
    out = []
    for m in (fast, ref):
        m.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = m(ids, recurrences=3, k=2)
            loss = logits.float().log_softmax(-1).square().mean()
        loss.backward()
        out.append((loss, logits, graph_names(loss), m))
    assert "_ShortAttentionBackward" in out[0][2] and "_ShortAttentionBackward" not in out[1][2]
    return out


def assert_grads_close(fast, ref, **tol):
    ref_grads = dict(ref.named_parameters())
    for name, p in fast.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, ref_grads[name].grad, msg=name, **tol)


@pytest.mark.parametrize(
    "kw",
    [
        dict(abs_pos="abacus", rel_pos="none"),  # is_causal
        dict(abs_pos="abacus", rel_pos="none", row_window=1),  # a bool window
        dict(abs_pos="none", rel_pos="fire"),  # FIRE's float bias, learned
        dict(abs_pos="abacus", rel_pos="fire", item_window=True),  # FIRE under a window
        dict(abs_pos="learned", rel_pos="rope"),  # rotated q and k
    ],
    ids=["causal", "row_window", "fire", "fire_item_window", "rope"],
)
def test_training_step_matches_sdpa(kw):
    """A training forward and backward with train.attention=auto (this path) equals one with sdpa."""
    (a, la, _, fast), (b, lb, _, ref) = twin_steps(kw)
    torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert_grads_close(fast, ref, rtol=1e-4, atol=1e-6)


def test_cpu_autocast_training_step_takes_the_path_and_stays_near_sdpa():
    """Under CPU bf16 autocast (train.cpu_bf16) a training step takes this path, where SDPA's bf16 kernel is slow,
    and its loss and gradients stay within bf16 rounding of SDPA's under the same autocast."""
    (a, _, _, fast), (b, _, _, ref) = twin_steps(
        dict(abs_pos="abacus", rel_pos="fire", item_window=True), bf16=True
    )
    torch.testing.assert_close(a, b, rtol=2e-2, atol=1e-3)
    assert_grads_close(fast, ref, rtol=0.1, atol=2e-2)
