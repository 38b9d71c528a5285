"""Greedy exact-match evaluation of one grid cell, and the short by-length report printed after training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from arith.data.tasks import eval_cell, task_for
from arith.eval.vote import decode


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
) -> dict:
    """Exact match of the whole answer up to EOS, and (for sorting) whether the first answer token is right.

    Rows are grouped by prompt length so that each decoding call gets equal-length prompts. vote_ks /
    vote_mode: test-time ensembling over offsets (`arith/eval/vote.py`; None -> the model's eval_vote_ks).
    """
    ex = eval_cell(task, tok, a_len, b_len, n, seed)
    max_new = int((ex.length - ex.prompt_len).max())
    device = next(model.parameters()).device
    correct = np.zeros(n, dtype=bool)
    first = np.zeros(n, dtype=bool)
    for p in np.unique(ex.prompt_len):
        rows = np.flatnonzero(ex.prompt_len == p)
        for start in range(0, len(rows), batch_size):
            idx = rows[start : start + batch_size]
            prompts = torch.as_tensor(ex.ids[idx, :p], device=device)
            out = (
                decode(
                    model,
                    prompts,
                    max_new,
                    tok.eos_id,
                    tok.pad_id,
                    recurrences=recurrences,
                    k=k,
                    vote_ks=vote_ks,
                    vote_mode=vote_mode,
                    use_cache=use_cache,
                )
                .cpu()
                .numpy()
            )
            for j, i in enumerate(idx):
                truth = ex.ids[i, p : ex.length[i]]  # answer tokens + EOS
                correct[i] = np.array_equal(out[j, : len(truth)], truth)
                first[i] = out[j, 0] == truth[0]
    return {"n": n, "correct": int(correct.sum()), "first_correct": int(first.sum())}


def selection_scores(model, tok, task: str, lens, n: int, seed: int) -> dict[str, float]:
    """Greedy exact match (KV cache, the model's evaluation offset, depth and vote set) on the cells (L, L) of
    `lens`: the held-out lengths that pick the best checkpoint (train.select_*). Keys are str(L), as logged."""
    return {str(L): evaluate_cell(model, tok, task, L, L, n, seed)["correct"] / n for L in lens}


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
