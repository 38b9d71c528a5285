"""Checkpoints: ``<run_dir>/checkpoints/<step>/`` with weights, model config and trainer state.

Layout of one checkpoint folder:
    model.safetensors   weights of the unwrapped, uncompiled module
    model_config.json   the ModelConfig (+ vocabulary size) needed to rebuild the model
    trainer.pt          optimizer state, counters (step, elapsed seconds, tokens) and RNG states
    ema.safetensors     the exponential moving average of the weights (only with train.ema > 0)
``checkpoints/latest`` names the newest complete folder; ``checkpoints/best`` (only with selection on, see
``train.select_every``) names the one that scored best on the held-out selection lengths. The folder ``best``
names is exempt from ``keep_last`` and not counted in it. Every write goes to a temporary name first and is
renamed into place, so a run killed at any moment leaves either the old or the new checkpoint, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from arith.errors import CheckpointError

CKPT_DIR = "checkpoints"
LATEST = "latest"
BEST = "best"
WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"
MODEL_CONFIG = "model_config.json"
TRAINER = "trainer.pt"

if TYPE_CHECKING:  # torch is imported where weights are read or written: pointers and paths stay light
    import torch


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def step_dirs(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def pointer(run_dir: Path, name: str) -> Path | None:
    """The folder that ``checkpoints/<name>`` (latest or best) names, or None when there is no such pointer."""
    root = Path(run_dir) / CKPT_DIR
    path = root / name
    if not path.exists():
        return None
    target = root / path.read_text().strip()
    if not target.is_dir():
        raise CheckpointError(f"{path} names {target.name}, which does not exist")
    return target


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None when the run has none yet."""
    target = pointer(run_dir, LATEST)
    if target is not None:
        return target
    dirs = step_dirs(run_dir)
    return dirs[-1] if dirs else None


def best(run_dir: Path) -> Path | None:
    """The checkpoint selection picked (``checkpoints/best``), or None when the run has none."""
    return pointer(run_dir, BEST)


def resolve(run_dir: Path, which: str | int | None = None) -> Path:
    """A checkpoint folder by name: ``best``, ``latest``, a step number, or None/``auto`` (best when the run has
    one, else latest). Raises CheckpointError naming what exists when the choice is not there."""
    which = "auto" if which is None else str(which)
    if which == "auto":
        found = best(run_dir) or latest(run_dir)
    elif which == BEST:
        found = best(run_dir)
        if found is None:
            raise CheckpointError(
                f"{run_dir} has no best checkpoint (train with train.select_every > 0 and train.select_lens); "
                "use checkpoint=latest"
            )
    elif which == LATEST:
        found = latest(run_dir)
    elif which.isdigit():
        found = Path(run_dir) / CKPT_DIR / str(int(which))
        if not found.is_dir():
            have = ", ".join(p.name for p in step_dirs(run_dir)) or "none"
            raise CheckpointError(f"{run_dir} has no checkpoint at step {which}; steps saved: {have}")
    else:
        raise CheckpointError(f"checkpoint={which!r} unknown; valid: best, latest, auto or a step number")
    if found is None:
        raise CheckpointError(f"{run_dir} has no checkpoint yet: train it first")
    return found


def save(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    model_config: dict,
    trainer_state: dict,
    keep_last: int,
    ema_model: torch.nn.Module | None = None,
    is_best: bool = False,
) -> Path:
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / str(step)
    if not final.exists():
        import torch
        from safetensors.torch import save_model

        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{step}-"))
        save_model(model, str(tmp / WEIGHTS))
        if ema_model is not None:
            save_model(ema_model, str(tmp / EMA_WEIGHTS))
        (tmp / MODEL_CONFIG).write_text(json.dumps(model_config, indent=2, sort_keys=True))
        torch.save(trainer_state, tmp / TRAINER)
        os.replace(tmp, final)
    atomic_write_text(root / LATEST, final.name)
    if is_best:
        atomic_write_text(root / BEST, final.name)
    kept = best(run_dir)
    candidates = [d for d in step_dirs(run_dir) if kept is None or d.name != kept.name]
    for old in candidates[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for junk in root.glob(".tmp-*"):  # leftovers of a run killed mid-save
        shutil.rmtree(junk, ignore_errors=True)
    return final


def read_model_config(ckpt: Path) -> dict:
    path = Path(ckpt) / MODEL_CONFIG
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None


def has_ema(ckpt: Path) -> bool:
    return (Path(ckpt) / EMA_WEIGHTS).exists()


def load_weights(ckpt: Path, model: torch.nn.Module, weights: str = "raw") -> None:
    """Load the raw weights (``model.safetensors``) or their moving average (``ema.safetensors``)."""
    if weights not in ("raw", "ema"):
        raise CheckpointError(f"weights={weights!r} unknown; valid: raw, ema")
    path = Path(ckpt) / (EMA_WEIGHTS if weights == "ema" else WEIGHTS)
    if weights == "ema" and not path.exists():
        raise CheckpointError(
            f"{ckpt} has no {EMA_WEIGHTS} (the run trained with train.ema=0); use weights=raw"
        )
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except Exception as e:  # safetensors raises several types for truncated or garbled files
        raise CheckpointError(f"corrupt checkpoint {path}: {type(e).__name__}: {e}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
        )


def load_trainer_state(ckpt: Path) -> dict:
    import torch

    path = Path(ckpt) / TRAINER
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"corrupt checkpoint {path}: {type(e).__name__}: {e}") from None
