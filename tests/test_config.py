"""Config surface: every option composes, typos are errors, option files match the registries."""

import re
import shlex

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from arith.data.tasks import TASKS
from arith.schema import AbsPos, RelPos, Task
from tests.conftest import CONFIG_DIR, ROOT


def options(group):
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def test_data_options_are_the_task_registry():
    assert options("data") == sorted(TASKS) == sorted(t.value for t in Task)


@pytest.mark.parametrize("task", options("data"))
def test_every_data_option_composes(compose, task):
    cfg = compose([f"data={task}"])
    assert cfg.data.task == Task(task)


@pytest.mark.parametrize("model", options("model"))
def test_every_model_option_composes(compose, model):
    cfg = compose([f"model={model}"])
    assert cfg.model.width > 0


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(compose, experiment):
    cfg = compose([f"+experiment={experiment}"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert cfg.train.steps or cfg.train.budget_minutes


@pytest.mark.parametrize("abs_pos", [p.value for p in AbsPos])
@pytest.mark.parametrize("rel_pos", [p.value for p in RelPos])
def test_position_slots_compose(compose, abs_pos, rel_pos):
    cfg = compose([f"model.abs_pos={abs_pos}", f"model.rel_pos={rel_pos}"])
    assert cfg.model.abs_pos.value == abs_pos and cfg.model.rel_pos.value == rel_pos


def shell_lines():
    for path in sorted((ROOT / "shells").glob("*.sh")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "pretrain.py" in line and not line.lstrip().startswith("#"):
                yield pytest.param(line, id=f"{path.stem}:{number}")


@pytest.mark.parametrize("line", list(shell_lines()))
def test_every_shell_line_composes(compose, line):
    line = line.split("#")[0].replace(
        "$PRESET", "quickstart_subtraction"
    )  # shells/quickstart.sh's task preset
    line = re.sub(r"\$\{?\w+\}?", "0", line)  # shell variables (seeds, run roots) -> a value
    words = shlex.split(line)
    args = [w for w in words[words.index("pretrain.py") + 1 :] if "=" in w]
    presets = [a for a in args if a.startswith("+experiment=")]
    assert len(presets) == 1, "each line is one preset ..."
    assert len(args) - 1 <= 5, "... plus at most 5 overrides"
    cfg = compose(args)
    OmegaConf.to_container(cfg, resolve=True)


def test_unknown_key_is_an_error(compose):
    with pytest.raises(Exception) as err:
        compose(["model.widht=64"])
    assert "widht" in str(err.value)


def test_unknown_choice_lists_valid_ones(compose):
    with pytest.raises(Exception) as err:
        compose(["model.abs_pos=abacs"])
    message = f"{err.value} {err.value.__cause__}"
    assert "abacus" in message and "learned" in message


def test_wrong_type_is_an_error(compose):
    with pytest.raises(Exception):
        compose(["model.width=wide"])


def test_typed_config_rejects_assignment_of_unknown_keys(compose):
    cfg = compose([])
    with pytest.raises((ConfigKeyError, ValidationError, AttributeError)):
        cfg.train.stpes = 3


def test_run_dir_is_named_from_config_values(compose, monkeypatch):
    monkeypatch.delenv("ARITH_RUNS", raising=False)
    cfg = compose(["model.abs_pos=learned", "model.rel_pos=fire", "train.seed=3"])
    assert cfg.run_dir.startswith("runs/")
    assert "learned-fire" in cfg.name and cfg.name.endswith("_s3")
