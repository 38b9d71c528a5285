"""Export: one checkpoint as a self-contained folder that loads anywhere with the same logits and answers."""

import json
import shlex
import shutil
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

import arith
from arith import checkpoint
from arith.card import MACHINE_KEYS, flat_keys, train_command
from arith.errors import CheckpointError, ConfigError
from arith.eval.grid import read_results
from arith.eval.runner import run_grid
from arith.eval.settings import default_settings
from arith.runs import export
from tests.conftest import ROOT

PROMPTS = ["3+4=", "9+9=", "0+7=", "21+43="]
PROBLEMS = ["3+4", "9+9", "5+8", "6+0"]


def outputs(run):
    """Logits of fixed prompts and answers to fixed problems."""
    with torch.no_grad():
        logits = [run.model(torch.tensor([run.tok.encode(p)])) for p in PROMPTS]
    return logits, [run.solve(p) for p in PROBLEMS]


@pytest.fixture
def run_dir(tiny_adder, tmp_path):
    """A copy of the tiny adder, for tests that add evaluation results to it."""
    run_dir = tmp_path / "tiny_adder"
    shutil.copytree(tiny_adder, run_dir)
    return run_dir


def grid(compose, run_dir, *overrides):
    """A real grid (its CSV records the checkpoint, weights and settings); returns the file's name."""
    files = lambda: set((run_dir / "eval").glob("*.csv"))  # noqa: E731
    before = files() if (run_dir / "eval").is_dir() else set()
    cfg = compose(
        [f"run={run_dir}", "eval.a_lens=[1,2]", "eval.n_per_cell=8", *overrides], config_name="eval"
    )
    run_grid(cfg, False)
    (path,) = files() - before
    return path.name


def old_csv(run_dir):
    """A grid CSV as written before evaluations recorded their checkpoint."""
    (run_dir / "eval").mkdir(exist_ok=True)
    (run_dir / "eval" / "addition_sq3-3_s0of1.csv").write_text(
        "task,a_len,b_len,n,correct,acc\naddition,3,3,10,7,0.7\n"
    )
    return "addition_sq3-3_s0of1.csv"


