"""Every task's main job end to end at tiny sizes (its preset, training, the grid, the heatmap summary, the report),
and the subtraction and multiplication scratchpads through `solve` on tiny models that learned them."""

import re
import sys

import pytest

import arith
from arith.data.tasks import task_for
from arith.eval.runner import run_grid
from arith.solve import main as solve_main
from arith.train import train
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import plot_grid  # noqa: E402
import report  # noqa: E402

# the preset as shipped, shrunk: a few steps of a tiny model, no selection, no after-training check
SHRINK = [
    "model.width=32",
    "model.heads=2",
    "model.ffn=64",
    "model.recurrences=2",
    "train.steps=3",
    "train.budget_minutes=null",
    "train.select_every=0",
    "train.progress=false",
    "train.threads=1",
    "check_lens=0",
]
# each task's grid (eval.* overrides)
MAIN_JOBS = {
    "subtraction": ["eval.a_lens=[1,3]"],
    "bitwise_or": ["eval.a_lens=[1,3]"],
    "sorting": ["eval.a_lens=[1,2]", "eval.b_lens=[1,3]"],
    "multiplication": ["eval.a_lens=[1,3]"],
}


@pytest.mark.parametrize("task", list(MAIN_JOBS))
def test_each_task_main_job_end_to_end(task, compose, tmp_path, capsys):
    grid = MAIN_JOBS[task]
    cfg = compose([f"+experiment=quickstart_{task}", *SHRINK, f"runs_root={tmp_path}"])
    assert cfg.name == f"quickstart_{task}" and str(cfg.data.task) == task
    run_dir = train(cfg)
    ecfg = compose([f"run={run_dir}", *grid, "eval.n_per_cell=3"], config_name="eval")
    rows = run_grid(ecfg, sorting=task == "sorting")
    assert len(rows) == (6 if task == "sorting" else 9) and all(0 <= r["acc"] <= 1 for r in rows)
    assert plot_grid.main([str(run_dir), "--summary"]) == 0
    assert report.main([str(run_dir)]) == 0
    assert (run_dir / "report" / "report.html").exists()
    assert "accuracy (%) by" in capsys.readouterr().out  # the summary table


def test_addition_preset_buckets_votes_and_takes_later_ties_and_the_other_tasks_keep_their_measured_settings(
    compose,
):
    cfg = compose(["+experiment=quickstart"])
    assert cfg.data.bucket == 8 and list(cfg.model.eval_vote_ks) == [5, 3, 7, 1, 9]
    assert str(cfg.train.select_ties) == "later"
    for task in ("subtraction", "bitwise_or"):  # their README rows were measured before buckets and the vote
        cfg = compose([f"+experiment=quickstart_{task}"])
        assert cfg.data.bucket == 1 and cfg.model.eval_vote_ks is None
        assert cfg.train.cpu_bf16 is None  # bf16 where the CPU has AMX: 3 seeds each (docs/RESULTS.md)
        # OR's earliest 100% selection step missed in bf16; its last step did not (docs/RESULTS.md)
        assert str(cfg.train.select_ties) == ("later" if task == "bitwise_or" else "earlier")
    cfg = compose(["+experiment=quickstart_sorting"])
    assert cfg.model.eval_vote_ks is None  # the offsets' vote did not help
    # the vote over sub-arrays of 4 items, each answer a permutation of the labels, did (docs/RESULTS.md)
    assert cfg.model.eval_order_votes == 3 and cfg.model.eval_order_view_items == 2
    assert cfg.model.eval_label_permutation is True


def test_subtraction_preset_ships_the_scratchpad_with_the_window(compose):
    cfg = compose(["+experiment=quickstart_subtraction"])
    assert str(cfg.data.format) == "scratchpad" and cfg.model.row_window > 0 and cfg.data.max_len == 8
    cfg = compose(["+experiment=quickstart_sorting"])
    assert cfg.model.row_window == 0 and (cfg.data.max_len, cfg.data.max_len_b) == (5, 5)
    assert str(cfg.model.rel_pos) == "fire" and cfg.data.bucket == 8
    assert str(cfg.data.format) == "label_last" and cfg.data.name.endswith("_ll")
    assert cfg.model.item_window is True and cfg.model.answer_window == 0  # each item sees only itself
    assert cfg.model.length_feature is True and cfg.data.length_power == 0  # a label carries log(1 + length)
    assert cfg.model.length_relative is True  # ... against the row's longest number
    assert cfg.model.value_feature == 5 and cfg.model.value_in_length is False  # and its top 5 digits, apart
    assert cfg.train.budget_minutes <= 15
    assert cfg.train.batch_size == 64 and cfg.train.cooldown == 0.5  # twice the steps, half in cooldown
    assert cfg.model.heads == 2 and cfg.model.width == 128  # two heads of 64
    cfg = compose(["+experiment=quickstart_multiplication"])
    assert str(cfg.data.format) == "scratchpad" and cfg.model.row_window == 2
    assert (cfg.data.max_len, cfg.data.max_len_b) == (
        10,
        5,
    )  # long a, short b: T's middle digits see neither end
    assert cfg.model.opener_embedding is True and cfg.model.number_window == 2
    assert list(cfg.model.eval_vote_ks) == [5, 3, 7]  # answers by a majority of three offsets
    assert cfg.train.budget_minutes <= 30
    assert cfg.train.cpu_bf16 is None  # bf16 where the CPU has AMX: 3 seeds (docs/RESULTS.md)


