"""Checkpoint selection on held-out longer lengths, and the moving average of the weights it may score.

Out-of-distribution accuracy is transient at small scale: it can peak mid-run and erode while the training
range stays at 100% (SPEC Part 5), so the run keeps the checkpoint that does best on lengths just past training
(`train.select_lens`) next to the latest one. Position Coupling's code does the same on a longer validation set.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from arith.eval.quick import selection_scores


class EMA:
    """Exponential moving average of a model's parameters: ema <- decay * ema + (1 - decay) * weights after every
    optimizer step (the first update copies the weights); `module` is the averaged copy, `n_averaged` the
    number of updates. decay 0 follows the raw weights exactly.

    The same arithmetic as torch's `AveragedModel` with `get_ema_multi_avg_fn` (one `torch._foreach_lerp_` per
    update, the first a copy; its buffers copied), so the weights are bitwise those it gave, but the update count
    is a host int: AveragedModel keeps it in a CPU tensor that it tests (`n_averaged == 0`) and copies to the
    device (`.to(device)`, a blocking transfer on CUDA) at every update, a host sync per training step."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay {decay} must be in [0, 1]")
        self.module = copy.deepcopy(model)
        self.decay = decay
        self.n_averaged = 0

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        mine = [p.detach() for p in self.module.parameters()]
        theirs = [p.detach() for p in model.parameters()]
        if len(mine) != len(theirs):
            raise ValueError("the model's parameters do not match the moving average's")
        if self.n_averaged == 0:
            torch._foreach_copy_(mine, theirs)
        elif mine:
            torch._foreach_lerp_(mine, theirs, 1 - self.decay)
        for b_mine, b_theirs in zip(self.module.buffers(), model.buffers()):
            b_mine.detach().copy_(b_theirs.detach())
        self.n_averaged += 1


def make_ema(model: torch.nn.Module, decay: float) -> EMA:
    """The moving average of `model` (`EMA`) with this decay."""
    return EMA(model, decay)


@dataclass
class Selection:
    """Scores every `every` steps; remembers the best mean (ties keep the earlier step, or take the later one with
    ties="later"). Select on lengths the model can score above 0 (a run whose selection lengths all read 0 keeps
    its first checkpoint as `best`)."""

    every: int
    lens: tuple[int, ...]
    n: int
    seed: int
    best_score: float = -1.0
    best_step: int | None = None
    last_step: int | None = None
    ties: str = "earlier"

    def __post_init__(self):
        self.ties = str(self.ties)
        if self.ties not in ("earlier", "later"):
            raise ValueError(f"selection ties={self.ties!r} must be 'earlier' or 'later'")

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def offer(self, step: int, scores: dict[str, float]) -> bool:
        """Record one evaluation; True when its mean is a new best."""
        mean = sum(scores.values()) / len(scores)
        self.last_step = step
        if mean > self.best_score or (self.ties == "later" and mean == self.best_score):
            self.best_score, self.best_step = mean, step
            return True
        return False

    def score(self, model, tok, task, step: int) -> tuple[dict, bool]:
        """Evaluate `model` on the selection lengths: (the metrics row, whether it is a new best)."""
        t0 = time.perf_counter()
        scores = selection_scores(model, tok, task, self.lens, self.n, self.seed)
        improved = self.offer(step, scores)
        row = {
            "step": step,
            "select": scores,
            "select_mean": sum(scores.values()) / len(scores),
            "select_best": self.best_score,
            "select_s": time.perf_counter() - t0,
        }
        return row, improved

    def state(self) -> dict:
        return {"best_score": self.best_score, "best_step": self.best_step}

    def load_state(self, state: dict) -> None:
        self.best_score = float(state.get("best_score", -1.0))
        self.best_step = state.get("best_step")