def test_export_loads_in_a_fresh_process_without_the_run_dir(run_dir, tmp_path, compose):
    best = int(checkpoint.best(run_dir).name)
    latest = int(checkpoint.latest(run_dir).name)
    other = 200 if best != 200 else 400
    made_with_best = grid(compose, run_dir)  # the defaults: the best checkpoint, EMA weights
    grid(compose, run_dir, f"eval.checkpoint={other}")
    grid(compose, run_dir, "eval.weights=raw")
    expected = outputs(arith.load(run_dir))

    out = tmp_path / "export"
    proc = subprocess.run(
        [sys.executable, "scripts/export.py", f"run={run_dir}", f"out={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert str(out / "model.safetensors") in proc.stdout
    run_dir.rename(tmp_path / "gone")  # nothing may come from the run directory any more

    code = (
        "import sys, torch, arith\n"
        "from tests.test_export import outputs\n"
        "run = arith.Run.from_pretrained(sys.argv[1])\n"
        "torch.save(outputs(run), sys.argv[2])\n"
    )
    got_path = tmp_path / "got.pt"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out), str(got_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    logits, answers = torch.load(got_path)
    for a, b in zip(logits, expected[0]):
        assert torch.equal(a, b)
    assert answers == expected[1]
    assert any(int(a) == sum(map(int, p.split("+"))) for p, a in zip(PROBLEMS, answers)), "a model that adds"

    config = json.loads((out / "config.json").read_text())
    assert (config["step"], config["chosen_as"], config["weights"]) == (best, "best", "ema")
    assert config["model"]["width"] == 64 and config["run"]["train"]["ema"] == 0.9
    # only the rows made with this checkpoint and these weights travel
    assert [p.name for p in (out / "eval").iterdir()] == [made_with_best]
    rows = read_results(out)
    assert len(rows) == 4 and {(r["checkpoint"], r["weights"]) for r in rows} == {(best, "ema")}
    card = (out / "README.md").read_text()
    assert "addition" in card and "operands of 1 digit" in card
    assert f"{config['parameters']:,} parameters" in card
    assert f"step {best:,} of {latest:,}" in card and "moving average" in card
    assert "| 1 (trained) |" in card and "| 2 | " in card and f"checkpoint={best}, weights=ema" in card
    assert "\n![heatmap](heatmap_addition.png)" in card and (out / "heatmap_addition.png").exists()
    assert "Note:" not in card
    assert "```bash\npython pretrain.py name=tiny_adder " in card


def test_export_of_a_chosen_step_and_what_it_copies(run_dir, tmp_path, compose):
    old = old_csv(run_dir)
    at_200 = grid(compose, run_dir, "eval.checkpoint=200")
    at_400 = grid(compose, run_dir, "eval.checkpoint=400")
    latest = export(run_dir, tmp_path / "latest", "latest")
    first = export(run_dir, tmp_path / "first", 200)
    assert arith.load(latest).step == 400 and arith.load(first).step == 200
    assert json.loads((first / "config.json").read_text())["chosen_as"] in ("best", "step")
    # results that record no checkpoint travel with the latest checkpoint only, and the card says so either way
    assert sorted(p.name for p in (latest / "eval").iterdir()) == sorted([old, at_400])
    assert sorted(p.name for p in (first / "eval").iterdir()) == [at_200]
    assert "because it is the run's latest" in (latest / "README.md").read_text()
    # an export's default evaluation settings: its one checkpoint and weights (read_results' "auto" group)
    assert (default_settings(latest).checkpoint, default_settings(latest).weights) == ("400", "ema")
    assert {r["checkpoint"] for r in read_results(latest)} == {400}
    assert "left out" in (first / "README.md").read_text()
    ids = torch.tensor([[4, 5, 6]])
    assert torch.equal(arith.load(first).model(ids), arith.load(run_dir, checkpoint=200).model(ids))

    with pytest.raises(CheckpointError, match="step 200"):
        arith.load(first, checkpoint=400)
    with pytest.raises(CheckpointError, match="ema"):
        arith.load(first, weights="raw")
    with pytest.raises(ConfigError, match="not empty"):
        export(run_dir, first)
    with pytest.raises(CheckpointError, match="steps saved: 200, 400"):
        export(run_dir, tmp_path / "nope", 300)


def test_save_pretrained_of_an_export_is_the_same_folder(run_dir, tmp_path, compose):
    old_csv(run_dir)
    grid(compose, run_dir, "eval.checkpoint=latest")
    a = export(run_dir, tmp_path / "a", "latest")
    b = arith.load(a).save_pretrained(tmp_path / "b")
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    for name in names:
        if not name.endswith((".png", ".pdf")):
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    # an export is a run for the evaluation scripts too: results land in its eval/ folder, marked with its step
    before = {p.name for p in (b / "eval").iterdir()}
    cfg = compose([f"run={b}", "eval.a_lens=[2,2]", "eval.n_per_cell=4"], config_name="eval")
    assert len(run_grid(cfg, False)) == 1
    (new,) = {p.name for p in (b / "eval").iterdir()} - before
    assert new.startswith("addition_a2-2_b2-2_s0of1_step400_ema")


def command_args(command):
    words = shlex.split(command)
    assert words[:2] == ["python", "pretrain.py"]
    return words[2:]


@pytest.mark.parametrize(
    "overrides, preset",
    [
        (
            ["+experiment=quickstart", "model.width=32", "train.select_lens=[9,11]", "name=qs32"],
            "quickstart",
        ),
        (["data=multiplication", "model.abs_pos=none", "model.rel_pos=fire", "train.lr=0.0003"], None),
    ],
)
def test_card_command_composes_the_same_config(compose, overrides, preset):
    saved = OmegaConf.to_container(compose(overrides), resolve=True, enum_to_str=True)
    args = command_args(train_command(saved))
    assert (args[0] == f"+experiment={preset}") if preset else not args[0].startswith("+")
    again = OmegaConf.to_container(compose(args), resolve=True, enum_to_str=True)
    drop = lambda cfg: {k: v for k, v in flat_keys(cfg).items() if k not in MACHINE_KEYS}  # noqa: E731
    assert drop(again) == drop(saved)
    if preset:  # the preset's own values need no overrides: only ours and the name
        assert sorted(args) == sorted(overrides)


def test_from_pretrained_errors_are_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="not a Hub repo id"):
        arith.Run.from_pretrained(str(tmp_path / "missing" / "deeper"))
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="not an arith export"):
        arith.load(tmp_path)
