"""The one attention path: causal self-attention through `F.scaled_dot_product_attention`.

A relative-position module (`relative.RelSlot`) contributes an optional q/k rotation (RoPE), an optional
additive bias (FIRE) or its own score function (ReRoPE, whose clipped distances are not a rotation of q and k
alone: `explicit_attention`). They depend only on positions, so `Attention.prepare` builds them (and the causal
mask) once per forward pass and layer; the looped decoder reuses them across recurrences.

Attention temperature: `model.attn_logit_scale` multiplies every q.k / sqrt(D) logit (training and evaluation;
through SDPA's and FlexAttention's `scale`, so 1 leaves the logits bit for bit as without it). At evaluation a
`Temperature` set on the model (`set_attn_temperature`, a runtime setting like `flex.set_attention_impl`, never
part of the weights) multiplies them again, per query, by scaling q. Additive biases (FIRE) are not scaled.

`model.qk_norm`: each head's queries and keys are RMS-normalized (a learned gain per channel) before positions and
scales act, so a logit stays within sqrt(D) max_i |g_q,i g_k,i| times the logit scale (Dehghani et al. 2023;
Wortsman et al. 2023, arXiv 2309.14322: the attention-logit growth behind loss spikes). Off: no parameters, the
logits as without it.

`model.attn_log_n`: trained log-n scaling. Query i's logits in head h are multiplied by 1 + g_h log(n_i), n_i the
keys it may see (causal, windows and left PADs counted out) and g_h a learned gain per head, 0 at the start: a head
can learn to sharpen as the keys it chooses among grow in number, and the factor extrapolates in log n past the
longest training row (Scalable-Softmax, Nakanishi 2025, arXiv 2501.19399, with a learned slope). g_h is not
constrained: a negative one flattens the logits as n grows, and past n = e^(-1/g_h) turns their sign (sorting learned
-0.19 and -0.15, docs/RESULTS.md). Additive biases (FIRE) are not scaled. Off: no parameters, the logits as without
it.

`model.diff_bias`: a learned one-sided bias over the difference of two scalars read from the query's and the key's
tokens (diff_bias.py); `attend` then hands the call to `diff_bias.attend`, and the KV cache keeps the keys' scalars.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from arith.model import diff_bias, flex, small_attention
from arith.model.positions import build_rel_pos
from arith.model.rotary import rotate


class KVCache:
    """Keys (already rotated) and values of the tokens seen so far, for one (recurrence, layer) pair.

    Storage grows by doubling so that appending one token per decoding step does not copy the whole past;
    `reserve` (tokens, when the caller knows how many the cache will hold) sizes it once instead. The slots past
    `length` hold zeros (`step_attention` reads the whole storage, those slots masked).
    """

    def __init__(self, reserve: int = 0):
        self.k: torch.Tensor | None = None  # (B, H, capacity, D)
        self.v: torch.Tensor | None = None
        self.s: torch.Tensor | None = None  # (B, H, capacity) float32: the keys' scalars (model.diff_bias)
        self.length = 0
        self.reserve = reserve

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, H, T, D = k.shape
        need = self.length + T
        if self.k is None or need > self.k.shape[2] or self.k.dtype != k.dtype:
            capacity = max(need, 2 * self.length, 16, self.reserve)
            new_k = k.new_zeros(B, H, capacity, D)
            new_v = v.new_zeros(B, H, capacity, D)
            if self.k is not None:
                new_k[:, :, : self.length] = self.k[:, :, : self.length]
                new_v[:, :, : self.length] = self.v[:, :, : self.length]
            self.k, self.v = new_k, new_v
        self.k[:, :, self.length : need] = k
        self.v[:, :, self.length : need] = v
        self.length = need
        return self.k[:, :, :need], self.v[:, :, :need]  # (B, H, past + T, D)

    def append_scalars(self, s: torch.Tensor) -> torch.Tensor:
        """The keys' scalars (B, H, T) of the tokens `append` has just added (`diff_bias`) -> (B, H, past + T)."""
        B, H, T = s.shape
        past = self.length - T
        if self.s is None or self.s.shape[2] != self.k.shape[2]:
            new_s = s.new_zeros(B, H, self.k.shape[2])
            if self.s is not None:
                new_s[:, :, :past] = self.s[:, :, :past]
            self.s = new_s
        self.s[:, :, past : self.length] = s
        return self.s[:, :, : self.length]

    def place(self, rows: torch.Tensor, part: KVCache, batch: int, length: int) -> None:
        """Hold `part`'s keys and values (rows (n,) long of a batch of `batch` rows) in the last slots of the first
        `length`, before them zeros (a group prefilled without its left PADs, `DecoderCache.gather`)."""
        n, H, _, D = part.k.shape
        if self.k is None:
            capacity = max(length, 16, self.reserve)
            self.k = part.k.new_zeros(batch, H, capacity, D)
            self.v = part.v.new_zeros(batch, H, capacity, D)
        if part.s is not None:  # model.diff_bias's key scalars
            if self.s is None:
                self.s = part.s.new_zeros(batch, H, self.k.shape[2])
            self.s[rows, :, length - part.length : length] = part.s[:, :, : part.length]
        self.k[rows, :, length - part.length : length] = part.k[:, :, : part.length]
        self.v[rows, :, length - part.length : length] = part.v[:, :, : part.length]
        self.length = length

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these rows (B',) of the batch, in this order (decoding drops the finished ones)."""
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, rows), self.v.index_select(0, rows)
        if self.s is not None:
            self.s = self.s.index_select(0, rows)


