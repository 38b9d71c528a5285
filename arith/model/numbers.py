"""Per-token features read off the numbers of a row, for `ArithModel.embed`: the opener of each digit's run
(model.opener_embedding), and at each non-digit of the prompt the length (model.length_feature) and the top digits
(model.value_feature) of the number just before it, with the keys' checks."""

from __future__ import annotations

import torch

from arith.errors import ConfigError
from arith.model.positions import ABS_POS, abacus_positions, is_digit, offset_schemes, scheme

MAX_VALUE_DIGITS = 7  # model.value_feature: float32 resolves about 7 decimal digits

# model.length_code: what the length feature multiplies its learned vector by, from a (B, T, 1) float length L
LENGTH_CODES = {
    "log": torch.log1p,  # log(1 + L)
    "linear": lambda length: length / 10,  # L / 10: the same step between any two neighbouring lengths
}


def validate(cfg) -> None:
    """Raise ConfigError for a value feature or length offset that cannot work (the keys' types:
    `config_checks.validate`)."""
    value = getattr(cfg, "value_feature", 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VALUE_DIGITS:
        raise ConfigError(
            f"model.value_feature={value!r} must be an int 0-{MAX_VALUE_DIGITS}: the top digits a label reads "
            "(0 = off; float32 holds about 7)"
        )
    if getattr(cfg, "value_in_length", False) and not (value and getattr(cfg, "length_feature", False)):
        raise ConfigError(
            "model.value_in_length=true adds the top digits to the length feature's L: set model.length_feature=true "
            "and model.value_feature=n (n > 0)"
        )
    if getattr(cfg, "value_vector", False) and not getattr(cfg, "value_in_length", False):
        raise ConfigError(
            "model.value_vector=true keeps the top digits' own vector beside model.value_in_length=true; without "
            "it they always have one: set model.value_in_length=true or leave model.value_vector=false"
        )
    scheme(LENGTH_CODES, cfg, "length_code")  # raises for an unknown name
    code = str(cfg.length_code)
    if code != "log" and not getattr(cfg, "length_feature", False):
        raise ConfigError(f"model.length_code={code} codes the length feature: set model.length_feature=true")
    if getattr(cfg, "length_relative", False):
        _check_relative(cfg)
    if getattr(cfg, "length_offset", False):
        if not getattr(cfg, "length_feature", False):
            raise ConfigError(
                "model.length_offset=true shifts the length feature: set model.length_feature=true"
            )
        if not ABS_POS[cfg.abs_pos].takes_offset:
            offsets = offset_schemes()
            raise ConfigError(
                f"model.length_offset=true: model.abs_pos={cfg.abs_pos} takes no offset; use {offsets}"
            )


def _check_relative(cfg) -> None:
    """model.length_relative: a length read against the row's longest, so the keys that change L refuse it."""
    if not getattr(cfg, "length_feature", False):
        raise ConfigError(
            "model.length_relative=true reads the length feature: set model.length_feature=true"
        )
    for key in ("length_offset", "value_in_length"):
        if getattr(cfg, key, False):
            raise ConfigError(
                f"model.length_relative=true and model.{key}=true both change the length feature's L: set one"
            )


def relative_lengths(length: torch.Tensor) -> torch.Tensor:
    """(B, T) lengths (`number_features`, 0 where none is read) -> 1 + L_max - L where one is read, L_max the
    longest number of the row (model.length_relative); 0 elsewhere."""
    longest = length.amax(dim=1, keepdim=True)  # (B, 1)
    return torch.where(length > 0, longest + 1 - length, length)


def openers(tokens: torch.Tensor, digit_lut: torch.Tensor, none: int, pad=None) -> torch.Tensor:
    """(B, T) ids -> (B, T) the opener row of `ArithModel.opener_emb` for every token: a digit's is the id of the
    last non-digit before it (`none`, the vocabulary size, for a run at the start of the row); a non-digit's is its
    own id. pad (B,): the left PADs of each row, which open nothing (the row starts after them)."""
    digit = is_digit(digit_lut, tokens)
    at = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
    skip = digit if pad is None else digit | (at < pad[:, None])
    last = torch.where(skip, torch.full_like(at, -1), at).cummax(dim=1).values  # last non-digit at or before
    opener = tokens.gather(1, last.clamp(min=0))
    return torch.where(last < 0, torch.full_like(opener, none), opener)


def number_features(
    tokens: torch.Tensor,
    digit_lut: torch.Tensor,
    eq_id: int,
    digit_value: torch.Tensor | None = None,
    n: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids -> (length, top), both (B, T), from one scan of the row's digit runs. At a non-digit before the
    first '=': length (long) the digit count of the number just before it (the last run of digits at or before
    it; model.length_feature), top (float32) that number's top n digits as the fraction 0.d1 d2 ... dn (d1 its
    most significant digit, the last one written: operands are reversed; digits past its length count 0), so 305
    reads 0.305 and 7 reads 0.7 (model.value_feature; digit_value: each token's digit value). Both are 0 at
    digits, from '=' on and where no number came before (left PADs)."""
    digit = is_digit(digit_lut, tokens)
    index = abacus_positions(digit)  # a run's last digit holds the run's length
    at = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
    last = torch.where(digit, at, torch.full_like(at, -1)).cummax(dim=1).values  # last digit at or before
    length = torch.where(last >= 0, index.gather(1, last.clamp(min=0)), torch.zeros_like(index))
    prompt = (tokens == eq_id).long().cumsum(dim=1) == 0
    read = prompt & ~digit
    top = torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
    if n:
        values = digit_value[tokens.clamp(max=digit_value.numel() - 1)]  # (B, T) float, 0 at non-digits
        for i in range(n):  # the i-th digit from the top sits i tokens before the run's last digit
            d = values.gather(1, (last - i).clamp(min=0))
            top = top + torch.where(length > i, d, torch.zeros_like(d)) * 10.0 ** -(i + 1)
    return torch.where(read, length, torch.zeros_like(length)), torch.where(read, top, torch.zeros_like(top))


def number_lengths(tokens: torch.Tensor, digit_lut: torch.Tensor, eq_id: int) -> torch.Tensor:
    """(B, T) long: `number_features`' lengths alone."""
    return number_features(tokens, digit_lut, eq_id)[0]


def number_tops(
    tokens: torch.Tensor, digit_lut: torch.Tensor, digit_value: torch.Tensor, eq_id: int, n: int
) -> torch.Tensor:
    """(B, T) float32: `number_features`' top n digits alone."""
    return number_features(tokens, digit_lut, eq_id, digit_value, n)[1]
