"""Test-time ensembling over Abacus offsets: the one decoding entry of the grid, `solve` and the Python API.

    from arith.eval.vote import decode
    out = decode(model, prompts, max_new, tok.eos_id, tok.pad_id, k=5, vote_ks=[0, 3, 5], vote_mode="answer")

The errors of one model at different evaluation offsets are largely independent (issue 12: a vote over 8
offsets read 98% at 16 digits where the best single offset read 92%), so:
    answer  each offset decodes greedily; per problem the most frequent whole answer (up to EOS) wins. A tie
            goes to the answer of offset `k` (the run's evaluation offset) when it is among the tied, else to
            the tied answer of the smallest offset.
    logits  one decode, greedy at every step on the mean next-token probabilities of the offsets (one KV cache
            per offset, `decode.generate(ks=...)`).
An empty vote set is plain greedy decoding at `k`; a vote over one offset is plain greedy at that offset.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from arith.eval.decode import generate
from arith.eval.settings import VOTE_MODES


def default_vote_ks(model) -> list[int]:
    """The model's own vote set (model.eval_vote_ks), [] when off."""
    return list(getattr(model.cfg, "eval_vote_ks", None) or [])


def majority(answers: Sequence[tuple], ks: Sequence[int], tie_k: int | None) -> int:
    """Index (into ks) of the winning answer of one problem; answers[i] is offset ks[i]'s answer."""
    counts = Counter(answers)
    top = max(counts.values())
    tied = {a for a, c in counts.items() if c == top}
    if tie_k in ks and answers[list(ks).index(tie_k)] in tied:
        return list(ks).index(tie_k)
    return min((k, i) for i, k in enumerate(ks) if answers[i] in tied)[1]


def whole_answer(row: list[int], eos_id: int) -> tuple[int, ...]:
    """A decoded row up to and including its EOS (the whole row when it wrote none)."""
    return tuple(row[: row.index(eos_id) + 1] if eos_id in row else row)


def decode(
    model,
    prompts: torch.Tensor,
    max_new: int,
    eos_id: int,
    pad_id: int,
    recurrences: int | None = None,
    k: int | None = None,
    vote_ks: Sequence[int] | None = None,
    vote_mode: str = "answer",
    use_cache: bool = True,
) -> torch.Tensor:
    """prompts (B, P) -> (B, max_new) tokens, like `generate`; vote_ks None -> the model's eval_vote_ks."""
    ks = default_vote_ks(model) if vote_ks is None else [int(x) for x in vote_ks]
    vote_mode = str(vote_mode)
    if vote_mode not in VOTE_MODES:
        raise ValueError(f"vote_mode={vote_mode!r} unknown; valid: {', '.join(VOTE_MODES)}")
    args = dict(recurrences=recurrences, use_cache=use_cache)
    if not ks:
        return generate(model, prompts, max_new, eos_id, pad_id, k=k, **args)
    if vote_mode == "logits":
        return generate(model, prompts, max_new, eos_id, pad_id, ks=ks, **args)
    outs = [generate(model, prompts, max_new, eos_id, pad_id, k=x, **args) for x in ks]  # each (B, max_new)
    if len(outs) == 1:
        return outs[0]
    tie_k = model.eval_k if k is None else int(k)
    rows = [o.tolist() for o in outs]
    win = [majority([whole_answer(r[b], eos_id) for r in rows], ks, tie_k) for b in range(prompts.shape[0])]
    stacked = torch.stack(outs)  # (len(ks), B, max_new)
    rows_idx = torch.arange(prompts.shape[0], device=stacked.device)
    return stacked[torch.as_tensor(win, device=stacked.device), rows_idx]
