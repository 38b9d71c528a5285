"""The model config's checks: every key a model reads, validated before anything is built (`validate`), each bad
value a one-line ConfigError naming the key; and the test-time vote's offsets (`check_vote_ks`), which evaluation and
self-improvement check against a run's position scheme too."""

from __future__ import annotations

import math

from arith.aux_loss import aux_spec
from arith.errors import ConfigError
from arith.model import numbers
from arith.model.blocks import BLOCKS
from arith.model.positions import ABS_POS, POS_TABLES, REL_POS, offset_schemes, scheme

INJECTIONS = ("none", "add")
INJECT_EVERY = ("recurrence", "layer")


def validate(cfg) -> None:
    """Raise ConfigError naming the key for any model setting that cannot work."""
    _check_sizes(cfg)
    _check_names(cfg)
    _check_flags(cfg)
    numbers.validate(cfg)  # the length and value features' keys
    _check_windows(cfg)


def _real(value) -> bool:
    """A finite int or float (a YAML true is a bool, not a number)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check_sizes(cfg) -> None:
    """The model's sizes, counts and numeric settings."""
    for key in ("width", "heads", "ffn", "layers", "recurrences", "max_pos"):
        value = getattr(cfg, key)
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"model.{key}={value!r} must be a positive integer")
    if cfg.ffn % 2:
        raise ConfigError(f"model.ffn={cfg.ffn} must be even: the GLU splits it into two halves")
    if cfg.width % cfg.heads:
        raise ConfigError(f"model.width={cfg.width} must be divisible by model.heads={cfg.heads}")
    for key in (
        "max_k",
        "eval_k",
        "fire_max_length",
        "row_window",
        "row_period",
        "number_window",
        "answer_window",
        "prompt_window",
        "item_digits",
    ):
        value = getattr(cfg, key, 0)
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"model.{key}={value!r} must be an integer >= 0")
    if cfg.eval_recurrences is not None and (
        not isinstance(cfg.eval_recurrences, int) or cfg.eval_recurrences <= 0
    ):
        raise ConfigError(
            f"model.eval_recurrences={cfg.eval_recurrences!r} must be a positive integer or null"
        )
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"model.dropout={cfg.dropout!r} must be in [0, 1)")
    scale = getattr(cfg, "attn_logit_scale", 1.0)
    if not _real(scale) or scale <= 0:
        raise ConfigError(f"model.attn_logit_scale={scale!r} must be a number > 0 (1 = plain attention)")


def _check_names(cfg) -> None:
    """The registry names, the vote's offsets and the digit rows' position scheme."""
    for key, valid in (
        ("abs_pos", ABS_POS),
        ("rel_pos", REL_POS),
        ("input_injection", INJECTIONS),
        ("inject_every", INJECT_EVERY),
        ("block", BLOCKS),
        ("pos_table", POS_TABLES),
    ):
        scheme(valid, cfg, key)  # raises for an unknown name
    check_vote_ks(getattr(cfg, "eval_vote_ks", None), cfg.abs_pos, "model.eval_vote_ks")
    period = getattr(cfg, "row_period", 0)
    if period and not ABS_POS[cfg.abs_pos].takes_offset:
        offsets = offset_schemes()
        raise ConfigError(
            f"model.row_period={period}: model.abs_pos={cfg.abs_pos} has no digit rows; use {offsets}"
        )
    aux_spec(getattr(cfg, "aux_loss", "none"))  # raises for an unknown name


def _check_flags(cfg) -> None:
    """The true/false keys, and the start of model.diff_bias's slopes."""
    for key in (
        "opener_embedding",
        "item_window",
        "hide_prompt_digits",
        "length_feature",
        "length_offset",
        "length_relative",
        "value_in_length",
        "value_vector",
        "qk_norm",
        "attn_log_n",
        "diff_bias",
    ):
        value = getattr(cfg, key, False)
        if not isinstance(value, bool):
            raise ConfigError(f"model.{key}={value!r} must be true or false")
    init = getattr(cfg, "diff_bias_init", 0.0)
    if not _real(init) or init < 0:
        raise ConfigError(f"model.diff_bias_init={init!r} must be a number >= 0 (0 = the slopes start at 0)")
    if init and not cfg.diff_bias:
        raise ConfigError(
            f"model.diff_bias_init={init} needs model.diff_bias=true: it starts that bias's slopes"
        )
    below = getattr(cfg, "diff_bias_init_below", None)
    if below is not None and (not _real(below) or below < 0):
        raise ConfigError(
            f"model.diff_bias_init_below={below!r} must be a number >= 0 or null (null = model.diff_bias_init)"
        )
    if below is not None and not cfg.diff_bias:
        raise ConfigError(
            f"model.diff_bias_init_below={below} needs model.diff_bias=true: it starts that bias's slope below"
        )


def _check_windows(cfg) -> None:
    """Keys that need another: item_digits an item window, a row period room for the row window."""
    if getattr(cfg, "item_digits", 0) and not getattr(cfg, "item_window", False):
        raise ConfigError(
            f"model.item_digits={cfg.item_digits} needs model.item_window=true: it limits the digits an item reads"
        )
    period, window = getattr(cfg, "row_period", 0), getattr(cfg, "row_window", 0)
    if period and period <= 2 * window:
        raise ConfigError(
            f"model.row_period={period} must exceed 2 x model.row_window={window}: two digits one window apart "
            "would read the same row"
        )


def check_vote_ks(vote_ks, abs_pos: str, key: str) -> list[int]:
    """The offsets of a test-time vote as a list (None -> []); raises ConfigError naming `key` when they are not
    distinct integers >= 0, or when the position scheme `abs_pos` takes no offset."""
    ks = [] if vote_ks is None else list(vote_ks)
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in ks) or len(set(ks)) < len(
        ks
    ):
        raise ConfigError(
            f"{key}={ks!r} must be distinct integers >= 0 (Abacus offsets), or null / [] for off"
        )
    if ks and not ABS_POS[abs_pos].takes_offset:
        offsets = offset_schemes()
        raise ConfigError(
            f"{key}={ks!r}: model.abs_pos={abs_pos} takes no offset; voting needs {offsets} (or {key}=null)"
        )
    return ks
