"""Sweeps on real Hydra launchers (joblib, submitit's local executor): folders, logs, and results that match
plain runs. Needs arith[cluster]."""

import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from arith import checkpoint
from arith.eval.grid import read_results
from arith.eval.runner import run_grid
from arith.train import train
from tests.conftest import ROOT
from tests.test_train import TINY

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def multirun(script, *args, timeout=300):
    cmd = [sys.executable, str(ROOT / script), "-m", *args]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def sweep_dir(root):
    (found,) = (root / "sweeps").iterdir()  # one sweep, named by its start time
    return found


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_two_job_training_sweep(compose, tmp_path, launcher):
    pytest.importorskip(f"hydra_plugins.hydra_{launcher.split('_')[0]}_launcher")
    root = tmp_path / "runs"
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    had_multirun = (ROOT / "multirun").exists()
    proc = multirun(
        "pretrain.py",
        *TINY,
        "train.steps=5",
        f"runs_root={root}",
        "name=sw_s${train.seed}",
        "train.seed=0,1",
        f"hydra/launcher={launcher}",
        *extra,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert had_multirun or not (ROOT / "multirun").exists(), (
        "sweep folders go under the runs root, not the current directory"
    )
    sweep = sweep_dir(root)
    for num, seed in enumerate((0, 1)):
        log = (sweep / f"{num}_sw_s{seed}" / "pretrain.log").read_text()
        assert f"run {root / f'sw_s{seed}'}:" in log and "stopped at step 5" in log
        assert checkpoint.latest(root / f"sw_s{seed}").name == "5"
    # a sweep job trains exactly like the same run started on its own
    ref = train(
        compose([*TINY, "train.steps=5", f"runs_root={tmp_path / 'ref'}", "name=sw_s1", "train.seed=1"])
    )
    want = load_file(str(checkpoint.latest(ref) / checkpoint.WEIGHTS))
    got = load_file(str(checkpoint.latest(root / "sw_s1") / checkpoint.WEIGHTS))
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_submitit_local_shards_merge_to_the_one_shard_grid(tiny_adder, tmp_path, compose):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    run_dir = tmp_path / "tiny_adder"
    shutil.copytree(tiny_adder, run_dir)
    grid = ["eval.a_lens=[1,3]", "eval.n_per_cell=16"]
    whole = run_grid(compose([f"run={run_dir}", *grid, "eval.out=whole"], config_name="eval"), sorting=False)
    proc = multirun(
        "arithmetic_eval.py",
        f"run={run_dir}",
        *grid,
        "eval.num_shards=2",
        "eval.shard=range(0,2)",
        "hydra/launcher=submitit_local",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((run_dir / "eval").glob("addition_a1-3_b1-3_s*of2_*.csv"))) == 2  # named by settings too
    merged, reference = read_results(run_dir), read_results(run_dir, out="whole")
    assert merged == reference and len(merged) == 9 and len(whole) == 9
    assert (
        0 < sum(r["correct"] for r in merged) < sum(r["n"] for r in merged)
    )  # a grid with something to get right
    sweep = sweep_dir(run_dir)  # inside the run directory
    for shard in (0, 1):
        log = (sweep / f"{shard}_shard{shard}" / "arithmetic_eval.log").read_text()
        assert f"in shard {shard}/2" in log and "mean accuracy" in log


def test_a_failing_sweep_job_logs_its_one_line_error_and_the_others_run(tmp_path):
    root = tmp_path / "runs"
    proc = multirun(
        "pretrain.py", *TINY, "train.steps=3", f"runs_root={root}", "name=lr${train.lr}", "train.lr=-1,0.003"
    )
    assert proc.returncode != 0
    sweep = sweep_dir(root)
    log = (sweep / "0_lr-1.0" / "pretrain.log").read_text()
    assert log.strip() == "error: train.lr=-1.0 must be > 0"
    assert (
        f"error in sweep job 0_lr-1.0: train.lr=-1.0 must be > 0 (log: {sweep / '0_lr-1.0' / 'pretrain.log'})"
        in (proc.stderr)
    )
    assert checkpoint.latest(root / "lr0.003").name == "3", "the other job ran to the end"


@pytest.mark.parametrize("config_name", ["pretrain", "eval"])
@pytest.mark.parametrize("preset, gpus, tasks", [("slurm", 1, 1), ("slurm_eval", 1, 1), ("slurm_ddp", 4, 4)])
def test_slurm_presets_compose_from_both_entry_configs(config_name, preset, gpus, tasks):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    from arith import schema
    from tests.conftest import CONFIG_DIR

    schema.register()
    overrides = [f"hydra/launcher={preset}", "hydra.launcher.partition=gpu", "run=runs/x"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name,
            overrides=overrides[:2] + overrides[2:] * (config_name == "eval"),
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher") and launcher.partition == "gpu"
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (gpus, tasks, 1)
    assert launcher.timeout_min == (240 if preset == "slurm_eval" else 1500)


def quickstart(*args, runs="runs_x"):
    env = {**ENV, "ARITH_DRY_RUN": "1", "ARITH_RUNS": runs}
    cmd = ["bash", str(ROOT / "shells" / "quickstart.sh"), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "args, preset, run, grid",
    [
        ((), "quickstart", "runs_x/quickstart", "arithmetic_eval.py run={run} eval.a_lens=[1,24]"),
        (("addition",), "quickstart", "runs_x/quickstart", "arithmetic_eval.py run={run} eval.a_lens=[1,24]"),
        (
            ("subtraction",),
            "quickstart_subtraction",
            "runs_x/quickstart_subtraction",
            "arithmetic_eval.py run={run} eval.a_lens=[1,24]",
        ),
        (
            ("bitwise_or",),
            "quickstart_bitwise_or",
            "runs_x/quickstart_bitwise_or",
            "arithmetic_eval.py run={run} eval.a_lens=[1,24]",
        ),
        (
            ("multiplication",),
            "quickstart_multiplication",
            "runs_x/quickstart_multiplication",
            "arithmetic_eval.py run={run} eval.a_lens=[1,15]",
        ),
        (
            ("sorting",),
            "quickstart_sorting",
            "runs_x/quickstart_sorting",
            "sort_eval.py run={run} eval.a_lens=[1,15] eval.b_lens=[1,15]",
        ),
    ],
)
def test_quickstart_task_picks_its_preset_run_and_grid(args, preset, run, grid):
    proc = quickstart(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"python pretrain.py +experiment={preset}",
        f"python {grid.format(run=run)} eval.n_per_cell=50",
        f"python scripts/plot_grid.py {run} --summary",
        f"python scripts/report.py {run}",
    ]


def test_quickstart_passes_overrides_and_follows_the_name():
    proc = quickstart("subtraction", "name=x", "train.seed=1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "python pretrain.py +experiment=quickstart_subtraction name=x train.seed=1"
    assert all(line.endswith(("runs_x/x", "runs_x/x --summary")) for line in lines[2:])
    assert "run=runs_x/x " in lines[1]
    proc = quickstart("name=y")  # overrides alone: addition
    assert (
        proc.returncode == 0
        and proc.stdout.splitlines()[0] == "python pretrain.py +experiment=quickstart name=y"
    )
    assert proc.stdout.splitlines()[-1] == "python scripts/report.py runs_x/y"


def test_quickstart_refuses_an_unknown_task():
    proc = quickstart("division")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (
        "error: unknown task 'division'; valid tasks: addition, subtraction, bitwise_or, sorting, multiplication"
    )


def self_improve(*args, seeds="0 1"):
    env = {**ENV, "ARITH_DRY_RUN": "1", "ARITH_RUNS": "runs_x", "SEEDS": seeds}
    cmd = ["bash", str(ROOT / "shells" / "self_improve.sh"), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "args, preset, rounds, lens",
    [
        ((), "quickstart", "rounds=9", "8,16,24,32,40,48,56,64"),
        (("multiplication", "lr=3e-4"), "quickstart_multiplication", "rounds=1", "5,10,15,20,25,30"),
    ],
)
def test_self_improve_shell_trains_each_seed_then_improves_and_benches(args, preset, rounds, lens):
    proc = self_improve(*args)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 5
    for s, (train_line, si_line) in enumerate(zip(lines[0:4:2], lines[1:4:2])):
        name = f"{preset}_s{s}"
        assert (
            train_line
            == f"python pretrain.py +experiment={preset} name={name} runs_root=runs_x train.seed={s}"
        )
        assert si_line.startswith(f"python scripts/self_improve.py run=runs_x/{name} {rounds} ")
        assert si_line.endswith(" lr=3e-4") == (args[1:] == ("lr=3e-4",))
    assert lines[4].startswith(
        f"python scripts/bench_self_improve.py runs_x/{preset}_s0_si runs_x/{preset}_s1_si --lens {lens} --n 100"
    )


def test_self_improve_shell_rejects_an_unknown_task():
    proc = self_improve("sorting")
    assert proc.returncode == 2 and "unknown task 'sorting'" in proc.stderr
