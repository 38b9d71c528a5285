"""The rounds: label past the frontier, keep what the vote is sure of, train, move the frontier.

Round r (frontier F_r, global steps r*S .. (r+1)*S - 1 with S = steps_per_round):
1. draw `problems_per_round` fresh problems past F_r (and `inside_share` of them at or below it, past training),
   from a generator seeded by (seed, r);
2. label them with the vote of the current model over `vote_ks` and of every labeler over its own vote set;
   keep an answer when its share of all votes is >= `threshold` and its length is possible (label.py);
   save the kept rows under <out>/pseudo/round_<r>/;
3. train S steps on batches whose `pseudo_share` rows come from the pseudo-labels of rounds 0..r and the rest
   from the starting run's own data (its task and lengths), lr: warm-up, constant, cool-down within the round;
4. F_{r+1}: F_r plus every length F_r+1 .. F_r+frontier_step, in order, whose kept share reached `advance_at`
   (an unlabeled signal: the vote's own agreement), stopping at the first that did not;
5. report (for people only; true answers, never fed back): kept-label accuracy, held-out exact match by length.
Every checkpoint holds the optimizer, step and RNG; batches are pure in the step; labels are stored before
training on them: a run killed at any moment resumes from its latest checkpoint to the same weights.
"""

from __future__ import annotations

import math
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from arith import checkpoint
from arith.checkpoint import model_config_dict
from arith.data.datasets import make_batches
from arith.data.tasks import task_for
from arith.dist import pick_device
from arith.errors import ConfigError, require
from arith.eval.reach import position_needs
from arith.files import CONFIG
from arith.lock import RunLock
from arith.loop_state import rng_state, set_rng_state
from arith.metrics import MetricsLog
from arith.model.flex import set_attention_impl
from arith.optim import build_optimizer, load_optimizer_state, trapezoid
from arith.runs import load
from arith.schema import SelfImproveConfig
from arith.selfimprove import label as L
from arith.selfimprove.report import heldout, plot_rounds
from arith.selfimprove.round_labels import label_round, make_voters, own_vote_ks, voters_text
from arith.step import answer_positions, forward_loss, trims

SETTINGS = "self_improve.yaml"  # the child run's self-improvement config (a resume must repeat it)
# what a resume may change: how long, how it shows, and how rounds not yet labeled are labeled (a round's
# labels are stored once, so the rounds done keep theirs); not what trains (lr, shares, batch, steps) nor how
# the frontier moves (the rounds done are folded again on resume)
RESUMABLE = (
    "rounds",
    "progress",
    "threads",
    "device",
    "label_batch",
    "report_lens",
    "report_n",
    "save_every_steps",
    "threshold",
    "vote_ks",
    "labelers",
    "problems_per_round",
    "short_operand_min",
)


# ---------------------------------------------------------------------------------------------- config
def validate(cfg: SelfImproveConfig) -> None:
    """One-line ConfigError naming the key for any setting that cannot work."""
    for key in ("rounds", "steps_per_round", "problems_per_round", "frontier_step", "label_batch"):
        require(getattr(cfg, key) >= 1, f"{key}={getattr(cfg, key)} must be >= 1")
    require(0 < cfg.threshold <= 1, f"threshold={cfg.threshold} must be in (0, 1]: the share of votes kept")
    for key in ("inside_share", "short_operand_min", "pseudo_share", "advance_at", "warmup", "cooldown"):
        require(0 <= getattr(cfg, key) <= 1, f"{key}={getattr(cfg, key)} must be in [0, 1]")
    require(cfg.inside_share < 1, f"inside_share={cfg.inside_share} must be < 1: some problems must be new")
    require(cfg.warmup + cfg.cooldown <= 1, f"warmup + cooldown = {cfg.warmup + cfg.cooldown} must be <= 1")
    require(cfg.lr > 0 and math.isfinite(cfg.lr), f"lr={cfg.lr} must be a positive number")
    require(cfg.batch_size is None or cfg.batch_size >= 1, f"batch_size={cfg.batch_size} must be >= 1")
    require(
        cfg.save_every_steps >= 0,
        f"save_every_steps={cfg.save_every_steps} must be >= 0 (0 = round ends only)",
    )
    require(cfg.report_n >= 0, f"report_n={cfg.report_n} must be >= 0 (0 = no held-out report)")
    require(all(n >= 1 for n in cfg.report_lens), f"report_lens={list(cfg.report_lens)} must be >= 1")
    require(
        cfg.frontier_start is None or cfg.frontier_start >= 0,
        f"frontier_start={cfg.frontier_start} must be >= 0",
    )
    for key, path in [("run", cfg.run), *(("labelers", p) for p in cfg.labelers)]:
        require(
            (Path(path) / CONFIG).is_file(),
            f"{key}: {path} is not a run directory (no {CONFIG}); train it with pretrain.py first",
        )


