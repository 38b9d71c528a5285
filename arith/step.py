"""What a training step computes: the loss (next-token cross-entropy over the global batch, the progressive
loss of looped models) and the layers it runs compiled. Used by `arith.train` and by the self-improvement
rounds."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from arith import dist
from arith.aux_loss import aux_loss
from arith.data.tokenizer import ArithTokenizer
from arith.schema import PretrainConfig, Reduction


# ---------------------------------------------------------------------------------------------- loss
def lm_loss(
    logits: torch.Tensor,
    ids: torch.Tensor,
    tok: ArithTokenizer,
    answer_only: bool,
    reduction: Reduction,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next-token cross-entropy over ids[:, 1:], normalised over the *global* batch.

    Each rank divides its summed loss by the global token (or sample) count times the world size, so that
    DDP's gradient averaging yields exactly the single-process gradient of the same global batch.
    rows (B, A) long: the logits are those of these input positions of each row (the model's `trim`,
    `answer_positions`: every target the answer-only loss reads, then repeats of the row's last one, masked), so
    the loss is the untrimmed one.
    """
    targets = ids[:, 1:]  # (B, T-1)
    valid = targets != tok.pad_id
    # SPEC: mask every target up to and including '=' (the last one: sorting's successor hint)
    if answer_only:
        seen = torch.cumsum(ids[:, :-1] == tok.eq_id, dim=1)
        valid &= (seen > 0) & (seen == seen[:, -1:])
    if rows is not None:
        fresh = torch.ones_like(rows, dtype=torch.bool)
        fresh[:, 1:] = rows[:, 1:] != rows[:, :-1]  # a position repeated at the row's end counts once
        targets, valid = targets.gather(1, rows), valid.gather(1, rows) & fresh
    token_loss = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (B, T-1)
    if reduction == Reduction.mean:
        return dist.global_mean(token_loss, valid)
    token_loss = token_loss * valid
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    per_row = valid.sum(dim=1)
    row_mean = token_loss.sum(dim=1) / per_row.clamp_min(1)
    rows = dist.all_reduce_sum((per_row > 0).sum().to(token_loss.dtype)).clamp_min(1)
    return row_mean.sum() * world / rows


