"""What the training loop carries from one step to the next (LoopState), and the RNG state checkpointed
with it."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch


# ---------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(list(random.getstate()[1]), dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = random.getstate()
    random.setstate((py[0], tuple(int(v) for v in state["python"].tolist()), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def own_rng(state: dict, rank: int, world: int) -> dict:
    """This rank's RNG state in a trainer state: its own when the checkpoint kept every rank's (`rng_ranks`, a run
    of this world size), else rank 0's (`rng`: one process, a checkpoint from before `rng_ranks`, or a resume on
    another world size, which cannot follow the same path anyway: the ranks' rows change)."""
    ranks = state.get("rng_ranks")
    return ranks[rank] if ranks is not None and len(ranks) == world else state["rng"]


# ---------------------------------------------------------------------------------------------- the loop's state
@dataclass
class LoopState:
    """What the loop carries from one step to the next. step, elapsed, tokens and useful_tokens are
    checkpointed (with the weights, the EMA, the optimizer, the selection and the RNG); batches are pure in
    the step, so `step` is also the data's position on resume. The rest lives for this process only."""

    step: int = 0
    elapsed: float = 0.0  # seconds trained over every resume: the budget's clock, agreed between ranks
    # token counts over every resume, summed over ranks (global under DDP): `tokens` counts every position
    # of the padded batches (rows x padded length, PAD included); `useful_tokens` only their real (non-PAD)
    # tokens, the sum of the examples' lengths, prompt + answer + EOS: each one is fed to the model or is a
    # loss target (all but a row's first token are), so useful_tokens == tokens exactly when nothing is padded
    tokens: int = 0
    useful_tokens: int = 0
    saved: str | None = None  # the newest checkpoint written or resumed from (its step), for DivergedError
    # the first step whose loss was not finite (inf: none); kept on the device, read only by check_finite
    bad_at: torch.Tensor | None = None
    start_elapsed: float = 0.0  # `elapsed` when this process started, and `t0` its perf_counter then
    t0: float = 0.0
    last_save: float = 0.0  # `elapsed` at the last save, for train.save_every_minutes
    window_tokens: int = 0  # tokens since the last logging step, at `window_t`, for tokens_per_s
    window_useful: int = 0  # the same for useful_tokens_per_s
    window_t: float = 0.0
    loss_ema: float | None = None  # the progress bar's smoothed loss
    stopping: bool = False  # a signal asked to save and stop (on any rank)

    def start_clock(self) -> None:
        """This process's clocks start, once set up: setting up is not trained time."""
        self.t0, self.last_save = time.perf_counter(), self.elapsed
        self.window_tokens, self.window_useful = 0, 0
        self.window_t = time.perf_counter()
        self.start_elapsed, self.loss_ema, self.stopping = self.elapsed, None, False
