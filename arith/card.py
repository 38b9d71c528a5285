"""The model card (README.md) of an export folder, and the training command that reproduces a run's config."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
from pathlib import Path

from arith.data.tasks import get_task
from arith.files import atomic_write_text

CONFIG_DIR = Path(__file__).resolve().parent / "config"
# values that name places on the training machine, or that follow from other values
MACHINE_KEYS = ("runs_root", "run_dir", "data.root", "data.name")


# ----------------------------------------------------------------------------------------------------------------
# the training command


def flat_keys(tree: dict, prefix: str = "") -> dict:
    """A nested dict flattened to dotted keys, e.g. {"model": {"k": 5}} -> {"model.k": 5}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _value(v) -> str:
    """A value as Hydra's command-line grammar reads it back."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if isinstance(v, (int, float)):
        return repr(v)
    return v if re.fullmatch(r"[\w./-]+", v) else json.dumps(v)


@contextlib.contextmanager
def _hydra():
    """Hydra's compose API on arith's configs, also from inside another running Hydra app."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from arith import schema

    schema.register()
    outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().clear()
        if outer is not None:
            GlobalHydra.instance().initialize(outer)


def train_command(run_cfg: dict) -> str:
    """``python pretrain.py [+experiment=P] name=N k=v ...`` that composes ``run_cfg`` (a resolved
    PretrainConfig as a dict) again: the experiment preset, or none, that needs the fewest overrides."""
    from hydra import compose
    from omegaconf import OmegaConf

    target = {k: v for k, v in flat_keys(run_cfg).items() if k not in (*MACHINE_KEYS, "name")}
    presets = [None, *sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))]
    best: list[str] | None = None
    with _hydra():
        for preset in presets:
            head = [f"+experiment={preset}"] if preset else []
            base = compose("pretrain", overrides=head)
            base = flat_keys(OmegaConf.to_container(base, resolve=True, enum_to_str=True))
            args = head + [f"{k}={_value(v)}" for k, v in target.items() if k not in base or base[k] != v]
            if best is None or len(args) < len(best):
                best = args
    head, rest = (best[:1], best[1:]) if best[:1] and best[0].startswith("+experiment=") else ([], best)
    return shlex.join(["python", "pretrain.py", *head, f"name={_value(str(run_cfg['name']))}", *rest])


# ----------------------------------------------------------------------------------------------------------------
# the card


def _accuracy_table(rows: list[dict], task: str, trained: int) -> list[str]:
    from arith.eval.grid import summary_by_length

    lines = [
        "| operand length L | L x L exact match (%) | mean over cells with max operand = L (%) | cells |",
        "|---|---|---|---|",
    ]
    for length, diag, mean, cells in summary_by_length(rows, task):
        mark = " (trained)" if length <= trained else ""
        diag_text = f"{100 * diag:.1f}" if diag is not None else "-"
        lines.append(f"| {length}{mark} | {diag_text} | {100 * mean:.1f} | {cells} |")
    return lines


def write_card(folder: Path, config: dict) -> Path:
    """README.md of an export folder, from its config.json values and its eval/ results."""
    folder = Path(folder)
    lines = [
        *_front(config),
        *_model_section(config),
        *_training_section(config),
        *_accuracy_section(folder, config),
        *_use_section(config["task"]),
    ]
    path = folder / "README.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def _trained_lengths(config: dict) -> tuple[int, int]:
    data = config["run"]["data"]
    return data["max_len"], data.get("max_len_b") or data["max_len"]


def _front(config: dict) -> list[str]:
    """The front matter, the title and what the model does."""
    model, task = config["model"], config["task"]
    lengths = get_task(task).describe_lengths(*_trained_lengths(config))
    return [
        "---",
        "library_name: arith",
        f"tags: [arith, arithmetic, length-generalization, {task}, {model['abs_pos']}]",
        "---",
        "",
        f"# {config['source_run']}",
        "",
        f"A small transformer trained with arith on **{task}** (reversed digits, least significant first), "
        f"operands of {lengths}.",
        "",
    ]


def _model_section(config: dict) -> list[str]:
    model, train = config["model"], config["run"]["train"]
    chosen = {
        "best": f"the best in the run's selection on lengths {train['select_lens']}",
        "latest": "the run's latest",
        "step": "chosen by step",
    }[config["chosen_as"]]
    weights = (
        f"the exponential moving average of the weights (train.ema={train['ema']})"
        if config["weights"] == "ema"
        else "the raw weights"
    )
    arch = (
        f"width {model['width']}, {model['heads']} heads, FFN {model['ffn']}, {model['block']} block of "
        f"{model['layers']} x {model['recurrences']} (layers x recurrences), input injection "
        f"{model['input_injection']}, positions {model['abs_pos']} (absolute) / {model['rel_pos']} (relative)"
    )
    return [
        "## Model",
        "",
        f"- {config['parameters']:,} parameters: {arch}",
        f"- checkpoint at step {config['step']:,} of {config['run_steps']:,} ({chosen}), "
        f"{config['trained_minutes']:g} minutes of training",
        f"- `model.safetensors` holds {weights}",
        "",
    ]


def _training_section(config: dict) -> list[str]:
    data, train = config["run"]["data"], config["run"]["train"]
    budget = (
        f"{train['budget_minutes']:g} minutes" if train.get("budget_minutes") else f"{train['steps']} steps"
    )
    wall_clock = " (a wall-clock budget: another machine trains a different number of steps)"
    return [
        "## Training",
        "",
        f"Budget {budget}, batch {train['batch_size']}, {train['optimizer']} lr {train['lr']:g}, seed "
        f"{train['seed']}, data seed {data['seed']}. The command that trains this run again"
        f"{wall_clock if train.get('budget_minutes') else ''}:",
        "",
        "```bash",
        config["train_command"],
        "```",
        "",
    ]


def _accuracy_section(folder: Path, config: dict) -> list[str]:
    """The table of the default evaluation settings' rows in eval/, and the heatmaps; or how to make them."""
    from arith.eval.grid import SETTINGS_COLUMNS, read_results

    task = config["task"]
    lines = ["## Accuracy by length (this checkpoint)", ""]
    rows = [r for r in read_results(folder) if r["task"] == task]  # the default evaluation settings' rows
    if rows:
        n = sorted({r["n"] for r in rows})
        plain = rows[0].get("attn_scale") in (None, 1) and rows[0].get("attn_scale_mode") in (None, "const")
        shown = [c for c in SETTINGS_COLUMNS if not (plain and c.startswith("attn_scale"))]
        made = [f"{c}={rows[0][c]}" for c in shown if rows[0].get(c) not in (None, "")]
        lines += _accuracy_table(rows, task, _trained_lengths(config)[0])
        lines += [
            "",
            f"Greedy decoding, exact match of the whole answer, {'/'.join(map(str, n))} problems per cell"
            + (f" ({', '.join(made)})." if made else "."),
        ]
        lines += [""] + [f"![heatmap]({p.name})" for p in sorted(folder.glob(f"heatmap_{task}*.png"))]
    else:
        lines += [
            "Not evaluated with this checkpoint yet: `python arithmetic_eval.py run=THIS_FOLDER eval.a_lens=[1,24]`."
        ]
    if config.get("eval_note"):
        lines += ["", f"Note: {config['eval_note']}."]
    return lines


def _use_section(task: str) -> list[str]:
    return [
        "",
        "## Use",
        "",
        "```python",
        "import arith",
        'run = arith.load("THIS_FOLDER")  # or arith.Run.from_pretrained("user/repo")',
        f'print(run.solve("{get_task(task).example}"))',
        "```",
        "",
    ]
