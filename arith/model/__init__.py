"""Models: position registries, the one attention path, layers and the looped decoder.

from arith.model import build_model
model = build_model(cfg.model, tok)  # raises ConfigError naming the key on a bad setting
"""

from __future__ import annotations

from arith.model.blocks import BLOCKS
from arith.model.config_checks import validate
from arith.model.decoder import ArithModel, DecoderCache
from arith.model.positions import ABS_POS, REL_POS, build_abs_pos, build_rel_pos

__all__ = [
    "ABS_POS",
    "BLOCKS",
    "REL_POS",
    "ArithModel",
    "DecoderCache",
    "build_abs_pos",
    "build_model",
    "build_rel_pos",
]


def build_model(cfg, tok) -> ArithModel:
    validate(cfg)
    return ArithModel(cfg, tok)