@dataclass
class AttnInputs:
    """Everything attention needs from positions, shared by every call of one layer in a forward pass."""

    # (cos, sin), each (Tq, D) for the new tokens; (B, 1, Tq, D) with per-row (left-padded) positions
    rot: tuple[torch.Tensor, torch.Tensor] | None
    # float (H, Tq, Tk) bias with -inf above the diagonal ((B, H, Tq, Tk) per row), or bool (Tq, Tk)
    mask: torch.Tensor | None
    is_causal: bool
    flex_bias: torch.Tensor | None = None  # (H, T, T) FIRE bias for the FlexAttention path (see flex.py)
    block_mask: object | None = None  # its causal BlockMask
    scores: Callable | None = (
        None  # (q, k unrotated) -> raw (B, H, Tq, Tk) q.k of the scheme; mask is then bool
    )
    q_scale: torch.Tensor | None = None  # (Tq,) or (B, Tq): each query's logit factor (`Temperature`)
    # (B or 1, 1, Tq, 1) float32: log of the number of keys each query may see (model.attn_log_n)
    log_n: torch.Tensor | None = None
    # (B, 1, Tq, Tk) bool, True where query i may see key j: the row and number windows and the left PADs
    # (`ArithModel.windows`), causal included
    allow: torch.Tensor | None = None
    # `step_attention`'s mask as an additive bias, built by the first call of the pass: ((B * H, capacity, length,
    # dtype), (B * H, 1, capacity) float)
    step: tuple | None = None
    # `small_attention`'s float bias (masks and FIRE in one), built by the first call of the pass
    dense: torch.Tensor | None = None


TEMPERATURE_MODES = ("const", "log")
TEMPERATURE_WHERE = ("all", "first")


