"""Transformer layers. `BLOCKS` maps `model.block` to a layer class, built as `cls(cfg, index)`.

Every layer takes `(x, inp=None, cache=None)`: `inp` is the `AttnInputs` its `prepare(q_pos, k_pos)` built for
this forward pass (None: a fresh causal sequence at positions 0..T-1), `cache` its `KVCache`. The decoder
first gives every matrix its normal(0.02) init and `out_projections()` the depth-scaled one; a layer with its
own prescription adds `init_weights(depth)`, depth being the unrolled training depth (layers x recurrences).
`left_pad = True`: a left-padded row (PADs masked in `inp.allow`) gives what the row alone gives (opt-in; the
decoder allows left padding only then, `ArithModel.pads_left`). `trims = True`: `forward(..., keep=rows)` returns
the outputs at the positions rows (B, A) long of each row only, every token still a key and a value (the decoder's
`trim`; without it the decoder picks them from the layer's whole output).

    pre_ln    x + attn(ln(x)), then + ffn(ln(x))                 the default
    post_ln   ln(x + attn(x)), then ln(x + ffn(x))               the original's, with DeepNet's init
    parallel  x + attn(ln(x)) + ffn(ln(x)), one shared norm      GPT-J, PaLM
    sas_p     shaped attention (no V, no projection) + ffn,      He & Hofmann 2023, "SAS-P"
              in parallel, no skips, no norms
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from arith.model.attention import Attention, AttnInputs, KVCache, positions_of


class GeluGLU(nn.Module):
    """GELU-gated linear unit (Shazeer 2020, arXiv 2002.05202): out(gelu(a) * b), no biases.

    `ffn` is the width of the input projection, split into the two halves a and b (as in the original, whose
    width-1024 / FFN-2048 16x1 model has about 122M parameters), so the gated hidden layer has ffn / 2 units.
    """

    def __init__(self, width: int, ffn: int):
        super().__init__()
        self.w_in = nn.Linear(width, ffn, bias=False)  # both input projections in one matmul
        self.w_out = nn.Linear(ffn // 2, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w_in(x).chunk(2, dim=-1)  # (B, T, ffn / 2) each
        return self.w_out(F.gelu(a) * b)


class _AttnFFNLayer:
    """`prepare` and `out_projections` of a layer whose attention and FFN both write into the residual stream."""

    def prepare(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> AttnInputs:
        return self.attn.prepare(q_pos, k_pos)

    def out_projections(self) -> list[nn.Linear]:
        """The projections that write into the residual stream (scaled down at init)."""
        return [self.attn.proj, self.ffn.w_out]


class PreLNBlock(_AttnFFNLayer, nn.Module):
    """x + attn(ln(x)), then x + ffn(ln(x)). Pre-LN instead of the paper's post-LN: it trains without warm-up
    tricks at any depth, which matters for looped models whose effective depth changes at evaluation."""

    left_pad = True  # every token on its own but in attention, which masks the PADs
    trims = True  # forward's keep: the outputs at those positions only

    def __init__(self, cfg, index: int = 0):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.width, bias=False)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.width, bias=False)
        self.ffn = GeluGLU(cfg.width, cfg.ffn)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        inp: AttnInputs | None = None,
        cache: KVCache | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        inp = default_inputs(self, x) if inp is None else inp
        x = positions_of(x, keep) + self.drop(self.attn(self.ln1(x), inp, cache, keep))
        return x + self.drop(self.ffn(self.ln2(x)))


def default_inputs(layer: nn.Module, x: torch.Tensor) -> AttnInputs:
    pos = torch.arange(x.shape[1], device=x.device)
    return layer.prepare(pos, pos)


class PostLNBlock(PreLNBlock):
    """ln(x + attn(x)), then ln(x + ffn(x)): the original Transformer's layout and the paper's (cramming's
    `norm_scheme: post`). Post-LN needs a careful init to train deep; the original used cramming's
    `deepnorm-straight`, DeepNet's (Wang et al. 2022, arXiv 2203.00555) decoder prescription: Xavier-normal
    matrices with gain (8 N)^(-1/4) for values, output projection and FFN, gain 1 for queries and keys. We take
    N = the unrolled training depth (layers x recurrences), as cramming's deepnorm residual does."""

    def init_weights(self, depth: int) -> None:
        gain = (8 * depth) ** -0.25
        width = self.attn.proj.weight.shape[0]
        with torch.no_grad():
            q, k, v = self.attn.qkv.weight.view(3, width, width)  # each (W, W): Xavier fans of one matrix
            nn.init.xavier_normal_(q, gain=1.0)
            nn.init.xavier_normal_(k, gain=1.0)
            nn.init.xavier_normal_(v, gain=gain)
            for lin in (self.attn.proj, self.ffn.w_in, self.ffn.w_out):
                nn.init.xavier_normal_(lin.weight, gain=gain)

    def forward(
        self,
        x: torch.Tensor,
        inp: AttnInputs | None = None,
        cache: KVCache | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        inp = default_inputs(self, x) if inp is None else inp
        x = self.ln1(positions_of(x, keep) + self.drop(self.attn(x, inp, cache, keep)))
        return self.ln2(x + self.drop(self.ffn(x)))


class ParallelBlock(_AttnFFNLayer, nn.Module):
    """x + attn(ln(x)) + ffn(ln(x)): both sub-blocks read one norm of the same input (GPT-J; PaLM, Chowdhery
    et al. 2022). GPT-NeoX-20B (Black et al. 2022) is parallel too, with two norms. Half the sequential depth per
    layer; on accelerators the two input matmuls could also fuse into one (not done here)."""

    left_pad = True
    trims = True

    def __init__(self, cfg, index: int = 0):
        super().__init__()
        self.ln = nn.LayerNorm(cfg.width, bias=False)
        self.attn = Attention(cfg)
        self.ffn = GeluGLU(cfg.width, cfg.ffn)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        inp: AttnInputs | None = None,
        cache: KVCache | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        inp = default_inputs(self, x) if inp is None else inp
        h = self.ln(x)
        attn = self.drop(self.attn(h, inp, cache, keep))
        return positions_of(x, keep) + attn + self.drop(self.ffn(positions_of(h, keep)))


def identity_minus_mean(alpha: torch.Tensor, gamma: torch.Tensor, t_q: int, t_k: int) -> torch.Tensor:
    """alpha_h I - gamma_h C per head, for the last t_q of t_k tokens -> (H, t_q, t_k), float32. C is uniform
    causal attention: row i averages tokens 0..i."""
    q_idx = torch.arange(t_k - t_q, t_k, device=alpha.device)[:, None]  # (t_q, 1)
    k_idx = torch.arange(t_k, device=alpha.device)[None, :]  # (1, t_k)
    eye = (k_idx == q_idx).float()
    uniform = (k_idx <= q_idx).float() / (q_idx + 1).float()  # (t_q, t_k)
    return alpha.float()[:, None, None] * eye - gamma.float()[:, None, None] * uniform


class ShapedAttention(Attention):
    """SAS attention (He & Hofmann 2023, arXiv 2311.01906): no value and no output projection; per head h
        A_h = alpha_h I + beta_h softmax(q k / sqrt(D) + positions) - gamma_h C,     out_h = A_h x_h
    with x_h the head's slice of the input and C the uniform causal average (shaped attention, Noci et al.
    2023). The paper's init: W_Q = 0 and alpha = beta = gamma = 1, so softmax = C and A = I; the three gains are
    trainable per head. Positions (RoPE, FIRE, ...) and the KV cache act on the softmax part as usual; the
    (alpha I - gamma C) part is one small matmul in float32, since it carries the residual stream."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.qkv = nn.Linear(cfg.width, 2 * cfg.width, bias=False)  # queries and keys only
        del self.proj
        # 1-d, so the optimizer leaves them out of weight decay like other gains
        self.alpha = nn.Parameter(torch.ones(cfg.heads))
        self.beta = nn.Parameter(torch.ones(cfg.heads))
        self.gamma = nn.Parameter(torch.ones(cfg.heads))

    def forward(self, x: torch.Tensor, inp: AttnInputs, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        qk = self.qkv(x).view(B, T, 2, self.heads, self.head_dim)  # (B, T, 2, H, D)
        q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, H, T, D)
        v = x.view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, D): values = the input
        scalars = None if self.diff is None else self.diff.scalars(x)  # model.diff_bias
        if torch.is_autocast_enabled(x.device.type):
            mixed = self.attend(q, k, v, inp, cache, scalars)  # autocast casts v for SDPA; the cache keeps it
        else:
            mixed = self.attend(q, k, v.to(q.dtype), inp, cache, scalars)
        past_v = v if cache is None else cache.v[:, :, : cache.length]  # (B, H, past + T, D)
        skip = identity_minus_mean(self.alpha, self.gamma, T, past_v.shape[2])  # (H, T, past + T)
        with torch.autocast(x.device.type, enabled=False):
            y = torch.matmul(skip, past_v.float()) + self.beta.float()[:, None, None] * mixed.float()
        return y.transpose(1, 2).reshape(B, T, C)  # (B, T, H*D)


class SASPBlock(nn.Module):
    """The simplified parallel block without normalization (He & Hofmann 2023, "SAS-P, no norm"):
        out = ShapedAttention(h) + g_ffn * ffn(h)
    with no skip connection (the identity inside the shaped attention carries the signal), no values, no
    output projection. As in the authors' code, h = LayerNorm(x) in the first layer only (it normalizes the
    embedding's scale) and h = x elsewhere; g_ffn starts at 0.1 (their value at 18 layers) and is trainable.
    Their trainable gain on the attention branch is left out: alpha, beta and gamma absorb it exactly. Their
    code also keeps a value matrix in the first layer; we drop it with the others. Dropout (if any) acts on
    the FFN branch only: the attention branch carries the identity."""

    left_pad = False  # the uniform causal average C would count the left PADs

    def __init__(self, cfg, index: int = 0):
        super().__init__()
        self.ln = nn.LayerNorm(cfg.width, bias=False) if index == 0 else nn.Identity()
        self.attn = ShapedAttention(cfg)
        self.ffn = GeluGLU(cfg.width, cfg.ffn)
        self.ffn_gain = nn.Parameter(torch.full((1,), 0.1))
        self.drop = nn.Dropout(cfg.dropout)

    def prepare(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> AttnInputs:
        return self.attn.prepare(q_pos, k_pos)

    def out_projections(self) -> list[nn.Linear]:
        return [self.ffn.w_out]

    def init_weights(self, depth: int) -> None:
        with torch.no_grad():
            self.attn.qkv.weight[: self.attn.qkv.in_features].zero_()  # W_Q = 0: attention starts uniform

    def forward(
        self, x: torch.Tensor, inp: AttnInputs | None = None, cache: KVCache | None = None
    ) -> torch.Tensor:
        inp = default_inputs(self, x) if inp is None else inp
        h = self.ln(x)
        return self.attn(h, inp, cache) + self.ffn_gain * self.drop(self.ffn(h))


BLOCKS: dict[str, type[nn.Module]] = {
    "pre_ln": PreLNBlock,
    "post_ln": PostLNBlock,
    "parallel": ParallelBlock,
    "sas_p": SASPBlock,
}
