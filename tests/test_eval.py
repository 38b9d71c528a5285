"""Evaluation end to end: grids resume after SIGKILL, shards union to the grid, solve on a trained tiny model."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import arith
from arith.errors import ConfigError, DataError
from arith.eval.grid import read_results
from arith.eval.runner import run_grid
from arith.solve import main as solve_main
from arith.train import train
from tests.conftest import ROOT

TINY = [
    "model.width=64",
    "model.heads=2",
    "model.ffn=128",
    "model.layers=2",
    "model.recurrences=1",
    "model.max_pos=32",
    "model.max_k=3",
    "data.max_len=1",
    "data.streaming=true",
    "train.batch_size=64",
    "train.lr=3e-3",
    "train.steps=1500",
    "train.progress=false",
    "train.threads=1",
    "name=tiny_adder",
]


@pytest.fixture(scope="module")
def adder(tmp_path_factory):
    """A tiny model trained until it adds one-digit numbers (about 10 s on one core)."""
    from hydra import compose, initialize_config_dir

    from arith import schema
    from tests.conftest import CONFIG_DIR

    schema.register()
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("runs")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("pretrain", overrides=[*TINY, f"runs_root={root}"])
    return train(cfg)


def eval_cfg(compose, run_dir, *overrides):
    return compose([f"run={run_dir}", "eval.n_per_cell=8", *overrides], config_name="eval")


def test_solve_answers_problems_of_the_trained_length(adder):
    run = arith.load(adder)
    for a, b in [(3, 4), (9, 9), (0, 7), (5, 8), (6, 0)]:
        assert run.solve(f"{a}+{b}") == str(a + b)


def test_solve_cli_prints_the_answer(adder, capsys):
    assert solve_main([str(adder), "8+7"]) == 0
    assert capsys.readouterr().out.strip() == "15"


@pytest.mark.parametrize(
    "problem, needle",
    [("12a+3", "12a+3"), ("+3", "+3"), ("12x3", "12x3"), ("", "''"), ("1" * 40 + "+1", "max_pos")],
)
def test_solve_rejects_malformed_problems(adder, capsys, problem, needle):
    assert solve_main([str(adder), problem]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "\n" not in err


def test_solve_errors_are_typed(adder):
    run = arith.load(adder)
    with pytest.raises(DataError):
        run.solve("1-2")


def test_shards_union_to_the_whole_grid(adder, compose):
    whole = run_grid(eval_cfg(compose, adder, "eval.a_lens=[1,4]", "eval.out=whole"), sorting=False)
    parts = []
    for shard in range(3):
        cfg = eval_cfg(
            compose, adder, "eval.a_lens=[1,4]", "eval.out=parts", f"eval.shard={shard}", "eval.num_shards=3"
        )
        parts += run_grid(cfg, sorting=False)
    key = lambda r: (r["a_len"], r["b_len"])  # noqa: E731
    assert sorted(map(key, parts)) == sorted(map(key, whole)) and len(set(map(key, parts))) == 16
    assert sorted(parts, key=key) == sorted(whole, key=key)  # same examples, same answers


def test_cached_and_uncached_grids_agree(adder, compose):
    a = run_grid(eval_cfg(compose, adder, "eval.a_lens=[1,3]", "eval.out=cache"), sorting=False)
    b = run_grid(
        eval_cfg(compose, adder, "eval.a_lens=[1,3]", "eval.out=nocache", "eval.cache=false"), sorting=False
    )
    assert a == b


def test_lengths_beyond_the_table_fail_before_any_work(adder, compose):
    with pytest.raises(ConfigError, match="max_pos"):
        run_grid(eval_cfg(compose, adder, "eval.a_lens=[1,40]", "eval.out=toolong"), sorting=False)
    assert not (adder / "toolong").exists()


def test_sort_eval_refuses_an_addition_run(adder, compose):
    with pytest.raises(ConfigError, match="arithmetic_eval.py"):
        run_grid(eval_cfg(compose, adder), sorting=True)


def read_csv(path):
    with open(path) as f:
        return sorted(tuple(row.items()) for row in csv.DictReader(f))


def test_killed_evaluation_resumes_without_redoing_cells(adder, compose):
    args = [f"run={adder}", "eval.a_lens=[1,12]", "eval.n_per_cell=20"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(ROOT / "arithmetic_eval.py"), *args, "eval.out=victim"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    victim = adder / "victim"
    deadline = time.time() + 120
    while not list(victim.glob("*.csv")) and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the evaluation ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(read_results(adder, out="victim"))
    assert 0 < done_before < 144
    resumed = run_grid(compose([*args, "eval.out=victim"], config_name="eval"), sorting=False)
    assert len(resumed) == 144 - done_before, "finished cells are not evaluated again"
    reference = run_grid(compose([*args, "eval.out=reference"], config_name="eval"), sorting=False)
    assert len(reference) == 144
    (a,) = victim.glob("*.csv")
    (b,) = (adder / "reference").glob("*.csv")
    assert read_csv(a) == read_csv(b)


def test_sort_eval_writes_exact_and_first_label_accuracy(compose, tmp_path):
    cfg = compose(
        [
            *TINY[:7],
            "data=sorting",
            "data.max_len=2",
            "data.max_len_b=3",
            "data.streaming=true",
            "train.steps=3",
            "train.progress=false",
            "train.batch_size=8",
            f"runs_root={tmp_path}",
            "name=sorter",
        ]
    )
    run_dir = train(cfg)
    rows = run_grid(eval_cfg(compose, run_dir, "eval.a_lens=[1,2]", "eval.b_lens=[2,4]"), sorting=True)
    assert len(rows) == 6
    (path,) = (run_dir / "eval").glob("sorting_*.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert header == ["task", "a_len", "b_len", "n", "correct", "acc", "first_correct", "first_acc"]
    assert all(0 <= r["first_acc"] <= 1 and r["acc"] <= r["first_acc"] for r in rows)
