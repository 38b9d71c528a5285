"""Opening a run directory (or an export folder) for inference: `load` -> `Run`. Starting one (validation, the
saved config, resume checks) is `arith/start.py`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError, storage_error
from arith.files import CONFIG
from arith.schema import ModelConfig, PretrainConfig

# model keys read only at evaluation, never by training: they may change on resume, and for them the run's
# config.yaml (rewritten by every resume) wins over a checkpoint's model_config.json when a run is loaded
EVAL_ONLY_MODEL_KEYS = ("eval_k", "eval_recurrences", "eval_vote_ks")


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
        from arith.eval.answer import solve

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
