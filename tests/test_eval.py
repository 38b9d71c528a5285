"""Evaluation end to end: grids resume after SIGKILL, shards union to the grid, solve on a trained tiny model."""

import csv
import importlib.util
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
from omegaconf import OmegaConf

import arith
from arith.errors import CheckpointError, ConfigError, DataError
from arith.eval import settings as eval_settings
from arith.eval.grid import SETTINGS_COLUMNS, read_results
from arith.eval.reach import UntrainedPositionsWarning
from arith.eval.runner import run_grid
from arith.files import CONFIG
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
def adder(tiny_adder, tmp_path_factory):
    """The session's tiny adder of one-digit numbers (tests/conftest.py), copied (these tests write grids into it)
    as a plain run: one set of weights (its EMA ones, which add better than the raw ones after 400 steps) and no
    `best` (EMA and selection are tested in test_selection.py)."""
    import shutil

    from arith import checkpoint as ckpts

    run = shutil.copytree(tiny_adder, tmp_path_factory.mktemp("runs") / "tiny_adder")
    for ema in (run / "checkpoints").glob(f"*/{ckpts.EMA_WEIGHTS}"):
        ema.replace(ema.with_name(ckpts.WEIGHTS))
    for best in (run / "checkpoints").glob(f"{ckpts.BEST}*"):
        best.unlink()
    cfg = OmegaConf.load(run / CONFIG)
    cfg.train.merge_with({"ema": 0.0, "select_every": 0, "select_lens": []})
    OmegaConf.save(cfg, run / CONFIG)
    return run


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
    assert header == [
        "task",
        "a_len",
        "b_len",
        "n",
        "correct",
        "acc",
        "first_correct",
        "first_acc",
        *SETTINGS_COLUMNS,
    ]
    assert all(0 <= r["first_acc"] <= 1 and r["acc"] <= r["first_acc"] for r in rows)


# ------------------------------------------------------------------------------------------- issue 12: settings
def settings_of(path):
    with open(path) as f:
        return {tuple(row[c] for c in SETTINGS_COLUMNS) for row in csv.DictReader(f)}


def test_grid_resumed_with_other_settings_does_not_reuse_rows(adder, compose, capsys):
    args = ("eval.a_lens=[1,3]", "eval.out=settings")
    first = run_grid(eval_cfg(compose, adder, *args), sorting=False)
    step = arith.load(adder).checkpoint
    assert f"checkpoint {step} (raw), k=0, recurrences=1" in capsys.readouterr().out  # the print line
    other = run_grid(eval_cfg(compose, adder, *args, "eval.k=1"), sorting=False)
    assert len(first) == len(other) == 9, "rows made at k=0 are not reused for k=1"
    assert run_grid(eval_cfg(compose, adder, *args), sorting=False) == []  # same settings: all done
    files = sorted(p.name for p in (adder / "settings").glob("*.csv"))
    assert files == [
        f"addition_a1-3_b1-3_s0of1_step{step}_raw_k0_r1.csv",
        f"addition_a1-3_b1-3_s0of1_step{step}_raw_k1_r1.csv",
    ]
    assert len(read_results(adder, out="settings", settings="all")) == 18
    default = read_results(adder, out="settings")  # what a plain load uses: k = model.eval_k = 0
    assert (
        len(default) == 9
        and {r["k"] for r in default} == {0}
        and {r["checkpoint"] for r in default} == {int(step)}
    )
    assert len(read_results(adder, out="settings", settings={"k": 1})) == 9


def test_default_settings_are_those_of_a_plain_load(adder):
    assert eval_settings.default_settings(adder) == eval_settings.for_run(arith.load(adder))


def test_grid_vote_and_scale_are_recorded(adder, compose):
    plain = run_grid(eval_cfg(compose, adder, "eval.a_lens=[1,2]", "eval.out=v1"), sorting=False)
    one = run_grid(
        eval_cfg(compose, adder, "eval.a_lens=[1,2]", "eval.out=v1", "eval.vote_ks=[0]"), sorting=False
    )
    assert one == plain  # a vote over one offset is plain greedy
    cfg = eval_cfg(
        compose, adder, "eval.a_lens=[1,2]", "eval.out=v3", "eval.vote_ks=[0,1,2]", "eval.vote_mode=logits",
        "eval.attn_scale=1.2", "eval.attn_scale_where=first",
    )  # fmt: skip
    assert len(run_grid(cfg, sorting=False)) == 4
    (path,) = (adder / "v3").glob("*.csv")
    assert path.name.endswith("_vote0-1-2-logits_attn1.2-first.csv")
    ((ck, weights, k, r, ks, mode, scale, scale_mode, where, window, orders, perm, views),) = settings_of(
        path
    )
    assert (weights, k, r, ks, mode, scale, scale_mode, where, window, orders, perm, views) == (
        "raw",
        "0",
        "1",
        "0 1 2",
        "logits",
        "1.2",
        "const",
        "first",
        "0",
        "",  # no order vote (sorting's)
        "",  # no label permutation (sorting's)
        "",  # no sub-arrays (sorting's)
    )
    assert ck == arith.load(adder).checkpoint


