"""Run directories: validation before work starts, the saved config, resume checks, and loading a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from arith import checkpoint
from arith.data.tasks import eval_cell, task_for
from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError, require, storage_error
from arith.schema import ModelConfig, PretrainConfig

CONFIG = "config.yaml"
# keys that define what a run *is*: a resumed run must agree on them. Everything else may change on resume:
# the budget and schedule (steps, budget_minutes, warmup, cooldown), saving, logging, selection (select_*),
# speed settings (threads, compile, attention, bf16) and how the run is evaluated (EVAL_ONLY_MODEL_KEYS).
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
    "data.bucket",
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
# model keys read only at evaluation, never by training: they may change on resume, and for them the run's
# config.yaml (rewritten by every resume) wins over a checkpoint's model_config.json when a run is loaded
EVAL_ONLY_MODEL_KEYS = ("eval_k", "eval_recurrences", "eval_vote_ks")


def validate_pretrain(cfg: PretrainConfig) -> None:
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


def longest_digit_run(ids: np.ndarray, tok: ArithTokenizer) -> int:
    is_digit = tok.is_digit(ids)
    best, run = 0, np.zeros(ids.shape[0], dtype=np.int64)
    for col in range(ids.shape[1]):
        run = np.where(is_digit[:, col], run + 1, 0)
        best = max(best, int(run.max()))
    return best


def position_needs(
    cfg: PretrainConfig,
    tok: ArithTokenizer,
    a_len: int | None = None,
    b_len: int | None = None,
    training: bool = True,
    k: int | None = None,
) -> tuple[int, int]:
    """Longest sequence and digit run of the (a_len, b_len) cell; raises when the position table can't hold them."""
    from arith.model import check_positions

    a = a_len or cfg.data.max_len
    b = b_len or cfg.data.max_len_b or cfg.data.max_len
    probe = eval_cell(task_for(cfg.data), tok, a, b, 8, 0)
    max_tokens, max_digits = int(probe.length.max()), longest_digit_run(probe.ids, tok)
    check_positions(cfg.model, max_tokens=max_tokens, max_digits=max_digits, training=training, k=k)
    return max_tokens, max_digits


def model_config_dict(model_cfg: ModelConfig, tok: ArithTokenizer) -> dict:
    out = OmegaConf.to_container(OmegaConf.structured(model_cfg), resolve=True, enum_to_str=True)
    out["vocab_size"] = tok.vocab_size
    return out


def save_run_config(cfg: PretrainConfig, run_dir: Path, tok: ArithTokenizer) -> None:
    checkpoint.atomic_write_text(run_dir / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    tok.save(run_dir)


def _select(cfg, key: str):
    value = OmegaConf.select(cfg, key)
    return (
        OmegaConf.to_container(value, resolve=True, enum_to_str=True)
        if OmegaConf.is_config(value)
        else (value.value if hasattr(value, "value") else value)
    )


def check_resume_compatible(cfg: PretrainConfig, run_dir: Path) -> None:
    path = Path(run_dir) / CONFIG
    if not path.exists():
        return
    saved = load_config(
        run_dir
    )  # merged onto the schema: keys added since the run started take their defaults
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


def load_config(run_dir: Path) -> PretrainConfig:
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a run directory: no {CONFIG}")
    try:
        saved = OmegaConf.load(path)
    except OSError as e:
        raise storage_error(e, "read", path) from None
    except Exception as e:  # yaml's parser errors
        raise ConfigError(f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    return OmegaConf.merge(OmegaConf.structured(PretrainConfig), saved)


@dataclass
class Run:
    run_dir: Path
    cfg: PretrainConfig
    tok: ArithTokenizer
    model: torch.nn.Module
    step: int
    checkpoint: str = ""  # the folder name (the step) the weights came from
    weights: str = "raw"  # raw | ema

    def solve(self, problem: str, **kwargs) -> str:
        from arith.solve import solve

        return solve(self, problem, **kwargs)

    def save_pretrained(self, out: str | Path) -> Path:
        """Write this run's weights as an export folder (huggingface_hub's layout; see arith/export.py)."""
        from arith.export import save_pretrained

        return save_pretrained(self, out)

    @classmethod
    def from_pretrained(
        cls, name: str | Path, device: str | torch.device = "cpu", revision: str | None = None
    ):
        """From an export folder, a run directory, or a Hugging Face Hub repo id ("user/repo", needs arith[hub])."""
        from arith.export import from_pretrained

        return from_pretrained(name, device, revision)

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None) -> str:
        """Upload `save_pretrained`'s folder to a Hugging Face Hub repo (needs arith[hub] and a login)."""
        from arith.export import push_to_hub

        return push_to_hub(self, repo_id, private, token)


def load(
    run_dir: str | Path,
    device: str | torch.device = "cpu",
    checkpoint: str | int | None = None,
    weights: str | None = None,
) -> Run:
    """A trained run ready for inference: `arith.load(run_dir).solve("12345+678")`.

    checkpoint: "best" | "latest" | a step; None = best when the run has one (train.select_every), else latest.
    weights: "ema" | "raw"; None = ema when the checkpoint holds a moving average (train.ema), else raw.
    run_dir may also be an export folder (scripts/export.py), which holds one checkpoint's weights.
    """
    from arith import checkpoint as ckpts
    from arith.model import build_model

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists() and (run_dir / "config.json").exists():
        from arith.export import load_export

        return load_export(run_dir, device, checkpoint, weights)
    cfg = load_config(run_dir)
    tok = ArithTokenizer.load(run_dir)
    ckpt = ckpts.resolve(run_dir, checkpoint)
    if weights is None:
        weights = "ema" if ckpts.has_ema(ckpt) else "raw"
    saved = ckpts.read_model_config(ckpt)
    saved.pop("vocab_size", None)
    current = OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True)
    saved.update({k: current[k] for k in EVAL_ONLY_MODEL_KEYS if k in current})  # config.yaml wins for these
    model_cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), saved)
    model = build_model(model_cfg, tok)
    ckpts.load_weights(ckpt, model, weights)
    model.to(device).eval()
    return Run(
        run_dir=run_dir,
        cfg=cfg,
        tok=tok,
        model=model,
        step=int(ckpt.name),
        checkpoint=ckpt.name,
        weights=weights,
    )
