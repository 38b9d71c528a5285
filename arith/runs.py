"""Opening a run directory, an export folder or a Hub repo for inference (`load` -> `Run`), and `export`ing one
checkpoint of a run (the folder's files: `arith/export.py`). Starting a run is `arith/start.py`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from arith import card
from arith import export as exports
from arith.data.tokenizer import ArithTokenizer
from arith.errors import CheckpointError, ConfigError, require, storage_error
from arith.files import CONFIG
from arith.schema import ModelConfig, PretrainConfig

# model keys read only at evaluation, never by training: they may change on resume, and for them the run's
# config.yaml (rewritten by every resume) wins over a checkpoint's model_config.json when a run is loaded
EVAL_ONLY_MODEL_KEYS = (
    "eval_k",
    "eval_recurrences",
    "eval_vote_ks",
    "eval_order_votes",
    "eval_label_permutation",
    "eval_order_view_items",
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
        from arith.eval.answer import solve

        return solve(self, problem, **kwargs)

    def solve_many(self, problems, batch_size: int = 256, errors: str = "raise", **kwargs) -> list:
        """The answers to a list of problems, in order, as `solve` gives them one by one, decoded in batches
        (`arith.eval.answer.solve_many`: errors="return" puts each failing problem's error in its place instead
        of raising the first; the other keywords are those of `solve`, plus progress=True for a bar)."""
        from arith.eval.answer import solve_many

        return solve_many(self, problems, batch_size=batch_size, errors=errors, **kwargs)

    def save_pretrained(self, out: str | Path) -> Path:
        """Write this run's weights as an export folder (huggingface_hub's layout; see arith/export.py)."""
        return exports.save_pretrained(self, out)

    @classmethod
    def from_pretrained(
        cls, name: str | Path, device: str | torch.device = "cpu", revision: str | None = None
    ):
        """From an export folder, a run directory, or a Hugging Face Hub repo id ("user/repo", needs arith[hub])."""
        path = Path(name)
        if not path.exists():
            if not _REPO_ID.fullmatch(str(name)):
                raise CheckpointError(f"{name}: no such folder, and not a Hub repo id (user/repo)")
            try:
                path = Path(exports._hub().snapshot_download(repo_id=str(name), revision=revision))
            except ConfigError:
                raise
            except Exception as e:  # offline, no such repo, no access: one line
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise CheckpointError(
                    f"{name}: no such folder, and the Hugging Face Hub gave {type(e).__name__}: {first}"
                ) from None
        return load(path, device)

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None) -> str:
        """Upload `save_pretrained`'s folder to a Hugging Face Hub repo (needs arith[hub] and a login)."""
        return exports.push_to_hub(self, repo_id, private, token)


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


def load_export(
    path: str | Path,
    device: str | torch.device = "cpu",
    which: str | int | None = None,
    weights: str | None = None,
) -> Run:
    """The Run in an export folder: ``arith.load(path)`` calls this for folders without a run config.yaml."""
    from arith import checkpoint as ckpts
    from arith.model import build_model

    path = Path(path)
    config = exports.read_config(path)
    step, chosen = config["step"], config["chosen_as"]
    if which not in (None, "auto", chosen, str(step), step):
        raise CheckpointError(
            f"{path} is an export of one checkpoint (step {step}, the run's {chosen}); checkpoint={which!r} is not in it"
        )
    if weights not in (None, config["weights"]):
        raise CheckpointError(
            f"{path} holds only the {config['weights']} weights; weights={weights!r} is not in it"
        )
    saved = dict(config["model"])
    saved.pop("vocab_size", None)
    tok = ArithTokenizer.load(path)
    model = build_model(OmegaConf.merge(OmegaConf.structured(ModelConfig), saved), tok)
    ckpts.load_weights(path, model, "raw")  # the folder's one model.safetensors
    model.to(device).eval()
    cfg = OmegaConf.merge(OmegaConf.structured(PretrainConfig), config["run"])
    return Run(
        run_dir=path,
        cfg=cfg,
        tok=tok,
        model=model,
        step=step,
        checkpoint=str(step),
        weights=config["weights"],
    )


def export(run_dir: str | Path, out: str | Path, which: str | int | None = None) -> Path:
    """One checkpoint of a run (default: best when the run has one, else latest) as an export folder."""
    from arith import checkpoint as ckpts

    run_dir, out = Path(run_dir), Path(out)
    require(
        not out.exists() or not any(out.iterdir()), f"out={out} exists and is not empty; pick a new folder"
    )
    run = load(run_dir, checkpoint=which)
    latest = ckpts.latest(run_dir)
    note = exports.copy_eval(
        run_dir, out, run.step, run.weights, latest is not None and latest.name == run.checkpoint
    )
    config = exports.write_model(run, out, note)
    if any((out / exports.EVAL).glob("*.csv")):
        from arith.plots import plot_run

        plot_run(out)
    card.write_card(out, config)
    return out


_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