@dataclass(frozen=True)
class Temperature:
    """A test-time attention temperature: query i's logits are multiplied by
        const: scale
        log:   scale * max(1, log(n_i) / log(train_len)),   n_i = i + 1, the keys query i sees (causal)
    the second being Su's entropy-invariant attention (2021; cf. Scalable-Softmax, arXiv 2501.19399), left at 1
    for sequences no longer than training. where: every attention call ("all") or only the first of each
    forward pass ("first": the first layer in the first recurrence)."""

    scale: float = 1.0
    mode: str = "const"
    where: str = "all"
    train_len: int | None = None  # longest training sequence (tokens); needed by mode=log

    def __post_init__(self):
        if (
            isinstance(self.scale, bool)
            or not isinstance(self.scale, (int, float))
            or not 0 < self.scale < math.inf
        ):
            raise ValueError(f"attention scale {self.scale!r} must be a number > 0")
        if self.mode not in TEMPERATURE_MODES or self.where not in TEMPERATURE_WHERE:
            raise ValueError(
                f"mode {self.mode!r} / where {self.where!r}: valid {TEMPERATURE_MODES} / {TEMPERATURE_WHERE}"
            )
        if self.mode == "log" and (self.train_len is None or self.train_len < 2):
            raise ValueError(
                f"mode=log needs the longest training sequence (>= 2 tokens), got {self.train_len!r}"
            )

    @property
    def is_identity(self) -> bool:
        return self.mode == "const" and self.scale == 1

    def factors(self, start: int, length: int, device, pad: torch.Tensor | None = None) -> torch.Tensor:
        """(length,) float32 factors of the queries at positions start..start + length - 1; pad (B,): the left PADs
        of each row, whose queries then count only the real tokens -> (B, length) (mode log)."""
        if self.mode == "const":
            return torch.full((length,), float(self.scale), device=device)
        keys = torch.arange(start + 1, start + length + 1, device=device, dtype=torch.float32)
        if pad is not None:
            keys = (keys[None] - pad[:, None]).clamp(min=1)  # a PAD query: 1, so that log() stays finite
        return self.scale * (keys.log() / math.log(self.train_len)).clamp(min=1.0)


def log_key_counts(allow: torch.Tensor | None, start: int, t_q: int, device) -> torch.Tensor:
    """(B or 1, 1, Tq, 1) float32: log of the number of keys each of the Tq new queries may see (`AttnInputs.log_n`):
    from `allow` (B, 1, Tq, Tk) where windows or left PADs hide some, else causal (the queries at start..start + Tq -
    1 see start + 1..start + Tq keys). A query that sees none (never the case) reads log 1 = 0."""
    if allow is not None:
        n = allow.sum(dim=-1, keepdim=True, dtype=torch.float32).clamp(min=1)
    else:
        n = torch.arange(start + 1, start + t_q + 1, device=device, dtype=torch.float32).view(1, 1, t_q, 1)
    return n.log()


def set_attn_temperature(model: nn.Module, temperature: Temperature | None) -> None:
    """Set (or, with None or an identity, clear) the test-time attention temperature of an `ArithModel`; it acts in
    eval mode only."""
    model.attn_temperature = None if temperature is None or temperature.is_identity else temperature


def row_window_mask(digit_index: torch.Tensor, t_q: int, window: int) -> torch.Tensor:
    """(B, 1, Tq, Tk) bool: causal, and a digit key visible to a query only when their indices within their
    numbers (`positions.abacus_positions`, 0 for non-digits) differ by at most `window`; non-digit keys are always
    visible. digit_index (B, Tk): every token so far, the Tq queries last (model.row_window)."""
    t_k = digit_index.shape[1]
    q = digit_index[:, t_k - t_q :]  # (B, Tq)
    near = (q[:, :, None] - digit_index[:, None, :]).abs() <= window  # (B, Tq, Tk)
    visible = near | (digit_index == 0)[:, None, :]
    return (visible & causal_mask(t_q, t_k, digit_index.device))[:, None]


def number_ids(digit_index: torch.Tensor) -> torch.Tensor:
    """(B, Tk) long: how many numbers (runs of digits; digit_index 1 opens one) begin at or before each token, so a
    number and the non-digits after it share one id."""
    return (digit_index == 1).long().cumsum(dim=1)


