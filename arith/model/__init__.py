"""Models: position registries, the one attention path, layers and the looped decoder.

from arith.model import build_model
model = build_model(cfg.model, tok)  # raises ConfigError naming the key on a bad setting
"""

from __future__ import annotations

from arith.errors import ConfigError
from arith.model.blocks import BLOCKS
from arith.model.decoder import ArithModel, DecoderCache, validate
from arith.model.positions import ABS_POS, REL_POS, build_abs_pos, build_rel_pos, choice

__all__ = [
    "ABS_POS",
    "BLOCKS",
    "REL_POS",
    "ArithModel",
    "DecoderCache",
    "build_abs_pos",
    "build_model",
    "build_rel_pos",
    "check_positions",
    "position_rows",
]


def build_model(cfg, tok) -> ArithModel:
    validate(cfg)
    return ArithModel(cfg, tok)


def check_positions(cfg, max_tokens: int, max_digits: int, training: bool, k: int | None = None) -> None:
    """Raise ConfigError before any work when the position tables cannot hold the longest sequence.

    max_tokens: longest sequence (prompt + answer + EOS); max_digits: most digits in one number;
    k: the Abacus offset used at evaluation (None -> model.eval_k); training uses the largest, model.max_k.
    """
    abs_pos, rel_pos = choice(cfg.abs_pos), choice(cfg.rel_pos)
    if abs_pos == "learned" and max_tokens > cfg.max_pos:
        raise ConfigError(
            f"model.max_pos={cfg.max_pos} too small: positions up to {max_tokens - 1} needed "
            f"(sequences of {max_tokens} tokens)"
        )
    if abs_pos in ("abacus", "coupling"):
        offset = cfg.max_k if training else (cfg.eval_k if k is None else k)
        if max_digits + offset >= cfg.max_pos:
            raise ConfigError(
                f"model.max_pos={cfg.max_pos} too small: positions up to {max_digits + offset} needed "
                f"(max digits {max_digits} + k {offset})"
            )
    if rel_pos == "fire" and training and 0 < cfg.fire_max_length < max_tokens:
        raise ConfigError(
            f"model.fire_max_length={cfg.fire_max_length} too small: training sequences reach {max_tokens} tokens"
        )


def position_rows(cfg, max_tokens: int, max_digits: int, k: int) -> tuple[str, int] | None:
    """(table, highest row read) by sequences of max_tokens tokens whose longest number has max_digits digits,
    at offset k: learned reads row max_tokens - 1, Abacus and coupling max_digits + k; None for schemes
    without a position table. Training reaches position_rows(cfg, longest training sequence / number, max_k)."""
    abs_pos = choice(cfg.abs_pos)
    if abs_pos == "learned":
        return "learned", max_tokens - 1
    if abs_pos in ("abacus", "coupling"):
        return abs_pos, max_digits + k
    return None
