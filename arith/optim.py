"""Optimizers (a registry) and the wall-clock-aware trapezoid learning-rate schedule."""

from __future__ import annotations

import torch
from torch import nn

from arith.errors import ConfigError
from arith.schema import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: no weight decay on norms, biases or other 1-d parameters (SPEC: AdamW)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _adamw(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None
    )


OPTIMIZERS = {"adamw": _adamw}


def build_optimizer(model: nn.Module, cfg: TrainConfig, name: str = "adamw") -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer={name!r} is unknown; valid: {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](model, cfg)


def trapezoid(progress: float, warmup: float, cooldown: float) -> float:
    """LR factor for a run `progress` in [0, 1] done: linear warm-up, constant, linear cool-down to 0."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return progress / warmup
    if cooldown > 0 and progress > 1.0 - cooldown:
        return max(0.0, (1.0 - progress) / cooldown)
    return 1.0


def run_progress(step: int, elapsed_s: float, steps: int | None, budget_minutes: float | None) -> float:
    """Fraction of the run done: whichever of the step count and the wall-clock budget ends first."""
    fractions = []
    if steps:
        fractions.append(step / steps)
    if budget_minutes:
        fractions.append(elapsed_s / (60.0 * budget_minutes))
    return max(fractions) if fractions else 0.0
