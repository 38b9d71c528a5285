"""Greedy exact-match evaluation of one grid cell, and the short by-length report printed after training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from arith.data.tasks import eval_cell, get_task, task_for
from arith.eval import order_vote
from arith.eval.settings import check_label_permutation, check_order_view_items, check_order_votes
from arith.eval.vote import decode, default_label_permutation, default_order_view_items, default_order_votes


@torch.no_grad()
def evaluate_cell(
    model,
    tok,
    task: str,
    a_len: int,
    b_len: int,
    n: int,
    seed: int,
    k: int | None = None,
    recurrences: int | None = None,
    batch_size: int = 256,
    use_cache: bool = True,
    vote_ks=None,
    vote_mode: str = "answer",
    order_votes: int | None = None,
    label_permutation: bool | None = None,
    order_view_items: int | None = None,
) -> dict:
    """Exact match of the whole answer up to EOS, and (for sorting) whether the first answer token is right.

    vote_ks / vote_mode: test-time ensembling over offsets (`arith/eval/vote.py`; None -> the model's
    eval_vote_ks); order_votes: sorting's over orders of the items (`arith/eval/order_vote.py`; None -> the
    model's eval_order_votes); label_permutation: sorting's answers as permutations of the labels
    (`arith/eval/constrain.py`; None -> the model's eval_label_permutation); order_view_items: the most items one
    order of that vote shows (None -> the model's eval_order_view_items). One cell of `evaluate_cells`.
    """
    kw = dict(k=k, recurrences=recurrences, vote_ks=vote_ks, vote_mode=vote_mode, order_votes=order_votes)
    kw.update(label_permutation=label_permutation, order_view_items=order_view_items)
    return evaluate_cells(model, tok, task, [(a_len, b_len)], n, seed, batch_size, use_cache, **kw)[0]


# sorting's decoding keys: (name, the model's default, its check)
SORTING_KEYS = (
    ("order_votes", default_order_votes, check_order_votes),
    ("label_permutation", default_label_permutation, check_label_permutation),
    ("order_view_items", default_order_view_items, check_order_view_items),
)


@torch.no_grad()
def evaluate_cells(
    model,
    tok,
    task: str,
    cells,
    n: int,
    seed: int,
    batch_size: int = 256,
    use_cache: bool = True,
    **decode_kw,
) -> list[dict]:
    """`evaluate_cell`'s counts for each (a_len, b_len) of `cells`, decoded together: the problems of all the
    cells are pooled by prompt length, so that cells of one length (addition's a_len + b_len) share decoding
    calls of up to batch_size rows. Each cell's problems are the ones it has alone (its own seed), so the
    counts do not depend on the grouping; a GPU gains from the larger calls, where decoding one cell of 100
    problems is bound by kernel launches (docs/GPU.md).
    """
    device = next(model.parameters()).device
    spec = get_task(task)
    decode_kw = dict(decode_kw)
    for name, default, check in SORTING_KEYS:  # each the eval.* value where given, else the model's; checked
        value = decode_kw.get(name)
        decode_kw[name] = default(model) if value is None else value
        check(decode_kw[name], f"eval.{name}", (spec.name, spec.answer_format))
    if decode_kw["order_votes"] > 1 or decode_kw["label_permutation"]:
        decode_kw["items"] = order_vote.ItemTokens.of(tok)
    exs = [eval_cell(task, tok, a_len, b_len, n, seed) for a_len, b_len in cells]
    correct = [np.zeros(n, dtype=bool) for _ in cells]
    first = [np.zeros(n, dtype=bool) for _ in cells]
    owner = np.concatenate([np.full(n, c) for c in range(len(cells))])  # cell of each pooled row
    row = np.concatenate([np.arange(n) for _ in cells])  # its index in the cell
    prompt_len = np.concatenate([ex.prompt_len for ex in exs])
    cell_new = [int((ex.length - ex.prompt_len).max()) for ex in exs]  # a cell decodes this many tokens
    for p in np.unique(prompt_len):
        pool = np.flatnonzero(prompt_len == p)
        for start in range(0, len(pool), batch_size):
            idx = pool[start : start + batch_size]
            ids = np.stack([exs[owner[i]].ids[row[i], :p] for i in idx])
            truths = [
                exs[owner[i]].ids[row[i], p : exs[owner[i]].length[row[i]]] for i in idx
            ]  # answer + EOS
            limits = [cell_new[owner[i]] for i in idx]  # each row as if its cell were decoded alone
            prompts = torch.as_tensor(ids, device=device)
            out = decode(
                model,
                prompts,
                max(limits),
                tok.eos_id,
                tok.pad_id,
                use_cache=use_cache,
                limits=limits,
                **decode_kw,
            )
            out = out.cpu().numpy()
            for j, (i, truth) in enumerate(zip(idx, truths)):
                correct[owner[i]][row[i]] = np.array_equal(out[j, : len(truth)], truth)
                first[owner[i]][row[i]] = out[j, 0] == truth[0]
    return [{"n": n, "correct": int(c.sum()), "first_correct": int(f.sum())} for c, f in zip(correct, first)]


def selection_scores(model, tok, task: str, lens, n: int, seed: int) -> dict[str, float]:
    """Greedy exact match (KV cache, the model's evaluation offset, depth and vote set) on the cells (L, L) of
    `lens`: the held-out lengths that pick the best checkpoint (train.select_*). Keys are str(L), as logged.
    Without sorting's order vote: selection runs every select_every steps inside the training budget, and a
    vote over N orders would cost it N decodes a problem."""
    return {
        str(L): evaluate_cell(model, tok, task, L, L, n, seed, order_votes=0)["correct"] / n for L in lens
    }


def report_by_length(run_dir: Path, max_len: int, n: int, seed: int = 4321, device="cpu") -> dict[int, float]:
    """Accuracy on (L, L) cells for L = 1..max_len, printed as a table; returns {L: accuracy}. device: where the
    model decodes (pretrain.py passes the one it trained on)."""
    import arith

    run = arith.load(run_dir, device)
    task = task_for(run.cfg.data)
    trained = run.cfg.data.max_len
    out = {}
    print(f"\nheld-out exact match, {n} problems per length ({task.name}, trained up to {trained} digits):")
    print(f"{'digits':>6}  {'acc %':>6}")
    for length in range(1, max_len + 1):
        r = evaluate_cell(run.model, run.tok, task, length, length, n, seed)
        out[length] = r["correct"] / r["n"]
        mark = "" if length <= trained else "  (longer than training)"
        print(f"{length:>6}  {100 * out[length]:>6.1f}{mark}", flush=True)
    return out
