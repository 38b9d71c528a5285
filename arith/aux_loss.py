"""Auxiliary losses (model.aux_loss): a linear probe on the model's last hidden state (`ArithModel.aux_probe`)
regresses a per-token target that the task's rows define, weighted by model.aux_weight beside the LM loss.

One registry, AUX_LOSSES, name -> AuxSpec: the tasks and formats whose rows the target reads, and the target
itself, computed on the device from the token ids (no host sync, nothing added to the data pipeline).

running_sum (Bai et al. 2025, arXiv 2510.00184): in the direct multiplication format ``a x b = c`` (digits
reversed), product digit k is c_k = c^_k mod 10 with the running sum c^_k = s_k + r_{k-1}, s_k = sum_{i+j=k}
a_i b_j and the carry r_k = c^_k // 10. Small models trained on the answer alone stall on the middle digits;
regressing c^_k at the position that writes c_k gives them the long-range sum they miss. The target is
c^_k / RUNNING_SUM_SCALE, so that the squared error starts near the cross-entropy's size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from arith import dist
from arith.errors import ConfigError

RUNNING_SUM_SCALE = 100.0


@dataclass(frozen=True)
class AuxSpec:
    # (task, format) pairs whose rows the target can read
    supports: tuple[tuple[str, str], ...]
    # (ids (B, T), digit values (B, T) with -1 at non-digits, tokenizer) -> (target, valid), each (B, T - 1):
    # the value the probe should read at the position whose logits predict ids[:, t + 1]
    targets: Callable


_LUTS: dict = {}


def digit_values(ids: torch.Tensor, tok) -> torch.Tensor:
    """(B, T) ids -> (B, T) long: the digit each token writes, -1 at non-digits. The lookup table is made once per
    tokenizer and device (no host-to-device copy per step)."""
    key = (tuple(tok.digit_ids), tok.vocab_size, ids.device)
    lut = _LUTS.get(key)
    if lut is None:
        lut = torch.full((tok.vocab_size,), -1, dtype=torch.long)
        lut[torch.as_tensor(list(tok.digit_ids))] = torch.arange(10)
        lut = _LUTS[key] = lut.to(ids.device)
    return lut[ids]


def running_sum_targets(ids: torch.Tensor, digits: torch.Tensor, tok) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``a x b = c EOS PAD..`` (reversed digits) -> (c^_k / RUNNING_SUM_SCALE at the position predicting c_k,
    True there), both (B, T - 1). Vectorized over the batch; the carry runs over the row's T positions."""
    B, T = ids.shape
    is_op, is_eq = ids == tok.op_ids["x"], ids == tok.eq_id
    seg = is_op.long().cumsum(1) + is_eq.long().cumsum(1)  # 0: a, 1: b, 2: the answer and after
    isd = digits >= 0
    a = torch.where((seg == 0) & isd, digits, 0)  # a_i at column i: a opens the row
    op_pos = is_op.long().argmax(1)
    eq_pos = is_eq.long().argmax(1)
    cols = torch.arange(T, device=ids.device)
    b_only = torch.where((seg == 1) & isd, digits, 0)
    b = b_only.gather(1, (op_pos[:, None] + 1 + cols[None]).clamp(max=T - 1))  # b_j at column j, 0 past b
    b = torch.where(op_pos[:, None] + 1 + cols[None] < T, b, 0)
    products = (a[:, :, None] * b[:, None, :]).reshape(B, T * T)  # a_i b_j
    diag = (cols[:, None] + cols[None, :]).reshape(1, T * T).expand(B, -1)  # i + j
    s = torch.zeros(B, 2 * T, dtype=torch.long, device=ids.device).scatter_add_(1, diag, products)
    running = torch.empty(B, T, dtype=torch.long, device=ids.device)
    carry = torch.zeros(B, dtype=torch.long, device=ids.device)
    for k in range(T):
        running[:, k] = s[:, k] + carry
        carry = running[:, k] // 10
    # logits t predict ids[t + 1]; product digit k sits at eq_pos + 1 + k, so t = eq_pos + k
    k_at = (cols[None, : T - 1] - eq_pos[:, None]).clamp(0, T - 1)
    target = running.gather(1, k_at).to(torch.float32) / RUNNING_SUM_SCALE
    valid = ((seg == 2) & isd)[:, 1:]
    return target, valid


AUX_LOSSES: dict[str, AuxSpec] = {
    "running_sum": AuxSpec(supports=(("multiplication", "direct"),), targets=running_sum_targets),
}


def aux_spec(name) -> AuxSpec | None:
    """The spec of model.aux_loss=`name` (None for none); ConfigError naming the valid ones otherwise."""
    name = str(name)
    if name == "none":
        return None
    if name not in AUX_LOSSES:
        raise ConfigError(f"model.aux_loss={name!r} is unknown; valid: none, {', '.join(AUX_LOSSES)}")
    return AUX_LOSSES[name]


def validate_aux(model_cfg, data_cfg) -> None:
    """One-line errors for an auxiliary loss on a task or format whose rows it cannot read, or a bad weight."""
    spec = aux_spec(getattr(model_cfg, "aux_loss", "none"))
    if spec is None:
        return
    weight = model_cfg.aux_weight
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < float("inf"):
        raise ConfigError(f"model.aux_weight={weight!r} must be a number > 0")
    here = (str(data_cfg.task), str(data_cfg.format))
    if here not in spec.supports:
        valid = ", ".join(f"data={t} data.format={f}" for t, f in spec.supports)
        raise ConfigError(
            f"model.aux_loss={model_cfg.aux_loss} reads rows of {valid}, not data={here[0]} "
            f"data.format={here[1]}"
        )


def aux_loss(pred: torch.Tensor, ids: torch.Tensor, tok, name) -> torch.Tensor:
    """Mean squared error of the probe's (B, T - 1) predictions against the target of `name`, normalised over
    the global batch like the LM loss (DDP's averaging then gives the single-process gradient)."""
    spec = aux_spec(name)
    target, valid = spec.targets(ids, digit_values(ids, tok), tok)
    return dist.global_mean((pred.float() - target).square(), valid)
