"""Greedy decoding, with a KV cache (the default) or by full recompute per token (the reference path).

from arith.eval.decode import generate
answers = generate(model, prompts, max_new=25, eos_id=tok.eos_id, pad_id=tok.pad_id)  # (B, 25)
"""

from __future__ import annotations

import torch


@torch.no_grad()
def generate(
    model,
    prompts: torch.Tensor,
    max_new: int,
    eos_id: int,
    pad_id: int,
    recurrences: int | None = None,
    k: int | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """prompts (B, P), all of length P -> (B, max_new) greedy tokens; after a row's EOS its tokens are pad_id.

    Decoding runs in eval mode (no dropout, fixed positions; k None -> model.eval_k, recurrences None ->
    the model's eval recurrences) and restores the previous mode afterwards. Stops once every row has
    emitted EOS.
    """
    was_training = model.training
    model.eval()
    try:
        k = model.resolve_k(k)
        recurrences = model.resolve_recurrences(recurrences)
        B, P = prompts.shape
        out = torch.full((B, max_new), pad_id, dtype=prompts.dtype, device=prompts.device)
        finished = torch.zeros(B, dtype=torch.bool, device=prompts.device)
        cache = model.new_cache() if use_cache else None
        seq = prompts  # (B, P + t): the reference path re-reads it whole
        logits = model(prompts, recurrences, k=k, cache=cache) if use_cache else None
        for t in range(max_new):
            if not use_cache:
                logits = model(seq, recurrences, k=k)
            nxt = logits[:, -1].argmax(dim=-1)  # (B,)
            nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)
            out[:, t] = nxt
            finished |= nxt == eos_id
            if t == max_new - 1 or bool(finished.all()):
                break
            if use_cache:
                logits = model(nxt[:, None], recurrences, k=k, cache=cache, start=P + t)
            else:
                seq = torch.cat([seq, nxt[:, None]], dim=1)
        return out
    finally:
        model.train(was_training)
