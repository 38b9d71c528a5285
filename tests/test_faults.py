"""Faults beyond kill -9, with real processes and files: divergence, a second trainer, a full disk, missing or
truncated files, permissions, and damaged checkpoints. Each asserts the exit code, a one-line message and that
what was on disk before is unchanged."""

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import arith
from arith import checkpoint
from arith.errors import ArithWarning, CheckpointError, ConfigError, DataError, DivergedError
from arith.lock import LOCK
from arith.train import train
from tests.conftest import ROOT
from tests.test_train import TINY

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("HYDRA_FULL_ERROR", None)


def run(*args, prefix=(), **kwargs) -> subprocess.CompletedProcess:
    """An entry point in a child process, as a user runs it (no HYDRA_FULL_ERROR)."""
    cmd = [*prefix, sys.executable, *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180, **kwargs)


def pretrain_args(root, *overrides):
    return [ROOT / "pretrain.py", *TINY, f"runs_root={root}", "name=run", *overrides]


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2 and one `error: ...` line holding every needle: no traceback, no Hydra hint (progress bars
    may share stderr)."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr, proc.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def tiny(compose, root, *extra):
    return compose([*TINY, f"runs_root={root}", "name=run", *extra])


# ---------------------------------------------------------------------------------------------- 1. divergence
def test_nonfinite_training_never_reaches_a_checkpoint(tmp_path):
    """lr=1e30 with a save every step: the first steps keep finite (huge) weights, then the loss overflows. That
    save is refused with one line naming the step, and latest stays at the last finite checkpoint."""
    proc = run(*pretrain_args(tmp_path, "train.lr=1e30", "train.steps=10", "train.save_every_steps=1"))
    line = one_error_line(proc, "diverged")
    bad, kept = map(int, re.search(r"not finite at step (\d+) .*latest stays at step (\d+)", line).groups())
    run_dir = tmp_path / "run"
    assert kept == bad - 1 and checkpoint.latest(run_dir).name == str(kept)
    assert [int(d.name) for d in checkpoint.step_dirs(run_dir)][-1] == kept, "nothing saved after it"
    weights = load_file(str(run_dir / "checkpoints" / str(kept) / checkpoint.WEIGHTS))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_the_final_save_is_checked_too(compose, tmp_path):
    """No periodic save: the final one (the path SIGTERM takes) refuses the non-finite weights."""
    with pytest.raises(DivergedError, match="no checkpoint was saved"):
        train(tiny(compose, tmp_path, "train.lr=1e30", "train.steps=4", "train.log_every=100"))
    assert checkpoint.step_dirs(tmp_path / "run") == []


# ---------------------------------------------------------------------------------------------- 2. one trainer
def test_a_second_trainer_fails_at_once_and_a_killed_one_never_blocks(compose, tmp_path):
    run_dir = tmp_path / "run"
    args = pretrain_args(tmp_path, "train.steps=100000", "train.save_every_steps=5")
    first = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (run_dir / "checkpoints" / "latest").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first trainer ended early"
        config = (run_dir / "config.yaml").read_bytes()
        second = run(*args)
        one_error_line(second, f"pid {first.pid}", LOCK)
        assert (run_dir / "config.yaml").read_bytes() == config, "the second trainer wrote nothing"
        assert arith.load(run_dir).step >= 5, "readers work while the run trains"
    finally:
        first.send_signal(signal.SIGKILL)  # leaves its lock file behind, but not its flock
        first.wait()
    step = int(checkpoint.latest(run_dir).name)
    train(tiny(compose, tmp_path, f"train.steps={step}"))  # a third trainer takes the lock at once
    assert f"pid {os.getpid()} " in (run_dir / LOCK).read_text()


# ---------------------------------------------------------------------------------------------- 3. environment
def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # Python ignores SIGXFSZ: writes get EFBIG


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(compose, tmp_path):
    run_dir = train(tiny(compose, tmp_path, "train.steps=2"))
    before = snapshot(run_dir / "checkpoints")
    proc = run(*pretrain_args(tmp_path, "train.steps=4"), preexec_fn=_limit_file_size)
    one_error_line(proc, "cannot write", "checkpoints/4/model.safetensors", "size limit", "still names 2")
    assert snapshot(run_dir / "checkpoints") == before, "the previous checkpoint and latest are untouched"
    assert arith.load(run_dir).step == 2


def test_a_run_without_its_tokenizer_is_one_line(compose, tmp_path):
    run_dir = train(tiny(compose, tmp_path, "train.steps=1"))
    (run_dir / "tokenizer.json").unlink()
    with pytest.raises(DataError, match="tokenizer.json"):
        arith.load(run_dir)
    before = snapshot(run_dir)
    one_error_line(run("-m", "arith.solve", run_dir, "12+34"), "no tokenizer", "tokenizer.json")
    assert snapshot(run_dir) == before


