"""Attention for short rows on a CPU in training: three batched matmuls and a softmax, with a hand-written backward.

At the quick start's sizes (128 rows of about 24 tokens, 4 heads of 32) the whole attention is a few hundred
kilobytes, and SDPA's CPU flash kernel spends its time in per-block overhead: forward and backward of one call
take about 6 ms there and 2.7 ms here (docs/BENCHMARKS.md, "Short-row attention"), which is 15-20% of the training
step. Past about 100 keys SDPA's blocked kernel is faster, so the path stops at `MAX_KEYS`.

    softmax(s q k^T + bias) v            bias: the windows, the causal mask and FIRE as one additive float tensor
    backward: dV = P^T dY, dP = dY V^T, dS = P (dP - rowsum(dP P)), dQ = s dS K, dK = s dS^T Q, dBias = dS

When it runs (`wanted`): `Attention.attn_impl` "auto" (`train.attention`; "sdpa" turns it off), a CPU, float32 or
bf16 (`train.cpu_bf16`'s autocast: the path casts q, k and v to float32 and runs with autocast off, where SDPA's
bf16 CPU kernel took 22 ms a call on the quick start's rows, docs/BENCHMARKS.md), a gradient being recorded, no KV
cache and no compiler tracing, at most `MAX_KEYS` keys. Training rows are right-padded, so every query sees at least
itself and no softmax row is empty. Everything else, evaluation included, stays on SDPA.
"""

from __future__ import annotations

import torch

MAX_KEYS = 64  # above this SDPA's blocked kernel wins (96 keys: about even; 192: SDPA 1.4x faster)


def wanted(impl: str, q: torch.Tensor, t_k: int) -> bool:
    """Whether a training call over `t_k` keys takes this path instead of SDPA."""
    return (
        impl == "auto"
        and q.device.type == "cpu"
        and q.dtype in (torch.float32, torch.bfloat16)
        and t_k <= MAX_KEYS
        and torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
    )


def additive_bias(inp, t_q: int, t_k: int, device) -> torch.Tensor:
    """The float bias (broadcastable to (B, H, Tq, Tk)) of `inp`'s masks and FIRE bias, -inf where a key is hidden;
    built once per forward pass and layer (`inp.dense`) and reused by every recurrence."""
    if inp.dense is not None:
        return inp.dense
    mask = inp.mask
    if inp.flex_bias is not None:  # FlexAttention's FIRE bias comes without its causal mask
        mask = inp.flex_bias.float() + torch.full((t_q, t_k), float("-inf"), device=device).triu(
            t_k - t_q + 1
        )
    if inp.allow is not None:  # windows: a bool (B, 1, Tq, Tk), FIRE's bias (if any) under it
        base = mask if mask is not None and mask.dtype != torch.bool else torch.zeros((), device=device)
        bias = base.float().masked_fill(~inp.allow, float("-inf"))
    elif mask is not None and mask.dtype == torch.bool:
        bias = torch.zeros(mask.shape, device=device).masked_fill(~mask, float("-inf"))
    elif mask is not None:
        bias = mask.float()  # FIRE: -inf above the diagonal already
    elif inp.is_causal:
        bias = torch.full((t_q, t_k), float("-inf"), device=device).triu(t_k - t_q + 1)
    else:
        bias = torch.zeros(t_q, t_k, device=device)
    inp.dense = bias
    return bias


class _ShortAttention(torch.autograd.Function):
    @staticmethod
    # float32 inside, whatever autocast says
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, q, k, v, bias, scale: float):
        B, H, t_q, D = q.shape
        t_k = k.shape[2]
        q2, k2, v2 = q.reshape(B * H, t_q, D), k.reshape(B * H, t_k, D), v.reshape(B * H, t_k, D)
        scores = torch.baddbmm(
            bias.expand(B, H, t_q, t_k).reshape(B * H, t_q, t_k), q2, k2.transpose(1, 2), alpha=scale
        )
        p = scores.softmax(dim=-1)  # (B * H, Tq, Tk)
        ctx.save_for_backward(q2, k2, v2, p)
        ctx.scale, ctx.shape, ctx.bias_shape = scale, (B, H, t_q, t_k, D), bias.shape
        return torch.bmm(p, v2).view(B, H, t_q, D)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad):
        q2, k2, v2, p = ctx.saved_tensors
        B, H, t_q, t_k, D = ctx.shape
        grad = grad.reshape(B * H, t_q, D)
        dv = torch.bmm(p.transpose(1, 2), grad)
        dp = torch.bmm(grad, v2.transpose(1, 2))
        ds = p * (dp - (dp * p).sum(dim=-1, keepdim=True))  # softmax backward; 0 where a key is hidden
        dq = torch.bmm(ds, k2).mul_(ctx.scale)
        dk = torch.bmm(ds.transpose(1, 2), q2).mul_(ctx.scale)
        dbias = None
        if ctx.needs_input_grad[3]:  # FIRE's bias learns
            dbias = ds.view(B, H, t_q, t_k).sum_to_size(ctx.bias_shape)
        return dq.view(B, H, t_q, D), dk.view(B, H, t_k, D), dv.view(B, H, t_k, D), dbias, None


def attention(q, k, v, bias: torch.Tensor, scale: float | None) -> torch.Tensor:
    """softmax(scale q k^T + bias) v; q (B, H, Tq, D), k and v (B, H, Tk, D), bias broadcastable to (B, H, Tq, Tk);
    scale None: 1 / sqrt(D), as SDPA's -> (B, H, Tq, D), float32 (under CPU autocast too: bf16 inputs are cast)."""
    return _ShortAttention.apply(q, k, v, bias, q.shape[-1] ** -0.5 if scale is None else scale)
