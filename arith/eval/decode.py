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

from arith.eval.constrain import LabelPermutation
from arith.model.decoder import DecoderCache
from arith.model.positions import watch_rows

# with the cache, the finished rows leave the batch once at least this fraction of the rows left has finished
DROP_AT = 0.25
# a group of left-padded prompts prefilled together: its shortest at least this fraction of its longest
PREFILL_SPREAD = 15 / 16


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
    limits: torch.Tensor | Sequence[int] | None = None,
    label_ids: Sequence[int] | None = None,
) -> torch.Tensor:
    """prompts (B, P), all of length P -> (B, max_new) greedy tokens; after a row's EOS its tokens are pad_id.
    pad (B,) long: prompts of different lengths, each left-padded with pad[b] PAD tokens to P (a model with
    `pads_left`; see `ArithModel.forward`): every row decodes as it would alone. limits (B,): the most tokens
    each row may write (<= max_new); a row stops there as at its EOS, its tokens after being pad_id.

    Decoding runs in eval mode (no dropout, fixed positions; k None -> model.eval_k, recurrences None ->
    the model's eval recurrences) and restores the previous mode afterwards. Stops once every row has
    emitted EOS (or reached its limit). ks: decode with the mean next-token probabilities over these offsets
    instead of one k (a single offset in ks is plain greedy at that offset). label_ids: sorting's label tokens;
    given, each answer is decoded as a permutation of its prompt's labels (`constrain.LabelPermutation`).

    With the cache (an `ArithModel`'s), each KV storage is sized once for P + max_new tokens, finished rows leave
    the batch and its caches once a `DROP_AT` fraction of the rows left has finished (the others decode as
    before, at the cost of the rows left), and on a CPU left-padded prompts are prefilled in groups of like
    lengths (`_Batch.prefill`).
    """
    if limits is not None:
        limits = torch.as_tensor(limits, dtype=torch.long, device=prompts.device)
    with _attention_kernels(prompts.device):
        args = (recurrences, k, use_cache, ks, pad, limits, label_ids)
        return _generate(model, prompts, max_new, eos_id, pad_id, *args)