def number_window_mask(
    digit_index: torch.Tensor, after_prompt: torch.Tensor, t_q: int, window: int
) -> torch.Tensor:
    """(B, 1, Tq, Tk) bool: causal, and past the prompt a key visible to a query only when at most `window` numbers
    (runs of digits) started after the key's number and up to the query; a non-digit counts with the number
    before it, and the prompt's tokens are always visible (model.number_window). digit_index (B, Tk): as
    `row_window_mask`'s (1 opens a number); after_prompt (B, Tk) bool, False up to and including '='; both cover
    every token so far, the Tq queries last."""
    t_k = digit_index.shape[1]
    number = number_ids(digit_index)
    near = (number[:, t_k - t_q :, None] - number[:, None, :]) <= window  # (B, Tq, Tk)
    visible = near | ~after_prompt[:, None, :]
    return (visible & causal_mask(t_q, t_k, digit_index.device))[:, None]


def item_window_mask(digit_index: torch.Tensor, in_prompt: torch.Tensor, t_q: int) -> torch.Tensor:
    """(B, 1, Tq, Tk) bool: causal, and a query in the prompt (before '=') sees only its own item: its number and
    the non-digits after it, up to the next number (model.item_window); from '=' on, every earlier token.
    digit_index (B, Tk): as `row_window_mask`'s (1 opens a number); in_prompt (B, Tk) bool, True before '='; both
    cover every token so far, the Tq queries last."""
    t_k = digit_index.shape[1]
    number = number_ids(digit_index)
    same = number[:, t_k - t_q :, None] == number[:, None, :]  # (B, Tq, Tk)
    visible = same | ~in_prompt[:, t_k - t_q :, None]
    return (visible & causal_mask(t_q, t_k, digit_index.device))[:, None]


def item_digits_mask(
    digit_index: torch.Tensor, in_prompt: torch.Tensor, t_q: int, window: int
) -> torch.Tensor:
    """(B, 1, Tq, Tk) bool: causal, and in the prompt (before '=') a query reads at most `window` digits of a
    number: a digit itself and the window - 1 digits written before it (the lower ones), a non-digit (':', a label)
    the number's top `window` digits; non-digit keys stay visible, and from '=' on every earlier token is
    (model.item_digits, with model.item_window: an item then reads the same however long its number is).
    digit_index (B, Tk): as `row_window_mask`'s (1 opens a number); in_prompt (B, Tk) bool, True before '='; both
    cover every token so far, the Tq queries last."""
    t_k = digit_index.shape[1]
    digit = digit_index > 0
    number = number_ids(digit_index)
    lengths = torch.zeros(
        digit_index.shape[0], t_k + 1, dtype=digit_index.dtype, device=digit_index.device
    ).scatter_reduce_(1, number, digit_index, reduce="amax")  # (B, Tk + 1): digits of each number
    depth = lengths.gather(1, number) - digit_index + 1  # (B, Tk): 1 = a number's top digit
    q_index = digit_index[:, t_k - t_q :, None]  # (B, Tq, 1)
    below = q_index - digit_index[:, None, :] < window  # a digit query: its window - 1 lower digits
    top = (depth <= window)[:, None, :]  # a non-digit query: the top `window` digits
    visible = torch.where(q_index > 0, below, top) | ~digit[:, None, :] | ~in_prompt[:, t_k - t_q :, None]
    return (visible & causal_mask(t_q, t_k, digit_index.device))[:, None]


def prompt_digits_hidden_mask(digit_index: torch.Tensor, in_prompt: torch.Tensor, t_q: int) -> torch.Tensor:
    """(B, 1, Tq, Tk) bool: causal, and from '=' on a query sees none of the prompt's digits, only its non-digits
    (sorting's ':' and labels, which read their numbers) and the answer so far (model.hide_prompt_digits). In the
    prompt, every earlier token. digit_index (B, Tk): as `row_window_mask`'s; in_prompt (B, Tk) bool, True before
    '='; both cover every token so far, the Tq queries last."""
    t_k = digit_index.shape[1]
    prompt_digit = (digit_index > 0) & in_prompt  # (B, Tk)
    visible = ~(~in_prompt[:, t_k - t_q :, None] & prompt_digit[:, None, :])  # (B, Tq, Tk)
    return (visible & causal_mask(t_q, t_k, digit_index.device))[:, None]


