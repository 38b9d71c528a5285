"""train(cfg): the training loop. Runs under `python pretrain.py` and `torchrun ... pretrain.py` alike."""

from __future__ import annotations

import math
import random
import signal
import time
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
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
from arith.metrics import MetricsLog
from arith.model import build_model
from arith.model.flex import check_training as check_flex_training
from arith.model.flex import set_attention_impl
from arith.model.positions import watch_rows
from arith.optim import build_optimizer, load_optimizer_state, run_progress, trapezoid
from arith.schema import PretrainConfig, Reduction
from arith.selection import Selection, make_ema
from arith.start import check_resume_compatible, save_run_config, validate_pretrain


# ---------------------------------------------------------------------------------------------- loss
def lm_loss(
    logits: torch.Tensor, ids: torch.Tensor, tok: ArithTokenizer, answer_only: bool, reduction: Reduction
) -> torch.Tensor:
    """Next-token cross-entropy over ids[:, 1:], normalised over the *global* batch.

    Each rank divides its summed loss by the global token (or sample) count times the world size, so that
    DDP's gradient averaging yields exactly the single-process gradient of the same global batch.
    """
    targets = ids[:, 1:]  # (B, T-1)
    valid = targets != tok.pad_id
    if answer_only:  # SPEC: mask every target up to and including '='
        valid &= torch.cumsum(ids[:, :-1] == tok.eq_id, dim=1) > 0
    token_loss = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (B, T-1)
    token_loss = token_loss * valid
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if reduction == Reduction.mean:
        count = dist.all_reduce_sum(valid.sum().to(token_loss.dtype)).clamp_min(1)
        return token_loss.sum() * world / count
    per_row = valid.sum(dim=1)
    row_mean = token_loss.sum(dim=1) / per_row.clamp_min(1)
    rows = dist.all_reduce_sum((per_row > 0).sum().to(token_loss.dtype)).clamp_min(1)
    return row_mean.sum() * world / rows