def progressive_depths(recurrences: int, max_backprop: int | None, throttle: bool) -> tuple[int, int]:
    """Progressive loss (McLeish et al. 2024 / Bansal et al. 2022): n recurrences without gradient, then k with.

    n ~ U{0..R-1}; k ~ U{1..min(R-n, max_backprop)} when throttled (depth never exceeds R), U{1..max_backprop}
    otherwise. Drawn from torch's global RNG so they are part of the checkpointed RNG state.
    """
    mb = max_backprop or max(1, recurrences // 2)
    n = int(torch.randint(0, recurrences, ()).item())
    k_max = min(recurrences - n, mb) if throttle else mb
    k = int(torch.randint(1, k_max + 1, ()).item())
    return n, k


def answer_positions(ids: torch.Tensor, tok: ArithTokenizer) -> torch.Tensor | None:
    """The input positions whose logits the answer-only loss reads, row by row: (B, A) long, row b's last '=' of
    ids[:, :-1] and the A - 1 positions after it (A: the batch's longest answer; a position past ids[:, :-1]'s end
    repeats its last one), for the model's `trim`. None when that saves nothing. ids: the batch on the host,
    before its copy to the device (numpy, no device sync); a row holds no PAD before its end."""
    x = ids.numpy()
    n = x.shape[1] - 1  # input positions 0..n-1
    eq = x[:, :-1] == tok.eq_id
    has = eq.any(axis=1)
    if n < 2 or not has.any():
        return None
    last = n - 1 - eq[:, ::-1].argmax(axis=1)  # each row's last '=' (rows without one: read nothing)
    need = (x != tok.pad_id).sum(axis=1) - 1 - last  # targets last+1 .. the row's end
    width = int(need[has].max())
    if not 0 < width < n:  # no target at all, or every position
        return None
    return torch.from_numpy(np.minimum(last[:, None] + np.arange(width), n - 1))


def reads_answer_only(cfg: PretrainConfig) -> bool:
    """Whether the step's loss reads the answer's logits alone (the answer-only LM loss, no probe on every
    position): what train.trim_prompt needs."""
    return bool(cfg.train.mask_before_equals) and str(getattr(cfg.model, "aux_loss", "none")) == "none"


def trims(cfg: PretrainConfig, device: torch.device) -> bool:
    """Whether the step computes the last block application's outputs from the answer on only (train.trim_prompt;
    null: on a CPU without compiled layers, where the step is bound by its FLOPs, when the loss reads the
    answer's logits alone)."""
    tcfg = cfg.train
    if tcfg.trim_prompt is not None:
        return bool(tcfg.trim_prompt)
    return device.type == "cpu" and not tcfg.compile and reads_answer_only(cfg)


def forward_loss(
    model, raw_model, ids, cfg: PretrainConfig, tok, trim: torch.Tensor | None = None
) -> torch.Tensor:
    """The step's loss: the LM loss at full depth (and the progressive loss's random-depth pass), plus
    model.aux_weight x the auxiliary loss (model.aux_loss, arith/aux_loss.py) on every pass.
    trim (B, A) long, on the host: the passes' last block applications compute these positions only
    (`answer_positions`; the same loss)."""
    m = cfg.model
    x = ids[:, :-1]
    k = raw_model.training_offset(x.shape[0])  # one position offset per step, shared by every pass
    aux = str(getattr(m, "aux_loss", "none"))
    extra = {} if aux == "none" else {"return_aux": True}  # off: the call is today's (wrappers need not know)
    if trim is not None:
        trim = extra["trim"] = trim.to(ids.device, non_blocking=True)

    def loss_at(depth: int, no_grad: int = 0) -> torch.Tensor:
        out = model(x, recurrences=depth, no_grad_recurrences=no_grad, k=k, **extra)
        logits, probe = out if aux != "none" else (out, None)
        loss = lm_loss(logits, ids, tok, cfg.train.mask_before_equals, cfg.train.loss_reduction, trim)
        if probe is not None:
            loss = loss + m.aux_weight * aux_loss(probe, ids, tok, aux)
        return loss

    detach = int(getattr(m, "detach_recurrences", 0))  # model.detach_recurrences: truncated backprop
    if m.recurrences == 1 or m.alpha == 0:
        return loss_at(m.recurrences, no_grad=detach)
    n, kk = progressive_depths(m.recurrences, m.max_backprop, m.throttle)
    loss = m.alpha * loss_at(n + kk, no_grad=n)
    if m.alpha < 1:
        loss = loss + (1 - m.alpha) * loss_at(m.recurrences, no_grad=detach)
    return loss


# ---------------------------------------------------------------------------------------------- compiled layers
def compile_blocks(model) -> None:
    """torch.compile every layer of the recurrent block in place (parameter names unchanged).

    Not the whole model: its Python loop unrolls per (depth, no-grad depth), so the progressive loss's
    random depths would recompile every step and hit dynamo's recompile limit. A layer compiles to a few
    graphs (with / without grad, then dynamic sequence length) shared by every layer and recurrence, and DDP
    wraps the model as usual, with no extra flag.
    """
    for layer in model.layers:
        layer.compile()


@contextmanager
def eager_layers(model):
    """The layers of `model` run uncompiled inside the block (`compile_blocks` undone for a while): selection's
    KV-cached decoding (eval mode, no grad, one-token steps, a growing cache) would otherwise compile graph after
    graph inside the training budget and hit dynamo's recompile limit. Scores are then those of the eager model
    that `arith.load` evaluates, as with train.ema (whose copy is made before compiling)."""
    compiled = [(layer, layer._compiled_call_impl) for layer in model.layers]  # set by nn.Module.compile
    for layer, _ in compiled:
        layer._compiled_call_impl = None
    try:
        yield model
    finally:
        for layer, impl in compiled:
            layer._compiled_call_impl = impl
