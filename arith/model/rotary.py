"""The rotary family of the relative slot (`positions.REL_POS`): RoPE (also partial), ReRoPE, and `rotate`, the one
q/k rotation that attention, the schemes and the attention plots apply."""

from __future__ import annotations

import torch

from arith.errors import ConfigError
from arith.model.relative import RelSlot


def rotate(x: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Apply a rotary (cos, sin) of shape (T, D) or (B, 1, T, D) to x (B, H, T, D); in float32, returned as x's dtype."""
    cos, sin = rot
    if cos.shape[-1] < x.shape[-1]:  # partial rotary: only the first dims of each head turn, the rest pass
        d = cos.shape[-1]
        return torch.cat((rotate(x[..., :d], rot), x[..., d:]), dim=-1)
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)  # (B, H, T, D/2) each: rotate-half pairing (i, i + D/2)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


class RoPE(RelSlot):
    """Rotary position embedding (Su et al. 2021, arXiv 2104.09864): q and k rotated by their absolute index.

    `fraction` < 1 rotates only the first `fraction` of each head's dims (GPT-NeoX-20B, Black et al. 2022,
    used 0.25), with frequencies spread over the rotated dims; the others carry content only. Built from the
    model config by the registry, or as ``RoPE(head_dim, base, fraction)``.
    """

    left_pad = True

    def __init__(self, head_dim, base: float = 10000.0, fraction: float = 1.0):
        super().__init__()
        if not isinstance(head_dim, int):  # the model config
            cfg = head_dim
            head_dim, base, fraction = cfg.width // cfg.heads, cfg.rope_base, cfg.rope_fraction
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
        angles = pos.float()[..., None] * self.inv_freq  # (T, R/2), or (B, T, R/2)
        angles = torch.cat((angles, angles), dim=-1)  # (T, R), R = rotated dims (D unless partial)
        if angles.dim() == 3:
            angles = angles[:, None]  # (B, 1, T, R): one rotation per row, for every head
        return angles.cos(), angles.sin()


class ReRoPE(RoPE):
    """ReRoPE (Su 2023, "Rectified Rotary Position Embeddings"): RoPE whose relative distance stops growing.

    The score of query i and key j uses the rotation of distance d = i - j while d < window, and of
    window + (d - window) / k beyond it ("leaky ReRoPE"; k = 0 means slope 0: every distance >= window
    reads as window). So a model meets no distance it was not trained on, however long the sequence; with
    window >= the training length, training is exactly RoPE. A clipped distance is not a difference of two
    absolute rotations, so `scores` computes two score matrices, both as rotated q . rotated k:
        near: q at i,                         k at j        -> distance i - j
        far:  q at i/k + window (1 - 1/k),    k at j/k      -> distance window + (i - j - window) / k
    and keeps `near` inside the window, `far` outside (with 1/k read as 0 when k = 0). The KV cache keeps
    unrotated keys for this, since each key is rotated twice.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        window, leaky_k = cfg.rerope_window, cfg.rerope_leaky_k
        if window < 1 or leaky_k < 0:
            raise ConfigError(
                f"model.rerope_window={window!r} must be >= 1 and model.rerope_leaky_k={leaky_k!r} >= 0"
            )
        self.window, self.slope = window, (1.0 / leaky_k if leaky_k > 0 else 0.0)

    def rotary(self, pos: torch.Tensor):
        return None  # the rotations depend on the (query, key) pair: see `scores`

    def windows(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> tuple:
        """((q rot, k rot) near, (q rot, k rot) far, in_window (Tq, Tk) bool), rots as `RoPE.rotary`."""
        q_pos, k_pos = q_pos.float(), k_pos.float()
        near = (RoPE.rotary(self, q_pos), RoPE.rotary(self, k_pos))
        far_q = q_pos * self.slope + self.window * (1.0 - self.slope)
        far = (RoPE.rotary(self, far_q), RoPE.rotary(self, k_pos * self.slope))
        in_window = (q_pos[..., :, None] - k_pos[..., None, :]) < self.window  # (Tq, Tk) or (B, Tq, Tk)
        return near, far, in_window if in_window.dim() == 2 else in_window[:, None]

    def scores(self, q_pos: torch.Tensor, k_pos: torch.Tensor):
        (q_near, k_near), (q_far, k_far), in_window = self.windows(q_pos, k_pos)

        def score(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:  # (B, H, Tq, D), (B, H, Tk, D) unrotated
            near = rotate(q, q_near) @ rotate(k, k_near).transpose(-2, -1)  # (B, H, Tq, Tk)
            far = rotate(q, q_far) @ rotate(k, k_far).transpose(-2, -1)  # (B, H, Tq, Tk)
            return torch.where(in_window, near, far)

        return score