def progressive_depths(recurrences: int, max_backprop: int | None, throttle: bool) -> tuple[int, int]:
    """Progressive loss (McLeish et al. 2024 / Bansal et al. 2022): n recurrences without gradient, then k with.

    n ~ U{0..R-1}; k ~ U{1..min(R-n, max_backprop)} when throttled (depth never exceeds R), U{1..max_backprop}
    otherwise. Drawn from torch's global RNG so they are part of the checkpointed RNG state.
    """
    mb = max_backprop or max(1, recurrences // 2)
    n = int(torch.randint(0, recurrences, ()).item())
    k_max = min(recurrences - n, mb) if throttle else mb
    k = int(torch.randint(1, k_max + 1, ()).item())
    return n, k


def forward_loss(model, raw_model, ids, cfg: PretrainConfig, tok) -> torch.Tensor:
    m = cfg.model
    x = ids[:, :-1]
    k = raw_model.training_offset(x.shape[0])  # one position offset per step, shared by every pass

    def loss_at(depth: int, no_grad: int = 0) -> torch.Tensor:
        logits = model(x, recurrences=depth, no_grad_recurrences=no_grad, k=k)
        return lm_loss(logits, ids, tok, cfg.train.mask_before_equals, cfg.train.loss_reduction)

    if m.recurrences == 1 or m.alpha == 0:
        return loss_at(m.recurrences)
    n, kk = progressive_depths(m.recurrences, m.max_backprop, m.throttle)
    loss = m.alpha * loss_at(n + kk, no_grad=n)
    if m.alpha < 1:
        loss = loss + (1 - m.alpha) * loss_at(m.recurrences)
    return loss


def compile_blocks(model) -> None:
    """torch.compile every layer of the recurrent block in place (parameter names unchanged).

    Not the whole model: its Python loop unrolls per (depth, no-grad depth), so the progressive loss's
    random depths would recompile every step and hit dynamo's recompile limit. A layer compiles to a few
    graphs (with / without grad, then dynamic sequence length) shared by every layer and recurrence, and DDP
    wraps the model as usual, with no extra flag.
    """
    for layer in model.layers:
        layer.compile()


@contextmanager
def eager_layers(model):
    """The layers of `model` run uncompiled inside the block (`compile_blocks` undone for a while): selection's
    KV-cached decoding (eval mode, no grad, one-token steps, a growing cache) would otherwise compile graph after
    graph inside the training budget and hit dynamo's recompile limit. Scores are then those of the eager model
    that `arith.load` evaluates, as with train.ema (whose copy is made before compiling)."""
    compiled = [(layer, layer._compiled_call_impl) for layer in model.layers]  # set by nn.Module.compile
    for layer, _ in compiled:
        layer._compiled_call_impl = None
    try:
        yield model
    finally:
        for layer, impl in compiled:
            layer._compiled_call_impl = impl


# ---------------------------------------------------------------------------------------------- state
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


def budget_text(step: int, elapsed_s: float, budget_minutes: float) -> str:
    """The progress label of a wall-clock budget: ``step 1,234 · 4.2 / 9 min · about 5 min left``."""
    left_s = 60 * budget_minutes - elapsed_s
    hours, minutes = divmod(int(left_s / 60 + 0.5), 60)
    eta = f"about {hours} h {minutes} min left" if hours else f"about {minutes} min left"
    eta = eta if left_s >= 60 else "under a minute left"
    return f"step {step:,} · {elapsed_s / 60:.1f} / {budget_minutes:g} min · {eta}"


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
    tcfg = cfg.train
    # ======== data: rank 0 builds a missing on-disk dataset, the others wait for it
    if not cfg.data.streaming:
        dist.main_only(lambda: ensure(cfg.data))
    batches, tok = make_batches(cfg.data, tcfg.batch_size, tcfg.seed, info.rank, info.world)

    # ======== model and optimizer
    torch.manual_seed(tcfg.seed)
    random.seed(tcfg.seed)
    position_needs(cfg, tok)  # raises before any work when the position table is too small
    raw_model = build_model(cfg.model, tok).to(info.device)
    opt = build_optimizer(raw_model, tcfg)
    ema = make_ema(raw_model, tcfg.ema) if tcfg.ema > 0 else None
    selection = Selection(tcfg.select_every, tuple(tcfg.select_lens), tcfg.select_n, tcfg.select_seed)
    step, elapsed, tokens = 0, 0.0, 0

    # ======== the run directory: rank 0 locks it (a second trainer fails here, naming the holder), then picks
    # the resume point, moving damaged checkpoints aside; nothing is written before this
    lock = dist.main_only(RunLock(run_dir).acquire)
    if lock is not None:
        cleanup.callback(lock.release)
    recovered = dist.main_only(lambda: checkpoint.recover(run_dir, tcfg.ema > 0), share=True)
    ckpt = Path(recovered) if recovered is not None else None
    if ckpt is not None:
        checkpoint.load_weights(ckpt, raw_model)
        state = checkpoint.load_trainer_state(ckpt)
        load_optimizer_state(opt, state["optimizer"])  # this process's fused / foreach choice kept
        step, elapsed, tokens = int(state["step"]), float(state["elapsed"]), int(state["tokens"])
        if checkpoint.best(run_dir) is not None:  # a best moved aside as damaged: selection starts over
            selection.load_state(state)
        if ema is not None:
            checkpoint.load_weights(ckpt, ema.module, "ema")
            ema.n_averaged = int(state["ema_n"])
        set_rng_state(state["rng"])
        dist.print0(f"resuming {run_dir} from step {step} ({elapsed / 60:.1f} min trained)")
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
    use_bf16 = tcfg.bf16 and (info.device.type == "cuda" or tcfg.cpu_bf16)
    autocast = torch.autocast(info.device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()

    dist.main_only(lambda: save_run_config(cfg, run_dir, tok))
    config = OmegaConf.to_container(cfg, resolve=True)
    log = dist.main_only(
        lambda: MetricsLog(run_dir, step, tcfg.wandb, tcfg.wandb_project, config, tcfg.tensorboard)
    )
    if log is not None:
        cleanup.callback(log.close)
    model_cfg = checkpoint.model_config_dict(cfg.model, tok)
    task = task_for(cfg.data)

    # the first step whose loss was not finite (inf: none); kept on the device, read only by check_finite
    bad_at = torch.full((), math.inf, dtype=torch.float64, device=info.device)
    saved = ckpt.name if ckpt is not None else None
    # the position table's range check, deferred (no host sync per step; `position_needs` checked the training
    # lengths up front): read at the logging steps and before every save, like bad_at
    rows = cleanup.enter_context(watch_rows(raw_model))

    def rows_too_far(any_rank: float) -> None:
        """Raise ConfigError on every rank when one of them asked for a position row past the table (any_rank:
        the sum over ranks of `rows.overflow()`, already read)."""
        if any_rank > 0:
            top = -dist.all_reduce_min(-highest_row()).item()  # every rank: the same collective
            rows.check(f"max digits + k in training, k up to model.max_k={cfg.model.max_k}", int(top))

    def highest_row() -> torch.Tensor:
        return (
            rows.top if rows is not None and rows.top is not None else torch.full((), -1, device=info.device)
        )

    def check_finite() -> None:
        """Before every save (one host sync): every loss since the last check and the weights must be finite,
        and every position row asked for inside the table, on every rank; otherwise stop, naming the step or the
        row, with nothing saved after the last good checkpoint."""
        weights_ok = torch.stack([p.isfinite().all() for p in raw_model.parameters()]).all()
        first = torch.where(weights_ok, bad_at, bad_at.clamp(max=step))
        first, top = dist.all_reduce_min(torch.stack([first, -highest_row().double()])).tolist()
        if rows is not None:
            rows.check(f"max digits + k in training, k up to model.max_k={cfg.model.max_k}", int(-top))
        if math.isfinite(first):
            kept = f"checkpoints/latest stays at step {saved}" if saved else "no checkpoint was saved"
            raise DivergedError(
                f"training diverged: loss or weights not finite at step {int(first)} of {run_dir}; {kept}; "
                "lower train.lr or train.clip (under another name=...)"
            )

    def save(is_best: bool = False) -> None:
        nonlocal saved
        check_finite()

        def write() -> None:
            state = {
                "optimizer": opt.state_dict(),
                "step": step,
                "elapsed": elapsed,
                "tokens": tokens,
                "rng": rng_state(),
                **selection.state(),
            }
            if ema is not None:
                state["ema_n"] = int(ema.n_averaged)
            ema_module = ema.module if ema is not None else None
            checkpoint.save(run_dir, step, raw_model, model_cfg, state, tcfg.keep_last, ema_module, is_best)

        dist.main_only(write)  # the other ranks wait for rank 0's write, and stop with it if it fails
        saved = str(step)

    def select() -> bool:
        """Score the selection lengths (the EMA weights when on), decoding eagerly; True on a new best. Every rank
        computes the same scores in principle, but GPUs need not decode bitwise alike: rank 0's verdict (and
        best) holds on every rank, so that all of them take save(is_best=True)'s collectives together."""
        with eager_layers(ema.module if ema is not None else raw_model) as scored:
            row, improved = selection.score(scored, tok, task, step)
        improved, selection.best_score, selection.best_step = dist.broadcast_object(
            (improved, selection.best_score, selection.best_step)
        )
        if log:
            log.log(row)
        return improved

    # ======== loop
    stop = _StopFlag()
    cleanup.callback(stop.restore)
    bar = tqdm(  # counts steps, or with a wall-clock budget its seconds, labelled by budget_text
        total=tcfg.steps or int(60 * tcfg.budget_minutes),
        initial=step if tcfg.steps else int(elapsed),
        unit="step" if tcfg.steps else "s",
        disable=not (tcfg.progress and info.is_main),
        dynamic_ncols=True,
        desc=None if tcfg.steps else budget_text(step, elapsed, tcfg.budget_minutes),
        bar_format=None if tcfg.steps else "{desc} |{bar}| {percentage:3.0f}%{postfix}",
    )
    dist.print0(
        f"run {run_dir}: {raw_model.num_params() / 1e6:.3f}M parameters on {info.device}, world {info.world}"
    )
    t0, last_save, window_tokens, window_t = time.perf_counter(), elapsed, 0, time.perf_counter()
    start_elapsed, loss_ema, stopping = elapsed, None, False
    model.train()
    while True:
        progress = run_progress(step, elapsed, tcfg.steps, tcfg.budget_minutes)
        if progress >= 1.0 or stopping:
            break
        lr = tcfg.lr * trapezoid(progress, tcfg.warmup, tcfg.cooldown)
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # embedding tables may train slower (optim.py)
        ids = batches.batch(step).to(info.device, non_blocking=True)
        with autocast:
            loss = forward_loss(model, raw_model, ids, cfg, tok)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), tcfg.clip)
        opt.step()
        if ema is not None:
            ema.update_parameters(raw_model)

        step += 1
        bad_at = torch.where(loss.detach().isfinite(), bad_at, bad_at.clamp(max=step))  # no host sync
        now = time.perf_counter()
        elapsed = start_elapsed + (now - t0)
        stopping, n_tok = stop.raised, ids.numel()
        if info.world > 1:  # every rank must agree on the budget's end, on stopping, and on the token count
            # one collective on host values (gloo: the GPU's queue is not drained)
            agreed = dist.host_sum([elapsed, float(stop.raised), n_tok])
            elapsed, stopping, n_tok = agreed[0] / info.world, agreed[1] > 0, int(agreed[2])
        tokens += n_tok
        window_tokens += n_tok
        if tcfg.steps:
            bar.update(1)
        else:
            bar.set_description_str(budget_text(step, elapsed, tcfg.budget_minutes), refresh=False)
            bar.update(int(elapsed) - bar.n)
        if step % tcfg.log_every == 0 or step == 1:  # host syncs: only every log_every steps
            # one read: the loss (mean over ranks) and whether any rank asked for a row past the position table
            over = rows.overflow(info.device) if rows is not None else torch.zeros((), device=info.device)
            both = dist.all_reduce_sum(torch.stack([loss.detach().float(), over]))
            if info.world > 1:
                both = torch.stack([both[0] / info.world, both[1]])  # as dist.all_reduce_mean
            loss_val, any_over = both.tolist()
            rows_too_far(any_over)
            if not math.isfinite(loss_val):
                check_finite()  # raises, naming the first bad step (every rank sees the same mean)
            loss_ema = loss_val if loss_ema is None else 0.7 * loss_ema + 0.3 * loss_val
            tps = window_tokens / max(now - window_t, 1e-9)
            window_tokens, window_t = 0, now
            bar.set_postfix(loss=f"{loss_ema:.4f}", tok_s=f"{tps:,.0f}", lr=f"{lr:.2e}")
            if log:
                log.log(
                    {
                        "step": step,
                        "loss": loss_val,
                        "lr": lr,
                        "grad_norm": float(grad_norm),
                        "tokens": tokens,
                        "tokens_per_s": tps,
                        "elapsed_s": elapsed,
                        "emb_max_abs": raw_model.embedding_max_abs(),
                    }
                )
        # from the agreed clock, so that every rank reaches save()'s barrier at the same step
        due = (elapsed - last_save) > 60 * tcfg.save_every_minutes or (
            tcfg.save_every_steps > 0 and step % tcfg.save_every_steps == 0
        )
        if selection.due(step) and not stopping:
            if select():  # a new best is kept: saved now, and exempt from keep_last
                save(is_best=True)
                last_save, due = elapsed, False
        if due:
            save()
            last_save = elapsed
    bar.close()
    stop.restore()
    final_best = False
    if selection.every and selection.last_step != step and not stopping:
        final_best = select()  # the last weights compete too
    save(is_best=final_best)  # the final checkpoint
    dist.print0(
        f"stopped at step {step} after {elapsed / 60:.1f} min; checkpoint in {run_dir / 'checkpoints'}"
    )
    if stopping:
        raise KeyboardInterrupt("stopped by signal after saving")
    return run_dir