def answer_window_mask(after_prompt: torch.Tensor, t_q: int, window: int) -> torch.Tensor:
    """(B, 1, Tq, Tk) bool: causal, and past the prompt a query sees the prompt (up to and including '=') and only
    the `window` tokens before it (model.answer_window). after_prompt (B, Tk) bool, False up to and including
    '='; it covers every token so far, the Tq queries last."""
    t_k = after_prompt.shape[1]
    causal = causal_mask(t_q, t_k, after_prompt.device)
    q_idx = torch.arange(t_k - t_q, t_k, device=after_prompt.device)[:, None]
    near = q_idx - torch.arange(t_k, device=after_prompt.device)[None, :] <= window  # (Tq, Tk)
    return (causal & (near | ~after_prompt[:, None, :]))[:, None]


def prompt_window_mask(in_prompt: torch.Tensor, t_q: int, window: int) -> torch.Tensor:
    """(B, 1, Tq, Tk) bool: causal, and a query in the prompt (before '=') sees only the `window` tokens up to and
    including itself (model.prompt_window); from '=' on, every earlier token. in_prompt (B, Tk) bool, True before
    '='; it covers every token so far, the Tq queries last."""
    t_k = in_prompt.shape[1]
    causal = causal_mask(t_q, t_k, in_prompt.device)
    q_idx = torch.arange(t_k - t_q, t_k, device=in_prompt.device)[:, None]
    near = q_idx - torch.arange(t_k, device=in_prompt.device)[None, :] < window  # (Tq, Tk)
    return (causal & (near | ~in_prompt[:, t_k - t_q :, None]))[:, None]


def causal_mask(t_q: int, t_k: int, device=None) -> torch.Tensor:
    """(Tq, Tk) bool, True where key j may be seen by query i; the queries are the last Tq of the Tk tokens."""
    past = t_k - t_q
    q_idx = torch.arange(past, t_k, device=device)[:, None]
    k_idx = torch.arange(t_k, device=device)[None, :]
    return k_idx <= q_idx


