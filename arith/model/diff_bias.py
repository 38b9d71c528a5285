"""`model.diff_bias`: an attention bias over the difference of two learned scalars, one read from the query's token
and one from the key's, with a hinge on each side, per head:

    b_h(i, j) = a_h relu(d) + c_h relu(-d),    d = s_h(x_j) - r_h(x_i) - t_h

r_h and s_h are linear reads of the layer's input x (the residual stream), computed in float32 whatever the
autocast; a_h, c_h and the knot t_h are learned and start at 0, so at the start the bias is 0 and the logits are
those of the model without it. Off: no parameters, no change. `model.diff_bias_init` = g > 0 starts a_h = c_h = -g
instead (a bias -g |d|, a preference for the nearest key): at a = c = 0 the reads get no gradient (the bias is
a relu(d) + c relu(-d)), so the scalars and the slopes can only grow together, from the slopes' side. The slopes
and the knot are 1-d, so they are not weight-decayed towards 0 (`arith.optim.param_groups`).
`model.diff_bias_init_below` = g' starts c_h alone at -g' (a one-sided start: with g' >> g the head prefers the
nearest key above its scalar and all but forbids those below, the comparator itself, which the reads then fill in).

Why: a dot product q.k is bilinear in what the two tokens carry, so a head can find the key whose code is nearest
to a target but not "the smallest key code above the query's", a one-sided threshold. Sorting's next label is
exactly that (the least number greater than the one just written), and its misses are neighbours in the sorted
order that are close in value (docs/RESULTS.md, "Where the misses are now"). With a_h < 0 and c_h << 0 a head
prefers the key just above r_h + t_h and all but forbids those below; with r_h = -inf-like it picks the smallest.
The scalars are learned, so nothing about the task is written in: any task whose step is an order statistic of a
quantity the model can compute per token can use it.

The bias is a (B, H, Tq, Tk) float tensor added to the masks and FIRE's bias. Training on a CPU takes
`small_attention`'s path with it (its backward returns the bias's gradient); everything else, decoding with a KV
cache included (the keys' scalars are cached beside them, `KVCache.append_scalars`), runs one explicit float32
softmax.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from arith.model import small_attention
from arith.model.rotary import rotate


class DiffBias(nn.Module):
    def __init__(self, width: int, heads: int, init: float = 0.0, below: float | None = None):
        super().__init__()
        self.heads = heads
        self.read = nn.Linear(width, 2 * heads, bias=False)  # r_h (query side), s_h (key side)
        below = float(init if below is None else below)  # c_h's start; None: as a_h's
        start = torch.tensor([-float(init)] * heads + [-below] * heads)
        self.slopes = nn.Parameter(start)  # a_h (d > 0), then c_h (d < 0)
        self.knot = nn.Parameter(torch.zeros(heads))  # t_h

    def scalars(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, W) -> (r, s), each (B, H, T) float32."""
        B, T, _ = x.shape
        with torch.autocast(x.device.type, enabled=False):
            both = self.read(x.float())
        r, s = both.view(B, T, 2, self.heads).permute(2, 0, 3, 1).unbind(0)
        return r, s

    def bias(self, r: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """r (B, H, Tq), s (B, H, Tk) -> (B, H, Tq, Tk) float32: a_h relu(d) + c_h relu(-d)."""
        d = s[:, :, None, :] - r[:, :, :, None] - self.knot[:, None, None]
        a, c = self.slopes.view(2, self.heads, 1, 1)
        return a * d.clamp(min=0) + c * (-d).clamp(min=0)


def attend(module: DiffBias, q, k, v, scalars, inp, cache, scale: float | None, impl: str) -> torch.Tensor:
    """softmax(scale q.k + masks + FIRE + the difference bias) v; q, k, v (B, H, Tq, D) of the new tokens (after
    `Attention.norm_qk`), scalars their (r, s) from `DiffBias.scalars`; k, v and s join `cache` -> (B, H, Tq, D)."""
    r, s = scalars
    if inp.scores is None and inp.rot is not None:
        q, k = rotate(q, inp.rot), rotate(k, inp.rot)
    if cache is not None:
        k, v = cache.append(k, v)
        s = cache.append_scalars(s)
    t_q, t_k = q.shape[2], k.shape[2]
    bias = small_attention.additive_bias(inp, t_q, t_k, q.device) + module.bias(r, s)  # masks, FIRE, this
    if cache is None and inp.scores is None and small_attention.wanted(impl, q, t_k):
        return small_attention.attention(q, k, v, bias, scale)
    with torch.autocast(q.device.type, enabled=False):
        alpha = q.shape[-1] ** -0.5 if scale is None else scale
        dots = inp.scores(q, k) if inp.scores is not None else q.float() @ k.float().transpose(-1, -2)
        weights = (dots.float() * alpha + bias).softmax(dim=-1)
        return (weights @ v.float()).to(v.dtype)