def out_dir(cfg: SelfImproveConfig) -> Path:
    run = Path(cfg.run)
    return Path(cfg.out) if cfg.out else run.with_name(run.name + "_si")


def _settings(cfg: SelfImproveConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)


def _check_resume(cfg: SelfImproveConfig, out: Path) -> None:
    path = out / SETTINGS
    if not path.exists():
        return
    saved, now = OmegaConf.to_container(OmegaConf.load(path)), _settings(cfg)
    diffs = [k for k in now if k not in RESUMABLE and saved.get(k) != now[k]]
    if diffs:
        key = diffs[0]
        raise ConfigError(
            f"{out} holds a self-improvement run with other settings ({key}: {saved.get(key)!r} there, "
            f"{now[key]!r} now); repeat them to resume, or pick another out=..."
        )


# ---------------------------------------------------------------------------------------------- frontier
def advance(frontier: int, info: dict, step: int, advance_at: float) -> int:
    """The next frontier from a round's own counts (kept / labeled per length past the frontier)."""
    for length in range(frontier + 1, frontier + step + 1):
        labeled, kept = info["labeled"].get(str(length), 0), info["kept"].get(str(length), 0)
        if labeled == 0 or kept / labeled < advance_at:
            break
        frontier = length
    return frontier


# ---------------------------------------------------------------------------------------------- batches
class MixedBatches:
    """batch(step): `n_pseudo` rows drawn (default_rng([seed, step])) from the pseudo-label pool, the rest the
    starting run's own data at that step; pure in the step, right-padded with PAD."""

    def __init__(self, data_cfg, batch: int, pseudo_share: float, seed: int):
        self.n_pseudo = int(round(batch * pseudo_share))
        self.batch_size, self.seed = batch, seed
        self.task_rows = (
            make_batches(data_cfg, batch - self.n_pseudo, seed)[0] if batch > self.n_pseudo else None
        )
        self.pool: list[list[int]] = []

    def batch(self, step: int, pad_id: int) -> torch.Tensor:
        parts = []
        n_pseudo = self.n_pseudo if self.pool else 0
        if self.task_rows is not None:
            parts.append(self.task_rows.batch(step))
        elif not self.pool:
            raise ConfigError(
                "pseudo_share=1 and no pseudo-label was kept yet: lower threshold or pseudo_share"
            )
        if n_pseudo:
            idx = np.random.default_rng([self.seed, 0x5E1F, step]).integers(0, len(self.pool), size=n_pseudo)
            rows = [self.pool[i] for i in idx]
            t = torch.full((n_pseudo, max(map(len, rows))), pad_id, dtype=torch.int64)
            for j, row in enumerate(rows):
                t[j, : len(row)] = torch.as_tensor(row)
            parts.append(t)
        width = max(p.shape[1] for p in parts)
        return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1]), value=pad_id) for p in parts])


