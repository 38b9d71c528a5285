"""Training: the loss falls, checkpoints round-trip, a SIGKILLed run resumes bitwise, bad inputs give errors."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import arith
from arith import checkpoint
from arith.errors import CheckpointError, ConfigError, DataError
from arith.loop_state import own_rng
from arith.tiny import tiny_overrides
from arith.train import lm_loss, progressive_depths, train
from tests.conftest import ROOT

TINY = tiny_overrides("train.threads=1")


def tiny(compose, tmp_path, *extra):
    return compose([*TINY, f"runs_root={tmp_path}", *extra])


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_short_run_lowers_the_loss(compose, tmp_path):
    cfg = tiny(compose, tmp_path, "train.steps=120", "train.log_every=10", "train.warmup=0.05")
    run_dir = train(cfg)
    losses = [row["loss"] for row in metrics(run_dir)]
    assert len(losses) >= 10
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:2]) / 2
    assert (run_dir / "config.yaml").exists() and (run_dir / "tokenizer.json").exists()
    ckpt = checkpoint.latest(run_dir)
    assert ckpt.name == "120"
    assert {p.name for p in ckpt.iterdir()} == {"model.safetensors", "model_config.json", "trainer.pt"}


def test_save_load_gives_identical_logits(compose, tmp_path):
    run_dir = train(tiny(compose, tmp_path, "train.steps=5"))
    run = arith.load(run_dir)
    again = arith.load(run_dir)
    ids = torch.tensor([run.tok.encode("21+43=")])
    assert torch.equal(run.model(ids), again.model(ids))
    weights = load_file(str(checkpoint.latest(run_dir) / "model.safetensors"))
    for name, tensor in run.model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name


def test_budget_can_be_extended_on_resume(compose, tmp_path):
    run_dir = train(tiny(compose, tmp_path, "train.steps=6"))
    assert checkpoint.latest(run_dir).name == "6"
    train(tiny(compose, tmp_path, "train.steps=10"))
    assert checkpoint.latest(run_dir).name == "10"
    assert [row["step"] for row in metrics(run_dir)][-1] <= 10


def test_keep_last_prunes_old_checkpoints(compose, tmp_path):
    run_dir = train(tiny(compose, tmp_path, "train.steps=8", "train.save_every_steps=2", "train.keep_last=2"))
    assert [p.name for p in checkpoint.step_dirs(run_dir)] == ["6", "8"]


def test_useful_tokens_are_the_non_pad_tokens_and_survive_resume(compose, tmp_path):
    """metrics.jsonl's useful_tokens: the non-PAD tokens of every batch trained on (counted here from the batches
    themselves), below the padded `tokens`; resuming continues the count from the checkpoint, and a checkpoint
    written before the count existed restarts it at 0."""
    from arith.data.datasets import make_batches

    cfg = tiny(compose, tmp_path, "train.steps=4", "train.log_every=1")
    run_dir = train(cfg)
    batches, tok = make_batches(cfg.data, cfg.train.batch_size, cfg.train.seed)
    real = [int((batches.batch(step) != tok.pad_id).sum()) for step in range(8)]
    padded = [batches.batch(step).numel() for step in range(8)]
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert r["useful_tokens"] == sum(real[: r["step"]]) < r["tokens"] == sum(padded[: r["step"]])
        assert 0 < r["useful_tokens_per_s"] < r["tokens_per_s"]  # the same window: the ratio of the batches
    ckpt = checkpoint.latest(run_dir)
    assert checkpoint.load_trainer_state(ckpt)["useful_tokens"] == sum(real[:4])
    train(tiny(compose, tmp_path, "train.steps=6", "train.log_every=1"))
    assert [(r["step"], r["useful_tokens"]) for r in metrics(run_dir)[-2:]] == [
        (5, sum(real[:5])),
        (6, sum(real[:6])),
    ]
    ckpt = checkpoint.latest(run_dir)
    state = checkpoint.load_trainer_state(ckpt)
    del state["useful_tokens"]  # as an older arith wrote it
    torch.save(state, ckpt / checkpoint.TRAINER)
    train(tiny(compose, tmp_path, "train.steps=8", "train.log_every=1"))
    last = metrics(run_dir)[-1]
    assert (last["step"], last["useful_tokens"], last["tokens"]) == (8, sum(real[6:8]), sum(padded[:8]))


def test_answer_only_loss_ignores_the_prompt(compose):
    from arith.data.tokenizer import ArithTokenizer
    from arith.schema import Reduction

    tok = ArithTokenizer.build()
    ids = torch.tensor([tok.encode("21+43=64") + [tok.eos_id, tok.pad_id]])
    logits = torch.zeros(1, ids.shape[1] - 1, tok.vocab_size)
    logits_changed = logits.clone()
    logits_changed[0, :4] = torch.randn(4, tok.vocab_size)  # predictions of prompt tokens only
    a = lm_loss(logits, ids, tok, True, Reduction.mean)
    b = lm_loss(logits_changed, ids, tok, True, Reduction.mean)
    assert torch.equal(a, b)
    assert not torch.equal(lm_loss(logits_changed, ids, tok, False, Reduction.mean), a)


def test_answer_only_loss_starts_after_the_last_equals(compose):
    """Sorting's successor hint (`503:a,7:b,14:c=c=a`): the given label and the second '=' are not targets, the
    labels after it are; a row with one '=' keeps exactly the targets it had."""
    from arith.data.tokenizer import ArithTokenizer
    from arith.schema import Reduction

    tok = ArithTokenizer.build()
    hinted = tok.encode("3:a,1:b,2:c=b=c,a") + [tok.eos_id]
    plain = tok.encode("3:a,1:b,2:c=b,c,a") + [tok.eos_id]
    ids = torch.tensor([hinted, plain])
    eq = hinted.index(tok.eq_id)
    for row, first_target in ((0, eq + 3), (1, eq + 1)):  # target index t predicts ids[t + 1]
        for t in range(ids.shape[1] - 1):
            logits = torch.zeros(2, ids.shape[1] - 1, tok.vocab_size)
            base = lm_loss(logits, ids, tok, True, Reduction.mean)
            logits[row, t] = torch.randn(tok.vocab_size)
            changed = not torch.equal(lm_loss(logits, ids, tok, True, Reduction.mean), base)
            assert changed == (t + 1 >= first_target), (row, t)


def test_each_rank_resumes_from_its_own_rng_state_when_the_world_is_the_same():
    """`rng_ranks` (every rank's state, saved by a multi-rank run) serves a resume of the same world size; one
    process, a checkpoint without it and a resume on another world size take rank 0's `rng`."""
    states = [{"torch": torch.full((2,), r)} for r in range(3)]
    multi = {"rng": states[0], "rng_ranks": states}
    assert own_rng(multi, 2, 3) is states[2] and own_rng(multi, 0, 3) is states[0]
    assert own_rng(multi, 1, 2) is states[0], "another world size: rank 0's"
    assert own_rng({"rng": states[0]}, 1, 3) is states[0], "a checkpoint from before rng_ranks"
    assert own_rng({"rng": states[0]}, 0, 1) is states[0]


def test_per_sample_reduction_is_a_mean_of_row_means():
    from arith.data.tokenizer import ArithTokenizer
    from arith.schema import Reduction

    tok = ArithTokenizer.build()
    rows = [tok.encode("1+1=2") + [tok.eos_id] + [tok.pad_id] * 4, tok.encode("11111+1=21111") + [tok.eos_id]]
    ids = torch.tensor([r + [tok.pad_id] * (14 - len(r)) for r in rows])
    logits = torch.randn(2, ids.shape[1] - 1, tok.vocab_size)
    per_row = []
    for i in range(2):
        t = ids[i, 1:]
        keep = (t != tok.pad_id) & (torch.cumsum(ids[i, :-1] == tok.eq_id, 0) > 0)
        per_row.append(torch.nn.functional.cross_entropy(logits[i][keep], t[keep]))
    expected = (per_row[0] + per_row[1]) / 2
    assert torch.allclose(lm_loss(logits, ids, tok, True, Reduction.per_sample), expected)


def test_progressive_depths_stay_in_range():
    torch.manual_seed(0)
    draws = [progressive_depths(8, 4, True) for _ in range(500)]
    assert all(0 <= n <= 7 and 1 <= k <= min(8 - n, 4) for n, k in draws)
    assert {n for n, _ in draws} == set(range(8))
    unthrottled = [progressive_depths(8, 4, False) for _ in range(500)]
    assert any(n + k > 8 for n, k in unthrottled)


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "override, needle",
    [
        ("model.width=0", "model.width"),
        ("model.heads=3", "model.heads"),
        ("train.batch_size=0", "train.batch_size"),
        ("model.max_pos=8", "model.max_pos"),  # max_k 5 + 3 training digits does not fit 8 rows
        ("train.warmup=0.95", "train.warmup"),
    ],
)
def test_bad_values_raise_a_config_error(compose, tmp_path, override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        train(tiny(compose, tmp_path, "train.steps=2", override))
    assert not any(tmp_path.iterdir()), "nothing is written before the config is valid"


def test_no_end_is_a_config_error(compose, tmp_path):
    with pytest.raises(ConfigError, match="train.steps"):
        train(tiny(compose, tmp_path))


def test_resuming_with_another_model_is_refused(compose, tmp_path):
    train(tiny(compose, tmp_path, "train.steps=2", "name=same"))
    with pytest.raises(ConfigError, match="model"):
        train(tiny(compose, tmp_path, "train.steps=4", "name=same", "model.width=64"))


def test_wrong_task_dataset_is_refused(compose, tmp_path):
    from arith.data.datasets import build

    disk = ["data.streaming=false", f"data.root={tmp_path / 'data'}", "data.n_train=200", "data.name=shared"]
    build(tiny(compose, tmp_path, *disk).data, progress=False)
    with pytest.raises(DataError, match="shared"):
        train(tiny(compose, tmp_path, "train.steps=2", "data=subtraction", "data.max_len=3", *disk))


def test_corrupt_checkpoint_is_an_error_and_left_alone(compose, tmp_path):
    run_dir = train(tiny(compose, tmp_path, "train.steps=2"))
    weights = checkpoint.latest(run_dir) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        train(tiny(compose, tmp_path, "train.steps=4"))
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == before


# ---------------------------------------------------------------------------------------------- CLI
def pretrain(tmp_path, *overrides, **kwargs):
    cmd = [sys.executable, str(ROOT / "pretrain.py"), *TINY, f"runs_root={tmp_path}", *overrides]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


@pytest.mark.parametrize(
    "override, needle",
    [("model.abs_pos=abacs", "abs_pos"), ("model.max_pos=8", "model.max_pos"), ("model.widht=3", "widht")],
)
def test_cli_errors_are_one_line_with_nonzero_exit(tmp_path, override, needle):
    proc = pretrain(tmp_path, "train.steps=2", override)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert needle in err
    assert "Traceback" not in err


def test_sigkill_and_resume_is_bitwise_identical(tmp_path):
    steps = ["train.steps=300", "train.save_every_steps=7", "train.keep_last=2"]
    # the reference: one uninterrupted run
    ref = pretrain(tmp_path / "ref", *steps)
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    # the same run killed at a random moment after its first checkpoint, then restarted (twice)
    rng = random.Random(0)
    victim_root = tmp_path / "victim"
    for _ in range(2):
        proc = pretrain(victim_root, *steps)
        deadline = time.time() + 120
        while not list(victim_root.glob("*/checkpoints/latest")) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))
        assert proc.poll() is None, "the run ended before it could be killed: make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = pretrain(victim_root, *steps)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    (ref_dir,) = (tmp_path / "ref").iterdir()
    (victim_dir,) = victim_root.iterdir()
    a = load_file(str(checkpoint.latest(ref_dir) / "model.safetensors"))
    b = load_file(str(checkpoint.latest(victim_dir) / "model.safetensors"))
    assert checkpoint.latest(victim_dir).name == "300"
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert [r["step"] for r in metrics(victim_dir)] == [r["step"] for r in metrics(ref_dir)]


