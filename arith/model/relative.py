"""The relative position slot's interface (`RelSlot`) and its default (`NoRel`): what attention asks of a scheme
registered in `positions.REL_POS` (see arith/model/positions.py's docstring). The schemes themselves live in
rotary.py (RoPE, ReRoPE) and fire.py (FIRE, randomized FIRE)."""

from __future__ import annotations

import torch
import torch.nn as nn


def counted(length: int, start: int, cached: bool, training: bool, device):
    """The default `RelSlot.position_fn`: queries at start..start+length-1, keys at 0..start+length-1."""
    k_pos = torch.arange(start + length, device=device)
    return k_pos[start:], k_pos


class RelSlot(nn.Module):
    """The relative slot's interface (see the module docstring); the default gives attention nothing."""

    keeps_init = False  # its parameters keep their own init instead of the model's normal(0, 0.02)
    left_pad = False  # takes (B, T) positions shifted by each row's left PADs (module docstring)

    def __init__(self, cfg=None):
        super().__init__()

    @classmethod
    def check(cls, cfg, max_tokens: int, training: bool) -> None:
        """Raise ConfigError before any work when sequences of max_tokens tokens cannot be positioned."""

    @classmethod
    def position_fn(cls, cfg):
        """(length, start, cached, training, device) -> (query positions (T,), key positions (start + T,)) of a
        forward pass, shared by every layer; built once per model, so that forward reads no config."""
        return counted

    def rotary(self, pos: torch.Tensor):
        return None

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor):
        return None

    def scores(self, q_pos: torch.Tensor, k_pos: torch.Tensor):
        return None


class NoRel(RelSlot):
    """No relative positions (the slot's default): attention's key padding mask is all left padding needs."""

    left_pad = True