# ---------------------------------------------------------------------------------------------- the run
def self_improve(cfg: SelfImproveConfig) -> Path:
    """Run (or resume) the rounds of `cfg` into its out directory; returns it."""
    validate(cfg)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = out_dir(cfg)
    require(
        out.resolve() != Path(cfg.run).resolve(), f"out={out} is the starting run itself; pick another out"
    )
    _check_resume(cfg, out)
    with ExitStack() as cleanup:
        out.mkdir(parents=True, exist_ok=True)
        cleanup.callback(RunLock(out).acquire().release)
        return _rounds(cfg, out, cleanup)


def _start(cfg: SelfImproveConfig, out: Path):
    """The starting run's model (or the child's latest checkpoint) and its resume state."""
    which = str(cfg.checkpoint)
    if which == "best" and checkpoint.best(Path(cfg.run)) is None:
        which = "latest"  # documented: best falls back to latest for a run trained without selection
    start = load(cfg.run, pick_device(str(cfg.device)), checkpoint=which)
    # the child is a run directory: arith.load, arithmetic_eval.py and report.py read it
    if not (out / "tokenizer.json").exists():
        shutil.copyfile(Path(cfg.run) / "tokenizer.json", out / "tokenizer.json")
    fresh = not (out / CONFIG).exists()
    child = OmegaConf.load(Path(cfg.run) / CONFIG if fresh else out / CONFIG)
    if fresh:
        child.run_dir = str(out)
        child.name = out.name
    # the child answers with the vote it labels with: arith.load(child).solve, the grid and the benchmark
    # default to it (an evaluation-only key: config.yaml wins over the checkpoints' model_config.json)
    revote = cfg.vote_ks is not None and list(child.model.get("eval_vote_ks") or []) != list(cfg.vote_ks)
    if revote:
        child.model.eval_vote_ks = list(cfg.vote_ks)
    if fresh or revote:
        checkpoint.atomic_write_text(out / CONFIG, OmegaConf.to_yaml(child))
    checkpoint.atomic_write_text(out / SETTINGS, OmegaConf.to_yaml(_settings(cfg)))
    ckpt = checkpoint.recover(out)
    state = None
    if ckpt is not None:
        checkpoint.load_weights(ckpt, start.model, "raw")
        state = checkpoint.load_trainer_state(ckpt)
    return start, state


@dataclass
class _Position:
    """Where the rounds are: the global step and the trained time (both checkpointed), the frontier (folded again
    from the rounds done on resume); `t0`, the perf_counter when this process started at `start_elapsed`."""

    step: int
    elapsed: float
    frontier: int
    start_elapsed: float = 0.0
    t0: float = 0.0


@dataclass(eq=False)
class _Parts:
    """What the rounds work with, set up once by `_setup`."""

    cfg: SelfImproveConfig
    out: Path
    run_cfg: object  # the starting run's config
    tok: object
    task: object
    model: torch.nn.Module
    device: torch.device  # the model's: labelers, batches and the report follow it
    vote_ks: list[int]
    voters: list
    tcfg: object  # the starting run's train config, lr replaced
    opt: torch.optim.Optimizer
    batches: MixedBatches
    log: MetricsLog
    model_cfg: dict

    @property
    def trained(self) -> int:
        """The longest operand the starting run trained on."""
        return int(self.run_cfg.data.max_len)


def _rounds(cfg: SelfImproveConfig, out: Path, cleanup: ExitStack) -> Path:
    """The outline: set up (resuming), fold the rounds done, then label, train and report each round left."""
    p, pos = _setup(cfg, out, cleanup)
    S = cfg.steps_per_round
    r0 = pos.step // S
    _fold_done(p, pos, r0)
    bar = tqdm(
        total=cfg.rounds * S,
        initial=min(pos.step, cfg.rounds * S),
        unit="step",
        disable=not cfg.progress,
        dynamic_ncols=True,
    )
    cleanup.callback(bar.close)
    pos.t0, pos.start_elapsed = time.perf_counter(), pos.elapsed
    print(
        f"self-improvement of {cfg.run} into {out}: round {r0}, frontier {pos.frontier}, "
        f"votes {voters_text(p.voters)}"
    )
    last = ""
    for r in range(r0, cfg.rounds):
        bar.set_description_str(f"round {r} · frontier {pos.frontier}{last}")
        info = _labels(p, r, pos.frontier)
        tl = time.perf_counter()
        _train_round(p, pos, r, bar)
        last = _end_round(p, pos, r, info, tl)
    return out


