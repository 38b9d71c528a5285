"""Selection on held-out longer lengths (checkpoints/best), EMA weights, and choosing them at load time."""

import random
import signal
import time

import pytest
import torch
from safetensors.torch import load_file
from test_train import metrics, pretrain, tiny

import arith
from arith import checkpoint
from arith.errors import CheckpointError, ConfigError
from arith.selection import Selection, make_ema
from arith.train import train

SELECT = ["train.select_every=10", "train.select_lens=[4,5]", "train.select_n=8"]


def test_selection_keeps_the_best_mean_and_the_earlier_of_ties():
    sel = Selection(every=10, lens=(4, 5), n=8, seed=0)
    sequence = [
        (10, 0.1, 0.0),
        (20, 0.5, 0.5),
        (30, 0.2, 0.2),
        (40, 0.4, 0.6),
        (50, 0.9, 0.1),
        (60, 0.0, 1.0),
    ]
    improved = [sel.offer(step, {"4": a, "5": b}) for step, a, b in sequence]
    assert improved == [True, True, False, False, False, False]  # 40, 50 and 60 only tie step 20's 0.5
    assert sel.best_step == 20 and sel.best_score == 0.5 and sel.last_step == 60
    assert sel.offer(70, {"4": 1.0, "5": 0.25}) and sel.best_step == 70
    fresh = Selection(every=10, lens=(4, 5), n=8, seed=0)
    fresh.load_state(sel.state())
    assert (fresh.best_step, fresh.best_score) == (70, 0.625)
    assert sel.due(30) and not sel.due(35) and not Selection(0, (4,), 8, 0).due(10)


def test_selection_ties_later_takes_the_last_step_to_reach_the_best_mean(compose):
    sel = Selection(every=10, lens=(4, 5), n=8, seed=0, ties="later")
    scores = [(10, 0.5, 0.5), (20, 1.0, 1.0), (30, 1.0, 0.5), (40, 1.0, 1.0), (50, 1.0, 1.0), (60, 0.9, 1.0)]
    improved = [sel.offer(step, {"4": a, "5": b}) for step, a, b in scores]
    assert improved == [True, True, False, True, True, False]  # 40 and 50 tie 20's 1.0 and take its place
    assert (sel.best_step, sel.best_score) == (50, 1.0)
    with pytest.raises(ValueError, match="'earlier' or 'later'"):
        Selection(every=10, lens=(4,), n=8, seed=0, ties="middle")
    assert str(compose([]).train.select_ties) == "earlier"  # today's rule stays the default
    assert str(compose(["+experiment=quickstart"]).train.select_ties) == "later"
    with pytest.raises(Exception) as err:
        compose(["train.select_ties=middle"])
    assert "later" in f"{err.value} {err.value.__cause__}"


def test_tiny_run_with_ties_later_names_the_last_tied_step_best(compose, tmp_path):
    """Selection on lengths inside training, which a tiny run reads at 100% from early on: `best` moves on."""
    extra = ["train.steps=60", "train.select_every=10", "train.select_lens=[1]", "train.select_n=4"]
    run_dir = train(tiny(compose, tmp_path, *extra, "train.select_ties=later", "train.save_every_steps=10"))
    rows = [r for r in metrics(run_dir) if "select" in r]
    top = max(r["select_mean"] for r in rows)
    assert checkpoint.best(run_dir).name == str(max(r["step"] for r in rows if r["select_mean"] == top))


def test_ema_with_decay_zero_is_the_raw_weights():
    model = torch.nn.Linear(4, 3)
    ema = make_ema(model, 0.0)
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        ema.update_parameters(model)
        assert torch.equal(ema.module.weight, model.weight)
    slow = make_ema(model, 0.5)
    slow.update_parameters(model)  # the first update copies
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    slow.update_parameters(model)
    assert torch.allclose(slow.module.weight, before + 0.5)


