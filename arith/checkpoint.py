"""Checkpoints: ``<run_dir>/checkpoints/<step>/`` with weights, model config and trainer state.

Layout of one checkpoint folder:
    model.safetensors   weights of the unwrapped, uncompiled module
    model_config.json   the ModelConfig (+ vocabulary size) needed to rebuild the model
    trainer.pt          optimizer state, counters (step, elapsed seconds, tokens, useful tokens) and RNG states
    ema.safetensors     the exponential moving average of the weights (only with train.ema > 0)
``checkpoints/latest`` names the newest complete folder; ``checkpoints/best`` (only with selection on, see
``train.select_every``) names the one that scored best on the held-out selection lengths. The folder ``best``
names is exempt from ``keep_last`` and not counted in it. Every write goes to a temporary name first and is
renamed into place, so a run killed at any moment leaves either the old or the new checkpoint, never half of one.

A folder damaged afterwards (a file truncated, deleted or garbled on disk) is found by ``problem`` from the
files' headers and sizes alone. Readers (``resolve``) warn and fall back to the newest intact checkpoint; the
trainer (``recover``, run by the holder of the run's lock) also moves the bad folder aside to
``<step>.corrupt`` and repairs the pointers, so the run goes on from there.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from arith.errors import ArithWarning, CheckpointError, StorageError, storage_error, write_error
from arith.files import atomic_write_text, umask_mode

CKPT_DIR = "checkpoints"
LATEST = "latest"
BEST = "best"
WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"
MODEL_CONFIG = "model_config.json"
TRAINER = "trainer.pt"
CORRUPT_SUFFIX = ".corrupt"

if TYPE_CHECKING:  # torch is imported where weights are read or written: pointers and paths stay light
    import torch


def model_config_dict(model_cfg, tok) -> dict:
    """The model config as a checkpoint records it (model_config.json): plain values, plus the vocabulary size."""
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(OmegaConf.structured(model_cfg), resolve=True, enum_to_str=True)
    out["vocab_size"] = tok.vocab_size
    return out


def step_dirs(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def _pointed(run_dir: Path, name: str) -> Path | None:
    """The folder ``checkpoints/<name>`` names (which may not exist), or None without that pointer."""
    path = Path(run_dir) / CKPT_DIR / name
    try:
        return path.parent / path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise storage_error(e, "read", path) from None


def pointer(run_dir: Path, name: str) -> Path | None:
    """The folder that ``checkpoints/<name>`` (latest or best) names, or None when there is no such pointer."""
    target = _pointed(run_dir, name)
    if target is not None and not target.is_dir():
        raise CheckpointError(f"{Path(run_dir) / CKPT_DIR / name} names {target.name}, which does not exist")
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


# ---------------------------------------------------------------------------------------------- integrity
def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors' bytes: the header's
    largest end offset fixes the file size exactly."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 0 or n > size - 8:
            return f"is truncated ({size} bytes, not even its header)"
        try:
            header = json.loads(f.read(n))
            end = max(
                (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0
            )
        except (ValueError, KeyError, TypeError, IndexError):
            return "has a garbled header"
    if 8 + n + end != size:
        return f"is truncated or padded ({size} bytes where its header needs {8 + n + end})"
    return None


def problem(ckpt: Path, trainer: bool = False, need_ema: bool = False) -> str | None:
    """Why ``ckpt`` is not a usable checkpoint, or None when it is. Reads headers and sizes, not the weights.

    trainer: also check ``trainer.pt`` (a zip archive, whose directory sits at its end); need_ema: require
    ``ema.safetensors`` (otherwise it is checked only when present)."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        return "does not exist"
    names = [WEIGHTS, MODEL_CONFIG] + ([TRAINER] if trainer else [])
    if need_ema or (ckpt / EMA_WEIGHTS).exists():
        names.append(EMA_WEIGHTS)
    try:
        for name in names:
            if not (ckpt / name).is_file():
                return f"has no {name}"
        for name in (WEIGHTS, EMA_WEIGHTS):
            if name in names and (reason := _safetensors_problem(ckpt / name)):
                return f"{name} {reason}"
        try:
            json.loads((ckpt / MODEL_CONFIG).read_text())
        except ValueError:
            return f"{MODEL_CONFIG} is garbled"
        if trainer:
            try:
                zipfile.ZipFile(ckpt / TRAINER).close()
            except zipfile.BadZipFile:
                return f"{TRAINER} is truncated or garbled"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return None


def _newest_intact(run_dir: Path, skip: set[str], **check) -> Path | None:
    for d in reversed(step_dirs(run_dir)):
        if d.name not in skip and problem(d, **check) is None:
            return d
    return None


def _warn(message: str) -> None:
    warnings.warn(message, ArithWarning, stacklevel=3)