def test_eval_checkpoint_and_weights_keys(adder, compose):
    rows = run_grid(
        eval_cfg(compose, adder, "eval.a_lens=[1,1]", "eval.out=ck", "eval.checkpoint=latest"), False
    )
    assert len(rows) == 1
    with pytest.raises(CheckpointError, match="no checkpoint at step 7; steps saved"):
        run_grid(
            eval_cfg(compose, adder, "eval.a_lens=[1,1]", "eval.out=ck", "eval.checkpoint=7"), sorting=False
        )
    with pytest.raises(CheckpointError, match="use weights=raw"):
        run_grid(
            eval_cfg(compose, adder, "eval.a_lens=[1,1]", "eval.out=ck", "eval.weights=ema"), sorting=False
        )


@pytest.mark.parametrize(
    "override, needle",
    [
        ("eval.vote_ks=[-1]", "eval.vote_ks=[-1] must be distinct integers >= 0"),
        ("eval.vote_ks=[2,2]", "eval.vote_ks=[2, 2] must be distinct"),
        ("eval.attn_scale=0", "eval.attn_scale=0.0 must be a number > 0"),
        ("eval.attn_scale=-1.5", "eval.attn_scale=-1.5"),
        ("eval.k=-2", "eval.k=-2"),
    ],
)
def test_bad_eval_values_are_one_line_errors(adder, compose, override, needle):
    with pytest.raises(ConfigError) as err:
        run_grid(eval_cfg(compose, adder, "eval.a_lens=[1,1]", "eval.out=bad", override), sorting=False)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "override, valid",
    [
        ("eval.vote_mode=median", ["answer", "logits"]),
        ("eval.attn_scale_mode=square", ["const", "log"]),
        ("eval.attn_scale_where=last", ["all", "first"]),
        ("eval.weights=mean", ["ema", "raw"]),
    ],
)
def test_bad_eval_choices_list_the_valid_ones(compose, override, valid):
    with pytest.raises(Exception) as err:
        compose(["run=x", override], config_name="eval")
    message = f"{err.value} {err.value.__cause__}"
    assert all(v in message for v in valid)


def test_self_improvement_labels_count_as_training_numbers_for_the_warning(adder, tmp_path):
    """A self-improved child trained on pseudo-labels of up to 6 digits at offsets 0..max_k: rows up to 3 + 6 are
    trained, so a 6-digit problem is not warned about, a 7-digit one is, naming the labels."""
    import json
    import shutil

    child = shutil.copytree(adder, tmp_path / "child")
    (child / "pseudo" / "round_0").mkdir(parents=True)
    (child / "pseudo" / "round_0" / "round.json").write_text(json.dumps({"kept": {"5": 4, "6": 2, "9": 0}}))
    run = arith.load(child)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.solve("111111+111111")  # 6 digits + 7-digit answer run at k = 0: rows up to 7 <= 9
        assert not [w for w in caught if issubclass(w.category, UntrainedPositionsWarning)]
        run.solve("111111111+111111111")  # the 9x9 cell: its sums with a carry out read row 10
    (found,) = [str(w.message) for w in caught if issubclass(w.category, UntrainedPositionsWarning)]
    assert (
        "rows up to 9: model.max_k 3 + 6, the longest training number (self-improvement labels included)"
        in found
    )