def positions_of(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """x (B, T, C) at the positions keep (B, A) long of each row -> (B, A, C); all of x when keep is None."""
    return x if keep is None else x.gather(1, keep[:, :, None].expand(-1, -1, x.shape[-1]))


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg.heads
        self.head_dim = cfg.width // cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=False)
        self.proj = nn.Linear(cfg.width, cfg.width, bias=False)
        self.rel = build_rel_pos(cfg)
        # None keeps SDPA's own 1/sqrt(D), so model.attn_logit_scale = 1 is exactly plain attention
        logit_scale = float(getattr(cfg, "attn_logit_scale", 1.0))
        self.sdpa_scale = None if logit_scale == 1 else logit_scale / math.sqrt(self.head_dim)
        self.attn_impl = "auto"  # auto | sdpa | flex: how a bias is applied (flex.set_attention_impl)
        qk_norm = bool(getattr(cfg, "qk_norm", False))
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else None
        log_n = bool(getattr(cfg, "attn_log_n", False))
        self.log_n_gain = nn.Parameter(torch.zeros(self.heads)) if log_n else None  # g_h, per head
        on = bool(getattr(cfg, "diff_bias", False))
        init = float(getattr(cfg, "diff_bias_init", 0.0))
        below = getattr(cfg, "diff_bias_init_below", None)  # None: as init (DiffBias)
        self.diff = diff_bias.DiffBias(cfg.width, self.heads, init, below) if on else None  # model.diff_bias

    def norm_qk(
        self, q: torch.Tensor, k: torch.Tensor, inp: AttnInputs | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q, k (B, H, T, D) as the logits see them: RMS-normalized per head with model.qk_norm, then q times
        1 + g_h log(n_i) with model.attn_log_n (n_i from `inp.log_n`) and the test-time `inp.q_scale`."""
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.log_n_gain is not None:
            if inp is None or inp.log_n is None:
                raise ValueError(
                    "model.attn_log_n: the attention inputs carry no key counts (AttnInputs.log_n)"
                )
            q = q * (1 + self.log_n_gain[:, None, None] * inp.log_n).to(q.dtype)
        if inp is not None and inp.q_scale is not None:  # scaling query i scales row i of the logits
            scale = inp.q_scale.to(q.dtype)
            q = q * (scale[:, None] if scale.dim() == 1 else scale[:, None, :, None])
        return q, k

    def prepare(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> AttnInputs:
        """q_pos (Tq,): positions of the new tokens; k_pos (Tk,): positions of all keys, past ones first; (B, Tq) and
        (B, Tk) for left-padded rows (each row's own, `relative.RelSlot.left_pad`: the decoder then sets `allow`)."""
        t_q, t_k = q_pos.shape[-1], k_pos.shape[-1]
        scores = self.rel.scores(q_pos, k_pos)
        if scores is not None:  # the scheme computes q.k itself
            return AttnInputs(None, causal_mask(t_q, t_k, q_pos.device), False, scores=scores)
        rot = self.rel.rotary(q_pos)
        bias = self.rel.bias(q_pos, k_pos)
        if bias is None:
            if t_q == t_k:
                return AttnInputs(rot, None, True)
            if t_q == 1:  # one new token sees every cached one
                return AttnInputs(rot, None, False)
            return AttnInputs(rot, causal_mask(t_q, t_k, q_pos.device), False)
        if q_pos.dim() == 1 and flex.wanted(self.attn_impl, q_pos.device, t_q, t_k, self.head_dim):
            return AttnInputs(rot, None, False, bias, flex.causal_block_mask(t_q, q_pos.device))
        allowed = causal_mask(t_q, t_k, q_pos.device)
        return AttnInputs(rot, bias.masked_fill(~allowed, float("-inf")), False)

    def forward(
        self, x: torch.Tensor, inp: AttnInputs, cache: KVCache | None = None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C); keep (B, A) long: project only the outputs of those positions of each row,
        -> (B, A, C) (the decoder's `trim`: every token is still a key and a value)."""
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.heads, self.head_dim)  # (B, T, 3, H, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, D)
        scalars = None if self.diff is None else self.diff.scalars(x)
        y = self.attend(q, k, v, inp, cache, scalars)  # (B, H, T, D)
        return self.proj(positions_of(y.transpose(1, 2).reshape(B, T, C), keep))  # (B, T or A, H*D)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        inp: AttnInputs,
        cache: KVCache | None = None,
        scalars: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Causal softmax(s q k / sqrt(D) + positions) v, s = model.attn_logit_scale (q times model.attn_log_n's
        factor and the test-time `inp.q_scale`, `norm_qk`); q, k, v (B, H, T, D) of the new tokens, whose k and v
        join `cache` -> (B, H, T, D). Blocks with their own projections (`blocks.ShapedAttention`) call it.
        scalars: model.diff_bias's (r, s) of the new tokens (`diff_bias.DiffBias.scalars`), its bias then added."""
        q, k = self.norm_qk(q, k, inp)  # the query factors scale row i of the logits, whatever the kernel
        if scalars is not None:
            return diff_bias.attend(self.diff, q, k, v, scalars, inp, cache, self.sdpa_scale, self.attn_impl)
        if inp.scores is not None:
            return explicit_attention(q, k, v, inp, cache, self.sdpa_scale)
        if inp.rot is not None:
            q, k = rotate(q, inp.rot), rotate(k, inp.rot)
        if cache is None and inp.flex_bias is None and small_attention.wanted(self.attn_impl, q, k.shape[2]):
            bias = small_attention.additive_bias(inp, q.shape[2], k.shape[2], q.device)
            return small_attention.attention(q, k, v, bias, self.sdpa_scale)  # short rows on a CPU, training
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, past + T, D)
            if q.shape[2] == 1 and q.device.type == "cpu" and inp.mask is None and inp.flex_bias is None:
                return step_attention(q, cache, inp, self.sdpa_scale)
        if inp.allow is not None:  # windows, left PADs: one (B, 1, Tq, Tk) mask, a bias (FIRE) masked with it
            bias = inp.mask if inp.mask is not None and inp.mask.dtype != torch.bool else inp.flex_bias
            mask = inp.allow if bias is None else bias.to(q.dtype).masked_fill(~inp.allow, float("-inf"))
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.sdpa_scale)
        if inp.flex_bias is not None:
            return flex.attention(q, k, v, inp.flex_bias, inp.block_mask, self.sdpa_scale)  # (B, H, T, D)
        mask = inp.mask
        if mask is not None and mask.dtype not in (torch.bool, q.dtype):
            mask = mask.to(q.dtype)  # SDPA wants a float mask in the query's dtype (bf16 under autocast)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=inp.is_causal, scale=self.sdpa_scale
        )


