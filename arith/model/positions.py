"""Position schemes in two slots, one registry each (SPEC, "Our design").

* ``ABS_POS``: modules that add a vector to the token embedding. ``forward(ids, k) -> (B, T, width)`` and
  ``positions(ids, k) -> (B, T)`` (the row of the position table each token reads).
* ``REL_POS``: modules that act inside attention, given integer query and key positions (so KV-cached decoding
  can pass the absolute position of new tokens). ``rotary(pos)`` returns the (cos, sin) of a q/k rotation or
  None; ``bias(q_pos, k_pos)`` returns an additive per-head attention bias ``(H, Tq, Tk)`` or None. ReRoPE,
  whose rotation depends on the (query, key) pair, has ``windows(q_pos, k_pos)`` instead (see `ReRoPE`).

Unknown names raise `ConfigError` listing the valid ones, so a typo never silently means "no positions".
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

import torch
import torch.nn as nn

from arith.errors import ConfigError


def choice(value) -> str:
    """Enum member or plain string -> the plain name."""
    return value.value if isinstance(value, Enum) else str(value)


# ============================================================================ absolute slot
class NoAbsPos(nn.Module):
    """NoPE in the absolute slot: adds nothing."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width

    def positions(self, ids: torch.Tensor, k: int = 0) -> torch.Tensor:
        return torch.zeros_like(ids)

    def embed(self, pos: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*pos.shape, self.width, device=pos.device)

    def forward(self, ids: torch.Tensor, k: int = 0) -> torch.Tensor:
        return self.embed(self.positions(ids, k))


class LearnedPos(nn.Module):
    """GPT-style learned absolute positions: token t (0-based) reads row t. The offset k is ignored."""

    def __init__(self, width: int, max_pos: int):
        super().__init__()
        self.max_pos = max_pos
        self.table = nn.Embedding(max_pos, width)

    def positions(self, ids: torch.Tensor, k: int = 0) -> torch.Tensor:
        B, T = ids.shape
        if T > self.max_pos:
            raise ConfigError(
                f"model.max_pos={self.max_pos} too small: positions up to {T - 1} needed (sequence length {T})"
            )
        return torch.arange(T, device=ids.device).expand(B, T)

    def embed(self, pos: torch.Tensor) -> torch.Tensor:
        return self.table(pos)

    def forward(self, ids: torch.Tensor, k: int = 0) -> torch.Tensor:
        return self.embed(self.positions(ids, k))


def abacus_positions(is_digit: torch.Tensor) -> torch.Tensor:
    """1-based index of each digit within its maximal run of digits; 0 for non-digits.

    Vectorized: c = running count of digits; at every non-digit remember c (cummax carries the last one
    forward); a digit's index is c minus the count remembered at the last non-digit before it.
    """
    d = is_digit.long()  # (B, T)
    count = d.cumsum(dim=1)  # (B, T)
    at_breaks = torch.where(is_digit, torch.zeros_like(count), count)  # counts frozen at non-digits
    run_base = at_breaks.cummax(dim=1).values  # (B, T) digits counted before the current run
    return (count - run_base) * d


class AbacusPos(nn.Module):
    """Abacus embedding (McLeish et al. 2024, arXiv 2405.17399, SPEC "Abacus embedding").

    Row 0 is the non-digit row; a digit at 1-based index i in its number reads row i + k, where k is one
    offset shared by the batch (random in training, fixed at evaluation; the caller picks it).
    """

    def __init__(self, width: int, max_pos: int, digit_ids):
        super().__init__()
        self.max_pos = max_pos
        self.table = nn.Embedding(max_pos, width)
        lut = torch.zeros(max(digit_ids) + 1, dtype=torch.bool)
        lut[torch.as_tensor(list(digit_ids))] = True
        # derived from the tokenizer, so not part of the checkpoint
        self.register_buffer("digit_lut", lut, persistent=False)

    def is_digit(self, ids: torch.Tensor) -> torch.Tensor:
        in_range = ids < self.digit_lut.numel()
        return self.digit_lut[ids.clamp(max=self.digit_lut.numel() - 1)] & in_range

    def positions(self, ids: torch.Tensor, k: int = 0) -> torch.Tensor:
        pos = abacus_positions(self.is_digit(ids))
        pos = pos + k * (pos > 0)  # the offset moves digits only; non-digits keep row 0
        if pos.numel() and not torch.compiler.is_compiling():
            # one host sync per call, worth it: an out-of-range row is a device assert on CUDA, not an error.
            # Skipped inside torch.compile (it would break the graph): training checks the table up front.
            top = int(pos.max())
            if top >= self.max_pos:
                raise ConfigError(
                    f"model.max_pos={self.max_pos} too small: positions up to {top} needed "
                    f"(max digits + k, k={k})"
                )
        return pos

    def embed(self, pos: torch.Tensor) -> torch.Tensor:
        return self.table(pos)

    def forward(self, ids: torch.Tensor, k: int = 0) -> torch.Tensor:
        return self.embed(self.positions(ids, k))