def test_untrained_rows_warning_in_the_grid_solve_and_api(adder, compose, capsys):
    # max_k 3 + 2 digits (9+9=18): rows up to 5 are trained; 5-digit sums read row 6 at k = 0
    run_grid(eval_cfg(compose, adder, "eval.square=[1,4]", "eval.out=reach"), sorting=False)
    assert "warning" not in capsys.readouterr().err
    run_grid(eval_cfg(compose, adder, "eval.square=[4,6]", "eval.out=reach2"), sorting=False)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(err) == 1 and "rows 6..7" in err[0] and "2 of 3 cells, the shortest (5, 5)" in err[0]
    assert "model.max_k >= 5" in err[0]
    run = arith.load(adder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.solve("1111+1111")
        assert not [w for w in caught if issubclass(w.category, UntrainedPositionsWarning)]
        run.solve("11111+11111")
        run.solve("1111+1111", k=1)  # the offset moves the boundary: row 6 again
    found = [str(w.message) for w in caught if issubclass(w.category, UntrainedPositionsWarning)]
    assert len(found) == 2 and all("row 6" in m for m in found)
    assert solve_main([str(adder), "11111+11111"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: evaluation reads abacus position row 6")


def test_solve_votes_and_names_its_checkpoint(adder, capsys):
    run = arith.load(adder)
    assert (
        run.solve("3+4", vote_ks=[0, 1, 2]) == run.solve("3+4", vote_ks=[0, 1, 2], vote_mode="logits") == "7"
    )
    assert run.solve("9+8", attn_scale=1.0, attn_scale_mode="const") == "17"
    assert solve_main([str(adder), "8+7", "--vote-ks", "0,1,2", "--checkpoint", "latest", "--verbose"]) == 0
    out, err = capsys.readouterr()
    assert (
        out.strip() == "15" and f"checkpoint {run.checkpoint} (raw)" in err and "vote over k=[0, 1, 2]" in err
    )
    assert solve_main([str(adder), "8+7", "--vote-ks", "1,1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: vote_ks=[1, 1] must be distinct") and "\n" not in err


def test_scan_k_scans_offsets_votes_and_scales(adder, capsys):
    spec = importlib.util.spec_from_file_location("scan_k", ROOT / "scripts" / "scan_k.py")
    scan_k = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scan_k)
    args = [str(adder), "--ks", "0,1", "--votes", "0,1,2", "--scales", "1,1.5", "--lens", "1,2", "--n", "4"]
    assert scan_k.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "lengths [1, 2] (--lens)" in lines[0] and f"checkpoint {arith.load(adder).checkpoint}" in lines[0]
    table = [line.split() for line in lines[2:]]
    assert [row[:-2] for row in table] == [
        ["k", "0", "1", "0"], ["k", "0", "1.5", "0"], ["k", "1", "1", "0"], ["k", "1", "1.5", "0"],
        ["vote", "0,1,2", "1", "0"], ["vote", "0,1,2", "1.5", "0"],
    ]  # fmt: skip
    assert scan_k.main([str(adder), "--ks", "0", "--windows", "0,2", "--lens", "1", "--n", "4"]) == 0
    table = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[:-1] for row in table] == [["k", "0", "1", "0"], ["k", "0", "1", "2"]]
    with pytest.raises(SystemExit) as exit_:  # no --lens and no train.select_lens: a one-line error
        scan_k.main([str(adder)])
    assert exit_.value.code == 2 and "train.select_lens" in capsys.readouterr().err


def test_cells_decoded_together_count_as_decoded_alone(adder):
    """evaluate_cells pools problems of equal prompt length across cells (the grid's GPU speed-up): the counts are
    each cell's own, as evaluate_cell gives them, whatever the batch."""
    import arith
    from arith.data.tasks import task_for
    from arith.eval.quick import evaluate_cell, evaluate_cells

    run = arith.load(adder)
    spec = task_for(run.cfg.data)
    cells = [(1, 3), (2, 2), (3, 1), (1, 1), (4, 4), (2, 3)]  # three share a prompt length, two another
    alone = [evaluate_cell(run.model, run.tok, spec, a, b, 24, 7) for a, b in cells]
    for batch in (5, 48, 1000):
        together = evaluate_cells(run.model, run.tok, spec, cells, 24, 7, batch_size=batch)
        assert together == alone
    # trained on 1 digit: 1 x 1 reads more than 4 x 4, so the counts tell cells apart
    assert alone[3]["correct"] > alone[4]["correct"]


def test_grid_groups_share_a_length_sum_and_fill_a_batch():
    from arith.data.spec import Cell
    from arith.eval.runner import groups

    cells = [Cell(a, b) for a in range(1, 6) for b in range(1, 6)]
    got = groups(cells, n=100, batch_size=300)
    assert sorted(c for g in got for c in g) == sorted(cells)
    assert all(len({c.a_len + c.b_len for c in g}) == 1 and len(g) <= 3 for g in got)
    assert [len(g) for g in got] == [
        1,
        2,
        3,
        3,
        1,
        3,
        2,
        3,
        1,
        3,
        2,
        1,
    ]  # sums 2..10: 1,2,3,4,5,4,3,2,1 cells
    assert all(len(g) == 1 for g in groups(cells, n=100, batch_size=64))  # a cell alone fills the batch