def resolve(run_dir: Path, which: str | int | None = None) -> Path:
    """A checkpoint folder by name: ``best``, ``latest``, a step number, or None/``auto`` (best when the run has
    one, else latest). Raises CheckpointError naming what exists when the choice is not there.

    For best, latest and auto a damaged folder (see ``problem``) is skipped with a warning for the newest intact
    one; nothing on disk changes. An explicit step is never swapped: a damaged one raises."""
    run_dir = Path(run_dir)
    which = "auto" if which is None else str(which)
    if which.isdigit():
        found = run_dir / CKPT_DIR / str(int(which))
        if not found.is_dir():
            have = ", ".join(p.name for p in step_dirs(run_dir)) or "none"
            raise CheckpointError(f"{run_dir} has no checkpoint at step {which}; steps saved: {have}")
        if reason := problem(found):
            raise CheckpointError(f"checkpoint {found} {reason}; pick another step or checkpoint=latest")
        return found
    if which == BEST:
        found = _pointed(run_dir, BEST)
        if found is None:
            raise CheckpointError(
                f"{run_dir} has no best checkpoint (train with train.select_every > 0 and train.select_lens); "
                "use checkpoint=latest"
            )
    elif which in (LATEST, "auto"):
        found = (_pointed(run_dir, BEST) if which == "auto" else None) or _pointed(run_dir, LATEST)
        if found is None:
            dirs = step_dirs(run_dir)
            found = dirs[-1] if dirs else None
    else:
        raise CheckpointError(f"checkpoint={which!r} unknown; valid: best, latest, auto or a step number")
    if found is None:
        raise CheckpointError(f"{run_dir} has no checkpoint yet: train it first")
    reason = problem(found)
    if reason is None:
        return found
    fallback = _newest_intact(run_dir, skip={found.name})
    if fallback is None:
        raise CheckpointError(f"checkpoint {found} {reason}, and {run_dir} holds no intact one")
    _warn(f"checkpoint {found} {reason}: using {fallback.name} instead")
    return fallback


def _move_aside(folder: Path) -> Path:
    for i in range(1000):
        dest = folder.with_name(folder.name + CORRUPT_SUFFIX + (f".{i}" if i else ""))
        if not dest.exists():
            os.replace(folder, dest)
            return dest
    raise CheckpointError(f"cannot move {folder} aside: too many {folder.name}{CORRUPT_SUFFIX}* folders")


def recover(run_dir: Path, need_ema: bool = False) -> Path | None:
    """The trainer's resume point: the latest checkpoint or, when that is damaged, the newest intact one.

    Only the holder of the run's lock may call this: every damaged folder tried is moved aside (renamed to
    ``<step>.corrupt``, never deleted) with a warning, and ``latest`` / ``best`` are rewritten to name what is
    left (a lost best is dropped; selection finds a new one). None when the run has no checkpoint yet; raises,
    moving nothing, when checkpoints exist but none is intact."""
    run_dir = Path(run_dir)
    root = run_dir / CKPT_DIR
    target = _pointed(run_dir, LATEST)
    dirs = step_dirs(run_dir)
    if target is None:
        if not dirs:
            return None
        target = dirs[-1]
    check = {"trainer": True, "need_ema": need_ema}
    older = [d for d in reversed(dirs) if not target.name.isdigit() or int(d.name) < int(target.name)]
    bad, chosen = [], None
    for d in [target, *older]:
        reason = problem(d, **check)
        if reason is None:
            chosen = d
            break
        bad.append((d, reason))
    if chosen is None:
        listing = "; ".join(f"{d.name} {r}" for d, r in bad)
        raise CheckpointError(
            f"{root} holds no intact checkpoint ({listing}): pick another name=... to start over"
        )
    for d, reason in bad:
        if d.exists():
            moved = _move_aside(d)
            _warn(f"checkpoint {d} {reason}: moved to {moved.name}, resuming from step {chosen.name}")
    if bad:
        atomic_write_text(root / LATEST, chosen.name)
    best_dir = _pointed(run_dir, BEST)
    if best_dir is not None and (reason := problem(best_dir, **check)):
        if best_dir.exists():
            moved = _move_aside(best_dir)
            reason += f": moved to {moved.name}"
        (root / BEST).unlink()
        _warn(f"best checkpoint {best_dir} {reason}; selection will pick a new best")
    return chosen


# ---------------------------------------------------------------------------------------------- write / read
def _write_failure(e: Exception, path: Path, previous: str) -> StorageError:
    keep = f"; checkpoints/latest still names {previous}" if previous else "; no checkpoint was written"
    return StorageError(f"{write_error(e, path)}{keep}")


def save_weights(model: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """``model``'s weights as a safetensors file, with the mode the umask gives a new file: safetensors writes
    0o600 whatever the umask, which would hide a shared run's weights from the group."""
    from safetensors.torch import save_model

    save_model(model, str(path), metadata=metadata)
    os.chmod(path, umask_mode())


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
    final = root / str(step)
    previous = _pointed(run_dir, LATEST)
    previous_name = previous.name if previous is not None else ""
    if not final.exists():
        import torch
        from safetensors import SafetensorError

        tmp, writing = None, root  # writing: what the error names (the final name, not the temporary one)
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{step}-"))
            os.chmod(tmp, umask_mode(dirs=True))  # mkdtemp's 0o700 would hide the checkpoint from the group
            writing = final / WEIGHTS
            save_weights(model, tmp / WEIGHTS)
            if ema_model is not None:
                writing = final / EMA_WEIGHTS
                save_weights(ema_model, tmp / EMA_WEIGHTS)
            writing = final / MODEL_CONFIG
            (tmp / MODEL_CONFIG).write_text(json.dumps(model_config, indent=2, sort_keys=True))
            writing = final / TRAINER
            torch.save(trainer_state, tmp / TRAINER)
            writing = final
            os.replace(tmp, final)
        except (OSError, RuntimeError, SafetensorError) as e:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise _write_failure(e, writing, previous_name) from None
    # best before latest: a kill between the two must not leave `latest` (whose trainer state already counts
    # this step as the best) beside a `best` that still names an older step; the other way round the resume
    # starts from the older `latest`, repeats the step and writes both again
    if is_best:
        atomic_write_text(root / BEST, final.name)
    atomic_write_text(root / LATEST, final.name)
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