class CouplingPos(AbacusPos):
    """Position Coupling (Cho et al. 2024, arXiv 2405.20671): tokens of equal significance share one id.

    In our formats every number is stored least-significant digit first, so "significance within the
    number" is exactly Abacus's index within the run of digits: for `a+b=c` the j-th digit of a, of b and of
    the answer all read row j + offset. What Cho et al. do differently is the random start: one offset per
    *example* in training (the caller passes k as a (B, 1) tensor), not one per batch; evaluation uses one
    int like Abacus. Their zero-padding of operands and their ids for `+` and `=` are not copied: our data
    carries no padding, and non-digits keep row 0 (which also keeps a token's id independent of the
    tokens after it, so KV-cached decoding continues exactly).
    """


ABS_POS: dict[str, Callable[..., nn.Module]] = {
    "none": lambda cfg, tok: NoAbsPos(cfg.width),
    "learned": lambda cfg, tok: LearnedPos(cfg.width, cfg.max_pos),
    "abacus": lambda cfg, tok: AbacusPos(cfg.width, cfg.max_pos, tok.digit_ids),
    "coupling": lambda cfg, tok: CouplingPos(cfg.width, cfg.max_pos, tok.digit_ids),
}


def build_abs_pos(cfg, tok) -> nn.Module:
    name = choice(cfg.abs_pos)
    if name not in ABS_POS:
        raise ConfigError(f"model.abs_pos={name!r} unknown; valid: {', '.join(ABS_POS)}")
    return ABS_POS[name](cfg, tok)


# ============================================================================ relative slot
class NoRelPos(nn.Module):
    def rotary(self, pos: torch.Tensor):
        return None

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor):
        return None


def rotate(x: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Apply a rotary (cos, sin) of shape (T, D) to x (B, H, T, D); computed in float32, returned in x's dtype."""
    cos, sin = rot
    if cos.shape[-1] < x.shape[-1]:  # partial rotary: only the first dims of each head turn, the rest pass
        d = cos.shape[-1]
        return torch.cat((rotate(x[..., :d], rot), x[..., d:]), dim=-1)
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)  # (B, H, T, D/2) each: rotate-half pairing (i, i + D/2)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


class RoPE(nn.Module):
    """Rotary position embedding (Su et al. 2021, arXiv 2104.09864): q and k rotated by their absolute index.

    `fraction` < 1 rotates only the first `fraction` of each head's dims (GPT-NeoX-20B, Black et al. 2022,
    used 0.25), with frequencies spread over the rotated dims; the others carry content only.
    """

    def __init__(self, head_dim: int, base: float, fraction: float = 1.0):
        super().__init__()
        if head_dim % 2:
            raise ConfigError(
                f"model.rel_pos=rope needs an even head dim (model.width / model.heads), got {head_dim}"
            )
        rot_dim = int(head_dim * fraction) // 2 * 2  # even: dims turn in pairs
        if not 0 < fraction <= 1 or rot_dim < 2:
            raise ConfigError(
                f"model.rope_fraction={fraction!r} must be in (0, 1] and rotate at least 2 of the "
                f"{head_dim} dims of a head"
            )
        inv_freq = base ** (-torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim)  # (R/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rotary(self, pos: torch.Tensor):
        angles = pos.float()[:, None] * self.inv_freq[None, :]  # (T, R/2)
        angles = torch.cat((angles, angles), dim=-1)  # (T, R), R = rotated dims (D unless partial)
        return angles.cos(), angles.sin()

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor):
        return None


