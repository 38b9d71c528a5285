"""train(cfg): the training loop. Runs under `python pretrain.py` and `torchrun ... pretrain.py` alike.

The step's loss and compiled layers live in arith/step.py, the loop's state and the RNG state in
arith/loop_state.py; their names are re-exported here.
"""

from __future__ import annotations

import math
import random
import signal
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from arith import checkpoint, dist
from arith.data.datasets import ensure, make_batches
from arith.data.tasks import task_for
from arith.data.tokenizer import ArithTokenizer
from arith.errors import DivergedError
from arith.eval.reach import position_needs
from arith.lock import RunLock
from arith.loop_state import LoopState, own_rng, rng_state, set_rng_state
from arith.metrics import MetricsLog
from arith.model import build_model
from arith.model.flex import check_training as check_flex_training
from arith.model.flex import set_attention_impl
from arith.model.positions import watch_rows
from arith.optim import build_optimizer, load_optimizer_state, run_progress, trapezoid
from arith.schema import PretrainConfig
from arith.selection import Selection, make_ema
from arith.start import check_resume_compatible, save_run_config, validate_pretrain
from arith.step import (
    answer_positions,
    compile_blocks,
    eager_layers,
    forward_loss,
    lm_loss,
    progressive_depths,
    trims,
)

__all__ = [  # what other modules, scripts and tests import from here (the helpers re-exported)
    "LoopState",
    "budget_text",
    "compile_blocks",
    "eager_layers",
    "forward_loss",
    "lm_loss",
    "progressive_depths",
    "rng_state",
    "set_rng_state",
    "throughput_text",
    "train",
]


# --------------------------------------------------------------------------------------- progress and signals
def budget_text(step: int, elapsed_s: float, budget_minutes: float) -> str:
    """The progress label of a wall-clock budget: ``step 1,234 · 4.2 / 9 min · about 5 min left``."""
    left_s = 60 * budget_minutes - elapsed_s
    hours, minutes = divmod(int(left_s / 60 + 0.5), 60)
    eta = f"about {hours} h {minutes} min left" if hours else f"about {minutes} min left"
    eta = eta if left_s >= 60 else "under a minute left"
    return f"step {step:,} · {elapsed_s / 60:.1f} / {budget_minutes:g} min · {eta}"


def throughput_text(tokens_per_s: float, useful_per_s: float) -> str:
    """The progress bar's token rate, padded and useful (non-PAD): ``41,200 (useful 33,100)``."""
    return f"{tokens_per_s:,.0f} (useful {useful_per_s:,.0f})"


class _StopFlag:
    """SIGTERM / SIGINT ask the loop to save and stop instead of losing the work since the last checkpoint."""

    def __init__(self):
        self.raised = False
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass

    def _handler(self, signum, frame):
        if self.raised:  # second signal: stop now
            raise KeyboardInterrupt
        self.raised = True

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------------------------- train
def train(cfg: PretrainConfig) -> Path:
    """Train (or resume) the run ``cfg.run_dir``; returns it. One trainer per run: rank 0 holds its lock."""
    info = dist.init(str(cfg.train.device))
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    validate_pretrain(cfg)
    run_dir = Path(cfg.run_dir)
    check_resume_compatible(cfg, run_dir)
    with ExitStack() as cleanup:  # on every way out: the lock, the signal handlers, the metrics file
        return _train(cfg, info, run_dir, cleanup)


