"""One round's pseudo-labels, put together from label.py's pieces: who votes (the current model over its
offsets, then each labeler over its own), and `label_round`, which draws, votes, filters and stores a round's
problems."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from arith.errors import require
from arith.runs import load
from arith.schema import SelfImproveConfig
from arith.selfimprove import label as L


# ---------------------------------------------------------------------------------------------- voters
def own_vote_ks(cfg: SelfImproveConfig, run) -> list[int]:
    """The offsets the current model votes with; [] = one greedy vote (a scheme without offsets, labelers on)."""
    from arith.model.config_checks import check_vote_ks

    abs_pos = str(run.model.cfg.abs_pos)
    if cfg.vote_ks is None and not run.model.abs_pos.takes_offset:
        require(
            bool(cfg.labelers),
            f"{cfg.run} uses model.abs_pos={abs_pos}, which takes no offset, so its own vote is one greedy "
            "answer with no agreement to filter on; give labelers=[other runs] to vote with it",
        )
        return []
    ks = list(cfg.vote_ks) if cfg.vote_ks is not None else list(run.model.cfg.eval_vote_ks or [])
    ks = check_vote_ks(ks, abs_pos, "vote_ks")  # raises for offsets on a scheme that takes none
    require(
        len(ks) > 1 or bool(cfg.labelers),
        f"vote_ks={ks}: one vote cannot tell a confident answer from a guess; give several offsets "
        "(vote_ks=[...]; the run's model.eval_vote_ks is empty) or labelers=[other runs]",
    )
    return ks


def make_voters(cfg: SelfImproveConfig, start, vote_ks: list[int], device: torch.device) -> list:
    """The current model's vote, then each labeler's over its own eval_vote_ks (same vocabulary required)."""
    tok, model = start.tok, start.model
    labelers = [load(p, device) for p in cfg.labelers]
    for path, other in zip(cfg.labelers, labelers):
        require(other.tok.vocab == tok.vocab, f"labelers: {path} has another vocabulary than {cfg.run}")
    return [L.Voter(model, vote_ks, "self")] + [
        L.Voter(o.model, list(o.model.cfg.eval_vote_ks or []), str(p)) for p, o in zip(cfg.labelers, labelers)
    ]


def voters_text(voters) -> str:
    return ", ".join(f"{v.name} at k={v.ks or 'eval_k'}" for v in voters)


# ---------------------------------------------------------------------------------------------- a round
def label_round(cfg, r: int, task, tok, voters, frontier: int, trained: int, path: Path):
    """Draw, vote, filter and store one round's problems; returns (kept token rows, the round's counts)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([cfg.seed, 0x1AB, r])
    ex, a_len, b_len = L.draw(
        task,
        tok,
        rng,
        cfg.problems_per_round,
        frontier,
        cfg.frontier_step,
        trained,
        cfg.inside_share,
        cfg.short_operand_min,
    )
    prompts = L.prompts_of(ex)
    bounds = [task.answer_lengths(int(a), int(b)) for a, b in zip(a_len, b_len)]
    max_new = [hi + 1 for _, hi in bounds]
    with tqdm(
        total=len(prompts), desc=f"labeling round {r}", unit="problem", leave=False, disable=not cfg.progress
    ) as bar:
        votes = L.answers(voters, prompts, max_new, tok, cfg.label_batch, bar)
    kept = L.vote_filter(votes, cfg.threshold, bounds, tok.eos_id, L.answer_tokens(tok))
    longest = np.maximum(a_len, b_len)
    kept_longest = longest[[i for i, _, _ in kept]] if kept else np.zeros(0, dtype=np.int64)
    info = {
        "round": r,
        "frontier": frontier,
        "labeled": {str(n): int(c) for n, c in zip(*np.unique(longest, return_counts=True))},
        "kept": {str(n): int(c) for n, c in zip(*np.unique(kept_longest, return_counts=True))},
        "kept_share": len(kept) / len(prompts),
        "kept_accuracy": L.kept_accuracy(ex, kept),  # for people: read from the true answers, after the vote
        "label_s": time.perf_counter() - t0,
    }
    return L.save_round(path, prompts, a_len, b_len, kept, info), info