def test_wandb_offline_needs_no_login(compose, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_dir = train(tiny(compose, tmp_path, "train.steps=3", "train.wandb=true", "train.log_every=1"))
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert runs and any(p.suffix == ".wandb" for p in runs[0].iterdir())


def test_make_data_cli_writes_a_dataset_once(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "make_data.py"),
        "data=multiplication",
        "data.max_len=3",
        "data.n_train=500",
        f"data.root={tmp_path}",
    ]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    (path,) = tmp_path.iterdir()
    assert {"train", "test"} <= {p.name for p in path.iterdir()} and (path / "tokenizer.json").exists()
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "kept existing" in second.stdout


def test_runs_saved_before_new_config_keys_still_resume(compose, tmp_path):
    run_dir = train(tiny(compose, tmp_path, "train.steps=2"))
    config = run_dir / "config.yaml"
    text = config.read_text()
    assert "  k_per_example: false\n" in text
    config.write_text(text.replace("  k_per_example: false\n", ""))  # as an older arith wrote it
    train(tiny(compose, tmp_path, "train.steps=4"))
    assert checkpoint.latest(run_dir).name == "4"


def test_changing_the_optimizer_on_resume_is_refused(compose, tmp_path):
    train(tiny(compose, tmp_path, "train.steps=2"))
    with pytest.raises(ConfigError, match="optimizer"):
        train(tiny(compose, tmp_path, "train.steps=4", "train.optimizer=lion"))