def _train(cfg: PretrainConfig, info: dist.DistInfo, run_dir: Path, cleanup: ExitStack) -> Path:
    """The outline: set up (data, model, resume point, outputs), then step, keep time, log, select and save until
    the step count, the budget or a signal ends the run, then save the last weights."""
    tcfg, s = cfg.train, LoopState()
    batches, tok = _data(cfg, info)
    raw_model, opt, ema, selection = _build(cfg, info, tok)
    _resume(cfg, info, run_dir, cleanup, s, raw_model, opt, ema, selection)
    model, autocast = _wrap(cfg, info, raw_model)
    log = _open_log(cfg, run_dir, tok, s.step, cleanup)
    model_cfg, task = checkpoint.model_config_dict(cfg.model, tok), task_for(cfg.data)
    s.bad_at = torch.full((), math.inf, dtype=torch.float64, device=info.device)
    # the position table's range check, deferred (no host sync per step; `position_needs` checked the training
    # lengths up front): read at the logging steps and before every save, like bad_at
    rows = cleanup.enter_context(watch_rows(raw_model))
    t = _Trainer(
        cfg,
        info,
        run_dir,
        batches,
        tok,
        task,
        raw_model,
        model,
        model_cfg,
        opt,
        ema,
        selection,
        autocast,
        log,
        rows,
        trims(cfg, info.device),
    )

    # ======== loop
    stop = _StopFlag()
    cleanup.callback(stop.restore)
    bar = _progress_bar(tcfg, info, s)
    dist.print0(
        f"run {run_dir}: {raw_model.num_params() / 1e6:.3f}M parameters on {info.device}, world {info.world}"
        + (", bf16 autocast" if isinstance(autocast, torch.autocast) else "")
    )
    s.start_clock()
    model.train()
    while True:
        progress = run_progress(s.step, s.elapsed, tcfg.steps, tcfg.budget_minutes)
        if progress >= 1.0 or s.stopping:
            break
        lr = tcfg.lr * trapezoid(progress, tcfg.warmup, tcfg.cooldown)
        loss, grad_norm, n_tok, n_useful = t.train_step(s, lr)  # no host sync
        now = t.keep_time(s, stop, n_tok, n_useful)
        _show_progress(bar, tcfg, s)
        if s.step % tcfg.log_every == 0 or s.step == 1:  # host syncs: only every log_every steps
            t.log_step(s, bar, loss, grad_norm, lr, now)
        t.select_and_save(s)
    bar.close()
    stop.restore()
    return t.finish(s)


# ---------------------------------------------------------------------------------------------- setting up
def _data(cfg: PretrainConfig, info: dist.DistInfo):
    """(Batches, tokenizer): rank 0 builds a missing on-disk dataset, the others wait for it."""
    if not cfg.data.streaming:
        dist.main_only(lambda: ensure(cfg.data))
    return make_batches(cfg.data, cfg.train.batch_size, cfg.train.seed, info.rank, info.world)


def _build(cfg: PretrainConfig, info: dist.DistInfo, tok):
    """(model, optimizer, EMA or None, Selection), seeded from train.seed."""
    tcfg = cfg.train
    torch.manual_seed(tcfg.seed)
    random.seed(tcfg.seed)
    position_needs(cfg, tok)  # raises before any work when the position table is too small
    raw_model = build_model(cfg.model, tok).to(info.device)
    opt = build_optimizer(raw_model, tcfg)
    ema = make_ema(raw_model, tcfg.ema) if tcfg.ema > 0 else None
    selection = Selection(
        tcfg.select_every,
        tuple(tcfg.select_lens),
        tcfg.select_n,
        tcfg.select_seed,
        ties=str(tcfg.select_ties),
    )
    return raw_model, opt, ema, selection


def _resume(
    cfg, info: dist.DistInfo, run_dir: Path, cleanup: ExitStack, s: LoopState, raw_model, opt, ema, selection
) -> None:
    """The run directory: rank 0 locks it (a second trainer fails here, naming the holder), then picks the resume
    point, moving damaged checkpoints aside; nothing is written before this. A checkpoint found is loaded into
    the model, the optimizer, the EMA, the selection, the RNG and `s`."""
    tcfg = cfg.train
    lock = dist.main_only(RunLock(run_dir).acquire)
    if lock is not None:
        cleanup.callback(lock.release)
    recovered = dist.main_only(lambda: checkpoint.recover(run_dir, tcfg.ema > 0), share=True)
    if recovered is None:
        return
    ckpt = Path(recovered)
    checkpoint.load_weights(ckpt, raw_model)
    state = checkpoint.load_trainer_state(ckpt)
    load_optimizer_state(opt, state["optimizer"])  # this process's fused / foreach choice kept
    s.step, s.elapsed, s.tokens = int(state["step"]), float(state["elapsed"]), int(state["tokens"])
    # checkpoints written before useful_tokens existed lack it: the count then restarts at 0 on this resume
    # (useful_tokens covers the steps since; useful_tokens_per_s is unaffected)
    s.useful_tokens = int(state.get("useful_tokens", 0))
    if checkpoint.best(run_dir) is not None:  # a best moved aside as damaged: selection starts over
        selection.load_state(state)
    if ema is not None:
        checkpoint.load_weights(ckpt, ema.module, "ema")
        ema.n_averaged = int(state["ema_n"])
    set_rng_state(own_rng(state, info.rank, info.world))
    s.saved = ckpt.name
    dist.print0(f"resuming {run_dir} from step {s.step} ({s.elapsed / 60:.1f} min trained)")


