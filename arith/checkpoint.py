"""Checkpoints: ``<run_dir>/checkpoints/<step>/`` with weights, model config and trainer state.

Layout of one checkpoint folder:
    model.safetensors   weights of the unwrapped, uncompiled module
    model_config.json   the ModelConfig (+ vocabulary size) needed to rebuild the model
    trainer.pt          optimizer state, counters (step, elapsed seconds, tokens) and RNG states
``checkpoints/latest`` names the newest complete folder. Every write goes to a temporary name first and is
renamed into place, so a run killed at any moment leaves either the old or the new checkpoint, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from arith.errors import CheckpointError

CKPT_DIR = "checkpoints"
LATEST = "latest"
WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model_config.json"
TRAINER = "trainer.pt"


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


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None when the run has none yet."""
    root = Path(run_dir) / CKPT_DIR
    pointer = root / LATEST
    if pointer.exists():
        target = root / pointer.read_text().strip()
        if not target.is_dir():
            raise CheckpointError(f"{pointer} names {target.name}, which does not exist")
        return target
    dirs = step_dirs(run_dir)
    return dirs[-1] if dirs else None


def save(
    run_dir: Path, step: int, model: torch.nn.Module, model_config: dict, trainer_state: dict, keep_last: int
) -> Path:
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / str(step)
    if not final.exists():
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{step}-"))
        save_model(model, str(tmp / WEIGHTS))
        (tmp / MODEL_CONFIG).write_text(json.dumps(model_config, indent=2, sort_keys=True))
        torch.save(trainer_state, tmp / TRAINER)
        os.replace(tmp, final)
    atomic_write_text(root / LATEST, final.name)
    for old in step_dirs(run_dir)[:-keep_last] if keep_last > 0 else []:
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


def load_weights(ckpt: Path, model: torch.nn.Module) -> None:
    path = Path(ckpt) / WEIGHTS
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except Exception as e:  # safetensors raises several types for truncated or garbled files
        raise CheckpointError(f"corrupt checkpoint {path}: {type(e).__name__}: {e}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
        )


def load_trainer_state(ckpt: Path) -> dict:
    path = Path(ckpt) / TRAINER
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"corrupt checkpoint {path}: {type(e).__name__}: {e}") from None
