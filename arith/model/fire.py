"""FIRE, a learned relative bias of the relative slot (`positions.REL_POS`), and its randomized positions in
training (model.fire_max_length > 0). On CUDA its bias can go through FlexAttention (flex.py)."""

from __future__ import annotations

import torch
import torch.nn as nn

from arith.errors import ConfigError
from arith.model.relative import RelSlot, counted


class FIRE(RelSlot):
    """Functional Interpolation for Relative Positions (Li et al. 2023, arXiv 2310.04418).

    b(i, j) = MLP(psi(i - j) / psi(max(L, i))) per head, psi(x) = log(c x + 1). The constants c = 0.1,
    L = 512 and the 32-unit hidden layer are the paper's defaults. c and L are used through abs() so they stay
    positive whatever the optimizer does. The MLP keeps its biases (and its default init): without them a ReLU
    net of a non-negative scalar could only scale its input. model.fire_max_length > 0: randomized positions.
    Positions of shape (B, T) (left padding: each row's own query positions) give a (B, H, Tq, Tk) bias.
    """

    keeps_init = True
    left_pad = True

    def __init__(self, cfg, hidden: int = 32, c: float = 0.1, threshold: float = 512.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, cfg.heads))
        self.c = nn.Parameter(torch.tensor(c))
        self.threshold = nn.Parameter(torch.tensor(threshold))

    @staticmethod
    def check(cfg, max_tokens, training, max_length=None):
        max_length = cfg.fire_max_length if max_length is None else max_length
        if training and 0 < max_length < max_tokens:
            raise ConfigError(
                f"model.fire_max_length={max_length} too small: training sequences reach {max_tokens} tokens"
            )

    @classmethod
    def position_fn(cls, cfg):
        # randomized positions in training (Ruoss et al. 2023, arXiv 2305.16843; with FIRE: Zhou et al. 2024): a
        # sorted random subset of [0, fire_max_length) instead of 0..length-1, from torch's global RNG
        max_length = int(cfg.fire_max_length)

        def draw(length, start, cached, training, device):
            if not (training and max_length > 0):
                return counted(length, start, cached, training, device)
            if cached:
                raise ValueError(
                    "randomized FIRE draws new positions per call: decode with the model in eval mode"
                )
            cls.check(None, length, training, max_length)
            # drawn on the host (the checkpointed CPU RNG stream); copied without a host sync
            pos = torch.randperm(max_length)[:length].sort().values.to(device, non_blocking=True)
            return pos, pos

        return draw

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """(H, Tq, Tk) float32, also under bf16 autocast: the MLP's input x moves by less than bf16's spacing
        between neighbouring long distances (about 8e-4 per token at 300 tokens against 3.9e-3), so in bf16 runs
        of ~5 distances would share one bias exactly where length generalization is measured."""
        if q_pos.dim() == 2 and bool(q_pos.max() <= self.threshold.abs()):
            # left-padded rows: q - k is every row's own, and max(L, q) = L for every query, so each row's bias is
            # that of the row with the most positions (the unpadded one), computed once: (H, Tq, Tk)
            row = q_pos[:, -1].argmax()
            return self.bias(q_pos[row], k_pos[row])
        with torch.autocast(q_pos.device.type, enabled=False):
            c = self.c.abs()
            i = q_pos.float()[..., :, None]  # (Tq, 1), or (B, Tq, 1)
            # future keys get masked by the caller; clamp so log() stays finite there (and at PADs, i < 0)
            dist = (i - k_pos.float()[..., None, :]).clamp(min=0)  # (Tq, Tk)
            scale = torch.log1p(c * torch.maximum(self.threshold.abs(), i.clamp(min=0)))  # (Tq, 1)
            x = torch.log1p(c * dist) / scale  # (Tq, Tk) in [0, 1] while i <= L
            return self.mlp(x.unsqueeze(-1)).movedim(-1, -3)  # (Tq, Tk, H) -> (H, Tq, Tk)
