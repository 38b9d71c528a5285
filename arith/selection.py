"""Checkpoint selection on held-out longer lengths, and the moving average of the weights it may score.

Out-of-distribution accuracy is transient at small scale: it can peak mid-run and erode while the training
range stays at 100% (SPEC Part 5), so the run keeps the checkpoint that does best on lengths just past training
(`train.select_lens`) next to the latest one. Position Coupling's code does the same on a longer validation set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from arith.eval.quick import selection_scores


def make_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """Exponential moving average of `model`'s parameters: ema <- decay * ema + (1 - decay) * weights after
    every optimizer step (the first update copies the weights). decay 0 follows the raw weights exactly."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))


@dataclass
class Selection:
    """Scores every `every` steps; remembers the best mean (ties keep the earlier step)."""

    every: int
    lens: tuple[int, ...]
    n: int
    seed: int
    best_score: float = -1.0
    best_step: int | None = None
    last_step: int | None = None

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def offer(self, step: int, scores: dict[str, float]) -> bool:
        """Record one evaluation; True when its mean is a new best."""
        mean = sum(scores.values()) / len(scores)
        self.last_step = step
        if mean > self.best_score:
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