def test_a_truncated_dataset_is_one_line_and_left_as_it_is(compose, tmp_path):
    from arith.data.datasets import build

    disk = ["data.streaming=false", f"data.root={tmp_path / 'data'}", "data.n_train=2000", "data.name=ds"]
    path = build(tiny(compose, tmp_path, *disk).data, progress=False)
    (arrow,) = (path / "train").glob("*.arrow")
    os.truncate(arrow, arrow.stat().st_size // 2)  # in place, as a failed copy leaves it
    before = snapshot(path)
    one_error_line(run(*pretrain_args(tmp_path, "train.steps=2", *disk)), "unreadable", f"rm -r {path}")
    assert snapshot(path) == before and not (tmp_path / "run").exists()


def _unwritable(run_dir: Path) -> tuple[list[str], str]:
    """A command prefix under which ``run_dir`` cannot be written, and the words the error gives. Not root: the
    folder made read-only. Root (whom modes do not stop): a read-only bind mount in a private mount namespace."""
    if os.geteuid() != 0:
        run_dir.chmod(0o555)
        return [], "permission denied"
    mount = 'mount --bind -o ro "$0" "$0" && shift && exec "$@"'
    prefix = ["unshare", "-m", "sh", "-c", mount, str(run_dir), "--"]
    if shutil.which("unshare") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("root needs a read-only bind mount (unshare -m, mount) here, and this machine refuses it")
    return prefix, "read-only"


def test_a_permission_error_is_one_line(compose, tmp_path):
    run_dir = train(tiny(compose, tmp_path, "train.steps=1"))
    before = snapshot(run_dir)
    prefix, words = _unwritable(run_dir)
    try:
        proc = run(
            ROOT / "arithmetic_eval.py",
            f"run={run_dir}",
            "eval.a_lens=[1,1]",
            "eval.n_per_cell=2",
            prefix=prefix,
        )
    finally:
        run_dir.chmod(0o755)
    one_error_line(proc, "cannot write", str(run_dir / "eval"), words)
    assert snapshot(run_dir) == before


# ---------------------------------------------------------------------------------------------- 4. evaluation keys
def test_evaluation_keys_may_change_on_resume_and_take_effect(compose, tmp_path):
    run_dir = train(tiny(compose, tmp_path, "train.steps=2", "model.eval_k=0"))
    # the same step: no new checkpoint, so its model_config.json still says eval_k=0; config.yaml says 3
    train(tiny(compose, tmp_path, "train.steps=2", "model.eval_k=3", "model.eval_recurrences=4"))
    saved = json.loads((checkpoint.latest(run_dir) / checkpoint.MODEL_CONFIG).read_text())
    assert saved["eval_k"] == 0
    loaded = arith.load(run_dir)
    assert loaded.model.eval_k == 3 and loaded.cfg.model.eval_recurrences == 4
    # the schedule, selection and saving may change; what shapes the weights' path may not
    train(tiny(compose, tmp_path, "train.steps=3", "train.warmup=0.5", "train.select_n=10"))
    for changed in [
        "train.weight_decay=0.1",
        "train.clip=1.0",
        "train.betas=[0.8,0.9]",
        "data.test_frac=0.1",
    ]:
        with pytest.raises(ConfigError, match=changed.split("=")[0].replace(".", r"\.")):
            train(tiny(compose, tmp_path, "train.steps=4", changed))


# ---------------------------------------------------------------------------------------------- 5. damaged checkpoints
def test_a_truncated_newest_checkpoint_is_skipped_by_readers_and_moved_aside_by_the_trainer(
    compose, tmp_path
):
    run_dir = train(tiny(compose, tmp_path, "train.steps=6", "train.save_every_steps=2"))
    bad = run_dir / "checkpoints" / "6" / checkpoint.WEIGHTS
    os.truncate(bad, bad.stat().st_size - 100)
    before = snapshot(run_dir)
    # readers: a warning, the newest intact checkpoint, nothing moved
    with pytest.warns(ArithWarning, match="6.*using 4 instead"):
        assert arith.load(run_dir).checkpoint == "4"
    proc = run(ROOT / "arithmetic_eval.py", f"run={run_dir}", "eval.a_lens=[1,1]", "eval.n_per_cell=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    size = bad.stat().st_size
    assert [line for line in proc.stderr.splitlines() if line.startswith("warning: ")] == [
        f"warning: checkpoint {run_dir}/checkpoints/6 {bad.name} is truncated or padded ({size} bytes where "
        f"its header needs {size + 100}): using 4 instead"
    ]
    assert {k: v for k, v in snapshot(run_dir).items() if not k.startswith("eval/")} == before
    # the trainer (the lock holder): moves the folder aside, not deleted, and goes on from step 4
    proc = run(*pretrain_args(tmp_path, "train.steps=8", "train.save_every_steps=2"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "moved to 6.corrupt" in proc.stderr and "from step 4" in proc.stdout
    assert snapshot(run_dir / "checkpoints" / "6.corrupt") == {
        k.removeprefix("checkpoints/6/"): v for k, v in before.items() if k.startswith("checkpoints/6/")
    }
    assert checkpoint.latest(run_dir).name == "8"


def test_a_best_missing_a_file_falls_back_the_same_way(compose, tmp_path):
    run_dir = train(tiny(compose, tmp_path, "train.steps=4", "train.save_every_steps=2"))
    checkpoint.atomic_write_text(run_dir / "checkpoints" / "best", "2")
    (run_dir / "checkpoints" / "2" / checkpoint.MODEL_CONFIG).unlink()
    with pytest.warns(ArithWarning, match=f"has no {checkpoint.MODEL_CONFIG}: using 4"):
        assert arith.load(run_dir).checkpoint == "4"
    with pytest.raises(CheckpointError, match="pick another step"):
        arith.load(run_dir, checkpoint=2)  # an explicit step is never swapped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tiny(compose, tmp_path, "train.steps=5"))
    assert any("best checkpoint" in str(w.message) for w in caught)
    assert (run_dir / "checkpoints" / "2.corrupt").is_dir() and checkpoint.best(run_dir) is None