def _tiny_scratchpad_run(task: str, steps: int, root, fmt: str = "scratchpad", extra=()):
    """The session's tiny adder (tests/conftest.py) on a task's one-digit scratchpad: no checkpoints, EMA or
    selection."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from arith import schema
    from tests.conftest import CONFIG_DIR, TINY_ADDER

    schema.register()
    drop = ("name=", "train.steps=", "train.save_every_steps=", "train.ema=", "train.select_")
    overrides = [o for o in TINY_ADDER if not o.startswith(drop)] + [
        f"data={task}",
        f"data.format={fmt}",
        f"train.steps={steps}",
        *extra,
        f"name=tiny_{task}",
        f"runs_root={root}",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return train(hydra_compose("pretrain", overrides=overrides))


@pytest.fixture(scope="module")
def subtracter(tmp_path_factory):
    """A tiny model that learns one-digit subtraction in the scratchpad format (500 steps, about 10 s)."""
    return _tiny_scratchpad_run("subtraction", 500, tmp_path_factory.mktemp("sub_runs"))


def test_scratchpad_round_trips_through_solve_both_signs(subtracter, capsys):
    run = arith.load(subtracter)
    answers = {(a, b): run.solve(f"{a}-{b}") for a in range(10) for b in range(10)}
    assert answers == {(a, b): str(a - b) for a in range(10) for b in range(10)}  # 45 negative, 10 zero
    assert (
        run.solve("3-8", show_work=True) == "(a - b) mod 10^1 = 5 (borrows from the right); sign -; answer -5"
    )
    assert solve_main([str(subtracter), "2-9"]) == 0
    assert capsys.readouterr().out.strip() == "-7"


def test_multiplication_scratchpad_round_trips_through_solve(tmp_path, capsys):
    """A tiny model trained on one-digit products in the scratchpad (800 steps): every output is a well-formed
    scratchpad that `solve` reads back as a number, nearly all of them right, and the work is spelled out."""
    run_dir = _tiny_scratchpad_run("multiplication", 800, tmp_path)
    run = arith.load(run_dir)
    answers = {(a, b): run.solve(f"{a} x {b}") for a in range(10) for b in range(10)}
    assert all(v.isdigit() for v in answers.values())  # none malformed ('?...')
    right = sum(v == str(a * b) for (a, b), v in answers.items())
    assert right >= 97, right
    assert run.solve("3x7", show_work=True) == "T0 = a x 7 = 21; answer 21"
    capsys.readouterr()  # training's own output
    assert solve_main([str(run_dir), "4*6"]) == 0
    assert capsys.readouterr().out.strip() == "24"


@pytest.mark.parametrize("fmt, window", [("label_last", False), ("label_last", True), ("successor", False)])
def test_sorting_label_last_round_trips_through_solve(tmp_path, fmt, window):
    """A tiny run with each label after its number (600 steps, not enough to learn the order), with and without
    the preset's item window and length feature, and with the successor hint: `solve` takes the natural problem,
    prompts the model in the label-last form and returns its labels as written, one per number, from the problem's
    own labels. (The format's order and checking: tests/test_data.py.)"""
    flag = str(window).lower()
    extra = ["data.max_len_b=3", f"model.item_window={flag}", f"model.length_feature={flag}"]
    run_dir = _tiny_scratchpad_run("sorting", 600, tmp_path, fmt, extra)
    run = arith.load(run_dir)
    assert run.cfg.data.name.endswith("_ll" if fmt == "label_last" else "_su")
    assert run.model.item_window is window and (run.model.length_emb is not None) is window
    assert task_for(run.cfg.data).prompt("7, 3, 5") == "7:a,3:b,5:c="
    answers = run.solve_many([f"{a},{b}" for a in range(10) for b in range(10)])
    assert all(re.fullmatch(r"[ab],[ab]", v) for v in answers), answers
    assert re.fullmatch(r"[abc],[abc],[abc]", run.solve("7, 3, 5"))


def test_sorting_values_round_trips_through_solve(tmp_path):
    """A tiny run that writes the sorted items whole (data.format=values, pairs of one-digit numbers, 600 steps):
    `solve` prompts in the direct form and returns the labels of the items the model wrote (every answer well
    formed, most right); `show_work` spells out the values."""
    run_dir = _tiny_scratchpad_run("sorting", 600, tmp_path, "values", ["data.max_len=1", "data.max_len_b=2"])
    run = arith.load(run_dir)
    assert run.cfg.data.name.endswith("_sv")
    assert task_for(run.cfg.data).prompt("7, 3") == "a:7,b:3="
    problems = [f"{a},{b}" for a in range(10) for b in range(10)]
    answers = run.solve_many(problems)
    assert all(re.fullmatch(r"[ab],[ab]|\?.*", v) for v in answers), answers  # labels, or '?' when malformed
    right = sum(v == ("b,a" if int(p[2]) < int(p[0]) else "a,b") for p, v in zip(problems, answers))
    assert right >= 60, right  # 600 steps: learning (chance is half), far from exact
    assert re.fullmatch(r"[ab]=[37], [ab]=[37]; answer [ab],[ab]", run.solve("7,3", show_work=True))