def test_tiny_run_keeps_best_outside_keep_last_and_load_picks_it(compose, tmp_path):
    run_dir = train(tiny(compose, tmp_path, "train.steps=60", "train.keep_last=1", "train.ema=0.9", *SELECT))
    rows = [r for r in metrics(run_dir) if "select" in r]
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]
    assert all(set(r["select"]) == {"4", "5"} and 0 <= r["select_mean"] <= 1 for r in rows)
    means = [r["select_mean"] for r in rows]
    best_step = rows[means.index(max(means))]["step"]  # the first of the maxima
    best = checkpoint.best(run_dir)
    assert best is not None and best.name == str(best_step)
    kept = {p.name for p in checkpoint.step_dirs(run_dir)}
    assert kept == {"60", str(best_step)}  # keep_last=1 counts only the non-best folders
    assert (best / checkpoint.EMA_WEIGHTS).exists()
    run = arith.load(run_dir)
    assert (run.checkpoint, run.weights, run.step) == (str(best_step), "ema", best_step)
    latest = arith.load(run_dir, checkpoint="latest", weights="raw")
    assert (latest.checkpoint, latest.weights) == ("60", "raw")
    raw = load_file(str(checkpoint.latest(run_dir) / checkpoint.WEIGHTS))
    assert all(torch.equal(latest.model.state_dict()[k], v) for k, v in raw.items())
    with pytest.raises(CheckpointError, match="steps saved"):
        arith.load(run_dir, checkpoint=7)
    with pytest.raises(CheckpointError, match="unknown"):
        arith.load(run_dir, checkpoint="newest")


def test_a_run_without_selection_has_no_best(compose, tmp_path):
    run_dir = train(tiny(compose, tmp_path, "train.steps=3"))
    assert checkpoint.best(run_dir) is None
    assert arith.load(run_dir).checkpoint == "3"
    with pytest.raises(CheckpointError, match="no best checkpoint"):
        arith.load(run_dir, checkpoint="best")
    with pytest.raises(CheckpointError, match="ema.safetensors"):
        arith.load(run_dir, weights="ema")


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.ema=1.0", "train.ema"),
        ("train.ema=-0.1", "train.ema"),
        ("train.select_n=0", "train.select_n"),
        ("train.select_every=-1", "train.select_every"),
        ("train.select_lens=[0,3]", "train.select_lens"),
    ],
)
def test_bad_selection_and_ema_values_are_config_errors(compose, tmp_path, override, needle):
    with pytest.raises(ConfigError, match=needle):
        train(tiny(compose, tmp_path, "train.steps=2", override))


def test_selection_needs_lengths(compose, tmp_path):
    with pytest.raises(ConfigError, match="select_lens"):
        train(tiny(compose, tmp_path, "train.steps=2", "train.select_every=5"))


def test_sigkill_and_resume_keeps_best_ema_and_weights_bitwise(tmp_path):
    steps = ["train.steps=160", "train.save_every_steps=7", "train.keep_last=2", "train.ema=0.95", *SELECT]
    ref = pretrain(tmp_path / "ref", *steps)
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    rng = random.Random(1)
    victim_root = tmp_path / "victim"
    proc = pretrain(victim_root, *steps)
    deadline = time.time() + 120
    while not list(victim_root.glob("*/checkpoints/latest")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.1, 0.4))
    assert proc.poll() is None, "the run ended before it could be killed: make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc = pretrain(victim_root, *steps)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    (ref_dir,) = (tmp_path / "ref").iterdir()
    (victim_dir,) = victim_root.iterdir()
    assert checkpoint.best(ref_dir).name == checkpoint.best(victim_dir).name
    for which in (checkpoint.latest, checkpoint.best):
        for name in (checkpoint.WEIGHTS, checkpoint.EMA_WEIGHTS):
            a = load_file(str(which(ref_dir) / name))
            b = load_file(str(which(victim_dir) / name))
            assert all(torch.equal(a[k], b[k]) for k in a), (which.__name__, name)
    select_rows = [(r["step"], r["select"]) for r in metrics(ref_dir) if "select" in r]
    assert select_rows == [(r["step"], r["select"]) for r in metrics(victim_dir) if "select" in r]
