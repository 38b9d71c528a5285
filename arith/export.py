"""Trained models as self-contained, Hub-style folders: writing them (`arith.runs` opens them and exports a run).

    python scripts/export.py run=runs/quickstart out=exports/quickstart [checkpoint=best|latest|STEP]
    run = arith.load("exports/quickstart")            # or arith.Run.from_pretrained("user/repo")
    run.save_pretrained("elsewhere"); run.push_to_hub("user/repo")

An export folder holds (huggingface_hub's layout: weights, config.json, README.md model card):
    model.safetensors   the weights `arith.load` uses by default: the moving average when the run kept one
    config.json         the model config, the run's resolved config, which checkpoint and which weights these are
    tokenizer.json
    eval/*.csv          the run's grid rows made with this checkpoint and weights, heatmap_<task>.png|pdf of them
    README.md           the model card (arith/card.py)
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from arith import card, checkpoint
from arith.errors import CheckpointError, ConfigError
from arith.files import CONFIG

CONFIG_JSON = "config.json"
EVAL = "eval"
FORMAT = 1  # bump when config.json changes incompatibly


def is_export(path: str | Path) -> bool:
    """An export folder: a config.json and no run config.yaml."""
    path = Path(path)
    return (path / CONFIG_JSON).is_file() and not (path / CONFIG).exists()


def read_config(path: str | Path) -> dict:
    file = Path(path) / CONFIG_JSON
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {file}: {e}") from None
    if config.get("model_type") != "arith" or config.get("arith_format") != FORMAT:
        raise CheckpointError(
            f"{file} is not an arith export (model_type arith, arith_format {FORMAT}); export with scripts/export.py"
        )
    return config


# ----------------------------------------------------------------------------------------------------------------
# writing


def _chosen_as(run) -> str:
    """How the checkpoint was picked: best, latest or step (for a run directory); kept from an export."""
    if is_export(run.run_dir):
        return read_config(run.run_dir)["chosen_as"]
    best, latest = checkpoint.best(run.run_dir), checkpoint.latest(run.run_dir)
    if best is not None and best.name == run.checkpoint:
        return "best"
    return "latest" if latest is not None and latest.name == run.checkpoint else "step"


def write_model(run, out: Path, eval_note: str | None) -> dict:
    """model.safetensors, tokenizer.json and config.json; returns the config written."""
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.save_weights(run.model, out / checkpoint.WEIGHTS, metadata={"format": "pt"})
    run.tok.save(out)
    if is_export(run.run_dir):  # facts about the source run that an export keeps
        source = read_config(run.run_dir)
        facts = {k: source[k] for k in ("source_run", "run_steps", "trained_minutes", "train_command")}
    else:
        latest = checkpoint.latest(run.run_dir)
        state = checkpoint.load_trainer_state(checkpoint.resolve(run.run_dir, run.checkpoint))
        facts = {
            "source_run": str(run.cfg.name),
            "run_steps": int(latest.name) if latest is not None else run.step,
            "trained_minutes": round(float(state["elapsed"]) / 60, 2),
            "train_command": card.train_command(
                OmegaConf.to_container(run.cfg, resolve=True, enum_to_str=True)
            ),
        }
    config = {
        "model_type": "arith",
        "arith_format": FORMAT,
        "task": str(run.cfg.data.task),
        "step": run.step,
        "chosen_as": _chosen_as(run),
        "weights": run.weights,
        "parameters": run.model.num_params(),
        **facts,
        "eval_note": eval_note,
        "model": checkpoint.model_config_dict(run.model.cfg, run.tok),
        "run": OmegaConf.to_container(run.cfg, resolve=True, enum_to_str=True),
    }
    checkpoint.atomic_write_text(out / CONFIG_JSON, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return config


def _keep_age(src: Path, dst: Path) -> None:
    """Give ``dst`` the times of ``src`` (read_results lets newer files win) but not its mode, as copystat
    would: what an export writes takes the umask, not the mode of the run it came from."""
    st = src.stat()
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_dated(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    _keep_age(src, dst)


def copy_eval(run_dir: Path, out: Path, step: int, weights: str, is_latest: bool) -> str | None:
    """Copy the grid rows made with the checkpoint at ``step`` and these weights into ``out/eval``; returns a note
    for the card.

    A CSV that records its checkpoint (the grid's ``checkpoint`` column, arith/eval/settings.py, or a ``step``
    column) keeps the rows of that step and, where a ``weights`` column says, these weights. One without (written
    before evaluations recorded it) is copied only when ``step`` is the run's latest checkpoint, the one those
    evaluations most likely used.
    """
    files = sorted((Path(run_dir) / EVAL).glob("*.csv"))
    unstamped = []
    for path in files:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header, rows = list(reader.fieldnames or ()), list(reader)
        target = out / EVAL / path.name
        column = next((c for c in ("checkpoint", "step") if c in header), None)
        if column is not None:
            mine = [
                r
                for r in rows
                if (r[column] or "").strip() == str(step) and (r.get("weights") or weights) == weights
            ]
            if not mine:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=header, lineterminator="\n")
                writer.writeheader()
                writer.writerows(mine)
            _keep_age(path, target)
        else:
            unstamped.append(path.name)
            if is_latest:
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_dated(path, target)
    if not unstamped:
        return None
    if is_latest:
        return (
            f"{len(unstamped)} evaluation file(s) record no checkpoint ({', '.join(unstamped)}); they are "
            "included as results of this checkpoint because it is the run's latest"
        )
    return (
        f"{len(unstamped)} evaluation file(s) of the run record no checkpoint and were left out: this "
        "checkpoint is not the run's latest, which they were most likely made with"
    )


def save_pretrained(run, out: str | Path) -> Path:
    """Write ``run`` as an export folder (weights, config.json, tokenizer.json, model card). A run loaded from an
    export brings its evaluation results, heatmaps and notes along."""
    out = Path(out)
    src = Path(run.run_dir)
    from_export = is_export(src)
    same = out.exists() and src.exists() and out.resolve() == src.resolve()
    config = write_model(run, out, read_config(src)["eval_note"] if from_export else None)
    if from_export and not same:
        for path in sorted((src / EVAL).rglob("*")):
            if path.is_file():
                target = out / EVAL / path.relative_to(src / EVAL)
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_dated(path, target)
        for fig in src.glob("heatmap_*"):
            _copy_dated(fig, out / fig.name)
    card.write_card(out, config)
    return out


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise ConfigError("the Hugging Face Hub needs huggingface_hub: pip install 'arith[hub]'") from None
    return huggingface_hub


def push_to_hub(run, repo_id: str, private: bool | None = None, token: str | None = None) -> str:
    """Upload ``save_pretrained``'s folder to the Hub repo ``repo_id`` (created when missing); returns its URL."""
    hub = _hub()
    api = hub.HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(run, tmp)
        api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=f"arith export, step {run.step}")
    return str(url)