def _attention_kernels(device: torch.device):
    """On CUDA, SDPA's kernels without cuDNN's: cuDNN attention plans each new shape on the host (about 0.9 ms a
    call on the H200), and decoding with a KV cache makes a new key length every token, so cuDNN left decoding
    launch-bound at 50-60 ms a token for the paper's 1x16 model, against 10-15 ms with flash / efficient
    attention (docs/BENCHMARKS.md, third H200 lease). Elsewhere nothing changes."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def _generate(model, prompts, max_new, eos_id, pad_id, recurrences, k, use_cache, ks, pad, limits, label_ids):
    was_training = model.training
    model.eval()
    # the position table's range check deferred to the one host read per token below (`positions.RowWatch`)
    rows = watch_rows(model)
    watch = rows.__enter__()
    try:
        offsets = [model.resolve_k(k)] if not ks else [model.resolve_k(x) for x in ks]
        recurrences = model.resolve_recurrences(recurrences)
        batch = _Batch(model, offsets, recurrences, prompts, max_new, pad_id, limits, pad, use_cache)

        def stop_here() -> int:
            """The one host read of a step: the rows finished (and, with Abacus rows, none past the table)."""
            if watch is None:
                return int(batch.finished.sum())
            done, over = torch.stack([batch.finished.sum().float(), watch.overflow(prompts.device)]).tolist()
            if over:
                watch.check(f"max digits + k while decoding, k={offsets if len(offsets) > 1 else offsets[0]}")
            return int(done)

        seq = prompts  # (B, P + t): the reference path re-reads it whole
        nxt_scores = batch.prefill(prompts)
        if label_ids is not None:
            batch.rule = LabelPermutation(prompts, label_ids, eos_id, nxt_scores.shape[-1])
        if max_new <= 0 and watch is not None:
            stop_here()
        for t in range(max_new):
            if batch.rule is not None:
                nxt_scores = batch.rule.mask(nxt_scores)
            nxt = batch.write(t, nxt_scores.argmax(dim=-1), eos_id)
            if t == max_new - 1:
                if watch is not None:  # the rows of the last scores are not read yet
                    stop_here()
                break
            finished = stop_here()
            if finished == len(nxt):
                break
            nxt = batch.drop(nxt, finished)
            if use_cache:
                nxt_scores = batch.scores(nxt[:, None], prompts.shape[1] + t)
            else:
                seq = torch.cat([seq, nxt[:, None]], dim=1)
                nxt_scores = batch.scores(seq, 0)
        return batch.out
    finally:
        rows.__exit__(None, None, None)
        model.train(was_training)


class _Batch:
    """The rows of a decode still decoding: `out` (B, max_new) holds every row's tokens, `live` the rows of `out`
    the batch still holds (None: all, in order), `finished` which of those wrote EOS or reached their limit;
    `caches` (one per offset; None without the cache), `pad`, `limits` and `rule` (a `LabelPermutation`) follow
    the rows held."""

    def __init__(self, model, offsets, recurrences, prompts, max_new, pad_id, limits, pad, use_cache):
        B, P = prompts.shape
        self.model, self.offsets, self.recurrences = model, offsets, recurrences
        self.out = torch.full((B, max_new), pad_id, dtype=prompts.dtype, device=prompts.device)
        self.finished = torch.zeros(B, dtype=torch.bool, device=prompts.device)
        self.live: torch.Tensor | None = None
        self.pad_id, self.limits, self.pad = pad_id, limits, pad
        self.rule: LabelPermutation | None = None
        self.caches = [model.new_cache() for _ in offsets] if use_cache else None
        # rows leave, and prefill in groups, only with an `ArithModel`'s caches (a stand-in's may not follow them)
        self.own = bool(self.caches) and all(isinstance(c, DecoderCache) for c in self.caches)
        self.reserve = P + max_new  # each KV storage sized once
        for cache in self.caches if self.own else []:
            cache.reserve = self.reserve

    def scores(self, ids: torch.Tensor, start: int, caches=None, pad=None) -> torch.Tensor:
        """(B, vocab) next-token scores of the rows held (or of `caches`' rows, left-padded with `pad`): the logits
        for one offset, the mean probabilities for several."""
        caches, pad = (self.caches, self.pad) if caches is None else (caches, pad)
        padded = {} if pad is None else {"pad": pad}  # a model may not take `pad` at all
        if caches is None:
            logits = [self.model(ids, self.recurrences, k=o, **padded)[:, -1] for o in self.offsets]
        else:
            logits = [
                self.model(ids, self.recurrences, k=o, cache=c, start=start, **padded)[:, -1]
                for o, c in zip(self.offsets, caches)
            ]
        if len(logits) == 1:
            return logits[0]
        return torch.stack([x.softmax(dim=-1) for x in logits]).mean(dim=0)

    def prefill(self, prompts: torch.Tensor) -> torch.Tensor:
        """The scores after the prompts, the caches filled. On a CPU, left-padded rows (with the cache) go in
        groups of like lengths (`prefill_groups`, one host read of `pad`), each without the PADs all its rows have,
        then into one cache (`DecoderCache.gather`): a batch of many prompt lengths computes few PADs (elsewhere,
        untimed, one forward pass computes them all)."""
        grouped = self.own and self.pad is not None and prompts.device.type == "cpu"
        groups = prefill_groups(self.pad.tolist(), prompts.shape[1]) if grouped else []
        if len(groups) < 2:
            return self.scores(prompts, 0)
        out, parts = None, [[] for _ in self.offsets]
        for members, cut in groups:
            rows = torch.as_tensor(members, device=prompts.device)
            caches = [self.model.new_cache() for _ in self.offsets]
            got = self.scores(prompts[rows, cut:], 0, caches, self.pad[rows] - cut)
            out = got.new_empty(len(prompts), got.shape[1]) if out is None else out
            out[rows] = got
            for part, cache in zip(parts, caches):
                part.append((rows, cache))
        self.caches = [DecoderCache.gather(part, prompts, self.pad, self.reserve) for part in parts]
        return out

    def write(self, t: int, nxt: torch.Tensor, eos_id: int) -> torch.Tensor:
        """The rows' token t (pad_id for the finished ones), written to `out`; marks those that finish."""
        nxt = torch.where(self.finished, torch.full_like(nxt, self.pad_id), nxt)
        if self.live is None:
            self.out[:, t] = nxt
        else:
            self.out[self.live, t] = nxt
        self.finished |= nxt == eos_id
        if self.rule is not None:
            self.rule.wrote(nxt)
        if self.limits is not None:
            self.finished |= self.limits <= t + 1
        return nxt

    def drop(self, nxt: torch.Tensor, finished: int) -> torch.Tensor:
        """Without the `finished` rows (a count, read on the host) when they are DROP_AT of the rows held (and the
        caches follow): the tokens of the rows kept."""
        held = len(nxt)
        if not self.own or finished < max(1, DROP_AT * held):
            return nxt
        keep = torch.argsort(self.finished.to(torch.uint8), stable=True)[: held - finished]  # no host read
        self.live = keep if self.live is None else self.live[keep]
        self.finished = self.finished[keep]
        if self.limits is not None:
            self.limits = self.limits[keep]
        if self.pad is not None:
            self.pad = self.pad[keep]
        if self.rule is not None:
            self.rule.select(keep)
        for cache in self.caches:
            cache.select(keep, self.pad)
        return nxt[keep]


def prefill_groups(pads: list[int], width: int) -> list[tuple[list[int], int]]:
    """The rows of a left-padded batch (pads: each row's left PADs, to `width` tokens) in groups to prefill apart:
    from the longest prompt down, a group takes the rows at least PREFILL_SPREAD of its longest (so at most
    about 1 - PREFILL_SPREAD of it is PADs). Each group: (its rows, the PADs all of them have)."""
    groups: list[tuple[list[int], int]] = []
    for row in sorted(range(len(pads)), key=lambda i: pads[i]):
        if not groups or width - pads[row] < PREFILL_SPREAD * (width - groups[-1][1]):
            groups.append(([], pads[row]))
        groups[-1][0].append(row)
    return groups