def _wrap(cfg: PretrainConfig, info: dist.DistInfo, raw_model):
    """(the model the step calls, the autocast context): attention kernels, compiled layers, DDP, bf16."""
    tcfg = cfg.train
    model = raw_model
    set_attention_impl(raw_model, tcfg.attention)
    check_flex_training(tcfg.attention, info.device, cfg.model.rel_pos)
    if tcfg.compile:
        compile_blocks(raw_model)
    if info.world > 1:  # the model's buffers are constants (digit tables, frequencies): nothing to broadcast
        model = DDP(
            model,
            device_ids=[info.device.index] if info.device.type == "cuda" else None,
            broadcast_buffers=False,
        )
    bf16 = dist.use_bf16(info.device, tcfg.bf16, tcfg.cpu_bf16)
    autocast = torch.autocast(info.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    return model, autocast


def _open_log(cfg: PretrainConfig, run_dir: Path, tok, step: int, cleanup: ExitStack) -> MetricsLog | None:
    """Rank 0 writes the run's config and opens its metrics log (None on the other ranks)."""
    tcfg = cfg.train
    dist.main_only(lambda: save_run_config(cfg, run_dir, tok))
    config = OmegaConf.to_container(cfg, resolve=True)
    log = dist.main_only(
        lambda: MetricsLog(run_dir, step, tcfg.wandb, tcfg.wandb_project, config, tcfg.tensorboard)
    )
    if log is not None:
        cleanup.callback(log.close)
    return log


def _progress_bar(tcfg, info: dist.DistInfo, s: LoopState) -> tqdm:
    """Counts steps, or with a wall-clock budget its seconds, labelled by budget_text."""
    return tqdm(
        total=tcfg.steps or int(60 * tcfg.budget_minutes),
        initial=s.step if tcfg.steps else int(s.elapsed),
        unit="step" if tcfg.steps else "s",
        disable=not (tcfg.progress and info.is_main),
        dynamic_ncols=True,
        desc=None if tcfg.steps else budget_text(s.step, s.elapsed, tcfg.budget_minutes),
        bar_format=None if tcfg.steps else "{desc} |{bar}| {percentage:3.0f}%{postfix}",
    )


def _show_progress(bar: tqdm, tcfg, s: LoopState) -> None:
    if tcfg.steps:
        bar.update(1)
    else:
        bar.set_description_str(budget_text(s.step, s.elapsed, tcfg.budget_minutes), refresh=False)
        bar.update(int(s.elapsed) - bar.n)


# ---------------------------------------------------------------------------------------------- the loop's duties
@dataclass(eq=False)
class _Trainer:
    """The parts of one run, built by `_train`, and the duties around the step: each method one of them. What
    changes from step to step is in the LoopState each one is given."""

    cfg: PretrainConfig
    info: dist.DistInfo
    run_dir: Path
    batches: object  # arith.data.datasets.Batches
    tok: ArithTokenizer
    task: object  # the data's Task, for selection
    raw_model: torch.nn.Module
    model: torch.nn.Module  # raw_model, or DDP around it
    model_cfg: dict  # checkpoints' model_config.json
    opt: torch.optim.Optimizer
    ema: object  # an AveragedModel, or None
    selection: Selection
    autocast: object  # bf16, or nullcontext
    log: MetricsLog | None  # rank 0 only
    rows: object  # the RowWatch of the position table, or None
    trim: bool  # the last block application from the answer on (train.trim_prompt, `step.trims`)

    # ------------------------------------------------------------------ the step
    def train_step(self, s: LoopState, lr: float):
        """One optimizer step at learning rate `lr`, then s.step + 1; no host sync. Returns (loss, grad norm,
        this rank's token count, its useful token count), the first two left on the device."""
        tcfg = self.cfg.train
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # embedding tables may train slower (optim.py)
        ids, n_useful = self.batches.counted_batch(s.step)  # n_useful: from the row lengths, on the host
        trim = answer_positions(ids, self.tok) if self.trim else None  # read on the host too
        ids = ids.to(self.info.device, non_blocking=True)
        with self.autocast:
            loss = forward_loss(self.model, self.raw_model, ids, self.cfg, self.tok, trim)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), tcfg.clip)
        self.opt.step()
        if self.ema is not None:
            self.ema.update_parameters(self.raw_model)
        s.step += 1
        s.bad_at = torch.where(loss.detach().isfinite(), s.bad_at, s.bad_at.clamp(max=s.step))  # no host sync
        return loss, grad_norm, ids.numel(), n_useful

    # ------------------------------------------------------------------ the budget and stopping
    def keep_time(self, s: LoopState, stop: _StopFlag, n_tok: int, n_useful: int) -> float:
        """The clock (s.elapsed), a signal (s.stopping) and the tokens (padded and useful), agreed between
        ranks; returns now."""
        info = self.info
        now = time.perf_counter()
        s.elapsed = s.start_elapsed + (now - s.t0)
        s.stopping = stop.raised
        if info.world > 1:  # every rank must agree on the budget's end, on stopping, and on the token count
            # one collective on host values (gloo: the GPU's queue is not drained)
            agreed = dist.host_sum([s.elapsed, float(stop.raised), n_tok, n_useful])
            s.elapsed, s.stopping, n_tok = agreed[0] / info.world, agreed[1] > 0, int(agreed[2])
            n_useful = int(agreed[3])
        s.tokens += n_tok
        s.window_tokens += n_tok
        s.useful_tokens += n_useful
        s.window_useful += n_useful
        return now

    # ------------------------------------------------------------------ logging
    def log_step(self, s: LoopState, bar: tqdm, loss, grad_norm, lr: float, now: float) -> None:
        """A logging step (host syncs): the loss (mean over ranks), the deferred position check, the bar, metrics."""
        info, rows = self.info, self.rows
        # one read: the loss (mean over ranks) and whether any rank asked for a row past the position table
        over = rows.overflow(info.device) if rows is not None else torch.zeros((), device=info.device)
        both = dist.all_reduce_sum(torch.stack([loss.detach().float(), over]))
        if info.world > 1:
            both = torch.stack([both[0] / info.world, both[1]])  # as dist.all_reduce_mean
        loss_val, any_over = both.tolist()
        self.rows_too_far(any_over)
        if not math.isfinite(loss_val):
            self.check_finite(s)  # raises, naming the first bad step (every rank sees the same mean)
        s.loss_ema = loss_val if s.loss_ema is None else 0.7 * s.loss_ema + 0.3 * loss_val
        window_s = max(now - s.window_t, 1e-9)
        tps, useful_tps = s.window_tokens / window_s, s.window_useful / window_s
        s.window_tokens, s.window_useful, s.window_t = 0, 0, now
        bar.set_postfix(loss=f"{s.loss_ema:.4f}", tok_s=throughput_text(tps, useful_tps), lr=f"{lr:.2e}")
        if self.log:
            self.log.log(
                {
                    "step": s.step,
                    "loss": loss_val,
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "tokens": s.tokens,
                    "tokens_per_s": tps,
                    "useful_tokens": s.useful_tokens,
                    "useful_tokens_per_s": useful_tps,
                    "elapsed_s": s.elapsed,
                    "emb_max_abs": self.raw_model.embedding_max_abs(),
                }
            )

    # ------------------------------------------------------------------ finiteness and the position table
    def rows_too_far(self, any_rank: float) -> None:
        """Raise ConfigError on every rank when one of them asked for a position row past the table (any_rank:
        the sum over ranks of `rows.overflow()`, already read)."""
        if any_rank > 0:
            top = -dist.all_reduce_min(-self.highest_row()).item()  # every rank: the same collective
            self.rows.check(self.rows_what(), int(top))

    def highest_row(self) -> torch.Tensor:
        rows, device = self.rows, self.info.device
        return rows.top if rows is not None and rows.top is not None else torch.full((), -1, device=device)

    def rows_what(self) -> str:
        return f"max digits + k in training, k up to model.max_k={self.cfg.model.max_k}"

    def check_finite(self, s: LoopState) -> None:
        """Before every save (one host sync): every loss since the last check and the weights must be finite,
        and every position row asked for inside the table, on every rank; otherwise stop, naming the step or the
        row, with nothing saved after the last good checkpoint."""
        weights_ok = torch.stack([p.isfinite().all() for p in self.raw_model.parameters()]).all()
        first = torch.where(weights_ok, s.bad_at, s.bad_at.clamp(max=s.step))
        first, top = dist.all_reduce_min(torch.stack([first, -self.highest_row().double()])).tolist()
        if self.rows is not None:
            self.rows.check(self.rows_what(), int(-top))
        if math.isfinite(first):
            kept = f"checkpoints/latest stays at step {s.saved}" if s.saved else "no checkpoint was saved"
            raise DivergedError(
                f"training diverged: loss or weights not finite at step {int(first)} of {self.run_dir}; {kept}; "
                "lower train.lr or train.clip (under another name=...)"
            )

    # ------------------------------------------------------------------ selection and saving
    def save(self, s: LoopState, is_best: bool = False) -> None:
        """check_finite, then rank 0 writes the checkpoint of step s.step (the others wait for it, and stop with it
        if it fails)."""
        self.check_finite(s)
        ema, keep_last = self.ema, self.cfg.train.keep_last
        # every rank's generators (dropout draws masks of each rank's own rows): each resumes from its own
        rngs = dist.all_gather_object(rng_state())

        def write() -> None:
            state = {
                "optimizer": self.opt.state_dict(),
                "step": s.step,
                "elapsed": s.elapsed,
                "tokens": s.tokens,
                "useful_tokens": s.useful_tokens,
                "rng": rngs[0],
                **self.selection.state(),
            }
            if len(rngs) > 1:
                state["rng_ranks"] = rngs
            if ema is not None:
                state["ema_n"] = int(ema.n_averaged)
            ema_module = ema.module if ema is not None else None
            model, model_cfg = self.raw_model, self.model_cfg
            checkpoint.save(self.run_dir, s.step, model, model_cfg, state, keep_last, ema_module, is_best)

        dist.main_only(write)  # the other ranks wait for rank 0's write, and stop with it if it fails
        s.saved = str(s.step)

    def select(self, s: LoopState) -> bool:
        """Score the selection lengths (the EMA weights when on), decoding eagerly; True on a new best. Every rank
        computes the same scores in principle, but GPUs need not decode bitwise alike: rank 0's verdict (and
        best) holds on every rank, so that all of them take save(is_best=True)'s collectives together."""
        selection = self.selection
        with eager_layers(self.ema.module if self.ema is not None else self.raw_model) as scored:
            row, improved = selection.score(scored, self.tok, self.task, s.step)
        improved, selection.best_score, selection.best_step = dist.broadcast_object(
            (improved, selection.best_score, selection.best_step)
        )
        if self.log:
            self.log.log(row)
        return improved

    def select_and_save(self, s: LoopState) -> None:
        """After a step: select when due (a new best is saved at once, and exempt from keep_last), save when due."""
        tcfg = self.cfg.train
        # from the agreed clock, so that every rank reaches save()'s barrier at the same step
        due = (s.elapsed - s.last_save) > 60 * tcfg.save_every_minutes or (
            tcfg.save_every_steps > 0 and s.step % tcfg.save_every_steps == 0
        )
        if self.selection.due(s.step) and not s.stopping:
            if self.select(s):  # a new best is kept: saved now, and exempt from keep_last
                self.save(s, is_best=True)
                s.last_save, due = s.elapsed, False
        if due:
            self.save(s)
            s.last_save = s.elapsed

    def finish(self, s: LoopState) -> Path:
        """After the loop: the last weights compete in the selection too, then the final checkpoint; a signal that
        stopped the run is raised again as KeyboardInterrupt once saved."""
        final_best = False
        if self.selection.every and self.selection.last_step != s.step and not s.stopping:
            final_best = self.select(s)  # the last weights compete too
        self.save(s, is_best=final_best)  # the final checkpoint
        dist.print0(
            f"stopped at step {s.step} after {s.elapsed / 60:.1f} min; checkpoint in {self.run_dir / 'checkpoints'}"
        )
        if s.stopping:
            raise KeyboardInterrupt("stopped by signal after saving")
        return self.run_dir
