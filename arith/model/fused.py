"""Two splits whose autograd backward copies the gradient twice, written with one copy.

- `gelu_gate(h)`: gelu(a) * b for h = [a | b] split in halves on the last axis (the GLU's gate). Autograd's
  backward of `h.chunk(2)` concatenates the halves' gradients into a new tensor; here each half's gradient is
  written straight into its place in one buffer.
- `split_heads(qkv, n)`: a fused projection's (B, T, n * H * D) output viewed as n tensors of (B, H, T, D) (q, k,
  v). Autograd's backward of `view -> permute -> unbind` stacks the n gradients (one copy) and makes the
  permuted stack contiguous for the view (a second); here each gradient is copied once into a (B, T, n, H, D)
  buffer.

Both give autograd's values and gradients to float32 rounding (tests/test_fused.py): the same kernels
(`aten.gelu_backward`, `mul`), only fewer copies. About 7% of the quick start's CPU step went to these copies
and concatenations (docs/BENCHMARKS.md, issue 28).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _GeluGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        a, b = h.chunk(2, dim=-1)
        ga = F.gelu(a)
        ctx.save_for_backward(a, b, ga)
        return ga * b

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        a, b, ga = ctx.saved_tensors
        n = a.shape[-1]
        grad = torch.empty(*a.shape[:-1], 2 * n, dtype=g.dtype, device=g.device)
        torch.ops.aten.gelu_backward.grad_input(g * b, a, grad_input=grad[..., :n])  # d/da: g b gelu'(a)
        torch.mul(g, ga, out=grad[..., n:])  # d/db: g gelu(a)
        return grad


def gelu_gate(h: torch.Tensor) -> torch.Tensor:
    """gelu(a) * b, h = [a | b] on the last axis (even width) -> h's shape with half the last axis."""
    if torch.compiler.is_compiling():  # inductor fuses the plain ops itself
        a, b = h.chunk(2, dim=-1)
        return F.gelu(a) * b
    return _GeluGate.apply(h)


class _SplitHeads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, n: int, heads: int) -> tuple[torch.Tensor, ...]:
        B, T, C = x.shape
        ctx.shape = (B, T, n, heads, C // (n * heads))
        return tuple(x.view(ctx.shape).permute(2, 0, 3, 1, 4).unbind(0))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        B, T, n, H, D = ctx.shape
        out = grads[0].new_empty(B, T, n, H, D)  # an unused output's gradient comes as zeros
        for i, g in enumerate(grads):
            out[:, :, i].copy_(g.transpose(1, 2))  # (B, H, T, D) -> (B, T, H, D)
        return out.view(B, T, n * H * D), None, None


def split_heads(x: torch.Tensor, n: int, heads: int) -> tuple[torch.Tensor, ...]:
    """(B, T, n * heads * D) -> n tensors of (B, heads, T, D), the i-th from x[..., i * heads * D:(i + 1) * ...]."""
    if not (torch.is_grad_enabled() and x.requires_grad) or torch.compiler.is_compiling():
        B, T, C = x.shape
        return x.view(B, T, n, heads, C // (n * heads)).permute(2, 0, 3, 1, 4).unbind(0)
    return _SplitHeads.apply(x, n, heads)
