"""Transformer layers. `BLOCKS` maps a name to a layer class so other layouts (post-LN, parallel) can be added.

Every layer takes `(x, inp=None, cache=None)`: `inp` is the `AttnInputs` its `prepare(q_pos, k_pos)` built for
this forward pass (None: a fresh causal sequence at positions 0..T-1), `cache` its `KVCache`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from arith.model.attention import Attention, AttnInputs, KVCache


class GeluGLU(nn.Module):
    """GELU-gated linear unit (Shazeer 2020, arXiv 2002.05202): out(gelu(a) * b), no biases."""

    def __init__(self, width: int, ffn: int):
        super().__init__()
        self.w_in = nn.Linear(width, 2 * ffn, bias=False)  # both input projections in one matmul
        self.w_out = nn.Linear(ffn, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w_in(x).chunk(2, dim=-1)  # (B, T, ffn) each
        return self.w_out(F.gelu(a) * b)


class PreLNBlock(nn.Module):
    """x + attn(ln(x)), then x + ffn(ln(x)). Pre-LN instead of the paper's post-LN: it trains without warm-up
    tricks at any depth, which matters for looped models whose effective depth changes at evaluation."""

    def __init__(self, cfg):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.width, bias=False)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.width, bias=False)
        self.ffn = GeluGLU(cfg.width, cfg.ffn)
        self.drop = nn.Dropout(cfg.dropout)

    def prepare(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> AttnInputs:
        return self.attn.prepare(q_pos, k_pos)

    def out_projections(self) -> list[nn.Linear]:
        """The projections that write into the residual stream (scaled down at init)."""
        return [self.attn.proj, self.ffn.w_out]

    def forward(
        self, x: torch.Tensor, inp: AttnInputs | None = None, cache: KVCache | None = None
    ) -> torch.Tensor:
        if inp is None:
            pos = torch.arange(x.shape[1], device=x.device)
            inp = self.prepare(pos, pos)
        x = x + self.drop(self.attn(self.ln1(x), inp, cache))
        return x + self.drop(self.ffn(self.ln2(x)))


BLOCKS: dict[str, type[nn.Module]] = {"pre_ln": PreLNBlock}
