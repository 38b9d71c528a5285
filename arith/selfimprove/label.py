"""Pseudo-labels: unlabeled problems past the frontier, the vote that labels them, the filter that keeps the
confident ones, and their storage as a Hugging Face dataset (one per round, never pruned).

The labeling path sees prompts only: `draw` returns the task's rows with their true answers, `prompts_of`
cuts them to the prompt, and only the report (`kept_accuracy`) reads the answers again, after the fact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from arith.data.spec import Examples, TaskSpec
from arith.errors import DataError, storage_error
from arith.eval.decode import generate
from arith.eval.vote import whole_answer
from arith.files import PSEUDO, ROUND_INFO, umask_mode


# ---------------------------------------------------------------------------------------------- problems
def draw(
    task: TaskSpec,
    tok,
    rng: np.random.Generator,
    n: int,
    frontier: int,
    step: int,
    trained: int,
    inside: float,
    short_min: float = 0.0,
) -> tuple[Examples, np.ndarray, np.ndarray]:
    """n problems: the longer operand has F+1..F+step digits (F = frontier), or for a share `inside` of them
    trained+1..F (lengths the earlier rounds labeled; none while F == trained). The other operand has
    ceil(short_min x that)..that many digits (at least 1; short_min = 0: 1..that, 1: as many), uniformly, and
    which operand is the longer one is random. Returns (rows with true answers, a_len, b_len).
    Problems come from the training side of the hash split, so none is a held-out evaluation problem."""
    n_in = int(round(n * inside)) if frontier > trained else 0
    longest = np.concatenate(
        [
            rng.integers(frontier + 1, frontier + step + 1, size=n - n_in),
            rng.integers(trained + 1, frontier + 1, size=n_in),
        ]
    )
    lo = np.maximum(1, np.ceil(short_min * longest).astype(np.int64))
    # uniform in lo..longest (lo = 1: the same numbers as 1..longest always gave)
    other = (rng.random(n) * (longest - lo + 1)).astype(np.int64) + lo
    swap = rng.random(n) < 0.5
    a_len, b_len = np.where(swap, other, longest), np.where(swap, longest, other)
    return task.make(tok, rng, a_len, b_len, split="train"), a_len, b_len


def prompts_of(ex: Examples) -> list[np.ndarray]:
    """The prompt (through '=') of every row: all the labeling path is given."""
    return [ex.ids[i, : ex.prompt_len[i]] for i in range(len(ex))]


# ---------------------------------------------------------------------------------------------- votes
@dataclass
class Voter:
    """One model and the offsets it votes with (each offset is one vote); ks [] = one greedy vote at eval_k."""

    model: torch.nn.Module
    ks: list[int]
    name: str = ""

    @property
    def votes(self) -> int:
        return max(1, len(self.ks))


@torch.no_grad()
def answers(
    voters: Sequence[Voter],
    prompts: Sequence[np.ndarray],
    max_new: Sequence[int],
    tok,
    batch: int = 256,
    bar=None,
) -> list[list[tuple[int, ...]]]:
    """Every vote's answer to every prompt: answers[i] lists the tokens each vote wrote after problem i's '='
    (through EOS when it wrote one), voters in order, each voter's offsets in order. Prompts of one length
    decode together."""
    out: list[list[tuple[int, ...]]] = [[] for _ in prompts]
    lengths = np.array([len(p) for p in prompts])
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        for start in range(0, len(rows), batch):
            idx = rows[start : start + batch]
            ids = torch.as_tensor(np.stack([prompts[i] for i in idx]))
            new = int(max(max_new[i] for i in idx))
            for voter in voters:
                device = next(voter.model.parameters()).device
                for k in voter.ks or [None]:
                    got = generate(voter.model, ids.to(device), new, tok.eos_id, tok.pad_id, k=k).tolist()
                    for j, i in enumerate(idx):
                        row = got[j]
                        out[i].append(whole_answer(row, tok.eos_id))
            if bar is not None:
                bar.update(len(idx))
    return out


def possible(answer: tuple[int, ...], lo: int, hi: int, eos_id: int, allowed: set[int]) -> bool:
    """A whole answer (ends in EOS) whose length before EOS is in lo..hi, made of answer tokens only."""
    if not answer or answer[-1] != eos_id:
        return False
    body = answer[:-1]
    return lo <= len(body) <= hi and all(t in allowed for t in body)


def vote_filter(
    votes: Sequence[Sequence[tuple[int, ...]]],
    threshold: float,
    bounds: Sequence[tuple[int, int]],
    eos_id: int,
    allowed: set[int],
) -> list[tuple[int, tuple[int, ...], float]]:
    """(problem index, kept answer, its vote share) for every problem whose most voted answer holds at least
    `threshold` of all its votes and is possible for it (`possible`, bounds[i] = (lo, hi) answer tokens).
    Ties go to the answer of the earliest vote among the tied (the current model's first offset)."""
    kept = []
    for i, row in enumerate(votes):
        counts = Counter(row)
        top = max(counts.values())
        winner = next(a for a in row if counts[a] == top)
        share = top / len(row)
        if share >= threshold - 1e-12 and possible(winner, *bounds[i], eos_id, allowed):
            kept.append((i, winner, share))
    return kept


def answer_tokens(tok) -> set[int]:
    """Tokens an answer may hold before EOS (digits, '-', labels, commas): anything but the specials and '='."""
    specials = {tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.eq_id}
    return set(range(tok.vocab_size)) - specials


def kept_accuracy(ex: Examples, kept: Sequence[tuple[int, tuple[int, ...], float]]) -> float | None:
    """For people only: the share of kept labels that equal the true answer (None when nothing was kept)."""
    if not kept:
        return None
    right = sum(tuple(ex.ids[i, ex.prompt_len[i] : ex.length[i]].tolist()) == ans for i, ans, _ in kept)
    return right / len(kept)


# ---------------------------------------------------------------------------------------------- storage
def round_dir(out: Path, r: int) -> Path:
    return Path(out) / PSEUDO / f"round_{r}"


def save_round(path: Path, prompts, a_len, b_len, kept, info: dict) -> list[list[int]]:
    """The kept rows (prompt + answer + EOS token ids, the operand lengths, the vote share) as a dataset, and
    `info` as round.json beside it; written to a temporary folder and renamed, so a round is there whole or
    not at all. Returns the token rows, as `load_round` reads them back."""
    import datasets as hf

    rows = {
        "ids": [np.concatenate([prompts[i], np.asarray(ans)]).tolist() for i, ans, _ in kept],
        "prompt_len": [len(prompts[i]) for i, _, _ in kept],
        "a_len": [int(a_len[i]) for i, _, _ in kept],
        "b_len": [int(b_len[i]) for i, _, _ in kept],
        "share": [float(s) for _, _, s in kept],
    }
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".tmp-{path.name}-"))
        os.chmod(tmp, umask_mode(dirs=True))  # not mkdtemp's 0o700: the round is part of a shareable run
        bars = hf.is_progress_bar_enabled()
        hf.disable_progress_bars()  # a bar per tiny save would bury the round's own
        try:
            hf.Dataset.from_dict(rows).save_to_disk(str(tmp / "data"))
        finally:
            if bars:
                hf.enable_progress_bars()
        (tmp / ROUND_INFO).write_text(json.dumps(info, indent=2, sort_keys=True))
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise storage_error(e, "write", path) from None
    return rows["ids"]


def load_round(path: Path) -> tuple[list[list[int]], dict]:
    """(token rows, round info) of a saved round."""
    from datasets import load_from_disk

    path = Path(path)
    try:
        info = json.loads((path / ROUND_INFO).read_text())
        ds = load_from_disk(str(path / "data"))
    except (OSError, ValueError) as e:
        raise DataError(
            f"cannot read the pseudo-labels in {path} ({type(e).__name__}: {e}); delete the folder to label the round again"
        ) from None
    return list(ds["ids"]), info


def clean_partial(out: Path) -> None:
    """Remove the temporary folders of a round whose writing was killed."""
    for junk in (Path(out) / PSEUDO).glob(".tmp-*"):
        shutil.rmtree(junk, ignore_errors=True)