class ReRoPE(RoPE):
    """ReRoPE (Su 2023, "Rectified Rotary Position Embeddings"): RoPE whose relative distance stops growing.

    The score of query i and key j uses the rotation of distance d = i - j while d < window, and of
    window + (d - window) / k beyond it ("leaky ReRoPE"; k = 0 means slope 0: every distance >= window
    reads as window). So a model meets no distance it was not trained on, however long the sequence; with
    window >= the training length, training is exactly RoPE. A clipped distance is not a difference of two
    absolute rotations, so attention computes two score matrices, both as rotated q . rotated k:
        near: q at i,                         k at j        -> distance i - j
        far:  q at i/k + window (1 - 1/k),    k at j/k      -> distance window + (i - j - window) / k
    and keeps `near` inside the window, `far` outside (with 1/k read as 0 when k = 0). The KV cache keeps
    unrotated keys for this, since each key is rotated twice.
    """

    def __init__(self, head_dim: int, base: float, fraction: float, window: int, leaky_k: float):
        super().__init__(head_dim, base, fraction)
        if window < 1 or leaky_k < 0:
            raise ConfigError(
                f"model.rerope_window={window!r} must be >= 1 and model.rerope_leaky_k={leaky_k!r} >= 0"
            )
        self.window, self.slope = window, (1.0 / leaky_k if leaky_k > 0 else 0.0)

    def rotary(self, pos: torch.Tensor):
        return None  # the rotations depend on the (query, key) pair: see `windows`

    def windows(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> tuple:
        """((q rot, k rot) near, (q rot, k rot) far, in_window (Tq, Tk) bool), rots as `RoPE.rotary`."""
        q_pos, k_pos = q_pos.float(), k_pos.float()
        near = (RoPE.rotary(self, q_pos), RoPE.rotary(self, k_pos))
        far_q = q_pos * self.slope + self.window * (1.0 - self.slope)
        far = (RoPE.rotary(self, far_q), RoPE.rotary(self, k_pos * self.slope))
        in_window = (q_pos[:, None] - k_pos[None, :]) < self.window  # (Tq, Tk)
        return near, far, in_window


class FIRE(nn.Module):
    """Functional Interpolation for Relative Positions (Li et al. 2023, arXiv 2310.04418).

    b(i, j) = MLP(psi(i - j) / psi(max(L, i))) per head, psi(x) = log(c x + 1). The constants c = 0.1,
    L = 512 and the 32-unit hidden layer are the paper's defaults. c and L are used through abs() so they stay
    positive whatever the optimizer does. The MLP keeps its biases: without them a ReLU net of a non-negative
    scalar could only scale its input.
    """

    def __init__(self, heads: int, hidden: int = 32, c: float = 0.1, threshold: float = 512.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, heads))
        self.c = nn.Parameter(torch.tensor(c))
        self.threshold = nn.Parameter(torch.tensor(threshold))

    def rotary(self, pos: torch.Tensor):
        return None

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        c = self.c.abs()
        i = q_pos.float()[:, None]  # (Tq, 1)
        # future keys get masked by the caller; clamp so log() stays finite there
        dist = (i - k_pos.float()[None, :]).clamp(min=0)  # (Tq, Tk)
        scale = torch.log1p(c * torch.maximum(self.threshold.abs(), i))  # (Tq, 1)
        x = torch.log1p(c * dist) / scale  # (Tq, Tk) in [0, 1] while i <= L
        return self.mlp(x.unsqueeze(-1)).permute(2, 0, 1)  # (Tq, Tk, H) -> (H, Tq, Tk)


REL_POS: dict[str, Callable[..., nn.Module]] = {
    "none": lambda cfg: NoRelPos(),
    "rope": lambda cfg: RoPE(cfg.width // cfg.heads, cfg.rope_base, cfg.rope_fraction),
    "fire": lambda cfg: FIRE(cfg.heads),
    "rerope": lambda cfg: ReRoPE(
        cfg.width // cfg.heads, cfg.rope_base, cfg.rope_fraction, cfg.rerope_window, cfg.rerope_leaky_k
    ),
}


def build_rel_pos(cfg) -> nn.Module:
    name = choice(cfg.rel_pos)
    if name not in REL_POS:
        raise ConfigError(f"model.rel_pos={name!r} unknown; valid: {', '.join(REL_POS)}")
    return REL_POS[name](cfg)


def random_positions(length: int, max_length: int, device=None) -> torch.Tensor:
    """Randomized positions (Ruoss et al. 2023, arXiv 2305.16843; used with FIRE by Zhou et al. 2024):
    a sorted random subset of [0, max_length) instead of 0..length-1, drawn from torch's global RNG."""
    if length > max_length:
        raise ConfigError(
            f"model.fire_max_length={max_length} too small: a sequence of {length} tokens needs at least {length}"
        )
    return torch.randperm(max_length)[:length].sort().values.to(device)
