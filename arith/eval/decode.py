"""Greedy decoding, with a KV cache (the default) or by full recompute per token (the reference path).

from arith.eval.decode import generate
answers = generate(model, prompts, max_new=25, eos_id=tok.eos_id, pad_id=tok.pad_id)  # (B, 25)

With `ks=[...]` (several Abacus offsets) each step is greedy on the mean of their next-token distributions,
one KV cache per offset: the `vote_mode=logits` ensemble of `arith/eval/vote.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from arith.model.positions import watch_rows


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
    ks: Sequence[int] | None = None,
    pad: torch.Tensor | None = None,
) -> torch.Tensor:
    """prompts (B, P), all of length P -> (B, max_new) greedy tokens; after a row's EOS its tokens are pad_id.
    pad (B,) long: prompts of different lengths, each left-padded with pad[b] PAD tokens to P (a model with
    `pads_left`; see `ArithModel.forward`): every row decodes as it would alone.

    Decoding runs in eval mode (no dropout, fixed positions; k None -> model.eval_k, recurrences None ->
    the model's eval recurrences) and restores the previous mode afterwards. Stops once every row has
    emitted EOS. ks: decode with the mean next-token probabilities over these offsets instead of one k (a single
    offset in ks is plain greedy at that offset).
    """
    with _attention_kernels(prompts.device):
        return _generate(model, prompts, max_new, eos_id, pad_id, recurrences, k, use_cache, ks, pad)


def _attention_kernels(device: torch.device):
    """On CUDA, SDPA's kernels without cuDNN's: cuDNN attention plans each new shape on the host (about 0.9 ms a
    call on the H200), and decoding with a KV cache makes a new key length every token, so cuDNN left decoding
    launch-bound at 50-60 ms a token for the paper's 1x16 model, against 10-15 ms with flash / efficient
    attention (docs/BENCHMARKS.md, third H200 lease). Elsewhere nothing changes."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def _generate(model, prompts, max_new, eos_id, pad_id, recurrences, k, use_cache, ks, pad) -> torch.Tensor:
    was_training = model.training
    model.eval()
    # the position table's range check deferred to the one host read per token below (`positions.RowWatch`)
    rows = watch_rows(model)
    watch = rows.__enter__()
    try:
        offsets = [model.resolve_k(k)] if not ks else [model.resolve_k(x) for x in ks]
        recurrences = model.resolve_recurrences(recurrences)
        B, P = prompts.shape
        out = torch.full((B, max_new), pad_id, dtype=prompts.dtype, device=prompts.device)
        finished = torch.zeros(B, dtype=torch.bool, device=prompts.device)
        caches = [model.new_cache() for _ in offsets] if use_cache else None
        padded = {} if pad is None else {"pad": pad}  # only then: a model may not take `pad` at all

        def scores(ids: torch.Tensor, start: int) -> torch.Tensor:
            """(B, vocab) next-token scores: the logits for one offset, the mean probabilities for several."""
            if use_cache:
                logits = [
                    model(ids, recurrences, k=o, cache=c, start=start, **padded)[:, -1]
                    for o, c in zip(offsets, caches)
                ]
            else:
                logits = [model(ids, recurrences, k=o, **padded)[:, -1] for o in offsets]
            if len(logits) == 1:
                return logits[0]
            return torch.stack([x.softmax(dim=-1) for x in logits]).mean(dim=0)

        def stop_here() -> bool:
            """The one host read of a step: every row finished? (and, with Abacus rows, none past the table)"""
            if watch is None:
                return bool(finished.all())
            done, over = torch.stack([finished.all().float(), watch.overflow(prompts.device)]).tolist()
            if over:
                watch.check(f"max digits + k while decoding, k={offsets if len(offsets) > 1 else offsets[0]}")
            return bool(done)

        seq = prompts  # (B, P + t): the reference path re-reads it whole
        nxt_scores = scores(prompts, 0)
        if max_new <= 0 and watch is not None:
            stop_here()
        for t in range(max_new):
            nxt = nxt_scores.argmax(dim=-1)  # (B,)
            nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)
            out[:, t] = nxt
            finished |= nxt == eos_id
            if t == max_new - 1:
                if watch is not None:  # the rows of the last scores are not read yet
                    stop_here()
                break
            if stop_here():
                break
            if use_cache:
                nxt_scores = scores(nxt[:, None], P + t)
            else:
                seq = torch.cat([seq, nxt[:, None]], dim=1)
                nxt_scores = scores(seq, 0)
        return out
    finally:
        rows.__exit__(None, None, None)
        model.train(was_training)
