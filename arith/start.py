"""Starting a run: the config validated at the door, what a resumed run must agree on, the saved config (the
run lock is `arith/lock.py`, opening a finished run `arith/runs.py`)."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path

from omegaconf import OmegaConf

from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError, require
from arith.files import CONFIG, atomic_write_text
from arith.runs import EVAL_ONLY_MODEL_KEYS, load_config
from arith.schema import PretrainConfig

# keys that define what a run *is*: a resumed run must agree on them. Everything else may change on resume:
# the budget and schedule (steps, budget_minutes, warmup, cooldown), saving, logging, selection (select_*),
# speed settings (device, threads, compile, attention, bf16) and how the run is evaluated (EVAL_ONLY_MODEL_KEYS).
IDENTITY_KEYS = (
    "model",
    "data.task",
    "data.max_len",
    "data.max_len_b",
    "data.n_train",
    "data.test_frac",
    "data.seed",
    "data.streaming",
    "data.pad_operands",
    "data.format",
    "data.bucket",
    "data.length_power",
    "data.close_frac",
    "train.batch_size",
    "train.seed",
    "train.lr",
    "train.optimizer",
    "train.betas",
    "train.weight_decay",
    "train.clip",
    "train.mask_before_equals",
    "train.loss_reduction",
    "train.embedding_lr_scale",
    "train.ema",
)


def validate_pretrain(cfg: PretrainConfig) -> None:
    """The pretrain app's one check at the door, before any data or model is made: the train and data keys
    here, the model's and the task's own checks called from here (each component owns its rules)."""
    from arith.aux_loss import validate_aux
    from arith.data.tasks import task_for, train_lengths
    from arith.eval.settings import check_label_permutation, check_order_view_items, check_order_votes
    from arith.model.config_checks import validate as validate_model
    from arith.step import reads_answer_only

    t, d = cfg.train, cfg.data
    require(
        bool(t.steps) or bool(t.budget_minutes),
        "set train.steps or train.budget_minutes (> 0): the run needs an end",
    )
    for key, value in [("train.steps", t.steps), ("train.budget_minutes", t.budget_minutes)]:
        require(value is None or value > 0, f"{key}={value} must be > 0 (or null)")
    for key, value in [
        ("train.batch_size", t.batch_size),
        ("train.lr", t.lr),
        ("train.clip", t.clip),
        ("train.keep_last", t.keep_last),
        ("train.log_every", t.log_every),
        ("data.max_len", d.max_len),
        ("data.n_train", d.n_train),
    ]:
        require(value > 0, f"{key}={value} must be > 0")
    require(d.max_len_b is None or d.max_len_b > 0, f"data.max_len_b={d.max_len_b} must be > 0 (or null)")
    require(
        0 <= t.warmup and 0 <= t.cooldown and t.warmup + t.cooldown <= 1,
        f"train.warmup={t.warmup} and train.cooldown={t.cooldown} must be >= 0 and sum to <= 1",
    )
    require(0 <= d.test_frac < 1, f"data.test_frac={d.test_frac} must be in [0, 1)")
    require(
        math.isfinite(d.length_power) and -8 <= d.length_power <= 8,
        f"data.length_power={d.length_power} must be in [-8, 8] (0 = uniform lengths)",
    )
    require(0 <= d.close_frac <= 1, f"data.close_frac={d.close_frac} must be in [0, 1] (0 = off)")
    require(0 <= t.ema < 1, f"train.ema={t.ema} must be in [0, 1) (0 = off)")
    require(t.select_every >= 0, f"train.select_every={t.select_every} must be >= 0 (0 = off)")
    require(t.select_n > 0, f"train.select_n={t.select_n} must be > 0")
    require(
        all(isinstance(L, int) and L > 0 for L in t.select_lens),
        f"train.select_lens={list(t.select_lens)} must be positive lengths",
    )
    require(
        not t.select_every or len(t.select_lens) > 0,
        "train.select_every > 0 needs train.select_lens, e.g. train.select_lens=[10,12]",
    )
    require(0 <= cfg.model.alpha <= 1, f"model.alpha={cfg.model.alpha} must be in [0, 1]")
    require(
        cfg.model.max_backprop is None or cfg.model.max_backprop > 0,
        f"model.max_backprop={cfg.model.max_backprop} must be > 0 (or null)",
    )
    n, R = cfg.model.detach_recurrences, cfg.model.recurrences
    require(
        not isinstance(n, bool) and 0 <= n < R,
        f"model.detach_recurrences={n} must be in 0..{R - 1} (model.recurrences={R}): the last recurrence keeps "
        "its gradient",
    )
    require(
        not t.trim_prompt or reads_answer_only(cfg),
        "train.trim_prompt=true needs train.mask_before_equals=true and model.aux_loss=none: the loss must read "
        "the answer's logits only",
    )
    validate_model(cfg.model)
    validate_aux(cfg.model, d)
    task_for(d).validate_lengths(*train_lengths(d))
    spec = task_for(d)
    check_order_votes(cfg.model.eval_order_votes, "model.eval_order_votes", (spec.name, spec.answer_format))
    check_label_permutation(
        cfg.model.eval_label_permutation, "model.eval_label_permutation", (spec.name, spec.answer_format)
    )
    check_order_view_items(
        cfg.model.eval_order_view_items, "model.eval_order_view_items", (spec.name, spec.answer_format)
    )


def save_run_config(cfg: PretrainConfig, run_dir: Path, tok: ArithTokenizer) -> None:
    atomic_write_text(run_dir / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    tok.save(run_dir)


def _select(cfg, key: str):
    value = OmegaConf.select(cfg, key)
    return (
        OmegaConf.to_container(value, resolve=True, enum_to_str=True)
        if OmegaConf.is_config(value)
        else (str(value) if isinstance(value, Enum) else value)
    )


def check_resume_compatible(cfg: PretrainConfig, run_dir: Path) -> None:
    path = Path(run_dir) / CONFIG
    if not path.exists():
        return
    saved = load_config(run_dir)  # merged onto the schema: keys added since then take their defaults
    for key in IDENTITY_KEYS:
        old, new = _select(saved, key), _select(cfg, key)
        if isinstance(old, dict):
            free = EVAL_ONLY_MODEL_KEYS if key == "model" else ()
            diffs = [
                f"{key}.{k}: {old.get(k)!r} -> {new.get(k)!r}"
                for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k) and k not in free
            ]
        else:
            diffs = [f"{key}: {old!r} -> {new!r}"] if old != new else []
        if diffs:
            raise ConfigError(
                f"{run_dir} holds a different run ({diffs[0]}); pick another name=... "
                "or repeat the original settings to resume"
            )