def _setup(cfg: SelfImproveConfig, out: Path, cleanup: ExitStack) -> tuple[_Parts, _Position]:
    """The model (resumed when the child has a checkpoint), its voters, optimizer, batches and log."""
    start, state = _start(cfg, out)
    run_cfg, tok, model = start.cfg, start.tok, start.model
    task = task_for(run_cfg.data)
    trained = int(run_cfg.data.max_len)
    frontier = trained if cfg.frontier_start is None else int(cfg.frontier_start)
    vote_ks = own_vote_ks(cfg, start)
    device = next(model.parameters()).device  # cfg.device: labelers, batches and the report follow the model
    voters = make_voters(cfg, start, vote_ks, device)

    tcfg = OmegaConf.merge(run_cfg.train, {"lr": cfg.lr})
    batch_size = cfg.batch_size or int(run_cfg.train.batch_size)
    set_attention_impl(model, run_cfg.train.attention)
    model.train()
    opt = build_optimizer(model, tcfg)
    step, elapsed = 0, 0.0
    if state is not None:
        load_optimizer_state(opt, state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        set_rng_state(state["rng"])
    else:
        torch.manual_seed(cfg.seed)
    # seeded apart from the run's own stream, so the task rows are not the batches it trained on
    batches = MixedBatches(run_cfg.data, batch_size, cfg.pseudo_share, cfg.seed + 7919)
    log = MetricsLog(out, step, False, "arith", _settings(cfg))
    cleanup.callback(log.close)
    model_cfg = model_config_dict(model.cfg, tok)
    L.clean_partial(out)
    parts = _Parts(
        cfg, out, run_cfg, tok, task, model, device, vote_ks, voters, tcfg, opt, batches, log, model_cfg
    )
    return parts, _Position(step, elapsed, frontier)


def _fold_done(p: _Parts, pos: _Position, r0: int) -> None:
    """The pool and the frontier of the rounds done: folded from their stored counts."""
    cfg = p.cfg
    for r in range(min(r0, cfg.rounds)):
        rows, info = L.load_round(L.round_dir(p.out, r))
        p.batches.pool.extend(rows)
        pos.frontier = advance(pos.frontier, info, cfg.frontier_step, cfg.advance_at)


def _labels(p: _Parts, r: int, frontier: int) -> dict:
    """Round r's labels, added to the pool; stored before any step trains on them (a resume mid-round reads them
    back). Returns the round's counts."""
    cfg = p.cfg
    path = L.round_dir(p.out, r)
    if path.exists():
        rows, info = L.load_round(path)
    else:
        position_needs(p.run_cfg, p.tok, frontier + cfg.frontier_step, frontier + cfg.frontier_step)
        rows, info = label_round(cfg, r, p.task, p.tok, p.voters, frontier, p.trained, path)
    p.batches.pool.extend(rows)
    return info


def _train_round(p: _Parts, pos: _Position, r: int, bar: tqdm) -> None:
    """Round r's steps (or those left of it), logging every 25 and saving every save_every_steps."""
    cfg, S = p.cfg, p.cfg.steps_per_round
    while pos.step < (r + 1) * S:
        lr = cfg.lr * trapezoid((pos.step - r * S) / S, cfg.warmup, cfg.cooldown)
        loss = _train_step(p, pos.step, lr)
        pos.step += 1
        pos.elapsed = pos.start_elapsed + time.perf_counter() - pos.t0
        bar.update(1)
        if pos.step % 25 == 0 or pos.step == (r + 1) * S:
            loss_val = float(loss.detach())
            require(
                math.isfinite(loss_val), f"self-improvement diverged at step {pos.step} (round {r}); lower lr"
            )
            bar.set_postfix(loss=f"{loss_val:.4f}", lr=f"{lr:.1e}", refresh=False)
            p.log.log({"step": pos.step, "round": r, "loss": loss_val, "lr": lr, "elapsed_s": pos.elapsed})
        if cfg.save_every_steps and pos.step % cfg.save_every_steps == 0 and pos.step < (r + 1) * S:
            _checkpoint(p, pos, r)


def _train_step(p: _Parts, step: int, lr: float) -> torch.Tensor:
    """One optimizer step on the batch of `step` at learning rate `lr`; returns the loss, on the device."""
    for group in p.opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    ids = p.batches.batch(step, p.tok.pad_id)
    # the run's train.trim_prompt, its answer positions read on the host as train() reads them
    trim = answer_positions(ids, p.tok) if trims(p.run_cfg, p.device) else None
    loss = forward_loss(p.model, p.model, ids.to(p.device, non_blocking=True), p.run_cfg, p.tok, trim)
    p.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(p.model.parameters(), p.tcfg.clip)
    p.opt.step()
    return loss


def _end_round(p: _Parts, pos: _Position, r: int, info: dict, tl: float) -> str:
    """The report (true answers: for people only), then the round's checkpoint, kept; moves the frontier.
    Returns the progress bar's note of the held-out accuracy. tl: when the round's training started."""
    cfg, tok, task = p.cfg, p.tok, p.task
    acc = (
        heldout(p.model, tok, task, cfg.report_lens, cfg.report_n, cfg.report_seed, p.vote_ks)
        if cfg.report_n
        else {}
    )
    nxt = advance(pos.frontier, info, cfg.frontier_step, cfg.advance_at)
    row = {
        "step": pos.step,
        "round": r,
        "frontier": pos.frontier,
        "next_frontier": nxt,
        "labeled": sum(info["labeled"].values()),
        "kept": sum(info["kept"].values()),
        "kept_share": info["kept_share"],
        "kept_accuracy": info["kept_accuracy"],
        "label_s": info["label_s"],
        "train_s": time.perf_counter() - tl,
        "elapsed_s": pos.elapsed,
        "heldout": {str(k): v for k, v in acc.items()},
    }
    p.log.log(row)
    _checkpoint(p, pos, r, round_end=cfg.steps_per_round)
    if acc:
        plot_rounds(p.out)
    held = " ".join(f"{k}:{100 * v:.0f}%" for k, v in acc.items())
    tqdm.write(
        f"round {r}: frontier {pos.frontier} -> {nxt}, kept {row['kept']}/{row['labeled']} "
        f"(label accuracy {_pct(info['kept_accuracy'])}), held-out {held}"
    )
    pos.frontier = nxt
    return f" · held-out after round {r}: {held}" if held else ""


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _checkpoint(p: _Parts, pos: _Position, r: int, round_end: int = 0) -> None:
    _save(p.out, pos.step, p.model, p.model_cfg, p.opt, pos.elapsed, r, pos.frontier, round_end=round_end)


def _save(out, step, model, model_cfg, opt, elapsed, r, frontier, round_end: int = 0) -> None:
    state = {
        "optimizer": opt.state_dict(),
        "step": step,
        "elapsed": elapsed,
        "tokens": 0,
        "rng": rng_state(),
        "round": r,
        "frontier": frontier,
    }
    checkpoint.save(out, step, model, model_cfg, state, keep_last=0)
    if round_end:  # mid-round resume points of finished rounds go; every round end stays
        for d in checkpoint.step_dirs(out):
            if int(d.name) % round_end and int(d.name) < step:
                shutil.rmtree(d, ignore_errors=True)
