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
Sorting can also vote over orders of its items (`order_votes`, arith/eval/order_vote.py): each order is then
decoded with the offsets' vote.
The answer vote stops decoding a problem once its winner is settled (`decided`): same answers, fewer decodes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from arith.eval import order_vote
from arith.eval.decode import generate
from arith.eval.settings import VOTE_MODES


def default_vote_ks(model) -> list[int]:
    """The model's own vote set (model.eval_vote_ks), [] when off."""
    return list(getattr(model.cfg, "eval_vote_ks", None) or [])


def default_order_view_items(model) -> int:
    """The most items one order of the model's order vote shows (model.eval_order_view_items), 0 = all."""
    return int(getattr(model.cfg, "eval_order_view_items", None) or 0)


def default_order_votes(model) -> int:
    """The model's own number of item orders that vote (model.eval_order_votes), 0 when off."""
    return int(getattr(model.cfg, "eval_order_votes", None) or 0)


def default_label_permutation(model) -> bool:
    """Whether the model's sorting answers are decoded as permutations of the labels (model.eval_label_permutation)."""
    return bool(getattr(model.cfg, "eval_label_permutation", False))


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
    limits: Sequence[int] | None = None,
    pad: torch.Tensor | None = None,
    order_votes: int | None = None,
    items: order_vote.ItemTokens | None = None,
    label_permutation: bool | None = None,
    order_view_items: int | None = None,
) -> torch.Tensor:
    """prompts (B, P) -> (B, max_new) tokens, like `generate`; vote_ks None -> the model's eval_vote_ks.
    order_votes: sorting's vote over that many orders of each prompt's items (None -> the model's
    eval_order_votes; 0 or 1: off), which needs `items` (`order_vote.ItemTokens.of(tok)`). label_permutation:
    each answer decoded as a permutation of its prompt's labels (`constrain.LabelPermutation`; None -> the model's
    eval_label_permutation), which needs `items` too. order_view_items: the most items one order of the vote
    shows (sub-arrays of the prompt's items, `order_vote.orders`; None -> the model's eval_order_view_items; 0 =
    all items).
    limits: per row, the most tokens it may write (<= max_new; `solve_many`'s batches of problems of different
    answer lengths): its tokens past that are pad_id, and the vote sees the row as if it had been decoded alone
    with max_new = its limit. pad (B,): each prompt's left PADs (`generate`'s; prompts of different lengths)."""
    views = default_order_votes(model) if order_votes is None else int(order_votes)
    perm = default_label_permutation(model) if label_permutation is None else bool(label_permutation)
    if (views > 1 or perm) and items is None:
        what = f"order_votes={views}" if views > 1 else "label_permutation=True"
        raise ValueError(f"{what} needs items=order_vote.ItemTokens.of(tok)")
    if views > 1:
        kw = dict(recurrences=recurrences, k=k, vote_ks=vote_ks, vote_mode=vote_mode, use_cache=use_cache)
        kw.update(items=items, label_permutation=perm)

        # those rows of the batch with their limits, and the left PADs a sub-array view adds
        def rows(ids: torch.Tensor, idx: list[int], added: list[int]) -> torch.Tensor:
            sub = dict(kw, limits=None if limits is None else [limits[i] for i in idx])
            sub["pad"] = None if pad is None else pad[torch.as_tensor(idx, device=pad.device)]
            if any(added):  # sub-array views: their own left PADs, those all rows share cut
                own = torch.as_tensor(added, device=ids.device) + (0 if sub["pad"] is None else sub["pad"])
                cut = int(own.min())
                ids, sub["pad"] = ids[:, cut:], own - cut
            return decode(model, ids, max_new, eos_id, pad_id, order_votes=0, **sub)

        size = default_order_view_items(model) if order_view_items is None else int(order_view_items)
        return order_vote.decode(rows, prompts, max_new, views, items, size)
    ks = default_vote_ks(model) if vote_ks is None else [int(x) for x in vote_ks]
    vote_mode = str(vote_mode)
    if vote_mode not in VOTE_MODES:
        raise ValueError(f"vote_mode={vote_mode!r} unknown; valid: {', '.join(VOTE_MODES)}")
    args = dict(recurrences=recurrences, use_cache=use_cache)
    if perm:
        args["label_ids"] = sorted(items.labels)
    if pad is not None:
        args["pad"] = pad
    if limits is not None:  # each row stops at its limit (`generate`), as alone with max_new = its limit
        args["limits"] = torch.as_tensor(list(limits), dtype=torch.long, device=prompts.device)
    if not ks:
        return generate(model, prompts, max_new, eos_id, pad_id, k=k, **args)
    if vote_mode == "logits":
        return generate(model, prompts, max_new, eos_id, pad_id, ks=ks, **args)
    if len(ks) == 1:
        return generate(model, prompts, max_new, eos_id, pad_id, k=ks[0], **args)
    tie_k = model.eval_k if k is None else int(k)
    return _answer_vote(model, prompts, max_new, eos_id, pad_id, ks, tie_k, args)


def decided(answers: Sequence[tuple], remaining: int) -> tuple | None:
    """The most frequent answer so far when it wins whatever the `remaining` votes say (no tie possible), else
    None."""
    top = Counter(answers).most_common(2)
    second = top[1][1] if len(top) > 1 else 0
    return top[0][0] if top[0][1] > second + remaining else None


def _answer_vote(model, prompts, max_new, eos_id, pad_id, ks, tie_k, args) -> torch.Tensor:
    """The answer vote, offset by offset: a problem stops decoding once its winner is settled (e.g. after 3 of 5
    offsets that agree), so a grid cell the model gets right costs 3 decodes, not 5. The same answers as decoding
    every offset: a settled winner is the strict majority of the full vote, and the undecided rows get all."""
    B = prompts.shape[0]
    order = sorted(range(len(ks)), key=lambda i: ks[i] != tie_k)  # tie_k first (when voting), then as given
    got: list[dict[int, tuple]] = [{} for _ in range(B)]  # row -> {index into ks: whole answer}
    rows: list[dict[int, torch.Tensor]] = [{} for _ in range(B)]
    out = torch.full((B, max_new), pad_id, dtype=prompts.dtype, device=prompts.device)
    todo = list(range(B))
    for m, i in enumerate(order, 1):
        idx = torch.as_tensor(todo, device=prompts.device)
        sub = {name: x[idx] if torch.is_tensor(x) else x for name, x in args.items()}  # the rows still voting
        dec = generate(model, prompts[idx], max_new, eos_id, pad_id, k=ks[i], **sub)
        for j, (b, row) in enumerate(zip(todo, dec.tolist())):  # one host copy per decode
            got[b][i], rows[b][i] = whole_answer(row, eos_id), dec[j]
        left = []
        for b in todo:
            if m == len(ks):
                out[b] = rows[b][majority([got[b][x] for x in range(len(ks))], ks, tie_k)]
            elif (win := decided(list(got[b].values()), len(ks) - m)) is not None:
                out[b] = next(r for x, r in rows[b].items() if got[b][x] == win)
            else:
                left.append(b)
        todo = left
        if not todo:
            break
    return out
