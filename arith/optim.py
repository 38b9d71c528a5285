"""Optimizers (a registry, `train.optimizer`) and the wall-clock-aware trapezoid learning-rate schedule.

    adamw  AdamW (Loshchilov & Hutter 2019), the paper's
    lion   Lion (Chen et al. 2023, arXiv 2302.06675): the sign of an interpolated momentum
    tiger  Tiger (Su 2023, github.com/bojone/tiger): the sign of one momentum (Lion with beta1 = beta2)

Every group may carry an `lr_scale` that the training loop multiplies into the scheduled lr; the token and
position tables get `train.embedding_lr_scale` (Su's remedy for sign optimizers blowing up rare rows).
"""

from __future__ import annotations

import torch
from torch import nn

from arith.errors import ConfigError
from arith.schema import TrainConfig


def param_groups(model: nn.Module, weight_decay: float, embedding_lr_scale: float = 1.0) -> list[dict]:
    """Decay matrices only: no weight decay on norms, biases or other 1-d parameters (SPEC: AdamW). With
    embedding_lr_scale != 1, the embedding tables (token, position; the head too when tied) form a third group
    whose lr is scaled by it."""
    tables = set()
    if embedding_lr_scale != 1.0:
        tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, embeddings = [], [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in tables:
            embeddings.append(p)
        else:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if embeddings:
        groups.append({"params": embeddings, "weight_decay": weight_decay, "lr_scale": embedding_lr_scale})
    return groups


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, arXiv 2302.06675), with decoupled weight decay:
        update = sign(beta1 m + (1 - beta1) g);  p -= lr (update + wd p);  m = beta2 m + (1 - beta2) g
    Every coordinate moves by exactly lr, so the paper pairs it with an lr 3-10x smaller and a weight decay
    3-10x larger than AdamW's (betas (0.9, 0.99) there)."""

    def __init__(self, params, lr: float = 1e-4, betas=(0.9, 0.99), weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, (beta1, beta2) = group["lr"], group["weight_decay"], group["betas"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            # the rule on all of a group's tensors at once (torch's multi-tensor kernels on CUDA: a few launches
            # a group, not a few a tensor), the same arithmetic as one tensor at a time
            grads = [p.grad for p in params]
            for p in params:
                if "exp_avg" not in self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p)
            moms = [self.state[p]["exp_avg"] for p in params]
            update = torch._foreach_mul(moms, beta1)
            torch._foreach_add_(update, grads, alpha=1 - beta1)
            torch._foreach_sign_(update)
            if wd:
                torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_add_(params, update, alpha=-lr)
            torch._foreach_mul_(moms, beta2)
            torch._foreach_add_(moms, grads, alpha=1 - beta2)
        return loss


class Tiger(Lion):
    """Tiger (Su 2023, "Tight-fisted Optimizer"): m = beta m + (1 - beta) g;  p -= lr (sign(m) + wd p), i.e.
    Lion with beta1 = beta2 = beta: one momentum, no second buffer (Su's reference uses beta = 0.965). Su's
    per-parameter lr rescaling (LAMB-like) and his NaN guard are left out: this is the basic rule."""

    def __init__(self, params, lr: float = 1e-4, beta: float = 0.965, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, betas=(beta, beta), weight_decay=weight_decay)


def _adamw(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    fused = next(model.parameters()).is_cuda
    groups = param_groups(model, cfg.weight_decay, cfg.embedding_lr_scale)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None)


def _lion(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.embedding_lr_scale)
    return Lion(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def _tiger(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.embedding_lr_scale)
    return Tiger(groups, lr=cfg.lr, beta=cfg.betas[1])


OPTIMIZERS = {"adamw": _adamw, "lion": _lion, "tiger": _tiger}


def build_optimizer(model: nn.Module, cfg: TrainConfig, name: str | None = None) -> torch.optim.Optimizer:
    """The optimizer named by `name`, else by `cfg.optimizer`."""
    name = cfg.optimizer if name is None else name
    if name not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer={name!r} is unknown; valid: {', '.join(OPTIMIZERS)}")
    if cfg.embedding_lr_scale < 0:
        raise ConfigError(f"train.embedding_lr_scale={cfg.embedding_lr_scale} must be >= 0")
    return OPTIMIZERS[name](model, cfg)


# how an optimizer runs, not what it computes: chosen by this process for its device (fused AdamW on CUDA), never
# taken from a checkpoint written elsewhere
_IMPL_FLAGS = ("fused", "foreach", "capturable")


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict) -> None:
    """`opt.load_state_dict(state)`, keeping `opt`'s own implementation flags (fused, foreach, capturable).

    `load_state_dict` restores the saved param_groups, flags included, so a run started on the CPU (foreach) and
    resumed on a GPU would stay on foreach instead of fused AdamW; and the flags decide where the step counters
    live (on the parameter's device when fused), so they are set before loading, not after."""
    groups = [
        dict(g, **{k: mine[k] for k in _IMPL_FLAGS if k in mine})
        for g, mine in zip(state["param_groups"], opt.param_groups)
    ]
    opt.load_state_dict({**state, "param_groups": groups})


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