def step_attention(
    q: torch.Tensor, cache: KVCache, inp: AttnInputs, scale: float | None = None
) -> torch.Tensor:
    """softmax(s q k / sqrt(D)) v of one new token a row, q (B, H, 1, D), over every key of `cache` (its own
    included) -> (B, H, 1, D): two matmuls over the whole storage, the slots past `cache.length` and those
    `inp.allow` hides masked by one additive bias, built once per forward pass (`inp.step`). On a CPU that reads
    one contiguous block, where SDPA, or a matmul over the slice `append` returns, reads a strided one at less
    than half the speed (the bulk of `solve_many`'s time)."""
    B, H, _, D = q.shape
    keys, values = cache.k.flatten(0, 1), cache.v.flatten(0, 1)  # (B * H, capacity, D)
    key = (B * H, keys.shape[1], cache.length, q.dtype)
    if inp.step is None or inp.step[0] != key:  # the first layer and recurrence of the pass
        bias = q.new_zeros(B, H, 1, keys.shape[1])
        bias[..., cache.length :] = float("-inf")
        if inp.allow is not None:
            bias[..., : cache.length].masked_fill_(~inp.allow, float("-inf"))
        inp.step = (key, bias.view(B * H, 1, -1))
    alpha = D**-0.5 if scale is None else scale
    scores = torch.baddbmm(inp.step[1], q.reshape(B * H, 1, D), keys.transpose(1, 2), alpha=alpha)
    return torch.bmm(scores.softmax(dim=-1), values).view(B, H, 1, D)  # masked slots: weight 0, values 0


def explicit_attention(
    q, k, v, inp: AttnInputs, cache: KVCache | None, scale: float | None = None
) -> torch.Tensor:
    """Attention on the scores of the position scheme (`inp.scores`, e.g. `rotary.ReRoPE`), one softmax.

    Explicit scores instead of SDPA: (B, H, Tq, Tk), fine for the small models and short sequences here.
    """
    if cache is not None:
        k, v = cache.append(k, v)  # unrotated keys: the scheme rotates them itself (ReRoPE: twice)
    scores = inp.scores(q, k).float() * (q.shape[-1] ** -0.5 if scale is None else scale)
    scores = scores.masked_fill(~(inp.mask if inp.allow is None else inp.allow), float("-inf"))
    return scores.softmax(dim=-1).to(v.dtype) @ v  # (B, H, Tq, D)
